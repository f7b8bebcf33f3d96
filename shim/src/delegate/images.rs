//! ImageService over both runtimes: pulls routed by what the image is, lookups and removals
//! on both sides, listings and filesystem usage merged.

use std::time::Duration;

use cri::v1 as pb;
use cri::v1::image_service_server::ImageService;
use tonic::{Code, Request, Response, Status};

use super::remote::{Remote, caller_timeout};
use super::{Delegating, Owner, logged, merge};
use crate::images::PullAuth;
use crate::images::classify::ImageClass;
use crate::server::list_stream::{RpcStream, chunked};

/// How long deciding where a pull goes may take (a manifest and a config, both small).
const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(30);

impl Delegating {
    /// The runtime an image named in `spec` belongs to when the kubelet says (its
    /// `runtime_handler`), else `None`.
    fn image_owner_by_handler(&self, spec: Option<&pb::ImageSpec>) -> Option<Owner> {
        let h = &spec?.runtime_handler;
        if h.is_empty() {
            None
        } else if self.is_wasm_handler(h) {
            Some(Owner::Local)
        } else {
            Some(Owner::Delegate)
        }
    }

    /// Where PullImage goes: the handler when given; an image already stored here; else the
    /// image's manifest (Wasm → here, anything else or undecidable → the delegate, whose
    /// error then names the problem as it would without wasmcri).
    async fn pull_owner(&self, r: &pb::PullImageRequest) -> Owner {
        if let Some(o) = self.image_owner_by_handler(r.image.as_ref()) {
            return o;
        }
        let name = r.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
        if name.is_empty() || self.rt.has_image(name) {
            return Owner::Local;
        }
        let auth = r
            .auth
            .clone()
            .map(|a| PullAuth {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        let classified =
            tokio::time::timeout(CLASSIFY_TIMEOUT, self.rt.classify_image(name, &auth)).await;
        match classified {
            Ok(Ok(ImageClass::Wasm)) => Owner::Local,
            Ok(Ok(ImageClass::Other)) => Owner::Delegate,
            Ok(Err(e)) => {
                tracing::debug!(image = name, error = %e, "cannot classify image: pulling it with the delegate");
                Owner::Delegate
            }
            Err(_) => {
                tracing::debug!(
                    image = name,
                    "classifying the image timed out: pulling it with the delegate"
                );
                Owner::Delegate
            }
        }
    }

    /// ImageStatus on the delegate.
    async fn remote_image_status(
        &self,
        q: pb::ImageStatusRequest,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let mut c = self.remote.img();
        logged(
            "ImageStatus",
            self.remote.query("ImageStatus", c.image_status(q)).await,
        )
    }
}

#[tonic::async_trait]
impl ImageService for Delegating {
    async fn list_images(
        &self,
        r: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let q = r.into_inner();
        let mut c = self.remote.img();
        let (l, d) = tokio::join!(
            self.local.list_images(Request::new(q.clone())),
            self.remote.list("ListImages", &q, c.list_images(q.clone()))
        );
        let d = logged("ListImages", d)?.into_inner();
        Ok(Response::new(merge::images(l?.into_inner(), d)))
    }
    async fn image_status(
        &self,
        r: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let q = r.into_inner();
        match self.image_owner_by_handler(q.image.as_ref()) {
            Some(Owner::Local) => return self.local.image_status(Request::new(q)).await,
            Some(Owner::Delegate) => return self.remote_image_status(q).await,
            None => {}
        }
        let local = self.local.image_status(Request::new(q.clone())).await?;
        if local.get_ref().image.is_some() {
            return Ok(local);
        }
        self.remote_image_status(q).await
    }
    async fn pull_image(
        &self,
        r: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        match self.pull_owner(r.get_ref()).await {
            Owner::Local => self.local.pull_image(r).await,
            Owner::Delegate => {
                let timeout = caller_timeout(r.metadata());
                let q = Remote::request(r.into_inner(), timeout);
                let mut c = self.remote.img();
                logged(
                    "PullImage",
                    self.remote
                        .call("PullImage", timeout, c.pull_image(q))
                        .await,
                )
            }
        }
    }
    async fn remove_image(
        &self,
        r: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let q = r.into_inner();
        let mut c = self.remote.img();
        let (l, d) = tokio::join!(
            self.local.remove_image(Request::new(q.clone())),
            self.remote.query("RemoveImage", c.remove_image(q.clone()))
        );
        // Removing an image a side does not hold is no error (the CRI asks for idempotence).
        if let Err(e) = l
            && e.code() != Code::NotFound
        {
            return Err(e);
        }
        match d {
            Err(super::DelegateError::Remote { status, .. }) if status.code() == Code::NotFound => {
            }
            other => {
                logged("RemoveImage", other)?;
            }
        }
        Ok(Response::new(pb::RemoveImageResponse {}))
    }
    async fn image_fs_info(
        &self,
        r: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        let q = r.into_inner();
        let mut c = self.remote.img();
        let (l, d) = tokio::join!(
            self.local.image_fs_info(Request::new(q)),
            self.remote.list("ImageFsInfo", &q, c.image_fs_info(q))
        );
        let d = logged("ImageFsInfo", d)?.into_inner();
        Ok(Response::new(merge::image_fs(l?.into_inner(), d)))
    }
    type StreamImagesStream = RpcStream<pb::StreamImagesResponse>;
    async fn stream_images(
        &self,
        r: Request<pb::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let q = pb::ListImagesRequest {
            filter: r.into_inner().filter,
        };
        let all = self.list_images(Request::new(q)).await?.into_inner();
        Ok(Response::new(chunked(all.images, |images| {
            pb::StreamImagesResponse { images }
        })))
    }
}
