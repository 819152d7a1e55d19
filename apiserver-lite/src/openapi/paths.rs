//! The REST operations of every served resource, as upstream's apiserver installs them
//! (k8s.io/apiserver/pkg/endpoints/installer.go): per resource the collection, item, watch and
//! subresource paths with their verbs, `x-kubernetes-action`, `x-kubernetes-group-version-kind`,
//! operation ids and query parameters. Version-neutral; `v2` and `v3` render it.

use crate::resources::{ResourceInfo, RESOURCES};

use super::defs::{self, BINDING, DELETE_OPTIONS, EVICTION, PATCH, SCALE, STATUS, WATCH_EVENT};

/// A query or path parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    /// `string`, `boolean` or `integer`.
    pub ty: &'static str,
    pub description: &'static str,
    /// `query` or `path`.
    pub location: &'static str,
}

const fn q(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        ty,
        description,
        location: "query",
    }
}

const ALLOW_WATCH_BOOKMARKS: Param = q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.");
const CONTINUE: Param = q("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize.");
const FIELD_SELECTOR: Param = q(
    "fieldSelector",
    "string",
    "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
);
const LABEL_SELECTOR: Param = q(
    "labelSelector",
    "string",
    "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
);
const LIMIT: Param = q("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.");
const RESOURCE_VERSION: Param = q("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset");
const RESOURCE_VERSION_MATCH: Param = q("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset");
const SEND_INITIAL_EVENTS: Param = q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event will be sent.");
const TIMEOUT_SECONDS: Param = q("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.");
const WATCH: Param = q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.");
const DRY_RUN: Param = q("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed");
const FIELD_MANAGER: Param = q("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
const FIELD_VALIDATION: Param = q("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.");
const FORCE: Param = q("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.");
const GRACE_PERIOD_SECONDS: Param = q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.");
const IGNORE_STORE_READ_ERROR: Param = q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object.");
const ORPHAN_DEPENDENTS: Param = q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.");
const PROPAGATION_POLICY: Param = q("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.");
pub const PRETTY: Param = q("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user explicitly requests. Use 'true' to output with indentation.");
const NAME: Param = Param {
    name: "name",
    ty: "string",
    description: "name of the resource",
    location: "path",
};
const NAMESPACE: Param = Param {
    name: "namespace",
    ty: "string",
    description: "object name and auth scope, such as for teams and projects",
    location: "path",
};

const LIST_PARAMS: &[Param] = &[
    ALLOW_WATCH_BOOKMARKS,
    CONTINUE,
    FIELD_SELECTOR,
    LABEL_SELECTOR,
    LIMIT,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
    WATCH,
];
const WRITE_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE_PARAMS: &[Param] = &[
    DRY_RUN,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
];
const DELETE_COLLECTION_PARAMS: &[Param] = &[
    CONTINUE,
    DRY_RUN,
    FIELD_SELECTOR,
    GRACE_PERIOD_SECONDS,
    IGNORE_STORE_READ_ERROR,
    LABEL_SELECTOR,
    LIMIT,
    ORPHAN_DEPENDENTS,
    PROPAGATION_POLICY,
    RESOURCE_VERSION,
    RESOURCE_VERSION_MATCH,
    SEND_INITIAL_EVENTS,
    TIMEOUT_SECONDS,
];

/// Media types of request bodies of PATCH, as upstream lists them.
pub const PATCH_CONSUMES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];
/// Media types of responses.
pub const PRODUCES: &[&str] = &["application/json", "application/yaml"];
/// Media types of watch responses.
pub const WATCH_PRODUCES: &[&str] = &["application/json", "application/json;stream=watch"];

/// One operation on one path.
#[derive(Debug, Clone)]
pub struct Operation {
    /// Lower-case HTTP method: `get`, `put`, `post`, `patch`, `delete`.
    pub method: &'static str,
    pub operation_id: String,
    pub description: String,
    /// `x-kubernetes-action`: get, list, watch, watchlist, post, put, patch, delete,
    /// deletecollection.
    pub action: &'static str,
    /// `x-kubernetes-group-version-kind` of the body the operation works on.
    pub gvk: (String, String, String),
    pub params: &'static [Param],
    /// Definition of the request body, if any.
    pub body: Option<&'static str>,
    /// `(code, description, definition)`.
    pub responses: Vec<(u16, &'static str, String)>,
    pub tag: String,
}

impl Operation {
    pub fn is_watch(&self) -> bool {
        self.action == "watch" || self.action == "watchlist"
    }
    pub fn is_patch(&self) -> bool {
        self.method == "patch"
    }
}

/// One path with its operations.
#[derive(Debug, Clone)]
pub struct PathItem {
    pub path: String,
    /// Path-level parameters: `name`/`namespace` (path) and `pretty`.
    pub params: Vec<Param>,
    pub operations: Vec<Operation>,
}

/// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`: the group/version part of operation ids.
fn gv_camel(group: &str, version: &str) -> String {
    let mut out = String::new();
    let group = if group.is_empty() { "core" } else { group };
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    for part in group.split('.') {
        out.push_str(&capitalize(part));
    }
    out.push_str(&capitalize(version));
    out
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`: the tag of a group/version.
pub fn tag(group: &str, version: &str) -> String {
    let group = if group.is_empty() { "core" } else { group };
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    let mut out = String::new();
    for (i, part) in group.split('.').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            out.push_str(&capitalize(part));
        }
    }
    format!("{out}_{version}")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `api/v1` or `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every path of the resources of one group/version (all of them when `only` is None).
pub fn paths(only: Option<(&str, &str)>) -> Vec<PathItem> {
    let mut out = Vec::new();
    for info in RESOURCES {
        if let Some((g, v)) = only {
            if info.group != g || info.version != v {
                continue;
            }
        }
        resource_paths(info, &mut out);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn resource_paths(info: &'static ResourceInfo, out: &mut Vec<PathItem>) {
    let gv = gv_camel(info.group, info.version);
    let ns = if info.namespaced { "Namespaced" } else { "" };
    let kind = info.kind;
    let prefix = format!("/{}", gv_path(info.group, info.version));
    let scope = if info.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/")
    } else {
        format!("{prefix}/")
    };
    let watch_scope = if info.namespaced {
        format!("{prefix}/watch/namespaces/{{namespace}}/")
    } else {
        format!("{prefix}/watch/")
    };
    let scope_params: Vec<Param> = if info.namespaced {
        vec![NAMESPACE]
    } else {
        Vec::new()
    };
    let with = |extra: &[Param]| -> Vec<Param> {
        let mut v: Vec<Param> = extra.to_vec();
        v.extend(scope_params.iter().copied());
        v.push(PRETTY);
        v
    };
    let gvk = (
        info.group.to_string(),
        info.version.to_string(),
        kind.to_string(),
    );
    let tag = tag(info.group, info.version);
    let def = info.definition;
    let list_def = defs::list_definition(info);
    let op = |method: &'static str,
              id: String,
              description: String,
              action: &'static str,
              params: &'static [Param],
              body: Option<&'static str>,
              responses: Vec<(u16, &'static str, String)>| Operation {
        method,
        operation_id: id,
        description,
        action,
        gvk: gvk.clone(),
        params,
        body,
        responses,
        tag: tag.clone(),
    };
    let ok = |d: &str| vec![(200, "OK", d.to_string())];
    let written = |d: &str, accepted: bool| {
        let mut v = vec![(200, "OK", d.to_string()), (201, "Created", d.to_string())];
        if accepted {
            v.push((202, "Accepted", d.to_string()));
        }
        v
    };

    // Collection.
    out.push(PathItem {
        path: format!("{scope}{}", info.plural),
        params: with(&[]),
        operations: vec![
            op(
                "get",
                format!("list{gv}{ns}{kind}"),
                format!("list or watch objects of kind {kind}"),
                "list",
                LIST_PARAMS,
                None,
                ok(&list_def),
            ),
            op(
                "post",
                format!("create{gv}{ns}{kind}"),
                format!("create a {kind}"),
                "post",
                WRITE_PARAMS,
                Some(def),
                written(def, true),
            ),
            op(
                "delete",
                format!("delete{gv}Collection{ns}{kind}"),
                format!("delete collection of {kind}"),
                "deletecollection",
                DELETE_COLLECTION_PARAMS,
                Some(DELETE_OPTIONS),
                ok(STATUS),
            ),
        ],
    });
    // Item.
    out.push(PathItem {
        path: format!("{scope}{}/{{name}}", info.plural),
        params: with(&[NAME]),
        operations: vec![
            op(
                "get",
                format!("read{gv}{ns}{kind}"),
                format!("read the specified {kind}"),
                "get",
                &[],
                None,
                ok(def),
            ),
            op(
                "put",
                format!("replace{gv}{ns}{kind}"),
                format!("replace the specified {kind}"),
                "put",
                WRITE_PARAMS,
                Some(def),
                written(def, false),
            ),
            op(
                "patch",
                format!("patch{gv}{ns}{kind}"),
                format!("partially update the specified {kind}"),
                "patch",
                PATCH_PARAMS,
                Some(PATCH),
                written(def, false),
            ),
            op(
                "delete",
                format!("delete{gv}{ns}{kind}"),
                format!("delete a {kind}"),
                "delete",
                DELETE_PARAMS,
                Some(DELETE_OPTIONS),
                vec![
                    (200, "OK", STATUS.to_string()),
                    (202, "Accepted", STATUS.to_string()),
                ],
            ),
        ],
    });
    // All namespaces.
    if info.namespaced {
        out.push(PathItem {
            path: format!("{prefix}/{}", info.plural),
            params: {
                let mut v = LIST_PARAMS.to_vec();
                v.push(PRETTY);
                v
            },
            operations: vec![op(
                "get",
                format!("list{gv}{kind}ForAllNamespaces"),
                format!("list or watch objects of kind {kind}"),
                "list",
                &[],
                None,
                ok(&list_def),
            )],
        });
        out.push(PathItem {
            path: format!("{prefix}/watch/{}", info.plural),
            params: {
                let mut v = LIST_PARAMS.to_vec();
                v.push(PRETTY);
                v
            },
            operations: vec![op(
                "get",
                format!("watch{gv}{kind}ListForAllNamespaces"),
                format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
                "watchlist",
                &[],
                None,
                ok(WATCH_EVENT),
            )],
        });
    }
    // Deprecated watch paths, still published upstream.
    out.push(PathItem {
        path: format!("{watch_scope}{}", info.plural),
        params: with(LIST_PARAMS),
        operations: vec![op(
            "get",
            format!("watch{gv}{ns}{kind}List"),
            format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."),
            "watchlist",
            &[],
            None,
            ok(WATCH_EVENT),
        )],
    });
    out.push(PathItem {
        path: format!("{watch_scope}{}/{{name}}", info.plural),
        params: {
            let mut v = LIST_PARAMS.to_vec();
            v.push(NAME);
            v.extend(scope_params.iter().copied());
            v.push(PRETTY);
            v
        },
        operations: vec![op(
            "get",
            format!("watch{gv}{ns}{kind}"),
            format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."),
            "watch",
            &[],
            None,
            ok(WATCH_EVENT),
        )],
    });

    // Subresources.
    for sub in info.subresources {
        // pods/log answers a text stream and the connect subresources upgrade the connection,
        // which the operation model here (JSON definitions) does not describe yet; clients do
        // not need it to call them.
        if matches!(*sub, "log" | "exec" | "attach" | "portforward" | "proxy") {
            continue;
        }
        let path = format!("{scope}{}/{{name}}/{sub}", info.plural);
        let params = with(&[NAME]);
        let suffix = capitalize(sub);
        let item = match *sub {
            "status" => PathItem {
                path,
                params,
                operations: vec![
                    op(
                        "get",
                        format!("read{gv}{ns}{kind}Status"),
                        format!("read status of the specified {kind}"),
                        "get",
                        &[],
                        None,
                        ok(def),
                    ),
                    op(
                        "put",
                        format!("replace{gv}{ns}{kind}Status"),
                        format!("replace status of the specified {kind}"),
                        "put",
                        WRITE_PARAMS,
                        Some(def),
                        written(def, false),
                    ),
                    op(
                        "patch",
                        format!("patch{gv}{ns}{kind}Status"),
                        format!("partially update status of the specified {kind}"),
                        "patch",
                        PATCH_PARAMS,
                        Some(PATCH),
                        written(def, false),
                    ),
                ],
            },
            "scale" => {
                let mut ops = vec![
                    op(
                        "get",
                        format!("read{gv}{ns}{kind}Scale"),
                        format!("read scale of the specified {kind}"),
                        "get",
                        &[],
                        None,
                        ok(SCALE),
                    ),
                    op(
                        "put",
                        format!("replace{gv}{ns}{kind}Scale"),
                        format!("replace scale of the specified {kind}"),
                        "put",
                        WRITE_PARAMS,
                        Some(SCALE),
                        written(SCALE, false),
                    ),
                    op(
                        "patch",
                        format!("patch{gv}{ns}{kind}Scale"),
                        format!("partially update scale of the specified {kind}"),
                        "patch",
                        PATCH_PARAMS,
                        Some(PATCH),
                        written(SCALE, false),
                    ),
                ];
                for o in &mut ops {
                    o.gvk = ("autoscaling".into(), "v1".into(), "Scale".into());
                }
                PathItem {
                    path,
                    params,
                    operations: ops,
                }
            }
            "binding" | "eviction" => {
                let (body, gvk) = if *sub == "binding" {
                    (BINDING, ("", "v1", "Binding"))
                } else {
                    (EVICTION, ("policy", "v1", "Eviction"))
                };
                let mut o = op(
                    "post",
                    format!("create{gv}{ns}{kind}{suffix}"),
                    format!("create {sub} of a {kind}"),
                    "post",
                    WRITE_PARAMS,
                    Some(body),
                    written(body, true),
                );
                o.gvk = (gvk.0.into(), gvk.1.into(), gvk.2.into());
                PathItem {
                    path,
                    params,
                    operations: vec![o],
                }
            }
            "finalize" => PathItem {
                path,
                params,
                operations: vec![op(
                    "put",
                    format!("replace{gv}{ns}{kind}Finalize"),
                    format!("replace finalize of the specified {kind}"),
                    "put",
                    WRITE_PARAMS,
                    Some(def),
                    written(def, false),
                )],
            },
            other => PathItem {
                path,
                params,
                operations: vec![op(
                    "get",
                    format!("read{gv}{ns}{kind}{}", capitalize(other)),
                    format!("read {other} of the specified {kind}"),
                    "get",
                    &[],
                    None,
                    ok(def),
                )],
            },
        };
        out.push(item);
    }
}

/// Definitions that the operations of `paths` name (bodies and responses).
pub fn referenced_definitions(paths: &[PathItem]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in paths {
        for o in &p.operations {
            if let Some(b) = o.body {
                out.push(b.to_string());
            }
            for (_, _, d) in &o.responses {
                out.push(d.clone());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
