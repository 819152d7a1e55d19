//! Upstream's atomic writer (`pkg/volume/util/atomic_writer.go`) for configMap, secret,
//! downwardAPI and projected volumes.
//!
//! Layout of a volume directory:
//!
//! ```text
//! <volume>/..2024_05_01_10_00_00.123456789/   the payload, one timestamped directory per version
//! <volume>/..data -> ..2024_05_01_10_00_00.123456789
//! <volume>/key    -> ..data/key               user-visible names go through ..data
//! ```
//!
//! An update writes a new timestamped directory, points a `..data_tmp` symlink at it and renames
//! that over `..data` — one atomic rename, so a reader resolving `<volume>/key` sees either the
//! whole old version or the whole new one — then adds the user-visible links for new top-level
//! names, removes the ones no longer in the payload and deletes the old directory. Nothing is
//! written when the payload equals what is on disk (content and mode), so refreshes are cheap.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The symlink naming the current version.
pub const DATA_DIR_NAME: &str = "..data";
/// The symlink renamed over [`DATA_DIR_NAME`].
pub const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (e.g. 0o644).
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Errors of the writer.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriterError + 'a {
    move |source| WriterError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Upstream `validatePath`: relative, no `..` element, not starting with `..`, bounded length.
pub fn validate_path(p: &str) -> Result<(), WriterError> {
    let bad = |reason| {
        Err(WriterError::InvalidPath {
            path: p.to_string(),
            reason,
        })
    };
    if p.is_empty() {
        return bad("must not be empty");
    }
    if p.len() > 4096 {
        return bad("must be less than or equal to 4096 characters");
    }
    if p.starts_with('/') {
        return bad("must be relative path");
    }
    if p.split('/').any(|s| s == "..") {
        return bad("must not contain '..'");
    }
    if p.starts_with("..") {
        return bad("must not start with '..'");
    }
    if p.split('/').any(|s| s.len() > 255) {
        return bad("each path segment must be less than or equal to 255 characters");
    }
    Ok(())
}

/// The writer for one volume directory.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target: PathBuf,
}

impl AtomicWriter {
    pub fn new(target: impl Into<PathBuf>) -> AtomicWriter {
        AtomicWriter {
            target: target.into(),
        }
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The timestamped directory `..data` points at, if any.
    pub fn current_dir(&self) -> Option<PathBuf> {
        let link = fs::read_link(self.target.join(DATA_DIR_NAME)).ok()?;
        Some(self.target.join(link))
    }

    /// Writes `payload`; returns whether anything changed on disk.
    pub fn write(&self, payload: &Payload) -> Result<bool, WriterError> {
        let mut clean = Payload::new();
        for (p, f) in payload {
            validate_path(p)?;
            let cleaned: PathBuf = Path::new(p)
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            clean.insert(cleaned.to_string_lossy().into_owned(), f.clone());
        }
        fs::create_dir_all(&self.target).map_err(io_err("mkdir", &self.target))?;
        let old_dir = self.current_dir();
        let old_files = match &old_dir {
            Some(d) => walk_files(d).map_err(io_err("walk", d))?,
            None => BTreeSet::new(),
        };
        let to_remove: BTreeSet<String> = old_files
            .iter()
            .filter(|f| !clean.contains_key(*f))
            .cloned()
            .collect();
        let changed = match &old_dir {
            None => true,
            Some(d) => !to_remove.is_empty() || !same_content(d, &clean),
        };
        if changed {
            let new_dir = self.new_timestamped_dir()?;
            write_payload(&new_dir, &clean)?;
            let tmp = self.target.join(NEW_DATA_DIR_NAME);
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &tmp)(e))
                }
                _ => {}
            }
            let name = new_dir.file_name().unwrap();
            symlink(name, &tmp).map_err(io_err("symlink", &tmp))?;
            let data = self.target.join(DATA_DIR_NAME);
            fs::rename(&tmp, &data).map_err(io_err("rename", &data))?;
        }
        // User-visible links for every top-level name (also repairs missing ones).
        let tops: BTreeSet<&str> = clean.keys().map(|p| p.split('/').next().unwrap()).collect();
        for top in &tops {
            let visible = self.target.join(top);
            if fs::symlink_metadata(&visible).is_err() {
                symlink(Path::new(DATA_DIR_NAME).join(top), &visible)
                    .map_err(io_err("symlink", &visible))?;
            }
        }
        // Top-level names that are gone.
        for old in &to_remove {
            let top = old.split('/').next().unwrap();
            if !tops.contains(top) {
                let visible = self.target.join(top);
                match fs::remove_file(&visible) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_err("remove", &visible)(e))
                    }
                    _ => {}
                }
            }
        }
        if changed {
            if let Some(old) = old_dir {
                fs::remove_dir_all(&old).map_err(io_err("remove", &old))?;
            }
        }
        Ok(changed)
    }

    fn new_timestamped_dir(&self) -> Result<PathBuf, WriterError> {
        let prefix = chrono::Utc::now()
            .format("..%Y_%m_%d_%H_%M_%S.")
            .to_string();
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .rand_bytes(9)
            .tempdir_in(&self.target)
            .map_err(io_err("mkdir", &self.target))?
            .keep();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &dir))?;
        Ok(dir)
    }
}

fn write_payload(dir: &Path, payload: &Payload) -> Result<(), WriterError> {
    for (p, f) in payload {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("mkdir", parent))?;
            let mut d = parent;
            while d != dir {
                fs::set_permissions(d, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", d))?;
                d = d.parent().unwrap_or(dir);
            }
        }
        fs::write(&path, &f.data).map_err(io_err("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(f.mode & 0o7777))
            .map_err(io_err("chmod", &path))?;
    }
    Ok(())
}

fn same_content(dir: &Path, payload: &Payload) -> bool {
    payload.iter().all(|(p, f)| {
        let path = dir.join(p);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        meta.is_file()
            && meta.permissions().mode() & 0o7777 == f.mode & 0o7777
            && fs::read(&path).is_ok_and(|d| d == f.data)
    })
}

/// Regular files below `dir`, relative, `/`-separated.
fn walk_files(dir: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(dir) {
                out.insert(rel.to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn timestamped(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR_NAME)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn layout_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path().join("vol"));
        let p = payload(&[
            ("a", "1", 0o644),
            ("dir/b", "2", 0o400),
            ("dir/sub/c", "3", 0o755),
        ]);
        assert!(w.write(&p).unwrap());
        let vol = w.target();
        let data = fs::read_link(vol.join(DATA_DIR_NAME)).unwrap();
        let data = data.to_str().unwrap();
        assert!(data.starts_with("..") && data.len() > 22, "{data}");
        assert_eq!(fs::read_link(vol.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(
            fs::read_link(vol.join("dir")).unwrap(),
            Path::new("..data/dir")
        );
        assert_eq!(fs::read_to_string(vol.join("dir/sub/c")).unwrap(), "3");
        let mode = |p: &str| fs::metadata(vol.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("dir/b"), 0o400);
        assert_eq!(mode("dir/sub/c"), 0o755);
        assert_eq!(mode(data), 0o755);
        assert_eq!(timestamped(vol).len(), 1);
        // The same payload again: nothing written.
        assert!(!w.write(&p).unwrap());
        assert_eq!(
            fs::read_link(vol.join(DATA_DIR_NAME)).unwrap(),
            Path::new(data)
        );
        // A mode change alone is a change.
        let p2 = payload(&[
            ("a", "1", 0o600),
            ("dir/b", "2", 0o400),
            ("dir/sub/c", "3", 0o755),
        ]);
        assert!(w.write(&p2).unwrap());
        assert_eq!(mode("a"), 0o600);
    }

    #[test]
    fn update_swaps_data_and_old_readers_stay_consistent() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path());
        w.write(&payload(&[("k1", "old1", 0o644), ("k2", "old2", 0o644)]))
            .unwrap();
        let old_dir = w.current_dir().unwrap();
        // A reader that has resolved ..data (opened the version directory) before the update.
        let reader = fs::File::open(&old_dir).unwrap();
        let reader_k1 = fs::File::open(tmp.path().join("k1")).unwrap();

        assert!(w
            .write(&payload(&[("k1", "new1", 0o644), ("k3", "new3", 0o644)]))
            .unwrap());
        let new_dir = w.current_dir().unwrap();
        assert_ne!(old_dir, new_dir);
        // Old version directory is gone, exactly one remains, no ..data_tmp left over.
        assert!(!old_dir.exists());
        assert_eq!(timestamped(tmp.path()).len(), 1);
        assert!(fs::symlink_metadata(tmp.path().join(NEW_DATA_DIR_NAME)).is_err());
        // New readers see the whole new version.
        assert_eq!(fs::read_to_string(tmp.path().join("k1")).unwrap(), "new1");
        assert_eq!(fs::read_to_string(tmp.path().join("k3")).unwrap(), "new3");
        assert!(
            fs::symlink_metadata(tmp.path().join("k2")).is_err(),
            "k2 removed"
        );
        // The old reader's open file still reads the old content.
        let mut s = String::new();
        std::io::Read::read_to_string(&mut { reader_k1 }, &mut s).unwrap();
        assert_eq!(s, "old1");
        drop(reader);
    }

    #[test]
    fn concurrent_readers_never_see_a_mix() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path());
        let version =
            |n: usize| payload(&[("a", &n.to_string(), 0o644), ("b", &n.to_string(), 0o644)]);
        w.write(&version(0)).unwrap();
        let dir = tmp.path().to_path_buf();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let reader = std::thread::spawn(move || {
            let mut reads = 0;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                // Resolve ..data once, then read both files of that version.
                let Ok(v) = fs::read_link(dir.join(DATA_DIR_NAME)) else {
                    continue;
                };
                let (Ok(a), Ok(b)) = (
                    fs::read_to_string(dir.join(&v).join("a")),
                    fs::read_to_string(dir.join(&v).join("b")),
                ) else {
                    continue; // that version was already removed
                };
                assert_eq!(a, b, "mixed versions");
                reads += 1;
            }
            reads
        });
        for n in 1..200 {
            w.write(&version(n)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn bad_paths_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let w = AtomicWriter::new(tmp.path());
        for bad in ["/abs", "../x", "a/../../x", "..hidden", ""] {
            let err = w.write(&payload(&[(bad, "x", 0o644)])).unwrap_err();
            assert!(
                matches!(err, WriterError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }
}
