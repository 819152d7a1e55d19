//! Table tests of the zone's answers: one cache holding every kind of Service, endpoint and pod,
//! and for each question the expected kind of answer and its data.

use std::str::FromStr;

use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::cache::CacheState;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn port(name: &str, proto: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        protocol: Some(proto.into()),
        port,
        ..Default::default()
    }
}

fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: meta(ns, name),
        spec: Some(ServiceSpec {
            cluster_ip: cluster_ips.first().map(|s| s.to_string()),
            cluster_ips: Some(cluster_ips.iter().map(|s| s.to_string()).collect()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    eps: &[(&str, Option<&str>, bool)],
    ports: &[(&str, &str, i32)],
) -> EndpointSlice {
    let mut m = meta(ns, name);
    m.labels = Some(
        [(
            crate::cache::SERVICE_NAME_LABEL.to_string(),
            svc.to_string(),
        )]
        .into(),
    );
    EndpointSlice {
        metadata: m,
        address_type: "IPv4".into(),
        endpoints: eps
            .iter()
            .map(|(ip, host, ready)| Endpoint {
                addresses: vec![ip.to_string()],
                hostname: host.map(|h| h.to_string()),
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, port)| EndpointPort {
                    name: Some(n.to_string()),
                    protocol: Some(p.to_string()),
                    port: Some(*port),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn pod(ns: &str, name: &str, ip: &str) -> Pod {
    Pod {
        metadata: meta(ns, name),
        status: Some(PodStatus {
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The cluster the tables ask about.
fn cluster() -> CacheState {
    let mut c = CacheState::default();
    c.apply_service(&service(
        "default",
        "kubernetes",
        &["10.43.0.1"],
        vec![port("https", "TCP", 443)],
    ));
    c.apply_service(&service(
        "shop",
        "web",
        &["10.43.0.20", "fd00::20"],
        vec![port("http", "TCP", 80), port("dns", "UDP", 53)],
    ));
    c.apply_service(&service(
        "shop",
        "db",
        &["None"],
        vec![port("pg", "TCP", 5432)],
    ));
    c.apply_slice(&slice(
        "shop",
        "db-abc",
        "db",
        &[
            ("10.42.0.5", Some("db-0"), true),
            ("10.42.0.6", None, true),
            ("10.42.0.7", None, false),
        ],
        &[("pg", "TCP", 5432)],
    ));
    c.apply_service(&service("shop", "empty", &["None"], vec![]));
    let mut ext = service("shop", "ext", &[], vec![]);
    ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
    ext.spec.as_mut().unwrap().external_name = Some("example.com".into());
    c.apply_service(&ext);
    c.apply_pod(&pod("shop", "web-1", "10.42.0.9"));
    c
}

#[derive(Debug)]
enum Want {
    /// The answers' data, as text, in order.
    Records(&'static [&'static str]),
    NoData,
    NxDomain,
    Alias(&'static str),
    Forward,
}

fn rdata_text(r: &RData) -> String {
    match r {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::SRV(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
        RData::PTR(p) => p.0.to_string(),
        RData::CNAME(c) => c.0.to_string(),
        RData::TXT(t) => t.to_string(),
        RData::NS(n) => n.0.to_string(),
        RData::SOA(s) => format!("{} {}", s.mname, s.rname),
        other => format!("{other:?}"),
    }
}

fn check(zone: &Zone, cache: &CacheState, name: &str, qtype: RecordType, want: &Want) {
    let got = lookup(zone, cache, &Name::from_str(name).unwrap(), qtype);
    let ok = match (&got, want) {
        (Lookup::Records { answers, .. }, Want::Records(w)) => {
            let texts: Vec<String> = answers.iter().map(|r| rdata_text(&r.data)).collect();
            answers
                .iter()
                .all(|r| r.ttl == DEFAULT_TTL && r.name.to_ascii().eq_ignore_ascii_case(name))
                && texts == w.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        }
        (Lookup::NoData, Want::NoData)
        | (Lookup::NxDomain, Want::NxDomain)
        | (Lookup::Forward, Want::Forward) => true,
        (Lookup::Alias { target, .. }, Want::Alias(t)) => target.to_ascii() == *t,
        _ => false,
    };
    assert!(ok, "{name} {qtype}: want {want:?}, got {got:?}");
}

#[test]
fn answers_as_the_specification() {
    use RecordType::*;
    let zone = Zone::new("cluster.local", DEFAULT_TTL, PodRecords::Insecure).unwrap();
    let cache = cluster();
    let table: &[(&str, RecordType, Want)] = &[
        // ClusterIP services.
        (
            "kubernetes.default.svc.cluster.local.",
            A,
            Want::Records(&["10.43.0.1"]),
        ),
        (
            "KUBERNETES.Default.svc.cluster.local.",
            A,
            Want::Records(&["10.43.0.1"]),
        ),
        ("kubernetes.default.svc.cluster.local.", AAAA, Want::NoData),
        ("kubernetes.default.svc.cluster.local.", MX, Want::NoData),
        (
            "web.shop.svc.cluster.local.",
            A,
            Want::Records(&["10.43.0.20"]),
        ),
        (
            "web.shop.svc.cluster.local.",
            AAAA,
            Want::Records(&["fd00::20"]),
        ),
        ("missing.shop.svc.cluster.local.", A, Want::NxDomain),
        ("web.other.svc.cluster.local.", A, Want::NxDomain),
        // SRV.
        (
            "_https._tcp.kubernetes.default.svc.cluster.local.",
            SRV,
            Want::Records(&["0 100 443 kubernetes.default.svc.cluster.local."]),
        ),
        (
            "_dns._udp.web.shop.svc.cluster.local.",
            SRV,
            Want::Records(&["0 100 53 web.shop.svc.cluster.local."]),
        ),
        ("_dns._tcp.web.shop.svc.cluster.local.", SRV, Want::NxDomain),
        // CoreDNS answers address queries on SRV names with the Service's addresses too.
        (
            "_http._tcp.web.shop.svc.cluster.local.",
            A,
            Want::Records(&["10.43.0.20"]),
        ),
        ("_http._tcp.web.shop.svc.cluster.local.", TXT, Want::NoData),
        (
            "web.shop.svc.cluster.local.",
            SRV,
            Want::Records(&[
                "0 50 80 web.shop.svc.cluster.local.",
                "0 50 53 web.shop.svc.cluster.local.",
            ]),
        ),
        // Headless: ready endpoints only; hostnames and dashed addresses.
        (
            "db.shop.svc.cluster.local.",
            A,
            Want::Records(&["10.42.0.5", "10.42.0.6"]),
        ),
        ("db.shop.svc.cluster.local.", AAAA, Want::NoData),
        (
            "db-0.db.shop.svc.cluster.local.",
            A,
            Want::Records(&["10.42.0.5"]),
        ),
        (
            "10-42-0-6.db.shop.svc.cluster.local.",
            A,
            Want::Records(&["10.42.0.6"]),
        ),
        ("10-42-0-7.db.shop.svc.cluster.local.", A, Want::NxDomain),
        (
            "_pg._tcp.db.shop.svc.cluster.local.",
            SRV,
            Want::Records(&[
                "0 50 5432 db-0.db.shop.svc.cluster.local.",
                "0 50 5432 10-42-0-6.db.shop.svc.cluster.local.",
            ]),
        ),
        ("empty.shop.svc.cluster.local.", A, Want::NxDomain),
        // ExternalName.
        (
            "ext.shop.svc.cluster.local.",
            A,
            Want::Alias("example.com."),
        ),
        (
            "ext.shop.svc.cluster.local.",
            CNAME,
            Want::Alias("example.com."),
        ),
        // Pods (insecure: any address in a known namespace).
        (
            "10-42-0-9.shop.pod.cluster.local.",
            A,
            Want::Records(&["10.42.0.9"]),
        ),
        (
            "10-42-0-99.shop.pod.cluster.local.",
            A,
            Want::Records(&["10.42.0.99"]),
        ),
        ("10-42-0-9.nowhere.pod.cluster.local.", A, Want::NxDomain),
        ("not-an-ip.shop.pod.cluster.local.", A, Want::NxDomain),
        ("10-42-0-9.shop.pod.cluster.local.", AAAA, Want::NoData),
        // Empty non-terminals and the apex.
        ("svc.cluster.local.", A, Want::NoData),
        ("shop.svc.cluster.local.", A, Want::NoData),
        ("nowhere.svc.cluster.local.", A, Want::NxDomain),
        ("cluster.local.", A, Want::NoData),
        (
            "cluster.local.",
            SOA,
            Want::Records(&["ns.dns.cluster.local. hostmaster.cluster.local."]),
        ),
        (
            "cluster.local.",
            NS,
            Want::Records(&["ns.dns.cluster.local."]),
        ),
        ("dns-version.cluster.local.", TXT, Want::Records(&["1.1.0"])),
        ("what.ever.cluster.local.", A, Want::NxDomain),
        ("a.b.c.d.e.svc.cluster.local.", A, Want::NxDomain),
        // PTR: cluster IPs and headless endpoints; other addresses are forwarded.
        (
            "1.0.43.10.in-addr.arpa.",
            PTR,
            Want::Records(&["kubernetes.default.svc.cluster.local."]),
        ),
        (
            "5.0.42.10.in-addr.arpa.",
            PTR,
            Want::Records(&["db-0.db.shop.svc.cluster.local."]),
        ),
        (
            "6.0.42.10.in-addr.arpa.",
            PTR,
            Want::Records(&["10-42-0-6.db.shop.svc.cluster.local."]),
        ),
        ("1.0.43.10.in-addr.arpa.", A, Want::NoData),
        ("8.8.8.8.in-addr.arpa.", PTR, Want::Forward),
        (
            "0.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            PTR,
            Want::Records(&["web.shop.svc.cluster.local."]),
        ),
        // Not the cluster's.
        ("example.com.", A, Want::Forward),
        ("cluster.local.example.com.", A, Want::Forward),
    ];
    for (name, qtype, want) in table {
        check(&zone, &cache, name, *qtype, want);
    }
}

#[test]
fn verified_pods_need_a_pod_with_the_address() {
    let zone = Zone::new("cluster.local", DEFAULT_TTL, PodRecords::Verified).unwrap();
    let mut cache = cluster();
    check(
        &zone,
        &cache,
        "10-42-0-9.shop.pod.cluster.local.",
        RecordType::A,
        &Want::Records(&["10.42.0.9"]),
    );
    check(
        &zone,
        &cache,
        "10-42-0-99.shop.pod.cluster.local.",
        RecordType::A,
        &Want::NxDomain,
    );
    check(
        &zone,
        &cache,
        "10-42-0-9.default.pod.cluster.local.",
        RecordType::A,
        &Want::NxDomain,
    );
    cache.delete_pod(&pod("shop", "web-1", "10.42.0.9"));
    check(
        &zone,
        &cache,
        "10-42-0-9.shop.pod.cluster.local.",
        RecordType::A,
        &Want::NxDomain,
    );
    let off = Zone::new("cluster.local", DEFAULT_TTL, PodRecords::Disabled).unwrap();
    check(
        &off,
        &cluster(),
        "10-42-0-9.shop.pod.cluster.local.",
        RecordType::A,
        &Want::NxDomain,
    );
}

#[test]
fn other_domains_and_changes() {
    let zone = Zone::new("corp.example.", DEFAULT_TTL, PodRecords::Insecure).unwrap();
    let mut cache = cluster();
    check(
        &zone,
        &cache,
        "web.shop.svc.corp.example.",
        RecordType::A,
        &Want::Records(&["10.43.0.20"]),
    );
    check(
        &zone,
        &cache,
        "web.shop.svc.cluster.local.",
        RecordType::A,
        &Want::Forward,
    );
    // A slice moving its endpoints: the old ones go, a deleted slice takes its endpoints along.
    let serial = cache.serial;
    cache.apply_slice(&slice(
        "shop",
        "db-abc",
        "db",
        &[("10.42.0.8", None, true)],
        &[("pg", "TCP", 5432)],
    ));
    assert_ne!(cache.serial, serial, "a change bumps the SOA serial");
    check(
        &zone,
        &cache,
        "db.shop.svc.corp.example.",
        RecordType::A,
        &Want::Records(&["10.42.0.8"]),
    );
    cache.delete_slice(&slice("shop", "db-abc", "db", &[], &[]));
    check(
        &zone,
        &cache,
        "db.shop.svc.corp.example.",
        RecordType::A,
        &Want::NxDomain,
    );
    cache.delete_service(&service("shop", "web", &[], vec![]));
    check(
        &zone,
        &cache,
        "web.shop.svc.corp.example.",
        RecordType::A,
        &Want::NxDomain,
    );
    // The same endpoint in two slices is answered once.
    cache.apply_slice(&slice(
        "shop",
        "db-1",
        "db",
        &[("10.42.0.8", None, true)],
        &[],
    ));
    cache.apply_slice(&slice(
        "shop",
        "db-2",
        "db",
        &[("10.42.0.8", None, true)],
        &[],
    ));
    check(
        &zone,
        &cache,
        "db.shop.svc.corp.example.",
        RecordType::A,
        &Want::Records(&["10.42.0.8"]),
    );
}

#[test]
fn reverse_names() {
    let n = |s: &str| Name::from_str(s).unwrap();
    assert_eq!(
        reverse_ip(&n("4.3.2.1.in-addr.arpa.")),
        Some("1.2.3.4".parse().unwrap())
    );
    assert_eq!(reverse_ip(&n("3.2.1.in-addr.arpa.")), None);
    assert_eq!(reverse_ip(&n("x.3.2.1.in-addr.arpa.")), None);
    assert_eq!(
        reverse_ip(&n(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
        )),
        Some("fd00::1".parse().unwrap())
    );
    assert_eq!(reverse_ip(&n("example.com.")), None);
}
