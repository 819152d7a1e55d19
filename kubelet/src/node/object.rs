//! The Node object this kubelet wants, computed without I/O: the registration object (labels,
//! taints, annotations) and the status (addresses, capacity, allocatable, nodeInfo, conditions,
//! daemon endpoints). The loops in `node.rs` compare what this produces with what the API holds
//! and write the difference.
//!
//! Mirrors upstream's `kubelet_node_status.go` (`initialNode`, `updateDefaultLabels`) and the
//! setters in `pkg/kubelet/nodestatus/setters.go` (`NodeAddress`, `MachineInfo`, `NodeInfo`,
//! `ReadyCondition`, `MemoryPressureCondition`, …), including their reasons and messages, and the
//! allocatable arithmetic of `cm.GetNodeAllocatableReservation`: capacity minus kubeReserved,
//! systemReserved and the hard eviction threshold (memory.available for memory, nodefs.available
//! for ephemeral-storage).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::machine::MachineInfo;
use crate::config::file::Threshold;
use crate::config::{quantity, Config};

/// The kubelet version the Node reports: the API minor this build serves (k8s-openapi `v1_33`),
/// marked as Capstan's, like the API server's `/version`.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-capstan.", env!("CARGO_PKG_VERSION"));
/// The built-in runtime's `containerRuntimeVersion`.
pub const BUILTIN_RUNTIME_VERSION: &str = concat!("capstan://", env!("CARGO_PKG_VERSION"));

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_OS_BETA: &str = "beta.kubernetes.io/os";
pub const LABEL_ARCH_BETA: &str = "beta.kubernetes.io/arch";
/// Set on registration when attach/detach is left to the controller, as upstream does.
pub const ANNOTATION_CONTROLLER_ATTACH_DETACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// What the rest of the kubelet tells the node agent: the runtime's version and health, the
/// network's readiness, PLEG's health and the eviction manager's pressure signals. Ready is True
/// only when `runtime_errors` and `network_errors` are both empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// `name://version` from CRI `Version` (`capstan://0.1.0`, `containerd://2.1.1`).
    pub runtime_version: String,
    /// Why the runtime is not usable: CRI status not ready, PLEG unhealthy
    /// ("PLEG is not healthy: pleg was last seen active 3m5s ago; threshold is 3m0s"), …
    pub runtime_errors: Vec<String>,
    /// Why pod networking is not ready ("container runtime network not ready: …").
    pub network_errors: Vec<String>,
    pub memory_pressure: bool,
    pub disk_pressure: bool,
    pub pid_pressure: bool,
}

impl NodeState {
    /// The state before anything reported: not ready, as upstream's kubelet starts.
    pub fn initial() -> NodeState {
        NodeState {
            runtime_version: String::new(),
            runtime_errors: vec![crate::runtime_status::NOT_YET.into()],
            network_errors: Vec::new(),
            memory_pressure: false,
            disk_pressure: false,
            pid_pressure: false,
        }
    }

    /// A healthy node with this runtime version.
    #[cfg(test)]
    pub fn healthy(runtime_version: impl Into<String>) -> NodeState {
        NodeState {
            runtime_version: runtime_version.into(),
            runtime_errors: Vec::new(),
            network_errors: Vec::new(),
            memory_pressure: false,
            disk_pressure: false,
            pid_pressure: false,
        }
    }
}

/// The well-known labels a kubelet keeps on its Node (upstream still sets the beta variants).
pub fn default_labels(node_name: &str, machine: &MachineInfo) -> BTreeMap<String, String> {
    [
        (LABEL_HOSTNAME, node_name),
        (LABEL_OS, machine.operating_system.as_str()),
        (LABEL_ARCH, machine.architecture.as_str()),
        (LABEL_OS_BETA, machine.operating_system.as_str()),
        (LABEL_ARCH_BETA, machine.architecture.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The labels the Node should carry: the defaults plus `--node-labels`.
pub fn wanted_labels(config: &Config, machine: &MachineInfo) -> BTreeMap<String, String> {
    let mut labels = default_labels(&config.node_name, machine);
    labels.extend(config.node_labels.clone());
    labels
}

/// The Node as first registered (upstream's `initialNode`), status included.
pub fn initial_node(
    config: &Config,
    machine: &MachineInfo,
    state: &NodeState,
    addresses: &[IpAddr],
    now: &Time,
) -> Node {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        ANNOTATION_CONTROLLER_ATTACH_DETACH.to_string(),
        "true".into(),
    );
    let taints = config.settings.register_with_taints.clone();
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(wanted_labels(config, machine)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: config.settings.provider_id.clone(),
            ..Default::default()
        }),
        status: Some(node_status(config, machine, state, addresses, &[], now)),
    }
}

/// Brings an existing Node's registration up to date (upstream's `updateDefaultLabels` plus our
/// `--node-labels`); returns whether anything changed. Taints are left alone: upstream applies
/// `--register-with-taints` only when creating the Node, so an administrator's removal sticks.
pub fn reconcile_existing(existing: &mut Node, config: &Config, machine: &MachineInfo) -> bool {
    let labels = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in wanted_labels(config, machine) {
        if labels.get(&k) != Some(&v) {
            labels.insert(k, v);
            changed = true;
        }
    }
    let annotations = existing
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    if annotations
        .get(ANNOTATION_CONTROLLER_ATTACH_DETACH)
        .map(String::as_str)
        != Some("true")
    {
        annotations.insert(ANNOTATION_CONTROLLER_ATTACH_DETACH.into(), "true".into());
        changed = true;
    }
    changed
}

/// The status the kubelet reports, carrying over transition times from `previous` conditions.
pub fn node_status(
    config: &Config,
    machine: &MachineInfo,
    state: &NodeState,
    addresses: &[IpAddr],
    previous: &[NodeCondition],
    now: &Time,
) -> NodeStatus {
    let capacity = capacity_milli(config, machine);
    let allocatable = allocatable_milli(config, &capacity);
    let mut node_addresses: Vec<NodeAddress> = addresses
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    node_addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: config.node_name.clone(),
    });
    NodeStatus {
        addresses: Some(node_addresses),
        capacity: Some(format_resources(&capacity)),
        allocatable: Some(format_resources(&allocatable)),
        conditions: Some(conditions(previous, state, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: config.settings.port,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: machine.architecture.clone(),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: state.runtime_version.clone(),
            kernel_version: machine.kernel_version.clone(),
            // Upstream 1.33 no longer reports kube-proxy's version (DisableNodeKubeProxyVersion).
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: machine.machine_id.clone(),
            operating_system: machine.operating_system.clone(),
            os_image: machine.os_image.clone(),
            swap: None,
            system_uuid: machine.system_uuid.clone(),
        }),
        ..Default::default()
    }
}

/// Capacity in milli-units per resource: cpu, memory, ephemeral-storage, pods, hugepages-*.
pub fn capacity_milli(config: &Config, machine: &MachineInfo) -> BTreeMap<String, i128> {
    let mut c = BTreeMap::new();
    c.insert("cpu".to_string(), i128::from(machine.num_cpus) * 1000);
    c.insert(
        "memory".to_string(),
        i128::from(machine.memory_bytes) * 1000,
    );
    c.insert(
        "ephemeral-storage".to_string(),
        i128::from(machine.ephemeral_storage_bytes) * 1000,
    );
    c.insert(
        "pods".to_string(),
        i128::from(config.settings.max_pods) * 1000,
    );
    for (name, bytes) in &machine.hugepages {
        c.insert(name.clone(), i128::from(*bytes) * 1000);
    }
    c
}

/// Allocatable = capacity − kubeReserved − systemReserved − hard eviction threshold, never below
/// zero (upstream's `GetNodeAllocatableReservation` and `getNodeAllocatable`).
pub fn allocatable_milli(
    config: &Config,
    capacity: &BTreeMap<String, i128>,
) -> BTreeMap<String, i128> {
    let s = &config.settings;
    let eviction = s.eviction_hard();
    let mut out = capacity.clone();
    for (resource, value) in out.iter_mut() {
        let mut reserved = 0i128;
        for map in [&s.kube_reserved, &s.system_reserved] {
            if let Some(q) = map.get(resource).and_then(|v| quantity::parse_milli(v)) {
                reserved += q;
            }
        }
        let signal = match resource.as_str() {
            "memory" => Some("memory.available"),
            "ephemeral-storage" => Some("nodefs.available"),
            _ => None,
        };
        if let Some(t) = signal
            .and_then(|sig| eviction.get(sig))
            .and_then(|v| Threshold::parse(v))
        {
            reserved += t.against(*value);
        }
        *value = (*value - reserved).max(0);
    }
    out
}

fn format_resources(m: &BTreeMap<String, i128>) -> BTreeMap<String, Quantity> {
    m.iter()
        .map(|(k, milli)| {
            let text = match k.as_str() {
                "cpu" => quantity::format_milli_cpu(*milli),
                "pods" => (milli / 1000).to_string(),
                _ => quantity::format_bytes(milli / 1000),
            };
            (k.clone(), Quantity(text))
        })
        .collect()
}

/// The four node conditions in upstream's order, with upstream's reasons and messages. The
/// heartbeat is `now`; the transition time is kept from `previous` when the status is unchanged.
pub fn conditions(previous: &[NodeCondition], state: &NodeState, now: &Time) -> Vec<NodeCondition> {
    let mut errors: Vec<&str> = state
        .runtime_errors
        .iter()
        .chain(&state.network_errors)
        .map(String::as_str)
        .collect();
    errors.retain(|e| !e.is_empty());
    let (ready, ready_reason, ready_message) = if errors.is_empty() {
        (
            true,
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        )
    } else if errors.len() == 1 {
        (false, "KubeletNotReady", errors[0].to_string())
    } else {
        // Upstream aggregates several errors as `[a, b]`.
        (false, "KubeletNotReady", format!("[{}]", errors.join(", ")))
    };
    let pick = |pressure: bool, yes: (&str, &str), no: (&str, &str)| {
        let (r, m) = if pressure { yes } else { no };
        (pressure, r.to_string(), m.to_string())
    };
    let wanted = [
        (
            "MemoryPressure",
            pick(
                state.memory_pressure,
                (
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
            ),
        ),
        (
            "DiskPressure",
            pick(
                state.disk_pressure,
                ("KubeletHasDiskPressure", "kubelet has disk pressure"),
                ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ),
        ),
        (
            "PIDPressure",
            pick(
                state.pid_pressure,
                (
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ),
        ),
        ("Ready", (ready, ready_reason.to_string(), ready_message)),
    ];
    wanted
        .into_iter()
        .map(|(type_, (is_true, reason, message))| {
            let status = if is_true { "True" } else { "False" };
            let transition = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            NodeCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason),
                message: Some(message),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            }
        })
        .collect()
}

/// Whether `new` differs from `old` in anything but heartbeat times (upstream's
/// `nodeStatusHasChanged`), i.e. whether it must be sent before the report interval is up.
pub fn status_changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        // Only the conditions the kubelet owns are compared; others (NetworkUnavailable, …)
        // belong to other writers.
        if let Some(cs) = s.conditions.as_mut() {
            cs.retain(|c| {
                matches!(
                    c.type_.as_str(),
                    "Ready" | "MemoryPressure" | "DiskPressure" | "PIDPressure"
                )
            });
            cs.sort_by(|a, b| a.type_.cmp(&b.type_));
        }
        (
            s.addresses,
            s.capacity,
            s.allocatable,
            s.conditions,
            s.node_info,
            s.daemon_endpoints,
        )
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::config::{HostFacts, KubeletArgs};

    fn config(extra: impl FnOnce(&mut KubeletArgs)) -> Config {
        let dir = tempfile::tempdir().unwrap();
        for c in ["cpu", "memory", "pids"] {
            std::fs::create_dir_all(dir.path().join(c)).unwrap();
        }
        let mut args = KubeletArgs {
            hostname_override: Some("n1".into()),
            ..Default::default()
        };
        extra(&mut args);
        let host = HostFacts {
            hostname: None,
            cgroupfs_mount: PathBuf::from(dir.path()),
        };
        Config::resolve_with(&args, &host).unwrap()
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            num_cpus: 4,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
            hugepages: vec![("hugepages-2Mi".into(), 0)],
            architecture: "amd64".into(),
            operating_system: "linux".into(),
            ..Default::default()
        }
    }

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn capacity_and_allocatable() {
        let mut c = config(|_| {});
        c.settings.kube_reserved.insert("cpu".into(), "500m".into());
        c.settings
            .system_reserved
            .insert("memory".into(), "1Gi".into());
        let cap = capacity_milli(&c, &machine());
        let alloc = allocatable_milli(&c, &cap);
        let status = format_resources(&alloc);
        assert_eq!(status["cpu"].0, "3500m");
        // 8Gi − 1Gi reserved − 100Mi eviction threshold.
        assert_eq!(status["memory"].0, format!("{}Ki", (7 << 20) - 100 * 1024));
        assert_eq!(status["pods"].0, "110");
        // 100Gi − 10% (nodefs.available).
        assert_eq!(
            status["ephemeral-storage"].0,
            format!("{}Ki", ((100u64 << 30) - (100u64 << 30) / 10) / 1024)
        );
        assert_eq!(status["hugepages-2Mi"].0, "0");
        let cap = format_resources(&cap);
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, format!("{}Ki", 8 << 20));
    }

    #[test]
    fn allocatable_never_negative() {
        let mut c = config(|_| {});
        c.settings.kube_reserved.insert("cpu".into(), "64".into());
        let alloc = allocatable_milli(&c, &capacity_milli(&c, &machine()));
        assert_eq!(alloc["cpu"], 0);
    }

    #[test]
    fn labels_taints_and_reconcile() {
        let c = config(|a| {
            a.node_labels = Some([("a".to_string(), "b".to_string())].into());
            a.register_with_taints =
                Some(crate::config::flags::parse_taints("k=v:NoSchedule").unwrap());
        });
        let node = initial_node(&c, &machine(), &NodeState::healthy("x://1"), &[], &t(0));
        let labels = node.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "n1");
        assert_eq!(labels[LABEL_ARCH], "amd64");
        assert_eq!(labels[LABEL_OS_BETA], "linux");
        assert_eq!(labels["a"], "b");
        let taints = node.spec.clone().unwrap().taints.unwrap();
        assert_eq!(taints[0].key, "k");

        let mut existing = node.clone();
        assert!(!reconcile_existing(&mut existing, &c, &machine()));
        existing.metadata.labels.as_mut().unwrap().remove("a");
        existing.spec.as_mut().unwrap().taints = None;
        assert!(reconcile_existing(&mut existing, &c, &machine()));
        assert_eq!(existing.metadata.labels.as_ref().unwrap()["a"], "b");
        assert_eq!(existing.spec.unwrap().taints, None);
    }

    #[test]
    fn ready_condition_follows_inputs() {
        let healthy = NodeState::healthy("capstan://0.1.0");
        let cs = conditions(&[], &healthy, &t(10));
        let types: Vec<_> = cs.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        let ready = &cs[3];
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        assert_eq!(cs[0].reason.as_deref(), Some("KubeletHasSufficientMemory"));

        // Unchanged: transition time kept, heartbeat moves.
        let later = conditions(&cs, &healthy, &t(20));
        assert_eq!(later[3].last_transition_time, Some(t(10)));
        assert_eq!(later[3].last_heartbeat_time, Some(t(20)));

        let mut sick = healthy.clone();
        sick.runtime_errors = vec!["container runtime is down".into()];
        let down = conditions(&later, &sick, &t(30));
        assert_eq!(down[3].status, "False");
        assert_eq!(down[3].reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            down[3].message.as_deref(),
            Some("container runtime is down")
        );
        assert_eq!(down[3].last_transition_time, Some(t(30)));
        sick.network_errors = vec!["network not ready".into()];
        let both = conditions(&down, &sick, &t(40));
        assert_eq!(
            both[3].message.as_deref(),
            Some("[container runtime is down, network not ready]")
        );
        assert_eq!(both[3].last_transition_time, Some(t(30)));
        assert_eq!(
            conditions(&[], &NodeState::initial(), &t(0))[3].status,
            "False"
        );
    }

    #[test]
    fn change_detection_ignores_heartbeats() {
        let c = config(|_| {});
        let s = NodeState::healthy("capstan://0.1.0");
        let a = node_status(&c, &machine(), &s, &[], &[], &t(1));
        let b = node_status(
            &c,
            &machine(),
            &s,
            &[],
            a.conditions.as_ref().unwrap(),
            &t(2),
        );
        assert!(!status_changed(&a, &b));
        let mut other = s.clone();
        other.disk_pressure = true;
        let d = node_status(
            &c,
            &machine(),
            &other,
            &[],
            a.conditions.as_ref().unwrap(),
            &t(3),
        );
        assert!(status_changed(&a, &d));
    }

    #[test]
    fn daemon_endpoint_is_the_server_port() {
        let port = |c: &Config| {
            node_status(c, &machine(), &NodeState::initial(), &[], &[], &t(1))
                .daemon_endpoints
                .and_then(|d| d.kubelet_endpoint)
                .map(|e| e.port)
        };
        assert_eq!(port(&config(|_| {})), Some(10250));
        assert_eq!(port(&config(|a| a.port = Some(12345))), Some(12345));
    }
}
