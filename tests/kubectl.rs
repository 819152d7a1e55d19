//! The API as `kubectl` 1.32 uses it, with default flags (client-side validation on, so OpenAPI
//! is downloaded) and a fresh cache dir: apply of a multi-document manifest, get in every output
//! form, watch, label, annotate, scale, the three patch types, a three-way-merge re-apply,
//! server-side apply's clear refusal, delete, discovery, and get + explain for every resource.
//! Checks compare output, not just exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::ApiServer;

const MANIFEST: &str = include_str!("testdata/app.yaml");

fn write_manifest(server: &ApiServer, text: &str) -> String {
    let path = server.dir.path().join("app.yaml");
    std::fs::write(&path, text).expect("writing the manifest");
    path.to_string_lossy().into_owned()
}

#[test]
fn apply_get_edit_and_delete_like_a_user() {
    let s = ApiServer::start();
    let file = write_manifest(&s, MANIFEST);
    let out = s.kubectl_ok(&["apply", "-f", &file]);
    for line in [
        "namespace/demo created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
        "secret/creds created",
    ] {
        assert!(out.contains(line), "apply output lacks {line:?}:\n{out}");
    }

    // get: default, wide, yaml, json, jsonpath.
    let table = s.kubectl_ok(&["get", "deployments", "-n", "demo"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/2", "0", "0"], "{table}");
    let wide = s.kubectl_ok(&["get", "deployment", "web", "-n", "demo", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS") && wide.contains("busybox:1.36") && wide.contains("app=web"),
        "{wide}"
    );
    let yaml = s.kubectl_ok(&["get", "deployment", "web", "-n", "demo", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 2"),
        "{yaml}"
    );
    let dep = s.kubectl_json(&["get", "deployment", "web", "-n", "demo"]);
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(dep["metadata"]["generation"], 1);
    let port = s.kubectl_ok(&[
        "get",
        "service",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.ports[0].port}",
    ]);
    assert_eq!(port, "80");
    let ip = s.kubectl_ok(&[
        "get",
        "service",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        ip.starts_with("10.9") || ip.starts_with("10.1"),
        "clusterIP {ip:?} outside the service CIDR"
    );
    let secret = s.kubectl_ok(&[
        "get",
        "secret",
        "creds",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(
        secret, "aHVudGVyMg==",
        "stringData is stored base64-encoded in data"
    );

    // label and annotate, then select by label.
    assert!(s
        .kubectl_ok(&[
            "label",
            "configmap",
            "settings",
            "-n",
            "demo",
            "tier=backend"
        ])
        .contains("configmap/settings labeled"));
    let selected = s.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        "demo",
        "-l",
        "tier=backend",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "configmap/settings");
    assert!(s
        .kubectl_ok(&[
            "get",
            "configmaps",
            "-n",
            "demo",
            "-l",
            "tier=frontend",
            "-o",
            "name"
        ])
        .trim()
        .is_empty());
    s.kubectl_ok(&["annotate", "deployment", "web", "-n", "demo", "note=hello"]);
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "deployment",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "hello"
    );

    // scale through the scale subresource.
    assert!(s
        .kubectl_ok(&["scale", "deployment", "web", "-n", "demo", "--replicas=5"])
        .contains("deployment.apps/web scaled"));
    assert_eq!(
        s.kubectl_ok(&[
            "get",
            "deployment",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "5"
    );

    // The three patch types.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "demo",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"slow"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        "demo",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/extra","value":"1"}]"#,
    ]);
    let cm = s.kubectl_json(&["get", "configmap", "settings", "-n", "demo"]);
    assert_eq!(cm["data"]["mode"], "slow");
    assert_eq!(cm["data"]["extra"], "1");
    s.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        "demo",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:1.37"}]}}}}"#,
    ]);
    let dep = s.kubectl_json(&["get", "deployment", "web", "-n", "demo"]);
    let c = &dep["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        c.as_array().unwrap().len(),
        1,
        "strategic merge keeps one container merged by name: {c}"
    );
    assert_eq!(c[0]["image"], "busybox:1.37");
    assert_eq!(
        c[0]["env"].as_array().unwrap().len(),
        2,
        "strategic merge kept the env: {c}"
    );
    assert_eq!(
        dep["metadata"]["generation"], 3,
        "scale and the image patch each changed the spec"
    );

    // Edit the file: drop env B and the `level` key, apply again (three-way merge).
    let edited = MANIFEST
        .replace("        - name: B\n          value: \"2\"\n", "")
        .replace("  level: \"3\"\n", "");
    assert_ne!(edited, MANIFEST);
    let file = write_manifest(&s, &edited);
    let out = s.kubectl_ok(&["apply", "-f", &file]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("configmap/settings configured"), "{out}");
    assert!(out.contains("namespace/demo unchanged"), "{out}");
    let dep = s.kubectl_json(&["get", "deployment", "web", "-n", "demo"]);
    let env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(env.len(), 1, "the removed env var is gone: {env:?}");
    assert_eq!(env[0]["name"], "A");
    let cm = s.kubectl_json(&["get", "configmap", "settings", "-n", "demo"]);
    assert!(
        cm["data"].get("level").is_none(),
        "the removed key is gone: {}",
        cm["data"]
    );
    assert_eq!(
        cm["data"]["extra"], "1",
        "a field apply never managed stays"
    );

    // Server-side apply is refused with a clear message until it is implemented.
    let err = s.kubectl_err(&["apply", "--server-side", "-f", &file]);
    assert!(err.contains("server-side apply"), "{err}");

    // delete.
    assert!(s
        .kubectl_ok(&["delete", "configmap", "settings", "-n", "demo"])
        .contains("configmap \"settings\" deleted"));
    let err = s.kubectl_err(&["get", "configmap", "settings", "-n", "demo"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"settings\" not found"),
        "{err}"
    );
    let out = s.kubectl_ok(&[
        "delete",
        "deployment/web",
        "service/web",
        "secret/creds",
        "-n",
        "demo",
    ]);
    for what in [
        "deployment.apps \"web\" deleted",
        "service \"web\" deleted",
        "secret \"creds\" deleted",
    ] {
        assert!(out.contains(what), "{out}");
    }
    assert!(s
        .kubectl_ok(&["get", "all", "-n", "demo", "-o", "name"])
        .trim()
        .is_empty());
    // A namespace waits in Terminating for the namespace controller (the controllers issue)
    // to empty it and drop its finalizer, as upstream.
    let out = s.kubectl_ok(&["delete", "namespace", "demo", "--wait=false"]);
    assert!(out.contains("namespace \"demo\" deleted"), "{out}");
    assert_eq!(
        s.kubectl_ok(&["get", "namespace", "demo", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
}

#[test]
fn get_watch_sees_a_later_change() {
    let s = ApiServer::start();
    s.kubectl_ok(&["create", "namespace", "w"]);
    s.kubectl_ok(&[
        "create",
        "configmap",
        "first",
        "-n",
        "w",
        "--from-literal=a=1",
    ]);
    let mut child = s
        .kubectl_cmd(&["get", "configmaps", "-n", "w", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl get --watch");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The root-ca-cert-publisher's ConfigMap is in every namespace.
            if !line.starts_with("kube-root-ca.crt ") {
                let _ = tx.send(line);
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch printed its header");
    assert!(first.starts_with("NAME"), "{first}");
    let row = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch printed the existing object");
    assert!(row.starts_with("first"), "{row}");
    s.kubectl_ok(&[
        "create",
        "configmap",
        "second",
        "-n",
        "w",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the watch printed the new object");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..2], ["second", "2"], "{line}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn discovery_explain_and_every_resource() {
    let s = ApiServer::start();
    let versions = s.kubectl_ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
        "events.k8s.io/v1",
        "networking.k8s.io/v1",
        "policy/v1",
        "rbac.authorization.k8s.io/v1",
        "scheduling.k8s.io/v1",
        "storage.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{versions}"
        );
    }
    let table = s.kubectl_ok(&["api-resources"]);
    let pods = table
        .lines()
        .find(|l| l.starts_with("pods "))
        .expect("pods in api-resources");
    let cells: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(cells, ["pods", "po", "v1", "true", "Pod"]);
    let names = s.kubectl_ok(&["api-resources", "-o", "name"]);
    // metrics.k8s.io is served apart from the resource table (from the kubelets' figures, as
    // metrics-server would); it has no OpenAPI to explain.
    let (metrics, names): (Vec<&str>, Vec<&str>) =
        names.lines().partition(|n| n.ends_with(".metrics.k8s.io"));
    assert_eq!(metrics, ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]);
    for r in &metrics {
        s.kubectl_ok(&["get", r, "-A"]);
    }
    assert_eq!(
        names.len(),
        apiserver_lite::resources::RESOURCES.len(),
        "{names:?}"
    );
    let explain = s.kubectl_ok(&["explain", "pod.spec.containers"]);
    assert!(explain.contains("KIND:       Pod"), "{explain}");
    assert!(
        explain.contains("FIELD: containers <[]Container>"),
        "{explain}"
    );
    assert!(
        explain.contains("image\t<string>") || explain.contains("image	<string>"),
        "{explain}"
    );
    for r in &names {
        s.kubectl_ok(&["get", r, "-A"]);
        // `explain` takes the group through --api-version (a dotted name is a field path).
        let (plural, group) = r.split_once('.').unwrap_or((r, ""));
        let info = apiserver_lite::resources::RESOURCES
            .iter()
            .find(|i| i.plural == plural && i.group == group)
            .unwrap_or_else(|| panic!("api-resources listed {r}, which the server does not serve"));
        let out = s.kubectl_ok(&["explain", plural, "--api-version", &info.api_version()]);
        assert!(
            out.contains(&format!("KIND:       {}", info.kind)) && out.contains("DESCRIPTION:"),
            "explain {r}:\n{out}"
        );
    }
}
