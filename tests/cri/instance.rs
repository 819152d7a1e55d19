//! A runtime under test, private to this test run: Debian's containerd (through
//! `scripts/containerd.sh`) or `capstan cri`, each with its own directory, CRI socket, CNI network
//! (a bridge with a test-unique name and subnet) and cgroup parent, so that neither sees the other
//! nor anything else on the host. Everything an instance creates is removed by `stop`, also when
//! cases failed; a run that was killed is cleaned up by the next one (directories are named after
//! the owning test process).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Which runtime an instance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Capstan,
    Containerd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Capstan => "capstan",
            Kind::Containerd => "containerd",
        }
    }
}

/// How an instance's CNI network is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// bridge + host-local + portmap (loopback is set up by the runtime itself).
    Bridge,
    /// The bridge network followed by a `tuning` plugin asked to set a sysctl that does not
    /// exist: every CNI ADD fails (after the bridge plugin has done its part, so the runtime has
    /// a partial set-up to undo), while DEL works. (A conflist naming a plugin binary that does
    /// not exist fails ADD too, but then DEL fails as well and containerd can never remove the
    /// sandbox or its network namespace, which would leave the node dirty.)
    FailingAdd,
}

/// The directory where the test images and registries live (`scripts/test-images.sh`).
pub fn test_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CAPSTAN_TEST_DIR").unwrap_or_else(|_| "/var/lib/capstan-test".into()),
    )
}

fn runs_dir() -> PathBuf {
    test_dir().join("cri-runs")
}

pub fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A running runtime and the CRI clients that talk to it.
pub struct Instance {
    pub kind: Kind,
    /// Everything the instance keeps (runtime root, socket, CNI config and cache, pod logs).
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub bridge: String,
    /// "10.a.b." — the /24 the pods' addresses come from.
    pub subnet_prefix: String,
    /// The cgroup parent (cgroupfs path) all pods of this instance are placed under.
    pub cgroup_parent: String,
    pub channel: Channel,
    /// `capstan cri` (containerd runs detached; its pid is in `dir/containerd.pid`).
    child: slot::Slot<Child>,
}

/// A `Mutex<Option<T>>` that shrugs off poisoning (a panicking case must not wedge teardown).
mod slot {
    use std::sync::Mutex;

    pub struct Slot<T>(Mutex<Option<T>>);

    impl<T> Slot<T> {
        pub fn new(v: Option<T>) -> Self {
            Slot(Mutex::new(v))
        }
        pub fn take(&self) -> Option<T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
        }
        pub fn put(&self, v: T) {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
        pub fn with<R>(&self, f: impl FnOnce(Option<&mut T>) -> R) -> R {
            f(self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut())
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Instance {
    /// Starts a fresh instance and waits until it answers CRI `Version`.
    pub async fn start(kind: Kind, network: Network) -> Result<Instance> {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = runs_dir().join(format!("{}-{pid}-{n}", kind.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let bridge = format!("cc{}{pid}x{n}", &kind.name()[..1]);
        let subnet_prefix = crate::common::free_subnet(pid as usize * 7 + n as usize * 13);
        std::fs::write(dir.join("bridge"), &bridge)?;
        std::fs::write(dir.join("subnet-prefix"), &subnet_prefix)?;
        std::fs::write(
            dir.join("net.d/10-conformance.conflist"),
            conflist(&bridge, &subnet_prefix, &dir, network),
        )?;
        let cgroup_parent = format!("/capstan-conformance-{}-{pid}-{n}", kind.name());
        let (socket, child) = match kind {
            Kind::Containerd => {
                let out = Command::new("bash")
                    .arg(repo_dir().join("scripts/containerd.sh"))
                    .arg("start")
                    .arg(&dir)
                    .stdin(Stdio::null())
                    .output()
                    .context("running scripts/containerd.sh start")?;
                if !out.status.success() {
                    let _ = stop_dir(&dir);
                    bail!(
                        "containerd did not start: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                (dir.join("containerd.sock"), None)
            }
            Kind::Capstan => {
                let socket = dir.join("cri.sock");
                let child = spawn_capstan(&dir, &socket)?;
                (socket, Some(child))
            }
        };
        let inst = Instance {
            kind,
            channel: lazy_channel(&socket)?,
            dir,
            socket,
            bridge,
            subnet_prefix,
            cgroup_parent,
            child: slot::Slot::new(child),
        };
        if let Err(e) = inst.wait_ready(Duration::from_secs(30)).await {
            inst.stop().await;
            return Err(e);
        }
        Ok(inst)
    }

    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn img(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// The runtime's main process (for `kill -9` and the process-leftover checks).
    pub fn pid(&self) -> Option<u32> {
        match self.kind {
            Kind::Capstan => self.child.with(|c| c.map(|c| c.id())),
            Kind::Containerd => std::fs::read_to_string(self.dir.join("containerd.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        }
    }

    /// Polls CRI `Version` until it answers; fails early when the runtime process died.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            let exited = self.child.with(|c| match c {
                Some(c) => c.try_wait().ok().flatten(),
                None => None,
            });
            if let Some(status) = exited {
                bail!(
                    "{} exited ({status}) before answering CRI; its log ends with:\n{}",
                    self.kind.name(),
                    self.log_tail()
                );
            }
            match tokio::time::timeout(
                Duration::from_secs(2),
                self.rt().version(k8s_cri::v1::VersionRequest::default()),
            )
            .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "Version did not answer within 2s".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} did not answer CRI Version on {} within {timeout:?} (last: {last}); its log ends with:\n{}",
            self.kind.name(),
            self.socket.display(),
            self.log_tail()
        )
    }

    pub fn log_tail(&self) -> String {
        let file = match self.kind {
            Kind::Capstan => "capstan.log",
            Kind::Containerd => "containerd.log",
        };
        let log = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        // Backtrace frames (indented) say little in a test report; the file keeps them.
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with("Stack backtrace"))
            .collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// `kill -9` of the runtime's main process only (containers and shims/supervisors stay).
    pub fn kill9(&self) {
        match self.kind {
            Kind::Capstan => {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Kind::Containerd => {
                if let Some(pid) = self.pid() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    let start = Instant::now();
                    while Path::new(&format!("/proc/{pid}")).exists()
                        && start.elapsed() < Duration::from_secs(5)
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }

    /// Starts the runtime again on the same directory (after `kill9`) and waits until it answers.
    pub async fn restart(&self) -> Result<()> {
        match self.kind {
            Kind::Capstan => {
                let child = spawn_capstan(&self.dir, &self.socket)?;
                self.child.put(child);
            }
            Kind::Containerd => {
                let _ = std::fs::remove_file(&self.socket);
                let child = Command::new("setsid")
                    .arg("containerd")
                    .arg("--config")
                    .arg(self.dir.join("config.toml"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(append(&self.dir.join("containerd.log"))?)
                    .spawn()
                    .context("starting containerd again")?;
                std::fs::write(self.dir.join("containerd.pid"), child.id().to_string())?;
                // setsid execs containerd in place (we are not a process group leader), so the
                // pid is containerd's; it is reaped by the `stop` script's kill, not by us.
                std::mem::forget(child);
            }
        }
        self.wait_ready(Duration::from_secs(30)).await
    }

    /// Removes every pod through CRI (best effort), stops the runtime and removes what is left.
    pub async fn stop(&self) {
        let mut rt = self.rt();
        let pods = tokio::time::timeout(
            Duration::from_secs(10),
            rt.list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default()),
        )
        .await;
        if let Ok(Ok(pods)) = pods {
            for p in pods.into_inner().items {
                let id = p.id;
                let _ = tokio::time::timeout(Duration::from_secs(20), async {
                    let _ = rt
                        .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                    let _ = rt
                        .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        })
                        .await;
                })
                .await;
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(5)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let dir = self.dir.clone();
        let cg = self.cgroup_parent.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = stop_dir(&dir);
            remove_cgroup_tree(&cg);
        })
        .await;
    }
}

fn append(path: &Path) -> Result<std::fs::File> {
    Ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?)
}

fn spawn_capstan(dir: &Path, socket: &Path) -> Result<Child> {
    let _ = std::fs::remove_file(socket);
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("cri")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--socket")
        .arg(socket)
        .arg("--registry-config-dir")
        .arg(test_dir().join("certs.d"))
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .arg("--cni-bin-dir")
        .arg("/usr/lib/cni")
        .arg("--cni-cache-dir")
        .arg(dir.join("cni-cache"))
        .stdin(Stdio::null())
        .stdout(append(&dir.join("capstan.log"))?)
        .stderr(append(&dir.join("capstan.log"))?)
        .spawn()
        .context("starting capstan cri")
}

/// A tonic channel over the unix socket; it connects on first use (and again after a restart).
fn lazy_channel(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    Ok(Endpoint::try_from("http://[::]:50051")?
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        })))
}

/// The instance's network: host-local keeps its allocations under the instance's directory too.
fn conflist(bridge: &str, prefix: &str, dir: &Path, network: Network) -> String {
    let data_dir = dir.join("cni-networks");
    let data_dir = data_dir.display();
    let failing = match network {
        Network::Bridge => "",
        Network::FailingAdd => {
            r#"
    { "type": "tuning", "sysctl": { "net.ipv4.conf.eth0.capstan_no_such_sysctl": "1" } },"#
        }
    };
    format!(
        r#"{{
  "cniVersion": "1.0.0",
  "name": "capstan-conformance",
  "plugins": [
    {{
      "type": "bridge",
      "bridge": "{bridge}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {{
        "type": "host-local",
        "dataDir": "{data_dir}",
        "ranges": [[{{ "subnet": "{prefix}0/24" }}]],
        "routes": [{{ "dst": "0.0.0.0/0" }}]
      }}
    }},{failing}
    {{ "type": "portmap", "capabilities": {{ "portMappings": true }} }}
  ]
}}
"#
    )
}

/// `scripts/containerd.sh stop DIR`: it removes an instance directory of either runtime (processes
/// whose command line names the directory and their descendants, runc state, mounts, network
/// namespaces on the instance's subnet, the bridge).
pub fn stop_dir(dir: &Path) -> Result<()> {
    let out = Command::new("bash")
        .arg(repo_dir().join("scripts/containerd.sh"))
        .arg("stop")
        .arg(dir)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "cleaning up {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Removes the instance's cgroup parent in every v1 hierarchy (and the unified one), deepest first.
pub fn remove_cgroup_tree(parent: &str) {
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let root = h.path().join(parent.trim_start_matches('/'));
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Removes instance directories left by test processes that no longer exist (a run that was
/// killed before it could clean up), and their cgroups.
pub fn clean_stale_runs() {
    let Ok(rd) = std::fs::read_dir(runs_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        let (Some(kind), Some(pid)) = (
            parts.next(),
            parts.next().and_then(|p| p.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = stop_dir(&e.path());
        remove_cgroup_tree(&format!("/capstan-conformance-{name}"));
        let _ = kind;
    }
}
