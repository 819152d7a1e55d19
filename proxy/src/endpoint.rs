//! One endpoint of a Service port as the proxy sees it (upstream's `pkg/proxy/endpoint.go`): the
//! address and port from an EndpointSlice with its conditions (ready, serving, terminating) and
//! whether it runs on this node. Also upstream's `CategorizeEndpoints` (`pkg/proxy/topology.go`):
//! which endpoints "Cluster" and "Local" traffic use, falling back to serving+terminating
//! endpoints when no ready one is left.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::service_port::ServicePortInfo;

/// One backend address of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (the slice's `nodeName` is the proxy's hostname).
    pub is_local: bool,
}

impl fmt::Display for EndpointInfo {
    /// `ip:port` (`[ip]:port` for IPv6), the endpoint's identity in chain names and comments.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

/// The endpoints each kind of traffic uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CategorizedEndpoints<'a> {
    /// Used by "Cluster" traffic policy.
    pub cluster: Vec<&'a EndpointInfo>,
    /// Used by "Local" traffic policy.
    pub local: Vec<&'a EndpointInfo>,
    /// Every endpoint some rule leads to (the union of the two).
    pub all_reachable: Vec<&'a EndpointInfo>,
    /// Whether any usable endpoint exists anywhere in the cluster.
    pub has_any: bool,
}

/// Upstream's `CategorizeEndpoints` without topology hints.
pub fn categorize<'a>(
    endpoints: &'a [EndpointInfo],
    svc: &ServicePortInfo,
) -> CategorizedEndpoints<'a> {
    let mut out = CategorizedEndpoints::default();
    if svc.uses_cluster_endpoints() {
        out.cluster = endpoints.iter().filter(|e| e.ready).collect();
        if out.cluster.is_empty() {
            out.cluster = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !svc.uses_local_endpoints() {
        out.all_reachable = out.cluster.clone();
        return out;
    }
    let (mut local_ready, mut local_terminating) = (false, false);
    for e in endpoints {
        if e.ready {
            out.has_any = true;
            local_ready |= e.is_local;
        } else if e.serving && e.terminating {
            out.has_any = true;
            local_terminating |= e.is_local;
        }
    }
    let mut use_terminating = false;
    if local_ready {
        out.local = endpoints.iter().filter(|e| e.is_local && e.ready).collect();
    } else if local_terminating {
        use_terminating = true;
        out.local = endpoints
            .iter()
            .filter(|e| e.is_local && e.serving && e.terminating)
            .collect();
    }
    if !svc.uses_cluster_endpoints() {
        out.all_reachable = out.local.clone();
        return out;
    }
    if !use_terminating {
        out.all_reachable = out.cluster.clone();
        return out;
    }
    let mut merged: BTreeMap<String, &EndpointInfo> = BTreeMap::new();
    for e in out.cluster.iter().chain(out.local.iter()) {
        merged.insert(e.to_string(), e);
    }
    out.all_reachable = merged.into_values().collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_port::Protocol;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, local: bool) -> EndpointInfo {
        EndpointInfo {
            ip: ip.parse().unwrap(),
            port: 80,
            ready,
            serving,
            terminating,
            is_local: local,
        }
    }

    fn svc(itp_local: bool, etp_local: bool, node_port: u16) -> ServicePortInfo {
        ServicePortInfo {
            cluster_ip: "10.0.0.1".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            node_port,
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            session_affinity_timeout: None,
            external_policy_local: etp_local,
            internal_policy_local: itp_local,
            health_check_node_port: 0,
        }
    }

    fn ips(v: &[&EndpointInfo]) -> Vec<String> {
        v.iter().map(|e| e.ip.to_string()).collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            svc: ServicePortInfo,
            eps: Vec<EndpointInfo>,
            cluster: &'static [&'static str],
            local: &'static [&'static str],
            all: &'static [&'static str],
            has_any: bool,
        }
        let cases = vec![
            Case {
                name: "cluster policy uses ready endpoints only",
                svc: svc(false, false, 0),
                eps: vec![
                    ep("10.1.0.1", true, true, false, false),
                    ep("10.1.0.2", false, false, false, true),
                    ep("10.1.0.3", false, true, true, true),
                ],
                cluster: &["10.1.0.1"],
                local: &[],
                all: &["10.1.0.1"],
                has_any: true,
            },
            Case {
                name: "no ready endpoints: serving terminating ones",
                svc: svc(false, false, 0),
                eps: vec![
                    ep("10.1.0.1", false, true, true, false),
                    ep("10.1.0.2", false, false, true, false),
                ],
                cluster: &["10.1.0.1"],
                local: &[],
                all: &["10.1.0.1"],
                has_any: true,
            },
            Case {
                name: "internal local: local ready only",
                svc: svc(true, false, 0),
                eps: vec![
                    ep("10.1.0.1", true, true, false, false),
                    ep("10.1.0.2", true, true, false, true),
                ],
                cluster: &[],
                local: &["10.1.0.2"],
                all: &["10.1.0.2"],
                has_any: true,
            },
            Case {
                name: "internal local without local endpoints still has endpoints",
                svc: svc(true, false, 0),
                eps: vec![ep("10.1.0.1", true, true, false, false)],
                cluster: &[],
                local: &[],
                all: &[],
                has_any: true,
            },
            Case {
                name: "external local with a local terminating endpoint merges",
                svc: svc(false, true, 30001),
                eps: vec![
                    ep("10.1.0.1", true, true, false, false),
                    ep("10.1.0.2", false, true, true, true),
                ],
                cluster: &["10.1.0.1"],
                local: &["10.1.0.2"],
                all: &["10.1.0.1", "10.1.0.2"],
                has_any: true,
            },
            Case {
                name: "nothing usable",
                svc: svc(false, true, 30001),
                eps: vec![ep("10.1.0.1", false, false, true, true)],
                cluster: &[],
                local: &[],
                all: &[],
                has_any: false,
            },
        ];
        for c in cases {
            let got = categorize(&c.eps, &c.svc);
            assert_eq!(ips(&got.cluster), c.cluster, "{}: cluster", c.name);
            assert_eq!(ips(&got.local), c.local, "{}: local", c.name);
            assert_eq!(ips(&got.all_reachable), c.all, "{}: all", c.name);
            assert_eq!(got.has_any, c.has_any, "{}: has_any", c.name);
        }
    }
}
