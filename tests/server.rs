//! `capstan server` end to end: one process runs the API server, controller-manager, scheduler,
//! kubelet and proxy on this host, driven only through `kubectl` and plain HTTP. One server is
//! shared by the steps of the main test (CI has two cores): the node turns Ready, a Deployment of
//! busybox httpd pods runs through the scheduler and controllers, a ClusterIP Service reaches the
//! pods from the host and from a pod, SIGTERM leaves the pods (and the Service rules) running and
//! a restart adopts them unchanged, and `capstan uninstall` leaves no trace on the host.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::eventually;
use common::server::Server;
use serde_json::Value;

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

/// `GET /` on `addr`; the body, or None when nothing answered.
fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.trim().to_string())
}

/// Waits until the Service answers from every pod named in `pods`.
fn wait_service_reaches(server: &mut Server, addr: SocketAddr, pods: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    eventually(
        Duration::from_secs(60),
        "the Service answers from every pod",
        || {
            server.assert_alive();
            if let Some(body) = http_get(addr) {
                if let Some(pod) = body.strip_prefix("hello-from-") {
                    seen.insert(pod.to_string());
                }
            }
            pods.iter().all(|p| seen.contains(p))
        },
    );
}

/// The web pods: name → (container ID, restart count, phase, ready).
fn web_pods(server: &Server) -> Vec<(String, String, i64, String, bool)> {
    let v = server.kubectl_json(&["get", "pods", "-l", "app=web"]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let c = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                c["containerID"].as_str().unwrap_or("").to_string(),
                c["restartCount"].as_i64().unwrap_or(-1),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
                common::kubelet::is_ready(p),
            )
        })
        .collect()
}

fn wait_web_running(server: &mut Server, n: usize) -> Vec<(String, String, i64, String, bool)> {
    let mut last = Vec::new();
    eventually(
        Duration::from_secs(90),
        &format!("{n} web pods Running and Ready"),
        || {
            server.assert_alive();
            last = web_pods(server);
            last.len() == n && last.iter().all(|p| p.3 == "Running" && p.4)
        },
    );
    last
}

fn service_addr(server: &Server) -> SocketAddr {
    let svc = server.kubectl_json(&["get", "service", "web"]);
    let ip = svc["spec"]["clusterIP"].as_str().unwrap();
    assert!(
        ip.starts_with(&server.service_prefix),
        "ClusterIP {ip} is outside the service CIDR {}0/24",
        server.service_prefix
    );
    format!("{ip}:80").parse().unwrap()
}

#[test]
fn single_node_cluster_runs_restarts_and_uninstalls() {
    let mut server = Server::start();
    server.wait_ready();

    // The join token and its Secret, and the node's network from node IPAM.
    let token = std::fs::read_to_string(server.data_dir.join("server/token")).unwrap();
    let (id, secret) = token.trim().split_once('.').expect("<id>.<secret>");
    assert_eq!((id.len(), secret.len()), (6, 16), "token {token:?}");
    let s = server.kubectl_json(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
    assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
    let node = server.kubectl_json(&["get", "node", &server.node_name]);
    assert_eq!(
        node["spec"]["podCIDR"],
        format!("{}0/24", server.subnet_prefix)
    );
    let conf: Value = serde_json::from_slice(
        &std::fs::read(server.cni_conf_dir.join("10-capstan.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conf["plugins"][0]["bridge"], server.bridge.as_str());

    // A Deployment behind a Service: scheduled, run, reachable from the host by ClusterIP.
    server.apply("app.yaml", APP);
    let before = wait_web_running(&mut server, 2);
    let addr = service_addr(&server);
    let names: BTreeSet<String> = before.iter().map(|p| p.0.clone()).collect();
    wait_service_reaches(&mut server, addr, &names);
    // And from a pod, through the bridge (hairpin when the proxy picks the pod itself).
    let from = before[0].0.clone();
    let request = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} {}",
        addr.ip(),
        addr.port()
    );
    eventually(Duration::from_secs(30), "the Service answers a pod", || {
        let out = server.kubectl(&["exec", &from, "--", "sh", "-c", &request]);
        String::from_utf8_lossy(&out.stdout).contains("hello-from-web-")
    });

    // SIGTERM: the process ends cleanly; the pods and the Service's rules stay.
    let supervisors = server.supervisor_pids();
    assert_eq!(supervisors.len(), 2, "one supervisor per pod");
    let status = server.sigterm();
    assert!(status.success(), "capstan server exited with {status}");
    assert!(
        supervisors
            .iter()
            .all(|p| Path::new(&format!("/proc/{p}")).exists()),
        "pod supervisors ended with the server"
    );
    assert!(
        http_get(addr).is_some(),
        "the Service stopped answering while the server was down"
    );

    // Restart: every object back, the same containers, no restarts.
    server.restart();
    server.wait_ready();
    let after = wait_web_running(&mut server, 2);
    let key = |v: &[(String, String, i64, String, bool)]| {
        v.iter()
            .map(|p| (p.0.clone(), p.1.clone(), p.2))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(key(&after), key(&before), "pods changed across the restart");
    assert!(
        after.iter().all(|p| p.2 == 0),
        "containers restarted: {after:?}"
    );
    assert_eq!(service_addr(&server), addr, "the Service changed");
    server.kubectl_ok(&["get", "deployment", "web"]);
    wait_service_reaches(&mut server, addr, &names);
    // The restarted control plane still acts: a third replica runs.
    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    wait_web_running(&mut server, 3);

    // Uninstall: nothing of the server is left on the host.
    let out = server.uninstall();
    assert!(
        out.status.success(),
        "capstan uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_trace(&server);
    // Idempotent.
    let out = server.uninstall();
    assert!(
        out.status.success(),
        "a second capstan uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks every kind of trace a server leaves: processes, cgroups, mounts, network namespaces,
/// iptables chains and rules, the bridge, the CNI configuration and the data dir.
fn assert_no_trace(server: &Server) {
    let data = format!("{}/", server.data_dir.display());
    let procs: Vec<String> = common::processes()
        .into_values()
        .map(|p| p.cmdline)
        .filter(|c| c.contains(&data))
        .collect();
    assert!(procs.is_empty(), "processes left: {procs:?}");
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let d = h.path().join(server.cgroup_root.trim_start_matches('/'));
        assert!(!d.exists(), "cgroup left: {}", d.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&data),
        "mounts left under {data}: {}",
        mounts
            .lines()
            .filter(|l| l.contains(&data))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for ns in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = ns.file_name().to_string_lossy().into_owned();
        let out = Command::new("ip")
            .args(["-n", &name, "-o", "-4", "addr"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains(&format!(" {}", server.subnet_prefix)),
            "network namespace {name} of the server is left: {text}"
        );
    }
    for table in ["nat", "filter"] {
        let out = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let left: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(":KUBE-SERVICES")
                    || l.starts_with(":KUBE-POSTROUTING")
                    || l.contains(&server.subnet_prefix)
                    || l.contains(&server.service_prefix)
            })
            .collect();
        assert!(left.is_empty(), "iptables {table} left: {left:?}");
    }
    let link = Command::new("ip")
        .args(["link", "show", &server.bridge])
        .output()
        .unwrap();
    assert!(!link.status.success(), "bridge {} left", server.bridge);
    assert!(
        !server.cni_conf_dir.join("10-capstan.conflist").exists(),
        "the CNI configuration is left"
    );
    assert!(!server.data_dir.exists(), "the data dir is left");
}

#[test]
fn uninstall_of_nothing_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["uninstall", "--data-dir"])
        .arg(dir.path().join("never-made"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
