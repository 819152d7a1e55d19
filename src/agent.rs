//! `capstan agent --server URL --token TOKEN`: joins this host to a cluster as a node, as
//! `k3s agent` (or `kubeadm join` followed by a kubelet and kube-proxy) does:
//!
//! 1. token discovery of the cluster's CA (`discovery`, kubeadm's: the signed cluster-info);
//! 2. a bootstrap kubeconfig with the token and that CA (`DIR/agent/bootstrap.kubeconfig`);
//! 3. the node agent (`node`): the kubelet bootstraps its client certificate through the
//!    Certificates API (`DIR/agent/kubelet.kubeconfig`, renewed before expiry) and requests its
//!    serving certificate the same way; the proxy, the node's DNS server and the host-gw route
//!    controller (`hostgw`) then reach the API server as `system:node:<name>`; the default bridge
//!    CNI configuration is written for the podCIDR node IPAM gives the node.
//!
//! The agent keeps a pidfile and a record of what it made on the host where the server does
//! (`DIR/server/`), so `capstan uninstall --data-dir DIR` removes an agent too.

pub mod discovery;
pub mod hostgw;
pub mod node;

use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use base64::Engine;

use crate::server::layout::Layout;
use node::NodeArgs;

/// `capstan agent`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The API server's URL, e.g. `https://10.0.0.1:6443` (the agent talks to it at this
    /// address).
    #[arg(long)]
    pub server: String,
    /// The join token, `<id>.<secret>` (the server's `DIR/server/token`).
    #[arg(long, required_unless_present = "token_file")]
    pub token: Option<String>,
    /// A file holding the join token.
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo (kubeadm's
    /// `--discovery-token-ca-cert-hash`; repeatable).
    #[arg(long = "discovery-token-ca-cert-hash", value_name = "sha256:HEX")]
    pub ca_cert_hashes: Vec<String>,
    /// Trust the CA that the token-signed cluster-info names without a pin (kubeadm's flag).
    #[arg(long)]
    pub discovery_token_unsafe_skip_ca_verification: bool,
    /// Everything the agent keeps: the node agent's files (`DIR/agent/`), its pidfile and host
    /// record (`DIR/server/`).
    #[arg(long, default_value = "/var/lib/capstan")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A kubeconfig that authenticates with `token` to `server`, trusting `ca_pem` (the bootstrap
/// kubeconfig kubeadm writes for `kubeadm join`).
pub fn bootstrap_kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: cluster\ncontexts:\n- context:\n    cluster: cluster\n    user: tls-bootstrap-token-user\n  name: tls-bootstrap-token-user@cluster\ncurrent-context: tls-bootstrap-token-user@cluster\npreferences: {{}}\nusers:\n- name: tls-bootstrap-token-user\n  user:\n    token: {token}\n"
    )
}

/// Runs the agent until SIGTERM or Ctrl-C (`shutdown`).
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = std::path::absolute(&args.data_dir).context("--data-dir")?;
    let layout = Layout::new(&data_dir);
    std::fs::create_dir_all(layout.server_dir())
        .with_context(|| format!("creating {}", layout.server_dir().display()))?;
    std::fs::create_dir_all(layout.agent_dir())
        .with_context(|| format!("creating {}", layout.agent_dir().display()))?;
    let _pidfile = crate::server::Pidfile::take(&layout.pidfile())?;
    let record = node::host_record(&args.node, &layout);
    record.save(&layout)?;

    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("--token-file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("--token or --token-file is required"),
    };
    let info = discovery::fetch_cluster_info(
        &args.server,
        &token,
        &args.ca_cert_hashes,
        args.discovery_token_unsafe_skip_ca_verification,
    )
    .await
    .with_context(|| format!("discovering the cluster at {}", args.server))?;
    tracing::info!(server = %args.server, advertised = %info.server, elapsed = ?started.elapsed(), "cluster discovered");
    let bootstrap = layout.agent_dir().join("bootstrap.kubeconfig");
    node::write_private(
        &bootstrap,
        &bootstrap_kubeconfig(&args.server, &info.ca_pem, &token),
    )?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = node::Tasks::new();
    let cluster_dns = if args.node.disable_cluster_dns {
        None
    } else {
        Some(node::cluster_dns_ip(&args.node, DEFAULT_SERVICE_CIDR)?)
    };
    let start = node::Start {
        args: &args.node,
        layout: &layout,
        access: node::Access::Bootstrap {
            bootstrap,
            kubeconfig: layout.agent_dir().join("kubelet.kubeconfig"),
        },
        serving: if node::has_own_serving_cert(&args.node) {
            node::Serving::AsConfigured
        } else {
            node::Serving::Bootstrap
        },
        cluster_dns,
        record,
        started,
    };
    let node_name = tokio::select! {
        r = node::start(start, &mut tasks, stop_rx) => r?,
        _ = tokio::time::sleep(JOIN_TIMEOUT) => anyhow::bail!(
            "the kubelet got no client certificate within {JOIN_TIMEOUT:?} (is the join token \
             valid, and does the controller-manager approve node CSRs?)"
        ),
    };
    println!("capstan agent: node {node_name} joined {}", args.server);

    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!("capstan agent: shutting down");
            Ok(())
        }
        r = node::wait_tasks(&mut tasks) => r,
    };
    node::stop_tasks(&mut tasks, &stop_tx).await;
    result
}

/// The server's default `--service-cidr`, whose 10th address is the cluster DNS IP unless
/// `--cluster-dns` says otherwise.
const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

/// How long the kubelet may take to get its client certificate.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
