//! RBAC escalation prevention (upstream's `pkg/registry/rbac` `ConfirmNoEscalation` and
//! `BindingAuthorized`): creating or updating a Role/ClusterRole needs either the `escalate` verb
//! on it or every permission it grants; creating or updating a binding needs either the `bind`
//! verb on the role it refers to or every permission of that role — in the binding's namespace,
//! or cluster-wide for cluster objects. `system:masters` passes. Checked on create and update
//! (the body is the new object) and on patch (the stored object with the patch applied).

use serde_json::Value;

use super::authz::{Attributes, Authorizer};
use super::{rbac, UserInfo, MASTERS_GROUP};
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::status::ApiError;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Whether the request is a role or binding write this check applies to.
pub fn applies(info: &RequestInfo) -> bool {
    info.group == GROUP
        && info.subresource.is_empty()
        && matches!(info.verb.as_str(), "create" | "update" | "patch")
        && matches!(
            info.resource.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules among `rules` that `user` does not hold in `namespace` ("" = cluster-wide).
pub fn not_held(
    registry: &Registry,
    user: &UserInfo,
    namespace: &str,
    rules: &[Value],
) -> Vec<Value> {
    let mut missing = Vec::new();
    for rule in rules {
        let verbs = strings(&rule["verbs"]);
        let urls = strings(&rule["nonResourceURLs"]);
        let mut asks: Vec<Attributes> = Vec::new();
        for verb in &verbs {
            if !urls.is_empty() {
                for u in &urls {
                    asks.push(Attributes {
                        user: user.clone(),
                        verb: verb.clone(),
                        path: u.clone(),
                        ..Default::default()
                    });
                }
                continue;
            }
            let names = strings(&rule["resourceNames"]);
            let names = if names.is_empty() {
                vec![String::new()]
            } else {
                names
            };
            for group in strings(&rule["apiGroups"]) {
                for res in strings(&rule["resources"]) {
                    let (resource, sub) = match res.split_once('/') {
                        Some((r, s)) => (r.to_string(), s.to_string()),
                        None => (res.clone(), String::new()),
                    };
                    for name in &names {
                        asks.push(Attributes {
                            user: user.clone(),
                            verb: verb.clone(),
                            namespace: namespace.into(),
                            group: group.clone(),
                            resource: resource.clone(),
                            subresource: sub.clone(),
                            name: name.clone(),
                            resource_request: true,
                            path: String::new(),
                        });
                    }
                }
            }
        }
        let held = asks
            .iter()
            .all(|a| rbac::visit_rules(registry, user, namespace, |r| rbac::rule_allows(a, r)));
        if !held {
            missing.push(rule.clone());
        }
    }
    missing
}

fn escalation_error(info: &RequestInfo, user: &UserInfo, missing: &[Value]) -> ApiError {
    let name = &info.name;
    let what = missing
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let groups = user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    ApiError::forbidden(
        GROUP,
        &info.resource,
        name,
        &format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{what}",
            user.name
        ),
    )
}

/// Checks one role or binding write.
pub async fn check(
    authorizer: &Authorizer,
    registry: &Registry,
    user: &UserInfo,
    info: &RequestInfo,
    obj: &Value,
) -> Result<(), ApiError> {
    if user.in_group(MASTERS_GROUP) || authorizer.always_allow() {
        return Ok(());
    }
    let mut info = info.clone();
    if info.name.is_empty() {
        info.name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    }
    let ns = info.namespace.clone();
    rbac::wait_fresh(registry).await;
    let ask = |verb: &str, resource: &str, name: &str| Attributes {
        user: user.clone(),
        verb: verb.into(),
        namespace: ns.clone(),
        group: GROUP.into(),
        resource: resource.into(),
        subresource: String::new(),
        name: name.into(),
        resource_request: true,
        path: String::new(),
    };
    match info.resource.as_str() {
        "roles" | "clusterroles" => {
            if authorizer
                .authorize(registry, &ask("escalate", &info.resource, &info.name))
                .await
            {
                return Ok(());
            }
            let rules = if info.resource == "clusterroles" {
                rbac::cluster_role_rules(registry, obj)
            } else {
                obj["rules"].as_array().cloned().unwrap_or_default()
            };
            let missing = not_held(registry, user, &ns, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(escalation_error(&info, user, &missing))
            }
        }
        _ => {
            let kind = obj["roleRef"]["kind"].as_str().unwrap_or("");
            let role = obj["roleRef"]["name"].as_str().unwrap_or("");
            let plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if authorizer
                .authorize(registry, &ask("bind", plural, role))
                .await
            {
                return Ok(());
            }
            let role_obj = rbac::get_role(
                registry,
                plural,
                if kind == "Role" { &ns } else { "" },
                role,
            );
            let rules = match (&role_obj, plural) {
                (Some(r), "clusterroles") => rbac::cluster_role_rules(registry, r),
                (Some(r), _) => r["rules"].as_array().cloned().unwrap_or_default(),
                // A binding to a role that does not exist grants nothing (yet); upstream refuses
                // it unless the user may bind, since the role could appear later.
                (None, _) => {
                    return Err(ApiError::forbidden(
                        GROUP,
                        &info.resource,
                        &info.name,
                        &format!(
                            "user {:?} is attempting to bind {kind} {role:?}, which does not exist, without the bind permission",
                            user.name
                        ),
                    ))
                }
            };
            let missing = not_held(registry, user, &ns, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(escalation_error(&info, user, &missing))
            }
        }
    }
}
