//! The volume plugins (upstream `framework/plugins/volumebinding`, `volumerestrictions`,
//! `volumezone`).
//!
//! VolumeBinding: every PersistentVolumeClaim the pod uses must exist. A bound claim's volume
//! must allow the node (its node affinity). An unbound claim of an Immediate class makes the pod
//! unschedulable until the PersistentVolume binder binds it; one of a WaitForFirstConsumer class
//! is bound here: Filter accepts a node where a matching Available volume may be used (the
//! binder's [`find_matching_volume`] with the node's affinity check) or where the class's
//! provisioner can make one; Reserve remembers the choice (the volumes it takes are not offered to
//! other pods meanwhile, upstream's assume cache); PreBind writes it — the volume's `claimRef`,
//! or `volume.kubernetes.io/selected-node` on the claim for the provisioner — and waits until
//! every claim is Bound, at most `bindTimeoutSeconds` (600 s), else the pod is retried.
//!
//! VolumeRestrictions: a ReadWriteOncePod claim already in use by another pod makes the pod
//! unschedulable. VolumeZone: a bound volume's zone and region labels must match the node's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use machinery::persistentvolume::{
    claim_class, find_matching_volume, has_annotation, is_delay_binding, ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE,
};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::config::decode_args;
use crate::framework::*;
use crate::labels::NodeSelector;
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const BINDING: &str = "VolumeBinding";
pub const RESTRICTIONS: &str = "VolumeRestrictions";
pub const ZONE: &str = "VolumeZone";
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const ERR_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
pub const ERR_ZONE_CONFLICT: &str = "node(s) had no available volume zone";
/// Upstream's default `bindTimeoutSeconds`.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Claims, volumes and storage classes as the informers last saw them.
#[derive(Debug, Default, Clone)]
pub struct VolumeState {
    /// `namespace/name` → claim.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
}

/// `VolumeBindingArgs` (scoring `shape` is for StorageCapacityScoring, which is off by default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeBindingArgs {
    pub bind_timeout_seconds: Option<i64>,
    pub shape: Option<serde_json::Value>,
}

pub fn register(r: &mut Registry) {
    r.insert(
        BINDING,
        PluginInfo {
            factory: Arc::new(|args, handle| {
                let a: VolumeBindingArgs = decode_args(args).map_err(|e| e.1)?;
                let timeout = a
                    .bind_timeout_seconds
                    .map_or(DEFAULT_BIND_TIMEOUT, |s| Duration::from_secs(s as u64));
                Ok(Arc::new(VolumeBinding::new(handle.client.clone(), timeout)) as Arc<dyn Plugin>)
            }),
            points: &["preFilter", "filter", "reserve", "preBind"],
            validate_args: |v| {
                let a: VolumeBindingArgs = decode_args(v)?;
                match a.bind_timeout_seconds {
                    Some(s) if s < 0 => Err((
                        "bindTimeoutSeconds".into(),
                        format!("Invalid value: {s}: invalid BindTimeoutSeconds, should not be a negative value"),
                    )),
                    _ => Ok(()),
                }
            },
        },
    );
    r.insert(
        RESTRICTIONS,
        PluginInfo {
            factory: Arc::new(|_, _| Ok(Arc::new(VolumeRestrictions) as Arc<dyn Plugin>)),
            points: &["preFilter", "filter"],
            validate_args: |_| Ok(()),
        },
    );
    r.insert(
        ZONE,
        PluginInfo {
            factory: Arc::new(|_, _| Ok(Arc::new(VolumeZone) as Arc<dyn Plugin>)),
            points: &["preFilter", "filter"],
            validate_args: |_| Ok(()),
        },
    );
}

fn claim_names(pod: &PodInfo) -> Vec<String> {
    pod.spec()
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            if let Some(c) = &v.persistent_volume_claim {
                return Some(c.claim_name.clone());
            }
            v.ephemeral
                .as_ref()
                .map(|_| format!("{}-{}", pod.name, v.name))
        })
        .collect()
}

/// The bound volumes of the pod's claims (PreFilter state of VolumeZone).
#[derive(Clone)]
struct BoundVolumes(Vec<Arc<PersistentVolume>>);

/// The pod's claims, sorted (upstream `PodVolumeClaims`).
#[derive(Clone, Default)]
struct PodVolumeClaims {
    /// Volumes of bound claims.
    bound: Vec<Arc<PersistentVolume>>,
    /// Unbound claims of WaitForFirstConsumer classes, with their class.
    delayed: Vec<(Arc<PersistentVolumeClaim>, Option<Arc<StorageClass>>)>,
    /// Every volume, for matching the delayed claims.
    state: Arc<VolumeState>,
    /// Filter's choice per feasible node, for Reserve (upstream `podVolumesByNode`).
    by_node: Arc<Mutex<HashMap<String, PodVolumes>>>,
}

fn claim_volume(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn pod_volume_claims(pod: &PodInfo, snap: &Snapshot) -> Result<PodVolumeClaims, Status> {
    let mut out = PodVolumeClaims {
        state: snap.volumes.clone(),
        ..Default::default()
    };
    let mut immediate = false;
    for name in claim_names(pod) {
        let key = format!("{}/{}", pod.namespace, name);
        let Some(claim) = snap.volumes.claims.get(&key) else {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" not found"
            )));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            )));
        }
        let volume = claim_volume(claim);
        if !volume.is_empty() {
            match snap.volumes.volumes.get(volume) {
                Some(pv) => out.bound.push(pv.clone()),
                None => {
                    return Err(Status::unresolvable(format!(
                        "persistentvolume \"{volume}\" not found"
                    )))
                }
            }
            continue;
        }
        let class = snap.volumes.classes.get(claim_class(claim)).cloned();
        if is_delay_binding(class.as_deref()) {
            out.delayed.push((claim.clone(), class));
        } else {
            immediate = true;
        }
    }
    if immediate {
        return Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE));
    }
    Ok(out)
}

fn bound_volumes(pod: &PodInfo, snap: &Snapshot) -> Result<Vec<Arc<PersistentVolume>>, Status> {
    let claims = pod_volume_claims(pod, snap)?;
    if !claims.delayed.is_empty() {
        return Err(Status::skip());
    }
    Ok(claims.bound)
}

/// Whether a volume's required node affinity admits the node.
fn volume_allows(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    let terms = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    terms.is_none_or(|t| {
        NodeSelector::new(&t.node_selector_terms).matches(&node.name, node.labels())
    })
}

/// Whether the class can provision on the node (a provisioner, and the node in its
/// allowedTopologies).
fn can_provision(class: Option<&StorageClass>, node: &NodeInfo) -> bool {
    let Some(class) = class else { return false };
    if class.provisioner.is_empty() || class.provisioner == "kubernetes.io/no-provisioner" {
        return false;
    }
    class.allowed_topologies.as_ref().is_none_or(|terms| {
        terms.is_empty()
            || terms.iter().any(|t| {
                t.match_label_expressions.iter().flatten().all(|e| {
                    node.labels()
                        .get(&e.key)
                        .is_some_and(|v| e.values.contains(v))
                })
            })
    })
}

/// What PreBind writes for one pod (upstream `PodVolumes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodVolumes {
    /// (volume, claim): the volume gets the claim's `claimRef`.
    pub static_bindings: Vec<(Arc<PersistentVolume>, Arc<PersistentVolumeClaim>)>,
    /// Claims that get `selected-node` for their provisioner.
    pub dynamic_provisions: Vec<Arc<PersistentVolumeClaim>>,
}

/// Upstream `FindPodVolumes` for one node: the bindings, or why the node does not fit.
fn find_pod_volumes(
    claims: &PodVolumeClaims,
    node: &NodeInfo,
    assumed: &HashSet<String>,
) -> Result<PodVolumes, Status> {
    for pv in &claims.bound {
        if !volume_allows(pv, node) {
            return Err(Status::unresolvable(ERR_NODE_CONFLICT));
        }
    }
    let mut out = PodVolumes::default();
    let mut excluded = assumed.clone();
    let on_node = |pv: &PersistentVolume| volume_allows(pv, node);
    for (claim, class) in &claims.delayed {
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_SELECTED_NODE));
        if let Some(selected) = selected {
            // Provisioning for this claim already started on a node.
            if *selected != node.name {
                return Err(Status::unresolvable(ERR_BIND_CONFLICT));
            }
            out.dynamic_provisions.push(claim.clone());
            continue;
        }
        let found = find_matching_volume(
            claim,
            claims.state.volumes.values(),
            true,
            Some(&on_node),
            &excluded,
        );
        match found {
            Some(pv) => {
                excluded.insert(pv.metadata.name.clone().unwrap_or_default());
                out.static_bindings.push((pv, claim.clone()));
            }
            None if can_provision(class.as_deref(), node) => {
                out.dynamic_provisions.push(claim.clone())
            }
            None => return Err(Status::unresolvable(ERR_BIND_CONFLICT)),
        }
    }
    Ok(out)
}

const VOLUME_EVENTS: &[ClusterEvent] = &[
    ClusterEvent::PvcChange,
    ClusterEvent::PvChange,
    ClusterEvent::StorageClassChange,
    ClusterEvent::NodeAdd,
    ClusterEvent::NodeUpdate,
    ClusterEvent::AssignedPodDelete,
];

/// The VolumeBinding plugin; `assumed` holds the bindings of pods between Reserve and the end of
/// PreBind (by pod key), so their volumes are not offered to other pods.
pub struct VolumeBinding {
    client: Option<kube::Client>,
    bind_timeout: Duration,
    assumed: Mutex<HashMap<String, PodVolumes>>,
}

impl VolumeBinding {
    pub fn new(client: Option<kube::Client>, bind_timeout: Duration) -> VolumeBinding {
        VolumeBinding {
            client,
            bind_timeout,
            assumed: Mutex::new(HashMap::new()),
        }
    }

    /// The volumes reserved for pods being bound.
    fn assumed_volumes(&self) -> HashSet<String> {
        self.assumed
            .lock()
            .values()
            .flat_map(|b| b.static_bindings.iter())
            .filter_map(|(pv, _)| pv.metadata.name.clone())
            .collect()
    }

    /// The bindings Reserve chose for a pod.
    pub fn assumed_for(&self, pod_key: &str) -> Option<PodVolumes> {
        self.assumed.lock().get(pod_key).cloned()
    }

    /// Writes the bindings (upstream `bindAPIUpdate`).
    async fn write(&self, client: &kube::Client, b: &PodVolumes, node: &str) -> Result<(), String> {
        let volumes: Api<PersistentVolume> = Api::all(client.clone());
        for (pv, claim) in &b.static_bindings {
            let name = pv.metadata.name.clone().unwrap_or_default();
            let mut v = (**pv).clone();
            let spec = v.spec.get_or_insert_with(Default::default);
            spec.claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: claim.metadata.namespace.clone(),
                name: claim.metadata.name.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..Default::default()
            });
            v.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
            volumes
                .replace(&name, &PostParams::default(), &v)
                .await
                .map_err(|e| format!("binding volume {name:?}: {e}"))?;
        }
        for claim in &b.dynamic_provisions {
            let has = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE))
                .is_some_and(|n| n == node);
            if has {
                continue;
            }
            let ns = claim.metadata.namespace.clone().unwrap_or_default();
            let name = claim.metadata.name.clone().unwrap_or_default();
            let mut c = (**claim).clone();
            c.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(ANN_SELECTED_NODE.into(), node.into());
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
            api.replace(&name, &PostParams::default(), &c)
                .await
                .map_err(|e| format!("selecting node for claim {ns}/{name}: {e}"))?;
        }
        Ok(())
    }

    /// Waits until every claim is bound (upstream `checkBindings`), or says why it never will.
    async fn wait_bound(
        &self,
        client: &kube::Client,
        b: &PodVolumes,
        node: &str,
    ) -> Result<(), String> {
        let claims: Vec<_> = b
            .static_bindings
            .iter()
            .map(|(_, c)| c)
            .chain(b.dynamic_provisions.iter())
            .collect();
        let deadline = Instant::now() + self.bind_timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let mut all = true;
            for claim in &claims {
                let ns = claim.metadata.namespace.clone().unwrap_or_default();
                let name = claim.metadata.name.clone().unwrap_or_default();
                let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
                let now = api
                    .get_opt(&name)
                    .await
                    .map_err(|e| format!("checking claim {ns}/{name}: {e}"))?
                    .filter(|c| c.metadata.uid == claim.metadata.uid)
                    .ok_or_else(|| format!("claim {ns}/{name} was deleted"))?;
                let annotations = now.metadata.annotations.as_ref();
                if b.dynamic_provisions
                    .iter()
                    .any(|c| c.metadata.uid == now.metadata.uid)
                    && claim_volume(&now).is_empty()
                    && annotations
                        .and_then(|a| a.get(ANN_SELECTED_NODE))
                        .map(String::as_str)
                        != Some(node)
                {
                    // The provisioner gave up on the node (it removes the annotation).
                    return Err(format!("selectedNode annotation reset for PVC {name:?}"));
                }
                if claim_volume(&now).is_empty() || !has_annotation(annotations, ANN_BIND_COMPLETED)
                {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("binding volumes: context deadline exceeded".into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        BINDING
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
    fn pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        VOLUME_EVENTS
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if claim_names(pod).is_empty() {
            return (None, Status::skip());
        }
        match pod_volume_claims(pod, snap) {
            Ok(c) => {
                state.write(BINDING, c);
                (None, Status::success())
            }
            Err(s) => (None, s),
        }
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(c) = state.read::<PodVolumeClaims>(BINDING) else {
            return Status::success();
        };
        let assumed = if c.delayed.is_empty() {
            HashSet::new()
        } else {
            self.assumed_volumes()
        };
        match find_pod_volumes(c, node, &assumed) {
            Ok(b) => {
                if !c.delayed.is_empty() {
                    c.by_node.lock().insert(node.name.clone(), b);
                }
                Status::success()
            }
            Err(s) => s,
        }
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        let Some(c) = state.read::<PodVolumeClaims>(BINDING) else {
            return Status::success();
        };
        if c.delayed.is_empty() {
            return Status::success();
        }
        // Filter chose on this node, with the volumes other pods reserved excluded.
        let Some(b) = c.by_node.lock().get(node).cloned() else {
            return Status::error(format!("no volume bindings found for node {node:?}"));
        };
        self.assumed.lock().insert(pod.key.clone(), b);
        Status::success()
    }
    fn unreserve(&self, _: &mut CycleState, pod: &PodInfo, _: &str) {
        self.assumed.lock().remove(&pod.key);
    }
}

#[async_trait::async_trait]
impl PreBindPlugin for VolumeBinding {
    async fn pre_bind(&self, pod: &PodInfo, node: &str) -> Status {
        let Some(b) = self.assumed_for(&pod.key) else {
            return Status::success();
        };
        let Some(client) = self.client.clone() else {
            self.assumed.lock().remove(&pod.key);
            return Status::success();
        };
        let mut result = self.write(&client, &b, node).await;
        if result.is_ok() {
            result = self.wait_bound(&client, &b, node).await;
        }
        self.assumed.lock().remove(&pod.key);
        match result {
            Ok(()) => Status::success(),
            Err(e) => Status::error(e),
        }
    }
}

pub struct VolumeRestrictions;

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &'static str {
        RESTRICTIONS
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::PvcChange,
            ClusterEvent::NodeAdd,
        ]
    }
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        let rwop: Vec<String> = claim_names(pod)
            .into_iter()
            .filter(|n| {
                snap.volumes
                    .claims
                    .get(&format!("{}/{}", pod.namespace, n))
                    .and_then(|c| c.spec.as_ref())
                    .and_then(|s| s.access_modes.as_ref())
                    .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"))
            })
            .collect();
        if rwop.is_empty() {
            return (None, Status::skip());
        }
        for node in &snap.nodes {
            for other in &node.pods {
                if other.uid == pod.uid || other.namespace != pod.namespace {
                    continue;
                }
                if claim_names(other).iter().any(|c| rwop.contains(c)) {
                    return (None, Status::unresolvable(ERR_RWOP_CONFLICT));
                }
            }
        }
        (None, Status::success())
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn filter(&self, _: &CycleState, _: &PodInfo, _: &NodeInfo) -> Status {
        // The cluster-wide ReadWriteOncePod check is decided in PreFilter.
        Status::success()
    }
}

pub struct VolumeZone;

const ZONE_LABELS: [&str; 4] = [
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
];

impl Plugin for VolumeZone {
    fn name(&self) -> &'static str {
        ZONE
    }
    fn pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn events(&self) -> &'static [ClusterEvent] {
        VOLUME_EVENTS
    }
}

impl PreFilterPlugin for VolumeZone {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> (Option<PreFilterResult>, Status) {
        if claim_names(pod).is_empty() {
            return (None, Status::skip());
        }
        match bound_volumes(pod, snap) {
            Ok(v) => {
                state.write(ZONE, BoundVolumes(v));
                (None, Status::success())
            }
            // VolumeBinding reports missing and unbound claims.
            Err(_) => (None, Status::skip()),
        }
    }
}

impl FilterPlugin for VolumeZone {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(b) = state.read::<BoundVolumes>(ZONE) else {
            return Status::success();
        };
        let labels = node.labels();
        for pv in &b.0 {
            for key in ZONE_LABELS {
                let Some(want) = pv.metadata.labels.as_ref().and_then(|l| l.get(key)) else {
                    continue;
                };
                // A label value may list several zones separated by "__".
                let ok = labels
                    .get(key)
                    .is_some_and(|have| want.split("__").any(|z| z == have));
                if !ok {
                    return Status::unresolvable(ERR_ZONE_CONFLICT);
                }
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::{
        NodeSelector as ApiNodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
        PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
        PersistentVolumeStatus, Pod, Volume, VolumeNodeAffinity, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn class(name: &str, provisioner: &str, mode: &str) -> (String, Arc<StorageClass>) {
        let mut c = StorageClass {
            provisioner: provisioner.into(),
            volume_binding_mode: Some(mode.into()),
            ..Default::default()
        };
        c.metadata.name = Some(name.into());
        (name.into(), Arc::new(c))
    }

    fn claim(
        name: &str,
        class: &str,
        volume: &str,
        node: Option<&str>,
    ) -> Arc<PersistentVolumeClaim> {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = Some(format!("uid-{name}"));
        if let Some(n) = node {
            c.metadata.annotations = Some([(ANN_SELECTED_NODE.to_string(), n.to_string())].into());
        }
        c.spec = Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(class.into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            volume_name: (!volume.is_empty()).then(|| volume.to_string()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        Arc::new(c)
    }

    fn volume(name: &str, class: &str, node: &str) -> Arc<PersistentVolume> {
        let mut v = PersistentVolume::default();
        v.metadata.name = Some(name.into());
        v.spec = Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
            storage_class_name: Some(class.into()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(ApiNodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
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
            phase: Some("Available".into()),
            ..Default::default()
        });
        Arc::new(v)
    }

    fn pod_with(name: &str, claims: &[&str]) -> Pod {
        let mut p = pod(name);
        p.spec.as_mut().unwrap().volumes = Some(
            claims
                .iter()
                .map(|c| Volume {
                    name: c.to_string(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: c.to_string(),
                        read_only: None,
                    }),
                    ..Default::default()
                })
                .collect(),
        );
        p
    }

    fn snap(
        claims: Vec<Arc<PersistentVolumeClaim>>,
        volumes: Vec<Arc<PersistentVolume>>,
    ) -> Snapshot {
        let mut s = snapshot(
            vec![node("n1", 4000, 1 << 30), node("n2", 4000, 1 << 30)],
            vec![],
        );
        s.volumes = Arc::new(VolumeState {
            claims: claims
                .into_iter()
                .map(|c| {
                    (
                        format!("default/{}", c.metadata.name.as_deref().unwrap()),
                        c,
                    )
                })
                .collect(),
            volumes: volumes
                .into_iter()
                .map(|v| (v.metadata.name.clone().unwrap(), v))
                .collect(),
            classes: [
                class(
                    "local-path",
                    "capstan.io/local-path",
                    "WaitForFirstConsumer",
                ),
                class(
                    "manual",
                    "kubernetes.io/no-provisioner",
                    "WaitForFirstConsumer",
                ),
                class("fast", "example.com/fast", "Immediate"),
            ]
            .into(),
        });
        s
    }

    fn codes(statuses: &[Status]) -> Vec<(Code, String)> {
        statuses.iter().map(|s| (s.code, s.message())).collect()
    }

    #[test]
    fn volume_binding_filter_table() {
        let ok = (Code::Success, String::new());
        let un = |m: &str| (Code::UnschedulableAndUnresolvable, m.to_string());
        // (name, claims, volumes, the pod's claims, want per node [n1, n2])
        type Case = (
            &'static str,
            Vec<Arc<PersistentVolumeClaim>>,
            Vec<Arc<PersistentVolume>>,
            Vec<&'static str>,
            Vec<(Code, String)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no claims",
                vec![],
                vec![],
                vec![],
                vec![ok.clone(), ok.clone()],
            ),
            (
                "missing claim",
                vec![],
                vec![],
                vec!["data"],
                vec![un("persistentvolumeclaim \"data\" not found"); 2],
            ),
            (
                "bound claim follows its volume's node affinity",
                vec![claim("data", "manual", "pv1", None)],
                vec![volume("pv1", "manual", "n1")],
                vec!["data"],
                vec![ok.clone(), un(ERR_NODE_CONFLICT)],
            ),
            (
                "unbound immediate claim",
                vec![claim("data", "fast", "", None)],
                vec![],
                vec!["data"],
                vec![un(ERR_UNBOUND_IMMEDIATE); 2],
            ),
            (
                "delayed claim: a matching available volume on one node",
                vec![claim("data", "manual", "", None)],
                vec![volume("pv1", "manual", "n2")],
                vec!["data"],
                vec![un(ERR_BIND_CONFLICT), ok.clone()],
            ),
            (
                "delayed claim without volumes nor provisioner",
                vec![claim("data", "manual", "", None)],
                vec![],
                vec!["data"],
                vec![un(ERR_BIND_CONFLICT); 2],
            ),
            (
                "delayed claim with a provisioner fits anywhere",
                vec![claim("data", "local-path", "", None)],
                vec![],
                vec!["data"],
                vec![ok.clone(), ok.clone()],
            ),
            (
                "delayed claim whose node was selected",
                vec![claim("data", "local-path", "", Some("n2"))],
                vec![],
                vec!["data"],
                vec![un(ERR_BIND_CONFLICT), ok.clone()],
            ),
            (
                "two delayed claims cannot share one volume",
                vec![
                    claim("a", "manual", "", None),
                    claim("b", "manual", "", None),
                ],
                vec![volume("pv1", "manual", "n1")],
                vec!["a", "b"],
                vec![un(ERR_BIND_CONFLICT); 2],
            ),
        ];
        for (name, claims, volumes, uses, want) in cases {
            let s = snap(claims, volumes);
            let plugin = VolumeBinding::new(None, DEFAULT_BIND_TIMEOUT);
            let got = codes(&run_filters(&plugin, pod_with("p", &uses), &s));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn reserved_volumes_are_not_offered_to_the_next_pod() {
        let s = snap(
            vec![
                claim("a", "manual", "", None),
                claim("b", "manual", "", None),
            ],
            vec![volume("pv1", "manual", "n1")],
        );
        let plugin = VolumeBinding::new(None, DEFAULT_BIND_TIMEOUT);
        let first = PodInfo::new(Arc::new(pod_with("first", &["a"])));
        let mut state = CycleState::default();
        let (_, st) = PreFilterPlugin::pre_filter(&plugin, &mut state, &first, &s);
        assert!(st.is_success());
        assert!(FilterPlugin::filter(&plugin, &state, &first, &s.nodes[0]).is_success());
        assert!(ReservePlugin::reserve(&plugin, &mut state, &first, "n1").is_success());
        let b = plugin.assumed_for(&first.key).expect("bindings reserved");
        assert_eq!(b.static_bindings.len(), 1);
        assert_eq!(b.static_bindings[0].0.metadata.name.as_deref(), Some("pv1"));
        assert!(b.dynamic_provisions.is_empty());

        let second = pod_with("second", &["b"]);
        let got = codes(&run_filters(&plugin, second.clone(), &s));
        assert_eq!(
            got[0],
            (Code::UnschedulableAndUnresolvable, ERR_BIND_CONFLICT.into())
        );
        ReservePlugin::unreserve(&plugin, &mut state, &first, "n1");
        assert!(run_filters(&plugin, second, &s)[0].is_success());
    }

    #[test]
    fn a_provisioned_claim_is_reserved_for_selected_node() {
        let s = snap(vec![claim("data", "local-path", "", None)], vec![]);
        let plugin = VolumeBinding::new(None, DEFAULT_BIND_TIMEOUT);
        let p = PodInfo::new(Arc::new(pod_with("p", &["data"])));
        let mut state = CycleState::default();
        PreFilterPlugin::pre_filter(&plugin, &mut state, &p, &s);
        assert!(FilterPlugin::filter(&plugin, &state, &p, &s.nodes[1]).is_success());
        assert!(ReservePlugin::reserve(&plugin, &mut state, &p, "n2").is_success());
        let b = plugin.assumed_for(&p.key).unwrap();
        assert_eq!(b.dynamic_provisions.len(), 1);
        assert!(b.static_bindings.is_empty());
    }

    #[test]
    fn negative_bind_timeouts_are_rejected() {
        let mut r = Registry::new();
        register(&mut r);
        let validate = r[BINDING].validate_args;
        assert!(validate(&serde_json::json!({"bindTimeoutSeconds": 30})).is_ok());
        let err = validate(&serde_json::json!({"bindTimeoutSeconds": -1})).unwrap_err();
        assert_eq!(err.0, "bindTimeoutSeconds");
    }
}
