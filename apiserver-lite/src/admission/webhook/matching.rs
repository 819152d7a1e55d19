//! Which webhooks a request calls (upstream's `webhook/predicates`): the rules (operations, API
//! groups and versions, resources with `resource/subresource` and `*` forms, scope), matchPolicy
//! (`Equivalent` also matches the same objects served under another group/version, here the
//! core/v1 and events.k8s.io/v1 Events, and sends them in the matched version), and the
//! namespace and object selectors. Rules are checked first because they need no objects; the
//! selectors run per call.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::config::{Rule, Webhook};
use super::Operation;
use crate::events_view;
use crate::resources::{ResourceInfo, RESOURCES};

/// A webhook to call for a request, and the resource it is called for (the request's own, or an
/// equivalent one under matchPolicy Equivalent).
#[derive(Clone)]
pub struct Invocation {
    pub hook: Arc<Webhook>,
    pub resource: &'static ResourceInfo,
}

fn any_or(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn is_namespace(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.plural == "namespaces"
}

/// upstream's `rules.Matcher.Matches`.
pub fn rule_matches(
    rule: &Rule,
    op: Operation,
    res: &ResourceInfo,
    subresource: &str,
    namespace: &str,
) -> bool {
    let scope = match rule.scope.as_str() {
        "Cluster" => is_namespace(res) || namespace.is_empty(),
        "Namespaced" => !is_namespace(res) && !namespace.is_empty(),
        _ => true,
    };
    scope
        && any_or(&rule.operations, op.as_str())
        && any_or(&rule.api_groups, res.group)
        && any_or(&rule.api_versions, res.version)
        && rule.resources.iter().any(|r| {
            let (main, sub) = r.split_once('/').unwrap_or((r, ""));
            (main == "*" || main == res.plural) && (sub == "*" || sub == subresource)
        })
}

/// Other served resources holding the same objects (one store, two views).
fn equivalents(res: &'static ResourceInfo) -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES
        .iter()
        .filter(move |r| r.storage_prefix == res.storage_prefix && !std::ptr::eq(*r, res))
}

/// The invocation of `hook` for a request, if one of its rules matches (upstream's
/// `ShouldCallHook` minus the selectors): the request's resource first, then, under
/// matchPolicy Equivalent, the equivalent resources rule by rule.
pub fn invocation(
    hook: &Arc<Webhook>,
    op: Operation,
    res: &'static ResourceInfo,
    subresource: &str,
    namespace: &str,
) -> Option<Invocation> {
    let found = |r: &'static ResourceInfo| Invocation {
        hook: hook.clone(),
        resource: r,
    };
    if hook
        .rules
        .iter()
        .any(|rule| rule_matches(rule, op, res, subresource, namespace))
    {
        return Some(found(res));
    }
    if hook.exact {
        return None;
    }
    for rule in &hook.rules {
        if let Some(eq) =
            equivalents(res).find(|eq| rule_matches(rule, op, eq, subresource, namespace))
        {
            return Some(found(eq));
        }
    }
    None
}

/// An object (in its stored form) as the `to` resource serves it.
pub fn to_version(to: &ResourceInfo, obj: &Value) -> Value {
    if to.group == "events.k8s.io" {
        events_view::from_core(obj)
    } else {
        obj.clone()
    }
}

/// An object the webhook returned for the `from` resource, back in its stored form.
pub fn from_version(from: &ResourceInfo, obj: Value) -> Value {
    if from.group == "events.k8s.io" {
        events_view::to_core(&obj)
    } else {
        obj
    }
}

fn labels(obj: Option<&Value>) -> Option<&Map<String, Value>> {
    obj.and_then(|o| o["metadata"]["labels"].as_object())
}

/// upstream's `MatchObjectSelector`: the new or the old object's labels match.
pub fn object_matches(hook: &Webhook, obj: Option<&Value>, old: Option<&Value>) -> bool {
    let sel = &hook.object_selector;
    sel.is_empty()
        || (obj.is_some() && sel.matches(labels(obj)))
        || (old.is_some() && sel.matches(labels(old)))
}

/// The labels a namespaceSelector is matched against; `None` when the request is about a
/// cluster-scoped object other than a namespace (never exempted).
pub enum NamespaceLabels<'a> {
    /// A request for a namespace object itself: its own labels (new, else old).
    Own(Option<&'a Map<String, Value>>),
    /// The labels of the request's namespace (`Err` when it does not exist).
    Of(Result<Option<Map<String, Value>>, MissingNamespace>),
}

/// The request's namespace does not exist (upstream answers 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingNamespace;

/// upstream's `MatchNamespaceSelector`; `Err` when the namespace does not exist.
pub fn namespace_matches(
    hook: &Webhook,
    labels: Option<&NamespaceLabels<'_>>,
) -> Result<bool, MissingNamespace> {
    let sel = &hook.namespace_selector;
    if sel.is_empty() {
        return Ok(true);
    }
    match labels {
        None => Ok(true),
        Some(NamespaceLabels::Own(l)) => Ok(sel.matches(*l)),
        Some(NamespaceLabels::Of(Ok(l))) => Ok(sel.matches(l.as_ref())),
        Some(NamespaceLabels::Of(Err(e))) => Err(*e),
    }
}

/// Labels of the object for a namespace request (new, else old).
pub fn own_labels<'a>(
    obj: Option<&'a Value>,
    old: Option<&'a Value>,
) -> Option<&'a Map<String, Value>> {
    labels(obj).or_else(|| labels(old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    fn rule(ops: &[&str], groups: &[&str], versions: &[&str], res: &[&str], scope: &str) -> Rule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        Rule {
            operations: v(ops),
            api_groups: v(groups),
            api_versions: v(versions),
            resources: v(res),
            scope: scope.into(),
        }
    }

    #[test]
    fn rules_match_as_upstream() {
        let pods = find("", "v1", "pods").unwrap();
        let ns = find("", "v1", "namespaces").unwrap();
        let nodes = find("", "v1", "nodes").unwrap();
        let create = Operation::Create;
        let r = rule(&["CREATE"], &[""], &["v1"], &["pods"], "*");
        assert!(rule_matches(&r, create, pods, "", "default"));
        assert!(!rule_matches(&r, Operation::Update, pods, "", "default"));
        // A plain resource name does not match its subresources, `*` neither.
        assert!(!rule_matches(&r, create, pods, "status", "default"));
        let star = rule(&["*"], &["*"], &["*"], &["*"], "*");
        assert!(!rule_matches(&star, create, pods, "status", "default"));
        assert!(rule_matches(&star, Operation::Delete, pods, "", "default"));
        let all = rule(&["*"], &["*"], &["*"], &["*/*"], "*");
        assert!(rule_matches(&all, create, pods, "eviction", "default"));
        let sub = rule(&["*"], &[""], &["v1"], &["pods/status"], "*");
        assert!(rule_matches(
            &sub,
            Operation::Update,
            pods,
            "status",
            "default"
        ));
        assert!(!rule_matches(&sub, Operation::Update, pods, "", "default"));
        // Scope: namespace objects are cluster-scoped even though they carry a namespace.
        let cluster = rule(&["*"], &["*"], &["*"], &["*"], "Cluster");
        let namespaced = rule(&["*"], &["*"], &["*"], &["*"], "Namespaced");
        assert!(rule_matches(&cluster, create, ns, "", "team-a"));
        assert!(!rule_matches(&namespaced, create, ns, "", "team-a"));
        assert!(rule_matches(&cluster, create, nodes, "", ""));
        assert!(!rule_matches(&cluster, create, pods, "", "default"));
        assert!(rule_matches(&namespaced, create, pods, "", "default"));
        assert!(!rule_matches(
            &rule(&["CREATE"], &["apps"], &["v1"], &["pods"], "*"),
            create,
            pods,
            "",
            "x"
        ));
    }

    fn hook(rules: Vec<Rule>, exact: bool) -> Arc<Webhook> {
        let mut o = json!({"metadata": {"name": "c"}, "webhooks": [{"name": "a.b.c", "clientConfig": {"url": "https://x/"}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}]});
        super::super::config::apply_defaults(super::super::config::VALIDATING_KIND, &mut o);
        let mut h = super::super::config::parse(&o).remove(0);
        h.rules = rules;
        h.exact = exact;
        Arc::new(h)
    }

    #[test]
    fn match_policy_equivalent_finds_the_other_view() {
        let core = find("", "v1", "events").unwrap();
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        let r = vec![rule(
            &["CREATE"],
            &["events.k8s.io"],
            &["v1"],
            &["events"],
            "*",
        )];
        let equivalent = hook(r.clone(), false);
        let inv = invocation(&equivalent, Operation::Create, core, "", "default").unwrap();
        assert!(std::ptr::eq(inv.resource, ev));
        assert!(invocation(&hook(r, true), Operation::Create, core, "", "default").is_none());
    }

    #[test]
    fn selectors_match_old_or_new_labels() {
        let mut h = Arc::try_unwrap(hook(vec![], false)).unwrap();
        h.object_selector = crate::selectors::LabelSelector::parse("app=web").unwrap();
        h.namespace_selector = crate::selectors::LabelSelector::parse("env=prod").unwrap();
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        let other = json!({"metadata": {"labels": {"app": "db"}}});
        assert!(object_matches(&h, Some(&other), Some(&web)));
        assert!(!object_matches(&h, Some(&other), None));
        let prod: Map<String, Value> = serde_json::from_value(json!({"env": "prod"})).unwrap();
        assert_eq!(
            namespace_matches(&h, Some(&NamespaceLabels::Of(Ok(Some(prod.clone()))))),
            Ok(true)
        );
        assert_eq!(
            namespace_matches(&h, Some(&NamespaceLabels::Of(Ok(None)))),
            Ok(false)
        );
        assert_eq!(
            namespace_matches(&h, Some(&NamespaceLabels::Own(Some(&prod)))),
            Ok(true)
        );
        assert_eq!(
            namespace_matches(&h, Some(&NamespaceLabels::Of(Err(MissingNamespace)))),
            Err(MissingNamespace)
        );
        assert_eq!(namespace_matches(&h, None), Ok(true));
    }
}
