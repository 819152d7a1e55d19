//! Authentication and authorization, as upstream's `k8s.io/apiserver` filters: every request is
//! first turned into a user (`authn`: client certificate, bearer token, or anonymous), then
//! possibly impersonated (`impersonation`), then authorized (`authz`: system:masters, the Node
//! rules, RBAC with upstream's bootstrap policy). The review APIs (`reviews`) expose the same
//! decisions to clients (`kubectl auth can-i`, `kubectl auth whoami`).

pub mod authn;
pub mod authz;
pub mod bootstrap_policy;
pub mod escalation;
pub mod impersonation;
pub mod jws;
pub mod node;
pub mod node_restriction;
pub mod rbac;
pub mod reviews;
pub mod serviceaccount;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::status::ApiError;

/// Upstream's well-known users and groups.
pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
pub const MASTERS_GROUP: &str = "system:masters";
pub const NODES_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";

/// An authenticated user (upstream's `user.Info`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn anonymous() -> UserInfo {
        UserInfo::new(ANONYMOUS_USER, &[UNAUTHENTICATED_GROUP])
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// Adds `system:authenticated` unless the user is anonymous or has it (upstream's
    /// AuthenticatedGroupAdder).
    pub fn with_authenticated_group(mut self) -> UserInfo {
        if self.name != ANONYMOUS_USER && !self.in_group(AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }

    /// The `userInfo` of reviews (authentication.k8s.io/v1 UserInfo).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }

    /// Reads a UserInfo-shaped JSON (`username` or `user`, `groups`, `uid`, `extra`).
    pub fn from_json(v: &Value, name_key: &str) -> UserInfo {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        UserInfo {
            name: v[name_key].as_str().unwrap_or("").into(),
            uid: v["uid"].as_str().unwrap_or("").into(),
            groups: strings(&v["groups"]),
            extra: v["extra"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
                .unwrap_or_default(),
        }
    }
}

/// 401 as upstream writes it.
pub fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

/// The settings of authentication and authorization (upstream's flag names in `capstan
/// apiserver`).
#[derive(Debug, Clone)]
pub struct SecurityOptions {
    /// Certificates and keys given instead of generated ones.
    pub files: crate::pki::PkiFiles,
    /// `--token-auth-file`.
    pub token_auth_file: Option<std::path::PathBuf>,
    /// `--anonymous-auth` (default true, as upstream).
    pub anonymous_auth: bool,
    /// `--authorization-mode` (default `Node,RBAC`, as kubeadm).
    pub authorization_mode: String,
    /// `--service-account-issuer`.
    pub service_account_issuer: String,
}

impl Default for SecurityOptions {
    fn default() -> Self {
        SecurityOptions {
            files: Default::default(),
            token_auth_file: None,
            anonymous_auth: true,
            authorization_mode: "Node,RBAC".into(),
            service_account_issuer: serviceaccount::DEFAULT_ISSUER.into(),
        }
    }
}

/// The request-path security of a running server.
pub struct Security {
    pub authenticator: authn::Authenticator,
    pub authorizer: authz::Authorizer,
    pub service_accounts: std::sync::Arc<serviceaccount::ServiceAccountTokens>,
}
