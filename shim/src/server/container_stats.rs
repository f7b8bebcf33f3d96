//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats — from cgroups.

use std::sync::Arc;

use cri::v1 as pb;

use super::convert;
use crate::runtime::{Result, Runtime, RuntimeError, Usage};

fn u64v(v: u64) -> Option<pb::UInt64Value> {
    Some(pb::UInt64Value { value: v })
}

/// CRI PSI from the kernel's (`total` microseconds → nanoseconds).
fn psi(p: Option<crate::cgroups::Psi>) -> Option<pb::PsiStats> {
    let data = |d: crate::cgroups::PsiData| pb::PsiData {
        total: d.total_us.saturating_mul(1000),
        avg10: d.avg10,
        avg60: d.avg60,
        avg300: d.avg300,
    };
    p.map(|p| pb::PsiStats {
        full: p.full.map(data),
        some: Some(data(p.some)),
    })
}

fn cpu(u: &Usage) -> pb::CpuUsage {
    pb::CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: u64v(u.cgroup.cpu_usage_ns),
        usage_nano_cores: u.nano_cores.and_then(u64v),
        psi: psi(u.cgroup.pressure.cpu),
    }
}

fn memory(u: &Usage) -> pb::MemoryUsage {
    let s = &u.cgroup;
    pb::MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: u64v(s.working_set),
        available_bytes: u.available.and_then(u64v),
        usage_bytes: u64v(s.memory_usage),
        rss_bytes: u64v(s.rss),
        page_faults: u64v(s.page_faults),
        major_page_faults: u64v(s.major_page_faults),
        psi: psi(s.pressure.memory),
    }
}

/// Set where the cgroup has I/O accounting or I/O pressure; the CRI's `IoUsage` carries only
/// the pressure (cgroup v1: none).
fn io(u: &Usage) -> Option<pb::IoUsage> {
    let s = &u.cgroup;
    (s.io.is_some() || s.pressure.io.is_some()).then(|| pb::IoUsage {
        timestamp: u.timestamp,
        psi: psi(s.pressure.io),
    })
}

fn container_stats_of(
    rt: &Arc<Runtime>,
    c: &crate::runtime::Container,
) -> Result<pb::ContainerStats> {
    Ok(container_stats_from(rt, c, &rt.container_usage(c)?))
}

fn container_stats_from(
    rt: &Arc<Runtime>,
    c: &crate::runtime::Container,
    u: &Usage,
) -> pb::ContainerStats {
    pb::ContainerStats {
        attributes: Some(pb::ContainerAttributes {
            id: c.meta().id.clone(),
            metadata: Some(pb::ContainerMetadata {
                name: c.meta().spec.name.clone(),
                attempt: c.meta().spec.attempt,
            }),
            labels: c.meta().spec.labels.clone(),
            annotations: c.meta().spec.annotations.clone(),
        }),
        cpu: Some(cpu(u)),
        memory: Some(memory(u)),
        io: io(u),
        writable_layer: Some(pb::FilesystemUsage {
            timestamp: u.timestamp,
            fs_id: Some(pb::FilesystemIdentifier {
                mountpoint: rt.filesystem().display().to_string(),
            }),
            used_bytes: u64v(u.writable_bytes),
            inodes_used: u64v(u.writable_inodes),
        }),
        swap: None,
    }
}

/// Runs blocking stats reads (cgroup and proc files) on the blocking pool.
async fn blocking<T: Send + 'static>(
    rt: &Arc<Runtime>,
    object: impl Into<String>,
    f: impl FnOnce(&Arc<Runtime>) -> Result<T> + Send + 'static,
) -> Result<T> {
    let rt = rt.clone();
    match tokio::task::spawn_blocking(move || f(&rt)).await {
        Ok(r) => r,
        Err(e) => Err(RuntimeError::task("read stats", object)(e)),
    }
}

/// ContainerStats.
pub async fn stats(
    rt: &Arc<Runtime>,
    r: pb::ContainerStatsRequest,
) -> Result<pb::ContainerStatsResponse> {
    let c = rt.container(&r.container_id)?;
    let object = format!("container {}", c.meta().id);
    let stats = blocking(rt, object, move |rt| container_stats_of(rt, &c)).await?;
    Ok(pb::ContainerStatsResponse { stats: Some(stats) })
}

/// ListContainerStats (running containers; id, pod and label filters). The cgroup reads are
/// blocking file I/O (about ten small files per container), so they are spread over the
/// blocking pool, one chunk per core.
pub async fn list(
    rt: &Arc<Runtime>,
    r: pb::ListContainerStatsRequest,
) -> Result<pb::ListContainerStatsResponse> {
    let f = r.filter.unwrap_or_default();
    let wanted: Vec<_> = rt
        .containers()
        .into_iter()
        .filter(|c| {
            convert::id_matches(&c.meta().id, &f.id)
                && convert::id_matches(&c.meta().spec.pod_id, &f.pod_sandbox_id)
                && convert::labels_match(&c.meta().spec.labels, &f.label_selector)
                && c.snapshot().phase() == crate::container::ContainerPhase::Running
        })
        .collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = wanted.len().div_ceil(workers).max(1);
    let tasks: Vec<_> = wanted
        .chunks(chunk)
        .map(|part| {
            let (rt, part) = (rt.clone(), part.to_vec());
            tokio::task::spawn_blocking(move || {
                part.iter()
                    .filter_map(|c| container_stats_of(&rt, c).ok())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut stats = Vec::with_capacity(wanted.len());
    for t in tasks {
        stats.extend(t.await.unwrap_or_default());
    }
    Ok(pb::ListContainerStatsResponse { stats })
}

fn pod_stats_of(rt: &Arc<Runtime>, pod: &crate::runtime::Pod) -> Result<pb::PodSandboxStats> {
    let m = pod.meta();
    let (u, each) = rt.pod_usage(pod)?;
    let containers = each
        .iter()
        .map(|(c, cu)| container_stats_from(rt, c, cu))
        .collect();
    Ok(pb::PodSandboxStats {
        attributes: Some(pb::PodSandboxAttributes {
            id: m.id.clone(),
            metadata: Some(convert::pod_metadata(m)),
            labels: m.spec.labels.clone(),
            annotations: m.spec.annotations.clone(),
        }),
        linux: Some(pb::LinuxPodSandboxStats {
            cpu: Some(cpu(&u)),
            memory: Some(memory(&u)),
            io: io(&u),
            network: rt.pod_network(pod).map(|(timestamp, ifaces)| {
                let usage = |i: crate::network::stats::InterfaceUsage| pb::NetworkInterfaceUsage {
                    name: i.name,
                    rx_bytes: u64v(i.rx_bytes),
                    rx_errors: u64v(i.rx_errors),
                    tx_bytes: u64v(i.tx_bytes),
                    tx_errors: u64v(i.tx_errors),
                };
                let (default, others): (Vec<_>, Vec<_>) = ifaces
                    .into_iter()
                    .partition(|i| i.name == crate::runtime::POD_IFNAME);
                pb::NetworkUsage {
                    timestamp,
                    default_interface: default.into_iter().next().map(usage),
                    interfaces: others.into_iter().map(usage).collect(),
                }
            }),
            process: Some(pb::ProcessUsage {
                timestamp: u.timestamp,
                process_count: u64v(u.cgroup.pids_current),
            }),
            containers,
        }),
        windows: None,
    })
}

/// PodSandboxStats.
pub async fn pod_stats(
    rt: &Arc<Runtime>,
    r: pb::PodSandboxStatsRequest,
) -> Result<pb::PodSandboxStatsResponse> {
    let pod = rt.pod(&r.pod_sandbox_id)?;
    let object = format!("pod sandbox {}", pod.meta().id);
    let stats = blocking(rt, object, move |rt| pod_stats_of(rt, &pod)).await?;
    Ok(pb::PodSandboxStatsResponse { stats: Some(stats) })
}

/// ListPodSandboxStats.
pub async fn list_pods(
    rt: &Arc<Runtime>,
    r: pb::ListPodSandboxStatsRequest,
) -> Result<pb::ListPodSandboxStatsResponse> {
    let f = r.filter.unwrap_or_default();
    let pods: Vec<_> = rt
        .pods()
        .into_iter()
        .filter(|pod| {
            convert::id_matches(&pod.meta().id, &f.id)
                && convert::labels_match(&pod.meta().spec.labels, &f.label_selector)
        })
        .collect();
    let stats = blocking(rt, "the listed pod sandboxes", move |rt| {
        Ok(pods
            .iter()
            .filter_map(|pod| pod_stats_of(rt, pod).ok())
            .collect())
    })
    .await?;
    Ok(pb::ListPodSandboxStatsResponse { stats })
}
