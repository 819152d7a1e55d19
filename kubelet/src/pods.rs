//! The pod manager: the kubelet's source of pods (upstream's config sources, pod manager and the
//! dispatch half of podWorkers). It watches the pods bound to this node, starts one pod worker per
//! UID, forwards changes, PLEG events and probe results to the right worker, and reports the
//! runtime's health to node status. Static pods from `--pod-manifest-path` are not read yet.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;

use crate::backoff::{Backoff, RealClock};
use crate::config::Config;
use crate::node::machine::MachineInfo;
use crate::node::object;
use crate::node::{NodeState, NodeStatusInputs};
use crate::pleg;
use crate::pod_worker::{spawn_worker, PodContext, PodUpdate};
use crate::probe::handlers::RuntimeProber;
use crate::probe::ProbeManager;
use crate::qos::{NodeAllocatable, PodCgroups, PodCgroupsConfig};
use crate::runtime::Runtime;
use crate::status_manager::StatusManager;
use crate::volume::dns::DnsSettings;
use crate::volume::mount::HostMounter;
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
    view: view::PodView,
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
        inputs.update(|s| *s = NodeState::healthy(runtime_version.clone()));

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
        let (probes, probe_updates) = ProbeManager::new(Arc::new(RuntimeProber {
            runtime: runtime.clone(),
        }));
        let (pleg_events, pleg_health) = pleg::start(runtime.clone());
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
            status: StatusManager::start(client.clone()),
            resync: Duration::from_secs(10),
        });
        Ok(PodManager {
            client,
            config,
            ctx,
            inputs,
            pleg_events,
            pleg_health,
            probe_updates,
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
        let mut workers: HashMap<String, mpsc::UnboundedSender<PodUpdate>> = HashMap::new();
        let mut known: HashMap<String, Pod> = HashMap::new();
        let mut health_tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                ev = pods.next() => match ev {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        self.dispatch(&mut workers, &mut known, pod);
                    }
                    Some(Ok(watcher::Event::Delete(mut pod))) => {
                        // Gone from the API without our final delete (force deletion): stop it.
                        if pod.metadata.deletion_timestamp.is_none() {
                            pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
                            pod.metadata.deletion_grace_period_seconds = Some(0);
                        }
                        self.dispatch(&mut workers, &mut known, pod.clone());
                        self.view.remove(&pod);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!("watching pods: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    None => return,
                },
                Some(uid) = self.pleg_events.recv() => {
                    if let Some(w) = workers.get(&uid) {
                        let _ = w.send(PodUpdate::Sync);
                    }
                }
                Some(u) = self.probe_updates.recv() => {
                    if let Some(w) = workers.get(&u.pod_uid) {
                        let _ = w.send(PodUpdate::Sync);
                    }
                }
                _ = health_tick.tick() => {
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

    fn dispatch(
        &self,
        workers: &mut HashMap<String, mpsc::UnboundedSender<PodUpdate>>,
        known: &mut HashMap<String, Pod>,
        pod: Pod,
    ) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        self.view.upsert(&pod);
        known.insert(uid.clone(), pod.clone());
        if let Some(w) = workers.get(&uid) {
            if w.send(PodUpdate::Pod(Box::new(pod.clone()))).is_ok() {
                return;
            }
        }
        // A finished pod whose worker has ended stays finished.
        if workers.contains_key(&uid) && pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        workers.insert(uid, spawn_worker(self.ctx.clone(), pod));
    }
}
