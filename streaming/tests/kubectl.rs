//! Wire compatibility with a peer nobody here wrote: the installed `kubectl` (client-go's SPDY
//! via moby/spdystream, its WebSocket v5 exec and its SPDY-over-WebSocket port-forward tunnel)
//! against this crate's handlers. A stand-in API server answers the pod lookup and discovery
//! kubectl makes first, then serves `pods/exec` and `pods/portforward` with
//! `remotecommand::serve` and `portforward::serve` directly (the real API server proxies to the
//! kubelet instead; that path is the integrator's end-to-end test).

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use streaming::remotecommand::{self, Command, Options, Timeouts};
use streaming::{portforward, Backend};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{echo_listener, Fake};

const PATIENCE: Duration = Duration::from_secs(60);

/// The upgrade each streaming request asked for (`SPDY/3.1` or `websocket`) and the
/// sub-protocols it offered.
type Seen = Arc<Mutex<Vec<String>>>;

struct ApiServer {
    seen: Seen,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"default","uid":"u1"},
"spec":{"containers":[{"name":"c1","image":"busybox"}]},
"status":{"phase":"Running","containerStatuses":[{"name":"c1","ready":true,"restartCount":0,"image":"busybox","imageID":"","state":{"running":{}}}]}}"#;

const API_RESOURCES: &str = r#"{"kind":"APIResourceList","groupVersion":"v1","resources":[
{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
{"name":"pods/exec","singularName":"","namespaced":true,"kind":"PodExecOptions","verbs":["create","get"]},
{"name":"pods/portforward","singularName":"","namespaced":true,"kind":"PodPortForwardOptions","verbs":["create","get"]}]}"#;

fn route(req: Request<Incoming>, backend: Arc<dyn Backend>, seen: &Seen) -> Response<Full<Bytes>> {
    let timeouts = Timeouts {
        idle: Some(Duration::from_secs(60)),
        creation: Duration::from_secs(10),
    };
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/api" => json(r#"{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}"#),
        "/apis" => json(r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#),
        "/api/v1" => json(API_RESOURCES),
        "/api/v1/namespaces/default/pods/p" => json(POD),
        "/api/v1/namespaces/default/pods/p/exec" | "/api/v1/namespaces/default/pods/p/portforward" => {
            let h = req.headers();
            let upgrade = h.get("Upgrade").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let protocols: Vec<&str> = h
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .chain(h.get_all("X-Stream-Protocol-Version").iter())
                .filter_map(|v| v.to_str().ok())
                .collect();
            seen.lock().unwrap().push(format!("{upgrade} {}", protocols.join(",")));
            if path.ends_with("/exec") {
                let (opts, cmd): (Options, Vec<String>) = match Options::from_query(req.uri().query()) {
                    Ok(o) => o,
                    Err(e) => {
                        return Response::builder()
                            .status(StatusCode::BAD_REQUEST)
                            .body(Full::new(Bytes::from(e)))
                            .unwrap()
                    }
                };
                let command = Command::Exec {
                    container_id: "c1".into(),
                    cmd,
                };
                remotecommand::serve(req, backend, command, opts, timeouts)
            } else {
                portforward::serve(req, backend, "s1".into(), timeouts)
            }
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}"#,
            )))
            .unwrap(),
    }
}

async fn api_server(backend: Arc<dyn Backend>) -> ApiServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (backend, seen) = (backend.clone(), seen2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = route(req, backend.clone(), &seen);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\n\
         current-context: c\nusers:\n- name: u\n  user: {{}}\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    ApiServer { seen, dir, task }
}

impl ApiServer {
    fn kubectl(&self, websockets: bool, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets.to_string())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .kill_on_drop(true);
        cmd
    }

    async fn exec(&self, websockets: bool, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
        let mut cmd = self.kubectl(websockets, args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(PATIENCE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} hung"))
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn last_upgrade(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_exec_over_spdy_and_websockets() {
    let api = api_server(Arc::new(Fake::default())).await;
    for (websockets, upgrade) in [(false, "SPDY/3.1 "), (true, "websocket v5.channel.k8s.io")] {
        let (code, out, err) = api
            .exec(
                websockets,
                &["exec", "p", "-c", "c1", "--", "echo", "hello", "world"],
                b"",
            )
            .await;
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "hello world\n", "err\n"),
            "websockets={websockets}"
        );
        let seen = api.last_upgrade();
        assert!(
            seen.starts_with(upgrade),
            "websockets={websockets}: the request was {seen:?}"
        );

        let (code, _, err) = api
            .exec(
                websockets,
                &["exec", "p", "-c", "c1", "--", "exit", "3"],
                b"",
            )
            .await;
        assert_eq!(
            code, 3,
            "websockets={websockets}: kubectl's exit code comes from the status ({err})"
        );

        let (code, _, err) = api
            .exec(websockets, &["exec", "p", "-c", "c1", "--", "nope"], b"")
            .await;
        assert_ne!(code, 0);
        assert!(
            err.contains("executable file not found: nope"),
            "websockets={websockets}: {err}"
        );

        let (code, out, err) = api
            .exec(
                websockets,
                &["exec", "-i", "p", "-c", "c1", "--", "cat"],
                b"piped through cat",
            )
            .await;
        assert_eq!(
            (code, out.as_str()),
            (0, "piped through cat"),
            "websockets={websockets}: {err}"
        );
    }
}

async fn forward_once(api: &ApiServer, websockets: bool, remote: u16) -> String {
    let mut child = api
        .kubectl(
            websockets,
            &["port-forward", "pod/p", &format!(":{remote}")],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kubectl runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:NNNN -> REMOTE"
    let line = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("kubectl port-forward starts")
        .unwrap()
        .expect("kubectl prints where it listens");
    let local: u16 = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected kubectl output {line:?}"));
    let mut replies = Vec::new();
    for i in 0..3 {
        let mut c = TcpStream::connect(("127.0.0.1", local)).await.unwrap();
        c.write_all(format!("hello {i}").as_bytes()).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = String::new();
        tokio::time::timeout(PATIENCE, c.read_to_string(&mut back))
            .await
            .expect("the forwarded connection answers")
            .unwrap();
        replies.push(back);
    }
    drop(child);
    replies.join("|")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_over_spdy_and_the_websocket_tunnel() {
    let api = api_server(Arc::new(Fake::default())).await;
    let remote = echo_listener("pod").await;
    for (websockets, upgrade) in [
        (false, "SPDY/3.1 portforward.k8s.io"),
        (true, "websocket SPDY/3.1+portforward.k8s.io"),
    ] {
        let got = forward_once(&api, websockets, remote).await;
        assert_eq!(
            got, "pod:hello 0|pod:hello 1|pod:hello 2",
            "websockets={websockets}"
        );
        let seen = api.last_upgrade();
        assert!(
            seen.starts_with(upgrade),
            "websockets={websockets}: the request was {seen:?}"
        );
    }
}
