//! Rollout progress (upstream `progress.go` and `checkPausedConditions`): the Progressing
//! condition (ReplicaSetUpdated while pods move, NewReplicaSetAvailable when done,
//! ProgressDeadlineExceeded after progressDeadlineSeconds without progress), the ReplicaFailure
//! condition copied from the replica sets, and the paused/resumed markers.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, ReplicaSet};
use k8s_openapi::jiff::Timestamp;
use machinery::informer::key_of;

use super::sync::calculate_status;
use super::util;
use super::{DeploymentController, SyncError};

impl DeploymentController {
    /// `syncRolloutStatus`.
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), SyncError> {
        let mut status = calculate_status(d, new, old);
        if util::progress_deadline(d).is_none() {
            util::remove_condition(&mut status, "Progressing");
        }
        let current = util::condition(&status, "Progressing").cloned();
        let is_complete = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(util::NEW_RS_AVAILABLE);
        if util::progress_deadline(d).is_some() && !is_complete {
            let name = new
                .and_then(|r| r.metadata.name.clone())
                .unwrap_or_default();
            if util::complete(d, &status) {
                let msg = format!("ReplicaSet {name:?} has successfully progressed.");
                util::set_condition(
                    &mut status,
                    util::new_condition("Progressing", "True", util::NEW_RS_AVAILABLE, msg),
                );
            } else if util::progressing(d, &status) {
                let msg = format!("ReplicaSet {name:?} is progressing.");
                let mut c = util::new_condition("Progressing", "True", util::RS_UPDATED, msg);
                if let Some(cur) = current.as_ref() {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    util::remove_condition(&mut status, "Progressing");
                }
                util::set_condition(&mut status, c);
            } else if util::timed_out(d, &status, Timestamp::now()) {
                let msg = format!("ReplicaSet {name:?} has timed out progressing.");
                util::set_condition(
                    &mut status,
                    util::new_condition("Progressing", "False", util::TIMED_OUT, msg),
                );
            }
        }
        match replica_failure(new, old) {
            Some(c) => util::set_condition(&mut status, c),
            None => util::remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&status) {
            self.requeue_stuck(d);
            return Ok(());
        }
        self.update_status(d, status).await
    }

    /// `requeueStuckDeployment`: checks the deadline again when it would pass.
    fn requeue_stuck(&self, d: &Deployment) {
        let Some(deadline) = util::progress_deadline(d) else {
            return;
        };
        let status = d.status.clone().unwrap_or_default();
        let Some(c) = util::condition(&status, "Progressing") else {
            return;
        };
        if c.status != "True"
            || util::complete(d, &status)
            || c.reason.as_deref() == Some(util::NEW_RS_AVAILABLE)
        {
            return;
        }
        let Some(updated) = c.last_update_time.as_ref() else {
            return;
        };
        let due = updated.0.as_second() + i64::from(deadline) + 1 - Timestamp::now().as_second();
        let after = Duration::from_secs(due.max(0) as u64);
        self.queue.add_after(key_of(d), after);
    }

    /// Marks a pause or a resume in the Progressing condition, so the deadline does not count
    /// paused time.
    pub(super) async fn check_paused_conditions(
        &self,
        d: &mut Deployment,
    ) -> Result<(), SyncError> {
        if util::progress_deadline(d).is_none() {
            return Ok(());
        }
        let mut status = d.status.clone().unwrap_or_default();
        let cond = util::condition(&status, "Progressing");
        if cond.and_then(|c| c.reason.as_deref()) == Some(util::TIMED_OUT) {
            return Ok(());
        }
        let paused_marked = cond.and_then(|c| c.reason.as_deref()) == Some(util::PAUSED);
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let c = if paused && !paused_marked {
            util::new_condition(
                "Progressing",
                "Unknown",
                util::PAUSED,
                "Deployment is paused".into(),
            )
        } else if !paused && paused_marked {
            util::new_condition(
                "Progressing",
                "Unknown",
                util::RESUMED,
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        util::set_condition(&mut status, c);
        self.update_status(d, status).await
    }
}

/// The first ReplicaFailure condition of the new replica set, else of any old one.
fn replica_failure(new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Option<DeploymentCondition> {
    new.into_iter().chain(old).find_map(|rs| {
        let c = rs
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")?;
        Some(DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: c.last_transition_time.clone(),
            last_update_time: c.last_transition_time.clone(),
        })
    })
}
