//! The cluster's public-key infrastructure, as kubeadm lays it out (`certs` phase): a cluster
//! CA that signs the API server's serving certificate and every client certificate, a
//! service-account signing key pair, and a front-proxy CA, all under `DIR/server/` (made on
//! first start, kept after; files placed there beforehand, or given with upstream's flags, are
//! used instead). Client identities are x509 subjects: CN is the user, O the groups, which is
//! what the x509 authenticator reads back (`authn`).
//!
//! The serving certificate is re-issued at every start for the current listen and advertise
//! addresses (every host address for a wildcard listen address), loopback, `localhost`, the
//! `kubernetes` Service names and its ClusterIP. The kubeconfigs written here embed the CA and
//! the client certificate, so they work from any directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The cluster CA (kubeadm's `ca.crt`/`ca.key`).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
/// The service-account signing key pair (kubeadm's `sa.key`/`sa.pub`).
pub const SA_KEY: &str = "sa.key";
pub const SA_PUB: &str = "sa.pub";
/// The front-proxy CA (kubeadm's `front-proxy-ca.crt`/`.key`).
pub const FRONT_PROXY_CA_CERT: &str = "front-proxy-ca.crt";
pub const FRONT_PROXY_CA_KEY: &str = "front-proxy-ca.key";
/// The serving certificate (kubeadm's `apiserver.crt`/`.key`).
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";

/// The API server's client certificate for calls to kubelets (kubeadm's
/// `apiserver-kubelet-client.crt`/`.key`), its user and group.
pub const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
pub const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The identity of the cluster administrator (kubeadm's admin.conf before 1.29).
pub const ADMIN_USER: &str = "kubernetes-admin";
pub const MASTERS_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The component kubeconfigs under `DIR/server/` and their users.
pub const COMPONENT_KUBECONFIGS: [(&str, &str); 3] = [
    ("scheduler.kubeconfig", "system:kube-scheduler"),
    (
        "controller-manager.kubeconfig",
        "system:kube-controller-manager",
    ),
    ("proxy.kubeconfig", "system:kube-proxy"),
];

/// Failures to read, make or write key material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
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
    Parse { path: PathBuf, message: String },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("a client certificate carries at most two groups here, {0} asked")]
    TooManyGroups(usize),
}

/// Key material given on the command line (upstream's flag names); `None` means "the file
/// under `DIR/server/`, made when missing".
#[derive(Debug, Clone, Default)]
pub struct PkiFiles {
    /// `--client-ca-file`: extra CA bundle trusted for client certificates.
    pub client_ca: Option<PathBuf>,
    /// `--tls-cert-file` / `--tls-private-key-file`: the serving certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `--service-account-key-file`: public keys that verify service-account tokens.
    pub sa_public: Vec<PathBuf>,
    /// `--service-account-signing-key-file`: the key that signs them.
    pub sa_signing: Option<PathBuf>,
    /// `--kubelet-client-certificate` / `--kubelet-client-key`: the API server's identity
    /// towards kubelets.
    pub kubelet_client_cert: Option<PathBuf>,
    pub kubelet_client_key: Option<PathBuf>,
    /// `--kubelet-certificate-authority`: verifies kubelets' serving certificates (none: not
    /// verified, as upstream).
    pub kubelet_certificate_authority: Option<PathBuf>,
}

/// The loaded PKI.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// PEM bundle of every CA trusted for client certificates.
    pub client_ca_pem: String,
    /// The serving chain and key (PEM).
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// The service-account signing key (PKCS#8 PEM) and the verification keys (PEM public keys
    /// or certificates).
    pub sa_signing_key_pem: String,
    pub sa_public_pems: Vec<String>,
    /// Where the kubelet-client certificate and key are (given, or made under `dir`).
    pub kubelet_client_files: Option<(PathBuf, PathBuf)>,
}

impl Pki {
    /// Loads `dir` (DIR/server), making what is missing, and issues the serving certificate for
    /// `ips` and `dns` (plus loopback, `localhost` and the `kubernetes` Service names).
    pub fn load_or_create(
        dir: &Path,
        files: &PkiFiles,
        ips: &[IpAddr],
        dns: &[String],
    ) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let (ca_pem, ca_key) = ensure_ca(dir, CA_CERT, CA_KEY, "kubernetes")?;
        ensure_ca(
            dir,
            FRONT_PROXY_CA_CERT,
            FRONT_PROXY_CA_KEY,
            "front-proxy-ca",
        )?;
        let issuer = issuer(&dir.join(CA_CERT), &ca_pem, ca_key)?;
        let mut client_ca_pem = ca_pem.clone();
        if let Some(p) = &files.client_ca {
            client_ca_pem.push_str(&read(p)?);
        }
        // The service-account key pair.
        let (sa_signing_key_pem, mut sa_public_pems) = match &files.sa_signing {
            Some(p) => (read(p)?, Vec::new()),
            None => {
                let key_path = dir.join(SA_KEY);
                if !key_path.is_file() {
                    let key = KeyPair::generate()?;
                    write_private(&key_path, &key.serialize_pem())?;
                    write(&dir.join(SA_PUB), &key.public_key_pem())?;
                }
                (read(&key_path)?, Vec::new())
            }
        };
        for p in &files.sa_public {
            sa_public_pems.push(read(p)?);
        }
        let pki_probe = Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            issuer,
            client_ca_pem,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            sa_signing_key_pem,
            sa_public_pems,
            kubelet_client_files: None,
        };
        let mut pki = pki_probe;
        // The kubelet-client identity: given, or made once and kept (kubeadm's).
        pki.kubelet_client_files = Some(
            match (&files.kubelet_client_cert, &files.kubelet_client_key) {
                (Some(c), Some(k)) => (c.clone(), k.clone()),
                _ => {
                    let (c, k) = (dir.join(KUBELET_CLIENT_CERT), dir.join(KUBELET_CLIENT_KEY));
                    if !(c.is_file() && k.is_file()) {
                        let (cert, key) =
                            pki.issue_client(KUBELET_CLIENT_USER, &[MASTERS_GROUP])?;
                        write(&c, &cert)?;
                        write_private(&k, &key)?;
                    }
                    (c, k)
                }
            },
        );
        match (&files.tls_cert, &files.tls_key) {
            (Some(c), Some(k)) => {
                pki.serving_cert_pem = read(c)?;
                pki.serving_key_pem = read(k)?;
            }
            _ => {
                let (cert, key) = pki.issue_serving(ips, dns)?;
                write(&dir.join(SERVING_CERT), &cert)?;
                write_private(&dir.join(SERVING_KEY), &key)?;
                pki.serving_cert_pem = cert;
                pki.serving_key_pem = key;
            }
        }
        Ok(pki)
    }

    /// Loads the cluster CA of an existing `DIR/server` (for minting kubeconfigs from outside
    /// the API server process).
    pub fn load_ca(dir: &Path) -> Result<Pki, PkiError> {
        let ca_pem = read(&dir.join(CA_CERT))?;
        let key_pem = read(&dir.join(CA_KEY))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Parse {
            path: dir.join(CA_KEY),
            message: e.to_string(),
        })?;
        let issuer = issuer(&dir.join(CA_CERT), &ca_pem, key)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            client_ca_pem: ca_pem.clone(),
            ca_pem,
            issuer,
            serving_cert_pem: String::new(),
            serving_key_pem: String::new(),
            sa_signing_key_pem: String::new(),
            sa_public_pems: Vec::new(),
            kubelet_client_files: None,
        })
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client certificate and key (PEM) for `user` in `groups` (at most two), valid for a
    /// year.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // rcgen keeps one value per attribute type, so the second group is written under the
        // same OID (2.5.4.10, O) spelled as a custom type; readers see two O attributes.
        if groups.len() > 2 {
            return Err(PkiError::TooManyGroups(groups.len()));
        }
        if let Some(g) = groups.first() {
            dn.push(DnType::OrganizationName, *g);
        }
        if let Some(g) = groups.get(1) {
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *g);
        }
        dn.push(DnType::CommonName, user);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A serving certificate and key (PEM) for the given addresses and names plus loopback,
    /// `localhost` and the `kubernetes` Service names.
    pub fn issue_serving(
        &self,
        ips: &[IpAddr],
        dns: &[String],
    ) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        let mut names: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        names.extend(dns.iter().cloned());
        names.dedup();
        let mut all_ips: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        params.subject_alt_names = names
            .into_iter()
            .filter_map(|n| n.try_into().ok().map(SanType::DnsName))
            .chain(all_ips.into_iter().map(SanType::IpAddress))
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        // The chain: the serving certificate, then the CA.
        Ok((
            format!("{}{}", cert.pem(), self.ca_pem),
            key.serialize_pem(),
        ))
    }

    /// A kubelet serving certificate and key (PEM) for `node` at `ips` (plus loopback and
    /// `localhost`), as the kubelet-serving signer issues them: CN `system:node:<node>`, O
    /// `system:nodes`, server auth. The chain holds the CA after the certificate.
    pub fn issue_kubelet_serving(
        &self,
        node: &str,
        ips: &[IpAddr],
    ) -> Result<(String, String), PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, NODES_GROUP);
        dn.push(DnType::CommonName, format!("{NODE_USER_PREFIX}{node}"));
        params.distinguished_name = dn;
        let mut all_ips: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        for ip in ips {
            if !ip.is_unspecified() && !all_ips.contains(ip) {
                all_ips.push(*ip);
            }
        }
        let mut names = vec![node.to_string()];
        if node != "localhost" {
            names.push("localhost".into());
        }
        params.subject_alt_names = names
            .into_iter()
            .filter(|n| n.parse::<IpAddr>().is_err())
            .filter_map(|n| n.try_into().ok().map(SanType::DnsName))
            .chain(all_ips.into_iter().map(SanType::IpAddress))
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, 365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            format!("{}{}", cert.pem(), self.ca_pem),
            key.serialize_pem(),
        ))
    }

    /// Writes a kubeconfig for `server` that authenticates as `user` in `groups` with a fresh
    /// client certificate, the CA and the credentials embedded. `tls_server_name` goes into the
    /// cluster entry when the server is reached under a name its certificate does not carry.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<(), PkiError> {
        let (cert, key) = self.issue_client(user, groups)?;
        let text = kubeconfig_text(server, &self.ca_pem, user, &cert, &key);
        write_private(path, &text)
    }
}

/// Writes `path`: a kubeconfig for the kubelet of `node` (user `system:node:<node>`, group
/// `system:nodes`), signed by the cluster CA under `server_dir` (`DIR/server`), for `server`.
pub fn write_node_kubeconfig(
    server_dir: &Path,
    path: &Path,
    server: &str,
    node: &str,
) -> Result<(), PkiError> {
    let pki = Pki::load_ca(server_dir)?;
    pki.write_kubeconfig(
        path,
        server,
        &format!("{NODE_USER_PREFIX}{node}"),
        &[NODES_GROUP],
    )
}

/// A kubeconfig with everything embedded (one cluster, one user, one context).
pub fn kubeconfig_text(server: &str, ca_pem: &str, user: &str, cert: &str, key: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: capstan\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: capstan\n  context:\n    cluster: capstan\n    user: {user}\n    namespace: default\ncurrent-context: capstan\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(ca_pem),
        b64(cert),
        b64(key)
    )
}

/// Makes a self-signed CA (10 years) at `dir/cert` + `dir/key` unless both exist; returns the
/// certificate and key.
fn ensure_ca(dir: &Path, cert: &str, key: &str, cn: &str) -> Result<(String, KeyPair), PkiError> {
    let (cert_path, key_path) = (dir.join(cert), dir.join(key));
    if !(cert_path.is_file() && key_path.is_file()) {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params, 3650);
        let k = KeyPair::generate()?;
        let c = params.self_signed(&k)?;
        write_private(&key_path, &k.serialize_pem())?;
        write(&cert_path, &c.pem())?;
    }
    let key_pem = read(&key_path)?;
    let k = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Parse {
        path: key_path,
        message: e.to_string(),
    })?;
    Ok((read(&cert_path)?, k))
}

fn issuer(path: &Path, pem: &str, key: KeyPair) -> Result<Issuer<'static, KeyPair>, PkiError> {
    Issuer::from_ca_cert_pem(pem, key).map_err(|e| PkiError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Valid from a day ago (clock skew) for `days`.
fn set_validity(params: &mut CertificateParams, days: u64) {
    use chrono::Datelike;
    let from = chrono::Utc::now() - chrono::Duration::days(1);
    params.not_before = rcgen::date_time_ymd(from.year(), from.month() as u8, from.day() as u8);
    params.not_after = params.not_before + std::time::Duration::from_secs(days * 86_400);
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| PkiError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Writes a file only its owner may read (keys, kubeconfigs with keys).
fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|_| std::fs::rename(&tmp, path));
    res.map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn made_once_then_reused_and_client_identities_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ips = [IpAddr::from([10, 0, 0, 5])];
        let a = Pki::load_or_create(dir.path(), &PkiFiles::default(), &ips, &[]).unwrap();
        let b = Pki::load_or_create(dir.path(), &PkiFiles::default(), &ips, &[]).unwrap();
        assert_eq!(a.ca_pem(), b.ca_pem(), "the CA is kept across starts");
        assert_eq!(a.sa_signing_key_pem, b.sa_signing_key_pem);
        let (cert, _) = a.issue_client("jane", &["dev", "ops"]).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let user = crate::auth::authn::user_from_certificate(der.as_ref()).unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, vec!["dev", "ops"]);
        // The serving certificate names the address, loopback and the Service names.
        let der = rustls::pki_types::CertificateDer::from_pem_slice(a.serving_cert_pem.as_bytes())
            .unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let san = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value);
        for want in [
            "[10, 0, 0, 5]",
            "[127, 0, 0, 1]",
            "kubernetes.default.svc.cluster.local",
        ] {
            assert!(san.contains(want), "{want} missing from {san}");
        }
    }
}
