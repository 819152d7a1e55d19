//! scheduler_perf-style throughput of the scheduler (see BENCHMARKS.md, "Scheduler").
//!
//! For each workload, on a fresh `capstan apiserver`: fake nodes (4 cpu, 32 Gi, 110 pods, no
//! kubelet), the workload's initial pods already bound, and its measured pods pending — all
//! created before the clock starts. Then scheduler-lite runs in this process with the default
//! profile and the default (adaptive) percentageOfNodesToScore; once its informers have queued
//! every measured pod the clock starts, and it stops when the last measured pod is bound.
//! Each workload runs twice: with real binds (DefaultBinder POSTs pods/binding, events written)
//! and with a recording binder (scheduling cycles only; nothing written except preemption's
//! deletions).
//!
//! Environment: SCHED_PERF_SCALE (multiplies every node and pod count, default 1.0),
//! SCHED_PERF_ONLY (comma list of workload names), SCHED_PERF_MODES ("real,recording"),
//! SCHED_PERF_TRACE (print bound/pending every 250 ms while measuring), SCHED_PERF_PARALLELISM
//! (the configuration's `parallelism`, default 16; the machine's cores cap it).
//! Prints a markdown table on stdout, progress on stderr.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, PostParams};
use scheduler_lite::framework::{BindPlugin, Plugin, PluginInfo, Status};
use scheduler_lite::nodeinfo::PodInfo;
use serde_json::{json, Value};

/// `capstan apiserver` on a temporary data dir, killed on drop.
struct ApiServer {
    child: Child,
    dir: tempfile::TempDir,
}

impl ApiServer {
    fn start() -> ApiServer {
        let dir = tempfile::tempdir().expect("a temporary data dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["apiserver", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--advertise-address",
                "127.0.0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting capstan apiserver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.starts_with("capstan apiserver serving on"),
            "apiserver printed {first:?}"
        );
        std::thread::spawn(move || for _ in lines {});
        ApiServer { child, dir }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binder that only counts: the scheduling cycles without the API writes.
struct RecordingBinder;

impl Plugin for RecordingBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
    fn bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl BindPlugin for RecordingBinder {
    async fn bind(&self, _: &PodInfo, _: &str) -> Status {
        Status::success()
    }
}

struct Workload {
    name: &'static str,
    nodes: usize,
    init_pods: usize,
    measure_pods: usize,
    /// Upstream's published CI threshold (pods/s, other hardware).
    upstream: &'static str,
    node: fn(usize) -> Value,
    init: fn(usize) -> Value,
    measure: fn(usize) -> Value,
}

fn node_default(i: usize) -> Value {
    let r = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 10),
        }},
        "status": {"capacity": r, "allocatable": r, "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn pod(name: String, labels: Value, extra: Value) -> Value {
    let mut spec = json!({
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
        "terminationGracePeriodSeconds": 0,
        // As upstream's scheduler_perf pod templates: no service-account token volume.
        "automountServiceAccountToken": false
    });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels}, "spec": spec})
}

fn bound_to(mut p: Value, i: usize, nodes: usize) -> Value {
    p["spec"]["nodeName"] = json!(format!("node-{}", i % nodes));
    p
}

fn anti(i: usize) -> Value {
    pod(
        format!("anti-{i}"),
        json!({"color": "green"}),
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"color": "green"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
    )
}

fn spread(i: usize) -> Value {
    pod(
        format!("spread-{i}"),
        json!({"app": "spread"}),
        json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
    )
}

fn preferred(i: usize) -> Value {
    pod(
        format!("pref-{i}"),
        json!({"color": "blue"}),
        json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"labelSelector": {"matchLabels": {"color": "blue"}},
                "topologyKey": "kubernetes.io/hostname"}}]}}}),
    )
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "SchedulingBasic",
            nodes: 5000,
            init_pods: 1000,
            measure_pods: 10000,
            upstream: "680",
            node: node_default,
            init: |i| bound_to(pod(format!("init-{i}"), json!({}), json!({})), i, 5000),
            measure: |i| pod(format!("pod-{i}"), json!({}), json!({})),
        },
        Workload {
            name: "SchedulingPodAntiAffinity",
            nodes: 5000,
            init_pods: 1000,
            measure_pods: 1000,
            upstream: "60",
            node: node_default,
            init: |i| {
                let mut p = anti(i);
                p["metadata"]["name"] = json!(format!("init-{i}"));
                bound_to(p, i, 5000)
            },
            measure: anti,
        },
        Workload {
            name: "PodTopologySpread",
            nodes: 5000,
            init_pods: 1000,
            measure_pods: 2000,
            upstream: "55-90",
            node: node_default,
            init: |i| bound_to(pod(format!("init-{i}"), json!({}), json!({})), i, 5000),
            measure: spread,
        },
        Workload {
            name: "PreferredPodAffinity",
            nodes: 5000,
            init_pods: 1000,
            measure_pods: 1000,
            upstream: "55-90",
            node: node_default,
            init: |i| {
                let mut p = preferred(i);
                p["metadata"]["name"] = json!(format!("init-{i}"));
                bound_to(p, i, 5000)
            },
            measure: preferred,
        },
        Workload {
            name: "Preemption",
            nodes: 500,
            init_pods: 2000,
            measure_pods: 500,
            upstream: "570",
            node: node_default,
            // Four 1-cpu low-priority pods fill each 4-cpu node.
            init: |i| {
                let mut p = pod(
                    format!("low-{i}"),
                    json!({}),
                    json!({"priorityClassName": "low"}),
                );
                p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
                bound_to(p, i, 500)
            },
            // Each high-priority pod needs three of them gone.
            measure: |i| {
                let mut p = pod(
                    format!("high-{i}"),
                    json!({}),
                    json!({"priorityClassName": "high"}),
                );
                p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("3");
                p
            },
        },
    ]
}

async fn create_all<K>(api: Api<K>, objs: Vec<Value>) -> Duration
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let start = Instant::now();
    let pp = PostParams::default();
    let results: Vec<_> = futures::stream::iter(objs)
        .map(|o| {
            let api = api.clone();
            let pp = pp.clone();
            async move {
                let obj: K = serde_json::from_value(o).expect("a valid object");
                api.create(&pp, &obj).await
            }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    for r in results {
        r.expect("creating an object");
    }
    start.elapsed()
}

struct Row {
    workload: &'static str,
    mode: &'static str,
    nodes: usize,
    pods: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    upstream: &'static str,
}

fn scale(n: usize, f: f64) -> usize {
    ((n as f64 * f).round() as usize).max(1)
}

async fn run(w: &Workload, mode: &'static str, f: f64) -> Row {
    let server = ApiServer::start();
    let client = machinery::client::build_client(
        Some(&server.dir.path().join("admin.kubeconfig")),
        &machinery::client::user_agent("scheduler-perf"),
    )
    .await
    .expect("a client");
    let (nodes, init, measure) = (
        scale(w.nodes, f),
        scale(w.init_pods, f),
        scale(w.measure_pods, f),
    );
    let pcs: Api<PriorityClass> = Api::all(client.clone());
    for (name, value) in [("low", 1), ("high", 1000)] {
        let pc: PriorityClass =
            serde_json::from_value(json!({"metadata": {"name": name}, "value": value})).unwrap();
        pcs.create(&PostParams::default(), &pc)
            .await
            .expect("a priority class");
    }
    // No controller-manager runs here: the ServiceAccount admission needs the namespace's
    // default account to exist before any pod.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), "default");
    let sa = serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap();
    sas.create(&PostParams::default(), &sa)
        .await
        .expect("the default service account");
    let node_objs: Vec<Value> = (0..nodes).map(w.node).collect();
    let t_nodes = create_all(Api::<Node>::all(client.clone()), node_objs).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let init_objs: Vec<Value> = (0..init)
        .map(|i| {
            let mut p = (w.init)(i);
            if p["spec"]["nodeName"].is_string() {
                p["spec"]["nodeName"] = json!(format!("node-{}", i % nodes));
            }
            p
        })
        .collect();
    let t_init = create_all(pods.clone(), init_objs).await;
    let t_measure = create_all(pods.clone(), (0..measure).map(w.measure).collect()).await;
    eprintln!(
        "{} [{mode}]: created {nodes} nodes in {:.1}s, {init} bound pods in {:.1}s, {measure} pending pods in {:.1}s",
        w.name,
        t_nodes.as_secs_f64(),
        t_init.as_secs_f64(),
        t_measure.as_secs_f64()
    );

    let mut extra = Vec::new();
    if mode == "recording" {
        extra.push((
            "DefaultBinder",
            PluginInfo {
                factory: Arc::new(|_, _| Ok(Arc::new(RecordingBinder) as Arc<dyn Plugin>)),
                points: &["bind"],
                validate_args: |_| Ok(()),
            },
        ));
    }
    let registry = scheduler_lite::registry_with(extra);
    let recorder = if mode == "recording" {
        machinery::events::EventRecorder::discard()
    } else {
        machinery::events::EventRecorder::start(client.clone(), "default-scheduler", "")
    };
    let mut config = scheduler_lite::config::Config::default();
    if let Some(p) = std::env::var("SCHED_PERF_PARALLELISM")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.parallelism = p;
    }
    let sched = scheduler_lite::Scheduler::new(config, &registry, Some(client.clone()), recorder)
        .expect("the scheduler");
    let factory = machinery::informer::InformerFactory::new(client.clone());
    scheduler_lite::informers::register(&sched, &factory);
    factory.start();
    factory.wait_synced().await;
    while sched.queue.pending().active < measure {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The clock starts with every measured pod queued.
    let start = Instant::now();
    let thread = sched.start();
    let deadline = start + Duration::from_secs(600);
    while (sched.bound.load(Ordering::Relaxed) as usize) < measure {
        if Instant::now() > deadline {
            panic!(
                "{}: only {} of {measure} pods bound after 600 s",
                w.name,
                sched.bound.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if std::env::var_os("SCHED_PERF_TRACE").is_some() && start.elapsed().as_millis() % 250 < 6 {
            eprintln!(
                "{:?} bound {} pending {:?}",
                start.elapsed(),
                sched.bound.load(Ordering::Relaxed),
                sched.queue.pending()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let q = |x| {
        sched
            .metrics
            .attempt_quantile("default-scheduler", "scheduled", x)
            .unwrap_or(0.0)
            * 1000.0
    };
    let row = Row {
        workload: w.name,
        mode,
        nodes,
        pods: measure,
        secs,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        upstream: w.upstream,
    };
    sched.queue.close();
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    eprintln!("{} [{mode}]: {:.0} pods/s", w.name, measure as f64 / secs);
    row
}

fn main() {
    let f: f64 = std::env::var("SCHED_PERF_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let only: Option<Vec<String>> = std::env::var("SCHED_PERF_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let modes: Vec<&'static str> = match std::env::var("SCHED_PERF_MODES").as_deref() {
        Ok("real") => vec!["real"],
        Ok("recording") => vec!["recording"],
        _ => vec!["real", "recording"],
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut rows = Vec::new();
    for w in workloads() {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == w.name))
        {
            continue;
        }
        for mode in &modes {
            rows.push(rt.block_on(run(&w, mode, f)));
        }
    }
    println!("| workload | binder | nodes | measured pods | pods/s | attempt p50 (ms) | attempt p99 (ms) | upstream threshold (published, other hardware) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} |",
            r.workload,
            r.mode,
            r.nodes,
            r.pods,
            r.pods as f64 / r.secs,
            r.p50_ms,
            r.p99_ms,
            r.upstream
        );
    }
}
