//! The kubelet's certificates from the Certificates API (upstream's pkg/kubelet/certificate and
//! k8s.io/client-go/util/certificate): TLS bootstrap, rotation and the serving certificate.
//!
//! - [`bootstrap`]: `--bootstrap-kubeconfig` (upstream's `LoadClientCert`): when `--kubeconfig`
//!   is missing or its client certificate is expired or unreadable, the kubelet authenticates
//!   with the bootstrap credentials, asks for a `kubernetes.io/kube-apiserver-client-kubelet`
//!   certificate for `system:node:<name>` and writes a kubeconfig that points at it;
//! - [`csr`]: making a key and a CertificateSigningRequest and waiting for it to be issued;
//! - [`store`]: `<cert-dir>/kubelet-{client,server}-current.pem` (certificate + key), a symlink to
//!   a dated file, swapped atomically (upstream's `FileStore`);
//! - [`manager`]: the certificate manager: the rotation deadline at 70–90% of the lifetime
//!   (with jitter), a new key and request then, exponential back-off on failure, the current pair
//!   published to its users (the API client's TLS, the kubelet server's TLS);
//! - [`transport`]: the API client whose TLS client certificate is resolved per handshake, so
//!   a rotated certificate is used without a restart.

pub mod bootstrap;
pub mod csr;
pub mod manager;
pub mod store;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Upstream's signer names and the subject of a kubelet's certificates.
pub const CLIENT_KUBELET_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// Failures of bootstrap, requests and rotation.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("generating a key or request: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    #[error("the API client: {0}")]
    Client(#[from] machinery::client::ClientError),
    #[error("certificate signing request {name} was {how}: {message}")]
    Refused {
        name: String,
        how: &'static str,
        message: String,
    },
    #[error("timed out waiting for certificate signing request {0} to be issued")]
    Timeout(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn invalid(what: impl Into<String>, message: impl ToString) -> CertificateError {
    CertificateError::Invalid {
        what: what.into(),
        message: message.to_string(),
    }
}

/// A certificate (chain) and its key, as the store and the TLS stacks use them.
#[derive(Clone)]
pub struct KeyedCert {
    /// PEM of the certificate chain followed by the key (the `*-current.pem` form).
    pub pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The rustls form, for handshakes.
    pub certified: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl KeyedCert {
    /// Parses PEM holding the certificate chain and the private key (in any order).
    pub fn from_pem(pem: &str, what: &str) -> Result<KeyedCert, CertificateError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(what, e))?;
        let first = chain
            .first()
            .ok_or_else(|| invalid(what, "no certificate in the data"))?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| invalid(what, e))?;
        let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        let not_before = at(x509.validity().not_before.timestamp());
        let not_after = at(x509.validity().not_after.timestamp());
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| invalid(what, e))?;
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| invalid(what, e))?;
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
        Ok(KeyedCert {
            pem: pem.to_string(),
            not_before,
            not_after,
            certified,
        })
    }

    /// Whether the certificate is valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}
