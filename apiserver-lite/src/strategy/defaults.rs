//! Defaulting, mirroring the v1 defaulters upstream runs when a request body is decoded:
//! pkg/apis/core/v1/defaults.go (`SetDefaults_Pod`, `SetDefaults_PodSpec`, `SetDefaults_Container`,
//! probes, volumes, Service, Namespace, Secret, PV/PVC, LimitRange, Endpoints),
//! pkg/apis/apps/v1/defaults.go, pkg/apis/batch/v1/defaults.go, and the networking, discovery,
//! scheduling and storage v1 defaulters. Defaulting only fills what is unset and is idempotent,
//! so it may run again after admission and PrepareForCreate (upstream re-defaults when it reads
//! the stored object back).

pub(crate) use super::util::obj_in;
use super::util::Ptr;
use super::util::{default_to, each_obj_mut, is_empty, obj, EmptyObject};
use super::util::{Get, GetMut};
use crate::resources::ResourceInfo;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Applies the v1 defaults of `info`'s kind to `o`.
pub fn apply(info: &ResourceInfo, o: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => pod(o),
        ("admissionregistration.k8s.io", kind) => {
            crate::admission::webhook::config::apply_defaults(kind, o)
        }
        ("", "ReplicationController") => replication_controller(o),
        ("", "Service") => service(o),
        ("", "Namespace") => namespace(o),
        ("", "Secret") => secret(o),
        ("", "PersistentVolume") => persistent_volume(o),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(o),
        ("", "Endpoints") => endpoints(o),
        ("", "LimitRange") => limit_range(o),
        ("apps", "Deployment") => deployment(o),
        ("apps", "ReplicaSet") => replica_set(o),
        ("apps", "StatefulSet") => stateful_set(o),
        ("apps", "DaemonSet") => daemon_set(o),
        ("batch", "Job") => job(o),
        ("batch", "CronJob") => cron_job(o),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(o),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(o),
        ("scheduling.k8s.io", "PriorityClass") => {
            default_to(
                o.as_object_mut().expect("object"),
                "preemptionPolicy",
                json!("PreemptLowerPriority"),
            );
        }
        ("storage.k8s.io", "StorageClass") => {
            let m = o.as_object_mut().expect("object");
            default_to(m, "reclaimPolicy", "Delete");
            default_to(m, "volumeBindingMode", "Immediate");
        }
        _ => {}
    }
}

/// `SetDefaults_Pod` plus the pod-spec defaulters.
fn pod(o: &mut Value) {
    let spec = obj(o, "spec");
    // If limits are set but requests are not, requests default to limits (only for Pods, not
    // templates).
    for key in ["containers", "initContainers"] {
        for c in each_obj_mut(spec, key) {
            let res = obj_in(c, "resources");
            let missing: Vec<(String, Value)> = match res.g("limits").and_then(Value::as_object) {
                None => continue,
                Some(limits) => {
                    let req = res.g("requests").and_then(Value::as_object);
                    limits
                        .iter()
                        .filter(|(k, _)| !req.is_some_and(|r| r.contains_key(*k)))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                }
            };
            let req = obj_in(res, "requests");
            for (k, v) in missing {
                req.insert(k, v);
            }
        }
    }
    default_to(spec, "enableServiceLinks", true);
    if spec.g("hostNetwork").and_then(Value::as_bool) == Some(true) {
        host_network_ports(spec);
    }
    pod_spec(spec);
}

/// `defaultHostNetworkPorts`: with host networking, hostPort defaults to containerPort.
fn host_network_ports(spec: &mut Map<String, Value>) {
    for key in ["containers", "initContainers"] {
        for c in each_obj_mut(spec, key) {
            for p in each_obj_mut(c, "ports") {
                if is_empty(p.g("hostPort")) || p.g("hostPort") == Some(&json!(0)) {
                    if let Some(cp) = p.g("containerPort").cloned() {
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
}

/// `SetDefaults_PodSpec` and the defaulters of everything inside a pod spec.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    default_to(spec, "dnsPolicy", "ClusterFirst");
    default_to(spec, "restartPolicy", "Always");
    default_to(spec, "securityContext", EmptyObject);
    default_to(spec, "terminationGracePeriodSeconds", 30i64);
    default_to(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in each_obj_mut(spec, key) {
            container(c);
        }
    }
    for v in each_obj_mut(spec, "volumes") {
        volume(v);
    }
}

/// `SetDefaults_Container` and its ports, probes, lifecycle handlers and env.
fn container(c: &mut Map<String, Value>) {
    if is_empty(c.g("imagePullPolicy")) {
        let image = c.g("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(pull_policy_for(image)));
    }
    default_to(c, "terminationMessagePath", "/dev/termination-log");
    default_to(c, "terminationMessagePolicy", "File");
    default_to(c, "resources", EmptyObject);
    for p in each_obj_mut(c, "ports") {
        default_to(p, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.gm(probe).and_then(Value::as_object_mut) {
            default_to(p, "timeoutSeconds", 1i64);
            default_to(p, "periodSeconds", 10i64);
            default_to(p, "successThreshold", 1i64);
            default_to(p, "failureThreshold", 3i64);
            handler(p);
        }
    }
    if let Some(lc) = c.gm("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.gm(hook).and_then(Value::as_object_mut) {
                handler(h);
            }
        }
    }
    for e in each_obj_mut(c, "env") {
        if let Some(fr) = e
            .gm("valueFrom")
            .and_then(|v| v.gm("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default_to(fr, "apiVersion", "v1");
        }
    }
}

/// `SetDefaults_HTTPGetAction` inside a probe or lifecycle handler.
fn handler(h: &mut Map<String, Value>) {
    if let Some(g) = h.gm("httpGet").and_then(Value::as_object_mut) {
        default_to(g, "path", "/");
        default_to(g, "scheme", "HTTP");
    }
}

/// `:latest` or no tag (and no digest) pulls Always, anything else IfNotPresent.
pub fn pull_policy_for(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// `SetDefaults_Volume` and the per-source defaulters.
fn volume(v: &mut Map<String, Value>) {
    if !VOLUME_SOURCES.iter().any(|s| !is_empty_source(v.g(s))) {
        v.insert("emptyDir".into(), json!({}));
    }
    if let Some(hp) = v.gm("hostPath").and_then(Value::as_object_mut) {
        default_to(hp, "type", "");
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.gm(key).and_then(Value::as_object_mut) {
            default_to(s, "defaultMode", 420i64);
        }
    }
    if let Some(items) = v
        .gm("downwardAPI")
        .and_then(|d| d.gm("items"))
        .and_then(Value::as_array_mut)
    {
        field_refs(items);
    }
    if let Some(sources) = v
        .gm("projected")
        .and_then(|p| p.gm("sources"))
        .and_then(Value::as_array_mut)
    {
        for s in sources.iter_mut() {
            if let Some(items) = s
                .gm("downwardAPI")
                .and_then(|d| d.gm("items"))
                .and_then(Value::as_array_mut)
            {
                field_refs(items);
            }
            if let Some(t) = s.gm("serviceAccountToken").and_then(Value::as_object_mut) {
                default_to(t, "expirationSeconds", 3600i64);
            }
        }
    }
    if let Some(spec) = v
        .gm("ephemeral")
        .and_then(|e| e.gm("volumeClaimTemplate"))
        .and_then(|t| t.gm("spec"))
        .and_then(Value::as_object_mut)
    {
        default_to(spec, "volumeMode", "Filesystem");
    }
}

fn is_empty_source(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn field_refs(items: &mut [Value]) {
    for it in items.iter_mut() {
        if let Some(fr) = it.gm("fieldRef").and_then(Value::as_object_mut) {
            default_to(fr, "apiVersion", "v1");
        }
    }
}

/// Defaults the pod spec of `spec.template` (workload templates).
fn template(spec: &mut Map<String, Value>) {
    let t = obj_in(spec, "template");
    pod_spec(obj_in(t, "spec"));
}

fn replication_controller(o: &mut Value) {
    let labels = o
        .ptr("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| !is_empty(Some(l)));
    if let Some(labels) = labels {
        let spec = obj(o, "spec");
        if is_empty(spec.g("selector")) {
            spec.insert("selector".into(), labels.clone());
        }
        let meta = obj(o, "metadata");
        if is_empty(meta.g("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = obj(o, "spec");
    default_to(spec, "replicas", 1i64);
    default_to(spec, "minReadySeconds", 0i64);
    if spec.contains_key("template") {
        template(spec);
    }
}

fn deployment(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "replicas", 1i64);
    let strategy = obj_in(spec, "strategy");
    default_to(strategy, "type", "RollingUpdate");
    if strategy.g("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = obj_in(strategy, "rollingUpdate");
        default_to(ru, "maxUnavailable", "25%");
        default_to(ru, "maxSurge", "25%");
    }
    default_to(spec, "revisionHistoryLimit", 10i64);
    default_to(spec, "progressDeadlineSeconds", 600i64);
    template(spec);
}

fn replica_set(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "replicas", 1i64);
    template(spec);
}

fn stateful_set(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "podManagementPolicy", "OrderedReady");
    let us = obj_in(spec, "updateStrategy");
    default_to(us, "type", "RollingUpdate");
    if us.g("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = obj_in(us, "rollingUpdate");
        default_to(ru, "partition", 0i64);
    }
    let pol = obj_in(spec, "persistentVolumeClaimRetentionPolicy");
    default_to(pol, "whenDeleted", "Retain");
    default_to(pol, "whenScaled", "Retain");
    default_to(spec, "replicas", 1i64);
    default_to(spec, "revisionHistoryLimit", 10i64);
    for pvc in each_obj_mut(spec, "volumeClaimTemplates") {
        let s = obj_in(pvc, "spec");
        default_to(s, "volumeMode", "Filesystem");
        default_to(obj_in(pvc, "status"), "phase", "Pending");
    }
    template(spec);
}

fn daemon_set(o: &mut Value) {
    let spec = obj(o, "spec");
    let us = obj_in(spec, "updateStrategy");
    default_to(us, "type", "RollingUpdate");
    if us.g("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let ru = obj_in(us, "rollingUpdate");
        default_to(ru, "maxUnavailable", 1i64);
        default_to(ru, "maxSurge", 0i64);
    }
    default_to(spec, "revisionHistoryLimit", 10i64);
    template(spec);
}

/// `SetDefaults_Job` plus the template defaults.
fn job(o: &mut Value) {
    let labels = o
        .ptr("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| !is_empty(Some(l)));
    if let Some(labels) = labels {
        let meta = obj(o, "metadata");
        if is_empty(meta.g("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = obj(o, "spec");
    job_spec(spec);
}

fn job_spec(spec: &mut Map<String, Value>) {
    if is_empty(spec.g("completions")) && is_empty(spec.g("parallelism")) {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default_to(spec, "parallelism", 1i64);
    if is_empty(spec.g("backoffLimit")) {
        let limit = if is_empty(spec.g("backoffLimitPerIndex")) {
            6
        } else {
            i32::MAX
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    default_to(spec, "completionMode", "NonIndexed");
    default_to(spec, "suspend", false);
    let has_pfp = !is_empty(spec.g("podFailurePolicy"));
    if let Some(rules) = spec
        .gm("podFailurePolicy")
        .and_then(|p| p.gm("rules"))
        .and_then(Value::as_array_mut)
    {
        for r in rules.iter_mut() {
            if let Some(pats) = r.gm("onPodConditions").and_then(Value::as_array_mut) {
                for p in pats.iter_mut().filter_map(Value::as_object_mut) {
                    default_to(p, "status", "True");
                }
            }
        }
    }
    default_to(
        spec,
        "podReplacementPolicy",
        json!(if has_pfp {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    default_to(spec, "manualSelector", false);
    template(spec);
}

fn cron_job(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "concurrencyPolicy", "Allow");
    default_to(spec, "suspend", false);
    default_to(spec, "successfulJobsHistoryLimit", 3i64);
    default_to(spec, "failedJobsHistoryLimit", 1i64);
    let jt = obj_in(spec, "jobTemplate");
    template(obj_in(jt, "spec"));
}

/// `SetDefaults_Service`. ClusterIP, nodePort and IP family allocation belong to the REST layer.
fn service(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "sessionAffinity", "None");
    default_to(spec, "type", "ClusterIP");
    let ty = spec
        .g("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for p in each_obj_mut(spec, "ports") {
        default_to(p, "protocol", "TCP");
        let unset = match p.g("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            if let Some(port) = p.g("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default_to(spec, "externalTrafficPolicy", "Cluster");
    }
    if ty != "ExternalName" {
        default_to(spec, "internalTrafficPolicy", "Cluster");
        default_to(spec, "ipFamilyPolicy", "SingleStack");
    }
    if ty == "LoadBalancer" {
        default_to(spec, "allocateLoadBalancerNodePorts", true);
    }
    if spec.g("sessionAffinity") == Some(&json!("ClientIP")) {
        let cfg = obj_in(spec, "sessionAffinityConfig");
        let ip = obj_in(cfg, "clientIP");
        default_to(ip, "timeoutSeconds", 10800i64);
    }
}

/// `SetDefaults_Namespace` (the `kubernetes.io/metadata.name` label) and
/// `SetDefaults_NamespaceStatus`.
fn namespace(o: &mut Value) {
    let name = o
        .ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        let labels = obj_in(obj(o, "metadata"), "labels");
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    default_to(obj(o, "status"), "phase", "Active");
}

/// `SetDefaults_Secret`, and the v1 conversion that folds `stringData` into `data`.
fn secret(o: &mut Value) {
    let m = o.as_object_mut().expect("object");
    default_to(m, "type", "Opaque");
    if let Some(Value::Object(sd)) = m.remove("stringData") {
        let data = obj_in(m, "data");
        for (k, v) in sd {
            let s = v.as_str().unwrap_or("");
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s.as_bytes())),
            );
        }
    }
}

fn persistent_volume(o: &mut Value) {
    let spec = obj(o, "spec");
    default_to(spec, "persistentVolumeReclaimPolicy", "Retain");
    default_to(spec, "volumeMode", "Filesystem");
    default_to(obj(o, "status"), "phase", "Pending");
}

fn persistent_volume_claim(o: &mut Value) {
    default_to(obj(o, "spec"), "volumeMode", "Filesystem");
    default_to(obj(o, "status"), "phase", "Pending");
}

fn endpoints(o: &mut Value) {
    if let Some(subsets) = o.gm("subsets").and_then(Value::as_array_mut) {
        for s in subsets.iter_mut().filter_map(Value::as_object_mut) {
            for p in each_obj_mut(s, "ports") {
                default_to(p, "protocol", "TCP");
            }
        }
    }
}

/// discovery/v1 `SetDefaults_EndpointPort`.
fn endpoint_slice(o: &mut Value) {
    for p in each_obj_mut(o.as_object_mut().expect("object"), "ports") {
        default_to(p, "name", "");
        default_to(p, "protocol", "TCP");
    }
}

/// `SetDefaults_NetworkPolicy`: policyTypes from the presence of egress rules, ports TCP.
fn network_policy(o: &mut Value) {
    let spec = obj(o, "spec");
    for key in ["ingress", "egress"] {
        for rule in each_obj_mut(spec, key) {
            for p in each_obj_mut(rule, "ports") {
                default_to(p, "protocol", "TCP");
            }
        }
    }
    if is_empty(spec.g("policyTypes")) {
        let mut types = vec![json!("Ingress")];
        if !is_empty(spec.g("egress")) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
}

/// `SetDefaults_LimitRangeItem`: for Container items, default limit from max, default request
/// from the default limit, then from min.
fn limit_range(o: &mut Value) {
    let spec = obj(o, "spec");
    for item in each_obj_mut(spec, "limits") {
        if item.g("type") != Some(&json!("Container")) {
            continue;
        }
        let max = item.g("max").and_then(Value::as_object).cloned();
        let min = item.g("min").and_then(Value::as_object).cloned();
        let def = obj_in(item, "default");
        for (k, v) in max.into_iter().flatten() {
            def.entry(k).or_insert(v);
        }
        let def = def.clone();
        let req = obj_in(item, "defaultRequest");
        for (k, v) in def.into_iter().chain(min.into_iter().flatten()) {
            req.entry(k).or_insert(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find_kind;

    fn defaulted(group: &str, kind: &str, o: Value) -> Value {
        let mut o = o;
        apply(find_kind(group, kind).unwrap(), &mut o);
        o
    }

    /// (group, kind, input, JSON pointer, expected value)
    type Case = (&'static str, &'static str, Value, &'static str, Value);

    fn pod_with(c: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [c]}})
    }

    #[test]
    fn defaults_table() {
        let nginx = json!({"name": "c", "image": "nginx"});
        let cases: Vec<Case> = vec![
            // Pod spec
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/restartPolicy",
                json!("Always"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/dnsPolicy",
                json!("ClusterFirst"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/terminationGracePeriodSeconds",
                json!(30),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/schedulerName",
                json!("default-scheduler"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/securityContext",
                json!({}),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/enableServiceLinks",
                json!(true),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/containers/0/imagePullPolicy",
                json!("Always"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "nginx:latest"})),
                "/spec/containers/0/imagePullPolicy",
                json!("Always"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "nginx:1.25"})),
                "/spec/containers/0/imagePullPolicy",
                json!("IfNotPresent"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "reg:5000/nginx"})),
                "/spec/containers/0/imagePullPolicy",
                json!("Always"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "nginx@sha256:abc"})),
                "/spec/containers/0/imagePullPolicy",
                json!("IfNotPresent"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "nginx", "imagePullPolicy": "Never"})),
                "/spec/containers/0/imagePullPolicy",
                json!("Never"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/containers/0/terminationMessagePath",
                json!("/dev/termination-log"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/containers/0/terminationMessagePolicy",
                json!("File"),
            ),
            (
                "",
                "Pod",
                pod_with(nginx.clone()),
                "/spec/containers/0/resources",
                json!({}),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "x", "ports": [{"containerPort": 80}]})),
                "/spec/containers/0/ports/0/protocol",
                json!("TCP"),
            ),
            (
                "",
                "Pod",
                pod_with(
                    json!({"name": "c", "image": "x", "livenessProbe": {"httpGet": {"port": 80}}}),
                ),
                "/spec/containers/0/livenessProbe",
                json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}),
            ),
            (
                "",
                "Pod",
                pod_with(
                    json!({"name": "c", "image": "x", "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 5}}),
                ),
                "/spec/containers/0/readinessProbe/periodSeconds",
                json!(5),
            ),
            (
                "",
                "Pod",
                pod_with(
                    json!({"name": "c", "image": "x", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}),
                ),
                "/spec/containers/0/env/0/valueFrom/fieldRef/apiVersion",
                json!("v1"),
            ),
            (
                "",
                "Pod",
                pod_with(json!({"name": "c", "image": "x", "resources": {"limits": {"cpu": "1"}}})),
                "/spec/containers/0/resources/requests",
                json!({"cpu": "1"}),
            ),
            (
                "",
                "Pod",
                json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}}),
                "/spec/containers/0/ports/0/hostPort",
                json!(80),
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [], "volumes": [{"name": "v"}]}}),
                "/spec/volumes/0/emptyDir",
                json!({}),
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [], "volumes": [{"name": "v", "configMap": {"name": "c"}}]}}),
                "/spec/volumes/0/configMap/defaultMode",
                json!(420),
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}}),
                "/spec/volumes/0/secret/defaultMode",
                json!(420),
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [], "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}}),
                "/spec/volumes/0/emptyDir",
                Value::Null,
            ),
            (
                "",
                "Pod",
                json!({"spec": {"containers": [], "volumes": [{"name": "v", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}}),
                "/spec/volumes/0/downwardAPI/items/0/fieldRef/apiVersion",
                json!("v1"),
            ),
            // workload templates get pod-spec defaults, but not Pod-only ones
            (
                "apps",
                "Deployment",
                json!({"spec": {"template": {"spec": {"containers": [nginx.clone()]}}}}),
                "/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {"template": {"spec": {"containers": [nginx.clone()]}}}}),
                "/spec/template/spec/enableServiceLinks",
                Value::Null,
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {}}),
                "/spec/replicas",
                json!(1),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {}}),
                "/spec/strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
                "/spec/strategy",
                json!({"type": "Recreate"}),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {}}),
                "/spec/revisionHistoryLimit",
                json!(10),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {}}),
                "/spec/progressDeadlineSeconds",
                json!(600),
            ),
            (
                "apps",
                "Deployment",
                json!({"spec": {"replicas": 0}}),
                "/spec/replicas",
                json!(0),
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"spec": {}}),
                "/spec/replicas",
                json!(1),
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"spec": {"template": {"spec": {"containers": [nginx.clone()]}}}}),
                "/spec/template/spec/dnsPolicy",
                json!("ClusterFirst"),
            ),
            (
                "",
                "ReplicationController",
                json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}}),
                "/spec/selector",
                json!({"app": "a"}),
            ),
            (
                "",
                "ReplicationController",
                json!({"spec": {"template": {"metadata": {"labels": {"app": "a"}}}}}),
                "/metadata/labels",
                json!({"app": "a"}),
            ),
            (
                "",
                "ReplicationController",
                json!({"metadata": {"labels": {"x": "y"}}, "spec": {"template": {"metadata": {"labels": {"app": "a"}}}}}),
                "/metadata/labels",
                json!({"x": "y"}),
            ),
            (
                "",
                "ReplicationController",
                json!({"spec": {}}),
                "/spec/replicas",
                json!(1),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {}}),
                "/spec/replicas",
                json!(1),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {}}),
                "/spec/podManagementPolicy",
                json!("OrderedReady"),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {}}),
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {}}),
                "/spec/revisionHistoryLimit",
                json!(10),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {}}),
                "/spec/persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
                "/spec/volumeClaimTemplates/0/spec/volumeMode",
                json!("Filesystem"),
            ),
            (
                "apps",
                "DaemonSet",
                json!({"spec": {}}),
                "/spec/updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            ),
            (
                "apps",
                "DaemonSet",
                json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
                "/spec/updateStrategy",
                json!({"type": "OnDelete"}),
            ),
            (
                "apps",
                "DaemonSet",
                json!({"spec": {}}),
                "/spec/revisionHistoryLimit",
                json!(10),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/completions",
                json!(1),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/parallelism",
                json!(1),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"parallelism": 3}}),
                "/spec/completions",
                Value::Null,
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"completions": 5}}),
                "/spec/parallelism",
                json!(1),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/backoffLimit",
                json!(6),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"backoffLimitPerIndex": 1}}),
                "/spec/backoffLimit",
                json!(i32::MAX),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/completionMode",
                json!("NonIndexed"),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/suspend",
                json!(false),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/manualSelector",
                json!(false),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {}}),
                "/spec/podReplacementPolicy",
                json!("TerminatingOrFailed"),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}}),
                "/metadata/labels",
                json!({"a": "b"}),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"template": {"spec": {"containers": [nginx.clone()]}}}}),
                "/spec/template/spec/containers/0/imagePullPolicy",
                json!("Always"),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {}}),
                "/spec/concurrencyPolicy",
                json!("Allow"),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {}}),
                "/spec/suspend",
                json!(false),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {}}),
                "/spec/successfulJobsHistoryLimit",
                json!(3),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {}}),
                "/spec/failedJobsHistoryLimit",
                json!(1),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [nginx.clone()]}}}}}}),
                "/spec/jobTemplate/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
            // Service
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/type",
                json!("ClusterIP"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/sessionAffinity",
                json!("None"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/ports/0",
                json!({"port": 80, "protocol": "TCP", "targetPort": 80}),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}),
                "/spec/ports/0/targetPort",
                json!("http"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/internalTrafficPolicy",
                json!("Cluster"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/externalTrafficPolicy",
                Value::Null,
            ),
            (
                "",
                "Service",
                json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
                "/spec/externalTrafficPolicy",
                json!("Cluster"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
                "/spec/allocateLoadBalancerNodePorts",
                json!(true),
            ),
            (
                "",
                "Service",
                json!({"spec": {"ports": [{"port": 80}]}}),
                "/spec/ipFamilyPolicy",
                json!("SingleStack"),
            ),
            (
                "",
                "Service",
                json!({"spec": {"type": "ExternalName", "externalName": "x.y"}}),
                "/spec/ipFamilyPolicy",
                Value::Null,
            ),
            (
                "",
                "Service",
                json!({"spec": {"sessionAffinity": "ClientIP"}}),
                "/spec/sessionAffinityConfig/clientIP/timeoutSeconds",
                json!(10800),
            ),
            // others
            (
                "",
                "Namespace",
                json!({"metadata": {"name": "ns"}}),
                "/status/phase",
                json!("Active"),
            ),
            (
                "",
                "Namespace",
                json!({"metadata": {"name": "ns"}}),
                "/metadata/labels/kubernetes.io~1metadata.name",
                json!("ns"),
            ),
            ("", "Secret", json!({}), "/type", json!("Opaque")),
            (
                "",
                "Secret",
                json!({"stringData": {"a": "hi"}}),
                "/data/a",
                json!("aGk="),
            ),
            (
                "",
                "Secret",
                json!({"stringData": {"a": "hi"}}),
                "/stringData",
                Value::Null,
            ),
            (
                "",
                "PersistentVolume",
                json!({"spec": {}}),
                "/spec/persistentVolumeReclaimPolicy",
                json!("Retain"),
            ),
            (
                "",
                "PersistentVolume",
                json!({"spec": {}}),
                "/spec/volumeMode",
                json!("Filesystem"),
            ),
            (
                "",
                "PersistentVolume",
                json!({"spec": {}}),
                "/status/phase",
                json!("Pending"),
            ),
            (
                "",
                "PersistentVolumeClaim",
                json!({"spec": {}}),
                "/spec/volumeMode",
                json!("Filesystem"),
            ),
            (
                "",
                "PersistentVolumeClaim",
                json!({"spec": {}}),
                "/status/phase",
                json!("Pending"),
            ),
            (
                "",
                "Endpoints",
                json!({"subsets": [{"ports": [{"port": 80}]}]}),
                "/subsets/0/ports/0/protocol",
                json!("TCP"),
            ),
            (
                "discovery.k8s.io",
                "EndpointSlice",
                json!({"addressType": "IPv4", "ports": [{"port": 80}]}),
                "/ports/0",
                json!({"port": 80, "name": "", "protocol": "TCP"}),
            ),
            (
                "networking.k8s.io",
                "NetworkPolicy",
                json!({"spec": {}}),
                "/spec/policyTypes",
                json!(["Ingress"]),
            ),
            (
                "networking.k8s.io",
                "NetworkPolicy",
                json!({"spec": {"egress": [{}]}}),
                "/spec/policyTypes",
                json!(["Ingress", "Egress"]),
            ),
            (
                "networking.k8s.io",
                "NetworkPolicy",
                json!({"spec": {"ingress": [{"ports": [{"port": 80}]}]}}),
                "/spec/ingress/0/ports/0/protocol",
                json!("TCP"),
            ),
            (
                "scheduling.k8s.io",
                "PriorityClass",
                json!({"value": 5}),
                "/preemptionPolicy",
                json!("PreemptLowerPriority"),
            ),
            (
                "storage.k8s.io",
                "StorageClass",
                json!({"provisioner": "x"}),
                "/reclaimPolicy",
                json!("Delete"),
            ),
            (
                "storage.k8s.io",
                "StorageClass",
                json!({"provisioner": "x"}),
                "/volumeBindingMode",
                json!("Immediate"),
            ),
            (
                "",
                "LimitRange",
                json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}}),
                "/spec/limits/0/defaultRequest",
                json!({"cpu": "2", "memory": "1Mi"}),
            ),
            (
                "",
                "LimitRange",
                json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}}]}}),
                "/spec/limits/0/default",
                json!({"cpu": "2"}),
            ),
            (
                "coordination.k8s.io",
                "Lease",
                json!({"spec": {}}),
                "/spec",
                json!({}),
            ),
            (
                "policy",
                "PodDisruptionBudget",
                json!({"spec": {}}),
                "/spec",
                json!({}),
            ),
        ];
        for (i, (g, k, input, ptr, want)) in cases.into_iter().enumerate() {
            let out = defaulted(g, k, input);
            let got = out.pointer(ptr).cloned().unwrap_or(Value::Null);
            assert_eq!(got, want, "case {i}: {k} {ptr} in {out}");
        }
    }

    #[test]
    fn defaulting_is_idempotent() {
        let o = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        let once = defaulted("", "Pod", o);
        let twice = defaulted("", "Pod", once.clone());
        assert_eq!(once, twice);
    }
}
