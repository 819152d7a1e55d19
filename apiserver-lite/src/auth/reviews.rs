//! The review APIs, which expose authentication and authorization decisions to clients:
//! `authentication.k8s.io/v1` TokenReview and SelfSubjectReview (`kubectl auth whoami`), and
//! `authorization.k8s.io/v1` SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview (`kubectl auth can-i`) and SelfSubjectRulesReview
//! (`kubectl auth can-i --list`). Each is create-only and not stored: the request comes back
//! with its `status` filled in, 201 Created.

use serde_json::{json, Value};

use super::authz::Attributes;
use super::{rbac, Security, UserInfo};
use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::status::ApiError;

pub const AUTHENTICATION: &str = "authentication.k8s.io";
pub const AUTHORIZATION: &str = "authorization.k8s.io";

/// Whether `info` is a review this module serves.
pub fn is_review(info: &RequestInfo) -> bool {
    match info.group.as_str() {
        AUTHENTICATION => matches!(
            info.resource.as_str(),
            "tokenreviews" | "selfsubjectreviews"
        ),
        AUTHORIZATION => matches!(
            info.resource.as_str(),
            "subjectaccessreviews"
                | "selfsubjectaccessreviews"
                | "localsubjectaccessreviews"
                | "selfsubjectrulesreviews"
        ),
        _ => false,
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "tokenreviews" => "TokenReview",
        "selfsubjectreviews" => "SelfSubjectReview",
        "subjectaccessreviews" => "SubjectAccessReview",
        "selfsubjectaccessreviews" => "SelfSubjectAccessReview",
        "localsubjectaccessreviews" => "LocalSubjectAccessReview",
        _ => "SelfSubjectRulesReview",
    }
}

/// Serves one review.
pub async fn handle(
    security: &Security,
    registry: &Registry,
    info: &RequestInfo,
    user: &UserInfo,
    mut req: Value,
) -> Result<Value, ApiError> {
    if info.verb != "create" {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    req["apiVersion"] = json!(format!("{}/{}", info.group, info.version));
    req["kind"] = json!(kind_of(&info.resource));
    if !req["metadata"].is_object() {
        req["metadata"] = json!({});
    }
    req["metadata"]["creationTimestamp"] = Value::Null;
    let spec = req["spec"].clone();
    let status = match info.resource.as_str() {
        "selfsubjectreviews" => json!({"userInfo": user.to_json()}),
        "tokenreviews" => {
            let token = spec["token"].as_str().unwrap_or("");
            let audiences: Vec<String> = spec["audiences"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            token_review(security, registry, token, &audiences).await
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or("");
            rules_review(registry, user, ns).await
        }
        resource => {
            let subject = match resource {
                "selfsubjectaccessreviews" => user.clone(),
                _ => UserInfo::from_json(&spec, "user"),
            };
            let mut a = Attributes {
                user: subject,
                ..Default::default()
            };
            let ra = &spec["resourceAttributes"];
            let nra = &spec["nonResourceAttributes"];
            if ra.is_object() {
                a.resource_request = true;
                a.verb = ra["verb"].as_str().unwrap_or("").into();
                a.namespace = ra["namespace"].as_str().unwrap_or("").into();
                a.group = ra["group"].as_str().unwrap_or("").into();
                a.resource = ra["resource"].as_str().unwrap_or("").into();
                a.subresource = ra["subresource"].as_str().unwrap_or("").into();
                a.name = ra["name"].as_str().unwrap_or("").into();
            } else if nra.is_object() {
                a.verb = nra["verb"].as_str().unwrap_or("").into();
                a.path = nra["path"].as_str().unwrap_or("").into();
            } else {
                return Err(ApiError::invalid(
                    AUTHORIZATION,
                    kind_of(resource),
                    "",
                    vec![crate::status::Cause::required(
                        "spec.resourceAttributes",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            if resource == "localsubjectaccessreviews" && a.namespace != info.namespace {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace must match metadata.namespace: {:?} {:?}",
                    a.namespace, info.namespace
                )));
            }
            let allowed = security.authorizer.authorize(registry, &a).await;
            let mut s = json!({"allowed": allowed});
            if !allowed {
                s["reason"] = json!("");
            }
            s
        }
    };
    req["status"] = status;
    Ok(req)
}

async fn token_review(
    security: &Security,
    registry: &Registry,
    token: &str,
    audiences: &[String],
) -> Value {
    let user = if audiences.is_empty() {
        security
            .authenticator
            .authenticate_token(registry, token)
            .await
    } else {
        // Audience-bound review: only service-account tokens carry audiences.
        security
            .service_accounts
            .authenticate(registry, token, audiences)
            .await
            .ok()
            .flatten()
    };
    match user {
        Some(u) => {
            let auds = if audiences.is_empty() {
                security.service_accounts.api_audiences.clone()
            } else {
                audiences.to_vec()
            };
            json!({"authenticated": true, "user": u.with_authenticated_group().to_json(), "audiences": auds})
        }
        None => json!({"authenticated": false, "user": {}, "error": "[invalid bearer token]"}),
    }
}

async fn rules_review(registry: &Registry, user: &UserInfo, namespace: &str) -> Value {
    rbac::wait_fresh(registry).await;
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    rbac::visit_rules(registry, user, namespace, |r| {
        if r["nonResourceURLs"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
        {
            let v = json!({"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]});
            if !non_resource_rules.contains(&v) {
                non_resource_rules.push(v);
            }
        } else {
            let mut v = json!({"verbs": r["verbs"], "apiGroups": r["apiGroups"], "resources": r["resources"]});
            if r["resourceNames"].as_array().is_some_and(|n| !n.is_empty()) {
                v["resourceNames"] = r["resourceNames"].clone();
            }
            if !resource_rules.contains(&v) {
                resource_rules.push(v);
            }
        }
        false
    });
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}
