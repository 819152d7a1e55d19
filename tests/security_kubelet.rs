//! The kubelet API secured (issue 10, "The kubelet API"), with curl and the installed kubectl:
//!
//! - authentication: an anonymous request gets 401 `Unauthorized`, so do a client certificate
//!   from another CA and a garbage bearer token; a client certificate of the cluster CA and a
//!   static token of the API server (checked with a TokenReview) are users;
//! - authorization: a user without `nodes/proxy` (or `nodes/stats`) gets 403 with upstream's
//!   `Forbidden (user=…, verb=get, resource=nodes, subresource(s)=[…])`; users bound to a
//!   ClusterRole with `nodes/proxy` read container logs and `/pods` straight from the kubelet;
//! - the API server calls the kubelet with its own kubelet-client certificate and, given
//!   `--kubelet-certificate-authority`, verifies the kubelet's serving certificate: with one
//!   signed by the cluster CA `kubectl logs`, `kubectl exec` and the node proxy work; a kubelet
//!   serving a self-signed certificate is refused.
//!
//! Needs root (the kubelet runs containers). Everything is removed by the harness' guards.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kubelet::{wait_pod, Node, NodeOptions};
use common::{eventually, ApiServer};

const FORBIDDEN_LOGS: &str =
    "Forbidden (user=bob, verb=get, resource=nodes, subresource(s)=[proxy])\n";

/// Writes a client certificate and key issued by the CA under `server_dir` for `user` in
/// `groups`; returns the curl arguments that present them.
fn client_cert(server_dir: &Path, out: &Path, user: &str, groups: &[&str]) -> Vec<String> {
    let pki = apiserver_lite::pki::Pki::load_ca(server_dir).expect("loading the CA");
    let (cert, key) = pki
        .issue_client(user, groups)
        .expect("issuing a client cert");
    let (c, k) = (
        out.join(format!("{user}.crt")),
        out.join(format!("{user}.key")),
    );
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    vec![
        "--cert".into(),
        c.to_string_lossy().into(),
        "--key".into(),
        k.to_string_lossy().into(),
    ]
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn kubelet_api_authenticates_and_authorizes_as_upstream() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let name = format!("kubelet-sec-{}", std::process::id());
    // The cluster CA exists before the API server starts, so the kubelet's serving certificate
    // can come from it and the API server can verify it.
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let pki = apiserver_lite::pki::Pki::load_or_create(&server_dir, &Default::default(), &[], &[])
        .expect("making the cluster PKI");
    let node_ips = [
        apiserver_lite::server::primary_address(),
        std::net::IpAddr::from([127, 0, 0, 1]),
    ];
    let (serving, serving_key) = pki.issue_kubelet_serving(&name, &node_ips).unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    let (serving_path, serving_key_path) = (creds.join("kubelet.crt"), creds.join("kubelet.key"));
    std::fs::write(&serving_path, serving).unwrap();
    std::fs::write(&serving_key_path, serving_key).unwrap();
    // Static tokens: one user with no rights on nodes, one bound to nodes/proxy below.
    let tokens = creds.join("tokens.csv");
    std::fs::write(
        &tokens,
        "viewer-token-0123456789,viewer,u-viewer\nproxy-token-0123456789,proxy-user,u-proxy\n",
    )
    .unwrap();
    let ca = server_dir.join("ca.crt");
    let api = ApiServer::start_with(
        dir,
        &[
            "--token-auth-file",
            tokens.to_str().unwrap(),
            "--kubelet-certificate-authority",
            ca.to_str().unwrap(),
        ],
    );
    let mut node = Node::start(
        &api,
        &name,
        NodeOptions {
            extra_args: vec![
                format!("--tls-cert-file={}", serving_path.display()),
                format!("--tls-private-key-file={}", serving_key_path.display()),
            ],
            ..Default::default()
        },
    );
    node.wait_ready(&api);

    // nodes/proxy for alice (a certificate) and proxy-user (a token); bob and viewer get none.
    node.apply(
        &api,
        "rbac.yaml",
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubelet-proxy}
rules:
- apiGroups: [""]
  resources: [nodes/proxy]
  verbs: [get, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubelet-proxy}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubelet-proxy}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: proxy-user}
"#,
    );
    node.apply(
        &api,
        "pod.yaml",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo hello-from-talker; exec sleep 3600"]
"#
        ),
    );
    wait_pod(
        &api,
        &mut node,
        "talker",
        Duration::from_secs(120),
        "running",
        |p| p["status"]["phase"] == "Running",
    );
    let logs = "/containerLogs/default/talker/c";

    // Anonymous: 401, on every path.
    for path in [logs, "/pods", "/healthz", "/stats/summary"] {
        assert_eq!(
            node.kubelet_curl(&[], path),
            (401, "Unauthorized".to_string()),
            "anonymous GET {path}"
        );
    }
    // Bad credentials: a certificate from another CA (even claiming system:masters), a garbage
    // bearer token.
    let other = tempfile::tempdir().unwrap();
    apiserver_lite::pki::Pki::load_or_create(other.path(), &Default::default(), &[], &[]).unwrap();
    let forged = client_cert(other.path(), other.path(), "mallory", &["system:masters"]);
    assert_eq!(
        node.kubelet_curl(&args(&forged), logs),
        (401, "Unauthorized".to_string()),
        "a certificate from another CA"
    );
    assert_eq!(
        node.kubelet_curl(&["-H", "Authorization: Bearer not-a-token"], logs),
        (401, "Unauthorized".to_string()),
        "a garbage bearer token"
    );

    // Authenticated users without the rights: 403 with upstream's text.
    let bob = client_cert(&server_dir, &creds, "bob", &["developers"]);
    assert_eq!(
        node.kubelet_curl(&args(&bob), logs),
        (403, FORBIDDEN_LOGS.to_string()),
        "bob has no nodes/proxy"
    );
    assert_eq!(
        node.kubelet_curl(
            &["-H", "Authorization: Bearer viewer-token-0123456789"],
            "/stats/summary"
        ),
        (
            403,
            "Forbidden (user=viewer, verb=get, resource=nodes, subresource(s)=[stats])\n"
                .to_string()
        ),
        "viewer has no nodes/stats"
    );
    assert_eq!(
        node.kubelet_curl(&args(&bob), "/pods").0,
        403,
        "/pods asks nodes/pods, then nodes/proxy"
    );

    // Users with nodes/proxy: the container's log, and /pods through the nodes/proxy fallback.
    let alice = client_cert(&server_dir, &creds, "alice", &[]);
    let (code, body) = node.kubelet_curl(&args(&alice), logs);
    assert_eq!(
        (code, body.as_str()),
        (200, "hello-from-talker\n"),
        "alice reads the log"
    );
    let (code, body) = node.kubelet_curl(&args(&alice), "/pods");
    assert_eq!(code, 200, "alice lists pods: {body}");
    assert!(body.contains("talker"), "/pods: {body}");
    let (code, body) = node.kubelet_curl(
        &["-H", "Authorization: Bearer proxy-token-0123456789"],
        logs,
    );
    assert_eq!(
        (code, body.as_str()),
        (200, "hello-from-talker\n"),
        "the token user reads it"
    );
    // But nodes/proxy is not nodes/stats.
    assert_eq!(node.kubelet_curl(&args(&alice), "/stats/summary").0, 403);

    // Through the API server, with its kubelet-client certificate and the kubelet's serving
    // certificate verified.
    assert_eq!(
        api.kubectl_ok(&["logs", "talker"]),
        "hello-from-talker\n",
        "kubectl logs"
    );
    let out = api.kubectl_ok(&["exec", "talker", "--", "sh", "-c", "echo exec-$((6*7))"]);
    assert_eq!(out, "exec-42\n", "kubectl exec");
    let out = api.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{name}/proxy/healthz"),
    ]);
    assert_eq!(out, "ok", "the node proxy");
    // A user the API server refuses nodes/proxy never reaches the kubelet.
    let err = api.kubectl_err(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{name}/proxy/pods"),
        "--as",
        "bob",
    ]);
    assert!(
        err.contains("forbidden") && err.contains("nodes/proxy"),
        "kubectl get --raw nodes/proxy as bob: {err}"
    );
}

#[test]
fn a_kubelet_certificate_authority_refuses_kubelets_it_did_not_sign() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs a kubelet); skipped");
        return;
    }
    // The API server verifies kubelets against a CA that did not sign this kubelet's
    // (self-signed) certificate.
    let other = tempfile::tempdir().unwrap();
    apiserver_lite::pki::Pki::load_or_create(other.path(), &Default::default(), &[], &[]).unwrap();
    let ca = other.path().join("ca.crt");
    let api = ApiServer::start_with(
        tempfile::tempdir().unwrap(),
        &["--kubelet-certificate-authority", ca.to_str().unwrap()],
    );
    let name = format!("kubelet-unsigned-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
    let mut last = String::new();
    eventually(
        Duration::from_secs(30),
        "the node proxy to be refused",
        || {
            last = api.kubectl_err(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{name}/proxy/healthz"),
            ]);
            last.contains("error dialing backend")
        },
    );
    assert!(
        last.to_lowercase().contains("certificate") || last.contains("UnknownIssuer"),
        "the refusal names the certificate: {last}"
    );
    // The kubelet itself still answers its admin.
    assert_eq!(node.kubelet_get(&api, "/healthz"), (200, "ok".to_string()));
}
