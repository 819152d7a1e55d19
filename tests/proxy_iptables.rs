//! `capstan proxy` with the iptables backend against real packets. Each test builds hosts out of
//! network namespaces on a bridge of its own (tests/common/netlab.rs): "node" namespaces that run
//! `capstan proxy` (so its rules live in that namespace), backend namespaces with TCP and UDP echo
//! servers that answer with their name and the source address they saw, and a client namespace.
//! Services and EndpointSlices are created in apiserver-lite, which listens on the test's
//! loopback; the proxies reach it through a forwarder on the lab's uplink address (the proxy runs
//! inside the node namespace, where the host's loopback is not reachable).
//!
//! In a node namespace the Service range is routed via an address nobody on the lab bridge has:
//! a packet the rules do not DNAT goes nowhere (its ARP request stays unanswered), so traffic
//! never leaves the namespaces the test made.
//!
//! Everything (namespaces, links, proxies, the API server, threads) is removed by guards, also
//! when an assertion fails.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::netlab::{
    tcp_request, udp_request, EchoServer, Forwarder, Host, Lab, Netns, ProcessGuard,
};
use common::{eventually, ApiServer};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(1);
const SYNC: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The API server, reachable from the lab, and a kubeconfig pointing there.
struct Cluster {
    api: ApiServer,
    _fwd: Forwarder,
    kubeconfig: PathBuf,
}

impl Cluster {
    fn start(lab: &Lab) -> Cluster {
        let api = ApiServer::start();
        let fwd = Forwarder::start(&format!("{}:0", lab.uplink_ip), &api.addr);
        let text = std::fs::read_to_string(api.kubeconfig()).expect("the admin kubeconfig");
        // The serving certificate names 127.0.0.1, not the lab address: verify it under that name
        // (kubeconfig `tls-server-name`, as for any API server reached through a forwarder).
        let text = text.replace(
            &format!("server: https://{}", api.addr),
            &format!(
                "server: https://{}\n    tls-server-name: 127.0.0.1",
                fwd.addr
            ),
        );
        assert!(
            text.contains(&fwd.addr.to_string()),
            "kubeconfig server not rewritten: {text}"
        );
        let kubeconfig = api.dir.path().join("lab.kubeconfig");
        std::fs::write(&kubeconfig, text).unwrap();
        Cluster {
            api,
            _fwd: fwd,
            kubeconfig,
        }
    }

    fn apply(&self, obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let kind = obj["kind"].as_str().unwrap().to_lowercase();
        let path = self.api.dir.path().join(format!("{kind}-{name}.json"));
        std::fs::write(&path, obj.to_string()).unwrap();
        self.api
            .kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    fn cluster_ip(&self, svc: &str) -> String {
        let v = self.api.kubectl_json(&["get", "service", svc]);
        v["spec"]["clusterIP"]
            .as_str()
            .expect("a cluster IP")
            .to_string()
    }
}

/// A node: its namespace set up as a router with the Service range routed nowhere, and
/// `capstan proxy` running inside.
struct Node {
    host: Host,
    proxy: ProcessGuard,
    log: PathBuf,
}

impl Node {
    fn start(lab: &Lab, host: Host, name: &str, cluster: &Cluster, extra: &[&str]) -> Node {
        host.ns.sh(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
             net.ipv4.conf.eth0.send_redirects=0 && ip route add 10.96.0.0/12 via {}254",
            lab.prefix
        ));
        let log = cluster.api.dir.path().join(format!("proxy-{name}.log"));
        let mut cmd = host.ns.command(env!("CARGO_BIN_EXE_capstan"));
        cmd.args(["proxy", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .args([
                "--hostname-override",
                name,
                "--iptables-sync-period",
                "2s",
                "--iptables-min-sync-period",
                "0s",
            ])
            .args(extra)
            .env("RUST_LOG", "info");
        let proxy = ProcessGuard::spawn(cmd, &log);
        let mut node = Node { host, proxy, log };
        eventually(SYNC, "the proxy's first sync (healthz 200)", || {
            assert!(
                node.proxy.is_running(),
                "capstan proxy exited:\n{}",
                node.log()
            );
            http_get(&node.host, "127.0.0.1:10256", "/healthz").0 == 200
        });
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GET inside a host's namespace: (status, headers, body); status 0 when it failed.
fn http_get(host: &Host, addr: &str, path: &str) -> (u16, String, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    host.ns.enter(move || {
        let Ok(mut c) = TcpStream::connect_timeout(&addr, T) else {
            return (0, String::new(), String::new());
        };
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = write!(c, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, head.to_string(), body.to_string())
    })
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

/// TCP and UDP ports the echo servers answer on, and an SCTP port: this kernel has the sctp
/// match but no SCTP sockets, so SCTP is checked as rules in the kernel, not with traffic.
fn echo_ports() -> Value {
    json!([{"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP"},
           {"name": "udp", "port": 53, "targetPort": 5353, "protocol": "UDP"},
           {"name": "sctp", "port": 9, "targetPort": 9999, "protocol": "SCTP"}])
}

/// An EndpointSlice of `svc` with (ip, nodeName) endpoints, all ready.
fn slice(svc: &str, eps: &[(&str, &str)]) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{svc}-1"), "namespace": "default",
                        "labels": {"kubernetes.io/service-name": svc}},
           "addressType": "IPv4",
           "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"},
                     {"name": "udp", "port": 5353, "protocol": "UDP"},
                     {"name": "sctp", "port": 9999, "protocol": "SCTP"}],
           "endpoints": eps.iter().map(|(ip, node)| json!({
               "addresses": [ip], "conditions": {"ready": true}, "nodeName": node
           })).collect::<Vec<_>>()})
}

/// The answering backend's name.
fn who(reply: &str) -> String {
    reply
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Backends b1..bn at .11.. with echo servers.
fn backends(lab: &mut Lab, n: usize) -> Vec<(Host, EchoServer)> {
    (1..=n)
        .map(|i| {
            let h = lab.host(&format!("b{i}"), 10 + i as u8);
            let e = EchoServer::start(&h.ns, &format!("b{i}"), 8080, 5353);
            (h, e)
        })
        .collect()
}

#[test]
fn cluster_ip_spreads_over_backends_and_session_affinity_pins_a_client() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    let mut lab = Lab::new(1);
    let cluster = Cluster::start(&lab);
    let node_host = lab.host("node1", 2);
    let bs = backends(&mut lab, 3);
    let eps: Vec<(&str, &str)> = bs.iter().map(|(h, _)| (h.ip.as_str(), "node1")).collect();
    let node = Node::start(&lab, node_host, "node1", &cluster, &[]);

    cluster.apply(service("echo", json!({"ports": echo_ports()})));
    cluster.apply(slice("echo", &eps));
    cluster.apply(service(
        "sticky",
        json!({"ports": echo_ports(), "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}),
    ));
    cluster.apply(slice("sticky", &eps));
    let echo = format!("{}:80", cluster.cluster_ip("echo"));
    let sticky = format!("{}:80", cluster.cluster_ip("sticky"));

    let ns = &node.host.ns;
    eventually(SYNC, "the cluster IP answering", || {
        tcp_request(ns, &echo, T).is_ok()
    });
    // The SCTP port is in the kernel too: a DNAT to every backend.
    let nat = ns.sh("iptables-nft-save -t nat");
    for (ip, _) in &eps {
        let dnat = format!("-p sctp -j DNAT --to-destination {ip}:9999");
        assert!(
            nat.lines().any(
                |l| l.contains("-p sctp") && l.contains(&format!("--to-destination {ip}:9999"))
            ),
            "no {dnat:?} in:\n{nat}"
        );
    }
    let mut seen = BTreeSet::new();
    for _ in 0..90 {
        seen.insert(who(
            &tcp_request(ns, &echo, T).expect("a request to the cluster IP")
        ));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["b1".to_string(), "b2".into(), "b3".into()]),
        "requests to the cluster IP should reach every backend"
    );
    // UDP to the same Service: answered, from new source ports by more than one backend.
    let udp = format!("{}:53", cluster.cluster_ip("echo"));
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        seen.insert(who(
            &udp_request(ns, 0, &udp, T).expect("a UDP request to the cluster IP")
        ));
    }
    assert!(seen.len() > 1, "UDP flows should spread too, saw {seen:?}");

    eventually(SYNC, "the sticky Service answering", || {
        tcp_request(ns, &sticky, T).is_ok()
    });
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(who(
            &tcp_request(ns, &sticky, T).expect("a request to the sticky Service")
        ));
    }
    assert_eq!(
        seen.len(),
        1,
        "ClientIP affinity should pin the client, saw {seen:?}"
    );
    drop(node);
}

#[test]
fn no_endpoints_reject_and_a_removed_backend_loses_new_connections_and_udp_flows() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    let mut lab = Lab::new(2);
    let cluster = Cluster::start(&lab);
    let node_host = lab.host("node1", 2);
    let bs = backends(&mut lab, 3);
    let node = Node::start(&lab, node_host, "node1", &cluster, &[]);
    let ns = &node.host.ns;

    // A Service with no endpoints: refused at once (REJECT), not a timeout.
    cluster.apply(service("empty", json!({"ports": echo_ports()})));
    let empty = format!("{}:80", cluster.cluster_ip("empty"));
    eventually(
        SYNC,
        "the endpoint-less Service refusing connections",
        || matches!(tcp_request(ns, &empty, T), Err(e) if e.kind() == ErrorKind::ConnectionRefused),
    );

    let all: Vec<(&str, &str)> = bs.iter().map(|(h, _)| (h.ip.as_str(), "node1")).collect();
    cluster.apply(service("echo", json!({"ports": echo_ports()})));
    cluster.apply(slice("echo", &all));
    let tcp = format!("{}:80", cluster.cluster_ip("echo"));
    let udp = format!("{}:53", cluster.cluster_ip("echo"));
    eventually(SYNC, "the cluster IP answering", || {
        tcp_request(ns, &tcp, T).is_ok()
    });

    // A UDP flow (fixed source port) stays on one backend through conntrack.
    const PORT: u16 = 40053;
    let first = who(&udp_request(ns, PORT, &udp, T).expect("a UDP reply"));
    for _ in 0..5 {
        assert_eq!(
            who(&udp_request(ns, PORT, &udp, T).unwrap()),
            first,
            "the flow moved by itself"
        );
    }
    // Remove that backend from the slice (its server keeps running).
    let rest: Vec<(&str, &str)> = bs
        .iter()
        .filter(|(h, _)| {
            format!(
                "b{}",
                h.ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() - 10
            ) != first
        })
        .map(|(h, _)| (h.ip.as_str(), "node1"))
        .collect();
    assert_eq!(rest.len(), 2);
    let removed_ip = bs
        .iter()
        .map(|(h, _)| h.ip.as_str())
        .find(|ip| !rest.iter().any(|(r, _)| r == ip))
        .unwrap()
        .to_string();
    cluster.apply(slice("echo", &rest));
    // Within one sync: once the sync that drops the endpoint has written the rules, the flow
    // and new connections move at once. The next sync is a sync period (2 s) away, so no
    // later one can be what moved them.
    eventually(SYNC, "the sync that removes the endpoint", || {
        !ns.sh("iptables-nft-save -t nat")
            .contains(&format!("--to-destination {removed_ip}:"))
    });
    eventually(
        Duration::from_secs(1),
        "the UDP flow moving off the removed backend",
        || udp_request(ns, PORT, &udp, Duration::from_millis(300)).is_ok_and(|r| who(&r) != first),
    );
    assert!(
        (0..20).all(|_| tcp_request(ns, &tcp, T).is_ok_and(|r| who(&r) != first)),
        "new TCP connections avoid the removed backend"
    );

    // The last endpoints go: the Service rejects again.
    cluster.apply(slice("echo", &[]));
    eventually(
        SYNC,
        "the emptied Service refusing connections",
        || matches!(tcp_request(ns, &tcp, T), Err(e) if e.kind() == ErrorKind::ConnectionRefused),
    );
}

#[test]
fn node_port_from_another_host_and_external_traffic_policy_local() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    let mut lab = Lab::new(3);
    let cluster = Cluster::start(&lab);
    let n1 = lab.host("node1", 2);
    let n2 = lab.host("node2", 3);
    let client = lab.host("client", 20);
    let bs = backends(&mut lab, 2);
    // Replies to the client go back through node1, as a pod's replies go through its node.
    bs[0]
        .0
        .ns
        .sh(&format!("ip route add {}/32 via {}", client.ip, n1.ip));
    let node1 = Node::start(&lab, n1, "node1", &cluster, &[]);
    let node2 = Node::start(&lab, n2, "node2", &cluster, &[]);

    // NodePort with externalTrafficPolicy Cluster: answered through either node, masqueraded.
    let np_port = 30000 + (std::process::id() % 1000) as u16;
    cluster.apply(service(
        "np",
        json!({"type": "NodePort", "ports": [
            {"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": np_port}]}),
    ));
    cluster.apply(slice(
        "np",
        &[(&bs[0].0.ip, "node1"), (&bs[1].0.ip, "node2")],
    ));
    for node in [&node1, &node2] {
        let to = format!("{}:{np_port}", node.host.ip);
        eventually(SYNC, "the node port answering from the client host", || {
            tcp_request(&client.ns, &to, T).is_ok()
        });
        let reply = tcp_request(&client.ns, &to, T).unwrap();
        assert!(
            reply.ends_with(&format!(" {}", node.host.ip)),
            "Cluster policy masquerades to the node's address, backend saw: {reply}"
        );
    }

    // LoadBalancer with externalTrafficPolicy Local, its only endpoint on node1.
    let local_port = np_port + 1000;
    let hc_port = np_port + 1500;
    cluster.apply(service(
        "local",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": hc_port,
               "ports": [{"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP",
                          "nodePort": local_port}]}),
    ));
    cluster.apply(slice("local", &[(&bs[0].0.ip, "node1")]));
    let via1 = format!("{}:{local_port}", node1.host.ip);
    let via2 = format!("{}:{local_port}", node2.host.ip);
    eventually(SYNC, "the Local node port answering on node1", || {
        tcp_request(&client.ns, &via1, T).is_ok()
    });
    let reply = tcp_request(&client.ns, &via1, T).unwrap();
    assert_eq!(
        reply,
        format!("b1 {}", client.ip),
        "Local policy keeps the client's source address"
    );
    eventually(SYNC, "node2 dropping the Local Service's traffic", || {
        let hc = http_get(&client, &format!("{}:{hc_port}", node2.host.ip), "/");
        hc.0 == 503
    });
    match tcp_request(&client.ns, &via2, T) {
        Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {}
        other => panic!("node2 has no local endpoint and should drop (time out), got {other:?}"),
    }
    // The health check node port answers as upstream's does.
    let (status, head, body) = http_get(&client, &format!("{}:{hc_port}", node1.host.ip), "/");
    assert_eq!(status, 200, "node1 has a local endpoint: {head}\n{body}");
    let v: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(v["localEndpoints"], 1, "{body}");
    assert_eq!(v["service"]["name"], "local", "{body}");
    let head = head.to_lowercase();
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        head.contains("x-load-balancing-endpoint-weight: 1"),
        "{head}"
    );
    let (status, _, body) = http_get(&client, &format!("{}:{hc_port}", node2.host.ip), "/");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"localEndpoints\":0"), "{body}");
}

/// A pod behind `node`: namespace `<tag>-<name>` on a veth pair made inside the namespaces
/// (nothing left in the test's own namespace if a step fails), the pod at `10.244.<n>.2/30`, the
/// node's end at `10.244.<n>.1`, the pod's default route via the node.
fn pod(lab: &Lab, node: &Node, name: &str, n: u8) -> (Netns, String) {
    let ns = Netns::new(&format!("{}-{name}", lab.tag));
    let veth = format!("{}p{n}", lab.tag);
    node.host.ns.sh(&format!(
        "ip link add {veth} type veth peer name eth0 netns {pod} && \
         ip addr add 10.244.{n}.1/30 dev {veth} && ip link set {veth} up && \
         sysctl -qw net.ipv4.conf.{veth}.send_redirects=0",
        pod = ns.name
    ));
    ns.sh(&format!(
        "ip addr add 10.244.{n}.2/30 dev eth0 && ip link set eth0 up && \
         ip route add default via 10.244.{n}.1"
    ));
    (ns, format!("10.244.{n}.2"))
}

/// Pod traffic to a ClusterIP enters the node through PREROUTING (the other tests' clients sit
/// in the node namespace itself, whose traffic takes OUTPUT). Inside the cluster CIDR it keeps
/// its source address; a pod that reaches itself through its own Service (hairpin) is
/// masqueraded to the node's address, or its reply would bypass the node's un-DNAT and the
/// connection would never complete.
#[test]
fn pod_traffic_enters_through_prerouting_and_hairpin_is_masqueraded() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    let mut lab = Lab::new(4);
    let cluster = Cluster::start(&lab);
    let n1 = lab.host("node1", 2);
    let n1_ip = n1.ip.clone();
    let bs = backends(&mut lab, 1);
    // The backend's replies to pod addresses go back through node1, as in a pod network.
    bs[0]
        .0
        .ns
        .sh(&format!("ip route add 10.244.0.0/16 via {n1_ip}"));
    let node = Node::start(
        &lab,
        n1,
        "node1",
        &cluster,
        &["--cluster-cidr", "10.244.0.0/16"],
    );
    let (pod_ns, pod_ip) = pod(&lab, &node, "pod", 7);
    let _pod_echo = EchoServer::start(&pod_ns, "pod", 8080, 5353);

    cluster.apply(service("remote", json!({"ports": echo_ports()})));
    cluster.apply(slice("remote", &[(&bs[0].0.ip, "node1")]));
    cluster.apply(service("self", json!({"ports": echo_ports()})));
    cluster.apply(slice("self", &[(&pod_ip, "node1")]));
    let remote = format!("{}:80", cluster.cluster_ip("remote"));
    let own = format!("{}:80", cluster.cluster_ip("self"));

    eventually(SYNC, "the pod reaching a ClusterIP", || {
        tcp_request(&pod_ns, &remote, T).is_ok()
    });
    assert_eq!(
        tcp_request(&pod_ns, &remote, T).unwrap(),
        format!("b1 {pod_ip}"),
        "pod traffic inside the cluster CIDR keeps its source address"
    );
    let udp = format!("{}:53", cluster.cluster_ip("remote"));
    assert_eq!(
        udp_request(&pod_ns, 0, &udp, T).expect("UDP from the pod to the ClusterIP"),
        format!("b1 {pod_ip}")
    );

    eventually(SYNC, "the pod reaching itself through its Service", || {
        tcp_request(&pod_ns, &own, T).is_ok()
    });
    for _ in 0..5 {
        assert_eq!(
            tcp_request(&pod_ns, &own, T).expect("a hairpin request"),
            "pod 10.244.7.1",
            "hairpin traffic is masqueraded to the node's address on the pod's link"
        );
    }
    let udp = format!("{}:53", cluster.cluster_ip("self"));
    assert_eq!(
        udp_request(&pod_ns, 0, &udp, T).expect("a hairpin UDP request"),
        "pod 10.244.7.1"
    );
    drop(node);
}

/// Flushing the nat table by hand is repaired (canary, full resync); health and metrics.
fn flushed_nat_table_is_repaired(seed: usize, legacy: bool) {
    let mut lab = Lab::new(seed);
    let cluster = Cluster::start(&lab);
    let node_host = lab.host("node1", 2);
    let bs = backends(&mut lab, 1);
    let bin = if legacy {
        "iptables-legacy"
    } else {
        "iptables-nft"
    };
    if legacy {
        // A host that already has legacy rules: the proxy must pick the legacy binaries.
        node_host
            .ns
            .sh("iptables-legacy -A INPUT -m comment --comment capstan-test -j ACCEPT");
    }
    let node = Node::start(&lab, node_host, "node1", &cluster, &[]);
    let ns = &node.host.ns;
    cluster.apply(service("echo", json!({"ports": echo_ports()})));
    cluster.apply(slice("echo", &[(&bs[0].0.ip, "node1")]));
    let tcp = format!("{}:80", cluster.cluster_ip("echo"));
    eventually(SYNC, "the cluster IP answering", || {
        tcp_request(ns, &tcp, T).is_ok()
    });
    let saved = ns.sh(&format!("{bin}-save -t nat"));
    assert!(
        saved.contains("-A KUBE-SERVICES"),
        "rules should be in the {bin} tables:\n{saved}"
    );

    ns.sh(&format!("{bin} -t nat -F && {bin} -t nat -X"));
    assert!(
        tcp_request(ns, &tcp, T).is_err(),
        "without rules the cluster IP goes nowhere"
    );
    eventually(SYNC, "the proxy repairing the flushed nat table", || {
        tcp_request(ns, &tcp, T).is_ok()
    });
    let saved = ns.sh(&format!("{bin}-save -t nat"));
    for chain in ["PREROUTING", "OUTPUT"] {
        let jump = format!(
            "-A {chain} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        );
        assert_eq!(
            saved.matches(&jump).count(),
            1,
            "the jump from {chain}, once:\n{saved}"
        );
    }
    if legacy {
        // Every restore is --noflush: rules of other software in the same tables stay.
        let filter = ns.sh("iptables-legacy-save -t filter");
        assert!(filter.contains("capstan-test"), "{filter}");
    }
    assert!(
        node.log().contains("canary"),
        "the repair should come from the canary:\n{}",
        node.log()
    );

    let (status, _, body) = http_get(&node.host, "127.0.0.1:10256", "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("lastUpdated"), "{body}");
    assert_eq!(http_get(&node.host, "127.0.0.1:10256", "/livez").0, 200);
    let (status, _, metrics) = http_get(&node.host, "127.0.0.1:10249", "/metrics");
    assert_eq!(status, 200);
    for want in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"}",
    ] {
        assert!(metrics.contains(want), "metrics lack {want}:\n{metrics}");
    }
}

#[test]
fn flushed_nat_table_is_repaired_nf_tables() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    flushed_nat_table_is_repaired(4, false);
}

#[test]
fn flushed_nat_table_is_repaired_legacy() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    flushed_nat_table_is_repaired(5, true);
}

/// An upstream-style nat table of `services` × 4 endpoints, with one endpoint address shifted by
/// `shift` so that a second restore rewrites every chain.
fn nat_restore(services: usize, shift: usize) -> String {
    let mut decls = String::from("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n");
    let mut rules = String::from("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n");
    if shift == 0 {
        // The first restore also puts the jumps into the built-in chains, as a first full sync.
        rules.push_str("-I PREROUTING -j KUBE-SERVICES\n-I OUTPUT -j KUBE-SERVICES\n");
    }
    for s in 0..services {
        decls.push_str(&format!(":KUBE-SVC-{s:06} - [0:0]\n"));
        rules.push_str(&format!(
            "-A KUBE-SERVICES -d 172.30.{}.{} -p tcp -m tcp --dport 80 -j KUBE-SVC-{s:06}\n",
            s / 250,
            s % 250 + 1
        ));
        for e in 0..4 {
            decls.push_str(&format!(":KUBE-SEP-{s:06}-{e} - [0:0]\n"));
            let p = [0.25, 1.0 / 3.0, 0.5][..].get(e).copied();
            rules.push_str(&format!(
                "-A KUBE-SVC-{s:06}{} -j KUBE-SEP-{s:06}-{e}\n",
                p.map(|p| format!(" -m statistic --mode random --probability {p:.10}"))
                    .unwrap_or_default()
            ));
            let ip = format!("10.{}.{}.{}", s / 250, s % 250, e + 1 + shift);
            rules.push_str(&format!(
                "-A KUBE-SEP-{s:06}-{e} -s {ip}/32 -j KUBE-MARK-MASQ\n\
                 -A KUBE-SEP-{s:06}-{e} -p tcp -m tcp -j DNAT --to-destination {ip}:80\n"
            ));
        }
    }
    decls + &rules + "COMMIT\n"
}

fn nat_save(ns: &Netns) -> String {
    ns.sh("iptables-nft-save -t nat")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The proxy adds `-S` to large nf_tables restores (`proxy::iptables::kernel::whole_table_cache`:
/// iptables-nft's chain-name list is quadratic without it). The kernel must end up with exactly
/// the rules a plain `iptables-nft-restore --noflush` of the same text gives, on an empty table
/// and on a populated one, and the proxy must actually have taken the fast path.
#[test]
fn a_whole_table_read_restores_the_same_rules_as_a_plain_restore() {
    if !is_root() {
        eprintln!("needs root (network namespaces, iptables); skipped");
        return;
    }
    use proxy::iptables::kernel::{whole_table_cache, Flavour, Iptables, RealIptables};
    let tag = std::process::id() % 100_000;
    let ours = Netns::new(&format!("cpx{tag}-s"));
    let plain = Netns::new(&format!("cpx{tag}-p"));
    let first = nat_restore(300, 0);
    let second = nat_restore(300, 1);
    assert!(
        whole_table_cache(&first, &Default::default()).contains("\n-S\n"),
        "a full restore into an unknown table takes the fast path"
    );
    let mut ipt = RealIptables::new(Flavour::Nft);
    for text in [&first, &second] {
        let data = text.clone();
        ipt = ours.enter(move || {
            ipt.restore(&data).expect("the proxy's restore");
            ipt
        });
        let mut child = plain
            .command("iptables-nft-restore")
            .arg("--noflush")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("iptables-nft-restore");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing the restore");
        assert!(child.wait().expect("iptables-nft-restore").success());
        let (got, want) = (nat_save(&ours), nat_save(&plain));
        assert_eq!(got, want, "the fast path restored other rules");
        assert_eq!(got.matches("-j DNAT").count(), 1200, "{got}");
        assert_eq!(got.matches("-j KUBE-SERVICES").count(), 2, "{got}");
        if text == &first {
            // The first restore went into a namespace without a nat table (the built-in chains
            // had to be created); before the second, someone else adds a rule, which --noflush
            // keeps.
            for ns in [&ours, &plain] {
                ns.sh("iptables-nft -t nat -A POSTROUTING -o lo -j RETURN");
            }
        } else {
            assert!(got.contains("-A POSTROUTING -o lo -j RETURN"), "{got}");
        }
    }
}

#[test]
fn bad_configuration_names_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kube-proxy.yaml");
    std::fs::write(
        &path,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  minSyncPeriod: often\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["proxy", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("iptables.minSyncPeriod"), "{err}");
    let _ = Path::new("");
}
