//! StopContainer.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// StopContainer: SIGTERM, SIGKILL after `timeout` seconds.
pub async fn stop(
    rt: &Arc<Runtime>,
    r: pb::StopContainerRequest,
) -> Result<pb::StopContainerResponse> {
    rt.stop_container(&r.container_id, r.timeout).await?;
    Ok(pb::StopContainerResponse {})
}
