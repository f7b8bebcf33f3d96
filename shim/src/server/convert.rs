//! Conversions between CRI messages and domain types shared by several RPCs.

use std::collections::HashMap;

use cri::v1 as pb;

use crate::container::{ContainerPhase, ContainerState};
use crate::pod::{PodMeta, PodPhase};

/// Whether `labels` has every key/value of `selector`.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether `id` matches a filter ID (exact or, as crictl sends, a prefix).
pub fn id_matches(id: &str, filter: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// CRI sandbox metadata of a pod.
pub fn pod_metadata(m: &PodMeta) -> pb::PodSandboxMetadata {
    pb::PodSandboxMetadata {
        name: m.spec.name.clone(),
        uid: m.spec.uid.clone(),
        namespace: m.spec.namespace.clone(),
        attempt: m.spec.attempt,
    }
}

/// CRI sandbox state.
pub fn pod_state(p: PodPhase) -> pb::PodSandboxState {
    match p {
        PodPhase::Ready => pb::PodSandboxState::SandboxReady,
        PodPhase::NotReady | PodPhase::Creating => pb::PodSandboxState::SandboxNotready,
    }
}

/// CRI container state.
pub fn container_state(s: &ContainerState) -> pb::ContainerState {
    match s.phase() {
        ContainerPhase::Created | ContainerPhase::Starting => pb::ContainerState::ContainerCreated,
        ContainerPhase::Running => pb::ContainerState::ContainerRunning,
        ContainerPhase::Exited => pb::ContainerState::ContainerExited,
        ContainerPhase::Unknown => pb::ContainerState::ContainerUnknown,
    }
}

/// Domain resources from CRI resources.
pub fn resources(r: &pb::LinuxContainerResources) -> crate::cgroups::Resources {
    crate::cgroups::Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit: r.memory_limit_in_bytes,
        memory_swap_limit: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        pids_limit: None,
        unified: r.unified.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
    }
}

/// CRI resources from domain resources.
pub fn resources_back(
    r: &crate::cgroups::Resources,
    oom_score_adj: Option<i64>,
) -> pb::LinuxContainerResources {
    pb::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit,
        memory_swap_limit_in_bytes: r.memory_swap_limit,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        oom_score_adj: oom_score_adj.unwrap_or(0),
        unified: r.unified.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| pb::HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector() {
        let mut l = HashMap::new();
        l.insert("a".to_string(), "1".to_string());
        l.insert("b".to_string(), "2".to_string());
        let mut s = HashMap::new();
        assert!(labels_match(&l, &s));
        s.insert("a".to_string(), "1".to_string());
        assert!(labels_match(&l, &s));
        s.insert("b".to_string(), "3".to_string());
        assert!(!labels_match(&l, &s));
    }

    #[test]
    fn id_filter() {
        assert!(id_matches("abcdef", ""));
        assert!(id_matches("abcdef", "abc"));
        assert!(!id_matches("abcdef", "abd"));
    }
}
