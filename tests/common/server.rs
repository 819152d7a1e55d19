//! A `capstan server` under test: its own data dir, ports, pod and service subnets, bridge,
//! cgroup root and CNI configuration directory, so it runs beside the suite's other tests, with
//! the suite's local registry as the docker.io mirror. `Drop` runs `capstan uninstall` (and
//! removes what an uninstall that failed would leave), also when a test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::kubelet::remove_cgroup_root;
use super::{eventually, free_port, free_subnet};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running (or stopped) `capstan server` and what it was given.
pub struct Server {
    /// Everything of this server lives under here (data dir, CNI config dir, log).
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub node_name: String,
    pub bridge: String,
    pub cgroup_root: String,
    /// The first three octets of the pod subnet (the cluster CIDR, one /24), `10.a.b.`.
    pub subnet_prefix: String,
    /// The service subnet's first three octets.
    pub service_prefix: String,
    pub api_port: u16,
    /// When the process was last spawned.
    pub spawned: std::time::Instant,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts a server (the test images are built first); returns at once.
    pub fn start() -> Server {
        Self::start_on(None, &[])
    }

    /// [`Server::start`] with extra `capstan server` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        Self::start_on(None, extra)
    }

    /// Starts a server that listens on and advertises `host` (instead of loopback and the host's
    /// primary address), so the `kubernetes` Service, which pods reach through the proxy's
    /// rules, leads to it: a pod's network namespace cannot reach the host's 127.0.0.1. The
    /// address must exist on the host (see [`super::netlab::DummyAddress`], a port-less bridge).
    /// `extra` are further `capstan server` flags.
    pub fn start_on(host: Option<std::net::Ipv4Addr>, extra: &[&str]) -> Server {
        super::test_images();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let dir = PathBuf::from(format!("/var/lib/capstan-test/servers/server-{pid}-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let data_dir = dir.join("data");
        let cni_conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&cni_conf_dir).unwrap();
        let subnet_prefix = free_subnet(pid as usize * 13 + n as usize * 31 + 7);
        let mut service_prefix = free_subnet(pid as usize * 13 + n as usize * 31 + 1000);
        if service_prefix == subnet_prefix {
            service_prefix = free_subnet(pid as usize * 13 + n as usize * 31 + 2000);
        }
        let node_name = format!("server-{pid}-{n}");
        let bridge = format!("ks{}x{n}", pid % 100_000);
        let cgroup_root = format!("/capstan-test-server-{pid}-{n}");
        let api_port = free_port();
        let listen_host = host.map_or("127.0.0.1".to_string(), |h| h.to_string());
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            data_dir.to_string_lossy().into(),
            "--node-name".into(),
            node_name.clone(),
            "--listen".into(),
            format!("{listen_host}:{api_port}"),
            "--cluster-cidr".into(),
            format!("{subnet_prefix}0/24"),
            "--node-cidr-mask-size".into(),
            "24".into(),
            "--service-cidr".into(),
            format!("{service_prefix}0/24"),
            "--registry-config-dir".into(),
            "/var/lib/capstan-test/certs.d".into(),
            "--cni-conf-dir".into(),
            cni_conf_dir.to_string_lossy().into(),
            "--cni-bin-dir".into(),
            "/usr/lib/cni".into(),
            "--bridge-name".into(),
            bridge.clone(),
            "--cgroup-root".into(),
            cgroup_root.clone(),
            "--kubelet-port".into(),
            free_port().to_string(),
            "--kubelet-healthz-port".into(),
            free_port().to_string(),
            "--controller-manager-bind-address".into(),
            format!("127.0.0.1:{}", free_port()),
            "--scheduler-bind-address".into(),
            format!("127.0.0.1:{}", free_port()),
            "--proxy-healthz-bind-address".into(),
            format!("127.0.0.1:{}", free_port()),
            "--proxy-metrics-bind-address".into(),
            format!("127.0.0.1:{}", free_port()),
            // The node's DNS server on a free port (port 53 may be taken, and servers run side
            // by side); the kube-dns Service reaches it through the node's EndpointSlice.
            "--cluster-dns-port".into(),
            "0".into(),
        ];
        if let Some(h) = host {
            args.extend(["--advertise-address".into(), h.to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = Server {
            log: dir.join("server.log"),
            dir,
            data_dir,
            cni_conf_dir,
            node_name,
            bridge,
            cgroup_root,
            subnet_prefix,
            service_prefix,
            api_port,
            spawned: std::time::Instant::now(),
            args,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.spawned = std::time::Instant::now();
        let child = Command::new(capstan_exe())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting capstan server");
        self.child = Some(child);
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The server's log so far (all starts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// Panics with the log when the server has exited or panicked.
    pub fn assert_alive(&mut self) {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        let log = self.log();
        assert!(
            !exited && !log.contains("panicked"),
            "capstan server died; its log:\n{log}"
        );
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl")
    }

    /// `kubectl` that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl … -o json`, parsed.
    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl printed JSON")
    }

    /// Writes `manifest` next to the data dir and applies it.
    pub fn apply(&self, file: &str, manifest: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, manifest).unwrap();
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// Waits until `kubectl get nodes` shows the node Ready.
    pub fn wait_ready(&mut self) {
        let name = self.node_name.clone();
        eventually(Duration::from_secs(60), "the node turns Ready", || {
            self.assert_alive();
            let out = self.kubectl(&["get", "nodes", "--no-headers"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name.as_str(), "Ready"]))
        });
    }

    /// SIGTERM, and waits until the process has exited.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap()
    }

    /// Starts the server again with the same flags (after [`Server::sigterm`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        self.spawn();
    }

    /// `capstan uninstall --data-dir …`.
    pub fn uninstall(&mut self) -> Output {
        let out = Command::new(capstan_exe())
            .args(["uninstall", "--data-dir"])
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()
            .expect("running capstan uninstall");
        // The server was our child: reap it.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        out
    }

    /// Pids of the pod supervisors of this server's runtime.
    pub fn supervisor_pids(&self) -> Vec<u32> {
        let needle = format!("supervise --dir {}/", self.data_dir.display());
        super::processes()
            .into_iter()
            .filter(|(_, p)| p.cmdline.contains(&needle))
            .map(|(pid, _)| pid)
            .collect()
    }
}

/// The binary under test: `CAPSTAN_SERVER_BIN` when set (the benchmark measures a release build
/// that way), else the one cargo built for this test.
pub fn capstan_exe() -> PathBuf {
    std::env::var_os("CAPSTAN_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_capstan")))
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.data_dir.exists() {
            let _ = self.uninstall();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        remove_cgroup_root(&self.cgroup_root);
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
