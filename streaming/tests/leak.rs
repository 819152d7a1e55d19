//! A client that vanishes mid-stream leaves no task or file descriptor behind. Alone in its
//! test binary, because it counts the process's open file descriptors.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use streaming::client::PortForwarder;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_vanishing_mid_stream_leaves_no_task_or_fd_behind() {
    let fake = Arc::new(Fake::default());
    let server = start(fake.clone());
    let echo = echo_listener("x").await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // Warm up once so lazily created things (the blocking pool, the listener task) exist.
    spdy_exec(
        &server,
        exec_req(&["echo", "warm"], false, true, false, false),
        "v4.channel.k8s.io",
        None,
    )
    .await;
    settle("warm-up done", || fake.running.load(Ordering::SeqCst) == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (fds, tasks) = (open_fds(), metrics.num_alive_tasks());

    // SPDY exec: cat is running with stdin open when the client's connection disappears.
    let url = server
        .get_exec(&exec_req(&["cat"], true, true, false, false))
        .unwrap()
        .url;
    let (session, _) = spdy_connect(&server, &url, &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let mut stdin = open_stream(&session, "stdin").await;
    let _error = open_stream(&session, "error").await;
    let _stdout = open_stream(&session, "stdout").await;
    stdin.write_all(b"half a line").await.unwrap();
    settle("cat runs", || fake.running.load(Ordering::SeqCst) == 1).await;

    // WebSocket exec and a port-forward mid-stream too.
    let url = server
        .get_exec(&exec_req(&["cat"], true, true, false, false))
        .unwrap()
        .url;
    let (mut ws, _) = ws_connect(&server, &path_of(&url), &["v5.channel.k8s.io"])
        .await
        .unwrap();
    ws.send(Message::Binary(b"\x00partial".to_vec().into()))
        .await
        .unwrap();
    settle("the second cat runs", || {
        fake.running.load(Ordering::SeqCst) == 2
    })
    .await;
    let url = server.get_port_forward(&pf_req("s1")).unwrap().url;
    let (pf_session, _) = spdy_connect(&server, &url, &["portforward.k8s.io"])
        .await
        .unwrap();
    let pf = PortForwarder::new(pf_session);
    let mut conn = pf.open(echo).await.unwrap();
    conn.data.write_all(b"unfinished").await.unwrap();

    drop((session, stdin, _error, _stdout, ws, conn, pf));
    settle("the backend's execs end", || {
        fake.running.load(Ordering::SeqCst) == 0
    })
    .await;
    settle("file descriptors are closed", || open_fds() <= fds).await;
    settle("tasks end", || metrics.num_alive_tasks() <= tasks).await;
}
