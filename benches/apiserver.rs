//! Benchmarks of Capstan's API server (`capstan apiserver`), see BENCHMARKS.md.
//!
//! Every run starts its own servers on temporary data dirs and kills them at the end (a guard
//! with `Drop`, which also runs on panic; the children also get SIGKILL if this process dies):
//!
//! 1. creates: ConfigMaps and Pods POSTed through the HTTP API by 1, 16 and 64 concurrent
//!    keep-alive clients for a fixed time, next to the same keys and JSON values written as raw
//!    puts to a local etcd (Debian's etcd-server) with the same concurrency;
//! 2. watch fan-out: kubelet-like watchers (`fieldSelector=spec.nodeName=node-<i>`) and
//!    unfiltered watchers of one namespace while pods are patched at a fixed rate; each patch
//!    carries its send time in an annotation, so the watcher measures send→receipt;
//! 3. LIST: a full `GET /api/v1/pods` over many pods (served from the watch cache).
//!
//! It prints markdown tables on stdout and progress on stderr, and writes no files of its own.
//!
//! Settings (environment): CAPSTAN_BENCH_SECS (seconds per create cell, default 10),
//! CAPSTAN_BENCH_CLIENTS (default "1,16,64"), CAPSTAN_BENCH_NODES (kubelet watchers, 1000),
//! CAPSTAN_BENCH_NODE_RATE (pod updates/s to them, 1000), CAPSTAN_BENCH_WIDE (unfiltered
//! watchers, 100), CAPSTAN_BENCH_WIDE_RATE (updates/s to their namespace, 100),
//! CAPSTAN_BENCH_WATCH_SECS (20), CAPSTAN_BENCH_LIST_PODS (50000), CAPSTAN_BENCH_LIST_REPS (5),
//! CAPSTAN_BENCH_ONLY (comma list of create,watch,list; default all), ETCD_BIN (default "etcd").
//! `--quick` (or CAPSTAN_BENCH_QUICK=1) shrinks the defaults for a smoke run.

// Raising RLIMIT_NOFILE and setting PR_SET_PDEATHSIG on the children are libc calls.
#![allow(unsafe_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The TLS client configuration of the benchmarked API server (its admin kubeconfig).
static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Settings

struct Config {
    secs: f64,
    clients: Vec<usize>,
    nodes: usize,
    node_rate: f64,
    wide: usize,
    wide_rate: f64,
    watch_secs: f64,
    list_pods: usize,
    list_reps: usize,
    sections: Vec<String>,
    etcd_bin: String,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Self {
        let quick = std::env::args().any(|a| a == "--quick")
            || std::env::var("CAPSTAN_BENCH_QUICK").is_ok_and(|v| v == "1");
        let clients = std::env::var("CAPSTAN_BENCH_CLIENTS")
            .unwrap_or_else(|_| "1,16,64".into())
            .split(',')
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let sections = std::env::var("CAPSTAN_BENCH_ONLY")
            .unwrap_or_else(|_| "create,watch,list".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        Config {
            secs: env_or("CAPSTAN_BENCH_SECS", if quick { 2.0 } else { 10.0 }),
            clients,
            nodes: env_or("CAPSTAN_BENCH_NODES", 1000),
            node_rate: env_or("CAPSTAN_BENCH_NODE_RATE", 1000.0),
            wide: env_or("CAPSTAN_BENCH_WIDE", 100),
            wide_rate: env_or("CAPSTAN_BENCH_WIDE_RATE", 100.0),
            watch_secs: env_or("CAPSTAN_BENCH_WATCH_SECS", if quick { 5.0 } else { 20.0 }),
            list_pods: env_or("CAPSTAN_BENCH_LIST_PODS", if quick { 5000 } else { 50_000 }),
            list_reps: env_or("CAPSTAN_BENCH_LIST_REPS", if quick { 3 } else { 5 }),
            sections,
            etcd_bin: std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()),
        }
    }

    fn wants(&self, s: &str) -> bool {
        self.sections.iter().any(|x| x == s)
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is SIGKILLed and reaped when dropped, with its temporary data dir.
struct Proc {
    child: Option<Child>,
    pid: u32,
    // Dropped after the child is killed (fields drop after `Drop::drop`).
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Res<Self> {
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
        // this process goes away without running the guards (e.g. it was killed itself).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        Ok(Proc {
            pid: child.id(),
            child: Some(child),
            _dir: dir,
        })
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tempdir(prefix: &str) -> Res<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))
}

struct Capstan {
    proc: Proc,
    base: String,
}

fn start_capstan() -> Res<Capstan> {
    let dir = tempdir("capstan-bench-")?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(["apiserver", "--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--advertise-address",
            "127.0.0.1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(cmd, dir)?;
    let stdout = proc
        .child
        .as_mut()
        .and_then(|c| c.stdout.take())
        .ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("capstan apiserver serving on ")
        .ok_or_else(|| format!("capstan apiserver did not start; it printed {first:?}"))?
        .trim()
        .to_string();
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let kubeconfig = std::fs::read_to_string(proc._dir.path().join("admin.kubeconfig"))
        .map_err(|e| format!("reading the admin kubeconfig: {e}"))?;
    let _ = TLS.set(tls_config(&kubeconfig)?);
    Ok(Capstan {
        proc,
        base: format!("https://{addr}"),
    })
}

/// The admin kubeconfig's CA and client certificate as a rustls configuration.
fn tls_config(kubeconfig: &str) -> Res<rustls::ClientConfig> {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let data = |key: &str| -> Res<Vec<u8>> {
        let line = kubeconfig
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .ok_or(format!("no {key} in the kubeconfig"))?;
        base64::engine::general_purpose::STANDARD
            .decode(line.split_once(':').map(|(_, v)| v.trim()).unwrap_or(""))
            .map_err(|e| format!("{key}: {e}"))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&data("certificate-authority-data")?) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let chain = CertificateDer::pem_slice_iter(&data("client-certificate-data")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let key =
        PrivateKeyDer::from_pem_slice(&data("client-key-data")?).map_err(|e| e.to_string())?;
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| e.to_string())
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

struct Etcd {
    proc: Proc,
    endpoint: String,
}

/// Starts a single-member etcd with its default durability (fsync of the WAL per batch commit).
async fn start_etcd(bin: &str) -> Res<(Etcd, etcd_client::Client)> {
    let dir = tempdir("etcd-bench-")?;
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let endpoint = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--name")
        .arg("bench")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("bench={peer}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut proc = Proc::spawn(cmd, dir)?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.exited() {
            return Err(format!("etcd exited at start: {status}"));
        }
        let attempt = async {
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(30));
            let mut c = etcd_client::Client::connect([endpoint.as_str()], Some(opts))
                .await
                .ok()?;
            c.status().await.ok()?;
            Some(c)
        };
        if let Ok(Some(c)) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok((Etcd { proc, endpoint }, c));
        }
        if Instant::now() > until {
            return Err("etcd did not become ready in 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
    }
    rl.rlim_cur
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// User + system CPU seconds a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command name start at field 3 (state): utime is 14, stime 15.
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// A `/proc/PID/status` field in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| {
                    l[field.len() + 1..]
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse().ok())
                })
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn http_client() -> Http {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.enforce_http(false);
    let tls = TLS
        .get()
        .cloned()
        .expect("start_capstan runs before http_client");
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(conn);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(300))
        .build(conn)
}

async fn send(
    http: &Http,
    method: Method,
    uri: &str,
    ctype: &str,
    body: Bytes,
) -> Res<(StatusCode, Bytes)> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ctype)
        .header("accept", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = http
        .request(req)
        .await
        .map_err(|e| format!("{uri}: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{uri}: body: {e}"))?
        .to_bytes();
    Ok((status, body))
}

async fn get_json(http: &Http, uri: &str) -> Res<serde_json::Value> {
    let (status, body) = send(http, Method::GET, uri, "application/json", Bytes::new()).await?;
    if !status.is_success() {
        return Err(format!(
            "GET {uri}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {uri}: {e}"))
}

async fn metric(http: &Http, base: &str, name_and_labels: &str) -> Option<f64> {
    let (_, body) = send(
        http,
        Method::GET,
        &format!("{base}/metrics"),
        "text/plain",
        Bytes::new(),
    )
    .await
    .ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Objects

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    ConfigMap,
    Pod,
}

impl Kind {
    fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Pod => "pods",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Pod => "Pod",
        }
    }
}

fn configmap_json(ns: &str, name: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "data": {
            "app.properties": "log.level=info\nlisten.port=8080\ncache.size=512\nfeature.flags=a,b,c\n",
            "owner": "capstan-bench",
        },
    })
    .to_string()
    .into_bytes()
}

fn pod_json(ns: &str, name: &str, node: Option<&str>) -> Vec<u8> {
    let mut spec = serde_json::json!({
        "containers": [{
            "name": "app",
            "image": "registry.example/bench/app:1.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }],
    });
    if let Some(n) = node {
        spec["nodeName"] = serde_json::json!(n);
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "tier": "backend"}},
        "spec": spec,
    })
    .to_string()
    .into_bytes()
}

fn object_json(kind: Kind, ns: &str, name: &str) -> Vec<u8> {
    match kind {
        Kind::ConfigMap => configmap_json(ns, name),
        Kind::Pod => pod_json(ns, name, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    lat_us: Vec<u32>,
    elapsed: Duration,
    cpu: f64,
    client_cpu: f64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.ok += o.ok;
        self.errors += o.errors;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.lat_us.extend(o.lat_us);
    }
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn pct_ms(&mut self, p: f64) -> f64 {
        pct_ms(&mut self.lat_us, p)
    }
    fn cpu_pct(&self) -> f64 {
        100.0 * self.cpu / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn client_cpu_pct(&self) -> f64 {
        100.0 * self.client_cpu / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn pct_ms(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Runs `conc` workers that each call `op(worker, seq)` back to back until `dur` has passed.
async fn drive<F, Fut>(conc: usize, dur: Duration, pid: u32, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Res<()>> + Send,
{
    let cpu0 = cpu_secs(pid);
    let my_cpu0 = cpu_secs(std::process::id());
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = JoinSet::new();
    for w in 0..conc {
        let op = op.clone();
        set.spawn(async move {
            let mut s = Stats::default();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match op(w, seq).await {
                    Ok(()) => {
                        s.ok += 1;
                        s.lat_us
                            .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => {
                        s.errors += 1;
                        if s.first_error.is_none() {
                            s.first_error = Some(e);
                        }
                        if s.errors > 1000 && s.ok == 0 {
                            break;
                        }
                    }
                }
                seq += 1;
            }
            s
        });
    }
    let mut total = Stats::default();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            total.merge(s);
        }
    }
    total.elapsed = start.elapsed();
    total.cpu = cpu_secs(pid) - cpu0;
    total.client_cpu = cpu_secs(std::process::id()) - my_cpu0;
    total
}

/// POSTs every (collection path, body) with `conc` concurrent clients; 201 and 409 count as done.
async fn create_all(http: &Http, base: &str, items: Vec<(String, Vec<u8>)>, conc: usize) -> Stats {
    let items: Arc<Vec<(String, Bytes)>> = Arc::new(
        items
            .into_iter()
            .map(|(p, b)| (p, Bytes::from(b)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..conc {
        let (items, next, http, base) =
            (items.clone(), next.clone(), http.clone(), base.to_string());
        set.spawn(async move {
            let mut s = Stats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, body)) = items.get(i) else {
                    break;
                };
                let t0 = Instant::now();
                let r = send(
                    &http,
                    Method::POST,
                    &format!("{base}{path}"),
                    "application/json",
                    body.clone(),
                )
                .await;
                match r {
                    Ok((st, _)) if st == StatusCode::CREATED || st == StatusCode::CONFLICT => {
                        s.ok += 1;
                        s.lat_us.push(t0.elapsed().as_micros() as u32);
                    }
                    Ok((st, b)) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| {
                            format!("{st}: {}", String::from_utf8_lossy(&b))
                        });
                    }
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert(e);
                    }
                }
            }
            s
        });
    }
    let mut total = Stats::default();
    while let Some(r) = set.join_next().await {
        if let Ok(s) = r {
            total.merge(s);
        }
    }
    total.elapsed = start.elapsed();
    total
}

fn note_errors(what: &str, s: &Stats) {
    if s.errors > 0 {
        eprintln!(
            "# {what}: {} errors; first: {}",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Creates

async fn capstan_creates(kind: Kind, conc: usize, dur: Duration) -> Res<Stats> {
    let srv = start_capstan()?;
    let http = http_client();
    let uri = Arc::new(format!(
        "{}/api/v1/namespaces/default/{}",
        srv.base,
        kind.resource()
    ));
    let s = drive(conc, dur, srv.proc.pid, move |w, seq| {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            let body = object_json(kind, "default", &format!("b-{w}-{seq}"));
            let (st, b) = send(
                &http,
                Method::POST,
                &uri,
                "application/json",
                Bytes::from(body),
            )
            .await?;
            if st == StatusCode::CREATED {
                Ok(())
            } else {
                Err(format!("{st}: {}", String::from_utf8_lossy(&b)))
            }
        }
    })
    .await;
    drop(srv);
    Ok(s)
}

async fn etcd_puts(bin: &str, kind: Kind, conc: usize, dur: Duration) -> Res<Stats> {
    let (etcd, client) = start_etcd(bin).await?;
    // A few gRPC connections (kube-apiserver also multiplexes its requests over few of them).
    let mut clients = vec![client.kv_client()];
    for _ in 1..conc.min(8) {
        let c = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
            .await
            .map_err(|e| format!("etcd connect: {e}"))?;
        clients.push(c.kv_client());
    }
    let clients = Arc::new(clients);
    let s = drive(conc, dur, etcd.proc.pid, move |w, seq| {
        let mut kv = clients[w % clients.len()].clone();
        async move {
            let name = format!("b-{w}-{seq}");
            let key = format!("/registry/{}/default/{name}", kind.resource());
            kv.put(key, object_json(kind, "default", &name), None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await;
    drop(etcd);
    Ok(s)
}

async fn section_creates(cfg: &Config) -> Res<()> {
    let dur = Duration::from_secs_f64(cfg.secs);
    println!(
        "## 1. Creates ({} s per cell, fresh server per cell)\n",
        cfg.secs
    );
    println!("| object | clients | capstan creates/s | p50 ms | p99 ms | capstan CPU % (bench) | etcd puts/s | p50 ms | p99 ms | etcd CPU % (bench) | capstan/etcd |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for kind in [Kind::ConfigMap, Kind::Pod] {
        for &conc in &cfg.clients {
            eprintln!("# creates: {} x{conc} capstan", kind.label());
            let mut c = capstan_creates(kind, conc, dur).await?;
            note_errors("capstan creates", &c);
            eprintln!("# creates: {} x{conc} etcd", kind.label());
            let mut e = etcd_puts(&cfg.etcd_bin, kind, conc, dur).await?;
            note_errors("etcd puts", &e);
            println!(
                "| {} | {conc} | {:.0} | {:.2} | {:.2} | {:.0} ({:.0}) | {:.0} | {:.2} | {:.2} | {:.0} ({:.0}) | {:.2} |",
                kind.label(),
                c.rate(),
                c.pct_ms(0.5),
                c.pct_ms(0.99),
                c.cpu_pct(),
                c.client_cpu_pct(),
                e.rate(),
                e.pct_ms(0.5),
                e.pct_ms(0.99),
                e.cpu_pct(),
                e.client_cpu_pct(),
                c.rate() / e.rate().max(1e-9)
            );
        }
    }
    println!(
        "\nCPU % is the server process's user+system time over the cell, (bench) the load generator's, on the same 2 cores (200 % = both).\n"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Watch fan-out

const SENT_ANNOTATION: &str = "bench/sent-ns";

#[derive(Default)]
struct WatchResult {
    lat_us: Vec<u32>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    closed_by_server: bool,
}

/// One watch connection: records send→receipt latency of every event that carries the annotation.
async fn watcher(
    http: Http,
    uri: String,
    connected: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> WatchResult {
    let mut r = WatchResult::default();
    let req = match Request::get(&uri)
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))
    {
        Ok(q) => q,
        Err(e) => {
            r.errors += 1;
            r.first_error = Some(e.to_string());
            return r;
        }
    };
    let resp = match http.request(req).await {
        Ok(resp) if resp.status().is_success() => resp,
        Ok(resp) => {
            r.errors += 1;
            r.first_error = Some(format!("watch status {}", resp.status()));
            return r;
        }
        Err(e) => {
            r.errors += 1;
            r.first_error = Some(format!("watch: {e:?}"));
            return r;
        }
    };
    connected.fetch_add(1, Ordering::Relaxed);
    let needle = format!("\"{SENT_ANNOTATION}\":\"");
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let frame = tokio::select! {
            _ = stop.changed() => break,
            f = body.frame() => f,
        };
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("watch body: {e}"));
                break;
            }
            None => {
                r.closed_by_server = !*stop.borrow();
                break;
            }
        };
        let now = now_ns();
        buf.extend_from_slice(&data);
        let mut start = 0;
        while let Some(p) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + p];
            start += p + 1;
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            if line.starts_with("{\"type\":\"ERROR\"") {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| line.chars().take(300).collect());
                continue;
            }
            if line.starts_with("{\"type\":\"BOOKMARK\"") {
                continue;
            }
            r.events += 1;
            if let Some(i) = line.find(&needle) {
                let rest = &line[i + needle.len()..];
                if let Some(sent) = rest.split('"').next().and_then(|v| v.parse::<u128>().ok()) {
                    r.lat_us
                        .push((now.saturating_sub(sent) / 1000).min(u32::MAX as u128) as u32);
                }
            }
        }
        buf.drain(..start);
    }
    r
}

/// Patches pods at fixed rates (10 ms ticks); every patch writes its send time into an annotation.
async fn update_load(
    http: &Http,
    base: &str,
    cfg: &Config,
    dur: Duration,
) -> (Stats, u64, u64, f64) {
    let sem = Arc::new(Semaphore::new(512));
    let fan_ok = Arc::new(AtomicU64::new(0));
    let wide_ok = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let ticks = (dur.as_secs_f64() * 100.0).round() as u64;
    let (mut acc_n, mut acc_w) = (0.0f64, 0.0f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut set = JoinSet::new();
    let start = Instant::now();
    for _ in 0..ticks {
        tick.tick().await;
        acc_n += cfg.node_rate / 100.0;
        acc_w += cfg.wide_rate / 100.0;
        let mut batch = Vec::new();
        while acc_n >= 1.0 && cfg.nodes > 0 {
            acc_n -= 1.0;
            batch.push((
                format!("{base}/api/v1/namespaces/fanout/pods/kp-{}", i % cfg.nodes),
                true,
            ));
            i += 1;
        }
        while acc_w >= 1.0 {
            acc_w -= 1.0;
            batch.push((
                format!("{base}/api/v1/namespaces/wide/pods/wp-{}", j % 100),
                false,
            ));
            j += 1;
        }
        for (uri, fan) in batch {
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let (http, counter) = (
                http.clone(),
                if fan { fan_ok.clone() } else { wide_ok.clone() },
            );
            set.spawn(async move {
                let _permit = permit;
                let body = format!(
                    "{{\"metadata\":{{\"annotations\":{{\"{SENT_ANNOTATION}\":\"{}\"}}}}}}",
                    now_ns()
                );
                let t0 = Instant::now();
                let r = send(
                    &http,
                    Method::PATCH,
                    &uri,
                    "application/merge-patch+json",
                    Bytes::from(body),
                )
                .await;
                let lat = t0.elapsed().as_micros() as u32;
                match r {
                    Ok((st, _)) if st == StatusCode::OK => {
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok(lat)
                    }
                    Ok((st, b)) => Err(format!(
                        "PATCH {uri}: {st}: {}",
                        String::from_utf8_lossy(&b)
                    )),
                    Err(e) => Err(e),
                }
            });
        }
    }
    let offered = start.elapsed().as_secs_f64();
    let mut s = Stats::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(lat)) => {
                s.ok += 1;
                s.lat_us.push(lat);
            }
            Ok(Err(e)) => {
                s.errors += 1;
                s.first_error.get_or_insert(e);
            }
            Err(e) => {
                s.errors += 1;
                s.first_error.get_or_insert(e.to_string());
            }
        }
    }
    s.elapsed = start.elapsed();
    (
        s,
        fan_ok.load(Ordering::Relaxed),
        wide_ok.load(Ordering::Relaxed),
        offered,
    )
}

async fn section_watch(cfg: &Config) -> Res<()> {
    let srv = start_capstan()?;
    let pid = srv.proc.pid;
    let base = srv.base.clone();
    let http = http_client();
    for ns in ["fanout", "wide"] {
        let body = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"{ns}\"}}}}"
        );
        let (st, b) = send(
            &http,
            Method::POST,
            &format!("{base}/api/v1/namespaces"),
            "application/json",
            body.into(),
        )
        .await?;
        if st != StatusCode::CREATED && st != StatusCode::CONFLICT {
            return Err(format!(
                "creating namespace {ns}: {st}: {}",
                String::from_utf8_lossy(&b)
            ));
        }
    }
    let mut items = Vec::new();
    for i in 0..cfg.nodes {
        let node = format!("node-{i}");
        items.push((
            "/api/v1/namespaces/fanout/pods".to_string(),
            pod_json("fanout", &format!("kp-{i}"), Some(&node)),
        ));
    }
    for j in 0..100 {
        items.push((
            "/api/v1/namespaces/wide/pods".to_string(),
            pod_json("wide", &format!("wp-{j}"), Some("wide-node")),
        ));
    }
    eprintln!("# watch: creating {} pods", items.len());
    let c = create_all(&http, &base, items, 64).await;
    note_errors("watch setup creates", &c);
    let rv = get_json(&http, &format!("{base}/api/v1/pods?limit=1")).await?["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proc_kib(pid, "VmRSS");

    let total = cfg.nodes + cfg.wide;
    eprintln!("# watch: opening {total} watches from resourceVersion {rv}");
    let watch_http = http_client();
    let connected = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut watchers = JoinSet::new();
    let open_start = Instant::now();
    for i in 0..cfg.nodes {
        let uri = format!(
            "{base}/api/v1/pods?watch=true&resourceVersion={rv}&timeoutSeconds=3600&fieldSelector=spec.nodeName%3Dnode-{i}"
        );
        let w = watcher(watch_http.clone(), uri, connected.clone(), stop_rx.clone());
        watchers.spawn(async move { (true, w.await) });
    }
    for _ in 0..cfg.wide {
        let uri = format!("{base}/api/v1/namespaces/wide/pods?watch=true&resourceVersion={rv}&timeoutSeconds=3600");
        let w = watcher(watch_http.clone(), uri, connected.clone(), stop_rx.clone());
        watchers.spawn(async move { (false, w.await) });
    }
    let until = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < total && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_secs = open_start.elapsed().as_secs_f64();
    let until = Instant::now() + Duration::from_secs(30);
    let mut registered = 0.0;
    while Instant::now() < until {
        registered = metric(
            &http,
            &base,
            "apiserver_registered_watchers{resource=\"pods\"}",
        )
        .await
        .unwrap_or(0.0);
        if registered as usize >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = proc_kib(pid, "VmRSS");
    eprintln!(
        "# watch: {} connected, {registered} registered in {open_secs:.1} s; updating for {} s",
        connected.load(Ordering::Relaxed),
        cfg.watch_secs
    );

    let cpu0 = cpu_secs(pid);
    let me = std::process::id();
    let my_cpu0 = cpu_secs(me);
    let (mut writes, fan_ok, wide_ok, offered_secs) =
        update_load(&http, &base, cfg, Duration::from_secs_f64(cfg.watch_secs)).await;
    note_errors("watch updates", &writes);
    let write_secs = writes.elapsed.as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let my_cpu = cpu_secs(me) - my_cpu0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_load = proc_kib(pid, "VmRSS");
    let hwm = proc_kib(pid, "VmHWM");
    let terminated = metric(
        &http,
        &base,
        "apiserver_terminated_watchers_total{resource=\"pods\"}",
    )
    .await;
    let _ = stop_tx.send(true);

    let (mut kube, mut wide) = (WatchResult::default(), WatchResult::default());
    let (mut kube_closed, mut wide_closed) = (0, 0);
    while let Some(r) = watchers.join_next().await {
        let Ok((is_kube, r)) = r else { continue };
        let (agg, closed) = if is_kube {
            (&mut kube, &mut kube_closed)
        } else {
            (&mut wide, &mut wide_closed)
        };
        agg.lat_us.extend(r.lat_us);
        agg.events += r.events;
        agg.errors += r.errors;
        if agg.first_error.is_none() {
            agg.first_error = r.first_error;
        }
        *closed += r.closed_by_server as u64;
    }
    for (what, r) in [("kubelet watchers", &kube), ("unfiltered watchers", &wide)] {
        if r.errors > 0 {
            eprintln!(
                "# {what}: {} errors; first: {}",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    drop(srv);

    println!("## 2. Watch fan-out ({} s of updates)\n", cfg.watch_secs);
    println!("| watchers | selector | updates/s offered (achieved) | events expected | events received | delivery p50 ms | p99 ms | max ms | closed by server |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let kube_expected = fan_ok;
    let wide_expected = wide_ok * cfg.wide as u64;
    let kmax = kube.lat_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
    let wmax = wide.lat_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
    println!(
        "| {} | spec.nodeName=node-i | {:.0} ({:.0}) | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
        cfg.nodes,
        cfg.node_rate,
        fan_ok as f64 / write_secs,
        kube_expected,
        kube.events,
        pct_ms(&mut kube.lat_us, 0.5),
        pct_ms(&mut kube.lat_us, 0.99),
        kmax,
        kube_closed
    );
    println!(
        "| {} | none (namespace wide) | {:.0} ({:.0}) | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
        cfg.wide,
        cfg.wide_rate,
        wide_ok as f64 / write_secs,
        wide_expected,
        wide.events,
        pct_ms(&mut wide.lat_us, 0.5),
        pct_ms(&mut wide.lat_us, 0.99),
        wmax,
        wide_closed
    );
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!("| watches opened (all connected after) | {total} in {open_secs:.1} s |");
    println!("| server RSS before watches | {:.1} MiB |", mib(rss_before));
    println!(
        "| server RSS with idle watches | {:.1} MiB |",
        mib(rss_idle)
    );
    println!(
        "| RSS per watcher (idle) | {:.1} KiB |",
        rss_idle.saturating_sub(rss_before) as f64 / total.max(1) as f64
    );
    println!(
        "| server RSS after the updates | {:.1} MiB |",
        mib(rss_load)
    );
    println!(
        "| RSS per watcher (after updates) | {:.1} KiB |",
        rss_load.saturating_sub(rss_before) as f64 / total.max(1) as f64
    );
    println!("| server VmHWM | {:.1} MiB |", mib(hwm));
    println!(
        "| PATCH ack p50 / p99 | {:.1} / {:.1} ms |",
        writes.pct_ms(0.5),
        writes.pct_ms(0.99)
    );
    println!("| PATCH errors | {} |", writes.errors);
    println!("| update phase (offered for) | {write_secs:.1} s ({offered_secs:.1} s) |");
    println!(
        "| server CPU during updates | {:.0} % |",
        100.0 * cpu / write_secs.max(1e-9)
    );
    println!(
        "| bench client CPU during updates (same 2 cores) | {:.0} % |",
        100.0 * my_cpu / write_secs.max(1e-9)
    );
    println!(
        "| apiserver_terminated_watchers_total (pods) | {} |",
        terminated
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    );
    println!("\nDelivery latency: the patch's send time (annotation `{SENT_ANNOTATION}`) to the watcher's receipt of the event; it includes the write and its fsync.\n");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. LIST

async fn section_list(cfg: &Config) -> Res<()> {
    let srv = start_capstan()?;
    let pid = srv.proc.pid;
    let base = srv.base.clone();
    let http = http_client();
    let items: Vec<(String, Vec<u8>)> = (0..cfg.list_pods)
        .map(|i| {
            let node = format!("node-{}", i % 1000);
            (
                "/api/v1/namespaces/default/pods".to_string(),
                pod_json("default", &format!("lp-{i}"), Some(&node)),
            )
        })
        .collect();
    eprintln!("# list: creating {} pods", cfg.list_pods);
    let cpu0 = cpu_secs(pid);
    let mut created = create_all(&http, &base, items, 64).await;
    let create_cpu = cpu_secs(pid) - cpu0;
    note_errors("list setup creates", &created);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = proc_kib(pid, "VmRSS");
    let hwm_before = proc_kib(pid, "VmHWM");

    let mut rows = Vec::new();
    let mut count = 0usize;
    let mut size = 0usize;
    for rep in 0..cfg.list_reps {
        let uri = format!("{base}/api/v1/pods");
        let t0 = Instant::now();
        let req = Request::get(&uri)
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = http
            .request(req)
            .await
            .map_err(|e| format!("LIST: {e:?}"))?;
        let head = t0.elapsed();
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("LIST body: {e}"))?
            .to_bytes();
        let total = t0.elapsed();
        if !status.is_success() {
            return Err(format!("LIST: {status}"));
        }
        if rep == 0 {
            size = body.len();
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("LIST JSON: {e}"))?;
            count = v["items"].as_array().map(|a| a.len()).unwrap_or(0);
        }
        rows.push((head, total, proc_kib(pid, "VmRSS")));
    }
    let hwm_after = proc_kib(pid, "VmHWM");

    // The same list in pages of 500, as kubectl and informers do.
    let t0 = Instant::now();
    let mut pages = 0;
    let mut paged = 0usize;
    let mut cont = String::new();
    loop {
        let uri = if cont.is_empty() {
            format!("{base}/api/v1/pods?limit=500")
        } else {
            format!("{base}/api/v1/pods?limit=500&continue={cont}")
        };
        let v = get_json(&http, &uri).await?;
        pages += 1;
        paged += v["items"].as_array().map(|a| a.len()).unwrap_or(0);
        cont = v["metadata"]["continue"].as_str().unwrap_or("").to_string();
        if cont.is_empty() || pages > 100_000 {
            break;
        }
    }
    let paged_secs = t0.elapsed().as_secs_f64();
    drop(srv);

    let (c50, c99) = (created.pct_ms(0.5), created.pct_ms(0.99));
    println!("## 3. LIST of {} pods\n", cfg.list_pods);
    println!(
        "Setup: {} pods created by 64 clients in {:.1} s ({:.0} creates/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.0} %).\n",
        created.ok,
        created.elapsed.as_secs_f64(),
        created.rate(),
        c50,
        c99,
        100.0 * create_cpu / created.elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "| run | items | body MiB | time to headers ms | full LIST ms | server RSS after MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (i, (head, total, rss)) in rows.iter().enumerate() {
        println!(
            "| {} | {count} | {:.1} | {:.0} | {:.0} | {:.1} |",
            i + 1,
            size as f64 / 1048576.0,
            head.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0,
            mib(*rss)
        );
    }
    let mut totals: Vec<u32> = rows.iter().map(|r| r.1.as_micros() as u32).collect();
    println!();
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| full LIST p50 / max | {:.0} / {:.0} ms |",
        pct_ms(&mut totals, 0.5),
        pct_ms(&mut totals, 1.0)
    );
    println!(
        "| paginated LIST (limit=500, {pages} pages, {paged} items) | {:.0} ms |",
        paged_secs * 1000.0
    );
    println!(
        "| server RSS before the LISTs | {:.1} MiB |",
        mib(rss_before)
    );
    println!(
        "| server VmHWM before the LISTs (after the creates) | {:.1} MiB |",
        mib(hwm_before)
    );
    println!(
        "| server VmHWM after the LISTs | {:.1} MiB |",
        mib(hwm_after)
    );
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let cfg = Config::from_env();
    let nofile = raise_nofile();
    let needed = (cfg.nodes + cfg.wide) as u64 + 256;
    if cfg.wants("watch") && nofile < needed {
        eprintln!("# warning: RLIMIT_NOFILE is {nofile}, the watch section needs about {needed}: raise `ulimit -n`");
    }
    println!("# capstan apiserver benchmarks\n");
    println!(
        "Settings: {} s per create cell, clients {:?}; {} kubelet watchers at {} updates/s, {} unfiltered watchers at {} updates/s for {} s; LIST of {} pods x{}.\n",
        cfg.secs, cfg.clients, cfg.nodes, cfg.node_rate, cfg.wide, cfg.wide_rate, cfg.watch_secs, cfg.list_pods, cfg.list_reps
    );
    let mut failed = false;
    if cfg.wants("create") {
        if let Err(e) = section_creates(&cfg).await {
            eprintln!("# creates failed: {e}");
            failed = true;
        }
    }
    if cfg.wants("watch") {
        if let Err(e) = section_watch(&cfg).await {
            eprintln!("# watch fan-out failed: {e}");
            failed = true;
        }
    }
    if cfg.wants("list") {
        if let Err(e) = section_list(&cfg).await {
            eprintln!("# list failed: {e}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
