//! GetContainerEvents: the stream the kubelet's evented PLEG consumes. Debian's containerd 1.6
//! does not implement it (it arrived in containerd 1.7), so there the case only checks that it
//! answers Unimplemented and is reported as not applicable.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use futures::StreamExt;
use k8s_cri::v1 as pb;

use crate::cri::harness::{Ctx, Verdict, BUSYBOX};
use crate::cri::instance::Kind;

/// Created, started, stopped and deleted events arrive, in order, for one container.
pub async fn container_events(t: Ctx) -> Result<Verdict> {
    let stream = t.rt().get_container_events(pb::GetEventsRequest {}).await;
    let mut stream = match stream {
        Err(s) if t.kind() == Kind::Containerd && s.code() == tonic::Code::Unimplemented => {
            return Ok(Verdict::NotApplicable(
                "containerd 1.6 does not implement GetContainerEvents (added in 1.7); it answered Unimplemented".into(),
            ))
        }
        Err(s) => bail!("GetContainerEvents: {s}"),
        Ok(r) => r.into_inner(),
    };
    let (pod, cfg) = t.pod("events").await?;
    let id = t
        .run(
            &pod,
            &cfg,
            t.container_config("c", BUSYBOX, &["sh", "-c", super::container::SLEEP]),
        )
        .await?;
    t.rt()
        .stop_container(pb::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await?;
    t.rt()
        .remove_container(pb::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    use pb::ContainerEventType as E;
    let want = [
        E::ContainerCreatedEvent,
        E::ContainerStartedEvent,
        E::ContainerStoppedEvent,
        E::ContainerDeletedEvent,
    ];
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < want.len() {
        let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(s))) => bail!("the event stream failed: {s}"),
            Ok(None) => bail!("the event stream ended; seen {seen:?}"),
            Err(_) => bail!("timed out waiting for events; seen {seen:?}, want {want:?}"),
        };
        if ev.container_id != id {
            continue;
        }
        ensure!(ev.created_at > 0, "event without a timestamp: {ev:?}");
        if ev.container_event_type != E::ContainerDeletedEvent as i32 {
            ensure!(
                ev.pod_sandbox_status.as_ref().is_some_and(|p| p.id == pod),
                "the event carries its pod's status: {ev:?}"
            );
        }
        seen.push(E::try_from(ev.container_event_type)?);
    }
    ensure!(seen == want, "events: want {want:?}, got {seen:?}");
    Ok(Verdict::Pass)
}
