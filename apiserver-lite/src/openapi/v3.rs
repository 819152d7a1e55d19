//! The OpenAPI 3.0 documents served per group/version at `/openapi/v3/<api/v1|apis/G/V>` and their
//! index at `/openapi/v3` (upstream's kube-openapi `handler3`): the schemas reachable from that
//! group/version under `components.schemas`, and its paths. kubectl reads these for `explain`,
//! for the `fieldValidation` support check and for `apply`'s strategic merge patch meta.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::defs::{self, Definitions, INT_OR_STRING, QUANTITY};
use super::paths::{Operation, Param, PathItem, PATCH_CONSUMES, PRODUCES, WATCH_PRODUCES};

pub const REF_PREFIX_V3: &str = "#/components/schemas/";

fn ref_v3(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX_V3}{name}")})
}

/// One group/version's document.
pub fn document(defs: &Definitions, names: &BTreeSet<String>, paths: &[PathItem]) -> Value {
    let mut schemas = Map::new();
    for name in names {
        if let Some(schema) = defs.get(name) {
            schemas.insert(name.clone(), schema_v3(name, schema));
        }
    }
    let mut p = Map::new();
    for item in paths {
        p.insert(item.path.clone(), path_item(item));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": super::VERSION},
        "paths": p,
        "components": {"schemas": schemas},
    })
}

/// Converts one v2-form definition to upstream's v3 form.
fn schema_v3(name: &str, schema: &Value) -> Value {
    let mut s = schema.clone();
    defs::rewrite_refs(&mut s, REF_PREFIX_V3);
    wrap_ref_siblings(&mut s);
    if let Value::Object(m) = &mut s {
        if name == QUANTITY {
            m.remove("type");
            m.remove("format");
            m.insert(
                "oneOf".into(),
                json!([{"type": "string"}, {"type": "number"}]),
            );
        } else if name == INT_OR_STRING {
            m.remove("type");
            m.insert("format".into(), json!("int-or-string"));
            m.insert(
                "oneOf".into(),
                json!([{"type": "integer"}, {"type": "string"}]),
            );
        }
    }
    s
}

/// OpenAPI 3.0 ignores siblings of `$ref`; upstream wraps such refs as `allOf: [{$ref}]` so that
/// the description (and extensions) next to it count.
fn wrap_ref_siblings(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.len() > 1 {
                if let Some(r) = map.remove("$ref") {
                    map.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            for v in map.values_mut() {
                wrap_ref_siblings(v);
            }
        }
        Value::Array(items) => {
            for v in items {
                wrap_ref_siblings(v);
            }
        }
        _ => {}
    }
}

fn param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(p.name));
    m.insert("in".into(), json!(p.location));
    m.insert("description".into(), json!(p.description));
    if p.location == "path" {
        m.insert("required".into(), json!(true));
    }
    m.insert("schema".into(), json!({"type": p.ty, "uniqueItems": true}));
    Value::Object(m)
}

fn path_item(item: &PathItem) -> Value {
    let mut m = Map::new();
    for op in &item.operations {
        m.insert(op.method.to_string(), operation(op));
    }
    m.insert(
        "parameters".into(),
        Value::Array(item.params.iter().map(param).collect()),
    );
    Value::Object(m)
}

fn content(types: &[&str], def: &str) -> Value {
    let mut m = Map::new();
    for t in types {
        m.insert((*t).to_string(), json!({"schema": ref_v3(def)}));
    }
    Value::Object(m)
}

fn operation(op: &Operation) -> Value {
    let mut m = Map::new();
    m.insert("tags".into(), json!([op.tag]));
    m.insert("description".into(), json!(op.description));
    m.insert("operationId".into(), json!(op.operation_id));
    m.insert(
        "parameters".into(),
        Value::Array(op.params.iter().map(param).collect()),
    );
    if let Some(body) = op.body {
        let types: &[&str] = if op.is_patch() {
            PATCH_CONSUMES
        } else {
            &["*/*"]
        };
        let mut rb = Map::new();
        rb.insert("content".into(), content(types, body));
        if op.method != "delete" {
            rb.insert("required".into(), json!(true));
        }
        m.insert("requestBody".into(), Value::Object(rb));
    }
    let produces = if op.is_watch() {
        WATCH_PRODUCES
    } else {
        PRODUCES
    };
    let mut responses = Map::new();
    for (code, description, def) in &op.responses {
        responses.insert(
            code.to_string(),
            json!({"description": description, "content": content(produces, def)}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    m.insert("responses".into(), Value::Object(responses));
    m.insert("x-kubernetes-action".into(), json!(op.action));
    m.insert(
        "x-kubernetes-group-version-kind".into(),
        json!({"group": op.gvk.0, "kind": op.gvk.2, "version": op.gvk.1}),
    );
    Value::Object(m)
}

/// The `/openapi/v3` index body.
pub fn index(entries: &[(String, String)]) -> Value {
    let mut paths = Map::new();
    for (gv_path, hash) in entries {
        paths.insert(
            gv_path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv_path}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}
