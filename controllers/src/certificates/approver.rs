//! `csrapproving` (upstream's pkg/controller/certificates/approver/sarapprove.go): approves
//! `kubernetes.io/kube-apiserver-client-kubelet` requests whose subject is a valid kubelet client
//! (`system:node:<name>` in `system:nodes`, no SANs, client usages) when a SubjectAccessReview
//! for the requester allows `create` on `certificatesigningrequests/selfnodeclient` (a node
//! renewing its own certificate: requester = subject) or `certificatesigningrequests/nodeclient`
//! (a bootstrapper asking for a new node's certificate). Condition `Approved`, reason
//! `AutoApproved`, upstream's messages.
//!
//! Capstan's additions, which upstream leaves to external approvers:
//! - a bootstrapper (the `nodeclient` path) does not get the name of a node that is registered
//!   and Ready: that name belongs to a live kubelet, which renews through `selfnodeclient`. The
//!   request stays pending (a human may still approve it);
//! - `kubernetes.io/kubelet-serving` requests from `system:node:<name>` (in `system:nodes`) for
//!   its own subject are approved when every DNS name and IP is one of Node `<name>`'s
//!   addresses (its name, `Hostname`, `InternalDNS`/`ExternalDNS`, `InternalIP`/`ExternalIP`).

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use machinery::informer::{HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};

use super::*;
use crate::ControllerContext;

/// A permission a kubelet client request is approved under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recognizer {
    pub subresource: &'static str,
    pub message: &'static str,
}

pub const SELF_NODE_CLIENT: Recognizer = Recognizer {
    subresource: "selfnodeclient",
    message: "Auto approving self kubelet client certificate after SubjectAccessReview.",
};
pub const NODE_CLIENT: Recognizer = Recognizer {
    subresource: "nodeclient",
    message: "Auto approving kubelet client certificate after SubjectAccessReview.",
};
pub const SERVING_MESSAGE: &str =
    "Auto approving kubelet serving certificate for the node's own addresses.";

/// The recognizers that match a request, in upstream's order (`isSelfNodeClientCert`, then
/// `isNodeClientCert`).
pub fn client_recognizers(csr: &CertificateSigningRequest, req: &ParsedCsr) -> Vec<Recognizer> {
    if csr.spec.signer_name != KUBE_APISERVER_CLIENT_KUBELET_SIGNER
        || validate_kubelet_client(req, csr).is_err()
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    if csr.spec.username.as_deref() == Some(req.common_name.as_str()) {
        out.push(SELF_NODE_CLIENT);
    }
    out.push(NODE_CLIENT);
    out
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Capstan's guard on the `nodeclient` path: the name of a registered, Ready node is taken.
pub fn name_taken(node: Option<&Node>) -> bool {
    node.is_some_and(is_ready)
}

/// Whether a kubelet serving request may be approved: a valid serving subject, requested by
/// the node itself, for names and addresses of that node only.
pub fn serving_allowed(
    csr: &CertificateSigningRequest,
    req: &ParsedCsr,
    node: Option<&Node>,
) -> Result<(), String> {
    validate_kubelet_serving(req, csr)?;
    let user = csr.spec.username.as_deref().unwrap_or("");
    if user != req.common_name {
        return Err(format!(
            "requested by {user:?}, not by the node {:?} itself",
            req.common_name
        ));
    }
    if !csr.spec.groups.iter().flatten().any(|g| g == NODES_GROUP) {
        return Err(format!("{user:?} is not in {NODES_GROUP}"));
    }
    let name = &req.common_name[NODE_USER_PREFIX.len()..];
    let node = node.ok_or_else(|| format!("node {name:?} is not registered"))?;
    let addresses: Vec<(&str, &str)> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|a| {
            a.iter()
                .map(|a| (a.type_.as_str(), a.address.as_str()))
                .collect()
        })
        .unwrap_or_default();
    for d in &req.dns_names {
        let own = d == name
            || addresses
                .iter()
                .any(|(t, a)| matches!(*t, "Hostname" | "InternalDNS" | "ExternalDNS") && a == d);
        if !own {
            return Err(format!("DNS name {d:?} is not an address of node {name:?}"));
        }
    }
    for ip in &req.ip_addresses {
        let own = addresses.iter().any(|(t, a)| {
            matches!(*t, "InternalIP" | "ExternalIP") && a.parse::<IpAddr>().ok() == Some(*ip)
        });
        if !own {
            return Err(format!("IP {ip} is not an address of node {name:?}"));
        }
    }
    Ok(())
}

pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    ApprovingController::new(&ctx).run().await
}

#[derive(Clone)]
pub struct ApprovingController {
    client: kube::Client,
    csrs: Informer<CertificateSigningRequest>,
    nodes: Informer<Node>,
    queue: WorkQueue<String>,
}

impl ApprovingController {
    pub fn new(ctx: &ControllerContext) -> Self {
        let c = ApprovingController {
            client: ctx.client.clone(),
            csrs: ctx.informers.informer::<CertificateSigningRequest>(),
            nodes: ctx.informers.informer::<Node>(),
            queue: WorkQueue::new("csrapproving"),
        };
        let (q1, q2) = (c.queue.clone(), c.queue.clone());
        let key = |c: &CertificateSigningRequest| c.metadata.name.clone().unwrap_or_default();
        c.csrs.add_handler(HandlerFns::<CertificateSigningRequest> {
            add: Some(Box::new(move |c| q1.add(key(c)))),
            update: Some(Box::new(move |_, c| q2.add(key(c)))),
            delete: None,
        });
        c
    }

    pub async fn run(self) -> anyhow::Result<()> {
        self.csrs.wait_synced().await;
        self.nodes.wait_synced().await;
        tracing::info!("csrapproving: caches synced");
        let this = self.clone();
        run_workers(self.queue.clone(), 5, move |key: String| {
            let this = this.clone();
            async move { this.sync(&key).await }
        })
        .await;
        Ok(())
    }

    async fn allowed(
        &self,
        csr: &CertificateSigningRequest,
        subresource: &str,
    ) -> Result<bool, kube::Error> {
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: csr.spec.username.clone(),
                uid: csr.spec.uid.clone(),
                groups: csr.spec.groups.clone(),
                extra: csr.spec.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("certificates.k8s.io".into()),
                    resource: Some("certificatesigningrequests".into()),
                    verb: Some("create".into()),
                    subresource: Some(subresource.into()),
                    version: Some("*".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let out = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await?;
        Ok(out.status.is_some_and(|s| s.allowed))
    }

    /// Upstream's `handle`: approves the request when a recognizer's permission is granted.
    pub async fn sync(&self, name: &str) -> Result<(), kube::Error> {
        let Some(csr) = self.csrs.get("", name) else {
            return Ok(());
        };
        if is_issued(&csr) || is_approved(&csr) || is_denied(&csr) {
            return Ok(());
        }
        let Ok(req) = request_of(&csr) else {
            return Ok(());
        };
        let node_name = req
            .common_name
            .strip_prefix(NODE_USER_PREFIX)
            .unwrap_or("")
            .to_string();
        let node = self.nodes.get("", &node_name);
        let mut approval = None;
        if csr.spec.signer_name == KUBELET_SERVING_SIGNER {
            match serving_allowed(&csr, &req, node.as_deref()) {
                Ok(()) => approval = Some(SERVING_MESSAGE),
                Err(why) => tracing::info!("csrapproving: {name}: not approving: {why}"),
            }
        }
        let mut tried = Vec::new();
        for r in client_recognizers(&csr, &req) {
            if r == NODE_CLIENT && name_taken(node.as_deref()) {
                tracing::info!(
                    "csrapproving: {name}: not approving: node {node_name:?} is registered and Ready"
                );
                continue;
            }
            tried.push(r.subresource);
            if self.allowed(&csr, r.subresource).await? {
                approval = Some(r.message);
                break;
            }
        }
        let Some(message) = approval else {
            if !tried.is_empty() {
                tracing::info!(
                    "csrapproving: recognized csr {name:?} as {tried:?} but subject access review was not approved"
                );
            }
            return Ok(());
        };
        let mut csr = (*csr).clone();
        csr.status
            .get_or_insert_with(CertificateSigningRequestStatus::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("AutoApproved".into()),
                message: Some(message.into()),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..Default::default()
            });
        let api = Api::<CertificateSigningRequest>::all(self.client.clone());
        match api
            .replace_subresource("approval", name, &PostParams::default(), &csr)
            .await
        {
            Ok(_) => {
                tracing::info!("csrapproving: approved {name}: {message}");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::csr;
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeStatus};

    fn client(cn: &str, user: &str) -> CertificateSigningRequest {
        csr(
            cn,
            &["system:nodes"],
            &[],
            &[],
            KUBE_APISERVER_CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            user,
        )
    }

    #[test]
    fn recognizers_follow_upstream() {
        let own = client("system:node:a", "system:node:a");
        assert_eq!(
            client_recognizers(&own, &request_of(&own).unwrap()),
            [SELF_NODE_CLIENT, NODE_CLIENT]
        );
        let boot = client("system:node:a", "system:bootstrap:abcdef");
        assert_eq!(
            client_recognizers(&boot, &request_of(&boot).unwrap()),
            [NODE_CLIENT]
        );
        let bad = csr(
            "system:node:a",
            &["system:masters"],
            &[],
            &[],
            KUBE_APISERVER_CLIENT_KUBELET_SIGNER,
            &["digital signature", "client auth"],
            "system:bootstrap:abcdef",
        );
        assert!(client_recognizers(&bad, &request_of(&bad).unwrap()).is_empty());
    }

    fn node(name: &str, ready: bool, addrs: &[(&str, &str)]) -> Node {
        Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_ready_nodes_name_is_taken_for_bootstrappers() {
        assert!(!name_taken(None));
        assert!(!name_taken(Some(&node("a", false, &[]))));
        assert!(name_taken(Some(&node("a", true, &[]))));
    }

    #[test]
    fn serving_requests_only_for_the_nodes_own_addresses() {
        let n = node(
            "a",
            true,
            &[("InternalIP", "10.0.0.1"), ("Hostname", "a.lab")],
        );
        let mk = |user: &str, dns: &[&str], ips: &[&str]| {
            let mut c = csr(
                "system:node:a",
                &["system:nodes"],
                dns,
                ips,
                KUBELET_SERVING_SIGNER,
                &["digital signature", "server auth"],
                user,
            );
            c.spec.groups = Some(vec!["system:nodes".into(), "system:authenticated".into()]);
            c
        };
        let ok = mk("system:node:a", &["a", "a.lab"], &["10.0.0.1"]);
        assert_eq!(
            serving_allowed(&ok, &request_of(&ok).unwrap(), Some(&n)),
            Ok(())
        );
        let foreign_ip = mk("system:node:a", &["a"], &["10.0.0.9"]);
        assert!(serving_allowed(&foreign_ip, &request_of(&foreign_ip).unwrap(), Some(&n)).is_err());
        let foreign_dns = mk("system:node:a", &["evil.example"], &[]);
        assert!(
            serving_allowed(&foreign_dns, &request_of(&foreign_dns).unwrap(), Some(&n)).is_err()
        );
        let other_user = mk("system:node:b", &["a"], &[]);
        assert!(serving_allowed(&other_user, &request_of(&other_user).unwrap(), Some(&n)).is_err());
        assert!(serving_allowed(&ok, &request_of(&ok).unwrap(), None).is_err());
    }
}
