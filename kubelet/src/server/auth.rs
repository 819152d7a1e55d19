//! The one authentication and authorization check every request to the kubelet server passes
//! (upstream's `InstallAuthFilter`: authenticate the caller, derive the request's attributes,
//! authorize them). Upstream maps a request to a verb on a `nodes` subresource (`/stats` →
//! `nodes/stats`, `/metrics` → `nodes/metrics`, `/logs` → `nodes/log`, `/spec` →
//! `nodes/spec`, everything else → `nodes/proxy`) and asks a SubjectAccessReview; here the
//! attributes are computed the same way and [`authorize`] allows every request. The security
//! issue fills in authentication (client certificates, bearer tokens) and the decision; nothing
//! else in the server needs to change for it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, Response, StatusCode};
use axum::middleware::Next;

/// What a request asks, as upstream's kubelet authorizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestAttributes {
    /// `get`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// The `nodes` subresource: `proxy`, `stats`, `metrics`, `log`, `spec`, `checkpoint`,
    /// `configz`, `healthz`, `pods`.
    pub subresource: &'static str,
    pub path: String,
}

/// Upstream's `GetRequestAttributes` mapping for a method and path.
pub fn attributes(method: &Method, path: &str) -> RequestAttributes {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    };
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else if under("/checkpoint") {
        "checkpoint"
    } else if under("/configz") {
        "configz"
    } else if under("/healthz") {
        "healthz"
    } else if under("/pods") {
        "pods"
    } else {
        "proxy"
    };
    RequestAttributes {
        verb,
        subresource,
        path: path.to_string(),
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

/// Decides on a request. Until the security issue: every request is allowed.
pub fn authorize(_attrs: &RequestAttributes) -> Decision {
    Decision::Allow
}

/// The filter in front of every handler.
pub async fn filter(req: Request, next: Next) -> Response<Body> {
    let attrs = attributes(req.method(), req.uri().path());
    match authorize(&attrs) {
        Decision::Allow => next.run(req).await,
        Decision::Deny { code, message } => {
            tracing::debug!(path = %attrs.path, verb = attrs.verb, "kubelet server refused: {message}");
            let mut r = Response::new(Body::from(message));
            *r.status_mut() = code;
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
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/"), ("get", "log"));
        assert_eq!(a(Method::GET, "/healthz"), ("get", "healthz"));
        assert_eq!(a(Method::GET, "/podsx"), ("get", "proxy"));
        assert_eq!(
            authorize(&attributes(&Method::GET, "/pods")),
            Decision::Allow
        );
    }
}
