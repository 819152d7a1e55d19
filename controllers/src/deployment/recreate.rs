//! The Recreate strategy (upstream `recreate.go`): every old replica set to zero, wait until
//! none of their pods is left running, then the new replica set to full size.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::sync::is_active;
use super::util::{self, desired, rs_replicas, rs_status};
use super::{DeploymentController, SyncError};
use crate::replicaset::pods::controller_of;

impl DeploymentController {
    /// `rolloutRecreate`.
    pub(super) async fn rollout_recreate(
        &self,
        key: &str,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<(), SyncError> {
        let (new, mut old) = self.get_all_rs(key, d, rs_list.clone(), false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|r| is_active(r)) {
            scaled |= self.scale_rs(key, rs, 0, d).await?;
        }
        if scaled || self.old_pods_running(new.as_ref(), &old) {
            return self.sync_rollout_status(d, new.as_ref(), &old).await;
        }
        let (new, old) = match new {
            Some(n) => (n, old),
            None => {
                let (n, o) = self.get_all_rs(key, d, rs_list, true).await?;
                (
                    n.ok_or_else(|| SyncError::Other("no new replica set".into()))?,
                    o,
                )
            }
        };
        let mut new = new;
        if rs_replicas(&new) == 0 {
            self.scale_rs(key, &mut new, desired(d), d).await?;
        }
        let status = d.status.clone().unwrap_or_default();
        if util::complete(d, &status) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, Some(&new), &old).await
    }

    /// `oldPodsRunning`: an old replica set still reports pods, or a pod of one is not finished.
    fn old_pods_running(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> bool {
        if old.iter().map(|r| rs_status(r).replicas).sum::<i32>() > 0 {
            return true;
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|r| r.metadata.uid.as_deref())
            .collect();
        let new_uid = new.and_then(|r| r.metadata.uid.as_deref());
        let ns = old
            .first()
            .and_then(|r| r.metadata.namespace.clone())
            .unwrap_or_default();
        !self
            .pods
            .list_filtered(|p| {
                p.metadata.namespace.as_deref() == Some(ns.as_str())
                    && controller_of(&p.metadata).is_some_and(|r| {
                        Some(r.uid.as_str()) != new_uid && old_uids.contains(&r.uid.as_str())
                    })
                    && !matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Failed") | Some("Succeeded")
                    )
            })
            .is_empty()
    }
}
