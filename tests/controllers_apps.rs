//! The DaemonSet and StatefulSet controllers end to end: `capstan controller-manager` and
//! `capstan scheduler` against apiserver-lite, with fake nodes and a test kubelet that marks
//! pods Running and Ready through the status API (no containers run). A DaemonSet follows nodes
//! being added, tainted and removed, rolls an update one node at a time (checked on every pod
//! watch event) and rolls back with `kubectl rollout undo`; a StatefulSet comes up in order,
//! scales down in reverse, keeps or deletes its claims per the retention policy, updates only
//! the ordinals at or above a partition, and works with `kubectl rollout status/undo`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::controller_manager::ControllerManager;
use common::fake_kubelet::FakeKubelet;
use common::fake_nodes::{create_node, FakeNode, SchedulerProcess};
use common::{eventually, http_raw, ApiServer, WatchStream};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(60);
const CONTROLLERS: &str = "--controllers=daemonset,statefulset,garbagecollector";

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

fn items(v: Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The pods of `app` that are not being deleted.
fn live_pods(api: &ApiServer, app: &str) -> Vec<Value> {
    items(get(
        api,
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
    ))
    .into_iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .collect()
}

fn image(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

/// A kubelet for every fake node: pods bound to a node become Running and Ready after
/// `ready_after`; graceful deletions are confirmed with a grace-0 delete. Stops on drop.
struct BoundKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BoundKubelet {
    fn start(api: &ApiServer, ready_after: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, addr) = (stop.clone(), api.addr.clone());
        let thread = std::thread::spawn(move || {
            let mut bound_at: HashMap<String, Instant> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                let (_, body) = http_raw(&addr, "GET", "/api/v1/pods", "", b"");
                let list: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for p in list["items"].as_array().into_iter().flatten() {
                    let path = format!(
                        "/api/v1/namespaces/{}/pods/{}",
                        p["metadata"]["namespace"].as_str().unwrap_or_default(),
                        p["metadata"]["name"].as_str().unwrap_or_default()
                    );
                    let uid = p["metadata"]["uid"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if !p["metadata"]["deletionTimestamp"].is_null() {
                        let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
                        http_raw(
                            &addr,
                            "DELETE",
                            &path,
                            "application/json",
                            body.to_string().as_bytes(),
                        );
                        continue;
                    }
                    if p["spec"]["nodeName"].as_str().unwrap_or("").is_empty() || pod_ready(p) {
                        continue;
                    }
                    let at = *bound_at.entry(uid).or_insert_with(Instant::now);
                    if at.elapsed() < ready_after {
                        continue;
                    }
                    let now = k8s_openapi::jiff::Timestamp::now().to_string();
                    let cond =
                        |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                    let patch = json!({"status": {
                        "phase": "Running", "hostIP": "127.0.0.1", "podIP": "10.0.0.1", "startTime": now,
                        "conditions": [cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")],
                    }});
                    http_raw(
                        &addr,
                        "PATCH",
                        &format!("{path}/status"),
                        "application/merge-patch+json",
                        patch.to_string().as_bytes(),
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        BoundKubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for BoundKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Follows the pods of `app` from now on, calling `check` with every pod (name → object) after
/// each watch event; its complaints are collected.
fn watch_pods(
    api: &ApiServer,
    app: &str,
    check: impl Fn(&str, &str, &BTreeMap<String, Value>) -> Option<String> + Send + 'static,
) -> Arc<Mutex<Vec<String>>> {
    let list = get(
        api,
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
    );
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut pods: BTreeMap<String, Value> = items(list)
        .into_iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p))
        .collect();
    let complaints: Arc<Mutex<Vec<String>>> = Default::default();
    let c = complaints.clone();
    let mut stream = WatchStream::open(
        &api.addr,
        &format!("/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3D{app}&resourceVersion={rv}"),
    );
    std::thread::spawn(move || {
        while let Some(ev) = stream.next_event() {
            let obj = ev["object"].clone();
            let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                continue;
            };
            let kind = ev["type"].as_str().unwrap_or("").to_string();
            if kind == "DELETED" {
                pods.remove(&name);
            } else {
                pods.insert(name.clone(), obj);
            }
            if let Some(msg) = check(&kind, &name, &pods) {
                c.lock().unwrap().push(msg);
            }
        }
    });
    complaints
}

fn daemonset(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        app: agent
    spec:
      containers:
      - name: app
        image: {image}
        resources:
          requests:
            cpu: 10m
"#
    )
}

fn ds_status(api: &ApiServer) -> Value {
    get(api, "/apis/apps/v1/namespaces/default/daemonsets/agent")
}

/// The daemon pods per node (live ones only).
fn ds_pods_by_node(api: &ApiServer) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in live_pods(api, "agent") {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        out.entry(node).or_default().push(p);
    }
    out
}

/// Every eligible node runs one ready daemon pod of `image`, and the status says so.
fn ds_settled(api: &ApiServer, nodes: &[&str], image_: &str) -> bool {
    let by_node = ds_pods_by_node(api);
    let ds = ds_status(api);
    let st = &ds["status"];
    let n = nodes.len() as i64;
    nodes.iter().all(|n| {
        by_node
            .get(*n)
            .is_some_and(|ps| ps.len() == 1 && pod_ready(&ps[0]) && image(&ps[0]) == image_)
    }) && st["desiredNumberScheduled"] == n
        && st["currentNumberScheduled"] == n
        && st["numberReady"] == n
        && st["numberAvailable"] == n
        && st["updatedNumberScheduled"] == n
        && ds["metadata"]["generation"] == st["observedGeneration"]
}

#[test]
fn a_daemonset_follows_nodes_and_rolls_one_node_at_a_time() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", CONTROLLERS]);
    let _scheduler = SchedulerProcess::start(&api, None);
    let _kubelet = BoundKubelet::start(&api, Duration::from_millis(200));
    create_node(&api, &FakeNode::new("n1", "4", "8Gi"));
    create_node(&api, &FakeNode::new("n2", "4", "8Gi"));
    apply(&api, &daemonset("busybox:1"));
    eventually(T, "a ready daemon pod on n1 and n2", || {
        ds_settled(&api, &["n1", "n2"], "busybox:1")
    });
    // Pods are bound by the scheduler through a required node affinity on metadata.name and
    // carry the default daemon tolerations and the revision labels.
    for (node, pods) in ds_pods_by_node(&api) {
        let p = &pods[0];
        let term = &p["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0];
        assert_eq!(
            (term["key"].as_str(), term["values"][0].as_str()),
            (Some("metadata.name"), Some(node.as_str())),
            "{p}"
        );
        let tolerations = p["spec"]["tolerations"].as_array().unwrap();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(
                tolerations.iter().any(|t| t["key"] == key),
                "{key}: {tolerations:?}"
            );
        }
        assert!(!p["metadata"]["labels"]["controller-revision-hash"].is_null());
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "1");
    }

    // A new node gets a pod.
    create_node(&api, &FakeNode::new("n3", "4", "8Gi"));
    eventually(T, "a daemon pod on the new node n3", || {
        ds_settled(&api, &["n1", "n2", "n3"], "busybox:1")
    });
    // NoSchedule: the running pod stays, but the node no longer counts as desired.
    api.kubectl_ok(&["taint", "nodes", "n3", "dedicated=x:NoSchedule"]);
    eventually(T, "n3 counted as misscheduled", || {
        let st = &ds_status(&api)["status"];
        st["desiredNumberScheduled"] == 2 && st["numberMisscheduled"] == 1
    });
    assert_eq!(ds_pods_by_node(&api).get("n3").map(Vec::len), Some(1));
    // NoExecute: the pod on n2 is evicted and none comes back.
    api.kubectl_ok(&["taint", "nodes", "n2", "dedicated=x:NoExecute"]);
    eventually(T, "the pod on n2 gone", || {
        !ds_pods_by_node(&api).contains_key("n2")
            && ds_status(&api)["status"]["desiredNumberScheduled"] == 1
    });
    api.kubectl_ok(&["taint", "nodes", "n3", "dedicated=x:NoSchedule-"]);
    api.kubectl_ok(&["taint", "nodes", "n2", "dedicated=x:NoExecute-"]);
    eventually(T, "all three nodes served again", || {
        ds_settled(&api, &["n1", "n2", "n3"], "busybox:1")
    });
    let first_pods: Vec<String> = live_pods(&api, "agent")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    // A rolling update with maxUnavailable 1: after every pod event at least two of the three
    // nodes have a ready pod that is not being deleted.
    let complaints = watch_pods(&api, "agent", |kind, name, pods| {
        let mut ready_nodes: Vec<&str> = pods
            .values()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && pod_ready(p))
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        ready_nodes.sort();
        ready_nodes.dedup();
        (ready_nodes.len() < 2).then(|| format!("after {kind} {name}: ready on {ready_nodes:?}"))
    });
    api.kubectl_ok(&["set", "image", "daemonset/agent", "app=busybox:2"]);
    api.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    eventually(T, "busybox:2 on every node", || {
        ds_settled(&api, &["n1", "n2", "n3"], "busybox:2")
    });
    assert_eq!(complaints.lock().unwrap().clone(), Vec::<String>::new());
    let second: Vec<Value> = live_pods(&api, "agent");
    assert!(second
        .iter()
        .all(|p| !first_pods.contains(&p["metadata"]["name"].as_str().unwrap().to_string())));
    assert!(second
        .iter()
        .all(|p| p["metadata"]["labels"]["pod-template-generation"] == "2"));
    let revisions = items(get(
        &api,
        "/apis/apps/v1/namespaces/default/controllerrevisions?labelSelector=app%3Dagent",
    ));
    let mut numbers: Vec<i64> = revisions
        .iter()
        .filter_map(|r| r["revision"].as_i64())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2], "{revisions:?}");

    // Undo goes back to the first template; its revision becomes number 3.
    api.kubectl_ok(&["rollout", "undo", "daemonset/agent"]);
    let ds = ds_status(&api);
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );
    api.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    eventually(T, "busybox:1 on every node again", || {
        ds_settled(&api, &["n1", "n2", "n3"], "busybox:1")
    });
    eventually(T, "the old revision renumbered", || {
        let revisions = items(get(
            &api,
            "/apis/apps/v1/namespaces/default/controllerrevisions?labelSelector=app%3Dagent",
        ));
        let mut numbers: Vec<i64> = revisions
            .iter()
            .filter_map(|r| r["revision"].as_i64())
            .collect();
        numbers.sort();
        numbers == [2, 3]
    });
    let history = api.kubectl_ok(&["rollout", "history", "daemonset/agent"]);
    assert!(history.contains('3'), "{history}");

    // A removed node no longer counts and gets no pod back.
    api.kubectl_ok(&["delete", "node", "n3"]);
    eventually(T, "two desired after n3 is removed", || {
        let st = &ds_status(&api)["status"];
        st["desiredNumberScheduled"] == 2
            && st["currentNumberScheduled"] == 2
            && st["numberAvailable"] == 2
    });
    assert!(ds_pods_by_node(&api)
        .iter()
        .all(|(n, ps)| n == "n3" || ps.len() == 1));
}

fn statefulset(replicas: i32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: {replicas}
  serviceName: nginx
  selector:
    matchLabels:
      app: web
  persistentVolumeClaimRetentionPolicy:
    whenScaled: Delete
    whenDeleted: Retain
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: {image}
        volumeMounts:
        - name: www
          mountPath: /data
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#
    )
}

fn sts(api: &ApiServer) -> Value {
    get(api, "/apis/apps/v1/namespaces/default/statefulsets/web")
}

fn claims(api: &ApiServer) -> Vec<String> {
    let mut names: Vec<String> = items(get(
        api,
        "/api/v1/namespaces/default/persistentvolumeclaims",
    ))
    .iter()
    .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
    .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
    .collect();
    names.sort();
    names
}

fn pod_names(api: &ApiServer) -> Vec<String> {
    let mut names: Vec<String> = live_pods(api, "web")
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn sts_ready(api: &ApiServer, n: i64) -> bool {
    let s = sts(api);
    let st = &s["status"];
    st["replicas"] == n
        && st["readyReplicas"] == n
        && st["availableReplicas"] == n
        && s["metadata"]["generation"] == st["observedGeneration"]
}

/// The ordinal of `web-<n>`.
fn ordinal(name: &str) -> i64 {
    name.trim_start_matches("web-").parse().unwrap_or(-1)
}

#[test]
fn a_statefulset_comes_up_in_order_scales_down_in_reverse_and_updates_above_the_partition() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", CONTROLLERS]);
    let _kubelet = FakeKubelet::start(&api, "fake-node", Duration::from_millis(200));
    // Ordinal n+1 is created only once n is Ready; while scaling down, ordinal n is deleted only
    // once n+1 is gone.
    let complaints = watch_pods(&api, "web", |kind, name, pods| {
        let n = ordinal(name);
        let obj = &pods.get(name)?;
        if kind == "ADDED" && n > 0 {
            let prev = pods.get(&format!("web-{}", n - 1));
            if !prev.is_some_and(pod_ready) {
                return Some(format!("{name} created before web-{} was ready", n - 1));
            }
        }
        if !obj["metadata"]["deletionTimestamp"].is_null() {
            if let Some(next) = pods.get(&format!("web-{}", n + 1)) {
                if next["metadata"]["deletionTimestamp"].is_null() {
                    return Some(format!("{name} deleted while web-{} is live", n + 1));
                }
            }
        }
        None
    });
    apply(&api, &statefulset(3, "busybox:1"));
    eventually(T, "3 ready replicas", || sts_ready(&api, 3));
    assert_eq!(pod_names(&api), ["web-0", "web-1", "web-2"]);
    assert_eq!(claims(&api), ["www-web-0", "www-web-1", "www-web-2"]);
    for p in live_pods(&api, "web") {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(p["spec"]["hostname"], name);
        assert_eq!(p["spec"]["subdomain"], "nginx");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            name
        );
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            ordinal(name).to_string()
        );
        let vol = p["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "www")
            .unwrap()
            .clone();
        assert_eq!(
            vol["persistentVolumeClaim"]["claimName"],
            format!("www-{name}")
        );
    }
    api.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);

    // Scale down: web-2 goes first, then web-1, and their claims with them (whenScaled: Delete).
    api.kubectl_ok(&["scale", "statefulset/web", "--replicas=1"]);
    eventually(T, "one replica and one claim left", || {
        pod_names(&api) == ["web-0"] && claims(&api) == ["www-web-0"] && sts_ready(&api, 1)
    });
    api.kubectl_ok(&["scale", "statefulset/web", "--replicas=3"]);
    eventually(T, "3 ready replicas again", || sts_ready(&api, 3));
    assert_eq!(claims(&api), ["www-web-0", "www-web-1", "www-web-2"]);
    assert_eq!(complaints.lock().unwrap().clone(), Vec::<String>::new());

    // A partitioned update touches only web-2.
    let uids = |api: &ApiServer| -> BTreeMap<String, String> {
        live_pods(api, "web")
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let before = uids(&api);
    let old_revision = sts(&api)["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();
    api.kubectl_ok(&[
        "patch",
        "statefulset/web",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#,
    ]);
    api.kubectl_ok(&["set", "image", "statefulset/web", "app=busybox:2"]);
    let out = api.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete"), "{out}");
    eventually(T, "web-2 updated, web-0 and web-1 untouched", || {
        let s = sts(&api);
        let pods = live_pods(&api, "web");
        let by_name = |n: &str| pods.iter().find(|p| p["metadata"]["name"] == n).cloned();
        s["status"]["updatedReplicas"] == 1
            && s["status"]["currentRevision"] == old_revision.as_str()
            && by_name("web-2").is_some_and(|p| image(&p) == "busybox:2" && pod_ready(&p))
            && by_name("web-0").is_some_and(|p| image(&p) == "busybox:1")
            && by_name("web-1").is_some_and(|p| image(&p) == "busybox:1")
    });
    let after = uids(&api);
    assert_eq!(after["web-0"], before["web-0"]);
    assert_eq!(after["web-1"], before["web-1"]);
    assert_ne!(after["web-2"], before["web-2"]);
    let update_revision = sts(&api)["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(update_revision, old_revision);

    // Dropping the partition finishes the rollout; currentRevision catches up.
    api.kubectl_ok(&[
        "patch",
        "statefulset/web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    api.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    eventually(T, "every replica on busybox:2", || {
        let s = sts(&api);
        s["status"]["currentRevision"] == update_revision.as_str()
            && s["status"]["updatedReplicas"] == 3
            && live_pods(&api, "web")
                .iter()
                .all(|p| image(p) == "busybox:2")
            && sts_ready(&api, 3)
    });

    // Undo restores the first template.
    api.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    assert_eq!(
        sts(&api)["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1"
    );
    api.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    eventually(T, "every replica back on busybox:1", || {
        live_pods(&api, "web").len() == 3
            && live_pods(&api, "web")
                .iter()
                .all(|p| image(p) == "busybox:1" && pod_ready(p))
            && sts_ready(&api, 3)
    });

    // Deleting the set keeps the claims (whenDeleted: Retain).
    api.kubectl_ok(&["delete", "statefulset/web"]);
    eventually(T, "the replicas gone", || pod_names(&api).is_empty());
    assert_eq!(claims(&api), ["www-web-0", "www-web-1", "www-web-2"]);
}

#[test]
fn a_parallel_statefulset_with_when_deleted_delete_loses_its_claims_with_the_set() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", CONTROLLERS]);
    let kubelet = FakeKubelet::start(&api, "fake-node", Duration::ZERO);
    kubelet.set_ready(false);
    let yaml = statefulset(3, "busybox:1")
        .replace("whenScaled: Delete", "whenScaled: Retain")
        .replace("whenDeleted: Retain", "whenDeleted: Delete")
        .replace(
            "  serviceName: nginx\n",
            "  serviceName: nginx\n  podManagementPolicy: Parallel\n",
        );
    apply(&api, &yaml);
    // Parallel: all three are created without waiting for readiness.
    eventually(T, "3 replicas created while none is ready", || {
        pod_names(&api) == ["web-0", "web-1", "web-2"]
    });
    assert!(live_pods(&api, "web").iter().all(|p| !pod_ready(p)));
    kubelet.set_ready(true);
    eventually(T, "3 ready replicas", || sts_ready(&api, 3));
    // whenScaled: Retain keeps the claim of a scaled-away replica.
    api.kubectl_ok(&["scale", "statefulset/web", "--replicas=2"]);
    eventually(T, "2 replicas", || {
        pod_names(&api) == ["web-0", "web-1"] && sts_ready(&api, 2)
    });
    assert_eq!(claims(&api), ["www-web-0", "www-web-1", "www-web-2"]);
    // whenDeleted: Delete: the set owns the claims of its replicas.
    let c = get(
        &api,
        "/api/v1/namespaces/default/persistentvolumeclaims/www-web-0",
    );
    assert_eq!(
        c["metadata"]["ownerReferences"][0]["kind"], "StatefulSet",
        "{c}"
    );
    api.kubectl_ok(&["delete", "statefulset/web"]);
    eventually(T, "the replicas and the set's claims gone", || {
        pod_names(&api).is_empty() && claims(&api).is_empty()
    });
}

#[test]
fn a_daemonset_with_max_surge_starts_the_new_pod_before_the_old_one_goes() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", CONTROLLERS]);
    let _scheduler = SchedulerProcess::start(&api, None);
    let _kubelet = BoundKubelet::start(&api, Duration::from_millis(200));
    create_node(&api, &FakeNode::new("n1", "4", "8Gi"));
    create_node(&api, &FakeNode::new("n2", "4", "8Gi"));
    let yaml = daemonset("busybox:1").replace(
        "      maxUnavailable: 1\n",
        "      maxUnavailable: 0\n      maxSurge: 1\n",
    );
    apply(&api, &yaml);
    eventually(T, "a ready daemon pod on n1 and n2", || {
        ds_settled(&api, &["n1", "n2"], "busybox:1")
    });
    // After every pod event both nodes have a ready pod that is not being deleted; some node
    // had two live pods at once.
    let surged = Arc::new(AtomicBool::new(false));
    let s = surged.clone();
    let complaints = watch_pods(&api, "agent", move |kind, name, pods| {
        let live: Vec<&Value> = pods
            .values()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect();
        let on = |n: &str| {
            live.iter()
                .filter(|p| p["spec"]["nodeName"] == n || target(p) == n)
                .count()
        };
        if on("n1") > 1 || on("n2") > 1 {
            s.store(true, Ordering::SeqCst);
        }
        let ready = |n: &str| {
            live.iter()
                .any(|p| p["spec"]["nodeName"] == n && pod_ready(p))
        };
        (!ready("n1") || !ready("n2"))
            .then(|| format!("after {kind} {name}: a node without a ready pod"))
    });
    api.kubectl_ok(&["set", "image", "daemonset/agent", "app=busybox:2"]);
    api.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    eventually(T, "busybox:2 on both nodes", || {
        ds_settled(&api, &["n1", "n2"], "busybox:2")
    });
    assert_eq!(complaints.lock().unwrap().clone(), Vec::<String>::new());
    assert!(surged.load(Ordering::SeqCst), "no node ever ran two pods");
}

/// The node a daemon pod's affinity pins it to.
fn target(p: &Value) -> &str {
    p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        .as_str()
        .unwrap_or("")
}

#[test]
fn an_on_delete_statefulset_updates_a_replica_only_when_it_is_deleted() {
    let api = ApiServer::start();
    let _cm = ControllerManager::start(&api, "cm", &["--leader-elect=false", CONTROLLERS]);
    let _kubelet = FakeKubelet::start(&api, "fake-node", Duration::ZERO);
    let yaml = statefulset(2, "busybox:1").replace(
        "  serviceName: nginx\n",
        "  serviceName: nginx\n  updateStrategy:\n    type: OnDelete\n",
    );
    apply(&api, &yaml);
    eventually(T, "2 ready replicas", || sts_ready(&api, 2));
    api.kubectl_ok(&["set", "image", "statefulset/web", "app=busybox:2"]);
    eventually(T, "the new revision observed", || {
        let s = sts(&api);
        s["status"]["observedGeneration"] == 2
            && s["status"]["updateRevision"] != s["status"]["currentRevision"]
    });
    assert!(live_pods(&api, "web")
        .iter()
        .all(|p| image(p) == "busybox:1"));
    // Not waiting: kubectl's wait for the deletion is not under test here (it once ran into its
    // timeout while the pod came back under the same name).
    api.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    eventually(T, "web-1 recreated from the update revision", || {
        let pods = live_pods(&api, "web");
        let by_name = |n: &str| pods.iter().find(|p| p["metadata"]["name"] == n).cloned();
        by_name("web-1").is_some_and(|p| image(&p) == "busybox:2" && pod_ready(&p))
            && by_name("web-0").is_some_and(|p| image(&p) == "busybox:1")
            && sts(&api)["status"]["updatedReplicas"] == 1
    });
}
