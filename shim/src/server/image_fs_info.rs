//! ImageFsInfo.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// ImageFsInfo: real byte and inode usage of the image store, for image GC and eviction.
pub async fn info(
    rt: &Arc<Runtime>,
    _r: pb::ImageFsInfoRequest,
) -> Result<pb::ImageFsInfoResponse> {
    let usage = rt.image_fs_usage().await?;
    let fs = pb::FilesystemUsage {
        timestamp: crate::ids::now_ns(),
        fs_id: Some(pb::FilesystemIdentifier {
            mountpoint: usage.mountpoint.display().to_string(),
        }),
        used_bytes: Some(pb::UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(pb::UInt64Value {
            value: usage.inodes_used,
        }),
    };
    Ok(pb::ImageFsInfoResponse {
        image_filesystems: vec![fs.clone()],
        container_filesystems: vec![fs],
    })
}
