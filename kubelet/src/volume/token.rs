//! Service account tokens for `serviceAccountToken` projections (upstream's token manager,
//! `pkg/kubelet/token/token_manager.go`). Volume setup is synchronous, so a pod worker first
//! [`prefetch`]es the tokens its pod's projections need through a [`TokenRequester`] and hands
//! the result to setup as a [`TokenProvider`].
//!
//! [`ApiTokenRequester`] calls the TokenRequest API (`POST
//! serviceaccounts/<name>/token`, bound to the pod) and keeps each token until 80% of its
//! lifetime or 24 hours have passed, as upstream does ([`requires_refresh`]); the pod worker
//! asks again at every sync (at least every resync period), and volume setup rewrites the token
//! file when it changed. A failed request fails volume setup with upstream's
//! `failed to fetch token: …` message.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest as ApiTokenRequest};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;

use super::{TokenProvider, TokenRequest};

/// Asks the API for a token (a trait so tests and other issuers can stand in).
pub trait TokenRequester: Send + Sync {
    fn request<'a>(&'a self, req: &'a TokenRequest) -> BoxFuture<'a, Result<String, String>>;
}

/// The TokenRequest API through the kubelet's client, with upstream's token cache.
pub struct ApiTokenRequester {
    client: kube::Client,
    cache: Mutex<HashMap<TokenKey, (String, Instant, Duration)>>,
}

type TokenKey = (String, String, Vec<String>, i64, String);

impl ApiTokenRequester {
    pub fn new(client: kube::Client) -> ApiTokenRequester {
        ApiTokenRequester {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenRequester for ApiTokenRequester {
    fn request<'a>(&'a self, req: &'a TokenRequest) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let key = (
                req.namespace.clone(),
                req.service_account.clone(),
                req.audiences.clone(),
                req.expiration_seconds,
                req.pod_uid.clone(),
            );
            if let Some((token, at, ttl)) = self.cache.lock().get(&key) {
                if !requires_refresh(at.elapsed(), *ttl) {
                    return Ok(token.clone());
                }
            }
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &req.namespace);
            let body = ApiTokenRequest {
                spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
                    audiences: req.audiences.clone(),
                    expiration_seconds: Some(req.expiration_seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(req.pod_name.clone()),
                        uid: Some(req.pod_uid.clone()),
                    }),
                },
                ..Default::default()
            };
            let tr = api
                .create_token_request(&req.service_account, &PostParams::default(), &body)
                .await
                .map_err(|e| match e {
                    kube::Error::Api(s) => format!("failed to fetch token: {}", s.message),
                    other => format!("failed to fetch token: {other}"),
                })?;
            let status = tr
                .status
                .ok_or("failed to fetch token: the response has no status")?;
            let ttl = status
                .expiration_timestamp
                .0
                .duration_since(k8s_openapi::jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::from_secs(req.expiration_seconds.max(0) as u64));
            self.cache
                .lock()
                .insert(key, (status.token.clone(), Instant::now(), ttl));
            Ok(status.token)
        })
    }
}

/// Tokens older than this are refreshed whatever their lifetime (upstream's `maxTTL`).
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Upstream's `requiresRefresh`: a token `age` old that was valid for `ttl` when fetched is
/// fetched again once 80% of its lifetime has passed, or once it is 24 hours old (tokens the
/// API server extends to a year).
pub fn requires_refresh(age: Duration, ttl: Duration) -> bool {
    age >= ttl.mul_f64(0.8) || age >= MAX_TOKEN_AGE
}

/// Tokens fetched for one sync of a pod, answered synchronously to volume setup.
#[derive(Debug, Default)]
pub struct PrefetchedTokens {
    tokens: Vec<(TokenRequest, Result<String, String>)>,
}

impl TokenProvider for PrefetchedTokens {
    fn token(&self, req: &TokenRequest) -> Result<String, String> {
        self.tokens
            .iter()
            .find(|(r, _)| r == req)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| Err("failed to fetch token: not requested".into()))
    }
}

/// The token requests of `pod`'s serviceAccountToken projections (as projected setup makes them).
pub fn token_requests(pod: &Pod) -> Vec<TokenRequest> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let mut out = Vec::new();
    for v in spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(t) = &p.service_account_token {
                out.push(super::service_account_token_request(pod, ns, t));
            }
        }
    }
    out
}

/// Fetches every token `pod` needs (none when it has no projection).
pub async fn prefetch(requester: &dyn TokenRequester, pod: &Pod) -> PrefetchedTokens {
    let mut tokens = Vec::new();
    for req in token_requests(pod) {
        let t = requester.request(&req).await;
        tokens.push((req, t));
    }
    PrefetchedTokens { tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl TokenRequester for Fake {
        fn request<'a>(&'a self, req: &'a TokenRequest) -> BoxFuture<'a, Result<String, String>> {
            Box::pin(async move {
                if req.audiences == ["down"] {
                    Err(
                        "failed to fetch token: the server could not find the requested resource"
                            .to_string(),
                    )
                } else {
                    Ok(format!("tok-for-{}", req.service_account))
                }
            })
        }
    }

    #[test]
    fn refresh_after_80_percent_or_a_day() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let cases = [
            (Duration::from_secs(0), Duration::from_secs(3607), false),
            (Duration::from_secs(2885), Duration::from_secs(3607), false),
            (Duration::from_secs(2886), Duration::from_secs(3607), true),
            (h(2), Duration::from_secs(3607), true),
            (h(23), h(365 * 24), false),
            (h(24), h(365 * 24), true),
            (Duration::from_secs(1), Duration::from_secs(0), true),
        ];
        for (age, ttl, want) in cases {
            assert_eq!(requires_refresh(age, ttl), want, "age {age:?} ttl {ttl:?}");
        }
    }

    #[tokio::test]
    async fn prefetches_each_projection() {
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata: {name: p, namespace: ns, uid: u1}
spec:
  serviceAccountName: builder
  containers: [{name: c, image: i}]
  volumes:
  - name: t
    projected:
      sources:
      - serviceAccountToken: {path: token, audience: vault, expirationSeconds: 600}
      - serviceAccountToken: {path: other, audience: down}
"#,
        )
        .unwrap();
        let reqs = token_requests(&pod);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].service_account, "builder");
        assert_eq!(reqs[0].expiration_seconds, 600);
        assert_eq!(reqs[1].expiration_seconds, 3600);
        let got = prefetch(&Fake, &pod).await;
        assert_eq!(got.token(&reqs[0]).unwrap(), "tok-for-builder");
        let err = got.token(&reqs[1]).unwrap_err();
        assert!(err.starts_with("failed to fetch token: "), "{err}");
    }
}
