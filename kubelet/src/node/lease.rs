//! The node heartbeat: a `coordination.k8s.io/v1` Lease in `kube-node-lease` named after the node,
//! renewed every quarter of its duration, as upstream's lease controller
//! (`component-helpers/apimachinery/lease/controller.go`) does it: get the Lease, create it when
//! missing, otherwise update `renewTime` (an update with the read resourceVersion, so that a
//! concurrent writer makes us re-read rather than overwrite). The Lease is owned by the Node
//! (an ownerReference with the Node's UID, added as soon as the Node exists), so deleting the
//! Node lets the garbage collector remove the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

use crate::config::Config;

/// The namespace node Leases live in.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Renews one node's Lease.
pub struct LeaseRenewer {
    leases: Api<Lease>,
    nodes: Api<Node>,
    node_name: String,
    duration_seconds: i32,
    interval: Duration,
}

impl LeaseRenewer {
    pub fn new(client: kube::Client, config: &Config) -> LeaseRenewer {
        LeaseRenewer {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes: Api::all(client),
            node_name: config.node_name.clone(),
            duration_seconds: config.settings.node_lease_duration_seconds,
            interval: config.lease_renew_interval(),
        }
    }

    /// Renews forever: every interval, and sooner (a fraction of it) after a failure.
    pub async fn run(&self) {
        loop {
            let wait = match self.renew().await {
                Ok(()) => self.interval,
                Err(e) => {
                    tracing::warn!(node = %self.node_name, "renewing node lease: {e}");
                    (self.interval / 4).max(Duration::from_millis(200))
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// One renewal: create the Lease, or update its renewTime (and owner, holder, duration).
    pub async fn renew(&self) -> Result<(), kube::Error> {
        let pp = PostParams {
            field_manager: Some(super::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let existing = match self.leases.get(&self.node_name).await {
            Ok(l) => Some(l),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => return Err(e),
        };
        match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.node_name.clone()),
                        namespace: Some(NODE_LEASE_NAMESPACE.into()),
                        owner_references: self.node_owner().await.map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None)),
                };
                self.leases.create(&pp, &lease).await?;
            }
            Some(mut lease) => {
                if lease
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(|o| o.is_empty())
                {
                    lease.metadata.owner_references = self.node_owner().await.map(|o| vec![o]);
                }
                lease.spec = Some(self.spec(lease.spec.take()));
                self.leases.replace(&self.node_name, &pp, &lease).await?;
            }
        }
        Ok(())
    }

    fn spec(&self, old: Option<LeaseSpec>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.node_name.clone()),
            lease_duration_seconds: Some(self.duration_seconds),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..old.unwrap_or_default()
        }
    }

    /// The ownerReference to this node's Node, if the Node exists.
    async fn node_owner(&self) -> Option<OwnerReference> {
        let node = self.nodes.get_opt(&self.node_name).await.ok()??;
        Some(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node_name.clone(),
            uid: node.metadata.uid?,
            ..Default::default()
        })
    }
}
