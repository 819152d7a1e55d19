//! The streaming server end to end over loopback: exec, attach and port-forward through SPDY,
//! WebSockets and the SPDY-in-WebSocket tunnel, against a fake backend; malformed requests;
//! tokens; and that a client vanishing mid-stream leaves no task or file descriptor behind.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_cri::v1::AttachRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use streaming::client::{self, ExecIo, PortForwarder};
use streaming::server::{Config, Server};
use streaming::spdy::{Role, Session};
use streaming::wsstream::MessageStream;

mod support;
use streaming::TerminalSize;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn exec_over_spdy_v4_reports_output_and_exit_status() {
    let server = start(Arc::new(Fake::default()));
    let v4 = "v4.channel.k8s.io";

    let (status, out, err) = spdy_exec(
        &server,
        exec_req(&["echo", "hello", "world"], false, true, true, false),
        v4,
        None,
    )
    .await;
    assert_eq!(status.status.as_deref(), Some("Success"), "{status:?}");
    assert_eq!((out.as_str(), err.as_str()), ("hello world\n", "err\n"));

    let (status, _, _) = spdy_exec(
        &server,
        exec_req(&["exit", "3"], false, true, true, false),
        v4,
        None,
    )
    .await;
    assert_eq!(client::exit_code(&status), Some(3), "{status:?}");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(
        status.message.as_deref(),
        Some("command terminated with non-zero exit code: error executing command [exit 3], exit code 3")
    );

    let (status, _, _) = spdy_exec(
        &server,
        exec_req(&["nope"], false, true, false, false),
        v4,
        None,
    )
    .await;
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("InternalError"));
    assert_eq!(
        status.message.as_deref(),
        Some("Internal error occurred: error executing command in container: executable file not found: nope")
    );
    assert_eq!(client::exit_code(&status), None);
}

#[tokio::test]
async fn exec_over_older_spdy_protocols_reports_errors_as_text() {
    let server = start(Arc::new(Fake::default()));
    for proto in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let (status, out, _) = spdy_exec(
            &server,
            exec_req(&["echo", "hi"], false, true, false, false),
            proto,
            None,
        )
        .await;
        assert_eq!(status.status.as_deref(), Some("Success"), "{proto}");
        assert_eq!(out, "hi\n", "{proto}");
        let (status, _, _) = spdy_exec(
            &server,
            exec_req(&["exit", "2"], false, true, false, false),
            proto,
            None,
        )
        .await;
        assert_eq!(
            status.message.as_deref(),
            Some("command terminated with non-zero exit code: error executing command [exit 2], exit code 2"),
            "{proto}"
        );
    }
}

#[tokio::test]
async fn stdin_through_cat_over_spdy_ends_with_half_close() {
    let server = start(Arc::new(Fake::default()));
    let (status, out, _) = spdy_exec(
        &server,
        exec_req(&["cat"], true, true, false, false),
        "v4.channel.k8s.io",
        Some(b"piped through cat"),
    )
    .await;
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert_eq!(out, "piped through cat");
}

#[tokio::test]
async fn attach_over_spdy() {
    let server = start(Arc::new(Fake::default()));
    let req = AttachRequest {
        container_id: "c1".into(),
        stdin: true,
        stdout: true,
        ..Default::default()
    };
    let url = server.get_attach(&req).unwrap().url;
    let (session, proto) = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let out = Sink::default();
    let io = ExecIo {
        stdin: Some(Box::pin(&b"attached"[..])),
        stdout: Some(Box::pin(out.clone())),
        ..Default::default()
    };
    let status = within("attach", client::exec(&session, &proto, io))
        .await
        .unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert_eq!(out.text(), "attached");
}

#[tokio::test]
async fn resize_over_spdy_reaches_the_backend() {
    let fake = Arc::new(Fake::default());
    let server = start(fake.clone());
    let url = server
        .get_exec(&exec_req(&["resize", "2"], false, true, false, true))
        .unwrap()
        .url;
    let (session, proto) = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(TerminalSize {
        width: 80,
        height: 24,
    })
    .await
    .unwrap();
    tx.send(TerminalSize {
        width: 120,
        height: 40,
    })
    .await
    .unwrap();
    let out = Sink::default();
    let io = ExecIo {
        stdout: Some(Box::pin(out.clone())),
        tty: true,
        resize: Some(rx),
        ..Default::default()
    };
    let status = within("tty exec", client::exec(&session, &proto, io))
        .await
        .unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert_eq!(out.text(), "resized\n");
    assert_eq!(
        *fake.resizes.lock().unwrap(),
        [
            TerminalSize {
                width: 80,
                height: 24
            },
            TerminalSize {
                width: 120,
                height: 40
            }
        ]
    );
}

/// Reads binary messages until the server closes; returns them as (channel, payload).
async fn ws_drain(ws: &mut Ws) -> Vec<(u8, Vec<u8>)> {
    let mut got = Vec::new();
    while let Some(msg) = within("websocket message", ws.next()).await {
        match msg {
            Ok(Message::Binary(b)) => got.push((b[0], b[1..].to_vec())),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    got
}

fn channel(msgs: &[(u8, Vec<u8>)], ch: u8) -> Vec<u8> {
    msgs.iter()
        .filter(|(c, _)| *c == ch)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

#[tokio::test]
async fn exec_over_websocket_v5_and_v4() {
    let server = start(Arc::new(Fake::default()));
    for proto in ["v5.channel.k8s.io", "v4.channel.k8s.io"] {
        let url = server
            .get_exec(&exec_req(&["echo", "hi"], false, true, true, false))
            .unwrap()
            .url;
        let (mut ws, chosen) = ws_connect(&server, &path_of(&url), &[proto, "channel.k8s.io"])
            .await
            .unwrap();
        assert_eq!(chosen.as_deref(), Some(proto));
        let msgs = ws_drain(&mut ws).await;
        assert_eq!(
            msgs[0],
            (1, vec![]),
            "{proto}: first an empty message on stdout"
        );
        assert_eq!(channel(&msgs, 1), b"hi\n", "{proto}");
        assert_eq!(channel(&msgs, 2), b"err\n", "{proto}");
        let status: Status = serde_json::from_slice(&channel(&msgs, 3)).unwrap();
        assert_eq!(status.status.as_deref(), Some("Success"), "{proto}");

        let url = server
            .get_exec(&exec_req(&["exit", "7"], false, true, false, false))
            .unwrap()
            .url;
        let (mut ws, _) = ws_connect(&server, &path_of(&url), &[proto]).await.unwrap();
        let msgs = ws_drain(&mut ws).await;
        let status: Status = serde_json::from_slice(&channel(&msgs, 3)).unwrap();
        assert_eq!(client::exit_code(&status), Some(7), "{proto}: {status:?}");
    }
}

#[tokio::test]
async fn stdin_through_cat_over_websocket_ends_with_the_v5_close_signal() {
    let server = start(Arc::new(Fake::default()));
    let url = server
        .get_exec(&exec_req(&["cat"], true, true, false, false))
        .unwrap()
        .url;
    let (mut ws, _) = ws_connect(&server, &path_of(&url), &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00hello ".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00cat".to_vec().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![255, 0].into())).await.unwrap();
    let msgs = ws_drain(&mut ws).await;
    assert_eq!(channel(&msgs, 1), b"hello cat");
    let status: Status = serde_json::from_slice(&channel(&msgs, 3)).unwrap();
    assert_eq!(status.status.as_deref(), Some("Success"));
}

#[tokio::test]
async fn resize_over_websocket_reaches_the_backend() {
    let fake = Arc::new(Fake::default());
    let server = start(fake.clone());
    let url = server
        .get_exec(&exec_req(&["resize", "1"], true, true, false, true))
        .unwrap()
        .url;
    let (mut ws, _) = ws_connect(&server, &path_of(&url), &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(Message::Binary(
        b"\x04{\"Width\":100,\"Height\":30}".to_vec().into(),
    ))
    .await
    .unwrap();
    let msgs = ws_drain(&mut ws).await;
    assert_eq!(channel(&msgs, 1), b"resized\n");
    assert_eq!(
        *fake.resizes.lock().unwrap(),
        [TerminalSize {
            width: 100,
            height: 30
        }]
    );
}

#[tokio::test]
async fn exec_over_base64_websocket() {
    let server = start(Arc::new(Fake::default()));
    let url = server
        .get_exec(&exec_req(&["echo", "b64"], false, true, false, false))
        .unwrap()
        .url;
    let (mut ws, chosen) = ws_connect(&server, &path_of(&url), &["v4.base64.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut stdout = String::new();
    while let Some(Ok(msg)) = within("message", ws.next()).await {
        if let Message::Text(t) = msg {
            if let Some(data) = t.strip_prefix('1') {
                use base64::Engine;
                let d = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap();
                stdout.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    }
    assert_eq!(stdout, "b64\n");
}

async fn forward_many(pf: &PortForwarder, port: u16, tag: &str, n: usize) {
    let conns = futures::future::join_all((0..n).map(|i| async move {
        let mut c = pf.open(port).await.unwrap();
        let payload = format!("connection {i} ").repeat(1000);
        c.data.write_all(payload.as_bytes()).await.unwrap();
        c.data.shutdown().await.unwrap();
        let mut back = String::new();
        c.data.read_to_string(&mut back).await.unwrap();
        let mut err = String::new();
        c.error.read_to_string(&mut err).await.unwrap();
        (payload, back, err)
    }));
    for (payload, back, err) in within("concurrent forwards", conns).await {
        assert_eq!(back, format!("{tag}:{payload}"));
        assert_eq!(err, "");
    }
}

#[tokio::test]
async fn port_forward_over_spdy_with_concurrent_streams() {
    let server = start(Arc::new(Fake::default()));
    let port = echo_listener("a").await;
    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let (session, proto) = spdy_connect(&server, &url, &["portforward.k8s.io"])
        .await
        .unwrap();
    assert_eq!(proto, "portforward.k8s.io");
    let pf = PortForwarder::new(session);
    forward_many(&pf, port, "a", 8).await;
}

#[tokio::test]
async fn port_forward_errors_go_to_the_error_stream() {
    let server = start(Arc::new(Fake::default()));
    let url = server.get_port_forward(&pf_req("bad")).unwrap().url;
    let (session, _) = spdy_connect(&server, &url, &["portforward.k8s.io"])
        .await
        .unwrap();
    let pf = PortForwarder::new(session);
    let mut c = pf.open(8080).await.unwrap();
    let mut err = String::new();
    within("error stream", c.error.read_to_string(&mut err))
        .await
        .unwrap();
    assert_eq!(
        err,
        "error forwarding port 8080 to pod bad, uid : sandbox bad not found"
    );
}

#[tokio::test]
async fn port_forward_over_the_spdy_websocket_tunnel() {
    let server = start(Arc::new(Fake::default()));
    let port = echo_listener("t").await;
    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let (ws, chosen) = ws_connect(
        &server,
        &path_of(&url),
        &["SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    assert_eq!(chosen.as_deref(), Some("SPDY/3.1+portforward.k8s.io"));
    let session = Session::new(MessageStream::new(ws), Role::Client, None);
    let pf = PortForwarder::new(session);
    forward_many(&pf, port, "t", 6).await;
}

#[tokio::test]
async fn port_forward_over_websocket_channels() {
    let server = start(Arc::new(Fake::default()));
    let (p1, p2) = (echo_listener("one").await, echo_listener("two").await);
    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let path = format!("{}?port={p1}&port={p2}", path_of(&url));
    let (mut ws, chosen) = ws_connect(&server, &path, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    // Before any data, every channel gets its port, little-endian: data then error, per port.
    let mut first = Vec::new();
    while first.len() < 4 {
        match within("port-forward message", ws.next()).await {
            Some(Ok(Message::Binary(b))) => first.push((b[0], b[1..].to_vec())),
            other => panic!("expected a port prefix, got {other:?}"),
        }
    }
    let want: Vec<(u8, Vec<u8>)> = [(0u8, p1), (1, p1), (2, p2), (3, p2)]
        .into_iter()
        .map(|(ch, p)| (ch, p.to_le_bytes().to_vec()))
        .collect();
    assert_eq!(first, want);
    drop(ws);
}

#[tokio::test]
async fn port_forward_over_websocket_carries_data_both_ways() {
    let server = start(Arc::new(Fake::default()));
    // A server that answers as soon as it reads something (v4 WebSockets cannot half-close).
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(b"got ").await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let (mut ws, _) = ws_connect(
        &server,
        &format!("{}?port={port}", path_of(&url)),
        &["v4.channel.k8s.io"],
    )
    .await
    .unwrap();
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .await
        .unwrap();
    let msgs = ws_drain(&mut ws).await;
    let data = channel(&msgs, 0);
    assert_eq!(&data[..2], port.to_le_bytes());
    assert_eq!(&data[2..], b"got ping");
    assert_eq!(
        channel(&msgs, 1),
        port.to_le_bytes(),
        "no error after the port"
    );
}

/// Sends a raw HTTP/1.1 request and returns (status code, body).
async fn raw_http(server: &Server, request: String) -> (u16, String) {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    within("raw response", tcp.read_to_end(&mut resp))
        .await
        .unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let code = resp[9..12].parse().unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn malformed_requests_are_refused_with_a_reason() {
    let server = start(Arc::new(Fake::default()));
    let req = exec_req(&["echo"], false, true, false, false);

    let path = path_of(&server.get_exec(&req).unwrap().url);
    let (code, body) = raw_http(
        &server,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing upgrade headers"), "{body}");

    let url = server.get_exec(&req).unwrap().url;
    let err = spdy_connect(&server, &url, &["v9.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    let client::ClientError::Refused { status, body } = err else {
        panic!("{err}")
    };
    assert_eq!(
        status, 403,
        "an unknown sub-protocol, as httpstream.Handshake answers"
    );
    assert!(body.contains("unable to negotiate protocol"), "{body}");

    let url = server.get_exec(&req).unwrap().url;
    let err = spdy_connect(&server, &url, &[]).await.err().unwrap();
    let client::ClientError::Refused { status, body } = err else {
        panic!("{err}")
    };
    assert_eq!(status, 400);
    assert!(
        body.contains("X-Stream-Protocol-Version is required"),
        "{body}"
    );

    let url = server.get_exec(&req).unwrap().url;
    let err = ws_connect(&server, &path_of(&url), &["nonsense.k8s.io"])
        .await
        .err()
        .unwrap();
    let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
        panic!("{err}")
    };
    assert_eq!(resp.status(), 403);

    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let err = ws_connect(&server, &path_of(&url), &["v4.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
        panic!("{err}")
    };
    assert_eq!(resp.status(), 400, "a WebSocket port-forward needs ?port=");

    for path in ["/exec/unknowntoken", "/nothing", "/portforward/"] {
        let (code, _) = raw_http(
            &server,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(code, 404, "{path}");
    }

    // A token of one kind does not open another.
    let url = server.get_exec(&req).unwrap().url;
    let path = path_of(&url).replace("/exec/", "/portforward/");
    let (code, _) = raw_http(
        &server,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn a_token_is_single_use() {
    let server = start(Arc::new(Fake::default()));
    let url = server
        .get_exec(&exec_req(&["echo", "once"], false, true, false, false))
        .unwrap()
        .url;
    let (session, proto) = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let out = Sink::default();
    let io = ExecIo {
        stdout: Some(Box::pin(out.clone())),
        ..Default::default()
    };
    within("exec", client::exec(&session, &proto, io))
        .await
        .unwrap();
    assert_eq!(out.text(), "once\n");
    let err = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    let client::ClientError::Refused { status, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let fake = Arc::new(Fake::default());
    let config = Config {
        stream_idle_timeout: Duration::from_millis(300),
        stream_creation_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let server = Server::start(config, fake.clone()).unwrap();
    let url = server
        .get_exec(&exec_req(&["cat"], true, true, false, false))
        .unwrap()
        .url;
    let (session, _) = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let _stdin = open_stream(&session, "stdin").await;
    let _error = open_stream(&session, "error").await;
    let _stdout = open_stream(&session, "stdout").await;
    within("the idle session closes", session.closed()).await;
    settle("cat ends", || fake.running.load(Ordering::SeqCst) == 0).await;
}
