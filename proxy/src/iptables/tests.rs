//! Rule rendering and partial syncs, through the recording fake. Scenarios follow upstream's
//! `pkg/proxy/iptables/proxier_test.go` (same Services, addresses and therefore chain names).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};

use super::kernel::FakeIptables;
use super::rules::RenderContext;
use super::IptablesProxier;
use crate::config::Cidr;
use crate::endpoints_change_tracker::EndpointsChangeTracker;
use crate::proxier::{Proxier, ProxyState, SyncReport, SyncRequest};
use crate::service_change_tracker::ServiceChangeTracker;
use crate::service_port::NamespacedName;

const NODE: &str = "test-node";

/// State fed through the real change trackers, as the watchers would.
struct Harness {
    services: ServiceChangeTracker,
    endpoints: EndpointsChangeTracker,
    state: ProxyState,
    proxier: IptablesProxier<FakeIptables>,
    fake: FakeIptables,
    /// The last sync's report.
    report: SyncReport,
}

impl Harness {
    fn new(ctx: RenderContext) -> Self {
        let fake = FakeIptables::default();
        Harness {
            services: ServiceChangeTracker::default(),
            endpoints: EndpointsChangeTracker::new(NODE),
            state: ProxyState::default(),
            proxier: IptablesProxier::new(fake.clone(), ctx),
            fake,
            report: SyncReport::default(),
        }
    }

    fn service(&mut self, v: Value) {
        let s: Service = serde_json::from_value(v).unwrap();
        self.services.update(&s);
    }

    fn delete_service(&mut self, ns: &str, name: &str) {
        self.services.delete_name(&NamespacedName {
            namespace: ns.into(),
            name: name.into(),
        });
    }

    fn slice(&mut self, v: Value) {
        let s: EndpointSlice = serde_json::from_value(v).unwrap();
        self.endpoints.update(&s);
    }

    /// Syncs and returns what was restored (empty when nothing was).
    fn sync(&mut self, full: bool) -> String {
        let a = self.services.apply(&mut self.state.services);
        let b = self.endpoints.apply(&mut self.state.endpoints);
        let changed: BTreeSet<NamespacedName> = a
            .updated_services
            .into_iter()
            .chain(b.updated_services)
            .collect();
        let before = self.fake.state.lock().restores.len();
        self.report = self
            .proxier
            .sync(SyncRequest {
                state: &self.state,
                changed: &changed,
                full,
            })
            .expect("sync");
        let s = self.fake.state.lock();
        assert!(
            s.restores.len() <= before + 1,
            "one iptables-restore per sync at most"
        );
        if s.restores.len() > before {
            s.restores.last().unwrap().clone()
        } else {
            String::new()
        }
    }
}

fn svc(ns: &str, name: &str, spec: Value, status: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec, "status": status})
}

/// A slice with port p80/TCP; endpoints as (address, nodeName, ready, serving, terminating).
fn slice(ns: &str, svc: &str, name: &str, eps: &[(&str, Option<&str>, bool, bool, bool)]) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node, r, s, t)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": r, "serving": s, "terminating": t}});
            if let Some(n) = node { e["nodeName"] = json!(n); }
            e
        }).collect::<Vec<_>>(),
    })
}

fn ready(ip: &str) -> (&str, Option<&str>, bool, bool, bool) {
    (ip, None, true, true, false)
}

fn ctx() -> RenderContext {
    RenderContext {
        cluster_cidr: Cidr::parse("10.0.0.0/8"),
        ..RenderContext::default()
    }
}

fn overall() -> Harness {
    let mut h = Harness::new(ctx());
    let p80 = |np: Option<u16>| {
        let mut p = json!({"name": "p80", "port": 80, "protocol": "TCP"});
        if let Some(np) = np {
            p["nodePort"] = json!(np);
        }
        json!([p])
    };
    h.service(svc(
        "ns1",
        "svc1",
        json!({"clusterIP": "172.30.0.41", "ports": p80(None)}),
        json!({}),
    ));
    h.service(svc(
        "ns2",
        "svc2",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "172.30.0.42",
               "ports": p80(Some(3001)), "externalIPs": ["192.168.99.22"], "healthCheckNodePort": 30000}),
        json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
    ));
    h.service(svc(
        "ns3",
        "svc3",
        json!({"type": "NodePort", "clusterIP": "172.30.0.43", "ports": p80(Some(3003))}),
        json!({}),
    ));
    h.service(svc(
        "ns4",
        "svc4",
        json!({"type": "NodePort", "clusterIP": "172.30.0.44",
        "externalIPs": ["192.168.99.33"], "ports": p80(None)}),
        json!({}),
    ));
    h.service(svc(
        "ns5",
        "svc5",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "clusterIP": "172.30.0.45",
               "ports": p80(Some(3002)), "healthCheckNodePort": 30000,
               "loadBalancerSourceRanges": ["203.0.113.0/25"], "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
        json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}),
    ));
    h.service(svc(
        "ns6",
        "svc6",
        json!({"type": "ClusterIP", "clusterIP": "172.30.0.46", "ports": p80(None)}),
        json!({}),
    ));
    h.slice(slice("ns1", "svc1", "svc1-1", &[ready("10.180.0.1")]));
    h.slice(slice("ns2", "svc2", "svc2-1", &[ready("10.180.0.2")]));
    h.slice(slice("ns3", "svc3", "svc3-1", &[ready("10.180.0.3")]));
    h.slice(slice(
        "ns4",
        "svc4",
        "svc4-1",
        &[
            ready("10.180.0.4"),
            ("10.180.0.5", Some(NODE), true, true, false),
        ],
    ));
    h.slice(slice("ns5", "svc5", "svc5-1", &[ready("10.180.0.3")]));
    h
}

/// Upstream's TestOverallIPTablesRules, in our order (upstream's test sorts chains). Left out on
/// purpose: KUBE-FIREWALL and the 127.0.0.0/8 node-port rules (localhost node ports need
/// route_localnet, which Capstan does not turn on) and the nfacct counters.
const OVERALL: &str = r#"*filter
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP
-A KUBE-NODEPORTS -m comment --comment "ns2/svc2:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
-A KUBE-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SEP-RS4RBKLTHTF2IUXJ - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-EXT-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SVC-4SW47YFZTEDKD3PK - [0:0]
:KUBE-SEP-UKSFD7AGPMPPLUHC - [0:0]
:KUBE-SEP-C6EBXVWJJZMIWKLZ - [0:0]
:KUBE-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-FW-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:KUBE-SEP-I77PXRDZVX7PMWMN - [0:0]
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.22 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns4/svc4:p80 external IP" -m tcp -p tcp -d 192.168.99.33 --dport 80 -j KUBE-EXT-4SW47YFZTEDKD3PK
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-GNZBNJ2PO5MGZ6GT
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "pod traffic for ns2/svc2:p80 external destinations" -s 10.0.0.0/8 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ
-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "route LOCAL traffic for ns2/svc2:p80 external destinations" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j KUBE-SEP-RS4RBKLTHTF2IUXJ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-EXT-4SW47YFZTEDKD3PK -m comment --comment "masquerade traffic for ns4/svc4:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-4SW47YFZTEDKD3PK -j KUBE-SVC-4SW47YFZTEDKD3PK
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.4:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-UKSFD7AGPMPPLUHC
-A KUBE-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.5:80" -j KUBE-SEP-C6EBXVWJJZMIWKLZ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -s 10.180.0.4 -j KUBE-MARK-MASQ
-A KUBE-SEP-UKSFD7AGPMPPLUHC -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.4:80
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -s 10.180.0.5 -j KUBE-MARK-MASQ
-A KUBE-SEP-C6EBXVWJJZMIWKLZ -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade traffic for ns5/svc5:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-NUKIZ6OKUXPJNT4C -j KUBE-SVC-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C
-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL"
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --rcheck --seconds 10800 --reap -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.3:80" -j KUBE-SEP-I77PXRDZVX7PMWMN
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-I77PXRDZVX7PMWMN -m comment --comment ns5/svc5:p80 -m recent --name KUBE-SEP-I77PXRDZVX7PMWMN --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
COMMIT
"#;

#[test]
fn overall_rules_match_upstream() {
    let mut h = overall();
    // The first full sync also inserts the jumps and canaries (see the next test); upstream's
    // expected text is that of a full sync into a kernel that has them.
    h.sync(true);
    let got = h.sync(true);
    if got != OVERALL {
        let want: Vec<&str> = OVERALL.lines().collect();
        for (i, l) in got.lines().enumerate() {
            assert_eq!(
                Some(&l),
                want.get(i),
                "line {} differs; whole output:\n{got}",
                i + 1
            );
        }
        panic!("output shorter than expected:\n{got}");
    }
    // The jumps from the built-in chains and the canaries are in place.
    let s = h.fake.state.lock();
    assert!(s.rules.iter().any(|(t, c, a)| t == "nat"
        && c == "PREROUTING"
        && a.last().map(String::as_str) == Some("KUBE-SERVICES")));
    for t in super::CANARY_TABLES {
        assert!(s.chains[*t].contains("KUBE-PROXY-CANARY"), "canary in {t}");
    }
}

/// Table-driven: lines that must (and must not) be in a full sync's output.
#[test]
fn feature_table() {
    struct Case {
        name: &'static str,
        ctx: RenderContext,
        service: Value,
        endpoints: Vec<(&'static str, Option<&'static str>, bool, bool, bool)>,
        want: &'static [&'static str],
        not: &'static [&'static str],
    }
    let lb = |extra: Value| {
        let mut spec = json!({"type": "LoadBalancer", "clusterIP": "172.30.0.41", "externalIPs": ["192.168.99.11"],
            "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        svc(
            "ns1",
            "svc1",
            spec,
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
        )
    };
    let cases = vec![
        Case {
            name: "no endpoints: every address rejects",
            ctx: ctx(),
            service: lb(json!({})),
            endpoints: vec![],
            want: &[
                r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j REJECT"#,
                r#"-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT"#,
                r#"-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j REJECT"#,
                r#"-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT"#,
            ],
            not: &["KUBE-SVC-", "KUBE-EXT-", "KUBE-SEP-"],
        },
        Case {
            name: "only terminating endpoints that still serve are used",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![
                ("10.0.1.1", None, false, true, true),
                ("10.0.1.2", None, false, false, true),
            ],
            want: &["DNAT --to-destination 10.0.1.1:80"],
            not: &["10.0.1.2", "REJECT"],
        },
        Case {
            name: "ready endpoints win over terminating ones",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![
                ("10.0.1.1", None, false, true, true),
                ("10.0.1.2", None, true, true, false),
            ],
            want: &["DNAT --to-destination 10.0.1.2:80"],
            not: &["10.0.1.1:80"],
        },
        Case {
            name: "internal traffic policy Local with a local endpoint",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "internalTrafficPolicy": "Local",
                "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![
                ("10.0.1.1", Some(NODE), true, true, false),
                ("10.0.1.2", None, true, true, false),
            ],
            want: &[
                r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVL-XPGD46QRK7WJZT7O"#,
                r#"-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-"#,
            ],
            not: &["10.0.1.2:80", "KUBE-SVC-"],
        },
        Case {
            name: "internal traffic policy Local without a local endpoint drops",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "internalTrafficPolicy": "Local",
                "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![("10.0.1.2", None, true, true, false)],
            want: &[
                r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP"#,
            ],
            not: &["KUBE-SEP-", "REJECT"],
        },
        Case {
            name: "ClientIP affinity with its own timeout",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![ready("10.0.1.2")],
            want: &[
                r#"-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -m recent --name KUBE-SEP-"#,
                "--rcheck --seconds 600 --reap -j KUBE-SEP-",
                "-m recent --name KUBE-SEP-",
                "--set -m tcp -p tcp -j DNAT --to-destination 10.0.1.2:80",
            ],
            not: &["--seconds 10800"],
        },
        Case {
            name: "external traffic policy Local with a local endpoint",
            ctx: ctx(),
            service: lb(json!({"externalTrafficPolicy": "Local"})),
            endpoints: vec![
                ("10.0.1.1", Some(NODE), true, true, false),
                ("10.0.1.2", None, true, true, false),
            ],
            want: &[
                "-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O",
                r#"-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -j KUBE-SEP-"#,
                r#"-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -j KUBE-SEP-"#,
            ],
            not: &["has no local endpoints", "masquerade traffic for"],
        },
        Case {
            name: "masquerade all",
            ctx: RenderContext {
                masquerade_all: true,
                ..RenderContext::default()
            },
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}),
                json!({}),
            ),
            endpoints: vec![("10.0.1.1", None, true, true, false)],
            want: &[
                r#"-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-MARK-MASQ"#,
            ],
            not: &["! -s"],
        },
        Case {
            name: "node ports on chosen addresses only",
            ctx: RenderContext {
                node_port_ips: Some(vec!["192.168.0.2".parse().unwrap()]),
                ..ctx()
            },
            service: lb(json!({})),
            endpoints: vec![("10.0.1.1", None, true, true, false)],
            want: &[
                r#"-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 192.168.0.2 -j KUBE-NODEPORTS"#,
            ],
            not: &["--dst-type LOCAL -j KUBE-NODEPORTS"],
        },
        Case {
            name: "UDP and SCTP ports",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "ports": [
                {"name": "p80", "port": 80, "protocol": "UDP"}]}),
                json!({}),
            ),
            endpoints: vec![],
            want: &[
                r#"-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 has no endpoints" -m udp -p udp -d 172.30.0.41 --dport 80 -j REJECT"#,
            ],
            not: &[],
        },
        Case {
            name: "SCTP port",
            ctx: ctx(),
            service: svc(
                "ns1",
                "svc1",
                json!({"clusterIP": "172.30.0.41", "ports": [
                {"name": "p80", "port": 80, "protocol": "SCTP"}]}),
                json!({}),
            ),
            endpoints: vec![],
            want: &[r#"-m sctp -p sctp -d 172.30.0.41 --dport 80 -j REJECT"#],
            not: &[],
        },
    ];
    for c in cases {
        let mut h = Harness::new(c.ctx);
        h.service(c.service);
        if !c.endpoints.is_empty() {
            // The slice's port has the Service port's protocol.
            h.slice(slice("ns1", "svc1", "svc1-1", &c.endpoints));
        }
        let got = h.sync(true);
        for w in c.want {
            assert!(got.contains(w), "{}: missing {w}\nin:\n{got}", c.name);
        }
        for n in c.not {
            assert!(!got.contains(n), "{}: unexpected {n}\nin:\n{got}", c.name);
        }
    }
}

fn chains_in(restore: &str) -> BTreeSet<String> {
    restore
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn one_endpoint_change_rewrites_only_that_service() {
    let mut h = overall();
    let full = h.sync(true);
    assert!(full.contains("*filter") && full.contains("KUBE-SVC-X27LE4BHSL4DOUIK"));

    // Nothing changed: nothing restored.
    assert_eq!(h.sync(false), "");

    // ns1/svc1 gets a second endpoint.
    h.slice(slice(
        "ns1",
        "svc1",
        "svc1-1",
        &[ready("10.180.0.1"), ready("10.180.0.9")],
    ));
    let delta = h.sync(false);
    let chains = chains_in(&delta);
    assert!(
        !delta.contains("*filter"),
        "the filter table is untouched:\n{delta}"
    );
    assert!(chains.contains("KUBE-SVC-XPGD46QRK7WJZT7O"), "{delta}");
    assert_eq!(
        chains.len(),
        2,
        "the SVC chain and the new SEP chain only:\n{delta}"
    );
    assert!(
        !chains.contains("KUBE-SEP-SXIVWICOYRO3J4NJ"),
        "the unchanged SEP is not rewritten"
    );
    assert!(
        !delta.contains("KUBE-SERVICES"),
        "KUBE-SERVICES is untouched:\n{delta}"
    );
    for other in [
        "GNZBNJ2PO5MGZ6GT",
        "X27LE4BHSL4DOUIK",
        "4SW47YFZTEDKD3PK",
        "NUKIZ6OKUXPJNT4C",
    ] {
        assert!(
            !delta.contains(other),
            "another Service's chain {other} was written:\n{delta}"
        );
    }

    // The endpoint goes again: its chain is deleted after the SVC chain is rewritten.
    h.slice(slice("ns1", "svc1", "svc1-1", &[ready("10.180.0.1")]));
    let delta = h.sync(false);
    let lines: Vec<&str> = delta.lines().collect();
    let x = lines
        .iter()
        .position(|l| l.starts_with("-X KUBE-SEP-"))
        .expect("a deleted SEP chain");
    let a = lines.iter().rposition(|l| l.starts_with("-A ")).unwrap();
    assert!(x > a, "deletions come after the rules:\n{delta}");
    assert_eq!(chains_in(&delta).len(), 2);

    // The last endpoint goes: the cluster IP now rejects (both tables' KUBE-SERVICES change).
    h.slice(slice("ns1", "svc1", "svc1-1", &[]));
    let delta = h.sync(false);
    assert!(
        delta.contains(r#""ns1/svc1:p80 has no endpoints""#),
        "{delta}"
    );
    assert!(delta.contains("-X KUBE-SVC-XPGD46QRK7WJZT7O"), "{delta}");
    assert!(delta.contains("-X KUBE-SEP-SXIVWICOYRO3J4NJ"), "{delta}");
    assert!(
        !chains_in(&delta)
            .iter()
            .any(|c| c.contains("X27LE4BHSL4DOUIK")),
        "{delta}"
    );

    // A Service deleted: its chains go, the rest stays.
    h.delete_service("ns3", "svc3");
    let delta = h.sync(false);
    assert!(delta.contains("-X KUBE-SVC-X27LE4BHSL4DOUIK"), "{delta}");
    assert!(delta.contains("-X KUBE-EXT-X27LE4BHSL4DOUIK"), "{delta}");
    assert!(!delta.contains("KUBE-SVC-4SW47YFZTEDKD3PK - "), "{delta}");
}

#[test]
fn failed_restore_forces_a_full_sync_and_full_sync_removes_leftovers() {
    let mut h = overall();
    h.sync(true);
    // A chain someone else left behind (an old kube-proxy's).
    h.fake
        .state
        .lock()
        .chains
        .get_mut("nat")
        .unwrap()
        .insert("KUBE-SEP-LEFTOVER0000000".into());
    h.fake.state.lock().fail_next_restore = true;
    h.slice(slice("ns1", "svc1", "svc1-1", &[ready("10.180.0.7")]));
    let a = h.services.apply(&mut h.state.services);
    let b = h.endpoints.apply(&mut h.state.endpoints);
    let changed: BTreeSet<_> = a
        .updated_services
        .into_iter()
        .chain(b.updated_services)
        .collect();
    assert!(h
        .proxier
        .sync(SyncRequest {
            state: &h.state,
            changed: &changed,
            full: false
        })
        .is_err());
    // The next sync is full although nobody asked for it.
    let next = h.sync(false);
    assert!(
        next.contains("*filter") && next.contains("KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]"),
        "{next}"
    );
    assert!(next.contains("-X KUBE-SEP-LEFTOVER0000000"), "{next}");
    assert!(next.contains("10.180.0.7:80"));
}

#[test]
fn full_syncs_insert_only_the_jumps_and_canaries_the_kernel_lacks() {
    let mut h = overall();
    let first = h.sync(true);
    let jumps: Vec<String> = super::rules::jump_rules()
        .iter()
        .map(|(_, builtin, chain, _, _)| format!("-I {builtin} … -j {chain}"))
        .collect();
    let inserted: Vec<&str> = first.lines().filter(|l| l.starts_with("-I ")).collect();
    assert_eq!(
        inserted.len(),
        jumps.len(),
        "every jump inserted once:\n{first}"
    );
    assert!(
        first.starts_with("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"),
        "{first}"
    );
    assert_eq!(
        first.matches(":KUBE-PROXY-CANARY - [0:0]").count(),
        3,
        "a canary per table"
    );
    // Upstream's order of prepends: the filter INPUT jumps in jump_rules() order.
    let input: Vec<&str> = inserted
        .iter()
        .filter(|l| l.starts_with("-I INPUT "))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        input,
        [
            "KUBE-PROXY-FIREWALL",
            "KUBE-NODEPORTS",
            "KUBE-EXTERNAL-SERVICES"
        ]
    );

    // With everything in place, nothing is inserted or declared again.
    let second = h.sync(true);
    assert!(!second.contains("-I "), "{second}");
    assert!(!second.contains("KUBE-PROXY-CANARY"), "{second}");

    // A jump someone deleted and a flushed-away canary come back, and only they.
    {
        let mut s = h.fake.state.lock();
        s.rules.retain(|(t, c, a)| {
            !(t == "nat" && c == "PREROUTING" && a.last().unwrap() == "KUBE-SERVICES")
        });
        s.chains
            .get_mut("mangle")
            .unwrap()
            .remove("KUBE-PROXY-CANARY");
    }
    let third = h.sync(true);
    let inserted: Vec<&str> = third.lines().filter(|l| l.starts_with("-I ")).collect();
    assert_eq!(
        inserted,
        ["-I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"]
    );
    assert!(third.starts_with("*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"));
    assert_eq!(third.matches("KUBE-PROXY-CANARY").count(), 1, "{third}");
}

#[test]
fn rule_counts_and_no_local_endpoints_are_reported() {
    let mut h = overall();
    h.sync(true);
    let text = h.sync(true);
    // The rules in each table's section of a full restore (no jumps: they are in place).
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    let mut table = "";
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = if t == "nat" { "nat" } else { "filter" };
        } else if l.starts_with("-A ") {
            *counted.entry(table).or_default() += 1;
        }
    }
    assert_eq!(h.report.rules, counted);
    // svc2 has external traffic policy Local and no endpoint on this node.
    assert_eq!(h.report.no_local_endpoints, (0, 1));
}

#[test]
fn canary_detects_a_flushed_table() {
    let mut h = overall();
    h.sync(true);
    let mut lost = h.proxier.kernel_state_probe();
    assert!(!lost());
    h.fake.state.lock().chains.get_mut("nat").unwrap().clear();
    assert!(lost());
}

#[test]
fn cleanup_removes_everything() {
    let mut h = overall();
    h.sync(true);
    h.proxier.cleanup().unwrap();
    let s = h.fake.state.lock();
    assert!(s.rules.is_empty(), "jumps left: {:?}", s.rules);
    for (t, chains) in &s.chains {
        assert!(
            chains.iter().all(|c| !c.starts_with("KUBE-")),
            "{t}: {chains:?}"
        );
    }
}

/// Upstream's TestSyncProxyRulesRepeated, in our words: one change after another, each with the
/// exact restore text its partial sync writes.
#[test]
fn repeated_changes_write_exactly_these_deltas() {
    type Change = Box<dyn Fn(&mut Harness)>;
    let cip = |ip: &str| json!({"clusterIP": ip, "ports": [{"name": "p80", "port": 80}]});
    let mut h = Harness::new(ctx());
    h.service(svc("ns1", "svc1", cip("172.30.0.41"), json!({})));
    h.slice(slice("ns1", "svc1", "svc1-1", &[ready("10.0.1.1")]));
    h.sync(true);
    let steps: Vec<(&str, Change, &str)> = vec![
        (
            "a second Service with an endpoint",
            Box::new(move |h| {
                h.service(svc("ns2", "svc2", cip("172.30.0.42"), json!({})));
                h.slice(slice("ns2", "svc2", "svc2-1", &[ready("10.0.2.1")]));
            }),
            r#"*nat
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SEP-2SXON6RYLYZ4GEJY - [0:0]
:KUBE-SERVICES - [0:0]
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.0.2.1:80" -j KUBE-SEP-2SXON6RYLYZ4GEJY
-A KUBE-SEP-2SXON6RYLYZ4GEJY -m comment --comment ns2/svc2:p80 -s 10.0.2.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-2SXON6RYLYZ4GEJY -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.2.1:80
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j KUBE-SVC-GNZBNJ2PO5MGZ6GT
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
COMMIT
"#,
        ),
        (
            "a second endpoint for svc1: its SVC chain and the new SEP chain only",
            Box::new(|h| {
                h.slice(slice(
                    "ns1",
                    "svc1",
                    "svc1-1",
                    &[ready("10.0.1.1"), ready("10.0.1.2")],
                ))
            }),
            r#"*nat
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-FRRGXMRCA6KBNYLB - [0:0]
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SNQ3ZNILQDEJNDQO
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -j KUBE-SEP-FRRGXMRCA6KBNYLB
-A KUBE-SEP-FRRGXMRCA6KBNYLB -m comment --comment ns1/svc1:p80 -s 10.0.1.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-FRRGXMRCA6KBNYLB -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.0.1.2:80
COMMIT
"#,
        ),
        (
            "svc2 loses its endpoints: REJECT in filter, its chains deleted after every rule",
            Box::new(|h| h.slice(slice("ns2", "svc2", "svc2-1", &[]))),
            r#"*filter
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j REJECT
COMMIT
*nat
:KUBE-SEP-2SXON6RYLYZ4GEJY - [0:0]
:KUBE-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-X KUBE-SEP-2SXON6RYLYZ4GEJY
-X KUBE-SVC-GNZBNJ2PO5MGZ6GT
COMMIT
"#,
        ),
        (
            "svc1's first endpoint goes",
            Box::new(|h| h.slice(slice("ns1", "svc1", "svc1-1", &[ready("10.0.1.2")]))),
            r#"*nat
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-SNQ3ZNILQDEJNDQO - [0:0]
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.0.1.2:80" -j KUBE-SEP-FRRGXMRCA6KBNYLB
-X KUBE-SEP-SNQ3ZNILQDEJNDQO
COMMIT
"#,
        ),
        (
            "svc2 is deleted: only its REJECT goes",
            Box::new(|h| h.delete_service("ns2", "svc2")),
            "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n",
        ),
        ("nothing changed", Box::new(|_| {}), ""),
    ];
    for (name, change, want) in steps {
        change(&mut h);
        let got = h.sync(false);
        assert_eq!(got, want, "{name}");
    }
}
