use super::*;
use crate::openapi::patch_schema;
use serde_json::json;

struct Case {
    name: &'static str,
    original: Value,
    patch: Value,
    expected: Value,
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

fn run(cases: Vec<Case>, schema: Option<PatchSchema>) {
    for c in cases {
        let got = strategic_merge_patch(&c.original, &c.patch, schema.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(got, c.expected, "{}", c.name);
    }
}

#[test]
fn pod_cases() {
    let schema = patch_schema("", "v1", "Pod");
    assert!(schema.is_some());
    let cases = vec![
        Case {
            name: "containers merged by name",
            original: pod(json!({"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]})),
            patch: json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
            expected: pod(json!({"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]})),
        },
        Case {
            name: "new container goes first (upstream order without $setElementOrder)",
            original: pod(json!({"containers": [{"name": "a", "image": "a:1"}]})),
            patch: json!({"spec": {"containers": [{"name": "c", "image": "c:1"}]}}),
            expected: pod(json!({"containers": [
                {"name": "c", "image": "c:1"}, {"name": "a", "image": "a:1"}]})),
        },
        Case {
            name: "env merged by name",
            original: pod(json!({"containers": [{"name": "a", "env": [
                {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]})),
            patch: json!({"spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "3"}]}]}}),
            expected: pod(json!({"containers": [{"name": "a", "env": [
                {"name": "X", "value": "1"}, {"name": "Y", "value": "3"}]}]})),
        },
        Case {
            name: "ports merged by containerPort",
            original: pod(json!({"containers": [{"name": "a", "ports": [
                {"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]})),
            patch: json!({"spec": {"containers": [{"name": "a", "ports": [
                {"containerPort": 443, "name": "https"}]}]}}),
            expected: pod(json!({"containers": [{"name": "a", "ports": [
                {"containerPort": 80, "name": "http"}, {"containerPort": 443, "name": "https"}]}]})),
        },
        Case {
            name: "null removes a field",
            original: pod(json!({"nodeName": "n1", "restartPolicy": "Always", "containers": []})),
            patch: json!({"spec": {"nodeName": null, "hostname": null}}),
            expected: pod(json!({"restartPolicy": "Always", "containers": []})),
        },
        Case {
            name: "labels map merge and delete",
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            patch: json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            expected: json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
        },
        Case {
            name: "$patch: delete on a list element",
            original: pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
            patch: json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            expected: pod(json!({"containers": [{"name": "b"}]})),
        },
        Case {
            name: "$patch: replace on a list",
            original: pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
            patch: json!({"spec": {"containers": [{"name": "z"}, {"$patch": "replace"}]}}),
            expected: pod(json!({"containers": [{"name": "z"}]})),
        },
        Case {
            name: "$patch: replace on a map",
            original: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            patch: json!({"metadata": {"labels": {"$patch": "replace", "x": "9"}}}),
            expected: json!({"metadata": {"labels": {"x": "9"}}}),
        },
        Case {
            name: "$patch: delete on a map",
            original: json!({"metadata": {"labels": {"a": "1"}, "name": "x"}}),
            patch: json!({"metadata": {"labels": {"$patch": "delete"}}}),
            expected: json!({"metadata": {"labels": {}, "name": "x"}}),
        },
        Case {
            name: "$patch: merge on a map is a plain merge",
            original: json!({"metadata": {"labels": {"a": "1"}}}),
            patch: json!({"metadata": {"labels": {"$patch": "merge", "b": "2"}}}),
            expected: json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        },
        Case {
            name: "primitive list with strategy merge is a set (finalizers)",
            original: json!({"metadata": {"finalizers": ["a", "b"]}}),
            patch: json!({"metadata": {"finalizers": ["b", "c"]}}),
            expected: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList",
            original: json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            expected: json!({"metadata": {"finalizers": ["a", "c"]}}),
        },
        Case {
            name: "$deleteFromPrimitiveList on an absent list does nothing",
            original: json!({"metadata": {"name": "x"}}),
            patch: json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            expected: json!({"metadata": {"name": "x"}}),
        },
        Case {
            name: "$setElementOrder orders the merged list",
            original: pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "c"}, {"name": "a"}],
                "containers": [{"name": "c", "image": "c:1"}]}}),
            expected: pod(json!({"containers": [
                {"name": "b"}, {"name": "c", "image": "c:1"}, {"name": "a"}]})),
        },
        Case {
            name: "$setElementOrder keeps server-only items in place",
            original: pod(json!({"containers": [{"name": "a"}, {"name": "s"}, {"name": "b"}]})),
            patch: json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "b:2"}]}}),
            expected: pod(json!({"containers": [
                {"name": "a"}, {"name": "s"}, {"name": "b", "image": "b:2"}]})),
        },
        Case {
            name: "$retainKeys clears fields not retained (volume source switch)",
            original: pod(json!({"containers": [], "volumes": [
                {"name": "v", "emptyDir": {}}]})),
            patch: json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["hostPath", "name"],
                "hostPath": {"path": "/tmp"}}]}}),
            expected: pod(json!({"containers": [], "volumes": [
                {"name": "v", "hostPath": {"path": "/tmp"}}]})),
        },
        Case {
            name: "lists without merge strategy are replaced (args)",
            original: pod(json!({"containers": [{"name": "a", "args": ["x", "y"]}]})),
            patch: json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
            expected: pod(json!({"containers": [{"name": "a", "args": ["z"]}]})),
        },
        Case {
            name: "new field's nulls are dropped",
            original: pod(json!({"containers": []})),
            patch: json!({"spec": {"securityContext": {"runAsUser": 1, "fsGroup": null}}}),
            expected: pod(json!({"containers": [], "securityContext": {"runAsUser": 1}})),
        },
        Case {
            name: "kubectl apply style patch",
            original: pod(json!({"containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]}]})),
            patch: json!({
                "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "spec": {"$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{"name": "a", "image": "a:2",
                        "$setElementOrder/env": [{"name": "X"}, {"name": "Y"}],
                        "env": [{"name": "Y", "value": "2"}]}]}}),
            expected: json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                "spec": {"containers": [{"name": "a", "image": "a:2",
                    "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}]}}),
        },
    ];
    run(cases, schema);
}

#[test]
fn deployment_template_containers_merge() {
    let schema = patch_schema("apps", "v1", "Deployment");
    let original = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
    let patch = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "a", "image": "a:2"}]}}}});
    let got = strategic_merge_patch(&original, &patch, schema.as_ref()).unwrap();
    assert_eq!(got["spec"]["replicas"], 3);
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "a:2"}, {"name": "b", "image": "b:1"}])
    );
}

#[test]
fn without_schema_behaves_like_merge_patch() {
    run(
        vec![Case {
            name: "lists replaced, maps merged, null deletes",
            original: json!({"a": {"b": 1, "c": 2}, "l": [{"name": "x"}], "d": 1}),
            patch: json!({"a": {"b": null, "e": 3}, "l": [{"name": "y"}], "d": null}),
            expected: json!({"a": {"c": 2, "e": 3}, "l": [{"name": "y"}]}),
        }],
        None,
    );
}

#[test]
fn errors() {
    let schema = patch_schema("", "v1", "Pod");
    let original = pod(json!({"containers": [{"name": "a"}]}));
    let bad = [
        json!({"spec": {"$patch": "bogus"}}),
        json!({"spec": {"containers": [{"image": "no-name"}]}}),
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "hostPath": {}}]}}),
        json!({"spec": {"$setElementOrder/containers": "x"}}),
        json!([1, 2]),
    ];
    for p in bad {
        let original = if p.get("spec").and_then(|s| s.get("volumes")).is_some() {
            pod(json!({"volumes": [{"name": "v", "emptyDir": {}}]}))
        } else {
            original.clone()
        };
        assert!(
            strategic_merge_patch(&original, &p, schema.as_ref()).is_err(),
            "{p}"
        );
    }
}

/// The patch the real `kubectl apply` (1.32) computed against a stub server for this change.
#[test]
fn kubectl_apply_patch_from_real_kubectl() {
    let schema = patch_schema("", "v1", "Pod");
    let live = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "resourceVersion": "1",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "old"}},
        "spec": {"containers": [{"name": "a", "image": "busybox",
            "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]}]}});
    let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "new"}},
        "spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [
                {"$setElementOrder/env": [{"name": "Y"}],
                 "env": [{"name": "Y", "value": "2"}, {"$patch": "delete", "name": "X"}],
                 "image": "busybox:2", "name": "a"},
                {"image": "nginx", "name": "b"}]}});
    let got = strategic_merge_patch(&live, &patch, schema.as_ref()).unwrap();
    assert_eq!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "new"
    );
    assert_eq!(
        got["spec"]["containers"],
        json!([
            {"name": "a", "image": "busybox:2", "env": [{"name": "Y", "value": "2"}],
             "ports": [{"containerPort": 80}]},
            {"image": "nginx", "name": "b"}
        ])
    );
}
