//! The four probe handlers (upstream's `pkg/probe/{exec,http,tcp,grpc}`), each bounded by the
//! probe's `timeoutSeconds`, and [`RuntimeProber`], which picks the handler a probe names.
//!
//! - exec: CRI ExecSync; exit code 0 is Success, any other code or a timeout is Failure.
//! - httpGet: a GET with hyper to `scheme://host:port/path` (host defaults to the pod IP; the port
//!   may be a container port's name), upstream's `User-Agent: kube-probe/<major>.<minor>` and
//!   `Accept: */*` unless the probe sets them, the probe's headers (`Host` among them); 200–399 is
//!   Success. Redirects are not followed (a 3xx is a Success, as upstream reports a redirect to
//!   another host). HTTPS is not supported yet: it is a prober error.
//! - tcpSocket: a TCP connect.
//! - grpc: `grpc.health.v1.Health/Check` with the probe's service name; SERVING is Success. The
//!   client is hand-made: tonic's generic client with prost for the two messages.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ProbeKind, ProbeResult, ProbeTiming, Prober};
use crate::runtime::Runtime;

/// The User-Agent of upstream's probes (its minor is the API version we serve).
pub const USER_AGENT: &str = "kube-probe/1.33";

/// The real prober: exec through the runtime, network probes from this process.
pub struct RuntimeProber {
    pub runtime: Runtime,
}

impl Prober for RuntimeProber {
    fn probe<'a>(
        &'a self,
        _kind: ProbeKind,
        probe: &'a Probe,
        _pod: &'a Pod,
        container: &'a Container,
        container_id: &'a str,
        pod_ip: &'a str,
    ) -> BoxFuture<'a, Result<ProbeResult, String>> {
        async move {
            let timeout = ProbeTiming::of(probe).timeout;
            if let Some(e) = &probe.exec {
                let cmd = e.command.clone().unwrap_or_default();
                return exec(&self.runtime, container_id, cmd, timeout).await;
            }
            if let Some(h) = &probe.http_get {
                return http_get(h, container, pod_ip, timeout).await;
            }
            if let Some(t) = &probe.tcp_socket {
                let port = resolve_port(&t.port, container)?;
                let host = t.host.clone().filter(|h| !h.is_empty());
                return Ok(tcp(host.as_deref().unwrap_or(pod_ip), port, timeout).await);
            }
            if let Some(g) = &probe.grpc {
                let port = u16::try_from(g.port).map_err(|_| format!("bad port {}", g.port))?;
                return grpc(pod_ip, port, g.service.as_deref().unwrap_or(""), timeout).await;
            }
            Err("probe has no handler".into())
        }
        .boxed()
    }
}

/// A port number, or the number of the container port with that name.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s:?} in container {}", c.name))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// Runs the probe's command in the container.
pub async fn exec(
    runtime: &Runtime,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Duration,
) -> Result<ProbeResult, String> {
    match runtime.exec_sync(container_id, cmd, timeout).await {
        Ok(r) if r.exit_code == 0 => Ok(ProbeResult::Success),
        Ok(_) => Ok(ProbeResult::Failure),
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Ok(ProbeResult::Failure),
        Err(s) => Err(format!("exec probe: {}", s.message())),
    }
}

/// A TCP connect to `host:port` within `timeout`.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => ProbeResult::Success,
        _ => ProbeResult::Failure,
    }
}

/// An HTTP GET as the probe describes it.
pub async fn http_get(
    h: &HTTPGetAction,
    c: &Container,
    pod_ip: &str,
    timeout: Duration,
) -> Result<ProbeResult, String> {
    let scheme = h.scheme.as_deref().unwrap_or("HTTP");
    if scheme.eq_ignore_ascii_case("HTTPS") {
        return Err("https probes are not supported yet".into());
    }
    let port = resolve_port(&h.port, c)?;
    let host = h.host.clone().filter(|s| !s.is_empty());
    let host = host.as_deref().unwrap_or(pod_ip);
    let mut path = h.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url = format!("http://{authority}{path}");
    let mut req = hyper::Request::get(&url);
    let headers = h.http_headers.clone().unwrap_or_default();
    let has = |name: &str| headers.iter().any(|x| x.name.eq_ignore_ascii_case(name));
    if !has("user-agent") {
        req = req.header("User-Agent", USER_AGENT);
    }
    if !has("accept") {
        req = req.header("Accept", "*/*");
    }
    if !has("host") {
        req = req.header("Host", &authority);
    }
    for x in &headers {
        req = req.header(x.name.as_str(), x.value.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("building the request for {url}: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let fut = async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        // Read (and drop) the body so the connection closes cleanly.
        let _ = resp.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(code)) if (200..400).contains(&code) => Ok(ProbeResult::Success),
        Ok(Ok(_)) | Ok(Err(_)) | Err(_) => Ok(ProbeResult::Failure),
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// UNKNOWN = 0, SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `HealthCheckResponse.ServingStatus.SERVING`.
pub const SERVING: i32 = 1;

/// `grpc.health.v1.Health/Check` against `host:port` for `service`.
pub async fn grpc(
    host: &str,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<ProbeResult, String> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let fut = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout);
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(_) => return Ok(ProbeResult::Failure),
        };
        let mut client = tonic::client::Grpc::new(channel);
        if client.ready().await.is_err() {
            return Ok(ProbeResult::Failure);
        }
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        req.metadata_mut()
            .insert("user-agent", USER_AGENT.parse().expect("ascii"));
        match client.unary(req, path, codec).await {
            Ok(r) if r.get_ref().status == SERVING => Ok(ProbeResult::Success),
            Ok(_) | Err(_) => Ok(ProbeResult::Failure),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Ok(ProbeResult::Failure),
    }
}
