//! Shared helpers for the image tests: the local registries of `scripts/test-images.sh` (started
//! idempotently, once per test binary), registry configuration dirs, a raw HTTP/1.1 client for
//! pushing generated images, a tiny registry front (bearer-token auth, request counting, blob
//! corruption) and a temporary root that unmounts whatever a test left mounted under it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const REGISTRY: &str = "127.0.0.1:5000";
pub const REGISTRY_AUTH: &str = "127.0.0.1:5001";
pub const TEST_DIR: &str = "/var/lib/capstan-test";

/// Runs `scripts/test-images.sh` once per test binary (it is idempotent and quick when all is
/// in place) and panics with its output if it fails.
pub fn ensure_registry() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-images.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/test-images.sh");
        assert!(
            out.status.success(),
            "scripts/test-images.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A temporary runtime root; on drop, unmounts anything mounted below it, then removes it.
pub struct TestRoot {
    pub dir: tempfile::TempDir,
}

impl TestRoot {
    pub fn new() -> Self {
        TestRoot {
            dir: tempfile::Builder::new()
                .prefix("capstan-img")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&root))
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A mount point that is unmounted on drop (even when the test panics).
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = cri::image::Rootfs::unmount(&self.0);
    }
}

/// A registry config dir with `<registry>/hosts.toml` = `server = "<url>"` for each pair, plus
/// the docker.io mirror onto the plain local registry.
pub fn registry_config(servers: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<(String, String)> = servers
        .iter()
        .map(|(r, u)| (r.to_string(), format!("server = \"{u}\"\n")))
        .collect();
    all.push((
        "docker.io".into(),
        format!(
            "server = \"https://registry-1.docker.io\"\n[host.\"http://{REGISTRY}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    ));
    all.push((REGISTRY.into(), format!("server = \"http://{REGISTRY}\"\n")));
    all.push((
        REGISTRY_AUTH.into(),
        format!("server = \"http://{REGISTRY_AUTH}\"\n"),
    ));
    for (r, text) in all {
        let d = dir.path().join(&r);
        std::fs::create_dir_all(&d).unwrap();
        if !d.join("hosts.toml").exists() {
            std::fs::write(d.join("hosts.toml"), text).unwrap();
        }
    }
    dir
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A raw HTTP/1.1 response.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request over a fresh connection (`Connection: close`), read to EOF.
pub async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connecting to the registry");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

/// Uploads a blob to `repo` on the plain registry (monolithic upload).
pub async fn push_blob(repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let r = http(
        REGISTRY,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "starting a blob upload to {repo}");
    let loc = r.header("Location").expect("upload location").to_string();
    let path = loc
        .strip_prefix(&format!("http://{REGISTRY}"))
        .unwrap_or(&loc)
        .to_string();
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = http(
        REGISTRY,
        "PUT",
        &format!("{path}{sep}digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "uploading blob {digest}: {}",
        String::from_utf8_lossy(&r.body)
    );
    digest
}

/// Mounts a blob from another repository of the plain registry.
pub async fn mount_blob(repo: &str, from: &str, digest: &str) {
    let r = http(
        REGISTRY,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 201, "mounting {digest} from {from} into {repo}");
}

/// Puts a manifest (or index) under `reference` (tag or digest); returns its digest.
pub async fn push_manifest(repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r = http(
        REGISTRY,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        body,
    )
    .await;
    assert_eq!(
        r.status,
        201,
        "pushing manifest {repo}:{reference}: {}",
        String::from_utf8_lossy(&r.body)
    );
    sha256(body)
}

/// Fetches a manifest from the plain registry: (bytes, digest).
pub async fn get_manifest(repo: &str, reference: &str) -> (Vec<u8>, String) {
    let r = http(
        REGISTRY,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "getting manifest {repo}:{reference}");
    let d = sha256(&r.body);
    (r.body, d)
}

/// Builds a tar layer from (path, contents) pairs; returns the uncompressed tar.
pub fn tar_layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        // Raw name: malicious paths must survive.
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Pushes an image made of uncompressed `layers` to `repo:tag` on the plain registry; returns
/// the manifest digest.
pub async fn push_image(repo: &str, tag: &str, layers: &[Vec<u8>]) -> String {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let d = push_blob(repo, l).await;
        diff_ids.push(d.clone());
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d, "size": l.len(),
        }));
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_digest = push_blob(repo, config.as_bytes()).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": descs,
    })
    .to_string();
    push_manifest(
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    )
    .await
}

/// What the registry front does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FrontMode {
    /// Passes everything to the plain registry, counting requests.
    Proxy,
    /// Demands a bearer token from its own token endpoint (basic capstan:s3cret).
    Bearer,
    /// Flips a byte in the middle of every blob body.
    Corrupt,
}

pub const BEARER_TOKEN: &str = "capstan-test-token";

/// A registry front on loopback (see [`FrontMode`]); stops on drop.
pub struct Front {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    pub async fn start(mode: FrontMode) -> Front {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let _ = handle(sock, mode, addr, reqs).await;
                });
            }
        });
        Front {
            addr,
            requests,
            task,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many requests matched `pred`.
    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| pred(r))
            .count()
    }
}

async fn handle(
    mut sock: TcpStream,
    mode: FrontMode,
    me: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or("").to_string();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    requests.lock().unwrap().push(format!("{method} {path}"));
    let reply = |status: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    };
    if mode == FrontMode::Bearer {
        if path.starts_with("/token") {
            // base64("capstan:s3cret")
            let ok = header("authorization") == "Basic Y2Fwc3RhbjpzM2NyZXQ=";
            let resp = if ok {
                reply(
                    "200 OK",
                    "",
                    &format!(
                        "{{\"token\":\"{BEARER_TOKEN}\",\"access_token\":\"{BEARER_TOKEN}\"}}"
                    ),
                )
            } else {
                reply("401 Unauthorized", "", "{\"details\":\"bad credentials\"}")
            };
            sock.write_all(resp.as_bytes()).await?;
            return sock.shutdown().await;
        }
        if header("authorization") != format!("Bearer {BEARER_TOKEN}") {
            let resp = reply(
                "401 Unauthorized",
                &format!(
                    "WWW-Authenticate: Bearer realm=\"http://{me}/token\",service=\"capstan-test\"\r\n"
                ),
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
            );
            sock.write_all(resp.as_bytes()).await?;
            return sock.shutdown().await;
        }
    }
    // Proxy to the plain registry.
    let mut up = TcpStream::connect(REGISTRY).await?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {REGISTRY}\r\nConnection: close\r\n");
    let accept = header("accept");
    if !accept.is_empty() {
        req.push_str(&format!("Accept: {accept}\r\n"));
    }
    req.push_str("\r\n");
    up.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw).await?;
    if mode == FrontMode::Corrupt && method == "GET" && path.contains("/blobs/") {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let body_len = raw.len() - split - 4;
            if body_len > 0 {
                raw[split + 4 + body_len / 2] ^= 0xff;
            }
        }
    }
    sock.write_all(&raw).await?;
    sock.shutdown().await
}
