//! Cluster DNS: queries per second and latency (p50/p99) of the built-in DNS server for a
//! Service's A record, a search-path miss (NXDOMAIN) and a forwarded name (a fake upstream on
//! loopback), with 100 Services in the cache. Closed loop: `CLIENTS` threads, one query in flight
//! each, over UDP on loopback, for `SECONDS` per case.
//!
//! The peer, CoreDNS, cannot run here (no images from the internet); BENCHMARKS.md sets these
//! figures beside CoreDNS's published ones (coredns/deployment `Scaling_CoreDNS.md`), labelled as
//! such.
//!
//! `cargo bench --bench dns` (env `DNS_BENCH_SECONDS`, `DNS_BENCH_CLIENTS`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `clients` closed-loop clients asking `names` for `secs`; (queries/s, p50, p99).
fn load(
    server: SocketAddr,
    names: &[String],
    clients: usize,
    secs: u64,
) -> (f64, Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let names = names.to_vec();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(server).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut lat = Vec::new();
                let mut buf = [0u8; 4096];
                let mut i = c;
                while Instant::now() < deadline {
                    let mut q = Message::query();
                    q.metadata.id = i as u16;
                    q.metadata.recursion_desired = true;
                    q.add_query(Query::query(
                        Name::from_str(&names[i % names.len()]).unwrap(),
                        RecordType::A,
                    ));
                    let bytes = q.to_vec().unwrap();
                    let t = Instant::now();
                    sock.send(&bytes).unwrap();
                    if sock.recv(&mut buf).is_ok() {
                        lat.push(t.elapsed());
                    }
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    (all.len() as f64 / secs as f64, pct(0.5), pct(0.99))
}

fn main() {
    let secs = env("DNS_BENCH_SECONDS", 5);
    let clients = env("DNS_BENCH_CLIENTS", 8) as usize;
    let api = common::ApiServer::start();
    let upstream = common::dns::FakeUpstream::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(machinery::client::build_client(
            Some(&api.kubeconfig()),
            "dns-bench",
        ))
        .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for i in 0..100 {
        let s: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("svc-{i}")},
            "spec": {"ports": [{"port": 80}]}
        }))
        .unwrap();
        rt.block_on(services.create(&PostParams::default(), &s))
            .unwrap();
    }
    let mut opts = dns::Options::new("bench", "127.0.0.1:0".parse().unwrap());
    opts.upstreams = vec![upstream.addr];
    opts.register = false;
    let server = rt
        .block_on(dns::start(client, opts, std::future::pending()))
        .unwrap();
    let at = server.local_addr;
    // The cache has every Service before the clock starts.
    common::eventually(
        Duration::from_secs(10),
        "100 Services in the DNS cache",
        || server.cache.read(|c| c.services.len() >= 100),
    );

    let service_names: Vec<String> = (0..100)
        .map(|i| format!("svc-{i}.default.svc.cluster.local."))
        .collect();
    let miss_names: Vec<String> = (0..100)
        .map(|i| format!("svc-{i}.default.svc.cluster.local.default.svc.cluster.local."))
        .collect();
    let forwarded: Vec<String> = (0..100).map(|i| format!("host-{i}.example.com.")).collect();
    println!("cluster DNS, {clients} closed-loop UDP clients on loopback, {secs} s per case, 100 Services");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "case", "queries/s", "p50", "p99"
    );
    for (case, names) in [
        ("service A record", &service_names),
        ("search-path miss (NXDOMAIN)", &miss_names),
        ("forwarded (loopback upstream)", &forwarded),
    ] {
        let (qps, p50, p99) = load(at, names, clients, secs);
        println!(
            "{case:<34} {qps:>10.0} {:>8.0}µs {:>8.0}µs",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    println!("peer (published, not run here): CoreDNS 1.2.5, GCE n1-standard-2, dnsperf: internal 33,669 q/s avg 2.608 ms; external 6,733 q/s avg 12.02 ms (5 search-path queries each)");
}
