//! ContainerStatus.

use std::collections::HashMap;
use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{ContainerView, Result, Runtime};

/// ContainerStatus.
pub async fn status(
    rt: &Arc<Runtime>,
    r: pb::ContainerStatusRequest,
) -> Result<pb::ContainerStatusResponse> {
    let view = rt.container_status(&r.container_id)?;
    let (status, info) = to_pb(&view, r.verbose);
    Ok(pb::ContainerStatusResponse {
        status: Some(status),
        info,
    })
}

/// The CRI status of a container (shared with PodSandboxStatus and container events), and
/// with `verbose` its runtime details.
pub fn to_pb(v: &ContainerView, verbose: bool) -> (pb::ContainerStatus, HashMap<String, String>) {
    let st = &v.state;
    let m = &v.meta;
    let spec = &m.spec;
    let mut info = HashMap::new();
    if verbose {
        let v = serde_json::json!({
            "pid": st.pid(),
            "wasm": m.wasm,
            "precompiled": m.precompiled,
            "args": m.args,
            "cgroupPath": m.cgroup_path,
            "httpPort": m.http_port,
        });
        info.insert("info".to_string(), v.to_string());
    }
    let status = pb::ContainerStatus {
        id: m.id.clone(),
        metadata: Some(pb::ContainerMetadata {
            name: spec.name.clone(),
            attempt: spec.attempt,
        }),
        state: convert::container_state(st) as i32,
        created_at: m.created_at,
        started_at: st.started_at(),
        finished_at: st.finished_at(),
        exit_code: st.exit_code(),
        image: Some(pb::ImageSpec {
            image: spec.image.clone(),
            ..Default::default()
        }),
        image_ref: m.image_ref.clone(),
        image_id: m.image_id.clone(),
        // Records from before users were resolved at creation ran as the daemon (root).
        user: Some(pb::ContainerUser {
            linux: Some(pb::LinuxContainerUser {
                uid: m.uid.unwrap_or(0) as i64,
                gid: m.gid.unwrap_or(0) as i64,
                supplemental_groups: m.additional_gids.iter().map(|g| *g as i64).collect(),
            }),
        }),
        reason: st.reason().map(|r| r.to_string()).unwrap_or_default(),
        message: st.message().to_owned(),
        labels: spec.labels.clone(),
        annotations: spec.annotations.clone(),
        mounts: spec
            .mounts
            .iter()
            .map(|mt| pb::Mount {
                container_path: mt.container_path.clone(),
                // An image volume is reported as the kubelet gave it: by image, no host path.
                host_path: match &mt.image {
                    Some(_) => String::new(),
                    None => mt.host_path.clone(),
                },
                readonly: mt.read_only,
                // Read-only preopens are read-only all the way down.
                recursive_read_only: mt.read_only,
                image: mt.image.as_ref().map(|v| pb::ImageSpec {
                    image: v.reference.clone(),
                    ..Default::default()
                }),
                image_sub_path: mt
                    .image
                    .as_ref()
                    .map(|v| v.sub_path.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        log_path: m
            .log_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        resources: Some(pb::ContainerResources {
            linux: Some(convert::resources_back(&spec.resources, spec.oom_score_adj)),
            windows: None,
        }),
        stop_signal: pb::Signal::Sigterm as i32,
    };
    (status, info)
}
