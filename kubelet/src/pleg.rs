//! The pod lifecycle event generator: tells pod workers that something changed in the runtime.
//! Event-driven from the runtime's GetContainerEvents stream (upstream's evented PLEG) with a
//! relist as the safety net: every second when the runtime has no event stream (a remote runtime
//! such as containerd 1.6), every ten seconds when it has. A relist compares each container's
//! state with the previous relist and reports the pods whose containers changed. Its health
//! (the age of the last relist) feeds node readiness. Each relist records upstream's
//! `kubelet_pleg_relist_{duration,interval}_seconds`, `kubelet_pleg_last_seen_seconds`,
//! `kubelet_running_pods` (ready sandboxes) and `kubelet_running_containers` by state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::plan::labels;
use crate::runtime::Runtime;
use cri::pb;

/// Relist period without an event stream (upstream's generic PLEG period).
pub const RELIST_WITHOUT_EVENTS: Duration = Duration::from_secs(1);
/// Relist period alongside the event stream.
pub const RELIST_WITH_EVENTS: Duration = Duration::from_secs(10);
/// A relist older than this makes the PLEG unhealthy (upstream: 3 minutes).
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(180);

/// Shared view of the PLEG's health.
#[derive(Clone)]
pub struct PlegHealth(Arc<Mutex<Instant>>);

impl PlegHealth {
    pub fn healthy(&self) -> bool {
        self.0.lock().elapsed() < UNHEALTHY_AFTER
    }
}

/// Starts the PLEG; pod UIDs that need a sync arrive on the returned channel.
pub fn start(runtime: Runtime) -> (mpsc::UnboundedReceiver<String>, PlegHealth) {
    let (tx, rx) = mpsc::unbounded_channel();
    let health = PlegHealth(Arc::new(Mutex::new(Instant::now())));
    let h = health.clone();
    tokio::spawn(async move {
        let events = runtime.get_container_events().await.ok().flatten();
        let evented = events.is_some();
        if let Some(mut stream) = events {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(Ok(ev)) = stream.next().await {
                    if let Some(uid) = event_pod_uid(&ev) {
                        let _ = tx.send(uid);
                    }
                }
            });
        }
        let period = if evented {
            RELIST_WITH_EVENTS
        } else {
            RELIST_WITHOUT_EVENTS
        };
        let mut last: HashMap<String, (String, i32)> = HashMap::new();
        let m = crate::metrics::metrics();
        let mut last_relist: Option<Instant> = None;
        loop {
            let started = Instant::now();
            if let Some(prev) = last_relist {
                m.pleg_relist_interval
                    .observe_duration(started.duration_since(prev));
            }
            last_relist = Some(started);
            if let Ok(sandboxes) = runtime.list_pod_sandbox(None).await {
                let ready = sandboxes
                    .iter()
                    .filter(|s| s.state == pb::PodSandboxState::SandboxReady as i32)
                    .count();
                m.running_pods.set(ready as i64);
            }
            if let Ok(containers) = runtime.list_containers(None).await {
                record_container_states(&containers);
                let mut now = HashMap::new();
                for c in containers {
                    let uid = c.labels.get(labels::POD_UID).cloned().unwrap_or_default();
                    if uid.is_empty() {
                        continue;
                    }
                    if last.get(&c.id) != Some(&(uid.clone(), c.state)) {
                        let _ = tx.send(uid.clone());
                    }
                    now.insert(c.id, (uid, c.state));
                }
                for (id, (uid, _)) in &last {
                    if !now.contains_key(id) {
                        let _ = tx.send(uid.clone());
                    }
                }
                last = now;
                *h.0.lock() = Instant::now();
                m.pleg_relist_duration.observe_duration(started.elapsed());
                m.pleg_last_seen.set(chrono::Utc::now().timestamp());
            }
            tokio::time::sleep(period).await;
        }
    });
    (rx, health)
}

/// `kubelet_running_containers{container_state}`: the relisted containers by state, with
/// upstream's state names.
fn record_container_states(containers: &[pb::Container]) {
    let mut counts = [0i64; 4];
    for c in containers {
        let i = match pb::ContainerState::try_from(c.state) {
            Ok(pb::ContainerState::ContainerCreated) => 0,
            Ok(pb::ContainerState::ContainerRunning) => 1,
            Ok(pb::ContainerState::ContainerExited) => 2,
            _ => 3,
        };
        counts[i] += 1;
    }
    let family = &crate::metrics::metrics().running_containers;
    for (state, n) in ["created", "running", "exited", "unknown"]
        .iter()
        .zip(counts)
    {
        family.with(state).set(n);
    }
}

/// The pod a container event is about, from the labels the kubelet put on it.
fn event_pod_uid(ev: &pb::ContainerEventResponse) -> Option<String> {
    ev.containers_statuses
        .iter()
        .find_map(|s| s.labels.get(labels::POD_UID).cloned())
        .or_else(|| {
            ev.pod_sandbox_status
                .as_ref()
                .and_then(|s| s.labels.get(labels::POD_UID).cloned())
        })
}
