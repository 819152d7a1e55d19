//! The garbage collector (upstream `pkg/controller/garbagecollector`): deletes objects whose
//! owners are all gone, and carries out the foreground and orphan deletion policies.
//!
//! Informers over every kind apiserver-lite serves except events (it has no custom resources, so
//! this is what discovery would find: pods, the workload kinds, controller revisions, endpoint
//! slices and endpoints, config maps, secrets, services, service accounts, volumes and claims,
//! quotas and limit ranges, ingresses, network policies, disruption budgets, RBAC objects, nodes,
//! namespaces and leases) feed the [`graph::Graph`]. Two queues of UIDs are
//! worked on:
//!
//! - attempt-to-delete: a dependent whose owners, checked in the graph and otherwise with a live
//!   read (UID compared), are all gone is deleted (background, or foreground when an owner waits
//!   for it and it has dependents of its own; a dependent that still has a live owner only loses
//!   the references to the gone ones). An owner being deleted in the foreground (the
//!   `foregroundDeletion` finalizer) gets its dependents with `blockOwnerDeletion` deleted first;
//!   once none is left, the finalizer is removed so the API server can delete it.
//! - attempt-to-orphan: an owner with the `orphan` finalizer has its reference removed from all
//!   dependents, then the finalizer is removed.
//!
//! The API server sets these finalizers on DELETE with `propagationPolicy` Foreground / Orphan
//! (`kubectl delete --cascade=foreground|orphan`), as upstream's registry does. An owner of a kind
//! outside the list counts as present.

pub mod graph;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Endpoints, Node as CoreNode, PersistentVolumeClaim, Pod, ReplicationController,
    Secret, Service, ServiceAccount,
};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, PersistentVolume, ResourceQuota};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use machinery::informer::{HandlerFns, Object};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;
use serde_json::json;

use crate::replicaset::controller_ref::is_not_found;
use crate::ControllerContext;
use graph::{Graph, Node, Work, FOREGROUND, ORPHAN};

/// Errors of one attempt.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> GcError {
    move |source| GcError::Api { what, source }
}

/// A collected resource kind.
#[derive(Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Whether one of the graph's informers has synced.
type SyncedFn = Box<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct GarbageCollector {
    client: kube::Client,
    graph: Arc<Mutex<Graph>>,
    kinds: Arc<Mutex<HashMap<(String, String), Kind>>>,
    delete_queue: WorkQueue<String>,
    orphan_queue: WorkQueue<String>,
    synced: Arc<Mutex<Vec<SyncedFn>>>,
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let gc = GarbageCollector {
        client: ctx.client.clone(),
        graph: Default::default(),
        kinds: Default::default(),
        delete_queue: WorkQueue::new("garbage_collector_attempt_to_delete"),
        orphan_queue: WorkQueue::new("garbage_collector_attempt_to_orphan"),
        synced: Default::default(),
    };
    gc.watch::<Pod>(&ctx, true);
    gc.watch::<ReplicaSet>(&ctx, true);
    gc.watch::<ReplicationController>(&ctx, true);
    gc.watch::<Deployment>(&ctx, true);
    gc.watch::<DaemonSet>(&ctx, true);
    gc.watch::<StatefulSet>(&ctx, true);
    gc.watch::<ControllerRevision>(&ctx, true);
    gc.watch::<Job>(&ctx, true);
    gc.watch::<CronJob>(&ctx, true);
    gc.watch::<EndpointSlice>(&ctx, true);
    gc.watch::<Endpoints>(&ctx, true);
    gc.watch::<ConfigMap>(&ctx, true);
    gc.watch::<Secret>(&ctx, true);
    gc.watch::<Service>(&ctx, true);
    gc.watch::<ServiceAccount>(&ctx, true);
    gc.watch::<PersistentVolumeClaim>(&ctx, true);
    gc.watch::<Lease>(&ctx, true);
    gc.watch::<CoreNode>(&ctx, false);
    gc.watch::<Namespace>(&ctx, false);
    gc.watch::<PersistentVolume>(&ctx, false);
    gc.watch::<ResourceQuota>(&ctx, true);
    gc.watch::<LimitRange>(&ctx, true);
    gc.watch::<Ingress>(&ctx, true);
    gc.watch::<NetworkPolicy>(&ctx, true);
    gc.watch::<PodDisruptionBudget>(&ctx, true);
    gc.watch::<Role>(&ctx, true);
    gc.watch::<RoleBinding>(&ctx, true);
    gc.watch::<ClusterRole>(&ctx, false);
    gc.watch::<ClusterRoleBinding>(&ctx, false);
    gc.run(ctx.options.concurrent_gc_syncs).await
}

impl GarbageCollector {
    /// Adds kind `K` to the graph's sources.
    fn watch<K: Object>(&self, ctx: &ControllerContext, namespaced: bool) {
        let resource = ApiResource::erase::<K>(&());
        self.kinds.lock().insert(
            (resource.group.clone(), resource.kind.clone()),
            Kind {
                resource,
                namespaced,
            },
        );
        let informer = ctx.informers.informer::<K>();
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        let node = |o: &K| Node::from_meta(&K::api_version(&()), &K::kind(&()), o.meta());
        informer.add_handler(HandlerFns::<K> {
            add: Some(Box::new(move |o| {
                let w = a.graph.lock().upsert(node(o));
                a.dispatch(w);
            })),
            update: Some(Box::new(move |_, o| {
                let w = u.graph.lock().upsert(node(o));
                u.dispatch(w);
            })),
            delete: Some(Box::new(move |o| {
                let w = d
                    .graph
                    .lock()
                    .remove(o.meta().uid.as_deref().unwrap_or_default());
                d.dispatch(w);
            })),
        });
        self.synced
            .lock()
            .push(Box::new(move || informer.has_synced()));
    }

    fn dispatch(&self, w: Work) {
        for uid in w.delete {
            self.delete_queue.add(uid);
        }
        for uid in w.orphan {
            self.orphan_queue.add(uid);
        }
    }

    async fn run(self, workers: usize) -> anyhow::Result<()> {
        while !self.synced.lock().iter().all(|s| s()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        tracing::info!(
            "garbage collector: graph synced ({} objects)",
            self.graph.lock().len()
        );
        let (a, b) = (self.clone(), self.clone());
        tokio::join!(
            run_workers(self.delete_queue.clone(), workers, move |uid: String| {
                let gc = a.clone();
                async move { gc.attempt_to_delete(&uid).await }
            }),
            run_workers(self.orphan_queue.clone(), workers, move |uid: String| {
                let gc = b.clone();
                async move { gc.attempt_to_orphan(&uid).await }
            }),
        );
        Ok(())
    }

    fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        self.kinds
            .lock()
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .cloned()
    }

    fn api(&self, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        }
    }

    /// The live object of a node, if it still is the same object.
    async fn latest(
        &self,
        node: &Node,
    ) -> Result<Option<(Api<DynamicObject>, DynamicObject)>, GcError> {
        let Some(kind) = self.kind(&node.api_version, &node.kind) else {
            return Ok(None);
        };
        let api = self.api(&kind, &node.namespace);
        let obj = api
            .get_opt(&node.name)
            .await
            .map_err(api_err(format!("getting {} {}", node.kind, node.name)))?;
        Ok(obj
            .filter(|o| o.metadata.uid.as_deref() == Some(node.uid.as_str()))
            .map(|o| (api, o)))
    }

    /// Whether an owner exists: `None` gone (or replaced), `Some(true)` exists and waits for its
    /// dependents (foreground), `Some(false)` exists.
    async fn owner_state(
        &self,
        dependent_ns: &str,
        r: &OwnerReference,
    ) -> Result<Option<bool>, GcError> {
        if let Some(n) = self.graph.lock().get(&r.uid) {
            return Ok(Some(n.deleting_dependents()));
        }
        let Some(kind) = self.kind(&r.api_version, &r.kind) else {
            return Ok(Some(false));
        };
        let owner = self
            .api(&kind, dependent_ns)
            .get_opt(&r.name)
            .await
            .map_err(api_err(format!("getting owner {} {}", r.kind, r.name)))?;
        Ok(owner
            .filter(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str()))
            .map(|o| {
                o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND)
            }))
    }

    /// Upstream's `attemptToDeleteItem` (and `processDeletingDependentsItem` for an owner being
    /// deleted in the foreground).
    async fn attempt_to_delete(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph.lock().get(uid).cloned() else {
            return Ok(());
        };
        let Some((api, latest)) = self.latest(&node).await? else {
            return Ok(());
        };
        let meta = &latest.metadata;
        let finalizers = meta.finalizers.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_some() {
            if !finalizers.iter().any(|f| f == FOREGROUND) {
                return Ok(());
            }
            let blocking: Vec<Node> = self
                .graph
                .lock()
                .dependents(uid)
                .into_iter()
                .filter(|d| {
                    d.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
                .collect();
            if blocking.is_empty() {
                tracing::debug!(
                    "{} {}: no blocking dependents left, removing {FOREGROUND}",
                    node.kind,
                    node.name
                );
                return remove_finalizer(&api, &latest, FOREGROUND).await;
            }
            for d in blocking.iter().filter(|d| !d.deleting) {
                self.delete_queue.add(d.uid.clone());
            }
            return Ok(());
        }
        let owners = meta.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(());
        }
        let (mut solid, mut dangling, mut waiting) = (vec![], vec![], vec![]);
        for r in &owners {
            match self.owner_state(&node.namespace, r).await? {
                None => dangling.push(r.uid.clone()),
                Some(true) => waiting.push(r.uid.clone()),
                Some(false) => solid.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Keep the object for its live owners; drop the references to the others.
            let remaining: Vec<&OwnerReference> = owners
                .iter()
                .filter(|r| !dangling.contains(&r.uid) && !waiting.contains(&r.uid))
                .collect();
            return patch_owner_refs(&api, &latest, &remaining).await;
        }
        let has_dependents = !self.graph.lock().dependents(uid).is_empty();
        let policy = if !waiting.is_empty() && has_dependents {
            PropagationPolicy::Foreground
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            PropagationPolicy::Orphan
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::debug!(
            "deleting {} {}/{} (owners gone), propagation {policy:?}",
            node.kind,
            node.namespace,
            node.name
        );
        let params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(node.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&node.name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                Ok(())
            }
            Err(e) => Err(api_err(format!("deleting {} {}", node.kind, node.name))(e)),
        }
    }

    /// Upstream's `attemptToOrphanWorker`: removes the owner's references from its dependents,
    /// then the `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph.lock().get(uid).cloned() else {
            return Ok(());
        };
        if !node.orphaning() {
            return Ok(());
        }
        let dependents = self.graph.lock().dependents(uid);
        for d in dependents {
            let Some((api, latest)) = self.latest(&d).await? else {
                continue;
            };
            let refs = latest.metadata.owner_references.clone().unwrap_or_default();
            let remaining: Vec<&OwnerReference> = refs.iter().filter(|r| r.uid != uid).collect();
            if remaining.len() != refs.len() {
                patch_owner_refs(&api, &latest, &remaining).await?;
            }
        }
        let Some((api, latest)) = self.latest(&node).await? else {
            return Ok(());
        };
        remove_finalizer(&api, &latest, ORPHAN).await
    }
}

/// Replaces an object's owner references (guarded by its resourceVersion).
async fn patch_owner_refs(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    refs: &[&OwnerReference],
) -> Result<(), GcError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": obj.metadata.resource_version}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_err(format!("removing owner references of {name}"))(e)),
    }
}

/// Removes one finalizer (guarded by the resourceVersion).
async fn remove_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<(), GcError> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let finalizers: Vec<&String> = obj
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    if finalizers.len() == obj.metadata.finalizers.as_ref().map_or(0, Vec::len) {
        return Ok(());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.metadata.resource_version}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(api_err(format!("removing finalizer {finalizer} of {name}"))(e)),
    }
}
