use super::*;

fn v3(gv: &str) -> Value {
    serde_json::from_slice(v3_document(gv).expect("document")).expect("json")
}

fn v2() -> Value {
    serde_json::from_slice(v2_json()).expect("json")
}

#[test]
fn v3_pod_spec_containers_carry_patch_extensions() {
    let doc = v3("api/v1");
    assert_eq!(doc["openapi"], "3.0.0");
    let containers =
        &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(
        containers["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Container"
    );
    // Meta types are in every document; refs with siblings are wrapped in allOf.
    let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(
        doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object()
    );
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        doc["components"]["schemas"]["io.k8s.api.core.v1.PodList"]
            ["x-kubernetes-group-version-kind"][0]["kind"],
        "PodList"
    );
    let ios = &doc["components"]["schemas"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(ios["format"], "int-or-string");
    assert!(ios["oneOf"].is_array());
}

#[test]
fn every_ref_resolves_in_every_document() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    for (g, v) in resources::group_versions() {
        let doc = v3(&paths::gv_path(g, v));
        let mut out = Vec::new();
        refs(&doc, &mut out);
        for r in out {
            let name = r.strip_prefix("#/components/schemas/").expect("v3 ref");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{g}/{v}: {r}"
            );
        }
    }
    let doc = v2();
    let mut out = Vec::new();
    refs(&doc, &mut out);
    for r in out {
        let name = r.strip_prefix("#/definitions/").expect("v2 ref");
        assert!(doc["definitions"][name].is_object(), "{r}");
    }
}

#[test]
fn patch_operations_have_field_validation_and_gvk() {
    for (g, v) in resources::group_versions() {
        let doc = v3(&paths::gv_path(g, v));
        for info in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
            let gvk = serde_json::json!({"group": g, "kind": info.kind, "version": v});
            let patches: Vec<&Value> = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|p| p.get("patch"))
                .filter(|op| op["x-kubernetes-group-version-kind"] == gvk)
                .collect();
            assert!(!patches.is_empty(), "{}", info.kind);
            for op in patches {
                let params = op["parameters"].as_array().unwrap();
                assert!(params
                    .iter()
                    .any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
                assert!(
                    op["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
                assert_eq!(op["x-kubernetes-action"], "patch");
            }
        }
    }
    let doc = v3("api/v1");
    let list = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(list["operationId"], "listCoreV1NamespacedPod");
    assert_eq!(list["x-kubernetes-action"], "list");
    let doc = v3("apis/rbac.authorization.k8s.io/v1");
    assert!(
        doc["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["put"]
            ["operationId"]
            == "replaceRbacAuthorizationV1ClusterRole"
    );
}

#[test]
fn v2_protobuf_decodes_with_all_definitions() {
    let doc = v2();
    let decoded: proto::Document = prost::Message::decode(v2_protobuf()).expect("decodes");
    let defs = decoded
        .definitions
        .expect("definitions")
        .additional_properties;
    assert_eq!(defs.len(), doc["definitions"].as_object().unwrap().len());
    let pod = defs
        .iter()
        .find(|d| d.name == "io.k8s.api.core.v1.Pod")
        .and_then(|d| d.value.as_ref())
        .expect("pod");
    let gvk = pod
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .and_then(|e| e.value.as_ref())
        .expect("gvk extension");
    let parsed: Value = serde_yaml::from_str(&gvk.yaml).expect("yaml");
    assert_eq!(
        parsed,
        serde_json::json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        pod.r#type.as_ref().unwrap().value,
        vec!["object".to_string()]
    );
    assert_eq!(
        doc["definitions"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Pod"
    );
    let paths = decoded.paths.expect("paths").path;
    assert_eq!(paths.len(), doc["paths"].as_object().unwrap().len());
    // Every array has exactly one items schema (kubectl's proto parser insists).
    for d in &defs {
        check_arrays(d.value.as_ref().unwrap());
    }
}

fn check_arrays(s: &proto::Schema) {
    if s.r#type.as_ref().is_some_and(|t| t.value == ["array"]) {
        assert_eq!(s.items.as_ref().map(|i| i.schema.len()), Some(1));
    }
    if let Some(p) = &s.properties {
        for n in &p.additional_properties {
            check_arrays(n.value.as_ref().unwrap());
        }
    }
}

#[test]
fn index_lists_every_group_version() {
    let index: Value = serde_json::from_slice(v3_index()).unwrap();
    let paths = index["paths"].as_object().unwrap();
    let gvs = resources::group_versions();
    assert_eq!(paths.len(), gvs.len());
    for (g, v) in gvs {
        let p = paths::gv_path(g, v);
        let url = paths[&p]["serverRelativeURL"].as_str().unwrap();
        assert_eq!(
            url,
            format!("/openapi/v3/{p}?hash={}", v3_hash(&p).unwrap())
        );
    }
    assert!(v3_document("apis/nope/v1").is_none());
}

#[test]
fn patch_schema_walks_to_merge_keys() {
    let pod = patch_schema("", "v1", "Pod").expect("pod");
    let containers = pod.field("spec").unwrap().field("containers").unwrap();
    assert_eq!(containers.patch_merge_key(), Some("name"));
    assert!(containers.has_strategy("merge"));
    let ports = containers.items().unwrap().field("ports").unwrap();
    assert_eq!(ports.patch_merge_key(), Some("containerPort"));
    let env = containers.items().unwrap().field("env").unwrap();
    assert_eq!(env.patch_merge_key(), Some("name"));
    let labels = pod.field("metadata").unwrap().field("labels").unwrap();
    assert_eq!(labels.type_name(), Some("object"));
    let volumes = pod.field("spec").unwrap().field("volumes").unwrap();
    assert_eq!(volumes.patch_strategies(), vec!["merge", "retainKeys"]);
    assert!(patch_schema("apps", "v1", "Deployment").is_some());
    assert!(patch_schema("apps", "v1", "Nope").is_none());
}

/// Writes the documents and a resource list to `$OPENAPI_DUMP_DIR`, for poking at them with a
/// stub server and the real kubectl (`cargo test -p apiserver-lite dump_documents -- --ignored`).
#[test]
#[ignore]
fn dump_documents() {
    let Ok(dir) = std::env::var("OPENAPI_DUMP_DIR") else {
        return;
    };
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir.join("v3")).unwrap();
    std::fs::write(dir.join("v2.json"), v2_json()).unwrap();
    std::fs::write(dir.join("v2.pb"), v2_protobuf()).unwrap();
    std::fs::write(dir.join("v3.json"), v3_index()).unwrap();
    for (g, v) in resources::group_versions() {
        let p = paths::gv_path(g, v);
        std::fs::write(
            dir.join("v3").join(p.replace('/', "_")),
            v3_document(&p).unwrap(),
        )
        .unwrap();
    }
    let list: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            serde_json::json!({"group": r.group, "version": r.version, "kind": r.kind,
                "plural": r.plural, "singular": r.singular, "namespaced": r.namespaced,
                "shortNames": r.short_names, "categories": r.categories,
                "subresources": r.subresources, "verbs": r.verbs()})
        })
        .collect();
    std::fs::write(
        dir.join("resources.json"),
        serde_json::to_vec(&list).unwrap(),
    )
    .unwrap();
}

#[test]
fn required_lists_are_upstream_ones() {
    let doc = v2();
    let d = &doc["definitions"];
    assert!(d["io.k8s.api.core.v1.Pod"].get("required").is_none());
    assert!(d["io.k8s.api.core.v1.LocalObjectReference"]
        .get("required")
        .is_none());
    assert_eq!(
        d["io.k8s.api.core.v1.SecretKeySelector"]["required"],
        serde_json::json!(["key"])
    );
    assert_eq!(
        d["io.k8s.api.core.v1.Event"]["required"],
        serde_json::json!(["metadata", "involvedObject"])
    );
    assert_eq!(
        d["io.k8s.api.core.v1.PodList"]["required"],
        serde_json::json!(["items"])
    );
    assert_eq!(
        d["io.k8s.api.core.v1.Container"]["required"],
        serde_json::json!(["name"])
    );
}
