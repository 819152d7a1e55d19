//! The in-tree plugins and the registry that names them (upstream `plugins/registry.go`). The
//! small plugins (PrioritySort, SchedulingGates, NodeName, NodeUnschedulable, NodePorts,
//! DefaultBinder) live here; each larger one has its own module named after upstream's package.

pub mod defaultpreemption;
pub mod imagelocality;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod noderesources;
pub mod podtopologyspread;
pub mod tainttoleration;
pub mod volumes;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};

use crate::framework::*;
use crate::nodeinfo::{NodeInfo, PodInfo};

macro_rules! info {
    ($points:expr, $factory:expr) => {
        PluginInfo {
            factory: Arc::new($factory),
            points: $points,
            validate_args: |_| Ok(()),
        }
    };
    ($points:expr, $factory:expr, $validate:expr) => {
        PluginInfo {
            factory: Arc::new($factory),
            points: $points,
            validate_args: $validate,
        }
    };
}

/// The in-tree registry: plugin name → factory and the extension points it implements.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.insert(
        "PrioritySort",
        info!(&["queueSort"], |_, _| Ok(
            Arc::new(PrioritySort) as Arc<dyn Plugin>
        )),
    );
    r.insert(
        "SchedulingGates",
        info!(&["preEnqueue"], |_, _| Ok(
            Arc::new(SchedulingGates) as Arc<dyn Plugin>
        )),
    );
    r.insert(
        "NodeName",
        info!(
            &["filter"],
            |_, _| Ok(Arc::new(NodeName) as Arc<dyn Plugin>)
        ),
    );
    r.insert(
        "NodeUnschedulable",
        info!(&["filter"], |_, _| Ok(
            Arc::new(NodeUnschedulable) as Arc<dyn Plugin>
        )),
    );
    r.insert(
        "NodePorts",
        info!(&["preFilter", "filter"], |_, _| Ok(
            Arc::new(NodePorts) as Arc<dyn Plugin>
        )),
    );
    r.insert(
        "DefaultBinder",
        info!(&["bind"], |_, h: &Handle| {
            let client = h
                .client
                .clone()
                .ok_or("DefaultBinder needs an API client")?;
            Ok(Arc::new(DefaultBinder { client }) as Arc<dyn Plugin>)
        }),
    );
    tainttoleration::register(&mut r);
    nodeaffinity::register(&mut r);
    noderesources::register(&mut r);
    podtopologyspread::register(&mut r);
    interpodaffinity::register(&mut r);
    imagelocality::register(&mut r);
    volumes::register(&mut r);
    defaultpreemption::register(&mut r);
    r
}

/// Pods by priority, highest first, then by the time they were queued (upstream PrioritySort).
pub struct PrioritySort;

impl Plugin for PrioritySort {
    fn name(&self) -> &'static str {
        "PrioritySort"
    }
    fn queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        Some(self)
    }
}

impl QueueSortPlugin for PrioritySort {
    fn less(&self, a: (&PodInfo, u64), b: (&PodInfo, u64)) -> bool {
        a.0.priority > b.0.priority || (a.0.priority == b.0.priority && a.1 < b.1)
    }
}

/// Pods with `spec.schedulingGates` are not queued for scheduling until the gates are removed.
pub struct SchedulingGates;

impl Plugin for SchedulingGates {
    fn name(&self) -> &'static str {
        "SchedulingGates"
    }
    fn pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::UnscheduledPodUpdate]
    }
}

impl PreEnqueuePlugin for SchedulingGates {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status {
        let gates = pod.spec().scheduling_gates.as_deref().unwrap_or(&[]);
        if gates.is_empty() {
            return Status::success();
        }
        let names: Vec<&str> = gates.iter().map(|g| g.name.as_str()).collect();
        Status::unresolvable(format!(
            "waiting for scheduling gates: [{}]",
            names.join(" ")
        ))
    }
}

pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";

/// `spec.nodeName` set by the user: only that node.
pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.spec().node_name.as_deref() {
            Some(n) if !n.is_empty() && n != node.name => Status::unresolvable(ERR_NODE_NAME),
            _ => Status::success(),
        }
    }
}

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";

/// Nodes marked `spec.unschedulable` (cordoned) take only pods tolerating their taint.
pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        let taint = k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let tolerated = pod
            .spec()
            .tolerations
            .iter()
            .flatten()
            .any(|t| crate::labels::tolerates(t, &taint));
        if tolerated {
            Status::success()
        } else {
            Status::unresolvable(ERR_UNSCHEDULABLE)
        }
    }
}

pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// Host ports: a node takes a pod only if none of its host ports is in use there.
pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::AssignedPodDelete]
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &crate::nodeinfo::Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if pod.host_ports.is_empty() {
            return (None, Status::skip());
        }
        (None, Status::success())
    }
}

/// Upstream `HostPortInfo.CheckConflict`: same protocol and port, and either IP is 0.0.0.0 or
/// they are equal.
fn ports_conflict(a: &crate::nodeinfo::HostPort, b: &crate::nodeinfo::HostPort) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for want in &pod.host_ports {
            if node.used_ports.iter().any(|u| ports_conflict(u, want)) {
                return Status::unschedulable(ERR_PORTS);
            }
        }
        Status::success()
    }
}

/// Binds through the API: POST `pods/<name>/binding`.
pub struct DefaultBinder {
    client: kube::Client,
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }
    fn bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl BindPlugin for DefaultBinder {
    async fn bind(&self, pod: &PodInfo, node: &str) -> Status {
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client.clone(), &pod.namespace);
        let binding = Binding {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.into()),
                ..Default::default()
            },
        };
        let body = match serde_json::to_vec(&binding) {
            Ok(b) => b,
            Err(e) => return Status::error(e.to_string()),
        };
        let req = http::Request::post(format!(
            "/api/v1/namespaces/{}/pods/{}/binding",
            pod.namespace, pod.name
        ))
        .header("content-type", "application/json")
        .body(body);
        let req = match req {
            Ok(r) => r,
            Err(e) => return Status::error(e.to_string()),
        };
        let _ = api;
        match self.client.request_text(req).await {
            Ok(_) => Status::success(),
            Err(e) => Status::error(e.to_string()),
        }
    }
}
