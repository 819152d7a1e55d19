//! The node lifecycle controller (upstream's pkg/controller/nodelifecycle) and the taint-based
//! eviction it drives (pkg/controller/tainteviction, the NoExecuteTaintManager).
//!
//! Node health: every `--node-monitor-period` each node's last heartbeat is looked at — a change
//! of its Ready condition's `lastHeartbeatTime` or of its Lease's `renewTime` in
//! kube-node-lease. A node not heard from within `--node-monitor-grace-period` (or that never
//! posted a status within `--node-startup-grace-period` of its creation) has Ready,
//! MemoryPressure, DiskPressure and PIDPressure set to Unknown (reason NodeStatusUnknown,
//! "Kubelet stopped posting node status."), a NodeNotReady event, and its pods' Ready condition
//! set to False (upstream's MarkPodsNotReady).
//!
//! Taints: Ready False gives `node.kubernetes.io/not-ready`, Ready Unknown
//! `node.kubernetes.io/unreachable`, both as NoExecute (with timeAdded) and NoSchedule; pressure
//! conditions, NetworkUnavailable and `spec.unschedulable` give their NoSchedule taints. As
//! upstream, NoExecute taints are not added while every node is unhealthy (the controller
//! suspects itself, "master disruption"), nor in a small cluster's partially disrupted zone.
//! The eviction rate limit per zone (`--node-eviction-rate`) is not implemented.
//!
//! Taint eviction: a pod on a node with NoExecute taints it does not tolerate is deleted at
//! once; one tolerating them for `tolerationSeconds` is deleted that long after the taint was
//! seen (the smallest of its matching tolerations); a toleration without seconds keeps it. The
//! pod first gets the DisruptionTarget condition (DeletionByTaintManager) and a
//! TaintManagerEviction event; removing the taint in time cancels the eviction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;

use crate::ControllerContext;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Upstream's defaults: `--unhealthy-zone-threshold`, `--large-cluster-size-threshold`.
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
const LARGE_CLUSTER_THRESHOLD: usize = 50;

fn now_time() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

/// What the controller remembers of a node's heartbeats.
struct Health {
    heartbeat: Option<String>,
    lease_renew: Option<String>,
    probe: Instant,
}

/// Runs the node lifecycle controller and its taint eviction.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let nodes = ctx.informers.informer::<Node>();
    let pods = ctx.informers.informer::<Pod>();
    let leases = ctx.informers.informer::<Lease>();
    let eviction_queue: WorkQueue<String> = WorkQueue::new("noexec_taint_pod");
    watch_for_eviction(&nodes, &pods, &eviction_queue);
    let changed = Arc::new(tokio::sync::Notify::new());
    watch_for_condition_changes(&nodes, &changed);
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let recorder = Arc::new(ctx.recorder("node-controller"));
    let eviction = Arc::new(TaintEviction {
        client: ctx.client.clone(),
        nodes: nodes.clone(),
        pods: pods.clone(),
        scheduled: Mutex::new(HashMap::new()),
        queue: eviction_queue.clone(),
        recorder: EventRecorder::start(ctx.client.clone(), "taint-eviction-controller", ""),
    });
    let workers = tokio::spawn(run_workers(eviction_queue, 8, move |key: String| {
        let ev = eviction.clone();
        async move { ev.sync(&key).await }
    }));
    let mut monitor = Monitor {
        client: ctx.client.clone(),
        nodes,
        pods,
        leases,
        health: HashMap::new(),
        grace: ctx.options.node_monitor_grace_period,
        startup_grace: ctx.options.node_startup_grace_period,
        recorder,
    };
    let period = ctx.options.node_monitor_period;
    loop {
        if let Err(e) = monitor.tick().await {
            tracing::warn!("nodelifecycle: {e}");
        }
        if workers.is_finished() {
            anyhow::bail!("the taint eviction workers stopped");
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = changed.notified() => {}
        }
    }
}

/// Upstream taints by condition on every node add and update (`doNoScheduleTaintingPass` from
/// `nodeUpdateQueue`), not only each monitor period: a node that turns Ready loses its
/// `not-ready` taint at once, so pods are not kept off a Ready node for a period. This wakes the
/// monitor when a node's conditions (type and status, not heartbeats) or unschedulable change.
fn watch_for_condition_changes(nodes: &Informer<Node>, changed: &Arc<tokio::sync::Notify>) {
    fn state(n: &Node) -> (Vec<(String, String)>, bool) {
        let conditions = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .map(|c| (c.type_.clone(), c.status.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let unschedulable = n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        (conditions, unschedulable)
    }
    let (on_add, on_update) = (changed.clone(), changed.clone());
    nodes.add_handler(HandlerFns::<Node> {
        add: Some(Box::new(move |_| on_add.notify_one())),
        update: Some(Box::new(move |old: &Arc<Node>, new: &Arc<Node>| {
            if state(old) != state(new) {
                on_update.notify_one();
            }
        })),
        delete: None,
    });
}

struct Monitor {
    client: kube::Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    leases: Informer<Lease>,
    health: HashMap<String, Health>,
    grace: Duration,
    startup_grace: Duration,
    recorder: Arc<EventRecorder>,
}

/// A zone's state (upstream's `ComputeZoneState`).
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else {
        ZoneState::Normal
    }
}

fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    format!(
        "{}:\0:{}",
        labels.get(REGION_LABEL).cloned().unwrap_or_default(),
        labels.get(ZONE_LABEL).cloned().unwrap_or_default()
    )
}

impl Monitor {
    async fn tick(&mut self) -> anyhow::Result<()> {
        let nodes = self.nodes.list();
        self.health
            .retain(|n, _| nodes.iter().any(|x| x.metadata.name.as_deref() == Some(n)));
        let mut current: Vec<Node> = Vec::new();
        for node in &nodes {
            let updated = match self.update_health(node).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("nodelifecycle: updating {}: {e}", key_of(node.as_ref()));
                    (**node).clone()
                }
            };
            current.push(updated);
        }
        // Zone states decide whether NoExecute taints may be added.
        let mut zones: HashMap<String, (usize, usize)> = HashMap::new();
        for n in &current {
            let e = zones.entry(zone_of(n)).or_default();
            if ready_status(n) == "True" {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let states: HashMap<String, ZoneState> = zones
            .iter()
            .map(|(z, (r, nr))| (z.clone(), zone_state(*r, *nr)))
            .collect();
        let all_disrupted =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        for n in &current {
            let state = states[&zone_of(n)];
            let small_partial =
                state == ZoneState::PartialDisruption && current.len() <= LARGE_CLUSTER_THRESHOLD;
            let may_evict = !(all_disrupted || small_partial);
            if let Err(e) = self.update_taints(n, may_evict, all_disrupted).await {
                tracing::warn!("nodelifecycle: tainting {}: {e}", key_of(n));
            }
        }
        Ok(())
    }

    /// Upstream's `tryUpdateNodeHealth`: notes heartbeats, marks a silent node Unknown.
    async fn update_health(&mut self, node: &Arc<Node>) -> anyhow::Result<Node> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let heartbeat = condition(node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string());
        let lease_renew = self.leases.get("kube-node-lease", &name).and_then(|l| {
            l.spec
                .as_ref()?
                .renew_time
                .as_ref()
                .map(|t| t.0.to_string())
        });
        let now = Instant::now();
        let h = self.health.entry(name.clone()).or_insert(Health {
            heartbeat: heartbeat.clone(),
            lease_renew: lease_renew.clone(),
            probe: now,
        });
        if h.heartbeat != heartbeat || h.lease_renew != lease_renew {
            h.heartbeat = heartbeat;
            h.lease_renew = lease_renew;
            h.probe = now;
        }
        let never_posted = condition(node, "Ready").is_none();
        let grace = if never_posted {
            self.startup_grace
        } else {
            self.grace
        };
        if h.probe.elapsed() <= grace {
            return Ok((**node).clone());
        }
        let mut new = (**node).clone();
        let observed_ready = ready_status(node).to_string();
        if !mark_unknown(&mut new, never_posted) {
            return Ok(new);
        }
        let updated = Api::<Node>::all(self.client.clone())
            .replace_status(&name, &PostParams::default(), &new)
            .await?;
        if observed_ready == "True" {
            self.recorder.normal(
                node.as_ref(),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
            );
        }
        self.mark_pods_not_ready(&name).await;
        Ok(updated)
    }

    /// Upstream's `MarkPodsNotReady`: the pods of an unreachable node are not ready.
    async fn mark_pods_not_ready(&self, node: &str) {
        let pods = self
            .pods
            .list_filtered(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node));
        for pod in pods {
            let Some(conds) = pod.status.as_ref().and_then(|s| s.conditions.clone()) else {
                continue;
            };
            if !conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                continue;
            }
            let conds: Vec<_> = conds
                .into_iter()
                .map(|mut c| {
                    if c.type_ == "Ready" {
                        c.status = "False".into();
                        c.last_transition_time = Some(now_time());
                    }
                    c
                })
                .collect();
            let patch = serde_json::json!({"status": {"conditions": conds}});
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            if let Err(e) = Api::<Pod>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!("nodelifecycle: marking pod {ns}/{name} not ready: {e}");
            } else {
                self.recorder
                    .pod_warning(&pod, "NodeNotReady", "Node is not ready".into());
            }
        }
    }

    async fn update_taints(
        &self,
        node: &Node,
        may_evict: bool,
        all_disrupted: bool,
    ) -> anyhow::Result<()> {
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let desired = desired_taints(node, &current, may_evict, all_disrupted);
        if desired == current {
            return Ok(());
        }
        let name = node.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": desired},
        });
        Api::<Node>::all(self.client.clone())
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }
}

/// Sets the node's Ready and pressure conditions to Unknown; whether anything changed.
pub fn mark_unknown(node: &mut Node, never_posted: bool) -> bool {
    let created = node.metadata.creation_timestamp.clone();
    let status = node.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conds.iter_mut().find(|c| c.type_ == t) {
            Some(c) => {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(now_time());
                    changed = true;
                }
            }
            None => {
                conds.push(NodeCondition {
                    type_: t.into(),
                    status: "Unknown".into(),
                    reason: Some(
                        if never_posted {
                            "NodeStatusNeverUpdated"
                        } else {
                            "NodeStatusUnknown"
                        }
                        .into(),
                    ),
                    message: Some(
                        if never_posted {
                            "Kubelet never posted node status."
                        } else {
                            "Kubelet stopped posting node status."
                        }
                        .into(),
                    ),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(now_time()),
                });
                changed = true;
            }
        }
    }
    changed
}

/// The taints the node should have: the controller's own ones from its conditions, the
/// others kept as they are.
pub fn desired_taints(
    node: &Node,
    current: &[Taint],
    may_evict: bool,
    all_disrupted: bool,
) -> Vec<Taint> {
    let ready = ready_status(node);
    let cond_true = |t: &str| condition(node, t).is_some_and(|c| c.status == "True");
    let mut no_schedule: Vec<&str> = Vec::new();
    match ready {
        "False" => no_schedule.push(TAINT_NOT_READY),
        "Unknown" => no_schedule.push(TAINT_UNREACHABLE),
        _ => {}
    }
    for (cond, taint) in [
        ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "node.kubernetes.io/disk-pressure"),
        ("PIDPressure", "node.kubernetes.io/pid-pressure"),
        (
            "NetworkUnavailable",
            "node.kubernetes.io/network-unavailable",
        ),
    ] {
        if cond_true(cond) {
            no_schedule.push(taint);
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        no_schedule.push("node.kubernetes.io/unschedulable");
    }
    let no_execute: Option<&str> = match ready {
        "False" => Some(TAINT_NOT_READY),
        "Unknown" => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    const OWNED_NO_SCHEDULE: [&str; 7] = [
        TAINT_NOT_READY,
        TAINT_UNREACHABLE,
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/network-unavailable",
        "node.kubernetes.io/unschedulable",
    ];
    let mut out: Vec<Taint> = Vec::new();
    for t in current {
        let owned_ns = t.effect == "NoSchedule" && OWNED_NO_SCHEDULE.contains(&t.key.as_str());
        let owned_ne =
            t.effect == "NoExecute" && (t.key == TAINT_NOT_READY || t.key == TAINT_UNREACHABLE);
        if owned_ns && !no_schedule.contains(&t.key.as_str()) {
            continue;
        }
        if owned_ne {
            // Kept only while it is still the right one (and not in master disruption).
            if all_disrupted || no_execute != Some(t.key.as_str()) {
                continue;
            }
        }
        out.push(t.clone());
    }
    for key in no_schedule {
        if !out.iter().any(|t| t.key == key && t.effect == "NoSchedule") {
            out.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            });
        }
    }
    if let (Some(key), true) = (no_execute, may_evict && !all_disrupted) {
        if !out.iter().any(|t| t.key == key && t.effect == "NoExecute") {
            out.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                time_added: Some(now_time()),
                ..Default::default()
            });
        }
    }
    out
}

/// Whether `tol` tolerates `taint` (upstream's `Toleration.ToleratesTaint`).
pub fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = tol.effect.as_deref() {
        if !e.is_empty() && e != taint.effect {
            return false;
        }
    }
    let key = tol.key.as_deref().unwrap_or_default();
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && tol.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// When a pod on a node with `taints` (NoExecute ones) is to go.
#[derive(Debug, PartialEq)]
pub enum Eviction {
    /// It tolerates every taint for ever (or there are none).
    Never,
    /// It does not tolerate one: now.
    Now,
    /// After this long (the smallest tolerationSeconds of the tolerations used).
    After(Duration),
}

pub fn eviction_for(tolerations: &[Toleration], taints: &[Taint]) -> Eviction {
    let taints: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if taints.is_empty() {
        return Eviction::Never;
    }
    let mut min: Option<i64> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                min = Some(min.map_or(s, |m| m.min(s)));
            }
        }
    }
    match min {
        None => Eviction::Never,
        Some(s) if s <= 0 => Eviction::Now,
        Some(s) => Eviction::After(Duration::from_secs(s as u64)),
    }
}

/// The NoExecute taint manager.
struct TaintEviction {
    client: kube::Client,
    nodes: Informer<Node>,
    pods: Informer<Pod>,
    /// Pods with an eviction scheduled: when it was first scheduled.
    scheduled: Mutex<HashMap<String, Instant>>,
    queue: WorkQueue<String>,
    recorder: EventRecorder,
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

/// Queues pods whose node's NoExecute taints changed, and pods that changed.
fn watch_for_eviction(nodes: &Informer<Node>, pods: &Informer<Pod>, queue: &WorkQueue<String>) {
    let (p1, q1) = (pods.clone(), queue.clone());
    let enqueue_node = move |n: &Node| {
        let name = n.metadata.name.clone().unwrap_or_default();
        for p in p1.list_filtered(|p| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
        }) {
            q1.add(key_of(p.as_ref()));
        }
    };
    let e1 = enqueue_node.clone();
    nodes.add_handler(HandlerFns {
        add: Some(Box::new(move |n: &Arc<Node>| {
            if !no_execute_taints(n).is_empty() {
                e1(n)
            }
        })),
        update: Some(Box::new(move |old: &Arc<Node>, new: &Arc<Node>| {
            if no_execute_taints(old) != no_execute_taints(new) {
                enqueue_node(new)
            }
        })),
        delete: None,
    });
    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    pods.add_handler(HandlerFns {
        add: Some(Box::new(move |p: &Arc<Pod>| q1.add(key_of(p.as_ref())))),
        update: Some(Box::new(move |old: &Arc<Pod>, new: &Arc<Pod>| {
            let node = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
            let tol = |p: &Pod| p.spec.as_ref().and_then(|s| s.tolerations.clone());
            if node(old) != node(new) || tol(old) != tol(new) {
                q2.add(key_of(new.as_ref()))
            }
        })),
        delete: Some(Box::new(move |p: &Arc<Pod>| q3.add(key_of(p.as_ref())))),
    });
}

impl TaintEviction {
    fn cancel(&self, key: &str, pod: Option<&Pod>) {
        if self.scheduled.lock().remove(key).is_some() {
            if let Some(pod) = pod {
                self.recorder.pod_normal(
                    pod,
                    "TaintManagerEviction",
                    format!("Cancelling deletion of Pod {key}"),
                );
            }
        }
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = machinery::informer::split_key(key);
        let Some(pod) = self.pods.get(ns, name) else {
            self.cancel(key, None);
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.scheduled.lock().remove(key);
            return Ok(());
        }
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let taints = self
            .nodes
            .get("", &node_name)
            .map(|n| no_execute_taints(&n))
            .unwrap_or_default();
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let wait = match eviction_for(&tolerations, &taints) {
            Eviction::Never => {
                self.cancel(key, Some(&pod));
                return Ok(());
            }
            Eviction::Now => Duration::ZERO,
            Eviction::After(d) => d,
        };
        let first = *self
            .scheduled
            .lock()
            .entry(key.to_string())
            .or_insert_with(Instant::now);
        let elapsed = first.elapsed();
        if elapsed < wait {
            self.queue.add_after(key.to_string(), wait - elapsed);
            return Ok(());
        }
        self.evict(&pod).await?;
        self.scheduled.lock().remove(key);
        Ok(())
    }

    async fn evict(&self, pod: &Pod) -> anyhow::Result<()> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        self.recorder.pod_normal(
            pod,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {ns}/{name}"),
        );
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let mut conds: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.type_ != "DisruptionTarget")
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        conds.push(serde_json::json!({
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": crate::endpoints::rfc3339(k8s_openapi::jiff::Timestamp::now()),
        }));
        let patch = serde_json::json!({"status": {"conditions": conds}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, op: &str, effect: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: Some(op.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn eviction_timing_follows_tolerations() {
        let unreachable = [taint(TAINT_UNREACHABLE, "NoExecute")];
        assert_eq!(eviction_for(&[], &unreachable), Eviction::Now);
        assert_eq!(
            eviction_for(&[], &[taint("x", "NoSchedule")]),
            Eviction::Never
        );
        let t300 = tol(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(300));
        let t5 = tol(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(5));
        assert_eq!(
            eviction_for(&[t300.clone(), t5], &unreachable),
            Eviction::After(Duration::from_secs(5))
        );
        assert_eq!(
            eviction_for(&[tol("", "Exists", "", None)], &unreachable),
            Eviction::Never,
            "tolerates everything for ever"
        );
        // Two taints, one not tolerated: now.
        let both = [
            taint(TAINT_UNREACHABLE, "NoExecute"),
            taint("other", "NoExecute"),
        ];
        assert_eq!(eviction_for(&[t300], &both), Eviction::Now);
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let mut node = Node::default();
        node.metadata.name = Some("n".into());
        assert!(mark_unknown(&mut node, false));
        assert!(!mark_unknown(&mut node, false), "already unknown");
        let ready = condition(&node, "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        let taints = desired_taints(&node, &[], true, false);
        let keys: Vec<(String, String)> = taints
            .iter()
            .map(|t| (t.key.clone(), t.effect.clone()))
            .collect();
        assert!(keys.contains(&(TAINT_UNREACHABLE.into(), "NoSchedule".into())));
        assert!(keys.contains(&(TAINT_UNREACHABLE.into(), "NoExecute".into())));
        // Master disruption: no NoExecute taint.
        let taints = desired_taints(&node, &taints, true, true);
        assert!(!taints.iter().any(|t| t.effect == "NoExecute"));
        // Ready again: the controller's taints go, others stay.
        node.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        let mut cur = desired_taints(&node, &[], true, false);
        cur.push(taint("user", "NoSchedule"));
        cur.push(taint(TAINT_UNREACHABLE, "NoExecute"));
        let taints = desired_taints(&node, &cur, true, false);
        assert_eq!(taints, vec![taint("user", "NoSchedule")]);
    }

    #[test]
    fn zone_states_as_upstream() {
        assert_eq!(zone_state(1, 1), ZoneState::Normal);
        assert_eq!(zone_state(0, 1), ZoneState::FullDisruption);
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(10, 3), ZoneState::Normal);
    }
}
