//! Runner processes: spawning, readiness, watching for exit, signalling, and working out an
//! exit status when the runner could not record one itself (SIGKILL, OOM kill).
//!
//! The daemon is the parent of the runners it starts and reaps them. After a daemon restart
//! the surviving runners belong to init; the daemon then watches them through a pidfd (which
//! works for non-children) and reads the exit record they left.

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::containers::EXEC_OUTPUT_LIMIT;
use super::{Container, ExecOutput, Result, Runtime, RuntimeError};
use crate::container::ExitReason;
use crate::runner::{EXIT_TIMEOUT, ExitRecord, RunnerSpec};

/// How long a runner may take to load its module and report ready. Generous: a runner that
/// finds no precompiled artifact compiles the module itself.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The message of an OOM kill the runner could not record itself.
const OOM_MESSAGE: &str = "memory limit exceeded; killed by the kernel OOM killer";

/// The start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that had `start` as its start time.
pub fn same_process(pid: i32, start: Option<u64>) -> bool {
    match (pid_start_time(pid), start) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; on success it returns a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly opened descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Runtime {
    /// Waits for the runner's readiness line: `Ok` once it reports the guest is about to
    /// run, else the one-line reason (the runner is killed if it never answers).
    pub(super) async fn wait_ready(
        child: &mut tokio::process::Child,
    ) -> std::result::Result<(), String> {
        let Some(stdout) = child.stdout.take() else {
            return Err("runner stdout not piped".into());
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await {
            Ok(Ok(line)) => crate::runner::parse_ready_line(line.as_deref()),
            Ok(Err(e)) => Err(format!("reading runner readiness: {e}")),
            Err(_) => {
                let _ = child.start_kill();
                Err(format!("runner not ready after {READY_TIMEOUT:?}"))
            }
        }
    }

    /// After a failed start: reap the runner, take its exit record (or make one), and leave
    /// the container Exited with the reason.
    pub(super) async fn finish_failed_start(
        &self,
        c: &Arc<Container>,
        child: Option<tokio::process::Child>,
        message: &str,
    ) -> ExitRecord {
        let status = match child {
            Some(mut ch) => tokio::time::timeout(Duration::from_secs(10), ch.wait())
                .await
                .ok()
                .and_then(|r| r.ok()),
            None => None,
        };
        let now = crate::ids::now_ns();
        let rec = c.read_exit().unwrap_or_else(|| ExitRecord {
            exit_code: status
                .and_then(|s| s.code())
                .filter(|c| *c != 0)
                .unwrap_or(128),
            reason: ExitReason::StartError,
            message: message.to_owned(),
            started_at: now,
            finished_at: now,
        });
        self.record_exit(c, &rec);
        rec
    }

    pub(super) fn record_exit(&self, c: &Arc<Container>, rec: &ExitRecord) {
        if c.read_exit().is_none()
            && let Err(e) = crate::runner::write_exit_record(&c.exit_file(), rec)
        {
            tracing::warn!(container = %c.meta.id, error = %e, "cannot write exit record");
        }
        if let Err(e) = c.transition(|st| st.exit_with(rec)) {
            tracing::warn!(container = %c.meta.id, error = %e, "exit not recorded");
            return;
        }
        // Nothing the container started outlives it (runc's init-dies-all-die).
        c.kill_execs();
        if let Err(e) = self.save_container(c) {
            tracing::error!(container = %c.meta.id, error = %e, "cannot persist exit");
        }
        c.exited.send_replace(true);
        self.emit_container_event(c, super::ContainerEventKind::Stopped);
        tracing::info!(container = %c.meta.id, exit_code = rec.exit_code, reason = %rec.reason, "container exited");
    }

    /// Works out how a runner ended when it may not have said so itself.
    pub(super) fn infer_exit(
        &self,
        c: &Container,
        status: Option<std::process::ExitStatus>,
    ) -> ExitRecord {
        use std::os::unix::process::ExitStatusExt;
        if let Some(rec) = c.read_exit() {
            return rec;
        }
        let started_at = c.snapshot().started_at();
        let finished_at = crate::ids::now_ns();
        let oom = self
            .cgroups
            .as_ref()
            .is_some_and(|cg| cg.oom_killed(&c.meta.cgroup_path).unwrap_or(false));
        let (exit_code, reason, message) = match status {
            Some(s) if s.signal() == Some(libc::SIGKILL) && oom => {
                (137, ExitReason::OomKilled, OOM_MESSAGE.to_owned())
            }
            Some(s) if s.signal().is_some() => {
                let sig = s.signal().unwrap_or(0);
                (
                    128 + sig,
                    ExitReason::Error,
                    format!("runner killed by signal {sig}"),
                )
            }
            Some(s) => {
                let code = s.code().unwrap_or(255);
                (
                    code,
                    ExitReason::of_exit_code(code),
                    "runner exited without recording a status".to_owned(),
                )
            }
            None if oom => (137, ExitReason::OomKilled, OOM_MESSAGE.to_owned()),
            None => (
                255,
                ExitReason::Unknown,
                "runner ended while the daemon was not running; status unknown".to_owned(),
            ),
        };
        ExitRecord {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        }
    }

    /// Reaps a runner we spawned and records how it ended.
    pub(super) fn watch_child(
        self: &Arc<Self>,
        c: Arc<Container>,
        mut child: tokio::process::Child,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let rec = this.infer_exit(&c, status);
            this.record_exit(&c, &rec);
        });
    }

    /// Watches a runner that is not our child (found alive after a daemon restart).
    pub(super) fn watch_pid(self: &Arc<Self>, c: Arc<Container>, pid: i32) {
        let this = self.clone();
        tokio::spawn(async move {
            let registered = pidfd_open(pid).and_then(|fd| {
                // SAFETY: the AsyncFd owns the pidfd; nothing else closes or reuses it.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(|e| std::io::Error::other(e.to_string()))
            });
            match registered {
                Ok(fd) => {
                    let _ = fd.readable().await;
                }
                Err(e) => {
                    tracing::warn!(pid, error = %e, "pidfd_open failed; polling");
                    while same_process(pid, c.snapshot().pid_start()) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            let rec = this.infer_exit(&c, None);
            this.record_exit(&c, &rec);
        });
    }

    /// Signals a running container's runner, if it is still the process we started.
    pub(super) fn signal(&self, c: &Container, sig: nix::sys::signal::Signal) {
        let st = c.snapshot();
        if let Some(pid) = st.pid()
            && same_process(pid, st.pid_start())
        {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// Runs an exec runner to completion and collects its output.
    ///
    /// The spec travels over the runner's stdin (`wasmcri runner --standby`, as for
    /// StartContainer), never through a file: the container's directory is reachable by
    /// its user. The runner is killed if this future is dropped (the client gave up) and
    /// when the container stops or is removed.
    pub(super) async fn run_exec(
        &self,
        c: &Container,
        spec: &RunnerSpec,
        timeout_ms: u64,
    ) -> Result<ExecOutput> {
        let mut line = serde_json::to_vec(spec)
            .map_err(|e| RuntimeError::io("serialise exec spec")(std::io::Error::other(e)))?;
        line.push(b'\n');
        let mut cmd = tokio::process::Command::new(&self.runner_exe);
        cmd.arg("runner")
            .arg("--standby")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(RuntimeError::io("spawn exec runner"))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        let _tracked = pid.map(|p| c.track_exec(p));
        if c.snapshot().phase() != crate::container::ContainerPhase::Running {
            // Stopped while we spawned: the stop's sweep may have missed this one.
            return Err(RuntimeError::not_running(&c.meta.id));
        }
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(&line)
            .await
            .map_err(RuntimeError::io("hand the exec runner its spec"))?;
        drop(stdin);
        let so = child.stdout.take().expect("piped");
        let se = child.stderr.take().expect("piped");
        let pid = child.id();
        let read_out = read_capped(so, EXEC_OUTPUT_LIMIT, pid);
        let read_err = read_capped(se, EXEC_OUTPUT_LIMIT, pid);
        // The runner interrupts the guest at the deadline; this is the backstop.
        let hard = if timeout_ms == 0 {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_millis(timeout_ms) + Duration::from_secs(5)
        };
        let all = async { tokio::join!(read_out, read_err, child.wait()) };
        match tokio::time::timeout(hard, all).await {
            Ok(((stdout, out_over), (mut stderr, err_over), status)) => {
                let status = status.map_err(RuntimeError::io("wait exec runner"))?;
                if out_over || err_over {
                    stderr.extend_from_slice(
                        format!(
                            "\nwasmcri: exec output exceeded {EXEC_OUTPUT_LIMIT} bytes per stream; \
                             the command was killed\n"
                        )
                        .as_bytes(),
                    );
                }
                let code = status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + status.signal().unwrap_or(0)
                });
                if code == EXIT_TIMEOUT && timeout_ms > 0 {
                    return Err(RuntimeError::ExecTimedOut {
                        id: c.meta.id.clone(),
                        seconds: timeout_ms / 1000,
                    });
                }
                Ok(ExecOutput {
                    stdout,
                    stderr,
                    exit_code: code,
                })
            }
            Err(_) => Err(RuntimeError::ExecTimedOut {
                id: c.meta.id.clone(),
                seconds: timeout_ms / 1000,
            }),
        }
    }
}

/// Reads an exec stream to its end, keeping at most `limit` bytes: past that the exec runner
/// (our child, `pid`) is killed, so a command that writes without end costs the daemon
/// `limit` bytes, not whatever it writes. Returns the bytes and whether the limit was passed.
async fn read_capped(
    mut r: impl tokio::io::AsyncRead + Unpin,
    limit: usize,
    pid: Option<u32>,
) -> (Vec<u8>, bool) {
    let mut v = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (v, false),
            Ok(n) => v.extend_from_slice(&chunk[..n]),
        }
        if v.len() > limit {
            v.truncate(limit);
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // Not reaped yet (we still hold the Child), so the PID is still ours.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return (v, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exec_output_is_capped_while_read() {
        let (v, over) = read_capped(&b"0123456789"[..], 4, None).await;
        assert_eq!((v.as_slice(), over), (&b"0123"[..], true));
        let (v, over) = read_capped(&b"0123"[..], 4, None).await;
        assert_eq!((v.as_slice(), over), (&b"0123"[..], false));
        // A writer that never stops is cut off at the limit, not read to its end.
        let endless = tokio::io::repeat(b'y');
        let (v, over) = read_capped(endless, 1 << 20, None).await;
        assert!(over && v.len() == 1 << 20);
    }

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        let t = pid_start_time(me).expect("own start time");
        assert!(same_process(me, Some(t)));
        assert!(!same_process(me, Some(t + 1)));
        assert!(!same_process(i32::MAX, Some(1)));
    }
}
