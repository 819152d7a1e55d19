//! The certificate file store (upstream's client-go `certificate.FileStore`): a pair named
//! `<prefix>` lives in `<dir>/<prefix>-<YYYY-MM-DD-HH-MM-SS>.pem` (certificate then key), and
//! `<dir>/<prefix>-current.pem` is a symlink to the newest, replaced atomically (a new symlink
//! renamed over the old one) so readers never see a half-written pair.

use std::path::{Path, PathBuf};

use super::{CertificateError, KeyedCert};

/// Upstream's pair names.
pub const CLIENT_PAIR: &str = "kubelet-client";
pub const SERVER_PAIR: &str = "kubelet-server";

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    prefix: String,
}

impl FileStore {
    pub fn new(dir: &Path, prefix: &str) -> FileStore {
        FileStore {
            dir: dir.to_path_buf(),
            prefix: prefix.into(),
        }
    }

    /// `<dir>/<prefix>-current.pem`.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(format!("{}-current.pem", self.prefix))
    }

    /// The current pair, if there is one that parses.
    pub fn current(&self) -> Option<KeyedCert> {
        let path = self.current_path();
        let pem = std::fs::read_to_string(&path).ok()?;
        match KeyedCert::from_pem(&pem, &path.display().to_string()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// Writes a new pair and points the `current` symlink at it.
    pub fn update(&self, cert_pem: &str, key_pem: &str) -> Result<KeyedCert, CertificateError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertificateError::Write { path, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(write_err(&self.dir))?;
        let pem = format!("{}\n{}", cert_pem.trim_end(), key_pem);
        let cert = KeyedCert::from_pem(&pem, "the new certificate")?;
        let stamp = chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S");
        let mut name = format!("{}-{stamp}.pem", self.prefix);
        let mut n = 1;
        while self.dir.join(&name).exists() {
            name = format!("{}-{stamp}-{n}.pem", self.prefix);
            n += 1;
        }
        let dated = self.dir.join(&name);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dated)
                .map_err(write_err(&dated))?;
            f.write_all(pem.as_bytes()).map_err(write_err(&dated))?;
            f.sync_all().map_err(write_err(&dated))?;
        }
        let current = self.current_path();
        let tmp = self.dir.join(format!(".{}-current.pem.tmp", self.prefix));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp).map_err(write_err(&tmp))?;
        std::fs::rename(&tmp, &current).map_err(write_err(&current))?;
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn updates_swap_the_current_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), CLIENT_PAIR);
        assert!(store.current().is_none());
        let (c1, k1) = pair("one");
        store.update(&c1, &k1).unwrap();
        let first = std::fs::read_link(store.current_path()).unwrap();
        assert!(first.to_str().unwrap().starts_with("kubelet-client-2"));
        let (c2, k2) = pair("two");
        store.update(&c2, &k2).unwrap();
        let second = std::fs::read_link(store.current_path()).unwrap();
        assert_ne!(first, second);
        assert!(store.current().unwrap().pem.contains(c2.trim_end()));
        // The old file is kept, as upstream.
        assert!(dir.path().join(first).exists());
    }
}
