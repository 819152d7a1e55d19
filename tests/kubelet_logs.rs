//! `kubectl logs` end to end: kubectl → apiserver-lite (`pods/log`) → the kubelet's HTTPS
//! `/containerLogs` → the container's CRI log file. With the built-in runtime and with
//! containerd: a container's output, `-c`, the default-container annotation, `--tail`,
//! `--timestamps`, `--limit-bytes`, `--since` / `--since-time`, `--previous` of a container that
//! restarted (and upstream's error when there is none), the API's errors (a pod with several
//! containers and none named, an unknown container, invalid options) and its empty answer for a
//! pod not on a node yet, `-f` showing each line as the container writes it and ending when
//! the container exits; the kubelet's /healthz answers on both servers and the Node reports the
//! server's port.
//!
//! The containers wait for files the test creates on a hostPath volume, so what they print and
//! when is driven by the test, not by sleeps. Everything the test makes is removed by guards.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::kubelet::{container_status, get_pod, Node, NodeRuntime};
use common::{eventually, ApiServer};

/// A child process killed when dropped (a `kubectl logs -f` that must not outlive a failure).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn logs(api: &ApiServer, args: &[&str]) -> String {
    let mut a = vec!["logs"];
    a.extend_from_slice(args);
    api.kubectl_ok(&a)
}

/// `date -u ARGS`, trimmed.
fn date(args: &[&str]) -> String {
    let out = Command::new("date")
        .arg("-u")
        .args(args)
        .output()
        .expect("running date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Seconds since the epoch of an RFC 3339 time (or `now`).
fn epoch(t: &str) -> u64 {
    date(&["-d", t, "+%s"])
        .parse()
        .unwrap_or_else(|_| panic!("not a time: {t:?}"))
}

fn running(api: &ApiServer, pod: &str, container: &str) -> bool {
    get_pod(api, "default", pod)
        .is_some_and(|p| !container_status(&p, container)["state"]["running"].is_null())
}

fn logs_end_to_end(runtime: NodeRuntime) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let mut node = Node::start_ready(&api, "kubelet-logs", runtime);
    let name = node.name.clone();
    let trigger = node.dir.join("trigger");
    std::fs::create_dir_all(&trigger).unwrap();

    // The Node says where its kubelet serves; both servers answer /healthz.
    let port = api.kubectl_ok(&[
        "get",
        "node",
        &name,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    assert_eq!(port, node.port.to_string());
    let healthz = |url: String| {
        let out = Command::new("curl")
            .args(["-sSk", "--max-time", "10", &url])
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        healthz(format!("http://127.0.0.1:{}/healthz", node.healthz_port)),
        "ok"
    );
    // The HTTPS one only for an authenticated, authorized caller (the cluster admin here).
    assert_eq!(node.kubelet_get(&api, "/healthz"), (200, "ok".to_string()));

    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: talker}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: trigger
    hostPath: {{path: {trigger}, type: Directory}}
  containers:
  - name: counter
    image: busybox
    volumeMounts: [{{name: trigger, mountPath: /trigger}}]
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; sleep 0.5; echo to-stderr >&2; until [ -f /trigger/later ]; do sleep 0.1; done; echo later; trap 'exit 0' TERM; while true; do sleep 1; done"]
  - name: other
    image: busybox
    command: ["sh", "-c", "echo from other; trap 'exit 0' TERM; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata:
  name: picked
  annotations: {{kubectl.kubernetes.io/default-container: second}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: first
    image: busybox
    command: ["sh", "-c", "echo from first; trap 'exit 0' TERM; while true; do sleep 1; done"]
  - name: second
    image: busybox
    command: ["sh", "-c", "echo from second; trap 'exit 0' TERM; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: follower}}
spec:
  nodeName: {name}
  restartPolicy: Never
  volumes:
  - name: trigger
    hostPath: {{path: {trigger}, type: Directory}}
  containers:
  - name: app
    image: busybox
    volumeMounts: [{{name: trigger, mountPath: /trigger}}]
    command: ["sh", "-c", "echo start; until [ -f /trigger/go ]; do sleep 0.1; done; echo after-go; until [ -f /trigger/stop ]; do sleep 0.1; done; echo bye"]
---
apiVersion: v1
kind: Pod
metadata: {{name: restarter}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    emptyDir: {{}}
  containers:
  - name: app
    image: busybox
    volumeMounts: [{{name: data, mountPath: /data}}]
    command: ["sh", "-c", "if [ -f /data/ran ]; then echo second run; trap 'exit 0' TERM; while true; do sleep 1; done; fi; touch /data/ran; echo first run; exit 1"]
"#,
        trigger = trigger.display()
    );
    node.apply(&api, "pods.yaml", &manifest);
    eventually(Duration::from_secs(90), "the pods run", || {
        node.assert_alive();
        running(&api, "talker", "counter")
            && running(&api, "talker", "other")
            && running(&api, "picked", "second")
            && running(&api, "follower", "app")
    });

    // A container's output, both streams, through kubectl.
    let expected = "line 1\nline 2\nline 3\nline 4\nline 5\nto-stderr\n";
    // stdout and stderr reach the log through separate pipes (containerd copies each on its own),
    // so the container waits a moment between them to make their order in the log certain.
    let start = std::time::Instant::now();
    let mut seen = logs(&api, &["talker", "-c", "counter"]);
    while seen != expected && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        seen = logs(&api, &["talker", "-c", "counter"]);
    }
    assert_eq!(seen, expected, "talker's first lines");
    assert_eq!(logs(&api, &["talker", "-c", "other"]), "from other\n");
    assert_eq!(
        logs(&api, &["pod/talker", "-c", "counter", "--tail=2"]),
        "line 5\nto-stderr\n"
    );
    assert_eq!(logs(&api, &["talker", "-c", "counter", "--tail=0"]), "");
    assert_eq!(
        logs(&api, &["talker", "-c", "counter", "--limit-bytes=10"]),
        "line 1\nlin"
    );
    assert_eq!(
        logs(&api, &["talker", "-c", "counter", "--since=1h"]),
        expected
    );
    let stamped = logs(&api, &["talker", "-c", "counter", "--timestamps"]);
    let stamped: Vec<&str> = stamped.lines().collect();
    assert_eq!(stamped.len(), 6, "{stamped:?}");
    for (line, want) in stamped.iter().zip(expected.lines()) {
        let (ts, text) = line.split_once(' ').expect("a timestamp and the line");
        assert_eq!(text, want);
        assert!(
            ts.len() >= 20 && ts.as_bytes()[10] == b'T' && (ts.ends_with('Z') || ts.contains('+')),
            "not an RFC3339 timestamp: {line:?}"
        );
    }
    // The default-container annotation (kubectl reads it), and the API's own rule.
    assert_eq!(logs(&api, &["picked"]), "from second\n");
    let (code, status) = api.http("GET", "/api/v1/namespaces/default/pods/talker/log", "", b"");
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    assert_eq!(
        status["message"],
        "a container name must be specified for pod talker, choose one of: [counter other]"
    );
    let (code, status) = api.http(
        "GET",
        "/api/v1/namespaces/default/pods/talker/log?container=counter&tailLines=-1",
        "",
        b"",
    );
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PodLogOptions \"talker\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
    );
    let err = api.kubectl_err(&["logs", "talker", "-c", "nosuch"]);
    assert!(
        err.contains("container nosuch is not valid for pod talker"),
        "{err}"
    );
    // A pod no node has taken yet has no log: an empty answer, as upstream's.
    api.kubectl_ok(&["run", "unscheduled", "--image=busybox", "--restart=Never"]);
    let (code, _) = api.http(
        "GET",
        "/api/v1/namespaces/default/pods/unscheduled/log",
        "",
        b"",
    );
    assert_eq!(code, 204);
    assert_eq!(logs(&api, &["unscheduled"]), "");
    let err = api.kubectl_err(&["logs", "talker", "-c", "counter", "--previous"]);
    assert!(
        err.contains(r#"previous terminated container "counter" in pod "talker" not found"#),
        "{err}"
    );

    // --since-time: once the clock has passed the second of the first lines, the container is
    // let go to write one more; a cut-off at that line's second keeps it and drops the others.
    let last_first = epoch(stamped[5].split(' ').next().unwrap());
    eventually(
        Duration::from_secs(5),
        "the clock passes the first lines' second",
        || epoch("now") > last_first,
    );
    std::fs::write(trigger.join("later"), "").unwrap();
    let mut later = 0;
    eventually(Duration::from_secs(10), "talker's later line", || {
        let out = logs(&api, &["talker", "-c", "counter", "--timestamps"]);
        match out.lines().find(|l| l.ends_with(" later")) {
            Some(l) => {
                later = epoch(l.split(' ').next().unwrap());
                true
            }
            None => false,
        }
    });
    let cut = date(&["-d", &format!("@{later}"), "+%Y-%m-%dT%H:%M:%SZ"]);
    assert_eq!(
        logs(
            &api,
            &["talker", "-c", "counter", &format!("--since-time={cut}")]
        ),
        "later\n"
    );

    // -f: each line as it is written, then the end when the container exits.
    let mut child = api
        .kubectl_cmd(&["logs", "-f", "follower"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl logs -f");
    let stdout = child.stdout.take().unwrap();
    let mut follow = ChildGuard(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("kubectl logs -f did not show {what}"))
    };
    assert_eq!(next("start"), "start");
    std::fs::write(trigger.join("go"), "").unwrap();
    assert_eq!(next("after-go"), "after-go");
    assert!(
        follow.0.try_wait().unwrap().is_none(),
        "kubectl logs -f ended while the container runs"
    );
    std::fs::write(trigger.join("stop"), "").unwrap();
    assert_eq!(next("bye"), "bye");
    let mut exit = None;
    eventually(Duration::from_secs(30), "kubectl logs -f ends", || {
        exit = follow.0.try_wait().unwrap();
        exit.is_some()
    });
    assert!(exit.unwrap().success(), "kubectl logs -f: {exit:?}");
    assert!(rx.try_recv().is_err(), "nothing after the last line");

    // A client that goes away mid-stream: the kubelet stops following and closes the log file.
    let kubelet_pid = node.pid();
    let open_talker_logs = || {
        std::fs::read_dir(format!("/proc/{kubelet_pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .filter(|t| {
                        let t = t.to_string_lossy();
                        t.contains("/default_talker_") && t.ends_with("/counter/0.log")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(open_talker_logs(), 0);
    let mut child = api
        .kubectl_cmd(&["logs", "-f", "talker", "-c", "counter"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting kubectl logs -f");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "line 1\n");
    let follower = ChildGuard(child);
    eventually(
        Duration::from_secs(10),
        "the kubelet follows talker's log",
        || open_talker_logs() == 1,
    );
    drop(follower);
    eventually(
        Duration::from_secs(15),
        "the kubelet closes the log of a client that went away",
        || open_talker_logs() == 0,
    );

    // --previous: the attempt before the current one.
    eventually(
        Duration::from_secs(60),
        "restarter runs its second attempt",
        || {
            node.assert_alive();
            get_pod(&api, "default", "restarter").is_some_and(|p| {
                let c = container_status(&p, "app");
                c["restartCount"] == 1 && !c["state"]["running"].is_null()
            })
        },
    );
    assert_eq!(logs(&api, &["restarter"]), "second run\n");
    assert_eq!(logs(&api, &["restarter", "--previous"]), "first run\n");

    api.kubectl_ok(&[
        "delete",
        "pod",
        "talker",
        "picked",
        "follower",
        "restarter",
        "unscheduled",
        "--wait=true",
        "--timeout=60s",
    ]);
    drop(node);
}

#[test]
fn kubectl_logs_with_the_builtin_runtime() {
    logs_end_to_end(NodeRuntime::BuiltIn);
}

#[test]
fn kubectl_logs_with_containerd() {
    logs_end_to_end(NodeRuntime::Containerd);
}
