//! The deployment and replica-set controllers at scale: one `capstan controller-manager`
//! (`--leader-elect=false`) against apiserver-lite, a Deployment of CAPSTAN_BENCH_REPLICAS
//! (default 1,000) replicas created with one POST. Measured from just before the POST:
//!
//! 1. until a pod watch (label selector of the run) has seen every pod created;
//! 2. until the Deployment reports them all available (`status.availableReplicas`, polled every
//!    20 ms), with the harness's fake kubelet (tests/common/fake_kubelet.rs) marking each pod
//!    Running and Ready through the status API as soon as it sees it (no containers run).
//!
//! CAPSTAN_BENCH_RUNS runs (default 3), the deployment deleted and its pods gone in between.
//! Upstream's figure is computed, not measured: kube-controller-manager's client defaults to
//! 20 QPS with a burst of 30 (`--kube-api-qps`, `--kube-api-burst`), so creating 1,000 pods takes
//! at least (1,000 - 30) / 20 ≈ 49 s.
//!
//! Run: `cargo bench --bench controllers_deployment`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::controller_manager::ControllerManager;
use common::fake_kubelet::FakeKubelet;
use common::{eventually, ApiServer, WatchStream};
use serde_json::json;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn deployment(name: &str, replicas: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }))
    .expect("deployment JSON")
}

fn available(api: &ApiServer, name: &str) -> i64 {
    let (_, d) = api.http(
        "GET",
        &format!("/apis/apps/v1/namespaces/default/deployments/{name}"),
        "",
        b"",
    );
    d["status"]["availableReplicas"].as_i64().unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let replicas = env_num("CAPSTAN_BENCH_REPLICAS", 1000);
    let runs = env_num("CAPSTAN_BENCH_RUNS", 3);
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false"]);
    let _kubelet = FakeKubelet::start(&api, "", Duration::ZERO);
    // Warm-up: the controllers' caches synced and a first rollout done.
    let (code, body) = api.http(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        &deployment("warm", 1),
    );
    assert_eq!(code, 201, "{body}");
    eventually(
        Duration::from_secs(60),
        "the warm-up deployment available",
        || available(&api, "warm") == 1,
    );

    let mut rows = Vec::new();
    for run in 0..runs {
        let name = format!("bench{run}");
        let (_, list) = api.http(
            "GET",
            &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{name}"),
            "",
            b"",
        );
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("0")
            .to_string();
        let mut stream = WatchStream::open(&api.addr, &format!("/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3D{name}&resourceVersion={rv}"));
        let all_created: Arc<Mutex<Option<Instant>>> = Default::default();
        let done = all_created.clone();
        let watcher = std::thread::spawn(move || {
            let mut created = 0;
            while let Some(ev) = stream.next_event() {
                if ev["type"] == "ADDED" {
                    created += 1;
                    if created == replicas {
                        *done.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        });
        let start = Instant::now();
        let (code, body) = api.http(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            "application/json",
            &deployment(&name, replicas),
        );
        assert_eq!(code, 201, "{body}");
        let mut available_at = None;
        while start.elapsed() < Duration::from_secs(300) {
            if available(&api, &name) == replicas as i64 {
                available_at = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let available_at = available_at.expect("the deployment became available within 300 s");
        watcher.join().expect("watch thread");
        let created_at = all_created.lock().unwrap().expect("every pod seen");
        let created = created_at - start;
        let avail = available_at - start;
        eprintln!("run {run}: all {replicas} pods created after {created:.2?}, available after {avail:.2?}");
        rows.push((created, avail));
        api.kubectl_ok(&["delete", "deployment", &name, "--wait=false"]);
        eventually(Duration::from_secs(300), "the pods of the run gone", || {
            let (_, l) = api.http(
                "GET",
                &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{name}"),
                "",
                b"",
            );
            l["items"].as_array().is_some_and(Vec::is_empty)
        });
    }
    println!("| run | replicas | all pods created | deployment available |");
    println!("|---|---|---|---|");
    for (i, (c, a)) in rows.iter().enumerate() {
        println!(
            "| {} | {replicas} | {:.2} s | {:.2} s |",
            i + 1,
            c.as_secs_f64(),
            a.as_secs_f64()
        );
    }
    println!(
        "| upstream (computed: {replicas} creates at the default 20 QPS, burst 30) | {replicas} | ≥ {:.0} s | — |",
        replicas.saturating_sub(30) as f64 / 20.0
    );
}
