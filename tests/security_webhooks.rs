//! Dynamic admission webhooks against the installed kubectl: a test webhook server with its own
//! TLS (its CA as `caBundle`) refuses pods (kubectl shows upstream's "admission webhook ...
//! denied the request" message) and labels them; namespaceSelector and objectSelector limit
//! which requests reach it; failurePolicy Ignore lets requests through a webhook that is down,
//! too slow or answers garbage, while Fail refuses them with upstream's "failed calling webhook";
//! server-side dry-run reaches webhooks without side effects; IfNeeded webhooks are reinvoked;
//! the configurations are validated and listed as upstream does.

mod common;

use std::time::Duration;

use common::webhook::WebhookServer;
use common::{eventually, ApiServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn apply(api: &ApiServer, obj: &Value) -> std::process::Output {
    let file = api.dir.path().join(format!("obj-{}.json", uuid_like()));
    std::fs::write(&file, obj.to_string()).unwrap();
    api.kubectl(&["apply", "-f", file.to_str().unwrap()])
}

fn apply_ok(api: &ApiServer, obj: &Value) {
    let out = apply(api, obj);
    assert!(
        out.status.success(),
        "kubectl apply of {obj} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A webhook configuration of `kind` named `name` with one webhook.
fn configuration(kind: &str, name: &str, hook: Value) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": [hook],
    })
}

/// A webhook on pod creates calling `url`.
fn pod_hook(name: &str, server: &WebhookServer, url: String) -> Value {
    json!({
        "name": name,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "clientConfig": {"url": url, "caBundle": server.ca_bundle()},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}

fn namespace(api: &ApiServer, name: &str, labels: Value) {
    apply_ok(
        api,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    );
}

/// `kubectl run` of a pod that is only an API object (no node runs it).
fn run_pod(api: &ApiServer, ns: &str, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", name, "--image=busybox", "--restart=Never", "-n", ns];
    args.extend(extra);
    api.kubectl(&args)
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_validating_webhook_rejects_pods_where_its_namespace_selector_says() {
    let api = ApiServer::start();
    let hooks = WebhookServer::start();
    namespace(&api, "guarded", json!({"webhooks": "on"}));
    namespace(&api, "open", json!({}));
    let mut hook = pod_hook("deny.webhooks.capstan.test", &hooks, hooks.url("/deny"));
    hook["namespaceSelector"] = json!({"matchLabels": {"webhooks": "on"}});
    apply_ok(
        &api,
        &configuration("ValidatingWebhookConfiguration", "deny-pods", hook),
    );
    let mut n = 0;
    let mut last = String::new();
    eventually(
        WAIT,
        "the webhook to refuse a pod in the guarded namespace",
        || {
            n += 1;
            let out = run_pod(&api, "guarded", &format!("p{n}"), &[]);
            last = stderr(&out);
            !out.status.success()
        },
    );
    assert!(
        last.contains(
            "admission webhook \"deny.webhooks.capstan.test\" denied the request: pods are not welcome here"
        ),
        "kubectl should print upstream's denial, printed: {last}"
    );
    let pods = api.kubectl_json(&["get", "pods", "-n", "guarded"]);
    assert_eq!(
        pods["items"].as_array().map(Vec::len),
        Some(0),
        "nothing was admitted: {pods}"
    );
    // The namespaceSelector keeps the webhook out of the other namespace.
    let out = run_pod(&api, "open", "free", &[]);
    assert!(out.status.success(), "open namespace: {}", stderr(&out));
    // The review carried what upstream sends.
    let review = hooks
        .reviews()
        .into_iter()
        .find(|r| r["namespace"] == "guarded")
        .expect("a review for the guarded namespace");
    assert_eq!(review["operation"], "CREATE");
    assert_eq!(
        review["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        review["resource"],
        json!({"group": "", "version": "v1", "resource": "pods"})
    );
    assert_eq!(review["requestKind"], review["kind"]);
    assert_eq!(review["object"]["kind"], "Pod");
    assert!(review["oldObject"].is_null(), "{review}");
    assert_eq!(review["dryRun"], false);
    assert_eq!(review["options"]["kind"], "CreateOptions");
    assert!(
        review["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("system:masters"))),
        "userInfo is the admin's: {review}"
    );
    assert!(
        hooks.reviews().iter().all(|r| r["namespace"] != "open"),
        "the webhook was called for the open namespace"
    );
    // Listed as upstream prints it.
    let table = api.kubectl_ok(&["get", "validatingwebhookconfigurations"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "WEBHOOKS", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().take(2).eq(["deny-pods", "1"])),
        "{table}"
    );
}

#[test]
fn a_mutating_webhook_labels_pods_also_on_dry_run_and_is_reinvoked_if_needed() {
    let api = ApiServer::start();
    let hooks = WebhookServer::start();
    namespace(&api, "mutated", json!({}));
    // Configurations run by name: "a-count" (IfNeeded) before "b-label".
    let mut count = pod_hook("count.webhooks.capstan.test", &hooks, hooks.url("/count"));
    count["reinvocationPolicy"] = json!("IfNeeded");
    apply_ok(
        &api,
        &configuration("MutatingWebhookConfiguration", "a-count", count),
    );
    apply_ok(
        &api,
        &configuration(
            "MutatingWebhookConfiguration",
            "b-label",
            pod_hook("label.webhooks.capstan.test", &hooks, hooks.url("/label")),
        ),
    );
    let mut n = 0;
    let mut last = Value::Null;
    let mut warned = String::new();
    eventually(WAIT, "both mutating webhooks to act on a new pod", || {
        n += 1;
        let name = format!("m{n}");
        let out = run_pod(&api, "mutated", &name, &[]);
        assert!(out.status.success(), "kubectl run: {}", stderr(&out));
        warned = stderr(&out);
        last = api.kubectl_json(&["get", "pod", &name, "-n", "mutated"]);
        last["metadata"]["labels"]["webhook-added"] == "yes"
            && last["metadata"]["annotations"]["count-calls"].is_string()
    });
    // The label webhook changed the pod after the count webhook saw it: reinvoked once.
    assert_eq!(
        last["metadata"]["annotations"]["count-calls"], "2",
        "the IfNeeded webhook runs again once: {last}"
    );
    assert!(
        warned.contains("labelled by the test webhook"),
        "the webhook's warning reaches kubectl: {warned}"
    );
    let shown = api.kubectl_ok(&["get", "pods", "-n", "mutated", "--show-labels"]);
    assert!(shown.contains("webhook-added=yes"), "{shown}");
    // Server-side dry run: webhooks without side effects are called with dryRun, nothing stays.
    let out = run_pod(&api, "mutated", "dry", &["--dry-run=server", "-o", "json"]);
    assert!(out.status.success(), "dry run: {}", stderr(&out));
    let dry: Value = serde_json::from_slice(&out.stdout).expect("kubectl printed the pod");
    assert_eq!(dry["metadata"]["labels"]["webhook-added"], "yes", "{dry}");
    assert!(
        hooks
            .reviews()
            .iter()
            .any(|r| r["dryRun"] == true && r["object"]["metadata"]["name"] == "dry"),
        "the webhook saw the dry run"
    );
    let gone = api.kubectl(&["get", "pod", "dry", "-n", "mutated"]);
    assert!(!gone.status.success(), "a dry-run pod was stored");
}

#[test]
fn failure_policy_decides_when_the_webhook_is_down_slow_or_answers_garbage() {
    let api = ApiServer::start();
    let hooks = WebhookServer::start();
    namespace(&api, "flaky", json!({"flaky": "yes"}));
    let down = format!("https://127.0.0.1:{}/allow", common::free_port());
    let cases = [
        (down.clone(), "connection refused"),
        (hooks.url("/slow"), "context deadline exceeded"),
        (
            hooks.url("/garbage"),
            "failed to call webhook: couldn't get version/kind; json parse error",
        ),
        (
            hooks.url("/wronguid"),
            "received invalid webhook response: expected response.uid=",
        ),
    ];
    let mut n = 0;
    for (url, why) in cases {
        let mut hook = pod_hook("flaky.webhooks.capstan.test", &hooks, url.clone());
        hook["namespaceSelector"] = json!({"matchLabels": {"flaky": "yes"}});
        hook["timeoutSeconds"] = json!(1);
        hook["failurePolicy"] = json!("Fail");
        apply_ok(
            &api,
            &configuration("ValidatingWebhookConfiguration", "flaky", hook.clone()),
        );
        let mut last = String::new();
        eventually(
            WAIT,
            &format!("failurePolicy Fail to refuse ({url})"),
            || {
                n += 1;
                let out = run_pod(&api, "flaky", &format!("f{n}"), &[]);
                last = stderr(&out);
                !out.status.success()
            },
        );
        assert!(
            last.contains(
                "Internal error occurred: failed calling webhook \"flaky.webhooks.capstan.test\""
            ) && last.contains(why),
            "failurePolicy Fail for {url}: expected a failed call ({why}), kubectl printed: {last}"
        );
        hook["failurePolicy"] = json!("Ignore");
        apply_ok(
            &api,
            &configuration("ValidatingWebhookConfiguration", "flaky", hook),
        );
        eventually(
            WAIT,
            &format!("failurePolicy Ignore to admit ({url})"),
            || {
                n += 1;
                run_pod(&api, "flaky", &format!("f{n}"), &[])
                    .status
                    .success()
            },
        );
    }
    // The API server itself stayed up and serves.
    api.kubectl_ok(&["get", "pods", "-n", "flaky"]);
}

#[test]
fn object_selectors_and_updates_and_deletes_reach_webhooks() {
    let api = ApiServer::start();
    let hooks = WebhookServer::start();
    namespace(&api, "cms", json!({}));
    let hook = json!({
        "name": "guard.webhooks.capstan.test",
        "rules": [{"operations": ["UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"], "scope": "Namespaced"}],
        "clientConfig": {"url": hooks.url("/deny"), "caBundle": hooks.ca_bundle()},
        "objectSelector": {"matchLabels": {"guard": "yes"}},
        "sideEffects": "NoneOnDryRun",
        "admissionReviewVersions": ["v1beta1", "v1"],
    });
    apply_ok(
        &api,
        &configuration("ValidatingWebhookConfiguration", "guard", hook),
    );
    apply_ok(
        &api,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "guarded", "namespace": "cms", "labels": {"guard": "yes"}}, "data": {"a": "b"}}),
    );
    api.kubectl_ok(&["create", "configmap", "free", "-n", "cms"]);
    let mut last = String::new();
    eventually(
        WAIT,
        "the webhook to refuse an update of the guarded map",
        || {
            let out = api.kubectl(&[
                "annotate",
                "--overwrite",
                "configmap",
                "guarded",
                "-n",
                "cms",
                "x=y",
            ]);
            last = stderr(&out);
            !out.status.success()
        },
    );
    assert!(
        last.contains("admission webhook \"guard.webhooks.capstan.test\" denied the request"),
        "{last}"
    );
    let out = api.kubectl(&["delete", "configmap", "guarded", "-n", "cms"]);
    assert!(!out.status.success(), "the guarded map was deleted");
    assert!(
        stderr(&out).contains("denied the request"),
        "{}",
        stderr(&out)
    );
    api.kubectl_ok(&["get", "configmap", "guarded", "-n", "cms"]);
    // Unselected objects pass.
    api.kubectl_ok(&["annotate", "configmap", "free", "-n", "cms", "x=y"]);
    api.kubectl_ok(&["delete", "configmap", "free", "-n", "cms"]);
    let reviews = hooks.reviews();
    let delete = reviews
        .iter()
        .find(|r| r["operation"] == "DELETE")
        .expect("a DELETE review");
    assert_eq!(delete["name"], "guarded");
    assert_eq!(delete["oldObject"]["metadata"]["name"], "guarded");
    assert!(delete["object"].is_null(), "{delete}");
    let update = reviews
        .iter()
        .find(|r| r["operation"] == "UPDATE")
        .expect("an UPDATE review");
    assert_eq!(update["oldObject"]["metadata"]["labels"]["guard"], "yes");
    assert_eq!(update["object"]["metadata"]["annotations"]["x"], "y");
    assert!(
        reviews.iter().all(|r| r["name"] != "free"),
        "the unselected map reached the webhook"
    );
}

#[test]
fn webhook_configurations_are_validated_as_upstream() {
    let api = ApiServer::start();
    let hooks = WebhookServer::start();
    let mut bad = pod_hook("nope", &hooks, "http://127.0.0.1/x".into());
    bad["sideEffects"] = json!("Some");
    bad["admissionReviewVersions"] = json!(["v2"]);
    bad["timeoutSeconds"] = json!(31);
    let out = apply(
        &api,
        &configuration("MutatingWebhookConfiguration", "bad", bad),
    );
    let err = stderr(&out);
    assert!(!out.status.success(), "an invalid configuration was stored");
    for want in [
        "The MutatingWebhookConfiguration \"bad\" is invalid",
        "webhooks[0].name: Invalid value: \"nope\": should be a domain with at least three segments separated by dots",
        "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\"",
        "webhooks[0].admissionReviewVersions: Invalid value: []string{\"v2\"}: must include at least one of v1, v1beta1",
        "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
        "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme",
    ] {
        assert!(err.contains(want), "expected {want:?} in: {err}");
    }
    let two = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "twice"},
        "webhooks": [
            pod_hook("same.webhooks.capstan.test", &hooks, hooks.url("/allow")),
            pod_hook("same.webhooks.capstan.test", &hooks, hooks.url("/allow")),
        ],
    });
    let err = stderr(&apply(&api, &two));
    assert!(
        err.contains("webhooks[1].name: Duplicate value: \"same.webhooks.capstan.test\""),
        "{err}"
    );
    // Defaults as upstream's v1 defaulters.
    apply_ok(
        &api,
        &configuration(
            "MutatingWebhookConfiguration",
            "defaults",
            pod_hook("ok.webhooks.capstan.test", &hooks, hooks.url("/allow")),
        ),
    );
    let stored = api.kubectl_json(&["get", "mutatingwebhookconfiguration", "defaults"]);
    let h = &stored["webhooks"][0];
    assert_eq!(h["failurePolicy"], "Fail", "{stored}");
    assert_eq!(h["matchPolicy"], "Equivalent");
    assert_eq!(h["timeoutSeconds"], 10);
    assert_eq!(h["reinvocationPolicy"], "Never");
    assert_eq!(h["rules"][0]["scope"], "*");
    assert_eq!(h["namespaceSelector"], json!({}));
}
