//! Benchmarks of the API server's security layer (issue 10), see BENCHMARKS.md:
//!
//! 1. webhook admission overhead: Pod creates through `capstan apiserver` with no webhook, one
//!    validating webhook and one mutating webhook (a local TLS webhook server, the one the
//!    `security_webhooks` tests use), 1 and 16 keep-alive clients, a fresh server per cell;
//! 2. authorization: the RBAC decision (`Authorizer::decide`, in process) with 1,000
//!    RoleBindings and ClusterRoleBindings in the cache, for a user bound by the last binding,
//!    a user bound by none (a full scan, then the 403) and `system:masters`;
//! 3. TLS: ConfigMap creates over TLS with keep-alive connections (the `apiserver` benchmark's
//!    create cell, 1/16/64 clients) and with a new TLS connection per request (handshake plus
//!    client-certificate authentication each time). The API server serves only TLS now; the
//!    plain-HTTP figures to compare with are the ones BENCHMARKS.md recorded before.
//!
//! Prints markdown tables on stdout, progress on stderr. Every server it starts is killed by a
//! guard (also on panic; the children get SIGKILL if this process dies).
//!
//! Settings (environment): CAPSTAN_BENCH_SECS (seconds per cell, default 5),
//! CAPSTAN_BENCH_ONLY (comma list of webhook,rbac,tls; default all),
//! CAPSTAN_BENCH_AUTHZ_ITERS (decisions per case, default 20000).

// PR_SET_PDEATHSIG on the children is a libc call.
#![allow(unsafe_code)]

#[path = "../tests/common/webhook.rs"]
mod webhook;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::task::JoinSet;

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;
type Res<T> = Result<T, String>;

struct Settings {
    secs: f64,
    only: Vec<String>,
    authz_iters: usize,
}

impl Settings {
    fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok();
        Settings {
            secs: get("CAPSTAN_BENCH_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5.0),
            only: get("CAPSTAN_BENCH_ONLY")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
            authz_iters: get("CAPSTAN_BENCH_AUTHZ_ITERS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(20_000),
        }
    }
    fn wants(&self, s: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == s)
    }
}

// ---------------------------------------------------------------------------------------------
// The API server process

struct Capstan {
    child: Child,
    base: String,
    tls: rustls::ClientConfig,
    _dir: tempfile::TempDir,
}

impl Drop for Capstan {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_capstan() -> Res<Capstan> {
    let dir = tempfile::Builder::new()
        .prefix("capstan-security-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
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
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when this
    // process goes away without running the guards.
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
    let mut child = cmd.spawn().map_err(|e| format!("spawning capstan: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    std::thread::spawn(move || for _ in lines {});
    let addr = first
        .strip_prefix("capstan apiserver serving on ")
        .ok_or_else(|| format!("capstan apiserver did not start; it printed {first:?}"))?
        .trim()
        .to_string();
    let kubeconfig = std::fs::read_to_string(dir.path().join("admin.kubeconfig"))
        .map_err(|e| format!("reading the admin kubeconfig: {e}"))?;
    Ok(Capstan {
        child,
        base: format!("https://{addr}"),
        tls: tls_config(&kubeconfig)?,
        _dir: dir,
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
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// An HTTPS client; `keep_alive` false opens a new TLS connection for every request.
fn http_client(tls: &rustls::ClientConfig, keep_alive: bool) -> Http {
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    conn.enforce_http(false);
    let conn = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_only()
        .enable_http1()
        .wrap_connector(conn);
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(300));
    if !keep_alive {
        b.pool_max_idle_per_host(0);
    }
    b.build(conn)
}

async fn post(http: &Http, uri: &str, body: Bytes) -> Res<(StatusCode, Bytes)> {
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("content-type", "application/json")
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
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

async fn create(http: &Http, uri: &str, body: Vec<u8>) -> Res<Bytes> {
    let (st, b) = post(http, uri, Bytes::from(body)).await?;
    if st == StatusCode::CREATED {
        Ok(b)
    } else {
        Err(format!("{st}: {}", String::from_utf8_lossy(&b)))
    }
}

fn pod_json(name: &str) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench", "tier": "backend"}},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.example/bench/app:1.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }]},
    })
    .to_string()
    .into_bytes()
}

fn configmap_json(name: &str) -> Vec<u8> {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench"}},
        "data": {"key": "value", "other": "x".repeat(64)},
    })
    .to_string()
    .into_bytes()
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
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn pct_ms(&mut self, p: f64) -> f64 {
        pct(&mut self.lat_us, p) / 1000.0
    }
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64
}

/// `conc` workers calling `op(worker, seq)` back to back for `dur`.
async fn drive<F, Fut>(conc: usize, dur: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Res<()>> + Send,
{
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
                        s.first_error.get_or_insert(e);
                        if s.errors > 100 && s.ok == 0 {
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
    while let Some(Ok(s)) = set.join_next().await {
        total.ok += s.ok;
        total.errors += s.errors;
        if total.first_error.is_none() {
            total.first_error = s.first_error;
        }
        total.lat_us.extend(s.lat_us);
    }
    total.elapsed = start.elapsed();
    if total.errors > 0 {
        eprintln!(
            "# {} errors; first: {}",
            total.errors,
            total.first_error.as_deref().unwrap_or("?")
        );
    }
    total
}

// ---------------------------------------------------------------------------------------------
// 1. Webhook admission overhead

#[derive(Clone, Copy, PartialEq)]
enum Hook {
    None,
    Validating,
    Mutating,
}

impl Hook {
    fn label(self) -> &'static str {
        match self {
            Hook::None => "no webhook",
            Hook::Validating => "1 validating (allow)",
            Hook::Mutating => "1 mutating (JSONPatch adds a label)",
        }
    }
}

/// Registers the webhook and waits until a create has gone through it.
async fn install(
    srv: &Capstan,
    http: &Http,
    hooks: &webhook::WebhookServer,
    hook: Hook,
) -> Res<()> {
    let (plural, kind, path) = match hook {
        Hook::None => return Ok(()),
        Hook::Validating => (
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            "/allow",
        ),
        Hook::Mutating => (
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            "/label",
        ),
    };
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "bench"},
        "webhooks": [{
            "name": "bench.webhooks.capstan.test",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "clientConfig": {"url": hooks.url(path), "caBundle": hooks.ca_bundle()},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    });
    create(
        http,
        &format!("{}/apis/admissionregistration.k8s.io/v1/{plural}", srv.base),
        config.to_string().into_bytes(),
    )
    .await?;
    hooks.set_recording(true);
    let pods = format!("{}/api/v1/namespaces/default/pods", srv.base);
    for i in 0..200 {
        create(http, &pods, pod_json(&format!("warmup-{i}"))).await?;
        if !hooks.reviews().is_empty() {
            hooks.set_recording(false);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err("the webhook was never called".into())
}

async fn webhook_cell(hook: Hook, conc: usize, dur: Duration) -> Res<Stats> {
    let hooks = webhook::WebhookServer::start();
    hooks.set_recording(false);
    let srv = start_capstan()?;
    let http = http_client(&srv.tls, true);
    install(&srv, &http, &hooks, hook).await?;
    let uri = Arc::new(format!("{}/api/v1/namespaces/default/pods", srv.base));
    let s = drive(conc, dur, move |w, seq| {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            let out = create(&http, &uri, pod_json(&format!("b-{w}-{seq}"))).await?;
            if hook == Hook::Mutating && !out.windows(13).any(|x| x == b"webhook-added") {
                return Err("the mutating webhook's label is missing".into());
            }
            Ok(())
        }
    })
    .await;
    Ok(s)
}

async fn section_webhooks(cfg: &Settings) -> Res<()> {
    let dur = Duration::from_secs_f64(cfg.secs);
    println!(
        "## 1. Webhook admission overhead (Pod creates, {} s per cell)\n",
        cfg.secs
    );
    println!("| webhooks | clients | creates/s | p50 ms | p99 ms | creates/s vs none |");
    println!("|---|---:|---:|---:|---:|---:|");
    for conc in [1, 16] {
        let mut base = f64::NAN;
        for hook in [Hook::None, Hook::Validating, Hook::Mutating] {
            eprintln!("# webhooks: {} x{conc}", hook.label());
            let mut s = webhook_cell(hook, conc, dur).await?;
            if hook == Hook::None {
                base = s.rate();
            }
            println!(
                "| {} | {conc} | {:.0} | {:.2} | {:.2} | {:.2} |",
                hook.label(),
                s.rate(),
                s.pct_ms(0.5),
                s.pct_ms(0.99),
                s.rate() / base
            );
        }
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Authorization decision time

async fn section_rbac(cfg: &Settings) -> Res<()> {
    use apiserver_lite::auth::authz::{Attributes, Authorizer};
    use apiserver_lite::auth::UserInfo;
    use apiserver_lite::registry::{Registry, WriteOptions};
    use apiserver_lite::resources::find;
    use apiserver_lite::storage::{sqlite::SqliteStore, Store};

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("state.db")).map_err(|e| e.to_string())?);
    let reg = Registry::new(store, "10.96.0.0/12", "30000-32767", 3600).await?;
    let w = WriteOptions::default();
    let mk = |group: &str, plural: &str| find(group, "v1", plural).expect("served");
    let rbac = "rbac.authorization.k8s.io";
    let (ns_info, cr, crb, rb) = (
        mk("", "namespaces"),
        mk(rbac, "clusterroles"),
        mk(rbac, "clusterrolebindings"),
        mk(rbac, "rolebindings"),
    );
    for i in 0..10 {
        reg.create(
            ns_info,
            "",
            json!({"metadata": {"name": format!("team-{i}")}}),
            &w,
        )
        .await
        .map_err(|e| e.message)?;
    }
    reg.create(cr, "", json!({"metadata": {"name": "bench-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}]}), &w)
        .await
        .map_err(|e| e.message)?;
    let binding = |name: String, user: String, ns: Option<String>| {
        let mut b = json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": rbac, "kind": "ClusterRole", "name": "bench-reader"},
            "subjects": [{"apiGroup": rbac, "kind": "User", "name": user}],
        });
        if let Some(ns) = ns {
            b["metadata"]["namespace"] = json!(ns);
        }
        b
    };
    // 500 RoleBindings spread over 10 namespaces and 500 ClusterRoleBindings.
    for i in 0..500 {
        let ns = format!("team-{}", i % 10);
        reg.create(
            rb,
            &ns,
            binding(format!("rb-{i}"), format!("ns-user-{i}"), Some(ns.clone())),
            &w,
        )
        .await
        .map_err(|e| e.message)?;
        reg.create(
            crb,
            "",
            binding(format!("crb-{i}"), format!("cluster-user-{i}"), None),
            &w,
        )
        .await
        .map_err(|e| e.message)?;
    }
    let authz = Authorizer::parse("Node,RBAC")?;
    let ask = |user: UserInfo, ns: &str| Attributes {
        user,
        verb: "list".into(),
        namespace: ns.into(),
        resource: "pods".into(),
        resource_request: true,
        path: format!("/api/v1/namespaces/{ns}/pods"),
        ..Default::default()
    };
    let auth = ["system:authenticated"];
    let cases = [
        (
            "system:masters (short cut)",
            ask(UserInfo::new("admin", &["system:masters"]), "team-3"),
            true,
        ),
        (
            "user bound by the last ClusterRoleBinding",
            ask(UserInfo::new("cluster-user-499", &auth), "team-3"),
            true,
        ),
        (
            "user bound by a RoleBinding in the namespace",
            ask(UserInfo::new("ns-user-493", &auth), "team-3"),
            true,
        ),
        (
            "user bound by nothing (denied)",
            ask(UserInfo::new("stranger", &auth), "team-3"),
            false,
        ),
    ];
    println!(
        "## 2. Authorization decision with 1,000 RBAC bindings (in process, {} decisions per case)\n",
        cfg.authz_iters
    );
    println!("500 ClusterRoleBindings and 500 RoleBindings (50 in each of 10 namespaces), one subject each, all to one ClusterRole; authorizer chain `Node,RBAC`.\n");
    println!("| case | allowed | mean µs | p50 µs | p99 µs | decisions/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for (what, a, want) in cases {
        let (got, _) = authz.decide(&reg, &a).await;
        if got != want {
            return Err(format!("{what}: expected allowed={want}, got {got}"));
        }
        let mut lat = Vec::with_capacity(cfg.authz_iters);
        let start = Instant::now();
        for _ in 0..cfg.authz_iters {
            let t0 = Instant::now();
            std::hint::black_box(authz.decide(&reg, &a).await);
            lat.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
        let total = start.elapsed();
        let mean = total.as_secs_f64() * 1e6 / cfg.authz_iters as f64;
        println!(
            "| {what} | {got} | {mean:.2} | {:.2} | {:.2} | {:.0} |",
            pct(&mut lat, 0.5) / 1000.0,
            pct(&mut lat, 0.99) / 1000.0,
            cfg.authz_iters as f64 / total.as_secs_f64()
        );
    }
    println!();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. TLS

async fn tls_cell(conc: usize, keep_alive: bool, dur: Duration) -> Res<Stats> {
    let srv = start_capstan()?;
    let http = http_client(&srv.tls, keep_alive);
    let uri = Arc::new(format!("{}/api/v1/namespaces/default/configmaps", srv.base));
    let s = drive(conc, dur, move |w, seq| {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            create(&http, &uri, configmap_json(&format!("b-{w}-{seq}"))).await?;
            Ok(())
        }
    })
    .await;
    Ok(s)
}

async fn section_tls(cfg: &Settings) -> Res<()> {
    let dur = Duration::from_secs_f64(cfg.secs);
    println!(
        "## 3. ConfigMap creates over TLS ({} s per cell, fresh server per cell)\n",
        cfg.secs
    );
    println!("| connections | clients | creates/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    for (conc, keep) in [(1, true), (16, true), (64, true), (1, false), (16, false)] {
        let what = if keep {
            "TLS, keep-alive"
        } else {
            "TLS, new connection per request"
        };
        eprintln!("# tls: {what} x{conc}");
        let mut s = tls_cell(conc, keep, dur).await?;
        println!(
            "| {what} | {conc} | {:.0} | {:.2} | {:.2} |",
            s.rate(),
            s.pct_ms(0.5),
            s.pct_ms(0.99)
        );
    }
    println!();
    Ok(())
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Settings::from_env();
    println!("# capstan security benchmarks\n");
    println!(
        "Build: {}; {} s per cell.\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        cfg.secs
    );
    let mut failed = false;
    if cfg.wants("webhook") {
        if let Err(e) = section_webhooks(&cfg).await {
            eprintln!("# webhooks failed: {e}");
            failed = true;
        }
    }
    if cfg.wants("rbac") {
        if let Err(e) = section_rbac(&cfg).await {
            eprintln!("# authorization failed: {e}");
            failed = true;
        }
    }
    if cfg.wants("tls") {
        if let Err(e) = section_tls(&cfg).await {
            eprintln!("# tls failed: {e}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}
