//! `/exec`, `/attach`, `/portForward` and `/run` (upstream's `getExec`, `getAttach`,
//! `getPortForward`, `getRun` in `pkg/kubelet/server/server.go`).
//!
//! The kubelet does not speak the streaming protocols itself, as upstream's does not: it finds
//! the pod and the running container, asks the runtime (CRI `Exec`/`Attach`/`PortForward`) for a
//! streaming URL — the built-in runtime's streaming server or containerd's — and proxies the
//! client's upgraded connection there with [`streaming::proxy`]. So whatever protocol the client
//! negotiates (SPDY, the WebSocket channels, port-forward tunnelled in a WebSocket) is what the
//! runtime's streaming server serves.
//!
//! Errors are upstream's: an unknown pod is a 404 `pod does not exist`, a container that is not
//! running `container not found ("name")` (500, as upstream's `streaming.WriteError` maps an
//! error that is not a gRPC status), a runtime error keeps its gRPC code (NotFound → 404),
//! options that ask for no stream a 400.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use streaming::httpstream::query_values;
use streaming::portforward::ports_from_query;
use streaming::proxy;
use streaming::remotecommand::Options;

use super::ServerState;
use crate::plan::labels;

/// The parts of a streaming path: `/{kind}/{namespace}/{pod}[/{uid}]/{container}`.
#[derive(Debug, Default, PartialEq)]
struct Target {
    namespace: String,
    pod: String,
    uid: Option<String>,
    container: String,
}

impl Target {
    /// Parses the path after the route's first segment; `with_container` is false for
    /// `/portForward/{namespace}/{pod}[/{uid}]`.
    fn parse(path: &str, with_container: bool) -> Option<Target> {
        let parts: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .skip(1)
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let t = match (parts.as_slice(), with_container) {
            ([ns, pod, c], true) => Target {
                namespace: ns.clone(),
                pod: pod.clone(),
                uid: None,
                container: c.clone(),
            },
            ([ns, pod, uid, c], true) => Target {
                namespace: ns.clone(),
                pod: pod.clone(),
                uid: Some(uid.clone()),
                container: c.clone(),
            },
            ([ns, pod], false) => Target {
                namespace: ns.clone(),
                pod: pod.clone(),
                ..Default::default()
            },
            ([ns, pod, uid], false) => Target {
                namespace: ns.clone(),
                pod: pod.clone(),
                uid: Some(uid.clone()),
                ..Default::default()
            },
            _ => return None,
        };
        (!t.namespace.is_empty() && !t.pod.is_empty()).then_some(t)
    }
}

type Failure = (StatusCode, String);

/// The request's [`Target`]; a path of the wrong shape is a 404, as for any unknown path.
fn target_of(req: &Request, with_container: bool) -> Result<Target, Failure> {
    Target::parse(req.uri().path(), with_container)
        .ok_or_else(|| (StatusCode::NOT_FOUND, "404 page not found".to_string()))
}

/// `GET|POST /exec/{namespace}/{pod}[/{uid}]/{container}?command=…&stdin=1&…`.
pub async fn exec(State(state): State<ServerState>, req: Request) -> Response<Body> {
    respond(exec_or_attach(&state, req, true).await)
}

/// `GET|POST /attach/{namespace}/{pod}[/{uid}]/{container}?stdin=1&…`.
pub async fn attach(State(state): State<ServerState>, req: Request) -> Response<Body> {
    respond(exec_or_attach(&state, req, false).await)
}

async fn exec_or_attach(
    state: &ServerState,
    req: Request,
    exec: bool,
) -> Result<Response<Body>, Failure> {
    let target = target_of(&req, true)?;
    // Upstream's `remotecommand.NewOptions` (a TTY drops stderr; some stream is required).
    let (opts, command) =
        Options::from_query(req.uri().query()).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    let pod = find_pod(state, &target)?;
    let container_id = running_container(state, &pod, &target.container).await?;
    let url = if exec {
        state
            .runtime
            .exec(cri::pb::ExecRequest {
                container_id,
                cmd: command,
                tty: opts.tty,
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
            })
            .await
            .map(|r| r.url)
    } else {
        state
            .runtime
            .attach(cri::pb::AttachRequest {
                container_id,
                tty: opts.tty,
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
            })
            .await
            .map(|r| r.url)
    }
    .map_err(grpc_failure)?;
    Ok(proxy_to(req, &url).await)
}

/// `GET|POST /portForward/{namespace}/{pod}[/{uid}]` (WebSocket clients name the ports in
/// `?port=`; SPDY clients in each stream's headers).
pub async fn port_forward(State(state): State<ServerState>, req: Request) -> Response<Body> {
    respond(port_forward_inner(&state, req).await)
}

async fn port_forward_inner(state: &ServerState, req: Request) -> Result<Response<Body>, Failure> {
    let target = target_of(&req, false)?;
    // WebSocket clients name the ports in the query; SPDY clients in each stream's headers.
    let query = req.uri().query();
    let ports: Vec<i32> = if query_values(query, "port").is_empty() {
        Vec::new()
    } else {
        ports_from_query(query)
            .map_err(|m| (StatusCode::BAD_REQUEST, m))?
            .into_iter()
            .map(i32::from)
            .collect()
    };
    let pod = find_pod(state, &target)?;
    let sandbox_id = pod_sandbox(state, &pod).await?;
    let url = state
        .runtime
        .port_forward(cri::pb::PortForwardRequest {
            pod_sandbox_id: sandbox_id,
            port: ports,
        })
        .await
        .map_err(grpc_failure)?
        .url;
    Ok(proxy_to(req, &url).await)
}

/// `POST /run/{namespace}/{pod}[/{uid}]/{container}?cmd=…`: runs the command to completion and
/// answers with its output (upstream's `RunInContainer`: stdout and stderr together).
pub async fn run(State(state): State<ServerState>, req: Request) -> Response<Body> {
    respond(run_inner(&state, req).await)
}

async fn run_inner(state: &ServerState, req: Request) -> Result<Response<Body>, Failure> {
    let target = target_of(&req, true)?;
    let query = req.uri().query();
    let mut cmd: Vec<String> = query_values(query, "cmd")
        .iter()
        .flat_map(|c| c.split_whitespace().map(str::to_string))
        .collect();
    cmd.extend(query_values(query, "command"));
    if cmd.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "no command given (?cmd=)".into()));
    }
    let pod = find_pod(state, &target)?;
    let id = running_container(state, &pod, &target.container).await?;
    let out = state
        .runtime
        .exec_sync(&id, cmd, std::time::Duration::ZERO)
        .await
        .map_err(grpc_failure)?;
    let mut data = out.stdout;
    data.extend_from_slice(&out.stderr);
    let mut r = Response::new(Body::from(data));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn find_pod(state: &ServerState, t: &Target) -> Result<std::sync::Arc<Pod>, Failure> {
    let not_found = || (StatusCode::NOT_FOUND, "pod does not exist".to_string());
    let pod = state.pods.get(&t.namespace, &t.pod).ok_or_else(not_found)?;
    if let Some(uid) = &t.uid {
        if pod.metadata.uid.as_deref() != Some(uid.as_str()) {
            return Err(not_found());
        }
    }
    Ok(pod)
}

/// The id of the pod's running container `name` (upstream's `findContainer` over running pods).
async fn running_container(state: &ServerState, pod: &Pod, name: &str) -> Result<String, Failure> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let filter = cri::pb::ContainerFilter {
        state: Some(cri::pb::ContainerStateValue {
            state: cri::pb::ContainerState::ContainerRunning as i32,
        }),
        label_selector: HashMap::from([
            (labels::POD_UID.to_string(), uid),
            (labels::CONTAINER_NAME.to_string(), name.to_string()),
        ]),
        ..Default::default()
    };
    let found = state
        .runtime
        .list_containers(Some(filter))
        .await
        .map_err(grpc_failure)?;
    found
        .into_iter()
        .max_by_key(|c| c.created_at)
        .map(|c| c.id)
        .ok_or_else(|| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("container not found ({name:?})"),
            )
        })
}

/// The pod's ready sandbox (upstream's `GetPortForward` finds the running pod by UID).
async fn pod_sandbox(state: &ServerState, pod: &Pod) -> Result<String, Failure> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let filter = cri::pb::PodSandboxFilter {
        state: Some(cri::pb::PodSandboxStateValue {
            state: cri::pb::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: HashMap::from([(labels::POD_UID.to_string(), uid)]),
        ..Default::default()
    };
    let sandboxes = state
        .runtime
        .list_pod_sandbox(Some(filter))
        .await
        .map_err(grpc_failure)?;
    sandboxes
        .into_iter()
        .max_by_key(|s| s.created_at)
        .map(|s| s.id)
        .ok_or_else(|| {
            let name = format!(
                "{}_{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default()
            );
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("pod not found ({name:?})"),
            )
        })
}

/// Upstream's `streaming.WriteError`: NotFound → 404, ResourceExhausted → 429, else 500.
fn grpc_failure(s: tonic::Status) -> Failure {
    let code = match s.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, s.message().to_string())
}

/// Proxies `req` to the runtime's streaming `url` (http://host:port/path?query).
async fn proxy_to(req: Request, url: &str) -> Response<Body> {
    let fail = |m: String| proxy::error(StatusCode::INTERNAL_SERVER_ERROR, &m).map(Body::new);
    let uri: axum::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => return fail(format!("invalid streaming URL {url:?}: {e}")),
    };
    if uri.scheme_str() != Some("http") {
        return fail(format!(
            "streaming URL {url:?}: only http:// streaming servers are supported"
        ));
    }
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return fail(format!("streaming URL {url:?} has no host"));
    };
    let path = uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let tcp = match tokio::net::TcpStream::connect(&authority).await {
        Ok(t) => t,
        Err(e) => return fail(format!("error dialing streaming server {authority}: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    proxy::forward(req, tcp, &authority, &path)
        .await
        .map(Body::new)
}

fn respond(r: Result<Response<Body>, Failure>) -> Response<Body> {
    match r {
        Ok(r) => r,
        Err((code, message)) => proxy::error(code, &message).map(Body::new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_uid() {
        assert_eq!(
            Target::parse("/exec/ns/p/c", true),
            Some(Target {
                namespace: "ns".into(),
                pod: "p".into(),
                uid: None,
                container: "c".into()
            })
        );
        assert_eq!(
            Target::parse("/exec/ns/p/u-1/c", true)
                .unwrap()
                .uid
                .as_deref(),
            Some("u-1")
        );
        assert_eq!(Target::parse("/portForward/ns/p", false).unwrap().pod, "p");
        assert_eq!(Target::parse("/exec/ns/p", true), None);
        assert_eq!(Target::parse("/portForward/ns/p/u/x", false), None);
    }
}
