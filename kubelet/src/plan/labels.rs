//! How the kubelet recognises its sandboxes and containers in the runtime (upstream's
//! `kuberuntime/labels.go`): labels carry the pod's name, namespace and UID and the container's
//! name (the runtime filters on them); annotations carry what the kubelet needs back after a
//! restart — the spec hash, the restart count, the termination-message settings, grace periods,
//! the preStop handler and the container's ports. The same keys as upstream, so a kubelet started
//! on a node that upstream's kubelet ran (or the other way round) adopts its containers.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

pub const POD_DELETION_GRACE_PERIOD: &str = "io.kubernetes.pod.deletionGracePeriod";
pub const POD_TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
pub const CONTAINER_HASH: &str = "io.kubernetes.container.hash";
pub const CONTAINER_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const CONTAINER_TERMINATION_MESSAGE_PATH: &str =
    "io.kubernetes.container.terminationMessagePath";
pub const CONTAINER_TERMINATION_MESSAGE_POLICY: &str =
    "io.kubernetes.container.terminationMessagePolicy";
pub const CONTAINER_PRESTOP_HANDLER: &str = "io.kubernetes.container.preStopHandler";
pub const CONTAINER_PORTS: &str = "io.kubernetes.container.ports";
pub const CONTAINER_TYPE: &str = "io.kubernetes.container.type";

/// Values of [`CONTAINER_TYPE`].
pub const TYPE_INIT: &str = "init";
pub const TYPE_CONTAINER: &str = "container";
pub const TYPE_EPHEMERAL: &str = "ephemeral";

/// The container's spec hash (upstream's `HashContainer`): FNV-1a (32 bit) of the JSON of the
/// fields whose change restarts the container — its name and image, as upstream since 1.31, so
/// that a kubelet upgrade that adds API fields does not restart every container.
pub fn hash_container(c: &Container) -> u64 {
    let json =
        serde_json::json!({ "name": c.name, "image": c.image.as_deref().unwrap_or_default() })
            .to_string();
    let mut h: u32 = 0x811c_9dc5;
    for b in json.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    u64::from(h)
}

/// The sandbox's labels (upstream's `newPodLabels`): the pod's own plus its identity.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    l.insert(
        POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l.insert(POD_UID.into(), pod.metadata.uid.clone().unwrap_or_default());
    l
}

/// The sandbox's annotations: the pod's own.
pub fn pod_annotations(pod: &Pod) -> HashMap<String, String> {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A container's labels (upstream's `newContainerLabels`).
pub fn container_labels(c: &Container, pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (
            POD_NAME.into(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        (
            POD_NAMESPACE.into(),
            pod.metadata.namespace.clone().unwrap_or_default(),
        ),
        (POD_UID.into(), pod.metadata.uid.clone().unwrap_or_default()),
        (CONTAINER_NAME.into(), c.name.clone()),
    ])
}

/// A container's annotations (upstream's `newContainerAnnotations`); `extra` (device plugins'
/// and the like) go in first and are overridden by the kubelet's own.
pub fn container_annotations(
    c: &Container,
    pod: &Pod,
    restart_count: i32,
    extra: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut a = extra.clone();
    a.insert(CONTAINER_HASH.into(), format!("{:x}", hash_container(c)));
    a.insert(CONTAINER_RESTART_COUNT.into(), restart_count.to_string());
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_PATH.into(),
        c.termination_message_path.clone().unwrap_or_default(),
    );
    a.insert(
        CONTAINER_TERMINATION_MESSAGE_POLICY.into(),
        c.termination_message_policy.clone().unwrap_or_default(),
    );
    if let Some(g) = pod.metadata.deletion_grace_period_seconds {
        a.insert(POD_DELETION_GRACE_PERIOD.into(), g.to_string());
    }
    if let Some(g) = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        a.insert(POD_TERMINATION_GRACE_PERIOD.into(), g.to_string());
    }
    if let Some(pre) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        if let Ok(j) = serde_json::to_string(pre) {
            a.insert(CONTAINER_PRESTOP_HANDLER.into(), j);
        }
    }
    if let Some(ports) = c.ports.as_ref().filter(|p| !p.is_empty()) {
        if let Ok(j) = serde_json::to_string(ports) {
            a.insert(CONTAINER_PORTS.into(), j);
        }
    }
    let spec = pod.spec.as_ref();
    let kind = if spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|v| v.iter().any(|x| x.name == c.name))
    {
        Some(TYPE_INIT)
    } else if spec.is_some_and(|s| s.containers.iter().any(|x| x.name == c.name)) {
        Some(TYPE_CONTAINER)
    } else if spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|v| v.iter().any(|x| x.name == c.name))
    {
        Some(TYPE_EPHEMERAL)
    } else {
        None
    };
    if let Some(kind) = kind {
        a.insert(CONTAINER_TYPE.into(), kind.into());
    }
    a
}

/// What a container's annotations say (upstream's `getContainerInfoFromAnnotations`); missing or
/// malformed values read as zero/empty, as upstream.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerAnnotations {
    pub hash: u64,
    pub restart_count: i32,
    pub pod_deletion_grace_period: Option<i64>,
    pub pod_termination_grace_period: Option<i64>,
    pub termination_message_path: String,
    pub termination_message_policy: String,
    pub pre_stop: Option<k8s_openapi::api::core::v1::LifecycleHandler>,
    pub container_type: String,
}

impl ContainerAnnotations {
    pub fn parse(a: &HashMap<String, String>) -> Self {
        ContainerAnnotations {
            hash: a
                .get(CONTAINER_HASH)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0),
            restart_count: a
                .get(CONTAINER_RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            pod_deletion_grace_period: a
                .get(POD_DELETION_GRACE_PERIOD)
                .and_then(|v| v.parse().ok()),
            pod_termination_grace_period: a
                .get(POD_TERMINATION_GRACE_PERIOD)
                .and_then(|v| v.parse().ok()),
            termination_message_path: a
                .get(CONTAINER_TERMINATION_MESSAGE_PATH)
                .cloned()
                .unwrap_or_default(),
            termination_message_policy: a
                .get(CONTAINER_TERMINATION_MESSAGE_POLICY)
                .cloned()
                .unwrap_or_default(),
            pre_stop: a
                .get(CONTAINER_PRESTOP_HANDLER)
                .and_then(|v| serde_json::from_str(v).ok()),
            container_type: a.get(CONTAINER_TYPE).cloned().unwrap_or_default(),
        }
    }
}

/// The label selector of everything the runtime holds for one pod.
pub fn pod_selector(uid: &str) -> HashMap<String, String> {
    HashMap::from([(POD_UID.to_string(), uid.to_string())])
}
