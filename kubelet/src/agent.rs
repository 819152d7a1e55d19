//! [`Kubelet`]: the process `capstan kubelet` runs, tying the configuration, the API client and
//! the subsystems together.
//!
//! It starts the runtime (built-in in-process at
//! [`BuiltInRuntime::root`](crate::config::BuiltInRuntime), also served on its CRI socket, or a
//! remote CRI endpoint), the node agent (registration, status, Lease), the status manager, the
//! PLEG, probes and one pod worker per pod bound to this node (watched from the API) or read from
//! the static pod manifests, the kubelet server (`/containerLogs`, `/healthz`, `/pods`, `/configz`, `/metrics`,
//! `/metrics/resource`, `/stats/summary`) and the
//! housekeeping loops (container GC, image GC, container log rotation, local-path volume
//! reclaim). Readiness
//! inputs: the runtime reports its `name://version` and status conditions, PLEG its health.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::client::{build_client, ClientError};
use crate::config::{Config, RuntimeConfig};
use crate::node::{NodeAgent, NodeStatusInputs};
use crate::runtime::Runtime;

/// Errors that stop the kubelet from starting.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("starting the container runtime: {0}")]
    Runtime(String),
    #[error("locating the capstan binary: {0}")]
    CurrentExe(std::io::Error),
    #[error("starting the kubelet server: {0}")]
    Server(#[from] crate::server::ServerError),
    #[error("creating {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One kubelet: configuration, API client and the node-status inputs shared by its subsystems.
pub struct Kubelet {
    config: Arc<Config>,
    client: kube::Client,
    inputs: NodeStatusInputs,
}

impl Kubelet {
    /// Builds the API client from the configuration's kubeconfig and creates the root dir.
    pub async fn new(config: Config) -> Result<Kubelet, KubeletError> {
        std::fs::create_dir_all(&config.root_dir).map_err(|source| KubeletError::CreateDir {
            path: config.root_dir.clone(),
            source,
        })?;
        let client = build_client(config.kubeconfig.as_deref()).await?;
        Ok(Kubelet::with_client(config, client))
    }

    /// A kubelet on an existing client (tests, or an agent that shares one client).
    pub fn with_client(config: Config, client: kube::Client) -> Kubelet {
        Kubelet {
            config: Arc::new(config),
            client,
            inputs: NodeStatusInputs::default(),
        }
    }

    /// The effective configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The API client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Where subsystems report what node readiness depends on.
    pub fn inputs(&self) -> &NodeStatusInputs {
        &self.inputs
    }

    /// Runs until `shutdown` resolves: starts the runtime, then the node agent and the pod
    /// manager side by side. The node turns Ready once the runtime has answered CRI Version (its
    /// `name://version` is reported through [`Kubelet::inputs`]) and stays so while the PLEG is
    /// healthy.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), KubeletError> {
        tracing::info!(
            node = %self.config.node_name,
            root_dir = %self.config.root_dir.display(),
            "capstan kubelet starting"
        );
        let (runtime, _server) = match &self.config.runtime {
            RuntimeConfig::BuiltIn(b) => {
                let (rt, server) = Runtime::start_builtin(cri::server::Config {
                    root: b.root.clone(),
                    socket: b.socket.clone(),
                    registry_config_dir: b.registry_config_dir.clone(),
                    cni_conf_dir: b.cni_conf_dir.clone(),
                    cni_bin_dirs: b.cni_bin_dirs.clone(),
                    cni_cache_dir: b.cni_cache_dir.clone(),
                    supervisor_exe: std::env::current_exe().map_err(KubeletError::CurrentExe)?,
                    supervisors_cgroup: format!(
                        "{}{}",
                        self.config.cgroup_root.trim_end_matches('/'),
                        cri::cgroups::SUPERVISORS_CGROUP
                    ),
                })
                .await
                .map_err(|e| KubeletError::Runtime(e.to_string()))?;
                (rt, Some(server))
            }
            RuntimeConfig::Remote { endpoint, .. } => (
                Runtime::connect(endpoint).map_err(|e| KubeletError::Runtime(e.to_string()))?,
                None,
            ),
        };
        let agent = NodeAgent::new(self.client.clone(), self.config.clone(), &self.inputs);
        let pods = crate::pods::PodManager::start(
            self.client.clone(),
            self.config.clone(),
            runtime.clone(),
            self.inputs.clone(),
            agent.machine(),
        )
        .await
        .map_err(|e| KubeletError::Runtime(format!("{e:#}")))?;
        let housekeeping = self.housekeeping(runtime.clone(), pods.view());
        crate::metrics::metrics()
            .node_name
            .with(&self.config.node_name)
            .set(1);
        let stats = Arc::new(crate::stats::StatsProvider::new(
            runtime.clone(),
            &self.config.node_name,
            &self.config.root_dir,
            &self.config.pod_logs_dir,
        ));
        let _server = crate::server::KubeletServer::start(
            &self.config,
            crate::server::ServerState {
                runtime,
                pods: pods.view(),
                config: self.config.clone(),
                stats,
            },
            Arc::new(
                crate::server::auth::KubeletAuth::from_config(&self.config, self.client.clone())
                    .await
                    .map_err(crate::server::ServerError::from)?,
            ),
        )
        .await?;
        tokio::select! {
            _ = agent.run(shutdown) => {}
            _ = pods.run() => {}
            _ = housekeeping => {}
        }
        Ok(())
    }

    /// Container GC, image GC and container log rotation with upstream's periods and the
    /// configured policies, and the local-path volume reclaimer; the future runs them until
    /// dropped.
    fn housekeeping(
        &self,
        runtime: Runtime,
        view: crate::pods::view::PodView,
    ) -> impl Future<Output = ()> {
        use crate::container_gc::{ApiPods, ContainerGc, GcPolicy, PodStateProvider};
        use crate::container_log_manager::{ContainerLogManager, LogRotatePolicy};
        use crate::image_gc::{ImageGcManager, ImageGcPolicy};
        let settings = &self.config.settings;
        let (api_pods, reflector) = ApiPods::start(self.client.clone(), &self.config.node_name);
        // A pod exists while the API has it or the pod manager runs it (static pods have no API
        // object of their own UID, only a mirror).
        let known = move || {
            let mut uids = api_pods.known_pod_uids()?;
            uids.extend(view.all().iter().filter_map(|p| p.metadata.uid.clone()));
            Some(uids)
        };
        let container_gc = ContainerGc::new(
            runtime.clone(),
            Arc::new(known),
            self.config.pod_logs_dir.clone(),
            GcPolicy::default(),
        );
        let image_gc = ImageGcManager::new(runtime.clone(), ImageGcPolicy::from_settings(settings));
        let logs = ContainerLogManager::new(
            runtime,
            LogRotatePolicy::from_settings(settings),
            self.config.pod_logs_dir.clone(),
        );
        let local_path =
            crate::local_path::LocalPathReclaimer::new(self.client.clone(), &self.config.node_name);
        async move {
            tokio::join!(
                reflector,
                container_gc.run(),
                image_gc.run(),
                logs.run(),
                local_path.run()
            );
        }
    }
}
