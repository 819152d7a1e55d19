//! [`Kubelet`]: the process `capstan kubelet` runs, tying the configuration, the API client and
//! the subsystems together.
//!
//! Today it runs the node agent (registration, status, Lease). The pod side joins here next: the
//! runtime (built-in in-process at [`BuiltInRuntime::root`](crate::config::BuiltInRuntime), also
//! served on its CRI socket, or a remote CRI endpoint), PLEG, pod workers, the status manager and
//! probes. Those feed node readiness through [`Kubelet::inputs`]: the runtime reports its
//! `name://version` and status errors, PLEG its health, CNI its readiness.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use crate::client::{build_client, ClientError};
use crate::config::{Config, RuntimeConfig};
use crate::node::object::BUILTIN_RUNTIME_VERSION;
use crate::node::{NodeAgent, NodeState, NodeStatusInputs};

/// Errors that stop the kubelet from starting.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error(transparent)]
    Client(#[from] ClientError),
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

    /// Runs until `shutdown` resolves. With the built-in runtime the node reports ready with
    /// `capstan://<version>`; a remote runtime's version and health arrive through
    /// [`Kubelet::inputs`] once its CRI client is wired in, and until then the node says the
    /// runtime status check has not completed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), KubeletError> {
        tracing::info!(
            node = %self.config.node_name,
            root_dir = %self.config.root_dir.display(),
            "capstan kubelet starting"
        );
        if let RuntimeConfig::BuiltIn(_) = self.config.runtime {
            self.inputs
                .update(|s| *s = NodeState::healthy(BUILTIN_RUNTIME_VERSION));
        }
        NodeAgent::new(self.client.clone(), self.config.clone(), &self.inputs)
            .run(shutdown)
            .await;
        Ok(())
    }
}
