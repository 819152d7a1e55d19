//! `capstan cri`: the built-in runtime's RuntimeService and ImageService on a unix socket, for
//! crictl, critest, our conformance suite and kubelets that talk CRI over gRPC.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::image::ImageStore;
use crate::pb::image_service_server::ImageServiceServer;
use crate::pb::runtime_service_server::RuntimeServiceServer;
use crate::runtime::{Runtime, RuntimeConfig};

/// What `capstan cri` is given on its command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub root: PathBuf,
    pub socket: PathBuf,
    pub registry_config_dir: Option<PathBuf>,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    pub cni_cache_dir: PathBuf,
    /// The binary started as `<exe> supervise …` for each pod.
    pub supervisor_exe: PathBuf,
    /// The cgroup the pods' supervisors run in, outside the pods' limits:
    /// [`SUPERVISORS_CGROUP`](crate::cgroups::SUPERVISORS_CGROUP) for `capstan cri`; a kubelet
    /// puts it under its own cgroup root, so kubelets sharing a host never share it.
    pub supervisors_cgroup: String,
}

/// The largest CRI message accepted or sent (the kubelet's own limit).
const MAX_MESSAGE: usize = 16 << 20;

/// Serves CRI on `config.socket` until `shutdown` resolves. Running containers are left running:
/// their supervisors outlive this process, and the next `capstan cri` on the same root adopts them.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (runtime, images) = open(&config).await?;
    let listener = bind(&config.socket)?;
    tracing::info!("capstan cri serving on {}", config.socket.display());
    serve_on(runtime, images, listener, &config.socket, shutdown).await
}

/// Opens the image store and the runtime under `config.root` (reconnecting to running pods), for
/// `serve` and for a kubelet that calls the runtime in-process.
pub async fn open(config: &Config) -> anyhow::Result<(Arc<Runtime>, Arc<ImageStore>)> {
    std::fs::create_dir_all(&config.root)
        .with_context(|| format!("creating the runtime root {}", config.root.display()))?;
    let images = ImageStore::open(&config.root, config.registry_config_dir.clone())
        .with_context(|| format!("opening the image store under {}", config.root.display()))?;
    let runtime = Runtime::open(
        RuntimeConfig {
            root: config.root.clone(),
            supervisor_exe: config.supervisor_exe.clone(),
            cni_conf_dir: config.cni_conf_dir.clone(),
            cni_bin_dirs: config.cni_bin_dirs.clone(),
            cni_cache_dir: config.cni_cache_dir.clone(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            supervisors_cgroup: config.supervisors_cgroup.clone(),
        },
        images.clone(),
    )
    .await?;
    Ok((runtime, images))
}

/// Serves an already opened runtime and image store on `listener` (bound at `socket`, which is
/// removed afterwards) until `shutdown` resolves. The kubelet uses this to offer the runtime it
/// calls in-process to tools such as crictl.
pub async fn serve_on(
    runtime: Arc<Runtime>,
    images: Arc<ImageStore>,
    listener: tokio::net::UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(
            RuntimeServiceServer::from_arc(runtime)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ImageServiceServer::from_arc(images)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving CRI")?;
    let _ = std::fs::remove_file(socket);
    Ok(())
}

/// Binds the socket, replacing a stale one but refusing to take over from a live server.
pub fn bind(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            anyhow::bail!("another runtime is already serving on {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    tokio::net::UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))
}
