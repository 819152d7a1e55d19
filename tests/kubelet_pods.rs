//! `capstan kubelet` running pods against apiserver-lite, with the built-in runtime in-process,
//! Debian's CNI plugins on a bridge this test makes, and images from the local test registry
//! through the docker.io mirror. Checked through the API (kubectl) and the CRI log files:
//! a pod with a readiness probe, an init container, environment from a ConfigMap and a ConfigMap
//! volume runs to Ready; a container that keeps failing goes into CrashLoopBackOff; deleting the
//! pods stops their containers within the grace period and the API objects go away.
//!
//! Everything the test makes — kubelet, supervisors and containers, the bridge, pod cgroups, the
//! root dir — is removed by a guard, also when an assertion fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, ApiServer};
use serde_json::Value;

/// The kubelet child plus what it made on the host.
struct Node {
    child: Child,
    log: PathBuf,
    root: PathBuf,
    bridge: String,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Supervisors (and with them their containers) outlive the kubelet by design: stop them.
        let root = self.root.to_string_lossy().into_owned();
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("supervise --dir {root}")])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
        // Unmount whatever is left under the root (rootfs overlays, namespace pins, tmpfs).
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let mut points: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|p| p.starts_with(&root))
                .collect();
            points.sort_by_key(|p| std::cmp::Reverse(p.len()));
            for p in points {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
        // The QoS cgroups the kubelet made and the runtime's supervisors cgroup (empty once its
        // pods are gone).
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                for d in ["capstan/supervisors", "capstan/pods", "capstan"] {
                    let _ = std::fs::remove_dir(h.path().join(d));
                }
                let kubepods = h.path().join("kubepods");
                for d in ["besteffort", "burstable"] {
                    let _ = std::fs::remove_dir(kubepods.join(d));
                }
                let _ = std::fs::remove_dir(&kubepods);
            }
        }
    }
}

fn test_images() {
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-images.sh"
        ))
        .stdout(Stdio::null())
        .status()
        .expect("running scripts/test-images.sh");
    assert!(status.success(), "scripts/test-images.sh failed");
}

fn start_node(api: &ApiServer, name: &str) -> Node {
    let pid = std::process::id();
    let root = PathBuf::from(format!("/var/lib/capstan-test/kubelet-{pid}"));
    let _ = std::fs::remove_dir_all(&root);
    let net = root.join("net.d");
    std::fs::create_dir_all(&net).unwrap();
    let bridge = format!("kt{}", pid % 100_000);
    let subnet = format!("10.{}.{}.0/24", 100 + (pid % 50), pid % 250);
    std::fs::write(
        net.join("10-test.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "kubelet-test",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                          "dataDir": root.join("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let log = root.join("kubelet.log");
    let kubeconfig = api.kubeconfig();
    let args: Vec<String> = vec![
        "kubelet".into(),
        "--kubeconfig".into(),
        kubeconfig.to_string_lossy().into(),
        "--root-dir".into(),
        root.join("kubelet").to_string_lossy().into(),
        "--hostname-override".into(),
        name.into(),
        "--cgroup-root".into(),
        "/".into(),
        "--pod-logs-dir".into(),
        root.join("logs").to_string_lossy().into(),
        "--registry-config-dir".into(),
        "/var/lib/capstan-test/certs.d".into(),
        "--cni-conf-dir".into(),
        net.to_string_lossy().into(),
        "--cni-bin-dir".into(),
        "/usr/lib/cni".into(),
        "--cni-cache-dir".into(),
        root.join("cni-cache").to_string_lossy().into(),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(&args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting capstan kubelet");
    Node {
        child,
        log,
        root,
        bridge,
    }
}

fn pod(api: &ApiServer, name: &str) -> Option<Value> {
    let out = api.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The text of a container's CRI log (the message part of each line).
fn container_log(logs: &Path, pod: &str, container: &str) -> String {
    let Ok(dirs) = std::fs::read_dir(logs) else {
        return String::new();
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("default_{pod}_")) {
            let file = d.path().join(container).join("0.log");
            let text = std::fs::read_to_string(file).unwrap_or_default();
            return text
                .lines()
                .filter_map(|l| l.splitn(4, ' ').nth(3))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }
    String::new()
}

#[test]
fn pods_run_to_ready_crash_loop_and_terminate() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    test_images();
    let api = ApiServer::start();
    let name = format!("kubelet-pods-{}", std::process::id());
    let node = start_node(&api, &name);
    eventually(Duration::from_secs(30), "the node turns Ready", || {
        let out = api.kubectl(&[
            "get",
            "node",
            &name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout) == "True"
    });

    let manifest = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: "hello from a configmap", mode: "fast"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 2
  volumes:
  - name: cfg
    configMap: {{name: settings}}
  - name: scratch
    emptyDir: {{}}
  initContainers:
  - name: prepare
    image: busybox
    command: ["sh", "-c", "echo prepared > /scratch/ready"]
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /scratch/ready; cat /etc/cfg/greeting; echo; echo MODE=$MODE; trap 'exit 0' TERM; while true; do sleep 1; done"]
    env:
    - name: MODE
      valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}
    volumeMounts:
    - {{name: cfg, mountPath: /etc/cfg}}
    - {{name: scratch, mountPath: /scratch}}
    readinessProbe:
      exec: {{command: ["test", "-f", "/scratch/ready"]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: crasher}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: fail
    image: busybox
    command: ["sh", "-c", "echo failing; exit 3"]
"#
    );
    let path = node.root.join("pods.yaml");
    std::fs::write(&path, manifest).unwrap();
    api.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);

    eventually(Duration::from_secs(60), "pod web is Ready", || {
        pod(&api, "web").is_some_and(|p| is_ready(&p)) || {
            assert!(
                !node.log().contains("panicked"),
                "kubelet log:\n{}",
                node.log()
            );
            false
        }
    });
    let web = pod(&api, "web").unwrap();
    assert_eq!(web["status"]["phase"], "Running");
    assert!(web["status"]["podIP"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.")));
    assert_eq!(web["status"]["qosClass"], "BestEffort");
    let init = &web["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    let app = &web["status"]["containerStatuses"][0];
    assert!(
        app["containerID"]
            .as_str()
            .unwrap()
            .starts_with("capstan://"),
        "{app}"
    );
    assert_eq!(app["ready"], true);

    let logs = node.root.join("logs");
    eventually(
        Duration::from_secs(10),
        "the app's log shows its inputs",
        || {
            let log = container_log(&logs, "web", "app");
            log.contains("prepared")
                && log.contains("hello from a configmap")
                && log.contains("MODE=fast")
        },
    );

    eventually(Duration::from_secs(45), "crasher backs off", || {
        pod(&api, "crasher").is_some_and(|p| {
            let c = &p["status"]["containerStatuses"][0];
            c["restartCount"].as_i64().unwrap_or(0) >= 1
                && c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && c["lastState"]["terminated"]["exitCode"] == 3
        })
    });

    api.kubectl_ok(&[
        "delete",
        "pod",
        "web",
        "crasher",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(pod(&api, "web").is_none() && pod(&api, "crasher").is_none());
    let root = node.root.to_string_lossy().into_owned();
    eventually(
        Duration::from_secs(10),
        "no supervisor is left for the deleted pods",
        || {
            let out = Command::new("pgrep")
                .args(["-f", &format!("supervise --dir {root}")])
                .output()
                .unwrap();
            out.stdout.is_empty()
        },
    );
    drop(node);
}
