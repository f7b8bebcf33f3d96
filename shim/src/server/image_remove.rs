//! RemoveImage.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime, RuntimeError};

/// RemoveImage by ID, tag or digest; removing an absent image succeeds.
pub async fn remove(
    rt: &Arc<Runtime>,
    r: pb::RemoveImageRequest,
) -> Result<pb::RemoveImageResponse> {
    let name = r.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(RuntimeError::InvalidArgument("image is empty".into()));
    }
    match rt.remove_image(&name).await {
        Ok(()) | Err(RuntimeError::Image(crate::images::ImageError::NotFound(_))) => {
            Ok(pb::RemoveImageResponse {})
        }
        Err(e) => Err(e),
    }
}
