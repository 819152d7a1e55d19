//! Per-resource create and update strategy, mirroring what upstream's generic registry does
//! between decoding a request and writing it to storage: the v1 defaulters
//! (pkg/apis/*/v1/defaults.go), the built-in mutating admission plugins (Priority,
//! DefaultTolerationSeconds, LimitRanger in plugin/pkg/admission), the registry strategies'
//! `PrepareForCreate`/`PrepareForUpdate` (pkg/registry/*/strategy.go) and validation
//! (pkg/apis/*/validation), with errors as upstream's 422 Invalid and 403 Forbidden statuses.
//!
//! Order on create follows upstream's handler: defaulting at decode, mutating admission, then
//! `rest.BeforeCreate` (PrepareForCreate, validation). Defaulting runs once more after
//! PrepareForCreate, because upstream re-defaults when it decodes the stored object for the
//! response (that is how a new PVC reads back with `status.phase: Pending`).

mod admission;
mod defaults;
mod names;
mod prepare;
mod update;
mod util;
mod validation;

pub use names::{is_dns1035_label, is_dns1123_subdomain};
pub use util::parse_quantity;

use crate::resources::ResourceInfo;
use crate::status::ApiError;
use serde_json::Value;

pub use admission::{set_default_toleration_seconds, SYSTEM_PRIORITY_CLASSES};
pub use defaults::pull_policy_for;
pub use prepare::pod_qos;

/// Looks up cluster objects admission needs (the lead implements it over the watch cache).
pub trait AdmissionLookup {
    fn priority_class(&self, name: &str) -> Option<Value>;
    fn global_default_priority_class(&self) -> Option<Value>;
    fn limit_ranges(&self, namespace: &str) -> Vec<Value>;
    /// The default StorageClass's name (the newest marked default), for DefaultStorageClass.
    fn default_storage_class(&self) -> Option<String> {
        None
    }
}

fn invalid(info: &ResourceInfo, obj: &Value, causes: Vec<crate::status::Cause>) -> ApiError {
    ApiError::invalid(
        info.group,
        info.kind,
        util::str_at(obj, "/metadata/name"),
        causes,
    )
}

fn ensure_object(obj: &Value) -> Result<(), ApiError> {
    if obj.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

/// Create: defaulting (as the v1 defaulters), mutating admission in upstream order (Priority,
/// DefaultTolerationSeconds, LimitRanger), PrepareForCreate (status reset or kept per resource,
/// Job selector generation; generation is the lead's), then validation.
pub fn prepare_create(
    info: &ResourceInfo,
    obj: &mut Value,
    lookup: &dyn AdmissionLookup,
) -> Result<(), ApiError> {
    ensure_object(obj)?;
    defaults::apply(info, obj);
    let admission_changed = admission::admit_create(info, obj, lookup)?;
    prepare::for_create(info, obj);
    // The Pod defaulters neither read nor write `status` (all PrepareForCreate changes) and are
    // idempotent, so for a Pod the second pass can only matter after LimitRanger.
    if admission_changed || !(info.group.is_empty() && info.kind == "Pod") {
        defaults::apply(info, obj);
    }
    let causes = validation::validate(info, obj);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, causes))
    }
}

/// The v1 defaults alone (what decoding a request applies upstream), for admission that must
/// see the decoded object before the rest of the strategy runs (mutating webhooks).
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    if obj.is_object() {
        defaults::apply(info, obj);
    }
}

/// Validation of an object in the form its client sent it, for a resource served as a view of
/// another one's store (events.k8s.io/v1 Events are stored as core/v1 Events): upstream validates
/// such creates with the view's own rules (`ValidateEventCreate` requires `eventTime`,
/// `reportingController`, … by those names) before converting them.
pub fn validate_view(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let causes = validation::validate(info, obj);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, causes))
    }
}

fn is_csr(info: &ResourceInfo) -> bool {
    info.group == crate::certificates::GROUP && info.kind == "CertificateSigningRequest"
}

/// Update of the main resource (`subresource` None), of `status`, or of a namespace's
/// `finalize`: defaulting, PrepareForUpdate (the main resource keeps the old status; `status`
/// keeps the old spec and metadata except labels, annotations, finalizers and (but for pods)
/// ownerReferences; `finalize` changes only `spec.finalizers`), then validation including the
/// immutable fields. Other subresources are not handled here (400).
pub fn prepare_update(
    info: &ResourceInfo,
    subresource: Option<&str>,
    obj: &mut Value,
    old: &Value,
) -> Result<(), ApiError> {
    ensure_object(obj)?;
    defaults::apply(info, obj);
    let mut causes = Vec::new();
    match subresource {
        None => {
            // DefaultTolerationSeconds also handles pod updates, so a replayed manifest
            // regains the tolerations it added at create.
            if info.group.is_empty() && info.kind == "Pod" {
                admission::default_toleration_seconds(obj);
            }
            prepare::for_update(info, obj, old);
            if is_csr(info) {
                crate::certificates::strategy::prepare_update(None, obj, old);
            }
            causes.extend(validation::validate(info, obj));
        }
        Some("status") if info.has_subresource("status") => {
            prepare::for_status_update(info, obj, old);
            if is_csr(info) {
                crate::certificates::strategy::prepare_update(subresource, obj, old);
            }
            validation::object_meta(info, obj, &mut causes);
        }
        // The CSR's approval conditions: merged like a status update, then narrowed below.
        Some("approval") if info.has_subresource("approval") => {
            prepare::for_status_update(info, obj, old);
            if is_csr(info) {
                crate::certificates::strategy::prepare_update(subresource, obj, old);
            }
            validation::object_meta(info, obj, &mut causes);
        }
        Some("finalize") if info.has_subresource("finalize") => {
            prepare::for_finalize_update(obj, old);
            validation::object_meta(info, obj, &mut causes);
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the update strategy does not handle the {other:?} subresource of {}",
                info.group_resource()
            )))
        }
    }
    causes.extend(update::validate_update(info, obj, old));
    if is_csr(info) {
        causes.extend(crate::certificates::strategy::validate_update(
            subresource,
            obj,
            old,
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(info, obj, causes))
    }
}

#[cfg(test)]
mod tests;
