//! PodSandboxStatus.

use std::collections::HashMap;
use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{PodView, Result, Runtime};

/// PodSandboxStatus, with IPs, namespace modes and (as the kubelet's evented PLEG expects)
/// the statuses of the pod's containers; `verbose` adds the record as JSON.
pub async fn status(
    rt: &Arc<Runtime>,
    r: pb::PodSandboxStatusRequest,
) -> Result<pb::PodSandboxStatusResponse> {
    let view = rt.pod_status(&r.pod_sandbox_id)?;
    Ok(to_pb(&view, r.verbose))
}

/// The CRI status of a sandbox and its containers, taken now.
pub fn to_pb(view: &PodView, verbose: bool) -> pb::PodSandboxStatusResponse {
    let rec = &view.record;
    let containers_statuses = view
        .containers
        .iter()
        .map(|c| super::container_status::to_pb(c, false).0)
        .collect();
    let m = &rec.meta;
    let mut ips = rec.state.ips.iter();
    let network = pb::PodSandboxNetworkStatus {
        ip: ips.next().cloned().unwrap_or_default(),
        additional_ips: ips.map(|ip| pb::PodIp { ip: ip.clone() }).collect(),
    };
    let mode = if m.spec.host_network {
        pb::NamespaceMode::Node
    } else {
        pb::NamespaceMode::Pod
    };
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "info".to_string(),
            serde_json::to_string(rec).unwrap_or_default(),
        );
    }
    pb::PodSandboxStatusResponse {
        status: Some(pb::PodSandboxStatus {
            id: m.id.clone(),
            metadata: Some(convert::pod_metadata(m)),
            state: convert::pod_state(rec.state.phase) as i32,
            created_at: m.created_at,
            network: Some(network),
            linux: Some(pb::LinuxPodSandboxStatus {
                namespaces: Some(pb::Namespace {
                    options: Some(pb::NamespaceOption {
                        network: mode as i32,
                        pid: pb::NamespaceMode::Container as i32,
                        ipc: pb::NamespaceMode::Pod as i32,
                        userns_options: Some(userns_options(m.spec.id_mappings.as_ref())),
                        ..Default::default()
                    }),
                }),
            }),
            labels: m.spec.labels.clone(),
            annotations: m.spec.annotations.clone(),
            runtime_handler: m.spec.runtime_handler.clone(),
        }),
        info,
        containers_statuses,
        timestamp: view.taken_at,
    }
}

/// The pod's user namespace as the CRI describes it: mode `POD` with its ranges, or `NODE`.
fn userns_options(m: Option<&crate::userns::IdMappings>) -> pb::UserNamespace {
    let ranges = |v: &[crate::userns::IdMapping]| {
        v.iter()
            .map(|r| pb::IdMapping {
                host_id: r.host_id,
                container_id: r.container_id,
                length: r.length,
            })
            .collect()
    };
    match m {
        Some(m) => pb::UserNamespace {
            mode: pb::NamespaceMode::Pod as i32,
            uids: ranges(&m.uids),
            gids: ranges(&m.gids),
        },
        None => pb::UserNamespace {
            mode: pb::NamespaceMode::Node as i32,
            ..Default::default()
        },
    }
}
