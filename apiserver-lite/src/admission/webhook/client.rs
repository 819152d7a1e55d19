//! The HTTPS client that calls admission webhooks (upstream's `webhookutil.ClientManager` and
//! its REST client): the server certificate is verified against the webhook's `caBundle` (rustls;
//! the name checked is the URL's host, or `<service>.<namespace>.svc` for a service reference),
//! the whole call is bounded by the webhook's timeout (sent as `?timeout=` too, as upstream does),
//! and HTTP/1.1 connections are kept per (address, server name, CA) and reused, so a webhook is
//! not paying a TLS handshake per admitted object.
//!
//! Errors are the text upstream's client error would carry after `Post "<url>": `, since the
//! dispatcher wraps them into "failed calling webhook" messages.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest webhook answer read (upstream bounds the response too).
const MAX_RESPONSE: usize = 3 * 1024 * 1024;
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 64;

/// Where one call goes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The address connected to.
    pub addr: SocketAddr,
    /// The name the server certificate must carry (DNS name or IP).
    pub server_name: String,
    /// `Host` header value.
    pub host: String,
    /// Path (with the `timeout` query) sent.
    pub path: String,
    /// The URL as upstream prints it in errors (`https://host:port/path?timeout=10s`).
    pub url: String,
}

/// Splits an `https://host[:port][/path]` URL into host, port and path.
pub fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("unsupported protocol scheme in {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid IPv6 host in {url:?}"))?;
        (h.to_string(), after.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        443
    } else {
        port.parse()
            .map_err(|_| format!("invalid port {port:?} in {url:?}"))?
    };
    Ok((host, port, path.to_string()))
}

/// The rustls client configuration trusting exactly the PEM certificates of a caBundle, cached
/// per bundle. An empty bundle trusts nothing here (upstream falls back to the system roots,
/// which a cluster-internal webhook does not use).
fn tls_config(ca_bundle: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIGS: OnceLock<Mutex<HashMap<Vec<u8>, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Default::default);
    if let Some(c) = configs.lock().get(ca_bundle) {
        return Ok(c.clone());
    }
    let mut roots = rustls::RootCertStore::empty();
    if !ca_bundle.is_empty() {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca_bundle)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("unable to load root certificates: {e}"))?;
        if certs.is_empty() {
            return Err(
                "unable to load root certificates: unable to parse bytes as PEM block".into(),
            );
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("unable to load root certificates: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    let c = Arc::new(c);
    let mut map = configs.lock();
    if map.len() > 256 {
        map.clear();
    }
    map.insert(ca_bundle.to_vec(), c.clone());
    Ok(c)
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    addr: SocketAddr,
    server_name: String,
    ca: u64,
}

type Pool = Mutex<HashMap<PoolKey, Vec<SendRequest<Full<Bytes>>>>>;

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(Default::default)
}

async fn connect(ep: &Endpoint, ca_bundle: &[u8]) -> Result<SendRequest<Full<Bytes>>, String> {
    let config = tls_config(ca_bundle)?;
    let tcp = tokio::net::TcpStream::connect(ep.addr)
        .await
        .map_err(|e| format!("dial tcp {}: connect: {}", ep.addr, lower(&e)))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(ep.server_name.clone())
        .map_err(|e| format!("invalid server name {:?}: {e}", ep.server_name))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("admission webhook connection: {e}");
        }
    });
    Ok(sender)
}

fn lower(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

/// POSTs `body` (an AdmissionReview) to the webhook; returns the HTTP status and the body.
/// `Err` is the client error (connection, TLS, timeout) as upstream words it after the URL.
pub async fn post(
    ep: &Endpoint,
    ca_bundle: &[u8],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    match tokio::time::timeout(timeout, post_inner(ep, ca_bundle, body)).await {
        Ok(r) => r.map_err(|e| format!("Post {:?}: {e}", ep.url)),
        Err(_) => Err(format!("Post {:?}: context deadline exceeded", ep.url)),
    }
}

async fn post_inner(
    ep: &Endpoint,
    ca_bundle: &[u8],
    body: Vec<u8>,
) -> Result<(u16, Bytes), String> {
    let key = PoolKey {
        addr: ep.addr,
        server_name: ep.server_name.clone(),
        ca: {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            ca_bundle.hash(&mut h);
            h.finish()
        },
    };
    let body = Bytes::from(body);
    // A pooled connection may have been closed by the server meanwhile: one retry on a fresh one.
    for attempt in 0..2 {
        let pooled = if attempt == 0 {
            let mut p = pool().lock();
            let idle = p.entry(key.clone()).or_default();
            let mut found = None;
            while let Some(s) = idle.pop() {
                if !s.is_closed() {
                    found = Some(s);
                    break;
                }
            }
            found
        } else {
            None
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            None => connect(ep, ca_bundle).await?,
        };
        if sender.ready().await.is_err() {
            if reused {
                continue;
            }
            return Err("connection closed before the request was sent".into());
        }
        let req = hyper::Request::post(&ep.path)
            .header(hyper::header::HOST, &ep.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json, */*")
            .header(hyper::header::USER_AGENT, "capstan-apiserver")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) if reused && (e.is_canceled() || e.is_closed()) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status().as_u16();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
        let bytes = limited
            .collect()
            .await
            .map_err(|e| format!("reading the response: {e}"))?
            .to_bytes();
        let mut p = pool().lock();
        let idle = p.entry(key.clone()).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
        return Ok((status, bytes));
    }
    Err("connection closed before the request was sent".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split_url("https://127.0.0.1:8443/validate").unwrap(),
            ("127.0.0.1".into(), 8443, "/validate".into())
        );
        assert_eq!(
            split_url("https://hooks.example.com").unwrap(),
            ("hooks.example.com".into(), 443, "/".into())
        );
        assert_eq!(
            split_url("https://[::1]:9443/m").unwrap(),
            ("::1".into(), 9443, "/m".into())
        );
        assert!(split_url("http://x/").is_err());
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        assert!(tls_config(b"garbage").is_err());
        assert!(tls_config(b"").is_ok());
    }
}
