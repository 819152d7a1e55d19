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
pub type ObjectPredicate = Box<dyn Fn(&Value) -> bool + Send + Sync>;

pub fn selector_filter(
    info: &'static ResourceInfo,
    label: Option<&str>,
    field: Option<&str>,
) -> Result<Option<ObjectPredicate>, String> {
    use crate::selectors::{field_set, FieldSelector, LabelSelector};
    let label = match label {
        Some(l) if !l.trim().is_empty() => Some(LabelSelector::parse(l)?),
        _ => None,
    };
    let field = match field {
        Some(f) if !f.trim().is_empty() => {
            let f = FieldSelector::parse(f)?;
            f.validate_for(info)?;
            Some(f)
        }
        _ => None,
    };
    if label.is_none() && field.is_none() {
        return Ok(None);
    }
    Ok(Some(Box::new(move |obj: &Value| {
        label
            .as_ref()
            .is_none_or(|l| l.matches(obj["metadata"]["labels"].as_object()))
            && field.as_ref().is_none_or(|f| f.matches(&field_set(info, obj)))
    })))
}

pub fn to_table(info: &ResourceInfo, items: &[&Value], list_meta: Value, include_object: &str) -> Value {
    let include = crate::table::IncludeObject::parse(Some(include_object)).unwrap_or(crate::table::IncludeObject::Metadata);
    crate::table::to_table(info, items, list_meta, include)
}
