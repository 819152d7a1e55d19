//! The records of the cluster zone, as the Kubernetes DNS-Based Service Discovery specification
//! (kubernetes/dns `docs/specification.md`) and CoreDNS's `kubernetes` plugin answer them:
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of a ClusterIP Service's cluster IPs; of a headless
//!   Service's ready endpoints; a CNAME for an ExternalName Service;
//! - `<ep>.<svc>.<ns>.svc.<zone>`: A/AAAA of one endpoint, `<ep>` its hostname or dashed address;
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (and `<svc>.<ns>.svc.<zone>` for all ports): SRV,
//!   priority 0, weight 100 split over the targets, with the targets' addresses as additionals;
//! - `<a-b-c-d>.<ns>.pod.<zone>`: a pod's A/AAAA (`pods insecure`: any well-formed address, as
//!   kubeadm's Corefile; `pods verified`: only a pod's in that namespace);
//! - PTR for cluster IPs and headless endpoints' addresses (other reverse names are forwarded, as
//!   CoreDNS's `fallthrough in-addr.arpa ip6.arpa`);
//! - `dns-version.<zone>` TXT `1.1.0`, the zone's SOA and NS at its apex.
//!
//! A name of the zone that exists with no record of the asked type is NODATA (NOERROR, SOA in
//! the authority section), one that does not exist NXDOMAIN: the `svc`/`pod` labels and known
//! namespaces are empty non-terminals (NODATA); a headless Service without ready endpoints and
//! a Service without the asked port are NXDOMAIN, as CoreDNS's `errNoItems`. Every record has the
//! plugin's default TTL, 5 s. Pure: [`lookup`] reads a [`CacheState`] and builds records.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::cache::{CacheState, EndpointEntry, ServiceKind};

/// CoreDNS's `kubernetes` plugin default TTL.
pub const DEFAULT_TTL: u32 = 5;

/// The specification's schema version, served as `dns-version.<zone>` TXT.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// How pod names (`<a-b-c-d>.<ns>.pod.<zone>`) are answered (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// No pod records (NXDOMAIN).
    Disabled,
    /// Any well-formed address in any known namespace (kubeadm's Corefile: `pods insecure`).
    #[default]
    Insecure,
    /// Only an address a pod of that namespace has (`pods verified`; needs the Pod watch).
    Verified,
}

/// The cluster zone's settings.
#[derive(Clone, Debug)]
pub struct Zone {
    /// The cluster domain, e.g. `cluster.local.` (lower case, fully qualified).
    pub domain: Name,
    pub ttl: u32,
    pub pods: PodRecords,
}

impl Zone {
    pub fn new(
        domain: &str,
        ttl: u32,
        pods: PodRecords,
    ) -> Result<Zone, hickory_proto::ProtoError> {
        let mut domain = Name::from_str(domain.trim_end_matches('.'))?.to_lowercase();
        domain.set_fqdn(true);
        Ok(Zone { domain, ttl, pods })
    }

    /// `domain` without its trailing dot.
    fn domain_str(&self) -> String {
        self.domain.to_ascii().trim_end_matches('.').to_string()
    }

    /// The zone's SOA (CoreDNS: `ns.dns.<zone> hostmaster.<zone> <serial> 7200 1800 86400 <ttl>`),
    /// the authority record of NXDOMAIN and NODATA answers.
    pub fn soa(&self, serial: u32) -> Record {
        let d = self.domain_str();
        let soa = SOA::new(
            fqdn(&format!("ns.dns.{d}")),
            fqdn(&format!("hostmaster.{d}")),
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }

    /// Whether `name` is in the cluster zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.domain.zone_of(&name.to_lowercase())
    }
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// Records of the asked type (authoritative).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, but has nothing of the asked type.
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// An ExternalName Service: the CNAME, and the target still to resolve (unless CNAME was
    /// asked).
    Alias { cname: Box<Record>, target: Name },
    /// Not the cluster's: the upstream resolvers answer it.
    Forward,
}

/// A fully qualified name from a string built here (always valid).
fn fqdn(s: &str) -> Name {
    let mut n = Name::from_str(s).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

fn addr_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, data)
}

fn wants(qtype: RecordType, ip: &IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// Address records of `ips` for `qtype` (A or AAAA); NODATA when there are none of that family.
fn addresses(
    name: &Name,
    ttl: u32,
    qtype: RecordType,
    ips: impl Iterator<Item = IpAddr>,
) -> Lookup {
    let answers: Vec<Record> = ips
        .filter(|ip| wants(qtype, ip))
        .map(|ip| addr_record(name, ttl, ip))
        .collect();
    if answers.is_empty() {
        Lookup::NoData
    } else {
        Lookup::Records {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// Answers `qname`/`qtype` from the cache.
pub fn lookup(zone: &Zone, cache: &CacheState, qname: &Name, qtype: RecordType) -> Lookup {
    let lower = qname.to_lowercase();
    if !zone.domain.zone_of(&lower) {
        return match reverse_ip(&lower) {
            Some(ip) => reverse(zone, cache, qname, qtype, ip),
            None => Lookup::Forward,
        };
    }
    let full = lower.to_ascii();
    let full = full.trim_end_matches('.');
    let d = zone.domain_str();
    let rel = full.strip_suffix(d.as_str()).unwrap_or("");
    let rel = rel.trim_end_matches('.');
    // Labels from the zone downwards: `svc`, namespace, service, …
    let labels: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('.').rev().collect()
    };
    let ttl = zone.ttl;
    match labels.as_slice() {
        [] => match qtype {
            RecordType::SOA => Lookup::Records {
                answers: vec![zone.soa(cache.serial)],
                additionals: Vec::new(),
            },
            RecordType::NS => Lookup::Records {
                answers: vec![Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::NS(NS(fqdn(&format!("ns.dns.{d}")))),
                )],
                additionals: Vec::new(),
            },
            _ => Lookup::NoData,
        },
        ["dns-version"] => match qtype {
            RecordType::TXT => Lookup::Records {
                answers: vec![Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
                )],
                additionals: Vec::new(),
            },
            _ => Lookup::NoData,
        },
        ["svc"] | ["pod"] => Lookup::NoData,
        ["svc", ns] | ["pod", ns] => {
            if cache.namespace_known(ns) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            }
        }
        ["svc", ns, svc] => service(zone, cache, qname, qtype, ns, svc, None),
        ["svc", ns, svc, ep] if !ep.starts_with('_') => {
            endpoint(zone, cache, qname, qtype, ns, svc, ep)
        }
        ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
            service(
                zone,
                cache,
                qname,
                qtype,
                ns,
                svc,
                Some((&port[1..], &proto[1..])),
            )
        }
        ["pod", ns, pod] => pod_record(zone, cache, qname, qtype, ns, pod),
        _ => Lookup::NxDomain,
    }
}

/// `<svc>.<ns>.svc.<zone>`, or `_<port>._<proto>.<svc>.<ns>.svc.<zone>` when `port` is given.
fn service(
    zone: &Zone,
    cache: &CacheState,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    name: &str,
    port: Option<(&str, &str)>,
) -> Lookup {
    let Some(svc) = cache.services.get(&(ns.to_string(), name.to_string())) else {
        return Lookup::NxDomain;
    };
    let ttl = zone.ttl;
    let d = zone.domain_str();
    let svc_name = fqdn(&format!("{name}.{ns}.svc.{d}"));
    let port_matches = |p: &crate::cache::PortEntry| match port {
        None => true,
        Some((pname, proto)) => {
            p.name.eq_ignore_ascii_case(pname) && p.protocol.eq_ignore_ascii_case(proto)
        }
    };
    match &svc.kind {
        ServiceKind::ExternalName(target) => {
            if port.is_some() {
                return Lookup::NxDomain;
            }
            let target = fqdn(target);
            let cname = Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target.clone())));
            Lookup::Alias {
                cname: Box::new(cname),
                target,
            }
        }
        ServiceKind::ClusterIp(ips) => {
            let ports: Vec<_> = svc.ports.iter().filter(|p| port_matches(p)).collect();
            if port.is_some() && ports.is_empty() {
                return Lookup::NxDomain;
            }
            match qtype {
                RecordType::SRV => {
                    if ports.is_empty() {
                        return Lookup::NoData;
                    }
                    let weight = srv_weight(ports.len());
                    let answers = ports
                        .iter()
                        .map(|p| {
                            Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::SRV(SRV::new(0, weight, p.port, svc_name.clone())),
                            )
                        })
                        .collect();
                    let additionals = ips
                        .iter()
                        .map(|ip| addr_record(&svc_name, ttl, *ip))
                        .collect();
                    Lookup::Records {
                        answers,
                        additionals,
                    }
                }
                RecordType::A | RecordType::AAAA | RecordType::ANY => {
                    addresses(qname, ttl, qtype, ips.iter().copied())
                }
                _ => Lookup::NoData,
            }
        }
        ServiceKind::Headless => {
            let eps = cache.endpoints(ns, name);
            // Each endpoint with the ports matching the query.
            let targets: Vec<(&EndpointEntry, Vec<u16>)> = eps
                .into_iter()
                .map(|e| {
                    let ports = e
                        .ports
                        .iter()
                        .filter(|p| port_matches(p))
                        .map(|p| p.port)
                        .collect();
                    (e, ports)
                })
                .filter(|(_, ports): &(_, Vec<u16>)| port.is_none() || !ports.is_empty())
                .collect();
            if targets.is_empty() {
                return Lookup::NxDomain;
            }
            match qtype {
                RecordType::SRV => {
                    let n = targets.iter().map(|(_, p)| p.len()).sum::<usize>();
                    if n == 0 {
                        return Lookup::NoData;
                    }
                    let weight = srv_weight(n);
                    let mut answers = Vec::new();
                    let mut additionals = Vec::new();
                    for (e, ports) in &targets {
                        let target = fqdn(&format!("{}.{name}.{ns}.svc.{d}", e.label()));
                        for p in ports {
                            answers.push(Record::from_rdata(
                                qname.clone(),
                                ttl,
                                RData::SRV(SRV::new(0, weight, *p, target.clone())),
                            ));
                        }
                        additionals.push(addr_record(&target, ttl, e.ip));
                    }
                    Lookup::Records {
                        answers,
                        additionals,
                    }
                }
                RecordType::A | RecordType::AAAA | RecordType::ANY => {
                    addresses(qname, ttl, qtype, targets.iter().map(|(e, _)| e.ip))
                }
                _ => Lookup::NoData,
            }
        }
    }
}

/// CoreDNS splits a weight of 100 over the targets.
fn srv_weight(n: usize) -> u16 {
    (100 / n.max(1)) as u16
}

/// `<ep>.<svc>.<ns>.svc.<zone>`: one ready endpoint of any Service but an ExternalName one.
fn endpoint(
    zone: &Zone,
    cache: &CacheState,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    svc: &str,
    ep: &str,
) -> Lookup {
    match cache.services.get(&(ns.to_string(), svc.to_string())) {
        None => return Lookup::NxDomain,
        Some(s) if matches!(s.kind, ServiceKind::ExternalName(_)) => return Lookup::NxDomain,
        Some(_) => {}
    }
    let ips: Vec<IpAddr> = cache
        .endpoints(ns, svc)
        .into_iter()
        .filter(|e| e.label() == ep)
        .map(|e| e.ip)
        .collect();
    if ips.is_empty() {
        return Lookup::NxDomain;
    }
    addresses(qname, zone.ttl, qtype, ips.into_iter())
}

/// `<a-b-c-d>.<ns>.pod.<zone>`.
fn pod_record(
    zone: &Zone,
    cache: &CacheState,
    qname: &Name,
    qtype: RecordType,
    ns: &str,
    pod: &str,
) -> Lookup {
    // CoreDNS: three dashes and no `--` is IPv4, anything else is read as IPv6.
    let ip: Option<IpAddr> = if pod.matches('-').count() == 3 && !pod.contains("--") {
        pod.replace('-', ".")
            .parse::<Ipv4Addr>()
            .ok()
            .map(IpAddr::V4)
    } else {
        pod.replace('-', ":")
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6)
    };
    let Some(ip) = ip else {
        return Lookup::NxDomain;
    };
    let exists = match zone.pods {
        PodRecords::Disabled => false,
        PodRecords::Insecure => cache.namespace_known(ns),
        PodRecords::Verified => cache.pod_has_ip(ns, ip),
    };
    if !exists {
        return Lookup::NxDomain;
    }
    addresses(qname, zone.ttl, qtype, std::iter::once(ip))
}

/// The address a reverse name (`d.c.b.a.in-addr.arpa.`, nibbles `.ip6.arpa.`) stands for.
pub fn reverse_ip(name: &Name) -> Option<IpAddr> {
    let s = name.to_ascii().to_ascii_lowercase();
    let s = s.trim_end_matches('.');
    if let Some(v4) = s.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = v4
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(
            octets[0], octets[1], octets[2], octets[3],
        )));
    }
    if let Some(v6) = s.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<u8> = v6
            .split('.')
            .map(|n| {
                if n.len() == 1 {
                    u8::from_str_radix(n, 16).ok()
                } else {
                    None
                }
            })
            .collect::<Option<_>>()?;
        if nibbles.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in nibbles.rchunks(2).enumerate() {
            // Reversed: the last nibble in the name is the address's first.
            bytes[i] = (pair[1] << 4) | pair[0];
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    None
}

/// PTR for a cluster IP (`<svc>.<ns>.svc.<zone>`) or a ready endpoint of a headless Service
/// (`<ep>.<svc>.<ns>.svc.<zone>`); other addresses are not the cluster's.
fn reverse(zone: &Zone, cache: &CacheState, qname: &Name, qtype: RecordType, ip: IpAddr) -> Lookup {
    let d = zone.domain_str();
    let mut targets: Vec<String> = Vec::new();
    for ((ns, name), svc) in &cache.services {
        if let ServiceKind::ClusterIp(ips) = &svc.kind {
            if ips.contains(&ip) {
                targets.push(format!("{name}.{ns}.svc.{d}"));
            }
        }
    }
    for ((ns, name), eps) in cache.all_endpoints() {
        let headless = matches!(
            cache
                .services
                .get(&(ns.clone(), name.clone()))
                .map(|s| &s.kind),
            Some(ServiceKind::Headless)
        );
        if !headless {
            continue;
        }
        for e in eps.iter().filter(|e| e.ip == ip) {
            targets.push(format!("{}.{name}.{ns}.svc.{d}", e.label()));
        }
    }
    if targets.is_empty() {
        return Lookup::Forward;
    }
    if qtype != RecordType::PTR {
        return Lookup::NoData;
    }
    targets.sort();
    targets.dedup();
    Lookup::Records {
        answers: targets
            .iter()
            .map(|t| Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(fqdn(t)))))
            .collect(),
        additionals: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
