//! The record cache: what the watches of Services, EndpointSlices and Pods leave behind, reduced
//! to what DNS answers need (CoreDNS's `dnsController` keeps the same three indexes: services by
//! name, endpoints by service, pods by IP).
//!
//! One writer (the watch tasks) and many readers (the request handler) share it through
//! [`RecordCache`], a cheap clone of an `Arc<RwLock<…>>`; readers hold the lock only for one
//! lookup. Only ready endpoints are kept, as the DNS specification asks ("ready endpoints" for
//! headless services). Each change bumps a serial that the zone's SOA record carries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use parking_lot::RwLock;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of a Service or of an endpoint: name, protocol (`tcp`, `udp`, `sctp`) and number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortEntry {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// What a Service answers with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A ClusterIP (or NodePort/LoadBalancer) Service: its cluster IPs.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: its ready endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// A Service as DNS sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<PortEntry>,
}

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    pub ip: IpAddr,
    /// `endpoints[].hostname` (set from a pod's `hostname` when its `subdomain` names the Service).
    pub hostname: Option<String>,
    pub ports: Vec<PortEntry>,
}

impl EndpointEntry {
    /// The endpoint's DNS label: its hostname, else its address with `.`/`:` as `-` (CoreDNS's
    /// `endpointHostname`).
    pub fn label(&self) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => dashed(&self.ip),
        }
    }
}

/// An address written with dashes: `10-1-2-3`, `fd00--1`.
pub fn dashed(ip: &IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// (namespace, name).
type Key = (String, String);

/// The cache's contents.
#[derive(Default, Debug)]
pub struct CacheState {
    pub services: HashMap<Key, ServiceEntry>,
    /// (namespace, Service name) → slice name → ready endpoints.
    endpoints: HashMap<Key, BTreeMap<String, Vec<EndpointEntry>>>,
    /// (namespace, slice name) → its Service's name, to find a slice again on delete.
    slice_owner: HashMap<Key, String>,
    /// (namespace, pod name) → pod IPs.
    pods: HashMap<Key, Vec<IpAddr>>,
    /// (namespace, pod IP) → how many pods have it (a terminating and a new pod may share one).
    pod_ips: HashMap<(String, IpAddr), u32>,
    /// Bumped on every change; the SOA serial.
    pub serial: u32,
}

impl CacheState {
    /// The ready endpoints of a Service, de-duplicated by address (one endpoint may appear in two
    /// slices while they are rebalanced), sorted by address.
    pub fn endpoints(&self, namespace: &str, service: &str) -> Vec<&EndpointEntry> {
        let mut out: Vec<&EndpointEntry> = Vec::new();
        if let Some(slices) = self
            .endpoints
            .get(&(namespace.to_string(), service.to_string()))
        {
            for ep in slices.values().flatten() {
                if !out.iter().any(|e| e.ip == ep.ip) {
                    out.push(ep);
                }
            }
        }
        out.sort_by_key(|e| e.ip);
        out
    }

    /// Every (namespace, Service) with ready endpoints and those endpoints (for PTR look-ups).
    pub fn all_endpoints(&self) -> impl Iterator<Item = (&Key, Vec<&EndpointEntry>)> {
        self.endpoints
            .keys()
            .map(|k| (k, self.endpoints(&k.0, &k.1)))
    }

    /// Whether a pod in `namespace` has `ip` (the `pods verified` check).
    pub fn pod_has_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        self.pod_ips.contains_key(&(namespace.to_string(), ip))
    }

    /// Whether the namespace is known: it holds a Service or a pod (CoreDNS answers NODATA for an
    /// existing namespace's name, NXDOMAIN otherwise; namespaces themselves are not watched).
    pub fn namespace_known(&self, namespace: &str) -> bool {
        self.services.keys().any(|(ns, _)| ns == namespace)
            || self.pods.keys().any(|(ns, _)| ns == namespace)
    }

    fn bump(&mut self) {
        self.serial = self.serial.wrapping_add(1);
    }

    /// Records a Service (added or changed).
    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = key_of(&svc.metadata) else {
            return;
        };
        let entry = service_entry(svc);
        if self.services.get(&key) != Some(&entry) {
            self.services.insert(key, entry);
            self.bump();
        }
    }

    /// Forgets a Service.
    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = key_of(&svc.metadata) {
            if self.services.remove(&key).is_some() {
                self.bump();
            }
        }
    }

    /// Records an EndpointSlice's ready endpoints under its Service.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some((ns, name)) = key_of(&slice.metadata) else {
            return;
        };
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            return;
        };
        let ports: Vec<PortEntry> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortEntry {
                    name: p.name.clone().unwrap_or_default(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let mut eps = Vec::new();
        for ep in &slice.endpoints {
            // Upstream: a nil `ready` means ready.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>() {
                    eps.push(EndpointEntry {
                        ip,
                        hostname: ep.hostname.clone(),
                        ports: ports.clone(),
                    });
                }
            }
        }
        // A slice relabelled to another Service leaves the old one.
        let slice_key = (ns.clone(), name.clone());
        if let Some(old) = self.slice_owner.get(&slice_key).cloned() {
            if old != service {
                self.remove_slice_from(&ns, &old, &name);
            }
        }
        self.slice_owner.insert(slice_key, service.clone());
        let slices = self.endpoints.entry((ns, service)).or_default();
        if slices.get(&name) != Some(&eps) {
            slices.insert(name, eps);
            self.bump();
        }
    }

    /// Forgets an EndpointSlice.
    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let Some((ns, name)) = key_of(&slice.metadata) else {
            return;
        };
        if let Some(service) = self.slice_owner.remove(&(ns.clone(), name.clone())) {
            self.remove_slice_from(&ns, &service, &name);
        }
    }

    fn remove_slice_from(&mut self, ns: &str, service: &str, slice: &str) {
        let key = (ns.to_string(), service.to_string());
        let mut changed = false;
        if let Some(slices) = self.endpoints.get_mut(&key) {
            changed = slices.remove(slice).is_some();
            if slices.is_empty() {
                self.endpoints.remove(&key);
            }
        }
        if changed {
            self.bump();
        }
    }

    /// Records a pod's IPs.
    pub fn apply_pod(&mut self, pod: &Pod) {
        let Some(key) = key_of(&pod.metadata) else {
            return;
        };
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                status
                    .and_then(|s| s.pod_ip.as_deref())
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        if self.pods.get(&key) == Some(&ips) {
            return;
        }
        self.forget_pod(&key);
        for ip in &ips {
            *self.pod_ips.entry((key.0.clone(), *ip)).or_default() += 1;
        }
        self.pods.insert(key, ips);
        self.bump();
    }

    /// Forgets a pod.
    pub fn delete_pod(&mut self, pod: &Pod) {
        if let Some(key) = key_of(&pod.metadata) {
            self.forget_pod(&key);
            self.bump();
        }
    }

    fn forget_pod(&mut self, key: &Key) {
        if let Some(old) = self.pods.remove(key) {
            for ip in old {
                let k = (key.0.clone(), ip);
                if let Some(n) = self.pod_ips.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        self.pod_ips.remove(&k);
                    }
                }
            }
        }
    }

    /// Drops everything of one kind before a relist re-adds what still exists.
    pub fn clear(&mut self, kind: Kind) {
        match kind {
            Kind::Services => self.services.clear(),
            Kind::EndpointSlices => {
                self.endpoints.clear();
                self.slice_owner.clear();
            }
            Kind::Pods => {
                self.pods.clear();
                self.pod_ips.clear();
            }
        }
        self.bump();
    }
}

/// The kinds the cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Services,
    EndpointSlices,
    Pods,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone()?,
    ))
}

/// A Service reduced to its DNS data.
fn service_entry(svc: &Service) -> ServiceEntry {
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(PortEntry {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(
            spec.external_name
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_string(),
        )
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(spec.cluster_ip.and_then(|ip| ip.parse::<IpAddr>().ok()));
        }
        ServiceKind::ClusterIp(ips)
    };
    ServiceEntry { kind, ports }
}

/// The shared cache: one writer (the watches), cheap clones for readers.
#[derive(Clone, Default)]
pub struct RecordCache {
    inner: Arc<RwLock<CacheState>>,
}

impl RecordCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the cache under its lock.
    pub fn read<T>(&self, f: impl FnOnce(&CacheState) -> T) -> T {
        f(&self.inner.read())
    }

    /// Changes the cache under its lock.
    pub fn write<T>(&self, f: impl FnOnce(&mut CacheState) -> T) -> T {
        f(&mut self.inner.write())
    }
}
