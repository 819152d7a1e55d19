//! The pods of a Job (upstream `job_controller.go` and `backoff_utils.go`): the pod a Job
//! creates (its template with the tracking finalizer, and for Indexed Jobs the completion index
//! in annotation, label, `JOB_COMPLETION_INDEX` env and hostname), when a pod counts as failed,
//! when it finished, and the exponential back-off before a failed pod is replaced.
//!
//! The back-off is computed from the Job's finished pods themselves (they stay until the Job is
//! deleted), not from an in-memory record, so it survives a controller restart: after `n`
//! failures since the last success, a new pod waits `base · 2^(n-1)` (at most `max`) after the
//! last failure.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;

use super::indexes::{COMPLETION_INDEX_ANNOTATION, COMPLETION_INDEX_ENV};
use crate::replicaset::pods::pod_from_template;

/// The finalizer that keeps a finished pod until the Job controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the Job replaces a pod only once it has failed (podReplacementPolicy `Failed`, the
/// default with a podFailurePolicy), not already while it terminates.
pub fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

/// Upstream's `isPodFailed`: phase Failed; or, unless only failed pods are replaced, a pod
/// deleted before it succeeded (an orphan that never reaches a terminal phase counts as failed).
pub fn is_failed(pod: &Pod, job: &Job) -> bool {
    match phase(pod) {
        "Failed" => true,
        "Succeeded" => false,
        _ => !only_replace_failed(job) && pod.metadata.deletion_timestamp.is_some(),
    }
}

/// When the pod finished (upstream's `getFinishedTime`): the last container termination, else
/// the Ready=False transition, else its deletion, else its creation.
pub fn finished_at(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let from_containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    let from_ready = || {
        status?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    };
    from_containers
        .or_else(from_ready)
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The pod-recreation back-off settings (upstream `DefaultJobPodFailureBackOff` = 10 s and
/// `MaxJobPodFailureBackOff` = 10 min).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// How long to wait before creating a pod again, given the (finish time, succeeded) of the
    /// finished pods that count (`getRemainingTime` over the Job's backoff record).
    pub fn remaining(&self, finished: &[(Timestamp, bool)], now: Timestamp) -> Duration {
        let last_success = finished.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).max();
        let failures: Vec<Timestamp> = finished
            .iter()
            .filter(|(t, ok)| !*ok && last_success.is_none_or(|s| *t >= s))
            .map(|(t, _)| *t)
            .collect();
        let Some(last_failure) = failures.iter().max().copied() else {
            return Duration::ZERO;
        };
        let exp = (failures.len() - 1).min(30) as u32;
        let backoff = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        let elapsed = now.duration_since(last_failure);
        let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
        backoff.saturating_sub(elapsed)
    }
}

/// The annotation with how many counted failures the pod's index had before it
/// (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";

/// The failures of the pod's index before it (`getIndexFailureCount`; 0 when absent).
pub fn index_failure_count(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The pod the Job creates, for `index` when it is Indexed; `failures` is the index's count of
/// earlier failures (backoffLimitPerIndex).
pub fn new_pod(job: &Job, owner: OwnerReference, index: Option<i32>, failures: Option<i32>) -> Pod {
    let name = job.metadata.name.as_deref().unwrap_or("");
    let ns = job.metadata.namespace.as_deref().unwrap_or("");
    let mut template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let parent = match index {
        Some(ix) => format!("{name}-{ix}"),
        None => name.to_string(),
    };
    if let Some(ix) = index {
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
        if let Some(n) = failures {
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(INDEX_FAILURE_COUNT_ANNOTATION.into(), n.to_string());
        }
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
        if let Some(spec) = template.spec.as_mut() {
            // The pod's hostname is `<job>-<index>` (upstream sets it for every Indexed pod; with a
            // subdomain it becomes resolvable through the headless service).
            spec.hostname = Some(format!("{name}-{ix}"));
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!(
                            "metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                        ),
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
        }
    }
    let meta = template.metadata.get_or_insert_with(Default::default);
    let fins = meta.finalizers.get_or_insert_with(Vec::new);
    if !fins.iter().any(|f| f == TRACKING_FINALIZER) {
        fins.push(TRACKING_FINALIZER.into());
    }
    pod_from_template(&template, ns, &parent, owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn backoff_doubles_per_failure_since_the_last_success() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(600),
        };
        assert_eq!(b.remaining(&[], at(100)), Duration::ZERO);
        assert_eq!(
            b.remaining(&[(at(100), false)], at(104)),
            Duration::from_secs(6)
        );
        // Three failures: 40 s after the last one.
        let three = [(at(10), false), (at(50), false), (at(100), false)];
        assert_eq!(b.remaining(&three, at(110)), Duration::from_secs(30));
        // A success resets the count.
        let reset = [(at(10), false), (at(50), true), (at(100), false)];
        assert_eq!(b.remaining(&reset, at(110)), Duration::ZERO);
        // Capped at max.
        let many: Vec<_> = (0..20).map(|i| (at(i), false)).collect();
        assert_eq!(b.remaining(&many, at(19)), Duration::from_secs(600));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let mut job = Job::default();
        job.metadata.name = Some("work".into());
        job.metadata.namespace = Some("ns".into());
        job.spec = Some(JobSpec {
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "c".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        });
        let owner = crate::replicaset::pods::controller_ref("batch/v1", "Job", &job.metadata);
        let pod = new_pod(&job, owner.clone(), Some(3), Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-3-"));
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[COMPLETION_INDEX_ANNOTATION], "3");
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX_ANNOTATION],
            "3"
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        assert!(has_tracking_finalizer(&pod));
        assert_eq!(index_failure_count(&pod), 2);
        let plain = new_pod(&job, owner, None, None);
        assert_eq!(plain.metadata.generate_name.as_deref(), Some("work-"));
        assert!(plain.metadata.annotations.is_none());
        assert!(has_tracking_finalizer(&plain));
    }
}
