//! The kubelet's Node: registration, status and the node Lease, as upstream's
//! `kubelet_node_status.go` (register, then `syncNodeStatus` every nodeStatusUpdateFrequency) and
//! `pkg/kubelet/nodelease` (the heartbeat Lease) do it.
//!
//! - Registration creates the Node ([`object::initial_node`]); if it exists, the kubelet adopts it
//!   and brings its labels up to date. Failures are retried with a doubling delay (100 ms to 7 s).
//! - Status: every nodeStatusUpdateFrequency (10 s), and at once when [`NodeStatusInputs`]
//!   changes, the status is computed and compared with the Node in the API; it is patched
//!   (strategic merge on `nodes/status`) when it differs in more than heartbeat times, or when
//!   nodeStatusReportFrequency (5 min) has passed since the last report. A Node found missing is
//!   registered again.
//! - Lease: `kube-node-lease/<node>` renewed every quarter of nodeLeaseDurationSeconds (10 s of
//!   40), holder the node name, owned by the Node so that it goes away with it.
//!
//! Inputs for Ready come from the rest of the kubelet through a tokio watch channel
//! ([`NodeStatusInputs`]): the runtime's version and health, network readiness, PLEG health and
//! (later) the eviction manager's pressure signals.

pub mod lease;
pub mod machine;
pub mod object;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

pub use machine::MachineInfo;
pub use object::NodeState;

use crate::config::Config;

/// First and largest delay between registration attempts (upstream's 100 ms doubling to 7 s).
const REGISTER_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(7));

/// The field manager name on the kubelet's writes.
pub const FIELD_MANAGER: &str = "capstan-kubelet";

/// Errors talking to the API about the Node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{action} node {node}: {source}")]
    Api {
        action: &'static str,
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {0} not found")]
    NotFound(String),
}

/// The handle through which the rest of the kubelet feeds node status: a tokio watch channel of
/// [`NodeState`]. Cheap to clone; every change wakes the status loop, which writes the Node at
/// once if its status changed.
#[derive(Clone, Debug)]
pub struct NodeStatusInputs {
    tx: watch::Sender<NodeState>,
    /// Asks the runtime health check to ask again now rather than at its next period (an
    /// embedder that just wrote the node's CNI configuration wants NetworkReady seen at once).
    recheck: Arc<tokio::sync::Notify>,
}

impl NodeStatusInputs {
    /// Starts from `initial` (usually [`NodeState::initial`]: not ready until the runtime says).
    pub fn new(initial: NodeState) -> NodeStatusInputs {
        NodeStatusInputs {
            tx: watch::Sender::new(initial),
            recheck: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Asks the runtime health check ([`crate::runtime_status`]) to run again now.
    pub fn recheck_runtime(&self) {
        self.recheck.notify_one();
    }

    /// Resolves when [`NodeStatusInputs::recheck_runtime`] was called (a call made while nobody
    /// waited is kept for the next wait).
    pub async fn runtime_recheck_requested(&self) {
        self.recheck.notified().await
    }

    /// The sending half, for components that prefer to hold a `watch::Sender`.
    pub fn sender(&self) -> watch::Sender<NodeState> {
        self.tx.clone()
    }

    /// Changes the state; the status loop is woken only when something actually changed.
    pub fn update(&self, f: impl FnOnce(&mut NodeState)) {
        self.tx.send_if_modified(|state| {
            let before = state.clone();
            f(state);
            *state != before
        });
    }

    /// The current state.
    pub fn current(&self) -> NodeState {
        self.tx.borrow().clone()
    }

    /// A receiver of the state.
    pub fn subscribe(&self) -> watch::Receiver<NodeState> {
        self.tx.subscribe()
    }
}

impl Default for NodeStatusInputs {
    fn default() -> Self {
        NodeStatusInputs::new(NodeState::initial())
    }
}

/// Registers the Node and keeps it and its Lease current until `shutdown` resolves.
pub async fn run_node_agent(
    client: kube::Client,
    config: Arc<Config>,
    inputs: NodeStatusInputs,
    shutdown: impl Future<Output = ()>,
) {
    NodeAgent::new(client, config, &inputs).run(shutdown).await
}

/// The node agent: registration, status loop and lease loop for one Node.
pub struct NodeAgent {
    nodes: Api<Node>,
    client: kube::Client,
    config: Arc<Config>,
    machine: MachineInfo,
    addresses: Vec<IpAddr>,
    inputs: watch::Receiver<NodeState>,
}

impl NodeAgent {
    /// Gathers the machine's facts (capacity, identity) and the node's addresses.
    pub fn new(client: kube::Client, config: Arc<Config>, inputs: &NodeStatusInputs) -> NodeAgent {
        let machine = MachineInfo::gather(&config.root_dir);
        let addresses = if config.node_ips.is_empty() {
            vec![machine::primary_address()]
        } else {
            config.node_ips.clone()
        };
        NodeAgent {
            nodes: Api::all(client.clone()),
            client,
            config,
            machine,
            addresses,
            inputs: inputs.subscribe(),
        }
    }

    /// The machine facts the Node reports.
    pub fn machine(&self) -> &MachineInfo {
        &self.machine
    }

    /// Runs registration, the status loop and the lease loop until `shutdown` resolves. API
    /// errors are logged and retried; nothing here gives up while the kubelet runs.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let lease = lease::LeaseRenewer::new(self.client.clone(), &self.config);
        tokio::select! {
            _ = lease.run() => {}
            _ = self.status_loop() => {}
            _ = shutdown => {}
        }
    }

    async fn status_loop(&mut self) {
        if self.config.settings.register_node {
            self.register().await;
        }
        let mut last_report: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.config.node_status_update_frequency());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = self.inputs.changed() => {
                    if changed.is_err() {
                        // Every sender is gone: the state is final; keep reporting it on ticks.
                        tick.tick().await;
                    }
                }
            }
            match self.sync_status(&mut last_report).await {
                Ok(()) => {}
                Err(NodeError::NotFound(name)) if self.config.settings.register_node => {
                    tracing::warn!(node = %name, "node object is gone; registering it again");
                    self.register().await;
                    last_report = None;
                }
                Err(e) => tracing::warn!("updating node status: {e}"),
            }
        }
    }

    /// Creates the Node, or adopts and updates an existing one; retries until it succeeds.
    pub async fn register(&self) {
        let mut delay = REGISTER_BACKOFF.0;
        loop {
            match self.try_register().await {
                Ok(()) => return,
                Err(e) => tracing::warn!("registering node {}: {e}", self.config.node_name),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(REGISTER_BACKOFF.1);
        }
    }

    async fn try_register(&self) -> Result<(), NodeError> {
        let name = &self.config.node_name;
        let api_err = |action, source| NodeError::Api {
            action,
            node: name.clone(),
            source,
        };
        let state = self.inputs.borrow().clone();
        let node =
            object::initial_node(&self.config, &self.machine, &state, &self.addresses, &now());
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self.nodes.create(&pp, &node).await {
            Ok(_) => {
                tracing::info!(node = %name, "registered node");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let mut existing = self
                    .nodes
                    .get(name)
                    .await
                    .map_err(|e| api_err("reading existing", e))?;
                if object::reconcile_existing(&mut existing, &self.config, &self.machine) {
                    self.nodes
                        .replace(name, &pp, &existing)
                        .await
                        .map_err(|e| api_err("updating existing", e))?;
                }
                tracing::info!(node = %name, "adopted existing node");
                Ok(())
            }
            Err(e) => Err(api_err("creating", e)),
        }
    }

    /// One status sync: read the Node, compute the status, patch it when changed or due.
    async fn sync_status(&self, last_report: &mut Option<Instant>) -> Result<(), NodeError> {
        let name = &self.config.node_name;
        let node = match self.nodes.get(name).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 404 => {
                return Err(NodeError::NotFound(name.clone()))
            }
            Err(e) => {
                return Err(NodeError::Api {
                    action: "reading",
                    node: name.clone(),
                    source: e,
                })
            }
        };
        let old = node.status.unwrap_or_default();
        let state = self.inputs.borrow().clone();
        let new = object::node_status(
            &self.config,
            &self.machine,
            &state,
            &self.addresses,
            old.conditions.as_deref().unwrap_or_default(),
            &now(),
        );
        let due =
            last_report.is_none_or(|t| t.elapsed() >= self.config.node_status_report_frequency());
        if !due && !object::status_changed(&old, &new) {
            return Ok(());
        }
        let patch = serde_json::json!({ "status": new });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .nodes
            .patch_status(name, &pp, &Patch::Strategic(patch))
            .await
        {
            Ok(_) => {
                *last_report = Some(Instant::now());
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Err(NodeError::NotFound(name.clone())),
            Err(e) => Err(NodeError::Api {
                action: "patching status of",
                node: name.clone(),
                source: e,
            }),
        }
    }
}

/// Now, at the API's one-second precision for `Time`.
fn now() -> Time {
    let ts = Timestamp::now();
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}
