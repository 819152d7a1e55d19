//! The Job controller at scale: one `capstan controller-manager` (`--leader-elect=false
//! --controllers=job`, upstream's defaults otherwise, so pod changes are batched per second as
//! upstream's `syncJobBatchPeriod`) against apiserver-lite, and a Job of CAPSTAN_BENCH_COMPLETIONS
//! (default 1,000) completions with parallelism CAPSTAN_BENCH_PARALLELISM (default 100). The
//! harness plays the kubelet: a pod watch marks every new pod Succeeded through the status API as
//! soon as it appears (no containers run). Measured from just before the POST until the Job
//! reports `Complete` (polled every 20 ms), and the controller-manager's CPU time (utime + stime
//! from /proc) over the same span.
//!
//! Upstream publishes no figure for this; the numbers in BENCHMARKS.md are Capstan's only.
//!
//! Run: `cargo bench --bench controllers_job`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::controller_manager::ControllerManager;
use common::{eventually, http_raw, ApiServer, WatchStream};
use serde_json::json;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line (12 and 13 after the name), in clock
    // ticks: USER_HZ, which Linux fixes at 100 for user space on every architecture we run on.
    (ticks(11) + ticks(12)) / 100.0
}

fn job(name: &str, completions: usize, parallelism: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}},
        },
    }))
    .expect("job JSON")
}

fn complete(api: &ApiServer, name: &str) -> bool {
    let (_, j) = api.http(
        "GET",
        &format!("/apis/batch/v1/namespaces/default/jobs/{name}"),
        "",
        b"",
    );
    j["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

/// Marks every pod of `job` Succeeded as soon as the watch shows it (eight writers, as many
/// kubelets would).
fn completer(api: &ApiServer, job: &str) -> std::thread::JoinHandle<()> {
    let addr = api.addr.clone();
    let mut stream = WatchStream::open(
        &addr,
        &format!("/api/v1/namespaces/default/pods?watch=1&labelSelector=job-name%3D{job}"),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    for _ in 0..8 {
        let (rx, addr) = (rx.clone(), addr.clone());
        std::thread::spawn(move || loop {
            let next = rx.lock().unwrap().recv();
            let Ok(name) = next else { return };
            let t = k8s_openapi::jiff::Timestamp::now().to_string();
            let body = json!({"status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}}]}});
            http_raw(
                &addr,
                "PATCH",
                &format!("/api/v1/namespaces/default/pods/{name}/status"),
                "application/merge-patch+json",
                body.to_string().as_bytes(),
            );
        });
    }
    std::thread::spawn(move || {
        while let Some(ev) = stream.next_event() {
            if ev["type"] == "ERROR" {
                break;
            }
            if ev["type"] == "ADDED" {
                let name = ev["object"]["metadata"]["name"].as_str().unwrap_or("");
                if tx.send(name.to_string()).is_err() {
                    break;
                }
            }
        }
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let completions = env_num("CAPSTAN_BENCH_COMPLETIONS", 1000);
    let parallelism = env_num("CAPSTAN_BENCH_PARALLELISM", 100);
    let runs = env_num("CAPSTAN_BENCH_RUNS", 1);
    let api = ApiServer::start();
    let cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", "--controllers=job"]);
    // Warm-up: caches synced and one small Job done.
    let _warm = completer(&api, "warm");
    let (code, body) = api.http(
        "POST",
        "/apis/batch/v1/namespaces/default/jobs",
        "application/json",
        &job("warm", 1, 1),
    );
    assert_eq!(code, 201, "{body}");
    eventually(Duration::from_secs(60), "the warm-up job complete", || {
        complete(&api, "warm")
    });
    let mut rows = Vec::new();
    for run in 0..runs {
        let name = format!("bench{run}");
        let _c = completer(&api, &name);
        let cpu0 = cpu_seconds(cm.pid());
        let start = Instant::now();
        let (code, body) = api.http(
            "POST",
            "/apis/batch/v1/namespaces/default/jobs",
            "application/json",
            &job(&name, completions, parallelism),
        );
        assert_eq!(code, 201, "{body}");
        let mut done = None;
        while start.elapsed() < Duration::from_secs(600) {
            if complete(&api, &name) {
                done = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = done.expect("the job completed within 600 s");
        let cpu = cpu_seconds(cm.pid()) - cpu0;
        eprintln!("run {run}: {completions} completions complete after {took:.2?}, controller-manager CPU {cpu:.2} s");
        rows.push((took, cpu));
    }
    println!("| run | completions | parallelism | time to Complete | controller-manager CPU |");
    println!("|---|---|---|---|---|");
    for (i, (t, cpu)) in rows.iter().enumerate() {
        println!(
            "| {} | {completions} | {parallelism} | {:.2} s | {cpu:.2} s |",
            i + 1,
            t.as_secs_f64()
        );
    }
}
