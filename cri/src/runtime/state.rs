//! What the runtime remembers about each sandbox and container, on disk, so that a restarted
//! runtime finds every pod again: one JSON record per object, written atomically (temp file, fsync,
//! rename) on every change. Records hold the CRI configs as given, plus what the runtime made for
//! them (namespace pins, IPs, cgroup paths, bundle and log paths). Container process state (pid,
//! exit code, timestamps) is the supervisor's to record; it is only mirrored here.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::image_config::ImageConfig;
use crate::pb;

/// A pod sandbox as the runtime keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: pb::PodSandboxConfig,
    pub created_at: i64,
    /// `true` once StopPodSandbox ran (CRI's SANDBOX_NOTREADY).
    pub stopped: bool,
    /// Pod IPs from CNI, IPv4 first; empty for host-network pods.
    pub ips: Vec<String>,
    /// Whether CNI ADD succeeded and a DEL is owed.
    pub network_attached: bool,
    /// Pinned namespaces (None = the host's).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pod-level cgroup (relative to the cgroup root) that containers are placed under.
    pub cgroup_parent: String,
    /// Whether the pod shares one PID namespace (NamespaceMode::POD for pid).
    pub shared_pid: bool,
    pub runtime_handler: String,
}

/// A container as the runtime keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: pb::ContainerConfig,
    pub created_at: i64,
    /// The image as the kubelet named it, and the resolved image id (`sha256:…`).
    pub image_name: String,
    pub image_id: String,
    /// A repo digest (`name@sha256:…`) when the image has one, else the image id.
    pub image_ref: String,
    pub image_config: ImageConfig,
    /// Absolute path of the CRI log file ("" when the kubelet asked for none).
    pub log_path: String,
    /// The OCI bundle (config.json) and the mounted root filesystem.
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub cgroup_path: String,
    /// Resources as last applied (CreateContainer or UpdateContainerResources).
    pub resources: Option<pb::LinuxContainerResources>,
    /// A note the runtime adds to the status message (e.g. a degraded oom_score_adj).
    pub note: String,
}

/// Writes `value` as JSON to `path` so that a crash leaves the old or the new file, never half.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, value).map_err(io::Error::other)?;
        f.flush()?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Reads every `*/<file>` record under `dir`, skipping (and reporting) unreadable ones.
pub fn load_all<T: DeserializeOwned>(dir: &Path, file: &str) -> HashMap<String, T> {
    let mut out = HashMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path().join(file);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<T>(&bytes) {
                Ok(v) => {
                    out.insert(entry.file_name().to_string_lossy().into_owned(), v);
                }
                Err(e) => tracing::warn!("ignoring unreadable record {}: {e}", path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A directory without its record: creation crashed before the record was
                // written. The caller cleans such directories up.
            }
            Err(e) => tracing::warn!("ignoring unreadable record {}: {e}", path.display()),
        }
    }
    out
}

/// A new random 64-hex-digit id, as containerd makes them.
pub fn new_id() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}

/// Nanoseconds since the Unix epoch, CRI's timestamp unit.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_half_written_ones_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let rec = SandboxRecord {
            id: "abc".into(),
            config: pb::PodSandboxConfig {
                hostname: "h".into(),
                ..Default::default()
            },
            created_at: 1,
            stopped: false,
            ips: vec!["10.0.0.2".into()],
            network_attached: true,
            netns: Some("/x".into()),
            ipcns: None,
            utsns: None,
            cgroup_parent: "/capstan/pods/abc".into(),
            shared_pid: false,
            runtime_handler: String::new(),
        };
        fs::create_dir_all(dir.path().join("abc")).unwrap();
        write_atomic(&dir.path().join("abc/sandbox.json"), &rec).unwrap();
        fs::create_dir_all(dir.path().join("torn")).unwrap();
        fs::write(dir.path().join("torn/sandbox.json"), b"{\"id\":").unwrap();
        let all: HashMap<String, SandboxRecord> = load_all(dir.path(), "sandbox.json");
        assert_eq!(all.len(), 1);
        assert_eq!(all["abc"].ips, vec!["10.0.0.2".to_string()]);
        assert_eq!(new_id().len(), 64);
    }
}
