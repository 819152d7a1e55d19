//! The CRI streaming server — upstream's `k8s.io/kubelet/pkg/cri/streaming` `Server`.
//!
//! A runtime answers the CRI `Exec`, `Attach` and `PortForward` calls with [`Server::get_exec`]
//! and friends: the request is validated, kept in a [`RequestCache`] under a random single-use
//! token (at most 1000 in flight, each for one minute) and the client gets
//! `http://{addr}/exec/{token}` (or `attach`, `portforward`). The client — the kubelet proxying
//! the API server's upgraded connection — then upgrades a request to that URL, and the handler
//! serves it with the cached request's options: the client's query string is ignored (except the
//! `port`s of a WebSocket port-forward, as upstream).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::httpstream::{error_response, Body};
use crate::remotecommand::{self, Command, Options, Timeouts};
use crate::{portforward, Backend, StreamError};

/// How long a token stays valid (upstream's `cacheTTL`).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// At most this many requests wait for their client (upstream's `maxInFlight`).
pub const MAX_IN_FLIGHT: usize = 1000;
/// Random bytes in a token (upstream's `tokenLen`).
const TOKEN_LEN: usize = 8;

/// The streaming server's settings (upstream's `streaming.Config`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen, usually `127.0.0.1:0`.
    pub addr: SocketAddr,
    /// Close a streaming connection with no traffic for this long (upstream default 4h).
    pub stream_idle_timeout: Duration,
    /// How long a SPDY client has to create its streams (upstream default 30s).
    pub stream_creation_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stream_idle_timeout: Duration::from_secs(4 * 60 * 60),
            stream_creation_timeout: Duration::from_secs(30),
        }
    }
}

/// A request waiting for its client.
#[derive(Clone, Debug, PartialEq)]
pub enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// Single-use tokens for pending requests (upstream's `requestCache`), oldest first.
pub struct RequestCache {
    entries: HashMap<String, (Instant, CachedRequest)>,
    order: VecDeque<String>,
}

impl Default for RequestCache {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestCache {
    pub fn new() -> Self {
        RequestCache {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Stores `req` and returns its new token.
    pub fn insert(&mut self, req: CachedRequest) -> Result<String, StreamError> {
        self.gc();
        if self.entries.len() >= MAX_IN_FLIGHT {
            return Err(StreamError::Internal(
                "maximum number of in-flight requests exceeded".into(),
            ));
        }
        let token = loop {
            let bytes: [u8; TOKEN_LEN] = rand::random();
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            if !self.entries.contains_key(&token) {
                break token;
            }
        };
        self.entries
            .insert(token.clone(), (Instant::now() + TOKEN_TTL, req));
        self.order.push_back(token.clone());
        Ok(token)
    }

    /// Takes the request of `token`, if it exists and has not expired.
    pub fn consume(&mut self, token: &str) -> Option<CachedRequest> {
        let (expires, req) = self.entries.remove(token)?;
        self.order.retain(|t| t != token);
        (Instant::now() < expires).then_some(req)
    }

    fn gc(&mut self) {
        let now = Instant::now();
        while let Some(token) = self.order.front() {
            match self.entries.get(token) {
                Some((expires, _)) if *expires > now => break,
                _ => {
                    let token = self.order.pop_front().expect("front exists");
                    self.entries.remove(&token);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    cache: Mutex<RequestCache>,
    timeouts: Timeouts,
}

/// The running streaming server; dropping it stops listening and ends its connections that
/// were not upgraded (upgraded sessions run on until their client leaves).
pub struct Server {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Binds `config.addr` and starts serving (on the current tokio runtime).
    pub fn start(config: Config, backend: Arc<dyn Backend>) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(config.addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            backend,
            cache: Mutex::new(RequestCache::new()),
            timeouts: Timeouts {
                idle: Some(config.stream_idle_timeout),
                creation: config.stream_creation_timeout,
            },
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Server { addr, inner, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn url(&self, method: &str, token: &str) -> String {
        format!("http://{}/{method}/{token}", self.addr)
    }

    fn insert(&self, req: CachedRequest) -> Result<String, StreamError> {
        self.inner.cache.lock().unwrap().insert(req)
    }

    /// Validates an exec request and returns the URL to stream it from.
    pub fn get_exec(&self, req: &ExecRequest) -> Result<ExecResponse, StreamError> {
        if req.container_id.is_empty() {
            return Err(StreamError::InvalidArgument(
                "missing required container_id".into(),
            ));
        }
        if req.cmd.is_empty() {
            return Err(StreamError::InvalidArgument("missing required cmd".into()));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        let token = self.insert(CachedRequest::Exec(req.clone()))?;
        Ok(ExecResponse {
            url: self.url("exec", &token),
        })
    }

    /// Validates an attach request and returns the URL to stream it from.
    pub fn get_attach(&self, req: &AttachRequest) -> Result<AttachResponse, StreamError> {
        if req.container_id.is_empty() {
            return Err(StreamError::InvalidArgument(
                "missing required container_id".into(),
            ));
        }
        validate_streams(req.tty, req.stdin, req.stdout, req.stderr)?;
        let token = self.insert(CachedRequest::Attach(req.clone()))?;
        Ok(AttachResponse {
            url: self.url("attach", &token),
        })
    }

    /// Validates a port-forward request and returns the URL to stream it from.
    pub fn get_port_forward(
        &self,
        req: &PortForwardRequest,
    ) -> Result<PortForwardResponse, StreamError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(StreamError::InvalidArgument(
                "missing required pod_sandbox_id".into(),
            ));
        }
        let token = self.insert(CachedRequest::PortForward(req.clone()))?;
        Ok(PortForwardResponse {
            url: self.url("portforward", &token),
        })
    }
}

fn validate_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), StreamError> {
    if tty && stderr {
        // A terminal has no separate stderr to multiplex.
        return Err(StreamError::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(StreamError::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "streaming server: accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let inner = inner.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades();
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "streaming server: connection");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed");
    }
    let path = req.uri().path().trim_matches('/').to_owned();
    let Some((kind, token)) = path.split_once('/') else {
        return error_response(StatusCode::NOT_FOUND, "404 page not found");
    };
    if token.is_empty() || token.contains('/') {
        return error_response(StatusCode::NOT_FOUND, "404 page not found");
    }
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return error_response(StatusCode::NOT_FOUND, "404 page not found");
    }
    let Some(cached) = inner.cache.lock().unwrap().consume(token) else {
        return error_response(StatusCode::NOT_FOUND, "404 page not found");
    };
    let backend = inner.backend.clone();
    match (kind, cached) {
        ("exec", CachedRequest::Exec(r)) => {
            let opts = Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            };
            let command = Command::Exec {
                container_id: r.container_id,
                cmd: r.cmd,
            };
            remotecommand::serve(req, backend, command, opts, inner.timeouts)
        }
        ("attach", CachedRequest::Attach(r)) => {
            let opts = Options {
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
                tty: r.tty,
            };
            let command = Command::Attach {
                container_id: r.container_id,
            };
            remotecommand::serve(req, backend, command, opts, inner.timeouts)
        }
        ("portforward", CachedRequest::PortForward(r)) => {
            portforward::serve(req, backend, r.pod_sandbox_id, inner.timeouts)
        }
        (kind, _) => error_response(
            StatusCode::BAD_REQUEST,
            format!("the token is not for a {kind} request"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> CachedRequest {
        CachedRequest::Exec(ExecRequest {
            container_id: "c".into(),
            cmd: vec!["ls".into()],
            stdout: true,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_single_use_and_expire_after_a_minute() {
        let mut cache = RequestCache::new();
        let a = cache.insert(exec()).unwrap();
        let b = cache.insert(exec()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 11, "8 random bytes, base64url without padding");
        assert_eq!(cache.consume(&a), Some(exec()));
        assert_eq!(cache.consume(&a), None, "a token is single-use");
        tokio::time::advance(TOKEN_TTL + Duration::from_secs(1)).await;
        assert_eq!(cache.consume(&b), None, "an expired token is gone");
        let _ = cache.insert(exec()).unwrap();
        assert_eq!(cache.len(), 1, "expired entries are collected on insert");
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_a_thousand_requests_in_flight() {
        let mut cache = RequestCache::new();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert(exec()).unwrap();
        }
        let err = cache.insert(exec()).unwrap_err();
        assert!(err
            .to_string()
            .contains("maximum number of in-flight requests"));
        tokio::time::advance(TOKEN_TTL).await;
        cache.insert(exec()).unwrap();
    }

    #[tokio::test]
    async fn requests_are_validated_as_upstream() {
        struct NoBackend;
        #[async_trait::async_trait]
        impl Backend for NoBackend {
            async fn exec(
                &self,
                _: &str,
                _: Vec<String>,
                _: crate::StreamIo,
            ) -> Result<i32, StreamError> {
                unreachable!()
            }
            async fn attach(&self, _: &str, _: crate::StreamIo) -> Result<(), StreamError> {
                unreachable!()
            }
            async fn port_forward(
                &self,
                _: &str,
                _: u16,
                _: Box<dyn crate::Duplex>,
            ) -> Result<(), StreamError> {
                unreachable!()
            }
        }
        let server = Server::start(Config::default(), Arc::new(NoBackend)).unwrap();
        let ok = ExecRequest {
            container_id: "c".into(),
            cmd: vec!["ls".into()],
            stdout: true,
            ..Default::default()
        };
        let url = server.get_exec(&ok).unwrap().url;
        assert!(url.starts_with(&format!("http://{}/exec/", server.addr())));
        let cases = [
            (
                ExecRequest {
                    container_id: String::new(),
                    ..ok.clone()
                },
                "missing required container_id",
            ),
            (
                ExecRequest {
                    cmd: vec![],
                    ..ok.clone()
                },
                "missing required cmd",
            ),
            (
                ExecRequest {
                    tty: true,
                    stderr: true,
                    ..ok.clone()
                },
                "tty and stderr cannot both be true",
            ),
            (
                ExecRequest {
                    stdout: false,
                    ..ok.clone()
                },
                "one of stdin, stdout, or stderr must be set",
            ),
        ];
        for (req, want) in cases {
            assert_eq!(server.get_exec(&req).unwrap_err().to_string(), want);
        }
        let err = server
            .get_port_forward(&PortForwardRequest::default())
            .unwrap_err();
        assert_eq!(err.to_string(), "missing required pod_sandbox_id");
        let attach = AttachRequest {
            container_id: "c".into(),
            stdin: true,
            ..Default::default()
        };
        assert!(server.get_attach(&attach).unwrap().url.contains("/attach/"));
    }
}
