//! The CRI configs for a pod's sandbox and containers (upstream's `generatePodSandboxConfig`,
//! `generateContainerConfig`, `generateLinuxContainerConfig` and the `securitycontext` helpers).
//!
//! Pure: whatever needs the node or the API — the resolved environment, the volume mounts, the
//! DNS settings, the cgroup parent, the pulled image's reference — is passed in. Log paths follow
//! CRI: the sandbox's `log_directory` is `<podLogsDir>/<ns>_<name>_<uid>` and a container's
//! `log_path` is `<container>/<restartCount>.log` relative to it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use cri::pb;
use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::labels;
use crate::env::expand;
use crate::qos::{milli_cpu_to_quota, milli_cpu_to_shares, DEFAULT_CPU_PERIOD};
use crate::quantity;

/// Paths masked in every unprivileged container (upstream's `defaultMaskedPaths`).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in every unprivileged container (upstream's `defaultReadonlyPaths`).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// `<podLogsDir>/<namespace>_<name>_<uid>`.
pub fn pod_log_dir(pod_logs_dir: &Path, pod: &Pod) -> PathBuf {
    pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    ))
}

/// `<container>/<restartCount>.log`, relative to the pod's log directory.
pub fn container_log_path(container: &str, restart_count: i32) -> String {
    format!("{container}/{restart_count}.log")
}

/// The restart count a container starts from when the runtime knows none of its instances: one
/// more than the highest `<n>.log` in its log directory (upstream's `calcRestartCountByLogDir`).
pub fn restart_count_from_log_dir(dir: &Path) -> i32 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
            let rest = &name[digits.len()..];
            (!digits.is_empty() && rest.starts_with(".log"))
                .then(|| digits.parse::<i32>().ok())
                .flatten()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

/// The pod's network namespace mode (upstream's `NetworkNamespaceForPod`).
pub fn network_namespace_mode(pod: &Pod) -> pb::NamespaceMode {
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
    {
        pb::NamespaceMode::Node
    } else {
        pb::NamespaceMode::Pod
    }
}

/// The namespaces of the pod's sandbox and containers (upstream's `NamespacesForPod`).
pub fn namespace_options(pod: &Pod) -> pb::NamespaceOption {
    let spec = pod.spec.as_ref();
    let ipc = if spec.and_then(|s| s.host_ipc).unwrap_or(false) {
        pb::NamespaceMode::Node
    } else {
        pb::NamespaceMode::Pod
    };
    let pid = if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        pb::NamespaceMode::Node
    } else if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        pb::NamespaceMode::Pod
    } else {
        pb::NamespaceMode::Container
    };
    pb::NamespaceOption {
        network: network_namespace_mode(pod) as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    }
}

/// The pod's hostname (upstream's `GeneratePodHostNameAndDomain`, without the domain): the
/// spec's hostname, else the pod's name truncated to 63 characters without a trailing `-`/`.`.
pub fn pod_hostname(pod: &Pod) -> String {
    if let Some(h) = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
    {
        return h;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with('-') || h.ends_with('.') {
        h.pop();
    }
    h
}

/// What the sandbox config needs from outside the pod.
#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// The kubelet's pod logs directory (`/var/log/pods`).
    pub pod_logs_dir: PathBuf,
    /// The DNS config from dnsPolicy and the cluster DNS settings (`None` for host DNS).
    pub dns: Option<pb::DnsConfig>,
    /// The pod's cgroup (cgroupfs path, or a systemd slice).
    pub cgroup_parent: String,
    /// Where `Localhost` seccomp profiles live (`<root-dir>/seccomp`).
    pub seccomp_profile_root: PathBuf,
    /// Default to the runtime's seccomp profile instead of unconfined (`seccompDefault`).
    pub seccomp_default: bool,
}

/// The pod's sandbox config (upstream's `generatePodSandboxConfig`).
pub fn sandbox_config(pod: &Pod, attempt: u32, opts: &SandboxOptions) -> pb::PodSandboxConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let mut port_mappings = Vec::new();
    for c in spec.map(|s| &s.containers[..]).unwrap_or(&[]) {
        for p in c.ports.iter().flatten() {
            port_mappings.push(pb::PortMapping {
                protocol: protocol(p.protocol.as_deref()) as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let psc = spec.and_then(|s| s.security_context.as_ref());
    let any_privileged = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| {
                c.security_context
                    .as_ref()
                    .and_then(|sc| sc.privileged)
                    .unwrap_or(false)
            })
    });
    let sysctls: HashMap<String, String> = psc
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
        // runc wants dots as separators (upstream's ConvertPodSysctlsVariableToDotsSeparator).
        .map(|s| (sysctl_dots(&s.name), s.value.clone()))
        .collect();
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname: if host_network {
            String::new()
        } else {
            pod_hostname(pod)
        },
        log_directory: pod_log_dir(&opts.pod_logs_dir, pod).display().to_string(),
        dns_config: opts.dns.clone(),
        port_mappings,
        labels: labels::pod_labels(pod),
        annotations: labels::pod_annotations(pod),
        linux: Some(pb::LinuxPodSandboxConfig {
            cgroup_parent: opts.cgroup_parent.clone(),
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc
                    .and_then(|p| p.run_as_user)
                    .map(|value| pb::Int64Value { value }),
                run_as_group: psc
                    .and_then(|p| p.run_as_group)
                    .map(|value| pb::Int64Value { value }),
                supplemental_groups: supplemental_groups(psc),
                privileged: any_privileged,
                seccomp: Some(seccomp_profile(
                    psc.and_then(|p| p.seccomp_profile.as_ref()),
                    None,
                    opts,
                )),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sysctl_dots(name: &str) -> String {
    // A name with slashes uses them as separators and may contain dots inside a component.
    if name.contains('/') {
        name.chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect()
    } else {
        name.to_string()
    }
}

fn protocol(p: Option<&str>) -> pb::Protocol {
    match p {
        Some("UDP") => pb::Protocol::Udp,
        Some("SCTP") => pb::Protocol::Sctp,
        _ => pb::Protocol::Tcp,
    }
}

fn supplemental_groups(psc: Option<&PodSecurityContext>) -> Vec<i64> {
    let mut g = Vec::new();
    if let Some(p) = psc {
        if let Some(fs) = p.fs_group {
            g.push(fs);
        }
        g.extend(p.supplemental_groups.iter().flatten().copied());
    }
    g
}

fn seccomp_profile(
    pod: Option<&SeccompProfile>,
    container: Option<&SeccompProfile>,
    opts: &SandboxOptions,
) -> pb::SecurityProfile {
    use pb::security_profile::ProfileType;
    let chosen = container.or(pod);
    match chosen {
        Some(p) if p.type_ == "Localhost" => pb::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: opts
                .seccomp_profile_root
                .join(p.localhost_profile.as_deref().unwrap_or_default())
                .display()
                .to_string(),
        },
        Some(p) if p.type_ == "RuntimeDefault" => pb::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            ..Default::default()
        },
        Some(_) => pb::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        },
        None if opts.seccomp_default => pb::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            ..Default::default()
        },
        None => pb::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            ..Default::default()
        },
    }
}

/// What a container config needs from outside the pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerOptions {
    /// The image reference the pull resolved to (the image id or digest).
    pub image_ref: String,
    /// The resolved environment, in order.
    pub envs: Vec<(String, String)>,
    /// Volume mounts, /etc/hosts, /etc/resolv.conf, the termination-message file.
    pub mounts: Vec<pb::Mount>,
    /// Annotations from device plugins and the like (the kubelet's own win).
    pub annotations: HashMap<String, String>,
    /// The OOM score adjustment from the pod's QoS class.
    pub oom_score_adj: i64,
    /// Enforce CPU limits with CFS quota (`cpuCFSQuota`, on by default).
    pub cpu_cfs_quota: bool,
    /// The user the image runs as, when numeric (for runAsNonRoot).
    pub image_uid: Option<i64>,
    /// The user the image runs as, when a name.
    pub image_user: String,
}

/// Why a container config cannot be made (the container then shows CreateContainerConfigError).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    RunsAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    NonNumericUser {
        pod: String,
        container: String,
        user: String,
    },
}

/// The container's CRI config (upstream's `generateContainerConfig` with
/// `generateLinuxContainerConfig`).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    restart_count: i32,
    sandbox: &SandboxOptions,
    opts: &ContainerOptions,
) -> Result<pb::ContainerConfig, ConfigError> {
    let sc = effective_security_context(pod, c);
    verify_run_as_non_root(pod, c, &sc, opts)?;
    let env_map: HashMap<&str, &str> = opts
        .envs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| expand(s, |name| env_map.get(name).map(|v| v.to_string())))
            .collect()
    };
    let privileged = sc.privileged.unwrap_or(false);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let proc_unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let linux_sc = pb::LinuxContainerSecurityContext {
        capabilities: sc.capabilities.as_ref().map(|caps| pb::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        privileged,
        namespace_options: Some(namespace_options(pod)),
        run_as_user: sc.run_as_user.map(|value| pb::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| pb::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental_groups(psc),
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: if privileged || proc_unmasked {
            Vec::new()
        } else {
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        },
        readonly_paths: if privileged || proc_unmasked {
            Vec::new()
        } else {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect()
        },
        seccomp: Some(seccomp_profile(
            psc.and_then(|p| p.seccomp_profile.as_ref()),
            c.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref()),
            sandbox,
        )),
        ..Default::default()
    };
    Ok(pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: c.name.clone(),
            attempt: restart_count.max(0) as u32,
        }),
        image: Some(pb::ImageSpec {
            image: if opts.image_ref.is_empty() {
                c.image.clone().unwrap_or_default()
            } else {
                opts.image_ref.clone()
            },
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: opts
            .envs
            .iter()
            .map(|(k, v)| pb::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: opts.mounts.clone(),
        labels: labels::container_labels(c, pod),
        annotations: labels::container_annotations(c, pod, restart_count, &opts.annotations),
        log_path: container_log_path(&c.name, restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(pb::LinuxContainerConfig {
            resources: Some(linux_resources(c, opts.oom_score_adj, opts.cpu_cfs_quota)),
            security_context: Some(linux_sc),
        }),
        ..Default::default()
    })
}

/// The container's security context with the pod's settings filled in where the container has
/// none (upstream's `DetermineEffectiveSecurityContext`).
pub fn effective_security_context(pod: &Pod, c: &Container) -> SecurityContext {
    let mut sc = c.security_context.clone().unwrap_or_default();
    if let Some(p) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) {
        sc.run_as_user = sc.run_as_user.or(p.run_as_user);
        sc.run_as_group = sc.run_as_group.or(p.run_as_group);
        sc.run_as_non_root = sc.run_as_non_root.or(p.run_as_non_root);
        if sc.se_linux_options.is_none() {
            sc.se_linux_options = p.se_linux_options.clone();
        }
        if sc.seccomp_profile.is_none() {
            sc.seccomp_profile = p.seccomp_profile.clone();
        }
    }
    sc
}

/// Upstream's `verifyRunAsNonRoot`.
fn verify_run_as_non_root(
    pod: &Pod,
    c: &Container,
    sc: &SecurityContext,
    opts: &ContainerOptions,
) -> Result<(), ConfigError> {
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_name = super::pod_full_name(pod);
    if let Some(uid) = sc.run_as_user {
        if uid == 0 {
            return Err(ConfigError::RunsAsRoot {
                pod: pod_name,
                container: c.name.clone(),
            });
        }
        return Ok(());
    }
    match opts.image_uid {
        Some(0) => Err(ConfigError::RunsAsRoot {
            pod: pod_name,
            container: c.name.clone(),
        }),
        Some(_) => Ok(()),
        None if !opts.image_user.is_empty() => Err(ConfigError::NonNumericUser {
            pod: pod_name,
            container: c.name.clone(),
            user: opts.image_user.clone(),
        }),
        None => Err(ConfigError::RunsAsRoot {
            pod: pod_name,
            container: c.name.clone(),
        }),
    }
}

/// The container's cgroup settings (upstream's `generateLinuxContainerResources`): shares from the
/// CPU request (the limit when only that is set), quota from the CPU limit over a 100 ms period,
/// the memory limit.
pub fn linux_resources(
    c: &Container,
    oom_score_adj: i64,
    cpu_cfs_quota: bool,
) -> pb::LinuxContainerResources {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let get = |m: Option<&BTreeMap<String, Quantity>>, k: &str, f: fn(&Quantity) -> i64| {
        m.and_then(|m| m.get(k)).map(f).unwrap_or(0)
    };
    let cpu_req = get(requests, "cpu", quantity::milli_value);
    let cpu_lim = get(limits, "cpu", quantity::milli_value);
    let mem_lim = get(limits, "memory", quantity::value);
    let shares = if cpu_req == 0 && cpu_lim != 0 {
        milli_cpu_to_shares(cpu_lim)
    } else {
        milli_cpu_to_shares(cpu_req)
    } as i64;
    let mut r = pb::LinuxContainerResources {
        cpu_shares: shares,
        memory_limit_in_bytes: mem_lim,
        oom_score_adj,
        ..Default::default()
    };
    if cpu_cfs_quota {
        r.cpu_period = DEFAULT_CPU_PERIOD as i64;
        r.cpu_quota = milli_cpu_to_quota(cpu_lim, r.cpu_period);
    }
    r
}
