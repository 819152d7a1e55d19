//! `capstan proxy` (iptables backend) at scale, next to bare `iptables-restore` of the same rules;
//! see BENCHMARKS.md, section "Proxy (iptables)".
//!
//! For each size (CAPSTAN_BENCH_PROXY_SIZES, default "1000,5000,10000" Services, each with one TCP port
//! and 10 endpoints) it fills a fresh apiserver-lite, then for both iptables flavours (nf_tables,
//! legacy) starts `capstan proxy` in a network namespace of its own and measures
//!
//! 1. the first (full) sync: `kubeproxy_sync_full_proxy_rules_duration_seconds` (render + restore);
//! 2. a single-endpoint change: from the PUT of the EndpointSlice to the end of the sync that put
//!    it into the kernel (`kubeproxy_sync_proxy_rules_last_timestamp_seconds`, the moment
//!    `iptables-restore` returned), median of CAPSTAN_BENCH_PROXY_CHANGES (default 5);
//! 3. the proxy's RSS after that.
//!
//! The floor, in the same run and a fresh namespace: `iptables-<flavour>-restore --noflush` of the
//! exact text the proxy writes (rendered by the proxy library from the same objects through the
//! recording fake), for the full sync and for the same delta. For nf_tables that text carries the
//! `-S` line the proxy adds to restores that name many chains (`kernel::whole_table_cache`:
//! without it iptables-nft 1.8.9 is quadratic in the chains a restore names), so the floor is
//! the same restore the proxy runs. Prints a markdown table.
//! CAPSTAN_BENCH_PROXY_FLAVOURS (default "nf_tables,legacy") picks the binaries.

#![allow(unsafe_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netlab::{Forwarder, Lab, Netns, ProcessGuard};
use common::{eventually, http_raw, rss_kib, ApiServer};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::endpoints_change_tracker::EndpointsChangeTracker;
use proxy::iptables::kernel::{rules_per_table, whole_table_cache, FakeIptables};
use proxy::iptables::rules::RenderContext;
use proxy::iptables::IptablesProxier;
use proxy::proxier::{Proxier, ProxyState, SyncRequest};
use proxy::service_change_tracker::ServiceChangeTracker;
use serde_json::{json, Value};

const ENDPOINTS: usize = 10;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn ep_ip(svc: usize, ep: usize) -> String {
    format!("10.{}.{}.{}", 64 + svc / 250, svc % 250, ep + 1)
}

fn service_json(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
}

fn slice_json(i: usize, ips: &[String]) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("svc-{i}-1"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
           "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true},
                                                    "nodeName": "other"})).collect::<Vec<_>>()})
}

fn slice_ips(i: usize, variant: usize) -> Vec<String> {
    let mut ips: Vec<String> = (0..ENDPOINTS).map(|j| ep_ip(i, j)).collect();
    if variant % 2 == 1 {
        ips[0] = format!("10.250.{}.{}", i % 250, 200);
    }
    ips
}

/// POSTs `items` (path, body) with 8 threads.
fn create_all(addr: &str, items: Vec<(String, Value)>) {
    let chunks: Vec<Vec<(String, Value)>> = {
        let mut c: Vec<Vec<_>> = (0..8).map(|_| Vec::new()).collect();
        for (i, it) in items.into_iter().enumerate() {
            c[i % 8].push(it);
        }
        c
    };
    std::thread::scope(|s| {
        for chunk in chunks {
            s.spawn(move || {
                for (path, body) in chunk {
                    let (code, resp) = http_raw(
                        addr,
                        "POST",
                        &path,
                        "application/json",
                        body.to_string().as_bytes(),
                    );
                    assert!(
                        code == 201 || code == 200,
                        "POST {path}: {code} {}",
                        String::from_utf8_lossy(&resp)
                    );
                }
            });
        }
    });
}

fn list(addr: &str, path: &str) -> Vec<Value> {
    let (code, body) = http_raw(addr, "GET", path, "application/json", b"");
    assert_eq!(code, 200, "GET {path}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The restore texts the proxy writes: the full sync, then the deltas of alternating changes.
fn render_texts(services: &[Value], slices: &[Value], changes: usize) -> (String, Vec<String>) {
    let fake = FakeIptables::default();
    let mut proxier = IptablesProxier::new(fake.clone(), RenderContext::default());
    let mut st = ServiceChangeTracker::default();
    let mut et = EndpointsChangeTracker::new("bench-node");
    let mut state = ProxyState::default();
    for s in services {
        st.update(&serde_json::from_value::<Service>(s.clone()).unwrap());
    }
    for s in slices {
        et.update(&serde_json::from_value::<EndpointSlice>(s.clone()).unwrap());
    }
    let mut sync = |st: &mut ServiceChangeTracker, et: &mut EndpointsChangeTracker, full: bool| {
        let a = st.apply(&mut state.services);
        let b = et.apply(&mut state.endpoints);
        let changed: BTreeSet<_> = a
            .updated_services
            .into_iter()
            .chain(b.updated_services)
            .collect();
        proxier
            .sync(SyncRequest {
                state: &state,
                changed: &changed,
                full,
            })
            .unwrap();
        fake.state.lock().restores.last().cloned().unwrap()
    };
    let full = sync(&mut st, &mut et, true);
    let mut deltas = Vec::new();
    for k in 1..=changes {
        et.update(
            &serde_json::from_value::<EndpointSlice>(slice_json(0, &slice_ips(0, k))).unwrap(),
        );
        deltas.push(sync(&mut st, &mut et, false));
    }
    (full, deltas)
}

fn restore_in(ns: &Netns, bin: &str, text: &str) -> Duration {
    let (bin, text) = (bin.to_string(), text.to_string());
    ns.enter(move || {
        let started = Instant::now();
        let mut c = Command::new(&bin)
            .args(["-w", "5", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "{bin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        took
    })
}

fn metrics(ns: &Netns) -> String {
    ns.enter(|| {
        let addr: SocketAddr = "127.0.0.1:10249".parse().unwrap();
        let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return String::new();
        };
        let _ = write!(c, "GET /metrics HTTP/1.0\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    })
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

struct Row {
    n: usize,
    flavour: &'static str,
    full: f64,
    full_floor: f64,
    change: f64,
    change_floor: f64,
    rss_mib: f64,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("proxy_sync: needs root (network namespaces, iptables)");
        return;
    }
    let sizes: Vec<usize> = env_or("CAPSTAN_BENCH_PROXY_SIZES", "1000,5000,10000")
        .split(',')
        .map(|s| s.trim().parse().expect("a size"))
        .collect();
    let changes: usize = env_or("CAPSTAN_BENCH_PROXY_CHANGES", "5").parse().unwrap();
    let flavours = env_or("CAPSTAN_BENCH_PROXY_FLAVOURS", "nf_tables,legacy");
    let mut rows = Vec::new();
    for &n in &sizes {
        let api = ApiServer::start();
        let t = Instant::now();
        create_all(
            &api.addr,
            (0..n)
                .map(|i| {
                    (
                        "/api/v1/namespaces/default/services".to_string(),
                        service_json(i),
                    )
                })
                .collect(),
        );
        create_all(
            &api.addr,
            (0..n)
                .map(|i| {
                    (
                        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices".to_string(),
                        slice_json(i, &slice_ips(i, 0)),
                    )
                })
                .collect(),
        );
        eprintln!(
            "proxy_sync: {n} Services and slices created in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let services = list(&api.addr, "/api/v1/services");
        let slices = list(&api.addr, "/apis/discovery.k8s.io/v1/endpointslices");
        let (full_text, deltas) = render_texts(&services, &slices, changes);
        eprintln!(
            "proxy_sync: full restore {} KiB, delta {} bytes",
            full_text.len() / 1024,
            deltas[0].len()
        );
        for (flavour, legacy) in [("nf_tables", false), ("legacy", true)] {
            if !flavours.split(',').any(|f| f.trim() == flavour) {
                continue;
            }
            let bin = if legacy {
                "iptables-legacy"
            } else {
                "iptables-nft"
            };
            // The floor first, in a fresh namespace, with the text the proxy would restore.
            let as_sent = |text: &str, known: &BTreeMap<String, usize>| {
                if legacy {
                    text.to_string()
                } else {
                    whole_table_cache(text, known)
                }
            };
            let floor_ns = Netns::new(&format!("cpb{}-floor", std::process::id() % 10000));
            let full_floor = restore_in(
                &floor_ns,
                &format!("{bin}-restore"),
                &as_sent(&full_text, &BTreeMap::new()),
            )
            .as_secs_f64();
            let known = rules_per_table(&full_text);
            let change_floor = median(
                deltas
                    .iter()
                    .map(|d| {
                        restore_in(&floor_ns, &format!("{bin}-restore"), &as_sent(d, &known))
                            .as_secs_f64()
                    })
                    .collect(),
            );
            drop(floor_ns);
            // Reset the slice to variant 0 for the proxy's run.
            put_slice(&api.addr, 0, 0);

            let lab = Lab::new(n + legacy as usize);
            let fwd = Forwarder::start(&format!("{}:0", lab.uplink_ip), &api.addr);
            let kc = std::fs::read_to_string(api.kubeconfig()).unwrap().replace(
                &format!("server: https://{}", api.addr),
                &format!(
                    "server: https://{}\n    tls-server-name: 127.0.0.1",
                    fwd.addr
                ),
            );
            let kubeconfig = api.dir.path().join("bench.kubeconfig");
            std::fs::write(&kubeconfig, kc).unwrap();
            let mut lab = lab;
            let node = lab.host("node", 2);
            if legacy {
                node.ns
                    .sh("iptables-legacy -A INPUT -m comment --comment capstan-bench -j ACCEPT");
            }
            let log = api.dir.path().join(format!("proxy-{flavour}.log"));
            let mut cmd = node.ns.command(env!("CARGO_BIN_EXE_capstan"));
            cmd.args(["proxy", "--kubeconfig"]).arg(&kubeconfig).args([
                "--hostname-override",
                "bench-node",
                "--metrics-bind-address",
                "127.0.0.1:10249",
            ]);
            let mut proxy = ProcessGuard::spawn(cmd, &log);
            let pid = proxy.child.id();
            let mut full = 0.0;
            eventually(Duration::from_secs(900), "the first full sync", || {
                assert!(
                    proxy.is_running(),
                    "proxy exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                let m = metrics(&node.ns);
                match metric(&m, "kubeproxy_sync_full_proxy_rules_duration_seconds_sum") {
                    Some(v) if v > 0.0 => {
                        full = v;
                        true
                    }
                    _ => {
                        std::thread::sleep(Duration::from_millis(200));
                        false
                    }
                }
            });
            let mut lat = Vec::new();
            for k in 1..=changes {
                std::thread::sleep(Duration::from_millis(1500));
                let before = metric(
                    &metrics(&node.ns),
                    "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
                )
                .unwrap_or(0.0);
                let t0 = now_secs();
                put_slice(&api.addr, 0, k);
                let mut t1 = 0.0;
                eventually(Duration::from_secs(120), "the change's sync", || {
                    let m = metrics(&node.ns);
                    let done = metric(
                        &m,
                        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
                    )
                    .unwrap_or(0.0)
                        > before;
                    if done {
                        t1 = metric(&m, "kubeproxy_sync_proxy_rules_last_timestamp_seconds")
                            .unwrap();
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    done
                });
                let want = slice_ips(0, k)[0].clone();
                let saved = node.ns.sh(&format!(
                    "{bin}-save -t nat | grep -c 'to-destination {want}:8080' || true"
                ));
                assert!(
                    saved.trim() != "0",
                    "the changed endpoint {want} is not in the kernel"
                );
                lat.push(t1 - t0);
            }
            let rss = rss_kib(pid) as f64 / 1024.0;
            drop(proxy);
            drop(node);
            drop(fwd);
            drop(lab);
            let row = Row {
                n,
                flavour,
                full,
                full_floor,
                change: median(lat),
                change_floor,
                rss_mib: rss,
            };
            eprintln!(
                "proxy_sync: {n} {flavour}: full {:.3}s (floor {:.3}s), change {:.1}ms (floor {:.1}ms), RSS {:.1} MiB",
                row.full, row.full_floor, row.change * 1e3, row.change_floor * 1e3, row.rss_mib
            );
            rows.push(row);
        }
        drop(api);
    }
    println!("| Services × 10 endpoints | iptables | full sync | bare restore (full) | ratio | change → kernel (median) | bare restore (same delta) | ratio | proxy RSS |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {:.2} s | {:.2} s | {:.2} | {:.1} ms | {:.1} ms | {:.2} | {:.1} MiB |",
            r.n,
            r.flavour,
            r.full,
            r.full_floor,
            r.full / r.full_floor,
            r.change * 1e3,
            r.change_floor * 1e3,
            r.change / r.change_floor,
            r.rss_mib
        );
    }
}

fn put_slice(addr: &str, i: usize, variant: usize) {
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/svc-{i}-1");
    let (code, cur) = http_raw(addr, "GET", &path, "application/json", b"");
    assert_eq!(code, 200);
    let cur: Value = serde_json::from_slice(&cur).unwrap();
    let mut want = slice_json(i, &slice_ips(i, variant));
    want["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
    let (code, body) = http_raw(
        addr,
        "PUT",
        &path,
        "application/json",
        want.to_string().as_bytes(),
    );
    assert_eq!(code, 200, "PUT {path}: {}", String::from_utf8_lossy(&body));
}
