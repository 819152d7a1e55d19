//! Upstream's bootstrap RBAC policy (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`): the
//! ClusterRoles and ClusterRoleBindings every cluster starts with, created at start and
//! reconciled as upstream's `rbac/bootstrap-roles` post-start hook does: a missing object is
//! created; an existing one marked `rbac.authorization.kubernetes.io/autoupdate: "true"` gets
//! missing rules/subjects added (never removed); one whose annotation is `false` is left as the
//! user edited it.
//!
//! The component roles follow upstream's; `system:kube-controller-manager` additionally holds
//! what Capstan's controllers write, because the controller-manager runs every controller under
//! its own identity (no per-controller service-account credentials yet).

use serde_json::{json, Value};

use crate::registry::{Registry, WriteOptions};
use crate::resources;

pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn r(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn named(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "resourceNames": names, "verbs": verbs})
}

fn nr(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn role(name: &str, labels: Value, rules: Vec<Value>) -> Value {
    let mut l = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            l[k] = v.clone();
        }
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules})
}

fn aggregated(name: &str, labels: Value, selector_label: &str) -> Value {
    let mut v = role(name, labels, vec![]);
    v["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {selector_label: "true"}}]});
    v
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| {
            let mut s = json!({"kind": kind, "name": n});
            if *kind == "ServiceAccount" {
                let (ns, sa) = n.split_once('/').unwrap_or(("kube-system", n));
                s = json!({"kind": kind, "name": sa, "namespace": ns});
            } else {
                s["apiGroup"] = json!("rbac.authorization.k8s.io");
            }
            s
        })
        .collect();
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                     "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let view_core = &[
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "serviceaccounts",
        "services",
        "services/status",
        "bindings",
        "events",
        "limitranges",
        "namespaces/status",
        "pods/log",
        "pods/status",
        "replicationcontrollers/status",
        "resourcequotas",
        "resourcequotas/status",
        "namespaces",
    ];
    let apps = &[
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let batch = &["cronjobs", "cronjobs/status", "jobs", "jobs/status"];
    let autoscaling = &[
        "horizontalpodautoscalers",
        "horizontalpodautoscalers/status",
    ];
    let policy = &["poddisruptionbudgets", "poddisruptionbudgets/status"];
    let networking = &["ingresses", "ingresses/status", "networkpolicies"];
    let edit_core = &[
        "pods",
        "pods/attach",
        "pods/exec",
        "pods/portforward",
        "pods/proxy",
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "secrets",
        "serviceaccounts",
        "services",
        "services/proxy",
    ];
    let edit_apps = &[
        "daemonsets",
        "deployments",
        "deployments/rollback",
        "deployments/scale",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
        "statefulsets/scale",
    ];
    let agg = |k: &str| json!({ k: "true" });
    vec![
        role(
            "cluster-admin",
            json!({}),
            vec![r(&["*"], &["*"], &["*"]), nr(&["*"], &["*"])],
        ),
        aggregated(
            "admin",
            json!({}),
            "rbac.authorization.k8s.io/aggregate-to-admin",
        ),
        aggregated(
            "edit",
            agg("rbac.authorization.k8s.io/aggregate-to-admin"),
            "rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        aggregated(
            "view",
            agg("rbac.authorization.k8s.io/aggregate-to-edit"),
            "rbac.authorization.k8s.io/aggregate-to-view",
        ),
        role(
            "system:aggregate-to-admin",
            agg("rbac.authorization.k8s.io/aggregate-to-admin"),
            vec![
                r(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                r(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                    RW,
                ),
            ],
        ),
        role(
            "system:aggregate-to-edit",
            agg("rbac.authorization.k8s.io/aggregate-to-edit"),
            vec![
                r(
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                    READ,
                ),
                r(&[""], &["serviceaccounts"], &["impersonate"]),
                r(&[""], edit_core, WRITE),
                r(&[""], &["serviceaccounts/token"], &["create"]),
                r(&["apps"], edit_apps, WRITE),
                r(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
                r(&["batch"], &["cronjobs", "jobs"], WRITE),
                r(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    WRITE,
                ),
                r(&["policy"], &["poddisruptionbudgets"], WRITE),
                r(&["discovery.k8s.io"], &["endpointslices"], WRITE),
                r(&["coordination.k8s.io"], &["leases"], RW),
            ],
        ),
        role(
            "system:aggregate-to-view",
            agg("rbac.authorization.k8s.io/aggregate-to-view"),
            vec![
                r(&[""], view_core, READ),
                r(&["apps"], apps, READ),
                r(&["autoscaling"], autoscaling, READ),
                r(&["batch"], batch, READ),
                r(&["policy"], policy, READ),
                r(&["networking.k8s.io"], networking, READ),
                r(&["discovery.k8s.io"], &["endpointslices"], READ),
            ],
        ),
        role(
            "system:basic-user",
            json!({}),
            vec![
                r(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                r(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:discovery",
            json!({}),
            vec![nr(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:public-info-viewer",
            json!({}),
            vec![nr(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
        role(
            "system:monitoring",
            json!({}),
            vec![nr(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
                &["get"],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            json!({}),
            vec![nr(
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
                &["get"],
            )],
        ),
        role(
            "system:auth-delegator",
            json!({}),
            vec![
                r(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                r(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            json!({}),
            vec![r(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        // Full access to the kubelet API (with 1.33's fine-grained kubelet authorization).
        role(
            "system:kubelet-api-admin",
            json!({}),
            vec![
                r(&[""], &["nodes"], READ),
                r(&[""], &["nodes"], &["proxy"]),
                r(
                    &[""],
                    &[
                        "nodes/proxy",
                        "nodes/metrics",
                        "nodes/stats",
                        "nodes/log",
                        "nodes/pods",
                        "nodes/healthz",
                        "nodes/configz",
                    ],
                    &["*"],
                ),
            ],
        ),
        role(
            "system:node-proxier",
            json!({}),
            vec![
                r(&[""], &["endpoints", "services"], &["list", "watch"]),
                r(&[""], &["nodes"], &["get", "list", "watch"]),
                r(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                r(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
            ],
        ),
        role(
            "system:node",
            json!({}),
            vec![
                r(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                r(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews", "subjectaccessreviews"],
                    &["create"],
                ),
                r(&[""], &["services"], READ),
                r(&[""], &["nodes"], &["create", "get", "list", "watch"]),
                r(&[""], &["nodes/status"], &["patch", "update"]),
                r(&[""], &["nodes"], &["delete", "patch", "update"]),
                r(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                r(&[""], &["pods"], READ),
                r(&[""], &["pods"], &["create", "delete"]),
                r(&[""], &["pods/status"], &["patch", "update"]),
                r(&[""], &["pods/eviction"], &["create"]),
                r(&[""], &["configmaps", "secrets"], &["get", "list", "watch"]),
                r(
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                    &["get"],
                ),
                r(&[""], &["endpoints"], &["get"]),
                r(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &["create", "get", "list", "watch"],
                ),
                r(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "delete", "get", "patch", "update"],
                ),
                r(
                    &["storage.k8s.io"],
                    &["volumeattachments", "csidrivers", "csinodes"],
                    &["get", "list", "watch"],
                ),
                r(&[""], &["serviceaccounts/token"], &["create"]),
                r(&["node.k8s.io"], &["runtimeclasses"], READ),
                r(&["discovery.k8s.io"], &["endpointslices"], READ),
            ],
        ),
        role(
            "system:kube-scheduler",
            json!({}),
            vec![
                r(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                r(&["coordination.k8s.io"], &["leases"], &["create"]),
                named(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["kube-scheduler"],
                    &["get", "update"],
                ),
                r(&[""], &["endpoints"], &["create"]),
                named(
                    &[""],
                    &["endpoints"],
                    &["kube-scheduler"],
                    &["get", "update"],
                ),
                r(&[""], &["nodes"], READ),
                r(&[""], &["namespaces"], READ),
                r(&[""], &["pods"], &["delete", "get", "list", "watch"]),
                r(&[""], &["bindings", "pods/binding"], &["create"]),
                r(&[""], &["pods/status"], &["patch", "update"]),
                r(&[""], &["replicationcontrollers", "services"], READ),
                r(&["apps", "extensions"], &["replicasets"], READ),
                r(&["apps"], &["statefulsets"], READ),
                r(&["policy"], &["poddisruptionbudgets"], READ),
                r(
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                    READ,
                ),
                r(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                r(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                r(
                    &["storage.k8s.io"],
                    &[
                        "csinodes",
                        "csidrivers",
                        "csistoragecapacities",
                        "storageclasses",
                        "volumeattachments",
                    ],
                    READ,
                ),
                r(&["resource.k8s.io"], &["*"], READ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            json!({}),
            vec![
                r(
                    &["", "events.k8s.io"],
                    &["events"],
                    &["create", "patch", "update"],
                ),
                r(
                    &["coordination.k8s.io"],
                    &["leases"],
                    &["create", "get", "update", "list", "watch"],
                ),
                r(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                r(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                r(&["*"], &["*"], &["list", "watch", "get"]),
                r(&[""], &["serviceaccounts/token"], &["create"]),
                // Capstan: the controllers' writes under the controller-manager's identity.
                r(
                    &[""],
                    &[
                        "pods",
                        "pods/status",
                        "pods/binding",
                        "pods/eviction",
                        "endpoints",
                        "services",
                        "services/status",
                        "serviceaccounts",
                        "secrets",
                        "configmaps",
                        "namespaces",
                        "namespaces/finalize",
                        "namespaces/status",
                        "nodes",
                        "nodes/status",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "persistentvolumes",
                        "persistentvolumes/status",
                        "replicationcontrollers",
                        "replicationcontrollers/status",
                        "replicationcontrollers/scale",
                        "resourcequotas",
                        "resourcequotas/status",
                        "podtemplates",
                        "limitranges",
                    ],
                    WRITE,
                ),
                r(&["apps"], &["*"], WRITE),
                r(&["batch"], &["*"], WRITE),
                r(&["discovery.k8s.io"], &["endpointslices"], WRITE),
                r(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    WRITE,
                ),
                r(&["autoscaling"], &["*"], WRITE),
                r(&["storage.k8s.io"], &["*"], WRITE),
                r(&["certificates.k8s.io"], &["*"], &["*"]),
                r(
                    &["rbac.authorization.k8s.io"],
                    &["clusterroles"],
                    &["escalate", "bind", "update", "patch"],
                ),
                // The namespace controller and the garbage collector delete anything.
                r(
                    &["*"],
                    &["*"],
                    &["delete", "deletecollection", "patch", "update"],
                ),
            ],
        ),
        role(
            "system:volume-scheduler",
            json!({}),
            vec![
                r(
                    &[""],
                    &["persistentvolumes"],
                    &["get", "list", "patch", "update", "watch"],
                ),
                r(&["storage.k8s.io"], &["storageclasses"], READ),
                r(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["get", "list", "patch", "update", "watch"],
                ),
            ],
        ),
        role(
            "system:kube-dns",
            json!({}),
            vec![r(&[""], &["endpoints", "services"], &["list", "watch"])],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            json!({}),
            vec![r(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &["create"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            json!({}),
            vec![r(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &["create"],
            )],
        ),
    ]
}

/// The group `capstan server`'s join token adds (kubeadm's
/// `system:bootstrappers:kubeadm:default-node-token`).
pub const CAPSTAN_NODE_TOKEN_GROUP: &str = "system:bootstrappers:capstan:default-node-token";

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding(
            "system:kube-dns",
            "system:kube-dns",
            &[("ServiceAccount", "kube-system/kube-dns")],
        ),
        // kubeadm's bindings for TLS bootstrap.
        binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", "system:bootstrappers:kubeadm:default-node-token")],
        ),
        binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", "system:bootstrappers:kubeadm:default-node-token")],
        ),
        // The same for the group of `capstan server`'s join token (src/server/bootstrap_token.rs).
        binding(
            "capstan:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", CAPSTAN_NODE_TOKEN_GROUP)],
        ),
        binding(
            "capstan:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", CAPSTAN_NODE_TOKEN_GROUP)],
        ),
        binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
    ]
}

/// Creates or reconciles one bootstrap object (upstream's `reconciliation` package): missing
/// rules or subjects are added to an object that allows auto-update; nothing is removed.
async fn reconcile(registry: &Registry, plural: &str, want: Value) -> Result<(), String> {
    let info =
        resources::find("rbac.authorization.k8s.io", "v1", plural).ok_or("rbac not served")?;
    let name = want["metadata"]["name"].as_str().unwrap_or("").to_string();
    match registry.get(info, "", &name).await {
        Ok(cur) => {
            if cur.value["metadata"]["annotations"][AUTOUPDATE] == "false" {
                return Ok(());
            }
            let key = if plural == "clusterroles" {
                "rules"
            } else {
                "subjects"
            };
            let have = cur.value[key].as_array().cloned().unwrap_or_default();
            let missing: Vec<Value> = want[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| !have.contains(w))
                .cloned()
                .collect();
            // An aggregated role's rules belong to the aggregation step.
            let skip_rules = plural == "clusterroles" && !want["aggregationRule"].is_null();
            if missing.is_empty() || skip_rules {
                return Ok(());
            }
            registry
                .update(info, "", &name, None, &WriteOptions::default(), move |v| {
                    let mut v = v.clone();
                    let mut list = v[key].as_array().cloned().unwrap_or_default();
                    list.extend(missing.iter().cloned());
                    v[key] = Value::Array(list);
                    Ok(v)
                })
                .await
                .map(|_| ())
                .map_err(|e| format!("reconciling {plural}/{name}: {e}"))
        }
        Err(e) if e.code == 404 => match registry
            .create(info, "", want, &WriteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == 409 => Ok(()),
            Err(e) => Err(format!("creating {plural}/{name}: {e}")),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Ensures the bootstrap policy (at start).
pub async fn ensure(registry: &Registry) -> Result<(), String> {
    for r in cluster_roles() {
        reconcile(registry, "clusterroles", r).await?;
    }
    for b in cluster_role_bindings() {
        reconcile(registry, "clusterrolebindings", b).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authz::Attributes;
    use crate::auth::rbac::rule_allows;
    use crate::auth::UserInfo;

    fn rules_of(name: &str) -> Vec<Value> {
        let roles = cluster_roles();
        let role = roles
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no role {name}"));
        role["rules"].as_array().cloned().unwrap_or_default()
    }

    fn allowed(rules: &[Value], verb: &str, group: &str, resource: &str, sub: &str) -> bool {
        let a = Attributes {
            user: UserInfo::new("u", &[]),
            verb: verb.into(),
            namespace: "default".into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: "x".into(),
            resource_request: true,
            path: String::new(),
        };
        rules.iter().any(|r| rule_allows(&a, r))
    }

    #[test]
    fn view_reads_but_does_not_write_or_read_secrets() {
        let view = rules_of("system:aggregate-to-view");
        assert!(allowed(&view, "list", "", "pods", ""));
        assert!(allowed(&view, "get", "apps", "deployments", ""));
        assert!(!allowed(&view, "delete", "", "pods", ""));
        assert!(!allowed(&view, "get", "", "secrets", ""));
        let edit = rules_of("system:aggregate-to-edit");
        assert!(allowed(&edit, "delete", "", "pods", ""));
        assert!(allowed(&edit, "create", "", "pods", "exec"));
        assert!(!allowed(
            &edit,
            "create",
            "rbac.authorization.k8s.io",
            "roles",
            ""
        ));
        assert!(allowed(
            &rules_of("system:aggregate-to-admin"),
            "create",
            "rbac.authorization.k8s.io",
            "roles",
            ""
        ));
    }

    #[test]
    fn every_role_is_bound_to_an_existing_role_and_labelled() {
        let names: Vec<String> = cluster_roles()
            .iter()
            .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for b in cluster_role_bindings() {
            let role = b["roleRef"]["name"].as_str().unwrap();
            assert!(names.iter().any(|n| n == role), "binding to missing {role}");
        }
        for r in cluster_roles() {
            assert_eq!(r["metadata"]["annotations"][AUTOUPDATE], "true");
        }
        assert!(allowed(
            &rules_of("cluster-admin"),
            "escalate",
            "x",
            "y",
            ""
        ));
        assert!(allowed(
            &rules_of("system:basic-user"),
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            ""
        ));
    }
}
