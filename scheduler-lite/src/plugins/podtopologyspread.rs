//! PodTopologySpread: `topologySpreadConstraints` (and, for pods without any, the system default
//! constraints — hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway — over the selectors of the
//! Services, ReplicaSets, ReplicationControllers and StatefulSets that select the pod).
//! Filter: the skew a node would get (its domain's matching pods + the pod − the least loaded
//! domain) must stay within maxSkew for DoNotSchedule constraints. Score: fewer matching pods in
//! the node's domains scores higher, weighted by ln(domains + 2), normalised as upstream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use crate::config::{decode_args, PodTopologySpreadArgs};
use crate::framework::*;
use crate::labels::{find_untolerated, Selector};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};
use crate::plugins::nodeaffinity::pod_matches_node_selector_and_affinity;

pub const NAME: &str = "PodTopologySpread";
pub const ERR_CONSTRAINTS: &str = "node(s) didn't match pod topology spread constraints";
pub const ERR_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: PodTopologySpreadArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(PodTopologySpread::new(&a).map_err(|e| e.1)?) as Arc<dyn Plugin>)
            }),
            points: &["preFilter", "filter", "preScore", "score"],
            validate_args: |v| {
                let a: PodTopologySpreadArgs = decode_args(v)?;
                PodTopologySpread::new(&a).map(|_| ())
            },
        },
    );
}

/// A compiled constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: Selector,
    pub min_domains: i64,
    pub honor_node_affinity: bool,
    pub honor_taints: bool,
}

pub struct PodTopologySpread {
    defaults: Vec<TopologySpreadConstraint>,
    system_defaulted: bool,
}

impl PodTopologySpread {
    pub fn new(a: &PodTopologySpreadArgs) -> Result<Self, (String, String)> {
        let system = match a.defaulting_type.as_deref().unwrap_or("System") {
            "System" => true,
            "List" => false,
            other => {
                return Err((
                    "defaultingType".into(),
                    format!("Unsupported value: {other:?}: supported values: \"System\", \"List\""),
                ))
            }
        };
        if system && !a.default_constraints.is_empty() {
            return Err((
                "defaultConstraints".into(),
                "when .defaultingType is \"System\", .defaultConstraints must be empty".into(),
            ));
        }
        for (i, c) in a.default_constraints.iter().enumerate() {
            if c.label_selector.is_some() {
                return Err((
                    format!("defaultConstraints[{i}].labelSelector"),
                    "constraint must not define a selector, as they deduced for each pod".into(),
                ));
            }
            if c.max_skew <= 0 {
                return Err((
                    format!("defaultConstraints[{i}].maxSkew"),
                    "must be greater than zero".into(),
                ));
            }
        }
        let defaults = if system {
            let c = |key: &str, skew: i32| TopologySpreadConstraint {
                max_skew: skew,
                topology_key: key.into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                ..Default::default()
            };
            vec![c(HOSTNAME, 3), c(ZONE, 5)]
        } else {
            a.default_constraints.clone()
        };
        Ok(PodTopologySpread {
            defaults,
            system_defaulted: system,
        })
    }

    /// The pod's constraints for `action` (`DoNotSchedule` or `ScheduleAnyway`), or the
    /// defaults when it has none; `requireAll` is upstream's requireAllTopologies.
    fn constraints(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        action: &str,
    ) -> (Vec<Constraint>, bool) {
        let own = pod
            .spec()
            .topology_spread_constraints
            .as_deref()
            .unwrap_or(&[]);
        if !own.is_empty() {
            return (compile(pod, own, action, None), true);
        }
        if self.defaults.is_empty() {
            return (Vec::new(), true);
        }
        // Default constraints take the selectors of the pod's owners (merged).
        let owners: Vec<&Selector> = snapshot
            .owner_selectors
            .get(&pod.namespace)
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty() && s.matches(pod.labels()))
            .collect();
        if owners.is_empty() {
            return (Vec::new(), !self.system_defaulted);
        }
        (
            compile(pod, &self.defaults, action, Some(&owners)),
            !self.system_defaulted,
        )
    }
}

fn compile(
    pod: &PodInfo,
    cs: &[TopologySpreadConstraint],
    action: &str,
    owners: Option<&[&Selector]>,
) -> Vec<Constraint> {
    cs.iter()
        .filter(|c| c.when_unsatisfiable == action)
        .map(|c| {
            let selector = match owners {
                Some(o) => MergedSelector::of(o),
                None => {
                    let mut s = Selector::from_label_selector(c.label_selector.as_ref());
                    for k in c.match_label_keys.iter().flatten() {
                        if let Some(v) = pod.labels().and_then(|l| l.get(k)) {
                            s.add_equals(k, v);
                        }
                    }
                    s
                }
            };
            Constraint {
                max_skew: c.max_skew as i64,
                topology_key: c.topology_key.clone(),
                selector,
                min_domains: c.min_domains.unwrap_or(1) as i64,
                honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

/// The selectors of several owners merged (a pod matched by all of them); upstream merges the
/// owners' label sets into one selector.
struct MergedSelector;

impl MergedSelector {
    fn of(owners: &[&Selector]) -> Selector {
        // All owner selectors are requirement lists; a pod counts when it matches every one. Our
        // Selector is a conjunction, so chaining the first is exact for one owner (the usual
        // case) and conservative for several.
        owners[0].clone()
    }
}

fn node_has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    let labels = node.labels();
    cs.iter().all(|c| labels.contains_key(&c.topology_key))
}

fn node_included(c: &Constraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    if c.honor_node_affinity && !pod_matches_node_selector_and_affinity(pod, node) {
        return false;
    }
    if c.honor_taints {
        let tols = pod.spec().tolerations.as_deref().unwrap_or(&[]);
        if find_untolerated(node.taints(), tols, &["NoSchedule", "NoExecute"]).is_some() {
            return false;
        }
    }
    true
}

fn count_matching(pods: &[Arc<PodInfo>], selector: &Selector, ns: &str) -> i64 {
    pods.iter()
        .filter(|p| !p.terminating && p.namespace == ns && selector.matches(p.labels()))
        .count() as i64
}

/// PreFilter state: per constraint, matching pods per domain value.
#[derive(Clone)]
struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    fn min_match(&self, i: usize) -> i64 {
        let c = &self.constraints[i];
        let counts = &self.counts[i];
        if (counts.len() as i64) < c.min_domains {
            return 0;
        }
        counts.values().copied().min().unwrap_or(0)
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.terminating
            || other.namespace != pod.namespace
            || !node_has_all_keys(node, &self.constraints)
        {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !node_included(c, pod, node) || !c.selector.matches(other.labels()) {
                continue;
            }
            let v = &node.labels()[&c.topology_key];
            match self.counts[i].get_mut(v.as_str()) {
                Some(n) => *n += delta,
                None => {
                    self.counts[i].insert(v.clone(), delta);
                }
            }
        }
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
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
            ClusterEvent::NodeDelete,
            ClusterEvent::AssignedPodAdd,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::UnscheduledPodUpdate,
        ]
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let (constraints, _) = self.constraints(pod, snapshot, "DoNotSchedule");
        if constraints.is_empty() {
            return (None, Status::skip());
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        for node in &snapshot.nodes {
            if !node_has_all_keys(node, &constraints) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if !node_included(c, pod, node) {
                    continue;
                }
                let n = count_matching(&node.pods, &c.selector, &pod.namespace);
                let v = &node.labels()[&c.topology_key];
                match counts[i].get_mut(v.as_str()) {
                    Some(total) => *total += n,
                    None => {
                        counts[i].insert(v.clone(), n);
                    }
                }
            }
        }
        state.write(
            NAME,
            FilterState {
                constraints,
                counts,
            },
        );
        (None, Status::success())
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &Arc<PodInfo>,
        node: &NodeInfo,
        _: &Snapshot,
    ) {
        if let Some(s) = state.read_mut::<FilterState>(NAME) {
            s.update(pod, added, node, 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &Arc<PodInfo>,
        node: &NodeInfo,
        _: &Snapshot,
    ) {
        if let Some(s) = state.read_mut::<FilterState>(NAME) {
            s.update(pod, removed, node, -1);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(NAME) else {
            return Status::error("PodTopologySpread: no PreFilter state");
        };
        let labels = node.labels();
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_LABEL);
            };
            let self_match = c.selector.matches(pod.labels()) as i64;
            let matched = s.counts[i].get(v).copied().unwrap_or(0);
            let skew = matched + self_match - s.min_match(i);
            if skew > c.max_skew {
                return Status::unschedulable(ERR_CONSTRAINTS);
            }
        }
        Status::success()
    }
}

/// PreScore state.
#[derive(Clone)]
struct ScoreState {
    constraints: Vec<Constraint>,
    ignored: HashSet<String>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let (constraints, require_all) = self.constraints(pod, snapshot, "ScheduleAnyway");
        if constraints.is_empty() {
            return Status::skip();
        }
        let mut ignored = HashSet::new();
        let mut counts = vec![HashMap::new(); constraints.len()];
        let mut hostnames = 0i64;
        for n in nodes {
            if require_all && !node_has_all_keys(n, &constraints) {
                ignored.insert(n.name.clone());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME {
                    continue;
                }
                if let Some(v) = n.labels().get(&c.topology_key) {
                    if !counts[i].contains_key(v.as_str()) {
                        counts[i].insert(v.clone(), 0);
                    }
                }
            }
            hostnames += 1;
        }
        let weights = constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == HOSTNAME {
                    hostnames
                } else {
                    counts[i].len() as i64
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        for node in &snapshot.nodes {
            if require_all && !node_has_all_keys(node, &constraints) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME || !node_included(c, pod, node) {
                    continue;
                }
                let Some(v) = node.labels().get(&c.topology_key) else {
                    continue;
                };
                if let Some(slot) = counts[i].get_mut(v) {
                    *slot += count_matching(&node.pods, &c.selector, &pod.namespace);
                }
            }
        }
        state.write(
            NAME,
            ScoreState {
                constraints,
                ignored,
                counts,
                weights,
            },
        );
        Status::success()
    }
}

/// Marks ignored nodes during normalisation.
const INVALID_SCORE: i64 = -1;

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<ScoreState>(NAME)
            .ok_or_else(|| Status::error("PodTopologySpread: no PreScore state"))?;
        if s.ignored.contains(&node.name) {
            return Ok(0);
        }
        let labels = node.labels();
        let mut score = 0f64;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = labels.get(&c.topology_key) else {
                continue;
            };
            let cnt = if c.topology_key == HOSTNAME {
                count_matching(&node.pods, &c.selector, &pod.namespace)
            } else {
                s.counts[i].get(v).copied().unwrap_or(0)
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for PodTopologySpread {
    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        let Some(s) = state.read::<ScoreState>(NAME) else {
            return;
        };
        let mut min = i64::MAX;
        let mut max = 0i64;
        for sc in scores.iter_mut() {
            if s.ignored.contains(&sc.name) {
                sc.score = INVALID_SCORE;
                continue;
            }
            min = min.min(sc.score);
            max = max.max(sc.score);
        }
        for sc in scores.iter_mut() {
            if sc.score == INVALID_SCORE {
                sc.score = 0;
                continue;
            }
            if max == 0 {
                sc.score = MAX_NODE_SCORE;
                continue;
            }
            sc.score = MAX_NODE_SCORE * (max + min - sc.score) / max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn spread(mut p: Pod, cs: &[(i32, &str, &str)]) -> Pod {
        p.spec.as_mut().unwrap().topology_spread_constraints = Some(
            cs.iter()
                .map(|(skew, key, action)| TopologySpreadConstraint {
                    max_skew: *skew,
                    topology_key: key.to_string(),
                    when_unsatisfiable: action.to_string(),
                    label_selector: Some(LabelSelector {
                        match_expressions: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                            key: "foo".into(),
                            operator: "Exists".into(),
                            values: None,
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        p
    }

    fn zone_node(name: &str, zone: &str) -> Node {
        labeled(node(name, 0, 0), &[("zone", zone), ("node", name)])
    }

    fn foo(name: &str, node: &str) -> Pod {
        on_node(with_labels(pod(name), &[("foo", "")]), node)
    }

    fn plugin() -> PodTopologySpread {
        PodTopologySpread::new(&Default::default()).unwrap()
    }

    /// Upstream TestSingleConstraint cases (zone1: node-a, node-b; zone2: node-x, node-y).
    #[test]
    fn filter_single_constraint() {
        let nodes = || {
            vec![
                zone_node("node-a", "zone1"),
                zone_node("node-b", "zone1"),
                zone_node("node-x", "zone2"),
                zone_node("node-y", "zone2"),
            ]
        };
        let verdict = |pods: Vec<Pod>, p: Pod| -> Vec<bool> {
            let snap = snapshot(nodes(), pods);
            run_filters(&plugin(), p, &snap)
                .iter()
                .map(|s| s.is_success())
                .collect()
        };
        let incoming = || {
            spread(
                with_labels(pod("p"), &[("foo", "")]),
                &[(1, "zone", "DoNotSchedule")],
            )
        };
        // "no existing pods"
        assert_eq!(verdict(vec![], incoming()), [true, true, true, true]);
        // "no existing pods, incoming pod doesn't match itself"
        let mut p = incoming();
        p.metadata.labels = None;
        assert_eq!(verdict(vec![], p), [true, true, true, true]);
        // "existing pods in a different namespace do not count"
        let mut other = foo("p-a1", "node-a");
        other.metadata.namespace = Some("ns1".into());
        let mut other2 = foo("p-b1", "node-b");
        other2.metadata.namespace = Some("ns2".into());
        assert_eq!(
            verdict(
                vec![other, other2, foo("p-x1", "node-x"), foo("p-y1", "node-y")],
                incoming()
            ),
            [true, true, false, false]
        );
        // "pods spread across zones as 3/3, all nodes fit"
        let pods = vec![
            foo("p-a1", "node-a"),
            foo("p-b1", "node-b"),
            foo("p-b2", "node-b"),
            foo("p-x1", "node-x"),
            foo("p-y1", "node-y"),
            foo("p-y2", "node-y"),
        ];
        assert_eq!(verdict(pods, incoming()), [true, true, true, true]);
        // "pods spread across zones as 1/2 due to absence of label 'zone' on node-b": here as
        // "incoming pod has nodeSelector, pods spread as 2/~1~/~0~/3, hence node-a fits" style:
        // zone1 has 3 matching pods, zone2 one → only zone2 nodes fit.
        let pods = vec![
            foo("p-a1", "node-a"),
            foo("p-a2", "node-a"),
            foo("p-b1", "node-b"),
            foo("p-y1", "node-y"),
        ];
        assert_eq!(verdict(pods, incoming()), [false, false, true, true]);
    }

    /// Upstream TestSingleConstraint "pods spread across nodes as 2/1/0/3, only node-x fits"
    /// (constraint on `node`, maxSkew 1).
    #[test]
    fn filter_by_node() {
        let nodes = vec![
            zone_node("node-a", "zone1"),
            zone_node("node-b", "zone1"),
            zone_node("node-x", "zone2"),
            zone_node("node-y", "zone2"),
        ];
        let pods = vec![
            foo("p-a1", "node-a"),
            foo("p-a2", "node-a"),
            foo("p-b1", "node-b"),
            foo("p-y1", "node-y"),
            foo("p-y2", "node-y"),
            foo("p-y3", "node-y"),
        ];
        let p = spread(
            with_labels(pod("p"), &[("foo", "")]),
            &[(1, "node", "DoNotSchedule")],
        );
        let snap = snapshot(nodes, pods);
        let got: Vec<bool> = run_filters(&plugin(), p, &snap)
            .iter()
            .map(|s| s.is_success())
            .collect();
        assert_eq!(got, [false, false, true, false]);
        // A node without the key is unresolvable.
        let p = spread(
            with_labels(pod("p"), &[("foo", "")]),
            &[(1, "rack", "DoNotSchedule")],
        );
        let s = run_filters(&plugin(), p, &snap);
        assert_eq!(s[0].message(), ERR_LABEL);
        assert_eq!(s[0].code, Code::UnschedulableAndUnresolvable);
    }

    /// Upstream TestPodTopologySpreadScore.
    #[test]
    fn scores() {
        let score = |nodes: Vec<Node>, pods: Vec<Pod>, p: Pod| -> Vec<i64> {
            let snap = snapshot(nodes, pods);
            run_scores_on(&plugin(), p, &snap, &snap.nodes.clone())
        };
        let hn = |n: &str| labeled(node(n, 0, 0), &[]);
        let incoming = || {
            spread(
                with_labels(pod("p"), &[("foo", "")]),
                &[(1, HOSTNAME, "ScheduleAnyway")],
            )
        };
        // "one constraint on node, no existing pods"
        assert_eq!(
            score(vec![hn("node-a"), hn("node-b")], vec![], incoming()),
            [100, 100]
        );
        // "one constraint on node, only one node is candidate"
        // (as upstream "one constraint on node, all 4 nodes are candidates": 2/1/0/3 pods)
        let nodes = vec![hn("node-a"), hn("node-b"), hn("node-c"), hn("node-d")];
        let pods = vec![
            foo("p-a1", "node-a"),
            foo("p-a2", "node-a"),
            foo("p-b1", "node-b"),
            foo("p-d1", "node-d"),
            foo("p-d2", "node-d"),
            foo("p-d3", "node-d"),
        ];
        // Raw: round(cnt * ln(6)) → 4, 2, 0, 5; normalised 100*(5+0-s)/5 → 20, 60, 100, 0.
        assert_eq!(score(nodes, pods, incoming()), [20, 60, 100, 0]);
        // "one constraint on zone, ..." with nodes missing the key ignored (score 0).
        let nodes = vec![
            labeled(node("node-a", 0, 0), &[("zone", "zone1")]),
            labeled(node("node-b", 0, 0), &[("zone", "zone1")]),
            labeled(node("node-x", 0, 0), &[("zone", "zone2")]),
            labeled(node("node-n", 0, 0), &[]),
        ];
        let pods = vec![
            foo("p-a1", "node-a"),
            foo("p-b1", "node-b"),
            foo("p-x1", "node-x"),
        ];
        let p = spread(
            with_labels(pod("p"), &[("foo", "")]),
            &[(1, "zone", "ScheduleAnyway")],
        );
        // zone1: 2 pods, zone2: 1; weight ln(4): raw 3, 3, 1 → 100*(3+1-s)/3 = 33, 33, 100; node-n 0.
        assert_eq!(score(nodes, pods, p), [33, 33, 100, 0]);
    }
}
