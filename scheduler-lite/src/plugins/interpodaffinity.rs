//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, and the
//! required anti-affinity of pods already placed (Filter, with counts per topology pair computed
//! once in PreFilter and updated by the PreFilter extensions for nominated pods and preemption);
//! preferred terms of both sides plus existing pods' required affinity at `hardPodAffinityWeight`
//! (Score, min–max normalised). Namespace selectors resolve through the namespaces' labels.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::config::{decode_args, InterPodAffinityArgs};
use crate::framework::*;
use crate::nodeinfo::{AffinityTerm, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: InterPodAffinityArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(InterPodAffinity::new(&a)) as Arc<dyn Plugin>)
            }),
            points: &["preFilter", "filter", "preScore", "score"],
            validate_args: |v| {
                let a: InterPodAffinityArgs = decode_args(v)?;
                match a.hard_pod_affinity_weight {
                    Some(w) if !(0..=100).contains(&w) => Err((
                        "hardPodAffinityWeight".into(),
                        format!("{w} not in valid range [0, 100]"),
                    )),
                    _ => Ok(()),
                }
            },
        },
    );
}

pub struct InterPodAffinity {
    hard_weight: i64,
    ignore_preferred_of_existing: bool,
}

impl InterPodAffinity {
    pub fn new(a: &InterPodAffinityArgs) -> Self {
        InterPodAffinity {
            hard_weight: a.hard_pod_affinity_weight.unwrap_or(1) as i64,
            ignore_preferred_of_existing: a
                .ignore_preferred_terms_of_existing_pods
                .unwrap_or(false),
        }
    }
}

/// Pod counts per topology pair (key → value → count), upstream's `topologyToMatchedTermCount`.
/// Nested so that a lookup by a node's label borrows instead of building a key.
#[derive(Clone, Default)]
struct TopologyCounts(FxHashMap<String, FxHashMap<String, i64>>);

impl TopologyCounts {
    /// Adds `delta` for `node`'s value of `key` (nodes without the label do not count); a pair
    /// that drops to zero is removed, so `is_empty` means no pair counts.
    fn bump(&mut self, node: &NodeInfo, key: &str, delta: i64) {
        let Some(v) = node.labels().get(key) else {
            return;
        };
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), FxHashMap::default());
        }
        let values = self.0.get_mut(key).expect("inserted above");
        let n = match values.get_mut(v.as_str()) {
            Some(n) => {
                *n += delta;
                *n
            }
            None => {
                values.insert(v.clone(), delta);
                delta
            }
        };
        if n == 0 {
            values.remove(v.as_str());
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any of the node's label pairs counts (upstream walks the node's labels too).
    fn any_on(&self, node: &NodeInfo) -> bool {
        !self.0.is_empty() && node.labels().iter().any(|(k, v)| self.get(k, v) > 0)
    }
}

#[derive(Clone, Default)]
struct FilterState {
    existing_anti: TopologyCounts,
    affinity: TopologyCounts,
    anti: TopologyCounts,
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, snap: &Snapshot) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, snap))
}

impl FilterState {
    /// Accounts for `existing` on `node` (delta +1 added, −1 removed).
    fn update(
        &mut self,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
        delta: i64,
    ) {
        for t in &existing.required_anti_affinity {
            if t.matches(pod, snap) {
                self.existing_anti.bump(node, &t.topology_key, delta);
            }
        }
        if matches_all(&pod.required_affinity, existing, snap) {
            for t in &pod.required_affinity {
                self.affinity.bump(node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(existing, snap) {
                self.anti.bump(node, &t.topology_key, delta);
            }
        }
    }
}

impl Plugin for InterPodAffinity {
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
            ClusterEvent::AssignedPodAdd,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::NamespaceChange,
            ClusterEvent::UnscheduledPodUpdate,
        ]
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let has_own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !has_own && snap.have_required_anti_affinity.is_empty() {
            return (None, Status::skip());
        }
        let mut s = FilterState::default();
        for &i in &snap.have_required_anti_affinity {
            let node = &snap.nodes[i];
            for e in &node.pods {
                for t in &e.required_anti_affinity {
                    if t.matches(pod, snap) {
                        s.existing_anti.bump(node, &t.topology_key, 1);
                    }
                }
            }
        }
        if has_own {
            for node in &snap.nodes {
                for e in &node.pods {
                    if matches_all(&pod.required_affinity, e, snap) {
                        for t in &pod.required_affinity {
                            s.affinity.bump(node, &t.topology_key, 1);
                        }
                    }
                    for t in &pod.required_anti_affinity {
                        if t.matches(e, snap) {
                            s.anti.bump(node, &t.topology_key, 1);
                        }
                    }
                }
            }
        }
        state.write(NAME, (s, matches_all(&pod.required_affinity, pod, snap)));
        (None, Status::success())
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        added: &Arc<PodInfo>,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        if let Some((s, _)) = state.read_mut::<(FilterState, bool)>(NAME) {
            s.update(pod, added, node, snap, 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        removed: &Arc<PodInfo>,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        if let Some((s, _)) = state.read_mut::<(FilterState, bool)>(NAME) {
            s.update(pod, removed, node, snap, -1);
        }
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some((s, self_match)) = state.read::<(FilterState, bool)>(NAME) else {
            return Status::error("InterPodAffinity: no PreFilter state");
        };
        let labels = node.labels();
        // Required affinity: every term's topology must exist on the node, with matching pods.
        let mut pods_exist = true;
        for t in &pod.required_affinity {
            match labels.get(&t.topology_key) {
                None => return Status::unresolvable(ERR_AFFINITY),
                Some(v) => {
                    if s.affinity.get(&t.topology_key, v) <= 0 {
                        pods_exist = false;
                    }
                }
            }
        }
        // The first pod of a group with affinity to itself may go anywhere.
        let first_of_group = s.affinity.is_empty() && *self_match;
        if !pods_exist && !first_of_group {
            return Status::unresolvable(ERR_AFFINITY);
        }
        for t in &pod.required_anti_affinity {
            if let Some(v) = labels.get(&t.topology_key) {
                if s.anti.get(&t.topology_key, v) > 0 {
                    return Status::unschedulable(ERR_ANTI_AFFINITY);
                }
            }
        }
        if s.existing_anti.any_on(node) {
            return Status::unschedulable(ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// PreScore state: the score per topology pair (pairs that sum to zero are dropped, which
/// scores and normalises the same as keeping them).
#[derive(Clone, Default)]
struct ScoreState(TopologyCounts);

impl ScoreState {
    fn add(&mut self, node: &NodeInfo, key: &str, w: i64) {
        if w != 0 {
            self.0.bump(node, key, w);
        }
    }
}

impl InterPodAffinity {
    fn process_existing(
        &self,
        s: &mut ScoreState,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        snap: &Snapshot,
    ) {
        for t in &pod.preferred_affinity {
            if t.term.matches(existing, snap) {
                s.add(node, &t.term.topology_key, t.weight as i64);
            }
        }
        for t in &pod.preferred_anti_affinity {
            if t.term.matches(existing, snap) {
                s.add(node, &t.term.topology_key, -(t.weight as i64));
            }
        }
        if self.hard_weight > 0 {
            for t in &existing.required_affinity {
                if t.matches(pod, snap) {
                    s.add(node, &t.topology_key, self.hard_weight);
                }
            }
        }
        if self.ignore_preferred_of_existing {
            return;
        }
        for t in &existing.preferred_affinity {
            if t.term.matches(pod, snap) {
                s.add(node, &t.term.topology_key, t.weight as i64);
            }
        }
        for t in &existing.preferred_anti_affinity {
            if t.term.matches(pod, snap) {
                s.add(node, &t.term.topology_key, -(t.weight as i64));
            }
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Status {
        let has_constraints =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_constraints && snap.have_affinity.is_empty() {
            return Status::skip();
        }
        let mut s = ScoreState::default();
        if has_constraints {
            for node in &snap.nodes {
                for e in &node.pods {
                    self.process_existing(&mut s, pod, e, node, snap);
                }
            }
        } else {
            // Only existing pods' required affinity (at hardPodAffinityWeight) and preferred
            // terms can score; a pod with nothing but required anti-affinity cannot.
            let contributes = |p: &PodInfo| {
                (self.hard_weight > 0 && !p.required_affinity.is_empty())
                    || (!self.ignore_preferred_of_existing
                        && (!p.preferred_affinity.is_empty()
                            || !p.preferred_anti_affinity.is_empty()))
            };
            for &i in &snap.have_affinity {
                let node = &snap.nodes[i];
                for e in node.pods.iter().filter(|p| contributes(p)) {
                    self.process_existing(&mut s, pod, e, node, snap);
                }
            }
        }
        state.write(NAME, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<ScoreState>(NAME)
            .ok_or_else(|| Status::error("InterPodAffinity: no PreScore state"))?;
        let labels = node.labels();
        let mut score = 0;
        for (key, values) in &s.0 .0 {
            if let Some(v) = labels.get(key) {
                score += values.get(v).copied().unwrap_or(0);
            }
        }
        Ok(score)
    }
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for InterPodAffinity {
    fn normalize_score(&self, state: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        if state
            .read::<ScoreState>(NAME)
            .is_none_or(|s| s.0.is_empty())
        {
            return;
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            s.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((s.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn term(key: &str, op: &str, values: &[&str], topo: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: key.into(),
                    operator: op.into(),
                    values: Some(values.iter().map(|s| s.to_string()).collect()),
                }]),
                match_labels: None,
            }),
            topology_key: topo.into(),
            ..Default::default()
        }
    }

    fn with_affinity(mut p: Pod, aff: Vec<PodAffinityTerm>, anti: Vec<PodAffinityTerm>) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            pod_affinity: (!aff.is_empty()).then(|| PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(aff),
                ..Default::default()
            }),
            pod_anti_affinity: (!anti.is_empty()).then(|| PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(anti),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn plugin() -> InterPodAffinity {
        InterPodAffinity::new(&Default::default())
    }

    fn filter_one(existing: Vec<Pod>, p: Pod, node_labels: &[(&str, &str)]) -> Status {
        let n = labeled(node("node1", 0, 0), node_labels);
        let snap = snapshot(vec![n], existing);
        run_filters(&plugin(), p, &snap).remove(0)
    }

    /// Upstream TestRequiredAffinitySingleNode cases (node1 labelled region=r1, zone=z11).
    #[test]
    fn filter_single_node() {
        let labels = [("region", "r1"), ("zone", "z11")];
        let sec1 = || {
            on_node(
                with_labels(pod("e"), &[("service", "securityscan")]),
                "node1",
            )
        };
        // "A pod that has no required pod affinity scheduling rules can schedule onto a node with no existing pods"
        assert!(filter_one(vec![], pod("p"), &labels).is_success());
        // "satisfies with requiredDuringSchedulingIgnoredDuringExecution in PodAffinity using In operator that matches the existing pod"
        let p = with_affinity(
            pod("p"),
            vec![term("service", "In", &["securityscan", "value2"], "region")],
            vec![],
        );
        assert!(filter_one(vec![sec1()], p, &labels).is_success());
        // "satisfies the pod with requiredDuringSchedulingIgnoredDuringExecution in PodAffinity using not in operator in labelSelector that matches the existing pod"
        let p = with_affinity(
            pod("p"),
            vec![term(
                "service",
                "NotIn",
                &["securityscan3", "value3"],
                "region",
            )],
            vec![],
        );
        assert!(filter_one(vec![sec1()], p, &labels).is_success());
        // "Does not satisfy the PodAffinity with labelSelector because of diff Namespace"
        let mut p = with_affinity(
            pod("p"),
            vec![term("service", "In", &["securityscan", "value2"], "region")],
            vec![],
        );
        p.spec
            .as_mut()
            .unwrap()
            .affinity
            .as_mut()
            .unwrap()
            .pod_affinity
            .as_mut()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_mut()
            .unwrap()[0]
            .namespaces = Some(vec!["DiffNameSpace".into()]);
        let s = filter_one(vec![sec1()], p, &labels);
        assert_eq!(
            (s.code, s.message()),
            (Code::UnschedulableAndUnresolvable, ERR_AFFINITY.to_string())
        );
        // "Doesn't satisfy the PodAffinity because of unmatching labelSelector with the existing pod"
        let p = with_affinity(
            pod("p"),
            vec![term(
                "service",
                "In",
                &["antivirusscan", "value2"],
                "region",
            )],
            vec![],
        );
        assert_eq!(filter_one(vec![sec1()], p, &labels).message(), ERR_AFFINITY);
        // "satisfies the PodAffinity and PodAntiAffinity with the existing pod"
        let p = with_affinity(
            pod("p"),
            vec![term("service", "In", &["securityscan", "value2"], "region")],
            vec![term("service", "In", &["antivirusscan", "value2"], "node")],
        );
        assert!(filter_one(vec![sec1()], p, &labels).is_success());
        // "satisfies the PodAffinity but doesn't satisfy the PodAntiAffinity with the existing pod"
        let p = with_affinity(
            pod("p"),
            vec![term("service", "In", &["securityscan", "value2"], "region")],
            vec![term("service", "In", &["securityscan", "value2"], "zone")],
        );
        let s = filter_one(vec![sec1()], p, &labels);
        assert_eq!(
            (s.code, s.message()),
            (Code::Unschedulable, ERR_ANTI_AFFINITY.to_string())
        );
        // "satisfies the PodAffinity and PodAntiAffinity but doesn't satisfy PodAntiAffinity symmetry with the existing pod"
        let existing = with_affinity(
            sec1(),
            vec![],
            vec![term("security", "In", &["S1"], "zone")],
        );
        let p = with_labels(
            with_affinity(
                pod("p"),
                vec![term("service", "In", &["securityscan", "value2"], "region")],
                vec![],
            ),
            &[("security", "S1")],
        );
        let s = filter_one(vec![existing], p, &labels);
        assert_eq!(s.message(), ERR_EXISTING_ANTI_AFFINITY);
        // "pod matches its own Label in PodAffinity and that matches the existing pod Labels"
        // (the first pod of a self-affine group: no pod matches anywhere yet).
        let p = with_labels(
            with_affinity(
                pod("p"),
                vec![term("service", "In", &["securityscan"], "region")],
                vec![],
            ),
            &[("service", "securityscan")],
        );
        assert!(filter_one(vec![], p, &labels).is_success());
        // "verify that PodAntiAffinity from existing pod is respected when pod has no AntiAffinity constraints. doesn't satisfy PodAntiAffinity symmetry with the existing pod"
        let existing = with_affinity(
            sec1(),
            vec![],
            vec![term("service", "In", &["securityscan", "value2"], "zone")],
        );
        let p = with_labels(pod("p"), &[("service", "securityscan")]);
        assert_eq!(
            filter_one(vec![existing], p, &labels).message(),
            ERR_EXISTING_ANTI_AFFINITY
        );
    }

    fn preferred(
        mut p: Pod,
        aff: Vec<(i32, PodAffinityTerm)>,
        anti: Vec<(i32, PodAffinityTerm)>,
    ) -> Pod {
        let w = |v: Vec<(i32, PodAffinityTerm)>| {
            v.into_iter()
                .map(|(weight, t)| WeightedPodAffinityTerm {
                    weight,
                    pod_affinity_term: t,
                })
                .collect::<Vec<_>>()
        };
        let a = p
            .spec
            .as_mut()
            .unwrap()
            .affinity
            .get_or_insert_with(Default::default);
        if !aff.is_empty() {
            a.pod_affinity = Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(w(aff)),
                ..Default::default()
            });
        }
        if !anti.is_empty() {
            a.pod_anti_affinity = Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(w(anti)),
                ..Default::default()
            });
        }
        p
    }

    /// Upstream TestPreferredAffinity (machine1: region=China, machine2: region=India, machine3:
    /// az=az1, machine4: region=China + az=az1, machine5: region=India + az=az2).
    #[test]
    fn preferred_scores() {
        let nodes = || {
            vec![
                labeled(node("machine1", 0, 0), &[("region", "China")]),
                labeled(node("machine2", 0, 0), &[("region", "India")]),
                labeled(node("machine3", 0, 0), &[("az", "az1")]),
            ]
        };
        let s1 = |n: &str, name: &str| on_node(with_labels(pod(name), &[("security", "S1")]), n);
        let s2 = |n: &str, name: &str| on_node(with_labels(pod(name), &[("security", "S2")]), n);
        let stay_with_s1 = || {
            preferred(
                with_labels(pod("p"), &[("security", "S1")]),
                vec![(5, term("security", "In", &["S1"], "region"))],
                vec![],
            )
        };
        let score = |existing: Vec<Pod>, p: Pod, nodes: Vec<k8s_openapi::api::core::v1::Node>| {
            let snap = snapshot(nodes, existing);
            run_scores_on(&plugin(), p, &snap, &snap.nodes.clone())
        };
        // "all machines are same priority as Affinity is nil"
        assert_eq!(
            score(
                vec![],
                with_labels(pod("p"), &[("security", "S1")]),
                nodes()
            ),
            [0, 0, 0]
        );
        // "Affinity: pod that matches topology key & pods in nodes will get high score comparing to others which doesn't match either pods in nodes or in topology key"
        let existing = vec![
            s1("machine1", "e1"),
            s2("machine2", "e2"),
            s2("machine3", "e3"),
        ];
        assert_eq!(score(existing, stay_with_s1(), nodes()), [100, 0, 0]);
        // "All the nodes that have the same topology key & label value with one of them has an existing pod that match the affinity rules, have the same score"
        let mut ns = nodes();
        ns.push(labeled(node("machine4", 0, 0), &[("region", "China")]));
        ns[1] = labeled(node("machine2", 0, 0), &[("region", "China")]);
        let existing = vec![s1("machine1", "e1")];
        assert_eq!(score(existing, stay_with_s1(), ns), [100, 100, 0, 100]);
        // "Anti Affinity: pod that does not match existing pods in node will get high score"
        let avoid_s1 = preferred(
            with_labels(pod("p"), &[("security", "S1")]),
            vec![],
            vec![(5, term("security", "In", &["S1"], "region"))],
        );
        let existing = vec![s1("machine1", "e1"), s2("machine2", "e2")];
        assert_eq!(score(existing, avoid_s1, nodes()), [0, 100, 100]);
    }
}
