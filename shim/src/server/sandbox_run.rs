//! RunPodSandbox.
//!
//! User namespaces: `userns_options` absent or in mode `NODE` runs the pod with the node's
//! users; mode `POD` (`hostUsers: false`) in a user namespace with the kubelet's mappings
//! (checked in [`crate::userns`]); `CONTAINER` and `TARGET` are not modes the CRI defines for
//! user namespaces and are refused.

use std::sync::Arc;

use cri::v1 as pb;

use crate::pod::{DnsConfig, PortMapping};
use crate::runtime::{NewPod, Result, Runtime, RuntimeError};
use crate::userns::{IdMapping, IdMappings};

/// RunPodSandbox.
pub async fn run(
    rt: &Arc<Runtime>,
    r: pb::RunPodSandboxRequest,
) -> Result<pb::RunPodSandboxResponse> {
    let cfg = r
        .config
        .ok_or_else(|| RuntimeError::InvalidArgument("sandbox config is missing".into()))?;
    let md = cfg
        .metadata
        .ok_or_else(|| RuntimeError::InvalidArgument("sandbox metadata is missing".into()))?;
    let linux = cfg.linux.unwrap_or_default();
    let namespaces = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.as_ref());
    let host_network = namespaces.is_some_and(|n| n.network == pb::NamespaceMode::Node as i32);
    let id_mappings = id_mappings(namespaces.and_then(|n| n.userns_options.as_ref()))?;
    let req = NewPod {
        name: md.name,
        uid: md.uid,
        namespace: md.namespace,
        attempt: md.attempt,
        labels: cfg.labels,
        annotations: cfg.annotations,
        runtime_handler: r.runtime_handler,
        log_directory: cfg.log_directory,
        hostname: cfg.hostname,
        cgroup_parent: linux.cgroup_parent,
        dns: cfg.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        host_network,
        id_mappings,
        sysctls: linux.sysctls.into_iter().collect(),
        port_mappings: cfg
            .port_mappings
            .into_iter()
            .map(|p| PortMapping {
                protocol: match pb::Protocol::try_from(p.protocol).unwrap_or(pb::Protocol::Tcp) {
                    pb::Protocol::Tcp => "tcp",
                    pb::Protocol::Udp => "udp",
                    pb::Protocol::Sctp => "sctp",
                }
                .into(),
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip,
            })
            .collect(),
    };
    let id = rt.run_pod(req).await?;
    Ok(pb::RunPodSandboxResponse { pod_sandbox_id: id })
}

/// The pod's user namespace mapping from `userns_options`: `None` for the node's users.
fn id_mappings(u: Option<&pb::UserNamespace>) -> Result<Option<IdMappings>> {
    let Some(u) = u else { return Ok(None) };
    let convert = |v: &[pb::IdMapping]| {
        v.iter()
            .map(|m| IdMapping {
                container_id: m.container_id,
                host_id: m.host_id,
                length: m.length,
            })
            .collect()
    };
    match pb::NamespaceMode::try_from(u.mode) {
        Ok(pb::NamespaceMode::Node) if u.uids.is_empty() && u.gids.is_empty() => Ok(None),
        Ok(pb::NamespaceMode::Node) => Err(RuntimeError::InvalidArgument(
            "user namespace mode NODE takes no uid/gid mappings".into(),
        )),
        Ok(pb::NamespaceMode::Pod) => Ok(Some(IdMappings {
            uids: convert(&u.uids),
            gids: convert(&u.gids),
        })),
        _ => Err(RuntimeError::InvalidArgument(format!(
            "user namespace mode {} is not supported (only NODE and POD are, as the CRI says)",
            pb::NamespaceMode::try_from(u.mode)
                .map(|m| m.as_str_name().to_owned())
                .unwrap_or_else(|_| u.mode.to_string())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(host_id: u32) -> pb::IdMapping {
        pb::IdMapping {
            host_id,
            container_id: 0,
            length: 65536,
        }
    }

    #[test]
    fn modes() {
        assert_eq!(id_mappings(None).unwrap(), None);
        let node = pb::UserNamespace {
            mode: pb::NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(id_mappings(Some(&node)).unwrap(), None);
        let pod = pb::UserNamespace {
            mode: pb::NamespaceMode::Pod as i32,
            uids: vec![range(65536)],
            gids: vec![range(131072)],
        };
        let m = id_mappings(Some(&pod)).unwrap().unwrap();
        assert_eq!((m.uids[0].host_id, m.gids[0].host_id), (65536, 131072));
        for mode in [
            pb::NamespaceMode::Container as i32,
            pb::NamespaceMode::Target as i32,
            7,
        ] {
            let u = pb::UserNamespace {
                mode,
                ..pod.clone()
            };
            let e = id_mappings(Some(&u)).unwrap_err();
            assert!(matches!(e, RuntimeError::InvalidArgument(_)), "{e}");
        }
        let odd = pb::UserNamespace {
            mode: pb::NamespaceMode::Node as i32,
            ..pod
        };
        assert!(id_mappings(Some(&odd)).is_err());
    }
}
