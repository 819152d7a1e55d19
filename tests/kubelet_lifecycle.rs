//! The pod lifecycle end to end: `capstan kubelet` against apiserver-lite, once with the built-in
//! runtime and once with Debian's containerd (`--container-runtime-endpoint`), checked through
//! the API (`kubectl`), the kubelet's events and what containers leave on the host:
//!
//! - init containers run in order and sidecars (init containers with `restartPolicy: Always`)
//!   start in order before the app and keep running (the order is a shared emptyDir file);
//! - a failing liveness probe (exec and httpGet) restarts the container: restartCount 1, lastState
//!   terminated, events `Unhealthy` and `Killing`;
//! - readiness gates Ready (a hostPath file flipped from the host);
//! - termination messages from `/dev/termination-log` and, with `FallbackToLogsOnError`, from the
//!   log tail;
//! - graceful deletion runs the preStop hook, a container that exits on TERM goes at once, one
//!   that ignores TERM is killed after terminationGracePeriodSeconds and not before, then the API
//!   object is gone;
//! - kill -9 of the kubelet leaves containers running and a restarted kubelet adopts them: the
//!   same container IDs, PIDs (found through `/proc/<pid>/environ`) and restartCount.
//!
//! Every node, container, mount and cgroup is removed by the node's guard, also on failure.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::kubelet::{
    container_status, get_pod, is_ready, wait_events, wait_pod, Node, NodeOptions, NodeRuntime,
};
use common::{eventually, ApiServer};
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("needs root (it runs containers); skipped");
    false
}

fn pod(api: &ApiServer, name: &str) -> Option<Value> {
    get_pod(api, "default", name)
}

fn state<'a>(p: &'a Value, c: &str, which: &str) -> &'a Value {
    &container_status(p, c)["state"][which]
}

fn restart_count(p: &Value, c: &str) -> i64 {
    container_status(p, c)["restartCount"]
        .as_i64()
        .unwrap_or(-1)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn read_secs(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The host pid of the container process whose environment holds `MARK=<mark>` and whose
/// command is `sh` (the container's first process; its children inherit the variable).
fn pid_with_mark(mark: &str) -> Option<u32> {
    let needle = format!("MARK={mark}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let has = env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes());
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if has && comm.trim() == "sh" {
            return Some(pid);
        }
    }
    None
}

fn lifecycle(runtime: NodeRuntime) {
    let api = ApiServer::start();
    let tag = match runtime {
        NodeRuntime::BuiltIn => "b",
        NodeRuntime::Containerd => "c",
    };
    let name = format!("lifecycle-{tag}-{}", std::process::id());
    let mut node = Node::start(
        &api,
        &name,
        NodeOptions {
            runtime,
            ..Default::default()
        },
    );
    node.wait_ready(&api);
    let host = node.dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let host = host.display().to_string();
    let mark = format!("adopt-{tag}-{}", std::process::id());
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: shared, emptyDir: {{}}}}]
  initContainers:
  - name: init-a
    image: busybox
    command: ["sh", "-c", "echo init-a >> /shared/order"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: side-1
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "echo side-1 >> /shared/order; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    startupProbe:
      exec: {{command: ["grep", "-q", "side-1", "/shared/order"]}}
      periodSeconds: 1
  - name: init-b
    image: busybox
    command: ["sh", "-c", "echo init-b >> /shared/order"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: side-2
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "echo side-2 >> /shared/order; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    startupProbe:
      exec: {{command: ["grep", "-q", "side-2", "/shared/order"]}}
      periodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo app >> /shared/order; cat /shared/order; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: live}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: exec
    image: busybox
    command: ["sh", "-c", "if [ -f /state/exec-ran ]; then touch /tmp/healthy; fi; touch /state/exec-ran; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    livenessProbe:
      exec: {{command: ["test", "-f", "/tmp/healthy"]}}
      periodSeconds: 1
      failureThreshold: 2
  - name: http
    image: busybox
    command: ["sh", "-c", "mkdir -p /www; if [ -f /state/http-ran ]; then echo ok > /www/healthz; fi; touch /state/http-ran; exec httpd -f -p 8080 -h /www"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    livenessProbe:
      httpGet: {{path: /healthz, port: 8080}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: gated}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: host, hostPath: {{path: "{host}", type: Directory}}}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: host, mountPath: /host}}]
    readinessProbe:
      exec: {{command: ["test", "-f", "/host/ready"]}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: messages}}
spec:
  nodeName: {name}
  restartPolicy: Never
  containers:
  - name: file
    image: busybox
    command: ["sh", "-c", "printf 'written to the file' > /dev/termination-log; echo not this; exit 0"]
  - name: logs
    image: busybox
    terminationMessagePolicy: FallbackToLogsOnError
    command: ["sh", "-c", "echo first words; echo last words; exit 4"]
---
apiVersion: v1
kind: Pod
metadata: {{name: adopt}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    env: [{{name: MARK, value: "{mark}"}}]
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    );
    node.apply(&api, "pods.yaml", &manifest);

    // Init containers and sidecars in order; sidecars keep running next to the app.
    let p = wait_pod(
        &api,
        &mut node,
        "ordered",
        Duration::from_secs(90),
        "Ready",
        is_ready,
    );
    for side in ["side-1", "side-2"] {
        assert!(state(&p, side, "running").is_object(), "{side}: {p}");
        assert_eq!(container_status(&p, side)["started"], true, "{side}");
    }
    for init in ["init-a", "init-b"] {
        assert_eq!(
            state(&p, init, "terminated")["reason"],
            "Completed",
            "{init}"
        );
    }
    eventually(
        Duration::from_secs(10),
        "the app logs the start order",
        || {
            node.container_log("default", "ordered", "app", 0)
                == "init-a\nside-1\ninit-b\nside-2\napp"
        },
    );
    wait_events(&api, "ordered", &["Created", "Started", "Pulled"]);

    // Liveness: the first instance of each container fails its probe and is restarted once.
    let p = wait_pod(
        &api,
        &mut node,
        "live",
        Duration::from_secs(90),
        "both containers restarted once by their liveness probes and Ready",
        |p| {
            is_ready(p)
                && ["exec", "http"].iter().all(|c| {
                    restart_count(p, c) == 1
                        && container_status(p, c)["lastState"]["terminated"].is_object()
                })
        },
    );
    assert!(state(&p, "exec", "running").is_object());
    wait_events(&api, "live", &["Unhealthy", "Killing", "Started"]);

    // Readiness gates Ready.
    let ready_file = Path::new(&host).join("ready");
    wait_pod(
        &api,
        &mut node,
        "gated",
        Duration::from_secs(60),
        "running, not Ready",
        |p| state(p, "app", "running").is_object() && !is_ready(p),
    );
    std::fs::write(&ready_file, "").unwrap();
    wait_pod(
        &api,
        &mut node,
        "gated",
        Duration::from_secs(30),
        "Ready",
        is_ready,
    );
    std::fs::remove_file(&ready_file).unwrap();
    let p = wait_pod(
        &api,
        &mut node,
        "gated",
        Duration::from_secs(30),
        "not Ready",
        |p| !is_ready(p),
    );
    assert_eq!(restart_count(&p, "app"), 0, "readiness never restarts");
    std::fs::write(&ready_file, "").unwrap();
    wait_pod(
        &api,
        &mut node,
        "gated",
        Duration::from_secs(30),
        "Ready again",
        is_ready,
    );

    // Termination messages.
    let p = wait_pod(
        &api,
        &mut node,
        "messages",
        Duration::from_secs(60),
        "both done",
        |p| {
            state(p, "file", "terminated").is_object() && state(p, "logs", "terminated").is_object()
        },
    );
    assert_eq!(
        state(&p, "file", "terminated")["message"],
        "written to the file"
    );
    let t = state(&p, "logs", "terminated");
    assert_eq!(t["exitCode"], 4);
    assert_eq!(t["message"], "first words\nlast words\n", "{t}");
    assert_eq!(p["status"]["phase"], "Failed");

    // Adoption after kill -9 of the kubelet.
    let before = wait_pod(
        &api,
        &mut node,
        "adopt",
        Duration::from_secs(60),
        "Ready",
        is_ready,
    );
    let id = container_status(&before, "app")["containerID"].clone();
    let pid = pid_with_mark(&mark).expect("the adopt container's process on the host");
    let live_ids: Vec<Value> = ["exec", "http"]
        .iter()
        .map(|c| container_status(&pod(&api, "live").unwrap(), c)["containerID"].clone())
        .collect();
    node.kill9();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        pid_with_mark(&mark),
        Some(pid),
        "the container outlives the kubelet"
    );
    node.restart();
    node.wait_ready(&api);
    // A new pod proves the new kubelet syncs; the old ones are left as they were.
    node.apply(
        &api,
        "after.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: after}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
        ),
    );
    wait_pod(
        &api,
        &mut node,
        "after",
        Duration::from_secs(60),
        "Ready",
        is_ready,
    );
    let after = wait_pod(
        &api,
        &mut node,
        "adopt",
        Duration::from_secs(30),
        "Ready",
        is_ready,
    );
    let c = container_status(&after, "app");
    assert_eq!(c["containerID"], id, "the same container");
    assert_eq!(c["restartCount"], 0, "no restart");
    assert_eq!(pid_with_mark(&mark), Some(pid), "the same process");
    let live = pod(&api, "live").unwrap();
    for (c, id) in ["exec", "http"].iter().zip(&live_ids) {
        assert_eq!(&container_status(&live, c)["containerID"], id, "{c}");
        assert_eq!(restart_count(&live, c), 1, "{c}");
    }

    // Graceful deletion.
    let marks = node.dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let grace: u64 = 6;
    node.apply(
        &api,
        "graceful.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: graceful}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: {grace}
  volumes: [{{name: marks, hostPath: {{path: "{marks}", type: Directory}}}}]
  containers:
  - name: stubborn
    image: busybox
    command: ["sh", "-c", "trap '' TERM; while true; do date +%s > /marks/alive; sleep 0.2; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "date +%s > /marks/prestop"]}}
  - name: polite
    image: busybox
    command: ["sh", "-c", "trap 'date +%s > /marks/polite; exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#,
            marks = marks.display()
        ),
    );
    wait_pod(
        &api,
        &mut node,
        "graceful",
        Duration::from_secs(60),
        "Ready",
        is_ready,
    );
    let deleted_at = unix_now();
    api.kubectl_ok(&["delete", "pod", "graceful", "--wait=false"]);
    eventually(
        Duration::from_secs(grace + 20),
        "graceful is gone from the API",
        || pod(&api, "graceful").is_none(),
    );
    let gone_at = unix_now();
    let prestop = read_secs(&marks.join("prestop")).expect("the preStop hook ran");
    let polite = read_secs(&marks.join("polite")).expect("polite got TERM");
    let alive = read_secs(&marks.join("alive")).expect("stubborn ran");
    assert!(
        prestop <= deleted_at + 2,
        "preStop at {prestop}, deleted at {deleted_at}"
    );
    assert!(
        polite <= deleted_at + 2,
        "polite exited at {polite}, deleted at {deleted_at}"
    );
    assert!(
        alive + 1 >= deleted_at + grace - 1,
        "stubborn was killed at {alive}, before the grace period ({grace}s from {deleted_at}); kubelet log:\n{}",
        node.log()
    );
    assert!(gone_at >= deleted_at + grace - 1);
    wait_events(&api, "graceful", &["Killing"]);
    node.assert_alive();

    api.kubectl_ok(&[
        "delete",
        "pod",
        "ordered",
        "live",
        "gated",
        "messages",
        "adopt",
        "after",
        "--wait=true",
        "--timeout=60s",
    ]);
    drop(node);
}

#[test]
fn lifecycle_builtin_runtime() {
    if root() {
        lifecycle(NodeRuntime::BuiltIn);
    }
}

#[test]
fn lifecycle_containerd() {
    if root() {
        lifecycle(NodeRuntime::Containerd);
    }
}
