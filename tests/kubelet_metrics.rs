//! The kubelet's observability endpoints and `kubectl top` end to end, with the built-in runtime
//! and with containerd: `/metrics` (upstream's metric names, a pod start counted in
//! `kubelet_pod_start_duration_seconds`), `/stats/summary` (the node and the pod with non-zero
//! CPU and memory, a CPU rate on the second read), `/metrics/resource` (the container's samples),
//! `/pods` (the pod) and `/configz` (the effective configuration) on the kubelet's HTTPS server;
//! then apiserver-lite's `metrics.k8s.io` through `kubectl top nodes` / `kubectl top pods`
//! (installed kubectl) for a pod spinning in a busy loop under a CPU limit, a label selector,
//! `kubectl get --raw` of one PodMetrics and the NotFound of a pod without metrics.
//!
//! The kubelet's self-signed certificate is not verified (`curl -k`); requests carry the cluster
//! admin's client certificate, which the kubelet authorizes with a SubjectAccessReview. Everything the test makes
//! is removed by the harness' guards.

mod common;

use std::time::Duration;

use common::kubelet::{container_status, get_pod, Node, NodeRuntime};
use common::{eventually, ApiServer};
use serde_json::Value;

/// GET of a kubelet endpoint over HTTPS as the cluster admin (certificate not verified):
/// (status, body).
fn kubelet_get(api: &ApiServer, node: &Node, path: &str) -> (u16, String) {
    node.kubelet_get(api, path)
}

fn kubelet_json(api: &ApiServer, node: &Node, path: &str) -> Value {
    let (code, body) = kubelet_get(api, node, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
        .and_then(|l| {
            let rest = &l[prefix.len()..];
            let rest = if rest.starts_with('{') {
                &rest[rest.find('}')? + 1..]
            } else {
                rest
            };
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// Millicores of a `kubectl top` CPU column (`250m`, `1`).
fn millicores(q: &str) -> u64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => q.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

/// The row of `name` in a `kubectl top` table, split into columns.
fn top_row(table: &str, name: &str) -> Option<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(name))
}

fn metrics_end_to_end(runtime: NodeRuntime) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let mut node = Node::start_ready(&api, "kubelet-metrics", runtime);
    let name = node.name.clone();

    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: busy, labels: {{app: busy}}}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
    resources:
      limits: {{cpu: 200m, memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {{name: idle, labels: {{app: idle}}}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    );
    node.apply(&api, "pods.yaml", &manifest);
    eventually(Duration::from_secs(90), "the pods run", || {
        node.assert_alive();
        ["busy", "idle"].iter().all(|p| {
            get_pod(&api, "default", p).is_some_and(|pod| {
                let c = if *p == "busy" { "spin" } else { "sleeper" };
                !container_status(&pod, c)["state"]["running"].is_null()
            })
        })
    });

    // /metrics: upstream's names; the pod starts were counted.
    let (code, metrics) = kubelet_get(&api, &node, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    for family in [
        "kubelet_pod_start_duration_seconds",
        "kubelet_pod_worker_duration_seconds",
        "kubelet_pleg_relist_duration_seconds",
        "kubelet_pleg_relist_interval_seconds",
        "kubelet_running_pods",
        "kubelet_running_containers",
        "kubelet_runtime_operations_total",
        "kubelet_runtime_operations_duration_seconds",
        "kubelet_runtime_operations_errors_total",
        "kubelet_node_name",
        "kubelet_started_pods_total",
        "kubelet_started_containers_total",
        "process_cpu_seconds_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "/metrics lacks {family}:\n{metrics}"
        );
    }
    let count = sample(&metrics, "kubelet_pod_start_duration_seconds_count").unwrap_or(0.0);
    assert!(
        count >= 2.0,
        "two pod starts observed, got {count}:\n{metrics}"
    );
    assert!(sample(&metrics, "kubelet_started_pods_total").unwrap_or(0.0) >= 2.0);
    assert!(
        sample(
            &metrics,
            "kubelet_runtime_operations_total{operation_type=\"run_podsandbox\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("kubelet_node_name{{node=\"{name}\"}}")),
        Some(1.0)
    );
    eventually(Duration::from_secs(30), "the PLEG counts the pods", || {
        let (_, m) = kubelet_get(&api, &node, "/metrics");
        sample(&m, "kubelet_running_pods").unwrap_or(0.0) >= 2.0
            && sample(
                &m,
                "kubelet_running_containers{container_state=\"running\"}",
            )
            .unwrap_or(0.0)
                >= 2.0
    });

    // /stats/summary: the node and the busy pod with non-zero CPU and memory; a CPU rate once
    // there is an earlier sample.
    let pod_stats = |s: &Value, pod: &str| -> Value {
        s["pods"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["podRef"]["name"] == pod).cloned())
            .unwrap_or(Value::Null)
    };
    let mut summary = Value::Null;
    eventually(
        Duration::from_secs(30),
        "the summary has a CPU rate of the busy pod",
        || {
            summary = kubelet_json(&api, &node, "/stats/summary");
            let busy = pod_stats(&summary, "busy");
            busy["containers"][0]["cpu"]["usageNanoCores"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    );
    assert_eq!(summary["node"]["nodeName"], name.as_str());
    for path in [
        "/node/cpu/usageCoreNanoSeconds",
        "/node/cpu/usageNanoCores",
        "/node/memory/workingSetBytes",
        "/node/memory/availableBytes",
        "/node/fs/capacityBytes",
        // containerd reports the image filesystem's usage only after its first periodic pass.
        "/node/runtime/imageFs/capacityBytes",
        "/node/rlimit/maxpid",
    ] {
        assert!(
            summary.pointer(path).and_then(Value::as_u64).unwrap_or(0) > 0,
            "{path} in {summary:#}"
        );
    }
    let busy = pod_stats(&summary, "busy");
    assert_eq!(busy["podRef"]["namespace"], "default");
    let spin = &busy["containers"][0];
    assert_eq!(spin["name"], "spin");
    for path in [
        "/cpu/usageCoreNanoSeconds",
        "/memory/workingSetBytes",
        "/logs/capacityBytes",
    ] {
        assert!(
            spin.pointer(path).and_then(Value::as_u64).unwrap_or(0) > 0,
            "container {path} in {busy:#}"
        );
    }
    assert!(busy["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0) > 0);
    assert!(busy["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0);
    assert!(!pod_stats(&summary, "idle").is_null(), "{summary:#}");

    // /metrics/resource: what metrics-server (and apiserver-lite) scrape.
    let (code, resource) = kubelet_get(&api, &node, "/metrics/resource");
    assert_eq!(code, 200);
    let spin_labels = "{container=\"spin\",namespace=\"default\",pod=\"busy\"}";
    for prefix in [
        format!("container_cpu_usage_seconds_total{spin_labels}"),
        format!("container_memory_working_set_bytes{spin_labels}"),
        format!("container_start_time_seconds{spin_labels}"),
        "node_cpu_usage_seconds_total".to_string(),
        "node_memory_working_set_bytes".to_string(),
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"busy\"}".to_string(),
    ] {
        assert!(
            sample(&resource, &prefix).unwrap_or(0.0) > 0.0,
            "{prefix} in\n{resource}"
        );
    }
    assert_eq!(sample(&resource, "resource_scrape_error"), Some(0.0));

    // /pods and /configz.
    let pods = kubelet_json(&api, &node, "/pods");
    assert_eq!(pods["kind"], "PodList");
    let names: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"busy") && names.contains(&"idle"),
        "{names:?}"
    );
    let configz = kubelet_json(&api, &node, "/configz");
    let cfg = &configz["kubeletconfig"];
    assert_eq!(cfg["kind"], "KubeletConfiguration");
    assert_eq!(cfg["port"], node.port);
    assert_eq!(cfg["cgroupRoot"], node.cgroup_root.as_str());

    // kubectl top, through apiserver-lite's metrics.k8s.io.
    eventually(
        Duration::from_secs(60),
        "kubectl top nodes shows usage",
        || {
            let out = api.kubectl(&["top", "nodes"]);
            let table = String::from_utf8_lossy(&out.stdout);
            out.status.success()
                && top_row(&table, &name).is_some_and(|cols| {
                    cols.len() >= 5 && millicores(&cols[1]) > 0 && cols[3] != "0Mi"
                })
        },
    );
    eventually(
        Duration::from_secs(60),
        "kubectl top pods shows the busy loop",
        || {
            let out = api.kubectl(&["top", "pods"]);
            let table = String::from_utf8_lossy(&out.stdout);
            out.status.success()
                && top_row(&table, "busy").is_some_and(|cols| millicores(&cols[1]) > 0)
                && top_row(&table, "idle").is_some()
        },
    );
    eprintln!(
        "{}\n{}",
        api.kubectl_ok(&["top", "nodes"]),
        api.kubectl_ok(&["top", "pods"])
    );
    let selected = api.kubectl_ok(&["top", "pods", "-l", "app=busy", "--containers"]);
    let row = top_row(&selected, "busy").unwrap_or_else(|| panic!("{selected}"));
    assert_eq!(row[1], "spin", "{selected}");
    assert!(millicores(&row[2]) > 0, "{selected}");
    assert!(top_row(&selected, "idle").is_none(), "{selected}");

    let raw: Value = serde_json::from_str(&api.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/busy",
    ]))
    .unwrap();
    assert_eq!(raw["kind"], "PodMetrics");
    assert_eq!(raw["containers"][0]["name"], "spin");
    assert!(raw["window"].as_str().is_some_and(|w| w.ends_with('s')));
    let err = api.kubectl_err(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
    ]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    api.kubectl_ok(&[
        "delete",
        "pod",
        "busy",
        "idle",
        "--wait=true",
        "--timeout=60s",
    ]);
    drop(node);
}

#[test]
fn metrics_stats_and_top_with_the_builtin_runtime() {
    metrics_end_to_end(NodeRuntime::BuiltIn);
}

#[test]
fn metrics_stats_and_top_with_containerd() {
    metrics_end_to_end(NodeRuntime::Containerd);
}
