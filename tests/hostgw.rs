//! The host-gw route controller (`src/agent/hostgw.rs`) against the real kernel: a lab of
//! network namespaces on one bridge (tests/common/netlab.rs), the controller running in this test
//! with its netlink socket opened inside host `a`'s namespace, and apiserver-lite holding the
//! Node objects. Checks `ip -n <a> route` gains the routes of on-link nodes only, replaces a
//! changed one, drops a removed node's, removes stale marked routes at start, leaves other
//! routes alone, restores a route deleted by hand, and that a pod address behind node `b` is
//! reachable from `a` through the route. Needs root and `ip`; every namespace goes with the
//! lab's guards.

mod common;

#[path = "../src/agent/hostgw.rs"]
#[allow(dead_code)]
mod hostgw;

use std::time::Duration;

use common::netlab::{tcp_request, EchoServer, Lab};
use common::{eventually, ApiServer};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn node(name: &str, pod_cidr: &str, ip: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}]}
    }))
    .unwrap()
}

/// `ip route show proto 67` (the controller's routes) of a namespace, one route a line.
fn marked_routes(ns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-4", "route", "show", "proto", "67"])
        .output()
        .expect("running ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_routes(ns: &str, what: &str, want: &[String], unwanted: &[&str]) {
    let mut last = String::new();
    let ok = (0..200).any(|_| {
        last = marked_routes(ns);
        let done = want
            .iter()
            .all(|w| last.lines().any(|l| l.starts_with(w.as_str())))
            && unwanted.iter().all(|u| !last.contains(u));
        if !done {
            std::thread::sleep(Duration::from_millis(100));
        }
        done
    });
    assert!(
        ok,
        "{what}: want routes {want:?} and none of {unwanted:?}; `ip route show proto 67` in {ns}:\n{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_gw_routes_follow_the_nodes() {
    let api = ApiServer::start();
    let mut lab = Lab::new(11);
    let a = lab.host("a", 2);
    let b = lab.host("b", 3);
    let c = lab.host("c", 4);
    let c2_ip = format!("{}5", lab.prefix);

    // A stale route of this controller (a node removed while it was down) and a route of
    // somebody else, before it starts.
    a.ns.sh(&format!(
        "ip route add 10.244.50.0/24 via {} proto 67 && ip route add 10.244.60.0/24 via {} proto static",
        b.ip, b.ip
    ));

    let client = machinery::client::build_client(Some(&api.kubeconfig()), "hostgw-test")
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    for n in [
        node("node-a", "10.244.0.0/24", &a.ip),
        node("node-b", "10.244.1.0/24", &b.ip),
        node("node-c", "10.244.2.0/24", &c.ip),
        // Not on any subnet of a's: no route.
        node("node-far", "10.244.9.0/24", "172.31.250.9"),
    ] {
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }

    // The netlink socket is opened inside a's namespace and stays bound to it.
    let table =
        a.ns.enter(|| hostgw::NetlinkRouteTable::open().expect("netlink in the netns"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(hostgw::run(
        client.clone(),
        "node-a".into(),
        table,
        async move {
            let _ = stop_rx.await;
        },
    ));

    let ns_a = a.ns.name.clone();
    let (ib, ic) = (b.ip.clone(), c.ip.clone());
    let n = ns_a.clone();
    tokio::task::spawn_blocking(move || {
        wait_routes(
            &n,
            "the first sync",
            &[
                format!("10.244.1.0/24 via {ib}"),
                format!("10.244.2.0/24 via {ic}"),
            ],
            &["10.244.0.0", "10.244.9.0", "10.244.50.0"],
        )
    })
    .await
    .unwrap();
    let all = a.ns.sh("ip -4 route");
    assert!(
        all.contains("10.244.60.0/24") && all.contains("proto static"),
        "somebody else's route must stay:\n{all}"
    );

    // A pod address behind node b answers from a, through the route.
    b.ns.sh("ip addr add 10.244.1.7/32 dev lo");
    let _echo = EchoServer::start(&b.ns, "pod-on-b", 18080, 18081);
    let reply = tcp_request(&a.ns, "10.244.1.7:18080", Duration::from_secs(3))
        .expect("reaching a pod address on b through the host-gw route");
    assert_eq!(reply, format!("pod-on-b {}", a.ip));

    // node-c moves to another address: its route is replaced.
    let _c2 = lab.host("c2", 5);
    nodes
        .patch_status(
            "node-c",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"addresses": [{"type": "InternalIP", "address": c2_ip}]}}),
            ),
        )
        .await
        .unwrap();
    // node-b goes: its route too.
    nodes
        .delete("node-b", &DeleteParams::default())
        .await
        .unwrap();
    let (n, ic2, ic) = (ns_a.clone(), c2_ip.clone(), c.ip.clone());
    tokio::task::spawn_blocking(move || {
        let old_c = format!("10.244.2.0/24 via {ic} ");
        wait_routes(
            &n,
            "after node-c moved and node-b was deleted",
            &[format!("10.244.2.0/24 via {ic2}")],
            &["10.244.1.0", &old_c],
        )
    })
    .await
    .unwrap();

    // A route deleted by hand comes back at the next resync.
    a.ns.sh("ip route del 10.244.2.0/24");
    let (n, ic2) = (ns_a.clone(), c2_ip.clone());
    tokio::task::spawn_blocking(move || {
        eventually(
            hostgw::RESYNC_PERIOD + Duration::from_secs(5),
            "the deleted route is restored",
            || marked_routes(&n).contains(&format!("10.244.2.0/24 via {ic2}")),
        )
    })
    .await
    .unwrap();

    let _ = stop_tx.send(());
    controller.await.unwrap().unwrap();
}
