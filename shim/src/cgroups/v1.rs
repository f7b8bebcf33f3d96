//! cgroup v1: one hierarchy per controller (or co-mounted group, e.g. `cpu,cpuacct`).

use std::path::{Path, PathBuf};

use super::fs::{self, Files};
use super::update;
use super::usage::parse_blkio;
use super::{
    Backend, CgroupError, CgroupVersion, CpuThrottling, Pressure, Resources, Result, Stats,
};

/// Controllers whose hierarchies a container joins. `blkio` sets no limit here but is
/// joined so that block I/O is counted per container. Others (devices, freezer, the systemd
/// named hierarchy) are left to the process's inherited membership.
const MANAGED: [&str; 7] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "hugetlb", "blkio",
];

/// The kernel's "no limit" for v1 memory is `PAGE_COUNTER_MAX * PAGE_SIZE`, just below
/// `i64::MAX`; anything this large is unlimited.
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

#[derive(Debug)]
struct Hierarchy {
    controllers: Vec<&'static str>,
    path: PathBuf,
}

/// The v1 backend.
#[derive(Debug)]
pub(super) struct V1 {
    hierarchies: Vec<Hierarchy>,
    files: Files,
}

impl V1 {
    /// Find the managed hierarchies under `root` (`root/<controller>`, symlinks to co-mounted
    /// hierarchies followed and merged).
    pub fn detect(root: &Path) -> Result<V1> {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for c in MANAGED {
            let p = root.join(c);
            if !p.join("cgroup.procs").exists() {
                continue;
            }
            let path = std::fs::canonicalize(&p).unwrap_or(p);
            match hierarchies.iter_mut().find(|h| h.path == path) {
                Some(h) => h.controllers.push(c),
                None => hierarchies.push(Hierarchy {
                    controllers: vec![c],
                    path,
                }),
            }
        }
        let Some(first) = hierarchies.first() else {
            return Err(CgroupError::NoHierarchy {
                root: root.to_path_buf(),
            });
        };
        let plain = !fs::is_cgroupfs(&first.path);
        Ok(V1 {
            hierarchies,
            files: Files { plain },
        })
    }

    fn hierarchy(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&controller))
            .map(|h| h.path.as_path())
    }

    /// The directory of `rel` in the controller's hierarchy, or `Unsupported` naming `what`.
    fn need(&self, controller: &str, rel: &Path, what: &str) -> Result<PathBuf> {
        self.hierarchy(controller)
            .map(|h| h.join(rel))
            .ok_or_else(|| CgroupError::Unsupported {
                what: format!("{what}: cgroup v1 controller {controller:?} is not mounted"),
            })
    }

    /// Write `(file, value)` pairs in order; if the first fails with `EINVAL` (the kernel
    /// checks each value against the other, e.g. period vs quota or memory vs memory+swap),
    /// write them in the reverse order instead.
    fn write_pair(&self, dir: &Path, pairs: &[(&str, String)]) -> Result<()> {
        let write_all = |order: &mut dyn Iterator<Item = &(&str, String)>| -> Result<()> {
            for (f, v) in order {
                self.files.write(&dir.join(f), v)?;
            }
            Ok(())
        };
        match write_all(&mut pairs.iter()) {
            Err(CgroupError::Write { source, .. })
                if pairs.len() > 1 && source.raw_os_error() == Some(libc::EINVAL) =>
            {
                write_all(&mut pairs.iter().rev())
            }
            other => other,
        }
    }

    fn apply_cpu(&self, rel: &Path, res: &Resources) -> Result<()> {
        let mut cfs = Vec::new();
        if res.cpu_period != 0 {
            cfs.push(("cpu.cfs_period_us", res.cpu_period.to_string()));
        }
        if res.cpu_quota != 0 {
            let q = if res.cpu_quota < 0 { -1 } else { res.cpu_quota };
            cfs.push(("cpu.cfs_quota_us", q.to_string()));
        }
        if res.cpu_shares == 0 && cfs.is_empty() {
            return Ok(());
        }
        let dir = self.need("cpu", rel, "cpu shares/quota")?;
        if res.cpu_shares != 0 {
            let shares = res.cpu_shares.clamp(2, 262_144);
            self.files
                .write(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        self.write_pair(&dir, &cfs)
    }

    fn apply_cpuset(&self, rel: &Path, res: &Resources) -> Result<()> {
        if res.cpuset_cpus.is_empty() && res.cpuset_mems.is_empty() {
            return Ok(());
        }
        // The cgroup's own cpus/mems were inherited from its parent when it was made
        // (`after_mkdir`), so it can take tasks before and after this write.
        let dir = self.need("cpuset", rel, "cpuset")?;
        update::write_cpuset(self.files, &dir, &res.cpuset_cpus, &res.cpuset_mems)
    }

    fn apply_memory(&self, rel: &Path, res: &Resources) -> Result<()> {
        if res.memory_limit == 0 && res.memory_swap_limit == 0 {
            return Ok(());
        }
        if res.memory_swap_limit > 0
            && res.memory_limit > 0
            && res.memory_swap_limit < res.memory_limit
        {
            return Err(CgroupError::Invalid {
                what: format!(
                    "memory+swap limit {} is below the memory limit {}",
                    res.memory_swap_limit, res.memory_limit
                ),
            });
        }
        let dir = self.need("memory", rel, "memory limit")?;
        let mut pairs = Vec::new();
        if res.memory_limit != 0 {
            let v = if res.memory_limit < 0 {
                -1
            } else {
                res.memory_limit
            };
            pairs.push(("memory.limit_in_bytes", v.to_string()));
        }
        // Without swap accounting the kernel has no memsw files; the swap limit then cannot
        // be expressed and swap use is bounded by the memory limit alone.
        if res.memory_swap_limit != 0 && self.files.has(&dir.join("memory.memsw.limit_in_bytes")) {
            let v = if res.memory_swap_limit < 0 {
                -1
            } else {
                res.memory_swap_limit
            };
            pairs.push(("memory.memsw.limit_in_bytes", v.to_string()));
        }
        self.write_pair(&dir, &pairs)
    }

    fn apply_pids(&self, rel: &Path, res: &Resources) -> Result<()> {
        let Some(limit) = res.pids_limit else {
            return Ok(());
        };
        let dir = self.need("pids", rel, "pids limit")?;
        let v = if limit <= 0 {
            "max".to_string()
        } else {
            limit.to_string()
        };
        self.files.write(&dir.join("pids.max"), &v)
    }

    fn apply_hugetlb(&self, rel: &Path, res: &Resources) -> Result<()> {
        for (size, limit) in &res.hugepage_limits {
            // The kubelet sends a zero limit for every page size the kernel knows, hugetlb
            // controller or not. Without the controller no process of the cgroup can be
            // charged hugetlb pages anyway, and a guest cannot ask for any: skip, as
            // containerd does.
            if *limit == 0 && self.hierarchy("hugetlb").is_none() {
                continue;
            }
            let dir = self.need("hugetlb", rel, &format!("hugepage limit {size}"))?;
            let f = dir.join(format!("hugetlb.{size}.limit_in_bytes"));
            if !self.files.has(&f) {
                return Err(CgroupError::Unsupported {
                    what: format!("hugepage size {size:?}: no {}", f.display()),
                });
            }
            self.files.write(&f, &limit.to_string())?;
        }
        Ok(())
    }
}

impl Backend for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn files(&self) -> Files {
        self.files
    }

    fn roots(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.path.clone()).collect()
    }

    fn accounting_only(&self, root: &Path) -> bool {
        self.hierarchies
            .iter()
            .find(|h| h.path == root)
            .is_some_and(|h| h.controllers.iter().all(|c| *c == "blkio"))
    }

    fn before_child(&self, _parent: &Path) -> Result<()> {
        Ok(())
    }

    fn after_mkdir(&self, root: &Path, dir: &Path) -> Result<()> {
        // A new cpuset starts with empty cpus/mems and no task can join it until they are
        // filled; inherit the parent's, as runc does.
        if self.hierarchy("cpuset") != Some(root) {
            return Ok(());
        }
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let current = fs::read_opt(&dir.join(f))?.unwrap_or_default();
            if current.trim().is_empty() {
                let from_parent = fs::read(&parent.join(f))?;
                if !from_parent.trim().is_empty() {
                    self.files.write(&dir.join(f), from_parent.trim())?;
                }
            }
        }
        Ok(())
    }

    fn apply(&self, rel: &Path, res: &Resources) -> Result<()> {
        if !res.unified.is_empty() {
            let mut keys: Vec<_> = res.unified.keys().cloned().collect();
            keys.sort();
            return Err(CgroupError::Unsupported {
                what: format!("unified resources {keys:?} need cgroup v2; this host runs v1"),
            });
        }
        // cpuset first: it gates which CPUs the other limits apply to.
        self.apply_cpuset(rel, res)?;
        self.apply_cpu(rel, res)?;
        self.apply_memory(rel, res)?;
        self.apply_pids(rel, res)?;
        self.apply_hugetlb(rel, res)
    }

    fn stats(&self, rel: &Path) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(h) = self.hierarchy("cpuacct") {
            let dir = h.join(rel);
            s.cpu_usage_ns = fs::read_u64(&dir.join("cpuacct.usage"))?.unwrap_or(0);
            s.cpu_user_ns = fs::read_u64(&dir.join("cpuacct.usage_user"))?.unwrap_or(0);
            s.cpu_system_ns = fs::read_u64(&dir.join("cpuacct.usage_sys"))?.unwrap_or(0);
        }
        if let Some(h) = self.hierarchy("cpu") {
            let st = fs::read_keyed(&h.join(rel).join("cpu.stat"))?;
            s.cpu_throttling = CpuThrottling {
                nr_periods: st.get("nr_periods").copied().unwrap_or(0),
                nr_throttled: st.get("nr_throttled").copied().unwrap_or(0),
                throttled_time_ns: st.get("throttled_time").copied().unwrap_or(0),
            };
        }
        if let Some(h) = self.hierarchy("memory") {
            let dir = h.join(rel);
            s.memory_usage = fs::read_u64(&dir.join("memory.usage_in_bytes"))?.unwrap_or(0);
            let st = fs::read_keyed(&dir.join("memory.stat"))?;
            let get = |k: &str| st.get(k).copied().unwrap_or(0);
            let inactive = get("total_inactive_file");
            s.working_set = s.memory_usage.saturating_sub(inactive);
            s.rss = get("total_rss");
            s.page_faults = get("total_pgfault");
            s.major_page_faults = get("total_pgmajfault");
            s.cache = get("total_cache");
            s.mapped_file = get("total_mapped_file");
            s.swap = get("total_swap");
            s.max_usage = fs::read_u64(&dir.join("memory.max_usage_in_bytes"))?;
            s.failcnt = fs::read_u64(&dir.join("memory.failcnt"))?;
            s.memory_limit = fs::read_u64(&dir.join("memory.limit_in_bytes"))?
                .filter(|&l| l < UNLIMITED_THRESHOLD);
            s.oom_kills = fs::read_keyed(&dir.join("memory.oom_control"))?
                .get("oom_kill")
                .copied()
                .unwrap_or(0);
        }
        if let Some(h) = self.hierarchy("pids") {
            s.pids_current = fs::read_u64(&h.join(rel).join("pids.current"))?.unwrap_or(0);
        }
        if let Some(h) = self.hierarchy("blkio") {
            let dir = h.join(rel);
            let bytes = fs::read_opt(&dir.join("blkio.throttle.io_service_bytes_recursive"))?;
            let ops = fs::read_opt(&dir.join("blkio.throttle.io_serviced_recursive"))?;
            if bytes.is_some() || ops.is_some() {
                s.io = Some(parse_blkio(
                    bytes.as_deref().unwrap_or(""),
                    ops.as_deref().unwrap_or(""),
                ));
            }
        }
        Ok(s)
    }

    fn pressure(&self, _rel: &Path) -> Result<Pressure> {
        // PSI is a cgroup v2 interface.
        Ok(Pressure::default())
    }

    fn oom_kills(&self, rel: &Path) -> Result<u64> {
        let dir = self.need("memory", rel, "OOM detection")?;
        Ok(fs::read_keyed(&dir.join("memory.oom_control"))?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }
}
