//! The Swagger 2.0 document served at `/openapi/v2` (upstream's kube-openapi `OpenAPIService`):
//! every definition and every path, in the shape upstream serves, which kubectl decodes (as
//! gnostic protobuf) for client-side validation and `kubectl apply`'s patch meta.

use serde_json::{json, Map, Value};

use super::defs::{ref_v2, Definitions};
use super::paths::{Operation, Param, PathItem, PATCH_CONSUMES, PRODUCES, WATCH_PRODUCES};

/// The whole document as a JSON value.
pub fn document(defs: &Definitions, paths: &[PathItem]) -> Value {
    let mut p = Map::new();
    for item in paths {
        p.insert(item.path.clone(), path_item(item));
    }
    let definitions: Map<String, Value> =
        defs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": super::VERSION},
        "paths": p,
        "definitions": definitions,
    })
}

fn param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), json!(p.description));
    m.insert("in".into(), json!(p.location));
    m.insert("name".into(), json!(p.name));
    if p.location == "path" {
        m.insert("required".into(), json!(true));
    }
    m.insert("type".into(), json!(p.ty));
    m.insert("uniqueItems".into(), json!(true));
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

fn operation(op: &Operation) -> Value {
    let mut params: Vec<Value> = Vec::new();
    if let Some(body) = op.body {
        let required = op.method != "delete";
        params.push(json!({
            "in": "body",
            "name": "body",
            "required": required,
            "schema": ref_v2(body),
        }));
    }
    params.extend(op.params.iter().map(param));
    let consumes: Vec<&str> = if op.is_patch() {
        PATCH_CONSUMES.to_vec()
    } else {
        vec!["*/*"]
    };
    let produces = if op.is_watch() {
        WATCH_PRODUCES
    } else {
        PRODUCES
    };
    let mut responses = Map::new();
    for (code, description, def) in &op.responses {
        responses.insert(
            code.to_string(),
            json!({"description": description, "schema": ref_v2(def)}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    json!({
        "consumes": consumes,
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": params,
        "produces": produces,
        "responses": responses,
        "schemes": ["https"],
        "tags": [op.tag],
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": op.gvk.0, "kind": op.gvk.2, "version": op.gvk.1},
    })
}
