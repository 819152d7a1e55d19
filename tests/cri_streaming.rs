//! The built-in runtime's side of `kubectl exec`, `attach` and `port-forward`
//! (`streaming::Backend for cri::runtime::Runtime`), against real busybox containers, as root.
//!
//! Each test opens its own runtime in-process (root, CNI config with only the loopback plugin,
//! so no bridge or iptables is touched), pulls busybox through the local docker.io mirror and
//! runs one pod under a cgroup parent of its own. A guard kills whatever the runtime left
//! (supervisors, containers), unmounts, and removes the directory and cgroups on drop, also when
//! an assertion fails. The tests share one lock: the leak check counts this process's fds.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri::pb;
use cri::pb::image_service_server::ImageService;
use cri::pb::runtime_service_server::RuntimeService;
use cri::runtime::Runtime;
use streaming::{Backend, StreamError, StreamIo, TerminalSize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A runtime of the test's own and what it made; cleaned up on drop.
struct Env {
    dir: tempfile::TempDir,
    cgroup_parent: String,
    rt: Arc<Runtime>,
    /// The same runtime, as the streaming server sees it.
    backend: Arc<dyn Backend>,
    pod: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        for (pid, p) in common::processes() {
            if p.cmdline.contains(&dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        // Container processes whose supervisor died with SIGKILL die with it (pdeathsig) or sit
        // in our cgroups; kill what is left there.
        kill_cgroup_tree(&self.cgroup_parent);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&format!("{dir}/")))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") else {
        return out;
    };
    for h in hier.flatten() {
        let root = h.path().join(parent.trim_start_matches('/'));
        collect_dirs(&root, &mut out);
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    out
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    if !d.is_dir() {
        return;
    }
    out.push(d.to_path_buf());
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

fn kill_cgroup_tree(parent: &str) {
    for d in cgroup_dirs(parent) {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn remove_cgroup_tree(parent: &str) {
    for _ in 0..50 {
        for d in cgroup_dirs(parent) {
            let _ = std::fs::remove_dir(d);
        }
        if cgroup_dirs(parent).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Env {
    async fn new(name: &str) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("capstan-stream-")
            .tempdir()
            .unwrap();
        let tag = format!("{}-{}", std::process::id(), name);
        let cgroup_parent = format!("/capstan-test-stream-{tag}");
        let root = dir.path();
        std::fs::create_dir_all(root.join("net.d")).unwrap();
        std::fs::write(
            root.join("net.d/10-lo.conflist"),
            r#"{"cniVersion":"1.0.0","name":"lo-only","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        let config = cri::server::Config {
            root: root.join("root"),
            socket: root.join("cri.sock"),
            registry_config_dir: Some(test_dir().join("certs.d")),
            cni_conf_dir: root.join("net.d"),
            cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni")],
            cni_cache_dir: root.join("cni-cache"),
            supervisor_exe: PathBuf::from(env!("CARGO_BIN_EXE_capstan")),
            supervisors_cgroup: format!("{cgroup_parent}/supervisors"),
        };
        let (rt, images) = cri::server::open(&config)
            .await
            .expect("opening the runtime");
        images
            .pull_image(tonic::Request::new(pb::PullImageRequest {
                image: Some(image()),
                ..Default::default()
            }))
            .await
            .expect("pulling busybox from the local mirror");
        let pod_config = pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{tag}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: root.join("logs").to_string_lossy().into_owned(),
            linux: Some(pb::LinuxPodSandboxConfig {
                cgroup_parent: format!("{cgroup_parent}/pod"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut env = Env {
            dir,
            cgroup_parent,
            backend: rt.clone(),
            rt,
            pod: String::new(),
        };
        env.pod = env
            .rt
            .run_pod_sandbox(tonic::Request::new(pb::RunPodSandboxRequest {
                config: Some(pod_config),
                runtime_handler: String::new(),
            }))
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        env
    }

    fn pod_config(&self) -> pb::PodSandboxConfig {
        pb::PodSandboxConfig::default()
    }

    /// Creates and starts a container; `stdin`/`tty` as CRI's ContainerConfig has them.
    async fn run(
        &self,
        name: &str,
        cmd: &[&str],
        stdin: bool,
        stdin_once: bool,
        tty: bool,
    ) -> String {
        let config = pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(image()),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            stdin,
            stdin_once,
            tty,
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(tonic::Request::new(pb::CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(config),
                sandbox_config: Some(self.pod_config()),
            }))
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .into_inner()
            .container_id;
        self.rt
            .start_container(tonic::Request::new(pb::StartContainerRequest {
                container_id: id.clone(),
            }))
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    async fn state(&self, id: &str) -> pb::ContainerState {
        let st = self
            .rt
            .container_status(tonic::Request::new(pb::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }))
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("a status");
        pb::ContainerState::try_from(st.state).unwrap()
    }

    async fn wait_exited(&self, id: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while self.state(id).await != pb::ContainerState::ContainerExited {
            assert!(Instant::now() < deadline, "container {id} did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops and removes the pod the way the kubelet does.
    async fn finish(&self) {
        self.rt
            .stop_pod_sandbox(tonic::Request::new(pb::StopPodSandboxRequest {
                pod_sandbox_id: self.pod.clone(),
            }))
            .await
            .expect("StopPodSandbox");
        self.rt
            .remove_pod_sandbox(tonic::Request::new(pb::RemovePodSandboxRequest {
                pod_sandbox_id: self.pod.clone(),
            }))
            .await
            .expect("RemovePodSandbox");
    }

    /// The pod supervisor's pid (its command line names the sandbox's directory).
    fn supervisor_pid(&self) -> u32 {
        let needle = format!("sandboxes/{}/supervisor", self.pod);
        let procs = common::processes();
        let matches =
            |p: &common::Proc| p.cmdline.contains("supervise") && p.cmdline.contains(&needle);
        // The pod's PID-namespace init is a fork of the supervisor with the same command line.
        procs
            .iter()
            .find(|(_, p)| matches(p) && !procs.get(&p.ppid).is_some_and(&matches))
            .map(|(pid, _)| *pid)
            .expect("the pod's supervisor runs")
    }
}

fn test_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CAPSTAN_TEST_DIR").unwrap_or_else(|_| "/var/lib/capstan-test".into()),
    )
}

fn image() -> pb::ImageSpec {
    pb::ImageSpec {
        image: "busybox".into(),
        ..Default::default()
    }
}

fn prepare() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root (creates containers, namespaces and cgroups)");
        return false;
    }
    common::test_images();
    true
}

/// The client's ends of a StreamIo.
struct Client {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TerminalSize>>,
}

fn streams(stdin: bool, stderr: bool, tty: bool) -> (StreamIo, Client) {
    let pair = || tokio::io::duplex(64 * 1024);
    let (stdin_client, stdin_backend) = if stdin {
        let (a, b) = pair();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let (out_client, out_backend) = pair();
    let (err_client, err_backend) = if stderr {
        let (a, b) = pair();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = if tty {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let io = StreamIo {
        stdin: stdin_backend.map(|s| Box::pin(s) as streaming::Reader),
        stdout: Some(Box::pin(out_backend)),
        stderr: err_backend.map(|s| Box::pin(s) as streaming::Writer),
        tty,
        resize: resize_rx,
    };
    (
        io,
        Client {
            stdin: stdin_client,
            stdout: Some(out_client),
            stderr: err_client,
            resize: resize_tx,
        },
    )
}

async fn read_all(s: Option<DuplexStream>) -> String {
    let mut out = Vec::new();
    if let Some(mut s) = s {
        s.read_to_end(&mut out).await.expect("reading a stream");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `s` until `needle` was seen; returns everything read.
async fn read_until(s: &mut DuplexStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&got).contains(needle) {
            return String::from_utf8_lossy(&got).into_owned();
        }
        let n = tokio::time::timeout(TIMEOUT, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "waiting for {needle:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            })
            .expect("reading");
        assert!(
            n > 0,
            "stream ended before {needle:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

macro_rules! setup {
    ($name:expr) => {{
        if !prepare() {
            return;
        }
        let guard = SERIAL.lock().await;
        (guard, Env::new($name).await)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_stderr_and_exit_code() {
    let (_serial, env) = setup!("exec-out");
    let id = env
        .run("main", &["sleep", "3600"], false, false, false)
        .await;
    let (io, client) = streams(false, true, false);
    let (code, out, err) = tokio::join!(
        env.backend.exec(
            &id,
            vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into()
            ],
            io
        ),
        read_all(client.stdout),
        read_all(client.stderr)
    );
    assert_eq!(code.expect("exec runs"), 3);
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_stdin_pipes_bytes_through_cat() {
    let (_serial, env) = setup!("exec-stdin");
    let id = env
        .run("main", &["sleep", "3600"], false, false, false)
        .await;
    let (io, mut client) = streams(true, true, false);
    let data: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut stdin = client.stdin.take().unwrap();
    let feed = async {
        stdin.write_all(&data).await.unwrap();
        // Closing stdin is what ends `cat`.
        drop(stdin);
    };
    let (code, _, out) = tokio::join!(
        env.backend.exec(&id, vec!["cat".into()], io),
        feed,
        read_all(client.stdout)
    );
    assert_eq!(code.expect("exec runs"), 0);
    assert_eq!(out.len(), data.len());
    assert!(
        out.as_bytes() == data.as_slice(),
        "cat returned other bytes"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_tty() {
    let (_serial, env) = setup!("exec-tty");
    let id = env
        .run("main", &["sleep", "3600"], false, false, false)
        .await;

    let (io, client) = streams(false, false, true);
    let (code, out) = tokio::join!(
        env.backend.exec(&id, vec!["tty".into()], io),
        read_all(client.stdout)
    );
    assert_eq!(code.expect("exec runs"), 0);
    assert!(out.starts_with("/dev/pts/"), "tty printed {out:?}");

    // A resize reaches the terminal before the input that follows it.
    let (io, mut client) = streams(true, false, true);
    let mut stdin = client.stdin.take().unwrap();
    let resize = client.resize.take().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let drive = async {
        resize
            .send(TerminalSize {
                width: 123,
                height: 45,
            })
            .await
            .unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        let out = read_until(&mut stdout, "45 123").await;
        (out, stdin, stdout)
    };
    let (code, (out, _stdin, _stdout)) = tokio::join!(
        env.backend.exec(
            &id,
            vec!["sh".into(), "-c".into(), "read x; stty size".into()],
            io
        ),
        drive
    );
    assert_eq!(code.expect("exec runs"), 0);
    assert!(out.contains("45 123"), "stty size printed {out:?}");
    // The console sockets and libcontainer's links to them are gone.
    let sup = env
        .dir
        .path()
        .join("root/sandboxes")
        .join(&env.pod)
        .join("supervisor");
    let left: Vec<_> = std::fs::read_dir(sup.join("console"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "console sockets left: {left:?}");
    let links: Vec<_> = std::fs::read_dir(sup.join("libcontainer").join(&id))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("tty"))
        .map(|e| e.file_name())
        .collect();
    assert!(links.is_empty(), "console links left: {links:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_with_stdin_once() {
    let (_serial, env) = setup!("attach-stdin");
    let id = env
        .run(
            "main",
            &["sh", "-c", "read x; echo got $x"],
            true,
            true,
            false,
        )
        .await;
    let (io, mut client) = streams(true, true, false);
    let mut stdin = client.stdin.take().unwrap();
    let feed = async {
        stdin.write_all(b"hello\n").await.unwrap();
        drop(stdin);
    };
    let (res, _, out) = tokio::join!(env.backend.attach(&id, io), feed, read_all(client.stdout));
    res.expect("attach");
    assert_eq!(out, "got hello\n");
    env.wait_exited(&id).await;
    assert!(
        env.log("main").contains("stdout F got hello"),
        "log: {}",
        env.log("main")
    );

    // stdin_once: stdin closing gave `cat` EOF, so it ends on its own.
    let cat = env.run("cat", &["cat"], true, true, false).await;
    let (io, mut client) = streams(true, false, false);
    let mut stdin = client.stdin.take().unwrap();
    let feed = async {
        stdin.write_all(b"one line\n").await.unwrap();
        drop(stdin);
    };
    let (res, _, out) = tokio::join!(env.backend.attach(&cat, io), feed, read_all(client.stdout));
    res.expect("attach");
    assert_eq!(out, "one line\n");
    env.wait_exited(&cat).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_a_tty_container() {
    let (_serial, env) = setup!("attach-tty");
    let id = env
        .run(
            "main",
            &["sh", "-c", "read x; echo got $x; tty"],
            true,
            false,
            true,
        )
        .await;
    let (io, mut client) = streams(true, false, true);
    let mut stdin = client.stdin.take().unwrap();
    let mut stdout = client.stdout.take().unwrap();
    let drive = async {
        stdin.write_all(b"there\n").await.unwrap();
        let out = read_until(&mut stdout, "/dev/pts/").await;
        (out, stdin)
    };
    let (res, (out, _stdin)) = tokio::join!(env.backend.attach(&id, io), drive);
    res.expect("attach");
    assert!(out.contains("got there"), "attach output {out:?}");
    env.wait_exited(&id).await;
    let log = env.log("main");
    assert!(log.contains("stdout F got there"), "log: {log}");
    assert!(!log.contains(" stderr "), "a tty has no stderr: {log}");
    env.finish().await;
}

async fn port_forward_roundtrip(
    rt: &Arc<dyn Backend>,
    pod: &str,
    port: u16,
    msg: &[u8],
) -> Vec<u8> {
    let (mut client, backend) = tokio::io::duplex(64 * 1024);
    let forward = rt.port_forward(pod, port, Box::new(backend));
    let talk = async {
        client.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        client.read_exact(&mut got).await.unwrap();
        drop(client);
        got
    };
    let (res, got) = tokio::join!(forward, talk);
    res.expect("port-forward");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_into_the_pod() {
    let (_serial, env) = setup!("port-forward");
    env.run(
        "echo",
        &["nc", "-ll", "-p", "8080", "-e", "cat"],
        false,
        false,
        false,
    )
    .await;
    // The server may not listen yet: a refused connection is an error; retry until it answers.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (mut client, backend) = tokio::io::duplex(1024);
        drop(client.shutdown().await);
        match env
            .backend
            .port_forward(&env.pod, 8080, Box::new(backend))
            .await
        {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    e.to_string().contains("connection refused"),
                    "unexpected error: {e}"
                );
                assert!(Instant::now() < deadline, "nc never listened: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Two connections at once, each echoed on its own.
    let (a, b) = tokio::join!(
        port_forward_roundtrip(&env.backend, &env.pod, 8080, b"first connection\n"),
        port_forward_roundtrip(&env.backend, &env.pod, 8080, b"second one\n")
    );
    assert_eq!(a, b"first connection\n");
    assert_eq!(b, b"second one\n");

    // Nothing listens on 9: upstream's message.
    let (_client, backend) = tokio::io::duplex(1024);
    let err = env
        .backend
        .port_forward(&env.pod, 9, Box::new(backend))
        .await
        .expect_err("a closed port");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "failed to connect to localhost:9 inside namespace \"{}\"",
            env.pod
        )) && msg.contains("IPv4: dial tcp4 127.0.0.1:9: connect: connection refused"),
        "message: {msg}"
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_attach_errors() {
    let (_serial, env) = setup!("errors");
    let id = env
        .run("main", &["sleep", "3600"], false, false, false)
        .await;

    let (io, _c) = streams(false, false, false);
    let e = env
        .backend
        .exec("nosuchcontainer", vec!["true".into()], io)
        .await;
    assert!(
        matches!(&e, Err(StreamError::NotFound(m)) if m.contains("\"nosuchcontainer\": not found")),
        "{e:?}"
    );

    let (io, _c) = streams(false, true, false);
    let e = env.backend.exec(&id, vec!["nope".into()], io).await;
    let msg = format!("{:?}", e.as_ref().err());
    assert!(
        msg.contains(r#"OCI runtime exec failed: exec failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown"#),
        "{msg}"
    );

    let done = env.run("done", &["true"], false, false, false).await;
    env.wait_exited(&done).await;
    let (io, _c) = streams(false, false, false);
    let e = env.backend.exec(&done, vec!["true".into()], io).await;
    assert!(
        matches!(&e, Err(StreamError::InvalidArgument(m)) if m == "container is in CONTAINER_EXITED state"),
        "{e:?}"
    );
    let (io, _c) = streams(false, false, false);
    let e = env.backend.attach(&done, io).await;
    assert!(
        matches!(&e, Err(StreamError::InvalidArgument(m)) if m == "container is in CONTAINER_EXITED state"),
        "{e:?}"
    );
    let (io, _c) = streams(false, false, false);
    let e = env.backend.attach("nosuchcontainer", io).await;
    assert!(matches!(&e, Err(StreamError::NotFound(_))), "{e:?}");
    env.finish().await;
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The supervisor's live children (pid → command line).
fn children(pid: u32) -> std::collections::BTreeMap<u32, String> {
    common::processes()
        .into_iter()
        .filter(|(_, p)| p.ppid == pid)
        .map(|(c, p)| (c, p.cmdline))
        .collect()
}

/// Polls `check` until it holds; panics with `what` after [`TIMEOUT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_nothing_behind() {
    let (_serial, env) = setup!("leak");
    let id = env
        .run("main", &["sleep", "3600"], false, false, false)
        .await;
    let supervisor = env.supervisor_pid();
    const SCRIPT: &str = "while true; do echo y; done";

    for tty in [false, true] {
        // Measured once the container's start has settled (libcontainer's intermediate process
        // of the start, or of the previous exec, is gone).
        let before_children = children(supervisor);
        let before_fds = fd_count();
        let (io, mut client) = streams(true, !tty, tty);
        let mut stdout = client.stdout.take().unwrap();
        let rt = env.backend.clone();
        let id2 = id.clone();
        let exec = tokio::spawn(async move {
            rt.exec(&id2, vec!["sh".into(), "-c".into(), SCRIPT.into()], io)
                .await
        });
        read_until(&mut stdout, "y").await;
        assert!(
            children(supervisor).values().any(|c| c.contains(SCRIPT)),
            "the exec runs as the supervisor's child: {:?}",
            children(supervisor)
        );
        // The client goes away: its streams are closed.
        drop(stdout);
        drop(client);
        let res = tokio::time::timeout(TIMEOUT, exec)
            .await
            .expect("the exec ends when its client is gone")
            .unwrap();
        assert!(res.is_err(), "writing to a gone client fails: {res:?}");
        // Writing into the closed output kills the process (SIGPIPE, or SIGHUP when its
        // terminal goes); the supervisor reaps it and has no child the exec added.
        eventually(
            &format!("the exec's process is still there (tty {tty})"),
            || {
                children(supervisor)
                    .keys()
                    .all(|c| before_children.contains_key(c))
            },
        )
        .await;
        eventually(&format!("fds of the runtime leaked (tty {tty})"), || {
            fd_count() <= before_fds
        })
        .await;
    }
    env.finish().await;
}
