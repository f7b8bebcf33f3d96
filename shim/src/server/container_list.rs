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
        let spec = &m.spec;
        let st = c.snapshot();
        let state = convert::container_state(&st) as i32;
        if !convert::id_matches(&m.id, &f.id)
            || !convert::id_matches(&spec.pod_id, &f.pod_sandbox_id)
            || f.state.as_ref().is_some_and(|s| s.state != state)
            || !convert::labels_match(&spec.labels, &f.label_selector)
        {
            continue;
        }
        containers.push(pb::Container {
            id: m.id.clone(),
            pod_sandbox_id: spec.pod_id.clone(),
            metadata: Some(pb::ContainerMetadata {
                name: spec.name.clone(),
                attempt: spec.attempt,
            }),
            image: Some(pb::ImageSpec {
                image: spec.image.clone(),
                ..Default::default()
            }),
            image_ref: m.image_ref.clone(),
            image_id: m.image_id.clone(),
            state,
            created_at: m.created_at,
            labels: spec.labels.clone(),
            annotations: spec.annotations.clone(),
        });
    }
    containers.sort_by_key(|c| c.created_at);
    Ok(pb::ListContainersResponse { containers })
}
