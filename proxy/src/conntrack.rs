//! Removal of stale UDP conntrack entries (upstream's `pkg/proxy/conntrack`). A UDP "connection"
//! lives in conntrack as long as packets keep flowing, so a client that keeps sending to a
//! Service IP stays DNATed to an endpoint that is gone, or keeps hitting the REJECT that was in
//! place before the Service had endpoints. After each sync the proxy deletes those entries with
//! the `conntrack` tool (conntrack-tools), which talks netlink to the kernel.

use std::net::IpAddr;
use std::process::{Command, Stdio};

use crate::endpoint::EndpointInfo;
use crate::service_port::ServicePortInfo;

/// One deletion: `conntrack -D` with these filters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConntrackFilter(pub Vec<String>);

/// Entries of a removed endpoint: every Service address of the port NATed to it.
pub fn stale_endpoint_filters(svc: &ServicePortInfo, ep: &EndpointInfo) -> Vec<ConntrackFilter> {
    let mut out = Vec::new();
    let dnat = ep.ip.to_string();
    let mut vip = |ip: IpAddr| {
        out.push(ConntrackFilter(vec![
            "-p".into(),
            "udp".into(),
            "--orig-dst".into(),
            ip.to_string(),
            "--dst-nat".into(),
            dnat.clone(),
        ]))
    };
    vip(svc.cluster_ip);
    for ip in svc.external_ips.iter().chain(&svc.load_balancer_ips) {
        vip(*ip);
    }
    if svc.node_port != 0 {
        out.push(ConntrackFilter(vec![
            "-p".into(),
            "udp".into(),
            "--orig-port-dst".into(),
            svc.node_port.to_string(),
            "--dst-nat".into(),
            dnat,
        ]));
    }
    out
}

/// Entries of a UDP Service port that just got endpoints: whatever was tracked towards its
/// addresses before (rejected or unreplied flows).
pub fn new_service_filters(svc: &ServicePortInfo) -> Vec<ConntrackFilter> {
    let mut out = Vec::new();
    for ip in std::iter::once(&svc.cluster_ip)
        .chain(&svc.external_ips)
        .chain(&svc.load_balancer_ips)
    {
        out.push(ConntrackFilter(vec![
            "-p".into(),
            "udp".into(),
            "--orig-dst".into(),
            ip.to_string(),
        ]));
    }
    if svc.node_port != 0 {
        out.push(ConntrackFilter(vec![
            "-p".into(),
            "udp".into(),
            "--orig-port-dst".into(),
            svc.node_port.to_string(),
        ]));
    }
    out
}

/// Entries towards a deleted Service's cluster IP.
pub fn deleted_service_filter(ip: IpAddr) -> ConntrackFilter {
    ConntrackFilter(vec![
        "-p".into(),
        "udp".into(),
        "--orig-dst".into(),
        ip.to_string(),
    ])
}

/// Runs the deletions; failures are logged, not fatal (upstream logs them too). The tool exits
/// 1 when nothing matched, which is not an error.
pub fn delete(filters: &[ConntrackFilter]) {
    for f in filters {
        let out = Command::new("conntrack")
            .arg("-D")
            .args(&f.0)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {
                tracing::debug!(filter = ?f.0, "deleted stale conntrack entries")
            }
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                if !stderr.contains("0 flow entries") {
                    tracing::warn!(filter = ?f.0, %stderr, "conntrack -D failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "running conntrack (is conntrack-tools installed?)")
            }
        }
    }
}
