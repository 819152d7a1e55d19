//! Calling the matched webhooks (upstream's `mutating/dispatcher.go` and
//! `validating/dispatcher.go`): mutating webhooks one after the other, each seeing the previous
//! one's patch, with one reinvocation round for `reinvocationPolicy: IfNeeded` webhooks whose
//! object a later webhook changed; validating webhooks all at once. A webhook with side effects
//! refuses a dry-run request; a call that fails (connection, TLS, timeout, an answer that is not
//! a valid AdmissionReview for this request) is skipped under failurePolicy Ignore and is a 500
//! "failed calling webhook" under Fail; a denial becomes the webhook's own status, prefixed
//! `admission webhook "<name>" denied the request`.

use std::collections::HashSet;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::client::{self, Endpoint};
use super::config::Target;
use super::matching::{self, Invocation, NamespaceLabels};
use super::review::{self, ResponseError};
use super::Request;
use crate::registry::Registry;
use crate::resources;
use crate::status::ApiError;

/// How a call went wrong.
enum CallError {
    /// upstream's `ErrCallingWebhook`: subject to failurePolicy.
    Calling(String),
    /// Anything else (denial, dry-run refusal): returned as is.
    Refused(ApiError),
}

/// upstream's `ErrCallingWebhook.Error()`.
fn calling(name: &str, reason: impl std::fmt::Display) -> CallError {
    CallError::Calling(format!("failed calling webhook {name:?}: {reason}"))
}

/// `apierrors.NewInternalError(err)`.
fn internal_error(err: &str) -> ApiError {
    let mut e = ApiError::internal(format!("Internal error occurred: {err}"));
    e.details = json!({"causes": [{"message": err}]});
    e
}

/// A `&'static str` for a Status reason a webhook chose: upstream's known reasons, others
/// interned (bounded, so a webhook cannot grow the set without end).
fn static_reason(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    if let Some(k) = KNOWN.iter().find(|k| **k == reason) {
        return k;
    }
    static INTERNED: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = INTERNED.get_or_init(Default::default).lock();
    if let Some(s) = set.get(reason) {
        return s;
    }
    if set.len() >= 256 {
        return "";
    }
    let s: &'static str = Box::leak(reason.to_string().into_boxed_str());
    set.insert(s);
    s
}

/// upstream's `webhookerrors.ToStatusErr`: the webhook's Status with code at least 400 and the
/// message prefixed by who denied it.
pub fn denial(name: &str, status: &Value) -> ApiError {
    let denied_by = format!("admission webhook {name:?} denied the request");
    let code = status["code"]
        .as_u64()
        .filter(|c| *c >= 400 && *c <= 599)
        .unwrap_or(400) as u16;
    let reason = status["reason"].as_str().unwrap_or("");
    let message = match status["message"].as_str().unwrap_or("") {
        "" if !reason.is_empty() => format!("{denied_by}: {reason}"),
        "" => format!("{denied_by} without explanation"),
        m => format!("{denied_by}: {m}"),
    };
    let mut e = ApiError::new(code, static_reason(reason), message);
    if status["details"].is_object() {
        e.details = status["details"].clone();
    }
    e
}

/// Resolves a webhook's target to an address (a service reference goes to the Service's
/// ClusterIP, as upstream's default service resolver) and the URL upstream would print.
fn endpoint(reg: &Registry, target: &Target, timeout_secs: u64) -> Result<Endpoint, String> {
    let (host, port, path, addr_host) = match target {
        Target::Url(u) => {
            let (host, port, path) = client::split_url(u)?;
            (host.clone(), port, path, host)
        }
        Target::Service {
            namespace,
            name,
            path,
            port,
        } => {
            let info = resources::find("", "v1", "services").expect("services are served");
            let svc = reg
                .cacher(info)
                .get(&Registry::key(info, namespace, name))
                .ok_or_else(|| format!("service {name:?} not found"))?;
            let ip = svc.value["spec"]["clusterIP"].as_str().unwrap_or("");
            if ip.is_empty() || ip == "None" {
                return Err(format!("service {namespace}/{name} has no cluster IP"));
            }
            let path = if path.is_empty() { "/" } else { path };
            (
                format!("{name}.{namespace}.svc"),
                *port,
                path.to_string(),
                ip.to_string(),
            )
        }
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    let path = format!("{path}{sep}timeout={timeout_secs}s");
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addr = match addr_host.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port),
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(addr_host.as_str(), port))
            .map_err(|e| format!("dial tcp: lookup {addr_host}: {e}"))?
            .next()
            .ok_or_else(|| format!("dial tcp: lookup {addr_host}: no such host"))?,
    };
    Ok(Endpoint {
        addr,
        server_name: host,
        url: format!("https://{authority}{path}"),
        host: authority,
        path,
    })
}

/// One call of `inv`'s webhook about `object`/`old` (stored form); returns the verified answer.
async fn call(
    reg: &Registry,
    inv: &Invocation,
    req: &Request<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
    mutating: bool,
) -> Result<review::Response, CallError> {
    let hook = &inv.hook;
    if req.dry_run && !matches!(hook.side_effects.as_str(), "None" | "NoneOnDryRun") {
        return Err(CallError::Refused(ApiError::bad_request(format!(
            "admission webhook {:?} does not support dry run",
            hook.name
        ))));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    let object = object.map(|o| matching::to_version(inv.resource, o));
    let old = old.map(|o| matching::to_version(inv.resource, o));
    let body = review::request(&uid, inv, req, object.as_ref(), old.as_ref());
    let ep = endpoint(reg, &hook.target, hook.timeout.as_secs())
        .map_err(|e| calling(&hook.name, format!("failed to call webhook: {e}")))?;
    let (code, bytes) = client::post(
        &ep,
        &hook.ca_bundle,
        serde_json::to_vec(&body).unwrap_or_default(),
        hook.timeout,
    )
    .await
    .map_err(|e| calling(&hook.name, format!("failed to call webhook: {e}")))?;
    if !(200..300).contains(&code) {
        let text = String::from_utf8_lossy(&bytes);
        let why = if text.trim().is_empty() {
            format!("the server responded with the status code {code} but did not return more information")
        } else {
            format!(
                "an error on the server ({:?}) has prevented the request from succeeding",
                text.trim()
            )
        };
        return Err(calling(
            &hook.name,
            format!("failed to call webhook: {why}"),
        ));
    }
    review::response(&bytes, &uid, hook.review_version, mutating).map_err(|e| match e {
        ResponseError::Decode(m) => calling(&hook.name, format!("failed to call webhook: {m}")),
        ResponseError::Invalid(m) => calling(
            &hook.name,
            format!("received invalid webhook response: {m}"),
        ),
    })
}

/// The namespace labels the namespaceSelectors of a request are matched against, read once.
async fn namespace_labels<'a>(
    reg: &Registry,
    req: &Request<'_>,
    object: Option<&'a Value>,
    old: Option<&'a Value>,
) -> Option<NamespaceLabels<'a>> {
    if req.resource.group.is_empty() && req.resource.plural == "namespaces" {
        return Some(NamespaceLabels::Own(matching::own_labels(object, old)));
    }
    if req.namespace.is_empty() {
        return None;
    }
    let info = resources::find("", "v1", "namespaces").expect("namespaces are served");
    let found = match reg
        .cacher(info)
        .get(&Registry::key(info, "", req.namespace))
    {
        Some(o) => Ok(o.value["metadata"]["labels"].as_object().cloned()),
        None => match reg.get(info, "", req.namespace).await {
            Ok(o) => Ok(o.value["metadata"]["labels"].as_object().cloned()),
            Err(_) => Err(matching::MissingNamespace),
        },
    };
    Some(NamespaceLabels::Of(found))
}

/// Whether the selectors let `inv` see this request (`Err` for a missing namespace: 404).
fn selected(
    inv: &Invocation,
    req: &Request<'_>,
    ns: Option<&NamespaceLabels<'_>>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<bool, ApiError> {
    let ns_ok = matching::namespace_matches(&inv.hook, ns)
        .map_err(|_| ApiError::not_found("", "namespaces", req.namespace))?;
    Ok(ns_ok && matching::object_matches(&inv.hook, object, old))
}

/// Runs the mutating webhooks on `object` (stored form) in order, applying their patches;
/// returns their warnings.
pub async fn mutate(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &[Invocation],
    object: &mut Value,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    // (hook index, the object right after its call) for IfNeeded webhooks.
    let mut reinvocable: Vec<(usize, Value)> = Vec::new();
    for (i, inv) in hooks.iter().enumerate() {
        if call_mutating(reg, req, inv, object, old, &mut warnings).await?
            && inv.hook.reinvoke_if_needed
        {
            reinvocable.push((i, object.clone()));
        }
    }
    // Reinvocation: once, for IfNeeded webhooks whose output a later webhook changed.
    let again: Vec<usize> = reinvocable
        .into_iter()
        .filter(|(_, after)| after != object)
        .map(|(i, _)| i)
        .collect();
    for i in again {
        call_mutating(reg, req, &hooks[i], object, old, &mut warnings).await?;
    }
    Ok(warnings)
}

/// One mutating call; Ok(true) when the webhook was called (and its answer applied).
async fn call_mutating(
    reg: &Registry,
    req: &Request<'_>,
    inv: &Invocation,
    object: &mut Value,
    old: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<bool, ApiError> {
    let ns = namespace_labels(reg, req, Some(object), old).await;
    if !selected(inv, req, ns.as_ref(), Some(object), old)? {
        return Ok(false);
    }
    drop(ns);
    let answer = match call(reg, inv, req, Some(object), old, true).await {
        Ok(a) => a,
        Err(CallError::Refused(e)) => return Err(e),
        Err(CallError::Calling(msg)) if inv.hook.fail_open => {
            tracing::warn!(
                "failed calling webhook, failing open {}: {msg}",
                inv.hook.name
            );
            return Ok(false);
        }
        Err(CallError::Calling(msg)) => return Err(internal_error(&msg)),
    };
    if !answer.allowed {
        return Err(denial(&inv.hook.name, &answer.status));
    }
    warnings.extend(answer.warnings);
    if let Some(patch) = answer.patch {
        let current = matching::to_version(inv.resource, object);
        let patched = crate::patch::json_patch(&current, &patch)
            .map_err(|e| internal_error(&e.to_string()))?;
        // As upstream decodes the patched object into its type: unknown fields go.
        let typed = (inv.resource.roundtrip)(&patched).map_err(|e| {
            internal_error(&format!(
                "the patch of admission webhook {:?} does not give a {}: {e}",
                inv.hook.name, inv.resource.kind
            ))
        })?;
        *object = matching::from_version(inv.resource, typed);
    }
    Ok(true)
}

/// The mutating webhooks of a delete: told about the old object (they may deny; there is no
/// object to patch).
pub async fn mutate_delete(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &[Invocation],
    old: &Value,
) -> Result<Vec<String>, ApiError> {
    let ns = namespace_labels(reg, req, None, Some(old)).await;
    let mut warnings = Vec::new();
    for inv in hooks {
        if !selected(inv, req, ns.as_ref(), None, Some(old))? {
            continue;
        }
        match call(reg, inv, req, None, Some(old), true).await {
            Ok(a) if a.allowed => warnings.extend(a.warnings),
            Ok(a) => return Err(denial(&inv.hook.name, &a.status)),
            Err(CallError::Refused(e)) => return Err(e),
            Err(CallError::Calling(msg)) if inv.hook.fail_open => {
                tracing::warn!(
                    "failed calling webhook, failing open {}: {msg}",
                    inv.hook.name
                );
            }
            Err(CallError::Calling(msg)) => return Err(internal_error(&msg)),
        }
    }
    Ok(warnings)
}

/// Runs the validating webhooks concurrently; the first refusal (in webhook order) wins.
pub async fn validate(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &[Invocation],
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<Vec<String>, ApiError> {
    let ns = namespace_labels(reg, req, object, old).await;
    let mut calls = Vec::new();
    for inv in hooks {
        if selected(inv, req, ns.as_ref(), object, old)? {
            calls.push(async move {
                match call(reg, inv, req, object, old, false).await {
                    Ok(a) if a.allowed => Ok(a.warnings),
                    Ok(a) => Err(denial(&inv.hook.name, &a.status)),
                    Err(CallError::Refused(e)) => Err(e),
                    Err(CallError::Calling(msg)) if inv.hook.fail_open => {
                        tracing::warn!(
                            "failed calling webhook, failing open {}: {msg}",
                            inv.hook.name
                        );
                        Ok(Vec::new())
                    }
                    Err(CallError::Calling(msg)) => Err(internal_error(&msg)),
                }
            });
        }
    }
    let mut warnings = Vec::new();
    for r in futures::future::join_all(calls).await {
        warnings.extend(r?);
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_read_as_upstream() {
        let e = denial(
            "deny.example.com",
            &json!({"message": "no pods today", "code": 403}),
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: no pods today"
        );
        let e = denial(
            "deny.example.com",
            &json!({"code": 200, "reason": "Teapot"}),
        );
        assert_eq!(e.code, 400);
        assert_eq!(e.reason, "Teapot");
        assert_eq!(
            e.message,
            "admission webhook \"deny.example.com\" denied the request: Teapot"
        );
        let e = denial("d.e.f", &Value::Null);
        assert_eq!(
            e.message,
            "admission webhook \"d.e.f\" denied the request without explanation"
        );
    }

    #[test]
    fn calling_errors_are_internal_errors() {
        let CallError::Calling(msg) = calling("a.b.c", "failed to call webhook: boom") else {
            unreachable!()
        };
        let e = internal_error(&msg);
        assert_eq!(e.code, 500);
        assert_eq!(
            e.message,
            "Internal error occurred: failed calling webhook \"a.b.c\": failed to call webhook: boom"
        );
    }
}
