//! StopPodSandbox.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// StopPodSandbox: idempotent; unknown sandboxes are already stopped.
pub async fn stop(
    rt: &Arc<Runtime>,
    r: pb::StopPodSandboxRequest,
) -> Result<pb::StopPodSandboxResponse> {
    rt.stop_pod(&r.pod_sandbox_id).await?;
    Ok(pb::StopPodSandboxResponse {})
}
