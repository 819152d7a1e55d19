//! kube-proxy's configuration: the `KubeProxyConfiguration` file
//! (`kubeproxy.config.k8s.io/v1alpha1`, YAML or JSON) and upstream's command-line flags, which
//! override the file field by field as upstream's `cmd/kube-proxy/app/server.go` does. k8s-openapi
//! has no type for this component configuration, so the file is read into our own serde struct
//! with upstream's field names; `serde_path_to_error` names the field of a bad value, and unknown
//! fields are refused (upstream decodes strictly).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The group/version of the file.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// Upstream's default health server address.
pub const DEFAULT_HEALTHZ_BIND_ADDRESS: &str = "0.0.0.0:10256";
/// Upstream's default metrics server address.
pub const DEFAULT_METRICS_BIND_ADDRESS: &str = "127.0.0.1:10249";

/// Errors reading or checking the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: field {field}: {message}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
}

/// A duration as the file writes it (`metav1.Duration`: Go's `30s`, `1m0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        machinery::duration::parse(&s)
            .map(GoDuration)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}")))
    }
}

/// `KubeProxyIPTablesConfiguration`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IptablesConfiguration {
    pub masquerade_all: Option<bool>,
    pub masquerade_bit: Option<i32>,
    pub localhost_node_ports: Option<bool>,
    pub sync_period: Option<GoDuration>,
    pub min_sync_period: Option<GoDuration>,
}

/// `ClientConnectionConfiguration`: only the kubeconfig is used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConnection {
    pub kubeconfig: Option<PathBuf>,
    pub accept_content_types: Option<String>,
    pub content_type: Option<String>,
    pub qps: Option<f32>,
    pub burst: Option<i32>,
}

/// The file. Fields Capstan does not act on are accepted (so upstream files load) and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeProxyConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub feature_gates: Option<serde_json::Value>,
    pub client_connection: Option<ClientConnection>,
    pub hostname_override: Option<String>,
    pub bind_address: Option<String>,
    pub healthz_bind_address: Option<String>,
    pub metrics_bind_address: Option<String>,
    pub bind_address_hard_fail: Option<bool>,
    pub enable_profiling: Option<bool>,
    pub show_hidden_metrics_for_version: Option<String>,
    pub mode: Option<String>,
    pub iptables: Option<IptablesConfiguration>,
    pub ipvs: Option<serde_json::Value>,
    pub nftables: Option<serde_json::Value>,
    pub winkernel: Option<serde_json::Value>,
    pub detect_local_mode: Option<String>,
    pub detect_local: Option<serde_json::Value>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    pub node_port_addresses: Option<Vec<String>>,
    pub oom_score_adj: Option<i32>,
    pub conntrack: Option<serde_json::Value>,
    pub config_sync_period: Option<GoDuration>,
    pub port_range: Option<String>,
    pub logging: Option<serde_json::Value>,
}

impl KubeProxyConfiguration {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses file content (YAML is a superset of JSON).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let cfg: KubeProxyConfiguration =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Field {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        match cfg.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(ConfigError::Field {
                    path: path.to_path_buf(),
                    field: "apiVersion".into(),
                    message: format!("must be {API_VERSION:?}, not {other:?}"),
                })
            }
        }
        if cfg.kind.as_deref() != Some("KubeProxyConfiguration") {
            return Err(ConfigError::Field {
                path: path.to_path_buf(),
                field: "kind".into(),
                message: format!("must be \"KubeProxyConfiguration\", not {:?}", cfg.kind),
            });
        }
        Ok(cfg)
    }
}

/// `capstan proxy`'s flags: upstream kube-proxy's names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxyArgs {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// kubeconfig for the API server; without it the in-cluster service account is used.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name instead of the hostname.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Which proxy mode to use: iptables (the default; the only one built so far).
    #[arg(long, value_name = "MODE")]
    pub proxy_mode: Option<String>,
    /// The pods' CIDR(s), comma-separated: traffic from outside it to a ClusterIP is masqueraded.
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// CIDRs (or `primary`) of the node addresses NodePorts answer on; default all local ones.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    /// SNAT all traffic sent through Service cluster IPs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub masquerade_all: Option<bool>,
    /// Longest time between two syncs of the rules (e.g. 30s, 1m).
    #[arg(long, value_name = "DURATION")]
    pub iptables_sync_period: Option<String>,
    /// Shortest time between two syncs of the rules (e.g. 1s); 0 syncs on every change.
    #[arg(long, value_name = "DURATION")]
    pub iptables_min_sync_period: Option<String>,
    /// Address and port of the health server (/healthz, /livez).
    #[arg(long, value_name = "ADDR:PORT")]
    pub healthz_bind_address: Option<String>,
    /// Address and port of the metrics server (/metrics).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_bind_address: Option<String>,
}

/// The proxy modes Capstan knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Iptables,
}

/// A CIDR (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.trim().split_once('/')?;
        let addr: IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which node addresses NodePorts answer on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address (`-m addrtype --dst-type LOCAL`).
    All,
    /// The node's addresses within these CIDRs.
    Cidrs(Vec<Cidr>),
}

/// The resolved configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub hostname: String,
    pub mode: ProxyMode,
    pub cluster_cidrs: Vec<Cidr>,
    pub node_port_addresses: NodePortAddresses,
    pub masquerade_all: bool,
    pub masquerade_bit: u8,
    pub sync_period: Duration,
    pub min_sync_period: Duration,
    pub healthz_bind_address: Option<SocketAddr>,
    pub metrics_bind_address: Option<SocketAddr>,
}

fn parse_bind(flag: &'static str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s.is_empty() {
        return Ok(None);
    }
    // Upstream accepts a bare IP (the default port is then used) or IP:port; 0 disables.
    s.parse::<SocketAddr>()
        .map(Some)
        .map_err(|e| ConfigError::Flag {
            flag,
            message: format!("invalid address {s:?}: {e}"),
        })
}

fn parse_duration(flag: &'static str, s: &str) -> Result<Duration, ConfigError> {
    machinery::duration::parse(s).ok_or_else(|| ConfigError::Flag {
        flag,
        message: format!("invalid duration {s:?}"),
    })
}

fn parse_cidrs(flag: &'static str, s: &str) -> Result<Vec<Cidr>, ConfigError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            Cidr::parse(p).ok_or_else(|| ConfigError::Flag {
                flag,
                message: format!("invalid CIDR {p:?}"),
            })
        })
        .collect()
}

impl Config {
    /// The file (if any) with the flags over it, defaults where neither says.
    pub fn resolve(args: &ProxyArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => KubeProxyConfiguration::load(p)?,
            None => KubeProxyConfiguration::default(),
        };
        let file_path = args.config.clone().unwrap_or_default();
        let field_err = |field: &str, message: String| ConfigError::Field {
            path: file_path.clone(),
            field: field.into(),
            message,
        };
        let ipt = file.iptables.clone().unwrap_or_default();
        let mode = match args.proxy_mode.clone().or(file.mode.clone()).as_deref() {
            None | Some("") | Some("iptables") => ProxyMode::Iptables,
            Some(other) => {
                let message =
                    format!("proxy mode {other:?} is not supported (supported: \"iptables\")");
                return Err(match &args.proxy_mode {
                    Some(_) => ConfigError::Flag {
                        flag: "--proxy-mode",
                        message,
                    },
                    None => field_err("mode", message),
                });
            }
        };
        let hostname = match args
            .hostname_override
            .clone()
            .or(file.hostname_override.clone())
            .filter(|h| !h.trim().is_empty())
        {
            Some(h) => h.trim().to_lowercase(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_default(),
        };
        let cluster_cidrs = match (&args.cluster_cidr, &file.cluster_cidr) {
            (Some(s), _) => parse_cidrs("--cluster-cidr", s)?,
            (None, Some(s)) => parse_cidrs("clusterCIDR", s)
                .map_err(|e| field_err("clusterCIDR", e.to_string()))?,
            (None, None) => Vec::new(),
        };
        let npa = args
            .nodeport_addresses
            .clone()
            .or(file.node_port_addresses.clone())
            .unwrap_or_default();
        let node_port_addresses = if npa.is_empty() {
            NodePortAddresses::All
        } else {
            let mut cidrs = Vec::new();
            for s in &npa {
                // `primary`: the node's primary addresses; Capstan answers on every local one.
                if s == "primary" {
                    cidrs.clear();
                    break;
                }
                cidrs.push(Cidr::parse(s).ok_or_else(|| ConfigError::Flag {
                    flag: "--nodeport-addresses",
                    message: format!("invalid CIDR {s:?}"),
                })?);
            }
            if cidrs.is_empty() {
                NodePortAddresses::All
            } else {
                NodePortAddresses::Cidrs(cidrs)
            }
        };
        let sync_period = match (&args.iptables_sync_period, ipt.sync_period) {
            (Some(s), _) => parse_duration("--iptables-sync-period", s)?,
            (None, Some(d)) => d.0,
            (None, None) => Duration::from_secs(30),
        };
        let min_sync_period = match (&args.iptables_min_sync_period, ipt.min_sync_period) {
            (Some(s), _) => parse_duration("--iptables-min-sync-period", s)?,
            (None, Some(d)) => d.0,
            (None, None) => Duration::from_secs(1),
        };
        if sync_period.is_zero() {
            return Err(ConfigError::Flag {
                flag: "--iptables-sync-period",
                message: "must be greater than 0".into(),
            });
        }
        if min_sync_period > sync_period {
            return Err(ConfigError::Flag {
                flag: "--iptables-min-sync-period",
                message: format!(
                    "must be less than or equal to --iptables-sync-period ({sync_period:?})"
                ),
            });
        }
        let masquerade_bit = ipt.masquerade_bit.unwrap_or(14);
        if !(0..=31).contains(&masquerade_bit) {
            return Err(field_err(
                "iptables.masqueradeBit",
                format!("must be within [0, 31], not {masquerade_bit}"),
            ));
        }
        let healthz = args
            .healthz_bind_address
            .clone()
            .or(file.healthz_bind_address.clone())
            .unwrap_or_else(|| DEFAULT_HEALTHZ_BIND_ADDRESS.into());
        let metrics = args
            .metrics_bind_address
            .clone()
            .or(file.metrics_bind_address.clone())
            .unwrap_or_else(|| DEFAULT_METRICS_BIND_ADDRESS.into());
        Ok(Config {
            kubeconfig: args.kubeconfig.clone().or_else(|| {
                file.client_connection
                    .as_ref()
                    .and_then(|c| c.kubeconfig.clone())
                    .filter(|p| !p.as_os_str().is_empty())
            }),
            hostname,
            mode,
            cluster_cidrs,
            node_port_addresses,
            masquerade_all: args.masquerade_all.or(ipt.masquerade_all).unwrap_or(false),
            masquerade_bit: masquerade_bit as u8,
            sync_period,
            min_sync_period,
            healthz_bind_address: parse_bind("--healthz-bind-address", &healthz)?,
            metrics_bind_address: parse_bind("--metrics-bind-address", &metrics)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile_path::TempFile, PathBuf) {
        let f = tempfile_path::TempFile::new(text);
        let p = f.0.clone();
        (f, p)
    }

    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> Self {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "capstan-proxy-config-{}-{}.yaml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&p, text).unwrap();
                TempFile(p)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn every_upstream_flag_parses_and_overrides_the_file() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ProxyArgs,
        }
        let (_f, path) = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clusterCIDR: 10.244.0.0/16\nhostnameOverride: file-node\n",
        );
        let cli = <Cli as clap::Parser>::try_parse_from([
            "proxy",
            "--config",
            path.to_str().unwrap(),
            "--kubeconfig",
            "/etc/capstan/proxy.kubeconfig",
            "--hostname-override",
            "Node-B",
            "--proxy-mode",
            "iptables",
            "--cluster-cidr",
            "10.1.0.0/16,fd00::/48",
            "--nodeport-addresses",
            "192.168.0.0/24,10.9.0.0/16",
            "--masquerade-all",
            "--iptables-sync-period",
            "45s",
            "--iptables-min-sync-period",
            "0s",
            "--healthz-bind-address",
            "127.0.0.1:20256",
            "--metrics-bind-address",
            "127.0.0.1:20249",
        ])
        .unwrap();
        let c = Config::resolve(&cli.args).unwrap();
        assert_eq!(
            c.kubeconfig,
            Some(PathBuf::from("/etc/capstan/proxy.kubeconfig"))
        );
        assert_eq!(c.hostname, "node-b");
        assert_eq!(c.mode, ProxyMode::Iptables);
        assert_eq!(
            c.cluster_cidrs,
            vec![
                Cidr::parse("10.1.0.0/16").unwrap(),
                Cidr::parse("fd00::/48").unwrap()
            ]
        );
        assert_eq!(
            c.node_port_addresses,
            NodePortAddresses::Cidrs(vec![
                Cidr::parse("192.168.0.0/24").unwrap(),
                Cidr::parse("10.9.0.0/16").unwrap()
            ])
        );
        assert!(c.masquerade_all, "a bare --masquerade-all is true");
        assert_eq!(c.sync_period, Duration::from_secs(45));
        assert_eq!(c.min_sync_period, Duration::ZERO);
        assert_eq!(
            c.healthz_bind_address,
            Some("127.0.0.1:20256".parse().unwrap())
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:20249".parse().unwrap())
        );
        // An explicit false, and a mode Capstan does not have.
        let cli =
            <Cli as clap::Parser>::try_parse_from(["proxy", "--masquerade-all=false"]).unwrap();
        assert!(!Config::resolve(&cli.args).unwrap().masquerade_all);
        let cli = <Cli as clap::Parser>::try_parse_from(["proxy", "--proxy-mode", "ipvs"]).unwrap();
        let err = Config::resolve(&cli.args).unwrap_err().to_string();
        assert!(
            err.contains("--proxy-mode") || err.contains("ipvs"),
            "{err}"
        );
    }

    #[test]
    fn file_then_flags_override() {
        let (_f, path) = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clusterCIDR: 10.244.0.0/16\nhostnameOverride: Node-A\nmode: iptables\n\
             iptables:\n  masqueradeAll: true\n  syncPeriod: 1m0s\n  minSyncPeriod: 2s\n\
             nodePortAddresses: [192.168.0.0/24]\nhealthzBindAddress: 0.0.0.0:10256\n",
        );
        let c = Config::resolve(&ProxyArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.hostname, "node-a");
        assert!(c.masquerade_all);
        assert_eq!(c.sync_period, Duration::from_secs(60));
        assert_eq!(c.min_sync_period, Duration::from_secs(2));
        assert_eq!(c.cluster_cidrs, vec![Cidr::parse("10.244.0.0/16").unwrap()]);
        assert_eq!(
            c.node_port_addresses,
            NodePortAddresses::Cidrs(vec![Cidr::parse("192.168.0.0/24").unwrap()])
        );
        assert_eq!(
            c.metrics_bind_address,
            Some("127.0.0.1:10249".parse().unwrap())
        );
        let c = Config::resolve(&ProxyArgs {
            config: Some(path),
            masquerade_all: Some(false),
            iptables_sync_period: Some("10s".into()),
            hostname_override: Some("b".into()),
            nodeport_addresses: Some(vec![]),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.masquerade_all);
        assert_eq!(c.sync_period, Duration::from_secs(10));
        assert_eq!(c.hostname, "b");
        assert_eq!(c.node_port_addresses, NodePortAddresses::All);
    }

    #[test]
    fn bad_files_name_the_file_and_field() {
        let (_f, path) = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             iptables:\n  syncPeriod: soon\n",
        );
        let e = Config::resolve(&ProxyArgs {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("iptables.syncPeriod"), "{e}");
        assert!(e.contains("invalid duration"), "{e}");
        let (_g, path) = write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbogus: 1\n",
        );
        let e = KubeProxyConfiguration::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let (_h, path) = write("apiVersion: v1\nkind: KubeProxyConfiguration\n");
        let e = KubeProxyConfiguration::load(&path).unwrap_err().to_string();
        assert!(e.contains("field apiVersion"), "{e}");
        let e = Config::resolve(&ProxyArgs {
            proxy_mode: Some("ipvs".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--proxy-mode") && e.contains("not supported"),
            "{e}"
        );
    }
}
