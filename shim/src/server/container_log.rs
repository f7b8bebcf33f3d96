//! ReopenContainerLog.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// ReopenContainerLog.
pub async fn reopen(
    rt: &Arc<Runtime>,
    r: pb::ReopenContainerLogRequest,
) -> Result<pb::ReopenContainerLogResponse> {
    rt.reopen_log(&r.container_id).await?;
    Ok(pb::ReopenContainerLogResponse {})
}
