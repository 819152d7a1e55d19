//! Restart recovery, on an instance of its own: ten pods run, the runtime is killed with
//! SIGKILL, one container exits (code 7) while it is down, the runtime comes back: the other
//! nine still run and their logs go on, the exited one is reported with its code, and exec and
//! stop work on the survivors. containerd passes this through its shims; Capstan's per-pod
//! supervisors must do the same.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};
use k8s_cri::v1 as pb;

use crate::cri::harness::{Ctx, Verdict, BUSYBOX};

const PODS: usize = 10;
const WAIT: Duration = Duration::from_secs(30);

pub async fn restart_recovery(t: Ctx) -> Result<Verdict> {
    let trigger = t.inst.dir.join("mounts").join(t.uid());
    std::fs::create_dir_all(&trigger)?;
    let mut pods = Vec::new();
    for i in 0..PODS {
        let (pod, cfg) = t.pod(&format!("pod{i}")).await?;
        let script = if i == 0 {
            "i=0; while [ ! -e /trigger/exit ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done; exit 7"
        } else {
            "trap 'exit 0' TERM; i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.2; done"
        };
        let mut cc = t.container_config("ticker", BUSYBOX, &["sh", "-c", script]);
        cc.mounts = vec![pb::Mount {
            container_path: "/trigger".into(),
            host_path: trigger.to_string_lossy().into_owned(),
            readonly: true,
            ..Default::default()
        }];
        let log = PathBuf::from(&cfg.log_directory).join(&cc.log_path);
        let id = t.run(&pod, &cfg, cc).await?;
        pods.push((pod, id, log));
    }
    for (_, id, log) in &pods {
        t.wait_state(id, pb::ContainerState::ContainerRunning, WAIT)
            .await?;
        t.wait_log(log, "tick-1", WAIT).await?;
    }
    t.inst.kill9();
    std::fs::write(trigger.join("exit"), "")?;
    let sizes: Vec<u64> = pods
        .iter()
        .map(|(_, _, log)| std::fs::metadata(log).map(|m| m.len()).unwrap_or(0))
        .collect();
    // Long enough for the first container to notice the trigger and exit while we are down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    t.inst.restart().await?;
    let s = t
        .wait_state(&pods[0].1, pb::ContainerState::ContainerExited, WAIT)
        .await?;
    ensure!(
        s.exit_code == 7,
        "the container that exited while the runtime was down: want exit code 7, got {s:?}"
    );
    for (i, (_, id, log)) in pods.iter().enumerate().skip(1) {
        let s = t.status(id).await?;
        ensure!(
            s.state == pb::ContainerState::ContainerRunning as i32,
            "pod{i}'s container is no longer running after the restart: {s:?}"
        );
        let grew = crate::cri::harness::eventually(WAIT, "the log to continue", || {
            let log = log.clone();
            let before = sizes[i];
            async move {
                let now = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
                Ok((now > before + 64).then_some(()))
            }
        })
        .await;
        ensure!(
            grew.is_ok(),
            "pod{i}'s log {} stopped growing after the restart",
            log.display()
        );
    }
    let out = t.sh(&pods[1].1, "echo still-here").await?;
    ensure!(
        out.trim() == "still-here",
        "exec after the restart: {out:?}"
    );
    t.rt()
        .stop_container(pb::StopContainerRequest {
            container_id: pods[1].1.clone(),
            timeout: 10,
        })
        .await?;
    let s = t.status(&pods[1].1).await?;
    ensure!(
        s.state == pb::ContainerState::ContainerExited as i32,
        "stop after the restart: {s:?}"
    );
    Ok(Verdict::Pass)
}
