//! The one seam where volumes touch the kernel's mount table: tmpfs for memory-backed emptyDir,
//! secret and projected volumes, and unmounting them at teardown. [`HostMounter`] does it for
//! real (nix, no unsafe); [`FakeMounter`] records calls so the plugins are unit-testable without
//! root.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the volume plugins need of the mount table.
pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs at `target` (`size=<bytes>` when given).
    fn mount_tmpfs(&self, target: &Path, size: Option<i64>) -> io::Result<()>;
    /// Unmounts `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// Whether `target` is a mount point.
    fn is_mount_point(&self, target: &Path) -> io::Result<bool>;
}

/// The host's mount table.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostMounter;

impl Mounter for HostMounter {
    fn mount_tmpfs(&self, target: &Path, size: Option<i64>) -> io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let data = size.filter(|s| *s > 0).map(|s| format!("size={s}"));
        mount(
            Some("tmpfs"),
            target,
            Some("tmpfs"),
            MsFlags::empty(),
            data.as_deref(),
        )
        .map_err(io::Error::from)
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        use nix::mount::{umount2, MntFlags};
        match umount2(target, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH).map_err(io::Error::from)
            }
            r => r.map_err(io::Error::from),
        }
    }

    fn is_mount_point(&self, target: &Path) -> io::Result<bool> {
        let target = match std::fs::canonicalize(target) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let info = std::fs::read_to_string("/proc/self/mountinfo")?;
        let found = mount_points(&info).any(|p| p == target);
        Ok(found)
    }
}

/// Mount points listed in mountinfo text (octal escapes undone).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Records mounts instead of making them (unit tests).
#[derive(Debug, Default)]
pub struct FakeMounter {
    /// Current tmpfs mounts and their size option.
    pub mounts: Mutex<BTreeMap<PathBuf, Option<i64>>>,
    /// Every call, in order (`mount <path> size=<n>`, `unmount <path>`).
    pub log: Mutex<Vec<String>>,
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, size: Option<i64>) -> io::Result<()> {
        if !target.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        self.log.lock().unwrap().push(match size {
            Some(s) => format!("mount {} size={s}", target.display()),
            None => format!("mount {}", target.display()),
        });
        self.mounts
            .lock()
            .unwrap()
            .insert(target.to_path_buf(), size);
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.log
            .lock()
            .unwrap()
            .push(format!("unmount {}", target.display()));
        match self.mounts.lock().unwrap().remove(target) {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    fn is_mount_point(&self, target: &Path) -> io::Result<bool> {
        Ok(self.mounts.lock().unwrap().contains_key(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing() {
        let info = "36 25 0:32 / /var/lib/kubelet/pods/x/volumes/a\\040b rw - tmpfs tmpfs rw\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(
            points,
            [PathBuf::from("/var/lib/kubelet/pods/x/volumes/a b")]
        );
    }
}
