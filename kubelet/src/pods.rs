//! The pod manager: the kubelet's source of pods (upstream's config sources, pod manager and the
//! dispatch half of podWorkers). It merges two sources — the pods bound to this node in the API
//! (a watch) and the static pods of `--pod-manifest-path` ([`crate::static_pods`]), which run
//! even while the API is unreachable — starts one pod worker per UID, and forwards changes, PLEG
//! events, probe results and changes of the ConfigMaps/Secrets a pod reads
//! ([`crate::object_cache`]) to the right worker. It also reports the runtime's health to node
//! status.
//!
//! Mirror pods (API pods annotated `kubernetes.io/config.mirror`) are never run: they are mapped
//! to their static pod by full name for the status manager and handed to the
//! [`MirrorManager`], which keeps one per static pod. A static pod removed from its directory is
//! terminated within its grace period; an edited one is a new UID, started once the old one has
//! stopped (upstream never runs two static pods of one full name at a time).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};

use crate::backoff::{Backoff, RealClock};
use crate::config::Config;
use crate::events::EventRecorder;
use crate::mirror_pods::{MirrorManager, MirrorPods};
use crate::node::machine::MachineInfo;
use crate::node::object;
use crate::node::NodeStatusInputs;
use crate::object_cache::{self, ObjectCache, ObjectKey};
use crate::pleg;
use crate::pod_worker::{spawn_worker, PodContext, PodUpdate};
use crate::probe::handlers::RuntimeProber;
use crate::probe::ProbeManager;
use crate::qos::{NodeAllocatable, PodCgroups, PodCgroupsConfig};
use crate::runtime::Runtime;
use crate::static_pods::{self, StaticPods, CONFIG_MIRROR_ANNOTATION};
use crate::status_manager::{MirrorRef, StatusManager};
use crate::volume::dns::DnsSettings;
use crate::volume::mount::HostMounter;
use crate::volume::token::ApiTokenRequester;
use crate::volume::VolumeManager;

pub mod view;

pub struct PodManager {
    client: kube::Client,
    config: Arc<Config>,
    ctx: Arc<PodContext>,
    inputs: NodeStatusInputs,
    pleg_events: mpsc::UnboundedReceiver<String>,
    pleg_health: pleg::PlegHealth,
    probe_updates: mpsc::UnboundedReceiver<crate::probe::ProbeUpdate>,
    object_changes: mpsc::UnboundedReceiver<ObjectKey>,
    view: view::PodView,
}

/// The pod workers and what they were last told.
#[derive(Default)]
struct Workers {
    senders: HashMap<String, mpsc::UnboundedSender<PodUpdate>>,
    known: HashMap<String, Pod>,
}

impl Workers {
    fn alive(&self, uid: &str) -> bool {
        self.senders.get(uid).is_some_and(|s| !s.is_closed())
    }

    fn wake(&self, uid: &str) {
        if let Some(w) = self.senders.get(uid) {
            let _ = w.send(PodUpdate::Sync);
        }
    }

    /// Forgets pods whose worker has ended for good: an API pod once its deletion has been
    /// observed (the view no longer holds that UID), a static pod once it left the manifests
    /// (it leaves the view then too). A pod still in the view keeps its ended worker's entry, so
    /// a late update of a finished pod does not start it again.
    fn prune(&mut self, view: &view::PodView, statics: &HashMap<String, Pod>) {
        let ended: Vec<String> = self
            .senders
            .iter()
            .filter(|(_, s)| s.is_closed())
            .map(|(u, _)| u.clone())
            .collect();
        for uid in ended {
            let Some(pod) = self.known.get(&uid) else {
                self.senders.remove(&uid);
                continue;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let in_view = view
                .get(ns, name)
                .is_some_and(|p| p.metadata.uid.as_deref() == Some(uid.as_str()));
            let gone = if static_pods::is_static_pod(pod) {
                !statics.contains_key(&uid)
            } else {
                !in_view
            };
            if gone {
                if in_view {
                    view.remove(pod);
                }
                self.known.remove(&uid);
                self.senders.remove(&uid);
            }
        }
    }

    /// Whether a worker of another UID with the same full name still runs.
    fn name_taken(&self, pod: &Pod) -> bool {
        let name = static_pods::full_name(pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.known
            .iter()
            .any(|(u, p)| u != uid && static_pods::full_name(p) == name && self.alive(u))
    }
}

impl PodManager {
    /// Sets up everything pod workers share: runtime identity, pod cgroups, volumes, probes, the
    /// status manager and the PLEG.
    pub async fn start(
        client: kube::Client,
        config: Arc<Config>,
        runtime: Runtime,
        inputs: NodeStatusInputs,
        machine: &MachineInfo,
    ) -> anyhow::Result<PodManager> {
        let version = runtime.version().await?;
        let runtime_name = version.runtime_name.clone();
        let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
        // The runtime answered Version; Ready waits for its first Status (network readiness).
        inputs.update(|s| s.runtime_version = runtime_version.clone());
        tokio::spawn(crate::runtime_status::run(runtime.clone(), inputs.clone()));

        let now = Time(Timestamp::now());
        let status = object::node_status(&config, machine, &inputs.current(), &[], &[], &now);
        let allocatable: BTreeMap<_, _> = status.allocatable.unwrap_or_default();

        let cgroups = match cri::cgroups::AnyCgroupManager::detect(&config.cgroupfs_mount) {
            Ok(mgr) => {
                let pc = PodCgroups::new(
                    mgr,
                    PodCgroupsConfig {
                        cgroup_root: config.cgroup_root.clone(),
                        pod_pids_limit: Some(config.settings.pod_pids_limit),
                        ..Default::default()
                    },
                );
                pc.ensure_qos_hierarchy(&NodeAllocatable::from_list(&allocatable))?;
                Some(pc)
            }
            Err(e) => {
                tracing::warn!("pod cgroups disabled: {e}");
                None
            }
        };
        let host_ips: Vec<String> = config.node_ips.iter().map(|ip| ip.to_string()).collect();
        let events = EventRecorder::start(client.clone(), "kubelet", &config.node_name);
        let (probes, probe_updates) = ProbeManager::with_events(
            Arc::new(RuntimeProber {
                runtime: runtime.clone(),
            }),
            events.clone(),
        );
        let (pleg_events, pleg_health) = pleg::start(runtime.clone());
        let (objects, object_changes) = ObjectCache::start(client.clone());
        let ctx = Arc::new(PodContext {
            runtime,
            runtime_name,
            client: client.clone(),
            node_name: config.node_name.clone(),
            host_ips: host_ips.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            cgroups,
            volumes: VolumeManager::new(config.root_dir.clone(), Arc::new(HostMounter)),
            dns: DnsSettings {
                cluster_dns: config.settings.cluster_dns.clone(),
                cluster_domain: config
                    .settings
                    .cluster_domain
                    .clone()
                    .unwrap_or_else(|| "cluster.local".into()),
                host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").ok(),
                node_ips: host_ips,
            },
            node_allocatable: allocatable,
            probes,
            backoff: Backoff::for_containers(Arc::new(RealClock)),
            image_backoff: Backoff::for_image_pulls(Arc::new(RealClock)),
            events,
            status: StatusManager::start(client.clone()),
            objects,
            tokens: Arc::new(ApiTokenRequester::new(client.clone())),
            resync: config.settings.sync_frequency,
        });
        Ok(PodManager {
            client,
            config,
            ctx,
            inputs,
            pleg_events,
            pleg_health,
            probe_updates,
            object_changes,
            view: view::PodView::default(),
        })
    }

    /// The pods by namespace and name, for the kubelet server.
    pub fn view(&self) -> view::PodView {
        self.view.clone()
    }

    /// Runs until the pod watch ends for good (it retries on errors).
    pub async fn run(mut self) {
        let api: Api<Pod> = Api::all(self.client.clone());
        let wc =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.config.node_name));
        let mut pods = watcher(api, wc).boxed();
        let mut workers = Workers::default();
        let mut health_tick = tokio::time::interval(Duration::from_secs(10));

        // Static pods: the file source (none without --pod-manifest-path; the sender then stays
        // here so that the channel never closes).
        let (_no_statics, mut statics) = watch::channel::<StaticPods>(Arc::new(Vec::new()));
        if let Some(path) = &self.config.static_pod_path {
            statics = static_pods::start(
                path.clone(),
                self.config.node_name.clone(),
                self.config.settings.file_check_frequency,
            );
        }
        let mut static_pods: HashMap<String, Pod> = HashMap::new();
        // Static pods waiting for an older pod of the same full name to stop.
        let mut waiting: Vec<Pod> = Vec::new();
        let mut wait_tick = tokio::time::interval(Duration::from_secs(1));
        // Mirror pods by full name, and the set being rebuilt during a re-list.
        let mut mirrors: BTreeMap<String, Pod> = BTreeMap::new();
        let mut relist: Option<BTreeMap<String, Pod>> = None;
        let (mirrors_tx, mirrors_rx) = watch::channel::<MirrorPods>(Arc::new(BTreeMap::new()));
        tokio::spawn(
            MirrorManager::new(self.client.clone(), self.config.node_name.clone())
                .run(statics.clone(), mirrors_rx),
        );
        self.sync_statics(
            &mut workers,
            &mut static_pods,
            &mut waiting,
            &statics.borrow_and_update(),
        );

        loop {
            tokio::select! {
                ev = pods.next() => match ev {
                    Some(Ok(watcher::Event::Init)) => relist = Some(BTreeMap::new()),
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(fresh) = relist.take() {
                            for (name, m) in &mirrors {
                                if !fresh.contains_key(name) {
                                    self.mirror_gone(m);
                                }
                            }
                            mirrors = fresh;
                            let _ = mirrors_tx.send(Arc::new(mirrors.clone()));
                        }
                    }
                    Some(Ok(watcher::Event::InitApply(pod))) if static_pods::is_mirror_pod(&pod) => {
                        self.mirror_seen(&pod);
                        if let Some(r) = relist.as_mut() {
                            r.insert(static_pods::full_name(&pod), pod);
                        }
                    }
                    Some(Ok(watcher::Event::Apply(pod))) if static_pods::is_mirror_pod(&pod) => {
                        self.mirror_seen(&pod);
                        mirrors.insert(static_pods::full_name(&pod), pod);
                        let _ = mirrors_tx.send(Arc::new(mirrors.clone()));
                    }
                    Some(Ok(watcher::Event::Delete(pod))) if static_pods::is_mirror_pod(&pod) => {
                        let name = static_pods::full_name(&pod);
                        if mirrors.get(&name).is_some_and(|m| m.metadata.uid == pod.metadata.uid) {
                            mirrors.remove(&name);
                            self.mirror_gone(&pod);
                            let _ = mirrors_tx.send(Arc::new(mirrors.clone()));
                        }
                    }
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        self.dispatch(&mut workers, pod);
                    }
                    Some(Ok(watcher::Event::Delete(mut pod))) => {
                        // Gone from the API without our final delete (force deletion): stop it.
                        if pod.metadata.deletion_timestamp.is_none() {
                            pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                            pod.metadata.deletion_grace_period_seconds = Some(0);
                        }
                        self.dispatch(&mut workers, pod.clone());
                        self.view.remove(&pod);
                    }
                    Some(Err(e)) => {
                        tracing::warn!("watching pods: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
                r = statics.changed() => {
                    if r.is_ok() {
                        let set = statics.borrow_and_update().clone();
                        self.sync_statics(&mut workers, &mut static_pods, &mut waiting, &set);
                    }
                }
                _ = wait_tick.tick(), if !waiting.is_empty() => {
                    let ready: Vec<Pod>;
                    (ready, waiting) = waiting.drain(..).partition(|p| !workers.name_taken(p));
                    for p in ready {
                        self.dispatch(&mut workers, p);
                    }
                }
                Some(key) = self.object_changes.recv() => {
                    for (uid, pod) in &workers.known {
                        if workers.alive(uid) && object_cache::references(pod, &key) {
                            workers.wake(uid);
                        }
                    }
                }
                Some(uid) = self.pleg_events.recv() => workers.wake(&uid),
                Some(u) = self.probe_updates.recv() => workers.wake(&u.pod_uid),
                _ = health_tick.tick() => {
                    workers.prune(&self.view, &static_pods);
                    let healthy = self.pleg_health.healthy();
                    self.inputs.update(|s| {
                        s.runtime_errors.retain(|e| !e.starts_with("PLEG is not healthy"));
                        if !healthy {
                            s.runtime_errors.push("PLEG is not healthy: pleg was last seen active more than 3m0s ago".into());
                        }
                    });
                }
            }
        }
    }

    /// Applies a new set of static pods: removed ones terminate (within their grace period),
    /// new ones start (or wait for an older pod of their full name to stop).
    fn sync_statics(
        &self,
        workers: &mut Workers,
        current: &mut HashMap<String, Pod>,
        waiting: &mut Vec<Pod>,
        set: &[Pod],
    ) {
        let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
        let wanted: HashSet<String> = set.iter().map(uid).collect();
        waiting.retain(|p| wanted.contains(&uid(p)));
        for (u, mut pod) in current.drain().collect::<Vec<_>>() {
            if wanted.contains(&u) {
                current.insert(u, pod);
                continue;
            }
            tracing::info!("static pod {} removed", plan_name(&pod));
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
            pod.metadata.deletion_grace_period_seconds = Some(grace);
            self.dispatch(workers, pod);
        }
        for pod in set {
            let u = uid(pod);
            if current.contains_key(&u) {
                continue;
            }
            current.insert(u, pod.clone());
            if workers.name_taken(pod) {
                waiting.push(pod.clone());
            } else {
                self.dispatch(workers, pod.clone());
            }
        }
    }

    /// A mirror pod appeared or changed: the status manager writes its static pod's status there.
    fn mirror_seen(&self, mirror: &Pod) {
        let Some(hash) = static_pods::annotation(mirror, CONFIG_MIRROR_ANNOTATION) else {
            return;
        };
        self.ctx.status.set_mirror(
            hash,
            Some(MirrorRef {
                namespace: mirror.metadata.namespace.clone().unwrap_or_default(),
                name: mirror.metadata.name.clone().unwrap_or_default(),
                uid: mirror.metadata.uid.clone().unwrap_or_default(),
            }),
        );
    }

    fn mirror_gone(&self, mirror: &Pod) {
        if let Some(hash) = static_pods::annotation(mirror, CONFIG_MIRROR_ANNOTATION) {
            self.ctx.status.set_mirror(hash, None);
        }
    }

    fn dispatch(&self, workers: &mut Workers, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.view.upsert(&pod);
        workers.known.insert(uid.clone(), pod.clone());
        if let Some(w) = workers.senders.get(&uid) {
            if w.send(PodUpdate::Pod(Box::new(pod.clone()))).is_ok() {
                return;
            }
        }
        // A finished pod whose worker has ended stays finished.
        if workers.senders.contains_key(&uid) && pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        workers
            .senders
            .insert(uid, spawn_worker(self.ctx.clone(), pod));
    }
}

fn plan_name(pod: &Pod) -> String {
    crate::plan::pod_full_name(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, name: &str, static_pod: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("default".into());
        if static_pod {
            p.metadata.annotations = Some(
                [(
                    "kubernetes.io/config.source".to_string(),
                    "file".to_string(),
                )]
                .into(),
            );
        }
        p
    }

    /// A worker whose channel is already closed (its task ended).
    fn ended() -> mpsc::UnboundedSender<PodUpdate> {
        mpsc::unbounded_channel().0
    }

    #[test]
    fn ended_workers_are_forgotten_once_their_pod_is_gone() {
        let view = view::PodView::default();
        let mut w = Workers::default();
        let (live_tx, _live_rx) = mpsc::unbounded_channel();
        for (uid, name, is_static, sender) in [
            ("deleted", "a", false, ended()),
            ("finished", "b", false, ended()),
            ("running", "c", false, live_tx),
            ("static-gone", "d", true, ended()),
            ("static-kept", "e", true, ended()),
        ] {
            let p = pod(uid, name, is_static);
            if uid != "deleted" {
                view.upsert(&p);
            }
            w.known.insert(uid.into(), p);
            w.senders.insert(uid.into(), sender);
        }
        let statics: HashMap<String, Pod> =
            [("static-kept".to_string(), pod("static-kept", "e", true))].into();
        w.prune(&view, &statics);
        let mut left: Vec<&str> = w.known.keys().map(String::as_str).collect();
        left.sort();
        assert_eq!(left, ["finished", "running", "static-kept"]);
        assert_eq!(w.senders.len(), 3);
        assert!(
            view.get("default", "d").is_none(),
            "a removed static pod leaves the view"
        );
        assert!(view.get("default", "b").is_some());
    }
}
