//! `capstan scheduler` end to end against apiserver-lite with fake Node objects (no kubelets):
//! zone spreading, anti-affinity, taints and tolerations, preemption (the harness confirms the
//! victims' deletion as a kubelet would), an unschedulable pod scheduled as soon as a fitting node
//! appears, two schedulers side by side by schedulerName, and the FailedScheduling summary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::fake_nodes::*;
use common::{eventually, ApiServer};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn zone_nodes(api: &ApiServer) {
    for (name, zone) in [
        ("a1", "za"),
        ("a2", "za"),
        ("b1", "zb"),
        ("b2", "zb"),
        ("c1", "zc"),
        ("c2", "zc"),
    ] {
        create_node(
            api,
            &FakeNode {
                labels: &[("topology.kubernetes.io/zone", zone)],
                ..FakeNode::new(name, "4", "8Gi")
            },
        );
    }
}

#[test]
fn pods_spread_across_zones() {
    let api = ApiServer::start();
    zone_nodes(&api);
    let _s = SchedulerProcess::start(&api, None);
    let spread = json!({"topologySpreadConstraints": [{
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}
    }]});
    for i in 0..6 {
        create_pod(
            &api,
            &pod_json(
                &format!("web-{i}"),
                "100m",
                json!({"app": "web"}),
                spread.clone(),
            ),
        );
    }
    eventually(WAIT, "all six web pods bound", || {
        (0..6).all(|i| node_of(&api, &format!("web-{i}")).is_some())
    });
    let mut per_zone: HashMap<char, usize> = HashMap::new();
    for i in 0..6 {
        let node = node_of(&api, &format!("web-{i}")).unwrap();
        *per_zone.entry(node.chars().next().unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        HashMap::from([('a', 2), ('b', 2), ('c', 2)]),
        "pods per zone"
    );
}

#[test]
fn required_anti_affinity_puts_one_pod_per_node() {
    let api = ApiServer::start();
    for n in ["n1", "n2", "n3"] {
        create_node(&api, &FakeNode::new(n, "4", "8Gi"));
    }
    let _s = SchedulerProcess::start(&api, None);
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": "db"}},
        "topologyKey": "kubernetes.io/hostname"
    }]}}});
    for i in 0..4 {
        create_pod(
            &api,
            &pod_json(
                &format!("db-{i}"),
                "100m",
                json!({"app": "db"}),
                anti.clone(),
            ),
        );
    }
    eventually(WAIT, "three db pods bound and one FailedScheduling", || {
        let bound = (0..4)
            .filter(|i| node_of(&api, &format!("db-{i}")).is_some())
            .count();
        let pending = (0..4).find(|i| node_of(&api, &format!("db-{i}")).is_none());
        bound == 3
            && pending.is_some_and(|i| {
                !event_messages(&api, &format!("db-{i}"), "FailedScheduling").is_empty()
            })
    });
    let mut nodes: Vec<String> = (0..4)
        .filter_map(|i| node_of(&api, &format!("db-{i}")))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n1", "n2", "n3"]);
    let pending = (0..4)
        .find(|i| node_of(&api, &format!("db-{i}")).is_none())
        .unwrap();
    let msgs = event_messages(&api, &format!("db-{pending}"), "FailedScheduling");
    assert_eq!(
        msgs[0],
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
}

#[test]
fn taints_tolerations_and_the_failed_scheduling_summary() {
    let api = ApiServer::start();
    create_node(
        &api,
        &FakeNode {
            taints: &[("dedicated", "gpu", "NoSchedule")],
            ..FakeNode::new("gpu-node", "8", "8Gi")
        },
    );
    create_node(&api, &FakeNode::new("small-node", "1", "8Gi"));
    let _s = SchedulerProcess::start(&api, None);
    // Too big for the small node, not tolerating the taint of the big one.
    create_pod(&api, &pod_json("plain", "2", json!({}), json!({})));
    let toleration = json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]});
    create_pod(&api, &pod_json("tolerant", "2", json!({}), toleration));
    eventually(WAIT, "the tolerant pod on gpu-node", || {
        node_of(&api, "tolerant").as_deref() == Some("gpu-node")
    });
    eventually(WAIT, "FailedScheduling for the plain pod", || {
        !event_messages(&api, "plain", "FailedScheduling").is_empty()
    });
    assert_eq!(
        event_messages(&api, "plain", "FailedScheduling")[0],
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {dedicated: gpu}. preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
    );
    eventually(
        WAIT,
        "PodScheduled=False/Unschedulable on the plain pod",
        || {
            let p = get_pod(&api, "plain").unwrap();
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["type"] == "PodScheduled"
                        && c["status"] == "False"
                        && c["reason"] == "Unschedulable"
                })
        },
    );
    assert_eq!(node_of(&api, "plain"), None);
}

#[test]
fn a_high_priority_pod_preempts_lower_ones() {
    let api = ApiServer::start();
    let _deleter = Deleter::start(&api);
    for (name, value) in [("low", 10), ("high", 1000)] {
        post(
            &api,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value}),
        );
    }
    create_node(&api, &FakeNode::new("only", "2", "8Gi"));
    let _s = SchedulerProcess::start(&api, None);
    for i in 0..2 {
        create_pod(
            &api,
            &pod_json(
                &format!("low-{i}"),
                "1",
                json!({}),
                json!({"priorityClassName": "low"}),
            ),
        );
    }
    eventually(WAIT, "both low pods bound", || {
        (0..2).all(|i| node_of(&api, &format!("low-{i}")).is_some())
    });
    create_pod(
        &api,
        &pod_json("high", "2", json!({}), json!({"priorityClassName": "high"})),
    );
    eventually(WAIT, "the high-priority pod bound after preempting", || {
        node_of(&api, "high").as_deref() == Some("only")
    });
    assert!(
        get_pod(&api, "low-0").is_none() && get_pod(&api, "low-1").is_none(),
        "the victims are gone"
    );
    assert!(
        !event_messages(&api, "low-0", "Preempted").is_empty()
            || !event_messages(&api, "low-1", "Preempted").is_empty()
    );
}

#[test]
fn an_unschedulable_pod_is_scheduled_when_a_fitting_node_appears() {
    let api = ApiServer::start();
    create_node(&api, &FakeNode::new("tiny", "1", "8Gi"));
    let s = SchedulerProcess::start(&api, None);
    create_pod(&api, &pod_json("big", "4", json!({}), json!({})));
    eventually(WAIT, "big to be unschedulable", || {
        !event_messages(&api, "big", "FailedScheduling").is_empty()
    });
    eventually(WAIT, "big counted as unschedulable in the metrics", || {
        s.get("/metrics")
            .1
            .contains("scheduler_pending_pods{queue=\"unschedulable\"} 1")
    });
    // The node add event moves it back: it is scheduled long before the five-minute flush or
    // the ten-second backoff cap could have.
    create_node(&api, &FakeNode::new("large", "8", "8Gi"));
    eventually(Duration::from_secs(12), "big bound to the new node", || {
        node_of(&api, "big").as_deref() == Some("large")
    });
    let metrics = s.get("/metrics").1;
    assert!(metrics.contains("scheduler_scheduling_attempt_duration_seconds_count{profile=\"default-scheduler\",result=\"scheduled\"} 1"), "{metrics}");
    assert!(
        metrics.contains("scheduler_pod_scheduling_sli_duration_seconds_count{attempts=\"2\"} 1"),
        "{metrics}"
    );
    assert_eq!(s.get("/healthz"), (200, "ok".to_string()));
}

#[test]
fn two_schedulers_side_by_side_by_scheduler_name() {
    let api = ApiServer::start();
    for n in ["n1", "n2"] {
        create_node(&api, &FakeNode::new(n, "4", "8Gi"));
    }
    let _default = SchedulerProcess::start(&api, None);
    let _second = SchedulerProcess::start(
        &api,
        Some(
            "apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  leaderElect: true
  resourceName: second-scheduler
profiles:
- schedulerName: second-scheduler
  plugins:
    score:
      disabled:
      - name: NodeResourcesFit
      enabled:
      - name: NodeResourcesFit
        weight: 10
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
",
        ),
    );
    create_pod(&api, &pod_json("by-default", "100m", json!({}), json!({})));
    create_pod(
        &api,
        &pod_json(
            "by-second",
            "100m",
            json!({}),
            json!({"schedulerName": "second-scheduler"}),
        ),
    );
    create_pod(
        &api,
        &pod_json(
            "by-nobody",
            "100m",
            json!({}),
            json!({"schedulerName": "nobody"}),
        ),
    );
    eventually(WAIT, "both named schedulers' pods bound", || {
        node_of(&api, "by-default").is_some() && node_of(&api, "by-second").is_some()
    });
    let (_, leases) = api.http(
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
        "",
        b"",
    );
    let mut names: Vec<&str> = leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["metadata"]["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["kube-scheduler", "second-scheduler"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        node_of(&api, "by-nobody"),
        None,
        "no scheduler owns schedulerName nobody"
    );
    assert!(event_messages(&api, "by-nobody", "FailedScheduling").is_empty());
}
