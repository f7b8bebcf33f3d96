//! CreateContainer.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::container::MountSpec;
use crate::runtime::{NewContainer, Result, Runtime, RuntimeError};

/// CreateContainer.
pub async fn create(
    rt: &Arc<Runtime>,
    r: pb::CreateContainerRequest,
) -> Result<pb::CreateContainerResponse> {
    let cfg = r
        .config
        .ok_or_else(|| RuntimeError::InvalidArgument("container config is missing".into()))?;
    let md = cfg
        .metadata
        .ok_or_else(|| RuntimeError::InvalidArgument("container metadata is missing".into()))?;
    let image = cfg.image.map(|i| i.image).unwrap_or_default();
    if image.is_empty() {
        return Err(RuntimeError::InvalidArgument(
            "container image is empty".into(),
        ));
    }
    if cfg.tty {
        return Err(RuntimeError::Unimplemented(
            "tty is not supported for wasm containers".into(),
        ));
    }
    if !cfg.devices.is_empty() {
        return Err(RuntimeError::Unimplemented(
            "devices cannot be given to wasm containers".into(),
        ));
    }
    let linux = cfg.linux.unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    let sc = linux.security_context.unwrap_or_default();
    let mut mounts = Vec::with_capacity(cfg.mounts.len());
    for m in cfg.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(RuntimeError::InvalidArgument(format!(
                "mount container_path {:?} must be absolute",
                m.container_path
            )));
        }
        mounts.push(MountSpec {
            container_path: m.container_path,
            host_path: m.host_path,
            read_only: m.readonly,
        });
    }
    let req = NewContainer {
        pod_id: r.pod_sandbox_id,
        name: md.name,
        attempt: md.attempt,
        labels: cfg.labels,
        annotations: cfg.annotations,
        image,
        command: cfg.command,
        args: cfg.args,
        working_dir: cfg.working_dir,
        env: cfg.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        mounts,
        log_path: cfg.log_path,
        stdin: cfg.stdin,
        resources: convert::resources(&res),
        oom_score_adj: (res.oom_score_adj != 0).then_some(res.oom_score_adj),
        uid: sc.run_as_user.map(|u| u.value as u32),
        gid: sc.run_as_group.map(|g| g.value as u32),
        additional_gids: sc.supplemental_groups.iter().map(|g| *g as u32).collect(),
    };
    let id = rt.create_container(req).await?;
    Ok(pb::CreateContainerResponse { container_id: id })
}
