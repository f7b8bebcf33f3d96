//! Process setup done before any guest code runs and before any thread exists: network
//! namespace, OOM score, user namespace, credentials (cgroup membership is
//! [`crate::cgroups::Membership`]). `setns(CLONE_NEWNET)` only moves the calling thread and
//! `setns(CLONE_NEWUSER)` needs a single-threaded process, which is why this runs first.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{Gid, Uid, chown, setgid, setgroups, setuid};

use super::RunnerSpec;

/// Enters the network namespace bind-mounted at `netns`.
pub(crate) fn join_netns(netns: &Path) -> Result<(), String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(netns)
        .map_err(|e| format!("open netns {}: {e}", netns.display()))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {}: {e}", netns.display()))
}

/// Writes `/proc/self/oom_score_adj`; lowering it needs CAP_SYS_RESOURCE, so EPERM/EACCES are
/// tolerated (the kubelet's value is advisory for an unprivileged daemon).
pub(crate) fn set_oom_score_adj(value: i64) -> Result<(), String> {
    match fs::write("/proc/self/oom_score_adj", value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(format!("write oom_score_adj {value}: {e}")),
    }
}

/// Opens the pod's user namespace file, if the spec names one, while the runner still sees
/// the node's files (the jail does not hold it).
pub(crate) fn open_userns(spec: &RunnerSpec) -> Result<Option<File>, String> {
    spec.userns
        .as_ref()
        .map(|u| crate::userns::open(&u.path).map_err(|e| e.to_string()))
        .transpose()
}

/// Whether the spec asks for a credential change. Always in a user namespace: a process that
/// joins one keeps the node's uid 0 until it sets IDs of the namespace.
pub(crate) fn drops_privileges(spec: &RunnerSpec) -> bool {
    spec.uid.is_some()
        || spec.gid.is_some()
        || !spec.additional_gids.is_empty()
        || spec.userns.is_some()
}

/// Joins the pod's user namespace `ns` (opened by [`open_userns`]), if the spec names one;
/// called once everything that needs the node's root is done (cgroups, netns, jail, log) and
/// before the capability bounding set is emptied (joining resets it to full, scoped to the
/// namespace).
///
/// First, still as the node's root, the exit record's directory is handed to the node IDs the
/// guest's user and group map to (inside the namespace the runner has no capability over a
/// directory owned by the node's root). An ID the mapping does not hold is refused here with
/// a clear message, rather than as `EINVAL` from `setuid`.
pub(crate) fn enter_userns(spec: &RunnerSpec, ns: Option<File>) -> Result<(), String> {
    let Some(u) = &spec.userns else {
        return Ok(());
    };
    // Never fall through to switching IDs in the node's namespace.
    let ns = ns.ok_or_else(|| format!("user namespace {} was not opened", u.path.display()))?;
    let (host_uid, host_gid) = u
        .mappings
        .check_ids(
            spec.uid.unwrap_or(0),
            spec.gid.unwrap_or(0),
            &spec.additional_gids,
        )
        .map_err(|e| e.to_string())?;
    if let Some(dir) = exit_dir(&spec.exit_file) {
        chown(
            dir,
            Some(Uid::from_raw(host_uid)),
            Some(Gid::from_raw(host_gid)),
        )
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    crate::userns::enter(&ns, &u.path).map_err(|e| e.to_string())
}

/// Switches to the requested user: supplementary groups, then the primary group, then the
/// user (the order in which each step still has the privilege to do the next). In a user
/// namespace ([`enter_userns`] first) the IDs are the namespace's, root (0) when none is
/// given.
///
/// The exit record is renamed into place after the guest ran, so its directory is handed to
/// the new user first; the daemon should give each runner a directory of its own for it.
pub(crate) fn drop_privileges(spec: &RunnerSpec) -> Result<(), String> {
    if !drops_privileges(spec) {
        return Ok(());
    }
    if let Some(u) = &spec.userns {
        // Joining left the node's uid 0, which is not the namespace's root, so a later
        // switch to another user would keep the namespace's capabilities; become its root
        // first, and the switch drops them as it does outside.
        if u.mappings.host_uid(0).is_some() {
            setuid(Uid::from_raw(0)).map_err(|e| format!("setuid 0 in the user namespace: {e}"))?;
        }
        return switch_ids(spec, spec.uid.or(Some(0)), spec.gid.or(Some(0)));
    }
    if let Some(dir) = exit_dir(&spec.exit_file) {
        chown(
            dir,
            spec.uid.map(Uid::from_raw),
            spec.gid.map(Gid::from_raw),
        )
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    switch_ids(spec, spec.uid, spec.gid)
}

fn switch_ids(spec: &RunnerSpec, uid: Option<u32>, gid: Option<u32>) -> Result<(), String> {
    let groups: Vec<Gid> = spec
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", spec.additional_gids))?;
    if let Some(gid) = gid {
        setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid {gid}: {e}"))?;
    }
    if let Some(uid) = uid {
        setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
    }
    Ok(())
}

fn exit_dir(exit_file: &Path) -> Option<&Path> {
    if exit_file.as_os_str().is_empty() {
        return None;
    }
    exit_file.parent().filter(|p| !p.as_os_str().is_empty())
}

/// Points fd 1 at `/dev/null` (after the readiness line) so a daemon that went away cannot
/// kill the runner with SIGPIPE on a later write.
pub(crate) fn detach_stdout() -> io::Result<()> {
    redirect(1, &File::options().write(true).open("/dev/null")?)
}

/// Points fd 0 at `/dev/null`: a standby runner's stdin was the pipe its spec came through.
pub(crate) fn detach_stdin() -> io::Result<()> {
    redirect(0, &File::open("/dev/null")?)
}

/// Points fd 2 at `path` (appending, created if needed): a standby runner's debug log.
pub(crate) fn redirect_stderr(path: &Path) -> io::Result<()> {
    redirect(2, &File::options().create(true).append(true).open(path)?)
}

fn redirect(fd: i32, file: &File) -> io::Result<()> {
    // SAFETY: dup2 onto one of the standard descriptors only replaces what that descriptor
    // refers to; no Rust object owns fds 0-2, and `file` stays open for the call.
    let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(file), fd) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
