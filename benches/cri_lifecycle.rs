//! Container lifecycle benchmark: create, start, wait for the exit of `/bin/true`, delete — the
//! same OCI bundle through Capstan's runtime (the per-pod supervisor driving libcontainer), `runc`
//! and `crun`, in the same run. Reports median and p99 per runtime and the ratios.
//!
//! All three see the same host view: the benchmark first moves itself into a private mount
//! namespace and hides the cgroup2 mount beside the v1 hierarchies (crun refuses this host's
//! hybrid layout otherwise), and every runtime runs the one bundle. Before timing, each runtime
//! runs the bundle once with a command that prints the container's capabilities, seccomp mode,
//! no_new_privs, namespaces and cgroup, and the benchmark checks the three agree.
//!
//! Run: `cargo bench --bench cri_lifecycle` (CAPSTAN_BENCH_N sets the iterations, default 200).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cri_lifecycle: needs root (it runs containers); skipped");
        return;
    }
    private_cgroup_view();
    let n: usize = std::env::var("CAPSTAN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let work = tempfile::tempdir().expect("tempdir");
    let bundle = make_bundle(work.path());

    let mut results: Vec<(&str, Vec<Duration>)> = Vec::new();
    let probe_cmd = ["/bin/sh", "-c", PROBE];
    let mut probes = Vec::new();
    for rt in ["runc", "crun"] {
        if which(rt).is_none() {
            eprintln!("{rt} not installed; skipped");
            continue;
        }
        set_args(&bundle, &probe_cmd);
        probes.push((rt, oci_cli_probe(rt, &bundle, work.path())));
        set_args(&bundle, &["/bin/true"]);
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("bench-{rt}-{i}");
            let t = Instant::now();
            oci_cli_lifecycle(rt, &bundle, work.path(), &id);
            times.push(t.elapsed());
        }
        results.push((rt, times));
    }
    if let Some((name, probe, times)) = capstan_side(&bundle, work.path(), n, &probe_cmd) {
        probes.push((name, probe));
        results.push((name, times));
    }

    // The runtimes remove each container's cgroup but not the parent the bundle names.
    if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.flatten() {
            let _ = std::fs::remove_dir(h.path().join("capstan-bench"));
        }
    }
    println!("container configuration as seen inside the container:");
    for (rt, p) in &probes {
        println!("  {rt:7} {p}");
    }
    let first = &probes[0].1;
    for (rt, p) in &probes[1..] {
        assert_eq!(
            p, first,
            "{rt} runs the bundle with a different configuration"
        );
    }
    println!("lifecycle of /bin/true (create, start, wait, delete), {n} runs each:");
    let mut medians = Vec::new();
    for (rt, mut times) in results {
        times.sort();
        let med = times[times.len() / 2];
        let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        println!(
            "  {rt:7} median {:7.2} ms   p99 {:7.2} ms",
            ms(med),
            ms(p99)
        );
        medians.push((rt, med));
    }
    if let Some((_, capstan)) = medians.iter().find(|(rt, _)| *rt == "capstan") {
        for (rt, med) in &medians {
            if *rt != "capstan" {
                println!(
                    "  capstan / {rt}: {:.2}×",
                    capstan.as_secs_f64() / med.as_secs_f64()
                );
            }
        }
    }
}

/// Prints what shapes a container's isolation on one line: effective capabilities, seccomp mode,
/// no_new_privs, the namespace kinds it has, and how many cgroup hierarchies it is placed in.
/// Plus whether it has a network namespace of its own (only `lo` in /proc/net/dev).
const PROBE: &str =
    "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status | tr -s '\\t\\n' ' '; \
    echo -n ' ns:'; ls /proc/self/ns | tr '\\n' ','; echo -n ' cgroup-depth:'; \
    grep -c . /proc/self/cgroup | tr -d '\\n'; echo -n ' ifaces:'; tail -n +3 /proc/net/dev | wc -l";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.exists())
    })
}

/// A private mount namespace without the cgroup2 mount at /sys/fs/cgroup/unified.
fn private_cgroup_view() {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("making / private");
    let _ = umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH);
}

/// A bundle whose root filesystem is busybox-static with applet links, config from `runc spec`
/// (the reference runtime's defaults: namespaces, capabilities, masked paths; no seccomp).
fn make_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static is installed");
    for a in ["sh", "true", "grep", "tr", "ls", "echo", "cat"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let out = Command::new("runc")
        .arg("spec")
        .current_dir(&bundle)
        .status();
    assert!(out.is_ok_and(|s| s.success()), "runc spec failed");
    bundle
}

fn set_args(bundle: &Path, args: &[&str]) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["linux"]["cgroupsPath"] = serde_json::json!("/capstan-bench/c");
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

fn oci_cli_probe(rt: &str, bundle: &Path, work: &Path) -> String {
    let out = Command::new(rt)
        .arg("--root")
        .arg(work.join(format!("{rt}-state")))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("probe-{rt}"))
        .stdin(Stdio::null())
        .output()
        .expect("running the probe");
    assert!(
        out.status.success(),
        "{rt} probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One `run` (create, start, wait, delete) through a runtime's command line.
fn oci_cli_lifecycle(rt: &str, bundle: &Path, work: &Path, id: &str) {
    let status = Command::new(rt)
        .arg("--root")
        .arg(work.join(format!("{rt}-state")))
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("running the runtime");
    assert!(status.success(), "{rt} run {id} failed");
}

/// Capstan's side: one supervisor (as each pod has), and per run a create, start, wait for the
/// exit event and delete through it — what CreateContainer…RemoveContainer cost in the runtime,
/// minus the gRPC hop.
fn capstan_side(
    bundle: &Path,
    work: &Path,
    n: usize,
    probe: &[&str],
) -> Option<(&'static str, String, Vec<Duration>)> {
    use cri::supervisor::{CreateRequest, EventKind, SupervisorClient};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_capstan"));
        let dir = work.join("capstan-supervisor");
        let client = SupervisorClient::spawn(&exe, &dir, None, false)
            .await
            .expect("spawning the supervisor");
        let mut events = client.subscribe().await.expect("subscribing");
        let run = |id: String, log: Option<PathBuf>| {
            let client = client.clone();
            async move {
                client
                    .create(CreateRequest {
                        id: id.clone(),
                        bundle: bundle.to_path_buf(),
                        log_path: log,
                        tty: false,
                        max_log_size: 0,
                        max_log_files: 0,
                        ..Default::default()
                    })
                    .await
                    .expect("create");
                client.start(&id).await.expect("start");
                id
            }
        };
        // The probe, read back from the CRI log file.
        set_args(bundle, probe);
        let log = work.join("probe.log");
        let id = run("probe".into(), Some(log.clone())).await;
        wait_exit(&mut events, &id).await;
        client.delete(&id, false).await.expect("delete");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let probe_out: String = text
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .collect::<Vec<_>>()
            .join("\n");
        set_args(bundle, &["/bin/true"]);
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            let t = Instant::now();
            let id = run(format!("bench-capstan-{i}"), None).await;
            wait_exit(&mut events, &id).await;
            client.delete(&id, false).await.expect("delete");
            times.push(t.elapsed());
        }
        client.shutdown().await.expect("shutdown");
        async fn wait_exit(events: &mut cri::supervisor::EventStream, id: &str) {
            use futures::StreamExt;
            while let Some(ev) = events.next().await {
                let ev = ev.expect("event stream");
                if ev.id == id && ev.kind == EventKind::Exited {
                    return;
                }
            }
            panic!("event stream ended before {id} exited");
        }
        Some(("capstan", probe_out.trim().to_string(), times))
    })
}
