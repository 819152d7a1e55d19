//! The kubelet's view of a container runtime: upstream's `internalapi.RuntimeService` and
//! `ImageManagerService` (the CRI client the kubelet's `kuberuntime` package drives), with two
//! backends behind one cheap-to-clone [`Runtime`]:
//!
//! - **built-in**: Capstan's own runtime in this process. The calls go straight to the
//!   tonic-generated service traits that `cri::runtime::Runtime` and `cri::image::ImageStore`
//!   implement, with the request wrapped in a `tonic::Request` — no gRPC hop, no serialisation.
//!   [`Runtime::start_builtin`] opens it and also serves it on its CRI socket for crictl & co.
//! - **remote**: any CRI runtime on a unix socket (`--container-runtime-endpoint
//!   unix:///run/containerd/containerd.sock`), through tonic clients on a lazily connected channel.
//!
//! Every method returns CRI's own message types and `tonic::Status` errors on both backends, so the
//! kubelet branches on status codes (NotFound on a vanished container, Unimplemented for container
//! events on containerd 1.6) the same way whichever runtime answers. As upstream, each call has a
//! deadline (the runtime request timeout, 2 minutes by default) except image pulls and the event
//! stream; ExecSync gets its own timeout plus slack.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cri::pb;
use cri::pb::image_service_client::ImageServiceClient;
use cri::pb::image_service_server::ImageService;
use cri::pb::runtime_service_client::RuntimeServiceClient;
use cri::pb::runtime_service_server::RuntimeService;
use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

/// The default deadline of one CRI call (upstream's `--runtime-request-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest CRI message accepted (upstream's kubelet allows 16 MiB).
const MAX_MESSAGE: usize = 16 << 20;

/// The stream of container lifecycle events (CRI `GetContainerEvents`).
pub type ContainerEventStream =
    Pin<Box<dyn Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

/// Failures to set up a runtime backend (the calls themselves fail with `tonic::Status`).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container runtime endpoint {endpoint:?} is not a unix socket (unix:///path)")]
    Endpoint { endpoint: String },
    #[error("opening the built-in runtime under {root}")]
    Open {
        root: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("serving the built-in runtime on {socket}")]
    Serve {
        socket: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Which backend a [`Runtime`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Builtin,
    Remote,
}

#[derive(Clone)]
enum Inner {
    Builtin {
        runtime: Arc<cri::runtime::Runtime>,
        images: Arc<cri::image::ImageStore>,
    },
    Remote(Arc<RemoteClients>),
}

/// The remote backend's clients (cloned per call: a clone shares the channel).
struct RemoteClients {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// A CRI runtime as the kubelet uses it. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Runtime {
    inner: Inner,
    timeout: Duration,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("backend", &self.backend())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The built-in runtime's CRI socket server, started by [`Runtime::start_builtin`]. Dropping it
/// stops serving (running containers are unaffected: their supervisors keep them).
pub struct BuiltinServer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    socket: PathBuf,
}

impl BuiltinServer {
    /// The socket the runtime is served on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops serving and waits until the socket is gone.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BuiltinServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Calls one method of a CRI service on either backend, with the call's deadline: `$field` names
/// both the built-in service and the remote client (`runtime`, `images`). Every call is counted
/// and timed in `kubelet_runtime_operations_*` (upstream's instrumented runtime service).
macro_rules! cri_call {
    ($self:ident, $field:ident: $service:ident, $method:ident, $req:expr, $deadline:expr) => {{
        let req = $req;
        let fut = async {
            match &$self.inner {
                Inner::Builtin { $field, .. } => $service::$method(&**$field, Request::new(req))
                    .await
                    .map(|r| r.into_inner()),
                Inner::Remote(r) => r
                    .$field
                    .clone()
                    .$method(Request::new(req))
                    .await
                    .map(|r| r.into_inner()),
            }
        };
        let started = std::time::Instant::now();
        let res = with_deadline(stringify!($method), $deadline, fut).await;
        crate::metrics::metrics().record_operation(
            crate::metrics::operation_type(stringify!($method)),
            started.elapsed(),
            res.is_err(),
        );
        res
    }};
}

/// Calls one RuntimeService method on either backend, with the call's deadline.
macro_rules! rt_call {
    ($self:ident, $method:ident, $req:expr) => {
        rt_call!($self, $method, $req, Some($self.timeout))
    };
    ($self:ident, $method:ident, $req:expr, $deadline:expr) => {
        cri_call!($self, runtime: RuntimeService, $method, $req, $deadline)
    };
}

/// Calls one ImageService method on either backend, with the call's deadline.
macro_rules! img_call {
    ($self:ident, $method:ident, $req:expr, $deadline:expr) => {
        cri_call!($self, images: ImageService, $method, $req, $deadline)
    };
}

async fn with_deadline<T>(
    what: &str,
    deadline: Option<Duration>,
    fut: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    match deadline {
        None => fut.await,
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "CRI {what} did not answer within {d:?}"
            ))),
        },
    }
}

impl Runtime {
    /// The built-in runtime, already opened (see [`Runtime::start_builtin`]).
    pub fn builtin(
        runtime: Arc<cri::runtime::Runtime>,
        images: Arc<cri::image::ImageStore>,
    ) -> Self {
        Runtime {
            inner: Inner::Builtin { runtime, images },
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Opens the built-in runtime under `config.root` in this process (adopting pods that are
    /// still running) and serves it on `config.socket` as well, until the returned server is
    /// shut down or dropped.
    pub async fn start_builtin(
        config: cri::server::Config,
    ) -> Result<(Runtime, BuiltinServer), RuntimeError> {
        let (runtime, images) =
            cri::server::open(&config)
                .await
                .map_err(|e| RuntimeError::Open {
                    root: config.root.clone(),
                    source: e.into(),
                })?;
        let listener = cri::server::bind(&config.socket).map_err(|e| RuntimeError::Serve {
            socket: config.socket.clone(),
            source: e.into(),
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let socket = config.socket.clone();
        let task = tokio::spawn({
            let (runtime, images, socket) = (runtime.clone(), images.clone(), socket.clone());
            async move {
                let shutdown = async {
                    let _ = rx.await;
                };
                if let Err(e) =
                    cri::server::serve_on(runtime, images, listener, &socket, shutdown).await
                {
                    tracing::error!("built-in runtime's CRI socket {}: {e:#}", socket.display());
                }
            }
        });
        tracing::info!(
            "built-in runtime in-process, also served on {}",
            socket.display()
        );
        Ok((
            Runtime::builtin(runtime, images),
            BuiltinServer {
                shutdown: Some(tx),
                task: Some(task),
                socket,
            },
        ))
    }

    /// A remote CRI runtime at `endpoint` (`unix:///path/to.sock`, or a bare absolute path).
    /// Connects lazily, and again after the runtime restarts; nothing is sent until the first call.
    pub fn connect(endpoint: &str) -> Result<Runtime, RuntimeError> {
        let path = endpoint
            .strip_prefix("unix://")
            .or_else(|| endpoint.starts_with('/').then_some(endpoint))
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| RuntimeError::Endpoint {
                endpoint: endpoint.to_string(),
            })?;
        let socket = PathBuf::from(path);
        // The URI is a placeholder: the connector below always dials the socket.
        let channel = Endpoint::from_static("http://[::]:50051")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }));
        Ok(Runtime {
            inner: Inner::Remote(Arc::new(RemoteClients {
                runtime: RuntimeServiceClient::new(channel.clone())
                    .max_decoding_message_size(MAX_MESSAGE),
                images: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            })),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// The same runtime with another per-call deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Builtin { .. } => Backend::Builtin,
            Inner::Remote(_) => Backend::Remote,
        }
    }

    // --- RuntimeService ------------------------------------------------------------------------

    pub async fn version(&self) -> Result<pb::VersionResponse, Status> {
        rt_call!(
            self,
            version,
            pb::VersionRequest {
                version: "v1".into()
            }
        )
    }

    pub async fn status(&self, verbose: bool) -> Result<pb::StatusResponse, Status> {
        rt_call!(self, status, pb::StatusRequest { verbose })
    }

    /// Runs a sandbox; returns its id.
    pub async fn run_pod_sandbox(
        &self,
        config: pb::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, Status> {
        // Sandbox creation includes CNI; upstream doubles the deadline for it.
        rt_call!(
            self,
            run_pod_sandbox,
            pb::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: runtime_handler.to_string(),
            },
            Some(self.timeout * 2)
        )
        .map(|r| r.pod_sandbox_id)
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        rt_call!(
            self,
            stop_pod_sandbox,
            pb::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string()
            }
        )
        .map(|_| ())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        rt_call!(
            self,
            remove_pod_sandbox,
            pb::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string()
            }
        )
        .map(|_| ())
    }

    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<pb::PodSandboxStatusResponse, Status> {
        rt_call!(
            self,
            pod_sandbox_status,
            pb::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose,
            }
        )
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<pb::PodSandboxFilter>,
    ) -> Result<Vec<pb::PodSandbox>, Status> {
        rt_call!(self, list_pod_sandbox, pb::ListPodSandboxRequest { filter }).map(|r| r.items)
    }

    /// Creates a container in a sandbox; returns its id.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: pb::ContainerConfig,
        sandbox_config: pb::PodSandboxConfig,
    ) -> Result<String, Status> {
        rt_call!(
            self,
            create_container,
            pb::CreateContainerRequest {
                pod_sandbox_id: pod_sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }
        )
        .map(|r| r.container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        rt_call!(
            self,
            start_container,
            pb::StartContainerRequest {
                container_id: id.to_string()
            }
        )
        .map(|_| ())
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout_secs` (the grace period).
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        // The call itself may take the whole grace period.
        let deadline = self.timeout + Duration::from_secs(timeout_secs.max(0) as u64);
        rt_call!(
            self,
            stop_container,
            pb::StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_secs,
            },
            Some(deadline)
        )
        .map(|_| ())
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        rt_call!(
            self,
            remove_container,
            pb::RemoveContainerRequest {
                container_id: id.to_string()
            }
        )
        .map(|_| ())
    }

    pub async fn list_containers(
        &self,
        filter: Option<pb::ContainerFilter>,
    ) -> Result<Vec<pb::Container>, Status> {
        rt_call!(self, list_containers, pb::ListContainersRequest { filter }).map(|r| r.containers)
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<pb::ContainerStatusResponse, Status> {
        rt_call!(
            self,
            container_status,
            pb::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose,
            }
        )
    }

    /// Runs `cmd` in the container and waits for it, at most `timeout` (zero: no limit, as CRI
    /// says). Upstream's probes and hooks use this.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<pb::ExecSyncResponse, Status> {
        let deadline = if timeout.is_zero() {
            None
        } else {
            // Slack for the runtime to report the timeout itself.
            Some(timeout + Duration::from_secs(2))
        };
        rt_call!(
            self,
            exec_sync,
            pb::ExecSyncRequest {
                container_id: id.to_string(),
                cmd,
                timeout: timeout.as_secs().max(u64::from(!timeout.is_zero())) as i64,
            },
            deadline
        )
    }

    /// Asks the runtime for a streaming URL to exec in the container (CRI `Exec`); the kubelet
    /// server proxies the client's upgraded connection to it.
    pub async fn exec(&self, req: pb::ExecRequest) -> Result<pb::ExecResponse, Status> {
        rt_call!(self, exec, req)
    }

    /// A streaming URL to attach to the container's stdio (CRI `Attach`).
    pub async fn attach(&self, req: pb::AttachRequest) -> Result<pb::AttachResponse, Status> {
        rt_call!(self, attach, req)
    }

    /// A streaming URL to forward ports into the sandbox (CRI `PortForward`).
    pub async fn port_forward(
        &self,
        req: pb::PortForwardRequest,
    ) -> Result<pb::PortForwardResponse, Status> {
        rt_call!(self, port_forward, req)
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        rt_call!(
            self,
            reopen_container_log,
            pb::ReopenContainerLogRequest {
                container_id: id.to_string()
            }
        )
        .map(|_| ())
    }

    pub async fn container_stats(&self, id: &str) -> Result<Option<pb::ContainerStats>, Status> {
        rt_call!(
            self,
            container_stats,
            pb::ContainerStatsRequest {
                container_id: id.to_string()
            }
        )
        .map(|r| r.stats)
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<pb::ContainerStatsFilter>,
    ) -> Result<Vec<pb::ContainerStats>, Status> {
        rt_call!(
            self,
            list_container_stats,
            pb::ListContainerStatsRequest { filter }
        )
        .map(|r| r.stats)
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: pb::LinuxContainerResources,
    ) -> Result<(), Status> {
        rt_call!(
            self,
            update_container_resources,
            pb::UpdateContainerResourcesRequest {
                container_id: id.to_string(),
                linux: Some(linux),
                ..Default::default()
            }
        )
        .map(|_| ())
    }

    /// The runtime's container event stream, or `None` when the runtime does not offer one
    /// (Unimplemented, as containerd 1.6 answers): the PLEG then relists every second.
    pub async fn get_container_events(&self) -> Result<Option<ContainerEventStream>, Status> {
        let res: Result<ContainerEventStream, Status> = match &self.inner {
            Inner::Builtin { runtime, .. } => RuntimeService::get_container_events(
                &**runtime,
                Request::new(pb::GetEventsRequest {}),
            )
            .await
            .map(|r| -> ContainerEventStream { Box::pin(r.into_inner()) }),
            Inner::Remote(r) => {
                match r
                    .runtime
                    .clone()
                    .get_container_events(Request::new(pb::GetEventsRequest {}))
                    .await
                {
                    Ok(r) => {
                        let mut stream = r.into_inner();
                        // containerd 1.6 accepts the call and fails the stream's first message.
                        match stream.message().await {
                            Ok(Some(first)) => Ok(Box::pin(
                                futures::stream::once(async move { Ok(first) }).chain(stream),
                            )),
                            Ok(None) => Ok(Box::pin(futures::stream::empty())),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match res {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.code() == tonic::Code::Unimplemented => Ok(None),
            Err(e) => Err(e),
        }
    }

    // --- ImageService --------------------------------------------------------------------------

    /// Pulls an image; returns its reference (image id or digest) as the runtime reports it.
    /// No deadline: large pulls take as long as they take (upstream's pull deadline is progress-
    /// based, which CRI cannot report).
    pub async fn pull_image(
        &self,
        image: pb::ImageSpec,
        auth: Option<pb::AuthConfig>,
        sandbox_config: Option<pb::PodSandboxConfig>,
    ) -> Result<String, Status> {
        img_call!(
            self,
            pull_image,
            pb::PullImageRequest {
                image: Some(image),
                auth,
                sandbox_config,
            },
            None
        )
        .map(|r| r.image_ref)
    }

    /// The image's status; `None` when the runtime does not have it.
    pub async fn image_status(
        &self,
        image: pb::ImageSpec,
        verbose: bool,
    ) -> Result<Option<pb::Image>, Status> {
        img_call!(
            self,
            image_status,
            pb::ImageStatusRequest {
                image: Some(image),
                verbose,
            },
            Some(self.timeout)
        )
        .map(|r| r.image)
    }

    pub async fn list_images(
        &self,
        filter: Option<pb::ImageFilter>,
    ) -> Result<Vec<pb::Image>, Status> {
        img_call!(
            self,
            list_images,
            pb::ListImagesRequest { filter },
            Some(self.timeout)
        )
        .map(|r| r.images)
    }

    pub async fn remove_image(&self, image: pb::ImageSpec) -> Result<(), Status> {
        img_call!(
            self,
            remove_image,
            pb::RemoveImageRequest { image: Some(image) },
            Some(self.timeout)
        )
        .map(|_| ())
    }

    pub async fn image_fs_info(&self) -> Result<pb::ImageFsInfoResponse, Status> {
        img_call!(
            self,
            image_fs_info,
            pb::ImageFsInfoRequest {},
            Some(self.timeout)
        )
    }
}

/// An image spec for a plain image reference.
pub fn image_spec(image: &str) -> pb::ImageSpec {
    pb::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_unix_sockets() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(Runtime::connect("unix:///run/containerd/containerd.sock").is_ok());
            assert!(Runtime::connect("/run/containerd/containerd.sock").is_ok());
            assert!(matches!(
                Runtime::connect("tcp://127.0.0.1:1234"),
                Err(RuntimeError::Endpoint { .. })
            ));
            assert!(Runtime::connect("unix://relative.sock").is_err());
        });
    }

    #[tokio::test]
    async fn remote_calls_to_a_missing_socket_fail_with_a_status() {
        let rt = Runtime::connect("unix:///nonexistent/capstan-test.sock")
            .unwrap()
            .with_timeout(Duration::from_secs(5));
        let err = rt.version().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
}
