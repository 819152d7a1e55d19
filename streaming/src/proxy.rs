//! The upgrade-aware reverse proxy (upstream's `apimachinery/pkg/util/proxy.UpgradeAwareHandler`)
//! the kubelet uses to hand an exec/attach/port-forward request on to its runtime's streaming
//! server, and the API server to hand `pods/exec`, `pods/attach`, `pods/portforward` and
//! `nodes/proxy` on to a kubelet.
//!
//! The request goes out on a connection the caller opened (plain TCP, TLS, …) with its method,
//! headers and body. If the backend answers `101 Switching Protocols`, the client gets the same
//! answer and, once both sides have upgraded, the two connections are spliced byte for byte until
//! either closes; whatever protocol was negotiated (SPDY, WebSocket) passes through untouched.
//! Any other answer is streamed back as it is (errors keep the backend's status and body).

use std::error::Error as StdError;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed error, as hyper bodies carry them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The body of a proxied answer: the backend's, or a short error text of ours.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1); `Connection` and `Upgrade`
/// are kept on upgrade requests, where they are the point.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
];

/// Whether `req` asks to switch protocols (`Connection: Upgrade` with an `Upgrade` header).
pub fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && req.headers().contains_key(header::UPGRADE)
}

/// Sends `req` to `path_and_query` over `io` (already connected to the backend, `authority`
/// being its host:port for the `Host` header) and answers the client with the backend's answer;
/// an upgrade is spliced through in a task of its own.
pub async fn forward<B, IO>(
    mut req: Request<B>,
    io: IO,
    authority: &str,
    path_and_query: &str,
) -> Response<ProxyBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let upgrade = is_upgrade_request(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path_and_query);
    for (name, value) in parts.headers.iter() {
        if skip_header(name, upgrade) {
            continue;
        }
        out = out.header(name, value);
    }
    out = out.header(header::HOST, authority);
    let body = http_body_util::BodyExt::map_err(body, Into::into);
    let out = match out.body(http_body_util::combinators::UnsyncBoxBody::new(body)) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &format!("proxy error: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("proxied connection: {e}");
        }
    });
    let mut resp: Response<Incoming> = match sender.send_request(out).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("error dialing backend: {e}"),
            )
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return resp.map(|b| {
            http_body_util::combinators::UnsyncBoxBody::new(http_body_util::BodyExt::map_err(
                b,
                |e| Box::new(e) as BoxError,
            ))
        });
    }
    let Some(client_upgrade) = client_upgrade else {
        // The backend switched protocols on a request that did not ask to: nothing to splice.
        return error(
            StatusCode::BAD_GATEWAY,
            "backend switched protocols without an upgrade request",
        );
    };
    let backend_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client_upgrade, backend_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!("upgrading a proxied connection: {e}");
                return;
            }
        };
        if let Err(e) = splice(TokioIo::new(client), TokioIo::new(backend)).await {
            tracing::debug!("proxied stream ended: {e}");
        }
    });
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in resp.headers() {
        answer = answer.header(name, value);
    }
    answer.body(empty()).unwrap_or_else(|_| {
        error(
            StatusCode::BAD_GATEWAY,
            "backend answered with invalid headers",
        )
    })
}

/// How long the backend's last bytes may take once writing to it has failed.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Copies both ways until both are done (or one fails); the error of the backend-to-client copy,
/// if any. Unlike `copy_bidirectional`, a failed write to the backend (it closed first, as a
/// streaming server does right after writing the exit status, or an HTTP server after its
/// answer) does not end the splice: what the backend wrote before closing still reaches the
/// client, so its last words are never lost to the race.
pub async fn splice<C, B>(client: C, backend: B) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let upstream = async {
        let r = tokio::io::copy(&mut client_read, &mut backend_write).await;
        let _ = backend_write.shutdown().await;
        r
    };
    let downstream = async {
        let r = tokio::io::copy(&mut backend_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        r.map(drop)
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        r = &mut downstream => {
            // The backend closed its half: the client finishes and closes, as long as it takes.
            r?;
            let _ = upstream.await;
            Ok(())
        }
        r = &mut upstream => match r {
            // The client closed its half: the backend answers and closes, as long as it takes.
            Ok(_) => downstream.await,
            // Writing to the backend failed: it has closed, only its last bytes are left.
            Err(e) => {
                tracing::debug!("proxied stream to the backend ended: {e}");
                tokio::time::timeout(DRAIN_TIMEOUT, downstream)
                    .await
                    .unwrap_or(Ok(()))
            }
        },
    }
}

fn skip_header(name: &HeaderName, upgrade: bool) -> bool {
    let n = name.as_str();
    n == header::HOST.as_str()
        || HOP_BY_HOP.contains(&n)
        || (!upgrade && (name == header::CONNECTION || name == header::UPGRADE))
}

fn empty() -> ProxyBody {
    http_body_util::combinators::UnsyncBoxBody::new(
        http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}),
    )
}

/// A plain-text error answer.
pub fn error(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let body =
        http_body_util::Full::new(Bytes::from(message.to_owned())).map_err(|never| match never {});
    let mut r = Response::new(http_body_util::combinators::UnsyncBoxBody::new(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that switches to a raw echo on any upgrade request, and answers 404 otherwise.
    async fn echo_backend() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                        if !is_upgrade_request(&req) {
                            let mut r = Response::new(http_body_util::Full::new(Bytes::from(
                                format!("no such thing: {}", req.uri()),
                            )));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            return Ok::<_, hyper::Error>(r);
                        }
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 1024];
                            loop {
                                let n = io.read(&mut buf).await.unwrap_or(0);
                                if n == 0 {
                                    break;
                                }
                                io.write_all(&buf[..n]).await.unwrap();
                            }
                        });
                        let r = Response::builder()
                            .status(StatusCode::SWITCHING_PROTOCOLS)
                            .header(header::CONNECTION, "Upgrade")
                            .header(header::UPGRADE, "test-echo")
                            .header("X-Stream-Protocol-Version", "v4.channel.k8s.io")
                            .body(http_body_util::Full::new(Bytes::new()))
                            .unwrap();
                        Ok(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    /// A proxy in front of `backend`, forwarding every request to the same path.
    async fn proxy(backend: std::net::SocketAddr) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<Incoming>| async move {
                            let io = tokio::net::TcpStream::connect(backend).await.unwrap();
                            let pq = req.uri().path_and_query().unwrap().to_string();
                            Ok::<_, hyper::Error>(forward(req, io, &backend.to_string(), &pq).await)
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn upgrades_are_spliced_and_errors_pass_through() {
        let backend = echo_backend().await;
        let front = proxy(backend).await;

        let mut tcp = tokio::net::TcpStream::connect(front).await.unwrap();
        tcp.write_all(
            b"POST /exec/x HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: test-echo\r\n\
              X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8(head).unwrap().to_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("x-stream-protocol-version: v4.channel.k8s.io"));
        tcp.write_all(b"ping through the proxy").await.unwrap();
        let mut echoed = [0u8; 22];
        tcp.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping through the proxy");

        let mut tcp = tokio::net::TcpStream::connect(front).await.unwrap();
        tcp.write_all(b"GET /nope?a=1 HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut all = String::new();
        tcp.read_to_string(&mut all).await.unwrap();
        assert!(all.starts_with("HTTP/1.1 404"), "{all}");
        assert!(all.ends_with("no such thing: /nope?a=1"), "{all}");
    }

    /// A backend that writes its last words and closes while the client is still sending (a
    /// streaming server writing the exit status): the words reach the client, whatever the
    /// failed writes to the backend.
    #[tokio::test]
    async fn a_closing_backends_last_bytes_reach_the_client() {
        for _ in 0..20 {
            let (client_end, client_side) = tokio::io::duplex(64);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let backend_task = tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 16];
                let _ = tcp.read(&mut buf).await;
                tcp.write_all(b"exit status 3").await.unwrap();
                // Closing with unread input sends a reset: later writes to it fail.
            });
            let backend = tokio::net::TcpStream::connect(addr).await.unwrap();
            let splicing = tokio::spawn(async move {
                let _ = splice(client_side, backend).await;
            });
            let (mut rd, mut wr) = tokio::io::split(client_end);
            let writer = tokio::spawn(async move {
                let chunk = [7u8; 4096];
                while wr.write_all(&chunk).await.is_ok() {
                    tokio::task::yield_now().await;
                }
            });
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(10), rd.read_to_end(&mut got))
                .await
                .expect("the splice ends")
                .unwrap();
            assert_eq!(got, b"exit status 3");
            backend_task.await.unwrap();
            splicing.await.unwrap();
            writer.abort();
        }
    }
}
