//! `capstan server` as a product: how fast a single-node cluster comes up and what it costs.
//! The server runs as the e2e suite runs it (`tests/common/server.rs`: its own data dir, ports,
//! subnets, bridge and cgroup root, the suite's local registry as docker.io mirror), and is
//! uninstalled at the end, also after a panic.
//!
//! 1. **Start, cold**: from spawning `capstan server` on an empty data dir until the API answers
//!    (`GET /api/v1/nodes/<node>` connects and returns any status), and until that GET shows the
//!    node's Ready condition True. Polled every 10 ms over plain HTTP (kubectl itself takes
//!    ~100 ms per call, which would blur the figure).
//! 2. **Start, warm**: a busybox pod is run once (pulling the image), the server is stopped with
//!    SIGTERM and started again on the same data dir; the same two times, plus the time until a
//!    new pod created as soon as the API answers is Running (image already in the store).
//! 3. **Resources** at idle (right after the cold start: no pod has run, 15 s after Ready) and
//!    with N pods (CAPSTAN_BENCH_PODS,
//!    default 100: a Deployment of `sleep` busybox pods) Running: USS and RSS of the server process
//!    (smaps_rollup: USS = Private_Clean + Private_Dirty), the pod supervisors' USS, PSS and RSS
//!    summed (with the PID-namespace init each forks; summed per-process USS misses the pages a
//!    supervisor shares with its own init or other supervisors, so PSS is the fairer sum), and CPU (utime + stime deltas of /proc/<pid>/stat
//!    over CAPSTAN_BENCH_WINDOW seconds, default 20) as a percentage of one core. The workload's
//!    own processes are not counted.
//!
//! Run: `cargo bench --bench server_start` (as root; scripts/install-deps.sh's packages). To
//! measure another build of the binary: `CAPSTAN_SERVER_BIN=target/release/capstan`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::Server;
use serde_json::Value;

const USER_HZ: f64 = 100.0;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Makes the harness speak TLS to the server's API with the admin kubeconfig's CA and client
/// certificate; None while the server has not written the kubeconfig yet.
fn register_api_tls(server: &Server) -> Option<()> {
    let kubeconfig = std::fs::read_to_string(server.kubeconfig()).ok()?;
    let addr = format!("127.0.0.1:{}", server.api_port);
    common::register_tls(&addr, common::tls_client_config(&kubeconfig));
    Some(())
}

/// GET on the API; None while it does not answer.
fn api_get(server: &Server, path: &str) -> Option<(u16, Value)> {
    let addr = format!("127.0.0.1:{}", server.api_port);
    TcpStream::connect(&addr).ok()?;
    register_api_tls(server)?;
    let (code, body) = common::http_raw(&addr, "GET", path, "application/json", b"");
    Some((code, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn node_ready(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// (API answering, node Ready) after `t0`, polled every 10 ms.
fn time_to_ready(server: &mut Server, t0: Instant) -> (Duration, Duration) {
    let path = format!("/api/v1/nodes/{}", server.node_name);
    let mut serving = None;
    loop {
        assert!(t0.elapsed() < Duration::from_secs(120), "no Ready node");
        server.assert_alive();
        if let Some((_, v)) = api_get(server, &path) {
            serving.get_or_insert(t0.elapsed());
            if node_ready(&v) {
                return (serving.unwrap(), t0.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pod_running(server: &Server, name: &str) -> bool {
    api_get(server, &format!("/api/v1/namespaces/default/pods/{name}"))
        .is_some_and(|(_, v)| v["status"]["phase"] == "Running")
}

fn pod_manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: busybox, command: [sleep, '100000']}}\n"
    )
}

#[derive(Default, Clone, Copy)]
struct Mem {
    uss: u64,
    pss: u64,
    rss: u64,
}

fn mem(pid: u32) -> Mem {
    let mut m = Mem::default();
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        for l in text.lines() {
            let mut w = l.split_whitespace();
            let (Some(k), Some(v)) = (w.next(), w.next()) else {
                continue;
            };
            let kb: u64 = v.parse().unwrap_or(0);
            match k {
                "Rss:" => m.rss += kb,
                "Pss:" => m.pss += kb,
                "Private_Clean:" | "Private_Dirty:" => m.uss += kb,
                _ => {}
            }
        }
    }
    m
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest: Vec<u64> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            Some(rest.iter().sum())
        })
        .unwrap_or(0)
}

/// The supervisors and their direct children (the PID-namespace init each forks), not the
/// containers' own processes.
fn supervisor_set(server: &Server) -> Vec<u32> {
    let sup: HashSet<u32> = server.supervisor_pids().into_iter().collect();
    let procs = common::processes();
    let mut out: Vec<u32> = sup.iter().copied().collect();
    for (pid, p) in &procs {
        if sup.contains(&p.ppid) && p.cmdline.contains("supervise") {
            out.push(*pid);
        }
    }
    out
}

struct Sample {
    server: Mem,
    supervisors: Mem,
    n_supervisors: usize,
    server_cpu: f64,
    supervisors_cpu: f64,
}

fn sample(server: &Server, window: Duration) -> Sample {
    let pid = server.pid();
    let sups = supervisor_set(server);
    let c0 = cpu_ticks(pid);
    let s0: u64 = sups.iter().map(|p| cpu_ticks(*p)).sum();
    std::thread::sleep(window);
    let c1 = cpu_ticks(pid);
    let s1: u64 = sups.iter().map(|p| cpu_ticks(*p)).sum();
    let secs = window.as_secs_f64();
    let mut supervisors = Mem::default();
    for p in &sups {
        let m = mem(*p);
        supervisors.uss += m.uss;
        supervisors.pss += m.pss;
        supervisors.rss += m.rss;
    }
    Sample {
        server: mem(pid),
        supervisors,
        n_supervisors: sups.len(),
        server_cpu: (c1 - c0) as f64 / USER_HZ / secs * 100.0,
        supervisors_cpu: (s1.saturating_sub(s0)) as f64 / USER_HZ / secs * 100.0,
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn main() {
    let window = Duration::from_secs(env_num("CAPSTAN_BENCH_WINDOW", 20));
    let n_pods = env_num("CAPSTAN_BENCH_PODS", 100) as usize;
    let exe = common::server::capstan_exe();
    eprintln!("server_start: measuring {}", exe.display());

    // 1. Cold start.
    let mut server = Server::start();
    let t0 = server.spawned;
    let (cold_api, cold_ready) = time_to_ready(&mut server, t0);
    eprintln!("cold: API {cold_api:?}, Ready {cold_ready:?}");
    // Idle: node Ready, no pod has ever run.
    std::thread::sleep(Duration::from_secs(15));
    let idle = sample(&server, window);

    // Pull the image once.
    server.apply("warm.yaml", &pod_manifest("warm"));
    let pulled = Instant::now();
    while !pod_running(&server, "warm") {
        assert!(pulled.elapsed() < Duration::from_secs(120), "warm-up pod");
        server.assert_alive();
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kubectl_ok(&["delete", "pod", "warm", "--wait=true"]);

    // 2. Warm start, then a first pod.
    let status = server.sigterm();
    assert!(status.success());
    server.restart();
    let t0 = server.spawned;
    let (warm_api, warm_ready) = time_to_ready(&mut server, t0);
    eprintln!("warm: API {warm_api:?}, Ready {warm_ready:?}");
    server.sigterm();
    server.restart();
    let t0 = server.spawned;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "100000"]}]}
    }))
    .unwrap();
    let addr = format!("127.0.0.1:{}", server.api_port);
    while TcpStream::connect(&addr).is_err() || register_api_tls(&server).is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, _) = common::http_raw(
        &addr,
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &body,
    );
    assert_eq!(code, 201, "creating the first pod");
    while !pod_running(&server, "first") {
        assert!(t0.elapsed() < Duration::from_secs(120), "first pod");
        server.assert_alive();
        std::thread::sleep(Duration::from_millis(10));
    }
    let first_pod = t0.elapsed();
    eprintln!("warm: first pod Running {first_pod:?}");
    server.kubectl_ok(&["delete", "pod", "first", "--wait=true"]);

    // 3. Resources with many pods.
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: many}}\nspec:\n  replicas: {n_pods}\n  selector: {{matchLabels: {{app: many}}}}\n  template:\n    metadata: {{labels: {{app: many}}}}\n    spec:\n      terminationGracePeriodSeconds: 0\n      containers:\n      - {{name: c, image: busybox, command: [sleep, '100000']}}\n"
    );
    let t_many = Instant::now();
    server.apply("many.yaml", &deploy);
    loop {
        assert!(
            t_many.elapsed() < Duration::from_secs(600),
            "{n_pods} pods did not all run"
        );
        server.assert_alive();
        let v = api_get(
            &server,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dmany",
        )
        .map(|(_, v)| v)
        .unwrap_or(Value::Null);
        let running = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
            })
            .unwrap_or(0);
        if running == n_pods {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let many_started = t_many.elapsed();
    eprintln!("{n_pods} pods Running after {many_started:?}");
    std::thread::sleep(Duration::from_secs(15));
    let busy = sample(&server, window);

    println!("## capstan server ({})\n", exe.display());
    println!("| | time |\n|---|---|");
    println!("| cold start → API answers | {} ms |", cold_api.as_millis());
    println!(
        "| cold start → node Ready | {} ms |",
        cold_ready.as_millis()
    );
    println!("| warm start → API answers | {} ms |", warm_api.as_millis());
    println!(
        "| warm start → node Ready (its status stays Ready across a short stop) | {} ms |",
        warm_ready.as_millis()
    );
    println!(
        "| warm start → first pod Running (image present) | {} ms |",
        first_pod.as_millis()
    );
    println!(
        "| {n_pods}-replica Deployment → all Running | {:.1} s |",
        many_started.as_secs_f64()
    );
    println!();
    println!("| | server USS / PSS / RSS MiB | supervisors (n) USS / PSS / RSS MiB | total USS / PSS MiB | server CPU % of a core | supervisors CPU % |");
    println!("|---|---|---|---|---|---|");
    for (label, s) in [
        ("idle".to_string(), &idle),
        (format!("{n_pods} pods"), &busy),
    ] {
        println!(
            "| {label} | {} / {} / {} | ({}) {} / {} / {} | {} / {} | {:.2} | {:.2} |",
            mib(s.server.uss),
            mib(s.server.pss),
            mib(s.server.rss),
            s.n_supervisors,
            mib(s.supervisors.uss),
            mib(s.supervisors.pss),
            mib(s.supervisors.rss),
            mib(s.server.uss + s.supervisors.uss),
            mib(s.server.pss + s.supervisors.pss),
            s.server_cpu,
            s.supervisors_cpu
        );
    }
    drop(server);
}
