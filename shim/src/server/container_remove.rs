//! RemoveContainer.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// RemoveContainer: idempotent; a running container is killed first.
pub async fn remove(
    rt: &Arc<Runtime>,
    r: pb::RemoveContainerRequest,
) -> Result<pb::RemoveContainerResponse> {
    rt.remove_container(&r.container_id).await?;
    Ok(pb::RemoveContainerResponse {})
}
