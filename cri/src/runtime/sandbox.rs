//! Pod sandboxes: RunPodSandbox makes the pod's namespaces, files (hostname, resolv.conf, hosts),
//! cgroup parent, supervisor and network, in that order, and undoes what it made if a later step
//! fails; StopPodSandbox stops the containers and takes the network and namespaces down;
//! RemovePodSandbox removes the containers, the supervisor, the cgroup and the records.
//! Stop and remove are idempotent and work after a partial failure or a restart.

use std::path::Path;
use std::sync::Arc;

use tonic::Status;

use super::state::{self, SandboxRecord};
use super::{sandbox_name, Runtime, Sandbox};
use crate::cgroups::{self, CgroupManager};
use crate::cni::{AttachRequest, PortMapping};
use crate::namespaces::{NamespaceRequest, PodNamespaces};
use crate::pb;
use crate::supervisor::SupervisorClient;

/// The default resolv.conf / hosts when a pod brings none.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

fn mode(
    opts: &Option<pb::NamespaceOption>,
    pick: fn(&pb::NamespaceOption) -> i32,
) -> pb::NamespaceMode {
    opts.as_ref()
        .map(pick)
        .and_then(|m| pb::NamespaceMode::try_from(m).ok())
        .unwrap_or(pb::NamespaceMode::Pod)
}

pub(crate) fn namespace_options(config: &pb::PodSandboxConfig) -> Option<pb::NamespaceOption> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
}

/// Removes what a crashed create left in `dir`: namespace pins first (they are mounts), then the
/// directory.
pub(crate) fn cleanup_orphan_dir(dir: &Path) {
    if let Ok(ns) = PodNamespaces::open(&dir.join("ns")) {
        let _ = ns.remove();
    }
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

impl Runtime {
    pub(crate) async fn run_sandbox(
        &self,
        config: pb::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, Status> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("sandbox config must include metadata"))?;
        if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
            return Err(Status::invalid_argument(
                "sandbox metadata must include name, namespace and uid",
            ));
        }
        if !runtime_handler.is_empty() {
            return Err(Status::invalid_argument(format!(
                "no runtime for {runtime_handler:?} is configured (capstan has only the default handler)"
            )));
        }
        let id = state::new_id();
        let name = sandbox_name(&config);
        {
            let mut names = self.names.lock();
            if let Some(owner) = names.get(&name) {
                return Err(Status::already_exists(format!(
                    "failed to reserve sandbox name {name:?}: name {name:?} is reserved for {owner:?}"
                )));
            }
            names.insert(name.clone(), id.clone());
        }
        match self.make_sandbox(&id, &config, runtime_handler).await {
            Ok(sb) => {
                self.sandboxes.write().insert(id.clone(), sb.clone());
                let status = self.sandbox_status(&sb);
                self.publish(
                    &id,
                    pb::ContainerEventType::ContainerCreatedEvent,
                    Vec::new(),
                    Some(status.clone()),
                );
                self.publish(
                    &id,
                    pb::ContainerEventType::ContainerStartedEvent,
                    Vec::new(),
                    Some(status),
                );
                Ok(id)
            }
            Err(e) => {
                self.names.lock().remove(&name);
                Err(e)
            }
        }
    }

    /// Makes everything a sandbox needs; on failure undoes what it made, newest first.
    async fn make_sandbox(
        &self,
        id: &str,
        config: &pb::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<Arc<Sandbox>, Status> {
        let mut made = Made::default();
        match self
            .try_make_sandbox(id, config, runtime_handler, &mut made)
            .await
        {
            Ok(sb) => Ok(sb),
            Err(e) => {
                if let Some(req) = made.network.take() {
                    if let Err(e) = self.cni.del(&req).await {
                        tracing::warn!("undoing a failed RunPodSandbox {id}: CNI DEL: {e}");
                    }
                }
                if let Some(s) = made.supervisor.take() {
                    let _ = s.shutdown().await;
                }
                if let Some(ns) = made.namespaces.take() {
                    let _ = ns.remove();
                }
                if let Some(cg) = made.cgroup.take() {
                    let _ = self.cgroups.remove(&cg);
                }
                let _ = std::fs::remove_dir_all(self.sandbox_dir(id));
                Err(e)
            }
        }
    }

    async fn try_make_sandbox(
        &self,
        id: &str,
        config: &pb::PodSandboxConfig,
        runtime_handler: String,
        undo: &mut Made,
    ) -> Result<Arc<Sandbox>, Status> {
        let dir = self.sandbox_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| internal("creating the sandbox directory", e))?;

        let ns_opts = namespace_options(config);
        let host_net = mode(&ns_opts, |o| o.network) == pb::NamespaceMode::Node;
        let host_ipc = mode(&ns_opts, |o| o.ipc) == pb::NamespaceMode::Node;
        let pid_mode = mode(&ns_opts, |o| o.pid);
        let hostname = if host_net {
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else if config.hostname.is_empty() {
            config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };

        // Namespaces: the network one also carries UTS (a host-network pod has the host's name).
        let ns = PodNamespaces::create(
            &dir.join("ns"),
            &NamespaceRequest {
                net: !host_net,
                ipc: !host_ipc,
                uts: !host_net,
                hostname: (!host_net).then(|| hostname.clone()),
            },
        )
        .map_err(|e| internal("creating the pod's namespaces", e))?;
        let (netns, ipcns, utsns) = ns.paths();
        undo.namespaces = Some(ns);

        // Files every container of the pod mounts.
        write_pod_files(&dir, config, host_net, &hostname)
            .map_err(|e| internal("writing the pod's hostname, hosts and resolv.conf", e))?;

        // The pod's cgroup.
        let cgroup_parent = cgroups::pod_cgroup_parent(
            config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.as_str())
                .unwrap_or(""),
            id,
        );
        self.cgroups
            .create(&cgroup_parent)
            .map_err(|e| internal(&format!("creating the pod cgroup {cgroup_parent}"), e))?;
        if cgroup_parent.starts_with(cgroups::PODS_CGROUP) {
            undo.cgroup = Some(cgroup_parent.clone());
        }

        // The supervisor, in its own cgroup outside the pod's limits.
        let supervisors = self.config.supervisors_cgroup.as_str();
        let _ = self.cgroups.create(supervisors);
        let client = SupervisorClient::spawn(
            &self.config.supervisor_exe,
            &self.supervisor_dir(id),
            Some(Path::new(supervisors)),
            pid_mode == pb::NamespaceMode::Pod,
        )
        .await
        .map_err(|e| internal("starting the pod's supervisor", e))?;
        let client = Arc::new(client);
        undo.supervisor = Some(client.clone());

        // The network.
        let mut ips = Vec::new();
        let mut network_attached = false;
        if let Some(netns_path) = netns.as_ref().filter(|_| !host_net) {
            let req = self.attach_request(id, config, netns_path);
            let result = self.cni.add(&req).await.map_err(|e| {
                Status::unknown(format!("failed to setup network for sandbox {id:?}: {e}"))
            })?;
            network_attached = true;
            undo.network = Some(req);
            ips = result.ips.iter().map(|ip| ip.address.to_string()).collect();
        }

        let record = SandboxRecord {
            id: id.to_string(),
            config: config.clone(),
            created_at: state::now_ns(),
            stopped: false,
            ips,
            network_attached,
            netns,
            ipcns,
            utsns,
            cgroup_parent,
            shared_pid: pid_mode == pb::NamespaceMode::Pod,
            runtime_handler,
        };
        state::write_atomic(&dir.join("sandbox.json"), &record)
            .map_err(|e| internal("recording the sandbox", e))?;
        self.watch_supervisor(id, client.clone());
        let sb = Arc::new(Sandbox {
            record: parking_lot::RwLock::new(record),
            supervisor: tokio::sync::OnceCell::new(),
            lifecycle: tokio::sync::Mutex::new(()),
        });
        let _ = sb.supervisor.set(client);
        Ok(sb)
    }

    pub(crate) fn attach_request(
        &self,
        id: &str,
        config: &pb::PodSandboxConfig,
        netns: &Path,
    ) -> AttachRequest {
        let meta = config.metadata.clone().unwrap_or_default();
        AttachRequest {
            container_id: id.to_string(),
            netns: netns.to_path_buf(),
            ifname: "eth0".to_string(),
            pod_namespace: meta.namespace,
            pod_name: meta.name,
            pod_uid: meta.uid,
            port_mappings: config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                    protocol: match pb::Protocol::try_from(p.protocol).unwrap_or(pb::Protocol::Tcp)
                    {
                        pb::Protocol::Tcp => "tcp",
                        pb::Protocol::Udp => "udp",
                        pb::Protocol::Sctp => "sctp",
                    }
                    .to_string(),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            dns: None,
            bandwidth: None,
        }
    }

    pub(crate) async fn stop_sandbox(&self, id: &str) -> Result<(), Status> {
        let sb = match self.sandbox(id) {
            Ok(sb) => sb,
            // Stopping a sandbox that is gone is not an error (the kubelet retries).
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = sb.lifecycle.lock().await;
        let id = sb.record.read().id.clone();
        // Every container of the pod stops, without grace: the kubelet stopped them with their
        // grace periods before asking for this.
        let members = self.members(&id);
        for cid in members {
            self.stop_container_by_id(&cid, 0).await?;
        }
        let rec = sb.record.read().clone();
        if rec.network_attached {
            if let Some(netns) = &rec.netns {
                let req = self.attach_request(&id, &rec.config, netns);
                self.cni.del(&req).await.map_err(|e| {
                    Status::unknown(format!("failed to destroy network for sandbox {id:?}: {e}"))
                })?;
            }
        }
        if let Ok(ns) = PodNamespaces::open(&self.sandbox_dir(&id).join("ns")) {
            ns.remove()
                .map_err(|e| internal("removing the pod's namespaces", e))?;
        }
        let changed = {
            let mut r = sb.record.write();
            let changed = !r.stopped;
            r.stopped = true;
            r.network_attached = false;
            state::write_atomic(&self.sandbox_dir(&id).join("sandbox.json"), &*r)
                .map_err(|e| internal("recording the sandbox", e))?;
            changed
        };
        if changed {
            let status = self.sandbox_status(&sb);
            self.publish(
                &id,
                pb::ContainerEventType::ContainerStoppedEvent,
                Vec::new(),
                Some(status),
            );
        }
        Ok(())
    }

    pub(crate) async fn remove_sandbox(&self, id: &str) -> Result<(), Status> {
        let sb = match self.sandbox(id) {
            Ok(sb) => sb,
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = sb.record.read().id.clone();
        if !sb.record.read().stopped {
            self.stop_sandbox(&id).await?;
        }
        let _guard = sb.lifecycle.lock().await;
        let members = self.members(&id);
        for cid in members {
            self.remove_container_by_id(&cid).await?;
        }
        if let Ok(client) = self.supervisor(&sb).await {
            client
                .shutdown()
                .await
                .map_err(|e| internal("stopping the pod's supervisor", e))?;
        }
        let rec = sb.record.read().clone();
        if rec.cgroup_parent.starts_with(cgroups::PODS_CGROUP) {
            self.cgroups.remove(&rec.cgroup_parent).map_err(|e| {
                internal(&format!("removing the pod cgroup {}", rec.cgroup_parent), e)
            })?;
        }
        cleanup_orphan_dir(&self.sandbox_dir(&id));
        self.sandboxes.write().remove(&id);
        self.names.lock().remove(&sandbox_name(&rec.config));
        let status = self.sandbox_status(&sb);
        self.publish(
            &id,
            pb::ContainerEventType::ContainerDeletedEvent,
            Vec::new(),
            Some(status),
        );
        Ok(())
    }

    /// The ids of a sandbox's containers.
    fn members(&self, sandbox_id: &str) -> Vec<String> {
        self.containers
            .read()
            .values()
            .filter(|c| c.record.read().sandbox_id == sandbox_id)
            .map(|c| c.record.read().id.clone())
            .collect()
    }

    pub(crate) fn sandbox_status(&self, sb: &Sandbox) -> pb::PodSandboxStatus {
        let r = sb.record.read();
        let mut ips = r.ips.iter();
        let network = (!r.ips.is_empty()).then(|| pb::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| pb::PodIp { ip: ip.clone() }).collect(),
        });
        pb::PodSandboxStatus {
            id: r.id.clone(),
            metadata: r.config.metadata.clone(),
            state: if r.stopped {
                pb::PodSandboxState::SandboxNotready as i32
            } else {
                pb::PodSandboxState::SandboxReady as i32
            },
            created_at: r.created_at,
            network: network.or_else(|| Some(pb::PodSandboxNetworkStatus::default())),
            linux: Some(pb::LinuxPodSandboxStatus {
                namespaces: Some(pb::Namespace {
                    options: Some(namespace_options(&r.config).unwrap_or_default()),
                }),
            }),
            labels: r.config.labels.clone(),
            annotations: r.config.annotations.clone(),
            runtime_handler: r.runtime_handler.clone(),
        }
    }

    pub(crate) fn sandbox_stats(&self, sb: &Sandbox) -> pb::PodSandboxStats {
        let r = sb.record.read().clone();
        let containers: Vec<pb::ContainerStats> = self
            .containers
            .read()
            .values()
            .filter(|c| c.record.read().sandbox_id == r.id)
            .map(|c| self.stats_of(c))
            .collect();
        let (cpu, memory) = super::container::cgroup_usage(&self.cgroups, &r.cgroup_parent);
        pb::PodSandboxStats {
            attributes: Some(pb::PodSandboxAttributes {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
            }),
            linux: Some(pb::LinuxPodSandboxStats {
                cpu,
                memory,
                network: None,
                process: None,
                containers,
            }),
            windows: None,
        }
    }
}

/// hostname, hosts and resolv.conf for the pod, in the sandbox directory; containers bind-mount
/// them (as containerd does).
fn write_pod_files(
    dir: &Path,
    config: &pb::PodSandboxConfig,
    host_net: bool,
    hostname: &str,
) -> std::io::Result<()> {
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    let hosts = if host_net {
        std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| DEFAULT_HOSTS.to_string())
    } else {
        DEFAULT_HOSTS.to_string()
    };
    std::fs::write(dir.join("hosts"), hosts)?;
    let resolv = match &config.dns_config {
        Some(dns)
            if !(dns.servers.is_empty() && dns.searches.is_empty() && dns.options.is_empty()) =>
        {
            let mut s = String::new();
            if !dns.searches.is_empty() {
                s.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                s.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                s.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(dir.join("resolv.conf"), resolv)
}

/// What a RunPodSandbox has made so far, so that a failure can take it down again.
#[derive(Default)]
pub(crate) struct Made {
    namespaces: Option<PodNamespaces>,
    cgroup: Option<String>,
    supervisor: Option<Arc<SupervisorClient>>,
    network: Option<AttachRequest>,
}
