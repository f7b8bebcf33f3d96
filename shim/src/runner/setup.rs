//! Process setup done before any guest code runs and before any thread exists: network
//! namespace, OOM score, credentials (cgroup membership is [`crate::cgroups::Membership`]).
//! `setns(CLONE_NEWNET)` only moves the calling thread, which is why this runs first,
//! single-threaded.

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

/// Whether the spec asks for a credential change.
pub(crate) fn drops_privileges(spec: &RunnerSpec) -> bool {
    spec.uid.is_some() || spec.gid.is_some() || !spec.additional_gids.is_empty()
}

/// Switches to the requested user: supplementary groups, then the primary group, then the
/// user (the order in which each step still has the privilege to do the next).
///
/// The exit record is renamed into place after the guest ran, so its directory is handed to
/// the new user first; the daemon should give each runner a directory of its own for it.
pub(crate) fn drop_privileges(spec: &RunnerSpec) -> Result<(), String> {
    if !drops_privileges(spec) {
        return Ok(());
    }
    if let Some(dir) = exit_dir(&spec.exit_file) {
        chown(
            dir,
            spec.uid.map(Uid::from_raw),
            spec.gid.map(Gid::from_raw),
        )
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let groups: Vec<Gid> = spec
        .additional_gids
        .iter()
        .map(|&g| Gid::from_raw(g))
        .collect();
    setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", spec.additional_gids))?;
    if let Some(gid) = spec.gid {
        setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid {gid}: {e}"))?;
    }
    if let Some(uid) = spec.uid {
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
