//! What a caller may do on the kubelet server (upstream's `BuildAuthz`): `AlwaysAllow`, or
//! `Webhook`, which asks the API server a SubjectAccessReview for the request's attributes — verb,
//! resource `nodes`, the subresource (`proxy`, `log`, `stats`, `metrics`, …) and the node's name —
//! exactly what RBAC grants on `nodes/proxy` and friends. Answers are cached as upstream's webhook
//! authorizer does: allowed for `cacheAuthorizedTTL` (5m), not allowed for
//! `cacheUnauthorizedTTL` (30s); an unreachable API server is an error, not a denial, and is not
//! cached.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};

use super::authn::UserInfo;
use super::cache::TtlCache;

/// How long a SubjectAccessReview may take (upstream's webhook authorizer timeout).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the API server a SubjectAccessReview (the seam unit tests replace).
pub type AccessReviewer = Arc<
    dyn Fn(SubjectAccessReviewSpec) -> BoxFuture<'static, Result<SubjectAccessReviewStatus, String>>
        + Send
        + Sync,
>;

/// SubjectAccessReviews through the kubelet's API client.
pub fn api_access_reviewer(client: kube::Client) -> AccessReviewer {
    Arc::new(move |spec: SubjectAccessReviewSpec| {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(client.clone());
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec,
                ..Default::default()
            };
            let created = tokio::time::timeout(
                REVIEW_TIMEOUT,
                api.create(&kube::api::PostParams::default(), &review),
            )
            .await
            .map_err(|_| "SubjectAccessReview timed out".to_string())?
            .map_err(|e| e.to_string())?;
            Ok(created.status.unwrap_or_default())
        })
    })
}

/// The webhook authorizer with its cache.
pub struct WebhookAuthorizer {
    review: AccessReviewer,
    allowed_ttl: Duration,
    denied_ttl: Duration,
    cache: TtlCache<bool>,
}

impl WebhookAuthorizer {
    pub fn new(review: AccessReviewer, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        WebhookAuthorizer {
            review,
            allowed_ttl,
            denied_ttl,
            cache: TtlCache::default(),
        }
    }
}

/// The kubelet server's authorizer.
pub enum Authorizer {
    AlwaysAllow,
    Webhook(WebhookAuthorizer),
}

/// One authorization question: `user` wants `verb` on `nodes/<subresource>` named `node`.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    pub user: &'a UserInfo,
    pub verb: &'a str,
    pub subresource: &'a str,
    pub node: &'a str,
}

impl Question<'_> {
    /// The SubjectAccessReview spec upstream's webhook authorizer sends.
    pub fn spec(&self) -> SubjectAccessReviewSpec {
        let u = self.user;
        SubjectAccessReviewSpec {
            user: Some(u.name.clone()),
            uid: (!u.uid.is_empty()).then(|| u.uid.clone()),
            groups: (!u.groups.is_empty()).then(|| u.groups.clone()),
            extra: (!u.extra.is_empty()).then(|| u.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: None,
                verb: Some(self.verb.to_string()),
                group: None,
                version: Some("v1".into()),
                resource: Some("nodes".into()),
                subresource: Some(self.subresource.to_string()),
                name: Some(self.node.to_string()),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }
    }
}

impl Authorizer {
    /// Whether the question is allowed; `Err` when the API server could not answer.
    pub async fn authorize(&self, q: Question<'_>) -> Result<bool, String> {
        let webhook = match self {
            Authorizer::AlwaysAllow => return Ok(true),
            Authorizer::Webhook(w) => w,
        };
        let spec = q.spec();
        let key = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
        if let Some(allowed) = webhook.cache.get(&key) {
            return Ok(allowed);
        }
        let status = (webhook.review)(spec).await?;
        let allowed = status.allowed && status.denied != Some(true);
        let ttl = if allowed {
            webhook.allowed_ttl
        } else {
            webhook.denied_ttl
        };
        webhook.cache.insert(key, allowed, ttl);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn asks_the_api_server_once_per_question_within_the_ttl() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let review: AccessReviewer = Arc::new(move |spec: SubjectAccessReviewSpec| {
            seen.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                let ra = spec.resource_attributes.unwrap();
                assert_eq!(ra.resource.as_deref(), Some("nodes"));
                assert_eq!(ra.name.as_deref(), Some("node-1"));
                Ok(SubjectAccessReviewStatus {
                    allowed: spec.user.as_deref() == Some("admin")
                        && ra.subresource.as_deref() == Some("proxy"),
                    ..Default::default()
                })
            })
        });
        let authz = Authorizer::Webhook(WebhookAuthorizer::new(
            review,
            Duration::from_secs(300),
            Duration::ZERO,
        ));
        let admin = UserInfo {
            name: "admin".into(),
            ..Default::default()
        };
        let q = |user, subresource| Question {
            user,
            verb: "get",
            subresource,
            node: "node-1",
        };
        for _ in 0..3 {
            assert_eq!(authz.authorize(q(&admin, "proxy")).await, Ok(true));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "an allowed answer is cached"
        );
        // Denials with a zero TTL are asked again.
        assert_eq!(authz.authorize(q(&admin, "stats")).await, Ok(false));
        assert_eq!(authz.authorize(q(&admin, "stats")).await, Ok(false));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(
            Authorizer::AlwaysAllow
                .authorize(q(&UserInfo::default(), "proxy"))
                .await,
            Ok(true)
        );
    }
}
