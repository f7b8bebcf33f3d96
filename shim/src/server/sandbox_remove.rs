//! RemovePodSandbox.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// RemovePodSandbox: idempotent.
pub async fn remove(
    rt: &Arc<Runtime>,
    r: pb::RemovePodSandboxRequest,
) -> Result<pb::RemovePodSandboxResponse> {
    rt.remove_pod(&r.pod_sandbox_id).await?;
    Ok(pb::RemovePodSandboxResponse {})
}
