//! The node's default pod network: once the controller-manager's node IPAM has given the Node a
//! podCIDR, a bridge CNI configuration for it (bridge + host-local + portmap, as k3s's default
//! flannel-less set-up) is written to the CNI configuration directory — only when that directory
//! has no configuration of its own, so clusters that bring their CNI keep it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

/// The file name of the configuration we write.
pub const FILE_NAME: &str = "10-capstan.conflist";

/// Whether `dir` holds any CNI network configuration (`*.conf`, `*.conflist`, `*.json`, the
/// extensions libcni loads).
pub fn has_config(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            [".conf", ".conflist", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
    })
}

/// The bridge configuration for `pod_cidr`.
pub fn bridge_config(bridge: &str, pod_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "capstan",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Writes the configuration atomically into `dir`; returns the file.
pub fn write(dir: &Path, config: &serde_json::Value) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(config)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Waits until Node `name` has a podCIDR and returns it. Polls every 25 ms (a GET on loopback),
/// then every 500 ms after 10 s: node IPAM assigns right after registration, and the node's
/// readiness waits on this, so a doubling back-off would only add to the start-up time.
pub async fn wait_pod_cidr(client: &kube::Client, name: &str) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let started = tokio::time::Instant::now();
    loop {
        if let Ok(Some(node)) = nodes.get_opt(name).await {
            if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
                return cidr;
            }
        }
        let delay = if started.elapsed() < Duration::from_secs(10) {
            Duration::from_millis(25)
        } else {
            Duration::from_millis(500)
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_writes() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_config(d.path()));
        let c = bridge_config("cni0", "10.42.0.0/24", Path::new("/x"));
        let p = write(d.path(), &c).unwrap();
        assert!(has_config(d.path()));
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
        assert_eq!(
            back["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.42.0.0/24"
        );
        assert_eq!(back["plugins"][0]["bridge"], "cni0");
    }
}
