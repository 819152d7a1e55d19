//! `PrepareForCreate` and `PrepareForUpdate` of the registry strategies
//! (pkg/registry/*/*/strategy.go): what a create may set in `status`, what an update of the
//! main resource or of the `status` subresource may change, and the Job selector generation
//! (pkg/registry/batch/job/strategy.go `generateSelector`).

use super::defaults::obj_in;
use super::util::Get;
use super::util::Ptr;
use super::util::{each_obj_mut, is_empty, obj, quantity};
use crate::resources::ResourceInfo;
use serde_json::{json, Map, Value};

/// Metadata fields a status update may change; everything else in `metadata` is kept.
const STATUS_MUTABLE_META: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// Labels upstream puts on Job pod templates when it generates the selector.
pub const JOB_NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];
pub const CONTROLLER_UID_LABELS: [&str; 2] =
    ["controller-uid", "batch.kubernetes.io/controller-uid"];

pub fn for_create(info: &ResourceInfo, o: &mut Value) {
    match (info.group, info.kind) {
        ("", "Pod") => {
            let qos = pod_qos(o);
            let gated = !is_empty(o.g("spec").and_then(|s| s.g("schedulingGates")));
            let mut status = Map::new();
            status.insert("phase".into(), Value::String("Pending".into()));
            status.insert("qosClass".into(), Value::String(qos.into()));
            if gated {
                status.insert(
                    "conditions".into(),
                    json!([{
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "SchedulingGated",
                        "message": "Scheduling is blocked due to non-empty scheduling gates",
                    }]),
                );
            }
            o["status"] = Value::Object(status);
        }
        // Nodes may set all fields, status included, on create.
        ("", "Node") => {}
        ("", "Namespace") => {
            o["status"] = json!({"phase": "Active"});
            let spec = obj(o, "spec");
            let fins = spec.entry("finalizers").or_insert_with(|| json!([]));
            if !fins.is_array() {
                *fins = json!([]);
            }
            let list = fins.as_array_mut().expect("array");
            if !list.iter().any(|f| f == "kubernetes") {
                list.push(json!("kubernetes"));
            }
        }
        ("", "PersistentVolume") | ("", "PersistentVolumeClaim") => {
            o["status"] = json!({"phase": "Pending"});
        }
        ("", "Service") | ("networking.k8s.io", "Ingress") => {
            o["status"] = json!({"loadBalancer": {}});
        }
        ("batch", "Job") => {
            o["status"] = json!({});
            if o.ptr("/spec/manualSelector") != Some(&json!(true)) {
                generate_job_selector(o);
            }
        }
        _ => {
            if info.has_subresource("status") {
                o["status"] = json!({});
            }
        }
    }
}

/// `generateSelector`: job-name and controller-uid labels on the template and a
/// `batch.kubernetes.io/controller-uid` selector. Needs `metadata.uid`; without one it does
/// nothing (validation then reports the missing selector).
fn generate_job_selector(o: &mut Value) {
    let uid = o
        .ptr("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if uid.is_empty() {
        return;
    }
    let name = o
        .ptr("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec = obj(o, "spec");
    let labels = obj_in(obj_in(obj_in(spec, "template"), "metadata"), "labels");
    for k in JOB_NAME_LABELS {
        labels.entry(k).or_insert_with(|| json!(name));
    }
    for k in CONTROLLER_UID_LABELS {
        labels.entry(k).or_insert_with(|| json!(uid));
    }
    let ml = obj_in(obj_in(spec, "selector"), "matchLabels");
    ml.entry(CONTROLLER_UID_LABELS[1])
        .or_insert_with(|| json!(uid));
}

/// `qos.GetPodQOS` over cpu and memory of containers and init containers.
pub fn pod_qos(pod: &Value) -> &'static str {
    // Summed requests and limits, indexed cpu then memory (None: no positive quantity seen).
    let mut sum_req: [Option<i128>; 2] = [None; 2];
    let mut sum_lim: [Option<i128>; 2] = [None; 2];
    let mut guaranteed = true;
    let slot = |k: &str| match k {
        "cpu" => Some(0),
        "memory" => Some(1),
        _ => None,
    };
    let add = |acc: &mut [Option<i128>; 2], i: usize, v: i128| {
        acc[i] = Some(match acc[i] {
            Some(e) => e + v,
            None => v,
        });
    };
    let spec = pod.g("spec").unwrap_or(&Value::Null);
    for key in ["containers", "initContainers"] {
        for c in super::util::arr(spec, key) {
            let res = c.g("resources").unwrap_or(&Value::Null);
            for (k, v) in super::util::entries(res, "requests") {
                let Some(i) = slot(k) else { continue };
                if let Some(q) = quantity(v).filter(|q| *q > 0) {
                    add(&mut sum_req, i, q);
                }
            }
            let mut found = [false; 2];
            for (k, v) in super::util::entries(res, "limits") {
                let Some(i) = slot(k) else { continue };
                if let Some(q) = quantity(v).filter(|q| *q > 0) {
                    found[i] = true;
                    add(&mut sum_lim, i, q);
                }
            }
            if !(found[0] && found[1]) {
                guaranteed = false;
            }
        }
    }
    let count = |acc: &[Option<i128>; 2]| acc.iter().filter(|v| v.is_some()).count();
    if count(&sum_req) == 0 && count(&sum_lim) == 0 {
        return "BestEffort";
    }
    if guaranteed {
        for (r, l) in sum_req.iter().zip(&sum_lim) {
            if let Some(r) = r {
                if l.as_ref() != Some(r) {
                    guaranteed = false;
                    break;
                }
            }
        }
    }
    if guaranteed && count(&sum_req) == count(&sum_lim) {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// PrepareForUpdate of the main resource.
pub fn for_update(info: &ResourceInfo, o: &mut Value, old: &Value) {
    keep_system_meta(o, old);
    if info.has_subresource("status") {
        match old.g("status") {
            Some(s) => o["status"] = s.clone(),
            None => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    match (info.group, info.kind) {
        ("", "Namespace") => {
            // Finalizers change only through the finalize subresource.
            let fins = old.ptr("/spec/finalizers").cloned();
            let spec = obj(o, "spec");
            match fins {
                Some(f) => {
                    spec.insert("finalizers".into(), f);
                }
                None => {
                    spec.remove("finalizers");
                }
            }
        }
        ("", "Pod") => {
            // Priority admission keeps the priority computed at create.
            let spec = obj(o, "spec");
            for k in ["priority", "preemptionPolicy"] {
                if is_empty(spec.g(k)) {
                    if let Some(v) = old.g("spec").and_then(|s| s.g(k)) {
                        spec.insert(k.into(), v.clone());
                    }
                }
            }
        }
        ("", "Service") => {
            drop_type_dependent_fields(o, old);
            keep_allocations(o, old);
        }
        _ => {}
    }
}

/// The Service strategy's `dropTypeDependentFields`: leaving NodePort/LoadBalancer drops the
/// node ports and traffic policy the update merely carried over from the old object.
fn drop_type_dependent_fields(o: &mut Value, old: &Value) {
    let external = |t: &str| t == "NodePort" || t == "LoadBalancer";
    let old_type = old.ptr("/spec/type").and_then(Value::as_str).unwrap_or("");
    let new_type = o.ptr("/spec/type").and_then(Value::as_str).unwrap_or("");
    if !external(old_type) || external(new_type) {
        return;
    }
    let old_spec = old.g("spec").cloned().unwrap_or(Value::Null);
    let spec = obj(o, "spec");
    for k in ["externalTrafficPolicy", "healthCheckNodePort"] {
        if spec.g(k).is_some() && spec.g(k) == old_spec.g(k) {
            spec.remove(k);
        }
    }
    let old_ports = super::util::arr(&old_spec, "ports").to_vec();
    for p in each_obj_mut(spec, "ports") {
        let carried = old_ports
            .iter()
            .any(|op| op.g("nodePort").is_some() && op.g("nodePort") == p.g("nodePort"));
        if carried {
            p.remove("nodePort");
        }
    }
}

/// The Service REST layer's `patchAllocatedValues`: an update that leaves clusterIP(s),
/// IP families or node ports empty keeps the allocated ones.
fn keep_allocations(o: &mut Value, old: &Value) {
    let old_type = old.ptr("/spec/type").and_then(Value::as_str).unwrap_or("");
    let new_type = o
        .ptr("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let new_type = new_type.as_str();
    let old_spec = old.g("spec").cloned().unwrap_or(Value::Null);
    let spec = obj(o, "spec");
    if old_type != "ExternalName" && new_type != "ExternalName" {
        for k in ["clusterIP", "clusterIPs", "ipFamilies"] {
            if is_empty(spec.g(k)) {
                if let Some(v) = old_spec.g(k).filter(|v| !is_empty(Some(v))) {
                    spec.insert(k.into(), v.clone());
                }
            }
        }
    }
    let needs_node_ports = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_node_ports(old_type) && needs_node_ports(new_type) {
        let old_ports = super::util::arr(&old_spec, "ports").to_vec();
        for p in each_obj_mut(spec, "ports") {
            let unset = matches!(p.g("nodePort"), None | Some(Value::Null))
                || p.g("nodePort") == Some(&json!(0));
            if !unset {
                continue;
            }
            if let Some(np) = old_ports
                .iter()
                .find(|op| op.g("port") == p.g("port"))
                .and_then(|op| op.g("nodePort"))
            {
                p.insert("nodePort".into(), np.clone());
            }
        }
        if is_empty(spec.g("healthCheckNodePort")) {
            if let Some(v) = old_spec.g("healthCheckNodePort") {
                spec.insert("healthCheckNodePort".into(), v.clone());
            }
        }
    }
}

/// `rest.BeforeUpdate`: uid defaults to the old one; creation and deletion timestamps can't
/// be changed by an update.
fn keep_system_meta(o: &mut Value, old: &Value) {
    let old_meta = old.g("metadata").unwrap_or(&Value::Null);
    let meta = obj(o, "metadata");
    if is_empty(meta.g("uid")) {
        if let Some(u) = old_meta.g("uid") {
            meta.insert("uid".into(), u.clone());
        }
    }
    for k in [
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.g(k) {
            Some(v) if !v.is_null() => {
                meta.insert(k.into(), v.clone());
            }
            _ => {
                meta.remove(k);
            }
        }
    }
}

/// PrepareForUpdate of the `status` subresource: everything but `status` and a few metadata
/// fields comes from the stored object.
pub fn for_status_update(info: &ResourceInfo, o: &mut Value, old: &Value) {
    let mut merged = old.clone();
    if let Some(s) = o.g("status") {
        merged["status"] = s.clone();
    } else if let Some(m) = merged.as_object_mut() {
        m.remove("status");
    }
    let new_meta = o.g("metadata").cloned().unwrap_or(Value::Null);
    let meta = obj(&mut merged, "metadata");
    for k in STATUS_MUTABLE_META {
        // Pods keep owner references: old kubelets corrupted them through pods/status.
        if info.kind == "Pod" && *k == "ownerReferences" {
            continue;
        }
        match new_meta.g(k) {
            Some(v) => {
                meta.insert((*k).into(), v.clone());
            }
            None => {
                meta.remove(*k);
            }
        }
    }
    // resourceVersion travels with the request for the lead's precondition check.
    if let Some(rv) = new_meta.g("resourceVersion") {
        meta.insert("resourceVersion".into(), rv.clone());
    }
    *o = merged;
}

/// PrepareForUpdate of `namespaces/{name}/finalize`: only `spec.finalizers` changes.
pub fn for_finalize_update(o: &mut Value, old: &Value) {
    let fins = o.ptr("/spec/finalizers").cloned();
    let rv = o.ptr("/metadata/resourceVersion").cloned();
    let mut merged = old.clone();
    let spec = obj(&mut merged, "spec");
    match fins {
        Some(f) => {
            spec.insert("finalizers".into(), f);
        }
        None => {
            spec.remove("finalizers");
        }
    }
    if let Some(rv) = rv {
        obj(&mut merged, "metadata").insert("resourceVersion".into(), rv);
    }
    *o = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find_kind;

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn qos_classes() {
        let cases = [
            (pod(json!([{"name": "a"}])), "BestEffort"),
            (
                pod(json!([{"name": "a", "resources": {"requests": {"cpu": "1"}}}])),
                "Burstable",
            ),
            (
                pod(
                    json!([{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]),
                ),
                "Guaranteed",
            ),
            (
                pod(
                    json!([{"name": "a", "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]),
                ),
                "Guaranteed",
            ),
            (
                pod(
                    json!([{"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}]),
                ),
                "Burstable",
            ),
            (
                pod(json!([{"name": "a", "resources": {"limits": {"cpu": "1"}}}])),
                "Burstable",
            ),
            (
                pod(
                    json!([{"name": "a", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}]),
                ),
                "BestEffort",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(pod_qos(&p), want, "{p}");
        }
    }

    #[test]
    fn create_status() {
        let info = |k| find_kind("", k).unwrap();
        let cases: Vec<(&ResourceInfo, Value, &str, Value)> = vec![
            (
                info("Pod"),
                json!({"spec": {"containers": []}, "status": {"phase": "Running"}}),
                "/status",
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            ),
            (
                info("Pod"),
                json!({"spec": {"containers": [], "schedulingGates": [{"name": "g"}]}}),
                "/status/conditions/0/reason",
                json!("SchedulingGated"),
            ),
            (
                info("Node"),
                json!({"status": {"capacity": {"cpu": "4"}}}),
                "/status",
                json!({"capacity": {"cpu": "4"}}),
            ),
            (
                info("Namespace"),
                json!({"status": {"phase": "Terminating"}}),
                "/status",
                json!({"phase": "Active"}),
            ),
            (
                info("Namespace"),
                json!({}),
                "/spec/finalizers",
                json!(["kubernetes"]),
            ),
            (
                info("Namespace"),
                json!({"spec": {"finalizers": ["x"]}}),
                "/spec/finalizers",
                json!(["x", "kubernetes"]),
            ),
            (
                info("Service"),
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
                "/status",
                json!({"loadBalancer": {}}),
            ),
            (
                info("PersistentVolumeClaim"),
                json!({"status": {"phase": "Bound"}}),
                "/status",
                json!({"phase": "Pending"}),
            ),
            (
                find_kind("apps", "Deployment").unwrap(),
                json!({"status": {"replicas": 3}}),
                "/status",
                json!({}),
            ),
            (
                info("ConfigMap"),
                json!({"data": {}}),
                "/status",
                Value::Null,
            ),
        ];
        for (i, (info, mut o, ptr, want)) in cases.into_iter().enumerate() {
            for_create(info, &mut o);
            assert_eq!(
                o.pointer(ptr).cloned().unwrap_or(Value::Null),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn job_selector_generation() {
        let job = find_kind("batch", "Job").unwrap();
        let mut o = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"metadata": {"labels": {"app": "pi"}}}}});
        for_create(job, &mut o);
        assert_eq!(
            o.pointer("/spec/selector/matchLabels").unwrap(),
            &json!({"batch.kubernetes.io/controller-uid": "u1"})
        );
        let labels = o.pointer("/spec/template/metadata/labels").unwrap();
        for (k, v) in [
            ("app", "pi"),
            ("job-name", "pi"),
            ("batch.kubernetes.io/job-name", "pi"),
            ("controller-uid", "u1"),
            ("batch.kubernetes.io/controller-uid", "u1"),
        ] {
            assert_eq!(labels[k], v, "{k}");
        }
        // manualSelector: nothing generated
        let mut o = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        for_create(job, &mut o);
        assert_eq!(
            o.pointer("/spec/selector/matchLabels").unwrap(),
            &json!({"a": "b"})
        );
        assert!(o.pointer("/spec/template/metadata/labels").is_none());
    }

    #[test]
    fn update_keeps_status_and_system_meta() {
        let pod = find_kind("", "Pod").unwrap();
        let old = json!({"metadata": {"name": "p", "uid": "u", "creationTimestamp": "t"}, "spec": {"priority": 0, "containers": []}, "status": {"phase": "Running"}});
        let mut new = json!({"metadata": {"name": "p"}, "spec": {"containers": []}, "status": {"phase": "Failed"}});
        for_update(pod, &mut new, &old);
        assert_eq!(new["status"], json!({"phase": "Running"}));
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["creationTimestamp"], "t");
        assert_eq!(new["spec"]["priority"], 0);

        let ns = find_kind("", "Namespace").unwrap();
        let old = json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        let mut new = json!({"metadata": {"name": "n"}, "spec": {}});
        for_update(ns, &mut new, &old);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(new["status"]["phase"], "Active");

        let svc = find_kind("", "Service").unwrap();
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"], "ports": [{"port": 80, "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        for_update(svc, &mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.0.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);

        // NodePort -> ClusterIP drops the carried-over node port and traffic policy
        let old = json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "nodePort": 30080}]}});
        let mut new = json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "nodePort": 30080}]}});
        for_update(svc, &mut new, &old);
        assert!(new["spec"].get("externalTrafficPolicy").is_none());
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn status_update_keeps_spec_and_meta() {
        let dep = find_kind("apps", "Deployment").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "labels": {"a": "1"}}, "spec": {"replicas": 1}, "status": {}});
        let mut new = json!({"metadata": {"name": "d", "uid": "other", "labels": {"a": "2"}, "resourceVersion": "7"}, "spec": {"replicas": 5}, "status": {"replicas": 1}});
        for_status_update(dep, &mut new, &old);
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["labels"]["a"], "2");
        assert_eq!(new["metadata"]["resourceVersion"], "7");

        let pod = find_kind("", "Pod").unwrap();
        let old = json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "o"}]}, "spec": {}});
        let mut new =
            json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Running"}});
        for_status_update(pod, &mut new, &old);
        assert_eq!(new["metadata"]["ownerReferences"][0]["uid"], "o");

        let mut new = json!({"metadata": {"name": "n"}, "spec": {"finalizers": []}, "status": {"phase": "Gone"}});
        for_finalize_update(
            &mut new,
            &json!({"metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}}),
        );
        assert_eq!(new["spec"]["finalizers"], json!([]));
        assert_eq!(new["status"]["phase"], "Terminating");
    }
}
