//! Standby runners: a few runner processes started ahead of need (`wasmcri runner --standby`,
//! see [`crate::runner::standby`]), each blocked reading its spec (one line of JSON) from a
//! pipe on its stdin.
//! StartContainer hands the next one its spec instead of paying for fork/exec, the dynamic
//! loader and engine setup on the request path, and a replacement is started in the
//! background. With none idle (a burst of starts, or `standby_runners = 0`), StartContainer
//! spawns one the same way and hands it the spec at once.
//!
//! A standby has also entered a mount namespace of its own whose root is its jail's empty
//! tmpfs (`runner::jail::prepare`): the old root's detach, which waits for an RCU grace
//! period, happens while it idles rather than in StartContainer. Besides that it owns
//! nothing yet: no cgroup, no netns, no files, and nothing it mounted is visible to the
//! host. When the daemon exits for any reason its end of the pipe closes and every standby
//! exits with 0 on its own (its namespace goes with it), so a crash leaks nothing and a
//! restarted daemon has nothing to recover.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;

use super::Runtime;
use super::process::pid_start_time;

/// One idle standby runner.
pub(super) struct Standby {
    child: tokio::process::Child,
    pid: i32,
    pid_start: Option<u64>,
}

/// A spawned runner as StartContainer tracks it: the child, its PID and start time.
pub(super) type Spawned = (tokio::process::Child, i32, Option<u64>);

impl Runtime {
    /// Starts the runner for `spec`: an idle standby one if there is a live one (a
    /// replacement is started in the background), else one spawned now. Either way the spec
    /// goes over the runner's stdin as one line of JSON; no file is written.
    pub(super) async fn start_runner(
        self: &Arc<Self>,
        spec: &crate::runner::RunnerSpec,
    ) -> std::result::Result<Spawned, String> {
        let mut line = serde_json::to_vec(spec).map_err(|e| format!("runner spec: {e}"))?;
        line.push(b'\n');
        loop {
            let idle = self.standby.lock().expect("standby lock").pop();
            let from_pool = idle.is_some();
            let mut s = match idle {
                Some(s) => {
                    self.refill_standby();
                    s
                }
                None => {
                    let this = self.clone();
                    tokio::task::spawn_blocking(move || this.spawn_standby())
                        .await
                        .map_err(|e| format!("spawn runner: {e}"))?
                        .map_err(|e| format!("spawn runner: {e}"))?
                }
            };
            if from_pool && !matches!(s.child.try_wait(), Ok(None)) {
                continue; // died while idle (killed by hand?): reaped, try the next
            }
            let Some(mut stdin) = s.child.stdin.take() else {
                continue;
            };
            // Dropping stdin afterwards closes our end: the runner reads exactly one line.
            if let Err(e) = stdin.write_all(&line).await {
                let _ = s.child.start_kill();
                let _ = s.child.wait().await;
                if !from_pool {
                    return Err(format!("runner did not take its spec: {e}"));
                }
                tracing::debug!(pid = s.pid, error = %e, "standby runner gone; trying another");
                continue;
            }
            return Ok((s.child, s.pid, s.pid_start));
        }
    }

    /// Tops the pool up to `config.standby_runners` in the background (one spawn task at a
    /// time).
    pub(super) fn refill_standby(self: &Arc<Self>) {
        let want = self.config.standby_runners;
        if want == 0
            || self.standby.lock().expect("standby lock").len() >= want
            || self.standby_refilling.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            while !this.shutting_down.load(Ordering::SeqCst)
                && this.standby.lock().expect("standby lock").len() < want
            {
                match this.spawn_standby() {
                    Ok(s) => this.standby.lock().expect("standby lock").push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a standby runner");
                        break;
                    }
                }
            }
            this.standby_refilling.store(false, Ordering::SeqCst);
        });
    }

    fn spawn_standby(&self) -> std::io::Result<Standby> {
        let mut cmd = tokio::process::Command::new(&self.runner_exe);
        cmd.arg("runner")
            .arg("--standby")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Until it has a spec (and its debug log), the daemon's stderr.
            .stderr(Stdio::inherit())
            .kill_on_drop(false)
            // Own process group: a signal to the daemon's group never reaches the runners.
            .process_group(0);
        let child = cmd.spawn()?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        Ok(Standby {
            child,
            pid,
            pid_start: pid_start_time(pid),
        })
    }

    /// Ends the idle standby runners (closing their pipes makes them exit) and waits for them.
    pub(super) async fn stop_standby(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.standby.lock().expect("standby lock"));
        for mut s in idle {
            drop(s.child.stdin.take());
            if tokio::time::timeout(std::time::Duration::from_secs(2), s.child.wait())
                .await
                .is_err()
            {
                let _ = s.child.start_kill();
                let _ = s.child.wait().await;
            }
        }
    }
}
