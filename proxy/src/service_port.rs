//! A Service port as the proxy sees it (upstream's `pkg/proxy/serviceport.go` and
//! `ServicePortName` in `pkg/proxy/types.go`): the identity of one port of one Service
//! (`namespace/name:portName` plus protocol) and the backend-neutral facts every backend needs to
//! program it: the cluster IP, node port, external and load-balancer IPs, session affinity and the
//! two traffic policies. Built once per Service change, so a sync never looks at API objects.
//!
//! Capstan proxies the IPv4 family (the first IPv4 address of `clusterIPs`); headless and
//! ExternalName Services are not proxied, as upstream.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use crate::config::Cidr;

/// A Service's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower case, as iptables and the chain-name hashes write it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// `namespace/name:port` (the port's name; no `:` when it has none) and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: NamespacedName,
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port)
        }
    }
}

/// Everything about one Service port that the backends program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// 0 when there is none.
    pub node_port: u16,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<Cidr>,
    /// `Some(timeout seconds)` with sessionAffinity ClientIP.
    pub session_affinity_timeout: Option<u32>,
    /// externalTrafficPolicy Local on an externally reachable Service.
    pub external_policy_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_policy_local: bool,
    /// 0 when there is none.
    pub health_check_node_port: u16,
}

/// Upstream's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

impl ServicePortInfo {
    /// NodePort, load balancer or external IPs make a Service reachable from outside.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.load_balancer_ips.is_empty() || !self.external_ips.is_empty()
    }

    /// Whether some traffic uses the "Cluster" policy (all endpoints).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || (self.externally_accessible() && !self.external_policy_local)
    }

    /// Whether some traffic uses the "Local" policy (this node's endpoints only).
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

fn ipv4(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().filter(IpAddr::is_ipv4)
}

/// The ports of a Service that the proxy programs; empty for headless and ExternalName Services
/// and for Services without an IPv4 cluster IP.
pub fn service_ports(svc: &Service) -> Vec<(ServicePortName, ServicePortInfo)> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    let Some(cluster_ip) = ips.iter().find_map(|s| ipv4(s)) else {
        return Vec::new();
    };
    let service = NamespacedName {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
    };
    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| ipv4(s))
        .collect();
    let is_lb = spec.type_.as_deref() == Some("LoadBalancer");
    let load_balancer_ips: Vec<IpAddr> = if is_lb {
        svc.status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            // ipMode Proxy: the load balancer delivers to the node, not to the VIP.
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_deref().and_then(ipv4))
            .collect()
    } else {
        Vec::new()
    };
    let load_balancer_source_ranges: Vec<Cidr> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|s| Cidr::parse(s))
        .filter(|c| c.addr.is_ipv4())
        .collect();
    let session_affinity_timeout =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map(|t| t.max(0) as u32)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
        });
    let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let hc = spec.health_check_node_port.unwrap_or(0).clamp(0, 65535) as u16;
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = Protocol::parse(p.protocol.as_deref())?;
            let mut info = ServicePortInfo {
                cluster_ip,
                port: u16::try_from(p.port).ok()?,
                protocol,
                node_port: p.node_port.unwrap_or(0).clamp(0, 65535) as u16,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                load_balancer_source_ranges: load_balancer_source_ranges.clone(),
                session_affinity_timeout,
                external_policy_local: false,
                internal_policy_local: itp_local,
                health_check_node_port: 0,
            };
            info.external_policy_local = etp_local && info.externally_accessible();
            if info.external_policy_local {
                info.health_check_node_port = hc;
            }
            let name = ServicePortName {
                service: service.clone(),
                port: p.name.clone().unwrap_or_default(),
                protocol,
            };
            Some((name, info))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(json: serde_json::Value) -> Service {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ports_of_a_service() {
        let s = svc(serde_json::json!({
            "metadata": {"namespace": "ns1", "name": "svc1"},
            "spec": {"type": "LoadBalancer", "clusterIP": "172.30.0.41", "clusterIPs": ["172.30.0.41"],
                "externalTrafficPolicy": "Local", "healthCheckNodePort": 30000,
                "sessionAffinity": "ClientIP", "externalIPs": ["1.2.3.4", "2001:db8::1"],
                "ports": [{"name": "p80", "port": 80, "nodePort": 3001},
                          {"name": "p53", "port": 53, "protocol": "UDP", "nodePort": 3002}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"ip": "5.6.7.9", "ipMode": "Proxy"}]}}
        }));
        let ports = service_ports(&s);
        assert_eq!(ports.len(), 2);
        let (n, i) = &ports[0];
        assert_eq!(n.to_string(), "ns1/svc1:p80");
        assert_eq!(i.protocol, Protocol::Tcp);
        assert_eq!(i.external_ips, vec!["1.2.3.4".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            i.load_balancer_ips,
            vec!["5.6.7.8".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(i.session_affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert!(i.external_policy_local);
        assert_eq!(i.health_check_node_port, 30000);
        assert!(i.uses_local_endpoints() && i.uses_cluster_endpoints());
        assert_eq!(ports[1].1.protocol, Protocol::Udp);
    }

    #[test]
    fn headless_and_external_name_are_not_proxied() {
        let s = svc(
            serde_json::json!({"metadata": {"namespace": "a", "name": "b"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert!(service_ports(&s).is_empty());
        let s = svc(
            serde_json::json!({"metadata": {"namespace": "a", "name": "b"},
            "spec": {"type": "ExternalName", "externalName": "x.example"}}),
        );
        assert!(service_ports(&s).is_empty());
        let s = svc(
            serde_json::json!({"metadata": {"namespace": "a", "name": "b"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}),
        );
        let p = service_ports(&s);
        assert_eq!(p[0].0.to_string(), "a/b");
        assert!(!p[0].1.external_policy_local);
    }
}
