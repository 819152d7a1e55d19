//! Container garbage collection (upstream's `kuberuntime_gc.go` behind `container_gc.go`): every
//! minute ([`CONTAINER_GC_PERIOD`]) the kubelet removes what dead pods and restarts leave in the
//! runtime.
//!
//! 1. **Containers.** Every container that is not running is evictable once older than
//!    `min_age`. They are grouped per (pod UID, container name), the "evict unit". All of a pod that
//!    no longer exists go; of the others the newest `max_per_pod_container` per unit are kept (one
//!    by default, so `kubectl logs --previous` has a container to read), and if `max_containers`
//!    is set the node-wide total is brought down to it, oldest first. A removed container's log
//!    file and its rotated siblings go with it (upstream's `logManager.Clean`).
//! 2. **Sandboxes.** A sandbox is active while it is ready or any container still refers to it.
//!    Of a pod that no longer exists every inactive sandbox goes; of a pod that does, inactive
//!    ones except the newest (which the pod worker may still inspect).
//! 3. **Pod log directories** (`<podLogsDir>/<ns>_<name>_<uid>`) of pods that no longer exist,
//!    once nothing of the pod is left in the runtime after this round (a pod still being
//!    terminated keeps its logs; this also guards against a pod view that lags the pod worker's).
//!
//! "Exists" comes from a [`PodStateProvider`]; until it has synced, nothing counts as deleted
//! (upstream's `allSourcesReady`). The decisions are [`plan`], a pure function over the CRI
//! listings; [`ContainerGc::collect`] applies them. Running containers and ready sandboxes are
//! never touched. Unlike upstream, containers and sandboxes without the kubelet's pod-UID label
//! are left alone: a shared runtime may hold other clients' containers.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cri::pb;

use crate::plan::labels;
use crate::runtime::Runtime;

/// How often container GC runs (upstream's `ContainerGCPeriod`).
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// Upstream's `GCPolicy` with the kubelet's defaults (`--minimum-container-ttl-duration` 0,
/// `--maximum-dead-containers-per-container` 1, `--maximum-dead-containers` -1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// A dead container younger than this is kept.
    pub min_age: Duration,
    /// Dead containers kept per (pod, container name); negative: no limit.
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node; negative: no limit.
    pub max_containers: i32,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// Which pods the kubelet still has (the narrow view of upstream's `podStateProvider`).
pub trait PodStateProvider: Send + Sync {
    /// The UIDs of the pods that exist, or `None` while the pod sources have not synced yet (then
    /// nothing is treated as deleted). A pod whose UID is missing has had its content removed
    /// from the kubelet's point of view (upstream's `ShouldPodContentBeRemoved`).
    fn known_pod_uids(&self) -> Option<HashSet<String>>;
}

impl<F> PodStateProvider for F
where
    F: Fn() -> Option<HashSet<String>> + Send + Sync,
{
    fn known_pod_uids(&self) -> Option<HashSet<String>> {
        self()
    }
}

/// What one round removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Container IDs, oldest of each unit first.
    pub containers: Vec<String>,
    /// Sandbox IDs.
    pub sandboxes: Vec<String>,
    /// Pod log directory names (under the pod-logs dir).
    pub pod_log_dirs: Vec<String>,
}

impl GcPlan {
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.sandboxes.is_empty() && self.pod_log_dirs.is_empty()
    }
}

/// The pod UID in a pod log directory's name `<namespace>_<name>_<uid>` (upstream's
/// `parsePodUIDFromLogsDirectory`).
pub fn pod_uid_of_log_dir(name: &str) -> &str {
    name.rsplit('_').next().unwrap_or(name)
}

fn pod_uid(labels_: &std::collections::HashMap<String, String>) -> Option<&str> {
    labels_
        .get(labels::POD_UID)
        .map(String::as_str)
        .filter(|u| !u.is_empty())
}

fn created(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64)
}

/// One dead container, as the planner sees it.
struct Dead<'a> {
    id: &'a str,
    created_at: i64,
}

/// Upstream's GC decisions: which dead containers, inactive sandboxes and pod log directories
/// go, given the runtime's containers and sandboxes, the log directory names, the pods that
/// exist (`None`: sources not synced) and the time now.
pub fn plan(
    containers: &[pb::Container],
    sandboxes: &[pb::PodSandbox],
    pod_log_dirs: &[String],
    known_pods: Option<&HashSet<String>>,
    policy: &GcPolicy,
    now: SystemTime,
) -> GcPlan {
    let removed = |uid: &str| known_pods.is_some_and(|k| !k.contains(uid));
    let mut out = GcPlan::default();

    // 1. Containers: evict units of dead containers older than min_age, newest first.
    let mut units: BTreeMap<(&str, &str), Vec<Dead>> = BTreeMap::new();
    for c in containers {
        if c.state == pb::ContainerState::ContainerRunning as i32 {
            continue;
        }
        let Some(uid) = pod_uid(&c.labels) else {
            continue;
        };
        let age = now
            .duration_since(created(c.created_at))
            .unwrap_or_default();
        if age < policy.min_age {
            continue;
        }
        let name = c
            .labels
            .get(labels::CONTAINER_NAME)
            .map(String::as_str)
            .or(c.metadata.as_ref().map(|m| m.name.as_str()))
            .unwrap_or_default();
        units.entry((uid, name)).or_default().push(Dead {
            id: &c.id,
            created_at: c.created_at,
        });
    }
    for unit in units.values_mut() {
        unit.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(b.id)));
    }
    let remove = |unit: &mut Vec<Dead>, keep: usize, out: &mut GcPlan| {
        while unit.len() > keep {
            out.containers
                .push(unit.pop().expect("len > keep").id.to_string());
        }
    };
    // Every dead container of a deleted pod goes.
    units.retain(|(uid, _), unit| {
        if removed(uid) {
            remove(unit, 0, &mut out);
            false
        } else {
            true
        }
    });
    if policy.max_per_pod_container >= 0 {
        for unit in units.values_mut() {
            remove(unit, policy.max_per_pod_container as usize, &mut out);
        }
    }
    let total = |units: &BTreeMap<_, Vec<Dead>>| units.values().map(Vec::len).sum::<usize>();
    if policy.max_containers >= 0 && total(&units) > policy.max_containers as usize {
        // An equal share per unit (at least one), then the oldest across the node.
        let max = policy.max_containers as usize;
        let share = (max / units.len().max(1)).max(1);
        for unit in units.values_mut() {
            remove(unit, share, &mut out);
        }
        let mut all: Vec<Dead> = std::mem::take(&mut units).into_values().flatten().collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(b.id)));
        remove(&mut all, max, &mut out);
    }

    // 2. Sandboxes: active while ready or referenced by a container that stays.
    let gone: HashSet<&str> = out.containers.iter().map(String::as_str).collect();
    let referenced: HashSet<&str> = containers
        .iter()
        .filter(|c| !gone.contains(c.id.as_str()))
        .map(|c| c.pod_sandbox_id.as_str())
        .collect();
    let mut by_pod: BTreeMap<&str, Vec<&pb::PodSandbox>> = BTreeMap::new();
    for s in sandboxes {
        if let Some(uid) = pod_uid(&s.labels) {
            by_pod.entry(uid).or_default().push(s);
        }
    }
    for (uid, mut list) in by_pod {
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let keep = if removed(uid) { 0 } else { 1 };
        for s in list.iter().skip(keep) {
            let active = s.state == pb::PodSandboxState::SandboxReady as i32
                || referenced.contains(s.id.as_str());
            if !active {
                out.sandboxes.push(s.id.clone());
            }
        }
    }

    // 3. Log directories of deleted pods, once nothing of the pod is left in the runtime (a
    //    terminating pod's containers may still write there).
    let gone: HashSet<&str> = out
        .containers
        .iter()
        .chain(&out.sandboxes)
        .map(String::as_str)
        .collect();
    let in_runtime: HashSet<&str> = containers
        .iter()
        .filter(|c| !gone.contains(c.id.as_str()))
        .filter_map(|c| pod_uid(&c.labels))
        .chain(
            sandboxes
                .iter()
                .filter(|s| !gone.contains(s.id.as_str()))
                .filter_map(|s| pod_uid(&s.labels)),
        )
        .collect();
    for d in pod_log_dirs {
        let uid = pod_uid_of_log_dir(d);
        if removed(uid) && !in_runtime.contains(uid) {
            out.pod_log_dirs.push(d.clone());
        }
    }
    out
}

/// Removes a container's log file and its rotated siblings (upstream's `logManager.Clean`).
pub fn remove_container_logs(log_path: &Path) {
    if log_path.as_os_str().is_empty() {
        return;
    }
    let _ = std::fs::remove_file(log_path);
    for f in crate::container_log_manager::rotated_logs(log_path) {
        let _ = std::fs::remove_file(f);
    }
}

/// The container garbage collector: the runtime, the pods that exist and the policy.
pub struct ContainerGc {
    runtime: Runtime,
    pods: Arc<dyn PodStateProvider>,
    pod_logs_dir: PathBuf,
    policy: GcPolicy,
}

impl ContainerGc {
    pub fn new(
        runtime: Runtime,
        pods: Arc<dyn PodStateProvider>,
        pod_logs_dir: PathBuf,
        policy: GcPolicy,
    ) -> Self {
        ContainerGc {
            runtime,
            pods,
            pod_logs_dir,
            policy,
        }
    }

    /// Runs [`ContainerGc::collect`] every [`CONTAINER_GC_PERIOD`], forever.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(CONTAINER_GC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.collect().await {
                tracing::warn!("container garbage collection failed: {e}");
            }
        }
    }

    /// One round: lists, plans, removes. Failures to remove one object are logged and the round
    /// goes on; the listing failing fails the round.
    pub async fn collect(&self) -> Result<GcPlan, tonic::Status> {
        let containers = self.runtime.list_containers(None).await?;
        let sandboxes = self.runtime.list_pod_sandbox(None).await?;
        let log_dirs: Vec<String> = std::fs::read_dir(&self.pod_logs_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let known = self.pods.known_pod_uids();
        let plan = plan(
            &containers,
            &sandboxes,
            &log_dirs,
            known.as_ref(),
            &self.policy,
            SystemTime::now(),
        );
        for id in &plan.containers {
            match self.runtime.container_status(id, false).await {
                Ok(s) => {
                    if let Some(st) = s.status {
                        remove_container_logs(Path::new(&st.log_path));
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => continue,
                Err(e) => tracing::warn!(container = %id, "container status before removal: {e}"),
            }
            match self.runtime.remove_container(id).await {
                Ok(()) => tracing::debug!(container = %id, "removed dead container"),
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => tracing::warn!(container = %id, "removing dead container: {e}"),
            }
        }
        for id in &plan.sandboxes {
            // The pod worker stops a sandbox before it is left; guard against the rare case it
            // did not (as upstream), then remove it.
            if let Err(e) = self.runtime.stop_pod_sandbox(id).await {
                if e.code() != tonic::Code::NotFound {
                    tracing::warn!(sandbox = %id, "stopping sandbox before removal: {e}");
                    continue;
                }
            }
            match self.runtime.remove_pod_sandbox(id).await {
                Ok(()) => tracing::debug!(sandbox = %id, "removed sandbox"),
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => tracing::warn!(sandbox = %id, "removing sandbox: {e}"),
            }
        }
        for d in &plan.pod_log_dirs {
            let path = self.pod_logs_dir.join(d);
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!("removing pod log directory {}: {e}", path.display());
            }
        }
        Ok(plan)
    }
}

/// The pods bound to this node as the API server has them, from a reflector on the same watch
/// the pod manager uses. A pod leaves the API only after the kubelet has terminated it (or was
/// force-deleted, whose containers the pod worker is killing), so "not in the API" is upstream's
/// "deleted and terminated".
#[derive(Clone)]
pub struct ApiPods {
    store: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
}

impl ApiPods {
    /// Starts the reflector; it runs until the returned future is dropped.
    pub fn start(
        client: kube::Client,
        node_name: &str,
    ) -> (
        ApiPods,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        use futures::StreamExt;
        use kube::runtime::{reflector, watcher, WatchStreamExt};
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::all(client);
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
        let (store, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, wc).default_backoff())
            .for_each(|_| futures::future::ready(()));
        (ApiPods { store }, stream)
    }
}

impl PodStateProvider for ApiPods {
    fn known_pod_uids(&self) -> Option<HashSet<String>> {
        use futures::FutureExt;
        let ready = matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())));
        ready.then(|| {
            self.store
                .state()
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SEC: i64 = 1_000_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(10_000)
    }

    fn container(
        id: &str,
        sandbox: &str,
        uid: &str,
        name: &str,
        state: pb::ContainerState,
        created_secs: i64,
    ) -> pb::Container {
        pb::Container {
            id: id.into(),
            pod_sandbox_id: sandbox.into(),
            state: state as i32,
            created_at: created_secs * SEC,
            labels: HashMap::from([
                (labels::POD_UID.to_string(), uid.to_string()),
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
            ]),
            ..Default::default()
        }
    }

    fn dead(id: &str, uid: &str, name: &str, created_secs: i64) -> pb::Container {
        container(
            id,
            &format!("sb-{uid}"),
            uid,
            name,
            pb::ContainerState::ContainerExited,
            created_secs,
        )
    }

    fn sandbox(id: &str, uid: &str, ready: bool, created_secs: i64) -> pb::PodSandbox {
        pb::PodSandbox {
            id: id.into(),
            state: if ready {
                pb::PodSandboxState::SandboxReady
            } else {
                pb::PodSandboxState::SandboxNotready
            } as i32,
            created_at: created_secs * SEC,
            labels: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
            ..Default::default()
        }
    }

    fn known(uids: &[&str]) -> HashSet<String> {
        uids.iter().map(|s| s.to_string()).collect()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn keeps_the_newest_dead_container_per_unit_and_every_running_one() {
        let cs = vec![
            dead("a1", "p", "app", 1),
            dead("a3", "p", "app", 3),
            dead("a2", "p", "app", 2),
            container(
                "a4",
                "sb-p",
                "p",
                "app",
                pb::ContainerState::ContainerRunning,
                4,
            ),
            dead("s1", "p", "sidecar", 1),
            container(
                "r0",
                "sb-p",
                "p",
                "old",
                pb::ContainerState::ContainerRunning,
                0,
            ),
        ];
        let k = known(&["p"]);
        let p = plan(&cs, &[], &[], Some(&k), &GcPolicy::default(), now());
        // Oldest first within the unit; the newest dead (a3), the running ones and the lone
        // sidecar stay.
        assert_eq!(p.containers, vec!["a1", "a2"]);
    }

    #[test]
    fn every_dead_container_of_a_deleted_pod_goes_but_not_before_sources_sync() {
        let cs = vec![
            dead("g1", "gone", "app", 1),
            dead("g2", "gone", "app", 2),
            container(
                "g3",
                "sb-gone",
                "gone",
                "app",
                pb::ContainerState::ContainerRunning,
                3,
            ),
            dead("k1", "kept", "app", 1),
        ];
        let k = known(&["kept"]);
        let p = plan(&cs, &[], &[], Some(&k), &GcPolicy::default(), now());
        assert_eq!(sorted(p.containers), vec!["g1", "g2"]);
        // Not synced: only the per-unit limit applies.
        let p = plan(&cs, &[], &[], None, &GcPolicy::default(), now());
        assert_eq!(p.containers, vec!["g1"]);
    }

    #[test]
    fn min_age_and_unlimited_policies() {
        let cs = vec![
            dead("a1", "p", "app", 1),
            dead("a2", "p", "app", 9_990),
            dead("a3", "p", "app", 9_995),
        ];
        let k = known(&["p"]);
        let policy = GcPolicy {
            min_age: Duration::from_secs(60),
            ..Default::default()
        };
        // a2 and a3 are too young to be considered: a1 is the newest evictable one and stays.
        assert!(plan(&cs, &[], &[], Some(&k), &policy, now())
            .containers
            .is_empty());
        let unlimited = GcPolicy {
            max_per_pod_container: -1,
            ..Default::default()
        };
        assert!(plan(&cs, &[], &[], Some(&k), &unlimited, now())
            .containers
            .is_empty());
        let none_kept = GcPolicy {
            max_per_pod_container: 0,
            ..Default::default()
        };
        assert_eq!(
            plan(&cs, &[], &[], Some(&k), &none_kept, now()).containers,
            vec!["a1", "a2", "a3"]
        );
    }

    #[test]
    fn max_containers_shares_then_evicts_oldest_across_units() {
        let cs = vec![
            dead("a1", "p", "a", 1),
            dead("a2", "p", "a", 2),
            dead("a3", "p", "a", 3),
            dead("b1", "p", "b", 4),
            dead("b2", "p", "b", 5),
            dead("c1", "q", "c", 6),
        ];
        let k = known(&["p", "q"]);
        let policy = GcPolicy {
            max_per_pod_container: -1,
            max_containers: 2,
            ..Default::default()
        };
        // Share: 2 / 3 units -> 1 each (a3, b2, c1); then the oldest of those (a3) to reach 2.
        let p = plan(&cs, &[], &[], Some(&k), &policy, now());
        assert_eq!(sorted(p.containers), vec!["a1", "a2", "a3", "b1"]);
    }

    #[test]
    fn sandboxes_keep_the_newest_of_existing_pods_and_every_active_one() {
        let cs = vec![
            container(
                "run",
                "p-2",
                "p",
                "app",
                pb::ContainerState::ContainerRunning,
                20,
            ),
            dead("d-old", "p", "app", 1), // refers to sb-p, removed this round (a newer one)
            container(
                "d-new",
                "p-1",
                "p",
                "app",
                pb::ContainerState::ContainerExited,
                15,
            ),
        ];
        let sbs = vec![
            sandbox("sb-p", "p", false, 1), // dead, container goes -> inactive -> removed
            sandbox("p-1", "p", false, 10), // dead but referenced by d-new -> kept
            sandbox("p-2", "p", false, 20), // newest -> kept
            sandbox("q-1", "q", false, 1),  // deleted pod, inactive -> removed
            sandbox("q-2", "q", true, 2),   // deleted pod but ready -> kept
            sandbox("r-1", "r", false, 3),  // existing pod's only sandbox -> kept
            sandbox("r-0", "r", true, 1),   // ready -> kept
        ];
        let k = known(&["p", "r"]);
        let p = plan(&cs, &sbs, &[], Some(&k), &GcPolicy::default(), now());
        assert_eq!(p.containers, vec!["d-old"]);
        assert_eq!(sorted(p.sandboxes), vec!["q-1", "sb-p"]);
    }

    #[test]
    fn unlabelled_objects_are_not_ours() {
        let mut c = dead("x", "p", "app", 1);
        c.labels.clear();
        let mut s = sandbox("y", "p", false, 1);
        s.labels.clear();
        let k = known(&[]);
        let p = plan(&[c], &[s], &[], Some(&k), &GcPolicy::default(), now());
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn log_dirs_of_deleted_pods() {
        let dirs = vec![
            "default_web_uid-1".to_string(),
            "kube-system_dns_uid-2".to_string(),
        ];
        let k = known(&["uid-1"]);
        let p = plan(&[], &[], &dirs, Some(&k), &GcPolicy::default(), now());
        assert_eq!(p.pod_log_dirs, vec!["kube-system_dns_uid-2"]);
        assert!(plan(&[], &[], &dirs, None, &GcPolicy::default(), now()).is_empty());
        assert_eq!(pod_uid_of_log_dir("ns_a_b_c"), "c");
        // A deleted pod whose sandbox is still ready keeps its logs until it is gone.
        let sbs = vec![sandbox("sb", "uid-2", true, 1)];
        assert!(
            plan(&[], &sbs, &dirs, Some(&k), &GcPolicy::default(), now())
                .pod_log_dirs
                .is_empty()
        );
        // Its last dead container and stopped sandbox go in the same round as the directory.
        let cs = vec![container(
            "c",
            "sb",
            "uid-2",
            "app",
            pb::ContainerState::ContainerExited,
            1,
        )];
        let sbs = vec![sandbox("sb", "uid-2", false, 1)];
        let p = plan(&cs, &sbs, &dirs, Some(&k), &GcPolicy::default(), now());
        assert_eq!(
            (p.containers, p.sandboxes, p.pod_log_dirs),
            (
                vec!["c".to_string()],
                vec!["sb".to_string()],
                vec!["kube-system_dns_uid-2".to_string()]
            )
        );
    }
}
