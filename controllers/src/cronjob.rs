//! The CronJob controller (upstream `pkg/controller/cronjob`, the v2 controller): creates a Job
//! from `jobTemplate` at each time of `schedule` in `timeZone`.
//!
//! A sync of one CronJob reconciles `status.active` with the Jobs it owns (finished ones leave
//! the list and set `lastSuccessfulTime`, missing ones are dropped, unknown running ones are
//! added), prunes finished Jobs beyond `successfulJobsHistoryLimit`/`failedJobsHistoryLimit`,
//! then — unless suspended — finds the most recent missed activation ([`schedule::most_recent`],
//! warning `TooManyMissedTimes` past 100), skips it when older than `startingDeadlineSeconds`,
//! applies `concurrencyPolicy` (Forbid skips while a Job runs, Replace deletes the running ones),
//! and creates `<cronjob>-<scheduled time in minutes>` (so a retried sync finds the Job it made).
//! It requeues itself for the next activation. Time comes from a [`Clock`], so tests drive it.

pub mod schedule;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use machinery::events::{object_ref, EventRecorder};
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;
use serde_json::json;

use crate::job::{is_finished, COMPLETE};
use crate::replicaset::controller_ref::is_not_found;
use crate::replicaset::pods::{controller_of, controller_ref};
use crate::ControllerContext;
use schedule::Schedule;

const KIND: &str = "CronJob";
const COMPONENT: &str = "cronjob-controller";
/// The annotation with the time a Job was scheduled for (1.32+).
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream warns when more activations than this were missed.
pub const TOO_MANY_MISSED: i64 = 100;

/// Where the controller reads the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (for tests).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(at))
    }
    /// Starts at the system's time.
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock();
        *t += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_cron_job_syncs;
    CronJobController::new(&ctx, Arc::new(SystemClock))
        .run(workers)
        .await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what} job {name}: {source}")]
    Job {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating status of cronjob {key}: {source}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

/// The CronJob controller.
#[derive(Clone)]
pub struct CronJobController {
    client: kube::Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    queue: WorkQueue<String>,
    recorder: EventRecorder,
    clock: Arc<dyn Clock>,
}

fn to_chrono(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond() as u32).unwrap_or_default()
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_second(t.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

impl CronJobController {
    pub fn new(ctx: &ControllerContext, clock: Arc<dyn Clock>) -> Self {
        let c = CronJobController {
            client: ctx.client.clone(),
            cronjobs: ctx.informers.informer::<CronJob>(),
            jobs: ctx.informers.informer::<Job>(),
            queue: WorkQueue::new(KIND),
            recorder: ctx.recorder(COMPONENT),
            clock,
        };
        c.register();
        c
    }

    fn register(&self) {
        let (q1, q2) = (self.queue.clone(), self.queue.clone());
        self.cronjobs.add_handler(HandlerFns::<CronJob> {
            add: Some(Box::new(move |c| q1.add(key_of(c.as_ref())))),
            update: Some(Box::new(move |_, c| q2.add(key_of(c.as_ref())))),
            delete: None,
        });
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.jobs.add_handler(HandlerFns::<Job> {
            add: Some(Box::new(move |j| a.job_event(j))),
            update: Some(Box::new(move |_, j| u.job_event(j))),
            delete: Some(Box::new(move |j| d.job_event(j))),
        });
    }

    fn job_event(&self, job: &Arc<Job>) {
        let Some(r) = controller_of(&job.metadata) else {
            return;
        };
        if r.kind != KIND {
            return;
        }
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        if let Some(cj) = self.cronjobs.get(ns, &r.name) {
            if cj.metadata.uid.as_deref() == Some(r.uid.as_str()) {
                self.queue.add(key_of(cj.as_ref()));
            }
        }
    }

    /// Syncs every CronJob now (after a test moved the clock).
    pub fn resync(&self) {
        for c in self.cronjobs.list() {
            self.queue.add(key_of(c.as_ref()));
        }
    }

    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.cronjobs.wait_synced().await;
        self.jobs.wait_synced().await;
        tracing::info!("cronjob controller: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    /// One sync of `key` (upstream's `syncCronJob` plus `cleanupFinishedJobs`).
    pub async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(cj) = self.cronjobs.get_by_key(key) else {
            return Ok(());
        };
        let (ns, name) = split_key(key);
        let now = self.clock.now();
        let spec = cj.spec.clone().unwrap_or_default();
        let old = cj.status.clone().unwrap_or_default();
        let mut active: Vec<ObjectReference> = old.active.clone().unwrap_or_default();
        let mut last_success = old.last_successful_time.clone();
        let cj_uid = cj.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Job>> = self.jobs.list_filtered(|j| {
            j.metadata.namespace.as_deref() == Some(ns)
                && controller_of(&j.metadata).is_some_and(|r| r.uid == cj_uid)
        });
        let jobs_api = Api::<Job>::namespaced(self.client.clone(), ns);

        // Reconcile the active list with the Jobs.
        let mut keep = Vec::new();
        for r in active.drain(..) {
            let found = owned
                .iter()
                .find(|j| j.metadata.uid.is_some() && j.metadata.uid == r.uid);
            match found {
                Some(j) if is_finished(j) => {
                    let cond = if job_condition(j, COMPLETE) {
                        "Complete"
                    } else {
                        "Failed"
                    };
                    self.recorder.normal(
                        cj.as_ref(),
                        "SawCompletedJob",
                        format!(
                            "Saw completed job: {}, condition: {cond}",
                            r.name.clone().unwrap_or_default()
                        ),
                    );
                }
                Some(_) => keep.push(r),
                None => {
                    // The cache may lag: only a live read proves the Job gone.
                    let job_name = r.name.clone().unwrap_or_default();
                    match jobs_api.get_opt(&job_name).await {
                        Ok(Some(j)) if j.metadata.uid == r.uid && !is_finished(&j) => keep.push(r),
                        Ok(_) => self.recorder.normal(
                            cj.as_ref(),
                            "MissingJob",
                            format!("Active job went missing: {job_name}"),
                        ),
                        Err(source) => {
                            return Err(SyncError::Job {
                                what: "getting",
                                name: job_name,
                                source,
                            })
                        }
                    }
                }
            }
        }
        active = keep;
        for j in &owned {
            if is_finished(j) {
                if job_condition(j, COMPLETE) {
                    if let Some(t) = j.status.as_ref().and_then(|s| s.completion_time.clone()) {
                        if last_success.as_ref().is_none_or(|l| l.0 < t.0) {
                            last_success = Some(t);
                        }
                    }
                }
            } else if !active.iter().any(|r| r.uid == j.metadata.uid) {
                self.recorder.warning(
                    cj.as_ref(),
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.metadata.name.clone().unwrap_or_default()
                    ),
                );
                active.push(object_ref(j.as_ref()));
            }
        }
        self.prune_history(&cj, &owned, &active).await;

        let mut last_schedule = old.last_schedule_time.clone();
        let mut requeue = None;
        if cj.metadata.deletion_timestamp.is_none() && spec.suspend != Some(true) {
            match self
                .schedule_next(&cj, &mut active, &mut last_schedule, now)
                .await
            {
                Ok(r) => requeue = r,
                Err(e) => {
                    self.write_status(key, &cj, &active, &last_schedule, &last_success)
                        .await?;
                    return Err(e);
                }
            }
        }
        self.write_status(key, &cj, &active, &last_schedule, &last_success)
            .await?;
        if let Some(after) = requeue {
            tracing::debug!("{ns}/{name}: next schedule in {after:?}");
            self.queue.add_after(key.to_string(), after);
        }
        Ok(())
    }

    /// Creates the Job of the most recent activation if one is due; returns when to look again.
    async fn schedule_next(
        &self,
        cj: &Arc<CronJob>,
        active: &mut Vec<ObjectReference>,
        last_schedule: &mut Option<Time>,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, SyncError> {
        let spec = cj.spec.clone().unwrap_or_default();
        let ns = cj.metadata.namespace.as_deref().unwrap_or("");
        let name = cj.metadata.name.as_deref().unwrap_or("");
        let tz = match schedule::time_zone(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                self.recorder.warning(
                    cj.as_ref(),
                    "UnknownTimeZone",
                    format!(
                        "invalid timeZone: {:?}: {e}",
                        spec.time_zone.unwrap_or_default()
                    ),
                );
                return Ok(None);
            }
        };
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.warning(
                    cj.as_ref(),
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                );
                return Ok(None);
            }
        };
        let until_next = || {
            sched
                .next(now, tz)
                .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_millis(100))
        };
        let mut earliest = last_schedule
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map(to_chrono)
            .unwrap_or(now);
        if let Some(sds) = spec.starting_deadline_seconds {
            let deadline = now - chrono::Duration::seconds(sds);
            if deadline > earliest {
                earliest = deadline;
            }
        }
        let (scheduled, missed) = match schedule::most_recent(&sched, tz, earliest, now) {
            Ok(r) => r,
            Err(e) => {
                self.recorder.warning(
                    cj.as_ref(),
                    "InvalidSchedule",
                    format!("invalid schedule: {} : {e}", spec.schedule),
                );
                return Ok(None);
            }
        };
        if missed > TOO_MANY_MISSED {
            self.recorder.warning(
                cj.as_ref(),
                "TooManyMissedTimes",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            );
        }
        let Some(scheduled) = scheduled else {
            return Ok(until_next());
        };
        if spec
            .starting_deadline_seconds
            .is_some_and(|s| scheduled + chrono::Duration::seconds(s) < now)
        {
            self.recorder.warning(
                cj.as_ref(),
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.to_rfc2822()
                ),
            );
            return Ok(until_next());
        }
        let job_name = format!("{name}-{}", scheduled.timestamp() / 60);
        if active
            .iter()
            .any(|r| r.name.as_deref() == Some(job_name.as_str()))
            || last_schedule.as_ref().map(to_chrono) == Some(scheduled)
        {
            return Ok(until_next());
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if policy == "Forbid" && !active.is_empty() {
            self.recorder.normal(
                cj.as_ref(),
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            );
            return Ok(until_next());
        }
        let jobs_api = Api::<Job>::namespaced(self.client.clone(), ns);
        if policy == "Replace" {
            for r in std::mem::take(active) {
                let n = r.name.clone().unwrap_or_default();
                match jobs_api.delete(&n, &background()).await {
                    Ok(_) => self.recorder.normal(
                        cj.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted job {n}"),
                    ),
                    Err(e) if is_not_found(&e) => {}
                    Err(source) => {
                        active.push(r);
                        return Err(SyncError::Job {
                            what: "deleting",
                            name: n,
                            source,
                        });
                    }
                }
            }
        }
        let job = job_from_template(cj, &job_name, scheduled.with_timezone(&tz).to_rfc3339());
        let created = match jobs_api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.recorder.normal(
                    cj.as_ref(),
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
                j
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Made by an earlier sync that did not get to write the status.
                match jobs_api.get_opt(&job_name).await {
                    Ok(Some(j))
                        if controller_of(&j.metadata)
                            .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref()) =>
                    {
                        j
                    }
                    _ => return Ok(until_next()),
                }
            }
            Err(source) => {
                self.recorder.warning(
                    cj.as_ref(),
                    "FailedCreate",
                    format!("Error creating job: {source}"),
                );
                return Err(SyncError::Job {
                    what: "creating",
                    name: job_name,
                    source,
                });
            }
        };
        if !is_finished(&created) && !active.iter().any(|r| r.uid == created.metadata.uid) {
            active.push(object_ref(&created));
        }
        *last_schedule = Some(to_time(scheduled));
        Ok(until_next())
    }

    /// Deletes the oldest finished Jobs beyond the history limits (`cleanupFinishedJobs`).
    async fn prune_history(
        &self,
        cj: &Arc<CronJob>,
        owned: &[Arc<Job>],
        active: &[ObjectReference],
    ) {
        let spec = cj.spec.clone().unwrap_or_default();
        let active_uids: HashSet<&str> = active.iter().filter_map(|r| r.uid.as_deref()).collect();
        let ns = cj.metadata.namespace.as_deref().unwrap_or("");
        let api = Api::<Job>::namespaced(self.client.clone(), ns);
        for (complete, limit) in [
            (true, spec.successful_jobs_history_limit),
            (false, spec.failed_jobs_history_limit),
        ] {
            let Some(limit) = limit else { continue };
            let mut finished: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| is_finished(j) && job_condition(j, COMPLETE) == complete)
                .filter(|j| !active_uids.contains(j.metadata.uid.as_deref().unwrap_or("")))
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .collect();
            if finished.len() <= limit.max(0) as usize {
                continue;
            }
            // Oldest first by start time, then name (upstream's byJobStartTime).
            finished.sort_by_key(|j| {
                (
                    j.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(|t| t.0),
                    j.metadata.name.clone(),
                )
            });
            let surplus = finished.len() - limit.max(0) as usize;
            for j in &finished[..surplus] {
                let n = j.metadata.name.clone().unwrap_or_default();
                match api.delete(&n, &background()).await {
                    Ok(_) => self.recorder.normal(
                        cj.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted job {n}"),
                    ),
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => self.recorder.warning(
                        cj.as_ref(),
                        "FailedDelete",
                        format!("Deleted job: {e}"),
                    ),
                }
            }
        }
    }

    async fn write_status(
        &self,
        key: &str,
        cj: &CronJob,
        active: &[ObjectReference],
        last_schedule: &Option<Time>,
        last_success: &Option<Time>,
    ) -> Result<(), SyncError> {
        let old = cj.status.clone().unwrap_or_default();
        let active_now = (!active.is_empty()).then(|| active.to_vec());
        let same_active = old
            .active
            .as_ref()
            .map(|a| a.iter().map(|r| &r.uid).collect::<Vec<_>>())
            == active_now
                .as_ref()
                .map(|a| a.iter().map(|r| &r.uid).collect::<Vec<_>>());
        if same_active
            && old.last_schedule_time == *last_schedule
            && old.last_successful_time == *last_success
        {
            return Ok(());
        }
        // Guarded by the resourceVersion the status was computed from: a sync working from a
        // stale cache fails (and retries) instead of writing an older state back.
        let patch = json!({"metadata": {"resourceVersion": cj.metadata.resource_version}, "status": {
            "active": active_now,
            "lastScheduleTime": last_schedule,
            "lastSuccessfulTime": last_success,
        }});
        let (ns, name) = split_key(key);
        Api::<CronJob>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map(|_| ())
            .map_err(|source| SyncError::Status {
                key: key.into(),
                source,
            })
    }
}

fn background() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    }
}

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The Job for one activation (upstream's `getJobFromTemplate2`).
pub fn job_from_template(cj: &CronJob, name: &str, scheduled: String) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP_ANNOTATION.into(), scheduled);
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("batch/v1", KIND, &cj.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}
