//! The RollingUpdate strategy (upstream `rolling.go`): grow the new replica set within maxSurge,
//! shrink old ones while at least `replicas - maxUnavailable` pods stay available.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::sync::by_creation;
use super::util::{self, desired, rs_replicas, rs_status};
use super::{DeploymentController, SyncError};

impl DeploymentController {
    /// `rolloutRolling`.
    pub(super) async fn rollout_rolling(
        &self,
        key: &str,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<(), SyncError> {
        let (new, mut old) = self.get_all_rs(key, d, rs_list, true).await?;
        let Some(mut new) = new else {
            return Err(SyncError::Other("no new replica set".into()));
        };
        if self.reconcile_new(key, d, &mut new, &old).await? {
            return self.sync_rollout_status(d, Some(&new), &old).await;
        }
        if self.reconcile_old(key, d, &new, &mut old).await? {
            return self.sync_rollout_status(d, Some(&new), &old).await;
        }
        let status = d.status.clone().unwrap_or_default();
        if util::complete(d, &status) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, Some(&new), &old).await
    }

    /// `reconcileNewReplicaSet`: true when it scaled.
    async fn reconcile_new(
        &self,
        key: &str,
        d: &Deployment,
        new: &mut ReplicaSet,
        old: &[ReplicaSet],
    ) -> Result<bool, SyncError> {
        let n = desired(d);
        let cur = rs_replicas(new);
        if cur == n {
            return Ok(false);
        }
        if cur > n {
            return self.scale_rs(key, new, n, d).await;
        }
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&*new)).collect();
        let next = util::new_rs_new_replicas(d, &all, new);
        self.scale_rs(key, new, next, d).await
    }

    /// `reconcileOldReplicaSets`: true when it scaled down.
    async fn reconcile_old(
        &self,
        key: &str,
        d: &Deployment,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<bool, SyncError> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new);
        let min_available = desired(d) - util::max_unavailable(d);
        let new_unavailable = rs_replicas(new) - util::available_of(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        old.sort_by(by_creation);
        let cleaned = self.cleanup_unhealthy(key, d, old, max_scaled_down).await?;
        let scaled = self.scale_down_old_for_rolling(key, d, new, old).await?;
        Ok(cleaned + scaled > 0)
    }

    /// `cleanupUnhealthyReplicas`: old replica sets lose their unavailable pods first (they
    /// would block the rollout), at most `max` in all.
    async fn cleanup_unhealthy(
        &self,
        key: &str,
        d: &Deployment,
        old: &mut [ReplicaSet],
        max: i32,
    ) -> Result<i32, SyncError> {
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max {
                break;
            }
            let cur = rs_replicas(rs);
            let available = rs_status(rs).available_replicas.unwrap_or(0);
            if cur == 0 || cur <= available {
                continue;
            }
            let down = (max - total).min(cur - available);
            self.scale_rs(key, rs, cur - down, d).await?;
            total += down;
        }
        Ok(total)
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`: oldest first, as far as availability allows.
    async fn scale_down_old_for_rolling(
        &self,
        key: &str,
        d: &Deployment,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> Result<i32, SyncError> {
        let min_available = desired(d) - util::max_unavailable(d);
        let available: i32 = old
            .iter()
            .chain(std::iter::once(new))
            .map(util::available_of)
            .sum();
        if available <= min_available {
            return Ok(0);
        }
        let budget = available - min_available;
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= budget {
                break;
            }
            let cur = rs_replicas(rs);
            if cur == 0 {
                continue;
            }
            let down = cur.min(budget - total);
            self.scale_rs(key, rs, cur - down, d).await?;
            total += down;
        }
        Ok(total)
    }
}
