//! Resource usage from cgroups (for `kubectl top`, the summary API and the HPA) and
//! in-place resource updates.

use std::sync::Arc;

use super::{Container, Pod, Result, Runtime, RuntimeError};

/// One usage sample, in domain terms.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Unix nanoseconds of the sample.
    pub timestamp: i64,
    /// Cumulative CPU time.
    pub cpu_usage_ns: u64,
    /// CPU rate since the previous sample, in nanocores (None on the first sample).
    pub nano_cores: Option<u64>,
    /// Memory usage.
    pub memory_usage: u64,
    /// Working set (usage minus inactive file cache).
    pub working_set: u64,
    /// Anonymous + swap cache memory.
    pub rss: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// Limit minus working set, when there is a limit.
    pub available: Option<u64>,
    /// Processes in the cgroup.
    pub processes: u64,
    /// Bytes written by the container outside its mounts.
    pub writable_bytes: u64,
    /// Inodes of the same.
    pub writable_inodes: u64,
}

/// A running container and its usage sample.
pub type ContainerUsage = (Arc<Container>, Usage);

impl Runtime {
    fn usage_of(&self, key: &str, cgroup_path: &str) -> Result<Usage> {
        let cg = self.cgroups.as_ref().ok_or_else(|| {
            RuntimeError::FailedPrecondition("no cgroups on this host: no stats".into())
        })?;
        let s = cg.stats(cgroup_path)?;
        let timestamp = crate::ids::now_ns();
        let nano_cores = {
            let mut last = self.cpu_samples.lock().expect("samples lock");
            let prev = last.insert(key.to_owned(), (timestamp, s.cpu_usage_ns));
            prev.and_then(|(t0, c0)| {
                let dt = (timestamp - t0) as u128;
                (dt > 0 && s.cpu_usage_ns >= c0)
                    .then(|| ((s.cpu_usage_ns - c0) as u128 * 1_000_000_000 / dt) as u64)
            })
        };
        Ok(Usage {
            timestamp,
            cpu_usage_ns: s.cpu_usage_ns,
            nano_cores,
            memory_usage: s.memory_usage,
            working_set: s.working_set,
            rss: s.rss,
            page_faults: s.page_faults,
            major_page_faults: s.major_page_faults,
            available: s.memory_limit.map(|l| l.saturating_sub(s.working_set)),
            processes: s.pids_current,
            writable_bytes: 0,
            writable_inodes: 0,
        })
    }

    /// Usage of one container.
    pub fn container_usage(&self, c: &Container) -> Result<Usage> {
        self.usage_of(&c.meta.id, &c.meta.cgroup_path)
    }

    /// Usage of a pod: the sum over its running containers, each sampled once, returned
    /// with the per-container samples (sampling a container twice in one call would make
    /// the second CPU rate cover microseconds).
    pub fn pod_usage(&self, pod: &Pod) -> Result<(Usage, Vec<ContainerUsage>)> {
        let mut total = Usage {
            timestamp: crate::ids::now_ns(),
            ..Default::default()
        };
        let mut nano = None;
        let mut each = Vec::new();
        for c in self.containers_of(&pod.meta.id) {
            if c.snapshot().phase != crate::container::ContainerPhase::Running {
                continue;
            }
            if let Ok(u) = self.container_usage(&c) {
                total.cpu_usage_ns += u.cpu_usage_ns;
                total.memory_usage += u.memory_usage;
                total.working_set += u.working_set;
                total.rss += u.rss;
                total.page_faults += u.page_faults;
                total.major_page_faults += u.major_page_faults;
                total.processes += u.processes;
                if let Some(n) = u.nano_cores {
                    nano = Some(nano.unwrap_or(0) + n);
                }
                each.push((c, u));
            }
        }
        total.nano_cores = nano;
        Ok((total, each))
    }

    /// The traffic counters of a pod's network namespace, read through one of its running
    /// runners (they live in it); `None` for node-network pods or with nothing running.
    pub fn pod_network(
        &self,
        pod: &Pod,
    ) -> Option<(i64, Vec<crate::network::stats::InterfaceUsage>)> {
        pod.meta.netns.as_ref()?;
        self.containers_of(&pod.meta.id).iter().find_map(|c| {
            let st = c.snapshot();
            let pid = st
                .pid
                .filter(|_| st.phase == crate::container::ContainerPhase::Running)?;
            let ifaces = crate::network::stats::of_process(pid).ok()?;
            // Read after the fact: still the runner we started, so still the pod's netns.
            super::process::same_process(pid, st.pid_start).then(|| (crate::ids::now_ns(), ifaces))
        })
    }

    /// UpdateContainerResources: applies the limits `res` gives in place and persists the
    /// limits then in force. A zero or empty field is "not given" and keeps its limit (the
    /// static CPU manager sends cpusets only; see [`crate::cgroups::Resources::updated_with`]).
    /// A cpuset the kernel refuses (bad syntax; `EINVAL`: outside the parent's; `ERANGE`:
    /// beyond the node's CPUs) is an invalid argument and changes nothing.
    pub async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        res: crate::cgroups::Resources,
    ) -> Result<()> {
        let c = self.container(id)?;
        let _op = c.op.lock().await;
        let invalid = |e: crate::cgroups::CgroupError| {
            RuntimeError::InvalidArgument(format!("container {}: {e}", c.meta.id))
        };
        crate::cgroups::check_cpusets(&res).map_err(invalid)?;
        if let Some(cg) = &self.cgroups {
            cg.update(&c.meta.cgroup_path, &res).map_err(|e| match e {
                crate::cgroups::CgroupError::Write {
                    ref path,
                    ref source,
                    ..
                } if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::ERANGE))
                    && path
                        .file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with("cpuset.")) =>
                {
                    invalid(e)
                }
                e => e.into(),
            })?;
        }
        let merged = c
            .resources
            .lock()
            .expect("resources lock")
            .updated_with(&res);
        let before = std::mem::replace(&mut *c.resources.lock().expect("resources lock"), merged);
        if let Err(e) = self.save_container(&c) {
            *c.resources.lock().expect("resources lock") = before;
            return Err(e);
        }
        Ok(())
    }
}
