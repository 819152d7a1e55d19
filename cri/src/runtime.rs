//! The CRI RuntimeService of the built-in runtime. It ties the pieces together: a sandbox is pinned
//! namespaces (`namespaces`) + CNI (`cni`) + a pod cgroup (`cgroups`) + the pod's supervisor
//! process (`supervisor`); a container is an image root filesystem (`image`), an OCI spec
//! (`spec`) and a process the supervisor creates with libcontainer. Every sandbox and container
//! is recorded on disk (`state`), so a restarted runtime reconnects to the supervisors — which kept
//! the containers running and recorded exits meanwhile — instead of starting anything again.
//!
//! The kubelet calls this in-process through the tonic-generated `RuntimeService` trait (the
//! request/response types are CRI's own), and `server` serves the same object on a unix socket.

mod container;
mod filter;
mod sandbox;
pub mod state;
pub mod streaming;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use parking_lot::RwLock;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

use crate::cgroups::AnyCgroupManager;
use crate::cni::Cni;
use crate::image::ImageStore;
use crate::pb;
use crate::supervisor::SupervisorClient;
use state::{ContainerRecord, SandboxRecord};

/// Where things live and which binaries and plugins to use.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Everything the runtime keeps: `sandboxes/<id>/`, `containers/<id>/`, the image store.
    pub root: PathBuf,
    /// The binary run as `<exe> supervise …` for each pod.
    pub supervisor_exe: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    /// The cgroup filesystem root (`/sys/fs/cgroup`; a fake tree in unit tests).
    pub cgroup_root: PathBuf,
    /// The cgroup the supervisors run in (see [`crate::server::Config::supervisors_cgroup`]).
    pub supervisors_cgroup: String,
}

/// A sandbox the runtime knows, with its supervisor connection once made.
pub(crate) struct Sandbox {
    pub record: RwLock<SandboxRecord>,
    pub supervisor: tokio::sync::OnceCell<Arc<SupervisorClient>>,
    /// Serialises lifecycle operations (run/stop/remove) on this sandbox.
    pub lifecycle: tokio::sync::Mutex<()>,
}

pub(crate) struct Container {
    pub record: RwLock<ContainerRecord>,
    pub lifecycle: tokio::sync::Mutex<()>,
}

/// The built-in runtime. Cheap to share: wrap in `Arc` and hand to the server and the kubelet.
pub struct Runtime {
    pub(crate) config: RuntimeConfig,
    pub(crate) images: Arc<ImageStore>,
    pub(crate) cni: Cni,
    pub(crate) cgroups: AnyCgroupManager,
    pub(crate) sandboxes: RwLock<HashMap<String, Arc<Sandbox>>>,
    pub(crate) containers: RwLock<HashMap<String, Arc<Container>>>,
    /// Name reservations (`<name>_<namespace>_<uid>_<attempt>` for sandboxes, with the container
    /// name in front for containers), as containerd keeps them: a second object with the same
    /// name is refused while the first exists.
    pub(crate) names: parking_lot::Mutex<HashMap<String, String>>,
    pub(crate) events: broadcast::Sender<pb::ContainerEventResponse>,
    /// Itself, for the background tasks it starts (supervisor event watchers).
    pub(crate) this: std::sync::Weak<Runtime>,
    /// The streaming server `Exec`/`Attach`/`PortForward` answer with, on loopback (as
    /// containerd's `stream_server_address = 127.0.0.1`, port 0), started on first use.
    pub(crate) streaming: parking_lot::Mutex<Option<Arc<::streaming::server::Server>>>,
}

impl Runtime {
    /// Opens the runtime state under `config.root`, reconnecting to the supervisors of sandboxes
    /// that were running before a restart.
    pub async fn open(config: RuntimeConfig, images: Arc<ImageStore>) -> anyhow::Result<Arc<Self>> {
        for dir in ["sandboxes", "containers"] {
            std::fs::create_dir_all(config.root.join(dir))?;
        }
        let cni = Cni::new(
            config.cni_conf_dir.clone(),
            config.cni_bin_dirs.clone(),
            config.cni_cache_dir.clone(),
        );
        let cgroups = AnyCgroupManager::detect(&config.cgroup_root)?;
        let (events, _) = broadcast::channel(1024);
        let rt = Arc::new_cyclic(|this| Runtime {
            this: this.clone(),
            streaming: parking_lot::Mutex::new(None),
            config,
            images,
            cni,
            cgroups,
            sandboxes: RwLock::new(HashMap::new()),
            containers: RwLock::new(HashMap::new()),
            names: parking_lot::Mutex::new(HashMap::new()),
            events,
        });
        rt.recover().await;
        Ok(rt)
    }

    fn sandboxes_dir(&self) -> PathBuf {
        self.config.root.join("sandboxes")
    }

    fn containers_dir(&self) -> PathBuf {
        self.config.root.join("containers")
    }

    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes_dir().join(id)
    }

    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// Reads the records back and reconnects to every live supervisor. A sandbox whose
    /// supervisor is gone (the host rebooted, or it was killed) keeps its record; its containers
    /// report what the supervisor last recorded, and StopPodSandbox/RemovePodSandbox clean up.
    async fn recover(&self) {
        let sandboxes: HashMap<String, SandboxRecord> =
            state::load_all(&self.sandboxes_dir(), "sandbox.json");
        let containers: HashMap<String, ContainerRecord> =
            state::load_all(&self.containers_dir(), "container.json");
        for (id, rec) in sandboxes {
            self.names
                .lock()
                .insert(sandbox_name(&rec.config), id.clone());
            let sb = Arc::new(Sandbox {
                record: RwLock::new(rec),
                supervisor: tokio::sync::OnceCell::new(),
                lifecycle: tokio::sync::Mutex::new(()),
            });
            if let Ok(client) = SupervisorClient::connect(&self.supervisor_dir(&id)).await {
                let client = Arc::new(client);
                self.watch_supervisor(&id, client.clone());
                let _ = sb.supervisor.set(client);
            }
            self.sandboxes.write().insert(id, sb);
        }
        for (id, rec) in containers {
            let Some(sandbox) = self.sandboxes.read().get(&rec.sandbox_id).cloned() else {
                tracing::warn!("container {id} belongs to no known sandbox; removing its record");
                let _ = std::fs::remove_dir_all(self.container_dir(&id));
                continue;
            };
            let name = container_name(&rec.config, &sandbox.record.read().config);
            self.names.lock().insert(name, id.clone());
            self.containers.write().insert(
                id,
                Arc::new(Container {
                    record: RwLock::new(rec),
                    lifecycle: tokio::sync::Mutex::new(()),
                }),
            );
        }
        // Directories without a record are the remains of a create that crashed half-way.
        let known_sandboxes: Vec<String> = self.sandboxes.read().keys().cloned().collect();
        let known_containers: Vec<String> = self.containers.read().keys().cloned().collect();
        for (dir, known) in [
            (self.sandboxes_dir(), known_sandboxes),
            (self.containers_dir(), known_containers),
        ] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !known.contains(&name) {
                        tracing::info!("removing half-created {}", e.path().display());
                        // A sandbox that crashed after its supervisor started: stop that first.
                        if let Ok(s) = SupervisorClient::connect(&e.path().join("supervisor")).await
                        {
                            let _ = s.shutdown().await;
                        }
                        let _ = self.images.remove_rootfs(&name);
                        sandbox::cleanup_orphan_dir(&e.path());
                    }
                }
            }
        }
    }

    pub(crate) fn supervisor_dir(&self, sandbox_id: &str) -> PathBuf {
        self.sandbox_dir(sandbox_id).join("supervisor")
    }

    pub(crate) fn sandbox(&self, id: &str) -> Result<Arc<Sandbox>, Status> {
        let map = self.sandboxes.read();
        let full = filter::resolve_id(id, map.keys()).ok_or_else(|| {
            Status::not_found(format!(
                "an error occurred when try to find sandbox {id:?}: not found"
            ))
        })?;
        Ok(map[&full].clone())
    }

    /// The streaming server, started on first use (on the caller's tokio runtime). It holds the
    /// runtime weakly, so dropping the runtime ends it.
    fn streaming_server(&self) -> Result<Arc<::streaming::server::Server>, Status> {
        let mut slot = self.streaming.lock();
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let backend: Arc<dyn ::streaming::Backend> = Arc::new(WeakBackend(self.this.clone()));
        let server = ::streaming::server::Server::start(Default::default(), backend)
            .map(Arc::new)
            .map_err(|e| Status::internal(format!("starting the streaming server: {e}")))?;
        tracing::info!("streaming server listening on http://{}", server.addr());
        *slot = Some(server.clone());
        Ok(server)
    }

    pub(crate) fn container(&self, id: &str) -> Result<Arc<Container>, Status> {
        let map = self.containers.read();
        let full = filter::resolve_id(id, map.keys()).ok_or_else(|| {
            Status::not_found(format!(
                "an error occurred when try to find container {id:?}: not found"
            ))
        })?;
        Ok(map[&full].clone())
    }

    /// The supervisor of a sandbox, reconnecting if the connection was never made.
    pub(crate) async fn supervisor(&self, sb: &Sandbox) -> Result<Arc<SupervisorClient>, Status> {
        let id = sb.record.read().id.clone();
        sb.supervisor
            .get_or_try_init(|| async {
                SupervisorClient::connect(&self.supervisor_dir(&id))
                    .await
                    .map(Arc::new)
                    .map_err(|e| {
                        Status::unavailable(format!(
                            "the supervisor of sandbox {id} is not running: {e}"
                        ))
                    })
            })
            .await
            .cloned()
    }

    /// Forwards a supervisor's container events to GetContainerEvents subscribers.
    pub(crate) fn watch_supervisor(&self, sandbox_id: &str, client: Arc<SupervisorClient>) {
        let rt = self.this.clone();
        let sandbox_id = sandbox_id.to_string();
        tokio::spawn(async move {
            use futures::StreamExt;
            let Ok(mut events) = client.subscribe().await else {
                return;
            };
            while let Some(Ok(ev)) = events.next().await {
                let Some(rt) = rt.upgrade() else { return };
                rt.publish_supervisor_event(&sandbox_id, ev).await;
            }
        });
    }

    /// A supervisor reported something about one of its containers. Created and started events
    /// are published by the calls that cause them; exits happen on their own and come from here.
    async fn publish_supervisor_event(&self, _sandbox_id: &str, ev: crate::supervisor::Event) {
        if ev.kind != crate::supervisor::EventKind::Exited {
            return;
        }
        let Ok(c) = self.container(&ev.id) else {
            return;
        };
        let status = self.container_status_of(&c).await;
        self.publish_container(
            &ev.id,
            pb::ContainerEventType::ContainerStoppedEvent,
            status,
        );
    }

    /// Publishes a container event with the container's status and, except for deletions, its
    /// pod's status (what the kubelet's evented PLEG expects).
    pub(crate) fn publish_container(
        &self,
        id: &str,
        kind: pb::ContainerEventType,
        status: pb::ContainerStatus,
    ) {
        let sandbox = if kind == pb::ContainerEventType::ContainerDeletedEvent {
            None
        } else {
            let sid = self
                .containers
                .read()
                .get(id)
                .map(|c| c.record.read().sandbox_id.clone());
            sid.and_then(|sid| self.sandbox(&sid).ok())
                .map(|sb| self.sandbox_status(&sb))
        };
        self.publish(id, kind, vec![status], sandbox);
    }

    pub(crate) fn publish(
        &self,
        container_id: &str,
        kind: pb::ContainerEventType,
        statuses: Vec<pb::ContainerStatus>,
        sandbox: Option<pb::PodSandboxStatus>,
    ) {
        let _ = self.events.send(pb::ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: kind as i32,
            created_at: state::now_ns(),
            pod_sandbox_status: sandbox,
            containers_statuses: statuses,
        });
    }

    /// Paths for the CRI root, for `ImageFsInfo`-like reporting and tests.
    pub fn root(&self) -> &Path {
        &self.config.root
    }
}

/// The reservation key of a sandbox name (containerd's `makeSandboxName`).
pub(crate) fn sandbox_name(config: &pb::PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// The reservation key of a container name (containerd's `makeContainerName`).
pub(crate) fn container_name(
    config: &pb::ContainerConfig,
    sandbox: &pb::PodSandboxConfig,
) -> String {
    let c = config.metadata.clone().unwrap_or_default();
    let s = sandbox.metadata.clone().unwrap_or_default();
    format!(
        "{}_{}_{}_{}_{}",
        c.name, s.name, s.namespace, s.uid, c.attempt
    )
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::runtime_service_server::RuntimeService for Runtime {
    async fn version(
        &self,
        _: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "capstan".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<pb::RunPodSandboxRequest>,
    ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
        let req = req.into_inner();
        let id = self
            .run_sandbox(req.config.unwrap_or_default(), req.runtime_handler)
            .await?;
        Ok(Response::new(pb::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<pb::StopPodSandboxRequest>,
    ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
        self.stop_sandbox(&req.into_inner().pod_sandbox_id).await?;
        Ok(Response::new(pb::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<pb::RemovePodSandboxRequest>,
    ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
        self.remove_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        Ok(Response::new(pb::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<pb::PodSandboxStatusRequest>,
    ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
        let req = req.into_inner();
        let sb = self.sandbox(&req.pod_sandbox_id)?;
        let status = self.sandbox_status(&sb);
        // The statuses of the pod's containers ride along (the kubelet's evented PLEG reads them).
        let sid = status.id.clone();
        let containers_statuses = self
            .list_container_statuses(|r| r.sandbox_id == sid)
            .await
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let mut info = HashMap::new();
        if req.verbose {
            let rec = sb.record.read().clone();
            info.insert(
                "info".to_string(),
                serde_json::to_string(&rec).unwrap_or_default(),
            );
        }
        Ok(Response::new(pb::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            timestamp: state::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<pb::ListPodSandboxRequest>,
    ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let all: Vec<Arc<Sandbox>> = self.sandboxes.read().values().cloned().collect();
        let mut items = Vec::new();
        for sb in all {
            let s = self.sandbox_status(&sb);
            if !filter::id_matches(&filter.id, &s.id)
                || filter.state.as_ref().is_some_and(|st| st.state != s.state)
                || !filter::labels_match(&filter.label_selector, &s.labels)
            {
                continue;
            }
            items.push(pb::PodSandbox {
                id: s.id,
                metadata: s.metadata,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                runtime_handler: s.runtime_handler,
            });
        }
        items.sort_by_key(|s| s.created_at);
        Ok(Response::new(pb::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let id = self
            .create_container_in(
                &req.pod_sandbox_id,
                req.config.unwrap_or_default(),
                req.sandbox_config.unwrap_or_default(),
            )
            .await?;
        Ok(Response::new(pb::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<pb::StartContainerRequest>,
    ) -> Result<Response<pb::StartContainerResponse>, Status> {
        self.start_container_by_id(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<pb::StopContainerRequest>,
    ) -> Result<Response<pb::StopContainerResponse>, Status> {
        let req = req.into_inner();
        self.stop_container_by_id(&req.container_id, req.timeout)
            .await?;
        Ok(Response::new(pb::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<pb::RemoveContainerRequest>,
    ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
        self.remove_container_by_id(&req.into_inner().container_id)
            .await?;
        Ok(Response::new(pb::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let containers = self
            .list_container_statuses(|r| {
                filter::id_matches(&filter.id, &r.id)
                    && filter::id_matches(&filter.pod_sandbox_id, &r.sandbox_id)
                    && filter::labels_match(&filter.label_selector, &r.config.labels)
            })
            .await;
        let mut out = Vec::new();
        for (sandbox_id, s) in containers {
            if !filter::id_matches(&filter.id, &s.id)
                || !filter::id_matches(&filter.pod_sandbox_id, &sandbox_id)
                || filter.state.as_ref().is_some_and(|st| st.state != s.state)
                || !filter::labels_match(&filter.label_selector, &s.labels)
            {
                continue;
            }
            out.push(pb::Container {
                id: s.id,
                pod_sandbox_id: sandbox_id,
                metadata: s.metadata,
                image: s.image,
                image_ref: s.image_ref,
                state: s.state,
                created_at: s.created_at,
                labels: s.labels,
                annotations: s.annotations,
                image_id: s.image_id,
            });
        }
        out.sort_by_key(|c| c.created_at);
        Ok(Response::new(pb::ListContainersResponse {
            containers: out,
        }))
    }

    async fn container_status(
        &self,
        req: Request<pb::ContainerStatusRequest>,
    ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
        let req = req.into_inner();
        let c = self.container(&req.container_id)?;
        let status = self.container_status_of(&c).await;
        let mut info = HashMap::new();
        if req.verbose {
            let rec = c.record.read().clone();
            info.insert(
                "info".to_string(),
                serde_json::to_string(&rec).unwrap_or_default(),
            );
        }
        Ok(Response::new(pb::ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<pb::UpdateContainerResourcesRequest>,
    ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        self.update_resources(&req.container_id, req.linux).await?;
        Ok(Response::new(pb::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<pb::ReopenContainerLogRequest>,
    ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
        self.reopen_log(&req.into_inner().container_id).await?;
        Ok(Response::new(pb::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<pb::ExecSyncRequest>,
    ) -> Result<Response<pb::ExecSyncResponse>, Status> {
        let req = req.into_inner();
        let resp = self
            .exec_sync_in(&req.container_id, req.cmd, req.timeout)
            .await?;
        Ok(Response::new(resp))
    }

    async fn exec(
        &self,
        req: Request<pb::ExecRequest>,
    ) -> Result<Response<pb::ExecResponse>, Status> {
        let req = req.into_inner();
        self.container(&req.container_id)?;
        let server = self.streaming_server()?;
        Ok(Response::new(server.get_exec(&req).map_err(stream_status)?))
    }

    async fn attach(
        &self,
        req: Request<pb::AttachRequest>,
    ) -> Result<Response<pb::AttachResponse>, Status> {
        let req = req.into_inner();
        self.container(&req.container_id)?;
        let server = self.streaming_server()?;
        Ok(Response::new(
            server.get_attach(&req).map_err(stream_status)?,
        ))
    }

    async fn port_forward(
        &self,
        req: Request<pb::PortForwardRequest>,
    ) -> Result<Response<pb::PortForwardResponse>, Status> {
        let req = req.into_inner();
        self.sandbox(&req.pod_sandbox_id)?;
        let server = self.streaming_server()?;
        Ok(Response::new(
            server.get_port_forward(&req).map_err(stream_status)?,
        ))
    }

    async fn container_stats(
        &self,
        req: Request<pb::ContainerStatsRequest>,
    ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
        let c = self.container(&req.into_inner().container_id)?;
        Ok(Response::new(pb::ContainerStatsResponse {
            stats: Some(self.stats_of(&c)),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<pb::ListContainerStatsRequest>,
    ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let all: Vec<Arc<Container>> = self.containers.read().values().cloned().collect();
        let mut stats = Vec::new();
        for c in all {
            let (id, sandbox_id, labels) = {
                let r = c.record.read();
                (r.id.clone(), r.sandbox_id.clone(), r.config.labels.clone())
            };
            if !filter::id_matches(&filter.id, &id)
                || !filter::id_matches(&filter.pod_sandbox_id, &sandbox_id)
                || !filter::labels_match(&filter.label_selector, &labels)
            {
                continue;
            }
            stats.push(self.stats_of(&c));
        }
        Ok(Response::new(pb::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<pb::PodSandboxStatsRequest>,
    ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
        let sb = self.sandbox(&req.into_inner().pod_sandbox_id)?;
        Ok(Response::new(pb::PodSandboxStatsResponse {
            stats: Some(self.sandbox_stats(&sb)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<pb::ListPodSandboxStatsRequest>,
    ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let all: Vec<Arc<Sandbox>> = self.sandboxes.read().values().cloned().collect();
        let mut stats = Vec::new();
        for sb in all {
            let (id, labels) = {
                let r = sb.record.read();
                (r.id.clone(), r.config.labels.clone())
            };
            if !filter::id_matches(&filter.id, &id)
                || !filter::labels_match(&filter.label_selector, &labels)
            {
                continue;
            }
            stats.push(self.sandbox_stats(&sb));
        }
        Ok(Response::new(pb::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        _: Request<pb::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
        // The pod CIDR reaches CNI through the node's conflist; nothing else is configurable.
        Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let verbose = req.into_inner().verbose;
        let network = match self.cni.status() {
            Ok(()) => pb::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                ..Default::default()
            },
            Err(e) => pb::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: cni plugin not initialized: {e}"),
            },
        };
        let runtime = pb::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            ..Default::default()
        };
        let mut info = HashMap::new();
        if verbose {
            info.insert(
                "config".to_string(),
                serde_json::json!({
                    "root": self.config.root,
                    "cniConfDir": self.config.cni_conf_dir,
                    "cniBinDirs": self.config.cni_bin_dirs,
                    "cgroupDriver": "cgroupfs",
                })
                .to_string(),
            );
        }
        Ok(Response::new(pb::StatusResponse {
            status: Some(pb::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: vec![pb::RuntimeHandler {
                name: String::new(),
                features: Some(pb::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(pb::RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _: Request<pb::CheckpointContainerRequest>,
    ) -> Result<Response<pb::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented(
            "container checkpointing is not supported by capstan",
        ))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<pb::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        let rx = self.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx)
            .filter_map(|ev| async move { ev.ok().map(Ok) });
        use futures::StreamExt;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_metric_descriptors(
        &self,
        _: Request<pb::ListMetricDescriptorsRequest>,
    ) -> Result<Response<pb::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(pb::ListMetricDescriptorsResponse {
            descriptors: Vec::new(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<pb::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<pb::ListPodSandboxMetricsResponse>, Status> {
        Ok(Response::new(pb::ListPodSandboxMetricsResponse {
            pod_metrics: Vec::new(),
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<pb::RuntimeConfigRequest>,
    ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
        Ok(Response::new(pb::RuntimeConfigResponse {
            linux: Some(pb::LinuxRuntimeConfiguration {
                cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }
}

/// The runtime as the streaming server's backend, held weakly (the runtime owns the server).
struct WeakBackend(std::sync::Weak<Runtime>);

impl WeakBackend {
    fn get(&self) -> Result<Arc<Runtime>, ::streaming::StreamError> {
        self.0.upgrade().ok_or_else(|| {
            ::streaming::StreamError::Internal("the runtime is shutting down".into())
        })
    }
}

#[async_trait::async_trait]
impl ::streaming::Backend for WeakBackend {
    async fn exec(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        io: ::streaming::StreamIo,
    ) -> Result<i32, ::streaming::StreamError> {
        ::streaming::Backend::exec(&*self.get()?, container_id, cmd, io).await
    }

    async fn attach(
        &self,
        container_id: &str,
        io: ::streaming::StreamIo,
    ) -> Result<(), ::streaming::StreamError> {
        ::streaming::Backend::attach(&*self.get()?, container_id, io).await
    }

    async fn port_forward(
        &self,
        sandbox_id: &str,
        port: u16,
        stream: Box<dyn ::streaming::Duplex>,
    ) -> Result<(), ::streaming::StreamError> {
        ::streaming::Backend::port_forward(&*self.get()?, sandbox_id, port, stream).await
    }
}

/// A streaming request the server refused, as a gRPC status.
fn stream_status(e: ::streaming::StreamError) -> Status {
    match e {
        ::streaming::StreamError::InvalidArgument(m) => Status::invalid_argument(m),
        ::streaming::StreamError::NotFound(m) => Status::not_found(m),
        e => Status::internal(e.to_string()),
    }
}
