//! The ReplicaSet and ReplicationController controllers (upstream `pkg/controller/replicaset`;
//! the replication manager is the same code behind an adapter, and so is ours: one
//! [`ReplicaController`] generic over [`Workload`]).
//!
//! A sync of one replica set: claim its pods ([`controller_ref`]: adopt orphans the selector
//! matches, release pods it no longer matches), then — once the informer has shown every create
//! and delete of the previous sync ([`crate::expectations`]) — create missing pods in slow-start
//! batches (1, 2, 4, …; at most `burstReplicas` = 500 per sync) or delete surplus ones in
//! [`ranking`] order, and finally write the status (replicas, fullyLabeledReplicas,
//! readyReplicas, availableReplicas after minReadySeconds, observedGeneration and the
//! ReplicaFailure condition).

pub mod controller_ref;
pub mod pods;
pub mod ranking;
pub mod selector;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Resource;
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer, Object};
use machinery::workqueue::{run_workers, WorkQueue};
use serde_json::json;

use crate::expectations::UidTrackingExpectations;
use crate::ControllerContext;
use controller_ref::{is_not_found, RefManager};
use pods::{
    controller_of, controller_ref as new_controller_ref, is_active, is_available, is_ready,
};
use selector::Selector;

/// Most pods created or deleted in one sync (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// What the controller needs to know of a ReplicaSet or ReplicationController.
pub trait Workload:
    Object + serde::Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>
{
    const API_VERSION: &'static str;
    const KIND: &'static str;
    /// The event source (`replicaset-controller`, `replication-controller`).
    const COMPONENT: &'static str;
    fn desired(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn selector(&self) -> Result<Selector, String>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn status_of(&self) -> ReplicaStatus;
}

/// The status both kinds share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    /// The ReplicaFailure condition: (reason, message, lastTransitionTime).
    pub failure: Option<(String, String, Option<Time>)>,
}

impl ReplicaStatus {
    fn to_json(&self) -> serde_json::Value {
        let conditions: Vec<_> = self
            .failure
            .iter()
            .map(|(reason, message, at)| {
                json!({"type": "ReplicaFailure", "status": "True", "reason": reason,
                       "message": message, "lastTransitionTime": at})
            })
            .collect();
        json!({"status": {
            "replicas": self.replicas,
            "fullyLabeledReplicas": self.fully_labeled_replicas,
            "readyReplicas": self.ready_replicas,
            "availableReplicas": self.available_replicas,
            "observedGeneration": self.observed_generation,
            "conditions": if conditions.is_empty() { serde_json::Value::Null } else { json!(conditions) },
        }})
    }

    /// Equal apart from the failure condition's timestamp.
    fn same(&self, other: &ReplicaStatus) -> bool {
        let strip = |s: &ReplicaStatus| {
            let mut s = s.clone();
            if let Some(f) = s.failure.as_mut() {
                f.2 = None;
            }
            s
        };
        strip(self) == strip(other)
    }
}

impl Workload for ReplicaSet {
    const API_VERSION: &'static str = "apps/v1";
    const KIND: &'static str = "ReplicaSet";
    const COMPONENT: &'static str = "replicaset-controller";
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector(&self) -> Result<Selector, String> {
        Selector::from_label_selector(self.spec.as_ref().map(|s| &s.selector))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_of(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            failure: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "ReplicaFailure")
                .map(|c| {
                    (
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default(),
                        c.last_transition_time,
                    )
                }),
        }
    }
}

impl Workload for ReplicationController {
    const API_VERSION: &'static str = "v1";
    const KIND: &'static str = "ReplicationController";
    const COMPONENT: &'static str = "replication-controller";
    fn desired(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector(&self) -> Result<Selector, String> {
        // A nil or empty RC selector means "match nothing" (the API server defaults it from the
        // template's labels on create).
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(m) if !m.is_empty() => Ok(Selector::from_map(m)),
            _ => Ok(Selector::nothing()),
        }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_of(&self) -> ReplicaStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: s.ready_replicas.unwrap_or(0),
            available_replicas: s.available_replicas.unwrap_or(0),
            observed_generation: s.observed_generation.unwrap_or(0),
            failure: s
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "ReplicaFailure")
                .map(|c| {
                    (
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default(),
                        c.last_transition_time,
                    )
                }),
        }
    }
}

pub async fn start_replicaset(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_replicaset_syncs;
    ReplicaController::<ReplicaSet>::new(&ctx)
        .run(workers)
        .await
}

pub async fn start_replication_controller(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_rc_syncs;
    ReplicaController::<ReplicationController>::new(&ctx)
        .run(workers)
        .await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Claim(#[from] controller_ref::ClaimError),
    #[error("{0}")]
    Manage(String),
    #[error("updating status of {key}: {source}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

/// The replica-set controller for one kind.
pub struct ReplicaController<K: Workload> {
    client: kube::Client,
    sets: Informer<K>,
    pods: Informer<Pod>,
    queue: WorkQueue<String>,
    expectations: Arc<UidTrackingExpectations>,
    recorder: EventRecorder,
    burst: usize,
}

impl<K: Workload> Clone for ReplicaController<K> {
    fn clone(&self) -> Self {
        ReplicaController {
            client: self.client.clone(),
            sets: self.sets.clone(),
            pods: self.pods.clone(),
            queue: self.queue.clone(),
            expectations: self.expectations.clone(),
            recorder: self.recorder.clone(),
            burst: self.burst,
        }
    }
}

impl<K: Workload> ReplicaController<K> {
    pub fn new(ctx: &ControllerContext) -> Self {
        let rc = ReplicaController {
            client: ctx.client.clone(),
            sets: ctx.informers.informer::<K>(),
            pods: ctx.informers.informer::<Pod>(),
            queue: WorkQueue::new(K::KIND),
            expectations: Arc::new(UidTrackingExpectations::new()),
            recorder: ctx.recorder(K::COMPONENT),
            burst: BURST_REPLICAS,
        };
        rc.register();
        rc
    }

    fn register(&self) {
        let q = self.queue.clone();
        let (q1, q2, q3) = (q.clone(), q.clone(), q.clone());
        let exp = self.expectations.clone();
        self.sets.add_handler(HandlerFns::<K> {
            add: Some(Box::new(move |o| q1.add(key_of(o.as_ref())))),
            update: Some(Box::new(move |_, n| q2.add(key_of(n.as_ref())))),
            delete: Some(Box::new(move |o| {
                let key = key_of(o.as_ref());
                exp.delete(&key);
                q3.add(key);
            })),
        });
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.pods.add_handler(HandlerFns::<Pod> {
            add: Some(Box::new(move |p| a.add_pod(p))),
            update: Some(Box::new(move |o, n| u.update_pod(o, n))),
            delete: Some(Box::new(move |p| d.delete_pod(p))),
        });
    }

    /// The replica set `pod`'s controller reference names, if it is one of ours.
    fn resolve(&self, pod: &Pod) -> Option<Arc<K>> {
        let r = controller_of(&pod.metadata)?;
        if r.kind != K::KIND {
            return None;
        }
        let set = self
            .sets
            .get(pod.metadata.namespace.as_deref().unwrap_or(""), &r.name)?;
        (set.meta().uid.as_deref() == Some(r.uid.as_str())).then_some(set)
    }

    /// The replica sets whose selector matches an orphan pod.
    fn matching_sets(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        self.sets
            .list_namespace(ns)
            .into_iter()
            .filter(|s| {
                s.selector()
                    .is_ok_and(|sel| !sel.is_empty() && sel.matches(pod.metadata.labels.as_ref()))
            })
            .collect()
    }

    fn add_pod(&self, pod: &Arc<Pod>) {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.delete_pod(pod);
        }
        if controller_of(&pod.metadata).is_some() {
            if let Some(set) = self.resolve(pod) {
                let key = key_of(set.as_ref());
                self.expectations.creation_observed(&key);
                self.queue.add(key);
            }
            return;
        }
        for s in self.matching_sets(pod) {
            self.queue.add(key_of(s.as_ref()));
        }
    }

    fn update_pod(&self, old: &Arc<Pod>, cur: &Arc<Pod>) {
        let labels_changed = old.metadata.labels != cur.metadata.labels;
        if cur.metadata.deletion_timestamp.is_some() {
            self.delete_pod(cur);
            if labels_changed {
                self.delete_pod(old);
            }
            return;
        }
        let (old_ref, cur_ref) = (controller_of(&old.metadata), controller_of(&cur.metadata));
        let ref_changed = old_ref != cur_ref;
        if ref_changed && old_ref.is_some() {
            if let Some(s) = self.resolve(old) {
                self.queue.add(key_of(s.as_ref()));
            }
        }
        if cur_ref.is_some() {
            if let Some(s) = self.resolve(cur) {
                let key = key_of(s.as_ref());
                let min_ready = s.min_ready_seconds();
                if !is_ready(old) && is_ready(cur) && min_ready > 0 {
                    // Check availability again once minReadySeconds have passed.
                    self.queue
                        .add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
                }
                self.queue.add(key);
            }
            return;
        }
        if labels_changed || ref_changed {
            for s in self.matching_sets(cur) {
                self.queue.add(key_of(s.as_ref()));
            }
        }
    }

    fn delete_pod(&self, pod: &Arc<Pod>) {
        if let Some(set) = self.resolve(pod) {
            let key = key_of(set.as_ref());
            self.expectations
                .deletion_observed(&key, &key_of(pod.as_ref()));
            self.queue.add(key);
        }
    }

    /// Runs the workers once the informers have synced.
    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        tracing::info!("{} controller: caches synced", K::KIND);
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    /// Pods owned (through a controller reference) by sets with the same controller as `set`:
    /// upstream's `getIndirectlyRelatedPods`, the neighbourhood used for ranking.
    fn related_pods(&self, set: &K) -> Vec<Arc<Pod>> {
        let ns = set.meta().namespace.as_deref().unwrap_or("");
        let mut uids: HashSet<String> = set.meta().uid.iter().cloned().collect();
        if let Some(owner) = controller_of(set.meta()) {
            for s in self.sets.list_namespace(ns) {
                if controller_of(s.meta()).is_some_and(|r| r.uid == owner.uid) {
                    uids.extend(s.meta().uid.clone());
                }
            }
        }
        self.pods.list_filtered(|p| {
            p.metadata.namespace.as_deref() == Some(ns)
                && controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid))
        })
    }

    /// One sync of `key` (upstream's `syncReplicaSet`).
    pub async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(set) = self.sets.get_by_key(key) else {
            self.expectations.delete(key);
            return Ok(());
        };
        let (ns, name) = split_key(key);
        let selector = match set.selector() {
            Ok(s) => s,
            Err(e) => {
                // A selector the API server should have refused: nothing to do until it changes.
                tracing::warn!("{key}: invalid selector: {e}");
                return Ok(());
            }
        };
        let needs_sync =
            self.expectations.satisfied(key) && set.meta().deletion_timestamp.is_none();
        let candidates: Vec<Arc<Pod>> = self
            .pods
            .list_filtered(|p| p.metadata.namespace.as_deref() == Some(ns) && is_active(p));
        let manager = RefManager::new(
            self.client.clone(),
            Api::<K>::namespaced(self.client.clone(), ns),
            set.meta(),
            K::API_VERSION,
            K::KIND,
            &selector,
        );
        let owned = manager.claim(candidates).await?;
        let manage_err = if needs_sync {
            self.manage_replicas(key, &set, &owned).await.err()
        } else {
            None
        };
        let now = Timestamp::now();
        let status = calculate_status(&*set, &owned, manage_err.as_ref(), now);
        let current = set.status_of();
        if !status.same(&current) {
            Api::<K>::namespaced(self.client.clone(), ns)
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(status.to_json()),
                )
                .await
                .map_err(|source| SyncError::Status {
                    key: key.into(),
                    source,
                })?;
        }
        let min_ready = set.min_ready_seconds();
        if manage_err.is_none()
            && min_ready > 0
            && status.ready_replicas == set.desired()
            && status.available_replicas != set.desired()
        {
            self.queue
                .add_after(key.to_string(), Duration::from_secs(min_ready as u64));
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Creates or deletes pods so `owned` reaches the desired count (`manageReplicas`).
    async fn manage_replicas(
        &self,
        key: &str,
        set: &Arc<K>,
        owned: &[Arc<Pod>],
    ) -> Result<(), SyncError> {
        let (ns, name) = split_key(key);
        let diff = owned.len() as i64 - i64::from(set.desired());
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        if diff < 0 {
            let n = ((-diff) as usize).min(self.burst);
            let Some(template) = set.template() else {
                return Err(SyncError::Manage(format!("{key} has no pod template")));
            };
            self.expectations.expect_creations(key, n);
            let owner = new_controller_ref(K::API_VERSION, K::KIND, set.meta());
            let pod = pods::pod_from_template(template, ns, name, owner);
            tracing::debug!(
                "{key}: too few replicas, need {}, creating {n}",
                set.desired()
            );
            let (ok, err) = pods::slow_start_batch(n, pods::SLOW_START_INITIAL_BATCH, || {
                let api = api.clone();
                let pod = pod.clone();
                let set = set.clone();
                let recorder = self.recorder.clone();
                async move {
                    match api.create(&PostParams::default(), &pod).await {
                        Ok(p) => {
                            recorder.normal(
                                set.as_ref(),
                                "SuccessfulCreate",
                                format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                            );
                            Ok(())
                        }
                        Err(e) => {
                            recorder.warning(
                                set.as_ref(),
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
                // Creates that failed or were never tried will not be observed.
                self.expectations.lower_creations(key, n - ok);
            }
            if let Some(e) = err {
                return Err(SyncError::Manage(format!("creating pods for {key}: {e}")));
            }
        } else if diff > 0 {
            let n = (diff as usize).min(self.burst);
            tracing::debug!(
                "{key}: too many replicas, need {}, deleting {n}",
                set.desired()
            );
            let related = self.related_pods(set);
            let victims = ranking::pods_to_delete(owned, &related, n, Timestamp::now());
            let keys: Vec<String> = victims.iter().map(|p| key_of(p.as_ref())).collect();
            self.expectations.expect_deletions(key, &keys);
            let results = futures::future::join_all(victims.iter().map(|p| {
                let api = api.clone();
                let pod_name = p.metadata.name.clone().unwrap_or_default();
                async move {
                    (
                        pod_name.clone(),
                        api.delete(&pod_name, &DeleteParams::default()).await,
                    )
                }
            }))
            .await;
            let mut first_err = None;
            for ((pod_name, r), pod_key) in results.into_iter().zip(&keys) {
                match r {
                    Ok(_) => self.recorder.normal(
                        set.as_ref(),
                        "SuccessfulDelete",
                        format!("Deleted pod: {pod_name}"),
                    ),
                    Err(e) => {
                        // The deletion will not be observed (a pod already gone was).
                        if !is_not_found(&e) {
                            self.expectations.deletion_observed(key, pod_key);
                            self.recorder.warning(
                                set.as_ref(),
                                "FailedDelete",
                                format!("Error deleting: {e}"),
                            );
                            first_err.get_or_insert(format!("deleting pod {pod_name}: {e}"));
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(SyncError::Manage(e));
            }
        }
        Ok(())
    }
}

/// The status of a set owning `owned` (upstream's `calculateStatus`).
pub fn calculate_status<K: Workload>(
    set: &K,
    owned: &[Arc<Pod>],
    manage_err: Option<&SyncError>,
    now: Timestamp,
) -> ReplicaStatus {
    let template_labels: BTreeMap<String, String> = set
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = set.min_ready_seconds();
    let mut st = ReplicaStatus {
        replicas: owned.len() as i32,
        observed_generation: set.meta().generation.unwrap_or(0),
        failure: set.status_of().failure,
        ..Default::default()
    };
    for p in owned {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            st.fully_labeled_replicas += 1;
        }
        if is_ready(p) {
            st.ready_replicas += 1;
            if is_available(p, min_ready, now) {
                st.available_replicas += 1;
            }
        }
    }
    match manage_err {
        Some(e) if st.failure.is_none() => {
            let reason = if owned.len() < set.desired() as usize {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            st.failure = Some((reason.into(), e.to_string(), Some(Time(now))));
        }
        None => st.failure = None,
        Some(_) => {}
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("v".to_string(), "1".to_string()),
        ]
        .into();
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: None,
                }),
            }),
            status: None,
        }
    }

    fn pod(full_labels: bool, ready_at: Option<i64>) -> Arc<Pod> {
        let mut p = Pod::default();
        let mut labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        if full_labels {
            labels.insert("v".into(), "1".into());
        }
        p.metadata.labels = Some(labels);
        p.status = Some(PodStatus {
            conditions: ready_at.map(|t| {
                vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn status_counts_labeled_ready_and_available_pods() {
        let now = Timestamp::from_second(1000).unwrap();
        let pods = vec![pod(true, Some(990)), pod(true, Some(900)), pod(false, None)];
        let st = calculate_status(&rs(3, 30), &pods, None, now);
        assert_eq!(
            (
                st.replicas,
                st.fully_labeled_replicas,
                st.ready_replicas,
                st.available_replicas,
                st.observed_generation
            ),
            (3, 2, 2, 1, 3)
        );
        assert!(st.failure.is_none());
        let err = SyncError::Manage("quota exceeded".into());
        let st = calculate_status(&rs(5, 0), &pods, Some(&err), now);
        assert_eq!(
            st.failure.as_ref().map(|f| f.0.as_str()),
            Some("FailedCreate")
        );
        assert_eq!(st.available_replicas, 2);
    }

    #[test]
    fn rc_selector_from_map_and_pod_names_from_the_set() {
        let mut rc = ReplicationController::default();
        assert!(!rc.selector().unwrap().matches(Some(&BTreeMap::new())));
        rc.spec = Some(k8s_openapi::api::core::v1::ReplicationControllerSpec {
            selector: Some([("a".to_string(), "b".to_string())].into()),
            ..Default::default()
        });
        assert!(rc
            .selector()
            .unwrap()
            .matches(Some(&[("a".to_string(), "b".to_string())].into())));
        let set = rs(1, 0);
        let owner = new_controller_ref("apps/v1", "ReplicaSet", &set.metadata);
        let p = pods::pod_from_template(set.template().unwrap(), "ns", "web", owner);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let r = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (r.controller, r.block_owner_deletion),
            (Some(true), Some(true))
        );
    }
}
