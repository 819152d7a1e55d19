//! The Node authorizer (upstream's plugin/pkg/auth/authorizer/node): a kubelet's identity
//! (`system:node:<name>` in `system:nodes`) may read a Secret, ConfigMap, PersistentVolumeClaim,
//! PersistentVolume (through a claim), ResourceClaim, or create a token for a ServiceAccount, only
//! when a pod bound to that node references it; its Lease only in `kube-node-lease` under its own
//! name. Every other request is checked against the `system:node` ClusterRole's rules, as
//! upstream's `nodeRules`. Upstream keeps a graph maintained from watches; here each decision
//! scans the pods cache for pods whose `spec.nodeName` is the node (the same objects, fresh), and
//! follows references from them — simpler, and O(pods) per graph-guarded request.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::authz::Attributes;
use super::{rbac, UserInfo, NODES_GROUP, NODE_USER_PREFIX};
use crate::cacher::Filter;
use crate::registry::Registry;
use crate::resources;

/// The node a user is, if it is a node (upstream's `NodeIdentifier`).
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_USER_PREFIX)
}

/// What the Node authorizer decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No opinion (later authorizers may still allow), with upstream's reason.
    NoOpinion(String),
}

/// Objects one pod references, by kind (names in the pod's namespace).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodReferences {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
    pub claims: BTreeSet<String>,
    pub resource_claims: BTreeSet<String>,
    pub service_account: Option<String>,
}

fn name_at(v: &Value, field: &str, out: &mut BTreeSet<String>) {
    if let Some(n) = v[field].as_str().filter(|n| !n.is_empty()) {
        out.insert(n.to_string());
    }
}

/// The references of a pod, as upstream's graph_populator adds edges for: image pull secrets,
/// secret/configMap/projected volumes and the secret references of other volume sources,
/// env and envFrom of every container, claims (also the generated claims of ephemeral volumes),
/// resource claims, and the service account.
pub fn pod_references(pod: &Value) -> PodReferences {
    let mut r = PodReferences::default();
    let spec = &pod["spec"];
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        name_at(s, "name", &mut r.secrets);
    }
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    for v in spec["volumes"].as_array().into_iter().flatten() {
        name_at(&v["secret"], "secretName", &mut r.secrets);
        name_at(&v["configMap"], "name", &mut r.config_maps);
        name_at(&v["persistentVolumeClaim"], "claimName", &mut r.claims);
        if v["ephemeral"].is_object() {
            if let Some(vn) = v["name"].as_str() {
                r.claims.insert(format!("{pod_name}-{vn}"));
            }
        }
        for src in v["projected"]["sources"].as_array().into_iter().flatten() {
            name_at(&src["secret"], "name", &mut r.secrets);
            name_at(&src["configMap"], "name", &mut r.config_maps);
        }
        name_at(&v["azureFile"], "secretName", &mut r.secrets);
        name_at(&v["csi"]["nodePublishSecretRef"], "name", &mut r.secrets);
        for src in [
            "cephfs",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
        ] {
            name_at(&v[src]["secretRef"], "name", &mut r.secrets);
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["envFrom"].as_array().into_iter().flatten() {
                name_at(&e["secretRef"], "name", &mut r.secrets);
                name_at(&e["configMapRef"], "name", &mut r.config_maps);
            }
            for e in c["env"].as_array().into_iter().flatten() {
                name_at(&e["valueFrom"]["secretKeyRef"], "name", &mut r.secrets);
                name_at(
                    &e["valueFrom"]["configMapKeyRef"],
                    "name",
                    &mut r.config_maps,
                );
            }
        }
    }
    for c in spec["resourceClaims"].as_array().into_iter().flatten() {
        name_at(c, "resourceClaimName", &mut r.resource_claims);
    }
    for c in pod["status"]["resourceClaimStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        name_at(c, "resourceClaimName", &mut r.resource_claims);
    }
    r.service_account = Some(
        spec["serviceAccountName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string(),
    );
    r
}

/// The pods bound to `node`, from the pods cache (after it caught up with acknowledged writes).
pub async fn pods_on(registry: &Registry, node: &str) -> Vec<Value> {
    let info = resources::find("", "v1", "pods").expect("pods are served");
    let cacher = registry.cacher(info);
    let _ = cacher.wait_fresh().await;
    let node = node.to_string();
    let on_node: Filter = Arc::new(move |o| o.value["spec"]["nodeName"].as_str() == Some(&node));
    cacher
        .list(&Registry::key(info, "", ""), &on_node, None, 0)
        .items
        .iter()
        .map(|o| o.value.clone())
        .collect()
}

fn cached(registry: &Registry, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let info = resources::find("", "v1", plural)?;
    registry
        .cacher(info)
        .get(&Registry::key(info, ns, name))
        .map(|o| o.value.clone())
}

fn no_relationship(node: &str) -> Decision {
    Decision::NoOpinion(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

/// The kinds of named references a pod holds.
#[derive(Debug, Clone, Copy)]
enum RefKind {
    Secret,
    ConfigMap,
    Claim,
    ResourceClaim,
}

impl PodReferences {
    fn of(&self, kind: RefKind) -> &BTreeSet<String> {
        match kind {
            RefKind::Secret => &self.secrets,
            RefKind::ConfigMap => &self.config_maps,
            RefKind::Claim => &self.claims,
            RefKind::ResourceClaim => &self.resource_claims,
        }
    }
}

/// Whether a pod on `node` in namespace `ns` references the object `name` of `kind`.
async fn related(registry: &Registry, node: &str, ns: &str, kind: RefKind, name: &str) -> bool {
    pods_on(registry, node).await.iter().any(|p| {
        p["metadata"]["namespace"].as_str() == Some(ns) && pod_references(p).of(kind).contains(name)
    })
}

/// Decides a request of node `node`, or None when the resource is not subdivided by the Node
/// authorizer (the caller then checks the `system:node` rules).
pub async fn authorize(registry: &Registry, node: &str, a: &Attributes) -> Option<Decision> {
    if !a.resource_request {
        return None;
    }
    let d = match (a.group.as_str(), a.resource.as_str()) {
        ("", "secrets") | ("", "configmaps") => {
            if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
                return Some(Decision::NoOpinion(
                    "can only read resources of this type".to_string(),
                ));
            }
            if let Some(d) = single_object(a, node) {
                return Some(d);
            }
            let kind = if a.resource == "secrets" {
                RefKind::Secret
            } else {
                RefKind::ConfigMap
            };
            if related(registry, node, &a.namespace, kind, &a.name).await {
                Decision::Allow
            } else {
                no_relationship(node)
            }
        }
        ("", "persistentvolumeclaims") | ("resource.k8s.io", "resourceclaims") => {
            if let Some(d) = get_only(a, node) {
                return Some(d);
            }
            let kind = if a.resource == "persistentvolumeclaims" {
                RefKind::Claim
            } else {
                RefKind::ResourceClaim
            };
            if related(registry, node, &a.namespace, kind, &a.name).await {
                Decision::Allow
            } else {
                no_relationship(node)
            }
        }
        ("", "persistentvolumes") => {
            if let Some(d) = get_only(a, node) {
                return Some(d);
            }
            let mut found = false;
            for p in pods_on(registry, node).await {
                let ns = p["metadata"]["namespace"].as_str().unwrap_or("");
                for c in pod_references(&p).claims {
                    if let Some(pvc) = cached(registry, "persistentvolumeclaims", ns, &c) {
                        if pvc["spec"]["volumeName"].as_str() == Some(&a.name) {
                            found = true;
                        }
                    }
                }
            }
            if found {
                Decision::Allow
            } else {
                no_relationship(node)
            }
        }
        ("", "serviceaccounts") => {
            if a.verb != "create" || a.name.is_empty() {
                return Some(Decision::NoOpinion(
                    "can only create tokens for individual service accounts".into(),
                ));
            }
            if a.subresource != "token" {
                return Some(Decision::NoOpinion(
                    "can only create token subresource of serviceaccount".into(),
                ));
            }
            let sa = pods_on(registry, node).await.iter().any(|p| {
                p["metadata"]["namespace"].as_str() == Some(&a.namespace)
                    && pod_references(p).service_account.as_deref() == Some(&a.name)
            });
            if sa {
                Decision::Allow
            } else {
                no_relationship(node)
            }
        }
        ("coordination.k8s.io", "leases") => {
            if !matches!(
                a.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            ) {
                return Some(Decision::NoOpinion(
                    "can only get, create, update, patch, or delete a node lease".to_string(),
                ));
            }
            if a.namespace != "kube-node-lease" {
                return Some(Decision::NoOpinion(
                    "can only access leases in the kube-node-lease namespace".into(),
                ));
            }
            if a.name != node && !(a.verb == "create" && a.name.is_empty()) {
                return Some(Decision::NoOpinion(
                    "can only access node lease with the same name as the requesting node".into(),
                ));
            }
            Decision::Allow
        }
        _ => return None,
    };
    Some(d)
}

/// Checks shared by graph-guarded reads: a namespaced, named object, no subresource
/// (list/watch only of one object, by a `metadata.name` field selector).
fn single_object(a: &Attributes, _node: &str) -> Option<Decision> {
    if !a.subresource.is_empty() {
        return Some(Decision::NoOpinion(format!(
            "cannot {} subresource {}",
            a.verb, a.subresource
        )));
    }
    if a.name.is_empty() {
        return Some(Decision::NoOpinion(
            "No Object name found, expected name".into(),
        ));
    }
    None
}

fn get_only(a: &Attributes, node: &str) -> Option<Decision> {
    if a.verb != "get" {
        return Some(Decision::NoOpinion(
            "can only get individual resources of this type".to_string(),
        ));
    }
    single_object(a, node)
}

/// The `system:node` ClusterRole's rules (upstream's `NodeRules`), for requests the graph does
/// not subdivide.
pub fn node_rules_allow(registry: &Registry, a: &Attributes) -> bool {
    let role = serde_json::json!({"metadata": {"name": "system:node"},
        "rules": super::bootstrap_policy::cluster_roles().into_iter()
            .find(|r| r["metadata"]["name"] == "system:node")
            .map(|r| r["rules"].clone()).unwrap_or_default()});
    rbac::cluster_role_rules(registry, &role)
        .iter()
        .any(|r| rbac::rule_allows(a, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_of_a_pod_cover_volumes_env_pull_secrets_and_claims() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "serviceAccountName": "builder",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "configMap": {"name": "vol-cm"}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "projected": {"sources": [
                        {"secret": {"name": "proj-secret"}},
                        {"configMap": {"name": "proj-cm"}},
                        {"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "f", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi-secret"}}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "C", "value": "plain"}],
                    "envFrom": [{"configMapRef": {"name": "envfrom-cm"}}]}],
                "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"}]
            },
            "status": {"resourceClaimStatuses": [{"name": "t", "resourceClaimName": "p-t-x"}]}
        });
        let r = pod_references(&pod);
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            r.secrets,
            set(&[
                "pull",
                "vol-secret",
                "proj-secret",
                "csi-secret",
                "init-env",
                "env-secret"
            ])
        );
        assert_eq!(
            r.config_maps,
            set(&["vol-cm", "proj-cm", "env-cm", "envfrom-cm"])
        );
        assert_eq!(r.claims, set(&["data", "p-e"]));
        assert_eq!(r.resource_claims, set(&["gpu-claim", "p-t-x"]));
        assert_eq!(r.service_account.as_deref(), Some("builder"));
        let bare = pod_references(&json!({"metadata": {"name": "q"}, "spec": {}}));
        assert!(bare.secrets.is_empty());
        assert_eq!(bare.service_account.as_deref(), Some("default"));
    }

    #[test]
    fn node_identity_needs_the_group_and_prefix() {
        assert_eq!(
            node_name(&UserInfo::new("system:node:n1", &[NODES_GROUP])),
            Some("n1")
        );
        assert_eq!(node_name(&UserInfo::new("system:node:n1", &[])), None);
        assert_eq!(node_name(&UserInfo::new("jane", &[NODES_GROUP])), None);
    }
}
