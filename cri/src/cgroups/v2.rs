//! cgroup v2: one unified hierarchy. Controllers must be enabled top-down in every ancestor's
//! `cgroup.subtree_control` ("no internal processes": only leaves hold tasks, so a pod cgroup —
//! which has no pause process — may enable them for its containers). Resource values follow
//! runc's v1→v2 conversions: `cpu.shares` → `cpu.weight`, quota/period → `cpu.max`, the memsw
//! style swap limit → `memory.swap.max` = swap − memory; the CRI `unified` map is written as is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    check_page_size, join_cgroup, mkdir, now_ns, parse_keyed, read_keyed_opt, read_pids,
    read_string, read_u64_opt, rmdir_tree, shares_to_weight, write_file, CgroupError,
    CgroupManager, CgroupStats, CgroupVersion, Result,
};
use crate::pb::LinuxContainerResources;

const DRAIN: Duration = Duration::from_secs(2);

/// The controllers we enable for pods and containers, when the root offers them.
const WANTED: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "misc"];

/// The v2 (unified) cgroupfs manager.
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    controllers: BTreeSet<String>,
}

impl V2Manager {
    /// A manager for the unified hierarchy mounted at `root`.
    pub fn new(root: &Path) -> Result<V2Manager> {
        let controllers = read_string(&root.join("cgroup.controllers"))?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Ok(V2Manager {
            root: root.to_path_buf(),
            controllers,
        })
    }

    /// The cgroupfs root this manager works under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, path: &str) -> Result<PathBuf> {
        join_cgroup(&self.root, path)
    }

    /// Enables every wanted, available controller in `parent`'s subtree_control.
    fn enable_controllers(&self, parent: &Path) -> Result<()> {
        let available: BTreeSet<String> = read_keyed_opt(&parent.join("cgroup.controllers"))?
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|| self.controllers.clone());
        let enabled: BTreeSet<String> = read_keyed_opt(&parent.join("cgroup.subtree_control"))?
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let missing: Vec<&str> = WANTED
            .iter()
            .copied()
            .filter(|c| available.contains(*c) && !enabled.contains(*c))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let file = parent.join("cgroup.subtree_control");
        let all = missing
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        if write_file(&file, &all).is_ok() {
            return Ok(());
        }
        // One at a time, so one refused controller (e.g. cpuset in a threaded subtree) does not
        // cost the others; only memory, cpu and pids are essential.
        for c in missing {
            if let Err(e) = write_file(&file, &format!("+{c}")) {
                if matches!(c, "cpu" | "memory" | "pids") {
                    return Err(e);
                }
                tracing::debug!(controller = c, error = %e, "controller not enabled");
            }
        }
        Ok(())
    }

    fn set_cpu(&self, dir: &Path, r: &LinuxContainerResources) -> Result<()> {
        if r.cpu_shares != 0 {
            let weight = shares_to_weight(r.cpu_shares.max(0) as u64);
            write_file(&dir.join("cpu.weight"), &weight.to_string())?;
        }
        if let Some(v) = cpu_max(r.cpu_quota, r.cpu_period) {
            write_file(&dir.join("cpu.max"), &v)?;
        }
        Ok(())
    }

    fn set_memory(&self, dir: &Path, r: &LinuxContainerResources) -> Result<()> {
        let swap = swap_max(r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes)?;
        if let Some(swap) = swap {
            let file = dir.join("memory.swap.max");
            if file.exists() {
                write_file(&file, &swap)?;
            } else {
                tracing::debug!("no memory.swap.max (swap accounting off): swap limit left out");
            }
        }
        match r.memory_limit_in_bytes {
            0 => Ok(()),
            -1 => write_file(&dir.join("memory.max"), "max"),
            n => write_file(&dir.join("memory.max"), &n.to_string()),
        }
    }
}

/// runc's `cpu.max` value: quota ("max" when ≤ 0), then the period if given; `None`: untouched.
pub fn cpu_max(quota: i64, period: i64) -> Option<String> {
    if quota == 0 && period == 0 {
        return None;
    }
    let mut v = if quota > 0 {
        quota.to_string()
    } else {
        "max".to_string()
    };
    if period != 0 {
        v.push_str(&format!(" {period}"));
    }
    Some(v)
}

/// runc's conversion of a v1 memsw-style swap limit (memory + swap) to `memory.swap.max`.
pub fn swap_max(swap: i64, memory: i64) -> Result<Option<String>> {
    match (swap, memory) {
        (0, _) => Ok(None),
        (-1, _) => Ok(Some("max".into())),
        (_, 0) | (_, -1) => Err(CgroupError::Unsupported(
            "a swap limit needs a memory limit (cgroup v2 memory.swap.max = swap - memory)".into(),
        )),
        (s, m) if s < m => Err(CgroupError::Unsupported(format!(
            "memory+swap limit {s} is below the memory limit {m}"
        ))),
        (s, m) => Ok(Some((s - m).to_string())),
    }
}

impl CgroupManager for V2Manager {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn has_controller(&self, name: &str) -> bool {
        self.controllers.contains(name)
    }

    fn create(&self, path: &str) -> Result<()> {
        let target = self.dir(path)?;
        let mut dir = self.root.clone();
        let rel = target
            .strip_prefix(&self.root)
            .unwrap_or(Path::new(""))
            .to_path_buf();
        for comp in rel.components() {
            self.enable_controllers(&dir)?;
            dir.push(comp);
            mkdir(&dir)?;
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<()> {
        let dir = self.dir(path)?;
        if dir == self.root {
            return Err(CgroupError::InvalidPath(path.to_string()));
        }
        rmdir_tree(&dir, std::time::Instant::now() + DRAIN)
    }

    fn stats(&self, path: &str) -> Result<CgroupStats> {
        let dir = self.dir(path)?;
        let mut s = CgroupStats {
            timestamp_ns: now_ns(),
            ..Default::default()
        };
        if let Some(text) = read_keyed_opt(&dir.join("cpu.stat"))? {
            s.cpu_usage_ns = parse_keyed(&text).get("usage_usec").map(|u| u * 1000);
        }
        s.memory_usage_bytes = read_u64_opt(&dir.join("memory.current"))?;
        if let Some(text) = read_keyed_opt(&dir.join("memory.stat"))? {
            let stat = parse_keyed(&text);
            let inactive = stat.get("inactive_file").copied().unwrap_or(0);
            s.memory_working_set_bytes = s.memory_usage_bytes.map(|u| u.saturating_sub(inactive));
            s.memory_rss_bytes = stat.get("anon").copied();
            s.page_faults = stat.get("pgfault").copied();
            s.major_page_faults = stat.get("pgmajfault").copied();
        }
        if let Some(text) = read_keyed_opt(&dir.join("memory.events"))? {
            s.oom_kill_count = parse_keyed(&text).get("oom_kill").copied();
        }
        s.pids_current = read_u64_opt(&dir.join("pids.current"))?;
        Ok(s)
    }

    fn update(&self, path: &str, r: &LinuxContainerResources) -> Result<()> {
        let dir = self.dir(path)?;
        self.set_cpu(&dir, r)?;
        if !r.cpuset_cpus.is_empty() {
            write_file(&dir.join("cpuset.cpus"), &r.cpuset_cpus)?;
        }
        if !r.cpuset_mems.is_empty() {
            write_file(&dir.join("cpuset.mems"), &r.cpuset_mems)?;
        }
        self.set_memory(&dir, r)?;
        if !r.hugepage_limits.is_empty() {
            if self.has_controller("hugetlb") {
                for h in &r.hugepage_limits {
                    check_page_size(&h.page_size)?;
                    let file = dir.join(format!("hugetlb.{}.max", h.page_size));
                    write_file(&file, &h.limit.to_string())?;
                }
            } else {
                tracing::debug!(path, "no hugetlb controller: hugepage limits left out");
            }
        }
        let mut unified: Vec<_> = r.unified.iter().collect();
        unified.sort();
        for (key, value) in unified {
            if key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(CgroupError::Unsupported(format!(
                    "invalid unified resource key {key:?}"
                )));
            }
            write_file(&dir.join(key), value)?;
        }
        Ok(())
    }

    fn set_pids_limit(&self, path: &str, limit: Option<i64>) -> Result<()> {
        let value = match limit {
            Some(n) if n > 0 => n.to_string(),
            _ => "max".to_string(),
        };
        write_file(&self.dir(path)?.join("pids.max"), &value)
    }

    fn move_pid(&self, path: &str, pid: i32) -> Result<()> {
        write_file(&self.dir(path)?.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>> {
        read_pids(&self.dir(path)?.join("cgroup.procs"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{lay_out, read};
    use super::*;
    use crate::pb::HugepageLimit;

    fn fake_v2() -> (tempfile::TempDir, V2Manager) {
        let tmp = tempfile::tempdir().unwrap();
        lay_out(
            tmp.path(),
            &[
                ("cgroup.controllers", "cpuset cpu io memory pids\n"),
                ("cgroup.subtree_control", ""),
            ],
        );
        let m = V2Manager::new(tmp.path()).unwrap();
        (tmp, m)
    }

    #[test]
    fn create_enables_controllers_top_down_but_not_in_the_leaf() {
        let (tmp, m) = fake_v2();
        m.create("/capstan/pods/p1").unwrap();
        assert!(tmp.path().join("capstan/pods/p1").is_dir());
        for d in ["", "capstan/", "capstan/pods/"] {
            assert_eq!(
                read(tmp.path(), &format!("{d}cgroup.subtree_control")),
                "+cpu +cpuset +io +memory +pids",
                "{d}"
            );
        }
        assert!(!tmp
            .path()
            .join("capstan/pods/p1/cgroup.subtree_control")
            .exists());
        assert!(m.has_controller("io") && !m.has_controller("hugetlb"));
    }

    #[test]
    fn stats_from_v2_files() {
        let (tmp, m) = fake_v2();
        lay_out(
            tmp.path(),
            &[
                (
                    "c/cpu.stat",
                    "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
                ),
                ("c/memory.current", "8192\n"),
                (
                    "c/memory.stat",
                    "anon 4096\nfile 4096\ninactive_file 1024\npgfault 9\npgmajfault 1\n",
                ),
                (
                    "c/memory.events",
                    "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
                ),
                ("c/pids.current", "2\n"),
            ],
        );
        let s = m.stats("/c").unwrap();
        assert_eq!(s.cpu_usage_ns, Some(1_500_000));
        assert_eq!(s.memory_usage_bytes, Some(8192));
        assert_eq!(s.memory_working_set_bytes, Some(7168));
        assert_eq!(s.memory_rss_bytes, Some(4096));
        assert_eq!((s.page_faults, s.major_page_faults), (Some(9), Some(1)));
        assert_eq!(s.oom_kill_count, Some(1));
        assert_eq!(s.pids_current, Some(2));
        // A cgroup without controllers enabled has only what exists.
        lay_out(tmp.path(), &[("bare/cgroup.procs", "")]);
        let s = m.stats("/bare").unwrap();
        assert_eq!(
            (s.cpu_usage_ns, s.memory_usage_bytes, s.pids_current),
            (None, None, None)
        );
    }

    #[test]
    fn update_converts_like_runc() {
        let (tmp, m) = fake_v2();
        m.create("/c").unwrap();
        lay_out(tmp.path(), &[("c/memory.swap.max", "max\n")]);
        let r = LinuxContainerResources {
            cpu_shares: 1024,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            cpuset_mems: "0".into(),
            memory_limit_in_bytes: 100 << 20,
            memory_swap_limit_in_bytes: 100 << 20,
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            unified: [("memory.high".to_string(), "90000000".to_string())].into(),
            ..Default::default()
        };
        m.update("/c", &r).unwrap();
        assert_eq!(read(tmp.path(), "c/cpu.weight"), "39");
        assert_eq!(read(tmp.path(), "c/cpu.max"), "20000 100000");
        assert_eq!(read(tmp.path(), "c/cpuset.mems"), "0");
        assert_eq!(read(tmp.path(), "c/memory.max"), (100u64 << 20).to_string());
        assert_eq!(read(tmp.path(), "c/memory.swap.max"), "0");
        assert_eq!(read(tmp.path(), "c/memory.high"), "90000000");
        assert!(
            !tmp.path().join("c/hugetlb.2MB.max").exists(),
            "no hugetlb controller"
        );

        let bad = LinuxContainerResources {
            unified: [("../escape".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert!(m.update("/c", &bad).is_err());
    }

    #[test]
    fn value_conversions() {
        assert_eq!(cpu_max(0, 0), None);
        assert_eq!(cpu_max(-1, 0).as_deref(), Some("max"));
        assert_eq!(cpu_max(0, 50_000).as_deref(), Some("max 50000"));
        assert_eq!(cpu_max(25_000, 0).as_deref(), Some("25000"));
        assert_eq!(swap_max(0, 100).unwrap(), None);
        assert_eq!(swap_max(-1, 100).unwrap().as_deref(), Some("max"));
        assert_eq!(swap_max(300, 100).unwrap().as_deref(), Some("200"));
        assert!(swap_max(50, 100).is_err());
        assert!(swap_max(50, 0).is_err());
    }

    #[test]
    fn pids_and_move() {
        let (tmp, m) = fake_v2();
        m.create("/s").unwrap();
        m.move_pid("/s", 7).unwrap();
        assert_eq!(m.pids("/s").unwrap(), vec![7]);
        m.set_pids_limit("/s", Some(5)).unwrap();
        assert_eq!(read(tmp.path(), "s/pids.max"), "5");
        std::fs::remove_file(tmp.path().join("s/cgroup.procs")).unwrap();
        std::fs::remove_file(tmp.path().join("s/pids.max")).unwrap();
        m.remove("/s").unwrap();
        assert!(!tmp.path().join("s").exists());
        assert!(m.remove("").is_err());
    }
}
