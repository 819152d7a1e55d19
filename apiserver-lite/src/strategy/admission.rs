//! The built-in mutating admission plugins that run on create, in upstream's order:
//! plugin/pkg/admission/priority (`priorityClassName` -> `spec.priority` and
//! `spec.preemptionPolicy`, the global default class, one global default only),
//! plugin/pkg/admission/defaulttolerationseconds (not-ready / unreachable NoExecute tolerations
//! for 300s) and plugin/pkg/admission/limitranger (default requests and limits from
//! LimitRanges of type Container, then its min/max check); for a PersistentVolumeClaim
//! plugin/pkg/admission/storage/storageclass/setdefault (DefaultStorageClass). Rejections are 403 Forbidden as
//! upstream's `admission.NewForbidden`.

use super::defaults::obj_in;
use super::util::Get;
use super::util::{arr, entries, is_empty, obj, quantity, quantity_text};
use super::AdmissionLookup;
use crate::resources::ResourceInfo;
use crate::status::ApiError;
use serde_json::{json, Map, Value};

/// The system priority classes, which always exist.
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i64); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// Runs the create-time admission plugins relevant to `info`'s kind. Returns whether they may
/// have changed something the defaulters fill (only LimitRanger does, for a Pod: it sets
/// resource limits, from which requests default).
pub fn admit_create(
    info: &ResourceInfo,
    o: &mut Value,
    lookup: &dyn AdmissionLookup,
) -> Result<bool, ApiError> {
    match (info.group, info.kind) {
        ("", "Pod") => {
            priority(info, o, lookup)?;
            default_toleration_seconds(o);
            let ranges = lookup.limit_ranges(namespace_of(o));
            if ranges.is_empty() {
                // Nothing to default from and nothing to check against.
                return Ok(false);
            }
            limit_ranger(o, &ranges);
            limit_ranger_validate(info, o, &ranges)?;
            Ok(true)
        }
        ("", "PersistentVolumeClaim") => {
            default_storage_class(o, lookup);
            Ok(true)
        }
        ("scheduling.k8s.io", "PriorityClass") => priority_class(info, o, lookup).map(|()| true),
        _ => Ok(true),
    }
}

/// plugin/pkg/admission/storage/storageclass/setdefault: a claim that names no class (neither
/// `storageClassName`, even "", nor the beta annotation) gets the default class, if any.
fn default_storage_class(o: &mut Value, lookup: &dyn AdmissionLookup) {
    let named = o
        .g("spec")
        .and_then(|s| s.g("storageClassName"))
        .is_some_and(|c| !c.is_null());
    let annotated = o
        .g("metadata")
        .and_then(|m| m.g("annotations"))
        .and_then(|a| a.g("volume.beta.kubernetes.io/storage-class"))
        .is_some();
    if named || annotated {
        return;
    }
    if let Some(class) = lookup.default_storage_class() {
        obj(o, "spec").insert("storageClassName".into(), Value::String(class));
    }
}

/// `metadata.namespace` as a string, or "".
fn namespace_of(o: &Value) -> &str {
    o.g("metadata")
        .and_then(|m| m.g("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn forbidden(info: &ResourceInfo, o: &Value, why: &str) -> ApiError {
    ApiError::forbidden(
        info.group,
        info.plural,
        super::util::str_at(o, "/metadata/name"),
        why,
    )
}

/// Resolves a class by name: the lookup first, then the built-in system classes.
fn find_class(lookup: &dyn AdmissionLookup, name: &str) -> Option<Value> {
    lookup.priority_class(name).or_else(|| {
        SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, v)| {
                json!({"metadata": {"name": n}, "value": v, "preemptionPolicy": "PreemptLowerPriority"})
            })
    })
}

/// The priority plugin's `admitPod` for create.
fn priority(
    info: &ResourceInfo,
    o: &mut Value,
    lookup: &dyn AdmissionLookup,
) -> Result<(), ApiError> {
    let class_name = o
        .g("spec")
        .and_then(|s| s.g("priorityClassName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    // The class name to record: None when there is none, or when it is already the pod's.
    let (name, value, policy) = if class_name.is_empty() {
        match lookup.global_default_priority_class() {
            Some(mut pc) => (
                Some(super::util::str_at(&pc, "/metadata/name").to_string())
                    .filter(|n| !n.is_empty()),
                pc.g("value").and_then(Value::as_i64).unwrap_or(0),
                pc.as_object_mut()
                    .and_then(|m| m.remove("preemptionPolicy")),
            ),
            None => (None, 0, Some(Value::String("PreemptLowerPriority".into()))),
        }
    } else {
        match find_class(lookup, class_name) {
            Some(mut pc) => (
                None,
                pc.g("value").and_then(Value::as_i64).unwrap_or(0),
                pc.as_object_mut()
                    .and_then(|m| m.remove("preemptionPolicy")),
            ),
            None => {
                return Err(forbidden(
                    info,
                    o,
                    &format!("no PriorityClass with name {class_name} was found"),
                ))
            }
        }
    };
    if let Some(p) = o
        .g("spec")
        .and_then(|s| s.g("priority"))
        .and_then(Value::as_i64)
    {
        if p != value {
            return Err(forbidden(
                info,
                o,
                &format!("the integer value of priority ({p}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"),
            ));
        }
    }
    let spec = obj(o, "spec");
    if let Some(name) = name {
        spec.insert("priorityClassName".into(), Value::String(name));
    }
    spec.insert("priority".into(), Value::from(value));
    if let Some(policy) = policy.filter(|p| !p.is_null()) {
        if let Some(given) = spec.g("preemptionPolicy").filter(|p| !is_empty(Some(p))) {
            if *given != policy {
                let (g, c) = (quantity_text(given), quantity_text(&policy));
                return Err(forbidden(
                    info,
                    o,
                    &format!("the string value of PreemptionPolicy ({g}) must not be provided in pod spec; priority admission controller computed {c} from the given PriorityClass name"),
                ));
            }
        }
        spec.insert("preemptionPolicy".into(), policy);
    }
    Ok(())
}

/// The priority plugin's check on PriorityClass create: only one global default.
fn priority_class(
    info: &ResourceInfo,
    o: &Value,
    lookup: &dyn AdmissionLookup,
) -> Result<(), ApiError> {
    if o.g("globalDefault") != Some(&json!(true)) {
        return Ok(());
    }
    if let Some(existing) = lookup.global_default_priority_class() {
        let name = super::util::str_at(&existing, "/metadata/name");
        if name != super::util::str_at(o, "/metadata/name") {
            return Err(forbidden(
                info,
                o,
                &format!(
                    "PriorityClass {name} is already marked as default. Only one default can exist"
                ),
            ));
        }
    }
    Ok(())
}

/// The seconds DefaultTolerationSeconds gives: `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds` (300 each upstream). Process-wide, as the flags are:
/// set once at start by [`set_default_toleration_seconds`].
static NOT_READY_SECONDS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(300);
static UNREACHABLE_SECONDS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(300);

/// Sets the tolerations' seconds DefaultTolerationSeconds adds from now on.
pub fn set_default_toleration_seconds(not_ready: i64, unreachable: i64) {
    use std::sync::atomic::Ordering::Relaxed;
    NOT_READY_SECONDS.store(not_ready, Relaxed);
    UNREACHABLE_SECONDS.store(unreachable, Relaxed);
}

/// DefaultTolerationSeconds: tolerate not-ready and unreachable nodes for 300s (or what the flags
/// say) unless the pod already tolerates them (an empty key or effect matches too).
pub fn default_toleration_seconds(o: &mut Value) {
    const KEYS: [&str; 2] = [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ];
    let missing = {
        let tols = arr(o.g("spec").unwrap_or(&Value::Null), "tolerations");
        let tolerates = |key: &str| {
            tols.iter().any(|t| {
                let k = t.g("key").and_then(Value::as_str).unwrap_or("");
                let e = t.g("effect").and_then(Value::as_str).unwrap_or("");
                (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
            })
        };
        KEYS.map(|k| !tolerates(k))
    };
    if !missing.iter().any(|m| *m) {
        return;
    }
    use std::sync::atomic::Ordering::Relaxed;
    let seconds = [
        NOT_READY_SECONDS.load(Relaxed),
        UNREACHABLE_SECONDS.load(Relaxed),
    ];
    let add = KEYS
        .iter()
        .zip(seconds)
        .zip(missing)
        .filter(|(_, m)| *m)
        .map(|((key, secs), _)| {
            json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs})
        });
    let spec = obj(o, "spec");
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    list.as_array_mut().expect("array").extend(add);
}

/// LimitRanger's defaulting: for each Container limit range item, missing limits come from
/// `default` and missing requests from `defaultRequest`; records what it set in the
/// `kubernetes.io/limit-ranger` annotation.
pub fn limit_ranger(o: &mut Value, ranges: &[Value]) {
    let mut notes: Vec<String> = Vec::new();
    for lr in ranges {
        let mut lr = lr.clone();
        super::defaults::apply(
            crate::resources::find_kind("", "LimitRange").expect("LimitRange"),
            &mut lr,
        );
        let mut def_limits = Map::new();
        let mut def_requests = Map::new();
        for item in arr(lr.g("spec").unwrap_or(&Value::Null), "limits") {
            if item.g("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            for (k, v) in entries(item, "default") {
                def_limits.insert(k.clone(), v.clone());
            }
            for (k, v) in entries(item, "defaultRequest") {
                def_requests.insert(k.clone(), v.clone());
            }
        }
        if def_limits.is_empty() && def_requests.is_empty() {
            continue;
        }
        let spec = obj(o, "spec");
        for (key, prefix) in [
            ("containers", "container"),
            ("initContainers", "init container"),
        ] {
            for c in super::util::each_obj_mut(spec, key) {
                let cname = c
                    .g("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let res = obj_in(c, "resources");
                let mut set_limits: Vec<String> = Vec::new();
                let mut set_requests: Vec<String> = Vec::new();
                {
                    let limits = obj_in(res, "limits");
                    for (k, v) in &def_limits {
                        if !limits.contains_key(k) {
                            limits.insert(k.clone(), v.clone());
                            set_limits.push(k.clone());
                        }
                    }
                }
                {
                    let requests = obj_in(res, "requests");
                    for (k, v) in &def_requests {
                        if !requests.contains_key(k) {
                            requests.insert(k.clone(), v.clone());
                            set_requests.push(k.clone());
                        }
                    }
                }
                for k in ["limits", "requests"] {
                    if res.g(k).is_some_and(|v| is_empty(Some(v))) {
                        res.remove(k);
                    }
                }
                set_requests.sort();
                set_limits.sort();
                if !set_requests.is_empty() {
                    notes.push(format!(
                        "{} request for {prefix} {cname}",
                        set_requests.join(", ")
                    ));
                }
                if !set_limits.is_empty() {
                    notes.push(format!(
                        "{} limit for {prefix} {cname}",
                        set_limits.join(", ")
                    ));
                }
            }
        }
    }
    if !notes.is_empty() {
        let ann = obj_in(obj(o, "metadata"), "annotations");
        ann.insert(
            "kubernetes.io/limit-ranger".into(),
            json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
        );
    }
}

/// LimitRanger's validation: per-container min (against requests) and max (against limits).
fn limit_ranger_validate(info: &ResourceInfo, o: &Value, ranges: &[Value]) -> Result<(), ApiError> {
    let mut errs: Vec<String> = Vec::new();
    let spec = o.g("spec").cloned().unwrap_or(Value::Null);
    for lr in ranges {
        for item in arr(lr.g("spec").unwrap_or(&Value::Null), "limits") {
            if item.g("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            for key in ["containers", "initContainers"] {
                for c in arr(&spec, key) {
                    let res = c.g("resources").cloned().unwrap_or(Value::Null);
                    for (k, min) in entries(item, "min") {
                        match res.g("requests").and_then(|r| r.g(k)) {
                            None => errs.push(format!(
                                "minimum {k} usage per Container is {}.  No request is specified",
                                quantity_text(min)
                            )),
                            Some(r) if quantity(r) < quantity(min) => errs.push(format!(
                                "minimum {k} usage per Container is {}, but request is {}",
                                quantity_text(min),
                                quantity_text(r)
                            )),
                            _ => {}
                        }
                    }
                    for (k, max) in entries(item, "max") {
                        match res.g("limits").and_then(|r| r.g(k)) {
                            None => errs.push(format!(
                                "maximum {k} usage per Container is {}.  No limit is specified",
                                quantity_text(max)
                            )),
                            Some(l) if quantity(l) > quantity(max) => errs.push(format!(
                                "maximum {k} usage per Container is {}, but limit is {}",
                                quantity_text(max),
                                quantity_text(l)
                            )),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(forbidden(info, o, &errs[0])),
        _ => Err(forbidden(info, o, &format!("[{}]", errs.join(", ")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find_kind;

    #[derive(Default)]
    struct Fake {
        classes: Vec<Value>,
        ranges: Vec<Value>,
        storage_class: Option<String>,
    }

    impl AdmissionLookup for Fake {
        fn priority_class(&self, name: &str) -> Option<Value> {
            self.classes
                .iter()
                .find(|c| c["metadata"]["name"] == name)
                .cloned()
        }
        fn global_default_priority_class(&self) -> Option<Value> {
            self.classes
                .iter()
                .find(|c| c["globalDefault"] == true)
                .cloned()
        }
        fn limit_ranges(&self, _: &str) -> Vec<Value> {
            self.ranges.clone()
        }
        fn default_storage_class(&self) -> Option<String> {
            self.storage_class.clone()
        }
    }

    #[test]
    fn default_storage_class_table() {
        let info = find_kind("", "PersistentVolumeClaim").unwrap();
        let with_default = Fake {
            storage_class: Some("local-path".into()),
            ..Default::default()
        };
        let without = Fake::default();
        // (default class, claim, the class after admission)
        let cases: Vec<(&Fake, Value, Value)> = vec![
            (&with_default, json!({"spec": {}}), json!("local-path")),
            (
                &with_default,
                json!({"spec": {"storageClassName": "fast"}}),
                json!("fast"),
            ),
            (
                &with_default,
                json!({"spec": {"storageClassName": ""}}),
                json!(""),
            ),
            (
                &with_default,
                json!({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "x"}}, "spec": {}}),
                Value::Null,
            ),
            (&without, json!({"spec": {}}), Value::Null),
        ];
        for (lookup, mut claim, want) in cases {
            let before = claim.clone();
            admit_create(info, &mut claim, lookup).unwrap();
            assert_eq!(claim["spec"]["storageClassName"], want, "{before}");
        }
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn priority_table() {
        let high =
            json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        let dflt = json!({"metadata": {"name": "dflt"}, "value": 7, "globalDefault": true, "preemptionPolicy": "PreemptLowerPriority"});
        // (classes, pod spec, Ok((class, priority, policy)) or Err(code))
        type Want = Result<(&'static str, i64, &'static str), u16>;
        let cases: Vec<(Vec<Value>, Value, Want)> = vec![
            (vec![], json!({}), Ok(("", 0, "PreemptLowerPriority"))),
            (
                vec![dflt.clone()],
                json!({}),
                Ok(("dflt", 7, "PreemptLowerPriority")),
            ),
            (
                vec![high.clone()],
                json!({"priorityClassName": "high"}),
                Ok(("high", 1000, "Never")),
            ),
            (
                vec![],
                json!({"priorityClassName": "system-node-critical"}),
                Ok((
                    "system-node-critical",
                    2_000_001_000,
                    "PreemptLowerPriority",
                )),
            ),
            (
                vec![],
                json!({"priorityClassName": "system-cluster-critical"}),
                Ok((
                    "system-cluster-critical",
                    2_000_000_000,
                    "PreemptLowerPriority",
                )),
            ),
            (vec![], json!({"priorityClassName": "nope"}), Err(403)),
            (
                vec![high.clone()],
                json!({"priorityClassName": "high", "priority": 5}),
                Err(403),
            ),
            (
                vec![high.clone()],
                json!({"priorityClassName": "high", "priority": 1000}),
                Ok(("high", 1000, "Never")),
            ),
            (
                vec![high.clone()],
                json!({"priorityClassName": "high", "preemptionPolicy": "PreemptLowerPriority"}),
                Err(403),
            ),
        ];
        let info = find_kind("", "Pod").unwrap();
        for (i, (classes, spec, want)) in cases.into_iter().enumerate() {
            let lookup = Fake {
                classes,
                ..Default::default()
            };
            let mut o = pod(spec);
            let got = priority(info, &mut o, &lookup);
            match want {
                Ok((class, prio, policy)) => {
                    assert!(got.is_ok(), "case {i}: {got:?}");
                    assert_eq!(
                        super::super::util::str_at(&o, "/spec/priorityClassName"),
                        class,
                        "case {i}"
                    );
                    assert_eq!(o["spec"]["priority"], prio, "case {i}");
                    assert_eq!(o["spec"]["preemptionPolicy"], policy, "case {i}");
                }
                Err(code) => assert_eq!(got.unwrap_err().code, code, "case {i}"),
            }
        }
        let lookup = Fake::default();
        let err = priority(
            info,
            &mut pod(json!({"priorityClassName": "nope"})),
            &lookup,
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: no PriorityClass with name nope was found"
        );
    }

    #[test]
    fn one_global_default() {
        let info = find_kind("scheduling.k8s.io", "PriorityClass").unwrap();
        let lookup = Fake {
            classes: vec![json!({"metadata": {"name": "a"}, "value": 1, "globalDefault": true})],
            ..Default::default()
        };
        let b = json!({"metadata": {"name": "b"}, "value": 2, "globalDefault": true});
        assert_eq!(priority_class(info, &b, &lookup).unwrap_err().code, 403);
        let c = json!({"metadata": {"name": "c"}, "value": 2});
        assert!(priority_class(info, &c, &lookup).is_ok());
    }

    #[test]
    fn toleration_seconds_table() {
        let nr = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        let ur = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        let cases = vec![
            (json!({}), json!([nr.clone(), ur.clone()])),
            (
                json!({"tolerations": [{"operator": "Exists"}]}),
                json!([{"operator": "Exists"}]),
            ),
            (
                json!({"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}),
                json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}, ur.clone()]),
            ),
            (
                json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}]}),
                json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}, nr.clone(), ur.clone()]),
            ),
        ];
        for (i, (spec, want)) in cases.into_iter().enumerate() {
            let mut o = pod(spec);
            default_toleration_seconds(&mut o);
            assert_eq!(o["spec"]["tolerations"], want, "case {i}");
        }
    }

    #[test]
    fn limit_ranger_table() {
        let lr = json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m"}}]}});
        let cases = vec![
            (
                json!({"containers": [{"name": "c"}]}),
                json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}),
                Some("LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"),
            ),
            (
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}]}),
                json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"cpu": "1", "memory": "128Mi"}}),
                Some("LimitRanger plugin set: memory request for container c; memory limit for container c"),
            ),
            (
                json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}),
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}),
                None,
            ),
        ];
        for (i, (spec, want, note)) in cases.into_iter().enumerate() {
            let mut o = pod(spec);
            limit_ranger(&mut o, std::slice::from_ref(&lr));
            assert_eq!(o["spec"]["containers"][0]["resources"], want, "case {i}");
            assert_eq!(
                o.pointer("/metadata/annotations/kubernetes.io~1limit-ranger")
                    .and_then(Value::as_str),
                note,
                "case {i}"
            );
        }
        // a Pod-type range sets nothing
        let mut o = pod(json!({"containers": [{"name": "c"}]}));
        limit_ranger(
            &mut o,
            &[json!({"spec": {"limits": [{"type": "Pod", "max": {"cpu": "1"}}]}})],
        );
        assert!(o.pointer("/spec/containers/0/resources").is_none());
    }

    #[test]
    fn limit_ranger_min_max() {
        let info = find_kind("", "Pod").unwrap();
        let lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"cpu": "100m"}}]}});
        let lookup = Fake {
            ranges: vec![lr],
            ..Default::default()
        };
        let cases = vec![
            (json!({"containers": [{"name": "c", "image": "x"}]}), None),
            (json!({"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": "3"}}}]}), Some("pods \"p\" is forbidden: maximum cpu usage per Container is 2, but limit is 3")),
            (json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "50m"}}}]}), Some("pods \"p\" is forbidden: minimum cpu usage per Container is 100m, but request is 50m")),
        ];
        for (i, (spec, want)) in cases.into_iter().enumerate() {
            let mut o = pod(spec);
            let got = admit_create(info, &mut o, &lookup);
            assert_eq!(
                got.err().map(|e| e.message),
                want.map(String::from),
                "case {i}"
            );
        }
    }
}
