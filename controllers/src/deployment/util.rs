//! The deployment controller's pure helpers (upstream `pkg/controller/deployment/util`): the
//! annotations it keeps on replica sets, template hashing and equality, the rolling-update
//! arithmetic (maxSurge/maxUnavailable with upstream's rounding, the new replica set's next size,
//! proportional scaling) and the conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the replica sets (and their pods) of one deployment apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Upstream's `MaxRevHistoryLengthInChars`.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;

// Condition reasons (upstream's names).
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Annotations of the deployment that are not copied to its replica sets.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        "kubectl.kubernetes.io/last-applied-configuration"
            | REVISION
            | REVISION_HISTORY
            | DESIRED_REPLICAS
            | MAX_REPLICAS
            | "deprecated.deployment.rollback.to"
    )
}

pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn set_rs_replicas(rs: &mut ReplicaSet, n: i32) {
    rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
}

pub fn rs_status(rs: &ReplicaSet) -> k8s_openapi::api::apps::v1::ReplicaSetStatus {
    rs.status.clone().unwrap_or_default()
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

pub fn is_rolling(d: &Deployment) -> bool {
    !is_recreate(d)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision of a replica set (0 when absent or invalid).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter().map(revision).max().unwrap_or(0)
}

/// `GetScaledValueFromIntOrPercent`.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let p: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = p * i64::from(total);
            Ok(if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            } as i32)
        }
    }
}

/// `ResolveFenceposts`: (maxSurge, maxUnavailable) for `desired` replicas; surge rounds up,
/// unavailable down, and both zero becomes unavailable 1.
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let quarter = IntOrString::String("25%".into());
    let s = scaled_value(surge.unwrap_or(&quarter), desired, true)?;
    let u = scaled_value(unavailable.unwrap_or(&quarter), desired, false)?;
    Ok(if s == 0 && u == 0 { (0, 1) } else { (s, u) })
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        desired(d),
    )
    .unwrap_or((0, 1))
}

/// `MaxSurge`: 0 unless rolling.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// `MaxUnavailable`: 0 unless rolling with replicas; never more than the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || desired(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired(d))
}

/// Pods a replica set has or is about to have: its spec, or the pods it still has while its
/// controller has not deleted them yet. Stricter than upstream's spec-only count, so maxSurge
/// also holds for the pods as the API shows them.
pub fn pods_of(rs: &ReplicaSet) -> i32 {
    rs_replicas(rs).max(rs_status(rs).replicas)
}

/// Available pods a replica set can be counted on for: never more than its spec (a set being
/// scaled down still reports the pods it is about to delete).
pub fn available_of(rs: &ReplicaSet) -> i32 {
    rs_status(rs)
        .available_replicas
        .unwrap_or(0)
        .min(rs_replicas(rs))
}

/// `NewRSNewReplicas`: the new replica set's next size.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if is_recreate(d) {
        return desired(d);
    }
    let surge = max_surge(d);
    let current: i32 = all.iter().map(|rs| pods_of(rs)).sum();
    let max_total = desired(d) + surge;
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(desired(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up.max(0)
}

/// `GetProportion`: how many replicas `rs` gets of `to_add` (negative: removes).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = rs_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn rs_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if desired(d) == 0 {
        return -rs_replicas(rs);
    }
    let max_replicas = desired(d) + max_surge(d);
    let before = annotation(&rs.metadata, MAX_REPLICAS)
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v != 0)
        .unwrap_or_else(|| {
            d.status
                .as_ref()
                .map(|s| s.replicas.unwrap_or(0))
                .unwrap_or(0)
                .max(1)
        });
    let size = f64::from(rs_replicas(rs)) * f64::from(max_replicas) / f64::from(before);
    size.round() as i32 - rs_replicas(rs)
}

/// `SetReplicasAnnotations`: true when they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// `SetNewReplicaSetAnnotations`: copies the deployment's annotations, sets the revision and
/// keeps the replaced revision in the history (a rollback to this set). True when changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = a.get(REVISION).cloned();
    let old_int: i64 = old.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    if old_int < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let mut revs: Vec<&str> = history.split(',').filter(|r| !r.is_empty()).collect();
            let mut total = history.len() + old.len() + 1;
            while total > MAX_REVISION_HISTORY_CHARS && !revs.is_empty() {
                total -= revs[0].len() + 1;
                revs.remove(0);
            }
            revs.push(&old);
            a.insert(REVISION_HISTORY.into(), revs.join(","));
        }
    }
    if !exists && set_replicas_annotations(rs, desired(d), desired(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// The template without the pod-template-hash label, for comparing (`EqualIgnoreHash`).
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
    }
    let mut v = serde_json::to_value(&t).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        if o.get("metadata")
            .is_some_and(|m| m.as_object().is_some_and(|m| m.is_empty()))
        {
            o.remove("metadata");
        }
    }
    v
}

/// `EqualIgnoreHash`: the templates are equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// Upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// The pod-template-hash (`ComputeHash`): FNV-1a (32 bit) of the template's canonical JSON, plus
/// the collision count, encoded as upstream encodes it. Upstream hashes Go's spew rendering of
/// the template, which cannot be reproduced here, so the values differ from upstream's but are
/// just as stable.
pub fn compute_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(t).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    safe_encode(&h.to_string())
}

pub fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: now.clone(),
        last_update_time: now,
    }
}

/// `SetDeploymentCondition`: replaces the condition of that type unless status and reason are
/// the same; keeps the transition time while the status does not change.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(s, &c.type_.clone());
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let n = desired(d);
    s.updated_replicas.unwrap_or(0) == n
        && s.replicas.unwrap_or(0) == n
        && s.available_replicas.unwrap_or(0) == n
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: the new status shows progress over the deployment's current one.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// `DeploymentTimedOut`: the Progressing condition was last updated longer than the deadline
/// ago (at `now`).
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => return false,
        Some(TIMED_OUT) => return true,
        _ => {}
    }
    let Some(from) = c.last_update_time.as_ref() else {
        return false;
    };
    from.0.as_second() + i64::from(deadline) < now.as_second()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn is(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(resolve_fenceposts(None, None, 10).unwrap(), (3, 2));
        assert_eq!(
            resolve_fenceposts(Some(&is("10%")), Some(&is("10%")), 5).unwrap(),
            (1, 0)
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(0)), Some(&is("1%")), 50).unwrap(),
            (0, 1)
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 3).unwrap(),
            (2, 0)
        );
        assert!(resolve_fenceposts(Some(&is("x")), None, 3).is_err());
    }

    fn deploy(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta::default(),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(surge)),
                        max_unavailable: Some(IntOrString::Int(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(replicas: i32, max_annotation: Option<i32>) -> ReplicaSet {
        let mut r = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Some(m) = max_annotation {
            r.metadata.annotations = Some([(MAX_REPLICAS.to_string(), m.to_string())].into());
        }
        r
    }

    #[test]
    fn the_new_replica_set_grows_within_max_surge() {
        let d = deploy(10, 3, 2);
        let (old, new) = (rs(10, None), rs(0, None));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        let (old, new) = (rs(8, None), rs(3, None));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 5);
        // An old set that still has 10 pods though scaled to 8 holds the new one back.
        let mut old = rs(8, None);
        old.status.as_mut().unwrap().replicas = 10;
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
    }

    #[test]
    fn proportional_scaling_follows_the_max_replicas_annotation() {
        // 10 replicas + surge 3 = 13 before; scaled to 20 (+3 surge... 5 with 25%: int 3 here).
        let d = deploy(20, 3, 2);
        let old = rs(8, Some(13));
        let new = rs(5, Some(13));
        // Max after = 23; to add = 23 - 13 = 10.
        let p_old = proportion(&old, &d, 10, 0);
        let p_new = proportion(&new, &d, 10, p_old);
        assert_eq!(
            (p_old, p_new),
            (6, 4),
            "8*23/13=14.15 → +6, 5*23/13=8.85 → +4"
        );
        let down = deploy(0, 3, 2);
        assert_eq!(proportion(&old, &down, -13, 0), -8);
    }

    #[test]
    fn revisions_and_history_on_rollback() {
        let mut d = deploy(1, 1, 0);
        d.metadata.annotations = Some(
            [
                ("team".to_string(), "a".to_string()),
                (REVISION.to_string(), "9".to_string()),
            ]
            .into(),
        );
        let mut r = rs(1, None);
        assert!(set_new_rs_annotations(&d, &mut r, 1, false));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(a.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(a.get("team").map(String::as_str), Some("a"));
        assert_eq!(a.get(DESIRED_REPLICAS).map(String::as_str), Some("1"));
        assert_eq!(a.get(MAX_REPLICAS).map(String::as_str), Some("2"));
        assert!(!set_new_rs_annotations(&d, &mut r, 1, true));
        // Rolled back to: revision 3, history keeps 1.
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        assert!(set_new_rs_annotations(&d, &mut r, 5, true));
        let a = r.metadata.annotations.unwrap();
        assert_eq!(a.get(REVISION_HISTORY).map(String::as_str), Some("1,3"));
    }

    #[test]
    fn hashes_are_stable_encoded_and_change_with_collisions() {
        let t = PodTemplateSpec::default();
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t, None));
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(h, compute_hash(&t, Some(1)));
        let mut labelled = t.clone();
        labelled.metadata = Some(ObjectMeta {
            labels: Some([(POD_TEMPLATE_HASH.to_string(), h.clone())].into()),
            ..Default::default()
        });
        assert!(equal_ignore_hash(&t, &labelled));
    }

    #[test]
    fn completion_progress_and_deadline() {
        let mut d = deploy(3, 1, 0);
        d.metadata.generation = Some(2);
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(60);
        let done = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        };
        assert!(complete(&d, &done));
        let stale = DeploymentStatus {
            observed_generation: Some(1),
            ..done.clone()
        };
        assert!(!complete(&d, &stale));
        // More updated pods than the deployment's current status shows: progress.
        d.status = Some(DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(1),
            ..Default::default()
        });
        let more = DeploymentStatus {
            replicas: Some(4),
            updated_replicas: Some(2),
            ..Default::default()
        };
        assert!(progressing(&d, &more));
        assert!(!progressing(&d, d.status.as_ref().unwrap()));
        // The deadline counts from the Progressing condition's last update.
        let mut s = DeploymentStatus::default();
        let mut c = new_condition("Progressing", "True", RS_UPDATED, String::new());
        c.last_update_time = Some(Time(Timestamp::from_second(1000).unwrap()));
        set_condition(&mut s, c);
        assert!(!timed_out(&d, &s, Timestamp::from_second(1060).unwrap()));
        assert!(timed_out(&d, &s, Timestamp::from_second(1061).unwrap()));
        set_condition(
            &mut s,
            new_condition("Progressing", "True", NEW_RS_AVAILABLE, String::new()),
        );
        assert!(!timed_out(&d, &s, Timestamp::from_second(99_999).unwrap()));
        // Same status and reason: the condition is kept as it was.
        let before = condition(&s, "Progressing").cloned();
        set_condition(
            &mut s,
            new_condition("Progressing", "True", NEW_RS_AVAILABLE, "other".into()),
        );
        assert_eq!(condition(&s, "Progressing").cloned(), before);
    }
}
