//! Upstream's `EndpointsChangeTracker` and `EndpointSliceCache` (`pkg/proxy/endpointschangetracker.go`,
//! `endpointslicecache.go`): the watch handlers record EndpointSlices here, grouped by the
//! Service they belong to (label `kubernetes.io/service-name`) and marked dirty; a sync merges the
//! slices of each dirty Service into per-port endpoint lists (sorted and de-duplicated, so that
//! equal input renders equal rules), applies them to the [`EndpointsMap`] and reports what the
//! conntrack clean-up needs: UDP endpoints that went away and UDP Service ports that got their
//! first endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoint::EndpointInfo;
use crate::service_port::{NamespacedName, Protocol, ServicePortName};

/// The label naming a slice's Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Endpoints per Service port, as applied by the last sync.
pub type EndpointsMap = BTreeMap<ServicePortName, Vec<EndpointInfo>>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
}

/// What the proxy keeps of one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceInfo {
    ports: Vec<(String, u16, Protocol)>,
    endpoints: Vec<SliceEndpoint>,
}

fn slice_info(slice: &EndpointSlice) -> SliceInfo {
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u16::try_from(p.port?).ok()?,
                Protocol::parse(p.protocol.as_deref())?,
            ))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flat_map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let ready = c.ready.unwrap_or(true);
            let serving = c.serving.unwrap_or(ready);
            let terminating = c.terminating.unwrap_or(false);
            // Upstream uses the first address of an endpoint.
            e.addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .map(|ip| SliceEndpoint {
                    ip,
                    ready,
                    serving,
                    terminating,
                    node_name: e.node_name.clone(),
                })
        })
        .collect();
    SliceInfo { ports, endpoints }
}

/// The slice's Service, or `None` when it names none or is not IPv4.
fn slice_service(slice: &EndpointSlice) -> Option<(NamespacedName, String)> {
    if slice.address_type != "IPv4" {
        return None;
    }
    let service = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some((
        NamespacedName {
            namespace: slice.metadata.namespace.clone().unwrap_or_default(),
            name: service.clone(),
        },
        slice.metadata.name.clone().unwrap_or_default(),
    ))
}

/// Pending slices and applied endpoints, per Service.
#[derive(Debug, Default)]
pub struct EndpointsChangeTracker {
    hostname: String,
    slices: HashMap<NamespacedName, BTreeMap<String, SliceInfo>>,
    dirty: BTreeSet<NamespacedName>,
    applied: HashMap<NamespacedName, EndpointsMap>,
}

/// What applying the pending changes did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EndpointsUpdateResult {
    /// Services whose endpoints changed.
    pub updated_services: BTreeSet<NamespacedName>,
    /// UDP endpoints removed (or no longer ready) from a Service port.
    pub stale_endpoints: Vec<(ServicePortName, EndpointInfo)>,
    /// UDP Service ports that went from no ready endpoint to some.
    pub new_udp_service_ports: BTreeSet<ServicePortName>,
}

impl EndpointsChangeTracker {
    /// `hostname` decides which endpoints are local.
    pub fn new(hostname: &str) -> Self {
        EndpointsChangeTracker {
            hostname: hostname.to_string(),
            ..Default::default()
        }
    }

    /// Records a slice as added or modified; true when that is a change.
    pub fn update(&mut self, slice: &EndpointSlice) -> bool {
        let Some((svc, name)) = slice_service(slice) else {
            return false;
        };
        let info = slice_info(slice);
        let slices = self.slices.entry(svc.clone()).or_default();
        if slices.get(&name) == Some(&info) {
            return false;
        }
        slices.insert(name, info);
        self.dirty.insert(svc);
        true
    }

    /// Records a slice as deleted.
    pub fn delete(&mut self, slice: &EndpointSlice) -> bool {
        let Some((svc, name)) = slice_service(slice) else {
            return false;
        };
        self.delete_name(&svc, &name)
    }

    /// Records a slice gone by name (a relist that no longer has it).
    pub fn delete_name(&mut self, svc: &NamespacedName, slice: &str) -> bool {
        let Some(slices) = self.slices.get_mut(svc) else {
            return false;
        };
        if slices.remove(slice).is_none() {
            return false;
        }
        if slices.is_empty() {
            self.slices.remove(svc);
        }
        self.dirty.insert(svc.clone());
        true
    }

    /// (Service, slice name) of every slice known.
    pub fn known(&self) -> BTreeSet<(NamespacedName, String)> {
        self.slices
            .iter()
            .flat_map(|(svc, s)| s.keys().map(|n| (svc.clone(), n.clone())))
            .collect()
    }

    /// How many Services have pending changes.
    pub fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// The per-port endpoints of a Service from its slices.
    fn merged(&self, svc: &NamespacedName) -> EndpointsMap {
        let mut by_port: BTreeMap<ServicePortName, BTreeMap<(IpAddr, u16), EndpointInfo>> =
            BTreeMap::new();
        for slice in self.slices.get(svc).into_iter().flat_map(|s| s.values()) {
            for (port_name, port, protocol) in &slice.ports {
                let spn = ServicePortName {
                    service: svc.clone(),
                    port: port_name.clone(),
                    protocol: *protocol,
                };
                let eps = by_port.entry(spn).or_default();
                for e in &slice.endpoints {
                    let info = EndpointInfo {
                        ip: e.ip,
                        port: *port,
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                        is_local: e.node_name.as_deref() == Some(self.hostname.as_str()),
                    };
                    // The same address in two slices (during a move): a ready copy wins.
                    match eps.get(&(e.ip, *port)) {
                        Some(have) if have.ready || !info.ready => {}
                        _ => {
                            eps.insert((e.ip, *port), info);
                        }
                    }
                }
            }
        }
        by_port
            .into_iter()
            .filter(|(_, eps)| !eps.is_empty())
            .map(|(spn, eps)| (spn, eps.into_values().collect()))
            .collect()
    }

    /// Moves every pending change into `map`.
    pub fn apply(&mut self, map: &mut EndpointsMap) -> EndpointsUpdateResult {
        let mut result = EndpointsUpdateResult::default();
        for svc in std::mem::take(&mut self.dirty) {
            let new = self.merged(&svc);
            let old = self.applied.remove(&svc).unwrap_or_default();
            if new == old {
                if !new.is_empty() {
                    self.applied.insert(svc, new);
                }
                continue;
            }
            result.updated_services.insert(svc.clone());
            for (spn, old_eps) in &old {
                map.remove(spn);
                if spn.protocol != Protocol::Udp {
                    continue;
                }
                let new_eps = new.get(spn).map(Vec::as_slice).unwrap_or(&[]);
                for e in old_eps {
                    let still = new_eps
                        .iter()
                        .any(|n| n.ip == e.ip && n.port == e.port && (n.ready || !e.ready));
                    if !still {
                        result.stale_endpoints.push((spn.clone(), e.clone()));
                    }
                }
            }
            for (spn, eps) in &new {
                if spn.protocol == Protocol::Udp {
                    let had_ready = old.get(spn).is_some_and(|o| o.iter().any(|e| e.ready));
                    if !had_ready && eps.iter().any(|e| e.ready) {
                        result.new_udp_service_ports.insert(spn.clone());
                    }
                }
                map.insert(spn.clone(), eps.clone());
            }
            if !new.is_empty() {
                self.applied.insert(svc, new);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, svc: &str, proto: &str, eps: &[(&str, bool, &str)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name, "labels": {LABEL_SERVICE_NAME: svc}},
            "addressType": "IPv4",
            "ports": [{"name": "p", "port": 80, "protocol": proto}],
            "endpoints": eps.iter().map(|(ip, ready, node)| serde_json::json!({
                "addresses": [ip], "conditions": {"ready": ready}, "nodeName": node
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn slices_merge_per_service_port() {
        let mut t = EndpointsChangeTracker::new("node-a");
        let mut map = EndpointsMap::new();
        assert!(t.update(&slice("s-1", "s", "UDP", &[("10.1.0.2", true, "node-b")])));
        assert!(t.update(&slice("s-2", "s", "UDP", &[("10.1.0.1", true, "node-a")])));
        assert!(map.is_empty(), "handlers only record");
        let r = t.apply(&mut map);
        assert_eq!(r.updated_services.len(), 1);
        let spn = map.keys().next().unwrap().clone();
        assert_eq!(spn.to_string(), "ns/s:p");
        let eps = &map[&spn];
        assert_eq!(
            eps.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            vec!["10.1.0.1:80", "10.1.0.2:80"],
            "sorted by address"
        );
        assert!(eps[0].is_local && !eps[1].is_local);
        assert_eq!(
            r.new_udp_service_ports.len(),
            1,
            "first endpoints of a UDP port"
        );
        assert!(r.stale_endpoints.is_empty());

        // The same slice again is no change.
        assert!(!t.update(&slice("s-1", "s", "UDP", &[("10.1.0.2", true, "node-b")])));
        // An endpoint goes away: it is stale.
        assert!(t.delete(&slice("s-1", "s", "UDP", &[])));
        let r = t.apply(&mut map);
        assert_eq!(r.stale_endpoints.len(), 1);
        assert_eq!(r.stale_endpoints[0].1.to_string(), "10.1.0.2:80");
        assert!(r.new_udp_service_ports.is_empty());
        assert_eq!(map[&spn].len(), 1);
        // The last one goes: the port disappears from the map.
        assert!(t.delete_name(&spn.service, "s-2"));
        t.apply(&mut map);
        assert!(map.is_empty());
        assert!(t.known().is_empty());
    }

    #[test]
    fn slices_without_service_label_are_ignored() {
        let mut t = EndpointsChangeTracker::new("n");
        let mut s = slice("x", "s", "TCP", &[("10.0.0.1", true, "n")]);
        s.metadata.labels = None;
        assert!(!t.update(&s));
        assert_eq!(t.pending(), 0);
    }
}
