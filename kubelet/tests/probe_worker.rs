//! The probe workers' semantics with a fake prober and tokio's paused clock: initial delay,
//! period, failure and success thresholds, startup gating liveness and readiness, holding after
//! a liveness failure until the container is replaced, terminating pods.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kubelet::plan::ProbeResults;
use kubelet::probe::{
    ContainerProbeState, PodProbeState, ProbeContainerState, ProbeKind, ProbeManager, ProbeResult,
    ProbeUpdate, Prober,
};
use tokio::sync::mpsc::UnboundedReceiver;

/// Answers every probe of a kind with what the test set, and counts the calls.
#[derive(Default)]
struct Fake {
    answers: Mutex<Vec<(ProbeKind, ProbeResult)>>,
    calls: AtomicUsize,
}

impl Fake {
    fn answer(&self, kind: ProbeKind, r: ProbeResult) {
        let mut a = self.answers.lock().unwrap();
        a.retain(|(k, _)| *k != kind);
        a.push((kind, r));
    }
}

impl Prober for Fake {
    fn probe<'a>(
        &'a self,
        kind: ProbeKind,
        _: &'a Probe,
        _: &'a Pod,
        _: &'a Container,
        _: &'a str,
        _: &'a str,
    ) -> BoxFuture<'a, Result<ProbeResult, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = self
            .answers
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| *r)
            .unwrap_or(ProbeResult::Success);
        async move { Ok(r) }.boxed()
    }
}

fn probe(period: i32, delay: i32, success: i32, failure: i32) -> Probe {
    Probe {
        period_seconds: Some(period),
        initial_delay_seconds: Some(delay),
        success_threshold: Some(success),
        failure_threshold: Some(failure),
        ..Default::default()
    }
}

fn pod(c: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some("uid1".into()),
            name: Some("p".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![c],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn running(id: &str) -> PodProbeState {
    PodProbeState {
        pod_ip: "127.0.0.1".into(),
        containers: vec![ContainerProbeState {
            name: "c".into(),
            id: id.into(),
            state: ProbeContainerState::Running {
                started_at: tokio::time::Instant::now(),
            },
        }],
        ..Default::default()
    }
}

/// Lets the workers run without moving the clock.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn drain(rx: &mut UnboundedReceiver<ProbeUpdate>) -> Vec<(ProbeKind, ProbeResult, String)> {
    let mut out = Vec::new();
    while let Ok(u) = rx.try_recv() {
        out.push((u.kind, u.result, u.container_id));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_threshold_and_hold() {
    let fake = Arc::new(Fake::default());
    let (m, mut rx) = ProbeManager::new(fake.clone());
    let c = Container {
        name: "c".into(),
        liveness_probe: Some(probe(10, 5, 1, 3)),
        ..Default::default()
    };
    m.add_pod(&pod(c));
    assert_eq!(m.worker_count("uid1"), 1);
    m.update_pod("uid1", running("c1"));
    settle().await;
    // A new container starts from Success.
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Liveness, ProbeResult::Success, "c1".into())]
    );
    assert_eq!(m.results().liveness("c1"), Some(ProbeResult::Success));

    fake.answer(ProbeKind::Liveness, ProbeResult::Failure);
    // Ticks at 10 s and 20 s fail below the threshold: no change yet.
    tokio::time::sleep(Duration::from_secs(25)).await;
    settle().await;
    assert!(drain(&mut rx).is_empty());
    assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    // The third failure at 30 s flips it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Liveness, ProbeResult::Failure, "c1".into())]
    );
    assert_eq!(m.results().liveness("c1"), Some(ProbeResult::Failure));
    // On hold: no more probing of this container.
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    // The replacement container is probed again, from Success.
    fake.answer(ProbeKind::Liveness, ProbeResult::Success);
    m.update_pod("uid1", running("c2"));
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Liveness, ProbeResult::Success, "c2".into())]
    );
    assert_eq!(
        m.results().liveness("c1"),
        None,
        "the old container's result is gone"
    );
    tokio::time::sleep(Duration::from_secs(21)).await;
    settle().await;
    assert!(fake.calls.load(Ordering::SeqCst) >= 4);

    m.remove_pod("uid1");
    assert_eq!(m.worker_count("uid1"), 0);
    assert_eq!(m.results().liveness("c2"), None);
}

#[tokio::test(start_paused = true)]
async fn readiness_success_threshold_and_initial_delay() {
    let fake = Arc::new(Fake::default());
    let (m, mut rx) = ProbeManager::new(fake.clone());
    let c = Container {
        name: "c".into(),
        readiness_probe: Some(probe(1, 3, 2, 1)),
        ..Default::default()
    };
    let p = pod(c.clone());
    m.add_pod(&p);
    m.update_pod("uid1", running("c1"));
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Readiness, ProbeResult::Failure, "c1".into())]
    );
    assert!(!m.is_ready(&c, "c1"));
    // Nothing is probed during the initial delay of 3 s.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    settle().await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    // Probes at 3 s and 4 s: two successes make it ready.
    tokio::time::sleep(Duration::from_millis(600)).await;
    settle().await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(
        drain(&mut rx).is_empty(),
        "one success is below the threshold of 2"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Readiness, ProbeResult::Success, "c1".into())]
    );
    assert!(m.is_ready(&c, "c1"));
    // One failure (threshold 1) makes it unready; readiness keeps probing.
    fake.answer(ProbeKind::Readiness, ProbeResult::Failure);
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Readiness, ProbeResult::Failure, "c1".into())]
    );
    fake.answer(ProbeKind::Readiness, ProbeResult::Success);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        drain(&mut rx),
        vec![(ProbeKind::Readiness, ProbeResult::Success, "c1".into())]
    );
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    let fake = Arc::new(Fake::default());
    let (m, mut rx) = ProbeManager::new(fake.clone());
    let c = Container {
        name: "c".into(),
        startup_probe: Some(probe(1, 0, 1, 30)),
        liveness_probe: Some(probe(1, 0, 1, 1)),
        readiness_probe: Some(probe(1, 0, 1, 1)),
        ..Default::default()
    };
    m.add_pod(&pod(c.clone()));
    fake.answer(ProbeKind::Startup, ProbeResult::Failure);
    fake.answer(ProbeKind::Liveness, ProbeResult::Failure);
    m.update_pod("uid1", running("c1"));
    settle().await;
    let initial = drain(&mut rx);
    assert!(
        initial.contains(&(ProbeKind::Startup, ProbeResult::Unknown, "c1".into())),
        "{initial:?}"
    );
    // While the startup probe fails (below its threshold of 30), liveness is not run: its
    // failure answer would otherwise kill the container.
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle().await;
    assert!(drain(&mut rx).is_empty());
    assert!(!m.is_started(&c, "c1"));
    assert_eq!(m.results().liveness("c1"), Some(ProbeResult::Success));
    // Startup succeeds: from then on liveness and readiness run (and startup stops).
    fake.answer(ProbeKind::Startup, ProbeResult::Success);
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle().await;
    let got = drain(&mut rx);
    assert!(
        got.contains(&(ProbeKind::Startup, ProbeResult::Success, "c1".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(ProbeKind::Liveness, ProbeResult::Failure, "c1".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&(ProbeKind::Readiness, ProbeResult::Success, "c1".into())),
        "{got:?}"
    );
    assert!(m.is_started(&c, "c1"));
}

#[tokio::test(start_paused = true)]
async fn terminating_pods_and_exited_containers() {
    let fake = Arc::new(Fake::default());
    let (m, mut rx) = ProbeManager::new(fake.clone());
    let c = Container {
        name: "c".into(),
        liveness_probe: Some(probe(1, 0, 1, 1)),
        readiness_probe: Some(probe(1, 0, 1, 1)),
        ..Default::default()
    };
    m.add_pod(&pod(c));
    m.update_pod("uid1", running("c1"));
    settle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    drain(&mut rx);
    // The container exits: readiness reads Failure.
    let mut st = running("c1");
    st.containers[0].state = ProbeContainerState::Terminated;
    m.update_pod("uid1", st);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let got = drain(&mut rx);
    assert!(
        got.contains(&(ProbeKind::Readiness, ProbeResult::Failure, "c1".into())),
        "{got:?}"
    );
    // Terminating: liveness reads Success and its worker stops; readiness keeps going.
    let mut st = running("c2");
    st.terminating = true;
    m.update_pod("uid1", st);
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle().await;
    assert_eq!(m.results().liveness("c2"), Some(ProbeResult::Success));
    assert_eq!(m.worker_count("uid1"), 1);
}

/// Every failed probe is an `Unhealthy` Warning event about the container (upstream's prober
/// records one per failure, below the threshold too); successes record nothing.
#[tokio::test(start_paused = true)]
async fn failed_probes_record_unhealthy_events() {
    let fake = Arc::new(Fake::default());
    let (tx, mut events) = tokio::sync::mpsc::channel(16);
    let (m, _rx) =
        ProbeManager::with_events(fake.clone(), kubelet::events::EventRecorder::to_channel(tx));
    let mut p = probe(10, 0, 1, 3);
    p.exec = Some(k8s_openapi::api::core::v1::ExecAction {
        command: Some(vec!["test".into(), "-f".into(), "/ok".into()]),
    });
    let c = Container {
        name: "c".into(),
        readiness_probe: Some(p),
        ..Default::default()
    };
    m.add_pod(&pod(c));
    m.update_pod("uid1", running("c1"));
    settle().await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert!(events.try_recv().is_err(), "a success records nothing");
    fake.answer(ProbeKind::Readiness, ProbeResult::Failure);
    tokio::time::sleep(Duration::from_secs(20)).await;
    settle().await;
    let mut got = Vec::new();
    while let Ok(e) = events.try_recv() {
        got.push(e);
    }
    assert_eq!(got.len(), 2, "{got:?}");
    let e = &got[0];
    assert_eq!(e.reason, "Unhealthy");
    assert_eq!(e.type_, kubelet::events::EventType::Warning);
    assert_eq!(e.object.field_path.as_deref(), Some("spec.containers{c}"));
    assert_eq!(
        e.message,
        "Readiness probe failed: exec [\"test\", \"-f\", \"/ok\"] failed"
    );
    m.remove_pod("uid1");
}
