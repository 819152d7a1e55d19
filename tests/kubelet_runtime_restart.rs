//! A container runtime that dies under the kubelet: the node's containerd is SIGKILLed (its shims
//! and containers stay, as in a crash), a pod is created while it is down, and containerd comes
//! back on its old state. The kubelet must survive the failing CRI calls, leave the running pod
//! alone (same container, no restart), start the new pod once the runtime answers again, and
//! report the outage on the Node meanwhile (upstream: the runtime's status errors make the Ready
//! condition False with "container runtime is down").
//!
//! Only containerd: the built-in runtime lives in the kubelet's process, so its death is the
//! kubelet's (`tests/kubelet_lifecycle.rs` kills and restarts that).

mod common;

use std::time::Duration;

use common::kubelet::{container_status, wait_pod, Node, NodeOptions, NodeRuntime};
use common::ApiServer;

fn ready_condition(api: &ApiServer, node: &str) -> (String, String) {
    let v = api.kubectl_json(&["get", "node", node]);
    let c = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    (
        c["status"].as_str().unwrap_or_default().to_string(),
        c["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn containerd_dies_and_comes_back_under_the_kubelet() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let name = format!("kubelet-rtdeath-{}", std::process::id());
    let mut node = Node::start(
        &api,
        &name,
        NodeOptions {
            runtime: NodeRuntime::Containerd,
            ..Default::default()
        },
    );
    node.wait_ready(&api);
    let pod = |pod: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
"#
        )
    };
    node.apply(&api, "before.yaml", &pod("before"));
    let before = wait_pod(
        &api,
        &mut node,
        "before",
        Duration::from_secs(120),
        "running",
        |p| p["status"]["phase"] == "Running",
    );
    let id_before = container_status(&before, "main")["containerID"].clone();

    node.kill9_containerd();
    node.apply(&api, "during.yaml", &pod("during"));
    // The kubelet notices (its runtime status check fails) and says so on the Node.
    common::eventually(
        Duration::from_secs(60),
        "the Node reports the runtime down",
        || {
            node.assert_alive();
            let (status, message) = ready_condition(&api, &name);
            status == "False" && message.contains("container runtime is down")
        },
    );
    let during = common::kubelet::get_pod(&api, "default", "during").expect("pod during");
    assert_ne!(during["status"]["phase"], "Running");

    node.start_containerd();
    wait_pod(
        &api,
        &mut node,
        "during",
        Duration::from_secs(120),
        "running after the runtime returned",
        |p| p["status"]["phase"] == "Running",
    );
    node.wait_ready(&api);
    let before = common::kubelet::get_pod(&api, "default", "before").expect("pod before");
    let c = container_status(&before, "main");
    assert_eq!(
        c["containerID"], id_before,
        "the running container was left alone"
    );
    assert_eq!(c["restartCount"], 0);
    assert!(!c["state"]["running"].is_null(), "{c}");
    node.assert_alive();
}
