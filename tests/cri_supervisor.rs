//! The per-pod supervisor end to end, as root on this host: real containers through
//! libcontainer from a busybox-static bundle, driven with `cri::supervisor::SupervisorClient`.
//!
//! Every test owns a temp dir and a cgroup parent `/capstan-test-<random>`; a guard kills
//! whatever is left (supervisor, containers) and removes the cgroups and files on drop, also
//! when an assertion fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri::image_config::ImageConfig;
use cri::pb;
use cri::spec::{self, HostInfo, NamespacePaths, PidNamespace, SpecInput};
use cri::supervisor::{
    next_event, ContainerState, CreateRequest, ErrorKind, EventKind, EventStream, ExecSyncRequest,
    Status, SupervisorClient,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "true", "false", "ls", "id", "env", "seq", "head", "ps",
];
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_capstan"))
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root (creates containers and cgroups)");
            return;
        }
    };
}

/// A test's temp dir and cgroup parent, cleaned up on drop.
struct TestEnv {
    tmp: tempfile::TempDir,
    cgroup_parent: String,
}

impl TestEnv {
    fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("capstan-sup-")
            .tempdir()
            .unwrap();
        let cgroup_parent = format!("/capstan-test-{:08x}", rand_u32());
        Self { tmp, cgroup_parent }
    }

    fn pod_dir(&self) -> PathBuf {
        self.tmp.path().join("pod")
    }

    fn supervisor_cgroup(&self) -> PathBuf {
        PathBuf::from(format!("{}/supervisor", self.cgroup_parent))
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.tmp.path().join("logs").join(format!("{id}.log"))
    }

    /// A bundle whose config.json is built by `cri::spec::build` from a CRI config.
    fn bundle(&self, id: &str, command: &[&str], pid: PidNamespace) -> PathBuf {
        let bundle = self.tmp.path().join("bundles").join(id);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
        let config = pb::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![pb::KeyValue {
                key: "GREETING".into(),
                value: "hi".into(),
            }],
            linux: Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    seccomp: Some(pb::SecurityProfile::default()), // RuntimeDefault
                    ..Default::default()
                }),
                resources: Some(pb::LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_shares: 256,
                    oom_score_adj: -500,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let sandbox = pb::PodSandboxConfig::default();
        let image = ImageConfig::default();
        let mut host = HostInfo::probe();
        // Let the supervisor meet the refusal itself and report it.
        host.min_oom_score_adj = None;
        let input = SpecInput {
            config: &config,
            sandbox: &sandbox,
            image: &image,
            rootfs: rootfs.clone(),
            namespaces: NamespacePaths {
                pid,
                ..Default::default()
            },
            cgroups_path: format!("{}/{id}", self.cgroup_parent),
            hostname_path: None,
            resolv_conf_path: None,
            hosts_path: None,
            pids_limit: Some(64),
            host,
        };
        let spec = spec::build(&input).expect("building the OCI spec");
        spec.save(bundle.join("config.json")).unwrap();
        bundle
    }

    fn create_request(&self, id: &str, bundle: PathBuf) -> CreateRequest {
        CreateRequest {
            id: id.into(),
            bundle,
            log_path: Some(self.log_path(id)),
            ..Default::default()
        }
    }

    /// cgroupfs directories of a cgroup path, one per mounted v1 hierarchy.
    fn cgroup_dirs(&self, rel: &str) -> Vec<PathBuf> {
        hierarchies()
            .into_iter()
            .map(|h| h.join(rel.trim_start_matches('/')))
            .filter(|p| p.exists())
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Kill what a failed test left: containers (by recorded pid) and the supervisor.
        let dir = self.pod_dir();
        if let Ok(rd) = fs::read_dir(dir.join("containers")) {
            for e in rd.flatten() {
                if let Ok(s) = fs::read(e.path()) {
                    if let Ok(state) = serde_json::from_slice::<ContainerState>(&s) {
                        if state.status != Status::Exited && state.pid > 0 {
                            kill9(state.pid);
                        }
                    }
                }
            }
        }
        for pid in cgroup_pids(&self.cgroup_parent) {
            kill9(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
        for h in hierarchies() {
            remove_cgroup_tree(&h.join(self.cgroup_parent.trim_start_matches('/')));
        }
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (std::process::id() << 12) ^ (t.as_secs() as u32)
}

fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_owned()];
    }
    fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter(|e| e.file_name() != "unified")
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Every pid in any cgroup under `parent`.
fn cgroup_pids(parent: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for h in hierarchies() {
        collect_pids(&h.join(parent.trim_start_matches('/')), &mut pids);
    }
    pids.sort();
    pids.dedup();
    pids
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if !dir.exists() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("could not remove cgroup {dir:?}");
}

fn kill9(pid: i32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

fn process_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// (stream, tag, content) of each CRI log record.
fn log_records(path: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            assert!(
                ts.ends_with('Z') && ts.contains('T'),
                "timestamp {ts:?} in {l:?}"
            );
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_event(events: &mut EventStream, kind: EventKind, id: &str) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, next_event(events))
            .await
            .unwrap_or_else(|_| panic!("no {kind:?} event for {id} within 20s"))
            .unwrap_or_else(|| panic!("event stream ended before {kind:?} for {id}"))
            .expect("reading an event");
        if ev.kind == kind && ev.id == id {
            return ev.state;
        }
    }
}

async fn spawn(env: &TestEnv, pid_ns: bool) -> SupervisorClient {
    SupervisorClient::spawn(
        exe(),
        &env.pod_dir(),
        Some(&env.supervisor_cgroup()),
        pid_ns,
    )
    .await
    .expect("spawning the supervisor")
}

fn mounts_mention(path: &Path) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(&*path.to_string_lossy())
}

#[tokio::test]
async fn run_to_exit_with_logs_then_shutdown_leaves_nothing() {
    require_root!();
    let env = TestEnv::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = spawn(&env, false).await;
        let info = client.info().await.unwrap();
        assert!(
            env.cgroup_dirs(&env.supervisor_cgroup().to_string_lossy())
                .iter()
                .any(|d| fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l == info.pid.to_string())),
            "the supervisor moved itself into its cgroup"
        );
        let mut events = client.subscribe().await.unwrap();
        let bundle = env.bundle(
            "c1",
            &[
                "/bin/sh",
                "-c",
                "echo hello $GREETING; echo err >&2; exit 3",
            ],
            PidNamespace::Container,
        );
        let created = client
            .create(env.create_request("c1", bundle))
            .await
            .unwrap();
        assert_eq!(created.status, Status::Created);
        assert!(
            created.message.contains("oom_score_adj -500"),
            "lowering oom_score_adj needs CAP_SYS_RESOURCE here; expected a note, got {:?}",
            created.message
        );
        assert!(!env.cgroup_dirs("/").is_empty());
        assert!(
            !env.cgroup_dirs(&format!("{}/c1", env.cgroup_parent))
                .is_empty(),
            "container cgroup exists"
        );
        let started = client.start("c1").await.unwrap();
        assert_eq!(started.status, Status::Running);
        let exited = wait_event(&mut events, EventKind::Exited, "c1").await;
        assert_eq!(exited.exit_code, 3, "exit code: {exited:?}");
        assert_eq!(exited.reason, "Error");
        assert!(exited.finished_at >= exited.started_at && exited.started_at >= exited.created_at);
        let records = log_records(&env.log_path("c1"));
        assert!(
            records.contains(&("stdout".into(), "F".into(), "hello hi".into())),
            "log records: {records:?}"
        );
        assert!(
            records.contains(&("stderr".into(), "F".into(), "err".into())),
            "log records: {records:?}"
        );
        // The exit is on disk too.
        let on_disk: ContainerState =
            serde_json::from_slice(&fs::read(env.pod_dir().join("containers/c1.json")).unwrap())
                .unwrap();
        assert_eq!((on_disk.status, on_disk.exit_code), (Status::Exited, 3));

        client.delete("c1", false).await.unwrap();
        wait_event(&mut events, EventKind::Deleted, "c1").await;
        assert!(
            env.cgroup_dirs(&format!("{}/c1", env.cgroup_parent))
                .is_empty(),
            "delete removed the container cgroup"
        );
        let err = client.state("c1").await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::NotFound));

        // A running one, left for Shutdown to clean up.
        let bundle = env.bundle("c2", &["sleep", "1000"], PidNamespace::Container);
        let c2 = client
            .create(env.create_request("c2", bundle))
            .await
            .unwrap();
        client.start("c2").await.unwrap();
        assert!(process_alive(c2.pid));
        client.shutdown().await.unwrap();
        assert!(!process_alive(info.pid), "supervisor gone");
        assert!(!process_alive(c2.pid), "container gone");
        assert!(
            env.cgroup_dirs(&format!("{}/c2", env.cgroup_parent))
                .is_empty(),
            "container cgroup removed"
        );
        assert!(!env.pod_dir().join("supervisor.sock").exists());
        assert!(
            !mounts_mention(env.tmp.path()),
            "no mounts left under the test dir"
        );
        assert!(cgroup_pids(&env.cgroup_parent).is_empty());
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn exec_sync_and_stop() {
    require_root!();
    let env = TestEnv::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = spawn(&env, false).await;
        let mut events = client.subscribe().await.unwrap();
        let bundle = env.bundle("c1", &["sleep", "1000"], PidNamespace::Container);
        client
            .create(env.create_request("c1", bundle))
            .await
            .unwrap();
        client.start("c1").await.unwrap();

        let out = client
            .exec_sync(ExecSyncRequest {
                id: "c1".into(),
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out $GREETING $EXTRA; echo err >&2; exit 5".into(),
                ],
                env: vec!["EXTRA=x".into()],
                timeout_ms: 10_000,
            })
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out hi x\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        assert_eq!((out.exit_code, out.timed_out), (5, false));

        let t0 = Instant::now();
        let out = client
            .exec_sync(ExecSyncRequest {
                id: "c1".into(),
                args: vec!["sleep".into(), "30".into()],
                timeout_ms: 300,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(out.timed_out, "timeout reported: {out:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t0.elapsed()
        );

        let err = client
            .exec_sync(ExecSyncRequest {
                id: "c1".into(),
                args: vec!["nosuchcmd".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(r#"exec: "nosuchcmd": executable file not found in $PATH"#),
            "got {err}"
        );

        // StopContainer: SIGTERM (pid 1 without a handler ignores it), then SIGKILL.
        client.kill("c1", libc::SIGTERM, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(client.state("c1").await.unwrap().status, Status::Running);
        client.kill("c1", libc::SIGKILL, false).await.unwrap();
        let exited = wait_event(&mut events, EventKind::Exited, "c1").await;
        assert_eq!((exited.exit_code, exited.signal), (137, Some(9)));
        assert!(!exited.oom_killed);
        // Killing an exited container is fine.
        client.kill("c1", libc::SIGKILL, false).await.unwrap();
        client.delete("c1", false).await.unwrap();
        client.shutdown().await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn missing_command_is_a_clear_error_and_leaves_nothing() {
    require_root!();
    let env = TestEnv::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = spawn(&env, false).await;
        let info = client.info().await.unwrap();
        let bundle = env.bundle("bad", &["nosuchcmd"], PidNamespace::Container);
        let err = client
            .create(env.create_request("bad", bundle))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::Create));
        assert_eq!(
            err.to_string(),
            r#"failed to create container "bad": unable to start container process: exec: "nosuchcmd": executable file not found in $PATH"#
        );
        assert!(client.list().await.unwrap().is_empty());
        assert!(!env.pod_dir().join("libcontainer/bad").exists());
        assert!(!env.pod_dir().join("containers/bad.json").exists());
        assert!(
            env.cgroup_dirs(&format!("{}/bad", env.cgroup_parent)).is_empty(),
            "no cgroup left"
        );
        let children =
            fs::read_to_string(format!("/proc/{0}/task/{0}/children", info.pid)).unwrap();
        assert_eq!(children.trim(), "", "no processes left under the supervisor");
        // The supervisor still works.
        let bundle = env.bundle("good", &["true"], PidNamespace::Container);
        client.create(env.create_request("good", bundle)).await.unwrap();
        client.shutdown().await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn exits_while_the_runtime_is_away_are_kept() {
    require_root!();
    let env = TestEnv::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Start the supervisor from a shell that exits at once: its spawner is gone.
        fs::create_dir_all(env.pod_dir()).unwrap();
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(r#""$0" supervise --dir "$1" --cgroup "$2" </dev/null >/dev/null 2>&1 &"#)
            .arg(exe())
            .arg(env.pod_dir())
            .arg(env.supervisor_cgroup())
            .status()
            .unwrap();
        assert!(status.success());
        let mut client = None;
        for _ in 0..200 {
            if let Ok(c) = SupervisorClient::connect(&env.pod_dir()).await {
                client = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = client.expect("orphaned supervisor answers");
        let bundle = env.bundle(
            "c1",
            &["sh", "-c", "sleep 1; exit 7"],
            PidNamespace::Container,
        );
        client
            .create(env.create_request("c1", bundle))
            .await
            .unwrap();
        client.start("c1").await.unwrap();
        drop(client);

        tokio::time::sleep(Duration::from_millis(2000)).await;
        let client = SupervisorClient::connect(&env.pod_dir()).await.unwrap();
        let state = client.state("c1").await.unwrap();
        assert_eq!(
            (state.status, state.exit_code),
            (Status::Exited, 7),
            "{state:?}"
        );
        let listed = client.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        client.shutdown().await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn shared_pid_namespace_and_log_rotation() {
    require_root!();
    let env = TestEnv::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let client = spawn(&env, true).await;
        let info = client.info().await.unwrap();
        let ns = info.pid_namespace.clone().expect("pid namespace path");
        assert!(ns.exists());
        let mut events = client.subscribe().await.unwrap();
        let bundle = env.bundle(
            "c1",
            &["sh", "-c", "echo pid=$$; i=0; while [ $i -lt 100 ]; do echo line-$i-0123456789; i=$((i+1)); done"],
            PidNamespace::Pod(ns),
        );
        let mut req = env.create_request("c1", bundle);
        req.max_log_size = 1500;
        req.max_log_files = 3;
        client.create(req).await.unwrap();
        client.start("c1").await.unwrap();
        let exited = wait_event(&mut events, EventKind::Exited, "c1").await;
        assert_eq!(exited.exit_code, 0);
        assert_eq!(exited.reason, "Completed");
        let log = env.log_path("c1");
        let rotated = cri::logs::rotated_files(&log).unwrap();
        assert_eq!(rotated.len(), 2, "max_files 3 = live + 2 rotated: {rotated:?}");
        assert!(fs::metadata(&log).unwrap().len() <= 1500);
        let last = log_records(&log);
        assert_eq!(last.last().unwrap().2, "line-99-0123456789");
        // In the pod's namespace the supervisor's init is PID 1, so the container is not.
        let mut all = String::new();
        for f in rotated.iter().chain([&log]) {
            all.push_str(&fs::read_to_string(f).unwrap());
        }
        if let Some(pid_line) = all.lines().find(|l| l.contains("pid=")) {
            assert!(!pid_line.ends_with("pid=1"), "{pid_line}");
        }

        // ReopenLog after an external rename.
        let bundle = env.bundle(
            "c2",
            &["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
            PidNamespace::Container,
        );
        client.create(env.create_request("c2", bundle)).await.unwrap();
        client.start("c2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log2 = env.log_path("c2");
        fs::rename(&log2, log2.with_extension("old")).unwrap();
        client.reopen_log("c2").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let recs = log_records(&log2);
        assert!(
            recs.iter().any(|r| r.2 == "tick"),
            "new log written after reopen: {recs:?}"
        );
        client.shutdown().await.unwrap();
        assert!(!process_alive(info.init_pid.unwrap()), "pod init gone");
    })
    .await
    .expect("test timed out");
}
