//! Seams to the pure per-resource logic (defaulting/validation/admission, selectors, tables).
//! Temporary pass-throughs until those modules land.

use serde_json::Value;

use crate::resources::ResourceInfo;
use crate::status::ApiResult;

pub trait AdmissionLookup {
    fn priority_class(&self, name: &str) -> Option<Value>;
    fn global_default_priority_class(&self) -> Option<Value>;
    fn limit_ranges(&self, namespace: &str) -> Vec<Value>;
}

pub fn prepare_create(_info: &ResourceInfo, _obj: &mut Value, _l: &dyn AdmissionLookup) -> ApiResult<()> {
    Ok(())
}

pub fn prepare_update(_info: &ResourceInfo, _sub: Option<&str>, _obj: &mut Value, _old: &Value) -> ApiResult<()> {
    Ok(())
}

/// Label and field selectors of a list or watch, compiled into a predicate.
pub fn selector_filter(
    _info: &'static ResourceInfo,
    _label: Option<&str>,
    _field: Option<&str>,
) -> Result<Option<Box<dyn Fn(&Value) -> bool + Send + Sync>>, String> {
    Ok(None)
}

pub fn to_table(_info: &ResourceInfo, items: &[&Value], list_meta: Value, _include_object: &str) -> Value {
    serde_json::json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
        "columnDefinitions": [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}],
        "rows": items.iter().map(|o| serde_json::json!({"cells": [o["metadata"]["name"]], "object": {"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata": o["metadata"]}})).collect::<Vec<_>>(),
    })
}
