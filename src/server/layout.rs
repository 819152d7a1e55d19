//! Where `capstan server` keeps things under its data directory, and the record of what it made
//! on the host outside it (`DIR/server/host.json`), which `capstan uninstall` reads to remove
//! every trace: the CNI configuration it wrote, the bridge, the cgroups, the CNI directories the
//! runtime was given.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The paths of one server's data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Layout {
        Layout {
            data_dir: data_dir.to_path_buf(),
        }
    }
    /// The API server's store and the server's own files.
    pub fn server_dir(&self) -> PathBuf {
        self.data_dir.join("server")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }
    /// The join token (`<id>.<secret>`).
    pub fn token(&self) -> PathBuf {
        self.server_dir().join("token")
    }
    /// The pid of the running `capstan server`.
    pub fn pidfile(&self) -> PathBuf {
        self.server_dir().join("capstan.pid")
    }
    pub fn host_record(&self) -> PathBuf {
        self.server_dir().join("host.json")
    }
    pub fn scheduler_config(&self) -> PathBuf {
        self.server_dir().join("scheduler.yaml")
    }
    /// The node agent's files.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }
    /// The kubelet's --root-dir; the built-in runtime lives in `cri/` under it.
    pub fn kubelet_root(&self) -> PathBuf {
        self.agent_dir().join("kubelet")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.kubelet_root().join("cri")
    }
    pub fn pod_logs(&self) -> PathBuf {
        self.agent_dir().join("pod-logs")
    }
    pub fn static_pods(&self) -> PathBuf {
        self.agent_dir().join("manifests")
    }
    /// The local-path provisioner's volumes (`--local-path-dir`), as k3s' `storage/`.
    pub fn local_path_storage(&self) -> PathBuf {
        self.data_dir.join("storage")
    }
    /// host-local IPAM's allocations for the default CNI configuration.
    pub fn cni_networks(&self) -> PathBuf {
        self.agent_dir().join("cni-networks")
    }
}

/// What the server made or used on the host outside its data directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub node_name: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    /// The bridge of the default CNI configuration.
    pub bridge: String,
    /// The kubelet's --cgroup-root.
    pub cgroup_root: String,
    /// Whether the server created the cgroup root (then uninstall removes it).
    pub cgroup_root_created: bool,
    /// The default CNI configuration file, when the server wrote one.
    pub cni_config_written: Option<PathBuf>,
    /// The node's podCIDR, once known.
    pub pod_cidr: Option<String>,
}

impl HostRecord {
    pub fn load(layout: &Layout) -> Option<HostRecord> {
        let text = std::fs::read_to_string(layout.host_record()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the record atomically (a rename), so uninstall never reads half of it.
    pub fn save(&self, layout: &Layout) -> anyhow::Result<()> {
        let path = layout.host_record();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}
