//! The OpenAPI definitions (models) of the served types, in upstream's Swagger 2.0 shape: named
//! `io.k8s.api.core.v1.Pod`, referenced as `#/definitions/<name>`, with the Kubernetes vendor
//! extensions (`x-kubernetes-patch-strategy`, `x-kubernetes-group-version-kind`, …) merged in.
//!
//! Upstream generates these with kube-openapi from the Go types; here they come from k8s-openapi's
//! schemars impls, normalised to what upstream serves, plus `extensions.json` (machine-derived
//! from upstream's schemas by `scripts/gen-openapi-extensions.py`) for the extensions schemars
//! does not carry and for upstream's `required` lists. The `*List` kinds are built here because k8s-openapi has one generic `List<T>`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::{autoscaling::v1 as autoscaling, core::v1 as core, policy::v1 as policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{json, Map, Value};

use crate::resources::{ResourceInfo, RESOURCES};

/// The definitions, by name, v2 form.
pub type Definitions = BTreeMap<String, Value>;

pub const REF_PREFIX_V2: &str = "#/definitions/";

pub const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
pub const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub const BINDING: &str = "io.k8s.api.core.v1.Binding";
pub const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";

/// The extensions file, `{definition: {x-…, properties: {prop: {x-…}}}}`.
const EXTENSIONS: &str = include_str!("extensions.json");

/// Name of the list definition of a resource (`io.k8s.api.core.v1.PodList`).
pub fn list_definition(info: &ResourceInfo) -> String {
    format!("{}List", info.definition)
}

/// Builds every definition reachable from the resource table and the operations' bodies.
pub fn build() -> Definitions {
    let settings = schemars::generate::SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
        s.transforms = Vec::new();
    });
    let mut gen = settings.into_generator();
    let mut top: Vec<(String, Value)> = Vec::new();
    for info in RESOURCES {
        let schema = (info.schema)(&mut gen);
        top.push((info.definition.to_string(), schema.to_value()));
    }
    // Types named by the operations (request and response bodies).
    gen.subschema_for::<meta::DeleteOptions>();
    gen.subschema_for::<meta::Status>();
    gen.subschema_for::<meta::WatchEvent<Value>>();
    gen.subschema_for::<meta::Patch>();
    gen.subschema_for::<meta::ListMeta>();
    gen.subschema_for::<autoscaling::Scale>();
    gen.subschema_for::<core::Binding>();
    gen.subschema_for::<policy::Eviction>();

    let mut defs: Definitions = gen.take_definitions(false).into_iter().collect();
    for (name, schema) in top {
        defs.insert(name, schema);
    }
    for info in RESOURCES {
        defs.entry(list_definition(info))
            .or_insert_with(|| list_schema(info));
    }
    for schema in defs.values_mut() {
        normalize(schema);
    }
    special_types(&mut defs);
    merge_extensions(&mut defs);
    for info in RESOURCES {
        ensure_gvk(
            &mut defs,
            info.definition,
            info.group,
            info.version,
            info.kind,
        );
        let list_kind = info.list_kind();
        ensure_gvk(
            &mut defs,
            &list_definition(info),
            info.group,
            info.version,
            &list_kind,
        );
    }
    defs
}

/// The `<Kind>List` schema upstream has for every resource.
fn list_schema(info: &ResourceInfo) -> Value {
    json!({
        "description": format!("{}List is a list of {} objects.", info.kind, info.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("List of {}.", info.plural),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX_V2}{}", info.definition)}
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "$ref": format!("{REF_PREFIX_V2}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        },
        "required": ["items"]
    })
}

/// Rewrites JSON-Schema-isms that Swagger 2.0 / OpenAPI 3.0 do not accept into upstream's form.
fn normalize(node: &mut Value) {
    let Value::Object(map) = node else { return };
    // `type: ["string", "null"]` → `type: string`.
    if let Some(Value::Array(types)) = map.get("type") {
        let kept: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if kept.len() == 1 {
            map.insert("type".into(), kept[0].clone());
        } else if kept.is_empty() {
            map.remove("type");
        } else {
            map.insert("type".into(), Value::Array(kept));
        }
    }
    for key in ["$schema", "$id", "$defs", "title", "nullable"] {
        map.remove(key);
    }
    if let Some(Value::Object(props)) = map.get_mut("properties") {
        for p in props.values_mut() {
            normalize(p);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = map.get_mut(key) {
            normalize(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            for c in children {
                normalize(c);
            }
        }
    }
}

/// Quantity and IntOrString are string-typed in v2 (upstream's `format: int-or-string`).
fn special_types(defs: &mut Definitions) {
    if let Some(Value::Object(q)) = defs.get_mut(QUANTITY) {
        q.remove("x-kubernetes-int-or-string");
        q.insert("type".into(), json!("string"));
    }
    if let Some(Value::Object(q)) = defs.get_mut(INT_OR_STRING) {
        q.remove("x-kubernetes-int-or-string");
        q.insert("type".into(), json!("string"));
        q.insert("format".into(), json!("int-or-string"));
    }
}

/// Merges `extensions.json` into the definitions present.
fn merge_extensions(defs: &mut Definitions) {
    let Ok(Value::Object(ext)) = serde_json::from_str::<Value>(EXTENSIONS) else {
        return;
    };
    // k8s-openapi's `required` lists differ from upstream's (it requires every non-Option field,
    // `metadata` included): upstream's list wins, and where upstream has none there is none.
    // Every served definition exists upstream (a unit test checks the ones that matter).
    for (name, schema) in defs.iter_mut() {
        let upstream = ext.get(name).and_then(|e| e.get("required"));
        if upstream.is_none() {
            if let Value::Object(m) = schema {
                m.remove("required");
            }
        }
    }
    for (name, entry) in ext {
        let Some(Value::Object(schema)) = defs.get_mut(&name) else {
            continue;
        };
        let Value::Object(entry) = entry else {
            continue;
        };
        for (key, value) in entry {
            if key == "properties" {
                let Value::Object(props_ext) = value else {
                    continue;
                };
                let Some(Value::Object(props)) = schema.get_mut("properties") else {
                    continue;
                };
                for (pname, pext) in props_ext {
                    if let (Some(Value::Object(prop)), Value::Object(pext)) =
                        (props.get_mut(&pname), pext)
                    {
                        for (k, v) in pext {
                            prop.insert(k, v);
                        }
                    }
                }
            } else {
                schema.insert(key, value);
            }
        }
    }
}

/// Makes sure a served kind's definition carries its `x-kubernetes-group-version-kind`.
fn ensure_gvk(defs: &mut Definitions, name: &str, group: &str, version: &str, kind: &str) {
    let Some(Value::Object(schema)) = defs.get_mut(name) else {
        return;
    };
    let gvk = json!({"group": group, "kind": kind, "version": version});
    match schema.get_mut("x-kubernetes-group-version-kind") {
        Some(Value::Array(list)) => {
            if !list.contains(&gvk) {
                list.push(gvk);
            }
        }
        _ => {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }
}

/// Definition names referenced (`$ref`) anywhere inside `node`.
pub fn refs_in(node: &Value, out: &mut BTreeSet<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                if let Some(name) = r.strip_prefix(REF_PREFIX_V2) {
                    out.insert(name.to_string());
                }
            }
            for v in map.values() {
                refs_in(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                refs_in(v, out);
            }
        }
        _ => {}
    }
}

/// The closure of definitions reachable from `roots`.
pub fn reachable(defs: &Definitions, roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            let mut found = BTreeSet::new();
            refs_in(schema, &mut found);
            stack.extend(found.into_iter().filter(|n| !seen.contains(n)));
        }
    }
    seen
}

/// Rewrites every `$ref` prefix (v2 `#/definitions/` to v3 `#/components/schemas/`).
pub fn rewrite_refs(node: &mut Value, to: &str) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(REF_PREFIX_V2) {
                    *r = format!("{to}{name}");
                }
            }
            for v in map.values_mut() {
                rewrite_refs(v, to);
            }
        }
        Value::Array(items) => {
            for v in items {
                rewrite_refs(v, to);
            }
        }
        _ => {}
    }
}

/// A `{"$ref": …}` schema to a definition, v2 form.
pub fn ref_v2(name: &str) -> Value {
    let mut m = Map::new();
    m.insert(
        "$ref".into(),
        Value::String(format!("{REF_PREFIX_V2}{name}")),
    );
    Value::Object(m)
}
