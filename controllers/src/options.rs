//! `capstan controller-manager`'s flags: upstream kube-controller-manager's names and defaults
//! (`cmd/kube-controller-manager/app/options`), one struct every controller reads its settings from.

use std::path::PathBuf;
use std::time::Duration;

fn duration(s: &str) -> Result<Duration, String> {
    machinery::duration::parse(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 40s, 5m0s)"))
}

/// The controller-manager's command line.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig of the API server (in-cluster config when absent).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` for the default set, `foo` to enable one, `-foo` to disable one
    /// (comma-separated, repeatable).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Address and port of the /healthz and /metrics server (upstream serves 10257 over HTTPS).
    #[arg(long, default_value = "127.0.0.1:10257")]
    pub bind_address: String,

    // Leader election (`--leader-elect-*`).
    /// Take a Lease before running controllers, so only one of several replicas is active.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub leader_elect_lease_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub leader_elect_renew_deadline: Duration,
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value = "kube-controller-manager")]
    pub leader_elect_resource_name: String,
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    // Workers per controller (`--concurrent-*`).
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_resource_quota_syncs: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_cron_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_ttl_after_finished_syncs: usize,

    // Job controller tuning. Upstream has these as constants (`DefaultJobPodFailureBackOff`,
    // `MaxJobPodFailureBackOff`, `syncJobBatchPeriod`); Capstan makes them flags so tests run fast.
    /// Back-off before the first replacement of a failed Job pod; it doubles per further failure.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub job_pod_failure_backoff: Duration,
    /// Longest back-off before a failed Job pod is replaced.
    #[arg(long, default_value = "10m0s", value_parser = duration)]
    pub job_pod_failure_max_backoff: Duration,
    /// Pod changes within this period make one sync of their Job.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub job_sync_batch_period: Duration,

    // Node IPAM.
    /// CIDR range of pods in the cluster (`--cluster-cidr`).
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Allocate a podCIDR to every node from --cluster-cidr.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// Mask size of the per-node CIDRs (IPv4).
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,

    // Node lifecycle.
    /// How often node status is checked.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub node_monitor_period: Duration,
    /// How long a node may go without a heartbeat before it is marked Unknown.
    #[arg(long, default_value = "50s", value_parser = duration)]
    pub node_monitor_grace_period: Duration,
    /// Grace period for a freshly started node before it is marked unhealthy.
    #[arg(long, default_value = "1m0s", value_parser = duration)]
    pub node_startup_grace_period: Duration,

    // Pod GC.
    /// Terminated pods kept before the GC deletes the oldest (0: none deleted).
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,

    // Root CA publisher and service accounts.
    /// CA bundle published as the kube-root-ca.crt ConfigMap in every namespace.
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,

    // Certificates (`csrsigning`).
    /// PEM CA certificate the built-in signers issue certificates with (none: no signing).
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of --cluster-signing-cert-file.
    #[arg(long, value_name = "FILE")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// Longest validity of the certificates signed (a request's expirationSeconds may shorten it).
    #[arg(long, default_value = "8760h0m0s", value_parser = duration)]
    pub cluster_signing_duration: Duration,

    // Local-path provisioner.
    /// Parent directory of local-path volumes on every node (k3s'
    /// `--default-local-storage-path`).
    #[arg(long, default_value = crate::localpath::DEFAULT_DIR)]
    pub local_path_dir: String,

    /// Accepted for compatibility with upstream's flags; the client has no rate limit.
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f32,
    /// Accepted for compatibility with upstream's flags; the client has no rate limit.
    #[arg(long, default_value_t = 30)]
    pub kube_api_burst: u32,
}

impl Options {
    /// Whether controller `name` runs, upstream's `IsControllerEnabled`: an explicit `name` or
    /// `-name` wins, otherwise `*` enables the default-on ones.
    pub fn is_enabled(&self, name: &str, enabled_by_default: bool) -> bool {
        let mut star = false;
        for c in &self.controllers {
            if c == name {
                return true;
            }
            if c.strip_prefix('-') == Some(name) {
                return false;
            }
            star |= c == "*";
        }
        star && enabled_by_default
    }
}
