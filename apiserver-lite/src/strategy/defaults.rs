//! Defaulting, mirroring the v1 defaulters upstream runs when a request body is decoded:
//! pkg/apis/core/v1/defaults.go (`SetDefaults_Pod`, `SetDefaults_PodSpec`, `SetDefaults_Container`,
//! probes, volumes, Service, Namespace, Secret, PV/PVC, LimitRange, Endpoints),
//! pkg/apis/apps/v1/defaults.go, pkg/apis/batch/v1/defaults.go, and the networking, discovery,
//! scheduling and storage v1 defaulters. Defaulting only fills what is unset and is idempotent,
//! so it may run again after admission and PrepareForCreate (upstream re-defaults when it reads
//! the stored object back).

use super::util::{default, each_obj_mut, is_empty, obj};
use crate::resources::ResourceInfo;
use base64::Engine;
use serde_json::{json, Map, Value};

/// Applies the v1 defaults of `info`'s kind to `o`.
pub fn apply(info: &ResourceInfo, o: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => pod(o),
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
            default(
                o.as_object_mut().expect("object"),
                "preemptionPolicy",
                json!("PreemptLowerPriority"),
            );
        }
        ("storage.k8s.io", "StorageClass") => {
            let m = o.as_object_mut().expect("object");
            default(m, "reclaimPolicy", json!("Delete"));
            default(m, "volumeBindingMode", json!("Immediate"));
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
            let limits = res.get("limits").and_then(Value::as_object).cloned();
            if let Some(limits) = limits {
                let req = obj_in(res, "requests");
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
    default(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork") == Some(&json!(true)) {
        host_network_ports(spec);
    }
    pod_spec(spec);
}

/// `defaultHostNetworkPorts`: with host networking, hostPort defaults to containerPort.
fn host_network_ports(spec: &mut Map<String, Value>) {
    for key in ["containers", "initContainers"] {
        for c in each_obj_mut(spec, key) {
            for p in each_obj_mut(c, "ports") {
                if is_empty(p.get("hostPort")) || p.get("hostPort") == Some(&json!(0)) {
                    if let Some(cp) = p.get("containerPort").cloned() {
                        p.insert("hostPort".into(), cp);
                    }
                }
            }
        }
    }
}

/// `v[key]` of a map as an object, created when missing.
pub(crate) fn obj_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("object")
}

/// `SetDefaults_PodSpec` and the defaulters of everything inside a pod spec.
pub fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
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
    if is_empty(c.get("imagePullPolicy")) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(pull_policy_for(image)));
    }
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in each_obj_mut(c, "ports") {
        default(p, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            handler(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).and_then(Value::as_object_mut) {
                handler(h);
            }
        }
    }
    for e in each_obj_mut(c, "env") {
        if let Some(fr) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default(fr, "apiVersion", json!("v1"));
        }
    }
}

/// `SetDefaults_HTTPGetAction` inside a probe or lifecycle handler.
fn handler(h: &mut Map<String, Value>) {
    if let Some(g) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        default(g, "path", json!("/"));
        default(g, "scheme", json!("HTTP"));
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
    if !VOLUME_SOURCES.iter().any(|s| !is_empty_source(v.get(*s))) {
        v.insert("emptyDir".into(), json!({}));
    }
    if let Some(hp) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        default(hp, "type", json!(""));
    }
    for key in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(key).and_then(Value::as_object_mut) {
            default(s, "defaultMode", json!(420));
        }
    }
    if let Some(items) = v
        .get_mut("downwardAPI")
        .and_then(|d| d.get_mut("items"))
        .and_then(Value::as_array_mut)
    {
        field_refs(items);
    }
    if let Some(sources) = v
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
        .and_then(Value::as_array_mut)
    {
        for s in sources.iter_mut() {
            if let Some(items) = s
                .get_mut("downwardAPI")
                .and_then(|d| d.get_mut("items"))
                .and_then(Value::as_array_mut)
            {
                field_refs(items);
            }
            if let Some(t) = s
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                default(t, "expirationSeconds", json!(3600));
            }
        }
    }
    if let Some(spec) = v
        .get_mut("ephemeral")
        .and_then(|e| e.get_mut("volumeClaimTemplate"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default(spec, "volumeMode", json!("Filesystem"));
    }
}

fn is_empty_source(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn field_refs(items: &mut [Value]) {
    for it in items.iter_mut() {
        if let Some(fr) = it.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default(fr, "apiVersion", json!("v1"));
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
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| !is_empty(Some(l)));
    if let Some(labels) = labels {
        let spec = obj(o, "spec");
        if is_empty(spec.get("selector")) {
            spec.insert("selector".into(), labels.clone());
        }
        let meta = obj(o, "metadata");
        if is_empty(meta.get("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = obj(o, "spec");
    default(spec, "replicas", json!(1));
    default(spec, "minReadySeconds", json!(0));
    if spec.contains_key("template") {
        template(spec);
    }
}

fn deployment(o: &mut Value) {
    let spec = obj(o, "spec");
    default(spec, "replicas", json!(1));
    let strategy = obj_in(spec, "strategy");
    default(strategy, "type", json!("RollingUpdate"));
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let ru = obj_in(strategy, "rollingUpdate");
        default(ru, "maxUnavailable", json!("25%"));
        default(ru, "maxSurge", json!("25%"));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    template(spec);
}

fn replica_set(o: &mut Value) {
    let spec = obj(o, "spec");
    default(spec, "replicas", json!(1));
    template(spec);
}

fn stateful_set(o: &mut Value) {
    let spec = obj(o, "spec");
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    let us = obj_in(spec, "updateStrategy");
    default(us, "type", json!("RollingUpdate"));
    if us.get("type") == Some(&json!("RollingUpdate")) {
        let ru = obj_in(us, "rollingUpdate");
        default(ru, "partition", json!(0));
    }
    let pol = obj_in(spec, "persistentVolumeClaimRetentionPolicy");
    default(pol, "whenDeleted", json!("Retain"));
    default(pol, "whenScaled", json!("Retain"));
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    for pvc in each_obj_mut(spec, "volumeClaimTemplates") {
        let s = obj_in(pvc, "spec");
        default(s, "volumeMode", json!("Filesystem"));
        default(obj_in(pvc, "status"), "phase", json!("Pending"));
    }
    template(spec);
}

fn daemon_set(o: &mut Value) {
    let spec = obj(o, "spec");
    let us = obj_in(spec, "updateStrategy");
    default(us, "type", json!("RollingUpdate"));
    if us.get("type") == Some(&json!("RollingUpdate")) {
        let ru = obj_in(us, "rollingUpdate");
        default(ru, "maxUnavailable", json!(1));
        default(ru, "maxSurge", json!(0));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    template(spec);
}

/// `SetDefaults_Job` plus the template defaults.
fn job(o: &mut Value) {
    let labels = o
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .filter(|l| !is_empty(Some(l)));
    if let Some(labels) = labels {
        let meta = obj(o, "metadata");
        if is_empty(meta.get("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    let spec = obj(o, "spec");
    job_spec(spec);
}

fn job_spec(spec: &mut Map<String, Value>) {
    if is_empty(spec.get("completions")) && is_empty(spec.get("parallelism")) {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    default(spec, "parallelism", json!(1));
    if is_empty(spec.get("backoffLimit")) {
        let limit = if is_empty(spec.get("backoffLimitPerIndex")) {
            6
        } else {
            i32::MAX
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let has_pfp = !is_empty(spec.get("podFailurePolicy"));
    if let Some(rules) = spec
        .get_mut("podFailurePolicy")
        .and_then(|p| p.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        for r in rules.iter_mut() {
            if let Some(pats) = r.get_mut("onPodConditions").and_then(Value::as_array_mut) {
                for p in pats.iter_mut().filter_map(Value::as_object_mut) {
                    default(p, "status", json!("True"));
                }
            }
        }
    }
    default(
        spec,
        "podReplacementPolicy",
        json!(if has_pfp {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    default(spec, "manualSelector", json!(false));
    template(spec);
}

fn cron_job(o: &mut Value) {
    let spec = obj(o, "spec");
    default(spec, "concurrencyPolicy", json!("Allow"));
    default(spec, "suspend", json!(false));
    default(spec, "successfulJobsHistoryLimit", json!(3));
    default(spec, "failedJobsHistoryLimit", json!(1));
    let jt = obj_in(spec, "jobTemplate");
    template(obj_in(jt, "spec"));
}

/// `SetDefaults_Service`. ClusterIP, nodePort and IP family allocation belong to the REST layer.
fn service(o: &mut Value) {
    let spec = obj(o, "spec");
    default(spec, "sessionAffinity", json!("None"));
    default(spec, "type", json!("ClusterIP"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    for p in each_obj_mut(spec, "ports") {
        default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let cfg = obj_in(spec, "sessionAffinityConfig");
        let ip = obj_in(cfg, "clientIP");
        default(ip, "timeoutSeconds", json!(10800));
    }
}

/// `SetDefaults_Namespace` (the `kubernetes.io/metadata.name` label) and
/// `SetDefaults_NamespaceStatus`.
fn namespace(o: &mut Value) {
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        let labels = obj_in(obj(o, "metadata"), "labels");
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    default(obj(o, "status"), "phase", json!("Active"));
}

/// `SetDefaults_Secret`, and the v1 conversion that folds `stringData` into `data`.
fn secret(o: &mut Value) {
    let m = o.as_object_mut().expect("object");
    default(m, "type", json!("Opaque"));
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
    default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
    default(spec, "volumeMode", json!("Filesystem"));
    default(obj(o, "status"), "phase", json!("Pending"));
}

fn persistent_volume_claim(o: &mut Value) {
    default(obj(o, "spec"), "volumeMode", json!("Filesystem"));
    default(obj(o, "status"), "phase", json!("Pending"));
}

fn endpoints(o: &mut Value) {
    if let Some(subsets) = o.get_mut("subsets").and_then(Value::as_array_mut) {
        for s in subsets.iter_mut().filter_map(Value::as_object_mut) {
            for p in each_obj_mut(s, "ports") {
                default(p, "protocol", json!("TCP"));
            }
        }
    }
}

/// discovery/v1 `SetDefaults_EndpointPort`.
fn endpoint_slice(o: &mut Value) {
    for p in each_obj_mut(o.as_object_mut().expect("object"), "ports") {
        default(p, "name", json!(""));
        default(p, "protocol", json!("TCP"));
    }
}

/// `SetDefaults_NetworkPolicy`: policyTypes from the presence of egress rules, ports TCP.
fn network_policy(o: &mut Value) {
    let spec = obj(o, "spec");
    for key in ["ingress", "egress"] {
        for rule in each_obj_mut(spec, key) {
            for p in each_obj_mut(rule, "ports") {
                default(p, "protocol", json!("TCP"));
            }
        }
    }
    if is_empty(spec.get("policyTypes")) {
        let mut types = vec![json!("Ingress")];
        if !is_empty(spec.get("egress")) {
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
        if item.get("type") != Some(&json!("Container")) {
            continue;
        }
        let max = item.get("max").and_then(Value::as_object).cloned();
        let min = item.get("min").and_then(Value::as_object).cloned();
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
