//! ControllerRevision history: upstream's `pkg/controller/history`, shared by the DaemonSet and
//! StatefulSet controllers.
//!
//! A controller snapshots the part of its object that defines its pods (a patch that replaces
//! `spec.template`) into a ControllerRevision named `<parent>-<hash>`, where the hash covers the
//! patch data and the parent's collision count. Revisions carry the
//! `controller.kubernetes.io/hash` label and a monotonically growing `revision` number;
//! `kubectl rollout history/undo` read them, and an undo patches the parent with a revision's
//! data, after which the controller finds that revision again and gives it the next number.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::replicaset::controller_ref::is_not_found;
use crate::replicaset::pods::controller_ref;

/// The label holding a revision's hash (upstream's `ControllerRevisionHashLabel`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";
/// Names are at most 253 characters: the parent's name is cut to leave room for `-<hash>`.
const MAX_PREFIX: usize = 223;

/// Upstream's `rand.SafeEncodeString` alphabet (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The patch data of a template (the shape of upstream's `getPatch` for both controllers and of
/// kubectl's rollback code): `{"spec":{"template":{…,"$patch":"replace"}}}`, keys sorted.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template a revision's data holds (upstream's `ApplyRevision`, for the template-only
/// patches both controllers write).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// `HashControllerRevision`: FNV-1a (32 bit) of the data plus the collision count, safe-encoded.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(data).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// `ControllerRevisionName`.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix = if prefix.len() > MAX_PREFIX {
        &prefix[..MAX_PREFIX]
    } else {
        prefix
    };
    format!("{prefix}-{hash}")
}

/// `NewControllerRevision`: a revision of `parent` (kind `kind`) with `data`, the template's
/// labels plus the hash label, controlled by the parent.
pub fn new_revision(
    parent: &ObjectMeta,
    api_version: &str,
    kind: &str,
    template_labels: Option<&BTreeMap<String, String>>,
    data: Value,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let h = hash(&data, collision_count);
    let mut labels = template_labels.cloned().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(parent.name.as_deref().unwrap_or(""), &h)),
            namespace: parent.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(api_version, kind, parent)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// `EqualRevision`: same hash label (when both have one) and the same data.
pub fn equal(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    let label = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .cloned()
    };
    if let (Some(x), Some(y)) = (label(a), label(b)) {
        if x != y {
            return false;
        }
    }
    a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// `SortControllerRevisions`: by revision number, then creation time, then name.
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t = |r: &ControllerRevision| {
                    r.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_second())
                };
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// `NextRevision` of revisions sorted by [`sort`].
pub fn next_revision(sorted: &[ControllerRevision]) -> i64 {
    sorted.last().map_or(1, |r| r.revision + 1)
}

/// Errors writing revisions.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("creating controller revision {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating controller revision {name}: {source}")]
    Update {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting controller revision {name}: {source}")]
    Delete {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// `realHistory.CreateControllerRevision`: creates `rev`, probing with a higher collision count
/// while a different revision holds the name. Returns the revision (an equal one that already
/// existed counts) and the collision count used.
pub async fn create(
    api: &Api<ControllerRevision>,
    parent_name: &str,
    rev: &ControllerRevision,
    collision_count: i32,
) -> Result<(ControllerRevision, i32), HistoryError> {
    let mut count = collision_count;
    loop {
        let mut probe = rev.clone();
        let data = rev
            .data
            .as_ref()
            .map(|d| d.0.clone())
            .unwrap_or(Value::Null);
        let h = hash(&data, Some(count));
        let name = revision_name(parent_name, &h);
        probe.metadata.name = Some(name.clone());
        probe
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), h);
        match api.create(&PostParams::default(), &probe).await {
            Ok(r) => return Ok((r, count)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                match api.get_opt(&name).await {
                    Ok(Some(existing)) if equal(&existing, &probe) => return Ok((existing, count)),
                    Ok(_) => {}
                    Err(source) => return Err(HistoryError::Create { name, source }),
                }
                count += 1;
            }
            Err(source) => return Err(HistoryError::Create { name, source }),
        }
    }
}

/// `UpdateControllerRevision`: gives `rev` the number `revision`.
pub async fn renumber(
    api: &Api<ControllerRevision>,
    rev: &ControllerRevision,
    revision: i64,
) -> Result<ControllerRevision, HistoryError> {
    let name = rev.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"revision": revision})),
    )
    .await
    .map_err(|source| HistoryError::Update { name, source })
}

/// Deletes a revision (one already gone is fine).
pub async fn delete(api: &Api<ControllerRevision>, name: &str) -> Result<(), HistoryError> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(source) => Err(HistoryError::Delete {
            name: name.into(),
            source,
        }),
    }
}

/// The revisions to delete so that at most `limit` of the `old` ones (sorted oldest first) that
/// are not `in_use` remain (the truncation both controllers do).
pub fn to_truncate(
    old: &[ControllerRevision],
    limit: i32,
    in_use: impl Fn(&ControllerRevision) -> bool,
) -> Vec<&ControllerRevision> {
    let unused: Vec<&ControllerRevision> = old.iter().filter(|r| !in_use(r)).collect();
    let excess = unused.len().saturating_sub(limit.max(0) as usize);
    unused.into_iter().take(excess).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_revision_round_trips_its_template_and_hashes_with_the_collision_count() {
        let parent = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        };
        let t = template("nginx:1");
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let r = new_revision(&parent, "apps/v1", "DaemonSet", None, data.clone(), 1, None);
        assert_eq!(template_of(&r), Some(t.clone()));
        let h = r.metadata.labels.as_ref().unwrap()[HASH_LABEL].clone();
        assert_eq!(
            r.metadata.name.as_deref(),
            Some(format!("web-{h}").as_str())
        );
        assert_ne!(hash(&data, Some(1)), hash(&data, None));
        assert_eq!(hash(&data, Some(1)), hash(&data, Some(1)));
        let other = new_revision(
            &parent,
            "apps/v1",
            "DaemonSet",
            None,
            template_patch(&template("nginx:2")),
            2,
            None,
        );
        assert!(equal(&r, &r.clone()));
        assert!(!equal(&r, &other));
        assert_eq!(
            r.metadata.owner_references.as_ref().unwrap()[0].controller,
            Some(true)
        );
    }

    #[test]
    fn history_is_sorted_by_number_and_truncated_to_the_limit_sparing_revisions_in_use() {
        let rev = |name: &str, n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: None,
            revision: n,
        };
        let mut revs = vec![rev("c", 3), rev("a", 1), rev("b", 2), rev("d", 4)];
        sort(&mut revs);
        let names: Vec<_> = revs
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(next_revision(&revs), 5);
        assert_eq!(next_revision(&[]), 1);
        let gone = to_truncate(&revs, 1, |r| r.metadata.name.as_deref() == Some("a"));
        let gone: Vec<_> = gone
            .iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(gone, ["b", "c"]);
        assert!(to_truncate(&revs, 10, |_| false).is_empty());
    }
}
