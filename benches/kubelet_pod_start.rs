//! The kubelet end to end: `capstan kubelet` with its built-in runtime (in-process) against the
//! same kubelet on Debian's containerd 1.6 + runc (`--container-runtime-endpoint`), both joined to
//! one apiserver-lite in the same run (`tests/common`: `ApiServer`, `Node`), each node with its
//! own root dir, CNI bridge + host-local + portmap network and cgroup root. The workload is
//! busybox, pulled by an untimed warm-up pod on each node before anything is measured
//! (`imagePullPolicy: IfNotPresent`, so no pod pulls again).
//!
//! 1. **Pod start**: N pods (CAPSTAN_BENCH_BATCHES, default `1,30,100`) are created at once
//!    (parallel POSTs, one thread per pod released by a barrier); a pod's latency runs from just
//!    before its POST to the moment a watcher (label selector of the round) sees its Ready
//!    condition turn True. N = 1 is repeated CAPSTAN_BENCH_SINGLE times (default 20), alternating
//!    between the runtimes; the larger batches run once per runtime. Pods are deleted after each
//!    round and the bench waits until they are gone from the API and their supervisors / shims
//!    have exited. The API's own timestamps (creationTimestamp, the Ready condition's
//!    lastTransitionTime; whole seconds) are printed as a cross-check.
//!    **CNI time apart**: both nodes get a CNI bin dir of small wrapper scripts (one per plugin:
//!    bridge, host-local, portmap, loopback) that note start and end of each call and run the real
//!    plugin from /usr/lib/cni; the built-in runtime gets it as `--cni-bin-dir`, containerd through
//!    `CAPSTAN_CNI_BIN_DIR` (scripts/containerd.sh). A pod's CNI time is the union of the ADD calls
//!    for its sandbox (bridge runs host-local inside its own call).
//! 2. **Resources**: RSS, PSS (smaps_rollup) and CPU (utime + stime + cutime + cstime deltas of
//!    /proc/<pid>/stat over CAPSTAN_BENCH_WINDOW seconds, default 30) at idle (node Ready, no
//!    pods; both nodes in the same window) and with the 100 pods of the largest batch running
//!    (one node at a time). Built-in: the kubelet (which hosts the runtime) and the pod supervisors
//!    (with the PID-namespace init each forks); containerd: the kubelet, containerd, the shims and
//!    the sandbox ("pause") processes. The workload is not counted.
//! 3. **Container exit → API**: CAPSTAN_BENCH_EXITS pods (default 30, `restartPolicy: Never`,
//!    `sleep <unique number>`) run to Ready; then, one at a time, the bench SIGKILLs a pod's
//!    container process from the host and measures until the watcher sees the container's
//!    `state.terminated`. The container's `finishedAt` (whole seconds) is checked against the kill.
//!
//! Both nodes (kubelet, runtime, pods, bridge, cgroups, directories) and the API server are
//! stopped by guards, also after a panic. Progress goes to stderr, markdown tables to stdout.
//!
//! Run: `cargo bench --bench kubelet_pod_start` (as root; needs the packages of
//! scripts/install-deps.sh; the harness runs scripts/test-images.sh itself).
//! CAPSTAN_BENCH_ONLY=start,resources,exit picks parts; CAPSTAN_BENCH_LOGS=DIR keeps both
//! kubelets' logs there (`kubelet-builtin.log`, `kubelet-containerd.log`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kubelet::{is_ready, Node, NodeOptions, NodeRuntime};
use common::{eventually, http_raw, processes, ApiServer, Proc, WatchStream};
use serde_json::{json, Value};

/// The CNI plugins the nodes' network uses (loopback: the runtime's own `lo` network).
const CNI_PLUGINS: [&str; 4] = ["bridge", "host-local", "portmap", "loopback"];
/// Where Debian keeps the real plugins.
const CNI_REAL: &str = "/usr/lib/cni";
/// Kernel clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;
/// How long a round may take before the bench gives up.
const ROUND_TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("kubelet_pod_start: needs root (it runs pods); skipped");
        return;
    }
    let only = std::env::var("CAPSTAN_BENCH_ONLY").unwrap_or_default();
    let part = |p: &str| only.is_empty() || only.split(',').any(|o| o.trim() == p);
    let batches: Vec<usize> = std::env::var("CAPSTAN_BENCH_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 30, 100]);
    let single = env_usize("CAPSTAN_BENCH_SINGLE", 20);
    let window = Duration::from_secs(env_usize("CAPSTAN_BENCH_WINDOW", 30) as u64);
    let exits = env_usize("CAPSTAN_BENCH_EXITS", 30);

    let cni = CniTrace::create();
    let api = ApiServer::start();
    // containerd.sh reads this when it writes containerd's config.
    std::env::set_var("CAPSTAN_CNI_BIN_DIR", &cni.dir);
    let pid = std::process::id();
    let mut bench = Bench {
        nodes: [NodeRuntime::BuiltIn, NodeRuntime::Containerd].map(|runtime| {
            eprintln!("starting a node with {} …", name(runtime));
            Node::start(
                &api,
                &format!("bench-{}-{pid}", short(runtime)),
                NodeOptions {
                    runtime,
                    extra_args: vec!["--cni-bin-dir".into(), cni.dir.display().to_string()],
                    ..NodeOptions::default()
                },
            )
        }),
        api,
        cni,
        rounds: 0,
    };
    for n in &mut bench.nodes {
        n.wait_ready(&bench.api);
    }
    eprintln!("warm-up pod on each node (pulls busybox) …");
    for s in 0..2 {
        let r = bench.round(s, 1, PodKind::Serve);
        bench.delete_round(s, &r);
    }

    if part("resources") {
        eprintln!("idle: both nodes, {window:?} …");
        let idle = measure(&bench.nodes.each_ref(), window);
        print_resources("idle (node Ready, no pods)", &idle, window);
    }
    if part("start") {
        bench.pod_start(&batches, single, window, part("resources"));
    }
    if part("exit") {
        bench.exit_latency(exits);
    }
    if let Ok(dir) = std::env::var("CAPSTAN_BENCH_LOGS") {
        for n in &bench.nodes {
            let file =
                PathBuf::from(&dir).join(format!("kubelet-{}.log", short(n.options.runtime)));
            if let Err(e) = std::fs::write(&file, n.log()) {
                eprintln!("writing {}: {e}", file.display());
            }
        }
    }
    eprintln!("stopping both nodes …");
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn name(r: NodeRuntime) -> &'static str {
    match r {
        NodeRuntime::BuiltIn => "capstan (built-in runtime)",
        NodeRuntime::Containerd => "containerd + runc",
    }
}

fn short(r: NodeRuntime) -> &'static str {
    match r {
        NodeRuntime::BuiltIn => "builtin",
        NodeRuntime::Containerd => "containerd",
    }
}

/// Both nodes (index 0: built-in, 1: containerd) on one API server.
struct Bench {
    // Field order is drop order: the nodes go before the API server they report to.
    nodes: [Node; 2],
    api: ApiServer,
    cni: CniTrace,
    rounds: u32,
}

/// What the pods of a round run.
#[derive(Clone, Copy, PartialEq)]
enum PodKind {
    /// Runs until deleted (exits at once on SIGTERM).
    Serve,
    /// `sleep <unique number>` with restartPolicy Never, for the exit measurement.
    Sleep,
}

/// One round of pods created at once on one node.
struct Round {
    label: String,
    names: Vec<String>,
    /// When each pod's POST was sent.
    sent: HashMap<String, Instant>,
    /// The same moment on the wall clock (to line up with the CNI wrappers' log).
    sent_wall: HashMap<String, f64>,
    seen: Arc<Mutex<Seen>>,
    /// From the first POST until the last pod was seen Ready.
    wall: Duration,
}

/// What the watcher of a round saw, with the moment it saw it.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, Instant>,
    /// The pod object when it first became Ready (for the API's timestamps).
    ready_obj: HashMap<String, Value>,
    terminated: HashMap<String, (Instant, Value)>,
    gone: HashSet<String>,
}

impl Bench {
    /// Creates `n` pods at once on node `s` and waits until the watcher has seen all Ready.
    fn round(&mut self, s: usize, n: usize, kind: PodKind) -> Round {
        self.rounds += 1;
        let label = format!("r{}-{}", self.rounds, short(self.nodes[s].options.runtime));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut watch = WatchStream::open(
            &self.api.addr,
            &format!(
                "/api/v1/namespaces/default/pods?watch=true&labelSelector=capstan-bench%3D{label}"
            ),
        );
        let w = seen.clone();
        std::thread::spawn(move || {
            // Runs until the API server closes the stream (at the end of the bench).
            while let Some(ev) = watch.next_event() {
                let now = Instant::now();
                let obj = &ev["object"];
                let pod = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                let mut seen = w.lock().unwrap();
                if ev["type"] == "DELETED" {
                    seen.gone.insert(pod);
                    continue;
                }
                if is_ready(obj) && !seen.ready.contains_key(&pod) {
                    seen.ready.insert(pod.clone(), now);
                    seen.ready_obj.insert(pod.clone(), obj.clone());
                }
                let terminated = obj["status"]["containerStatuses"]
                    .as_array()
                    .and_then(|cs| cs.first())
                    .map(|c| c["state"]["terminated"].clone())
                    .filter(|t| t.is_object());
                if let Some(t) = terminated {
                    seen.terminated.entry(pod).or_insert((now, t));
                }
            }
        });
        let names: Vec<String> = (0..n).map(|i| format!("{label}-{i}")).collect();
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let body = pod_json(pod, &label, &self.nodes[s].name, kind, self.rounds, i);
                let (addr, barrier, pod) = (self.api.addr.clone(), barrier.clone(), pod.clone());
                std::thread::spawn(move || {
                    let body = serde_json::to_vec(&body).unwrap();
                    barrier.wait();
                    let wall = now_secs();
                    let t0 = Instant::now();
                    let (code, resp) = http_raw(
                        &addr,
                        "POST",
                        "/api/v1/namespaces/default/pods",
                        "application/json",
                        &body,
                    );
                    assert_eq!(
                        code,
                        201,
                        "creating pod {pod}: {}",
                        String::from_utf8_lossy(&resp)
                    );
                    (pod, t0, wall)
                })
            })
            .collect();
        let posted: Vec<(String, Instant, f64)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let sent: HashMap<String, Instant> =
            posted.iter().map(|(p, t, _)| (p.clone(), *t)).collect();
        let sent_wall: HashMap<String, f64> = posted.into_iter().map(|(p, _, w)| (p, w)).collect();
        let first = *sent.values().min().unwrap();
        let start = Instant::now();
        loop {
            let done = seen.lock().unwrap().ready.len() == n;
            if done {
                break;
            }
            if start.elapsed() > ROUND_TIMEOUT {
                self.nodes[s].assert_alive();
                panic!(
                    "{}: only {} of {n} pods Ready after {ROUND_TIMEOUT:?}",
                    name(self.nodes[s].options.runtime),
                    seen.lock().unwrap().ready.len()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = *seen.lock().unwrap().ready.values().max().unwrap() - first;
        Round {
            label,
            names,
            sent,
            sent_wall,
            seen,
            wall,
        }
    }

    /// Deletes the round's pods and waits until they are gone from the API and the node runs no
    /// pod processes any more.
    fn delete_round(&self, s: usize, r: &Round) {
        self.api.kubectl_ok(&[
            "delete",
            "pods",
            "-n",
            "default",
            "-l",
            &format!("capstan-bench={}", r.label),
            "--wait=false",
        ]);
        let node = &self.nodes[s];
        eventually(ROUND_TIMEOUT, "the round's pods are gone", || {
            r.seen.lock().unwrap().gone.len() == r.names.len()
        });
        eventually(
            Duration::from_secs(60),
            "the node's pod processes have exited",
            || pod_processes(node, &processes()).is_empty(),
        );
    }

    fn pod_start(&mut self, batches: &[usize], single: usize, window: Duration, resources: bool) {
        let mut rows = Vec::new();
        let mut cni_rows = Vec::new();
        let mut api_rows = Vec::new();
        let mut plugins = [String::new(), String::new()];
        let largest = batches.iter().copied().max().unwrap_or(1);
        let mut single_phases = None;
        for &n in batches {
            let reps = if n == 1 { single } else { 1 };
            let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            let mut cni: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
            // One pod at a time: POST → first CNI call, CNI, last CNI call → Ready seen.
            let mut phases: [[Vec<Duration>; 3]; 2] = Default::default();
            let mut api: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
            let mut walls = [Duration::ZERO; 2];
            for rep in 0..reps {
                let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                for s in order {
                    eprintln!(
                        "{}: {n} pods at once (round {}/{reps}) …",
                        name(self.nodes[s].options.runtime),
                        rep + 1
                    );
                    self.cni.reset();
                    let r = self.round(s, n, PodKind::Serve);
                    let seen = r.seen.lock().unwrap();
                    for pod in &r.names {
                        lat[s].push(seen.ready[pod] - r.sent[pod]);
                        if let Some(secs) = api_ready_secs(&seen.ready_obj[pod]) {
                            api[s].push(secs);
                        }
                    }
                    drop(seen);
                    cni[s].extend(self.cni.add_per_sandbox());
                    if n == 1 {
                        let pod = &r.names[0];
                        let ready = r.sent_wall[pod]
                            + (r.seen.lock().unwrap().ready[pod] - r.sent[pod]).as_secs_f64();
                        if let Some((first, last)) = self.cni.add_span() {
                            let d = |a: f64, b: f64| Duration::from_secs_f64((b - a).max(0.0));
                            phases[s][0].push(d(r.sent_wall[pod], first));
                            phases[s][1].push(d(first, last));
                            phases[s][2].push(d(last, ready));
                        }
                    }
                    walls[s] += r.wall;
                    if n == largest {
                        plugins[s] = self.cni.per_plugin_summary();
                    }
                    if resources && n == largest && n >= 2 {
                        std::thread::sleep(Duration::from_secs(3));
                        eprintln!(
                            "{}: {n} pods running, {window:?} …",
                            name(self.nodes[s].options.runtime)
                        );
                        let m = measure(&[&self.nodes[s]], window);
                        print_resources(&format!("{n} pods running"), &m, window);
                    }
                    self.delete_round(s, &r);
                }
            }
            rows.push((n, lat, walls.map(|w| w / reps as u32)));
            cni_rows.push((n, cni));
            if n == 1 {
                single_phases = Some(phases);
            }
            api_rows.push((n, api));
        }
        println!("### Pod start: creation (POST) → Ready seen by a watcher");
        println!();
        println!("| pods at once | samples | capstan p50 ms | p99 | max | containerd p50 ms | p99 | max | capstan/containerd p50 | p99 | max | batch wall capstan / containerd s |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for (n, lat, walls) in &rows {
            let c = stats(&lat[0]);
            let d = stats(&lat[1]);
            println!(
                "| {n} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} |",
                lat[0].len(),
                c[0], c[1], c[2], d[0], d[1], d[2],
                c[0] / d[0], c[1] / d[1], c[2] / d[2],
                walls[0].as_secs_f64(), walls[1].as_secs_f64(),
            );
        }
        println!();
        println!("### Time in CNI plugins (ADD, per pod sandbox: union of the plugin calls)");
        println!();
        println!("| pods at once | capstan CNI p50 ms | p99 | containerd CNI p50 ms | p99 | capstan start − CNI p50 ms | containerd start − CNI p50 ms |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for ((n, cni), (_, lat, _)) in cni_rows.iter().zip(&rows) {
            let c = stats(&cni[0]);
            let d = stats(&cni[1]);
            println!(
                "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                c[0],
                c[1],
                d[0],
                d[1],
                stats(&lat[0])[0] - c[0],
                stats(&lat[1])[0] - d[0],
            );
        }
        println!();
        if let Some(p) = single_phases {
            println!("One pod at a time, where the time goes (p50 / max ms):");
            println!();
            println!("| phase | capstan | containerd |");
            println!("|---|---:|---:|");
            let names = [
                "POST → first CNI call (kubelet sees the pod, sandbox made)",
                "CNI calls (first start → last end)",
                "last CNI call → Ready seen (containers, status)",
            ];
            for (i, what) in names.iter().enumerate() {
                let (c, d) = (stats(&p[0][i]), stats(&p[1][i]));
                println!(
                    "| {what} | {:.0} / {:.0} | {:.0} / {:.0} |",
                    c[0], c[2], d[0], d[2]
                );
            }
            println!();
        }
        println!("Median time per ADD call of each plugin, {largest} pods at once (host-local runs inside bridge's call):");
        println!();
        for (node, plugins) in self.nodes.iter().zip(&plugins) {
            println!("- {}: {plugins}", name(node.options.runtime));
        }
        println!();
        println!("Cross-check from the API's timestamps (Ready lastTransitionTime − creationTimestamp, whole seconds; max):");
        for (n, api) in &api_rows {
            println!(
                "- {n} at once: capstan {} s, containerd {} s",
                api[0].iter().max().copied().unwrap_or(-1),
                api[1].iter().max().copied().unwrap_or(-1)
            );
        }
        println!();
    }

    fn exit_latency(&mut self, pods: usize) {
        let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        let mut finished_ok = [0usize; 2];
        for s in 0..2 {
            eprintln!(
                "{}: {pods} pods for the exit latency …",
                name(self.nodes[s].options.runtime)
            );
            let r = self.round(s, pods, PodKind::Sleep);
            std::thread::sleep(Duration::from_secs(2));
            let rounds = self.rounds;
            for (i, pod) in r.names.iter().enumerate() {
                let procs = processes();
                let cmd = format!("sleep {}", sleep_arg(rounds, i));
                let pid = procs
                    .iter()
                    .find(|(_, p)| p.cmdline == cmd)
                    .map(|(pid, _)| *pid)
                    .unwrap_or_else(|| panic!("no process `{cmd}` for pod {pod}"));
                let wall = SystemTime::now();
                let t0 = Instant::now();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .expect("killing the container's process");
                eventually(
                    Duration::from_secs(30),
                    "the container's termination in the API",
                    || r.seen.lock().unwrap().terminated.contains_key(pod),
                );
                let seen = r.seen.lock().unwrap();
                let (at, term) = &seen.terminated[pod];
                lat[s].push(*at - t0);
                let kill_secs = wall.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                if term["finishedAt"]
                    .as_str()
                    .and_then(rfc3339_secs)
                    .is_some_and(|f| (f - kill_secs).abs() <= 1)
                {
                    finished_ok[s] += 1;
                }
                drop(seen);
                std::thread::sleep(Duration::from_millis(100));
            }
            self.delete_round(s, &r);
        }
        println!("### Container exit → state.terminated seen by a watcher (SIGKILL from the host)");
        println!();
        println!("| samples | capstan p50 ms | p99 | max | containerd p50 ms | p99 | max | capstan/containerd p50 | p99 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let c = stats(&lat[0]);
        let d = stats(&lat[1]);
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            lat[0].len(),
            c[0],
            c[1],
            c[2],
            d[0],
            d[1],
            d[2],
            c[0] / d[0],
            c[1] / d[1]
        );
        println!();
        println!(
            "finishedAt within 1 s of the kill: capstan {}/{}, containerd {}/{}",
            finished_ok[0],
            lat[0].len(),
            finished_ok[1],
            lat[1].len()
        );
        println!();
    }
}

/// Seconds since the epoch, as the CNI wrappers log them.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The number a Sleep pod sleeps: unique per round and pod, so the bench finds its process.
fn sleep_arg(round: u32, i: usize) -> u64 {
    7_000_000 + round as u64 * 1000 + i as u64
}

fn pod_json(pod: &str, label: &str, node: &str, kind: PodKind, round: u32, i: usize) -> Value {
    let (command, restart) = match kind {
        PodKind::Serve => (
            json!(["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]),
            "Always",
        ),
        PodKind::Sleep => (json!(["sleep", sleep_arg(round, i).to_string()]), "Never"),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod, "namespace": "default", "labels": {"capstan-bench": label}},
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "c",
                "image": "busybox",
                "imagePullPolicy": "IfNotPresent",
                "command": command,
            }],
        },
    })
}

/// Ready lastTransitionTime − creationTimestamp of a pod, in whole seconds.
fn api_ready_secs(pod: &Value) -> Option<i64> {
    let created = rfc3339_secs(pod["metadata"]["creationTimestamp"].as_str()?)?;
    let ready = pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["lastTransitionTime"]
        .as_str()?;
    Some(rfc3339_secs(ready)? - created)
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SSZ` (fractions ignored).
fn rfc3339_secs(t: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// p50, p99 (nearest rank: with fewer than 100 samples, the largest) and max, in ms.
fn stats(v: &[Duration]) -> [f64; 3] {
    if v.is_empty() {
        return [f64::NAN; 3];
    }
    let mut v = v.to_vec();
    v.sort();
    let p99 = (v.len() * 99).div_ceil(100).max(1) - 1;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    [ms(v[v.len() / 2]), ms(v[p99]), ms(v[v.len() - 1])]
}

/// A bin dir of wrapper scripts in front of /usr/lib/cni that log each plugin call's start and
/// end (`plugin command container-id start end`, seconds from bash's EPOCHREALTIME) and run the
/// real plugin; removed on drop.
struct CniTrace {
    dir: PathBuf,
    log: PathBuf,
}

impl CniTrace {
    fn create() -> CniTrace {
        let base = PathBuf::from(format!(
            "/var/lib/capstan-test/bench-kubelet-cni-{}",
            std::process::id()
        ));
        let dir = base.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let log = base.join("calls.log");
        for plugin in CNI_PLUGINS {
            let script = format!(
                "#!/bin/bash\n\
                 # Times one call of the real {plugin} plugin (written by benches/kubelet_pod_start.rs).\n\
                 s=$EPOCHREALTIME\n\
                 {CNI_REAL}/{plugin} \"$@\"\n\
                 rc=$?\n\
                 echo \"{plugin} $CNI_COMMAND $CNI_CONTAINERID $s $EPOCHREALTIME\" >>{log}\n\
                 exit $rc\n",
                log = log.display()
            );
            let path = dir.join(plugin);
            std::fs::write(&path, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        CniTrace { dir, log }
    }

    fn reset(&self) {
        let _ = std::fs::write(&self.log, "");
    }

    /// (plugin, command, container id, start s, end s) of each call since the last reset.
    fn calls(&self) -> Vec<(String, String, String, f64, f64)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 5).then(|| {
                    (
                        f[0].to_string(),
                        f[1].to_string(),
                        f[2].to_string(),
                        f[3].parse().unwrap_or(0.0),
                        f[4].parse().unwrap_or(0.0),
                    )
                })
            })
            .collect()
    }

    /// Per sandbox: the time covered by its ADD calls (union of their intervals).
    fn add_per_sandbox(&self) -> Vec<Duration> {
        let mut per: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (_, cmd, id, s, e) in self.calls() {
            if cmd == "ADD" {
                per.entry(id).or_default().push((s, e));
            }
        }
        per.into_values()
            .map(|mut iv| {
                iv.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (mut total, mut cur) = (0.0, iv[0]);
                for (s, e) in iv.into_iter().skip(1) {
                    if s <= cur.1 {
                        cur.1 = cur.1.max(e);
                    } else {
                        total += cur.1 - cur.0;
                        cur = (s, e);
                    }
                }
                total += cur.1 - cur.0;
                Duration::from_secs_f64(total.max(0.0))
            })
            .collect()
    }

    /// Start of the first and end of the last ADD call since the last reset.
    fn add_span(&self) -> Option<(f64, f64)> {
        let adds: Vec<(f64, f64)> = self
            .calls()
            .into_iter()
            .filter(|c| c.1 == "ADD")
            .map(|c| (c.3, c.4))
            .collect();
        let first = adds.iter().map(|a| a.0).reduce(f64::min)?;
        let last = adds.iter().map(|a| a.1).reduce(f64::max)?;
        Some((first, last))
    }

    /// Median duration per plugin of the ADD calls since the last reset.
    fn per_plugin_summary(&self) -> String {
        let mut per: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for (plugin, cmd, _, s, e) in self.calls() {
            if cmd == "ADD" {
                per.entry(plugin)
                    .or_default()
                    .push(Duration::from_secs_f64((e - s).max(0.0)));
            }
        }
        let parts: Vec<String> = per
            .iter()
            .map(|(p, v)| format!("{p} {:.1} ms ({} calls)", stats(v)[0], v.len()))
            .collect();
        parts.join(", ")
    }
}

impl Drop for CniTrace {
    fn drop(&mut self) {
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// The processes a node runs for its pods, by kind (the workload excluded): the built-in
/// runtime's supervisors (and the PID-namespace init each forks); containerd's shims and sandbox
/// ("pause") processes.
fn pod_processes(node: &Node, procs: &HashMap<u32, Proc>) -> Vec<(&'static str, u32)> {
    let dir = format!("{}/", node.dir.display());
    let mut out = Vec::new();
    for (pid, p) in procs {
        match node.options.runtime {
            NodeRuntime::BuiltIn => {
                if p.cmdline.contains(" supervise ") && p.cmdline.contains(&dir) {
                    out.push(("supervisors (+ their PID-namespace init)", *pid));
                }
            }
            NodeRuntime::Containerd => {
                let is_shim =
                    |p: &Proc| p.cmdline.contains("containerd-shim") && p.cmdline.contains(&dir);
                if is_shim(p) {
                    out.push(("containerd-shim-runc-v2", *pid));
                } else if p.cmdline.contains("sleep 2147483647")
                    && procs.get(&p.ppid).is_some_and(is_shim)
                {
                    out.push(("sandbox (pause) processes", *pid));
                }
            }
        }
    }
    out
}

/// Every process of a node that the resource table counts, by kind.
fn node_processes(node: &Node) -> Vec<(&'static str, u32)> {
    let procs = processes();
    let mut out = vec![("kubelet", node.pid())];
    if node.options.runtime == NodeRuntime::Containerd {
        if let Some(pid) = std::fs::read_to_string(node.dir.join("containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
        {
            out.push(("containerd", pid));
        }
    }
    out.extend(pod_processes(node, &procs));
    out
}

/// utime + stime + cutime + cstime of a process, in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
    Some((11..15).filter_map(|i| f.get(i)?.parse::<u64>().ok()).sum())
}

/// PSS of a process in KiB (smaps_rollup).
fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Pss:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Per node, per kind of process: (count, CPU cores over the window, RSS KiB, PSS KiB).
type Usage = Vec<(String, Vec<(&'static str, usize, f64, u64, u64)>)>;

/// CPU over `window` and memory at its end of every counted process of `nodes`.
fn measure(nodes: &[&Node], window: Duration) -> Usage {
    let before: Vec<Vec<(&'static str, u32, u64)>> = nodes
        .iter()
        .map(|n| {
            node_processes(n)
                .into_iter()
                .filter_map(|(k, pid)| Some((k, pid, cpu_ticks(pid)?)))
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    nodes
        .iter()
        .zip(before)
        .map(|(n, procs)| {
            let mut kinds: BTreeMap<&'static str, (usize, f64, u64, u64)> = BTreeMap::new();
            for (kind, pid, t) in procs {
                let Some(t1) = cpu_ticks(pid) else { continue };
                let e = kinds.entry(kind).or_default();
                e.0 += 1;
                e.1 += t1.saturating_sub(t) as f64 / USER_HZ / secs;
                e.2 += common::rss_kib(pid);
                e.3 += pss_kib(pid).unwrap_or(0);
            }
            let mut rows: Vec<_> = kinds
                .into_iter()
                .map(|(k, (c, cpu, rss, pss))| (k, c, cpu, rss, pss))
                .collect();
            // The kubelet first.
            rows.sort_by_key(|r| r.0 != "kubelet");
            (name(n.options.runtime).to_string(), rows)
        })
        .collect()
}

fn print_resources(what: &str, usage: &Usage, window: Duration) {
    println!("### Resources, {what} ({} s window)", window.as_secs());
    println!();
    println!("| runtime | processes | count | CPU (cores) | RSS MiB | PSS MiB |");
    println!("|---|---|---:|---:|---:|---:|");
    for (runtime, rows) in usage {
        let (mut cpu, mut rss, mut pss) = (0.0, 0, 0);
        for (kind, count, c, r, p) in rows {
            println!(
                "| {runtime} | {kind} | {count} | {c:.4} | {:.1} | {:.1} |",
                *r as f64 / 1024.0,
                *p as f64 / 1024.0
            );
            cpu += c;
            rss += r;
            pss += p;
        }
        println!(
            "| {runtime} | **all** | | {cpu:.4} | {:.1} | {:.1} |",
            rss as f64 / 1024.0,
            pss as f64 / 1024.0
        );
    }
    println!();
}
