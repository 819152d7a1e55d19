//! The pod cgroup hierarchy through cri's cgroup manager: on fake cgroupfs trees (v1 and v2,
//! checking the interface files written), on this host's real hierarchy (root; below a
//! test-only cgroup root, removed by a guard), and on a real cgroup-v2 kernel inside User-Mode
//! Linux (`scripts/uml-run.sh`, the harness of cri's `sandbox_cgroups` test), where this test
//! binary runs again with `CAPSTAN_UML_INNER=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cri::cgroups::{v1::V1Manager, v2::V2Manager, AnyCgroupManager, CgroupVersion, DEFAULT_ROOT};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet::qos::{NodeAllocatable, PodCgroups, PodCgroupsConfig};

const INNER_ENV: &str = "CAPSTAN_UML_INNER";

fn lay_out(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

fn read(p: PathBuf) -> String {
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn pod(uid: &str, req: &[(&str, &str)], lim: &[(&str, &str)]) -> Pod {
    let list = |l: &[(&str, &str)]| {
        (!l.is_empty()).then(|| {
            l.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: list(req),
                    limits: list(lim),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn alloc() -> NodeAllocatable {
    NodeAllocatable {
        cpu_milli: 4000,
        memory_bytes: 8 << 30,
    }
}

fn fake_v1() -> (tempfile::TempDir, AnyCgroupManager) {
    let tmp = tempfile::tempdir().unwrap();
    lay_out(
        tmp.path(),
        &[
            ("cpu/cpu.shares", "1024\n"),
            ("cpuacct/cpuacct.usage", "0\n"),
            ("cpuset/cpuset.cpus", "0-3\n"),
            ("cpuset/cpuset.mems", "0\n"),
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("pids/pids.max", "max\n"),
        ],
    );
    let m = AnyCgroupManager::V1(V1Manager::from_tree(tmp.path()).unwrap());
    (tmp, m)
}

fn fake_v2() -> (tempfile::TempDir, AnyCgroupManager) {
    let tmp = tempfile::tempdir().unwrap();
    lay_out(
        tmp.path(),
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cgroup.subtree_control", ""),
        ],
    );
    let m = AnyCgroupManager::V2(V2Manager::new(tmp.path()).unwrap());
    (tmp, m)
}

/// Fake trees hold plain files, which rmdir refuses; the kernel's interface files vanish with
/// the directory, so clear ours first.
fn clear_files(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().unwrap().is_dir() {
            clear_files(&e.path());
        } else {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

#[test]
fn fake_v1_hierarchy_and_pods() {
    let (tmp, mgr) = fake_v1();
    let r = tmp.path();
    let pc = PodCgroups::new(
        mgr,
        PodCgroupsConfig {
            cgroup_root: "/node1".into(),
            pod_pids_limit: Some(1024),
            ..Default::default()
        },
    );
    pc.ensure_qos_hierarchy(&alloc()).unwrap();
    assert_eq!(read(r.join("cpu/node1/kubepods/cpu.shares")), "4096");
    assert_eq!(
        read(r.join("memory/node1/kubepods/memory.limit_in_bytes")),
        (8u64 << 30).to_string()
    );
    assert_eq!(
        read(r.join("cpu/node1/kubepods/besteffort/cpu.shares")),
        "2"
    );
    assert_eq!(read(r.join("cpu/node1/kubepods/burstable/cpu.shares")), "2");
    assert!(r.join("cpuset/node1/kubepods/burstable").is_dir());

    // Guaranteed: directly under kubepods, quota and memory limit.
    let g = pod("g1", &[], &[("cpu", "500m"), ("memory", "128Mi")]);
    assert_eq!(pc.ensure_pod(&g).unwrap(), "/node1/kubepods/podg1");
    let gd = |c: &str, f: &str| read(r.join(format!("{c}/node1/kubepods/podg1/{f}")));
    assert_eq!(gd("cpu", "cpu.shares"), "512");
    assert_eq!(gd("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(gd("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(
        gd("memory", "memory.limit_in_bytes"),
        (128u64 << 20).to_string()
    );
    assert_eq!(gd("pids", "pids.max"), "1024");

    // Burstable pods: under burstable, QoS shares follow the sum of their requests.
    let b1 = pod("b1", &[("cpu", "250m")], &[]);
    let b2 = pod("b2", &[("cpu", "750m")], &[("memory", "1Gi")]);
    assert_eq!(
        pc.ensure_pod(&b1).unwrap(),
        "/node1/kubepods/burstable/podb1"
    );
    pc.ensure_pod(&b2).unwrap();
    assert_eq!(
        read(r.join("cpu/node1/kubepods/burstable/cpu.shares")),
        "1024"
    );
    assert_eq!(
        read(r.join("cpu/node1/kubepods/burstable/podb1/cpu.shares")),
        "256"
    );
    assert!(!r
        .join("cpu/node1/kubepods/burstable/podb1/cpu.cfs_quota_us")
        .exists());
    assert!(!r
        .join("memory/node1/kubepods/burstable/podb1/memory.limit_in_bytes")
        .exists());
    assert_eq!(
        read(r.join("memory/node1/kubepods/burstable/podb2/memory.limit_in_bytes")),
        (1u64 << 30).to_string()
    );

    // BestEffort.
    let be = pod("e1", &[], &[]);
    assert_eq!(
        pc.ensure_pod(&be).unwrap(),
        "/node1/kubepods/besteffort/pode1"
    );
    assert_eq!(
        read(r.join("cpu/node1/kubepods/besteffort/pode1/cpu.shares")),
        "2"
    );

    assert!(pc.pod_cgroup_exists("b1") && pc.pod_cgroup_exists("g1"));
    assert_eq!(
        pc.find_pod("e1").as_deref(),
        Some("/node1/kubepods/besteffort/pode1")
    );
    for c in ["cpu", "cpuacct", "cpuset", "memory", "pids"] {
        clear_files(&r.join(format!("{c}/node1/kubepods/burstable/podb1")));
    }
    pc.remove_pod("b1").unwrap();
    assert!(!pc.pod_cgroup_exists("b1"));
    assert!(!r.join("memory/node1/kubepods/burstable/podb1").exists());
    assert_eq!(
        read(r.join("cpu/node1/kubepods/burstable/cpu.shares")),
        "768"
    );
    // Removing an unknown pod is fine.
    pc.remove_pod("nope").unwrap();
}

#[test]
fn fake_v2_hierarchy_and_pods() {
    let (tmp, mgr) = fake_v2();
    let r = tmp.path();
    let pc = PodCgroups::new(mgr, PodCgroupsConfig::default());
    pc.ensure_qos_hierarchy(&alloc()).unwrap();
    // shares → weight as runc/the kubelet convert them.
    assert_eq!(read(r.join("kubepods/cpu.weight")), "157");
    assert_eq!(
        read(r.join("kubepods/memory.max")),
        (8u64 << 30).to_string()
    );
    assert_eq!(read(r.join("kubepods/besteffort/cpu.weight")), "1");
    assert!(read(r.join("kubepods/cgroup.subtree_control")).contains("+memory"));
    let g = pod("g1", &[], &[("cpu", "2"), ("memory", "1Gi")]);
    assert_eq!(pc.ensure_pod(&g).unwrap(), "/kubepods/podg1");
    assert_eq!(read(r.join("kubepods/podg1/cpu.max")), "200000 100000");
    assert_eq!(
        read(r.join("kubepods/podg1/memory.max")),
        (1u64 << 30).to_string()
    );
    assert_eq!(read(r.join("kubepods/podg1/cpu.weight")), "79");
    let b = pod(
        "b1",
        &[("cpu", "100m"), ("memory", "10Mi")],
        &[("cpu", "1")],
    );
    assert_eq!(pc.ensure_pod(&b).unwrap(), "/kubepods/burstable/podb1");
    assert_eq!(
        read(r.join("kubepods/burstable/podb1/cpu.max")),
        "100000 100000"
    );
    assert!(!r.join("kubepods/burstable/podb1/memory.max").exists());
    assert!(pc.pod_cgroup_exists("b1"));
    clear_files(&r.join("kubepods/burstable/podb1"));
    pc.remove_pod("b1").unwrap();
    assert!(!pc.pod_cgroup_exists("b1"));
}

/// Removes the test's cgroup root in every hierarchy, also when an assertion fails.
struct Guard<'a> {
    pc: &'a PodCgroups,
    top: String,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        use cri::cgroups::CgroupManager;
        let _ = self.pc.manager().remove(&self.top);
    }
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (cgroupfs writes)");
    false
}

fn file(pc: &PodCgroups, controller: &str, path: &str, f: &str) -> PathBuf {
    let base = match pc.manager() {
        AnyCgroupManager::V1(m) => m.hierarchy(controller).unwrap().to_path_buf(),
        AnyCgroupManager::V2(m) => m.root().to_path_buf(),
    };
    base.join(path.trim_start_matches('/')).join(f)
}

/// The hierarchy on whatever kernel this is: create, limits in the real files, remove.
fn exercise_real(want: CgroupVersion) {
    use cri::cgroups::CgroupManager;
    let mgr = AnyCgroupManager::detect(Path::new(DEFAULT_ROOT)).expect("detect cgroups");
    assert_eq!(mgr.version(), want, "detected {mgr:?}");
    let top = format!("/capstan-kvol-test-{}", std::process::id());
    let pc = PodCgroups::new(
        mgr,
        PodCgroupsConfig {
            cgroup_root: top.clone(),
            ..Default::default()
        },
    );
    let _guard = Guard {
        pc: &pc,
        top: top.clone(),
    };
    pc.ensure_qos_hierarchy(&NodeAllocatable {
        cpu_milli: 2000,
        memory_bytes: 1 << 30,
    })
    .expect("qos hierarchy");
    let kubepods = format!("{top}/kubepods");
    let g = pod("real-g", &[], &[("cpu", "250m"), ("memory", "64Mi")]);
    let parent = pc.ensure_pod(&g).expect("guaranteed pod");
    assert_eq!(parent, format!("{kubepods}/podreal-g"));
    let b = pod("real-b", &[("cpu", "500m")], &[]);
    let bparent = pc.ensure_pod(&b).expect("burstable pod");
    match want {
        CgroupVersion::V1 => {
            assert_eq!(read(file(&pc, "cpu", &kubepods, "cpu.shares")), "2048");
            assert_eq!(
                read(file(&pc, "memory", &kubepods, "memory.limit_in_bytes")),
                (1u64 << 30).to_string()
            );
            assert_eq!(read(file(&pc, "cpu", &parent, "cpu.cfs_quota_us")), "25000");
            assert_eq!(
                read(file(&pc, "memory", &parent, "memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(
                read(file(
                    &pc,
                    "cpu",
                    &format!("{kubepods}/burstable"),
                    "cpu.shares"
                )),
                "512"
            );
            assert_eq!(read(file(&pc, "cpu", &bparent, "cpu.cfs_quota_us")), "-1");
        }
        CgroupVersion::V2 => {
            assert_eq!(read(file(&pc, "cpu", &kubepods, "cpu.weight")), "79");
            assert_eq!(
                read(file(&pc, "memory", &kubepods, "memory.max")),
                (1u64 << 30).to_string()
            );
            assert_eq!(read(file(&pc, "cpu", &parent, "cpu.max")), "25000 100000");
            assert_eq!(
                read(file(&pc, "memory", &parent, "memory.max")),
                (64u64 << 20).to_string()
            );
            assert_eq!(read(file(&pc, "memory", &bparent, "memory.max")), "max");
        }
    }
    assert!(pc.pod_cgroup_exists("real-g"));
    pc.remove_pod("real-g").expect("remove pod");
    pc.remove_pod("real-b").expect("remove pod");
    assert!(!pc.pod_cgroup_exists("real-g") && !pc.pod_cgroup_exists("real-b"));
    assert!(!file(&pc, "memory", &parent, "").exists());
}

#[test]
fn host_cgroups_real_kernel() {
    if std::env::var_os(INNER_ENV).is_some() || !root() {
        return;
    }
    let mgr = AnyCgroupManager::detect(Path::new(DEFAULT_ROOT)).expect("detect");
    exercise_real(cri::cgroups::CgroupManager::version(&mgr));
}

/// Outside: boots UML and runs this test inside. Inside (`CAPSTAN_UML_INNER=1`): the v2 run.
#[test]
fn uml_cgroup_v2_real_kernel() {
    if std::env::var_os(INNER_ENV).is_some() {
        exercise_real(CgroupVersion::V2);
        return;
    }
    if !root() {
        return;
    }
    if !std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("linux.uml").is_file()))
    {
        eprintln!("skipped: linux.uml not found (apt install user-mode-linux)");
        return;
    }
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
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = fs::read_to_string(work.path().join("output")).unwrap_or_default();
    let console = fs::read_to_string(work.path().join("console")).unwrap_or_default();
    let tail: String = console
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let exit = fs::read_to_string(work.path().join("exit")).unwrap_or_default();
    assert!(
        status.is_some(),
        "UML guest timed out\nconsole:\n{tail}\noutput:\n{output}"
    );
    assert_eq!(
        exit.trim(),
        "0",
        "v2 test inside UML failed ({status:?})\noutput:\n{output}\nconsole:\n{tail}"
    );
    assert!(
        output.contains("test uml_cgroup_v2_real_kernel ... ok"),
        "the inner test did not run:\n{output}"
    );
}

/// As in cri's `sandbox_cgroups` test: UML 6.1 cannot use XSTATE regsets on hosts with large
/// XSAVE state, so the launcher runs under a seccomp filter failing
/// `ptrace(PTRACE_GETREGSET/SETREGSET, …, NT_X86_XSTATE)` with EIO (UML then falls back to
/// PTRACE_GETFPREGS). The filter is loaded in a throw-away thread, so only the child gets it.
fn spawn_without_xstate_ptrace(mut cmd: Command) -> std::process::Child {
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
                    ScmpAction::Errno(nix::errno::Errno::EIO as i32),
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

use std::os::unix::process::CommandExt;
