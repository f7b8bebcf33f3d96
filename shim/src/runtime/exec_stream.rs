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
use crate::runner::RunMode;

/// A readable end of the command's output.
pub type ExecReader = Box<dyn AsyncRead + Send + Unpin>;
/// The writable end of the command's input.
pub type ExecWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A running interactive exec, or an attach session ([`Runtime::attach`]), which looks the
/// same to the streaming server.
pub struct ExecProcess {
    end: Ending,
    /// The guest's stdin (`None` if the exec has no stdin; dropping it is end of input,
    /// except on a terminal).
    pub stdin: Option<ExecWriter>,
    /// The guest's stdout (with a terminal: everything the guest writes).
    pub stdout: Option<ExecReader>,
    /// The guest's stderr (runner errors, such as a module that cannot load, land here too);
    /// `None` with a terminal.
    pub stderr: Option<ExecReader>,
    /// Where resizes go.
    resize: Resizer,
    container_id: String,
}

/// What ends a session.
enum Ending {
    /// An exec: its runner, and the container's exit (which kills it).
    Child {
        child: Child,
        exited: tokio::sync::watch::Receiver<bool>,
    },
    /// An attach: the runner closing the attach socket (the container is gone), or the
    /// caller giving up, which drops the connection.
    Attach(super::attach::Connection),
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
pub struct Resizer(ResizeTarget);

#[derive(Clone)]
enum ResizeTarget {
    /// No terminal.
    None,
    /// The master side of an exec's terminal.
    Pty(Arc<OwnedFd>),
    /// An attach session's frames to the runner, which holds the container's terminal.
    Attach(tokio::sync::mpsc::Sender<Vec<u8>>),
}

impl Resizer {
    /// A resizer for the terminal whose master side is `master`.
    pub fn for_master(master: OwnedFd) -> Self {
        Self(ResizeTarget::Pty(Arc::new(master)))
    }

    /// A resizer that sends `RESIZE` frames to a container's runner.
    pub(super) fn for_attach(frames: tokio::sync::mpsc::Sender<Vec<u8>>) -> Self {
        Self(ResizeTarget::Attach(frames))
    }

    /// Sets the terminal's size; the kernel tells the guest's process group with SIGWINCH.
    pub fn resize(&self, width: u16, height: u16) {
        match &self.0 {
            ResizeTarget::None => {}
            ResizeTarget::Pty(master) => {
                let ws = libc::winsize {
                    ws_row: height,
                    ws_col: width,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is ours.
                unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            ResizeTarget::Attach(frames) => {
                let mut size = [0u8; 4];
                size[..2].copy_from_slice(&width.to_be_bytes());
                size[2..].copy_from_slice(&height.to_be_bytes());
                // A full queue drops the size: a later one supersedes it anyway.
                let _ = frames.try_send(crate::runner::attach::frame(
                    crate::runner::attach::RESIZE,
                    &size,
                ));
            }
        }
    }
}

impl ExecProcess {
    /// An attach session's process-like view.
    pub(super) fn attached(
        conn: super::attach::Connection,
        stdin: Option<ExecWriter>,
        stdout: ExecReader,
        stderr: Option<ExecReader>,
        resize: Resizer,
        container_id: &str,
    ) -> Self {
        Self {
            end: Ending::Attach(conn),
            stdin,
            stdout: Some(stdout),
            stderr,
            resize,
            container_id: container_id.to_owned(),
        }
    }

    /// A handle that resizes this exec's terminal.
    pub fn resizer(&self) -> Resizer {
        self.resize.clone()
    }

    /// Waits for the command, killing it if the container exits first or `cancel` resolves
    /// first. An attach session ends as [`ExecEnd::Exited`] `(0)` when the container does
    /// (nothing is killed), and is disconnected on `cancel`.
    pub async fn wait(&mut self, cancel: impl std::future::Future<Output = ()>) -> Result<ExecEnd> {
        use std::os::unix::process::ExitStatusExt;
        let (child, exited) = match &mut self.end {
            Ending::Child { child, exited } => (child, exited),
            Ending::Attach(conn) => {
                return Ok(tokio::select! {
                    () = conn.closed() => ExecEnd::Exited(0),
                    () = cancel => {
                        conn.disconnect();
                        ExecEnd::Cancelled
                    }
                });
            }
        };
        let end = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(RuntimeError::io("wait exec runner"))?;
                return Ok(ExecEnd::Exited(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                ));
            }
            () = async {
                let _ = exited.wait_for(|e| *e).await;
            } => ExecEnd::ContainerExited,
            () = cancel => ExecEnd::Cancelled,
        };
        tracing::debug!(container = %self.container_id, ?end, "killing exec runner");
        // Still our unreaped child: the PID cannot have been reused.
        let _ = child.start_kill();
        let _ = child.wait().await;
        Ok(end)
    }
}

impl Runtime {
    /// Checks that `id` names a running container an exec can start in; returns its full ID.
    pub fn check_exec(&self, id: &str) -> Result<String> {
        let c = self.container(id)?;
        if !c.snapshot().is_serving() {
            return Err(RuntimeError::not_running(&c.meta.id));
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
            resize: Resizer(ResizeTarget::None),
            end: Ending::Child { child, exited },
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
            resize: Resizer::for_master(master),
            end: Ending::Child { child, exited },
            container_id: container_id.to_owned(),
        })
    }
}
