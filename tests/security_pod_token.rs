//! A pod talks to the API with its own ServiceAccount token, as in-cluster clients do: the
//! ServiceAccount admission plugin gives the pod the `kube-api-access-*` volume (bound token,
//! `ca.crt` of the cluster CA, namespace), the kubelet projects it and sets
//! `KUBERNETES_SERVICE_HOST/PORT` to the `kubernetes` Service, the proxy's rules lead that
//! ClusterIP to the API server, and RBAC decides with the account's Role. The pod runs the host's
//! `kubectl` (hostPath) with no kubeconfig, so kubectl uses its in-cluster configuration and
//! verifies the server with the mounted `ca.crt`.
//!
//! The server listens on and advertises an address of a port-less bridge the test creates (a pod's
//! network namespace cannot reach the host's loopback), removed by a guard also on failure.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::eventually;
use common::netlab::DummyAddress;
use common::server::Server;
use serde_json::Value;

const NS: &str = "tokens";
const SA: &str = "lister";

fn rbac() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: other}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {SA}, namespace: {NS}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-lister, namespace: {NS}}}
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: lister-lists-pods, namespace: {NS}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-lister}}
subjects:
- {{kind: ServiceAccount, name: {SA}, namespace: {NS}}}
"#
    )
}

/// The pod: three kubectl calls with in-cluster configuration, each followed by its exit code.
fn pod() -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: incluster, namespace: {NS}}}
spec:
  serviceAccountName: {SA}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: kubectl
    image: busybox
    env: [{{name: HOME, value: /tmp}}]
    command:
    - sh
    - -c
    - |
      echo "service=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
      echo "namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
      echo "== pods"; /kubectl get pods -o name 2>&1; echo "rc=$?"
      echo "== secrets"; /kubectl get secrets 2>&1; echo "rc=$?"
      echo "== other"; /kubectl get pods -n other 2>&1; echo "rc=$?"
      echo "== end"
    volumeMounts:
    - {{name: kubectl, mountPath: /kubectl, readOnly: true}}
  volumes:
  - name: kubectl
    hostPath: {{path: /usr/bin/kubectl, type: File}}
"#
    )
}

/// The section of the pod's log after `== name`, up to the next section.
fn section<'a>(log: &'a str, name: &str) -> &'a str {
    let start = log
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name} in the pod's log:\n{log}"));
    let rest = &log[start + name.len() + 4..];
    &rest[..rest.find("== ").unwrap_or(rest.len())]
}

#[test]
fn pod_uses_its_service_account_token_in_cluster() {
    let pid = std::process::id() as usize;
    let prefix = common::free_subnet(pid * 11 + 3000);
    let host: Ipv4Addr = format!("{prefix}1").parse().unwrap();
    // Declared before the server, so it is removed after the server's uninstall.
    let _dummy = DummyAddress::new(&format!("ksa{}", pid % 100_000), host);
    let mut server = Server::start_on(Some(host), &[]);
    server.wait_ready();
    server.apply("rbac.yaml", &rbac());

    // The admission plugin's view (server-side dry run): account, volume, mounts.
    let manifest = server.dir.join("pod.yaml");
    std::fs::write(&manifest, pod()).unwrap();
    let dry: Value = serde_json::from_str(&server.kubectl_ok(&[
        "create",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        manifest.to_str().unwrap(),
    ]))
    .unwrap();
    let vols = dry["spec"]["volumes"].as_array().unwrap();
    let token_vol = vols
        .iter()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .unwrap_or_else(|| panic!("no kube-api-access volume in {}", dry["spec"]));
    assert_eq!(
        token_vol["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
        3607
    );
    assert_eq!(
        dry["spec"]["containers"][0]["volumeMounts"][1]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );

    // A missing account is refused with upstream's message.
    let ghost = pod().replace(
        &format!("serviceAccountName: {SA}"),
        "serviceAccountName: ghost",
    );
    let ghost_file = server.dir.join("ghost.yaml");
    std::fs::write(&ghost_file, ghost).unwrap();
    let out = server.kubectl(&["create", "-f", ghost_file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                r#"Error from server (Forbidden): error when creating "{}": pods "incluster" is forbidden: error looking up service account {NS}/ghost: serviceaccount "ghost" not found"#,
                ghost_file.display()
            )),
        "a pod of a missing account should be refused; kubectl said: {err}"
    );

    server.kubectl_ok(&["create", "-f", manifest.to_str().unwrap()]);
    let mut phase = String::new();
    eventually(
        Duration::from_secs(120),
        "the in-cluster kubectl pod completes",
        || {
            server.assert_alive();
            let p = server.kubectl_json(&["get", "pod", "incluster", "-n", NS]);
            phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
            phase == "Succeeded" || phase == "Failed"
        },
    );
    // The log through the API (kubectl logs → apiserver → kubelet).
    let log = server.kubectl_ok(&["logs", "incluster", "-n", NS]);
    assert_eq!(phase, "Succeeded", "the pod failed; its log:\n{log}");

    let svc = server.kubectl_json(&["get", "service", "kubernetes", "-n", "default"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        log.contains(&format!("service={cluster_ip}:443\n")),
        "KUBERNETES_SERVICE_HOST/PORT should name the kubernetes Service {cluster_ip}:443; log:\n{log}"
    );
    assert!(log.contains(&format!("namespace={NS}\n")), "log:\n{log}");

    let pods = section(&log, "pods");
    assert!(
        pods.contains("pod/incluster\n") && pods.contains("rc=0\n"),
        "the account may list pods in its namespace; log:\n{log}"
    );
    let secrets = section(&log, "secrets");
    assert!(
        secrets.contains(&format!(
            r#"Error from server (Forbidden): secrets is forbidden: User "system:serviceaccount:{NS}:{SA}" cannot list resource "secrets" in API group "" in the namespace "{NS}""#
        )) && secrets.contains("rc=1\n"),
        "listing secrets should be Forbidden; log:\n{log}"
    );
    let other = section(&log, "other");
    assert!(
        other.contains(&format!(
            r#"Error from server (Forbidden): pods is forbidden: User "system:serviceaccount:{NS}:{SA}" cannot list resource "pods" in API group "" in the namespace "other""#
        )) && other.contains("rc=1\n"),
        "listing pods of another namespace should be Forbidden; log:\n{log}"
    );
}
