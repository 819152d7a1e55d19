//! The CRI v1 ImageService over the [`ImageStore`], answering as containerd's CRI plugin does:
//! ImageStatus of a missing image is an empty response, not an error; RemoveImage of a missing
//! image succeeds; ListImages with a filter resolves the filter like ImageStatus; PullImage
//! returns the image id. Errors carry a gRPC code a client can branch on (see
//! [`status_of`]) and containerd's wording (`failed to pull and unpack image "…": …`).

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use super::{ImageError, ImageRecord, ImageStore};
use crate::pb;

/// The gRPC status for an image error.
pub fn status_of(e: &ImageError, context: &str) -> Status {
    let code = match e {
        ImageError::InvalidReference(_) => Code::InvalidArgument,
        ImageError::NotFound { .. } => Code::NotFound,
        ImageError::Unreachable { .. } => Code::Unavailable,
        ImageError::Unauthorized { .. } => Code::Unauthenticated,
        ImageError::DigestMismatch { .. } => Code::DataLoss,
        ImageError::BadLayer { .. } => Code::InvalidArgument,
        ImageError::Registry { .. } => Code::Unknown,
        ImageError::Unsupported(_) => Code::FailedPrecondition,
        ImageError::Config(_) => Code::FailedPrecondition,
        ImageError::InvalidImage(_) => Code::InvalidArgument,
        ImageError::AlreadyExists(_) => Code::AlreadyExists,
        ImageError::Io { .. } => Code::Internal,
    };
    if context.is_empty() {
        Status::new(code, e.to_string())
    } else {
        Status::new(code, format!("{context}: {e}"))
    }
}

fn to_pb(r: &ImageRecord) -> pb::Image {
    let (uid, username) = r.user();
    pb::Image {
        id: r.id.clone(),
        repo_tags: r.repo_tags.clone(),
        repo_digests: r.repo_digests.clone(),
        size: r.size,
        uid: uid.map(|value| pb::Int64Value { value }),
        username,
        spec: Some(pb::ImageSpec {
            image: r.id.clone(),
            ..Default::default()
        }),
        pinned: r.pinned,
    }
}

fn image_of(spec: Option<&pb::ImageSpec>) -> &str {
    spec.map(|s| s.image.as_str()).unwrap_or("")
}

impl ImageStore {
    /// ImageStatus's verbose `info` map: `{"info": <JSON>}` with the image config as the image
    /// spec, the chain id and the manifest, as containerd's `imageStatusInfo` reports it.
    fn verbose_info(&self, r: &ImageRecord) -> HashMap<String, String> {
        let config: serde_json::Value = super::store::digest(&r.id)
            .ok()
            .and_then(|d| std::fs::read(self.content.path(&d)).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let info = serde_json::json!({
            "imageSpec": config,
            "chainID": r.chain_ids.last(),
            "manifestDigest": r.manifest_digest,
            "platform": r.platform,
            "layers": r.layers,
        });
        HashMap::from([("info".to_string(), info.to_string())])
    }
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for ImageStore {
    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|i| !i.is_empty());
        let images = match filter {
            Some(image) => self.get(&image).iter().map(to_pb).collect(),
            None => self.list().iter().map(to_pb).collect(),
        };
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let image = image_of(req.image.as_ref());
        if image.is_empty() {
            return Err(Status::invalid_argument("image spec: image must be set"));
        }
        let Some(record) = self.get(image) else {
            return Ok(Response::new(pb::ImageStatusResponse::default()));
        };
        Ok(Response::new(pb::ImageStatusResponse {
            image: Some(to_pb(&record)),
            info: if req.verbose {
                self.verbose_info(&record)
            } else {
                HashMap::new()
            },
        }))
    }

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        let req = request.into_inner();
        let image = image_of(req.image.as_ref()).to_string();
        if image.is_empty() {
            return Err(Status::invalid_argument("image spec: image must be set"));
        }
        let record = self
            .pull(&image, req.auth.as_ref())
            .await
            .map_err(|e| status_of(&e, &format!("failed to pull and unpack image {image:?}")))?;
        Ok(Response::new(pb::PullImageResponse {
            image_ref: record.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let image = image_of(req.image.as_ref()).to_string();
        if image.is_empty() {
            return Err(Status::invalid_argument("image spec: image must be set"));
        }
        let this = self
            .this
            .upgrade()
            .ok_or_else(|| Status::unavailable("the image store is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            this.remove(&image).map(|_| ()).map_err(|e| (image, e))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|(image, e)| status_of(&e, &format!("failed to remove image {image:?}")))?;
        Ok(Response::new(pb::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        let this = self
            .this
            .upgrade()
            .ok_or_else(|| Status::unavailable("the image store is shutting down"))?;
        let info = tokio::task::spawn_blocking(move || this.fs_info())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status_of(&e, "image filesystem info"))?;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(1);
        Ok(Response::new(pb::ImageFsInfoResponse {
            image_filesystems: vec![pb::FilesystemUsage {
                timestamp,
                fs_id: Some(pb::FilesystemIdentifier {
                    mountpoint: info.mountpoint.display().to_string(),
                }),
                used_bytes: Some(pb::UInt64Value {
                    value: info.used_bytes,
                }),
                inodes_used: Some(pb::UInt64Value {
                    value: info.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}

/// The service as a boxed handle, for servers that hold an `Arc<ImageStore>`.
pub fn service(store: Arc<ImageStore>) -> pb::image_service_server::ImageServiceServer<ImageStore> {
    pb::image_service_server::ImageServiceServer::from_arc(store)
}
