//! Port-forward on an upgraded connection — the kubelet's `cri/streaming/portforward`.
//!
//! Three transports reach the same [`Backend::port_forward`]:
//! - SPDY (`portforward.k8s.io`): for every forwarded connection the client opens a pair of
//!   streams sharing a `requestID` header, one `streamType: error` and one `streamType: data`,
//!   both with the `port` header. Once both exist the data stream is handed to the backend;
//!   a failure is written as text to the error stream. A pair not complete within the stream
//!   creation timeout is dropped with an error. The session lives until the client hangs up.
//! - WebSocket (`v4.channel.k8s.io`, `portforward.k8s.io`, …): the ports come from the `port`
//!   query parameters, port i gets channel 2i for data and 2i+1 for errors, and the server
//!   first sends each of those channels the port number (2 bytes, little-endian), which
//!   client-go and the python client read before any data.
//! - The tunnel (`SPDY/3.1+portforward.k8s.io`, what kubectl 1.30+ tries first): a WebSocket
//!   whose binary messages carry a SPDY session, served exactly as plain SPDY.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;

use crate::httpstream::{self, error_response, Body};
use crate::remotecommand::{Timeouts, STREAM_TYPE_ERROR, STREAM_TYPE_HEADER};
use crate::spdy::{self, Role, Session};
use crate::wsstream::{self, ChannelConn, ChannelReader, ChannelWriter, Codec, MessageStream};
use crate::Backend;

/// The SPDY sub-protocol of port-forward.
pub const PROTOCOL_V1: &str = "portforward.k8s.io";
/// SPDY tunnelled in a WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
pub const SPDY_PROTOCOLS: [&str; 1] = [PROTOCOL_V1];
/// WebSocket sub-protocols, the tunnel first.
pub const WEBSOCKET_PROTOCOLS: [&str; 7] = [
    TUNNEL_PROTOCOL,
    wsstream::V4_CHANNEL_PROTOCOL,
    wsstream::V4_BASE64_CHANNEL_PROTOCOL,
    PROTOCOL_V1,
    wsstream::CHANNEL_PROTOCOL,
    wsstream::BASE64_CHANNEL_PROTOCOL,
    "",
];

pub const PORT_HEADER: &str = "port";
pub const REQUEST_ID_HEADER: &str = "requestID";
pub const STREAM_TYPE_DATA: &str = "data";

/// Serves a port-forward request for the pod sandbox `sandbox_id`.
pub fn serve<B: Send + 'static>(
    req: Request<B>,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    timeouts: Timeouts,
) -> Response<Body> {
    if wsstream::is_websocket_request(req.headers()) {
        let (protocol, resp) = match wsstream::handshake(req.headers(), &WEBSOCKET_PROTOCOLS) {
            Ok(ok) => ok,
            Err(resp) => return *resp,
        };
        if protocol == TUNNEL_PROTOCOL {
            httpstream::spawn_upgraded(req, move |io| async move {
                let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
                let session = Session::new(MessageStream::new(ws), Role::Server, timeouts.idle);
                run_spdy(session, backend, sandbox_id, timeouts.creation).await;
            });
            return resp;
        }
        let ports = match ports_from_query(req.uri().query()) {
            Ok(p) => p,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
        };
        httpstream::spawn_upgraded(req, move |io| async move {
            let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
            run_websocket(ws, &protocol, ports, backend, sandbox_id, timeouts.idle).await;
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
        run_spdy(session, backend, sandbox_id, timeouts.creation).await;
    });
    resp
}

/// The ports of a WebSocket port-forward (`portforward.NewV4Options`): repeated or
/// comma-separated `port` parameters, each in 1..=65535.
pub fn ports_from_query(query: Option<&str>) -> Result<Vec<u16>, String> {
    let values = httpstream::query_values(query, PORT_HEADER);
    if values.is_empty() {
        return Err(format!("query parameter {PORT_HEADER:?} is required"));
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err(format!("query parameter {PORT_HEADER:?} cannot be empty"));
        }
        for p in value.split(',') {
            let port: u16 = p
                .parse()
                .map_err(|e| format!("unable to parse {p:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {p:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    Ok(ports)
}

#[derive(Default)]
struct Pair {
    data: Option<spdy::Stream>,
    error: Option<spdy::Stream>,
    deadline: Option<Instant>,
}

/// The request a stream belongs to: its `requestID`, or for old clients one derived from the
/// stream id (the error stream is opened just before its data stream).
fn request_id(stream: &spdy::Stream, kind: &str) -> String {
    if let Some(id) = stream.headers().get(REQUEST_ID_HEADER) {
        return id.to_owned();
    }
    if kind == STREAM_TYPE_ERROR {
        stream.id().to_string()
    } else {
        stream.id().saturating_sub(2).to_string()
    }
}

async fn run_spdy(
    session: Session,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    creation: Duration,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pairs.values().filter_map(|p| p.deadline).min();
        let expire = async {
            match next_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let stream = tokio::select! {
            s = session.accept() => match s {
                Some(s) => s,
                None => break,
            },
            _ = expire => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    if let Some(Pair { error: Some(mut error), .. }) = pairs.remove(&id) {
                        let msg = format!("timed out waiting for streams of request {id}");
                        tokio::spawn(async move {
                            let _ = error.write_all(msg.as_bytes()).await;
                            let _ = error.shutdown().await;
                        });
                    }
                }
                continue;
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => continue,
        };
        let kind = stream
            .headers()
            .get(STREAM_TYPE_HEADER)
            .unwrap_or("")
            .to_owned();
        let id = request_id(&stream, &kind);
        let pair = pairs.entry(id.clone()).or_default();
        pair.deadline
            .get_or_insert_with(|| Instant::now() + creation);
        let slot = match kind.as_str() {
            STREAM_TYPE_ERROR => &mut pair.error,
            STREAM_TYPE_DATA => &mut pair.data,
            other => {
                tracing::debug!(stream_type = other, request = %id, "portforward: invalid stream type");
                stream.reset(spdy::RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() {
            tracing::debug!(request = %id, kind, "portforward: duplicate stream");
            stream.reset(spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(stream);
        if pair.data.is_some() && pair.error.is_some() {
            let pair = pairs.remove(&id).expect("the pair is present");
            let (data, error) = (pair.data.unwrap(), pair.error.unwrap());
            forwards.spawn(forward_spdy(
                backend.clone(),
                sandbox_id.clone(),
                data,
                error,
            ));
        }
    }
    // The client hung up: streams still open read end of file and end their forwards.
    while forwards.join_next().await.is_some() {}
}

async fn forward_spdy(
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    data: spdy::Stream,
    mut error: spdy::Stream,
) {
    let port_header = data.headers().get(PORT_HEADER).unwrap_or("").to_owned();
    let result = match port_header.parse::<u16>() {
        Ok(port) if port > 0 => backend
            .port_forward(&sandbox_id, port, Box::new(data))
            .await
            .map_err(|e| format!("error forwarding port {port} to pod {sandbox_id}, uid : {e}")),
        _ => Err(format!("invalid port header {port_header:?}")),
    };
    if let Err(msg) = result {
        tracing::debug!(error = %msg, "portforward");
        let _ = error.write_all(msg.as_bytes()).await;
    }
    let _ = error.shutdown().await;
}

async fn run_websocket<S>(
    ws: WebSocketStream<S>,
    protocol: &str,
    ports: Vec<u16>,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    idle: Option<Duration>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let readable: Vec<bool> = (0..ports.len() * 2).map(|ch| ch % 2 == 0).collect();
    let mut conn = ChannelConn::new(ws, &readable, Codec::of(protocol), false, idle);
    let mut forwards = JoinSet::new();
    for (i, port) in ports.into_iter().enumerate() {
        let (data_ch, error_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let mut data_writer = conn.writer(data_ch);
        let mut error_writer = conn.writer(error_ch);
        let _ = data_writer.send(&port.to_le_bytes()).await;
        let _ = error_writer.send(&port.to_le_bytes()).await;
        let reader = conn
            .take_reader(data_ch)
            .expect("data channels are readable");
        let backend = backend.clone();
        let sandbox_id = sandbox_id.clone();
        forwards.spawn(async move {
            let stream = ChannelDuplex {
                reader,
                writer: data_writer,
            };
            if let Err(e) = backend
                .port_forward(&sandbox_id, port, Box::new(stream))
                .await
            {
                let msg = format!("error forwarding port {port} to pod {sandbox_id}, uid : {e}");
                let _ = error_writer.send(msg.as_bytes()).await;
            }
        });
    }
    tokio::select! {
        _ = async { while forwards.join_next().await.is_some() {} } => {}
        _ = conn.closed() => {}
    }
    conn.close().await;
}

/// One port's data channel as a bidirectional stream.
struct ChannelDuplex {
    reader: ChannelReader,
    writer: ChannelWriter,
}

impl AsyncRead for ChannelDuplex {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelDuplex {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_query_as_upstream() {
        assert_eq!(
            ports_from_query(Some("port=80&port=8080,9090")).unwrap(),
            [80, 8080, 9090]
        );
        assert!(ports_from_query(None).unwrap_err().contains("is required"));
        assert!(ports_from_query(Some("port=0"))
            .unwrap_err()
            .contains("> 0"));
        assert!(ports_from_query(Some("port=x")).is_err());
        assert!(ports_from_query(Some("port=")).is_err());
    }
}
