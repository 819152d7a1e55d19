//! Which pods a replica set deletes first when it scales down: upstream's `ActivePodsWithRanks`
//! order (with `LogarithmicScaleDown`, on by default) and `getPodsToDelete`.
//!
//! Deleted first: unassigned before assigned; Pending before Unknown before Running; not ready
//! before ready; lower `controller.kubernetes.io/pod-deletion-cost`; more related pods on the same
//! node (so scale-down spreads); ready more recently (in log2 buckets of the time since); more
//! container restarts; created more recently (log2 buckets); then by UID.

use std::cmp::{Ordering, Reverse};
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

/// The log2 bucket of the time from `t` to `now` (upstream's `logarithmicRankDiff` compares
/// these); -1 for a time not before `now`, -2 for no time at all (which goes first).
fn log_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else { return -2 };
    let d = now.as_nanosecond() - t.as_nanosecond();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

/// What a pod is ranked by, smallest deleted first. A key (rather than upstream's pairwise
/// `Less`) makes the order total, which sorting needs; the one difference to upstream is that
/// two pods whose ready (or creation) times differ within one log2 bucket are further compared by
/// restarts and creation time before their UIDs, where upstream goes to the UIDs at once.
type RankKey = (
    bool,
    u8,
    bool,
    i32,
    Reverse<usize>,
    i64,
    Reverse<i32>,
    i64,
    String,
);

fn rank_key(p: &Pod, rank: usize, now: Timestamp) -> RankKey {
    let ready = is_ready(p);
    (
        // 1. Unassigned < assigned.
        !node_name(p).is_empty(),
        // 2. Pending < Unknown < Running.
        phase_rank(p),
        // 3. Not ready < ready.
        ready,
        // 4. Lower deletion cost first.
        deletion_cost(p),
        // 5. More co-located related pods first.
        Reverse(rank),
        // 6. Ready more recently first (only between ready pods).
        if ready {
            log_bucket(ready_since(p), now)
        } else {
            0
        },
        // 7. More restarts first.
        Reverse(max_restarts(p)),
        // 8. Created more recently first.
        log_bucket(p.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        uid(p).to_string(),
    )
}

/// Compares two pods for deletion: `Less` means `a` goes first. `rank_*` is the number of related
/// active pods on each pod's node.
pub fn compare(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> Ordering {
    rank_key(a, rank_a, now).cmp(&rank_key(b, rank_b, now))
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
        pods.sort_by_cached_key(|p| {
            rank_key(p, on_node.get(node_name(p)).copied().unwrap_or(0), now)
        });
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
        // Equal ready times: more restarts first.
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

    #[test]
    fn ranking_many_pods_is_a_total_order() {
        // Upstream's pairwise order is not transitive across log2 buckets; ours must sort
        // without panicking and agree with itself.
        let now = ts(10_000_000);
        let pods: Vec<Arc<Pod>> = (0..300)
            .map(|i: i64| {
                let ready = (i % 3 != 0).then_some(10_000_000 - (i * 7919) % 9_000_000);
                let node = if i % 5 == 0 { "" } else { "n" };
                pod(
                    &format!("p{i}"),
                    node,
                    "Running",
                    ready,
                    10_000_000 - (i * 104_729) % 9_999_000,
                )
            })
            .collect();
        let first = pods_to_delete(&pods, &pods, 150, now);
        let again = pods_to_delete(&first, &pods, 150, now);
        assert_eq!(names(&first), names(&again));
        assert!(first[..60]
            .iter()
            .all(|p| node_name(p).is_empty() || !is_ready(p)));
    }
}
