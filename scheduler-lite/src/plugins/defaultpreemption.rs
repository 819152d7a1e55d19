//! DefaultPreemption (PostFilter): when no node fits, find nodes where evicting lower-priority
//! pods would make the pod fit. Per candidate node: remove every lower-priority pod, check the
//! pod fits, then reprieve as many as possible — PDB-violating ones first, each in priority
//! order — so the victims are the fewest needed. Among candidates pick upstream's way: fewest
//! PDB violations, lowest highest-victim priority, lowest priority sum, fewest victims, latest
//! start of the highest-priority victims. The scheduler deletes the victims and nominates the
//! node; this module only computes.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::config::{decode_args, DefaultPreemptionArgs};
use crate::framework::*;
use crate::labels::Selector;
use crate::nodeinfo::{NodeInfo, PodInfo};

pub const NAME: &str = "DefaultPreemption";
pub const MSG_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const MSG_NO_VICTIMS: &str = "No preemption victims found for incoming pod";

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|args, _| {
                let a: DefaultPreemptionArgs = decode_args(args).map_err(|e| e.1)?;
                Ok(Arc::new(DefaultPreemption::new(&a, true)) as Arc<dyn Plugin>)
            }),
            points: &["postFilter"],
            validate_args: |v| {
                let a: DefaultPreemptionArgs = decode_args(v)?;
                if let Some(p) = a.min_candidate_nodes_percentage {
                    if !(0..=100).contains(&p) {
                        return Err((
                            "minCandidateNodesPercentage".into(),
                            "not in valid range [0, 100]".into(),
                        ));
                    }
                }
                if a.min_candidate_nodes_absolute.is_some_and(|n| n < 0) {
                    return Err((
                        "minCandidateNodesAbsolute".into(),
                        "not in valid range [0, inf)".into(),
                    ));
                }
                Ok(())
            },
        },
    );
}

pub struct DefaultPreemption {
    min_percentage: usize,
    min_absolute: usize,
    random_offset: bool,
}

impl DefaultPreemption {
    pub fn new(a: &DefaultPreemptionArgs, random_offset: bool) -> Self {
        DefaultPreemption {
            min_percentage: a.min_candidate_nodes_percentage.unwrap_or(10) as usize,
            min_absolute: a.min_candidate_nodes_absolute.unwrap_or(100) as usize,
            random_offset,
        }
    }
}

/// A node where preemption would work, with its victims.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// Upstream `MoreImportantPod`: higher priority, then earlier start.
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| a.start_time().cmp(&b.start_time()))
}

/// Splits `pods` into (PDB-violating, non-violating), as upstream's
/// `filterPodsWithPDBViolation`: each matching PDB's `disruptionsAllowed` is used up in order.
pub fn split_by_pdb(
    pods: &[Arc<PodInfo>],
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs
        .iter()
        .map(|p| {
            p.status
                .as_ref()
                .map(|s| s.disruptions_allowed as i64)
                .unwrap_or(0)
        })
        .collect();
    let selectors: Vec<Selector> = pdbs
        .iter()
        .map(|p| Selector::from_label_selector(p.spec.as_ref().and_then(|s| s.selector.as_ref())))
        .collect();
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.metadata.namespace.as_deref() != Some(pod.namespace.as_str()) {
                continue;
            }
            if selectors[i].is_empty() || !selectors[i].matches(pod.labels()) {
                continue;
            }
            let disrupted = pdb
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(&pod.name));
            if disrupted {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(pod.clone());
        } else {
            ok.push(pod.clone());
        }
    }
    (violating, ok)
}

/// Upstream `SelectVictimsOnNode`.
pub fn select_victims_on_node(
    fwk: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    input: &PostFilterInput,
) -> Option<Candidate> {
    let snap = input.snapshot;
    let mut state = state.clone();
    let mut info = node.clone();
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return None;
    }
    for p in &potential {
        info.remove_pod(&p.key);
        fwk.run_remove_pod(&mut state, pod, p, &info, snap);
    }
    let fits = |state: &CycleState, info: &NodeInfo| {
        fwk.run_filter_with_nominated(state, pod, info, snap)
            .is_success()
    };
    if !fits(&state, &info) {
        return None;
    }
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, non_violating) = split_by_pdb(&potential, &snap.pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    let mut reprieve = |p: &Arc<PodInfo>, state: &mut CycleState, info: &mut NodeInfo| -> bool {
        info.add_pod(p.clone());
        fwk.run_add_pod(state, pod, p, info, snap);
        if fits(state, info) {
            return true;
        }
        info.remove_pod(&p.key);
        fwk.run_remove_pod(state, pod, p, info, snap);
        victims.push(p.clone());
        false
    };
    for p in &violating {
        if !reprieve(p, &mut state, &mut info) {
            pdb_violations += 1;
        }
    }
    for p in &non_violating {
        reprieve(p, &mut state, &mut info);
    }
    victims.sort_by(|a, b| more_important(a, b));
    Some(Candidate {
        node: node.name.clone(),
        victims,
        pdb_violations,
    })
}

/// Upstream `pickOneNodeForPreemption`.
pub fn pick_one(candidates: &[Candidate]) -> Option<&Candidate> {
    if let Some(c) = candidates.iter().find(|c| c.victims.is_empty()) {
        return Some(c);
    }
    let highest = |c: &Candidate| c.victims.first().map(|v| v.priority).unwrap_or(i32::MIN);
    let sum = |c: &Candidate| -> i64 {
        c.victims
            .iter()
            .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
            .sum()
    };
    // The earliest start among the highest-priority victims; later is better.
    let earliest = |c: &Candidate| -> i64 {
        let h = highest(c);
        c.victims
            .iter()
            .filter(|v| v.priority == h)
            .map(|v| v.start_time())
            .min()
            .unwrap_or(0)
    };
    let mut best: Vec<&Candidate> = candidates.iter().collect();
    let keep_min = |best: &mut Vec<&Candidate>, f: &dyn Fn(&Candidate) -> i64| {
        if let Some(m) = best.iter().map(|c| f(c)).min() {
            best.retain(|c| f(c) == m);
        }
    };
    keep_min(&mut best, &|c| c.pdb_violations as i64);
    keep_min(&mut best, &|c| highest(c) as i64);
    keep_min(&mut best, &sum);
    keep_min(&mut best, &|c| c.victims.len() as i64);
    keep_min(&mut best, &|c| -earliest(c));
    best.first().copied()
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

/// "0/N nodes are available: 2 reason a, 3 reason b." with reasons sorted as upstream does.
pub fn summary(num_nodes: usize, counts: &HashMap<String, usize>) -> String {
    let mut reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    format!("0/{num_nodes} nodes are available: {}.", reasons.join(", "))
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        input: &PostFilterInput,
    ) -> (Option<PostFilterResult>, Status) {
        let spec = pod.spec();
        if spec.preemption_policy.as_deref() == Some("Never") {
            return (
                None,
                Status::unschedulable("preemption: not eligible due to preemptionPolicy=Never."),
            );
        }
        let snap = input.snapshot;
        // A preemptor already nominated waits while lower-priority pods there terminate.
        if let Some(nom) = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
        {
            let unresolvable = input
                .statuses
                .get(nom)
                .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
            if !unresolvable {
                if let Some(n) = snap.get(nom) {
                    if n.pods
                        .iter()
                        .any(|p| p.terminating && p.priority < pod.priority)
                    {
                        return (
                            None,
                            Status::unschedulable("preemption: not eligible due to a terminating pod on the nominated node."),
                        );
                    }
                }
            }
        }
        let num_nodes = snap.nodes.len();
        let mut counts: HashMap<String, usize> = HashMap::new();
        let potential: Vec<&Arc<NodeInfo>> = snap
            .nodes
            .iter()
            .filter(|n| match input.statuses.get(&n.name) {
                Some(s) if s.code == Code::Unschedulable => true,
                _ => {
                    *counts.entry(MSG_NOT_HELPFUL.into()).or_default() += 1;
                    false
                }
            })
            .collect();
        if potential.is_empty() {
            return (
                None,
                Status::unschedulable(format!("preemption: {}", summary(num_nodes, &counts))),
            );
        }
        let want = (potential.len() * self.min_percentage / 100)
            .max(self.min_absolute)
            .min(potential.len());
        let offset = if self.random_offset {
            rand::random_range(0..potential.len())
        } else {
            0
        };
        let mut candidates = Vec::new();
        for i in 0..potential.len() {
            let node = potential[(offset + i) % potential.len()];
            match select_victims_on_node(input.framework, state, pod, node, input) {
                Some(c) => candidates.push(c),
                None => *counts.entry(MSG_NO_VICTIMS.into()).or_default() += 1,
            }
            if candidates.len() >= want {
                break;
            }
        }
        let Some(best) = pick_one(&candidates) else {
            return (
                None,
                Status::unschedulable(format!("preemption: {}", summary(num_nodes, &counts))),
            );
        };
        (
            Some(PostFilterResult {
                nominated_node: best.node.clone(),
                victims: best.victims.clone(),
            }),
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::nodeinfo::Snapshot;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::Pod;

    fn prio(mut p: Pod, priority: i32) -> Pod {
        p.spec.as_mut().unwrap().priority = Some(priority);
        p
    }

    fn framework() -> Framework {
        let c = Config::default();
        let mut reg = crate::plugins::registry();
        reg.remove("DefaultBinder");
        reg.insert(
            "DefaultBinder",
            PluginInfo {
                factory: Arc::new(|_, _| Ok(Arc::new(crate::plugins::NodeName) as Arc<dyn Plugin>)),
                points: &["bind"],
                validate_args: |_| Ok(()),
            },
        );
        Framework::new(
            &c.profiles[0],
            &reg,
            &Handle {
                client: None,
                parallelism: 1,
            },
        )
        .unwrap()
    }

    /// Runs the filters, then DefaultPreemption (no random offset) on `snap`.
    fn preempt(snap: &Snapshot, p: Pod) -> (Option<PostFilterResult>, Status) {
        let fwk = framework();
        let pi = PodInfo::new(Arc::new(p));
        let mut state = CycleState::default();
        let (_, s) = fwk.run_pre_filter(&mut state, &pi, snap);
        assert!(s.is_success(), "{s:?}");
        let mut statuses = HashMap::new();
        for n in &snap.nodes {
            let s = fwk.run_filter(&state, &pi, n);
            if !s.is_success() {
                statuses.insert(n.name.clone(), s);
            }
        }
        let input = PostFilterInput {
            snapshot: snap,
            statuses: &statuses,
            framework: &fwk,
        };
        PostFilterPlugin::post_filter(
            &DefaultPreemption::new(&Default::default(), false),
            &state,
            &pi,
            &input,
        )
    }

    fn victims(r: &Option<PostFilterResult>) -> Vec<String> {
        r.as_ref()
            .unwrap()
            .victims
            .iter()
            .map(|v| v.name.clone())
            .collect()
    }

    /// Upstream TestSelectNodesForPreemption / TestPostFilter cases (nodes of 4 cpu units,
    /// pods requesting cpu; "large" pods fill a node alone).
    #[test]
    fn victim_selection() {
        let n = |name: &str| node(name, 4000, 1 << 30);
        // "a pod that fits on both nodes when lower priority pods are preempted": the node whose
        // victims have the lowest priority wins (pickOneNodeForPreemption).
        let snap = snapshot(
            vec![n("node1"), n("node2")],
            vec![
                on_node(prio(pod_req("p1", &[(4000, 0)]), 20), "node1"),
                on_node(prio(pod_req("p2", &[(4000, 0)]), 10), "node2"),
            ],
        );
        let (r, s) = preempt(&snap, prio(pod_req("preemptor", &[(4000, 0)]), 100));
        assert!(s.is_success(), "{s:?}");
        assert_eq!(r.as_ref().unwrap().nominated_node, "node2");
        assert_eq!(victims(&r), ["p2"]);
        // "pods are not preempted when the preemptor does not have higher priority"
        let (r, s) = preempt(&snap, prio(pod_req("preemptor", &[(4000, 0)]), 5));
        assert!(r.is_none());
        assert_eq!(
            s.message(),
            "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
        );
        // "mixed priority pods are preempted": only as many lower-priority pods as needed, the
        // least important first.
        let snap = snapshot(
            vec![n("node1")],
            vec![
                on_node(prio(pod_req("low-a", &[(1000, 0)]), 5), "node1"),
                on_node(prio(pod_req("low-b", &[(1000, 0)]), 6), "node1"),
                on_node(prio(pod_req("mid", &[(2000, 0)]), 50), "node1"),
            ],
        );
        let (r, _) = preempt(&snap, prio(pod_req("preemptor", &[(1000, 0)]), 100));
        assert_eq!(victims(&r), ["low-a"]);
        let (r, _) = preempt(&snap, prio(pod_req("preemptor", &[(2000, 0)]), 100));
        assert_eq!(victims(&r), ["low-b", "low-a"]);
        // "preemption is not helpful": a node rejected as unresolvable (taint) is no candidate.
        let tainted_node = tainted(
            n("node1"),
            vec![k8s_openapi::api::core::v1::Taint {
                key: "k".into(),
                value: Some("v".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
        );
        let snap = snapshot(vec![tainted_node], vec![]);
        let (_, s) = preempt(&snap, prio(pod_req("preemptor", &[(1000, 0)]), 100));
        assert_eq!(
            s.message(),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    /// Upstream TestSelectNodesForPreemption "pod with PDB is not preempted when an alternative
    /// exists" (the candidate without PDB violations wins).
    #[test]
    fn pdbs_are_respected() {
        let n = |name: &str| node(name, 4000, 1 << 30);
        let snap0 = snapshot(
            vec![n("node1"), n("node2")],
            vec![
                on_node(
                    with_labels(prio(pod_req("guarded", &[(4000, 0)]), 10), &[("app", "db")]),
                    "node1",
                ),
                on_node(prio(pod_req("free", &[(4000, 0)]), 10), "node2"),
            ],
        );
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
        }))
        .unwrap();
        let snap = Snapshot {
            pdbs: Arc::new(vec![Arc::new(pdb)]),
            ..snap0.clone()
        };
        let (r, _) = preempt(&snap, prio(pod_req("preemptor", &[(4000, 0)]), 100));
        assert_eq!(r.as_ref().unwrap().nominated_node, "node2");
        assert_eq!(victims(&r), ["free"]);
        let (violating, ok) = split_by_pdb(&snap.nodes[0].pods, &snap.pdbs);
        assert_eq!((violating.len(), ok.len()), (1, 0));
    }
}
