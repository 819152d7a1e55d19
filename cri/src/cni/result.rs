//! Reading plugin results (0.1/0.2 `ip4`/`ip6`; 0.3.x, 0.4.0 and 1.0.0 `interfaces` + `ips`) and
//! the result cache in libcni's format (`<cache>/results/<network>-<container>-<ifname>`, kind
//! `cniCacheV1`), so DEL after a restart — or after the config changed — uses what ADD used, and
//! libcni-based tools can read our cache.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CniError;

/// The cache entry kind libcni writes.
pub const CACHE_KIND: &str = "cniCacheV1";

/// One pod IP from a CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIp {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
}

/// An interface from a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniInterface {
    pub name: String,
    pub mac: String,
    /// The netns path for interfaces inside the pod; empty for host-side ones.
    pub sandbox: String,
}

/// Extracts the IPs assigned to `ifname` (all IPs if the result does not say which interface),
/// IPv4 first, and that interface.
pub fn pod_ips(result: &Value, ifname: &str) -> (Vec<PodIp>, Option<CniInterface>) {
    let interfaces: Vec<CniInterface> = result
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|i| CniInterface {
                    name: str_of(i, "name"),
                    mac: str_of(i, "mac"),
                    sandbox: str_of(i, "sandbox"),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ips = Vec::new();
    let mut iface = interfaces
        .iter()
        .find(|i| i.name == ifname && !i.sandbox.is_empty())
        .cloned();
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        for ip in list {
            let on = ip
                .get("interface")
                .and_then(Value::as_u64)
                .map(|i| i as usize);
            let matches = match on.and_then(|i| interfaces.get(i)) {
                Some(i) => i.name == ifname,
                None => true,
            };
            if matches {
                ips.extend(parse_ip(ip, "address"));
            }
        }
    } else {
        // 0.1.0 / 0.2.0 results.
        for key in ["ip4", "ip6"] {
            if let Some(ip) = result.get(key) {
                ips.extend(parse_ip(ip, "ip"));
            }
        }
        if iface.is_none() && !ips.is_empty() {
            iface = Some(CniInterface {
                name: ifname.to_string(),
                ..Default::default()
            });
        }
    }
    ips.sort_by_key(|ip| ip.address.is_ipv6());
    (ips, iface)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn parse_ip(v: &Value, key: &str) -> Option<PodIp> {
    let cidr = v.get(key)?.as_str()?;
    let (addr, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
    let address: IpAddr = addr.parse().ok()?;
    let prefix_len = prefix
        .parse()
        .unwrap_or(if address.is_ipv4() { 32 } else { 128 });
    let gateway = v
        .get("gateway")
        .and_then(Value::as_str)
        .and_then(|g| g.parse().ok());
    Some(PodIp {
        address,
        prefix_len,
        gateway,
    })
}

/// One cached attachment, in libcni's field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedAttachment {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network config list, base64 (Go's `[]byte` JSON encoding).
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// The result cache directory layout.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// `cache_dir/results`.
    pub fn new(cache_dir: &Path) -> ResultCache {
        ResultCache {
            dir: cache_dir.join("results"),
        }
    }

    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes atomically (temp file + rename).
    pub fn write(&self, entry: &CachedAttachment) -> Result<(), CniError> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let cache_err = |e: std::io::Error| CniError::Cache {
            path: path.clone(),
            msg: e.to_string(),
        };
        std::fs::create_dir_all(&self.dir).map_err(cache_err)?;
        let tmp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(cache_err)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            cache_err(e)
        })
    }

    pub fn read(&self, path: &Path) -> Result<CachedAttachment, CniError> {
        let bytes = std::fs::read(path).map_err(|e| CniError::Cache {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let entry: CachedAttachment =
            serde_json::from_slice(&bytes).map_err(|e| CniError::Cache {
                path: path.to_path_buf(),
                msg: e.to_string(),
            })?;
        if entry.kind != CACHE_KIND {
            return Err(CniError::Cache {
                path: path.to_path_buf(),
                msg: format!("unknown cache kind {:?}", entry.kind),
            });
        }
        Ok(entry)
    }

    /// Every cache entry of `container_id`, whatever network it was for. File names may not be
    /// split unambiguously (network names contain `-`), so the entry's own fields decide.
    pub fn entries_for(&self, container_id: &str) -> Vec<(PathBuf, CachedAttachment)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let needle = format!("-{container_id}-");
        let mut out: Vec<_> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&needle))
            })
            .filter_map(|p| match self.read(&p) {
                Ok(e) if e.container_id == container_id => Some((p, e)),
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable CNI cache entry");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn remove(&self, path: &Path) -> Result<(), CniError> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::Cache {
                path: path.to_path_buf(),
                msg: e.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

/// Decodes a cached config list (for logs/tests).
pub fn decode_config(entry: &CachedAttachment) -> Option<Value> {
    serde_json::from_slice(&entry.config).ok()
}

/// For tests: base64 as libcni writes it.
pub fn encode_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_result_ips_of_the_pod_interface_ipv4_first() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa"},
                {"name": "veth1", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/run/netns/x"},
                {"name": "net1", "mac": "dd", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "fd00::5/64", "interface": 2},
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
                {"address": "10.9.0.5/24", "interface": 3}
            ]
        });
        let (ips, iface) = pod_ips(&r, "eth0");
        assert_eq!(
            ips.iter()
                .map(|i| i.address.to_string())
                .collect::<Vec<_>>(),
            vec!["10.1.0.5", "fd00::5"]
        );
        assert_eq!(ips[0].prefix_len, 24);
        assert_eq!(ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(iface.unwrap().mac, "cc");
    }

    #[test]
    fn v03_and_v02_results() {
        let r03 = json!({"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.2.0.2/16"}]});
        assert_eq!(pod_ips(&r03, "eth0").0[0].address.to_string(), "10.2.0.2");
        let r02 = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.3.0.3/24","gateway":"10.3.0.1"}});
        let (ips, iface) = pod_ips(&r02, "eth0");
        assert_eq!(ips[0].address.to_string(), "10.3.0.3");
        assert_eq!(iface.unwrap().name, "eth0");
    }

    #[test]
    fn cache_round_trip_in_libcni_format() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(tmp.path());
        let entry = CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: "abc".into(),
            config: br#"{"name":"my-net"}"#.to_vec(),
            if_name: "eth0".into(),
            network_name: "my-net".into(),
            netns: "/x".into(),
            cni_args: vec![["K8S_POD_NAME".into(), "p".into()]],
            capability_args: Map::new(),
            result: json!({"cniVersion":"1.0.0"}),
        };
        cache.write(&entry).unwrap();
        let path = tmp.path().join("results/my-net-abc-eth0");
        let raw: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(raw["kind"], "cniCacheV1");
        assert_eq!(raw["containerId"], "abc");
        assert_eq!(raw["config"], encode_b64(br#"{"name":"my-net"}"#));
        assert_eq!(raw["cniArgs"], json!([["K8S_POD_NAME", "p"]]));
        let found = cache.entries_for("abc");
        assert_eq!(found, vec![(path.clone(), entry)]);
        assert!(cache.entries_for("ab").is_empty());
        cache.remove(&path).unwrap();
        cache.remove(&path).unwrap();
    }
}
