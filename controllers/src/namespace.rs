//! The namespace controller (upstream's pkg/controller/namespace and its `deletion` package): a
//! namespace being deleted (deletionTimestamp set, the `kubernetes` finalizer in
//! `spec.finalizers`) has every namespaced object in it deleted, then the finalizer removed
//! through the `namespaces/{name}/finalize` subresource, upon which the API server removes it.
//!
//! The namespaced resources are found by discovery (every resource that can be listed and
//! deleted), and emptied by a list and background-propagation deletes. While content remains
//! the namespace's conditions say why, with upstream's types, reasons and messages
//! (NamespaceDeletionDiscoveryFailure, NamespaceDeletionContentFailure,
//! NamespaceContentRemaining, NamespaceFinalizersRemaining), and the namespace is looked at
//! again a little later (upstream re-queues with an estimate of the pods' grace periods).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams, PropagationPolicy};
use kube::discovery::{verbs, Discovery, Scope};
use machinery::informer::{key_of, HandlerFns};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";

/// How long to wait before looking again at a namespace whose content is still going.
const RECHECK: Duration = Duration::from_secs(1);

/// Runs the namespace controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<String> = WorkQueue::new("namespace");
    let namespaces = ctx.informers.informer::<Namespace>();
    let (qa, qu) = (queue.clone(), queue.clone());
    namespaces.add_handler(HandlerFns {
        add: Some(Box::new(move |ns: &Arc<Namespace>| {
            qa.add(key_of(ns.as_ref()))
        })),
        update: Some(Box::new(move |_, ns: &Arc<Namespace>| {
            qu.add(key_of(ns.as_ref()))
        })),
        delete: None,
    });
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let client = ctx.client.clone();
    let q = queue.clone();
    run_workers(
        queue,
        ctx.options.concurrent_namespace_syncs,
        move |name: String| {
            let (client, namespaces, q) = (client.clone(), namespaces.clone(), q.clone());
            async move {
                let Some(ns) = namespaces.get("", &name) else {
                    return Ok::<(), kube::Error>(());
                };
                match sync(&client, &ns).await? {
                    Outcome::Done => Ok(()),
                    Outcome::Remaining => {
                        q.add_after(name, RECHECK);
                        Ok(())
                    }
                }
            }
        },
    )
    .await;
    Ok(())
}

/// What one pass over a terminating namespace came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Done,
    Remaining,
}

/// One namespaced resource and how much of it is left.
struct Left {
    resource: String,
    count: usize,
}

/// One pass over namespace `ns` (upstream's `namespacedResourcesDeleter.Delete`).
async fn sync(client: &kube::Client, ns: &Namespace) -> Result<Outcome, kube::Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Outcome::Done);
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Outcome::Done);
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut conditions = Conditions::default();
    let discovery = Discovery::new(client.clone()).run().await;
    let resources: Vec<_> = match &discovery {
        Ok(d) => {
            conditions.discovery_failed(None);
            d.groups()
                .flat_map(|g| g.recommended_resources())
                .filter(|(_, caps)| {
                    caps.scope == Scope::Namespaced
                        && caps.supports_operation(verbs::LIST)
                        && caps.supports_operation(verbs::DELETE)
                })
                .map(|(ar, _)| ar)
                .collect()
        }
        Err(e) => {
            conditions.discovery_failed(Some(e.to_string()));
            Vec::new()
        }
    };
    let mut errors = Vec::new();
    let mut remaining: Vec<Left> = Vec::new();
    let mut finalizers_left: BTreeMap<String, usize> = BTreeMap::new();
    let delete = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for ar in &resources {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &name, ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => {
                errors.push(format!("{}: {e}", ar.plural));
                continue;
            }
        };
        for obj in &list.items {
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let obj_name = obj.metadata.name.clone().unwrap_or_default();
            match api.delete(&obj_name, &delete).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => errors.push(format!("{}/{obj_name}: {e}", ar.plural)),
            }
        }
        // What is left once the deletes went out (graceful deletion, finalizers).
        let mut left = 0;
        if !list.items.is_empty() {
            let after = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    errors.push(format!("{}: {e}", ar.plural));
                    list.items
                }
            };
            for obj in after {
                left += 1;
                for f in obj.metadata.finalizers.iter().flatten() {
                    *finalizers_left.entry(f.clone()).or_default() += 1;
                }
            }
        }
        if left > 0 {
            let resource = if ar.group.is_empty() {
                ar.plural.clone()
            } else {
                format!("{}.{}", ar.plural, ar.group)
            };
            remaining.push(Left {
                resource,
                count: left,
            });
        }
    }
    conditions.content_failed(&errors);
    conditions.content_remaining(&remaining);
    conditions.finalizers_remaining(&finalizers_left);
    let api = Api::<Namespace>::all(client.clone());
    let mut updated = ns.clone();
    if conditions.apply(&mut updated) {
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Outcome::Done),
            Err(e) => return Err(e),
        }
    }
    if discovery.is_err() || !errors.is_empty() || !remaining.is_empty() {
        return Ok(Outcome::Remaining);
    }
    // Empty: remove our finalizer (the API server then deletes the namespace).
    let mut finalize = ns.clone();
    finalize.metadata.resource_version = None;
    if let Some(spec) = finalize.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalize)
        .await
    {
        Ok(_) => Ok(Outcome::Done),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Outcome::Done),
        Err(e) => Err(e),
    }
}

/// The deletion conditions of one pass: (type, status, reason, message).
#[derive(Default)]
struct Conditions(Vec<(&'static str, bool, &'static str, String)>);

impl Conditions {
    fn discovery_failed(&mut self, err: Option<String>) {
        self.0.push(match err {
            None => (
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
            Some(e) => (
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                format!("Discovery failed for some groups: {e}"),
            ),
        });
    }

    fn content_failed(&mut self, errors: &[String]) {
        self.0.push(if errors.is_empty() {
            (
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            (
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    errors.len(),
                    errors.join(", ")
                ),
            )
        });
    }

    fn content_remaining(&mut self, left: &[Left]) {
        self.0.push(if left.is_empty() {
            (
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            let mut parts: Vec<String> = left
                .iter()
                .map(|l| format!("{} has {} resource instances", l.resource, l.count))
                .collect();
            parts.sort();
            (
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        });
    }

    fn finalizers_remaining(&mut self, left: &BTreeMap<String, usize>) {
        self.0.push(if left.is_empty() {
            (
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            let parts: Vec<String> = left
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            (
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            )
        });
    }

    /// Writes the conditions into `ns`; whether anything changed (the transition time moves
    /// only when the status does, as upstream).
    fn apply(&self, ns: &mut Namespace) -> bool {
        let status = ns.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        for (type_, on, reason, message) in &self.0 {
            let status = if *on { "True" } else { "False" };
            match conds.iter_mut().find(|c| c.type_ == *type_) {
                Some(c) => {
                    if c.status != status {
                        c.last_transition_time = Some(Time(now()));
                        c.status = status.into();
                        changed = true;
                    }
                    if c.reason.as_deref() != Some(reason) || c.message.as_deref() != Some(message)
                    {
                        c.reason = Some(reason.to_string());
                        c.message = Some(message.clone());
                        changed = true;
                    }
                }
                None => {
                    conds.push(NamespaceCondition {
                        type_: type_.to_string(),
                        status: status.into(),
                        reason: Some(reason.to_string()),
                        message: Some(message.clone()),
                        last_transition_time: Some(Time(now())),
                    });
                    changed = true;
                }
            }
        }
        changed
    }
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_say_what_remains_as_upstream() {
        let mut c = Conditions::default();
        c.discovery_failed(None);
        c.content_failed(&[]);
        c.content_remaining(&[Left {
            resource: "pods".into(),
            count: 2,
        }]);
        c.finalizers_remaining(&BTreeMap::from([("example.com/x".to_string(), 1)]));
        let mut ns = Namespace::default();
        assert!(c.apply(&mut ns));
        let conds = ns.status.as_ref().unwrap().conditions.as_ref().unwrap();
        let get = |t: &str| conds.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(get("NamespaceDeletionDiscoveryFailure").status, "False");
        let content = get("NamespaceContentRemaining");
        assert_eq!(content.status, "True");
        assert_eq!(content.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            content.message.as_deref(),
            Some("Some resources are remaining: pods has 2 resource instances")
        );
        assert_eq!(
            get("NamespaceFinalizersRemaining").message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances")
        );
        // The same conditions again change nothing.
        assert!(!c.apply(&mut ns));
    }
}
