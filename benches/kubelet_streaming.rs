//! Exec round trip and port-forward throughput end to end: kubectl → apiserver-lite → the
//! kubelet → the runtime's streaming server → the pod, on two nodes joined to one apiserver-lite
//! in the same run: `capstan kubelet` with its built-in runtime, and the same kubelet on Debian's
//! containerd 1.6 + runc (`tests/common`: `ApiServer`, `Node`).
//!
//! 1. **Exec round trip**: `kubectl exec shell -- true`, CAPSTAN_BENCH_EXECS times per node
//!    (default 20, alternating between the nodes), wall time of the kubectl process; next to it
//!    the direct in-namespace baseline of the same run: `nsenter -t <container pid> -a true` (the
//!    same command in all of the container's namespaces, no API server, kubelet or runtime).
//!    Medians and p90.
//! 2. **Port-forward throughput**: a `kubectl port-forward` to busybox `httpd` in the pod serving
//!    a CAPSTAN_BENCH_MB (default 256) MiB file; `curl` downloads it through the forward
//!    (CAPSTAN_BENCH_PF_ROUNDS times, default 3, best and median MB/s); the baseline is the same
//!    download from inside the pod's network namespace (`nsenter -t <pid> -n curl
//!    http://127.0.0.1:8080/…`).
//!
//! Both nodes and the API server are stopped by guards, also after a panic. Progress goes to
//! stderr, markdown tables to stdout.
//!
//! Run: `cargo bench --bench kubelet_streaming` (as root; needs the packages of
//! scripts/install-deps.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kubelet::{wait_pod, Node, NodeOptions, NodeRuntime};
use common::ApiServer;

/// A child process killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn label(r: NodeRuntime) -> &'static str {
    match r {
        NodeRuntime::BuiltIn => "Capstan (built-in runtime)",
        NodeRuntime::Containerd => "containerd 1.6 + runc",
    }
}

/// The host pid of the process whose command line is exactly `args`.
fn find_pid(args: &[&str]) -> Option<u32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline == want).then_some(pid)
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn timed(mut cmd: Command) -> f64 {
    let start = Instant::now();
    let out = cmd.output().expect("running a timed command");
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

/// Downloads `url` with curl (optionally inside `netns_pid`'s network namespace); MB/s.
fn download(url: &str, netns_pid: Option<u32>) -> f64 {
    let mut cmd = match netns_pid {
        Some(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-n", "curl"]);
            c
        }
        None => Command::new("curl"),
    };
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{time_total}",
        url,
    ]);
    let out = cmd.output().expect("running curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace();
    let bytes: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let secs: f64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    bytes / 1e6 / secs
}

struct Figures {
    exec_ms: Vec<f64>,
    nsenter_ms: Vec<f64>,
    pf_mbs: Vec<f64>,
    netns_mbs: Vec<f64>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("kubelet_streaming: needs root (it runs pods); skipped");
        return;
    }
    let execs = env_usize("CAPSTAN_BENCH_EXECS", 20);
    let mb = env_usize("CAPSTAN_BENCH_MB", 256);
    let pf_rounds = env_usize("CAPSTAN_BENCH_PF_ROUNDS", 3);
    let api = ApiServer::start();
    let pid = std::process::id();
    let runtimes = [NodeRuntime::BuiltIn, NodeRuntime::Containerd];
    let mut nodes: Vec<Node> = runtimes
        .iter()
        .enumerate()
        .map(|(i, &runtime)| {
            eprintln!("starting a node with {} …", label(runtime));
            let mut node = Node::start(
                &api,
                &format!("bench-stream-{i}-{pid}"),
                NodeOptions {
                    runtime,
                    ..NodeOptions::default()
                },
            );
            node.wait_ready(&api);
            node
        })
        .collect();
    // One shell pod and one web pod per node, each with a command line unique in the host.
    for (i, node) in nodes.iter_mut().enumerate() {
        let manifest = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: shell-{i}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    command: [sleep, "99990{i}{pid}"]
---
apiVersion: v1
kind: Pod
metadata: {{name: web-{i}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: [sh, -c, "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={mb} 2>/dev/null && exec httpd -f -p 8080 -h /www"]
"#,
            node = node.name
        );
        node.apply(&api, &format!("stream-{i}.yaml"), &manifest);
        for pod in [format!("shell-{i}"), format!("web-{i}")] {
            wait_pod(&api, node, &pod, Duration::from_secs(180), "running", |p| {
                p["status"]["phase"] == "Running"
            });
        }
    }
    let shell_pids: Vec<u32> = (0..nodes.len())
        .map(|i| find_pid(&["sleep", &format!("99990{i}{pid}")]).expect("the shell pod's process"))
        .collect();
    let mut figs: Vec<Figures> = (0..nodes.len())
        .map(|_| Figures {
            exec_ms: vec![],
            nsenter_ms: vec![],
            pf_mbs: vec![],
            netns_mbs: vec![],
        })
        .collect();

    eprintln!("exec round trips ({execs} per node) …");
    for round in 0..execs + 1 {
        for (i, f) in figs.iter_mut().enumerate() {
            let kubectl = api.kubectl_cmd(&["exec", &format!("shell-{i}"), "--", "true"]);
            let ms = timed(kubectl);
            let mut ns = Command::new("nsenter");
            ns.args(["-t", &shell_pids[i].to_string(), "-a", "true"]);
            let ns_ms = timed(ns);
            // The first round warms caches (kubectl's discovery, the runtime's spec cache).
            if round > 0 {
                f.exec_ms.push(ms);
                f.nsenter_ms.push(ns_ms);
            }
        }
    }

    eprintln!("port-forward throughput ({mb} MiB × {pf_rounds} per node) …");
    for (i, f) in figs.iter_mut().enumerate() {
        let local = common::free_port();
        let mut pf = api.kubectl_cmd(&[
            "port-forward",
            &format!("pod/web-{i}"),
            &format!("{local}:8080"),
        ]);
        pf.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut pf = ChildGuard(pf.spawn().expect("kubectl port-forward"));
        let mut out = pf.0.stdout.take().unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("Forwarding from") {
            let mut b = [0u8; 1];
            assert!(
                out.read(&mut b).unwrap_or(0) == 1,
                "port-forward did not start"
            );
            seen.push(b[0]);
        }
        for _ in 0..pf_rounds {
            f.pf_mbs
                .push(download(&format!("http://127.0.0.1:{local}/big"), None));
        }
        drop(pf);
        // In-namespace baseline: the httpd whose network namespace has this pod's IP.
        let pod_ip = api.kubectl_ok(&[
            "get",
            "pod",
            &format!("web-{i}"),
            "-o",
            "jsonpath={.status.podIP}",
        ]);
        let ns_pid = httpd_with_ip(&pod_ip).expect("the web pod's httpd");
        for _ in 0..pf_rounds {
            f.netns_mbs
                .push(download("http://127.0.0.1:8080/big", Some(ns_pid)));
        }
    }

    println!("\n### Exec round trip (`kubectl exec pod -- true`, {execs} runs per node)\n");
    println!("| node | kubectl exec median (ms) | p90 (ms) | nsenter -a baseline median (ms) | exec − baseline (ms) |");
    println!("|---|---|---|---|---|");
    for (i, f) in figs.iter_mut().enumerate() {
        f.exec_ms.sort_by(f64::total_cmp);
        f.nsenter_ms.sort_by(f64::total_cmp);
        let (m, p90, b) = (
            percentile(&f.exec_ms, 0.5),
            percentile(&f.exec_ms, 0.9),
            percentile(&f.nsenter_ms, 0.5),
        );
        println!(
            "| {} | {m:.0} | {p90:.0} | {b:.1} | {:.0} |",
            label(runtimes[i]),
            m - b
        );
    }
    let ratio = percentile(&figs[0].exec_ms, 0.5) / percentile(&figs[1].exec_ms, 0.5);
    println!("\nCapstan / containerd exec median: {ratio:.2}");

    println!("\n### Port-forward throughput ({mb} MiB download, {pf_rounds} runs per node)\n");
    println!("| node | through kubectl port-forward, best (MB/s) | median (MB/s) | in-namespace baseline best (MB/s) | forward / baseline |");
    println!("|---|---|---|---|---|");
    for (i, f) in figs.iter_mut().enumerate() {
        f.pf_mbs.sort_by(f64::total_cmp);
        f.netns_mbs.sort_by(f64::total_cmp);
        let best = f.pf_mbs.last().copied().unwrap_or(f64::NAN);
        let base = f.netns_mbs.last().copied().unwrap_or(f64::NAN);
        println!(
            "| {} | {best:.0} | {:.0} | {base:.0} | {:.3} |",
            label(runtimes[i]),
            percentile(&f.pf_mbs, 0.5),
            best / base
        );
    }
    let ratio =
        figs[0].pf_mbs.last().unwrap_or(&f64::NAN) / figs[1].pf_mbs.last().unwrap_or(&f64::NAN);
    println!("\nCapstan / containerd port-forward throughput: {ratio:.2}");
}

/// The httpd process whose network namespace has `ip`.
fn httpd_with_ip(ip: &str) -> Option<u32> {
    let ip = ip.trim();
    let httpds: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline.starts_with(b"httpd\0").then_some(pid)
        })
        .collect();
    httpds.into_iter().find(|pid| {
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "ip", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {ip}/")))
            .unwrap_or(false)
    })
}
