//! Images: pull (oci-client), store, snapshots, import, and the CRI ImageService.
//!
//! The shape follows containerd's CRI plugin with its overlayfs snapshotter, reduced to what a
//! node needs:
//!
//! - **Content** (`content.rs`): every manifest, index, config and layer blob, stored by digest
//!   and verified on the way in.
//! - **Images** (`store.rs`): one JSON record per image id (`sha256:<config digest>`, what CRI
//!   reports), written atomically; names (`repo_tags`, `repo_digests`) move between images as
//!   containerd moves image names.
//! - **Snapshots** (`store.rs`): each layer is unpacked once into `snapshots/<n>/fs`, keyed by its
//!   chain id and shared by every image with the same layers below it. `<n>` is a small number,
//!   not a digest, so the overlay `lowerdir=` option of a deep image stays within one page.
//!   A container's root filesystem is an active snapshot (`upper` + `work`) over the image's
//!   chain ([`Rootfs`]).
//! - **Garbage collection**: computed, never counted. A snapshot or blob is kept while an image
//!   record, an active snapshot or a live lease (a pull or an import in progress, possibly in
//!   another process) names it; everything else goes when an image or a rootfs is removed.
//! - **Pull** (`pull.rs`): hosts from containerd's `hosts.toml`, manifest lists and platform
//!   selection, auth from the CRI `AuthConfig`, de-duplicated concurrent pulls.
//! - **Import** (`import.rs`): OCI layout and docker-archive tarballs, for air-gapped nodes.
//! - **Service** (`service.rs`): the CRI ImageService over all of it.
//!
//! Several processes may open one store: `capstan image import` runs while `capstan cri` serves.
//! Every metadata change takes `images/lock` (flock) and bumps `images/generation`; a store
//! reloads its records and snapshot index when the generation on disk differs from the one it
//! last saw, so a running runtime sees imported images on its next list/get. Work in progress
//! is protected by lease files held under flock, and crash leftovers (half-unpacked snapshots,
//! ingest files, temporary records) are removed only when no live process owns them.

mod import;
pub mod manifest;
mod pull;
mod service;
mod store;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use crate::content::{ContentError, ContentStore};
use crate::image_config::ImageConfig;
use crate::reference::Reference;

pub use manifest::host_platform;
pub use pull::bench_pull;
pub use service::{service, status_of};

use store::State;

/// What can go wrong with images. Messages name the reference, host, digest or path involved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    InvalidReference(String),
    #[error("{reference}: not found{detail}")]
    NotFound { reference: String, detail: String },
    #[error("failed to do request to {host}: registry unreachable: {message}")]
    Unreachable { host: String, message: String },
    #[error(
        "pull access denied for {reference} on {host}, repository does not exist or may require \
         authorization: {message}"
    )]
    Unauthorized {
        reference: String,
        host: String,
        message: String,
    },
    #[error("blob {digest} failed verification: {message}")]
    DigestMismatch { digest: String, message: String },
    #[error("layer {digest} cannot be applied: {message}")]
    BadLayer { digest: String, message: String },
    #[error("registry {host} answered with an error: {message}")]
    Registry { host: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("registry configuration: {0}")]
    Config(String),
    #[error("{0}")]
    InvalidImage(String),
    #[error("a root filesystem for container {0} already exists")]
    AlreadyExists(String),
    #[error("{context}: {message}")]
    Io { context: String, message: String },
}

impl ImageError {
    pub(crate) fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        ImageError::Io {
            context: context.to_string(),
            message: e.to_string(),
        }
    }
}

impl From<ContentError> for ImageError {
    fn from(e: ContentError) -> Self {
        match e {
            ContentError::DigestMismatch { ref expected, .. } => ImageError::DigestMismatch {
                digest: expected.clone(),
                message: e.to_string(),
            },
            ContentError::SizeMismatch { ref digest, .. } => ImageError::DigestMismatch {
                digest: digest.clone(),
                message: e.to_string(),
            },
            ContentError::BadDigest(ref d) => ImageError::InvalidImage(format!(
                "invalid digest {d:?}: expected sha256:<64 hex digits>"
            )),
            ContentError::NotFound(ref d) => ImageError::Io {
                context: format!("content {d}"),
                message: "blob not found in the content store".to_string(),
            },
            ContentError::Io { ref path, .. } => ImageError::io(path.display(), &e),
        }
    }
}

/// One layer of an image as its manifest names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Digest of the blob (compressed, as distributed).
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar (`rootfs.diff_ids` in the config).
    pub diff_id: String,
}

/// An image as the store keeps it (and persists it, one JSON file per id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<config digest>`, as containerd reports image ids.
    pub id: String,
    /// `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `docker.io/library/busybox@sha256:<manifest or index digest>`.
    pub repo_digests: Vec<String>,
    /// Bytes of the image's blobs (manifest, config, compressed layers), as containerd counts.
    pub size: u64,
    pub config: ImageConfig,
    pub pinned: bool,
    /// The platform manifest the layers came from.
    pub manifest_digest: String,
    pub layers: Vec<LayerInfo>,
    /// Chain id of each layer, bottom first: the snapshots this image stands on.
    pub chain_ids: Vec<String>,
    /// Every blob this image keeps alive in the content store.
    pub blobs: BTreeSet<String>,
    /// `linux/amd64`.
    pub platform: String,
    #[serde(default)]
    pub created: Option<String>,
}

impl ImageRecord {
    /// The user the image runs as: a numeric uid, or a user name (CRI's `Image.uid` /
    /// `Image.username`), as containerd derives them from `config.User`.
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self.config.user.as_deref().unwrap_or("");
        let name = user.split(':').next().unwrap_or("");
        match name.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, name.to_string()),
        }
    }
}

/// The filesystem images live on, for ImageFsInfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsInfo {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// A container's root filesystem: the image's layers read-only below a writable upper dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rootfs {
    /// Layer directories, top-most first (overlayfs `lowerdir` order).
    pub lowerdirs: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Overlayfs reads its mount options from one page.
pub const MAX_MOUNT_OPTIONS: usize = 4096;

impl Rootfs {
    /// The overlayfs mount options (`lowerdir=…,upperdir=…,workdir=…`).
    pub fn mount_options(&self) -> String {
        let lower: Vec<String> = self
            .lowerdirs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }

    /// Mounts the overlay at `target` (which must exist).
    pub fn mount(&self, target: &Path) -> Result<(), ImageError> {
        let opts = self.mount_options();
        if opts.len() >= MAX_MOUNT_OPTIONS {
            return Err(ImageError::Unsupported(format!(
                "overlay mount options for {} are {} bytes, over the {MAX_MOUNT_OPTIONS}-byte page \
                 limit ({} layers)",
                target.display(),
                opts.len(),
                self.lowerdirs.len()
            )));
        }
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| ImageError::io(format!("mounting overlay at {}", target.display()), e))
    }

    /// Unmounts what is mounted at `target`; not mounted is fine.
    pub fn unmount(target: &Path) -> Result<(), ImageError> {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(ImageError::io(
                format!("unmounting {}", target.display()),
                e,
            )),
        }
    }
}

type PullFuture =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<ImageRecord, ImageError>>>;

/// The node's images: content, records, snapshots; shared by the CRI services.
pub struct ImageStore {
    /// `<root>/images`.
    dir: PathBuf,
    content: ContentStore,
    registry_config_dir: Option<PathBuf>,
    state: parking_lot::RwLock<State>,
    /// Pulls in flight, by reference and credentials: a second caller awaits the first.
    inflight: parking_lot::Mutex<HashMap<String, PullFuture>>,
    /// One unpack per chain id at a time in this process.
    unpacking: parking_lot::Mutex<HashMap<String, Arc<parking_lot::Mutex<()>>>>,
    seq: std::sync::atomic::AtomicU64,
    this: Weak<ImageStore>,
}

impl ImageStore {
    /// Opens (creating if needed) the image store under `root/images`, reading back images and
    /// snapshots and removing what a crashed process left half-written. `registry_config_dir` is
    /// containerd's `config_path` (`<dir>/<registry>/hosts.toml`).
    pub fn open(
        root: &Path,
        registry_config_dir: Option<PathBuf>,
    ) -> Result<Arc<ImageStore>, ImageError> {
        let dir = root.join("images");
        for d in ["", "meta", "snapshots", "leases", "tmp"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io(p.display(), e))?;
        }
        let content = ContentStore::open(&dir.join("content"))?;
        let store = Arc::new_cyclic(|this| ImageStore {
            dir,
            content,
            registry_config_dir,
            state: parking_lot::RwLock::new(State::default()),
            inflight: parking_lot::Mutex::new(HashMap::new()),
            unpacking: parking_lot::Mutex::new(HashMap::new()),
            seq: std::sync::atomic::AtomicU64::new(0),
            this: this.clone(),
        });
        store.recover()?;
        Ok(store)
    }

    /// The directory everything lives under (`<root>/images`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every image, sorted by id.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.refresh();
        self.state.read().images.values().cloned().collect()
    }

    /// Finds an image as containerd's CRI resolves ImageStatus arguments: a full image id, a
    /// reference (tag or digest; normalised), or a unique prefix of an id (with or without
    /// `sha256:`).
    pub fn get(&self, image: &str) -> Option<ImageRecord> {
        self.refresh();
        let state = self.state.read();
        store::resolve(&state, image).cloned()
    }

    /// Removes an image with all its names, as containerd's RemoveImage does. Containers
    /// prepared from it keep their layers. Returns whether an image was found.
    pub fn remove(&self, image: &str) -> Result<bool, ImageError> {
        self.refresh();
        let id = match self.get(image) {
            Some(r) => r.id,
            None => return Ok(false),
        };
        self.remove_record(&id)?;
        Ok(true)
    }

    /// Bytes and inodes used under the image directory.
    pub fn fs_info(&self) -> Result<FsInfo, ImageError> {
        let (used_bytes, inodes_used) = store::disk_usage(&self.dir)?;
        Ok(FsInfo {
            mountpoint: self.dir.clone(),
            used_bytes,
            inodes_used,
        })
    }

    /// Creates the root filesystem of `container_id` over the layers of `image` (an id or any
    /// name [`ImageStore::get`] resolves). The layers stay while the rootfs exists, even if the
    /// image is removed.
    pub fn prepare_rootfs(&self, container_id: &str, image: &str) -> Result<Rootfs, ImageError> {
        let record = self.get(image).ok_or_else(|| ImageError::NotFound {
            reference: image.to_string(),
            detail: String::new(),
        })?;
        self.create_active(container_id, &record)
    }

    /// The root filesystem of a container, if one was prepared.
    pub fn rootfs(&self, container_id: &str) -> Option<Rootfs> {
        self.refresh();
        let state = self.state.read();
        state
            .active
            .get(container_id)
            .map(|a| self.rootfs_of(a.number, &a.lowers))
    }

    /// Releases a container's root filesystem (unmount it first). Absent is fine.
    pub fn remove_rootfs(&self, container_id: &str) -> Result<(), ImageError> {
        self.remove_active(container_id)
    }

    /// Imports an OCI image layout or docker-archive tarball; returns the names imported (or
    /// the image ids of unnamed images).
    pub fn import(&self, file: &Path) -> Result<Vec<String>, ImageError> {
        self.import_file(file)
    }

    /// Pulls `image` (normalised: `busybox` is `docker.io/library/busybox:latest`) with the
    /// optional CRI credentials. Concurrent pulls of one reference share one download.
    pub async fn pull(
        &self,
        image: &str,
        auth: Option<&crate::pb::AuthConfig>,
    ) -> Result<ImageRecord, ImageError> {
        let reference =
            Reference::parse(image).map_err(|e| ImageError::InvalidReference(e.to_string()))?;
        let auth = auth.cloned();
        let key = format!("{reference}\0{}", pull::auth_fingerprint(auth.as_ref()));
        let fut = {
            let mut inflight = self.inflight.lock();
            match inflight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let this = self
                        .this
                        .upgrade()
                        .expect("an ImageStore is always held in an Arc");
                    let key2 = key.clone();
                    let task = tokio::spawn(async move {
                        let result = this.pull_uncached(reference, auth).await;
                        this.inflight.lock().remove(&key2);
                        result
                    });
                    let fut: futures::future::BoxFuture<'static, _> = Box::pin(async move {
                        task.await
                            .unwrap_or_else(|e| Err(ImageError::io("pull task", e)))
                    });
                    let shared = futures::FutureExt::shared(fut);
                    inflight.insert(key, shared.clone());
                    shared
                }
            }
        };
        fut.await
    }
}

/// `capstan image import`: loads OCI-layout or docker-archive tarballs into the image store under
/// `root`, returning the names imported. Safe while `capstan cri` serves the same root: the
/// running store sees the images on its next list or get (see the module header).
pub fn import_files(root: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let store = ImageStore::open(root, None)?;
    let mut names = Vec::new();
    for f in files {
        let imported = store.import(f).map_err(|e| {
            let text = e.to_string();
            if text.starts_with(&f.display().to_string()) {
                anyhow::anyhow!("importing {text}")
            } else {
                anyhow::anyhow!("importing {}: {text}", f.display())
            }
        })?;
        names.extend(imported);
    }
    Ok(names)
}
