//! Stats: ContainerStats, ListContainerStats and PodSandboxStats / ListPodSandboxStats read the
//! cgroup counters of running containers (critest's "Container Stats" and the pod stats the
//! kubelet's CRI stats provider uses).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{eventually, Ctx, Verdict, BUSYBOX};

/// Burns a little CPU and holds a little memory, so the counters are non-zero.
const BUSY: &str =
    "trap 'exit 0' TERM; x=$(head -c 2000000 /dev/zero | tr '\\0' a); i=0; while true; do i=$((i+1)); [ $((i % 20000)) = 0 ] && sleep 0.2; done";

fn check(s: &pb::ContainerStats, id: &str) -> Result<()> {
    let a = s.attributes.as_ref().context("no attributes")?;
    ensure!(a.id == id, "attributes.id: want {id}, got {a:?}");
    ensure!(
        a.metadata.as_ref().is_some_and(|m| m.name == "busy"),
        "attributes.metadata: {a:?}"
    );
    let cpu = s.cpu.as_ref().context("no cpu stats")?;
    ensure!(cpu.timestamp > 0, "cpu.timestamp: {cpu:?}");
    ensure!(
        cpu.usage_core_nano_seconds
            .as_ref()
            .is_some_and(|u| u.value > 0),
        "cpu.usage_core_nano_seconds: {cpu:?}"
    );
    let mem = s.memory.as_ref().context("no memory stats")?;
    ensure!(
        mem.working_set_bytes.as_ref().is_some_and(|u| u.value > 0),
        "memory.working_set_bytes: {mem:?}"
    );
    Ok(())
}

async fn busy(t: &Ctx, name: &str) -> Result<(String, String)> {
    let (pod, cfg) = t.pod(name).await?;
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("busy", BUSYBOX, &["sh", "-c", BUSY]),
        )
        .await?;
    Ok((pod, id))
}

/// ContainerStats of a running container: CPU and memory usage.
pub async fn container_stats(t: Ctx) -> Result<Verdict> {
    let (_, id) = busy(&t, "stats").await?;
    eventually(Duration::from_secs(20), "non-zero container stats", || {
        let mut rt = t.rt();
        let id = id.clone();
        async move {
            let s = rt
                .container_stats(pb::ContainerStatsRequest {
                    container_id: id.clone(),
                })
                .await?
                .into_inner()
                .stats
                .context("no stats")?;
            check(&s, &id)?;
            Ok(Some(()))
        }
    })
    .await?;
    Ok(Verdict::Pass)
}

/// ListContainerStats filtered by pod and labels returns the container's stats.
pub async fn list_container_stats(t: Ctx) -> Result<Verdict> {
    let (pod, id) = busy(&t, "liststats").await?;
    eventually(
        Duration::from_secs(20),
        "the container in ListContainerStats",
        || {
            let mut rt = t.rt();
            let (pod, id, labels) = (pod.clone(), id.clone(), t.case_labels());
            async move {
                let stats = rt
                    .list_container_stats(pb::ListContainerStatsRequest {
                        filter: Some(pb::ContainerStatsFilter {
                            id: String::new(),
                            pod_sandbox_id: pod,
                            label_selector: labels,
                        }),
                    })
                    .await?
                    .into_inner()
                    .stats;
                ensure!(
                    stats.len() == 1,
                    "want one container's stats, got {stats:?}"
                );
                check(&stats[0], &id)?;
                Ok(Some(()))
            }
        },
    )
    .await?;
    Ok(Verdict::Pass)
}

/// PodSandboxStats and ListPodSandboxStats: the pod's CPU and memory and its containers.
pub async fn pod_sandbox_stats(t: Ctx) -> Result<Verdict> {
    let (pod, id) = busy(&t, "podstats").await?;
    eventually(
        Duration::from_secs(20),
        "PodSandboxStats with CPU, memory and the container",
        || {
            let mut rt = t.rt();
            let (pod, id, labels) = (pod.clone(), id.clone(), t.case_labels());
            async move {
                let s = rt
                    .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                        pod_sandbox_id: pod.clone(),
                    })
                    .await?
                    .into_inner()
                    .stats
                    .context("no stats")?;
                let a = s.attributes.as_ref().context("no attributes")?;
                ensure!(a.id == pod, "attributes.id: {a:?}");
                let l = s.linux.as_ref().context("no linux stats")?;
                ensure!(
                    l.cpu
                        .as_ref()
                        .and_then(|c| c.usage_core_nano_seconds.as_ref())
                        .is_some_and(|u| u.value > 0),
                    "pod cpu: {l:?}"
                );
                ensure!(
                    l.memory
                        .as_ref()
                        .and_then(|m| m.working_set_bytes.as_ref())
                        .is_some_and(|u| u.value > 0),
                    "pod memory: {l:?}"
                );
                let c = l
                    .containers
                    .iter()
                    .find(|c| c.attributes.as_ref().is_some_and(|a| a.id == id))
                    .with_context(|| format!("the pod's stats lack container {id}: {l:?}"))?;
                check(c, &id)?;
                let listed = rt
                    .list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest {
                        filter: Some(pb::PodSandboxStatsFilter {
                            id: String::new(),
                            label_selector: labels,
                        }),
                    })
                    .await?
                    .into_inner()
                    .stats;
                ensure!(
                    listed.len() == 1 && listed[0].attributes.as_ref().is_some_and(|a| a.id == pod),
                    "ListPodSandboxStats by the case label: {listed:?}"
                );
                Ok(Some(()))
            }
        },
    )
    .await?;
    Ok(Verdict::Pass)
}
