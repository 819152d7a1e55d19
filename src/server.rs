//! `capstan server`: a single-node cluster in one process — apiserver-lite on the embedded store,
//! the controller-manager (every default controller, node IPAM on), the scheduler, and this host's
//! node agent (`agent/node.rs`: the kubelet with the built-in runtime, the service proxy, the
//! node's DNS server, host-gw routes). `capstan agent` joins more nodes to it.
//!
//! Each component runs through its own library entry point on one tokio runtime, talking to the
//! API server over loopback exactly as the separate `capstan <component>` processes would, with
//! identities of their own (`system:kube-controller-manager`, `system:kube-scheduler`,
//! `system:kube-proxy`, `system:node:<name>`). The server adds what a cluster needs around them:
//! the join token ([`bootstrap_token`]) and the signed cluster-info agents discover it by
//! ([`cluster_info`]), the `kube-dns` Service ([`cluster_dns`]), a pidfile and a record of what
//! it made on the host ([`layout`]) for `capstan uninstall`.
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

use crate::agent::node::{self, NodeArgs};
use layout::Layout;

/// `capstan server`'s flags. Every host-global thing (ports, bridge, cgroup root, CNI dirs, data
/// dir) has one, so servers can run side by side (tests do).
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Everything the server keeps: the store (`DIR/server/`), the admin kubeconfig
    /// (`DIR/admin.kubeconfig`), the join token (`DIR/server/token`), the node agent (`DIR/agent/`).
    #[arg(long, default_value = "/var/lib/capstan")]
    pub data_dir: PathBuf,
    /// Address and port the API server listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Address advertised to the cluster (the `kubernetes` Service's endpoint); defaults to the
    /// host's primary address.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// CIDR Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Port range for NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// The controller-manager's /healthz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub controller_manager_bind_address: SocketAddr,
    /// The scheduler's /healthz and /metrics address.
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub scheduler_bind_address: SocketAddr,
    /// How long events are kept (e.g. 1h, 30m).
    #[arg(long, default_value = "1h")]
    pub event_ttl: String,
    /// Seconds pods tolerate a not-ready node (the API server's DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node (the API server's DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
    /// An extra controller-manager flag, `name=value` (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    pub kube_controller_manager_arg: Vec<String>,
    /// The server's own node.
    #[command(flatten)]
    pub node: NodeArgs,
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
    let record = node::host_record(&args.node, &layout);
    record.save(&layout)?;

    // The in-process kubelet serves a certificate of the cluster CA unless given its own.
    let mint_kubelet_serving = !node::has_own_serving_cert(&args.node);

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
        default_toleration_seconds: apiserver_lite::server::DefaultTolerationSeconds {
            not_ready: args.default_not_ready_toleration_seconds,
            unreachable: args.default_unreachable_toleration_seconds,
        },
        // TLS only, with a cluster CA under DIR/server/. The controller-manager, scheduler, proxy
        // and kubelet use identities of their own (below). The
        // kubelets' serving certificates come from the cluster CA (the server's own below, the
        // agents' through CSRs) unless one is given, so the API server verifies them.
        security: apiserver_lite::auth::SecurityOptions {
            files: apiserver_lite::pki::PkiFiles {
                kubelet_certificate_authority: mint_kubelet_serving
                    .then(|| layout.server_dir().join(apiserver_lite::pki::CA_CERT)),
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let api_url = api_config.local_url();
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
    let mut tasks = node::Tasks::new();

    // The controller-manager, every default controller, node IPAM on the cluster CIDR.
    let mut cm_args = vec![
        format!(
            "--kubeconfig={}",
            layout
                .server_dir()
                .join("controller-manager.kubeconfig")
                .display()
        ),
        format!("--bind-address={}", args.controller_manager_bind_address),
        "--leader-elect=false".into(),
        // kubeadm's: the bootstrap signer keeps cluster-info signed for the join token.
        "--controllers=*,bootstrapsigner".into(),
        format!("--cluster-cidr={}", args.node.cluster_cidr),
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
            .map(|a| node::extra_flag(a)),
    );
    let cm_options: controllers::Options = crate::parse_args("controller-manager", cm_args)?;
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
        kubeconfig: Some(layout.server_dir().join("scheduler.kubeconfig")),
        config: Some(layout.scheduler_config()),
        bind_address: args.scheduler_bind_address,
    };
    let rx = stop_rx.clone();
    tasks.spawn(async move {
        (
            "scheduler",
            scheduler_lite::run(sched_options, node::stopped(rx)).await,
        )
    });

    // Cluster DNS: the kube-dns Service (each node runs a DNS server behind it).
    let dns_ip = if args.node.disable_cluster_dns {
        None
    } else {
        let ip = node::cluster_dns_ip(&args.node, &args.service_cidr)?;
        let client = client.clone();
        tasks.spawn(async move { ("kube-dns Service", cluster_dns::ensure(client, ip).await) });
        Some(ip)
    };

    // This host's node.
    let start = node::Start {
        args: &args.node,
        layout: &layout,
        access: node::Access::FromCa {
            server_dir: layout.server_dir(),
            url: api_url,
            kubeconfig: layout.agent_dir().join("kubelet.kubeconfig"),
            proxy: layout.server_dir().join("proxy.kubeconfig"),
        },
        serving: if mint_kubelet_serving {
            node::Serving::FromCa(layout.server_dir())
        } else {
            node::Serving::AsConfigured
        },
        cluster_dns: dns_ip,
        record,
        started,
    };
    node::start(start, &mut tasks, stop_rx).await?;

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
        r = node::wait_tasks(&mut tasks) => r,
    };
    controller_manager.abort();
    // Components that take the stop signal end at once; the rest are dropped with the tasks.
    node::stop_tasks(&mut tasks, &stop_tx).await;
    drop(api);
    result
}

/// The pidfile of a running server or agent: refuses a second one on the same data dir, removed
/// when it ends.
pub struct Pidfile(PathBuf);

impl Pidfile {
    pub fn take(path: &Path) -> anyhow::Result<Pidfile> {
        if let Some(pid) = read_pid(path) {
            if pid != std::process::id() && is_capstan(pid) {
                anyhow::bail!(
                    "another capstan server or agent (pid {pid}) runs on this data dir ({})",
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

/// Whether `pid` is a live `capstan server` or `capstan agent` (not a recycled pid of something
/// else).
pub fn is_capstan(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        matches!(
            c.split(|b| *b == 0).nth(1),
            Some(b"server") | Some(b"agent")
        )
    })
}
