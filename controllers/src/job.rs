//! The Job controller (upstream `pkg/controller/job`): runs a Job's pods to completion.
//!
//! A sync of one Job claims its pods, then in this order (upstream's `syncJob`):
//! 1. decides whether the Job is failing — a `FailJob` rule of the [`failure_policy`], more
//!    counted failures than `backoffLimit`, or `activeDeadlineSeconds` passed — or, after
//!    managing pods, succeeding (completions reached). Either is first written as the interim
//!    condition (`FailureTarget`, `SuccessCriteriaMet`); the terminal `Failed`/`Complete` follows
//!    once no pod of the Job is still terminating, as 1.33 does;
//! 2. manages pods while the Job runs: creates up to `parallelism` (never more than the
//!    completions left; for Indexed Jobs the lowest pending indexes), after the exponential
//!    [`pods::Backoff`] that follows failures, deletes surplus ones, and deletes every active pod
//!    of a suspended, failing or succeeded Job;
//! 3. tracks finished pods with the `batch.kubernetes.io/job-tracking` finalizer every pod is
//!    created with: a finished pod is first recorded in `status.uncountedTerminatedPods` (or, for
//!    Indexed Jobs, in `completedIndexes`), the status written, and only then its finalizer
//!    removed; a recorded pod whose finalizer is gone moves into the `succeeded`/`failed`
//!    counters. Every status write carries the resourceVersion it was computed from, so a
//!    controller killed at any point, or one acting on a stale cache, never counts a pod twice or
//!    loses one.
//!
//! Pods whose Job is gone (or finished, or being deleted) lose the finalizer without being
//! counted (upstream's orphan pod sync).

pub mod failure_policy;
pub mod indexes;
pub mod pods;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;
use serde_json::json;

use crate::expectations::UidTrackingExpectations;
use crate::replicaset::controller_ref::{is_not_found, ClaimError, RefManager};
use crate::replicaset::pods::{controller_of, controller_ref, is_ready, slow_start_batch};
use crate::replicaset::selector::Selector;
use crate::replicaset::BURST_REPLICAS;
use crate::ControllerContext;
use failure_policy::Action;
use pods::{has_tracking_finalizer, is_failed, is_terminal, phase, Backoff, TRACKING_FINALIZER};

const KIND: &str = "Job";
const API_VERSION: &str = "batch/v1";
const COMPONENT: &str = "job-controller";
/// Finalizer removals sent at once.
const FINALIZER_REMOVALS_IN_FLIGHT: usize = 64;

/// Condition types and reasons (batch/v1).
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_job_syncs;
    JobController::new(&ctx).run(workers).await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("{0}")]
    Manage(String),
    #[error("removing the tracking finalizer of pod {pod}: {source}")]
    Finalizer {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating status of job {key}: {source}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

/// Pods (by UID) whose finalizer removal the controller has sent but not yet seen, per Job:
/// upstream's `finalizerExpectations`. Such a pod is never recorded again, even when the pod
/// cache still shows the finalizer.
#[derive(Debug, Default)]
struct FinalizerExpectations(Mutex<HashMap<String, HashSet<String>>>);

impl FinalizerExpectations {
    fn expect(&self, key: &str, uids: impl IntoIterator<Item = String>) {
        self.0
            .lock()
            .entry(key.to_string())
            .or_default()
            .extend(uids);
    }
    fn observed(&self, key: &str, uid: &str) {
        let mut m = self.0.lock();
        if let Some(s) = m.get_mut(key) {
            s.remove(uid);
            if s.is_empty() {
                m.remove(key);
            }
        }
    }
    fn get(&self, key: &str) -> HashSet<String> {
        self.0.lock().get(key).cloned().unwrap_or_default()
    }
    fn delete(&self, key: &str) {
        self.0.lock().remove(key);
    }
}

/// How the Job ends, once decided.
#[derive(Debug, Clone, PartialEq)]
enum Finish {
    Complete,
    Failed { reason: String, message: String },
}

/// The Job controller.
#[derive(Clone)]
pub struct JobController {
    client: kube::Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    /// Pods (by key) that may carry the tracking finalizer of a Job that no longer needs it.
    orphans: WorkQueue<String>,
    expectations: Arc<UidTrackingExpectations>,
    finalizers: Arc<FinalizerExpectations>,
    recorder: EventRecorder,
    backoff: Backoff,
    batch_period: Duration,
    /// The resourceVersion of each Job's last status write: a sync waits until the cache shows
    /// it, instead of computing from an older status and failing its write on a conflict.
    written: Arc<Mutex<HashMap<String, u64>>>,
}

fn uid(p: &Pod) -> &str {
    p.metadata.uid.as_deref().unwrap_or("")
}

fn condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// Whether the Job has its terminal condition (`IsJobFinished`).
pub fn is_finished(job: &Job) -> bool {
    condition(job, COMPLETE).is_some() || condition(job, FAILED).is_some()
}

/// Upstream's `ensureJobConditionStatus`: sets `type_` to `status` (adding it only when True);
/// returns whether anything changed.
fn ensure_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status {
            return false;
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_transition_time = Some(Time(now));
        c.last_probe_time = Some(Time(now));
        return true;
    }
    if status != "True" {
        return false;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(Time(now)),
        last_probe_time: Some(Time(now)),
    });
    true
}

impl JobController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let o = &ctx.options;
        let jc = JobController {
            client: ctx.client.clone(),
            jobs: ctx.informers.informer::<Job>(),
            pods: ctx.informers.informer::<Pod>(),
            queue: WorkQueue::new(KIND),
            orphans: WorkQueue::new("job-orphan-pod"),
            expectations: Arc::new(UidTrackingExpectations::new()),
            finalizers: Arc::default(),
            recorder: ctx.recorder(COMPONENT),
            backoff: Backoff {
                base: o.job_pod_failure_backoff,
                max: o.job_pod_failure_max_backoff,
            },
            batch_period: o.job_sync_batch_period,
            written: Arc::default(),
        };
        jc.register();
        jc
    }

    fn register(&self) {
        let (q1, q2) = (self.queue.clone(), self.queue.clone());
        let this = self.clone();
        self.jobs.add_handler(HandlerFns::<Job> {
            add: Some(Box::new(move |j| q1.add(key_of(j.as_ref())))),
            update: Some(Box::new(move |_, j| q2.add(key_of(j.as_ref())))),
            delete: Some(Box::new(move |j| this.delete_job(j))),
        });
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.pods.add_handler(HandlerFns::<Pod> {
            add: Some(Box::new(move |p| a.pod_event(None, p, false))),
            update: Some(Box::new(move |o, n| u.pod_event(Some(o), n, false))),
            delete: Some(Box::new(move |p| d.pod_event(None, p, true))),
        });
    }

    /// The Job `pod`'s controller reference names, if it still exists with that UID.
    fn resolve(&self, pod: &Pod) -> Option<Arc<Job>> {
        let r = controller_of(&pod.metadata)?;
        if r.kind != KIND {
            return None;
        }
        let job = self
            .jobs
            .get(pod.metadata.namespace.as_deref().unwrap_or(""), &r.name)?;
        (job.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(job)
    }

    fn pod_event(&self, old: Option<&Arc<Pod>>, pod: &Arc<Pod>, deleted: bool) {
        let Some(job) = self.resolve(pod) else {
            if has_tracking_finalizer(pod) && !deleted {
                self.orphans.add(key_of(pod.as_ref()));
            }
            return;
        };
        let key = key_of(job.as_ref());
        match old {
            None if !deleted => self.expectations.creation_observed(&key),
            Some(_) if pod.metadata.deletion_timestamp.is_some() => {
                self.expectations
                    .deletion_observed(&key, &key_of(pod.as_ref()));
            }
            _ => {}
        }
        if deleted {
            self.expectations
                .deletion_observed(&key, &key_of(pod.as_ref()));
        }
        if deleted || !has_tracking_finalizer(pod) {
            self.finalizers.observed(&key, uid(pod));
        }
        // Updates are batched (upstream's syncJobBatchPeriod); creations and deletions are not
        // delayed beyond that either, so a burst of pod changes makes one sync.
        let unchanged = old.is_some_and(|o| o.status == pod.status && o.metadata == pod.metadata);
        if !unchanged {
            self.queue.add_after(key, self.batch_period);
        }
    }

    fn delete_job(&self, job: &Arc<Job>) {
        let key = key_of(job.as_ref());
        self.expectations.delete(&key);
        self.finalizers.delete(&key);
        let job_uid = job.metadata.uid.clone().unwrap_or_default();
        for p in self.pods.list_filtered(|p| {
            has_tracking_finalizer(p)
                && controller_of(&p.metadata).is_some_and(|r| r.uid == job_uid)
        }) {
            self.orphans.add(key_of(p.as_ref()));
        }
    }

    /// Runs the workers once the informers have synced.
    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.jobs.wait_synced().await;
        self.pods.wait_synced().await;
        tracing::info!("job controller: caches synced");
        let this = self.clone();
        let orphans = run_workers(self.orphans.clone(), 1, move |key: String| {
            let this = this.clone();
            async move { this.sync_orphan(&key).await }
        });
        let this = self.clone();
        let jobs = run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        });
        tokio::join!(orphans, jobs);
        Ok(())
    }

    /// Removes the tracking finalizer of a pod whose Job no longer counts it.
    async fn sync_orphan(&self, key: &str) -> Result<(), SyncError> {
        let Some(pod) = self.pods.get_by_key(key) else {
            return Ok(());
        };
        if !has_tracking_finalizer(&pod) {
            return Ok(());
        }
        if let Some(job) = self.resolve(&pod) {
            if !is_finished(&job) && job.metadata.deletion_timestamp.is_none() {
                return Ok(());
            }
        }
        self.remove_finalizer(&pod).await
    }

    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), SyncError> {
        if !has_tracking_finalizer(pod) {
            return Ok(());
        }
        // Upstream's removeTrackingFinalizerPatch: only our entry goes, whatever else the list
        // holds by now.
        let patch = json!({"metadata": {
            "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
        }});
        let name = pod.metadata.name.as_deref().unwrap_or("");
        let api = Api::<Pod>::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        );
        match api
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(SyncError::Finalizer {
                pod: name.into(),
                source,
            }),
        }
    }

    /// One sync of `key` (upstream's `syncJob`).
    pub async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(job) = self.jobs.get_by_key(key) else {
            self.expectations.delete(key);
            self.finalizers.delete(key);
            self.written.lock().remove(key);
            return Ok(());
        };
        let (ns, _) = split_key(key);
        let seen = job
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(seen), Some(&wrote)) = (seen, self.written.lock().get(key)) {
            if seen < wrote {
                self.queue
                    .add_after(key.to_string(), Duration::from_millis(20));
                return Ok(());
            }
        }
        let spec = job.spec.clone().unwrap_or_default();
        let selector = match Selector::from_label_selector(spec.selector.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{key}: invalid selector: {e}");
                return Ok(());
            }
        };
        let manager = RefManager::new(
            self.client.clone(),
            Api::<Job>::namespaced(self.client.clone(), ns),
            &job.metadata,
            API_VERSION,
            KIND,
            &selector,
        );
        let owned = manager.claim(self.pods.list_namespace(ns)).await?;
        if is_finished(&job) || job.metadata.deletion_timestamp.is_some() {
            // Nothing is counted any more: free whatever still carries the finalizer.
            for p in owned.iter().filter(|p| has_tracking_finalizer(p)) {
                self.remove_finalizer(p).await?;
            }
            return Ok(());
        }
        let now = Timestamp::now();
        let satisfied = self.expectations.satisfied(key);
        let expected_rm = self.finalizers.get(key);
        let tracked = |p: &Pod| has_tracking_finalizer(p) && !expected_rm.contains(uid(p));
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions;
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let suspended = spec.suspend == Some(true);
        let policy = spec.pod_failure_policy.as_ref();
        let old_status = job.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let uncounted = status.uncounted_terminated_pods.take().unwrap_or_default();
        let mut uncounted_s: Vec<String> = uncounted.succeeded.unwrap_or_default();
        let mut uncounted_f: Vec<String> = uncounted.failed.unwrap_or_default();
        let mut completed: BTreeSet<i32> = if indexed {
            indexes::parse(
                status.completed_indexes.as_deref(),
                completions.unwrap_or(0),
            )
        } else {
            BTreeSet::new()
        };
        let valid_index = |p: &Pod| {
            indexes::completion_index(p).filter(|ix| completions.is_some_and(|c| *ix < c))
        };
        let action_of = |p: &Pod| policy.and_then(|pol| failure_policy::match_pod(pol, p));
        // backoffLimitPerIndex: an index fails once a failed pod of it had used up the limit
        // (the count of earlier failures is in its annotation) or hit a FailIndex rule. Failed
        // indexes are recorded in status.failedIndexes before their pods' finalizers go, as
        // completed ones are.
        let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
        let mut failed_ix: BTreeSet<i32> = if per_index.is_some() {
            indexes::parse(status.failed_indexes.as_deref(), completions.unwrap_or(0))
        } else {
            BTreeSet::new()
        };
        if let Some(limit) = per_index {
            for p in owned.iter().filter(|p| tracked(p) && is_failed(p, &job)) {
                let action = action_of(p);
                let hit = matches!(action, Some(Action::FailIndex))
                    || (action.is_none_or(|a| a.counts()) && pods::index_failure_count(p) >= limit);
                if let Some(ix) = valid_index(p).filter(|_| hit) {
                    failed_ix.insert(ix);
                }
            }
        }

        // What the pods say: active, terminating, newly succeeded and newly failed.
        let mut active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let mut terminating = owned
            .iter()
            .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_some())
            .count() as i32;
        let mut fail_job: Option<String> = None;
        let mut new_failed = 0i32;
        for p in owned.iter().filter(|p| tracked(p) && is_failed(p, &job)) {
            if uncounted_f.iter().any(|u| u == uid(p)) {
                continue;
            }
            if suspended && phase(p) != "Failed" {
                continue;
            }
            match action_of(p) {
                Some(Action::FailJob(msg)) => {
                    fail_job.get_or_insert(msg);
                    new_failed += 1;
                }
                Some(Action::Ignore) => {}
                _ => new_failed += 1,
            }
        }
        let new_succeeded: Vec<&Arc<Pod>> = owned
            .iter()
            .filter(|p| {
                tracked(p) && phase(p) == "Succeeded" && !uncounted_f.iter().any(|u| u == uid(p))
            })
            .collect();
        let succeeded_total = if indexed {
            let mut all = completed.clone();
            all.extend(new_succeeded.iter().filter_map(|p| valid_index(p)));
            all.len() as i32
        } else {
            let fresh = new_succeeded
                .iter()
                .filter(|p| !uncounted_s.iter().any(|u| u == uid(p)))
                .count();
            status.succeeded.unwrap_or(0) + (uncounted_s.len() + fresh) as i32
        };
        let failed_total = status.failed.unwrap_or(0) + uncounted_f.len() as i32 + new_failed;

        // 1. Is the Job failing? An interim condition already written decides.
        let mut conds = status.conditions.take().unwrap_or_default();
        let interim = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
        let mut finish = if let Some(c) = interim(FAILURE_TARGET) {
            Some(Finish::Failed {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            })
        } else if interim(SUCCESS_CRITERIA_MET).is_some() {
            Some(Finish::Complete)
        } else {
            None
        };
        let mut requeue: Option<Duration> = None;
        if finish.is_none() {
            let deadline = spec
                .active_deadline_seconds
                .filter(|_| !suspended)
                .zip(status.start_time.as_ref())
                .map(|(secs, start)| {
                    let end = start.0 + k8s_openapi::jiff::SignedDuration::from_secs(secs);
                    Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO)
                });
            let failure = if let Some(message) = fail_job {
                Some(("PodFailurePolicy", message))
            } else if failed_total > spec.backoff_limit.unwrap_or(6) {
                Some((
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit".to_string(),
                ))
            } else if per_index.is_some()
                && spec
                    .max_failed_indexes
                    .is_some_and(|m| failed_ix.len() as i32 > m)
            {
                Some((
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes".to_string(),
                ))
            } else if deadline.is_some_and(|left| left.is_zero()) {
                Some((
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".to_string(),
                ))
            } else if !failed_ix.is_empty()
                && completions.is_some_and(|c| succeeded_total + failed_ix.len() as i32 >= c)
            {
                Some(("FailedIndexes", "Job has failed indexes".to_string()))
            } else {
                requeue = deadline;
                None
            };
            if let Some((reason, message)) = failure {
                ensure_condition(&mut conds, FAILURE_TARGET, "True", reason, &message, now);
                finish = Some(Finish::Failed {
                    reason: reason.into(),
                    message,
                });
            }
        }

        // 2. Manage pods.
        let mut created = 0i32;
        let mut manage_err = None;
        if !suspended && status.start_time.is_none() {
            status.start_time = Some(Time(now));
        }
        if finish.is_some() {
            let deleted = self.delete_pods(key, &job, &active).await;
            terminating += deleted.0;
            manage_err = deleted.1;
            active.clear();
        } else {
            if suspended {
                if ensure_condition(
                    &mut conds,
                    SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                ) {
                    self.recorder
                        .normal(job.as_ref(), "Suspended", "Job suspended".into());
                }
            } else if ensure_condition(
                &mut conds,
                SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                self.recorder
                    .normal(job.as_ref(), "Resumed", "Job resumed".into());
                // The deadline counts from the resumption.
                status.start_time = Some(Time(now));
            }
            if satisfied {
                let plan = ManagePlan {
                    indexed,
                    completions,
                    parallelism,
                    suspended,
                    succeeded: succeeded_total,
                    completed: {
                        let mut all = completed.clone();
                        all.extend(new_succeeded.iter().filter_map(|p| valid_index(p)));
                        all
                    },
                    failed: failed_ix.clone(),
                    terminating_counts: pods::only_replace_failed(&job),
                    terminating_indexes: owned
                        .iter()
                        .filter(|p| !is_terminal(p) && p.metadata.deletion_timestamp.is_some())
                        .filter_map(|p| indexes::completion_index(p))
                        .collect(),
                    terminating,
                };
                let (to_delete, to_create) = plan.decide(&active);
                let (deleted, err) = self.delete_pods(key, &job, &to_delete).await;
                terminating += deleted;
                let gone: HashSet<&str> = to_delete.iter().map(|p| uid(p)).collect();
                active.retain(|p| !gone.contains(uid(p)));
                manage_err = err;
                if !to_create.is_empty() && manage_err.is_none() {
                    // The back-off follows the finished pods that count: all of the Job's, or
                    // with backoffLimitPerIndex those of each index.
                    let finished = |ix: Option<i32>| -> Vec<(Timestamp, bool)> {
                        owned
                            .iter()
                            .filter(|p| is_terminal(p))
                            .filter(|p| ix.is_none() || indexes::completion_index(p) == ix)
                            .filter(|p| {
                                phase(p) == "Succeeded" || action_of(p).is_none_or(|a| a.counts())
                            })
                            .map(|p| (pods::finished_at(p), phase(p) == "Succeeded"))
                            .collect()
                    };
                    let mut ready_now = Vec::new();
                    let mut failures = HashMap::new();
                    for ix in to_create {
                        let key_ix = if per_index.is_some() { ix } else { None };
                        let wait = self.backoff.remaining(&finished(key_ix), now);
                        if !wait.is_zero() {
                            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                            continue;
                        }
                        if let (Some(_), Some(i)) = (per_index, ix) {
                            let n = owned
                                .iter()
                                .filter(|p| indexes::completion_index(p) == Some(i))
                                .filter(|p| {
                                    is_failed(p, &job) && action_of(p).is_none_or(|a| a.counts())
                                })
                                .count() as i32;
                            failures.insert(i, n);
                        }
                        ready_now.push(ix);
                    }
                    if ready_now.is_empty() {
                        tracing::debug!("{key}: pod creation backed off for {requeue:?}");
                    } else {
                        let (n, err) = self.create_pods(key, &job, &ready_now, &failures).await;
                        created = n;
                        manage_err = err;
                    }
                }
            }
            // Only with every creation observed: a pod created but not yet seen would be left
            // running after the Job completed.
            let complete = satisfied
                && match completions {
                    Some(c) => succeeded_total >= c,
                    None => succeeded_total > 0 && active.is_empty() && created == 0,
                };
            if complete {
                ensure_condition(
                    &mut conds,
                    SUCCESS_CRITERIA_MET,
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now,
                );
                finish = Some(Finish::Complete);
                let (deleted, err) = self.delete_pods(key, &job, &active).await;
                terminating += deleted;
                manage_err = manage_err.or(err);
                active.clear();
            }
        }
        let failing = matches!(finish, Some(Finish::Failed { .. }));

        // 3. Record finished pods, then release them.
        let mut release: Vec<Arc<Pod>> = Vec::new();
        for p in owned.iter().filter(|p| tracked(p)) {
            let u = uid(p).to_string();
            if phase(p) == "Succeeded" && !uncounted_f.contains(&u) {
                if indexed {
                    if let Some(ix) = valid_index(p) {
                        completed.insert(ix);
                    }
                } else if !uncounted_s.contains(&u) {
                    uncounted_s.push(u);
                }
                release.push(p.clone());
            } else if phase(p) == "Failed"
                || (is_failed(p, &job) && !suspended)
                || (failing && !is_terminal(p))
            {
                let counts = (!indexed || valid_index(p).is_some())
                    && action_of(p).is_none_or(|a| a.counts());
                if counts && !uncounted_f.contains(&u) {
                    uncounted_f.push(u);
                }
                release.push(p.clone());
            } else if finish.is_some() || p.metadata.deletion_timestamp.is_some() {
                release.push(p.clone());
            }
        }
        let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
        let build = |status: &JobStatus,
                     conds: &[JobCondition],
                     us: &[String],
                     uf: &[String],
                     completed: &BTreeSet<i32>| {
            let mut s = status.clone();
            s.active = Some(active.len() as i32 + created);
            s.ready = Some(ready);
            s.terminating = Some(terminating);
            s.conditions = (!conds.is_empty()).then(|| conds.to_vec());
            s.uncounted_terminated_pods = Some(UncountedTerminatedPods {
                succeeded: (!us.is_empty()).then(|| us.to_vec()),
                failed: (!uf.is_empty()).then(|| uf.to_vec()),
            });
            if indexed {
                s.succeeded = Some(completed.len() as i32);
                let text = indexes::format(completed);
                s.completed_indexes = (!text.is_empty()).then_some(text);
                s.failed_indexes = per_index.map(|_| indexes::format(&failed_ix));
            }
            s
        };
        let mut job = job;
        let recorded = build(&status, &conds, &uncounted_s, &uncounted_f, &completed);
        if !release.is_empty() && recorded != old_status {
            job = self.write_status(key, &job, recorded).await?;
        }
        self.finalizers
            .expect(key, release.iter().map(|p| uid(p).to_string()));
        let mut released: HashSet<String> = HashSet::new();
        let mut release_err = None;
        // In parallel, as upstream (which bounds it by its client's rate limit).
        for chunk in release.chunks(FINALIZER_REMOVALS_IN_FLIGHT) {
            let results =
                futures::future::join_all(chunk.iter().map(|p| self.remove_finalizer(p))).await;
            for (p, r) in chunk.iter().zip(results) {
                match r {
                    Ok(()) => {
                        released.insert(uid(p).to_string());
                    }
                    Err(e) => {
                        self.finalizers.observed(key, uid(p));
                        release_err.get_or_insert(e);
                    }
                }
            }
        }
        // 4. Count what no longer holds a finalizer.
        let holding: HashSet<&str> = owned
            .iter()
            .filter(|p| tracked(p) && !released.contains(uid(p)))
            .map(|p| uid(p))
            .collect();
        let before = (uncounted_s.len(), uncounted_f.len());
        uncounted_s.retain(|u| holding.contains(u.as_str()));
        uncounted_f.retain(|u| holding.contains(u.as_str()));
        status.succeeded =
            Some(status.succeeded.unwrap_or(0) + (before.0 - uncounted_s.len()) as i32);
        status.failed = Some(status.failed.unwrap_or(0) + (before.1 - uncounted_f.len()) as i32);
        let all_counted = uncounted_s.is_empty() && uncounted_f.is_empty() && holding.is_empty();
        if let Some(f) = &finish {
            if all_counted && terminating == 0 && active.is_empty() {
                match f {
                    Finish::Complete => {
                        ensure_condition(
                            &mut conds,
                            COMPLETE,
                            "True",
                            "CompletionsReached",
                            "Reached expected number of succeeded pods",
                            now,
                        );
                        status.completion_time = Some(Time(now));
                        self.recorder
                            .normal(job.as_ref(), "Completed", "Job completed".into());
                    }
                    Finish::Failed { reason, message } => {
                        ensure_condition(&mut conds, FAILED, "True", reason, message, now);
                        self.recorder.warning(job.as_ref(), reason, message.clone());
                    }
                }
            }
        }
        let final_status = build(&status, &conds, &uncounted_s, &uncounted_f, &completed);
        if Some(&final_status) != job.status.as_ref() {
            self.write_status(key, &job, final_status).await?;
        }
        if let Some(e) = release_err.or(manage_err) {
            return Err(e);
        }
        if let Some(after) = requeue {
            self.queue
                .add_after(key.to_string(), after + Duration::from_millis(10));
        }
        Ok(())
    }

    /// Replaces the Job's status, guarded by the resourceVersion it was computed from.
    async fn write_status(
        &self,
        key: &str,
        job: &Job,
        status: JobStatus,
    ) -> Result<Arc<Job>, SyncError> {
        let mut updated = job.clone();
        updated.status = Some(status);
        let name = job.metadata.name.as_deref().unwrap_or("");
        Api::<Job>::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or(""),
        )
        .replace_status(name, &PostParams::default(), &updated)
        .await
        .inspect(|j| {
            if let Some(rv) = j
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
            {
                self.written.lock().insert(key.to_string(), rv);
            }
        })
        .map(Arc::new)
        .map_err(|source| SyncError::Status {
            key: key.into(),
            source,
        })
    }

    /// Creates one pod per entry (`Some(index)` for Indexed Jobs) in slow-start batches.
    async fn create_pods(
        &self,
        key: &str,
        job: &Arc<Job>,
        which: &[Option<i32>],
        failures: &HashMap<i32, i32>,
    ) -> (i32, Option<SyncError>) {
        let n = which.len().min(BURST_REPLICAS);
        let which = &which[..n];
        self.expectations.expect_creations(key, n);
        let owner = controller_ref(API_VERSION, KIND, &job.metadata);
        let api = Api::<Pod>::namespaced(
            self.client.clone(),
            job.metadata.namespace.as_deref().unwrap_or(""),
        );
        let next = AtomicUsize::new(0);
        let (ok, err) =
            slow_start_batch(n, crate::replicaset::pods::SLOW_START_INITIAL_BATCH, || {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let pod = pods::new_pod(
                    job,
                    owner.clone(),
                    which[i],
                    which[i].and_then(|ix| failures.get(&ix).copied()),
                );
                let (api, job, recorder) = (api.clone(), job.clone(), self.recorder.clone());
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            recorder.normal(
                                job.as_ref(),
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                            );
                            Ok(())
                        }
                        Err(e) => {
                            recorder.warning(
                                job.as_ref(),
                                "FailedCreate",
                                format!("Error creating: {e}"),
                            );
                            Err(e)
                        }
                    }
                }
            })
            .await;
        if ok < n {
            self.expectations.lower_creations(key, n - ok);
        }
        (
            ok as i32,
            err.map(|e| SyncError::Manage(format!("creating pods for job {key}: {e}"))),
        )
    }

    /// Deletes `victims`; returns how many are now terminating and the first error.
    async fn delete_pods(
        &self,
        key: &str,
        job: &Arc<Job>,
        victims: &[Arc<Pod>],
    ) -> (i32, Option<SyncError>) {
        if victims.is_empty() {
            return (0, None);
        }
        let keys: Vec<String> = victims.iter().map(|p| key_of(p.as_ref())).collect();
        self.expectations.expect_deletions(key, &keys);
        let results = futures::future::join_all(victims.iter().map(|p| {
            let api = Api::<Pod>::namespaced(
                self.client.clone(),
                p.metadata.namespace.as_deref().unwrap_or(""),
            );
            let name = p.metadata.name.clone().unwrap_or_default();
            async move {
                let r = api.delete(&name, &DeleteParams::default()).await;
                (name, r)
            }
        }))
        .await;
        let mut deleted = 0;
        let mut first_err = None;
        for ((name, r), pod_key) in results.into_iter().zip(&keys) {
            match r {
                Ok(_) => {
                    deleted += 1;
                    self.recorder.normal(
                        job.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    );
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    self.expectations.deletion_observed(key, pod_key);
                    self.recorder.warning(
                        job.as_ref(),
                        "FailedDelete",
                        format!("Error deleting: {e}"),
                    );
                    first_err.get_or_insert(SyncError::Manage(format!("deleting pod {name}: {e}")));
                }
            }
        }
        (deleted, first_err)
    }
}

/// What `manageJob` decides for a running Job: which active pods to delete and which pods (by
/// index for Indexed Jobs) to create. Pure, so it is table-tested.
struct ManagePlan {
    indexed: bool,
    completions: Option<i32>,
    parallelism: i32,
    suspended: bool,
    /// Succeeded completions so far, counted or not.
    succeeded: i32,
    /// Completed indexes (Indexed Jobs), counted or not.
    completed: BTreeSet<i32>,
    /// Failed indexes (backoffLimitPerIndex): not run again.
    failed: BTreeSet<i32>,
    /// podReplacementPolicy Failed: a terminating pod is replaced only once it has failed.
    terminating_counts: bool,
    terminating: i32,
    terminating_indexes: BTreeSet<i32>,
}

impl ManagePlan {
    fn want_active(&self, active: i32) -> i32 {
        match self.completions {
            None if self.succeeded > 0 => active,
            None => self.parallelism,
            Some(c) => (c - self.succeeded - self.failed.len() as i32).clamp(0, self.parallelism),
        }
    }

    fn decide(&self, active: &[Arc<Pod>]) -> (Vec<Arc<Pod>>, Vec<Option<i32>>) {
        if self.suspended {
            return (active.to_vec(), vec![]);
        }
        let mut keep: Vec<Arc<Pod>> = active.to_vec();
        let mut delete = Vec::new();
        if self.indexed {
            // Pods without a valid index, of a completed index, or a second pod of an index go.
            keep.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let mut seen = BTreeSet::new();
            let completions = self.completions.unwrap_or(0);
            keep.retain(|p| {
                let ok = indexes::completion_index(p).is_some_and(|ix| {
                    ix < completions
                        && !self.completed.contains(&ix)
                        && !self.failed.contains(&ix)
                        && seen.insert(ix)
                });
                if !ok {
                    delete.push(p.clone());
                }
                ok
            });
        }
        let extra = if self.terminating_counts {
            self.terminating
        } else {
            0
        };
        let have = keep.len() as i32 + extra;
        let want = self.want_active(keep.len() as i32);
        if have > want {
            // Not-ready pods first, then the newest (a simplified `ActivePodsWithRanks`).
            let surplus = ((have - want) as usize).min(keep.len());
            keep.sort_by_key(|p| {
                (
                    is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            delete.extend(keep.drain(..surplus));
            return (delete, vec![]);
        }
        let missing = (want - have).max(0) as usize;
        let create = if self.indexed {
            let busy: BTreeSet<i32> = keep
                .iter()
                .filter_map(|p| indexes::completion_index(p))
                .chain(
                    self.terminating_indexes
                        .iter()
                        .copied()
                        .filter(|_| self.terminating_counts),
                )
                .collect();
            (0..self.completions.unwrap_or(0))
                .filter(|ix| {
                    !self.completed.contains(ix) && !self.failed.contains(ix) && !busy.contains(ix)
                })
                .take(missing)
                .map(Some)
                .collect()
        } else {
            vec![None; missing]
        };
        (delete, create)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, index: Option<i32>, created: i64) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(name.into());
        p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        if let Some(ix) = index {
            p.metadata.annotations = Some(
                [(
                    indexes::COMPLETION_INDEX_ANNOTATION.to_string(),
                    ix.to_string(),
                )]
                .into(),
            );
        }
        Arc::new(p)
    }

    fn plan(
        indexed: bool,
        completions: Option<i32>,
        parallelism: i32,
        succeeded: i32,
    ) -> ManagePlan {
        ManagePlan {
            indexed,
            completions,
            parallelism,
            suspended: false,
            succeeded,
            completed: BTreeSet::new(),
            failed: BTreeSet::new(),
            terminating_counts: false,
            terminating: 0,
            terminating_indexes: BTreeSet::new(),
        }
    }

    #[test]
    fn non_indexed_never_exceeds_parallelism_or_remaining_completions() {
        let (d, c) = plan(false, Some(5), 2, 0).decide(&[]);
        assert_eq!((d.len(), c.len()), (0, 2));
        let (d, c) = plan(false, Some(5), 2, 4).decide(&[pod("a", None, 1)]);
        assert_eq!((d.len(), c.len()), (0, 0));
        let (d, c) = plan(false, Some(5), 2, 4).decide(&[pod("a", None, 1), pod("b", None, 2)]);
        assert_eq!(d.iter().map(|p| uid(p)).collect::<Vec<_>>(), ["b"]);
        assert!(c.is_empty());
        // No completions: parallelism until the first success, then nothing new.
        assert_eq!(plan(false, None, 3, 0).decide(&[]).1.len(), 3);
        assert_eq!(
            plan(false, None, 3, 1).decide(&[pod("a", None, 1)]).1.len(),
            0
        );
        // podReplacementPolicy Failed: terminating pods still take their slot.
        let mut p = plan(false, Some(5), 2, 0);
        p.terminating_counts = true;
        p.terminating = 1;
        assert_eq!(p.decide(&[]).1.len(), 1);
    }

    #[test]
    fn indexed_creates_the_lowest_pending_indexes_and_removes_duplicates() {
        let mut p = plan(true, Some(5), 3, 1);
        p.completed = [0].into();
        let active = [
            pod("a", Some(2), 1),
            pod("b", Some(2), 2),
            pod("c", Some(9), 3),
        ];
        let (d, c) = p.decide(&active);
        let mut gone: Vec<&str> = d.iter().map(|p| uid(p)).collect();
        gone.sort();
        assert_eq!(gone, ["b", "c"]);
        assert_eq!(c, [Some(1), Some(3)]);
    }

    #[test]
    fn conditions_are_added_only_when_true_and_flip_once() {
        let now = Timestamp::from_second(10).unwrap();
        let mut conds = vec![];
        assert!(!ensure_condition(
            &mut conds,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(ensure_condition(
            &mut conds,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut conds,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(ensure_condition(
            &mut conds,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason.as_deref(), Some("JobResumed"));
    }
}
