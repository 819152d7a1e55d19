//! Static pods end to end: `capstan kubelet` runs a pod from a manifest in its
//! `--pod-manifest-path`, keeps a mirror pod of it in the API (annotated with the manifest's hash,
//! owned by the Node, carrying the static pod's status), re-creates the mirror when it is deleted
//! with kubectl while the container keeps running, restarts the pod when the manifest is edited,
//! and stops it and deletes the mirror when the manifest is removed; a static pod also starts
//! while the API server is down.
//!
//! Everything the test makes — kubelet, supervisors and containers, the bridge, pod cgroups, the
//! root dir — is removed by the node's guard, also when an assertion fails.

mod common;

use std::time::Duration;

use common::kubelet::{container_status, get_pod, Node, NodeOptions};
use common::{eventually, ApiServer};
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: static-web
  labels: {app: static-web}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo VERSION-1; trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

fn annotation<'a>(p: &'a Value, key: &str) -> &'a str {
    p["metadata"]["annotations"][key].as_str().unwrap_or("")
}

/// The running container's ID of the mirror's status, if the app runs.
fn running_id(p: &Value) -> Option<String> {
    let c = container_status(p, "app");
    c["state"]["running"]
        .is_object()
        .then(|| c["containerID"].as_str().unwrap_or("").to_string())
        .filter(|id| !id.is_empty())
}

#[test]
fn static_pod_with_mirror_pod() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let mut api = ApiServer::start();
    let node_name = format!("kubelet-static-{}", std::process::id());
    let mut node = Node::start(&api, &node_name, NodeOptions::default());
    node.wait_ready(&api);
    let manifest = node.manifest_dir.join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    // A bad manifest beside it is reported and does not stop the good one.
    std::fs::write(node.manifest_dir.join("broken.yaml"), "kind: [").unwrap();
    let mirror_name = format!("static-web-{node_name}");
    let mirror = || get_pod(&api, "default", &mirror_name);

    // 1. The static pod runs; its mirror is in the API with the static pod's status.
    eventually(
        Duration::from_secs(90),
        "the mirror pod shows the static pod running",
        || {
            node.assert_alive();
            mirror().is_some_and(|p| running_id(&p).is_some())
        },
    );
    let m = mirror().unwrap();
    let hash = annotation(&m, "kubernetes.io/config.hash").to_string();
    assert_eq!(hash.len(), 32, "{m}");
    assert_eq!(annotation(&m, "kubernetes.io/config.mirror"), hash, "{m}");
    assert_eq!(annotation(&m, "kubernetes.io/config.source"), "file", "{m}");
    assert!(
        !annotation(&m, "kubernetes.io/config.seen").is_empty(),
        "{m}"
    );
    assert_ne!(
        m["metadata"]["uid"],
        hash.as_str(),
        "the API gives the mirror its own UID"
    );
    assert_eq!(m["spec"]["nodeName"], node_name.as_str());
    let node_uid = api.kubectl_ok(&["get", "node", &node_name, "-o", "jsonpath={.metadata.uid}"]);
    let owner = &m["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node", "{m}");
    assert_eq!(owner["name"], node_name.as_str(), "{m}");
    assert_eq!(owner["uid"], node_uid.as_str(), "{m}");
    assert_eq!(owner["controller"], true, "{m}");
    assert_eq!(m["status"]["phase"], "Running", "{m}");
    let container_id = running_id(&m).unwrap();
    let log = node.log();
    assert!(
        log.contains("broken.yaml") && log.contains("couldn't parse as pod"),
        "the bad manifest is reported by name; kubelet log:\n{log}"
    );
    eventually(Duration::from_secs(10), "the app logs its version", || {
        node.container_log("default", &mirror_name, "app", 0)
            .contains("VERSION-1")
    });

    // 2. Deleting the mirror with kubectl brings it back; the container keeps running.
    let old_mirror_uid = m["metadata"]["uid"].as_str().unwrap().to_string();
    api.kubectl_ok(&["delete", "pod", &mirror_name, "--wait=false"]);
    eventually(
        Duration::from_secs(30),
        "a new mirror pod with the same running container",
        || {
            mirror().is_some_and(|p| {
                p["metadata"]["uid"] != old_mirror_uid.as_str()
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && running_id(&p).as_deref() == Some(container_id.as_str())
            })
        },
    );
    assert_eq!(
        annotation(&mirror().unwrap(), "kubernetes.io/config.mirror"),
        hash
    );

    // 3. Editing the manifest restarts the pod: a new hash, a new container.
    std::fs::write(&manifest, MANIFEST.replace("VERSION-1", "VERSION-2")).unwrap();
    eventually(
        Duration::from_secs(60),
        "the edited static pod runs under a new hash",
        || {
            mirror().is_some_and(|p| {
                let h = annotation(&p, "kubernetes.io/config.mirror");
                !h.is_empty() && h != hash && running_id(&p).is_some_and(|id| id != container_id)
            })
        },
    );
    let new_hash = annotation(&mirror().unwrap(), "kubernetes.io/config.mirror").to_string();
    // The old pod's log directory may remain beside the new one: read the new UID's.
    let new_log = node
        .pod_logs_dir
        .join(format!("default_{mirror_name}_{new_hash}/app/0.log"));
    eventually(Duration::from_secs(10), "the new version logs", || {
        std::fs::read_to_string(&new_log).is_ok_and(|l| l.contains("VERSION-2"))
    });
    eventually(
        Duration::from_secs(10),
        "only the new pod's supervisor is left after the edit",
        || node.supervisor_pids().len() == 1,
    );

    // 4. Removing the manifest stops the pod and deletes the mirror.
    std::fs::remove_file(&manifest).unwrap();
    eventually(
        Duration::from_secs(60),
        "the mirror pod is gone and nothing runs",
        || mirror().is_none() && node.supervisor_pids().is_empty(),
    );
    node.assert_alive();
    assert!(
        node.log().contains(&new_hash),
        "the removal is logged with the pod's UID"
    );

    // 5. Static pods need no API server: with it gone, a new manifest still runs.
    api.kill9();
    std::fs::write(
        node.manifest_dir.join("offline.yaml"),
        MANIFEST
            .replace("static-web", "offline")
            .replace("VERSION-1", "OFFLINE"),
    )
    .unwrap();
    let offline = format!("offline-{node_name}");
    eventually(
        Duration::from_secs(60),
        "the static pod runs while the API server is down",
        || {
            node.assert_alive();
            node.container_log("default", &offline, "app", 0)
                .contains("OFFLINE")
        },
    );
    drop(node);
}
