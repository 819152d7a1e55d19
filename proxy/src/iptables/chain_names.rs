//! Upstream's chain names (`pkg/proxy/iptables/proxier.go`): fixed names for the top-level
//! chains and, per Service port and endpoint, a prefix plus the first 16 characters of the
//! base32 (RFC 4648, upper case) encoding of a SHA-256 over `"<svcPortName><protocol>"` (and
//! `"<endpoint>"` for KUBE-SEP), so that the names match upstream's byte for byte and tools and
//! humans used to kube-proxy find their way.

use sha2::{Digest, Sha256};

use crate::endpoint::EndpointInfo;
use crate::service_port::ServicePortName;

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub const KUBE_PROXY_CANARY: &str = "KUBE-PROXY-CANARY";

/// Prefixes of the per-Service and per-endpoint chains (all in the nat table).
pub const SERVICE_CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first 16 base32 characters of SHA-256(`input`).
fn hash16(input: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in input {
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    // 16 characters are 80 bits: the first 10 bytes.
    let mut out = String::with_capacity(16);
    let mut acc: u64 = 0;
    let mut bits = 0;
    for b in &digest[..10] {
        acc = (acc << 8) | *b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// The base of a Service port's chain names.
pub fn service_port_hash(spn: &ServicePortName) -> String {
    hash16(&[&spn.to_string(), spn.protocol.lower()])
}

/// `KUBE-SVC-<hash>`: the "Cluster" policy chain.
pub fn cluster_policy_chain(hash: &str) -> String {
    format!("KUBE-SVC-{hash}")
}

/// `KUBE-SVL-<hash>`: the "Local" policy chain.
pub fn local_policy_chain(hash: &str) -> String {
    format!("KUBE-SVL-{hash}")
}

/// `KUBE-EXT-<hash>`: where external traffic (NodePort, LB, external IPs) goes first.
pub fn external_chain(hash: &str) -> String {
    format!("KUBE-EXT-{hash}")
}

/// `KUBE-FW-<hash>`: the load balancer source-range firewall.
pub fn firewall_chain(hash: &str) -> String {
    format!("KUBE-FW-{hash}")
}

/// `KUBE-SEP-<hash>`: one endpoint of one Service port.
pub fn endpoint_chain(spn: &ServicePortName, ep: &EndpointInfo) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&[&spn.to_string(), spn.protocol.lower(), &ep.to_string()])
    )
}

/// Whether a chain is one of the per-Service or per-endpoint chains.
pub fn is_service_chain(name: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_port::{NamespacedName, Protocol};

    #[test]
    fn names_match_upstream() {
        // Values from upstream's proxier_test.go.
        let spn = ServicePortName {
            service: NamespacedName {
                namespace: "ns1".into(),
                name: "svc1".into(),
            },
            port: "p80".into(),
            protocol: Protocol::Tcp,
        };
        let h = service_port_hash(&spn);
        assert_eq!(cluster_policy_chain(&h), "KUBE-SVC-XPGD46QRK7WJZT7O");
        let ep = EndpointInfo {
            ip: "10.180.0.1".parse().unwrap(),
            port: 80,
            ready: true,
            serving: true,
            terminating: false,
            is_local: false,
        };
        assert_eq!(endpoint_chain(&spn, &ep), "KUBE-SEP-SXIVWICOYRO3J4NJ");
        assert!(is_service_chain("KUBE-SEP-SXIVWICOYRO3J4NJ"));
        assert!(!is_service_chain("KUBE-SERVICES"));
    }
}
