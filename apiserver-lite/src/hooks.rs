//! Seams to the pure per-resource logic (defaulting/validation/admission, selectors, tables).
//! One place where the request pipeline meets those modules.

use serde_json::Value;

use crate::resources::ResourceInfo;

pub use crate::strategy::{prepare_create, prepare_update, AdmissionLookup};

/// Label and field selectors of a list or watch, compiled into a predicate over cached objects
/// (their labels and precomputed selectable fields).
pub type ObjectPredicate = Box<dyn Fn(&crate::cacher::CachedObject) -> bool + Send + Sync>;

/// A compiled list/watch selector and, when the field selector pins the resource's index field
/// (`spec.nodeName` for pods), that value, so the watch cache can index the watcher.
pub struct Selection {
    pub predicate: Option<ObjectPredicate>,
    pub index_value: Option<String>,
}

pub fn selector_filter(
    info: &'static ResourceInfo,
    label: Option<&str>,
    field: Option<&str>,
) -> Result<Selection, String> {
    use crate::selectors::{FieldSelector, LabelSelector};
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
    let index_value = crate::cacher::index_field(info)
        .and_then(|idx| field.as_ref().and_then(|f| f.required_value(idx)))
        .map(str::to_string);
    if label.is_none() && field.is_none() {
        return Ok(Selection {
            predicate: None,
            index_value,
        });
    }
    Ok(Selection {
        predicate: Some(Box::new(move |obj: &crate::cacher::CachedObject| {
            label.as_ref().is_none_or(|l| l.matches(obj.labels()))
                && field.as_ref().is_none_or(|f| f.matches(&obj.fields))
        })),
        index_value,
    })
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
