//! The API server process: opens the store, starts the watch caches, keeps the bootstrap
//! objects (system namespaces and priority classes, the `kubernetes` Service and its endpoints,
//! the bootstrap RBAC policy), makes or loads the PKI (`pki`), serves HTTPS only (rustls; a
//! plain-HTTP request gets Go's "Client sent an HTTP request to an HTTPS server." 400), and
//! writes the admin and component kubeconfigs once it serves.
//!
//! The handler chain mirrors upstream's `DefaultBuildHandlerChain`: each filter is one layer
//! around the next (request info → authentication → impersonation → authorization →
//! dispatch); the verified client certificate travels from the TLS connection to the
//! authentication filter as a request extension.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::Router;
use serde_json::{json, Value};

use bytes::Bytes;

use crate::auth::authn::{PeerCertificate, RequestUser};
use crate::auth::authz::{self, Attributes};
use crate::auth::serviceaccount::ServiceAccountTokens;
use crate::auth::{self as security, Security, SecurityOptions};
use crate::connect;
use crate::discovery;
use crate::openapi;
use crate::pki::{Pki, COMPONENT_KUBECONFIGS};
use crate::registry::{Registry, WriteOptions, SYSTEM_NAMESPACES};
use crate::request::{parse_query, RequestInfo};
use crate::resources;
use crate::rest::{self, bytes_response, error_response, json_response, ApiRequest};
use crate::status::ApiError;
use crate::storage::{sqlite::SqliteStore, Store};

/// Settings of `capstan apiserver`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise_address: IpAddr,
    pub service_cidr: String,
    pub node_port_range: String,
    /// Seconds events live (`--event-ttl`).
    pub event_ttl: i64,
    /// Authentication, authorization and key material.
    pub security: SecurityOptions,
    /// DefaultTolerationSeconds' not-ready and unreachable tolerations (upstream's
    /// `--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds`).
    pub default_toleration_seconds: DefaultTolerationSeconds,
}

/// The seconds of the not-ready and unreachable tolerations pods get at creation.
#[derive(Clone, Copy, Debug)]
pub struct DefaultTolerationSeconds {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    /// Upstream's 300 s each.
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: 300,
            unreachable: 300,
        }
    }
}

impl Config {
    pub fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }
    /// The URL clients on this host use: the listen address, or loopback for a wildcard.
    pub fn local_url(&self) -> String {
        let ip = match self.listen.ip() {
            IpAddr::V4(v) if v.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(v) if v.is_unspecified() => IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ip => ip,
        };
        format!("https://{}", SocketAddr::new(ip, self.listen.port()))
    }
}

/// The host's primary address: the source address of the default route. Connecting a UDP
/// socket only asks the kernel for a route; no packet is sent.
pub fn primary_address() -> IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    advertise: String,
    /// `metrics.k8s.io`: the kubelets' scrapes.
    metrics: Arc<crate::metrics_api::MetricsApi>,
    security: Arc<Security>,
}

/// A running server.
pub struct Server {
    pub registry: Arc<Registry>,
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts serving; returns once the socket is bound, the bootstrap objects exist and the
    /// admin kubeconfig is written.
    pub async fn start(config: Config) -> StartResult<Server> {
        let server_dir = config.server_dir();
        std::fs::create_dir_all(&server_dir)
            .map_err(|e| format!("creating {}: {e}", server_dir.display()))?;
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&server_dir.join("state.db"))
                .map_err(|e| format!("opening {}: {e}", server_dir.join("state.db").display()))?,
        );
        crate::strategy::set_default_toleration_seconds(
            config.default_toleration_seconds.not_ready,
            config.default_toleration_seconds.unreachable,
        );
        let registry = Registry::new(
            store.clone(),
            &config.service_cidr,
            &config.node_port_range,
            config.event_ttl,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("listening on {}: {e}", config.listen))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        bootstrap(&registry, config.advertise_address, local_addr.port()).await?;
        security::bootstrap_policy::ensure(&registry).await?;
        // The serving certificate's addresses: listen (every host address for a wildcard),
        // advertise, and the `kubernetes` Service's ClusterIP.
        let mut ips = if config.listen.ip().is_unspecified() {
            host_addresses()
        } else {
            vec![config.listen.ip()]
        };
        ips.push(config.advertise_address);
        ips.push(IpAddr::V4(registry.service_ips.first()));
        let pki = Pki::load_or_create(&server_dir, &config.security.files, &ips, &[])
            .map_err(|e| e.to_string())?;
        let tls = tls_config(&pki)?;
        let kubelet_client = crate::kubelet_client::KubeletClient::from_files(
            pki.kubelet_client_files
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            config
                .security
                .files
                .kubelet_certificate_authority
                .as_deref(),
        )
        .map_err(|e| e.to_string())?;
        registry.set_kubelet_client(kubelet_client);
        let mut cfg = config.clone();
        cfg.listen = local_addr;
        let service_accounts = Arc::new(
            ServiceAccountTokens::new(
                &pki.sa_signing_key_pem,
                &pki.sa_public_pems,
                &config.security.service_account_issuer,
                format!(
                    "https://{}",
                    SocketAddr::new(config.advertise_address, local_addr.port())
                ),
            )
            .map_err(|e| e.to_string())?,
        );
        let security = Security {
            authenticator: security::authn::Authenticator::new(
                config.security.token_auth_file.as_deref(),
                service_accounts.clone(),
                config.security.anonymous_auth,
            )?,
            authorizer: authz::Authorizer::parse(&config.security.authorization_mode)?,
            service_accounts,
        };
        tokio::spawn(compaction_loop(store));
        tokio::spawn(security::rbac::reconcile_aggregation(registry.clone()));
        let state = AppState {
            registry: registry.clone(),
            advertise: SocketAddr::new(config.advertise_address, local_addr.port()).to_string(),
            metrics: Arc::new(crate::metrics_api::MetricsApi::new()),
            security: Arc::new(security),
        };
        let app = handler_chain(state);
        let task = tokio::spawn(serve_tls(listener, tls, app));
        let url = cfg.local_url();
        pki.write_kubeconfig(
            &cfg.kubeconfig_path(),
            &url,
            crate::pki::ADMIN_USER,
            &[crate::pki::MASTERS_GROUP],
        )
        .map_err(|e| e.to_string())?;
        for (file, user) in COMPONENT_KUBECONFIGS {
            pki.write_kubeconfig(&server_dir.join(file), &url, user, &[])
                .map_err(|e| e.to_string())?;
        }
        Ok(Server {
            registry,
            local_addr,
            task,
        })
    }

    /// Waits until the server task ends.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Start-up failures, as a message naming what failed (the binary wraps it in anyhow).
pub type StartResult<T> = Result<T, String>;

/// The filter chain, outermost last.
fn handler_chain(state: AppState) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(middleware::from_fn_with_state(state.clone(), with_auth))
        .layer(middleware::from_fn(with_request_info))
        .with_state(state)
}

/// Filter: parses the request info once for every later filter and handler.
async fn with_request_info(mut req: Request, next: Next) -> Response<Body> {
    let query = parse_query(req.uri().query());
    let info = RequestInfo::parse(req.method().as_str(), req.uri().path(), &query);
    req.extensions_mut().insert(info);
    req.extensions_mut().insert(query);
    next.run(req).await
}

/// Filters: authentication (401 on failure), impersonation, authorization (403 with upstream's
/// message); the user travels on as a request extension.
async fn with_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response<Body> {
    let sec = &state.security;
    let peer = req
        .extensions()
        .get::<PeerCertificate>()
        .cloned()
        .unwrap_or_default();
    let mut user = match sec
        .authenticator
        .authenticate(&state.registry, &peer, req.headers())
        .await
    {
        Ok(u) => u,
        Err(e) => return error_response(&e),
    };
    if security::impersonation::requested(req.headers()) {
        user = match security::impersonation::impersonate(
            &sec.authorizer,
            &state.registry,
            &user,
            req.headers(),
        )
        .await
        {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        };
    }
    if let Some(info) = req.extensions().get::<RequestInfo>() {
        let mut a = Attributes::from_request(&user, info);
        // Upstream's request info names the object of a list or watch whose field selector
        // pins `metadata.name` (a kubelet watching one secret).
        if matches!(a.verb.as_str(), "list" | "watch") && a.name.is_empty() {
            let query = req
                .extensions()
                .get::<std::collections::HashMap<String, String>>();
            if let Some(sel) = query.and_then(|q| q.get("fieldSelector")) {
                let sel = sel.trim();
                let value = sel
                    .strip_prefix("metadata.name==")
                    .or_else(|| sel.strip_prefix("metadata.name="));
                if let Some(v) = value.filter(|v| !v.contains(',')) {
                    a.name = v.to_string();
                }
            }
        }
        let (allowed, reason) = sec.authorizer.decide(&state.registry, &a).await;
        if !allowed {
            return error_response(&authz::forbidden_because(&a, &reason));
        }
    }
    req.extensions_mut().insert(RequestUser(user));
    next.run(req).await
}

/// The rustls configuration: the serving chain, client certificates requested but checked after
/// the handshake (`ClientCerts::verify`), HTTP/1.1.
fn tls_config(pki: &Pki) -> StartResult<(Arc<rustls::ServerConfig>, Arc<ClientCerts>)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.client_ca_pem.as_bytes()) {
        let c = c.map_err(|e| format!("client CA: {e}"))?;
        roots.add(c).map_err(|e| format!("client CA: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("client CA: {e}"))?;
    let certs = Arc::new(ClientCerts { inner: verifier });
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes())
        .map_err(|e| format!("serving key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(certs.clone())
        .with_single_cert(chain, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), certs))
}

/// Client certificates as Go's `tls.RequestClientCert`: the handshake takes any certificate
/// whose holder proves its key, and the chain is verified against the client CA afterwards, so
/// a certificate from another CA is a 401 from authentication rather than a broken handshake.
#[derive(Debug)]
struct ClientCerts {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl ClientCerts {
    /// The identity of a presented chain, after verification.
    fn verify(
        &self,
        chain: Option<&[rustls::pki_types::CertificateDer<'static>]>,
    ) -> PeerCertificate {
        let Some((leaf, rest)) = chain.and_then(|c| c.split_first()) else {
            return PeerCertificate::None;
        };
        let now = rustls::pki_types::UnixTime::now();
        match self.inner.verify_client_cert(leaf, rest, now) {
            Ok(_) => security::authn::user_from_certificate(leaf.as_ref())
                .map(PeerCertificate::Verified)
                .unwrap_or(PeerCertificate::Invalid),
            Err(_) => PeerCertificate::Invalid,
        }
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The accept loop: TLS on every connection (a plain-HTTP request gets Go's 400 answer), the
/// client certificate's identity attached to each request, HTTP/1.1 with upgrades (exec,
/// attach, port-forward).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    (tls, certs): (Arc<rustls::ServerConfig>, Arc<ClientCerts>),
    app: Router,
) {
    use tokio::io::AsyncWriteExt;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let certs = certs.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            let mut first = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] != 0x16 => {
                    let _ = tcp
                        .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
                        .await;
                    return;
                }
                Ok(Ok(1)) => {}
                _ => return,
            }
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = certs.verify(stream.get_ref().1.peer_certificates());
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(req.map(Body::new)).await
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// Every local address of the host (IPv4 from `/proc/net/fib_trie`, IPv6 from
/// `/proc/net/if_inet6`), for the serving certificate of a wildcard listen address.
fn host_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/proc/net/fib_trie") {
        let mut last: Option<IpAddr> = None;
        for line in t.lines() {
            let l = line.trim_start_matches([' ', '|', '+', '-']).trim();
            if let Ok(ip) = l.parse::<IpAddr>() {
                last = Some(ip);
            } else if l.starts_with("/32 host LOCAL") {
                if let Some(ip) = last.filter(|ip| !out.contains(ip)) {
                    out.push(ip);
                }
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/if_inet6") {
        for line in t.lines() {
            if let Some(hex) = line.split_whitespace().next().filter(|h| h.len() == 32) {
                if let Ok(n) = u128::from_str_radix(hex, 16) {
                    let ip = IpAddr::from(std::net::Ipv6Addr::from(n));
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out.push(primary_address());
    out
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let info = parts
        .extensions
        .get::<RequestInfo>()
        .cloned()
        .unwrap_or_default();
    let query = parts
        .extensions
        .get::<rest::Query>()
        .cloned()
        .unwrap_or_default();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !info.is_resource_request {
        match parts.uri.path().trim_end_matches('/') {
            "/.well-known/openid-configuration" => {
                return json_response(
                    StatusCode::OK,
                    &state.security.service_accounts.openid_configuration(),
                )
            }
            "/openid/v1/jwks" => {
                let body = state.security.service_accounts.keys.jwks().to_string();
                return bytes_response(StatusCode::OK, body.into(), "application/jwk-set+json");
            }
            _ => {}
        }
        return non_resource(&state, parts.uri.path(), accept.as_deref());
    }
    if security::reviews::is_review(&info)
        || (info.group.is_empty()
            && info.resource == "serviceaccounts"
            && info.subresource == "token")
    {
        let user = parts
            .extensions
            .get::<RequestUser>()
            .map(|u| u.0.clone())
            .unwrap_or_else(security::UserInfo::anonymous);
        let body = match axum::body::to_bytes(body, rest::MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return error_response(&ApiError::too_large("the request body is too large")),
        };
        let body: Value = if body.is_empty() {
            json!({})
        } else if body.starts_with(crate::protobuf::MAGIC) {
            match crate::protobuf::decode(&body) {
                Ok(v) => v,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "error decoding the protobuf body: {e}"
                    )))
                }
            }
        } else {
            match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(e) => {
                    return error_response(&ApiError::bad_request(format!(
                        "couldn't get version/kind; json parse error: {e}"
                    )))
                }
            }
        };
        let res = if info.resource == "serviceaccounts" {
            if info.verb != "create" {
                Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ))
            } else {
                state
                    .security
                    .service_accounts
                    .token_request(&state.registry, &info.namespace, &info.name, body)
                    .await
            }
        } else {
            security::reviews::handle(&state.security, &state.registry, &info, &user, body).await
        };
        return match res {
            Ok(v) => json_response(StatusCode::CREATED, &v),
            Err(e) => error_response(&e),
        };
    }
    if connect::is_connect(&info) {
        let req = Request::from_parts(parts, body);
        return connect::handle(&state.registry, &info, req)
            .await
            .unwrap_or_else(|e| error_response(&e));
    }
    if info.group == crate::metrics_api::GROUP {
        return crate::metrics_api::handle(&state.metrics, &state.registry, &info, &query).await;
    }
    let body = match axum::body::to_bytes(body, rest::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::too_large(
                "the request body is too large: the limit is 3145728 bytes",
            ))
        }
    };
    if security::escalation::applies(&info) {
        let obj = if info.verb == "patch" {
            rest::patched_preview(&state.registry, &info, &parts.headers, &body).await
        } else {
            decode_object(&body)
        };
        if let Some(obj) = obj {
            let user = parts
                .extensions
                .get::<RequestUser>()
                .map(|u| u.0.clone())
                .unwrap_or_else(security::UserInfo::anonymous);
            if let Err(e) = security::escalation::check(
                &state.security.authorizer,
                &state.registry,
                &user,
                &info,
                &obj,
            )
            .await
            {
                return error_response(&e);
            }
        }
    }
    if let Some(RequestUser(user)) = parts.extensions.get::<RequestUser>() {
        let obj = decode_object(&body);
        if let Err(e) =
            security::node_restriction::admit(&state.registry, user, &info, obj.as_ref()).await
        {
            return error_response(&e);
        }
    }
    let user = parts
        .extensions
        .get::<RequestUser>()
        .map(|u| u.0.clone())
        .unwrap_or_else(security::UserInfo::anonymous);
    let mut parts = parts;
    let mut body = body;
    if crate::certificates::admission::applies(&info) {
        match crate::certificates::admission::admit(
            &state.security.authorizer,
            &state.registry,
            &user,
            &info,
            &body,
        )
        .await
        {
            Ok(Some(json)) => {
                body = json;
                parts.headers.insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
            }
            Ok(None) => {}
            Err(e) => return error_response(&e),
        }
    }
    rest::handle(
        state.registry.clone(),
        ApiRequest {
            info,
            method: parts.method,
            query,
            headers: parts.headers,
            body,
            user,
        },
    )
    .await
}

/// A request body as JSON (JSON, YAML or protobuf); None when it does not decode (the REST
/// handler then answers with the decoding error).
fn decode_object(body: &[u8]) -> Option<Value> {
    if body.starts_with(crate::protobuf::MAGIC) {
        crate::protobuf::decode(body).ok()
    } else {
        serde_json::from_slice(body)
            .ok()
            .or_else(|| serde_yaml::from_slice(body).ok())
    }
}

fn non_resource(state: &AppState, path: &str, accept: Option<&str>) -> Response<Body> {
    let path = path.trim_end_matches('/');
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["version"] => json_response(StatusCode::OK, &version()),
        ["openapi", "v2"] => {
            let proto =
                accept.is_some_and(|a| a.contains("application/com.github.proto-openapi.spec.v2"));
            let (body, ctype) = if proto {
                (openapi::v2_protobuf(), openapi::V2_PROTOBUF_CONTENT_TYPE)
            } else {
                (openapi::v2_json(), "application/json")
            };
            let mut r = bytes_response(StatusCode::OK, Bytes::from_static(body), ctype);
            set_etag(&mut r, openapi::v2_etag());
            r
        }
        ["openapi", "v3"] => bytes_response(
            StatusCode::OK,
            Bytes::from_static(openapi::v3_index()),
            "application/json",
        ),
        ["openapi", "v3", rest @ ..] => {
            let gv = rest.join("/");
            match (openapi::v3_document(&gv), openapi::v3_hash(&gv)) {
                (Some(doc), Some(hash)) => {
                    let mut r =
                        bytes_response(StatusCode::OK, Bytes::from_static(doc), "application/json");
                    set_etag(&mut r, hash);
                    r
                }
                _ => error_response(&ApiError::not_found_generic()),
            }
        }
        ["metrics"] => bytes_response(
            StatusCode::OK,
            metrics(&state.registry).into(),
            "text/plain; version=0.0.4",
        ),
        ["healthz" | "livez" | "readyz", ..] => {
            bytes_response(StatusCode::OK, "ok".into(), "text/plain; charset=utf-8")
        }
        ["api"] if discovery::wants_aggregated(accept) => aggregated(true),
        ["api"] => json_response(StatusCode::OK, &discovery::api_versions(&state.advertise)),
        ["apis"] if discovery::wants_aggregated(accept) => aggregated(false),
        ["apis"] => json_response(StatusCode::OK, &discovery::api_group_list()),
        ["api", v] => match discovery::api_resource_list("", v) {
            Some(l) => json_response(StatusCode::OK, &l),
            None => error_response(&ApiError::not_found_generic()),
        },
        ["apis", g]
            if resources::group_versions().iter().any(|(gg, _)| gg == g)
                || *g == crate::metrics_api::GROUP =>
        {
            json_response(StatusCode::OK, &discovery::api_group(g))
        }
        ["apis", g, v] => match discovery::api_resource_list(g, v) {
            Some(l) => json_response(StatusCode::OK, &l),
            None => error_response(&ApiError::not_found_generic()),
        },
        _ => error_response(&ApiError::not_found_generic()),
    }
}

/// Prometheus text metrics, with upstream's names where they exist.
fn metrics(registry: &Registry) -> String {
    let mut out = String::new();
    out.push_str("# HELP apiserver_terminated_watchers_total Counter of watchers closed due to unresponsiveness broken by resource type.\n");
    out.push_str("# TYPE apiserver_terminated_watchers_total counter\n");
    let mut rows: Vec<(String, u64, usize)> = registry
        .cachers()
        .map(|(prefix, c)| {
            let resource = prefix.trim_start_matches("/registry/").to_string();
            (
                resource,
                c.closed_slow.load(std::sync::atomic::Ordering::Relaxed),
                c.watcher_count(),
            )
        })
        .collect();
    rows.sort();
    for (r, closed, _) in &rows {
        out.push_str(&format!(
            "apiserver_terminated_watchers_total{{resource=\"{r}\"}} {closed}\n"
        ));
    }
    out.push_str("# HELP apiserver_registered_watchers Number of currently registered watchers for a given resources\n");
    out.push_str("# TYPE apiserver_registered_watchers gauge\n");
    for (r, _, n) in &rows {
        out.push_str(&format!(
            "apiserver_registered_watchers{{resource=\"{r}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "# TYPE capstan_store_revision gauge\ncapstan_store_revision {}\n",
        registry.store.current_revision()
    ));
    out
}

fn set_etag(r: &mut Response<Body>, tag: &str) {
    if let Ok(v) = header::HeaderValue::from_str(&format!("\"{tag}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
}

fn aggregated(core: bool) -> Response<Body> {
    let body = serde_json::to_vec(&discovery::aggregated(core)).unwrap_or_default();
    bytes_response(StatusCode::OK, body.into(), discovery::AGGREGATED_V2)
}

/// `/version`: the Kubernetes minor whose API types are served (k8s-openapi `v1_33`).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0-capstan.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
    })
}

async fn ensure(
    registry: &Registry,
    group: &str,
    plural: &str,
    ns: &str,
    obj: Value,
) -> StartResult<()> {
    let info = resources::find(group, "v1", plural).ok_or("unknown bootstrap resource")?;
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match registry.get(info, ns, &name).await {
        Ok(cur) => {
            // Reconcile the fields the server owns.
            let mut want = cur.value.clone();
            for k in [
                "spec",
                "subsets",
                "endpoints",
                "ports",
                "addressType",
                "value",
            ] {
                if let Some(v) = obj.get(k) {
                    want[k] = v.clone();
                }
            }
            if want != cur.value {
                registry
                    .update(info, ns, &name, None, &WriteOptions::default(), |_| {
                        Ok(want.clone())
                    })
                    .await
                    .map_err(|e| format!("updating {plural}/{name}: {e}"))?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => match registry
            .create(info, ns, obj, &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(format!("creating {plural}/{name}: {e}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// The objects every cluster has from the start.
async fn bootstrap(registry: &Registry, advertise: IpAddr, port: u16) -> StartResult<()> {
    for ns in SYSTEM_NAMESPACES {
        ensure(
            registry,
            "",
            "namespaces",
            "",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    for (name, value, desc) in [
        ("system-node-critical", 2_000_001_000i64, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        ensure(
            registry,
            "scheduling.k8s.io",
            "priorityclasses",
            "",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority"}),
        )
        .await?;
    }
    let ip = registry.service_ips.first().to_string();
    ensure(
        registry,
        "",
        "services",
        "default",
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "sessionAffinity": "None",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
    )
    .await?;
    let family = if advertise.is_ipv4() { "IPv4" } else { "IPv6" };
    ensure(
        registry,
        "",
        "endpoints",
        "default",
        json!({"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}),
    )
    .await?;
    ensure(
        registry,
        "discovery.k8s.io",
        "endpointslices",
        "default",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
            "addressType": family,
            "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}),
    )
    .await?;
    Ok(())
}

/// Compacts history every five minutes to the revision seen five minutes earlier, as upstream
/// asks etcd to.
async fn compaction_loop(store: Arc<dyn Store>) {
    let mut last = store.current_revision();
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    tick.tick().await;
    loop {
        tick.tick().await;
        if last > store.compacted_revision() {
            if let Err(e) = store.compact(last).await {
                tracing::warn!(error = %e, "compaction failed");
            }
        }
        last = store.current_revision();
    }
}
