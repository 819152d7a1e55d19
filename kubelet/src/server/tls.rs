//! The kubelet server's serving certificate (upstream's `InitializeTLS`): the configured
//! `tlsCertFile`/`tlsPrivateKeyFile` when given, otherwise a self-signed pair kept at
//! `<root-dir>/pki/kubelet.crt` and `kubelet.key`, made on first start and reused after. As
//! upstream's `GenerateSelfSignedCertKey`, a throw-away CA (`<host>-ca@<unix time>`) signs a
//! one-year serving certificate (`<host>@<unix time>`), and the certificate file holds both.
//! The names are the node name, its addresses, `localhost` and the loopback addresses.
//!
//! Client certificates are requested, never required (Go's `tls.RequestClientCert`, as
//! upstream's kubelet): [`RequestClientCert`] accepts any chain whose holder proves its key and
//! names the client CA in its hints; `auth::authn` verifies the chain per request, so a
//! certificate from another CA is a 401, not a failed handshake.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The subdirectory of the root dir holding generated certificates (upstream's `--cert-dir`).
pub const CERT_SUBDIR: &str = "pki";
pub const CERT_FILE: &str = "kubelet.crt";
pub const KEY_FILE: &str = "kubelet.key";

/// Failures to load or make the serving certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
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
    #[error("{}: {message}", path.display())]
    Pem { path: PathBuf, message: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("serving certificate: {0}")]
    Config(#[from] rustls::Error),
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum CertSource {
    /// `tlsCertFile` and `tlsPrivateKeyFile`.
    Files { cert: PathBuf, key: PathBuf },
    /// Generated into `dir` when missing, for `host` and `ips`.
    SelfSigned {
        dir: PathBuf,
        host: String,
        ips: Vec<IpAddr>,
    },
    /// `serverTLSBootstrap`: the serving certificate manager's current pair, resolved per
    /// handshake (none yet: the handshake fails, as upstream's "no serving certificate
    /// available for the kubelet").
    Managed(tokio::sync::watch::Receiver<Option<crate::certificate::KeyedCert>>),
}

/// Resolves the serving certificate from the manager's current pair.
#[derive(Debug)]
struct ManagedServerCert(tokio::sync::watch::Receiver<Option<crate::certificate::KeyedCert>>);

impl rustls::server::ResolvesServerCert for ManagedServerCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let cert = self.0.borrow().as_ref().map(|c| c.certified.clone());
        if cert.is_none() {
            tracing::info!("no serving certificate available for the kubelet");
        }
        cert
    }
}

/// The rustls server configuration for the certificate (HTTP/1.1 only), asking clients for a
/// certificate with `client_auth`.
pub fn server_config(
    source: &CertSource,
    client_auth: Arc<RequestClientCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert_path, key_path) = match source {
        CertSource::Managed(rx) => {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_auth)
            .with_cert_resolver(Arc::new(ManagedServerCert(rx.clone())));
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            return Ok(Arc::new(config));
        }
        CertSource::Files { cert, key } => (cert.clone(), key.clone()),
        CertSource::SelfSigned { dir, host, ips } => {
            let cert = dir.join(CERT_FILE);
            let key = dir.join(KEY_FILE);
            if !(cert.is_file() && key.is_file()) {
                generate(dir, host, ips)?;
            }
            (cert, key)
        }
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            message: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path,
        message: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_client_cert_verifier(client_auth)
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The handshake's client-certificate policy: ask (with the client CA's names as hints), accept
/// no certificate or any certificate whose key signs the handshake; trust is decided later.
#[derive(Debug)]
pub struct RequestClientCert {
    hints: Vec<rustls::DistinguishedName>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl RequestClientCert {
    pub fn new(hints: Vec<rustls::DistinguishedName>) -> Arc<Self> {
        Arc::new(RequestClientCert {
            hints,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes the CA, the serving certificate and its key, and writes them into `dir` (the key
/// readable by root only).
fn generate(dir: &Path, host: &str, ips: &[IpAddr]) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    // Valid from yesterday (clock skew) for a year, as upstream's one-year certificates.
    let ((fy, fm, fd), (uy, um, ud)) = validity();
    let from = rcgen::date_time_ymd(fy, fm, fd);
    let until = rcgen::date_time_ymd(uy, um, ud);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{host}-ca@{unix}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    ca_params.not_before = from;
    ca_params.not_after = until;
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{host}@{unix}"));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut sans: Vec<SanType> = Vec::new();
    let mut all_ips: Vec<IpAddr> = ips.to_vec();
    match host.parse::<IpAddr>() {
        Ok(ip) => all_ips.push(ip),
        Err(_) => sans.push(SanType::DnsName(host.try_into()?)),
    }
    if host != "localhost" {
        sans.push(SanType::DnsName("localhost".try_into()?));
    }
    all_ips.extend([
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ]);
    all_ips.dedup();
    sans.extend(all_ips.into_iter().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.not_before = from;
    params.not_after = until;
    let key = KeyPair::generate()?;
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write(
        &dir.join(CERT_FILE),
        format!("{}{}", cert.pem(), ca.pem()).as_bytes(),
        0o644,
    )?;
    write(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
    tracing::info!(
        cert = %dir.join(CERT_FILE).display(),
        "generated a self-signed serving certificate for {host}"
    );
    Ok(())
}

/// Yesterday and a year from today, as (year, month, day).
fn validity() -> ((i32, u8, u8), (i32, u8, u8)) {
    use chrono::Datelike;
    let ymd = |d: chrono::NaiveDate| (d.year(), d.month() as u8, d.day().min(28) as u8);
    let today = chrono::Utc::now().date_naive();
    let from = today.pred_opt().unwrap_or(today);
    let until = today
        .with_day(1)
        .and_then(|d| d.with_year(d.year() + 1))
        .unwrap_or(today);
    (
        ymd(from),
        ymd(until.with_day(today.day().min(28)).unwrap_or(until)),
    )
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn self_signed_pair_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let source = CertSource::SelfSigned {
            dir: dir.path().join("pki"),
            host: "node-1".into(),
            ips: vec![IpAddr::from([192, 0, 2, 9])],
        };
        server_config(&source, RequestClientCert::new(Vec::new())).unwrap();
        let cert = std::fs::read_to_string(dir.path().join("pki").join(CERT_FILE)).unwrap();
        // The serving certificate, then its CA.
        assert_eq!(cert.matches("BEGIN CERTIFICATE").count(), 2);
        let key_mode = std::fs::metadata(dir.path().join("pki").join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        server_config(&source, RequestClientCert::new(Vec::new())).unwrap();
        let again = std::fs::read_to_string(dir.path().join("pki").join(CERT_FILE)).unwrap();
        assert_eq!(cert, again, "an existing pair is reused");
    }

    #[test]
    fn configured_files_must_exist_and_hold_pem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CertSource::Files {
            cert: dir.path().join("c.crt"),
            key: dir.path().join("c.key"),
        };
        assert!(server_config(&missing, RequestClientCert::new(Vec::new()))
            .unwrap_err()
            .to_string()
            .contains("c.crt"));
        std::fs::write(dir.path().join("c.crt"), "not pem").unwrap();
        std::fs::write(dir.path().join("c.key"), "not pem").unwrap();
        assert!(matches!(
            server_config(&missing, RequestClientCert::new(Vec::new())).unwrap_err(),
            TlsError::Pem { .. }
        ));
    }
}
