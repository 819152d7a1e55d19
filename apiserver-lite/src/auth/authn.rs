//! Request authentication (upstream's `pkg/authentication` union): the verified client
//! certificate (CN the user, O the groups), else a bearer token tried against the static token
//! file (`--token-auth-file`), bootstrap tokens (`bootstrap.kubernetes.io/token` Secrets in
//! kube-system) and service-account JWTs, else anonymous when `--anonymous-auth` allows it.
//! As upstream's fail-on-error union, a token that nobody accepts is a 401 even when anonymous
//! requests are allowed; only a request with no credentials at all becomes `system:anonymous`.
//! Every authenticated user gets `system:authenticated`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderMap;
use base64::Engine;

use super::serviceaccount::ServiceAccountTokens;
use super::{unauthorized, UserInfo, BOOTSTRAPPERS_GROUP};
use crate::registry::Registry;
use crate::resources;
use crate::status::ApiError;

/// The client certificate of a connection (a connection extension): none, verified against the
/// client CA (with its identity), or not verifiable (a 401, as upstream's x509 authenticator
/// answers a certificate from another CA or an expired one).
#[derive(Debug, Clone, Default)]
pub enum PeerCertificate {
    #[default]
    None,
    Verified(UserInfo),
    Invalid,
}

/// The user of a request after authentication (and impersonation), a request extension.
#[derive(Debug, Clone)]
pub struct RequestUser(pub UserInfo);

/// Reads the user of a client certificate: CN the name, each O a group.
pub fn user_from_certificate(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo {
        name,
        groups,
        ..Default::default()
    })
}

/// Parses a static token file: `token,user,uid[,"group1,group2"]` per line (upstream's
/// `tokenfile`); blank lines and `#` comments skipped.
pub fn parse_token_file(text: &str) -> Result<HashMap<String, UserInfo>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line);
        if fields.len() < 3 {
            return Err(format!(
                "token file: line {} has {} columns, want at least 3 (token,user,uid)",
                n + 1,
                fields.len()
            ));
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            fields[0].clone(),
            UserInfo {
                name: fields[1].clone(),
                uid: fields[2].clone(),
                groups,
                ..Default::default()
            },
        );
    }
    Ok(out)
}

fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// The authenticator chain.
pub struct Authenticator {
    pub tokens: HashMap<String, UserInfo>,
    pub service_accounts: Arc<ServiceAccountTokens>,
    pub anonymous: bool,
}

impl Authenticator {
    pub fn new(
        token_file: Option<&Path>,
        service_accounts: Arc<ServiceAccountTokens>,
        anonymous: bool,
    ) -> Result<Authenticator, String> {
        let tokens = match token_file {
            Some(p) => parse_token_file(
                &std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?,
            )?,
            None => HashMap::new(),
        };
        Ok(Authenticator {
            tokens,
            service_accounts,
            anonymous,
        })
    }

    /// Authenticates one request.
    pub async fn authenticate(
        &self,
        registry: &Registry,
        peer: &PeerCertificate,
        headers: &HeaderMap,
    ) -> Result<UserInfo, ApiError> {
        match peer {
            PeerCertificate::Verified(u) => return Ok(u.clone().with_authenticated_group()),
            PeerCertificate::Invalid => return Err(unauthorized()),
            PeerCertificate::None => {}
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        match bearer {
            Some(token) if !token.is_empty() => self
                .authenticate_token(registry, token)
                .await
                .map(UserInfo::with_authenticated_group)
                .ok_or_else(unauthorized),
            _ if self.anonymous => Ok(UserInfo::anonymous()),
            _ => Err(unauthorized()),
        }
    }

    /// A bearer token's user, or None when no authenticator accepts it (TokenReview uses this).
    pub async fn authenticate_token(&self, registry: &Registry, token: &str) -> Option<UserInfo> {
        if let Some(u) = self.tokens.get(token) {
            return Some(u.clone());
        }
        if let Some(u) = bootstrap_token(registry, token).await {
            return Some(u);
        }
        self.service_accounts
            .authenticate(registry, token, &[])
            .await
            .ok()
            .flatten()
    }
}

/// A bootstrap token `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`) checked against the
/// Secret `kube-system/bootstrap-token-<id>` (upstream's `plugin/pkg/auth/authenticator/token/
/// bootstrap`): type `bootstrap.kubernetes.io/token`, `token-secret` equal, usage
/// `usage-bootstrap-authentication` true, not expired, not being deleted.
pub async fn bootstrap_token(registry: &Registry, token: &str) -> Option<UserInfo> {
    let (id, secret) = token.split_once('.')?;
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !valid(id, 6) || !valid(secret, 16) {
        return None;
    }
    let info = resources::find("", "v1", "secrets")?;
    let obj = registry
        .get(info, "kube-system", &format!("bootstrap-token-{id}"))
        .await
        .ok()?;
    let s = &obj.value;
    if s["type"] != "bootstrap.kubernetes.io/token" || !s["metadata"]["deletionTimestamp"].is_null()
    {
        return None;
    }
    let data = |k: &str| -> Option<String> {
        let b = s["data"][k].as_str()?;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
    };
    if data("token-id").is_some_and(|t| t != id) {
        return None;
    }
    // Constant-time comparison of the secret part.
    let want = data("token-secret")?;
    if want.len() != secret.len()
        || want
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    if data("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = data("expiration") {
        let t = chrono::DateTime::parse_from_rfc3339(&exp).ok()?;
        if t < chrono::Utc::now() {
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
    if let Some(extra) = data("auth-extra-groups") {
        for g in extra.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            // Upstream accepts only system:bootstrappers:* extra groups.
            if !g.starts_with("system:bootstrappers:") {
                return None;
            }
            groups.push(g.to_string());
        }
    }
    Some(UserInfo {
        name: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_columns_and_quoted_groups() {
        let t = parse_token_file("# comment\nabc,jane,1001,\"dev,ops\"\n\ndef,bob,1002\n").unwrap();
        assert_eq!(t["abc"].name, "jane");
        assert_eq!(t["abc"].groups, vec!["dev", "ops"]);
        assert_eq!(t["def"].uid, "1002");
        assert!(t["def"].groups.is_empty());
        assert!(parse_token_file("onlytoken,user\n").is_err());
    }
}
