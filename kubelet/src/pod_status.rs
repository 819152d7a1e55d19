//! The pod's API status from what the runtime reports: upstream's `generateAPIPodStatus`,
//! `convertToAPIContainerStatuses`, `getPhase` (kubelet_pods.go) and the condition generators of
//! `pkg/kubelet/status` — pure functions, so the status manager only has to diff and patch.
//!
//! Inputs the kubelet keeps elsewhere are passed in: the previous API status (for lastState,
//! startTime, podIPs and condition transition times), the reasons the last sync could not start
//! containers (upstream's reasonCache: ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
//! CreateContainerConfigError, …), the probe-derived started/ready verdicts, the node's IPs and
//! the pod's QoS class. Container IDs are `<runtime name>://<id>` (`capstan://…` for the built-in
//! runtime, `containerd://…`), as upstream's `kubecontainer.ContainerID`.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::plan::{self, ContainerState as RtState, PodRuntimeStatus, RuntimeContainer};

pub const CONTAINER_CREATING: &str = "ContainerCreating";
pub const POD_INITIALIZING: &str = "PodInitializing";
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Condition types the kubelet owns.
pub const POD_SCHEDULED: &str = "PodScheduled";
pub const POD_READY_TO_START_CONTAINERS: &str = "PodReadyToStartContainers";
pub const POD_INITIALIZED: &str = "Initialized";
pub const CONTAINERS_READY: &str = "ContainersReady";
pub const POD_READY: &str = "Ready";

/// Condition reasons (upstream's `pkg/kubelet/status` constants).
pub const UNKNOWN_CONTAINER_STATUSES: &str = "UnknownContainerStatuses";
pub const POD_COMPLETED: &str = "PodCompleted";
pub const POD_FAILED: &str = "PodFailed";
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Whether containers started (startup probe) and are ready (readiness probe); the
/// [`ProbeManager`](crate::probe::ProbeManager) answers in production.
pub trait ContainerHealth {
    fn started(&self, c: &Container, container_id: &str) -> bool;
    fn ready(&self, c: &Container, container_id: &str) -> bool;
}

impl ContainerHealth for crate::probe::ProbeManager {
    fn started(&self, c: &Container, id: &str) -> bool {
        self.is_started(c, id)
    }
    fn ready(&self, c: &Container, id: &str) -> bool {
        self.is_ready(c, id)
    }
}

/// Every running container is started and ready (no probes).
pub struct NoProbes;

impl ContainerHealth for NoProbes {
    fn started(&self, _: &Container, _: &str) -> bool {
        true
    }
    fn ready(&self, _: &Container, _: &str) -> bool {
        true
    }
}

/// Why the last sync could not start a container (upstream's reasonCache entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartFailure {
    pub reason: String,
    pub message: String,
}

/// Everything [`generate`] reads besides the pod and the runtime's view.
pub struct StatusInputs<'a> {
    /// `capstan`, `containerd`, … (the runtime's Version answer).
    pub runtime_name: &'a str,
    /// Container name → why the last sync could not start it.
    pub start_failures: &'a HashMap<String, StartFailure>,
    pub health: &'a dyn ContainerHealth,
    /// The node's IPs, primary first.
    pub host_ips: &'a [String],
    pub qos_class: &'a str,
    /// The pod worker decided the pod is done (its containers will not run again).
    pub pod_is_terminal: bool,
    pub now: Timestamp,
}

/// The pod's new API status (upstream's `generateAPIPodStatus` plus what the status manager adds:
/// startTime and condition transition times). `pod.status` is the previous status.
pub fn generate(pod: &Pod, rt: &PodRuntimeStatus, inp: &StatusInputs<'_>) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let has_inits = !inits.is_empty();

    let init_statuses = convert_statuses(
        pod,
        &inits,
        old.init_container_statuses.as_deref().unwrap_or(&[]),
        rt,
        inp,
        true,
        has_inits,
    );
    let statuses = convert_statuses(
        pod,
        &spec.containers,
        old.container_statuses.as_deref().unwrap_or(&[]),
        rt,
        inp,
        false,
        has_inits,
    );
    let mut all = init_statuses.clone();
    all.extend(statuses.iter().cloned());

    let pod_has_initialized = spec.containers.iter().any(|c| rt.find(&c.name).is_some());
    let mut phase = phase(pod, &all, inp.pod_is_terminal, pod_has_initialized).to_string();
    // A terminal phase never changes back (the status manager refuses that transition).
    if matches!(old.phase.as_deref(), Some("Succeeded" | "Failed")) {
        phase = old.phase.clone().unwrap_or_default();
    }

    // Conditions: the kubelet's own, and any other (readiness gates') kept from before.
    let owned = [
        POD_SCHEDULED,
        POD_READY_TO_START_CONTAINERS,
        POD_INITIALIZED,
        CONTAINERS_READY,
        POD_READY,
    ];
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !owned.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    let (sandbox_needed, _, _) = plan::pod_sandbox_changed(pod, rt);
    conditions.push(cond(POD_READY_TO_START_CONTAINERS, !sandbox_needed, "", ""));
    conditions.push(initialized_condition(
        &spec.init_containers.clone().unwrap_or_default(),
        &spec.containers,
        &all,
        &phase,
    ));
    let containers_ready = containers_ready_condition(&inits, &spec.containers, &all, &phase);
    conditions.push(ready_condition(
        &containers_ready,
        spec.readiness_gates.as_deref().unwrap_or(&[]),
        &old_conditions,
    ));
    conditions.push(containers_ready);
    conditions.push(cond(POD_SCHEDULED, true, "", ""));
    let now = Time(inp.now);
    for c in &mut conditions {
        let prev = old_conditions.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status && p.last_transition_time.is_some() => {
                p.last_transition_time.clone()
            }
            _ => Some(now.clone()),
        };
    }
    conditions.sort_by_key(|c| {
        owned
            .iter()
            .position(|o| *o == c.type_)
            .unwrap_or(owned.len())
    });

    let host_network = spec.host_network.unwrap_or(false);
    let mut ips = if host_network {
        inp.host_ips.to_vec()
    } else {
        rt.ips.clone()
    };
    if ips.is_empty() && !host_network {
        ips = old.pod_ips.iter().flatten().map(|p| p.ip.clone()).collect();
    }

    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: inp.host_ips.first().cloned(),
        host_ips: (!inp.host_ips.is_empty()).then(|| {
            inp.host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip: ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then(|| ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: old.start_time.clone().or(Some(now)),
        qos_class: (!inp.qos_class.is_empty()).then(|| inp.qos_class.to_string()),
        init_container_statuses: has_inits.then_some(init_statuses),
        container_statuses: Some(statuses),
        ephemeral_container_statuses: old.ephemeral_container_statuses.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        message: old.message.clone(),
        reason: old.reason.clone(),
        ..Default::default()
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: &str) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!reason.is_empty()).then(|| reason.to_string()),
        message: (!message.is_empty()).then(|| message.to_string()),
        ..Default::default()
    }
}

/// `<runtime>://<id>`.
pub fn container_id(runtime_name: &str, id: &str) -> String {
    format!("{runtime_name}://{id}")
}

fn time_of(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(ns)).ok())
        .flatten()
        .map(Time)
}

/// One runtime instance as an API container state (upstream's `convertContainerStatus`).
fn state_of(c: &RuntimeContainer, runtime_name: &str) -> ContainerState {
    match c.state() {
        RtState::Running => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time_of(c.started_at),
            }),
            ..Default::default()
        },
        RtState::Exited => ContainerState {
            terminated: Some(terminated_of(c, runtime_name)),
            ..Default::default()
        },
        RtState::Created | RtState::Unknown => ContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..Default::default()
        },
    }
}

fn terminated_of(c: &RuntimeContainer, runtime_name: &str) -> ContainerStateTerminated {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".to_string()
    } else {
        "Error".to_string()
    };
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(reason),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: time_of(c.started_at),
        finished_at: time_of(c.finished_at),
        container_id: Some(container_id(runtime_name, &c.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    }
}

/// Upstream's `convertToAPIContainerStatuses` for one list (init or regular containers).
fn convert_statuses(
    pod: &Pod,
    specs: &[Container],
    old: &[ContainerStatus],
    rt: &PodRuntimeStatus,
    inp: &StatusInputs<'_>,
    init: bool,
    has_inits: bool,
) -> Vec<ContainerStatus> {
    let default_reason = if has_inits && !init {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let mut out: BTreeMap<String, ContainerStatus> = BTreeMap::new();
    for c in specs {
        let prev = old.iter().find(|o| o.name == c.name);
        let mut s = ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            state: Some(waiting(default_reason, "")),
            last_state: prev.and_then(|p| p.last_state.clone()),
            ..Default::default()
        };
        // The runtime's instances of this container, newest first: the newest is the state,
        // the one before it the last termination.
        let mut instances = rt.containers.iter().filter(|r| r.name == c.name);
        if let Some(cur) = instances.next() {
            s.container_id = Some(container_id(inp.runtime_name, &cur.id));
            if !cur.image.is_empty() {
                s.image = cur.image.clone();
            }
            s.image_id = if cur.image_ref.is_empty() {
                cur.image_id.clone()
            } else {
                cur.image_ref.clone()
            };
            s.restart_count = cur.restart_count;
            s.state = Some(state_of(cur, inp.runtime_name));
            if let Some(prev_inst) = instances.next() {
                if prev_inst.state() == RtState::Exited {
                    s.last_state = Some(ContainerState {
                        terminated: Some(terminated_of(prev_inst, inp.runtime_name)),
                        ..Default::default()
                    });
                }
            }
            let running = cur.state() == RtState::Running;
            s.started = Some(running && inp.health.started(c, &cur.id));
            s.ready = if init && !plan::is_sidecar(c) {
                cur.state() == RtState::Exited && cur.exit_code == 0
            } else {
                running && s.started == Some(true) && inp.health.ready(c, &cur.id)
            };
        } else if let Some(p) = prev {
            // Known before but gone from the runtime: keep what the API said about its history.
            s.restart_count = p.restart_count;
        }
        out.insert(c.name.clone(), s);
    }
    // Containers the last sync failed to start, and that will be started again, are Waiting
    // with the failure's reason; a terminated state moves to lastState.
    for c in specs {
        if init {
            if let Some(r) = rt.find(&c.name) {
                if r.state() == RtState::Exited && r.exit_code == 0 {
                    continue;
                }
            }
        }
        let restartable = if init && plan::is_sidecar(c) {
            pod.metadata.deletion_timestamp.is_none()
        } else {
            plan::should_container_be_restarted(c, pod, rt)
        };
        if !restartable {
            continue;
        }
        let Some(f) = inp.start_failures.get(&c.name) else {
            continue;
        };
        let s = out.get_mut(&c.name).expect("every spec has a status");
        if s.state.as_ref().is_some_and(|st| st.terminated.is_some()) {
            s.last_state = s.state.take();
        }
        s.state = Some(waiting(&f.reason, &f.message));
    }
    specs.iter().filter_map(|c| out.remove(&c.name)).collect()
}

fn state_kind(s: &ContainerStatus) -> (bool, bool, bool) {
    let st = s.state.clone().unwrap_or_default();
    (
        st.running.is_some(),
        st.terminated.is_some(),
        st.waiting.is_some(),
    )
}

fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref().and_then(|l| l.terminated.as_ref())
}

/// Upstream's `getPhase`.
pub fn phase(
    pod: &Pod,
    info: &[ContainerStatus],
    pod_is_terminal: bool,
    pod_has_initialized: bool,
) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let restart = spec.restart_policy.as_deref().unwrap_or("Always");
    let find = |name: &str| info.iter().find(|s| s.name == name);
    let inits = spec.init_containers.clone().unwrap_or_default();
    let (mut pending_sidecars, mut pending_inits, mut failed_init) = (0, 0, 0);
    for c in inits.iter().filter(|c| !plan::is_sidecar(c)) {
        let Some(s) = find(&c.name) else {
            pending_inits += 1;
            continue;
        };
        let st = s.state.clone().unwrap_or_default();
        match state_kind(s) {
            (true, _, _) => pending_inits += 1,
            (_, true, _) => {
                if st.terminated.map(|t| t.exit_code).unwrap_or(0) != 0 {
                    failed_init += 1;
                }
            }
            (_, _, true) => match last_terminated(s) {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_inits += 1,
            },
            _ => pending_inits += 1,
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in inits.iter().filter(|c| plan::is_sidecar(c)) {
        let Some(s) = find(&c.name) else {
            unknown += 1;
            continue;
        };
        match state_kind(s) {
            (true, _, _) => {
                if s.started != Some(true) {
                    pending_sidecars += 1;
                }
                running += 1;
            }
            (_, true, _) => {}
            (_, _, true) => {
                if last_terminated(s).is_none() {
                    pending_sidecars += 1;
                    waiting += 1;
                }
            }
            _ => {
                pending_sidecars += 1;
                unknown += 1;
            }
        }
    }
    for c in &spec.containers {
        let Some(s) = find(&c.name) else {
            unknown += 1;
            continue;
        };
        let st = s.state.clone().unwrap_or_default();
        match state_kind(s) {
            (true, _, _) => running += 1,
            (_, true, _) => {
                stopped += 1;
                if st.terminated.map(|t| t.exit_code).unwrap_or(0) == 0 {
                    succeeded += 1;
                }
            }
            (_, _, true) => {
                if last_terminated(s).is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
            _ => unknown += 1,
        }
    }
    if failed_init > 0 && restart == "Never" {
        return "Failed";
    }
    if pending_inits > 0 || (pending_sidecars > 0 && !pod_has_initialized) || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        let static_pod = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/config.source"))
            .is_some_and(|s| s != "api");
        if pod_is_terminal && !static_pod {
            return if stopped == succeeded {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        if restart == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

/// The tail shared by the Initialized and ContainersReady conditions: True when no container is
/// listed, else False with `reason` and upstream's message, `containers with unknown status:
/// [a b], containers with <what> status: [c]`.
fn listed_condition(
    type_: &str,
    reason: &str,
    unknown: &[String],
    (what, names): (&str, &[String]),
) -> PodCondition {
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            go_list(unknown)
        ));
    }
    if !names.is_empty() {
        msgs.push(format!("containers with {what} status: {}", go_list(names)));
    }
    if msgs.is_empty() {
        cond(type_, true, "", "")
    } else {
        cond(type_, false, reason, &msgs.join(", "))
    }
}

/// Upstream's `GeneratePodInitializedCondition`.
pub fn initialized_condition(
    inits: &[Container],
    containers: &[Container],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    if inits.is_empty() {
        return cond(POD_INITIALIZED, true, "", "");
    }
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let (mut unknown, mut incomplete) = (Vec::new(), Vec::new());
    for c in inits {
        let Some(s) = find(&c.name) else {
            unknown.push(c.name.clone());
            continue;
        };
        if plan::is_sidecar(c) {
            if s.started != Some(true) {
                incomplete.push(c.name.clone());
            }
            continue;
        }
        let done = s
            .state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0);
        if !done {
            incomplete.push(c.name.clone());
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return cond(POD_INITIALIZED, true, POD_COMPLETED, "");
    }
    let any_regular_started = containers.iter().any(|c| {
        find(&c.name).is_some_and(|s| {
            let (r, t, _) = state_kind(s);
            r || t
        })
    });
    if any_regular_started {
        return cond(POD_INITIALIZED, true, "", "");
    }
    listed_condition(
        POD_INITIALIZED,
        CONTAINERS_NOT_INITIALIZED,
        &unknown,
        ("incomplete", &incomplete),
    )
}

/// Upstream's `GenerateContainersReadyCondition`.
pub fn containers_ready_condition(
    inits: &[Container],
    containers: &[Container],
    statuses: &[ContainerStatus],
    phase: &str,
) -> PodCondition {
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let (mut unknown, mut unready) = (Vec::new(), Vec::new());
    for c in inits
        .iter()
        .filter(|c| plan::is_sidecar(c))
        .chain(containers.iter())
    {
        match find(&c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == "Succeeded" && unknown.is_empty() {
        return cond(CONTAINERS_READY, false, POD_COMPLETED, "");
    }
    if phase == "Failed" {
        return cond(CONTAINERS_READY, false, POD_FAILED, "");
    }
    listed_condition(
        CONTAINERS_READY,
        CONTAINERS_NOT_READY,
        &unknown,
        ("unready", &unready),
    )
}

/// Upstream's `GeneratePodReadyCondition`: ContainersReady, then every readiness gate's
/// condition must be True.
pub fn ready_condition(
    containers_ready: &PodCondition,
    gates: &[k8s_openapi::api::core::v1::PodReadinessGate],
    conditions: &[PodCondition],
) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: POD_READY.into(),
            ..containers_ready.clone()
        };
    }
    let mut msgs = Vec::new();
    for g in gates {
        match conditions.iter().find(|c| c.type_ == g.condition_type) {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if msgs.is_empty() {
        cond(POD_READY, true, "", "")
    } else {
        cond(
            POD_READY,
            false,
            READINESS_GATES_NOT_READY,
            &msgs.join(", "),
        )
    }
}

#[cfg(test)]
mod tests;
