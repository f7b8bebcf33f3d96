//! StartContainer.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// StartContainer.
pub async fn start(
    rt: &Arc<Runtime>,
    r: pb::StartContainerRequest,
) -> Result<pb::StartContainerResponse> {
    rt.start_container(&r.container_id).await?;
    Ok(pb::StartContainerResponse {})
}
