//! The DaemonSet controller (upstream `pkg/controller/daemon`): one pod per eligible node.
//!
//! A sync of one DaemonSet: claim its pods ([`controller_ref`]), snapshot its template into a
//! ControllerRevision (the current one gets the highest revision number; its hash labels the
//! pods as `controller-revision-hash`, next to `pod-template-generation`), then — once the
//! informer has shown the previous sync's creates and deletes ([`crate::expectations`]) — work
//! out per node what is missing or surplus ([`util::node_needs`]: eligibility by nodeName,
//! nodeSelector, required node affinity, taints against the tolerations plus the daemon
//! defaults), add the rolling update's plan ([`util::rolling_plan`]), create pods pinned to their
//! node by a required `matchFields metadata.name` node affinity (the scheduler binds them, as
//! upstream since 1.12) and delete the rest; finally trim the history to revisionHistoryLimit and
//! write the status.

pub mod util;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;
use serde_json::json;

use crate::deployment::util::compute_hash;
use crate::expectations::UidTrackingExpectations;
use crate::history;
use crate::replicaset::controller_ref::{self, is_not_found, RefManager};
use crate::replicaset::pods::{self, controller_of, controller_ref as new_controller_ref};
use crate::replicaset::selector::Selector;
use crate::ControllerContext;
use util::REVISION_HASH_LABEL;

/// Most pods created or deleted in one sync (upstream's `BurstReplicas` for daemon sets).
pub const BURST_REPLICAS: usize = 250;
const COMPONENT: &str = "daemonset-controller";
const API_VERSION: &str = "apps/v1";
const KIND: &str = "DaemonSet";

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let workers = ctx.options.concurrent_daemonset_syncs;
    DaemonSetController::new(&ctx).run(workers).await
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Claim(#[from] controller_ref::ClaimError),
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("{0}")]
    Manage(String),
    #[error("updating status of {key}: {source}")]
    Status {
        key: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Clone)]
pub struct DaemonSetController {
    client: kube::Client,
    sets: Informer<DaemonSet>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    queue: WorkQueue<String>,
    expectations: Arc<UidTrackingExpectations>,
    recorder: EventRecorder,
}

/// Whether a node change can change where daemon pods should run.
fn node_changed(old: &Node, cur: &Node) -> bool {
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone())
    };
    old.metadata.labels != cur.metadata.labels || old.spec != cur.spec || ready(old) != ready(cur)
}

impl DaemonSetController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let c = DaemonSetController {
            client: ctx.client.clone(),
            sets: ctx.informers.informer::<DaemonSet>(),
            pods: ctx.informers.informer::<Pod>(),
            nodes: ctx.informers.informer::<Node>(),
            revisions: ctx.informers.informer::<ControllerRevision>(),
            queue: WorkQueue::new(KIND),
            expectations: Arc::new(UidTrackingExpectations::new()),
            recorder: ctx.recorder(COMPONENT),
        };
        c.register();
        c
    }

    fn enqueue_all(&self) {
        for ds in self.sets.list() {
            self.queue.add(key_of(ds.as_ref()));
        }
    }

    fn register(&self) {
        let (q1, q2, q3) = (self.queue.clone(), self.queue.clone(), self.queue.clone());
        let exp = self.expectations.clone();
        self.sets.add_handler(HandlerFns::<DaemonSet> {
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
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.nodes.add_handler(HandlerFns::<Node> {
            add: Some(Box::new(move |_| a.enqueue_all())),
            update: Some(Box::new(move |o, n| {
                if node_changed(o, n) {
                    u.enqueue_all()
                }
            })),
            delete: Some(Box::new(move |_| d.enqueue_all())),
        });
        let this = self.clone();
        let owner = move |r: &Arc<ControllerRevision>| {
            if let Some(ds) = this.resolve(&r.metadata) {
                this.queue.add(key_of(ds.as_ref()));
            }
        };
        let (o1, o2, o3) = (owner.clone(), owner.clone(), owner);
        self.revisions
            .add_handler(HandlerFns::<ControllerRevision> {
                add: Some(Box::new(move |r| o1(r))),
                update: Some(Box::new(move |_, r| o2(r))),
                delete: Some(Box::new(move |r| o3(r))),
            });
    }

    /// The DaemonSet an object's controller reference names, if it still exists with that UID.
    fn resolve(
        &self,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) -> Option<Arc<DaemonSet>> {
        let r = controller_of(meta)?;
        if r.kind != KIND {
            return None;
        }
        let ds = self
            .sets
            .get(meta.namespace.as_deref().unwrap_or(""), &r.name)?;
        (ds.metadata.uid.as_deref() == Some(r.uid.as_str())).then_some(ds)
    }

    fn matching_sets(&self, pod: &Pod) -> Vec<Arc<DaemonSet>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        self.sets
            .list_namespace(ns)
            .into_iter()
            .filter(|s| {
                selector(s)
                    .is_ok_and(|sel| !sel.is_empty() && sel.matches(pod.metadata.labels.as_ref()))
            })
            .collect()
    }

    fn add_pod(&self, pod: &Arc<Pod>) {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.delete_pod(pod);
        }
        if controller_of(&pod.metadata).is_some() {
            if let Some(ds) = self.resolve(&pod.metadata) {
                let key = key_of(ds.as_ref());
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
        if cur.metadata.deletion_timestamp.is_some() {
            return self.delete_pod(cur);
        }
        if controller_of(&old.metadata) != controller_of(&cur.metadata) {
            if let Some(ds) = self.resolve(&old.metadata) {
                self.queue.add(key_of(ds.as_ref()));
            }
        }
        if let Some(ds) = self.resolve(&cur.metadata) {
            let key = key_of(ds.as_ref());
            let min_ready = min_ready_seconds(&ds);
            if !pods::is_ready(old) && pods::is_ready(cur) && min_ready > 0 {
                self.queue
                    .add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
            }
            self.queue.add(key);
            return;
        }
        if old.metadata.labels != cur.metadata.labels {
            for s in self.matching_sets(cur) {
                self.queue.add(key_of(s.as_ref()));
            }
        }
    }

    fn delete_pod(&self, pod: &Arc<Pod>) {
        if let Some(ds) = self.resolve(&pod.metadata) {
            let key = key_of(ds.as_ref());
            self.expectations
                .deletion_observed(&key, &key_of(pod.as_ref()));
            self.queue.add(key);
        }
    }

    pub async fn run(self, workers: usize) -> anyhow::Result<()> {
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        self.nodes.wait_synced().await;
        self.revisions.wait_synced().await;
        tracing::info!("DaemonSet controller: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), workers, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    /// One sync of `key` (upstream's `syncDaemonSet`).
    pub async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(ds) = self.sets.get_by_key(key) else {
            self.expectations.delete(key);
            return Ok(());
        };
        let (ns, name) = split_key(key);
        let sel = match selector(&ds) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => {
                self.recorder.warning(
                    ds.as_ref(),
                    "SelectingAll",
                    "This daemon set is selecting all pods. A non-empty selector is required."
                        .into(),
                );
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("{key}: invalid selector: {e}");
                return Ok(());
            }
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let candidates = self
            .pods
            .list_filtered(|p| p.metadata.namespace.as_deref() == Some(ns));
        let manager = RefManager::new(
            self.client.clone(),
            Api::<DaemonSet>::namespaced(self.client.clone(), ns),
            &ds.metadata,
            API_VERSION,
            KIND,
            &sel,
        );
        let owned = manager.claim(candidates).await?;
        let (hash, old_revisions, collision_count) = self.construct_history(&ds).await?;

        let generation = ds.metadata.generation;
        let min_ready = min_ready_seconds(&ds);
        let now = Timestamp::now();
        let nodes = self.nodes.list();
        let eligibility: BTreeMap<String, (bool, bool)> = nodes
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    util::node_should_run(n, &ds),
                )
            })
            .collect();
        let mut node_pods: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in &owned {
            if let Some(n) = util::target_node(p) {
                node_pods.entry(n).or_default().push(p.clone());
            }
        }

        let mut manage_err = None;
        if self.expectations.satisfied(key) {
            let (surge, unavailable) = {
                let desired = eligibility.values().filter(|e| e.0).count() as i32;
                util::surge_and_unavailable(&ds, desired).unwrap_or((0, 1))
            };
            let mut create_on: Vec<String> = Vec::new();
            let mut delete: BTreeSet<String> = BTreeSet::new();
            for (node, (run, cont)) in &eligibility {
                let pods = node_pods.get(node).map(Vec::as_slice).unwrap_or(&[]);
                let (create, del) =
                    util::node_needs(*run, *cont, pods, &hash, surge > 0, min_ready, now);
                if create {
                    create_on.push(node.clone());
                }
                delete.extend(del);
            }
            // Pods meant for nodes that are gone and never bound: nobody else deletes them
            // (`getUnscheduledPodsWithoutNode`); bound ones are the pod GC's.
            for (node, pods) in &node_pods {
                if eligibility.contains_key(node) {
                    continue;
                }
                for p in pods {
                    let bound = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some_and(|n| !n.is_empty());
                    if !bound && p.metadata.deletion_timestamp.is_none() {
                        delete.extend(p.metadata.name.clone());
                    }
                }
            }
            if is_rolling(&ds) {
                // Nodes that should run a pod but have none count as unavailable
                // (`updatedDesiredNodeCounts`).
                let live: BTreeMap<String, Vec<Arc<Pod>>> = eligibility
                    .iter()
                    .filter(|(n, e)| e.0 || node_pods.contains_key(*n))
                    .map(|(n, _)| (n.clone(), node_pods.get(n).cloned().unwrap_or_default()))
                    .collect();
                let plan = util::rolling_plan(
                    &live,
                    &hash,
                    generation,
                    surge,
                    unavailable,
                    min_ready,
                    now,
                    |n| eligibility.get(n).is_some_and(|e| e.0),
                );
                delete.extend(plan.delete);
                for n in plan.create_on {
                    if !create_on.contains(&n) {
                        create_on.push(n);
                    }
                }
            }
            let delete: Vec<Arc<Pod>> = owned
                .iter()
                .filter(|p| p.metadata.name.as_ref().is_some_and(|n| delete.contains(n)))
                .cloned()
                .collect();
            manage_err = self
                .sync_nodes(key, &ds, &hash, create_on, delete)
                .await
                .err();
            self.cleanup_history(&ds, &owned, old_revisions).await?;
        }

        let c = util::counts(
            eligibility.iter().map(|(n, e)| (n.as_str(), e.0)),
            &node_pods,
            &hash,
            generation,
            min_ready,
            now,
        );
        let status = json!({"status": {
            "desiredNumberScheduled": c.desired,
            "currentNumberScheduled": c.current,
            "numberMisscheduled": c.misscheduled,
            "numberReady": c.ready,
            "numberAvailable": c.available,
            "numberUnavailable": c.desired - c.available,
            "updatedNumberScheduled": c.updated,
            "observedGeneration": generation,
            "collisionCount": collision_count,
        }});
        let current =
            serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
        let differs = status["status"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| {
                let cur = current.get(k).cloned().unwrap_or(serde_json::Value::Null);
                let zero = |x: &serde_json::Value| x.is_null() || x == &json!(0);
                !(cur == *v || (zero(&cur) && zero(v)))
            });
        if differs {
            Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .map_err(|source| SyncError::Status {
                    key: key.into(),
                    source,
                })?;
        }
        if manage_err.is_none() && min_ready > 0 && c.available < c.ready {
            self.queue
                .add_after(key.to_string(), Duration::from_secs(min_ready as u64));
        }
        match manage_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The revisions this DaemonSet owns, oldest first.
    fn owned_revisions(&self, ds: &DaemonSet) -> Vec<ControllerRevision> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or("");
        let uid = ds.metadata.uid.as_deref().unwrap_or("");
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
        revs
    }

    /// Upstream's `constructHistory`: the current revision's hash (creating or renumbering the
    /// revision as needed), the old revisions and the collision count.
    async fn construct_history(
        &self,
        ds: &DaemonSet,
    ) -> Result<(String, Vec<ControllerRevision>, Option<i32>), SyncError> {
        let ns = ds.metadata.namespace.as_deref().unwrap_or("");
        let api = Api::<ControllerRevision>::namespaced(self.client.clone(), ns);
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let data = history::template_patch(&template);
        let revs = self.owned_revisions(ds);
        let max = revs.iter().map(|r| r.revision).max().unwrap_or(0);
        let (mut current, old): (Vec<_>, Vec<_>) = revs
            .into_iter()
            .partition(|r| r.data.as_ref().map(|d| &d.0) == Some(&data));
        let mut collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
        let cur = match current.pop() {
            // Duplicates (equal data): keep the newest.
            Some(cur) => {
                for dup in &current {
                    history::delete(&api, dup.metadata.name.as_deref().unwrap_or("")).await?;
                }
                if cur.revision < max {
                    history::renumber(&api, &cur, max + 1).await?
                } else {
                    cur
                }
            }
            None => {
                let hash = compute_hash(&template, collision_count);
                let name = history::revision_name(ds.metadata.name.as_deref().unwrap_or(""), &hash);
                let mut labels = template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                labels.insert(REVISION_HASH_LABEL.into(), hash);
                let rev = ControllerRevision {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.into()),
                        labels: Some(labels),
                        annotations: ds.metadata.annotations.clone(),
                        owner_references: Some(vec![new_controller_ref(
                            API_VERSION,
                            KIND,
                            &ds.metadata,
                        )]),
                        ..Default::default()
                    },
                    data: Some(RawExtension(data.clone())),
                    revision: max + 1,
                };
                match api.create(&PostParams::default(), &rev).await {
                    Ok(r) => r,
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        let existing = api.get_opt(&name).await.map_err(|source| {
                            history::HistoryError::Create {
                                name: name.clone(),
                                source,
                            }
                        })?;
                        match existing {
                            Some(e) if e.data.as_ref().map(|d| &d.0) == Some(&data) => e,
                            _ => {
                                // A hash collision: try the next count on the next sync.
                                collision_count = Some(collision_count.unwrap_or(0) + 1);
                                let patch = json!({"status": {"collisionCount": collision_count}});
                                Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                                    .patch_status(
                                        ds.metadata.name.as_deref().unwrap_or(""),
                                        &PatchParams::default(),
                                        &Patch::Merge(patch),
                                    )
                                    .await
                                    .map_err(|source| SyncError::Status {
                                        key: key_of(ds),
                                        source,
                                    })?;
                                return Err(SyncError::Manage(format!(
                                    "found a hash collision for DaemonSet {:?}, bumping collisionCount",
                                    ds.metadata.name.as_deref().unwrap_or("")
                                )));
                            }
                        }
                    }
                    Err(source) => {
                        return Err(history::HistoryError::Create { name, source }.into())
                    }
                }
            }
        };
        let hash = cur
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_HASH_LABEL))
            .cloned()
            .unwrap_or_else(|| cur.metadata.name.clone().unwrap_or_default());
        Ok((hash, old, collision_count))
    }

    /// `cleanupHistory`: deletes the oldest revisions beyond revisionHistoryLimit that no pod
    /// still runs.
    async fn cleanup_history(
        &self,
        ds: &DaemonSet,
        owned: &[Arc<Pod>],
        old: Vec<ControllerRevision>,
    ) -> Result<(), SyncError> {
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut excess = old.len().saturating_sub(limit);
        if excess == 0 {
            return Ok(());
        }
        let live: HashSet<&str> = owned
            .iter()
            .filter_map(|p| p.metadata.labels.as_ref()?.get(REVISION_HASH_LABEL))
            .map(String::as_str)
            .collect();
        let api = Api::<ControllerRevision>::namespaced(
            self.client.clone(),
            ds.metadata.namespace.as_deref().unwrap_or(""),
        );
        for r in &old {
            if excess == 0 {
                break;
            }
            let h = r
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL));
            if h.is_some_and(|h| live.contains(h.as_str())) {
                continue;
            }
            history::delete(&api, r.metadata.name.as_deref().unwrap_or("")).await?;
            excess -= 1;
        }
        Ok(())
    }

    /// Upstream's `syncNodes`: creates a pod on each of `create_on` (slow-start batches) and
    /// deletes `delete`, within the burst limit, with the expectations set first.
    async fn sync_nodes(
        &self,
        key: &str,
        ds: &Arc<DaemonSet>,
        hash: &str,
        mut create_on: Vec<String>,
        mut delete: Vec<Arc<Pod>>,
    ) -> Result<(), SyncError> {
        create_on.truncate(BURST_REPLICAS);
        delete.truncate(BURST_REPLICAS);
        if create_on.is_empty() && delete.is_empty() {
            return Ok(());
        }
        let (ns, name) = split_key(key);
        let keys: Vec<String> = delete.iter().map(|p| key_of(p.as_ref())).collect();
        self.expectations
            .expect_creations_and_deletions(key, create_on.len(), &keys);
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        let template = util::pod_template(ds, hash);
        let owner = new_controller_ref(API_VERSION, KIND, &ds.metadata);
        let n = create_on.len();
        let nodes = Mutex::new(create_on);
        let (ok, err) = pods::slow_start_batch(n, pods::SLOW_START_INITIAL_BATCH, || {
            let node = nodes.lock().pop().unwrap_or_default();
            let mut t = template.clone();
            if let Some(spec) = t.spec.as_mut() {
                spec.affinity = Some(util::pin_to_node(spec.affinity.take(), &node));
            }
            let pod = pods::pod_from_template(&t, ns, name, owner.clone());
            let (api, ds, recorder) = (api.clone(), ds.clone(), self.recorder.clone());
            async move {
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        recorder.normal(
                            ds.as_ref(),
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.metadata.name.unwrap_or_default()),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        recorder.warning(
                            ds.as_ref(),
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
        let mut first_err = err.map(|e| format!("creating pods for {key}: {e}"));
        let results = futures::future::join_all(delete.iter().map(|p| {
            let api = api.clone();
            let pod_name = p.metadata.name.clone().unwrap_or_default();
            async move {
                let r = api.delete(&pod_name, &DeleteParams::default()).await;
                (pod_name, r)
            }
        }))
        .await;
        for ((pod_name, r), pod_key) in results.into_iter().zip(&keys) {
            match r {
                Ok(_) => self.recorder.normal(
                    ds.as_ref(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {pod_name}"),
                ),
                Err(e) => {
                    self.expectations.deletion_observed(key, pod_key);
                    if !is_not_found(&e) {
                        self.recorder.warning(
                            ds.as_ref(),
                            "FailedDelete",
                            format!("Error deleting: {e}"),
                        );
                        first_err.get_or_insert(format!("deleting pod {pod_name}: {e}"));
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(SyncError::Manage(e)),
            None => Ok(()),
        }
    }
}

fn selector(ds: &DaemonSet) -> Result<Selector, String> {
    Selector::from_label_selector(ds.spec.as_ref().map(|s| &s.selector))
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn is_rolling(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}
