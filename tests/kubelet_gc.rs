//! Container garbage collection through `capstan kubelet` (built-in runtime in-process): a
//! crash-looping pod keeps only its newest dead container in the runtime — checked through the
//! kubelet's CRI socket and the pod's log files — and once the pod is deleted its log directory
//! goes too. GC runs every minute as upstream's, so this test takes two to three minutes.
//!
//! Everything the test makes is removed by the node's guard, also when an assertion fails.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kubelet::{get_pod, Node, NodeOptions};
use common::{eventually, ApiServer};
use k8s_cri::v1 as pb;
use kubelet::runtime::Runtime;

/// The pod's log directory under the node's pod-logs dir.
fn pod_log_dir(node: &Node, ns: &str, pod: &str) -> Option<PathBuf> {
    std::fs::read_dir(&node.pod_logs_dir)
        .ok()?
        .flatten()
        .find(|d| {
            d.file_name()
                .to_string_lossy()
                .starts_with(&format!("{ns}_{pod}_"))
        })
        .map(|d| d.path())
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn crash_looping_pod_keeps_only_its_newest_dead_container() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let name = format!("kubelet-gc-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
    node.apply(
        &api,
        "crasher.yaml",
        &format!(
            r#"
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
        ),
    );

    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = node.root_dir.join("cri.sock");
    let cri = {
        let _in_tokio = tokio.enter();
        Runtime::connect(&format!("unix://{}", socket.display())).unwrap()
    };
    let uid = || {
        get_pod(&api, "default", "crasher")
            .and_then(|p| p["metadata"]["uid"].as_str().map(str::to_string))
    };
    let pod_uid = {
        let mut u = None;
        eventually(Duration::from_secs(10), "the pod exists", || {
            u = uid();
            u.is_some()
        });
        u.unwrap()
    };
    let containers = || -> Vec<pb::Container> {
        tokio
            .block_on(cri.list_containers(Some(pb::ContainerFilter {
                label_selector: kubelet::plan::labels::pod_selector(&pod_uid),
                ..Default::default()
            })))
            .unwrap_or_default()
    };

    // Restart count 2 means three containers were made; with one left, GC removed two.
    let mut seen = String::new();
    eventually(
        Duration::from_secs(180),
        "only the newest dead container of the crash-looping pod stays",
        || {
            std::thread::sleep(Duration::from_secs(1));
            node.assert_alive();
            let Some(p) = get_pod(&api, "default", "crasher") else {
                return false;
            };
            let restarts = p["status"]["containerStatuses"][0]["restartCount"]
                .as_i64()
                .unwrap_or(0);
            let cs = containers();
            let logs = pod_log_dir(&node, "default", "crasher")
                .map(|d| log_files(&d.join("fail")))
                .unwrap_or_default();
            seen = format!("restartCount {restarts}, containers {cs:?}, log files {logs:?}");
            restarts >= 2
                && cs.len() == 1
                && cs[0].state == pb::ContainerState::ContainerExited as i32
                && cs[0].metadata.as_ref().map(|m| i64::from(m.attempt)) == Some(restarts)
                && logs == vec![format!("{restarts}.log")]
        },
    );
    eprintln!("after GC: {seen}");

    api.kubectl_ok(&["delete", "pod", "crasher", "--wait=false"]);
    eventually(
        Duration::from_secs(150),
        "the deleted pod's log directory is collected",
        || {
            std::thread::sleep(Duration::from_secs(1));
            node.assert_alive();
            get_pod(&api, "default", "crasher").is_none()
                && pod_log_dir(&node, "default", "crasher").is_none()
                && containers().is_empty()
        },
    );
}
