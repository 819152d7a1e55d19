//! API discovery: `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>` in the legacy
//! (APIVersions / APIGroupList / APIResourceList) form, and the aggregated discovery document
//! (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList) that kubectl 1.32 asks for first. All built
//! from the resource table, plus `metrics.k8s.io` (served by `metrics_api`).

use serde_json::{json, Value};

use crate::resources::{group_versions, ResourceInfo, RESOURCES};

/// Media type of the aggregated discovery document.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether `Accept` asks for aggregated discovery (v2; v2beta1 is served the same shape).
pub fn wants_aggregated(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').next().is_some_and(|first| {
            first.contains("as=APIGroupDiscoveryList") && first.contains("g=apidiscovery.k8s.io")
        })
    })
}

/// (name, kind, group, version, verbs) of a subresource, as upstream lists it.
fn subresource(
    r: &ResourceInfo,
    sub: &str,
) -> (
    String,
    &'static str,
    &'static str,
    &'static str,
    Vec<&'static str>,
) {
    let name = format!("{}/{sub}", r.plural);
    match sub {
        "scale" => (
            name,
            "Scale",
            "autoscaling",
            "v1",
            vec!["get", "patch", "update"],
        ),
        "binding" => (name, "Binding", "", "v1", vec!["create"]),
        "eviction" => (name, "Eviction", "policy", "v1", vec!["create"]),
        "finalize" => (name, r.kind, r.group, r.version, vec!["update"]),
        "log" => (name, r.kind, r.group, r.version, vec!["get"]),
        "exec" => (name, "PodExecOptions", "", "v1", vec!["create", "get"]),
        "attach" => (name, "PodAttachOptions", "", "v1", vec!["create", "get"]),
        "portforward" => (
            name,
            "PodPortForwardOptions",
            "",
            "v1",
            vec!["create", "get"],
        ),
        "proxy" if r.plural == "nodes" => (
            name,
            "NodeProxyOptions",
            "",
            "v1",
            vec!["create", "delete", "get", "patch", "update"],
        ),
        _ => (
            name,
            r.kind,
            r.group,
            r.version,
            vec!["get", "patch", "update"],
        ),
    }
}

/// `/api` (APIVersions).
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis` (APIGroupList).
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, _)| api_group(g))
        .chain(std::iter::once(crate::metrics_api::api_group()))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>` (APIGroup).
pub fn api_group(group: &str) -> Value {
    if group == crate::metrics_api::GROUP {
        return crate::metrics_api::api_group();
    }
    let versions: Vec<Value> = group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions, "preferredVersion": preferred})
}

/// `/api/v1` or `/apis/<group>/<version>` (APIResourceList); None if not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    if group == crate::metrics_api::GROUP {
        return (version == crate::metrics_api::VERSION)
            .then(crate::metrics_api::api_resource_list);
    }
    let mut resources = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for sub in r.subresources {
            let (name, kind, g, v, verbs) = subresource(r, sub);
            let mut e = json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": kind, "verbs": verbs});
            if g != r.group || v != r.version {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            resources.push(e);
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The aggregated discovery document for `/api` (core) or `/apis` (every other group).
pub fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in group_versions() {
        if g.is_empty() == core && !groups.contains(&g) {
            groups.push(g);
        }
    }
    for g in groups {
        let versions: Vec<Value> = group_versions()
            .into_iter()
            .filter(|(gg, _)| *gg == g)
            .map(|(_, v)| {
                let resources: Vec<Value> = RESOURCES
                    .iter()
                    .filter(|r| r.group == g && r.version == v)
                    .map(|r| {
                        let subs: Vec<Value> = r
                            .subresources
                            .iter()
                            .map(|s| {
                                let (_, kind, sg, sv, verbs) = subresource(r, s);
                                json!({"subresource": s, "responseKind": {"group": sg, "version": sv, "kind": kind}, "verbs": verbs})
                            })
                            .collect();
                        let mut e = json!({
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": r.singular,
                            "verbs": r.verbs(),
                        });
                        if !r.short_names.is_empty() {
                            e["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            e["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            e["subresources"] = json!(subs);
                        }
                        e
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": versions}),
        );
    }
    if !core {
        // Served by `metrics_api`, outside the resource table (no k8s-openapi type).
        items.push(crate::metrics_api::aggregated_item());
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_list_every_resource() {
        let core = api_resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/status") && names.contains(&"pods/eviction"));
        let agg = aggregated(false);
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let dep = &apps["versions"][0]["resources"][0];
        assert_eq!(dep["resource"], "deployments");
        assert_eq!(dep["subresources"][1]["responseKind"]["kind"], "Scale");
        assert!(wants_aggregated(Some(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        )));
        assert!(!wants_aggregated(Some("application/json")));
    }
}
