//! Container lifecycle: create (image → argv/env/preopens, cgroup, rootfs), start (runner
//! process), stop (SIGTERM, then SIGKILL after the timeout), remove, exec, log reopen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    Container, ContainerEventKind, Result, Runtime, RuntimeError, Undo, container_name_key,
    run_undo, with_cleanup,
};
use crate::container::{
    ContainerMeta, ContainerPhase, ContainerRecord, ContainerSpec, ContainerState, merge_env,
    resolve_argv,
};
use crate::runner::{RunMode, RunnerSpec};

/// Annotation (on the container or its pod) choosing the port a wasi:http component is
/// served on. Default [`DEFAULT_HTTP_PORT`].
pub const HTTP_PORT_ANNOTATION: &str = "wasmcri.io/http-port";
/// Environment variable with the same meaning, for manifests that cannot set annotations.
pub const HTTP_PORT_ENV: &str = "WASMCRI_HTTP_PORT";
/// Port wasi:http components listen on when nothing else is said.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// ExecSync output kept per stream; a command that writes more is killed (see
/// `process::read_capped`). Half the kubelet's 16 MiB gRPC message limit, so a reply carrying
/// both streams at the cap, plus the note, still reaches it.
pub(super) const EXEC_OUTPUT_LIMIT: usize = 8 * 1024 * 1024 - 4096;

/// What CreateContainer asks for, in domain terms: the [`ContainerSpec`] the record keeps,
/// and the process part of the request, which creation resolves against the image into the
/// container's argv, environment, working directory and credentials.
#[derive(Debug, Clone, Default)]
pub struct NewContainer {
    /// What the record keeps as asked.
    pub spec: ContainerSpec,
    /// Replaces the image Entrypoint.
    pub command: Vec<String>,
    /// Replaces the image Cmd.
    pub args: Vec<String>,
    /// Working directory (else the image's, else `/`).
    pub working_dir: String,
    /// Environment (overrides the image's).
    pub env: Vec<(String, String)>,
    /// Who to run as (resolved against the image's user and files at creation).
    pub user: super::UserRequest,
}

/// The `.wasm` file a guest path (argv[0], exec `cmd[0]`) names in an image rootfs: resolved
/// inside it, `..` stopping at its root and symlinks followed chroot-style, so a command can
/// never name a file of the host.
pub(super) fn wasm_in_rootfs(rootfs: &Path, guest_path: &str) -> Option<PathBuf> {
    if !guest_path.ends_with(".wasm") {
        return None;
    }
    crate::images::resolve_in_root(rootfs, guest_path).map(|rel| rootfs.join(rel))
}

/// What ExecSync returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutput {
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
}

impl Runtime {
    /// CreateContainer.
    pub async fn create_container(self: &Arc<Self>, req: NewContainer) -> Result<String> {
        if req.spec.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "container metadata.name is empty".into(),
            ));
        }
        let pod = self.pod(&req.spec.pod_id)?;
        if !super::pod_ready(&pod.state()) {
            return Err(RuntimeError::precondition(
                "pod sandbox",
                &pod.meta.id,
                "is not ready",
            ));
        }
        let this = self.clone();
        let pod_meta = pod.meta.clone();
        let pod_id = pod.meta.id.clone();
        tokio::spawn(async move {
            let id = crate::ids::new_id();
            let key = container_name_key(&pod_meta.id, &req.spec.name, req.spec.attempt);
            this.reserve("container", &key, &id)?;
            let mut undo: Vec<Undo> = Vec::new();
            {
                let (this, key, id) = (this.clone(), key.clone(), id.clone());
                undo.push(Box::pin(async move {
                    this.release(&key, &id);
                    Ok(())
                }));
            }
            match this.create_steps(&id, &pod_meta, req, &mut undo).await {
                Ok(()) => Ok(id),
                Err(e) => Err(with_cleanup(e, run_undo(undo).await)),
            }
        })
        .await
        .map_err(RuntimeError::task(
            "create container",
            format!("pod sandbox {pod_id}"),
        ))?
    }

    async fn create_steps(
        self: &Arc<Self>,
        id: &str,
        pod: &crate::pod::PodMeta,
        req: NewContainer,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let mut req = req;
        self.resolve_image_volumes(&mut req.spec.mounts)?;
        let image = self.images.get(&req.spec.image)?;
        let entry = image.wasm.clone().ok_or_else(|| {
            RuntimeError::precondition("image", &req.spec.image, "holds no wasm module to run")
        })?;
        let argv = resolve_argv(
            &req.command,
            &req.args,
            &image.config.entrypoint,
            &image.config.cmd,
        );
        // The module to run: argv[0] if it names a .wasm file in the image, else the image's.
        let wasm = argv
            .first()
            .and_then(|a| wasm_in_rootfs(&image.rootfs, a))
            .unwrap_or_else(|| entry.path.clone());
        let creds = super::users::resolve(&image.rootfs, &image.config.user, &req.user)
            .map_err(RuntimeError::InvalidArgument)?;
        if let Some(m) = &pod.spec.id_mappings {
            m.check_ids(creds.uid, creds.gid, &creds.additional_gids)
                .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        }
        let env = merge_env(&image.config.env, &req.env);
        let cwd = if !req.working_dir.is_empty() {
            req.working_dir.clone()
        } else if !image.config.working_dir.is_empty() {
            image.config.working_dir.clone()
        } else {
            "/".into()
        };
        let http_port = if entry.world == crate::images::detect::World::HttpProxy {
            Some(http_port(
                &req.spec.annotations,
                &pod.spec.annotations,
                &env,
            )?)
        } else {
            None
        };

        let dir = self.config.containers_dir().join(id);
        std::fs::create_dir_all(&dir)
            .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        {
            let dir = dir.clone();
            undo.push(Box::pin(async move {
                crate::store::remove(&dir).map_err(RuntimeError::from)
            }));
        }

        let log_file = if req.spec.log_path.is_empty() || pod.spec.log_directory.is_empty() {
            None
        } else {
            let p = log_file_path(&pod.spec.log_directory, &req.spec.log_path)?;
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(RuntimeError::io(format!(
                    "create log dir {}",
                    parent.display()
                )))?;
            }
            Some(p)
        };

        let cgroup_path = format!("{}/{}", pod.spec.cgroup_parent.trim_end_matches('/'), id);
        let cgroup = {
            let (path, res) = (cgroup_path.clone(), req.spec.resources.clone());
            self.cgroups_blocking(move |cg| cg.create(&path, &res))
                .await?
        };
        if let Some(h) = cgroup.clone() {
            let rt = self.clone();
            undo.push(Box::pin(async move {
                rt.cgroups_blocking(move |cg| cg.remove_handle(&h))
                    .await
                    .map(drop)
            }));
        }

        let precompiled = self.precompiled_for(&wasm).await;
        let meta = ContainerMeta {
            id: id.to_owned(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            created_at: crate::ids::now_ns(),
            log_file,
            args: argv,
            env,
            cwd,
            rootfs: image.rootfs.clone(),
            wasm,
            precompiled,
            http_port,
            cgroup_path,
            cgroup,
            dir,
            uid: Some(creds.uid),
            gid: Some(creds.gid),
            additional_gids: creds.additional_gids,
            spec: req.spec,
        };
        let record = ContainerRecord {
            meta,
            state: ContainerState::created(),
        };
        let c = Container::new(record);
        self.save_container(&c)?;
        self.containers
            .write()
            .expect("containers lock")
            .insert(id.to_owned(), c.clone());
        self.emit_container_event(&c, ContainerEventKind::Created);
        Ok(())
    }

    /// The precompiled artifact for a module, compiling it (once) if the cache has none.
    /// A failure is not fatal here: the runner compiles for itself and reports a broken
    /// module as the container's exit reason.
    pub(super) async fn precompiled_for(&self, wasm: &Path) -> Option<PathBuf> {
        if let Some(p) = self.precompiled.lock().expect("precompiled lock").get(wasm)
            && p.exists()
        {
            return Some(p.clone());
        }
        let (engine, cache, w) = (
            self.engine.clone(),
            self.config.cache_dir(),
            wasm.to_owned(),
        );
        match tokio::task::spawn_blocking(move || {
            crate::wasm::precompile_cached(&engine, &cache, &w)
        })
        .await
        {
            Ok(Ok(p)) => {
                self.precompiled
                    .lock()
                    .expect("precompiled lock")
                    .insert(wasm.to_owned(), p.clone());
                Some(p)
            }
            Ok(Err(e)) => {
                tracing::warn!(wasm = %wasm.display(), error = %e, "precompile failed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "precompile task failed");
                None
            }
        }
    }

    /// Builds the runner spec for a container (or an exec in it).
    pub(super) fn runner_spec(
        &self,
        c: &Container,
        mode: RunMode,
        exit_file: PathBuf,
    ) -> Result<RunnerSpec> {
        let m = &c.meta;
        let pod = self.pod(&m.spec.pod_id)?;
        let preopens = match c.preopens.get() {
            Some(p) => p.clone(),
            None => {
                let p = self.preopens(c, &pod.meta)?;
                c.preopens.get_or_init(|| p).clone()
            }
        };
        let cgroup = match (&self.cgroups, &m.cgroup) {
            (Some(cg), Some(h)) => Some(cg.membership(&h.path)?),
            _ => None,
        };
        let (resolv_conf, hosts) = Self::name_files(c, &pod.meta);
        // Fails closed: a pod with a mapping never runs a runner outside its namespace.
        let userns = match (&pod.meta.spec.id_mappings, &pod.meta.userns) {
            (None, _) => None,
            (Some(mappings), Some(path)) => Some(crate::runner::spec::UserNamespace {
                path: path.clone(),
                mappings: mappings.clone(),
            }),
            (Some(_), None) => {
                return Err(RuntimeError::precondition(
                    "pod sandbox",
                    &pod.meta.id,
                    "has a user namespace mapping but no namespace",
                ));
            }
        };
        Ok(RunnerSpec {
            container_id: m.id.clone(),
            mode,
            wasm: m.wasm.clone(),
            precompiled: m.precompiled.clone(),
            args: m.args.clone(),
            env: m.env.clone(),
            cwd: m.cwd.clone(),
            preopens,
            log_path: m.log_file.clone(),
            exit_file,
            cgroup,
            netns: pod.meta.netns.clone(),
            uid: m.uid,
            gid: m.gid,
            additional_gids: m.additional_gids.clone(),
            stdin: m.spec.stdin,
            stdio: crate::runner::StdioSpec {
                attach_socket: Some(c.attach_socket()),
                stdin_once: m.spec.stdin_once,
                tty: m.spec.tty,
            },
            oom_score_adj: m.spec.oom_score_adj,
            stop_grace_ms: None,
            debug_log: Some(c.runner_log()),
            jail: Some(Self::jail_dir(c)),
            resolv_conf,
            hosts,
            userns,
        })
    }

    /// StartContainer: spawns the runner and waits for it to report that the guest is
    /// about to run. A runner that cannot start leaves the container Exited with its reason.
    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let c = self.container(id)?;
        let _op = c.op.lock().await;
        c.transition(ContainerState::begin_start)?;
        let t0 = std::time::Instant::now();
        let spec = match self.start_spec(&c) {
            Ok(spec) => spec,
            Err(e) => {
                // No runner exists yet: the container stays startable.
                c.transition(ContainerState::cancel_start)?;
                return Err(e);
            }
        };
        let t_spec = t0.elapsed();
        let (mut child, pid, pid_start) = match self.start_runner(&spec).await {
            Ok(v) => v,
            Err(message) => {
                let rec = self.finish_failed_start(&c, None, &message).await;
                return Err(RuntimeError::StartFailed {
                    id: c.meta.id.clone(),
                    message: rec.message,
                });
            }
        };
        if let Err(e) = c.transition(|st| st.started(pid, pid_start, crate::ids::now_ns())) {
            let _ = child.start_kill();
            self.watch_child(c.clone(), child);
            return Err(e);
        }
        let t_runner = t0.elapsed();
        // Persist the PID while the runner loads its module (a write and a rename, no fsync:
        // no need for a blocking thread): a restarted daemon must know every runner it started.
        let saved = self.save_container(&c);
        let ready = Self::wait_ready(&mut child).await;
        let t_ready = t0.elapsed();
        tracing::debug!(
            pid,
            spec_us = t_spec.as_micros() as u64,
            runner_us = t_runner.as_micros() as u64,
            ready_us = t_ready.as_micros() as u64,
            saved_us = t0.elapsed().as_micros() as u64,
            "runner started"
        );
        match (ready, saved) {
            (Ok(()), Ok(())) => {
                self.watch_child(c.clone(), child);
                self.emit_container_event(&c, ContainerEventKind::Started);
                Ok(())
            }
            (Ok(()), Err(e)) => {
                // Not durably recorded: do not leave a runner nobody would find after a restart.
                let _ = child.start_kill();
                self.watch_child(c.clone(), child);
                Err(e)
            }
            (Err(message), _) => {
                let rec = self.finish_failed_start(&c, Some(child), &message).await;
                Err(RuntimeError::StartFailed {
                    id: c.meta.id.clone(),
                    message: rec.message,
                })
            }
        }
    }

    /// The runner spec of a container's start, with the directory of its exit record made.
    fn start_spec(&self, c: &Container) -> Result<RunnerSpec> {
        let mode = match c.meta.http_port {
            Some(port) => RunMode::Http { port },
            None => RunMode::Command,
        };
        let exit_file = c.exit_file();
        if let Some(dir) = exit_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        }
        self.runner_spec(c, mode, exit_file)
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout_s` seconds (0: at once).
    /// Stopping a container that is not running, or no longer exists, succeeds (the CRI
    /// makes StopContainer idempotent; critest checks the unknown-ID case).
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout_s: i64) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = c.op.lock().await;
        self.stop_locked(&c, timeout_s).await
    }

    async fn stop_locked(&self, c: &Arc<Container>, timeout_s: i64) -> Result<()> {
        let st = c.snapshot();
        if st.phase() != ContainerPhase::Running {
            // Exec runners die with the container's exit; this catches one that raced it.
            c.kill_execs();
            return Ok(());
        }
        let mut rx = c.exited.subscribe();
        if timeout_s > 0 {
            self.signal(c, nix::sys::signal::Signal::SIGTERM);
            let wait =
                tokio::time::timeout(Duration::from_secs(timeout_s as u64), rx.wait_for(|v| *v));
            if wait.await.is_ok() {
                return Ok(());
            }
        }
        self.signal(c, nix::sys::signal::Signal::SIGKILL);
        match tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(RuntimeError::deadline(
                "container",
                &c.meta.id,
                "did not exit 10s after SIGKILL",
            )),
        }
    }

    /// RemoveContainer: force-stops a running container, then removes its cgroup, files,
    /// record and name. Removing an unknown container succeeds.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Before waiting for the lock: a start queued behind a stop must not run.
        c.state.lock().expect("container state lock").begin_remove();
        let _op = c.op.lock().await;
        self.stop_locked(&c, 0).await?;
        if let Some(h) = c.meta.cgroup.clone() {
            self.cgroups_blocking(move |cg| cg.remove_handle(&h))
                .await?;
        }
        crate::store::remove(&self.container_meta_path(&c.meta.id))?;
        crate::store::remove(&c.meta.dir)?;
        self.containers
            .write()
            .expect("containers lock")
            .remove(&c.meta.id);
        self.release(
            &container_name_key(&c.meta.spec.pod_id, &c.meta.spec.name, c.meta.spec.attempt),
            &c.meta.id,
        );
        self.emit_container_event(&c, ContainerEventKind::Deleted);
        Ok(())
    }

    /// ReopenContainerLog: asks the runner to reopen its log file (after the kubelet
    /// rotated it) and waits until the new file exists.
    pub async fn reopen_log(self: &Arc<Self>, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.snapshot().phase() != ContainerPhase::Running {
            return Err(RuntimeError::not_running(&c.meta.id));
        }
        let Some(log) = c.meta.log_file.clone() else {
            return Ok(());
        };
        self.signal(&c, nix::sys::signal::Signal::SIGUSR1);
        for _ in 0..200 {
            if log.exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(RuntimeError::deadline(
            "container",
            &c.meta.id,
            format!("did not reopen {}", log.display()),
        ))
    }

    /// ExecSync: runs `cmd` as a fresh instance of the container's module (or of the `.wasm`
    /// in its rootfs that `cmd[0]` names), in the container's cgroup and network namespace,
    /// with its env and preopens, and returns its output and exit code.
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<ExecOutput> {
        let c = self.container(id)?;
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("exec cmd is empty".into()));
        }
        if c.snapshot().phase() != ContainerPhase::Running {
            return Err(RuntimeError::not_running(&c.meta.id));
        }
        let timeout_ms = (timeout_s.max(0) as u64) * 1000;
        let spec = self
            .exec_spec(&c, RunMode::Exec { timeout_ms }, cmd)
            .await?;
        self.run_exec(&c, &spec, timeout_ms).await
    }

    /// The runner spec of an exec (ExecSync or a streaming exec) of `cmd` in `c`: the
    /// container's context, with the `.wasm` in its rootfs that `cmd[0]` names if it names
    /// one, no CRI log and no debug log (the exec's output and errors are the caller's).
    pub(super) async fn exec_spec(
        &self,
        c: &Container,
        mode: RunMode,
        cmd: Vec<String>,
    ) -> Result<RunnerSpec> {
        let mut spec = self.runner_spec(c, mode, PathBuf::new())?;
        spec.log_path = None;
        spec.debug_log = None;
        // An exec has stdio of its own: the container's attach socket is not its to bind.
        spec.stdio = Default::default();
        if let Some(cmd0) = cmd.first().filter(|c| c.ends_with(".wasm")) {
            spec.wasm = wasm_in_rootfs(&c.meta.rootfs, cmd0).ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "exec cmd[0] {cmd0:?} names no .wasm file in the container's image"
                ))
            })?;
            spec.precompiled = self.precompiled_for(&spec.wasm).await;
        }
        spec.args = cmd;
        Ok(spec)
    }
}

/// The container's CRI log file: `log_path` inside the sandbox's `log_directory`. The runner
/// opens it as root, so neither may climb out: the directory must be absolute and the file
/// relative, both without `..`.
fn log_file_path(log_directory: &str, log_path: &str) -> Result<PathBuf> {
    use std::path::Component;
    let dir = Path::new(log_directory);
    let rel = Path::new(log_path);
    let dir_ok = dir.is_absolute() && dir.components().all(|c| c != Component::ParentDir);
    let rel_ok = rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && rel.file_name().is_some();
    if !dir_ok {
        return Err(RuntimeError::InvalidArgument(format!(
            "log_directory {log_directory:?} must be an absolute path without '..'"
        )));
    }
    if !rel_ok {
        return Err(RuntimeError::InvalidArgument(format!(
            "log_path {log_path:?} must be a relative file path without '..'"
        )));
    }
    Ok(dir.join(rel))
}

/// The port a wasi:http component is served on.
fn http_port(
    ctr: &HashMap<String, String>,
    pod: &HashMap<String, String>,
    env: &[(String, String)],
) -> Result<u16> {
    let raw = ctr
        .get(HTTP_PORT_ANNOTATION)
        .or_else(|| pod.get(HTTP_PORT_ANNOTATION))
        .cloned()
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == HTTP_PORT_ENV)
                .map(|(_, v)| v.clone())
        });
    match raw {
        None => Ok(DEFAULT_HTTP_PORT),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!(
                    "invalid HTTP port {v:?} (from {HTTP_PORT_ANNOTATION} or {HTTP_PORT_ENV})"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_in_the_log_directory() {
        let ok = log_file_path("/var/log/pods/ns_p_uid", "main/0.log").unwrap();
        assert_eq!(ok, PathBuf::from("/var/log/pods/ns_p_uid/main/0.log"));
        for (dir, rel) in [
            ("/var/log/pods/x", "../../../etc/cron.d/evil"),
            ("/var/log/pods/x", "main/../../y.log"),
            ("/var/log/pods/x", "/etc/passwd"),
            ("/var/log/pods/x", ""),
            ("/var/log/pods/x", "main/.."),
            ("relative/dir", "main/0.log"),
            ("/var/log/pods/../../etc", "main/0.log"),
        ] {
            assert!(
                matches!(
                    log_file_path(dir, rel),
                    Err(RuntimeError::InvalidArgument(_))
                ),
                "{dir} + {rel}"
            );
        }
    }

    #[test]
    fn http_port_sources() {
        let none = HashMap::new();
        assert_eq!(http_port(&none, &none, &[]).unwrap(), 8080);
        let mut pod = HashMap::new();
        pod.insert(HTTP_PORT_ANNOTATION.to_string(), "9000".to_string());
        assert_eq!(http_port(&none, &pod, &[]).unwrap(), 9000);
        let env = vec![(HTTP_PORT_ENV.to_string(), "7000".to_string())];
        assert_eq!(http_port(&none, &none, &env).unwrap(), 7000);
        let mut ctr = HashMap::new();
        ctr.insert(HTTP_PORT_ANNOTATION.to_string(), "x".to_string());
        assert!(matches!(
            http_port(&ctr, &pod, &env),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }
}
