//! TLS bootstrap (upstream's pkg/kubelet/certificate/bootstrap `LoadClientCert`): before the
//! kubelet builds its API client, make sure `--kubeconfig` holds a client certificate that is
//! valid now. If it does, nothing happens. Otherwise the current pair in the cert dir is used when
//! it is valid; else the kubelet connects with `--bootstrap-kubeconfig` (a bootstrap token, as
//! `system:bootstrap:<id>`), asks for a `kubernetes.io/kube-apiserver-client-kubelet`
//! certificate for `CN=system:node:<name>, O=system:nodes` with usages digital signature and
//! client auth, stores it as `kubelet-client-current.pem`, and writes `--kubeconfig` with the
//! bootstrap kubeconfig's server and CA and that file as client certificate and key (upstream's
//! `writeKubeconfigFromBootstrapping`: `default-cluster`, `default-auth`, `default-context`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;

use super::csr::{request_certificate, CertRequest};
use super::store::{FileStore, CLIENT_PAIR};
use super::*;

/// How long bootstrap waits for the certificate (upstream waits up to an hour).
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(3600);

/// The parts of a kubeconfig bootstrap reads.
#[derive(Debug, Clone, Default)]
pub struct KubeconfigParts {
    pub server: String,
    /// PEM of the cluster CA (empty when the kubeconfig has none).
    pub ca_pem: Vec<u8>,
    /// PEM of the client certificate (and key, when in the same file), if any.
    pub client_cert_pem: Option<String>,
}

/// Reads the current context's cluster and user of a kubeconfig.
pub fn read_kubeconfig(path: &Path) -> Result<KubeconfigParts, CertificateError> {
    let what = path.display().to_string();
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| invalid(&what, e))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| Some(&c.name) == kc.current_context.as_ref())
        .or_else(|| kc.contexts.first())
        .and_then(|c| c.context.clone())
        .ok_or_else(|| invalid(&what, "no context"))?;
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == ctx.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| invalid(&what, format!("no cluster {:?}", ctx.cluster)))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => b64.decode(d.trim()).map_err(|e| invalid(&what, e))?,
        (None, Some(f)) => std::fs::read(f).map_err(|source| CertificateError::Read {
            path: f.into(),
            source,
        })?,
        (None, None) => Vec::new(),
    };
    let user = ctx.user.as_ref().and_then(|u| {
        kc.auth_infos
            .iter()
            .find(|a| &a.name == u)
            .and_then(|a| a.auth_info.clone())
    });
    let client_cert_pem = match user {
        Some(u) => match (&u.client_certificate_data, &u.client_certificate) {
            (Some(d), _) => b64
                .decode(d.trim())
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            (None, Some(f)) => std::fs::read_to_string(f).ok().map(|mut cert| {
                // The key travels with it when it is a separate file (it is the same file for
                // kubelet-client-current.pem).
                if let Some(k) = u.client_key.as_ref().filter(|k| *k != f) {
                    if let Ok(key) = std::fs::read_to_string(k) {
                        cert.push('\n');
                        cert.push_str(&key);
                    }
                }
                cert
            }),
            _ => None,
        },
        None => None,
    };
    Ok(KubeconfigParts {
        server: cluster.server.unwrap_or_default(),
        ca_pem,
        client_cert_pem,
    })
}

/// Whether `kubeconfig` exists and holds a client certificate valid now
/// (`isClientConfigStillValid`).
pub fn kubeconfig_still_valid(kubeconfig: &Path, now: SystemTime) -> bool {
    if !kubeconfig.exists() {
        return false;
    }
    let Ok(parts) = read_kubeconfig(kubeconfig) else {
        return false;
    };
    let Some(pem) = parts.client_cert_pem else {
        return false;
    };
    // Only the certificate's validity matters here; a missing key makes from_pem fail, so
    // parse the certificate alone.
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    let Ok(x509) = block.parse_x509() else {
        return false;
    };
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let v = x509.validity();
    let ok = v.not_before.timestamp() <= secs && secs < v.not_after.timestamp();
    if !ok {
        tracing::info!(
            "the client certificate in {} is expired or not yet valid",
            kubeconfig.display()
        );
    }
    ok
}

/// The kubeconfig text for `server`, the CA and the client pair file.
pub fn kubeconfig_text(server: &str, ca_pem: &[u8], pair: &Path) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let ca = if ca_pem.is_empty() {
        String::new()
    } else {
        format!("    certificate-authority-data: {}\n", b64.encode(ca_pem))
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n{ca}    server: {server}\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\npreferences: {{}}\nusers:\n- name: default-auth\n  user:\n    client-certificate: {p}\n    client-key: {p}\n",
        p = pair.display()
    )
}

fn write_kubeconfig(path: &Path, text: &str) -> Result<(), CertificateError> {
    let err = |source| CertificateError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The kubelet client request for `node_name` (upstream's values).
pub fn client_request(node_name: &str) -> CertRequest {
    CertRequest {
        signer: CLIENT_KUBELET_SIGNER.into(),
        common_name: format!("{NODE_USER_PREFIX}{node_name}"),
        organizations: vec![NODES_GROUP.into()],
        usages: vec!["digital signature".into(), "client auth".into()],
        ..Default::default()
    }
}

/// `LoadClientCert`: ensures `kubeconfig` works, bootstrapping with `bootstrap` if it does not.
pub async fn load_client_cert(
    kubeconfig: &Path,
    bootstrap: &Path,
    cert_dir: &Path,
    node_name: &str,
) -> Result<(), CertificateError> {
    if kubeconfig_still_valid(kubeconfig, SystemTime::now()) {
        tracing::info!(
            "kubeconfig {} is valid, skipping bootstrap",
            kubeconfig.display()
        );
        return Ok(());
    }
    let boot = read_kubeconfig(bootstrap)?;
    let store = FileStore::new(cert_dir, CLIENT_PAIR);
    let pair: PathBuf = store.current_path();
    if store
        .current()
        .is_some_and(|c| c.valid_at(SystemTime::now()))
    {
        tracing::info!(
            "using the client certificate {} for {}",
            pair.display(),
            kubeconfig.display()
        );
        return write_kubeconfig(
            kubeconfig,
            &kubeconfig_text(&boot.server, &boot.ca_pem, &pair),
        );
    }
    tracing::info!(
        "TLS bootstrap: requesting a client certificate with {}",
        bootstrap.display()
    );
    let client = crate::client::build_client(Some(bootstrap)).await?;
    let (cert, key) =
        request_certificate(&client, &client_request(node_name), BOOTSTRAP_TIMEOUT).await?;
    store.update(&cert, &key)?;
    write_kubeconfig(
        kubeconfig,
        &kubeconfig_text(&boot.server, &boot.ca_pem, &pair),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:a");
        let now = chrono::Utc::now();
        let end = now + chrono::Duration::days(days);
        use chrono::Datelike;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_kubeconfig_with_an_expired_certificate_is_not_valid() {
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubelet.kubeconfig");
        assert!(!kubeconfig_still_valid(&kc, SystemTime::now()));
        let store = FileStore::new(dir.path(), CLIENT_PAIR);
        let (c, k) = pair(30);
        store.update(&c, &k).unwrap();
        std::fs::write(
            &kc,
            kubeconfig_text("https://127.0.0.1:6443", b"", &store.current_path()),
        )
        .unwrap();
        assert!(kubeconfig_still_valid(&kc, SystemTime::now()));
        let later = SystemTime::now() + Duration::from_secs(40 * 86400);
        assert!(!kubeconfig_still_valid(&kc, later));
        let parts = read_kubeconfig(&kc).unwrap();
        assert_eq!(parts.server, "https://127.0.0.1:6443");
    }

    #[test]
    fn the_client_request_is_upstreams() {
        let r = client_request("n1");
        assert_eq!(r.common_name, "system:node:n1");
        assert_eq!(r.organizations, ["system:nodes"]);
        assert_eq!(r.usages, ["digital signature", "client auth"]);
        assert_eq!(r.signer, "kubernetes.io/kube-apiserver-client-kubelet");
    }
}
