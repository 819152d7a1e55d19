//! `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration and
//! ValidatingWebhookConfiguration: the v1 defaults (upstream's
//! `pkg/apis/admissionregistration/v1/defaults.go`) and validation
//! (`pkg/apis/admissionregistration/validation`, v1 rules: unique fully qualified webhook names,
//! `sideEffects` None or NoneOnDryRun, `admissionReviewVersions` naming a version this server
//! speaks, timeouts of 1 to 30 seconds, exactly one of `url` or `service`), and the parsed form
//! the dispatcher works with.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::selectors::{label_selector_from_api, LabelSelector};
use crate::status::Cause;
use crate::strategy::{is_dns1035_label, is_dns1123_subdomain};

pub const MUTATING_KIND: &str = "MutatingWebhookConfiguration";
pub const VALIDATING_KIND: &str = "ValidatingWebhookConfiguration";

/// The AdmissionReview versions this server can send, preferred first.
pub const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];
const OPERATIONS: &[&str] = &["*", "CREATE", "UPDATE", "DELETE", "CONNECT"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const REINVOCATION_POLICIES: &[&str] = &["IfNeeded", "Never"];
/// `timeoutSeconds` when unset, and its bounds.
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 10;
const MAX_TIMEOUT_SECONDS: i64 = 30;

fn default_to(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

/// The v1 defaults of every webhook of a configuration: failurePolicy Fail, matchPolicy
/// Equivalent, empty (match-all) selectors, timeoutSeconds 10, a rule scope of `*`, service port
/// 443, and for mutating webhooks reinvocationPolicy Never.
pub fn apply_defaults(kind: &str, o: &mut Value) {
    let Some(hooks) = o.get_mut("webhooks").and_then(Value::as_array_mut) else {
        return;
    };
    for h in hooks.iter_mut().filter_map(Value::as_object_mut) {
        default_to(h, "failurePolicy", json!("Fail"));
        default_to(h, "matchPolicy", json!("Equivalent"));
        default_to(h, "namespaceSelector", json!({}));
        default_to(h, "objectSelector", json!({}));
        default_to(h, "timeoutSeconds", json!(DEFAULT_TIMEOUT_SECONDS));
        if kind == MUTATING_KIND {
            default_to(h, "reinvocationPolicy", json!("Never"));
        }
        for r in h
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            default_to(r, "scope", json!("*"));
        }
        if let Some(svc) = h
            .get_mut("clientConfig")
            .and_then(|c| c.get_mut("service"))
            .and_then(Value::as_object_mut)
        {
            default_to(svc, "port", json!(443));
        }
    }
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or("")).collect())
        .unwrap_or_default()
}

/// `field.Invalid` of a string list, shown as Go's `%#v` prints it (`[]string{"a", "b"}`).
fn invalid_list(field: impl Into<String>, list: &[&str], detail: &str) -> Cause {
    let shown: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    Cause::new(
        "FieldValueInvalid",
        field,
        format!("Invalid value: []string{{{}}}: {detail}", shown.join(", ")),
    )
}

fn supported(
    v: Option<&Value>,
    field: &str,
    valid: &[&str],
    required: bool,
    errs: &mut Vec<Cause>,
) {
    match v.and_then(Value::as_str) {
        None | Some("") if required => errs.push(Cause::not_supported(field, &json!(""), valid)),
        None => {}
        Some(x) if valid.contains(&x) => {}
        Some(x) => errs.push(Cause::not_supported(field, &json!(x), valid)),
    }
}

/// Validation of a configuration (upstream's `ValidateMutatingWebhookConfiguration` /
/// `ValidateValidatingWebhookConfiguration` with the v1 options).
pub fn validate(kind: &str, o: &Value) -> Vec<Cause> {
    let mut errs = Vec::new();
    let hooks = o.get("webhooks").and_then(Value::as_array);
    let mut seen = std::collections::HashSet::new();
    for (i, h) in hooks.into_iter().flatten().enumerate() {
        let path = format!("webhooks[{i}]");
        let name = h.get("name").and_then(Value::as_str).unwrap_or("");
        if !name.is_empty() && !seen.insert(name) {
            errs.push(Cause::duplicate(format!("{path}.name"), &json!(name)));
        }
        webhook(kind, h, &path, &mut errs);
    }
    errs
}

fn webhook(kind: &str, h: &Value, path: &str, errs: &mut Vec<Cause>) {
    let name = h.get("name").and_then(Value::as_str).unwrap_or("");
    // utilvalidation.IsFullyQualifiedName
    let name_field = format!("{path}.name");
    if name.is_empty() {
        errs.push(Cause::required(&name_field, ""));
    } else {
        let msgs = is_dns1123_subdomain(name);
        if !msgs.is_empty() {
            for m in msgs {
                errs.push(Cause::invalid(&name_field, &json!(name), &m));
            }
        } else if name.split('.').count() < 3 {
            errs.push(Cause::invalid(
                &name_field,
                &json!(name),
                "should be a domain with at least three segments separated by dots",
            ));
        }
    }
    for (j, r) in h
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        rule(r, &format!("{path}.rules[{j}]"), errs);
    }
    supported(
        h.get("failurePolicy"),
        &format!("{path}.failurePolicy"),
        FAILURE_POLICIES,
        false,
        errs,
    );
    supported(
        h.get("matchPolicy"),
        &format!("{path}.matchPolicy"),
        MATCH_POLICIES,
        false,
        errs,
    );
    match h.get("sideEffects").and_then(Value::as_str) {
        None | Some("") => errs.push(Cause::required(
            format!("{path}.sideEffects"),
            &format!("must specify one of {}", SIDE_EFFECTS.join(", ")),
        )),
        Some(s) if SIDE_EFFECTS.contains(&s) => {}
        Some(s) => errs.push(Cause::not_supported(
            format!("{path}.sideEffects"),
            &json!(s),
            SIDE_EFFECTS,
        )),
    }
    if let Some(t) = h.get("timeoutSeconds").and_then(Value::as_i64) {
        if !(1..=MAX_TIMEOUT_SECONDS).contains(&t) {
            errs.push(Cause::invalid(
                format!("{path}.timeoutSeconds"),
                &json!(t),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
    }
    review_versions(
        h.get("admissionReviewVersions"),
        &format!("{path}.admissionReviewVersions"),
        errs,
    );
    client_config(h.get("clientConfig"), &format!("{path}.clientConfig"), errs);
    for sel in ["namespaceSelector", "objectSelector"] {
        if let Some(s) = h.get(sel).filter(|s| !s.is_null()) {
            if let Err(e) = label_selector_from_api(s) {
                errs.push(Cause::invalid(format!("{path}.{sel}"), s, &e));
            }
        }
    }
    if kind == MUTATING_KIND {
        supported(
            h.get("reinvocationPolicy"),
            &format!("{path}.reinvocationPolicy"),
            REINVOCATION_POLICIES,
            false,
            errs,
        );
    }
}

fn rule(r: &Value, path: &str, errs: &mut Vec<Cause>) {
    let ops = strs(r.get("operations"));
    if ops.is_empty() {
        errs.push(Cause::required(format!("{path}.operations"), ""));
    }
    if ops.len() > 1 && ops.contains(&"*") {
        errs.push(invalid_list(
            format!("{path}.operations"),
            &ops,
            "if '*' is present, must not specify other operations",
        ));
    }
    for (k, op) in ops.iter().enumerate() {
        if !OPERATIONS.contains(op) {
            errs.push(Cause::not_supported(
                format!("{path}.operations[{k}]"),
                &json!(op),
                OPERATIONS,
            ));
        }
    }
    for (field, what) in [("apiGroups", "API groups"), ("apiVersions", "API versions")] {
        let list = strs(r.get(field));
        if list.is_empty() {
            errs.push(Cause::required(format!("{path}.{field}"), ""));
        }
        if list.len() > 1 && list.contains(&"*") {
            errs.push(invalid_list(
                format!("{path}.{field}"),
                &list,
                &format!("if '*' is present, must not specify other {what}"),
            ));
        }
        if field == "apiVersions" {
            for (k, v) in list.iter().enumerate() {
                if v.is_empty() {
                    errs.push(Cause::required(format!("{path}.apiVersions[{k}]"), ""));
                }
            }
        }
    }
    resources(
        &strs(r.get("resources")),
        &format!("{path}.resources"),
        errs,
    );
    supported(
        r.get("scope"),
        &format!("{path}.scope"),
        SCOPES,
        false,
        errs,
    );
}

/// upstream's `validateResources`: `*` and `*/*` exclude the forms they cover.
fn resources(list: &[&str], path: &str, errs: &mut Vec<Cause>) {
    if list.is_empty() {
        errs.push(Cause::required(path, ""));
    }
    let mut subs_with_wildcard = std::collections::HashSet::new();
    let has_all = list.contains(&"*/*");
    let has_main_wildcard = list.contains(&"*");
    for (k, res) in list.iter().enumerate() {
        let field = format!("{path}[{k}]");
        if res.is_empty() {
            errs.push(Cause::required(&field, ""));
            continue;
        }
        let (main, sub) = res.split_once('/').unwrap_or((res, ""));
        if main.is_empty() || (res.contains('/') && sub.is_empty()) || sub.contains('/') {
            errs.push(Cause::invalid(
                &field,
                &json!(res),
                "must be a resource name or a resource/subresource name",
            ));
            continue;
        }
        if has_all && *res != "*/*" {
            errs.push(Cause::invalid(
                &field,
                &json!(res),
                "if '*/*' is present, must not specify other resources",
            ));
        } else if has_main_wildcard && sub.is_empty() && main != "*" {
            errs.push(Cause::invalid(
                &field,
                &json!(res),
                "if '*' is present, must not specify other resources without subresources",
            ));
        }
        if main == "*" && !sub.is_empty() {
            subs_with_wildcard.insert(sub);
        }
    }
    for (k, res) in list.iter().enumerate() {
        if let Some((main, sub)) = res.split_once('/') {
            if main != "*" && subs_with_wildcard.contains(sub) {
                errs.push(Cause::invalid(
                    format!("{path}[{k}]"),
                    &json!(res),
                    &format!("if '*/{sub}' is present, must not specify {res}"),
                ));
            }
        }
    }
}

fn review_versions(v: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    let list = strs(v);
    if list.is_empty() {
        errs.push(Cause::required(
            path,
            &format!("must specify one of {}", REVIEW_VERSIONS.join(", ")),
        ));
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for (k, ver) in list.iter().enumerate() {
        let field = format!("{path}[{k}]");
        for m in is_dns1035_label(ver) {
            errs.push(Cause::invalid(&field, &json!(ver), &m));
        }
        if !seen.insert(*ver) {
            errs.push(Cause::invalid(&field, &json!(ver), "duplicate version"));
        }
    }
    if !list.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
        errs.push(invalid_list(
            path,
            &list,
            &format!(
                "must include at least one of {}",
                REVIEW_VERSIONS.join(", ")
            ),
        ));
    }
}

fn client_config(c: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
    let c = c.unwrap_or(&Value::Null);
    let url = c.get("url").and_then(Value::as_str);
    let svc = c.get("service").filter(|s| !s.is_null());
    match (url, svc) {
        (Some(_), Some(_)) | (None, None) => errs.push(Cause::required(
            path,
            "exactly one of url or service is required",
        )),
        (Some(u), None) => {
            for (detail, value) in url_errors(u) {
                errs.push(Cause::invalid(
                    format!("{path}.url"),
                    &json!(value),
                    &detail,
                ));
            }
        }
        (None, Some(s)) => {
            let field = |f: &str| format!("{path}.service.{f}");
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            let ns = s.get("namespace").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(Cause::required(field("name"), "service name is required"));
            }
            if ns.is_empty() {
                errs.push(Cause::required(
                    field("namespace"),
                    "service namespace is required",
                ));
            }
            if let Some(port) = s.get("port").and_then(Value::as_i64) {
                if !(1..=65535).contains(&port) {
                    errs.push(Cause::invalid(
                        field("port"),
                        &json!(port),
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
            }
            if let Some(p) = s.get("path").and_then(Value::as_str) {
                if !p.is_empty() && !p.starts_with('/') {
                    errs.push(Cause::invalid(
                        field("path"),
                        &json!(p),
                        "must start with a '/'",
                    ));
                }
            }
        }
    }
}

/// upstream's `ValidateWebhookURL` with https forced: each problem as (detail, shown value).
fn url_errors(u: &str) -> Vec<(String, String)> {
    const FORM: &str = "; desired format: https://host[/path]";
    let mut out = Vec::new();
    let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
    if scheme != "https" {
        out.push((
            format!("'https' is the only allowed URL scheme{FORM}"),
            scheme.to_string(),
        ));
    }
    let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = rest.split('/').next().unwrap_or("");
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    if host.is_empty() {
        out.push((format!("host must be specified{FORM}"), String::new()));
    }
    if let Some(user) = user {
        out.push((
            "user information is not permitted in the URL".into(),
            user.to_string(),
        ));
    }
    if !fragment.is_empty() {
        out.push((
            "fragments are not permitted in the URL".into(),
            fragment.to_string(),
        ));
    }
    if !query.is_empty() {
        out.push((
            "query parameters are not permitted in the URL".into(),
            query.to_string(),
        ));
    }
    out
}

/// Where a webhook is called.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Url(String),
    Service {
        namespace: String,
        name: String,
        path: String,
        port: u16,
    },
}

/// One webhook of a stored configuration, parsed (defaults applied) for the dispatcher.
#[derive(Debug)]
pub struct Webhook {
    /// The configuration it belongs to.
    pub configuration: String,
    pub name: String,
    pub rules: Vec<Rule>,
    pub exact: bool,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
    pub target: Target,
    pub ca_bundle: Vec<u8>,
    pub timeout: Duration,
    /// failurePolicy Ignore.
    pub fail_open: bool,
    pub side_effects: String,
    /// The AdmissionReview version sent: v1 when the webhook accepts it, else v1beta1.
    pub review_version: &'static str,
    /// reinvocationPolicy IfNeeded (mutating only).
    pub reinvoke_if_needed: bool,
}

/// One rule of a webhook (`RuleWithOperations`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub operations: Vec<String>,
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub scope: String,
}

fn owned(v: Option<&Value>) -> Vec<String> {
    strs(v).into_iter().map(str::to_string).collect()
}

/// The webhooks of one stored configuration (stored objects are defaulted and valid; anything
/// odd still parses to a conservative value rather than failing the request).
pub fn parse(configuration: &Value) -> Vec<Webhook> {
    let cname = configuration["metadata"]["name"].as_str().unwrap_or("");
    let hooks = configuration.get("webhooks").and_then(Value::as_array);
    hooks
        .into_iter()
        .flatten()
        .map(|h| {
            let cc = &h["clientConfig"];
            let target = match cc.get("url").and_then(Value::as_str) {
                Some(u) => Target::Url(u.to_string()),
                None => Target::Service {
                    namespace: cc["service"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    name: cc["service"]["name"].as_str().unwrap_or("").to_string(),
                    path: cc["service"]["path"].as_str().unwrap_or("").to_string(),
                    port: cc["service"]["port"].as_u64().unwrap_or(443) as u16,
                },
            };
            let selector = |k: &str| match h.get(k) {
                None | Some(Value::Null) => LabelSelector::everything(),
                Some(s) => label_selector_from_api(s).unwrap_or_else(|_| LabelSelector::nothing()),
            };
            let versions = strs(h.get("admissionReviewVersions"));
            Webhook {
                configuration: cname.to_string(),
                name: h["name"].as_str().unwrap_or("").to_string(),
                rules: h
                    .get("rules")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|r| Rule {
                        operations: owned(r.get("operations")),
                        api_groups: owned(r.get("apiGroups")),
                        api_versions: owned(r.get("apiVersions")),
                        resources: owned(r.get("resources")),
                        scope: r["scope"].as_str().unwrap_or("*").to_string(),
                    })
                    .collect(),
                exact: h["matchPolicy"] == "Exact",
                namespace_selector: selector("namespaceSelector"),
                object_selector: selector("objectSelector"),
                target,
                ca_bundle: cc
                    .get("caBundle")
                    .and_then(Value::as_str)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default(),
                timeout: Duration::from_secs(
                    h["timeoutSeconds"]
                        .as_i64()
                        .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
                        .clamp(1, MAX_TIMEOUT_SECONDS) as u64,
                ),
                fail_open: h["failurePolicy"] == "Ignore",
                side_effects: h["sideEffects"].as_str().unwrap_or("Unknown").to_string(),
                review_version: if versions.contains(&"v1") || !versions.contains(&"v1beta1") {
                    "v1"
                } else {
                    "v1beta1"
                },
                reinvoke_if_needed: h["reinvocationPolicy"] == "IfNeeded",
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook() -> Value {
        json!({
            "name": "deny.example.com",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "clientConfig": {"url": "https://127.0.0.1:8443/validate"},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    }

    fn errors(kind: &str, hooks: Vec<Value>) -> Vec<String> {
        let mut o = json!({"metadata": {"name": "c"}, "webhooks": hooks});
        apply_defaults(kind, &mut o);
        validate(kind, &o).iter().map(Cause::display).collect()
    }

    #[test]
    fn defaults_follow_v1() {
        let mut o = json!({"webhooks": [hook()]});
        apply_defaults(MUTATING_KIND, &mut o);
        let h = &o["webhooks"][0];
        assert_eq!(h["failurePolicy"], "Fail");
        assert_eq!(h["matchPolicy"], "Equivalent");
        assert_eq!(h["timeoutSeconds"], 10);
        assert_eq!(h["reinvocationPolicy"], "Never");
        assert_eq!(h["namespaceSelector"], json!({}));
        assert_eq!(h["rules"][0]["scope"], "*");
        let mut v = json!({"webhooks": [hook()]});
        apply_defaults(VALIDATING_KIND, &mut v);
        assert!(v["webhooks"][0].get("reinvocationPolicy").is_none());
    }

    #[test]
    fn a_valid_configuration_passes() {
        assert_eq!(errors(VALIDATING_KIND, vec![hook()]), Vec::<String>::new());
    }

    #[test]
    fn bad_webhooks_get_upstream_messages() {
        type Edit = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|h| h["sideEffects"] = Value::Null), "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"),
            (Box::new(|h| h["sideEffects"] = json!("Some")), "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""),
            (Box::new(|h| h["admissionReviewVersions"] = json!(["v2"])), "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1"),
            (Box::new(|h| h["admissionReviewVersions"] = json!([])), "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1"),
            (Box::new(|h| h["timeoutSeconds"] = json!(31)), "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"),
            (Box::new(|h| h["name"] = json!("deny")), "webhooks[0].name: Invalid value: \"deny\": should be a domain with at least three segments separated by dots"),
            (Box::new(|h| h["clientConfig"] = json!({})), "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
            (Box::new(|h| h["clientConfig"]["url"] = json!("http://x.example/a")), "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]"),
            (Box::new(|h| h["failurePolicy"] = json!("Maybe")), "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\""),
            (Box::new(|h| h["rules"][0]["operations"] = json!(["*", "CREATE"])), "webhooks[0].rules[0].operations: Invalid value: []string{\"*\", \"CREATE\"}: if '*' is present, must not specify other operations"),
            (Box::new(|h| h["rules"][0]["resources"] = json!(["*/*", "pods"])), "webhooks[0].rules[0].resources[1]: Invalid value: \"pods\": if '*/*' is present, must not specify other resources"),
        ];
        for (edit, want) in cases {
            let mut h = hook();
            edit(&mut h);
            let got = errors(VALIDATING_KIND, vec![h]);
            assert!(got.iter().any(|g| g == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn webhook_names_are_unique() {
        let got = errors(MUTATING_KIND, vec![hook(), hook()]);
        assert_eq!(
            got,
            vec!["webhooks[1].name: Duplicate value: \"deny.example.com\""]
        );
    }

    #[test]
    fn parse_reads_the_defaulted_hook() {
        let mut o = json!({"metadata": {"name": "c"}, "webhooks": [hook()]});
        o["webhooks"][0]["failurePolicy"] = json!("Ignore");
        o["webhooks"][0]["timeoutSeconds"] = json!(3);
        apply_defaults(MUTATING_KIND, &mut o);
        let h = &parse(&o)[0];
        assert_eq!(h.configuration, "c");
        assert!(h.fail_open);
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(
            h.target,
            Target::Url("https://127.0.0.1:8443/validate".into())
        );
        assert_eq!(h.review_version, "v1");
        assert!(!h.exact);
    }
}
