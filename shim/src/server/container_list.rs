//! ListContainers.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{Result, Runtime};

/// ListContainers with id, state, pod sandbox id (prefixes allowed) and label filters.
pub async fn list(
    rt: &Arc<Runtime>,
    r: pb::ListContainersRequest,
) -> Result<pb::ListContainersResponse> {
    let f = r.filter.unwrap_or_default();
    let mut containers = Vec::new();
    for c in rt.containers() {
        let m = &c.meta();
        let st = c.snapshot();
        let state = convert::container_state(&st) as i32;
        if !convert::id_matches(&m.id, &f.id)
            || !convert::id_matches(&m.pod_id, &f.pod_sandbox_id)
            || f.state.as_ref().is_some_and(|s| s.state != state)
            || !convert::labels_match(&m.labels, &f.label_selector)
        {
            continue;
        }
        containers.push(pb::Container {
            id: m.id.clone(),
            pod_sandbox_id: m.pod_id.clone(),
            metadata: Some(pb::ContainerMetadata {
                name: m.name.clone(),
                attempt: m.attempt,
            }),
            image: Some(pb::ImageSpec {
                image: m.image.clone(),
                ..Default::default()
            }),
            image_ref: m.image_ref.clone(),
            image_id: m.image_id.clone(),
            state,
            created_at: m.created_at,
            labels: m.labels.clone(),
            annotations: m.annotations.clone(),
        });
    }
    containers.sort_by_key(|c| c.created_at);
    Ok(pb::ListContainersResponse { containers })
}
