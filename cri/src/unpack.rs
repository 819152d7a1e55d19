//! Applying an OCI image layer (a tar stream, plain, gzip or zstd) into an empty snapshot
//! directory for overlayfs, as containerd's overlay snapshotter does: OCI whiteouts become
//! overlayfs whiteouts (`.wh.NAME` → a 0:0 character device `NAME`; `.wh..wh..opq` → the
//! `trusted.overlay.opaque=y` xattr on its directory), and regular files, directories, symlinks,
//! hardlinks, devices and FIFOs keep their mode, ownership, times and xattrs.
//!
//! An entry that would land outside the snapshot — an absolute path, a `..` that climbs out, a
//! hardlink to a target outside, or a path that goes through a symlink — fails the whole layer,
//! and nothing is left behind: the layer is unpacked into a temporary sibling directory that is
//! renamed into place only when every entry succeeded.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Prefix of an OCI whiteout file.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the OCI opaque-directory marker.
pub const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a lower directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} would land outside the snapshot: {why}")]
    Escape { entry: String, why: &'static str },
    #[error("layer entry {entry:?}: {source}")]
    Entry {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the layer: {0}")]
    Read(#[source] std::io::Error),
    #[error("{path}: {source}")]
    Dest {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a layer blob is compressed, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn detect(head: &[u8]) -> Self {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// What a layer held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub whiteouts: u64,
    pub bytes: u64,
}

/// Unpacks the layer read from `blob` into `dest`, which must not exist yet.
pub fn apply_layer(blob: impl Read, dest: &Path) -> Result<LayerStats, UnpackError> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.unpacking-{}", std::process::id()));
    let dest_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Dest { path, source }
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(dest_err(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(dest_err(&tmp))?;
    match unpack_into(blob, &tmp) {
        Ok(stats) => {
            std::fs::rename(&tmp, dest).map_err(dest_err(dest))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn unpack_into(blob: impl Read, root: &Path) -> Result<LayerStats, UnpackError> {
    let mut buffered = BufReader::new(blob);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?.to_vec();
    let reader: Box<dyn Read> = match Compression::detect(&head) {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(buffered)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
        }
        Compression::None => Box::new(buffered),
    };
    let mut archive = tar::Archive::new(reader);
    let mut stats = LayerStats::default();
    // Directory times are set last: creating entries inside a directory changes its mtime.
    let mut dir_times: Vec<(PathBuf, filetime::FileTime)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let rel = safe_relative(&raw).map_err(|why| UnpackError::Escape {
            entry: shown.clone(),
            why,
        })?;
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        check_no_symlink_parents(root, &rel).map_err(|why| UnpackError::Escape {
            entry: shown.clone(),
            why,
        })?;
        let target = root.join(&rel);
        let io = |source| UnpackError::Entry {
            entry: shown.clone(),
            source,
        };
        stats.entries += 1;
        let file_name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = target.parent().unwrap_or(root).to_path_buf();
        if file_name == WHITEOUT_OPAQUE {
            std::fs::create_dir_all(&parent).map_err(io)?;
            xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(io)?;
            stats.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            std::fs::create_dir_all(&parent).map_err(io)?;
            let path = parent.join(hidden);
            remove_existing(&path).map_err(io)?;
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| io(e.into()))?;
            stats.whiteouts += 1;
            continue;
        }
        std::fs::create_dir_all(&parent).map_err(io)?;
        let header = entry.header().clone();
        let mode = header.mode().map_err(io)? & 0o7777;
        let kind = header.entry_type();
        match kind {
            tar::EntryType::Directory => {
                if !target.is_dir() {
                    remove_existing(&target).map_err(io)?;
                    std::fs::create_dir(&target).map_err(io)?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_existing(&target).map_err(io)?;
                let mut f = std::fs::File::create(&target).map_err(io)?;
                stats.bytes += std::io::copy(&mut entry, &mut f).map_err(io)?;
            }
            tar::EntryType::Symlink => {
                let link = header
                    .link_name()
                    .map_err(io)?
                    .ok_or_else(|| io(std::io::Error::other("symlink without a target")))?;
                remove_existing(&target).map_err(io)?;
                std::os::unix::fs::symlink(&link, &target).map_err(io)?;
            }
            tar::EntryType::Link => {
                let link = header
                    .link_name()
                    .map_err(io)?
                    .ok_or_else(|| io(std::io::Error::other("hardlink without a target")))?;
                let link_rel = safe_relative(&link).map_err(|why| UnpackError::Escape {
                    entry: shown.clone(),
                    why,
                })?;
                check_no_symlink_parents(root, &link_rel).map_err(|why| UnpackError::Escape {
                    entry: shown.clone(),
                    why,
                })?;
                let source = root.join(&link_rel);
                let meta = std::fs::symlink_metadata(&source).map_err(io)?;
                if meta.file_type().is_symlink() || meta.is_dir() {
                    return Err(UnpackError::Escape {
                        entry: shown,
                        why: "hardlink to a symlink or directory",
                    });
                }
                remove_existing(&target).map_err(io)?;
                std::fs::hard_link(&source, &target).map_err(io)?;
                continue; // shares the source's inode: metadata is already set
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let major = header.device_major().map_err(io)?.unwrap_or(0);
                let minor = header.device_minor().map_err(io)?.unwrap_or(0);
                let flag = match kind {
                    tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                remove_existing(&target).map_err(io)?;
                nix::sys::stat::mknod(
                    &target,
                    flag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| io(e.into()))?;
            }
            // PAX and GNU long-name headers are consumed by the tar reader; skip anything else.
            _ => continue,
        }
        // xattrs from PAX records (SCHILY.xattr.*).
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let (Ok(key), value) = (ext.key(), ext.value_bytes()) {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattr::set(&target, name, value).map_err(io)?;
                    }
                }
            }
        }
        let uid = header.uid().map_err(io)? as u32;
        let gid = header.gid().map_err(io)? as u32;
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).map_err(io)?;
        if kind != tar::EntryType::Symlink {
            // After chown, which clears setuid/setgid bits.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        let mtime = filetime::FileTime::from_unix_time(header.mtime().map_err(io)? as i64, 0);
        if kind == tar::EntryType::Directory {
            dir_times.push((target, mtime));
        } else {
            filetime::set_symlink_file_times(&target, mtime, mtime).map_err(io)?;
        }
    }
    for (dir, t) in dir_times.into_iter().rev() {
        filetime::set_file_times(&dir, t, t)
            .map_err(|source| UnpackError::Dest { path: dir, source })?;
    }
    Ok(stats)
}

/// The entry's path relative to the snapshot root; refuses absolute paths and `..` that climbs
/// above the root.
fn safe_relative(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("the path climbs above the snapshot root");
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

/// Refuses a path whose existing parent directories include a symlink: writing through it could
/// reach outside the snapshot.
fn check_no_symlink_parents(root: &Path, rel: &Path) -> Result<(), &'static str> {
    let mut cur = root.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in parents.iter().take(parents.len().saturating_sub(1)) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => return Err("a parent directory is a symlink"),
            Ok(_) => {}
            Err(_) => return Ok(()), // does not exist yet: created as a directory
        }
    }
    Ok(())
}

/// Removes what is at `path` (a later entry replaces an earlier one), but never a directory
/// that the new entry would merge into (callers handle directories).
fn remove_existing(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
