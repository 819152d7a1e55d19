//! Pod volumes end to end, seen from inside the containers: `capstan kubelet` with the built-in
//! runtime runs a pod with every volume type — configMap, secret, downwardAPI, projected,
//! emptyDir on disk and in memory, hostPath (type Directory and DirectoryOrCreate), a subPath and
//! a readOnly mount — whose container prints what it finds to its log. Then:
//! - a `kubectl apply` changing the ConfigMap shows up in the running container's volume (the
//!   object cache wakes the pod's worker, which rewrites the volume through the atomic writer);
//! - a pod whose ConfigMap does not exist waits in ContainerCreating and starts once it is
//!   created;
//! - a hostPath whose type check fails, and a serviceAccountToken projection whose service account
//!   was deleted after the pod was created (so the TokenRequest is a 404),
//!   keep their pods in ContainerCreating with upstream's messages.
//!
//! Everything the test makes is removed by the node's guard, also when an assertion fails.

mod common;

use std::time::Duration;

use common::kubelet::{container_status, get_pod, Node, NodeOptions};
use common::{eventually, ApiServer};

fn waiting(api: &ApiServer, pod: &str) -> (String, String) {
    get_pod(api, "default", pod)
        .map(|p| {
            let w = &container_status(&p, "app")["state"]["waiting"];
            (
                w["reason"].as_str().unwrap_or("").to_string(),
                w["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

#[test]
fn volumes_inside_containers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let name = format!("kubelet-volumes-{}", std::process::id());
    let mut node = Node::start(&api, &name, NodeOptions::default());
    node.wait_ready(&api);
    let host_dir = node.dir.join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("host.txt"), "from the host").unwrap();
    let created_dir = node.dir.join("made-by-kubelet");
    let objects = |greeting: &str| {
        format!(
            r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: "{greeting}", mode: "fast"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: "s3cret"}}
"#
        )
    };
    node.apply(&api, "objects.yaml", &objects("hello"));
    let script = r#"
show() { echo "$1=$(cat $2 2>&1 | tr '\n' ' ')"; }
show CM /cfg/greeting
show SECRET /sec/password
show DOWN_NAME /down/name
show DOWN_LABELS /down/labels
show PROJ_GREET /proj/greet
show PROJ_PASS /proj/pass
show PROJ_NS /proj/ns
show HOST /host/host.txt
show SUBPATH /etc/greeting-file
echo "MEM=$(grep ' /mem ' /proc/mounts | cut -d' ' -f3)"
echo "SECFS=$(grep ' /sec ' /proc/mounts | cut -d' ' -f3)"
echo "DISK=$(grep ' /scratch ' /proc/mounts | cut -d' ' -f3)"
echo data > /scratch/file && show SCRATCH /scratch/file
touch /ro/x 2>/dev/null && echo RO=writable || echo RO=denied
touch /created/x && echo CREATED=ok
trap 'exit 0' TERM
while true; do show LIVE /cfg/greeting; sleep 1; done
"#;
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {{app: vols}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: cfg, configMap: {{name: settings}}}}
  - {{name: sec, secret: {{secretName: creds}}}}
  - name: down
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
  - name: proj
    projected:
      sources:
      - configMap: {{name: settings, items: [{{key: greeting, path: greet}}]}}
      - secret: {{name: creds, items: [{{key: password, path: pass}}]}}
      - downwardAPI: {{items: [{{path: ns, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 16Mi}}}}
  - {{name: host, hostPath: {{path: "{host}", type: Directory}}}}
  - {{name: created, hostPath: {{path: "{created}", type: DirectoryOrCreate}}}}
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", {script:?}]
    volumeMounts:
    - {{name: cfg, mountPath: /cfg}}
    - {{name: cfg, mountPath: /etc/greeting-file, subPath: greeting}}
    - {{name: sec, mountPath: /sec}}
    - {{name: down, mountPath: /down}}
    - {{name: proj, mountPath: /proj}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: scratch, mountPath: /ro, readOnly: true}}
    - {{name: mem, mountPath: /mem}}
    - {{name: host, mountPath: /host}}
    - {{name: created, mountPath: /created}}
"#,
        host = host_dir.display(),
        created = created_dir.display(),
    );
    node.apply(&api, "vols.yaml", &pod);
    eventually(
        Duration::from_secs(90),
        "the volume pod prints its files",
        || {
            node.assert_alive();
            node.container_log("default", "vols", "app", 0)
                .contains("LIVE=")
        },
    );
    let log = || node.container_log("default", "vols", "app", 0);
    let out = log();
    for want in [
        "CM=hello",
        "SECRET=s3cret",
        "DOWN_NAME=vols",
        "DOWN_LABELS=app=\"vols\"",
        "PROJ_GREET=hello",
        "PROJ_PASS=s3cret",
        "PROJ_NS=default",
        "HOST=from the host",
        "SUBPATH=hello",
        "MEM=tmpfs",
        "SECFS=tmpfs",
        "SCRATCH=data",
        "RO=denied",
        "CREATED=ok",
    ] {
        assert!(
            out.contains(want),
            "expected {want:?} in the container's log:\n{out}"
        );
    }
    assert!(
        !out.contains("DISK=tmpfs"),
        "a disk emptyDir is not a tmpfs:\n{out}"
    );
    assert!(
        created_dir.join("x").exists(),
        "DirectoryOrCreate made the host dir"
    );
    assert!(host_dir.exists());

    // A ConfigMap update reaches the running container's volume; env does not change.
    node.apply(&api, "objects.yaml", &objects("updated"));
    let applied = std::time::Instant::now();
    eventually(
        Duration::from_secs(15),
        "the updated greeting inside the running container",
        || log().contains("LIVE=updated"),
    );
    // A figure, not an assertion (the container prints once a second).
    eprintln!(
        "configMap update visible in the container after {:?}",
        applied.elapsed()
    );
    let p = get_pod(&api, "default", "vols").unwrap();
    assert_eq!(container_status(&p, "app")["restartCount"], 0, "{p}");

    // A missing ConfigMap: ContainerCreating until it exists.
    let waiter = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: waiter}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: cfg, configMap: {{name: later}}}}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /cfg/key; echo; trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: badhost}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes: [{{name: h, hostPath: {{path: "{file}", type: Directory}}}}]
  containers:
  - {{name: app, image: busybox, command: ["sleep", "3600"], volumeMounts: [{{name: h, mountPath: /h}}]}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: vanishing}}
---
apiVersion: v1
kind: Pod
metadata: {{name: token}}
spec:
  serviceAccountName: vanishing
  terminationGracePeriodSeconds: 1
  volumes:
  - name: t
    projected: {{sources: [{{serviceAccountToken: {{path: token, audience: vault}}}}]}}
  containers:
  - {{name: app, image: busybox, command: ["sleep", "3600"], volumeMounts: [{{name: t, mountPath: /t}}]}}
"#,
        file = host_dir.join("host.txt").display(),
    );
    node.apply(&api, "waiter.yaml", &waiter);
    // The token pod's account goes away before the pod reaches the node (ServiceAccount
    // admission wants it to exist at creation): bound afterwards, its TokenRequest is a 404.
    api.kubectl_ok(&["delete", "serviceaccount", "vanishing"]);
    let binding = format!(
        r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"token"}},"target":{{"kind":"Node","name":"{name}"}}}}"#
    );
    let (code, body) = api.http(
        "POST",
        "/api/v1/namespaces/default/pods/token/binding",
        "application/json",
        binding.as_bytes(),
    );
    assert_eq!(code, 201, "binding the token pod: {body}");
    eventually(
        Duration::from_secs(30),
        "the pods with unusable volumes wait in ContainerCreating",
        || {
            let (r1, m1) = waiting(&api, "waiter");
            let (r2, m2) = waiting(&api, "badhost");
            let (r3, m3) = waiting(&api, "token");
            r1 == "ContainerCreating"
                && m1.contains("configmaps \"later\" not found")
                && r2 == "ContainerCreating"
                && m2.contains("hostPath type check failed")
                && m2.contains("is not a directory")
                && r3 == "ContainerCreating"
                && m3.contains("failed to fetch token")
        },
    );
    node.apply(
        &api,
        "later.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: later}\ndata: {key: arrived}\n",
    );
    eventually(
        Duration::from_secs(30),
        "the waiting pod starts once its ConfigMap exists",
        || {
            node.container_log("default", "waiter", "app", 0)
                .contains("arrived")
        },
    );

    api.kubectl_ok(&[
        "delete",
        "pod",
        "vols",
        "waiter",
        "badhost",
        "token",
        "--wait=true",
        "--timeout=60s",
    ]);
    eventually(
        Duration::from_secs(15),
        "no supervisor is left for the deleted pods",
        || node.supervisor_pids().is_empty(),
    );
    let leftovers: Vec<_> = std::fs::read_dir(node.root_dir.join("pods"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "pod dirs left behind: {leftovers:?}");
    drop(node);
}
