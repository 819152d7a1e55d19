//! Kubernetes' WebSocket channel protocols, server side — apimachinery's `httpstream/wsstream`.
//!
//! Over one WebSocket, numbered channels are multiplexed: the first byte of each binary message
//! is the channel (exec/attach: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; port-forward:
//! 2i data and 2i+1 error of the i-th port). The `base64.` variants send text messages instead:
//! the channel as an ASCII digit, then the data in base64. `v5.channel.k8s.io` adds the CLOSE
//! signal: a message on channel 255 whose one byte of payload names the channel the client will
//! not write to again (its stdin is done), which the server turns into end of file.
//!
//! [`ChannelConn`] runs a reader task (messages → per-channel readers, bounded so a slow reader
//! holds the socket back) and a writer task (the only owner of the sink); each channel's writer
//! sends one message per write. [`MessageStream`] is the other use of a WebSocket here: a byte
//! stream carried in binary messages, which is how `SPDY/3.1+portforward.k8s.io` tunnels a SPDY
//! session (client-go's `TunnelingConnection`).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes};
use futures::{Sink, SinkExt, Stream, StreamExt};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderMap, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, PollSender};

use crate::httpstream::{error_response, Body};

/// The original binary channel protocol (also what a client naming no protocol gets).
pub const CHANNEL_PROTOCOL: &str = "channel.k8s.io";
/// The original protocol with base64 text messages.
pub const BASE64_CHANNEL_PROTOCOL: &str = "base64.channel.k8s.io";
/// Version 4: the error channel carries a JSON `Status`.
pub const V4_CHANNEL_PROTOCOL: &str = "v4.channel.k8s.io";
pub const V4_BASE64_CHANNEL_PROTOCOL: &str = "v4.base64.channel.k8s.io";
/// Version 5: adds the CLOSE signal.
pub const V5_CHANNEL_PROTOCOL: &str = "v5.channel.k8s.io";
/// The channel of a CLOSE signal (v5).
pub const STREAM_CLOSE: u8 = 255;

/// Messages buffered per channel before the reader task waits for the channel's reader.
const CHANNEL_BUFFER: usize = 32;
/// How long the reader waits for the client to answer our close before dropping the socket.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How a channel protocol encodes its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

impl Codec {
    /// The codec of a negotiated protocol (`""` is the binary original).
    pub fn of(protocol: &str) -> Codec {
        if protocol.contains("base64") {
            Codec::Base64
        } else {
            Codec::Binary
        }
    }
}

/// Whether the protocol supports the CLOSE signal.
pub fn supports_stream_close(protocol: &str) -> bool {
    protocol == V5_CHANNEL_PROTOCOL
}

/// Whether a request asks for a WebSocket (`wsstream.IsWebSocketRequest`).
pub fn is_websocket_request(headers: &HeaderMap) -> bool {
    crate::httpstream::is_upgrade_to(headers, "websocket")
}

/// The sub-protocols the client offers in `Sec-WebSocket-Protocol`, in its order.
pub fn client_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Checks a WebSocket upgrade and negotiates the sub-protocol: the first one the client offers
/// that is in `supported` (where `""` accepts a client offering none). Returns the protocol and
/// the `101` response, or a ready-made error response.
pub fn handshake(
    headers: &HeaderMap,
    supported: &[&str],
) -> Result<(String, Response<Body>), Box<Response<Body>>> {
    let bad = |msg: &str| Box::new(error_response(StatusCode::BAD_REQUEST, msg));
    if !is_websocket_request(headers) {
        return Err(bad(
            "websocket: the client is not using the websocket protocol",
        ));
    }
    let Some(key) = headers.get("Sec-WebSocket-Key") else {
        return Err(bad("websocket: missing Sec-WebSocket-Key"));
    };
    if headers
        .get("Sec-WebSocket-Version")
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return Err(bad(
            "websocket: unsupported Sec-WebSocket-Version (13 is required)",
        ));
    }
    let offered = client_protocols(headers);
    let chosen = if offered.is_empty() {
        supported.contains(&"").then(String::new)
    } else {
        offered
            .iter()
            .find(|p| supported.contains(&p.as_str()))
            .cloned()
    };
    let Some(protocol) = chosen else {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            format!(
                "requested protocol(s) are not supported: [{}]; supports [{}]",
                offered.join(" "),
                supported
                    .iter()
                    .filter(|p| !p.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )));
    };
    let mut b = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "websocket")
        .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()));
    if !protocol.is_empty() {
        b = b.header(SEC_WEBSOCKET_PROTOCOL, protocol.as_str());
    }
    let resp = b
        .body(Body::default())
        .expect("handshake response parts are valid");
    Ok((protocol, resp))
}

enum Out {
    Message(Message),
    Close,
}

/// A WebSocket carrying numbered channels.
pub struct ChannelConn {
    readers: Vec<Option<ChannelReader>>,
    out: mpsc::Sender<Out>,
    codec: Codec,
    closed: CancellationToken,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl ChannelConn {
    /// Starts serving `ws`. Channels whose `readable` entry is true get a reader; messages for
    /// other channels are dropped (upstream's `IgnoreChannel`/`WriteChannel`). With
    /// `idle_timeout`, the connection closes when the client sends nothing for that long.
    pub fn new<S>(
        ws: WebSocketStream<S>,
        readable: &[bool],
        codec: Codec,
        stream_close: bool,
        idle_timeout: Option<Duration>,
    ) -> ChannelConn
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, stream) = ws.split();
        let closed = CancellationToken::new();
        let mut readers = Vec::new();
        let mut senders = Vec::new();
        for r in readable {
            if *r {
                let (tx, rx) = mpsc::channel(CHANNEL_BUFFER);
                readers.push(Some(ChannelReader {
                    rx,
                    pending: Bytes::new(),
                }));
                senders.push(Some(tx));
            } else {
                readers.push(None);
                senders.push(None);
            }
        }
        let (out_tx, out_rx) = mpsc::channel(CHANNEL_BUFFER);
        tokio::spawn(read_loop(
            stream,
            senders,
            codec,
            stream_close,
            idle_timeout,
            closed.clone(),
        ));
        let writer = Some(tokio::spawn(write_loop(sink, out_rx, closed.clone())));
        ChannelConn {
            readers,
            out: out_tx,
            codec,
            closed,
            writer,
        }
    }

    /// Takes the reader of channel `ch` (once).
    pub fn take_reader(&mut self, ch: u8) -> Option<ChannelReader> {
        self.readers.get_mut(ch as usize).and_then(Option::take)
    }

    /// A writer for channel `ch`: each write is one message.
    pub fn writer(&self, ch: u8) -> ChannelWriter {
        ChannelWriter {
            channel: ch,
            codec: self.codec,
            out: PollSender::new(self.out.clone()),
        }
    }

    /// Resolves once the connection is gone.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Sends a normal close after everything written so far and waits until it is sent.
    pub async fn close(mut self) {
        let _ = self.out.send(Out::Close).await;
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
    }
}

impl Drop for ChannelConn {
    fn drop(&mut self) {
        if self.out.try_send(Out::Close).is_err() {
            self.closed.cancel();
        }
    }
}

async fn read_loop<S>(
    mut stream: S,
    mut senders: Vec<Option<mpsc::Sender<Bytes>>>,
    codec: Codec,
    stream_close: bool,
    idle: Option<Duration>,
    closed: CancellationToken,
) where
    S: Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let next = async {
            match idle {
                Some(idle) => tokio::time::timeout(idle, stream.next()).await.ok(),
                None => Some(stream.next().await),
            }
        };
        let msg = tokio::select! {
            msg = next => msg,
            _ = closed.cancelled() => break,
        };
        let data: Bytes = match msg {
            None => {
                tracing::debug!("wsstream: idle timeout");
                break;
            }
            Some(None) | Some(Some(Err(_))) | Some(Some(Ok(Message::Close(_)))) => break,
            Some(Some(Ok(Message::Binary(b)))) => b,
            Some(Some(Ok(Message::Text(t)))) => Bytes::copy_from_slice(t.as_bytes()),
            Some(Some(Ok(_))) => continue,
        };
        if data.is_empty() {
            continue;
        }
        if stream_close && data[0] == STREAM_CLOSE {
            if data.len() != 2 {
                tracing::debug!(
                    len = data.len() - 1,
                    "wsstream: a single channel byte should follow the stream close signal"
                );
                break;
            }
            let mut ch = data[1];
            if codec == Codec::Base64 {
                ch = ch.wrapping_sub(b'0');
            }
            if let Some(s) = senders.get_mut(ch as usize) {
                *s = None;
            }
            continue;
        }
        let mut ch = data[0];
        let payload = data.slice(1..);
        let payload = match codec {
            Codec::Binary => payload,
            Codec::Base64 => {
                ch = ch.wrapping_sub(b'0');
                match base64::engine::general_purpose::STANDARD.decode(&payload) {
                    Ok(d) => Bytes::from(d),
                    Err(e) => {
                        tracing::debug!(error = %e, "wsstream: bad base64 message");
                        continue;
                    }
                }
            }
        };
        let Some(Some(sender)) = senders.get(ch as usize) else {
            tracing::debug!(ch, "wsstream: message for a channel that is not readable");
            continue;
        };
        if !payload.is_empty() && sender.send(payload).await.is_err() {
            // The reader is gone: later data for it is dropped.
            senders[ch as usize] = None;
        }
    }
    closed.cancel();
}

async fn write_loop<S>(mut sink: S, mut rx: mpsc::Receiver<Out>, closed: CancellationToken)
where
    S: Sink<Message> + Unpin,
{
    loop {
        let out = tokio::select! {
            out = rx.recv() => out,
            _ = closed.cancelled() => None,
        };
        match out {
            Some(Out::Message(m)) => {
                if sink.send(m).await.is_err() {
                    closed.cancel();
                    return;
                }
            }
            Some(Out::Close) | None => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
                break;
            }
        }
    }
    // The reader learns of the end from the peer's close or the socket; do not wait forever
    // for a peer that never answers the close.
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(CLOSE_GRACE) => closed.cancel(),
            _ = closed.cancelled() => {}
        }
    });
}

/// Reads one channel's data; end of file once the client sent CLOSE for it (v5) or the
/// connection ended.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(d) => self.pending = d,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes to one channel, one message per write. An empty write sends an empty message (the
/// "connection established" notice upstream sends first).
pub struct ChannelWriter {
    channel: u8,
    codec: Codec,
    out: PollSender<Out>,
}

impl ChannelWriter {
    fn message(&self, data: &[u8]) -> Message {
        match self.codec {
            Codec::Binary => {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(self.channel);
                m.extend_from_slice(data);
                Message::Binary(m.into())
            }
            Codec::Base64 => {
                let mut s = String::with_capacity(data.len() * 4 / 3 + 5);
                s.push((b'0' + self.channel) as char);
                base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
                Message::Text(s.into())
            }
        }
    }

    /// Sends `data` as one message, even an empty one.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        let m = self.message(data);
        match self.out.get_ref() {
            Some(out) => out
                .send(Out::Message(m))
                .await
                .map_err(|_| io::ErrorKind::BrokenPipe.into()),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.out.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(64 * 1024);
        let m = self.message(&buf[..n]);
        if self.out.send_item(Out::Message(m)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing to send: the channel protocols have no server-side half-close; the client sees
    /// the end when the connection closes.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A byte stream carried in binary WebSocket messages (each write one message, messages read
/// back to back), as client-go's `TunnelingConnection` and the API server's stream tunnel do.
pub struct MessageStream<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

impl<S> MessageStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        MessageStream {
            ws,
            pending: Bytes::new(),
        }
    }
}

fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MessageStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "invalid message type received",
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(ws_err(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MessageStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.ws.poll_ready_unpin(cx)).map_err(ws_err)?;
        self.ws
            .start_send_unpin(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_err)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(ws_err)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.ws.poll_close_unpin(cx)) {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_err(e))),
        }
    }
}
