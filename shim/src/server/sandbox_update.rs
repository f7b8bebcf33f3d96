//! UpdatePodSandboxResources.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::pod::PodResources;
use crate::runtime::{Result, Runtime, RuntimeError};

/// UpdatePodSandboxResources: records the pod-level overhead and resources of an in-place
/// resize.
pub async fn update(
    rt: &Arc<Runtime>,
    r: pb::UpdatePodSandboxResourcesRequest,
) -> Result<pb::UpdatePodSandboxResourcesResponse> {
    if r.pod_sandbox_id.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "pod_sandbox_id is empty".into(),
        ));
    }
    let res = PodResources {
        overhead: r
            .overhead
            .as_ref()
            .map(convert::resources)
            .unwrap_or_default(),
        resources: r
            .resources
            .as_ref()
            .map(convert::resources)
            .unwrap_or_default(),
    };
    rt.update_pod_resources(&r.pod_sandbox_id, res).await?;
    Ok(pb::UpdatePodSandboxResourcesResponse {})
}
