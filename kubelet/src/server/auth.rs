//! The one authentication and authorization check every request to the kubelet server passes
//! (upstream's `InstallAuthFilter`): authenticate the caller (`authn`: client certificates,
//! webhook bearer tokens, anonymous when enabled) or answer 401 `Unauthorized`; derive the
//! request's attributes — a verb on a `nodes` subresource named after the node (`/stats` →
//! `nodes/stats`, `/metrics` → `nodes/metrics`, `/logs` → `nodes/log`, `/checkpoint` →
//! `nodes/checkpoint`, everything else → `nodes/proxy`; with 1.33's fine-grained kubelet
//! authorization `/pods`, `/healthz` and `/configz` first ask `nodes/pods`, `nodes/healthz`,
//! `nodes/configz` and fall back to `nodes/proxy`) — and authorize them (`authz`: a
//! SubjectAccessReview, or AlwaysAllow), answering 403 with upstream's
//! `Forbidden (user=…, verb=…, resource=nodes, subresource(s)=[…])` when no subresource is
//! allowed. [`KubeletAuth::from_config`] builds both from the KubeletConfiguration's
//! `authentication` and `authorization`.

pub mod authn;
pub mod authz;
pub mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, Response, StatusCode};
use axum::middleware::Next;
use rustls::pki_types::CertificateDer;

use crate::config::{Config, KubeletAuthorizationMode};

/// What a request asks, as upstream's kubelet authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAttributes {
    /// `get`, `create`, `update`, `patch`, `delete` ("" for other methods, as upstream).
    pub verb: &'static str,
    /// The `nodes` subresources asked in order; any one allowed lets the request through.
    pub subresources: Vec<&'static str>,
    pub path: String,
}

/// Upstream's `isSubpath`: `path` is `prefix` (without a trailing slash) or below it.
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Upstream's `GetRequestAttributes` mapping for a method and path (with the
/// `KubeletFineGrainedAuthz` gate on, its 1.33 default).
pub fn attributes(method: &Method, path: &str) -> RequestAttributes {
    let verb = match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let mut subresources = Vec::with_capacity(2);
    if is_subpath(path, "/pods") || path.starts_with("/runningpods/") {
        subresources.push("pods");
    } else if is_subpath(path, "/healthz") {
        subresources.push("healthz");
    } else if is_subpath(path, "/configz") {
        subresources.push("configz");
    }
    subresources.push(if is_subpath(path, "/stats") {
        "stats"
    } else if is_subpath(path, "/metrics") {
        "metrics"
    } else if is_subpath(path, "/logs") {
        "log"
    } else if is_subpath(path, "/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    });
    RequestAttributes {
        verb,
        subresources,
        path: path.to_string(),
    }
}

/// The client certificate chain of the request's TLS connection (leaf first), not verified
/// yet: `authn` verifies it.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificates(pub Option<Arc<Vec<CertificateDer<'static>>>>);

/// Failures to set up authentication.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading client CA file {}: {source}", path.display())]
    ReadClientCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("client CA file {}: {message}", path.display())]
    ClientCa { path: PathBuf, message: String },
    #[error("the kubeconfig's cluster CA: {0}")]
    KubeconfigCa(String),
}

/// The kubelet server's authenticator and authorizer, and the node they guard.
pub struct KubeletAuth {
    pub authenticator: authn::Authenticator,
    pub authorizer: authz::Authorizer,
    pub node_name: String,
}

impl KubeletAuth {
    /// Builds both from the configuration; the webhooks go through `client`. The client CA is
    /// `authentication.x509.clientCAFile`, or the CA of the kubeconfig's cluster (or the
    /// in-cluster CA) when none is configured.
    pub async fn from_config(config: &Config, client: kube::Client) -> Result<Self, AuthError> {
        let authn = &config.settings.authentication;
        let client_ca = match authn
            .x509
            .client_ca_file
            .as_deref()
            .filter(|f| !f.is_empty())
        {
            Some(file) => Some(client_ca_file(Path::new(file))?),
            None => kubeconfig_ca(config.kubeconfig.as_deref()).await?,
        };
        if client_ca.is_none() {
            tracing::warn!("no client CA: client certificates to the kubelet server are ignored");
        }
        let tokens = authn.webhook.enabled.then(|| {
            authn::TokenWebhook::new(
                authn::api_token_reviewer(client.clone()),
                authn.webhook.cache_ttl,
            )
        });
        let authz = &config.settings.authorization;
        let authorizer = match authz.mode {
            KubeletAuthorizationMode::AlwaysAllow => authz::Authorizer::AlwaysAllow,
            KubeletAuthorizationMode::Webhook => {
                authz::Authorizer::Webhook(authz::WebhookAuthorizer::new(
                    authz::api_access_reviewer(client),
                    authz.webhook.cache_authorized_ttl,
                    authz.webhook.cache_unauthorized_ttl,
                ))
            }
        };
        Ok(KubeletAuth {
            authenticator: authn::Authenticator {
                client_ca,
                tokens,
                anonymous: authn.anonymous.enabled,
            },
            authorizer,
            node_name: config.node_name.clone(),
        })
    }

    /// Decides on a request.
    pub async fn decide(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
        headers: &http::HeaderMap,
        attrs: &RequestAttributes,
    ) -> Decision {
        let user = match self.authenticator.authenticate(chain, headers).await {
            Ok(u) => u,
            Err(e) => {
                if !e.reasons.is_empty() {
                    tracing::debug!(path = %attrs.path, "unable to authenticate the request: {}", e.reasons.join("; "));
                }
                return Decision::Deny {
                    code: StatusCode::UNAUTHORIZED,
                    message: "Unauthorized".into(),
                };
            }
        };
        for subresource in &attrs.subresources {
            let q = authz::Question {
                user: &user,
                verb: attrs.verb,
                subresource,
                node: &self.node_name,
            };
            match self.authorizer.authorize(q).await {
                Ok(true) => return Decision::Allow,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user = %user.name, verb = attrs.verb, subresource, "authorization error: {e}");
                    return Decision::Deny {
                        code: StatusCode::INTERNAL_SERVER_ERROR,
                        message: format!(
                            "Authorization error (user={}, verb={}, resource=nodes, subresource={subresource})",
                            user.name, attrs.verb
                        ),
                    };
                }
            }
        }
        Decision::Deny {
            code: StatusCode::FORBIDDEN,
            message: forbidden_message(&user.name, attrs),
        }
    }
}

/// Upstream's 403 body (Go's `%v` of the subresource list).
pub fn forbidden_message(user: &str, attrs: &RequestAttributes) -> String {
    format!(
        "Forbidden (user={user}, verb={}, resource=nodes, subresource(s)=[{}])\n",
        attrs.verb,
        attrs.subresources.join(" ")
    )
}

fn client_ca_file(path: &Path) -> Result<authn::ClientCa, AuthError> {
    let pem = std::fs::read(path).map_err(|source| AuthError::ReadClientCa {
        path: path.to_path_buf(),
        source,
    })?;
    authn::ClientCa::from_pem(&pem).map_err(|message| AuthError::ClientCa {
        path: path.to_path_buf(),
        message,
    })
}

/// The CA the kubelet trusts for the API server: its kubeconfig's cluster, or in-cluster.
async fn kubeconfig_ca(kubeconfig: Option<&Path>) -> Result<Option<authn::ClientCa>, AuthError> {
    let err = |e: &dyn std::fmt::Display| AuthError::KubeconfigCa(e.to_string());
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::incluster().map_err(|e| err(&e))?,
    };
    match config.root_cert {
        Some(certs) if !certs.is_empty() => {
            authn::ClientCa::from_der(certs.into_iter().map(CertificateDer::from).collect())
                .map(Some)
                .map_err(AuthError::KubeconfigCa)
        }
        _ => Ok(None),
    }
}

/// The decision on one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused with this status and message (401 unauthenticated, 403 forbidden).
    Deny {
        code: StatusCode,
        message: String,
    },
}

/// The filter in front of every handler.
pub async fn filter(
    State(auth): State<Arc<KubeletAuth>>,
    req: Request,
    next: Next,
) -> Response<Body> {
    let attrs = attributes(req.method(), req.uri().path());
    let chain = req
        .extensions()
        .get::<PeerCertificates>()
        .and_then(|p| p.0.clone());
    match auth
        .decide(chain.as_deref().map(Vec::as_slice), req.headers(), &attrs)
        .await
    {
        Decision::Allow => next.run(req).await,
        Decision::Deny { code, message } => {
            tracing::debug!(path = %attrs.path, verb = attrs.verb, "kubelet server refused: {}", message.trim_end());
            let mut r = Response::new(Body::from(message));
            *r.status_mut() = code;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_node_subresources_as_upstream() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            (a.verb, a.subresources)
        };
        assert_eq!(
            a(Method::GET, "/containerLogs/ns/p/c"),
            ("get", vec!["proxy"])
        );
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", vec!["proxy"]));
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", vec!["stats"]));
        assert_eq!(
            a(Method::GET, "/metrics/resource"),
            ("get", vec!["metrics"])
        );
        assert_eq!(a(Method::GET, "/logs/"), ("get", vec!["log"]));
        assert_eq!(
            a(Method::GET, "/healthz"),
            ("get", vec!["healthz", "proxy"])
        );
        assert_eq!(a(Method::GET, "/pods"), ("get", vec!["pods", "proxy"]));
        assert_eq!(
            a(Method::GET, "/configz"),
            ("get", vec!["configz", "proxy"])
        );
        assert_eq!(a(Method::GET, "/podsx"), ("get", vec!["proxy"]));
        assert_eq!(a(Method::HEAD, "/spec/"), ("", vec!["proxy"]));
        assert_eq!(
            forbidden_message("bob", &attributes(&Method::GET, "/pods")),
            "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[pods proxy])\n"
        );
    }

    #[tokio::test]
    async fn unauthenticated_is_401_and_unauthorized_is_403() {
        let review: authz::AccessReviewer = Arc::new(|spec| {
            Box::pin(async move {
                let sub = spec.resource_attributes.unwrap().subresource.unwrap();
                Ok(
                    k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus {
                        allowed: spec.user.as_deref() == Some(authn::ANONYMOUS_USER)
                            && sub == "proxy",
                        ..Default::default()
                    },
                )
            })
        });
        let mut auth = KubeletAuth {
            authenticator: authn::Authenticator {
                client_ca: None,
                tokens: None,
                anonymous: false,
            },
            authorizer: authz::Authorizer::Webhook(authz::WebhookAuthorizer::new(
                review,
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(1),
            )),
            node_name: "n".into(),
        };
        let h = http::HeaderMap::new();
        let logs = attributes(&Method::GET, "/containerLogs/a/b/c");
        assert_eq!(
            auth.decide(None, &h, &logs).await,
            Decision::Deny {
                code: StatusCode::UNAUTHORIZED,
                message: "Unauthorized".into()
            }
        );
        auth.authenticator.anonymous = true;
        assert_eq!(auth.decide(None, &h, &logs).await, Decision::Allow);
        // /pods falls back to nodes/proxy.
        assert_eq!(
            auth.decide(None, &h, &attributes(&Method::GET, "/pods"))
                .await,
            Decision::Allow
        );
        let stats = attributes(&Method::GET, "/stats/summary");
        assert_eq!(
            auth.decide(None, &h, &stats).await,
            Decision::Deny {
                code: StatusCode::FORBIDDEN,
                message: "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[stats])\n".into()
            }
        );
    }
}
