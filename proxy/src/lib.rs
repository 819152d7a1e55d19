//! Service proxy (iptables, ipvs, nftables, eBPF backends): not built yet; see the proxy issue.
