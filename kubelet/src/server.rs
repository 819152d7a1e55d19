//! The kubelet's server (upstream's `pkg/kubelet/server`): HTTPS on `address:port` (10250) for
//! the API server and clients, and plain-HTTP `/healthz` on `healthzBindAddress:healthzPort`
//! (127.0.0.1:10248). Port 0 turns a server off (so does `enableServer: false` for the main one),
//! because several kubelets may share a host.
//!
//! Endpoints: `/healthz`, `/containerLogs/{namespace}/{pod}/{container}` (`logs`); streaming —
//! `/exec`, `/attach`, `/portForward`, `/run` (`streaming`, proxied to the runtime's streaming
//! server); and the observability block — `/pods` (`pods`), `/configz` (`configz`), `/metrics`
//! and `/metrics/resource` (`metrics`), `/stats/summary` (`stats`). Every request of the main
//! server passes the one check in `auth` first (client certificate or bearer token, then a
//! SubjectAccessReview on the node's subresource). Handlers get a [`ServerState`] — the runtime, the
//! read-only [`PodView`], the effective configuration and the stats provider — and are axum
//! routes in [`routes`].
//!
//! TLS: the serving certificate of `tls` (configured, or self-signed under `<root-dir>/pki`),
//! rustls with the ring provider, HTTP/1.1, client certificates requested (not required) and
//! handed to `auth` as a request extension. Each connection's handshake runs in its own task so a
//! slow client never holds up the accept loop.

pub mod auth;
pub mod configz;
pub mod logs;
pub mod metrics;
pub mod pods;
pub mod stats;
pub mod streaming;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::config::Config;
use crate::pods::view::PodView;
use crate::runtime::Runtime;
use crate::stats::StatsProvider;

/// Failures to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid {setting} {value:?}: not an IP address")]
    Address {
        setting: &'static str,
        value: String,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// What handlers read: the runtime, the pods, the configuration and the stats provider.
#[derive(Clone)]
pub struct ServerState {
    pub runtime: Runtime,
    pub pods: PodView,
    /// The effective configuration (`/configz`).
    pub config: Arc<Config>,
    /// Node and pod usage (`/stats/summary`, `/metrics/resource`).
    pub stats: Arc<StatsProvider>,
}

/// The running servers; dropping it stops accepting (streams in flight end with their tasks).
pub struct KubeletServer {
    /// Where the HTTPS server listens, if it runs.
    pub addr: Option<SocketAddr>,
    /// Where `/healthz` listens, if it runs.
    pub healthz_addr: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeletServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The serving certificate manager's current pair (`serverTLSBootstrap`).
pub type ServingCerts = tokio::sync::watch::Receiver<Option<crate::certificate::KeyedCert>>;

impl KubeletServer {
    /// Binds both servers (a port that is taken is an error, as upstream's is fatal) and serves
    /// them in the background; every request of the main one passes `auth`.
    pub async fn start(
        config: &Config,
        state: ServerState,
        auth: Arc<auth::KubeletAuth>,
        serving: Option<ServingCerts>,
    ) -> Result<KubeletServer, ServerError> {
        let s = &config.settings;
        let mut server = KubeletServer {
            addr: None,
            healthz_addr: None,
            tasks: Vec::new(),
        };
        if s.enable_server && s.port > 0 {
            let addr = socket_addr("address", &s.address, s.port)?;
            let hints = auth
                .authenticator
                .client_ca
                .as_ref()
                .map(|ca| ca.hints())
                .unwrap_or_default();
            let source = match serving {
                Some(rx) => tls::CertSource::Managed(rx),
                None => cert_source(config),
            };
            let tls = tls::server_config(&source, tls::RequestClientCert::new(hints))?;
            let listener = bind(addr).await?;
            server.addr = Some(listener.local_addr().unwrap_or(addr));
            let app = routes(state).layer(axum::middleware::from_fn_with_state(auth, auth::filter));
            server
                .tasks
                .push(tokio::spawn(serve_tls(listener, tls, app)));
            tracing::info!(
                "kubelet server listening on https://{}",
                server.addr.unwrap_or(addr)
            );
        }
        if s.healthz_port > 0 {
            let addr = socket_addr(
                "healthzBindAddress",
                &s.healthz_bind_address,
                s.healthz_port,
            )?;
            let listener = bind(addr).await?;
            server.healthz_addr = Some(listener.local_addr().unwrap_or(addr));
            let app = Router::new().route("/healthz", get(healthz));
            server.tasks.push(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("healthz server stopped: {e}");
                }
            }));
        }
        Ok(server)
    }
}

/// The main server's routes (without the auth filter).
pub fn routes(state: ServerState) -> Router {
    let router = Router::new().route("/healthz", get(healthz)).route(
        "/containerLogs/{namespace}/{pod}/{container}",
        get(logs::container_logs),
    );
    // Observability: pods, configuration, metrics and stats.
    let router = router
        .route("/pods", get(pods::pods))
        .route("/configz", get(configz::configz))
        .route("/metrics", get(metrics::kubelet_metrics))
        .route("/metrics/resource", get(metrics::resource_metrics))
        .route("/stats/summary", get(stats::summary));
    // Streaming: SPDY clients POST, WebSocket clients GET; the uid segment is optional.
    let router = router
        .route(
            "/exec/{ns}/{pod}/{c}",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/exec/{ns}/{pod}/{uid}/{c}",
            get(streaming::exec).post(streaming::exec),
        )
        .route(
            "/attach/{ns}/{pod}/{c}",
            get(streaming::attach).post(streaming::attach),
        )
        .route(
            "/attach/{ns}/{pod}/{uid}/{c}",
            get(streaming::attach).post(streaming::attach),
        )
        .route(
            "/portForward/{ns}/{pod}",
            get(streaming::port_forward).post(streaming::port_forward),
        )
        .route(
            "/portForward/{ns}/{pod}/{uid}",
            get(streaming::port_forward).post(streaming::port_forward),
        )
        .route("/run/{ns}/{pod}/{c}", post(streaming::run))
        .route("/run/{ns}/{pod}/{uid}/{c}", post(streaming::run));
    router.with_state(state)
}

/// `/healthz`: the process serves (upstream's default checks are ping and log).
async fn healthz() -> &'static str {
    "ok"
}

fn cert_source(config: &Config) -> tls::CertSource {
    let s = &config.settings;
    match (&s.tls_cert_file, &s.tls_private_key_file) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => tls::CertSource::Files {
            cert: cert.into(),
            key: key.into(),
        },
        _ => tls::CertSource::SelfSigned {
            dir: config.root_dir.join(tls::CERT_SUBDIR),
            host: config.node_name.clone(),
            ips: config.node_ips.clone(),
        },
    }
}

fn socket_addr(setting: &'static str, ip: &str, port: i32) -> Result<SocketAddr, ServerError> {
    let ip: IpAddr = ip.parse().map_err(|_| ServerError::Address {
        setting,
        value: ip.to_string(),
    })?;
    Ok(SocketAddr::new(ip, port as u16))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen { addr, source })
}

async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of fds and the like: wait a little instead of spinning.
                tracing::warn!("kubelet server accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, "kubelet server TLS handshake: {e}");
                    return;
                }
            };
            let certs = auth::PeerCertificates(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
            );
            let app =
                app.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(certs.clone());
                    req
                });
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, "kubelet server connection: {e}");
            }
        });
    }
}
