//! Upstream's `TestComputePodActions`, `…WithInitContainers`, `…WithRestartableInitContainers`
//! and `…WithInitAndEphemeralContainers` cases, replayed against [`compute_pod_actions`], plus
//! back-off, pruning, grace-period and config tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use k8s_openapi::api::core::v1::{EphemeralContainer, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::backoff::{unix_nanos, FakeClock};

#[derive(Default)]
struct FakeProbes(HashMap<(String, &'static str), ProbeResult>);

impl FakeProbes {
    fn set(&mut self, id: &str, kind: &'static str, r: ProbeResult) {
        self.0.insert((id.to_string(), kind), r);
    }
}

impl ProbeResults for FakeProbes {
    fn liveness(&self, id: &str) -> Option<ProbeResult> {
        self.0.get(&(id.to_string(), "liveness")).copied()
    }
    fn startup(&self, id: &str) -> Option<ProbeResult> {
        self.0.get(&(id.to_string(), "startup")).copied()
    }
}

fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

fn rc(
    id: &str,
    name: &str,
    state: ContainerState,
    c: &Container,
    created: i64,
) -> RuntimeContainer {
    RuntimeContainer {
        id: id.into(),
        name: name.into(),
        state: Some(state),
        hash: labels::hash_container(c),
        created_at: created,
        ..Default::default()
    }
}

fn sandbox(state: pb::PodSandboxState, attempt: u32, ip: &str) -> pb::PodSandboxStatus {
    pb::PodSandboxStatus {
        id: "sandboxID".into(),
        state: state as i32,
        metadata: Some(pb::PodSandboxMetadata {
            name: "foo".into(),
            namespace: "new".into(),
            uid: "12345678".into(),
            attempt,
        }),
        network: Some(pb::PodSandboxNetworkStatus {
            ip: ip.into(),
            additional_ips: vec![],
        }),
        ..Default::default()
    }
}

/// Upstream's `makeBasePodAndStatus`: three running containers in a ready sandbox.
fn base() -> (Pod, PodRuntimeStatus) {
    let cs = vec![
        container("foo1", "busybox"),
        container("foo2", "busybox"),
        container("foo3", "busybox"),
    ];
    let status = PodRuntimeStatus {
        sandboxes: vec![sandbox(pb::PodSandboxState::SandboxReady, 0, "10.0.0.1")],
        containers: vec![
            rc("id1", "foo1", ContainerState::Running, &cs[0], 3),
            rc("id2", "foo2", ContainerState::Running, &cs[1], 2),
            rc("id3", "foo3", ContainerState::Running, &cs[2], 1),
        ],
        ips: vec!["10.0.0.1".into()],
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("foo".into()),
            namespace: Some("new".into()),
            uid: Some("12345678".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: cs,
            ..Default::default()
        }),
        ..Default::default()
    };
    (pod, status)
}

fn with_inits() -> (Pod, PodRuntimeStatus) {
    let (mut pod, mut status) = base();
    let inits = vec![
        container("init1", "bar-image"),
        container("init2", "bar-image"),
        container("init3", "bar-image"),
    ];
    status.containers = vec![
        rc("initid1", "init1", ContainerState::Exited, &inits[0], 3),
        rc("initid2", "init2", ContainerState::Exited, &inits[1], 2),
        rc("initid3", "init3", ContainerState::Exited, &inits[2], 1),
    ];
    pod.spec.as_mut().unwrap().init_containers = Some(inits);
    (pod, status)
}

fn with_sidecars() -> (Pod, PodRuntimeStatus) {
    let (mut pod, mut status) = base();
    let mut inits = vec![
        container("restartable-init-1", "bar-image"),
        container("restartable-init-2", "bar-image"),
        container("restartable-init-3", "bar-image"),
    ];
    for (i, c) in inits.iter_mut().enumerate() {
        c.restart_policy = Some("Always".into());
        if i > 0 {
            c.liveness_probe = Some(Probe::default());
            c.startup_probe = Some(Probe::default());
        }
    }
    status.containers = vec![
        rc(
            "initid1",
            "restartable-init-1",
            ContainerState::Running,
            &inits[0],
            3,
        ),
        rc(
            "initid2",
            "restartable-init-2",
            ContainerState::Running,
            &inits[1],
            2,
        ),
        rc(
            "initid3",
            "restartable-init-3",
            ContainerState::Running,
            &inits[2],
            1,
        ),
    ];
    pod.spec.as_mut().unwrap().init_containers = Some(inits);
    (pod, status)
}

/// Upstream's `makeBasePodAndStatusWithInitAndEphemeralContainers`.
fn with_init_and_ephemeral() -> (Pod, PodRuntimeStatus) {
    let (mut pod, mut status) = base();
    let init = container("init1", "bar-image");
    let eph = container("debug", "busybox");
    status
        .containers
        .push(rc("initid1", "init1", ContainerState::Exited, &init, 0));
    status
        .containers
        .push(rc("debug1", "debug", ContainerState::Running, &eph, -1));
    let spec = pod.spec.as_mut().unwrap();
    spec.init_containers = Some(vec![init]);
    spec.ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debug".into(),
        image: Some("busybox".into()),
        ..Default::default()
    }]);
    (pod, status)
}

fn policy(pod: &mut Pod, p: &str) {
    pod.spec.as_mut().unwrap().restart_policy = Some(p.into());
}

#[derive(Debug, PartialEq, Eq, Default)]
struct Want {
    kill_pod: bool,
    create_sandbox: bool,
    sandbox_id: &'static str,
    attempt: u32,
    start_init: Vec<usize>,
    start_containers: Vec<usize>,
    start_ephemeral: Vec<usize>,
    kill: Vec<&'static str>,
}

fn got(p: &Plan) -> Want {
    let mut kill: Vec<&'static str> = p
        .kill_containers
        .iter()
        .map(|k| &*Box::leak(k.id.clone().into_boxed_str()))
        .collect();
    kill.sort();
    Want {
        kill_pod: p.kill_pod,
        create_sandbox: p.create_sandbox,
        sandbox_id: Box::leak(p.sandbox_id.clone().into_boxed_str()),
        attempt: p.attempt,
        start_init: p.start_init.clone(),
        start_containers: p.start_containers.clone(),
        start_ephemeral: p.start_ephemeral.clone(),
        kill,
    }
}

fn noop() -> Want {
    Want {
        sandbox_id: "sandboxID",
        ..Default::default()
    }
}

fn keep(start_containers: Vec<usize>, kill: Vec<&'static str>) -> Want {
    Want {
        sandbox_id: "sandboxID",
        start_containers,
        kill,
        ..Default::default()
    }
}

fn inits(start_init: Vec<usize>, kill: Vec<&'static str>) -> Want {
    Want {
        sandbox_id: "sandboxID",
        start_init,
        kill,
        ..Default::default()
    }
}

fn recreate(attempt: u32, start_init: Vec<usize>, start_containers: Vec<usize>) -> Want {
    Want {
        kill_pod: true,
        create_sandbox: true,
        sandbox_id: "sandboxID",
        attempt,
        start_init,
        start_containers,
        ..Default::default()
    }
}

fn kill_only(attempt: u32) -> Want {
    Want {
        kill_pod: true,
        sandbox_id: "sandboxID",
        attempt,
        ..Default::default()
    }
}

type Case = (
    &'static str,
    Box<dyn Fn(&mut Pod, &mut PodRuntimeStatus, &mut FakeProbes)>,
    Want,
);

fn run(make: fn() -> (Pod, PodRuntimeStatus), base_probes: fn(&mut FakeProbes), cases: Vec<Case>) {
    let mut failures = Vec::new();
    for (name, mutate, want) in cases {
        let (mut pod, mut status) = make();
        let mut probes = FakeProbes::default();
        base_probes(&mut probes);
        mutate(&mut pod, &mut status, &mut probes);
        let plan = compute_pod_actions_no_backoff(&pod, &status, &probes);
        let g = got(&plan);
        if g != want {
            failures.push(format!("{name}:\n  want {want:?}\n  got  {g:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn exited(s: &mut PodRuntimeStatus, i: usize, code: i32) {
    s.containers[i].state = Some(ContainerState::Exited);
    s.containers[i].exit_code = code;
}

fn sandbox_not_ready(s: &mut PodRuntimeStatus) {
    s.sandboxes[0].state = pb::PodSandboxState::SandboxNotready as i32;
}

#[test]
fn compute_pod_actions_regular_containers() {
    run(base, |_| {}, vec![
        ("everything is good; do nothing", Box::new(|_, _, _| {}), noop()),
        (
            "start pod sandbox and all containers for a new pod",
            Box::new(|_, s, _| {
                s.sandboxes.clear();
                s.containers.clear();
            }),
            Want {
                kill_pod: true,
                create_sandbox: true,
                start_containers: vec![0, 1, 2],
                ..Default::default()
            },
        ),
        (
            "restart exited containers if RestartPolicy == Always",
            Box::new(|p, s, _| {
                policy(p, "Always");
                exited(s, 0, 0);
                exited(s, 1, 111);
            }),
            keep(vec![0, 1], vec![]),
        ),
        (
            "restart failed containers if RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                exited(s, 0, 0);
                exited(s, 1, 111);
            }),
            keep(vec![1], vec![]),
        ),
        (
            "restart created but not started containers if RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                exited(s, 0, 0);
                s.containers[1].state = Some(ContainerState::Created);
            }),
            keep(vec![1], vec![]),
        ),
        (
            "don't restart containers if RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                exited(s, 0, 0);
                exited(s, 1, 111);
            }),
            noop(),
        ),
        (
            "kill pod and recreate everything if the pod sandbox is dead, and RestartPolicy == Always",
            Box::new(|p, s, _| {
                policy(p, "Always");
                sandbox_not_ready(s);
            }),
            recreate(1, vec![], vec![0, 1, 2]),
        ),
        (
            "kill pod and recreate all containers (except for the succeeded one) if the pod sandbox is dead, and RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                sandbox_not_ready(s);
                exited(s, 1, 0);
            }),
            recreate(1, vec![], vec![0, 2]),
        ),
        (
            "kill pod and recreate all containers if the PodSandbox does not have an IP",
            Box::new(|_, s, _| {
                s.sandboxes[0].network.as_mut().unwrap().ip.clear();
            }),
            recreate(1, vec![], vec![0, 1, 2]),
        ),
        (
            "kill and recreate the container if the container's spec changed",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[1].hash = 432423432;
            }),
            keep(vec![1], vec!["id2"]),
        ),
        (
            "kill and recreate the container if the liveness check has failed",
            Box::new(|p, _, pr| {
                policy(p, "Always");
                pr.set("id2", "liveness", ProbeResult::Failure);
            }),
            keep(vec![1], vec!["id2"]),
        ),
        (
            "kill and recreate the container if the startup check has failed",
            Box::new(|p, _, pr| {
                policy(p, "Always");
                pr.set("id2", "startup", ProbeResult::Failure);
            }),
            keep(vec![1], vec!["id2"]),
        ),
        (
            "liveness failure with RestartPolicy == Never kills without restarting",
            Box::new(|p, _, pr| {
                policy(p, "Never");
                pr.set("id2", "liveness", ProbeResult::Failure);
            }),
            keep(vec![], vec!["id2"]),
        ),
        (
            "do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and all containers exited",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
                s.sandboxes[0].metadata.as_mut().unwrap().attempt = 1;
                for i in 0..3 {
                    exited(s, i, 0);
                }
            }),
            kill_only(2),
        ),
        (
            "do not create a pod sandbox if no ready sandbox for pod with RestartPolicy=OnFailure and all containers succeeded",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                sandbox_not_ready(s);
                s.sandboxes[0].metadata.as_mut().unwrap().attempt = 1;
                for i in 0..3 {
                    exited(s, i, 0);
                }
            }),
            kill_only(2),
        ),
        (
            "create a pod sandbox if no ready sandbox for pod with RestartPolicy=Never and no containers have ever been created",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
                s.sandboxes[0].metadata.as_mut().unwrap().attempt = 2;
                s.containers.clear();
            }),
            recreate(3, vec![], vec![0, 1, 2]),
        ),
        (
            "kill and recreate the container if the container is in unknown state",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[1].state = Some(ContainerState::Unknown);
            }),
            keep(vec![1], vec!["id2"]),
        ),
        (
            "restart the container if the container is in created state",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[1].state = Some(ContainerState::Created);
            }),
            keep(vec![1], vec![]),
        ),
        (
            "all containers exited with RestartPolicy == Never: kill the pod",
            Box::new(|p, s, _| {
                policy(p, "Never");
                for i in 0..3 {
                    exited(s, i, 1);
                }
            }),
            kill_only(0),
        ),
        (
            "host network pod with a changed network namespace gets a new sandbox",
            Box::new(|p, _, _| {
                p.spec.as_mut().unwrap().host_network = Some(true);
            }),
            Want {
                sandbox_id: "",
                ..recreate(1, vec![], vec![0, 1, 2])
            },
        ),
        (
            "two ready sandboxes are reconciled",
            Box::new(|_, s, _| {
                let mut older = s.sandboxes[0].clone();
                older.id = "older".into();
                s.sandboxes.push(older);
            }),
            recreate(1, vec![], vec![0, 1, 2]),
        ),
        (
            "a deleted pod restarts nothing",
            Box::new(|p, s, _| {
                p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
                exited(s, 0, 1);
            }),
            noop(),
        ),
    ]);
}

#[test]
fn compute_pod_actions_init_containers() {
    run(with_inits, |_| {}, vec![
        ("initialization completed; start all containers", Box::new(|_, _, _| {}), keep(vec![0, 1, 2], vec![])),
        (
            "no init containers have been started; start the first one",
            Box::new(|_, s, _| s.containers.clear()),
            inits(vec![0], vec![]),
        ),
        (
            "initialization in progress; do nothing",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].state = Some(ContainerState::Running);
            }),
            noop(),
        ),
        (
            "kill pod and restart the first init container if the pod sandbox is dead",
            Box::new(|p, s, _| {
                policy(p, "Always");
                sandbox_not_ready(s);
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "initialization failed; restart the last init container if RestartPolicy == Always",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].exit_code = 137;
            }),
            inits(vec![2], vec![]),
        ),
        (
            "initialization failed; restart the last init container if RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                s.containers[2].exit_code = 137;
            }),
            inits(vec![2], vec![]),
        ),
        (
            "initialization failed; kill pod if RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[2].exit_code = 137;
            }),
            kill_only(0),
        ),
        (
            "init container state unknown; kill and recreate the last init container if RestartPolicy == Always",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].state = Some(ContainerState::Unknown);
            }),
            inits(vec![2], vec!["initid3"]),
        ),
        (
            "init container state unknown; kill and recreate the last init container if RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                s.containers[2].state = Some(ContainerState::Unknown);
            }),
            inits(vec![2], vec!["initid3"]),
        ),
        (
            "init container state unknown; kill pod if RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[2].state = Some(ContainerState::Unknown);
            }),
            kill_only(0),
        ),
        (
            "pod sandbox not ready, init container failed, but RestartPolicy == Never; kill pod only",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
            }),
            kill_only(1),
        ),
        (
            "pod sandbox not ready, and RestartPolicy == Never, but no visible init containers; create a new pod sandbox",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
                s.containers.clear();
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "pod sandbox not ready, init container failed, and RestartPolicy == OnFailure; create a new pod sandbox",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                sandbox_not_ready(s);
                s.containers[2].exit_code = 137;
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "some of the init container statuses are missing but the last init container is running, don't restart preceding ones",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].state = Some(ContainerState::Running);
                s.containers.drain(..2);
            }),
            noop(),
        ),
        (
            "an init container is in the created state due to an unknown error when starting container; restart it",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].state = Some(ContainerState::Created);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "the second init container is done: start the third",
            Box::new(|_, s, _| {
                s.containers.remove(2);
            }),
            inits(vec![2], vec![]),
        ),
    ]);
}

fn sidecar_probes(p: &mut FakeProbes) {
    for id in ["initid2", "initid3"] {
        p.set(id, "liveness", ProbeResult::Success);
        p.set(id, "startup", ProbeResult::Success);
    }
}

fn regular_running(pod: &Pod, s: &mut PodRuntimeStatus, state: ContainerState) {
    for (i, c) in pod.spec.as_ref().unwrap().containers.iter().enumerate() {
        let mut r = rc(&format!("id{}", i + 1), &c.name, state, c, 10 + i as i64);
        r.exit_code = 0;
        s.containers.push(r);
    }
    s.containers
        .sort_by_key(|c| std::cmp::Reverse(c.created_at));
}

#[test]
fn compute_pod_actions_sidecars() {
    run(with_sidecars, sidecar_probes, vec![
        ("initialization completed; start all containers", Box::new(|_, _, _| {}), keep(vec![0, 1, 2], vec![])),
        (
            "no init containers have been started; start the first one",
            Box::new(|_, s, _| s.containers.clear()),
            inits(vec![0], vec![]),
        ),
        (
            "an init container is stuck in the created state; restart it",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[2].state = Some(ContainerState::Created);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "restartable init container has started; start the next",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers.truncate(1);
            }),
            inits(vec![1], vec![]),
        ),
        (
            "livenessProbe has not been run; start the next",
            Box::new(|p, s, pr| {
                policy(p, "Always");
                pr.0.remove(&("initid2".into(), "liveness"));
                s.containers.truncate(2);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "livenessProbe in progress; start the next",
            Box::new(|p, s, pr| {
                policy(p, "Always");
                pr.set("initid2", "liveness", ProbeResult::Unknown);
                s.containers.truncate(2);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "livenessProbe has completed; start the next",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers.truncate(2);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "kill and recreate the restartable init container if the liveness check has failed",
            Box::new(|p, _, pr| {
                policy(p, "Always");
                pr.set("initid3", "liveness", ProbeResult::Failure);
            }),
            Want {
                start_init: vec![2],
                ..keep(vec![0, 1, 2], vec!["initid3"])
            },
        ),
        (
            "startupProbe has not been run; do nothing",
            Box::new(|p, s, pr| {
                policy(p, "Always");
                pr.0.remove(&("initid2".into(), "startup"));
                s.containers.truncate(2);
            }),
            noop(),
        ),
        (
            "startupProbe in progress; do nothing",
            Box::new(|p, s, pr| {
                policy(p, "Always");
                pr.set("initid2", "startup", ProbeResult::Unknown);
                s.containers.truncate(2);
            }),
            noop(),
        ),
        (
            "startupProbe has completed; start the next",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers.truncate(2);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "kill and recreate the restartable init container if the startup check has failed",
            Box::new(|p, _, pr| {
                policy(p, "Always");
                pr.set("initid3", "startup", ProbeResult::Failure);
            }),
            inits(vec![2], vec!["initid3"]),
        ),
        (
            "kill and recreate the restartable init container if the container definition changes",
            Box::new(|p, _, _| {
                policy(p, "Always");
                p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[2].image =
                    Some("foo-image".into());
            }),
            Want {
                start_init: vec![2],
                ..keep(vec![0, 1, 2], vec!["initid3"])
            },
        ),
        (
            "restart terminated restartable init container and next init container",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[0].state = Some(ContainerState::Exited);
                s.containers[2].state = Some(ContainerState::Exited);
            }),
            inits(vec![0, 2], vec![]),
        ),
        (
            "restart terminated restartable init container and regular containers",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[0].state = Some(ContainerState::Exited);
            }),
            Want {
                start_init: vec![0],
                ..keep(vec![0, 1, 2], vec![])
            },
        ),
        (
            "pod sandbox not ready, restartable init container failed, but RestartPolicy == Never; kill pod only",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
                exited(s, 2, 137);
            }),
            kill_only(1),
        ),
        (
            "pod sandbox not ready, and RestartPolicy == Never, but no visible restartable init containers; create a new pod sandbox",
            Box::new(|p, s, _| {
                policy(p, "Never");
                sandbox_not_ready(s);
                s.containers.clear();
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "pod sandbox not ready, restartable init container failed, and RestartPolicy == OnFailure; create a new pod sandbox",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                sandbox_not_ready(s);
                exited(s, 2, 137);
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "pod sandbox not ready, restartable init container failed, and RestartPolicy == Always; create a new pod sandbox",
            Box::new(|p, s, _| {
                policy(p, "Always");
                sandbox_not_ready(s);
                exited(s, 2, 137);
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "initialization failed; restart the last restartable init container even if pod's RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                exited(s, 2, 137);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "restartable init container state unknown; kill and recreate the last restartable init container even if pod's RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[2].state = Some(ContainerState::Unknown);
            }),
            inits(vec![2], vec!["initid3"]),
        ),
        (
            "restart restartable init container if regular containers are running even if pod's RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                exited(s, 2, 137);
                regular_running(p, s, ContainerState::Running);
            }),
            inits(vec![2], vec![]),
        ),
        (
            "kill the pod if all main containers succeeded if pod's RestartPolicy == Never",
            Box::new(|p, s, _| {
                policy(p, "Never");
                regular_running(p, s, ContainerState::Exited);
            }),
            kill_only(0),
        ),
        (
            "some of the init container statuses are missing but the last init container is running, restart restartable init and regular containers",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers.drain(..2);
            }),
            Want {
                start_init: vec![0, 1],
                ..keep(vec![0, 1, 2], vec![])
            },
        ),
    ]);
}

#[test]
fn compute_pod_actions_ephemeral_containers() {
    run(with_init_and_ephemeral, |_| {}, vec![
        ("steady state; do nothing; ignore ephemeral container", Box::new(|_, _, _| {}), noop()),
        (
            "no ephemeral containers running; start one",
            Box::new(|_, s, _| s.containers.truncate(4)),
            Want {
                start_ephemeral: vec![0],
                ..noop()
            },
        ),
        (
            "start second ephemeral container",
            Box::new(|p, _, _| {
                p.spec.as_mut().unwrap().ephemeral_containers.as_mut().unwrap().push(EphemeralContainer {
                    name: "debug2".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                })
            }),
            Want {
                start_ephemeral: vec![1],
                ..noop()
            },
        ),
        (
            "ephemeral container exited; do not restart",
            Box::new(|p, s, _| {
                policy(p, "Always");
                s.containers[4].state = Some(ContainerState::Exited);
            }),
            noop(),
        ),
        (
            "initialization in progress; start ephemeral container",
            Box::new(|_, s, _| {
                s.containers[3].state = Some(ContainerState::Running);
                s.containers.truncate(4);
            }),
            Want {
                start_ephemeral: vec![0],
                ..noop()
            },
        ),
        (
            "create a new pod sandbox if the pod sandbox is dead, init container failed and RestartPolicy == OnFailure",
            Box::new(|p, s, _| {
                policy(p, "OnFailure");
                sandbox_not_ready(s);
                s.containers.drain(..3);
                s.containers[0].exit_code = 137;
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "kill pod and do not restart ephemeral container if the pod sandbox is dead",
            Box::new(|p, s, _| {
                policy(p, "Always");
                sandbox_not_ready(s);
            }),
            recreate(1, vec![0], vec![]),
        ),
        (
            "kill pod if all containers exited except ephemeral container",
            Box::new(|p, s, _| {
                policy(p, "Never");
                for i in 0..3 {
                    exited(s, i, 0);
                }
            }),
            kill_only(0),
        ),
        (
            "ephemeral container is in unknown state; leave it alone",
            Box::new(|p, s, _| {
                policy(p, "Never");
                s.containers[4].state = Some(ContainerState::Unknown);
            }),
            noop(),
        ),
    ]);
}

/// The kubelet's back-off on a fake clock that starts at the epoch, so CRI nanosecond times
/// read directly.
fn fake_backoff() -> (Arc<FakeClock>, Backoff) {
    let clock = Arc::new(FakeClock::new(UNIX_EPOCH));
    (clock.clone(), Backoff::for_containers(clock))
}

#[test]
fn crash_loop_backoff_doubles_caps_and_resets() {
    let s = 1_000_000_000i64;
    let t = unix_nanos;
    let (clock, b) = fake_backoff();
    let key = "k";
    assert!(!b.is_in_backoff_since(key, t(0)));
    assert_eq!(b.in_backoff(key, 0), None);
    // First restart after an exit at t=0: 10 s.
    b.next(key, t(0));
    assert_eq!(b.get(key), Duration::from_secs(10));
    clock.set(t(9 * s));
    assert!(b.is_in_backoff_since(key, t(0)));
    assert_eq!(b.in_backoff(key, 0), Some(Duration::from_secs(10)));
    clock.set(t(10 * s));
    assert!(!b.is_in_backoff_since(key, t(0)));
    // Each further crash doubles: 20, 40, 80, 160, 300 (cap), 300.
    let mut now = 10 * s;
    for want in [20, 40, 80, 160, 300, 300] {
        clock.set(t(now));
        b.next(key, t(now));
        assert_eq!(b.get(key), Duration::from_secs(want));
        now += want as i64 * s;
    }
    // Running fine for more than 10 minutes (twice the cap) starts over.
    let exit = now + 601 * s;
    clock.set(t(exit + s));
    assert!(!b.is_in_backoff_since(key, t(exit)));
    b.next(key, t(exit));
    assert_eq!(b.get(key), Duration::from_secs(10));
    clock.set(t(exit + 1000 * s));
    b.gc();
    assert_eq!(b.get(key), Duration::ZERO);
}

#[test]
fn backoff_takes_containers_out_of_the_plan() {
    let (mut pod, mut status) = base();
    policy(&mut pod, "Always");
    exited(&mut status, 0, 1);
    status.containers[0].finished_at = 100;
    exited(&mut status, 1, 1);
    status.containers[1].finished_at = 100;
    let (clock, b) = fake_backoff();
    let c0 = pod.spec.as_ref().unwrap().containers[0].clone();
    clock.set(unix_nanos(100));
    b.next(&stable_key(&pod, &c0), unix_nanos(100));
    clock.set(unix_nanos(200));
    let plan = compute_pod_actions(&pod, &status, &NoProbeResults, &b);
    assert_eq!(plan.start_containers, vec![1]);
    assert_eq!(plan.back_off.len(), 1);
    assert_eq!(plan.back_off[0].name, "foo1");
    assert_eq!(
        plan.back_off[0].message,
        "back-off 10s restarting failed container=foo1 pod=foo_new(12345678)"
    );
    // After the back-off both start.
    clock.set(unix_nanos(100 + 10_000_000_001));
    let plan = compute_pod_actions(&pod, &status, &NoProbeResults, &b);
    assert_eq!(plan.start_containers, vec![0, 1]);
    assert_eq!(last_exit(&c0, &status), Some(100));
}

#[test]
fn backoff_of_an_init_container_stops_the_start_up() {
    let (mut pod, mut status) = with_inits();
    policy(&mut pod, "Always");
    status.containers[2].exit_code = 1;
    let c = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[2].clone();
    let (clock, b) = fake_backoff();
    b.next(&stable_key(&pod, &c), unix_nanos(0));
    clock.set(unix_nanos(1));
    let plan = compute_pod_actions(&pod, &status, &NoProbeResults, &b);
    assert!(plan.start_init.is_empty() && plan.start_containers.is_empty());
    assert_eq!(plan.back_off[0].name, "init3");
    assert!(plan.back_off[0].init);
}

#[test]
fn prune_and_purge_init_containers() {
    let (pod, mut status) = with_inits();
    let c = &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
    status
        .containers
        .push(rc("initid1-old", "init1", ContainerState::Exited, c, 0));
    assert_eq!(init_containers_to_prune(&pod, &status), vec!["initid1-old"]);
    let mut purge = init_containers_to_purge(&pod, &status);
    purge.sort();
    assert_eq!(purge, vec!["initid1", "initid1-old", "initid2", "initid3"]);
}

#[test]
fn grace_periods() {
    let (mut pod, _) = base();
    assert_eq!(termination_grace_period(&pod, None, None), 2);
    pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(30);
    let mut c = container("c", "busybox");
    c.liveness_probe = Some(Probe {
        termination_grace_period_seconds: Some(5),
        ..Default::default()
    });
    assert_eq!(termination_grace_period(&pod, Some(&c), None), 30);
    assert_eq!(
        termination_grace_period(&pod, Some(&c), Some(KillReason::LivenessProbe)),
        5
    );
    assert_eq!(
        termination_grace_period(&pod, Some(&c), Some(KillReason::StartupProbe)),
        30
    );
    pod.metadata.deletion_grace_period_seconds = Some(0);
    assert_eq!(
        termination_grace_period(&pod, Some(&c), Some(KillReason::LivenessProbe)),
        0
    );
}

#[test]
fn runtime_container_from_cri_reads_labels_and_annotations() {
    let (pod, _) = base();
    let c = &pod.spec.as_ref().unwrap().containers[0];
    let ann = labels::container_annotations(c, &pod, 4, &HashMap::new());
    let s = pb::ContainerStatus {
        id: "abc".into(),
        state: pb::ContainerState::ContainerExited as i32,
        exit_code: 3,
        finished_at: 9,
        labels: labels::container_labels(c, &pod),
        annotations: ann,
        ..Default::default()
    };
    let r = RuntimeContainer::from_cri(&s);
    assert_eq!(r.name, "foo1");
    assert_eq!(r.restart_count, 4);
    assert_eq!(r.hash, labels::hash_container(c));
    assert_eq!(r.state(), ContainerState::Exited);
    assert_eq!(r.exit_code, 3);
    assert_eq!(
        next_restart_count(c, &PodRuntimeStatus::new(vec![], vec![r])),
        Some(5)
    );
}

mod configs {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Capabilities, ContainerPort, PodSecurityContext, ResourceRequirements, SeccompProfile,
        SecurityContext, Sysctl,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn opts() -> config::SandboxOptions {
        config::SandboxOptions {
            pod_logs_dir: "/var/log/pods".into(),
            dns: Some(pb::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["new.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            }),
            cgroup_parent: "/kubepods/besteffort/pod12345678".into(),
            seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
            seccomp_default: false,
        }
    }

    #[test]
    fn sandbox_config_from_pod() {
        let (mut pod, _) = base();
        pod.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        let spec = pod.spec.as_mut().unwrap();
        spec.containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]);
        spec.share_process_namespace = Some(true);
        spec.security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            fs_group: Some(2000),
            supplemental_groups: Some(vec![3000]),
            sysctls: Some(vec![Sysctl {
                name: "net/ipv4/ip_local_port_range".into(),
                value: "1024 65000".into(),
            }]),
            ..Default::default()
        });
        let c = config::sandbox_config(&pod, 2, &opts());
        let m = c.metadata.unwrap();
        assert_eq!(
            (
                m.name.as_str(),
                m.namespace.as_str(),
                m.uid.as_str(),
                m.attempt
            ),
            ("foo", "new", "12345678", 2)
        );
        assert_eq!(c.hostname, "foo");
        assert_eq!(c.log_directory, "/var/log/pods/new_foo_12345678");
        assert_eq!(c.labels["app"], "web");
        assert_eq!(c.labels[labels::POD_UID], "12345678");
        assert_eq!(c.port_mappings.len(), 1);
        assert_eq!(c.port_mappings[0].host_port, 8080);
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/pod12345678");
        assert_eq!(linux.sysctls["net.ipv4.ip_local_port_range"], "1024 65000");
        let sc = linux.security_context.unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!(ns.pid, pb::NamespaceMode::Pod as i32);
        assert_eq!(ns.network, pb::NamespaceMode::Pod as i32);
        assert_eq!(ns.ipc, pb::NamespaceMode::Pod as i32);
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert_eq!(sc.supplemental_groups, vec![2000, 3000]);
        assert_eq!(c.dns_config.unwrap().servers, vec!["10.96.0.10"]);
    }

    #[test]
    fn container_config_from_spec() {
        let (mut pod, _) = base();
        let spec = pod.spec.as_mut().unwrap();
        spec.host_pid = Some(true);
        spec.security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1001),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        });
        let c = &mut spec.containers[0];
        c.command = Some(vec!["sh".into(), "-c".into()]);
        c.args = Some(vec!["echo $(GREETING) $$(HOME) $(MISSING)".into()]);
        c.termination_message_path = Some("/dev/termination-log".into());
        c.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity("250m".into()))])),
            limits: Some(BTreeMap::from([
                ("cpu".into(), Quantity("500m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            ..Default::default()
        });
        c.security_context = Some(SecurityContext {
            run_as_user: Some(2000),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("profiles/audit.json".into()),
            }),
            ..Default::default()
        });
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let cfg = config::container_config(
            &pod,
            &c,
            3,
            &opts(),
            &config::ContainerOptions {
                image_ref: "sha256:abc".into(),
                envs: vec![("GREETING".into(), "hi".into())],
                cpu_cfs_quota: true,
                oom_score_adj: 999,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.metadata.as_ref().unwrap().attempt, 3);
        assert_eq!(cfg.log_path, "foo1/3.log");
        assert_eq!(cfg.args, vec!["echo hi $(HOME) $(MISSING)"]);
        assert_eq!(cfg.image.as_ref().unwrap().image, "sha256:abc");
        assert_eq!(cfg.image.as_ref().unwrap().user_specified_image, "busybox");
        assert_eq!(cfg.labels[labels::CONTAINER_NAME], "foo1");
        assert_eq!(cfg.annotations[labels::CONTAINER_RESTART_COUNT], "3");
        assert_eq!(cfg.annotations[labels::CONTAINER_TYPE], "container");
        assert_eq!(
            cfg.annotations[labels::CONTAINER_TERMINATION_MESSAGE_PATH],
            "/dev/termination-log"
        );
        assert_eq!(cfg.envs[0].key, "GREETING");
        let linux = cfg.linux.unwrap();
        let r = linux.resources.unwrap();
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 128 << 20);
        assert_eq!(r.oom_score_adj, 999);
        let sc = linux.security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 2000);
        assert_eq!(sc.run_as_group.unwrap().value, 1001);
        assert!(sc.no_new_privs && sc.readonly_rootfs && !sc.privileged);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().add_capabilities,
            vec!["NET_ADMIN"]
        );
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop_capabilities,
            vec!["ALL"]
        );
        assert_eq!(
            sc.namespace_options.unwrap().pid,
            pb::NamespaceMode::Node as i32
        );
        let seccomp = sc.seccomp.unwrap();
        assert_eq!(
            seccomp.profile_type,
            pb::security_profile::ProfileType::Localhost as i32
        );
        assert_eq!(
            seccomp.localhost_ref,
            "/var/lib/kubelet/seccomp/profiles/audit.json"
        );
        assert!(sc.masked_paths.contains(&"/proc/kcore".to_string()));
    }

    #[test]
    fn resources_and_non_root() {
        let mut c = container("c", "busybox");
        // Only a limit: shares follow the limit.
        c.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([("cpu".into(), Quantity("2".into()))])),
            ..Default::default()
        });
        let r = config::linux_resources(&c, 0, true);
        assert_eq!((r.cpu_shares, r.cpu_quota), (2048, 200_000));
        // Nothing: minimum shares, no quota.
        let r = config::linux_resources(&container("c", "x"), 0, true);
        assert_eq!(
            (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
            (2, 0, 0)
        );
        assert_eq!(crate::qos::milli_cpu_to_quota(1, 100_000), 1000);

        let (mut pod, _) = base();
        pod.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        let root = config::ContainerOptions {
            image_uid: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            config::container_config(&pod, &c, 0, &opts(), &root),
            Err(config::ConfigError::RunsAsRoot { .. })
        ));
        let named = config::ContainerOptions {
            image_user: "nobody".into(),
            ..Default::default()
        };
        assert!(matches!(
            config::container_config(&pod, &c, 0, &opts(), &named),
            Err(config::ConfigError::NonNumericUser { .. })
        ));
        let ok = config::ContainerOptions {
            image_uid: Some(65534),
            ..Default::default()
        };
        assert!(config::container_config(&pod, &c, 0, &opts(), &ok).is_ok());
    }

    #[test]
    fn restart_count_from_logs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            config::restart_count_from_log_dir(&dir.path().join("none")),
            0
        );
        for f in ["0.log", "1.log", "4.log.20240101-000000", "x.log"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert_eq!(config::restart_count_from_log_dir(dir.path()), 5);
    }
}

fn exited_with(code: i32, policy: &str) -> RuntimeContainer {
    RuntimeContainer {
        id: "c1".into(),
        name: "app".into(),
        state: Some(ContainerState::Exited),
        exit_code: code,
        termination_message_policy: policy.into(),
        ..Default::default()
    }
}

#[test]
fn termination_messages_come_from_the_file_or_the_log_tail() {
    // The file wins, whatever the policy.
    let mut c = exited_with(1, "FallbackToLogsOnError");
    c.add_termination_message(Some(b"from the file"), || "from the log".into());
    assert_eq!(c.message, "from the file");
    // An empty file falls back to the log only on an error exit with that policy.
    let mut c = exited_with(1, "FallbackToLogsOnError");
    c.add_termination_message(Some(b""), || "from the log\n".into());
    assert_eq!(c.message, "from the log\n");
    let mut c = exited_with(0, "FallbackToLogsOnError");
    c.add_termination_message(Some(b""), || "from the log".into());
    assert_eq!(c.message, "");
    let mut c = exited_with(1, "File");
    c.add_termination_message(None, || "from the log".into());
    assert_eq!(c.message, "");
    // The runtime's own message comes first; the file is bounded to 4 KiB.
    let mut c = exited_with(2, "File");
    c.message = "OOM".into();
    c.add_termination_message(Some(&[b'x'; 5000]), String::new);
    assert_eq!(
        c.message.len(),
        "OOM: ".len() + MAX_TERMINATION_MESSAGE_LENGTH
    );
    // A running container has none.
    let mut c = exited_with(1, "File");
    c.state = Some(ContainerState::Running);
    c.add_termination_message(Some(b"x"), String::new);
    assert_eq!(c.message, "");
}

#[test]
fn the_log_tail_keeps_the_last_80_lines_and_2_kib() {
    let log: String = (0..100)
        .map(|i| format!("2026-01-01T00:00:00Z stdout F line {i}\n"))
        .collect();
    let tail = termination_log_tail(&log);
    assert!(tail.starts_with("line 20\n"), "{tail}");
    assert!(tail.ends_with("line 99\n"));
    assert_eq!(tail.lines().count(), MAX_TERMINATION_MESSAGE_LOG_LINES);
    // Partial lines join.
    let log = "t stderr P abc\nt stderr F def\nt stdout F end\n";
    assert_eq!(termination_log_tail(log), "abcdef\nend\n");
    let long: String = (0..80)
        .map(|i| format!("t stdout F {}\n", "y".repeat(50) + &i.to_string()))
        .collect();
    let tail = termination_log_tail(&long);
    assert_eq!(tail.len(), MAX_TERMINATION_MESSAGE_LOG_LENGTH);
    assert!(tail.ends_with("79\n"));
}
