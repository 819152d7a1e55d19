//! The stats provider (upstream's `pkg/kubelet/stats`, the CRI stats provider): the one place
//! where the node's and the pods' resource usage is gathered, read by `/stats/summary` (as the
//! `stats/v1alpha1` [`Summary`]) and `/metrics/resource` (rendered from the same summary, as
//! upstream's resource metrics collector does).
//!
//! - Node: CPU from `/proc/stat` (busy ticks of all CPUs; USER_HZ is 100 on every Linux ABI),
//!   memory from `/proc/meminfo` (working set = used − inactive file pages, as cAdvisor computes
//!   it for the root cgroup), network from `/proc/net/dev` (the default route's interface first),
//!   the root dir's filesystem (`statvfs`), the runtime's image filesystem (CRI ImageFsInfo),
//!   rlimit from `pid_max` and `/proc/loadavg`.
//! - Pods: the ready sandboxes (CRI ListPodSandbox: name, namespace, UID, start time), their
//!   running containers (ListContainers: start time = creation time, as upstream's CRI provider)
//!   with the runtime's ContainerStats (cpu, memory, writable layer) and the size of their log
//!   directory. Pod CPU and memory are the sum of the containers' (the runtime-neutral way: both
//!   backends report container stats, not every one reports sandbox stats).
//! - `usageNanoCores` is a rate, so each call compares the cumulative CPU time with the previous
//!   call's sample (kept per container, pod and the node, at least a second apart) as upstream's
//!   CRI provider does with its cpu usage cache; the first call has none.

pub mod v1alpha1;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cri::pb;
use parking_lot::Mutex;

use crate::plan::labels;
use crate::runtime::Runtime;
pub use v1alpha1::Summary;
use v1alpha1::{
    ContainerStats, CpuStats, FsStats, InterfaceStats, MemoryStats, NetworkStats, NodeStats,
    PodReference, PodStats, RlimitStats, RuntimeStats, Time,
};

/// Nanoseconds per USER_HZ tick (100 Hz).
const NS_PER_TICK: u64 = 10_000_000;
/// The least time between two CPU samples a rate is kept over.
const MIN_RATE_WINDOW_NS: i64 = 1_000_000_000;

/// Failures to gather stats.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("failed to list pod stats: {0}")]
    Runtime(#[from] tonic::Status),
}

/// The node's and its pods' usage.
pub struct StatsProvider {
    runtime: Runtime,
    node_name: String,
    root_dir: PathBuf,
    pod_logs_dir: PathBuf,
    proc_dir: PathBuf,
    rates: CpuRates,
}

impl StatsProvider {
    pub fn new(runtime: Runtime, node_name: &str, root_dir: &Path, pod_logs_dir: &Path) -> Self {
        StatsProvider {
            runtime,
            node_name: node_name.to_string(),
            root_dir: root_dir.to_path_buf(),
            pod_logs_dir: pod_logs_dir.to_path_buf(),
            proc_dir: PathBuf::from("/proc"),
            rates: CpuRates::default(),
        }
    }

    /// The summary of the node and every pod with a ready sandbox.
    pub async fn summary(&self) -> Result<Summary, StatsError> {
        let rt = &self.runtime;
        let sandboxes = rt
            .list_pod_sandbox(Some(pb::PodSandboxFilter {
                state: Some(pb::PodSandboxStateValue {
                    state: pb::PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }))
            .await?;
        let containers = rt
            .list_containers(Some(pb::ContainerFilter {
                state: Some(pb::ContainerStateValue {
                    state: pb::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }))
            .await?;
        let stats = rt.list_container_stats(None).await?;
        let image_fs = rt.image_fs_info().await.ok();
        let now = now_ns();
        let logs_fs = fs_capacity(&self.pod_logs_dir, now);
        let pods = build_pods(
            &sandboxes,
            &containers,
            &stats,
            &self.rates,
            logs_fs.as_ref(),
            |pod, container| {
                let dir = self
                    .pod_logs_dir
                    .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
                    .join(container);
                dir_usage(&dir)
            },
        );
        let node = self.node_stats(now, image_fs);
        self.rates.retain_seen();
        Ok(Summary { node, pods })
    }

    fn node_stats(&self, now: i64, image_fs: Option<pb::ImageFsInfoResponse>) -> NodeStats {
        let read = |name: &str| std::fs::read_to_string(self.proc_dir.join(name)).ok();
        let time = Time::from_ns(now);
        let proc_stat = read("stat")
            .map(|s| parse_proc_stat(&s))
            .unwrap_or_default();
        let cpu = proc_stat.cpu_usage_ns.map(|usage| CpuStats {
            time,
            usage_nano_cores: self.rates.nano_cores("node", now, usage),
            usage_core_nano_seconds: Some(usage),
        });
        let memory = read("meminfo").and_then(|m| node_memory(&parse_meminfo(&m), time));
        let network = read("net/dev").map(|dev| {
            let interfaces = parse_net_dev(&dev);
            let default = read("net/route")
                .and_then(|r| default_route_interface(&r))
                .and_then(|name| interfaces.iter().find(|i| i.name == name).cloned())
                .unwrap_or_default();
            NetworkStats {
                time,
                default,
                interfaces,
            }
        });
        let rlimit = RlimitStats {
            time,
            max_pid: read("sys/kernel/pid_max").and_then(|s| s.trim().parse().ok()),
            num_of_running_processes: read("loadavg").and_then(|s| parse_loadavg_procs(&s)),
        };
        let image_fs = image_fs.and_then(|r| r.image_filesystems.into_iter().next());
        let image_fs = image_fs.map(|u| {
            let mount = u
                .fs_id
                .as_ref()
                .map(|f| f.mountpoint.clone())
                .unwrap_or_default();
            let mut fs = fs_capacity(Path::new(&mount), now).unwrap_or(FsStats {
                time,
                ..Default::default()
            });
            fs.used_bytes = u.used_bytes.map(|v| v.value);
            fs.inodes_used = u.inodes_used.map(|v| v.value);
            fs
        });
        NodeStats {
            node_name: self.node_name.clone(),
            system_containers: Vec::new(),
            start_time: Time(
                chrono::DateTime::from_timestamp(proc_stat.boot_time.unwrap_or(0), 0)
                    .unwrap_or_default(),
            ),
            cpu,
            memory,
            network,
            fs: fs_capacity(&self.root_dir, now),
            runtime: Some(RuntimeStats {
                container_fs: image_fs.clone(),
                image_fs,
            }),
            rlimit: Some(rlimit),
            swap: None,
        }
    }
}

/// The pods' stats from the runtime's lists (pure but for `log_usage`, which measures a
/// container's log directory: bytes and inodes).
pub fn build_pods(
    sandboxes: &[pb::PodSandbox],
    containers: &[pb::Container],
    stats: &[pb::ContainerStats],
    rates: &CpuRates,
    logs_fs: Option<&FsStats>,
    log_usage: impl Fn(&PodReference, &str) -> Option<(u64, u64)>,
) -> Vec<PodStats> {
    let stats_by_id: HashMap<&str, &pb::ContainerStats> = stats
        .iter()
        .filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s)))
        .collect();
    let mut pods: BTreeMap<PodReference, PodStats> = BTreeMap::new();
    let mut sandbox_uid: HashMap<&str, PodReference> = HashMap::new();
    for sb in sandboxes {
        let Some(m) = sb.metadata.as_ref() else {
            continue;
        };
        let pod_ref = PodReference {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
        };
        sandbox_uid.insert(sb.id.as_str(), pod_ref.clone());
        let entry = pods.entry(pod_ref.clone()).or_insert_with(|| PodStats {
            pod_ref,
            start_time: Time::from_ns(sb.created_at),
            ..Default::default()
        });
        // The oldest ready sandbox of the pod is when its stats began.
        if sb.created_at < entry.start_time.0.timestamp_nanos_opt().unwrap_or(i64::MAX) {
            entry.start_time = Time::from_ns(sb.created_at);
        }
    }
    for c in containers {
        if c.state != pb::ContainerState::ContainerRunning as i32 {
            continue;
        }
        // A container of a sandbox that is not ready is not counted (upstream lists pods by
        // their ready sandboxes).
        let Some(pod_ref) = sandbox_uid.get(c.pod_sandbox_id.as_str()).cloned() else {
            continue;
        };
        let name = c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        let s = stats_by_id.get(c.id.as_str()).copied();
        let cpu = s.and_then(|s| s.cpu.as_ref()).map(|u| {
            let usage = u.usage_core_nano_seconds.as_ref().map(|v| v.value);
            CpuStats {
                time: Time::from_ns(u.timestamp),
                usage_nano_cores: u
                    .usage_nano_cores
                    .as_ref()
                    .map(|v| v.value)
                    .or_else(|| usage.and_then(|v| rates.nano_cores(&c.id, u.timestamp, v))),
                usage_core_nano_seconds: usage,
            }
        });
        let memory = s.and_then(|s| s.memory.as_ref()).map(|m| MemoryStats {
            time: Time::from_ns(m.timestamp),
            available_bytes: m.available_bytes.as_ref().map(|v| v.value),
            usage_bytes: m.usage_bytes.as_ref().map(|v| v.value),
            working_set_bytes: m.working_set_bytes.as_ref().map(|v| v.value),
            rss_bytes: m.rss_bytes.as_ref().map(|v| v.value),
            page_faults: m.page_faults.as_ref().map(|v| v.value),
            major_page_faults: m.major_page_faults.as_ref().map(|v| v.value),
        });
        let rootfs = s.and_then(|s| s.writable_layer.as_ref()).map(|w| FsStats {
            time: Time::from_ns(w.timestamp),
            used_bytes: w.used_bytes.as_ref().map(|v| v.value),
            inodes_used: w.inodes_used.as_ref().map(|v| v.value),
            ..logs_fs.cloned().unwrap_or_default()
        });
        let logs = log_usage(&pod_ref, &name).map(|(bytes, inodes)| FsStats {
            used_bytes: Some(bytes),
            inodes_used: Some(inodes),
            ..logs_fs.cloned().unwrap_or_default()
        });
        if let Some(p) = pods.get_mut(&pod_ref) {
            p.containers.push(ContainerStats {
                name,
                start_time: Time::from_ns(c.created_at),
                cpu,
                memory,
                rootfs,
                logs,
                swap: None,
            });
        }
    }
    let mut out: Vec<PodStats> = pods.into_values().collect();
    for p in &mut out {
        p.containers.sort_by(|a, b| a.name.cmp(&b.name));
        let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> Option<u64> {
            let vals: Vec<u64> = p.containers.iter().filter_map(f).collect();
            (!vals.is_empty()).then(|| vals.iter().sum())
        };
        let latest = |f: &dyn Fn(&ContainerStats) -> Option<Time>| -> Time {
            p.containers
                .iter()
                .filter_map(f)
                .max_by_key(|t| t.0)
                .unwrap_or_default()
        };
        let cpu_usage = sum(&|c| c.cpu.as_ref()?.usage_core_nano_seconds);
        let cpu_time = latest(&|c| c.cpu.as_ref().map(|x| x.time));
        let cpu = cpu_usage.map(|usage| CpuStats {
            time: cpu_time,
            usage_nano_cores: rates.nano_cores(
                &format!("pod/{}", p.pod_ref.uid),
                cpu_time.0.timestamp_nanos_opt().unwrap_or(0),
                usage,
            ),
            usage_core_nano_seconds: Some(usage),
        });
        let memory = sum(&|c| c.memory.as_ref()?.working_set_bytes).map(|ws| MemoryStats {
            time: latest(&|c| c.memory.as_ref().map(|x| x.time)),
            working_set_bytes: Some(ws),
            usage_bytes: sum(&|c| c.memory.as_ref()?.usage_bytes),
            rss_bytes: sum(&|c| c.memory.as_ref()?.rss_bytes),
            page_faults: sum(&|c| c.memory.as_ref()?.page_faults),
            major_page_faults: sum(&|c| c.memory.as_ref()?.major_page_faults),
            available_bytes: None,
        });
        let used = sum(&|c| {
            let r = c.rootfs.as_ref().and_then(|f| f.used_bytes);
            let l = c.logs.as_ref().and_then(|f| f.used_bytes);
            (r.is_some() || l.is_some()).then(|| r.unwrap_or(0) + l.unwrap_or(0))
        });
        p.ephemeral_storage = used.map(|u| FsStats {
            time: cpu_time,
            used_bytes: Some(u),
            inodes_used: sum(&|c| {
                Some(
                    c.rootfs.as_ref().and_then(|f| f.inodes_used).unwrap_or(0)
                        + c.logs.as_ref().and_then(|f| f.inodes_used).unwrap_or(0),
                )
            }),
            ..logs_fs.cloned().unwrap_or_default()
        });
        p.cpu = cpu;
        p.memory = memory;
    }
    out
}

/// The previous CPU sample per key (container id, `pod/<uid>`, `node`), for usageNanoCores.
#[derive(Default)]
pub struct CpuRates {
    samples: Mutex<HashMap<String, Sample>>,
}

#[derive(Clone, Copy)]
struct Sample {
    ts_ns: i64,
    usage_ns: u64,
    seen: bool,
}

impl CpuRates {
    /// The rate since the kept sample (`None` without one, or when the counter went back: a
    /// restarted container). The new sample replaces the kept one once it is a second newer.
    pub fn nano_cores(&self, key: &str, ts_ns: i64, usage_ns: u64) -> Option<u64> {
        let mut samples = self.samples.lock();
        let new = Sample {
            ts_ns,
            usage_ns,
            seen: true,
        };
        let Some(prev) = samples.get_mut(key) else {
            samples.insert(key.to_string(), new);
            return None;
        };
        prev.seen = true;
        let dt = ts_ns - prev.ts_ns;
        let rate = if dt > 0 && usage_ns >= prev.usage_ns {
            Some(((usage_ns - prev.usage_ns) as u128 * 1_000_000_000 / dt as u128) as u64)
        } else {
            None
        };
        if dt >= MIN_RATE_WINDOW_NS || usage_ns < prev.usage_ns || dt < 0 {
            *prev = new;
        }
        rate
    }

    /// Forgets the keys no call asked about since the last sweep (gone containers and pods).
    fn retain_seen(&self) {
        let mut samples = self.samples.lock();
        samples.retain(|_, s| std::mem::take(&mut s.seen));
    }
}

/// What `/proc/stat` says.
#[derive(Debug, Default, PartialEq)]
pub struct ProcStat {
    /// Busy time of all CPUs (user, nice, system, irq, softirq, steal), in nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    /// Boot time, seconds since the epoch.
    pub boot_time: Option<i64>,
}

pub fn parse_proc_stat(text: &str) -> ProcStat {
    let mut out = ProcStat::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<u64> = f.filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal (guest time is within user).
                if v.len() >= 8 {
                    let busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
                    out.cpu_usage_ns = Some(busy * NS_PER_TICK);
                }
            }
            Some("btime") => out.boot_time = f.next().and_then(|x| x.parse().ok()),
            _ => {}
        }
    }
    out
}

/// `/proc/meminfo` values in bytes, by key.
pub fn parse_meminfo(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let scale = if parts.next() == Some("kB") { 1024 } else { 1 };
            Some((k.trim().to_string(), n * scale))
        })
        .collect()
}

/// The node's memory as cAdvisor reports the root cgroup: usage = total − free, working set =
/// usage − inactive file pages, available = total − working set.
pub fn node_memory(m: &HashMap<String, u64>, time: Time) -> Option<MemoryStats> {
    let total = *m.get("MemTotal")?;
    let free = *m.get("MemFree")?;
    let usage = total.saturating_sub(free);
    let ws = usage.saturating_sub(m.get("Inactive(file)").copied().unwrap_or(0));
    Some(MemoryStats {
        time,
        available_bytes: Some(total.saturating_sub(ws)),
        usage_bytes: Some(usage),
        working_set_bytes: Some(ws),
        rss_bytes: m.get("AnonPages").copied(),
        page_faults: None,
        major_page_faults: None,
    })
}

/// Interfaces of `/proc/net/dev` (loopback left out, as cAdvisor does).
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 16 {
                return None;
            }
            Some(InterfaceStats {
                name: name.to_string(),
                rx_bytes: Some(v[0]),
                rx_errors: Some(v[2]),
                tx_bytes: Some(v[8]),
                tx_errors: Some(v[10]),
            })
        })
        .collect()
}

/// The interface of the default route in `/proc/net/route`.
pub fn default_route_interface(text: &str) -> Option<String> {
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    })
}

/// The number of processes (scheduling entities) from `/proc/loadavg` (`0.1 0.2 0.3 2/345 …`).
pub fn parse_loadavg_procs(text: &str) -> Option<i64> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Capacity, availability and inodes of the filesystem holding `path`.
fn fs_capacity(path: &Path, now: i64) -> Option<FsStats> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = st.fragment_size();
    let capacity = st.blocks() * frag;
    Some(FsStats {
        time: Time::from_ns(now),
        available_bytes: Some(st.blocks_available() * frag),
        capacity_bytes: Some(capacity),
        used_bytes: Some(capacity.saturating_sub(st.blocks_free() * frag)),
        inodes_free: Some(st.files_free()),
        inodes: Some(st.files()),
        inodes_used: Some(st.files().saturating_sub(st.files_free())),
    })
}

/// Bytes and inodes under `dir` (not following symlinks); `None` when it does not exist.
fn dir_usage(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir).ok()?;
    let mut bytes = meta.blocks() * 512;
    let mut inodes = 1;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some((bytes, inodes))
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time_and_boot_time() {
        let s = parse_proc_stat(
            "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nbtime 1700000000\n",
        );
        assert_eq!(
            s.cpu_usage_ns,
            Some((100 + 5 + 50 + 3 + 2 + 1) * NS_PER_TICK)
        );
        assert_eq!(s.boot_time, Some(1_700_000_000));
    }

    #[test]
    fn node_memory_working_set_leaves_out_inactive_file() {
        let m = parse_meminfo(
            "MemTotal:       1000 kB\nMemFree:         200 kB\nInactive(file):  100 kB\nAnonPages: 300 kB\n",
        );
        let mem = node_memory(&m, Time::default()).unwrap();
        assert_eq!(mem.usage_bytes, Some(800 * 1024));
        assert_eq!(mem.working_set_bytes, Some(700 * 1024));
        assert_eq!(mem.available_bytes, Some(300 * 1024));
        assert_eq!(mem.rss_bytes, Some(300 * 1024));
    }

    #[test]
    fn network_and_processes() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n    lo: 10 1 0 0 0 0 0 0 10 1 0 0 0 0 0 0\n  eth0: 500 5 1 0 0 0 0 0 700 7 2 0 0 0 0 0\n";
        let i = parse_net_dev(dev);
        assert_eq!(i.len(), 1);
        assert_eq!(
            (i[0].rx_bytes, i[0].rx_errors, i[0].tx_bytes, i[0].tx_errors),
            (Some(500), Some(1), Some(700), Some(2))
        );
        let route =
            "Iface\tDestination\tGateway\nbr0\t0000FEA9\t00000000\neth0\t00000000\t0101A8C0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(
            parse_loadavg_procs("0.00 0.01 0.05 2/345 6789\n"),
            Some(345)
        );
    }

    #[test]
    fn cpu_rates_need_a_previous_sample_a_second_apart() {
        let r = CpuRates::default();
        assert_eq!(r.nano_cores("c", 0, 0), None);
        // Half a core over half a second; the first sample is kept.
        assert_eq!(
            r.nano_cores("c", 500_000_000, 250_000_000),
            Some(500_000_000)
        );
        // Still against the first sample; then replaced.
        assert_eq!(
            r.nano_cores("c", 2_000_000_000, 2_000_000_000),
            Some(1_000_000_000)
        );
        assert_eq!(
            r.nano_cores("c", 3_000_000_000, 2_100_000_000),
            Some(100_000_000)
        );
        // A restarted container's counter goes back: no rate, and a new start.
        assert_eq!(r.nano_cores("c", 4_000_000_000, 10), None);
        assert_eq!(r.nano_cores("c", 5_000_000_000, 10 + 1_000), Some(1_000));
        r.retain_seen();
        r.retain_seen();
        assert_eq!(r.nano_cores("c", 6_000_000_000, 20_000), None, "forgotten");
    }

    fn sandbox(id: &str, uid: &str, created: i64) -> pb::PodSandbox {
        pb::PodSandbox {
            id: id.into(),
            metadata: Some(pb::PodSandboxMetadata {
                name: format!("pod-{uid}"),
                namespace: "ns".into(),
                uid: uid.into(),
                attempt: 0,
            }),
            created_at: created,
            state: pb::PodSandboxState::SandboxReady as i32,
            ..Default::default()
        }
    }

    fn container(id: &str, sandbox: &str, name: &str, state: pb::ContainerState) -> pb::Container {
        pb::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            labels: [(labels::CONTAINER_NAME.to_string(), name.to_string())].into(),
            created_at: 1_000_000_000,
            state: state as i32,
            ..Default::default()
        }
    }

    fn stats(id: &str, ts: i64, cpu: u64, ws: u64) -> pb::ContainerStats {
        pb::ContainerStats {
            attributes: Some(pb::ContainerAttributes {
                id: id.into(),
                ..Default::default()
            }),
            cpu: Some(pb::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: Some(pb::UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: Some(pb::MemoryUsage {
                timestamp: ts,
                working_set_bytes: Some(pb::UInt64Value { value: ws }),
                ..Default::default()
            }),
            writable_layer: Some(pb::FilesystemUsage {
                timestamp: ts,
                used_bytes: Some(pb::UInt64Value { value: 4096 }),
                inodes_used: Some(pb::UInt64Value { value: 2 }),
                ..Default::default()
            }),
            swap: None,
        }
    }

    #[test]
    fn pods_sum_their_running_containers() {
        use pb::ContainerState::*;
        let sandboxes = [sandbox("s1", "u1", 5), sandbox("s2", "u2", 7)];
        let containers = [
            container("a", "s1", "app", ContainerRunning),
            container("b", "s1", "side", ContainerRunning),
            container("old", "s1", "app", ContainerExited),
            container("orphan", "gone", "x", ContainerRunning),
        ];
        let rates = CpuRates::default();
        let logs = |_: &PodReference, c: &str| (c == "app").then_some((8192, 3));
        let first = [
            stats("a", 1_000_000_000, 100, 10),
            stats("b", 1_000_000_000, 50, 5),
        ];
        let pods = build_pods(&sandboxes, &containers, &first, &rates, None, logs);
        assert_eq!(pods.len(), 2);
        let p = &pods[0];
        assert_eq!(p.pod_ref.uid, "u1");
        assert_eq!(p.start_time, Time::from_ns(5));
        let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["app", "side"]);
        assert_eq!(p.cpu.as_ref().unwrap().usage_core_nano_seconds, Some(150));
        assert_eq!(p.cpu.as_ref().unwrap().usage_nano_cores, None);
        assert_eq!(p.memory.as_ref().unwrap().working_set_bytes, Some(15));
        assert_eq!(
            p.containers[0].logs.as_ref().unwrap().used_bytes,
            Some(8192)
        );
        assert_eq!(
            p.ephemeral_storage.as_ref().unwrap().used_bytes,
            Some(4096 + 8192 + 4096)
        );
        assert!(pods[1].containers.is_empty() && pods[1].cpu.is_none());
        // A second later: rates for containers and the pod.
        let second = [
            stats("a", 2_000_000_000, 100 + 500_000_000, 10),
            stats("b", 2_000_000_000, 50 + 250_000_000, 5),
        ];
        let pods = build_pods(&sandboxes, &containers, &second, &rates, None, logs);
        let p = &pods[0];
        assert_eq!(
            p.containers[0].cpu.as_ref().unwrap().usage_nano_cores,
            Some(500_000_000)
        );
        assert_eq!(p.cpu.as_ref().unwrap().usage_nano_cores, Some(750_000_000));
    }
}
