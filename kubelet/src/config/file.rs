//! The KubeletConfiguration file (`kubelet.config.k8s.io/v1beta1`), YAML or JSON, as `--config`
//! names it. There is no k8s-openapi type for it (it is a component config, not an API object), so
//! this is our own serde struct with upstream's field names and upstream's defaults
//! (`SetDefaults_KubeletConfiguration` in `pkg/kubelet/apis/config/v1beta1/defaults.go`).
//!
//! Decoding goes YAML/JSON → `serde_json::Value` → struct through two wrappers: `serde_ignored`
//! collects fields the struct does not know (upstream rejects unknown fields with strict decoding;
//! we warn, so that a file written for a newer kubelet still starts this one), and
//! `serde_path_to_error` names the field whose value is malformed. Fields upstream has but Capstan
//! does not act on are listed in [`UPSTREAM_FIELDS_NOT_USED`]: those are accepted quietly, so that
//! a kubeadm-written file produces warnings only for real typos.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::duration::{serde_opt, serde_req};
use super::quantity;
use super::ConfigError;

/// The group/version this file format is served as.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The kind of the file's object.
pub const KIND: &str = "KubeletConfiguration";

/// Upstream's hard eviction thresholds when `evictionHard` is not given
/// (`pkg/kubelet/eviction/defaults_linux.go`).
pub const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
];

/// The eviction signals upstream knows (`pkg/kubelet/eviction/api/types.go`).
const EVICTION_SIGNALS: &[&str] = &[
    "memory.available",
    "allocatableMemory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// Resource names a reservation (`kubeReserved`, `systemReserved`) may name.
const RESERVABLE: &[&str] = &["cpu", "memory", "ephemeral-storage", "pid"];

/// Fields of upstream's v1beta1 KubeletConfiguration that Capstan accepts but does not act on.
pub const UPSTREAM_FIELDS_NOT_USED: &[&str] = &[
    "staticPodURL",
    "staticPodURLHeader",
    "tlsCipherSuites",
    "tlsMinVersion",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "enableContentionProfiling",
    "cpuManagerPolicyOptions",
    "singleProcessOOMKill",
    "cpuManagerReconcilePeriod",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "configMapAndSecretChangeDetectionStrategy",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "volumePluginDir",
    "kernelMemcgNotification",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "memoryThrottlingFactor",
    "memorySwap",
    "tracing",
    "userNamespaces",
    "podHousekeepingPeriod",
    "maxOpenFiles",
    "contentType",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "cpuManagerPolicy",
    "hairpinMode",
    "runOnce",
    "volumeStatsAggPeriod",
    "streamingConnectionIdleTimeout",
    "oomScoreAdj",
    "enableDebuggingHandlers",
    "kubeletCgroups",
    "systemCgroups",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "enableControllerAttachDetach",
    "allowedUnsafeSysctls",
    "seccompDefault",
    "localStorageCapacityIsolation",
    "failCgroupV1",
    "failSwapOn",
    "podsPerCore",
    "evictionMinimumReclaim",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMaxPodGracePeriod",
];

/// The fields of KubeletConfiguration that Capstan reads, with upstream's names and defaults.
/// Maps are `BTreeMap` so that a printed configuration is stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletConfiguration {
    pub kind: String,
    pub api_version: String,

    /// Whether the kubelet's server (port 10250) runs.
    pub enable_server: bool,
    /// Directory of static pod manifests (`--pod-manifest-path`).
    pub static_pod_path: Option<String>,
    /// Where container logs are kept (`/var/log/pods`).
    pub pod_logs_dir: String,
    /// How often running pods are re-synced (1m).
    #[serde(with = "serde_req")]
    pub sync_frequency: Duration,
    /// How often static pod manifests are re-read (20s).
    #[serde(with = "serde_req")]
    pub file_check_frequency: Duration,
    #[serde(with = "serde_req")]
    pub http_check_frequency: Duration,

    /// The server's bind address (0.0.0.0) and port (10250); readOnlyPort 0 disables that one.
    pub address: String,
    pub port: i32,
    pub read_only_port: i32,
    pub tls_cert_file: Option<String>,
    pub tls_private_key_file: Option<String>,
    pub rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    /// Who may call the kubelet server: client certificates, bearer tokens, anonymous.
    pub authentication: KubeletAuthentication,
    /// What they may do there: `Webhook` (SubjectAccessReview) or `AlwaysAllow`.
    pub authorization: KubeletAuthorization,
    pub healthz_port: i32,
    pub healthz_bind_address: String,

    #[serde(rename = "registryPullQPS")]
    pub registry_pull_qps: i32,
    pub registry_burst: i32,
    #[serde(rename = "eventRecordQPS")]
    pub event_record_qps: i32,
    pub event_burst: i32,
    #[serde(rename = "kubeAPIQPS")]
    pub kube_api_qps: i32,
    #[serde(rename = "kubeAPIBurst")]
    pub kube_api_burst: i32,

    /// Cluster DNS: the resolvers put in pods' resolv.conf and the search domain's base.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: String,

    /// How often node status is computed (10s) and, when unchanged, still reported (5m, or the
    /// update frequency when only that one is given, as upstream).
    #[serde(with = "serde_opt", skip_serializing_if = "Option::is_none")]
    pub node_status_update_frequency: Option<Duration>,
    #[serde(with = "serde_opt", skip_serializing_if = "Option::is_none")]
    pub node_status_report_frequency: Option<Duration>,
    /// The node Lease's duration (40); it is renewed every quarter of it.
    pub node_lease_duration_seconds: i32,
    pub node_status_max_images: i32,

    #[serde(rename = "imageMinimumGCAge", with = "serde_req")]
    pub image_minimum_gc_age: Duration,
    #[serde(rename = "imageMaximumGCAge", with = "serde_req")]
    pub image_maximum_gc_age: Duration,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: i32,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: i32,
    /// Pull images one at a time (defaults to true unless maxParallelImagePulls > 1).
    pub serialize_image_pulls: Option<bool>,
    pub max_parallel_image_pulls: Option<i32>,

    /// The cgroup all pods go under ("" = the root) and the driver naming cgroups.
    pub cgroup_root: String,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: bool,
    pub cgroup_driver: CgroupDriver,
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: bool,
    #[serde(rename = "cpuCFSQuotaPeriod", with = "serde_req")]
    pub cpu_cfs_quota_period: Duration,
    #[serde(with = "serde_req")]
    pub runtime_request_timeout: Duration,

    pub max_pods: i32,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    /// Per-pod PID limit; -1 = the node's.
    pub pod_pids_limit: i64,

    /// Hard eviction thresholds (`memory.available: 100Mi`, `nodefs.available: 10%`, …);
    /// `None` = upstream's defaults.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Fill the thresholds `evictionHard` leaves out from the defaults.
    pub merge_default_eviction_settings: bool,
    #[serde(with = "serde_req")]
    pub eviction_pressure_transition_period: Duration,

    /// Resources set aside for the system and for Kubernetes daemons, taken off allocatable.
    pub system_reserved: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    pub enforce_node_allocatable: Vec<String>,

    /// Container log rotation: size (a quantity, 10Mi) and files kept (5), how many containers'
    /// logs are rotated at once (1) and how often they are checked (10s).
    pub container_log_max_size: String,
    pub container_log_max_files: i32,
    pub container_log_max_workers: i32,
    #[serde(with = "serde_req")]
    pub container_log_monitor_interval: Duration,

    pub feature_gates: BTreeMap<String, bool>,
    #[serde(with = "serde_req")]
    pub shutdown_grace_period: Duration,
    #[serde(with = "serde_req")]
    pub shutdown_grace_period_critical_pods: Duration,

    pub register_node: bool,
    /// Taints the Node is created with.
    pub register_with_taints: Vec<Taint>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    /// A remote CRI runtime's socket; absent = the built-in runtime.
    pub container_runtime_endpoint: Option<String>,
    pub image_service_endpoint: Option<String>,
    pub logging: Value,
}

/// `authentication`: upstream's `KubeletAuthentication` with its v1beta1 defaults (anonymous
/// off, webhook on with a 2m cache).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletAuthentication {
    pub x509: KubeletX509Authentication,
    pub webhook: KubeletWebhookAuthentication,
    pub anonymous: KubeletAnonymousAuthentication,
}

/// `authentication.x509`: the CA bundle that verifies client certificates (`--client-ca-file`);
/// none = the CA of the kubeconfig's cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletX509Authentication {
    #[serde(rename = "clientCAFile", skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// `authentication.webhook`: bearer tokens checked with a TokenReview, answers cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletWebhookAuthentication {
    pub enabled: bool,
    #[serde(rename = "cacheTTL", with = "serde_req")]
    pub cache_ttl: Duration,
}

impl Default for KubeletWebhookAuthentication {
    fn default() -> Self {
        KubeletWebhookAuthentication {
            enabled: true,
            cache_ttl: Duration::from_secs(120),
        }
    }
}

/// `authentication.anonymous`: requests without credentials as `system:anonymous`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletAnonymousAuthentication {
    pub enabled: bool,
}

/// `authorization`: the mode and the webhook's cache lifetimes (5m allowed, 30s denied).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletAuthorization {
    pub mode: KubeletAuthorizationMode,
    pub webhook: KubeletWebhookAuthorization,
}

/// `authorization.mode` (`--authorization-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum KubeletAuthorizationMode {
    /// Every authenticated request is allowed.
    #[value(name = "AlwaysAllow")]
    AlwaysAllow,
    /// A SubjectAccessReview to the API server decides.
    #[default]
    #[value(name = "Webhook")]
    Webhook,
}

/// `authorization.webhook`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL", with = "serde_req")]
    pub cache_authorized_ttl: Duration,
    #[serde(rename = "cacheUnauthorizedTTL", with = "serde_req")]
    pub cache_unauthorized_ttl: Duration,
}

impl Default for KubeletWebhookAuthorization {
    fn default() -> Self {
        KubeletWebhookAuthorization {
            cache_authorized_ttl: Duration::from_secs(300),
            cache_unauthorized_ttl: Duration::from_secs(30),
        }
    }
}

/// How cgroups are named and created (`cgroupDriver`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

impl Default for KubeletConfiguration {
    fn default() -> Self {
        KubeletConfiguration {
            kind: KIND.into(),
            api_version: API_VERSION.into(),
            enable_server: true,
            static_pod_path: None,
            pod_logs_dir: "/var/log/pods".into(),
            sync_frequency: Duration::from_secs(60),
            file_check_frequency: Duration::from_secs(20),
            http_check_frequency: Duration::from_secs(20),
            address: "0.0.0.0".into(),
            port: 10250,
            read_only_port: 0,
            tls_cert_file: None,
            tls_private_key_file: None,
            rotate_certificates: false,
            server_tls_bootstrap: false,
            authentication: KubeletAuthentication::default(),
            authorization: KubeletAuthorization::default(),
            healthz_port: 10248,
            healthz_bind_address: "127.0.0.1".into(),
            registry_pull_qps: 5,
            registry_burst: 10,
            event_record_qps: 50,
            event_burst: 100,
            kube_api_qps: 50,
            kube_api_burst: 100,
            cluster_dns: Vec::new(),
            cluster_domain: None,
            resolv_conf: "/etc/resolv.conf".into(),
            node_status_update_frequency: None,
            node_status_report_frequency: None,
            node_lease_duration_seconds: 40,
            node_status_max_images: 50,
            image_minimum_gc_age: Duration::from_secs(120),
            image_maximum_gc_age: Duration::ZERO,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            serialize_image_pulls: None,
            max_parallel_image_pulls: None,
            cgroup_root: String::new(),
            cgroups_per_qos: true,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cpu_cfs_quota: true,
            cpu_cfs_quota_period: Duration::from_millis(100),
            runtime_request_timeout: Duration::from_secs(120),
            max_pods: 110,
            pod_cidr: None,
            pod_pids_limit: -1,
            eviction_hard: None,
            merge_default_eviction_settings: false,
            eviction_pressure_transition_period: Duration::from_secs(300),
            system_reserved: BTreeMap::new(),
            kube_reserved: BTreeMap::new(),
            enforce_node_allocatable: vec!["pods".into()],
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            container_log_max_workers: 1,
            container_log_monitor_interval: Duration::from_secs(10),
            feature_gates: BTreeMap::new(),
            shutdown_grace_period: Duration::ZERO,
            shutdown_grace_period_critical_pods: Duration::ZERO,
            register_node: true,
            register_with_taints: Vec::new(),
            provider_id: None,
            container_runtime_endpoint: None,
            image_service_endpoint: None,
            logging: json!({"format": "text"}),
        }
    }
}

impl KubeletConfiguration {
    /// Reads and decodes a file, returning the configuration and the unknown fields' paths.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_text(&text, path)
    }

    /// Decodes YAML or JSON text; `path` only names the file in errors.
    pub fn from_text(text: &str, path: &Path) -> Result<(Self, Vec<String>), ConfigError> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
        };
        if !value.is_object() {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                message: "expected a KubeletConfiguration object".into(),
            });
        }
        let mut unknown = Vec::new();
        let mut record = |p: serde_ignored::Path| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut record);
        let mut config: KubeletConfiguration =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Field {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let invalid = |field: &str, message: String| ConfigError::Field {
            path: path.to_path_buf(),
            field: field.into(),
            message,
        };
        if config.kind != KIND {
            return Err(invalid(
                "kind",
                format!("expected {KIND:?}, found {:?}", config.kind),
            ));
        }
        if config.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("expected {API_VERSION:?}, found {:?}", config.api_version),
            ));
        }
        config.apply_dependent_defaults();
        config.validate().map_err(|(f, m)| invalid(&f, m))?;
        unknown.retain(|f| !UPSTREAM_FIELDS_NOT_USED.contains(&f.as_str()));
        Ok((config, unknown))
    }

    /// The defaults that depend on other fields, as upstream computes them after decoding.
    pub fn apply_dependent_defaults(&mut self) {
        if self.node_status_report_frequency.is_none() {
            self.node_status_report_frequency = Some(
                self.node_status_update_frequency
                    .unwrap_or(Duration::from_secs(300)),
            );
        }
        if self.node_status_update_frequency.is_none() {
            self.node_status_update_frequency = Some(Duration::from_secs(10));
        }
        if self.serialize_image_pulls.is_none() {
            self.serialize_image_pulls = Some(self.max_parallel_image_pulls.is_none_or(|n| n < 2));
        }
        if self.pod_pids_limit < 0 {
            self.pod_pids_limit = -1;
        }
    }

    /// How often node status is computed.
    pub fn node_status_update_frequency(&self) -> Duration {
        self.node_status_update_frequency
            .unwrap_or(Duration::from_secs(10))
    }

    /// How often node status is reported even when nothing changed.
    pub fn node_status_report_frequency(&self) -> Duration {
        self.node_status_report_frequency
            .unwrap_or(Duration::from_secs(300))
    }

    /// The effective hard eviction thresholds.
    pub fn eviction_hard(&self) -> BTreeMap<String, String> {
        let defaults = || {
            DEFAULT_EVICTION_HARD
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
        };
        match &self.eviction_hard {
            None => defaults().collect(),
            Some(given) if self.merge_default_eviction_settings => {
                let mut all: BTreeMap<String, String> = defaults().collect();
                all.extend(given.clone());
                all
            }
            Some(given) => given.clone(),
        }
    }

    /// Upstream's validation of the fields Capstan uses: `(field, message)` of the first failure.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |f: &str, m: String| Err((f.to_string(), m));
        let pct = |v: i32| (0..=100).contains(&v);
        if !pct(self.image_gc_high_threshold_percent) {
            return fail(
                "imageGCHighThresholdPercent",
                format!(
                    "{} must be between 0 and 100",
                    self.image_gc_high_threshold_percent
                ),
            );
        }
        if !pct(self.image_gc_low_threshold_percent) {
            return fail(
                "imageGCLowThresholdPercent",
                format!(
                    "{} must be between 0 and 100",
                    self.image_gc_low_threshold_percent
                ),
            );
        }
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            return fail(
                "imageGCLowThresholdPercent",
                format!(
                    "{} must be less than imageGCHighThresholdPercent {}",
                    self.image_gc_low_threshold_percent, self.image_gc_high_threshold_percent
                ),
            );
        }
        if !self.image_maximum_gc_age.is_zero()
            && self.image_maximum_gc_age <= self.image_minimum_gc_age
        {
            return fail(
                "imageMaximumGCAge",
                format!(
                    "{:?} must be greater than imageMinimumGCAge {:?}",
                    self.image_maximum_gc_age, self.image_minimum_gc_age
                ),
            );
        }
        if self.node_lease_duration_seconds <= 0 {
            return fail(
                "nodeLeaseDurationSeconds",
                format!(
                    "{} must be greater than 0",
                    self.node_lease_duration_seconds
                ),
            );
        }
        for (field, d) in [
            (
                "nodeStatusUpdateFrequency",
                self.node_status_update_frequency(),
            ),
            (
                "nodeStatusReportFrequency",
                self.node_status_report_frequency(),
            ),
            ("syncFrequency", self.sync_frequency),
            ("fileCheckFrequency", self.file_check_frequency),
        ] {
            if d.is_zero() {
                return fail(field, "must be greater than 0".into());
            }
        }
        if self.max_pods < 0 {
            return fail("maxPods", format!("{} must not be negative", self.max_pods));
        }
        // Port 0 turns a server off (upstream requires 1-65535 for `port` and uses
        // enableServer instead; several kubelets on one host need the off switch per port).
        for (field, port, zero_ok) in [
            ("port", self.port, true),
            ("readOnlyPort", self.read_only_port, true),
            ("healthzPort", self.healthz_port, true),
        ] {
            if !((1..=65535).contains(&port) || (port == 0 && zero_ok)) {
                return fail(field, format!("{port} must be between 1 and 65535"));
            }
        }
        if self.container_log_max_files < 2 {
            return fail(
                "containerLogMaxFiles",
                format!("{} must be at least 2", self.container_log_max_files),
            );
        }
        if quantity::parse_milli(&self.container_log_max_size).is_none_or(|v| v < 0) {
            return fail(
                "containerLogMaxSize",
                format!("{:?} is not a quantity", self.container_log_max_size),
            );
        }
        if self.container_log_max_workers < 1 {
            return fail(
                "containerLogMaxWorkers",
                "must be greater than or equal to 1".into(),
            );
        }
        if self.container_log_monitor_interval < Duration::from_secs(3) {
            return fail(
                "containerLogMonitorInterval",
                "must be a positive time duration greater than or equal to 3s".into(),
            );
        }
        for (field, map) in [
            ("kubeReserved", &self.kube_reserved),
            ("systemReserved", &self.system_reserved),
        ] {
            for (k, v) in map {
                if !RESERVABLE.contains(&k.as_str()) {
                    return fail(
                        &format!("{field}.{k}"),
                        format!("unsupported resource, expected one of {RESERVABLE:?}"),
                    );
                }
                if quantity::parse_milli(v).is_none_or(|v| v < 0) {
                    return fail(
                        &format!("{field}.{k}"),
                        format!("{v:?} is not a non-negative quantity"),
                    );
                }
            }
        }
        for (k, v) in self.eviction_hard.iter().flatten() {
            if !EVICTION_SIGNALS.contains(&k.as_str()) {
                return fail(
                    &format!("evictionHard.{k}"),
                    "unknown eviction signal".into(),
                );
            }
            if Threshold::parse(v).is_none() {
                return fail(
                    &format!("evictionHard.{k}"),
                    format!("{v:?} is neither a quantity nor a percentage"),
                );
            }
        }
        for (i, t) in self.register_with_taints.iter().enumerate() {
            if let Err(m) = super::flags::validate_taint(t) {
                return fail(&format!("registerWithTaints[{i}]"), m);
            }
        }
        Ok(())
    }
}

/// An eviction threshold's value: an absolute quantity or a percentage of capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Milli-units.
    Quantity(i128),
    /// 0.0 ..= 1.0.
    Percentage(f64),
}

impl Threshold {
    pub fn parse(s: &str) -> Option<Threshold> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let v: f64 = p.parse().ok()?;
            return (0.0..=100.0)
                .contains(&v)
                .then_some(Threshold::Percentage(v / 100.0));
        }
        quantity::parse_milli(s)
            .filter(|v| *v >= 0)
            .map(Threshold::Quantity)
    }

    /// The threshold against a capacity, both in milli-units.
    pub fn against(self, capacity_milli: i128) -> i128 {
        match self {
            Threshold::Quantity(q) => q,
            Threshold::Percentage(p) => (capacity_milli as f64 * p) as i128,
        }
    }
}

/// The file's path made absolute against the directory `--config` was in, as upstream resolves
/// relative paths in the file.
pub fn resolve_relative(config_file: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }
}
