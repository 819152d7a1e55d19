//! Strategic merge patch, as upstream applies it server side
//! (k8s.io/apimachinery/pkg/util/strategicpatch `StrategicMergeMapPatch` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls`): maps merge recursively and `null` deletes a
//! key; lists whose schema says `x-kubernetes-patch-strategy: merge` merge by
//! `x-kubernetes-patch-merge-key` (or as sets, for primitives); other lists are replaced. The
//! directives `$patch` (replace/merge/delete), `$retainKeys`, `$deleteFromPrimitiveList/<field>`
//! and `$setElementOrder/<field>` that `kubectl apply` sends are honoured. Without a schema it
//! behaves like JSON merge patch, as upstream does for types it has no patch meta for.

use serde_json::{Map, Value};

use super::{PatchError, PatchSchema};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Applies a strategic merge patch to `original`. `schema` is the patch meta of the object's kind
/// (`openapi::patch_schema`); `None` merges like JSON merge patch.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: Option<&PatchSchema>,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".to_string(),
        ));
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch.clone(), schema.copied()).map(Value::Object)
}

/// The strategy of a field without `retainKeys`: `merge`, `replace` or "".
fn strategy(schema: Option<PatchSchema>) -> &'static str {
    schema
        .map(|s| s.patch_strategies())
        .unwrap_or_default()
        .into_iter()
        .find(|s| *s != "retainKeys")
        .unwrap_or("")
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: Option<PatchSchema>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE);
                return Ok(patch);
            }
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {
                patch.shift_remove(DIRECTIVE);
            }
            _ => return Err(PatchError::BadPatchType(directive.to_string())),
        }
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_set_element_order(&mut original, &mut patch, schema)?;

    for (k, patch_v) in patch {
        if k == RETAIN_KEYS || k == DIRECTIVE || k.starts_with(SET_ELEMENT_ORDER) {
            continue;
        }
        let (key, is_delete_list) = match k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            Some(field) => (field.to_string(), true),
            None => (k, false),
        };
        if patch_v.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let Some(orig_v) = original.get_mut(&key) else {
            if !is_delete_list {
                let mut v = patch_v;
                discard_nulls(&mut v);
                original.insert(key, v);
            }
            continue;
        };
        let field_schema = schema.and_then(|s| s.lookup(&key));
        match (orig_v, patch_v) {
            (Value::Object(o), Value::Object(p)) => {
                if strategy(field_schema) == "replace" {
                    *o = p;
                } else {
                    *o = merge_map(std::mem::take(o), p, field_schema)?;
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                *o = merge_slice_handler(std::mem::take(o), p, field_schema, &key, is_delete_list)?;
            }
            (slot, mut p) => {
                let same_kind = std::mem::discriminant(slot) == std::mem::discriminant(&p);
                if !is_delete_list || same_kind {
                    discard_nulls(&mut p);
                    *slot = p;
                }
            }
        }
    }
    Ok(original)
}

/// `$retainKeys`: drop every field of `original` that is not listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(PatchError::BadRetainKeys);
    };
    let mut keep: Vec<&str> = Vec::with_capacity(list.len());
    for v in &list {
        keep.push(v.as_str().ok_or(PatchError::BadRetainKeys)?);
    }
    for (k, v) in patch.iter() {
        if v.is_null()
            || k == DIRECTIVE
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(PatchError::BadRetainKeys);
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merge the field's list now and order the result as listed; items
/// only on the server keep their relative place.
fn merge_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: Option<PatchSchema>,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order) = patch.shift_remove(&key) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(PatchError::BadDirective {
                directive: key,
                detail: "must be a list".into(),
            });
        };
        let field = key[SET_ELEMENT_ORDER.len()..].to_string();
        let field_schema = schema.and_then(|s| s.lookup(&field));
        let merge_key = field_schema.and_then(|s| s.patch_merge_key());
        let orig_list = match original.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(PatchError::BadDirective {
                    directive: key,
                    detail: format!("{field} is not a list"),
                })
            }
        };
        let patch_list = match patch.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(PatchError::BadDirective {
                    directive: key,
                    detail: format!("{field} in the patch is not a list"),
                })
            }
        };
        let merged = match (orig_list.clone(), patch_list) {
            (None, None) => continue,
            (Some(o), None) => o,
            (None, Some(p)) => p,
            (Some(o), Some(p)) => merge_slice_handler(o, p, field_schema, &field, false)?,
        };
        let is_maps = merged.iter().any(Value::is_object);
        let merge_key = if is_maps { merge_key } else { None };
        let (in_order, server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|v| index_of(&order, v, merge_key).is_some());
        let both = normalize_order(
            in_order,
            server_only,
            &order,
            orig_list.as_deref().unwrap_or_default(),
            merge_key,
        );
        original.insert(field.clone(), Value::Array(both));
        patch.shift_remove(&field);
    }
    Ok(())
}

fn merge_slice_handler(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: Option<PatchSchema>,
    field: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if strategy(schema) == "merge" {
        let merge_key = schema.and_then(|s| s.patch_merge_key());
        let items = schema.and_then(|s| s.items());
        merge_slice(original, patch, items, merge_key, field, is_delete_list)
    } else {
        Ok(patch)
    }
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    items: Option<PatchSchema>,
    merge_key: Option<&str>,
    field: &str,
    is_delete_list: bool,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let is_maps = original.iter().chain(patch.iter()).any(Value::is_object);
    if !is_maps {
        if is_delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(patch.iter()) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| patch.contains(v));
        return Ok(normalize_order(
            in_patch,
            server_only,
            &patch,
            &original,
            None,
        ));
    }
    let Some(key) = merge_key else {
        return Err(PatchError::NoMergeKeyDeclared(field.to_string()));
    };
    let (original, patch) = merge_special_elements(original, patch, key)?;
    let mut merged = original.clone();
    for p in &patch {
        let Value::Object(pm) = p else {
            return Err(PatchError::Invalid(format!(
                "list {field} mixes objects and other values"
            )));
        };
        let Some(value) = pm.get(key) else {
            return Err(PatchError::NoMergeKey {
                map: p.to_string(),
                key: key.to_string(),
            });
        };
        let found = merged
            .iter()
            .position(|o| o.get(key).is_some_and(|ov| ov == value));
        match found {
            Some(i) => {
                let current = match std::mem::take(&mut merged[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(current, pm.clone(), items)?);
            }
            None => merged.push(p.clone()),
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_of(&patch, v, Some(key)).is_some());
    Ok(normalize_order(
        in_patch,
        server_only,
        &patch,
        &original,
        Some(key),
    ))
}

/// Elements `{"$patch": "delete", key: v}` delete matching entries; `{"$patch": "replace"}`
/// makes the rest of the patch list replace the whole list. Returns the new original and the
/// patch without those elements.
fn merge_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for p in patch {
        let Some(directive) = p.get(DIRECTIVE) else {
            plain.push(p);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(value) = p.get(key) else {
                    return Err(PatchError::NoMergeKey {
                        map: p.to_string(),
                        key: key.to_string(),
                    });
                };
                original.retain(|o| o.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(PatchError::BadPatchType(
                    "merging lists cannot yet be specified in the patch".to_string(),
                ))
            }
            _ => return Err(PatchError::BadPatchType(directive.to_string())),
        }
    }
    if replace {
        Ok((plain, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

/// Position of `item` in `list`, by merge key value for maps or by equality for primitives.
fn index_of(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    match merge_key {
        Some(key) => {
            let value = item.get(key)?;
            list.iter().position(|v| v.get(key) == Some(value))
        }
        None => list.iter().position(|v| v == item),
    }
}

/// Sorts the patch items by the patch order and the server-only items by the server order, then
/// interleaves them (upstream's `normalizeElementOrder` and `mergeSortedSlice`).
fn normalize_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    patch_items.sort_by_key(|v| index_of(patch_order, v, merge_key).unwrap_or(usize::MAX));
    server_only.sort_by_key(|v| index_of(server_order, v, merge_key).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.by_ref()),
            (None, Some(_)) => out.extend(right.by_ref()),
            (Some(l), Some(r)) => {
                let li = index_of(server_order, l, merge_key);
                let ri = index_of(server_order, r, merge_key);
                let left_first = matches!((li, ri), (Some(a), Some(b)) if a < b);
                let next = if left_first {
                    left.next()
                } else {
                    right.next()
                };
                out.extend(next);
            }
        }
    }
    out
}

/// Removes `null` map values recursively (a null for a field the original lacks means nothing).
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            for c in m.values_mut() {
                discard_nulls(c);
            }
        }
        Value::Array(items) => {
            for c in items {
                discard_nulls(c);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
