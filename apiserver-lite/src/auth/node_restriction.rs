//! The NodeRestriction admission plugin (upstream's plugin/pkg/admission/noderestriction): what
//! the `system:node` rules let any node do, narrowed to the node's own objects. A node creates,
//! updates and deletes only its own Node, without changing its taints or setting labels in the
//! `kubernetes.io` / `k8s.io` namespaces other than the kubelet's own; creates only mirror pods
//! bound to itself; deletes, updates the status of and evicts only pods bound to itself; and
//! writes only its own Lease. Runs before the request reaches the registry, against the cached
//! current object. Rejections are 403 as upstream's `admission.NewForbidden`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::node::node_name;
use super::UserInfo;
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::resources;
use crate::status::ApiError;

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Labels in the `kubernetes.io` / `k8s.io` namespaces a kubelet may set on its Node (upstream's
/// `kubeletapis.KubeletLabels`, plus the `kubelet.kubernetes.io` / `node.kubernetes.io`
/// namespaces).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "kubernetes.io/os",
    "kubernetes.io/arch",
];

/// Whether a node may not set or change the label `key` (upstream's `isForbiddenLabel`).
pub fn is_forbidden_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else {
        return false;
    };
    if prefix == "node-restriction.kubernetes.io" {
        return true;
    }
    let restricted_ns = prefix == "kubernetes.io"
        || prefix.ends_with(".kubernetes.io")
        || prefix == "k8s.io"
        || prefix.ends_with(".k8s.io");
    if !restricted_ns {
        return false;
    }
    if KUBELET_LABELS.contains(&key) {
        return false;
    }
    let allowed_ns = ["kubelet.kubernetes.io", "node.kubernetes.io"];
    !allowed_ns
        .iter()
        .any(|ns| prefix == *ns || prefix.ends_with(&format!(".{ns}")))
}

/// Labels whose value differs between `new` and `old` (added, changed or removed).
fn modified_labels(new: &Value, old: &Value) -> BTreeSet<String> {
    let empty = serde_json::Map::new();
    let n = new.as_object().unwrap_or(&empty);
    let o = old.as_object().unwrap_or(&empty);
    n.keys()
        .chain(o.keys())
        .filter(|k| n.get(*k) != o.get(*k))
        .cloned()
        .collect()
}

fn cached(registry: &Registry, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let info = resources::find("", "v1", plural)?;
    registry
        .cacher(info)
        .get(&Registry::key(info, ns, name))
        .map(|o| o.value.clone())
}

/// Admits (or refuses) a write of a node's identity. `body` is the decoded request body.
pub async fn admit(
    registry: &Registry,
    user: &UserInfo,
    info: &RequestInfo,
    body: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    if !info.is_resource_request || matches!(info.verb.as_str(), "get" | "list" | "watch") {
        return Ok(());
    }
    let refuse = |why: String| {
        let name = if info.name.is_empty() {
            body.and_then(|b| b["metadata"]["name"].as_str())
                .unwrap_or("")
                .to_string()
        } else {
            info.name.clone()
        };
        Err(ApiError::forbidden(
            &info.group,
            &info.resource,
            &name,
            &why,
        ))
    };
    match (info.group.as_str(), info.resource.as_str()) {
        ("", "nodes") => {
            let target = if info.verb == "create" {
                body.and_then(|b| b["metadata"]["name"].as_str())
                    .unwrap_or("")
            } else {
                info.name.as_str()
            };
            if target != node {
                return refuse(format!(
                    "node {node:?} is not allowed to modify node {target:?}"
                ));
            }
            let Some(body) = body else { return Ok(()) };
            let labels = &body["metadata"]["labels"];
            if info.verb == "create" {
                let mut bad: Vec<&String> = labels
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter(|k| is_forbidden_label(k))
                    .collect();
                bad.sort();
                if !bad.is_empty() {
                    let list: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
                    return refuse(format!(
                        "node {node:?} is not allowed to set the following labels: {}",
                        list.join(", ")
                    ));
                }
                return Ok(());
            }
            if !matches!(info.verb.as_str(), "update" | "patch") {
                return Ok(());
            }
            let Some(old) = cached(registry, "nodes", "", node) else {
                return Ok(());
            };
            // A PUT carries the whole object; a merge or strategic patch only what it changes
            // (null removes a label).
            let changed: BTreeSet<String> = if info.verb == "update" {
                modified_labels(labels, &old["metadata"]["labels"])
            } else {
                labels
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.iter())
                    .filter(|(k, v)| old["metadata"]["labels"].get(k.as_str()) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            let bad: Vec<&str> = changed
                .iter()
                .filter(|k| is_forbidden_label(k))
                .map(|s| s.as_str())
                .collect();
            if !bad.is_empty() {
                return refuse(format!(
                    "node {node:?} is not allowed to modify labels: {}",
                    bad.join(", ")
                ));
            }
            let taints_sent = if info.verb == "update" {
                info.subresource.is_empty()
            } else {
                body["spec"].get("taints").is_some()
            };
            let norm = |t: &Value| {
                if t.is_null() {
                    Value::Array(vec![])
                } else {
                    t.clone()
                }
            };
            if taints_sent && norm(&body["spec"]["taints"]) != norm(&old["spec"]["taints"]) {
                return refuse(format!("node {node:?} is not allowed to modify taints"));
            }
            Ok(())
        }
        ("", "pods") => {
            let bound_here = |p: &Value| p["spec"]["nodeName"].as_str() == Some(node);
            match (info.verb.as_str(), info.subresource.as_str()) {
                ("create", "") => {
                    let Some(pod) = body else { return Ok(()) };
                    if pod["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
                        return refuse(format!(
                            "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node {node:?} can only create mirror pods"
                        ));
                    }
                    if !bound_here(pod) {
                        return refuse(format!(
                            "node {node:?} can only create pods with spec.nodeName set to itself"
                        ));
                    }
                    Ok(())
                }
                ("delete", "") | ("update" | "patch", "status") | ("create", "eviction") => {
                    let Some(pod) = cached(registry, "pods", &info.namespace, &info.name) else {
                        // Not found is the registry's answer to give.
                        return Ok(());
                    };
                    if bound_here(&pod) {
                        return Ok(());
                    }
                    let what = match info.subresource.as_str() {
                        "status" => "update pod status for",
                        "eviction" => "evict",
                        _ => "delete",
                    };
                    refuse(format!(
                        "node {node:?} can only {what} pods with spec.nodeName set to itself"
                    ))
                }
                _ => Ok(()),
            }
        }
        ("coordination.k8s.io", "leases") if info.verb == "create" => {
            let name = body
                .and_then(|b| b["metadata"]["name"].as_str())
                .unwrap_or("");
            if info.namespace != "kube-node-lease" || name != node {
                return refuse(
                    "can only access node lease with the same name as the requesting node"
                        .to_string(),
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubelet_labels_are_allowed_and_other_kubernetes_io_labels_are_not() {
        for ok in [
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
            "node.kubernetes.io/instance-type",
            "kubelet.kubernetes.io/foo",
            "x.node.kubernetes.io/bar",
            "example.com/anything",
            "plain",
        ] {
            assert!(!is_forbidden_label(ok), "{ok}");
        }
        for bad in [
            "node-role.kubernetes.io/control-plane",
            "node-restriction.kubernetes.io/pool",
            "kubernetes.io/custom",
            "foo.k8s.io/x",
        ] {
            assert!(is_forbidden_label(bad), "{bad}");
        }
        let changed = modified_labels(
            &json!({"a": "1", "b": "2"}),
            &json!({"a": "1", "b": "3", "c": "4"}),
        );
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), vec!["b", "c"]);
    }
}
