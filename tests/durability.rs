//! Durability: objects acknowledged by `capstan apiserver` survive `kill -9` of the server in the
//! middle of a stream of writes, with their resourceVersions intact, and revisions keep
//! increasing after the restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, http_raw, ApiServer};

fn try_create(addr: &str, name: &str) -> Option<i64> {
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"k":"{name}"}}}}"#
    );
    let addr = addr.to_string();
    let r = std::panic::catch_unwind(move || {
        http_raw(
            &addr,
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            body.as_bytes(),
        )
    })
    .ok()?;
    if r.0 != 201 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.1).ok()?;
    v["metadata"]["resourceVersion"].as_str()?.parse().ok()
}

#[test]
fn acknowledged_writes_survive_kill_9_and_revisions_keep_increasing() {
    let mut server = ApiServer::start();
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, addr) = (acked.clone(), stop.clone(), server.addr.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("cm-{w}-{i}");
                    match try_create(&addr, &name) {
                        Some(rv) => acked.lock().unwrap().push((name, rv)),
                        None => return,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(30), "300 acknowledged creates", || {
        acked.lock().unwrap().len() >= 300
    });
    // Mid-stream: the writers are still sending.
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    let acked = acked.lock().unwrap().clone();
    let max_rv = acked.iter().map(|(_, rv)| *rv).max().unwrap();
    server.restart();
    for (name, rv) in &acked {
        let (code, obj) = server.http(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps/{name}"),
            "application/json",
            b"",
        );
        assert_eq!(
            code, 200,
            "acknowledged object {name} (rv {rv}) is missing after kill -9: {obj}"
        );
        assert_eq!(
            obj["metadata"]["resourceVersion"],
            rv.to_string(),
            "resourceVersion of {name} changed"
        );
        assert_eq!(obj["data"]["k"], name.as_str());
    }
    let new_rv = try_create(&server.addr, "after-restart").expect("creating after the restart");
    assert!(
        new_rv > max_rv,
        "revision went backwards: {new_rv} after {max_rv}"
    );
    // kubectl sees the same state.
    let out = server.kubectl_ok(&[
        "get",
        "configmap",
        &acked[0].0,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(out, acked[0].1.to_string());
}
