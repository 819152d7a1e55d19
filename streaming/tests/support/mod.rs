//! What the streaming tests share: a fake runtime behind the [`Backend`] seam, a TCP echo
//! server for port-forward, and clients for the streaming server's URLs. (Each test binary uses
//! part of it.)
#![allow(dead_code)]

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_cri::v1::{ExecRequest, PortForwardRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use streaming::client::{self, ExecIo};
use streaming::server::{Config, Server};
use streaming::spdy::Session;
use streaming::{Backend, Duplex, StreamError, StreamIo, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;

/// A backend with a few commands: `echo ARGS` (stdout, and `err` on stderr), `exit N`, `cat`
/// (stdin to stdout), `resize N` (records N terminal sizes), anything else fails to start.
/// Port-forward connects to 127.0.0.1:port; sandbox `bad` fails.
#[derive(Default)]
pub struct Fake {
    pub resizes: Mutex<Vec<TerminalSize>>,
    pub running: AtomicUsize,
}

struct Running<'a>(&'a AtomicUsize);
impl<'a> Running<'a> {
    fn new(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        Running(c)
    }
}
impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<i32, StreamError> {
        let _running = Running::new(&self.running);
        assert_eq!(container_id, "c1");
        let StreamIo {
            stdin,
            stdout,
            stderr,
            resize,
            ..
        } = io;
        match cmd[0].as_str() {
            "echo" => {
                let mut out = stdout.expect("echo needs stdout");
                out.write_all(format!("{}\n", cmd[1..].join(" ")).as_bytes())
                    .await?;
                if let Some(mut err) = stderr {
                    err.write_all(b"err\n").await?;
                }
                Ok(0)
            }
            "exit" => Ok(cmd[1].parse().unwrap()),
            "cat" => {
                let (mut inp, mut out) = (
                    stdin.expect("cat needs stdin"),
                    stdout.expect("cat needs stdout"),
                );
                tokio::io::copy(&mut inp, &mut out).await?;
                out.shutdown().await?;
                Ok(0)
            }
            "resize" => {
                let want: usize = cmd[1].parse().unwrap();
                let mut sizes = resize.expect("resize needs a tty");
                for _ in 0..want {
                    let Some(s) = sizes.recv().await else { break };
                    self.resizes.lock().unwrap().push(s);
                }
                stdout.unwrap().write_all(b"resized\n").await?;
                Ok(0)
            }
            other => Err(StreamError::NotFound(format!(
                "executable file not found: {other}"
            ))),
        }
    }

    async fn attach(&self, _: &str, io: StreamIo) -> Result<(), StreamError> {
        let (mut inp, mut out) = (io.stdin.unwrap(), io.stdout.unwrap());
        tokio::io::copy(&mut inp, &mut out).await?;
        Ok(())
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        mut stream: Box<dyn Duplex>,
    ) -> Result<(), StreamError> {
        if sandbox_id == "bad" {
            return Err(StreamError::NotFound("sandbox bad not found".into()));
        }
        // As a runtime does: the client's end of input half-closes the pod's connection; the
        // forward ends when the pod's side does.
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let (mut tr, mut tw) = tcp.into_split();
        let (mut sr, mut sw) = tokio::io::split(&mut stream);
        let upstream = async {
            let _ = tokio::io::copy(&mut sr, &mut tw).await;
            let _ = tw.shutdown().await;
            std::future::pending::<()>().await
        };
        let downstream = async {
            tokio::io::copy(&mut tr, &mut sw).await?;
            sw.shutdown().await
        };
        tokio::select! {
            _ = upstream => unreachable!(),
            r = downstream => Ok(r?),
        }
    }
}

/// A TCP server that answers every connection with `{tag}:` and the bytes it received.
pub async fn echo_listener(tag: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                s.write_all(tag.as_bytes()).await.unwrap();
                s.write_all(b":").await.unwrap();
                s.write_all(&got).await.unwrap();
            });
        }
    });
    port
}

/// What a test waits for at most before it fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn start(fake: Arc<Fake>) -> Server {
    let config = Config {
        stream_idle_timeout: Duration::from_secs(300),
        stream_creation_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    Server::start(config, fake).expect("the streaming server starts")
}

pub fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    rest[rest.find('/').unwrap()..].to_owned()
}

pub fn exec_req(cmd: &[&str], stdin: bool, stdout: bool, stderr: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        stdout,
        stderr,
        tty,
    }
}

/// Collects what a stream writes.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);
impl Sink {
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}
impl AsyncWrite for Sink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub async fn spdy_connect(
    server: &Server,
    url: &str,
    protocols: &[&str],
) -> Result<(Session, String), client::ClientError> {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    client::connect(tcp, &path_of(url), protocols).await
}

pub async fn spdy_exec(
    server: &Server,
    req: ExecRequest,
    protocol: &str,
    stdin: Option<&'static [u8]>,
) -> (Status, String, String) {
    let url = server.get_exec(&req).unwrap().url;
    let (session, proto) = spdy_connect(server, &url, &[protocol]).await.unwrap();
    assert_eq!(proto, protocol);
    let (out, err) = (Sink::default(), Sink::default());
    let io = ExecIo {
        stdin: stdin.map(|s| Box::pin(s) as streaming::Reader),
        stdout: req
            .stdout
            .then(|| Box::pin(out.clone()) as streaming::Writer),
        stderr: req
            .stderr
            .then(|| Box::pin(err.clone()) as streaming::Writer),
        tty: req.tty,
        resize: None,
    };
    let status = within("spdy exec", client::exec(&session, &proto, io))
        .await
        .unwrap();
    (status, out.text(), err.text())
}

pub type Ws = WebSocketStream<TcpStream>;

pub async fn ws_connect(
    server: &Server,
    path: &str,
    protocols: &[&str],
) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut req = format!("ws://{}{}", server.addr(), path).into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((ws, proto))
}

pub fn pf_req(sandbox: &str) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: sandbox.into(),
        port: vec![],
    }
}

pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub async fn settle<F: Fn() -> bool>(what: &str, done: F) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Opens a client stream of `stream_type` (exec/attach) on a SPDY session.
pub async fn open_stream(
    session: &streaming::spdy::Session,
    stream_type: &str,
) -> streaming::spdy::Stream {
    session
        .open(streaming::spdy::Headers::new().with("streamType", stream_type))
        .await
        .unwrap()
}
