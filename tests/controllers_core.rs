//! The core controllers (endpoints, endpointslice, namespace, serviceaccount, root CA publisher,
//! nodeipam, nodelifecycle, podgc, disruption, resourcequota) against a real `capstan
//! apiserver`, with no kubelet: the test plays the nodes (heartbeats through the node status)
//! and the kubelets (pod status through the status API). The controllers run in-process, on a
//! tokio runtime of the test, started through the `controllers` library with a client from the
//! API server's kubeconfig; the runtime (and so every controller) ends with the test.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::{eventually, ApiServer};
use controllers::ControllerContext;
use machinery::informer::InformerFactory;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    options: controllers::Options,
}

/// Controllers running in-process against `api`; stopped on drop.
struct Controllers {
    rt: Option<tokio::runtime::Runtime>,
    ctx: ControllerContext,
}

impl Controllers {
    /// Starts nothing yet: a runtime, a client and the options from `flags`.
    fn new(api: &ApiServer, flags: &[&str]) -> Controllers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = api.kubeconfig();
        let client = rt
            .block_on(machinery::client::build_client(
                Some(&kubeconfig),
                &machinery::client::user_agent("controller-manager-test"),
            ))
            .expect("client");
        let mut args = vec!["controller-manager".to_string()];
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        args.extend(flags.iter().map(|s| s.to_string()));
        let options = Cli::parse_from(args).options;
        let ctx = ControllerContext {
            informers: InformerFactory::new(client.clone()),
            client,
            options: Arc::new(options),
        };
        Controllers { rt: Some(rt), ctx }
    }

    /// Starts a controller from the table by its upstream name.
    fn run(&self, name: &str) -> &Self {
        let c = controllers::controllers()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no controller {name}"));
        let fut = (c.start)(self.ctx.clone());
        self.rt.as_ref().unwrap().spawn(async move {
            if let Err(e) = fut.await {
                panic!("controller failed: {e:#}");
            }
        });
        self
    }

    fn spawn<F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static>(&self, f: F) {
        self.rt.as_ref().unwrap().spawn(async move {
            if let Err(e) = f.await {
                panic!("controller failed: {e:#}");
            }
        });
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn post(api: &ApiServer, path: &str, body: Value) -> Value {
    let (code, out) = api.http(
        "POST",
        path,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!(code == 201 || code == 200, "POST {path}: {code} {out}");
    out
}

fn get(api: &ApiServer, path: &str) -> Option<Value> {
    let (code, out) = api.http("GET", path, "", b"");
    match code {
        200 => Some(out),
        404 => None,
        _ => panic!("GET {path}: {code} {out}"),
    }
}

fn patch_status(api: &ApiServer, path: &str, body: Value) {
    let (code, out) = api.http(
        "PATCH",
        &format!("{path}/status"),
        "application/merge-patch+json",
        body.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "PATCH {path}/status: {out}");
}

fn now() -> String {
    // RFC 3339 in UTC from the system clock.
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_ns(api: &ApiServer, ns: &str) {
    post(
        api,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
}

fn create_node(api: &ApiServer, name: &str) {
    post(
        api,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
    );
    heartbeat(api, name);
}

/// What a kubelet's status update would say: Ready, heartbeat now.
fn heartbeat(api: &ApiServer, name: &str) {
    let t = now();
    patch_status(
        api,
        &format!("/api/v1/nodes/{name}"),
        json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t}
        ]}}),
    );
}

/// Heartbeats of `node` from a thread until the returned flag is cleared (or dropped).
struct Heartbeats(Arc<AtomicBool>);

impl Heartbeats {
    fn start(api: &ApiServer, node: &str) -> Heartbeats {
        let on = Arc::new(AtomicBool::new(true));
        let (flag, addr, node) = (on.clone(), api.addr.clone(), node.to_string());
        std::thread::spawn(move || {
            while flag.load(Ordering::SeqCst) {
                let t = now();
                let body = json!({"status": {"conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": t, "lastTransitionTime": t}
                ]}});
                common::http_raw(
                    &addr,
                    "PATCH",
                    &format!("/api/v1/nodes/{node}/status"),
                    "application/merge-patch+json",
                    body.to_string().as_bytes(),
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Heartbeats(on)
    }
}

impl Heartbeats {
    /// Heartbeats through the node's Lease in kube-node-lease only (as a kubelet does between
    /// status updates).
    fn lease(api: &ApiServer, node: &str) -> Heartbeats {
        post(
            api,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": node}, "spec": {"holderIdentity": node, "leaseDurationSeconds": 40}}),
        );
        let on = Arc::new(AtomicBool::new(true));
        let (flag, addr, node) = (on.clone(), api.addr.clone(), node.to_string());
        std::thread::spawn(move || {
            while flag.load(Ordering::SeqCst) {
                let out = std::process::Command::new("date")
                    .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
                    .output()
                    .unwrap();
                let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let body = json!({"spec": {"renewTime": t}});
                common::http_raw(
                    &addr,
                    "PATCH",
                    &format!(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
                    ),
                    "application/merge-patch+json",
                    body.to_string().as_bytes(),
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Heartbeats(on)
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn pod_json(name: &str, labels: Value, node: Option<&str>, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox", "ports": [{"name": "http", "containerPort": 8080}]}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    if let Some(m) = extra_spec.as_object() {
        for (k, v) in m {
            spec[k] = v.clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})
}

fn create_pod(api: &ApiServer, ns: &str, pod: Value) {
    post(api, &format!("/api/v1/namespaces/{ns}/pods"), pod);
}

/// What a kubelet would report for a running pod.
fn mark_running(api: &ApiServer, ns: &str, name: &str, ip: &str, ready: bool) {
    let t = now();
    let r = if ready { "True" } else { "False" };
    patch_status(
        api,
        &format!("/api/v1/namespaces/{ns}/pods/{name}"),
        json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": [
            {"type": "Ready", "status": r, "lastTransitionTime": t},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": t}
        ]}}),
    );
}

fn delete(api: &ApiServer, path: &str, grace: Option<i64>) -> u16 {
    let body = match grace {
        Some(g) => json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": g})
            .to_string(),
        None => String::new(),
    };
    api.http("DELETE", path, "application/json", body.as_bytes())
        .0
}

fn slices(api: &ApiServer, ns: &str, svc: &str) -> Vec<Value> {
    let list = get(
        api,
        &format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name={svc}"),
    )
    .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn slice_endpoints(api: &ApiServer, ns: &str, svc: &str) -> Vec<Value> {
    slices(api, ns, svc)
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn endpoint_of<'a>(eps: &'a [Value], pod: &str) -> Option<&'a Value> {
    eps.iter().find(|e| e["targetRef"]["name"] == pod)
}

fn service(api: &ApiServer, ns: &str, name: &str) {
    post(
        api,
        &format!("/api/v1/namespaces/{ns}/services"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"selector": {"app": name}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}}),
    );
}

#[test]
fn endpoints_and_slices_follow_pod_readiness_and_termination() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    c.run("endpoint").run("endpointslice");
    create_node(&api, "n1");
    service(&api, "default", "web");
    for (i, ready) in [(1, true), (2, true), (3, false)] {
        let name = format!("web-{i}");
        create_pod(
            &api,
            "default",
            pod_json(&name, json!({"app": "web"}), Some("n1"), json!({})),
        );
        mark_running(&api, "default", &name, &format!("10.1.0.{i}"), ready);
    }
    // A pod of another app is not selected.
    create_pod(
        &api,
        "default",
        pod_json("other", json!({"app": "other"}), Some("n1"), json!({})),
    );
    mark_running(&api, "default", "other", "10.1.0.9", true);

    eventually(
        WAIT,
        "endpoints with 2 ready and 1 not ready address",
        || {
            let Some(ep) = get(&api, "/api/v1/namespaces/default/endpoints/web") else {
                return false;
            };
            let ss = &ep["subsets"][0];
            let ips = |k: &str| -> BTreeSet<String> {
                ss[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| a["ip"].as_str().unwrap().to_string())
                    .collect()
            };
            ips("addresses") == BTreeSet::from(["10.1.0.1".into(), "10.1.0.2".into()])
                && ips("notReadyAddresses") == BTreeSet::from(["10.1.0.3".into()])
                && ss["ports"][0]["port"] == 8080
                && ss["ports"][0]["name"] == "web"
                && ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
                    .is_string()
        },
    );
    eventually(WAIT, "one slice with three endpoints", || {
        let s = slices(&api, "default", "web");
        s.len() == 1
            && s[0]["endpoints"].as_array().map_or(0, Vec::len) == 3
            && s[0]["addressType"] == "IPv4"
            && s[0]["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "endpointslice-controller.k8s.io"
            && s[0]["metadata"]["ownerReferences"][0]["kind"] == "Service"
            && s[0]["ports"][0]["port"] == 8080
    });
    let eps = slice_endpoints(&api, "default", "web");
    let e3 = endpoint_of(&eps, "web-3").unwrap();
    assert_eq!(
        e3["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(endpoint_of(&eps, "web-1").unwrap()["nodeName"], "n1");

    // Endpoints deleted by hand come back.
    assert_eq!(
        delete(&api, "/api/v1/namespaces/default/endpoints/web", None),
        200
    );
    eventually(WAIT, "endpoints recreated", || {
        get(&api, "/api/v1/namespaces/default/endpoints/web").is_some()
    });

    // Pod 3 becomes ready.
    mark_running(&api, "default", "web-3", "10.1.0.3", true);
    eventually(WAIT, "pod 3 ready in endpoints and slice", || {
        let ep = get(&api, "/api/v1/namespaces/default/endpoints/web").unwrap();
        let eps = slice_endpoints(&api, "default", "web");
        ep["subsets"][0]["addresses"].as_array().map_or(0, Vec::len) == 3
            && endpoint_of(&eps, "web-3").is_some_and(|e| e["conditions"]["ready"] == true)
    });

    // Pod 1 terminates (graceful: its node has not confirmed yet).
    assert_eq!(
        delete(&api, "/api/v1/namespaces/default/pods/web-1", Some(30)),
        200
    );
    eventually(
        WAIT,
        "pod 1 terminating: out of endpoints, serving+terminating in the slice",
        || {
            let ep = get(&api, "/api/v1/namespaces/default/endpoints/web").unwrap();
            let ips: Vec<&str> = ep["subsets"][0]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["ip"].as_str())
                .collect();
            let eps = slice_endpoints(&api, "default", "web");
            !ips.contains(&"10.1.0.1")
                && ips.len() == 2
                && endpoint_of(&eps, "web-1").is_some_and(|e| {
                    e["conditions"] == json!({"ready": false, "serving": true, "terminating": true})
                })
        },
    );
    // The node confirms: gone from the slice too.
    assert_eq!(
        delete(&api, "/api/v1/namespaces/default/pods/web-1", Some(0)),
        200
    );
    eventually(WAIT, "pod 1 gone from the slice", || {
        let eps = slice_endpoints(&api, "default", "web");
        endpoint_of(&eps, "web-1").is_none() && eps.len() == 2
    });
}

#[test]
fn more_than_100_endpoints_are_split_into_slices() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    create_node(&api, "n1");
    service(&api, "default", "big");
    for i in 0..150 {
        let name = format!("big-{i}");
        create_pod(
            &api,
            "default",
            pod_json(&name, json!({"app": "big"}), Some("n1"), json!({})),
        );
        mark_running(
            &api,
            "default",
            &name,
            &format!("10.2.{}.{}", i / 200, i % 200 + 1),
            true,
        );
    }
    c.run("endpoint").run("endpointslice");
    eventually(WAIT, "150 endpoints in slices of 100 and 50", || {
        let mut sizes: Vec<usize> = slices(&api, "default", "big")
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        sizes == [50, 100]
    });
    // The Endpoints controller runs beside the slice controller: wait for it too.
    eventually(WAIT, "150 addresses in the Endpoints", || {
        get(&api, "/api/v1/namespaces/default/endpoints/big").is_some_and(|ep| {
            ep["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 150)
        })
    });
    // Ten more fill the slice with room; no third slice.
    for i in 150..160 {
        let name = format!("big-{i}");
        create_pod(
            &api,
            "default",
            pod_json(&name, json!({"app": "big"}), Some("n1"), json!({})),
        );
        mark_running(
            &api,
            "default",
            &name,
            &format!("10.2.{}.{}", i / 200, i % 200 + 1),
            true,
        );
    }
    eventually(WAIT, "160 endpoints in slices of 100 and 60", || {
        let mut sizes: Vec<usize> = slices(&api, "default", "big")
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        sizes == [60, 100]
    });
}

#[test]
fn a_namespace_deletion_empties_it_and_the_namespace_goes() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    c.run("namespace");
    create_ns(&api, "doomed");
    post(
        &api,
        "/api/v1/namespaces/doomed/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}),
    );
    post(
        &api,
        "/api/v1/namespaces/doomed/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}),
    );
    service(&api, "doomed", "svc");
    create_pod(
        &api,
        "doomed",
        pod_json("p", json!({"app": "x"}), None, json!({})),
    );
    post(
        &api,
        "/apis/apps/v1/namespaces/doomed/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    );
    // Content with a finalizer keeps the namespace until the finalizer goes.
    post(
        &api,
        "/api/v1/namespaces/doomed/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    );
    assert_eq!(delete(&api, "/api/v1/namespaces/doomed", None), 200);
    eventually(
        WAIT,
        "the finalizer reported in the namespace conditions",
        || {
            let ns = get(&api, "/api/v1/namespaces/doomed").unwrap();
            ns["status"]["phase"] == "Terminating"
            && ns["status"]["conditions"].as_array().into_iter().flatten().any(|c| {
                c["type"] == "NamespaceFinalizersRemaining"
                    && c["status"] == "True"
                    && c["message"] == "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
            })
        },
    );
    for path in ["configmaps/cm", "secrets/s", "services/svc", "pods/p"] {
        assert!(
            get(&api, &format!("/api/v1/namespaces/doomed/{path}")).is_none(),
            "{path} deleted"
        );
    }
    assert!(get(&api, "/apis/apps/v1/namespaces/doomed/deployments/d").is_none());
    let (code, out) = api.http(
        "PATCH",
        "/api/v1/namespaces/doomed/configmaps/held",
        "application/merge-patch+json",
        br#"{"metadata":{"finalizers":null}}"#,
    );
    assert_eq!(code, 200, "{out}");
    eventually(WAIT, "the namespace gone", || {
        get(&api, "/api/v1/namespaces/doomed").is_none()
    });

    // kubectl delete ns waits for it and returns.
    create_ns(&api, "second");
    post(
        &api,
        "/api/v1/namespaces/second/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}),
    );
    let out = api.kubectl_ok(&["delete", "ns", "second", "--timeout=30s"]);
    assert!(out.contains("namespace \"second\" deleted"), "{out}");
    assert!(get(&api, "/api/v1/namespaces/second").is_none());
}

#[test]
fn a_new_namespace_gets_the_default_service_account_and_the_root_ca() {
    let api = ApiServer::start();
    let ca = api.dir.path().join("ca.crt");
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, pem).unwrap();
    let c = Controllers::new(&api, &[&format!("--root-ca-file={}", ca.display())]);
    c.run("serviceaccount").run("root-ca-cert-publisher");
    create_ns(&api, "fresh");
    eventually(WAIT, "default service account and kube-root-ca.crt", || {
        get(&api, "/api/v1/namespaces/fresh/serviceaccounts/default").is_some()
            && get(&api, "/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt")
                .is_some_and(|cm| cm["data"]["ca.crt"] == pem)
    });
    // Deleted or changed: put back.
    assert_eq!(
        delete(
            &api,
            "/api/v1/namespaces/fresh/serviceaccounts/default",
            None
        ),
        200
    );
    let (code, _) = api.http(
        "PATCH",
        "/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt",
        "application/merge-patch+json",
        br#"{"data":{"ca.crt":"tampered"}}"#,
    );
    assert_eq!(code, 200);
    eventually(WAIT, "both repaired", || {
        get(&api, "/api/v1/namespaces/fresh/serviceaccounts/default").is_some()
            && get(&api, "/api/v1/namespaces/fresh/configmaps/kube-root-ca.crt")
                .is_some_and(|cm| cm["data"]["ca.crt"] == pem)
    });
    // Existing namespaces too.
    assert!(get(
        &api,
        "/api/v1/namespaces/kube-system/serviceaccounts/default"
    )
    .is_some());
}

fn taints(node: &Value) -> BTreeSet<(String, String)> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["effect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Upstream taints by condition on node events, not on the monitor's period: with a period of
/// an hour, a node that reports NotReady is tainted and one that turns Ready is untainted within
/// seconds (a starting node is not kept from pods for a period after it turns Ready).
#[test]
fn no_schedule_taints_follow_the_ready_condition_at_once() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &["--node-monitor-period=1h"]);
    create_node(&api, "starting");
    c.run("nodelifecycle");
    let set_ready = |status: &str| {
        let t = now();
        patch_status(
            &api,
            "/api/v1/nodes/starting",
            json!({"status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "KubeletNotReady", "lastHeartbeatTime": t, "lastTransitionTime": t}
            ]}}),
        );
    };
    // The only node: its zone is fully disrupted, so no NoExecute taint (see the test below).
    let not_ready = BTreeSet::from([(
        "node.kubernetes.io/not-ready".to_string(),
        "NoSchedule".to_string(),
    )]);
    let within = Duration::from_secs(15);
    // The first pass after start; then only events can wake the controller.
    std::thread::sleep(Duration::from_secs(2));
    set_ready("False");
    eventually(within, "the NotReady node tainted not-ready", || {
        taints(&get(&api, "/api/v1/nodes/starting").unwrap()) == not_ready
    });
    set_ready("True");
    eventually(within, "the Ready node untainted", || {
        taints(&get(&api, "/api/v1/nodes/starting").unwrap()).is_empty()
    });
}

#[test]
fn a_node_that_stops_heartbeating_is_unknown_tainted_and_its_pods_evicted_after_their_toleration() {
    let api = ApiServer::start();
    let c = Controllers::new(
        &api,
        &[
            "--node-monitor-period=200ms",
            "--node-monitor-grace-period=3s",
        ],
    );
    create_node(&api, "alive");
    create_node(&api, "dying");
    // One node renews its Lease only, the other posts its status.
    let _alive = Heartbeats::lease(&api, "alive");
    let dying = Heartbeats::start(&api, "dying");
    let tol = |secs: Option<i64>| {
        let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!({"tolerations": [t]})
    };
    create_pod(
        &api,
        "default",
        pod_json("short", json!({}), Some("dying"), tol(Some(2))),
    );
    create_pod(
        &api,
        "default",
        pod_json("forever", json!({}), Some("dying"), tol(None)),
    );
    create_pod(
        &api,
        "default",
        pod_json("default-300s", json!({}), Some("dying"), json!({})),
    );
    create_pod(
        &api,
        "default",
        pod_json("elsewhere", json!({}), Some("alive"), tol(Some(1))),
    );
    for (p, ip) in [
        ("short", "10.3.0.1"),
        ("forever", "10.3.0.2"),
        ("default-300s", "10.3.0.3"),
        ("elsewhere", "10.3.0.4"),
    ] {
        mark_running(&api, "default", p, ip, true);
    }
    c.run("nodelifecycle");
    std::thread::sleep(Duration::from_secs(1));
    let node = get(&api, "/api/v1/nodes/dying").unwrap();
    assert!(
        taints(&node).is_empty(),
        "a heartbeating node is not tainted: {node}"
    );
    drop(dying);
    eventually(
        WAIT,
        "the silent node Unknown and tainted unreachable",
        || {
            let node = get(&api, "/api/v1/nodes/dying").unwrap();
            let ready = node["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .cloned()
                .unwrap();
            ready["status"] == "Unknown"
                && ready["reason"] == "NodeStatusUnknown"
                && ready["message"] == "Kubelet stopped posting node status."
                && taints(&node)
                    == BTreeSet::from([
                        ("node.kubernetes.io/unreachable".into(), "NoExecute".into()),
                        ("node.kubernetes.io/unreachable".into(), "NoSchedule".into()),
                    ])
        },
    );
    let ready_of = |p: &str| {
        get(&api, &format!("/api/v1/namespaces/default/pods/{p}")).map(|pod| {
            pod["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()["status"]
                .clone()
        })
    };
    eventually(WAIT, "pods of the node marked not ready", || {
        ready_of("forever") == Some(json!("False"))
    });
    let deleting = |p: &str| {
        get(&api, &format!("/api/v1/namespaces/default/pods/{p}"))
            .is_none_or(|pod| pod["metadata"]["deletionTimestamp"].is_string())
    };
    eventually(WAIT, "the pod tolerating 2s evicted", || deleting("short"));
    let short = get(&api, "/api/v1/namespaces/default/pods/short");
    if let Some(short) = short {
        assert!(short["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "DisruptionTarget" && c["reason"] == "DeletionByTaintManager"));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !deleting("forever"),
        "a pod tolerating the taint for ever stays"
    );
    assert!(
        !deleting("default-300s"),
        "the admission's default 300s toleration keeps it for now"
    );
    assert!(!deleting("elsewhere"), "pods of a healthy node stay");
    assert_eq!(ready_of("elsewhere"), Some(json!("True")));
    let alive = get(&api, "/api/v1/nodes/alive").unwrap();
    assert!(taints(&alive).is_empty());

    // The node comes back: taints go.
    let _back = Heartbeats::start(&api, "dying");
    eventually(WAIT, "taints removed once the node is ready", || {
        let node = get(&api, "/api/v1/nodes/dying").unwrap();
        taints(&node).is_empty()
    });
}

#[test]
fn pod_cidrs_are_allocated_from_the_cluster_cidr() {
    let api = ApiServer::start();
    // One node already has a subnet: it is not handed out again.
    post(
        &api,
        "/api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "old"}, "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}}),
    );
    let c = Controllers::new(
        &api,
        &[
            "--allocate-node-cidrs=true",
            "--cluster-cidr=10.244.0.0/22",
            "--node-cidr-mask-size=24",
        ],
    );
    c.run("nodeipam");
    for n in ["a", "b", "c"] {
        create_node(&api, n);
    }
    let cidr = |n: &str| {
        get(&api, &format!("/api/v1/nodes/{n}"))
            .and_then(|n| n["spec"]["podCIDR"].as_str().map(String::from))
    };
    eventually(WAIT, "three nodes with distinct subnets", || {
        let got: BTreeSet<Option<String>> = ["a", "b", "c"].iter().map(|n| cidr(n)).collect();
        got == BTreeSet::from([
            Some("10.244.1.0/24".into()),
            Some("10.244.2.0/24".into()),
            Some("10.244.3.0/24".into()),
        ])
    });
    let a = get(&api, "/api/v1/nodes/a").unwrap();
    assert_eq!(a["spec"]["podCIDRs"], json!([a["spec"]["podCIDR"].clone()]));
    // The range is exhausted: the next node gets an event, then the subnet of a deleted node.
    create_node(&api, "d");
    eventually(WAIT, "CIDRNotAvailable event", || {
        let ev = get(&api, "/api/v1/namespaces/default/events").unwrap();
        ev["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "CIDRNotAvailable" && e["involvedObject"]["name"] == "d")
    });
    assert_eq!(cidr("d"), None);
    let freed = cidr("b").unwrap();
    assert_eq!(delete(&api, "/api/v1/nodes/b", None), 200);
    eventually(WAIT, "the freed subnet given to the waiting node", || {
        cidr("d") == Some(freed.clone())
    });
}

#[test]
fn podgc_deletes_orphaned_unscheduled_terminating_and_excess_terminated_pods() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &["--terminated-pod-gc-threshold=2"]);
    create_node(&api, "n1");
    create_pod(
        &api,
        "default",
        pod_json("orphan", json!({}), Some("ghost"), json!({})),
    );
    mark_running(&api, "default", "orphan", "10.4.0.1", true);
    create_pod(
        &api,
        "default",
        pod_json("fine", json!({}), Some("n1"), json!({})),
    );
    mark_running(&api, "default", "fine", "10.4.0.2", true);
    for i in 0..4 {
        let name = format!("done-{i}");
        create_pod(
            &api,
            "default",
            pod_json(&name, json!({}), Some("n1"), json!({})),
        );
        patch_status(
            &api,
            &format!("/api/v1/namespaces/default/pods/{name}"),
            json!({"status": {"phase": "Succeeded"}}),
        );
        // Creation timestamps have one-second resolution.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let ctx = c.ctx.clone();
    c.spawn(controllers::podgc::start_with(
        ctx,
        controllers::podgc::Config {
            period: Duration::from_millis(300),
            quarantine: Duration::from_secs(1),
            terminated_threshold: 2,
        },
    ));
    let exists = |p: &str| get(&api, &format!("/api/v1/namespaces/default/pods/{p}")).is_some();
    eventually(WAIT, "the orphan deleted", || !exists("orphan"));
    eventually(WAIT, "the two oldest terminated pods deleted", || {
        !exists("done-0") && !exists("done-1")
    });
    assert!(exists("done-2") && exists("done-3") && exists("fine"));
}

#[test]
fn pdb_status_and_evictions_that_would_violate_it_are_refused() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    c.run("disruption");
    create_node(&api, "n1");
    for i in 0..3 {
        let name = format!("db-{i}");
        create_pod(
            &api,
            "default",
            pod_json(&name, json!({"app": "db"}), Some("n1"), json!({})),
        );
        mark_running(&api, "default", &name, &format!("10.5.0.{}", i + 1), true);
    }
    post(
        &api,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "db"}, "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}}}),
    );
    eventually(WAIT, "PDB status", || {
        let pdb = get(
            &api,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
        )
        .unwrap();
        let s = &pdb["status"];
        s["currentHealthy"] == 3
            && s["desiredHealthy"] == 2
            && s["expectedPods"] == 3
            && s["disruptionsAllowed"] == 1
            && s["observedGeneration"] == 1
            && s["conditions"][0]["type"] == "DisruptionAllowed"
            && s["conditions"][0]["status"] == "True"
    });
    let evict = |p: &str| {
        api.http(
            "POST",
            &format!("/api/v1/namespaces/default/pods/{p}/eviction"),
            "application/json",
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": p}})
                .to_string()
                .as_bytes(),
        )
    };
    assert_eq!(evict("db-0").0, 201);
    let (code, out) = evict("db-1");
    assert_eq!(code, 429, "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{out}"
    );
    let pdb = get(
        &api,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
    )
    .unwrap();
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    // db-0 is terminating (its node has not confirmed): not healthy, so still no disruption.
    eventually(WAIT, "the controller sees 2 healthy pods", || {
        let pdb = get(
            &api,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/db",
        )
        .unwrap();
        pdb["status"]["currentHealthy"] == 2
            && pdb["status"]["disruptionsAllowed"] == 0
            && pdb["status"]["conditions"][0]["reason"] == "InsufficientPods"
    });
    // kubectl drain gives up on the budget.
    let err = api.kubectl_err(&[
        "drain",
        "n1",
        "--force",
        "--ignore-daemonsets",
        "--timeout=4s",
    ]);
    assert!(err.contains("disruption budget"), "{err}");
    assert!(get(&api, "/api/v1/namespaces/default/pods/db-1")
        .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null()));
}

#[test]
fn quota_usage_is_tracked_and_the_third_pod_is_refused() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    c.run("resourcequota");
    create_ns(&api, "q");
    post(
        &api,
        "/api/v1/namespaces/q/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}),
    );
    post(
        &api,
        "/api/v1/namespaces/q/resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1", "configmaps": "5", "count/secrets": "3"}}}),
    );
    let quota = || get(&api, "/api/v1/namespaces/q/resourcequotas/q").unwrap();
    eventually(WAIT, "quota status mirrors hard and counts usage", || {
        let q = quota();
        q["status"]["hard"]["pods"] == "2"
            && q["status"]["used"]["pods"] == "0"
            // cm and the root-ca-cert-publisher's kube-root-ca.crt.
            && q["status"]["used"]["configmaps"] == "2"
    });
    let cpu = |c: &str| json!({"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": c}}}]});
    for (p, c) in [("p1", "300m"), ("p2", "200m")] {
        let mut pod = pod_json(p, json!({}), None, json!({}));
        pod["spec"] = cpu(c);
        create_pod(&api, "q", pod);
    }
    eventually(WAIT, "usage of two pods", || {
        let q = quota();
        q["status"]["used"]["pods"] == "2" && q["status"]["used"]["requests.cpu"] == "500m"
    });
    let mut third = pod_json("p3", json!({}), None, json!({}));
    third["spec"] = cpu("100m");
    let (code, out) = api.http(
        "POST",
        "/api/v1/namespaces/q/pods",
        "application/json",
        third.to_string().as_bytes(),
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        out["message"],
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    // A quota on requests.cpu needs every container to request cpu.
    let bare = pod_json("bare", json!({}), None, json!({}));
    let (code, out) = api.http(
        "POST",
        "/api/v1/namespaces/q/pods",
        "application/json",
        bare.to_string().as_bytes(),
    );
    assert_eq!(code, 403, "{out}");
    assert_eq!(
        out["message"],
        "pods \"bare\" is forbidden: failed quota: q: must specify requests.cpu for: c"
    );
    // A deleted pod frees its share.
    assert_eq!(delete(&api, "/api/v1/namespaces/q/pods/p1", Some(0)), 200);
    eventually(WAIT, "usage after the delete", || {
        quota()["status"]["used"]["pods"] == "1"
    });
    let (code, out) = api.http(
        "POST",
        "/api/v1/namespaces/q/pods",
        "application/json",
        third.to_string().as_bytes(),
    );
    assert_eq!(code, 201, "{out}");
}

#[test]
fn a_percentage_pdb_counts_the_replicas_of_the_pods_controller() {
    let api = ApiServer::start();
    let c = Controllers::new(&api, &[]);
    c.run("disruption");
    create_node(&api, "n1");
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let d = post(
        &api,
        "/apis/apps/v1/namespaces/default/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    );
    let rs = post(
        &api,
        "/apis/apps/v1/namespaces/default/replicasets",
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"], "controller": true}]},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    );
    // Three of the four replicas exist and are ready.
    for i in 0..3 {
        let name = format!("web-1-{i}");
        let mut pod = pod_json(&name, json!({"app": "web"}), Some("n1"), json!({}));
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": rs["metadata"]["uid"], "controller": true}]);
        create_pod(&api, "default", pod);
        mark_running(&api, "default", &name, &format!("10.6.0.{}", i + 1), true);
    }
    post(
        &api,
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"}, "spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "web"}}}}),
    );
    eventually(WAIT, "expected pods from the Deployment's scale", || {
        let s = get(
            &api,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web",
        )
        .unwrap()["status"]
            .clone();
        // 25% of 4 is one unavailable: 3 desired, 3 healthy, no disruption left.
        s["expectedPods"] == 4
            && s["desiredHealthy"] == 3
            && s["currentHealthy"] == 3
            && s["disruptionsAllowed"] == 0
    });
    // A pod without a controller makes a percentage budget fail safe.
    create_pod(
        &api,
        "default",
        pod_json("stray", json!({"app": "web"}), Some("n1"), json!({})),
    );
    mark_running(&api, "default", "stray", "10.6.0.9", true);
    eventually(WAIT, "SyncFailed for a pod without a controller", || {
        let s = get(
            &api,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets/web",
        )
        .unwrap()["status"]
            .clone();
        s["disruptionsAllowed"] == 0 && s["conditions"][0]["reason"] == "SyncFailed"
    });
}
