//! Fake nodes for the scheduler's end-to-end tests: Node objects with capacity, labels and taints
//! but no kubelet behind them, a `capstan scheduler` process (killed on drop), and a background
//! "deleter" that finishes the graceful deletion of pods that got a deletionTimestamp with a
//! grace-0 delete, as a node's kubelet would once the containers stopped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::ApiServer;

/// A node to create.
pub struct FakeNode<'a> {
    pub name: &'a str,
    pub cpu: &'a str,
    pub memory: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    /// (key, value, effect)
    pub taints: &'a [(&'a str, &'a str, &'a str)],
}

impl<'a> FakeNode<'a> {
    pub fn new(name: &'a str, cpu: &'a str, memory: &'a str) -> Self {
        FakeNode {
            name,
            cpu,
            memory,
            labels: &[],
            taints: &[],
        }
    }
}

/// The Node object of `n`: Ready, with its capacity as allocatable.
pub fn node_json(n: &FakeNode) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), n.name.into());
    for (k, v) in n.labels {
        labels.insert(k.to_string(), v.to_string().into());
    }
    let taints: Vec<Value> = n
        .taints
        .iter()
        .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
        .collect();
    let resources = json!({"cpu": n.cpu, "memory": n.memory, "pods": "110"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"taints": taints},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
        }
    })
}

pub fn create_node(api: &ApiServer, n: &FakeNode) {
    post(api, "/api/v1/nodes", &node_json(n));
}

/// POSTs `body` and panics unless it was created.
pub fn post(api: &ApiServer, path: &str, body: &Value) -> Value {
    let (code, out) = api.http(
        "POST",
        path,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!(code == 201 || code == 200, "POST {path} → {code}: {out}");
    out
}

/// A pod in `default` with one container requesting `cpu`, plus `extra` merged into the spec.
pub fn pod_json(name: &str, cpu: &str, labels: Value, extra_spec: Value) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "c",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": cpu, "memory": "10Mi"}}
        }]
    });
    if let Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec
    })
}

pub fn create_pod(api: &ApiServer, pod: &Value) {
    post(api, "/api/v1/namespaces/default/pods", pod);
}

pub fn get_pod(api: &ApiServer, name: &str) -> Option<Value> {
    let (code, v) = api.http(
        "GET",
        &format!("/api/v1/namespaces/default/pods/{name}"),
        "",
        b"",
    );
    (code == 200).then_some(v)
}

/// The node a pod is bound to.
pub fn node_of(api: &ApiServer, name: &str) -> Option<String> {
    get_pod(api, name)?["spec"]["nodeName"]
        .as_str()
        .map(str::to_string)
}

/// The messages of the pod's events with `reason`.
pub fn event_messages(api: &ApiServer, pod: &str, reason: &str) -> Vec<String> {
    let (_, v) = api.http(
        "GET",
        &format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3D{pod}"),
        "",
        b"",
    );
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// A `capstan scheduler` process; killed on drop.
pub struct SchedulerProcess {
    child: Child,
    pub metrics_addr: String,
    _config: Option<tempfile::NamedTempFile>,
}

impl SchedulerProcess {
    /// Starts a scheduler against `api`, with a KubeSchedulerConfiguration when given, and waits
    /// until it serves /healthz.
    pub fn start(api: &ApiServer, config: Option<&str>) -> Self {
        let port = super::free_port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["scheduler", "--kubeconfig"])
            .arg(api.kubeconfig())
            .args(["--bind-address", &metrics_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let file = config.map(|c| {
            let f = tempfile::NamedTempFile::new().expect("a temporary config file");
            std::fs::write(f.path(), c).expect("writing the scheduler config");
            f
        });
        if let Some(f) = &file {
            cmd.arg("--config").arg(f.path());
        }
        let mut child = cmd.spawn().expect("starting capstan scheduler");
        // Keep draining stderr (the log) so the scheduler never blocks on a full pipe; echo it
        // when SCHEDULER_LOG is set.
        let stderr = child.stderr.take().expect("piped stderr");
        let echo = std::env::var_os("SCHEDULER_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[scheduler] {line}");
                }
            }
        });
        let proc = SchedulerProcess {
            child,
            metrics_addr,
            _config: file,
        };
        super::eventually(Duration::from_secs(30), "the scheduler's /healthz", || {
            std::net::TcpStream::connect(&proc.metrics_addr).is_ok()
        });
        proc
    }

    /// GET `path` on the metrics/health server.
    pub fn get(&self, path: &str) -> (u16, String) {
        let (code, body) = super::http_raw(&self.metrics_addr, "GET", path, "", b"");
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Confirms graceful pod deletions with a grace-0 delete, as kubelets would; stops on drop.
pub struct Deleter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Deleter {
    pub fn start(api: &ApiServer) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = api.addr.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let (_, body) = super::http_raw(&addr, "GET", "/api/v1/pods", "", b"");
                let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for p in list["items"].as_array().into_iter().flatten() {
                    if p["metadata"]["deletionTimestamp"].is_null() {
                        continue;
                    }
                    let path = format!(
                        "/api/v1/namespaces/{}/pods/{}",
                        p["metadata"]["namespace"].as_str().unwrap_or_default(),
                        p["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
                    super::http_raw(
                        &addr,
                        "DELETE",
                        &path,
                        "application/json",
                        body.to_string().as_bytes(),
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Deleter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Deleter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
