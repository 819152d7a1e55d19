//! `capstan server`: a single-node cluster in one process — apiserver-lite on the embedded store,
//! the controller-manager (every default controller, node IPAM on), the scheduler, and this host's
//! node agent: the kubelet with the built-in runtime and the service proxy (iptables).
//!
//! Each component runs through its own library entry point on one tokio runtime, talking to the
//! API server over loopback with the admin kubeconfig, exactly as the separate `capstan <component>`
//! processes would. The server adds what a cluster needs around them: the join token
//! ([`bootstrap_token`]), the node's default bridge CNI configuration once node IPAM gave it a
//! podCIDR ([`cni_config`]), a pidfile and a record of what it made on the host ([`layout`]) for
//! `capstan uninstall`.
//!
//! SIGTERM (or Ctrl-C) stops every component and exits; pods keep running (their supervisors
//! are processes of their own) and the next start adopts them. Leader election is off for the
//! controller-manager and the scheduler: one process holds them all, and an old lease would
//! otherwise hold a restarted server back for the lease duration.

pub mod bootstrap_token;
pub mod cluster_dns;
pub mod cluster_info;
pub mod cni_config;
pub mod layout;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use layout::{HostRecord, Layout};

/// `capstan server`'s flags. Every host-global thing (ports, bridge, cgroup root, CNI dirs, data
/// dir) has one, so servers can run side by side (tests do).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Everything the server keeps: the store (`DIR/server/`), the admin kubeconfig
    /// (`DIR/admin.kubeconfig`), the join token (`DIR/server/token`), the node agent (`DIR/agent/`).
    #[arg(long, default_value = "/var/lib/capstan")]
    pub data_dir: PathBuf,
    /// The node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Address and port the API server listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Address advertised to the cluster (the `kubernetes` Service's endpoint); defaults to the
    /// host's primary address.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// CIDR the nodes' podCIDRs are allocated from.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// CIDR Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Port range for NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
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
    /// The controller-manager's /healthz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub controller_manager_bind_address: SocketAddr,
    /// The scheduler's /healthz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub scheduler_bind_address: SocketAddr,
    /// The proxy's /healthz address.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub proxy_healthz_bind_address: SocketAddr,
    /// The proxy's /metrics address.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub proxy_metrics_bind_address: SocketAddr,
    /// How long events are kept (e.g. 1h, 30m).
    #[arg(long, default_value = "1h")]
    pub event_ttl: String,
    /// The cluster DNS Service's IP (`kube-dns`, the kubelet's clusterDNS); default the service
    /// CIDR's 10th address.
    #[arg(long)]
    pub cluster_dns: Option<IpAddr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The port the node's DNS server listens on, UDP and TCP, on the node's address (0: a free
    /// one; the `kube-dns` Service reaches it through the node's EndpointSlice either way).
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// No built-in cluster DNS (no `kube-dns` Service, no DNS server, pods get no clusterDNS).
    #[arg(long)]
    pub disable_cluster_dns: bool,
    /// Program routes to the other nodes' podCIDRs via their addresses (flannel's host-gw);
    /// turn off when the cluster brings its own pod network.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub host_gw_routes: bool,
    /// An extra kubelet flag, `name=value` (k3s's `--kubelet-arg`; repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kubelet_arg: Vec<String>,
    /// An extra controller-manager flag, `name=value` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kube_controller_manager_arg: Vec<String>,
    /// An extra proxy flag, `name=value` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kube_proxy_arg: Vec<String>,
}

/// The in-process kubelet's serving certificate and key, under its root dir.
const KUBELET_SERVING_CERT: &str = "kubelet-serving.crt";
const KUBELET_SERVING_KEY: &str = "kubelet-serving.key";

/// Issues the kubelet's serving certificate from the cluster CA for its node name and
/// addresses (`--node-ip`, or the host's primary address), re-issued at every start as the API
/// server's own.
fn write_kubelet_serving(
    layout: &Layout,
    kubelet: &kubelet::config::Config,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
) -> anyhow::Result<()> {
    let pki = apiserver_lite::pki::Pki::load_ca(&layout.server_dir())?;
    let mut ips = kubelet.node_ips.clone();
    if ips.is_empty() {
        ips.push(apiserver_lite::server::primary_address());
    }
    let (cert, key) = pki.issue_kubelet_serving(&kubelet.node_name, &ips)?;
    std::fs::create_dir_all(layout.kubelet_root())?;
    std::fs::write(cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(key_path)
            .with_context(|| format!("writing {}", key_path.display()))?;
        f.write_all(key.as_bytes())?;
    }
    Ok(())
}

/// `name=value` (or `--name=value`) as a flag.
fn extra_flag(arg: &str) -> String {
    format!("--{}", arg.trim_start_matches('-'))
}

/// Parses a component's clap arguments from a command line we build.
fn parse_args<T: clap::Args>(program: &str, args: Vec<String>) -> anyhow::Result<T> {
    #[derive(Parser)]
    struct Wrap<A: clap::Args> {
        #[command(flatten)]
        inner: A,
    }
    let argv = std::iter::once(program.to_string()).chain(args);
    Wrap::<T>::try_parse_from(argv)
        .map(|w| w.inner)
        .map_err(|e| anyhow::anyhow!("{program} flags: {e}"))
}

/// Resolves when `rx` says stop.
async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs the server until SIGTERM or Ctrl-C (`shutdown`).
pub async fn run(args: ServerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = std::path::absolute(&args.data_dir).context("--data-dir")?;
    let layout = Layout::new(&data_dir);
    std::fs::create_dir_all(layout.server_dir())
        .with_context(|| format!("creating {}", layout.server_dir().display()))?;
    let _pidfile = Pidfile::take(&layout.pidfile())?;

    // The record of host-global state comes first: an uninstall after a failed start must know
    // what to look for.
    let previous = HostRecord::load(&layout).unwrap_or_default();
    let cgroup_root_created = make_cgroup_root(&args.cgroup_root) || previous.cgroup_root_created;
    let cni_cache_dir = args
        .cni_cache_dir
        .clone()
        .unwrap_or_else(|| layout.agent_dir().join("cni-cache"));
    let mut record = HostRecord {
        node_name: previous.node_name.clone(),
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_bin_dirs: args.cni_bin_dir.clone(),
        cni_cache_dir: cni_cache_dir.clone(),
        bridge: args.bridge_name.clone(),
        cgroup_root: args.cgroup_root.clone(),
        cgroup_root_created,
        cni_config_written: previous.cni_config_written.filter(|p| p.exists()),
        pod_cidr: previous.pod_cidr,
    };
    record.save(&layout)?;

    // The in-process kubelet serves a certificate of the cluster CA unless given its own.
    let mint_kubelet_serving = !args
        .kubelet_arg
        .iter()
        .any(|a| a.trim_start_matches('-').starts_with("tls-cert-file"));

    // The API server: serving once this returns.
    let advertise = args
        .advertise_address
        .unwrap_or_else(apiserver_lite::server::primary_address);
    let api_config = apiserver_lite::server::Config {
        advertise_address: advertise,
        data_dir: data_dir.clone(),
        listen: args.listen,
        service_cidr: args.service_cidr.clone(),
        node_port_range: args.service_node_port_range.clone(),
        event_ttl: crate::parse_duration(&args.event_ttl).context("--event-ttl")?,
        // TLS only, with a cluster CA under DIR/server/; the in-process components use the admin
        // kubeconfig for now (their own identities are the security issue's next part). The
        // kubelet's serving certificate comes from the cluster CA (below) unless one is given,
        // so the API server verifies it.
        security: apiserver_lite::auth::SecurityOptions {
            files: apiserver_lite::pki::PkiFiles {
                kubelet_certificate_authority: mint_kubelet_serving
                    .then(|| layout.server_dir().join(apiserver_lite::pki::CA_CERT)),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let api = apiserver_lite::server::Server::start(api_config)
        .await
        .map_err(anyhow::Error::msg)?;
    let kubeconfig = layout.kubeconfig();
    tracing::info!(addr = %api.local_addr, elapsed = ?started.elapsed(), "API server serving");
    let client = machinery::client::build_client(
        Some(&kubeconfig),
        &machinery::client::user_agent("server"),
    )
    .await?;
    tracing::debug!(elapsed = ?started.elapsed(), "API client built");
    let token = bootstrap_token::load_or_create(&layout.token())?;
    bootstrap_token::ensure_secret(&client, &token).await?;
    cluster_info::ensure_for(&client, &layout.server_dir(), api.local_addr, advertise).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "join token ready");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)> =
        tokio::task::JoinSet::new();

    // The controller-manager, every default controller, node IPAM on the cluster CIDR.
    let mut cm_args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--bind-address={}", args.controller_manager_bind_address),
        "--leader-elect=false".into(),
        // kubeadm's: the bootstrap signer keeps cluster-info signed for the join token.
        "--controllers=*,bootstrapsigner".into(),
        format!("--cluster-cidr={}", args.cluster_cidr),
        "--allocate-node-cidrs=true".into(),
        format!("--node-cidr-mask-size={}", args.node_cidr_mask_size),
        format!("--local-path-dir={}", layout.local_path_storage().display()),
        // The cluster CA signs the kubelets' client and serving certificates (TLS bootstrap).
        format!(
            "--cluster-signing-cert-file={}",
            layout
                .server_dir()
                .join(apiserver_lite::pki::CA_CERT)
                .display()
        ),
        format!(
            "--cluster-signing-key-file={}",
            layout
                .server_dir()
                .join(apiserver_lite::pki::CA_KEY)
                .display()
        ),
    ];
    cm_args.extend(
        args.kube_controller_manager_arg
            .iter()
            .map(|a| extra_flag(a)),
    );
    let cm_options: controllers::Options = parse_args("controller-manager", cm_args)?;
    // It takes no stop signal: it is aborted at shutdown.
    let controller_manager = tasks.spawn(async move {
        (
            "controller-manager",
            controllers::controller_manager::run(cm_options).await,
        )
    });

    // The scheduler, its configuration only turning leader election off.
    std::fs::write(
        layout.scheduler_config(),
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: false\n",
    )?;
    let sched_options = scheduler_lite::Options {
        kubeconfig: Some(kubeconfig.clone()),
        config: Some(layout.scheduler_config()),
        bind_address: args.scheduler_bind_address,
    };
    let rx = stop_rx.clone();
    tasks.spawn(async move {
        (
            "scheduler",
            scheduler_lite::run(sched_options, stopped(rx)).await,
        )
    });

    // The kubelet with the built-in runtime.
    let mut kubelet_args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--root-dir={}", layout.kubelet_root().display()),
        format!("--pod-logs-dir={}", layout.pod_logs().display()),
        format!("--pod-manifest-path={}", layout.static_pods().display()),
        format!("--cgroup-root={}", args.cgroup_root),
        format!("--cni-conf-dir={}", args.cni_conf_dir.display()),
        format!("--cni-cache-dir={}", cni_cache_dir.display()),
        format!("--port={}", args.kubelet_port),
        format!("--healthz-port={}", args.kubelet_healthz_port),
    ];
    for d in &args.cni_bin_dir {
        kubelet_args.push(format!("--cni-bin-dir={}", d.display()));
    }
    if let Some(name) = &args.node_name {
        kubelet_args.push(format!("--hostname-override={name}"));
    }
    if let Some(d) = &args.registry_config_dir {
        kubelet_args.push(format!("--registry-config-dir={}", d.display()));
    }
    let (serving_cert, serving_key) = (
        layout.kubelet_root().join(KUBELET_SERVING_CERT),
        layout.kubelet_root().join(KUBELET_SERVING_KEY),
    );
    if mint_kubelet_serving {
        kubelet_args.push(format!("--tls-cert-file={}", serving_cert.display()));
        kubelet_args.push(format!("--tls-private-key-file={}", serving_key.display()));
    }
    kubelet_args.extend(cluster_dns::kubelet_flags(&args)?);
    kubelet_args.extend(args.kubelet_arg.iter().map(|a| extra_flag(a)));
    let kubelet_args: kubelet::config::KubeletArgs = parse_args("kubelet", kubelet_args)?;
    std::fs::create_dir_all(layout.static_pods())?;
    let kubelet_config = kubelet::config::Config::resolve(&kubelet_args)?;
    let node_name = kubelet_config.node_name.clone();
    let node_ip = (kubelet_config.node_ips.first().copied())
        .unwrap_or_else(apiserver_lite::server::primary_address);
    if mint_kubelet_serving {
        write_kubelet_serving(&layout, &kubelet_config, &serving_cert, &serving_key)?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), "kubelet configuration resolved");
    record.node_name = node_name.clone();
    record.save(&layout)?;
    // Its own client: the kubelet's user agent names its writes (field managers, audit).
    let kubelet = kubelet::Kubelet::new(kubelet_config).await?;
    let inputs = kubelet.inputs().clone();
    let rx = stop_rx.clone();
    tasks.spawn(async move {
        (
            "kubelet",
            kubelet.run(stopped(rx)).await.map_err(anyhow::Error::from),
        )
    });

    // Cluster DNS: the kube-dns Service and this node's DNS server on the node's address.
    if let Some(dns) = cluster_dns::config(&args, &node_name, node_ip)? {
        let (client, rx) = (client.clone(), stop_rx.clone());
        tasks.spawn(async move {
            (
                "cluster DNS",
                cluster_dns::run(client, dns, stopped(rx)).await,
            )
        });
    }

    // The service proxy.
    let mut proxy_args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--hostname-override={node_name}"),
        format!("--cluster-cidr={}", args.cluster_cidr),
        format!("--healthz-bind-address={}", args.proxy_healthz_bind_address),
        format!("--metrics-bind-address={}", args.proxy_metrics_bind_address),
    ];
    proxy_args.extend(args.kube_proxy_arg.iter().map(|a| extra_flag(a)));
    let proxy_args: proxy::ProxyArgs = parse_args("proxy", proxy_args)?;
    let proxy_config = proxy::Config::resolve(&proxy_args)?;
    let rx = stop_rx.clone();
    tasks.spawn(async move { ("proxy", proxy::run(proxy_config, stopped(rx)).await) });

    // Routes to the other nodes' pods (host-gw).
    if args.host_gw_routes {
        let (c, n, rx) = (client.clone(), node_name.clone(), stop_rx.clone());
        tasks.spawn(async move {
            (
                "host-gw",
                crate::agent::hostgw::run_here(c, n, stopped(rx)).await,
            )
        });
    }

    // The node's pod network, once it has a podCIDR.
    let network = {
        let client = client.clone();
        let layout = layout.clone();
        let bridge = args.bridge_name.clone();
        let conf_dir = args.cni_conf_dir.clone();
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

    println!("capstan server: API serving on {}", api.local_addr);
    println!("Point kubectl at it with:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes");
    println!("Join token: {}", layout.token().display());

    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!("capstan server: shutting down");
            Ok(())
        }
        r = wait_tasks(&mut tasks) => r,
    };
    let _ = stop_tx.send(true);
    controller_manager.abort();
    // Components that take the stop signal end at once; the rest are dropped with the tasks.
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
    drop(api);
    result
}

/// Waits until a component fails (an error ends the server); finished tasks that succeeded (the
/// pod network set-up) are fine.
async fn wait_tasks(
    tasks: &mut tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
) -> anyhow::Result<()> {
    loop {
        match tasks.join_next().await {
            None => return Ok(()),
            Some(Ok((_, Ok(())))) => {}
            Some(Ok((name, Err(e)))) => return Err(e.context(name)),
            Some(Err(e)) => return Err(anyhow::anyhow!("a component panicked: {e}")),
        }
    }
}

/// Makes the cgroup `path` in every hierarchy, with its parent's cpuset (an empty cpuset takes
/// no tasks). Returns whether it created it anywhere.
fn make_cgroup_root(path: &str) -> bool {
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

/// The pidfile of a running server: refuses a second server on the same data dir, removed when
/// the server ends.
struct Pidfile(PathBuf);

impl Pidfile {
    fn take(path: &Path) -> anyhow::Result<Pidfile> {
        if let Some(pid) = read_pid(path) {
            if pid != std::process::id() && is_capstan(pid) {
                anyhow::bail!(
                    "another capstan server (pid {pid}) runs on this data dir ({})",
                    path.display()
                );
            }
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Pidfile(path.to_path_buf()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        if read_pid(&self.0) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The pid in a pidfile.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live capstan process (not a recycled pid of something else).
pub fn is_capstan(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"server".as_slice()))
}
