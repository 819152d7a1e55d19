//! The OCI runtime spec of a container, built from its CRI `ContainerConfig`, the pod's
//! `PodSandboxConfig`, the image's configuration and the paths the runtime prepared (rootfs,
//! pinned namespaces, cgroup, the sandbox's hostname/hosts/resolv.conf files).
//!
//! The mapping follows containerd's CRI plugin (`pkg/cri/.../container_create_linux.go` and
//! `pkg/oci`): its default mounts, capability set, masked and read-only paths, device rules,
//! the entrypoint/command merge, user and group resolution against the image's `/etc/passwd`
//! and `/etc/group`, and `restrict_oom_score_adj`. It is a pure function of its input (plus the
//! rootfs files and host devices it reads), so unit tests cover it without root.
//!
//! The spec is assembled as OCI JSON and deserialised into `oci_spec::runtime::Spec`: the shape
//! on the page is the one in the runtime-spec documents.

mod seccomp;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::image_config::ImageConfig;
use crate::pb;
use pb::security_profile::ProfileType;

/// PATH when neither the image nor the config gives one (containerd's default).
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, by number (`include/uapi/linux/capability.h`).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// containerd's default masked paths.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
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

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where the container's PID namespace comes from (CRI `NamespaceOption.pid`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PidNamespace {
    /// A new namespace of its own (`CONTAINER`).
    #[default]
    Container,
    /// The pod's shared namespace (`POD`): the supervisor's init, `/proc/<pid>/ns/pid`.
    Pod(PathBuf),
    /// The host's (`NODE`).
    Host,
    /// Another container's (`TARGET`).
    Target(PathBuf),
}

/// The namespaces to join; `None` means the host's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NamespacePaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: PidNamespace,
}

/// What the host offers, probed once at start-up (`HostInfo::probe`) or set by tests.
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    /// The cgroup hierarchy in use is v2 (unified).
    pub cgroup_v2: bool,
    /// A hugetlb controller exists on the hierarchy in use.
    pub hugetlb: bool,
    /// `restrict_oom_score_adj`: the lowest oom_score_adj a container may ask for (this
    /// process's own, when it cannot lower it); `None` = no restriction.
    pub min_oom_score_adj: Option<i32>,
}

impl HostInfo {
    pub fn probe() -> Self {
        let cgroup_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let hugetlb = if cgroup_v2 {
            fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .map(|s| s.split_whitespace().any(|c| c == "hugetlb"))
                .unwrap_or(false)
        } else {
            Path::new("/sys/fs/cgroup/hugetlb").exists()
        };
        let own = fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Self {
            cgroup_v2,
            hugetlb,
            min_oom_score_adj: if has_cap_sys_resource() { None } else { own },
        }
    }
}

/// CAP_SYS_RESOURCE (24) in this process's effective set.
fn has_cap_sys_resource() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Everything `build` needs.
#[derive(Clone, Debug)]
pub struct SpecInput<'a> {
    pub config: &'a pb::ContainerConfig,
    pub sandbox: &'a pb::PodSandboxConfig,
    pub image: &'a ImageConfig,
    /// The container's root filesystem (already mounted); its `/etc/passwd` and `/etc/group`
    /// resolve user names.
    pub rootfs: PathBuf,
    pub namespaces: NamespacePaths,
    /// OCI `linux.cgroupsPath` (e.g. `/capstan/pod<uid>/<id>`).
    pub cgroups_path: String,
    pub hostname_path: Option<PathBuf>,
    pub resolv_conf_path: Option<PathBuf>,
    pub hosts_path: Option<PathBuf>,
    /// The pod's pids limit, when the runtime enforces one per container.
    pub pids_limit: Option<i64>,
    pub host: HostInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("user {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("invalid mount {container_path:?}: {reason}")]
    Mount {
        container_path: String,
        reason: String,
    },
    #[error("device {host_path:?}: {reason}")]
    Device { host_path: String, reason: String },
    #[error("unknown capability {0:?}")]
    Capability(String),
    #[error("seccomp profile {profile:?}: {reason}")]
    Seccomp { profile: String, reason: String },
    #[error("building the OCI spec: {0}")]
    Oci(#[from] serde_json::Error),
}

/// Builds the container's OCI runtime spec.
pub fn build(input: &SpecInput) -> Result<oci_spec::runtime::Spec, SpecError> {
    let cfg = input.config;
    let linux = cfg.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let privileged = sc.privileged;

    let args = process_args(cfg, input.image)?;
    let env = process_env(cfg, input.image);
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else {
        input
            .image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let user = resolve_user(&input.rootfs, &sc, input.image)?;
    let caps = if privileged {
        all_capabilities()
    } else {
        capabilities(sc.capabilities.as_ref())?
    };

    let mut process = json!({
        "terminal": cfg.tty,
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": user.additional_gids,
        },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
        },
    });
    // Only when set: libcontainer 0.7 takes any present value (even false) to mean the seccomp
    // filter loads after the capabilities are dropped, which then fails without NNP.
    if sc.no_new_privs {
        process["noNewPrivileges"] = json!(true);
    }
    if res.oom_score_adj != 0 || input.host.min_oom_score_adj.is_some() {
        let want = res.oom_score_adj as i32;
        let adj = match input.host.min_oom_score_adj {
            Some(min) if want < min => min,
            _ => want,
        };
        process["oomScoreAdj"] = json!(adj);
    }

    let host_net = input.namespaces.net.is_none();
    let mut mounts = default_mounts(privileged, host_net);
    let read_only_etc = sc.readonly_rootfs;
    for (dest, src) in [
        ("/etc/hostname", &input.hostname_path),
        ("/etc/hosts", &input.hosts_path),
        ("/etc/resolv.conf", &input.resolv_conf_path),
    ] {
        if let Some(src) = src {
            mounts.push(bind_mount(dest, src, read_only_etc, "rprivate"));
        }
    }
    let mut rootfs_propagation = None;
    let mut user_mounts = cfg.mounts.clone();
    user_mounts.sort_by_key(|m| Path::new(&m.container_path).components().count());
    for m in &user_mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(SpecError::Mount {
                container_path: m.container_path.clone(),
                reason: "the container path must be absolute".into(),
            });
        }
        if m.host_path.is_empty() {
            return Err(SpecError::Mount {
                container_path: m.container_path.clone(),
                reason: "no host path".into(),
            });
        }
        let propagation = match pb::MountPropagation::try_from(m.propagation) {
            Ok(pb::MountPropagation::PropagationHostToContainer) => {
                rootfs_propagation.get_or_insert("rslave");
                "rslave"
            }
            Ok(pb::MountPropagation::PropagationBidirectional) => {
                rootfs_propagation = Some("rshared");
                "rshared"
            }
            _ => "rprivate",
        };
        // A user mount replaces a default one at the same place.
        mounts.retain(|d| d["destination"] != json!(m.container_path));
        mounts.push(bind_mount(
            &m.container_path,
            Path::new(&m.host_path),
            m.readonly,
            propagation,
        ));
    }

    let mut namespaces = vec![json!({"type": "mount"})];
    let ns = &input.namespaces;
    for (kind, path) in [("network", &ns.net), ("ipc", &ns.ipc), ("uts", &ns.uts)] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }
    match &ns.pid {
        PidNamespace::Container => namespaces.push(json!({"type": "pid"})),
        PidNamespace::Pod(p) | PidNamespace::Target(p) => {
            namespaces.push(json!({"type": "pid", "path": p}))
        }
        PidNamespace::Host => {}
    }
    if input.host.cgroup_v2 {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let (devices, device_rules) = devices(&cfg.devices, privileged)?;
    let mut linux_json = json!({
        "namespaces": namespaces,
        "cgroupsPath": input.cgroups_path,
        "resources": resources(&res, input, device_rules),
        "devices": devices,
    });
    let sysctls: BTreeMap<String, String> = input
        .sandbox
        .linux
        .as_ref()
        .map(|l| {
            l.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !sysctls.is_empty() {
        linux_json["sysctl"] = json!(sysctls);
    }
    if !privileged {
        let masked: Vec<String> = if sc.masked_paths.is_empty() {
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
        } else {
            sc.masked_paths.clone()
        };
        let readonly: Vec<String> = if sc.readonly_paths.is_empty() {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            sc.readonly_paths.clone()
        };
        linux_json["maskedPaths"] = json!(masked);
        linux_json["readonlyPaths"] = json!(readonly);
        if let Some(profile) = seccomp(&sc, &caps)? {
            linux_json["seccomp"] = profile;
        }
    }
    if let Some(p) = rootfs_propagation {
        linux_json["rootfsPropagation"] = json!(p);
    }

    let mut spec = json!({
        "ociVersion": "1.0.2",
        "root": {"path": input.rootfs, "readonly": sc.readonly_rootfs},
        "process": process,
        "mounts": mounts,
        "linux": linux_json,
    });
    if ns.uts.is_some() && !input.sandbox.hostname.is_empty() {
        spec["hostname"] = json!(input.sandbox.hostname);
    }
    let annotations: BTreeMap<&String, &String> = cfg.annotations.iter().collect();
    if !annotations.is_empty() {
        spec["annotations"] = json!(annotations);
    }
    Ok(serde_json::from_value(spec)?)
}

/// containerd's merge: the CRI command replaces the image Entrypoint (and then the image Cmd
/// is not used); the CRI args replace the image Cmd.
fn process_args(cfg: &pb::ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let mut command = cfg.command.clone();
    let mut args = cfg.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint.clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            command = entrypoint;
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(command)
}

/// The default PATH, then the image's environment, then the config's; a later entry replaces
/// an earlier one with the same name in place.
fn process_env(cfg: &pb::ContainerConfig, image: &ImageConfig) -> Vec<String> {
    let mut env: Vec<String> = vec![DEFAULT_PATH_ENV.to_string()];
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    for kv in image.env.clone().unwrap_or_default() {
        set(kv);
    }
    for kv in &cfg.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    env
}

#[derive(Debug, PartialEq)]
struct ResolvedUser {
    uid: u32,
    gid: u32,
    additional_gids: Vec<u32>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

/// `/etc/group`: (name, gid, members).
fn read_group(rootfs: &Path) -> Vec<(String, u32, Vec<String>)> {
    fs::read_to_string(rootfs.join("etc/group"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3).then(|| {
                let members = f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                Some((f[0].to_string(), f[2].parse().ok()?, members))
            })?
        })
        .collect()
}

/// run_as_user / run_as_username / the image's `User` ("uid", "name", "uid:gid",
/// "name:group"), run_as_group, then the groups: the primary one, the user's memberships in
/// `/etc/group`, the supplemental groups.
fn resolve_user(
    rootfs: &Path,
    sc: &pb::LinuxContainerSecurityContext,
    image: &ImageConfig,
) -> Result<ResolvedUser, SpecError> {
    let passwd = read_passwd(rootfs);
    let groups = read_group(rootfs);
    let image_user = image.user.clone().unwrap_or_default();
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (image_user.clone(), None),
    };
    let (uid, mut gid, name) = if let Some(u) = &sc.run_as_user {
        let uid = u32::try_from(u.value).map_err(|_| SpecError::User {
            user: u.value.to_string(),
            reason: "out of range".into(),
        })?;
        let entry = passwd.iter().find(|p| p.uid == uid);
        (uid, entry.map(|p| p.gid), entry.map(|p| p.name.clone()))
    } else if !sc.run_as_username.is_empty() {
        let entry = passwd
            .iter()
            .find(|p| p.name == sc.run_as_username)
            .ok_or_else(|| SpecError::User {
                user: sc.run_as_username.clone(),
                reason: "no matching entries in passwd file".into(),
            })?;
        (entry.uid, Some(entry.gid), Some(entry.name.clone()))
    } else if user_part.is_empty() {
        let entry = passwd.iter().find(|p| p.uid == 0);
        (0, entry.map(|p| p.gid), entry.map(|p| p.name.clone()))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        let entry = passwd.iter().find(|p| p.uid == uid);
        (uid, entry.map(|p| p.gid), entry.map(|p| p.name.clone()))
    } else {
        let entry = passwd
            .iter()
            .find(|p| p.name == user_part)
            .ok_or_else(|| SpecError::User {
                user: image_user.clone(),
                reason: "no matching entries in passwd file".into(),
            })?;
        (entry.uid, Some(entry.gid), Some(entry.name.clone()))
    };
    // The image's group applies only when the image's user does.
    if sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        if let Some(g) = group_part.filter(|g| !g.is_empty()) {
            gid = Some(match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => groups
                    .iter()
                    .find(|(n, _, _)| *n == g)
                    .map(|(_, id, _)| *id)
                    .ok_or_else(|| SpecError::User {
                        user: image_user.clone(),
                        reason: format!("no matching entries in group file for {g:?}"),
                    })?,
            });
        }
    }
    if let Some(g) = &sc.run_as_group {
        gid = Some(u32::try_from(g.value).map_err(|_| SpecError::User {
            user: g.value.to_string(),
            reason: "group out of range".into(),
        })?);
    }
    let gid = gid.unwrap_or(0);
    let mut additional = vec![gid];
    if let Some(name) = &name {
        for (_, id, members) in &groups {
            if members.iter().any(|m| m == name) && !additional.contains(id) {
                additional.push(*id);
            }
        }
    }
    for g in &sc.supplemental_groups {
        if let Ok(g) = u32::try_from(*g) {
            if !additional.contains(&g) {
                additional.push(g);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

fn normalize_cap(name: &str) -> String {
    let up = name.trim().to_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Every capability this process can pass on: the kernel's (up to `cap_last_cap`) that are in
/// our bounding set. Like containerd's `WithAllCurrentCapabilities`, a privileged container gets
/// what the runtime has — on this host root's bounding set lacks CAP_SYS_RESOURCE, and asking for
/// it would fail the container's capset.
fn all_capabilities() -> Vec<String> {
    let last: usize = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(ALL_CAPABILITIES.len() - 1);
    let bounding = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .take(last + 1)
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// containerd's order: add ALL, drop ALL, then the named adds, then the named drops.
fn capabilities(c: Option<&pb::Capability>) -> Result<Vec<String>, SpecError> {
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let Some(c) = c else {
        return Ok(caps);
    };
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        caps = all_capabilities();
    }
    if c.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    for a in c.add_capabilities.iter().filter(|s| !is_all(s)) {
        let a = normalize_cap(a);
        if !ALL_CAPABILITIES.contains(&a.as_str()) {
            return Err(SpecError::Capability(a));
        }
        if !caps.contains(&a) {
            caps.push(a);
        }
    }
    for d in c.drop_capabilities.iter().filter(|s| !is_all(s)) {
        let d = normalize_cap(d);
        if !ALL_CAPABILITIES.contains(&d.as_str()) {
            return Err(SpecError::Capability(d));
        }
        caps.retain(|x| *x != d);
    }
    Ok(caps)
}

// The deprecated `seccomp_profile_path` is still sent by older kubelets.
#[allow(deprecated)]
fn seccomp(
    sc: &pb::LinuxContainerSecurityContext,
    caps: &[String],
) -> Result<Option<Value>, SpecError> {
    // The structured field wins over the deprecated path string.
    let (kind, localhost) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::Unconfined),
            p.localhost_ref.clone(),
        ),
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => (ProfileType::Unconfined, String::new()),
            "runtime/default" | "docker/default" => (ProfileType::RuntimeDefault, String::new()),
            other => match other.strip_prefix("localhost/") {
                Some(p) => (ProfileType::Localhost, p.to_string()),
                None => {
                    return Err(SpecError::Seccomp {
                        profile: other.into(),
                        reason: "unknown profile".into(),
                    })
                }
            },
        },
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(seccomp::runtime_default(caps))),
        ProfileType::Localhost => {
            let data = fs::read(&localhost).map_err(|e| SpecError::Seccomp {
                profile: localhost.clone(),
                reason: e.to_string(),
            })?;
            let v: Value = serde_json::from_slice(&data).map_err(|e| SpecError::Seccomp {
                profile: localhost.clone(),
                reason: e.to_string(),
            })?;
            // Check it is a valid OCI seccomp object before passing it on.
            serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone()).map_err(|e| {
                SpecError::Seccomp {
                    profile: localhost.clone(),
                    reason: e.to_string(),
                }
            })?;
            Ok(Some(v))
        }
    }
}

fn bind_mount(dest: &str, src: &Path, readonly: bool, propagation: &str) -> Value {
    json!({
        "destination": dest,
        "type": "bind",
        "source": src,
        "options": ["rbind", propagation, if readonly { "ro" } else { "rw" }],
    })
}

/// containerd's default mounts. With the host's network namespace a new sysfs cannot be
/// mounted, so `/sys` is bound from the host instead (as runc falls back to).
fn default_mounts(privileged: bool, host_net: bool) -> Vec<Value> {
    let sys_ro = if privileged { "rw" } else { "ro" };
    let sys = if host_net {
        json!({"destination": "/sys", "type": "bind", "source": "/sys",
               "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", sys_ro]})
    } else {
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_ro]})
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                           "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        sys,
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
    ]
}

/// One host device node: (OCI device, cgroup rule).
fn device_entry(host: &Path, container: &str, permissions: &str) -> Result<(Value, Value), String> {
    let md = fs::metadata(host).map_err(|e| e.to_string())?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err("not a device node".into());
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev) as i64, libc::minor(rdev) as i64);
    let access = if permissions.is_empty() {
        "rwm"
    } else {
        permissions
    };
    Ok((
        json!({"path": container, "type": typ, "major": major, "minor": minor,
               "fileMode": md.mode() & 0o777, "uid": md.uid(), "gid": md.gid()}),
        json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
    ))
}

/// The configured devices (privileged: every host device) and the device cgroup rules.
fn devices(
    configured: &[pb::Device],
    privileged: bool,
) -> Result<(Vec<Value>, Vec<Value>), SpecError> {
    let mut nodes = Vec::new();
    let mut rules = vec![json!({"allow": privileged, "access": "rwm"})];
    if privileged {
        collect_host_devices(Path::new("/dev"), &mut nodes);
    }
    for d in configured {
        let (node, rule) = device_entry(
            Path::new(&d.host_path),
            if d.container_path.is_empty() {
                &d.host_path
            } else {
                &d.container_path
            },
            &d.permissions,
        )
        .map_err(|reason| SpecError::Device {
            host_path: d.host_path.clone(),
            reason,
        })?;
        nodes.retain(|n: &Value| n["path"] != node["path"]);
        nodes.push(node);
        rules.push(rule);
    }
    Ok((nodes, rules))
}

fn collect_host_devices(dir: &Path, out: &mut Vec<Value>) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            let name = entry.file_name();
            if !matches!(name.to_str(), Some("pts" | "shm" | "mqueue" | "fd")) {
                collect_host_devices(&path, out);
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            if path == Path::new("/dev/console") || path == Path::new("/dev/ptmx") {
                continue;
            }
            if let Ok((node, _)) = device_entry(&path, &path.to_string_lossy(), "rwm") {
                out.push(node);
            }
        }
    }
}

fn resources(
    res: &pb::LinuxContainerResources,
    input: &SpecInput,
    device_rules: Vec<Value>,
) -> Value {
    let mut cpu = serde_json::Map::new();
    if res.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(res.cpu_shares));
    }
    if res.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(res.cpu_quota));
    }
    if res.cpu_period > 0 {
        cpu.insert("period".into(), json!(res.cpu_period));
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(res.cpuset_cpus));
    }
    if !res.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(res.cpuset_mems));
    }
    let mut memory = serde_json::Map::new();
    if res.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(res.memory_limit_in_bytes));
    }
    if res.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(res.memory_swap_limit_in_bytes));
    }
    let mut out = json!({"devices": device_rules});
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if !memory.is_empty() {
        out["memory"] = Value::Object(memory);
    }
    if let Some(limit) = input.pids_limit {
        out["pids"] = json!({"limit": limit});
    }
    // As runc: hugepage limits only where the hierarchy has a hugetlb controller.
    if input.host.hugetlb && !res.hugepage_limits.is_empty() {
        out["hugepageLimits"] = json!(res
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect::<Vec<_>>());
    }
    if input.host.cgroup_v2 && !res.unified.is_empty() {
        let unified: HashMap<&String, &String> = res.unified.iter().collect();
        out["unified"] = json!(unified);
    }
    out
}

#[cfg(test)]
mod tests;
