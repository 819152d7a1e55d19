//! Pod QoS classes and the pod cgroup hierarchy, as upstream's kubelet lays them out.
//!
//! * [`compute_pod_qos`] is upstream's `ComputePodQOS`: requests and limits of every container
//!   and init container (sidecars included; ephemeral containers cannot have resources), or the
//!   pod-level `spec.resources` when set (the 1.33 PodLevelResources shape); only cpu and memory
//!   count. No requests and no limits → BestEffort; cpu and memory limits everywhere, equal to
//!   the requests → Guaranteed; anything else → Burstable.
//! * [`resource_config_for_pod`] is upstream's `ResourceConfigForPod`: the pod cgroup's CPU shares
//!   from the summed requests (init containers by max, sidecars added, plus the pod overhead),
//!   CFS quota only when every container declares a CPU limit, memory limit only when every
//!   container declares a memory limit, BestEffort pods get 2 shares.
//! * [`PodCgroups`] applies that through cri's [`CgroupManager`] (so v1 and v2 behave alike) with
//!   the cgroupfs driver's names: `<root>/kubepods` (node allocatable enforced there: shares from
//!   allocatable CPU, memory limit = allocatable memory), `kubepods/burstable` (shares = the sum
//!   of the Burstable pods' CPU requests, recomputed whenever a pod comes or goes, as upstream's
//!   QoS container manager does), `kubepods/besteffort` (2 shares), and one `pod<uid>` cgroup per
//!   pod, Guaranteed pods directly below `kubepods`.
//!
//! Quantities are read through [`crate::quantity`] as exact nano-units, so that sums and
//! comparisons are exact and `Value()`/`MilliValue()` round up as upstream's do. The CPU
//! conversions ([`milli_cpu_to_shares`], [`milli_cpu_to_quota`]) serve the pod cgroups here and
//! the container configs of [`crate::plan::config`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use cri::cgroups::{AnyCgroupManager, CgroupError, CgroupManager};
use cri::pb::LinuxContainerResources;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::plan::is_sidecar;
use crate::quantity::{milli_value, nanos_to_milli, nanos_to_value, quantity_nanos, value};

/// Upstream's `MinShares`.
pub const MIN_SHARES: u64 = 2;
/// Upstream's `MaxShares`.
pub const MAX_SHARES: u64 = 262_144;
/// Upstream's `SharesPerCPU`.
pub const SHARES_PER_CPU: u64 = 1024;
/// Upstream's `MinQuotaPeriod` (µs).
pub const MIN_QUOTA_PERIOD: i64 = 1000;
/// The default CFS period (µs), `cpuCFSQuotaPeriod`.
pub const DEFAULT_CPU_PERIOD: u64 = 100_000;
/// The node-level cgroup all pods live under.
pub const KUBEPODS: &str = "kubepods";
/// The resource names QoS looks at.
pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// The API spelling (`status.qosClass`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    pub fn parse(s: &str) -> Option<QosClass> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
}

/// Errors of the pod cgroup manager.
#[derive(Debug, thiserror::Error)]
pub enum QosError {
    #[error("pod has no uid")]
    NoUid,
    #[error("pod cgroup {path}: {source}")]
    Cgroup {
        path: String,
        #[source]
        source: CgroupError,
    },
}

/// A resource list as exact nano-unit sums.
pub type ResourceSums = BTreeMap<String, i128>;

fn to_sums(list: Option<&BTreeMap<String, Quantity>>) -> ResourceSums {
    list.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), quantity_nanos(v)))
        .collect()
}

fn add_into(into: &mut ResourceSums, add: &ResourceSums) {
    for (k, v) in add {
        *into.entry(k.clone()).or_default() += v;
    }
}

fn max_into(into: &mut ResourceSums, other: &ResourceSums) {
    for (k, v) in other {
        let e = into.entry(k.clone()).or_insert(*v);
        if *v > *e {
            *e = *v;
        }
    }
}

/// A container's requests as the API server defaults them: a resource with a limit and no
/// request is requested at its limit.
pub fn container_requests(r: Option<&ResourceRequirements>) -> ResourceSums {
    let mut req = to_sums(r.and_then(|r| r.requests.as_ref()));
    for (k, v) in to_sums(r.and_then(|r| r.limits.as_ref())) {
        req.entry(k).or_insert(v);
    }
    req
}

pub fn container_limits(r: Option<&ResourceRequirements>) -> ResourceSums {
    to_sums(r.and_then(|r| r.limits.as_ref()))
}

fn pod_level(pod: &Pod) -> Option<&ResourceRequirements> {
    pod.spec.as_ref()?.resources.as_ref().filter(|r| {
        let has = |l: &Option<BTreeMap<String, Quantity>>| {
            l.as_ref()
                .is_some_and(|l| l.keys().any(|k| k == CPU || k == MEMORY))
        };
        has(&r.requests) || has(&r.limits)
    })
}

/// Aggregates per-container lists as upstream's `AggregateContainerRequests/Limits`: regular
/// containers and sidecars add up; a regular init container runs alongside the sidecars started
/// before it, and the pod needs the max of that and the steady state. `each` sees every
/// container's (init: effective) list.
fn aggregate(
    pod: &Pod,
    list: impl Fn(&Container) -> ResourceSums,
    mut each: impl FnMut(&ResourceSums),
) -> ResourceSums {
    let mut total = ResourceSums::new();
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    for c in &spec.containers {
        let l = list(c);
        each(&l);
        add_into(&mut total, &l);
    }
    let mut sidecars = ResourceSums::new();
    let mut init_max = ResourceSums::new();
    for c in spec.init_containers.iter().flatten() {
        let l = list(c);
        let effective = if is_sidecar(c) {
            add_into(&mut total, &l);
            add_into(&mut sidecars, &l);
            sidecars.clone()
        } else {
            let mut tmp = l;
            add_into(&mut tmp, &sidecars);
            tmp
        };
        each(&effective);
        max_into(&mut init_max, &effective);
    }
    max_into(&mut total, &init_max);
    total
}

/// Upstream `PodRequests`: aggregated container requests (pod-level requests win for cpu and
/// memory when set), plus the pod overhead.
pub fn pod_requests(pod: &Pod) -> ResourceSums {
    let mut reqs = aggregate(pod, |c| container_requests(c.resources.as_ref()), |_| {});
    if let Some(r) = pod_level(pod) {
        for (k, v) in to_sums(r.requests.as_ref()) {
            if k == CPU || k == MEMORY {
                reqs.insert(k, v);
            }
        }
    }
    if let Some(o) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) {
        add_into(&mut reqs, &to_sums(Some(o)));
    }
    reqs
}

/// Upstream `PodLimits` plus whether every container declared a cpu / memory limit.
pub fn pod_limits(pod: &Pod) -> (ResourceSums, bool, bool) {
    let (mut cpu_declared, mut mem_declared) = (true, true);
    let agg = aggregate(
        pod,
        |c| container_limits(c.resources.as_ref()),
        |l| {
            if l.get(CPU).copied().unwrap_or(0) == 0 {
                cpu_declared = false;
            }
            if l.get(MEMORY).copied().unwrap_or(0) == 0 {
                mem_declared = false;
            }
        },
    );
    let mut limits = ResourceSums::new();
    if let Some(r) = pod_level(pod) {
        for (k, v) in to_sums(r.limits.as_ref()) {
            if k == CPU || k == MEMORY {
                if v != 0 {
                    if k == CPU {
                        cpu_declared = true;
                    } else {
                        mem_declared = true;
                    }
                }
                limits.insert(k, v);
            }
        }
    }
    for (k, v) in agg {
        limits.entry(k).or_insert(v);
    }
    if let Some(o) = pod.spec.as_ref().and_then(|s| s.overhead.as_ref()) {
        for (k, v) in to_sums(Some(o)) {
            if let Some(l) = limits.get_mut(&k) {
                *l += v;
            }
        }
    }
    (limits, cpu_declared, mem_declared)
}

/// Upstream `GetPodQOS`: the recorded `status.qosClass` if any, else [`compute_pod_qos`].
pub fn pod_qos(pod: &Pod) -> QosClass {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.as_deref())
        .and_then(QosClass::parse)
        .unwrap_or_else(|| compute_pod_qos(pod))
}

/// Upstream `ComputePodQOS`.
pub fn compute_pod_qos(pod: &Pod) -> QosClass {
    let mut requests = ResourceSums::new();
    let mut limits = ResourceSums::new();
    let mut guaranteed = true;
    let mut account = |r: Option<&ResourceRequirements>, defaulted: bool| {
        let reqs = if defaulted {
            container_requests(r)
        } else {
            to_sums(r.and_then(|r| r.requests.as_ref()))
        };
        for (k, v) in reqs {
            if (k == CPU || k == MEMORY) && v > 0 {
                *requests.entry(k).or_default() += v;
            }
        }
        let mut found = (false, false);
        for (k, v) in container_limits(r) {
            if (k == CPU || k == MEMORY) && v > 0 {
                if k == CPU {
                    found.0 = true;
                } else {
                    found.1 = true;
                }
                *limits.entry(k).or_default() += v;
            }
        }
        found == (true, true)
    };
    if let Some(r) = pod_level(pod) {
        let has_limits = r.limits.as_ref().is_some_and(|l| !l.is_empty());
        let all = account(Some(r), false);
        if has_limits && !all {
            guaranteed = false;
        }
    } else if let Some(spec) = pod.spec.as_ref() {
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if !account(c.resources.as_ref(), true) {
                guaranteed = false;
            }
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return QosClass::BestEffort;
    }
    if guaranteed
        && requests
            .iter()
            .all(|(k, v)| limits.get(k).is_some_and(|l| l == v))
        && requests.len() == limits.len()
    {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// Upstream `MilliCPUToShares`: CPU shares for a request in millicores (2 for none, capped at
/// 262144).
pub fn milli_cpu_to_shares(milli: i64) -> u64 {
    if milli <= 0 {
        return MIN_SHARES;
    }
    let shares = (milli as u64).saturating_mul(SHARES_PER_CPU) / 1000;
    shares.clamp(MIN_SHARES, MAX_SHARES)
}

/// Upstream `MilliCPUToQuota`: the CFS quota (µs) for a limit in millicores over `period` µs
/// (0 = no limit; at least 1 ms otherwise).
pub fn milli_cpu_to_quota(milli: i64, period: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli * period / 1000).max(MIN_QUOTA_PERIOD)
}

/// The pod cgroup's settings (`None`: left alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs; -1 = unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory: Option<i64>,
}

impl ResourceConfig {
    /// As CRI resources for [`CgroupManager::update`].
    pub fn to_cri(&self) -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_shares: self.cpu_shares.unwrap_or(0) as i64,
            cpu_quota: self.cpu_quota.unwrap_or(0),
            cpu_period: self.cpu_period.unwrap_or(0) as i64,
            memory_limit_in_bytes: self.memory.unwrap_or(0),
            ..Default::default()
        }
    }
}

/// Upstream `ResourceConfigForPod`.
pub fn resource_config_for_pod(
    pod: &Pod,
    enforce_cpu_limits: bool,
    cpu_period: u64,
) -> ResourceConfig {
    let reqs = pod_requests(pod);
    let (limits, cpu_declared, mem_declared) = pod_limits(pod);
    let cpu_requests = reqs.get(CPU).map(|v| nanos_to_milli(*v)).unwrap_or(0);
    let cpu_limits = limits.get(CPU).map(|v| nanos_to_milli(*v)).unwrap_or(0);
    let memory_limits = limits.get(MEMORY).map(|v| nanos_to_value(*v)).unwrap_or(0);
    let shares = milli_cpu_to_shares(cpu_requests);
    let quota = if enforce_cpu_limits {
        milli_cpu_to_quota(cpu_limits, cpu_period as i64)
    } else {
        -1
    };
    match pod_qos(pod) {
        QosClass::Guaranteed => ResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: Some(quota),
            cpu_period: Some(cpu_period),
            memory: Some(memory_limits),
        },
        QosClass::Burstable => ResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: cpu_declared.then_some(quota),
            cpu_period: cpu_declared.then_some(cpu_period),
            memory: mem_declared.then_some(memory_limits),
        },
        QosClass::BestEffort => ResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        },
    }
}

/// What the node offers pods (capacity minus reservations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

impl NodeAllocatable {
    /// From a Node's `status.allocatable`-style list.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> NodeAllocatable {
        NodeAllocatable {
            cpu_milli: list.get(CPU).map(milli_value).unwrap_or(0),
            memory_bytes: list.get(MEMORY).map(value).unwrap_or(0),
        }
    }
}

/// Settings of the pod cgroup manager (the kubelet's cgroupRoot, cpuCFSQuota,
/// cpuCFSQuotaPeriod and podPidsLimit).
#[derive(Debug, Clone)]
pub struct PodCgroupsConfig {
    /// `--cgroup-root` (`/` by default).
    pub cgroup_root: String,
    pub enforce_cpu_limits: bool,
    pub cpu_period: u64,
    /// Per-pod pids limit (`None` or ≤ 0: unlimited).
    pub pod_pids_limit: Option<i64>,
}

impl Default for PodCgroupsConfig {
    fn default() -> Self {
        PodCgroupsConfig {
            cgroup_root: "/".into(),
            enforce_cpu_limits: true,
            cpu_period: DEFAULT_CPU_PERIOD,
            pod_pids_limit: None,
        }
    }
}

/// The QoS cgroup hierarchy and per-pod cgroups (cgroupfs driver names).
pub struct PodCgroups {
    mgr: AnyCgroupManager,
    config: PodCgroupsConfig,
    /// CPU requests (milli) of the Burstable pods we manage, by uid.
    burstable: Mutex<HashMap<String, i64>>,
}

impl PodCgroups {
    pub fn new(mgr: AnyCgroupManager, config: PodCgroupsConfig) -> PodCgroups {
        PodCgroups {
            mgr,
            config,
            burstable: Mutex::new(HashMap::new()),
        }
    }

    pub fn manager(&self) -> &AnyCgroupManager {
        &self.mgr
    }

    fn join(&self, rel: &str) -> String {
        let root = self.config.cgroup_root.trim_end_matches('/');
        format!("{root}/{rel}")
    }

    /// `<root>/kubepods`.
    pub fn kubepods(&self) -> String {
        self.join(KUBEPODS)
    }

    /// The cgroup of a QoS class (Guaranteed pods live in `kubepods` itself).
    pub fn qos_cgroup(&self, class: QosClass) -> String {
        match class {
            QosClass::Guaranteed => self.kubepods(),
            QosClass::Burstable => self.join("kubepods/burstable"),
            QosClass::BestEffort => self.join("kubepods/besteffort"),
        }
    }

    /// A pod's cgroup name, the CRI sandbox's `cgroup_parent`.
    pub fn pod_cgroup(&self, class: QosClass, uid: &str) -> String {
        format!("{}/pod{uid}", self.qos_cgroup(class))
    }

    fn cgroup_err(path: &str) -> impl FnOnce(CgroupError) -> QosError + '_ {
        move |source| QosError::Cgroup {
            path: path.to_string(),
            source,
        }
    }

    /// Creates `kubepods` (enforcing node allocatable), `burstable` and `besteffort`.
    pub fn ensure_qos_hierarchy(&self, allocatable: &NodeAllocatable) -> Result<(), QosError> {
        let kubepods = self.kubepods();
        self.mgr
            .create(&kubepods)
            .map_err(Self::cgroup_err(&kubepods))?;
        let node = ResourceConfig {
            cpu_shares: (allocatable.cpu_milli > 0)
                .then(|| milli_cpu_to_shares(allocatable.cpu_milli)),
            memory: (allocatable.memory_bytes > 0).then_some(allocatable.memory_bytes),
            ..Default::default()
        };
        self.mgr
            .update(&kubepods, &node.to_cri())
            .map_err(Self::cgroup_err(&kubepods))?;
        let besteffort = self.qos_cgroup(QosClass::BestEffort);
        self.mgr
            .create(&besteffort)
            .map_err(Self::cgroup_err(&besteffort))?;
        let shares = ResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        };
        self.mgr
            .update(&besteffort, &shares.to_cri())
            .map_err(Self::cgroup_err(&besteffort))?;
        let burstable = self.qos_cgroup(QosClass::Burstable);
        self.mgr
            .create(&burstable)
            .map_err(Self::cgroup_err(&burstable))?;
        self.update_burstable_shares()
    }

    fn update_burstable_shares(&self) -> Result<(), QosError> {
        let total: i64 = self.burstable.lock().unwrap().values().sum();
        let burstable = self.qos_cgroup(QosClass::Burstable);
        let cfg = ResourceConfig {
            cpu_shares: Some(milli_cpu_to_shares(total)),
            ..Default::default()
        };
        self.mgr
            .update(&burstable, &cfg.to_cri())
            .map_err(Self::cgroup_err(&burstable))
    }

    /// Creates (or updates) the pod's cgroup with its pod-level limits; returns the cgroup
    /// parent for the CRI sandbox.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, QosError> {
        let uid = pod
            .metadata
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .ok_or(QosError::NoUid)?;
        let class = pod_qos(pod);
        let path = self.pod_cgroup(class, uid);
        self.mgr.create(&path).map_err(Self::cgroup_err(&path))?;
        let cfg =
            resource_config_for_pod(pod, self.config.enforce_cpu_limits, self.config.cpu_period);
        self.mgr
            .update(&path, &cfg.to_cri())
            .map_err(Self::cgroup_err(&path))?;
        if let Some(limit) = self.config.pod_pids_limit.filter(|l| *l > 0) {
            if self.mgr.has_controller("pids") {
                self.mgr
                    .set_pids_limit(&path, Some(limit))
                    .map_err(Self::cgroup_err(&path))?;
            }
        }
        let changed = {
            let mut b = self.burstable.lock().unwrap();
            if class == QosClass::Burstable {
                let milli = pod_requests(pod)
                    .get(CPU)
                    .map(|v| nanos_to_milli(*v))
                    .unwrap_or(0);
                b.insert(uid.to_string(), milli) != Some(milli)
            } else {
                b.remove(uid).is_some()
            }
        };
        if changed {
            self.update_burstable_shares()?;
        }
        Ok(path)
    }

    /// The filesystem directory of a cgroup path in the hierarchy that carries `memory`
    /// (v1; falls back to `cpu`) or the unified one (v2).
    fn fs_dir(&self, path: &str) -> Option<PathBuf> {
        let base = match &self.mgr {
            AnyCgroupManager::V1(m) => m
                .hierarchy("memory")
                .or_else(|| m.hierarchy("cpu"))?
                .to_path_buf(),
            AnyCgroupManager::V2(m) => m.root().to_path_buf(),
        };
        Some(base.join(path.trim_start_matches('/')))
    }

    /// The pod's cgroup if it exists, in any QoS class.
    pub fn find_pod(&self, uid: &str) -> Option<String> {
        [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ]
        .into_iter()
        .map(|c| self.pod_cgroup(c, uid))
        .find(|p| self.fs_dir(p).is_some_and(|d| d.is_dir()))
    }

    pub fn pod_cgroup_exists(&self, uid: &str) -> bool {
        self.find_pod(uid).is_some()
    }

    /// Removes the pod's cgroup (wherever it is) and forgets its CPU requests.
    pub fn remove_pod(&self, uid: &str) -> Result<(), QosError> {
        for class in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let path = self.pod_cgroup(class, uid);
            if self.fs_dir(&path).is_some_and(|d| d.is_dir()) {
                self.mgr.remove(&path).map_err(Self::cgroup_err(&path))?;
            }
        }
        if self.burstable.lock().unwrap().remove(uid).is_some() {
            self.update_burstable_shares()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub(crate) fn res(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Option<ResourceRequirements> {
        let list = |l: &[(&str, &str)]| {
            (!l.is_empty()).then(|| {
                l.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Some(ResourceRequirements {
            requests: list(req),
            limits: list(lim),
            ..Default::default()
        })
    }

    fn ctr(name: &str, r: Option<ResourceRequirements>) -> Container {
        Container {
            name: name.into(),
            resources: r,
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, init: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("1234".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                init_containers: (!init.is_empty()).then_some(init),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn qos_classes() {
        let g = res(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        let limits_only = res(&[], &[("cpu", "500m"), ("memory", "64Mi")]);
        let req_only = res(&[("cpu", "100m")], &[]);
        let cases = [
            (pod(vec![ctr("a", None)], vec![]), QosClass::BestEffort),
            (pod(vec![ctr("a", g.clone())], vec![]), QosClass::Guaranteed),
            (
                pod(vec![ctr("a", limits_only.clone())], vec![]),
                QosClass::Guaranteed,
            ),
            (
                pod(vec![ctr("a", req_only.clone())], vec![]),
                QosClass::Burstable,
            ),
            (
                pod(vec![ctr("a", g.clone()), ctr("b", None)], vec![]),
                QosClass::Burstable,
            ),
            // An init container without resources breaks Guaranteed.
            (
                pod(vec![ctr("a", g.clone())], vec![ctr("i", None)]),
                QosClass::Burstable,
            ),
            (
                pod(vec![ctr("a", g.clone())], vec![ctr("i", g.clone())]),
                QosClass::Guaranteed,
            ),
            // Requests below limits.
            (
                pod(
                    vec![ctr(
                        "a",
                        res(
                            &[("cpu", "1"), ("memory", "1Gi")],
                            &[("cpu", "2"), ("memory", "1Gi")],
                        ),
                    )],
                    vec![],
                ),
                QosClass::Burstable,
            ),
            // Only non-QoS resources: BestEffort.
            (
                pod(
                    vec![ctr("a", res(&[("ephemeral-storage", "1Gi")], &[]))],
                    vec![],
                ),
                QosClass::BestEffort,
            ),
        ];
        for (i, (p, want)) in cases.iter().enumerate() {
            assert_eq!(compute_pod_qos(p), *want, "case {i}");
        }
        // The recorded class wins.
        let mut p = pod(vec![ctr("a", None)], vec![]);
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            qos_class: Some("Burstable".into()),
            ..Default::default()
        });
        assert_eq!(pod_qos(&p), QosClass::Burstable);
    }

    #[test]
    fn pod_level_resources_decide_qos() {
        let mut p = pod(vec![ctr("a", None)], vec![]);
        p.spec.as_mut().unwrap().resources = res(
            &[("cpu", "1"), ("memory", "1Gi")],
            &[("cpu", "1"), ("memory", "1Gi")],
        );
        assert_eq!(compute_pod_qos(&p), QosClass::Guaranteed);
        let cfg = resource_config_for_pod(&p, true, DEFAULT_CPU_PERIOD);
        assert_eq!(cfg.cpu_quota, Some(100_000));
        assert_eq!(cfg.memory, Some(1 << 30));
        p.spec.as_mut().unwrap().resources = res(&[("cpu", "1")], &[("cpu", "2")]);
        assert_eq!(compute_pod_qos(&p), QosClass::Burstable);
    }

    #[test]
    fn requests_with_init_containers_and_sidecars() {
        // Containers 100m + 200m, sidecar 50m (steady state 350m); the 1-cpu init container
        // comes before the sidecar, so it runs alone: max(1000m, 350m).
        let mut sidecar = ctr("s", res(&[("cpu", "50m")], &[]));
        sidecar.restart_policy = Some("Always".into());
        let p = pod(
            vec![
                ctr("a", res(&[("cpu", "100m")], &[])),
                ctr("b", res(&[("cpu", "200m")], &[])),
            ],
            vec![ctr("i", res(&[("cpu", "1")], &[])), sidecar.clone()],
        );
        assert_eq!(nanos_to_milli(pod_requests(&p)[CPU]), 1000);
        // Init after the sidecar: 1000 + 50 = 1050 vs 350.
        let p2 = pod(
            vec![ctr("a", res(&[("cpu", "100m")], &[]))],
            vec![sidecar, ctr("i", res(&[("cpu", "1")], &[]))],
        );
        assert_eq!(nanos_to_milli(pod_requests(&p2)[CPU]), 1050);
        // Overhead adds on top.
        let mut p3 = p2.clone();
        p3.spec.as_mut().unwrap().overhead =
            Some([("cpu".to_string(), Quantity("250m".into()))].into());
        assert_eq!(nanos_to_milli(pod_requests(&p3)[CPU]), 1300);
    }

    #[test]
    fn resource_configs() {
        // Guaranteed: shares, quota and memory.
        let g = pod(
            vec![ctr("a", res(&[], &[("cpu", "500m"), ("memory", "128Mi")]))],
            vec![],
        );
        assert_eq!(
            resource_config_for_pod(&g, true, DEFAULT_CPU_PERIOD),
            ResourceConfig {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(128 << 20),
            }
        );
        // cpu limits not enforced: quota -1.
        assert_eq!(
            resource_config_for_pod(&g, false, DEFAULT_CPU_PERIOD).cpu_quota,
            Some(-1)
        );
        // Burstable with cpu limits everywhere but one container lacking a memory limit.
        let b = pod(
            vec![
                ctr(
                    "a",
                    res(&[("cpu", "100m")], &[("cpu", "200m"), ("memory", "64Mi")]),
                ),
                ctr("b", res(&[("cpu", "100m")], &[("cpu", "300m")])),
            ],
            vec![],
        );
        assert_eq!(
            resource_config_for_pod(&b, true, DEFAULT_CPU_PERIOD),
            ResourceConfig {
                cpu_shares: Some(204),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: None,
            }
        );
        // Burstable without cpu limits: no quota; memory limits everywhere: memory set.
        let b2 = pod(
            vec![ctr("a", res(&[("cpu", "1m")], &[("memory", "64Mi")]))],
            vec![],
        );
        assert_eq!(
            resource_config_for_pod(&b2, true, DEFAULT_CPU_PERIOD),
            ResourceConfig {
                cpu_shares: Some(2),
                cpu_quota: None,
                cpu_period: None,
                memory: Some(64 << 20),
            }
        );
        // BestEffort: 2 shares, nothing else.
        let be = pod(vec![ctr("a", None)], vec![]);
        assert_eq!(
            resource_config_for_pod(&be, true, DEFAULT_CPU_PERIOD),
            ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
        assert_eq!(milli_cpu_to_quota(1, 100_000), 1000);
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
    }
}
