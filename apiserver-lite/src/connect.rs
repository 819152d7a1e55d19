//! The "connect" subresources (upstream's `rest.Connecter`s): `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`, each handed on to the kubelet of the pod's node with
//! the client's connection upgraded through (`streaming::proxy`), so `kubectl exec -it`,
//! `kubectl attach` and `kubectl port-forward` reach the kubelet's streaming endpoints with the
//! protocol they negotiated.
//!
//! As upstream's `ExecLocation`/`AttachLocation`/`PortForwardLocation`: the options of the query
//! are decoded (a value that is not a boolean is a BadRequest), the container chosen as for
//! `pods/log`, a pod with no node is a BadRequest, and the kubelet is asked for
//! `/exec/{namespace}/{pod}/{container}?command=…&stdin=1…` (flags re-encoded as `1`, which is
//! what kubelets read), `/attach/…` or `/portForward/{namespace}/{pod}?port=…`. `nodes/{name}/
//! proxy/{path}` forwards any method to `https://{kubelet}/{path}` with the query as given.
//! A kubelet's error answer reaches the client as it is (kubectl shows it after "unable to upgrade
//! connection:"). WebSocket exec and attach are translated to SPDY toward the kubelet
//! (`stream_translator`), as upstream's API server does; port-forward passes through as the
//! client negotiated it (the kubelet serves SPDY, WebSockets and the tunnel alike).

use axum::body::Body;
use axum::http::{Method, Request, Response};

use crate::pod_log::{choose_container, kubelet_connect, node_kubelet};
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::resources;
use crate::status::{ApiError, ApiResult};

/// Whether `info` names a connect subresource this module serves.
pub fn is_connect(info: &RequestInfo) -> bool {
    if !info.is_resource_request || !info.group.is_empty() || info.name.is_empty() {
        return false;
    }
    match info.resource.as_str() {
        "pods" => matches!(info.subresource.as_str(), "exec" | "attach" | "portforward"),
        "nodes" => info.subresource == "proxy" || info.subresource.starts_with("proxy/"),
        _ => false,
    }
}

/// Serves one connect request.
pub async fn handle(
    reg: &Registry,
    info: &RequestInfo,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    if info.resource == "nodes" {
        return node_proxy(reg, info, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let pairs = form(req.uri().query());
    let pods = resources::find("", "v1", "pods").expect("pods are served");
    reg.cacher(pods)
        .wait_fresh()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let pod = reg
        .cacher(pods)
        .get(&Registry::key(pods, &info.namespace, &info.name))
        .ok_or_else(|| ApiError::not_found("", "pods", &info.name))?;
    let pod = &pod.value;
    let name = &info.name;
    let mut params: Vec<(&str, String)> = Vec::new();
    let path = match info.subresource.as_str() {
        "portforward" => {
            for (k, v) in &pairs {
                if k == "ports" || k == "port" {
                    for p in v.split(',').filter(|p| !p.trim().is_empty()) {
                        let port: i32 = p.trim().parse().map_err(|_| {
                            ApiError::bad_request(format!(
                                "strconv.ParseInt: parsing {p:?}: invalid syntax"
                            ))
                        })?;
                        params.push(("port", port.to_string()));
                    }
                }
            }
            format!("/portForward/{}/{}", encode(&info.namespace), encode(name))
        }
        sub => {
            let wanted = last(&pairs, "container").unwrap_or_default();
            let container = choose_container(pod, name, &wanted)?;
            for flag in ["stdin", "stdout", "stderr", "tty"] {
                if let Some(v) = last(&pairs, flag) {
                    if parse_bool(&v)? {
                        params.push((flag, "1".into()));
                    }
                }
            }
            if sub == "exec" {
                for (k, v) in &pairs {
                    if k == "command" {
                        params.push(("command", v.clone()));
                    }
                }
            }
            let kubelet_path = if sub == "exec" { "exec" } else { "attach" };
            format!(
                "/{kubelet_path}/{}/{}/{}",
                encode(&info.namespace),
                encode(name),
                encode(&container)
            )
        }
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let target = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    if info.subresource != "portforward" && streaming::wsstream::is_websocket_request(req.headers())
    {
        // WebSocket clients are answered here and relayed to the kubelet over SPDY.
        let addr = node_kubelet(reg, node_name)?;
        let exec = info.subresource == "exec";
        return Ok(
            crate::stream_translator::serve(req, reg.kubelet_client(), addr, target, exec)
                .map(Body::new),
        );
    }
    to_kubelet(reg, node_name, req, &target).await
}

/// `nodes/{name}/proxy/{path}`: any method, to the kubelet's `/{path}?{query}`.
async fn node_proxy(
    reg: &Registry,
    info: &RequestInfo,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    let rest = info.subresource.strip_prefix("proxy").unwrap_or_default();
    let mut target = if rest.is_empty() {
        "/".to_string()
    } else {
        rest.to_string()
    };
    if let Some(q) = req.uri().query() {
        target = format!("{target}?{q}");
    }
    to_kubelet(reg, &info.name, req, &target).await
}

async fn to_kubelet(
    reg: &Registry,
    node_name: &str,
    req: Request<Body>,
    target: &str,
) -> ApiResult<Response<Body>> {
    let addr = node_kubelet(reg, node_name)?;
    let io = kubelet_connect(&reg.kubelet_client(), addr)
        .await
        .map_err(|e| {
            ApiError::service_unavailable(format!("error dialing backend: dial tcp {addr}: {e}"))
        })?;
    Ok(
        streaming::proxy::forward(req, io, &addr.to_string(), target)
            .await
            .map(Body::new),
    )
}

/// The `key=value` pairs of a query, decoded, in order (repeated keys kept).
fn form(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn last(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

/// Go's `strconv.ParseBool`, as the parameter codec decodes booleans.
fn parse_bool(v: &str) -> ApiResult<bool> {
    match v {
        "" | "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        _ => Err(ApiError::bad_request(format!(
            "strconv.ParseBool: parsing {v:?}: invalid syntax"
        ))),
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(resource: &str, sub: &str) -> RequestInfo {
        RequestInfo {
            is_resource_request: true,
            resource: resource.into(),
            name: "x".into(),
            subresource: sub.into(),
            ..Default::default()
        }
    }

    #[test]
    fn which_requests_connect() {
        assert!(is_connect(&info("pods", "exec")));
        assert!(is_connect(&info("pods", "portforward")));
        assert!(is_connect(&info("nodes", "proxy/stats/summary")));
        assert!(is_connect(&info("nodes", "proxy")));
        assert!(!is_connect(&info("pods", "log")));
        assert!(!is_connect(&info("nodes", "status")));
    }

    #[test]
    fn booleans_and_repeated_commands() {
        let pairs = form(Some("command=sh&command=-c&command=echo%20a+b&stdin=true"));
        assert_eq!(pairs[2].1, "echo a b");
        assert!(parse_bool("true").unwrap());
        assert_eq!(
            parse_bool("yes").unwrap_err().message,
            "strconv.ParseBool: parsing \"yes\": invalid syntax"
        );
    }
}
