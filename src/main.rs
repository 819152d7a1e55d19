//! `capstan`: one binary, one subcommand per component. Each subcommand parses its flags and
//! hands over to the library that implements it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

/// mimalloc instead of glibc's malloc: the API server's request path is allocation-heavy (JSON
/// trees), and glibc's allocator was the largest single cost in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

mod agent;
mod lab;
mod server;
mod uninstall;

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    about = "Kubernetes node agent, runtime, proxy and lean control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join this host to a cluster as a node: token discovery, TLS bootstrap, then the kubelet
    /// (built-in runtime), proxy, cluster DNS server and host-gw routes.
    Agent(Box<agent::AgentArgs>),
    /// Run apiserver-lite on the embedded store.
    Apiserver(Box<ApiserverArgs>),
    /// Run the controller-manager: leader election, then the enabled controllers.
    ControllerManager(Box<controllers::Options>),
    /// Serve the built-in container runtime as CRI v1 on a unix socket.
    Cri(CriArgs),
    /// A multi-node cluster on this machine, one network namespace per node.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Manage the built-in runtime's images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run the kubelet: upstream's flags and KubeletConfiguration file.
    Kubelet(Box<kubelet::config::KubeletArgs>),
    /// Run the service proxy (kube-proxy): upstream's flags and KubeProxyConfiguration file.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run the scheduler (kube-scheduler's framework and default plugins).
    Scheduler(SchedulerArgs),
    /// Run a single-node cluster in one process: API server, controller-manager, scheduler,
    /// kubelet (built-in runtime) and proxy.
    Server(Box<server::ServerArgs>),
    /// Stop a `capstan server` and remove every trace of it (pods, cgroups, mounts, network
    /// namespaces, iptables chains, bridge, CNI state, data dir).
    Uninstall(uninstall::UninstallArgs),
}

#[derive(clap::Args)]
struct SchedulerArgs {
    /// Kubeconfig of the API server (in-cluster configuration when absent).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address for /healthz and /metrics (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:10259")]
    bind_address: SocketAddr,
}

#[derive(clap::Args)]
struct CriArgs {
    /// Directory for everything the runtime keeps (images, snapshots, sandboxes, containers).
    #[arg(long, default_value = "/var/lib/capstan/cri")]
    root: PathBuf,
    /// Unix socket to serve CRI on.
    #[arg(long, default_value = "/run/capstan/cri.sock")]
    socket: PathBuf,
    /// Registry host configuration in containerd's layout (`DIR/<host>/hosts.toml`).
    #[arg(long)]
    registry_config_dir: Option<PathBuf>,
    /// Where the CNI network configuration is read from.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are looked for (repeatable; default /opt/cni/bin and /usr/lib/cni).
    #[arg(long)]
    cni_bin_dir: Vec<PathBuf>,
    /// Where CNI results are cached for DEL.
    #[arg(long, default_value = "/var/lib/cni")]
    cni_cache_dir: PathBuf,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load OCI image layout or docker-archive tarballs into the image store under --root.
    Import {
        /// The runtime's root directory (as given to `capstan cri --root`).
        #[arg(long, default_value = "/var/lib/capstan/cri")]
        root: PathBuf,
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ApiserverArgs {
    /// Directory for the store (`DIR/server/`) and the admin kubeconfig (`DIR/admin.kubeconfig`).
    #[arg(long, default_value = "/var/lib/capstan")]
    data_dir: PathBuf,
    /// Address and port to serve on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address advertised to the cluster (the `kubernetes` Service's endpoint); defaults to the
    /// host's primary address.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// CIDR that Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Port range for NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// How long events are kept (upstream's --event-ttl; e.g. 1h, 30m, 90s).
    #[arg(long, default_value = "1h")]
    event_ttl: String,
    /// Seconds pods tolerate a not-ready node (DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// Seconds pods tolerate an unreachable node (DefaultTolerationSeconds).
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// CA bundle trusted for client certificates, besides the cluster CA (`DIR/server/ca.crt`).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// Serving certificate (chain) instead of one issued by the cluster CA.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// Extra public keys (or certificates) that verify service-account tokens (repeatable).
    #[arg(long)]
    service_account_key_file: Vec<PathBuf>,
    /// The key that signs service-account tokens (default `DIR/server/sa.key`, made on first
    /// start).
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// The `iss` of service-account tokens.
    #[arg(long, default_value = apiserver_lite::auth::serviceaccount::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Static bearer tokens: CSV `token,user,uid[,"group1,group2"]`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (RBAC decides what it may do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Authorizers in order: AlwaysAllow, AlwaysDeny, Node, RBAC.
    #[arg(long, default_value = "Node,RBAC")]
    authorization_mode: String,
    /// Client certificate for calls to kubelets (default `DIR/server/apiserver-kubelet-client.crt`,
    /// made on first start).
    #[arg(long, requires = "kubelet_client_key")]
    kubelet_client_certificate: Option<PathBuf>,
    #[arg(long, requires = "kubelet_client_certificate")]
    kubelet_client_key: Option<PathBuf>,
    /// CA bundle that verifies kubelets' serving certificates (without it they are not
    /// verified).
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
}

/// Parses a Go-style duration (`1h`, `30m`, `90s`, `1h30m`) into seconds.
/// Parses a component's clap arguments from a command line we build.
pub(crate) fn parse_args<T: clap::Args>(program: &str, args: Vec<String>) -> anyhow::Result<T> {
    #[derive(clap::Parser)]
    struct Wrap<A: clap::Args> {
        #[command(flatten)]
        inner: A,
    }
    let argv = std::iter::once(program.to_string()).chain(args);
    Wrap::<T>::try_parse_from(argv)
        .map(|w| w.inner)
        .map_err(|e| anyhow::anyhow!("{program} flags: {e}"))
}

fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let mut total = 0i64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num
            .parse()
            .with_context(|| format!("invalid duration {s:?}"))?;
        num.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => anyhow::bail!("invalid duration {s:?}: unknown unit {c:?}"),
        };
    }
    anyhow::ensure!(num.is_empty(), "invalid duration {s:?}: missing unit");
    Ok(total)
}

async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let config = apiserver_lite::server::Config {
        advertise_address: args
            .advertise_address
            .unwrap_or_else(apiserver_lite::server::primary_address),
        data_dir: args.data_dir,
        listen: args.listen,
        service_cidr: args.service_cluster_ip_range,
        node_port_range: args.service_node_port_range,
        event_ttl: parse_duration(&args.event_ttl).context("--event-ttl")?,
        default_toleration_seconds: apiserver_lite::server::DefaultTolerationSeconds {
            not_ready: args.default_not_ready_toleration_seconds,
            unreachable: args.default_unreachable_toleration_seconds,
        },
        security: apiserver_lite::auth::SecurityOptions {
            files: apiserver_lite::pki::PkiFiles {
                client_ca: args.client_ca_file,
                tls_cert: args.tls_cert_file,
                tls_key: args.tls_private_key_file,
                sa_public: args.service_account_key_file,
                sa_signing: args.service_account_signing_key_file,
                kubelet_client_cert: args.kubelet_client_certificate,
                kubelet_client_key: args.kubelet_client_key,
                kubelet_certificate_authority: args.kubelet_certificate_authority,
            },
            token_auth_file: args.token_auth_file,
            anonymous_auth: args.anonymous_auth,
            authorization_mode: args.authorization_mode,
            service_account_issuer: args.service_account_issuer,
        },
    };
    let server = apiserver_lite::server::Server::start(config.clone())
        .await
        .map_err(anyhow::Error::msg)?;
    println!("capstan apiserver serving on {}", server.local_addr);
    println!("Point kubectl at it with:");
    println!("  export KUBECONFIG={}", config.kubeconfig_path().display());
    println!("  kubectl get namespaces");
    tokio::select! {
        _ = server.wait() => {}
        _ = shutdown_signal() => { println!("capstan apiserver: shutting down"); }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn kubelet(args: kubelet::config::KubeletArgs) -> anyhow::Result<()> {
    let config = kubelet::config::Config::resolve(&args)?;
    let kubelet = kubelet::Kubelet::new(config).await?;
    kubelet.run(shutdown_signal()).await?;
    tracing::info!("capstan kubelet: shutting down");
    Ok(())
}

async fn proxy(args: proxy::ProxyArgs) -> anyhow::Result<()> {
    let config = proxy::Config::resolve(&args)?;
    proxy::run(config, shutdown_signal()).await?;
    tracing::info!("capstan proxy: shutting down");
    Ok(())
}

async fn cri(args: CriArgs) -> anyhow::Result<()> {
    let cni_bin_dirs = if args.cni_bin_dir.is_empty() {
        vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
    } else {
        args.cni_bin_dir
    };
    let config = cri::server::Config {
        root: args.root,
        socket: args.socket,
        registry_config_dir: args.registry_config_dir,
        cni_conf_dir: args.cni_conf_dir,
        cni_bin_dirs,
        cni_cache_dir: args.cni_cache_dir,
        supervisor_exe: std::env::current_exe().context("locating the capstan binary")?,
        supervisors_cgroup: cri::cgroups::SUPERVISORS_CGROUP.into(),
    };
    cri::server::serve(config, shutdown_signal()).await
}

fn main() -> anyhow::Result<()> {
    // The per-pod supervisor is this binary in a minimal mode: no async runtime, no threads, no
    // logging set-up, so that it can fork containers safely. It must branch off before anything
    // else starts a thread.
    if std::env::args_os().nth(1).is_some_and(|a| a == "supervise") {
        cri::supervisor::main();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    machinery::client::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Apiserver(a) => rt.block_on(apiserver(*a)),
        Command::ControllerManager(o) => rt.block_on(controllers::controller_manager::run(*o)),
        Command::Cri(a) => rt.block_on(cri(a)),
        Command::Kubelet(a) => rt.block_on(kubelet(*a)),
        Command::Proxy(a) => rt.block_on(proxy(*a)),
        Command::Scheduler(a) => rt.block_on(scheduler_lite::run(
            scheduler_lite::Options {
                kubeconfig: a.kubeconfig,
                config: a.config,
                bind_address: a.bind_address,
            },
            shutdown_signal(),
        )),
        Command::Agent(a) => {
            let r = rt.block_on(agent::run(*a, shutdown_signal()));
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        Command::Server(a) => {
            let r = rt.block_on(server::run(*a, shutdown_signal()));
            // Components that ignore the stop signal (blocking threads) must not hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            r
        }
        Command::Lab(lab::LabCommand::Up(a)) => rt.block_on(lab::up(a)),
        Command::Lab(lab::LabCommand::Down(a)) => rt.block_on(lab::down(a)),
        Command::Uninstall(a) => rt.block_on(uninstall::run(a)),
        Command::Image(ImageCommand::Import { root, files }) => {
            for name in cri::image::import_files(&root, &files)? {
                println!("imported {name}");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("1h").unwrap(), 3600);
        assert_eq!(super::parse_duration("1h30m").unwrap(), 5400);
        assert!(super::parse_duration("5").is_err());
    }
}
