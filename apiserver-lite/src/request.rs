//! Request information, as upstream's `RequestInfoFactory`: turns a URL path and method into the
//! verb, group, version, namespace, resource, subresource and name that every later filter
//! (authentication, authorization, admission) and handler works with; plus the query options and
//! content negotiation the REST handlers read.

use std::collections::HashMap;

/// What a request is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    pub path: String,
    /// get, list, watch, create, update, patch, delete, deletecollection (resource requests), or
    /// the lower-cased HTTP method.
    pub verb: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl RequestInfo {
    /// Parses `/api/v1/namespaces/ns/pods/name/status` and friends.
    pub fn parse(method: &str, path: &str, query: &HashMap<String, String>) -> Self {
        let mut info = RequestInfo {
            path: path.to_string(),
            verb: method.to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                info.version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                info.group = group.to_string();
                info.version = version.to_string();
                rest
            }
            _ => return info,
        };
        info.is_resource_request = true;
        let mut rest = rest.to_vec();
        let mut legacy_watch = false;
        if rest.first() == Some(&"watch") {
            legacy_watch = true;
            rest.remove(0);
        }
        // namespaces/{ns}/{resource}... but `namespaces/{ns}` alone (and its subresources
        // status/finalize) is the namespace object itself.
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
            info.namespace = rest[1].to_string();
            rest.drain(..2);
            if rest.first() == Some(&"status") || rest.first() == Some(&"finalize") {
                // `namespaces/{ns}/status`
                info.resource = "namespaces".into();
                info.name = info.namespace.clone();
                info.subresource = rest[0].to_string();
                info.namespace.clear();
                rest.clear();
            }
        }
        if !rest.is_empty() {
            info.resource = rest[0].to_string();
            if info.resource == "namespaces" && rest.len() >= 2 {
                info.name = rest[1].to_string();
                info.namespace.clear();
            } else if rest.len() >= 2 {
                info.name = rest[1].to_string();
            }
            if rest.len() >= 3 {
                info.subresource = rest[2..].join("/");
            }
        }
        let watch_param = query
            .get("watch")
            .map(|v| v == "true" || v == "1")
            .unwrap_or(false);
        info.verb = match (method, info.name.is_empty()) {
            ("GET" | "HEAD", true) if legacy_watch || watch_param => "watch",
            ("GET" | "HEAD", true) => "list",
            ("GET" | "HEAD", false) if legacy_watch || watch_param => "watch",
            ("GET" | "HEAD", false) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "deletecollection",
            ("DELETE", false) => "delete",
            (m, _) => {
                return RequestInfo {
                    verb: m.to_ascii_lowercase(),
                    ..info
                }
            }
        }
        .to_string();
        info
    }
}

/// Parses a query string into a map (the last value of a repeated key wins).
pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(decode(k), decode(v));
    }
    out
}

/// The response form a client asked for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Representation {
    /// The object or list itself.
    Object,
    /// meta.k8s.io/v1 Table (`kubectl get`).
    Table,
    /// meta.k8s.io/v1 PartialObjectMetadata(List).
    Metadata,
}

/// Picks the first media type of `Accept` that can be served. `None` when nothing acceptable is
/// offered (the caller answers 406).
pub fn negotiate(accept: Option<&str>) -> Option<Representation> {
    let Some(accept) = accept else {
        return Some(Representation::Object);
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let mime = parts.next().unwrap_or("");
        let params: HashMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
        let json_like = matches!(
            mime,
            "application/json" | "*/*" | "application/*" | "application/yaml"
        );
        if !json_like {
            continue;
        }
        match (params.get("as"), params.get("g"), params.get("v")) {
            (None, _, _) => return Some(Representation::Object),
            (Some(&"Table"), Some(&"meta.k8s.io"), Some(&"v1")) => {
                return Some(Representation::Table)
            }
            (
                Some(&"PartialObjectMetadata" | &"PartialObjectMetadataList"),
                Some(&"meta.k8s.io"),
                Some(&"v1"),
            ) => return Some(Representation::Metadata),
            _ => continue,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, path: &str) -> RequestInfo {
        RequestInfo::parse(method, path, &HashMap::new())
    }

    #[test]
    fn parses_resource_paths() {
        let cases = [
            ("GET", "/api/v1/pods", "list", "", "", "pods", "", ""),
            (
                "GET",
                "/api/v1/namespaces/ns/pods/p",
                "get",
                "",
                "ns",
                "pods",
                "",
                "p",
            ),
            (
                "PUT",
                "/api/v1/namespaces/ns/pods/p/status",
                "update",
                "",
                "ns",
                "pods",
                "status",
                "p",
            ),
            (
                "GET",
                "/apis/apps/v1/namespaces/a/deployments",
                "list",
                "apps",
                "a",
                "deployments",
                "",
                "",
            ),
            (
                "GET",
                "/api/v1/namespaces/ns",
                "get",
                "",
                "",
                "namespaces",
                "",
                "ns",
            ),
            (
                "PUT",
                "/api/v1/namespaces/ns/finalize",
                "update",
                "",
                "",
                "namespaces",
                "finalize",
                "ns",
            ),
            (
                "GET",
                "/api/v1/watch/namespaces/ns/pods",
                "watch",
                "",
                "ns",
                "pods",
                "",
                "",
            ),
            (
                "DELETE",
                "/api/v1/namespaces/ns/pods",
                "deletecollection",
                "",
                "ns",
                "pods",
                "",
                "",
            ),
            (
                "POST",
                "/api/v1/namespaces/ns/pods/p/binding",
                "create",
                "",
                "ns",
                "pods",
                "binding",
                "p",
            ),
            (
                "GET",
                "/api/v1/nodes/n/proxy/metrics",
                "get",
                "",
                "",
                "nodes",
                "proxy/metrics",
                "n",
            ),
        ];
        for (m, p, verb, g, ns, res, sub, name) in cases {
            let i = info(m, p);
            assert!(i.is_resource_request, "{p}");
            assert_eq!(
                (
                    i.verb.as_str(),
                    i.group.as_str(),
                    i.namespace.as_str(),
                    i.resource.as_str(),
                    i.subresource.as_str(),
                    i.name.as_str()
                ),
                (verb, g, ns, res, sub, name),
                "{m} {p}"
            );
        }
        assert!(!info("GET", "/version").is_resource_request);
        assert!(!info("GET", "/apis/apps/v1").is_resource_request);
    }

    #[test]
    fn negotiates_table_and_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(kubectl)), Some(Representation::Table));
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Some(Representation::Object)
        );
        assert_eq!(negotiate(Some("application/vnd.kubernetes.protobuf")), None);
        assert_eq!(negotiate(None), Some(Representation::Object));
    }
}
