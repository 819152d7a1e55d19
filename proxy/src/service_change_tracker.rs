//! Upstream's `ServiceChangeTracker` (`pkg/proxy/servicechangetracker.go`): the watch handlers
//! record each Service's latest ports here (pending, latest wins); a sync applies the pending
//! changes to the [`ServicePortMap`] the backends read and learns which Services changed and
//! which UDP cluster IPs went away (their conntrack entries are stale).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use crate::service_port::{
    service_ports, NamespacedName, Protocol, ServicePortInfo, ServicePortName,
};

/// Every proxied Service port, as applied by the last sync.
pub type ServicePortMap = BTreeMap<ServicePortName, Arc<ServicePortInfo>>;

type Ports = Vec<(ServicePortName, ServicePortInfo)>;

/// Pending and applied Service ports, per Service.
#[derive(Debug, Default)]
pub struct ServiceChangeTracker {
    pending: BTreeMap<NamespacedName, Ports>,
    applied: HashMap<NamespacedName, Ports>,
}

/// What applying the pending changes did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServiceUpdateResult {
    /// Services whose ports changed (added, removed or modified).
    pub updated_services: BTreeSet<NamespacedName>,
    /// Cluster IPs of UDP ports that are gone.
    pub deleted_udp_cluster_ips: BTreeSet<IpAddr>,
}

fn key(svc: &Service) -> NamespacedName {
    NamespacedName {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
    }
}

impl ServiceChangeTracker {
    /// Records a Service as added or modified; true when that changes what is pending.
    pub fn update(&mut self, svc: &Service) -> bool {
        self.record(key(svc), service_ports(svc))
    }

    /// Records a Service as deleted.
    pub fn delete(&mut self, svc: &Service) -> bool {
        self.record(key(svc), Vec::new())
    }

    /// Records a Service gone by name (a relist that no longer has it).
    pub fn delete_name(&mut self, name: &NamespacedName) -> bool {
        self.record(name.clone(), Vec::new())
    }

    /// Names of the Services applied or pending.
    pub fn known(&self) -> BTreeSet<NamespacedName> {
        self.applied
            .keys()
            .chain(self.pending.keys())
            .cloned()
            .collect()
    }

    fn record(&mut self, name: NamespacedName, ports: Ports) -> bool {
        let applied = self.applied.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        if applied == ports.as_slice() {
            return self.pending.remove(&name).is_some();
        }
        if self.pending.get(&name) == Some(&ports) {
            return false;
        }
        self.pending.insert(name, ports);
        true
    }

    /// How many Services have pending changes.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Moves every pending change into `map`.
    pub fn apply(&mut self, map: &mut ServicePortMap) -> ServiceUpdateResult {
        let mut result = ServiceUpdateResult::default();
        for (name, ports) in std::mem::take(&mut self.pending) {
            let old = self.applied.remove(&name).unwrap_or_default();
            for (spn, info) in &old {
                map.remove(spn);
                if info.protocol == Protocol::Udp
                    && !ports
                        .iter()
                        .any(|(n, i)| n == spn && i.cluster_ip == info.cluster_ip)
                {
                    result.deleted_udp_cluster_ips.insert(info.cluster_ip);
                }
            }
            for (spn, info) in &ports {
                map.insert(spn.clone(), Arc::new(info.clone()));
            }
            if old != ports {
                result.updated_services.insert(name.clone());
            }
            if !ports.is_empty() {
                self.applied.insert(name, ports);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    #[test]
    fn pending_then_applied() {
        let mut t = ServiceChangeTracker::default();
        let mut map = ServicePortMap::new();
        let a = svc(
            "a",
            "10.0.0.1",
            serde_json::json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
        );
        assert!(t.update(&a));
        assert!(!t.update(&a), "the same object twice is one change");
        assert!(map.is_empty(), "handlers only record");
        let r = t.apply(&mut map);
        assert_eq!(r.updated_services.len(), 1);
        assert_eq!(map.len(), 1);
        assert_eq!(t.pending(), 0);
        // The same Service again: nothing pending.
        assert!(!t.update(&a));
        // Modified then back before a sync: nothing to do.
        let b = svc(
            "a",
            "10.0.0.1",
            serde_json::json!([{"name": "dns", "port": 54, "protocol": "UDP"}]),
        );
        assert!(t.update(&b));
        assert!(t.update(&a));
        assert_eq!(t.pending(), 0);
        // Deleted: its UDP cluster IP is stale.
        assert!(t.delete(&a));
        let r = t.apply(&mut map);
        assert!(map.is_empty());
        assert_eq!(
            r.deleted_udp_cluster_ips.into_iter().collect::<Vec<_>>(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(t.known().is_empty());
    }
}
