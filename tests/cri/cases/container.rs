//! Containers: lifecycle, list filters, exit codes, how the image config and the CRI config
//! combine (entrypoint/cmd vs command/args, env, working dir, user), mounts, security context
//! (user, capabilities, privileged, read-only rootfs), resources and their live update, log files
//! and ReopenContainerLog, stop signals and ExecSync (critest's "Container", "Security Context",
//! "Resources" and "Streaming" groups, without the streaming endpoints).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{eventually, Ctx, Verdict, BUSYBOX, CONFIG_IMAGE};
use crate::cri::instance::Kind;

/// A container that runs until stopped and exits 0 on SIGTERM.
pub const SLEEP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";
const WAIT: Duration = Duration::from_secs(20);

fn security(c: &mut pb::ContainerConfig) -> &mut pb::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn resources(c: &mut pb::ContainerConfig) -> &mut pb::LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// Create → Created; Start → Running; Stop (SIGTERM honoured) → Exited 0; Remove → gone.
pub async fn container_lifecycle(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("lifecycle").await?;
    let cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    let id = t.create(&pod, &cfg, cc.clone()).await?;
    let s = t.status(&id).await?;
    ensure!(
        s.state == pb::ContainerState::ContainerCreated as i32,
        "a created container is Created: {s:?}"
    );
    ensure!(s.metadata == cc.metadata, "metadata echoed: {s:?}");
    ensure!(s.labels == cc.labels, "labels echoed: {s:?}");
    ensure!(
        s.created_at > 0 && s.started_at == 0,
        "timestamps of a created container: {s:?}"
    );
    ensure!(!s.image_ref.is_empty(), "image_ref is set: {s:?}");
    t.start(&id).await?;
    let s = t
        .wait_state(&id, pb::ContainerState::ContainerRunning, WAIT)
        .await?;
    ensure!(
        s.started_at >= s.created_at,
        "started_at after created_at: {s:?}"
    );
    let listed = t.my_containers().await?;
    let c = listed
        .iter()
        .find(|c| c.id == id)
        .with_context(|| format!("ListContainers shows {id}: {listed:?}"))?;
    ensure!(c.pod_sandbox_id == pod, "the listed container's pod: {c:?}");
    let started = Instant::now();
    t.rt()
        .stop_container(pb::StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "a container that exits on SIGTERM took {:?} to stop",
        started.elapsed()
    );
    let s = t.status(&id).await?;
    ensure!(
        s.state == pb::ContainerState::ContainerExited as i32 && s.exit_code == 0,
        "a stopped container is Exited with code 0: {s:?}"
    );
    ensure!(
        s.finished_at >= s.started_at,
        "finished_at after started_at: {s:?}"
    );
    t.rt()
        .remove_container(pb::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    match t.status(&id).await {
        Ok(s) => bail!("a removed container still has a status: {s:?}"),
        Err(e) => ensure!(
            e.downcast_ref::<tonic::Status>().map(|s| s.code()) == Some(tonic::Code::NotFound),
            "status of a removed container: want NotFound, got {e:#}"
        ),
    }
    // Remove is idempotent.
    t.rt()
        .remove_container(pb::RemoveContainerRequest { container_id: id })
        .await
        .context("a second RemoveContainer")?;
    Ok(Verdict::Pass)
}

/// ListContainers filters by id, state, pod sandbox id and labels.
pub async fn container_list_filters(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("filters").await?;
    let (other_pod, other_cfg) = t.pod("filters-other").await?;
    let mut a = t.container_config("a", BUSYBOX, &["sh", "-c", SLEEP]);
    a.labels.insert("role".into(), "a".into());
    let a = t.run(&pod, &cfg, a).await?;
    let mut b = t.container_config("b", BUSYBOX, &["true"]);
    b.labels.insert("role".into(), "b".into());
    let b = t.run(&pod, &cfg, b).await?;
    t.wait_state(&b, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    let c = t
        .create(
            &other_pod,
            &other_cfg,
            t.container_config("c", BUSYBOX, &["true"]),
        )
        .await?;
    let mine = t.case_labels();
    let list = |f: pb::ContainerFilter| {
        let mut rt = t.rt();
        async move {
            let mut ids: Vec<String> = rt
                .list_containers(pb::ListContainersRequest { filter: Some(f) })
                .await?
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            anyhow::Ok(ids)
        }
    };
    let state = |s: pb::ContainerState| Some(pb::ContainerStateValue { state: s as i32 });
    let got = list(pb::ContainerFilter {
        id: a.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![a.clone()], "by id: {got:?}");
    let got = list(pb::ContainerFilter {
        state: state(pb::ContainerState::ContainerRunning),
        label_selector: mine.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![a.clone()], "Running: want [{a}], got {got:?}");
    let got = list(pb::ContainerFilter {
        state: state(pb::ContainerState::ContainerExited),
        label_selector: mine.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![b.clone()], "Exited: want [{b}], got {got:?}");
    let got = list(pb::ContainerFilter {
        state: state(pb::ContainerState::ContainerCreated),
        label_selector: mine.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![c.clone()], "Created: want [{c}], got {got:?}");
    let got = list(pb::ContainerFilter {
        pod_sandbox_id: other_pod.clone(),
        ..Default::default()
    })
    .await?;
    ensure!(
        got == vec![c.clone()],
        "by pod {other_pod}: want [{c}], got {got:?}"
    );
    let mut sel = mine.clone();
    sel.insert("role".into(), "b".into());
    let got = list(pb::ContainerFilter {
        label_selector: sel,
        ..Default::default()
    })
    .await?;
    ensure!(got == vec![b.clone()], "role=b: want [{b}], got {got:?}");
    let got = list(pb::ContainerFilter {
        pod_sandbox_id: pod.clone(),
        state: state(pb::ContainerState::ContainerRunning),
        ..Default::default()
    })
    .await?;
    ensure!(
        got == vec![a.clone()],
        "pod and Running: want [{a}], got {got:?}"
    );
    Ok(Verdict::Pass)
}

/// Exit codes and reasons: 0 is Completed, non-zero is Error with the code.
pub async fn container_exit_codes(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("exit").await?;
    for (name, script, code, reason) in [
        ("zero", "exit 0", 0, "Completed"),
        ("one", "exit 1", 1, "Error"),
        ("fortytwo", "exit 42", 42, "Error"),
    ] {
        let id = t
            .run(
                &pod,
                &cfg,
                t.container_config(name, BUSYBOX, &["sh", "-c", script]),
            )
            .await?;
        let s = t
            .wait_state(&id, pb::ContainerState::ContainerExited, WAIT)
            .await?;
        ensure!(
            s.exit_code == code && s.reason == reason,
            "`{script}`: want exit code {code} and reason {reason}, got {} / {:?}",
            s.exit_code,
            s.reason
        );
        ensure!(s.finished_at > 0, "finished_at is set: {s:?}");
    }
    Ok(Verdict::Pass)
}

/// Env from the config is set, next to the image's PATH.
pub async fn container_env(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("env").await?;
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    cc.envs = vec![
        pb::KeyValue {
            key: "CONFORMANCE".into(),
            value: "yes".into(),
        },
        pb::KeyValue {
            key: "WITH_SPACES".into(),
            value: "a b  c".into(),
        },
    ];
    let id = t.run(&pod, &cfg, cc).await?;
    let env = t.sh(&id, "env").await?;
    for want in [
        "CONFORMANCE=yes",
        "WITH_SPACES=a b  c",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        ensure!(
            env.lines().any(|l| l == want),
            "env has no {want:?}: {env:?}"
        );
    }
    Ok(Verdict::Pass)
}

/// Runs `cc` to completion and returns its log file's text (the line payloads).
async fn run_to_log(
    t: &Ctx,
    pod: &str,
    cfg: &pb::PodSandboxConfig,
    cc: pb::ContainerConfig,
) -> Result<String> {
    let path = std::path::Path::new(&cfg.log_directory).join(&cc.log_path);
    let id = t.run(pod, cfg, cc).await?;
    let s = t
        .wait_state(&id, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    ensure!(s.exit_code == 0, "the container failed: {s:?}");
    // The log is complete once the container has exited; give the writer a moment to flush.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(log
        .lines()
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Image Entrypoint/Cmd/Env/WorkingDir/User apply when the config does not override them;
/// `args` replaces Cmd only; `command` replaces Entrypoint and drops Cmd.
pub async fn container_image_entrypoint_and_cmd(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("imagecfg").await?;
    let mut cc = t.container_config("image-defaults", CONFIG_IMAGE, &[]);
    let out = run_to_log(&t, &pod, &cfg, cc.clone()).await?;
    for want in ["configured", "/home/capstan", "FROM_IMAGE=yes"] {
        ensure!(
            out.lines().any(|l| l == want),
            "the image's entrypoint+cmd should print {want:?}: {out:?}"
        );
    }
    ensure!(
        out.contains("uid=1000") && out.contains("gid=1000"),
        "the image's User 1000:1000 applies: {out:?}"
    );
    cc.metadata = Some(pb::ContainerMetadata {
        name: "args-only".into(),
        attempt: 0,
    });
    cc.log_path = "args-only.log".into();
    cc.args = vec!["echo args replace cmd".into()];
    let out = run_to_log(&t, &pod, &cfg, cc.clone()).await?;
    ensure!(
        out.trim() == "args replace cmd",
        "args with the image's entrypoint (sh -c): {out:?}"
    );
    cc.metadata = Some(pb::ContainerMetadata {
        name: "command".into(),
        attempt: 0,
    });
    cc.log_path = "command.log".into();
    cc.command = vec!["echo".into()];
    cc.args = vec![];
    let out = run_to_log(&t, &pod, &cfg, cc.clone()).await?;
    ensure!(
        out.trim().is_empty(),
        "command without args drops the image's Cmd: got {out:?}"
    );
    cc.metadata = Some(pb::ContainerMetadata {
        name: "command-args".into(),
        attempt: 0,
    });
    cc.log_path = "command-args.log".into();
    cc.args = vec!["both".into(), "given".into()];
    let out = run_to_log(&t, &pod, &cfg, cc).await?;
    ensure!(out.trim() == "both given", "command and args: {out:?}");
    Ok(Verdict::Pass)
}

/// The working dir: the image's by default, the config's when set (created when missing).
pub async fn container_working_dir(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("workdir").await?;
    let mut cc = t.container_config("image", CONFIG_IMAGE, &["sh", "-c", SLEEP]);
    let id = t.run(&pod, &cfg, cc.clone()).await?;
    let out = t.sh(&id, "pwd").await?;
    ensure!(
        out.trim() == "/home/capstan",
        "the image's WorkingDir: {out:?}"
    );
    for (name, dir) in [("tmp", "/tmp"), ("created", "/created/by/runtime")] {
        cc.metadata = Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        });
        cc.log_path = format!("{name}.log");
        cc.working_dir = dir.into();
        let id = t.run(&pod, &cfg, cc.clone()).await?;
        let out = t.sh(&id, "pwd").await?;
        ensure!(out.trim() == dir, "working_dir {dir}: pwd says {out:?}");
    }
    Ok(Verdict::Pass)
}

/// Host-path bind mounts, read-write and read-only, and their listing in the status.
pub async fn container_mounts(t: Ctx) -> Result<Verdict> {
    let base = t.inst.dir.join("mounts").join(t.uid());
    let rw = base.join("rw");
    let ro = base.join("ro");
    std::fs::create_dir_all(&rw)?;
    std::fs::create_dir_all(&ro)?;
    std::fs::write(rw.join("hello"), "from the host\n")?;
    std::fs::write(ro.join("hello"), "read only\n")?;
    let (pod, cfg) = t.pod("mounts").await?;
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    cc.mounts = vec![
        pb::Mount {
            container_path: "/mnt/rw".into(),
            host_path: rw.to_string_lossy().into_owned(),
            ..Default::default()
        },
        pb::Mount {
            container_path: "/mnt/ro".into(),
            host_path: ro.to_string_lossy().into_owned(),
            readonly: true,
            ..Default::default()
        },
    ];
    let id = t.run(&pod, &cfg, cc).await?;
    let out = t.sh(&id, "cat /mnt/rw/hello /mnt/ro/hello").await?;
    ensure!(
        out == "from the host\nread only\n",
        "the mounted files: {out:?}"
    );
    t.sh(&id, "echo from the container > /mnt/rw/out").await?;
    let written = std::fs::read_to_string(rw.join("out")).unwrap_or_default();
    ensure!(
        written == "from the container\n",
        "written through the mount: {written:?}"
    );
    let (_, err, code) = t
        .exec(&id, &["sh", "-c", "echo x > /mnt/ro/out"], 20)
        .await?;
    ensure!(
        code != 0 && err.contains("Read-only file system"),
        "writing to a read-only mount must fail with EROFS: exit {code}, stderr {err:?}"
    );
    ensure!(
        !ro.join("out").exists(),
        "nothing was written to the read-only dir"
    );
    let s = t.status(&id).await?;
    for (path, readonly) in [("/mnt/rw", false), ("/mnt/ro", true)] {
        ensure!(
            s.mounts
                .iter()
                .any(|m| m.container_path == path && m.readonly == readonly),
            "ContainerStatus.mounts lists {path} (readonly {readonly}): {:?}",
            s.mounts
        );
    }
    Ok(Verdict::Pass)
}

/// runAsUser/runAsGroup, supplemental groups, runAsUsername (resolved in the image's
/// /etc/passwd, with the groups /etc/group gives that user).
pub async fn container_run_as_user(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("user").await?;
    let mut cc = t.container_config("uid", BUSYBOX, &["sh", "-c", SLEEP]);
    let sc = security(&mut cc);
    sc.run_as_user = Some(pb::Int64Value { value: 1234 });
    sc.run_as_group = Some(pb::Int64Value { value: 5678 });
    sc.supplemental_groups = vec![4000];
    let id = t.run(&pod, &cfg, cc).await?;
    let out = t.sh(&id, "id -u; id -g; id -G").await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines.len() == 3 && lines[0] == "1234" && lines[1] == "5678",
        "uid and gid: {out:?}"
    );
    ensure!(
        lines[2].split_whitespace().any(|g| g == "4000"),
        "supplemental group 4000 in {out:?}"
    );
    let mut cc = t.container_config("username", BUSYBOX, &["sh", "-c", SLEEP]);
    security(&mut cc).run_as_username = "capstan".into();
    let id = t.run(&pod, &cfg, cc).await?;
    let out = t.sh(&id, "id -u; id -g; id -G").await?;
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines.len() == 3 && lines[0] == "1000" && lines[1] == "1000",
        "runAsUsername capstan is 1000:1000: {out:?}"
    );
    ensure!(
        lines[2].split_whitespace().any(|g| g == "2000"),
        "the image's /etc/group puts capstan in group 2000 (extra): {out:?}"
    );
    Ok(Verdict::Pass)
}

async fn cap_eff(t: &Ctx, id: &str) -> Result<u64> {
    let status = t.sh(id, "cat /proc/self/status").await?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line")?
        .trim();
    Ok(u64::from_str_radix(hex, 16)?)
}

const CAP_CHOWN: u64 = 1 << 0;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;

/// Capabilities: the default set has no SYS_ADMIN; add and drop change it.
pub async fn container_capabilities(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("caps").await?;
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("default", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let def = cap_eff(&t, &id).await?;
    ensure!(
        def & CAP_CHOWN != 0 && def & (CAP_NET_ADMIN | CAP_SYS_ADMIN) == 0,
        "the default capabilities have CHOWN but neither NET_ADMIN nor SYS_ADMIN: {def:#x}"
    );
    let mut cc = t.container_config("changed", BUSYBOX, &["sh", "-c", SLEEP]);
    security(&mut cc).capabilities = Some(pb::Capability {
        add_capabilities: vec!["NET_ADMIN".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    let id = t.run(&pod, &cfg, cc).await?;
    let caps = cap_eff(&t, &id).await?;
    ensure!(
        caps & CAP_NET_ADMIN != 0 && caps & CAP_CHOWN == 0,
        "add NET_ADMIN, drop CHOWN: {caps:#x}"
    );
    ensure!(
        caps & !(CAP_NET_ADMIN | CAP_CHOWN) == def & !(CAP_NET_ADMIN | CAP_CHOWN),
        "the other capabilities stay as by default: {caps:#x} vs {def:#x}"
    );
    let (_, err, code) = t.exec(&id, &["chown", "1:1", "/tmp"], 20).await?;
    ensure!(code != 0, "chown without CAP_CHOWN must fail: {err:?}");
    Ok(Verdict::Pass)
}

/// Privileged: all capabilities, and mounting works.
pub async fn container_privileged(t: Ctx) -> Result<Verdict> {
    let mut cfg = t.pod_config("privileged");
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let pod = t.run_pod(&cfg).await?;
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    security(&mut cc).privileged = true;
    let id = t.run(&pod, &cfg, cc).await?;
    let caps = cap_eff(&t, &id).await?;
    ensure!(
        caps & CAP_SYS_ADMIN != 0 && caps & CAP_NET_ADMIN != 0,
        "a privileged container has every capability: {caps:#x}"
    );
    t.sh(
        &id,
        "mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t && umount /mnt/t",
    )
    .await
    .context("mounting a tmpfs in a privileged container")?;
    let id2 = t
        .run(
            &pod,
            &cfg,
            t.container_config("unprivileged", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let (_, _, code) = t
        .exec(
            &id2,
            &["sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs tmpfs /mnt/t"],
            20,
        )
        .await?;
    ensure!(
        code != 0,
        "an unprivileged container must not be able to mount"
    );
    Ok(Verdict::Pass)
}

/// readOnlyRootFilesystem: writes to / fail, writes to a mounted volume work.
pub async fn container_readonly_rootfs(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("rofs").await?;
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    security(&mut cc).readonly_rootfs = true;
    let id = t.run(&pod, &cfg, cc).await?;
    let (_, err, code) = t.exec(&id, &["touch", "/newfile"], 20).await?;
    ensure!(
        code != 0 && err.contains("Read-only file system"),
        "writing to a read-only rootfs must fail with EROFS: exit {code}, stderr {err:?}"
    );
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("rw", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    t.sh(&id, "touch /newfile")
        .await
        .context("a writable rootfs")?;
    Ok(Verdict::Pass)
}

/// The container's cgroup dir for `controller` as the host sees it, from /proc/self/cgroup in the
/// container (v1: `N:controller:/path`, v2: `0::/path`).
async fn cgroup_file(t: &Ctx, id: &str, controller: &str, v1: &str, v2: &str) -> Result<String> {
    let cg = t.sh(id, "cat /proc/self/cgroup").await?;
    let v1_path = cg.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    });
    let file = match v1_path {
        Some(p) => format!("/sys/fs/cgroup/{controller}{p}/{v1}"),
        None => {
            let p = cg
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .context("no cgroup v2 line")?;
            let root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                "/sys/fs/cgroup"
            } else {
                "/sys/fs/cgroup/unified"
            };
            format!("{root}{p}/{v2}")
        }
    };
    Ok(file)
}

async fn cgroup_value(t: &Ctx, id: &str, controller: &str, v1: &str, v2: &str) -> Result<String> {
    let file = cgroup_file(t, id, controller, v1, v2).await?;
    Ok(std::fs::read_to_string(&file)
        .with_context(|| format!("reading {file} on the host"))?
        .trim()
        .to_string())
}

/// Checks memory limit, CPU quota/period and shares in the cgroup (host side, and under the
/// pod's cgroup parent) and, where reported, in ContainerStatus.resources.
async fn check_resources(
    t: &Ctx,
    id: &str,
    parent: &str,
    memory: i64,
    quota: i64,
    shares: i64,
) -> Result<()> {
    let file = cgroup_file(t, id, "memory", "memory.limit_in_bytes", "memory.max").await?;
    ensure!(
        file.contains(parent.trim_start_matches('/')),
        "the container's cgroup {file} is under the pod's cgroup parent {parent}"
    );
    let mem = cgroup_value(t, id, "memory", "memory.limit_in_bytes", "memory.max").await?;
    ensure!(
        mem == memory.to_string(),
        "memory limit in the cgroup: want {memory}, got {mem}"
    );
    let q = cgroup_value(t, id, "cpu", "cpu.cfs_quota_us", "cpu.max").await?;
    ensure!(
        q == quota.to_string() || q == format!("{quota} 100000"),
        "CPU quota in the cgroup: want {quota}, got {q}"
    );
    let s = cgroup_value(t, id, "cpu", "cpu.shares", "cpu.weight").await?;
    if !std::path::Path::new("/sys/fs/cgroup/cpu").exists() {
        // v2 maps shares to a weight; only check it is set.
        ensure!(!s.is_empty(), "cpu.weight is set");
    } else {
        ensure!(
            s == shares.to_string(),
            "CPU shares in the cgroup: want {shares}, got {s}"
        );
    }
    let st = t.status(id).await?;
    match st.resources.and_then(|r| r.linux) {
        Some(r) => ensure!(
            r.memory_limit_in_bytes == memory && r.cpu_quota == quota && r.cpu_shares == shares,
            "ContainerStatus.resources: want memory {memory}, quota {quota}, shares {shares}, got {r:?}"
        ),
        None if t.kind() == Kind::Containerd => t.note(
            "containerd 1.6 leaves ContainerStatus.resources empty (added in 1.7 for in-place resize); checked in the cgroup only",
        ),
        None => bail!("ContainerStatus.resources is empty; the kubelet reads the limits from it"),
    }
    Ok(())
}

/// Memory and CPU limits reach the container's cgroup (under the pod's parent) and its status.
pub async fn container_resources(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("resources").await?;
    let parent = cfg
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    let r = resources(&mut cc);
    r.memory_limit_in_bytes = 64 << 20;
    r.cpu_period = 100_000;
    r.cpu_quota = 50_000;
    r.cpu_shares = 512;
    let id = t.run(&pod, &cfg, cc).await?;
    check_resources(&t, &id, &parent, 64 << 20, 50_000, 512).await?;
    Ok(Verdict::Pass)
}

/// UpdateContainerResources changes the limits of a running container.
pub async fn container_update_resources(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("update").await?;
    let parent = cfg
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let mut cc = t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]);
    let r = resources(&mut cc);
    r.memory_limit_in_bytes = 64 << 20;
    r.cpu_period = 100_000;
    r.cpu_quota = 50_000;
    r.cpu_shares = 512;
    let id = t.run(&pod, &cfg, cc).await?;
    t.rt()
        .update_container_resources(pb::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_period: 100_000,
                cpu_quota: 20_000,
                cpu_shares: 256,
                ..Default::default()
            }),
            windows: None,
            annotations: HashMap::new(),
        })
        .await?;
    check_resources(&t, &id, &parent, 128 << 20, 20_000, 256).await?;
    Ok(Verdict::Pass)
}

/// Checks one CRI log line: `<RFC 3339 timestamp> <stream> <P|F> <payload>`.
fn parse_log_line(l: &str) -> Result<(&str, &str, &str)> {
    let mut p = l.splitn(4, ' ');
    let (ts, stream, tag, payload) = (
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
        p.next().unwrap_or(""),
    );
    ensure!(
        ts.len() >= 20
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && (ts.ends_with('Z') || ts[19..].contains(['+', '-'])),
        "log line {l:?}: the timestamp is not RFC 3339"
    );
    ensure!(
        matches!(stream, "stdout" | "stderr") && matches!(tag, "P" | "F"),
        "log line {l:?}: want `<ts> stdout|stderr P|F <payload>`"
    );
    Ok((stream, tag, payload))
}

/// Log files in the CRI format, at log_directory/log_path, named in the status.
pub async fn container_logs(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("logs").await?;
    let cc = t.container_config(
        "c",
        BUSYBOX,
        &["sh", "-c", "echo hello; echo oops >&2; echo 'two words'"],
    );
    let path = std::path::Path::new(&cfg.log_directory).join(&cc.log_path);
    let id = t.run(&pod, &cfg, cc).await?;
    t.wait_state(&id, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    let log = t.wait_log(&path, "two words", WAIT).await?;
    let lines = log
        .lines()
        .map(parse_log_line)
        .collect::<Result<Vec<_>>>()?;
    let want = [
        ("stdout", "F", "hello"),
        ("stderr", "F", "oops"),
        ("stdout", "F", "two words"),
    ];
    for w in want {
        ensure!(lines.contains(&w), "the log has no line {w:?}: {log:?}");
    }
    ensure!(lines.len() == 3, "three lines, no more: {log:?}");
    let s = t.status(&id).await?;
    ensure!(
        std::path::Path::new(&s.log_path) == path,
        "ContainerStatus.log_path: want {}, got {:?}",
        path.display(),
        s.log_path
    );
    Ok(Verdict::Pass)
}

/// ReopenContainerLog: after the file is moved away, the runtime writes to a new one.
pub async fn container_reopen_log(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("reopen").await?;
    let cc = t.container_config(
        "c",
        BUSYBOX,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
        ],
    );
    let path = std::path::Path::new(&cfg.log_directory).join(&cc.log_path);
    let id = t.run(&pod, &cfg, cc).await?;
    t.wait_log(&path, "tick-2", WAIT).await?;
    let moved = path.with_extension("log.1");
    std::fs::rename(&path, &moved)?;
    t.rt()
        .reopen_container_log(pb::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await?;
    let fresh = t.wait_log(&path, "tick-", WAIT).await?;
    for l in fresh.lines() {
        parse_log_line(l)?;
    }
    let old_len = std::fs::metadata(&moved)?.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        std::fs::metadata(&moved)?.len() == old_len,
        "the moved file keeps growing after ReopenContainerLog"
    );
    Ok(Verdict::Pass)
}

/// StopContainer sends the image's StopSignal (SIGINT for capstan-test/config), not SIGTERM.
pub async fn container_stop_signal(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("stopsignal").await?;
    let mut cc = t.container_config(
        "c",
        CONFIG_IMAGE,
        &[
            "sh",
            "-c",
            "trap 'echo got-INT; exit 3' INT; trap 'echo got-TERM; exit 4' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    cc.working_dir = "/".into();
    let path = std::path::Path::new(&cfg.log_directory).join(&cc.log_path);
    let id = t.run(&pod, &cfg, cc).await?;
    t.wait_log(&path, "ready", WAIT).await?;
    t.rt()
        .stop_container(pb::StopContainerRequest {
            container_id: id.clone(),
            timeout: 20,
        })
        .await?;
    let s = t
        .wait_state(&id, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    ensure!(
        s.exit_code == 3,
        "the container should have got SIGINT (exit 3), it exited {} — log: {:?}",
        s.exit_code,
        std::fs::read_to_string(&path).unwrap_or_default()
    );
    Ok(Verdict::Pass)
}

/// ExecSync returns stdout, stderr and the exit code; it fails on a container that is not running.
pub async fn exec_sync(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("exec").await?;
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let (out, err, code) = t
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 3"], 20)
        .await?;
    ensure!(
        out == "out\n" && err == "err\n" && code == 3,
        "want (\"out\\n\", \"err\\n\", 3), got ({out:?}, {err:?}, {code})"
    );
    let (out, _, code) = t.exec(&id, &["cat", "/etc/hostname"], 0).await?;
    ensure!(
        code == 0 && out.trim() == "exec",
        "no timeout (0): {out:?} {code}"
    );
    let done = t
        .run(&pod, &cfg, t.container_config("done", BUSYBOX, &["true"]))
        .await?;
    t.wait_state(&done, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    if let Ok(r) = t.exec(&done, &["true"], 5).await {
        bail!("ExecSync in an exited container should fail, got {r:?}");
    }
    Ok(Verdict::Pass)
}

/// ExecSync with a timeout returns once the timeout passed, not when the command ends.
pub async fn exec_sync_timeout(t: Ctx) -> Result<Verdict> {
    let (pod, cfg) = t.pod("exectimeout").await?;
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", SLEEP]),
        )
        .await?;
    let start = Instant::now();
    let r = t.exec(&id, &["sleep", "30"], 2).await;
    let took = start.elapsed();
    ensure!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "ExecSync with a 2 s timeout returned after {took:?}: {r:?}"
    );
    match r {
        Err(e) => {
            let code = e.downcast_ref::<tonic::Status>().map(|s| s.code());
            ensure!(
                code == Some(tonic::Code::DeadlineExceeded),
                "a timed-out exec: want DeadlineExceeded (the kubelet's probe looks for it), got {e:#}"
            );
        }
        Ok(r) => bail!("a timed-out exec must fail, got {r:?}"),
    }
    // The container is still fine afterwards.
    let out = eventually(WAIT, "exec after a timeout", || {
        let t = t.clone();
        let id = id.clone();
        async move { Ok(t.sh(&id, "echo alive").await.ok()) }
    })
    .await?;
    ensure!(out.trim() == "alive", "{out:?}");
    Ok(Verdict::Pass)
}
