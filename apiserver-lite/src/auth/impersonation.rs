//! Impersonation (upstream's `WithImpersonation` filter): `Impersonate-User`, `-Group`, `-Uid`
//! and `Impersonate-Extra-<key>` headers make the request act as another user, each part
//! authorized first with the `impersonate` verb on `users` (or the service account itself),
//! `groups`, `uids` and `userextras/<key>` — which is how `kubectl --as`/`--as-group` work.

use axum::http::HeaderMap;

use super::authz::{forbidden, Attributes, Authorizer};
use super::{UserInfo, SERVICE_ACCOUNTS_GROUP, SERVICE_ACCOUNT_PREFIX};
use crate::registry::Registry;
use crate::status::ApiError;

pub const USER: &str = "impersonate-user";
pub const GROUP: &str = "impersonate-group";
pub const UID: &str = "impersonate-uid";
pub const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Whether the request asks for impersonation at all.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

/// The impersonated user, after checking that `requester` may impersonate each part.
pub async fn impersonate(
    authorizer: &Authorizer,
    registry: &Registry,
    requester: &UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    };
    let Some(name) = values(USER).into_iter().next() else {
        return Err(ApiError::bad_request(
            "requested impersonation of groups, uid or extra without impersonating a user",
        ));
    };
    let mut checks: Vec<Attributes> = Vec::new();
    let ask = |group: &str, resource: &str, sub: &str, ns: &str, name: &str| Attributes {
        user: requester.clone(),
        verb: "impersonate".into(),
        namespace: ns.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: sub.into(),
        name: name.into(),
        resource_request: true,
        path: String::new(),
    };
    let mut user = UserInfo {
        name: name.clone(),
        ..Default::default()
    };
    if let Some((ns, sa)) = name
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|r| r.split_once(':'))
    {
        checks.push(ask("", "serviceaccounts", "", ns, sa));
        user.groups = vec![
            SERVICE_ACCOUNTS_GROUP.into(),
            format!("{SERVICE_ACCOUNTS_GROUP}:{ns}"),
        ];
    } else {
        checks.push(ask("", "users", "", "", &name));
    }
    for g in values(GROUP) {
        checks.push(ask("", "groups", "", "", &g));
        if !user.groups.contains(&g) {
            user.groups.push(g);
        }
    }
    if let Some(uid) = values(UID).into_iter().next() {
        checks.push(ask("authentication.k8s.io", "uids", "", "", &uid));
        user.uid = uid;
    }
    for k in headers.keys() {
        if let Some(key) = k.as_str().strip_prefix(EXTRA_PREFIX) {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .to_string();
            for v in values(k.as_str()) {
                checks.push(ask("authentication.k8s.io", "userextras", &key, "", &v));
                user.extra.entry(key.clone()).or_default().push(v);
            }
        }
    }
    for a in &checks {
        if !authorizer.authorize(registry, a).await {
            return Err(forbidden(a));
        }
    }
    if user.name == super::ANONYMOUS_USER {
        if !user.in_group(super::UNAUTHENTICATED_GROUP) {
            user.groups.push(super::UNAUTHENTICATED_GROUP.into());
        }
        Ok(user)
    } else {
        Ok(user.with_authenticated_group())
    }
}
