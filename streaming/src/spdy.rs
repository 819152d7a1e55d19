//! SPDY/3.1 framing and a multiplexed session — what `moby/spdystream` and apimachinery's
//! `httpstream/spdy` give kubectl, client-go and the kubelet.
//!
//! Kubernetes still carries exec, attach and port-forward over SPDY/3.1 (an upgraded HTTP/1.1
//! connection, `Upgrade: SPDY/3.1`): every stdio stream or forwarded connection is one SPDY
//! stream, opened by the client with SYN_STREAM and headers such as `streamType`, answered with
//! SYN_REPLY, half-closed with an empty DATA frame carrying FIN, aborted with RST_STREAM.
//! No maintained SPDY crate exists, so this module is our own and implements just what spdystream
//! does: header blocks are zlib streams primed with the SPDY/3 dictionary, one compression context
//! per direction for the whole connection; flow control is not enforced (spdystream ignores
//! WINDOW_UPDATE and never blocks on windows, so we accept and ignore SETTINGS and
//! WINDOW_UPDATE too); PINGs from the peer are echoed; closing the session sends GOAWAY.
//!
//! A [`Session`] runs a reader task (frames → streams) and a writer task (the only one to touch
//! the write half and the compressor, so header blocks are compressed in wire order). A
//! [`Stream`] is an `AsyncRead + AsyncWrite`; `shutdown` sends FIN (half-close), end of file on
//! read is the peer's FIN, a reset or the end of the connection.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, PollSender};

/// The `Upgrade` header value of a SPDY/3.1 connection.
pub const UPGRADE: &str = "SPDY/3.1";

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
/// The largest DATA payload we send in one frame (the wire allows 16 MiB).
const MAX_DATA: usize = 32 * 1024;
/// The largest frame we accept from the peer.
const MAX_FRAME: usize = 16 * 1024 * 1024 - 1;
/// DATA frames buffered per stream before the reader waits for the stream's consumer.
const STREAM_BUFFER: usize = 64;
/// Frames queued for the writer before stream writes wait.
const WRITE_QUEUE: usize = 128;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes (SPDY/3 section 2.4.2) we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// The zlib dictionary of SPDY/3 header blocks (draft 3, section 2.6.10.1): length-prefixed
/// header names and values, then a run of common strings. Built from its parts; its length and
/// Adler-32 are checked in the tests.
static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
        "501 Not Implemented503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
        "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut dict = Vec::with_capacity(1423);
    for word in WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(TAIL.as_bytes());
    dict
});

/// Header names and values of a stream, names lower-case as SPDY requires. A name given several
/// values appears several times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a value (the name is lower-cased).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One SPDY/3.1 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        id: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        headers: Headers,
    },
    SynReply {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        id: u32,
        status: u32,
    },
    Settings(Vec<(u8, u32, u32)>),
    Ping(u32),
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        id: u32,
        delta: u32,
    },
    Data {
        id: u32,
        fin: bool,
        data: Bytes,
    },
}

fn protocol_error(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The compressing side of one direction's header context.
pub struct HeaderEncoder(Compress);

impl Default for HeaderEncoder {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(&DICTIONARY)
            .expect("zlib-rs accepts a dictionary");
        Self(c)
    }
}

impl HeaderEncoder {
    /// The compressed header block of `headers`, sync-flushed so the peer can decode it alone.
    pub fn encode(&mut self, headers: &Headers) -> io::Result<Vec<u8>> {
        let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, value) in &headers.0 {
            match grouped
                .iter_mut()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                Some((_, values)) => values.push(value),
                None => grouped.push((name, vec![value])),
            }
        }
        let mut raw = BytesMut::new();
        raw.put_u32(grouped.len() as u32);
        for (name, values) in grouped {
            let name = name.to_ascii_lowercase();
            let value = values.join("\0");
            raw.put_u32(name.len() as u32);
            raw.put_slice(name.as_bytes());
            raw.put_u32(value.len() as u32);
            raw.put_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            out.reserve(256);
            let before = self.0.total_in();
            self.0
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| protocol_error(format!("compressing headers: {e}")))?;
            input = &input[(self.0.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of one direction's header context.
pub struct HeaderDecoder(Decompress);

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self(Decompress::new(true))
    }
}

impl HeaderDecoder {
    pub fn decode(&mut self, block: &[u8]) -> io::Result<Headers> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            out.reserve(1024);
            let (before_in, before_out) = (self.0.total_in(), self.0.total_out());
            match self
                .0
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| protocol_error(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(protocol_error(format!("decompressing headers: {e}"))),
            }
            let consumed = (self.0.total_in() - before_in) as usize;
            input = &input[consumed..];
            let progressed = consumed > 0 || self.0.total_out() > before_out;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if !progressed && out.len() < out.capacity() {
                break;
            }
            if out.len() > MAX_FRAME {
                return Err(protocol_error("header block too large"));
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut raw: &[u8]) -> io::Result<Headers> {
    fn take<'a>(raw: &mut &'a [u8]) -> io::Result<&'a [u8]> {
        if raw.len() < 4 {
            return Err(protocol_error("truncated header block"));
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(protocol_error("truncated header block"));
        }
        let (value, rest) = raw.split_at(len);
        *raw = rest;
        Ok(value)
    }
    if raw.len() < 4 {
        return Err(protocol_error("truncated header block"));
    }
    let count = raw.get_u32();
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut raw)?).to_ascii_lowercase();
        let value = take(&mut raw)?;
        for v in value.split(|b| *b == 0) {
            headers
                .0
                .push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    Ok(headers)
}

fn control_header(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | len as u32);
}

/// Appends the wire form of `frame` to `out`.
pub fn encode_frame(frame: &Frame, enc: &mut HeaderEncoder, out: &mut BytesMut) -> io::Result<()> {
    let fin = |f: bool| if f { FLAG_FIN } else { 0 };
    match frame {
        Frame::SynStream {
            id,
            associated,
            priority,
            fin: f,
            headers,
        } => {
            let block = enc.encode(headers)?;
            control_header(out, TYPE_SYN_STREAM, fin(*f), 10 + block.len());
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32(associated & 0x7fff_ffff);
            out.put_u8((priority & 0x7) << 5);
            out.put_u8(0);
            out.put_slice(&block);
        }
        Frame::SynReply {
            id,
            fin: f,
            headers,
        }
        | Frame::Headers {
            id,
            fin: f,
            headers,
        } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let block = enc.encode(headers)?;
            control_header(out, kind, fin(*f), 4 + block.len());
            out.put_u32(id & 0x7fff_ffff);
            out.put_slice(&block);
        }
        Frame::RstStream { id, status } => {
            control_header(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::Settings(entries) => {
            control_header(out, TYPE_SETTINGS, 0, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for (flags, id, value) in entries {
                out.put_u32(((*flags as u32) << 24) | (id & 0xff_ffff));
                out.put_u32(*value);
            }
        }
        Frame::Ping(id) => {
            control_header(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway { last_good, status } => {
            control_header(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { id, delta } => {
            control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32(delta & 0x7fff_ffff);
        }
        Frame::Data { id, fin: f, data } => {
            out.put_u32(id & 0x7fff_ffff);
            out.put_u32(((fin(*f) as u32) << 24) | data.len() as u32);
            out.put_slice(data);
        }
    }
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of the connection. Unknown control frames are
/// skipped, as spdystream's framer does with the ones it does not know.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut HeaderDecoder,
) -> io::Result<Option<Frame>> {
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..]).await?;
        let mut h = &head[..];
        let first = h.get_u32();
        let flags_len = h.get_u32();
        let flags = (flags_len >> 24) as u8;
        let len = (flags_len & 0xff_ffff) as usize;
        if len > MAX_FRAME {
            return Err(protocol_error("frame too large"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first & 0x7fff_ffff,
                fin,
                data: Bytes::from(body),
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(protocol_error(format!(
                "unsupported SPDY version {version}"
            )));
        }
        let kind = (first & 0xffff) as u16;
        let need = |n: usize| {
            if body.len() < n {
                Err(protocol_error(format!("control frame {kind} too short")))
            } else {
                Ok(())
            }
        };
        let mut b = &body[..];
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(10)?;
                let id = b.get_u32() & 0x7fff_ffff;
                let associated = b.get_u32() & 0x7fff_ffff;
                let priority = b.get_u8() >> 5;
                b.advance(1);
                Frame::SynStream {
                    id,
                    associated,
                    priority,
                    fin,
                    headers: dec.decode(b)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(4)?;
                let id = b.get_u32() & 0x7fff_ffff;
                let headers = dec.decode(b)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply { id, fin, headers }
                } else {
                    Frame::Headers { id, fin, headers }
                }
            }
            TYPE_RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    id: b.get_u32() & 0x7fff_ffff,
                    status: b.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(4)?;
                let n = b.get_u32() as usize;
                need(4 + n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|_| {
                        let id = b.get_u32();
                        ((id >> 24) as u8, id & 0xff_ffff, b.get_u32())
                    })
                    .collect();
                Frame::Settings(entries)
            }
            TYPE_PING => {
                need(4)?;
                Frame::Ping(b.get_u32())
            }
            TYPE_GOAWAY => {
                need(4)?;
                let last_good = b.get_u32() & 0x7fff_ffff;
                let status = if b.len() >= 4 { b.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            TYPE_WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    id: b.get_u32() & 0x7fff_ffff,
                    delta: b.get_u32() & 0x7fff_ffff,
                }
            }
            _ => continue,
        };
        return Ok(Some(frame));
    }
}

/// Which end of the connection a session is: clients open odd-numbered streams and send
/// odd-numbered pings, servers even.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

enum Out {
    Frame(Frame),
    Close,
}

struct Slot {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<Headers>>,
    /// Set when the peer resets the stream: writes fail from then on.
    reset: Arc<AtomicBool>,
}

struct Shared {
    role: Role,
    streams: Mutex<HashMap<u32, Slot>>,
    next_id: AtomicU32,
    last_good: AtomicU32,
    activity: Mutex<Instant>,
    closed: CancellationToken,
}

impl Shared {
    fn touch(&self) {
        *self.activity.lock().unwrap() = Instant::now();
    }
}

/// A SPDY/3.1 connection: opens streams (client) or accepts them (server). Dropping it closes
/// the connection (GOAWAY, then the write half is shut down after queued frames are written).
pub struct Session {
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Stream>>,
}

impl Session {
    /// Starts a session on `io`. With `idle_timeout`, the connection is closed once no frame
    /// went either way for that long (spdystream's `SetIdleTimeout`).
    pub fn new<T>(io: T, role: Role, idle_timeout: Option<Duration>) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let shared = Arc::new(Shared {
            role,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(if role == Role::Client { 1 } else { 2 }),
            last_good: AtomicU32::new(0),
            activity: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        });
        let (out_tx, out_rx) = mpsc::channel(WRITE_QUEUE);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(write, out_rx, shared.clone()));
        tokio::spawn(read_loop(read, shared.clone(), out_tx.clone(), in_tx));
        if let Some(idle) = idle_timeout {
            tokio::spawn(idle_watch(shared.clone(), out_tx.clone(), idle));
        }
        Session {
            shared,
            out: out_tx,
            incoming: tokio::sync::Mutex::new(in_rx),
        }
    }

    /// The next stream the peer opened (already answered with SYN_REPLY), or `None` once the
    /// connection is gone.
    pub async fn accept(&self) -> Option<Stream> {
        self.incoming.lock().await.recv().await
    }

    /// Opens a stream with `headers` and waits for the peer's SYN_REPLY.
    pub async fn open(&self, headers: Headers) -> io::Result<Stream> {
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (data_tx, data_rx) = mpsc::channel(STREAM_BUFFER);
        let (reply_tx, reply_rx) = oneshot::channel();
        let reset = Arc::new(AtomicBool::new(false));
        if self.shared.closed.is_cancelled() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.shared.streams.lock().unwrap().insert(
            id,
            Slot {
                data: Some(data_tx),
                reply: Some(reply_tx),
                reset: reset.clone(),
            },
        );
        let syn = Frame::SynStream {
            id,
            associated: 0,
            priority: 0,
            fin: false,
            headers: headers.clone(),
        };
        self.out
            .send(Out::Frame(syn))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::NotConnected))?;
        let stream = Stream::new(
            id,
            headers,
            data_rx,
            reset,
            self.out.clone(),
            self.shared.clone(),
        );
        tokio::select! {
            biased;
            reply = reply_rx => match reply {
                Ok(_) => Ok(stream),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("stream {id} was reset or the connection closed before a reply"),
                )),
            },
            _ = self.shared.closed.cancelled() => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Sends GOAWAY and closes the connection once queued frames are written.
    pub fn close(&self) {
        close_via(&self.out);
    }

    /// Resolves once the connection is closed (by either side or the idle timeout).
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        close_via(&self.out);
    }
}

fn close_via(out: &mpsc::Sender<Out>) {
    if let Err(mpsc::error::TrySendError::Full(msg)) = out.try_send(Out::Close) {
        let out = out.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = out.send(msg).await;
            });
        }
    }
}

async fn write_loop<W: AsyncWrite>(write: W, mut rx: mpsc::Receiver<Out>, shared: Arc<Shared>) {
    let mut enc = HeaderEncoder::default();
    let mut buf = BytesMut::with_capacity(MAX_DATA + 64);
    let mut write = std::pin::pin!(write);
    loop {
        let mut next = tokio::select! {
            msg = rx.recv() => msg,
            _ = shared.closed.cancelled() => None,
        };
        // Encode what is queued (up to about one DATA frame's worth) for one write.
        buf.clear();
        let mut closing = false;
        loop {
            match next {
                Some(Out::Frame(frame)) => {
                    if let Err(e) = encode_frame(&frame, &mut enc, &mut buf) {
                        tracing::debug!(error = %e, "spdy: encoding a frame");
                        closing = true;
                        break;
                    }
                }
                Some(Out::Close) | None => {
                    closing = true;
                    break;
                }
            }
            if buf.len() >= MAX_DATA {
                break;
            }
            match rx.try_recv() {
                Ok(out) => next = Some(out),
                Err(_) => break,
            }
        }
        if closing {
            let goaway = Frame::GoAway {
                last_good: shared.last_good.load(Ordering::Relaxed),
                status: 0,
            };
            let _ = encode_frame(&goaway, &mut enc, &mut buf);
            let _ = write.write_all(&buf).await;
            let _ = write.shutdown().await;
            break;
        }
        if write.write_all(&buf).await.is_err() || write.flush().await.is_err() {
            break;
        }
        shared.touch();
    }
    shared.closed.cancel();
}

async fn read_loop<R: AsyncRead>(
    read: R,
    shared: Arc<Shared>,
    out: mpsc::Sender<Out>,
    incoming: mpsc::UnboundedSender<Stream>,
) {
    let mut read = std::pin::pin!(read);
    let mut dec = HeaderDecoder::default();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut read, &mut dec) => frame,
            _ = shared.closed.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "spdy: reading a frame");
                break;
            }
        };
        shared.touch();
        match frame {
            Frame::SynStream {
                id, fin, headers, ..
            } => {
                let peer_parity = if shared.role == Role::Server { 1 } else { 0 };
                if id == 0 || id % 2 != peer_parity {
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            id,
                            status: RST_PROTOCOL_ERROR,
                        }))
                        .await;
                    continue;
                }
                let (data_tx, data_rx) = mpsc::channel(STREAM_BUFFER);
                let reset = Arc::new(AtomicBool::new(false));
                shared.streams.lock().unwrap().insert(
                    id,
                    Slot {
                        data: (!fin).then_some(data_tx),
                        reply: None,
                        reset: reset.clone(),
                    },
                );
                shared.last_good.fetch_max(id, Ordering::Relaxed);
                let reply = Frame::SynReply {
                    id,
                    fin: false,
                    headers: Headers::new(),
                };
                if out.send(Out::Frame(reply)).await.is_err() {
                    break;
                }
                let stream = Stream::new(id, headers, data_rx, reset, out.clone(), shared.clone());
                if let Err(refused) = incoming.send(stream) {
                    // Nobody accepts streams any more: refuse it.
                    let mut stream = refused.0;
                    stream.fin_sent = true;
                    let _ = out
                        .send(Out::Frame(Frame::RstStream {
                            id,
                            status: RST_REFUSED_STREAM,
                        }))
                        .await;
                }
            }
            Frame::SynReply { id, fin, .. } => {
                let mut streams = shared.streams.lock().unwrap();
                if let Some(slot) = streams.get_mut(&id) {
                    if let Some(reply) = slot.reply.take() {
                        let _ = reply.send(Headers::new());
                    }
                    if fin {
                        slot.data = None;
                    }
                }
            }
            Frame::Data { id, fin, data } => {
                let sender = shared
                    .streams
                    .lock()
                    .unwrap()
                    .get(&id)
                    .and_then(|s| s.data.clone());
                if let Some(sender) = sender {
                    if !data.is_empty() {
                        // Waiting here is spdystream's backpressure: a stream nobody reads
                        // stalls the connection until it is read or dropped.
                        let _ = sender.send(data).await;
                    }
                }
                if fin {
                    if let Some(slot) = shared.streams.lock().unwrap().get_mut(&id) {
                        slot.data = None;
                    }
                }
            }
            Frame::RstStream { id, .. } => {
                if let Some(slot) = shared.streams.lock().unwrap().remove(&id) {
                    slot.reset.store(true, Ordering::Relaxed);
                }
            }
            Frame::Ping(id) => {
                let ours = if shared.role == Role::Client { 1 } else { 0 };
                if id % 2 != ours {
                    let _ = out.send(Out::Frame(Frame::Ping(id))).await;
                }
            }
            // The peer opens no more streams; the ones open go on until it closes the
            // connection.
            Frame::GoAway { .. } => {}
            Frame::Headers { id, fin, .. } => {
                if fin {
                    if let Some(slot) = shared.streams.lock().unwrap().get_mut(&id) {
                        slot.data = None;
                    }
                }
            }
            Frame::Settings(_) | Frame::WindowUpdate { .. } => {}
        }
    }
    // The connection is gone: every stream reads end of file, pending opens fail.
    shared.streams.lock().unwrap().clear();
    drop(incoming);
    close_via(&out);
    shared.closed.cancel();
}

async fn idle_watch(shared: Arc<Shared>, out: mpsc::Sender<Out>, idle: Duration) {
    loop {
        let deadline = *shared.activity.lock().unwrap() + idle;
        if Instant::now() >= deadline {
            tracing::debug!("spdy: closing an idle connection");
            close_via(&out);
            shared.closed.cancel();
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = shared.closed.cancelled() => return,
        }
    }
}

/// One SPDY stream: reads what the peer sends on it, writes DATA frames; `shutdown` half-closes
/// (FIN). Dropping it half-closes too if that was not done yet.
pub struct Stream {
    id: u32,
    headers: Headers,
    data: mpsc::Receiver<Bytes>,
    pending: Bytes,
    reset: Arc<AtomicBool>,
    out: PollSender<Out>,
    shared: Arc<Shared>,
    fin_sent: bool,
}

impl Stream {
    fn new(
        id: u32,
        headers: Headers,
        data: mpsc::Receiver<Bytes>,
        reset: Arc<AtomicBool>,
        out: mpsc::Sender<Out>,
        shared: Arc<Shared>,
    ) -> Self {
        Stream {
            id,
            headers,
            data,
            pending: Bytes::new(),
            reset,
            out: PollSender::new(out),
            shared,
            fin_sent: false,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened this stream.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Aborts the stream with RST_STREAM.
    pub async fn reset(mut self, status: u32) {
        self.fin_sent = true;
        self.shared.streams.lock().unwrap().remove(&self.id);
        if let Some(out) = self.out.get_ref() {
            let _ = out
                .send(Out::Frame(Frame::RstStream {
                    id: self.id,
                    status,
                }))
                .await;
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.data.poll_recv(cx)) {
                Some(data) => self.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fin_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "spdy stream closed for writing",
            )));
        }
        if self.reset.load(Ordering::Relaxed) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "spdy stream reset by the peer",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.out.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_DATA);
        let frame = Frame::Data {
            id: self.id,
            fin: false,
            data: Bytes::copy_from_slice(&buf[..n]),
        };
        if self.out.send_item(Out::Frame(frame)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.fin_sent {
            return Poll::Ready(Ok(()));
        }
        if ready!(self.out.poll_reserve(cx)).is_err() {
            self.fin_sent = true;
            return Poll::Ready(Ok(()));
        }
        let frame = Frame::Data {
            id: self.id,
            fin: true,
            data: Bytes::new(),
        };
        let _ = self.out.send_item(Out::Frame(frame));
        self.fin_sent = true;
        Poll::Ready(Ok(()))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.shared.streams.lock().unwrap().remove(&self.id);
        if self.fin_sent {
            return;
        }
        if let Some(out) = self.out.get_ref() {
            let fin = Out::Frame(Frame::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            });
            if let Err(mpsc::error::TrySendError::Full(fin)) = out.try_send(fin) {
                let out = out.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = out.send(fin).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The dictionary id a SPDY/3 zlib stream announces (FDICT).
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for byte in DICTIONARY.iter() {
            a = (a + *byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    /// A SYN_STREAM written by another SPDY/3 implementation (node-spdy's test suite) decodes.
    #[tokio::test]
    async fn a_foreign_syn_stream_decodes() {
        let hex = "800300010000002c0000000100000000000078f9e3c6a7c202e50e507ab442a45a77d7105006\
                   b32a4804974d8cfa00000000ffff";
        let wire: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut r = &wire[..];
        let frame = read_frame(&mut r, &mut HeaderDecoder::default())
            .await
            .unwrap()
            .unwrap();
        let Frame::SynStream { id, headers, .. } = frame else {
            panic!("expected SYN_STREAM, got {frame:?}");
        };
        assert_eq!(id, 1);
        assert!(!headers.0.is_empty(), "no headers decoded");
    }

    #[tokio::test]
    async fn frames_round_trip_with_one_compression_context_per_direction() {
        let frames = vec![
            Frame::SynStream {
                id: 1,
                associated: 0,
                priority: 2,
                fin: false,
                headers: Headers::new()
                    .with("streamType", "stdout")
                    .with("port", "80")
                    .with("port", "81"),
            },
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: Headers::new(),
            },
            Frame::SynStream {
                id: 3,
                associated: 0,
                priority: 0,
                fin: true,
                headers: Headers::new().with("streamtype", "stdout"),
            },
            Frame::Data {
                id: 1,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream { id: 3, status: 5 },
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::Ping(2),
            Frame::WindowUpdate { id: 1, delta: 100 },
            Frame::Headers {
                id: 1,
                fin: true,
                headers: Headers::new().with("a", "b"),
            },
            Frame::GoAway {
                last_good: 3,
                status: 0,
            },
        ];
        let mut enc = HeaderEncoder::default();
        let mut wire = BytesMut::new();
        for f in &frames {
            encode_frame(f, &mut enc, &mut wire).unwrap();
        }
        let mut dec = HeaderDecoder::default();
        let mut r = &wire[..];
        for f in &frames {
            let got = read_frame(&mut r, &mut dec).await.unwrap().unwrap();
            assert_eq!(&got, f);
        }
        assert!(read_frame(&mut r, &mut dec).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn session_streams_carry_data_both_ways_with_half_close() {
        let (a, b) = tokio::io::duplex(1024);
        let client = Session::new(a, Role::Client, None);
        let server = Session::new(b, Role::Server, None);
        let srv = tokio::spawn(async move {
            let mut s = server.accept().await.unwrap();
            assert_eq!(s.headers().get("streamType"), Some("x"));
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.shutdown().await.unwrap();
            server
        });
        let mut s = client
            .open(Headers::new().with("streamType", "x"))
            .await
            .unwrap();
        let payload = vec![7u8; 200_000];
        s.write_all(&payload).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, payload);
        let server = srv.await.unwrap();
        drop(client);
        server.closed().await;
    }

    /// Against a peer speaking raw frames: its PING is echoed, its SYN_STREAM answered, and
    /// after its RST_STREAM our writes on the stream fail; closing the session sends GOAWAY.
    #[tokio::test]
    async fn pings_are_echoed_and_a_reset_stops_writes() {
        let (a, mut peer) = tokio::io::duplex(64 * 1024);
        let server = Session::new(a, Role::Server, None);
        let (mut enc, mut dec) = (HeaderEncoder::default(), HeaderDecoder::default());
        let send = |f: Frame, enc: &mut HeaderEncoder| {
            let mut b = BytesMut::new();
            encode_frame(&f, enc, &mut b).unwrap();
            b
        };
        peer.write_all(&send(Frame::Ping(1), &mut enc))
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut peer, &mut dec).await.unwrap(),
            Some(Frame::Ping(1))
        );
        let syn = Frame::SynStream {
            id: 1,
            associated: 0,
            priority: 0,
            fin: false,
            headers: Headers::new().with("streamType", "data"),
        };
        peer.write_all(&send(syn, &mut enc)).await.unwrap();
        let mut stream = server.accept().await.unwrap();
        assert!(matches!(
            read_frame(&mut peer, &mut dec).await.unwrap(),
            Some(Frame::SynReply { id: 1, .. })
        ));
        stream.write_all(b"before").await.unwrap();
        assert!(matches!(
            read_frame(&mut peer, &mut dec).await.unwrap(),
            Some(Frame::Data {
                id: 1,
                fin: false,
                ..
            })
        ));
        let rst = Frame::RstStream {
            id: 1,
            status: RST_CANCEL,
        };
        peer.write_all(&send(rst, &mut enc)).await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty(), "a reset stream reads end of file");
        let err = stream.write_all(b"after").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        drop(stream);
        drop(server);
        loop {
            match read_frame(&mut peer, &mut dec).await.unwrap() {
                Some(Frame::GoAway { last_good, .. }) => {
                    assert_eq!(last_good, 1);
                    break;
                }
                Some(_) => {}
                None => panic!("the connection ended without GOAWAY"),
            }
        }
    }
}
