//! Container probes: liveness, readiness and startup, as upstream's prober (`pkg/kubelet/prober`).
//!
//! [`ProbeManager`] runs one task per (pod, container, probe kind) — upstream's `worker` — fed by
//! the pod worker with what the runtime reports about the pod's containers
//! ([`ProbeManager::update_pod`]). Each worker waits `initialDelaySeconds` after the container
//! started, then probes every `periodSeconds` with `timeoutSeconds`, and changes the cached result
//! only after `successThreshold` / `failureThreshold` identical results in a row. As upstream:
//! a new container id resets the result to the kind's initial value (readiness Failure, liveness
//! Success, startup Unknown); liveness and readiness wait until the startup probe has succeeded;
//! the startup probe stops once it has; after a liveness or startup failure the worker holds until
//! the container is replaced; a terminating pod's liveness and startup read Success. Every change
//! goes to the results channel, which the pod worker consumes (a liveness failure is a reason to
//! sync: the plan kills and restarts the container; readiness feeds the Ready condition).
//!
//! The probes themselves are in [`handlers`]: exec through the runtime's ExecSync, httpGet with
//! hyper, tcpSocket, and grpc (`grpc.health.v1.Health/Check`) through a hand-made tonic client with
//! prost for its two messages (tonic-health is not in the dependency tree).

pub mod handlers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use lock::Mutex;
use tokio::sync::{mpsc, watch};

use crate::plan::ProbeResults;

/// A probe's cached result (upstream's `results.Result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    Unknown,
    Success,
    Failure,
}

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    fn initial(self) -> ProbeResult {
        match self {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }

    /// `Liveness`, `Readiness`, `Startup` (as upstream's event messages name them).
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Startup => "Startup",
        }
    }

    fn spec(self, c: &Container) -> Option<&Probe> {
        match self {
            ProbeKind::Liveness => c.liveness_probe.as_ref(),
            ProbeKind::Readiness => c.readiness_probe.as_ref(),
            ProbeKind::Startup => c.startup_probe.as_ref(),
        }
    }
}

/// A result change, sent to the pod worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeUpdate {
    pub pod_uid: String,
    pub container_name: String,
    pub container_id: String,
    pub kind: ProbeKind,
    pub result: ProbeResult,
}

/// What the runtime last reported about one container, as the probe workers need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerProbeState {
    pub name: String,
    /// Empty until the container is created.
    pub id: String,
    pub state: ProbeContainerState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeContainerState {
    Waiting,
    /// Running since this tokio instant (the pod worker converts the CRI start time).
    Running {
        started_at: tokio::time::Instant,
    },
    Terminated,
}

/// The pod as the probe workers see it; the pod worker publishes a new one after each sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodProbeState {
    pub pod_ip: String,
    /// The pod reached Succeeded or Failed: probing stops.
    pub terminal: bool,
    /// The pod is being deleted: liveness and startup read Success and stop.
    pub terminating: bool,
    pub containers: Vec<ContainerProbeState>,
}

/// Runs one probe (the handlers in production, fakes in tests).
pub trait Prober: Send + Sync + 'static {
    /// Runs `probe` once against the container; `Err` is a prober error whose result is thrown
    /// away (upstream logs it and keeps the previous result).
    fn probe<'a>(
        &'a self,
        kind: ProbeKind,
        probe: &'a Probe,
        pod: &'a Pod,
        container: &'a Container,
        container_id: &'a str,
        pod_ip: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<ProbeResult, String>>;
}

/// std's Mutex with poisoning shrugged off (a panicking worker must not wedge the results cache).
mod lock {
    #[derive(Default)]
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Mutex(std::sync::Mutex::new(v))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}

/// The cached results, by (container id, kind) — upstream's results managers.
#[derive(Clone, Default)]
pub struct ResultsCache {
    inner: Arc<Mutex<HashMap<(String, ProbeKind), ProbeResult>>>,
}

impl ResultsCache {
    pub fn get(&self, container_id: &str, kind: ProbeKind) -> Option<ProbeResult> {
        self.inner
            .lock()
            .get(&(container_id.to_string(), kind))
            .copied()
    }

    /// Sets a result; returns whether it changed.
    fn set(&self, container_id: &str, kind: ProbeKind, r: ProbeResult) -> bool {
        self.inner
            .lock()
            .insert((container_id.to_string(), kind), r)
            != Some(r)
    }

    fn remove(&self, container_id: &str, kind: ProbeKind) {
        self.inner.lock().remove(&(container_id.to_string(), kind));
    }
}

impl ProbeResults for ResultsCache {
    fn liveness(&self, container_id: &str) -> Option<ProbeResult> {
        self.get(container_id, ProbeKind::Liveness)
    }
    fn startup(&self, container_id: &str) -> Option<ProbeResult> {
        self.get(container_id, ProbeKind::Startup)
    }
}

struct PodEntry {
    state: watch::Sender<PodProbeState>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// The probe workers of every pod, their results, and the channel of result changes.
pub struct ProbeManager {
    prober: Arc<dyn Prober>,
    results: ResultsCache,
    updates: mpsc::UnboundedSender<ProbeUpdate>,
    pods: Mutex<HashMap<String, PodEntry>>,
    /// Where failed probes are reported (`Unhealthy` events).
    events: crate::events::EventRecorder,
}

impl ProbeManager {
    /// A manager and the receiving end of its result changes.
    pub fn new(prober: Arc<dyn Prober>) -> (Arc<Self>, mpsc::UnboundedReceiver<ProbeUpdate>) {
        Self::with_events(prober, crate::events::EventRecorder::discard())
    }

    /// A manager that records an `Unhealthy` event for every failed probe, as upstream's prober.
    pub fn with_events(
        prober: Arc<dyn Prober>,
        events: crate::events::EventRecorder,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ProbeUpdate>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(ProbeManager {
                prober,
                results: ResultsCache::default(),
                updates: tx,
                pods: Mutex::new(HashMap::new()),
                events,
            }),
            rx,
        )
    }

    /// The cached results (the planner's probe oracle).
    pub fn results(&self) -> &ResultsCache {
        &self.results
    }

    /// Whether the container has started: it has no startup probe, or that probe succeeded.
    pub fn is_started(&self, c: &Container, container_id: &str) -> bool {
        c.startup_probe.is_none()
            || self.results.get(container_id, ProbeKind::Startup) == Some(ProbeResult::Success)
    }

    /// Whether the container is ready: no readiness probe (then: running and started), or the
    /// probe's cached result is Success.
    pub fn is_ready(&self, c: &Container, container_id: &str) -> bool {
        match c.readiness_probe {
            None => self.is_started(c, container_id),
            Some(_) => {
                self.results.get(container_id, ProbeKind::Readiness) == Some(ProbeResult::Success)
            }
        }
    }

    /// Starts the workers for every probe of the pod's containers and sidecars (upstream probes
    /// regular init containers not at all). A pod already known is left alone.
    pub fn add_pod(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut pods = self.pods.lock();
        if pods.contains_key(&uid) {
            return;
        }
        let (tx, rx) = watch::channel(PodProbeState::default());
        let spec = pod.spec.as_ref();
        let probed = spec
            .map(|s| s.containers.iter())
            .into_iter()
            .flatten()
            .chain(
                spec.and_then(|s| s.init_containers.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|c| crate::plan::is_sidecar(c)),
            );
        let mut workers = Vec::new();
        let pod = Arc::new(pod.clone());
        for c in probed {
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Liveness,
                ProbeKind::Readiness,
            ] {
                if kind.spec(c).is_some() {
                    let w = Worker {
                        manager: self.clone(),
                        pod: pod.clone(),
                        container: c.clone(),
                        kind,
                        rx: rx.clone(),
                        container_id: String::new(),
                        last: None,
                        run: 0,
                        on_hold: false,
                    };
                    workers.push(tokio::spawn(w.run()));
                }
            }
        }
        pods.insert(uid, PodEntry { state: tx, workers });
    }

    /// Publishes what the runtime reports about the pod's containers to its workers.
    pub fn update_pod(&self, pod_uid: &str, state: PodProbeState) {
        if let Some(p) = self.pods.lock().get(pod_uid) {
            p.state.send_replace(state);
        }
    }

    /// Stops the pod's workers and forgets their results.
    pub fn remove_pod(&self, pod_uid: &str) {
        let Some(p) = self.pods.lock().remove(pod_uid) else {
            return;
        };
        for w in p.workers {
            w.abort();
        }
        let ids: Vec<String> = p
            .state
            .borrow()
            .containers
            .iter()
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Liveness,
                ProbeKind::Readiness,
            ] {
                self.results.remove(&id, kind);
            }
        }
    }

    /// The number of workers running for the pod.
    pub fn worker_count(&self, pod_uid: &str) -> usize {
        self.pods
            .lock()
            .get(pod_uid)
            .map(|p| p.workers.iter().filter(|w| !w.is_finished()).count())
            .unwrap_or(0)
    }

    fn set(&self, pod: &Pod, c: &Container, id: &str, kind: ProbeKind, r: ProbeResult) {
        if self.results.set(id, kind, r) {
            let _ = self.updates.send(ProbeUpdate {
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                container_name: c.name.clone(),
                container_id: id.to_string(),
                kind,
                result: r,
            });
        }
    }
}

/// What a failed probe checked, for the `Unhealthy` event's message.
fn probe_description(p: &Probe) -> String {
    if let Some(e) = &p.exec {
        format!("exec {:?} failed", e.command.clone().unwrap_or_default())
    } else if let Some(h) = &p.http_get {
        format!(
            "HTTP probe of {}:{} failed",
            h.path.as_deref().unwrap_or("/"),
            match &h.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            }
        )
    } else if let Some(t) = &p.tcp_socket {
        format!("dial tcp port {:?} failed", t.port)
    } else if p.grpc.is_some() {
        "gRPC health check failed".to_string()
    } else {
        "probe failed".to_string()
    }
}

impl Drop for ProbeManager {
    fn drop(&mut self) {
        for (_, p) in self.pods.lock().drain() {
            for w in p.workers {
                w.abort();
            }
        }
    }
}

/// The effective settings of a probe, defaults applied as the API server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeTiming {
    pub fn of(p: &Probe) -> Self {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        ProbeTiming {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

struct Worker {
    manager: Arc<ProbeManager>,
    pod: Arc<Pod>,
    container: Container,
    kind: ProbeKind,
    rx: watch::Receiver<PodProbeState>,
    container_id: String,
    last: Option<ProbeResult>,
    run: u32,
    on_hold: bool,
}

impl Worker {
    async fn run(mut self) {
        let spec = self
            .kind
            .spec(&self.container)
            .cloned()
            .expect("workers exist for defined probes");
        let timing = ProbeTiming::of(&spec);
        let mut ticker = tokio::time::interval(timing.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A new container or state: look at it now rather than a period later, but
                    // probe no more often than the period (the tick does the probing).
                    let state = self.rx.borrow_and_update().clone();
                    if !self.observe(&state) {
                        return;
                    }
                    continue;
                }
            }
            let state = self.rx.borrow().clone();
            if !self.do_probe(&spec, &timing, &state).await {
                return;
            }
        }
    }

    /// Takes in a new container id; returns false when the worker should stop.
    fn observe(&mut self, state: &PodProbeState) -> bool {
        if state.terminal {
            return false;
        }
        if let Some(c) = state
            .containers
            .iter()
            .find(|c| c.name == self.container.name)
        {
            if !c.id.is_empty() && c.id != self.container_id {
                if !self.container_id.is_empty() {
                    self.manager.results.remove(&self.container_id, self.kind);
                }
                self.container_id = c.id.clone();
                self.manager.set(
                    &self.pod,
                    &self.container,
                    &self.container_id,
                    self.kind,
                    self.kind.initial(),
                );
                self.on_hold = false;
                self.last = None;
                self.run = 0;
            }
        }
        true
    }

    /// Upstream's `doProbe`; returns whether to keep going.
    async fn do_probe(
        &mut self,
        spec: &Probe,
        timing: &ProbeTiming,
        state: &PodProbeState,
    ) -> bool {
        if !self.observe(state) {
            return false;
        }
        let Some(c) = state
            .containers
            .iter()
            .find(|c| c.name == self.container.name)
        else {
            return true;
        };
        if c.id.is_empty() || self.on_hold {
            return true;
        }
        let started_at = match c.state {
            ProbeContainerState::Running { started_at } => started_at,
            other => {
                self.manager.set(
                    &self.pod,
                    &self.container,
                    &self.container_id,
                    self.kind,
                    ProbeResult::Failure,
                );
                let restart_never = self
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.as_deref())
                    == Some("Never");
                return !(other == ProbeContainerState::Terminated && restart_never);
            }
        };
        if state.terminating && matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup) {
            self.manager.set(
                &self.pod,
                &self.container,
                &self.container_id,
                self.kind,
                ProbeResult::Success,
            );
            return false;
        }
        if started_at.elapsed() < timing.initial_delay {
            return true;
        }
        let started = self.manager.is_started(&self.container, &self.container_id);
        if started == (self.kind == ProbeKind::Startup) {
            // Startup stops once the container started; the others wait for it.
            return true;
        }
        let result = match self
            .manager
            .prober
            .probe(
                self.kind,
                spec,
                &self.pod,
                &self.container,
                &self.container_id,
                &state.pod_ip,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(
                    "{:?} probe of {} errored: {e}",
                    self.kind,
                    self.container.name
                );
                return true;
            }
        };
        if result == ProbeResult::Failure {
            // Upstream records every failed probe; identical events aggregate into one.
            self.manager.events.container_warning(
                &self.pod,
                &self.container,
                crate::events::reason::UNHEALTHY,
                format!(
                    "{} probe failed: {}",
                    self.kind.name(),
                    probe_description(spec)
                ),
            );
        }
        if self.last == Some(result) {
            self.run += 1;
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        if (result == ProbeResult::Failure && self.run < timing.failure_threshold)
            || (result == ProbeResult::Success && self.run < timing.success_threshold)
        {
            return true;
        }
        self.manager.set(
            &self.pod,
            &self.container,
            &self.container_id,
            self.kind,
            result,
        );
        if matches!(self.kind, ProbeKind::Liveness | ProbeKind::Startup)
            && result == ProbeResult::Failure
        {
            // The container will be restarted; probe the next one, not this one while it stops.
            self.on_hold = true;
            self.run = 0;
        }
        true
    }
}
