//! The node's half of the built-in local-path provisioner (controllers `localpath`): the delete
//! side of reclaim policy Delete. A local-path volume's data is a directory on one node, so its
//! kubelet removes it — k3s' provisioner runs a helper pod on the node for this instead. During
//! housekeeping the kubelet watches the PersistentVolumes and every few seconds, for each one
//! the local-path provisioner made for this node (node affinity `kubernetes.io/hostname In
//! [this node]`) that is Released with reclaim policy Delete, removes its hostPath directory and
//! then deletes the volume (with its UID as precondition). A directory is only removed when its
//! name has the provisioner's `<pv>_<namespace>_<claim>` layout, so a hand-edited volume cannot
//! point the kubelet at an arbitrary path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::watcher;
use machinery::informer::Informer;
use machinery::persistentvolume::{ANN_PROVISIONED_BY, LOCAL_PATH_PROVISIONER};

/// How often released volumes are looked for.
pub const RECLAIM_PERIOD: Duration = Duration::from_secs(2);
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The directory to remove when `pv` is a released local-path volume of node `node` that is to be
/// deleted.
pub fn reclaimable(pv: &PersistentVolume, node: &str) -> Option<PathBuf> {
    let provisioner = pv.metadata.annotations.as_ref()?.get(ANN_PROVISIONED_BY)?;
    if provisioner != LOCAL_PATH_PROVISIONER || pv.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if pv.status.as_ref()?.phase.as_deref() != Some("Released") {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    if spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete") {
        return None;
    }
    let terms = &spec
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let ours = terms.iter().any(|t| {
        t.match_expressions.iter().flatten().any(|e| {
            e.key == HOSTNAME_LABEL
                && e.operator == "In"
                && e.values.as_deref() == Some(&[node.to_string()][..])
        })
    });
    if !ours {
        return None;
    }
    let path = PathBuf::from(&spec.host_path.as_ref()?.path);
    let name = pv.metadata.name.as_deref()?;
    let file = path.file_name()?.to_str()?;
    let layout_ok = path.is_absolute()
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        && file.starts_with(&format!("{name}_"));
    layout_ok.then_some(path)
}

/// Deletes released local-path volumes of this node and their data.
pub struct LocalPathReclaimer {
    client: kube::Client,
    node: String,
}

impl LocalPathReclaimer {
    pub fn new(client: kube::Client, node: &str) -> LocalPathReclaimer {
        LocalPathReclaimer {
            client,
            node: node.to_string(),
        }
    }

    /// Runs until dropped: one watch of the PersistentVolumes, scanned every [`RECLAIM_PERIOD`].
    /// A kubelet whose identity may not list volumes (a `system:node:<name>` under the Node
    /// authorizer, as an agent's is) does not reclaim: it says so once and returns.
    pub async fn run(self) {
        let probe: Api<PersistentVolume> = Api::all(self.client.clone());
        if let Err(kube::Error::Api(e)) = probe
            .list_metadata(&kube::api::ListParams::default().limit(1))
            .await
        {
            if e.code == 403 {
                tracing::info!(
                    "local-path reclaim is off on this node: its identity may not list \
                     PersistentVolumes ({})",
                    e.message
                );
                return;
            }
        }
        let volumes: Informer<PersistentVolume> =
            Informer::new(Api::all(self.client.clone()), watcher::Config::default());
        volumes.start();
        volumes.wait_synced().await;
        loop {
            for pv in volumes.list() {
                if let Some(dir) = reclaimable(&pv, &self.node) {
                    if let Err(e) = self.reclaim(&pv, dir).await {
                        tracing::warn!("local-path volume {:?}: {e}", pv.metadata.name);
                    }
                }
            }
            tokio::time::sleep(RECLAIM_PERIOD).await;
        }
    }

    /// Removes the volume's directory, then the volume.
    async fn reclaim(&self, pv: &PersistentVolume, dir: PathBuf) -> Result<(), String> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        let shown = dir.display().to_string();
        tokio::task::spawn_blocking(move || remove_dir(&dir))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("removing {shown}: {e}"))?;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pv.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!("deleted local-path volume {name:?} and {shown}");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(format!("deleting: {e}")),
        }
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
        PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
    };

    fn pv(node: &str, phase: &str, policy: &str, path: &str) -> PersistentVolume {
        let mut v = PersistentVolume::default();
        v.metadata.name = Some("pvc-1".into());
        v.metadata.annotations = Some(
            [(
                ANN_PROVISIONED_BY.to_string(),
                LOCAL_PATH_PROVISIONER.to_string(),
            )]
            .into(),
        );
        v.spec = Some(PersistentVolumeSpec {
            persistent_volume_reclaim_policy: Some(policy.into()),
            host_path: Some(HostPathVolumeSource {
                path: path.into(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![node.into()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            ..Default::default()
        });
        v.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        v
    }

    #[test]
    fn only_released_delete_volumes_of_this_node_with_the_layout_are_reclaimed() {
        let good = "/var/lib/capstan/storage/pvc-1_default_data";
        assert_eq!(
            reclaimable(&pv("n1", "Released", "Delete", good), "n1"),
            Some(PathBuf::from(good))
        );
        let cases = [
            ("other node", pv("n2", "Released", "Delete", good)),
            ("still bound", pv("n1", "Bound", "Delete", good)),
            ("retained", pv("n1", "Released", "Retain", good)),
            ("not the layout", pv("n1", "Released", "Delete", "/etc")),
            (
                "relative",
                pv("n1", "Released", "Delete", "pvc-1_default_data"),
            ),
            (
                "escapes",
                pv("n1", "Released", "Delete", "/srv/../etc/pvc-1_default_data"),
            ),
        ];
        for (name, v) in cases {
            assert_eq!(reclaimable(&v, "n1"), None, "{name}");
        }
        let mut foreign = pv("n1", "Released", "Delete", good);
        foreign.metadata.annotations = None;
        assert_eq!(
            reclaimable(&foreign, "n1"),
            None,
            "not provisioned by local-path"
        );
    }
}
