//! What an in-place update (CRI `UpdateContainerResources`) changes, and the cpuset writes
//! both backends share.
//!
//! The kubelet's static CPU manager sends updates that carry only `cpuset_cpus` and
//! `cpuset_mems`; in CRI resources a zero or empty field means "not given", so such an update
//! must keep every other limit. [`Resources::updated_with`] computes the limits in force after
//! an update (what ContainerStatus then reports), as containerd merges an update into the
//! container's spec.
//!
//! cpuset lists are checked ([`check_cpuset`]) before anything is written, so a malformed
//! list is refused with nothing changed; [`write_cpuset`] puts the old CPU list back when the
//! kernel then refuses the memory-node list, so a cpuset update applies whole or not at all.

use std::path::Path;

use super::fs::{self, Files};
use super::{CgroupError, Resources, Result};

/// Largest CPU or memory-node number accepted: far above any kernel's `NR_CPUS` (8192 on the
/// largest distribution configs) and `MAX_NUMNODES`, small enough that a range cannot ask the
/// kernel for an absurd bitmap.
pub const MAX_CPUSET_ID: u32 = 1 << 16;

/// Longest cpuset list accepted, in bytes.
pub const MAX_CPUSET_LEN: usize = 4096;

/// Checks a cpuset list in the kernel's list syntax (`"0-3,6,8-9"`; empty = not given):
/// comma-separated numbers or ascending `a-b` ranges, each at most [`MAX_CPUSET_ID`].
/// `what` names the field in the error (`"cpuset_cpus"`).
pub fn check_cpuset(what: &str, list: &str) -> Result<()> {
    let invalid = |why: String| {
        Err(CgroupError::Invalid {
            what: format!("{what} {list:?}: {why}"),
        })
    };
    if list.is_empty() {
        return Ok(());
    }
    if list.len() > MAX_CPUSET_LEN {
        return invalid(format!("longer than {MAX_CPUSET_LEN} bytes"));
    }
    let number = |s: &str| -> Option<u32> {
        // Digits only: `parse` would also take a sign.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u32>().ok().filter(|n| *n <= MAX_CPUSET_ID)
    };
    for part in list.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (number(a), number(b)),
            None => (number(part), number(part)),
        };
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => {}
            (Some(_), Some(_)) => return invalid(format!("range {part:?} is descending")),
            _ => {
                return invalid(format!(
                    "{part:?} is not a number or range of numbers up to {MAX_CPUSET_ID}"
                ));
            }
        }
    }
    Ok(())
}

/// [`check_cpuset`] for both lists of `res`.
pub fn check_cpusets(res: &Resources) -> Result<()> {
    check_cpuset("cpuset_cpus", &res.cpuset_cpus)?;
    check_cpuset("cpuset_mems", &res.cpuset_mems)
}

impl Resources {
    /// The limits in force after applying `update` to `self`: every field `update` gives (non
    /// zero, non empty, `Some`) replaces this one; the rest are kept. `unified` keys and
    /// hugepage sizes are replaced one by one.
    pub fn updated_with(&self, update: &Resources) -> Resources {
        let pick_i = |new: i64, old: i64| if new != 0 { new } else { old };
        let pick_s = |new: &String, old: &String| {
            if new.is_empty() {
                old.clone()
            } else {
                new.clone()
            }
        };
        let mut unified = self.unified.clone();
        unified.extend(update.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut hugepage_limits = self.hugepage_limits.clone();
        for (size, limit) in &update.hugepage_limits {
            match hugepage_limits.iter_mut().find(|(s, _)| s == size) {
                Some(entry) => entry.1 = *limit,
                None => hugepage_limits.push((size.clone(), *limit)),
            }
        }
        Resources {
            cpu_period: pick_i(update.cpu_period, self.cpu_period),
            cpu_quota: pick_i(update.cpu_quota, self.cpu_quota),
            cpu_shares: pick_i(update.cpu_shares, self.cpu_shares),
            memory_limit: pick_i(update.memory_limit, self.memory_limit),
            memory_swap_limit: pick_i(update.memory_swap_limit, self.memory_swap_limit),
            cpuset_cpus: pick_s(&update.cpuset_cpus, &self.cpuset_cpus),
            cpuset_mems: pick_s(&update.cpuset_mems, &self.cpuset_mems),
            pids_limit: update.pids_limit.or(self.pids_limit),
            unified,
            hugepage_limits,
        }
    }
}

/// Writes the given (non-empty) cpuset lists into the cpuset directory `dir` (the v1 cpuset
/// hierarchy's or the v2 unified one's). CPUs first; if the kernel then refuses the memory
/// nodes, the previous CPU list is written back and the refusal returned.
pub(super) fn write_cpuset(files: Files, dir: &Path, cpus: &str, mems: &str) -> Result<()> {
    check_cpuset("cpuset_cpus", cpus)?;
    check_cpuset("cpuset_mems", mems)?;
    let cpus_file = dir.join("cpuset.cpus");
    let before = if cpus.is_empty() {
        None
    } else {
        let before = fs::read_opt(&cpus_file)?;
        files.write(&cpus_file, cpus)?;
        before
    };
    if mems.is_empty() {
        return Ok(());
    }
    let Err(error) = files.write(&dir.join("cpuset.mems"), mems) else {
        return Ok(());
    };
    match before.map(|b| b.trim().to_string()) {
        Some(b) if !b.is_empty() => match files.write(&cpus_file, &b) {
            Ok(()) => Err(error),
            Err(cleanup) => Err(CgroupError::Cleanup {
                error: Box::new(error),
                cleanup: Box::new(cleanup),
            }),
        },
        _ => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cpuset_lists() {
        for ok in ["", "0", "0-3", "0-3,6", "1,3,5-7", "65536", "2-2"] {
            check_cpuset("cpuset_cpus", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in [
            ",",
            "0,",
            "-1",
            "3-1",
            "a",
            "0-",
            "-",
            "0 1",
            "1-2-3",
            "+1",
            "65537",
            "0x1",
            " 0",
            "0-99999999999",
        ] {
            let e = check_cpuset("cpuset_cpus", bad).unwrap_err();
            assert!(
                matches!(&e, CgroupError::Invalid { what } if what.contains("cpuset_cpus")),
                "{bad:?}: {e}"
            );
        }
        assert!(check_cpuset("cpuset_mems", &"0,".repeat(3000)).is_err());
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap().trim().to_string()
    }

    /// A cgroup v2 fixture root offering the usual controllers.
    fn v2_root() -> (tempfile::TempDir, super::super::Cgroups) {
        let t = tempfile::tempdir().unwrap();
        for (f, v) in [
            ("cgroup.controllers", "cpuset cpu memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", "1\n"),
        ] {
            std::fs::write(t.path().join(f), v).unwrap();
        }
        let cg = super::super::Cgroups::detect(t.path()).unwrap();
        (t, cg)
    }

    fn limits() -> Resources {
        Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 1024,
            memory_limit: 64 << 20,
            cpuset_cpus: "0-3".into(),
            cpuset_mems: "0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn v2_cpuset_only_update_keeps_the_other_limits() {
        let (t, cg) = v2_root();
        cg.create("/kubepods/pod1/ctr", &limits()).unwrap();
        let dir = t.path().join("kubepods/pod1/ctr");
        let files = ["cpu.max", "cpu.weight", "memory.max", "cpuset.mems"];
        let before: Vec<String> = files.iter().map(|f| read(&dir.join(f))).collect();
        assert_eq!(before[0], "50000 100000");
        assert_eq!(before[2], (64u64 << 20).to_string());
        cg.update(
            "/kubepods/pod1/ctr",
            &Resources {
                cpuset_cpus: "2-3".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&dir.join("cpuset.cpus")), "2-3");
        let after: Vec<String> = files.iter().map(|f| read(&dir.join(f))).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn v2_bad_cpuset_changes_nothing() {
        let (t, cg) = v2_root();
        cg.create("/kubepods/pod1/ctr", &limits()).unwrap();
        let dir = t.path().join("kubepods/pod1/ctr");
        for (cpus, mems) in [("0-", ""), ("1", "x"), ("3-1", "0")] {
            let e = cg
                .update(
                    "/kubepods/pod1/ctr",
                    &Resources {
                        cpuset_cpus: cpus.into(),
                        cpuset_mems: mems.into(),
                        ..Default::default()
                    },
                )
                .unwrap_err();
            assert!(matches!(e, CgroupError::Invalid { .. }), "{cpus:?}: {e}");
            assert_eq!(read(&dir.join("cpuset.cpus")), "0-3");
            assert_eq!(read(&dir.join("cpuset.mems")), "0");
        }
    }

    #[test]
    fn v1_cpuset_only_update_keeps_the_other_limits() {
        let t = tempfile::tempdir().unwrap();
        for d in ["cpu", "cpuset", "memory"] {
            std::fs::create_dir(t.path().join(d)).unwrap();
            std::fs::write(t.path().join(d).join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(t.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        std::fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        let cg = super::super::Cgroups::detect(t.path()).unwrap();
        cg.create("/pod/ctr", &limits()).unwrap();
        let cpu = t.path().join("cpu/pod/ctr");
        let mem = t.path().join("memory/pod/ctr/memory.limit_in_bytes");
        cg.update(
            "/pod/ctr",
            &Resources {
                cpuset_cpus: "1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(&t.path().join("cpuset/pod/ctr/cpuset.cpus")), "1");
        assert_eq!(read(&t.path().join("cpuset/pod/ctr/cpuset.mems")), "0");
        assert_eq!(read(&mem), (64u64 << 20).to_string());
        assert_eq!(read(&cpu.join("cpu.shares")), "1024");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        // A malformed list is refused before anything is written.
        assert!(
            cg.update(
                "/pod/ctr",
                &Resources {
                    cpuset_cpus: "1,".into(),
                    ..Default::default()
                },
            )
            .is_err()
        );
        assert_eq!(read(&t.path().join("cpuset/pod/ctr/cpuset.cpus")), "1");
    }

    #[test]
    fn refused_mems_put_the_cpus_back() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cpuset.cpus"), "0-3\n").unwrap();
        // A directory where the file should be: the write fails as the kernel's EINVAL would.
        std::fs::create_dir(t.path().join("cpuset.mems")).unwrap();
        let files = Files { plain: true };
        let e = write_cpuset(files, t.path(), "1", "0").unwrap_err();
        assert!(matches!(e, CgroupError::Write { .. }), "{e}");
        assert_eq!(read(&t.path().join("cpuset.cpus")), "0-3");
        write_cpuset(files, t.path(), "2", "").unwrap();
        assert_eq!(read(&t.path().join("cpuset.cpus")), "2");
    }

    #[test]
    fn update_keeps_what_it_does_not_give() {
        let old = Resources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit: 64 << 20,
            memory_swap_limit: 64 << 20,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            pids_limit: Some(10),
            unified: HashMap::from([("memory.high".into(), "1".into())]),
            hugepage_limits: vec![("2MB".into(), 0)],
        };
        // What the static CPU manager sends.
        let cpuset_only = Resources {
            cpuset_cpus: "1".into(),
            ..Default::default()
        };
        assert_eq!(
            old.updated_with(&cpuset_only),
            Resources {
                cpuset_cpus: "1".into(),
                ..old.clone()
            }
        );
        // A resize: given fields replace, unlimited (-1) included.
        let resize = Resources {
            cpu_quota: -1,
            memory_limit: 128 << 20,
            unified: HashMap::from([("memory.low".into(), "2".into())]),
            hugepage_limits: vec![("2MB".into(), 4 << 20), ("1GB".into(), 0)],
            ..Default::default()
        };
        let new = old.updated_with(&resize);
        assert_eq!(new.cpu_quota, -1);
        assert_eq!(new.memory_limit, 128 << 20);
        assert_eq!(new.cpu_shares, 512);
        assert_eq!(new.cpuset_cpus, "0-1");
        assert_eq!(new.unified.len(), 2);
        assert_eq!(
            new.hugepage_limits,
            vec![("2MB".into(), 4 << 20), ("1GB".into(), 0)]
        );
    }
}
