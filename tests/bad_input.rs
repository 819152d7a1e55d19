//! Bad input gets the upstream status code and a `Status` body with the upstream reason, and
//! nothing stored changes: malformed JSON and YAML, wrong kind or apiVersion for the path,
//! invalid names, oversized bodies, unknown fields under Strict validation, stale updates, and
//! watches with nonsense or too-old resourceVersions.

mod common;

use common::{ApiServer, WatchStream};
use serde_json::{json, Value};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// The stored ConfigMaps of `default`, each with its resourceVersion. The
/// list's own resourceVersion is the store's, which the API server's own
/// background writers (leases, bootstrap reconcilers) move at any time, so
/// "nothing changed" is judged on the items.
fn list_state(s: &ApiServer) -> Vec<(String, String)> {
    let (_, list) = s.http("GET", CMS, "application/json", b"");
    let mut items: Vec<(String, String)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"].as_str().unwrap().to_string(),
                item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    items.sort();
    items
}

fn expect_status(resp: (u16, Value), code: u16, reason: &str, message_part: &str) {
    let (got, body) = resp;
    assert_eq!(got, code, "status code, body {body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains(message_part),
        "message {:?} lacks {message_part:?}",
        body["message"]
    );
}

#[test]
fn bad_requests_get_upstream_statuses_and_change_nothing() {
    let s = ApiServer::start();
    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}, "data": {"a": "1"}});
    let (code, created) = s.http("POST", CMS, "application/json", ok.to_string().as_bytes());
    assert_eq!(code, 201, "{created}");
    let before = list_state(&s);

    expect_status(
        s.http(
            "POST",
            CMS,
            "application/json",
            b"{\"apiVersion\": \"v1\", ",
        ),
        400,
        "BadRequest",
        "json parse error",
    );
    expect_status(
        s.http("POST", CMS, "application/yaml", b"metadata: [unclosed"),
        400,
        "BadRequest",
        "YAML",
    );
    expect_status(
        s.http(
            "POST",
            CMS,
            "application/json",
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
        ),
        400,
        "BadRequest",
        "does not match the expected kind",
    );
    expect_status(
        s.http(
            "POST",
            CMS,
            "application/json",
            br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        ),
        400,
        "BadRequest",
        "does not match the expected API version",
    );
    let (code, body) = s.http(
        "POST",
        CMS,
        "application/json",
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Not_A_Name"}}"#,
    );
    expect_status((code, body.clone()), 422, "Invalid", "metadata.name");
    assert_eq!(
        body["details"]["causes"][0]["field"], "metadata.name",
        "{body}"
    );
    let huge = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"huge"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(3 * 1024 * 1024 + 10)
    );
    expect_status(
        s.http("POST", CMS, "application/json", huge.as_bytes()),
        413,
        "RequestEntityTooLarge",
        "too large",
    );
    expect_status(
        s.http(
            "POST",
            &format!("{CMS}?fieldValidation=Strict"),
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"bogus":1}"#,
        ),
        400,
        "BadRequest",
        "unknown field \"bogus\"",
    );
    expect_status(
        s.http(
            "POST",
            CMS,
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"keep"}}"#,
        ),
        409,
        "AlreadyExists",
        "already exists",
    );
    // A stale update is a conflict.
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["data"]["a"] = json!("2");
    expect_status(
        s.http(
            "PUT",
            &format!("{CMS}/keep"),
            "application/json",
            stale.to_string().as_bytes(),
        ),
        409,
        "Conflict",
        "the object has been modified",
    );
    expect_status(
        s.http(
            "GET",
            &format!("{CMS}?watch=true&resourceVersion=abc"),
            "application/json",
            b"",
        ),
        400,
        "BadRequest",
        "resourceVersion",
    );
    expect_status(
        s.http(
            "GET",
            &format!("{CMS}?labelSelector=a%20in%20(b"),
            "application/json",
            b"",
        ),
        400,
        "BadRequest",
        "",
    );
    expect_status(
        s.http(
            "GET",
            &format!("{CMS}?fieldSelector=spec.nope%3Dx"),
            "application/json",
            b"",
        ),
        400,
        "BadRequest",
        "not",
    );
    expect_status(
        s.http(
            "GET",
            "/api/v1/namespaces/nope/configmaps/x",
            "application/json",
            b"",
        ),
        404,
        "NotFound",
        "not found",
    );
    expect_status(
        s.http(
            "POST",
            "/api/v1/namespaces/missing/configmaps",
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
        ),
        404,
        "NotFound",
        "namespaces \"missing\" not found",
    );
    expect_status(
        s.http("GET", "/api/v1/foos", "application/json", b""),
        404,
        "NotFound",
        "could not find",
    );

    assert_eq!(
        list_state(&s),
        before,
        "a rejected request changed what is stored"
    );
    let (_, keep) = s.http("GET", &format!("{CMS}/keep"), "application/json", b"");
    assert_eq!(keep["data"]["a"], "1");
}

#[test]
fn a_watch_from_before_the_cache_window_gets_410_expired() {
    let mut s = ApiServer::start();
    for i in 0..3 {
        let body =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}});
        assert_eq!(
            s.http("POST", CMS, "application/json", body.to_string().as_bytes())
                .0,
            201
        );
    }
    // After a restart the cache's window starts at the current revision.
    s.restart();
    let mut w = WatchStream::open(&s.addr, &format!("{CMS}?watch=true&resourceVersion=1"));
    let ev = w.next_event().expect("an ERROR event");
    assert_eq!(ev["type"], "ERROR", "{ev}");
    assert_eq!(ev["object"]["code"], 410, "{ev}");
    assert_eq!(ev["object"]["reason"], "Expired", "{ev}");
    assert!(
        ev["object"]["message"]
            .as_str()
            .unwrap()
            .contains("too old resource version"),
        "{ev}"
    );
}

#[test]
fn pods_default_and_delete_gracefully() {
    let s = ApiServer::start();
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (code, created) = s.http("POST", pods, "application/json", pod.to_string().as_bytes());
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    assert_eq!(created["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(created["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(created["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        created["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    // Bind it to a node: from then on a delete only marks it until the node confirms.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(
        s.http(
            "POST",
            &format!("{pods}/p/binding"),
            "application/json",
            binding.to_string().as_bytes()
        )
        .0,
        201
    );
    let (code, marked) = s.http("DELETE", &format!("{pods}/p"), "application/json", b"");
    assert_eq!(code, 200, "{marked}");
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(
        s.http("GET", &format!("{pods}/p"), "application/json", b"")
            .0,
        200,
        "still there during its grace period"
    );
    let (code, _) = s.http(
        "DELETE",
        &format!("{pods}/p"),
        "application/json",
        br#"{"gracePeriodSeconds":0}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(
        s.http("GET", &format!("{pods}/p"), "application/json", b"")
            .0,
        404,
        "the grace-0 delete removed it"
    );
    // Finalizers keep an object until they are removed.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f", "finalizers": ["example.com/hold"]}});
    assert_eq!(
        s.http("POST", CMS, "application/json", cm.to_string().as_bytes())
            .0,
        201
    );
    let (_, marked) = s.http(
        "DELETE",
        &format!("{CMS}/f"),
        "application/json",
        br#"{"propagationPolicy":"Foreground"}"#,
    );
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["example.com/hold", "foregroundDeletion"])
    );
    let patch = br#"{"metadata":{"finalizers":null}}"#;
    let (code, body) = s.http(
        "PATCH",
        &format!("{CMS}/f"),
        "application/merge-patch+json",
        patch,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        s.http("GET", &format!("{CMS}/f"), "application/json", b"")
            .0,
        404,
        "gone once its finalizers are"
    );
}
