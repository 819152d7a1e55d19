//! The workload controllers end to end: `capstan controller-manager` against apiserver-lite, with
//! a fake kubelet marking pods ready and confirming deletions (no containers run). Deployments
//! scale with `kubectl scale`, roll within maxSurge/maxUnavailable (checked on every pod watch
//! event), report through `kubectl rollout status`, roll back with `kubectl rollout undo`; the
//! garbage collector deletes in the foreground and orphans; a standby controller-manager takes
//! over a rollout from a killed leader without creating a pod twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::controller_manager::ControllerManager;
use common::fake_kubelet::FakeKubelet;
use common::{eventually, ApiServer, WatchStream};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32, image: &str, surge: &str, unavailable: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      app: {name}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: {surge}
      maxUnavailable: {unavailable}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: {image}
"#
    )
}

fn apply(api: &ApiServer, yaml: &str) {
    let path = api.dir.path().join("manifest.yaml");
    std::fs::write(&path, yaml).expect("writing the manifest");
    api.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
}

fn get(api: &ApiServer, path: &str) -> Value {
    let (code, body) = api.http("GET", path, "application/json", b"");
    assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
    if code == 404 {
        Value::Null
    } else {
        body
    }
}

/// The pods of `app` that are not being deleted.
fn live_pods(api: &ApiServer, app: &str) -> Vec<Value> {
    let list = get(
        api,
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
    );
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn get_deployment(api: &ApiServer, name: &str) -> Value {
    get(
        api,
        &format!("/apis/apps/v1/namespaces/default/deployments/{name}"),
    )
}

fn available(api: &ApiServer, name: &str, n: i64) -> bool {
    let d = get_deployment(api, name);
    d["status"]["availableReplicas"] == n
        && d["status"]["updatedReplicas"] == n
        && d["status"]["replicas"] == n
        && d["status"]["observedGeneration"] == d["metadata"]["generation"]
}

fn replica_sets(api: &ApiServer, app: &str) -> Vec<Value> {
    get(
        api,
        &format!("/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3D{app}"),
    )["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn start_all(api: &ApiServer) -> (ControllerManager, FakeKubelet) {
    let cm = ControllerManager::start(api, "cm", &["--leader-elect=false"]);
    let kubelet = FakeKubelet::start(api, "fake-node", Duration::ZERO);
    (cm, kubelet)
}

#[test]
fn a_deployment_scales_from_zero_to_fifty_and_down_to_five() {
    let api = ApiServer::start();
    let (_cm, _kubelet) = start_all(&api);
    apply(&api, &deployment("web", 0, "busybox:1", "25%", "25%"));
    eventually(T, "the deployment observed with 0 replicas", || {
        let d = get_deployment(&api, "web");
        d["status"]["observedGeneration"] == 1 && replica_sets(&api, "web").len() == 1
    });
    assert!(live_pods(&api, "web").is_empty());
    api.kubectl_ok(&["scale", "deployment/web", "--replicas=50"]);
    eventually(T, "50 available replicas", || available(&api, "web", 50));
    let pods = live_pods(&api, "web");
    assert_eq!(pods.len(), 50);
    assert!(pods.iter().all(pod_ready));
    // Every pod is named after its replica set and controlled by it, with blockOwnerDeletion.
    let rs = &replica_sets(&api, "web")[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap();
    assert!(rs_name.starts_with("web-"), "{rs_name}");
    for p in &pods {
        assert!(p["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{rs_name}-")));
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                r["kind"].as_str(),
                r["controller"].as_bool(),
                r["blockOwnerDeletion"].as_bool()
            ),
            (Some("ReplicaSet"), Some(true), Some(true))
        );
    }
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    api.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    eventually(T, "5 replicas after scaling down", || {
        available(&api, "web", 5) && live_pods(&api, "web").len() == 5
    });
    let rs = &replica_sets(&api, "web")[0];
    assert_eq!(rs["spec"]["replicas"], 5);
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "5"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
}

/// What a pod watch saw.
#[derive(Default)]
struct Watched {
    /// Events after which the bounds did not hold.
    violations: Vec<String>,
    /// Every pod name seen.
    seen: HashSet<String>,
    /// The most pods (not being deleted) at once.
    max_live: usize,
}

/// Follows the pods of `app` from now on and checks, after every event, that at most `max_pods`
/// exist (not being deleted) and at least `min_ready` of those are ready.
fn watch_invariants(
    api: &ApiServer,
    app: &str,
    max_pods: usize,
    min_ready: usize,
) -> Arc<Mutex<Watched>> {
    let list = get(
        api,
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
    );
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pods: HashMap<String, (bool, bool)> = HashMap::new();
    let watched: Arc<Mutex<Watched>> = Default::default();
    for p in list["items"].as_array().unwrap() {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        watched.lock().unwrap().seen.insert(name.clone());
        pods.insert(
            name,
            (p["metadata"]["deletionTimestamp"].is_null(), pod_ready(p)),
        );
    }
    let w = watched.clone();
    let mut stream = WatchStream::open(
        &api.addr,
        &format!("/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3D{app}&resourceVersion={rv}"),
    );
    std::thread::spawn(move || {
        while let Some(ev) = stream.next_event() {
            let obj = &ev["object"];
            let Some(name) = obj["metadata"]["name"].as_str() else {
                continue;
            };
            let mut w = w.lock().unwrap();
            w.seen.insert(name.to_string());
            if ev["type"] == "DELETED" {
                pods.remove(name);
            } else {
                pods.insert(
                    name.to_string(),
                    (
                        obj["metadata"]["deletionTimestamp"].is_null(),
                        pod_ready(obj),
                    ),
                );
            }
            let live = pods.values().filter(|(alive, _)| *alive).count();
            let ready = pods
                .values()
                .filter(|(alive, ready)| *alive && *ready)
                .count();
            w.max_live = w.max_live.max(live);
            if live > max_pods || ready < min_ready {
                w.violations.push(format!(
                    "after {} {name}: {live} pods, {ready} ready",
                    ev["type"]
                ));
            }
        }
    });
    watched
}

#[test]
fn a_rolling_update_stays_within_max_surge_and_max_unavailable_and_undo_restores_the_template() {
    let api = ApiServer::start();
    let cm = ControllerManager::start(&api, "cm", &["--leader-elect=false"]);
    let _kubelet = FakeKubelet::start(&api, "fake-node", Duration::from_millis(150));
    apply(&api, &deployment("web", 6, "busybox:1", "2", "1"));
    eventually(T, "6 available replicas", || available(&api, "web", 6));
    let first_rs = replica_sets(&api, "web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let watched = watch_invariants(&api, "web", 8, 5);
    api.kubectl_ok(&["set", "image", "deployment/web", "app=busybox:2"]);
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    eventually(T, "the old pods gone", || {
        let pods = live_pods(&api, "web");
        pods.len() == 6
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
    });
    std::thread::sleep(Duration::from_millis(300));
    {
        let w = watched.lock().unwrap();
        assert_eq!(w.violations, Vec::<String>::new());
        assert!(
            w.max_live > 6,
            "the rollout surged ({} pods at most)",
            w.max_live
        );
        assert_eq!(w.seen.len(), 12, "6 old and 6 new pods: {:?}", w.seen);
    }
    let sets = replica_sets(&api, "web");
    assert_eq!(sets.len(), 2);
    let new_rs = sets
        .iter()
        .find(|r| r["metadata"]["name"] != first_rs.as_str())
        .unwrap();
    assert_eq!(
        new_rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let d = get_deployment(&api, "web");
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let conditions = d["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"),
        "{conditions:?}"
    );
    assert!(conditions
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "True"));

    // kubectl rollout undo copies revision 1's template back; its replica set becomes the new one
    // again, as revision 3 with 1 in its history.
    let watched = watch_invariants(&api, "web", 8, 5);
    api.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let d = get_deployment(&api, "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );
    eventually(T, "the first replica set serving again", || {
        let sets = replica_sets(&api, "web");
        let first = sets
            .iter()
            .find(|r| r["metadata"]["name"] == first_rs.as_str())
            .cloned()
            .unwrap_or_default();
        first["spec"]["replicas"] == 6
            && first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
            && first["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
            && live_pods(&api, "web")
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1")
    });
    assert_eq!(watched.lock().unwrap().violations, Vec::<String>::new());
    let history = api.kubectl_ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");
    drop(cm);
}

#[test]
fn foreground_deletion_deletes_the_pods_before_the_deployment() {
    let api = ApiServer::start();
    let (_cm, _kubelet) = start_all(&api);
    apply(&api, &deployment("web", 3, "busybox:1", "25%", "25%"));
    eventually(T, "3 available replicas", || available(&api, "web", 3));
    api.kubectl_ok(&[
        "delete",
        "deployment/web",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let mut saw_waiting = false;
    eventually(T, "the deployment and its pods gone", || {
        // Deployment first, then pods: pods still there after the deployment went would be a
        // violation.
        let d = get_deployment(&api, "web");
        let pods = get(
            &api,
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        )["items"]
            .as_array()
            .map_or(0, Vec::len);
        if d.is_null() {
            assert_eq!(pods, 0, "pods left after the deployment was deleted");
        } else {
            let fins = d["metadata"]["finalizers"].to_string();
            assert!(fins.contains("foregroundDeletion"), "{fins}");
            saw_waiting = true;
        }
        d.is_null() && replica_sets(&api, "web").is_empty()
    });
    assert!(saw_waiting);
}

#[test]
fn orphan_deletion_keeps_the_replica_set_and_its_pods() {
    let api = ApiServer::start();
    let (_cm, _kubelet) = start_all(&api);
    apply(&api, &deployment("web", 3, "busybox:1", "25%", "25%"));
    eventually(T, "3 available replicas", || available(&api, "web", 3));
    api.kubectl_ok(&["delete", "deployment/web", "--cascade=orphan"]);
    eventually(T, "the replica set orphaned", || {
        get_deployment(&api, "web").is_null()
            && replica_sets(&api, "web").first().is_some_and(|r| {
                r["metadata"]["ownerReferences"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            })
    });
    // The garbage collector leaves them alone; the replica set keeps its pods.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replica_sets(&api, "web").len(), 1);
    assert_eq!(live_pods(&api, "web").len(), 3);
    // Deleting the replica set now (background) takes its pods with it.
    api.kubectl_ok(&["delete", "replicaset", "-l", "app=web"]);
    eventually(T, "the pods collected", || {
        live_pods(&api, "web").is_empty()
    });
}

#[test]
fn a_replication_controller_adopts_a_matching_orphan_and_releases_a_relabelled_pod() {
    let api = ApiServer::start();
    let (_cm, _kubelet) = start_all(&api);
    apply(&api, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stray\n  labels:\n    app: rc\nspec:\n  containers:\n  - name: app\n    image: busybox:1\n");
    apply(&api, "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: rc\nspec:\n  replicas: 3\n  selector:\n    app: rc\n  template:\n    metadata:\n      labels:\n        app: rc\n    spec:\n      containers:\n      - name: app\n        image: busybox:1\n");
    eventually(T, "3 ready replicas", || {
        let rc = get(&api, "/api/v1/namespaces/default/replicationcontrollers/rc");
        rc["status"]["readyReplicas"] == 3 && rc["status"]["fullyLabeledReplicas"] == 3
    });
    let pods = live_pods(&api, "rc");
    assert_eq!(
        pods.len(),
        3,
        "the stray pod was adopted, so only two were created"
    );
    let stray = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "stray")
        .expect("the stray pod kept");
    assert_eq!(
        stray["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    // Relabelled out of the selector: released, and replaced.
    api.kubectl_ok(&["label", "pod", "stray", "app=other", "--overwrite"]);
    eventually(T, "the stray pod released and replaced", || {
        let p = get(&api, "/api/v1/namespaces/default/pods/stray");
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(Vec::is_empty)
            && live_pods(&api, "rc").len() == 3
    });
}

#[test]
fn a_standby_controller_manager_takes_over_a_rollout_without_duplicate_pods() {
    let api = ApiServer::start();
    let flags = [
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let mut a = ControllerManager::start(&api, "cm-a", &flags);
    eventually(T, "cm-a leading", || a.leading());
    let b = ControllerManager::start(&api, "cm-b", &flags);
    let kubelet = FakeKubelet::start(&api, "fake-node", Duration::ZERO);
    // Metrics tell leader and standby apart.
    let metric = |cm: &ControllerManager| {
        let addr = cm.health_addr().expect("health server address in the log");
        let (code, body) = common::http_raw(&addr, "GET", "/metrics", "", b"");
        assert_eq!(code, 200);
        String::from_utf8_lossy(&body).into_owned()
    };
    eventually(T, "cm-b serving", || b.health_addr().is_some());
    assert!(
        metric(&a).contains("leader_election_master_status{name=\"kube-controller-manager\"} 1")
    );
    assert!(
        metric(&b).contains("leader_election_master_status{name=\"kube-controller-manager\"} 0")
    );
    let (code, _) = common::http_raw(&b.health_addr().unwrap(), "GET", "/healthz", "", b"");
    assert_eq!(code, 200);

    apply(&api, &deployment("web", 4, "busybox:1", "1", "0"));
    eventually(T, "4 available replicas", || available(&api, "web", 4));
    let watched = watch_invariants(&api, "web", 5, 4);
    // Hold the rollout after its first surge pod, then kill the leader.
    kubelet.set_ready(false);
    api.kubectl_ok(&["set", "image", "deployment/web", "app=busybox:2"]);
    eventually(T, "the surge pod created", || {
        live_pods(&api, "web").len() == 5
    });
    a.kill9();
    kubelet.set_ready(true);
    eventually(T, "cm-b leading", || b.leading());
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    eventually(T, "only new pods left", || {
        let pods = live_pods(&api, "web");
        pods.len() == 4
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
    });
    std::thread::sleep(Duration::from_millis(300));
    let w = watched.lock().unwrap();
    assert_eq!(w.violations, Vec::<String>::new());
    // 4 old pods + exactly 4 new ones were ever created.
    assert_eq!(w.seen.len(), 8, "{:?}", w.seen);
}

fn condition(d: &Value, type_: &str) -> Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

#[test]
fn recreate_replaces_every_pod_at_once_and_a_paused_deployment_waits_for_resume() {
    let api = ApiServer::start();
    let (_cm, _kubelet) = start_all(&api);
    let yaml = deployment("web", 3, "busybox:1", "1", "0").replace(
        "    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n",
        "    type: Recreate\n",
    );
    apply(&api, &yaml);
    eventually(T, "3 available replicas", || available(&api, "web", 3));
    // Paused: the template change starts no rollout.
    api.kubectl_ok(&["rollout", "pause", "deployment/web"]);
    eventually(T, "the pause recorded", || {
        condition(&get_deployment(&api, "web"), "Progressing")["reason"] == "DeploymentPaused"
    });
    api.kubectl_ok(&["set", "image", "deployment/web", "app=busybox:2"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        replica_sets(&api, "web").len(),
        1,
        "no new replica set while paused"
    );
    assert!(live_pods(&api, "web")
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:1"));
    // Resumed: Recreate never runs old and new pods together.
    let watched = watch_invariants(&api, "web", 3, 0);
    api.kubectl_ok(&["rollout", "resume", "deployment/web"]);
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    eventually(T, "only new pods", || {
        let pods = live_pods(&api, "web");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2")
    });
    std::thread::sleep(Duration::from_millis(300));
    let w = watched.lock().unwrap();
    assert_eq!(w.violations, Vec::<String>::new());
    assert_eq!(w.seen.len(), 6);
}

#[test]
fn a_rollout_without_progress_exceeds_its_deadline() {
    let api = ApiServer::start();
    let (_cm, kubelet) = start_all(&api);
    let yaml = deployment("web", 2, "busybox:1", "1", "0").replace(
        "  revisionHistoryLimit: 5\n",
        "  revisionHistoryLimit: 5\n  progressDeadlineSeconds: 2\n",
    );
    apply(&api, &yaml);
    eventually(T, "2 available replicas", || available(&api, "web", 2));
    kubelet.set_ready(false);
    api.kubectl_ok(&["set", "image", "deployment/web", "app=busybox:2"]);
    eventually(T, "ProgressDeadlineExceeded", || {
        let c = condition(&get_deployment(&api, "web"), "Progressing");
        c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded"
    });
    let err = api.kubectl_err(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    // Progress again: the rollout completes and says so.
    kubelet.set_ready(true);
    eventually(T, "NewReplicaSetAvailable", || {
        condition(&get_deployment(&api, "web"), "Progressing")["reason"] == "NewReplicaSetAvailable"
    });
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
}

#[test]
fn scaling_during_a_rollout_grows_old_and_new_replica_sets_proportionally() {
    let api = ApiServer::start();
    let (_cm, kubelet) = start_all(&api);
    apply(&api, &deployment("web", 10, "busybox:1", "3", "2"));
    eventually(T, "10 available replicas", || available(&api, "web", 10));
    // Stuck mid-rollout: the new replica set's pods never become ready.
    kubelet.set_ready(false);
    api.kubectl_ok(&["set", "image", "deployment/web", "app=busybox:2"]);
    let sizes = |api: &ApiServer| -> Vec<i64> {
        let mut s: Vec<(String, i64)> = replica_sets(api, "web")
            .iter()
            .map(|r| {
                (
                    r["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                        + r["metadata"]["name"].as_str().unwrap(),
                    r["spec"]["replicas"].as_i64().unwrap(),
                )
            })
            .collect();
        s.sort();
        s.into_iter().map(|(_, n)| n).collect()
    };
    // 10 + 3 surge: the new set gets 5 (3 surge + 2 unavailable), the old one is down to 8.
    eventually(T, "the rollout stuck at old 8, new 5", || {
        sizes(&api).iter().sum::<i64>() == 13 && sizes(&api).len() == 2
    });
    let before = sizes(&api);
    api.kubectl_ok(&["scale", "deployment/web", "--replicas=20"]);
    // 20 + 3 surge = 23, shared in proportion to the sizes before (13 → 23).
    eventually(T, "both replica sets scaled", || {
        sizes(&api).iter().sum::<i64>() == 23
    });
    let after = sizes(&api);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a > b),
        "{before:?} → {after:?}"
    );
    let rs = replica_sets(&api, "web");
    assert!(rs
        .iter()
        .all(|r| r["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "23"));
    kubelet.set_ready(true);
    api.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    eventually(T, "20 new pods", || available(&api, "web", 20));
}

#[test]
fn a_controller_manager_that_loses_its_lease_exits_with_an_error() {
    let api = ApiServer::start();
    let mut cm = ControllerManager::start(
        &api,
        "cm",
        &[
            "--leader-elect-lease-duration=3s",
            "--leader-elect-renew-deadline=2s",
            "--leader-elect-retry-period=500ms",
        ],
    );
    eventually(T, "leading", || cm.leading());
    // Another candidate takes the lease over (as after a long pause of this one).
    api.kubectl_ok(&[
        "-n",
        "kube-system",
        "patch",
        "lease",
        "kube-controller-manager",
        "--type=merge",
        "-p",
        r#"{"spec":{"holderIdentity":"intruder","leaseDurationSeconds":60}}"#,
    ]);
    let mut status = None;
    eventually(T, "the process exited", || {
        status = cm.exited();
        status.is_some()
    });
    assert!(!status.unwrap().success());
    assert!(cm.log().contains("leaderelection lost"), "{}", cm.log());
}

#[test]
fn the_garbage_collector_deletes_dependents_of_any_kind_and_keeps_those_with_a_live_owner() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(
        &api,
        "cm",
        &["--leader-elect=false", "--controllers=garbagecollector"],
    );
    apply(&api, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owner\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other-owner\n");
    let uid = |name: &str| {
        get(
            &api,
            &format!("/api/v1/namespaces/default/configmaps/{name}"),
        )["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (owner, other) = (uid("owner"), uid("other-owner"));
    let r = |name: &str, uid: &str| {
        format!("  - apiVersion: v1\n    kind: ConfigMap\n    name: {name}\n    uid: {uid}\n")
    };
    apply(
        &api,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: dep-role\n  ownerReferences:\n{}rules: []\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: dep-secret\n  ownerReferences:\n{}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: two-owners\n  ownerReferences:\n{}{}spec:\n  ports:\n  - port: 80\n",
            r("owner", &owner),
            r("owner", &owner),
            r("owner", &owner),
            r("other-owner", &other),
        ),
    );
    // A dependent whose owner never existed goes too.
    apply(
        &api,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dangling\n  ownerReferences:\n{}",
            r("ghost", "00000000-0000-0000-0000-000000000000")
        ),
    );
    eventually(T, "the dependent of a missing owner deleted", || {
        get(&api, "/api/v1/namespaces/default/configmaps/dangling").is_null()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(!get(
        &api,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/dep-role"
    )
    .is_null());
    api.kubectl_ok(&["delete", "configmap", "owner"]);
    eventually(T, "the dependents deleted and the shared one kept", || {
        let svc = get(&api, "/api/v1/namespaces/default/services/two-owners");
        get(
            &api,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/dep-role",
        )
        .is_null()
            && get(&api, "/api/v1/namespaces/default/secrets/dep-secret").is_null()
            && svc["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.len() == 1 && r[0]["uid"] == other.as_str())
    });
}
