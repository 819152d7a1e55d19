//! A `capstan kubelet` under test, joined to an [`ApiServer`](super::ApiServer): its own
//! directory (root dir, pod logs, CNI config and cache, static-pod manifests), its own CNI bridge
//! and subnet, its own cgroup root, and either the built-in runtime or a private containerd
//! (`scripts/containerd.sh`). Several nodes can run side by side, also within one test binary.
//!
//! Everything a node makes — the kubelet, supervisors and containers (or containerd and its
//! shims), mounts, network namespaces, the bridge, the cgroups under its cgroup root and the
//! directory — is removed by `Drop` through `scripts/containerd.sh stop`, also when a test fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{eventually, free_port, free_subnet, ApiServer};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The runtime a node's kubelet drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeRuntime {
    /// The built-in runtime, in the kubelet's process (the default).
    BuiltIn,
    /// Debian's containerd + runc, through `--container-runtime-endpoint`.
    Containerd,
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub runtime: NodeRuntime,
    /// Extra flags for `capstan kubelet`.
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of the kubelet.
    pub log_level: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            runtime: NodeRuntime::BuiltIn,
            extra_args: Vec::new(),
            log_level: "info".into(),
        }
    }
}

/// A running kubelet and what it made on the host.
pub struct Node {
    pub name: String,
    /// Everything of this node lives under here.
    pub dir: PathBuf,
    /// The kubelet's --root-dir.
    pub root_dir: PathBuf,
    /// The kubelet's --pod-logs-dir.
    pub pod_logs_dir: PathBuf,
    /// The kubelet's --pod-manifest-path (created empty).
    pub manifest_dir: PathBuf,
    /// The kubelet's --cgroup-root (a cgroup path such as `/capstan-test-node-…`).
    pub cgroup_root: String,
    /// The first three octets of the pod subnet, `10.a.b.`.
    pub subnet_prefix: String,
    /// The kubelet server's HTTPS port (`--port`), free when the node started; kept across
    /// restarts.
    pub port: u16,
    /// The plain-HTTP /healthz port on 127.0.0.1 (`--healthz-port`).
    pub healthz_port: u16,
    pub options: NodeOptions,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts a kubelet named `name` against `api` (the test images are built first). Returns at
    /// once; [`Node::wait_ready`] waits for the Node to turn Ready.
    pub fn start(api: &ApiServer, name: &str, options: NodeOptions) -> Node {
        Node::start_with_kubeconfig(&api.kubeconfig(), name, options)
    }

    /// [`Node::start`] with `--kubeconfig kubeconfig` (which need not exist yet, for TLS
    /// bootstrap), against any API server (a `capstan server`'s, say).
    pub fn start_with_kubeconfig(
        kubeconfig: &std::path::Path,
        name: &str,
        options: NodeOptions,
    ) -> Node {
        super::test_images();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // containerd.sh stop treats processes naming this directory as the node's own.
        let dir = PathBuf::from(format!("/var/lib/capstan-test/nodes/node-{pid}-{n}"));
        stop_dir(&dir);
        std::fs::create_dir_all(dir.join("net.d")).unwrap();
        let manifest_dir = dir.join("manifests");
        std::fs::create_dir_all(&manifest_dir).unwrap();
        let bridge = format!("kn{}x{n}", pid % 100_000);
        let subnet_prefix = free_subnet(pid as usize * 11 + n as usize * 29);
        std::fs::write(dir.join("bridge"), &bridge).unwrap();
        std::fs::write(dir.join("subnet-prefix"), &subnet_prefix).unwrap();
        std::fs::write(
            dir.join("net.d/10-node.conflist"),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "capstan-test-node",
                "plugins": [
                    {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                     "hairpinMode": true,
                     "ipam": {"type": "host-local",
                              "ranges": [[{"subnet": format!("{subnet_prefix}0/24")}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": dir.join("cni-networks")}},
                    {"type": "portmap", "capabilities": {"portMappings": true}}
                ]
            })
            .to_string(),
        )
        .unwrap();
        let cgroup_root = format!("/capstan-test-node-{pid}-{n}");
        make_cgroup_root(&cgroup_root);
        let root_dir = dir.join("kubelet");
        let pod_logs_dir = dir.join("logs");
        // Fixed ports would collide between the nodes of one host.
        let (port, healthz_port) = (free_port(), free_port());
        let mut args: Vec<String> = vec![
            "kubelet".into(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into(),
            "--root-dir".into(),
            root_dir.to_string_lossy().into(),
            "--hostname-override".into(),
            name.into(),
            "--cgroup-root".into(),
            cgroup_root.clone(),
            "--pod-logs-dir".into(),
            pod_logs_dir.to_string_lossy().into(),
            "--pod-manifest-path".into(),
            manifest_dir.to_string_lossy().into(),
            "--registry-config-dir".into(),
            "/var/lib/capstan-test/certs.d".into(),
            "--cni-conf-dir".into(),
            dir.join("net.d").to_string_lossy().into(),
            "--cni-cache-dir".into(),
            dir.join("cni-cache").to_string_lossy().into(),
            "--port".into(),
            port.to_string(),
            "--healthz-port".into(),
            healthz_port.to_string(),
        ];
        // Debian's plugins, unless the caller names its own (the flag adds to a list, so a second
        // --cni-bin-dir in extra_args would only be searched after this one).
        if !options
            .extra_args
            .iter()
            .any(|a| a.starts_with("--cni-bin-dir"))
        {
            args.extend(["--cni-bin-dir".into(), "/usr/lib/cni".into()]);
        }
        if options.runtime == NodeRuntime::Containerd {
            let out = Command::new("bash")
                .arg(repo_dir().join("scripts/containerd.sh"))
                .arg("start")
                .arg(&dir)
                .stdin(Stdio::null())
                .output()
                .expect("running scripts/containerd.sh start");
            if !out.status.success() {
                stop_dir(&dir);
                panic!(
                    "containerd did not start: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            args.push("--container-runtime-endpoint".into());
            args.push(format!("unix://{}", dir.join("containerd.sock").display()));
        }
        args.extend(options.extra_args.iter().cloned());
        let mut node = Node {
            name: name.to_string(),
            log: dir.join("kubelet.log"),
            dir,
            root_dir,
            pod_logs_dir,
            manifest_dir,
            cgroup_root,
            subnet_prefix,
            port,
            healthz_port,
            options,
            args,
            child: None,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(&self.args)
            .env("RUST_LOG", &self.options.log_level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting capstan kubelet");
        self.child = Some(child);
    }

    /// The kubelet's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The kubelet's log so far (stderr, all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the kubelet's log when it has panicked or exited.
    pub fn assert_alive(&mut self) {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        let log = self.log();
        assert!(
            !exited && !log.contains("panicked"),
            "the kubelet died; its log:\n{log}"
        );
    }

    /// A node named `{prefix}-{pid}-{runtime}` on `runtime`, started and Ready.
    /// `curl` of the kubelet server's `path` over HTTPS (its certificate not verified) with
    /// extra curl arguments (the credentials: `--cert`/`--key`, `-H "Authorization: …"`, none
    /// for an anonymous request): (status, body).
    pub fn kubelet_curl(&self, extra: &[&str], path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args(["-sSk", "--max-time", "30", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// GET of the kubelet server's `path` as `api`'s cluster admin (its client certificate; the
    /// kubelet authorizes it with a SubjectAccessReview): (status, body).
    pub fn kubelet_get(&self, api: &ApiServer, path: &str) -> (u16, String) {
        let (cert, key) = api.admin_cert_files();
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        self.kubelet_curl(&["--cert", &cert, "--key", &key], path)
    }

    pub fn start_ready(api: &ApiServer, prefix: &str, runtime: NodeRuntime) -> Node {
        let name = format!("{prefix}-{}-{runtime:?}", std::process::id()).to_lowercase();
        let mut node = Node::start(
            api,
            &name,
            NodeOptions {
                runtime,
                ..Default::default()
            },
        );
        node.wait_ready(api);
        node
    }

    /// SIGKILL to the kubelet alone (supervisors, containers and containerd stay).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL to the node's containerd alone (its shims and containers stay, as when containerd
    /// crashes); a no-op for the built-in runtime.
    pub fn kill9_containerd(&mut self) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("containerd.pid")) else {
            return;
        };
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // It is our grandchild (setsid in containerd.sh); wait until it is gone.
            let until = Instant::now() + Duration::from_secs(10);
            while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the node's containerd again on its old state (`scripts/containerd.sh start`).
    pub fn start_containerd(&mut self) {
        let out = Command::new("bash")
            .arg(repo_dir().join("scripts/containerd.sh"))
            .arg("start")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/containerd.sh start");
        assert!(
            out.status.success(),
            "containerd did not start again: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the kubelet again with the same flags (after [`Node::kill9`]).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Waits until the Node object reports Ready.
    pub fn wait_ready(&mut self, api: &ApiServer) {
        let name = self.name.clone();
        eventually(Duration::from_secs(60), "the node turns Ready", || {
            self.assert_alive();
            let out = api.kubectl(&[
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout) == "True"
        });
    }

    /// The message part of each line of a container's CRI log (restart `attempt`, usually 0),
    /// for a pod in namespace `ns`.
    pub fn container_log(&self, ns: &str, pod: &str, container: &str, attempt: u32) -> String {
        let Ok(dirs) = std::fs::read_dir(&self.pod_logs_dir) else {
            return String::new();
        };
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{ns}_{pod}_")) {
                let file = d.path().join(container).join(format!("{attempt}.log"));
                let text = std::fs::read_to_string(file).unwrap_or_default();
                return text
                    .lines()
                    .filter_map(|l| l.splitn(4, ' ').nth(3))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
        String::new()
    }

    /// Writes `manifest` (YAML) into the node's directory and `kubectl apply`s it.
    pub fn apply(&self, api: &ApiServer, file: &str, manifest: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, manifest).unwrap();
        api.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// Pids of the pod supervisors of this node's built-in runtime.
    pub fn supervisor_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-f", &format!("supervise --dir {}", self.dir.display())])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        stop_dir(&self.dir);
        remove_cgroup_root(&self.cgroup_root);
        // The runtime's shared supervisors cgroup, once no runtime uses it.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                for d in ["capstan/supervisors", "capstan/pods", "capstan"] {
                    let _ = std::fs::remove_dir(h.path().join(d));
                }
            }
        }
    }
}

/// The pod `ns/name` as JSON, if it exists.
pub fn get_pod(api: &ApiServer, ns: &str, name: &str) -> Option<Value> {
    let out = api.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Whether a pod's Ready condition is True.
pub fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The status of container `name` (regular, init or sidecar) of a pod.
pub fn container_status<'a>(p: &'a Value, name: &str) -> &'a Value {
    for key in ["containerStatuses", "initContainerStatuses"] {
        if let Some(c) = p["status"][key]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        {
            return c;
        }
    }
    &Value::Null
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/containerd.sh stop DIR`: kills every process naming DIR and their descendants,
/// containerd's containers, unmounts what is under DIR, removes the network namespaces on the
/// node's subnet, its bridge and DIR.
fn stop_dir(dir: &Path) {
    let _ = Command::new("bash")
        .arg(repo_dir().join("scripts/containerd.sh"))
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
}

/// Makes the cgroup `path` in every hierarchy (the kubelet refuses a --cgroup-root that does not
/// exist), with the cpuset of its parent (an empty cpuset takes no tasks).
pub fn make_cgroup_root(path: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(path.trim_start_matches('/'));
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.path().join(f)) {
                let _ = std::fs::write(dir.join(f), v.trim());
            }
        }
    }
}

/// Removes the cgroup `path` and everything under it, deepest first, in every hierarchy.
pub fn remove_cgroup_root(path: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(path.trim_start_matches('/'));
        let mut dirs = Vec::new();
        collect_dirs(&dir, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Waits until pod `default/name` satisfies `pred`; panics with its last status otherwise.
pub fn wait_pod(
    api: &ApiServer,
    node: &mut Node,
    name: &str,
    timeout: Duration,
    what: &str,
    mut pred: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let p = get_pod(api, "default", name);
        if let Some(p) = &p {
            if pred(p) {
                return p.clone();
            }
        }
        node.assert_alive();
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for pod {name}: {what}; its status: {}",
                p.map(|p| serde_json::to_string_pretty(&p["status"]).unwrap())
                    .unwrap_or_else(|| "<no pod>".into())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reasons of the events about pod `name` (`kubectl get events --field-selector`).
pub fn event_reasons(api: &ApiServer, name: &str) -> BTreeSet<String> {
    let v = api.kubectl_json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "json",
    ]);
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["source"]["component"] == "kubelet")
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

pub fn wait_events(api: &ApiServer, name: &str, want: &[&str]) {
    let mut last = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        last = event_reasons(api, name);
        if want.iter().all(|w| last.contains(*w)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("events of pod {name}: wanted {want:?}, got {last:?}");
}

/// A cgroup made in every hierarchy for a test (see [`make_cgroup_root`]), removed with
/// everything under it when dropped.
pub struct CgroupRoot(pub String);

impl CgroupRoot {
    pub fn make(path: &str) -> CgroupRoot {
        make_cgroup_root(path);
        CgroupRoot(path.to_string())
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        remove_cgroup_root(&self.0);
    }
}
