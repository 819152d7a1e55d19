//! The TTL-after-finished controller (upstream `pkg/controller/ttlafterfinished`): deletes a
//! finished Job `ttlSecondsAfterFinished` after its Complete or Failed condition was set, with
//! foreground propagation so its pods go first.
//!
//! The expiry is computed from the cached Job and re-checked against a fresh read before the
//! delete (a TTL that was raised meanwhile wins), and the delete is guarded by the Job's UID, so a
//! new Job of the same name is never removed.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::replicaset::controller_ref::is_not_found;
use crate::ControllerContext;

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_ttl_after_finished_syncs;
    TtlAfterFinishedController::new(&ctx).run(workers).await
}

/// When a finished Job with a TTL expires: its finish time (the Complete/Failed condition's
/// transition) plus the TTL; `None` when it has no TTL or has not finished.
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = finished.last_transition_time.as_ref()?.0;
    Some(at + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(ttl)))
}

#[derive(Clone)]
pub struct TtlAfterFinishedController {
    client: kube::Client,
    jobs: Informer<Job>,
    queue: WorkQueue<String>,
}

impl TtlAfterFinishedController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let c = TtlAfterFinishedController {
            client: ctx.client.clone(),
            jobs: ctx.informers.informer::<Job>(),
            queue: WorkQueue::new("ttl_jobs_to_delete"),
        };
        let (q1, q2) = (c.queue.clone(), c.queue.clone());
        let wanted = |j: &Job| j.metadata.deletion_timestamp.is_none() && expires_at(j).is_some();
        c.jobs.add_handler(HandlerFns::<Job> {
            add: Some(Box::new(move |j| {
                if wanted(j) {
                    q1.add(key_of(j.as_ref()))
                }
            })),
            update: Some(Box::new(move |_, j| {
                if wanted(j) {
                    q2.add(key_of(j.as_ref()))
                }
            })),
            delete: None,
        });
        c
    }

    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.jobs.wait_synced().await;
        tracing::info!("ttl-after-finished controller: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    /// Deletes the Job once its TTL has passed, or looks again then (upstream's `processJob`).
    pub async fn sync(&self, key: &str) -> Result<(), kube::Error> {
        let Some(job) = self.jobs.get_by_key(key) else {
            return Ok(());
        };
        let Some(at) = expires_at(&job).filter(|_| job.metadata.deletion_timestamp.is_none())
        else {
            return Ok(());
        };
        let now = Timestamp::now();
        if at > now {
            let left = Duration::try_from(at.duration_since(now)).unwrap_or_default();
            self.queue
                .add_after(key.to_string(), left + Duration::from_millis(10));
            return Ok(());
        }
        let (ns, name) = split_key(key);
        let api = Api::<Job>::namespaced(self.client.clone(), ns);
        // The TTL may have been changed since the cache saw the Job.
        let Some(fresh) = api.get_opt(name).await? else {
            return Ok(());
        };
        match expires_at(&fresh) {
            Some(at) if at <= Timestamp::now() && fresh.metadata.deletion_timestamp.is_none() => {}
            Some(_) => {
                self.queue.add(key.to_string());
                return Ok(());
            }
            None => return Ok(()),
        }
        tracing::info!("{key}: finished job expired after ttlSecondsAfterFinished, deleting");
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: fresh.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobSpec, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_job_expires_ttl_seconds_after_its_finish() {
        let mut job = Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(expires_at(&job), None);
        job.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Complete".into(),
                status: "True".into(),
                last_transition_time: Some(Time(Timestamp::from_second(100).unwrap())),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(expires_at(&job), Some(Timestamp::from_second(130).unwrap()));
        job.spec.as_mut().unwrap().ttl_seconds_after_finished = None;
        assert_eq!(expires_at(&job), None);
    }
}
