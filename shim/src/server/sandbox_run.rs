//! RunPodSandbox.

use std::sync::Arc;

use cri::v1 as pb;

use crate::pod::{DnsConfig, PortMapping};
use crate::runtime::{NewPod, Result, Runtime, RuntimeError};

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
    if !linux.sysctls.is_empty() {
        let mut names: Vec<&str> = linux.sysctls.keys().map(String::as_str).collect();
        names.sort();
        return Err(RuntimeError::Unimplemented(format!(
            "sysctls are not supported by wasmcri yet (asked for {})",
            names.join(", ")
        )));
    }
    if linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|n| n.userns_options.as_ref())
        .is_some_and(|u| u.mode == pb::NamespaceMode::Pod as i32)
    {
        return Err(RuntimeError::Unimplemented(
            "user namespaces (hostUsers: false) are not supported by wasmcri yet".into(),
        ));
    }
    let host_network = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|n| n.network == pb::NamespaceMode::Node as i32);
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
