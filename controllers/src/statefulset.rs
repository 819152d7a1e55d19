//! The StatefulSet controller (upstream `pkg/controller/statefulset`): replicas with stable
//! names `<set>-<ordinal>`, stable storage and an ordered lifecycle.
//!
//! A sync of one StatefulSet (upstream's `updateStatefulSet`):
//! 1. claim its pods (those named `<set>-<n>` its selector matches) and find its revisions: the
//!    update revision snapshots the current template ([`crate::history`]), the current revision
//!    is the one the status names;
//! 2. walk the replicas in ordinal order: replace failed ones, create missing ones (their
//!    PersistentVolumeClaims first, from the volumeClaimTemplates) from the current revision
//!    below the partition and the update revision above it, fix identity labels and the claims'
//!    owner references (the retention policy); with `OrderedReady` stop at the first replica
//!    that is not Running and Ready, with `Parallel` go on;
//! 3. delete replicas beyond `replicas`, highest ordinal first (one at a time when ordered);
//! 4. under RollingUpdate, delete the highest replicas at or above the partition that are not of
//!    the update revision, at most maxUnavailable unavailable at once; they come back in step 2;
//! 5. trim the history and write the status (currentRevision becomes updateRevision once every
//!    replica is updated and ready).

pub mod util;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use serde_json::json;

use crate::history;
use crate::replicaset::controller_ref::{self, is_not_found, RefManager};
use crate::replicaset::pods::controller_of;
use crate::replicaset::selector::Selector;
use crate::ControllerContext;

const COMPONENT: &str = "statefulset-controller";
const API_VERSION: &str = "apps/v1";
const KIND: &str = "StatefulSet";

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_statefulset_syncs;
    StatefulSetController::new(&ctx).run(workers).await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Claim(#[from] controller_ref::ClaimError),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("{what} for StatefulSet {key}: {source}")]
    Api {
        what: String,
        key: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Blocked(String),
}

#[derive(Clone)]
pub struct StatefulSetController {
    client: kube::Client,
    sets: Informer<StatefulSet>,
    pods: Informer<Pod>,
    claims: Informer<PersistentVolumeClaim>,
    revisions: Informer<ControllerRevision>,
    queue: WorkQueue<String>,
    recorder: EventRecorder,
}

/// What processing the replicas ended with.
enum Flow {
    Continue,
    /// Ordered management waits for a replica (or an action was taken).
    Wait,
}

impl StatefulSetController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let c = StatefulSetController {
            client: ctx.client.clone(),
            sets: ctx.informers.informer::<StatefulSet>(),
            pods: ctx.informers.informer::<Pod>(),
            claims: ctx.informers.informer::<PersistentVolumeClaim>(),
            revisions: ctx.informers.informer::<ControllerRevision>(),
            queue: WorkQueue::new(KIND),
            recorder: ctx.recorder(COMPONENT),
        };
        c.register();
        c
    }

    fn register(&self) {
        let (q1, q2, q3) = (self.queue.clone(), self.queue.clone(), self.queue.clone());
        self.sets.add_handler(HandlerFns::<StatefulSet> {
            add: Some(Box::new(move |o| q1.add(key_of(o.as_ref())))),
            update: Some(Box::new(move |_, n| q2.add(key_of(n.as_ref())))),
            delete: Some(Box::new(move |o| q3.add(key_of(o.as_ref())))),
        });
        let this = self.clone();
        let on_pod = move |p: &Arc<Pod>| this.enqueue_for(&p.metadata, true);
        let (a, u, d) = (on_pod.clone(), on_pod.clone(), on_pod);
        let u2 = self.clone();
        self.pods.add_handler(HandlerFns::<Pod> {
            add: Some(Box::new(move |p| a(p))),
            update: Some(Box::new(move |o, n| {
                if controller_of(&o.metadata) != controller_of(&n.metadata) {
                    u2.enqueue_for(&o.metadata, false);
                }
                u(n)
            })),
            delete: Some(Box::new(move |p| d(p))),
        });
        let this = self.clone();
        let on_rev = move |r: &Arc<ControllerRevision>| this.enqueue_for(&r.metadata, false);
        let (a, u, d) = (on_rev.clone(), on_rev.clone(), on_rev);
        self.revisions
            .add_handler(HandlerFns::<ControllerRevision> {
                add: Some(Box::new(move |r| a(r))),
                update: Some(Box::new(move |_, r| u(r))),
                delete: Some(Box::new(move |r| d(r))),
            });
        let this = self.clone();
        self.claims
            .add_handler(HandlerFns::<PersistentVolumeClaim> {
                // A claim being deleted blocks its replica until it is gone.
                delete: Some(Box::new(move |c| {
                    let ns = c.metadata.namespace.as_deref().unwrap_or("");
                    for s in this.sets.list_namespace(ns) {
                        this.queue.add(key_of(s.as_ref()));
                    }
                })),
                ..Default::default()
            });
    }

    /// Queues the set controlling `meta`, or (for an orphan pod) the sets that may adopt it.
    fn enqueue_for(&self, meta: &ObjectMeta, orphans: bool) {
        let ns = meta.namespace.as_deref().unwrap_or("");
        match controller_of(meta) {
            Some(r) if r.kind == KIND => {
                if let Some(s) = self.sets.get(ns, &r.name) {
                    if s.metadata.uid.as_deref() == Some(r.uid.as_str()) {
                        self.queue.add(key_of(s.as_ref()));
                    }
                }
            }
            Some(_) => {}
            None if orphans => {
                for s in self.sets.list_namespace(ns) {
                    if selector(&s)
                        .is_ok_and(|sel| !sel.is_empty() && sel.matches(meta.labels.as_ref()))
                    {
                        self.queue.add(key_of(s.as_ref()));
                    }
                }
            }
            None => {}
        }
    }

    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        self.claims.wait_synced().await;
        self.revisions.wait_synced().await;
        tracing::info!("StatefulSet controller: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    fn api_err(what: impl Into<String>, key: &str) -> impl FnOnce(kube::Error) -> SyncError {
        let (what, key) = (what.into(), key.to_string());
        move |source| SyncError::Api { what, key, source }
    }

    /// One sync of `key`.
    pub async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(set) = self.sets.get_by_key(key) else {
            return Ok(());
        };
        let (ns, name) = split_key(key);
        let sel = match selector(&set) {
            Ok(s) if !s.is_empty() => s,
            _ => {
                tracing::warn!("{key}: invalid or empty selector");
                return Ok(());
            }
        };
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let candidates = self.pods.list_filtered(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && (controller_of(&p.metadata).is_some_and(|r| r.uid == uid)
                    || util::ordinal_of(name, p.metadata.name.as_deref().unwrap_or("")).is_some())
        });
        let manager = RefManager::new(
            self.client.clone(),
            Api::<StatefulSet>::namespaced(self.client.clone(), ns),
            &set.metadata,
            API_VERSION,
            KIND,
            &sel,
        );
        let pods = manager.claim(candidates).await?;
        let (current, update, collision_count, revisions) = self.revisions_of(&set).await?;
        let cur_name = current.metadata.name.clone().unwrap_or_default();
        let upd_name = update.metadata.name.clone().unwrap_or_default();

        if set.metadata.deletion_timestamp.is_none() {
            self.update_replicas(key, &set, &pods, &current, &update)
                .await?;
        }
        let now = Timestamp::now();
        let status = util::compute_status(&set, &pods, &cur_name, &upd_name, collision_count, now);
        self.truncate_history(&set, &pods, &revisions, &status)
            .await?;
        let mut status = status;
        let old = set.status.clone().unwrap_or_default();
        status.conditions = old.conditions.clone();
        if util::status_changed(&status, &old) {
            let patch = json!({"status": status});
            Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(Self::api_err("updating status", key))?;
        }
        let min_ready = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        if min_ready > 0 && status.available_replicas < status.ready_replicas {
            self.queue
                .add_after(key.to_string(), Duration::from_secs(min_ready as u64));
        }
        Ok(())
    }

    /// Upstream's `getStatefulSetRevisions`: (current, update, collisionCount, all revisions).
    async fn revisions_of(
        &self,
        set: &StatefulSet,
    ) -> Result<
        (
            ControllerRevision,
            ControllerRevision,
            Option<i32>,
            Vec<ControllerRevision>,
        ),
        SyncError,
    > {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let uid = set.metadata.uid.as_deref().unwrap_or("");
        let api = Api::<ControllerRevision>::namespaced(self.client.clone(), ns);
        let mut revs: Vec<ControllerRevision> = self
            .revisions
            .list_filtered(|r| {
                r.metadata.namespace.as_deref() == Some(ns)
                    && controller_of(&r.metadata).is_some_and(|o| o.uid == uid)
            })
            .into_iter()
            .map(|r| (*r).clone())
            .collect();
        history::sort(&mut revs);
        let template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let data = history::template_patch(&template);
        let mut collision_count = set.status.as_ref().and_then(|s| s.collision_count);
        let next = history::next_revision(&revs);
        let equal = revs
            .iter()
            .rposition(|r| r.data.as_ref().map(|d| &d.0) == Some(&data));
        let update = match equal {
            Some(i) if i + 1 == revs.len() => revs[i].clone(),
            Some(i) => {
                let r = history::renumber(&api, &revs[i], next).await?;
                revs[i] = r.clone();
                r
            }
            None => {
                let rev = history::new_revision(
                    &set.metadata,
                    API_VERSION,
                    KIND,
                    template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
                    data,
                    next,
                    collision_count,
                );
                let (r, count) = history::create(
                    &api,
                    set.metadata.name.as_deref().unwrap_or(""),
                    &rev,
                    collision_count.unwrap_or(0),
                )
                .await?;
                if count != collision_count.unwrap_or(0) {
                    collision_count = Some(count);
                }
                revs.push(r.clone());
                r
            }
        };
        let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = revs
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
            .cloned()
            .unwrap_or_else(|| update.clone());
        Ok((current, update, collision_count, revs))
    }

    /// Steps 2–4 of the sync.
    async fn update_replicas(
        &self,
        key: &str,
        set: &Arc<StatefulSet>,
        pods: &[Arc<Pod>],
        current: &ControllerRevision,
        update: &ControllerRevision,
    ) -> Result<(), SyncError> {
        let name = set.metadata.name.as_deref().unwrap_or("");
        let ordered = set
            .spec
            .as_ref()
            .and_then(|s| s.pod_management_policy.as_deref())
            .unwrap_or("OrderedReady")
            != "Parallel";
        let start = util::start_ordinal(set);
        let count = util::replicas(set).max(0);
        let min_ready = set
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let now = Timestamp::now();
        let mut replicas: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
        for p in pods {
            let Some(ord) = util::ordinal_of(name, p.metadata.name.as_deref().unwrap_or("")) else {
                continue;
            };
            if ord >= start && ord < start + count {
                replicas.insert(ord, p.clone());
            } else {
                condemned.push((ord, p.clone()));
            }
        }
        condemned.sort_by_key(|(o, _)| *o);
        let cur_template = history::template_of(current).unwrap_or_else(|| {
            set.spec
                .as_ref()
                .map(|s| s.template.clone())
                .unwrap_or_default()
        });
        let upd_template = set
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let cur_name = current.metadata.name.as_deref().unwrap_or("");
        let upd_name = update.metadata.name.as_deref().unwrap_or("");

        // Step 2: the replicas in ordinal order.
        for ord in start..start + count {
            let flow = match replicas.get(&ord) {
                None => {
                    let (template, rev) = if util::recreate_from_current(set, ord) {
                        (&cur_template, cur_name)
                    } else {
                        (&upd_template, upd_name)
                    };
                    self.create_replica(key, set, ord, template, rev).await?;
                    Flow::Wait
                }
                Some(p) if util::is_failed_or_succeeded(p) && !util::is_terminating(p) => {
                    self.delete_pod(key, set, p).await?;
                    Flow::Wait
                }
                Some(p) if util::is_terminating(p) => Flow::Wait,
                Some(p) => {
                    self.fix_replica(key, set, p, ord, false).await?;
                    if !util::running_and_ready(p) {
                        Flow::Wait
                    } else if !util::running_and_available(p, min_ready, now) {
                        self.queue
                            .add_after(key.to_string(), Duration::from_secs(min_ready as u64));
                        Flow::Wait
                    } else {
                        Flow::Continue
                    }
                }
            };
            if ordered && matches!(flow, Flow::Wait) {
                return Ok(());
            }
        }
        // In Parallel mode, the rolling update waits for every replica too.
        let all_healthy = (start..start + count).all(|o| {
            replicas
                .get(&o)
                .is_some_and(|p| util::is_healthy(p, min_ready, now))
        });

        // Step 3: scale down, highest ordinal first.
        for (ord, p) in condemned.iter().rev() {
            if util::is_terminating(p) {
                if ordered {
                    return Ok(());
                }
                continue;
            }
            self.fix_replica(key, set, p, *ord, true).await?;
            self.delete_pod(key, set, p).await?;
            if ordered {
                return Ok(());
            }
        }

        // Step 4: the rolling update.
        if !util::is_rolling(set) || !all_healthy {
            return Ok(());
        }
        let live: Vec<Arc<Pod>> = (start..start + count)
            .filter_map(|o| replicas.get(&o).cloned())
            .collect();
        let victims = util::rolling_victims(
            &live,
            upd_name,
            util::partition(set),
            util::max_unavailable(set),
            min_ready,
            now,
        );
        for v in victims {
            if let Some(p) = live
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(v.as_str()))
            {
                tracing::info!("{key}: terminating {v} for update to {upd_name}");
                self.delete_pod(key, set, p).await?;
            }
        }
        Ok(())
    }

    /// Creates the replica's claims (when missing), then the replica (`CreateStatefulPod`).
    async fn create_replica(
        &self,
        key: &str,
        set: &Arc<StatefulSet>,
        ordinal: i32,
        template: &k8s_openapi::api::core::v1::PodTemplateSpec,
        revision: &str,
    ) -> Result<(), SyncError> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let set_name = set.metadata.name.as_deref().unwrap_or("");
        let pod_name = util::pod_name(set_name, ordinal);
        let claims_api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns);
        for mut claim in util::new_claims(set, ordinal) {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            if let Some(existing) = self.claims.get(ns, &claim_name) {
                if existing.metadata.deletion_timestamp.is_some() {
                    return Err(SyncError::Blocked(format!(
                        "pvc {claim_name} is being deleted"
                    )));
                }
                continue;
            }
            if let Some(refs) = util::claim_owner_refs(&claim, set, None, false) {
                claim.metadata.owner_references = Some(refs);
            }
            match claims_api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.recorder.normal(
                    set.as_ref(),
                    "SuccessfulCreate",
                    format!("create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"),
                ),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    self.recorder.warning(
                        set.as_ref(),
                        "FailedCreate",
                        format!("create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                    );
                    return Err(Self::api_err(format!("creating claim {claim_name}"), key)(e));
                }
            }
        }
        let pod = util::new_pod(set, template, ordinal, revision);
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &pod)
            .await
        {
            Ok(_) => {
                self.recorder.normal(
                    set.as_ref(),
                    "SuccessfulCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            // Our informer has not seen it yet.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    set.as_ref(),
                    "FailedCreate",
                    format!("create Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(Self::api_err(format!("creating pod {pod_name}"), key)(e))
            }
        }
    }

    /// Keeps a live replica's identity labels and its claims' owner references as they should
    /// be (`UpdateStatefulPod`, `UpdatePodClaimForRetentionPolicy`).
    async fn fix_replica(
        &self,
        key: &str,
        set: &Arc<StatefulSet>,
        pod: &Arc<Pod>,
        ordinal: i32,
        scaled_down: bool,
    ) -> Result<(), SyncError> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        if !scaled_down && !util::identity_labels_match(pod, ordinal) {
            let patch = json!({"metadata": {"labels": {
                util::POD_NAME_LABEL: pod_name,
                util::POD_INDEX_LABEL: ordinal.to_string(),
            }}});
            Api::<Pod>::namespaced(self.client.clone(), ns)
                .patch(&pod_name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(Self::api_err(format!("updating pod {pod_name}"), key))?;
        }
        let claims_api = Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns);
        for (_, claim_name) in util::claims_of(set, ordinal) {
            let Some(claim) = self.claims.get(ns, &claim_name) else {
                continue;
            };
            if let Some(refs) = util::claim_owner_refs(&claim, set, Some(pod), scaled_down) {
                let patch = json!({"metadata": {"ownerReferences": refs}});
                match claims_api
                    .patch(&claim_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        return Err(Self::api_err(format!("updating claim {claim_name}"), key)(
                            e,
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes a replica (only that incarnation: the UID is a precondition).
    async fn delete_pod(
        &self,
        key: &str,
        set: &Arc<StatefulSet>,
        pod: &Arc<Pod>,
    ) -> Result<(), SyncError> {
        let ns = set.metadata.namespace.as_deref().unwrap_or("");
        let set_name = set.metadata.name.as_deref().unwrap_or("");
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(&pod_name, &dp)
            .await
        {
            Ok(_) => {
                self.recorder.normal(
                    set.as_ref(),
                    "SuccessfulDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => {
                self.recorder.warning(
                    set.as_ref(),
                    "FailedDelete",
                    format!("delete Pod {pod_name} in StatefulSet {set_name} failed error: {e}"),
                );
                Err(Self::api_err(format!("deleting pod {pod_name}"), key)(e))
            }
        }
    }

    /// `truncateHistory`: keeps revisionHistoryLimit revisions besides the live ones (the
    /// current, the update and any a pod runs).
    async fn truncate_history(
        &self,
        set: &StatefulSet,
        pods: &[Arc<Pod>],
        revisions: &[ControllerRevision],
        status: &k8s_openapi::api::apps::v1::StatefulSetStatus,
    ) -> Result<(), SyncError> {
        let mut live: HashSet<&str> = pods.iter().filter_map(|p| util::revision_of(p)).collect();
        live.extend(status.current_revision.as_deref());
        live.extend(status.update_revision.as_deref());
        let limit = set
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let doomed = history::to_truncate(revisions, limit, |r| {
            r.metadata.name.as_deref().is_some_and(|n| live.contains(n))
        });
        if doomed.is_empty() {
            return Ok(());
        }
        let api = Api::<ControllerRevision>::namespaced(
            self.client.clone(),
            set.metadata.namespace.as_deref().unwrap_or(""),
        );
        for r in doomed {
            history::delete(&api, r.metadata.name.as_deref().unwrap_or("")).await?;
        }
        Ok(())
    }
}

fn selector(set: &StatefulSet) -> Result<Selector, String> {
    Selector::from_label_selector(set.spec.as_ref().map(|s| &s.selector))
}
