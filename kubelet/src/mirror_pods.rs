//! Mirror pods: the API's view of static pods (upstream `pkg/kubelet/pod/mirror_client.go` and
//! the mirror-pod half of `syncPod` / `HandlePodCleanups`). For every static pod the kubelet
//! keeps a Pod of the same name and namespace in the API, annotated
//! `kubernetes.io/config.mirror=<static pod hash>` and owned by the Node (kind Node, controller
//! true, as upstream 1.20+). A mirror pod is never run — the static pod runs whatever the API
//! says — so deleting it with kubectl only makes the kubelet create it again.
//!
//! [`mirror_actions`] is the pure decision (create / delete per full name); [`MirrorManager`]
//! applies it whenever the static pods or the mirror pods seen through the pod watch change, and
//! retries every few seconds while the API is unreachable or the Node is not registered yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use tokio::sync::watch;

use crate::static_pods::{annotation, full_name, StaticPods, CONFIG_MIRROR_ANNOTATION};

/// How often the mirror pods are reconciled without a change (retries of failed calls).
const RETRY: Duration = Duration::from_secs(5);

/// Mirror pods in the API, by full name (`namespace/name`).
pub type MirrorPods = Arc<BTreeMap<String, Pod>>;

/// What to do about one full name.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorAction {
    /// Create the mirror of this static pod.
    Create(Box<Pod>),
    /// Delete this mirror pod (namespace, name, UID): orphaned, stale, or being deleted.
    Delete {
        namespace: String,
        name: String,
        uid: String,
    },
}

/// Upstream's rules: a static pod without a mirror gets one; a mirror whose hash is not its static
/// pod's, or that is being deleted, is deleted (and re-created once gone); a mirror without a
/// static pod of its full name is an orphan and deleted.
pub fn mirror_actions(static_pods: &[Pod], mirrors: &BTreeMap<String, Pod>) -> Vec<MirrorAction> {
    let mut out = Vec::new();
    let delete = |m: &Pod| MirrorAction::Delete {
        namespace: m.metadata.namespace.clone().unwrap_or_default(),
        name: m.metadata.name.clone().unwrap_or_default(),
        uid: m.metadata.uid.clone().unwrap_or_default(),
    };
    let mut wanted = std::collections::HashSet::new();
    for sp in static_pods {
        let name = full_name(sp);
        wanted.insert(name.clone());
        match mirrors.get(&name) {
            None => out.push(MirrorAction::Create(Box::new(sp.clone()))),
            Some(m) => {
                let hash = sp.metadata.uid.as_deref().unwrap_or_default();
                let stale = annotation(m, CONFIG_MIRROR_ANNOTATION) != Some(hash);
                if stale || m.metadata.deletion_timestamp.is_some() {
                    out.push(delete(m));
                }
            }
        }
    }
    for (name, m) in mirrors {
        if !wanted.contains(name) {
            out.push(delete(m));
        }
    }
    out
}

/// The mirror pod upstream's `CreateMirrorPod` sends for `static_pod`.
pub fn mirror_pod_for(static_pod: &Pod, node_name: &str, node_uid: &str) -> Pod {
    let mut pod = static_pod.clone();
    let hash = static_pod.metadata.uid.clone().unwrap_or_default();
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    pod.metadata.creation_timestamp = None;
    pod.status = None;
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_MIRROR_ANNOTATION.into(), hash);
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    pod
}

/// Keeps the API's mirror pods in line with the static pods.
pub struct MirrorManager {
    client: kube::Client,
    node_name: String,
    node_uid: Option<String>,
}

impl MirrorManager {
    pub fn new(client: kube::Client, node_name: String) -> MirrorManager {
        MirrorManager {
            client,
            node_name,
            node_uid: None,
        }
    }

    /// Runs until both inputs are closed.
    pub async fn run(
        mut self,
        mut statics: watch::Receiver<StaticPods>,
        mut mirrors: watch::Receiver<MirrorPods>,
    ) {
        loop {
            let s = statics.borrow_and_update().clone();
            let m = mirrors.borrow_and_update().clone();
            for action in mirror_actions(&s, &m) {
                if let Err(e) = self.apply(&action).await {
                    tracing::warn!("mirror pod: {e}");
                }
            }
            tokio::select! {
                r = statics.changed() => if r.is_err() { return },
                r = mirrors.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }

    async fn apply(&mut self, action: &MirrorAction) -> Result<(), String> {
        match action {
            MirrorAction::Create(sp) => {
                let node_uid = self.node_uid().await?;
                let pod = mirror_pod_for(sp, &self.node_name, &node_uid);
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => Ok(()),
                    // Seen by the watch shortly; a stale one is deleted then.
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(format!("creating the mirror pod of {}: {e}", full_name(sp))),
                }
            }
            MirrorAction::Delete {
                namespace,
                name,
                uid,
            } => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(name, &dp).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
                    Err(e) => Err(format!("deleting the mirror pod {namespace}/{name}: {e}")),
                }
            }
        }
    }

    /// The Node's UID for the owner reference (upstream `getNodeUID`), fetched once.
    async fn node_uid(&mut self) -> Result<String, String> {
        if let Some(uid) = &self.node_uid {
            return Ok(uid.clone());
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let node = api
            .get(&self.node_name)
            .await
            .map_err(|e| format!("failed to get node UID: {e}"))?;
        let uid = node.metadata.uid.unwrap_or_default();
        if uid.is_empty() {
            return Err("failed to get node UID: node has no UID".into());
        }
        self.node_uid = Some(uid.clone());
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::static_pods::{parse_manifest, CONFIG_HASH_ANNOTATION};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::path::Path;

    fn static_pod(name: &str, image: &str) -> Pod {
        let m = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: {image}}}]}}\n"
        );
        parse_manifest(Path::new("/m/x.yaml"), m.as_bytes(), "n1").unwrap()
    }

    fn mirror_of(sp: &Pod, uid: &str) -> Pod {
        let mut m = mirror_pod_for(sp, "n1", "node-uid");
        m.metadata.uid = Some(uid.into());
        m
    }

    fn by_name(pods: Vec<Pod>) -> BTreeMap<String, Pod> {
        pods.into_iter().map(|p| (full_name(&p), p)).collect()
    }

    #[test]
    fn mirror_pod_carries_hash_annotations_and_node_owner() {
        let sp = static_pod("web", "busybox");
        let m = mirror_pod_for(&sp, "n1", "node-uid");
        let hash = sp.metadata.uid.clone().unwrap();
        assert_eq!(m.metadata.uid, None, "the API assigns the mirror's UID");
        assert_eq!(m.metadata.name, sp.metadata.name);
        assert_eq!(
            annotation(&m, CONFIG_MIRROR_ANNOTATION),
            Some(hash.as_str())
        );
        assert_eq!(annotation(&m, CONFIG_HASH_ANNOTATION), Some(hash.as_str()));
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "n1", "node-uid")
        );
        assert_eq!(owner.controller, Some(true));
        assert!(m.status.is_none());
    }

    #[test]
    fn decisions() {
        let web = static_pod("web", "busybox");
        let web2 = static_pod("web", "nginx");
        let db = static_pod("db", "busybox");
        let del = |m: &Pod| MirrorAction::Delete {
            namespace: "default".into(),
            name: m.metadata.name.clone().unwrap(),
            uid: m.metadata.uid.clone().unwrap(),
        };

        // Missing: create.
        let acts = mirror_actions(std::slice::from_ref(&web), &BTreeMap::new());
        assert_eq!(acts, [MirrorAction::Create(Box::new(web.clone()))]);

        // Up to date: nothing.
        let good = mirror_of(&web, "m1");
        assert!(
            mirror_actions(std::slice::from_ref(&web), &by_name(vec![good.clone()])).is_empty()
        );

        // Edited manifest (new hash): the stale mirror goes.
        assert_eq!(
            mirror_actions(std::slice::from_ref(&web2), &by_name(vec![good.clone()])),
            [del(&good)]
        );

        // Deleted through the API (deletionTimestamp set): deleted for good, then re-created.
        let mut deleting = good.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert_eq!(
            mirror_actions(std::slice::from_ref(&web), &by_name(vec![deleting.clone()])),
            [del(&deleting)]
        );

        // Manifest removed: the orphan goes; other static pods are created.
        let orphan = mirror_of(&db, "m2");
        assert_eq!(
            mirror_actions(
                std::slice::from_ref(&web),
                &by_name(vec![good, orphan.clone()])
            ),
            [del(&orphan)]
        );
    }
}
