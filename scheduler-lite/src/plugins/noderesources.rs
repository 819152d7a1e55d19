//! NodeResourcesFit (Filter: the pod's requests fit in allocatable minus what the node's pods
//! request; Score: LeastAllocated, MostAllocated or RequestedToCapacityRatio over the configured
//! resources) and NodeResourcesBalancedAllocation (Score: 1 − the standard deviation of the
//! requested fractions). Integer arithmetic as upstream, so scores are identical.

use std::sync::Arc;

use crate::config::{
    decode_args, NodeResourcesBalancedAllocationArgs, NodeResourcesFitArgs, ResourceSpec,
    UtilizationShapePoint,
};
use crate::framework::*;
use crate::nodeinfo::{NodeInfo, PodInfo, Resource, Snapshot};

pub const FIT: &str = "NodeResourcesFit";
pub const BALANCED: &str = "NodeResourcesBalancedAllocation";

fn validate_fit(v: &serde_json::Value) -> Result<(), (String, String)> {
    let a: NodeResourcesFitArgs = decode_args(v)?;
    Strategy::from_args(&a).map(|_| ())
}

pub fn register(r: &mut Registry) {
    r.insert(
        FIT,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: NodeResourcesFitArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(Fit::new(&a).map_err(|e| e.1)?) as Arc<dyn Plugin>)
            }),
            points: &["preFilter", "filter", "preScore", "score"],
            validate_args: validate_fit,
        },
    );
    r.insert(
        BALANCED,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: NodeResourcesBalancedAllocationArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(BalancedAllocation::new(&a)) as Arc<dyn Plugin>)
            }),
            points: &["preScore", "score"],
            validate_args: |v| decode_args::<NodeResourcesBalancedAllocationArgs>(v).map(|_| ()),
        },
    );
}

fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: "cpu".into(),
            weight: 1,
        },
        ResourceSpec {
            name: "memory".into(),
            weight: 1,
        },
    ]
}

/// The scoring strategy (`scoringStrategy.type`).
#[derive(Debug, Clone)]
pub enum Strategy {
    LeastAllocated(Vec<ResourceSpec>),
    MostAllocated(Vec<ResourceSpec>),
    RequestedToCapacityRatio(Vec<ResourceSpec>, Vec<UtilizationShapePoint>),
}

impl Strategy {
    fn from_args(a: &NodeResourcesFitArgs) -> Result<Strategy, (String, String)> {
        let s = a.scoring_strategy.clone().unwrap_or_default();
        let mut resources = if s.resources.is_empty() {
            default_resources()
        } else {
            s.resources.clone()
        };
        for (i, r) in resources.iter_mut().enumerate() {
            if r.weight == 0 {
                r.weight = 1;
            }
            if !(1..=100).contains(&r.weight) {
                return Err((
                    format!("scoringStrategy.resources[{i}].weight"),
                    format!("{} is not in range [1, 100]", r.weight),
                ));
            }
        }
        match s.type_.as_deref().unwrap_or("LeastAllocated") {
            "LeastAllocated" => Ok(Strategy::LeastAllocated(resources)),
            "MostAllocated" => Ok(Strategy::MostAllocated(resources)),
            "RequestedToCapacityRatio" => {
                let shape = s
                    .requested_to_capacity_ratio
                    .map(|r| r.shape)
                    .unwrap_or_default();
                if shape.is_empty() {
                    return Err((
                        "scoringStrategy.requestedToCapacityRatio.shape".into(),
                        "at least one point must be specified".into(),
                    ));
                }
                for (i, p) in shape.iter().enumerate() {
                    if !(0..=100).contains(&p.utilization) || !(0..=10).contains(&p.score) {
                        return Err((
                            format!("scoringStrategy.requestedToCapacityRatio.shape[{i}]"),
                            "utilization must be in [0, 100] and score in [0, 10]".into(),
                        ));
                    }
                    if i > 0 && shape[i - 1].utilization >= p.utilization {
                        return Err((
                            format!("scoringStrategy.requestedToCapacityRatio.shape[{i}].utilization"),
                            "utilization values must be sorted in increasing order".into(),
                        ));
                    }
                }
                Ok(Strategy::RequestedToCapacityRatio(resources, shape))
            }
            other => Err((
                "scoringStrategy.type".into(),
                format!("Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\", \"RequestedToCapacityRatio\""),
            )),
        }
    }

    fn resources(&self) -> &[ResourceSpec] {
        match self {
            Strategy::LeastAllocated(r) | Strategy::MostAllocated(r) => r,
            Strategy::RequestedToCapacityRatio(r, _) => r,
        }
    }
}

pub struct Fit {
    ignored: Vec<String>,
    ignored_groups: Vec<String>,
    strategy: Strategy,
}

impl Fit {
    pub fn new(a: &NodeResourcesFitArgs) -> Result<Fit, (String, String)> {
        Ok(Fit {
            ignored: a.ignored_resources.clone(),
            ignored_groups: a.ignored_resource_groups.clone(),
            strategy: Strategy::from_args(a)?,
        })
    }
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        FIT
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::UnscheduledPodUpdate,
        ]
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        _: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        // The requests are precomputed in PodInfo.
        (None, Status::success())
    }
}

/// One resource the node lacks (upstream `InsufficientResource`).
#[derive(Debug, Clone, PartialEq)]
pub struct Insufficient {
    pub resource: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
}

/// Upstream `fitsRequest`: every resource the node lacks for `pod`.
pub fn fits_request(
    req: &Resource,
    node: &NodeInfo,
    ignored: &[String],
    ignored_groups: &[String],
) -> Vec<Insufficient> {
    let mut out = Vec::new();
    let allowed = node.allocatable.allowed_pod_number;
    if node.pods.len() as i64 + 1 > allowed {
        out.push(Insufficient {
            resource: "pods".into(),
            reason: "Too many pods".into(),
            requested: 1,
            used: node.pods.len() as i64,
            capacity: allowed,
        });
    }
    if req.is_zero() {
        return out;
    }
    let alloc = &node.allocatable;
    let used = &node.requested;
    let mut check = |name: &str, want: i64, cap: i64, used: i64| {
        if want > 0 && want > cap - used {
            out.push(Insufficient {
                resource: name.into(),
                reason: format!("Insufficient {name}"),
                requested: want,
                used,
                capacity: cap,
            });
        }
    };
    check("cpu", req.milli_cpu, alloc.milli_cpu, used.milli_cpu);
    check("memory", req.memory, alloc.memory, used.memory);
    check(
        "ephemeral-storage",
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    );
    for (name, want) in &req.scalar {
        if ignored.iter().any(|i| i == name) {
            continue;
        }
        if let Some((group, _)) = name.split_once('/') {
            if ignored_groups.iter().any(|g| g == group) {
                continue;
            }
        }
        check(name, *want, alloc.scalar(name), used.scalar(name));
    }
    out
}

impl FilterPlugin for Fit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let bad = fits_request(&pod.requests, node, &self.ignored, &self.ignored_groups);
        if bad.is_empty() {
            return Status::success();
        }
        Status {
            code: Code::Unschedulable,
            reasons: bad.into_iter().map(|b| b.reason).collect(),
            plugin: "",
        }
    }
}

/// The pod's request per scored resource (non-zero defaults for cpu/memory when `non_zero`).
#[derive(Clone)]
struct PodRequests(Vec<i64>);

fn pod_request(pod: &PodInfo, name: &str, non_zero: bool) -> i64 {
    if non_zero {
        pod.non_zero.get(name)
    } else {
        pod.requests.get(name)
    }
}

/// Upstream `calculateResourceAllocatableRequest`: (allocatable, requested including the pod);
/// (0, 0) for an extended resource the pod does not request, so that it is not scored.
fn allocatable_requested(node: &NodeInfo, name: &str, pod_req: i64, non_zero: bool) -> (i64, i64) {
    let is_cpu_mem = name == "cpu" || name == "memory";
    if !is_cpu_mem && pod_req == 0 {
        return (0, 0);
    }
    let used = if non_zero && is_cpu_mem {
        node.non_zero_requested.get(name)
    } else {
        node.requested.get(name)
    };
    (node.allocatable.get(name), used + pod_req)
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// The piecewise-linear shape, scores scaled from 0–10 to 0–100.
fn broken_linear(shape: &[UtilizationShapePoint], p: i64) -> i64 {
    let pts: Vec<(i64, i64)> = shape
        .iter()
        .map(|s| (s.utilization as i64, s.score as i64 * (MAX_NODE_SCORE / 10)))
        .collect();
    for i in 0..pts.len() {
        if p <= pts[i].0 {
            if i == 0 {
                return pts[0].1;
            }
            return pts[i - 1].1
                + (pts[i].1 - pts[i - 1].1) * (p - pts[i - 1].0) / (pts[i].0 - pts[i - 1].0);
        }
    }
    pts[pts.len() - 1].1
}

/// Scores `node` for `pod` with `strategy` (upstream `resourceAllocationScorer.score`).
pub fn strategy_score(strategy: &Strategy, pod: &PodInfo, node: &NodeInfo) -> i64 {
    let resources = strategy.resources();
    let mut total = 0i64;
    let mut weight_sum = 0i64;
    for r in resources {
        let (alloc, req) =
            allocatable_requested(node, &r.name, pod_request(pod, &r.name, true), true);
        if alloc == 0 {
            continue;
        }
        let s = match strategy {
            Strategy::LeastAllocated(_) => least_requested(req, alloc),
            Strategy::MostAllocated(_) => most_requested(req, alloc),
            Strategy::RequestedToCapacityRatio(_, shape) => {
                if req > alloc {
                    broken_linear(shape, 100)
                } else {
                    broken_linear(shape, req * 100 / alloc)
                }
            }
        };
        total += s * r.weight;
        weight_sum += r.weight;
    }
    if weight_sum == 0 {
        return 0;
    }
    match strategy {
        Strategy::RequestedToCapacityRatio(..) => (total as f64 / weight_sum as f64).round() as i64,
        _ => total / weight_sum,
    }
}

impl PreScorePlugin for Fit {
    fn pre_score(
        &self,
        _: &mut CycleState,
        _: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

impl ScorePlugin for Fit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(strategy_score(&self.strategy, pod, node))
    }
}

pub struct BalancedAllocation {
    resources: Vec<ResourceSpec>,
}

impl BalancedAllocation {
    pub fn new(a: &NodeResourcesBalancedAllocationArgs) -> Self {
        BalancedAllocation {
            resources: if a.resources.is_empty() {
                default_resources()
            } else {
                a.resources.clone()
            },
        }
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        BALANCED
    }
    fn pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let reqs: Vec<i64> = self
            .resources
            .iter()
            .map(|r| pod_request(pod, &r.name, false))
            .collect();
        // Best-effort pods do not change the balance: skip.
        if reqs.iter().all(|r| *r == 0) {
            return Status::skip();
        }
        state.write(BALANCED, PodRequests(reqs));
        Status::success()
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let own;
        let reqs = match state.read::<PodRequests>(BALANCED) {
            Some(r) => &r.0,
            None => {
                own = self
                    .resources
                    .iter()
                    .map(|r| pod_request(pod, &r.name, false))
                    .collect::<Vec<_>>();
                &own
            }
        };
        let mut fractions: Vec<f64> = Vec::with_capacity(self.resources.len());
        for (r, req) in self.resources.iter().zip(reqs) {
            let (alloc, requested) = allocatable_requested(node, &r.name, *req, false);
            if alloc == 0 {
                continue;
            }
            fractions.push((requested as f64 / alloc as f64).min(1.0));
        }
        let std = match fractions.len() {
            0 | 1 => 0.0,
            2 => (fractions[0] - fractions[1]).abs() / 2.0,
            n => {
                let mean = fractions.iter().sum::<f64>() / n as f64;
                (fractions
                    .iter()
                    .map(|f| (f - mean) * (f - mean))
                    .sum::<f64>()
                    / n as f64)
                    .sqrt()
            }
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RequestedToCapacityRatioParam, ScoringStrategy};
    use crate::plugins::testing::*;

    fn cpu_only(node: &str) -> k8s_openapi::api::core::v1::Pod {
        on_node(pod_req("cpu-only", &[(1000, 0), (2000, 0)]), node)
    }
    fn cpu_and_memory(node: &str) -> k8s_openapi::api::core::v1::Pod {
        on_node(pod_req("cpu-mem", &[(1000, 2000), (2000, 3000)]), node)
    }

    fn balanced(
        existing: Vec<k8s_openapi::api::core::v1::Pod>,
        p: k8s_openapi::api::core::v1::Pod,
        nodes: Vec<(i64, i64)>,
    ) -> Vec<i64> {
        let infos = nodes
            .iter()
            .enumerate()
            .map(|(i, (c, m))| node_info(node(&format!("node{}", i + 1), *c, *m), vec![]))
            .collect();
        run_scores(
            &BalancedAllocation::new(&Default::default()),
            &existing,
            p,
            infos,
        )
    }

    /// Upstream TestNodeResourcesBalancedAllocation.
    #[test]
    fn balanced_allocation() {
        // "nothing scheduled, nothing requested, skip in PreScore"
        let pi = PodInfo::new(Arc::new(pod("p")));
        let s = PreScorePlugin::pre_score(
            &BalancedAllocation::new(&Default::default()),
            &mut CycleState::default(),
            &pi,
            &[],
            &Snapshot::default(),
        );
        assert!(s.is_skip());
        // "nothing scheduled, resources requested, differently sized nodes"
        let p = pod_req("p", &[(1000, 2000), (2000, 3000)]);
        assert_eq!(
            balanced(vec![], p.clone(), vec![(4000, 10000), (6000, 10000)]),
            [87, 100]
        );
        // "resources requested, pods scheduled with resources"
        let existing = vec![cpu_only("node1"), cpu_and_memory("node2")];
        assert_eq!(
            balanced(
                existing.clone(),
                p.clone(),
                vec![(10000, 20000), (10000, 20000)]
            ),
            [82, 95]
        );
        // "resources requested, pods scheduled with resources, differently sized nodes"
        assert_eq!(
            balanced(
                existing.clone(),
                p.clone(),
                vec![(10000, 20000), (10000, 50000)]
            ),
            [82, 80]
        );
        // "requested resources at node capacity"
        let p2 = pod_req("p", &[(1000, 0), (2000, 0)]);
        assert_eq!(
            balanced(existing, p2, vec![(6000, 10000), (6000, 10000)]),
            [50, 75]
        );
    }

    fn fit_scores(
        strategy: ScoringStrategy,
        existing: Vec<k8s_openapi::api::core::v1::Pod>,
        p: k8s_openapi::api::core::v1::Pod,
        nodes: Vec<(i64, i64)>,
    ) -> Vec<i64> {
        let fit = Fit::new(&NodeResourcesFitArgs {
            scoring_strategy: Some(strategy),
            ..Default::default()
        })
        .unwrap();
        let infos = nodes
            .iter()
            .enumerate()
            .map(|(i, (c, m))| node_info(node(&format!("node{}", i + 1), *c, *m), vec![]))
            .collect();
        run_scores(&fit, &existing, p, infos)
    }

    fn strategy(t: &str) -> ScoringStrategy {
        ScoringStrategy {
            type_: Some(t.into()),
            resources: default_resources(),
            requested_to_capacity_ratio: None,
        }
    }

    /// Upstream TestLeastAllocatedScoringStrategy.
    #[test]
    fn least_allocated() {
        let p = pod_req("p", &[(1000, 2000), (2000, 3000)]);
        // "nothing scheduled, resources requested, differently sized nodes"
        // node1: cpu (4000-3000)*100/4000 = 25, memory 50 → 37; node2: 50, 50 → 50.
        assert_eq!(
            fit_scores(
                strategy("LeastAllocated"),
                vec![],
                p.clone(),
                vec![(4000, 10000), (6000, 10000)]
            ),
            [37, 50]
        );
        // "resources requested, pods scheduled with resources"
        // node1: cpu (10000-6000)*100/10000 = 40, memory (20000-5000)*100/20000 = 75 → 57;
        // node2: 40, (20000-10000)*100/20000 = 50 → 45.
        let existing = vec![cpu_only("node1"), cpu_and_memory("node2")];
        assert_eq!(
            fit_scores(
                strategy("LeastAllocated"),
                existing,
                p.clone(),
                vec![(10000, 20000), (10000, 20000)]
            ),
            [57, 45]
        );
        // Ours: requested cpu beyond capacity scores 0 for that resource.
        let existing = vec![cpu_only("node1"), cpu_and_memory("node2")];
        let big = pod_req("p", &[(3000, 0), (3000, 5000)]);
        assert_eq!(
            fit_scores(
                strategy("LeastAllocated"),
                existing,
                big,
                vec![(4000, 10000), (6000, 10000)]
            ),
            [25, 0]
        );
    }

    /// Upstream TestMostAllocatedScoringStrategy.
    #[test]
    fn most_allocated() {
        let p = pod_req("p", &[(1000, 2000), (2000, 3000)]);
        // "nothing scheduled, resources requested, differently sized nodes"
        // node1: cpu 3000*100/4000 = 75, memory 50 → 62; node2: 50, 50 → 50.
        assert_eq!(
            fit_scores(
                strategy("MostAllocated"),
                vec![],
                p.clone(),
                vec![(4000, 10000), (6000, 10000)]
            ),
            [62, 50]
        );
        // "resources requested, pods scheduled with resources"
        // node1: cpu 6000/10000 = 60, memory 5000/20000 = 25 → 42; node2: 60, 50 → 55.
        let existing = vec![cpu_only("node1"), cpu_and_memory("node2")];
        assert_eq!(
            fit_scores(
                strategy("MostAllocated"),
                existing,
                p,
                vec![(10000, 20000), (10000, 20000)]
            ),
            [42, 55]
        );
    }

    /// Upstream TestRequestedToCapacityRatioScoringStrategy ("nothing scheduled, nothing
    /// requested (default - least requested nodes have priority)" with shape 0→10, 100→0).
    #[test]
    fn requested_to_capacity_ratio() {
        let s = ScoringStrategy {
            type_: Some("RequestedToCapacityRatio".into()),
            resources: default_resources(),
            requested_to_capacity_ratio: Some(RequestedToCapacityRatioParam {
                shape: vec![
                    UtilizationShapePoint {
                        utilization: 0,
                        score: 10,
                    },
                    UtilizationShapePoint {
                        utilization: 100,
                        score: 0,
                    },
                ],
            }),
        };
        let p = pod_req("p", &[(0, 0)]);
        assert_eq!(
            fit_scores(s.clone(), vec![], p, vec![(4000, 10000), (4000, 10000)]),
            [100, 100]
        );
        // 3000/4000 = 75 % → 25, 5000/10000 = 50 % → 50: round(37.5) = 38.
        let p = pod_req("p", &[(1000, 2000), (2000, 3000)]);
        assert_eq!(
            fit_scores(s, vec![], p, vec![(4000, 10000), (6000, 10000)]),
            [38, 50]
        );
    }

    /// Upstream TestEnoughRequests (node: 10 milli-cpu, 20 memory, 32 pods).
    #[test]
    fn fit_filter() {
        let fit = Fit::new(&Default::default()).unwrap();
        let n = |existing: Vec<(i64, i64)>| {
            let pods = existing
                .iter()
                .enumerate()
                .map(|(i, (c, m))| pod_req(&format!("e{i}"), &[(*c, *m)]))
                .collect();
            node_info(with_allocatable(node("n", 10, 20), "pods", "32"), pods)
        };
        let run = |p: k8s_openapi::api::core::v1::Pod, node: &NodeInfo| {
            FilterPlugin::filter(
                &fit,
                &CycleState::default(),
                &PodInfo::new(Arc::new(p)),
                node,
            )
        };
        // "no resources requested always fits"
        assert!(run(pod("p"), &n(vec![(10, 20)])).is_success());
        // "too many resources fails"
        let s = run(pod_req("p", &[(1, 1)]), &n(vec![(10, 20)]));
        assert_eq!(s.reasons, ["Insufficient cpu", "Insufficient memory"]);
        assert_eq!(s.code, Code::Unschedulable);
        // "both resources fit"
        assert!(run(pod_req("p", &[(1, 1)]), &n(vec![(5, 5)])).is_success());
        // "one resource memory fits"
        let s = run(pod_req("p", &[(2, 1)]), &n(vec![(9, 5)]));
        assert_eq!(s.reasons, ["Insufficient cpu"]);
        // "one resource cpu fits"
        let s = run(pod_req("p", &[(1, 2)]), &n(vec![(5, 19)]));
        assert_eq!(s.reasons, ["Insufficient memory"]);
        // "equal edge case"
        assert!(run(pod_req("p", &[(5, 1)]), &n(vec![(5, 19)])).is_success());
        // "extended resource capacity enforced"
        let mut p = pod_req("p", &[(1, 1)]);
        p.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert(
                "example.com/aaa".into(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("10".into()),
            );
        let mut node = n(vec![]);
        node.allocatable.set_scalar("example.com/aaa", 5);
        assert_eq!(run(p, &node).reasons, ["Insufficient example.com/aaa"]);
        // Too many pods (TestPodFitsResources "even without specified resources, predicate fails when there's no space for additional pod")
        let mut full = node_info(with_allocatable(node_full(), "pods", "1"), vec![pod("x")]);
        full.allocatable.allowed_pod_number = 1;
        assert_eq!(run(pod("p"), &full).reasons, ["Too many pods"]);
    }

    fn node_full() -> k8s_openapi::api::core::v1::Node {
        node("full", 10, 20)
    }
}
