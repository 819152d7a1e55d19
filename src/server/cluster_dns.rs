//! Cluster DNS for `capstan server`: the `kube-dns` Service on the cluster DNS IP (kubeadm's
//! default: the service CIDR's 10th address) and this node's built-in DNS server ([`dns`]),
//! listening on the node's address so pods reach it through the Service like upstream pods reach
//! CoreDNS; the kubelet is told the IP and domain (`--cluster-dns`, `--cluster-domain`) so pods
//! get upstream's resolv.conf.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;

use super::ServerArgs;

/// What the node's DNS server is started with.
pub struct ClusterDns {
    pub ip: IpAddr,
    pub options: dns::Options,
}

/// The `n`th address of an IPv4 CIDR.
fn nth_address(cidr: &str, n: u32) -> anyhow::Result<IpAddr> {
    let (addr, bits) = cidr
        .split_once('/')
        .with_context(|| format!("not a CIDR: {cidr}"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("not a CIDR: {cidr}"))?;
    let bits: u32 = bits
        .parse()
        .with_context(|| format!("not a CIDR: {cidr}"))?;
    anyhow::ensure!(
        bits <= 28,
        "service CIDR {cidr} is too small for a cluster DNS IP"
    );
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Ok(IpAddr::V4(Ipv4Addr::from((u32::from(addr) & mask) + n)))
}

/// The cluster DNS IP: `--cluster-dns`, else the service CIDR's 10th address.
pub fn cluster_dns_ip(args: &ServerArgs) -> anyhow::Result<IpAddr> {
    match args.cluster_dns {
        Some(ip) => Ok(ip),
        None => nth_address(&args.service_cidr, 10).context("--service-cidr"),
    }
}

/// The kubelet's DNS flags (the domain always; the server's address unless DNS is off).
pub fn kubelet_flags(args: &ServerArgs) -> anyhow::Result<Vec<String>> {
    let mut flags = vec![format!("--cluster-domain={}", args.cluster_domain)];
    if !args.disable_cluster_dns {
        flags.push(format!("--cluster-dns={}", cluster_dns_ip(args)?));
    }
    Ok(flags)
}

/// The node's DNS server settings, or `None` when cluster DNS is off.
pub fn config(
    args: &ServerArgs,
    node_name: &str,
    node_ip: IpAddr,
) -> anyhow::Result<Option<ClusterDns>> {
    if args.disable_cluster_dns {
        return Ok(None);
    }
    let mut options = dns::Options::new(node_name, SocketAddr::new(node_ip, args.cluster_dns_port));
    options.domain = args.cluster_domain.clone();
    Ok(Some(ClusterDns {
        ip: cluster_dns_ip(args)?,
        options,
    }))
}

/// Keeps the `kube-dns` Service and runs the node's DNS server until `stop`.
pub async fn run(
    client: kube::Client,
    config: ClusterDns,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The API server has just started: retry briefly rather than fail the whole server.
    let mut tries = 0;
    loop {
        match dns::kube_dns::ensure_service(&client, config.ip).await {
            Ok(()) => break,
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::debug!(error = %e, "keeping the kube-dns Service; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("the kube-dns Service"),
        }
    }
    let server = dns::start(client, config.options, stop)
        .await
        .context("the cluster DNS server (see --cluster-dns-port, --disable-cluster-dns)")?;
    tracing::info!(addr = %server.local_addr, cluster_ip = %config.ip, "cluster DNS ready");
    server.stopped().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenth_address() {
        assert_eq!(
            nth_address("10.43.0.0/16", 10).unwrap().to_string(),
            "10.43.0.10"
        );
        assert_eq!(
            nth_address("10.96.5.7/24", 10).unwrap().to_string(),
            "10.96.5.10"
        );
        assert!(nth_address("10.96.0.0/30", 10).is_err());
        assert!(nth_address("bogus", 10).is_err());
    }
}
