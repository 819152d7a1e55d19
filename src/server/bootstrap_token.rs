//! The join token: a kubeadm-style bootstrap token (`<id>.<secret>`, 6 and 16 characters of
//! `[a-z0-9]`) kept in `DIR/server/token` and as the `bootstrap.kubernetes.io/token` Secret
//! `bootstrap-token-<id>` in kube-system, the object upstream's bootstrap-token authenticator
//! looks tokens up in. Agents present it to join; the server keeps the same token across restarts.

use std::path::Path;

use anyhow::Context;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;
use rand::Rng;

/// Characters of a token's id and secret (upstream's `validBootstrapTokenChars`).
const CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// The group every node token adds (kubeadm's `system:bootstrappers:kubeadm:default-node-token`).
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:capstan:default-node-token";

/// A bootstrap token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    pub secret: String,
}

impl BootstrapToken {
    /// A fresh random token.
    pub fn generate() -> BootstrapToken {
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
                .collect()
        };
        BootstrapToken {
            id: pick(6),
            secret: pick(16),
        }
    }

    /// Parses `<id>.<secret>` (upstream's `BootstrapTokenRegexp`).
    pub fn parse(s: &str) -> anyhow::Result<BootstrapToken> {
        let valid = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| CHARS.contains(&b));
        match s.trim().split_once('.') {
            Some((id, secret)) if valid(id, 6) && valid(secret, 16) => Ok(BootstrapToken {
                id: id.into(),
                secret: secret.into(),
            }),
            _ => anyhow::bail!(
                "the bootstrap token {s:?} is invalid: it must match \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
            ),
        }
    }

    /// The token file's content and what agents are given.
    pub fn to_token_string(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret's name.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The Secret upstream's authenticator and signer read.
    pub fn secret(&self) -> Secret {
        let data = [
            ("token-id", self.id.as_str()),
            ("token-secret", self.secret.as_str()),
            ("usage-bootstrap-authentication", "true"),
            ("usage-bootstrap-signing", "true"),
            ("auth-extra-groups", NODE_TOKEN_GROUP),
            ("description", "The join token of capstan server."),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: Some("kube-system".into()),
                ..Default::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// The token in `path`, or a new one written there (mode 0600).
pub fn load_or_create(path: &Path) -> anyhow::Result<BootstrapToken> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return BootstrapToken::parse(&text).with_context(|| format!("reading {}", path.display()));
    }
    let token = BootstrapToken::generate();
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, format!("{}\n", token.to_token_string()).as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// Makes sure the token's Secret exists (it is kept as it is when it does).
pub async fn ensure_secret(client: &kube::Client, token: &BootstrapToken) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    match secrets
        .create(&PostParams::default(), &token.secret())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating Secret {}", token.secret_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format() {
        let t = BootstrapToken::generate();
        let s = t.to_token_string();
        assert_eq!(BootstrapToken::parse(&s).unwrap(), t);
        assert_eq!(t.secret_name(), format!("bootstrap-token-{}", t.id));
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_ok());
        assert!(BootstrapToken::parse("ABCDEF.0123456789abcdef").is_err());
        assert!(BootstrapToken::parse("abcde.0123456789abcdef").is_err());
        assert!(BootstrapToken::parse("abcdef0123456789abcdef").is_err());
    }

    #[test]
    fn secret() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let s = t.secret();
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = s.data.unwrap();
        assert_eq!(data["token-id"].0, b"abcdef");
        assert_eq!(data["token-secret"].0, b"0123456789abcdef");
    }
}
