//! Pod volumes as upstream's in-tree volume plugins set them up, under upstream's directory
//! layout (`<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`), so tools that know the
//! kubelet's tree find things where they expect them.
//!
//! | volume | host path | notes |
//! | --- | --- | --- |
//! | emptyDir | `kubernetes.io~empty-dir/<name>` | mode 0777; medium Memory: a tmpfs sized as upstream (min of sizeLimit, the pod's memory limit, node allocatable) |
//! | hostPath | the path itself | type checks with upstream's messages; DirectoryOrCreate / FileOrCreate create |
//! | configMap | `kubernetes.io~configmap/<name>` | [`atomic_writer`] payload, read-only |
//! | secret | `kubernetes.io~secret/<name>` | on a tmpfs (never on disk), read-only |
//! | downwardAPI | `kubernetes.io~downward-api/<name>` | metadata fields and container resources, read-only |
//! | projected | `kubernetes.io~projected/<name>` | tmpfs; configMap, secret, downwardAPI, serviceAccountToken (from a [`TokenProvider`]) |
//! | persistentVolumeClaim | the bound PV's path | hostPath and local PVs |
//!
//! serviceAccountToken projections get their tokens from [`token`] (the TokenRequest API, fetched
//! before setup, which is synchronous). [`VolumeManager::refresh`] re-projects configMap/secret/downwardAPI/projected volumes and
//! writes only when the content differs (upstream's periodic remount). Sub-paths are resolved
//! inside the volume with every symlink checked ([`resolve_subpath`]), refusing escapes.
//! [`dns`] produces the per-pod `/etc/hosts` and resolv.conf; the files land in the pod
//! directory (`etc-hosts`, as upstream) for the runtime to bind-mount.
//! The kernel is touched only through [`mount::Mounter`].

pub mod atomic_writer;
pub mod dns;
pub mod mount;
pub mod token;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::env::{container_resource_value, expand, extract_field_path, EnvError, ObjectLookup};
use crate::qos::{resource_config_for_pod, DEFAULT_CPU_PERIOD};
use crate::quantity;
use atomic_writer::{AtomicWriter, FileProjection, Payload, WriterError};
use mount::Mounter;

pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io~configmap";
pub const SECRET_PLUGIN: &str = "kubernetes.io~secret";
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";
/// The API default of every `defaultMode`.
pub const DEFAULT_MODE: i32 = 0o644;
/// The pod directory's hosts file (upstream `etc-hosts`).
pub const ETC_HOSTS_FILE: &str = "etc-hosts";
pub const RESOLV_CONF_FILE: &str = "resolv.conf";

/// Errors of volume setup (messages as upstream's where it has one).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{kind} references non-existent {what} key: {key}")]
    MissingKey {
        kind: &'static str,
        what: &'static str,
        key: String,
    },
    #[error("hostPath type check failed: {path} is not a {what}")]
    HostPathType { path: String, what: &'static str },
    #[error("{0} is an invalid volume type")]
    InvalidHostPathType(String),
    #[error("volume {0:?}: unsupported volume type")]
    Unsupported(String),
    #[error("serviceAccountToken projection is not supported yet: no token provider (the TokenRequest API)")]
    TokenNotSupported,
    /// The token manager's error, as upstream words it (`failed to fetch token: …`).
    #[error("{0}")]
    Token(String),
    #[error("clusterTrustBundle projection is not supported")]
    ClusterTrustBundle,
    #[error("{0}")]
    Claim(String),
    #[error("subpath {path:?} not within volume path {volume:?}")]
    SubPathEscape { path: String, volume: String },
    #[error("invalid subpath {0:?}: must be a relative path without '..'")]
    InvalidSubPath(String),
    #[error("volume {0:?} is not set up")]
    NotSetUp(String),
    #[error("{0}")]
    Lookup(String),
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> VolumeError + 'a {
    move |source| VolumeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A service account token request (what upstream sends to TokenRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expiration_seconds: i64,
    pub pod_name: String,
    pub pod_uid: String,
}

/// Issues service account tokens (the TokenRequest API, once the API server offers it).
pub trait TokenProvider: Send + Sync {
    fn token(&self, req: &TokenRequest) -> Result<String, String>;
}

impl<F> TokenProvider for F
where
    F: Fn(&TokenRequest) -> Result<String, String> + Send + Sync,
{
    fn token(&self, req: &TokenRequest) -> Result<String, String> {
        self(req)
    }
}

/// What volume setup reads from outside.
#[derive(Clone, Copy)]
pub struct VolumeSources<'a> {
    pub lookup: &'a dyn ObjectLookup,
    /// Node allocatable (tmpfs sizing, downward API limits).
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
    pub tokens: Option<&'a dyn TokenProvider>,
}

/// Which plugin set a volume up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    HostPath,
    ConfigMap,
    Secret,
    DownwardApi,
    Projected,
    PersistentVolumeClaim,
}

/// A volume ready for the containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedVolume {
    pub name: String,
    pub kind: VolumeKind,
    /// What the runtime bind-mounts.
    pub host_path: PathBuf,
    /// The volume itself is read-only (API data volumes, read-only claims).
    pub read_only: bool,
}

/// Sets up and tears down pod volumes below the kubelet root directory.
pub struct VolumeManager {
    root: PathBuf,
    mounter: Arc<dyn Mounter>,
}

impl VolumeManager {
    pub fn new(root_dir: impl Into<PathBuf>, mounter: Arc<dyn Mounter>) -> VolumeManager {
        VolumeManager {
            root: root_dir.into(),
            mounter,
        }
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// `<root>/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }

    /// `<root>/pods/<uid>/volumes/<plugin>/<name>`.
    pub fn volume_dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes").join(plugin).join(name)
    }

    /// Sets up every volume of the pod, by name.
    pub fn setup_all(
        &self,
        pod: &Pod,
        sources: &VolumeSources<'_>,
    ) -> Result<BTreeMap<String, MountedVolume>, VolumeError> {
        let mut out = BTreeMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            out.insert(v.name.clone(), self.setup(pod, v, sources)?);
        }
        Ok(out)
    }

    /// Sets up one volume (idempotent: a second call re-projects API data and leaves the rest).
    pub fn setup(
        &self,
        pod: &Pod,
        volume: &Volume,
        sources: &VolumeSources<'_>,
    ) -> Result<MountedVolume, VolumeError> {
        let uid = pod_uid(pod);
        let name = volume.name.clone();
        let mounted = |kind, host_path, read_only| MountedVolume {
            name: name.clone(),
            kind,
            host_path,
            read_only,
        };
        if let Some(ed) = &volume.empty_dir {
            let dir = self.volume_dir(uid, EMPTY_DIR_PLUGIN, &name);
            // Set up once: a re-sync leaves the directory (and what the pod did to it) alone.
            let fresh = if ed.medium.as_deref() == Some("Memory") {
                mkdir_all(&dir)?;
                let size = memory_volume_size(pod, ed.size_limit.as_ref(), sources);
                self.ensure_tmpfs(&dir, size)?
            } else {
                let fresh = !dir.is_dir();
                mkdir_all(&dir)?;
                fresh
            };
            if fresh {
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
                    .map_err(io_err("chmod", &dir))?;
            }
            return Ok(mounted(VolumeKind::EmptyDir, dir, false));
        }
        if let Some(hp) = &volume.host_path {
            check_host_path_type(Path::new(&hp.path), hp.type_.as_deref())?;
            return Ok(mounted(
                VolumeKind::HostPath,
                PathBuf::from(&hp.path),
                false,
            ));
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            let (path, ro) = resolve_claim(pod, &claim.claim_name, sources)?;
            let read_only = ro || claim.read_only.unwrap_or(false);
            return Ok(mounted(VolumeKind::PersistentVolumeClaim, path, read_only));
        }
        let Some((kind, plugin, tmpfs)) = api_data_kind(volume) else {
            return Err(VolumeError::Unsupported(name));
        };
        // Fetch first, so a missing object leaves nothing behind.
        let payload = make_payload(pod, volume, sources)?;
        let dir = self.volume_dir(uid, plugin, &name);
        mkdir_all(&dir)?;
        if tmpfs {
            let size = memory_volume_size(pod, None, sources);
            self.ensure_tmpfs(&dir, size)?;
        }
        AtomicWriter::new(&dir).write(&payload)?;
        Ok(mounted(kind, dir, true))
    }

    /// Re-projects a configMap / secret / downwardAPI / projected volume from current sources;
    /// `Ok(true)` when the files changed. Other volumes: `Ok(false)`.
    pub fn refresh(
        &self,
        pod: &Pod,
        volume: &Volume,
        sources: &VolumeSources<'_>,
    ) -> Result<bool, VolumeError> {
        let Some((_, plugin, _)) = api_data_kind(volume) else {
            return Ok(false);
        };
        let dir = self.volume_dir(pod_uid(pod), plugin, &volume.name);
        if !dir.is_dir() {
            return Err(VolumeError::NotSetUp(volume.name.clone()));
        }
        let payload = make_payload(pod, volume, sources)?;
        Ok(AtomicWriter::new(&dir).write(&payload)?)
    }

    /// Mounts a tmpfs on `dir` unless one is there; `true` when it mounted one.
    fn ensure_tmpfs(&self, dir: &Path, size: Option<i64>) -> Result<bool, VolumeError> {
        if self
            .mounter
            .is_mount_point(dir)
            .map_err(io_err("check mount", dir))?
        {
            return Ok(false);
        }
        self.mounter
            .mount_tmpfs(dir, size)
            .map_err(io_err("mount tmpfs", dir))?;
        Ok(true)
    }

    /// Tears down one volume of a pod (unmounting tmpfs, removing the directory). Volumes
    /// outside the pod directory (hostPath, claims) are left alone. Missing is not an error.
    pub fn teardown(&self, uid: &str, volume_name: &str) -> Result<(), VolumeError> {
        let volumes = self.pod_dir(uid).join("volumes");
        let plugins = match fs::read_dir(&volumes) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("read", &volumes)(e)),
        };
        for plugin in plugins {
            let plugin = plugin.map_err(io_err("read", &volumes))?;
            let dir = plugin.path().join(volume_name);
            if fs::symlink_metadata(&dir).is_ok() {
                self.teardown_dir(&dir)?;
            }
        }
        Ok(())
    }

    fn teardown_dir(&self, dir: &Path) -> Result<(), VolumeError> {
        if self
            .mounter
            .is_mount_point(dir)
            .map_err(io_err("check mount", dir))?
        {
            self.mounter.unmount(dir).map_err(io_err("unmount", dir))?;
        }
        // Never recurse into something still mounted (a bind mount would take host data along).
        if self
            .mounter
            .is_mount_point(dir)
            .map_err(io_err("check mount", dir))?
        {
            return Err(VolumeError::Io {
                op: "remove",
                path: dir.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        fs::remove_dir_all(dir).map_err(io_err("remove", dir))
    }

    /// Tears down every volume of the pod and removes its directory.
    pub fn teardown_pod(&self, uid: &str) -> Result<(), VolumeError> {
        let pod_dir = self.pod_dir(uid);
        let volumes = pod_dir.join("volumes");
        if let Ok(plugins) = fs::read_dir(&volumes) {
            for plugin in plugins.flatten() {
                for v in fs::read_dir(plugin.path()).into_iter().flatten().flatten() {
                    self.teardown_dir(&v.path())?;
                }
            }
        }
        match fs::remove_dir_all(&pod_dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &pod_dir)(e)),
            _ => Ok(()),
        }
    }

    /// The host path and read-only flag of one container mount: `subPath` / `subPathExpr`
    /// (expanded with the container's environment) resolved safely inside the volume.
    pub fn container_mount(
        &self,
        volume: &MountedVolume,
        mount: &VolumeMount,
        env: &[(String, String)],
    ) -> Result<(PathBuf, bool), VolumeError> {
        let read_only = volume.read_only || mount.read_only.unwrap_or(false);
        let sub = match (&mount.sub_path, &mount.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(e)) if !e.is_empty() => expand(e, |n| {
                env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
            }),
            _ => return Ok((volume.host_path.clone(), read_only)),
        };
        Ok((resolve_subpath(&volume.host_path, &sub)?, read_only))
    }

    /// Writes the pod's `/etc/hosts` (`pods/<uid>/etc-hosts`) and, if given, resolv.conf
    /// (`pods/<uid>/resolv.conf`); returns their paths.
    pub fn write_pod_dns_files(
        &self,
        uid: &str,
        hosts: &str,
        resolv_conf: Option<&str>,
    ) -> Result<(PathBuf, Option<PathBuf>), VolumeError> {
        let dir = self.pod_dir(uid);
        mkdir_all(&dir)?;
        let hosts_path = dir.join(ETC_HOSTS_FILE);
        write_replace(&hosts_path, hosts.as_bytes(), 0o644)?;
        let resolv = match resolv_conf {
            Some(text) => {
                let p = dir.join(RESOLV_CONF_FILE);
                write_replace(&p, text.as_bytes(), 0o644)?;
                Some(p)
            }
            None => None,
        };
        Ok((hosts_path, resolv))
    }
}

fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("unknown-uid")
}

fn mkdir_all(dir: &Path) -> Result<(), VolumeError> {
    fs::create_dir_all(dir).map_err(io_err("mkdir", dir))
}

/// Writes a file by rename, so a reader never sees it half-written.
fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), VolumeError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).map_err(io_err("write", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename", path))
}

/// (kind, plugin dir, on tmpfs) of the API-data volumes.
fn api_data_kind(v: &Volume) -> Option<(VolumeKind, &'static str, bool)> {
    if v.config_map.is_some() {
        Some((VolumeKind::ConfigMap, CONFIG_MAP_PLUGIN, false))
    } else if v.secret.is_some() {
        Some((VolumeKind::Secret, SECRET_PLUGIN, true))
    } else if v.downward_api.is_some() {
        Some((VolumeKind::DownwardApi, DOWNWARD_API_PLUGIN, false))
    } else if v.projected.is_some() {
        Some((VolumeKind::Projected, PROJECTED_PLUGIN, true))
    } else {
        None
    }
}

/// Upstream `calculateEmptyDirMemorySize`: node allocatable memory, lowered to the pod's memory
/// limit and then to the volume's sizeLimit when those are smaller. `None`: the kernel default.
pub fn memory_volume_size(
    pod: &Pod,
    size_limit: Option<&Quantity>,
    sources: &VolumeSources<'_>,
) -> Option<i64> {
    let mut size = sources
        .node_allocatable
        .get("memory")
        .map(quantity::value)
        .filter(|v| *v > 0);
    let fits = |v: i64, size: Option<i64>| v > 0 && size.is_none_or(|s| v <= s);
    if let Some(pod_limit) = resource_config_for_pod(pod, false, DEFAULT_CPU_PERIOD).memory {
        if fits(pod_limit, size) {
            size = Some(pod_limit);
        }
    }
    if let Some(limit) = size_limit.map(quantity::value) {
        if fits(limit, size) {
            size = Some(limit);
        }
    }
    size
}

/// Upstream's hostPath type check (`checkTypeInternal`). `None`/`""` checks nothing.
pub fn check_host_path_type(path: &Path, ty: Option<&str>) -> Result<(), VolumeError> {
    let p = path.display().to_string();
    let meta = fs::metadata(path).ok();
    let fail = |what| {
        Err(VolumeError::HostPathType {
            path: p.clone(),
            what,
        })
    };
    match ty.unwrap_or("") {
        "" => Ok(()),
        t @ ("DirectoryOrCreate" | "Directory") => {
            if t == "DirectoryOrCreate" && meta.is_none() {
                fs::create_dir_all(path).map_err(io_err("mkdir", path))?;
                fs::set_permissions(path, fs::Permissions::from_mode(0o755))
                    .map_err(io_err("chmod", path))?;
                return Ok(());
            }
            if meta.is_some_and(|m| m.is_dir()) {
                Ok(())
            } else {
                fail("directory")
            }
        }
        t @ ("FileOrCreate" | "File") => {
            if t == "FileOrCreate" && meta.is_none() {
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map_err(io_err("create", path))?;
                return Ok(());
            }
            if meta.is_some_and(|m| m.is_file()) {
                Ok(())
            } else {
                fail("file")
            }
        }
        "Socket" if meta.as_ref().is_some_and(|m| m.file_type().is_socket()) => Ok(()),
        "Socket" => fail("socket file"),
        "CharDevice"
            if meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_char_device()) =>
        {
            Ok(())
        }
        "CharDevice" => fail("character device"),
        "BlockDevice"
            if meta
                .as_ref()
                .is_some_and(|m| m.file_type().is_block_device()) =>
        {
            Ok(())
        }
        "BlockDevice" => fail("block device"),
        other => Err(VolumeError::InvalidHostPathType(other.to_string())),
    }
}

/// The host path of a claim bound to a hostPath or local PersistentVolume, and whether the PV
/// is read-only.
fn resolve_claim(
    pod: &Pod,
    claim_name: &str,
    sources: &VolumeSources<'_>,
) -> Result<(PathBuf, bool), VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claim = sources
        .lookup
        .persistent_volume_claim(ns, claim_name)
        .map_err(VolumeError::Lookup)?
        .ok_or_else(|| VolumeError::NotFound {
            resource: "persistentvolumeclaims",
            name: claim_name.to_string(),
        })?;
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let pv_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || pv_name.is_empty() {
        return Err(VolumeError::Claim(format!(
            "PVC {ns}/{claim_name} has non-bound phase (\"{phase}\") or empty pvc.Spec.VolumeName (\"{pv_name}\")"
        )));
    }
    let pv = sources
        .lookup
        .persistent_volume(&pv_name)
        .map_err(VolumeError::Lookup)?
        .ok_or_else(|| VolumeError::NotFound {
            resource: "persistentvolumes",
            name: pv_name.clone(),
        })?;
    let spec = pv.spec.unwrap_or_default();
    if let (Some(want), Some(got)) = (
        claim.metadata.uid.as_deref(),
        spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref()),
    ) {
        if want != got {
            return Err(VolumeError::Claim(format!(
                "expected volume {pv_name:?} to be bound to claim {ns}/{claim_name} ({want}), it is bound to uid {got}"
            )));
        }
    }
    if let Some(hp) = spec.host_path {
        check_host_path_type(Path::new(&hp.path), hp.type_.as_deref())?;
        return Ok((PathBuf::from(hp.path), false));
    }
    if let Some(local) = spec.local {
        let p = PathBuf::from(&local.path);
        if !p.exists() {
            return Err(VolumeError::Claim(format!(
                "local volume {pv_name:?}: path {:?} does not exist",
                local.path
            )));
        }
        return Ok((p, false));
    }
    Err(VolumeError::Claim(format!(
        "persistent volume {pv_name:?}: only hostPath and local volumes are supported"
    )))
}

/// Resolves `sub` inside `volume_root`, creating missing directories (as upstream does for
/// subPath), following symlinks only while they stay inside the volume.
pub fn resolve_subpath(volume_root: &Path, sub: &str) -> Result<PathBuf, VolumeError> {
    let rel = Path::new(sub);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(VolumeError::InvalidSubPath(sub.to_string()));
    }
    let root = fs::canonicalize(volume_root).map_err(io_err("resolve", volume_root))?;
    let escape = || VolumeError::SubPathEscape {
        path: sub.to_string(),
        volume: volume_root.display().to_string(),
    };
    let mut cur = root.clone();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        let next = cur.join(name);
        match fs::symlink_metadata(&next) {
            Ok(_) => {
                let resolved = fs::canonicalize(&next).map_err(|_| escape())?;
                if !resolved.starts_with(&root) {
                    return Err(escape());
                }
                cur = resolved;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mode = fs::metadata(&root)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o755);
                fs::create_dir(&next).map_err(io_err("mkdir", &next))?;
                fs::set_permissions(&next, fs::Permissions::from_mode(mode))
                    .map_err(io_err("chmod", &next))?;
                cur = next;
            }
            Err(e) => return Err(io_err("stat", &next)(e)),
        }
    }
    Ok(cur)
}

fn mode_of(m: Option<i32>, default: Option<i32>) -> u32 {
    m.or(default).unwrap_or(DEFAULT_MODE) as u32
}

/// Upstream configmap `MakePayload` (data and binaryData).
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut all: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        all.insert(k, v.as_bytes());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        all.insert(k, &v.0);
    }
    key_payload(items, &all, default_mode, optional, "configmap", "config")
}

/// Upstream secret `MakePayload`.
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let mut all: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (k, v) in secret.string_data.iter().flatten() {
        all.insert(k, v.as_bytes());
    }
    for (k, v) in secret.data.iter().flatten() {
        all.insert(k, &v.0);
    }
    key_payload(items, &all, default_mode, optional, "secret", "secret")
}

fn key_payload(
    items: Option<&[KeyToPath]>,
    all: &BTreeMap<&str, &[u8]>,
    default_mode: Option<i32>,
    optional: bool,
    kind: &'static str,
    what: &'static str,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in all {
                out.insert(
                    k.to_string(),
                    FileProjection {
                        data: v.to_vec(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = all.get(it.key.as_str()) else {
                    if optional {
                        continue;
                    }
                    return Err(VolumeError::MissingKey {
                        kind,
                        what,
                        key: it.key.clone(),
                    });
                };
                out.insert(
                    it.path.clone(),
                    FileProjection {
                        data: v.to_vec(),
                        mode: mode_of(it.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Upstream downwardapi `CollectData`.
pub fn downward_api_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for it in items {
        let data = if let Some(f) = &it.field_ref {
            extract_field_path(pod, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let name = r.container_name.as_deref().unwrap_or_default();
            let c = find_container(pod, name)
                .ok_or_else(|| EnvError::NoSuchContainer(name.to_string()))?;
            container_resource_value(r, c, node_allocatable)?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            FileProjection {
                data: data.into_bytes(),
                mode: mode_of(it.mode, default_mode),
            },
        );
    }
    Ok(out)
}

fn fetch_config_map(
    s: &VolumeSources<'_>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<ConfigMap, VolumeError> {
    match s.lookup.config_map(ns, name).map_err(VolumeError::Lookup)? {
        Some(cm) => Ok(cm),
        None if optional => Ok(ConfigMap::default()),
        None => Err(VolumeError::NotFound {
            resource: "configmaps",
            name: name.to_string(),
        }),
    }
}

fn fetch_secret(
    s: &VolumeSources<'_>,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Secret, VolumeError> {
    match s.lookup.secret(ns, name).map_err(VolumeError::Lookup)? {
        Some(sec) => Ok(sec),
        None if optional => Ok(Secret::default()),
        None => Err(VolumeError::NotFound {
            resource: "secrets",
            name: name.to_string(),
        }),
    }
}

/// The TokenRequest a serviceAccountToken projection makes (default expiry one hour, the pod's
/// service account or `default`).
pub fn service_account_token_request(
    pod: &Pod,
    ns: &str,
    t: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> TokenRequest {
    TokenRequest {
        namespace: ns.to_string(),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
        audiences: t
            .audience
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect(),
        expiration_seconds: t.expiration_seconds.unwrap_or(3600),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Upstream projected `collectData`.
pub fn projected_payload(
    pod: &Pod,
    src: &ProjectedVolumeSource,
    s: &VolumeSources<'_>,
) -> Result<Payload, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let dm = src.default_mode;
    let mut out = Payload::new();
    for p in src.sources.iter().flatten() {
        if let Some(c) = &p.config_map {
            let optional = c.optional.unwrap_or(false);
            let cm = fetch_config_map(s, ns, &c.name, optional)?;
            out.extend(config_map_payload(c.items.as_deref(), &cm, dm, optional)?);
        } else if let Some(c) = &p.secret {
            let optional = c.optional.unwrap_or(false);
            let sec = fetch_secret(s, ns, &c.name, optional)?;
            out.extend(secret_payload(c.items.as_deref(), &sec, dm, optional)?);
        } else if let Some(d) = &p.downward_api {
            out.extend(downward_api_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                dm,
                s.node_allocatable,
            )?);
        } else if let Some(t) = &p.service_account_token {
            let provider = s.tokens.ok_or(VolumeError::TokenNotSupported)?;
            let spec = pod.spec.as_ref();
            let req = service_account_token_request(pod, ns, t);
            let token = provider.token(&req).map_err(VolumeError::Token)?;
            let fs_group = spec
                .and_then(|s| s.security_context.as_ref())
                .is_some_and(|sc| sc.fs_group.is_some());
            out.insert(
                t.path.clone(),
                FileProjection {
                    data: token.into_bytes(),
                    mode: if fs_group { 0o600 } else { mode_of(None, dm) },
                },
            );
        } else if p.cluster_trust_bundle.is_some() {
            return Err(VolumeError::ClusterTrustBundle);
        }
    }
    Ok(out)
}

fn make_payload(pod: &Pod, volume: &Volume, s: &VolumeSources<'_>) -> Result<Payload, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(c) = &volume.config_map {
        let optional = c.optional.unwrap_or(false);
        let cm = fetch_config_map(s, ns, &c.name, optional)?;
        return config_map_payload(c.items.as_deref(), &cm, c.default_mode, optional);
    }
    if let Some(c) = &volume.secret {
        let optional = c.optional.unwrap_or(false);
        let name = c.secret_name.as_deref().unwrap_or_default();
        let sec = fetch_secret(s, ns, name, optional)?;
        return secret_payload(c.items.as_deref(), &sec, c.default_mode, optional);
    }
    if let Some(d) = &volume.downward_api {
        return downward_api_payload(
            pod,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
            s.node_allocatable,
        );
    }
    if let Some(p) = &volume.projected {
        return projected_payload(pod, p, s);
    }
    Err(VolumeError::Unsupported(volume.name.clone()))
}
