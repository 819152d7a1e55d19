//! The DaemonSet controller's pure parts (upstream `pkg/controller/daemon/util` and the
//! node-eligibility and rolling-update logic of `daemon_controller.go` / `update.go`): which nodes
//! should run a daemon pod, the tolerations every daemon pod gets, the node affinity that pins a
//! pod to its node for the scheduler, what each node needs (create, delete), the rolling-update
//! plan under maxSurge/maxUnavailable, and the status counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector as NodeSelectorSpec, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSpec, PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::jiff::Timestamp;
use scheduler_lite::labels::{find_untolerated, NodeSelector};

use crate::deployment::util::scaled_value;
use crate::replicaset::pods::{is_available, is_ready};

/// The pod label holding the ControllerRevision hash (`DefaultDaemonSetUniqueLabelKey`).
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The deprecated pod label holding the DaemonSet's generation at creation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// The tolerations upstream's `AddOrUpdateDaemonPodTolerations` adds: (key, effect).
const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

fn add_or_update_toleration(spec: &mut PodSpec, t: Toleration) {
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    match list.iter_mut().find(|x| {
        x.key == t.key && x.operator == t.operator && x.value == t.value && x.effect == t.effect
    }) {
        Some(x) => *x = t,
        None => list.push(t),
    }
}

/// `AddOrUpdateDaemonPodTolerations`: daemon pods tolerate node conditions (not ready,
/// unreachable, pressure, unschedulable; network-unavailable for hostNetwork pods).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut list: Vec<(&str, &str)> = DEFAULT_TOLERATIONS.to_vec();
    if spec.host_network == Some(true) {
        list.push((NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    for (key, effect) in list {
        add_or_update_toleration(
            spec,
            Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            },
        );
    }
}

/// `ReplaceDaemonSetPodNodeNameNodeAffinity`: the pod's required node affinity becomes one term
/// naming its node through `matchFields metadata.name` (the node was already checked against
/// the template's own affinity), preferred terms are kept.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelectorSpec {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

/// The node a daemon pod is for: its nodeName, or the node its affinity pins it to
/// (`GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| {
                    r.values
                        .as_ref()
                        .and_then(|v| (v.len() == 1).then(|| v[0].clone()))
                })
                .flatten()
        })
    })
}

/// The template of the pods for `ds`, with the default tolerations, the revision hash and the
/// template generation (`CreatePodTemplate`).
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    add_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    let labels = t
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    if let Some(g) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    if !hash.is_empty() {
        labels.insert(REVISION_HASH_LABEL.into(), hash.into());
    }
    t
}

/// `NodeShouldRunDaemonPod`: (shouldRun, shouldContinueRunning). A node must match the
/// template's nodeName, nodeSelector and required node affinity; an untolerated NoSchedule taint
/// keeps new pods off but lets running ones stay, an untolerated NoExecute taint evicts them.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return (false, false);
    };
    let name = node.metadata.name.as_deref().unwrap_or("");
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(sel) = &spec.node_selector {
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return (false, false);
        }
    }
    if let Some(req) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !NodeSelector::new(&req.node_selector_terms).matches(name, labels) {
            return (false, false);
        }
    }
    let mut pod_spec = spec.clone();
    add_daemon_tolerations(&mut pod_spec);
    let tolerations = pod_spec.tolerations.unwrap_or_default();
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if find_untolerated(&taints, &tolerations, &["NoSchedule", "NoExecute"]).is_some() {
        let evicted = find_untolerated(&taints, &tolerations, &["NoExecute"]).is_some();
        return (false, !evicted);
    }
    (true, true)
}

/// `IsPodUpdated`: the pod carries the current revision hash or the current template generation.
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let by_generation = generation
        .is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(g.to_string().as_str()));
    let by_hash = !hash.is_empty() && label(REVISION_HASH_LABEL) == Some(hash);
    by_generation || by_hash
}

/// Oldest first; among equal times a running pod before a pending one
/// (`podByCreationTimestampAndPhase`).
pub fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let running =
            |p: &Pod| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        t(a).cmp(&t(b))
            .then_with(|| running(b).cmp(&running(a)))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// What one node needs (`podsShouldBeOnNode`): whether a pod must be created there, and the
/// names of pods to delete (failed or succeeded pods, excess pods, pods on a node that must not
/// run them). With surge allowed, an old and a new pod may coexist while the new one is not
/// available yet and the old one is ready.
#[allow(clippy::too_many_arguments)]
pub fn node_needs(
    should_run: bool,
    should_continue: bool,
    pods: &[Arc<Pod>],
    hash: &str,
    allow_surge: bool,
    min_ready: i32,
    now: Timestamp,
) -> (bool, Vec<String>) {
    let name = |p: &Arc<Pod>| p.metadata.name.clone().unwrap_or_default();
    let mut delete = Vec::new();
    if !should_continue {
        delete.extend(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(name),
        );
        return (false, delete);
    }
    let mut running: Vec<Arc<Pod>> = Vec::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match phase(p) {
            // A finished daemon pod is replaced (upstream backs off failed ones per node).
            Some("Failed") | Some("Succeeded") => delete.push(name(p)),
            _ => running.push(p.clone()),
        }
    }
    if running.is_empty() {
        // A pod still being deleted keeps its node from getting a new one until it is gone.
        let terminating = pods.iter().any(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(phase(p), Some("Failed") | Some("Succeeded"))
        });
        return (should_run && !terminating, delete);
    }
    sort_oldest_first(&mut running);
    if !allow_surge {
        delete.extend(running.iter().skip(1).map(name));
        return (false, delete);
    }
    let (mut oldest_new, mut oldest_old) = (None, None);
    for p in &running {
        let is_new = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            .map(String::as_str)
            == Some(hash);
        let slot = if is_new {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(p.clone());
        } else {
            delete.push(name(p));
        }
    }
    if let (Some(new), Some(old)) = (&oldest_new, &oldest_old) {
        if !is_ready(old) || is_available(new, min_ready, now) {
            delete.push(name(old));
        }
    }
    (false, delete)
}

/// (maxSurge, maxUnavailable) for `desired` scheduled pods (`SurgeCount`, `UnavailableCount`,
/// both rounded up; both zero means one unavailable). Zero and zero for OnDelete.
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> Result<(i32, i32), String> {
    let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        != "RollingUpdate"
    {
        return Ok((0, 0));
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = match ru.and_then(|r| r.max_surge.as_ref()) {
        Some(v) => scaled_value(v, desired, true)?,
        None => 0,
    };
    let unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
        Some(v) => scaled_value(v, desired, true)?,
        None => 1,
    };
    Ok(if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    })
}

/// `findUpdatedPodsOnNode`: the node's (new, old) live pod; None when it has more than one of
/// either (the manage step cleans that up first).
#[allow(clippy::type_complexity)]
fn updated_and_old(
    pods: &[Arc<Pod>],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<Arc<Pod>>, Option<Arc<Pod>>)> {
    let (mut new, mut old) = (None, None);
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_pod_updated(p, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p.clone());
    }
    Some((new, old))
}

/// The rolling update's plan: pod names to delete and nodes to create a new pod on.
#[derive(Debug, Default, PartialEq)]
pub struct RollingPlan {
    pub delete: Vec<String>,
    pub create_on: Vec<String>,
}

/// Upstream's `rollingUpdate`. Without surge, old pods are deleted while fewer than
/// maxUnavailable nodes are unavailable (unavailable old pods are replaced at once) and the
/// manage step creates their replacements; with surge, new pods are created next to available
/// old ones (at most maxSurge at a time) and an old pod goes once its new one is available.
#[allow(clippy::too_many_arguments)]
pub fn rolling_plan(
    node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    generation: Option<i64>,
    max_surge: i32,
    max_unavailable: i32,
    min_ready: i32,
    now: Timestamp,
    should_run: impl Fn(&str) -> bool,
) -> RollingPlan {
    let name = |p: &Arc<Pod>| p.metadata.name.clone().unwrap_or_default();
    let available = |p: &Arc<Pod>| is_available(p, min_ready, now);
    let mut plan = RollingPlan::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in node_pods.values() {
            match updated_and_old(pods, hash, generation) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(&old) {
                        replace.push(name(&old));
                    } else if unavailable < max_unavailable {
                        candidates.push(name(&old));
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        plan.delete = replace;
        plan.delete.extend(candidates.into_iter().take(room));
        return plan;
    }
    let mut surged = 0;
    let mut allowed = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in node_pods {
        let Some((new, old)) = updated_and_old(pods, hash, generation) else {
            surged += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(&old) {
                    if should_run(node) {
                        allowed.push(node.clone());
                    } else {
                        plan.delete.push(name(&old));
                    }
                } else if surged < max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(&new) {
                    plan.delete.push(name(&old));
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = (max_surge - surged).max(0) as usize;
    plan.create_on = allowed;
    plan.create_on.extend(candidates.into_iter().take(room));
    plan
}

/// The DaemonSet status counts (`updateDaemonSetStatus`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub misscheduled: i32,
    pub ready: i32,
    pub available: i32,
    pub updated: i32,
}

/// Counts over the nodes (with their shouldRun) and each node's pods: the oldest pod of a node
/// stands for it.
pub fn counts<'a>(
    nodes: impl Iterator<Item = (&'a str, bool)>,
    node_pods: &BTreeMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    generation: Option<i64>,
    min_ready: i32,
    now: Timestamp,
) -> Counts {
    let mut c = Counts::default();
    for (node, should_run) in nodes {
        let pods = node_pods.get(node).filter(|p| !p.is_empty());
        if !should_run {
            if pods.is_some() {
                c.misscheduled += 1;
            }
            continue;
        }
        c.desired += 1;
        let Some(pods) = pods else { continue };
        c.current += 1;
        let mut pods = pods.clone();
        sort_oldest_first(&mut pods);
        let p = &pods[0];
        if is_ready(p) {
            c.ready += 1;
            if is_available(p, min_ready, now) {
                c.available += 1;
            }
        }
        if is_pod_updated(p, hash, generation) {
            c.updated += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
    };
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn ds(spec: PodSpec) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("ds".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = ds(PodSpec::default());
        assert_eq!(node_should_run(&node("a", &[], &[]), &plain), (true, true));
        // The default tolerations cover not-ready/unschedulable conditions.
        let n = node(
            "a",
            &[],
            &[
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
                ("node.kubernetes.io/not-ready", "NoExecute"),
            ],
        );
        assert_eq!(node_should_run(&n, &plain), (true, true));
        // An untolerated NoSchedule taint keeps new pods off, running ones stay.
        assert_eq!(
            node_should_run(&node("a", &[], &[("dedicated", "NoSchedule")]), &plain),
            (false, true)
        );
        assert_eq!(
            node_should_run(&node("a", &[], &[("dedicated", "NoExecute")]), &plain),
            (false, false)
        );
        let tolerant = ds(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            node_should_run(&node("a", &[], &[("dedicated", "NoExecute")]), &tolerant),
            (true, true)
        );
        let selective = ds(PodSpec {
            node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
            ..Default::default()
        });
        assert_eq!(
            node_should_run(&node("a", &[], &[]), &selective),
            (false, false)
        );
        assert_eq!(
            node_should_run(&node("a", &[("disk", "ssd")], &[]), &selective),
            (true, true)
        );
        let affine = ds(PodSpec {
            affinity: Some(pin_to_node(None, "b")),
            ..Default::default()
        });
        assert_eq!(
            node_should_run(&node("a", &[], &[]), &affine),
            (false, false)
        );
        assert_eq!(node_should_run(&node("b", &[], &[]), &affine), (true, true));
        // network-unavailable is tolerated by hostNetwork pods only.
        let taint = [(NETWORK_UNAVAILABLE, "NoSchedule")];
        assert_eq!(
            node_should_run(&node("a", &[], &taint), &plain),
            (false, true)
        );
        let host = ds(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(
            node_should_run(&node("a", &[], &taint), &host),
            (true, true)
        );
    }

    #[test]
    fn pods_are_pinned_to_their_node_and_labelled_with_the_revision() {
        let mut d = ds(PodSpec::default());
        let t = pod_template(&d, "abc");
        let labels = t.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[REVISION_HASH_LABEL], "abc");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "2");
        assert_eq!(t.spec.unwrap().tolerations.unwrap().len(), 6);
        let pod = Pod {
            spec: Some(PodSpec {
                affinity: Some(pin_to_node(None, "n1")),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        d.metadata.generation = Some(3);
        let mut p = Pod::default();
        p.metadata.labels = Some([(REVISION_HASH_LABEL.to_string(), "abc".to_string())].into());
        assert!(is_pod_updated(&p, "abc", Some(3)));
        assert!(!is_pod_updated(&p, "def", Some(3)));
    }

    fn pod(name: &str, hash: &str, ready: bool, created: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([(REVISION_HASH_LABEL.to_string(), hash.to_string())].into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(created).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn rolling_without_surge_deletes_up_to_max_unavailable_old_pods() {
        let now = Timestamp::from_second(1000).unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), vec![pod("a", "old", true, 1)]);
        nodes.insert("b".to_string(), vec![pod("b", "old", true, 1)]);
        nodes.insert("c".to_string(), vec![pod("c", "old", true, 1)]);
        let plan = rolling_plan(&nodes, "new", None, 0, 1, 0, now, |_| true);
        assert_eq!(plan.delete, ["a"]);
        assert!(plan.create_on.is_empty());
        // A new pod that is not ready yet uses up the budget.
        nodes.insert("a".to_string(), vec![pod("a2", "new", false, 5)]);
        let plan = rolling_plan(&nodes, "new", None, 0, 1, 0, now, |_| true);
        assert!(plan.delete.is_empty());
        // An unavailable old pod is replaced regardless of the budget.
        nodes.insert("c".to_string(), vec![pod("c", "old", false, 1)]);
        let plan = rolling_plan(&nodes, "new", None, 0, 1, 0, now, |_| true);
        assert_eq!(plan.delete, ["c"]);
        let plan = rolling_plan(&nodes, "new", None, 0, 2, 0, now, |_| true);
        assert_eq!(plan.delete, ["c", "b"]);
        // A node whose old pod is gone and whose new one is not created yet is unavailable.
        nodes.insert("a".to_string(), vec![]);
        nodes.insert("c".to_string(), vec![pod("c", "old", true, 1)]);
        let plan = rolling_plan(&nodes, "new", None, 0, 1, 0, now, |_| true);
        assert!(plan.delete.is_empty(), "{plan:?}");
    }

    #[test]
    fn rolling_with_surge_creates_beside_old_pods_and_deletes_them_once_new_ones_are_available() {
        let now = Timestamp::from_second(1000).unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), vec![pod("a", "old", true, 1)]);
        nodes.insert("b".to_string(), vec![pod("b", "old", true, 1)]);
        let plan = rolling_plan(&nodes, "new", None, 1, 0, 0, now, |_| true);
        assert_eq!(plan.create_on, ["a"]);
        nodes.insert(
            "a".to_string(),
            vec![pod("a", "old", true, 1), pod("a2", "new", false, 5)],
        );
        let plan = rolling_plan(&nodes, "new", None, 1, 0, 0, now, |_| true);
        assert_eq!(plan, RollingPlan::default());
        nodes.insert(
            "a".to_string(),
            vec![pod("a", "old", true, 1), pod("a2", "new", true, 5)],
        );
        let plan = rolling_plan(&nodes, "new", None, 1, 0, 0, now, |_| true);
        assert_eq!(
            (plan.delete, plan.create_on),
            (vec!["a".to_string()], vec!["b".to_string()])
        );
        // The manage step keeps both while the new pod is not available and the old one ready.
        let pods = vec![pod("a", "old", true, 1), pod("a2", "new", false, 5)];
        assert_eq!(
            node_needs(true, true, &pods, "new", true, 0, now),
            (false, vec![])
        );
        let pods = vec![pod("a", "old", true, 1), pod("a2", "new", true, 5)];
        assert_eq!(node_needs(true, true, &pods, "new", true, 0, now).1, ["a"]);
        // Without surge the younger of two pods goes.
        assert_eq!(
            node_needs(true, true, &pods, "new", false, 0, now).1,
            ["a2"]
        );
        assert_eq!(
            node_needs(true, true, &[], "new", false, 0, now),
            (true, vec![])
        );
        assert_eq!(
            node_needs(false, false, &pods, "new", false, 0, now).1,
            ["a", "a2"]
        );
    }

    #[test]
    fn fenceposts_round_up_and_default_to_one_unavailable() {
        let mut d = ds(PodSpec::default());
        d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDaemonSet {
                max_surge: Some(IntOrString::String("10%".into())),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        });
        assert_eq!(surge_and_unavailable(&d, 15), Ok((2, 0)));
        d.spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .rolling_update = Some(RollingUpdateDaemonSet {
            max_surge: Some(IntOrString::Int(0)),
            max_unavailable: Some(IntOrString::String("0%".into())),
        });
        assert_eq!(surge_and_unavailable(&d, 15), Ok((0, 1)));
    }

    #[test]
    fn status_counts_the_oldest_pod_per_node() {
        let now = Timestamp::from_second(1000).unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_string(), vec![pod("a", "new", true, 1)]);
        nodes.insert("b".to_string(), vec![pod("b", "old", false, 1)]);
        nodes.insert("x".to_string(), vec![pod("x", "old", true, 1)]);
        let c = counts(
            [("a", true), ("b", true), ("c", true), ("x", false)].into_iter(),
            &nodes,
            "new",
            None,
            0,
            now,
        );
        assert_eq!(
            c,
            Counts {
                desired: 3,
                current: 2,
                misscheduled: 1,
                ready: 1,
                available: 1,
                updated: 1
            }
        );
    }
}
