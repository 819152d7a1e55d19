//! Finding and creating the new replica set, scaling, history cleanup and status (upstream
//! `sync.go`).

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::util::{self, desired, rs_replicas, rs_status};
use super::{api_err, DeploymentController, SyncError};
use crate::replicaset::controller_ref::is_not_found;
use crate::replicaset::pods::controller_ref;

fn created(rs: &ReplicaSet) -> Option<i64> {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

/// Oldest first, then by name (`ReplicaSetsByCreationTimestamp`).
pub(super) fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Whether a replica set has (or should have) pods.
pub(super) fn is_active(rs: &ReplicaSet) -> bool {
    rs_replicas(rs) > 0
}

impl DeploymentController {
    /// Splits `rs_list` into the new replica set (the oldest whose template equals the
    /// deployment's) and the old ones, creating the new one when asked, and brings revisions up
    /// to date (upstream's `getAllReplicaSetsAndSyncRevision`).
    pub(super) async fn get_all_rs(
        &self,
        key: &str,
        d: &mut Deployment,
        mut rs_list: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), SyncError> {
        rs_list.sort_by(by_creation);
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let pos = rs_list.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| util::equal_ignore_hash(t, &template))
        });
        let existing = pos.map(|i| rs_list.remove(i));
        let old = rs_list;
        let new = self.get_new_rs(key, d, existing, &old, create).await?;
        Ok((new, old))
    }

    async fn get_new_rs(
        &self,
        key: &str,
        d: &mut Deployment,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, SyncError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let rs_api = Api::<ReplicaSet>::namespaced(self.client.clone(), &ns);
        let new_revision = util::max_revision(old) + 1;
        if let Some(mut rs) = existing {
            let annotations_changed = util::set_new_rs_annotations(d, &mut rs, new_revision, true);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                let name = rs.metadata.name.clone().unwrap_or_default();
                let updated = rs_api
                    .replace(&name, &PostParams::default(), &rs)
                    .await
                    .map_err(api_err(format!("updating replica set {name}")))?;
                self.wrote(key, &updated);
                return Ok(Some(updated));
            }
            let rev = util::revision(&rs);
            self.set_deployment_revision(d, rev).await?;
            let mut status = d.status.clone().unwrap_or_default();
            if util::progress_deadline(d).is_some()
                && util::condition(&status, "Progressing").is_none()
            {
                let msg = format!(
                    "Found new replica set {:?}",
                    rs.metadata.name.as_deref().unwrap_or("")
                );
                util::set_condition(
                    &mut status,
                    util::new_condition("Progressing", "True", util::FOUND_NEW_RS, msg),
                );
                self.update_status(d, status).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::compute_hash(&spec.template, collisions);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain(std::iter::once(&rs)).collect();
        let n = util::new_rs_new_replicas(d, &all, &rs);
        util::set_rs_replicas(&mut rs, n);
        util::set_new_rs_annotations(d, &mut rs, new_revision, false);
        let created = match rs_api.create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours already (a retry), or a hash collision: bump collisionCount and retry.
                if let Some(found) = self.sets.get(&ns, &name) {
                    let ours = crate::replicaset::pods::controller_of(&found.metadata)
                        .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                    let same = found
                        .spec
                        .as_ref()
                        .and_then(|s| s.template.as_ref())
                        .is_some_and(|t| util::equal_ignore_hash(t, &spec.template));
                    if ours && same {
                        return Ok(Some((*found).clone()));
                    }
                }
                let mut status = d.status.clone().unwrap_or_default();
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                self.update_status(d, status).await?;
                return Err(SyncError::Other(format!(
                    "replica set {name} already exists (hash collision)"
                )));
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {e}");
                if util::progress_deadline(d).is_some() {
                    let mut status = d.status.clone().unwrap_or_default();
                    util::set_condition(
                        &mut status,
                        util::new_condition(
                            "Progressing",
                            "False",
                            util::FAILED_RS_CREATE,
                            msg.clone(),
                        ),
                    );
                    let _ = self.update_status(d, status).await;
                }
                self.recorder
                    .warning(d, util::FAILED_RS_CREATE, msg.clone());
                return Err(SyncError::Other(msg));
            }
        };
        self.wrote(key, &created);
        if n > 0 {
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} from 0 to {n}"),
            );
        }
        self.set_deployment_revision(d, new_revision).await?;
        if util::progress_deadline(d).is_some() {
            let mut status = d.status.clone().unwrap_or_default();
            let msg = format!("Created new replica set {name:?}");
            util::set_condition(
                &mut status,
                util::new_condition("Progressing", "True", util::NEW_RS_CREATED, msg),
            );
            self.update_status(d, status).await?;
        }
        Ok(Some(created))
    }

    /// Keeps the deployment's revision annotation at its new replica set's revision.
    async fn set_deployment_revision(
        &self,
        d: &mut Deployment,
        revision: i64,
    ) -> Result<(), SyncError> {
        let rev = revision.to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(util::REVISION))
            == Some(&rev)
        {
            return Ok(());
        }
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {util::REVISION: rev}}});
        let updated = Api::<Deployment>::namespaced(self.client.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_err(format!("updating deployment {name}")))?;
        d.metadata = updated.metadata;
        Ok(())
    }

    /// Writes `status` (a merge patch of the whole status) and keeps `d` current.
    pub(super) async fn update_status(
        &self,
        d: &mut Deployment,
        status: DeploymentStatus,
    ) -> Result<(), SyncError> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": status});
        let updated = Api::<Deployment>::namespaced(self.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(api_err(format!("updating status of deployment {name}")))?;
        d.metadata = updated.metadata;
        d.status = updated.status;
        Ok(())
    }

    /// Sets `rs` to `replicas` (and its replica annotations); true when the size changed
    /// (upstream's `scaleReplicaSet`).
    pub(super) async fn scale_rs(
        &self,
        key: &str,
        rs: &mut ReplicaSet,
        replicas: i32,
        d: &Deployment,
    ) -> Result<bool, SyncError> {
        let before = rs_replicas(rs);
        let size_changed = before != replicas;
        let mut copy = rs.clone();
        let annotations_changed =
            util::set_replicas_annotations(&mut copy, desired(d), desired(d) + util::max_surge(d));
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        util::set_rs_replicas(&mut copy, replicas);
        let ns = copy.metadata.namespace.clone().unwrap_or_default();
        let name = copy.metadata.name.clone().unwrap_or_default();
        let updated = Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
            .replace(&name, &PostParams::default(), &copy)
            .await
            .map_err(api_err(format!("scaling replica set {name}")))?;
        self.wrote(key, &updated);
        *rs = updated;
        if size_changed {
            let op = if replicas > before { "up" } else { "down" };
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} from {before} to {replicas}"),
            );
        }
        Ok(size_changed)
    }

    /// `isScalingEvent`: an active replica set was sized for another replica count.
    pub(super) async fn is_scaling_event(
        &self,
        key: &str,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
    ) -> Result<bool, SyncError> {
        let (new, old) = self.get_all_rs(key, d, rs_list.to_vec(), false).await?;
        let n = desired(d);
        Ok(old
            .iter()
            .chain(new.iter())
            .filter(|rs| is_active(rs))
            .any(|rs| {
                rs.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(util::DESIRED_REPLICAS))
                    .and_then(|v| v.parse::<i32>().ok())
                    .is_some_and(|v| v != n)
            }))
    }

    /// Scaling and (when paused) cleanup without a rollout (upstream's `sync`).
    pub(super) async fn sync(
        &self,
        key: &str,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<(), SyncError> {
        let (mut new, mut old) = self.get_all_rs(key, d, rs_list, false).await?;
        self.scale(key, d, &mut new, &mut old).await?;
        if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, new.as_ref(), &old).await
    }

    pub(super) async fn sync_status_only(
        &self,
        key: &str,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<(), SyncError> {
        let (new, old) = self.get_all_rs(key, d, rs_list, false).await?;
        self.sync_status(d, new.as_ref(), &old).await
    }

    /// `syncDeploymentStatus`.
    pub(super) async fn sync_status(
        &self,
        d: &mut Deployment,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<(), SyncError> {
        let status = calculate_status(d, new, old);
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.update_status(d, status).await
    }

    /// `scale`: brings the replica sets to the deployment's size, proportionally during a
    /// rolling update.
    pub(super) async fn scale(
        &self,
        key: &str,
        d: &Deployment,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> Result<(), SyncError> {
        let n = desired(d);
        // One active (or, with none active, the newest) replica set takes everything.
        let active_count = old.iter().filter(|r| is_active(r)).count()
            + new.iter().filter(|r| is_active(r)).count();
        if new.is_some() || !old.is_empty() {
            let target: Option<&mut ReplicaSet> = match active_count {
                0 => match new.as_mut() {
                    Some(rs) => Some(rs),
                    None => old.iter_mut().max_by(|a, b| by_creation(a, b)),
                },
                1 => new
                    .as_mut()
                    .filter(|r| is_active(r))
                    .or_else(|| old.iter_mut().find(|r| is_active(r))),
                _ => None,
            };
            if let Some(rs) = target {
                if rs_replicas(rs) != n {
                    self.scale_rs(key, rs, n, d).await?;
                }
                return Ok(());
            }
        }
        // A saturated new replica set: scale every old one down.
        if let Some(rs) = new.as_ref() {
            let desired_annotation = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(util::DESIRED_REPLICAS))
                .and_then(|v| v.parse::<i32>().ok());
            if rs_replicas(rs) == n
                && desired_annotation == Some(n)
                && rs_status(rs).available_replicas.unwrap_or(0) == n
            {
                for o in old.iter_mut().filter(|r| is_active(r)) {
                    self.scale_rs(key, o, 0, d).await?;
                }
                return Ok(());
            }
        }
        if !util::is_rolling(d) {
            return Ok(());
        }
        let mut all: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .chain(new.iter_mut())
            .filter(|r| is_active(r))
            .collect();
        let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let allowed = if n > 0 { n + util::max_surge(d) } else { 0 };
        let to_add = allowed - current;
        match to_add.cmp(&0) {
            // Larger first; equal sizes: newer first when growing, older first when shrinking.
            Ordering::Greater => all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(b, a))
            }),
            Ordering::Less => all.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(a, b))
            }),
            Ordering::Equal => {}
        }
        let mut added = 0;
        let mut sizes = Vec::with_capacity(all.len());
        for rs in &all {
            if to_add != 0 {
                let p = util::proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        if to_add != 0 {
            if let Some(first) = sizes.first_mut() {
                *first = (*first + to_add - added).max(0);
            }
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale_rs(key, rs, size, d).await?;
        }
        Ok(())
    }

    /// `cleanupDeployment`: deletes the oldest scaled-down replica sets beyond
    /// revisionHistoryLimit.
    pub(super) async fn cleanup(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
    ) -> Result<(), SyncError> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            util::revision(a)
                .cmp(&util::revision(b))
                .then_with(|| by_creation(a, b))
        });
        for rs in cleanable.into_iter().take(diff as usize) {
            let st = rs_status(rs);
            if st.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > st.observed_generation.unwrap_or(0)
            {
                continue;
            }
            let ns = rs.metadata.namespace.clone().unwrap_or_default();
            let name = rs.metadata.name.clone().unwrap_or_default();
            tracing::debug!(
                "deleting old replica set {ns}/{name} beyond the revision history limit"
            );
            match Api::<ReplicaSet>::namespaced(self.client.clone(), &ns)
                .delete(&name, &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(api_err(format!("deleting replica set {name}"))(e)),
            }
            // A write of ours to it will never be observed now.
            if let Some(w) = self.written.lock().get_mut(&machinery::informer::key_of(d)) {
                w.remove(&name);
            }
        }
        Ok(())
    }
}

/// `calculateStatus`: counts from the replica sets, conditions carried over, Available set.
pub(super) fn calculate_status(
    d: &Deployment,
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
) -> DeploymentStatus {
    let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
    let available: i32 = all
        .iter()
        .map(|r| rs_status(r).available_replicas.unwrap_or(0))
        .sum();
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| rs_status(r).replicas).sum()),
        updated_replicas: Some(new.map(|r| rs_status(r).replicas).unwrap_or(0)),
        ready_replicas: Some(
            all.iter()
                .map(|r| rs_status(r).ready_replicas.unwrap_or(0))
                .sum(),
        ),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: current.terminating_replicas,
    };
    if available >= desired(d) - util::max_unavailable(d) {
        util::set_condition(
            &mut status,
            util::new_condition(
                "Available",
                "True",
                util::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        util::set_condition(
            &mut status,
            util::new_condition(
                "Available",
                "False",
                util::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}
