//! The PersistentVolume binder (upstream `pkg/controller/volume/persistentvolume`, run as
//! `persistentvolume-binder`): binds claims to volumes and releases volumes whose claim is gone.
//!
//! Claims and volumes are synced separately, as upstream's `syncClaim` and `syncVolume`, each
//! making one step towards the bound state and relying on the other side's informer event (and a
//! 15 s resync) for the next:
//!
//! - An unbound claim takes the smallest Available volume that satisfies it
//!   ([`machinery::persistentvolume::find_matching_volume`]) or the volume it or the volume's
//!   `claimRef` pre-binds. Without one it stays Pending: a class with a provisioner is asked to
//!   provision (the `volume.kubernetes.io/storage-provisioner` annotation the external
//!   provisioner acts on, see [`crate::localpath`]); a WaitForFirstConsumer claim is left to the
//!   scheduler until it sets `volume.kubernetes.io/selected-node` or binds a volume itself.
//! - Binding writes the volume's `claimRef` (+ `pv.kubernetes.io/bound-by-controller`) and phase
//!   Bound, then the claim's `volumeName` (+ `pv.kubernetes.io/bind-completed`), phase Bound,
//!   capacity and access modes.
//! - A bound claim whose volume is gone or bound elsewhere becomes Lost.
//! - A volume whose claim is gone becomes Released and is reclaimed by its policy: Retain keeps
//!   it Released, Delete deletes it — unless an external provisioner made it, which then deletes
//!   it (and its data) itself; Recycle is not supported (Failed).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use machinery::events::EventRecorder;
use machinery::informer::{key_of, split_key, HandlerFns, Informer};
use machinery::persistentvolume::{
    check_volume_satisfies_claim, claim_class, find_matching_volume, has_annotation,
    is_delay_binding, is_volume_bound_to_claim, ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER,
};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// Upstream's `--pvclaimbinder-sync-period` default.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// The event source (upstream `persistentvolume-controller`).
pub const COMPONENT: &str = "persistentvolume-controller";

/// What the binder syncs: a claim (`namespace/name`) or a volume (`name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Claim(String),
    Volume(String),
}

/// Errors of one sync (the key is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{what} {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err(what: &'static str, name: &str) -> impl FnOnce(kube::Error) -> SyncError + use<> {
    let name = name.to_string();
    move |source| SyncError::Api { what, name, source }
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let c = Binder::new(&ctx);
    c.claims.wait_synced().await;
    c.volumes.wait_synced().await;
    c.classes.wait_synced().await;
    tracing::info!("persistentvolume-binder: caches synced");
    let resync = c.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SYNC_PERIOD).await;
            resync.resync();
        }
    });
    let this = c.clone();
    run_workers(c.queue.clone(), 2, move |key: Key| {
        let this = this.clone();
        async move { this.sync(&key).await }
    })
    .await;
    Ok(())
}

/// The binder's informers, queue and writers.
#[derive(Clone)]
pub struct Binder {
    client: kube::Client,
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    queue: WorkQueue<Key>,
    recorder: EventRecorder,
}

fn name_of<K: kube::Resource>(o: &K) -> &str {
    o.meta().name.as_deref().unwrap_or_default()
}

fn claim_volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

fn volume_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn reclaim_policy(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

fn set_annotation(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, k: &str) {
    meta.annotations
        .get_or_insert_with(Default::default)
        .insert(k.to_string(), "yes".to_string());
}

impl Binder {
    pub fn new(ctx: &ControllerContext) -> Binder {
        let b = Binder {
            client: ctx.client.clone(),
            claims: ctx.informers.informer(),
            volumes: ctx.informers.informer(),
            classes: ctx.informers.informer(),
            queue: WorkQueue::new("persistentvolume-binder"),
            recorder: ctx.recorder(COMPONENT),
        };
        b.register();
        b
    }

    fn register(&self) {
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.claims
            .add_handler(HandlerFns::<PersistentVolumeClaim> {
                add: Some(Box::new(move |c| {
                    a.queue.add(Key::Claim(key_of(c.as_ref())))
                })),
                update: Some(Box::new(move |_, c| {
                    u.queue.add(Key::Claim(key_of(c.as_ref())))
                })),
                delete: Some(Box::new(move |c| d.claim_deleted(c))),
            });
        let (a, u, d) = (self.clone(), self.clone(), self.clone());
        self.volumes.add_handler(HandlerFns::<PersistentVolume> {
            add: Some(Box::new(move |v| a.volume_changed(v))),
            update: Some(Box::new(move |_, v| u.volume_changed(v))),
            delete: Some(Box::new(move |v| d.volume_changed(v))),
        });
        let r = self.clone();
        let any = move || r.queue_pending_claims();
        let any = Arc::new(any);
        let (a, u) = (any.clone(), any);
        self.classes.add_handler(HandlerFns::<StorageClass> {
            add: Some(Box::new(move |_| a())),
            update: Some(Box::new(move |_, _| u())),
            delete: None,
        });
    }

    /// A claim is gone: its volume is released.
    fn claim_deleted(&self, c: &Arc<PersistentVolumeClaim>) {
        let vol = claim_volume_name(c);
        if !vol.is_empty() {
            self.queue.add(Key::Volume(vol.to_string()));
        }
        for v in self.volumes.list_filtered(|v| {
            claim_ref(v)
                .is_some_and(|r| r.name == c.metadata.name && r.namespace == c.metadata.namespace)
        }) {
            self.queue.add(Key::Volume(name_of(v.as_ref()).to_string()));
        }
    }

    /// A volume changed: sync it, the claim it names, and every pending claim it may now fit.
    fn volume_changed(&self, v: &Arc<PersistentVolume>) {
        self.queue.add(Key::Volume(name_of(v.as_ref()).to_string()));
        if let Some(r) = claim_ref(v) {
            let (ns, name) = (r.namespace.as_deref(), r.name.as_deref());
            if let (Some(ns), Some(name)) = (ns, name) {
                self.queue.add(Key::Claim(format!("{ns}/{name}")));
            }
        }
        self.queue_pending_claims();
    }

    fn queue_pending_claims(&self) {
        for c in self
            .claims
            .list_filtered(|c| claim_volume_name(c).is_empty())
        {
            self.queue.add(Key::Claim(key_of(c.as_ref())));
        }
    }

    /// Upstream's periodic resync of every claim and volume.
    fn resync(&self) {
        for c in self.claims.list() {
            self.queue.add(Key::Claim(key_of(c.as_ref())));
        }
        for v in self.volumes.list() {
            self.queue.add(Key::Volume(name_of(v.as_ref()).to_string()));
        }
    }

    pub async fn sync(&self, key: &Key) -> Result<(), SyncError> {
        match key {
            Key::Claim(k) => {
                let (ns, name) = split_key(k);
                match self.claims.get(ns, name) {
                    Some(c) if c.metadata.deletion_timestamp.is_none() => self.sync_claim(&c).await,
                    _ => Ok(()),
                }
            }
            Key::Volume(name) => match self.volumes.get("", name) {
                Some(v) => self.sync_volume(&v).await,
                None => Ok(()),
            },
        }
    }

    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = claim_class(claim);
        (!name.is_empty())
            .then(|| self.classes.get("", name))
            .flatten()
    }

    // ----- claims (upstream syncClaim) -----

    async fn sync_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), SyncError> {
        if has_annotation(claim.metadata.annotations.as_ref(), ANN_BIND_COMPLETED) {
            self.sync_bound_claim(claim).await
        } else {
            self.sync_unbound_claim(claim).await
        }
    }

    async fn sync_unbound_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), SyncError> {
        let wanted = claim_volume_name(claim);
        if wanted.is_empty() {
            let class = self.class_of(claim);
            let delay = is_delay_binding(class.as_deref());
            let volumes = self.volumes.list();
            let found = find_matching_volume(claim, &volumes, delay, None, &HashSet::new());
            if let Some(pv) = found {
                return self.bind(&pv, claim).await;
            }
            let selected = has_annotation(claim.metadata.annotations.as_ref(), ANN_SELECTED_NODE);
            if delay && !selected {
                self.recorder.normal(
                    claim,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding".into(),
                );
            } else if !claim_class(claim).is_empty() {
                if let Some(updated) = self.provision(claim, class.as_deref()).await? {
                    return self.set_claim_phase(&updated, "Pending", None).await;
                }
            } else {
                self.recorder.normal(
                    claim,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set"
                        .into(),
                );
            }
            return self.set_claim_phase(claim, "Pending", None).await;
        }
        // The user (or the scheduler) chose the volume.
        let Some(pv) = self.volumes.get("", wanted) else {
            return self.set_claim_phase(claim, "Pending", None).await;
        };
        if claim_ref(&pv).is_none() || is_volume_bound_to_claim(&pv, claim) {
            if let Err(why) = check_volume_satisfies_claim(&pv, claim) {
                self.recorder.warning(
                    claim,
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume {wanted:?}: {why}"),
                );
                return self.set_claim_phase(claim, "Pending", None).await;
            }
            return self.bind(&pv, claim).await;
        }
        self.recorder.warning(
            claim,
            "FailedBinding",
            format!("volume {wanted:?} already bound to a different claim."),
        );
        self.set_claim_phase(claim, "Pending", None).await
    }

    async fn sync_bound_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), SyncError> {
        let wanted = claim_volume_name(claim);
        if wanted.is_empty() {
            return self
                .claim_lost(
                    claim,
                    "ClaimLost",
                    "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
                )
                .await;
        }
        let Some(pv) = self.volumes.get("", wanted) else {
            return self
                .claim_lost(
                    claim,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                )
                .await;
        };
        if claim_ref(&pv).is_none() || is_volume_bound_to_claim(&pv, claim) {
            return self.bind(&pv, claim).await;
        }
        self.claim_lost(
            claim,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        )
        .await
    }

    async fn claim_lost(
        &self,
        claim: &PersistentVolumeClaim,
        reason: &str,
        message: &str,
    ) -> Result<(), SyncError> {
        if claim_phase(claim) != "Lost" {
            self.recorder.warning(claim, reason, message.to_string());
        }
        self.set_claim_phase(claim, "Lost", None).await
    }

    /// Upstream `provisionClaim` for an external provisioner: names it on the claim, which it
    /// watches for. Returns the claim when it was updated.
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: Option<&StorageClass>,
    ) -> Result<Option<PersistentVolumeClaim>, SyncError> {
        let Some(class) = class else {
            self.recorder.warning(
                claim,
                "ProvisioningFailed",
                format!(
                    "storageclass.storage.k8s.io {:?} not found",
                    claim_class(claim)
                ),
            );
            return Ok(None);
        };
        let provisioner = class.provisioner.as_str();
        if provisioner.is_empty() || provisioner == "kubernetes.io/no-provisioner" {
            self.recorder.normal(
                claim,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            );
            return Ok(None);
        }
        let annotations = claim.metadata.annotations.as_ref();
        if annotations
            .and_then(|a| a.get(ANN_STORAGE_PROVISIONER))
            .map(String::as_str)
            == Some(provisioner)
        {
            return Ok(None);
        }
        let mut c = claim.clone();
        let a = c.metadata.annotations.get_or_insert_with(Default::default);
        a.insert(ANN_STORAGE_PROVISIONER.into(), provisioner.into());
        a.insert(ANN_BETA_STORAGE_PROVISIONER.into(), provisioner.into());
        let updated = self
            .claim_api(&c)
            .replace(name_of(&c), &PostParams::default(), &c)
            .await
            .map_err(api_err("annotating claim", name_of(claim)))?;
        self.recorder.normal(
            claim,
            "ExternalProvisioning",
            format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
        );
        Ok(Some(updated))
    }

    fn claim_api(&self, c: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(
            self.client.clone(),
            c.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    /// Upstream `bind`: volume claimRef, volume phase, claim volumeName, claim phase.
    async fn bind(
        &self,
        pv: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), SyncError> {
        let pv_name = name_of(pv).to_string();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        // 1. The volume's claimRef.
        let mut pv = pv.clone();
        let exact = claim_ref(&pv).is_some_and(|r| {
            r.name == claim.metadata.name
                && r.namespace == claim.metadata.namespace
                && r.uid == claim.metadata.uid
        });
        if !exact {
            let by_us = !is_volume_bound_to_claim(&pv, claim);
            let spec = pv.spec.get_or_insert_with(Default::default);
            spec.claim_ref = Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            });
            if by_us {
                set_annotation(&mut pv.metadata, ANN_BOUND_BY_CONTROLLER);
            }
            pv = volumes
                .replace(&pv_name, &PostParams::default(), &pv)
                .await
                .map_err(api_err("binding volume", &pv_name))?;
        }
        // 2. The volume's phase.
        if volume_phase(&pv) != "Bound" {
            pv.status.get_or_insert_with(Default::default).phase = Some("Bound".into());
            volumes
                .replace_status(&pv_name, &PostParams::default(), &pv)
                .await
                .map_err(api_err("updating the phase of volume", &pv_name))?;
        }
        // 3. The claim's volumeName and annotations.
        let claim_name = name_of(claim).to_string();
        let mut c = claim.clone();
        let completed = has_annotation(c.metadata.annotations.as_ref(), ANN_BIND_COMPLETED);
        if claim_volume_name(&c) != pv_name || !completed {
            if claim_volume_name(&c) != pv_name {
                c.spec.get_or_insert_with(Default::default).volume_name = Some(pv_name.clone());
                set_annotation(&mut c.metadata, ANN_BOUND_BY_CONTROLLER);
            }
            set_annotation(&mut c.metadata, ANN_BIND_COMPLETED);
            c = self
                .claim_api(&c)
                .replace(&claim_name, &PostParams::default(), &c)
                .await
                .map_err(api_err("binding claim", &claim_name))?;
        }
        // 4. The claim's status.
        let first = claim_phase(&c) != "Bound";
        self.set_claim_phase(&c, "Bound", Some(&pv)).await?;
        if first {
            tracing::info!(
                "volume {pv_name:?} bound to claim {}/{claim_name}",
                c.metadata.namespace.as_deref().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Writes the claim's phase (and, when bound, the volume's capacity and access modes).
    async fn set_claim_phase(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<(), SyncError> {
        let mut c = claim.clone();
        let status = c.status.get_or_insert_with(Default::default);
        let before = status.clone();
        status.phase = Some(phase.into());
        match volume.and_then(|v| v.spec.as_ref()) {
            Some(spec) => {
                status.capacity.clone_from(&spec.capacity);
                status.access_modes.clone_from(&spec.access_modes);
            }
            None if phase != "Bound" => {
                status.capacity = None;
                status.access_modes = None;
            }
            None => {}
        }
        if *status == before {
            return Ok(());
        }
        let name = name_of(claim).to_string();
        self.claim_api(&c)
            .replace_status(&name, &PostParams::default(), &c)
            .await
            .map_err(api_err("updating the status of claim", &name))?;
        Ok(())
    }

    // ----- volumes (upstream syncVolume) -----

    async fn sync_volume(&self, pv: &PersistentVolume) -> Result<(), SyncError> {
        let Some(r) = claim_ref(pv) else {
            return self.set_volume_phase(pv, "Available", None).await;
        };
        if r.uid.as_deref().unwrap_or_default().is_empty() {
            // Pre-bound by the user to a claim that has not been bound yet.
            return self.set_volume_phase(pv, "Available", None).await;
        }
        let (ns, name) = (
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        let mut claim = self.claims.get(&ns, &name);
        if claim.is_none() {
            // The informer may lag behind a claim that was just created: ask the API server
            // before releasing the volume (upstream does the same).
            let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
            claim = api
                .get_opt(&name)
                .await
                .map_err(api_err("getting claim", &name))?
                .map(Arc::new);
        }
        let claim = claim.filter(|c| c.metadata.uid == r.uid);
        let Some(claim) = claim else {
            if volume_phase(pv) != "Released" && volume_phase(pv) != "Failed" {
                self.set_volume_phase(pv, "Released", None).await?;
            }
            return self.reclaim(pv).await;
        };
        let wanted = claim_volume_name(&claim);
        if wanted.is_empty() || wanted == name_of(pv) {
            // Bound, or half-bound: the claim's sync finishes the job.
            if wanted.is_empty() {
                self.queue.add(Key::Claim(key_of(claim.as_ref())));
            }
            return self.set_volume_phase(pv, "Bound", None).await;
        }
        // The claim is bound to another volume.
        let by_us = has_annotation(pv.metadata.annotations.as_ref(), ANN_BOUND_BY_CONTROLLER);
        let provisioned = has_annotation(pv.metadata.annotations.as_ref(), ANN_PROVISIONED_BY);
        if by_us && provisioned && reclaim_policy(pv) == "Delete" {
            if volume_phase(pv) != "Released" {
                self.set_volume_phase(pv, "Released", None).await?;
            }
            return self.reclaim(pv).await;
        }
        self.unbind_volume(pv, by_us).await
    }

    /// Upstream `unbindVolume`: forget a claim bound elsewhere.
    async fn unbind_volume(&self, pv: &PersistentVolume, by_us: bool) -> Result<(), SyncError> {
        let mut v = pv.clone();
        if by_us {
            if let Some(s) = v.spec.as_mut() {
                s.claim_ref = None;
            }
            if let Some(a) = v.metadata.annotations.as_mut() {
                a.remove(ANN_BOUND_BY_CONTROLLER);
            }
        } else if let Some(r) = v.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
            // Pre-bound by the user: keep the name, forget the old claim's UID.
            r.uid = None;
        }
        let name = name_of(pv).to_string();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let v = volumes
            .replace(&name, &PostParams::default(), &v)
            .await
            .map_err(api_err("unbinding volume", &name))?;
        self.set_volume_phase(&v, "Available", None).await
    }

    async fn set_volume_phase(
        &self,
        pv: &PersistentVolume,
        phase: &str,
        message: Option<&str>,
    ) -> Result<(), SyncError> {
        let status = pv.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some(phase) && status.message.as_deref() == message {
            return Ok(());
        }
        let mut v = pv.clone();
        let s = v.status.get_or_insert_with(Default::default);
        s.phase = Some(phase.into());
        s.message = message.map(str::to_string);
        let name = name_of(pv).to_string();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        volumes
            .replace_status(&name, &PostParams::default(), &v)
            .await
            .map_err(api_err("updating the phase of volume", &name))?;
        Ok(())
    }

    /// Upstream `reclaimVolume` for a Released volume.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<(), SyncError> {
        let name = name_of(pv).to_string();
        match reclaim_policy(pv) {
            "Retain" => Ok(()),
            "Delete" => {
                if has_annotation(pv.metadata.annotations.as_ref(), ANN_PROVISIONED_BY) {
                    // Its provisioner deletes it (and the data) when it sees it Released.
                    return Ok(());
                }
                let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
                match volumes.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {
                        tracing::info!("volume {name:?} deleted (reclaim policy Delete)");
                        Ok(())
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => {
                        self.recorder
                            .warning(pv, "VolumeFailedDelete", e.to_string());
                        Err(api_err("deleting volume", &name)(e))
                    }
                }
            }
            other => {
                let msg = format!("reclaim policy {other:?} is not supported");
                if volume_phase(pv) != "Failed" {
                    self.recorder
                        .warning(pv, "VolumeFailedRecycle", msg.clone());
                }
                self.set_volume_phase(pv, "Failed", Some(&msg)).await
            }
        }
    }
}
