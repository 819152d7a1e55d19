//! How the API server calls kubelets (upstream's `pkg/kubelet/client` `KubeletClientConfig`):
//! HTTPS with the API server's own kubelet-client certificate (`--kubelet-client-certificate` /
//! `--kubelet-client-key`; by default `DIR/server/apiserver-kubelet-client.crt`, CN
//! `kube-apiserver-kubelet-client` in `system:masters`, as kubeadm mints it), so that kubelets
//! authenticate it and authorize it with a SubjectAccessReview on `nodes/proxy`. The kubelet's
//! serving certificate is verified against `--kubelet-certificate-authority` when that is given
//! and, as upstream, not verified otherwise (self-signed kubelet certificates are the default).
//! `pod_log`, `connect`, `stream_translator` and `metrics_api` dial through [`KubeletClient`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long dialing a kubelet may take (upstream's kubelet client dial timeout).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Failures to load the kubelet client's key material.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("kubelet client TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// PEM text and the file it came from (named in errors).
pub type PemFile<'a> = (&'a Path, &'a [u8]);

/// The TLS side of calls to kubelets.
#[derive(Clone, Debug)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl Default for KubeletClient {
    /// No client certificate, the kubelet's certificate not verified.
    fn default() -> Self {
        KubeletClient::from_pem(None, None).expect("a configuration without key material")
    }
}

impl KubeletClient {
    /// From files: the client certificate and key, and the CA bundle that verifies kubelets.
    pub fn from_files(
        client: Option<(&Path, &Path)>,
        kubelet_ca: Option<&Path>,
    ) -> Result<KubeletClient, KubeletClientError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| KubeletClientError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        let client = match client {
            Some((cert, key)) => Some(((cert, read(cert)?), (key, read(key)?))),
            None => None,
        };
        let ca = match kubelet_ca {
            Some(p) => Some((p, read(p)?)),
            None => None,
        };
        let client = client
            .as_ref()
            .map(|((cp, c), (kp, k))| ((*cp, c.as_slice()), (*kp, k.as_slice())));
        let ca = ca.as_ref().map(|(p, c)| (*p, c.as_slice()));
        Self::from_pem(client, ca)
    }

    /// From PEM text, each with the path it came from (for errors).
    pub fn from_pem(
        client: Option<(PemFile<'_>, PemFile<'_>)>,
        kubelet_ca: Option<PemFile<'_>>,
    ) -> Result<KubeletClient, KubeletClientError> {
        let pem_err = |path: &Path, message: String| KubeletClientError::Pem {
            path: path.to_path_buf(),
            message,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match kubelet_ca {
            Some((path, pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| pem_err(path, e.to_string()))?;
                    roots.add(c).map_err(|e| pem_err(path, e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(pem_err(path, "no CA certificate in the file".into()));
                }
                builder.with_root_certificates(roots)
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider))),
        };
        let mut config = match client {
            Some(((cert_path, cert), (key_path, key))) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| pem_err(cert_path, e.to_string()))?;
                if chain.is_empty() {
                    return Err(pem_err(cert_path, "no certificate in the file".into()));
                }
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| pem_err(key_path, e.to_string()))?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Arc::new(config),
        })
    }

    /// A TLS connection to the kubelet at `addr`, its certificate checked for the address.
    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let tcp = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("dial tcp {addr}: i/o timeout"))??;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let server_name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        Ok(connector.connect(server_name, tcp).await?)
    }
}

/// Accepts any server certificate (no `--kubelet-certificate-authority`); handshake signatures
/// are still checked, so the handshake is a real one.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kubelet-ca.crt");
        let e = KubeletClient::from_files(None, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("kubelet-ca.crt"), "{e}");
        std::fs::write(&missing, "not pem").unwrap();
        let e = KubeletClient::from_files(None, Some(&missing)).unwrap_err();
        assert!(e.to_string().contains("no CA certificate"), "{e}");
        KubeletClient::default();
    }
}
