//! The content store: blobs (manifests, configs, layers) addressed by their digest, as
//! containerd's content store keeps them (`blobs/sha256/<hex>`). A blob is streamed into an
//! ingest file while it is hashed, checked against the expected digest and size, synced, and only
//! then renamed into place, so a stored blob is always complete and verified; a mismatch leaves
//! nothing behind. Writers of the same digest race harmlessly: the rename is atomic and the
//! content is identical.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
    #[error("digest mismatch for {expected}: the content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A validated `sha256:<hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, ContentError> {
        match s.strip_prefix("sha256:") {
            Some(hex)
                if hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                Ok(Digest(s.to_string()))
            }
            _ => Err(ContentError::BadDigest(s.to_string())),
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Digest(format!("sha256:{}", hex(&Sha256::digest(data))))
    }

    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Blobs under one root directory.
pub struct ContentStore {
    root: PathBuf,
    ingest_seq: AtomicU64,
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        for d in ["blobs/sha256", "ingest"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        // Ingest files left by a crash are incomplete by definition. Another process may share
        // this store (an image import while the runtime runs), so only files whose writer (the
        // pid in the name) is gone are removed.
        let ingest = root.join("ingest");
        for e in std::fs::read_dir(&ingest)
            .map_err(io_err(&ingest))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let writer = name.split('-').nth(1).and_then(|p| p.parse::<i32>().ok());
            if writer.is_none_or(|pid| !pid_alive(pid)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(ContentStore {
            root: root.to_path_buf(),
            ingest_seq: AtomicU64::new(0),
        })
    }

    /// Where a blob lives.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, ContentError> {
        std::fs::metadata(self.path(digest))
            .map(|m| m.len())
            .map_err(|_| ContentError::NotFound(digest.to_string()))
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<std::fs::File, ContentError> {
        std::fs::File::open(self.path(digest))
            .map_err(|_| ContentError::NotFound(digest.to_string()))
    }

    /// Streams `data` in as the blob `expected` (of `size` bytes, if known), verifying both.
    /// An already stored blob is not written again.
    pub fn write(
        &self,
        expected: &Digest,
        size: Option<u64>,
        mut data: impl Read,
    ) -> Result<PathBuf, ContentError> {
        let dest = self.path(expected);
        if dest.is_file() {
            return Ok(dest);
        }
        let mut ingest = self.ingest(expected, size)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = data.read(&mut buf).map_err(io_err(&ingest.tmp))?;
            if n == 0 {
                break;
            }
            ingest.write(&buf[..n])?;
        }
        ingest.commit()
    }

    /// Starts writing the blob `expected` chunk by chunk (for callers that receive it as an
    /// async stream). Dropping the [`Ingest`] without committing removes what was written.
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest, ContentError> {
        let seq = self.ingest_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("ingest").join(format!(
            "{}-{}-{seq}",
            expected.hex(),
            std::process::id()
        ));
        let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        Ok(Ingest {
            file: Some(file),
            hasher: Sha256::new(),
            total: 0,
            tmp,
            dest: self.path(expected),
            expected: expected.clone(),
            size,
        })
    }

    /// Removes a blob (absent is fine).
    pub fn delete(&self, digest: &Digest) -> Result<(), ContentError> {
        let p = self.path(digest);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored digest.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out: Vec<Digest> = std::fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .flatten()
            .filter_map(|e| {
                Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())).ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// A blob being written: hashed as it arrives, renamed into place by [`Ingest::commit`] only
/// when digest and size match.
pub struct Ingest {
    file: Option<std::fs::File>,
    hasher: Sha256,
    total: u64,
    tmp: PathBuf,
    dest: PathBuf,
    expected: Digest,
    size: Option<u64>,
}

impl Ingest {
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        self.hasher.update(chunk);
        self.total += chunk.len() as u64;
        if let Some(size) = self.size {
            if self.total > size {
                return Err(ContentError::SizeMismatch {
                    digest: self.expected.to_string(),
                    expected: size,
                    actual: self.total,
                });
            }
        }
        match &mut self.file {
            Some(f) => f.write_all(chunk).map_err(io_err(&self.tmp)),
            None => Ok(()),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.total
    }

    /// Verifies size and digest, syncs and renames the blob into place.
    pub fn commit(mut self) -> Result<PathBuf, ContentError> {
        if let Some(size) = self.size {
            if size != self.total {
                return Err(ContentError::SizeMismatch {
                    digest: self.expected.to_string(),
                    expected: size,
                    actual: self.total,
                });
            }
        }
        let actual = format!("sha256:{}", hex(&self.hasher.clone().finalize()));
        if actual != self.expected.as_str() {
            return Err(ContentError::DigestMismatch {
                expected: self.expected.to_string(),
                actual,
            });
        }
        let f = self.file.take().expect("ingest file is open until commit");
        f.sync_all().map_err(io_err(&self.tmp))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.dest).map_err(io_err(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Committed: the temporary name is gone already; otherwise it is incomplete.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Whether a process with this pid exists (signal 0 probes without sending anything). Our own
/// pid counts as alive: another store handle in this process may be writing.
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_stored_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let data = b"layer bytes".to_vec();
        let d = Digest::of(&data);
        assert_eq!(
            d.as_str(),
            "sha256:".to_string() + &hex(&Sha256::digest(&data))
        );
        let p = cs
            .write(&d, Some(data.len() as u64), data.as_slice())
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        assert_eq!(cs.size(&d).unwrap(), data.len() as u64);
        assert_eq!(cs.list().unwrap(), std::slice::from_ref(&d));
        // Written once: a second write with wrong content is not even read.
        cs.write(&d, None, &b"other"[..]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), data);
        cs.delete(&d).unwrap();
        assert!(!cs.exists(&d));
        assert!(matches!(cs.open_blob(&d), Err(ContentError::NotFound(_))));
    }

    #[test]
    fn mismatches_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = Digest::of(b"expected");
        assert!(matches!(
            cs.write(&d, None, &b"tampered"[..]),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(matches!(
            cs.write(&d, Some(3), &b"expected"[..]),
            Err(ContentError::SizeMismatch { .. })
        ));
        assert!(!cs.exists(&d));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
        assert!(matches!(
            Digest::parse("sha256:xyz"),
            Err(ContentError::BadDigest(_))
        ));
        assert!(Digest::parse("md5:abc").is_err());
    }

    #[test]
    fn concurrent_writers_of_one_blob_agree() {
        let dir = tempfile::tempdir().unwrap();
        let cs = std::sync::Arc::new(ContentStore::open(dir.path()).unwrap());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cs, d, data) = (cs.clone(), d.clone(), data.clone());
                std::thread::spawn(move || {
                    cs.write(&d, Some(data.len() as u64), data.as_slice())
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(std::fs::read(cs.path(&d)).unwrap(), data);
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
