//! Pod start and memory per running pod through CRI: Capstan's built-in runtime (`capstan cri`)
//! against Debian's containerd 1.6 + runc, both started privately for this run by the CRI
//! conformance harness (`tests/cri/instance.rs`: own root, socket, CNI bridge + host-local +
//! portmap network, cgroup parent) and driven over their CRI v1 gRPC sockets the way the kubelet
//! drives them: RunPodSandbox, CreateContainer, StartContainer, then ContainerStatus until the
//! container is RUNNING. The workload is busybox `sleep 3600`, pulled before any timing.
//!
//! 1. **Sequential**: after one untimed warm-up pod per runtime, N pods (CAPSTAN_BENCH_PODS,
//!    default 20) are started one after the other, alternating between the runtimes (which one
//!    goes first alternates too), so background load on the machine hits both alike. Pods stay
//!    running, as on a node.
//! 2. **Memory per running pod**: the processes each runtime runs for its pods (Capstan: the
//!    pod's supervisor and the PID-namespace init it forks; containerd: `containerd-shim-runc-v2`
//!    and the sandbox ("pause") process) and the runtime's own process, read with only the
//!    warm-up pod running and again with the N pods of part 1 added. PSS and RSS are
//!    `/proc/<pid>/smaps_rollup` differences divided by N. USS is counted per set of processes,
//!    not per process (see `Pages`): a pod's USS is the memory only its processes map (averaged
//!    over the pods), the whole runtime's the memory only the runtime and all its pods' processes
//!    map (difference divided by N). The workload (`sleep 3600`) is the same on both sides and is
//!    not counted, nor is kernel memory (namespaces, veths, cgroups, page tables).
//! 3. **Concurrent**: C pods (CAPSTAN_BENCH_CONCURRENT, default 10) started at once on one
//!    runtime, then on the other; per-pod latencies and the wall time of the batch.
//!
//! Every pod is stopped and removed and both instances are stopped (their directories, bridges,
//! mounts, network namespaces and cgroups removed) when the bench ends, also after an error, a
//! panic or Ctrl-C; a run that was killed is cleaned up by the next one.
//!
//! Run: `cargo bench --bench cri_pod_start` (as root; needs the packages of
//! scripts/install-deps.sh; it runs scripts/test-images.sh itself).

#[path = "../tests/common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "../tests/cri/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../tests/cri/instance.rs"]
mod instance;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{processes, Proc};

use anyhow::{bail, Context, Result};
use futures::FutureExt;
use harness::{Ctx, BUSYBOX};
use instance::{Instance, Kind, Network};
use k8s_cri::v1 as pb;

/// The workload every pod runs.
const WORKLOAD: [&str; 2] = ["sleep", "3600"];
/// How long a container may take to be reported RUNNING after StartContainer returned.
const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);
/// Time given to both runtimes to settle (exit of runc, Go GC, lazy frees) before a snapshot.
const SETTLE: Duration = Duration::from_secs(3);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cri_pod_start: needs root (it runs pods); skipped");
        return;
    }
    let pods = env_usize("CAPSTAN_BENCH_PODS", 20);
    let concurrent = env_usize("CAPSTAN_BENCH_CONCURRENT", 10);
    prepare();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    if let Err(e) = rt.block_on(run(pods, concurrent)) {
        eprintln!("cri_pod_start: {e:#}");
        std::process::exit(1);
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// The test images and registries (idempotent), and leftovers of runs that were killed.
fn prepare() {
    let out = std::process::Command::new("bash")
        .arg(instance::repo_dir().join("scripts/test-images.sh"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running scripts/test-images.sh");
    assert!(
        out.status.success(),
        "scripts/test-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    instance::clean_stale_runs();
}

/// Starts both runtimes, runs the bench, and stops both whatever happened.
async fn run(pods: usize, concurrent: usize) -> Result<()> {
    eprintln!("starting capstan cri and containerd …");
    let capstan = Arc::new(Instance::start(Kind::Capstan, Network::Bridge).await?);
    let containerd = match Instance::start(Kind::Containerd, Network::Bridge).await {
        Ok(i) => Arc::new(i),
        Err(e) => {
            capstan.stop().await;
            return Err(e);
        }
    };
    let sides = [capstan, containerd];
    let body = AssertUnwindSafe(bench(&sides, pods, concurrent)).catch_unwind();
    let outcome = tokio::select! {
        r = body => r,
        _ = tokio::signal::ctrl_c() => Ok(Err(anyhow::anyhow!("interrupted"))),
    };
    eprintln!("stopping both runtimes …");
    for inst in &sides {
        inst.stop().await;
    }
    match outcome {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The latencies of one pod start.
#[derive(Clone, Copy, Debug)]
struct PodTimes {
    sandbox: Duration,
    create: Duration,
    start: Duration,
    /// From CreateContainer to ContainerStatus saying RUNNING.
    create_start: Duration,
    /// From RunPodSandbox to ContainerStatus saying RUNNING.
    total: Duration,
}

async fn bench(sides: &[Arc<Instance>; 2], pods: usize, concurrent: usize) -> Result<()> {
    // Part 1 and 2 on one set of pods; all of them are removed before part 3.
    let seq: Vec<Ctx> = sides
        .iter()
        .map(|i| Ctx::new(i.clone(), "bench_seq"))
        .collect();
    let result = sequential_and_memory(&seq, pods).await;
    for t in &seq {
        t.cleanup().await?;
    }
    result?;

    let mut batches = Vec::new();
    for inst in sides {
        let t = Ctx::new(inst.clone(), "bench_conc");
        eprintln!("{}: {concurrent} pods at once …", inst.kind.name());
        let started = Instant::now();
        let r = futures::future::join_all((0..concurrent).map(|i| start_pod(&t, format!("c{i}"))))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>();
        let wall = started.elapsed();
        t.cleanup().await?;
        batches.push((inst.kind, r?, wall));
    }
    println!();
    println!("### Pod start, {concurrent} pods at once (per pod; wall = whole batch)");
    println!();
    print_times(&batches[0].1, &batches[1].1);
    println!(
        "| wall time of the batch | {:.1} | | {:.1} | | {:.2} |",
        ms(batches[0].2),
        ms(batches[1].2),
        batches[0].2.as_secs_f64() / batches[1].2.as_secs_f64()
    );
    Ok(())
}

async fn sequential_and_memory(seq: &[Ctx], pods: usize) -> Result<()> {
    // Image pull and one warm-up pod per runtime: connections made, caches and pools filled.
    for t in seq {
        eprintln!("{}: pulling busybox, warm-up pod …", t.kind().name());
        t.ensure_image(BUSYBOX).await?;
        start_pod(t, "warmup".into()).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let before: Vec<MemSnapshot> = seq.iter().map(|t| MemSnapshot::take(&t.inst)).collect();

    eprintln!("{pods} pods one after the other on each runtime, interleaved …");
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..pods {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for s in order {
            times[s].push(start_pod(&seq[s], format!("p{i}")).await?);
        }
    }
    tokio::time::sleep(SETTLE).await;
    let after: Vec<MemSnapshot> = seq.iter().map(|t| MemSnapshot::take(&t.inst)).collect();

    println!("### Pod start, {pods} pods one after the other (pods stay running)");
    println!();
    print_times(&times[0], &times[1]);
    println!();
    println!(
        "### Memory per running pod ({pods} pods added to 1 running; KiB per pod; workload not counted)"
    );
    println!();
    print_memory(&before, &after, pods)?;
    Ok(())
}

/// RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus until RUNNING.
async fn start_pod(t: &Ctx, name: String) -> Result<PodTimes> {
    let pod_cfg = t.pod_config(&name);
    let cc = t.container_config("sleep", BUSYBOX, &WORKLOAD);
    let mut rt = t.rt();
    let t0 = Instant::now();
    let pod = t.run_pod(&pod_cfg).await?;
    let t1 = Instant::now();
    let id = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(cc),
            sandbox_config: Some(pod_cfg),
        })
        .await
        .with_context(|| format!("{}: CreateContainer in {name}", t.kind().name()))?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    rt.start_container(pb::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .with_context(|| format!("{}: StartContainer in {name}", t.kind().name()))?;
    let t3 = Instant::now();
    loop {
        let s = t.status(&id).await?;
        if s.state == pb::ContainerState::ContainerRunning as i32 {
            break;
        }
        if t3.elapsed() > RUNNING_TIMEOUT {
            bail!(
                "{}: container of {name} not RUNNING {RUNNING_TIMEOUT:?} after StartContainer: {s:?}",
                t.kind().name()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let t4 = Instant::now();
    Ok(PodTimes {
        sandbox: t1 - t0,
        create: t2 - t1,
        start: t3 - t2,
        create_start: t4 - t1,
        total: t4 - t0,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 (nearest rank: with fewer than 100 samples, the largest).
fn median_p99(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p99 = (v.len() * 99).div_ceil(100).max(1) - 1;
    (v[v.len() / 2], v[p99])
}

/// Picks one phase's latency out of a pod's.
type Phase = fn(&PodTimes) -> Duration;

fn print_times(capstan: &[PodTimes], containerd: &[PodTimes]) {
    println!(
        "| phase | capstan median ms | p99 ms | containerd median ms | p99 ms | capstan/containerd (median) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let phases: [(&str, Phase); 5] = [
        ("RunPodSandbox", |p| p.sandbox),
        ("CreateContainer", |p| p.create),
        ("StartContainer", |p| p.start),
        ("create+start (until RUNNING)", |p| p.create_start),
        ("total", |p| p.total),
    ];
    for (name, f) in phases {
        let (cm, cp) = median_p99(capstan.iter().map(f).collect());
        let (dm, dp) = median_p99(containerd.iter().map(f).collect());
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            ms(cm),
            ms(cp),
            ms(dm),
            ms(dp),
            cm.as_secs_f64() / dm.as_secs_f64()
        );
    }
}

/// Memory figures of one or more processes, in KiB (from smaps_rollup).
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    uss: i64,
    pss: i64,
    rss: i64,
}

impl Mem {
    fn read(pid: u32) -> Option<Mem> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let mut m = Mem::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(key), Some(kb)) = (it.next(), it.next().and_then(|v| v.parse::<i64>().ok()))
            else {
                continue;
            };
            match key {
                "Rss:" => m.rss += kb,
                "Pss:" => m.pss += kb,
                "Private_Clean:" | "Private_Dirty:" => m.uss += kb,
                _ => {}
            }
        }
        Some(m)
    }

    fn add(self, o: Mem) -> Mem {
        Mem {
            uss: self.uss + o.uss,
            pss: self.pss + o.pss,
            rss: self.rss + o.rss,
        }
    }

    fn sub(self, o: Mem) -> Mem {
        Mem {
            uss: self.uss - o.uss,
            pss: self.pss - o.pss,
            rss: self.rss - o.rss,
        }
    }

    fn per(self, n: usize) -> [f64; 3] {
        let n = n as f64;
        [
            self.uss as f64 / n,
            self.pss as f64 / n,
            self.rss as f64 / n,
        ]
    }
}

/// What one runtime instance runs, at one moment: its own process and, by kind, the processes
/// it runs for its pods (the workload excluded).
struct MemSnapshot {
    kind: Kind,
    runtime: Mem,
    /// kind of process → (count, summed memory)
    pod_procs: BTreeMap<String, (usize, Mem)>,
    /// KiB mapped by one pod's processes and by nothing else, per pod.
    pod_unique: Vec<i64>,
    /// KiB mapped by the runtime and its pods' processes together and by nothing else.
    set_unique: i64,
}

impl MemSnapshot {
    fn take(inst: &Instance) -> MemSnapshot {
        let procs = processes();
        let dir = format!("{}/", inst.dir.display());
        // Roots: Capstan's supervisors (`capstan supervise --dir DIR/…`), containerd's shims
        // (`containerd-shim-runc-v2 … -address DIR/containerd.sock`); then their descendants.
        let marker = match inst.kind {
            Kind::Capstan => " supervise ",
            Kind::Containerd => "containerd-shim",
        };
        let matches = |p: &Proc| p.cmdline.contains(marker) && p.cmdline.contains(&dir);
        let roots: Vec<u32> = procs
            .iter()
            .filter(|(_, p)| matches(p) && !procs.get(&p.ppid).is_some_and(matches))
            .map(|(pid, _)| *pid)
            .collect();
        let workload = WORKLOAD.join(" ");
        let mut pod_procs: BTreeMap<String, (usize, Mem)> = BTreeMap::new();
        let mut pod_unique = Vec::new();
        let mut set_pages = Pages::default();
        let kpagecount = std::fs::File::open("/proc/kpagecount").ok();
        for root in roots {
            let mut group = vec![root];
            let mut i = 0;
            while i < group.len() {
                let parent = group[i];
                group.extend(
                    procs
                        .iter()
                        .filter(|(_, p)| p.ppid == parent)
                        .map(|(pid, _)| *pid),
                );
                i += 1;
            }
            let mut pages = Pages::default();
            for pid in group {
                let p = &procs[&pid];
                if p.cmdline == workload {
                    continue;
                }
                let Some(m) = Mem::read(pid) else { continue };
                let label = label(inst.kind, p, procs.get(&p.ppid));
                let e = pod_procs.entry(label).or_default();
                e.0 += 1;
                e.1 = e.1.add(m);
                pages.add_process(pid);
            }
            pod_unique.push(pages.unique_kib(kpagecount.as_ref()));
            set_pages.merge(pages);
        }
        if let Some(pid) = inst.pid() {
            set_pages.add_process(pid);
        }
        MemSnapshot {
            kind: inst.kind,
            runtime: inst.pid().and_then(Mem::read).unwrap_or_default(),
            pod_procs,
            pod_unique,
            set_unique: set_pages.unique_kib(kpagecount.as_ref()),
        }
    }

    fn pod_total(&self) -> Mem {
        self.pod_procs
            .values()
            .fold(Mem::default(), |a, (_, m)| a.add(*m))
    }
}

/// The physical pages a set of processes maps (page frame number → how many of the set's page
/// table entries point at it), from `/proc/<pid>/pagemap` (root sees the frame numbers).
/// smaps' USS is per process: a page shared by a supervisor and the init it forked (copy on
/// write), or by two supervisors of the same binary, is "shared" there although nothing outside
/// the runtime maps it. Counting frames over a set of processes against the kernel's map count
/// (`/proc/kpagecount`) gives the memory that set alone holds: what goes away with it.
#[derive(Default)]
struct Pages(HashMap<u64, u64>);

impl Pages {
    const PAGE_KIB: i64 = 4;
    const PRESENT: u64 = 1 << 63;
    const PFN_MASK: u64 = (1 << 55) - 1;

    fn add_process(&mut self, pid: u32) {
        use std::os::unix::fs::FileExt;
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let Ok(pagemap) = std::fs::File::open(format!("/proc/{pid}/pagemap")) else {
            return;
        };
        let mut buf = vec![0u8; 8 * 4096];
        for line in maps.lines() {
            let Some((start, end)) = line
                .split(' ')
                .next()
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    Some((
                        u64::from_str_radix(a, 16).ok()?,
                        u64::from_str_radix(b, 16).ok()?,
                    ))
                })
            else {
                continue;
            };
            let mut page = start / 4096;
            let last = end / 4096;
            while page < last {
                let n = ((last - page) as usize).min(buf.len() / 8);
                let chunk = &mut buf[..n * 8];
                if pagemap.read_exact_at(chunk, page * 8).is_err() {
                    break;
                }
                for e in chunk.chunks_exact(8) {
                    let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
                    let pfn = e & Self::PFN_MASK;
                    if e & Self::PRESENT != 0 && pfn != 0 {
                        *self.0.entry(pfn).or_default() += 1;
                    }
                }
                page += n as u64;
            }
        }
    }

    fn merge(&mut self, other: Pages) {
        for (pfn, n) in other.0 {
            *self.0.entry(pfn).or_default() += n;
        }
    }

    /// KiB of the frames that no page table outside this set maps.
    fn unique_kib(&self, kpagecount: Option<&std::fs::File>) -> i64 {
        use std::os::unix::fs::FileExt;
        let Some(kpc) = kpagecount else { return 0 };
        let mut b = [0u8; 8];
        let pages = self
            .0
            .iter()
            .filter(|(pfn, n)| {
                kpc.read_exact_at(&mut b, **pfn * 8).is_ok() && u64::from_le_bytes(b) <= **n
            })
            .count();
        pages as i64 * Self::PAGE_KIB
    }
}

/// What a per-pod process is, for the report.
fn label(kind: Kind, p: &Proc, parent: Option<&Proc>) -> String {
    let first = p.cmdline.split(' ').next().unwrap_or("");
    let base = first.rsplit('/').next().unwrap_or(first);
    match kind {
        Kind::Capstan if p.cmdline.contains(" supervise ") => {
            if parent.is_some_and(|pp| pp.cmdline == p.cmdline) {
                "pod PID-namespace init (fork of the supervisor)".into()
            } else {
                "supervisor (`capstan supervise`)".into()
            }
        }
        Kind::Containerd if base.starts_with("containerd-shim") => base.to_string(),
        Kind::Containerd if p.cmdline.contains("sleep 2147483647") => {
            "sandbox (pause) process: busybox `sleep 2147483647`".into()
        }
        _ => format!("other: `{}`", p.cmdline),
    }
}

fn print_memory(before: &[MemSnapshot], after: &[MemSnapshot], pods: usize) -> Result<()> {
    for snap in after {
        let count: usize = snap.pod_procs.values().map(|(n, _)| n).sum();
        if count == 0 || snap.pod_unique.len() != pods + 1 {
            bail!(
                "{}: found {} pod process groups, want {}",
                snap.kind.name(),
                snap.pod_unique.len(),
                pods + 1
            );
        }
    }
    let n = pods as f64;
    let row = |s: usize| -> [[f64; 3]; 3] {
        let (b, a) = (&before[s], &after[s]);
        let procs = a.pod_total().sub(b.pod_total()).per(pods);
        let runtime = a.runtime.sub(b.runtime).per(pods);
        let group_uss = a.pod_unique.iter().sum::<i64>() as f64 / a.pod_unique.len() as f64;
        let set_uss = (a.set_unique - b.set_unique) as f64 / n;
        [
            [group_uss, procs[1], procs[2]],
            [runtime[0], runtime[1], runtime[2]],
            [set_uss, procs[1] + runtime[1], procs[2] + runtime[2]],
        ]
    };
    let (c, d) = (row(0), row(1));
    let names = [
        "the pod's processes (capstan: supervisor + its PID-namespace init; containerd: shim + pause)",
        "growth of the runtime process (`capstan cri` / `containerd`)",
        "**whole runtime, per pod added**",
    ];
    println!(
        "| KiB per pod | capstan USS | PSS | RSS | containerd USS | PSS | RSS | capstan/containerd USS | PSS | RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, name) in names.iter().enumerate() {
        let (c, d) = (c[i], d[i]);
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            c[0],
            c[1],
            c[2],
            d[0],
            d[1],
            d[2],
            ratio(c[0], d[0]),
            ratio(c[1], d[1]),
            ratio(c[2], d[2]),
        );
    }
    println!();
    println!(
        "USS of the pod's processes: pages only they map (average over the {} pods); of the runtime \
         process: its smaps USS difference; of the whole runtime: pages only the runtime and its \
         pods' processes map, difference. PSS and RSS: smaps differences. All divided by {pods}.",
        pods + 1
    );
    println!();
    println!(
        "Processes with {} pods running (smaps_rollup, average per process, KiB):",
        pods + 1
    );
    println!();
    println!("| runtime | process | count | USS | PSS | RSS |");
    println!("|---|---|---:|---:|---:|---:|");
    for snap in after {
        for (label, (n, m)) in &snap.pod_procs {
            let [u, p, r] = m.per(*n);
            println!(
                "| {} | {label} | {n} | {u:.0} | {p:.0} | {r:.0} |",
                snap.kind.name()
            );
        }
        let name = match snap.kind {
            Kind::Capstan => "`capstan cri`",
            Kind::Containerd => "`containerd`",
        };
        if let Some(b) = before.iter().find(|b| b.kind == snap.kind) {
            let [u, p, r] = b.runtime.per(1);
            println!(
                "| {} | {name}, 1 pod running | 1 | {u:.0} | {p:.0} | {r:.0} |",
                snap.kind.name()
            );
        }
        let [u, p, r] = snap.runtime.per(1);
        println!(
            "| {} | {name}, {} pods running | 1 | {u:.0} | {p:.0} | {r:.0} |",
            snap.kind.name(),
            pods + 1
        );
    }
    for snap in after {
        let unexpected: Vec<&String> = snap
            .pod_procs
            .keys()
            .filter(|k| k.starts_with("other"))
            .collect();
        if !unexpected.is_empty() {
            eprintln!(
                "note: {} runs processes the bench did not expect (counted): {unexpected:?}",
                snap.kind.name()
            );
        }
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> String {
    if b.abs() < f64::EPSILON {
        "–".into()
    } else {
        format!("{:.2}", a / b)
    }
}
