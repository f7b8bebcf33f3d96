//! cgroup v1 and v2: the limits the kubelet asks for, written where the kernel enforces them,
//! plus membership (`cgroup.procs`), OOM detection and stats.
//!
//! Modelled on youki's `libcgroups`: [`Cgroups::detect`] probes an injectable root (default
//! [`DEFAULT_ROOT`]) and picks a backend — cgroup v2 when `root/cgroup.controllers` lists
//! controllers, otherwise the v1 hierarchies mounted under the root — behind one internal
//! `Backend` trait. Paths are cgroupfs-driver style (`/kubepods/burstable/pod<uid>/<id>`),
//! relative to every hierarchy root.
//!
//! Ownership: [`Cgroups::create`] records each directory it made; [`Cgroups::remove`] removes
//! only recorded directories (leaf first, then recorded ancestors that became empty), so a pod
//! cgroup made by the kubelet is never removed by us. The record lives in memory and in the
//! returned [`CgroupHandle`]; after a daemon restart pass the persisted handle to
//! [`Cgroups::adopt`] or [`Cgroups::remove_handle`].
//!
//! All methods do blocking file I/O (microseconds each; `remove` may wait up to
//! [`REMOVE_PATIENCE`] for exiting processes); call them from `spawn_blocking` in async code.
//!
//! Joining: [`Cgroups::membership`] says how a process enters a cgroup and
//! [`Membership::join_self`] does it, so the runner knows nothing of the hierarchy layout.
//!
//! The root may also be a plain directory tree (a test fixture): writes then create files, and
//! optional kernel files count as present.

mod error;
mod fs;
mod update;
mod usage;
mod v1;
mod v2;

pub use update::{MAX_CPUSET_ID, MAX_CPUSET_LEN, check_cpuset, check_cpusets};
pub use v2::{shares_to_weight, swap_max};

use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

pub use error::CgroupError;
use fs::Files;
pub use usage::{DeviceIo, MAX_DEVICES, Pressure, Psi, PsiData};

/// Result of cgroup operations.
pub type Result<T> = std::result::Result<T, CgroupError>;

/// Where cgroup filesystems are mounted on a normal Linux host.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// How long [`Cgroups::remove`] retries `rmdir` on `EBUSY`: a process killed a moment ago is
/// still listed until the kernel finishes tearing it down, which takes milliseconds, not
/// seconds.
pub const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// Resource limits, with CRI `LinuxContainerResources` semantics: `0` (or empty) means "leave
/// unset"; a negative quota/limit means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CFS period in microseconds (0 = unset).
    pub cpu_period: i64,
    /// CFS quota in microseconds per period (0 = unset, -1 = unlimited).
    pub cpu_quota: i64,
    /// Relative CPU weight in v1 shares (0 = unset; v2 converts to `cpu.weight`).
    pub cpu_shares: i64,
    /// Memory limit in bytes (0 = unset, negative = unlimited).
    pub memory_limit: i64,
    /// Memory + swap limit in bytes (0 = unset, -1 = unlimited swap).
    pub memory_swap_limit: i64,
    /// CPUs allowed, cpuset list syntax (`"0-3,6"`; empty = unset).
    pub cpuset_cpus: String,
    /// Memory nodes allowed (empty = unset).
    pub cpuset_mems: String,
    /// Maximum number of tasks (`None` = unset, `<= 0` = unlimited).
    pub pids_limit: Option<i64>,
    /// cgroup v2 files written verbatim after everything else (`"memory.high" → "1G"`).
    pub unified: HashMap<String, String>,
    /// Hugepage limits: (page size as the kernel names it, e.g. `"2MB"`, limit in bytes).
    pub hugepage_limits: Vec<(String, u64)>,
}

/// CFS throttling counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuThrottling {
    /// Enforcement periods that elapsed.
    pub nr_periods: u64,
    /// Periods in which the group was throttled.
    pub nr_throttled: u64,
    /// Total time throttled, nanoseconds.
    pub throttled_time_ns: u64,
}

/// A point-in-time usage sample of one cgroup. Counters a host lacks read as zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When the sample was taken, Unix nanoseconds.
    pub timestamp_ns: i64,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_usage_ns: u64,
    /// The user-mode part of it (v1 `cpuacct.usage_user`, v2 `user_usec`), nanoseconds.
    pub cpu_user_ns: u64,
    /// The kernel-mode part of it (v1 `cpuacct.usage_sys`, v2 `system_usec`), nanoseconds.
    pub cpu_system_ns: u64,
    /// CFS throttling.
    pub cpu_throttling: CpuThrottling,
    /// Memory in use including page cache, bytes.
    pub memory_usage: u64,
    /// `memory_usage - inactive_file` (what the kubelet evicts on), bytes.
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`), bytes.
    pub rss: u64,
    /// Page faults.
    pub page_faults: u64,
    /// Major page faults.
    pub major_page_faults: u64,
    /// Page cache (v1 `total_cache`, v2 `file`), bytes.
    pub cache: u64,
    /// Memory-mapped files (v1 `total_mapped_file`, v2 `file_mapped`), bytes.
    pub mapped_file: u64,
    /// Swap in use (v1 `total_swap`, v2 `memory.swap.current`), bytes.
    pub swap: u64,
    /// The highest memory usage seen (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`);
    /// `None` where the kernel does not keep it.
    pub max_usage: Option<u64>,
    /// How often usage hit the limit (v1 `memory.failcnt`; v2 has no such counter: `None`).
    pub failcnt: Option<u64>,
    /// The memory limit in force; `None` = unlimited.
    pub memory_limit: Option<u64>,
    /// How many times the OOM killer killed a task of this cgroup.
    pub oom_kills: u64,
    /// Tasks (threads) currently in the cgroup.
    pub pids_current: u64,
    /// Processes currently in the cgroup (lines of `cgroup.procs`).
    pub processes: u64,
    /// Block I/O per device; `None` without I/O accounting (no v1 `blkio` hierarchy, no v2
    /// `io` controller in the cgroup).
    pub io: Option<Vec<DeviceIo>>,
    /// Pressure stall information (cgroup v2 with PSI only).
    pub pressure: Pressure,
}

/// Which cgroup version a [`Cgroups`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    /// Legacy per-controller hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// What [`Cgroups::create`] made; persist it with the container to remove precisely after a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupHandle {
    /// The cgroupfs-style path as given to `create`.
    pub path: String,
    /// `cgroup.procs` files a process writes its PID to in order to join (one per hierarchy).
    pub procs_files: Vec<PathBuf>,
    /// The directories `create` made (ancestors before descendants).
    pub created: Vec<PathBuf>,
}

/// How a process joins one cgroup: its directory in every hierarchy and the version, which
/// decides the file written. Built by [`Cgroups::membership`] and handed to the runner in its
/// spec; the runner calls [`Membership::join_self`] and needs to know nothing of the layout
/// (youki's `add_task`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
}

impl Membership {
    /// Moves the calling process into the cgroup; call it while the process is still
    /// single-threaded (threads started later follow their creator).
    ///
    /// cgroup v1: `0` into each hierarchy's `tasks` file, which moves only the calling
    /// thread and so lets the kernel skip the global threadgroup lock, whose write side waits
    /// for an RCU grace period — that wait was most of the tail of StartContainer (10-25 ms at
    /// p90-p99); with one thread, the thread is the process. cgroup v2 has no `tasks` file:
    /// the PID goes to `cgroup.procs`.
    pub fn join_self(&self) -> Result<()> {
        let (file, value) = match self.version {
            CgroupVersion::V1 => ("tasks", "0".to_string()),
            CgroupVersion::V2 => ("cgroup.procs", std::process::id().to_string()),
        };
        for dir in &self.dirs {
            let path = dir.join(file);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()))
                .map_err(|source| CgroupError::Write {
                    path,
                    value: value.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// The backend interface each cgroup version implements.
trait Backend: std::fmt::Debug + Send + Sync {
    fn version(&self) -> CgroupVersion;
    fn files(&self) -> Files;
    /// The hierarchy roots whose subtrees a cgroup path lives in.
    fn roots(&self) -> Vec<PathBuf>;
    /// Whether the hierarchy at `root` only counts (sets no limit), so a container made
    /// before wasmcri joined it has no directory there and is still complete.
    fn accounting_only(&self, _root: &Path) -> bool {
        false
    }
    /// Prepare `parent` (an existing directory) to get a child cgroup.
    fn before_child(&self, parent: &Path) -> Result<()>;
    /// Initialise a directory just made under hierarchy `root`.
    fn after_mkdir(&self, root: &Path, dir: &Path) -> Result<()>;
    /// Write the limits.
    fn apply(&self, rel: &Path, res: &Resources) -> Result<()>;
    /// Read usage.
    fn stats(&self, rel: &Path) -> Result<Stats>;
    /// Read pressure stall information.
    fn pressure(&self, rel: &Path) -> Result<Pressure>;
    /// OOM kill counter.
    fn oom_kills(&self, rel: &Path) -> Result<u64>;
}

/// Enum dispatch over the two backends.
#[derive(Debug)]
enum Driver {
    V1(v1::V1),
    V2(v2::V2),
}

/// The cgroup manager for one host: detected backend plus the record of directories we made.
#[derive(Debug)]
pub struct Cgroups {
    driver: Driver,
    /// Directories this process created and has not removed yet. Also serialises structural
    /// changes (mkdir/rmdir of shared ancestors) so a create cannot race a remove of the same
    /// pod cgroup.
    created: Mutex<BTreeSet<PathBuf>>,
}

impl Cgroups {
    /// Probe `root` (normally [`DEFAULT_ROOT`]): v2 when `root/cgroup.controllers` lists
    /// controllers, else the v1 hierarchies (`cpu`, `cpuacct`, `cpuset`, `memory`, `pids`,
    /// `hugetlb`) found under it.
    pub fn detect(root: impl AsRef<Path>) -> Result<Cgroups> {
        let root = root.as_ref();
        let driver = match v2::V2::detect(root)? {
            Some(v2) => Driver::V2(v2),
            None => Driver::V1(v1::V1::detect(root)?),
        };
        Ok(Cgroups {
            driver,
            created: Mutex::new(BTreeSet::new()),
        })
    }

    fn b(&self) -> &dyn Backend {
        match &self.driver {
            Driver::V1(b) => b,
            Driver::V2(b) => b,
        }
    }

    /// The kubelet cgroup driver this implements (`cgroupfs`).
    pub fn driver_name(&self) -> &'static str {
        "cgroupfs"
    }

    /// cgroup v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        self.b().version()
    }

    /// The directories (one per hierarchy) of a cgroup path.
    pub fn dirs(&self, path: &str) -> Result<Vec<PathBuf>> {
        let rel = rel_path(path)?;
        Ok(self.b().roots().iter().map(|r| r.join(&rel)).collect())
    }

    /// Create the cgroup (and missing ancestors) in every hierarchy and apply `res`. On
    /// failure the directories made so far are removed again.
    pub fn create(&self, path: &str, res: &Resources) -> Result<CgroupHandle> {
        let rel = rel_path(path)?;
        let mut made = Vec::new();
        let mut reg = self.created.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .make_dirs(&rel, &mut made)
            .and_then(|()| self.b().apply(&rel, res));
        match result {
            Ok(()) => {
                reg.extend(made.iter().cloned());
                Ok(CgroupHandle {
                    path: path.to_string(),
                    procs_files: self.procs_files_rel(&rel),
                    created: made,
                })
            }
            Err(error) => {
                let files = self.b().files();
                let mut cleanup = None;
                let deadline = Instant::now() + Duration::from_millis(100);
                for d in made.iter().rev() {
                    if let Err(e) = files.rmdir(d, deadline) {
                        cleanup.get_or_insert(e);
                    }
                }
                Err(match cleanup {
                    None => error,
                    Some(c) => CgroupError::Cleanup {
                        error: Box::new(error),
                        cleanup: Box::new(c),
                    },
                })
            }
        }
    }

    fn make_dirs(&self, rel: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
        let b = self.b();
        let files = b.files();
        for root in b.roots() {
            let mut cur = root.clone();
            for comp in rel.components() {
                b.before_child(&cur)?;
                cur.push(comp);
                if cur.is_dir() {
                    continue;
                }
                match files.mkdir(&cur) {
                    Ok(()) => made.push(cur.clone()),
                    // Someone else made it between the check and the mkdir: not ours.
                    Err(CgroupError::Create { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                b.after_mkdir(&root, &cur)?;
            }
        }
        Ok(())
    }

    /// Re-apply limits to an existing cgroup (CRI `UpdateContainerResources`).
    pub fn update(&self, path: &str, res: &Resources) -> Result<()> {
        let rel = rel_path(path)?;
        self.check_exists(&rel)?;
        self.b().apply(&rel, res)
    }

    fn check_exists(&self, rel: &Path) -> Result<()> {
        let dirs: Vec<PathBuf> = self.b().roots().iter().map(|r| r.join(rel)).collect();
        if dirs.iter().any(|d| d.is_dir()) {
            Ok(())
        } else {
            Err(CgroupError::NotFound {
                path: dirs.into_iter().next().unwrap_or_default(),
            })
        }
    }

    fn procs_files_rel(&self, rel: &Path) -> Vec<PathBuf> {
        self.b()
            .roots()
            .iter()
            .map(|r| r.join(rel).join("cgroup.procs"))
            .collect()
    }

    /// The `cgroup.procs` files a process writes its PID to in order to join the cgroup, one
    /// per v1 hierarchy (one in total on v2).
    pub fn procs_files(&self, path: &str) -> Result<Vec<PathBuf>> {
        Ok(self.procs_files_rel(&rel_path(path)?))
    }

    /// How a process joins the cgroup at `path` (see [`Membership::join_self`]).
    ///
    /// An accounting-only hierarchy (v1 `blkio`) the container has no directory in is left
    /// out: containers created by a wasmcri that did not join it yet keep running and take
    /// execs after an upgrade. A missing directory in any hierarchy that sets limits stays in,
    /// so joining fails rather than run outside the limits.
    pub fn membership(&self, path: &str) -> Result<Membership> {
        let rel = rel_path(path)?;
        let dirs = self
            .b()
            .roots()
            .into_iter()
            .filter(|root| !self.b().accounting_only(root) || root.join(&rel).is_dir())
            .map(|root| root.join(&rel))
            .collect();
        Ok(Membership {
            version: self.version(),
            dirs,
        })
    }

    /// PIDs in the cgroup (union over hierarchies, sorted).
    pub fn pids(&self, path: &str) -> Result<Vec<i32>> {
        let rel = rel_path(path)?;
        self.check_exists(&rel)?;
        let mut all = BTreeSet::new();
        for f in self.procs_files_rel(&rel) {
            all.extend(fs::read_pids(&f)?);
        }
        Ok(all.into_iter().collect())
    }

    /// Send `signal` to every process listed in the cgroup (processes wasmcri started there);
    /// returns how many were signalled. Processes that exited meanwhile are skipped.
    pub fn kill_all(&self, path: &str, signal: Signal) -> Result<usize> {
        let mut n = 0;
        for pid in self.pids(path)? {
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
                Ok(()) => n += 1,
                Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        pid,
                        signal,
                        source,
                    });
                }
            }
        }
        Ok(n)
    }

    /// Whether the OOM killer killed a task of this cgroup.
    pub fn oom_killed(&self, path: &str) -> Result<bool> {
        let rel = rel_path(path)?;
        self.check_exists(&rel)?;
        Ok(self.b().oom_kills(&rel)? > 0)
    }

    /// A usage sample.
    pub fn stats(&self, path: &str) -> Result<Stats> {
        let rel = rel_path(path)?;
        self.check_exists(&rel)?;
        let mut s = self.b().stats(&rel)?;
        if let Some(f) = self.procs_files_rel(&rel).first() {
            s.processes = fs::read_pids(f)?.len() as u64;
        }
        s.timestamp_ns = crate::ids::now_ns();
        Ok(s)
    }

    /// Pressure stall information of any existing cgroup, ours or not (the pod-level figure
    /// of PodSandboxStats comes from the kubelet's pod cgroup). Empty on cgroup v1.
    pub fn pressure(&self, path: &str) -> Result<Pressure> {
        let rel = rel_path(path)?;
        self.check_exists(&rel)?;
        self.b().pressure(&rel)
    }

    /// Record a handle from before a restart as ours, so [`Cgroups::remove`] removes it.
    pub fn adopt(&self, handle: &CgroupHandle) {
        let mut reg = self.created.lock().unwrap_or_else(|p| p.into_inner());
        reg.extend(handle.created.iter().cloned());
    }

    /// [`Cgroups::adopt`] then [`Cgroups::remove`].
    pub fn remove_handle(&self, handle: &CgroupHandle) -> Result<()> {
        self.adopt(handle);
        self.remove(&handle.path)
    }

    /// Remove the cgroup if we created it, then the ancestors we created that are now empty.
    /// Directories we did not create are left alone; an already removed cgroup is success.
    /// Retries `EBUSY` for [`REMOVE_PATIENCE`] while processes exit; kills nothing.
    pub fn remove(&self, path: &str) -> Result<()> {
        let rel = rel_path(path)?;
        let b = self.b();
        let files = b.files();
        let roots = b.roots();
        let mut first_err = None;
        // One deadline for all hierarchies: the same processes keep every copy busy.
        let deadline = Instant::now() + REMOVE_PATIENCE;
        // The leaf, outside the lock: waiting for exiting processes must not block others.
        let leafs: Vec<PathBuf> = {
            let reg = self.created.lock().unwrap_or_else(|p| p.into_inner());
            roots
                .iter()
                .map(|r| r.join(&rel))
                .filter(|d| reg.contains(d))
                .collect()
        };
        for d in &leafs {
            match files.rmdir(d, deadline) {
                Ok(()) => {
                    let mut reg = self.created.lock().unwrap_or_else(|p| p.into_inner());
                    reg.remove(d);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let mut reg = self.created.lock().unwrap_or_else(|p| p.into_inner());
        for anc in rel.ancestors().skip(1) {
            if anc.as_os_str().is_empty() {
                break;
            }
            for r in &roots {
                let d = r.join(anc);
                if !reg.contains(&d) {
                    continue;
                }
                if !d.exists() {
                    reg.remove(&d);
                    continue;
                }
                if has_subdirs(&d) {
                    continue;
                }
                files.rmdir(&d, Instant::now() + Duration::from_millis(200))?;
                reg.remove(&d);
            }
        }
        Ok(())
    }
}

fn has_subdirs(d: &Path) -> bool {
    std::fs::read_dir(d)
        .map(|it| {
            it.flatten()
                .any(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        })
        .unwrap_or(false)
}

/// Validate a cgroupfs-style path (`/kubepods/pod1/abc`) into a clean relative path.
fn rel_path(path: &str) -> Result<PathBuf> {
    let bad = |reason| CgroupError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => return Err(bad("contains `..`")),
            Component::Prefix(_) => return Err(bad("has a prefix")),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad("is the root cgroup"));
    }
    Ok(rel)
}

#[cfg(test)]
mod tests;
