//! Interactive exec (CRI `Exec`, served by [`crate::streaming`]): a fresh instance of the
//! container's module (or of the `.wasm` in its rootfs that `cmd[0]` names) in the
//! container's context, exactly as ExecSync builds it, but with stdin, stdout and stderr
//! left as live pipes for the streaming session.
//!
//! The runner is started as `wasmcri runner --standby` and its spec is the first line on its
//! stdin ([`crate::runner::RunMode::ExecStream`]); nothing is written to a file. The runner
//! is killed (by the PID we spawned, which we still hold unreaped) when the container exits
//! or is removed, when the caller gives up (the client went away), and when the handle is
//! dropped.

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::Child;

use super::{Result, Runtime, RuntimeError};
use crate::container::ContainerPhase;
use crate::runner::RunMode;

/// A readable end of the command's output.
pub type ExecReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writable end of the command's input.
pub type ExecWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A running interactive exec.
pub struct ExecProcess {
    child: Child,
    /// The guest's stdin (`None` if the exec has no stdin; dropping it is end of input,
    /// except on a terminal).
    pub stdin: Option<ExecWriter>,
    /// The guest's stdout (with a terminal: everything the guest writes).
    pub stdout: Option<ExecReader>,
    /// The guest's stderr (runner errors, such as a module that cannot load, land here too);
    /// `None` with a terminal.
    pub stderr: Option<ExecReader>,
    /// The terminal's master side, for resizes.
    pty: Option<Arc<OwnedFd>>,
    exited: tokio::sync::watch::Receiver<bool>,
    container_id: String,
}

/// How an interactive exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnd {
    /// The command exited with this code (128+signal if the runner was signalled).
    Exited(i32),
    /// The container stopped, so the command was killed.
    ContainerExited,
    /// The caller cancelled, so the command was killed.
    Cancelled,
}

/// Resizes an exec's terminal (a no-op without one); usable while the exec is awaited.
#[derive(Clone)]
pub struct Resizer(Option<Arc<OwnedFd>>);

impl Resizer {
    /// A resizer for the terminal whose master side is `master`.
    pub fn for_master(master: OwnedFd) -> Self {
        Self(Some(Arc::new(master)))
    }

    /// Sets the terminal's size; the kernel tells the guest's process group with SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) {
        if let Some(master) = &self.0 {
            let ws = libc::winsize {
                ws_row: height,
                ws_col: width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is ours.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }
}

impl ExecProcess {
    /// A handle that resizes this exec's terminal.
    pub fn resizer(&self) -> Resizer {
        Resizer(self.pty.clone())
    }

    /// Waits for the command, killing it if the container exits first or `cancel` resolves
    /// first.
    pub async fn wait(&mut self, cancel: impl std::future::Future<Output = ()>) -> Result<ExecEnd> {
        use std::os::unix::process::ExitStatusExt;
        let end = tokio::select! {
            status = self.child.wait() => {
                let status = status.map_err(RuntimeError::io("wait exec runner"))?;
                return Ok(ExecEnd::Exited(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                ));
            }
            () = async {
                let _ = self.exited.wait_for(|e| *e).await;
            } => ExecEnd::ContainerExited,
            () = cancel => ExecEnd::Cancelled,
        };
        tracing::debug!(container = %self.container_id, ?end, "killing exec runner");
        // Still our unreaped child: the PID cannot have been reused.
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        Ok(end)
    }
}

impl Runtime {
    /// Checks that `id` names a running container an exec can start in; returns its full ID.
    pub fn check_exec(&self, id: &str) -> Result<String> {
        let c = self.container(id)?;
        if c.removing.load(std::sync::atomic::Ordering::SeqCst)
            || c.snapshot().phase != ContainerPhase::Running
        {
            return Err(RuntimeError::FailedPrecondition(format!(
                "container {} is not running",
                c.meta.id
            )));
        }
        Ok(c.meta.id.clone())
    }

    /// Starts `cmd` in container `id` with live stdio (stdin only if `stdin`); with `tty`,
    /// the guest's stdin, stdout and stderr are one pseudo-terminal (so WASI's terminal
    /// queries say it is one) and its spec travels on a pipe at fd 3.
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        stdin: bool,
        tty: bool,
    ) -> Result<ExecProcess> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec cmd is empty".into()));
        }
        self.check_exec(id)?;
        let c = self.container(id)?;
        // Subscribed before the spawn so an exit in between is not missed.
        let exited = c.exited.subscribe();
        let mut spec = self.exec_spec(&c, RunMode::ExecStream, cmd).await?;
        spec.stdin = stdin;
        let mut line = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Io {
            what: "encode exec runner spec".into(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let mut command = tokio::process::Command::new(&self.runner_exe);
        command
            .arg("runner")
            .arg("--standby")
            .kill_on_drop(true)
            // Own process group: a signal to the daemon's group never reaches the runner.
            .process_group(0);
        if tty {
            return self
                .spawn_with_tty(command, &line, &c.meta.id, exited)
                .await;
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(RuntimeError::io("spawn exec runner"))?;
        let mut pipe = child.stdin.take().expect("piped");
        if let Err(e) = pipe.write_all(&line).await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(RuntimeError::io("hand the exec runner its spec")(e));
        }
        tracing::debug!(container = %c.meta.id, pid = child.id(), "exec runner started");
        Ok(ExecProcess {
            stdin: stdin.then_some(Box::new(pipe) as ExecWriter),
            stdout: child.stdout.take().map(|p| Box::new(p) as ExecReader),
            stderr: child.stderr.take().map(|p| Box::new(p) as ExecReader),
            pty: None,
            child,
            exited,
            container_id: c.meta.id.clone(),
        })
    }

    /// Spawns an exec runner on a new pseudo-terminal, its spec `line` on a pipe at fd 3.
    async fn spawn_with_tty(
        &self,
        mut command: tokio::process::Command,
        line: &[u8],
        container_id: &str,
        exited: tokio::sync::watch::Receiver<bool>,
    ) -> Result<ExecProcess> {
        let io_err = |what: &'static str| move |e: nix::Error| RuntimeError::io(what)(e.into());
        let pty = nix::pty::openpty(None, None).map_err(io_err("open a pseudo-terminal"))?;
        let (spec_r, spec_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(io_err("make the spec pipe"))?;
        let slave = |fd: &OwnedFd| {
            fd.try_clone()
                .map(Stdio::from)
                .map_err(RuntimeError::io("duplicate the terminal"))
        };
        command
            .stdin(slave(&pty.slave)?)
            .stdout(slave(&pty.slave)?)
            .stderr(slave(&pty.slave)?)
            .env(crate::runner::SPEC_ON_FD3_ENV, "1");
        let spec_fd = spec_r.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 (and fcntl when
        // the pipe already is fd 3, where dup2 would leave close-on-exec set).
        unsafe {
            command.pre_exec(move || {
                let rc = if spec_fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(spec_fd, 3)
                };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(RuntimeError::io("spawn exec runner"))?;
        // Only the runner may hold the slave and the pipe's read end: the master then reads
        // end of file (EIO) once the runner is gone.
        drop(command);
        drop(pty.slave);
        drop(spec_r);
        let mut spec_pipe = tokio::fs::File::from_std(std::fs::File::from(spec_w));
        let written = async {
            spec_pipe.write_all(line).await?;
            spec_pipe.flush().await
        };
        if let Err(e) = written.await {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(RuntimeError::io("hand the exec runner its spec")(e));
        }
        drop(spec_pipe);
        let master = pty.master;
        let reader = master
            .try_clone()
            .map_err(RuntimeError::io("duplicate the terminal"))?;
        let writer = master
            .try_clone()
            .map_err(RuntimeError::io("duplicate the terminal"))?;
        tracing::debug!(container = %container_id, pid = child.id(), "exec runner started on a terminal");
        Ok(ExecProcess {
            stdin: Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(
                writer,
            )))),
            stdout: Some(Box::new(tokio::fs::File::from_std(std::fs::File::from(
                reader,
            )))),
            stderr: None,
            pty: Some(Arc::new(master)),
            child,
            exited,
            container_id: container_id.to_owned(),
        })
    }
}
