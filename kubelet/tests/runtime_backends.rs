//! The runtime seam against both backends: Capstan's built-in runtime in-process (also served on
//! its CRI socket) and Debian's containerd over its socket. One scenario, as the pod worker will
//! drive it — sandbox and container configs from `plan::config`, run sandbox, pull, create + start
//! a busybox `sleep`, list, plan (a steady pod plans nothing), exec probes, stop, remove — runs
//! against each.
//!
//! Needs root, the CNI plugins in /usr/lib/cni, containerd and runc, and the local registry with
//! the test images (`bash scripts/test-images.sh`). Each backend gets its own directory, bridge,
//! subnet and cgroup parent; everything is removed afterwards, also when the scenario failed
//! (`scripts/containerd.sh stop DIR` kills what runs from DIR — the built-in runtime's supervisors
//! included — and removes mounts, network namespaces on the subnet and the bridge).
//!
//! The test binary is its own pod supervisor (`<exe> supervise …`), hence `harness = false`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cri::pb;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet::plan::{self, config, labels, PodRuntimeStatus, RuntimeContainer};
use kubelet::probe::{handlers, ProbeResult};
use kubelet::runtime::{image_spec, Backend, Runtime};
use libtest_mimic::{Arguments, Failed, Trial};
use support::{
    clean_stale, conflist, free_subnet, nix_is_root, remove_cgroup_tree, repo_dir, test_dir,
};

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        cri::supervisor::main();
    }
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test("runtime_backends::builtin", || run(Kind::Builtin)),
        Trial::test("runtime_backends::containerd", || run(Kind::Containerd)),
    ];
    libtest_mimic::run(&args, trials).exit();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Builtin,
    Containerd,
}

fn run(kind: Kind) -> Result<(), Failed> {
    if !nix_is_root() {
        return Err("needs root (network namespaces, cgroups, mounts)".into());
    }
    if !test_dir().join("certs.d").is_dir() {
        return Err("the test registry is not set up: run `bash scripts/test-images.sh`".into());
    }
    let node = Node::new(kind).map_err(|e| format!("{e:#}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let res = rt.block_on(async {
        let (runtime, server) = match node.start().await {
            Ok(x) => x,
            Err(e) => return Err(e),
        };
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            std::panic::AssertUnwindSafe(scenario(&runtime, &node)).catch_unwind(),
        )
        .await;
        // Clean up through CRI whatever the scenario left (best effort), then stop serving.
        cleanup_pods(&runtime, &node.pod_uid).await;
        if let Some(s) = server {
            s.shutdown().await;
        }
        match out {
            Err(_) => bail!("the scenario did not finish within 180s"),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Ok(Ok(r)) => r,
        }
    });
    drop(rt);
    drop(node);
    res.map_err(|e| format!("{kind:?}: {e:#}").into())
}

/// One backend's private node: directory, CNI network, cgroup parent. Dropping it removes them.
struct Node {
    kind: Kind,
    dir: PathBuf,
    cgroup_parent: String,
    pod_uid: String,
}

impl Node {
    fn new(kind: Kind) -> Result<Node> {
        let pid = std::process::id();
        let name = format!(
            "{}-{pid}",
            if kind == Kind::Builtin {
                "builtin"
            } else {
                "containerd"
            }
        );
        let runs = test_dir().join("kubelet-runs");
        clean_stale(&runs);
        let dir = runs.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net.d"))?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let bridge = format!("ck{}{pid}", if kind == Kind::Builtin { "b" } else { "c" });
        let prefix = free_subnet(if kind == Kind::Builtin { 0 } else { 2 })?;
        std::fs::write(dir.join("bridge"), &bridge)?;
        std::fs::write(dir.join("subnet-prefix"), &prefix)?;
        std::fs::write(
            dir.join("net.d/10-kubelet-test.conflist"),
            conflist(&bridge, &prefix, &dir),
        )?;
        Ok(Node {
            kind,
            dir,
            cgroup_parent: format!("/capstan-kubelet-test-{name}"),
            pod_uid: format!("kubelet-test-{name}"),
        })
    }

    async fn start(&self) -> Result<(Runtime, Option<kubelet::runtime::BuiltinServer>)> {
        match self.kind {
            Kind::Builtin => {
                let (rt, server) = Runtime::start_builtin(cri::server::Config {
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
                .context("starting the built-in runtime")?;
                ensure!(rt.backend() == Backend::Builtin);
                Ok((rt, Some(server)))
            }
            Kind::Containerd => {
                let out = Command::new("bash")
                    .arg(repo_dir().join("scripts/containerd.sh"))
                    .arg("start")
                    .arg(&self.dir)
                    .stdin(Stdio::null())
                    .output()
                    .context("running scripts/containerd.sh start")?;
                if !out.status.success() {
                    bail!(
                        "containerd did not start: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let rt = Runtime::connect(&format!(
                    "unix://{}",
                    self.dir.join("containerd.sock").display()
                ))?;
                ensure!(rt.backend() == Backend::Remote);
                Ok((rt, None))
            }
        }
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

fn test_pod(node: &Node) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("kpod-{}", node.pod_uid.len())),
            namespace: Some("default".into()),
            uid: Some(node.pod_uid.clone()),
            labels: Some(BTreeMap::from([("app".into(), "kubelet-test".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "sleeper".into(),
                image: Some("busybox".into()),
                command: Some(vec!["sleep".into(), "3600".into()]),
                termination_message_path: Some("/dev/termination-log".into()),
                ..Default::default()
            }],
            restart_policy: Some("Always".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn pod_status(rt: &Runtime, uid: &str) -> Result<PodRuntimeStatus> {
    let sandboxes = rt
        .list_pod_sandbox(Some(pb::PodSandboxFilter {
            label_selector: labels::pod_selector(uid),
            ..Default::default()
        }))
        .await?;
    let mut sb_statuses = Vec::new();
    for s in sandboxes {
        if let Some(st) = rt.pod_sandbox_status(&s.id, false).await?.status {
            sb_statuses.push(st);
        }
    }
    let mut cs = Vec::new();
    for c in rt
        .list_containers(Some(pb::ContainerFilter {
            label_selector: labels::pod_selector(uid),
            ..Default::default()
        }))
        .await?
    {
        if let Some(st) = rt.container_status(&c.id, false).await?.status {
            cs.push(RuntimeContainer::from_cri(&st));
        }
    }
    Ok(PodRuntimeStatus::new(sb_statuses, cs))
}

async fn scenario(rt: &Runtime, node: &Node) -> Result<()> {
    let v = rt.version().await.context("Version")?;
    let want_name = if node.kind == Kind::Builtin {
        "capstan"
    } else {
        "containerd"
    };
    ensure!(
        v.runtime_name == want_name,
        "runtime name {:?}",
        v.runtime_name
    );
    let status = rt.status(false).await.context("Status")?;
    ensure!(
        status
            .status
            .is_some_and(|s| s.conditions.iter().all(|c| c.status)),
        "runtime not ready"
    );
    if node.kind == Kind::Builtin {
        // The in-process runtime is also on its CRI socket.
        let remote = Runtime::connect(&format!("unix://{}", node.dir.join("cri.sock").display()))?;
        let v = remote
            .version()
            .await
            .context("Version over the built-in's socket")?;
        ensure!(v.runtime_name == "capstan");
    }
    let events = rt
        .get_container_events()
        .await
        .context("GetContainerEvents")?;
    if node.kind == Kind::Builtin {
        ensure!(
            events.is_some(),
            "the built-in runtime has container events"
        );
    }
    eprintln!(
        "{:?}: container events offered: {}",
        node.kind,
        events.is_some()
    );
    drop(events);

    let image_ref = rt
        .pull_image(image_spec("busybox"), None, None)
        .await
        .context("PullImage busybox")?;
    ensure!(
        rt.image_status(image_spec("busybox"), false)
            .await?
            .is_some(),
        "ImageStatus after the pull"
    );
    ensure!(!rt.list_images(None).await?.is_empty());
    rt.image_fs_info().await.context("ImageFsInfo")?;

    // The sync loop's first round: nothing exists, so the plan creates a sandbox and starts all.
    let pod = test_pod(node);
    let st = pod_status(rt, &node.pod_uid).await?;
    let p = plan::compute_pod_actions(&pod, &st, &plan::NoProbeResults, &plan::NoBackoff);
    ensure!(
        p.create_sandbox && p.start_containers == vec![0],
        "first plan: {p:?}"
    );

    let sb_opts = config::SandboxOptions {
        pod_logs_dir: node.dir.join("logs"),
        cgroup_parent: node.cgroup_parent.clone(),
        seccomp_profile_root: node.dir.join("seccomp"),
        ..Default::default()
    };
    let sb_config = config::sandbox_config(&pod, p.attempt, &sb_opts);
    std::fs::create_dir_all(&sb_config.log_directory)?;
    let sb = rt
        .run_pod_sandbox(sb_config.clone(), "")
        .await
        .context("RunPodSandbox")?;
    let sbs = rt.pod_sandbox_status(&sb, false).await?.status.unwrap();
    ensure!(sbs.state == pb::PodSandboxState::SandboxReady as i32);
    let ip = sbs
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    let prefix = std::fs::read_to_string(node.dir.join("subnet-prefix"))?;
    ensure!(ip.starts_with(&prefix), "pod IP {ip:?} not in {prefix}0/24");

    let c = &pod.spec.as_ref().unwrap().containers[0];
    std::fs::create_dir_all(Path::new(&sb_config.log_directory).join(&c.name))?;
    let c_config = config::container_config(
        &pod,
        c,
        0,
        &sb_opts,
        &config::ContainerOptions {
            image_ref,
            envs: vec![("FOO".into(), "bar".into())],
            cpu_cfs_quota: true,
            ..Default::default()
        },
    )?;
    let cid = rt
        .create_container(&sb, c_config, sb_config.clone())
        .await
        .context("CreateContainer")?;
    rt.start_container(&cid).await.context("StartContainer")?;

    let listed = rt
        .list_containers(Some(pb::ContainerFilter {
            pod_sandbox_id: sb.clone(),
            ..Default::default()
        }))
        .await?;
    ensure!(
        listed.len() == 1 && listed[0].id == cid,
        "listed {listed:?}"
    );
    ensure!(
        listed[0]
            .labels
            .get(labels::CONTAINER_NAME)
            .map(String::as_str)
            == Some("sleeper")
    );

    // The next sync sees the pod as it should be: nothing to do.
    let st = pod_status(rt, &node.pod_uid).await?;
    ensure!(st.ips == vec![ip.clone()], "pod IPs {:?}", st.ips);
    let running = st
        .find("sleeper")
        .context("the runtime lists the container")?;
    ensure!(running.state() == plan::ContainerState::Running);
    ensure!(
        running.hash == labels::hash_container(c),
        "spec hash survives the runtime"
    );
    let p = plan::compute_pod_actions(&pod, &st, &plan::NoProbeResults, &plan::NoBackoff);
    ensure!(p.is_noop(), "steady plan: {p:?}");

    // Exec probes through ExecSync.
    let t = Duration::from_secs(5);
    let ok = handlers::exec(
        rt,
        &cid,
        vec!["sh".into(), "-c".into(), "test \"$FOO\" = bar".into()],
        t,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ensure!(
        ok == ProbeResult::Success,
        "exec probe `test $FOO = bar`: {ok:?}"
    );
    let bad = handlers::exec(rt, &cid, vec!["false".into()], t)
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(bad == ProbeResult::Failure, "exec probe `false`: {bad:?}");

    let stats = rt.container_stats(&cid).await.context("ContainerStats")?;
    ensure!(stats.is_some());

    // Stop: the container exits and the plan wants it back (restartPolicy Always).
    rt.stop_container(&cid, 2).await.context("StopContainer")?;
    let cs = rt.container_status(&cid, false).await?.status.unwrap();
    ensure!(
        cs.state == pb::ContainerState::ContainerExited as i32,
        "state {}",
        cs.state
    );
    let st = pod_status(rt, &node.pod_uid).await?;
    let p = plan::compute_pod_actions(&pod, &st, &plan::NoProbeResults, &plan::NoBackoff);
    ensure!(
        p.start_containers == vec![0] && !p.kill_pod,
        "plan after the exit: {p:?}"
    );

    rt.stop_pod_sandbox(&sb).await.context("StopPodSandbox")?;
    rt.remove_container(&cid).await.context("RemoveContainer")?;
    rt.remove_pod_sandbox(&sb)
        .await
        .context("RemovePodSandbox")?;
    let left = rt
        .list_pod_sandbox(Some(pb::PodSandboxFilter {
            label_selector: labels::pod_selector(&node.pod_uid),
            ..Default::default()
        }))
        .await?;
    ensure!(left.is_empty(), "sandboxes left: {left:?}");
    let err = rt.container_status(&cid, false).await.unwrap_err();
    ensure!(
        err.code() == tonic::Code::NotFound,
        "removed container: {err}"
    );
    Ok(())
}

async fn cleanup_pods(rt: &Runtime, uid: &str) {
    let Ok(Ok(pods)) = tokio::time::timeout(
        Duration::from_secs(10),
        rt.list_pod_sandbox(Some(pb::PodSandboxFilter {
            label_selector: labels::pod_selector(uid),
            ..Default::default()
        })),
    )
    .await
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
