//! The cgroup manager on real kernels (needs root): this host's hierarchy (v1/hybrid here), and a
//! real cgroup2 hierarchy inside a User-Mode Linux guest booted by `scripts/uml-run.sh`, where
//! this same test binary runs again with `CAPSTAN_UML_INNER=1`.
//!
//! Each run works below its own `/capstan-test-<random>` cgroup; a guard kills the test's sleep
//! process and removes the cgroups in every hierarchy, also when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cri::cgroups::{AnyCgroupManager, CgroupManager, CgroupVersion, DEFAULT_ROOT};
use cri::pb::LinuxContainerResources;

const INNER_ENV: &str = "CAPSTAN_UML_INNER";

struct Guard<'a> {
    mgr: &'a AnyCgroupManager,
    top: String,
    child: Option<Child>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.mgr.remove(&self.top);
    }
}

/// The interface file `file` of cgroup `path` in the hierarchy of `controller`.
fn file(mgr: &AnyCgroupManager, controller: &str, path: &str, file: &str) -> PathBuf {
    let base = match mgr {
        AnyCgroupManager::V1(m) => m.hierarchy(controller).unwrap().to_path_buf(),
        AnyCgroupManager::V2(m) => m.root().to_path_buf(),
    };
    base.join(path.trim_start_matches('/')).join(file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// create → move a process in → stats → live update → remove, on whatever `root` holds.
fn exercise(root: &Path, want: CgroupVersion) {
    let mgr = AnyCgroupManager::detect(root).expect("detect cgroups");
    assert_eq!(mgr.version(), want, "detected {mgr:?}");
    let top = format!("/capstan-test-{:08x}", rand::random::<u32>());
    let pod = format!("{top}/pod");
    let ctr = format!("{pod}/ctr");
    let mut guard = Guard {
        mgr: &mgr,
        top: top.clone(),
        child: None,
    };

    mgr.create(&ctr).expect("create");
    // A shell that, once moved, touches some memory and CPU (charges do not move with a task),
    // then sleeps.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "read go; x=$(head -c 4000000 /dev/zero | tr '\\0' a); exec sleep 60",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    guard.child = Some(child);
    mgr.move_pid(&ctr, pid).expect("move pid");
    assert_eq!(mgr.pids(&ctr).unwrap(), vec![pid]);
    std::io::Write::write_all(&mut stdin, b"go\n").unwrap();
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = mgr.stats(&ctr).expect("stats");
        let busy = s.cpu_usage_ns.unwrap_or(0) > 0 && s.memory_usage_bytes.unwrap_or(0) > 0;
        let settled = s.pids_current == Some(1) && mgr.pids(&ctr).unwrap() == vec![pid];
        if (busy && settled) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(s.timestamp_ns > 0);
    assert_eq!(s.pids_current, Some(1), "{s:?}");
    assert!(s.cpu_usage_ns.is_some_and(|c| c > 0), "{s:?}");
    assert!(s.page_faults.is_some_and(|f| f > 0), "{s:?}");
    assert!(s.memory_usage_bytes.is_some_and(|u| u > 0), "{s:?}");
    assert!(s.memory_working_set_bytes <= s.memory_usage_bytes, "{s:?}");
    assert_eq!(s.oom_kill_count, Some(0), "{s:?}");

    let r = LinuxContainerResources {
        cpu_shares: 512,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };
    mgr.update(&ctr, &r).expect("update");
    mgr.set_pids_limit(&ctr, Some(20)).expect("pids limit");
    let limit = (64u64 << 20).to_string();
    match want {
        CgroupVersion::V1 => {
            assert_eq!(
                read(&file(&mgr, "memory", &ctr, "memory.limit_in_bytes")),
                limit
            );
            assert_eq!(read(&file(&mgr, "cpu", &ctr, "cpu.shares")), "512");
            assert_eq!(read(&file(&mgr, "cpu", &ctr, "cpu.cfs_quota_us")), "50000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&file(&mgr, "memory", &ctr, "memory.max")), limit);
            assert_eq!(read(&file(&mgr, "cpu", &ctr, "cpu.weight")), "20");
            assert_eq!(read(&file(&mgr, "cpu", &ctr, "cpu.max")), "50000 100000");
        }
    }
    assert_eq!(read(&file(&mgr, "pids", &ctr, "pids.max")), "20");
    // Lowering the limit again works too (memsw ordering on v1).
    let r2 = LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        ..Default::default()
    };
    mgr.update(&ctr, &r2).expect("second update");

    // Busy while the process lives; gone after it exits.
    let err = mgr.remove(&top);
    assert!(
        err.is_err(),
        "removing a cgroup with a live process must fail"
    );
    let mut child = guard.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    mgr.remove(&top).expect("remove after the process exited");
    assert!(start.elapsed() < Duration::from_secs(3));
    for c in ["memory", "cpu", "pids"] {
        let dir = file(&mgr, c, &top, "");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    if let AnyCgroupManager::V1(m) = &mgr {
        for c in ["cpuacct", "cpuset", "name=systemd"] {
            if let Some(h) = m.hierarchy(c) {
                assert!(
                    !h.join(top.trim_start_matches('/')).exists(),
                    "{c}: {top} left behind"
                );
            }
        }
    }
    mgr.remove(&top).expect("remove is idempotent");
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (cgroupfs writes)");
    false
}

#[test]
fn host_cgroups_create_stats_update_remove() {
    if std::env::var_os(INNER_ENV).is_some() || !root() {
        return;
    }
    let mgr = AnyCgroupManager::detect(Path::new(DEFAULT_ROOT)).expect("detect");
    exercise(Path::new(DEFAULT_ROOT), mgr.version());
}

/// Outside: boots UML and runs this test inside. Inside (`CAPSTAN_UML_INNER=1`): the v2 checks.
#[test]
fn uml_cgroup_v2_real_kernel() {
    if std::env::var_os(INNER_ENV).is_some() {
        exercise(Path::new(DEFAULT_ROOT), CgroupVersion::V2);
        return;
    }
    if !root() {
        return;
    }
    let Some(_) = which("linux.uml") else {
        eprintln!("skipped: linux.uml not found (apt install user-mode-linux)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/uml-run.sh");
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(&script)
        .arg(work.path())
        .arg("env")
        .arg(format!("{INNER_ENV}=1"))
        .arg("RUST_BACKTRACE=1")
        .arg(&exe)
        .args([
            "--exact",
            "uml_cgroup_v2_real_kernel",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .process_group(0)
        .stdin(Stdio::null());
    let mut child = spawn_without_xstate_ptrace(cmd);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            // The UML kernel and its helper processes share the process group we made.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(work.path().join("output")).unwrap_or_default();
    let console = std::fs::read_to_string(work.path().join("console")).unwrap_or_default();
    let tail = |s: &str| {
        s.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    };
    let exit = std::fs::read_to_string(work.path().join("exit")).unwrap_or_default();
    assert!(
        status.is_some(),
        "UML guest timed out after 120 s\nconsole:\n{}\noutput:\n{output}",
        tail(&console)
    );
    assert_eq!(
        exit.trim(),
        "0",
        "v2 test inside UML failed (launcher {status:?})\noutput:\n{output}\nconsole:\n{}",
        tail(&console)
    );
    assert!(
        output.contains("test uml_cgroup_v2_real_kernel ... ok"),
        "the inner test did not run:\n{output}"
    );
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Spawns `cmd` from a throw-away thread that first loads a seccomp filter failing
/// `ptrace(PTRACE_GETREGSET/SETREGSET, …, NT_X86_XSTATE, …)` with EIO. The child inherits the
/// filter (filters are per thread and inherited across fork/exec; no TSYNC, so the test process's
/// other threads are untouched). UML 6.1 sizes its XSAVE buffer statically and the host kernel
/// refuses it with EFAULT on hosts with AMX state; without XSTATE regsets UML falls back to
/// PTRACE_GETFPREGS, which works everywhere.
fn spawn_without_xstate_ptrace(mut cmd: Command) -> Child {
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    const PTRACE_GETREGSET: u64 = 0x4204;
    const PTRACE_SETREGSET: u64 = 0x4205;
    const NT_X86_XSTATE: u64 = 0x202;
    std::thread::spawn(move || {
        let mut filter = ScmpFilterContext::new(ScmpAction::Allow).expect("seccomp context");
        let ptrace = ScmpSyscall::from_name("ptrace").expect("ptrace syscall");
        for request in [PTRACE_GETREGSET, PTRACE_SETREGSET] {
            filter
                .add_rule_conditional(
                    ScmpAction::Errno(libc_eio()),
                    ptrace,
                    &[
                        ScmpArgCompare::new(0, ScmpCompareOp::Equal, request),
                        ScmpArgCompare::new(2, ScmpCompareOp::Equal, NT_X86_XSTATE),
                    ],
                )
                .expect("seccomp rule");
        }
        filter.load().expect("load seccomp filter");
        cmd.spawn().expect("start scripts/uml-run.sh")
    })
    .join()
    .unwrap()
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

use std::os::unix::process::CommandExt;
