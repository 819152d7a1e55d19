//! The three PATCH content types of the Kubernetes API (upstream's `patchResource` in
//! k8s.io/apiserver/pkg/endpoints/handlers/patch.go): JSON patch (RFC 6902,
//! `application/json-patch+json`), JSON merge patch (RFC 7386, `application/merge-patch+json`)
//! and strategic merge patch (`application/strategic-merge-patch+json`, k8s.io/apimachinery's
//! `strategicpatch`), in one place so the handlers pick by content type.

pub mod strategic;

use serde_json::Value;

pub use crate::openapi::PatchSchema;
pub use strategic::strategic_merge_patch;

/// Why a patch could not be applied (handlers answer with a 4xx Status).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not what the patch type needs (a JSON object, or an array of ops).
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// The body of a JSON patch does not decode as a list of operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(#[from] serde_json::Error),
    /// A JSON patch operation failed (missing path, failed `test`, …).
    #[error("{0}")]
    JsonPatch(#[from] json_patch::PatchError),
    /// `$patch` has a value other than replace, merge or delete.
    #[error("Unknown patch type: {0}")]
    BadPatchType(String),
    /// An element of a list merged by key lacks the merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey { map: String, key: String },
    /// A list of maps with strategy merge has no merge key in the schema.
    #[error("cannot merge lists without merge key for {0}")]
    NoMergeKeyDeclared(String),
    /// `$retainKeys` is malformed or the patch sets a field it does not retain.
    #[error("invalid patch: the $retainKeys directive must be a list of field names including every field in the patch")]
    BadRetainKeys,
    /// A directive's value has the wrong type (`$setElementOrder/x` not a list, …).
    #[error("invalid value for {directive}: {detail}")]
    BadDirective { directive: String, detail: String },
}

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`).
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_array() {
        return Err(PatchError::Invalid(
            "a JSON patch must be a list of operations".to_string(),
        ));
    }
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())?;
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &ops)?;
    Ok(doc)
}

/// Applies an RFC 7386 JSON merge patch (`application/merge-patch+json`).
pub fn merge_patch(original: &Value, patch: &Value) -> Value {
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_applies_and_fails_cleanly() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let out = json_patch(
            &doc,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"}
            ]),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["metadata"]["labels"]["b"], "2");
        assert!(json_patch(&doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&doc, &json!([{"op": "bogus"}])).is_err());
        assert!(json_patch(&doc, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = merge_patch(&doc, &json!({"a": {"b": null, "d": 4}, "l": [3]}));
        assert_eq!(out, json!({"a": {"c": 2, "d": 4}, "l": [3]}));
    }
}
