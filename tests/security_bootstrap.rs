//! Kubelet TLS bootstrap through the Certificates API (issue 10, "a kubelet holding only a
//! bootstrap kubeconfig joins"), against a real `capstan server`:
//!
//! - a second kubelet given only `--bootstrap-kubeconfig` (the server's join token and CA) and a
//!   `--kubeconfig` path that does not exist yet requests a client certificate, which the
//!   controller-manager approves (SubjectAccessReview for `nodeclient`) and signs; it writes its
//!   kubeconfig, registers, turns Ready, and is `system:node:<name>` (`kubectl auth whoami`);
//! - with `serverTLSBootstrap` its serving certificate comes from a kubelet-serving request for
//!   its own addresses, signed by the cluster CA (curl verifies it with `ca.crt`);
//! - with `--rotate-certificates` and a short `--cluster-signing-duration` it renews its client
//!   certificate as itself (`selfnodeclient`) before expiry, and keeps working;
//! - a bootstrapper asking for the name of a registered, Ready node is not approved; a request
//!   for a `system:masters` subject through the kubelet client signer that an admin approves is
//!   refused by the signer (`Failed`, `SignerValidationFailure`); a bootstrapper may not approve.
//!
//! Needs root (kubelets). Everything is removed by the harness' guards.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::eventually;
use common::kubelet::{Node, NodeOptions};
use common::server::Server;
use serde_json::Value;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A kubeconfig for the server's join token and CA (what `kubeadm join` gives a kubelet).
fn bootstrap_kubeconfig(server: &Server, dir: &Path) -> PathBuf {
    let token = std::fs::read_to_string(server.data_dir.join("server/token"))
        .expect("the join token")
        .trim()
        .to_string();
    let ca = std::fs::read(server.data_dir.join("server/ca.crt")).expect("the cluster CA");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://127.0.0.1:{}\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: tls-bootstrap-token-user\n  name: c\ncurrent-context: c\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n",
        B64.encode(ca),
        server.api_port
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("bootstrap.kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running kubectl")
}

fn csrs(server: &Server) -> Vec<Value> {
    server.kubectl_json(&["get", "csr"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == kind))
}

/// The subject CN of an issued request's certificate.
fn issued_cn(csr: &Value) -> Option<String> {
    let pem = B64.decode(csr["status"]["certificate"].as_str()?).ok()?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = block.parse_x509().ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}

/// A CertificateSigningRequest manifest for `cn` in `orgs` with `signer` and `usages`.
fn csr_manifest(name: &str, cn: &str, orgs: &[&str], signer: &str, usages: &[&str]) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    for o in orgs {
        dn.push(rcgen::DnType::OrganizationName, *o);
    }
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    let key = rcgen::KeyPair::generate().unwrap();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": B64.encode(pem), "signerName": signer, "usages": usages},
    })
    .to_string()
}

fn node_ready(server: &Server, name: &str) -> bool {
    let out = server.kubectl(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    String::from_utf8_lossy(&out.stdout) == "True"
}

#[test]
fn a_kubelet_with_only_a_bootstrap_kubeconfig_joins_serves_and_rotates() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs kubelets); skipped");
        return;
    }
    // Certificates last 140 s (+ the 5-minute backdate): the rotation deadline, 70–90% of the
    // lifetime, falls 8–96 s after issue.
    let mut server =
        Server::start_with(&["--kube-controller-manager-arg=cluster-signing-duration=140s"]);
    server.wait_ready();
    let dir = server.dir.join("joiner");
    let boot = bootstrap_kubeconfig(&server, &dir);
    let kubeconfig = dir.join("kubelet.kubeconfig");
    let name = format!("joiner-{}", std::process::id());
    let mut node = Node::start_with_kubeconfig(
        &kubeconfig,
        &name,
        NodeOptions {
            extra_args: vec![
                "--bootstrap-kubeconfig".into(),
                boot.to_string_lossy().into(),
                "--rotate-certificates".into(),
                "--rotate-server-certificates".into(),
            ],
            ..Default::default()
        },
    );
    eventually(
        Duration::from_secs(120),
        "the bootstrapped node turns Ready",
        || {
            node.assert_alive();
            server.assert_alive();
            node_ready(&server, &name)
        },
    );

    // The kubeconfig it wrote points at kubelet-client-current.pem, a symlink to a dated file.
    let cert_dir = node.root_dir.join("pki");
    let current = cert_dir.join("kubelet-client-current.pem");
    let first_target =
        std::fs::read_link(&current).expect("kubelet-client-current.pem is a symlink");
    assert!(
        first_target
            .to_string_lossy()
            .starts_with("kubelet-client-2"),
        "{first_target:?}"
    );
    let text = std::fs::read_to_string(&kubeconfig).expect("the kubelet wrote its kubeconfig");
    assert!(
        text.contains(&current.to_string_lossy().to_string()),
        "{text}"
    );

    // Its identity is the node's.
    let out = kubectl_as(&kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let who: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        who["status"]["userInfo"]["username"],
        format!("system:node:{name}")
    );
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&Value::from("system:nodes")));

    // The bootstrap request: made by the bootstrap token's user, auto-approved, issued.
    let boot_csr = csrs(&server)
        .into_iter()
        .find(|c| {
            c["spec"]["username"]
                .as_str()
                .is_some_and(|u| u.starts_with("system:bootstrap:"))
                && issued_cn(c).as_deref() == Some(&format!("system:node:{name}"))
        })
        .expect("an issued bootstrap request for the node");
    assert_eq!(
        boot_csr["spec"]["signerName"],
        "kubernetes.io/kube-apiserver-client-kubelet"
    );
    assert_eq!(
        boot_csr["status"]["conditions"][0]["reason"],
        "AutoApproved"
    );
    let table = server.kubectl_ok(&["get", "csr", boot_csr["metadata"]["name"].as_str().unwrap()]);
    assert!(table.contains("Approved,Issued"), "{table}");

    // serverTLSBootstrap: a kubelet-serving request for its addresses, signed by the cluster CA.
    eventually(
        Duration::from_secs(60),
        "the serving certificate is issued",
        || {
            csrs(&server).iter().any(|c| {
                c["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
                    && c["spec"]["username"] == format!("system:node:{name}")
                    && issued_cn(c).is_some()
            })
        },
    );
    let ip = server.kubectl_ok(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let ca = server.data_dir.join("server/ca.crt");
    eventually(
        Duration::from_secs(30),
        "the kubelet serves the CA-signed certificate",
        || {
            let out = Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--cacert",
                ])
                .arg(&ca)
                .arg(format!("https://{ip}:{}/healthz", node.port))
                .output()
                .unwrap();
            // Verified TLS, then 401 for the anonymous request.
            String::from_utf8_lossy(&out.stdout) == "401"
        },
    );

    // Rotation: a new client certificate, asked for by the node itself, before the first expires.
    eventually(
        Duration::from_secs(150),
        "the client certificate rotates",
        || {
            node.assert_alive();
            std::fs::read_link(&current).is_ok_and(|t| t != first_target)
        },
    );
    let renewal = csrs(&server)
        .into_iter()
        .find(|c| {
            c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
                && c["spec"]["username"] == format!("system:node:{name}")
        })
        .expect("a renewal request made as the node");
    assert_eq!(
        renewal["status"]["conditions"][0]["message"],
        "Auto approving self kubelet client certificate after SubjectAccessReview."
    );
    // The first certificate has expired by now (140 s); the node keeps working on the new one.
    std::thread::sleep(Duration::from_secs(20));
    let out = kubectl_as(&kubeconfig, &["auth", "whoami", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(60), "the node stays Ready", || {
        node.assert_alive();
        node_ready(&server, &name)
    });
}

#[test]
fn bootstrappers_get_no_certificate_for_names_they_may_not_have() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs capstan server); skipped");
        return;
    }
    let mut server = Server::start();
    server.wait_ready();
    let dir = server.dir.join("intruder");
    let boot = bootstrap_kubeconfig(&server, &dir);
    let apply_as_bootstrapper = |file: &str, manifest: String| {
        let path = dir.join(file);
        std::fs::write(&path, manifest).unwrap();
        let out = kubectl_as(&boot, &["create", "-f", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "a bootstrapper creates requests: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // The server's own node is registered and Ready: its name is taken.
    let taken = format!("system:node:{}", server.node_name);
    apply_as_bootstrapper(
        "taken.json",
        csr_manifest(
            "taken-name",
            &taken,
            &["system:nodes"],
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "client auth"],
        ),
    );
    // A system:masters subject through the kubelet client signer.
    apply_as_bootstrapper(
        "masters.json",
        csr_manifest(
            "masters",
            "system:node:new-one",
            &["system:masters"],
            "kubernetes.io/kube-apiserver-client-kubelet",
            &["digital signature", "client auth"],
        ),
    );
    // The server stamped the requester, whatever the body said.
    let taken_csr = server.kubectl_json(&["get", "csr", "taken-name"]);
    assert!(
        taken_csr["spec"]["username"]
            .as_str()
            .is_some_and(|u| u.starts_with("system:bootstrap:")),
        "{taken_csr}"
    );
    std::thread::sleep(Duration::from_secs(5));
    for name in ["taken-name", "masters"] {
        let c = server.kubectl_json(&["get", "csr", name]);
        assert!(
            !has_condition(&c, "Approved") && c["status"]["certificate"].is_null(),
            "{name} must stay pending: {c}\nnode: {}\nserver log (csr and node lines):\n{}",
            server.kubectl_json(&["get", "node", &server.node_name]),
            server
                .log()
                .lines()
                .filter(|l| l.contains("csr") || l.contains("node"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // The bootstrapper may not approve its own requests.
    let out = kubectl_as(&boot, &["certificate", "approve", "masters"]);
    assert!(!out.status.success(), "a bootstrapper approved a request");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An admin approves the masters one; the signer refuses it.
    server.kubectl_ok(&["certificate", "approve", "masters"]);
    eventually(
        Duration::from_secs(30),
        "the signer fails the request",
        || {
            let c = server.kubectl_json(&["get", "csr", "masters"]);
            has_condition(&c, "Failed")
        },
    );
    let c = server.kubectl_json(&["get", "csr", "masters"]);
    assert!(c["status"]["certificate"].is_null(), "{c}");
    let failed = c["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Failed")
        .unwrap()
        .clone();
    assert_eq!(failed["reason"], "SignerValidationFailure");
    assert_eq!(
        failed["message"],
        "subject organization is not system:nodes"
    );
    // CertificateApproval and CertificateSigning: carol may update the subresources, but
    // approving needs `approve` and issuing needs `sign` on the signer.
    server.apply(
        "carol.yaml",
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: csr-carol}
rules:
- apiGroups: [certificates.k8s.io]
  resources: [certificatesigningrequests, certificatesigningrequests/approval, certificatesigningrequests/status]
  verbs: [get, list, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: csr-carol}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-carol}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
"#,
    );
    let custom = dir.join("custom.json");
    std::fs::write(
        &custom,
        csr_manifest(
            "custom",
            "alice",
            &[],
            "example.com/custom",
            &["client auth"],
        ),
    )
    .unwrap();
    server.kubectl_ok(&["create", "-f", custom.to_str().unwrap()]);
    let out = server.kubectl(&["--as", "carol", "certificate", "approve", "custom"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "user not permitted to approve requests with signerName \"example.com/custom\""
            ),
        "{err}"
    );
    // `approve` on `example.com/*` is enough.
    server.apply(
        "carol-approver.yaml",
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: csr-carol-approver}
rules:
- apiGroups: [certificates.k8s.io]
  resources: [signers]
  resourceNames: [example.com/*]
  verbs: [approve]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: csr-carol-approver}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: csr-carol-approver}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
"#,
    );
    eventually(Duration::from_secs(10), "carol approves", || {
        server
            .kubectl(&["--as", "carol", "certificate", "approve", "custom"])
            .status
            .success()
    });
    let cert = rcgen::generate_simple_self_signed(vec!["alice".to_string()])
        .unwrap()
        .cert
        .pem();
    let patch = serde_json::json!({"status": {"certificate": B64.encode(cert)}}).to_string();
    let out = server.kubectl(&[
        "--as",
        "carol",
        "patch",
        "csr",
        "custom",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "user not permitted to sign requests with signerName \"example.com/custom\""
            ),
        "{err}"
    );
    // The admin (system:masters) signs.
    server.kubectl_ok(&[
        "patch",
        "csr",
        "custom",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
    let table = server.kubectl_ok(&["get", "csr", "custom", "--no-headers"]);
    assert!(
        table.contains("example.com/custom") && table.contains("Approved,Issued"),
        "{table}"
    );

    // Approved and Denied are exclusive.
    let out = server.kubectl(&["certificate", "deny", "--force", "masters"]);
    assert!(
        !out.status.success(),
        "a request was both approved and denied"
    );
}
