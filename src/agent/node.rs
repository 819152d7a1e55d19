//! The node agent: what every node of a Capstan cluster runs, `capstan server`'s own node and each
//! `capstan agent`'s — the kubelet with the built-in runtime, the service proxy, the node's
//! cluster DNS server, host-gw routes to the other nodes' pods, and the default bridge CNI
//! configuration once node IPAM has given the node a podCIDR (k3s' agent, in one process).
//!
//! The two callers differ only in how the node reaches the API server ([`Access`]): the server's
//! node gets a `system:node:<name>` client certificate from the cluster CA at every start (its
//! proxy `system:kube-proxy`'s); an agent's kubelet bootstraps a client certificate with the
//! join token (TLS bootstrap) and the proxy, DNS server and route controller then use the
//! kubelet's kubeconfig, as `system:node:<name>`. And in where the kubelet's serving certificate
//! comes from ([`Serving`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::server::cni_config;
use crate::server::layout::{HostRecord, Layout};

/// The node's flags, shared by `capstan server` and `capstan agent`. Every host-global thing
/// (ports, bridge, cgroup root, CNI dirs) has one, so nodes can run side by side (tests and the
/// lab do).
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address (the kubelet's --node-ip; default: the host's primary address). Give
    /// it when the default route is not on the network the nodes share.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// CIDR the nodes' podCIDRs are allocated from (the proxy's --cluster-cidr).
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Registry host configuration in containerd's layout (`DIR/<host>/hosts.toml`), e.g. a
    /// local mirror for docker.io.
    #[arg(long)]
    pub registry_config_dir: Option<PathBuf>,
    /// Where CNI configuration is read from; the default bridge configuration is written here when
    /// it holds none.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/opt/cni/bin,/usr/lib/cni"
    )]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Where CNI results are cached (default `DIR/agent/cni-cache`).
    #[arg(long)]
    pub cni_cache_dir: Option<PathBuf>,
    /// The bridge of the default CNI configuration.
    #[arg(long, default_value = "cni0")]
    pub bridge_name: String,
    /// The cgroup pods (and the runtime's supervisors) go under; created when missing.
    #[arg(long, default_value = "/")]
    pub cgroup_root: String,
    /// The kubelet server's HTTPS port (0 turns it off).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// The kubelet's plain-HTTP /healthz port on 127.0.0.1 (0 turns it off).
    #[arg(long, default_value_t = 10248)]
    pub kubelet_healthz_port: u16,
    /// The proxy's /healthz address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub proxy_healthz_bind_address: SocketAddr,
    /// The proxy's /metrics address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub proxy_metrics_bind_address: SocketAddr,
    /// The cluster DNS Service's IP (`kube-dns`, the kubelet's clusterDNS); default the service
    /// CIDR's 10th address (10.43.0.10 with the server's default --service-cidr).
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The port the node's DNS server listens on, UDP and TCP, on the node's address (0: a free
    /// one; the `kube-dns` Service reaches it through the node's EndpointSlice either way).
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// No built-in cluster DNS (no DNS server; pods get no clusterDNS).
    #[arg(long)]
    pub disable_cluster_dns: bool,
    /// Program routes to the other nodes' podCIDRs via their addresses (flannel's host-gw);
    /// turn off when the cluster brings its own pod network.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub host_gw_routes: bool,
    /// An extra kubelet flag, `name=value` (k3s's `--kubelet-arg`; repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kubelet_arg: Vec<String>,
    /// An extra proxy flag, `name=value` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kube_proxy_arg: Vec<String>,
}

/// How the node's components reach the API server.
pub enum Access {
    /// The server's own node: a client certificate for `system:node:<name>` (group
    /// `system:nodes`) issued from the cluster CA in `server_dir` at every start, written to
    /// `kubeconfig` for the API at `url`; the proxy uses `proxy` (`system:kube-proxy`).
    FromCa {
        server_dir: PathBuf,
        url: String,
        kubeconfig: PathBuf,
        proxy: PathBuf,
    },
    /// TLS bootstrap: the kubelet requests a client certificate with `bootstrap` and writes
    /// `kubeconfig`, renewing the certificate before expiry; the rest use `kubeconfig`.
    Bootstrap {
        bootstrap: PathBuf,
        kubeconfig: PathBuf,
    },
}

impl Access {
    fn kubeconfig(&self) -> &Path {
        match self {
            Access::FromCa { kubeconfig: k, .. } | Access::Bootstrap { kubeconfig: k, .. } => k,
        }
    }

    fn proxy_kubeconfig(&self) -> &Path {
        match self {
            Access::FromCa { proxy, .. } => proxy,
            _ => self.kubeconfig(),
        }
    }
}

/// Where the kubelet's serving certificate comes from.
pub enum Serving {
    /// Given with `--kubelet-arg tls-cert-file=…` (or self-signed by the kubelet).
    AsConfigured,
    /// Issued at every start from the cluster CA in this server dir (the server's own node).
    FromCa(PathBuf),
    /// Requested through the Certificates API (`serverTLSBootstrap`), approved by the
    /// controller-manager for the node's own names and addresses.
    Bootstrap,
}

/// Whether the extra kubelet flags name a serving certificate.
pub fn has_own_serving_cert(args: &NodeArgs) -> bool {
    args.kubelet_arg
        .iter()
        .any(|a| a.trim_start_matches('-').starts_with("tls-cert-file"))
}

/// The `n`th address of an IPv4 CIDR.
pub fn nth_address(cidr: &str, n: u32) -> anyhow::Result<IpAddr> {
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

/// The cluster DNS IP: `--cluster-dns`, else the service CIDR's 10th address (kubeadm's).
pub fn cluster_dns_ip(args: &NodeArgs, service_cidr: &str) -> anyhow::Result<IpAddr> {
    match args.cluster_dns {
        Some(ip) => Ok(ip),
        None => nth_address(service_cidr, 10).context("--service-cidr"),
    }
}

/// `name=value` (or `--name=value`) as a flag.
pub fn extra_flag(arg: &str) -> String {
    format!("--{}", arg.trim_start_matches('-'))
}

/// Resolves when `rx` says stop.
pub async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The components' tasks: a name and how each ended.
pub type Tasks = tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>;

/// The in-process kubelet's serving certificate and key, under its root dir.
const KUBELET_SERVING_CERT: &str = "kubelet-serving.crt";
const KUBELET_SERVING_KEY: &str = "kubelet-serving.key";

/// Everything [`start`] needs.
pub struct Start<'a> {
    pub args: &'a NodeArgs,
    pub layout: &'a Layout,
    pub access: Access,
    pub serving: Serving,
    /// The cluster DNS IP the kubelet gives pods (`None`: cluster DNS is off).
    pub cluster_dns: Option<IpAddr>,
    /// The record of host-global state, updated with the node name, podCIDR and CNI config.
    pub record: HostRecord,
    pub started: Instant,
}

/// Starts the node's components as tasks in `tasks`, stopped by `stop`. Returns the node's
/// name once the kubelet has its client (for an agent, after TLS bootstrap).
pub async fn start(
    s: Start<'_>,
    tasks: &mut Tasks,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let Start {
        args,
        layout,
        access,
        serving,
        cluster_dns,
        mut record,
        started,
    } = s;
    let cni_cache_dir = record.cni_cache_dir.clone();

    // The kubelet with the built-in runtime.
    let mut kubelet_args = vec![
        format!("--kubeconfig={}", access.kubeconfig().display()),
        format!("--root-dir={}", layout.kubelet_root().display()),
        format!("--pod-logs-dir={}", layout.pod_logs().display()),
        format!("--pod-manifest-path={}", layout.static_pods().display()),
        format!("--cgroup-root={}", args.cgroup_root),
        format!("--cni-conf-dir={}", args.cni_conf_dir.display()),
        format!("--cni-cache-dir={}", cni_cache_dir.display()),
        format!("--port={}", args.kubelet_port),
        format!("--healthz-port={}", args.kubelet_healthz_port),
        format!("--cluster-domain={}", args.cluster_domain),
    ];
    if let Access::Bootstrap { bootstrap, .. } = &access {
        kubelet_args.push(format!("--bootstrap-kubeconfig={}", bootstrap.display()));
        kubelet_args.push("--rotate-certificates=true".into());
    }
    if let Some(ip) = cluster_dns {
        kubelet_args.push(format!("--cluster-dns={ip}"));
    }
    for d in &args.cni_bin_dir {
        kubelet_args.push(format!("--cni-bin-dir={}", d.display()));
    }
    if let Some(name) = &args.node_name {
        kubelet_args.push(format!("--hostname-override={name}"));
    }
    if let Some(ip) = args.node_ip {
        kubelet_args.push(format!("--node-ip={ip}"));
    }
    if let Some(d) = &args.registry_config_dir {
        kubelet_args.push(format!("--registry-config-dir={}", d.display()));
    }
    let (serving_cert, serving_key) = (
        layout.kubelet_root().join(KUBELET_SERVING_CERT),
        layout.kubelet_root().join(KUBELET_SERVING_KEY),
    );
    match &serving {
        Serving::FromCa(_) => {
            kubelet_args.push(format!("--tls-cert-file={}", serving_cert.display()));
            kubelet_args.push(format!("--tls-private-key-file={}", serving_key.display()));
        }
        Serving::Bootstrap => kubelet_args.push("--rotate-server-certificates=true".into()),
        Serving::AsConfigured => {}
    }
    kubelet_args.extend(args.kubelet_arg.iter().map(|a| extra_flag(a)));
    let kubelet_args: kubelet::config::KubeletArgs = crate::parse_args("kubelet", kubelet_args)?;
    std::fs::create_dir_all(layout.static_pods())?;
    let kubelet_config = kubelet::config::Config::resolve(&kubelet_args)?;
    let node_name = kubelet_config.node_name.clone();
    let node_ip = (kubelet_config.node_ips.first().copied())
        .unwrap_or_else(apiserver_lite::server::primary_address);
    if let Serving::FromCa(server_dir) = &serving {
        write_kubelet_serving(
            server_dir,
            layout,
            &kubelet_config,
            &serving_cert,
            &serving_key,
        )?;
    }
    if let Access::FromCa {
        server_dir,
        url,
        kubeconfig,
        ..
    } = &access
    {
        apiserver_lite::pki::Pki::load_ca(server_dir)?
            .write_kubeconfig(
                kubeconfig,
                url,
                &format!("system:node:{node_name}"),
                &["system:nodes"],
            )
            .with_context(|| format!("writing {}", kubeconfig.display()))?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "kubelet configuration resolved");
    record.node_name = node_name.clone();
    record.save(layout)?;
    // For an agent this is where the kubelet bootstraps its client certificate.
    let kubelet = kubelet::Kubelet::new(kubelet_config).await?;
    let inputs = kubelet.inputs().clone();
    let rx = stop.clone();
    tasks.spawn(async move {
        (
            "kubelet",
            kubelet.run(stopped(rx)).await.map_err(anyhow::Error::from),
        )
    });
    let kubeconfig = access.kubeconfig().to_path_buf();
    let client = machinery::client::build_client(
        Some(&kubeconfig),
        &machinery::client::user_agent("node-agent"),
    )
    .await?;

    // Cluster DNS: this node's DNS server on the node's address, its address in the node's
    // EndpointSlice of the `kube-dns` Service.
    if cluster_dns.is_some() {
        let mut options =
            dns::Options::new(&node_name, SocketAddr::new(node_ip, args.cluster_dns_port));
        options.domain = args.cluster_domain.clone();
        let (client, rx) = (client.clone(), stop.clone());
        tasks.spawn(async move { ("cluster DNS", run_dns(client, options, stopped(rx)).await) });
    }

    // The service proxy.
    let mut proxy_args = vec![
        format!("--kubeconfig={}", access.proxy_kubeconfig().display()),
        format!("--hostname-override={node_name}"),
        format!("--cluster-cidr={}", args.cluster_cidr),
        format!("--healthz-bind-address={}", args.proxy_healthz_bind_address),
        format!("--metrics-bind-address={}", args.proxy_metrics_bind_address),
    ];
    proxy_args.extend(args.kube_proxy_arg.iter().map(|a| extra_flag(a)));
    let proxy_args: proxy::ProxyArgs = crate::parse_args("proxy", proxy_args)?;
    let proxy_config = proxy::Config::resolve(&proxy_args)?;
    let rx = stop.clone();
    tasks.spawn(async move { ("proxy", proxy::run(proxy_config, stopped(rx)).await) });

    // Routes to the other nodes' pods (host-gw).
    if args.host_gw_routes {
        let (c, n, rx) = (client.clone(), node_name.clone(), stop.clone());
        tasks.spawn(async move {
            (
                "host-gw",
                crate::agent::hostgw::run_here(c, n, stopped(rx)).await,
            )
        });
    }

    // The node's pod network, once it has a podCIDR.
    let network = {
        let layout = layout.clone();
        let bridge = args.bridge_name.clone();
        let conf_dir = args.cni_conf_dir.clone();
        let node_name = node_name.clone();
        async move {
            let cidr = cni_config::wait_pod_cidr(&client, &node_name).await;
            record.pod_cidr = Some(cidr.clone());
            if !cni_config::has_config(&conf_dir) {
                let config = cni_config::bridge_config(&bridge, &cidr, &layout.cni_networks());
                let path = cni_config::write(&conf_dir, &config)?;
                tracing::info!(file = %path.display(), pod_cidr = %cidr, "wrote the default CNI configuration");
                record.cni_config_written = Some(path);
            }
            record.save(&layout)?;
            inputs.recheck_runtime();
            tracing::debug!(elapsed = ?started.elapsed(), "pod network configured");
            anyhow::Ok(())
        }
    };
    tasks.spawn(async move { ("pod network", network.await) });
    Ok(node_name)
}

/// Runs the node's DNS server until `stop`.
async fn run_dns(
    client: kube::Client,
    options: dns::Options,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let server = dns::start(client, options, stop)
        .await
        .context("the cluster DNS server (see --cluster-dns-port, --disable-cluster-dns)")?;
    tracing::info!(addr = %server.local_addr, "cluster DNS ready");
    server.stopped().await;
    Ok(())
}

/// Issues the kubelet's serving certificate from the cluster CA for its node name and
/// addresses (`--node-ip`, or the host's primary address), re-issued at every start as the API
/// server's own.
fn write_kubelet_serving(
    server_dir: &Path,
    layout: &Layout,
    kubelet: &kubelet::config::Config,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<()> {
    let pki = apiserver_lite::pki::Pki::load_ca(server_dir)?;
    let mut ips = kubelet.node_ips.clone();
    if ips.is_empty() {
        ips.push(apiserver_lite::server::primary_address());
    }
    let (cert, key) = pki.issue_kubelet_serving(&kubelet.node_name, &ips)?;
    std::fs::create_dir_all(layout.kubelet_root())?;
    std::fs::write(cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(key_path, &key)
}

/// Writes a file only root can read (it holds a credential).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Waits until a component fails (an error ends the process); finished tasks that succeeded
/// (the pod network set-up) are fine.
pub async fn wait_tasks(tasks: &mut Tasks) -> anyhow::Result<()> {
    loop {
        match tasks.join_next().await {
            None => return Ok(()),
            Some(Ok((_, Ok(())))) => {}
            Some(Ok((name, Err(e)))) => return Err(e.context(name)),
            Some(Err(e)) => return Err(anyhow::anyhow!("a component panicked: {e}")),
        }
    }
}

/// Stops the components: the stop signal first, then whatever has not ended within 3 s is
/// aborted.
pub async fn stop_tasks(tasks: &mut Tasks, stop_tx: &tokio::sync::watch::Sender<bool>) {
    let _ = stop_tx.send(true);
    let stopping = Instant::now();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        while let Some(done) = tasks.join_next().await {
            if let Ok((name, _)) = done {
                tracing::debug!(component = name, elapsed = ?stopping.elapsed(), "stopped");
            }
        }
    })
    .await;
    tasks.abort_all();
}

/// Makes the cgroup `path` in every hierarchy, with its parent's cpuset (an empty cpuset takes
/// no tasks). Returns whether it created it anywhere.
pub fn make_cgroup_root(path: &str) -> bool {
    let rel = path.trim_matches('/');
    if rel.is_empty() {
        return false;
    }
    let mut created = false;
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return false;
    };
    for h in hierarchies.flatten() {
        let dir = h.path().join(rel);
        if dir.exists() || !h.path().is_dir() {
            continue;
        }
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        created = true;
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(h.path().join(f)) {
                let _ = std::fs::write(dir.join(f), v.trim());
            }
        }
    }
    created
}

/// The host record for a node starting on `layout`: this start's CNI dirs, bridge and cgroup
/// root, and what an earlier start made that uninstall must still remove.
pub fn host_record(args: &NodeArgs, layout: &Layout) -> HostRecord {
    let previous = HostRecord::load(layout).unwrap_or_default();
    let cgroup_root_created = make_cgroup_root(&args.cgroup_root) || previous.cgroup_root_created;
    HostRecord {
        node_name: previous.node_name.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_bin_dirs: args.cni_bin_dir.clone(),
        cni_cache_dir: args
            .cni_cache_dir
            .clone()
            .unwrap_or_else(|| layout.agent_dir().join("cni-cache")),
        bridge: args.bridge_name.clone(),
        cgroup_root: args.cgroup_root.clone(),
        cgroup_root_created,
        cni_config_written: previous.cni_config_written.filter(|p| p.exists()),
        pod_cidr: previous.pod_cidr,
    }
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
