//! Which pods a replica set deletes first when it scales down: upstream's `ActivePodsWithRanks`
//! order (with `LogarithmicScaleDown`, on by default) and `getPodsToDelete`.
//!
//! Deleted first: unassigned before assigned; Pending before Unknown before Running; not ready
//! before ready; lower `controller.kubernetes.io/pod-deletion-cost`; more related pods on the same
//! node (so scale-down spreads); ready more recently (in log2 buckets of the time since); more
//! container restarts; created more recently (log2 buckets). Ties within a bucket go by UID.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

use super::pods::{is_active, is_ready, max_restarts, ready_since};

/// The annotation that lets users choose which pods go first (`PodDeletionCost`).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None | Some("") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// `logarithmicRankDiff`: the difference of the log2 buckets of `now - t`.
fn log_rank_diff(t1: Timestamp, t2: Timestamp, now: Timestamp) -> i64 {
    fn bucket(t: Timestamp, now: Timestamp) -> i64 {
        let d = now.as_nanosecond() - t.as_nanosecond();
        if d > 0 {
            (d as f64).log2() as i64
        } else {
            -1
        }
    }
    bucket(t1, now) - bucket(t2, now)
}

/// Newer first (ordering "less" = deleted first), with the logarithmic buckets; equal buckets go
/// by UID. `None` when the times are equal.
fn newer_first(
    a: Option<Timestamp>,
    b: Option<Timestamp>,
    pa: &Pod,
    pb: &Pod,
    now: Timestamp,
) -> Option<Ordering> {
    if a == b {
        return None;
    }
    match (a, b) {
        (None, _) => Some(Ordering::Less),
        (_, None) => Some(Ordering::Greater),
        (Some(a), Some(b)) => {
            let diff = log_rank_diff(a, b, now);
            Some(if diff == 0 {
                uid(pa).cmp(uid(pb))
            } else if diff < 0 {
                Ordering::Less
            } else {
                Ordering::Greater
            })
        }
    }
}

/// Compares two pods for deletion: `Less` means `a` goes first. `rank_*` is the number of related
/// active pods on each pod's node.
pub fn compare(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> Ordering {
    // 1. Unassigned < assigned.
    let (na, nb) = (node_name(a).is_empty(), node_name(b).is_empty());
    if na != nb {
        return if na {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending < Unknown < Running.
    let o = phase_rank(a).cmp(&phase_rank(b));
    if o != Ordering::Equal {
        return o;
    }
    // 3. Not ready < ready.
    let (ra, rb) = (is_ready(a), is_ready(b));
    if ra != rb {
        return if ra {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    // 4. Lower deletion cost first.
    let o = deletion_cost(a).cmp(&deletion_cost(b));
    if o != Ordering::Equal {
        return o;
    }
    // 5. More co-located related pods first.
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    // 6. Ready more recently first.
    if ra && rb {
        if let Some(o) = newer_first(ready_since(a), ready_since(b), a, b, now) {
            return o;
        }
    }
    // 7. More restarts first.
    let o = max_restarts(b).cmp(&max_restarts(a));
    if o != Ordering::Equal {
        return o;
    }
    // 8. Created more recently first.
    let ca = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let cb = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
    newer_first(ca, cb, a, b, now).unwrap_or(Ordering::Equal)
}

/// `getPodsToDelete`: the `diff` pods of `pods` to delete first, ranking by related pods (all
/// active pods of the same owner, e.g. every replica set of one deployment) on the same node.
pub fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    diff: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    let mut pods = pods.to_vec();
    if diff < pods.len() {
        let mut on_node: HashMap<&str, usize> = HashMap::new();
        for p in related.iter().filter(|p| is_active(p)) {
            let n = node_name(p);
            if !n.is_empty() {
                *on_node.entry(n).or_default() += 1;
            }
        }
        let mut ranked: Vec<(usize, Arc<Pod>)> = pods
            .iter()
            .map(|p| (on_node.get(node_name(p)).copied().unwrap_or(0), p.clone()))
            .collect();
        ranked.sort_by(|(ra, a), (rb, b)| compare(a, *ra, b, *rb, now));
        pods = ranked.into_iter().map(|(_, p)| p).collect();
    }
    pods.truncate(diff);
    pods
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.metadata.creation_timestamp = Some(Time(ts(created)));
        p.spec = Some(PodSpec {
            node_name: (!node.is_empty()).then(|| node.to_string()),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(ts(t))),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect()
    }

    #[test]
    fn unassigned_pending_and_unready_pods_go_first() {
        let now = ts(100_000);
        let pods = vec![
            pod("running-ready", "n1", "Running", Some(1000), 10),
            pod("unassigned", "", "Pending", None, 10),
            pod("running-unready", "n1", "Running", None, 10),
            pod("pending", "n1", "Pending", None, 10),
            pod("unknown", "n1", "Unknown", None, 10),
        ];
        let order = pods_to_delete(&pods, &pods, 4, now);
        assert_eq!(
            names(&order),
            ["unassigned", "pending", "unknown", "running-unready"]
        );
    }

    #[test]
    fn co_located_then_recently_ready_then_restarts_then_newest() {
        let now = ts(1_000_000);
        let a = pod("a", "crowded", "Running", Some(1000), 10);
        let b = pod("b", "alone", "Running", Some(1000), 10);
        let c = pod("c", "crowded", "Running", Some(1000), 10);
        let related = vec![a.clone(), b.clone(), c.clone()];
        let first = pods_to_delete(&[b.clone(), a.clone()], &related, 1, now);
        assert_eq!(
            names(&first),
            ["a"],
            "the pod on the node with more related pods"
        );
        // Same node: ready 10 s ago beats ready ~11 days ago.
        let old = pod("old", "n", "Running", Some(1000), 10);
        let fresh = pod("fresh", "n", "Running", Some(999_990), 10);
        assert_eq!(compare(&fresh, 0, &old, 0, now), Ordering::Less);
        // Same bucket of ready time: more restarts first is not reached (UID decides), so
        // compare restarts with equal ready times.
        let mut restarted = (*pod("r", "n", "Running", Some(1000), 10)).clone();
        restarted.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: 3,
            ..Default::default()
        }]);
        assert_eq!(compare(&restarted, 0, &old, 0, now), Ordering::Less);
        // Equal otherwise: created later goes first.
        let newer = pod("newer", "n", "Running", Some(1000), 999_000);
        assert_eq!(compare(&newer, 0, &old, 0, now), Ordering::Less);
        // Lower deletion cost first, before anything about time.
        let mut cheap = (*pod("cheap", "n", "Running", Some(1000), 10)).clone();
        cheap.metadata.annotations =
            Some([(POD_DELETION_COST.to_string(), "-5".to_string())].into());
        assert_eq!(compare(&cheap, 0, &fresh, 5, now), Ordering::Less);
    }
}
