//! NodeAffinity: `spec.nodeSelector` and required node affinity (Filter, with PreFilter
//! narrowing to the nodes named by `matchFields metadata.name`), preferred node affinity (Score:
//! the weights of matching terms, DefaultNormalizeScore), plus the profile's `addedAffinity`.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PreferredSchedulingTerm;

use crate::config::{decode_args, NodeAffinityArgs};
use crate::framework::*;
use crate::labels::{NodeSelector, NodeTerm};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: NodeAffinityArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(NodeAffinity::new(&a)) as Arc<dyn Plugin>)
            }),
            points: &["preFilter", "filter", "preScore", "score"],
            validate_args: |v| decode_args::<NodeAffinityArgs>(v).map(|_| ()),
        },
    );
}

pub struct NodeAffinity {
    added_required: Option<NodeSelector>,
    added_preferred: Vec<(i32, NodeTerm)>,
}

impl NodeAffinity {
    pub fn new(args: &NodeAffinityArgs) -> Self {
        let added = args.added_affinity.as_ref();
        NodeAffinity {
            added_required: added
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|r| NodeSelector::new(&r.node_selector_terms)),
            added_preferred: added
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|p| preferred_terms(p))
                .unwrap_or_default(),
        }
    }
}

fn preferred_terms(p: &[PreferredSchedulingTerm]) -> Vec<(i32, NodeTerm)> {
    p.iter()
        .filter(|t| t.weight != 0)
        .map(|t| (t.weight, NodeTerm::new(&t.preference)))
        .collect()
}

/// The pod's required node selection, compiled once per cycle.
#[derive(Clone)]
struct PreFilterState {
    node_selector: Vec<(String, String)>,
    required: Option<NodeSelector>,
}

impl PreFilterState {
    fn matches(&self, node: &NodeInfo) -> bool {
        let labels = node.labels();
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .required
                .as_ref()
                .is_none_or(|r| r.matches(&node.name, labels))
    }
}

fn pre_filter_state(pod: &PodInfo) -> PreFilterState {
    let spec = pod.spec();
    PreFilterState {
        node_selector: spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        required: spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| NodeSelector::new(&r.node_selector_terms)),
    }
}

/// Whether a node passes the pod's nodeSelector and required node affinity (also used by
/// PodTopologySpread's node inclusion policy).
pub fn pod_matches_node_selector_and_affinity(pod: &PodInfo, node: &NodeInfo) -> bool {
    pre_filter_state(pod).matches(node)
}

impl Plugin for NodeAffinity {
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
            ClusterEvent::UnscheduledPodUpdate,
        ]
    }
}

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let s = pre_filter_state(pod);
        if s.node_selector.is_empty() && s.required.is_none() && self.added_required.is_none() {
            return (None, Status::skip());
        }
        // Nodes named through matchFields: when every term names nodes, only those.
        let mut names: Option<BTreeSet<String>> = None;
        if let Some(r) = &s.required {
            let mut all = BTreeSet::new();
            let mut every_term_restricts = !r.terms.is_empty();
            for t in &r.terms {
                match t.name_restriction() {
                    Some(n) => all.extend(n),
                    None => every_term_restricts = false,
                }
            }
            if every_term_restricts {
                if all.is_empty() {
                    state.write(NAME, s);
                    return (None, Status::unresolvable(ERR_REASON_POD));
                }
                names = Some(all);
            }
        }
        state.write(NAME, s);
        (
            Some(PreFilterResult { node_names: names }),
            Status::success(),
        )
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(added) = &self.added_required {
            if !added.matches(&node.name, node.labels()) {
                return Status::unresolvable(ERR_REASON_ENFORCED);
            }
        }
        let ok = match state.read::<PreFilterState>(NAME) {
            Some(s) => s.matches(node),
            None => pre_filter_state(pod).matches(node),
        };
        if ok {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

#[derive(Clone)]
struct PreScoreState(Vec<(i32, NodeTerm)>);

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let terms: Vec<(i32, NodeTerm)> = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|p| preferred_terms(p))
            .unwrap_or_default();
        if terms.is_empty() && self.added_preferred.is_empty() {
            return Status::skip();
        }
        state.write(NAME, PreScoreState(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let own;
        let terms = match state.read::<PreScoreState>(NAME) {
            Some(s) => &s.0,
            None => {
                own = pod
                    .spec()
                    .affinity
                    .as_ref()
                    .and_then(|a| a.node_affinity.as_ref())
                    .and_then(|n| {
                        n.preferred_during_scheduling_ignored_during_execution
                            .as_ref()
                    })
                    .map(|p| preferred_terms(p))
                    .unwrap_or_default();
                &own
            }
        };
        let labels = node.labels();
        let mut count = 0i64;
        for (w, t) in self.added_preferred.iter().chain(terms.iter()) {
            if t.matches(&node.name, labels) {
                count += *w as i64;
            }
        }
        Ok(count)
    }
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for NodeAffinity {
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize_score(MAX_NODE_SCORE, false, scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::*;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn with_required(mut p: Pod, terms: Vec<Vec<NodeSelectorRequirement>>) -> Pod {
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(
                    k8s_openapi::api::core::v1::NodeSelector {
                        node_selector_terms: terms
                            .into_iter()
                            .map(|r| NodeSelectorTerm {
                                match_expressions: Some(r),
                                match_fields: None,
                            })
                            .collect(),
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn filter(p: Pod, labels: &[(&str, &str)]) -> Status {
        let n = node_info(labeled(node("node1", 0, 0), labels), vec![]);
        let pl = super::NodeAffinity::new(&Default::default());
        let pi = PodInfo::new(Arc::new(p));
        let mut st = CycleState::default();
        let (_, s) = PreFilterPlugin::pre_filter(&pl, &mut st, &pi, &Snapshot::default());
        if !s.is_success() && !s.is_skip() {
            return s;
        }
        FilterPlugin::filter(&pl, &st, &pi, &n)
    }

    /// Upstream TestNodeAffinity cases (by name).
    #[test]
    fn filter_cases() {
        // "missing labels"
        let mut p = pod("p");
        p.spec.as_mut().unwrap().node_selector =
            Some([("foo".to_string(), "bar".to_string())].into());
        assert_eq!(filter(p.clone(), &[]).message(), ERR_REASON_POD);
        // "same labels"
        assert!(filter(p.clone(), &[("foo", "bar")]).is_success());
        // "node labels are superset"
        assert!(filter(p, &[("foo", "bar"), ("baz", "blah")]).is_success());
        // "Pod with matchExpressions using In operator that matches the existing node"
        let p = with_required(pod("p"), vec![vec![req("foo", "In", &["bar", "value2"])]]);
        assert!(filter(p, &[("foo", "bar")]).is_success());
        // "Pod with matchExpressions using Gt operator that matches the existing node"
        let p = with_required(pod("p"), vec![vec![req("kernel-version", "Gt", &["0204"])]]);
        assert!(filter(p, &[("kernel-version", "0206")]).is_success());
        // "Pod with matchExpressions using NotIn operator that matches the existing node"
        let p = with_required(
            pod("p"),
            vec![vec![req("mem-type", "NotIn", &["DDR", "DDR2"])]],
        );
        assert!(filter(p, &[("mem-type", "DDR3")]).is_success());
        // "Pod with matchExpressions using Exists operator that matches the existing node"
        let p = with_required(pod("p"), vec![vec![req("GPU", "Exists", &[])]]);
        assert!(filter(p, &[("GPU", "NVIDIA-GRID-K1")]).is_success());
        // "Pod with affinity that don't match node's labels won't schedule onto the node"
        let p = with_required(
            pod("p"),
            vec![vec![req("foo", "In", &["value1", "value2"])]],
        );
        assert_eq!(
            filter(p, &[("foo", "bar")]).code,
            Code::UnschedulableAndUnresolvable
        );
        // "Pod with a nil []NodeSelectorTerm in affinity, can't match the node's labels and won't schedule onto the node"
        let p = with_required(pod("p"), vec![]);
        assert!(!filter(p, &[("foo", "bar")]).is_success());
        // "Pod with an empty []NodeSelectorTerm in affinity, can't match the node's labels and won't schedule onto the node"
        let p = with_required(pod("p"), vec![vec![]]);
        assert!(!filter(p, &[("foo", "bar")]).is_success());
        // "Pod with multiple NodeSelectorTerms ORed in affinity, matches the node's labels and will schedule onto the node"
        let p = with_required(
            pod("p"),
            vec![
                vec![req("foo", "In", &["bar", "value2"])],
                vec![req("diffkey", "In", &["wrong", "value2"])],
            ],
        );
        assert!(filter(p, &[("foo", "bar")]).is_success());
        // "Pod with an Affinity matches node's labels but the PodSpec.NodeSelector(the old thing that we are deprecating) is not satisfied, won't schedule onto the node"
        let mut p = with_required(pod("p"), vec![vec![req("foo", "In", &["bar", "value2"])]]);
        p.spec.as_mut().unwrap().node_selector = Some(
            [
                ("foo".to_string(), "bar".to_string()),
                ("baz".to_string(), "blah".to_string()),
            ]
            .into(),
        );
        assert!(!filter(p, &[("foo", "bar")]).is_success());
    }

    /// Upstream TestNodeAffinityPriority: "all machines matches the preferred scheduling
    /// requirements of pod but with different priorities" and "only machine1 matches the
    /// preferred scheduling requirements of pod".
    #[test]
    fn scores() {
        let pref = |w: i32, reqs: Vec<NodeSelectorRequirement>| PreferredSchedulingTerm {
            weight: w,
            preference: NodeSelectorTerm {
                match_expressions: Some(reqs),
                match_fields: None,
            },
        };
        let affinity = vec![
            pref(2, vec![req("foo", "In", &["bar"])]),
            pref(4, vec![req("key", "In", &["value"])]),
            pref(
                5,
                vec![
                    req("foo", "In", &["bar"]),
                    req("key", "In", &["value"]),
                    req("az", "In", &["az1"]),
                ],
            ),
        ];
        let mut p = pod("p");
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(affinity),
                ..Default::default()
            }),
            ..Default::default()
        });
        let pl = super::NodeAffinity::new(&Default::default());
        let nodes = |ls: Vec<Vec<(&str, &str)>>| -> Vec<NodeInfo> {
            ls.into_iter()
                .enumerate()
                .map(|(i, l)| {
                    node_info(
                        labeled(node(&format!("machine{}", i + 1), 0, 0), &l),
                        vec![],
                    )
                })
                .collect()
        };
        let got = run_scores(
            &pl,
            &[],
            p.clone(),
            nodes(vec![
                vec![("foo", "bar")],
                vec![("foo", "bar"), ("key", "value"), ("az", "az1")],
                vec![("key", "value")],
            ]),
        );
        // Raw 2, 11, 4 → 18, 100, 36.
        assert_eq!(got, [18, 100, 36]);
        // "only machine1 matches the preferred scheduling requirements of pod"
        let mut only = pod("p");
        only.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![pref(
                    2,
                    vec![req("foo", "In", &["bar"])],
                )]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let got = run_scores(
            &pl,
            &[],
            only,
            nodes(vec![
                vec![("foo", "bar")],
                vec![("key", "value")],
                vec![("az", "az1")],
            ]),
        );
        assert_eq!(got, [100, 0, 0]);
    }
}
