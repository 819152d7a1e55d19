//! Rendering of iptables rules (pure: no kernel, table-tested). Per Service port,
//! [`render_service_port`] produces the chains the port owns (KUBE-SVC/SVL/EXT/FW/SEP) and its
//! lines in the shared chains (KUBE-SERVICES, KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES,
//! KUBE-PROXY-FIREWALL); [`static_rules`] gives the fixed chains. The shapes, comments and
//! order follow upstream's `syncProxyRules` and `writeServiceToEndpointRules` so that
//! `iptables-save` output reads like kube-proxy's.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::Cidr;
use crate::endpoint::{categorize, EndpointInfo};
use crate::service_port::{ServicePortInfo, ServicePortName};

use super::chain_names::*;

/// What rendering needs besides the Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    /// SNAT every packet to a cluster IP.
    pub masquerade_all: bool,
    /// The pod CIDR ("detect local" by cluster CIDR); traffic from outside it is masqueraded.
    pub cluster_cidr: Option<Cidr>,
    /// Node addresses NodePorts answer on; `None` = every local address.
    pub node_port_ips: Option<Vec<IpAddr>>,
    /// The node's addresses (load balancer source ranges that cover the node allow it).
    pub node_ips: Vec<IpAddr>,
    /// The masquerade mark (`0x4000` for bit 14).
    pub masq_mark: String,
}

impl Default for RenderContext {
    fn default() -> Self {
        RenderContext {
            masquerade_all: false,
            cluster_cidr: None,
            node_port_ips: None,
            node_ips: Vec::new(),
            masq_mark: "0x4000".into(),
        }
    }
}

/// A chain and its rules (each a full `-A CHAIN ...` line).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Everything one Service port puts into the tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServicePortRules {
    /// Chains the port owns, in the nat table.
    pub nat_chains: Vec<Chain>,
    /// Lines in nat KUBE-SERVICES.
    pub nat_services: Vec<String>,
    /// Lines in nat KUBE-NODEPORTS.
    pub nat_nodeports: Vec<String>,
    /// Lines in filter KUBE-SERVICES.
    pub filter_services: Vec<String>,
    /// Lines in filter KUBE-EXTERNAL-SERVICES.
    pub filter_external: Vec<String>,
    /// Lines in filter KUBE-NODEPORTS (health check node ports).
    pub filter_nodeports: Vec<String>,
    /// Lines in filter KUBE-PROXY-FIREWALL.
    pub filter_firewall: Vec<String>,
    /// Services without a usable local endpoint (metrics), internal and external.
    pub no_local_endpoints: (bool, bool),
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

/// Renders one Service port with its endpoints.
pub fn render_service_port(
    ctx: &RenderContext,
    spn: &ServicePortName,
    svc: &ServicePortInfo,
    endpoints: &[EndpointInfo],
) -> ServicePortRules {
    let mut out = ServicePortRules::default();
    let name = spn.to_string();
    let proto = svc.protocol.lower();
    let hash = service_port_hash(spn);
    let cluster_chain = cluster_policy_chain(&hash);
    let local_chain = local_policy_chain(&hash);
    let ext_chain = external_chain(&hash);
    let fw_chain = firewall_chain(&hash);

    let cats = categorize(endpoints, svc);
    let has_endpoints = cats.has_any;
    let uses_cluster_chain = !cats.cluster.is_empty() && svc.uses_cluster_endpoints();
    let uses_local_chain = !cats.local.is_empty() && svc.uses_local_endpoints();

    let (internal_chain, has_internal) = if svc.internal_policy_local {
        (&local_chain, has_endpoints && !cats.local.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let (external_policy_chain, has_external) = if svc.external_policy_local {
        (&local_chain, has_endpoints && !cats.local.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let uses_ext_chain = has_endpoints && svc.externally_accessible();
    let uses_fw_chain = has_endpoints
        && !svc.load_balancer_ips.is_empty()
        && !svc.load_balancer_source_ranges.is_empty();
    let lb_chain = if uses_fw_chain { &fw_chain } else { &ext_chain };

    let (internal_target, internal_comment, external_target, external_comment) = if !has_endpoints {
        let c = quoted(&format!("{name} has no endpoints"));
        ("REJECT", c.clone(), "REJECT", c)
    } else {
        let c = quoted(&format!("{name} has no local endpoints"));
        ("DROP", c.clone(), "DROP", c)
    };
    out.no_local_endpoints = (
        has_endpoints && !has_internal,
        has_endpoints && !has_external,
    );
    let ip = svc.cluster_ip;
    let port = svc.port;

    // The cluster IP.
    if has_internal {
        out.nat_services.push(format!(
            "-A {KUBE_SERVICES} -m comment --comment {} -m {proto} -p {proto} -d {ip} --dport {port} -j {internal_chain}",
            quoted(&format!("{name} cluster IP"))
        ));
    } else {
        out.filter_services.push(format!(
            "-A {KUBE_SERVICES} -m comment --comment {internal_comment} -m {proto} -p {proto} -d {ip} --dport {port} -j {internal_target}"
        ));
    }

    // External IPs.
    for eip in &svc.external_ips {
        if has_endpoints {
            out.nat_services.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment {} -m {proto} -p {proto} -d {eip} --dport {port} -j {ext_chain}",
                quoted(&format!("{name} external IP"))
            ));
        }
        if !has_external {
            out.filter_external.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m {proto} -p {proto} -d {eip} --dport {port} -j {external_target}"
            ));
        }
    }

    // Load balancer ingress IPs.
    for lbip in &svc.load_balancer_ips {
        if has_endpoints {
            out.nat_services.push(format!(
                "-A {KUBE_SERVICES} -m comment --comment {} -m {proto} -p {proto} -d {lbip} --dport {port} -j {lb_chain}",
                quoted(&format!("{name} loadbalancer IP"))
            ));
        }
        if uses_fw_chain {
            out.filter_firewall.push(format!(
                "-A {KUBE_PROXY_FIREWALL} -m comment --comment {} -m {proto} -p {proto} -d {lbip} --dport {port} -j DROP",
                quoted(&format!("{name} traffic not accepted by {fw_chain}"))
            ));
        }
    }
    if !has_external {
        for lbip in &svc.load_balancer_ips {
            out.filter_external.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m {proto} -p {proto} -d {lbip} --dport {port} -j {external_target}"
            ));
        }
    }

    // The node port.
    if svc.node_port != 0 {
        let np = svc.node_port;
        if has_endpoints {
            out.nat_nodeports.push(format!(
                "-A {KUBE_NODEPORTS} -m comment --comment {name} -m {proto} -p {proto} --dport {np} -j {ext_chain}"
            ));
        }
        if !has_external {
            out.filter_external.push(format!(
                "-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {external_comment} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {external_target}"
            ));
        }
    }

    // The health check node port is always open.
    if svc.health_check_node_port != 0 {
        out.filter_nodeports.push(format!(
            "-A {KUBE_NODEPORTS} -m comment --comment {} -m tcp -p tcp --dport {} -j ACCEPT",
            quoted(&format!("{name} health check node port")),
            svc.health_check_node_port
        ));
    }

    // Masquerade cluster-IP traffic from outside the cluster (or all of it).
    let mut chains: Vec<Chain> = Vec::new();
    let mut internal_masq = None;
    if has_internal {
        let args = format!(
            "-m comment --comment {} -m {proto} -p {proto} -d {ip} --dport {port}",
            quoted(&format!("{name} cluster IP"))
        );
        if ctx.masquerade_all {
            internal_masq = Some(format!("-A {internal_chain} {args} -j {KUBE_MARK_MASQ}"));
        } else if let Some(cidr) = ctx.cluster_cidr {
            internal_masq = Some(format!(
                "-A {internal_chain} {args} ! -s {cidr} -j {KUBE_MARK_MASQ}"
            ));
        }
    }

    // External traffic: KUBE-EXT.
    if uses_ext_chain {
        let mut c = Chain {
            name: ext_chain.clone(),
            rules: Vec::new(),
        };
        if !svc.external_policy_local {
            c.rules.push(format!(
                "-A {ext_chain} -m comment --comment {} -j {KUBE_MARK_MASQ}",
                quoted(&format!(
                    "masquerade traffic for {name} external destinations"
                ))
            ));
        } else {
            if let Some(cidr) = ctx.cluster_cidr {
                c.rules.push(format!(
                    "-A {ext_chain} -m comment --comment {} -s {cidr} -j {cluster_chain}",
                    quoted(&format!("pod traffic for {name} external destinations"))
                ));
            }
            c.rules.push(format!(
                "-A {ext_chain} -m comment --comment {} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                quoted(&format!("masquerade LOCAL traffic for {name} external destinations"))
            ));
            c.rules.push(format!(
                "-A {ext_chain} -m comment --comment {} -m addrtype --src-type LOCAL -j {cluster_chain}",
                quoted(&format!("route LOCAL traffic for {name} external destinations"))
            ));
        }
        if has_external {
            c.rules
                .push(format!("-A {ext_chain} -j {external_policy_chain}"));
        }
        chains.push(c);
    }

    // The load balancer source-range firewall: KUBE-FW.
    if uses_fw_chain {
        let mut c = Chain {
            name: fw_chain.clone(),
            rules: Vec::new(),
        };
        let comment = quoted(&format!("{name} loadbalancer IP"));
        let mut allow_from_node = false;
        for cidr in &svc.load_balancer_source_ranges {
            c.rules.push(format!(
                "-A {fw_chain} -m comment --comment {comment} -s {cidr} -j {ext_chain}"
            ));
            allow_from_node |= ctx.node_ips.iter().any(|ip| cidr.contains(*ip));
        }
        if allow_from_node {
            for lbip in &svc.load_balancer_ips {
                c.rules.push(format!(
                    "-A {fw_chain} -m comment --comment {comment} -s {lbip} -j {ext_chain}"
                ));
            }
        }
        // What falls off the end was not allowed; KUBE-PROXY-FIREWALL drops it.
        c.rules.push(format!(
            "-A {fw_chain} -m comment --comment {}",
            quoted(&format!(
                "other traffic to {name} will be dropped by {KUBE_PROXY_FIREWALL}"
            ))
        ));
        chains.push(c);
    }

    // The policy chains: KUBE-SVC (Cluster) and KUBE-SVL (Local).
    for (uses, chain, eps) in [
        (uses_cluster_chain, &cluster_chain, &cats.cluster),
        (uses_local_chain, &local_chain, &cats.local),
    ] {
        if !uses {
            continue;
        }
        let mut c = Chain {
            name: chain.clone(),
            rules: Vec::new(),
        };
        if let Some(m) = internal_masq.as_ref().filter(|_| chain == internal_chain) {
            c.rules.push(m.clone());
        }
        write_service_to_endpoint_rules(&mut c, spn, &name, svc, eps);
        chains.push(c);
    }

    // One chain per reachable endpoint: KUBE-SEP.
    for ep in &cats.all_reachable {
        let sep = endpoint_chain(spn, ep);
        let mut c = Chain {
            name: sep.clone(),
            rules: Vec::new(),
        };
        c.rules.push(format!(
            "-A {sep} -m comment --comment {name} -s {} -j {KUBE_MARK_MASQ}",
            ep.ip
        ));
        let mut dnat = format!("-A {sep} -m comment --comment {name}");
        if svc.session_affinity_timeout.is_some() {
            let _ = write!(dnat, " -m recent --name {sep} --set");
        }
        let _ = write!(dnat, " -m {proto} -p {proto} -j DNAT --to-destination {ep}");
        c.rules.push(dnat);
        chains.push(c);
    }
    out.nat_chains = chains;
    out
}

/// Affinity and load-balancing jumps from a policy chain to its endpoints' chains.
fn write_service_to_endpoint_rules(
    chain: &mut Chain,
    spn: &ServicePortName,
    name: &str,
    svc: &ServicePortInfo,
    endpoints: &[&EndpointInfo],
) {
    if let Some(timeout) = svc.session_affinity_timeout {
        for ep in endpoints {
            let sep = endpoint_chain(spn, ep);
            chain.rules.push(format!(
                "-A {} -m comment --comment {} -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                chain.name,
                quoted(&format!("{name} -> {ep}"))
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(spn, ep);
        let mut line = format!(
            "-A {} -m comment --comment {}",
            chain.name,
            quoted(&format!("{name} -> {ep}"))
        );
        if i + 1 < n {
            let _ = write!(
                line,
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            );
        }
        let _ = write!(line, " -j {sep}");
        chain.rules.push(line);
    }
}

/// The last rule of nat KUBE-SERVICES: node ports, on every local address or on the chosen ones.
pub fn nodeports_jump(ctx: &RenderContext) -> Vec<String> {
    let comment =
        quoted("kubernetes service nodeports; NOTE: this must be the last rule in this chain");
    match &ctx.node_port_ips {
        None => vec![format!(
            "-A {KUBE_SERVICES} -m comment --comment {comment} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}"
        )],
        Some(ips) => ips
            .iter()
            .map(|ip| {
                format!("-A {KUBE_SERVICES} -m comment --comment {comment} -d {ip} -j {KUBE_NODEPORTS}")
            })
            .collect(),
    }
}

/// The fixed chains' rules: (table, chain, rules).
pub fn static_rules(ctx: &RenderContext) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let mark = &ctx.masq_mark;
    vec![
        (
            "nat",
            KUBE_POSTROUTING,
            vec![
                format!("-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN"),
                // Clear the mark so a packet re-traversing the stack is not masqueraded again.
                format!("-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}"),
                format!(
                    "-A {KUBE_POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                ),
            ],
        ),
        (
            "nat",
            KUBE_MARK_MASQ,
            vec![format!("-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}")],
        ),
        (
            "filter",
            KUBE_FORWARD,
            vec![
                format!("-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP"),
                format!(
                    "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
                ),
                format!(
                    "-A {KUBE_FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
                ),
            ],
        ),
    ]
}

/// The jumps from the built-in chains into ours: (table, built-in chain, our chain, extra match
/// arguments, comment). Installed with `iptables -I` (not restore: that would flush the built-in
/// chains others use).
pub fn jump_rules() -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
)> {
    const NEW: &[&str] = &["-m", "conntrack", "--ctstate", "NEW"];
    vec![
        (
            "filter",
            "INPUT",
            KUBE_PROXY_FIREWALL,
            NEW,
            "kubernetes load balancer firewall",
        ),
        (
            "filter",
            "OUTPUT",
            KUBE_PROXY_FIREWALL,
            NEW,
            "kubernetes load balancer firewall",
        ),
        (
            "filter",
            "FORWARD",
            KUBE_PROXY_FIREWALL,
            NEW,
            "kubernetes load balancer firewall",
        ),
        (
            "filter",
            "INPUT",
            KUBE_NODEPORTS,
            &[],
            "kubernetes health check service ports",
        ),
        (
            "filter",
            "INPUT",
            KUBE_EXTERNAL_SERVICES,
            NEW,
            "kubernetes externally-visible service portals",
        ),
        (
            "filter",
            "FORWARD",
            KUBE_EXTERNAL_SERVICES,
            NEW,
            "kubernetes externally-visible service portals",
        ),
        (
            "filter",
            "FORWARD",
            KUBE_FORWARD,
            &[],
            "kubernetes forwarding rules",
        ),
        (
            "filter",
            "OUTPUT",
            KUBE_SERVICES,
            NEW,
            "kubernetes service portals",
        ),
        (
            "filter",
            "FORWARD",
            KUBE_SERVICES,
            NEW,
            "kubernetes service portals",
        ),
        (
            "nat",
            "OUTPUT",
            KUBE_SERVICES,
            &[],
            "kubernetes service portals",
        ),
        (
            "nat",
            "PREROUTING",
            KUBE_SERVICES,
            &[],
            "kubernetes service portals",
        ),
        (
            "nat",
            "POSTROUTING",
            KUBE_POSTROUTING,
            &[],
            "kubernetes postrouting rules",
        ),
    ]
}

/// The arguments of a jump rule from `jump_rules` after its built-in chain's name.
pub fn jump_args(extra: &[&str], comment: &str, chain: &str) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(["-m", "comment", "--comment", comment, "-j", chain].map(String::from));
    args
}

/// The top-level chains of each table, in upstream's declaration order.
pub const NAT_CHAINS: &[&str] = &[
    KUBE_NODEPORTS,
    KUBE_SERVICES,
    KUBE_MARK_MASQ,
    KUBE_POSTROUTING,
];
pub const FILTER_CHAINS: &[&str] = &[
    KUBE_NODEPORTS,
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_PROXY_FIREWALL,
];
