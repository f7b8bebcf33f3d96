//! cgroup v2: one unified hierarchy; controllers are enabled top-down through
//! `cgroup.subtree_control`.

use std::path::{Path, PathBuf};

use super::fs::{self, Files};
use super::update;
use super::usage::{parse_io_stat, parse_pressure};
use super::{
    Backend, CgroupError, CgroupVersion, CpuThrottling, Pressure, Psi, Resources, Result, Stats,
};

/// Controllers enabled for descendants when the root offers them.
const WANTED: [&str; 6] = ["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

/// The kernel's default CFS period (µs), used when only a quota is given.
const DEFAULT_CPU_PERIOD: i64 = 100_000;

/// The v2 backend.
#[derive(Debug)]
pub(super) struct V2 {
    root: PathBuf,
    /// Controllers listed in `root/cgroup.controllers`.
    controllers: Vec<String>,
    files: Files,
}

/// Convert CRI/v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000) with the formula
/// the kubelet and runc use, so both versions split CPU the same way. 0 stays "unset".
pub fn shares_to_weight(shares: i64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262_144) as u64;
    1 + ((s - 2) * 9999) / 262_142
}

/// v2 `memory.swap.max` from CRI's memory+swap total, as runc converts it: swap alone is
/// `memory_swap - memory`; `-1` is unlimited; `0` leaves it unset.
pub fn swap_max(memory: i64, memory_swap: i64) -> Result<Option<String>> {
    let invalid = |what: String| Err(CgroupError::Invalid { what });
    match memory_swap {
        0 => Ok(None),
        -1 => Ok(Some("max".into())),
        s if s < 0 => invalid(format!("memory+swap limit {s} is negative")),
        s => {
            if memory <= 0 {
                return invalid("a memory+swap limit needs a memory limit".into());
            }
            if s < memory {
                return invalid(format!(
                    "memory+swap limit {s} is below the memory limit {memory}"
                ));
            }
            Ok(Some((s - memory).to_string()))
        }
    }
}

/// v2 `cpu.max` from quota/period; `current_quota` is kept when only the period changes.
fn cpu_max(quota: i64, period: i64, current_quota: Option<&str>) -> Option<String> {
    if quota == 0 && period == 0 {
        return None;
    }
    let period = if period > 0 {
        period
    } else {
        DEFAULT_CPU_PERIOD
    };
    let q = match quota {
        q if q > 0 => q.to_string(),
        q if q < 0 => "max".to_string(),
        _ => current_quota.unwrap_or("max").to_string(),
    };
    Some(format!("{q} {period}"))
}

impl V2 {
    /// `Some` when `root/cgroup.controllers` exists and lists at least one controller.
    pub fn detect(root: &Path) -> Result<Option<V2>> {
        let Some(list) = fs::read_opt(&root.join("cgroup.controllers"))? else {
            return Ok(None);
        };
        let controllers: Vec<String> = list.split_whitespace().map(String::from).collect();
        if controllers.is_empty() {
            return Ok(None);
        }
        Ok(Some(V2 {
            root: root.to_path_buf(),
            files: Files {
                plain: !fs::is_cgroupfs(root),
            },
            controllers,
        }))
    }

    fn need(&self, controller: &str, what: &str) -> Result<()> {
        if self.controllers.iter().any(|c| c == controller) {
            Ok(())
        } else {
            Err(CgroupError::Unsupported {
                what: format!(
                    "{what}: cgroup v2 controller {controller:?} is not available in {}",
                    self.root.join("cgroup.controllers").display()
                ),
            })
        }
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<()> {
        self.files.write(&dir.join(file), value)
    }
}

impl Backend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn files(&self) -> Files {
        self.files
    }

    fn roots(&self) -> Vec<PathBuf> {
        vec![self.root.clone()]
    }

    fn before_child(&self, parent: &Path) -> Result<()> {
        let available: Vec<String> = if self.files.plain {
            self.controllers.clone()
        } else {
            fs::read(&parent.join("cgroup.controllers"))?
                .split_whitespace()
                .map(String::from)
                .collect()
        };
        let enabled: Vec<String> = fs::read_opt(&parent.join("cgroup.subtree_control"))?
            .unwrap_or_default()
            .split_whitespace()
            .map(|c| c.trim_start_matches('+').to_string())
            .collect();
        let missing: Vec<String> = WANTED
            .iter()
            .filter(|c| available.iter().any(|a| a == *c) && !enabled.iter().any(|e| e == *c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut all: Vec<String> = enabled.iter().map(|e| format!("+{e}")).collect();
        // The kernel adds to what is enabled; a fixture file is overwritten, so write the
        // whole set there.
        if !self.files.plain {
            all.clear();
        }
        all.extend(missing);
        self.write(parent, "cgroup.subtree_control", &all.join(" "))
    }

    fn after_mkdir(&self, _root: &Path, _dir: &Path) -> Result<()> {
        Ok(())
    }

    fn apply(&self, rel: &Path, res: &Resources) -> Result<()> {
        let dir = self.root.join(rel);
        if !res.cpuset_cpus.is_empty() || !res.cpuset_mems.is_empty() {
            self.need("cpuset", "cpuset")?;
            update::write_cpuset(self.files, &dir, &res.cpuset_cpus, &res.cpuset_mems)?;
        }
        if res.cpu_shares != 0 {
            self.need("cpu", "cpu shares")?;
            let w = shares_to_weight(res.cpu_shares);
            self.write(&dir, "cpu.weight", &w.to_string())?;
        }
        if res.cpu_quota != 0 || res.cpu_period != 0 {
            self.need("cpu", "cpu quota/period")?;
            let current = fs::read_opt(&dir.join("cpu.max"))?;
            let cur_q = current.as_deref().and_then(|s| s.split_whitespace().next());
            if let Some(v) = cpu_max(res.cpu_quota, res.cpu_period, cur_q) {
                self.write(&dir, "cpu.max", &v)?;
            }
        }
        let swap = swap_max(res.memory_limit, res.memory_swap_limit)?;
        if res.memory_limit != 0 || swap.is_some() {
            self.need("memory", "memory limit")?;
        }
        // In v2 the two limits are independent, so order does not matter; memory.swap.max
        // is absent without swap accounting, and the swap limit is then skipped.
        if res.memory_limit != 0 {
            let v = if res.memory_limit < 0 {
                "max".to_string()
            } else {
                res.memory_limit.to_string()
            };
            self.write(&dir, "memory.max", &v)?;
        }
        if let Some(v) = swap
            && self.files.has(&dir.join("memory.swap.max"))
        {
            self.write(&dir, "memory.swap.max", &v)?;
        }
        if let Some(limit) = res.pids_limit {
            self.need("pids", "pids limit")?;
            let v = if limit <= 0 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            self.write(&dir, "pids.max", &v)?;
        }
        for (size, limit) in &res.hugepage_limits {
            // A zero limit without the controller: see the v1 backend's `apply_hugetlb`.
            if *limit == 0 && !self.controllers.iter().any(|c| c == "hugetlb") {
                continue;
            }
            self.need("hugetlb", &format!("hugepage limit {size}"))?;
            let f = dir.join(format!("hugetlb.{size}.max"));
            if !self.files.has(&f) {
                return Err(CgroupError::Unsupported {
                    what: format!("hugepage size {size:?}: no {}", f.display()),
                });
            }
            self.files.write(&f, &limit.to_string())?;
        }
        // Verbatim keys last, so they override the typed fields, as runc orders them.
        let mut unified: Vec<_> = res.unified.iter().collect();
        unified.sort();
        for (k, v) in unified {
            if k.is_empty() || k.contains('/') || k.starts_with('.') || k.starts_with("cgroup.") {
                return Err(CgroupError::Invalid {
                    what: format!("unified key {k:?} is not a controller file name"),
                });
            }
            let f = dir.join(k);
            if !self.files.has(&f) {
                return Err(CgroupError::Unsupported {
                    what: format!("unified key {k:?}: no {}", f.display()),
                });
            }
            self.files.write(&f, v)?;
        }
        Ok(())
    }

    fn stats(&self, rel: &Path) -> Result<Stats> {
        let dir = self.root.join(rel);
        let mut s = Stats::default();
        let cpu = fs::read_keyed(&dir.join("cpu.stat"))?;
        let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
        s.cpu_usage_ns = c("usage_usec").saturating_mul(1000);
        s.cpu_user_ns = c("user_usec").saturating_mul(1000);
        s.cpu_system_ns = c("system_usec").saturating_mul(1000);
        s.cpu_throttling = CpuThrottling {
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_time_ns: c("throttled_usec").saturating_mul(1000),
        };
        s.memory_usage = fs::read_u64(&dir.join("memory.current"))?.unwrap_or(0);
        let mem = fs::read_keyed(&dir.join("memory.stat"))?;
        let m = |k: &str| mem.get(k).copied().unwrap_or(0);
        s.working_set = s.memory_usage.saturating_sub(m("inactive_file"));
        s.rss = m("anon");
        s.page_faults = m("pgfault");
        s.major_page_faults = m("pgmajfault");
        s.cache = m("file");
        s.mapped_file = m("file_mapped");
        s.swap = fs::read_u64(&dir.join("memory.swap.current"))?.unwrap_or(0);
        s.max_usage = fs::read_u64(&dir.join("memory.peak"))?;
        s.memory_limit = fs::read_u64(&dir.join("memory.max"))?;
        s.oom_kills = self.oom_kills(rel)?;
        s.pids_current = fs::read_u64(&dir.join("pids.current"))?.unwrap_or(0);
        // io.stat exists where the io controller is enabled for the cgroup.
        s.io = fs::read_opt(&dir.join("io.stat"))?.map(|t| parse_io_stat(&t));
        s.pressure = self.pressure(rel)?;
        Ok(s)
    }

    fn pressure(&self, rel: &Path) -> Result<Pressure> {
        let dir = self.root.join(rel);
        let one = |file: &str| -> Result<Option<Psi>> {
            let path = dir.join(file);
            match fs::read_opt(&path) {
                Ok(Some(text)) => parse_pressure(&path, &text).map(Some),
                Ok(None) => Ok(None),
                // A kernel built with PSI but booted with psi=0 lists the files and refuses
                // to read them.
                Err(CgroupError::Read { source, .. })
                    if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        Ok(Pressure {
            cpu: one("cpu.pressure")?,
            memory: one("memory.pressure")?,
            io: one("io.pressure")?,
        })
    }

    fn oom_kills(&self, rel: &Path) -> Result<u64> {
        Ok(fs::read_keyed(&self.root.join(rel).join("memory.events"))?
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }
}
