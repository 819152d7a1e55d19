//! Exec and attach on an upgraded connection — the kubelet's
//! `cri/streaming/remotecommand` (`ServeExec`, `ServeAttach`).
//!
//! Over SPDY (`v4.channel.k8s.io` … `channel.k8s.io`) the client opens one stream per stdio
//! stream plus `error` (and `resize` with a TTY, v3+), each named by its `streamType` header;
//! the server waits until all the streams the options call for exist (or the creation timeout
//! passes), runs the command, then writes the outcome to the error stream and closes the
//! connection. Over WebSockets the same streams are channels 0–4. The outcome is a v4 `Status`
//! in JSON (`Success`, or `Failure` with reason `NonZeroExitCode` and the exit code as an
//! `ExitCode` cause, which kubectl turns into its own exit code); the older protocols get the
//! error text alone, and nothing on success.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::httpstream::{self, Body};
use crate::spdy::{self, Role, Session};
use crate::wsstream::{self, ChannelConn, Codec};
use crate::{Backend, StreamIo, TerminalSize, Writer};

/// SPDY sub-protocols, newest first.
pub const STREAM_PROTOCOL_V4: &str = "v4.channel.k8s.io";
pub const STREAM_PROTOCOL_V3: &str = "v3.channel.k8s.io";
pub const STREAM_PROTOCOL_V2: &str = "v2.channel.k8s.io";
pub const STREAM_PROTOCOL_V1: &str = "channel.k8s.io";
pub const SPDY_PROTOCOLS: [&str; 4] = [
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V3,
    STREAM_PROTOCOL_V2,
    STREAM_PROTOCOL_V1,
];
/// WebSocket sub-protocols (`""`: a client naming none gets the original binary protocol).
pub const WEBSOCKET_PROTOCOLS: [&str; 6] = [
    wsstream::V5_CHANNEL_PROTOCOL,
    wsstream::V4_CHANNEL_PROTOCOL,
    wsstream::V4_BASE64_CHANNEL_PROTOCOL,
    wsstream::CHANNEL_PROTOCOL,
    wsstream::BASE64_CHANNEL_PROTOCOL,
    "",
];

/// The `streamType` header naming a SPDY stream's role.
pub const STREAM_TYPE_HEADER: &str = "streamType";
pub const STREAM_TYPE_STDIN: &str = "stdin";
pub const STREAM_TYPE_STDOUT: &str = "stdout";
pub const STREAM_TYPE_STDERR: &str = "stderr";
pub const STREAM_TYPE_ERROR: &str = "error";
pub const STREAM_TYPE_RESIZE: &str = "resize";

/// WebSocket channels of exec and attach.
pub const CHANNEL_STDIN: u8 = 0;
pub const CHANNEL_STDOUT: u8 = 1;
pub const CHANNEL_STDERR: u8 = 2;
pub const CHANNEL_ERROR: u8 = 3;
pub const CHANNEL_RESIZE: u8 = 4;

/// The `Status` reason and cause type of a command that exited non-zero.
pub const NON_ZERO_EXIT_CODE_REASON: &str = "NonZeroExitCode";
pub const EXIT_CODE_CAUSE_TYPE: &str = "ExitCode";

/// Which streams the client asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    /// The options and commands of a request's query (`remotecommand.NewOptions`): `stdin`,
    /// `stdout`, `stderr`, `tty` and repeated `command`. With a TTY there is no stderr.
    pub fn from_query(query: Option<&str>) -> Result<(Options, Vec<String>), String> {
        let mut opts = Options {
            stdin: httpstream::query_bool(query, "stdin"),
            stdout: httpstream::query_bool(query, "stdout"),
            stderr: httpstream::query_bool(query, "stderr"),
            tty: httpstream::query_bool(query, "tty"),
        };
        if opts.tty {
            opts.stderr = false;
        }
        if !opts.stdin && !opts.stdout && !opts.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok((opts, httpstream::query_values(query, "command")))
    }
}

/// What to run on the streams.
#[derive(Clone, Debug)]
pub enum Command {
    Exec {
        container_id: String,
        cmd: Vec<String>,
    },
    Attach {
        container_id: String,
    },
}

/// The streaming server's timeouts.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Close a connection with no traffic for this long.
    pub idle: Option<Duration>,
    /// How long a SPDY client has to open all its streams.
    pub creation: Duration,
}

/// Serves an exec or attach request: answers `101` (or an error) and runs the session in a task.
pub fn serve<B: Send + 'static>(
    req: Request<B>,
    backend: Arc<dyn Backend>,
    command: Command,
    opts: Options,
    timeouts: Timeouts,
) -> Response<Body> {
    if wsstream::is_websocket_request(req.headers()) {
        let (protocol, resp) = match wsstream::handshake(req.headers(), &WEBSOCKET_PROTOCOLS) {
            Ok(ok) => ok,
            Err(resp) => return *resp,
        };
        httpstream::spawn_upgraded(req, move |io| async move {
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            run_websocket(ws, &protocol, backend, command, opts, timeouts).await;
        });
        return resp;
    }
    let protocol = match httpstream::spdy_handshake(req.headers(), &SPDY_PROTOCOLS) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let resp = httpstream::spdy_switching_protocols(&protocol);
    httpstream::spawn_upgraded(req, move |io| async move {
        let session = Session::new(io, Role::Server, timeouts.idle);
        run_spdy(
            session,
            &protocol,
            backend,
            command,
            opts,
            timeouts.creation,
        )
        .await;
    });
    resp
}

/// The streams a SPDY client opened.
#[derive(Default)]
struct SpdyStreams {
    error: Option<spdy::Stream>,
    stdin: Option<spdy::Stream>,
    stdout: Option<spdy::Stream>,
    stderr: Option<spdy::Stream>,
    resize: Option<spdy::Stream>,
}

async fn wait_for_streams(
    session: &Session,
    expected: usize,
    creation: Duration,
) -> Result<SpdyStreams, String> {
    let mut got = SpdyStreams::default();
    let deadline = tokio::time::Instant::now() + creation;
    for _ in 0..expected {
        let stream = tokio::select! {
            s = session.accept() => s.ok_or("connection closed while waiting for streams")?,
            _ = tokio::time::sleep_until(deadline) => {
                return Err("timed out waiting for client to create streams".into())
            }
        };
        let kind = stream.headers().get(STREAM_TYPE_HEADER).unwrap_or("");
        let slot = match kind {
            STREAM_TYPE_ERROR => &mut got.error,
            STREAM_TYPE_STDIN => &mut got.stdin,
            STREAM_TYPE_STDOUT => &mut got.stdout,
            STREAM_TYPE_STDERR => &mut got.stderr,
            STREAM_TYPE_RESIZE => &mut got.resize,
            other => {
                tracing::debug!(stream_type = other, "remotecommand: unexpected stream type");
                continue;
            }
        };
        *slot = Some(stream);
    }
    Ok(got)
}

async fn run_spdy(
    session: Session,
    protocol: &str,
    backend: Arc<dyn Backend>,
    command: Command,
    opts: Options,
    creation: Duration,
) {
    let resizes = protocol == STREAM_PROTOCOL_V4 || protocol == STREAM_PROTOCOL_V3;
    let expected = 1
        + opts.stdin as usize
        + opts.stdout as usize
        + opts.stderr as usize
        + (opts.tty && resizes) as usize;
    let streams = match wait_for_streams(&session, expected, creation).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "remotecommand: the client did not create its streams");
            return;
        }
    };
    let resize = streams.resize.map(spawn_resize_decoder);
    let io = StreamIo {
        stdin: streams.stdin.map(|s| Box::pin(s) as crate::Reader),
        stdout: streams.stdout.map(|s| Box::pin(s) as Writer),
        stderr: streams.stderr.map(|s| Box::pin(s) as Writer),
        tty: opts.tty,
        resize,
    };
    let status = run(&*backend, &command, io).await;
    if let Some(mut error) = streams.error {
        if let Some(bytes) = encode_status(&status, protocol == STREAM_PROTOCOL_V4) {
            let _ = error.write_all(&bytes).await;
        }
        let _ = error.shutdown().await;
    }
    session.close();
}

async fn run_websocket<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    protocol: &str,
    backend: Arc<dyn Backend>,
    command: Command,
    opts: Options,
    timeouts: Timeouts,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let readable = [opts.stdin, false, false, false, opts.tty];
    let mut conn = ChannelConn::new(
        ws,
        &readable,
        Codec::of(protocol),
        wsstream::supports_stream_close(protocol),
        timeouts.idle,
    );
    // Tell the client the connection is up: an empty message on the lowest writable channel.
    let first = if opts.stdout {
        CHANNEL_STDOUT
    } else if opts.stderr {
        CHANNEL_STDERR
    } else {
        CHANNEL_ERROR
    };
    let _ = conn.writer(first).send(&[]).await;
    let resize = conn.take_reader(CHANNEL_RESIZE).map(spawn_resize_decoder);
    let io = StreamIo {
        stdin: conn
            .take_reader(CHANNEL_STDIN)
            .map(|r| Box::pin(r) as crate::Reader),
        stdout: opts
            .stdout
            .then(|| Box::pin(conn.writer(CHANNEL_STDOUT)) as Writer),
        stderr: opts
            .stderr
            .then(|| Box::pin(conn.writer(CHANNEL_STDERR)) as Writer),
        tty: opts.tty,
        resize,
    };
    let status = run(&*backend, &command, io).await;
    let v4 = protocol.starts_with("v4.") || protocol.starts_with("v5.");
    if let Some(bytes) = encode_status(&status, v4) {
        let _ = conn.writer(CHANNEL_ERROR).send(&bytes).await;
    }
    conn.close().await;
}

/// Runs the command and says how it went, as the error channel reports it.
async fn run(backend: &dyn Backend, command: &Command, io: StreamIo) -> Status {
    match command {
        Command::Exec { container_id, cmd } => {
            match backend.exec(container_id, cmd.clone(), io).await {
                Ok(0) => success(),
                Ok(code) => non_zero_exit(cmd, code),
                Err(e) => internal_error(format!("error executing command in container: {e}")),
            }
        }
        Command::Attach { container_id } => match backend.attach(container_id, io).await {
            Ok(()) => success(),
            Err(e) => internal_error(format!("error attaching to container: {e}")),
        },
    }
}

fn success() -> Status {
    Status {
        status: Some("Success".into()),
        ..Default::default()
    }
}

/// The status of a command that exited with `code`, worded as upstream's CRI exec error
/// (`error executing command [sh -c exit 3], exit code 3`).
pub fn non_zero_exit(cmd: &[String], code: i32) -> Status {
    Status {
        status: Some("Failure".into()),
        reason: Some(NON_ZERO_EXIT_CODE_REASON.into()),
        details: Some(StatusDetails {
            causes: Some(vec![StatusCause {
                reason: Some(EXIT_CODE_CAUSE_TYPE.into()),
                message: Some(code.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        message: Some(format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            cmd.join(" ")
        )),
        ..Default::default()
    }
}

/// `apierrors.NewInternalError`.
fn internal_error(msg: String) -> Status {
    Status {
        status: Some("Failure".into()),
        code: Some(500),
        reason: Some("InternalError".into()),
        details: Some(StatusDetails {
            causes: Some(vec![StatusCause {
                message: Some(msg.clone()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        message: Some(format!("Internal error occurred: {msg}")),
        ..Default::default()
    }
}

/// What goes on the error stream: the JSON status (v4+), else the message of a failure.
fn encode_status(status: &Status, v4: bool) -> Option<Vec<u8>> {
    if v4 {
        return serde_json::to_vec(status).ok();
    }
    if status.status.as_deref() == Some("Success") {
        return None;
    }
    Some(status.message.clone().unwrap_or_default().into_bytes())
}

/// Decodes the resize stream — JSON `{"Width":…,"Height":…}` objects back to back — into a
/// channel for the backend, until the stream ends or the backend stops listening.
fn spawn_resize_decoder<R>(stream: R) -> mpsc::Receiver<TerminalSize>
where
    R: AsyncRead + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut stream = stream;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut consumed = 0;
            loop {
                match de.next() {
                    Some(Ok(size)) => {
                        consumed = de.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "remotecommand: bad resize message");
                        return;
                    }
                    None => {
                        consumed = buf.len();
                        break;
                    }
                }
            }
            buf.drain(..consumed);
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_matches_upstreams_wire_form() {
        let s = non_zero_exit(&["sh".into(), "-c".into(), "exit 3".into()], 3);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }

    #[test]
    fn options_from_query() {
        let (o, cmd) =
            Options::from_query(Some("command=ls&command=-l&stdout=1&stderr=true&tty=true"))
                .unwrap();
        assert!(o.stdout && o.tty && !o.stderr && !o.stdin);
        assert_eq!(cmd, ["ls", "-l"]);
        assert!(Options::from_query(Some("tty=1")).is_err());
    }

    #[tokio::test]
    async fn resize_messages_split_across_reads_are_decoded() {
        let (mut w, r) = tokio::io::duplex(64);
        let mut rx = spawn_resize_decoder(r);
        w.write_all(br#"{"Width":80,"Height":24}{"Width":1"#)
            .await
            .unwrap();
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        w.write_all(br#"00,"Height":50}"#).await.unwrap();
        assert_eq!(
            rx.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 50
            })
        );
        drop(w);
        assert_eq!(rx.recv().await, None);
    }
}
