//! `capstan uninstall`: removes a `capstan server` and every trace of it from the host, in the
//! order that lets each step clean up after the previous one:
//!
//! 1. the server process (its pidfile): SIGTERM, then SIGKILL after a grace period;
//! 2. every pod, through the built-in runtime itself (StopPodSandbox + RemovePodSandbox: the
//!    containers, supervisors, CNI DEL — the bridge plugin's NAT rules —, network namespaces,
//!    mounts and pod cgroups);
//! 3. a sweep for whatever a crash left behind: processes naming the data dir and their
//!    descendants, mounts under it, network namespaces on the node's podCIDR;
//! 4. the proxy's iptables chains (as `kube-proxy --cleanup`), the default CNI configuration the
//!    server wrote, the bridge, the kubelet's and runtime's cgroups (and the cgroup root when the
//!    server created it), and finally the data dir.
//!
//! Running it again, or on a data dir that does not exist, does nothing and succeeds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use cri::pb::runtime_service_server::RuntimeService;

use crate::server::layout::{HostRecord, Layout};

/// `capstan uninstall`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct UninstallArgs {
    /// The server's data dir.
    #[arg(long, default_value = "/var/lib/capstan")]
    pub data_dir: PathBuf,
}

pub async fn run(args: UninstallArgs) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&args.data_dir).context("--data-dir")?;
    if !data_dir.exists() {
        println!(
            "capstan uninstall: {} does not exist; nothing to do",
            data_dir.display()
        );
        return Ok(());
    }
    let layout = Layout::new(&data_dir);
    let record = HostRecord::load(&layout).unwrap_or_else(|| HostRecord {
        cni_conf_dir: "/etc/cni/net.d".into(),
        cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        cni_cache_dir: layout.agent_dir().join("cni-cache"),
        bridge: "cni0".into(),
        cgroup_root: "/".into(),
        ..Default::default()
    });
    stop_server(&layout);
    if let Err(e) = remove_pods(&layout, &record).await {
        tracing::warn!("removing pods through the runtime: {e:#}");
    }
    kill_processes_naming(&data_dir);
    unmount_under(&data_dir);
    if let Some(cidr) = &record.pod_cidr {
        delete_netns_in(cidr);
    }
    if let Err(e) = proxy::server::cleanup() {
        tracing::warn!("removing the proxy's iptables rules: {e:#}");
    }
    if let Some(file) = &record.cni_config_written {
        let _ = std::fs::remove_file(file);
    }
    if !record.bridge.is_empty() {
        let _ = Command::new("ip")
            .args(["link", "delete", &record.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
    remove_cgroups(&record);
    std::fs::remove_dir_all(&data_dir)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("removing {}", data_dir.display()))?;
    println!("capstan uninstall: removed {}", data_dir.display());
    Ok(())
}

/// SIGTERM to the server, SIGKILL if it is still there after 10 s.
fn stop_server(layout: &Layout) {
    let Some(pid) = crate::server::read_pid(&layout.pidfile()) else {
        return;
    };
    if !crate::server::is_capstan(pid) {
        return;
    }
    let nix_pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    while crate::server::is_capstan(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    if crate::server::is_capstan(pid) {
        let _ = nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGKILL);
        while crate::server::is_capstan(pid) && Instant::now() < until + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops and removes every pod sandbox of the server's runtime, in the runtime's own way.
async fn remove_pods(layout: &Layout, record: &HostRecord) -> anyhow::Result<()> {
    if !layout.runtime_root().exists() {
        return Ok(());
    }
    let config = cri::server::Config {
        root: layout.runtime_root(),
        socket: layout.kubelet_root().join("cri.sock"),
        registry_config_dir: None,
        cni_conf_dir: record.cni_conf_dir.clone(),
        cni_bin_dirs: record.cni_bin_dirs.clone(),
        cni_cache_dir: record.cni_cache_dir.clone(),
        supervisor_exe: std::env::current_exe()?,
        supervisors_cgroup: format!(
            "{}{}",
            record.cgroup_root.trim_end_matches('/'),
            cri::cgroups::SUPERVISORS_CGROUP
        ),
    };
    let (runtime, _images) = cri::server::open(&config).await?;
    let list = runtime
        .list_pod_sandbox(tonic::Request::new(Default::default()))
        .await
        .map_err(|s| anyhow::anyhow!("listing pods: {}", s.message()))?
        .into_inner();
    for sandbox in list.items {
        let id = sandbox.id.clone();
        if let Err(s) = runtime
            .stop_pod_sandbox(tonic::Request::new(cri::pb::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }))
            .await
        {
            tracing::warn!(sandbox = %id, "stopping: {}", s.message());
        }
        if let Err(s) = runtime
            .remove_pod_sandbox(tonic::Request::new(cri::pb::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }))
            .await
        {
            tracing::warn!(sandbox = %id, "removing: {}", s.message());
        }
    }
    Ok(())
}

/// SIGKILL to every process whose command line names `dir` (supervisors, a stuck server) and
/// their descendants, and waits until they are gone.
fn kill_processes_naming(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let mut parents = std::collections::HashMap::new();
    let mut ours = std::collections::HashSet::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.insert(pid, ppid);
            }
        }
        if let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                ours.insert(pid);
            }
        }
    }
    loop {
        let more: Vec<u32> = parents
            .iter()
            .filter(|(p, pp)| !ours.contains(*p) && ours.contains(*pp))
            .map(|(p, _)| *p)
            .collect();
        if more.is_empty() {
            break;
        }
        ours.extend(more);
    }
    for pid in &ours {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let until = Instant::now() + Duration::from_secs(5);
    while ours
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Deletes the pinned network namespaces (`/run/netns/cni-*`) that hold an address in `cidr`.
fn delete_netns_in(cidr: &str) {
    let Some(net) = parse_v4_cidr(cidr) else {
        return;
    };
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("cni-") {
            continue;
        }
        let Ok(out) = Command::new("ip")
            .args(["-n", &name, "-o", "-4", "addr"])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let ours = text.split_whitespace().any(|w| {
            w.split('/')
                .next()
                .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
                .is_some_and(|a| in_v4(net, a))
        });
        if ours {
            let _ = Command::new("ip").args(["netns", "delete", &name]).status();
        }
    }
}

fn parse_v4_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (a, p) = cidr.split_once('/')?;
    let a: std::net::Ipv4Addr = a.parse().ok()?;
    let p: u32 = p.parse().ok()?;
    let mask = if p == 0 {
        0
    } else {
        u32::MAX << (32 - p.min(32))
    };
    Some((u32::from(a) & mask, mask))
}

fn in_v4((net, mask): (u32, u32), a: std::net::Ipv4Addr) -> bool {
    u32::from(a) & mask == net
}

/// Removes the kubelet's (`kubepods`) and the runtime's (`capstan`) cgroups under the cgroup
/// root, deepest first, and the root itself when the server made it.
fn remove_cgroups(record: &HostRecord) {
    let root = record.cgroup_root.trim_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let base = if root.is_empty() {
            h.path()
        } else {
            h.path().join(root)
        };
        let mut tops = vec![base.join("kubepods"), base.join("capstan")];
        if !root.is_empty() && record.cgroup_root_created {
            tops.push(base.clone());
        }
        for top in tops {
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            // A cgroup whose last task just exited can be busy for a moment; one still in use
            // (a shared parent another runtime uses) stays.
            for d in dirs {
                for _ in 0..10 {
                    if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_membership() {
        let n = parse_v4_cidr("10.42.3.0/24").unwrap();
        assert!(in_v4(n, "10.42.3.7".parse().unwrap()));
        assert!(!in_v4(n, "10.42.4.7".parse().unwrap()));
    }
}
