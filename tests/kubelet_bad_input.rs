//! Bad input for `capstan kubelet` (built-in runtime) against apiserver-lite, with upstream's
//! statuses and events:
//!
//! - an image that does not exist: `ErrImagePull`, then `ImagePullBackOff` (the image pull
//!   back-off), events `Pulling`, `Failed`, `BackOff`;
//! - a missing (not optional) configMapKeyRef / secretKeyRef: `CreateContainerConfigError` with
//!   upstream's message; the pod starts once the objects exist;
//! - a command that does not exist: `CreateContainerError` with the runtime's message (the
//!   built-in runtime, like CRI-O, makes the process at CreateContainer);
//! - a configMap volume whose ConfigMap is missing: `ContainerCreating` and `FailedMount` until
//!   it is created;
//! - impossible resource values never reach the kubelet (the API rejects them);
//! - meanwhile a healthy pod on the same node reaches Ready;
//! - the API server away (kill -9) for ~20 s while a container exits: once it is back the
//!   kubelet catches up (the status is written, the kubelet never died).
//!
//! The node's guard removes everything, also on failure.

mod common;

use std::time::Duration;

use common::kubelet::{
    container_status, get_pod, is_ready, wait_events, wait_pod, Node, NodeOptions,
};
use common::ApiServer;
use serde_json::Value;

fn pod(api: &ApiServer, name: &str) -> Option<Value> {
    get_pod(api, "default", name)
}

fn waiting(p: &Value, c: &str) -> (String, String) {
    let w = &container_status(p, c)["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or_default().to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn bad_input_gets_upstream_statuses() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let mut api = ApiServer::start();
    let name = format!("bad-input-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: no-image}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: 127.0.0.1:5000/capstan-test/does-not-exist:1
---
apiVersion: v1
kind: Pod
metadata: {{name: needs-config}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo $FROM_CM $FROM_SECRET; trap 'exit 0' TERM; while true; do sleep 1; done"]
    env:
    - name: FROM_CM
      valueFrom: {{configMapKeyRef: {{name: late-config, key: k}}}}
    - name: FROM_SECRET
      valueFrom: {{secretKeyRef: {{name: late-secret, key: s}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: no-command}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["/does/not/exist"]
---
apiVersion: v1
kind: Pod
metadata: {{name: no-volume}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: cfg, configMap: {{name: late-volume}}}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /cfg/file; echo; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: healthy}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    );
    node.apply(&api, "pods.yaml", &manifest);

    // The healthy pod is not held up by the others.
    wait_pod(
        &api,
        &mut node,
        "healthy",
        Duration::from_secs(60),
        "Ready",
        is_ready,
    );

    // A missing image: ErrImagePull, then ImagePullBackOff, then ErrImagePull again.
    let mut seen = Vec::<String>::new();
    wait_pod(
        &api,
        &mut node,
        "no-image",
        Duration::from_secs(90),
        "ErrImagePull, ImagePullBackOff, ErrImagePull",
        |p| {
            let r = waiting(p, "app").0;
            if seen.last() != Some(&r) && !r.is_empty() {
                eprintln!("no-image: {r}");
                seen.push(r);
            }
            let i = seen.iter().position(|r| r == "ErrImagePull");
            let j = i.and_then(|i| {
                seen[i..]
                    .iter()
                    .position(|r| r == "ImagePullBackOff")
                    .map(|j| i + j)
            });
            j.is_some_and(|j| seen[j..].iter().any(|r| r == "ErrImagePull"))
        },
    );
    assert!(
        seen.iter()
            .all(|r| r == "ErrImagePull" || r == "ImagePullBackOff" || r == "ContainerCreating"),
        "{seen:?}"
    );
    let p = wait_pod(
        &api,
        &mut node,
        "no-image",
        Duration::from_secs(30),
        "ImagePullBackOff",
        |p| waiting(p, "app").0 == "ImagePullBackOff",
    );
    let (_, msg) = waiting(&p, "app");
    assert!(
        msg.starts_with(
            "Back-off pulling image \"127.0.0.1:5000/capstan-test/does-not-exist:1\": ErrImagePull: "
        ),
        "{msg}"
    );
    wait_events(&api, "no-image", &["Pulling", "Failed", "BackOff"]);
    // Identical events aggregate into one object with a count (upstream's EventCorrelator).
    common::eventually(
        Duration::from_secs(30),
        "one aggregated ErrImagePull event",
        || {
            let v = api.kubectl_json(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=no-image,reason=Failed",
                "-o",
                "json",
            ]);
            let same: Vec<&Value> = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["message"] == "Error: ErrImagePull")
                .collect();
            same.len() == 1
                && same[0]["count"].as_i64().unwrap_or(0) >= 2
                && same[0]["involvedObject"]["fieldPath"] == "spec.containers{app}"
                && same[0]["type"] == "Warning"
                && same[0]["source"]["host"] == name.as_str()
                && same[0]["firstTimestamp"] != same[0]["lastTimestamp"]
        },
    );

    // Missing ConfigMap first (upstream checks env in order), then the Secret.
    let p = wait_pod(
        &api,
        &mut node,
        "needs-config",
        Duration::from_secs(30),
        "CreateContainerConfigError",
        |p| waiting(p, "app").0 == "CreateContainerConfigError",
    );
    assert_eq!(
        waiting(&p, "app").1,
        "configmap \"late-config\" not found",
        "{p}"
    );
    api.kubectl_ok(&["create", "configmap", "late-config", "--from-literal=k=v1"]);
    let p = wait_pod(
        &api,
        &mut node,
        "needs-config",
        Duration::from_secs(30),
        "the secret's CreateContainerConfigError",
        |p| waiting(p, "app").1.contains("late-secret"),
    );
    assert_eq!(
        waiting(&p, "app"),
        (
            "CreateContainerConfigError".to_string(),
            "secret \"late-secret\" not found".to_string()
        )
    );
    api.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "late-secret",
        "--from-literal=s=v2",
    ]);
    wait_pod(
        &api,
        &mut node,
        "needs-config",
        Duration::from_secs(30),
        "Ready",
        is_ready,
    );
    common::eventually(Duration::from_secs(10), "the values reach the app", || {
        node.container_log("default", "needs-config", "app", 0) == "v1 v2"
    });
    wait_events(&api, "needs-config", &["Failed", "Started"]);

    // A configMap volume whose ConfigMap is missing: ContainerCreating and FailedMount until it
    // exists.
    let p = wait_pod(
        &api,
        &mut node,
        "no-volume",
        Duration::from_secs(30),
        "ContainerCreating",
        |p| waiting(p, "app").0 == "ContainerCreating",
    );
    assert!(waiting(&p, "app").1.contains("late-volume"), "{p}");
    wait_events(&api, "no-volume", &["FailedMount"]);
    api.kubectl_ok(&[
        "create",
        "configmap",
        "late-volume",
        "--from-literal=file=mounted",
    ]);
    wait_pod(
        &api,
        &mut node,
        "no-volume",
        Duration::from_secs(60),
        "Ready",
        is_ready,
    );
    common::eventually(Duration::from_secs(10), "the file reaches the app", || {
        node.container_log("default", "no-volume", "app", 0) == "mounted"
    });

    // A command that does not exist. The built-in runtime makes the container's process at
    // CreateContainer (as CRI-O does), so the failure is upstream's CreateContainerError with
    // the runtime's message, retried on later syncs; containerd would fail at start instead
    // (RunContainerError, then a StartError termination and back-off).
    let p = wait_pod(
        &api,
        &mut node,
        "no-command",
        Duration::from_secs(60),
        "CreateContainerError",
        |p| waiting(p, "app").0 == "CreateContainerError",
    );
    let (_, msg) = waiting(&p, "app");
    assert!(
        msg.contains("\"/does/not/exist\"") && msg.contains("no such file or directory"),
        "{msg}"
    );
    assert_eq!(container_status(&p, "app")["restartCount"], 0);
    wait_events(&api, "no-command", &["Failed"]);
    // Failed creates leave no log files behind (they would count as restarts).
    let logs: Vec<_> = std::fs::read_dir(&node.pod_logs_dir)
        .unwrap()
        .flatten()
        .filter(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with("default_no-command_")
        })
        .flat_map(|d| {
            std::fs::read_dir(d.path().join("app"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        logs.is_empty(),
        "log files of a container never created: {logs:?}"
    );

    // Impossible resource values are rejected by the API; nothing reaches the kubelet.
    let bad = node.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: impossible}}
spec:
  nodeName: {name}
  containers:
  - name: app
    image: busybox
    resources:
      requests: {{memory: 2Gi}}
      limits: {{memory: 1Gi}}
"#
        ),
    )
    .unwrap();
    let err = api.kubectl_err(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("Invalid") || err.contains("invalid"), "{err}");
    assert!(pod(&api, "impossible").is_none());

    // The API server goes away while a container exits; the kubelet catches up.
    node.apply(
        &api,
        "exits.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: exits}}
spec:
  nodeName: {name}
  restartPolicy: Never
  volumes: [{{name: marks, hostPath: {{path: "{dir}", type: Directory}}}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "while [ ! -f /marks/exit-now ]; do sleep 0.2; done; exit 7"]
    volumeMounts: [{{name: marks, mountPath: /marks}}]
"#,
            dir = node.dir.display()
        ),
    );
    wait_pod(
        &api,
        &mut node,
        "exits",
        Duration::from_secs(60),
        "running",
        |p| container_status(p, "app")["state"]["running"].is_object(),
    );
    api.kill9();
    std::fs::write(node.dir.join("exit-now"), "").unwrap();
    std::thread::sleep(Duration::from_secs(20));
    node.assert_alive();
    api.restart_same_addr();
    let p = wait_pod(
        &api,
        &mut node,
        "exits",
        Duration::from_secs(60),
        "the exit written after the API came back",
        |p| p["status"]["phase"] == "Failed",
    );
    assert_eq!(
        container_status(&p, "app")["state"]["terminated"]["exitCode"],
        7
    );
    node.wait_ready(&api);
    assert!(is_ready(&pod(&api, "healthy").unwrap()));
    node.assert_alive();
    drop(node);
}
