//! Resource usage from cgroups (for `kubectl top`, the summary API and the HPA) and
//! in-place resource updates.

use std::sync::Arc;

use super::{Container, Pod, Result, Runtime, RuntimeError};
use crate::cgroups::{CgroupError, Cgroups, Pressure, Stats};
use crate::container::ContainerPhase;
use crate::network::stats::InterfaceUsage;

/// One usage sample, in domain terms: the cgroup's counters plus what is derived from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Unix nanoseconds of the sample.
    pub timestamp: i64,
    /// The cgroup's counters (for a pod: the sum over its running containers, with no I/O
    /// devices and the pod cgroup's pressure).
    pub cgroup: Stats,
    /// CPU rate since the previous sample, in nanocores (None on the first sample).
    pub nano_cores: Option<u64>,
    /// Limit minus working set, when there is a limit.
    pub available: Option<u64>,
    /// Bytes written by the container outside its mounts.
    pub writable_bytes: u64,
    /// Inodes of the same.
    pub writable_inodes: u64,
}

/// A running container and its usage sample.
pub type ContainerUsage = (Arc<Container>, Usage);

/// What the metrics RPCs report of one ready pod: a raw cgroup sample per running container
/// and the pod's interface counters.
#[derive(Debug)]
pub struct PodSample {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its running containers, each with its sample.
    pub containers: Vec<(Arc<Container>, Stats)>,
    /// Traffic of the pod's network namespace (`None` for node-network pods or with nothing
    /// running to read it through).
    pub network: Option<Vec<InterfaceUsage>>,
}

impl Runtime {
    /// Runs `f` on the host's cgroups on the blocking pool, as the cgroups module asks of
    /// async code (its file I/O takes microseconds, but a removal waits up to
    /// [`crate::cgroups::REMOVE_PATIENCE`] for exiting processes). `None` without cgroups.
    pub(crate) async fn cgroups_blocking<T, F>(&self, f: F) -> Result<Option<T>>
    where
        F: FnOnce(&Cgroups) -> Result<T, CgroupError> + Send + 'static,
        T: Send + 'static,
    {
        let Some(cg) = self.cgroups.clone() else {
            return Ok(None);
        };
        match tokio::task::spawn_blocking(move || f(&cg)).await {
            Ok(r) => Ok(Some(r?)),
            Err(e) => Err(RuntimeError::task("cgroup operation", "the node's cgroups")(e)),
        }
    }

    fn cgroups_or_fail(&self) -> Result<&Cgroups> {
        self.cgroups.as_deref().ok_or(RuntimeError::NoCgroups)
    }

    /// The raw cgroup sample of one container. Blocking file I/O.
    pub fn container_sample(&self, c: &Container) -> Result<Stats> {
        Ok(self.cgroups_or_fail()?.stats(&c.meta.cgroup_path)?)
    }

    /// Usage of one container; its CPU rate covers the time since the previous call for the
    /// same container. Blocking file I/O.
    pub fn container_usage(&self, c: &Container) -> Result<Usage> {
        let s = self.container_sample(c)?;
        let timestamp = crate::ids::now_ns();
        let nano_cores = {
            let mut last = self.cpu_samples.lock().expect("samples lock");
            let prev = last.insert(c.meta.id.clone(), (timestamp, s.cpu_usage_ns));
            prev.and_then(|(t0, c0)| {
                let dt = (timestamp - t0) as u128;
                (dt > 0 && s.cpu_usage_ns >= c0)
                    .then(|| ((s.cpu_usage_ns - c0) as u128 * 1_000_000_000 / dt) as u64)
            })
        };
        Ok(Usage {
            timestamp,
            available: s.memory_limit.map(|l| l.saturating_sub(s.working_set)),
            cgroup: s,
            nano_cores,
            writable_bytes: 0,
            writable_inodes: 0,
        })
    }

    /// Running containers of a pod.
    fn running_of(&self, pod_id: &str) -> Vec<Arc<Container>> {
        let mut all = self.containers_of(pod_id);
        all.retain(|c| c.snapshot().phase() == ContainerPhase::Running);
        all
    }

    /// Usage of a pod: the sum over its running containers, each sampled once, returned
    /// with the per-container samples (sampling a container twice in one call would make
    /// the second CPU rate cover microseconds). Its pressure is the pod cgroup's, which no
    /// sum of the containers' can give. Blocking file I/O.
    pub fn pod_usage(&self, pod: &Pod) -> Result<(Usage, Vec<ContainerUsage>)> {
        let mut total = Usage {
            timestamp: crate::ids::now_ns(),
            ..Default::default()
        };
        let mut nano = None;
        let mut each = Vec::new();
        for c in self.running_of(&pod.meta.id) {
            if let Ok(u) = self.container_usage(&c) {
                let (t, s) = (&mut total.cgroup, &u.cgroup);
                t.cpu_usage_ns += s.cpu_usage_ns;
                t.memory_usage += s.memory_usage;
                t.working_set += s.working_set;
                t.rss += s.rss;
                t.page_faults += s.page_faults;
                t.major_page_faults += s.major_page_faults;
                t.pids_current += s.pids_current;
                if s.io.is_some() {
                    t.io.get_or_insert_with(Vec::new);
                }
                if let Some(n) = u.nano_cores {
                    nano = Some(nano.unwrap_or(0) + n);
                }
                each.push((c, u));
            }
        }
        total.nano_cores = nano;
        total.cgroup.pressure = self.pod_pressure(pod);
        Ok((total, each))
    }

    /// Pressure of the pod's cgroup (the kubelet's `cgroup_parent`), where the host has PSI
    /// and the cgroup exists; empty otherwise.
    fn pod_pressure(&self, pod: &Pod) -> Pressure {
        let parent = &pod.meta.spec.cgroup_parent;
        match &self.cgroups {
            Some(cg) if !parent.is_empty() => cg.pressure(parent).unwrap_or_default(),
            _ => Pressure::default(),
        }
    }

    /// Raw samples of every ready pod and its running containers, for the metrics RPCs. It
    /// leaves the CPU-rate baselines of [`Runtime::container_usage`] alone, so a metrics
    /// scrape never shortens the window of the kubelet's next stats call. A container whose
    /// cgroup cannot be read (it exited a moment ago) is left out. Blocking file I/O.
    pub fn pod_samples(&self) -> Vec<PodSample> {
        self.pods()
            .into_iter()
            .filter(|p| super::pod_ready(&p.state()))
            .map(|pod| PodSample {
                containers: self
                    .running_of(&pod.meta.id)
                    .into_iter()
                    .filter_map(|c| Some((c.clone(), self.container_sample(&c).ok()?)))
                    .collect(),
                network: self.pod_network(&pod).map(|(_, ifaces)| ifaces),
                pod,
            })
            .collect()
    }

    /// The traffic counters of a pod's network namespace, read through one of its running
    /// runners (they live in it); `None` for node-network pods or with nothing running.
    pub fn pod_network(&self, pod: &Pod) -> Option<(i64, Vec<InterfaceUsage>)> {
        pod.meta.netns.as_ref()?;
        self.containers_of(&pod.meta.id).iter().find_map(|c| {
            let st = c.snapshot();
            let pid = st.pid().filter(|_| st.phase() == ContainerPhase::Running)?;
            let ifaces = crate::network::stats::of_process(pid).ok()?;
            // Read after the fact: still the runner we started, so still the pod's netns.
            super::process::same_process(pid, st.pid_start())
                .then(|| (crate::ids::now_ns(), ifaces))
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
        let (path, limits) = (c.meta.cgroup_path.clone(), res.clone());
        let written = self
            .cgroups_blocking(move |cg| Ok(cg.update(&path, &limits)))
            .await?;
        if let Some(Err(e)) = written {
            return Err(match e {
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
            });
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
