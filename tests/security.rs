//! The API server's security core against the installed kubectl and a plain HTTPS client: TLS
//! only, the admin kubeconfig from any directory, client certificates (and one from another
//! CA), static and bootstrap tokens, service-account tokens from the TokenRequest API (and
//! forged, expired and foreign-key ones), RBAC with the bootstrap `view` role, `kubectl auth
//! can-i` (also `--as`) and `kubectl auth whoami`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::{connect_with, http_on, tls_config_from_pem, ApiServer};
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A client certificate for `user` in `groups` signed by the CA at `ca` (cert, key PEM).
fn client_cert(ca: (&str, &str), user: &str, groups: &[&str]) -> (String, String) {
    let ca_key = rcgen::KeyPair::from_pem(ca.1).expect("the CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca.0, ca_key).expect("the CA certificate");
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for g in groups {
        dn.push(rcgen::DnType::OrganizationName, *g);
    }
    dn.push(rcgen::DnType::CommonName, user);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A CA unrelated to the cluster's (cert, key PEM).
fn other_ca() -> (String, String) {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "kubernetes");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn cluster_ca(api: &ApiServer) -> (String, String) {
    let dir = api.dir.path().join("server");
    (
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    )
}

/// Writes a kubeconfig for `api` with the client certificate `cert`.
fn kubeconfig_for(api: &ApiServer, name: &str, cert: &(String, String)) -> PathBuf {
    let path = api.dir.path().join(format!("{name}.kubeconfig"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
        api.url(),
        B64.encode(api.ca_pem()),
        B64.encode(&cert.0),
        B64.encode(&cert.1)
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn kubectl_with(api: &ApiServer, kubeconfig: &PathBuf, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-s", "KILL", "120", "kubectl"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", api.dir.path().join("kubectl-cache-user"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("running kubectl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An HTTPS request with a bearer token and no client certificate; (status, JSON body).
fn with_token(
    api: &ApiServer,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let config = tls_config_from_pem(api.ca_pem().as_bytes(), None);
    let (s, h) = connect_with(&api.addr, Some(config));
    let auth = format!("Bearer {token}");
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (code, bytes) = http_on(
        s,
        h,
        &api.addr,
        method,
        path,
        "application/json",
        &body,
        &[("Authorization", &auth)],
    );
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Who the server says the token is (SelfSubjectReview), or the HTTP status when refused.
fn whoami(api: &ApiServer, token: &str) -> Result<Value, u16> {
    let (code, body) = with_token(
        api,
        token,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    );
    if code == 201 {
        Ok(body["status"]["userInfo"].clone())
    } else {
        Err(code)
    }
}

#[test]
fn admin_kubeconfig_works_over_tls_from_any_directory_and_plain_http_is_refused() {
    let api = ApiServer::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("config");
    std::fs::copy(api.kubeconfig(), &copy).unwrap();
    let out = Command::new("kubectl")
        .args(["get", "namespaces", "-o", "name"])
        .current_dir(elsewhere.path())
        .env("KUBECONFIG", &copy)
        .env("KUBECACHEDIR", elsewhere.path().join("cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("namespace/kube-system"));
    let kc = std::fs::read_to_string(api.kubeconfig()).unwrap();
    assert!(
        kc.contains(&format!("server: https://{}", api.addr)),
        "{kc}"
    );
    assert!(kc.contains("client-certificate-data"), "{kc}");
    assert_eq!(
        api.kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]),
        r#"["system:masters","system:authenticated"]"#
    );
    // Plain HTTP gets Go's answer and nothing else.
    let (s, h) = connect_with(&api.addr, None);
    let (code, body) = http_on(s, h, &api.addr, "GET", "/api/v1/namespaces", "", b"", &[]);
    assert_eq!(code, 400);
    assert_eq!(
        text(&body).trim(),
        "Client sent an HTTP request to an HTTPS server."
    );
    // TLS without credentials is anonymous: public info only.
    let anon = tls_config_from_pem(api.ca_pem().as_bytes(), None);
    let (s, h) = connect_with(&api.addr, Some(anon.clone()));
    let (code, _) = http_on(s, h, &api.addr, "GET", "/healthz", "", b"", &[]);
    assert_eq!(code, 200);
    let (s, h) = connect_with(&api.addr, Some(anon));
    let (code, body) = http_on(s, h, &api.addr, "GET", "/api/v1/secrets", "", b"", &[]);
    assert_eq!(code, 403, "{}", text(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["message"],
        r#"secrets is forbidden: User "system:anonymous" cannot list resource "secrets" in API group "" at the cluster scope"#
    );
    // The component kubeconfigs carry their identities.
    for (file, user) in [
        ("scheduler.kubeconfig", "system:kube-scheduler"),
        (
            "controller-manager.kubeconfig",
            "system:kube-controller-manager",
        ),
        ("proxy.kubeconfig", "system:kube-proxy"),
    ] {
        let out = kubectl_with(
            &api,
            &api.dir.path().join("server").join(file),
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
        );
        assert_eq!(text(&out.stdout), user, "{}", text(&out.stderr));
    }
}

#[test]
fn a_view_user_lists_but_cannot_delete_and_auth_can_i_and_whoami_answer() {
    let api = ApiServer::start();
    let ca = cluster_ca(&api);
    let jane = kubeconfig_for(&api, "jane", &client_cert((&ca.0, &ca.1), "jane", &["dev"]));
    api.kubectl_ok(&["create", "configmap", "x", "--from-literal=a=b"]);
    // Nothing bound yet: 403 on list.
    let out = kubectl_with(&api, &jane, &["get", "configmaps"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#"configmaps is forbidden: User "jane" cannot list resource "configmaps" in API group "" in the namespace "default""#),
        "{}",
        text(&out.stderr)
    );
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "jane-view",
        "--clusterrole=view",
        "--user=jane",
    ]);
    let out = kubectl_with(&api, &jane, &["get", "configmaps", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("configmap/x"));
    let out = kubectl_with(&api, &jane, &["delete", "configmap", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#"configmaps "x" is forbidden: User "jane" cannot delete resource "configmaps" in API group "" in the namespace "default""#),
        "{}",
        text(&out.stderr)
    );
    // Not in another namespace, and not secrets.
    let out = kubectl_with(&api, &jane, &["get", "pods", "-n", "kube-system"]);
    assert!(!out.status.success());
    let out = kubectl_with(&api, &jane, &["get", "secrets"]);
    assert!(!out.status.success());

    // kubectl auth can-i, as jane and as the admin with --as.
    let can = |kc: Option<&PathBuf>, args: &[&str]| -> String {
        let mut a = vec!["auth", "can-i"];
        a.extend_from_slice(args);
        let out = match kc {
            Some(k) => kubectl_with(&api, k, &a),
            None => api.kubectl(&a),
        };
        text(&out.stdout).trim().to_string()
    };
    assert_eq!(can(Some(&jane), &["list", "pods"]), "yes");
    assert_eq!(can(Some(&jane), &["delete", "pods"]), "no");
    assert_eq!(
        can(Some(&jane), &["list", "pods", "-n", "kube-system"]),
        "no"
    );
    assert_eq!(can(None, &["list", "pods", "--as", "jane"]), "yes");
    assert_eq!(can(None, &["delete", "pods", "--as", "jane"]), "no");
    assert_eq!(can(None, &["delete", "pods"]), "yes");
    let list = text(&kubectl_with(&api, &jane, &["auth", "can-i", "--list"]).stdout);
    assert!(
        list.contains("configmaps") && list.contains("[get list watch]"),
        "{list}"
    );
    // --as needs the impersonate verb: jane may not impersonate.
    let out = kubectl_with(&api, &jane, &["get", "pods", "--as", "admin"]);
    assert!(
        text(&out.stderr).contains(r#"users "admin" is forbidden: User "jane" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{}",
        text(&out.stderr)
    );
    // kubectl auth whoami, directly and impersonated.
    let who = text(&kubectl_with(&api, &jane, &["auth", "whoami", "-o", "json"]).stdout);
    let who: Value = serde_json::from_str(&who).expect("whoami JSON");
    assert_eq!(who["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    let who = api.kubectl_ok(&[
        "auth",
        "whoami",
        "--as",
        "bob",
        "--as-group",
        "ops",
        "-o",
        "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
    ]);
    assert_eq!(who, r#"bob ["ops","system:authenticated"]"#);
}

#[test]
fn static_tokens_and_certificates_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, "s3cret-token,carol,1001,\"team-a,team-b\"\n").unwrap();
    let api = ApiServer::start_with(dir, &["--token-auth-file", file.to_str().unwrap()]);
    let u = whoami(&api, "s3cret-token").expect("the static token authenticates");
    assert_eq!(u["username"], "carol");
    assert_eq!(u["uid"], "1001");
    assert_eq!(
        u["groups"],
        json!(["team-a", "team-b", "system:authenticated"])
    );
    // An unknown token is a 401 even though anonymous requests are allowed.
    assert_eq!(whoami(&api, "wrong-token"), Err(401));
    let (code, body) = with_token(&api, "wrong-token", "GET", "/api/v1/pods", &Value::Null);
    assert_eq!(code, 401);
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["message"], "Unauthorized");

    // A certificate signed by another CA: 401, not a broken connection and not anonymous.
    let other = other_ca();
    let mallory = kubeconfig_for(
        &api,
        "mallory",
        &client_cert(
            (&other.0, &other.1),
            "kubernetes-admin",
            &["system:masters"],
        ),
    );
    let out = kubectl_with(&api, &mallory, &["get", "namespaces"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("You must be logged in to the server"),
        "{}",
        text(&out.stderr)
    );
}

/// ES256 JWS signed with `key_pem` (rcgen signs ECDSA as DER; JWS wants r‖s).
fn sign_jwt(key_pem: &str, claims: &Value) -> String {
    use rcgen::SigningKey;
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let kid = B64URL.encode(sha256(&spki));
    let input = format!(
        "{}.{}",
        B64URL.encode(json!({"alg": "ES256", "kid": kid}).to_string()),
        B64URL.encode(claims.to_string())
    );
    let der = key.sign(input.as_bytes()).unwrap();
    // SEQUENCE { INTEGER r, INTEGER s }
    let mut i = 2;
    let mut fixed = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        fixed.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        fixed.extend_from_slice(int);
        i += 2 + len;
    }
    format!("{input}.{}", B64URL.encode(fixed))
}

/// SHA-256 by shelling out (the test crate has no digest dependency).
fn sha256(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = text(&out.stdout);
    (0..32)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect()
}

#[test]
fn token_request_tokens_work_until_their_pod_or_account_goes_and_forgeries_fail() {
    let api = ApiServer::start();
    api.kubectl_ok(&["create", "serviceaccount", "robot"]);
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    api.kubectl_ok(&[
        "run",
        "p",
        "--image=busybox",
        "--restart=Never",
        "--overrides",
        r#"{"spec":{"serviceAccountName":"robot"}}"#,
    ]);
    let pod_uid = api.kubectl_ok(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"]);
    let (code, tr) = api.http(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        "application/json",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 3600,
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod_uid}}})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(code, 201, "{tr}");
    let pod_token = tr["status"]["token"].as_str().unwrap().to_string();
    assert!(tr["status"]["expirationTimestamp"].is_string());
    let u = whoami(&api, &pod_token).expect("the pod-bound token authenticates");
    assert_eq!(u["username"], "system:serviceaccount:default:robot");
    assert_eq!(
        u["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"])
    );
    assert!(u["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:serviceaccounts:default")));
    // Its RBAC: view in default.
    let (code, _) = with_token(
        &api,
        &pod_token,
        "GET",
        "/api/v1/namespaces/default/pods",
        &Value::Null,
    );
    assert_eq!(code, 200);
    let (code, body) = with_token(
        &api,
        &pod_token,
        "DELETE",
        "/api/v1/namespaces/default/pods/p",
        &Value::Null,
    );
    assert_eq!(code, 403, "{body}");
    // TokenReview agrees, and a too-short expiry is invalid.
    let (code, review) = api.http(
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "application/json",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": pod_token}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(code, 201);
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let (code, bad) = api.http(
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        "application/json",
        br#"{"spec": {"expirationSeconds": 60}}"#,
    );
    assert_eq!(code, 422, "{bad}");

    // kubectl create token: an account-only token.
    let sa_token = api
        .kubectl_ok(&["create", "token", "robot"])
        .trim()
        .to_string();
    assert!(whoami(&api, &sa_token).is_ok());

    // Forged: the claims changed under the same signature.
    let parts: Vec<&str> = sa_token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    claims["kubernetes.io"]["serviceaccount"]["name"] = json!("default");
    claims["sub"] = json!("system:serviceaccount:default:default");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64URL.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(whoami(&api, &forged), Err(401));
    // Signed by another key.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let mut good: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(whoami(&api, &sign_jwt(&other, &good)), Err(401));
    // Signed by the real key but expired.
    let sa_key = std::fs::read_to_string(api.dir.path().join("server/sa.key")).unwrap();
    assert!(
        whoami(&api, &sign_jwt(&sa_key, &good)).is_ok(),
        "re-signing the same claims works"
    );
    good["exp"] = json!(good["iat"].as_i64().unwrap() - 3600);
    assert_eq!(whoami(&api, &sign_jwt(&sa_key, &good)), Err(401));

    // The pod goes: its token stops working; the account token still works.
    api.kubectl_ok(&[
        "delete",
        "pod",
        "p",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    common::eventually(Duration::from_secs(30), "the pod to be gone", || {
        !api.kubectl(&["get", "pod", "p"]).status.success()
    });
    assert_eq!(whoami(&api, &pod_token), Err(401));
    assert!(whoami(&api, &sa_token).is_ok());
    // The account goes: its tokens stop working.
    api.kubectl_ok(&["delete", "serviceaccount", "robot"]);
    assert_eq!(whoami(&api, &sa_token), Err(401));
    // Discovery documents.
    let (code, oidc) = api.http("GET", "/.well-known/openid-configuration", "", b"");
    assert_eq!(code, 200);
    assert_eq!(
        oidc["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let (code, jwks) = api.http("GET", "/openid/v1/jwks", "", b"");
    assert_eq!(code, 200);
    assert_eq!(
        jwks["keys"][0]["kid"],
        json!(
            B64URL.encode(sha256(&rcgen::PublicKeyData::subject_public_key_info(
                &rcgen::KeyPair::from_pem(&sa_key).unwrap()
            )))
        )
    );
}

#[test]
fn bootstrap_tokens_authenticate_as_system_bootstrap() {
    let api = ApiServer::start();
    let secret = |id: &str, expiration: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
            "stringData": {"token-id": id, "token-secret": "0123456789abcdef",
                "usage-bootstrap-authentication": "true", "expiration": expiration,
                "auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token"}})
        .to_string()
    };
    for (id, exp) in [
        ("abcdef", "2999-01-01T00:00:00Z"),
        ("expire", "2000-01-01T00:00:00Z"),
    ] {
        let (code, body) = api.http(
            "POST",
            "/api/v1/namespaces/kube-system/secrets",
            "application/json",
            secret(id, exp).as_bytes(),
        );
        assert_eq!(code, 201, "{body}");
    }
    let u = whoami(&api, "abcdef.0123456789abcdef").expect("the bootstrap token authenticates");
    assert_eq!(u["username"], "system:bootstrap:abcdef");
    assert_eq!(
        u["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:kubeadm:default-node-token",
            "system:authenticated"
        ])
    );
    // kubeadm's binding lets it create CSRs' parent permission check pass: can-i via SSAR.
    let (code, ssar) = with_token(
        &api,
        "abcdef.0123456789abcdef",
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": "certificates.k8s.io", "resource": "certificatesigningrequests", "verb": "create"}}}),
    );
    assert_eq!(code, 201, "{ssar}");
    assert_eq!(ssar["status"]["allowed"], true);
    assert_eq!(whoami(&api, "abcdef.0123456789abcdeX"), Err(401));
    assert_eq!(whoami(&api, "expire.0123456789abcdef"), Err(401));
}

#[test]
fn rbac_escalation_is_refused_without_escalate_or_bind() {
    let api = ApiServer::start();
    let ca = cluster_ca(&api);
    let lead = kubeconfig_for(&api, "lead", &client_cert((&ca.0, &ca.1), "lead", &[]));
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "lead-admin",
        "--clusterrole=admin",
        "--user=lead",
    ]);
    // lead holds view (through admin) in default: may hand it on.
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "create",
            "rolebinding",
            "dev-view",
            "--clusterrole=view",
            "--user=dev",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A role with permissions lead holds is fine; one with nodes (cluster-scoped, not held) is not.
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "create",
            "role",
            "cm-reader",
            "--verb=get",
            "--resource=configmaps",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Patching that role: adding nodes (cluster-scoped, not held) is refused as the create is and
    // changes nothing; adding secrets (held through admin) passes.
    for (ptype, patch) in [
        (
            "merge",
            r#"{"rules":[{"apiGroups":[""],"resources":["nodes"],"verbs":["get"]}]}"#,
        ),
        (
            "json",
            r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["nodes"],"verbs":["list"]}}]"#,
        ),
    ] {
        let out = kubectl_with(
            &api,
            &lead,
            &["patch", "role", "cm-reader", "--type", ptype, "-p", patch],
        );
        assert!(!out.status.success(), "a {ptype} patch escalated");
        assert!(
            text(&out.stderr)
                .contains("is attempting to grant RBAC permissions not currently held"),
            "{}",
            text(&out.stderr)
        );
    }
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "patch",
            "role",
            "cm-reader",
            "--type",
            "merge",
            "-p",
            r#"{"rules":[{"apiGroups":[""],"resources":["configmaps","secrets"],"verbs":["get"]}]}"#,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let role = api.kubectl_ok(&["get", "role", "cm-reader", "-o", "json"]);
    assert!(!role.contains("nodes"), "{role}");
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "create",
            "role",
            "node-reader",
            "--verb=get",
            "--resource=nodes",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains(r#"roles.rbac.authorization.k8s.io "node-reader" is forbidden: user "lead""#)
            && text(&out.stderr)
                .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        text(&out.stderr)
    );
    // Binding cluster-admin: refused; after the admin grants `bind` on it: allowed.
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "create",
            "rolebinding",
            "x",
            "--clusterrole=cluster-admin",
            "--user=dev",
        ],
    );
    assert!(
        !out.status.success(),
        "binding cluster-admin should be refused"
    );
    api.kubectl_ok(&[
        "create",
        "clusterrole",
        "bind-ca",
        "--verb=bind",
        "--resource=clusterroles.rbac.authorization.k8s.io",
        "--resource-name=cluster-admin",
    ]);
    api.kubectl_ok(&[
        "create",
        "rolebinding",
        "lead-bind",
        "--clusterrole=bind-ca",
        "--user=lead",
    ]);
    let out = kubectl_with(
        &api,
        &lead,
        &[
            "create",
            "rolebinding",
            "x",
            "--clusterrole=cluster-admin",
            "--user=dev",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A pod manifest `name` in `ns` with the given container securityContext and pod spec fields.
fn pod_file(dir: &std::path::Path, name: &str, ns: &str, sc: Value, spec: Value) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": sc}]},
    });
    for (k, v) in spec.as_object().unwrap() {
        pod["spec"][k] = v.clone();
    }
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, pod.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn a_restricted_namespace_refuses_a_privileged_pod() {
    let api = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    api.kubectl_ok(&["create", "namespace", "locked"]);
    api.kubectl_ok(&[
        "label",
        "namespace",
        "locked",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let bad = pod_file(
        dir.path(),
        "bad",
        "locked",
        json!({"privileged": true}),
        json!({}),
    );
    let err = api.kubectl_err(&["create", "-f", &bad]);
    assert!(
        err.contains(concat!(
            r#"pods "bad" is forbidden: violates PodSecurity "restricted:latest": "#,
            r#"allowPrivilegeEscalation != false (container "c" must set securityContext.allowPrivilegeEscalation=false), "#,
            r#"unrestricted capabilities (container "c" must set securityContext.capabilities.drop=["ALL"]), "#,
            r#"privileged (container "c" must not set securityContext.privileged=true), "#,
            r#"runAsNonRoot != true (pod or container "c" must set securityContext.runAsNonRoot=true), "#,
            r#"seccompProfile (pod or container "c" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
        )),
        "{err}"
    );
    assert!(
        api.kubectl(&["get", "pod", "bad", "-n", "locked"])
            .status
            .code()
            != Some(0)
    );

    let good = pod_file(
        dir.path(),
        "good",
        "locked",
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}),
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}),
    );
    api.kubectl_ok(&["create", "-f", &good]);
    api.kubectl_ok(&["get", "pod", "good", "-n", "locked"]);

    // warn=baseline admits a hostNetwork pod, and kubectl prints the warning.
    api.kubectl_ok(&["create", "namespace", "watched"]);
    api.kubectl_ok(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/warn=baseline",
    ]);
    let host = pod_file(
        dir.path(),
        "host",
        "watched",
        json!({}),
        json!({"hostNetwork": true}),
    );
    let out = api.kubectl(&["create", "-f", &host]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            r#"Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{}",
        text(&out.stderr)
    );
    api.kubectl_ok(&["get", "pod", "host", "-n", "watched"]);

    // Enforcing baseline there now warns about the existing pod.
    let out = api.kubectl(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(r#"existing pods in namespace "watched" violate the new PodSecurity enforce level "baseline:latest""#)
            && stderr.contains("host: host namespaces"),
        "{stderr}"
    );
}

/// The Node authorizer and NodeRestriction: a node's identity reads the secret its pod uses but
/// no other, and writes its own Node and not another node, nor delete another node's pod.
#[test]
fn a_node_is_refused_secrets_its_pods_do_not_use_and_other_nodes() {
    let api = ApiServer::start();
    let ca = cluster_ca(&api);
    let n1 = kubeconfig_for(
        &api,
        "n1",
        &client_cert((&ca.0, &ca.1), "system:node:n1", &["system:nodes"]),
    );
    let manifests = api.dir.path().join("node-authz.json");
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        node("n2"),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "stringData": {"k": "v"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "stringData": {"k": "v"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
    ]});
    std::fs::write(&manifests, list.to_string()).unwrap();
    api.kubectl_ok(&["apply", "-f", manifests.to_str().unwrap()]);
    // n1 registers itself, as a kubelet does.
    let own = api.dir.path().join("n1-node.json");
    std::fs::write(&own, node("n1").to_string()).unwrap();
    let out = kubectl_with(&api, &n1, &["create", "-f", own.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pod = api.dir.path().join("pod.json");
    std::fs::write(
        &pod,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
               "spec": {"nodeName": "n1", "automountServiceAccountToken": false,
                        "containers": [{"name": "c", "image": "busybox"}],
                        "volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}})
        .to_string(),
    )
    .unwrap();
    api.kubectl_ok(&["apply", "-f", pod.to_str().unwrap()]);

    let out = kubectl_with(&api, &n1, &["get", "secret", "s1", "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "secret/s1");
    let out = kubectl_with(&api, &n1, &["get", "secret", "s2"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            r#"secrets "s2" is forbidden: User "system:node:n1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'n1' and this object"#
        ),
        "{}",
        text(&out.stderr)
    );
    // Listing secrets at large is not a single-object read.
    let out = kubectl_with(&api, &n1, &["get", "secrets"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Forbidden") || text(&out.stderr).contains("forbidden"));

    // Another node's object: refused by NodeRestriction.
    let out = kubectl_with(&api, &n1, &["label", "node", "n2", "x=y"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(r#"node "n1" is not allowed to modify node "n2""#),
        "{}",
        text(&out.stderr)
    );
    let out = kubectl_with(&api, &n1, &["delete", "node", "n2"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    // A restricted label on its own Node is refused; a kubelet one is fine.
    let out = kubectl_with(
        &api,
        &n1,
        &[
            "label",
            "node",
            "n1",
            "node-role.kubernetes.io/control-plane=",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("is not allowed to modify labels: node-role.kubernetes.io/control-plane"),
        "{}",
        text(&out.stderr)
    );
    let out = kubectl_with(
        &api,
        &n1,
        &["label", "node", "n1", "kubernetes.io/os=linux"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Its own Node it may update. (kubectl patch --subresource=status first GETs the
    // subresource, which the system:node rules do not grant, as upstream.)
    let out = kubectl_with(
        &api,
        &n1,
        &["annotate", "node", "n1", "capstan.test/seen=yes"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A pod on another node: its status is not n1's to write.
    let other = api.dir.path().join("pod2.json");
    std::fs::write(
        &other,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2"},
               "spec": {"nodeName": "n2", "automountServiceAccountToken": false,
                        "containers": [{"name": "c", "image": "busybox"}]}})
        .to_string(),
    )
    .unwrap();
    api.kubectl_ok(&["apply", "-f", other.to_str().unwrap()]);
    let out = kubectl_with(&api, &n1, &["delete", "pod", "p2", "--wait=false"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains(r#"node "n1" can only delete pods with spec.nodeName set to itself"#),
        "{}",
        text(&out.stderr)
    );
}
