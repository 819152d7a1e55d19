//! Dynamic admission webhooks (upstream's `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook` admission plugins, `k8s.io/apiserver/pkg/admission/plugin/webhook`).
//!
//! The configurations are ordinary stored objects (`config`); a request first picks the webhooks
//! whose rules match it (`matching`, no objects needed, so a cluster without webhooks pays one
//! cache lookup), then the REST handlers call `mutate` after the built-in mutation and
//! `validate` after validation (`dispatch`), which send AdmissionReviews (`review`) over HTTPS
//! (`client`).
//!
//! Where it runs: on create, mutating webhooks run in the handler before PodSecurity and the
//! registry, validating ones inside the registry after the strategy's defaulting and validation
//! and before ResourceQuota ([`CreateValidator`]), as upstream's validating phase. Updates and
//! patches compute the object the registry would store (a dry-run pass), run both phases on it,
//! and store that result only if the object did not change meanwhile ([`admitted_update`]).
//! Deletes run both phases with the old object.

pub mod client;
pub mod config;
pub mod dispatch;
pub mod matching;
pub mod review;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::cacher::Filter;
use crate::registry::{Registry, WriteOptions};
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};
use config::Webhook;
use matching::Invocation;

/// An admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    /// The kind of the options object sent in the review.
    pub fn options_kind(self) -> Option<&'static str> {
        match self {
            Operation::Create => Some("CreateOptions"),
            Operation::Update => Some("UpdateOptions"),
            Operation::Delete => Some("DeleteOptions"),
            Operation::Connect => None,
        }
    }
}

/// The request attributes webhooks see.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The resource as requested (webhooks may be called for an equivalent one).
    pub resource: &'static ResourceInfo,
    pub subresource: &'a str,
    pub namespace: &'a str,
    /// The object's name (empty on a create: taken from the object).
    pub name: &'a str,
    pub operation: Operation,
    pub user: &'a UserInfo,
    pub dry_run: bool,
}

/// The webhooks whose rules match a request, in call order (configurations by name, webhooks in
/// their order within one).
#[derive(Default, Clone)]
pub struct Hooks {
    pub mutating: Vec<Invocation>,
    pub validating: Vec<Invocation>,
}

impl Hooks {
    pub fn is_empty(&self) -> bool {
        self.mutating.is_empty() && self.validating.is_empty()
    }
}

/// Parsed configurations, by uid, with the revision they were parsed at.
type Parsed = Mutex<HashMap<String, (i64, Arc<Vec<Arc<Webhook>>>)>>;

fn parsed() -> &'static Parsed {
    static PARSED: OnceLock<Parsed> = OnceLock::new();
    PARSED.get_or_init(Default::default)
}

/// Every webhook of the stored configurations of `plural`, from the watch cache (as upstream's
/// informer-fed configuration manager: a configuration applies once the cache has it).
fn webhooks(reg: &Registry, plural: &str) -> Vec<Arc<Webhook>> {
    let Some(info) = resources::find("admissionregistration.k8s.io", "v1", plural) else {
        return Vec::new();
    };
    let all: Filter = Arc::new(|_| true);
    let page = reg
        .cacher(info)
        .list(&Registry::key(info, "", ""), &all, None, 0);
    if page.items.is_empty() {
        return Vec::new();
    }
    let mut cache = parsed().lock();
    let mut out = Vec::new();
    for item in &page.items {
        let uid = item.value["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let hooks = match cache.get(&uid) {
            Some((rev, hooks)) if *rev == item.revision => hooks.clone(),
            _ => {
                let hooks: Arc<Vec<Arc<Webhook>>> = Arc::new(
                    config::parse(&item.value)
                        .into_iter()
                        .map(Arc::new)
                        .collect(),
                );
                if cache.len() > 4096 {
                    cache.clear();
                }
                cache.insert(uid, (item.revision, hooks.clone()));
                hooks
            }
        };
        out.extend(hooks.iter().cloned());
    }
    out
}

/// The webhooks whose rules match `req`.
pub fn matching_hooks(reg: &Registry, req: &Request<'_>) -> Hooks {
    // Webhook configurations themselves are not subject to webhooks, so that a broken webhook
    // cannot lock its own configuration (upstream's `IsExemptAdmissionConfigurationResource`).
    if req.resource.group == "admissionregistration.k8s.io" {
        return Hooks::default();
    }
    let pick = |plural: &str| -> Vec<Invocation> {
        webhooks(reg, plural)
            .iter()
            .filter_map(|h| {
                matching::invocation(
                    h,
                    req.operation,
                    req.resource,
                    req.subresource,
                    req.namespace,
                )
            })
            .collect()
    };
    Hooks {
        mutating: pick("mutatingwebhookconfigurations"),
        validating: pick("validatingwebhookconfigurations"),
    }
}

/// The mutating phase on `object` (stored form); returns the webhooks' warnings.
pub async fn mutate(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &Hooks,
    object: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    if hooks.mutating.is_empty() {
        return Ok(Vec::new());
    }
    dispatch::mutate(reg, req, &hooks.mutating, object, old).await
}

/// The validating phase; returns the webhooks' warnings.
pub async fn validate(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &Hooks,
    object: Option<&Value>,
    old: Option<&Value>,
) -> ApiResult<Vec<String>> {
    if hooks.validating.is_empty() {
        return Ok(Vec::new());
    }
    dispatch::validate(reg, req, &hooks.validating, object, old).await
}

/// The validating phase of a create, run by the registry on the prepared object.
pub struct CreateValidator<'a> {
    pub registry: &'a Registry,
    pub request: Request<'a>,
    pub hooks: &'a Hooks,
    /// Warnings of the validating webhooks, for the response.
    pub warnings: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl crate::registry::ValidatingAdmission for CreateValidator<'_> {
    async fn validate(&self, obj: &Value) -> ApiResult<()> {
        let w = validate(self.registry, &self.request, self.hooks, Some(obj), None).await?;
        self.warnings.lock().extend(w);
        Ok(())
    }
}

/// How often an admitted update is retried when the object changes while webhooks run.
const UPDATE_ATTEMPTS: usize = 5;

/// An update or patch through the webhooks: `mutate` computes the new object from the current
/// one (as for `Registry::update`). A dry-run pass of the registry gives the object it would
/// store (defaulted, prepared, validated); both webhook phases run on it against the current
/// object; then it is stored if the current object is still the one it was computed from
/// (otherwise the whole is retried, as upstream's update retries on conflicts). Returns the
/// stored object and the webhooks' warnings.
#[allow(clippy::too_many_arguments)]
pub async fn admitted_update<F>(
    reg: &Registry,
    info: &'static ResourceInfo,
    req: &Request<'_>,
    hooks: &Hooks,
    subresource: Option<&str>,
    opts: &WriteOptions,
    mut mutate_fn: F,
) -> ApiResult<(Value, Vec<String>)>
where
    F: FnMut(&Value) -> ApiResult<Value>,
{
    if hooks.is_empty() {
        let out = reg
            .update(info, req.namespace, req.name, subresource, opts, mutate_fn)
            .await?;
        return Ok((out, Vec::new()));
    }
    let mut dry = opts.clone();
    dry.dry_run = true;
    for _ in 0..UPDATE_ATTEMPTS {
        let mut old: Option<Value> = None;
        let mut candidate = reg
            .update(info, req.namespace, req.name, subresource, &dry, |cur| {
                old = Some(cur.clone());
                mutate_fn(cur)
            })
            .await?;
        let old = old.unwrap_or(Value::Null);
        let rv = old["metadata"]["resourceVersion"].clone();
        let mut warnings = mutate(reg, req, hooks, &mut candidate, Some(&old)).await?;
        warnings.extend(validate(reg, req, hooks, Some(&candidate), Some(&old)).await?);
        let mut changed_meanwhile = false;
        let result = reg
            .update(info, req.namespace, req.name, subresource, opts, |cur| {
                if cur["metadata"]["resourceVersion"] != rv {
                    changed_meanwhile = true;
                    return Err(ApiError::conflict(
                        info.group,
                        info.plural,
                        req.name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                let mut next = candidate.clone();
                next["metadata"]["resourceVersion"] = rv.clone();
                Ok(next)
            })
            .await;
        match result {
            Err(_) if changed_meanwhile => continue,
            Err(e) => return Err(e),
            Ok(out) => return Ok((out, warnings)),
        }
    }
    Err(ApiError::conflict(
        info.group,
        info.plural,
        req.name,
        "the object has been modified; please apply your changes to the latest version and try again",
    ))
}

/// Both phases for a delete of `old`; returns the webhooks' warnings.
pub async fn admit_delete(
    reg: &Registry,
    req: &Request<'_>,
    hooks: &Hooks,
    old: &Value,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    if !hooks.mutating.is_empty() {
        // A delete has no object to patch; the mutating webhooks are still told (and may deny).
        warnings.extend(dispatch::mutate_delete(reg, req, &hooks.mutating, old).await?);
    }
    warnings.extend(validate(reg, req, hooks, None, Some(old)).await?);
    Ok(warnings)
}
