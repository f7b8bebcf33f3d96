//! Pod user namespaces (`hostUsers: false`): the ID mappings the kubelet sends, checked
//! ([`IdMappings::validate`]), and a persistent user namespace per pod holding exactly them.
//!
//! A pod's namespace is made once, at RunPodSandbox, the way [`crate::network::netns`] makes
//! network namespaces: a short-lived child process is cloned into a new one, the daemon —
//! the privileged side, in the host's user namespace — writes its `uid_map` and `gid_map`
//! (written once, the kernel refuses a second write, so nobody inside can change them), and
//! bind-mounts its nsfs file onto an empty file, which keeps the namespace alive after the
//! child exits and across daemon restarts. Every runner of the pod (containers, ExecSync,
//! interactive exec) then `setns`es into it by path once its host-side setup is done (see
//! [`crate::runner`]), so standby runners started before any pod existed still work.
//!
//! The mapping never includes host ID 0 nor any host ID below [`MIN_HOST_ID`]: those are the
//! node's own root and system accounts, and the kubelet never allocates them (it reserves the
//! first 65536 IDs for the host and hands each pod a range of 65536 above them).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde::{Deserialize, Serialize};

/// The lowest host ID a pod's range may map to. IDs below it belong to the node (root, system
/// accounts); the kubelet's allocator starts pods' ranges at 65536.
pub const MIN_HOST_ID: u32 = 65536;

/// Most ranges per map. The kernel accepts up to 340; the kubelet sends one.
pub const MAX_RANGES: usize = 32;

/// One range: IDs `container_id..container_id+length` inside the namespace are
/// `host_id..host_id+length` on the node.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMapping {
    /// First ID inside the namespace.
    pub container_id: u32,
    /// First ID on the node.
    pub host_id: u32,
    /// How many IDs.
    pub length: u32,
}

/// A pod's user and group mappings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMappings {
    /// UID ranges.
    pub uids: Vec<IdMapping>,
    /// GID ranges.
    pub gids: Vec<IdMapping>,
}

/// What can go wrong with a pod's user namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The mappings are refused (empty, overlapping, overflowing, mapping node IDs).
    #[error("invalid user namespace {which} mapping: {reason}")]
    Invalid {
        /// `uid` or `gid`.
        which: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A user or group the pod's namespace does not map.
    #[error("{which} {id} is not mapped in the pod's user namespace")]
    Unmapped {
        /// `uid`, `gid` or `supplementary gid`.
        which: &'static str,
        /// The ID inside the namespace.
        id: u32,
    },
    /// Creating, entering or removing a user namespace failed.
    #[error("user namespace {}: {op}: {source}", path.display())]
    Os {
        /// The namespace file.
        path: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn os<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> UsernsError + 'a {
    move |source| UsernsError::Os {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl IdMappings {
    /// Checks both maps: see [`validate_ranges`].
    pub fn validate(&self) -> Result<(), UsernsError> {
        validate_ranges("uid", &self.uids)?;
        validate_ranges("gid", &self.gids)
    }

    /// The host UID of `uid` inside the namespace, if it is mapped.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        to_host(&self.uids, uid)
    }

    /// The host GID of `gid` inside the namespace, if it is mapped.
    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        to_host(&self.gids, gid)
    }

    /// Where this pod's host IDs overlap `other`'s, if they do: two pods sharing node IDs
    /// could reach each other's files and processes, which is what a user namespace is for
    /// preventing.
    pub fn host_overlap(&self, other: &IdMappings) -> Option<String> {
        let clash = |which: &str, a: &[IdMapping], b: &[IdMapping]| {
            a.iter().find_map(|x| {
                b.iter().find_map(|y| {
                    let (xs, xe) = (
                        u64::from(x.host_id),
                        u64::from(x.host_id) + u64::from(x.length),
                    );
                    let (ys, ye) = (
                        u64::from(y.host_id),
                        u64::from(y.host_id) + u64::from(y.length),
                    );
                    (xs < ye && ys < xe).then(|| format!("host {which} range {xs}..{xe}"))
                })
            })
        };
        clash("uid", &self.uids, &other.uids).or_else(|| clash("gid", &self.gids, &other.gids))
    }

    /// Checks that a process can run as `uid`, `gid` and `groups` inside the namespace
    /// (`setuid` and friends refuse IDs it does not map); returns the host UID and GID.
    pub fn check_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(u32, u32), UsernsError> {
        let unmapped = |which: &'static str, id: u32| UsernsError::Unmapped { which, id };
        let host_uid = self.host_uid(uid).ok_or_else(|| unmapped("uid", uid))?;
        let host_gid = self.host_gid(gid).ok_or_else(|| unmapped("gid", gid))?;
        if let Some(g) = groups.iter().find(|g| self.host_gid(**g).is_none()) {
            return Err(unmapped("supplementary gid", *g));
        }
        Ok((host_uid, host_gid))
    }
}

fn to_host(ranges: &[IdMapping], id: u32) -> Option<u32> {
    ranges.iter().find_map(|r| {
        let off = id.checked_sub(r.container_id)?;
        (off < r.length).then(|| r.host_id + off)
    })
}

/// One map is usable when it has 1..=[`MAX_RANGES`] ranges, each non-empty, none running
/// past the last valid ID (`u32::MAX` is `(uid_t)-1`, never an ID) on either side, none
/// overlapping another on either side (the kernel refuses that too, but only after the
/// namespace exists), and every host ID at least [`MIN_HOST_ID`] — so the node's root is
/// never the guest's anything.
pub fn validate_ranges(which: &'static str, ranges: &[IdMapping]) -> Result<(), UsernsError> {
    let bad = |reason: String| UsernsError::Invalid { which, reason };
    if ranges.is_empty() {
        return Err(bad(
            "no ranges (a pod user namespace needs its mapping)".into()
        ));
    }
    if ranges.len() > MAX_RANGES {
        return Err(bad(format!(
            "{} ranges, at most {MAX_RANGES} allowed",
            ranges.len()
        )));
    }
    let end = |start: u32, r: &IdMapping| -> Result<u64, UsernsError> {
        let end = u64::from(start) + u64::from(r.length);
        if end > u64::from(u32::MAX) {
            return Err(bad(format!("{r:?} runs past the last valid ID")));
        }
        Ok(end)
    };
    let mut inside = Vec::with_capacity(ranges.len());
    let mut host = Vec::with_capacity(ranges.len());
    for r in ranges {
        if r.length == 0 {
            return Err(bad(format!("{r:?} is empty")));
        }
        if r.host_id < MIN_HOST_ID {
            return Err(bad(format!(
                "{r:?} maps node IDs below {MIN_HOST_ID} (the node's root and system accounts)"
            )));
        }
        inside.push((u64::from(r.container_id), end(r.container_id, r)?));
        host.push((u64::from(r.host_id), end(r.host_id, r)?));
    }
    for (side, spans) in [("namespace", &mut inside), ("host", &mut host)] {
        spans.sort_unstable();
        if let Some(w) = spans.windows(2).find(|w| w[1].0 < w[0].1) {
            return Err(bad(format!(
                "{side} ranges {}..{} and {}..{} overlap",
                w[0].0, w[0].1, w[1].0, w[1].1
            )));
        }
    }
    Ok(())
}

/// The text of a `uid_map`/`gid_map`: one `inside host length` line per range.
pub fn map_text(ranges: &[IdMapping]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.length))
        .collect()
}

/// Creates a user namespace with `m` bound at `dir/name` and returns its path. Fails if
/// `dir/name` exists; on failure nothing is left (no file, no mount, no process).
pub fn create(dir: &Path, name: &str, m: &IdMappings) -> Result<PathBuf, UsernsError> {
    let path = dir.join(name);
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(os(&path, "validate name")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad namespace name",
        )));
    }
    m.validate()?;
    fs::create_dir_all(dir).map_err(os(dir, "create dir"))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(os(&path, "create mount point"))?;
    match make(&path, m) {
        Ok(()) => Ok(path),
        Err(e) => {
            if let Err(c) = remove(&path) {
                tracing::warn!(path = %path.display(), error = %c, "cannot remove a half-made user namespace");
            }
            Err(e)
        }
    }
}

/// A process born in a new user namespace, idle until the daemon has mapped and pinned the
/// namespace; killed and reaped on drop. It shares the daemon's memory (`CLONE_VM`: nothing
/// is copied, where a `fork` of the daemon copies its page tables) and runs only
/// [`hold`] on a stack of its own, which lives as long as the holder.
struct Holder {
    pid: nix::unistd::Pid,
    _stack: Vec<u8>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Once `kill` returns the child never runs user code again, so even if the wait
        // failed its stack could go.
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// The holder's whole life: every signal blocked (no handler of the daemon's ever runs in
/// it), killed with the thread that made it if the daemon dies first (`arg` is the daemon's
/// PID, to catch a death before `PR_SET_PDEATHSIG` took effect), else waiting for the
/// SIGKILL. Touches nothing but its own stack.
extern "C" fn hold(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: system calls on a sigset on this stack.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() as usize != arg as usize {
            libc::_exit(0);
        }
        loop {
            libc::pause();
        }
    }
}

/// Stack of a holder: [`hold`] needs a few hundred bytes.
const HOLDER_STACK: usize = 16 * 1024;

fn spawn_holder() -> io::Result<Holder> {
    let mut stack = vec![0u8; HOLDER_STACK];
    // SAFETY: the child shares our memory but runs only `hold`, on `stack`, which the
    // returned `Holder` keeps until the child is dead; the top is 16-byte aligned as the ABI
    // requires. CLONE_NEWUSER makes its user namespace; SIGCHLD lets it be reaped normally.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(HOLDER_STACK);
        let top = top.sub(top as usize % 16);
        libc::clone(
            hold,
            top.cast(),
            libc::CLONE_VM | libc::CLONE_NEWUSER | libc::SIGCHLD,
            std::process::id() as usize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Holder {
        pid: nix::unistd::Pid::from_raw(pid),
        _stack: stack,
    })
}

fn make(path: &Path, m: &IdMappings) -> Result<(), UsernsError> {
    let holder = spawn_holder().map_err(os(path, "start the namespace's first process"))?;
    let proc = PathBuf::from(format!("/proc/{}", holder.pid));
    // Each map in one write, as the kernel requires. `setgroups` stays `allow`: the map is
    // written by a privileged process, and runners set the pod's supplementary groups.
    write_once(&proc.join("uid_map"), &map_text(&m.uids)).map_err(os(path, "write uid_map"))?;
    write_once(&proc.join("gid_map"), &map_text(&m.gids)).map_err(os(path, "write gid_map"))?;
    let ns = proc.join("ns/user");
    mount(
        Some(&ns),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| os(path, "bind mount")(io::Error::from(e)))?;
    drop(holder);
    Ok(())
}

fn write_once(path: &Path, text: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    let n = f.write(text.as_bytes())?;
    if n != text.len() {
        return Err(io::Error::other(format!(
            "short write ({n} of {} bytes)",
            text.len()
        )));
    }
    Ok(())
}

/// Unmounts and unlinks a namespace file. Missing or already unmounted is success.
pub fn remove(path: &Path) -> Result<(), UsernsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(os(path, "unmount")(io::Error::from(e))),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(os(path, "unlink")(e)),
    }
}

/// Opens the user namespace bound at `path`, to [`enter`] it later: a runner opens it while
/// it still sees the node's files, and enters it from inside its jail.
pub fn open(path: &Path) -> Result<fs::File, UsernsError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(os(path, "open"))
}

/// Enters the user namespace `ns` (from [`open`] of `path`). The caller must be
/// single-threaded and share its filesystem attributes with no other process (a runner
/// before any thread exists).
pub fn enter(ns: &fs::File, path: &Path) -> Result<(), UsernsError> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| os(path, "setns")(io::Error::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn kubelet() -> IdMappings {
        IdMappings {
            uids: vec![r(0, 3 * 65536, 65536)],
            gids: vec![r(0, 3 * 65536, 65536)],
        }
    }

    #[test]
    fn the_kubelets_mapping_is_accepted_and_translates() {
        let m = kubelet();
        m.validate().unwrap();
        assert_eq!(m.host_uid(0), Some(196608));
        assert_eq!(m.host_uid(1000), Some(197608));
        assert_eq!(m.host_gid(65535), Some(262143));
        assert_eq!(m.host_uid(65536), None);
        assert_eq!(m.check_ids(1000, 1000, &[0, 5]).unwrap(), (197608, 197608));
        for (uid, gid, groups, want) in [
            (65536, 0, &[][..], "uid 65536 is not mapped"),
            (0, 70000, &[], "gid 70000 is not mapped"),
            (0, 0, &[1, 65536], "supplementary gid 65536 is not mapped"),
        ] {
            let e = m.check_ids(uid, gid, groups).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert_eq!(map_text(&m.uids), "0 196608 65536\n");
    }

    #[test]
    fn hostile_mappings_are_refused() {
        let cases: Vec<(Vec<IdMapping>, &str)> = vec![
            (vec![], "no ranges"),
            (vec![r(0, 65536, 0)], "is empty"),
            (vec![r(0, 0, 65536)], "below 65536"),
            (vec![r(0, 1000, 1)], "below 65536"),
            (vec![r(0, 65536, u32::MAX)], "past the last valid ID"),
            (vec![r(u32::MAX - 1, 65536, 2)], "past the last valid ID"),
            (vec![r(0, u32::MAX, 1)], "past the last valid ID"),
            (
                vec![r(0, 65536, 100), r(50, 200_000, 100)],
                "namespace ranges 0..100 and 50..150 overlap",
            ),
            (
                vec![r(0, 65536, 100), r(100, 65600, 100)],
                "host ranges 65536..65636 and 65600..65700 overlap",
            ),
            ((0..33).map(|i| r(i, 65536 + i, 1)).collect(), "33 ranges"),
        ];
        for (uids, want) in cases {
            let m = IdMappings {
                uids: uids.clone(),
                gids: kubelet().gids,
            };
            let e = m.validate().unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("uid"), "{uids:?}: {e}");
            let m = IdMappings {
                uids: kubelet().uids,
                gids: uids,
            };
            assert!(m.validate().unwrap_err().to_string().contains("gid"));
        }
        // Pods sharing node IDs.
        let a = kubelet();
        let mut b = kubelet();
        assert_eq!(
            a.host_overlap(&b).as_deref(),
            Some("host uid range 196608..262144")
        );
        b.uids = vec![r(0, 4 * 65536, 65536)];
        assert_eq!(
            a.host_overlap(&b).as_deref(),
            Some("host gid range 196608..262144")
        );
        b.gids = vec![r(0, 2 * 65536, 65536)];
        assert_eq!(a.host_overlap(&b), None);
        // Adjacent ranges are fine; the last valid ID is u32::MAX - 1.
        let m = IdMappings {
            uids: vec![r(0, 65536, 100), r(100, 65636, 100)],
            gids: vec![r(u32::MAX - 2, 65536, 2)],
        };
        m.validate().unwrap();
    }

    #[test]
    fn a_namespace_holds_exactly_its_mapping_and_goes_away() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP: needs root (user namespaces, mounts)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let m = IdMappings {
            uids: vec![r(0, 5 * 65536, 65536)],
            gids: vec![r(0, 6 * 65536, 1000), r(1000, 7 * 65536, 10)],
        };
        let path = create(d.path(), "pod", &m).unwrap();
        // Join it from a child and read the maps from inside.
        let out = std::process::Command::new("nsenter")
            .arg(format!("--user={}", path.display()))
            .args(["cat", "/proc/self/uid_map", "/proc/self/gid_map"])
            .output()
            .expect("nsenter (util-linux)");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            words,
            [
                "0", "327680", "65536", "0", "393216", "1000", "1000", "458752", "10"
            ]
        );
        assert!(create(d.path(), "pod", &m).is_err(), "exists already");
        remove(&path).unwrap();
        assert!(!path.exists());
        remove(&path).unwrap();
        // A mapping the kernel refuses leaves nothing behind.
        let bad = IdMappings {
            uids: vec![r(0, 65536, 1)],
            gids: vec![],
        };
        assert!(create(d.path(), "bad", &bad).is_err());
        assert!(!d.path().join("bad").exists());
    }
}
