//! ExecSync (what the kubelet's exec probes call).

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// ExecSync.
pub async fn exec_sync(rt: &Arc<Runtime>, r: pb::ExecSyncRequest) -> Result<pb::ExecSyncResponse> {
    let out = rt.exec_sync(&r.container_id, r.cmd, r.timeout).await?;
    Ok(pb::ExecSyncResponse {
        stdout: out.stdout,
        stderr: out.stderr,
        exit_code: out.exit_code,
    })
}
