//! Seams to the pure per-resource logic (defaulting/validation/admission, selectors, tables).
//! One place where the request pipeline meets those modules.

use serde_json::Value;

use crate::resources::ResourceInfo;

pub use crate::strategy::{prepare_create, prepare_update, AdmissionLookup};

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
            && field
                .as_ref()
                .is_none_or(|f| f.matches(&field_set(info, obj)))
    })))
}

pub fn to_table(
    info: &ResourceInfo,
    items: &[&Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    let include = crate::table::IncludeObject::parse(Some(include_object))
        .unwrap_or(crate::table::IncludeObject::Metadata);
    crate::table::to_table(info, items, list_meta, include)
}
