//! ImageStatus.

use std::collections::HashMap;
use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime, RuntimeError};

/// ImageStatus: an absent image is not an error (the kubelet pulls on an empty answer).
pub async fn status(
    rt: &Arc<Runtime>,
    r: pb::ImageStatusRequest,
) -> Result<pb::ImageStatusResponse> {
    let name = r.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(RuntimeError::InvalidArgument("image is empty".into()));
    }
    let Some(view) = rt.image_status(&name)? else {
        return Ok(pb::ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if r.verbose {
        info.insert(
            "info".to_string(),
            serde_json::to_string(&view.image).unwrap_or_default(),
        );
    }
    Ok(pb::ImageStatusResponse {
        image: Some(super::image_list::to_pb(&view)),
        info,
    })
}
