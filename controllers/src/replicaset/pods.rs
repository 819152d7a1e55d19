//! Pod helpers the workload controllers share (upstream `pkg/controller/controller_utils.go` and
//! `pkg/api/v1/pod`): which pods count as active, ready and available, the controller owner
//! reference, a pod made from a template, and the slow-start batches pods are created in.

use std::future::Future;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

/// A pod that is neither finished nor being deleted (`IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase != Some("Succeeded")
        && phase != Some("Failed")
        && pod.metadata.deletion_timestamp.is_none()
}

/// The pod's Ready condition (`GetPodReadyCondition`).
fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// `IsPodReady`: the Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod became ready (None when not ready or unknown).
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let c = ready_condition(pod)?;
    if c.status != "True" {
        return None;
    }
    c.last_transition_time.as_ref().map(|t| t.0)
}

/// `IsPodAvailable`: ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match ready_since(pod) {
        Some(t) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
        None => false,
    }
}

/// The highest restart count of the pod's containers.
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

/// The owner reference with `controller: true` (`metav1.GetControllerOf`).
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The controller owner reference a controller puts on what it creates
/// (`metav1.NewControllerRef`: controller and blockOwnerDeletion set).
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from a controller's template (`GetPodFromTemplate`): the template's labels,
/// annotations, finalizers and spec, named `<parent>-<random>` through generateName.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    parent_name: &str,
    owner: OwnerReference,
) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            generate_name: Some(format!("{parent_name}-")),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream's first slow-start batch (`SlowStartInitialBatchSize`).
pub const SLOW_START_INITIAL_BATCH: usize = 1;

/// Upstream's `slowStartBatch`: calls `f` `count` times in batches of 1, 2, 4, … run
/// concurrently, stopping after the first batch with a failure. Returns the successes and the
/// first error.
pub async fn slow_start_batch<F, Fut, E>(count: usize, initial: usize, f: F) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = futures::future::join_all((0..batch).map(|_| f())).await;
        let mut first_err = None;
        for r in results {
            match r {
                Ok(()) => successes += 1,
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if first_err.is_some() {
            return (successes, first_err);
        }
        remaining -= batch;
        batch = (2 * batch).min(remaining);
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn batches_double_and_stop_after_a_failing_batch() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let (ok, err) = slow_start_batch(10, 1, || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<(), ()>(())
            }
        })
        .await;
        assert_eq!((ok, err), (10, None));
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        // Batches 1, 2, 4: the 5th call fails, so the batch of 4 (calls 4..=7) ends the run.
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let (ok, err) = slow_start_batch(20, 1, || {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 4 {
                    Err("quota")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!((ok, err), (6, Some("quota")));
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
