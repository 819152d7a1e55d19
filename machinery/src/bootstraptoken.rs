//! Bootstrap tokens as upstream's `k8s.io/cluster-bootstrap` library has them: the names and
//! keys of the `bootstrap.kubernetes.io/token` Secret and the `cluster-info` ConfigMap
//! (`token/api`), which Secrets may sign (`util/secrets` and the bootstrap signer's
//! `validateSecretForSigning`), and the detached JWS that signs `cluster-info` (`token/jws`).
//!
//! The signature is a compact JWS (RFC 7515) with HS256, the protected header
//! `{"alg":"HS256","kid":"<token-id>"}` and the key the token secret (upstream zero-pads it to
//! 32 bytes for go-jose; HMAC pads to the block size anyway, so the MAC is the same), with the
//! payload elided (`header..signature`, RFC 7515 Appendix F). Verifying recomputes it and compares
//! the whole string, as upstream's `DetachedTokenIsValid` does. Shared by the bootstrap signer
//! (controllers) and the join discovery (the agent), so both produce byte-identical strings.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Bootstrap token Secrets are named `bootstrap-token-<id>`, in kube-system.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
pub const SECRET_NAMESPACE: &str = "kube-system";
/// The Secret's keys.
pub const TOKEN_ID_KEY: &str = "token-id";
pub const TOKEN_SECRET_KEY: &str = "token-secret";
pub const EXPIRATION_KEY: &str = "expiration";
pub const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";
/// The public ConfigMap the signer signs (`kube-public/cluster-info`) and its keys.
pub const CLUSTER_INFO_NAMESPACE: &str = "kube-public";
pub const CLUSTER_INFO_NAME: &str = "cluster-info";
pub const KUBECONFIG_KEY: &str = "kubeconfig";
pub const JWS_SIGNATURE_PREFIX: &str = "jws-kubeconfig-";

/// `(id, secret)` of a token string `<id>.<secret>` (6 and 16 characters of `[a-z0-9]`,
/// upstream's `BootstrapTokenRegexp`).
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let valid = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let (id, secret) = token.trim().split_once('.')?;
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// The detached JWS of `content` for a token (upstream's `ComputeDetachedSignature`).
pub fn compute_detached_signature(content: &str, token_id: &str, token_secret: &str) -> String {
    let mut key = token_secret.as_bytes().to_vec();
    if key.len() < 32 {
        key.resize(32, 0);
    }
    // go-jose writes the header as a JSON object with sorted keys.
    let header = serde_json::json!({"alg": "HS256", "kid": token_id});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(content.as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let (header, _) = input.split_once('.').unwrap_or_default();
    format!("{header}..{}", B64.encode(tag.as_ref()))
}

/// Whether `detached` is the signature of `content` for the token (upstream's
/// `DetachedTokenIsValid`), compared in constant time.
pub fn detached_token_is_valid(
    detached: &str,
    content: &str,
    token_id: &str,
    token_secret: &str,
) -> bool {
    let want = compute_detached_signature(content, token_id, token_secret);
    want.len() == detached.len()
        && want
            .bytes()
            .zip(detached.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A Secret's data value as text (empty when absent), upstream's `GetData`.
pub fn get_data(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
        .unwrap_or_default()
}

/// When the token expires (its `expiration`, RFC 3339), if it does. An unparsable expiration
/// counts as already expired, as upstream's `HasExpired`.
pub fn expiration(secret: &Secret) -> Option<k8s_openapi::jiff::Timestamp> {
    let text = get_data(secret, EXPIRATION_KEY);
    if text.is_empty() {
        return None;
    }
    Some(
        text.parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// `(token id, token secret)` of a Secret that may sign `cluster-info` at `now` (upstream's
/// `validateSecretForSigning`): of the bootstrap-token type, named `bootstrap-token-<id>` with
/// the same `token-id`, a `token-secret`, not expired, and `usage-bootstrap-signing: "true"`.
pub fn signing_token(
    secret: &Secret,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<(String, String)> {
    if secret.type_.as_deref() != Some(SECRET_TYPE) {
        return None;
    }
    let name_id = secret
        .metadata
        .name
        .as_deref()?
        .strip_prefix(SECRET_PREFIX)?;
    let id = get_data(secret, TOKEN_ID_KEY);
    if id.is_empty() || id != name_id {
        return None;
    }
    let token_secret = get_data(secret, TOKEN_SECRET_KEY);
    if token_secret.is_empty() {
        return None;
    }
    if expiration(secret).is_some_and(|t| t <= now) {
        return None;
    }
    if get_data(secret, USAGE_SIGNING_KEY) != "true" {
        return None;
    }
    Some((id, token_secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    const CONTENT: &str = "Hello from the other side. I must have called a thousand times.";

    /// Upstream's test vectors (`cluster-bootstrap/token/jws/jws_test.go`).
    #[test]
    fn detached_signature_matches_upstream() {
        assert_eq!(
            compute_detached_signature(CONTENT, "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..VShe2taLd-YTrmWuRkcL_8QTNDHYxQIEBsAYYiIj1_8"
        );
        assert_eq!(
            compute_detached_signature("", "joshua", "my voice is my passcode"),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..7Ui1ALizW4jXphVUB7xUqC9vLYLL9RZeOFfVLoB7Tgk"
        );
        assert_eq!(
            compute_detached_signature(CONTENT, "joshua", ""),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6Impvc2h1YSJ9..UfkqvDGiIFxrMnFseDj9LYJOLNrvjW8aHhF71mvvAs8"
        );
        let sig = compute_detached_signature(CONTENT, "joshua", "my voice is my passcode");
        assert!(detached_token_is_valid(
            &sig,
            CONTENT,
            "joshua",
            "my voice is my passcode"
        ));
        assert!(!detached_token_is_valid(
            &format!("{sig}foo"),
            CONTENT,
            "joshua",
            "my voice is my passcode"
        ));
        assert!(!detached_token_is_valid(
            &sig,
            CONTENT,
            "joshua",
            "my voice is not my passcode"
        ));
    }

    #[test]
    fn token_strings() {
        assert_eq!(
            parse_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef0123456789abcdef",
            "abcdef.0123456789abcde",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret {
            type_: Some(SECRET_TYPE.into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        s.metadata.name = Some(name.into());
        s
    }

    #[test]
    fn which_secrets_sign() {
        let now: k8s_openapi::jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let ok = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-signing", "true"),
        ];
        let cases: Vec<(&str, Secret, bool)> = vec![
            ("valid", secret("bootstrap-token-abcdef", &ok), true),
            (
                "name mismatch",
                secret("bootstrap-token-zzzzzz", &ok),
                false,
            ),
            ("bad name", secret("token-abcdef", &ok), false),
            (
                "no signing usage",
                secret("bootstrap-token-abcdef", &ok[..2]),
                false,
            ),
            (
                "usage false",
                secret(
                    "bootstrap-token-abcdef",
                    &[ok[0], ok[1], ("usage-bootstrap-signing", "false")],
                ),
                false,
            ),
            (
                "no secret",
                secret("bootstrap-token-abcdef", &[ok[0], ok[2]]),
                false,
            ),
            (
                "expired",
                secret(
                    "bootstrap-token-abcdef",
                    &[ok[0], ok[1], ok[2], ("expiration", "2025-12-31T23:00:00Z")],
                ),
                false,
            ),
            (
                "unparsable expiration",
                secret(
                    "bootstrap-token-abcdef",
                    &[ok[0], ok[1], ok[2], ("expiration", "tomorrow")],
                ),
                false,
            ),
            (
                "expires later",
                secret(
                    "bootstrap-token-abcdef",
                    &[ok[0], ok[1], ok[2], ("expiration", "2026-01-02T00:00:00Z")],
                ),
                true,
            ),
            (
                "other type",
                {
                    let mut s = secret("bootstrap-token-abcdef", &ok);
                    s.type_ = Some("Opaque".into());
                    s
                },
                false,
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(signing_token(&s, now).is_some(), want, "{name}");
        }
    }
}
