//! ListPodSandbox.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{Result, Runtime};

/// ListPodSandbox with id (prefix), state and label-selector filters.
pub async fn list(
    rt: &Arc<Runtime>,
    r: pb::ListPodSandboxRequest,
) -> Result<pb::ListPodSandboxResponse> {
    let f = r.filter.unwrap_or_default();
    let mut items = Vec::new();
    for pod in rt.pods() {
        let rec = pod.record();
        let m = &rec.meta;
        let state = convert::pod_state(rec.state.phase) as i32;
        if !convert::id_matches(&m.id, &f.id)
            || f.state.as_ref().is_some_and(|s| s.state != state)
            || !convert::labels_match(&m.spec.labels, &f.label_selector)
        {
            continue;
        }
        items.push(pb::PodSandbox {
            id: m.id.clone(),
            metadata: Some(convert::pod_metadata(m)),
            state,
            created_at: m.created_at,
            labels: m.spec.labels.clone(),
            annotations: m.spec.annotations.clone(),
            runtime_handler: m.spec.runtime_handler.clone(),
        });
    }
    items.sort_by_key(|p| p.created_at);
    Ok(pb::ListPodSandboxResponse { items })
}
