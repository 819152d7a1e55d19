//! `GET pods/{name}/log` (upstream's `pkg/registry/core/pod/rest/log.go` and `LogLocation`):
//! the `PodLogOptions` of the query are checked, the container chosen (the one given, which must
//! exist in the pod, or the pod's only container), and the kubelet of the pod's node is asked for
//! `/containerLogs/{namespace}/{pod}/{container}` with the same options. Its answer is streamed
//! back as it arrives, so `kubectl logs -f` sees each line when the kubelet sends it.
//!
//! The kubelet is found as upstream's `NodeConnectionInfoGetter` finds it: the Node's address
//! (InternalIP, then ExternalIP, then Hostname) and `status.daemonEndpoints.kubeletEndpoint.Port`
//! (10250 when unset), over HTTPS. A pod with no node yet gets an empty answer (204), as
//! upstream's empty location. Errors the kubelet answers are mapped as upstream's
//! `GenericHttpResponseChecker` maps them (its 400 becomes a BadRequest Status with the
//! kubelet's text, so `kubectl logs --previous` shows "previous terminated container … not
//! found").

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::kubelet_client::KubeletClient;
use crate::registry::Registry;
use crate::resources::{self, ResourceInfo};
use crate::rest::ApiRequest;
use crate::status::{ApiError, ApiResult, Cause};

/// The kubelet port when a Node does not say (upstream's `--kubelet-port` default).
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// How much of a kubelet's error answer is read (upstream's `maxReadLength`).
const MAX_ERROR_BODY: usize = 50_000;

/// The `PodLogOptions` query of `pods/log`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodLogOptions {
    pub container: String,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    /// RFC 3339, passed on as given after checking it parses.
    pub since_time: Option<String>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
}

impl PodLogOptions {
    /// Decodes the query (a value that does not parse is a BadRequest, as upstream's parameter
    /// codec answers).
    pub fn from_query(q: &crate::rest::Query) -> ApiResult<PodLogOptions> {
        let boolean = |k: &str| -> ApiResult<bool> {
            match q.get(k).map(String::as_str) {
                None | Some("") => Ok(false),
                Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
                Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
                Some(v) => Err(ApiError::bad_request(format!(
                    "strconv.ParseBool: parsing {v:?}: invalid syntax"
                ))),
            }
        };
        let int = |k: &str| -> ApiResult<Option<i64>> {
            q.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse().map_err(|_| {
                        ApiError::bad_request(format!(
                            "strconv.ParseInt: parsing {v:?}: invalid syntax"
                        ))
                    })
                })
                .transpose()
        };
        let since_time = match q.get("sinceTime").filter(|v| !v.is_empty()) {
            Some(t) => {
                chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
                    ApiError::bad_request(format!(
                        "parsing time {t:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                    ))
                })?;
                Some(t.clone())
            }
            None => None,
        };
        Ok(PodLogOptions {
            container: q.get("container").cloned().unwrap_or_default(),
            follow: boolean("follow")?,
            previous: boolean("previous")?,
            timestamps: boolean("timestamps")?,
            since_seconds: int("sinceSeconds")?,
            since_time,
            tail_lines: int("tailLines")?,
            limit_bytes: int("limitBytes")?,
        })
    }

    /// Upstream's `ValidatePodLogOptions`.
    pub fn validate(&self, pod: &str) -> ApiResult<()> {
        let mut causes = Vec::new();
        if let Some(t) = self.tail_lines.filter(|t| *t < 0) {
            causes.push(Cause::invalid(
                "tailLines",
                &json!(t),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(b) = self.limit_bytes.filter(|b| *b < 1) {
            causes.push(Cause::invalid(
                "limitBytes",
                &json!(b),
                "must be greater than 0",
            ));
        }
        match (self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => causes.push(Cause::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => causes.push(Cause::invalid(
                "sinceSeconds",
                &json!(s),
                "must be greater than 0",
            )),
            _ => {}
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid("", "PodLogOptions", pod, causes))
        }
    }

    /// The kubelet's query string (upstream's `LogLocation` parameters).
    fn kubelet_query(&self) -> String {
        let mut p: Vec<(&str, String)> = Vec::new();
        if self.follow {
            p.push(("follow", "true".into()));
        }
        if self.previous {
            p.push(("previous", "true".into()));
        }
        if self.timestamps {
            p.push(("timestamps", "true".into()));
        }
        if let Some(s) = self.since_seconds {
            p.push(("sinceSeconds", s.to_string()));
        }
        if let Some(t) = &self.since_time {
            p.push(("sinceTime", t.clone()));
        }
        if let Some(t) = self.tail_lines {
            p.push(("tailLines", t.to_string()));
        }
        if let Some(b) = self.limit_bytes {
            p.push(("limitBytes", b.to_string()));
        }
        p.sort_by(|a, b| a.0.cmp(b.0));
        p.iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// What Go's `url.QueryEscape` leaves alone: letters, digits and `-_.~`.
const QUERY_ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_ESCAPE).to_string()
}

/// Upstream's `validateContainer`: the named container must exist; without a name, the pod's
/// only container.
pub fn choose_container(pod: &Value, name: &str, wanted: &str) -> ApiResult<String> {
    let spec = &pod["spec"];
    let names = |key: &str| -> Vec<String> {
        spec[key]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    let mut all = names("initContainers");
    all.extend(containers.iter().cloned());
    all.extend(names("ephemeralContainers"));
    if !wanted.is_empty() {
        return if all.iter().any(|c| c == wanted) {
            Ok(wanted.to_string())
        } else {
            Err(ApiError::bad_request(format!(
                "container {wanted} is not valid for pod {name}"
            )))
        };
    }
    match containers.len() {
        1 => Ok(containers[0].clone()),
        0 => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        // Go prints the list as `[a b c]`.
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// Where a Node's kubelet serves: its preferred address and its kubelet port.
pub fn kubelet_address(node: &Value) -> Option<SocketAddr> {
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .filter(|a| a["type"] == *t)
                .find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
        })?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(SocketAddr::new(ip, port))
}

/// Where the kubelet of Node `node_name` serves (the Node must exist and have an address).
pub fn node_kubelet(reg: &Registry, node_name: &str) -> ApiResult<SocketAddr> {
    let nodes = resources::find("", "v1", "nodes").expect("nodes are served");
    let node = reg
        .cacher(nodes)
        .get(&Registry::key(nodes, "", node_name))
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    kubelet_address(&node.value)
        .ok_or_else(|| ApiError::internal(format!("node {node_name:?} has no usable address")))
}

/// `GET pods/{name}/log`.
pub async fn get(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let name = &req.info.name;
    let opts = PodLogOptions::from_query(&req.query)?;
    opts.validate(name)?;
    reg.cacher(res)
        .wait_fresh()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let pod = reg
        .cacher(res)
        .get(&Registry::key(res, &req.info.namespace, name))
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod = &pod.value;
    let container = choose_container(pod, name, &opts.container)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Ok(r);
    }
    let addr = node_kubelet(reg, node_name)?;
    let path = format!(
        "/containerLogs/{}/{}/{}",
        encode(&req.info.namespace),
        encode(name),
        encode(&container)
    );
    let query = opts.kubelet_query();
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let resp = kubelet_get(&reg.kubelet_client(), addr, &uri)
        .await
        .map_err(|e| ApiError::internal(format!("Get \"https://{addr}{uri}\": {e}")))?;
    let status = resp.status();
    if !(200..=206).contains(&status.as_u16()) {
        let body = read_limited(resp.into_body()).await;
        return Err(checked_error(status.as_u16(), name, body));
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// Upstream's `GenericHttpResponseChecker`: the kubelet's error as a Status.
fn checked_error(code: u16, name: &str, body: String) -> ApiError {
    match code {
        500 => ApiError::internal(format!("Internal error occurred: {body}")),
        400 => ApiError::bad_request(body),
        _ => {
            let (reason, message) = match code {
                401 => (
                    "Unauthorized",
                    "the server has asked for the client to provide credentials",
                ),
                403 => (
                    "Forbidden",
                    "the server does not allow access to the requested resource",
                ),
                404 => (
                    "NotFound",
                    "the server could not find the requested resource",
                ),
                422 => (
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                ),
                503 => (
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                ),
                _ => (
                    "InternalError",
                    "an error on the server has prevented the request from succeeding",
                ),
            };
            let mut e = ApiError::new(code, reason, format!("{message} ( pods/log {name})"));
            e.details = json!({
                "name": name,
                "kind": "pods/log",
                "causes": [{"reason": "UnexpectedServerResponse", "message": body}],
            });
            e
        }
    }
}

async fn read_limited(body: hyper::body::Incoming) -> String {
    let mut out = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            out.extend_from_slice(d);
            if out.len() >= MAX_ERROR_BODY {
                out.truncate(MAX_ERROR_BODY);
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One GET to a kubelet over HTTPS on a connection of its own, through `client` (the API
/// server's kubelet-client certificate; the kubelet's certificate verified only when a kubelet
/// CA is configured, as upstream).
pub(crate) async fn kubelet_get(
    client: &KubeletClient,
    addr: SocketAddr,
    uri: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let tls = kubelet_connect(client, addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("kubelet connection: {e}");
        }
    });
    let req = hyper::Request::get(uri)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "capstan-apiserver")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    Ok(sender.send_request(req).await?)
}

/// A TLS connection to the kubelet at `addr` (see [`KubeletClient`]).
pub async fn kubelet_connect(
    client: &KubeletClient,
    addr: SocketAddr,
) -> Result<
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    client.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        json!({"spec": {
            "containers": containers.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
            "initContainers": init.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        }})
    }

    #[test]
    fn container_defaults_to_the_only_one() {
        assert_eq!(choose_container(&pod(&["a"], &[]), "p", "").unwrap(), "a");
        assert_eq!(
            choose_container(&pod(&["a", "b"], &["i"]), "p", "i").unwrap(),
            "i"
        );
        let e = choose_container(&pod(&["a", "b"], &["i"]), "p", "").unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [i a b]"
        );
        let e = choose_container(&pod(&["a"], &[]), "p", "x").unwrap_err();
        assert_eq!(e.message, "container x is not valid for pod p");
    }

    #[test]
    fn options_are_checked_and_passed_on() {
        let q = |pairs: &[(&str, &str)]| -> crate::rest::Query {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let o = PodLogOptions::from_query(&q(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("sinceTime", "2026-01-01T00:00:00+01:00"),
            ("container", "c"),
        ]))
        .unwrap();
        assert_eq!(
            o.kubelet_query(),
            "follow=true&sinceTime=2026-01-01T00%3A00%3A00%2B01%3A00&tailLines=3"
        );
        assert_eq!(o.container, "c");
        assert_eq!(
            PodLogOptions::from_query(&q(&[("follow", "maybe")]))
                .unwrap_err()
                .code,
            400
        );
        let bad = PodLogOptions {
            tail_lines: Some(-1),
            ..Default::default()
        };
        let e = bad.validate("p").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let both = PodLogOptions {
            since_seconds: Some(5),
            since_time: Some("2026-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert!(both.validate("p").is_err());
    }

    #[test]
    fn kubelet_address_prefers_internal_ip_and_the_reported_port() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"},
                          {"type": "InternalIP", "address": "192.0.2.7"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(
            kubelet_address(&node).unwrap().to_string(),
            "192.0.2.7:12345"
        );
        let node =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(kubelet_address(&node).unwrap().port(), 10250);
        assert!(kubelet_address(&json!({"status": {}})).is_none());
    }
}
