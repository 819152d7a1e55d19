//! The disruption controller (upstream's pkg/controller/disruption): the status of every
//! PodDisruptionBudget — `expectedPods`, `currentHealthy`, `desiredHealthy`,
//! `disruptionsAllowed`, `observedGeneration`, the DisruptionAllowed condition — which the API
//! server's eviction subresource (and so `kubectl drain`) obeys.
//!
//! - `minAvailable` as a number: desiredHealthy is that number and the expected pods are the
//!   selected ones.
//! - `minAvailable` as a percentage, or `maxUnavailable`: the expected pods are the replicas
//!   of the pods' controllers, found through their controller owner references (a ReplicaSet
//!   owned by a Deployment counts as the Deployment) and read through the scale subresource;
//!   a pod without a controller makes the status fail safe (no disruptions, NoControllers
//!   event). Percentages round up, as upstream.
//! - A pod is healthy when it is Ready and not being deleted, and not in `disruptedPods` (pods
//!   the eviction subresource just evicted; entries expire after two minutes).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::endpoints::is_pod_ready;
use crate::ControllerContext;

/// Upstream's `DeletionTimeout`: how long an evicted pod counts as disrupted.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether `labels` match a label selector (matchLabels and matchExpressions). An empty
/// selector matches everything (policy/v1 semantics).
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k));
    for (k, v) in sel.match_labels.iter().flatten() {
        if get(k) != Some(v) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        let ok = match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// An int-or-percent against a total (upstream's `GetScaledValueFromIntOrPercent` with
/// rounding up).
pub fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"))?;
            Ok(((p * total as i64 + 99) / 100) as i32)
        }
    }
}

/// (expectedCount, desiredHealthy) from the spec, the number of selected pods and, when
/// needed, the controllers' replicas (`None`: not needed; `Err`: could not be found).
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pod_count: i32,
    controllers_scale: impl FnOnce() -> Result<i32, String>,
) -> Result<(i32, i32), String> {
    let spec = pdb.spec.clone().unwrap_or_default();
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = controllers_scale()?;
        let max = scaled(max_unavailable, expected)?;
        return Ok((expected, (expected - max).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pod_count, *n)),
        Some(p @ IntOrString::String(_)) => {
            let expected = controllers_scale()?;
            Ok((expected, scaled(p, expected)?))
        }
        None => Ok((pod_count, 0)),
    }
}

/// Runs the disruption controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<String> = WorkQueue::new("disruption");
    let pdbs = ctx.informers.informer::<PodDisruptionBudget>();
    let pods = ctx.informers.informer::<Pod>();
    let (q1, q2) = (queue.clone(), queue.clone());
    pdbs.add_handler(HandlerFns {
        add: Some(Box::new(move |p: &Arc<PodDisruptionBudget>| {
            q1.add(key_of(p.as_ref()))
        })),
        update: Some(Box::new(move |_, p: &Arc<PodDisruptionBudget>| {
            q2.add(key_of(p.as_ref()))
        })),
        delete: None,
    });
    let enqueue = {
        let (pdbs, queue) = (pdbs.clone(), queue.clone());
        move |pod: &Pod| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            for pdb in pdbs.list_namespace(ns) {
                let sel = pdb
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default();
                if selector_matches(&sel, pod.metadata.labels.as_ref()) {
                    queue.add(key_of(pdb.as_ref()));
                }
            }
        }
    };
    let (e1, e2, e3) = (enqueue.clone(), enqueue.clone(), enqueue);
    pods.add_handler(HandlerFns {
        add: Some(Box::new(move |p: &Arc<Pod>| e1(p))),
        update: Some(Box::new(move |old: &Arc<Pod>, new: &Arc<Pod>| {
            e2(new);
            if old.metadata.labels != new.metadata.labels {
                e2(old);
            }
        })),
        delete: Some(Box::new(move |p: &Arc<Pod>| e3(p))),
    });
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let state = Arc::new(State {
        client: ctx.client.clone(),
        pdbs,
        pods,
        queue: queue.clone(),
        recorder: ctx.recorder("controllermanager"),
    });
    run_workers(queue, 5, move |key: String| {
        let state = state.clone();
        async move { state.sync(&key).await }
    })
    .await;
    Ok(())
}

struct State {
    client: kube::Client,
    pdbs: Informer<PodDisruptionBudget>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    recorder: machinery::events::EventRecorder,
}

impl State {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = split_key(key);
        let Some(pdb) = self.pdbs.get(ns, name) else {
            return Ok(());
        };
        let sel = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let pods = self.pods.list_filtered(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && selector_matches(&sel, p.metadata.labels.as_ref())
        });
        if pods.is_empty() {
            self.recorder
                .normal(pdb.as_ref(), "NoPods", "No matching pods found".into());
        }
        let scale = self.controllers_scale(ns, &pods).await;
        let result = expected_and_desired(&pdb, pods.len() as i32, || scale.clone());
        let now = k8s_openapi::jiff::Timestamp::now();
        let status = match result {
            Ok((expected, desired)) => {
                let (healthy, disrupted, next_expiry) = count_healthy(&pdb, &pods, now);
                if let Some(after) = next_expiry {
                    self.queue.add_after(key.to_string(), after);
                }
                build_status(&pdb, expected, desired, healthy, disrupted, None)
            }
            Err(e) => {
                if e.starts_with("found no controllers") {
                    self.recorder
                        .warning(pdb.as_ref(), "NoControllers", e.clone());
                } else {
                    self.recorder.warning(
                        pdb.as_ref(),
                        "CalculateExpectedPodCountFailed",
                        format!("Failed to calculate the number of expected pods: {e}"),
                    );
                }
                // Fail safe: no disruptions.
                let cur = pdb.status.clone().unwrap_or_default();
                build_status(
                    &pdb,
                    cur.expected_pods,
                    cur.desired_healthy,
                    cur.current_healthy,
                    cur.disrupted_pods.clone().unwrap_or_default(),
                    Some(e),
                )
            }
        };
        if same_status(pdb.status.as_ref(), &status) {
            return Ok(());
        }
        let mut new = (*pdb).clone();
        new.status = Some(status);
        match Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ns)
            .replace_status(name, &PostParams::default(), &new)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The summed replicas of the pods' controllers (upstream's finders).
    async fn controllers_scale(&self, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut total = 0;
        for pod in pods {
            let Some(owner) = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
            else {
                return Err(format!(
                    "found no controllers for pod {:?}",
                    pod.metadata.name.as_deref().unwrap_or_default()
                ));
            };
            let (mut kind, mut name, mut uid) =
                (owner.kind.clone(), owner.name.clone(), owner.uid.clone());
            if kind == "ReplicaSet" {
                // A Deployment's ReplicaSet counts as the Deployment.
                let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(d) = rs.as_ref().and_then(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                        .cloned()
                }) {
                    (kind, name, uid) = (d.kind, d.name, d.uid);
                }
            }
            if !seen.insert(uid) {
                continue;
            }
            let c = self.client.clone();
            let scale = match kind.as_str() {
                "Deployment" => Api::<Deployment>::namespaced(c, ns).get_scale(&name).await,
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(c, ns).get_scale(&name).await,
                "StatefulSet" => Api::<StatefulSet>::namespaced(c, ns).get_scale(&name).await,
                "ReplicationController" => {
                    Api::<ReplicationController>::namespaced(c, ns)
                        .get_scale(&name)
                        .await
                }
                other => {
                    return Err(format!(
                        "found no controllers for pod {:?} (unsupported controller kind {other})",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ))
                }
            }
            .map_err(|e| e.to_string())?;
            total += scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        }
        Ok(total)
    }
}

/// (currentHealthy, the disruptedPods still pending, when the next entry expires).
pub fn count_healthy(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    now: k8s_openapi::jiff::Timestamp,
) -> (i32, BTreeMap<String, Time>, Option<Duration>) {
    let disrupted = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut next: Option<Duration> = None;
    let mut healthy = 0;
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(t) = disrupted.get(&name) {
            let age = now.duration_since(t.0);
            let timeout =
                k8s_openapi::jiff::SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
            if age < timeout {
                kept.insert(name, t.clone());
                let left = Duration::try_from(timeout - age).unwrap_or_default();
                next = Some(next.map_or(left, |n| n.min(left)));
                continue;
            }
        }
        if is_pod_ready(pod) {
            healthy += 1;
        }
    }
    (healthy, kept, next)
}

fn build_status(
    pdb: &PodDisruptionBudget,
    expected: i32,
    desired: i32,
    healthy: i32,
    disrupted: BTreeMap<String, Time>,
    error: Option<String>,
) -> PodDisruptionBudgetStatus {
    let allowed = if error.is_some() {
        0
    } else {
        (healthy - desired).max(0)
    };
    let (status, reason, message) = match (&error, allowed > 0) {
        (Some(e), _) => ("False", "SyncFailed", e.clone()),
        (None, true) => ("True", "SufficientPods", String::new()),
        (None, false) => ("False", "InsufficientPods", String::new()),
    };
    let generation = pdb.metadata.generation.unwrap_or(0);
    let old = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let transition = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: Some(generation),
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        conditions: Some(vec![Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: Some(generation),
            last_transition_time: transition,
        }]),
    }
}

fn same_status(old: Option<&PodDisruptionBudgetStatus>, new: &PodDisruptionBudgetStatus) -> bool {
    let Some(old) = old else { return false };
    old == new
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;

    fn pdb(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pdb_arithmetic_int_and_percent() {
        let ten = || Ok(10);
        assert_eq!(
            expected_and_desired(&pdb(Some(IntOrString::Int(2)), None), 3, ten),
            Ok((3, 2))
        );
        assert_eq!(
            expected_and_desired(&pdb(Some(IntOrString::String("25%".into())), None), 3, ten),
            Ok((10, 3)),
            "25% of 10 rounds up to 3"
        );
        assert_eq!(
            expected_and_desired(&pdb(None, Some(IntOrString::Int(1))), 3, ten),
            Ok((10, 9))
        );
        assert_eq!(
            expected_and_desired(&pdb(None, Some(IntOrString::String("15%".into()))), 3, ten),
            Ok((10, 8)),
            "15% of 10 rounds up to 2 unavailable"
        );
        assert!(
            expected_and_desired(&pdb(None, Some(IntOrString::Int(1))), 3, || Err(
                "found no controllers".into()
            ))
            .is_err()
        );
        assert!(scaled(&IntOrString::String("x".into()), 10).is_err());
        let status = build_status(
            &pdb(Some(IntOrString::Int(2)), None),
            3,
            2,
            3,
            BTreeMap::new(),
            None,
        );
        assert_eq!(status.disruptions_allowed, 1);
        assert_eq!(
            status.conditions.as_ref().unwrap()[0].reason,
            "SufficientPods"
        );
        let status = build_status(
            &pdb(Some(IntOrString::Int(2)), None),
            3,
            2,
            2,
            BTreeMap::new(),
            None,
        );
        assert_eq!(status.disruptions_allowed, 0);
        assert_eq!(
            status.conditions.as_ref().unwrap()[0].reason,
            "InsufficientPods"
        );
    }

    #[test]
    fn disrupted_pods_do_not_count_until_they_expire() {
        let mut p = crate::endpoints::tests::pod("a", "10.0.0.1", true);
        p.metadata.name = Some("a".into());
        let pods = vec![
            Arc::new(p),
            Arc::new(crate::endpoints::tests::pod("b", "10.0.0.2", true)),
        ];
        let mut b = pdb(Some(IntOrString::Int(1)), None);
        let now = k8s_openapi::jiff::Timestamp::now();
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([("a".to_string(), Time(now))])),
            ..Default::default()
        });
        let (healthy, kept, next) = count_healthy(&b, &pods, now);
        assert_eq!((healthy, kept.len()), (1, 1));
        assert!(next.unwrap() <= DELETION_TIMEOUT);
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(121);
        let (healthy, kept, next) = count_healthy(&b, &pods, later);
        assert_eq!((healthy, kept.len(), next), (2, 0, None));
    }
}
