//! What the PersistentVolume binder (controller-manager) and the scheduler's VolumeBinding plugin
//! share, as upstream shares `pkg/controller/volume/persistentvolume/util` and
//! `component-helpers/storage/volume` between them: the binding annotations, a claim's class and
//! request, a StorageClass's binding mode, whether a volume is bound to a claim, and
//! [`find_matching_volume`] — upstream's `FindMatchingVolume`: a volume pre-bound to the claim
//! wins, otherwise the smallest Available volume of the claim's class whose capacity, access
//! modes, volume mode and labels (the claim's selector) satisfy it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// On a claim: the binder finished binding it (value "yes").
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder (not the user) set `volumeName` / `claimRef`.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a dynamically provisioned volume: the provisioner that made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the provisioner asked to provision it.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// On a claim of a WaitForFirstConsumer class: the node the scheduler chose for its first pod.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The deprecated class annotation, which wins over `storageClassName` when present.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// On a StorageClass: claims without a class get this one.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// The built-in local-path provisioner's name (controllers `localpath`; the kubelet deletes its
/// released volumes' data).
pub const LOCAL_PATH_PROVISIONER: &str = "capstan.io/local-path";

fn annotation<'a>(a: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    a.and_then(|a| a.get(key)).map(String::as_str)
}

/// The claim's class (upstream `GetPersistentVolumeClaimClass`): the beta annotation, else
/// `spec.storageClassName`, else "".
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    annotation(claim.metadata.annotations.as_ref(), ANN_BETA_STORAGE_CLASS)
        .or_else(|| claim.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's class (upstream `GetPersistentVolumeClass`).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    annotation(pv.metadata.annotations.as_ref(), ANN_BETA_STORAGE_CLASS)
        .or_else(|| pv.spec.as_ref()?.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The storage the claim requests, in bytes (0 when it requests none).
pub fn claim_request(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(crate::quantity::value)
        .unwrap_or(0)
}

/// The volume's storage capacity in bytes.
pub fn volume_capacity(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(crate::quantity::value)
        .unwrap_or(0)
}

/// Whether claims of `class` wait for their first pod to be scheduled (volumeBindingMode
/// WaitForFirstConsumer).
pub fn is_delay_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// Whether `annotations` has `key` (any value).
pub fn has_annotation(a: Option<&BTreeMap<String, String>>, key: &str) -> bool {
    a.is_some_and(|a| a.contains_key(key))
}

/// Upstream `IsVolumeBoundToClaim`: the volume's claimRef names the claim, with its UID or none.
pub fn is_volume_bound_to_claim(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if r.name != claim.metadata.name || r.namespace != claim.metadata.namespace {
        return false;
    }
    match r.uid.as_deref() {
        None | Some("") => true,
        Some(uid) => claim.metadata.uid.as_deref() == Some(uid),
    }
}

/// The access modes of a claim or volume.
fn modes(m: Option<&Vec<String>>) -> &[String] {
    m.map(Vec::as_slice).unwrap_or_default()
}

/// Upstream `CheckAccessModes`: the volume offers every mode the claim asks for.
pub fn access_modes_satisfied(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let have = modes(pv.spec.as_ref().and_then(|s| s.access_modes.as_ref()));
    modes(claim.spec.as_ref().and_then(|s| s.access_modes.as_ref()))
        .iter()
        .all(|m| have.contains(m))
}

/// Upstream `CheckVolumeModeMismatches` (both default to Filesystem).
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let c = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let v = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    c.unwrap_or("Filesystem") != v.unwrap_or("Filesystem")
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions); an absent
/// selector matches everything, as a claim without one takes any volume.
pub fn selector_matches(
    sel: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = sel else { return true };
    let get = |k: &str| labels.and_then(|l| l.get(k));
    let labels_ok = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => get(&e.key).is_some(),
            "DoesNotExist" => get(&e.key).is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Why a volume does not satisfy a claim (upstream `checkVolumeSatisfyClaim`), for a volume the
/// user pre-bound the claim to.
pub fn check_volume_satisfies_claim(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    if volume_capacity(pv) < claim_request(claim) {
        return Err("requested PV is too small".into());
    }
    if volume_class(pv) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode_mismatch(claim, pv) {
        return Err("incompatible volumeMode".into());
    }
    if !access_modes_satisfied(claim, pv) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

/// Upstream `FindMatchingVolume`. `node_ok` is the scheduler's check of a volume's node affinity
/// against the node it evaluates (`None` in the binder, which then leaves WaitForFirstConsumer
/// claims to the scheduler unless a volume is pre-bound to them). `excluded` are volumes already
/// chosen for the pod's other claims.
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a Arc<PersistentVolume>>,
    delay_binding: bool,
    node_ok: Option<&dyn Fn(&PersistentVolume) -> bool>,
    excluded: &HashSet<String>,
) -> Option<Arc<PersistentVolume>> {
    let request = claim_request(claim);
    let class = claim_class(claim);
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    let mut best: Option<(i64, &'a Arc<PersistentVolume>)> = None;
    for pv in volumes {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        if excluded.contains(name) {
            continue;
        }
        let spec = pv.spec.as_ref();
        if spec.and_then(|s| s.claim_ref.as_ref()).is_some() && !is_volume_bound_to_claim(pv, claim)
        {
            continue;
        }
        let capacity = volume_capacity(pv);
        if capacity < request
            || volume_mode_mismatch(claim, pv)
            || pv.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let node_valid = node_ok.is_none_or(|f| f(pv));
        if is_volume_bound_to_claim(pv, claim) {
            // A pre-bound volume is the only candidate: on a node it does not fit, nothing does.
            return node_valid.then(|| pv.clone());
        }
        if node_ok.is_none() && delay_binding {
            continue;
        }
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, None | Some("Available")) {
            continue;
        }
        if volume_class(pv) != class
            || !selector_matches(selector, pv.metadata.labels.as_ref())
            || !node_valid
            || !access_modes_satisfied(claim, pv)
        {
            continue;
        }
        if best.is_none_or(|(c, _)| capacity < c) {
            best = Some((capacity, pv));
        }
    }
    best.map(|(_, pv)| pv.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, PersistentVolumeStatus,
        VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    pub fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> Arc<PersistentVolume> {
        let mut v = PersistentVolume::default();
        v.metadata.name = Some(name.into());
        v.spec = Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_string(), Quantity(size.into()))].into()),
            storage_class_name: Some(class.into()),
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            ..Default::default()
        });
        v.status = Some(PersistentVolumeStatus {
            phase: Some("Available".into()),
            ..Default::default()
        });
        Arc::new(v)
    }

    fn claim(size: &str, class: &str, modes: &[&str]) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = Some("data".into());
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = Some("uid-data".into());
        c.spec = Some(PersistentVolumeClaimSpec {
            storage_class_name: Some(class.into()),
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        c
    }

    fn names(found: Option<Arc<PersistentVolume>>) -> Option<String> {
        found.and_then(|v| v.metadata.name.clone())
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = [
            pv("big", "10Gi", "manual", &["ReadWriteOnce"]),
            pv("small", "1Gi", "manual", &["ReadWriteOnce"]),
            pv("fit", "2Gi", "manual", &["ReadWriteOnce", "ReadOnlyMany"]),
            pv("other-class", "2Gi", "fast", &["ReadWriteOnce"]),
            pv("wrong-mode", "2Gi", "manual", &["ReadOnlyMany"]),
        ];
        let c = claim("2Gi", "manual", &["ReadWriteOnce"]);
        let none = HashSet::new();
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &none)),
            Some("fit".into())
        );
        let excluded: HashSet<String> = ["fit".to_string()].into();
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &excluded)),
            Some("big".into())
        );
        let c = claim("20Gi", "manual", &["ReadWriteOnce"]);
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &none)),
            None
        );
    }

    #[test]
    fn bound_released_and_selector_mismatched_volumes_are_skipped() {
        let mut bound = (*pv("bound", "1Gi", "manual", &["ReadWriteOnce"])).clone();
        bound.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("other".into()),
            namespace: Some("default".into()),
            ..Default::default()
        });
        let mut released = (*pv("released", "1Gi", "manual", &["ReadWriteOnce"])).clone();
        released.status.as_mut().unwrap().phase = Some("Released".into());
        let mut labeled = (*pv("labeled", "5Gi", "manual", &["ReadWriteOnce"])).clone();
        labeled.metadata.labels = Some([("tier".to_string(), "db".to_string())].into());
        let vols = [Arc::new(bound), Arc::new(released), Arc::new(labeled)];
        let mut c = claim("1Gi", "manual", &["ReadWriteOnce"]);
        let none = HashSet::new();
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &none)),
            Some("labeled".into())
        );
        c.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "web".to_string())].into()),
            ..Default::default()
        });
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &none)),
            None
        );
    }

    #[test]
    fn a_pre_bound_volume_wins_and_delay_binding_leaves_the_rest_to_the_scheduler() {
        let mut pre = (*pv("pre", "8Gi", "manual", &["ReadWriteOnce"])).clone();
        pre.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("data".into()),
            namespace: Some("default".into()),
            ..Default::default()
        });
        let vols = [
            pv("fit", "1Gi", "manual", &["ReadWriteOnce"]),
            Arc::new(pre),
        ];
        let c = claim("1Gi", "manual", &["ReadWriteOnce"]);
        let none = HashSet::new();
        assert_eq!(
            names(find_matching_volume(&c, &vols, false, None, &none)),
            Some("pre".into())
        );
        assert_eq!(
            names(find_matching_volume(&c, &vols[..1], true, None, &none)),
            None,
            "the binder leaves delayed claims alone"
        );
        let on_node = |_: &PersistentVolume| true;
        assert_eq!(
            names(find_matching_volume(
                &c,
                &vols[..1],
                true,
                Some(&on_node),
                &none
            )),
            Some("fit".into()),
            "the scheduler binds them"
        );
        let elsewhere = |_: &PersistentVolume| false;
        assert_eq!(
            names(find_matching_volume(
                &c,
                &vols,
                true,
                Some(&elsewhere),
                &none
            )),
            None
        );
    }
}
