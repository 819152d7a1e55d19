//! Housekeeping against the built-in runtime in-process: container GC, image GC and container
//! log rotation drive a real runtime and are checked through CRI and the files on disk.
//!
//! - `container_gc`: of a pod's crash-looped container only the newest dead instance stays (and
//!   its log file), running containers stay, the older inactive sandbox goes; everything of a pod
//!   that no longer exists goes, its log directory included.
//! - `image_gc`: with an injected image-filesystem reading above the high threshold, exactly the
//!   unused images go, least recently used first, and never the one a container uses.
//! - `log_rotation`: a running container's big log is rotated, the container keeps writing into
//!   the reopened file, older rotated files are gzipped and those beyond the limit removed; once
//!   the container is removed, its rotated files go.
//!
//! Needs root, the CNI plugins in /usr/lib/cni and the local registry with the test images
//! (`bash scripts/test-images.sh`). Each test gets its own directory, bridge, subnet and cgroup
//! parent, removed afterwards also on failure. The test binary is its own pod supervisor
//! (`<exe> supervise …`), hence `harness = false`.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use cri::pb;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet::container_gc::{ContainerGc, GcPolicy};
use kubelet::container_log_manager::{ContainerLogManager, LogRotatePolicy};
use kubelet::image_gc::{FsStats, ImageGcManager, ImageGcPolicy};
use kubelet::plan::config;
use kubelet::runtime::{image_spec, Runtime};
use libtest_mimic::{Arguments, Failed, Trial};
use parking_lot::Mutex;
use support::{
    clean_stale, conflist, free_subnet, nix_is_root, remove_cgroup_tree, repo_dir, test_dir,
};

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        cri::supervisor::main();
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("housekeeping::container_gc", || {
            run(0, |n| container_gc(n).boxed())
        }),
        Trial::test("housekeeping::image_gc", || run(1, |n| image_gc(n).boxed())),
        Trial::test("housekeeping::log_rotation", || {
            run(2, |n| log_rotation(n).boxed())
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}

type Scenario = for<'a> fn(&'a TestNode) -> futures::future::BoxFuture<'a, Result<()>>;

fn run(index: usize, scenario: Scenario) -> Result<(), Failed> {
    if !nix_is_root() {
        return Err("needs root (network namespaces, cgroups, mounts)".into());
    }
    if !test_dir().join("certs.d").is_dir() {
        return Err("the test registry is not set up: run `bash scripts/test-images.sh`".into());
    }
    let node = Node::new(index).map_err(|e| format!("{e:#}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let res = rt.block_on(async {
        let (runtime, server) = node.start().await?;
        let tn = TestNode {
            node: &node,
            rt: runtime.clone(),
        };
        let out = tokio::time::timeout(
            Duration::from_secs(240),
            std::panic::AssertUnwindSafe(scenario(&tn)).catch_unwind(),
        )
        .await;
        cleanup_pods(&runtime).await;
        server.shutdown().await;
        match out {
            Err(_) => bail!("the scenario did not finish within 240s"),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(r)) => r,
        }
    });
    drop(rt);
    drop(node);
    res.map_err(|e| format!("{e:#}").into())
}

/// One test's private node: directory, CNI network, cgroup parent. Dropping it removes them.
struct Node {
    dir: PathBuf,
    cgroup_parent: String,
}

impl Node {
    fn new(index: usize) -> Result<Node> {
        let pid = std::process::id();
        let name = format!("housekeeping{index}-{pid}");
        let runs = test_dir().join("kubelet-runs");
        clean_stale(&runs);
        let dir = runs.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let bridge = format!("ckh{index}{pid}");
        let prefix = free_subnet(index)?;
        std::fs::write(dir.join("bridge"), &bridge)?;
        std::fs::write(dir.join("subnet-prefix"), &prefix)?;
        std::fs::write(
            dir.join("net.d/10-kubelet-test.conflist"),
            conflist(&bridge, &prefix, &dir),
        )?;
        Ok(Node {
            dir,
            cgroup_parent: format!("/capstan-kubelet-test-{name}"),
        })
    }

    async fn start(&self) -> Result<(Runtime, kubelet::runtime::BuiltinServer)> {
        Runtime::start_builtin(cri::server::Config {
            root: self.dir.join("root"),
            socket: self.dir.join("cri.sock"),
            registry_config_dir: Some(test_dir().join("certs.d")),
            cni_conf_dir: self.dir.join("net.d"),
            cni_bin_dirs: vec!["/usr/lib/cni".into()],
            cni_cache_dir: self.dir.join("cni-cache"),
            supervisor_exe: std::env::current_exe()?,
            supervisors_cgroup: cri::cgroups::SUPERVISORS_CGROUP.into(),
        })
        .await
        .context("starting the built-in runtime")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_dir().join("scripts/containerd.sh"))
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

async fn cleanup_pods(rt: &Runtime) {
    let Ok(Ok(pods)) =
        tokio::time::timeout(Duration::from_secs(10), rt.list_pod_sandbox(None)).await
    else {
        return;
    };
    for p in pods {
        let _ = tokio::time::timeout(Duration::from_secs(20), async {
            let _ = rt.stop_pod_sandbox(&p.id).await;
            let _ = rt.remove_pod_sandbox(&p.id).await;
        })
        .await;
    }
}

/// The runtime of one test's node, with helpers to run pods the way the pod worker does.
struct TestNode<'a> {
    node: &'a Node,
    rt: Runtime,
}

/// A pod whose containers are `(name, image, command)`.
fn pod(uid: &str, containers: &[(&str, &str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("hk-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            labels: Some(BTreeMap::from([("app".into(), "housekeeping".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: containers
                .iter()
                .map(|(name, image, cmd)| Container {
                    name: name.to_string(),
                    image: Some(image.to_string()),
                    command: Some(vec!["sh".into(), "-c".into(), cmd.to_string()]),
                    ..Default::default()
                })
                .collect(),
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl TestNode<'_> {
    fn sandbox_options(&self) -> config::SandboxOptions {
        config::SandboxOptions {
            pod_logs_dir: self.logs_dir(),
            cgroup_parent: self.node.cgroup_parent.clone(),
            seccomp_profile_root: self.node.dir.join("seccomp"),
            ..Default::default()
        }
    }

    fn logs_dir(&self) -> PathBuf {
        self.node.dir.join("logs")
    }

    async fn pull(&self, image: &str) -> Result<String> {
        self.rt
            .pull_image(image_spec(image), None, None)
            .await
            .with_context(|| format!("pulling {image}"))
    }

    /// Runs the pod's sandbox (attempt `attempt`); returns its id and config.
    async fn run_sandbox(&self, pod: &Pod, attempt: u32) -> Result<(String, pb::PodSandboxConfig)> {
        let cfg = config::sandbox_config(pod, attempt, &self.sandbox_options());
        std::fs::create_dir_all(&cfg.log_directory)?;
        let id = self
            .rt
            .run_pod_sandbox(cfg.clone(), "")
            .await
            .context("RunPodSandbox")?;
        Ok((id, cfg))
    }

    /// Creates container `index` of the pod (restart count `attempt`), starting it if `start`.
    async fn container(
        &self,
        pod: &Pod,
        index: usize,
        attempt: i32,
        sandbox: &(String, pb::PodSandboxConfig),
        start: bool,
    ) -> Result<String> {
        let c = &pod.spec.as_ref().unwrap().containers[index];
        std::fs::create_dir_all(Path::new(&sandbox.1.log_directory).join(&c.name))?;
        let image_ref = self.pull(c.image.as_deref().unwrap()).await?;
        let cfg = config::container_config(
            pod,
            c,
            attempt,
            &self.sandbox_options(),
            &config::ContainerOptions {
                image_ref,
                ..Default::default()
            },
        )?;
        let id = self
            .rt
            .create_container(&sandbox.0, cfg, sandbox.1.clone())
            .await
            .context("CreateContainer")?;
        if start {
            self.rt
                .start_container(&id)
                .await
                .context("StartContainer")?;
        }
        Ok(id)
    }

    async fn state(&self, id: &str) -> Result<i32> {
        Ok(self
            .rt
            .container_status(id, false)
            .await?
            .status
            .context("no status")?
            .state)
    }

    async fn wait_exited(&self, id: &str) -> Result<()> {
        for _ in 0..300 {
            if self.state(id).await? == pb::ContainerState::ContainerExited as i32 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("container {id} did not exit within 30s")
    }

    async fn container_ids(&self) -> Result<HashSet<String>> {
        Ok(self
            .rt
            .list_containers(None)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    async fn sandbox_ids(&self) -> Result<HashSet<String>> {
        Ok(self
            .rt
            .list_pod_sandbox(None)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect())
    }
}

fn set(ids: &[&String]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn container_gc(n: &TestNode<'_>) -> Result<()> {
    let p = pod(
        "hk-gc-kept",
        &[
            ("app", "busybox", "exit 1"),
            ("runner", "busybox", "sleep 3600"),
        ],
    );
    let gone = pod("hk-gc-gone", &[("app", "busybox", "exit 1")]);

    // The pod's first sandbox died; the second runs a crash-looping "app" and a "runner".
    let old_sb = n.run_sandbox(&p, 0).await?;
    n.rt.stop_pod_sandbox(&old_sb.0).await?;
    let sb = n.run_sandbox(&p, 1).await?;
    let mut dead = Vec::new();
    for attempt in 0..3 {
        let id = n.container(&p, 0, attempt, &sb, true).await?;
        n.wait_exited(&id).await?;
        dead.push(id);
    }
    let runner = n.container(&p, 1, 0, &sb, true).await?;
    // A deleted pod: stopped sandbox, dead container.
    let gone_sb = n.run_sandbox(&gone, 0).await?;
    let gone_c = n.container(&gone, 0, 0, &gone_sb, true).await?;
    n.wait_exited(&gone_c).await?;
    n.rt.stop_pod_sandbox(&gone_sb.0).await?;
    let log =
        |sb: &(String, pb::PodSandboxConfig), rel: &str| Path::new(&sb.1.log_directory).join(rel);
    for i in 0..3 {
        ensure!(
            log(&sb, &format!("app/{i}.log")).exists(),
            "app/{i}.log written"
        );
    }
    ensure!(log(&gone_sb, "app/0.log").exists());

    let known: HashSet<String> = HashSet::from(["hk-gc-kept".to_string()]);
    let gc = ContainerGc::new(
        n.rt.clone(),
        Arc::new(move || Some(known.clone())),
        n.logs_dir(),
        GcPolicy::default(),
    );
    let plan = gc.collect().await.context("container GC")?;
    eprintln!("container GC removed: {plan:?}");

    let containers = n.container_ids().await?;
    ensure!(
        containers == set(&[&dead[2], &runner]),
        "containers left: {containers:?}; expected the newest dead app {} and the runner {runner}",
        dead[2]
    );
    ensure!(n.state(&runner).await? == pb::ContainerState::ContainerRunning as i32);
    let sandboxes = n.sandbox_ids().await?;
    ensure!(
        sandboxes == set(&[&sb.0]),
        "sandboxes left: {sandboxes:?}; expected only {}",
        sb.0
    );
    ensure!(
        !log(&sb, "app/0.log").exists() && !log(&sb, "app/1.log").exists(),
        "logs of removed containers go"
    );
    ensure!(
        log(&sb, "app/2.log").exists(),
        "the kept dead container's log stays (logs --previous)"
    );
    ensure!(
        !Path::new(&gone_sb.1.log_directory).exists(),
        "the deleted pod's log directory goes"
    );
    ensure!(Path::new(&sb.1.log_directory).exists());

    // A second round has nothing left to do.
    let again = gc.collect().await?;
    ensure!(again.is_empty(), "second round: {again:?}");
    Ok(())
}

async fn image_gc(n: &TestNode<'_>) -> Result<()> {
    let cfg_img = n.pull("capstan-test/config:1.0").await?;
    let layers_img = n.pull("capstan-test/layers:1.0").await?;
    let busybox = n.pull("busybox").await?;
    let images = n.rt.list_images(None).await?;
    let id_of = |r: &str| {
        images
            .iter()
            .find(|i| i.id == r || i.repo_digests.iter().chain(&i.repo_tags).any(|t| t == r))
            .map(|i| (i.id.clone(), i.size))
    };
    let (cfg_id, cfg_size) = id_of(&cfg_img).context("config image listed")?;
    let (layers_id, _) = id_of(&layers_img).context("layers image listed")?;
    let (busybox_id, _) = id_of(&busybox).context("busybox listed")?;
    ensure!(images.len() == 3, "three images: {images:?}");

    // The real reading: statfs of the mountpoint the runtime reports.
    let real = ImageGcManager::new(n.rt.clone(), ImageGcPolicy::default())
        .image_fs_stats()
        .await?;
    ensure!(
        real.capacity > 0 && real.available <= real.capacity,
        "image fs stats {real:?}"
    );

    let now = Arc::new(AtomicU64::new(1_000_000));
    let clock = {
        let now = now.clone();
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(now.load(Ordering::SeqCst)))
    };
    let fs = Arc::new(Mutex::new(FsStats {
        capacity: 1,
        available: 1,
    }));
    let gc = ImageGcManager::new(n.rt.clone(), ImageGcPolicy::default())
        .with_clock(clock)
        .with_fs_stats({
            let fs = fs.clone();
            Arc::new(move || Ok(*fs.lock()))
        });
    gc.detect().await?;

    // The config image is used first, then the layers image; busybox stays in use.
    let p = pod(
        "hk-img",
        &[
            ("cfg", "capstan-test/config:1.0", "true"),
            ("layers", "capstan-test/layers:1.0", "true"),
            ("bb", "busybox", "sleep 3600"),
        ],
    );
    let sb = n.run_sandbox(&p, 0).await?;
    for (index, at) in [(0, 1_000_100), (1, 1_000_200)] {
        let id = n.container(&p, index, 0, &sb, false).await?;
        now.store(at, Ordering::SeqCst);
        let in_use = gc.detect().await?;
        ensure!(in_use.len() == 1, "one image in use at {at}: {in_use:?}");
        n.rt.remove_container(&id).await?;
    }
    let bb = n.container(&p, 2, 0, &sb, false).await?;
    now.store(1_000_300, Ordering::SeqCst);

    // Below the high threshold nothing goes.
    *fs.lock() = FsStats {
        capacity: 100,
        available: 16,
    };
    let r = gc.garbage_collect().await?;
    ensure!(
        r.usage_percent == 84 && r.remove_for_space.is_empty(),
        "at 84%: {r:?}"
    );

    // At 85%, freeing down to 80% asks for exactly the config image's size: only it goes.
    *fs.lock() = FsStats {
        capacity: 20 * cfg_size,
        available: 3 * cfg_size,
    };
    let r = gc.garbage_collect().await?;
    ensure!(
        r.remove_for_space == vec![cfg_id.clone()] && r.shortfall().is_none(),
        "first round removed {r:?}, expected only the least recently used {cfg_id}"
    );
    let left: HashSet<String> =
        n.rt.list_images(None)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
    ensure!(
        left == set(&[&layers_id, &busybox_id]),
        "images left: {left:?}"
    );

    // A full disk: the layers image goes too, busybox (in use by a created container) never, and
    // the shortfall is reported.
    *fs.lock() = FsStats {
        capacity: 100 * cfg_size,
        available: 0,
    };
    let r = gc.garbage_collect().await?;
    ensure!(
        r.remove_for_space == vec![layers_id.clone()],
        "second round removed {r:?}"
    );
    ensure!(r
        .shortfall()
        .is_some_and(|m| m.contains("Failed to garbage collect")));
    let left: HashSet<String> =
        n.rt.list_images(None)
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
    ensure!(left == set(&[&busybox_id]), "images left: {left:?}");
    ensure!(n.container_ids().await?.contains(&bb));
    Ok(())
}

async fn log_rotation(n: &TestNode<'_>) -> Result<()> {
    // About 150 KB per burst, then a tick line; every second.
    let p = pod(
        "hk-logs",
        &[(
            "writer",
            "busybox",
            "i=0; while true; do yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 | head -n 1000; echo tick-$i; i=$((i+1)); sleep 1; done",
        )],
    );
    let sb = n.run_sandbox(&p, 0).await?;
    let id = n.container(&p, 0, 0, &sb, true).await?;
    let live = Path::new(&sb.1.log_directory).join("writer/0.log");
    let policy = LogRotatePolicy {
        max_size: 100 << 10,
        max_files: 3,
        max_workers: 2,
        monitor_interval: Duration::from_secs(10),
    };
    let day = Arc::new(AtomicU64::new(0));
    let manager = ContainerLogManager::new(n.rt.clone(), policy, n.logs_dir()).with_clock({
        let day = day.clone();
        Arc::new(move || {
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 86_400 * day.load(Ordering::SeqCst))
        })
    });
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let rotated = || kubelet::container_log_manager::rotated_logs(&live);

    for round in 0..4u64 {
        // Wait for the live file to pass the limit.
        let mut waited = 0;
        while size(&live) < policy.max_size {
            ensure!(
                waited < 300,
                "{} stayed below {} bytes",
                live.display(),
                policy.max_size
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        day.store(round, Ordering::SeqCst);
        let done = manager.rotate_logs().await?;
        ensure!(
            done.rotated == vec![id.clone()] && done.removed.is_empty(),
            "round {round}: {done:?}"
        );
        // The container writes into the reopened file: a new tick appears there.
        let mut waited = 0;
        while !std::fs::read_to_string(&live)
            .unwrap_or_default()
            .contains("stdout F tick-")
        {
            ensure!(
                waited < 300,
                "no tick in the new {} after rotation {round}",
                live.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
    }
    // Three files in all: the live one, the newest rotated plain, the one before gzipped.
    let names: Vec<String> = rotated()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let stamp = |d: u64| {
        chrono::DateTime::<chrono::Utc>::from(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 86_400 * d),
        )
        .format("%Y%m%d-%H%M%S")
        .to_string()
    };
    ensure!(
        names
            == vec![
                format!("0.log.{}.gz", stamp(2)),
                format!("0.log.{}", stamp(3))
            ],
        "rotated files: {names:?}"
    );
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&rotated()[0])?),
        &mut text,
    )?;
    ensure!(
        text.lines().all(|l| l.contains(" stdout F ")),
        "CRI log records in the gzipped file"
    );
    ensure!(n.state(&id).await? == pb::ContainerState::ContainerRunning as i32);

    // The container is removed without GC (as pod termination does): the next round removes
    // its rotated files and leaves the live log (restart counts are recovered from it).
    let before = rotated();
    n.rt.stop_container(&id, 0).await?;
    n.rt.remove_container(&id).await?;
    let done = manager.rotate_logs().await?;
    let mut removed = done.removed.clone();
    removed.sort();
    ensure!(
        done.rotated.is_empty() && removed == before,
        "after removal: {done:?}, expected {before:?} removed"
    );
    ensure!(rotated().is_empty() && live.exists());
    Ok(())
}
