//! The scheduler's view of nodes and pods: upstream's `framework.PodInfo`, `NodeInfo` and the
//! per-cycle `Snapshot`. A `PodInfo` compiles what plugins need from a pod once (requests, the
//! non-zero requests scoring uses, affinity terms with their selectors, host ports), and a
//! `NodeInfo` keeps sums per node (requested and non-zero requested resources, used ports, pods
//! with affinity) so that Filter and Score are arithmetic, not walks over pods.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodAffinityTerm, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::labels::{Labels, Selector};

/// Upstream's defaults for a container without a cpu/memory request, used by scoring only
/// (`DefaultMilliCPURequest`, `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A set of resource amounts (upstream `framework.Resource`): cpu in millicores, the others in
/// whole units; extended resources by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: Vec<(String, i64)>,
}

impl Resource {
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, q);
        }
        r
    }

    fn set(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu = machinery::quantity::milli_value(q),
            "memory" => self.memory = machinery::quantity::value(q),
            "ephemeral-storage" => self.ephemeral_storage = machinery::quantity::value(q),
            "pods" => self.allowed_pod_number = machinery::quantity::value(q),
            _ if is_scalar(name) => self.set_scalar(name, machinery::quantity::value(q)),
            _ => {}
        }
    }

    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar
            .iter()
            .find(|(n, _)| n == name)
            .map(|x| x.1)
            .unwrap_or(0)
    }

    pub fn set_scalar(&mut self, name: &str, v: i64) {
        match self.scalar.iter_mut().find(|(n, _)| n == name) {
            Some(x) => x.1 = v,
            None => self.scalar.push((name.into(), v)),
        }
    }

    /// The amount of `name` (`cpu` in millicores).
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.allowed_pod_number,
            _ => self.scalar(name),
        }
    }

    pub fn add(&mut self, o: &Resource) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.allowed_pod_number += o.allowed_pod_number;
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur + v);
        }
    }

    pub fn sub(&mut self, o: &Resource) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.allowed_pod_number -= o.allowed_pod_number;
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur - v);
        }
    }

    fn max_with(&mut self, o: &Resource) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (n, v) in &o.scalar {
            let cur = self.scalar(n);
            self.set_scalar(n, cur.max(*v));
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.iter().all(|x| x.1 == 0)
    }
}

/// Extended resources (`example.com/foo`), hugepages and attachable volumes: resources scored
/// and fitted by name (upstream `IsScalarResourceName`).
pub fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/')
            && !name.starts_with("kubernetes.io/")
            && !name.contains("requests."))
}

fn container_requests(c: &Container, non_zero: bool) -> Resource {
    let res = c.resources.as_ref();
    // Requests default to limits (the API server's defaulting); read both for objects that
    // skipped it.
    let mut r = Resource::from_list(res.and_then(|r| r.limits.as_ref()));
    if let Some(req) = res.and_then(|r| r.requests.as_ref()) {
        for (n, q) in req {
            r.set(n, q);
        }
    }
    if non_zero {
        let has = |n: &str| {
            res.and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(n))
                || res
                    .and_then(|r| r.limits.as_ref())
                    .is_some_and(|m| m.contains_key(n))
        };
        if !has("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    r
}

/// Upstream `resourcehelper.PodRequests`: the containers' sum, at least the largest init
/// container (plus the restartable init containers started before it), sidecars added, plus the
/// pod overhead. `non_zero` applies the scoring defaults to containers without cpu/memory.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resource {
    let mut reqs = Resource::default();
    let Some(spec) = pod.spec.as_ref() else {
        return reqs;
    };
    for c in &spec.containers {
        reqs.add(&container_requests(c, non_zero));
    }
    let mut restartable = Resource::default();
    let mut init_max = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            restartable.add(&r);
        } else {
            let mut tmp = r;
            tmp.add(&restartable);
            init_max.max_with(&tmp);
        }
    }
    reqs.max_with(&init_max);
    if let Some(o) = spec.overhead.as_ref() {
        reqs.add(&Resource::from_list(Some(o)));
    }
    reqs
}

/// A compiled `PodAffinityTerm`: the namespaces it applies to, its selector and topology key.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    pub namespaces: HashSet<String>,
    pub namespace_selector: Option<Selector>,
    pub selector: Selector,
    pub topology_key: String,
}

#[derive(Debug, Clone)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

impl AffinityTerm {
    /// Upstream `newAffinityTerm`: an empty namespace list and a nil namespace selector mean the
    /// pod's own namespace; matchLabelKeys/mismatchLabelKeys merge the pod's values.
    pub fn new(pod: &Pod, t: &PodAffinityTerm) -> AffinityTerm {
        let own_ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut namespaces: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(own_ns);
        }
        let mut selector = Selector::from_label_selector(t.label_selector.as_ref());
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = pod.metadata.labels.as_ref().and_then(|l| l.get(k)) {
                    selector.add_equals(k, v);
                }
            }
        }
        AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether the term selects `pod`. The namespace's labels are looked up only when a
    /// namespace selector needs them: this runs for every pod of the cluster in a cycle.
    pub fn matches(&self, pod: &PodInfo, snap: &Snapshot) -> bool {
        let listed = if self.namespaces.len() <= 4 {
            self.namespaces.iter().any(|n| *n == pod.namespace)
        } else {
            self.namespaces.contains(&pod.namespace)
        };
        let ns_ok = listed
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(snap.ns_labels(&pod.namespace)));
        ns_ok && self.selector.matches(pod.labels())
    }
}

/// A host port a pod uses: (protocol, host IP, port).
pub type HostPort = (String, String, i32);

/// Everything the plugins read from a pod, computed once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub priority: i32,
    pub requests: Resource,
    pub non_zero: Resource,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    pub host_ports: Vec<HostPort>,
    pub terminating: bool,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let spec = pod.spec.as_ref();
        let aff = spec.and_then(|s| s.affinity.as_ref());
        let pa = aff.and_then(|a| a.pod_affinity.as_ref());
        let paa = aff.and_then(|a| a.pod_anti_affinity.as_ref());
        let req = |ts: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            ts.into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(&pod, t))
                .collect()
        };
        let pref = |ts: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            ts.into_iter()
                .flatten()
                .map(|w| WeightedAffinityTerm {
                    term: AffinityTerm::new(&pod, &w.pod_affinity_term),
                    weight: w.weight,
                })
                .collect::<Vec<_>>()
        };
        let mut host_ports = Vec::new();
        for c in spec.map(|s| s.containers.iter()).into_iter().flatten() {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push((
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                        hp,
                    ));
                }
            }
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        PodInfo {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            required_affinity: req(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: req(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: pref(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: pref(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            host_ports,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            pod,
        }
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.pod.metadata.labels.as_ref()
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> =
            std::sync::OnceLock::new();
        self.pod
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    /// The pod's start time (creation time when it has none), for preemption's ordering.
    pub fn start_time(&self) -> i64 {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .or(self.pod.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.as_nanosecond() as i64)
            .unwrap_or(0)
    }
}

/// An image on a node: its size and on how many nodes it is (`ImageStateSummary`).
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub node: Option<Arc<Node>>,
    pub name: String,
    pub pods: Vec<Arc<PodInfo>>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
    pub used_ports: Vec<HostPort>,
    pub requested: Resource,
    pub non_zero_requested: Resource,
    pub allocatable: Resource,
    /// Normalised image name → size in bytes.
    pub images: HashMap<String, i64>,
    pub generation: u64,
    /// `spec.unschedulable` and `spec.taints`, kept beside the counts: Filter and Score read
    /// them for every node in every cycle, and the Node object is one more pointer away.
    pub unschedulable: bool,
    pub(crate) taints: Vec<Taint>,
}

static EMPTY_LABELS: Labels = BTreeMap::new();

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        self.taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        self.allocatable =
            Resource::from_list(node.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        self.images.clear();
        for img in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            for n in img.names.iter().flatten() {
                self.images
                    .insert(normalized_image_name(n), img.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(node);
    }

    pub fn labels(&self) -> &Labels {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY_LABELS)
    }

    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.milli_cpu += p.non_zero.milli_cpu;
        self.non_zero_requested.memory += p.non_zero.memory;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(p);
        self.generation += 1;
    }

    /// Removes the pod with `uid`/`key`; false when it was not there.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.key == key) else {
            return false;
        };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.milli_cpu -= p.non_zero.milli_cpu;
        self.non_zero_requested.memory -= p.non_zero.memory;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|x| x == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        self.generation += 1;
        true
    }
}

/// Upstream `normalizedImageName`: a name without a tag or digest gets `:latest`.
pub fn normalized_image_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The per-cycle view of the cluster (upstream `Snapshot`): the nodes in a stable order, and the
/// cluster-wide aggregates some plugins need.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    pub index: HashMap<String, usize>,
    /// Indices of nodes with pods that have (anti-)affinity terms.
    pub have_affinity: Vec<usize>,
    pub have_required_anti_affinity: Vec<usize>,
    /// Image → number of nodes that have it.
    pub image_nodes: HashMap<String, usize>,
    /// Namespace → its labels (for namespaceSelectors).
    pub namespaces: Arc<HashMap<String, Labels>>,
    /// Pods nominated to nodes (preemptors waiting for victims to go): node → pods.
    pub nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    /// Volumes: claims and persistent volumes for VolumeBinding/VolumeRestrictions.
    pub volumes: Arc<crate::plugins::volumes::VolumeState>,
    /// PodDisruptionBudgets for preemption.
    pub pdbs: Arc<Vec<Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget>>>,
    /// Selectors of Services, ReplicaSets, ReplicationControllers and StatefulSets per
    /// namespace (for PodTopologySpread's system default constraints).
    pub owner_selectors: Arc<HashMap<String, Vec<Selector>>>,
}

impl Snapshot {
    /// Builds a snapshot from node infos (tests and benchmarks).
    pub fn from_nodes(infos: Vec<NodeInfo>) -> Snapshot {
        let mut s = Snapshot {
            nodes: infos.into_iter().map(Arc::new).collect(),
            ..Default::default()
        };
        s.reindex();
        s
    }

    /// Recomputes the index and aggregates after `nodes` changed.
    pub fn reindex(&mut self) {
        self.index = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        self.recompute_affinity_lists();
        self.recompute_images();
    }

    pub fn recompute_affinity_lists(&mut self) {
        self.have_affinity.clear();
        self.have_required_anti_affinity.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pods_with_affinity > 0 {
                self.have_affinity.push(i);
            }
            if n.pods_with_required_anti_affinity > 0 {
                self.have_required_anti_affinity.push(i);
            }
        }
    }

    pub fn recompute_images(&mut self) {
        self.image_nodes.clear();
        for n in &self.nodes {
            for img in n.images.keys() {
                *self.image_nodes.entry(img.clone()).or_default() += 1;
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn ns_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns)
    }
}
