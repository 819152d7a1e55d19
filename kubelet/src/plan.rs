//! Pod sync planning: upstream's `computePodActions` (kuberuntime_manager.go) as a pure function.
//!
//! Given the desired pod (the API object) and what the runtime reports for it — its sandboxes and
//! containers as CRI statuses — plus the probe results the kubelet holds and the crash-loop
//! back-off (the kubelet's one [`Backoff`], read through [`BackoffOracle`]),
//! [`compute_pod_actions`] decides what one sync does: kill the pod (sandbox gone,
//! changed or not ready; every container done and none to restart), create a sandbox (with the
//! next attempt number), which running containers to kill (spec hash changed, liveness or startup
//! probe failed, state unknown) and which to start — init containers one after another, sidecars
//! (init containers with `restartPolicy: Always`) started in order and kept running, regular
//! containers per the pod's restartPolicy. The pod worker applies the [`Plan`] in upstream's
//! SyncPod order (see [`Plan`]'s docs). Nothing here talks to the runtime, so the table tests below
//! replay upstream's own `TestComputePodActions*` cases.
//!
//! Container identity follows upstream's labels and annotations ([`labels`]); the CRI configs for a
//! sandbox and a container are built by [`config`].

pub mod config;
pub mod labels;

use std::time::Duration;

use cri::pb;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::backoff::{self, Backoff, ContainerKey};

pub use crate::probe::ProbeResult;

/// A container's state as CRI reports it (upstream's `kubecontainer.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    pub fn from_cri(state: i32) -> Self {
        match pb::ContainerState::try_from(state) {
            Ok(pb::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(pb::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(pb::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

/// One runtime container of the pod, as the planner and the status generator read it
/// (upstream's `kubecontainer.Status`): the CRI status plus what the labels and annotations say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeContainer {
    pub id: String,
    pub name: String,
    pub state: Option<ContainerState>,
    /// Nanoseconds since the epoch; 0 when not set.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The spec hash the container was created with (annotation `io.kubernetes.container.hash`).
    pub hash: u64,
    pub restart_count: i32,
    /// The image as the container spec named it, and the resolved image reference (digest).
    pub image: String,
    pub image_ref: String,
    pub image_id: String,
    pub termination_message_path: String,
    pub termination_message_policy: String,
}

impl RuntimeContainer {
    pub fn state(&self) -> ContainerState {
        self.state.unwrap_or(ContainerState::Unknown)
    }

    /// Converts a CRI container status (upstream's `convertToKubeContainerStatus`).
    pub fn from_cri(s: &pb::ContainerStatus) -> Self {
        let ann = labels::ContainerAnnotations::parse(&s.annotations);
        let name = s
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .or_else(|| s.metadata.as_ref().map(|m| m.name.clone()))
            .unwrap_or_default();
        let state = ContainerState::from_cri(s.state);
        let mut c = RuntimeContainer {
            id: s.id.clone(),
            name,
            state: Some(state),
            created_at: s.created_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            exit_code: s.exit_code,
            reason: s.reason.clone(),
            message: s.message.clone(),
            hash: ann.hash,
            restart_count: ann.restart_count,
            image: s
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_ref: s.image_ref.clone(),
            image_id: s.image_id.clone(),
            termination_message_path: ann.termination_message_path,
            termination_message_policy: ann.termination_message_policy,
        };
        if state == ContainerState::Running {
            c.finished_at = 0;
            c.exit_code = 0;
        }
        c
    }
}

/// Upstream's `MaxContainerTerminationMessageLength`: what is read of the message file.
pub const MAX_TERMINATION_MESSAGE_LENGTH: usize = 4 * 1024;
/// Upstream's `MaxContainerTerminationMessageLogLength`: the log tail's byte bound.
pub const MAX_TERMINATION_MESSAGE_LOG_LENGTH: usize = 2 * 1024;
/// Upstream's `MaxContainerTerminationMessageLogLines`: the log tail's line bound.
pub const MAX_TERMINATION_MESSAGE_LOG_LINES: usize = 80;

impl RuntimeContainer {
    /// Whether an exited container's message should come from its log (upstream: policy
    /// `FallbackToLogsOnError`, a non-zero exit, and a container that did run).
    pub fn falls_back_to_logs(&self) -> bool {
        self.state() == ContainerState::Exited
            && self.termination_message_policy == "FallbackToLogsOnError"
            && self.exit_code != 0
            && self.reason != "ContainerCannotRun"
    }

    /// Adds the termination message of an exited container (upstream's `getTerminationMessage`
    /// in `toKubeContainerStatus`): the message file's content (`file`, at most
    /// [`MAX_TERMINATION_MESSAGE_LENGTH`] bytes), or — when that is empty and
    /// [`falls_back_to_logs`](Self::falls_back_to_logs) — the tail of the CRI log `log`. The runtime's
    /// own message, if any, comes first, separated by `": "`.
    pub fn add_termination_message(&mut self, file: Option<&[u8]>, log: impl FnOnce() -> String) {
        if self.state() != ContainerState::Exited {
            return;
        }
        let file = file.unwrap_or_default();
        let file = &file[..file.len().min(MAX_TERMINATION_MESSAGE_LENGTH)];
        let mut msg = String::from_utf8_lossy(file).into_owned();
        if msg.is_empty() && self.falls_back_to_logs() {
            msg = log();
        }
        if msg.is_empty() {
            return;
        }
        if !self.message.is_empty() {
            self.message.push_str(": ");
        }
        self.message.push_str(&msg);
    }
}

/// The last [`MAX_TERMINATION_MESSAGE_LOG_LINES`] lines of a CRI log file's messages, at most
/// [`MAX_TERMINATION_MESSAGE_LOG_LENGTH`] bytes (the end is kept), as upstream's
/// `readLastStringFromContainerLogs`. CRI lines are `<time> <stream> <P|F> <message>`; partial
/// (`P`) lines continue on the next.
pub fn termination_log_tail(cri_log: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    for l in cri_log.lines() {
        let mut parts = l.splitn(4, ' ');
        let (_, _, tag, msg) = (parts.next(), parts.next(), parts.next(), parts.next());
        let msg = msg.unwrap_or_default();
        partial.push_str(msg);
        if tag != Some("P") {
            lines.push(std::mem::take(&mut partial) + "\n");
        }
    }
    if !partial.is_empty() {
        lines.push(partial);
    }
    let start = lines
        .len()
        .saturating_sub(MAX_TERMINATION_MESSAGE_LOG_LINES);
    let text: String = lines[start..].concat();
    let mut cut = text
        .len()
        .saturating_sub(MAX_TERMINATION_MESSAGE_LOG_LENGTH);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_string()
}

/// What the runtime holds for one pod (upstream's `kubecontainer.PodStatus`): sandboxes and
/// containers, newest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodRuntimeStatus {
    pub sandboxes: Vec<pb::PodSandboxStatus>,
    pub containers: Vec<RuntimeContainer>,
    /// The pod's IPs from the newest sandbox, when it is ready.
    pub ips: Vec<String>,
}

impl PodRuntimeStatus {
    /// Sorts both lists newest first (as upstream's GetPodStatus does) and takes the IPs from
    /// the newest sandbox if it is ready.
    pub fn new(
        mut sandboxes: Vec<pb::PodSandboxStatus>,
        mut containers: Vec<RuntimeContainer>,
    ) -> Self {
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let ips = sandboxes
            .first()
            .filter(|s| s.state == pb::PodSandboxState::SandboxReady as i32)
            .map(sandbox_ips)
            .unwrap_or_default();
        PodRuntimeStatus {
            sandboxes,
            containers,
            ips,
        }
    }

    /// The newest container with this name (upstream's `FindContainerStatusByName`).
    pub fn find(&self, name: &str) -> Option<&RuntimeContainer> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The IPs a sandbox status reports, primary first.
pub fn sandbox_ips(s: &pb::PodSandboxStatus) -> Vec<String> {
    let Some(net) = &s.network else {
        return Vec::new();
    };
    let mut ips = Vec::new();
    if !net.ip.is_empty() {
        ips.push(net.ip.clone());
    }
    ips.extend(
        net.additional_ips
            .iter()
            .filter(|p| !p.ip.is_empty())
            .map(|p| p.ip.clone()),
    );
    ips
}

/// The probe results the planner consults (upstream's liveness and startup result managers).
pub trait ProbeResults {
    fn liveness(&self, container_id: &str) -> Option<ProbeResult>;
    fn startup(&self, container_id: &str) -> Option<ProbeResult>;
}

/// No probe has produced a result.
pub struct NoProbeResults;

impl ProbeResults for NoProbeResults {
    fn liveness(&self, _: &str) -> Option<ProbeResult> {
        None
    }
    fn startup(&self, _: &str) -> Option<ProbeResult> {
        None
    }
}

/// Whether a container may be started now (upstream's `doBackOff`): `Some(current back-off)`
/// when it exited too recently.
pub trait BackoffOracle {
    fn in_backoff(&self, key: &str, finished_at_ns: i64) -> Option<Duration>;
}

/// Why a running container is killed (upstream's `containerKillReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillReason {
    /// The spec changed, or a resize needs a restart.
    SpecChanged,
    LivenessProbe,
    StartupProbe,
    /// The runtime does not know whether it runs: kill it before starting another.
    Unknown,
}

/// A container to kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillContainer {
    pub id: String,
    pub name: String,
    /// Whether `index` points into `spec.initContainers` (else `spec.containers`).
    pub init: bool,
    pub index: usize,
    pub reason: KillReason,
    pub message: String,
}

/// A container whose start the plan leaves out because it is in crash-loop back-off; its status
/// shows `CrashLoopBackOff` with this message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackingOff {
    pub name: String,
    pub init: bool,
    pub index: usize,
    pub backoff: Duration,
    pub message: String,
}

/// What one sync does (upstream's `podActions`). Applied in this order:
/// 1. `kill_pod`: stop every container and every sandbox of the pod (on `create_sandbox`, also
///    remove all init containers: [`init_containers_to_purge`]); otherwise kill
///    `kill_containers` (each with [`termination_grace_period`]);
/// 2. remove older exited init containers ([`init_containers_to_prune`]);
/// 3. `create_sandbox`: run a new sandbox with attempt `attempt` (else use `sandbox_id`);
/// 4. start `start_ephemeral`, then `start_init` in order — when a non-sidecar init container fails
///    to start, stop there; a sidecar that fails to start is skipped — then `start_containers`.
///
/// Containers in crash-loop back-off are already taken out of the start lists (`back_off`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub kill_pod: bool,
    pub create_sandbox: bool,
    /// The existing sandbox to start containers in.
    pub sandbox_id: String,
    pub attempt: u32,
    /// Indexes into `spec.initContainers`, in start order. With sidecars several may start in one
    /// sync (a restarted sidecar and the next init container); otherwise at most one.
    pub start_init: Vec<usize>,
    /// Indexes into `spec.containers`.
    pub start_containers: Vec<usize>,
    /// Indexes into `spec.ephemeralContainers`.
    pub start_ephemeral: Vec<usize>,
    pub kill_containers: Vec<KillContainer>,
    pub back_off: Vec<BackingOff>,
}

impl Plan {
    fn kill(&mut self, k: KillContainer) {
        // Upstream keys the kills by container id; a later decision replaces an earlier one.
        if let Some(old) = self.kill_containers.iter_mut().find(|o| o.id == k.id) {
            *old = k;
        } else {
            self.kill_containers.push(k);
        }
    }

    /// Whether the plan does nothing at all.
    pub fn is_noop(&self) -> bool {
        !self.kill_pod
            && !self.create_sandbox
            && self.start_init.is_empty()
            && self.start_containers.is_empty()
            && self.start_ephemeral.is_empty()
            && self.kill_containers.is_empty()
    }
}

/// `restartPolicy: Always` on an init container makes it a sidecar.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn should_restart_on_failure(pod: &Pod) -> bool {
    restart_policy(pod) != "Never"
}

fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[])
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[])
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// Whether an exited init container failed (upstream's `isInitContainerFailed`).
pub fn is_init_container_failed(s: &RuntimeContainer) -> bool {
    s.reason == "OOMKilled"
        || (s.state() == ContainerState::Exited && s.exit_code != 0)
        || s.state() == ContainerState::Unknown
}

/// Upstream's `kubecontainer.ShouldContainerBeRestarted`.
pub fn should_container_be_restarted(c: &Container, pod: &Pod, status: &PodRuntimeStatus) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(s) = status.find(&c.name) else {
        return true;
    };
    match s.state() {
        ContainerState::Running => false,
        ContainerState::Unknown | ContainerState::Created => true,
        ContainerState::Exited => match restart_policy(pod) {
            "Never" => false,
            "OnFailure" => s.exit_code != 0,
            _ => true,
        },
    }
}

/// Upstream's `PodSandboxChanged`: (create a new sandbox, its attempt, the current sandbox id).
pub fn pod_sandbox_changed(pod: &Pod, status: &PodRuntimeStatus) -> (bool, u32, String) {
    let Some(newest) = status.sandboxes.first() else {
        return (true, 0, String::new());
    };
    let ready = pb::PodSandboxState::SandboxReady as i32;
    let attempt = newest.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let ready_count = status.sandboxes.iter().filter(|s| s.state == ready).count();
    if ready_count > 1 || newest.state != ready {
        return (true, attempt + 1, newest.id.clone());
    }
    let net_mode = newest
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .map(|o| o.network)
        .unwrap_or(pb::NamespaceMode::Pod as i32);
    if net_mode != config::network_namespace_mode(pod) as i32 {
        return (true, attempt + 1, String::new());
    }
    if !host_network(pod) && newest.network.as_ref().is_some_and(|n| n.ip.is_empty()) {
        return (true, attempt + 1, newest.id.clone());
    }
    (false, attempt, newest.id.clone())
}

fn has_any_regular_container_created(pod: &Pod, status: &PodRuntimeStatus) -> bool {
    containers(pod).iter().any(|c| {
        status
            .find(&c.name)
            .is_some_and(|s| s.state() != ContainerState::Unknown)
    })
}

fn container_succeeded(c: &Container, status: &PodRuntimeStatus) -> bool {
    status
        .find(&c.name)
        .is_some_and(|s| s.state() == ContainerState::Exited && s.exit_code == 0)
}

/// Upstream's `computePodActions` followed by `doBackOff` for each container to start.
pub fn compute_pod_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &dyn ProbeResults,
    backoff: &dyn BackoffOracle,
) -> Plan {
    let mut plan = compute_pod_actions_no_backoff(pod, status, probes);
    apply_backoff(&mut plan, pod, status, backoff);
    plan
}

/// Upstream's `computePodActions` alone (its table tests use this).
pub fn compute_pod_actions_no_backoff(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &dyn ProbeResults,
) -> Plan {
    let (create_sandbox, attempt, sandbox_id) = pod_sandbox_changed(pod, status);
    let mut plan = Plan {
        kill_pod: create_sandbox,
        create_sandbox,
        sandbox_id,
        attempt,
        ..Plan::default()
    };
    let inits = init_containers(pod);
    let regular = containers(pod);

    if create_sandbox {
        if !should_restart_on_failure(pod) && attempt != 0 && !status.containers.is_empty() {
            // Everything ran and nothing is to run again: do not create a sandbox just to tear
            // it down. (No container seen at all: the sandbox never worked; try again.)
            plan.create_sandbox = false;
            return plan;
        }
        let to_start: Vec<usize> = regular
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !(restart_policy(pod) == "OnFailure" && container_succeeded(c, status))
            })
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && has_any_regular_container_created(pod, status) {
            plan.create_sandbox = false;
            return plan;
        }
        if !inits.is_empty() {
            plan.start_init = vec![0];
            return plan;
        }
        plan.start_containers = to_start;
        return plan;
    }

    // Ephemeral containers start even before initialisation completes, and never restart.
    if let Some(eph) = pod
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
    {
        for (i, e) in eph.iter().enumerate() {
            if status.find(&e.name).is_none() {
                plan.start_ephemeral.push(i);
            }
        }
    }

    let initialized = compute_init_container_actions(pod, status, probes, &mut plan);
    if plan.kill_pod || !initialized {
        return plan;
    }

    let mut keep = 0;
    for (idx, c) in regular.iter().enumerate() {
        let s = status.find(&c.name);
        if s.is_none_or(|s| s.state() != ContainerState::Running) {
            if should_container_be_restarted(c, pod, status) {
                plan.start_containers.push(idx);
                if let Some(s) = s.filter(|s| s.state() == ContainerState::Unknown) {
                    plan.kill(KillContainer {
                        id: s.id.clone(),
                        name: c.name.clone(),
                        init: false,
                        index: idx,
                        reason: KillReason::Unknown,
                        message: format!(
                            "Container is in {:?} state, try killing it before restart",
                            s.state().as_str()
                        ),
                    });
                }
            }
            continue;
        }
        let s = s.expect("running container has a status");
        let mut restart = should_restart_on_failure(pod);
        let (reason, message) = if labels::hash_container(c) != s.hash {
            restart = true;
            (
                KillReason::SpecChanged,
                format!("Container {} definition changed", c.name),
            )
        } else if probes.liveness(&s.id) == Some(ProbeResult::Failure) {
            (
                KillReason::LivenessProbe,
                format!("Container {} failed liveness probe", c.name),
            )
        } else if probes.startup(&s.id) == Some(ProbeResult::Failure) {
            (
                KillReason::StartupProbe,
                format!("Container {} failed startup probe", c.name),
            )
        } else {
            keep += 1;
            continue;
        };
        let message = if restart {
            plan.start_containers.push(idx);
            format!("{message}, will be restarted")
        } else {
            message
        };
        plan.kill(KillContainer {
            id: s.id.clone(),
            name: c.name.clone(),
            init: false,
            index: idx,
            reason,
            message,
        });
    }

    if keep == 0 && plan.start_containers.is_empty() {
        plan.kill_pod = true;
        // Sidecars must not keep a finished pod alive.
        plan.start_init.clear();
    }
    plan
}

/// Upstream's `computeInitContainerActions` (the SidecarContainers version, which upstream uses
/// for every pod now): returns whether the pod is initialised.
fn compute_init_container_actions(
    pod: &Pod,
    status: &PodRuntimeStatus,
    probes: &dyn ProbeResults,
    plan: &mut Plan,
) -> bool {
    let inits = init_containers(pod);
    if inits.is_empty() {
        return true;
    }
    // A regular container that was created or runs means initialisation finished at some point
    // (its init containers may since have been removed).
    let mut pod_has_initialized = containers(pod).iter().any(|c| {
        status
            .find(&c.name)
            .is_some_and(|s| matches!(s.state(), ContainerState::Created | ContainerState::Running))
    });
    let mut previously_initialized = pod_has_initialized;
    let restart_on_failure = should_restart_on_failure(pod);
    let last = inits.len() - 1;

    // Walk backwards: the newest init container that ran tells where initialisation stands.
    for i in (0..inits.len()).rev() {
        let c = &inits[i];
        let sidecar = is_sidecar(c);
        let Some(s) = status.find(&c.name) else {
            if previously_initialized && sidecar {
                plan.start_init.push(i);
            }
            continue;
        };
        if previously_initialized && !sidecar {
            continue;
        }
        let kill = |reason, message: String| KillContainer {
            id: s.id.clone(),
            name: c.name.clone(),
            init: true,
            index: i,
            reason,
            message,
        };
        match s.state() {
            ContainerState::Created => plan.start_init.push(i),
            ContainerState::Running => 'running: {
                if !sidecar {
                    break 'running;
                }
                if c.startup_probe.is_some() {
                    match probes.startup(&s.id) {
                        None => break 'running,
                        Some(ProbeResult::Success) => {}
                        Some(r) => {
                            if r == ProbeResult::Failure {
                                plan.kill(kill(
                                    KillReason::StartupProbe,
                                    format!("Init container {} failed startup probe", c.name),
                                ));
                                plan.start_init.push(i);
                            }
                            break 'running;
                        }
                    }
                }
                if i == last {
                    pod_has_initialized = true;
                } else if !previously_initialized {
                    plan.start_init.push(i + 1);
                }
                if labels::hash_container(c) != s.hash {
                    plan.kill(kill(
                        KillReason::SpecChanged,
                        format!("Init container {} definition changed", c.name),
                    ));
                    plan.start_init.push(i);
                    break 'running;
                }
                if c.liveness_probe.is_some() {
                    match probes.liveness(&s.id) {
                        None => break 'running,
                        Some(ProbeResult::Failure) => {
                            plan.kill(kill(
                                KillReason::LivenessProbe,
                                format!("Init container {} failed liveness probe", c.name),
                            ));
                            plan.start_init.push(i);
                        }
                        Some(_) => {}
                    }
                }
            }
            ContainerState::Exited => {
                if sidecar {
                    plan.start_init.push(i);
                } else if is_init_container_failed(s) {
                    if !restart_on_failure {
                        plan.kill_pod = true;
                        plan.start_init.clear();
                        return false;
                    }
                    plan.start_init.push(i);
                } else if i == last {
                    pod_has_initialized = true;
                } else {
                    plan.start_init.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !sidecar && !restart_on_failure {
                    plan.kill_pod = true;
                    plan.start_init.clear();
                    return false;
                }
                plan.kill(kill(
                    KillReason::Unknown,
                    format!(
                        "Init container is in {:?} state, try killing it before restart",
                        s.state().as_str()
                    ),
                ));
                plan.start_init.push(i);
            }
        }
        previously_initialized = true;
    }
    if !previously_initialized {
        plan.start_init.push(0);
    }
    plan.start_init.reverse();
    pod_has_initialized
}

/// Takes the containers in crash-loop back-off out of the plan's start lists, as SyncPod's
/// `doBackOff` check does when it would start them: a regular container is skipped; a sidecar is
/// skipped and the next init containers still start; any other init container stops the pod's
/// start-up for this sync.
pub fn apply_backoff(
    plan: &mut Plan,
    pod: &Pod,
    status: &PodRuntimeStatus,
    backoff: &dyn BackoffOracle,
) {
    let mut back_off = Vec::new();
    // Whether `c` must wait; if so it is recorded as backing off.
    let mut held_back = |c: &Container, init: bool, index: usize| -> bool {
        let Some(exited) = status
            .containers
            .iter()
            .find(|s| s.name == c.name && s.state() == ContainerState::Exited)
        else {
            return false;
        };
        let hash = spec_hash(c);
        let key = container_key(pod, c, &hash);
        let Some(delay) = backoff.in_backoff(&key.stable_key(), exited.finished_at) else {
            return false;
        };
        back_off.push(BackingOff {
            name: c.name.clone(),
            init,
            index,
            backoff: delay,
            message: key.back_off_message(delay),
        });
        true
    };
    let inits = init_containers(pod);
    let mut abort = false;
    let mut kept = Vec::new();
    for i in std::mem::take(&mut plan.start_init) {
        let c = &inits[i];
        if held_back(c, true, i) {
            if !is_sidecar(c) {
                abort = true;
                break;
            }
            continue;
        }
        kept.push(i);
    }
    plan.start_init = kept;
    if abort {
        plan.start_containers.clear();
    } else {
        let regular = containers(pod);
        plan.start_containers
            .retain(|&i| !held_back(&regular[i], false, i));
    }
    plan.back_off.extend(back_off);
}

/// The finish time of the newest exited instance of `c`, which the pod worker passes (as
/// [`backoff::unix_nanos`]) to [`Backoff::next`] when it starts the container again.
pub fn last_exit(c: &Container, status: &PodRuntimeStatus) -> Option<i64> {
    status
        .containers
        .iter()
        .find(|s| s.name == c.name && s.state() == ContainerState::Exited)
        .map(|s| s.finished_at)
}

/// `<name>_<namespace>(<uid>)`, as upstream's `format.Pod` names a pod in messages.
pub fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The container's spec hash as its back-off key spells it (hex).
fn spec_hash(c: &Container) -> String {
    format!("{:x}", labels::hash_container(c))
}

/// The back-off identity of `c` in `pod`, with `spec_hash` from its spec.
fn container_key<'a>(pod: &'a Pod, c: &'a Container, spec_hash: &'a str) -> ContainerKey<'a> {
    ContainerKey {
        pod_name: pod.metadata.name.as_deref().unwrap_or_default(),
        namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod_uid: pod.metadata.uid.as_deref().unwrap_or_default(),
        container_name: &c.name,
        spec_hash,
    }
}

/// The back-off key of a container (upstream's `GetStableKey`): a changed spec starts afresh.
pub fn stable_key(pod: &Pod, c: &Container) -> String {
    container_key(pod, c, &spec_hash(c)).stable_key()
}

/// The kubelet's container back-off ([`Backoff`], read at its clock's now) answers the planner.
impl BackoffOracle for Backoff {
    fn in_backoff(&self, key: &str, finished_at_ns: i64) -> Option<Duration> {
        self.is_in_backoff_since(key, backoff::unix_nanos(finished_at_ns))
            .then(|| self.get(key))
    }
}

/// Never in back-off.
pub struct NoBackoff;

impl BackoffOracle for NoBackoff {
    fn in_backoff(&self, _: &str, _: i64) -> Option<Duration> {
        None
    }
}

/// Upstream's `pruneInitContainersBeforeStart`: of each init container keep the newest exited (or
/// unknown) instance; returns the ids of the older ones, to remove.
pub fn init_containers_to_prune(pod: &Pod, status: &PodRuntimeStatus) -> Vec<String> {
    let mut out = Vec::new();
    for c in init_containers(pod) {
        let mut seen = 0;
        for s in &status.containers {
            if s.name != c.name
                || !matches!(s.state(), ContainerState::Exited | ContainerState::Unknown)
            {
                continue;
            }
            seen += 1;
            if seen > 1 {
                out.push(s.id.clone());
            }
        }
    }
    out
}

/// Upstream's `purgeInitContainers`: every instance of every init container (the pod gets a new
/// sandbox and initialises afresh).
pub fn init_containers_to_purge(pod: &Pod, status: &PodRuntimeStatus) -> Vec<String> {
    let names: Vec<&str> = init_containers(pod)
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    status
        .containers
        .iter()
        .filter(|s| names.contains(&s.name.as_str()))
        .map(|s| s.id.clone())
        .collect()
}

/// The restart count a new instance of `c` gets: one more than the newest instance's, else 0
/// (the caller may instead count `<n>.log` files in the log directory, as upstream does after a
/// reboot wiped the runtime's state: [`config::restart_count_from_log_dir`]).
pub fn next_restart_count(c: &Container, status: &PodRuntimeStatus) -> Option<i32> {
    status.find(&c.name).map(|s| s.restart_count + 1)
}

/// The grace period for killing a container (upstream's `setTerminationGracePeriod`): the pod's
/// deletion grace period, else the probe's own `terminationGracePeriodSeconds` when a liveness or
/// startup probe failure is the reason, else the pod's `terminationGracePeriodSeconds`, else 2 s.
pub fn termination_grace_period(
    pod: &Pod,
    c: Option<&Container>,
    reason: Option<KillReason>,
) -> i64 {
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        return g;
    }
    let Some(pod_grace) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    else {
        return MINIMUM_GRACE_PERIOD_SECONDS;
    };
    let probe = match reason {
        Some(KillReason::StartupProbe) => c.and_then(|c| c.startup_probe.as_ref()),
        Some(KillReason::LivenessProbe) => c.and_then(|c| c.liveness_probe.as_ref()),
        _ => None,
    };
    probe
        .and_then(|p| p.termination_grace_period_seconds)
        .unwrap_or(pod_grace)
}

/// Upstream's minimal shutdown window.
pub const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

#[cfg(test)]
mod tests;
