//! TaintToleration: a node's NoSchedule/NoExecute taints must be tolerated (Filter); nodes with
//! fewer untolerated PreferNoSchedule taints score higher (Score, reversed DefaultNormalizeScore).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;

use crate::framework::*;
use crate::labels::{find_untolerated, tolerates};
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "TaintToleration";

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|_, _| Ok(Arc::new(TaintToleration) as Arc<dyn Plugin>)),
            points: &["filter", "preScore", "score"],
            validate_args: |_| Ok(()),
        },
    );
}

pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
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

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = pod.spec().tolerations.as_deref().unwrap_or(&[]);
        match find_untolerated(node.taints(), tolerations, &["NoSchedule", "NoExecute"]) {
            None => Status::success(),
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

/// The pod's tolerations that can tolerate PreferNoSchedule taints.
#[derive(Clone)]
struct PreScoreState(Vec<Toleration>);

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        _: &Snapshot,
    ) -> Status {
        let tols = pod
            .spec()
            .tolerations
            .iter()
            .flatten()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        state.write(NAME, PreScoreState(tols));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let tols = state
            .read::<PreScoreState>(NAME)
            .ok_or_else(|| Status::error("TaintToleration: no PreScore state"))?;
        Ok(node
            .taints()
            .iter()
            .filter(|t| {
                t.effect == "PreferNoSchedule" && !tols.0.iter().any(|tol| tolerates(tol, t))
            })
            .count() as i64)
    }
    fn normalize(&self) -> Option<&dyn NormalizeScorePlugin> {
        Some(self)
    }
}

impl NormalizeScorePlugin for TaintToleration {
    fn normalize_score(&self, _: &CycleState, _: &PodInfo, scores: &mut [NodeScore]) {
        default_normalize_score(MAX_NODE_SCORE, true, scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;

    fn taint(key: &str, value: &str, effect: &str) -> k8s_openapi::api::core::v1::Taint {
        k8s_openapi::api::core::v1::Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }
    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Default::default()
        }
    }

    /// Upstream TestTaintTolerationScore cases.
    #[test]
    fn scores() {
        type Case = (
            &'static str,
            Vec<Toleration>,
            Vec<Vec<k8s_openapi::api::core::v1::Taint>>,
            Vec<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                // "node with taints tolerated by the pod, gets a higher score than those node with intolerable taints"
                "tolerated vs intolerable",
                vec![tol("foo", "Equal", "bar", "PreferNoSchedule")],
                vec![
                    vec![taint("foo", "bar", "PreferNoSchedule")],
                    vec![taint("foo", "blah", "PreferNoSchedule")],
                ],
                vec![100, 0],
            ),
            (
                // "the nodes that all of their taints are tolerated by the pod, get the same score, no matter how many tolerable taints a node has"
                "all tolerated",
                vec![
                    tol("cpu-type", "Equal", "arm64", "PreferNoSchedule"),
                    tol("disk-type", "Equal", "ssd", "PreferNoSchedule"),
                ],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", "PreferNoSchedule")],
                    vec![
                        taint("cpu-type", "arm64", "PreferNoSchedule"),
                        taint("disk-type", "ssd", "PreferNoSchedule"),
                    ],
                ],
                vec![100, 100, 100],
            ),
            (
                // "the more intolerable taints a node has, the lower score it gets."
                "more intolerable, lower score",
                vec![tol("foo", "Equal", "bar", "PreferNoSchedule")],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", "PreferNoSchedule")],
                    vec![
                        taint("cpu-type", "arm64", "PreferNoSchedule"),
                        taint("disk-type", "ssd", "PreferNoSchedule"),
                    ],
                ],
                vec![100, 50, 0],
            ),
            (
                // "only taints and tolerations that have effect PreferNoSchedule are checked by prioritizeTaintToleration function"
                "only PreferNoSchedule counts",
                vec![
                    tol("cpu-type", "Equal", "arm64", "NoSchedule"),
                    tol("disk-type", "Equal", "ssd", "NoSchedule"),
                ],
                vec![
                    vec![],
                    vec![taint("cpu-type", "arm64", "NoSchedule")],
                    vec![
                        taint("cpu-type", "arm64", "PreferNoSchedule"),
                        taint("disk-type", "ssd", "PreferNoSchedule"),
                    ],
                ],
                vec![100, 100, 0],
            ),
            (
                // "Default behaviour No taints and tolerations, lands on node with no taints"
                "no tolerations",
                vec![],
                vec![vec![], vec![taint("cpu-type", "arm64", "PreferNoSchedule")]],
                vec![100, 0],
            ),
        ];
        for (name, tols, taints, want) in cases {
            let mut p = pod("p");
            p.spec.as_mut().unwrap().tolerations = Some(tols);
            let nodes: Vec<NodeInfo> = taints
                .into_iter()
                .enumerate()
                .map(|(i, t)| node_info(tainted(node(&format!("n{i}"), 0, 0), t), vec![]))
                .collect();
            let got = run_scores(&TaintToleration, &[], p, nodes);
            assert_eq!(got, want, "{name}");
        }
    }

    /// Upstream TestTaintTolerationFilter cases.
    #[test]
    fn filter() {
        let cases = vec![
            // "A pod having no tolerations can't be scheduled onto a node with nonempty taints"
            (
                vec![],
                vec![taint("dedicated", "user1", "NoSchedule")],
                Some("node(s) had untolerated taint {dedicated: user1}"),
            ),
            // "A pod which can be scheduled on a dedicated node assigned to user1 with effect NoSchedule"
            (
                vec![tol("dedicated", "Equal", "user1", "NoSchedule")],
                vec![taint("dedicated", "user1", "NoSchedule")],
                None,
            ),
            // "A pod which can't be scheduled on a dedicated node assigned to user2 with effect NoSchedule"
            (
                vec![tol("dedicated", "Equal", "user2", "NoSchedule")],
                vec![taint("dedicated", "user1", "NoSchedule")],
                Some("node(s) had untolerated taint {dedicated: user1}"),
            ),
            // "A pod can be scheduled onto the node, with a toleration uses operator Exists that tolerates the taints on the node"
            (
                vec![tol("foo", "Exists", "", "NoSchedule")],
                vec![taint("foo", "bar", "NoSchedule")],
                None,
            ),
            // "A pod has multiple tolerations, node has multiple taints, all the taints are tolerated, pod can be scheduled onto the node"
            (
                vec![
                    tol("dedicated", "Equal", "user2", "NoSchedule"),
                    tol("foo", "Exists", "", "NoSchedule"),
                ],
                vec![
                    taint("dedicated", "user2", "NoSchedule"),
                    taint("foo", "bar", "NoSchedule"),
                ],
                None,
            ),
            // "A pod has a toleration that keys and values match the taint on the node, but (non-empty) effect doesn't match, can't be scheduled onto the node"
            (
                vec![tol("foo", "Equal", "bar", "PreferNoSchedule")],
                vec![taint("foo", "bar", "NoSchedule")],
                Some("node(s) had untolerated taint {foo: bar}"),
            ),
            // "The pod has a toleration that keys and values match the taint on the node, the effect of toleration is empty, and the effect of taint is NoSchedule. Pod can be scheduled onto the node"
            (
                vec![tol("foo", "Equal", "bar", "")],
                vec![taint("foo", "bar", "NoSchedule")],
                None,
            ),
            // "The pod has a toleration that key and value don't match the taint on the node, but the effect of taint on node is PreferNoSchedule. Pod can be scheduled onto the node"
            (
                vec![tol("dedicated", "Equal", "user2", "NoSchedule")],
                vec![taint("dedicated", "user1", "PreferNoSchedule")],
                None,
            ),
            // "The pod has no toleration, but the effect of taint on node is PreferNoSchedule. Pod can be scheduled onto the node"
            (
                vec![],
                vec![taint("dedicated", "user1", "PreferNoSchedule")],
                None,
            ),
        ];
        for (i, (tols, taints, want)) in cases.into_iter().enumerate() {
            let mut p = pod("p");
            p.spec.as_mut().unwrap().tolerations = Some(tols);
            let n = node_info(tainted(node("n", 0, 0), taints), vec![]);
            let s = FilterPlugin::filter(
                &TaintToleration,
                &CycleState::default(),
                &PodInfo::new(Arc::new(p)),
                &n,
            );
            match want {
                None => assert!(s.is_success(), "case {i}: {s:?}"),
                Some(msg) => {
                    assert_eq!(s.code, Code::UnschedulableAndUnresolvable, "case {i}");
                    assert_eq!(s.message(), msg, "case {i}");
                }
            }
        }
    }
}
