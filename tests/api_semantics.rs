//! Semantics clients rely on, checked through the HTTP API: list pagination with a consistent
//! snapshot, resourceVersionMatch, dry runs, generateName, ClusterIP/NodePort allocation under
//! concurrent creates, the two Event views and event TTLs, Node status on create, label-selected
//! deletecollection, terminating namespaces, filtered watches and bookmarks.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{ApiServer, WatchStream};
use serde_json::{json, Value};

fn post(s: &ApiServer, path: &str, obj: Value) -> Value {
    let (code, body) = s.http("POST", path, "application/json", obj.to_string().as_bytes());
    assert_eq!(code, 201, "POST {path}: {body}");
    body
}

fn get(s: &ApiServer, path: &str) -> (u16, Value) {
    s.http("GET", path, "application/json", b"")
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"n": name}}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn paged_lists_are_a_consistent_snapshot() {
    let s = ApiServer::start();
    for i in 0..7 {
        post(&s, CMS, cm(&format!("c{i}")));
    }
    let (_, page1) = get(&s, &format!("{CMS}?limit=3"));
    assert_eq!(page1["items"].as_array().unwrap().len(), 3);
    // c3..c6 and the root-ca-cert-publisher's kube-root-ca.crt.
    assert_eq!(page1["metadata"]["remainingItemCount"], 5);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    // Changes after the first page do not show in the later pages.
    post(&s, CMS, cm("c9"));
    s.http("DELETE", &format!("{CMS}/c5"), "application/json", b"");
    let mut names: Vec<String> = page1["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let (code, page) = get(&s, &format!("{CMS}?limit=3&continue={t}"));
        assert_eq!(code, 200, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"],
            page1["metadata"]["resourceVersion"]
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        token = page["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_string);
    }
    assert_eq!(
        names,
        ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "kube-root-ca.crt"]
    );
    // Exact reads the past; the cache serves the present.
    let rv = page1["metadata"]["resourceVersion"].as_str().unwrap();
    let (_, exact) = get(
        &s,
        &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
    );
    assert_eq!(exact["items"].as_array().unwrap().len(), 8);
    let (_, now) = get(&s, CMS);
    assert_eq!(
        now["items"].as_array().unwrap().len(),
        8,
        "c5 deleted, c9 added"
    );
    let (code, _) = get(&s, &format!("{CMS}?resourceVersionMatch=Exact"));
    assert_eq!(code, 400, "resourceVersionMatch without resourceVersion");
}

#[test]
fn dry_run_generate_name_and_node_status() {
    let s = ApiServer::start();
    let (code, body) = s.http(
        "POST",
        &format!("{CMS}?dryRun=All"),
        "application/json",
        cm("dry").to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        get(&s, &format!("{CMS}/dry")).0,
        404,
        "a dry run stores nothing"
    );
    let made = post(
        &s,
        CMS,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
    );
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(made["metadata"]["uid"].as_str().unwrap().len() == 36);
    let node = post(
        &s,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"capacity": {"cpu": "2"}, "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    assert_eq!(
        node["status"]["capacity"]["cpu"], "2",
        "a Node keeps the status its kubelet registers with"
    );
    // The status subresource changes status only; the main resource keeps it.
    let mut upd = node.clone();
    upd["status"]["capacity"]["cpu"] = json!("4");
    upd["spec"]["unschedulable"] = json!(true);
    let (code, after) = s.http(
        "PUT",
        "/api/v1/nodes/n1/status",
        "application/json",
        upd.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["capacity"]["cpu"], "4");
    assert!(
        after["spec"].get("unschedulable").is_none(),
        "status update ignored the spec: {after}"
    );
}

#[test]
fn concurrent_service_creates_get_distinct_ips_and_ports() {
    let s = ApiServer::start();
    let addr = s.addr.clone();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                (0..8)
                    .map(|i| {
                        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{t}-{i}")},
                            "spec": {"type": "NodePort", "selector": {"a": "b"}, "ports": [{"port": 80}]}});
                        let (code, body) = common::http_raw(&addr, "POST", "/api/v1/namespaces/default/services", "application/json", svc.to_string().as_bytes());
                        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        (v["spec"]["clusterIP"].as_str().unwrap().to_string(), v["spec"]["ports"][0]["nodePort"].as_u64().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<(String, u64)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ips: HashSet<_> = all.iter().map(|(ip, _)| ip.clone()).collect();
    let ports: HashSet<_> = all.iter().map(|(_, p)| *p).collect();
    assert_eq!(ips.len(), 128, "duplicate ClusterIPs");
    assert_eq!(ports.len(), 128, "duplicate NodePorts");
    assert!(ports.iter().all(|p| (30000..=32767).contains(p)));
    assert!(
        !ips.contains("10.96.0.1"),
        "the kubernetes Service's address was handed out again"
    );
    // A requested address that is taken is refused.
    let taken = all[0].0.clone();
    let (code, body) = s.http("POST", "/api/v1/namespaces/default/services", "application/json",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dup"}, "spec": {"clusterIP": taken, "ports": [{"port": 80}]}}).to_string().as_bytes());
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already allocated"),
        "{body}"
    );
    // The kubernetes Service points at the advertise address.
    let (_, slice) = get(
        &s,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
    );
    assert_eq!(slice["endpoints"][0]["addresses"][0], "127.0.0.1");
}

#[test]
fn events_have_two_views() {
    let s = ApiServer::start();
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "test", "reportingInstance": "t-1",
        "action": "Testing", "reason": "Tested", "note": "hello", "type": "Normal",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    post(&s, "/apis/events.k8s.io/v1/namespaces/default/events", ev);
    let (code, core) = get(&s, "/api/v1/namespaces/default/events/e1");
    assert_eq!(code, 200, "{core}");
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello");
    assert_eq!(core["involvedObject"]["name"], "p");
    let (_, list) = get(&s, "/apis/events.k8s.io/v1/events");
    assert_eq!(list["items"][0]["note"], "hello");
    assert_eq!(list["items"][0]["apiVersion"], "events.k8s.io/v1");
    // events.k8s.io creates are validated with that API's own rules, field names included.
    let (code, body) = s.http("POST", "/apis/events.k8s.io/v1/namespaces/default/events", "application/json",
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"}, "reason": "R",
            "type": "Normal", "action": "A", "reportingInstance": "i"}).to_string().as_bytes());
    assert_eq!(code, 422, "{body}");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"eventTime") && fields.contains(&"reportingController"),
        "{body}"
    );
    let (_, sel) = get(
        &s,
        "/api/v1/events?fieldSelector=involvedObject.name%3Dp,reason%3DTested",
    );
    assert_eq!(sel["items"].as_array().unwrap().len(), 1);
}

#[test]
fn deletecollection_terminating_namespaces_and_filtered_watches() {
    let s = ApiServer::start();
    post(
        &s,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}}),
    );
    for n in ["a", "b", "c"] {
        post(&s, "/api/v1/namespaces/t/configmaps", cm(n));
    }
    let (code, body) = s.http(
        "DELETE",
        "/api/v1/namespaces/t/configmaps?labelSelector=n%20in%20(a,b)",
        "application/json",
        b"",
    );
    assert_eq!(code, 200, "{body}");
    let (_, left) = get(&s, "/api/v1/namespaces/t/configmaps");
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        // The root-ca-cert-publisher's ConfigMap is in every namespace.
        .filter(|n| *n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["c"]);
    // Deleting a namespace marks it Terminating (its finalizer waits for the namespace
    // controller); nothing new may be created in it.
    let (code, ns) = s.http("DELETE", "/api/v1/namespaces/t", "application/json", b"");
    assert_eq!(code, 200);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, body) = s.http(
        "POST",
        "/api/v1/namespaces/t/configmaps",
        "application/json",
        cm("d").to_string().as_bytes(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("because it is being terminated"),
        "{body}"
    );

    // A kubelet-like watch sees a pod appear when it is bound to its node, and bookmarks.
    let (_, list) = get(&s, "/api/v1/pods");
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap();
    let mut w = WatchStream::open(&s.addr, &format!("/api/v1/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dn1&allowWatchBookmarks=true"));
    w.set_timeout(Duration::from_secs(30));
    post(
        &s,
        "/api/v1/namespaces/default/pods",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
    );
    post(
        &s,
        "/api/v1/namespaces/default/pods/p/binding",
        json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}}),
    );
    let ev = w.next_event().expect("an event");
    assert_eq!(
        ev["type"], "ADDED",
        "the pod enters the node's view when bound: {ev}"
    );
    assert_eq!(ev["object"]["spec"]["nodeName"], "n1");
    let ev = w
        .next_event()
        .expect("a bookmark within the bookmark period");
    assert_eq!(ev["type"], "BOOKMARK", "{ev}");
    assert!(
        ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
}

#[test]
fn events_expire_after_the_event_ttl() {
    let s = ApiServer::start_with(tempfile::tempdir().unwrap(), &["--event-ttl", "2s"]);
    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R", "message": "m"});
    post(&s, "/api/v1/namespaces/default/events", ev);
    post(&s, CMS, cm("stays"));
    assert_eq!(get(&s, "/api/v1/namespaces/default/events/e").0, 200);
    common::eventually(Duration::from_secs(10), "the event to expire", || {
        get(&s, "/api/v1/namespaces/default/events/e").0 == 404
    });
    assert_eq!(
        get(&s, &format!("{CMS}/stays")).0,
        200,
        "only events have a TTL"
    );
}

#[test]
fn the_kubeconfig_points_at_loopback_for_a_wildcard_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let port = common::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["apiserver", "--data-dir"])
        .arg(&path)
        .args([
            "--listen",
            &format!("0.0.0.0:{port}"),
            "--advertise-address",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let kubeconfig = path.join("admin.kubeconfig");
    let mut text = String::new();
    for _ in 0..200 {
        if let Ok(t) = std::fs::read_to_string(&kubeconfig) {
            text = t;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.contains(&format!("server: https://127.0.0.1:{port}")),
        "{text}"
    );
    assert!(
        path.join("server/state.db").exists(),
        "the store lives under DIR/server/"
    );
}

#[test]
fn eviction_respects_disruption_budgets() {
    let s = ApiServer::start();
    let pods = "/api/v1/namespaces/default/pods";
    for (name, app) in [("guarded", "db"), ("free", "web")] {
        post(
            &s,
            pods,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
    }
    post(
        &s,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget", "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}}}),
    );
    // Running: a pending pod may go whatever its budget says (upstream's `canIgnorePDB`).
    let (code, body) = s.http(
        "PATCH",
        &format!("{pods}/guarded/status"),
        "application/merge-patch+json",
        br#"{"status":{"phase":"Running"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let evict = |name: &str| {
        let body =
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
        s.http(
            "POST",
            &format!("{pods}/{name}/eviction"),
            "application/json",
            body.to_string().as_bytes(),
        )
    };
    let (code, body) = evict("guarded");
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        get(&s, &format!("{pods}/guarded")).0,
        200,
        "a guarded pod stays"
    );
    let (code, body) = evict("free");
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        get(&s, &format!("{pods}/free")).0,
        404,
        "an unscheduled pod goes at once"
    );
}

#[test]
fn content_can_be_created_right_after_its_namespace() {
    let s = ApiServer::start();
    for i in 0..50 {
        let ns = format!("fresh-{i}");
        post(
            &s,
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        post(&s, &format!("/api/v1/namespaces/{ns}/configmaps"), cm("c"));
        post(
            &s,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            json!({"apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass", "metadata": {"name": format!("pc-{i}")}, "value": i}),
        );
        let pod = post(
            &s,
            &format!("/api/v1/namespaces/{ns}/pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"priorityClassName": format!("pc-{i}"), "containers": [{"name": "c", "image": "busybox"}]}}),
        );
        assert_eq!(pod["spec"]["priority"], i, "{pod}");
    }
}
