//! The CRI ImageService over `hearth-image`: every image is pulled into the
//! content store and turned into one read-only erofs block image.

use hearth_image::{Credentials, Image, ImageError, ImageUser};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use super::status::image_to_status;
use super::Cri;

fn to_cri(i: &Image) -> cri::Image {
    let (uid, username) = match &i.user {
        Some(ImageUser::Uid(u)) => (Some(cri::Int64Value { value: *u as i64 }), String::new()),
        Some(ImageUser::Name(n)) => (None, n.clone()),
        // No USER in the image: root, as the kubelet reads it.
        None => (Some(cri::Int64Value { value: 0 }), String::new()),
    };
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn credentials(auth: Option<cri::AuthConfig>) -> Result<Option<Credentials>, Status> {
    match auth {
        None => Ok(None),
        Some(a) => Credentials::from_auth_config(
            &a.username,
            &a.password,
            &a.auth,
            &a.identity_token,
            &a.registry_token,
        )
        .map_err(image_to_status),
    }
}

fn spec_image(spec: Option<cri::ImageSpec>, field: &str) -> Result<String, Status> {
    match spec {
        Some(s) if !s.image.is_empty() => Ok(s.image),
        _ => Err(Status::invalid_argument(format!(
            "{field}.image is required"
        ))),
    }
}

#[tonic::async_trait]
impl ImageService for Cri {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = self
            .images
            .list_filtered(filter.as_deref())
            .iter()
            .map(to_cri)
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let r = request.into_inner();
        let q = spec_image(r.image, "image")?;
        let image = match self.images.get(&q) {
            Ok(i) => i,
            // CRI: an absent image is a response without an image.
            Err(ImageError::NotFound(_)) => {
                return Ok(Response::new(cri::ImageStatusResponse::default()));
            }
            Err(e) => return Err(image_to_status(e)),
        };
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "layers": image.layers,
                "manifestDigest": image.manifest_digest,
                "manifestMediaType": image.manifest_media_type,
                "erofsImage": image.erofs_path,
                "erofsSize": image.erofs_size,
                "config": image.config,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(to_cri(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let r = request.into_inner();
        let reference = spec_image(r.image, "image")?;
        let auth = credentials(r.auth)?;
        let images = self.images.clone();
        // Progress for the admin service's PullProgress subscribers (a
        // reference that does not parse fails the pull below anyway).
        let progress = crate::admin::pull_key(&reference)
            .ok()
            .map(|key| self.pulls.start(&key));
        // Spawned: a pull the kubelet gives up on still finishes (or cleans
        // up after itself) rather than being cut off half-way.
        let image = tokio::spawn(async move {
            let sink = progress.as_ref().map(|p| p.sink());
            let res = images
                .pull(&reference, auth, sink)
                .await
                .map_err(image_to_status);
            if let Some(p) = progress {
                p.finish(res.as_ref().map(|i| i.id.as_str()));
            }
            res
        })
        .await
        .map_err(|e| Status::internal(format!("pull task failed: {e}")))??;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: image.id,
        }))
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let q = spec_image(request.into_inner().image, "image")?;
        match self.images.remove(&q).await {
            // Idempotent, as CRI asks.
            Ok(_) | Err(ImageError::NotFound(_)) => Ok(Response::new(cri::RemoveImageResponse {})),
            Err(e) => Err(image_to_status(e)),
        }
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let u = self.images.fs_info().await.map_err(image_to_status)?;
        let usage = cri::FilesystemUsage {
            timestamp: u.timestamp_nanos,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: u.mountpoint.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: u.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: u.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: Vec::new(),
        }))
    }
}
