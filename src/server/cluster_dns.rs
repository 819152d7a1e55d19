//! Cluster DNS, the server's part: the `kube-dns` Service on the cluster DNS IP (kubeadm's
//! default: the service CIDR's 10th address), and a Role that lets the nodes (`system:nodes`)
//! keep their DNS server's address in the Service's EndpointSlices in kube-system. Each node's
//! DNS server is the node agent's (`agent/node.rs`); pods reach it through the Service like
//! upstream pods reach CoreDNS.
//!
//! The Role is ours, not upstream's: upstream's nodes never write EndpointSlices (CoreDNS runs as
//! pods behind a selector). It lets a node change another node's DNS slice, as any holder of
//! `system:node-proxier`-like access could redirect traffic; the slices are named per node.

use std::net::IpAddr;

use anyhow::Context;
use k8s_openapi::api::rbac::v1::{PolicyRule, Subject};

/// The Role (and RoleBinding) in kube-system that lets nodes keep their kube-dns slices.
pub const NODE_ROLE: &str = "capstan:cluster-dns-endpoints";

/// Keeps the `kube-dns` Service on `ip` and the nodes' Role, retrying while the API server
/// finishes starting.
pub async fn ensure(client: kube::Client, ip: IpAddr) -> anyhow::Result<()> {
    let mut tries = 0;
    loop {
        let r = async {
            dns::kube_dns::ensure_service(&client, ip).await?;
            ensure_node_role(&client).await?;
            anyhow::Ok(())
        }
        .await;
        match r {
            Ok(()) => return Ok(()),
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::debug!(error = %e, "keeping the kube-dns Service; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("the kube-dns Service"),
        }
    }
}

async fn ensure_node_role(client: &kube::Client) -> anyhow::Result<()> {
    let rules = vec![PolicyRule {
        api_groups: Some(vec!["discovery.k8s.io".into()]),
        resources: Some(vec!["endpointslices".into()]),
        verbs: [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    }];
    let nodes = Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Group".into(),
        name: "system:nodes".into(),
        ..Default::default()
    };
    super::cluster_info::ensure_role(client, "kube-system", NODE_ROLE, rules, nodes)
        .await
        .context("creating the nodes' kube-dns EndpointSlice Role")
}
