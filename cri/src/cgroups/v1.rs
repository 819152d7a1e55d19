//! cgroup v1: one hierarchy per mounted controller set (`cpu`, `cpuacct`, `memory`, …,
//! `name=systemd`); a cgroup path exists once in each. Mirrors runc's `fs` driver: new cpuset
//! cgroups inherit `cpus`/`mems` from their parent (an empty cpuset takes no tasks), memory and
//! memsw limits are written in the order the kernel accepts, hugetlb only where mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    check_page_size, join_cgroup, mkdir, now_ns, parse_keyed, read_keyed_opt, read_pids,
    read_string, read_u64_opt, rmdir_tree, write_file, CgroupError, CgroupManager, CgroupStats,
    CgroupVersion, Result,
};
use crate::pb::LinuxContainerResources;

/// How long `remove` waits for a cgroup's tasks to go.
const DRAIN: Duration = Duration::from_secs(2);

/// The v1 cgroupfs manager.
#[derive(Debug, Clone)]
pub struct V1Manager {
    root: PathBuf,
    /// (mount directory, controllers mounted there).
    hierarchies: Vec<(PathBuf, Vec<String>)>,
}

impl V1Manager {
    /// A manager over the given hierarchies (from mountinfo).
    pub fn from_hierarchies(root: &Path, hierarchies: Vec<(PathBuf, Vec<String>)>) -> V1Manager {
        V1Manager {
            root: root.to_path_buf(),
            hierarchies,
        }
    }

    /// A manager over the directories of `root`, named like their controllers (`cpu`,
    /// `cpu,cpuacct`, `systemd` for `name=systemd`); symlinks and `unified` are skipped.
    pub fn from_tree(root: &Path) -> Result<V1Manager> {
        let entries = std::fs::read_dir(root).map_err(|source| CgroupError::Io {
            op: "list",
            path: root.to_path_buf(),
            source,
        })?;
        let mut hierarchies = Vec::new();
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if !ft.is_dir() || name == "unified" {
                continue;
            }
            let controllers = if name == "systemd" {
                vec!["name=systemd".to_string()]
            } else {
                name.split(',').map(str::to_string).collect()
            };
            hierarchies.push((entry.path(), controllers));
        }
        hierarchies.sort();
        Ok(V1Manager {
            root: root.to_path_buf(),
            hierarchies,
        })
    }

    /// The cgroupfs root this manager works under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.hierarchies.is_empty()
    }

    /// The mount directory of the hierarchy carrying `controller`.
    pub fn hierarchy(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|(_, cs)| cs.iter().any(|c| c == controller))
            .map(|(p, _)| p.as_path())
    }

    fn dir(&self, controller: &str, path: &str) -> Result<Option<PathBuf>> {
        self.hierarchy(controller)
            .map(|h| join_cgroup(h, path))
            .transpose()
    }

    fn set_cpu(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        let Some(dir) = self.dir("cpu", path)? else {
            return Ok(());
        };
        if r.cpu_shares != 0 {
            write_file(&dir.join("cpu.shares"), &r.cpu_shares.to_string())?;
        }
        let period = dir.join("cpu.cfs_period_us");
        let quota = dir.join("cpu.cfs_quota_us");
        match (r.cpu_period, r.cpu_quota) {
            (0, 0) => {}
            (0, q) => write_file(&quota, &q.to_string())?,
            (p, 0) => write_file(&period, &p.to_string())?,
            (p, q) => {
                // A new period can be refused against the old quota (and vice versa): on EINVAL
                // write the other one first, as runc does.
                if let Err(first) = write_file(&period, &p.to_string()) {
                    if !is_einval(&first) {
                        return Err(first);
                    }
                    write_file(&quota, &q.to_string())?;
                    write_file(&period, &p.to_string())?;
                } else {
                    write_file(&quota, &q.to_string())?;
                }
            }
        }
        Ok(())
    }

    fn set_cpuset(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        let Some(dir) = self.dir("cpuset", path)? else {
            return Ok(());
        };
        if !r.cpuset_cpus.is_empty() {
            write_file(&dir.join("cpuset.cpus"), &r.cpuset_cpus)?;
        }
        if !r.cpuset_mems.is_empty() {
            write_file(&dir.join("cpuset.mems"), &r.cpuset_mems)?;
        }
        Ok(())
    }

    fn set_memory(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        let Some(dir) = self.dir("memory", path)? else {
            return Ok(());
        };
        let memory = r.memory_limit_in_bytes;
        if memory == 0 {
            return Ok(());
        }
        let limit = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if !memsw.exists() {
            return write_file(&limit, &memory.to_string());
        }
        // CRI's swap limit has memsw semantics (memory + swap); 0 means "no swap" as the kubelet
        // sends it, so memsw follows the memory limit.
        let swap = match r.memory_swap_limit_in_bytes {
            0 => memory,
            s => s,
        };
        let current = read_u64_opt(&limit)?.unwrap_or(u64::MAX);
        let raising = swap == -1 || (swap > 0 && current < swap as u64);
        if raising {
            write_file(&memsw, &swap.to_string())?;
            write_file(&limit, &memory.to_string())
        } else {
            write_file(&limit, &memory.to_string())?;
            write_file(&memsw, &swap.to_string())
        }
    }

    fn set_hugetlb(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        if r.hugepage_limits.is_empty() {
            return Ok(());
        }
        let Some(dir) = self.dir("hugetlb", path)? else {
            tracing::debug!(
                path,
                "no hugetlb hierarchy: hugepage limits left out, as runc does"
            );
            return Ok(());
        };
        for h in &r.hugepage_limits {
            check_page_size(&h.page_size)?;
            let file = dir.join(format!("hugetlb.{}.limit_in_bytes", h.page_size));
            write_file(&file, &h.limit.to_string())?;
        }
        Ok(())
    }
}

fn is_einval(e: &CgroupError) -> bool {
    matches!(e, CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EINVAL))
}

impl CgroupManager for V1Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn has_controller(&self, name: &str) -> bool {
        self.hierarchy(name).is_some()
    }

    fn create(&self, path: &str) -> Result<()> {
        for (mount, controllers) in &self.hierarchies {
            let target = join_cgroup(mount, path)?;
            let is_cpuset = controllers.iter().any(|c| c == "cpuset");
            let mut dir = mount.clone();
            for comp in target
                .strip_prefix(mount)
                .unwrap_or(Path::new(""))
                .components()
            {
                let parent = dir.clone();
                dir.push(comp);
                if !dir.is_dir() {
                    mkdir(&dir)?;
                }
                // Checked even when the directory exists: a concurrent creator may have made it
                // and not yet filled its cpuset, and an empty cpuset refuses tasks (ENOSPC).
                if is_cpuset {
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        let own = read_keyed_opt(&dir.join(file))?.unwrap_or_default();
                        if own.trim().is_empty() {
                            let inherited = read_string(&parent.join(file))?;
                            write_file(&dir.join(file), inherited.trim())?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<()> {
        let mut first_err = None;
        let deadline = std::time::Instant::now() + DRAIN;
        for (mount, _) in &self.hierarchies {
            let dir = join_cgroup(mount, path)?;
            if dir == *mount {
                return Err(CgroupError::InvalidPath(path.to_string()));
            }
            if let Err(e) = rmdir_tree(&dir, deadline) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn stats(&self, path: &str) -> Result<CgroupStats> {
        let mut s = CgroupStats {
            timestamp_ns: now_ns(),
            ..Default::default()
        };
        if let Some(dir) = self.dir("cpuacct", path)? {
            s.cpu_usage_ns = read_u64_opt(&dir.join("cpuacct.usage"))?;
        }
        if let Some(dir) = self.dir("memory", path)? {
            s.memory_usage_bytes = read_u64_opt(&dir.join("memory.usage_in_bytes"))?;
            if let Some(text) = read_keyed_opt(&dir.join("memory.stat"))? {
                let stat = parse_keyed(&text);
                let inactive = stat.get("total_inactive_file").copied().unwrap_or(0);
                s.memory_working_set_bytes =
                    s.memory_usage_bytes.map(|u| u.saturating_sub(inactive));
                s.memory_rss_bytes = stat.get("total_rss").copied();
                s.page_faults = stat.get("total_pgfault").copied();
                s.major_page_faults = stat.get("total_pgmajfault").copied();
            }
            if let Some(text) = read_keyed_opt(&dir.join("memory.oom_control"))? {
                s.oom_kill_count = parse_keyed(&text).get("oom_kill").copied();
            }
        }
        if let Some(dir) = self.dir("pids", path)? {
            s.pids_current = read_u64_opt(&dir.join("pids.current"))?;
        }
        Ok(s)
    }

    fn update(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        if !r.unified.is_empty() {
            return Err(CgroupError::Unsupported(
                "unified (cgroup v2) resources are not supported on a cgroup v1 host".into(),
            ));
        }
        self.set_cpu(path, r)?;
        self.set_cpuset(path, r)?;
        self.set_memory(path, r)?;
        self.set_hugetlb(path, r)
    }

    fn set_pids_limit(&self, path: &str, limit: Option<i64>) -> Result<()> {
        let Some(dir) = self.dir("pids", path)? else {
            return Ok(());
        };
        let value = match limit {
            Some(n) if n > 0 => n.to_string(),
            _ => "max".to_string(),
        };
        write_file(&dir.join("pids.max"), &value)
    }

    fn move_pid(&self, path: &str, pid: i32) -> Result<()> {
        for (mount, _) in &self.hierarchies {
            write_file(
                &join_cgroup(mount, path)?.join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        let mount = ["pids", "memory", "cpu"]
            .iter()
            .find_map(|c| self.hierarchy(c))
            .or_else(|| self.hierarchies.first().map(|(p, _)| p.as_path()))
            .ok_or_else(|| CgroupError::NotFound(self.root.clone()))?;
        read_pids(&join_cgroup(mount, path)?.join("cgroup.procs"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lay_out, read};
    use super::*;
    use crate::pb::HugepageLimit;

    fn fake_v1() -> (tempfile::TempDir, V1Manager) {
        let tmp = tempfile::tempdir().unwrap();
        lay_out(
            tmp.path(),
            &[
                ("cpu/cpu.shares", "1024\n"),
                ("cpuacct/cpuacct.usage", "0\n"),
                ("cpuset/cpuset.cpus", "0-3\n"),
                ("cpuset/cpuset.mems", "0\n"),
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("pids/pids.max", "max\n"),
                ("systemd/cgroup.procs", ""),
                ("unified/cgroup.controllers", ""),
            ],
        );
        let m = V1Manager::from_tree(tmp.path()).unwrap();
        (tmp, m)
    }

    #[test]
    fn tree_layout_names_hierarchies() {
        let (_tmp, m) = fake_v1();
        for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "name=systemd"] {
            assert!(m.has_controller(c), "{c}");
        }
        assert!(!m.has_controller("hugetlb"));
        assert!(!m.has_controller("unified"));
    }

    #[test]
    fn create_makes_every_hierarchy_and_inherits_cpuset() {
        let (tmp, m) = fake_v1();
        m.create("/capstan/pods/p1").unwrap();
        for h in ["cpu", "cpuacct", "cpuset", "memory", "pids", "systemd"] {
            assert!(tmp.path().join(h).join("capstan/pods/p1").is_dir(), "{h}");
        }
        assert_eq!(read(tmp.path(), "cpuset/capstan/cpuset.cpus"), "0-3");
        assert_eq!(read(tmp.path(), "cpuset/capstan/pods/p1/cpuset.mems"), "0");
        assert!(!tmp.path().join("unified/capstan").exists());
        // Idempotent.
        m.create("/capstan/pods/p1").unwrap();
    }

    #[test]
    fn create_fills_the_cpuset_of_a_directory_a_concurrent_creator_left_empty() {
        let (tmp, m) = fake_v1();
        // What another process's create looks like between its mkdir and its cpuset writes.
        lay_out(
            tmp.path(),
            &[
                ("cpuset/capstan/cpuset.cpus", ""),
                ("cpuset/capstan/cpuset.mems", ""),
            ],
        );
        m.create("/capstan/supervisors").unwrap();
        assert_eq!(read(tmp.path(), "cpuset/capstan/cpuset.cpus"), "0-3");
        assert_eq!(
            read(tmp.path(), "cpuset/capstan/supervisors/cpuset.cpus"),
            "0-3"
        );
    }

    #[test]
    fn stats_compute_working_set_like_cadvisor() {
        let (tmp, m) = fake_v1();
        lay_out(
            tmp.path(),
            &[
                ("cpuacct/c/cpuacct.usage", "123456789\n"),
                ("memory/c/memory.usage_in_bytes", "10000\n"),
                (
                    "memory/c/memory.stat",
                    "cache 1\nrss 2\ntotal_rss 4000\ntotal_inactive_file 3000\n\
                     total_pgfault 77\ntotal_pgmajfault 5\n",
                ),
                (
                    "memory/c/memory.oom_control",
                    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                ),
                ("pids/c/pids.current", "3\n"),
            ],
        );
        let s = m.stats("/c").unwrap();
        assert!(s.timestamp_ns > 0);
        assert_eq!(
            s,
            CgroupStats {
                timestamp_ns: s.timestamp_ns,
                cpu_usage_ns: Some(123_456_789),
                memory_usage_bytes: Some(10_000),
                memory_working_set_bytes: Some(7_000),
                memory_rss_bytes: Some(4_000),
                page_faults: Some(77),
                major_page_faults: Some(5),
                pids_current: Some(3),
                oom_kill_count: Some(2),
            }
        );
        // inactive_file larger than usage floors at zero.
        lay_out(
            tmp.path(),
            &[("memory/c/memory.stat", "total_inactive_file 20000\n")],
        );
        assert_eq!(m.stats("/c").unwrap().memory_working_set_bytes, Some(0));
    }

    #[test]
    fn update_writes_runc_style_values() {
        let (tmp, m) = fake_v1();
        m.create("/c").unwrap();
        lay_out(
            tmp.path(),
            &[
                ("memory/c/memory.limit_in_bytes", "9223372036854771712\n"),
                (
                    "memory/c/memory.memsw.limit_in_bytes",
                    "9223372036854771712\n",
                ),
            ],
        );
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpuset_cpus: "1".into(),
            memory_limit_in_bytes: 64 << 20,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        };
        m.update("/c", &r).unwrap();
        assert_eq!(read(tmp.path(), "cpu/c/cpu.shares"), "512");
        assert_eq!(read(tmp.path(), "cpu/c/cpu.cfs_period_us"), "100000");
        assert_eq!(read(tmp.path(), "cpu/c/cpu.cfs_quota_us"), "50000");
        assert_eq!(read(tmp.path(), "cpuset/c/cpuset.cpus"), "1");
        assert_eq!(
            read(tmp.path(), "cpuset/c/cpuset.mems"),
            "0",
            "mems untouched when empty"
        );
        assert_eq!(
            read(tmp.path(), "memory/c/memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(
            read(tmp.path(), "memory/c/memory.memsw.limit_in_bytes"),
            (64u64 << 20).to_string(),
            "no swap: memsw follows the memory limit"
        );
        // No hugetlb hierarchy: silently left out.
        assert!(!tmp.path().join("hugetlb").exists());

        let unified = LinuxContainerResources {
            unified: [("memory.high".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let err = m.update("/c", &unified).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");

        m.set_pids_limit("/c", Some(10)).unwrap();
        assert_eq!(read(tmp.path(), "pids/c/pids.max"), "10");
        m.set_pids_limit("/c", None).unwrap();
        assert_eq!(read(tmp.path(), "pids/c/pids.max"), "max");
    }

    #[test]
    fn move_pid_writes_every_hierarchy_and_remove_cleans_up() {
        let (tmp, m) = fake_v1();
        m.create("/p/c").unwrap();
        m.move_pid("/p/c", 42).unwrap();
        assert_eq!(read(tmp.path(), "memory/p/c/cgroup.procs"), "42");
        assert_eq!(read(tmp.path(), "systemd/p/c/cgroup.procs"), "42");
        assert_eq!(m.pids("/p/c").unwrap(), vec![42]);
        // A fake tree's files are real files; clear them so rmdir works as on cgroupfs.
        for h in ["cpu", "cpuacct", "cpuset", "memory", "pids", "systemd"] {
            for d in ["p/c", "p"] {
                for f in std::fs::read_dir(tmp.path().join(h).join(d))
                    .unwrap()
                    .flatten()
                {
                    if f.file_type().unwrap().is_file() {
                        std::fs::remove_file(f.path()).unwrap();
                    }
                }
            }
        }
        m.remove("/p").unwrap();
        assert!(!tmp.path().join("memory/p").exists());
        m.remove("/p").unwrap();
        assert!(m.remove("/").is_err(), "the root is never removed");
    }
}
