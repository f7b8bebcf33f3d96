//! Tests against the host's real cgroup hierarchy, under a unique `/wasmcri-test-<random>`
//! cgroup that is removed again. They only touch cgroups they create and processes they start.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use nix::sys::signal::Signal;

use super::super::*;

/// The host cgroups, when this process may manage them (root on a real cgroupfs).
fn host() -> Option<Cgroups> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: not root");
        return None;
    }
    let cg = Cgroups::detect(DEFAULT_ROOT).ok()?;
    let dirs = cg.dirs("/x").ok()?;
    if !super::super::fs::is_cgroupfs(dirs[0].parent()?) {
        eprintln!("skipping: {DEFAULT_ROOT} is not a cgroupfs");
        return None;
    }
    Some(cg)
}

fn unique_top() -> String {
    format!("/wasmcri-test-{:08x}", rand::random::<u32>())
}

/// Kills the child it started and removes the test cgroup, even when an assertion fails.
struct Guard<'a> {
    cg: &'a Cgroups,
    path: String,
    top: String,
    child: Option<Child>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.remove(&self.path);
        // Fall back to the top dir in case the leaf was never registered.
        for d in self.cg.dirs(&self.top).unwrap_or_default() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn join(cg: &Cgroups, pid: u32, procs: &[std::path::PathBuf]) {
    for f in procs {
        std::fs::write(f, pid.to_string()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    let _ = cg;
}

#[test]
fn real_create_limit_join_stats_kill_remove() {
    let Some(cg) = host() else { return };
    let top = unique_top();
    let path = format!("{top}/pod/ctr");
    let mut g = Guard {
        cg: &cg,
        path: path.clone(),
        top: top.clone(),
        child: None,
    };
    let res = Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit: 64 << 20,
        pids_limit: Some(32),
        cpuset_cpus: "0".into(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let h = cg.create(&path, &res).unwrap();
    let created_in = t0.elapsed();
    assert_eq!(h.created.len(), 3 * cg.dirs("/x").unwrap().len());

    let dirs = cg.dirs(&path).unwrap();
    let find = |file: &str| {
        dirs.iter()
            .map(|d| d.join(file))
            .find(|f| f.exists())
            .unwrap_or_else(|| panic!("{file} in no hierarchy"))
    };
    let rd = |file: &str| {
        std::fs::read_to_string(find(file))
            .unwrap()
            .trim()
            .to_string()
    };
    match cg.version() {
        CgroupVersion::V1 => {
            assert_eq!(rd("cpu.cfs_quota_us"), "50000");
            assert_eq!(rd("cpu.cfs_period_us"), "100000");
            assert_eq!(rd("cpu.shares"), "512");
            assert_eq!(rd("memory.limit_in_bytes"), (64u64 << 20).to_string());
        }
        CgroupVersion::V2 => {
            assert_eq!(rd("cpu.max"), "50000 100000");
            assert_eq!(rd("cpu.weight"), shares_to_weight(512).to_string());
            assert_eq!(rd("memory.max"), (64u64 << 20).to_string());
        }
    }
    assert_eq!(rd("pids.max"), "32");
    assert_eq!(rd("cpuset.cpus"), "0");

    cg.update(
        &path,
        &Resources {
            memory_limit: 128 << 20,
            cpu_quota: -1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        cg.stats(&path).unwrap().memory_limit,
        Some(128 << 20),
        "update applied"
    );

    let child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    g.child = Some(child);
    join(&cg, pid, &h.procs_files);
    assert_eq!(cg.pids(&path).unwrap(), vec![pid as i32]);
    let s = cg.stats(&path).unwrap();
    assert_eq!(s.pids_current, 1);
    assert!(s.timestamp_ns > 0);

    // A cgroup with a live process is not removed, and remove kills nothing.
    let err = cg.remove(&path).unwrap_err();
    assert!(matches!(err, CgroupError::Remove { .. }), "{err}");
    assert_eq!(cg.pids(&path).unwrap(), vec![pid as i32]);

    assert_eq!(cg.kill_all(&path, Signal::SIGKILL).unwrap(), 1);
    let status = g.child.take().unwrap().wait().unwrap();
    assert!(!status.success());

    let t1 = Instant::now();
    cg.remove(&path).unwrap();
    let removed_in = t1.elapsed();
    for d in cg.dirs(&top).unwrap() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    eprintln!("real cgroup create (3 levels, limits) {created_in:?}, remove {removed_in:?}");
}

#[test]
fn real_create_remove_timing() {
    let Some(cg) = host() else { return };
    let top = unique_top();
    let _g = Guard {
        cg: &cg,
        path: format!("{top}/c"),
        top: top.clone(),
        child: None,
    };
    // The pod level stays, as with kubelet-made pod cgroups; time the container level.
    cg.create(&top, &Resources::default()).unwrap();
    let mut times = Vec::new();
    for i in 0..20 {
        let p = format!("{top}/c{i}");
        let t = Instant::now();
        cg.create(
            &p,
            &Resources {
                memory_limit: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            },
        )
        .unwrap();
        cg.remove(&p).unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "real cgroup create+remove (limits, all hierarchies): p50 {:?} max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    cg.remove(&top).unwrap();
    for d in cg.dirs(&top).unwrap() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn real_oom_kill_is_detected() {
    let Some(cg) = host() else { return };
    let top = unique_top();
    let path = format!("{top}/oom");
    let mut g = Guard {
        cg: &cg,
        path: path.clone(),
        top,
        child: None,
    };
    let h = cg
        .create(
            &path,
            &Resources {
                memory_limit: 32 << 20,
                // No swap either, or the allocation is swapped out instead of killed.
                memory_swap_limit: 32 << 20,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!cg.oom_killed(&path).unwrap());
    // The shell waits for a line on stdin, so it joins the cgroup before allocating;
    // `tail` buffers its whole input looking for a newline.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("read go; head -c 200000000 /dev/zero | tail >/dev/null")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    g.child = Some(child);
    join(&cg, pid, &h.procs_files);
    stdin.write_all(b"go\n").unwrap();
    drop(stdin);
    let status = g.child.take().unwrap().wait().unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(cg.oom_killed(&path).unwrap(), "oom_kill counter set");
    assert!(cg.stats(&path).unwrap().oom_kills >= 1);
}
