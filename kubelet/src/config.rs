//! The kubelet's configuration: the KubeletConfiguration file (`file`), the flags (`flags`), and
//! their resolution into [`Config`], the effective settings with every path worked out.
//!
//! Precedence is upstream's: built-in defaults, then the `--config` file, then flags that were
//! given. Unknown fields in the file are warned about (upstream rejects them; we prefer to start
//! with a file written for a newer kubelet), malformed values are rejected with the file and field
//! named, and flags are checked by clap, which names the flag. As upstream, a cgroup root that
//! does not exist is an error, a static pod directory that does not exist is not (it may appear
//! later).
//!
//! Several kubelets must be able to share a host (the lab runs three), so everything a kubelet
//! writes hangs off settings that differ between them: the root dir (which also holds the built-in
//! runtime's state, `<root-dir>/cri`, and its CRI socket, `<root-dir>/cri.sock`), the cgroup root,
//! the pod logs dir and the CNI dirs.

pub use machinery::duration;
pub mod file;
pub mod flags;
pub mod quantity;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{CgroupDriver, KubeletAuthorizationMode, KubeletConfiguration};
pub use flags::KubeletArgs;

/// Upstream's default `--root-dir`.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/kubelet";
/// The built-in runtime's state directory, under the root dir.
pub const BUILTIN_RUNTIME_SUBDIR: &str = "cri";
/// The built-in runtime's CRI socket, under the root dir.
pub const BUILTIN_RUNTIME_SOCKET: &str = "cri.sock";
/// Where cgroupfs is mounted.
pub const CGROUPFS_MOUNT: &str = "/sys/fs/cgroup";
/// cgroup v1 controllers a cgroup root must exist in (the ones pod cgroups are made in).
const V1_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

/// Errors of configuration loading and resolution.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading kubelet config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubelet config file {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("kubelet config file {}: field {field}: {message}", path.display())]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("invalid value for {flag}: {message}")]
    Flag { flag: String, message: String },
    #[error("invalid configuration: {setting} {cgroup:?} doesn't exist (no {})", missing.display())]
    CgroupRootMissing {
        setting: String,
        cgroup: String,
        missing: PathBuf,
    },
    #[error("determining the node name: {0}")]
    NodeName(String),
}

/// The effective configuration of one kubelet.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file's settings with the flags applied (defaults filled in).
    pub settings: KubeletConfiguration,
    /// The `--config` file, if any.
    pub config_file: Option<PathBuf>,
    /// The kubeconfig; `None` = in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// `--bootstrap-kubeconfig` (TLS bootstrap).
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// `--cert-dir`, absolute (default `<root-dir>/pki`).
    pub cert_dir: PathBuf,
    /// The Node's name (hostname-override or the hostname, lowercased).
    pub node_name: String,
    /// `--node-ip`; empty = the host's primary address.
    pub node_ips: Vec<IpAddr>,
    /// `--node-labels`.
    pub node_labels: BTreeMap<String, String>,
    /// `--root-dir`, absolute.
    pub root_dir: PathBuf,
    /// Which runtime the kubelet drives and where it lives.
    pub runtime: RuntimeConfig,
    /// Container logs (`podLogsDir`), absolute.
    pub pod_logs_dir: PathBuf,
    /// Static pod manifests (`staticPodPath`); it need not exist.
    pub static_pod_path: Option<PathBuf>,
    /// The cgroup pods go under (`/` when not set), checked to exist.
    pub cgroup_root: String,
    /// Where cgroupfs is mounted.
    pub cgroupfs_mount: PathBuf,
    /// Problems that did not stop start-up (unknown config fields); already logged.
    pub warnings: Vec<String>,
}

/// The container runtime: the built-in one, in-process, or a remote CRI endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeConfig {
    BuiltIn(BuiltInRuntime),
    Remote {
        endpoint: String,
        image_endpoint: Option<String>,
    },
}

/// Where the built-in runtime keeps its state and what it is given for networking.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltInRuntime {
    /// `<root-dir>/cri`: images, snapshots, sandboxes, containers (`capstan image import --root`
    /// takes this path).
    pub root: PathBuf,
    /// `<root-dir>/cri.sock`: the runtime served over CRI for crictl and friends.
    pub socket: PathBuf,
    pub registry_config_dir: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
}

/// What resolution reads from the host, injectable for tests.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// The hostname; `None` = read it from the kernel.
    pub hostname: Option<String>,
    /// Where cgroupfs is mounted.
    pub cgroupfs_mount: PathBuf,
}

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts {
            hostname: None,
            cgroupfs_mount: PathBuf::from(CGROUPFS_MOUNT),
        }
    }
}

impl Config {
    /// Resolves flags (and the file they name) against this host.
    pub fn resolve(args: &KubeletArgs) -> Result<Config, ConfigError> {
        Self::resolve_with(args, &HostFacts::default())
    }

    /// Resolves flags against the given host facts.
    pub fn resolve_with(args: &KubeletArgs, host: &HostFacts) -> Result<Config, ConfigError> {
        let mut warnings = Vec::new();
        let (mut settings, config_file) = match &args.config {
            Some(path) => {
                let path = absolute(path);
                let (settings, unknown) = KubeletConfiguration::from_file(&path)?;
                for field in unknown {
                    let w = format!(
                        "kubelet config file {}: unknown field {field:?} ignored",
                        path.display()
                    );
                    tracing::warn!("{w}");
                    warnings.push(w);
                }
                (settings, Some(path))
            }
            None => {
                let mut s = KubeletConfiguration::default();
                s.apply_dependent_defaults();
                (s, None)
            }
        };
        let rel = |p: &str| match &config_file {
            Some(f) => file::resolve_relative(f, p),
            None => absolute(Path::new(p)),
        };

        // Flags override the file.
        if let Some(p) = &args.pod_manifest_path {
            settings.static_pod_path = Some(absolute(p).to_string_lossy().into_owned());
        } else if let Some(p) = settings.static_pod_path.take() {
            settings.static_pod_path = Some(rel(&p).to_string_lossy().into_owned());
        }
        if let Some(d) = args.cgroup_driver {
            settings.cgroup_driver = d;
        }
        if let Some(r) = &args.cgroup_root {
            settings.cgroup_root = r.clone();
        }
        if let Some(p) = &args.pod_logs_dir {
            settings.pod_logs_dir = absolute(p).to_string_lossy().into_owned();
        } else {
            settings.pod_logs_dir = rel(&settings.pod_logs_dir).to_string_lossy().into_owned();
        }
        if let Some(t) = &args.register_with_taints {
            settings.register_with_taints = t.0.clone();
        }
        if let Some(n) = args.max_pods {
            settings.max_pods = i32::from(n);
        }
        if !args.cluster_dns.is_empty() {
            settings.cluster_dns = args.cluster_dns.iter().map(|ip| ip.to_string()).collect();
        }
        if let Some(d) = &args.cluster_domain {
            settings.cluster_domain = Some(d.clone());
        }
        if let Some(a) = args.address {
            settings.address = a.to_string();
        }
        if let Some(p) = args.port {
            settings.port = i32::from(p);
        }
        if let Some(p) = args.healthz_port {
            settings.healthz_port = i32::from(p);
        }
        if let Some(a) = args.healthz_bind_address {
            settings.healthz_bind_address = a.to_string();
        }
        if let Some(e) = &args.container_runtime_endpoint {
            settings.container_runtime_endpoint = Some(e.clone());
        }
        if let (Some(c), Some(k)) = (&args.tls_cert_file, &args.tls_private_key_file) {
            settings.tls_cert_file = Some(absolute(c).to_string_lossy().into_owned());
            settings.tls_private_key_file = Some(absolute(k).to_string_lossy().into_owned());
        } else {
            for f in [
                &mut settings.tls_cert_file,
                &mut settings.tls_private_key_file,
            ] {
                if let Some(p) = f.take().filter(|p| !p.is_empty()) {
                    *f = Some(rel(&p).to_string_lossy().into_owned());
                }
            }
        }
        let authn = &mut settings.authentication;
        if let Some(f) = &args.client_ca_file {
            authn.x509.client_ca_file = Some(absolute(f).to_string_lossy().into_owned());
        } else if let Some(p) = authn.x509.client_ca_file.take().filter(|p| !p.is_empty()) {
            authn.x509.client_ca_file = Some(rel(&p).to_string_lossy().into_owned());
        }
        if let Some(r) = args.rotate_certificates {
            settings.rotate_certificates = r;
        }
        if let Some(r) = args.rotate_server_certificates {
            settings.server_tls_bootstrap = r;
        }
        if let Some(a) = args.anonymous_auth {
            authn.anonymous.enabled = a;
        }
        if let Some(w) = args.authentication_token_webhook {
            authn.webhook.enabled = w;
        }
        if let Some(m) = args.authorization_mode {
            settings.authorization.mode = m;
        }

        let node_labels = args.node_labels.clone().unwrap_or_default();
        if let Some(bad) = node_labels
            .keys()
            .find(|k| !flags::kubelet_may_set_label(k))
        {
            return Err(ConfigError::Flag {
                flag: "--node-labels".into(),
                message: format!(
                    "unknown 'kubernetes.io' or 'k8s.io' label {bad:?}: a kubelet may only set \
                     the well-known labels and those under kubelet.kubernetes.io or \
                     node.kubernetes.io"
                ),
            });
        }
        for dns in &settings.cluster_dns {
            if dns.parse::<IpAddr>().is_err() {
                return Err(ConfigError::Flag {
                    flag: "clusterDNS".into(),
                    message: format!("{dns:?} is not an IP address"),
                });
            }
        }

        let node_name = node_name(args.hostname_override.as_deref(), host)?;
        let root_dir = absolute(
            args.root_dir
                .as_deref()
                .unwrap_or(Path::new(DEFAULT_ROOT_DIR)),
        );

        let runtime = match &settings.container_runtime_endpoint {
            Some(endpoint) if !endpoint.is_empty() => RuntimeConfig::Remote {
                endpoint: endpoint.clone(),
                image_endpoint: settings.image_service_endpoint.clone(),
            },
            _ => RuntimeConfig::BuiltIn(BuiltInRuntime {
                root: root_dir.join(BUILTIN_RUNTIME_SUBDIR),
                socket: root_dir.join(BUILTIN_RUNTIME_SOCKET),
                registry_config_dir: args.registry_config_dir.as_deref().map(absolute),
                cni_conf_dir: absolute(
                    args.cni_conf_dir
                        .as_deref()
                        .unwrap_or(Path::new("/etc/cni/net.d")),
                ),
                cni_bin_dirs: if args.cni_bin_dir.is_empty() {
                    vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
                } else {
                    args.cni_bin_dir.iter().map(|p| absolute(p)).collect()
                },
                cni_cache_dir: absolute(
                    args.cni_cache_dir
                        .as_deref()
                        .unwrap_or(Path::new("/var/lib/cni")),
                ),
            }),
        };

        let cgroup_root = if settings.cgroup_root.is_empty() {
            "/".to_string()
        } else {
            settings.cgroup_root.clone()
        };
        let setting = if args.cgroup_root.is_some() {
            "--cgroup-root".to_string()
        } else {
            "cgroupRoot".to_string()
        };
        check_cgroup_exists(&host.cgroupfs_mount, &cgroup_root).map_err(|missing| {
            ConfigError::CgroupRootMissing {
                setting,
                cgroup: cgroup_root.clone(),
                missing,
            }
        })?;

        Ok(Config {
            pod_logs_dir: PathBuf::from(&settings.pod_logs_dir),
            static_pod_path: settings.static_pod_path.as_ref().map(PathBuf::from),
            settings,
            config_file,
            kubeconfig: args.kubeconfig.as_deref().map(absolute),
            bootstrap_kubeconfig: args.bootstrap_kubeconfig.as_deref().map(absolute),
            cert_dir: args
                .cert_dir
                .as_deref()
                .map(absolute)
                .unwrap_or_else(|| root_dir.join(crate::server::tls::CERT_SUBDIR)),
            node_name,
            node_ips: args.node_ip.clone(),
            node_labels,
            root_dir,
            runtime,
            cgroup_root,
            cgroupfs_mount: host.cgroupfs_mount.clone(),
            warnings,
        })
    }

    /// How long the node Lease lasts without renewal.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.settings.node_lease_duration_seconds.max(1) as u64)
    }

    /// How often the Lease is renewed: a quarter of its duration (upstream's
    /// `NodeLeaseRenewIntervalFraction`), 10 s by default.
    pub fn lease_renew_interval(&self) -> Duration {
        self.lease_duration() / 4
    }

    /// How often node status is computed (and sent if changed).
    pub fn node_status_update_frequency(&self) -> Duration {
        self.settings.node_status_update_frequency()
    }

    /// How often node status is sent even when unchanged.
    pub fn node_status_report_frequency(&self) -> Duration {
        self.settings.node_status_report_frequency()
    }
}

/// The node's name: the override or the hostname, trimmed and lowercased (upstream's
/// `nodeutil.GetHostname`).
fn node_name(hostname_override: Option<&str>, host: &HostFacts) -> Result<String, ConfigError> {
    let raw = match hostname_override.map(str::trim).filter(|s| !s.is_empty()) {
        Some(o) => o.to_string(),
        None => match &host.hostname {
            Some(h) => h.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_err(|e| ConfigError::NodeName(format!("reading the hostname: {e}")))?,
        },
    };
    let name = raw.trim().to_lowercase();
    if name.is_empty() {
        return Err(ConfigError::NodeName("the hostname is empty".into()));
    }
    Ok(name)
}

/// Checks that a cgroup exists: on cgroup v2 (a `cgroup.controllers` file at the mount) in the
/// unified tree, on v1 in each controller pods are made in. Returns the first missing directory.
pub fn check_cgroup_exists(mount: &Path, cgroup: &str) -> Result<(), PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    if mount.join("cgroup.controllers").exists() {
        let dir = mount.join(rel);
        return if dir.is_dir() { Ok(()) } else { Err(dir) };
    }
    for controller in V1_CONTROLLERS {
        let dir = mount.join(controller).join(rel);
        if !dir.is_dir() {
            return Err(dir);
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: KubeletArgs,
    }

    fn args(list: &[&str]) -> KubeletArgs {
        let mut all = vec!["kubelet"];
        all.extend(list);
        Cli::try_parse_from(all).expect("flags parse").args
    }

    /// A fake cgroup v1 tree with the root and `/kubelet` in every controller.
    fn host() -> (tempfile::TempDir, HostFacts) {
        let dir = tempfile::tempdir().unwrap();
        for c in V1_CONTROLLERS {
            std::fs::create_dir_all(dir.path().join(c).join("kubelet")).unwrap();
        }
        let facts = HostFacts {
            hostname: Some("My-Host\n".into()),
            cgroupfs_mount: dir.path().to_path_buf(),
        };
        (dir, facts)
    }

    fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }

    #[test]
    fn defaults_are_upstreams() {
        let (_d, host) = host();
        let c = Config::resolve_with(&args(&[]), &host).unwrap();
        let s = &c.settings;
        assert_eq!(s.sync_frequency, Duration::from_secs(60));
        assert_eq!(c.node_status_update_frequency(), Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency(), Duration::from_secs(300));
        assert_eq!(s.node_lease_duration_seconds, 40);
        assert_eq!(c.lease_renew_interval(), Duration::from_secs(10));
        assert_eq!(s.max_pods, 110);
        assert_eq!(s.pod_pids_limit, -1);
        assert_eq!(s.port, 10250);
        assert_eq!(s.read_only_port, 0);
        assert_eq!(s.healthz_port, 10248);
        assert_eq!(s.container_log_max_size, "10Mi");
        assert_eq!(s.container_log_max_files, 5);
        assert_eq!(s.image_gc_high_threshold_percent, 85);
        assert_eq!(s.image_gc_low_threshold_percent, 80);
        assert_eq!(s.serialize_image_pulls, Some(true));
        assert_eq!(s.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(s.eviction_hard()["memory.available"], "100Mi");
        assert_eq!(s.eviction_hard()["nodefs.available"], "10%");
        assert_eq!(c.node_name, "my-host");
        assert_eq!(c.root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(c.pod_logs_dir, PathBuf::from("/var/log/pods"));
        assert_eq!(c.cgroup_root, "/");
        let RuntimeConfig::BuiltIn(rt) = &c.runtime else {
            panic!("expected the built-in runtime, got {:?}", c.runtime)
        };
        assert_eq!(rt.root, PathBuf::from("/var/lib/kubelet/cri"));
        assert_eq!(rt.socket, PathBuf::from("/var/lib/kubelet/cri.sock"));
        assert_eq!(rt.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn file_then_flags() {
        let (dir, host) = host();
        let file = write_file(
            dir.path(),
            "kubelet.yaml",
            "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             maxPods: 50\n\
             clusterDomain: file.local\n\
             clusterDNS: [10.96.0.10]\n\
             nodeStatusUpdateFrequency: 2s\n\
             nodeLeaseDurationSeconds: 8\n\
             staticPodPath: manifests\n\
             cgroupRoot: /kubelet\n\
             podLogsDir: /tmp/file-logs\n\
             evictionHard: {memory.available: 200Mi}\n\
             kubeReserved: {cpu: 100m, memory: 1Gi}\n\
             registerWithTaints: [{key: a, value: b, effect: NoSchedule}]\n\
             featureGates: {SidecarContainers: true}\n",
        );
        let file_arg = file.to_str().unwrap();
        let c = Config::resolve_with(&args(&["--config", file_arg]), &host).unwrap();
        assert_eq!(c.settings.max_pods, 50);
        assert_eq!(c.settings.cluster_domain.as_deref(), Some("file.local"));
        assert_eq!(c.node_status_update_frequency(), Duration::from_secs(2));
        // Only the update frequency given: the report frequency follows it, as upstream.
        assert_eq!(c.node_status_report_frequency(), Duration::from_secs(2));
        assert_eq!(c.lease_renew_interval(), Duration::from_secs(2));
        assert_eq!(c.static_pod_path, Some(dir.path().join("manifests")));
        assert_eq!(c.cgroup_root, "/kubelet");
        assert_eq!(c.settings.eviction_hard().len(), 1);
        assert_eq!(c.settings.register_with_taints[0].effect, "NoSchedule");
        assert!(c.settings.feature_gates["SidecarContainers"]);

        let c = Config::resolve_with(
            &args(&[
                "--config",
                file_arg,
                "--max-pods",
                "7",
                "--cluster-domain",
                "flag.local",
                "--cgroup-root",
                "/",
                "--pod-logs-dir",
                "/tmp/flag-logs",
                "--register-with-taints",
                "x=y:NoExecute",
                "--root-dir",
                "/tmp/k1",
                "--hostname-override",
                "Node-1",
            ]),
            &host,
        )
        .unwrap();
        assert_eq!(c.settings.max_pods, 7);
        assert_eq!(c.settings.cluster_domain.as_deref(), Some("flag.local"));
        assert_eq!(c.settings.cluster_dns, vec!["10.96.0.10".to_string()]);
        assert_eq!(c.cgroup_root, "/");
        assert_eq!(c.pod_logs_dir, PathBuf::from("/tmp/flag-logs"));
        assert_eq!(c.settings.register_with_taints[0].key, "x");
        assert_eq!(c.node_name, "node-1");
        let RuntimeConfig::BuiltIn(rt) = &c.runtime else {
            panic!("expected the built-in runtime")
        };
        assert_eq!(rt.root, PathBuf::from("/tmp/k1/cri"));
        assert_eq!(rt.socket, PathBuf::from("/tmp/k1/cri.sock"));

        let c = Config::resolve_with(
            &args(&[
                "--container-runtime-endpoint",
                "unix:///run/containerd/containerd.sock",
            ]),
            &host,
        )
        .unwrap();
        assert!(matches!(c.runtime, RuntimeConfig::Remote { .. }));
    }

    #[test]
    fn unknown_fields_warn() {
        let (dir, host) = host();
        let file = write_file(
            dir.path(),
            "k.json",
            r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration",
                "maxPodz": 3, "cpuManagerPolicy": "none", "authentication": {"x509": {}}}"#,
        );
        let c = Config::resolve_with(&args(&["--config", file.to_str().unwrap()]), &host).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"maxPodz\""), "{:?}", c.warnings);
        assert_eq!(c.settings.max_pods, 110);
    }

    #[test]
    fn malformed_values_name_file_and_field() {
        let (dir, host) = host();
        let cases = [
            ("maxPods: lots", "maxPods"),
            ("syncFrequency: often", "syncFrequency"),
            ("cgroupDriver: cgroupv3", "cgroupDriver"),
            (
                "imageGCLowThresholdPercent: 90",
                "imageGCLowThresholdPercent",
            ),
            ("kubeReserved: {memory: 1Zi}", "kubeReserved.memory"),
            ("imageMaximumGCAge: 1m", "imageMaximumGCAge"),
            ("containerLogMaxWorkers: 0", "containerLogMaxWorkers"),
            (
                "containerLogMonitorInterval: 1s",
                "containerLogMonitorInterval",
            ),
            (
                "evictionHard: {memory.available: 200%}",
                "evictionHard.memory.available",
            ),
            (
                "registerWithTaints: [{key: a, effect: Maybe}]",
                "registerWithTaints[0]",
            ),
            ("kind: KubeProxyConfiguration", "kind"),
        ];
        for (line, field) in cases {
            let text = format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{line}\n"
            );
            // The kind case replaces the kind line rather than repeating the key.
            let text = if field == "kind" {
                format!("apiVersion: kubelet.config.k8s.io/v1beta1\n{line}\n")
            } else {
                text
            };
            let file = write_file(dir.path(), "bad.yaml", &text);
            let err = Config::resolve_with(&args(&["--config", file.to_str().unwrap()]), &host)
                .expect_err(line)
                .to_string();
            assert!(
                err.contains(&file.display().to_string()) && err.contains(field),
                "{line}: error {err:?} should name the file and {field}"
            );
        }
    }

    #[test]
    fn bad_flags() {
        let (_d, host) = host();
        let parse = |list: &[&str]| {
            let mut all = vec!["kubelet"];
            all.extend(list);
            Cli::try_parse_from(all).map(|c| c.args)
        };
        let err = parse(&["--max-pods", "many"]).err().unwrap().to_string();
        assert!(err.contains("--max-pods"), "{err}");
        let err = parse(&["--no-such-flag"]).err().unwrap().to_string();
        assert!(err.contains("--no-such-flag"), "{err}");
        let err = parse(&["--register-with-taints", "k=v:Often"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--register-with-taints"), "{err}");

        let err = Config::resolve_with(&args(&["--cgroup-root", "/nope"]), &host)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--cgroup-root") && err.contains("/nope"),
            "{err}"
        );
        let err = Config::resolve_with(
            &args(&["--node-labels", "node-role.kubernetes.io/x="]),
            &host,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--node-labels"), "{err}");
        // A static pod dir that does not exist is fine.
        Config::resolve_with(&args(&["--pod-manifest-path", "/no/such/dir"]), &host).unwrap();
    }

    #[test]
    fn cgroup_v2_check() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory").unwrap();
        std::fs::create_dir(dir.path().join("kubelet")).unwrap();
        assert!(check_cgroup_exists(dir.path(), "/").is_ok());
        assert!(check_cgroup_exists(dir.path(), "/kubelet").is_ok());
        assert_eq!(
            check_cgroup_exists(dir.path(), "/other"),
            Err(dir.path().join("other"))
        );
    }
}
