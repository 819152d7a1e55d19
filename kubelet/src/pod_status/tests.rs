//! Table tests for the phase, the conditions and the container statuses.

use std::collections::HashMap;

use cri::pb;
use k8s_openapi::api::core::v1::{PodReadinessGate, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::plan::labels;

fn c(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some("busybox".into()),
        ..Default::default()
    }
}

fn pod(containers: Vec<Container>, inits: Vec<Container>, policy: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("p".into()),
            namespace: Some("ns".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            init_containers: (!inits.is_empty()).then_some(inits),
            restart_policy: Some(policy.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sandbox() -> pb::PodSandboxStatus {
    pb::PodSandboxStatus {
        id: "sb".into(),
        state: pb::PodSandboxState::SandboxReady as i32,
        metadata: Some(pb::PodSandboxMetadata::default()),
        network: Some(pb::PodSandboxNetworkStatus {
            ip: "10.1.0.5".into(),
            additional_ips: vec![pb::PodIp {
                ip: "fd00::5".into(),
            }],
        }),
        ..Default::default()
    }
}

fn inst(name: &str, id: &str, state: RtState, exit: i32, created: i64) -> RuntimeContainer {
    RuntimeContainer {
        id: id.into(),
        name: name.into(),
        state: Some(state),
        exit_code: exit,
        created_at: created,
        started_at: 1_700_000_000_000_000_000,
        finished_at: if state == RtState::Exited {
            1_700_000_100_000_000_000
        } else {
            0
        },
        image: "docker.io/library/busybox:latest".into(),
        image_ref: "docker.io/library/busybox@sha256:abc".into(),
        restart_count: created as i32,
        ..Default::default()
    }
}

struct NotReady;
impl ContainerHealth for NotReady {
    fn started(&self, _: &Container, _: &str) -> bool {
        true
    }
    fn ready(&self, _: &Container, _: &str) -> bool {
        false
    }
}

fn gen(
    p: &Pod,
    rt: &PodRuntimeStatus,
    failures: &HashMap<String, StartFailure>,
    terminal: bool,
) -> PodStatus {
    generate(
        p,
        rt,
        &StatusInputs {
            runtime_name: "capstan",
            start_failures: failures,
            health: &NoProbes,
            host_ips: &["192.168.1.2".to_string()],
            qos_class: "BestEffort",
            pod_is_terminal: terminal,
            now: Timestamp::from_second(1_700_000_200).unwrap(),
        },
    )
}

fn condition<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
    s.conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {:?}", s.conditions))
}

#[test]
fn running_pod_is_ready() {
    let p = pod(vec![c("a")], vec![], "Always");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("a", "c1", RtState::Running, 0, 0)],
    );
    let s = gen(&p, &rt, &HashMap::new(), false);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.1.0.5"));
    assert_eq!(s.pod_ips.as_ref().unwrap().len(), 2);
    assert_eq!(s.host_ip.as_deref(), Some("192.168.1.2"));
    assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    assert!(s.start_time.is_some());
    for t in [
        POD_SCHEDULED,
        POD_READY_TO_START_CONTAINERS,
        POD_INITIALIZED,
        CONTAINERS_READY,
        POD_READY,
    ] {
        assert_eq!(condition(&s, t).status, "True", "{t}");
    }
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(cs.container_id.as_deref(), Some("capstan://c1"));
    assert_eq!(cs.image_id, "docker.io/library/busybox@sha256:abc");
    assert!(cs.ready && cs.started == Some(true));
    assert!(cs.state.as_ref().unwrap().running.is_some());
}

#[test]
fn new_pod_is_pending_with_container_creating() {
    let p = pod(vec![c("a")], vec![], "Always");
    let s = gen(&p, &PodRuntimeStatus::default(), &HashMap::new(), false);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let w = s.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(w.reason.as_deref(), Some(CONTAINER_CREATING));
    assert_eq!(condition(&s, POD_READY_TO_START_CONTAINERS).status, "False");
    let ready = condition(&s, POD_READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason.as_deref(), Some(CONTAINERS_NOT_READY));
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [a]")
    );
}

#[test]
fn init_containers_pending_and_pod_initializing() {
    let p = pod(vec![c("a")], vec![c("i1"), c("i2")], "Always");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![
            inst("i1", "x1", RtState::Exited, 0, 0),
            inst("i2", "x2", RtState::Running, 0, 1),
        ],
    );
    let s = gen(&p, &rt, &HashMap::new(), false);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let init = condition(&s, POD_INITIALIZED);
    assert_eq!(init.status, "False");
    assert_eq!(init.reason.as_deref(), Some(CONTAINERS_NOT_INITIALIZED));
    assert_eq!(
        init.message.as_deref(),
        Some("containers with incomplete status: [i2]")
    );
    let a = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        a.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some(POD_INITIALIZING)
    );
    let inits = s.init_container_statuses.as_ref().unwrap();
    assert!(inits[0].ready, "a completed init container is ready");
    assert_eq!(
        inits[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("Completed")
    );
}

#[test]
fn failed_init_with_restart_never_fails_the_pod() {
    let p = pod(vec![c("a")], vec![c("i1")], "Never");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("i1", "x1", RtState::Exited, 1, 0)],
    );
    let s = gen(&p, &rt, &HashMap::new(), false);
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(
        condition(&s, CONTAINERS_READY).reason.as_deref(),
        Some(POD_FAILED)
    );
}

#[test]
fn crash_loop_back_off_is_waiting_with_last_state() {
    let p = pod(vec![c("a")], vec![], "Always");
    let mut old = inst("a", "c0", RtState::Exited, 2, 0);
    old.reason = "Error".into();
    let cur = inst("a", "c1", RtState::Exited, 1, 1);
    let rt = PodRuntimeStatus::new(vec![sandbox()], vec![old, cur]);
    let failures = HashMap::from([(
        "a".to_string(),
        StartFailure {
            reason: CRASH_LOOP_BACK_OFF.into(),
            message: "back-off 10s restarting failed container=a pod=p_ns(u1)".into(),
        },
    )]);
    let s = gen(&p, &rt, &failures, false);
    let cs = &s.container_statuses.as_ref().unwrap()[0];
    let w = cs.state.as_ref().unwrap().waiting.clone().unwrap();
    assert_eq!(w.reason.as_deref(), Some(CRASH_LOOP_BACK_OFF));
    let last = cs.last_state.as_ref().unwrap().terminated.clone().unwrap();
    assert_eq!(last.exit_code, 1);
    assert_eq!(last.container_id.as_deref(), Some("capstan://c1"));
    assert_eq!(cs.restart_count, 1);
    // Always restarts: the pod keeps running.
    assert_eq!(s.phase.as_deref(), Some("Running"));
}

#[test]
fn err_image_pull_on_a_new_container() {
    let p = pod(vec![c("a")], vec![], "Always");
    let failures = HashMap::from([(
        "a".to_string(),
        StartFailure {
            reason: ERR_IMAGE_PULL.into(),
            message: "pull failed".into(),
        },
    )]);
    let s = gen(
        &p,
        &PodRuntimeStatus::new(vec![sandbox()], vec![]),
        &failures,
        false,
    );
    let w = s.container_statuses.as_ref().unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(w.reason.as_deref(), Some(ERR_IMAGE_PULL));
    assert_eq!(w.message.as_deref(), Some("pull failed"));
}

#[test]
fn phases_after_exit() {
    let cases = [
        ("Never", 0, false, "Succeeded"),
        ("Never", 1, false, "Failed"),
        ("OnFailure", 0, false, "Succeeded"),
        ("OnFailure", 1, false, "Running"),
        ("Always", 0, false, "Running"),
        ("Always", 0, true, "Succeeded"),
        ("Always", 1, true, "Failed"),
    ];
    for (policy, code, terminal, want) in cases {
        let p = pod(vec![c("a")], vec![], policy);
        let rt = PodRuntimeStatus::new(
            vec![sandbox()],
            vec![inst("a", "c1", RtState::Exited, code, 0)],
        );
        let s = gen(&p, &rt, &HashMap::new(), terminal);
        assert_eq!(
            s.phase.as_deref(),
            Some(want),
            "{policy} exit {code} terminal {terminal}"
        );
    }
    // Terminal phases stick.
    let mut p = pod(vec![c("a")], vec![], "Always");
    p.status = Some(PodStatus {
        phase: Some("Failed".into()),
        ..Default::default()
    });
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("a", "c1", RtState::Running, 0, 0)],
    );
    assert_eq!(
        gen(&p, &rt, &HashMap::new(), false).phase.as_deref(),
        Some("Failed")
    );
}

#[test]
fn succeeded_pod_conditions_say_pod_completed() {
    let p = pod(vec![c("a")], vec![], "Never");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("a", "c1", RtState::Exited, 0, 0)],
    );
    let s = gen(&p, &rt, &HashMap::new(), true);
    assert_eq!(
        condition(&s, CONTAINERS_READY).reason.as_deref(),
        Some(POD_COMPLETED)
    );
    assert_eq!(condition(&s, POD_READY).status, "False");
}

#[test]
fn readiness_gates_and_probes() {
    let mut p = pod(vec![c("a")], vec![], "Always");
    p.spec.as_mut().unwrap().readiness_gates = Some(vec![PodReadinessGate {
        condition_type: "example.com/gate".into(),
    }]);
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("a", "c1", RtState::Running, 0, 0)],
    );
    let s = gen(&p, &rt, &HashMap::new(), false);
    let r = condition(&s, POD_READY);
    assert_eq!(r.status, "False");
    assert_eq!(r.reason.as_deref(), Some(READINESS_GATES_NOT_READY));
    assert_eq!(
        r.message.as_deref(),
        Some("corresponding condition of pod readiness gate \"example.com/gate\" does not exist.")
    );
    // The gate's condition, set by someone else, is kept and satisfies the gate.
    p.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "example.com/gate".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let s = gen(&p, &rt, &HashMap::new(), false);
    assert_eq!(condition(&s, POD_READY).status, "True");
    assert_eq!(condition(&s, "example.com/gate").status, "True");
    // A readiness probe that has not passed: not ready.
    let s = generate(
        &p,
        &rt,
        &StatusInputs {
            runtime_name: "containerd",
            start_failures: &HashMap::new(),
            health: &NotReady,
            host_ips: &[],
            qos_class: "",
            pod_is_terminal: false,
            now: Timestamp::from_second(1).unwrap(),
        },
    );
    assert_eq!(condition(&s, CONTAINERS_READY).status, "False");
    assert_eq!(
        s.container_statuses.as_ref().unwrap()[0]
            .container_id
            .as_deref(),
        Some("containerd://c1")
    );
}

#[test]
fn transition_times_are_kept_while_the_status_stays() {
    let p0 = pod(vec![c("a")], vec![], "Always");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![inst("a", "c1", RtState::Running, 0, 0)],
    );
    let first = gen(&p0, &rt, &HashMap::new(), false);
    let mut p1 = p0.clone();
    p1.status = Some(first.clone());
    let later = generate(
        &p1,
        &rt,
        &StatusInputs {
            runtime_name: "capstan",
            start_failures: &HashMap::new(),
            health: &NoProbes,
            host_ips: &[],
            qos_class: "BestEffort",
            pod_is_terminal: false,
            now: Timestamp::from_second(1_800_000_000).unwrap(),
        },
    );
    assert_eq!(
        condition(&later, POD_READY).last_transition_time,
        condition(&first, POD_READY).last_transition_time
    );
    assert_eq!(later.start_time, first.start_time);
}

#[test]
fn sidecar_phase_and_initialized() {
    let mut side = c("side");
    side.restart_policy = Some("Always".into());
    let p = pod(vec![c("a")], vec![side], "Always");
    let rt = PodRuntimeStatus::new(
        vec![sandbox()],
        vec![
            inst("side", "s1", RtState::Running, 0, 0),
            inst("a", "c1", RtState::Running, 0, 1),
        ],
    );
    let s = gen(&p, &rt, &HashMap::new(), false);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&s, POD_INITIALIZED).status, "True");
    assert!(s.init_container_statuses.as_ref().unwrap()[0].ready);
    let _ = labels::POD_UID;
}
