//! Shared set-up for the kubelet crate's runtime tests (`runtime_backends`, `housekeeping`): the
//! test directory, a free pod subnet and its CNI config, root detection, and the cleanup of what an
//! earlier, killed run left behind (its directory through `scripts/containerd.sh stop`, its
//! cgroups).

#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

pub fn test_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CAPSTAN_TEST_DIR").unwrap_or_else(|_| "/var/lib/capstan-test".into()),
    )
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Directories of earlier runs whose process is gone (a run killed before it could clean up).
pub fn clean_stale(runs: &Path) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("bash")
                .arg(repo_dir().join("scripts/containerd.sh"))
                .arg("stop")
                .arg(e.path())
                .stdin(Stdio::null())
                .status();
            remove_cgroup_tree(&format!("/capstan-kubelet-test-{name}"));
        }
    }
}

/// A `10.x.y.` prefix of a /24 no route covers yet; `offset` spreads callers of one process.
pub fn free_subnet(offset: usize) -> Result<String> {
    let routes = Command::new("ip").args(["-4", "route"]).output()?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let taken: HashSet<String> = routes
        .split_whitespace()
        .filter_map(|w| {
            let o: Vec<&str> = w.split('/').next()?.split('.').collect();
            (o.len() == 4).then(|| format!("{}.{}.{}.", o[0], o[1], o[2]))
        })
        .collect();
    let seed = std::process::id() as usize * 11 + offset * 3;
    for i in 0..2000 {
        let v = (seed + i * 19) % 3000;
        let prefix = format!("10.{}.{}.", 120 + v / 250, v % 250 + 1);
        if !taken.contains(&prefix) {
            return Ok(prefix);
        }
    }
    bail!("no free 10.x.y.0/24 for the test network")
}

pub fn conflist(bridge: &str, prefix: &str, dir: &Path) -> String {
    let data_dir = dir.join("cni-networks");
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "capstan-kubelet-test",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{}",
        "ranges": [[{{ "subnet": "{prefix}0/24" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#,
        data_dir.display()
    )
}

pub fn remove_cgroup_tree(parent: &str) {
    fn collect(d: &Path, out: &mut Vec<PathBuf>) {
        if !d.is_dir() {
            return;
        }
        out.push(d.to_path_buf());
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect(&e.path(), out);
            }
        }
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    roots.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    );
    for root in roots {
        let mut dirs = Vec::new();
        collect(&root.join(parent.trim_start_matches('/')), &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}
