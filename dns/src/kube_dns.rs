//! The `kube-dns` Service and each node's EndpointSlice of it: how pods reach the built-in DNS
//! servers exactly as upstream pods reach CoreDNS.
//!
//! The control plane keeps the Service in `kube-system` on the cluster DNS IP (kubeadm's choice:
//! the service CIDR's 10th address), ports 53/UDP `dns` and 53/TCP `dns-tcp`, label
//! `k8s-app=kube-dns`, and no selector: its endpoints are not pods. Each node keeps one
//! EndpointSlice of it, `kube-dns-<node>`, managed by `capstan-dns` (so the EndpointSlice
//! controller leaves it alone), holding the node's DNS address and the ports the server really
//! listens on — the slice's port names match the Service's, so the proxy DNATs the cluster IP's
//! port 53 to whatever port the node's server has, like any selectorless Service. The Service's
//! `targetPort`s name the ports (`dns`, `dns-tcp`) for the same reason.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::cache::SERVICE_NAME_LABEL;

pub const NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";
/// The label kubeadm's DNS Service and pods carry.
pub const APP_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Who manages the nodes' slices (not the EndpointSlice controller).
pub const MANAGED_BY: &str = "capstan-dns";
pub const PORT_DNS: &str = "dns";
pub const PORT_DNS_TCP: &str = "dns-tcp";

/// Errors keeping the Service or a slice.
#[derive(Debug, thiserror::Error)]
pub enum KubeDnsError {
    #[error("{what} {NAMESPACE}/{name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

fn api_err<'a>(what: &'static str, name: &'a str) -> impl FnOnce(kube::Error) -> KubeDnsError + 'a {
    move |source| KubeDnsError::Api {
        what,
        name: name.to_string(),
        source,
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// The `kube-dns` Service on `cluster_ip`.
pub fn service(cluster_ip: IpAddr) -> Service {
    let port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port: 53,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(SERVICE_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (APP_LABEL.0.into(), APP_LABEL.1.into()),
                ("kubernetes.io/cluster-service".into(), "true".into()),
                ("kubernetes.io/name".into(), "KubeDNS".into()),
            ])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            cluster_ips: Some(vec![cluster_ip.to_string()]),
            ports: Some(vec![port(PORT_DNS, "UDP"), port(PORT_DNS_TCP, "TCP")]),
            type_: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether the stored Service is what [`service`] would make (ignoring defaulted fields).
fn service_matches(have: &Service, want: &Service) -> bool {
    let (h, w) = (
        have.spec.clone().unwrap_or_default(),
        want.spec.clone().unwrap_or_default(),
    );
    let ports = |s: &ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone(),
                    p.protocol.clone(),
                    p.port,
                    p.target_port.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    h.cluster_ip == w.cluster_ip
        && h.selector.as_ref().is_none_or(|s| s.is_empty())
        && ports(&h) == ports(&w)
        && have
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(APP_LABEL.0))
            .map(String::as_str)
            == Some(APP_LABEL.1)
}

/// Makes sure the `kube-dns` Service exists on `cluster_ip` with our ports: created when
/// missing, re-created when on another cluster IP (immutable), updated when its ports or labels
/// differ.
pub async fn ensure_service(client: &Client, cluster_ip: IpAddr) -> Result<(), KubeDnsError> {
    let api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let want = service(cluster_ip);
    let err = api_err("Service", SERVICE_NAME);
    match api
        .get_opt(SERVICE_NAME)
        .await
        .map_err(api_err("Service", SERVICE_NAME))?
    {
        None => {
            api.create(&PostParams::default(), &want)
                .await
                .map_err(err)?;
            tracing::info!(cluster_ip = %cluster_ip, "created the kube-dns Service");
        }
        Some(have) if service_matches(&have, &want) => {}
        Some(have)
            if have.spec.as_ref().and_then(|s| s.cluster_ip.as_deref())
                != Some(&cluster_ip.to_string()) =>
        {
            api.delete(SERVICE_NAME, &Default::default())
                .await
                .map_err(api_err("Service", SERVICE_NAME))?;
            api.create(&PostParams::default(), &want)
                .await
                .map_err(err)?;
            tracing::info!(cluster_ip = %cluster_ip, "re-created the kube-dns Service on its new cluster IP");
        }
        Some(have) => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version.clone();
            let mut labels = have.metadata.labels.clone().unwrap_or_default();
            labels.extend(next.metadata.labels.take().unwrap_or_default());
            next.metadata.labels = Some(labels);
            api.replace(SERVICE_NAME, &PostParams::default(), &next)
                .await
                .map_err(err)?;
            tracing::info!("updated the kube-dns Service");
        }
    }
    Ok(())
}

/// The name of a node's slice.
pub fn slice_name(node: &str) -> String {
    format!("{SERVICE_NAME}-{node}")
}

/// A node's EndpointSlice of `kube-dns`: its DNS server at `addr`, UDP and TCP `port`.
pub fn node_slice(node: &str, addr: IpAddr, port: u16) -> EndpointSlice {
    let eport = |name: &str, protocol: &str| EndpointPort {
        name: Some(name.into()),
        protocol: Some(protocol.into()),
        port: Some(port.into()),
        ..Default::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(node)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.into(), SERVICE_NAME.into()),
                (MANAGED_BY_LABEL.into(), MANAGED_BY.into()),
                (APP_LABEL.0.into(), APP_LABEL.1.into()),
            ])),
            ..Default::default()
        },
        address_type: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![addr.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            node_name: Some(node.into()),
            ..Default::default()
        }],
        ports: Some(vec![eport(PORT_DNS, "UDP"), eport(PORT_DNS_TCP, "TCP")]),
    }
}

fn slice_matches(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.address_type == want.address_type
        && have
            .endpoints
            .iter()
            .map(|e| (&e.addresses, e.conditions.as_ref().and_then(|c| c.ready)))
            .eq(want
                .endpoints
                .iter()
                .map(|e| (&e.addresses, e.conditions.as_ref().and_then(|c| c.ready))))
        && have.ports == want.ports
        && have.metadata.labels == want.metadata.labels
}

/// Creates or updates the node's slice once.
pub async fn sync_node_slice(client: &Client, want: &EndpointSlice) -> Result<bool, KubeDnsError> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let name = want.metadata.name.clone().unwrap_or_default();
    let have = api
        .get_opt(&name)
        .await
        .map_err(api_err("EndpointSlice", &name))?;
    match have {
        None => match api.create(&PostParams::default(), want).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(api_err("EndpointSlice", &name)(e)),
        },
        Some(have) if slice_matches(&have, want) => Ok(false),
        Some(have) => {
            let mut next = want.clone();
            next.metadata.resource_version = have.metadata.resource_version;
            match api.replace(&name, &PostParams::default(), &next).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) || is_not_found(&e) => Ok(false),
                Err(e) => Err(api_err("EndpointSlice", &name)(e)),
            }
        }
    }
}

/// How often the node's slice is checked (and put back when someone changed or deleted it).
pub const SLICE_RESYNC: Duration = Duration::from_secs(10);

/// Keeps the node's slice until the task is dropped.
pub async fn keep_node_slice(client: Client, want: EndpointSlice) {
    loop {
        match sync_node_slice(&client, &want).await {
            Ok(true) => {
                tracing::info!(slice = ?want.metadata.name, "kube-dns EndpointSlice written")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "keeping the node's kube-dns EndpointSlice"),
        }
        tokio::time::sleep(SLICE_RESYNC).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_and_slice_shapes() {
        let svc = service("10.43.0.10".parse().unwrap());
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
        assert!(
            spec.selector.is_none(),
            "no selector: the nodes keep the endpoints"
        );
        let ports: Vec<_> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.as_deref().unwrap(),
                    p.protocol.as_deref().unwrap(),
                    p.port,
                )
            })
            .collect();
        assert_eq!(ports, vec![("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]);
        assert!(service_matches(&svc, &svc));
        assert!(!service_matches(
            &service("10.43.0.11".parse().unwrap()),
            &svc
        ));

        let s = node_slice("node-a", "192.0.2.7".parse().unwrap(), 5353);
        assert_eq!(s.metadata.name.as_deref(), Some("kube-dns-node-a"));
        let labels = s.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "kube-dns");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(s.address_type, "IPv4");
        let ports: Vec<_> = s
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref().unwrap(), p.port.unwrap()))
            .collect();
        assert_eq!(ports, vec![("dns", 5353), ("dns-tcp", 5353)]);
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("node-a"));
        assert!(slice_matches(&s, &s));
        assert!(!slice_matches(
            &node_slice("node-a", "192.0.2.7".parse().unwrap(), 53),
            &s
        ));
    }
}
