//! Request authorization (upstream's `WithAuthorization` filter and `--authorization-mode`):
//! the request's attributes are asked of each configured authorizer in order until one allows
//! or denies. `system:masters` is always allowed (upstream's privileged-group authorizer). The
//! modes: `AlwaysAllow`, `AlwaysDeny`, `RBAC`, and `Node` (the Node authorizer, `node`: a
//! node's identity reads only what its pods use, other requests get the `system:node` rules).
//! Denials carry upstream's message, with the reasons of authorizers that had no opinion.

use super::{node, rbac, UserInfo, MASTERS_GROUP};
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::status::ApiError;

/// What is asked (upstream's `authorizer.Attributes`).
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub resource_request: bool,
    pub path: String,
}

impl Attributes {
    pub fn from_request(user: &UserInfo, info: &RequestInfo) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: info.verb.clone(),
            namespace: info.namespace.clone(),
            group: info.group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            name: info.name.clone(),
            resource_request: info.is_resource_request,
            path: info.path.clone(),
        }
    }
}

/// One authorizer of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AlwaysAllow,
    AlwaysDeny,
    Node,
    Rbac,
}

/// The configured chain.
#[derive(Debug, Clone)]
pub struct Authorizer {
    pub modes: Vec<Mode>,
}

impl Authorizer {
    /// Parses `--authorization-mode` (comma separated, upstream's names).
    pub fn parse(s: &str) -> Result<Authorizer, String> {
        let mut modes = Vec::new();
        for m in s.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            modes.push(match m {
                "AlwaysAllow" => Mode::AlwaysAllow,
                "AlwaysDeny" => Mode::AlwaysDeny,
                "Node" => Mode::Node,
                "RBAC" => Mode::Rbac,
                other => {
                    return Err(format!(
                        "authorization-mode {other:?} is not a valid mode (AlwaysAllow, AlwaysDeny, Node, RBAC)"
                    ))
                }
            });
        }
        if modes.is_empty() {
            return Err("at least one authorization-mode must be passed".into());
        }
        Ok(Authorizer { modes })
    }

    pub fn always_allow(&self) -> bool {
        self.modes.first() == Some(&Mode::AlwaysAllow)
    }

    /// Whether the request is allowed.
    pub async fn authorize(&self, registry: &Registry, a: &Attributes) -> bool {
        self.decide(registry, a).await.0
    }

    /// Whether the request is allowed, and the reasons authorizers without an opinion gave
    /// (upstream's union authorizer joins them; the 403 message ends with them).
    pub async fn decide(&self, registry: &Registry, a: &Attributes) -> (bool, String) {
        if a.user.in_group(MASTERS_GROUP) {
            return (true, String::new());
        }
        let mut fresh = false;
        let mut reasons: Vec<String> = Vec::new();
        for m in &self.modes {
            match m {
                Mode::AlwaysAllow => return (true, String::new()),
                Mode::AlwaysDeny => return (false, reasons.join("\n")),
                Mode::Node => {
                    let Some(node) = node::node_name(&a.user) else {
                        continue;
                    };
                    match node::authorize(registry, node, a).await {
                        Some(node::Decision::Allow) => return (true, String::new()),
                        Some(node::Decision::NoOpinion(r)) => reasons.push(r),
                        None => {
                            if !fresh {
                                rbac::wait_fresh(registry).await;
                                fresh = true;
                            }
                            if node::node_rules_allow(registry, a) {
                                return (true, String::new());
                            }
                        }
                    }
                }
                Mode::Rbac => {
                    if !fresh {
                        rbac::wait_fresh(registry).await;
                        fresh = true;
                    }
                    if rbac::allows(registry, a) {
                        return (true, String::new());
                    }
                }
            }
        }
        (false, reasons.join("\n"))
    }
}

/// Upstream's forbidden message (`responsewriters.forbiddenMessage`).
pub fn forbidden_message(a: &Attributes) -> String {
    let user = format!("User {:?}", a.user.name);
    if !a.resource_request {
        return format!("{user} cannot {} path {:?}", a.verb, a.path);
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    if a.namespace.is_empty() {
        format!(
            "{user} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.group
        )
    } else {
        format!(
            "{user} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.group, a.namespace
        )
    }
}

/// The 403 for a denied request (upstream's `responsewriters.Forbidden`).
pub fn forbidden(a: &Attributes) -> ApiError {
    forbidden_because(a, "")
}

/// The 403 for a request denied with the authorizers' `reason` appended, as upstream.
pub fn forbidden_because(a: &Attributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    if !a.resource_request {
        return ApiError::new(403, "Forbidden", format!("forbidden: {msg}"));
    }
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let mut e = ApiError::new(
        403,
        "Forbidden",
        if a.name.is_empty() {
            format!("{qualified} is forbidden: {msg}")
        } else {
            format!("{qualified} {:?} is forbidden: {msg}", a.name)
        },
    );
    let mut d = serde_json::json!({"kind": a.resource});
    if !a.name.is_empty() {
        d["name"] = a.name.clone().into();
    }
    if !a.group.is_empty() {
        d["group"] = a.group.clone().into();
    }
    e.details = d;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_upstream() {
        let mut a = Attributes {
            user: UserInfo::new("jane", &[]),
            verb: "delete".into(),
            namespace: "default".into(),
            resource: "pods".into(),
            name: "x".into(),
            resource_request: true,
            ..Default::default()
        };
        assert_eq!(
            forbidden(&a).message,
            r#"pods "x" is forbidden: User "jane" cannot delete resource "pods" in API group "" in the namespace "default""#
        );
        a.verb = "list".into();
        a.name.clear();
        a.namespace.clear();
        a.group = "apps".into();
        a.resource = "deployments".into();
        assert_eq!(
            forbidden(&a).message,
            r#"deployments.apps is forbidden: User "jane" cannot list resource "deployments" in API group "apps" at the cluster scope"#
        );
        let nr = Attributes {
            user: UserInfo::anonymous(),
            verb: "get".into(),
            path: "/metrics".into(),
            ..Default::default()
        };
        assert_eq!(
            forbidden(&nr).message,
            r#"forbidden: User "system:anonymous" cannot get path "/metrics""#
        );
        assert!(Authorizer::parse("Node,RBAC").is_ok());
        assert!(Authorizer::parse("Bogus").is_err());
    }
}
