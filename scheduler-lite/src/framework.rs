//! The scheduling framework (upstream `pkg/scheduler/framework` and `framework/runtime`): one
//! trait per extension point, a plugin declaring which points it implements, the per-cycle
//! `CycleState`, the `Status` codes, and `Framework` — one profile's plugins instantiated from
//! the registry in the configured order, running each extension point as upstream's
//! `frameworkImpl` does (Filter stops at the first failing plugin; scores are normalised then
//! weighted).

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

/// The highest score a Score plugin may give, after NormalizeScore.
pub const MAX_NODE_SCORE: i64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    Error,
    /// The node does not fit now; preemption may help.
    Unschedulable,
    /// The node does not fit and preemption cannot help.
    UnschedulableAndUnresolvable,
    Wait,
    Skip,
    Pending,
}

/// A plugin's verdict (upstream `framework.Status`).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn new(code: Code, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }
    pub fn error(reason: impl Into<String>) -> Status {
        Status::new(Code::Error, reason)
    }
    pub const fn skip() -> Status {
        Status {
            code: Code::Skip,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable | Code::Pending
        )
    }
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// Data a plugin keeps in the cycle state; cloned when preemption simulates removals.
pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-cycle plugin data (upstream `CycleState`), keyed by plugin.
#[derive(Default)]
pub struct CycleState {
    /// Fx, not SipHash: plugins read their state once per node.
    data: FxHashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter/PreScore returned Skip: their Filter/Score are not run.
    pub skip_filter: BTreeSet<&'static str>,
    pub skip_score: BTreeSet<&'static str>,
    /// `skip_filter` as bits by position in the framework's Filter list (set at the end of
    /// PreFilter): Filter runs per node, and a name lookup per plugin and node showed in profiles.
    skip_filter_mask: u64,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            skip_filter_mask: self.skip_filter_mask,
        }
    }
}

impl CycleState {
    pub fn write<T: StateData>(&mut self, key: &'static str, v: T) {
        self.data.insert(key, Box::new(v));
    }
    pub fn read<T: 'static>(&self, key: &'static str) -> Option<&T> {
        self.data
            .get(key)
            .and_then(|b| (**b).as_any().downcast_ref())
    }
    pub fn read_mut<T: 'static>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data
            .get_mut(key)
            .and_then(|b| (**b).as_any_mut().downcast_mut())
    }
}

/// PreFilter may narrow the nodes to evaluate (`PreFilterResult.NodeNames`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreFilterResult {
    pub node_names: Option<BTreeSet<String>>,
}

/// The cluster events that can make a rejected pod schedulable (upstream `ClusterEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    NodeDelete,
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
    UnscheduledPodUpdate,
    PvcChange,
    PvChange,
    StorageClassChange,
    NamespaceChange,
    PdbChange,
}

/// The base every plugin implements: its name, the extension points it implements (by
/// returning `Some(self)`) and the cluster events that may make a pod it rejected schedulable.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn events(&self) -> &'static [ClusterEvent] {
        &[]
    }
    fn pre_enqueue(&self) -> Option<&dyn PreEnqueuePlugin> {
        None
    }
    fn queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    fn post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    fn pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    fn score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    fn reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    fn permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    fn pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    fn bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
    fn post_bind(&self) -> Option<&dyn PostBindPlugin> {
        None
    }
}

pub trait PreEnqueuePlugin: Send + Sync {
    fn pre_enqueue(&self, pod: &PodInfo) -> Status;
}

pub trait QueueSortPlugin: Send + Sync {
    /// Whether `a` goes before `b` (both: priority, then the time they were queued).
    fn less(&self, a: (&PodInfo, u64), b: (&PodInfo, u64)) -> bool;
}

pub trait PreFilterPlugin: Send + Sync {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Option<PreFilterResult>, Status);
    /// PreFilterExtensions: the state after `added` joins `node` (nominated pods, preemption).
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _added: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
    /// PreFilterExtensions: the state after `removed` leaves `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _removed: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
    }
}

pub trait FilterPlugin: Send + Sync {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// What PostFilter sees of the failed Filter phase.
pub struct PostFilterInput<'a> {
    pub snapshot: &'a Snapshot,
    pub statuses: &'a HashMap<String, Status>,
    pub framework: &'a Framework,
}

/// What PostFilter achieved: the node nominated for the pod (preemption started there).
#[derive(Debug, Clone)]
pub struct PostFilterResult {
    pub nominated_node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

pub trait PostFilterPlugin: Send + Sync {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        input: &PostFilterInput,
    ) -> (Option<PostFilterResult>, Status);
}

pub trait PreScorePlugin: Send + Sync {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status;
}

pub trait ScorePlugin: Send + Sync {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// NormalizeScore (ScoreExtensions); `None` when the plugin's scores are already 0–100.
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        None
    }
}

pub trait NormalizeScorePlugin: Send + Sync {
    fn normalize_score(&self, state: &CycleState, pod: &PodInfo, scores: &mut [NodeScore]);
}

pub trait ReservePlugin: Send + Sync {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Permit's answer: allow, reject, or wait (for at most the duration) until allowed.
pub enum PermitVerdict {
    Allow,
    Reject(Status),
    Wait(Duration),
}

pub trait PermitPlugin: Send + Sync {
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> PermitVerdict;
}

#[async_trait::async_trait]
pub trait PreBindPlugin: Send + Sync {
    async fn pre_bind(&self, pod: &PodInfo, node: &str) -> Status;
}

#[async_trait::async_trait]
pub trait BindPlugin: Send + Sync {
    /// Binds; a `Skip` status hands over to the next bind plugin.
    async fn bind(&self, pod: &PodInfo, node: &str) -> Status;
}

#[async_trait::async_trait]
pub trait PostBindPlugin: Send + Sync {
    async fn post_bind(&self, pod: &PodInfo, node: &str);
}

/// A node's score.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeScore {
    pub name: String,
    pub score: i64,
}

/// Upstream `helper.DefaultNormalizeScore`: scales to 0..max by the highest score, reversed when
/// a high raw score is bad.
pub fn default_normalize_score(max: i64, reverse: bool, scores: &mut [NodeScore]) {
    let highest = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| s.score = max);
        }
        return;
    }
    for s in scores.iter_mut() {
        s.score = max * s.score / highest;
        if reverse {
            s.score = max - s.score;
        }
    }
}

/// Nodes per unit of parallel Score work.
const SCORE_BLOCK: usize = 64;

/// Everything a plugin factory may use.
pub struct Handle {
    pub client: Option<kube::Client>,
    pub parallelism: usize,
}

/// A plugin factory: `args` are the plugin's raw pluginConfig args (Null when none).
pub type Factory =
    Arc<dyn Fn(&serde_json::Value, &Handle) -> Result<Arc<dyn Plugin>, String> + Send + Sync>;

/// A registry entry.
#[derive(Clone)]
pub struct PluginInfo {
    pub factory: Factory,
    /// The extension points (config names) the plugin implements.
    pub points: &'static [&'static str],
    pub validate_args: fn(&serde_json::Value) -> Result<(), (String, String)>,
}

pub type Registry = HashMap<&'static str, PluginInfo>;

/// A plugin of a profile at one extension point.
#[derive(Clone)]
pub struct Enabled {
    pub plugin: Arc<dyn Plugin>,
    pub weight: i64,
}

/// One profile's plugins (upstream `frameworkImpl`).
pub struct Framework {
    pub profile_name: String,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub plugins: HashMap<String, Arc<dyn Plugin>>,
    pub pre_enqueue: Vec<Enabled>,
    pub queue_sort: Enabled,
    pub pre_filter: Vec<Enabled>,
    pub filter: Vec<Enabled>,
    pub post_filter: Vec<Enabled>,
    pub pre_score: Vec<Enabled>,
    pub score: Vec<Enabled>,
    pub reserve: Vec<Enabled>,
    pub permit: Vec<Enabled>,
    pub pre_bind: Vec<Enabled>,
    pub bind: Vec<Enabled>,
    pub post_bind: Vec<Enabled>,
    /// The threads Filter and Score run on.
    pub parallelizer: Arc<crate::parallelize::Parallelizer>,
}

impl Framework {
    /// Instantiates a profile's plugins from `registry`.
    pub fn new(
        profile: &crate::config::Profile,
        registry: &Registry,
        handle: &Handle,
    ) -> Result<Framework, String> {
        let mut plugins: HashMap<String, Arc<dyn Plugin>> = HashMap::new();
        for list in profile.points.values() {
            for (name, _) in list {
                if plugins.contains_key(name) {
                    continue;
                }
                let info = registry
                    .get(name.as_str())
                    .ok_or_else(|| format!("plugin {name:?} does not exist"))?;
                let args = profile
                    .args
                    .get(name)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null);
                let p = (info.factory)(&args, handle)
                    .map_err(|e| format!("initializing plugin {name:?}: {e}"))?;
                plugins.insert(name.clone(), p);
            }
        }
        let list = |point: &str| -> Vec<Enabled> {
            profile.points[point]
                .iter()
                .map(|(n, w)| Enabled {
                    plugin: plugins[n].clone(),
                    weight: *w as i64,
                })
                .collect()
        };
        let queue_sort = list("queueSort")
            .into_iter()
            .next()
            .ok_or("no queue sort plugin")?;
        Ok(Framework {
            profile_name: profile.scheduler_name.clone(),
            percentage_of_nodes_to_score: profile.percentage_of_nodes_to_score,
            pre_enqueue: list("preEnqueue"),
            queue_sort,
            pre_filter: list("preFilter"),
            filter: list("filter"),
            post_filter: list("postFilter"),
            pre_score: list("preScore"),
            score: list("score"),
            reserve: list("reserve"),
            permit: list("permit"),
            pre_bind: list("preBind"),
            bind: list("bind"),
            post_bind: list("postBind"),
            plugins,
            parallelizer: crate::parallelize::Parallelizer::shared(handle.parallelism),
        })
    }

    pub fn run_pre_enqueue(&self, pod: &PodInfo) -> Status {
        for e in &self.pre_enqueue {
            if let Some(p) = e.plugin.pre_enqueue() {
                let s = p.pre_enqueue(pod);
                if !s.is_success() {
                    return s.with_plugin(e.plugin.name());
                }
            }
        }
        Status::success()
    }

    /// Runs PreFilter; the result intersects the plugins' node restrictions.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let mut result: Option<PreFilterResult> = None;
        for e in &self.pre_filter {
            let Some(p) = e.plugin.pre_filter() else {
                continue;
            };
            let (r, s) = p.pre_filter(state, pod, snapshot);
            if s.is_skip() {
                state.skip_filter.insert(e.plugin.name());
                continue;
            }
            if !s.is_success() {
                return (None, s.with_plugin(e.plugin.name()));
            }
            if let Some(names) = r.and_then(|r| r.node_names) {
                result = Some(PreFilterResult {
                    node_names: Some(match result.and_then(|r| r.node_names) {
                        Some(prev) => prev.intersection(&names).cloned().collect(),
                        None => names,
                    }),
                });
            }
        }
        state.skip_filter_mask = self
            .filter
            .iter()
            .take(64)
            .enumerate()
            .filter(|(_, e)| state.skip_filter.contains(e.plugin.name()))
            .fold(0, |mask, (i, _)| mask | 1 << i);
        (result, Status::success())
    }

    /// PreFilter extensions: `added` joins `node` in the simulation.
    pub fn run_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for e in &self.pre_filter {
            if state.skip_filter.contains(e.plugin.name()) {
                continue;
            }
            if let Some(p) = e.plugin.pre_filter() {
                p.add_pod(state, pod, added, node, snapshot);
            }
        }
    }

    /// PreFilter extensions: `removed` leaves `node` in the simulation.
    pub fn run_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) {
        for e in &self.pre_filter {
            if state.skip_filter.contains(e.plugin.name()) {
                continue;
            }
            if let Some(p) = e.plugin.pre_filter() {
                p.remove_pod(state, pod, removed, node, snapshot);
            }
        }
    }

    /// Runs the Filter plugins in order; the first rejection wins.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (i, e) in self.filter.iter().enumerate() {
            let name = e.plugin.name();
            let skipped = if i < 64 {
                state.skip_filter_mask & 1 << i != 0
            } else {
                state.skip_filter.contains(name)
            };
            if skipped {
                continue;
            }
            if let Some(p) = e.plugin.filter() {
                let s = p.filter(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(name);
                }
            }
        }
        Status::success()
    }

    /// Filter with the pods nominated to the node (of at least the pod's priority) counted, as
    /// upstream's `RunFilterPluginsWithNominatedPods`: the node must fit with them, and without
    /// them (pod affinity may only hold with them present).
    pub fn run_filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        if snapshot.nominated.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let nominated: Vec<&Arc<PodInfo>> = snapshot
            .nominated
            .get(&node.name)
            .into_iter()
            .flatten()
            .filter(|p| p.priority >= pod.priority && p.uid != pod.uid)
            .collect();
        if nominated.is_empty() {
            return self.run_filter(state, pod, node);
        }
        let mut state2 = state.clone();
        let mut info = node.clone();
        for p in nominated {
            info.add_pod(p.clone());
            self.run_add_pod(&mut state2, pod, p, &info, snapshot);
        }
        let s = self.run_filter(&state2, pod, &info);
        if !s.is_success() {
            return s;
        }
        self.run_filter(state, pod, node)
    }

    pub fn run_post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        input: &PostFilterInput,
    ) -> (Option<PostFilterResult>, Status) {
        let mut last = Status::unschedulable("no PostFilter plugin");
        for e in &self.post_filter {
            if let Some(p) = e.plugin.post_filter() {
                let (r, s) = p.post_filter(state, pod, input);
                if s.is_success() {
                    return (r, s);
                }
                if !s.is_rejected() {
                    return (None, s.with_plugin(e.plugin.name()));
                }
                last = s.with_plugin(e.plugin.name());
            }
        }
        (None, last)
    }

    pub fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        for e in &self.pre_score {
            if let Some(p) = e.plugin.pre_score() {
                let s = p.pre_score(state, pod, nodes, snapshot);
                if s.is_skip() {
                    state.skip_score.insert(e.plugin.name());
                    continue;
                }
                if !s.is_success() {
                    return s.with_plugin(e.plugin.name());
                }
            }
        }
        Status::success()
    }

    /// Score, NormalizeScore and weights: the total per node, in `nodes`' order. The raw scores
    /// are computed in blocks of nodes on the framework's threads; an error is the one the
    /// plugin-by-plugin, node-by-node loop would meet first.
    pub fn run_score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<Vec<i64>, Status> {
        let active: Vec<(&Enabled, &dyn ScorePlugin)> = self
            .score
            .iter()
            .filter(|e| !state.skip_score.contains(e.plugin.name()))
            .filter_map(|e| e.plugin.score().map(|p| (e, p)))
            .collect();
        let mut totals = vec![0i64; nodes.len()];
        if active.is_empty() {
            return Ok(totals);
        }
        // Per block, node-major: block[(n - first) * active.len() + k] is plugin k on node n.
        let raw: Vec<Result<i64, Status>> = self
            .parallelizer
            .prefix(
                nodes.len().div_ceil(SCORE_BLOCK),
                |b| {
                    let range = b * SCORE_BLOCK..((b + 1) * SCORE_BLOCK).min(nodes.len());
                    range
                        .flat_map(|n| {
                            active
                                .iter()
                                .map(move |(_, p)| p.score(state, pod, &nodes[n]))
                        })
                        .collect::<Vec<_>>()
                },
                || false,
            )
            .into_iter()
            .flatten()
            .collect();
        let mut scores: Vec<NodeScore> = Vec::with_capacity(nodes.len());
        for (k, (e, p)) in active.iter().enumerate() {
            let name = e.plugin.name();
            scores.clear();
            for n in 0..nodes.len() {
                match &raw[n * active.len() + k] {
                    Ok(s) => scores.push(NodeScore {
                        name: String::new(),
                        score: *s,
                    }),
                    Err(s) => return Err(s.clone().with_plugin(name)),
                }
            }
            if let Some(norm) = p.normalize() {
                if norm_needs_names(name) {
                    for (s, n) in scores.iter_mut().zip(nodes) {
                        s.name.clone_from(&n.name);
                    }
                }
                norm.normalize_score(state, pod, &mut scores);
            }
            for (i, s) in scores.iter().enumerate() {
                if s.score < 0 || s.score > MAX_NODE_SCORE {
                    return Err(Status::error(format!(
                        "plugin {name:?} returns an invalid score {}, it should in the range of [0, 100] after normalizing",
                        s.score
                    )));
                }
                totals[i] += s.score * e.weight;
            }
        }
        Ok(totals)
    }

    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for e in &self.reserve {
            if let Some(p) = e.plugin.reserve() {
                let s = p.reserve(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(e.plugin.name());
                }
            }
        }
        Status::success()
    }

    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for e in self.reserve.iter().rev() {
            if let Some(p) = e.plugin.reserve() {
                p.unreserve(state, pod, node);
            }
        }
    }

    /// Permit: the longest wait asked for, or the first rejection.
    pub fn run_permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> PermitVerdict {
        let mut wait: Option<Duration> = None;
        for e in &self.permit {
            if let Some(p) = e.plugin.permit() {
                match p.permit(state, pod, node) {
                    PermitVerdict::Allow => {}
                    PermitVerdict::Reject(s) => {
                        return PermitVerdict::Reject(s.with_plugin(e.plugin.name()))
                    }
                    PermitVerdict::Wait(d) => wait = Some(wait.map_or(d, |w| w.max(d))),
                }
            }
        }
        match wait {
            Some(d) => PermitVerdict::Wait(d),
            None => PermitVerdict::Allow,
        }
    }

    pub async fn run_pre_bind(&self, pod: &PodInfo, node: &str) -> Status {
        for e in &self.pre_bind {
            if let Some(p) = e.plugin.pre_bind() {
                let s = p.pre_bind(pod, node).await;
                if !s.is_success() {
                    return s.with_plugin(e.plugin.name());
                }
            }
        }
        Status::success()
    }

    pub async fn run_bind(&self, pod: &PodInfo, node: &str) -> Status {
        for e in &self.bind {
            if let Some(p) = e.plugin.bind() {
                let s = p.bind(pod, node).await;
                if s.is_skip() {
                    continue;
                }
                return s.with_plugin(e.plugin.name());
            }
        }
        Status::error("no bind plugin bound the pod")
    }

    pub async fn run_post_bind(&self, pod: &PodInfo, node: &str) {
        for e in &self.post_bind {
            if let Some(p) = e.plugin.post_bind() {
                p.post_bind(pod, node).await;
            }
        }
    }

    /// The cluster events any of `plugins` registered (the unschedulable pod's failed plugins).
    pub fn events_of(&self, plugin: &str) -> &'static [ClusterEvent] {
        self.plugins.get(plugin).map(|p| p.events()).unwrap_or(&[])
    }
}

/// Only PodTopologySpread's normalisation looks at node names (its ignored nodes).
fn norm_needs_names(plugin: &str) -> bool {
    plugin == crate::plugins::podtopologyspread::NAME
}
