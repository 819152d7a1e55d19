//! Kubernetes' streaming protocols and the CRI streaming server — upstream's
//! `k8s.io/kubelet/pkg/cri/streaming` with the apimachinery `httpstream` pieces it stands on.
//!
//! A CRI runtime answers `Exec`, `Attach` and `PortForward` with a URL; the client (the kubelet,
//! which proxies the API server's upgraded connection to it) then speaks one of the streaming
//! protocols there. This crate holds everything protocol-shaped so that the runtime only provides
//! a [`Backend`]: run a command with these streams, attach these streams, connect this stream to a
//! port of the pod.
//!
//! - `spdy`: SPDY/3.1 framing and a multiplexed session (server and client side);
//! - `wsstream`: the WebSocket channel protocols (`channel.k8s.io`, `v4`, `v5`) and WebSocket
//!   port-forward (`portforward.k8s.io`, `v4.channel.k8s.io`);
//! - `remotecommand`: exec and attach over SPDY (v1–v4 subprotocols) or WebSockets;
//! - `portforward`: port-forward over SPDY, WebSockets, and SPDY tunnelled in a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`);
//! - `server`: the streaming server itself (single-use tokens, `/exec/{token}`, …);
//! - `proxy`: the upgrade-aware reverse proxy the kubelet and the API server use to pass an
//!   upgraded connection on;
//! - `client`: the SPDY client side, for the API server's WebSocket-to-SPDY translation and for
//!   tests.

pub mod client;
pub mod httpstream;
pub mod portforward;
pub mod proxy;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod wsstream;

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A terminal size sent on the resize channel (upstream's `remotecommand.TerminalSize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A readable stream handed to a backend.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A writable stream handed to a backend; shutting it down closes the client's stream.
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// A bidirectional byte stream (one port-forward connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// The streams of one exec or attach, as the client asked for them. With a TTY there is no
/// stderr (the terminal merges it into stdout), and resizes arrive on `resize`.
pub struct StreamIo {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub tty: bool,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// What a runtime provides to the streaming server (upstream's `streaming.Runtime`).
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `cmd` in the running container `container_id` with `io`, until it exits; returns
    /// its exit code (128+signal when killed). Errors are for an exec that could not run at all
    /// (no such container, not running, command not found).
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> Result<i32, StreamError>;

    /// Connects `io` to the running container's own stdio until the client detaches or the
    /// container exits.
    async fn attach(&self, container_id: &str, io: StreamIo) -> Result<(), StreamError>;

    /// Connects `stream` to TCP `port` on the loopback of the sandbox's network namespace, until
    /// either side closes.
    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn Duplex>,
    ) -> Result<(), StreamError>;
}

/// Why a stream could not be served. The message goes to the client's error channel.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
