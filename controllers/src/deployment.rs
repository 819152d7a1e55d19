//! The Deployment controller (upstream `pkg/controller/deployment`): rolls a deployment's pod
//! template out through replica sets named `<deployment>-<pod-template-hash>`.
//!
//! - `sync`: claiming replica sets, finding or creating the new one (revision annotations),
//!   scaling (proportionally during a rollout), history cleanup and status.
//! - `rolling`: the RollingUpdate strategy (maxSurge / maxUnavailable).
//! - `recreate`: the Recreate strategy (all old pods gone before new ones start).
//! - `progress`: the Progressing condition and progressDeadlineSeconds.
//! - `util`: annotations, hashing and the arithmetic, as pure functions.
//!
//! Rollback is client-side, as upstream since apps/v1: `kubectl rollout undo` copies an old
//! replica set's template into the deployment, and the controller then finds that replica set as
//! the new one and gives it the next revision. Pause stops rollouts but not scaling.
//!
//! A sync waits until the informer shows the replica sets as this controller last wrote them
//! (sizes it set, sets it created), so decisions are never made on its own stale writes.

mod progress;
mod recreate;
mod rolling;
mod sync;
pub mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;

use crate::replicaset::controller_ref::{ClaimError, RefManager};
use crate::replicaset::pods::controller_of;
use crate::replicaset::selector::Selector;
use crate::ControllerContext;

/// How long a write of ours may stay unobserved before the sync stops waiting for it.
const WRITE_OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_deployment_syncs;
    DeploymentController::new(&ctx).run(workers).await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Other(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> SyncError {
    let what = what.into();
    move |source| SyncError::Api { what, source }
}

/// Replica set name → (spec.replicas written, when).
type Written = HashMap<String, (i32, Instant)>;

#[derive(Clone)]
pub struct DeploymentController {
    client: kube::Client,
    deployments: Informer<Deployment>,
    sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    recorder: EventRecorder,
    /// Per deployment key: replica set name → (spec.replicas written, when).
    written: Arc<Mutex<HashMap<String, Written>>>,
}

impl DeploymentController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let dc = DeploymentController {
            client: ctx.client.clone(),
            deployments: ctx.informers.informer(),
            sets: ctx.informers.informer(),
            pods: ctx.informers.informer(),
            queue: WorkQueue::new("deployment"),
            recorder: ctx.recorder("deployment-controller"),
            written: Default::default(),
        };
        dc.register();
        dc
    }

    fn register(&self) {
        let (q1, q2, q3) = (self.queue.clone(), self.queue.clone(), self.queue.clone());
        let written = self.written.clone();
        self.deployments.add_handler(HandlerFns::<Deployment> {
            add: Some(Box::new(move |d| q1.add(key_of(d.as_ref())))),
            update: Some(Box::new(move |_, d| q2.add(key_of(d.as_ref())))),
            delete: Some(Box::new(move |d| {
                let key = key_of(d.as_ref());
                written.lock().remove(&key);
                q3.add(key)
            })),
        });
        let (a, u, del) = (self.clone(), self.clone(), self.clone());
        self.sets.add_handler(HandlerFns::<ReplicaSet> {
            add: Some(Box::new(move |rs| a.enqueue_for_rs(rs, true))),
            update: Some(Box::new(move |old, cur| {
                if controller_of(&old.metadata) != controller_of(&cur.metadata) {
                    u.enqueue_for_rs(old, false);
                }
                u.enqueue_for_rs(cur, cur.metadata.labels != old.metadata.labels);
            })),
            delete: Some(Box::new(move |rs| del.enqueue_for_rs(rs, false))),
        });
        let p = self.clone();
        self.pods.add_handler(HandlerFns::<Pod> {
            delete: Some(Box::new(move |pod| p.pod_deleted(pod))),
            ..Default::default()
        });
    }

    /// Queues the deployment controlling `rs`, or (for an orphan, when `orphans`) every
    /// deployment whose selector matches it.
    fn enqueue_for_rs(&self, rs: &Arc<ReplicaSet>, orphans: bool) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        match controller_of(&rs.metadata) {
            Some(r) if r.kind == "Deployment" => {
                if let Some(d) = self.deployments.get(ns, &r.name) {
                    if d.metadata.uid.as_deref() == Some(r.uid.as_str()) {
                        self.queue.add(key_of(d.as_ref()));
                    }
                }
            }
            Some(_) => {}
            None if orphans => {
                for d in self.deployments.list_namespace(ns) {
                    let sel = Selector::from_label_selector(d.spec.as_ref().map(|s| &s.selector));
                    if sel.is_ok_and(|s| !s.is_empty() && s.matches(rs.metadata.labels.as_ref())) {
                        self.queue.add(key_of(d.as_ref()));
                    }
                }
            }
            None => {}
        }
    }

    /// A Recreate deployment waits for its old pods to be gone.
    fn pod_deleted(&self, pod: &Arc<Pod>) {
        let Some(r) = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet") else {
            return;
        };
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        if let Some(rs) = self.sets.get(ns, &r.name) {
            if let Some(dr) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment") {
                if let Some(d) = self.deployments.get(ns, &dr.name) {
                    if util::is_recreate(&d) {
                        self.queue.add(key_of(d.as_ref()));
                    }
                }
            }
        }
    }

    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.deployments.wait_synced().await;
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        tracing::info!("deployment controller: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync_deployment(&key).await }
        })
        .await;
        Ok(())
    }

    /// Records that replica set `name` of deployment `key` was written with `replicas`.
    fn wrote(&self, key: &str, rs: &ReplicaSet) {
        let name = rs.metadata.name.clone().unwrap_or_default();
        self.written
            .lock()
            .entry(key.to_string())
            .or_default()
            .insert(name, (util::rs_replicas(rs), Instant::now()));
    }

    /// Whether the informer shows every replica set write of ours for `key`.
    fn writes_observed(&self, key: &str) -> bool {
        let (ns, _) = split_key(key);
        let mut written = self.written.lock();
        let Some(sets) = written.get_mut(key) else {
            return true;
        };
        sets.retain(|name, (replicas, at)| {
            let seen = self
                .sets
                .get(ns, name)
                .is_some_and(|rs| util::rs_replicas(&rs) == *replicas);
            !seen && at.elapsed() < WRITE_OBSERVE_TIMEOUT
        });
        sets.is_empty()
    }

    /// One sync of `key` (upstream's `syncDeployment`).
    pub async fn sync_deployment(&self, key: &str) -> Result<(), SyncError> {
        let Some(cached) = self.deployments.get_by_key(key) else {
            return Ok(());
        };
        if !self.writes_observed(key) {
            // The replica-set event that completes the picture queues the key again.
            self.queue
                .add_after(key.to_string(), Duration::from_secs(1));
            return Ok(());
        }
        let mut d = (*cached).clone();
        let (ns, _) = split_key(key);
        let selector_spec = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        let selector =
            Selector::from_label_selector(Some(&selector_spec)).map_err(SyncError::Other)?;
        if selector.is_empty() {
            self.recorder.warning(
                &d,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let gen = d.metadata.generation.unwrap_or(0);
            let mut status = d.status.clone().unwrap_or_default();
            if status.observed_generation.unwrap_or(0) < gen {
                status.observed_generation = Some(gen);
                self.update_status(&mut d, status).await?;
            }
            return Ok(());
        }
        let candidates = self.sets.list_namespace(ns);
        let manager = RefManager::new(
            self.client.clone(),
            Api::<Deployment>::namespaced(self.client.clone(), ns),
            &cached.metadata,
            "apps/v1",
            "Deployment",
            &selector,
        );
        let rs_list: Vec<ReplicaSet> = manager
            .claim(candidates)
            .await?
            .into_iter()
            .map(|rs| (*rs).clone())
            .collect();
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(key, &mut d, rs_list).await;
        }
        self.check_paused_conditions(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(key, &mut d, &rs_list).await? {
            return self.sync(key, &mut d, rs_list).await;
        }
        if util::is_recreate(&d) {
            self.rollout_recreate(key, &mut d, rs_list).await
        } else {
            self.rollout_rolling(key, &mut d, rs_list).await
        }
    }
}
