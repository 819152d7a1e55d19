//! The network probe handlers against local test servers on loopback: httpGet (status codes,
//! headers, named ports, timeouts), tcpSocket, grpc against a closed port.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, HTTPGetAction, HTTPHeader};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubelet::probe::handlers;
use kubelet::probe::ProbeResult;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A one-line HTTP server: `/ok` → 200, `/redirect` → 302, `/slow` → never answers, else 500.
/// Every request's head is sent on the channel.
async fn http_server() -> (u16, mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let _ = tx.send(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let status = match path.as_str() {
                    "/ok" => "200 OK",
                    "/redirect" => "302 Found\r\nLocation: /elsewhere",
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => "500 Internal Server Error",
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, rx)
}

fn container_with_port(name: &str, port: u16) -> Container {
    Container {
        name: "c".into(),
        ports: Some(vec![ContainerPort {
            name: Some(name.into()),
            container_port: port as i32,
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn get(path: &str, port: IntOrString) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path.into()),
        port,
        ..Default::default()
    }
}

#[tokio::test]
async fn http_get_status_codes_and_headers() {
    let (port, mut heads) = http_server().await;
    let c = container_with_port("http", port);
    let t = Duration::from_secs(2);
    let ok = handlers::http_get(
        &get("/ok", IntOrString::Int(port as i32)),
        &c,
        "127.0.0.1",
        t,
    )
    .await;
    assert_eq!(ok, Ok(ProbeResult::Success));
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("GET /ok HTTP/1.1"), "{head}");
    assert!(
        head.contains(&format!("user-agent: {}", handlers::USER_AGENT))
            || head.contains(&format!("User-Agent: {}", handlers::USER_AGENT)),
        "{head}"
    );

    // Named port, custom headers (Host among them).
    let mut action = get("ok", IntOrString::String("http".into()));
    action.http_headers = Some(vec![
        HTTPHeader {
            name: "X-Probe".into(),
            value: "yes".into(),
        },
        HTTPHeader {
            name: "Host".into(),
            value: "example.test".into(),
        },
    ]);
    assert_eq!(
        handlers::http_get(&action, &c, "127.0.0.1", t).await,
        Ok(ProbeResult::Success)
    );
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.contains("x-probe: yes") && head.contains("host: example.test"),
        "{head}"
    );

    // 3xx is a success (not followed), 5xx a failure, a hang a failure after the timeout.
    let r = handlers::http_get(
        &get("/redirect", IntOrString::Int(port as i32)),
        &c,
        "127.0.0.1",
        t,
    )
    .await;
    assert_eq!(r, Ok(ProbeResult::Success));
    let r = handlers::http_get(
        &get("/fail", IntOrString::Int(port as i32)),
        &c,
        "127.0.0.1",
        t,
    )
    .await;
    assert_eq!(r, Ok(ProbeResult::Failure));
    let start = std::time::Instant::now();
    let r = handlers::http_get(
        &get("/slow", IntOrString::Int(port as i32)),
        &c,
        "127.0.0.1",
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(r, Ok(ProbeResult::Failure));
    assert!(start.elapsed() < Duration::from_secs(5));

    // An unknown port name is a prober error, not a failure.
    let r = handlers::http_get(
        &get("/ok", IntOrString::String("nope".into())),
        &c,
        "127.0.0.1",
        t,
    )
    .await;
    assert!(r.is_err(), "{r:?}");
}

#[tokio::test]
async fn tcp_and_grpc_probes() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = l.local_addr().unwrap().port();
    let t = Duration::from_secs(1);
    assert_eq!(
        handlers::tcp("127.0.0.1", open, t).await,
        ProbeResult::Success
    );
    drop(l);
    // The port is closed now (nothing else binds it this quickly on loopback).
    assert_eq!(
        handlers::tcp("127.0.0.1", open, t).await,
        ProbeResult::Failure
    );
    assert_eq!(
        handlers::grpc("127.0.0.1", open, "", t).await,
        Ok(ProbeResult::Failure)
    );
}

#[test]
fn ports_resolve_by_number_or_name() {
    let c = container_with_port("metrics", 9090);
    assert_eq!(handlers::resolve_port(&IntOrString::Int(80), &c), Ok(80));
    assert_eq!(
        handlers::resolve_port(&IntOrString::String("8080".into()), &c),
        Ok(8080)
    );
    assert_eq!(
        handlers::resolve_port(&IntOrString::String("metrics".into()), &c),
        Ok(9090)
    );
    assert!(handlers::resolve_port(&IntOrString::Int(0), &c).is_err());
    assert!(handlers::resolve_port(&IntOrString::String("other".into()), &c).is_err());
}
