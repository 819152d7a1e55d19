//! The scheduling loop (upstream `schedule_one.go`): pop a pod, snapshot the cache, run the
//! profile's PreFilter/Filter over the nodes (stopping once `numFeasibleNodesToFind` fit, starting
//! where the last cycle stopped), PreScore/Score the feasible ones, pick the best (ties broken at
//! random), then assume the pod in the cache, Reserve and Permit — and bind in the background
//! (PreBind, Bind, PostBind) while the next pod is already being scheduled. A pod that fits
//! nowhere runs PostFilter (preemption), gets the FailedScheduling event with upstream's summary
//! message and PodScheduled=False/Unschedulable, and goes back to the queue.
//!
//! The loop runs on its own thread: Filter and Score are CPU work over thousands of nodes and
//! must not stall the async runtime that serves the informers and the bindings.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use machinery::events::EventRecorder;
use parking_lot::Mutex;

use crate::cache::Cache;
use crate::config::{num_feasible_nodes_to_find, Config};
use crate::framework::*;
use crate::metrics::Metrics;
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};
use crate::plugins::defaultpreemption::summary;
use crate::queue::{QueuedPod, SchedulingQueue};

/// Cluster objects some plugins read besides nodes and pods, refreshed by their informers and
/// copied (as `Arc`s) into each snapshot.
#[derive(Default)]
pub struct ClusterObjects {
    pub namespaces: Mutex<Arc<HashMap<String, crate::labels::Labels>>>,
    pub volumes: Mutex<Arc<crate::plugins::volumes::VolumeState>>,
    pub pdbs: Mutex<Arc<Vec<Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget>>>>,
    pub owner_selectors: Mutex<Arc<HashMap<String, Vec<crate::labels::Selector>>>>,
}

/// Why no node was chosen (upstream `FitError`).
#[derive(Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub statuses: HashMap<String, Status>,
    pub pre_filter_msg: Option<String>,
    pub post_filter_msg: Option<String>,
    pub plugins: HashSet<&'static str>,
}

impl FitError {
    /// Upstream `FitError.Error()`: "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had
    /// untolerated taint {k: v}. preemption: …".
    pub fn message(&self) -> String {
        let mut msg = match &self.pre_filter_msg {
            Some(m) => format!("0/{} nodes are available: {m}.", self.num_all_nodes),
            None => {
                let mut counts: HashMap<String, usize> = HashMap::new();
                for s in self.statuses.values() {
                    for r in &s.reasons {
                        *counts.entry(r.clone()).or_default() += 1;
                    }
                }
                summary(self.num_all_nodes, &counts)
            }
        };
        if let Some(p) = &self.post_filter_msg {
            msg.push(' ');
            msg.push_str(p);
        }
        msg
    }
}

/// Nodes per unit of parallel Filter work: small enough to stop soon after enough nodes fit, big
/// enough that claiming a block costs nothing next to filtering it.
const FILTER_BLOCK: usize = 64;

pub enum Outcome {
    Scheduled {
        node: String,
        evaluated: usize,
        feasible: usize,
    },
    Unschedulable(FitError),
    Error(String),
}

pub struct Scheduler {
    pub config: Config,
    pub frameworks: HashMap<String, Arc<Framework>>,
    pub queue: Arc<SchedulingQueue>,
    pub cache: Arc<Cache>,
    pub objects: Arc<ClusterObjects>,
    pub metrics: Arc<Metrics>,
    client: Option<kube::Client>,
    recorder: EventRecorder,
    next_start: AtomicUsize,
    /// Pods bound since start (benchmarks and tests wait on it).
    pub bound: AtomicU64,
    rt: tokio::runtime::Handle,
    bind_slots: Arc<tokio::sync::Semaphore>,
}

impl Scheduler {
    /// Builds the profiles from `registry`. Must be called inside a tokio runtime.
    pub fn new(
        config: Config,
        registry: &Registry,
        client: Option<kube::Client>,
        recorder: EventRecorder,
    ) -> Result<Arc<Scheduler>, String> {
        let handle = Handle {
            client: client.clone(),
            parallelism: config.parallelism,
        };
        let mut frameworks = HashMap::new();
        for p in &config.profiles {
            let f = Framework::new(p, registry, &handle)
                .map_err(|e| format!("profile {:?}: {e}", p.scheduler_name))?;
            frameworks.insert(p.scheduler_name.clone(), Arc::new(f));
        }
        let queue = Arc::new(SchedulingQueue::new(
            frameworks.clone(),
            config.pod_initial_backoff,
            config.pod_max_backoff,
        ));
        Ok(Arc::new(Scheduler {
            config,
            frameworks,
            queue,
            cache: Arc::new(Cache::new()),
            objects: Arc::default(),
            metrics: Arc::default(),
            client,
            recorder,
            next_start: AtomicUsize::new(0),
            bound: AtomicU64::new(0),
            rt: tokio::runtime::Handle::current(),
            bind_slots: Arc::new(tokio::sync::Semaphore::new(256)),
        }))
    }

    /// Whether a pod is this scheduler's (its schedulerName names one of our profiles).
    pub fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        self.frameworks.contains_key(name)
    }

    /// Runs scheduling cycles on a thread of its own until the queue is closed, and the
    /// backoff flush on the runtime.
    pub fn start(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        let flusher = Arc::downgrade(&self.queue);
        self.rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match flusher.upgrade() {
                    Some(q) => q.flush(),
                    None => return,
                }
            }
        });
        std::thread::Builder::new()
            .name("scheduling-loop".into())
            .spawn(move || {
                let mut snapshot = Snapshot::default();
                while me.schedule_one(&mut snapshot) {}
            })
            .expect("spawning the scheduling loop")
    }

    /// One scheduling cycle; false once the queue is closed.
    pub fn schedule_one(self: &Arc<Self>, snapshot: &mut Snapshot) -> bool {
        let Some((qp, cycle)) = self.queue.pop() else {
            return false;
        };
        let start = Instant::now();
        let pod = qp.info.clone();
        let name = pod
            .spec()
            .scheduler_name
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        let Some(fwk) = self.frameworks.get(name).cloned() else {
            self.queue.done(&pod.key);
            return true;
        };
        if self.cache.has_pod(&pod.key) {
            // Already assumed or bound (a stale queue entry).
            self.queue.done(&pod.key);
            return true;
        }
        self.refresh_snapshot(snapshot);
        let mut state = CycleState::default();
        match self.schedule_pod(&fwk, &mut state, &pod, snapshot) {
            Outcome::Scheduled { node, .. } => {
                self.assume_and_bind(fwk, state, qp, cycle, node, start);
            }
            Outcome::Unschedulable(mut fit) => {
                if !fwk.post_filter.is_empty() {
                    let input = PostFilterInput {
                        snapshot,
                        statuses: &fit.statuses,
                        framework: &fwk,
                    };
                    let (result, s) = fwk.run_post_filter(&state, &pod, &input);
                    match result {
                        Some(r) if s.is_success() => self.preempt(&fwk, &pod, r),
                        _ => {
                            if !s.message().is_empty() {
                                fit.post_filter_msg = Some(s.message());
                            }
                        }
                    }
                }
                self.metrics
                    .attempt(&fwk.profile_name, "unschedulable", start.elapsed());
                self.fail(&pod, &fit.message(), "Unschedulable");
                self.queue.requeue(&pod.key, fit.plugins, cycle, false);
            }
            Outcome::Error(msg) => {
                self.metrics
                    .attempt(&fwk.profile_name, "error", start.elapsed());
                self.fail(&pod, &msg, "SchedulerError");
                self.queue.requeue(&pod.key, HashSet::new(), cycle, true);
            }
        }
        true
    }

    fn refresh_snapshot(&self, snapshot: &mut Snapshot) {
        self.cache.update_snapshot(snapshot);
        snapshot.nominated = self.queue.nominated();
        snapshot.namespaces = self.objects.namespaces.lock().clone();
        snapshot.volumes = self.objects.volumes.lock().clone();
        snapshot.pdbs = self.objects.pdbs.lock().clone();
        snapshot.owner_selectors = self.objects.owner_selectors.lock().clone();
    }

    /// The scheduling algorithm (upstream `schedulePod`), without side effects.
    pub fn schedule_pod(
        &self,
        fwk: &Framework,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> Outcome {
        let n = snap.nodes.len();
        if n == 0 {
            return Outcome::Error("no nodes available to schedule pods".into());
        }
        let (pre, s) = fwk.run_pre_filter(state, pod, snap);
        if !s.is_success() {
            if s.code == Code::Error {
                return Outcome::Error(s.message());
            }
            let statuses = snap
                .nodes
                .iter()
                .map(|node| (node.name.clone(), s.clone()))
                .collect();
            return Outcome::Unschedulable(FitError {
                num_all_nodes: n,
                statuses,
                pre_filter_msg: Some(s.message()),
                post_filter_msg: None,
                plugins: [s.plugin].into(),
            });
        }
        let mut statuses: HashMap<String, Status> = HashMap::new();
        let mut feasible: Vec<Arc<NodeInfo>> = Vec::new();
        // A pod nominated by an earlier preemption tries its node first.
        if let Some(nom) = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
        {
            if let Some(node) = snap.get(nom) {
                if fwk
                    .run_filter_with_nominated(state, pod, node, snap)
                    .is_success()
                {
                    feasible.push(node.clone());
                }
            }
        }
        if feasible.is_empty() {
            let candidates: Vec<&Arc<NodeInfo>> =
                match pre.as_ref().and_then(|p| p.node_names.as_ref()) {
                    Some(names) => names.iter().filter_map(|name| snap.get(name)).collect(),
                    None => snap.nodes.iter().collect(),
                };
            let total = candidates.len();
            if total > 0 {
                let pct = fwk
                    .percentage_of_nodes_to_score
                    .unwrap_or(self.config.percentage_of_nodes_to_score);
                let want = num_feasible_nodes_to_find(pct, total);
                let offset = self.next_start.load(Ordering::Relaxed) % total;
                // Filter in blocks of nodes, in the rotation's order, on the framework's threads;
                // walking the blocks in order below gives the sequential loop's exact outcome.
                let node_at = |i: usize| candidates[(offset + i) % total];
                let found = AtomicUsize::new(0);
                let failed = AtomicBool::new(false);
                let state: &CycleState = state;
                let blocks = fwk.parallelizer.prefix(
                    total.div_ceil(FILTER_BLOCK),
                    |b| {
                        let nodes = b * FILTER_BLOCK..((b + 1) * FILTER_BLOCK).min(total);
                        let verdicts: Vec<Status> = nodes
                            .map(|i| fwk.run_filter_with_nominated(state, pod, node_at(i), snap))
                            .collect();
                        let fits = verdicts.iter().filter(|s| s.is_success()).count();
                        found.fetch_add(fits, Ordering::Relaxed);
                        if verdicts.iter().any(|s| s.code == Code::Error) {
                            failed.store(true, Ordering::Relaxed);
                        }
                        verdicts
                    },
                    || found.load(Ordering::Relaxed) >= want || failed.load(Ordering::Relaxed),
                );
                let mut processed = 0;
                for (i, s) in blocks.into_iter().flatten().enumerate() {
                    let node = node_at(i);
                    processed += 1;
                    if s.is_success() {
                        feasible.push(node.clone());
                        if feasible.len() >= want {
                            break;
                        }
                    } else if s.code == Code::Error {
                        return Outcome::Error(s.message());
                    } else {
                        statuses.insert(node.name.clone(), s);
                    }
                }
                self.next_start
                    .store((offset + processed) % total, Ordering::Relaxed);
            }
            if let Some(names) = pre.as_ref().and_then(|p| p.node_names.as_ref()) {
                // Nodes PreFilter excluded count as rejected by it.
                for node in &snap.nodes {
                    if !names.contains(&node.name) {
                        statuses.insert(
                            node.name.clone(),
                            Status::unresolvable("node(s) didn't satisfy plugin(s) [NodeAffinity]"),
                        );
                    }
                }
            }
        }
        if feasible.is_empty() {
            let plugins = statuses.values().map(|s| s.plugin).collect();
            return Outcome::Unschedulable(FitError {
                num_all_nodes: n,
                statuses,
                pre_filter_msg: None,
                post_filter_msg: None,
                plugins,
            });
        }
        let evaluated = feasible.len() + statuses.len();
        if feasible.len() == 1 {
            return Outcome::Scheduled {
                node: feasible[0].name.clone(),
                evaluated,
                feasible: 1,
            };
        }
        let s = fwk.run_pre_score(state, pod, &feasible, snap);
        if !s.is_success() {
            return Outcome::Error(s.message());
        }
        let totals = match fwk.run_score(state, pod, &feasible) {
            Ok(t) => t,
            Err(s) => return Outcome::Error(s.message()),
        };
        Outcome::Scheduled {
            node: select_host(&feasible, &totals),
            evaluated,
            feasible: feasible.len(),
        }
    }

    fn assume_and_bind(
        self: &Arc<Self>,
        fwk: Arc<Framework>,
        mut state: CycleState,
        qp: QueuedPod,
        cycle: u64,
        node: String,
        start: Instant,
    ) {
        let pod = qp.info.clone();
        // The assumed pod carries the node, as upstream's assumed copy does.
        let mut assumed = (*pod.pod).clone();
        assumed.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
        let assumed_info = Arc::new(PodInfo::new(Arc::new(assumed)));
        self.cache.assume(assumed_info, &node);
        let s = fwk.run_reserve(&mut state, &pod, &node);
        if !s.is_success() {
            fwk.run_unreserve(&mut state, &pod, &node);
            self.cache.forget(&pod.key);
            self.metrics
                .attempt(&fwk.profile_name, "error", start.elapsed());
            self.fail(&pod, &s.message(), "SchedulerError");
            self.queue.requeue(&pod.key, HashSet::new(), cycle, true);
            return;
        }
        let permit = fwk.run_permit(&state, &pod, &node);
        if let PermitVerdict::Reject(s) = &permit {
            fwk.run_unreserve(&mut state, &pod, &node);
            self.cache.forget(&pod.key);
            self.metrics
                .attempt(&fwk.profile_name, "unschedulable", start.elapsed());
            self.fail(&pod, &s.message(), "Unschedulable");
            self.queue
                .requeue(&pod.key, [s.plugin].into(), cycle, false);
            return;
        }
        self.queue.done(&pod.key);
        self.queue.remove_nominated(&pod.key);
        self.metrics
            .attempt(&fwk.profile_name, "scheduled", start.elapsed());
        let me = self.clone();
        self.rt.spawn(async move {
            let _slot = me.bind_slots.clone().acquire_owned().await;
            if let PermitVerdict::Wait(d) = permit {
                // No in-tree plugin waits; a waiting pod is allowed when the time is up.
                tokio::time::sleep(d).await;
            }
            let mut s = fwk.run_pre_bind(&pod, &node).await;
            if s.is_success() {
                s = fwk.run_bind(&pod, &node).await;
            }
            if s.is_success() {
                fwk.run_post_bind(&pod, &node).await;
                me.bound.fetch_add(1, Ordering::Relaxed);
                if let Some(first) = qp.first_attempt {
                    me.metrics.scheduled(qp.attempts, first.elapsed());
                }
                me.recorder.normal(
                    pod.pod.as_ref(),
                    "Scheduled",
                    format!(
                        "Successfully assigned {}/{} to {node}",
                        pod.namespace, pod.name
                    ),
                );
                return;
            }
            // Binding failed: forget the assumed pod and retry after a backoff.
            me.cache.forget(&pod.key);
            let mut state = state;
            fwk.run_unreserve(&mut state, &pod, &node);
            me.recorder.warning(
                pod.pod.as_ref(),
                "FailedScheduling",
                format!("Binding rejected: {}", s.message()),
            );
            if !s.message().contains("NotFound") && !s.message().contains("not found") {
                me.queue.add_after_error(pod, qp.attempts);
            }
        });
    }

    /// Records a failed attempt: the FailedScheduling event and PodScheduled=False.
    fn fail(&self, pod: &Arc<PodInfo>, msg: &str, reason: &str) {
        self.recorder
            .warning(pod.pod.as_ref(), "FailedScheduling", msg.to_string());
        let Some(client) = self.client.clone() else {
            return;
        };
        let current = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(msg)
        }) {
            return;
        }
        let patch = serde_json::json!({
            "status": {"conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": msg,
                "lastProbeTime": null,
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            }]}
        });
        let (ns, name) = (pod.namespace.clone(), pod.name.clone());
        self.rt.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, &ns);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                tracing::debug!("updating the PodScheduled condition of {ns}/{name}: {e}");
            }
        });
    }

    /// Carries out a preemption: nominate the node, clear lower-priority nominations there,
    /// mark and delete the victims.
    fn preempt(&self, fwk: &Framework, pod: &Arc<PodInfo>, r: PostFilterResult) {
        let _ = fwk;
        self.queue.add_nominated(pod.clone(), &r.nominated_node);
        let lower: Vec<Arc<PodInfo>> = self
            .queue
            .nominated()
            .get(&r.nominated_node)
            .into_iter()
            .flatten()
            .filter(|p| p.priority < pod.priority)
            .cloned()
            .collect();
        for p in &lower {
            self.queue.remove_nominated(&p.key);
        }
        for v in &r.victims {
            self.recorder.normal(
                v.pod.as_ref(),
                "Preempted",
                format!("Preempted by pod {} on node {}", pod.uid, r.nominated_node),
            );
        }
        let Some(client) = self.client.clone() else {
            return;
        };
        let (ns, name, node, uid) = (
            pod.namespace.clone(),
            pod.name.clone(),
            r.nominated_node.clone(),
            pod.uid.clone(),
        );
        let victims = r.victims;
        self.rt.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let nominate = serde_json::json!({"status": {"nominatedNodeName": node}});
            if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(nominate)).await {
                tracing::warn!("nominating {node} for {ns}/{name}: {e}");
            }
            for p in lower {
                let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
                let clear = serde_json::json!({"status": {"nominatedNodeName": null}});
                let _ = api.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(clear)).await;
            }
            for v in victims {
                let api: Api<Pod> = Api::namespaced(client.clone(), &v.namespace);
                let target = serde_json::json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": format!("{}: preempting to accommodate a higher priority pod", crate::config::DEFAULT_SCHEDULER_NAME),
                    "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                }]}});
                let _ = api.patch_status(&v.name, &PatchParams::default(), &Patch::Strategic(target)).await;
                let dp = DeleteParams {
                    preconditions: Some(kube::api::Preconditions { uid: Some(v.uid.clone()), resource_version: None }),
                    ..Default::default()
                };
                if let Err(e) = api.delete(&v.name, &dp).await {
                    tracing::warn!("deleting preemption victim {}/{} for {uid}: {e}", v.namespace, v.name);
                }
            }
        });
    }
}

/// The highest total score; ties broken uniformly at random (upstream `selectHost`).
pub fn select_host(nodes: &[Arc<NodeInfo>], totals: &[i64]) -> String {
    let mut best = 0;
    let mut ties = 1u32;
    for i in 1..nodes.len() {
        if totals[i] > totals[best] {
            best = i;
            ties = 1;
        } else if totals[i] == totals[best] {
            ties += 1;
            if rand::random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best].name.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod_req, snapshot, tainted};
    use k8s_openapi::api::core::v1::Taint;

    fn scheduler(parallelism: usize) -> Arc<Scheduler> {
        let config = Config {
            parallelism,
            ..Config::default()
        };
        Scheduler::new(config, &test_registry(), None, EventRecorder::discard())
            .expect("a scheduler")
    }

    /// No API server here: a binder that is never called stands in for DefaultBinder.
    fn test_registry() -> Registry {
        let mut registry = crate::plugins::registry();
        registry.get_mut("DefaultBinder").unwrap().factory =
            Arc::new(|_, _| Ok(Arc::new(crate::plugins::NodeName) as Arc<dyn Plugin>));
        registry
    }

    /// 1,000 nodes of different sizes, every third one tainted.
    fn cluster() -> Snapshot {
        let nodes = (0..1000)
            .map(|i| {
                let n = node(
                    &format!("node-{i:04}"),
                    1000 + (i * 37 % 4000),
                    (1 + i % 7) << 30,
                );
                if i % 3 == 0 {
                    tainted(
                        n,
                        vec![Taint {
                            key: "dedicated".into(),
                            effect: "NoSchedule".into(),
                            ..Default::default()
                        }],
                    )
                } else {
                    n
                }
            })
            .collect();
        snapshot(nodes, vec![])
    }

    /// Filter and Score on two threads give what one thread gives: the same nodes evaluated and
    /// found feasible, the same rotation, the same totals, the same rejections.
    #[test]
    fn parallel_filter_and_score_match_the_sequential_loop() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _in_rt = rt.enter();
        let snap = cluster();
        let fits = PodInfo::new(Arc::new(pod_req("fits", &[(500, 1 << 20)])));
        let too_big = PodInfo::new(Arc::new(pod_req("too-big", &[(100_000, 1 << 20)])));
        let mut seen = Vec::new();
        for parallelism in [1, 2] {
            let sched = scheduler(parallelism);
            // Filter and Score of these pods are cheap, so the shared Parallelizer would keep
            // them on one thread: an eager one makes the second run take the parallel path.
            let mut fwk = Framework::new(
                &sched.config.profiles[0],
                &test_registry(),
                &Handle {
                    client: None,
                    parallelism,
                },
            )
            .expect("a framework");
            fwk.parallelizer = Arc::new(crate::parallelize::Parallelizer::eager(parallelism));
            let mut placements = Vec::new();
            for _ in 0..3 {
                let mut state = CycleState::default();
                match sched.schedule_pod(&fwk, &mut state, &fits, &snap) {
                    Outcome::Scheduled {
                        evaluated,
                        feasible,
                        ..
                    } => placements.push((
                        evaluated,
                        feasible,
                        sched.next_start.load(Ordering::Relaxed),
                    )),
                    _ => panic!("the pod fits somewhere"),
                }
            }
            let mut state = CycleState::default();
            let _ = fwk.run_pre_filter(&mut state, &fits, &snap);
            let _ = fwk.run_pre_score(&mut state, &fits, &snap.nodes, &snap);
            let totals = fwk.run_score(&state, &fits, &snap.nodes).expect("scores");
            let mut state = CycleState::default();
            let rejected = match sched.schedule_pod(&fwk, &mut state, &too_big, &snap) {
                Outcome::Unschedulable(fit) => {
                    let mut s: Vec<(String, Status)> = fit.statuses.clone().into_iter().collect();
                    s.sort_by(|a, b| a.0.cmp(&b.0));
                    (s, fit.message())
                }
                _ => panic!("the pod fits nowhere"),
            };
            assert_eq!(rejected.0.len(), 1000);
            seen.push((fwk.parallelizer.threads(), placements, totals, rejected));
        }
        let (one, two) = (&seen[0], &seen[1]);
        assert_eq!(one.0, 1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            two.0,
            cores.min(2),
            "two threads where the machine has them"
        );
        assert_eq!(one.1, two.1, "evaluated, feasible, next start");
        // 42 % of 1,000 nodes to find (adaptive), two of every three fit.
        assert_eq!(one.1[0].1, 420);
        assert_eq!(one.2, two.2, "score totals");
        assert_eq!(one.3, two.3, "rejections");
    }
}
