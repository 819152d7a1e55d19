//! Storage end to end: `capstan controller-manager` (persistentvolume-binder and the local-path
//! provisioner) and `capstan scheduler` against apiserver-lite with fake nodes (no kubelets).
//! A pre-created volume binds to a matching claim (the smallest that fits), a Retain volume stays
//! Released after its claim is deleted and a Delete one is removed; a pod using a claim without
//! storageClassName gets the default `local-path` class, the scheduler selects a node for it, the
//! provisioner makes a volume pinned to that node, the binder binds it, the pod lands there, and
//! a second pod using the same claim follows it. With a real kubelet (root), a pod writes into a
//! local-path claim, the file lands under the node's storage dir, and deleting the claim makes
//! the kubelet remove the directory and the volume.

mod common;

use std::time::Duration;

use common::controller_manager::ControllerManager;
use common::fake_nodes::*;
use common::kubelet::{wait_pod, Node, NodeOptions};
use common::{eventually, ApiServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
const CLAIMS: &str = "/api/v1/namespaces/default/persistentvolumeclaims";
const VOLUMES: &str = "/api/v1/persistentvolumes";

fn get(api: &ApiServer, path: &str) -> Option<Value> {
    let (code, out) = api.http("GET", path, "", b"");
    match code {
        200 => Some(out),
        404 => None,
        _ => panic!("GET {path}: {code} {out}"),
    }
}

fn delete(api: &ApiServer, path: &str) {
    let (code, out) = api.http("DELETE", path, "application/json", b"");
    assert!(code == 200 || code == 202, "DELETE {path}: {code} {out}");
}

fn volume(name: &str, size: &str, policy: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": policy,
            "storageClassName": "manual",
            "hostPath": {"path": format!("/tmp/capstan-test-{name}")}
        }
    })
}

fn claim(name: &str, size: &str, class: Option<&str>) -> Value {
    let mut c = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}}
        }
    });
    if let Some(class) = class {
        c["spec"]["storageClassName"] = json!(class);
    }
    c
}

fn phase(api: &ApiServer, path: &str) -> String {
    get(api, path)
        .and_then(|o| o["status"]["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn claim_of(api: &ApiServer, name: &str) -> Value {
    get(api, &format!("{CLAIMS}/{name}")).expect("the claim exists")
}

fn pod_using(name: &str, claim: &str) -> Value {
    pod_json(
        name,
        "100m",
        json!({}),
        json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}),
    )
}

#[test]
fn volumes_bind_smallest_fit_and_are_reclaimed_by_policy() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false"]);
    post(&api, VOLUMES, &volume("big", "10Gi", "Retain"));
    post(&api, VOLUMES, &volume("fit", "2Gi", "Retain"));
    post(&api, VOLUMES, &volume("small", "1Gi", "Retain"));
    post(&api, VOLUMES, &volume("doomed", "5Gi", "Delete"));
    eventually(WAIT, "every volume Available", || {
        ["big", "fit", "small", "doomed"]
            .iter()
            .all(|v| phase(&api, &format!("{VOLUMES}/{v}")) == "Available")
    });

    // The smallest volume that fits 2Gi of class manual.
    post(&api, CLAIMS, &claim("data", "2Gi", Some("manual")));
    eventually(WAIT, "claim data Bound", || {
        phase(&api, &format!("{CLAIMS}/data")) == "Bound"
    });
    let c = claim_of(&api, "data");
    assert_eq!(c["spec"]["volumeName"], "fit", "claim: {c}");
    assert_eq!(
        c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        c["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert_eq!(c["status"]["capacity"]["storage"], "2Gi", "claim: {c}");
    let v = get(&api, &format!("{VOLUMES}/fit")).unwrap();
    assert_eq!(v["status"]["phase"], "Bound", "volume: {v}");
    assert_eq!(v["spec"]["claimRef"]["name"], "data");
    assert_eq!(v["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
    assert_eq!(
        v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );

    // Too big for any volume: Pending.
    post(&api, CLAIMS, &claim("huge", "50Gi", Some("manual")));
    eventually(WAIT, "claim huge Pending", || {
        phase(&api, &format!("{CLAIMS}/huge")) == "Pending"
    });

    // Retain: Released after the claim is gone, and kept.
    delete(&api, &format!("{CLAIMS}/data"));
    eventually(WAIT, "volume fit Released", || {
        phase(&api, &format!("{VOLUMES}/fit")) == "Released"
    });

    // Delete: removed after the claim is gone. 4Gi binds to doomed (5Gi) since big is 10Gi.
    post(&api, CLAIMS, &claim("scratch", "4Gi", Some("manual")));
    eventually(WAIT, "claim scratch bound to doomed", || {
        claim_of(&api, "scratch")["spec"]["volumeName"] == "doomed"
            && phase(&api, &format!("{CLAIMS}/scratch")) == "Bound"
    });
    delete(&api, &format!("{CLAIMS}/scratch"));
    eventually(WAIT, "volume doomed deleted", || {
        get(&api, &format!("{VOLUMES}/doomed")).is_none()
    });
    assert_eq!(phase(&api, &format!("{VOLUMES}/fit")), "Released");
    assert_eq!(phase(&api, &format!("{VOLUMES}/big")), "Available");
}

#[test]
fn a_user_pre_bound_volume_goes_to_its_claim_only_and_its_loss_is_reported() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false"]);
    let mut pre = volume("reserved", "1Gi", "Retain");
    pre["spec"]["claimRef"] = json!({"namespace": "default", "name": "owner"});
    post(&api, VOLUMES, &pre);
    post(&api, CLAIMS, &claim("other", "1Gi", Some("manual")));
    post(&api, CLAIMS, &claim("owner", "1Gi", Some("manual")));
    eventually(WAIT, "claim owner Bound to reserved", || {
        phase(&api, &format!("{CLAIMS}/owner")) == "Bound"
            && claim_of(&api, "owner")["spec"]["volumeName"] == "reserved"
    });
    let v = get(&api, &format!("{VOLUMES}/reserved")).unwrap();
    assert!(
        v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"].is_null(),
        "the user bound it: {v}"
    );
    assert_eq!(phase(&api, &format!("{CLAIMS}/other")), "Pending");

    // A bound claim whose volume disappears is Lost.
    delete(&api, &format!("{VOLUMES}/reserved"));
    eventually(WAIT, "claim owner Lost", || {
        phase(&api, &format!("{CLAIMS}/owner")) == "Lost"
    });
    assert!(event_messages(&api, "owner", "ClaimLost")
        .iter()
        .any(|m| m == "Bound claim has lost its PersistentVolume. Data on the volume is lost!"));
}

#[test]
fn local_path_claims_are_provisioned_on_the_scheduled_node() {
    let api = ApiServer::start();
    for n in ["n1", "n2", "n3"] {
        create_node(&api, &FakeNode::new(n, "4", "8Gi"));
    }
    let dir = api.dir.path().join("storage");
    let dir = dir.to_str().unwrap();
    let _cm = ControllerManager::start(
        &api,
        "cm",
        &["--leader-elect=false", "--local-path-dir", dir],
    );
    let _s = SchedulerProcess::start(&api, None);
    eventually(WAIT, "the default StorageClass local-path", || {
        get(&api, "/apis/storage.k8s.io/v1/storageclasses/local-path").is_some_and(|c| {
            c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
                && c["volumeBindingMode"] == "WaitForFirstConsumer"
                && c["reclaimPolicy"] == "Delete"
        })
    });

    // DefaultStorageClass admission names the class.
    let created = post(&api, CLAIMS, &claim("data", "1Gi", None));
    assert_eq!(
        created["spec"]["storageClassName"], "local-path",
        "{created}"
    );
    // WaitForFirstConsumer: the binder leaves it alone until a pod uses it.
    eventually(WAIT, "the WaitForFirstConsumer event on the claim", || {
        event_messages(&api, "data", "WaitForFirstConsumer")
            .iter()
            .any(|m| m == "waiting for first consumer to be created before binding")
    });
    let c = claim_of(&api, "data");
    assert!(c["spec"]["volumeName"].is_null(), "bound too early: {c}");
    assert!(
        c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"].is_null(),
        "{c}"
    );

    create_pod(&api, &pod_using("first", "data"));
    eventually(WAIT, "pod first bound to a node", || {
        node_of(&api, "first").is_some()
    });
    let node = node_of(&api, "first").unwrap();
    let c = claim_of(&api, "data");
    assert!(
        c["spec"]["volumeName"].is_string(),
        "the pod is bound after its claim: {c}"
    );
    eventually(WAIT, "claim data Bound", || {
        phase(&api, &format!("{CLAIMS}/data")) == "Bound"
    });
    let c = claim_of(&api, "data");
    let ann = &c["metadata"]["annotations"];
    assert_eq!(
        ann["volume.kubernetes.io/selected-node"],
        node.as_str(),
        "{c}"
    );
    assert_eq!(
        ann["volume.kubernetes.io/storage-provisioner"],
        "capstan.io/local-path"
    );
    let pv_name = c["spec"]["volumeName"]
        .as_str()
        .expect("a volume name")
        .to_string();
    assert_eq!(
        pv_name,
        format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap())
    );
    let pv = get(&api, &format!("{VOLUMES}/{pv_name}")).expect("the provisioned volume");
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "capstan.io/local-path"
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["hostPath"]["type"], "DirectoryOrCreate");
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        format!("{dir}/{pv_name}_default_data").as_str()
    );
    let req =
        &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0];
    assert_eq!(req["key"], "kubernetes.io/hostname");
    assert_eq!(req["operator"], "In");
    assert_eq!(req["values"], json!([node]));

    // A second pod of the same claim follows the volume to its node.
    create_pod(&api, &pod_using("second", "data"));
    eventually(WAIT, "pod second bound", || {
        node_of(&api, "second").is_some()
    });
    assert_eq!(node_of(&api, "second").unwrap(), node);

    // Reclaim Delete: the volume is Released; its node's kubelet would remove the directory
    // and the volume (local_path_data_lives_on_its_node_and_goes_with_its_claim). Without a
    // kubelet it stays until the node is gone, when the provisioner deletes it.
    delete(
        &api,
        "/api/v1/namespaces/default/pods/first?gracePeriodSeconds=0",
    );
    delete(
        &api,
        "/api/v1/namespaces/default/pods/second?gracePeriodSeconds=0",
    );
    delete(&api, &format!("{CLAIMS}/data"));
    eventually(WAIT, "the provisioned volume Released", || {
        phase(&api, &format!("{VOLUMES}/{pv_name}")) == "Released"
    });
    delete(&api, &format!("/api/v1/nodes/{node}"));
    eventually(WAIT, "the provisioned volume deleted with its node", || {
        get(&api, &format!("{VOLUMES}/{pv_name}")).is_none()
    });
}

#[test]
fn local_path_data_lives_on_its_node_and_goes_with_its_claim() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let name = format!("storage-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
    let storage = node.dir.join("storage");
    let _cm = ControllerManager::start(
        &api,
        "cm",
        &[
            "--leader-elect=false",
            "--local-path-dir",
            storage.to_str().unwrap(),
        ],
    );
    let _s = SchedulerProcess::start(&api, None);
    eventually(WAIT, "the StorageClass local-path", || {
        get(&api, "/apis/storage.k8s.io/v1/storageclasses/local-path").is_some()
    });
    node.apply(
        &api,
        "storage.yaml",
        r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "echo written-in-pod > /data/file; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
"#,
    );
    wait_pod(
        &api,
        &mut node,
        "writer",
        Duration::from_secs(60),
        "Running",
        |p| p["status"]["phase"] == "Running",
    );
    let c = claim_of(&api, "data");
    let pv_name = c["spec"]["volumeName"].as_str().expect("bound").to_string();
    let dir = storage.join(format!("{pv_name}_default_data"));
    eventually(WAIT, "the file written by the pod on the node", || {
        std::fs::read_to_string(dir.join("file")).is_ok_and(|s| s == "written-in-pod\n")
    });
    api.kubectl_ok(&["delete", "pod", "writer", "--wait=true", "--timeout=60s"]);
    delete(&api, &format!("{CLAIMS}/data"));
    eventually(
        WAIT,
        "the volume and its directory removed by the kubelet",
        || get(&api, &format!("{VOLUMES}/{pv_name}")).is_none() && !dir.exists(),
    );
}

#[test]
fn pods_with_unbound_immediate_claims_wait_until_they_are_bound() {
    let api = ApiServer::start();
    create_node(&api, &FakeNode::new("n1", "4", "8Gi"));
    let _s = SchedulerProcess::start(&api, None);
    post(
        &api,
        "/apis/storage.k8s.io/v1/storageclasses",
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner",
                "volumeBindingMode": "Immediate"}),
    );
    post(&api, CLAIMS, &claim("data", "1Gi", Some("manual")));
    create_pod(&api, &pod_using("app", "data"));
    eventually(WAIT, "the FailedScheduling event", || {
        event_messages(&api, "app", "FailedScheduling")
            .iter()
            .any(|m| m.contains("pod has unbound immediate PersistentVolumeClaims"))
    });
    assert!(node_of(&api, "app").is_none());
    // The binder comes up, binds the claim, and the claim event re-queues the pod.
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false"]);
    post(&api, VOLUMES, &volume("pv1", "1Gi", "Retain"));
    eventually(WAIT, "pod app bound once its claim is", || {
        node_of(&api, "app").is_some()
    });
    assert_eq!(phase(&api, &format!("{CLAIMS}/data")), "Bound");
}
