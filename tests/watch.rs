//! Watch fan-out through the HTTP API: many concurrent watchers all receive every event of a
//! burst, in revision order; a stalled watcher (a client that stops reading) delays nobody, is
//! closed by the server, and the server's memory stays bounded while it stalls.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{http_raw, rss_kib, ApiServer, WatchStream};

fn current_rv(server: &ApiServer) -> String {
    let (_, list) = server.http(
        "GET",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        b"",
    );
    list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn create_burst(addr: &str, prefix: &str, n: usize, payload: usize) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = addr.to_string();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let data = "x".repeat(payload);
                for i in (t..n).step_by(4) {
                    let body = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{prefix}-{i}"}},"data":{{"d":"{data}"}}}}"#);
                    let (code, resp) = http_raw(&addr, "POST", "/api/v1/namespaces/default/configmaps", "application/json", body.as_bytes());
                    assert_eq!(code, 201, "create failed: {}", String::from_utf8_lossy(&resp));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
}

/// Reads until `n` ADDED events arrived; checks order and returns the names.
fn collect(w: &mut WatchStream, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    let mut last = 0i64;
    while names.len() < n {
        let ev = w
            .next_event()
            .unwrap_or_else(|| panic!("watch ended after {} of {n} events", names.len()));
        if ev["type"] == "BOOKMARK" {
            continue;
        }
        assert_eq!(ev["type"], "ADDED", "unexpected event {ev}");
        let rv: i64 = ev["object"]["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv > last, "events out of order: {rv} after {last}");
        last = rv;
        names.push(
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    names
}

#[test]
fn two_hundred_watchers_each_receive_every_event_in_order() {
    let server = ApiServer::start();
    let rv = current_rv(&server);
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}");
    let watchers: Vec<WatchStream> = (0..200)
        .map(|_| WatchStream::open(&server.addr, &path))
        .collect();
    const N: usize = 400;
    create_burst(&server.addr, "burst", N, 16);
    let readers: Vec<_> = watchers
        .into_iter()
        .map(|mut w| {
            std::thread::spawn(move || {
                w.set_timeout(Duration::from_secs(30));
                collect(&mut w, N)
            })
        })
        .collect();
    let expected: HashSet<String> = (0..N).map(|i| format!("burst-{i}")).collect();
    for r in readers {
        let names = r.join().expect("a watcher failed");
        assert_eq!(names.iter().cloned().collect::<HashSet<_>>(), expected);
    }
}

fn metric(server: &ApiServer, name: &str) -> u64 {
    let (_, body) = http_raw(&server.addr, "GET", "/metrics", "text/plain", b"");
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stalled_watcher_is_closed_and_delays_nobody() {
    let server = Arc::new(ApiServer::start());
    let rv = current_rv(&server);
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}");
    let _stalled = WatchStream::stalled(&server.addr, &path);
    let live: Vec<WatchStream> = (0..10)
        .map(|_| WatchStream::open(&server.addr, &path))
        .collect();
    // Enough data to fill the stalled client's socket buffers and then its event buffer.
    const N: usize = 4000;
    let readers: Vec<_> = live
        .into_iter()
        .map(|mut w| {
            std::thread::spawn(move || {
                w.set_timeout(Duration::from_secs(60));
                collect(&mut w, N).len()
            })
        })
        .collect();
    let rss_before = rss_kib(server.pid());
    create_burst(&server.addr, "big", N, 8 * 1024);
    for r in readers {
        assert_eq!(
            r.join().expect("a live watcher failed"),
            N,
            "a live watcher missed events"
        );
    }
    common::eventually(
        Duration::from_secs(10),
        "the stalled watcher to be closed",
        || {
            metric(
                &server,
                "apiserver_terminated_watchers_total{resource=\"configmaps\"}",
            ) >= 1
        },
    );
    let grown_mib = rss_kib(server.pid()).saturating_sub(rss_before) / 1024;
    // The data itself is ~32 MiB (held by the cache and its event window); a watcher that kept
    // buffering would add at least as much again per copy.
    assert!(
        grown_mib < 256,
        "server memory grew by {grown_mib} MiB while a watcher stalled"
    );
}
