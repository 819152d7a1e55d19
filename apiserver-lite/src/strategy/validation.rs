//! Create-time validation, mirroring pkg/apis/core/validation (`ValidateObjectMeta`,
//! `ValidatePodSpec`, `ValidateService`, `ValidateConfigMap`, `ValidateSecret`, PV/PVC, events,
//! namespaces, nodes), pkg/apis/apps/validation, pkg/apis/batch/validation and the networking,
//! discovery, coordination, policy, scheduling, storage and rbac validators: the same rules,
//! field paths and messages for the cases clients hit, reported as `Cause`s.

use super::names::{self, NameRule};
use super::util::Get;
use super::util::Ptr;
use super::util::{arr, entries, is_empty, quantity, quantity_text, str_at};
use crate::resources::ResourceInfo;
use crate::status::Cause;
use serde_json::{json, Value};

/// `non_negative_now` when the value is a negative integer; the path is only evaluated then.
macro_rules! non_negative {
    ($v:expr, $path:expr, $errs:expr $(,)?) => {
        match $v {
            v => {
                if v.and_then(Value::as_i64).is_some_and(|n| n < 0) {
                    non_negative_now(v, $path, $errs)
                }
            }
        }
    };
}

/// `push_msgs_now` when `msgs` is not empty; the field and value are only evaluated then.
macro_rules! push_msgs {
    ($errs:expr, $field:expr, $value:expr, $msgs:expr $(,)?) => {
        match $msgs {
            msgs => {
                if !msgs.is_empty() {
                    push_msgs_now($errs, $field, $value, msgs)
                }
            }
        }
    };
}

/// `supported_now` when the value is missing or not one of `valid`; the path is only evaluated
/// then.
macro_rules! supported {
    ($v:expr, $path:expr, $valid:expr, $required:expr, $errs:expr $(,)?) => {
        match ($v, $valid, $required) {
            (v, valid, required) => {
                if !supported_ok(v, valid, required) {
                    supported_now(v, $path, valid, required, $errs)
                }
            }
        }
    };
}

/// Upstream's cap on the summed size of annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Upstream's cap on ConfigMap and Secret payloads (`MaxSecretSize`).
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

/// A field path, rendered (as the `format!` calls it replaces would) only when a cause needs it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    /// `{parent}.{field}`
    Field(&'a Path<'a>, &'a str),
    /// `{parent}[{index}]`
    Index(&'a Path<'a>, usize),
    /// `{parent}[{key}]`
    Key(&'a Path<'a>, &'a str),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(s) => f.write_str(s),
            Path::Field(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Key(p, k) => write!(f, "{p}[{k}]"),
        }
    }
}

/// `field.TooLong`.
pub fn too_long(field: impl Into<String>, max: usize) -> Cause {
    Cause::new(
        "FieldValueTooLong",
        field,
        format!("Too long: may not be more than {max} bytes"),
    )
}

/// `field.NotFound`.
pub fn not_found(field: impl Into<String>, value: &Value) -> Cause {
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    Cause::new("FieldValueNotFound", field, format!("Not found: {shown}"))
}

/// The rule upstream applies to `metadata.name` of a kind.
pub fn name_rule(info: &ResourceInfo) -> NameRule {
    match (info.group, info.kind) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn push_msgs_now(errs: &mut Vec<Cause>, field: &str, value: &Value, msgs: Vec<String>) {
    for m in msgs {
        errs.push(Cause::invalid(field, value, &m));
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

/// `ValidateObjectMeta` for `info`'s kind.
pub fn object_meta(info: &ResourceInfo, o: &Value, errs: &mut Vec<Cause>) {
    let meta_str = |k: &str| {
        o.g("metadata")
            .and_then(|m| m.g(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let name = meta_str("name");
    let generate = meta_str("generateName");
    let rule = name_rule(info);
    if !generate.is_empty() {
        push_msgs!(
            errs,
            "metadata.generateName",
            &s(generate),
            rule.check(generate, true),
        );
    }
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(Cause::required(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        push_msgs!(errs, "metadata.name", &s(name), rule.check(name, false));
    }
    let ns = meta_str("namespace");
    if info.namespaced {
        if ns.is_empty() {
            errs.push(Cause::required("metadata.namespace", ""));
        } else {
            push_msgs!(
                errs,
                "metadata.namespace",
                &s(ns),
                names::is_dns1123_label(ns),
            );
        }
    } else if !ns.is_empty() {
        errs.push(Cause::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    let meta = o.g("metadata").unwrap_or(&Value::Null);
    labels(meta.g("labels"), "metadata.labels", errs);
    annotations(meta.g("annotations"), "metadata.annotations", errs);
    for (i, f) in arr(meta, "finalizers").iter().enumerate() {
        let f = f.as_str().unwrap_or("");
        let path = format!("metadata.finalizers[{i}]");
        let msgs = names::is_qualified_name(f);
        if !msgs.is_empty() {
            push_msgs!(errs, &path, &s(f), msgs);
        } else if !f.contains('/') && !STANDARD_FINALIZERS.contains(&f) {
            errs.push(Cause::invalid(
                &path,
                &s(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    for (i, r) in arr(meta, "ownerReferences").iter().enumerate() {
        for k in ["apiVersion", "kind", "name", "uid"] {
            if is_empty(r.g(k)) {
                let path = format!("metadata.ownerReferences[{i}].{k}");
                let detail = match k {
                    "uid" => "uid must not be empty",
                    "name" => "name must not be empty",
                    "kind" => "kind must not be empty",
                    _ => "version must not be empty",
                };
                errs.push(Cause::invalid(&path, r.g(k).unwrap_or(&s("")), detail));
            }
        }
    }
}

const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// `ValidateLabels`.
pub fn labels(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    let Some(m) = v.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in m {
        push_msgs!(errs, path, &s(k), names::is_qualified_name(k));
        let vs = v.as_str().unwrap_or("");
        push_msgs!(errs, path, &s(vs), names::is_valid_label_value(vs));
    }
}

/// `s.to_lowercase()`, borrowed when that changes nothing.
fn lowercase(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `ValidateAnnotations`: qualified (lower-cased) keys and a 256KiB total.
pub fn annotations(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    let Some(m) = v.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0usize;
    for (k, v) in m {
        push_msgs!(errs, path, &s(k), names::is_qualified_name(&lowercase(k)),);
        total += k.len() + v.as_str().map(str::len).unwrap_or(0);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// `ValidateLabelSelector`.
fn label_selector(sel: &Value, path: &str, errs: &mut Vec<Cause>) {
    labels(sel.g("matchLabels"), &format!("{path}.matchLabels"), errs);
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let op = e.g("operator").and_then(Value::as_str).unwrap_or("");
        let n = arr(e, "values").len();
        match op {
            "In" | "NotIn" if n == 0 => errs.push(Cause::required(
                format!("{p}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if n > 0 => errs.push(Cause::forbidden(
                format!("{p}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.push(Cause::invalid(
                format!("{p}.operator"),
                &s(other),
                "not a valid selector operator",
            )),
        }
        let key = e.g("key").and_then(Value::as_str).unwrap_or("");
        push_msgs!(
            errs,
            &format!("{p}.key"),
            &s(key),
            names::is_qualified_name(key),
        );
    }
}

/// Whether a LabelSelector matches a label set.
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.g(k).and_then(Value::as_str);
    for (k, v) in entries(sel, "matchLabels") {
        if get(k) != v.as_str() {
            return false;
        }
    }
    for e in arr(sel, "matchExpressions") {
        let key = e.g("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match e.g("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_is_empty(sel: &Value) -> bool {
    is_empty(sel.g("matchLabels")) && is_empty(sel.g("matchExpressions"))
}

fn non_negative_now(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    if let Some(n) = v.and_then(Value::as_i64) {
        if n < 0 {
            errs.push(Cause::invalid(
                path,
                &json!(n),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Whether `supported_now` would report nothing.
fn supported_ok(v: Option<&Value>, valid: &[&str], required: bool) -> bool {
    match v.and_then(Value::as_str) {
        None | Some("") => !required,
        Some(x) => valid.contains(&x),
    }
}

fn supported_now(
    v: Option<&Value>,
    path: &str,
    valid: &[&str],
    required: bool,
    errs: &mut Vec<Cause>,
) {
    match v.and_then(Value::as_str) {
        None | Some("") => {
            if required {
                errs.push(Cause::required(path, ""));
            }
        }
        Some(x) if valid.contains(&x) => {}
        Some(x) => errs.push(Cause::not_supported(path, &s(x), valid)),
    }
}

/// Validates `o` (already defaulted and prepared) for create.
pub fn validate(info: &ResourceInfo, o: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    object_meta(info, o, &mut errs);
    let spec = o.g("spec").unwrap_or(&Value::Null);
    match (info.group, info.kind) {
        ("", "Pod") => pod_spec(spec, "spec", &mut errs),
        ("admissionregistration.k8s.io", kind) => {
            errs.extend(crate::admission::webhook::config::validate(kind, o))
        }
        ("", "ReplicationController") => replication_controller(spec, &mut errs),
        ("", "Service") => service(spec, &mut errs),
        ("", "ConfigMap") => config_map(o, &mut errs),
        ("", "Secret") => secret(o, &mut errs),
        ("", "Namespace") => {
            for (i, f) in arr(spec, "finalizers").iter().enumerate() {
                let f = f.as_str().unwrap_or("");
                push_msgs!(
                    &mut errs,
                    &format!("spec.finalizers[{i}]"),
                    &s(f),
                    names::is_qualified_name(f),
                );
            }
        }
        ("", "PersistentVolume") => persistent_volume(spec, &mut errs),
        ("", "PersistentVolumeClaim") => pvc_spec(spec, "spec", &mut errs),
        ("", "Event") => core_event(o, &mut errs),
        ("", "Endpoints") => endpoints(o, &mut errs),
        ("", "LimitRange") => {
            for (i, item) in arr(spec, "limits").iter().enumerate() {
                supported!(
                    item.g("type"),
                    &format!("spec.limits[{i}].type"),
                    &["Container", "Pod", "PersistentVolumeClaim"],
                    true,
                    &mut errs,
                );
            }
        }
        ("apps", "Deployment") => {
            workload(info, spec, &mut errs);
            deployment_strategy(spec, &mut errs);
            non_negative!(
                spec.g("revisionHistoryLimit"),
                "spec.revisionHistoryLimit",
                &mut errs,
            );
            non_negative!(spec.g("minReadySeconds"), "spec.minReadySeconds", &mut errs,);
            if let (Some(pd), Some(mr)) = (
                spec.g("progressDeadlineSeconds").and_then(Value::as_i64),
                spec.g("minReadySeconds").and_then(Value::as_i64),
            ) {
                if pd <= mr {
                    errs.push(Cause::invalid(
                        "spec.progressDeadlineSeconds",
                        &json!(pd),
                        "must be greater than minReadySeconds",
                    ));
                }
            }
        }
        ("apps", "ReplicaSet") => workload(info, spec, &mut errs),
        ("apps", "DaemonSet") => {
            workload(info, spec, &mut errs);
            supported!(
                spec.ptr("/updateStrategy/type"),
                "spec.updateStrategy.type",
                &["OnDelete", "RollingUpdate"],
                true,
                &mut errs,
            );
        }
        ("apps", "StatefulSet") => {
            // Containers may mount the volumeClaimTemplates: validate the template with them as
            // the volumes the controller adds (upstream skips the pod spec for this reason).
            workload(info, &with_claim_volumes(spec), &mut errs);
            supported!(
                spec.g("podManagementPolicy"),
                "spec.podManagementPolicy",
                &["OrderedReady", "Parallel"],
                true,
                &mut errs,
            );
            supported!(
                spec.ptr("/updateStrategy/type"),
                "spec.updateStrategy.type",
                &["OnDelete", "RollingUpdate"],
                true,
                &mut errs,
            );
            for (i, t) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
                pvc_spec(
                    t.g("spec").unwrap_or(&Value::Null),
                    &format!("spec.volumeClaimTemplates[{i}].spec"),
                    &mut errs,
                );
            }
        }
        ("batch", "Job") => job(o, &mut errs),
        ("batch", "CronJob") => cron_job(o, &mut errs),
        ("coordination.k8s.io", "Lease") => {
            if let Some(d) = spec.g("leaseDurationSeconds").and_then(Value::as_i64) {
                if d <= 0 {
                    errs.push(Cause::invalid(
                        "spec.leaseDurationSeconds",
                        &json!(d),
                        "must be greater than 0",
                    ));
                }
            }
            non_negative!(
                spec.g("leaseTransitions"),
                "spec.leaseTransitions",
                &mut errs,
            );
        }
        ("events.k8s.io", "Event") => events_event(o, &mut errs),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(o, &mut errs),
        ("networking.k8s.io", "NetworkPolicy") => {
            label_selector(
                spec.g("podSelector").unwrap_or(&Value::Null),
                "spec.podSelector",
                &mut errs,
            );
            let types = arr(spec, "policyTypes");
            for (i, t) in types.iter().enumerate() {
                supported!(
                    Some(t),
                    &format!("spec.policyTypes[{i}]"),
                    &["Ingress", "Egress"],
                    true,
                    &mut errs,
                );
            }
            if types.len() > 2 {
                errs.push(Cause::invalid(
                    "spec.policyTypes",
                    &Value::Array(types.to_vec()),
                    "may not specify more than two policyTypes",
                ));
            }
        }
        ("policy", "PodDisruptionBudget") => {
            if spec.g("minAvailable").is_some_and(|v| !v.is_null())
                && spec.g("maxUnavailable").is_some_and(|v| !v.is_null())
            {
                errs.push(Cause::invalid(
                    "spec",
                    spec,
                    "minAvailable and maxUnavailable cannot be both set",
                ));
            }
            for k in ["minAvailable", "maxUnavailable"] {
                int_or_percent(spec.g(k), &format!("spec.{k}"), &mut errs);
            }
            if let Some(sel) = spec.g("selector") {
                label_selector(sel, "spec.selector", &mut errs);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => priority_class(o, &mut errs),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            errs.extend(crate::certificates::strategy::validate_create(o))
        }
        ("storage.k8s.io", "StorageClass") => {
            let p = str_at(o, "/provisioner");
            if p.is_empty() {
                errs.push(Cause::required("provisioner", ""));
            } else {
                push_msgs!(
                    &mut errs,
                    "provisioner",
                    &s(p),
                    names::is_qualified_name(&p.to_lowercase()),
                );
            }
            supported!(
                o.g("reclaimPolicy"),
                "reclaimPolicy",
                &["Delete", "Retain"],
                false,
                &mut errs,
            );
            supported!(
                o.g("volumeBindingMode"),
                "volumeBindingMode",
                &["Immediate", "WaitForFirstConsumer"],
                false,
                &mut errs,
            );
        }
        ("rbac.authorization.k8s.io", "Role") | ("rbac.authorization.k8s.io", "ClusterRole") => {
            policy_rules(o, info.kind == "Role", &mut errs)
        }
        ("rbac.authorization.k8s.io", "RoleBinding")
        | ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            role_binding(o, info.kind == "RoleBinding", &mut errs)
        }
        _ => {}
    }
    errs
}

fn int_or_percent(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    match v {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => {
            errs.push(Cause::invalid(path, &Value::Number(n.clone()), "must be greater than or equal to 0"))
        }
        Some(Value::String(x)) => match x.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            None => errs.push(Cause::invalid(path, &s(x), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some(p) if p > 100 => errs.push(Cause::invalid(path, &s(x), "must not be greater than 100%")),
            _ => {}
        },
        _ => {}
    }
}

const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.starts_with("kubernetes.io/") || name.contains(".kubernetes.io/")
}

/// `ValidateContainerResourceRequirements`.
fn resources(res: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let limits = res.g("limits").unwrap_or(&Value::Null);
    for (kind, map) in [
        ("limits", limits),
        ("requests", res.g("requests").unwrap_or(&Value::Null)),
    ] {
        for (name, q) in map.as_object().into_iter().flat_map(|m| m.iter()) {
            let p = Path::Key(&Path::Field(path, kind), name);
            if is_native_resource(name)
                && !STANDARD_CONTAINER_RESOURCES.contains(&name.as_str())
                && !name.starts_with("hugepages-")
            {
                errs.push(Cause::invalid(
                    p.to_string(),
                    &s(name),
                    "must be a standard resource for containers",
                ));
            }
            match quantity(q) {
                None => errs.push(Cause::invalid(p.to_string(), q, "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
                Some(v) if v < 0 => errs.push(Cause::invalid(p.to_string(), &s(&quantity_text(q)), "must be greater than or equal to 0")),
                Some(v) if kind == "requests" => {
                    let lim = limits.g(name);
                    if !is_native_resource(name) {
                        match lim {
                            None => errs.push(Cause::required(format!("{path}.limits"), "Limit must be set for non overcommitable resources")),
                            Some(l) if quantity(l) != Some(v) => errs.push(Cause::invalid(p.to_string(), &s(&quantity_text(q)), &format!("must be equal to {name} limit of {}", quantity_text(l)))),
                            _ => {}
                        }
                    } else if let Some(l) = lim {
                        if quantity(l).is_some_and(|l| v > l) {
                            errs.push(Cause::invalid(p.to_string(), &s(&quantity_text(q)), &format!("must be less than or equal to {name} limit of {}", quantity_text(l))));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// `validateContainerPorts`.
fn container_ports(ports: &[Value], path: &Path, errs: &mut Vec<Cause>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = Path::Index(path, i);
        if let Some(name) = p
            .g("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            push_msgs!(
                errs,
                &format!("{pp}.name"),
                &s(name),
                names::is_valid_port_name(name),
            );
            if seen.contains(&name) {
                errs.push(Cause::duplicate(format!("{pp}.name"), &s(name)));
            }
            seen.push(name);
        }
        match p.g("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errs.push(Cause::required(format!("{pp}.containerPort"), "")),
            Some(n) => push_msgs!(
                errs,
                &format!("{pp}.containerPort"),
                &json!(n),
                names::is_valid_port_num(n),
            ),
        }
        if let Some(h) = p.g("hostPort").and_then(Value::as_i64).filter(|h| *h != 0) {
            push_msgs!(
                errs,
                &format!("{pp}.hostPort"),
                &json!(h),
                names::is_valid_port_num(h),
            );
        }
        supported!(
            p.g("protocol"),
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
            errs,
        );
    }
}

/// Validates one container; `names_seen` tracks names across all container lists.
fn container(c: &Value, path: &Path, volumes: &[&str], init: bool, errs: &mut Vec<Cause>) {
    let name = c.g("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.push(Cause::required(format!("{path}.name"), ""));
    } else {
        push_msgs!(
            errs,
            &format!("{path}.name"),
            &s(name),
            names::is_dns1123_label(name),
        );
    }
    let image = c.g("image").and_then(Value::as_str).unwrap_or("");
    if image.is_empty() {
        errs.push(Cause::required(format!("{path}.image"), ""));
    } else if image.trim() != image {
        errs.push(Cause::invalid(
            format!("{path}.image"),
            &s(image),
            "must not have leading or trailing whitespace",
        ));
    }
    supported!(
        c.g("imagePullPolicy"),
        &format!("{path}.imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        true,
        errs,
    );
    supported!(
        c.g("terminationMessagePolicy"),
        &format!("{path}.terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        true,
        errs,
    );
    container_ports(arr(c, "ports"), &Path::Field(path, "ports"), errs);
    resources(
        c.g("resources").unwrap_or(&Value::Null),
        &Path::Field(path, "resources"),
        errs,
    );
    for (i, e) in arr(c, "env").iter().enumerate() {
        if is_empty(e.g("name")) {
            errs.push(Cause::required(format!("{path}.env[{i}].name"), ""));
        }
    }
    let mut mount_paths: Vec<&str> = Vec::new();
    let mounts = Path::Field(path, "volumeMounts");
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let mp = Path::Index(&mounts, i);
        let vname = m.g("name").and_then(Value::as_str).unwrap_or("");
        if vname.is_empty() {
            errs.push(Cause::required(format!("{mp}.name"), ""));
        } else if !volumes.contains(&vname) {
            errs.push(not_found(format!("{mp}.name"), &s(vname)));
        }
        let mpath = m.g("mountPath").and_then(Value::as_str).unwrap_or("");
        if mpath.is_empty() {
            errs.push(Cause::required(format!("{mp}.mountPath"), ""));
        } else if mount_paths.contains(&mpath) {
            errs.push(Cause::invalid(
                format!("{mp}.mountPath"),
                &s(mpath),
                "must be unique",
            ));
        }
        mount_paths.push(mpath);
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.g(probe) else { continue };
        if init && c.g("restartPolicy").and_then(Value::as_str) != Some("Always") {
            errs.push(Cause::forbidden(
                format!("{path}.{probe}"),
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        let pp = Path::Field(path, probe);
        let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
            .iter()
            .filter(|h| p.g(h).is_some_and(|v| !v.is_null()))
            .count();
        if handlers == 0 {
            errs.push(Cause::required(
                pp.to_string(),
                "must specify a handler type",
            ));
        } else if handlers > 1 {
            errs.push(Cause::forbidden(
                pp.to_string(),
                "may not specify more than 1 handler type",
            ));
        }
        if probe != "readinessProbe" {
            if let Some(n) = p
                .g("successThreshold")
                .and_then(Value::as_i64)
                .filter(|n| *n != 1)
            {
                errs.push(Cause::invalid(
                    format!("{pp}.successThreshold"),
                    &json!(n),
                    "must be 1",
                ));
            }
        }
        for k in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            non_negative!(p.g(k), &format!("{pp}.{k}"), errs);
        }
    }
}

/// `ValidatePodSpec` (the parts clients hit).
pub fn pod_spec(spec: &Value, path: &str, errs: &mut Vec<Cause>) {
    // volumes
    let root = Path::Root(path);
    let mut vol_names: Vec<&str> = Vec::new();
    let volumes = Path::Field(&root, "volumes");
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let vp = Path::Index(&volumes, i);
        let name = v.g("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errs.push(Cause::required(format!("{vp}.name"), ""));
        } else {
            push_msgs!(
                errs,
                &format!("{vp}.name"),
                &s(name),
                names::is_dns1123_label(name),
            );
            if vol_names.contains(&name) {
                errs.push(Cause::duplicate(format!("{vp}.name"), &s(name)));
            }
        }
        vol_names.push(name);
        let sources = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| *k != "name" && !v.is_null())
                    .count()
            })
            .unwrap_or(0);
        if sources > 1 {
            errs.push(Cause::forbidden(
                vp.to_string(),
                "may not specify more than 1 volume type",
            ));
        }
    }
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(Cause::required(format!("{path}.containers"), ""));
    }
    let mut all_names: Vec<&str> = Vec::new();
    for (key, init) in [("initContainers", true), ("containers", false)] {
        let list = Path::Field(&root, key);
        for (i, c) in arr(spec, key).iter().enumerate() {
            let cp = Path::Index(&list, i);
            container(c, &cp, &vol_names, init, errs);
            if let Some(n) = c
                .g("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                if all_names.contains(&n) {
                    errs.push(Cause::duplicate(format!("{cp}.name"), &s(n)));
                }
                all_names.push(n);
            }
        }
    }
    supported!(
        spec.g("restartPolicy"),
        &format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        true,
        errs,
    );
    supported!(
        spec.g("dnsPolicy"),
        &format!("{path}.dnsPolicy"),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        true,
        errs,
    );
    if spec.g("dnsPolicy").and_then(Value::as_str) == Some("None") && is_empty(spec.g("dnsConfig"))
    {
        errs.push(Cause::required(
            format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    if let Some(n) = spec.g("activeDeadlineSeconds").and_then(Value::as_i64) {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            errs.push(Cause::invalid(
                format!("{path}.activeDeadlineSeconds"),
                &json!(n),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for k in ["hostname", "subdomain"] {
        if let Some(h) = spec.g(k).and_then(Value::as_str).filter(|h| !h.is_empty()) {
            push_msgs!(
                errs,
                &format!("{path}.{k}"),
                &s(h),
                names::is_dns1123_label(h),
            );
        }
    }
    if spec.g("nodeSelector").is_some_and(Value::is_object) {
        labels(
            spec.g("nodeSelector"),
            &format!("{path}.nodeSelector"),
            errs,
        );
    }
    let tolerations = Path::Field(&root, "tolerations");
    for (i, t) in arr(spec, "tolerations").iter().enumerate() {
        toleration(t, &Path::Index(&tolerations, i), errs);
    }
}

/// `ValidateTolerations` for one toleration.
fn toleration(t: &Value, path: &Path, errs: &mut Vec<Cause>) {
    let key = t.g("key").and_then(Value::as_str).unwrap_or("");
    let op = t.g("operator").and_then(Value::as_str).unwrap_or("");
    let value = t.g("value").and_then(Value::as_str).unwrap_or("");
    if !key.is_empty() {
        push_msgs!(
            errs,
            &format!("{path}.key"),
            &s(key),
            names::is_qualified_name(key),
        );
    } else if op != "Exists" {
        errs.push(Cause::invalid(format!("{path}.operator"), &s(op), "operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
    }
    match op {
        "" | "Equal" => push_msgs!(
            errs,
            &format!("{path}.value"),
            &s(value),
            names::is_valid_label_value(value),
        ),
        "Exists" if !value.is_empty() => errs.push(Cause::invalid(
            format!("{path}.operator"),
            &s(value),
            "value must be empty when `operator` is 'Exists'",
        )),
        "Exists" => {}
        other => errs.push(Cause::not_supported(
            format!("{path}.operator"),
            &s(other),
            &["Equal", "Exists"],
        )),
    }
    let effect = t.g("effect").and_then(Value::as_str).unwrap_or("");
    if t.g("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
        errs.push(Cause::invalid(
            format!("{path}.effect"),
            &s(effect),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    if !effect.is_empty() {
        // a non-empty string, so `t.g("effect")` is `Some(&s(effect))`
        supported!(
            t.g("effect"),
            &format!("{path}.effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            false,
            errs,
        );
    }
}

/// Template metadata and spec of a workload, and its restart policy rule.
fn pod_template(t: &Value, path: &str, restart: &[&str], errs: &mut Vec<Cause>) {
    let meta = t.g("metadata").unwrap_or(&Value::Null);
    labels(meta.g("labels"), &format!("{path}.metadata.labels"), errs);
    annotations(
        meta.g("annotations"),
        &format!("{path}.metadata.annotations"),
        errs,
    );
    let spec = t.g("spec").unwrap_or(&Value::Null);
    pod_spec(spec, &format!("{path}.spec"), errs);
    if let Some(r) = spec.g("restartPolicy").and_then(Value::as_str) {
        if !r.is_empty() && !restart.contains(&r) {
            errs.push(Cause::not_supported(
                format!("{path}.spec.restartPolicy"),
                &s(r),
                restart,
            ));
        }
    }
}

/// A StatefulSet spec whose template also has a PVC volume per volumeClaimTemplate.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let names: Vec<String> = arr(&spec, "volumeClaimTemplates")
        .iter()
        .filter_map(|t| t.ptr("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    if let Some(Value::Object(pod)) = spec.pointer_mut("/template/spec") {
        let vols = pod.entry("volumes").or_insert_with(|| json!([]));
        if vols.is_null() {
            *vols = json!([]);
        }
        if let Value::Array(vols) = vols {
            for n in names {
                if !vols
                    .iter()
                    .any(|v| v.g("name").and_then(Value::as_str) == Some(n.as_str()))
                {
                    vols.push(json!({"name": n, "persistentVolumeClaim": {"claimName": n}}));
                }
            }
        }
    }
    spec
}

/// Deployment, ReplicaSet, DaemonSet and StatefulSet: selector, template, replicas.
fn workload(info: &ResourceInfo, spec: &Value, errs: &mut Vec<Cause>) {
    let tlabels = spec
        .ptr("/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match spec.g("selector").filter(|s| !s.is_null()) {
        None => errs.push(Cause::required("spec.selector", "")),
        Some(sel) => {
            label_selector(sel, "spec.selector", errs);
            if selector_is_empty(sel) {
                errs.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    &format!("empty selector is invalid for {}", info.singular),
                ));
            } else if !selector_matches(sel, &tlabels) {
                errs.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &tlabels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    non_negative!(spec.g("replicas"), "spec.replicas", errs);
    non_negative!(spec.g("minReadySeconds"), "spec.minReadySeconds", errs);
    pod_template(
        spec.g("template").unwrap_or(&Value::Null),
        "spec.template",
        &["Always"],
        errs,
    );
}

fn deployment_strategy(spec: &Value, errs: &mut Vec<Cause>) {
    let st = spec.g("strategy").unwrap_or(&Value::Null);
    supported!(
        st.g("type"),
        "spec.strategy.type",
        &["Recreate", "RollingUpdate"],
        true,
        errs,
    );
    let ru = st.g("rollingUpdate").filter(|v| !v.is_null());
    match st.g("type").and_then(Value::as_str) {
        Some("Recreate") if ru.is_some() => errs.push(Cause::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        Some("RollingUpdate") => {
            if let Some(ru) = ru {
                int_or_percent(
                    ru.g("maxUnavailable"),
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    errs,
                );
                int_or_percent(
                    ru.g("maxSurge"),
                    "spec.strategy.rollingUpdate.maxSurge",
                    errs,
                );
                let zero =
                    |v: Option<&Value>| matches!(v, Some(x) if *x == json!(0) || *x == json!("0%"));
                if zero(ru.g("maxUnavailable")) && zero(ru.g("maxSurge")) {
                    errs.push(Cause::invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        ru.g("maxUnavailable").unwrap_or(&Value::Null),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
        _ => {}
    }
}

fn replication_controller(spec: &Value, errs: &mut Vec<Cause>) {
    let sel = spec.g("selector").unwrap_or(&Value::Null);
    if is_empty(Some(sel)) {
        errs.push(Cause::required("spec.selector", ""));
    } else {
        labels(Some(sel), "spec.selector", errs);
    }
    non_negative!(spec.g("replicas"), "spec.replicas", errs);
    match spec.g("template").filter(|t| !t.is_null()) {
        None => errs.push(Cause::required("spec.template", "")),
        Some(t) => {
            let tl = t.ptr("/metadata/labels").cloned().unwrap_or(json!({}));
            let matches = sel
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| tl.g(k) == Some(v)));
            if !is_empty(Some(sel)) && !matches {
                errs.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &tl,
                    "`selector` does not match template `labels`",
                ));
            }
            pod_template(t, "spec.template", &["Always"], errs);
        }
    }
}

/// `ValidateService`.
fn service(spec: &Value, errs: &mut Vec<Cause>) {
    let ty = spec.g("type").and_then(Value::as_str).unwrap_or("");
    supported!(
        spec.g("type"),
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        true,
        errs,
    );
    supported!(
        spec.g("sessionAffinity"),
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        true,
        errs,
    );
    let cluster_ip = spec.g("clusterIP").and_then(Value::as_str).unwrap_or("");
    let headless = cluster_ip == "None";
    let ports = arr(spec, "ports");
    if ty == "ExternalName" {
        let en = spec.g("externalName").and_then(Value::as_str).unwrap_or("");
        if en.is_empty() {
            errs.push(Cause::required("spec.externalName", ""));
        } else {
            push_msgs!(
                errs,
                "spec.externalName",
                &s(en),
                names::is_dns1123_subdomain(en.strip_suffix('.').unwrap_or(en)),
            );
        }
    } else if ports.is_empty() && !headless {
        errs.push(Cause::required("spec.ports", ""));
    }
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        errs.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &s("None"),
            &format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(Cause::invalid(
            "spec.clusterIPs[0]",
            &s(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    let mut names_seen: Vec<&str> = Vec::new();
    let mut port_proto: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = p.g("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(Cause::required(format!("{pp}.name"), ""));
            }
        } else {
            push_msgs!(
                errs,
                &format!("{pp}.name"),
                &s(name),
                names::is_dns1123_label(name),
            );
            if names_seen.contains(&name) {
                errs.push(Cause::duplicate(format!("{pp}.name"), &s(name)));
            }
            names_seen.push(name);
        }
        let port = p.g("port").and_then(Value::as_i64).unwrap_or(0);
        push_msgs!(
            errs,
            &format!("{pp}.port"),
            &json!(port),
            names::is_valid_port_num(port),
        );
        supported!(
            p.g("protocol"),
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
            errs,
        );
        match p.g("targetPort") {
            Some(Value::Number(n)) => push_msgs!(
                errs,
                &format!("{pp}.targetPort"),
                &Value::Number(n.clone()),
                names::is_valid_port_num(n.as_i64().unwrap_or(0)),
            ),
            Some(Value::String(t)) => push_msgs!(
                errs,
                &format!("{pp}.targetPort"),
                &s(t),
                names::is_valid_port_name(t),
            ),
            _ => {}
        }
        if let Some(np) = p.g("nodePort").and_then(Value::as_i64).filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                errs.push(Cause::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                push_msgs!(
                    errs,
                    &format!("{pp}.nodePort"),
                    &json!(np),
                    names::is_valid_port_num(np),
                );
            }
        }
        let proto = p.g("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if port_proto.contains(&(port, proto)) {
            errs.push(Cause::duplicate(
                &pp,
                &json!({"port": port, "protocol": proto}),
            ));
        }
        port_proto.push((port, proto));
    }
    labels(spec.g("selector"), "spec.selector", errs);
    if let Some(etp) = spec
        .g("externalTrafficPolicy")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        if ty != "NodePort" && ty != "LoadBalancer" {
            errs.push(Cause::invalid(
                "spec.externalTrafficPolicy",
                &s(etp),
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else {
            supported!(
                Some(&s(etp)),
                "spec.externalTrafficPolicy",
                &["Cluster", "Local"],
                false,
                errs,
            );
        }
    }
    supported!(
        spec.g("internalTrafficPolicy"),
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
        false,
        errs,
    );
    supported!(
        spec.g("ipFamilyPolicy"),
        "spec.ipFamilyPolicy",
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
        false,
        errs,
    );
}

/// Keys and total size of ConfigMap/Secret payloads; `decode` gives a value's byte length.
fn data_keys(
    o: &Value,
    keys: &[&str],
    errs: &mut Vec<Cause>,
    decoded_len: impl Fn(&str, &Value) -> Option<usize>,
) -> usize {
    let mut total = 0usize;
    let mut seen: Vec<String> = Vec::new();
    for field in keys {
        for (k, v) in entries(o, field) {
            let p = format!("{field}[{k}]");
            push_msgs!(errs, &p, &s(k), names::is_config_map_key(k));
            if seen.contains(k) {
                errs.push(Cause::invalid(
                    &p,
                    &s(k),
                    "duplicate of key present in data",
                ));
            }
            seen.push(k.clone());
            match decoded_len(field, v) {
                Some(n) => total += n,
                None => errs.push(Cause::invalid(
                    &p,
                    &s("<value omitted>"),
                    "illegal base64 data",
                )),
            }
        }
    }
    total
}

fn base64_len(v: &Value) -> Option<usize> {
    use base64::Engine;
    let s = v.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .ok()
        .map(|b| b.len())
}

fn config_map(o: &Value, errs: &mut Vec<Cause>) {
    let total = data_keys(o, &["data", "binaryData"], errs, |field, v| {
        if field == "binaryData" {
            base64_len(v)
        } else {
            Some(v.as_str().map(str::len).unwrap_or(0))
        }
    });
    if total > MAX_DATA_SIZE {
        errs.push(too_long("", MAX_DATA_SIZE));
    }
}

const SA_NAME_ANNOTATION_PTR: &str = "/metadata/annotations/kubernetes.io~1service-account.name";

fn secret(o: &Value, errs: &mut Vec<Cause>) {
    let total = data_keys(o, &["data"], errs, |_, v| base64_len(v));
    if total > MAX_DATA_SIZE {
        errs.push(too_long("data", MAX_DATA_SIZE));
    }
    let has = |k: &str| o.g("data").and_then(|d| d.g(k)).is_some();
    match str_at(o, "/type") {
        "kubernetes.io/service-account-token" if str_at(o, SA_NAME_ANNOTATION_PTR).is_empty() => {
            errs.push(Cause::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(Cause::required("data[.dockercfg]", ""))
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.push(Cause::required("data[.dockerconfigjson]", ""))
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(Cause::required("data[username]", ""));
            errs.push(Cause::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.push(Cause::required("data[ssh-privatekey]", ""))
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(Cause::required(format!("data[{k}]"), ""));
                }
            }
        }
        _ => {}
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// Non-source fields of a PersistentVolume spec; every other key is a volume source.
pub const PV_NON_SOURCE_FIELDS: &[&str] = &[
    "capacity",
    "accessModes",
    "claimRef",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
    "volumeMode",
    "nodeAffinity",
    "volumeAttributesClassName",
];

fn persistent_volume(spec: &Value, errs: &mut Vec<Cause>) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(Cause::required("spec.accessModes", ""));
    }
    for m in modes {
        supported!(Some(m), "spec.accessModes", ACCESS_MODES, true, errs);
    }
    let cap = spec.g("capacity").unwrap_or(&Value::Null);
    if is_empty(Some(cap)) {
        errs.push(Cause::required("spec.capacity", ""));
    } else if cap.g("storage").is_none() || cap.as_object().is_some_and(|m| m.len() > 1) {
        errs.push(Cause::not_supported("spec.capacity", cap, &["storage"]));
    }
    let sources = spec
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !PV_NON_SOURCE_FIELDS.contains(&k.as_str()) && !v.is_null())
                .count()
        })
        .unwrap_or(0);
    if sources == 0 {
        errs.push(Cause::required("spec", "must specify a volume type"));
    } else if sources > 1 {
        errs.push(Cause::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        ));
    }
    supported!(
        spec.g("persistentVolumeReclaimPolicy"),
        "spec.persistentVolumeReclaimPolicy",
        &["Delete", "Recycle", "Retain"],
        false,
        errs,
    );
    supported!(
        spec.g("volumeMode"),
        "spec.volumeMode",
        &["Block", "Filesystem"],
        false,
        errs,
    );
}

fn pvc_spec(spec: &Value, path: &str, errs: &mut Vec<Cause>) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(Cause::required(
            format!("{path}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for m in modes {
        supported!(
            Some(m),
            &format!("{path}.accessModes"),
            ACCESS_MODES,
            true,
            errs,
        );
    }
    match spec.ptr("/resources/requests/storage") {
        None => errs.push(Cause::required(format!("{path}.resources[storage]"), "")),
        Some(q) => {
            if quantity(q).is_none_or(|v| v <= 0) {
                errs.push(Cause::invalid(
                    format!("{path}.resources[storage]"),
                    &s(&quantity_text(q)),
                    "must be greater than zero",
                ));
            }
        }
    }
    supported!(
        spec.g("volumeMode"),
        &format!("{path}.volumeMode"),
        &["Block", "Filesystem"],
        false,
        errs,
    );
    if let Some(sel) = spec.g("selector").filter(|v| !v.is_null()) {
        label_selector(sel, &format!("{path}.selector"), errs);
    }
}

/// `legacyValidateEvent` (core/v1 events).
fn core_event(o: &Value, errs: &mut Vec<Cause>) {
    let ns = str_at(o, "/metadata/namespace");
    let ino = str_at(o, "/involvedObject/namespace");
    let event_time = !is_empty(o.g("eventTime"));
    if !event_time {
        let ok = if ino.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == ino
        };
        if !ok {
            errs.push(Cause::invalid(
                "involvedObject.namespace",
                &s(ino),
                "does not match event.namespace",
            ));
        }
    } else {
        if ino.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(Cause::invalid(
                "involvedObject.namespace",
                &s(ino),
                "does not match event.namespace",
            ));
        }
        event_reporting(o, "reportingComponent", "message", errs);
    }
}

/// `ValidateEventCreate` for events.k8s.io/v1 (strict validation).
fn events_event(o: &Value, errs: &mut Vec<Cause>) {
    let ns = str_at(o, "/metadata/namespace");
    let rns = str_at(o, "/regarding/namespace");
    if rns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(Cause::invalid(
            "regarding.namespace",
            &s(rns),
            "does not match event.namespace",
        ));
    }
    if is_empty(o.g("eventTime")) {
        errs.push(Cause::required("eventTime", ""));
    }
    let ty = str_at(o, "/type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(Cause::invalid(
            "type",
            &s(""),
            &format!("has invalid value: {ty}"),
        ));
    }
    event_reporting(o, "reportingController", "note", errs);
}

/// The checks both Event views share for new-style events, with each view's field names: the
/// reporting controller, instance, action and reason, and the message length.
fn event_reporting(o: &Value, controller: &str, message: &str, errs: &mut Vec<Cause>) {
    let rc = o.g(controller).and_then(Value::as_str).unwrap_or("");
    if rc.is_empty() {
        errs.push(Cause::required(controller, ""));
    } else {
        push_msgs!(errs, controller, &s(rc), names::is_qualified_name(rc),);
    }
    for (k, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        let v = o.g(k).and_then(Value::as_str).unwrap_or("");
        if v.is_empty() {
            errs.push(Cause::required(k, ""));
        } else if v.len() > max {
            errs.push(Cause::invalid(
                k,
                &s(""),
                &format!("can have at most {max} characters"),
            ));
        }
    }
    if o.g(message).and_then(Value::as_str).unwrap_or("").len() > 1024 {
        errs.push(Cause::invalid(
            message,
            &s(""),
            "can have at most 1024 characters",
        ));
    }
}

fn endpoint_port(p: &Value, path: &str, name_required: bool, errs: &mut Vec<Cause>) {
    let name = p.g("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        if name_required {
            errs.push(Cause::required(format!("{path}.name"), ""));
        }
    } else {
        push_msgs!(
            errs,
            &format!("{path}.name"),
            &s(name),
            names::is_dns1123_label(name),
        );
    }
    if let Some(port) = p.g("port").and_then(Value::as_i64) {
        push_msgs!(
            errs,
            &format!("{path}.port"),
            &json!(port),
            names::is_valid_port_num(port),
        );
    }
    supported!(
        p.g("protocol"),
        &format!("{path}.protocol"),
        &["SCTP", "TCP", "UDP"],
        true,
        errs,
    );
}

fn endpoints(o: &Value, errs: &mut Vec<Cause>) {
    for (i, ss) in arr(o, "subsets").iter().enumerate() {
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, key).iter().enumerate() {
                let ip = a.g("ip").and_then(Value::as_str).unwrap_or("");
                if ip.parse::<std::net::IpAddr>().is_err() {
                    errs.push(Cause::invalid(
                        format!("subsets[{i}].{key}[{j}].ip"),
                        &s(ip),
                        "must be a valid IP address",
                    ));
                }
            }
        }
        let ports = arr(ss, "ports");
        for (j, p) in ports.iter().enumerate() {
            endpoint_port(
                p,
                &format!("subsets[{i}].ports[{j}]"),
                ports.len() > 1,
                errs,
            );
        }
    }
}

fn endpoint_slice(o: &Value, errs: &mut Vec<Cause>) {
    supported!(
        o.g("addressType"),
        "addressType",
        &["IPv4", "IPv6", "FQDN"],
        true,
        errs,
    );
    for (i, e) in arr(o, "endpoints").iter().enumerate() {
        let n = arr(e, "addresses").len();
        if n == 0 {
            errs.push(Cause::required(
                format!("endpoints[{i}].addresses"),
                "must contain at least 1 address",
            ));
        } else if n > 100 {
            errs.push(Cause::invalid(
                format!("endpoints[{i}].addresses"),
                &json!(n),
                "must contain no more than 100 addresses",
            ));
        }
    }
    for (i, p) in arr(o, "ports").iter().enumerate() {
        endpoint_port(p, &format!("ports[{i}]"), false, errs);
    }
}

fn job_spec(spec: &Value, path: &str, errs: &mut Vec<Cause>) {
    for k in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        non_negative!(spec.g(k), &format!("{path}.{k}"), errs);
    }
    supported!(
        spec.g("completionMode"),
        &format!("{path}.completionMode"),
        &["NonIndexed", "Indexed"],
        false,
        errs,
    );
    if spec.g("completionMode").and_then(Value::as_str) == Some("Indexed")
        && is_empty(spec.g("completions"))
    {
        errs.push(Cause::required(
            format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    let t = spec.g("template").unwrap_or(&Value::Null);
    pod_template(
        t,
        &format!("{path}.template"),
        &["OnFailure", "Never"],
        errs,
    );
    if let Some(sel) = spec.g("selector").filter(|v| !v.is_null()) {
        label_selector(sel, &format!("{path}.selector"), errs);
    }
}

fn job(o: &Value, errs: &mut Vec<Cause>) {
    let spec = o.g("spec").unwrap_or(&Value::Null);
    job_spec(spec, "spec", errs);
    let tlabels = spec
        .ptr("/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match spec.g("selector").filter(|v| !v.is_null()) {
        None => errs.push(Cause::required("spec.selector", "")),
        Some(sel) => {
            if spec.g("manualSelector") != Some(&json!(true)) {
                // validateGeneratedSelector
                let uid = str_at(o, "/metadata/uid");
                if uid.is_empty() {
                    errs.push(Cause::required("metadata.uid", ""));
                }
                for k in super::prepare::CONTROLLER_UID_LABELS {
                    if tlabels
                        .g(k)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v != uid)
                    {
                        errs.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            &tlabels,
                            &format!("must be '{k}={uid}'"),
                        ));
                    }
                }
            }
            if selector_is_empty(sel) {
                errs.push(Cause::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for job",
                ));
            } else if !selector_matches(sel, &tlabels) {
                errs.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &tlabels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

fn cron_job(o: &Value, errs: &mut Vec<Cause>) {
    let name = str_at(o, "/metadata/name");
    if name.len() > 52 {
        errs.push(Cause::invalid(
            "metadata.name",
            &s(name),
            "must be no more than 52 characters",
        ));
    }
    let spec = o.g("spec").unwrap_or(&Value::Null);
    let sched = spec.g("schedule").and_then(Value::as_str).unwrap_or("");
    if sched.is_empty() {
        errs.push(Cause::required("spec.schedule", ""));
    } else if let Err(e) = check_schedule(sched) {
        errs.push(Cause::invalid("spec.schedule", &s(sched), &e));
    }
    supported!(
        spec.g("concurrencyPolicy"),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        true,
        errs,
    );
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative!(spec.g(k), &format!("spec.{k}"), errs);
    }
    let jt = spec.g("jobTemplate").unwrap_or(&Value::Null);
    let jmeta = jt.g("metadata").unwrap_or(&Value::Null);
    labels(jmeta.g("labels"), "spec.jobTemplate.metadata.labels", errs);
    job_spec(
        jt.g("spec").unwrap_or(&Value::Null),
        "spec.jobTemplate.spec",
        errs,
    );
}

/// A light version of the cron parser upstream uses: a descriptor or five fields.
pub fn check_schedule(s: &str) -> Result<(), String> {
    if s.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(d) = s.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if d.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            fields.len()
        ));
    }
    let ok = fields.iter().all(|f| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("failed to parse schedule: {s}"))
    }
}

fn priority_class(o: &Value, errs: &mut Vec<Cause>) {
    let name = str_at(o, "/metadata/name");
    let system = super::admission::SYSTEM_PRIORITY_CLASSES
        .iter()
        .any(|(n, _)| *n == name);
    if name.starts_with("system-") && !system {
        errs.push(Cause::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    }
    match o.g("value").and_then(Value::as_i64) {
        None => errs.push(Cause::required("value", "")),
        Some(v) if v > 1_000_000_000 && !system => errs.push(Cause::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        )),
        _ => {}
    }
    supported!(
        o.g("preemptionPolicy"),
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
        false,
        errs,
    );
}

fn policy_rules(o: &Value, namespaced: bool, errs: &mut Vec<Cause>) {
    for (i, r) in arr(o, "rules").iter().enumerate() {
        let p = format!("rules[{i}]");
        if arr(r, "verbs").is_empty() {
            errs.push(Cause::required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = arr(r, "nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                errs.push(Cause::invalid(
                    format!("{p}.nonResourceURLs"),
                    &Value::Array(urls.to_vec()),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !arr(r, "apiGroups").is_empty()
                || !arr(r, "resources").is_empty()
                || !arr(r, "resourceNames").is_empty()
            {
                errs.push(Cause::invalid(
                    &p,
                    r,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(r, "apiGroups").is_empty() {
            errs.push(Cause::required(
                format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr(r, "resources").is_empty() {
            errs.push(Cause::required(
                format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
}

fn role_binding(o: &Value, namespaced: bool, errs: &mut Vec<Cause>) {
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if str_at(o, "/roleRef/apiGroup") != "rbac.authorization.k8s.io" {
        errs.push(Cause::not_supported(
            "roleRef.apiGroup",
            &s(str_at(o, "/roleRef/apiGroup")),
            &["rbac.authorization.k8s.io"],
        ));
    }
    supported!(o.ptr("/roleRef/kind"), "roleRef.kind", kinds, true, errs,);
    let rn = str_at(o, "/roleRef/name");
    if rn.is_empty() {
        errs.push(Cause::required("roleRef.name", ""));
    } else {
        push_msgs!(
            errs,
            "roleRef.name",
            &s(rn),
            names::is_path_segment_name(rn),
        );
    }
    for (i, sub) in arr(o, "subjects").iter().enumerate() {
        let p = format!("subjects[{i}]");
        if is_empty(sub.g("name")) {
            errs.push(Cause::required(format!("{p}.name"), ""));
        }
        supported!(
            sub.g("kind"),
            &format!("{p}.kind"),
            &["ServiceAccount", "User", "Group"],
            true,
            errs,
        );
        if sub.g("kind").and_then(Value::as_str) == Some("ServiceAccount")
            && !namespaced
            && is_empty(sub.g("namespace"))
        {
            errs.push(Cause::required(format!("{p}.namespace"), ""));
        }
    }
}
