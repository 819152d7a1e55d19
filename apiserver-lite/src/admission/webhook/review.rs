//! The `admission.k8s.io` AdmissionReview wire format (v1, and v1beta1 for webhooks that only
//! accept that): the request the API server sends (upstream's `CreateV1AdmissionReview`) and
//! the checks on the answer (`VerifyAdmissionResponse`): the same apiVersion and kind, the
//! request's uid, and a patch only from a mutating webhook, only as `JSONPatch`.
//! AdmissionReview is not in the OpenAPI document, so k8s-openapi has no type for it.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::matching::Invocation;
use super::Request;

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn gvr(group: &str, version: &str, resource: &str) -> Value {
    json!({"group": group, "version": version, "resource": resource})
}

/// The AdmissionReview for one call of `inv`'s webhook. `object` and `old` are already in the
/// invoked resource's version.
pub fn request(
    uid: &str,
    inv: &Invocation,
    req: &Request<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Value {
    let res = inv.resource;
    let asked = req.resource;
    let name = if req.name.is_empty() {
        object
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or("")
    } else {
        req.name
    };
    let mut r = Map::new();
    r.insert("uid".into(), json!(uid));
    r.insert("kind".into(), gvk(res.group, res.version, res.kind));
    r.insert("resource".into(), gvr(res.group, res.version, res.plural));
    if !req.subresource.is_empty() {
        r.insert("subResource".into(), json!(req.subresource));
    }
    r.insert(
        "requestKind".into(),
        gvk(asked.group, asked.version, asked.kind),
    );
    r.insert(
        "requestResource".into(),
        gvr(asked.group, asked.version, asked.plural),
    );
    if !req.subresource.is_empty() {
        r.insert("requestSubResource".into(), json!(req.subresource));
    }
    if !name.is_empty() {
        r.insert("name".into(), json!(name));
    }
    if !req.namespace.is_empty() {
        r.insert("namespace".into(), json!(req.namespace));
    }
    r.insert("operation".into(), json!(req.operation.as_str()));
    let mut user = json!({"username": req.user.name, "groups": req.user.groups});
    if !req.user.uid.is_empty() {
        user["uid"] = json!(req.user.uid);
    }
    if !req.user.extra.is_empty() {
        user["extra"] = json!(req.user.extra);
    }
    r.insert("userInfo".into(), user);
    r.insert("object".into(), object.cloned().unwrap_or(Value::Null));
    r.insert("oldObject".into(), old.cloned().unwrap_or(Value::Null));
    r.insert("dryRun".into(), json!(req.dry_run));
    if let Some(kind) = req.operation.options_kind() {
        let mut opts = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
        if req.dry_run {
            opts["dryRun"] = json!(["All"]);
        }
        r.insert("options".into(), opts);
    }
    json!({
        "kind": "AdmissionReview",
        "apiVersion": format!("admission.k8s.io/{}", inv.hook.review_version),
        "request": Value::Object(r),
    })
}

/// A verified answer.
#[derive(Debug, Default)]
pub struct Response {
    pub allowed: bool,
    /// `response.status` (a meta/v1 Status, possibly partial).
    pub status: Value,
    /// The decoded JSON patch, when the webhook sent one.
    pub patch: Option<Value>,
    pub warnings: Vec<String>,
}

/// Why an answer is unusable; both are treated per failurePolicy.
#[derive(Debug, PartialEq)]
pub enum ResponseError {
    /// Not an AdmissionReview at all (upstream's decode error: "failed to call webhook: …").
    Decode(String),
    /// An AdmissionReview that fails the checks ("received invalid webhook response: …").
    Invalid(String),
}

/// Decodes and verifies a webhook's answer to the review `uid` it was sent.
pub fn response(
    body: &[u8],
    uid: &str,
    version: &str,
    mutating: bool,
) -> Result<Response, ResponseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ResponseError::Decode(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    if !v.is_object() {
        return Err(ResponseError::Decode(
            "couldn't get version/kind; json parse error: the answer is not a JSON object".into(),
        ));
    }
    let want = format!("admission.k8s.io/{version}");
    let (api_version, kind) = (
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
    );
    if api_version != want || kind != "AdmissionReview" {
        return Err(ResponseError::Invalid(format!(
            "expected webhook response of {want}, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        )));
    }
    let r = match v.get("response") {
        Some(r) if r.is_object() => r,
        _ => return Err(ResponseError::Invalid("webhook response was absent".into())),
    };
    let got_uid = r["uid"].as_str().unwrap_or("");
    if got_uid != uid {
        return Err(ResponseError::Invalid(format!(
            "expected response.uid={uid:?}, got {got_uid:?}"
        )));
    }
    let allowed = match &r["allowed"] {
        Value::Bool(b) => *b,
        Value::Null => false,
        other => {
            return Err(ResponseError::Decode(format!(
                "json: cannot unmarshal {other} into Go struct field AdmissionResponse.response.allowed of type bool"
            )))
        }
    };
    let patch_b64 = r["patch"].as_str().unwrap_or("");
    let patch_type = r["patchType"].as_str().unwrap_or("");
    let mut patch = None;
    if !patch_b64.is_empty() || !patch_type.is_empty() {
        if patch_b64.is_empty() {
            return Err(ResponseError::Invalid(
                "webhook returned response.patchType but not response.patch".into(),
            ));
        }
        if patch_type.is_empty() {
            return Err(ResponseError::Invalid(
                "webhook returned response.patch but not response.patchType".into(),
            ));
        }
        if patch_type != "JSONPatch" {
            return Err(ResponseError::Invalid(format!(
                "webhook returned invalid response.patchType of {patch_type:?}"
            )));
        }
        if !mutating {
            return Err(ResponseError::Invalid(
                "validating webhook may not return response.patch".into(),
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(patch_b64)
            .map_err(|e| {
                ResponseError::Decode(format!("illegal base64 data in response.patch: {e}"))
            })?;
        patch = Some(serde_json::from_slice(&raw).map_err(|e| {
            ResponseError::Invalid(format!("response.patch is not a JSON patch: {e}"))
        })?);
    }
    Ok(Response {
        allowed,
        status: r.get("status").cloned().unwrap_or(Value::Null),
        patch,
        warnings: r["warnings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(v: Value) -> Result<Response, ResponseError> {
        response(v.to_string().as_bytes(), "u1", "v1", true)
    }

    #[test]
    fn answers_are_verified() {
        let ok = answer(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u1", "allowed": true, "warnings": ["w"]}})).unwrap();
        assert!(ok.allowed);
        assert_eq!(ok.warnings, vec!["w"]);
        assert_eq!(
            answer(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "other", "allowed": true}})).unwrap_err(),
            ResponseError::Invalid("expected response.uid=\"u1\", got \"other\"".into())
        );
        assert_eq!(
            answer(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}))
                .unwrap_err(),
            ResponseError::Invalid("webhook response was absent".into())
        );
        assert!(matches!(
            response(b"not json", "u1", "v1", true),
            Err(ResponseError::Decode(_))
        ));
    }

    #[test]
    fn patches_must_be_json_patches_from_mutating_webhooks() {
        let p = base64::engine::general_purpose::STANDARD
            .encode(br#"[{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]"#);
        let base = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u1", "allowed": true, "patch": p, "patchType": "JSONPatch"}});
        assert!(answer(base.clone()).unwrap().patch.is_some());
        assert_eq!(
            response(base.to_string().as_bytes(), "u1", "v1", false).unwrap_err(),
            ResponseError::Invalid("validating webhook may not return response.patch".into())
        );
        let mut no_type = base.clone();
        no_type["response"]["patchType"] = Value::Null;
        assert_eq!(
            answer(no_type).unwrap_err(),
            ResponseError::Invalid(
                "webhook returned response.patch but not response.patchType".into()
            )
        );
    }
}
