//! Containers: CreateContainer resolves the image, mounts an overlay root filesystem from its
//! snapshots, writes the OCI spec and asks the pod's supervisor to create the container with
//! libcontainer (so a command missing from the image fails here, before StartContainer);
//! Start/Stop/Remove, status, ExecSync, log reopening, live resource updates and stats go through
//! the supervisor and the cgroup manager. Process state (pid, exit code, timestamps, OOM) is the
//! supervisor's record, read on every status call, so it is right after a runtime restart too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::state::{self, ContainerRecord};
use super::{container_name, Container, Runtime, Sandbox};
use crate::cgroups::{self, AnyCgroupManager, CgroupManager};
use crate::pb;
use crate::spec::{self, HostInfo, NamespacePaths, PidNamespace, SpecInput};
use crate::supervisor::{self, CreateRequest, ErrorKind, ExecSyncRequest};

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// Maps a signal name from an image's StopSignal (`SIGINT`, `INT`, `2`) to its number.
pub(crate) fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// CPU and memory usage of a cgroup in CRI's shape (both None when it cannot be read).
pub(crate) fn cgroup_usage(
    cgroups: &AnyCgroupManager,
    path: &str,
) -> (Option<pb::CpuUsage>, Option<pb::MemoryUsage>) {
    let Ok(s) = cgroups.stats(path) else {
        return (None, None);
    };
    let v = |x: Option<u64>| x.map(|value| pb::UInt64Value { value });
    let ts = s.timestamp_ns;
    let cpu = pb::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: v(s.cpu_usage_ns),
        usage_nano_cores: None,
    };
    let memory = pb::MemoryUsage {
        timestamp: ts,
        working_set_bytes: v(s.memory_working_set_bytes),
        available_bytes: None,
        usage_bytes: v(s.memory_usage_bytes),
        rss_bytes: v(s.memory_rss_bytes),
        page_faults: v(s.page_faults),
        major_page_faults: v(s.major_page_faults),
    };
    (Some(cpu), Some(memory))
}

/// The repo digest that names the image the way the kubelet asked for it (an image has one per
/// repository it was pulled from), else any, else the image id — containerd's `imageRef`.
fn image_ref_for(name: &str, image: &crate::image::ImageRecord) -> String {
    let repo = crate::reference::Reference::parse(name)
        .map(|r| r.name())
        .ok();
    image
        .repo_digests
        .iter()
        .find(|d| {
            repo.as_deref()
                .is_some_and(|r| d.split('@').next() == Some(r))
        })
        .or_else(|| image.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| image.id.clone())
}

/// Bytes and inodes used by a directory tree (the container's writable layer).
fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            inodes += 1;
            if md.is_dir() {
                stack.push(e.path());
            } else {
                bytes += md.len();
            }
        }
    }
    (bytes, inodes)
}

impl Runtime {
    pub(crate) async fn create_container_in(
        &self,
        sandbox_id: &str,
        config: pb::ContainerConfig,
        _sandbox_config: pb::PodSandboxConfig,
    ) -> Result<String, Status> {
        let sb = self.sandbox(sandbox_id)?;
        let sandbox = sb.record.read().clone();
        if sandbox.stopped {
            return Err(Status::failed_precondition(format!(
                "sandbox {:?} is not ready (it was stopped)",
                sandbox.id
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Status::invalid_argument("container config must include metadata"))?;
        if meta.name.is_empty() {
            return Err(Status::invalid_argument(
                "container metadata must include a name",
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Status::invalid_argument("container config must name an image"))?;
        let image = self.images.get(&image_name).ok_or_else(|| {
            Status::not_found(format!(
                "failed to create containerd container: image {image_name:?}: not found"
            ))
        })?;

        let id = state::new_id();
        let name = container_name(&config, &sandbox.config);
        {
            let mut names = self.names.lock();
            if let Some(owner) = names.get(&name) {
                return Err(Status::already_exists(format!(
                    "failed to reserve container name {name:?}: name {name:?} is reserved for {owner:?}"
                )));
            }
            names.insert(name.clone(), id.clone());
        }
        let dir = self.container_dir(&id);
        let result = self
            .try_create(&sb, &id, &dir, config, image_name, image)
            .await;
        match result {
            Ok(record) => {
                self.containers.write().insert(
                    id.clone(),
                    Arc::new(Container {
                        record: parking_lot::RwLock::new(record),
                        lifecycle: tokio::sync::Mutex::new(()),
                    }),
                );
                let c = self.container(&id)?;
                let status = self.container_status_of(&c).await;
                self.publish_container(&id, pb::ContainerEventType::ContainerCreatedEvent, status);
                Ok(id)
            }
            Err(e) => {
                let rootfs = dir.join("rootfs");
                if rootfs.exists() {
                    let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
                }
                let _ = self.images.remove_rootfs(&id);
                let _ = std::fs::remove_dir_all(&dir);
                self.names.lock().remove(&name);
                Err(e)
            }
        }
    }

    async fn try_create(
        &self,
        sb: &Sandbox,
        id: &str,
        dir: &Path,
        config: pb::ContainerConfig,
        image_name: String,
        image: crate::image::ImageRecord,
    ) -> Result<ContainerRecord, Status> {
        let sandbox = sb.record.read().clone();
        std::fs::create_dir_all(dir)
            .map_err(|e| internal("creating the container directory", e))?;
        let rootfs_dir = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs_dir)
            .map_err(|e| internal("creating the rootfs mountpoint", e))?;
        let rootfs = self
            .images
            .prepare_rootfs(id, &image.id)
            .map_err(|e| internal("preparing the container's root filesystem", e))?;
        rootfs
            .mount(&rootfs_dir)
            .map_err(|e| internal("mounting the container's root filesystem", e))?;

        let log_path = if sandbox.config.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            let p = Path::new(&sandbox.config.log_directory).join(&config.log_path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| internal("creating the log directory", e))?;
            }
            p.to_string_lossy().into_owned()
        };
        let cgroup_path = cgroups::container_cgroup(&sandbox.cgroup_parent, id);
        let sandbox_dir = self.sandbox_dir(&sandbox.id);
        let client = self.supervisor(sb).await?;
        let pid = self.pid_namespace_for(&config, &sandbox, &client).await?;

        let input = SpecInput {
            config: &config,
            sandbox: &sandbox.config,
            image: &image.config,
            rootfs: rootfs_dir.clone(),
            namespaces: NamespacePaths {
                net: sandbox.netns.clone(),
                ipc: sandbox.ipcns.clone(),
                uts: sandbox.utsns.clone(),
                pid,
            },
            cgroups_path: cgroup_path.clone(),
            hostname_path: Some(sandbox_dir.join("hostname")),
            hosts_path: Some(sandbox_dir.join("hosts")),
            resolv_conf_path: Some(sandbox_dir.join("resolv.conf")),
            pids_limit: None,
            host: HostInfo::probe(),
        };
        let oci = spec::build(&input)
            .map_err(|e| Status::invalid_argument(format!("invalid container config: {e}")))?;
        // A working directory the image lacks is made, as runc does, inside the root filesystem
        // even if the image's symlinks point elsewhere.
        let cwd = oci
            .process()
            .as_ref()
            .map(|p| p.cwd().clone())
            .unwrap_or_default();
        if cwd.components().count() > 1 {
            let mut builder = safe_path::ScopedDirBuilder::new(&rootfs_dir)
                .map_err(|e| internal("opening the root filesystem", e))?;
            builder.recursive(true);
            builder.create(&cwd).map_err(|e| {
                internal(
                    &format!("creating the working directory {}", cwd.display()),
                    e,
                )
            })?;
        }
        oci.save(dir.join("config.json"))
            .map_err(|e| internal("writing the OCI spec", e))?;

        client
            .create(CreateRequest {
                id: id.to_string(),
                bundle: dir.to_path_buf(),
                log_path: (!log_path.is_empty()).then(|| PathBuf::from(&log_path)),
                tty: config.tty,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                // The kubelet rotates container logs itself (ReopenContainerLog).
                max_log_size: 0,
                max_log_files: 0,
            })
            .await
            .map_err(|e| {
                // No container: no log file either, or the kubelet's restart count, which it
                // reads from the log files when no container is left, would grow with every
                // failed create.
                if !log_path.is_empty() {
                    let _ = std::fs::remove_file(&log_path);
                }
                match e.kind() {
                    Some(ErrorKind::InvalidArgument) => Status::invalid_argument(e.to_string()),
                    _ => Status::unknown(e.to_string()),
                }
            })?;

        let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
        let record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            created_at: state::now_ns(),
            image_ref: image_ref_for(&image_name, &image),
            image_id: image.id.clone(),
            image_name,
            image_config: image.config.clone(),
            log_path,
            bundle: dir.to_path_buf(),
            rootfs: rootfs_dir,
            cgroup_path,
            resources,
            note: String::new(),
            config,
        };
        state::write_atomic(&dir.join("container.json"), &record)
            .map_err(|e| internal("recording the container", e))?;
        Ok(record)
    }

    /// A container's full id, its pod's supervisor and the state the supervisor records for it.
    pub(super) async fn supervised(
        &self,
        c: &Container,
    ) -> Result<
        (
            String,
            Arc<supervisor::SupervisorClient>,
            supervisor::ContainerState,
        ),
        Status,
    > {
        let sb = self.sandbox_of(c)?;
        let id = c.record.read().id.clone();
        let client = self.supervisor(&sb).await?;
        let st = client
            .state(&id)
            .await
            .map_err(|e| internal("reading the container's state", e))?;
        Ok((id, client, st))
    }

    /// The PID namespace a container gets, from its NamespaceOption.pid.
    async fn pid_namespace_for(
        &self,
        config: &pb::ContainerConfig,
        sandbox: &super::state::SandboxRecord,
        client: &supervisor::SupervisorClient,
    ) -> Result<PidNamespace, Status> {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        match pb::NamespaceMode::try_from(opts.pid).unwrap_or(pb::NamespaceMode::Container) {
            pb::NamespaceMode::Node => Ok(PidNamespace::Host),
            pb::NamespaceMode::Pod if sandbox.shared_pid => {
                let info = client.info().await.map_err(|e| {
                    internal("asking the supervisor for the pod's PID namespace", e)
                })?;
                info.pid_namespace.map(PidNamespace::Pod).ok_or_else(|| {
                    Status::internal("the pod shares a PID namespace but its supervisor has none")
                })
            }
            pb::NamespaceMode::Pod | pb::NamespaceMode::Container => Ok(PidNamespace::Container),
            pb::NamespaceMode::Target => {
                let target = self.container(&opts.target_id)?;
                let tid = target.record.read().id.clone();
                let st = client
                    .state(&tid)
                    .await
                    .map_err(|e| internal("reading the target container's state", e))?;
                if st.status != supervisor::Status::Running || st.pid <= 0 {
                    return Err(Status::failed_precondition(format!(
                        "target container {tid:?} is not running"
                    )));
                }
                Ok(PidNamespace::Target(PathBuf::from(format!(
                    "/proc/{}/ns/pid",
                    st.pid
                ))))
            }
        }
    }

    fn sandbox_of(&self, c: &Container) -> Result<Arc<Sandbox>, Status> {
        let sid = c.record.read().sandbox_id.clone();
        self.sandbox(&sid)
    }

    pub(crate) async fn start_container_by_id(&self, id: &str) -> Result<(), Status> {
        let c = self.container(id)?;
        let _guard = c.lifecycle.lock().await;
        let (id, client, st) = self.supervised(&c).await?;
        if st.status != supervisor::Status::Created {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is in {:?} state, not created",
                st.status
            )));
        }
        client
            .start(&id)
            .await
            .map_err(|e| Status::unknown(format!("failed to start containerd task {id:?}: {e}")))?;
        let status = self.container_status_of(&c).await;
        self.publish_container(&id, pb::ContainerEventType::ContainerStartedEvent, status);
        Ok(())
    }

    /// Sends the image's stop signal, waits up to `timeout` seconds, then SIGKILL.
    pub(crate) async fn stop_container_by_id(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = c.lifecycle.lock().await;
        let sb = self.sandbox_of(&c)?;
        let (id, stop_signal) = {
            let r = c.record.read();
            (r.id.clone(), r.image_config.stop_signal.clone())
        };
        let Ok(client) = self.supervisor(&sb).await else {
            // No supervisor: nothing of this pod can be running.
            return Ok(());
        };
        let st = client
            .state(&id)
            .await
            .map_err(|e| internal("reading the container's state", e))?;
        if st.status == supervisor::Status::Exited {
            return Ok(());
        }
        if st.status == supervisor::Status::Created {
            // Never started: SIGKILL its waiting init right away.
            let _ = client.kill(&id, libc::SIGKILL, true).await;
        } else {
            if timeout > 0 {
                let sig = stop_signal
                    .as_deref()
                    .and_then(parse_signal)
                    .unwrap_or(libc::SIGTERM);
                client
                    .kill(&id, sig, false)
                    .await
                    .map_err(|e| internal(&format!("sending signal {sig} to {id}"), e))?;
                if self
                    .wait_exited(&client, &id, Duration::from_secs(timeout as u64))
                    .await
                {
                    return Ok(());
                }
            }
            client
                .kill(&id, libc::SIGKILL, true)
                .await
                .map_err(|e| internal(&format!("killing {id}"), e))?;
        }
        if !self
            .wait_exited(&client, &id, Duration::from_secs(10))
            .await
        {
            return Err(Status::deadline_exceeded(format!(
                "container {id:?} did not exit 10s after SIGKILL"
            )));
        }
        Ok(())
    }

    async fn wait_exited(
        &self,
        client: &supervisor::SupervisorClient,
        id: &str,
        within: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = Duration::from_millis(2);
        loop {
            match client.state(id).await {
                Ok(st) if st.status == supervisor::Status::Exited => return true,
                Err(_) => return true,
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub(crate) async fn remove_container_by_id(&self, id: &str) -> Result<(), Status> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.code() == tonic::Code::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = c.record.read().id.clone();
        // A running container is killed first (containerd refuses; the kubelet always stops
        // first, and force is what RemovePodSandbox needs).
        self.stop_container_by_id(&id, 0).await?;
        let _guard = c.lifecycle.lock().await;
        let status = self.container_status_of(&c).await;
        if let Ok(sb) = self.sandbox_of(&c) {
            if let Ok(client) = self.supervisor(&sb).await {
                client
                    .delete(&id, true)
                    .await
                    .map_err(|e| internal(&format!("deleting container {id}"), e))?;
            }
        }
        let rec = c.record.read().clone();
        if rec.rootfs.exists() {
            match nix::mount::umount2(&rec.rootfs, nix::mount::MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(internal("unmounting the container's root filesystem", e)),
            }
        }
        self.images
            .remove_rootfs(&id)
            .map_err(|e| internal("removing the container's snapshot", e))?;
        let _ = std::fs::remove_dir_all(self.container_dir(&id));
        self.containers.write().remove(&id);
        if let Ok(sb) = self.sandbox_of(&c) {
            self.names
                .lock()
                .remove(&container_name(&rec.config, &sb.record.read().config));
        } else {
            self.names.lock().retain(|_, owner| owner != &id);
        }
        self.publish_container(&id, pb::ContainerEventType::ContainerDeletedEvent, status);
        Ok(())
    }

    /// The CRI status of a container, from its record and the supervisor's view of its process.
    pub(crate) async fn container_status_of(&self, c: &Container) -> pb::ContainerStatus {
        let rec = c.record.read().clone();
        let st = match self.sandbox_of(c) {
            Ok(sb) => match self.supervisor(&sb).await {
                Ok(client) => client.state(&rec.id).await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        let mut status = pb::ContainerStatus {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: pb::ContainerState::ContainerUnknown as i32,
            created_at: rec.created_at,
            image: Some(pb::ImageSpec {
                image: rec.image_name.clone(),
                ..Default::default()
            }),
            image_ref: rec.image_ref.clone(),
            image_id: rec.image_id.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            mounts: rec.config.mounts.clone(),
            log_path: rec.log_path.clone(),
            resources: rec.resources.clone().map(|l| pb::ContainerResources {
                linux: Some(l),
                windows: None,
            }),
            ..Default::default()
        };
        let Some(st) = st else {
            status.reason = "Unknown".into();
            status.message =
                "the pod's supervisor is not running; the container's state is unknown".into();
            return status;
        };
        status.started_at = st.started_at;
        status.finished_at = st.finished_at;
        status.state = match st.status {
            supervisor::Status::Created => pb::ContainerState::ContainerCreated,
            supervisor::Status::Running => pb::ContainerState::ContainerRunning,
            supervisor::Status::Exited => pb::ContainerState::ContainerExited,
        } as i32;
        if st.status == supervisor::Status::Exited {
            status.exit_code = st.exit_code;
            status.reason = st.reason.clone();
        }
        let mut message = st.message.clone();
        if !rec.note.is_empty() {
            if !message.is_empty() {
                message.push_str("; ");
            }
            message.push_str(&rec.note);
        }
        status.message = message;
        status
    }

    /// (sandbox id, status) of every container.
    /// The statuses of the containers whose record passes `wanted`, with their sandbox IDs.
    /// Only those are asked of their supervisors: the kubelet lists one pod's containers per
    /// sync, and asking every supervisor each time made a node's sync cost grow with the square
    /// of its pods.
    pub(crate) async fn list_container_statuses(
        &self,
        wanted: impl Fn(&ContainerRecord) -> bool,
    ) -> Vec<(String, pb::ContainerStatus)> {
        let picked: Vec<Arc<Container>> = self
            .containers
            .read()
            .values()
            .filter(|c| wanted(&c.record.read()))
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(picked.len());
        for c in picked {
            let sid = c.record.read().sandbox_id.clone();
            out.push((sid, self.container_status_of(&c).await));
        }
        out
    }

    pub(crate) async fn update_resources(
        &self,
        id: &str,
        linux: Option<pb::LinuxContainerResources>,
    ) -> Result<(), Status> {
        let c = self.container(id)?;
        let _guard = c.lifecycle.lock().await;
        let Some(res) = linux else { return Ok(()) };
        let (cgroup_path, dir) = {
            let r = c.record.read();
            (r.cgroup_path.clone(), self.container_dir(&r.id))
        };
        self.cgroups
            .update(&cgroup_path, &res)
            .map_err(|e| Status::unknown(format!("failed to update resources: {e}")))?;
        let mut r = c.record.write();
        r.resources = Some(res);
        state::write_atomic(&dir.join("container.json"), &*r)
            .map_err(|e| internal("recording the container", e))
    }

    pub(crate) async fn reopen_log(&self, id: &str) -> Result<(), Status> {
        let c = self.container(id)?;
        let (id, client, st) = self.supervised(&c).await?;
        if st.status != supervisor::Status::Running {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        client
            .reopen_log(&id)
            .await
            .map_err(|e| internal("reopening the container log", e))
    }

    pub(crate) async fn exec_sync_in(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<pb::ExecSyncResponse, Status> {
        let c = self.container(id)?;
        if cmd.is_empty() {
            return Err(Status::invalid_argument("ExecSync needs a command"));
        }
        let (id, client, st) = self.supervised(&c).await?;
        if st.status != supervisor::Status::Running {
            return Err(Status::failed_precondition(format!(
                "container {id:?} is not running"
            )));
        }
        let out = client
            .exec_sync(ExecSyncRequest {
                id: id.clone(),
                args: cmd,
                env: Vec::new(),
                timeout_ms: (timeout.max(0) as u64) * 1000,
            })
            .await
            .map_err(|e| Status::unknown(format!("failed to exec in container: {e}")))?;
        if out.timed_out {
            return Err(Status::deadline_exceeded(format!(
                "command {:?} timed out after {timeout}s",
                id
            )));
        }
        Ok(pb::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    pub(crate) fn stats_of(&self, c: &Container) -> pb::ContainerStats {
        let rec = c.record.read().clone();
        let (cpu, memory) = cgroup_usage(&self.cgroups, &rec.cgroup_path);
        let upper = self.images.rootfs(&rec.id).map(|r| r.upper);
        let writable_layer = upper.map(|u| {
            let (bytes, inodes) = dir_usage(&u);
            pb::FilesystemUsage {
                timestamp: state::now_ns(),
                fs_id: Some(pb::FilesystemIdentifier {
                    mountpoint: u.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(pb::UInt64Value { value: bytes }),
                inodes_used: Some(pb::UInt64Value { value: inodes }),
            }
        });
        pb::ContainerStats {
            attributes: Some(pb::ContainerAttributes {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
            }),
            cpu,
            memory,
            writable_layer,
            swap: None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stop_signals_parse_by_name_and_number() {
        assert_eq!(super::parse_signal("SIGINT"), Some(libc::SIGINT));
        assert_eq!(super::parse_signal("term"), Some(libc::SIGTERM));
        assert_eq!(super::parse_signal("9"), Some(9));
        assert_eq!(super::parse_signal("SIGNOPE"), None);
    }
}
