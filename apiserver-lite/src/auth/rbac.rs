//! The RBAC authorizer (upstream's `plugin/pkg/auth/authorizer/rbac`): the rules of every
//! ClusterRoleBinding whose subjects match the user, then of every RoleBinding of the request's
//! namespace, are visited until one allows the request. Rules are matched as upstream's
//! `RuleAllows`: verbs, API groups, resources (`*`, `res/sub`, `*/sub`), resource names and
//! non-resource URLs (exact, or a prefix ending in `*`).
//!
//! Roles and bindings come from the watch caches (upstream reads informers). A ClusterRole with
//! an `aggregationRule` contributes the rules of every ClusterRole its selectors match, resolved
//! at decision time (so a new `aggregate-to-view` role counts at once), and the aggregation
//! reconciler (`reconcile_aggregation`) writes the union into the object as upstream's
//! `clusterrole-aggregation` controller does.

use std::sync::Arc;

use serde_json::{json, Value};

use super::authz::Attributes;
use super::{UserInfo, SERVICE_ACCOUNT_PREFIX};
use crate::cacher::{CachedObject, Filter};
use crate::registry::{Registry, WriteOptions};
use crate::resources;
use crate::selectors::label_selector_from_api;

const GROUP: &str = "rbac.authorization.k8s.io";

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .is_some_and(|a| a.iter().any(|v| v == "*" || v == want))
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(a: &Attributes, rule: &Value) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if !a.resource_request {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|u| {
                u == "*"
                    || u == a.path
                    || (u.ends_with('*') && a.path.starts_with(u.trim_end_matches('*')))
            })
        });
    }
    if !has(&rule["apiGroups"], &a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = rule["resources"].as_array().is_some_and(|rs| {
        rs.iter().filter_map(Value::as_str).any(|r| {
            r == "*"
                || r == combined
                || (!a.subresource.is_empty() && r == format!("*/{}", a.subresource))
        })
    });
    if !resource_ok {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => names.iter().any(|n| n == a.name.as_str()),
        _ => true,
    }
}

/// Whether a binding subject is the user (upstream's `appliesToUser`).
pub fn subject_matches(user: &UserInfo, subject: &Value, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str().unwrap_or("") {
        "User" => user.name == name,
        "Group" => user.in_group(name),
        "ServiceAccount" => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

fn all(registry: &Registry, plural: &str, prefix_ns: Option<&str>) -> Vec<Arc<CachedObject>> {
    let info = resources::find(GROUP, "v1", plural).expect("rbac resources are served");
    let cacher = registry.cacher(info);
    let prefix = match prefix_ns {
        Some(ns) => Registry::key(info, ns, ""),
        None => Registry::key(info, "", ""),
    };
    let everything: Filter = Arc::new(|_| true);
    cacher.list(&prefix, &everything, None, 0).items
}

fn get(registry: &Registry, plural: &str, ns: &str, name: &str) -> Option<Arc<CachedObject>> {
    let info = resources::find(GROUP, "v1", plural).expect("rbac resources are served");
    registry.cacher(info).get(&Registry::key(info, ns, name))
}

/// A Role or ClusterRole by name.
pub fn get_role(registry: &Registry, plural: &str, ns: &str, name: &str) -> Option<Value> {
    get(registry, plural, ns, name).map(|o| o.value.clone())
}

/// Waits until the RBAC caches reflect every acknowledged write.
pub async fn wait_fresh(registry: &Registry) {
    for plural in [
        "clusterroles",
        "clusterrolebindings",
        "roles",
        "rolebindings",
    ] {
        let info = resources::find(GROUP, "v1", plural).expect("rbac resources are served");
        let _ = registry.cacher(info).wait_fresh().await;
    }
}

/// The rules of a ClusterRole, with its aggregation resolved.
pub fn cluster_role_rules(registry: &Registry, role: &Value) -> Vec<Value> {
    aggregated_rules(registry, role, 0)
}

fn aggregated_rules(registry: &Registry, role: &Value, depth: usize) -> Vec<Value> {
    let mut rules: Vec<Value> = role["rules"].as_array().cloned().unwrap_or_default();
    // Aggregated roles may select aggregated roles (admin ← edit ← view); a cycle stops here.
    if depth > 4 {
        return rules;
    }
    if let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let sels: Vec<_> = selectors
            .iter()
            .filter_map(|s| label_selector_from_api(s).ok())
            .collect();
        for other in all(registry, "clusterroles", None) {
            if other.value["metadata"]["name"] == role["metadata"]["name"] {
                continue;
            }
            if sels.iter().any(|s| s.matches(other.labels())) {
                for r in aggregated_rules(registry, &other.value, depth + 1) {
                    if !rules.contains(&r) {
                        rules.push(r);
                    }
                }
            }
        }
    }
    rules
}

fn role_ref_rules(registry: &Registry, binding: &Value, binding_ns: &str) -> Vec<Value> {
    let name = binding["roleRef"]["name"].as_str().unwrap_or("");
    match binding["roleRef"]["kind"].as_str().unwrap_or("") {
        "ClusterRole" => get(registry, "clusterroles", "", name)
            .map(|r| cluster_role_rules(registry, &r.value))
            .unwrap_or_default(),
        "Role" if !binding_ns.is_empty() => get(registry, "roles", binding_ns, name)
            .and_then(|r| r.value["rules"].as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn binds(user: &UserInfo, binding: &Value, ns: &str) -> bool {
    binding["subjects"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| subject_matches(user, s, ns)))
}

/// Visits the rules that apply to `user` in `namespace` (cluster-wide first) until `visit`
/// returns true; returns whether it did.
pub fn visit_rules(
    registry: &Registry,
    user: &UserInfo,
    namespace: &str,
    mut visit: impl FnMut(&Value) -> bool,
) -> bool {
    for b in all(registry, "clusterrolebindings", None) {
        if binds(user, &b.value, "") {
            for r in role_ref_rules(registry, &b.value, "") {
                if visit(&r) {
                    return true;
                }
            }
        }
    }
    if !namespace.is_empty() {
        for b in all(registry, "rolebindings", Some(namespace)) {
            if binds(user, &b.value, namespace) {
                for r in role_ref_rules(registry, &b.value, namespace) {
                    if visit(&r) {
                        return true;
                    }
                }
            }
        }
    }
    false
}

/// RBAC's decision.
pub fn allows(registry: &Registry, a: &Attributes) -> bool {
    visit_rules(registry, &a.user, &a.namespace, |r| rule_allows(a, r))
}

/// The aggregation step (upstream's `clusterrole-aggregation` controller): every ClusterRole
/// with an `aggregationRule` gets the union of the rules of the roles it selects written into
/// `rules`. Runs on every ClusterRole change.
pub async fn reconcile_aggregation(registry: Arc<Registry>) {
    let info = resources::find(GROUP, "v1", "clusterroles").expect("served");
    let mut last_rev = -1;
    loop {
        let rev = registry.cacher(info).revision();
        if rev != last_rev {
            last_rev = rev;
            for role in all(&registry, "clusterroles", None) {
                if role.value["aggregationRule"].is_null() {
                    continue;
                }
                let mut want = cluster_role_rules(
                    &registry,
                    &json!({
                        "metadata": role.value["metadata"],
                        "aggregationRule": role.value["aggregationRule"],
                    }),
                );
                want.sort_by_key(|r| r.to_string());
                if role.value["rules"].as_array() != Some(&want) {
                    let name = role.value["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let w = want.clone();
                    let _ = registry
                        .update(
                            info,
                            "",
                            &name,
                            None,
                            &WriteOptions::default(),
                            move |cur| {
                                let mut cur = cur.clone();
                                cur["rules"] = json!(w);
                                Ok(cur)
                            },
                        )
                        .await;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("jane", &[]),
            verb: verb.into(),
            namespace: "default".into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            path: String::new(),
        }
    }

    #[test]
    fn rule_matching_as_upstream() {
        let view = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]});
        let cases = [
            (attrs("get", "", "pods", "", "x"), true),
            (attrs("list", "", "pods", "", ""), true),
            (attrs("delete", "", "pods", "", "x"), false),
            (attrs("get", "apps", "pods", "", "x"), false),
            (attrs("get", "", "pods", "log", "x"), true),
            (attrs("get", "", "pods", "exec", "x"), false),
            (attrs("get", "", "secrets", "", "x"), false),
        ];
        for (a, want) in cases {
            assert_eq!(rule_allows(&a, &view), want, "{a:?}");
        }
        let star_sub = json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]});
        assert!(rule_allows(
            &attrs("update", "apps", "deployments", "scale", "d"),
            &star_sub
        ));
        assert!(!rule_allows(
            &attrs("update", "apps", "deployments", "", "d"),
            &star_sub
        ));
        let named = json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]});
        assert!(rule_allows(
            &attrs("get", "", "configmaps", "", "a"),
            &named
        ));
        assert!(!rule_allows(
            &attrs("get", "", "configmaps", "", "b"),
            &named
        ));
        assert!(!rule_allows(
            &attrs("list", "", "configmaps", "", ""),
            &named
        ));
        let mut nr = attrs("get", "", "", "", "");
        nr.resource_request = false;
        nr.path = "/healthz/etcd".into();
        let health = json!({"nonResourceURLs": ["/healthz", "/healthz/*"], "verbs": ["get"]});
        assert!(rule_allows(&nr, &health));
        nr.path = "/metrics".into();
        assert!(!rule_allows(&nr, &health));
        // A resource rule never matches a non-resource request.
        assert!(!rule_allows(&nr, &view));
    }

    #[test]
    fn subjects() {
        let u = UserInfo::new(
            "system:serviceaccount:ns1:build",
            &["system:serviceaccounts"],
        );
        assert!(subject_matches(
            &u,
            &json!({"kind": "ServiceAccount", "name": "build"}),
            "ns1"
        ));
        assert!(!subject_matches(
            &u,
            &json!({"kind": "ServiceAccount", "name": "build"}),
            "ns2"
        ));
        assert!(subject_matches(
            &u,
            &json!({"kind": "ServiceAccount", "name": "build", "namespace": "ns1"}),
            ""
        ));
        assert!(subject_matches(
            &u,
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            ""
        ));
        assert!(!subject_matches(
            &u,
            &json!({"kind": "User", "name": "build"}),
            ""
        ));
    }
}
