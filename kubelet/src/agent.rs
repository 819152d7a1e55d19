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
    #[error("client certificate: {0}")]
    Certificate(#[from] crate::certificate::CertificateError),
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
    /// The client certificate manager (`rotateCertificates`), started by `run`.
    client_certs: Option<crate::certificate::manager::Manager>,
}

impl Kubelet {
    /// Builds the API client from the configuration's kubeconfig and creates the root dir.
    pub async fn new(config: Config) -> Result<Kubelet, KubeletError> {
        std::fs::create_dir_all(&config.root_dir).map_err(|source| KubeletError::CreateDir {
            path: config.root_dir.clone(),
            source,
        })?;
        if let (Some(boot), Some(kubeconfig)) = (&config.bootstrap_kubeconfig, &config.kubeconfig) {
            crate::certificate::bootstrap::load_client_cert(
                kubeconfig,
                boot,
                &config.cert_dir,
                &config.node_name,
            )
            .await?;
        }
        if let (true, Some(kubeconfig)) = (config.settings.rotate_certificates, &config.kubeconfig)
        {
            return Kubelet::with_rotating_client(config.clone(), kubeconfig).await;
        }
        let client = build_client(config.kubeconfig.as_deref()).await?;
        Ok(Kubelet::with_client(config, client))
    }

    /// `rotateCertificates`: the client certificate comes from the manager (seeded from the
    /// store, or the kubeconfig's own pair), and the client presents the current one.
    async fn with_rotating_client(
        config: Config,
        kubeconfig: &std::path::Path,
    ) -> Result<Kubelet, KubeletError> {
        use crate::certificate::{bootstrap, manager, store, KeyedCert};
        let store = store::FileStore::new(&config.cert_dir, store::CLIENT_PAIR);
        let initial = store.current().or_else(|| {
            let pem = bootstrap::read_kubeconfig(kubeconfig)
                .ok()?
                .client_cert_pem?;
            KeyedCert::from_pem(&pem, "the kubeconfig's client certificate").ok()
        });
        let (tx, rx) = tokio::sync::watch::channel(initial);
        let client = crate::certificate::transport::build_client(kubeconfig, rx).await?;
        let node = config.node_name.clone();
        let request: manager::RequestFn = Arc::new(move || {
            let r = bootstrap::client_request(&node);
            Box::pin(async move { Some(r) })
        });
        let m = manager::Manager::with_channel(
            "client",
            client.clone(),
            store,
            request,
            Arc::new(manager::RealClock),
            tx,
        );
        let mut k = Kubelet::with_client(config, client);
        k.client_certs = Some(m);
        Ok(k)
    }

    /// A kubelet on an existing client (tests, or an agent that shares one client).
    pub fn with_client(config: Config, client: kube::Client) -> Kubelet {
        Kubelet {
            config: Arc::new(config),
            client,
            inputs: NodeStatusInputs::default(),
            client_certs: None,
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
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), KubeletError> {
        let _client_rotation = self
            .client_certs
            .take()
            .map(|m| AbortOnDrop(tokio::spawn(m.run())));
        let serving = self.serving_certificates();
        let serving_rx = serving.as_ref().map(|m| m.subscribe());
        let _serving_rotation = serving.map(|m| AbortOnDrop(tokio::spawn(m.run())));
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
            serving_rx,
        )
        .await?;
        tokio::select! {
            _ = agent.run(shutdown) => {}
            _ = pods.run() => {}
            _ = housekeeping => {}
        }
        Ok(())
    }

    /// `serverTLSBootstrap`: the serving certificate manager, asking for a
    /// `kubernetes.io/kubelet-serving` certificate for the node's name and the addresses in its
    /// Node status (upstream's `NewKubeletServerCertificateManager`).
    fn serving_certificates(&self) -> Option<crate::certificate::manager::Manager> {
        use crate::certificate::{csr::CertRequest, manager, store};
        if !self.config.settings.server_tls_bootstrap {
            return None;
        }
        let client = self.client.clone();
        let node = self.config.node_name.clone();
        let request: manager::RequestFn = Arc::new(move || {
            let (client, node) = (client.clone(), node.clone());
            Box::pin(async move {
                let api = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client);
                let n = api.get_opt(&node).await.ok()??;
                let mut dns = vec![node.clone()];
                let mut ips = Vec::new();
                for a in n.status?.addresses.unwrap_or_default() {
                    match a.type_.as_str() {
                        "Hostname" | "InternalDNS" | "ExternalDNS" if !dns.contains(&a.address) => {
                            dns.push(a.address)
                        }
                        "InternalIP" | "ExternalIP" => {
                            if let Ok(ip) = a.address.parse::<std::net::IpAddr>() {
                                ips.push(ip)
                            }
                        }
                        _ => {}
                    }
                }
                if ips.is_empty() {
                    return None;
                }
                Some(CertRequest {
                    signer: crate::certificate::KUBELET_SERVING_SIGNER.into(),
                    common_name: format!("{}{node}", crate::certificate::NODE_USER_PREFIX),
                    organizations: vec![crate::certificate::NODES_GROUP.into()],
                    dns_names: dns,
                    ip_addresses: ips,
                    usages: vec!["digital signature".into(), "server auth".into()],
                })
            })
        });
        Some(manager::Manager::new(
            "serving",
            self.client.clone(),
            store::FileStore::new(&self.config.cert_dir, store::SERVER_PAIR),
            request,
            Arc::new(manager::RealClock),
        ))
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

/// Aborts a background task when dropped (the certificate managers live as long as `run`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
