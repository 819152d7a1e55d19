//! A pod's network, IPC and UTS namespaces, created and pinned by bind mounts (no pause process).
//!
//! Upstream runtimes keep a pod's shared namespaces alive with a pause container; containerd
//! additionally pins the network namespace on a file (`/var/run/netns/cni-…`) so CNI can be
//! called before any container exists. Capstan drops the pause container altogether: every shared
//! namespace is pinned the way containerd pins the netns. A short-lived dedicated thread
//! `unshare(2)`s the namespaces (network, IPC and UTS namespaces are per-thread, so this is safe in
//! the multi-threaded runtime and never touches the other threads), sets the pod's hostname in the
//! new UTS namespace, and bind-mounts `/proc/thread-self/ns/<kind>` onto `<pin_dir>/<kind>`; then
//! the thread exits and the pins alone keep the namespaces alive. Containers join them by path.
//!
//! `lo` is left down here, as containerd does: the CNI layer attaches the `loopback` plugin
//! (containerd's `cni-loopback` network) before the pod network, see [`crate::cni`].
//!
//! `pin_dir` is bind-mounted onto itself and made a shared mount with its own peer group, as
//! `ip netns add` does with `/run/netns`: the pins then show up in, and — more importantly — are
//! unmounted from, mount namespaces that were copied from ours while a pin existed, so a namespace
//! never outlives `remove()` because some other mount namespace still holds a copy of its pin.
//!
//! Everything is reconstructible from `pin_dir` alone ([`PodNamespaces::open`]), and
//! [`PodNamespaces::remove`] is idempotent and works after a partial failure, so Stop/Remove
//! PodSandbox can always finish the job after a crash or a restart of the runtime.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The pin file names under `pin_dir`, one per namespace kind.
pub const NET_PIN: &str = "net";
/// See [`NET_PIN`].
pub const IPC_PIN: &str = "ipc";
/// See [`NET_PIN`].
pub const UTS_PIN: &str = "uts";

/// Which namespaces a pod gets of its own (`false`: the pod shares the host's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceRequest {
    /// A new network namespace (false for `hostNetwork: true`).
    pub net: bool,
    /// A new IPC namespace (false for `hostIPC: true`).
    pub ipc: bool,
    /// A new UTS namespace (false with host networking: the pod sees the node's hostname).
    pub uts: bool,
    /// The hostname set inside the new UTS namespace; ignored when `uts` is false.
    pub hostname: Option<String>,
}

/// A pod's pinned namespaces. `None` means the host's namespace of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNamespaces {
    pin_dir: PathBuf,
    net: Option<PathBuf>,
    ipc: Option<PathBuf>,
    uts: Option<PathBuf>,
}

impl PodNamespaces {
    /// Creates the requested namespaces and pins them under `pin_dir` (created if missing).
    /// On any failure everything done so far is undone before the error is returned.
    pub fn create(pin_dir: &Path, req: &NamespaceRequest) -> io::Result<PodNamespaces> {
        fs::create_dir_all(pin_dir)?;
        let pin_dir = fs::canonicalize(pin_dir)?;
        let mut flags = CloneFlags::empty();
        for (wanted, flag) in [
            (req.net, CloneFlags::CLONE_NEWNET),
            (req.ipc, CloneFlags::CLONE_NEWIPC),
            (req.uts, CloneFlags::CLONE_NEWUTS),
        ] {
            if wanted {
                flags |= flag;
            }
        }
        let result = make_shared_dir(&pin_dir).and_then(|()| {
            let kinds: Vec<&'static str> =
                [(req.net, NET_PIN), (req.ipc, IPC_PIN), (req.uts, UTS_PIN)]
                    .into_iter()
                    .filter_map(|(wanted, kind)| wanted.then_some(kind))
                    .collect();
            if kinds.is_empty() {
                return Ok(());
            }
            // Create the (empty) pin files before the thread leaves our namespaces, so a failure
            // there cannot leave a half-made file.
            for kind in &kinds {
                fs::File::create(pin_dir.join(kind))?;
            }
            let hostname = if req.uts { req.hostname.clone() } else { None };
            let dir = pin_dir.clone();
            std::thread::Builder::new()
                .name("pod-ns".into())
                .spawn(move || pin_on_this_thread(&dir, flags, &kinds, hostname.as_deref()))?
                .join()
                .map_err(|_| io::Error::other("namespace thread panicked"))?
        });
        let ns = PodNamespaces::open(&pin_dir)?;
        match result {
            Ok(()) => Ok(ns),
            Err(e) => {
                if let Err(cleanup) = ns.remove() {
                    tracing::warn!(pin_dir = %pin_dir.display(), error = %cleanup,
                        "cleaning up after failed namespace creation");
                }
                Err(e)
            }
        }
    }

    /// Reconstructs the handle from what is pinned under `pin_dir` (e.g. after a restart). A
    /// missing directory gives a handle with only host namespaces, which `remove()` accepts.
    pub fn open(pin_dir: &Path) -> io::Result<PodNamespaces> {
        let pin_dir = fs::canonicalize(pin_dir).unwrap_or_else(|_| pin_dir.to_path_buf());
        let pin = |kind: &str| {
            let path = pin_dir.join(kind);
            path.exists().then_some(path)
        };
        Ok(PodNamespaces {
            net: pin(NET_PIN),
            ipc: pin(IPC_PIN),
            uts: pin(UTS_PIN),
            pin_dir,
        })
    }

    /// The pinned (network, IPC, UTS) namespace paths; `None` for a host namespace.
    pub fn paths(&self) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        (self.net.clone(), self.ipc.clone(), self.uts.clone())
    }

    /// The pinned network namespace, the `CNI_NETNS` for the pod (`None`: host network).
    pub fn net_path(&self) -> Option<&Path> {
        self.net.as_deref()
    }

    /// The directory the pins live in.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Unmounts and unlinks every pin, then the shared self-bind of `pin_dir` and the directory
    /// itself if it is empty. Idempotent: anything already gone is skipped.
    pub fn remove(&self) -> io::Result<()> {
        let mut first_err = None;
        for kind in [NET_PIN, IPC_PIN, UTS_PIN] {
            let path = self.pin_dir.join(kind);
            if let Err(e) = unmount_all(&path).and_then(|()| remove_file_if_exists(&path)) {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = unmount_all(&self.pin_dir) {
            first_err.get_or_insert(e);
        }
        match fs::remove_dir(&self.pin_dir) {
            Ok(()) => {}
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(nix::libc::ENOTEMPTY) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// Runs on the dedicated, throw-away thread: leave our namespaces, set the hostname, pin.
fn pin_on_this_thread(
    pin_dir: &Path,
    flags: CloneFlags,
    kinds: &[&str],
    hostname: Option<&str>,
) -> io::Result<()> {
    unshare(flags).map_err(|e| io::Error::other(format!("unshare({flags:?}): {e}")))?;
    if let Some(name) = hostname {
        nix::unistd::sethostname(name)
            .map_err(|e| io::Error::other(format!("sethostname {name:?}: {e}")))?;
    }
    for kind in kinds {
        let source = PathBuf::from(format!("/proc/thread-self/ns/{kind}"));
        let target = pin_dir.join(kind);
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::other(format!(
                "bind-mount {} on {}: {e}",
                source.display(),
                target.display()
            ))
        })?;
    }
    Ok(())
}

/// Binds `dir` onto itself (unless it is a mount point already) and gives it its own shared peer
/// group, like `ip netns add` does for `/run/netns`.
fn make_shared_dir(dir: &Path) -> io::Result<()> {
    if !mount_points().iter().any(|m| m == dir) {
        mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
            io::Error::other(format!("bind-mount {} on itself: {e}", dir.display()))
        })?;
    }
    for flag in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
        mount(None::<&str>, dir, None::<&str>, flag, None::<&str>)
            .map_err(|e| io::Error::other(format!("make {} {flag:?}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Unmounts everything stacked on `path` (a pin may have been mounted twice after a crash).
fn unmount_all(path: &Path) -> io::Result<()> {
    for _ in 0..16 {
        if !mount_points().iter().any(|m| m == path) {
            return Ok(());
        }
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(io::Error::other(format!("unmount {}: {e}", path.display())));
            }
        }
    }
    Err(io::Error::other(format!(
        "{} stays mounted",
        path.display()
    )))
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Mount points of our mount namespace, from `/proc/self/mountinfo`.
pub(crate) fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| parse_mount_points(&s))
        .unwrap_or_default()
}

/// The fifth field of every mountinfo line, with the kernel's octal escapes (`\040`) undone.
pub(crate) fn parse_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect()
}

/// Undoes mountinfo's `\ooo` escaping of space, tab, newline and backslash.
pub(crate) fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let oct = std::str::from_utf8(oct).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let info = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        assert_eq!(
            parse_mount_points(info),
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/proc")]
        );
        assert_eq!(unescape_octal("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn open_of_a_missing_dir_is_all_host_and_removable() {
        let tmp = tempfile::tempdir().unwrap();
        let ns = PodNamespaces::open(&tmp.path().join("gone")).unwrap();
        assert_eq!(ns.paths(), (None, None, None));
        ns.remove().unwrap();
    }
}
