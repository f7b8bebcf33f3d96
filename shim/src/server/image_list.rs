//! ListImages.

use std::sync::Arc;

use cri::v1 as pb;

use crate::images::{Image, ImageFilter};
use crate::runtime::{Result, Runtime};

/// The CRI view of an image.
pub fn to_pb(img: &Image) -> pb::Image {
    pb::Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
        uid: None,
        username: img.config.user.clone(),
        spec: Some(pb::ImageSpec {
            image: img.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// ListImages, optionally filtered by a reference.
pub async fn list(rt: &Arc<Runtime>, r: pb::ListImagesRequest) -> Result<pb::ListImagesResponse> {
    let filter = r
        .filter
        .and_then(|f| f.image)
        .map(|i| i.image)
        .unwrap_or_default();
    let images = rt.images.list(&ImageFilter {
        reference: (!filter.is_empty()).then_some(filter),
    })?;
    Ok(pb::ListImagesResponse {
        images: images.iter().map(to_pb).collect(),
    })
}
