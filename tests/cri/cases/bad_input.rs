//! Bad input: each case makes one request that must fail (or a container that must fail), checks
//! that the error comes back through CRI, then removes its pods and checks that the instance left
//! nothing behind (mounts under its directory, network namespaces, ports on its bridge,
//! processes). These cases run alone on the shared instance (`Mode::Exclusive`) so that other
//! cases' pods do not blur the before/after comparison.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{eventually, expect_err, spec, Ctx, NodeSnapshot, Verdict, BUSYBOX};

const WAIT: Duration = Duration::from_secs(20);

/// Removes the case's pods and waits until the node looks as it did in `before`.
async fn assert_clean(t: &Ctx, before: &NodeSnapshot) -> Result<()> {
    t.cleanup().await?;
    let pods = t.my_pods().await?;
    ensure!(pods.is_empty(), "pods left after the case: {pods:?}");
    let containers = t.my_containers().await?;
    ensure!(
        containers.is_empty(),
        "containers left after the case: {containers:?}"
    );
    let mut last = Vec::new();
    let r = eventually(Duration::from_secs(15), "a clean node", || {
        let left = before.leftovers(&t.snapshot());
        last = left.clone();
        async move { Ok(left.is_empty().then_some(())) }
    })
    .await;
    if r.is_err() {
        bail!("left behind: {last:#?}");
    }
    Ok(())
}

async fn pull_fails(t: &Ctx, image: &str, auth: Option<pb::AuthConfig>) -> Result<tonic::Status> {
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        t.img().pull_image(pb::PullImageRequest {
            image: Some(spec(image)),
            auth,
            sandbox_config: None,
        }),
    )
    .await;
    match r {
        Err(_) => bail!("pulling {image} neither failed nor succeeded within 60 s"),
        Ok(Ok(r)) => bail!("pulling {image} should fail, got {:?}", r.into_inner()),
        Ok(Err(s)) => {
            ensure!(
                !s.message().is_empty(),
                "the error says what went wrong: {s:?}"
            );
            Ok(s)
        }
    }
}

/// An image the registry does not have: the pull fails, and so does a container that names it.
pub async fn bad_missing_image(t: Ctx) -> Result<Verdict> {
    let before = t.snapshot();
    let missing = "127.0.0.1:5000/capstan-test/no-such-image:1.0";
    pull_fails(&t, missing, None).await?;
    let (pod, cfg) = t.pod("missing").await?;
    let r = t
        .rt()
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(t.container_config("c", missing, &["true"])),
            sandbox_config: Some(cfg),
        })
        .await;
    if let Ok(r) = r {
        bail!(
            "creating a container from a missing image should fail, got {:?}",
            r.into_inner()
        );
    }
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// A digest the registry does not serve.
pub async fn bad_wrong_digest(t: Ctx) -> Result<Verdict> {
    let before = t.snapshot();
    let wrong = format!("127.0.0.1:5000/library/busybox@sha256:{}", "0".repeat(64));
    pull_fails(&t, &wrong, None).await?;
    let malformed = "127.0.0.1:5000/library/busybox@sha256:abc";
    pull_fails(&t, malformed, None).await?;
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// A registry nobody listens for (a closed loopback port): a prompt error, not a hang.
pub async fn bad_unreachable_registry(t: Ctx) -> Result<Verdict> {
    let before = t.snapshot();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let start = std::time::Instant::now();
    pull_fails(
        &t,
        &format!("127.0.0.1:{port}/library/busybox:latest"),
        None,
    )
    .await?;
    ensure!(
        start.elapsed() < Duration::from_secs(30),
        "a refused connection should fail fast, took {:?}",
        start.elapsed()
    );
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// Wrong credentials for the basic-auth registry.
pub async fn bad_auth_failure(t: Ctx) -> Result<Verdict> {
    let before = t.snapshot();
    let image = "127.0.0.1:5001/private/busybox:latest";
    let _ = t
        .img()
        .remove_image(pb::RemoveImageRequest {
            image: Some(spec(image)),
        })
        .await;
    pull_fails(
        &t,
        image,
        Some(pb::AuthConfig {
            username: "capstan".into(),
            password: "wrong".into(),
            ..Default::default()
        }),
    )
    .await?;
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// Container configs the runtime must refuse: no metadata, no image, an unknown pod.
pub async fn bad_invalid_container_config(t: Ctx) -> Result<Verdict> {
    t.ensure_image(BUSYBOX).await?;
    let before = t.snapshot();
    let (pod, cfg) = t.pod("invalid").await?;
    let good = t.container_config("c", BUSYBOX, &["true"]);
    let mut no_meta = good.clone();
    no_meta.metadata = None;
    let mut no_image = good.clone();
    no_image.image = None;
    let mut empty_image = good.clone();
    empty_image.image = Some(spec(""));
    for (what, pod_id, config) in [
        ("no metadata", pod.clone(), Some(no_meta)),
        ("no image", pod.clone(), Some(no_image)),
        ("an empty image name", pod.clone(), Some(empty_image)),
        ("no config", pod.clone(), None),
        (
            "an unknown pod",
            "no-such-pod-sandbox".to_string(),
            Some(good.clone()),
        ),
    ] {
        let r = t
            .rt()
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config,
                sandbox_config: Some(cfg.clone()),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(anyhow::Error::from);
        expect_err(&format!("CreateContainer with {what}"), r)?;
    }
    let r = t
        .rt()
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pb::PodSandboxConfig {
                metadata: None,
                ..t.pod_config("nometa")
            }),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner())
        .map_err(anyhow::Error::from);
    expect_err("RunPodSandbox without metadata", r)?;
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// A command the image does not have fails at create or at start (runc fails at start), and
/// the container is not left running.
pub async fn bad_missing_command(t: Ctx) -> Result<Verdict> {
    t.ensure_image(BUSYBOX).await?;
    let before = t.snapshot();
    let (pod, cfg) = t.pod("nocmd").await?;
    match t
        .create(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["/no/such/binary"]),
        )
        .await
    {
        Err(_) => t.note("refused at CreateContainer"),
        Ok(id) => {
            if t.start(&id).await.is_ok() {
                bail!("StartContainer of a missing command should fail");
            }
            let s = t.status(&id).await?;
            ensure!(
                s.state != pb::ContainerState::ContainerRunning as i32,
                "the container must not be running: {s:?}"
            );
        }
    }
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// Containers that exit at once report their exit code; exec into them fails; nothing lingers.
pub async fn bad_exits_at_once(t: Ctx) -> Result<Verdict> {
    t.ensure_image(BUSYBOX).await?;
    let before = t.snapshot();
    let (pod, cfg) = t.pod("quick").await?;
    for (name, cmd, code) in [("true", "true", 0), ("false", "false", 1)] {
        let id = t
            .run(&pod, &cfg, t.container_config(name, BUSYBOX, &[cmd]))
            .await?;
        let s = t
            .wait_state(&id, pb::ContainerState::ContainerExited, WAIT)
            .await?;
        ensure!(
            s.exit_code == code,
            "`{cmd}` exit code: want {code}, got {s:?}"
        );
        if t.exec(&id, &["true"], 5).await.is_ok() {
            bail!("ExecSync into an exited container should fail");
        }
    }
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}

/// On an instance whose CNI ADD fails (see `Network::FailingAdd`: the bridge plugin succeeds, the
/// next one fails), RunPodSandbox fails with the plugin's error, no Ready pod is left, and
/// after Stop/Remove of whatever is listed, nothing is left on the node.
pub async fn bad_cni_add_failure(t: Ctx) -> Result<Verdict> {
    let before = t.snapshot();
    let cfg = t.pod_config("cni-fail");
    let r = t.run_pod(&cfg).await;
    let status = expect_err("RunPodSandbox with a failing CNI ADD", r)?;
    ensure!(
        status.message().contains("capstan_no_such_sysctl"),
        "the error passes on the plugin's (it names the sysctl): {status:?}"
    );
    // containerd 1.6 keeps the failed sandbox, NotReady, for the kubelet's garbage collector to
    // stop and remove; that is within the API (the kubelet treats a NotReady sandbox as dead).
    // Whatever is listed must be NotReady and go away through Stop/Remove without leftovers.
    for p in t.my_pods().await? {
        ensure!(
            p.state == pb::PodSandboxState::SandboxNotready as i32,
            "a sandbox whose CNI ADD failed must not be Ready: {p:?}"
        );
        t.note("the failed sandbox stays listed as NotReady until StopPodSandbox/RemovePodSandbox");
        t.rt()
            .stop_pod_sandbox(pb::StopPodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await?;
        t.rt()
            .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await?;
    }
    assert_clean(&t, &before).await?;
    Ok(Verdict::Pass)
}
