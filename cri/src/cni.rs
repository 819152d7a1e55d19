//! CNI: the node's network config (conflist) and plugin calls (ADD/DEL/CHECK), results cached for DEL.
//!
//! Our own implementation of the CNI spec's runtime side, matching libcni and containerd's
//! go-cni where they make choices the spec leaves open:
//! - the config is the first `*.conf`/`*.conflist`/`*.json` of the config dir in lexical order,
//!   re-read on every call (a `.conf` is wrapped as a one-plugin list);
//! - like containerd's `WithLoNetwork`, a built-in `cni-loopback` network (the `loopback` plugin,
//!   ifname `lo`) is attached before the pod network, so sandboxes get `lo` up without any code
//!   of ours in the pod's netns;
//! - ADD runs the chain in order threading `prevResult`; `runtimeConfig` carries only the
//!   capabilities (`portMappings`, `dns`, `bandwidth`) a plugin declares; `CNI_ARGS` carries the
//!   pod's identity (`IgnoreUnknown=1;K8S_POD_NAMESPACE=…;K8S_POD_NAME=…;
//!   K8S_POD_INFRA_CONTAINER_ID=…;K8S_POD_UID=…`);
//! - each successful attachment is cached as libcni does (`<cache>/results/<net>-<id>-<ifname>`),
//!   and DEL uses the cached config, args and result — so it works after a restart and after the
//!   config file changed or vanished; DEL runs the chain in reverse and is idempotent (a missing
//!   netns or cache entry is not an error, per the spec);
//! - a failed ADD is undone with a DEL of the whole chain (containerd's behaviour), so a failed
//!   RunPodSandbox leaves no veth, IPAM allocation or iptables rule behind.

pub mod config;
pub mod exec;
pub mod result;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub use config::NetworkConfigList;
pub use result::{CniInterface, PodIp};

use exec::{Command, Invocation};
use result::{CachedAttachment, ResultCache, CACHE_KIND};

/// The default directories (containerd's, plus Debian's plugin dir).
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";
/// The interface name the pod network gets inside the pod.
pub const DEFAULT_IFNAME: &str = "eth0";

/// Errors of the CNI layer; every message names the file, plugin or network concerned.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network config found in {}", dir.display())]
    NoConfig { dir: PathBuf },
    #[error("reading network config {}: {source}", file.display())]
    ConfigRead {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid network config {}: {msg}", file.display())]
    ConfigParse { file: PathBuf, msg: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} {command} failed: code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    PluginExit {
        plugin: String,
        command: &'static str,
        status: String,
        output: String,
    },
    #[error("running CNI plugin {plugin} {command}: {source}")]
    Exec {
        plugin: String,
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} returned a bad result: {msg}")]
    BadResult { plugin: String, msg: String },
    #[error("CNI result cache {}: {msg}", path.display())]
    Cache { path: PathBuf, msg: String },
    #[error("network {network}: no cached result for {container_id} ({ifname}) to check")]
    NotAttached {
        network: String,
        container_id: String,
        ifname: String,
    },
    #[error("network {network}: plugin {plugin} {command}: {source}")]
    Network {
        network: String,
        plugin: String,
        command: &'static str,
        #[source]
        source: Box<CniError>,
    },
}

/// A CRI port mapping as the `portMappings` capability carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: i32,
    #[serde(rename = "containerPort")]
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `dns` capability (from the CRI DNSConfig).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DnsCapability {
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub searches: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// The `bandwidth` capability (from the pod's bandwidth annotations), bits per second / bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BandwidthCapability {
    #[serde(rename = "ingressRate")]
    pub ingress_rate: u64,
    #[serde(rename = "ingressBurst")]
    pub ingress_burst: u64,
    #[serde(rename = "egressRate")]
    pub egress_rate: u64,
    #[serde(rename = "egressBurst")]
    pub egress_burst: u64,
}

/// What a sandbox's network attachment needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachRequest {
    /// The sandbox id (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The pinned network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The pod interface, normally [`DEFAULT_IFNAME`].
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
    pub dns: Option<DnsCapability>,
    pub bandwidth: Option<BandwidthCapability>,
}

impl AttachRequest {
    fn cni_args(&self) -> Vec<[String; 2]> {
        [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.pod_namespace.as_str()),
            ("K8S_POD_NAME", self.pod_name.as_str()),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id.as_str()),
            ("K8S_POD_UID", self.pod_uid.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }

    fn capability_args(&self) -> Map<String, Value> {
        let mut caps = Map::new();
        let ports: Vec<&PortMapping> = self
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .collect();
        if !ports.is_empty() {
            caps.insert(
                "portMappings".into(),
                serde_json::to_value(ports).unwrap_or_default(),
            );
        }
        if let Some(dns) = &self.dns {
            caps.insert("dns".into(), serde_json::to_value(dns).unwrap_or_default());
        }
        if let Some(bw) = &self.bandwidth {
            caps.insert(
                "bandwidth".into(),
                serde_json::to_value(bw).unwrap_or_default(),
            );
        }
        caps
    }
}

/// The pod network attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachResult {
    /// The network's name.
    pub network: String,
    /// The pod's IPs on the pod interface, IPv4 first.
    pub ips: Vec<PodIp>,
    /// The pod interface as the result names it.
    pub interface: Option<CniInterface>,
    /// The final result of the chain, as the last plugin returned it.
    pub raw: Value,
}

/// The CNI runtime: config dir, plugin dirs and result cache.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache: ResultCache,
    loopback: bool,
}

/// One network to attach: its config and the interface it attaches.
struct Attachment {
    list: NetworkConfigList,
    ifname: String,
}

impl Cni {
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl AsRef<Path>,
    ) -> Cni {
        Cni {
            conf_dir: conf_dir.into(),
            bin_dirs,
            cache: ResultCache::new(cache_dir.as_ref()),
            loopback: true,
        }
    }

    /// Whether to attach containerd's `cni-loopback` network first (default: yes).
    pub fn with_loopback(mut self, on: bool) -> Cni {
        self.loopback = on;
        self
    }

    /// The pod network config as it is now.
    pub fn load(&self) -> Result<NetworkConfigList, CniError> {
        config::load_dir(&self.conf_dir)
    }

    /// CRI `Status`'s NetworkReady: Ok, or why not (no config, a parse error naming file and
    /// field, a plugin binary missing).
    pub fn status(&self) -> Result<(), CniError> {
        let list = self.load()?;
        for plugin in &list.plugins {
            let t = plugin
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default();
            exec::find_plugin(t, &self.bin_dirs)?;
        }
        Ok(())
    }

    fn attachments(&self, ifname: &str) -> Result<Vec<Attachment>, CniError> {
        let mut out = Vec::new();
        if self.loopback {
            out.push(Attachment {
                list: NetworkConfigList::loopback(),
                ifname: "lo".into(),
            });
        }
        out.push(Attachment {
            list: self.load()?,
            ifname: ifname.to_string(),
        });
        Ok(out)
    }

    /// ADD: attaches the pod to the loopback and pod networks. On failure everything added is
    /// deleted again before the error is returned.
    pub async fn add(&self, req: &AttachRequest) -> Result<AttachResult, CniError> {
        let ifname = if req.ifname.is_empty() {
            DEFAULT_IFNAME
        } else {
            &req.ifname
        };
        let attachments = self.attachments(ifname)?;
        let mut last = None;
        for (i, a) in attachments.iter().enumerate() {
            match self.add_network(req, a).await {
                Ok(result) => last = Some((a.list.name.clone(), result)),
                Err(e) => {
                    // Undo this network's partial chain and the networks before it.
                    for done in attachments[..=i].iter().rev() {
                        if let Err(cleanup) = self.del_network_entry(req, done, true).await {
                            tracing::warn!(network = %done.list.name, container = %req.container_id,
                                error = %cleanup, "cleaning up after a failed CNI ADD");
                        }
                    }
                    return Err(e);
                }
            }
        }
        let (network, raw) = last.expect("at least the pod network");
        let (ips, interface) = result::pod_ips(&raw, ifname);
        Ok(AttachResult {
            network,
            ips,
            interface,
            raw,
        })
    }

    async fn add_network(&self, req: &AttachRequest, a: &Attachment) -> Result<Value, CniError> {
        let cni_args = req.cni_args();
        let caps = req.capability_args();
        let args = join_args(&cni_args);
        let netns = req.netns.to_string_lossy();
        let mut prev: Option<Value> = None;
        for i in 0..a.list.plugins.len() {
            let conf = a.list.plugin_config(i, prev.as_ref(), &caps);
            let inv = Invocation {
                command: Command::Add,
                container_id: &req.container_id,
                netns: &netns,
                ifname: &a.ifname,
                args: &args,
            };
            let out = self.run_plugin(&a.list, i, &inv, &conf).await?;
            if !out.is_object() {
                return Err(network_err(
                    &a.list,
                    i,
                    Command::Add,
                    CniError::BadResult {
                        plugin: plugin_type(&a.list, i),
                        msg: "ADD printed no result".into(),
                    },
                ));
            }
            prev = Some(out);
        }
        let result = prev.unwrap_or(Value::Null);
        self.cache.write(&CachedAttachment {
            kind: CACHE_KIND.into(),
            container_id: req.container_id.clone(),
            config: a.list.to_bytes(),
            if_name: a.ifname.clone(),
            network_name: a.list.name.clone(),
            netns: netns.into_owned(),
            cni_args,
            capability_args: caps,
            result: result.clone(),
        })?;
        Ok(result)
    }

    /// DEL: detaches the pod from every network it was attached to (found in the cache, whatever
    /// the config says now) and, if the cache has nothing, from the current networks. Idempotent;
    /// the netns may already be gone.
    pub async fn del(&self, req: &AttachRequest) -> Result<(), CniError> {
        let ifname = if req.ifname.is_empty() {
            DEFAULT_IFNAME
        } else {
            &req.ifname
        };
        let mut cached = self.cache.entries_for(&req.container_id);
        // Reverse of ADD: the pod network before loopback.
        cached.sort_by_key(|(_, e)| e.if_name == "lo");
        let mut first_err = None;
        for (path, entry) in &cached {
            let list = match NetworkConfigList::from_conflist(path, &entry.config) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "unparsable cached config; dropping the entry");
                    self.cache.remove(path)?;
                    continue;
                }
            };
            let a = Attachment {
                list,
                ifname: entry.if_name.clone(),
            };
            match self.del_chain(req, &a, entry, false).await {
                Ok(()) => self.cache.remove(path)?,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Networks with no cache entry (ADD interrupted before the cache write, or a cache lost):
        // DEL with the current config and no prevResult, as libcni does.
        let current = match self.attachments(ifname) {
            Ok(a) => a,
            Err(CniError::NoConfig { .. }) => return Ok(()),
            Err(e) if cached.is_empty() => return Err(e),
            Err(_) => return Ok(()),
        };
        for a in current.iter().rev() {
            let covered = cached
                .iter()
                .any(|(_, e)| e.network_name == a.list.name && e.if_name == a.ifname);
            if !covered {
                self.del_network_entry(req, a, false).await?;
            }
        }
        Ok(())
    }

    /// DEL of one network from its cache entry if there is one, else from `a`.
    async fn del_network_entry(
        &self,
        req: &AttachRequest,
        a: &Attachment,
        best_effort: bool,
    ) -> Result<(), CniError> {
        let path = self.cache.path(&a.list.name, &req.container_id, &a.ifname);
        let entry = self
            .cache
            .read(&path)
            .ok()
            .unwrap_or_else(|| CachedAttachment {
                kind: CACHE_KIND.into(),
                container_id: req.container_id.clone(),
                config: a.list.to_bytes(),
                if_name: a.ifname.clone(),
                network_name: a.list.name.clone(),
                netns: req.netns.to_string_lossy().into_owned(),
                cni_args: req.cni_args(),
                capability_args: req.capability_args(),
                result: Value::Null,
            });
        let r = self.del_chain(req, a, &entry, best_effort).await;
        if r.is_ok() || best_effort {
            self.cache.remove(&path)?;
        }
        r
    }

    /// Runs DEL over the chain in reverse with the cached args and result. `best_effort` carries
    /// on past failing plugins (cleanup after a failed ADD); otherwise the first failure stops
    /// the DEL and keeps the cache entry for a retry, as libcni does.
    async fn del_chain(
        &self,
        req: &AttachRequest,
        a: &Attachment,
        entry: &CachedAttachment,
        best_effort: bool,
    ) -> Result<(), CniError> {
        let netns = if req.netns.as_os_str().is_empty() || !req.netns.exists() {
            String::new()
        } else {
            req.netns.to_string_lossy().into_owned()
        };
        let args = join_args(&entry.cni_args);
        let prev = (config::version_at_least(&a.list.cni_version, (0, 4, 0))
            && !entry.result.is_null())
        .then_some(&entry.result);
        let mut first_err = None;
        for i in (0..a.list.plugins.len()).rev() {
            let conf = a.list.plugin_config(i, prev, &entry.capability_args);
            let inv = Invocation {
                command: Command::Del,
                container_id: &req.container_id,
                netns: &netns,
                ifname: &a.ifname,
                args: &args,
            };
            if let Err(e) = self.run_plugin(&a.list, i, &inv, &conf).await {
                if !best_effort {
                    return Err(e);
                }
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK (CNI ≥ 0.4.0, unless the list disables it): verifies every attachment against its
    /// cached result.
    pub async fn check(&self, req: &AttachRequest) -> Result<(), CniError> {
        let ifname = if req.ifname.is_empty() {
            DEFAULT_IFNAME
        } else {
            &req.ifname
        };
        for a in self.attachments(ifname)? {
            let path = self.cache.path(&a.list.name, &req.container_id, &a.ifname);
            if !path.exists() {
                return Err(CniError::NotAttached {
                    network: a.list.name.clone(),
                    container_id: req.container_id.clone(),
                    ifname: a.ifname.clone(),
                });
            }
            let entry = self.cache.read(&path)?;
            if !config::version_at_least(&a.list.cni_version, (0, 4, 0)) || a.list.disable_check {
                continue;
            }
            let netns = req.netns.to_string_lossy();
            let args = join_args(&entry.cni_args);
            for i in 0..a.list.plugins.len() {
                let conf = a
                    .list
                    .plugin_config(i, Some(&entry.result), &entry.capability_args);
                let inv = Invocation {
                    command: Command::Check,
                    container_id: &req.container_id,
                    netns: &netns,
                    ifname: &a.ifname,
                    args: &args,
                };
                self.run_plugin(&a.list, i, &inv, &conf).await?;
            }
        }
        Ok(())
    }

    async fn run_plugin(
        &self,
        list: &NetworkConfigList,
        index: usize,
        inv: &Invocation<'_>,
        conf: &Value,
    ) -> Result<Value, CniError> {
        let plugin = plugin_type(list, index);
        // portmap creates its shared CNI-HOSTPORT-* chains with check-then-create, so two of
        // them starting at once on a host without those chains fail with "File exists"
        // (seen with Debian's 1.1.1). Its runs are serialised within this process; they take
        // a few milliseconds each.
        let _portmap = if plugin == "portmap" {
            Some(PORTMAP_RUNS.lock().await)
        } else {
            None
        };
        let run = async {
            let binary = exec::find_plugin(&plugin, &self.bin_dirs)?;
            exec::run(&plugin, &binary, &self.bin_dirs, inv, conf).await
        };
        run.await
            .map_err(|e| network_err(list, index, inv.command, e))
    }
}

/// One portmap run at a time in this process (see `Cni::run_plugin`).
static PORTMAP_RUNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn plugin_type(list: &NetworkConfigList, index: usize) -> String {
    list.plugins[index]
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn network_err(list: &NetworkConfigList, index: usize, command: Command, e: CniError) -> CniError {
    CniError::Network {
        network: list.name.clone(),
        plugin: plugin_type(list, index),
        command: command.as_str(),
        source: Box::new(e),
    }
}

fn join_args(args: &[[String; 2]]) -> String {
    args.iter()
        .map(|[k, v]| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_and_capabilities_like_containerd() {
        let req = AttachRequest {
            container_id: "sb1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            pod_uid: "u-1".into(),
            port_mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 0,
                    container_port: 81,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            join_args(&req.cni_args()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=sb1;K8S_POD_UID=u-1"
        );
        let caps = req.capability_args();
        assert_eq!(
            Value::Object(caps),
            serde_json::json!({"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}),
            "ports without a host port are not mapped"
        );
    }
}
