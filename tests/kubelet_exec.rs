//! `kubectl exec`, `attach` and `port-forward` end to end: kubectl → apiserver-lite
//! (`pods/exec`, `pods/attach`, `pods/portforward`, the connection upgraded through) → the
//! kubelet's `/exec`, `/attach`, `/portForward` → the runtime's streaming server → the container.
//! With the built-in runtime and with containerd behind the kubelet:
//!
//! - exec with output on stdout and stderr and a non-zero exit code (kubectl's exit code
//!   matches), `exec -i` piping data through `cat`, `exec -it` with a TTY (kubectl under
//!   `script`, which gives it a terminal whose size reaches the container);
//! - attach to a container that reads stdin;
//! - port-forward to an HTTP server in the pod with concurrent requests;
//! - the official Python client (`kubernetes` from PyPI, in the venv `scripts/install-deps.sh`
//!   makes) running exec over its WebSocket stream: stdout, stderr and the exit status;
//! - bad input: an unknown container, a stopped one, a command that does not exist, a closed
//!   port, an exec request that does not upgrade; and no processes or fds left behind in the
//!   kubelet after a client that disconnects mid-stream.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::kubelet::{wait_pod, Node, NodeRuntime};
use common::{eventually, ApiServer};

/// A child process killed when dropped (a `kubectl port-forward` that must not outlive a failure).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PYVENV_PYTHON: &str = "/var/lib/capstan-test/pyvenv/bin/python";

/// Runs kubectl with `input` on its stdin (killed after two minutes).
fn kubectl_with_input(api: &ApiServer, args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "120", "kubectl"])
        .args(args)
        .env("KUBECONFIG", api.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running kubectl");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("waiting for kubectl");
    let _ = writer.join();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An HTTP GET to 127.0.0.1:port over a plain socket; the body.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut all = String::new();
    s.read_to_string(&mut all)?;
    Ok(all
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn streaming_end_to_end(runtime: NodeRuntime) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("needs root (it runs containers); skipped");
        return;
    }
    let api = ApiServer::start();
    let mut node = Node::start_ready(&api, "kubelet-exec", runtime);
    let name = node.name.clone();
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: busybox
    command: [sh, -c, "trap 'exit 0' TERM; while :; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    command: [sh, -c, "mkdir -p /www && echo served-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Pod
metadata: {{name: reader}}
spec:
  nodeName: {name}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: reader
    image: busybox
    stdin: true
    stdinOnce: true
    command: [sh, -c, "read line; echo got:$line"]
---
apiVersion: v1
kind: Pod
metadata: {{name: done}}
spec:
  nodeName: {name}
  restartPolicy: Never
  containers:
  - name: done
    image: busybox
    command: ["true"]
"#
    );
    node.apply(&api, "pods.yaml", &manifest);
    for pod in ["shell", "web", "reader"] {
        wait_pod(
            &api,
            &mut node,
            pod,
            Duration::from_secs(120),
            "running",
            |p| p["status"]["phase"] == "Running",
        );
    }
    wait_pod(
        &api,
        &mut node,
        "done",
        Duration::from_secs(120),
        "succeeded",
        |p| p["status"]["phase"] == "Succeeded",
    );

    // exec: stdout, stderr, and the exit code passed on by kubectl.
    let out = api.kubectl(&[
        "exec",
        "shell",
        "--",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "to-stdout\n");
    assert!(
        text(&out.stderr).contains("to-stderr"),
        "stderr: {}",
        text(&out.stderr)
    );
    let out = api.kubectl(&["exec", "shell", "--", "true"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));

    // exec -i: stdin through cat, larger than one frame.
    let input: Vec<u8> = (0..200_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[(i % 27) as usize])
        .collect();
    let out = kubectl_with_input(&api, &["exec", "-i", "shell", "--", "cat"], &input);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "cat gave back something else");

    // exec -it: kubectl only asks for a TTY when its stdin is a terminal; `script` gives it one.
    let cmd = format!(
        "stty rows 45 cols 123; KUBECONFIG={} kubectl exec -it shell -- sh -c '{}'",
        api.kubeconfig().display(),
        // The size arrives on the resize stream while the command starts: wait for it.
        "tty; i=0; while [ $i -lt 100 ]; do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && break; i=$((i+1)); sleep 0.1; done; echo size:$s; echo tty-done"
    );
    let out = Command::new("timeout")
        .args(["-s", "KILL", "60", "script", "-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("running script");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("/dev/pts/") && shown.contains("tty-done"),
        "exec -it printed {shown:?} (stderr {:?})",
        text(&out.stderr)
    );
    // The terminal's size reaches the command (busybox `stty size` prints nothing while the
    // size is still 0x0, so the command waits for it).
    assert!(shown.contains("size:45 123"), "exec -it printed {shown:?}");

    // attach: the container waits on stdin; what kubectl sends comes back.
    let out = kubectl_with_input(
        &api,
        &["attach", "-i", "reader", "-c", "reader"],
        b"hello-attach\n",
    );
    assert!(
        text(&out.stdout).contains("got:hello-attach"),
        "attach printed {:?} / {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_pod(
        &api,
        &mut node,
        "reader",
        Duration::from_secs(60),
        "done",
        |p| p["status"]["phase"] == "Succeeded",
    );

    // port-forward: concurrent requests through one forward.
    let local = common::free_port();
    let mut pf = api.kubectl_cmd(&["port-forward", "pod/web", &format!("{local}:8080")]);
    pf.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut pf = ChildGuard(pf.spawn().expect("running kubectl port-forward"));
    let mut pf_out = pf.0.stdout.take().unwrap();
    let mut line = Vec::new();
    let started = Instant::now();
    while !text(&line).contains("Forwarding from") {
        let mut b = [0u8; 1];
        if pf_out.read(&mut b).unwrap_or(0) == 0 || started.elapsed() > Duration::from_secs(60) {
            panic!("kubectl port-forward did not start: {:?}", text(&line));
        }
        line.push(b[0]);
    }
    let gets: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http_get(local, "/index.html")))
        .collect();
    for g in gets {
        let body = g.join().unwrap().expect("GET through port-forward");
        assert_eq!(body, "served-from-the-pod\n");
    }
    drop(pf);

    // The official Python client: exec over its WebSocket stream.
    let script = r#"
import json, sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config()
v1 = client.CoreV1Api()
r = stream(v1.connect_get_namespaced_pod_exec, "shell", "default",
           command=["sh", "-c", "echo py-out; echo py-err >&2; exit 7"],
           stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
r.run_forever(timeout=60)
out, err, code = r.read_stdout(), r.read_stderr(), r.returncode
r.close()
print(json.dumps({"out": out, "err": err, "code": code}))
"#;
    let out = Command::new("timeout")
        .args(["-s", "KILL", "120", PYVENV_PYTHON, "-c", script])
        .env("KUBECONFIG", api.kubeconfig())
        .output()
        .expect("running the Python client (scripts/install-deps.sh installs it)");
    assert!(out.status.success(), "python client: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["out"], "py-out\n");
    assert_eq!(v["err"], "py-err\n");
    assert_eq!(v["code"], 7);

    // Bad input.
    let err = api.kubectl_err(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(
        err.contains("container nope is not valid for pod shell"),
        "{err}"
    );
    let out = api.kubectl(&["exec", "done", "--", "true"]);
    assert!(!out.status.success());
    let out = api.kubectl(&["exec", "shell", "--", "/no/such/command"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no such file") || err.contains("not found"),
        "exec of a missing command: {err}"
    );
    // An exec request that does not upgrade gets an error, not a hang.
    let (code, _) = api.http(
        "POST",
        "/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=true",
        "application/json",
        b"",
    );
    assert!(
        (400..500).contains(&code),
        "non-upgrade exec answered {code}"
    );

    // A client that goes away mid-stream leaves nothing behind in the kubelet.
    let kubelet = node.pid();
    let fds_before = fd_count(kubelet);
    for _ in 0..3 {
        let mut c = api
            .kubectl_cmd(&["exec", "-i", "shell", "--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.as_mut().unwrap().write_all(b"partial").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let _ = c.kill();
        let _ = c.wait();
    }
    eventually(
        Duration::from_secs(30),
        "kubelet fds back to normal",
        || fd_count(kubelet) <= fds_before + 2,
    );
}

#[test]
fn kubectl_exec_attach_port_forward_with_the_builtin_runtime() {
    streaming_end_to_end(NodeRuntime::BuiltIn);
}

#[test]
fn kubectl_exec_attach_port_forward_with_containerd() {
    streaming_end_to_end(NodeRuntime::Containerd);
}
