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

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};

use super::containers::wasm_in_rootfs;
use super::{Result, Runtime, RuntimeError};
use crate::container::ContainerPhase;
use crate::runner::RunMode;

/// A running interactive exec.
pub struct ExecProcess {
    child: Child,
    /// The guest's stdin (`None` if the exec has no stdin; dropping it is end of input).
    pub stdin: Option<ChildStdin>,
    /// The guest's stdout.
    pub stdout: Option<ChildStdout>,
    /// The guest's stderr (runner errors, such as a module that cannot load, land here too).
    pub stderr: Option<ChildStderr>,
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

impl ExecProcess {
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

    /// Starts `cmd` in container `id` with live stdio (stdin only if `stdin`).
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        stdin: bool,
    ) -> Result<ExecProcess> {
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec cmd is empty".into()));
        }
        self.check_exec(id)?;
        let c = self.container(id)?;
        // Subscribed before the spawn so an exit in between is not missed.
        let exited = c.exited.subscribe();
        let mut spec = self.runner_spec(&c, RunMode::ExecStream, PathBuf::new())?;
        spec.log_path = None;
        // Runner errors go to the exec's stderr, as for ExecSync.
        spec.debug_log = None;
        spec.stdin = stdin;
        if cmd[0].ends_with(".wasm") {
            spec.wasm = wasm_in_rootfs(&c.meta.rootfs, &cmd[0]).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "exec cmd[0] {:?} names no .wasm file in the container's image",
                    cmd[0]
                ))
            })?;
            spec.precompiled = self.precompiled_for(&spec.wasm).await;
        }
        spec.args = cmd;
        let mut line = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Io {
            what: "encode exec runner spec".into(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let mut child = tokio::process::Command::new(&self.runner_exe)
            .arg("runner")
            .arg("--standby")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group: a signal to the daemon's group never reaches the runner.
            .process_group(0)
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
            stdin: stdin.then_some(pipe),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            exited,
            container_id: c.meta.id.clone(),
        })
    }
}
