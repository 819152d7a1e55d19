//! Who is calling the kubelet server (upstream's `DelegatingAuthenticatorConfig` as the kubelet
//! builds it in `BuildAuthn`): a union of
//!
//! 1. **x509 client certificates** verified against the client CA (`authentication.x509.
//!    clientCAFile`, or the CA of the kubeconfig's cluster when none is configured): CN is the
//!    user, O the groups. The TLS handshake only asks for a certificate (Go's
//!    `RequestClientCert`); verification happens here, so a certificate from another CA is a 401
//!    rather than a broken handshake, as upstream;
//! 2. **bearer tokens** (`Authorization: Bearer …`, or for WebSocket clients the
//!    `base64url.bearer.authorization.k8s.io.<token>` subprotocol) checked with a TokenReview to
//!    the API server (`authentication.webhook`), answers cached for `cacheTTL` (2m) keyed by the
//!    token's hash.
//!
//! Authenticated users get `system:authenticated`. When both fail the error wins (a bad token is
//! never anonymous); when there are no credentials at all the request is `system:anonymous` in
//! `system:unauthenticated` if `authentication.anonymous.enabled`, otherwise unauthenticated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use super::cache::TtlCache;

pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// How long a TokenReview may take (upstream's `DefaultTokenAccessReviewTimeout`).
pub const TOKEN_REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// An authenticated caller, as a SubjectAccessReview names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            ..Default::default()
        }
    }

    /// Adds `system:authenticated` unless present (upstream's `AuthenticatedGroupAdder`).
    fn authenticated(mut self) -> UserInfo {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// Why a request is not authenticated: the failures of the credentials it carried (none = it
/// carried none and anonymous requests are off).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unauthenticated {
    pub reasons: Vec<String>,
}

/// The client CA: the roots client certificates must chain to.
#[derive(Clone)]
pub struct ClientCa {
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").finish_non_exhaustive()
    }
}

impl ClientCa {
    /// The CA certificates of a PEM bundle.
    pub fn from_pem(pem: &[u8]) -> Result<ClientCa, String> {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        Self::from_der(certs)
    }

    /// CA certificates in DER.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<ClientCa, String> {
        if certs.is_empty() {
            return Err("no CA certificate".into());
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in certs {
            roots.add(c).map_err(|e| e.to_string())?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| e.to_string())?;
        Ok(ClientCa { verifier })
    }

    /// The CA names the server sends as hints in its certificate request.
    pub fn hints(&self) -> Vec<rustls::DistinguishedName> {
        self.verifier.root_hint_subjects().to_vec()
    }

    /// The user of a presented chain (leaf first), once it verifies as a client certificate of
    /// this CA (upstream's x509 authenticator with `CommonNameUserConversion`).
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<Option<UserInfo>, String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Ok(None);
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
            .map_err(|e| format!("verifying certificate: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("parsing certificate: {e}"))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or("");
        if name.is_empty() {
            // Upstream: a certificate without a common name is no identity.
            return Ok(None);
        }
        Ok(Some(UserInfo {
            name: name.to_string(),
            groups: subject
                .iter_organization()
                .filter_map(|o| o.as_str().ok().map(str::to_string))
                .collect(),
            ..Default::default()
        }))
    }
}

/// Asks the API server about a token (the seam unit tests replace).
pub type TokenReviewer =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<TokenReviewStatus, String>> + Send + Sync>;

/// TokenReviews through the kubelet's API client.
pub fn api_token_reviewer(client: kube::Client) -> TokenReviewer {
    Arc::new(move |token: String| {
        let api: kube::Api<TokenReview> = kube::Api::all(client.clone());
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    audiences: None,
                },
                ..Default::default()
            };
            let created = tokio::time::timeout(
                TOKEN_REVIEW_TIMEOUT,
                api.create(&kube::api::PostParams::default(), &review),
            )
            .await
            .map_err(|_| "TokenReview timed out".to_string())?
            .map_err(|e| e.to_string())?;
            Ok(created.status.unwrap_or_default())
        })
    })
}

/// The webhook token authenticator with its cache.
pub struct TokenWebhook {
    review: TokenReviewer,
    ttl: Duration,
    cache: TtlCache<Option<UserInfo>>,
}

impl TokenWebhook {
    pub fn new(review: TokenReviewer, ttl: Duration) -> TokenWebhook {
        TokenWebhook {
            review,
            ttl,
            cache: TtlCache::default(),
        }
    }

    /// The token's user; `None` when the API server says it is not authenticated. Errors (the
    /// API server unreachable) are not cached.
    async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, String> {
        let key = hex(&Sha256::digest(token.as_bytes()));
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let status = (self.review)(token.to_string()).await?;
        let user = match status.authenticated {
            Some(true) => status.user.map(|u| UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }),
            _ => None,
        };
        self.cache.insert(key, user.clone(), self.ttl);
        Ok(user)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kubelet server's authenticator.
pub struct Authenticator {
    /// Client certificates; `None` turns x509 authentication off.
    pub client_ca: Option<ClientCa>,
    /// Bearer tokens; `None` turns them off.
    pub tokens: Option<TokenWebhook>,
    /// Requests without credentials are `system:anonymous`.
    pub anonymous: bool,
}

impl Authenticator {
    /// Authenticates a request from its verified-later client chain and its headers.
    pub async fn authenticate(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
        headers: &http::HeaderMap,
    ) -> Result<UserInfo, Unauthenticated> {
        let mut reasons = Vec::new();
        if let (Some(ca), Some(chain)) = (&self.client_ca, chain.filter(|c| !c.is_empty())) {
            match ca.verify(chain) {
                Ok(Some(user)) => return Ok(user.authenticated()),
                Ok(None) => {}
                Err(e) => reasons.push(e),
            }
        }
        if let Some(tokens) = &self.tokens {
            if let Some(token) = bearer_token(headers).or_else(|| websocket_token(headers)) {
                match tokens.authenticate(&token).await {
                    Ok(Some(user)) => return Ok(user.authenticated()),
                    Ok(None) => reasons.push("invalid bearer token".into()),
                    Err(e) => reasons.push(format!("token review: {e}")),
                }
            }
        }
        if reasons.is_empty() && self.anonymous {
            return Ok(UserInfo::anonymous());
        }
        Err(Unauthenticated { reasons })
    }
}

/// The token of `Authorization: Bearer <token>` (upstream's `bearertoken` authenticator: the
/// scheme is case-insensitive, an empty token is none).
fn bearer_token(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The WebSocket subprotocol that carries a bearer token (upstream's websocket protocol
/// authenticator; browsers cannot set `Authorization` on a WebSocket).
const WEBSOCKET_TOKEN_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// The token of a `Sec-WebSocket-Protocol: base64url.bearer.authorization.k8s.io.<token>` of a
/// WebSocket upgrade (the token base64url-encoded without padding).
fn websocket_token(headers: &http::HeaderMap) -> Option<String> {
    use base64::Engine;
    let upgrade = headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WEBSOCKET_TOKEN_PREFIX))
        .and_then(|t| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
        })
        .and_then(|t| String::from_utf8(t).ok())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::authentication::v1::UserInfo as ApiUser;

    use super::*;

    fn ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "test-ca");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (rcgen::Issuer::new(p, key), cert.pem())
    }

    fn client_cert(
        issuer: &rcgen::Issuer<'static, rcgen::KeyPair>,
        cn: &str,
        o: &str,
    ) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, o);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        p.signed_by(&key, issuer).unwrap().der().clone()
    }

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn reviewer(calls: Arc<AtomicUsize>) -> TokenReviewer {
        Arc::new(move |token: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(if token == "good" {
                    TokenReviewStatus {
                        authenticated: Some(true),
                        user: Some(ApiUser {
                            username: Some("alice".into()),
                            groups: Some(vec!["devs".into()]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }
                } else {
                    TokenReviewStatus {
                        authenticated: Some(false),
                        ..Default::default()
                    }
                })
            })
        })
    }

    #[tokio::test]
    async fn certificates_tokens_and_anonymous_as_upstream() {
        let (issuer, pem) = ca();
        let (other, _) = ca();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut authn = Authenticator {
            client_ca: Some(ClientCa::from_pem(pem.as_bytes()).unwrap()),
            tokens: Some(TokenWebhook::new(
                reviewer(calls.clone()),
                Duration::from_secs(60),
            )),
            anonymous: false,
        };
        let none = http::HeaderMap::new();

        let good = [client_cert(&issuer, "bob", "ops")];
        let u = authn.authenticate(Some(&good), &none).await.unwrap();
        assert_eq!(u.name, "bob");
        assert_eq!(u.groups, ["ops", AUTHENTICATED_GROUP]);

        let forged = [client_cert(&other, "bob", "system:masters")];
        let e = authn.authenticate(Some(&forged), &none).await.unwrap_err();
        assert!(e.reasons[0].contains("verifying certificate"), "{e:?}");

        // A good token rescues a bad certificate (a union); answers are cached.
        for _ in 0..3 {
            let u = authn
                .authenticate(Some(&forged), &headers("Bearer good"))
                .await
                .unwrap();
            assert_eq!(u.name, "alice");
            assert_eq!(u.groups, ["devs", AUTHENTICATED_GROUP]);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "reviewed once, then cached"
        );

        let e = authn
            .authenticate(None, &headers("Bearer garbage"))
            .await
            .unwrap_err();
        assert_eq!(e.reasons, ["invalid bearer token"]);

        // No credentials: unauthenticated, or anonymous when enabled; a bad token never is.
        assert_eq!(
            authn.authenticate(None, &none).await.unwrap_err(),
            Unauthenticated::default()
        );
        authn.anonymous = true;
        let anon = authn.authenticate(None, &none).await.unwrap();
        assert_eq!(anon.name, ANONYMOUS_USER);
        assert_eq!(anon.groups, [UNAUTHENTICATED_GROUP]);
        assert!(authn
            .authenticate(None, &headers("Bearer garbage"))
            .await
            .is_err());
    }

    #[test]
    fn bearer_tokens_are_read_as_upstream() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc".into()));
        assert_eq!(bearer_token(&headers("bearer  abc ")), Some("abc".into()));
        assert_eq!(bearer_token(&headers("Basic abc")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);

        let mut ws = http::HeaderMap::new();
        ws.insert(http::header::UPGRADE, "websocket".parse().unwrap());
        ws.insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            // base64url("good") without padding.
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.Z29vZA"
                .parse()
                .unwrap(),
        );
        assert_eq!(websocket_token(&ws), Some("good".into()));
        ws.remove(http::header::UPGRADE);
        assert_eq!(websocket_token(&ws), None, "only on a WebSocket upgrade");
    }
}
