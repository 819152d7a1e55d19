//! cgroupfs v1 and v2: pod cgroup parents, the supervisors' own cgroup, stats and live updates.
//!
//! The kubelet hands the runtime a pod's cgroup parent (`LinuxPodSandboxConfig.cgroup_parent`,
//! e.g. `/kubepods/burstable/pod<uid>` with the cgroupfs driver); each container lives at
//! `<parent>/<container-id>`, as with containerd and runc's cgroupfs driver. Without a parent
//! the pod goes under [`PODS_CGROUP`]. The per-pod supervisors live in [`SUPERVISORS_CGROUP`]
//! (under a kubelet's cgroup root when the kubelet runs the runtime), outside every pod's limits. libcontainer (in the supervisor) creates the container cgroups and
//! applies their initial resources; this module is what the runtime itself needs: the pod parents,
//! `ContainerStats` (the counters the kubelet and cAdvisor read, working set computed as they do:
//! usage − inactive_file) and `UpdateContainerResources` (runc's semantics: shares → weight,
//! quota/period, memory with memsw ordering, hugetlb only where the controller exists).
//!
//! One trait ([`CgroupManager`]), two backends ([`v1::V1Manager`], [`v2::V2Manager`]) and the
//! [`AnyCgroupManager`] dispatch enum chosen at start-up by probing ([`AnyCgroupManager::detect`]):
//! a cgroup2 mount at the root is v2; a tmpfs with v1 hierarchies is v1 — also on hybrid hosts,
//! where the cgroup2 mount under `unified/` only carries no controllers (runc and the kubelet
//! treat hybrid as v1 too). The root is a parameter, so the unit tests run against fake trees (a
//! tempdir laid out like `/sys/fs/cgroup` with plain files for the interface files); the real
//! kernel is exercised by `tests/sandbox_cgroups.rs` (v1 on the host, v2 inside User-Mode Linux).

pub mod v1;
pub mod v2;

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pb::LinuxContainerResources;

/// Where cgroupfs is mounted on a normal host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The per-pod supervisors' cgroup, outside any pod's limits.
pub const SUPERVISORS_CGROUP: &str = "/capstan/supervisors";
/// Pods whose sandbox config names no cgroup parent go below this.
pub const PODS_CGROUP: &str = "/capstan/pods";

/// Errors of the cgroup manager.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroupfs file or directory could not be read, written, made or removed.
    #[error("cgroup {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An interface file held something we could not parse.
    #[error("cgroup file {path}: cannot parse {value:?}")]
    Parse { path: PathBuf, value: String },
    /// The cgroup path is not an absolute path below the root without `..`.
    #[error("invalid cgroup path {0:?}")]
    InvalidPath(String),
    /// No cgroup filesystem was found at the root.
    #[error("no cgroup filesystem found at {0}")]
    NotFound(PathBuf),
    /// The request asks for something this hierarchy cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The cgroup still had processes after the drain timeout.
    #[error("cgroup {path} still busy after {waited:?}: {source}")]
    Busy {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

/// The cgroup counters behind CRI ContainerStats / PodSandboxStats. `None`: not available on this
/// hierarchy (controller missing or file absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Nanoseconds since the Unix epoch when the counters were read.
    pub timestamp_ns: i64,
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Memory usage including page cache (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_usage_bytes: Option<u64>,
    /// usage − inactive_file, floored at 0: what the kubelet evicts on and cAdvisor reports.
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub memory_rss_bytes: Option<u64>,
    pub page_faults: Option<u64>,
    pub major_page_faults: Option<u64>,
    /// Processes/threads in the cgroup (`pids.current`).
    pub pids_current: Option<u64>,
    /// How many times the OOM killer killed a process in this cgroup.
    pub oom_kill_count: Option<u64>,
}

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// What the runtime needs of a cgroup hierarchy. Paths are cgroup paths (`/capstan/pods/x`),
/// not filesystem paths; on v1 a path applies to every mounted hierarchy.
pub trait CgroupManager: Send + Sync {
    fn version(&self) -> CgroupVersion;
    /// Whether the controller (`cpu`, `memory`, `hugetlb`, …) is available.
    fn has_controller(&self, name: &str) -> bool;
    /// Creates the cgroup and any missing ancestors (idempotent).
    fn create(&self, path: &str) -> Result<()>;
    /// Removes the cgroup and everything below it, deepest first, retrying while tasks drain.
    /// A missing cgroup is not an error.
    fn remove(&self, path: &str) -> Result<()>;
    /// Reads the counters.
    fn stats(&self, path: &str) -> Result<CgroupStats>;
    /// Applies CRI resources live (UpdateContainerResources). Zero/empty fields are left alone.
    fn update(&self, path: &str, resources: &LinuxContainerResources) -> Result<()>;
    /// Sets (`Some`) or lifts (`None`) the pids limit (the kubelet's pod pids limit).
    fn set_pids_limit(&self, path: &str, limit: Option<i64>) -> Result<()>;
    /// Moves a process into the cgroup (all hierarchies on v1).
    fn move_pid(&self, path: &str, pid: i32) -> Result<()>;
    /// The processes in the cgroup itself (not its children).
    fn pids(&self, path: &str) -> Result<Vec<i32>>;
}

/// The manager chosen at start-up.
#[derive(Debug, Clone)]
pub enum AnyCgroupManager {
    V1(v1::V1Manager),
    V2(v2::V2Manager),
}

impl AnyCgroupManager {
    /// Probes `root` (normally [`DEFAULT_ROOT`]): by `/proc/self/mountinfo` when `root` is a
    /// mount point there, else by the tree's layout (fake trees in tests).
    pub fn detect(root: &Path) -> Result<AnyCgroupManager> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        Self::detect_with_mountinfo(root, &mountinfo)
    }

    /// [`detect`](Self::detect) with the mountinfo text given (for tests).
    pub fn detect_with_mountinfo(root: &Path, mountinfo: &str) -> Result<AnyCgroupManager> {
        let mounts = parse_cgroup_mounts(mountinfo);
        if mounts
            .iter()
            .any(|m| m.mount_point == root && m.fs_type == "cgroup2")
        {
            return Ok(AnyCgroupManager::V2(v2::V2Manager::new(root)?));
        }
        let v1_mounts: Vec<(PathBuf, Vec<String>)> = mounts
            .iter()
            .filter(|m| m.fs_type == "cgroup" && m.mount_point.parent() == Some(root))
            .map(|m| (m.mount_point.clone(), m.controllers.clone()))
            .collect();
        if !v1_mounts.is_empty() {
            return Ok(AnyCgroupManager::V1(v1::V1Manager::from_hierarchies(
                root, v1_mounts,
            )));
        }
        // Not a real mount: judge by the layout.
        if root.join("cgroup.controllers").is_file() {
            return Ok(AnyCgroupManager::V2(v2::V2Manager::new(root)?));
        }
        let v1 = v1::V1Manager::from_tree(root)?;
        if v1.is_empty() {
            return Err(CgroupError::NotFound(root.to_path_buf()));
        }
        Ok(AnyCgroupManager::V1(v1))
    }
}

macro_rules! dispatch {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyCgroupManager::V1($m) => $e,
            AnyCgroupManager::V2($m) => $e,
        }
    };
}

impl CgroupManager for AnyCgroupManager {
    fn version(&self) -> CgroupVersion {
        dispatch!(self, m => m.version())
    }
    fn has_controller(&self, name: &str) -> bool {
        dispatch!(self, m => m.has_controller(name))
    }
    fn create(&self, path: &str) -> Result<()> {
        dispatch!(self, m => m.create(path))
    }
    fn remove(&self, path: &str) -> Result<()> {
        dispatch!(self, m => m.remove(path))
    }
    fn stats(&self, path: &str) -> Result<CgroupStats> {
        dispatch!(self, m => m.stats(path))
    }
    fn update(&self, path: &str, resources: &LinuxContainerResources) -> Result<()> {
        dispatch!(self, m => m.update(path, resources))
    }
    fn set_pids_limit(&self, path: &str, limit: Option<i64>) -> Result<()> {
        dispatch!(self, m => m.set_pids_limit(path, limit))
    }
    fn move_pid(&self, path: &str, pid: i32) -> Result<()> {
        dispatch!(self, m => m.move_pid(path, pid))
    }
    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        dispatch!(self, m => m.pids(path))
    }
}

/// The pod's cgroup parent: the CRI `cgroup_parent` if given, else `/capstan/pods/<sandbox-id>`.
pub fn pod_cgroup_parent(cgroup_parent: &str, sandbox_id: &str) -> String {
    if cgroup_parent.is_empty() {
        format!("{PODS_CGROUP}/{sandbox_id}")
    } else if cgroup_parent.starts_with('/') {
        cgroup_parent.trim_end_matches('/').to_string()
    } else {
        format!("/{}", cgroup_parent.trim_end_matches('/'))
    }
}

/// A container's cgroup: `<pod parent>/<container-id>`.
pub fn container_cgroup(pod_parent: &str, container_id: &str) -> String {
    format!("{}/{container_id}", pod_parent.trim_end_matches('/'))
}

/// runc's conversion of cgroup v1 `cpu.shares` [2, 262144] to v2 `cpu.weight` [1, 10000]
/// (0 stays 0: not set).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Joins a cgroup path onto a hierarchy's mount directory, refusing `..` and empty results.
pub(crate) fn join_cgroup(mount: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(CgroupError::InvalidPath(path.to_string()));
    }
    Ok(mount.join(rel))
}

pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CgroupError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads an optional single-number file (`None` if the file is missing).
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            value: s,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parses a flat-keyed file (`memory.stat`, `cpu.stat`, `memory.events`, `memory.oom_control`).
pub(crate) fn parse_keyed(text: &str) -> std::collections::HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Reads a flat-keyed file; a missing file gives an empty map.
pub(crate) fn read_keyed_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn mkdir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Io {
            op: "mkdir",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes a cgroup directory tree deepest-first. cgroupfs directories only ever contain
/// interface files, which rmdir ignores; EBUSY (tasks still exiting) is retried until `deadline`
/// (one deadline for all hierarchies of a v1 removal).
pub(crate) fn rmdir_tree(dir: &Path, deadline: std::time::Instant) -> Result<()> {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs).map_err(|source| CgroupError::Io {
        op: "walk",
        path: dir.to_path_buf(),
        source,
    })?;
    // Deepest first.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let start = std::time::Instant::now();
        let drain = deadline.saturating_duration_since(start);
        let mut delay = Duration::from_millis(5);
        loop {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < drain => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(CgroupError::Busy {
                        path: d,
                        waited: start.elapsed(),
                        source: e,
                    });
                }
                Err(source) => {
                    return Err(CgroupError::Io {
                        op: "rmdir",
                        path: d,
                        source,
                    })
                }
            }
        }
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    out.push(dir.to_path_buf());
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

pub(crate) fn read_pids(file: &Path) -> Result<Vec<i32>> {
    let s = read_string(file)?;
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| CgroupError::Parse {
                path: file.to_path_buf(),
                value: l.to_string(),
            })
        })
        .collect()
}

/// One cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// v1 controllers from the super options (`cpu`, `cpuacct`, `name=systemd`, …).
    pub controllers: Vec<String>,
}

pub(crate) fn parse_cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let fs_type = *fields.get(sep + 1)?;
            if fs_type != "cgroup" && fs_type != "cgroup2" {
                return None;
            }
            let super_opts = fields.get(sep + 3).copied().unwrap_or("");
            let controllers = if fs_type == "cgroup" {
                super_opts
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                    .filter(|o| {
                        !matches!(
                            *o,
                            "noprefix" | "clone_children" | "xattr" | "cpuset_v2_mode"
                        )
                    })
                    .map(str::to_string)
                    .collect()
            } else {
                Vec::new()
            };
            Some(CgroupMount {
                mount_point: PathBuf::from(crate::namespaces::unescape_octal(fields.get(4)?)),
                fs_type: fs_type.to_string(),
                controllers,
            })
        })
        .collect()
}

/// CRI hugepage sizes (`2MB`, `1GB`) are what the kernel's hugetlb file names use already;
/// refuse anything else so we never write to an unexpected file name.
pub(crate) fn check_page_size(size: &str) -> Result<()> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CgroupError::Unsupported(format!(
            "invalid hugepage size {size:?}"
        )));
    }
    if !matches!(unit, "KB" | "MB" | "GB") {
        return Err(CgroupError::Unsupported(format!(
            "invalid hugepage size {size:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::fs;
    use std::path::Path;

    /// Writes `files` (relative path, content) under `root`, making directories.
    pub fn lay_out(root: &Path, files: &[(&str, &str)]) {
        for (rel, content) in files {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
    }

    pub fn read(root: &Path, rel: &str) -> String {
        fs::read_to_string(root.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .trim()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_is_v1_with_each_hierarchy() {
        let m =
            AnyCgroupManager::detect_with_mountinfo(Path::new("/sys/fs/cgroup"), HYBRID_MOUNTINFO)
                .unwrap();
        let AnyCgroupManager::V1(v1) = &m else {
            panic!("hybrid must be v1, got {m:?}")
        };
        assert_eq!(m.version(), CgroupVersion::V1);
        for c in ["cpu", "cpuacct", "memory", "name=systemd"] {
            assert!(m.has_controller(c), "{c}");
        }
        assert!(!m.has_controller("hugetlb"));
        assert_eq!(
            v1.hierarchy("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
    }

    #[test]
    fn cgroup2_root_is_v2() {
        let tmp = tempfile::tempdir().unwrap();
        testutil::lay_out(tmp.path(), &[("cgroup.controllers", "cpu memory pids\n")]);
        let info = format!(
            "30 23 0:27 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let m = AnyCgroupManager::detect_with_mountinfo(tmp.path(), &info).unwrap();
        assert_eq!(m.version(), CgroupVersion::V2);
        assert!(m.has_controller("memory") && !m.has_controller("hugetlb"));
        // And from the layout alone.
        let m = AnyCgroupManager::detect_with_mountinfo(tmp.path(), "").unwrap();
        assert_eq!(m.version(), CgroupVersion::V2);
    }

    #[test]
    fn empty_root_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = AnyCgroupManager::detect_with_mountinfo(tmp.path(), "").unwrap_err();
        assert!(err.to_string().contains("no cgroup filesystem"), "{err}");
    }

    #[test]
    fn path_conventions() {
        assert_eq!(pod_cgroup_parent("", "abc"), "/capstan/pods/abc");
        assert_eq!(
            pod_cgroup_parent("/kubepods/burstable/pod1/", "abc"),
            "/kubepods/burstable/pod1"
        );
        assert_eq!(pod_cgroup_parent("kubepods/pod1", "abc"), "/kubepods/pod1");
        assert_eq!(
            container_cgroup("/capstan/pods/abc", "c1"),
            "/capstan/pods/abc/c1"
        );
        assert!(join_cgroup(Path::new("/r"), "/a/../b").is_err());
        assert_eq!(
            join_cgroup(Path::new("/r"), "/a/b").unwrap(),
            Path::new("/r/a/b")
        );
    }

    #[test]
    fn shares_convert_like_runc() {
        for (shares, weight) in [(0, 0), (2, 1), (1024, 39), (262_144, 10_000), (1, 1)] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
    }

    #[test]
    fn page_sizes() {
        assert!(check_page_size("2MB").is_ok() && check_page_size("1GB").is_ok());
        for bad in ["", "MB", "2M", "../x", "2MB/"] {
            assert!(check_page_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rmdir_tree_is_deepest_first_and_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("pod");
        fs::create_dir_all(top.join("c1/x")).unwrap();
        fs::create_dir_all(top.join("c2")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(10);
        rmdir_tree(&top, deadline).unwrap();
        assert!(!top.exists());
        rmdir_tree(&top, deadline).unwrap();
    }
}
