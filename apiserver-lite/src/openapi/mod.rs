//! OpenAPI: the published schema of the API (upstream's kube-openapi handlers behind `/openapi/v2`
//! and `/openapi/v3`), built once from k8s-openapi's schemars impls and upstream's vendor
//! extensions, plus the patch meta (`x-kubernetes-patch-strategy`/`-merge-key`) that strategic
//! merge patch walks.
//!
//! Everything is computed lazily on first use and kept as bytes: the v2 JSON and protobuf
//! documents, the v3 index and one v3 document per group/version, each with a content hash that
//! serves as ETag and as the `hash` query of the v3 index's URLs.

mod defs;
mod paths;
pub mod proto;
mod v2;
mod v3;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use crate::resources::{self, RESOURCES};

/// The media type kubectl asks `/openapi/v2` for (`Accept`); Go's mime parser rejects the `@`,
/// so upstream answers with [`V2_PROTOBUF_CONTENT_TYPE`] instead, and so must we.
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The `Content-Type` of the protobuf v2 document (kube-openapi's `subTypeProtobuf`).
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `info.version` of the documents: the Kubernetes version whose API is served.
pub const VERSION: &str = "v1.33.0";

struct Built {
    defs: defs::Definitions,
    v2_json: Vec<u8>,
    v2_protobuf: Vec<u8>,
    v2_hash: String,
    v3_index: Vec<u8>,
    /// gv path → (document, hash).
    v3: BTreeMap<String, (Vec<u8>, String)>,
}

static BUILT: OnceLock<Built> = OnceLock::new();

fn built() -> &'static Built {
    BUILT.get_or_init(build)
}

fn build() -> Built {
    let defs = defs::build();

    let all_paths = paths::paths(None);
    let mut roots: Vec<String> = paths::referenced_definitions(&all_paths);
    for info in RESOURCES {
        roots.push(info.definition.to_string());
        roots.push(defs::list_definition(info));
    }
    let names = defs::reachable(&defs, roots);
    let v2_defs: defs::Definitions = defs
        .iter()
        .filter(|(k, _)| names.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let v2_doc = v2::document(&v2_defs, &all_paths);
    let v2_json = serde_json::to_vec(&v2_doc).unwrap_or_default();
    let v2_protobuf = prost::Message::encode_to_vec(&proto::document(&v2_doc));
    let v2_hash = hash_hex(&v2_json);

    let mut v3 = BTreeMap::new();
    let mut index_entries = Vec::new();
    for (group, version) in resources::group_versions() {
        let gv_paths = paths::paths(Some((group, version)));
        let mut roots = paths::referenced_definitions(&gv_paths);
        for info in RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            roots.push(info.definition.to_string());
            roots.push(defs::list_definition(info));
        }
        let names: BTreeSet<String> = defs::reachable(&defs, roots);
        let doc = v3::document(&defs, &names, &gv_paths);
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let hash = hash_hex(&bytes);
        let gv_path = paths::gv_path(group, version);
        index_entries.push((gv_path.clone(), hash.clone()));
        v3.insert(gv_path, (bytes, hash));
    }
    let v3_index = serde_json::to_vec(&v3::index(&index_entries)).unwrap_or_default();

    Built {
        defs: v2_defs,
        v2_json,
        v2_protobuf,
        v2_hash,
        v3_index,
        v3,
    }
}

/// A 128-bit content hash (two FNV-1a 64 lanes), upper-case hex like upstream's hashes. Only
/// used as an ETag and cache-busting query, not for security.
fn hash_hex(bytes: &[u8]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x8422_2325_cbf2_9ce4;
    for &byte in bytes {
        a ^= u64::from(byte);
        a = a.wrapping_mul(0x0000_0100_0000_01b3);
        b = b.rotate_left(5) ^ u64::from(byte);
        b = b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    format!("{a:016X}{b:016X}")
}

/// The Swagger 2.0 document as JSON (`/openapi/v2`, `Accept: application/json`).
pub fn v2_json() -> &'static [u8] {
    &built().v2_json
}

/// The Swagger 2.0 document as gnostic protobuf
/// (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` or `...v2.v1.0+protobuf`);
/// serve it with `Content-Type: V2_PROTOBUF_CONTENT_TYPE`.
pub fn v2_protobuf() -> &'static [u8] {
    &built().v2_protobuf
}

/// ETag of the v2 document (the same for both encodings, which carry the same content).
pub fn v2_etag() -> &'static str {
    &built().v2_hash
}

/// The JSON body of `/openapi/v3`.
pub fn v3_index() -> &'static [u8] {
    &built().v3_index
}

/// The OpenAPI 3.0 document of one group/version; `gv_path` is `api/v1` or `apis/apps/v1`.
pub fn v3_document(gv_path: &str) -> Option<&'static [u8]> {
    built().v3.get(gv_path).map(|(doc, _)| doc.as_slice())
}

/// The hash (ETag) of one group/version's v3 document.
pub fn v3_hash(gv_path: &str) -> Option<&'static str> {
    built().v3.get(gv_path).map(|(_, hash)| hash.as_str())
}

/// Patch meta for strategic merge patch: the schema node of a top-level kind.
pub fn patch_schema(group: &str, version: &str, kind: &str) -> Option<PatchSchema> {
    let info = RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)?;
    PatchSchema::definition(info.definition)
}

/// A node of the served schema, for strategic merge patch: walks into properties, array items
/// and map values (following `$ref`s) and tells the patch strategy and merge key at each node,
/// as upstream's `strategicpatch.PatchMetaFromOpenAPI` does.
#[derive(Debug, Clone, Copy)]
pub struct PatchSchema {
    node: &'static Value,
}

impl PatchSchema {
    /// The schema of a definition by name (`io.k8s.api.core.v1.PodSpec`).
    pub fn definition(name: &str) -> Option<PatchSchema> {
        built().defs.get(name).map(|node| PatchSchema { node })
    }

    /// Follows `$ref` (and a single-element `allOf`) to the schema that has the structure.
    fn resolved(&self) -> &'static Value {
        let mut node = self.node;
        for _ in 0..16 {
            if let Some(Value::String(r)) = node.get("$ref") {
                match r
                    .strip_prefix(defs::REF_PREFIX_V2)
                    .and_then(|n| built().defs.get(n))
                {
                    Some(target) => node = target,
                    None => return node,
                }
            } else if let Some(Value::Array(all)) = node.get("allOf") {
                match all.as_slice() {
                    [one] => node = one,
                    _ => return node,
                }
            } else {
                return node;
            }
        }
        node
    }

    /// The schema of field `name` of this object.
    pub fn field(&self, name: &str) -> Option<PatchSchema> {
        self.resolved()
            .get("properties")?
            .get(name)
            .map(|node| PatchSchema { node })
    }

    /// The schema of the elements of this array.
    pub fn items(&self) -> Option<PatchSchema> {
        match self.resolved().get("items")? {
            node @ Value::Object(_) => Some(PatchSchema { node }),
            _ => None,
        }
    }

    /// The schema of the values of this map (`additionalProperties`).
    pub fn additional_properties(&self) -> Option<PatchSchema> {
        match self.resolved().get("additionalProperties")? {
            node @ Value::Object(_) => Some(PatchSchema { node }),
            _ => None,
        }
    }

    /// The schema of a value under key `name`: a declared field, else the map value schema.
    pub fn lookup(&self, name: &str) -> Option<PatchSchema> {
        self.field(name).or_else(|| self.additional_properties())
    }

    fn extension(&self, key: &str) -> Option<&'static str> {
        if let Some(v) = self.node.get(key).and_then(Value::as_str) {
            return Some(v);
        }
        self.resolved().get(key).and_then(Value::as_str)
    }

    /// `x-kubernetes-patch-strategy` split on commas (`merge`, `retainKeys`, `replace`).
    pub fn patch_strategies(&self) -> Vec<&'static str> {
        self.extension("x-kubernetes-patch-strategy")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the strategy includes `strategy`.
    pub fn has_strategy(&self, strategy: &str) -> bool {
        self.patch_strategies().contains(&strategy)
    }

    /// `x-kubernetes-patch-merge-key`.
    pub fn patch_merge_key(&self) -> Option<&'static str> {
        self.extension("x-kubernetes-patch-merge-key")
    }

    /// The JSON type of the node after resolving references (`object`, `array`, `string`…).
    pub fn type_name(&self) -> Option<&'static str> {
        self.resolved().get("type").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests;
