//! Version, Status, RuntimeConfig and UpdateRuntimeConfig.

use std::collections::HashMap;
use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{Result, Runtime};

/// Version.
pub async fn version(_r: pb::VersionRequest) -> Result<pb::VersionResponse> {
    Ok(pb::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "wasmcri".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}

/// Status: RuntimeReady is true once the daemon serves; NetworkReady reflects whether a CNI
/// configuration is present (pods with node networking work either way).
pub async fn status(rt: &Arc<Runtime>, r: pb::StatusRequest) -> Result<pb::StatusResponse> {
    let runtime = pb::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    let st = rt.runtime_status();
    let network = match st.network {
        Ok(()) => pb::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(msg) => pb::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("Network plugin returns error: {msg}"),
        },
    };
    let mut info = HashMap::new();
    if r.verbose {
        let cfg = serde_json::json!({
            "root": st.root,
            "state": st.state,
            "cgroupDriver": "cgroupfs",
            "cgroups": st.cgroups,
            "cni": st.cni,
            "runtimeHandlers": st.runtime_handlers,
            "podCIDR": st.pod_cidr,
        });
        info.insert("config".to_string(), cfg.to_string());
    }
    // Read-only mounts are bound recursively read-only in the runner's mount namespace
    // (MOUNT_ATTR_RDONLY with AT_RECURSIVE). User namespaces: every runner of a
    // `hostUsers: false` pod joins the pod's user namespace (see `crate::userns`).
    let handler = |name: &str| pb::RuntimeHandler {
        name: name.to_owned(),
        features: Some(pb::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: true,
        }),
    };
    let mut runtime_handlers = vec![handler("")];
    runtime_handlers.extend(st.runtime_handlers.iter().map(|h| handler(h)));
    Ok(pb::StatusResponse {
        status: Some(pb::RuntimeStatus {
            conditions: vec![runtime, network],
        }),
        info,
        runtime_handlers,
        features: Some(pb::RuntimeFeatures {
            // Users and groups come from the image's /etc/passwd and /etc/group, merged or
            // not as the policy says, and ContainerStatus reports the user.
            supplemental_groups_policy: true,
            // A runner joins the pod's network namespace (none: it stays in the node's) before
            // its user namespace, so a host-network pod runs in a user namespace the same way;
            // its guest holds no capability over the node's network.
            user_namespaces_host_network: true,
        }),
    })
}

/// RuntimeConfig: the cgroup driver, set explicitly (the enum's zero value means systemd).
pub async fn runtime_config(
    _rt: &Arc<Runtime>,
    _r: pb::RuntimeConfigRequest,
) -> Result<pb::RuntimeConfigResponse> {
    Ok(pb::RuntimeConfigResponse {
        linux: Some(pb::LinuxRuntimeConfiguration {
            cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
        }),
    })
}

/// UpdateRuntimeConfig: records the pod CIDR the kubelet pushes.
pub async fn update_config(
    rt: &Arc<Runtime>,
    r: pb::UpdateRuntimeConfigRequest,
) -> Result<pb::UpdateRuntimeConfigResponse> {
    if let Some(cidr) = r
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
    {
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        }
        rt.set_pod_cidr(cidr);
    }
    Ok(pb::UpdateRuntimeConfigResponse {})
}
