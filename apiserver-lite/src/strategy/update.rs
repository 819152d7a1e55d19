//! Update validation: `ValidateObjectMetaUpdate` (name, namespace, uid, creation timestamp are
//! immutable) and the per-kind `Validate*Update` rules upstream enforces on top of the create
//! validation: pod spec mostly immutable (`ValidatePodUpdate`), Service clusterIP, Job selector and
//! template, apps/v1 selectors, StatefulSet spec fields, `immutable: true` ConfigMaps and Secrets,
//! Secret type, PVC and PV specs, Node podCIDR/providerID, EndpointSlice addressType,
//! PriorityClass value, StorageClass parameters/provisioner and RBAC roleRef.

use super::util::Ptr;
use super::util::{arr, is_empty, str_at};
use super::util::{Get, GetMut};
use super::validation::PV_NON_SOURCE_FIELDS;
use crate::resources::ResourceInfo;
use crate::status::Cause;
use serde_json::{json, Map, Value};

fn immutable(errs: &mut Vec<Cause>, path: &str, new: Option<&Value>, old: Option<&Value>) {
    if !same(new, old) {
        errs.push(Cause::invalid(
            path,
            new.unwrap_or(&Value::Null),
            "field is immutable",
        ));
    }
}

/// Equality that treats a missing field like null or an empty string/list/map (Go zero values).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (a, b) if is_empty(a) && is_empty(b) => true,
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.keys().chain(y.keys()).all(|k| same(x.g(k), y.g(k)))
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(Some(a), Some(b)))
        }
        (a, b) => a == b,
    }
}

/// `same` of `a` and `b` with `skip` removed from whichever is an object.
fn same_except(a: &Value, b: &Value, skip: &str) -> bool {
    let stripped_empty = |v: &Value| match v {
        Value::Object(m) => m.keys().all(|k| k == skip),
        other => is_empty(Some(other)),
    };
    match (a, b) {
        _ if stripped_empty(a) && stripped_empty(b) => true,
        (Value::Object(x), Value::Object(y)) => x
            .keys()
            .chain(y.keys())
            .filter(|k| *k != skip)
            .all(|k| same(x.g(k), y.g(k))),
        // an object (stripped or not) never equals a non-object
        (Value::Object(_), _) | (_, Value::Object(_)) => false,
        (a, b) => same(Some(a), Some(b)),
    }
}

/// Update checks beyond the create validation of the new object.
pub fn validate_update(info: &ResourceInfo, o: &Value, old: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    fn meta_field<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
        v.g("metadata").and_then(|m| m.g(k))
    }
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        let (n, ol) = (meta_field(o, k), meta_field(old, k));
        if !is_empty(ol) && !same(n, ol) {
            errs.push(Cause::invalid(
                format!("metadata.{k}"),
                n.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    }
    let spec = o.g("spec");
    let old_spec = old.g("spec");
    let sp = |ptr: &str| o.ptr(ptr);
    let op = |ptr: &str| old.ptr(ptr);
    match (info.group, info.kind) {
        ("", "Pod") => pod_update(o, old, &mut errs),
        ("", "Service") => {
            let (t, ot) = (str_at(o, "/spec/type"), str_at(old, "/spec/type"));
            if t != "ExternalName" && ot != "ExternalName" {
                let (ip, oip) = (str_at(o, "/spec/clusterIP"), str_at(old, "/spec/clusterIP"));
                if !oip.is_empty() && ip != oip {
                    errs.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &json!(ip),
                        "may not change once set",
                    ));
                }
            }
        }
        ("", "ConfigMap") | ("", "Secret") => {
            if old.g("immutable") == Some(&json!(true)) {
                if o.g("immutable") != Some(&json!(true)) {
                    errs.push(Cause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
                for k in ["data", "binaryData"] {
                    if !same(o.g(k), old.g(k)) {
                        errs.push(Cause::forbidden(
                            k,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
            }
            if info.kind == "Secret" {
                immutable(&mut errs, "type", o.g("type"), old.g("type"));
            }
        }
        ("", "PersistentVolumeClaim") => pvc_update(o, old, &mut errs),
        ("", "PersistentVolume") => {
            let sources = |v: Option<&Value>| -> Value {
                let mut m = v.and_then(Value::as_object).cloned().unwrap_or_default();
                m.retain(|k, _| !PV_NON_SOURCE_FIELDS.contains(&k.as_str()));
                Value::Object(m)
            };
            if !same(Some(&sources(spec)), Some(&sources(old_spec))) {
                errs.push(Cause::forbidden(
                    "spec.persistentvolumesource",
                    "spec.persistentvolumesource is immutable after creation",
                ));
            }
            immutable(
                &mut errs,
                "spec.volumeMode",
                sp("/spec/volumeMode"),
                op("/spec/volumeMode"),
            );
            if !is_empty(op("/spec/nodeAffinity")) {
                immutable(
                    &mut errs,
                    "spec.nodeAffinity",
                    sp("/spec/nodeAffinity"),
                    op("/spec/nodeAffinity"),
                );
            }
        }
        ("", "Node") => {
            if !is_empty(op("/spec/podCIDR")) && !same(sp("/spec/podCIDR"), op("/spec/podCIDR")) {
                errs.push(Cause::forbidden(
                    "spec.podCIDRs",
                    "node updates may not change podCIDR except from \"\" to valid",
                ));
            }
            if !is_empty(op("/spec/providerID"))
                && !same(sp("/spec/providerID"), op("/spec/providerID"))
            {
                errs.push(Cause::forbidden(
                    "spec.providerID",
                    "node updates may not change providerID except from \"\" to valid",
                ));
            }
        }
        ("apps", "Deployment") | ("apps", "ReplicaSet") | ("apps", "DaemonSet") => {
            immutable(
                &mut errs,
                "spec.selector",
                sp("/spec/selector"),
                op("/spec/selector"),
            );
        }
        ("apps", "StatefulSet") => {
            immutable(
                &mut errs,
                "spec.selector",
                sp("/spec/selector"),
                op("/spec/selector"),
            );
            let rest = |v: Option<&Value>| -> Value {
                let mut m = v.and_then(Value::as_object).cloned().unwrap_or_default();
                for k in [
                    "replicas",
                    "ordinals",
                    "template",
                    "updateStrategy",
                    "revisionHistoryLimit",
                    "persistentVolumeClaimRetentionPolicy",
                    "minReadySeconds",
                    "selector",
                ] {
                    m.remove(k);
                }
                Value::Object(m)
            };
            if !same(Some(&rest(spec)), Some(&rest(old_spec))) {
                errs.push(Cause::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
            }
        }
        ("batch", "Job") => {
            immutable(
                &mut errs,
                "spec.selector",
                sp("/spec/selector"),
                op("/spec/selector"),
            );
            immutable(
                &mut errs,
                "spec.template",
                sp("/spec/template"),
                op("/spec/template"),
            );
            immutable(
                &mut errs,
                "spec.completionMode",
                sp("/spec/completionMode"),
                op("/spec/completionMode"),
            );
            immutable(
                &mut errs,
                "spec.podFailurePolicy",
                sp("/spec/podFailurePolicy"),
                op("/spec/podFailurePolicy"),
            );
            let elastic = str_at(o, "/spec/completionMode") == "Indexed"
                && sp("/spec/completions") == sp("/spec/parallelism");
            if !elastic {
                immutable(
                    &mut errs,
                    "spec.completions",
                    sp("/spec/completions"),
                    op("/spec/completions"),
                );
            }
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            immutable(
                &mut errs,
                "addressType",
                o.g("addressType"),
                old.g("addressType"),
            );
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if !same(o.g("value"), old.g("value")) {
                errs.push(Cause::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            immutable(
                &mut errs,
                "preemptionPolicy",
                o.g("preemptionPolicy"),
                old.g("preemptionPolicy"),
            );
        }
        ("storage.k8s.io", "StorageClass") => {
            if !same(o.g("parameters"), old.g("parameters")) {
                errs.push(Cause::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            if !same(o.g("provisioner"), old.g("provisioner")) {
                errs.push(Cause::forbidden(
                    "provisioner",
                    "updates to provisioner are forbidden.",
                ));
            }
            immutable(
                &mut errs,
                "reclaimPolicy",
                o.g("reclaimPolicy"),
                old.g("reclaimPolicy"),
            );
            immutable(
                &mut errs,
                "volumeBindingMode",
                o.g("volumeBindingMode"),
                old.g("volumeBindingMode"),
            );
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding")
            if !same(o.g("roleRef"), old.g("roleRef")) =>
        {
            errs.push(Cause::invalid(
                "roleRef",
                o.g("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            ));
        }
        _ => {}
    }
    errs
}

const POD_UPDATABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// `ValidatePodUpdate`: only images, activeDeadlineSeconds, added tolerations, removed
/// scheduling gates and a negative grace period raised to 1 may change.
fn pod_update(o: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let empty = Value::Object(Map::new());
    let spec = o.g("spec").unwrap_or(&empty);
    let old_spec = old.g("spec").unwrap_or(&empty);
    for key in ["containers", "initContainers"] {
        if arr(spec, key).len() != arr(old_spec, key).len() {
            errs.push(Cause::forbidden(
                format!("spec.{key}"),
                "pod updates may not add or remove containers",
            ));
            return;
        }
    }
    // activeDeadlineSeconds: may be set or lowered, never unset or raised.
    let ads = spec.g("activeDeadlineSeconds").and_then(Value::as_i64);
    let old_ads = old_spec.g("activeDeadlineSeconds").and_then(Value::as_i64);
    if let Some(o_ads) = old_ads {
        match ads {
            None => errs.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &Value::Null,
                "must not update from a positive integer to nil value",
            )),
            Some(n) if n > o_ads => errs.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                &json!(n),
                "must be less than or equal to previous value",
            )),
            _ => {}
        }
    }
    // tolerations: every old one must still be there (tolerationSeconds may change).
    let new_tols = arr(spec, "tolerations");
    for t in arr(old_spec, "tolerations") {
        if !new_tols
            .iter()
            .any(|n| same_except(n, t, "tolerationSeconds"))
        {
            errs.push(Cause::forbidden(
                "spec.tolerations",
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // scheduling gates may only be removed.
    let gates = arr(spec, "schedulingGates");
    if gates
        .iter()
        .any(|g| !arr(old_spec, "schedulingGates").contains(g))
    {
        errs.push(Cause::forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        ));
    }
    // Normalise the mutable fields and compare the rest. First without cloning the spec, which
    // settles the usual, unchanged case; otherwise (or when unsure) as upstream spells it.
    let grace_ok = old_spec
        .g("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g < 0)
        && spec.g("terminationGracePeriodSeconds") == Some(&json!(1));
    if pod_spec_unchanged(spec, old_spec, grace_ok) {
        return;
    }
    let mut a = spec.clone();
    let b = old_spec;
    let am = a.as_object_mut().expect("object");
    for key in ["containers", "initContainers"] {
        let olds = arr(b, key);
        if let Some(list) = am.gm(key).and_then(Value::as_array_mut) {
            for (c, oc) in list.iter_mut().zip(olds) {
                if let (Some(c), Some(img)) = (c.as_object_mut(), oc.g("image")) {
                    c.insert("image".into(), img.clone());
                }
            }
        }
    }
    copy_field(am, b, "activeDeadlineSeconds");
    copy_field(am, b, "tolerations");
    copy_field(am, b, "schedulingGates");
    let grace_ok = b
        .g("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g < 0)
        && am.g("terminationGracePeriodSeconds") == Some(&json!(1));
    if grace_ok {
        copy_field(am, b, "terminationGracePeriodSeconds");
    }
    if !same(Some(&a), Some(b)) {
        let changed: Vec<String> = a
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .chain(b.as_object().into_iter().flat_map(|m| m.keys()))
            .filter(|k| !same(a.g(k), b.g(k)))
            .map(|k| format!("spec.{k}"))
            .fold(Vec::new(), |mut acc, k| {
                if !acc.contains(&k) {
                    acc.push(k);
                }
                acc
            });
        errs.push(Cause::forbidden(
            "spec",
            &format!("{POD_UPDATABLE}\nchanged: {}", changed.join(", ")),
        ));
    }
}

/// True only when the normalised comparison of `pod_update` certainly finds no change (false
/// may also mean "not sure"): mutable fields are skipped (normalising copies them from the old
/// spec, and `same` of a value with itself holds) and container images are ignored where
/// normalising would copy the old image.
fn pod_spec_unchanged(spec: &Value, old_spec: &Value, grace_ok: bool) -> bool {
    let (Some(a), Some(b)) = (spec.as_object(), old_spec.as_object()) else {
        return false;
    };
    a.keys().chain(b.keys()).all(|k| match k.as_str() {
        "activeDeadlineSeconds" | "tolerations" | "schedulingGates" => true,
        "terminationGracePeriodSeconds" if grace_ok => true,
        "containers" | "initContainers" => containers_unchanged(a.g(k), b.g(k)),
        _ => same(a.g(k), b.g(k)),
    })
}

/// `pod_spec_unchanged` for a container list (false when either is not a list).
fn containers_unchanged(a: Option<&Value>, b: Option<&Value>) -> bool {
    let (Some(Value::Array(x)), Some(Value::Array(y))) = (a, b) else {
        return false;
    };
    x.len() == y.len()
        && x.iter().zip(y).all(|(c, oc)| {
            match (
                c.as_object(),
                oc.as_object().filter(|o| o.g("image").is_some()),
            ) {
                // normalising sets c's image to oc's, so only the other fields count
                (Some(cm), Some(om)) => cm
                    .keys()
                    .chain(om.keys())
                    .filter(|k| *k != "image")
                    .all(|k| same(cm.g(k), om.g(k))),
                _ => same(Some(c), Some(oc)),
            }
        })
}

fn copy_field(m: &mut Map<String, Value>, from: &Value, key: &str) {
    match from.g(key) {
        Some(v) => {
            m.insert(key.into(), v.clone());
        }
        None => {
            m.remove(key);
        }
    }
}

/// `ValidatePersistentVolumeClaimUpdate`: spec immutable except storage requests of bound
/// claims (growth only), a volumeName binding and volumeAttributesClassName.
fn pvc_update(o: &Value, old: &Value, errs: &mut Vec<Cause>) {
    let mut a = o.g("spec").cloned().unwrap_or(json!({}));
    let b = old.g("spec").cloned().unwrap_or(json!({}));
    let am = a.as_object_mut().expect("object");
    if is_empty(b.g("volumeName")) {
        copy_field(am, &b, "volumeName");
    }
    copy_field(am, &b, "volumeAttributesClassName");
    let bound = str_at(old, "/status/phase") == "Bound";
    if bound {
        let new_req = o
            .ptr("/spec/resources/requests/storage")
            .and_then(super::util::quantity);
        let old_req = old
            .ptr("/spec/resources/requests/storage")
            .and_then(super::util::quantity);
        if let (Some(n), Some(ol)) = (new_req, old_req) {
            if n < ol {
                errs.push(Cause::forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            }
        }
        if let Some(req) = b.ptr("/resources/requests").cloned() {
            obj_at(am, "resources").insert("requests".into(), req);
        }
    }
    if !same(Some(&a), Some(&b)) {
        errs.push(Cause::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
    }
}

fn obj_at<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    super::defaults::obj_in(m, key)
}
