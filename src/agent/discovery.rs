//! Token discovery, as kubeadm's `cmd/kubeadm/app/discovery/token`: how a joining agent that
//! knows only the server's URL and a bootstrap token (`<id>.<secret>`) learns which CA to trust.
//!
//! 1. GET `kube-public/cluster-info` anonymously without verifying the server's certificate
//!    (there is nothing to verify it with yet), retrying until the signer has added the token's
//!    signature or the timeout passes.
//! 2. Check `jws-kubeconfig-<token-id>`: the detached HS256 JWS of its `kubeconfig` keyed by the
//!    token secret. Only someone holding the token could have made it, so the kubeconfig (server
//!    URL and CA) is the cluster's.
//! 3. When CA pins (`sha256:<hex>` of a CA certificate's SubjectPublicKeyInfo, kubeadm's
//!    `--discovery-token-ca-cert-hash`) are given, one of the kubeconfig's CA certificates must
//!    match one, and the ConfigMap is fetched again with that CA trusted and must be the same.
//!    Without pins discovery is refused unless the caller explicitly skips CA verification (as
//!    kubeadm's validation does); then the signed kubeconfig is used as it is.
//!
//! Self-contained (no `crate::` paths), so the integration tests include it with `#[path]`.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use machinery::bootstraptoken as bt;

/// How long discovery waits for the ConfigMap and the token's signature (kubeadm's default
/// `discovery.timeout` is 5 minutes).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time between attempts (kubeadm's `DiscoveryRetryInterval`).
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What discovery learned: the API server's URL and the cluster CA (PEM), from the signed
/// `kubeconfig` of cluster-info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub server: String,
    pub ca_pem: String,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the bootstrap token is invalid: it must match \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\"")]
    InvalidToken,
    #[error("invalid discovery token CA certificate hash {pin:?}: {reason}")]
    InvalidPin { pin: String, reason: &'static str },
    #[error(
        "refusing token discovery without a CA certificate hash to pin the cluster CA: give \
         sha256:<hex of the CA's SubjectPublicKeyInfo>, or skip CA verification explicitly"
    )]
    NoPins,
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("failed to request the cluster-info ConfigMap from {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "there is no kubeconfig key in the cluster-info ConfigMap: this API server isn't set up \
         for token bootstrapping"
    )]
    NoKubeconfig,
    #[error(
        "token id {0:?} is invalid for this cluster or it has expired: the cluster-info \
         ConfigMap holds no JWS signature for it"
    )]
    NoSignature(String),
    #[error(
        "failed to verify the JWS signature of the cluster-info ConfigMap for token id {0:?} \
         (wrong token secret?), can't trust this API server"
    )]
    BadSignature(String),
    #[error("malformed kubeconfig in the cluster-info ConfigMap: {0}")]
    BadKubeconfig(String),
    #[error(
        "cluster CA found in the cluster-info ConfigMap is invalid: none of the public keys \
         {found:?} are pinned"
    )]
    PinMismatch { found: Vec<String> },
    #[error(
        "the second kubeconfig from the cluster-info ConfigMap (using validated TLS) was \
         different from the first"
    )]
    Changed,
}

/// Discovers the cluster behind `server_url` with `token`, waiting at most
/// [`DEFAULT_TIMEOUT`] for the signature.
pub async fn fetch_cluster_info(
    server_url: &str,
    token: &str,
    ca_cert_hashes: &[String],
    unsafe_skip_ca_verification: bool,
) -> Result<ClusterInfo, DiscoveryError> {
    fetch_cluster_info_within(
        server_url,
        token,
        ca_cert_hashes,
        unsafe_skip_ca_verification,
        DEFAULT_TIMEOUT,
    )
    .await
}

/// [`fetch_cluster_info`] with its own timeout for the ConfigMap and the token's signature.
pub async fn fetch_cluster_info_within(
    server_url: &str,
    token: &str,
    ca_cert_hashes: &[String],
    unsafe_skip_ca_verification: bool,
    timeout: Duration,
) -> Result<ClusterInfo, DiscoveryError> {
    let (id, secret) = bt::parse_token(token).ok_or(DiscoveryError::InvalidToken)?;
    let pins = parse_pins(ca_cert_hashes)?;
    if pins.is_empty() && !unsafe_skip_ca_verification {
        return Err(DiscoveryError::NoPins);
    }

    let insecure = get_cluster_info(server_url, None, id, timeout).await?;
    let content = validate_signature(&insecure, id, secret)?;
    let info = parse_kubeconfig(&content)?;
    if pins.is_empty() {
        tracing::info!(server = %info.server, "cluster-info signature valid; no CA pin given, trusting its CA");
        return Ok(info);
    }
    check_pins(&info.ca_pem, &pins)?;

    // Once more, now trusting the pinned CA: the same kubeconfig must come back.
    let secure = get_cluster_info(server_url, Some(&info.ca_pem), id, timeout).await?;
    if secure.data.as_ref().and_then(|d| d.get(bt::KUBECONFIG_KEY)) != Some(&content) {
        return Err(DiscoveryError::Changed);
    }
    tracing::info!(server = %info.server, "cluster-info signature valid and TLS verified against the pinned CA");
    Ok(info)
}

/// The `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (kubeadm's `pubkeypin.Hash`), for
/// every certificate in `pem`.
pub fn ca_cert_hashes(pem: &str) -> Result<Vec<String>, DiscoveryError> {
    let mut out = Vec::new();
    for p in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let p = p.map_err(|e| DiscoveryError::BadKubeconfig(format!("CA PEM: {e}")))?;
        let cert = p
            .parse_x509()
            .map_err(|e| DiscoveryError::BadKubeconfig(format!("CA certificate: {e}")))?;
        let spki = cert.tbs_certificate.subject_pki.raw;
        out.push(format!(
            "sha256:{}",
            hex(ring::digest::digest(&ring::digest::SHA256, spki).as_ref())
        ));
    }
    if out.is_empty() {
        return Err(DiscoveryError::BadKubeconfig(
            "no CA certificate in certificate-authority-data".into(),
        ));
    }
    Ok(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses `sha256:<64 hex digits>` pins into lower-case form.
fn parse_pins(pins: &[String]) -> Result<Vec<String>, DiscoveryError> {
    pins.iter()
        .map(|p| {
            let bad = |reason| DiscoveryError::InvalidPin {
                pin: p.clone(),
                reason,
            };
            let (kind, hex) = p.split_once(':').ok_or_else(|| bad("want sha256:<hex>"))?;
            if !kind.eq_ignore_ascii_case("sha256") {
                return Err(bad("unsupported hash type (only sha256)"));
            }
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("want 64 hexadecimal digits"));
            }
            Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
        })
        .collect()
}

fn check_pins(ca_pem: &str, pins: &[String]) -> Result<(), DiscoveryError> {
    let found = ca_cert_hashes(ca_pem)?;
    if found.iter().any(|h| pins.contains(h)) {
        Ok(())
    } else {
        Err(DiscoveryError::PinMismatch { found })
    }
}

/// The signed kubeconfig, when the token's signature over it is valid (kubeadm's
/// `validateClusterInfoToken`).
fn validate_signature(cm: &ConfigMap, id: &str, secret: &str) -> Result<String, DiscoveryError> {
    let data = cm.data.clone().unwrap_or_default();
    let content = data
        .get(bt::KUBECONFIG_KEY)
        .filter(|c| !c.is_empty())
        .ok_or(DiscoveryError::NoKubeconfig)?;
    let sig = data
        .get(&format!("{}{id}", bt::JWS_SIGNATURE_PREFIX))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DiscoveryError::NoSignature(id.into()))?;
    if !bt::detached_token_is_valid(sig, content, id, secret) {
        return Err(DiscoveryError::BadSignature(id.into()));
    }
    Ok(content.clone())
}

/// The server and CA of the (first) cluster of a kubeconfig.
fn parse_kubeconfig(content: &str) -> Result<ClusterInfo, DiscoveryError> {
    let kc = kube::config::Kubeconfig::from_yaml(content)
        .map_err(|e| DiscoveryError::BadKubeconfig(e.to_string()))?;
    let cluster = kc
        .clusters
        .into_iter()
        .find_map(|c| c.cluster)
        .ok_or_else(|| DiscoveryError::BadKubeconfig("no cluster".into()))?;
    let server = cluster
        .server
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DiscoveryError::BadKubeconfig("the cluster has no server".into()))?;
    let ca = cluster
        .certificate_authority_data
        .ok_or_else(|| DiscoveryError::BadKubeconfig("no certificate-authority-data".into()))?;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca.trim())
        .map_err(|e| DiscoveryError::BadKubeconfig(format!("certificate-authority-data: {e}")))?;
    let ca_pem = String::from_utf8(ca).map_err(|_| {
        DiscoveryError::BadKubeconfig("certificate-authority-data is not PEM".into())
    })?;
    Ok(ClusterInfo { server, ca_pem })
}

/// GETs cluster-info (anonymously; trusting `ca_pem`, or nothing at all) until it carries the
/// token's signature or `timeout` passes; the last error then (kubeadm's `getClusterInfo`).
async fn get_cluster_info(
    url: &str,
    ca_pem: Option<&str>,
    id: &str,
    timeout: Duration,
) -> Result<ConfigMap, DiscoveryError> {
    let mut config = kube::Config::new(url.parse().map_err(|e| DiscoveryError::InvalidUrl {
        url: url.into(),
        reason: format!("{e}"),
    })?);
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(10));
    match ca_pem {
        None => config.accept_invalid_certs = true,
        Some(pem) => {
            let ders = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
                .filter_map(Result::ok)
                .map(|p| p.contents)
                .collect();
            config.root_cert = Some(ders);
        }
    }
    let client = kube::Client::try_from(config).map_err(|source| DiscoveryError::Request {
        url: url.into(),
        source,
    })?;
    let api: Api<ConfigMap> = Api::namespaced(client, bt::CLUSTER_INFO_NAMESPACE);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let err = match api.get(bt::CLUSTER_INFO_NAME).await {
            Ok(cm) => {
                let key = format!("{}{id}", bt::JWS_SIGNATURE_PREFIX);
                if cm.data.as_ref().is_some_and(|d| d.contains_key(&key)) {
                    return Ok(cm);
                }
                // The signer adds the signature a little after the ConfigMap appears.
                if cm
                    .data
                    .as_ref()
                    .is_none_or(|d| !d.contains_key(bt::KUBECONFIG_KEY))
                {
                    DiscoveryError::NoKubeconfig
                } else {
                    DiscoveryError::NoSignature(id.into())
                }
            }
            Err(source) => DiscoveryError::Request {
                url: url.into(),
                source,
            },
        };
        if tokio::time::Instant::now() + RETRY_INTERVAL > deadline {
            return Err(err);
        }
        tracing::debug!("discovery: retrying: {err}");
        tokio::time::sleep(RETRY_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(pairs: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn signature_checks_name_what_failed() {
        let kc = "apiVersion: v1\nkind: Config\n";
        let sig = bt::compute_detached_signature(kc, "abcdef", "0123456789abcdef");
        let good = cm(&[("kubeconfig", kc), ("jws-kubeconfig-abcdef", &sig)]);
        assert_eq!(
            validate_signature(&good, "abcdef", "0123456789abcdef").unwrap(),
            kc
        );
        assert!(matches!(
            validate_signature(&good, "abcdef", "0123456789abcdeX"),
            Err(DiscoveryError::BadSignature(id)) if id == "abcdef"
        ));
        assert!(matches!(
            validate_signature(&good, "zzzzzz", "0123456789abcdef"),
            Err(DiscoveryError::NoSignature(id)) if id == "zzzzzz"
        ));
        assert!(matches!(
            validate_signature(&cm(&[]), "abcdef", "0123456789abcdef"),
            Err(DiscoveryError::NoKubeconfig)
        ));
    }

    #[test]
    fn pins_are_parsed_strictly() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_pins(&[format!("SHA256:{}", h.to_uppercase())]).unwrap(),
            vec![format!("sha256:{h}")]
        );
        for bad in [h.clone(), format!("md5:{h}"), "sha256:abc".into()] {
            assert!(
                matches!(
                    parse_pins(std::slice::from_ref(&bad)),
                    Err(DiscoveryError::InvalidPin { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn kubeconfig_and_pins() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&ca);
        let kc = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {b64}\n    server: https://192.0.2.1:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n"
        );
        let info = parse_kubeconfig(&kc).unwrap();
        assert_eq!(info.server, "https://192.0.2.1:6443");
        assert_eq!(info.ca_pem, ca);
        // The pin is the SHA-256 of the SubjectPublicKeyInfo: the key's, whatever the cert.
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let want = format!(
            "sha256:{}",
            hex(ring::digest::digest(&ring::digest::SHA256, &spki).as_ref())
        );
        assert_eq!(ca_cert_hashes(&ca).unwrap(), vec![want.clone()]);
        assert!(check_pins(&ca, &[want]).is_ok());
        assert!(matches!(
            check_pins(&ca, &[format!("sha256:{}", "0".repeat(64))]),
            Err(DiscoveryError::PinMismatch { .. })
        ));
    }
}
