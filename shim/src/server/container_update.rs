//! UpdateContainerResources.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{Result, Runtime, RuntimeError};

/// UpdateContainerResources: new limits applied to the running container's cgroup.
pub async fn update(
    rt: &Arc<Runtime>,
    r: pb::UpdateContainerResourcesRequest,
) -> Result<pb::UpdateContainerResourcesResponse> {
    let res = r
        .linux
        .ok_or_else(|| RuntimeError::InvalidArgument("linux resources are missing".into()))?;
    rt.update_resources(&r.container_id, convert::resources(&res))
        .await?;
    Ok(pb::UpdateContainerResourcesResponse {})
}
