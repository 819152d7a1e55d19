//! The client side of SPDY exec/attach and port-forward — client-go's
//! `tools/remotecommand` (stream protocol v2–v4) and `tools/portforward`, kept small.
//!
//! [`connect`] upgrades an HTTP/1.1 request on any connection to SPDY/3.1; [`exec`] then opens
//! the streams as client-go does (error first, then stdin, stdout, stderr, resize), copies the
//! caller's stdio and returns the `Status` the server wrote to the error stream;
//! [`PortForwarder`] opens an error+data stream pair per forwarded connection. The API server's
//! WebSocket→SPDY translation and this crate's tests use it.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::httpstream::HEADER_PROTOCOL_VERSION;
use crate::portforward::{PORT_HEADER, REQUEST_ID_HEADER, STREAM_TYPE_DATA};
use crate::remotecommand::{
    STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V4, STREAM_TYPE_ERROR, STREAM_TYPE_HEADER,
    STREAM_TYPE_RESIZE, STREAM_TYPE_STDERR, STREAM_TYPE_STDIN, STREAM_TYPE_STDOUT,
};
use crate::spdy::{self, Headers, Role, Session};
use crate::{Reader, TerminalSize, Writer};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("upgrade request: {0}")]
    Http(#[from] hyper::Error),
    #[error("the server refused the upgrade: {status}: {body}")]
    Refused { status: StatusCode, body: String },
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("invalid status on the error stream: {0}")]
    BadStatus(String),
}

/// Upgrades `POST {path_and_query}` on `io` to SPDY/3.1 offering `protocols`; returns the
/// client session and the protocol the server chose.
pub async fn connect<T>(
    io: T,
    path_and_query: &str,
    protocols: &[&str],
) -> Result<(Session, String), ClientError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "spdy client: connection");
        }
    });
    let mut req = Request::post(path_and_query)
        .header(HOST, "localhost")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, spdy::UPGRADE);
    for p in protocols {
        req = req.header(HEADER_PROTOCOL_VERSION, *p);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let resp = sender.send_request(req).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        return Err(ClientError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    let protocol = resp
        .headers()
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let upgraded = hyper::upgrade::on(resp).await?;
    Ok((
        Session::new(TokioIo::new(upgraded), Role::Client, None),
        protocol,
    ))
}

/// The caller's side of an exec or attach.
#[derive(Default)]
pub struct ExecIo {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub tty: bool,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

fn stream_type(kind: &str) -> Headers {
    Headers::new().with(STREAM_TYPE_HEADER, kind)
}

/// Runs an exec/attach on an upgraded session: opens the streams, copies stdio until the
/// server is done and returns the status from the error stream (`Success` when the server
/// wrote none, as older protocols do on success).
pub async fn exec(session: &Session, protocol: &str, io: ExecIo) -> Result<Status, ClientError> {
    let mut error = session.open(stream_type(STREAM_TYPE_ERROR)).await?;
    error.shutdown().await?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(mut stdin) = io.stdin {
        let mut s = session.open(stream_type(STREAM_TYPE_STDIN)).await?;
        // Not awaited: stdin may outlive the command.
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut stdin, &mut s).await;
            let _ = s.shutdown().await;
        });
    }
    let mut outputs = Vec::new();
    for (kind, out) in [
        (STREAM_TYPE_STDOUT, io.stdout),
        (STREAM_TYPE_STDERR, if io.tty { None } else { io.stderr }),
    ] {
        if let Some(mut out) = out {
            let mut s = session.open(stream_type(kind)).await?;
            outputs.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut s, &mut out).await;
                let _ = out.shutdown().await;
            }));
        }
    }
    if io.tty && (protocol == STREAM_PROTOCOL_V4 || protocol == STREAM_PROTOCOL_V3) {
        if let Some(mut sizes) = io.resize {
            let mut s = session.open(stream_type(STREAM_TYPE_RESIZE)).await?;
            tasks.spawn(async move {
                while let Some(size) = sizes.recv().await {
                    let json = serde_json::to_vec(&size).expect("a size serializes");
                    if s.write_all(&json).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    let mut message = Vec::new();
    error.read_to_end(&mut message).await?;
    for o in outputs {
        let _ = o.await;
    }
    tasks.abort_all();
    if message.is_empty() {
        return Ok(Status {
            status: Some("Success".into()),
            ..Default::default()
        });
    }
    if protocol == STREAM_PROTOCOL_V4 {
        return serde_json::from_slice(&message).map_err(|e| {
            ClientError::BadStatus(format!("{e}: {}", String::from_utf8_lossy(&message)))
        });
    }
    Ok(Status {
        status: Some("Failure".into()),
        message: Some(String::from_utf8_lossy(&message).into_owned()),
        ..Default::default()
    })
}

/// The exit code a status reports (kubectl's rule): 0 on success, the `ExitCode` cause of a
/// `NonZeroExitCode` failure, else `None` (the command did not run).
pub fn exit_code(status: &Status) -> Option<i32> {
    match status.status.as_deref() {
        Some("Success") => Some(0),
        _ if status.reason.as_deref() == Some(crate::remotecommand::NON_ZERO_EXIT_CODE_REASON) => {
            status
                .details
                .as_ref()?
                .causes
                .as_ref()?
                .iter()
                .find(|c| c.reason.as_deref() == Some(crate::remotecommand::EXIT_CODE_CAUSE_TYPE))?
                .message
                .as_ref()?
                .parse()
                .ok()
        }
        _ => None,
    }
}

/// Opens forwarded connections on a `portforward.k8s.io` session.
pub struct PortForwarder {
    session: Session,
    next_request: AtomicU32,
}

/// One forwarded connection: `data` carries the bytes; `error` carries the server's error
/// text, if any, and ends when the forward does.
pub struct ForwardedConn {
    pub data: spdy::Stream,
    pub error: spdy::Stream,
}

impl PortForwarder {
    pub fn new(session: Session) -> Self {
        PortForwarder {
            session,
            next_request: AtomicU32::new(0),
        }
    }

    /// Opens a connection to `port` of the pod (error stream first, as kubectl does).
    pub async fn open(&self, port: u16) -> Result<ForwardedConn, ClientError> {
        let id = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let headers = |kind: &str| {
            Headers::new()
                .with(STREAM_TYPE_HEADER, kind)
                .with(PORT_HEADER, port.to_string())
                .with(REQUEST_ID_HEADER, id.clone())
        };
        let mut error = self.session.open(headers(STREAM_TYPE_ERROR)).await?;
        error.shutdown().await?;
        let data = self.session.open(headers(STREAM_TYPE_DATA)).await?;
        Ok(ForwardedConn { data, error })
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}
