//! The cluster DNS server (`dns` crate) against a real apiserver-lite: every kind of record the
//! Kubernetes DNS specification names, answered over UDP and TCP on loopback; changes seen within
//! a second; other names forwarded to a fake upstream resolver on loopback, truncation included;
//! the node's kube-dns EndpointSlice and the kube-dns Service kept.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::dns::{answers, query, FakeUpstream, UPSTREAM_ANSWER};
use common::ApiServer;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};

/// A tokio runtime, a client of `api` and helpers to create objects.
struct Harness {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Harness {
    fn new(api: &ApiServer) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(machinery::client::build_client(
                Some(&api.kubeconfig()),
                &machinery::client::user_agent("dns-test"),
            ))
            .expect("client");
        Harness { rt, client }
    }

    fn create<K>(&self, ns: &str, obj: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::Serialize
            + serde::de::DeserializeOwned,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        let obj: K = serde_json::from_value(obj).unwrap();
        self.rt
            .block_on(api.create(&PostParams::default(), &obj))
            .unwrap_or_else(|e| panic!("creating {obj:?}: {e}"))
    }

    fn create_ns(&self, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        self.rt
            .block_on(api.create(&PostParams::default(), &ns))
            .expect("namespace");
    }

    /// Starts the DNS server on 127.0.0.1 forwarding to `upstream`.
    fn start_dns(&self, upstream: SocketAddr, register: bool) -> dns::DnsServer {
        let mut opts = dns::Options::new("node-a", "127.0.0.1:0".parse().unwrap());
        opts.upstreams = vec![upstream];
        opts.register = register;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Stopped when the runtime is dropped.
        std::mem::forget(tx);
        self.rt
            .block_on(dns::start(self.client.clone(), opts, async move {
                let _ = rx.await;
            }))
            .expect("starting the DNS server")
    }
}

fn svc(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": name}, "spec": spec})
}

/// Waits (up to a second, the promise) until `f` holds.
fn within_a_second(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not seen within a second");
}

#[test]
fn answers_every_record_kind_and_forwards_the_rest() {
    let api = ApiServer::start();
    let h = Harness::new(&api);
    let upstream = FakeUpstream::start();
    h.create_ns("shop");
    let web: Service = h.create(
        "shop",
        svc(
            "web",
            serde_json::json!({"ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]}),
        ),
    );
    let web_ip = web.spec.unwrap().cluster_ip.unwrap();
    h.create::<Service>(
        "shop",
        svc(
            "db",
            serde_json::json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
        ),
    );
    h.create::<EndpointSlice>(
        "shop",
        serde_json::json!({
            "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.99.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.99.0.6"], "conditions": {"ready": true}},
                {"addresses": ["10.99.0.7"], "conditions": {"ready": false}}
            ],
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]
        }),
    );
    h.create::<Service>(
        "shop",
        svc(
            "ext",
            serde_json::json!({"type": "ExternalName", "externalName": "ext.example.org"}),
        ),
    );
    let dns = h.start_dns(upstream.addr, false);
    let at = dns.local_addr;

    for tcp in [false, true] {
        let q = |name: &str, t: RecordType| query(at, name, t, tcp);
        // ClusterIP A, NODATA AAAA, NXDOMAIN, each authoritative with the SOA where empty.
        let m = q("web.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(answers(&m), vec![web_ip.clone()], "tcp={tcp}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].ttl, 5, "CoreDNS's default TTL");
        let m = q("web.shop.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(
            (m.metadata.response_code, m.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert!(
            matches!(m.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
            "NODATA carries the SOA: {m:?}"
        );
        let m = q("nope.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(
            m.authorities.first().map(|r| &r.data),
            Some(RData::SOA(_))
        ));
        // kubernetes.default, the API server's Service.
        let m = q("kubernetes.default.svc.cluster.local.", RecordType::A);
        assert_eq!(m.answers.len(), 1, "{m:?}");
        // SRV with the target's address as an additional.
        let m = q("_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV);
        assert_eq!(answers(&m), vec!["0 100 80 web.shop.svc.cluster.local."]);
        assert_eq!(
            m.additionals
                .iter()
                .map(|r| common::dns::rdata_text(&r.data))
                .collect::<Vec<_>>(),
            vec![web_ip.clone()]
        );
        // Headless: ready endpoints, hostnames, SRV per endpoint.
        let m = q("db.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(answers(&m), vec!["10.99.0.5", "10.99.0.6"]);
        assert_eq!(
            answers(&q("db-0.db.shop.svc.cluster.local.", RecordType::A)),
            vec!["10.99.0.5"]
        );
        assert_eq!(
            answers(&q("_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV)),
            vec![
                "0 50 5432 db-0.db.shop.svc.cluster.local.",
                "0 50 5432 10-99-0-6.db.shop.svc.cluster.local."
            ]
        );
        // PTR for a cluster IP and a headless endpoint.
        let rev = |ip: &str| {
            format!(
                "{}.in-addr.arpa.",
                ip.split('.').rev().collect::<Vec<_>>().join(".")
            )
        };
        assert_eq!(
            answers(&q(&rev(&web_ip), RecordType::PTR)),
            vec!["web.shop.svc.cluster.local."]
        );
        assert_eq!(
            answers(&q(&rev("10.99.0.5"), RecordType::PTR)),
            vec!["db-0.db.shop.svc.cluster.local."]
        );
        // Pods (insecure, as kubeadm's Corefile).
        assert_eq!(
            answers(&q("10-99-1-2.shop.pod.cluster.local.", RecordType::A)),
            vec!["10.99.1.2"]
        );
        // ExternalName: the CNAME, then the target's address from upstream.
        let m = q("ext.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(
            answers(&m),
            vec![
                "CNAME ext.example.org.".to_string(),
                UPSTREAM_ANSWER.to_string()
            ]
        );
        // Forwarded names, and upstream's NXDOMAIN passed on.
        let m = q("www.example.com.", RecordType::A);
        assert_eq!(answers(&m), vec![UPSTREAM_ANSWER]);
        assert!(!m.metadata.authoritative && m.metadata.recursion_available);
        assert_eq!(
            q("nx.example.com.", RecordType::A).metadata.response_code,
            ResponseCode::NXDomain
        );
    }

    // Truncation: upstream's UDP reply is cut, so the server asks it over TCP; the 60 records do
    // not fit the client's 512 bytes either, so the client gets TC over UDP and all over TCP.
    let tcp_before = upstream.tcp_queries.load(Ordering::SeqCst);
    let m = query(at, "big.example.com.", RecordType::A, false);
    assert!(
        m.metadata.truncation,
        "a 60-record answer is truncated over UDP: {m:?}"
    );
    assert!(
        upstream.tcp_queries.load(Ordering::SeqCst) > tcp_before,
        "the server retried upstream over TCP"
    );
    let m = query(at, "big.example.com.", RecordType::A, true);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    assert!(upstream.udp_queries.load(Ordering::SeqCst) > 0);

    // Changes within a second: a new Service, a deleted one, a new endpoint.
    h.create::<Service>(
        "shop",
        svc("late", serde_json::json!({"ports": [{"port": 8080}]})),
    );
    let took = within_a_second("a new Service answered", || {
        query(at, "late.shop.svc.cluster.local.", RecordType::A, false)
            .answers
            .len()
            == 1
    });
    eprintln!("new Service answered after {took:?}");
    let services: Api<Service> = Api::namespaced(h.client.clone(), "shop");
    h.rt.block_on(services.delete("web", &DeleteParams::default()))
        .unwrap();
    within_a_second("a deleted Service NXDOMAIN", || {
        query(at, "web.shop.svc.cluster.local.", RecordType::A, false)
            .metadata
            .response_code
            == ResponseCode::NXDomain
    });
    h.create::<EndpointSlice>(
        "shop",
        serde_json::json!({
            "metadata": {"name": "db-2", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.99.0.8"]}],
            "ports": [{"name": "pg", "port": 5432}]
        }),
    );
    within_a_second("a new endpoint answered", || {
        answers(&query(
            at,
            "db.shop.svc.cluster.local.",
            RecordType::A,
            false,
        ))
        .contains(&"10.99.0.8".to_string())
    });
}

#[test]
fn keeps_the_kube_dns_service_and_the_node_slice() {
    let api = ApiServer::start();
    let h = Harness::new(&api);
    let upstream = FakeUpstream::start();
    let ip: std::net::IpAddr = "10.96.0.10".parse().unwrap();
    // Created, then kept as is across restarts (the second call must not fail or change it).
    h.rt.block_on(dns::kube_dns::ensure_service(&h.client, ip))
        .expect("creating kube-dns");
    let services: Api<Service> = Api::namespaced(h.client.clone(), "kube-system");
    let first = h.rt.block_on(services.get("kube-dns")).unwrap();
    h.rt.block_on(dns::kube_dns::ensure_service(&h.client, ip))
        .expect("keeping kube-dns");
    let second = h.rt.block_on(services.get("kube-dns")).unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
    assert_eq!(
        second.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.10")
    );
    // A changed Service is put back.
    let mut changed = second.clone();
    changed
        .spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .truncate(1);
    h.rt.block_on(services.replace("kube-dns", &PostParams::default(), &changed))
        .unwrap();
    h.rt.block_on(dns::kube_dns::ensure_service(&h.client, ip))
        .expect("repairing kube-dns");
    let third = h.rt.block_on(services.get("kube-dns")).unwrap();
    assert_eq!(
        third.spec.as_ref().unwrap().ports.as_ref().unwrap().len(),
        2
    );
    // Another cluster DNS IP: re-created there.
    let other: std::net::IpAddr = "10.96.0.11".parse().unwrap();
    h.rt.block_on(dns::kube_dns::ensure_service(&h.client, other))
        .expect("moving kube-dns");
    let moved = h.rt.block_on(services.get("kube-dns")).unwrap();
    assert_eq!(
        moved.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.11")
    );

    // The node's slice carries the port the server really listens on.
    let dns = h.start_dns(upstream.addr, true);
    let slices: Api<EndpointSlice> = Api::namespaced(h.client.clone(), "kube-system");
    let mut slice = None;
    common::eventually(
        Duration::from_secs(10),
        "the node's kube-dns EndpointSlice",
        || {
            slice = h.rt.block_on(slices.get_opt("kube-dns-node-a")).unwrap();
            slice.is_some()
        },
    );
    let slice = slice.unwrap();
    let ports: Vec<(String, String, i32)> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.protocol.clone().unwrap(),
                p.port.unwrap(),
            )
        })
        .collect();
    let port = dns.local_addr.port() as i32;
    assert_eq!(
        ports,
        vec![
            ("dns".into(), "UDP".into(), port),
            ("dns-tcp".into(), "TCP".into(), port)
        ]
    );
    assert_eq!(slice.endpoints[0].addresses, vec!["127.0.0.1"]);
    let labels = slice.metadata.labels.unwrap();
    assert_eq!(labels["kubernetes.io/service-name"], "kube-dns");
    assert_eq!(
        labels["endpointslice.kubernetes.io/managed-by"],
        "capstan-dns"
    );
    // The server answers for its own Service.
    let m = query(
        dns.local_addr,
        "kube-dns.kube-system.svc.cluster.local.",
        RecordType::A,
        false,
    );
    assert_eq!(answers(&m), vec!["10.96.0.11"]);
}
