//! The basic volume plugins. VolumeBinding: every PersistentVolumeClaim the pod uses must exist
//! and be bound (unbound claims are waited for, as with Immediate binding), and the bound
//! volume's node affinity must match the node. VolumeRestrictions: a ReadWriteOncePod claim
//! already in use by another pod makes the pod unschedulable. VolumeZone: a bound volume's zone
//! and region labels must match the node's. Dynamic provisioning and WaitForFirstConsumer
//! binding are not done here.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::framework::*;
use crate::labels::NodeSelector;
use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

pub const BINDING: &str = "VolumeBinding";
pub const RESTRICTIONS: &str = "VolumeRestrictions";
pub const ZONE: &str = "VolumeZone";
pub const ERR_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
pub const ERR_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";
pub const ERR_ZONE_CONFLICT: &str = "node(s) had no available volume zone";

/// Claims and volumes as the informers last saw them.
#[derive(Debug, Default, Clone)]
pub struct VolumeState {
    /// `namespace/name` → claim.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
}

pub fn register(r: &mut Registry) {
    r.insert(
        BINDING,
        PluginInfo {
            factory: Arc::new(|_, _| Ok(Arc::new(VolumeBinding) as Arc<dyn Plugin>)),
            points: &["preFilter", "filter"],
            validate_args: |_| Ok(()),
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

/// The bound volumes of the pod's claims (PreFilter state of VolumeBinding and VolumeZone).
#[derive(Clone)]
struct BoundVolumes(Vec<Arc<PersistentVolume>>);

fn bound_volumes(pod: &PodInfo, snap: &Snapshot) -> Result<Vec<Arc<PersistentVolume>>, Status> {
    let mut out = Vec::new();
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
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("");
        if volume.is_empty() {
            return Err(Status::unresolvable(ERR_UNBOUND_IMMEDIATE));
        }
        match snap.volumes.volumes.get(volume) {
            Some(pv) => out.push(pv.clone()),
            None => {
                return Err(Status::unresolvable(format!(
                    "persistentvolume \"{volume}\" not found"
                )))
            }
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

pub struct VolumeBinding;

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
        match bound_volumes(pod, snap) {
            Ok(v) => {
                state.write(BINDING, BoundVolumes(v));
                (None, Status::success())
            }
            Err(s) => (None, s),
        }
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(b) = state.read::<BoundVolumes>(BINDING) else {
            return Status::success();
        };
        for pv in &b.0 {
            let terms = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref());
            if let Some(t) = terms {
                if !NodeSelector::new(&t.node_selector_terms).matches(&node.name, node.labels()) {
                    return Status::unresolvable(ERR_NODE_CONFLICT);
                }
            }
        }
        Status::success()
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
