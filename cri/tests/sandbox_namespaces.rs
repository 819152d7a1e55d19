//! Real-kernel tests of pinned pod namespaces (needs root: unshare and bind mounts).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cri::namespaces::{NamespaceRequest, PodNamespaces};

/// Removes the pins even when an assertion fails.
struct Guard(PathBuf);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(ns) = PodNamespaces::open(&self.0) {
            let _ = ns.remove();
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| Path::new(m).starts_with(dir))
        })
        .map(str::to_string)
        .collect()
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (unshare, bind mounts)");
    false
}

/// Reads the hostname as seen from inside the UTS namespace pinned at `pin`.
fn hostname_in(pin: &Path) -> String {
    let pin = pin.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&pin).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWUTS).unwrap();
        nix::unistd::gethostname().unwrap().into_string().unwrap()
    })
    .join()
    .unwrap()
}

#[test]
fn create_pins_new_namespaces_and_remove_leaves_no_mounts() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pin_dir = tmp.path().join("sandbox-a/ns");
    let _guard = Guard(pin_dir.clone());
    let ns = PodNamespaces::create(
        &pin_dir,
        &NamespaceRequest {
            net: true,
            ipc: true,
            uts: true,
            hostname: Some("pod-a".into()),
        },
    )
    .expect("create namespaces");
    let (net, ipc, uts) = ns.paths();
    let (net, ipc, uts) = (net.unwrap(), ipc.unwrap(), uts.unwrap());

    for (pin, kind) in [(&net, "net"), (&ipc, "ipc"), (&uts, "uts")] {
        let host = std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .unwrap()
            .ino();
        let pinned = std::fs::metadata(pin).unwrap().ino();
        assert_ne!(
            host, pinned,
            "{kind}: the pinned namespace must differ from the host's"
        );
    }
    assert_eq!(hostname_in(&uts), "pod-a");
    assert_ne!(
        nix::unistd::gethostname().unwrap(),
        "pod-a",
        "host hostname must be untouched"
    );
    assert!(!mounts_under(&pin_dir).is_empty());

    // A restarted runtime finds the same pins from the directory alone.
    let reopened = PodNamespaces::open(&pin_dir).unwrap();
    assert_eq!(reopened.paths(), ns.paths());
    reopened.remove().expect("remove");
    assert_eq!(
        mounts_under(&pin_dir),
        Vec::<String>::new(),
        "mounts left after remove"
    );
    assert!(!pin_dir.exists(), "pin dir left after remove");
    // Idempotent.
    ns.remove().expect("second remove");
}

#[test]
fn host_namespaces_are_not_pinned() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pin_dir = tmp.path().join("ns");
    let _guard = Guard(pin_dir.clone());
    let ns = PodNamespaces::create(
        &pin_dir,
        &NamespaceRequest {
            net: false,
            ipc: true,
            uts: false,
            hostname: Some("ignored".into()),
        },
    )
    .unwrap();
    let (net, ipc, uts) = ns.paths();
    assert!(
        net.is_none() && uts.is_none() && ipc.is_some(),
        "{:?}",
        ns.paths()
    );
    assert_ne!(nix::unistd::gethostname().unwrap(), "ignored");
    ns.remove().unwrap();
    assert!(mounts_under(&pin_dir).is_empty());
}

#[test]
fn failed_create_leaves_nothing_behind() {
    if !root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pin_dir = tmp.path().join("ns");
    let _guard = Guard(pin_dir.clone());
    // An invalid hostname (longer than 64 bytes) fails after unshare, before any pin.
    let err = PodNamespaces::create(
        &pin_dir,
        &NamespaceRequest {
            net: true,
            ipc: true,
            uts: true,
            hostname: Some("x".repeat(100)),
        },
    )
    .expect_err("an over-long hostname must fail");
    assert!(err.to_string().contains("sethostname"), "{err}");
    assert!(
        mounts_under(&pin_dir).is_empty(),
        "{:?}",
        mounts_under(&pin_dir)
    );
    assert!(!pin_dir.exists());
}
