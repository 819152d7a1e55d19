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

use std::time::Duration;

use common::kubelet::{get_pod, is_ready, Node, NodeOptions};
use common::{eventually, ApiServer};

fn pod(api: &ApiServer, name: &str) -> Option<serde_json::Value> {
    get_pod(api, "default", name)
}

#[test]
fn pods_run_to_ready_crash_loop_and_terminate() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let name = format!("kubelet-pods-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
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
    node.apply(&api, "pods.yaml", &manifest);

    eventually(Duration::from_secs(60), "pod web is Ready", || {
        pod(&api, "web").is_some_and(|p| is_ready(&p)) || {
            node.assert_alive();
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
    // The pods' supervisors sit under this kubelet's cgroup root, so kubelets sharing a host
    // never share their cgroup.
    let supervisors = node.supervisor_pids();
    assert!(!supervisors.is_empty());
    for pid in supervisors {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let want = format!("{}/capstan/supervisors", node.cgroup_root);
        assert!(
            cgroups.lines().any(|l| l.ends_with(&want)),
            "supervisor {pid} is not in {want}: {cgroups}"
        );
    }

    eventually(
        Duration::from_secs(10),
        "the app's log shows its inputs",
        || {
            let log = node.container_log("default", "web", "app", 0);
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
    eventually(
        Duration::from_secs(10),
        "no supervisor is left for the deleted pods",
        || node.supervisor_pids().is_empty(),
    );
    drop(node);
}
