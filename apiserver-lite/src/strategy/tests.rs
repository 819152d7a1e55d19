//! Table-driven tests of the whole create and update pipelines.

use super::*;
use crate::resources::find_kind;
use serde_json::json;

#[derive(Default)]
struct NoCluster;

impl AdmissionLookup for NoCluster {
    fn priority_class(&self, _: &str) -> Option<Value> {
        None
    }
    fn global_default_priority_class(&self) -> Option<Value> {
        None
    }
    fn limit_ranges(&self, _: &str) -> Vec<Value> {
        Vec::new()
    }
}

/// Sets `value` at a JSON pointer, creating objects on the way; `None` removes the field.
fn set(mut v: Value, ptr: &str, value: Option<Value>) -> Value {
    let parts: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let mut cur = &mut v;
    for p in &parts[..parts.len() - 1] {
        cur = match cur {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            other => {
                if !other.is_object() {
                    *other = json!({});
                }
                other
                    .as_object_mut()
                    .unwrap()
                    .entry(p.clone())
                    .or_insert_with(|| json!({}))
            }
        };
    }
    let last = parts.last().unwrap();
    match (cur, value) {
        (Value::Array(a), Some(val)) => {
            let i: usize = last.parse().unwrap();
            if i == a.len() {
                a.push(val)
            } else {
                a[i] = val
            }
        }
        (Value::Array(a), None) => {
            a.remove(last.parse().unwrap());
        }
        (other, Some(val)) => {
            other.as_object_mut().unwrap().insert(last.clone(), val);
        }
        (other, None) => {
            other.as_object_mut().unwrap().remove(last);
        }
    }
    v
}

fn meta(name: &str, ns: Option<&str>) -> Value {
    match ns {
        Some(ns) => json!({"name": name, "namespace": ns}),
        None => json!({"name": name}),
    }
}

fn pod() -> Value {
    json!({"metadata": meta("p", Some("default")), "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn template(labels: Value) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

fn deployment() -> Value {
    json!({"metadata": meta("d", Some("default")), "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": template(json!({"app": "a"}))}})
}

fn job() -> Value {
    json!({"metadata": {"name": "j", "namespace": "default", "uid": "0a1b"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
}

fn service() -> Value {
    json!({"metadata": meta("s", Some("default")), "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}})
}

fn create(group: &str, kind: &str, o: Value) -> Result<Value, ApiError> {
    let mut o = o;
    prepare_create(find_kind(group, kind).unwrap(), &mut o, &NoCluster)?;
    Ok(o)
}

fn causes(e: &ApiError) -> Vec<(String, String)> {
    e.details["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or("").to_string(),
                        c["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (group, kind, object, expected (field, reason) among the causes; None = accepted)
type Case = (
    &'static str,
    &'static str,
    Value,
    Option<(&'static str, &'static str)>,
);

#[test]
fn create_validation_table() {
    let big = "x".repeat(1024 * 1024 + 1);
    let big_ann = "x".repeat(256 * 1024 + 1);
    let cases: Vec<Case> = vec![
        // metadata
        ("", "Pod", pod(), None),
        (
            "",
            "Pod",
            set(pod(), "/metadata/name", None),
            Some(("metadata.name", "FieldValueRequired")),
        ),
        (
            "",
            "Pod",
            set(
                set(pod(), "/metadata/name", None),
                "/metadata/generateName",
                Some(json!("web-")),
            ),
            None,
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/name", Some(json!("Bad_Name"))),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/name", Some(json!("a.b.c"))),
            None,
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/namespace", None),
            Some(("metadata.namespace", "FieldValueRequired")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/labels", Some(json!({"bad key": "v"}))),
            Some(("metadata.labels", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/labels", Some(json!({"k": "bad value"}))),
            Some(("metadata.labels", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/metadata/labels",
                Some(json!({"example.com/k": "v-1.2_3"})),
            ),
            None,
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/annotations", Some(json!({"a": big_ann}))),
            Some(("metadata.annotations", "FieldValueTooLong")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/annotations", Some(json!({"a b": "x"}))),
            Some(("metadata.annotations", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/metadata/finalizers", Some(json!(["custom"]))),
            Some(("metadata.finalizers[0]", "FieldValueInvalid")),
        ),
        (
            "",
            "Namespace",
            json!({"metadata": meta("ns1", None)}),
            None,
        ),
        (
            "",
            "Namespace",
            json!({"metadata": meta("ns.dotted", None)}),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        (
            "",
            "Namespace",
            json!({"metadata": meta("ns", Some("default"))}),
            Some(("metadata.namespace", "FieldValueForbidden")),
        ),
        (
            "",
            "Service",
            set(service(), "/metadata/name", Some(json!("1svc"))),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        (
            "",
            "ConfigMap",
            json!({"metadata": meta("a.b", Some("default"))}),
            None,
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": meta("system:admin", None)}),
            None,
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            json!({"metadata": meta("a/b", None)}),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        // pod spec
        (
            "",
            "Pod",
            set(pod(), "/spec/containers", Some(json!([]))),
            Some(("spec.containers", "FieldValueRequired")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/containers/0/name", Some(json!("Bad"))),
            Some(("spec.containers[0].name", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/1",
                Some(json!({"name": "c", "image": "x"})),
            ),
            Some(("spec.containers[1].name", "FieldValueDuplicate")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/initContainers",
                Some(json!([{"name": "c", "image": "x"}])),
            ),
            Some(("spec.containers[0].name", "FieldValueDuplicate")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/containers/0/image", None),
            Some(("spec.containers[0].image", "FieldValueRequired")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/containers/0/image", Some(json!(" nginx"))),
            Some(("spec.containers[0].image", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/ports",
                Some(json!([{"containerPort": 70000}])),
            ),
            Some((
                "spec.containers[0].ports[0].containerPort",
                "FieldValueInvalid",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/ports",
                Some(json!([{"containerPort": 80, "protocol": "HTTP"}])),
            ),
            Some((
                "spec.containers[0].ports[0].protocol",
                "FieldValueNotSupported",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/ports",
                Some(
                    json!([{"containerPort": 80, "name": "http"}, {"containerPort": 81, "name": "http"}]),
                ),
            ),
            Some(("spec.containers[0].ports[1].name", "FieldValueDuplicate")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/restartPolicy", Some(json!("Sometimes"))),
            Some(("spec.restartPolicy", "FieldValueNotSupported")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/dnsPolicy", Some(json!("Bogus"))),
            Some(("spec.dnsPolicy", "FieldValueNotSupported")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/dnsPolicy", Some(json!("None"))),
            Some(("spec.dnsConfig", "FieldValueRequired")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/resources",
                Some(json!({"requests": {"cpu": "600m"}, "limits": {"cpu": "500m"}})),
            ),
            Some((
                "spec.containers[0].resources.requests[cpu]",
                "FieldValueInvalid",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/resources",
                Some(json!({"requests": {"memory": "1Gi"}, "limits": {"memory": "1024Mi"}})),
            ),
            None,
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/resources",
                Some(json!({"requests": {"cpu": "-1"}})),
            ),
            Some((
                "spec.containers[0].resources.requests[cpu]",
                "FieldValueInvalid",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/resources",
                Some(json!({"limits": {"gpu": "1"}})),
            ),
            Some((
                "spec.containers[0].resources.limits[gpu]",
                "FieldValueInvalid",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/resources",
                Some(json!({"limits": {"nvidia.com/gpu": "1"}})),
            ),
            None,
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/volumeMounts",
                Some(json!([{"name": "missing", "mountPath": "/x"}])),
            ),
            Some((
                "spec.containers[0].volumeMounts[0].name",
                "FieldValueNotFound",
            )),
        ),
        (
            "",
            "Pod",
            set(
                set(pod(), "/spec/volumes", Some(json!([{"name": "v"}]))),
                "/spec/containers/0/volumeMounts",
                Some(json!([{"name": "v", "mountPath": "/x"}])),
            ),
            None,
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/volumes",
                Some(json!([{"name": "v"}, {"name": "v"}])),
            ),
            Some(("spec.volumes[1].name", "FieldValueDuplicate")),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/containers/0/livenessProbe",
                Some(json!({"exec": {"command": ["true"]}, "successThreshold": 2})),
            ),
            Some((
                "spec.containers[0].livenessProbe.successThreshold",
                "FieldValueInvalid",
            )),
        ),
        (
            "",
            "Pod",
            set(
                pod(),
                "/spec/tolerations",
                Some(json!([{"key": "k", "operator": "Exists", "value": "v"}])),
            ),
            Some(("spec.tolerations[0].operator", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            set(pod(), "/spec/activeDeadlineSeconds", Some(json!(0))),
            Some(("spec.activeDeadlineSeconds", "FieldValueInvalid")),
        ),
        // workloads
        ("apps", "Deployment", deployment(), None),
        (
            "apps",
            "Deployment",
            set(deployment(), "/spec/selector", None),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "apps",
            "Deployment",
            set(deployment(), "/spec/selector", Some(json!({}))),
            Some(("spec.selector", "FieldValueInvalid")),
        ),
        (
            "apps",
            "Deployment",
            set(
                deployment(),
                "/spec/selector/matchLabels/app",
                Some(json!("b")),
            ),
            Some(("spec.template.metadata.labels", "FieldValueInvalid")),
        ),
        (
            "apps",
            "Deployment",
            set(
                deployment(),
                "/spec/selector",
                Some(
                    json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]}),
                ),
            ),
            None,
        ),
        (
            "apps",
            "Deployment",
            set(deployment(), "/spec/replicas", Some(json!(-1))),
            Some(("spec.replicas", "FieldValueInvalid")),
        ),
        (
            "apps",
            "Deployment",
            set(
                deployment(),
                "/spec/template/spec/restartPolicy",
                Some(json!("Never")),
            ),
            Some(("spec.template.spec.restartPolicy", "FieldValueNotSupported")),
        ),
        (
            "apps",
            "Deployment",
            set(deployment(), "/spec/template/spec/containers/0/image", None),
            Some((
                "spec.template.spec.containers[0].image",
                "FieldValueRequired",
            )),
        ),
        (
            "apps",
            "Deployment",
            set(
                deployment(),
                "/spec/strategy",
                Some(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
            ),
            Some(("spec.strategy.rollingUpdate", "FieldValueForbidden")),
        ),
        (
            "apps",
            "Deployment",
            set(
                deployment(),
                "/spec/strategy",
                Some(
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
                ),
            ),
            Some((
                "spec.strategy.rollingUpdate.maxUnavailable",
                "FieldValueInvalid",
            )),
        ),
        (
            "apps",
            "ReplicaSet",
            set(deployment(), "/spec/selector", None),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "apps",
            "ReplicaSet",
            set(deployment(), "/spec/replicas", Some(json!(-2))),
            Some(("spec.replicas", "FieldValueInvalid")),
        ),
        ("apps", "DaemonSet", deployment(), None),
        (
            "apps",
            "DaemonSet",
            set(
                deployment(),
                "/spec/selector/matchLabels/app",
                Some(json!("b")),
            ),
            Some(("spec.template.metadata.labels", "FieldValueInvalid")),
        ),
        ("apps", "StatefulSet", deployment(), None),
        // Containers may mount a volumeClaimTemplate, not an unknown volume.
        (
            "apps",
            "StatefulSet",
            set(
                set(
                    deployment(),
                    "/spec/template/spec/containers/0/volumeMounts",
                    Some(json!([{"name": "www", "mountPath": "/data"}])),
                ),
                "/spec/volumeClaimTemplates",
                Some(
                    json!([{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]),
                ),
            ),
            None,
        ),
        (
            "apps",
            "StatefulSet",
            set(
                deployment(),
                "/spec/template/spec/containers/0/volumeMounts",
                Some(json!([{"name": "www", "mountPath": "/data"}])),
            ),
            Some((
                "spec.template.spec.containers[0].volumeMounts[0].name",
                "FieldValueNotFound",
            )),
        ),
        (
            "apps",
            "StatefulSet",
            set(deployment(), "/spec/selector", None),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "apps",
            "StatefulSet",
            set(
                deployment(),
                "/spec/podManagementPolicy",
                Some(json!("Random")),
            ),
            Some(("spec.podManagementPolicy", "FieldValueNotSupported")),
        ),
        (
            "",
            "ReplicationController",
            json!({"metadata": meta("rc", Some("default")), "spec": {"template": template(json!({"app": "a"}))}}),
            None,
        ),
        (
            "",
            "ReplicationController",
            json!({"metadata": meta("rc", Some("default")), "spec": {"template": template(json!({}))}}),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "",
            "ReplicationController",
            json!({"metadata": meta("rc", Some("default")), "spec": {"selector": {"app": "b"}, "template": template(json!({"app": "a"}))}}),
            Some(("spec.template.metadata.labels", "FieldValueInvalid")),
        ),
        ("batch", "Job", job(), None),
        (
            "batch",
            "Job",
            set(job(), "/spec/template/spec/restartPolicy", None),
            Some(("spec.template.spec.restartPolicy", "FieldValueNotSupported")),
        ),
        (
            "batch",
            "Job",
            set(job(), "/metadata/uid", None),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "batch",
            "Job",
            set(job(), "/spec/manualSelector", Some(json!(true))),
            Some(("spec.selector", "FieldValueRequired")),
        ),
        (
            "batch",
            "Job",
            set(
                set(
                    set(job(), "/spec/manualSelector", Some(json!(true))),
                    "/spec/selector",
                    Some(json!({"matchLabels": {"a": "b"}})),
                ),
                "/spec/template/metadata",
                Some(json!({"labels": {"a": "c"}})),
            ),
            Some(("spec.template.metadata.labels", "FieldValueInvalid")),
        ),
        (
            "batch",
            "Job",
            set(
                set(
                    set(job(), "/spec/manualSelector", Some(json!(true))),
                    "/spec/selector",
                    Some(json!({"matchLabels": {"a": "b"}})),
                ),
                "/spec/template/metadata",
                Some(json!({"labels": {"a": "b"}})),
            ),
            None,
        ),
        (
            "batch",
            "Job",
            set(job(), "/spec/backoffLimit", Some(json!(-1))),
            Some(("spec.backoffLimit", "FieldValueInvalid")),
        ),
        (
            "batch",
            "Job",
            set(job(), "/spec/completionMode", Some(json!("Indexed"))),
            None,
        ),
        (
            "batch",
            "Job",
            set(
                set(job(), "/spec/completionMode", Some(json!("Indexed"))),
                "/spec/parallelism",
                Some(json!(2)),
            ),
            Some(("spec.completions", "FieldValueRequired")),
        ),
        (
            "batch",
            "CronJob",
            json!({"metadata": meta("cj", Some("default")), "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            None,
        ),
        (
            "batch",
            "CronJob",
            json!({"metadata": meta("cj", Some("default")), "spec": {"schedule": "* * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            Some(("spec.schedule", "FieldValueInvalid")),
        ),
        (
            "batch",
            "CronJob",
            json!({"metadata": meta(&"c".repeat(53), Some("default")), "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        // services
        ("", "Service", service(), None),
        (
            "",
            "Service",
            set(service(), "/spec/ports", Some(json!([]))),
            Some(("spec.ports", "FieldValueRequired")),
        ),
        (
            "",
            "Service",
            set(
                set(service(), "/spec/ports", Some(json!([]))),
                "/spec/clusterIP",
                Some(json!("None")),
            ),
            None,
        ),
        (
            "",
            "Service",
            json!({"metadata": meta("ext", Some("default")), "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            None,
        ),
        (
            "",
            "Service",
            json!({"metadata": meta("ext", Some("default")), "spec": {"type": "ExternalName"}}),
            Some(("spec.externalName", "FieldValueRequired")),
        ),
        (
            "",
            "Service",
            set(service(), "/spec/ports/0/port", Some(json!(0))),
            Some(("spec.ports[0].port", "FieldValueInvalid")),
        ),
        (
            "",
            "Service",
            set(service(), "/spec/ports/0/port", Some(json!(65536))),
            Some(("spec.ports[0].port", "FieldValueInvalid")),
        ),
        (
            "",
            "Service",
            set(service(), "/spec/type", Some(json!("Magic"))),
            Some(("spec.type", "FieldValueNotSupported")),
        ),
        (
            "",
            "Service",
            set(service(), "/spec/ports/1", Some(json!({"port": 81}))),
            Some(("spec.ports[0].name", "FieldValueRequired")),
        ),
        (
            "",
            "Service",
            set(
                service(),
                "/spec/ports",
                Some(json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}])),
            ),
            Some(("spec.ports[1]", "FieldValueDuplicate")),
        ),
        (
            "",
            "Service",
            set(
                service(),
                "/spec/ports/0/targetPort",
                Some(json!("Bad_Name")),
            ),
            Some(("spec.ports[0].targetPort", "FieldValueInvalid")),
        ),
        (
            "",
            "Service",
            set(
                service(),
                "/spec/externalTrafficPolicy",
                Some(json!("Local")),
            ),
            Some(("spec.externalTrafficPolicy", "FieldValueInvalid")),
        ),
        (
            "",
            "Service",
            set(service(), "/spec/ports/0/nodePort", Some(json!(30000))),
            Some(("spec.ports[0].nodePort", "FieldValueForbidden")),
        ),
        // config maps and secrets
        (
            "",
            "ConfigMap",
            json!({"metadata": meta("cm", Some("default")), "data": {"key.name": "v", "KEY_NAME": "v"}}),
            None,
        ),
        (
            "",
            "ConfigMap",
            json!({"metadata": meta("cm", Some("default")), "data": {"a/b": "v"}}),
            Some(("data[a/b]", "FieldValueInvalid")),
        ),
        (
            "",
            "ConfigMap",
            json!({"metadata": meta("cm", Some("default")), "data": {"a": "v"}, "binaryData": {"a": "dg=="}}),
            Some(("binaryData[a]", "FieldValueInvalid")),
        ),
        (
            "",
            "ConfigMap",
            json!({"metadata": meta("cm", Some("default")), "data": {"a": big}}),
            Some(("", "FieldValueTooLong")),
        ),
        (
            "",
            "Secret",
            json!({"metadata": meta("s", Some("default")), "data": {"a": "aGk="}}),
            None,
        ),
        (
            "",
            "Secret",
            json!({"metadata": meta("s", Some("default")), "data": {"a": "not base64!"}}),
            Some(("data[a]", "FieldValueInvalid")),
        ),
        (
            "",
            "Secret",
            json!({"metadata": meta("s", Some("default")), "stringData": {"a b": "x"}}),
            Some(("data[a b]", "FieldValueInvalid")),
        ),
        (
            "",
            "Secret",
            json!({"metadata": meta("s", Some("default")), "stringData": {"a": big}}),
            Some(("data", "FieldValueTooLong")),
        ),
        (
            "",
            "Secret",
            json!({"metadata": meta("s", Some("default")), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}}),
            Some(("data[tls.key]", "FieldValueRequired")),
        ),
        // storage
        (
            "",
            "PersistentVolumeClaim",
            json!({"metadata": meta("c", Some("default")), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            None,
        ),
        (
            "",
            "PersistentVolumeClaim",
            json!({"metadata": meta("c", Some("default")), "spec": {"resources": {"requests": {"storage": "1Gi"}}}}),
            Some(("spec.accessModes", "FieldValueRequired")),
        ),
        (
            "",
            "PersistentVolumeClaim",
            json!({"metadata": meta("c", Some("default")), "spec": {"accessModes": ["ReadWriteOnce"]}}),
            Some(("spec.resources[storage]", "FieldValueRequired")),
        ),
        (
            "",
            "PersistentVolume",
            json!({"metadata": meta("pv", None), "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}, "hostPath": {"path": "/d"}}}),
            None,
        ),
        (
            "",
            "PersistentVolume",
            json!({"metadata": meta("pv", None), "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}),
            Some(("spec", "FieldValueRequired")),
        ),
        (
            "storage.k8s.io",
            "StorageClass",
            json!({"metadata": meta("sc", None), "provisioner": "rancher.io/local-path"}),
            None,
        ),
        (
            "storage.k8s.io",
            "StorageClass",
            json!({"metadata": meta("sc", None)}),
            Some(("provisioner", "FieldValueRequired")),
        ),
        // coordination, events, discovery, policy, scheduling, rbac
        (
            "coordination.k8s.io",
            "Lease",
            json!({"metadata": meta("l", Some("kube-system")), "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
            None,
        ),
        (
            "coordination.k8s.io",
            "Lease",
            json!({"metadata": meta("l", Some("kube-system")), "spec": {"leaseDurationSeconds": 0}}),
            Some(("spec.leaseDurationSeconds", "FieldValueInvalid")),
        ),
        (
            "",
            "Event",
            json!({"metadata": meta("e.1", Some("default")), "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"}, "reason": "Started"}),
            None,
        ),
        (
            "",
            "Event",
            json!({"metadata": meta("e.1", Some("default")), "involvedObject": {"kind": "Pod", "namespace": "other", "name": "p"}}),
            Some(("involvedObject.namespace", "FieldValueInvalid")),
        ),
        (
            "events.k8s.io",
            "Event",
            json!({"metadata": meta("e.1", Some("default")), "eventTime": "2024-01-01T00:00:00.000000Z", "type": "Normal", "reportingController": "kubelet", "reportingInstance": "n1", "action": "Pulling", "reason": "Pulling", "regarding": {"namespace": "default"}}),
            None,
        ),
        (
            "events.k8s.io",
            "Event",
            json!({"metadata": meta("e.1", Some("default")), "type": "Normal", "reportingController": "kubelet", "reportingInstance": "n1", "action": "A", "reason": "R"}),
            Some(("eventTime", "FieldValueRequired")),
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": meta("s-1", Some("default")), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
            None,
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"metadata": meta("s-1", Some("default")), "addressType": "IPv5"}),
            Some(("addressType", "FieldValueNotSupported")),
        ),
        (
            "",
            "Endpoints",
            json!({"metadata": meta("s", Some("default")), "subsets": [{"addresses": [{"ip": "nope"}]}]}),
            Some(("subsets[0].addresses[0].ip", "FieldValueInvalid")),
        ),
        (
            "policy",
            "PodDisruptionBudget",
            json!({"metadata": meta("b", Some("default")), "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
            Some(("spec", "FieldValueInvalid")),
        ),
        (
            "policy",
            "PodDisruptionBudget",
            json!({"metadata": meta("b", Some("default")), "spec": {"minAvailable": "50%"}}),
            None,
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            json!({"metadata": meta("high", None), "value": 1000}),
            None,
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            json!({"metadata": meta("system-mine", None), "value": 1}),
            Some(("metadata.name", "FieldValueForbidden")),
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            json!({"metadata": meta("huge", None), "value": 2_000_000_000}),
            Some(("value", "FieldValueForbidden")),
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"metadata": meta("np", Some("default")), "spec": {"podSelector": {}}}),
            None,
        ),
        (
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"metadata": meta("np", Some("default")), "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}}),
            Some(("spec.policyTypes[0]", "FieldValueNotSupported")),
        ),
        (
            "rbac.authorization.k8s.io",
            "Role",
            json!({"metadata": meta("r", Some("default")), "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            None,
        ),
        (
            "rbac.authorization.k8s.io",
            "Role",
            json!({"metadata": meta("r", Some("default")), "rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
            Some(("rules[0].verbs", "FieldValueRequired")),
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            json!({"metadata": meta("b", None), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}),
            Some(("roleRef.kind", "FieldValueNotSupported")),
        ),
        // kinds with only metadata rules
        (
            "",
            "ServiceAccount",
            json!({"metadata": meta("sa", Some("default"))}),
            None,
        ),
        ("", "Node", json!({"metadata": meta("node-1", None)}), None),
        (
            "apps",
            "ControllerRevision",
            json!({"metadata": meta("cr", Some("default")), "revision": 1}),
            None,
        ),
    ];
    for (i, (g, k, o, want)) in cases.into_iter().enumerate() {
        let got = create(g, k, o);
        match (want, got) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("case {i} ({k}): unexpected error {e}"),
            (Some(w), Ok(o)) => panic!("case {i} ({k}): expected {w:?}, accepted {o}"),
            (Some((field, reason)), Err(e)) => {
                assert_eq!(e.code, 422, "case {i}");
                let cs = causes(&e);
                assert!(
                    cs.iter().any(|(f, r)| f == field && r == reason),
                    "case {i} ({k}): wanted {field} {reason}, got {cs:?}"
                );
            }
        }
    }
}

#[test]
fn create_pipeline_pod() {
    let mut o = set(
        pod(),
        "/spec/containers/0/resources",
        Some(json!({"limits": {"cpu": "1", "memory": "1Gi"}})),
    );
    prepare_create(find_kind("", "Pod").unwrap(), &mut o, &NoCluster).unwrap();
    assert_eq!(
        o["status"],
        json!({"phase": "Pending", "qosClass": "Guaranteed"})
    );
    assert_eq!(o["spec"]["priority"], 0);
    assert_eq!(o["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    assert_eq!(o["spec"]["tolerations"].as_array().unwrap().len(), 2);
    assert_eq!(
        o["spec"]["containers"][0]["resources"]["requests"],
        json!({"cpu": "1", "memory": "1Gi"})
    );
    // the result is a valid k8s-openapi Pod
    let info = find_kind("", "Pod").unwrap();
    let rt = (info.roundtrip)(&o).unwrap();
    assert_eq!(rt["spec"]["containers"][0]["imagePullPolicy"], "Always");

    let err = create(
        "",
        "Pod",
        set(pod(), "/spec/priorityClassName", Some(json!("missing"))),
    )
    .unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(err.reason, "Forbidden");

    let err = create("", "Pod", set(pod(), "/spec/containers/0/image", None)).unwrap_err();
    assert_eq!(
        err.message,
        "Pod \"p\" is invalid: spec.containers[0].image: Required value"
    );
}

#[test]
fn create_results_roundtrip() {
    let objs: Vec<(&str, &str, Value)> = vec![
        ("apps", "Deployment", deployment()),
        ("apps", "StatefulSet", deployment()),
        ("apps", "DaemonSet", deployment()),
        ("apps", "ReplicaSet", deployment()),
        ("batch", "Job", job()),
        ("", "Service", service()),
        ("", "Namespace", json!({"metadata": meta("ns", None)})),
        (
            "policy",
            "PodDisruptionBudget",
            json!({"metadata": meta("b", Some("default")), "spec": {"minAvailable": 1}}),
        ),
    ];
    for (g, k, o) in objs {
        let out = create(g, k, o).unwrap_or_else(|e| panic!("{k}: {e}"));
        let info = find_kind(g, k).unwrap();
        (info.roundtrip)(&out).unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    let ns = create("", "Namespace", json!({"metadata": meta("ns", None)})).unwrap();
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
}

fn update(
    group: &str,
    kind: &str,
    sub: Option<&str>,
    new: Value,
    old: &Value,
) -> Result<Value, ApiError> {
    let mut new = new;
    prepare_update(find_kind(group, kind).unwrap(), sub, &mut new, old)?;
    Ok(new)
}

/// (group, kind, stored object, update, expected (field, reason); None = accepted)
type UpdateCase = (
    &'static str,
    &'static str,
    Value,
    Value,
    Option<(&'static str, &'static str)>,
);

#[test]
fn update_immutability_table() {
    let p = create("", "Pod", set(pod(), "/metadata/uid", Some(json!("u1")))).unwrap();
    let pt = create(
        "",
        "Pod",
        set(
            pod(),
            "/spec/tolerations",
            Some(json!([{"key": "k", "operator": "Exists"}])),
        ),
    )
    .unwrap();
    let d = create("apps", "Deployment", deployment()).unwrap();
    let j = create("batch", "Job", job()).unwrap();
    let mut svc = create("", "Service", service()).unwrap();
    svc["spec"]["clusterIP"] = json!("10.96.0.10");
    svc["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    let cm = create(
        "",
        "ConfigMap",
        json!({"metadata": meta("cm", Some("default")), "data": {"a": "1"}, "immutable": true}),
    )
    .unwrap();
    let sec = create(
        "",
        "Secret",
        json!({"metadata": meta("s", Some("default")), "data": {"a": "MQ=="}}),
    )
    .unwrap();
    let isec = create(
        "",
        "Secret",
        json!({"metadata": meta("s", Some("default")), "data": {"a": "MQ=="}, "immutable": true}),
    )
    .unwrap();
    let mut pvc = create("", "PersistentVolumeClaim", json!({"metadata": meta("c", Some("default")), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    pvc["status"]["phase"] = json!("Bound");
    let sts = create("apps", "StatefulSet", deployment()).unwrap();
    let pc = create(
        "scheduling.k8s.io",
        "PriorityClass",
        json!({"metadata": meta("high", None), "value": 10}),
    )
    .unwrap();
    let rb = create("rbac.authorization.k8s.io", "RoleBinding", json!({"metadata": meta("b", Some("default")), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}})).unwrap();
    let sc = create(
        "storage.k8s.io",
        "StorageClass",
        json!({"metadata": meta("sc", None), "provisioner": "x.io/p", "parameters": {"a": "b"}}),
    )
    .unwrap();
    let es = create(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"metadata": meta("s-1", Some("default")), "addressType": "IPv4"}),
    )
    .unwrap();

    let cases: Vec<UpdateCase> = vec![
        // metadata
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/metadata/labels", Some(json!({"a": "b"}))),
            None,
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/metadata/name", Some(json!("other"))),
            Some(("metadata.name", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/metadata/namespace", Some(json!("other"))),
            Some(("metadata.namespace", "FieldValueInvalid")),
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/metadata/uid", Some(json!("u2"))),
            Some(("metadata.uid", "FieldValueInvalid")),
        ),
        // pod spec
        (
            "",
            "Pod",
            p.clone(),
            set(
                p.clone(),
                "/spec/containers/0/image",
                Some(json!("nginx:1.27")),
            ),
            None,
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/spec/activeDeadlineSeconds", Some(json!(30))),
            None,
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(
                p.clone(),
                "/spec/tolerations/2",
                Some(json!({"key": "k", "operator": "Exists"})),
            ),
            None,
        ),
        (
            "",
            "Pod",
            pt.clone(),
            set(pt.clone(), "/spec/tolerations", Some(json!([]))),
            Some(("spec.tolerations", "FieldValueForbidden")),
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/spec/restartPolicy", Some(json!("Never"))),
            Some(("spec", "FieldValueForbidden")),
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(
                p.clone(),
                "/spec/containers/0/ports",
                Some(json!([{"containerPort": 80}])),
            ),
            Some(("spec", "FieldValueForbidden")),
        ),
        (
            "",
            "Pod",
            p.clone(),
            set(
                p.clone(),
                "/spec/containers/1",
                Some(json!({"name": "d", "image": "x"})),
            ),
            Some(("spec.containers", "FieldValueForbidden")),
        ),
        // status kept on main-resource update
        (
            "",
            "Pod",
            p.clone(),
            set(p.clone(), "/status/phase", Some(json!("Running"))),
            None,
        ),
        // workloads
        (
            "apps",
            "Deployment",
            d.clone(),
            set(d.clone(), "/spec/replicas", Some(json!(3))),
            None,
        ),
        (
            "apps",
            "Deployment",
            d.clone(),
            set(
                d.clone(),
                "/spec/template/spec/containers/0/image",
                Some(json!("nginx:2")),
            ),
            None,
        ),
        (
            "apps",
            "Deployment",
            d.clone(),
            set(
                set(
                    d.clone(),
                    "/spec/selector/matchLabels/tier",
                    Some(json!("x")),
                ),
                "/spec/template/metadata/labels/tier",
                Some(json!("x")),
            ),
            Some(("spec.selector", "FieldValueInvalid")),
        ),
        (
            "apps",
            "StatefulSet",
            sts.clone(),
            set(sts.clone(), "/spec/replicas", Some(json!(3))),
            None,
        ),
        (
            "apps",
            "StatefulSet",
            sts.clone(),
            set(sts.clone(), "/spec/serviceName", Some(json!("other"))),
            Some(("spec", "FieldValueForbidden")),
        ),
        (
            "batch",
            "Job",
            j.clone(),
            set(j.clone(), "/spec/suspend", Some(json!(true))),
            None,
        ),
        (
            "batch",
            "Job",
            j.clone(),
            set(
                j.clone(),
                "/spec/template/spec/containers/0/image",
                Some(json!("busybox:2")),
            ),
            Some(("spec.template", "FieldValueInvalid")),
        ),
        (
            "batch",
            "Job",
            j.clone(),
            set(j.clone(), "/spec/selector/matchLabels/x", Some(json!("y"))),
            Some(("spec.selector", "FieldValueInvalid")),
        ),
        (
            "batch",
            "Job",
            j.clone(),
            set(j.clone(), "/spec/completions", Some(json!(3))),
            Some(("spec.completions", "FieldValueInvalid")),
        ),
        // services
        (
            "",
            "Service",
            svc.clone(),
            set(svc.clone(), "/spec/clusterIP", None),
            None,
        ),
        (
            "",
            "Service",
            svc.clone(),
            set(svc.clone(), "/spec/clusterIP", Some(json!("10.96.0.11"))),
            Some(("spec.clusterIPs[0]", "FieldValueInvalid")),
        ),
        (
            "",
            "Service",
            svc.clone(),
            set(svc.clone(), "/spec/ports/0/port", Some(json!(8080))),
            None,
        ),
        // immutable data
        (
            "",
            "ConfigMap",
            cm.clone(),
            set(cm.clone(), "/metadata/labels", Some(json!({"a": "b"}))),
            None,
        ),
        (
            "",
            "ConfigMap",
            cm.clone(),
            set(cm.clone(), "/data/a", Some(json!("2"))),
            Some(("data", "FieldValueForbidden")),
        ),
        (
            "",
            "ConfigMap",
            cm.clone(),
            set(cm.clone(), "/immutable", Some(json!(false))),
            Some(("immutable", "FieldValueForbidden")),
        ),
        (
            "",
            "Secret",
            sec.clone(),
            set(sec.clone(), "/data/a", Some(json!("Mg=="))),
            None,
        ),
        (
            "",
            "Secret",
            sec.clone(),
            set(
                sec.clone(),
                "/type",
                Some(json!("kubernetes.io/basic-auth")),
            ),
            Some(("type", "FieldValueInvalid")),
        ),
        (
            "",
            "Secret",
            isec.clone(),
            set(isec.clone(), "/data/a", Some(json!("Mg=="))),
            Some(("data", "FieldValueForbidden")),
        ),
        // PVC
        (
            "",
            "PersistentVolumeClaim",
            pvc.clone(),
            set(
                pvc.clone(),
                "/spec/resources/requests/storage",
                Some(json!("2Gi")),
            ),
            None,
        ),
        (
            "",
            "PersistentVolumeClaim",
            pvc.clone(),
            set(
                pvc.clone(),
                "/spec/resources/requests/storage",
                Some(json!("512Mi")),
            ),
            Some(("spec.resources.requests.storage", "FieldValueForbidden")),
        ),
        (
            "",
            "PersistentVolumeClaim",
            pvc.clone(),
            set(
                pvc.clone(),
                "/spec/accessModes",
                Some(json!(["ReadWriteMany"])),
            ),
            Some(("spec", "FieldValueForbidden")),
        ),
        // others
        (
            "scheduling.k8s.io",
            "PriorityClass",
            pc.clone(),
            set(pc.clone(), "/value", Some(json!(11))),
            Some(("value", "FieldValueForbidden")),
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            pc.clone(),
            set(pc.clone(), "/description", Some(json!("d"))),
            None,
        ),
        (
            "rbac.authorization.k8s.io",
            "RoleBinding",
            rb.clone(),
            set(rb.clone(), "/roleRef/name", Some(json!("r2"))),
            Some(("roleRef", "FieldValueInvalid")),
        ),
        (
            "storage.k8s.io",
            "StorageClass",
            sc.clone(),
            set(sc.clone(), "/parameters/a", Some(json!("c"))),
            Some(("parameters", "FieldValueForbidden")),
        ),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            es.clone(),
            set(es.clone(), "/addressType", Some(json!("IPv6"))),
            Some(("addressType", "FieldValueInvalid")),
        ),
    ];
    for (i, (g, k, old, new, want)) in cases.into_iter().enumerate() {
        match (want, update(g, k, None, new, &old)) {
            (None, Ok(_)) => {}
            (None, Err(e)) => panic!("case {i} ({k}): unexpected error {e}"),
            (Some(w), Ok(o)) => panic!("case {i} ({k}): expected {w:?}, accepted {o}"),
            (Some((field, reason)), Err(e)) => {
                let cs = causes(&e);
                assert!(
                    cs.iter().any(|(f, r)| f == field && r == reason),
                    "case {i} ({k}): wanted {field} {reason}, got {cs:?}"
                );
            }
        }
    }
}

#[test]
fn update_main_and_status() {
    let p = create("", "Pod", pod()).unwrap();
    // main resource keeps the stored status
    let out = update(
        "",
        "Pod",
        None,
        set(p.clone(), "/status/phase", Some(json!("Running"))),
        &p,
    )
    .unwrap();
    assert_eq!(out["status"]["phase"], "Pending");
    // status subresource keeps spec, takes status
    let new = set(
        set(p.clone(), "/status/phase", Some(json!("Running"))),
        "/spec/containers/0/image",
        Some(json!("other")),
    );
    let out = update("", "Pod", Some("status"), new, &p).unwrap();
    assert_eq!(out["status"]["phase"], "Running");
    assert_eq!(out["spec"]["containers"][0]["image"], "nginx");
    // status update may change labels
    let out = update(
        "",
        "Pod",
        Some("status"),
        set(p.clone(), "/metadata/labels", Some(json!({"x": "y"}))),
        &p,
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"]["x"], "y");
    // replaying the original manifest regains the default tolerations and priority
    let out = update("", "Pod", None, set(pod(), "/metadata/uid", None), &p);
    assert!(out.is_ok(), "{out:?}");
    // unsupported subresource
    assert_eq!(
        update("", "Pod", Some("binding"), p.clone(), &p)
            .unwrap_err()
            .code,
        400
    );
    // namespace finalize
    let ns = create("", "Namespace", json!({"metadata": meta("ns", None)})).unwrap();
    let out = update(
        "",
        "Namespace",
        Some("finalize"),
        set(ns.clone(), "/spec/finalizers", Some(json!([]))),
        &ns,
    )
    .unwrap();
    assert_eq!(out["spec"]["finalizers"], json!([]));
    // main update of a namespace can't drop the finalizer
    let out = update(
        "",
        "Namespace",
        None,
        set(ns.clone(), "/spec/finalizers", Some(json!([]))),
        &ns,
    )
    .unwrap();
    assert_eq!(out["spec"]["finalizers"], json!(["kubernetes"]));
}
