//! Shared harness for the end-to-end suites: starts the real `capstan` binary on a temporary
//! data dir and drives it with the installed `kubectl` (default flags, fresh cache dir) and a
//! minimal HTTP/1.1 client. The API server serves only TLS: `http_raw` and `WatchStream` speak
//! TLS with the admin client certificate to every API server this process started (they are
//! registered by address), and plain HTTP to anything else (component metrics and health ports).
//! Every process a test starts is killed by a guard's `Drop`, also when the test fails.

#![allow(dead_code)]

pub mod controller_manager;
pub mod dns;
pub mod fake_kubelet;
pub mod fake_nodes;
pub mod kubelet;
pub mod netlab;
pub mod server;
pub mod webhook;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `capstan apiserver` process on a temporary data dir, with a `capstan controller-manager`
/// that runs only the `serviceaccount` and `root-ca-cert-publisher` controllers: pods need their
/// namespace's `default` ServiceAccount (ServiceAccount admission) and the `kube-root-ca.crt`
/// ConfigMap (their token volume), as in a real cluster.
pub struct ApiServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub addr: String,
    cache: PathBuf,
    extra: Vec<String>,
    accounts: Option<controller_manager::ControllerManager>,
}

/// The controllers every [`ApiServer`] runs beside it.
pub const ACCOUNT_CONTROLLERS: &str = "serviceaccount,root-ca-cert-publisher";

impl ApiServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary data dir");
        Self::start_in(dir)
    }

    /// Starts on an existing data dir (for restart tests), on a fresh port.
    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with(dir, &[])
    }

    /// Starts with extra `capstan apiserver` flags.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let cache = dir.path().join("kubectl-cache");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, addr) = spawn(dir.path(), "127.0.0.1:0", &extra);
        let mut api = ApiServer {
            child: Some(child),
            dir,
            addr,
            cache,
            extra,
            accounts: None,
        };
        api.start_account_controllers();
        api
    }

    /// Starts the service account controllers and waits for `default/default`.
    fn start_account_controllers(&mut self) {
        self.accounts = None;
        self.accounts = Some(controller_manager::ControllerManager::start(
            self,
            "account-controllers",
            &["--leader-elect=false", "--controllers", ACCOUNT_CONTROLLERS],
        ));
        self.wait_default_service_account("default");
        eventually(
            Duration::from_secs(30),
            "the ConfigMap default/kube-root-ca.crt exists",
            || {
                let path = "/api/v1/namespaces/default/configmaps/kube-root-ca.crt";
                self.http("GET", path, "", b"").0 == 200
            },
        );
    }

    /// Waits until namespace `ns` has its `default` ServiceAccount.
    pub fn wait_default_service_account(&self, ns: &str) {
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/default");
        eventually(
            Duration::from_secs(30),
            &format!("the ServiceAccount {ns}/default exists"),
            || self.http("GET", &path, "", b"").0 == 200,
        );
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The cluster CA (PEM), `DIR/server/ca.crt`.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server/ca.crt")).expect("the cluster CA")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The admin's client certificate and key as PEM files (`DIR/admin.crt`, `DIR/admin.key`),
    /// for clients such as curl that call kubelets as the cluster admin.
    pub fn admin_cert_files(&self) -> (PathBuf, PathBuf) {
        let kubeconfig = std::fs::read_to_string(self.kubeconfig()).expect("the admin kubeconfig");
        let (cert, key) = (
            self.dir.path().join("admin.crt"),
            self.dir.path().join("admin.key"),
        );
        for (path, field) in [
            (&cert, "client-certificate-data"),
            (&key, "client-key-data"),
        ] {
            let pem = kubeconfig_data(&kubeconfig, field).expect("credentials in the kubeconfig");
            std::fs::write(path, pem).expect("writing the admin credentials");
        }
        (cert, key)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `kill -9` and reap (also the account controllers); the data dir stays.
    pub fn kill9(&mut self) {
        self.accounts = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts on the same data dir (after `kill9`).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addr) = spawn(self.dir.path(), "127.0.0.1:0", &self.extra);
        self.child = Some(child);
        self.addr = addr;
        self.start_account_controllers();
    }

    /// Restarts on the same data dir and the same address (clients holding the old kubeconfig,
    /// such as a kubelet, reconnect).
    pub fn restart_same_addr(&mut self) {
        self.kill9();
        let (child, addr) = spawn(self.dir.path(), &self.addr.clone(), &self.extra);
        self.child = Some(child);
        self.addr = addr;
        self.start_account_controllers();
    }

    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", &self.cache)
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    }

    /// Runs kubectl to completion, killed after two minutes so a hang fails the test.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "120", "kubectl"])
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", &self.cache)
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd.output().expect("running kubectl")
    }

    /// Runs kubectl and returns stdout; panics with stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, expects failure, returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {} should have failed, printed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&a)).expect("kubectl printed JSON")
    }

    /// An HTTP request; returns (status, body as JSON or Null).
    pub fn http(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let (code, bytes) = http_raw(&self.addr, method, path, content_type, body);
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(data_dir: &Path, listen: &str, extra: &[String]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["apiserver", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", listen, "--advertise-address", "127.0.0.1"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting capstan apiserver");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("capstan apiserver serving on ")
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("capstan apiserver did not start; it printed {first:?}")
        })
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let kubeconfig =
        std::fs::read_to_string(data_dir.join("admin.kubeconfig")).expect("the admin kubeconfig");
    register_tls(&addr, tls_client_config(&kubeconfig));
    (child, addr)
}

/// The value of `key:` in a kubeconfig (first occurrence), base64-decoded.
pub fn kubeconfig_data(kubeconfig: &str, key: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let line = kubeconfig
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))?;
    let v = line.split_once(':')?.1.trim();
    base64::engine::general_purpose::STANDARD.decode(v).ok()
}

/// A rustls client configuration trusting `ca_pem`, with an optional client certificate.
pub fn tls_config_from_pem(
    ca_pem: &[u8],
    client: Option<(&[u8], &[u8])>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(c.expect("a CA certificate"))
            .expect("adding the CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .expect("a client certificate"),
                PrivateKeyDer::from_pem_slice(key).expect("a client key"),
            )
            .expect("the client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The TLS client configuration of a kubeconfig with embedded CA and client certificate.
pub fn tls_client_config(kubeconfig: &str) -> Arc<rustls::ClientConfig> {
    let ca =
        kubeconfig_data(kubeconfig, "certificate-authority-data").expect("a CA in the kubeconfig");
    let cert = kubeconfig_data(kubeconfig, "client-certificate-data");
    let key = kubeconfig_data(kubeconfig, "client-key-data");
    match (cert, key) {
        (Some(c), Some(k)) => tls_config_from_pem(&ca, Some((&c, &k))),
        _ => tls_config_from_pem(&ca, None),
    }
}

fn tls_registry() -> &'static Mutex<HashMap<String, Arc<rustls::ClientConfig>>> {
    static REG: OnceLock<Mutex<HashMap<String, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// Makes `http_raw` and `WatchStream` speak TLS with `config` to `addr`.
pub fn register_tls(addr: &str, config: Arc<rustls::ClientConfig>) {
    tls_registry()
        .lock()
        .unwrap()
        .insert(addr.to_string(), config);
}

/// A byte stream to a server: TLS for registered API servers, plain TCP otherwise.
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A TCP connection to `addr`, and the TLS session over it when `addr` is a registered API
/// server. The TcpStream handle is kept for timeouts.
pub fn connect(addr: &str) -> (Box<dyn Conn>, TcpStream) {
    let config = tls_registry().lock().unwrap().get(addr).cloned();
    connect_with(addr, config)
}

/// Like `connect` with an explicit TLS configuration (None: plain TCP).
pub fn connect_with(
    addr: &str,
    config: Option<Arc<rustls::ClientConfig>>,
) -> (Box<dyn Conn>, TcpStream) {
    let s = TcpStream::connect(addr).expect("connecting to the server");
    let handle = s.try_clone().expect("cloning the socket");
    match config {
        Some(c) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name = rustls::pki_types::ServerName::try_from(host).expect("a server name");
            let conn = rustls::ClientConnection::new(c, name).expect("a TLS session");
            (Box::new(rustls::StreamOwned::new(conn, s)), handle)
        }
        None => (Box::new(s), handle),
    }
}

/// A minimal HTTP/1.1 client (no keep-alive) for requests kubectl cannot make.
pub fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (s, handle) = connect(addr);
    http_on(s, handle, addr, method, path, content_type, body, &[])
}

/// One request on an open connection with extra header lines; returns (status, body).
#[allow(clippy::too_many_arguments)]
pub fn http_on(
    mut s: Box<dyn Conn>,
    handle: TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    handle.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut extra = String::new();
    for (k, v) in headers {
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept: application/json\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("sending the request");
    s.write_all(body).expect("sending the body");
    s.flush().ok();
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify is an error for rustls; keep what came.
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => panic!("reading the response: {e}"),
            Err(_) => break,
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (code, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 || data.len() < nl + 2 + size {
            break;
        }
        out.extend_from_slice(&data[nl + 2..nl + 2 + size]);
        data = &data[(nl + 4 + size).min(data.len())..];
    }
    out
}

/// A streaming watch over a raw connection: yields the JSON events one by one.
pub struct WatchStream {
    reader: BufReader<Box<dyn Conn>>,
    socket: TcpStream,
    pending: Vec<u8>,
}

impl WatchStream {
    pub fn open(addr: &str, path: &str) -> Self {
        let (mut s, socket) = connect(addr);
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
        s.write_all(head.as_bytes())
            .expect("sending the watch request");
        s.flush().ok();
        let mut reader = BufReader::new(s);
        loop {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .expect("reading the response head");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        WatchStream {
            reader,
            socket,
            pending: Vec::new(),
        }
    }

    /// Opens the connection and sends the request without ever reading: a stalled client.
    /// The returned socket keeps the connection open (its TLS session, if any, is abandoned
    /// after the request is sent).
    pub fn stalled(addr: &str, path: &str) -> TcpStream {
        let (mut s, socket) = connect(addr);
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
        s.write_all(head.as_bytes())
            .expect("sending the watch request");
        s.flush().ok();
        // Dropping the session sends nothing; the duplicate socket keeps the connection open.
        drop(s);
        socket
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.socket.set_read_timeout(Some(t)).ok();
    }

    /// The next event, or None when the stream ends or times out.
    pub fn next_event(&mut self) -> Option<Value> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    return Some(v);
                }
                continue;
            }
            // Read one chunk: size line, data, CRLF.
            let mut size_line = String::new();
            if self.reader.read_line(&mut size_line).ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(size_line.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            let mut buf = vec![0; size + 2];
            self.reader.read_exact(&mut buf).ok()?;
            buf.truncate(size);
            self.pending.extend_from_slice(&buf);
        }
    }
}

/// Waits until `f` is true or panics with `what` after `timeout`.
pub fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Builds the test images and starts the local registries (`scripts/test-images.sh`, idempotent).
pub fn test_images() {
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/test-images.sh"
        ))
        .stdout(Stdio::null())
        .status()
        .expect("running scripts/test-images.sh");
    assert!(status.success(), "scripts/test-images.sh failed");
}

/// A TCP port that is free on every interface right now, for servers a test starts with a fixed
/// port (a kubelet's `--port`). It is taken below the kernel's ephemeral range (32768–60999 here),
/// so no outgoing connection of any process can grab it between this call and the server's bind
/// (the kernel's own pick for port 0 can be); a per-process counter, started from the pid, keeps
/// callers in one test binary apart, and the bind check skips ports someone already holds.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(97) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind(("0.0.0.0", port));
        let udp = std::net::UdpSocket::bind(("0.0.0.0", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

/// A `10.x.y.` prefix of a /24 that no route on this host covers yet; `seed` spreads callers.
pub fn free_subnet(seed: usize) -> String {
    let routes = Command::new("ip")
        .args(["-4", "route"])
        .output()
        .expect("running ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    let taken: std::collections::HashSet<String> = routes
        .split_whitespace()
        .filter_map(|w| {
            let ip = w.split('/').next()?;
            let o: Vec<&str> = ip.split('.').collect();
            (o.len() == 4).then(|| format!("{}.{}.{}.", o[0], o[1], o[2]))
        })
        .collect();
    for i in 0..2000 {
        let v = (seed + i * 17) % 4000;
        let prefix = format!("10.{}.{}.", 200 + v / 250, v % 250 + 1);
        if !taken.contains(&prefix) {
            return prefix;
        }
    }
    panic!("no free 10.x.y.0/24 for the test network")
}

/// One process of the host: parent and command line.
pub struct Proc {
    pub ppid: u32,
    pub cmdline: String,
}

/// Every live (not zombie) process of the host, by pid.
pub fn processes() -> std::collections::HashMap<u32, Proc> {
    let mut out = std::collections::HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
        let mut rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace())
            .into_iter()
            .flatten();
        if rest.next() == Some("Z") {
            continue;
        }
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmdline = std::fs::read(e.path().join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .replace('\0', " ")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default();
        out.insert(pid, Proc { ppid, cmdline });
    }
    out
}
