//! `capstan kubelet` against apiserver-lite, checked with kubectl: the Node is registered with its
//! labels, taints, capacity, allocatable and nodeInfo and turns Ready; the node Lease is renewed;
//! a deleted Node is registered again; bad flags are refused with the flag named. No pods: this
//! covers the kubelet's configuration and node agent only.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kubelet::CgroupRoot;
use common::{eventually, ApiServer};
use serde_json::Value;

/// A `capstan kubelet` child process, killed when dropped; its stderr goes to a file that failing
/// assertions print.
struct KubeletProcess {
    child: Child,
    /// The kubelet server's port (`--port`).
    port: u16,
    log: std::path::PathBuf,
}

impl KubeletProcess {
    fn start(args: &[&str], log: &Path) -> KubeletProcess {
        let err = std::fs::File::create(log).expect("creating the kubelet log");
        // A free server port and no /healthz server: kubelets of parallel tests share the host.
        let port = common::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .arg("kubelet")
            .args(args)
            .args(["--port", &port.to_string(), "--healthz-port", "0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting capstan kubelet");
        KubeletProcess {
            child,
            port,
            log: log.to_path_buf(),
        }
    }

    /// Panics with the log if the kubelet has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "capstan kubelet exited ({status}); its log:\n{}",
                self.log()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KubeletProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get_json(api: &ApiServer, args: &[&str]) -> Option<Value> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let out = api.kubectl(&a);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn is_ready(node: &Value) -> bool {
    condition(node, "Ready").is_some_and(|c| c["status"] == "True")
}

fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("test-node-{}-{nanos:x}", std::process::id())
}

#[test]
fn node_registers_heartbeats_and_reregisters() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubelet.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         nodeStatusUpdateFrequency: 1s\n\
         nodeLeaseDurationSeconds: 4\n\
         kubeReserved: {cpu: 100m, memory: 64Mi}\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    let name = unique_name();
    let kubeconfig = api.kubeconfig();
    // The kubelet's QoS cgroups (and its runtime's supervisors) go under a cgroup of this test,
    // removed after the kubelet by the guard (declared first, dropped last).
    let cgroup_root = CgroupRoot::make(&format!("/capstan-test-{name}"));
    // A network configuration, so the runtime reports NetworkReady (no pod runs here).
    let net_d = dir.path().join("net.d");
    std::fs::create_dir_all(&net_d).unwrap();
    std::fs::write(
        net_d.join("10-lo.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    let mut kubelet = KubeletProcess::start(
        &[
            "--cni-conf-dir",
            net_d.to_str().unwrap(),
            "--cni-bin-dir",
            "/usr/lib/cni",
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--root-dir",
            root.to_str().unwrap(),
            "--hostname-override",
            &name,
            "--node-labels",
            "a=b",
            "--register-with-taints",
            "k=v:NoSchedule",
            "--cgroup-root",
            &cgroup_root.0,
            "--node-ip",
            "127.0.0.1",
        ],
        &dir.path().join("kubelet.log"),
    );

    // The Node appears and turns Ready.
    let mut node = Value::Null;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        kubelet.assert_running();
        if let Some(n) = get_json(&api, &["get", "node", &name]) {
            if is_ready(&n) {
                node = n;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        is_ready(&node),
        "node {name} did not register Ready within 60s; kubelet log:\n{}",
        kubelet.log()
    );

    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["a"], "b", "labels: {labels}");
    assert_eq!(
        labels["kubernetes.io/hostname"],
        name.as_str(),
        "labels: {labels}"
    );
    assert_eq!(labels["kubernetes.io/os"], "linux", "labels: {labels}");
    assert_eq!(labels["beta.kubernetes.io/os"], "linux", "labels: {labels}");
    assert!(labels["kubernetes.io/arch"].is_string(), "labels: {labels}");
    let taints = &node["spec"]["taints"];
    assert_eq!(
        taints,
        &serde_json::json!([{"key": "k", "value": "v", "effect": "NoSchedule"}]),
        "taints"
    );

    let status = &node["status"];
    for r in ["cpu", "memory", "pods", "ephemeral-storage"] {
        assert!(
            status["capacity"][r].is_string() && status["allocatable"][r].is_string(),
            "capacity/allocatable lack {r}: {status}"
        );
    }
    assert_eq!(status["capacity"]["pods"], "110");
    let cpu_cap: i64 = status["capacity"]["cpu"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        status["allocatable"]["cpu"],
        format!("{}m", cpu_cap * 1000 - 100),
        "allocatable cpu = capacity − kubeReserved 100m"
    );
    let ki = |v: &Value| -> i64 {
        v.as_str()
            .and_then(|s| s.strip_suffix("Ki"))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("expected a Ki quantity, got {v}"))
    };
    assert_eq!(
        ki(&status["capacity"]["memory"]) - ki(&status["allocatable"]["memory"]),
        64 * 1024 + 100 * 1024,
        "allocatable memory = capacity − kubeReserved 64Mi − eviction threshold 100Mi"
    );

    let info = &status["nodeInfo"];
    assert!(
        info["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.33.")),
        "nodeInfo: {info}"
    );
    assert_eq!(
        info["containerRuntimeVersion"], "capstan://0.1.0",
        "nodeInfo: {info}"
    );
    assert_eq!(info["operatingSystem"], "linux", "nodeInfo: {info}");
    for f in ["kernelVersion", "osImage", "bootID", "architecture"] {
        assert!(
            info[f].as_str().is_some_and(|v| !v.is_empty()),
            "nodeInfo.{f} empty: {info}"
        );
    }
    let addresses = status["addresses"].as_array().expect("addresses");
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "InternalIP" && a["address"] == "127.0.0.1"),
        "addresses: {addresses:?}"
    );
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "Hostname" && a["address"] == name.as_str()),
        "addresses: {addresses:?}"
    );
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    for (t, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = condition(&node, t).unwrap_or_else(|| panic!("no {t} condition: {status}"));
        assert_eq!(c["status"], "False", "{t}: {c}");
        assert_eq!(c["reason"], reason, "{t}: {c}");
    }
    assert_eq!(
        status["daemonEndpoints"]["kubeletEndpoint"]["Port"],
        kubelet.port
    );

    // kubectl's table agrees.
    let table = api.kubectl_ok(&["get", "node", &name]);
    assert!(table.contains("Ready"), "kubectl get node printed {table}");

    // The Lease is held by the node, owned by the Node, and renewed. Lease and registration run
    // side by side, so the first Lease may predate the Node; the owner is added at the next
    // renewal (as upstream does), hence the wait.
    let mut lease = Value::Null;
    eventually(
        Duration::from_secs(10),
        "the lease names its Node as owner",
        || {
            lease = get_json(&api, &["get", "lease", "-n", "kube-node-lease", &name])
                .unwrap_or(Value::Null);
            lease["metadata"]["ownerReferences"][0]["kind"] == "Node"
        },
    );
    assert_eq!(
        lease["spec"]["holderIdentity"],
        name.as_str(),
        "lease: {lease}"
    );
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4, "lease: {lease}");
    let owner = &lease["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node", "lease: {lease}");
    assert_eq!(owner["uid"], node["metadata"]["uid"], "lease: {lease}");
    let first_renew = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    let mut renewed = String::new();
    eventually(
        Duration::from_secs(15),
        "the lease's renewTime to advance",
        || {
            renewed = get_json(&api, &["get", "lease", "-n", "kube-node-lease", &name])
                .and_then(|l| l["spec"]["renewTime"].as_str().map(String::from))
                .unwrap_or_default();
            renewed > first_renew
        },
    );

    // Deleted, the Node is registered again (a new object, with its labels and Ready).
    let old_uid = node["metadata"]["uid"].clone();
    api.kubectl_ok(&["delete", "node", &name]);
    let start = Instant::now();
    let mut again = Value::Null;
    while start.elapsed() < Duration::from_secs(30) {
        kubelet.assert_running();
        if let Some(n) = get_json(&api, &["get", "node", &name]) {
            if n["metadata"]["uid"] != old_uid && is_ready(&n) {
                again = n;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        is_ready(&again),
        "node {name} was not registered again within 30s of its deletion; kubelet log:\n{}",
        kubelet.log()
    );
    assert_eq!(again["metadata"]["labels"]["a"], "b");
    drop(kubelet);
}

/// Runs `capstan kubelet` with `args` and expects it to fail naming `flag`.
fn expect_refused(args: &[&str], flag: &str) {
    let out = Command::new("timeout")
        .args(["-s", "KILL", "30"])
        .arg(env!("CARGO_BIN_EXE_capstan"))
        .arg("kubelet")
        .args(args)
        .output()
        .expect("running capstan kubelet");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "capstan kubelet {args:?} should fail; it exited {:?}: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(flag),
        "capstan kubelet {args:?}: error should name {flag}, got: {stderr}"
    );
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    expect_refused(&["--root-dir", root, "--no-such-flag"], "--no-such-flag");
    expect_refused(&["--root-dir", root, "--max-pods", "many"], "--max-pods");
    expect_refused(
        &[
            "--root-dir",
            root,
            "--register-with-taints",
            "k=v:Sometimes",
        ],
        "--register-with-taints",
    );
    expect_refused(
        &[
            "--root-dir",
            root,
            "--cgroup-root",
            "/capstan-no-such-cgroup",
        ],
        "--cgroup-root",
    );
    let config = dir.path().join("bad.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: lots\n",
    )
    .unwrap();
    expect_refused(
        &["--root-dir", root, "--config", config.to_str().unwrap()],
        "maxPods",
    );
}
