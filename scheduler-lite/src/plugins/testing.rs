//! Builders for the plugins' table tests: nodes with allocatable resources, labels and taints,
//! pods with requests, and a runner for one plugin's PreScore + Score + NormalizeScore.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::framework::*;
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub fn node(name: &str, milli_cpu: i64, memory: i64) -> Node {
    let mut alloc = BTreeMap::new();
    alloc.insert("cpu".to_string(), Quantity(format!("{milli_cpu}m")));
    alloc.insert("memory".to_string(), Quantity(memory.to_string()));
    alloc.insert("pods".to_string(), Quantity("110".into()));
    Node {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            labels: Some([("kubernetes.io/hostname".to_string(), name.to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(alloc.clone()),
            allocatable: Some(alloc),
            ..Default::default()
        }),
    }
}

pub fn labeled(mut n: Node, labels: &[(&str, &str)]) -> Node {
    let l = n.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    n
}

pub fn tainted(mut n: Node, taints: Vec<Taint>) -> Node {
    n.spec.get_or_insert_with(Default::default).taints = Some(taints);
    n
}

pub fn with_allocatable(mut n: Node, name: &str, q: &str) -> Node {
    n.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert(name.into(), Quantity(q.into()));
    n
}

pub fn pod(name: &str) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod whose containers request (milli cpu, memory) each.
pub fn pod_req(name: &str, containers: &[(i64, i64)]) -> Pod {
    let mut p = pod(name);
    p.spec.as_mut().unwrap().containers = containers
        .iter()
        .enumerate()
        .map(|(i, (c, m))| {
            let mut req = BTreeMap::new();
            req.insert("cpu".to_string(), Quantity(format!("{c}m")));
            req.insert("memory".to_string(), Quantity(m.to_string()));
            Container {
                name: format!("c{i}"),
                resources: Some(ResourceRequirements {
                    requests: Some(req),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    p
}

pub fn with_labels(mut p: Pod, labels: &[(&str, &str)]) -> Pod {
    let l = p.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    p
}

pub fn on_node(mut p: Pod, node: &str) -> Pod {
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p
}

pub fn node_info(n: Node, pods: Vec<Pod>) -> NodeInfo {
    let mut info = NodeInfo::new(Arc::new(n));
    for p in pods {
        info.add_pod(Arc::new(PodInfo::new(Arc::new(p))));
    }
    info
}

/// Nodes and the pods placed on them by `spec.nodeName`.
pub fn snapshot(nodes: Vec<Node>, pods: Vec<Pod>) -> Snapshot {
    let infos = nodes
        .into_iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap();
            let on: Vec<Pod> = pods
                .iter()
                .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(&name))
                .cloned()
                .collect();
            node_info(n, on)
        })
        .collect();
    Snapshot::from_nodes(infos)
}

/// PreFilter (when implemented), then Filter on every node of the snapshot.
pub fn run_filters(plugin: &dyn Plugin, p: Pod, snap: &Snapshot) -> Vec<Status> {
    let pi = PodInfo::new(Arc::new(p));
    let mut state = CycleState::default();
    if let Some(pf) = plugin.pre_filter() {
        let (_, s) = pf.pre_filter(&mut state, &pi, snap);
        if s.is_skip() {
            return snap.nodes.iter().map(|_| Status::success()).collect();
        }
        if !s.is_success() {
            return snap.nodes.iter().map(|_| s.clone()).collect();
        }
    }
    let f = plugin.filter().expect("a filter plugin");
    snap.nodes
        .iter()
        .map(|n| f.filter(&state, &pi, n))
        .collect()
}

/// PreScore (when implemented), Score and NormalizeScore of one plugin over `nodes` (which are
/// also the snapshot), plus `existing` pods placed by nodeName.
pub fn run_scores(plugin: &dyn Plugin, existing: &[Pod], p: Pod, nodes: Vec<NodeInfo>) -> Vec<i64> {
    let mut infos = nodes;
    for e in existing {
        let n = e.spec.as_ref().unwrap().node_name.clone().unwrap();
        if let Some(i) = infos.iter_mut().find(|i| i.name == n) {
            i.add_pod(Arc::new(PodInfo::new(Arc::new(e.clone()))));
        }
    }
    let snap = Snapshot::from_nodes(infos);
    run_scores_on(plugin, p, &snap, &snap.nodes.clone())
}

pub fn run_scores_on(
    plugin: &dyn Plugin,
    p: Pod,
    snap: &Snapshot,
    nodes: &[Arc<NodeInfo>],
) -> Vec<i64> {
    let pi = PodInfo::new(Arc::new(p));
    let mut state = CycleState::default();
    if let Some(ps) = plugin.pre_score() {
        let s = ps.pre_score(&mut state, &pi, nodes, snap);
        if s.is_skip() {
            return nodes.iter().map(|_| 0).collect();
        }
        assert!(s.is_success(), "PreScore: {s:?}");
    }
    let sp = plugin.score().expect("a score plugin");
    let mut scores: Vec<NodeScore> = nodes
        .iter()
        .map(|n| NodeScore {
            name: n.name.clone(),
            score: sp.score(&state, &pi, n).expect("score"),
        })
        .collect();
    if let Some(norm) = sp.normalize() {
        norm.normalize_score(&state, &pi, &mut scores);
    }
    scores.into_iter().map(|s| s.score).collect()
}
