//! The PodSecurity admission plugin (upstream staging/src/k8s.io/pod-security-admission): the
//! Pod Security Standards' `baseline` and `restricted` checks of the latest policy version,
//! applied by the namespace labels `pod-security.kubernetes.io/enforce|warn|audit`. Enforce
//! refuses a Pod (create, or an update that changes more than images) with a 403 carrying
//! upstream's `violates PodSecurity "level:version": reason (detail), ...` message; warn adds a
//! `would violate PodSecurity ...` warning (the `Warning` header kubectl prints), also for the pod
//! templates of workload kinds, which enforce never refuses (as upstream). Every `-version` label
//! is evaluated as `latest` (its value is only echoed in messages). As upstream's defaults, no
//! namespace, user or runtime class is exempt. Audit annotations are not recorded (no audit log).

use crate::resources::ResourceInfo;
use crate::status::ApiError;
use serde_json::{Map, Value};

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standards level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(s: &str) -> Level {
        match s {
            "privileged" => Level::Privileged,
            "baseline" => Level::Baseline,
            // Upstream evaluates an invalid level as the most restrictive one.
            _ => Level::Restricted,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One mode's (enforce, warn or audit) level and version from a namespace's labels.
fn mode(labels: &Value, mode: &str) -> Option<(Level, String)> {
    let level = labels.get(format!("{LABEL_PREFIX}{mode}"))?.as_str()?;
    let version = labels
        .get(format!("{LABEL_PREFIX}{mode}-version"))
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .unwrap_or("latest");
    Some((Level::parse(level), version.to_string()))
}

/// A failed check: upstream's ForbiddenReason and ForbiddenDetail.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

/// The pod spec inside an object of `kind`, with the pod metadata for annotations; None when
/// the kind has no pod template.
fn pod_spec<'a>(kind: &str, o: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let tmpl = match kind {
        "Pod" => return Some((&o["metadata"], &o["spec"])),
        "PodTemplate" => &o["template"],
        "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"],
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => &o["spec"]["template"],
        _ => return None,
    };
    Some((&tmpl["metadata"], &tmpl["spec"]))
}

/// Whether PodSecurity looks at `info`'s objects at all.
pub fn applies(info: &ResourceInfo) -> bool {
    matches!(
        (info.group, info.kind),
        ("", "Pod")
            | ("", "PodTemplate")
            | ("", "ReplicationController")
            | (
                "apps",
                "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
            )
            | ("batch", "Job" | "CronJob")
    )
}

/// Admits a create (`old` None) or update of `o` in a namespace with `ns_labels`. Returns the
/// warnings to send, or the enforce denial.
pub fn admit(
    info: &ResourceInfo,
    o: &Value,
    old: Option<&Value>,
    ns_labels: &Value,
) -> Result<Vec<String>, ApiError> {
    let Some((meta, spec)) = pod_spec(info.kind, o) else {
        return Ok(Vec::new());
    };
    if mode(ns_labels, "enforce").is_none() && mode(ns_labels, "warn").is_none() {
        // Privileged by default: nothing to evaluate.
        return Ok(Vec::new());
    }
    let is_pod = info.kind == "Pod";
    if let Some(old) = old {
        // Upstream skips updates that cannot change the pod's security: for a pod, only an
        // image change (or metadata/status only); for a workload, an unchanged template.
        let same = match pod_spec(info.kind, old) {
            Some((old_meta, old_spec)) if is_pod => {
                without_images(spec) == without_images(old_spec)
                    && meta.get("annotations") == old_meta.get("annotations")
            }
            Some((old_meta, old_spec)) => spec == old_spec && meta == old_meta,
            None => false,
        };
        if same {
            return Ok(Vec::new());
        }
    }
    let mut warnings = Vec::new();
    if is_pod {
        if let Some((level, version)) = mode(ns_labels, "enforce") {
            let v = evaluate(level, meta, spec);
            if !v.is_empty() {
                return Err(ApiError::forbidden(
                    info.group,
                    info.plural,
                    o["metadata"]["name"].as_str().unwrap_or(""),
                    &format!(
                        "violates PodSecurity \"{}:{version}\": {}",
                        level.name(),
                        render(&v)
                    ),
                ));
            }
        }
    }
    if let Some((level, version)) = mode(ns_labels, "warn") {
        let v = evaluate(level, meta, spec);
        if !v.is_empty() {
            warnings.push(format!(
                "would violate PodSecurity \"{}:{version}\": {}",
                level.name(),
                render(&v)
            ));
        }
    }
    Ok(warnings)
}

/// The warnings for a namespace update whose enforce level changes: upstream lists the existing
/// pods that the new level would refuse.
pub fn namespace_update_warnings(
    ns: &str,
    old_labels: &Value,
    new_labels: &Value,
    pods: &[Value],
) -> Vec<String> {
    let Some((level, version)) = mode(new_labels, "enforce") else {
        return Vec::new();
    };
    if mode(old_labels, "enforce") == Some((level, version.clone())) || level == Level::Privileged {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in pods {
        let v = evaluate(level, &p["metadata"], &p["spec"]);
        if !v.is_empty() {
            let reasons: Vec<&str> = v.iter().map(|v| v.reason.as_str()).collect();
            out.push(format!(
                "{}: {}",
                p["metadata"]["name"].as_str().unwrap_or(""),
                reasons.join(", ")
            ));
        }
    }
    if !out.is_empty() {
        out.insert(
            0,
            format!(
                "existing pods in namespace {ns:?} violate the new PodSecurity enforce level \"{}:{version}\"",
                level.name()
            ),
        );
    }
    out
}

fn without_images(spec: &Value) -> Value {
    let mut s = spec.clone();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                if let Some(m) = c.as_object_mut() {
                    m.remove("image");
                }
            }
        }
    }
    s
}

/// `reason (detail), reason (detail), ...`.
fn render(v: &[Violation]) -> String {
    v.iter()
        .map(|v| {
            if v.detail.is_empty() {
                v.reason.clone()
            } else {
                format!("{} ({})", v.reason, v.detail)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type Check = fn(&Value, &Value) -> Option<Violation>;

/// The checks of the latest policy version, in upstream's order (by check ID), with the level
/// each belongs to; `seccompProfile_restricted` replaces `seccompProfile_baseline` at restricted.
const CHECKS: &[(&str, Level, Check)] = &[
    (
        "allowPrivilegeEscalation",
        Level::Restricted,
        allow_privilege_escalation,
    ),
    ("appArmorProfile", Level::Baseline, app_armor),
    (
        "capabilities_baseline",
        Level::Baseline,
        capabilities_baseline,
    ),
    (
        "capabilities_restricted",
        Level::Restricted,
        capabilities_restricted,
    ),
    ("hostNamespaces", Level::Baseline, host_namespaces),
    ("hostPathVolumes", Level::Baseline, host_path_volumes),
    ("hostPorts", Level::Baseline, host_ports),
    ("privileged", Level::Baseline, privileged),
    ("procMount", Level::Baseline, proc_mount),
    ("restrictedVolumes", Level::Restricted, restricted_volumes),
    ("runAsNonRoot", Level::Restricted, run_as_non_root),
    ("runAsUser", Level::Restricted, run_as_user),
    ("seLinuxOptions", Level::Baseline, se_linux_options),
    ("seccompProfile_baseline", Level::Baseline, seccomp_baseline),
    (
        "seccompProfile_restricted",
        Level::Restricted,
        seccomp_restricted,
    ),
    ("sysctls", Level::Baseline, sysctls),
];

/// Every violation of `level` by a pod (metadata, spec).
pub fn evaluate(level: Level, meta: &Value, spec: &Value) -> Vec<Violation> {
    if level == Level::Privileged {
        return Vec::new();
    }
    CHECKS
        .iter()
        .filter(|(id, l, _)| {
            *l <= level && !(level == Level::Restricted && *id == "seccompProfile_baseline")
        })
        .filter_map(|(_, _, check)| check(meta, spec))
        .collect()
}

/// Every container of the spec (init, regular, ephemeral), as upstream's visitor.
fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |l| spec[l].as_array().into_iter().flatten())
}

fn cname(c: &Value) -> &str {
    c["name"].as_str().unwrap_or("")
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` or `containers "a", "b"`.
fn plural(one: &str, many: &str, names: &[String]) -> String {
    format!(
        "{} {}",
        if names.len() == 1 { one } else { many },
        quoted(names)
    )
}

fn containers_where(spec: &Value, f: impl Fn(&Value) -> bool) -> Vec<String> {
    containers(spec)
        .filter(|c| f(c))
        .map(|c| cname(c).to_string())
        .collect()
}

fn violation(reason: &str, detail: String) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail,
    })
}

fn allow_privilege_escalation(_: &Value, spec: &Value) -> Option<Violation> {
    let bad = containers_where(spec, |c| {
        c["securityContext"]["allowPrivilegeEscalation"] != Value::Bool(false)
    });
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            plural("container", "containers", &bad)
        ),
    )
}

fn app_armor(meta: &Value, spec: &Value) -> Option<Violation> {
    let allowed_type =
        |t: &Value| matches!(t.as_str(), None | Some("RuntimeDefault" | "Localhost"));
    let mut bad = Vec::new();
    let pod_type = &spec["securityContext"]["appArmorProfile"]["type"];
    if !allowed_type(pod_type) {
        bad.push(format!(
            "pod must not set appArmorProfile.type to {pod_type}"
        ));
    }
    for c in containers(spec) {
        let t = &c["securityContext"]["appArmorProfile"]["type"];
        if !allowed_type(t) {
            bad.push(format!(
                "container {:?} must not set appArmorProfile.type to {t}",
                cname(c)
            ));
        }
    }
    for (k, v) in meta["annotations"].as_object().into_iter().flatten() {
        let v = v.as_str().unwrap_or("");
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        {
            bad.push(format!("{k}={v:?}"));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let reason = if bad.len() == 1 {
        "forbidden AppArmor profile"
    } else {
        "forbidden AppArmor profiles"
    };
    violation(reason, bad.join(", "))
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Containers adding capabilities outside `allowed`, and the sorted set of those capabilities.
fn added_outside(spec: &Value, allowed: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut caps = std::collections::BTreeSet::new();
    for c in containers(spec) {
        let mut found = false;
        for cap in c["securityContext"]["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !allowed.contains(&cap) {
                caps.insert(cap.to_string());
                found = true;
            }
        }
        if found {
            names.push(cname(c).to_string());
        }
    }
    (names, caps.into_iter().collect())
}

fn capabilities_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    let (names, caps) = added_outside(spec, BASELINE_CAPABILITIES);
    if names.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            plural("container", "containers", &names),
            quoted(&caps)
        ),
    )
}

fn capabilities_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    let no_drop_all = containers_where(spec, |c| {
        !c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d == "ALL")
    });
    let (names, caps) = added_outside(spec, &["NET_BIND_SERVICE"]);
    let mut details = Vec::new();
    if !no_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            plural("container", "containers", &no_drop_all)
        ));
    }
    if !names.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            plural("container", "containers", &names),
            quoted(&caps)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

fn host_namespaces(_: &Value, spec: &Value) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|f| spec[f] == true)
        .map(|f| format!("{f}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

fn volumes(spec: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn host_path_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let names: Vec<String> = volumes(spec)
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(|v| {
            v.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    if names.is_empty() {
        return None;
    }
    violation("hostPath volumes", plural("volume", "volumes", &names))
}

fn host_ports(_: &Value, spec: &Value) -> Option<Violation> {
    let mut names = Vec::new();
    let mut ports = Vec::new();
    for c in containers(spec) {
        let mut found = false;
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(hp) = p["hostPort"].as_i64().filter(|p| *p != 0) {
                ports.push(hp.to_string());
                found = true;
            }
        }
        if found {
            names.push(cname(c).to_string());
        }
    }
    if names.is_empty() {
        return None;
    }
    let (verb, noun) = if names.len() == 1 {
        ("uses", "hostPort")
    } else {
        ("use", "hostPorts")
    };
    let noun = if ports.len() > 1 { "hostPorts" } else { noun };
    violation(
        "hostPort",
        format!(
            "{} {verb} {noun} {}",
            plural("container", "containers", &names),
            ports.join(", ")
        ),
    )
}

fn privileged(_: &Value, spec: &Value) -> Option<Violation> {
    let bad = containers_where(spec, |c| c["securityContext"]["privileged"] == true);
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            plural("container", "containers", &bad)
        ),
    )
}

fn proc_mount(_: &Value, spec: &Value) -> Option<Violation> {
    let mut values = std::collections::BTreeSet::new();
    let bad = containers_where(spec, |c| {
        !matches!(
            c["securityContext"]["procMount"].as_str(),
            None | Some("Default")
        )
    });
    for c in containers(spec) {
        if let Some(v) = c["securityContext"]["procMount"]
            .as_str()
            .filter(|v| *v != "Default")
        {
            values.insert(v.to_string());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let values: Vec<String> = values.into_iter().collect();
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            plural("container", "containers", &bad),
            quoted(&values)
        ),
    )
}

const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn restricted_volumes(_: &Value, spec: &Value) -> Option<Violation> {
    let mut names = Vec::new();
    let mut types = std::collections::BTreeSet::new();
    for v in volumes(spec) {
        let bad: Vec<&String> = v
            .iter()
            .filter(|(k, val)| {
                *k != "name" && !val.is_null() && !RESTRICTED_VOLUME_TYPES.contains(&k.as_str())
            })
            .map(|(k, _)| k)
            .collect();
        if !bad.is_empty() {
            names.push(
                v.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
            types.extend(bad.into_iter().cloned());
        }
    }
    if names.is_empty() {
        return None;
    }
    let types: Vec<String> = types.into_iter().collect();
    let (verb, noun) = if names.len() == 1 && types.len() == 1 {
        ("uses", "type")
    } else if names.len() == 1 {
        ("uses", "types")
    } else {
        ("use", "types")
    };
    violation(
        "restricted volume types",
        format!(
            "{} {verb} restricted volume {noun} {}",
            plural("volume", "volumes", &names),
            quoted(&types)
        ),
    )
}

/// Pods in a user namespace (`hostUsers: false`) are exempt from the run-as-root checks.
fn user_namespaced(spec: &Value) -> bool {
    spec["hostUsers"] == false
}

fn run_as_non_root(_: &Value, spec: &Value) -> Option<Violation> {
    if user_namespaced(spec) {
        return None;
    }
    let pod = &spec["securityContext"]["runAsNonRoot"];
    let mut details = Vec::new();
    if *pod == false {
        details.push("pod must not set securityContext.runAsNonRoot=false".to_string());
    }
    let explicit_false = containers_where(spec, |c| c["securityContext"]["runAsNonRoot"] == false);
    if !explicit_false.is_empty() {
        details.push(format!(
            "{} must not set securityContext.runAsNonRoot=false",
            plural("container", "containers", &explicit_false)
        ));
    }
    if *pod != true {
        let unset = containers_where(spec, |c| c["securityContext"]["runAsNonRoot"].is_null());
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                plural("container", "containers", &unset)
            ));
        }
    }
    if details.is_empty() {
        return None;
    }
    violation("runAsNonRoot != true", details.join("; "))
}

fn run_as_user(_: &Value, spec: &Value) -> Option<Violation> {
    if user_namespaced(spec) {
        return None;
    }
    let mut details = Vec::new();
    if spec["securityContext"]["runAsUser"] == 0 {
        details.push("pod must not set runAsUser=0".to_string());
    }
    let bad = containers_where(spec, |c| c["securityContext"]["runAsUser"] == 0);
    if !bad.is_empty() {
        details.push(format!(
            "{} must not set runAsUser=0",
            plural("container", "containers", &bad)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("runAsUser=0", details.join("; "))
}

fn se_linux_options(_: &Value, spec: &Value) -> Option<Violation> {
    const TYPES: &[&str] = &[
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut subjects = Vec::new();
    let mut bad_types = std::collections::BTreeSet::new();
    let mut bad_users = std::collections::BTreeSet::new();
    let mut bad_roles = std::collections::BTreeSet::new();
    let mut check = |o: &Value| -> bool {
        let mut bad = false;
        let t = o["type"].as_str().unwrap_or("");
        if !TYPES.contains(&t) {
            bad_types.insert(format!("{t:?}"));
            bad = true;
        }
        if let Some(u) = o["user"].as_str().filter(|u| !u.is_empty()) {
            bad_users.insert(format!("{u:?}"));
            bad = true;
        }
        if let Some(r) = o["role"].as_str().filter(|r| !r.is_empty()) {
            bad_roles.insert(format!("{r:?}"));
            bad = true;
        }
        bad
    };
    let pod_bad = check(&spec["securityContext"]["seLinuxOptions"]);
    let mut names = Vec::new();
    for c in containers(spec) {
        if check(&c["securityContext"]["seLinuxOptions"]) {
            names.push(cname(c).to_string());
        }
    }
    if pod_bad {
        subjects.push("pod".to_string());
    }
    if !names.is_empty() {
        subjects.push(plural("container", "containers", &names));
    }
    if subjects.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    for (what, set) in [
        ("type", bad_types),
        ("user", bad_users),
        ("role", bad_roles),
    ] {
        if !set.is_empty() {
            let what = if set.len() == 1 {
                what.to_string()
            } else {
                format!("{what}s")
            };
            parts.push(format!(
                "{what} {}",
                set.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let verb = if subjects.len() == 1 && !pod_bad && names.len() == 1 || subjects == ["pod"] {
        "sets"
    } else {
        "set"
    };
    violation(
        "seLinuxOptions",
        format!(
            "{} {verb} forbidden securityContext.seLinuxOptions: {}",
            subjects.join(" and "),
            parts.join("; ")
        ),
    )
}

fn seccomp_unconfined(spec: &Value) -> Vec<String> {
    let mut details = Vec::new();
    if spec["securityContext"]["seccompProfile"]["type"] == "Unconfined" {
        details.push(
            "pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_string(),
        );
    }
    let bad = containers_where(spec, |c| {
        c["securityContext"]["seccompProfile"]["type"] == "Unconfined"
    });
    if !bad.is_empty() {
        details.push(format!(
            "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
            plural("container", "containers", &bad)
        ));
    }
    details
}

fn seccomp_baseline(_: &Value, spec: &Value) -> Option<Violation> {
    let details = seccomp_unconfined(spec);
    if details.is_empty() {
        return None;
    }
    violation("seccompProfile", details.join("; "))
}

fn seccomp_restricted(_: &Value, spec: &Value) -> Option<Violation> {
    let mut details = seccomp_unconfined(spec);
    let pod_set = !spec["securityContext"]["seccompProfile"]["type"].is_null();
    if !pod_set {
        let unset = containers_where(spec, |c| {
            c["securityContext"]["seccompProfile"]["type"].is_null()
        });
        if !unset.is_empty() {
            details.push(format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                plural("container", "containers", &unset)
            ));
        }
    }
    if details.is_empty() {
        return None;
    }
    violation("seccompProfile", details.join("; "))
}

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

fn sysctls(_: &Value, spec: &Value) -> Option<Violation> {
    let bad: Vec<&str> = spec["securityContext"]["sysctls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| !SAFE_SYSCTLS.contains(n))
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation("forbidden sysctls", bad.join(", "))
}

#[cfg(test)]
mod tests;
