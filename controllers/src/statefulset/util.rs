//! The StatefulSet controller's pure parts (upstream `pkg/controller/statefulset/stateful_set_utils.go`
//! and the decisions of `stateful_set_control.go`): ordinals and names, a replica's identity
//! (name, hostname, subdomain, the pod-name and pod-index labels) and storage (one claim per
//! volumeClaimTemplate), which revision a recreated replica gets under a partition, the owner
//! references the PVC retention policy asks for, the rolling update's victims and the status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::deployment::util::scaled_value;
use crate::replicaset::pods::{controller_ref, is_available, is_ready};

/// The pod label holding its revision's name (`StatefulSetRevisionLabel`).
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The pod label holding the pod's name (`StatefulSetPodNameLabel`).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label holding the ordinal (`PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.ordinals.start`.
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

/// `getPodName`.
pub fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// `getPersistentVolumeClaimName`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The ordinal in `pod`'s name when it is `<set>-<n>` (`getParentNameAndOrdinal`).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

pub fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

pub fn is_failed_or_succeeded(pod: &Pod) -> bool {
    matches!(phase(pod), Some("Failed") | Some("Succeeded"))
}

/// `isRunningAndReady`.
pub fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == Some("Running") && is_ready(pod)
}

/// `isRunningAndAvailable`.
pub fn running_and_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    phase(pod) == Some("Running") && is_available(pod, min_ready, now)
}

/// `isHealthy`: running, ready (and available) and not terminating.
pub fn is_healthy(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    running_and_available(pod, min_ready, now) && !is_terminating(pod)
}

/// The claims a replica mounts: volume name → claim name, one per volumeClaimTemplate.
pub fn claims_of(set: &StatefulSet, ordinal: i32) -> Vec<(String, String)> {
    let name = set.metadata.name.as_deref().unwrap_or("");
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|t| {
            let tn = t.metadata.name.clone().unwrap_or_default();
            let claim = claim_name(&tn, name, ordinal);
            (tn, claim)
        })
        .collect()
}

/// The claims to create for a replica (`getPersistentVolumeClaims`): each template named per
/// ordinal, labelled with the set's matchLabels.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let name = set.metadata.name.as_deref().unwrap_or("");
    let ns = set.metadata.namespace.clone();
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|t| {
            let mut c = t.clone();
            let tn = t.metadata.name.clone().unwrap_or_default();
            c.metadata = ObjectMeta {
                name: Some(claim_name(&tn, name, ordinal)),
                namespace: ns.clone(),
                labels: Some({
                    let mut l = t.metadata.labels.clone().unwrap_or_default();
                    l.extend(match_labels.clone());
                    l
                }),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            };
            c.status = None;
            c
        })
        .collect()
}

/// `newStatefulSetPod` from `template`: named `<set>-<ordinal>`, controlled by the set, with its
/// identity, its claims as volumes and the revision label.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = set.metadata.name.as_deref().unwrap_or("");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(set_name, ordinal)),
            namespace: set.metadata.namespace.clone(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    update_identity(set, &mut pod, ordinal);
    update_storage(set, &mut pod, ordinal);
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.into(), revision.into());
    pod
}

/// `updateIdentity`: the pod-name and pod-index labels, hostname and subdomain.
fn update_identity(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    let service = set.spec.as_ref().and_then(|s| s.service_name.clone());
    spec.subdomain = service.filter(|s| !s.is_empty());
}

/// `updateStorage`: a volume per claim template (replacing a template volume of that name).
fn update_storage(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let claims = claims_of(set, ordinal);
    if claims.is_empty() {
        return;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(vol, claim)| Volume {
            name: vol.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    for v in spec.volumes.take().unwrap_or_default() {
        if !claims.iter().any(|(n, _)| *n == v.name) {
            volumes.push(v);
        }
    }
    spec.volumes = Some(volumes);
}

/// `identityMatches` for the labels a controller can still change on a live pod.
pub fn identity_labels_match(pod: &Pod, ordinal: i32) -> bool {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let l = pod.metadata.labels.as_ref();
    l.and_then(|l| l.get(POD_NAME_LABEL)).map(String::as_str) == Some(name)
        && l.and_then(|l| l.get(POD_INDEX_LABEL)) == Some(&ordinal.to_string())
}

/// Whether a missing replica is recreated from the current revision (`newVersionedStatefulSetPod`):
/// under RollingUpdate, ordinals below the partition keep the current revision.
pub fn recreate_from_current(set: &StatefulSet, ordinal: i32) -> bool {
    let strategy = set.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    if strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        != "RollingUpdate"
    {
        return false;
    }
    let start = start_ordinal(set);
    match strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
    {
        Some(p) => ordinal < start + p,
        None => {
            let current = set
                .status
                .as_ref()
                .and_then(|s| s.current_replicas)
                .unwrap_or(0);
            ordinal < start + current
        }
    }
}

pub fn is_rolling(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `spec.persistentVolumeClaimRetentionPolicy`: (whenDeleted is Delete, whenScaled is Delete).
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let p = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
    (
        delete(p.and_then(|p| p.when_deleted.as_ref())),
        delete(p.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn plain_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// `updateClaimOwnerRefForSetAndPod`: the claim's owner references under the retention policy —
/// the set owns it when whenDeleted is Delete (and the replica is in range or whenScaled is
/// Retain), the pod owns it when whenScaled is Delete and the replica was scaled away, so the
/// garbage collector removes it with its owner. Returns the new list when it changes.
pub fn claim_owner_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: Option<&Pod>,
    scaled_down: bool,
) -> Option<Vec<OwnerReference>> {
    let (when_deleted, when_scaled) = retention(set);
    let set_uid = set.metadata.uid.as_deref().unwrap_or("");
    let pod_uid = pod.and_then(|p| p.metadata.uid.as_deref()).unwrap_or("");
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    let mut want: Vec<OwnerReference> = refs
        .iter()
        .filter(|r| r.uid != set_uid && (pod_uid.is_empty() || r.uid != pod_uid))
        .cloned()
        .collect();
    let set_owns = when_deleted && !(when_scaled && scaled_down);
    let pod_owns = when_scaled && scaled_down && !pod_uid.is_empty();
    if set_owns {
        want.push(plain_ref("apps/v1", "StatefulSet", &set.metadata));
    }
    if pod_owns {
        want.push(plain_ref(
            "v1",
            "Pod",
            &pod.expect("pod_owns needs a pod").metadata,
        ));
    }
    let key = |r: &OwnerReference| r.uid.clone();
    let mut a: Vec<String> = refs.iter().map(key).collect();
    let mut b: Vec<String> = want.iter().map(key).collect();
    a.sort();
    b.sort();
    (a != b).then_some(want)
}

/// The rolling update's victims (`updateStatefulSetAfterInvariantEstablished`, with
/// maxUnavailable): replicas from the highest ordinal down to the partition that are not of the
/// update revision, as many as maxUnavailable minus the replicas already unavailable.
/// `replicas` is indexed by ordinal offset; all exist at this point.
pub fn rolling_victims(
    replicas: &[Arc<Pod>],
    update_revision: &str,
    partition: i32,
    max_unavailable: i32,
    min_ready: i32,
    now: Timestamp,
) -> Vec<String> {
    let unavailable = replicas
        .iter()
        .filter(|p| !is_healthy(p, min_ready, now))
        .count() as i32;
    let mut budget = max_unavailable.max(1) - unavailable;
    let mut victims = Vec::new();
    let floor = partition.max(0) as usize;
    for p in replicas.iter().skip(floor).rev() {
        if budget <= 0 {
            break;
        }
        if revision_of(p) != Some(update_revision) && !is_terminating(p) {
            victims.push(p.metadata.name.clone().unwrap_or_default());
            budget -= 1;
        }
    }
    victims
}

/// maxUnavailable of the rolling update, scaled against the replicas and at least 1.
pub fn max_unavailable(set: &StatefulSet) -> i32 {
    let v = set
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.as_ref());
    match v {
        Some(v) => scaled_value(v, replicas(set), true).unwrap_or(1).max(1),
        None => 1,
    }
}

pub fn partition(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

/// The status of a set owning `pods` (`computeReplicaStatus` and `completeRollingUpdate`).
pub fn compute_status(
    set: &StatefulSet,
    pods: &[Arc<Pod>],
    current_revision: &str,
    update_revision: &str,
    collision_count: Option<i32>,
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let mut st = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(current_revision.into()),
        update_revision: Some(update_revision.into()),
        collision_count,
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for p in pods {
        st.replicas += 1;
        if running_and_ready(p) {
            ready += 1;
            if running_and_available(p, min_ready, now) {
                available += 1;
            }
        }
        if !is_terminating(p) {
            if revision_of(p) == Some(current_revision) {
                current += 1;
            }
            if revision_of(p) == Some(update_revision) {
                updated += 1;
            }
        }
    }
    if is_rolling(set) && updated == st.replicas && ready == st.replicas {
        current = updated;
        st.current_revision = Some(update_revision.into());
    }
    st.ready_replicas = Some(ready);
    st.available_replicas = Some(available);
    st.current_replicas = Some(current);
    st.updated_replicas = Some(updated);
    st
}

/// Whether `new` differs from `old` in a field, an absent count and 0 being the same.
pub fn status_changed(new: &StatefulSetStatus, old: &StatefulSetStatus) -> bool {
    let norm = |s: &StatefulSetStatus| {
        let mut s = s.clone();
        for f in [
            &mut s.ready_replicas,
            &mut s.available_replicas,
            &mut s.current_replicas,
            &mut s.updated_replicas,
            &mut s.collision_count,
        ] {
            if *f == Some(0) {
                *f = None;
            }
        }
        s
    };
    norm(new) != norm(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        RollingUpdateStatefulSetStrategy, StatefulSetPersistentVolumeClaimRetentionPolicy,
        StatefulSetSpec, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn set(partition: Option<i32>) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("set-uid".into()),
                generation: Some(4),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                service_name: Some("nginx".into()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }]),
                update_strategy: Some(StatefulSetUpdateStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateStatefulSetStrategy {
                        partition,
                        max_unavailable: None,
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, rev: &str, healthy: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(format!("{name}-uid")),
                labels: Some([(REVISION_LABEL.to_string(), rev.to_string())].into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if healthy { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(Timestamp::from_second(1).unwrap())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn replicas_have_stable_names_identity_and_claims() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        let s = set(Some(0));
        let p = new_pod(&s, &PodTemplateSpec::default(), 1, "web-abc");
        assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l[POD_NAME_LABEL], "web-1");
        assert_eq!(l[POD_INDEX_LABEL], "1");
        assert_eq!(l[REVISION_LABEL], "web-abc");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("web-1"), Some("nginx"))
        );
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(v.name, "www");
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "www-web-1"
        );
        assert!(identity_labels_match(&p, 1));
        let c = &new_claims(&s, 2)[0];
        assert_eq!(c.metadata.name.as_deref(), Some("www-web-2"));
    }

    #[test]
    fn below_the_partition_replicas_are_recreated_from_the_current_revision() {
        let s = set(Some(2));
        assert!(recreate_from_current(&s, 0));
        assert!(recreate_from_current(&s, 1));
        assert!(!recreate_from_current(&s, 2));
        let mut ondelete = set(None);
        ondelete
            .spec
            .as_mut()
            .unwrap()
            .update_strategy
            .as_mut()
            .unwrap()
            .type_ = Some("OnDelete".into());
        assert!(!recreate_from_current(&ondelete, 0));
    }

    #[test]
    fn rolling_update_goes_from_the_top_down_to_the_partition_within_max_unavailable() {
        let now = Timestamp::from_second(100).unwrap();
        let pods = vec![
            pod("web-0", "old", true),
            pod("web-1", "old", true),
            pod("web-2", "old", true),
        ];
        assert_eq!(rolling_victims(&pods, "new", 0, 1, 0, now), ["web-2"]);
        assert_eq!(rolling_victims(&pods, "new", 2, 1, 0, now), ["web-2"]);
        assert_eq!(
            rolling_victims(&pods, "new", 0, 2, 0, now),
            ["web-2", "web-1"]
        );
        let pods = vec![
            pod("web-0", "old", true),
            pod("web-1", "old", true),
            pod("web-2", "new", true),
        ];
        assert!(rolling_victims(&pods, "new", 2, 1, 0, now).is_empty());
        assert_eq!(rolling_victims(&pods, "new", 0, 1, 0, now), ["web-1"]);
        // An unhealthy replica uses up the budget.
        let pods = vec![
            pod("web-0", "old", true),
            pod("web-1", "new", false),
            pod("web-2", "new", true),
        ];
        assert!(rolling_victims(&pods, "new", 0, 1, 0, now).is_empty());
    }

    #[test]
    fn status_completes_the_rollout_only_when_every_replica_is_updated_and_ready() {
        let now = Timestamp::from_second(100).unwrap();
        let s = set(Some(2));
        let pods = vec![
            pod("web-0", "old", true),
            pod("web-1", "old", true),
            pod("web-2", "new", true),
        ];
        let st = compute_status(&s, &pods, "old", "new", None, now);
        assert_eq!(
            (
                st.replicas,
                st.ready_replicas,
                st.current_replicas,
                st.updated_replicas
            ),
            (3, Some(3), Some(2), Some(1))
        );
        assert_eq!(st.current_revision.as_deref(), Some("old"));
        let pods = vec![
            pod("web-0", "new", true),
            pod("web-1", "new", true),
            pod("web-2", "new", true),
        ];
        let st = compute_status(&s, &pods, "old", "new", None, now);
        assert_eq!(st.current_revision.as_deref(), Some("new"));
        assert_eq!(st.current_replicas, Some(3));
        assert_eq!(st.observed_generation, Some(4));
        let mut zeroes = st.clone();
        zeroes.collision_count = Some(0);
        assert!(!status_changed(&zeroes, &st));
        zeroes.ready_replicas = Some(2);
        assert!(status_changed(&zeroes, &st));
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let mut s = set(Some(0));
        let claim = new_claims(&s, 0).remove(0);
        let p = pod("web-0", "r", true);
        // Retain/Retain: nobody owns the claim.
        assert_eq!(claim_owner_refs(&claim, &s, Some(&p), false), None);
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Delete".into()),
                when_scaled: Some("Delete".into()),
            });
        let refs = claim_owner_refs(&claim, &s, Some(&p), false).unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "StatefulSet");
        let mut owned = claim.clone();
        owned.metadata.owner_references = Some(refs);
        assert_eq!(claim_owner_refs(&owned, &s, Some(&p), false), None);
        // Scaled away: the pod owns it instead, so it goes with the pod.
        let refs = claim_owner_refs(&owned, &s, Some(&p), true).unwrap();
        assert_eq!(
            refs.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
            ["Pod"]
        );
        // Retain on delete, Delete on scale-down: in range, nobody.
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some("Retain".into()),
                when_scaled: Some("Delete".into()),
            });
        assert_eq!(claim_owner_refs(&owned, &s, Some(&p), false), Some(vec![]));
    }
}
