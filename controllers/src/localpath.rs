//! The built-in local-path provisioner (`capstan.io/local-path`), Capstan's counterpart of k3s'
//! rancher local-path-provisioner, run in the controller-manager as the `local-path-provisioner`
//! controller.
//!
//! On start it makes sure the StorageClass `local-path` exists (default class,
//! WaitForFirstConsumer, reclaim Delete). It acts as an external provisioner does: on a claim the
//! PersistentVolume binder ([`crate::persistentvolume`]) annotated with
//! `volume.kubernetes.io/storage-provisioner: capstan.io/local-path`, once the scheduler has put
//! `volume.kubernetes.io/selected-node` on it, it creates a volume `pvc-<claim uid>` pre-bound
//! to the claim: a hostPath of type DirectoryOrCreate under `--local-path-dir` on that node
//! (`<dir>/<pv>_<namespace>_<claim>`, k3s' layout) with required node affinity
//! `kubernetes.io/hostname In [node]`. The node's kubelet creates the directory when a pod first
//! mounts the claim, so unlike k3s no helper pod runs. The binder then binds the claim.
//!
//! A Released volume of ours with reclaim policy Delete is deleted by its node's kubelet, which
//! removes the directory first (kubelet `local_path`; k3s runs a helper pod for that). Only when
//! the node no longer exists — its data went with it — is the volume deleted here.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::persistentvolume::{
    claim_class, is_delay_binding, ANN_DEFAULT_CLASS, ANN_PROVISIONED_BY, ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// The provisioner name in StorageClasses and on the volumes it makes.
pub const PROVISIONER: &str = machinery::persistentvolume::LOCAL_PATH_PROVISIONER;
/// The StorageClass made on start.
pub const CLASS_NAME: &str = "local-path";
/// k3s' `--default-local-storage-path` layout: the volumes' parent directory on every node.
pub const DEFAULT_DIR: &str = "/var/lib/capstan/storage";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What to sync: a claim (`namespace/name`) or a volume (`pv/name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Claim(String),
    Volume(String),
}

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{what} {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The StorageClass `local-path`.
pub fn storage_class() -> StorageClass {
    let mut c = StorageClass {
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    };
    c.metadata.name = Some(CLASS_NAME.into());
    c.metadata.annotations = Some([(ANN_DEFAULT_CLASS.to_string(), "true".to_string())].into());
    c
}

/// The volume provisioned for `claim` on `node` under `dir`, reclaimed per `reclaim_policy`.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    node: &str,
    dir: &str,
    reclaim_policy: &str,
) -> PersistentVolume {
    let ns = claim.metadata.namespace.clone().unwrap_or_default();
    let name = claim.metadata.name.clone().unwrap_or_default();
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let pv_name = format!("pvc-{uid}");
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned();
    let mut pv = PersistentVolume {
        spec: Some(PersistentVolumeSpec {
            capacity: storage.map(|q| [("storage".to_string(), q)].into()),
            access_modes: spec.access_modes.clone(),
            volume_mode: spec.volume_mode.clone(),
            storage_class_name: Some(claim_class(claim).to_string()),
            persistent_volume_reclaim_policy: Some(reclaim_policy.into()),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(ns.clone()),
                name: Some(name.clone()),
                uid: Some(uid),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: format!("{}/{pv_name}_{ns}_{name}", dir.trim_end_matches('/')),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    pv.metadata.name = Some(pv_name);
    pv.metadata.annotations =
        Some([(ANN_PROVISIONED_BY.to_string(), PROVISIONER.to_string())].into());
    pv
}

/// Why a claim cannot be provisioned (k3s' messages), or the node to provision it on.
pub fn provision_target(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
) -> Result<String, String> {
    let modes = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    if modes
        .iter()
        .any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod")
    {
        return Err(
            "NodePath only supports ReadWriteOnce and ReadWriteOncePod access modes".into(),
        );
    }
    if claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some()
    {
        return Err("claim.Spec.Selector is not supported".into());
    }
    match claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE))
    {
        Some(node) if !node.is_empty() => Ok(node.clone()),
        _ if is_delay_binding(Some(class)) => Err(String::new()),
        _ => Err("configuration error, no node was specified".into()),
    }
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let p = Provisioner {
        client: ctx.client.clone(),
        claims: ctx.informers.informer(),
        volumes: ctx.informers.informer(),
        classes: ctx.informers.informer(),
        nodes: ctx.informers.informer(),
        queue: WorkQueue::new("local-path-provisioner"),
        recorder: ctx.recorder(&format!("{PROVISIONER}_{}", std::process::id())),
        dir: ctx.options.local_path_dir.clone(),
    };
    p.register();
    p.ensure_class().await;
    p.claims.wait_synced().await;
    p.volumes.wait_synced().await;
    p.classes.wait_synced().await;
    p.nodes.wait_synced().await;
    tracing::info!(
        "local-path provisioner: caches synced, volumes under {}",
        p.dir
    );
    let this = p.clone();
    run_workers(p.queue.clone(), 2, move |key: Key| {
        let this = this.clone();
        async move { this.sync(&key).await }
    })
    .await;
    Ok(())
}

#[derive(Clone)]
struct Provisioner {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
    queue: WorkQueue<Key>,
    recorder: EventRecorder,
    dir: String,
}

/// The node a volume of ours lives on.
fn node_of(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let e = terms.first()?.match_expressions.as_ref()?.first()?;
    (e.key == HOSTNAME_LABEL).then_some(e.values.as_ref()?.first()?.as_str())
}

fn ours(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER)
}

impl Provisioner {
    fn register(&self) {
        let (a, u) = (self.queue.clone(), self.queue.clone());
        self.claims
            .add_handler(HandlerFns::<PersistentVolumeClaim> {
                add: Some(Box::new(move |c| a.add(Key::Claim(key_of(c.as_ref()))))),
                update: Some(Box::new(move |_, c| u.add(Key::Claim(key_of(c.as_ref()))))),
                delete: None,
            });
        let (a, u) = (self.queue.clone(), self.queue.clone());
        self.volumes.add_handler(HandlerFns::<PersistentVolume> {
            add: Some(Box::new(move |v| {
                if ours(v) {
                    a.add(Key::Volume(key_of(v.as_ref())))
                }
            })),
            update: Some(Box::new(move |_, v| {
                if ours(v) {
                    u.add(Key::Volume(key_of(v.as_ref())))
                }
            })),
            delete: None,
        });
        // A node that goes away takes its volumes' data along: its released volumes go too.
        let (q, volumes) = (self.queue.clone(), self.volumes.clone());
        self.nodes.add_handler(HandlerFns::<Node> {
            add: None,
            update: None,
            delete: Some(Box::new(move |n| {
                for v in
                    volumes.list_filtered(|v| ours(v) && node_of(v) == n.metadata.name.as_deref())
                {
                    q.add(Key::Volume(key_of(v.as_ref())));
                }
            })),
        });
    }

    /// Creates the `local-path` class unless it exists (a changed one is left as it is).
    async fn ensure_class(&self) {
        let api: Api<StorageClass> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &storage_class()).await {
            Ok(_) => tracing::info!("created the default StorageClass {CLASS_NAME:?}"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!("creating StorageClass {CLASS_NAME:?}: {e}"),
        }
    }

    async fn sync(&self, key: &Key) -> Result<(), ProvisionError> {
        match key {
            Key::Claim(k) => {
                let (ns, name) = split_key(k);
                match self.claims.get(ns, name) {
                    Some(c) => self.sync_claim(&c).await,
                    None => Ok(()),
                }
            }
            Key::Volume(name) => match self.volumes.get("", name) {
                Some(v) => self.sync_volume(&v).await,
                None => Ok(()),
            },
        }
    }

    async fn sync_claim(&self, claim: &Arc<PersistentVolumeClaim>) -> Result<(), ProvisionError> {
        let annotations = claim.metadata.annotations.as_ref();
        let asked = annotations
            .and_then(|a| a.get(ANN_STORAGE_PROVISIONER))
            .is_some_and(|p| p == PROVISIONER);
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default()
            .is_empty();
        if !asked || !unbound || claim.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let pv_name = format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default());
        if self.volumes.get("", &pv_name).is_some() {
            return Ok(());
        }
        let Some(class) = self.classes.get("", claim_class(claim)) else {
            return Ok(());
        };
        let node = match provision_target(claim, &class) {
            Ok(node) => node,
            Err(why) if why.is_empty() => return Ok(()),
            Err(why) => {
                self.recorder.warning(
                    claim.as_ref(),
                    "ProvisioningFailed",
                    format!(
                        "failed to provision volume with StorageClass {:?}: {why}",
                        claim_class(claim)
                    ),
                );
                return Ok(());
            }
        };
        self.recorder.normal(
            claim.as_ref(),
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim {:?}",
                key_of(claim.as_ref())
            ),
        );
        let policy = class.reclaim_policy.as_deref().unwrap_or("Delete");
        let pv = volume_for(claim, &node, &self.dir, policy);
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                self.recorder.warning(
                    claim.as_ref(),
                    "ProvisioningFailed",
                    format!(
                        "failed to provision volume with StorageClass {:?}: {source}",
                        claim_class(claim)
                    ),
                );
                return Err(ProvisionError::Api {
                    what: "creating volume",
                    name: pv_name,
                    source,
                });
            }
        }
        self.recorder.normal(
            claim.as_ref(),
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {pv_name}"),
        );
        tracing::info!(
            "provisioned {pv_name} on node {node:?} for claim {}",
            key_of(claim.as_ref())
        );
        Ok(())
    }

    /// Deletes a Released volume of ours whose policy is Delete once its node is gone (the
    /// node's kubelet deletes it, with its data, while the node exists).
    async fn sync_volume(&self, pv: &Arc<PersistentVolume>) -> Result<(), ProvisionError> {
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let delete = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            == Some("Delete");
        if !released || !delete || pv.metadata.deletion_timestamp.is_some() || !ours(pv) {
            return Ok(());
        }
        if node_of(pv).is_some_and(|n| self.nodes.get("", n).is_some()) {
            return Ok(());
        }
        let name = key_of(pv.as_ref());
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!("deleted released volume {name:?}");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(ProvisionError::Api {
                what: "deleting volume",
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn claim(modes: &[&str], node: Option<&str>) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = Some("data".into());
        c.metadata.namespace = Some("db".into());
        c.metadata.uid = Some("1234".into());
        if let Some(n) = node {
            c.metadata.annotations = Some([(ANN_SELECTED_NODE.to_string(), n.to_string())].into());
        }
        c.spec = Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(CLASS_NAME.into()),
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    #[test]
    fn the_volume_is_a_directory_on_the_selected_node_pre_bound_to_the_claim() {
        let c = claim(&["ReadWriteOnce"], Some("n1"));
        let node = provision_target(&c, &storage_class()).unwrap();
        let pv = volume_for(&c, &node, "/srv/storage/", "Delete");
        let spec = pv.spec.unwrap();
        assert_eq!(pv.metadata.name.as_deref(), Some("pvc-1234"));
        let hp = spec.host_path.unwrap();
        assert_eq!(hp.path, "/srv/storage/pvc-1234_db_data");
        assert_eq!(hp.type_.as_deref(), Some("DirectoryOrCreate"));
        let term = &spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms[0];
        let req = &term.match_expressions.as_ref().unwrap()[0];
        assert_eq!(
            (req.key.as_str(), req.operator.as_str()),
            (HOSTNAME_LABEL, "In")
        );
        assert_eq!(req.values.as_deref(), Some(&["n1".to_string()][..]));
        let r = spec.claim_ref.unwrap();
        assert_eq!(
            (r.name.as_deref(), r.uid.as_deref()),
            (Some("data"), Some("1234"))
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some(CLASS_NAME));
        assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
        assert_eq!(
            pv.metadata.annotations.unwrap()[ANN_PROVISIONED_BY],
            PROVISIONER
        );
    }

    #[test]
    fn claims_wait_for_a_node_and_shared_modes_are_refused() {
        let class = storage_class();
        assert_eq!(
            provision_target(&claim(&["ReadWriteOnce"], None), &class),
            Err(String::new())
        );
        let mut immediate = class.clone();
        immediate.volume_binding_mode = Some("Immediate".into());
        assert_eq!(
            provision_target(&claim(&["ReadWriteOnce"], None), &immediate),
            Err("configuration error, no node was specified".into())
        );
        assert_eq!(
            provision_target(&claim(&["ReadWriteMany"], Some("n1")), &class),
            Err("NodePath only supports ReadWriteOnce and ReadWriteOncePod access modes".into())
        );
    }
}
