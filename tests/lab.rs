//! The multi-node end-to-end suite (issue 11): `capstan lab up --nodes 3` — a `capstan server`
//! and two `capstan agent`s, each node in a network namespace of its own, joined with the
//! server's bootstrap token — driven only through the installed `kubectl` and plain HTTP:
//!
//! - the three nodes are Ready, the agents as `system:node:<name>` with CSR-issued certificates;
//! - a 3-replica deployment of busybox httpd spreads over the nodes (a topology spread
//!   constraint, as users write it);
//! - a ClusterIP Service reaches every replica by its DNS name from a pod on an agent node
//!   (cluster DNS through the `kube-dns` Service, the proxy's rules, host-gw pod routes);
//! - a NodePort answers on every node's address from the host;
//! - `kubectl logs`, `exec` and `port-forward` reach pods on agent nodes (the API server
//!   verifies their CSR-issued serving certificates);
//! - a rolling update to another image tag serves every request of a client loop that never
//!   retries (readiness probe, preStop sleep, maxUnavailable 0, as users write it);
//! - restarting the server loses nothing: the same objects, pods, container IDs, restart counts;
//! - stopping an agent turns its node NotReady and its pods are recreated on the other nodes
//!   (after the lab's shortened node-monitor grace period and default tolerations; the spread
//!   constraint honours taints);
//! - `lab down` leaves the host clean: no new network namespaces (nodes' or pods'), links,
//!   bridge, host iptables rules, processes, mounts, cgroups or data dir.
//!
//! The lab's nodes pull `busybox` through the suite's registry, which listens on loopback: the
//! test forwards the host's lab-bridge address to it, as a user would serve a mirror there.
//! Needs root.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::eventually;
use common::netlab::Forwarder;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_capstan");

/// A lab brought up by the test, brought down by `Drop` (also when the test fails).
struct Lab {
    dir: PathBuf,
    name: String,
    kubeconfig: PathBuf,
    down: bool,
}

impl Lab {
    fn down(&mut self) -> Output {
        self.down = true;
        Command::new(BIN)
            .args(["lab", "down", "--data-dir"])
            .arg(&self.dir)
            .output()
            .expect("running capstan lab down")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let cache = self.dir.with_extension("kube-cache");
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl's JSON")
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 0..3 {
            let p = self.dir.join(format!("{}-{i}.log", self.name));
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out += &format!("--- {}\n", p.display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if !self.down {
            let _ = self.down();
        }
        let _ = std::fs::remove_dir_all(self.dir.with_extension("kube-cache"));
    }
}

/// A plain HTTP GET; the body.
fn http_get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

fn pods(lab: &Lab, selector: &str) -> Vec<Value> {
    lab.json(&["get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn manifest(name_prefix: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        nodeTaintsPolicy: Honor
        labelSelector: {{matchLabels: {{app: web}}}}
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"]
        readinessProbe:
          httpGet: {{path: /, port: 8080}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {{command: ["sleep", "5"]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-np}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  nodeName: {name_prefix}-1
  containers:
  - name: c
    image: busybox
    command: ["sleep", "3600"]
"#
    )
}

fn sh(c: &str) -> String {
    String::from_utf8_lossy(&Command::new("sh").args(["-c", c]).output().unwrap().stdout)
        .into_owned()
}

/// The host's iptables rules and chains, without counters.
fn host_rules() -> std::collections::BTreeSet<String> {
    sh("iptables-save 2>/dev/null")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

/// The named network namespaces (`ip netns list`: the nodes' and the pods' pins).
fn netns_names() -> std::collections::BTreeSet<String> {
    sh("ip netns list")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Traces of the lab on the host, by kind (empty when clean): network namespaces (the nodes' and
/// the pods') and host iptables rules or chains that were not there before (the FORWARD rule),
/// links, mounts, processes, cgroups, and the data dir (CNI configuration, cache and IPAM state,
/// pod logs and runtime state all live under it).
fn traces(
    dir: &Path,
    name: &str,
    netns_before: &std::collections::BTreeSet<String>,
    rules_before: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut found = Vec::new();
    for r in host_rules().difference(rules_before) {
        found.push(format!("host iptables {r}"));
    }
    for n in netns_names().difference(netns_before) {
        found.push(format!("netns {n}"));
    }
    for l in sh("ip -o link show").lines() {
        if l.contains(&format!(" {name}-")) {
            found.push(format!("link {l}"));
        }
    }
    let d = dir.to_string_lossy().into_owned();
    if sh("cat /proc/mounts").contains(&d) {
        found.push("mounts".into());
    }
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(p.path().join("cmdline")) {
            if String::from_utf8_lossy(&c).contains(&d) {
                found.push(format!("process {}", p.file_name().to_string_lossy()));
            }
        }
    }
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for i in 0..3 {
            let c = h.path().join(format!("capstan-lab-{name}-{i}"));
            if c.exists() {
                found.push(format!("cgroup {}", c.display()));
            }
        }
    }
    if dir.exists() {
        found.push(format!("data dir {}", dir.display()));
    }
    found
}

#[test]
fn three_node_lab() {
    let pid = std::process::id();
    let name = format!("lt{}", pid % 100_000);
    let octet = 100 + pid % 100;
    let cidr = format!("10.89.{octet}.0/24");
    let host = format!("10.89.{octet}.1");
    let base = std::env::temp_dir().join(format!("capstan-lab-test-{pid}"));
    let dir = base.join("lab");
    let _ = std::fs::remove_dir_all(&base);
    let netns_before = netns_names();
    let rules_before = host_rules();
    // The mirror: docker.io → the host's lab address, forwarded to the suite's registry.
    let certs = base.join("certs.d/docker.io");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::write(
        certs.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{host}:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();

    let mut lab = Lab {
        dir: dir.clone(),
        name: name.clone(),
        kubeconfig: dir.join("admin.kubeconfig"),
        down: false,
    };
    let up = Command::new(BIN)
        .args([
            "lab",
            "up",
            "--nodes",
            "3",
            "--name",
            &name,
            "--bridge-cidr",
            &cidr,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--registry-config-dir")
        .arg(base.join("certs.d"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "lab up failed: {stdout}{}\n{}",
        String::from_utf8_lossy(&up.stderr),
        lab.logs()
    );
    assert!(
        stdout.contains(&lab.kubeconfig.display().to_string()),
        "{stdout}"
    );
    assert!(stdout.contains(&host), "{stdout}");
    let _mirror = Forwarder::start(&format!("{host}:5000"), "127.0.0.1:5000");

    // Three Ready nodes; the agents are their own nodes' identities.
    let nodes = lab.json(&["get", "nodes"]);
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let csrs = lab.json(&["get", "csr"]);
    let approved_client = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet")
        .count();
    assert!(
        approved_client >= 2,
        "the agents bootstrap their client certificates"
    );

    let manifest_path = base.join("web.yaml");
    std::fs::write(&manifest_path, manifest(&name)).unwrap();
    lab.kubectl_ok(&["apply", "-f", &manifest_path.to_string_lossy()]);

    // Spread over the nodes, all Ready.
    eventually(Duration::from_secs(120), "3 ready web pods", || {
        let p = pods(&lab, "app=web");
        p.len() == 3 && p.iter().all(ready)
    });
    let web = pods(&lab, "app=web");
    let mut on: Vec<&str> = web
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    on.sort();
    on.dedup();
    assert_eq!(on.len(), 3, "one replica per node");
    let hostnames: Vec<String> = web
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();

    // By DNS name, from a pod on an agent node, every replica answers.
    eventually(Duration::from_secs(60), "the client pod running", || {
        lab.json(&["get", "pod", "client"])["status"]["phase"] == "Running"
    });
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        // busybox-static's wget crashes in this image; nc speaks HTTP/1.0 as well.
        let out = lab.kubectl(&[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web.default.svc.cluster.local 80 | tail -1",
        ]);
        // An empty answer is a request that failed (the client's node may sync the endpoints
        // that just turned ready a few ms after the API shows them): not a replica, try again.
        let replica = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !replica.is_empty() {
            seen.insert(replica);
        }
        if seen.len() == 3 {
            break;
        }
    }
    let want: std::collections::BTreeSet<String> = hostnames.iter().cloned().collect();
    assert_eq!(
        seen, want,
        "every replica reached through the Service's DNS name"
    );

    // The NodePort on every node.
    let np = lab.json(&["get", "service", "web-np"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap();
    for i in 0..3 {
        let addr = format!("10.89.{octet}.{}:{np}", 2 + i);
        eventually(
            Duration::from_secs(20),
            &format!("NodePort on {addr}"),
            || http_get(&addr).is_ok_and(|b| b.starts_with("HTTP/1.0 200") || b.contains(" 200 ")),
        );
    }

    // logs and exec on a pod of an agent node.
    let remote = web
        .iter()
        .find(|p| p["spec"]["nodeName"] != format!("{name}-0"))
        .unwrap();
    let remote = remote["metadata"]["name"].as_str().unwrap();
    assert!(lab.kubectl_ok(&["logs", remote]).contains("serving"));
    assert_eq!(
        lab.kubectl_ok(&["exec", remote, "--", "cat", "/www/index.html"])
            .trim(),
        remote
    );

    let mut pf = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["port-forward", &format!("pod/{remote}"), "18089:8080"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = String::new();
    eventually(Duration::from_secs(20), "port-forward answering", || {
        answered = http_get("127.0.0.1:18089").unwrap_or_default();
        answered.contains(remote)
    });
    let _ = pf.kill();
    let _ = pf.wait();

    // A rolling update to another tag, with a client loop that never retries.
    let cluster_ip = lab.json(&["get", "service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let script = format!(
        "rm -f /tmp/stop; while [ ! -f /tmp/stop ]; do r=$(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -1); case \"$r\" in web-*) echo ok;; *) echo \"FAIL $r\";; esac; done"
    );
    let client_loop = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&lab.kubeconfig)
        .args(["exec", "client", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    lab.kubectl_ok(&["set", "image", "deployment/web", "httpd=busybox:1.36"]);
    lab.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    std::thread::sleep(Duration::from_secs(3));
    lab.kubectl_ok(&["exec", "client", "--", "touch", "/tmp/stop"]);
    let out = client_loop.wait_with_output().unwrap();
    let results = String::from_utf8_lossy(&out.stdout);
    let ok = results.lines().filter(|l| *l == "ok").count();
    let failed: Vec<&str> = results.lines().filter(|l| *l != "ok").collect();
    assert!(ok > 20, "the client loop ran: {results}");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rollout: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    eventually(
        Duration::from_secs(60),
        "3 ready pods of the new tag",
        || {
            let p = pods(&lab, "app=web");
            p.len() == 3
                && p.iter()
                    .all(|p| ready(p) && p["spec"]["containers"][0]["image"] == "busybox:1.36")
        },
    );

    // Restarting the server loses nothing: the same objects, containers and restart counts.
    let snapshot = |lab: &Lab| -> Vec<(String, String, String, u64)> {
        let mut v: Vec<_> = lab.json(&["get", "pods", "-A"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let cs = &p["status"]["containerStatuses"][0];
                (
                    p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    cs["containerID"].as_str().unwrap_or("").to_string(),
                    cs["restartCount"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&lab);
    let objects_before =
        lab.kubectl_ok(&["get", "deployments,services,configmaps", "-A", "-o", "name"]);
    let server_dir = dir.join("node-0");
    let pid: i32 = std::fs::read_to_string(server_dir.join("server/capstan.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Command::new("kill").arg(pid.to_string()).status().unwrap();
    eventually(Duration::from_secs(15), "the server to exit", || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(format!("{name}-0.log")))
        .unwrap();
    // `setsid -f` forks the server off and returns: it outlives this call, as `lab up`'s do.
    Command::new("setsid")
        .args(["-f", "nsenter", &format!("--net=/run/netns/{name}-0"), "--"])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    eventually(Duration::from_secs(60), "the API back", || {
        lab.kubectl(&["get", "--raw", "/readyz"]).status.success()
    });
    eventually(Duration::from_secs(60), "every node Ready again", || {
        lab.json(&["get", "nodes"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        snapshot(&lab),
        before,
        "pods, containers and restart counts after the restart"
    );
    assert_eq!(
        lab.kubectl_ok(&["get", "deployments,services,configmaps", "-A", "-o", "name"]),
        objects_before
    );

    // Stopping an agent: its node turns NotReady and its pods are recreated on the others.
    let gone = format!("{name}-2");
    let agent_pid = std::fs::read_to_string(dir.join("node-2/server/capstan.pid"))
        .unwrap()
        .trim()
        .to_string();
    Command::new("kill").arg(&agent_pid).status().unwrap();
    eventually(
        Duration::from_secs(90),
        "the stopped agent's node NotReady",
        || {
            let n = lab.json(&["get", "node", &gone]);
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] != "True")
            })
        },
    );
    eventually(
        Duration::from_secs(90),
        "3 ready replicas on the other nodes",
        || {
            let p = pods(&lab, "app=web");
            let live: Vec<&Value> = p
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            live.len() == 3
                && live
                    .iter()
                    .all(|p| ready(p) && p["spec"]["nodeName"] != gone.as_str())
        },
    );

    // Down: nothing left.
    let out = lab.down();
    assert!(
        out.status.success(),
        "lab down failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = traces(&dir, &name, &netns_before, &rules_before);
    assert!(left.is_empty(), "lab down left: {left:?}");
    let _ = std::fs::remove_dir_all(&base);
}
