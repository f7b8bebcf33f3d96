//! PullImage.

use std::sync::Arc;

use cri::v1 as pb;

use crate::images::PullAuth;
use crate::runtime::{Result, Runtime, RuntimeError};

/// PullImage: pulls (or finds) the image and precompiles its module; returns the image ID.
pub async fn pull(rt: &Arc<Runtime>, r: pb::PullImageRequest) -> Result<pb::PullImageResponse> {
    let name = r.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(RuntimeError::InvalidArgument("image is empty".into()));
    }
    let auth = r
        .auth
        .map(|a| PullAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        })
        .unwrap_or_default();
    let image_ref = rt.pull_image(&name, &auth).await?;
    Ok(pb::PullImageResponse { image_ref })
}
