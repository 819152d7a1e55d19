//! The REST handlers (upstream's `endpoints/handlers`): get, list, watch, create, update, patch,
//! delete and deletecollection for every resource of the table, plus the status, scale, binding,
//! eviction and finalize subresources (and pods/log, proxied to the kubelet by `pod_log`). They decode and check the body (size, JSON/YAML, kind and
//! apiVersion, unknown fields per `fieldValidation`), call the registry, and encode the result
//! as the object, a Table or metadata as the client asked.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::admission::webhook::{self, Operation};
use crate::cacher::{CacheError, CachedObject, Filter, WatchEventType};
use crate::events_view;
use crate::hooks;
use crate::pod_security;
use crate::registry::{DeleteOptions, Registry, WriteOptions};
use crate::request::{negotiate, Representation, RequestInfo};
use crate::resources::{self, ResourceInfo};
use crate::status::{ApiError, ApiResult};

/// Largest request body accepted, as upstream (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// Default watch timeout when the client gives none (upstream: min-request-timeout, 1800 s).
const DEFAULT_WATCH_TIMEOUT: u64 = 1800;
/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

pub type Query = std::collections::HashMap<String, String>;

/// A request as the handlers see it.
pub struct ApiRequest {
    pub info: RequestInfo,
    pub method: Method,
    pub query: Query,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The authenticated (possibly impersonated) user, for admission.
    pub user: crate::auth::UserInfo,
}

pub fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(
        code,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
        "application/json",
    )
}

pub fn bytes_response(code: StatusCode, body: Bytes, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

/// The served view of a stored object (events.k8s.io reads the core Event store).
fn view_out<'a>(info: &ResourceInfo, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
    if info.group == "events.k8s.io" {
        std::borrow::Cow::Owned(events_view::from_core(obj))
    } else {
        std::borrow::Cow::Borrowed(obj)
    }
}

fn view_bytes(info: &ResourceInfo, obj: &CachedObject) -> Bytes {
    if info.group == "events.k8s.io" {
        Bytes::from(serde_json::to_vec(&events_view::from_core(&obj.value)).unwrap_or_default())
    } else {
        obj.json.clone()
    }
}

/// The resource whose store a request reads and writes.
fn storage_info(info: &'static ResourceInfo) -> &'static ResourceInfo {
    if info.group == "events.k8s.io" {
        resources::find("", "v1", "events").expect("core events are served")
    } else {
        info
    }
}

fn view_in(info: &ResourceInfo, obj: Value) -> Value {
    if info.group == "events.k8s.io" {
        events_view::to_core(&obj)
    } else {
        obj
    }
}

/// Entry point for every resource request.
pub async fn handle(reg: Arc<Registry>, req: ApiRequest) -> Response<Body> {
    let info = &req.info;
    let Some(res) = resources::find(&info.group, &info.version, &info.resource) else {
        return error_response(&ApiError::not_found_generic());
    };
    if !info.subresource.is_empty() && !res.has_subresource(&info.subresource) {
        return error_response(&ApiError::not_found_generic());
    }
    if res.namespaced && info.namespace.is_empty() && !info.name.is_empty() {
        return error_response(&ApiError::not_found_generic());
    }
    let result = match info.verb.as_str() {
        "get" if info.subresource == "log" => crate::pod_log::get(&reg, res, &req).await,
        _ if info.subresource == "log" => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
        "get" => get(&reg, res, &req).await,
        "list" => list(&reg, res, &req).await,
        "watch" => {
            return watch(reg.clone(), res, &req)
                .await
                .unwrap_or_else(|e| error_response(&e))
        }
        "create" if info.subresource.is_empty() => create(&reg, res, &req).await,
        "create" => create_subresource(&reg, res, &req).await,
        "update" => update(&reg, res, &req).await,
        "patch" => patch(&reg, res, &req).await,
        "delete" if info.subresource.is_empty() => delete(&reg, res, &req).await,
        "deletecollection" if info.subresource.is_empty() => {
            delete_collection(&reg, res, &req).await
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    };
    match result {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

impl ApiError {
    pub fn not_found_generic() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
}

fn dry_run(q: &Query) -> ApiResult<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid dryRun value: {other:?}: supported values: \"All\""
        ))),
    }
}

/// Decodes a JSON or YAML body into an object of `res`, checking kind and apiVersion against the
/// path, and reports unknown fields as `fieldValidation` asks. Returns the object as the type
/// holds it and the warnings to send.
fn decode_body(
    res: &'static ResourceInfo,
    req: &ApiRequest,
    expect_kind: Option<(&str, &str)>,
) -> ApiResult<(Value, Vec<String>)> {
    let ctype = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ctype.split(';').next().unwrap_or("").trim();
    let mut value: Value = match mime {
        "application/yaml" | "application/apply-patch+yaml" => serde_yaml::from_slice(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?,
        "application/json" | "" | "*/*" => serde_json::from_slice(&req.body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(&req.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding the protobuf body: {e}")))?,
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format {other:?} - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )))
        }
    };
    let (api_version, kind) = expect_kind
        .map(|(a, k)| (a.to_string(), k.to_string()))
        .unwrap_or_else(|| (res.api_version(), res.kind.to_string()));
    let obj = value.as_object_mut().ok_or_else(|| {
        ApiError::bad_request("Object 'Kind' is missing in the request body: not a JSON object")
    })?;
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
        _ => {}
    }
    match obj.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({kind})"
            )))
        }
        _ => {}
    }
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let typed = if expect_kind.is_some() {
        value.clone()
    } else {
        (res.roundtrip)(&value).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                res.kind, res.version, res.kind
            ))
        })?
    };
    let mut unknown = Vec::new();
    if expect_kind.is_none() {
        unknown_fields(&value, &typed, "", &mut unknown);
    }
    let warnings = field_validation(&req.query, &unknown)?;
    Ok((typed, warnings))
}

/// Applies `fieldValidation` (Strict, Warn — the default — or Ignore) to the unknown fields.
fn field_validation(q: &Query, unknown: &[String]) -> ApiResult<Vec<String>> {
    let mode = q
        .get("fieldValidation")
        .map(String::as_str)
        .unwrap_or("Warn");
    match mode {
        "Strict" | "strict" if !unknown.is_empty() => {
            let list: Vec<String> = unknown.iter().map(|f| format!("unknown field {f:?}")).collect();
            Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))))
        }
        "Warn" | "warn" => Ok(unknown.iter().map(|f| format!("unknown field {f:?}")).collect()),
        "Strict" | "strict" | "Ignore" | "ignore" => Ok(Vec::new()),
        other => Err(ApiError::bad_request(format!(
            "fieldValidation: Invalid value: {other:?}: fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\""
        ))),
    }
}

/// Paths present in `input` but dropped by the typed round trip: the fields the type does not
/// have.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(bv) => unknown_fields(v, bv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// The `metadata.labels` of a namespace (null when it does not exist: NamespaceLifecycle
/// refuses the request then).
async fn namespace_labels(reg: &Registry, ns: &str) -> Value {
    let info = resources::find("", "v1", "namespaces").expect("namespaces are served");
    match reg.get(info, "", ns).await {
        Ok(o) => o.value["metadata"]["labels"].clone(),
        Err(_) => Value::Null,
    }
}

/// PodSecurity on an update or patch of the main resource: the namespace's labels when the
/// plugin evaluates the kind, and the namespace-update warnings about existing pods.
struct PodSecurityUpdate {
    labels: Option<Value>,
}

impl PodSecurityUpdate {
    async fn new(reg: &Registry, res: &ResourceInfo, req: &ApiRequest) -> Self {
        let labels = if pod_security::applies(res) && req.info.subresource.is_empty() {
            Some(namespace_labels(reg, &req.info.namespace).await)
        } else {
            None
        };
        PodSecurityUpdate { labels }
    }

    fn admit(&self, res: &ResourceInfo, new: &Value, cur: &Value) -> ApiResult<Vec<String>> {
        match &self.labels {
            Some(labels) => pod_security::admit(res, new, Some(cur), labels),
            None => Ok(Vec::new()),
        }
    }

    /// For a namespace whose enforce label changed: the pods it holds that would be refused.
    fn namespace_warnings(
        &self,
        reg: &Registry,
        res: &ResourceInfo,
        old_labels: &Value,
        ns: &Value,
    ) -> Vec<String> {
        if (res.group, res.plural) != ("", "namespaces") {
            return Vec::new();
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let new_labels = &ns["metadata"]["labels"];
        if old_labels == new_labels {
            return Vec::new();
        }
        let Some(pods) = resources::find("", "v1", "pods") else {
            return Vec::new();
        };
        let all: Filter = Arc::new(|_| true);
        let items: Vec<Value> = reg
            .cacher(pods)
            .list(&Registry::key(pods, name, ""), &all, None, 0)
            .items
            .iter()
            .map(|o| o.value.clone())
            .collect();
        pod_security::namespace_update_warnings(name, old_labels, new_labels, &items)
    }
}

/// The admission-webhook view of a request.
fn webhook_request<'a>(
    res: &'static ResourceInfo,
    req: &'a ApiRequest,
    operation: Operation,
    dry_run: bool,
) -> webhook::Request<'a> {
    webhook::Request {
        resource: res,
        subresource: &req.info.subresource,
        namespace: &req.info.namespace,
        name: &req.info.name,
        operation,
        user: &req.user,
        dry_run,
    }
}

fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {:?}", w)) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn parse_rv(q: &Query) -> ApiResult<Option<i64>> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "resourceVersion: Invalid value: {s:?}: invalid resource version"
                ))
            }),
    }
}

fn cache_error(e: CacheError) -> ApiError {
    match e {
        CacheError::TooOld { .. } => ApiError::expired(e.to_string()),
        CacheError::TooLarge { .. } => ApiError::timeout(e.to_string()),
        CacheError::Store(s) => s.into(),
    }
}

async fn get(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let sres = storage_info(res);
    let repr = representation(req)?;
    match parse_rv(&req.query)? {
        None => reg.cacher(sres).wait_fresh().await.map_err(cache_error)?,
        Some(rv) => reg.cacher(sres).wait_for(rv).await.map_err(cache_error)?,
    }
    let key = Registry::key(sres, &req.info.namespace, &req.info.name);
    let obj = reg
        .cacher(sres)
        .get(&key)
        .ok_or_else(|| ApiError::not_found(res.group, res.plural, &req.info.name))?;
    match req.info.subresource.as_str() {
        "scale" => return Ok(json_response(StatusCode::OK, &scale_of(res, &obj.value))),
        "" | "status" => {}
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    }
    Ok(match repr {
        Representation::Object => {
            bytes_response(StatusCode::OK, view_bytes(res, &obj), "application/json")
        }
        Representation::Table => {
            let v = view_out(res, &obj.value);
            json_response(
                StatusCode::OK,
                &hooks::to_table(
                    res,
                    &[&v],
                    json!({"resourceVersion": obj.revision.to_string()}),
                    include_object(req),
                ),
            )
        }
        Representation::Metadata => json_response(StatusCode::OK, &partial_metadata(&obj.value)),
    })
}

fn representation(req: &ApiRequest) -> ApiResult<Representation> {
    let accept = req
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    negotiate(accept).ok_or_else(|| {
        ApiError::not_acceptable(
            "only the following media types are accepted: application/json, application/yaml",
        )
    })
}

fn include_object(req: &ApiRequest) -> &str {
    req.query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata")
}

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

/// The list/watch filter from the selectors in the query, and the watch-index value it pins.
fn selection(res: &'static ResourceInfo, q: &Query) -> ApiResult<(Filter, Option<String>)> {
    let sel = hooks::selector_filter(
        res,
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    )
    .map_err(ApiError::bad_request)?;
    let filter: Filter = match sel.predicate {
        Some(p) => Arc::new(move |o: &CachedObject| p(o)),
        None => Arc::new(|_| true),
    };
    Ok((filter, sel.index_value))
}

fn selector(res: &'static ResourceInfo, q: &Query) -> ApiResult<Filter> {
    selection(res, q).map(|(f, _)| f)
}

/// The continue token, in upstream's format: base64 of {"v","rv","start"}.
fn encode_continue(rv: i64, start: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v["v"] != "meta.k8s.io/v1" {
        return Err(bad());
    }
    let rv = v["rv"].as_i64().filter(|r| *r > 0).ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?.to_string();
    if start.contains("..") {
        return Err(bad());
    }
    Ok((rv, start))
}

async fn list(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let sres = storage_info(res);
    let repr = representation(req)?;
    let q = &req.query;
    let filter = selector(res, q)?;
    let limit: usize = match q.get("limit") {
        Some(l) if !l.is_empty() => l
            .parse()
            .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
        _ => 0,
    };
    let prefix = Registry::key(sres, &req.info.namespace, "");
    let cacher = reg.cacher(sres);
    let rv = parse_rv(q)?;
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    let page = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if rv.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rev, start) = decode_continue(token)?;
            cacher
                .list_at(&prefix, &filter, &format!("{}/{start}", sres.storage_prefix), limit, rev)
                .await
                .map_err(|e| match e {
                    CacheError::Store(crate::storage::StoreError::Compacted { .. }) => ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ),
                    other => cache_error(other),
                })?
        }
        None => {
            match (rv, rv_match) {
                (None, "") => cacher.wait_fresh().await.map_err(cache_error)?,
                (None, m) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided ({m})"
                    )))
                }
                (Some(0), _) => {}
                (Some(n), "" | "NotOlderThan") => cacher.wait_for(n).await.map_err(cache_error)?,
                (Some(n), "Exact") => {
                    let page = cacher.list_at(&prefix, &filter, "", limit, n).await.map_err(cache_error)?;
                    return Ok(render_list(res, req, repr, page));
                }
                (Some(_), m) => {
                    return Err(ApiError::bad_request(format!(
                        "resourceVersionMatch: Unsupported value: {m:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
                    )))
                }
            }
            cacher.list(&prefix, &filter, None, limit)
        }
    };
    Ok(render_list(res, req, repr, page))
}

fn render_list(
    res: &'static ResourceInfo,
    req: &ApiRequest,
    repr: Representation,
    page: crate::cacher::ListPage,
) -> Response<Body> {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(after) = &page.continue_after {
        let sres = storage_info(res);
        let start = after
            .strip_prefix(&format!("{}/", sres.storage_prefix))
            .unwrap_or(after);
        meta["continue"] = json!(encode_continue(page.revision, start));
        meta["remainingItemCount"] = json!(page.remaining);
    }
    match repr {
        Representation::Object => {
            // Items are already serialized: splice them in.
            let mut out =
                Vec::with_capacity(64 + page.items.iter().map(|o| o.json.len() + 1).sum::<usize>());
            out.extend_from_slice(
                format!(
                    r#"{{"kind":"{}","apiVersion":"{}","metadata":{},"items":["#,
                    res.list_kind(),
                    res.api_version(),
                    meta
                )
                .as_bytes(),
            );
            for (i, o) in page.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&view_bytes(res, o));
            }
            out.extend_from_slice(b"]}");
            bytes_response(StatusCode::OK, Bytes::from(out), "application/json")
        }
        Representation::Table => {
            let views: Vec<std::borrow::Cow<'_, Value>> =
                page.items.iter().map(|o| view_out(res, &o.value)).collect();
            let refs: Vec<&Value> = views.iter().map(|v| v.as_ref()).collect();
            json_response(
                StatusCode::OK,
                &hooks::to_table(res, &refs, meta, include_object(req)),
            )
        }
        Representation::Metadata => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| partial_metadata(&o.value))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
            )
        }
    }
}

fn watch_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","object":"#);
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

async fn watch(
    reg: Arc<Registry>,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let sres = storage_info(res);
    let repr = representation(req)?;
    let q = &req.query;
    let (filter, index_value) = selection(res, q)?;
    let mut prefix = Registry::key(sres, &req.info.namespace, "");
    let name_filter = if !req.info.name.is_empty() {
        Some(Registry::key(sres, &req.info.namespace, &req.info.name))
    } else {
        None
    };
    let filter: Filter = match name_filter {
        Some(k) => {
            prefix = k.clone();
            Arc::new(move |o: &CachedObject| o.key == k && filter(o))
        }
        None => filter,
    };
    let rv = parse_rv(q)?;
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let cacher = reg.cacher(sres).clone();
    let from = match rv {
        None => {
            cacher.wait_fresh().await.map_err(cache_error)?;
            0
        }
        Some(n) => n,
    };
    let include = include_object(req).to_string();
    let started = cacher.watch(&prefix, from, filter, index_value).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    match started {
        Err(
            e @ (CacheError::TooOld { .. }
            | CacheError::Store(crate::storage::StoreError::Compacted { .. })),
        ) => {
            // As upstream: the watch starts, and its first event is the 410.
            let err = cache_error(e);
            let line = watch_line(
                "ERROR",
                &serde_json::to_vec(&err.to_status()).unwrap_or_default(),
            );
            let _ = tx.send(Ok(line)).await;
        }
        Err(e) => return Err(cache_error(e)),
        Ok(mut handle) => {
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(Duration::from_secs(timeout));
                tokio::pin!(deadline);
                let mut tick = tokio::time::interval(BOOKMARK_EVERY);
                tick.tick().await;
                let mut first = true;
                loop {
                    let line = tokio::select! {
                        _ = &mut deadline => return,
                        _ = tx.closed() => return,
                        _ = tick.tick(), if bookmarks => {
                            let rev = handle.revision();
                            // Every event up to `rev` is queued: send them before the bookmark.
                            while let Ok((kind, obj)) = handle.rx.try_recv() {
                                if tx.send(Ok(encode_event(res, repr, &include, kind, &obj, &mut first))).await.is_err() {
                                    return;
                                }
                            }
                            let bm = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
                            watch_line("BOOKMARK", bm.to_string().as_bytes())
                        }
                        msg = handle.rx.recv() => match msg {
                            Some((kind, obj)) => encode_event(res, repr, &include, kind, &obj, &mut first),
                            // Closed by the cache: the client re-lists.
                            None => return,
                        },
                    };
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            });
        }
    }
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}

fn encode_event(
    res: &'static ResourceInfo,
    repr: Representation,
    include: &str,
    kind: WatchEventType,
    obj: &CachedObject,
    first: &mut bool,
) -> Bytes {
    match repr {
        Representation::Object => watch_line(kind.as_str(), &view_bytes(res, obj)),
        Representation::Table => {
            let v = view_out(res, &obj.value);
            let mut t = hooks::to_table(
                res,
                &[&v],
                json!({"resourceVersion": obj.revision.to_string()}),
                include,
            );
            if !*first {
                // As upstream: column definitions only in the first event.
                t["columnDefinitions"] = json!([]);
            }
            *first = false;
            watch_line(kind.as_str(), t.to_string().as_bytes())
        }
        Representation::Metadata => watch_line(
            kind.as_str(),
            partial_metadata(&obj.value).to_string().as_bytes(),
        ),
    }
}

async fn create(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let (mut obj, mut warnings) = decode_body(res, req, None)?;
    if res.namespaced {
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) if !ns.is_empty() && ns != req.info.namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        if req.info.namespace.is_empty() {
            return Err(ApiError::not_found_generic());
        }
    }
    if !req.info.name.is_empty() {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = WriteOptions {
        dry_run: dry_run(&req.query)?,
    };
    if res.group == "events.k8s.io" {
        obj["metadata"]["namespace"] = json!(req.info.namespace);
        crate::strategy::validate_view(res, &obj)?;
        obj = view_in(res, obj);
    }
    crate::service_account_admission::admit(reg, res, &req.info, &mut obj).await?;
    let wreq = webhook_request(res, req, Operation::Create, opts.dry_run);
    let hooks = webhook::matching_hooks(reg, &wreq);
    if !hooks.mutating.is_empty() {
        // Webhooks see the decoded (defaulted) object, as upstream's mutating phase.
        crate::strategy::apply_defaults(storage_info(res), &mut obj);
        warnings.extend(webhook::mutate(reg, &wreq, &hooks, &mut obj, None).await?);
    }
    if pod_security::applies(res) {
        let labels = namespace_labels(reg, &req.info.namespace).await;
        warnings.extend(pod_security::admit(res, &obj, None, &labels)?);
    }
    let validator = webhook::CreateValidator {
        registry: reg,
        request: wreq,
        hooks: &hooks,
        warnings: Default::default(),
    };
    let validating: Option<&dyn crate::registry::ValidatingAdmission> =
        (!hooks.validating.is_empty()).then_some(&validator);
    let out = reg
        .create_admitted(
            storage_info(res),
            &req.info.namespace,
            obj,
            &opts,
            validating,
        )
        .await?;
    warnings.extend(validator.warnings.into_inner());
    Ok(with_warnings(
        json_response(StatusCode::CREATED, &view_out(res, &out)),
        &warnings,
    ))
}

async fn update(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let opts = WriteOptions {
        dry_run: dry_run(&req.query)?,
    };
    let sub = req.info.subresource.as_str();
    if sub == "scale" {
        let (scale, _) = decode_body(res, req, Some(("autoscaling/v1", "Scale")))?;
        let replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0);
        let rv = scale["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        let out = reg
            .update(
                res,
                &req.info.namespace,
                &req.info.name,
                None,
                &opts,
                |cur| {
                    let mut new = cur.clone();
                    new["spec"]["replicas"] = json!(replicas);
                    match &rv {
                        Some(rv) if !rv.is_empty() => {
                            new["metadata"]["resourceVersion"] = json!(rv)
                        }
                        _ => {
                            new["metadata"]
                                .as_object_mut()
                                .map(|m| m.remove("resourceVersion"));
                        }
                    }
                    Ok(new)
                },
            )
            .await?;
        return Ok(json_response(StatusCode::OK, &scale_of(res, &out)));
    }
    let (obj, mut warnings) = decode_body(res, req, None)?;
    let obj = view_in(res, obj);
    let subresource = (!sub.is_empty()).then_some(sub);
    let psa = PodSecurityUpdate::new(reg, res, req).await;
    let mut psa_warnings = Vec::new();
    let mut old_labels = Value::Null;
    let wreq = webhook_request(res, req, Operation::Update, opts.dry_run);
    let hooks = webhook::matching_hooks(reg, &wreq);
    let (out, hook_warnings) = webhook::admitted_update(
        reg,
        storage_info(res),
        &wreq,
        &hooks,
        subresource,
        &opts,
        |cur| {
            psa_warnings = psa.admit(res, &obj, cur)?;
            old_labels = cur["metadata"]["labels"].clone();
            Ok(obj.clone())
        },
    )
    .await?;
    warnings.extend(hook_warnings);
    warnings.extend(psa_warnings);
    warnings.extend(psa.namespace_warnings(reg, res, &old_labels, &out));
    Ok(with_warnings(
        json_response(StatusCode::OK, &view_out(res, &out)),
        &warnings,
    ))
}

/// The autoscaling/v1 Scale of a scalable resource.
fn scale_of(res: &ResourceInfo, obj: &Value) -> Value {
    let selector = match res.plural {
        "replicationcontrollers" => obj["spec"]["selector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
        _ => label_selector_string(&obj["spec"]["selector"]),
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// metav1.FormatLabelSelector for a structured selector.
fn label_selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        });
    }
    parts.join(",")
}

async fn patch(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let opts = WriteOptions {
        dry_run: dry_run(&req.query)?,
    };
    let ctype = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let ptype = ctype.split(';').next().unwrap_or("").trim().to_string();
    let patch_doc: Value = match ptype.as_str() {
        "application/json-patch+json" | "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            serde_json::from_slice(&req.body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
        }
        "application/apply-patch+yaml" => {
            return Err(ApiError::unsupported_media_type(
                "server-side apply (application/apply-patch+yaml) is not supported by this server yet; use client-side `kubectl apply`",
            ))
        }
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format {other:?} - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json"
            )))
        }
    };
    let sub = req.info.subresource.as_str();
    let is_scale = sub == "scale";
    let subresource = (!sub.is_empty() && !is_scale).then_some(sub);
    let mut warnings = Vec::new();
    let q = req.query.clone();
    let psa = PodSecurityUpdate::new(reg, res, req).await;
    let mut psa_warnings = Vec::new();
    let mut old_labels = Value::Null;
    let wreq = webhook_request(res, req, Operation::Update, opts.dry_run);
    // Webhooks on scale would need the Scale object: not called for it (yet).
    let hooks = if is_scale {
        webhook::Hooks::default()
    } else {
        webhook::matching_hooks(reg, &wreq)
    };
    let (out, hook_warnings) = webhook::admitted_update(
        reg,
        storage_info(res),
        &wreq,
        &hooks,
        subresource,
        &opts,
        |cur| {
            let current = if is_scale {
                scale_of(res, cur)
            } else {
                view_out(res, cur).into_owned()
            };
            let patched = apply_patch(res, &ptype, &current, &patch_doc, is_scale)?;
            if is_scale {
                let mut new = cur.clone();
                new["spec"]["replicas"] = patched["spec"]["replicas"].clone();
                new["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"].clone();
                return Ok(new);
            }
            // The patched object must still be a valid object of the type.
            let typed = (res.roundtrip)(&patched).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: {e}",
                    res.kind, res.version, res.kind
                ))
            })?;
            let mut unknown = Vec::new();
            unknown_fields(&patched, &typed, "", &mut unknown);
            warnings = field_validation(&q, &unknown)?;
            let new = view_in(res, typed);
            psa_warnings = psa.admit(res, &new, cur)?;
            old_labels = cur["metadata"]["labels"].clone();
            Ok(new)
        },
    )
    .await?;
    warnings.extend(hook_warnings);
    warnings.extend(psa_warnings);
    warnings.extend(psa.namespace_warnings(reg, res, &old_labels, &out));
    let body = if is_scale {
        scale_of(res, &out)
    } else {
        view_out(res, &out).into_owned()
    };
    Ok(with_warnings(
        json_response(StatusCode::OK, &body),
        &warnings,
    ))
}

/// What a PATCH would make of the stored object, for the checks that need the new object before
/// the request reaches the store (RBAC escalation). None when the object or the patch does not
/// resolve; the PATCH itself then answers with the error.
pub(crate) async fn patched_preview(
    reg: &Registry,
    info: &RequestInfo,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Value> {
    let res = resources::find(&info.group, &info.version, &info.resource)?;
    let ptype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let patch_doc: Value = serde_json::from_slice(body).ok()?;
    let sres = storage_info(res);
    reg.cacher(sres).wait_fresh().await.ok()?;
    let key = Registry::key(sres, &info.namespace, &info.name);
    let current = reg.cacher(sres).get(&key)?;
    apply_patch(
        res,
        &ptype,
        &view_out(res, &current.value),
        &patch_doc,
        false,
    )
    .ok()
}

fn apply_patch(
    res: &ResourceInfo,
    ptype: &str,
    current: &Value,
    patch: &Value,
    is_scale: bool,
) -> ApiResult<Value> {
    let invalid = |e: crate::patch::PatchError| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    };
    match ptype {
        "application/json-patch+json" => crate::patch::json_patch(current, patch).map_err(invalid),
        "application/merge-patch+json" => Ok(crate::patch::merge_patch(current, patch)),
        _ => {
            let schema = if is_scale {
                crate::openapi::patch_schema("autoscaling", "v1", "Scale")
            } else {
                crate::openapi::patch_schema(res.group, res.version, res.kind)
            };
            crate::patch::strategic_merge_patch(current, patch, schema.as_ref()).map_err(invalid)
        }
    }
}

fn delete_options(req: &ApiRequest) -> ApiResult<DeleteOptions> {
    let mut opts = DeleteOptions {
        dry_run: dry_run(&req.query)?,
        ..Default::default()
    };
    if !req.body.is_empty() {
        let body: Value = if req.body.starts_with(crate::protobuf::MAGIC) {
            crate::protobuf::decode(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        } else {
            serde_json::from_slice(&req.body)
                .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
        };
        opts.grace_period_seconds = body["gracePeriodSeconds"].as_i64();
        opts.propagation_policy = body["propagationPolicy"].as_str().map(str::to_string);
        if body["orphanDependents"] == true {
            opts.propagation_policy = Some("Orphan".into());
        }
        opts.precondition_uid = body["preconditions"]["uid"].as_str().map(str::to_string);
        opts.precondition_resource_version = body["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        if body["dryRun"]
            .as_array()
            .is_some_and(|a| a.iter().any(|d| d == "All"))
        {
            opts.dry_run = true;
        }
    }
    if let Some(g) = req.query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(g.parse().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds: invalid value {g:?}"))
        })?);
    }
    if let Some(p) = req.query.get("propagationPolicy") {
        opts.propagation_policy = Some(p.clone());
    }
    if let Some(p) = &opts.propagation_policy {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![crate::status::Cause::not_supported(
                    "propagationPolicy",
                    &json!(p),
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
    }
    Ok(opts)
}

async fn delete(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let opts = delete_options(req)?;
    let wreq = webhook_request(res, req, Operation::Delete, opts.dry_run);
    let hooks = webhook::matching_hooks(reg, &wreq);
    let mut warnings = Vec::new();
    if !hooks.is_empty() {
        let old = reg
            .get(storage_info(res), &req.info.namespace, &req.info.name)
            .await?;
        warnings = webhook::admit_delete(reg, &wreq, &hooks, &old.value).await?;
    }
    let out = reg
        .delete(
            storage_info(res),
            &req.info.namespace,
            &req.info.name,
            &opts,
        )
        .await?;
    Ok(with_warnings(
        json_response(StatusCode::OK, &view_out(res, &out)),
        &warnings,
    ))
}

async fn delete_collection(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let opts = delete_options(req)?;
    let sres = storage_info(res);
    let filter = selector(res, &req.query)?;
    let cacher = reg.cacher(sres);
    cacher.wait_fresh().await.map_err(cache_error)?;
    let page = cacher.list(
        &Registry::key(sres, &req.info.namespace, ""),
        &filter,
        None,
        0,
    );
    let mut items = Vec::new();
    for o in page.items {
        let ns = o.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = o.value["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        match reg.delete(sres, &ns, &name, &opts).await {
            Ok(v) => items.push(view_out(res, &v).into_owned()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": {}, "items": items}),
    ))
}

/// POST to pods/binding and pods/eviction.
async fn create_subresource(
    reg: &Registry,
    res: &'static ResourceInfo,
    req: &ApiRequest,
) -> ApiResult<Response<Body>> {
    let ns = req.info.namespace.clone();
    let name = req.info.name.clone();
    let opts = WriteOptions {
        dry_run: dry_run(&req.query)?,
    };
    match (res.plural, req.info.subresource.as_str()) {
        ("pods", "binding") => {
            let (binding, _) = decode_body(res, req, Some(("v1", "Binding")))?;
            let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
            if node.is_empty() {
                return Err(ApiError::invalid(
                    "",
                    "Binding",
                    &name,
                    vec![crate::status::Cause::required("target.name", "")],
                ));
            }
            reg.update(res, &ns, &name, Some("binding"), &opts, |cur| {
                if cur["metadata"]["deletionTimestamp"].is_string() {
                    return Err(ApiError::conflict("", "pods", &name, "pod is being deleted, cannot be assigned to a host"));
                }
                match cur["spec"]["nodeName"].as_str() {
                    Some(n) if !n.is_empty() => {
                        return Err(ApiError::conflict("", "pods", &name, &format!("pod {name} is already assigned to node {n:?}")))
                    }
                    _ => {}
                }
                let mut new = cur.clone();
                new["spec"]["nodeName"] = json!(node);
                new["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
                if let Some(a) = binding["metadata"]["annotations"].as_object() {
                    for (k, v) in a {
                        new["metadata"]["annotations"][k] = v.clone();
                    }
                }
                let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
                let conds = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
                let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
                conds.push(cond);
                new["status"]["conditions"] = json!(conds);
                Ok(new)
            })
            .await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("pods", "eviction") => {
            let (eviction, _) = decode_body(res, req, Some(("policy/v1", "Eviction")))?;
            let pod = reg.get(res, &ns, &name).await?;
            if let Some(pdbs) = resources::find("policy", "v1", "poddisruptionbudgets") {
                reg.cacher(pdbs).wait_fresh().await.map_err(cache_error)?;
            }
            take_disruption(reg, &pod.value, opts.dry_run).await?;
            let mut dopts = DeleteOptions {
                dry_run: opts.dry_run,
                ..Default::default()
            };
            dopts.grace_period_seconds = eviction["deleteOptions"]["gracePeriodSeconds"].as_i64();
            reg.delete(res, &ns, &name, &dopts).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The eviction check (upstream's `EvictionREST.Create`): a pod that is terminal, pending or
/// already being deleted may go; otherwise the one PodDisruptionBudget covering it must allow a
/// disruption, which is taken from it (disruptionsAllowed decremented, the pod recorded in
/// disruptedPods) through the store's optimistic concurrency before the pod is deleted. An
/// unready pod may go without a disruption when the budget is healthy (IfHealthyBudget) or
/// always (AlwaysAllow).
async fn take_disruption(reg: &Registry, pod: &Value, dry_run: bool) -> ApiResult<()> {
    let Some(info) = resources::find("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    if pod["metadata"]["deletionTimestamp"].is_string()
        || matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Pending")
        )
    {
        return Ok(());
    }
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let all: Filter = Arc::new(|_| true);
    let labels = pod["metadata"]["labels"].as_object();
    let covering: Vec<Value> = reg
        .cacher(info)
        .list(&Registry::key(info, ns, ""), &all, None, 0)
        .items
        .into_iter()
        .filter(|pdb| {
            crate::selectors::label_selector_from_api(&pdb.value["spec"]["selector"])
                .map(|sel| sel.matches(labels))
                .unwrap_or(false)
        })
        .map(|pdb| pdb.value.clone())
        .collect();
    let pdb = match covering.as_slice() {
        [] => return Ok(()),
        [one] => one,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ))
        }
    };
    let name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    if !ready {
        let policy = pdb["spec"]["unhealthyPodEvictionPolicy"]
            .as_str()
            .unwrap_or("IfHealthyBudget");
        let healthy = pdb["status"]["currentHealthy"].as_i64().unwrap_or(0);
        let desired = pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0);
        if policy == "AlwaysAllow"
            || healthy >= desired
                && pdb["status"]["observedGeneration"].as_i64()
                    >= pdb["metadata"]["generation"].as_i64()
        {
            return Ok(());
        }
    }
    let check = |pdb: &Value| -> ApiResult<Value> {
        // As upstream: a budget the disruption controller has not processed yet blocks too.
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < generation {
            return Err(ApiError::too_many_requests(
                format!("Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} is still being processed by the server."),
                10,
            ));
        }
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed <= 0 {
            return Err(ApiError::too_many_requests(
                format!("Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} needs {} healthy pods and has {} currently", pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0), pdb["status"]["currentHealthy"].as_i64().unwrap_or(0)),
                10,
            ));
        }
        let mut new = pdb.clone();
        new["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !new["status"]["disruptedPods"].is_object() {
            new["status"]["disruptedPods"] = json!({});
        }
        new["status"]["disruptedPods"][&pod_name] =
            json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        Ok(new)
    };
    check(pdb)?;
    if dry_run {
        return Ok(());
    }
    let opts = WriteOptions { dry_run: false };
    match reg
        .update(info, ns, &name, Some("status"), &opts, check)
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile: nothing protects the pod any more.
        Err(e) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_by_the_round_trip() {
        let res = resources::find("", "v1", "configmaps").unwrap();
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "bogus": 1}, "data": {"a": "b"}, "extra": {"y": 1}});
        let typed = (res.roundtrip)(&input).unwrap();
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, ["metadata.bogus", "extra"]);
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web".to_string())
        );
        assert_eq!(decode_continue("nonsense").unwrap_err().code, 400);
    }
}
