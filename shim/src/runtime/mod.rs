//! The runtime domain: pods, containers and images as the kubelet drives them, with no
//! protobuf types. [`crate::server`] translates each CRI RPC into one call here.
//!
//! Concurrency: the maps are behind short-held std locks (never across an `.await`); each
//! pod and container serialises its own lifecycle operations with an async mutex, so a
//! `StopContainer` racing a `RemoveContainer` see each other's effects in order, while
//! operations on different objects run in parallel.

mod attach;
mod containers;
mod events;
mod exec_stream;
mod images;
mod mounts;
mod pods;
mod process;
mod recover;
mod standby;
mod stats;
mod users;
mod views;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::Config;
use crate::container::{ContainerRecord, ContainerState, TransitionError};
use crate::pod::{PodRecord, PodState};

pub use containers::{ExecOutput, NewContainer};
pub use events::{ContainerEvent, ContainerEventKind, EventsEnded, Subscription};
pub use exec_stream::{ExecEnd, ExecProcess, ExecReader, ExecWriter, Resizer};
pub use mounts::ImageVolumeError;
pub use pods::{NewPod, POD_IFNAME};
pub use process::{pid_start_time, same_process};
pub use stats::{PodSample, Usage};
pub use users::{Credentials, GroupsPolicy, UserRequest};
pub use views::{ContainerView, FsUsage, ImageView, PodView, RuntimeStatus};

/// Everything that can go wrong in a runtime operation, with the object it concerns.
///
/// Variants name the pod, container or image (or the path) that failed; wrapped module
/// errors keep their own type so the gRPC edge picks a code per cause (`crate::server`'s
/// `code_of`, tested per variant). Only request validation, where no object exists yet,
/// carries a bare message naming the field.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such pod, container or image.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `pod sandbox`, `container` or `image`.
        kind: &'static str,
        /// What was looked up.
        id: String,
    },
    /// An ID prefix matched more than one object.
    #[error("{kind} ID prefix {prefix:?} is ambiguous")]
    Ambiguous {
        /// Object kind.
        kind: &'static str,
        /// The prefix.
        prefix: String,
    },
    /// The name is held by another object until that one is removed.
    #[error("name {name:?} is reserved for {kind} {holder}")]
    NameReserved {
        /// Object kind.
        kind: &'static str,
        /// The reserved name.
        name: String,
        /// ID of the holder.
        holder: String,
    },
    /// A request field is missing or invalid. The object the request would create or act on
    /// is not known yet, so the message names the field and its value instead.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the operation.
    #[error("{kind} {id} {reason}")]
    FailedPrecondition {
        /// `pod sandbox`, `container` or `image`.
        kind: &'static str,
        /// Its ID (or, for an image, the reference it was asked by).
        id: String,
        /// What is wrong, as a predicate (`is not running`).
        reason: String,
    },
    /// An operation on the object did not finish in time.
    #[error("{kind} {id} {reason}")]
    DeadlineExceeded {
        /// Object kind.
        kind: &'static str,
        /// Its ID.
        id: String,
        /// What did not happen (`did not exit 10s after SIGKILL`).
        reason: String,
    },
    /// An ExecSync command ran past its timeout.
    #[error("exec in container {id}: command timed out after {seconds}s")]
    ExecTimedOut {
        /// Container ID.
        id: String,
        /// The timeout the kubelet gave.
        seconds: u64,
    },
    /// Not supported by this runtime.
    #[error("{0}")]
    Unimplemented(String),
    /// The host has no usable cgroup hierarchy, so there is nothing to read stats from.
    #[error("no cgroups on this host: no stats")]
    NoCgroups,
    /// A task running part of an operation panicked or was cancelled: a bug or the daemon
    /// going away, never the request's fault.
    #[error("{task} of {object}: task failed: {source}")]
    TaskFailed {
        /// What the task did (`create container`, `remove network namespace`, ...).
        task: &'static str,
        /// What it worked on, as `kind ID` (`pod sandbox 3f2a...`).
        object: String,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The attach socket of a running container cannot be reached.
    #[error("container {id} cannot be attached to: its attach socket {}: {source}", path.display())]
    AttachUnavailable {
        /// Container ID.
        id: String,
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Exec, Attach and PortForward need the streaming server, and it is not running.
    #[error("the streaming server is not running")]
    NoStreamingServer,
    /// The streaming server holds too many unused session URLs to hand out one more.
    #[error("{kind} {id}: {source}")]
    StreamingBusy {
        /// `container` or `pod sandbox`.
        kind: &'static str,
        /// Its ID.
        id: String,
        /// The cache's refusal.
        #[source]
        source: crate::streaming::CacheFull,
    },
    /// Image store failure.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// cgroup failure.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    /// An image volume that cannot be mounted.
    #[error(transparent)]
    ImageVolume(#[from] ImageVolumeError),
    /// Network (netns/CNI) failure.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// A pod sysctl refused by this runtime or the kernel, or one that could not be written.
    #[error(transparent)]
    Sysctl(#[from] crate::network::sysctl::SysctlError),
    /// A pod user namespace that is refused or cannot be made.
    #[error(transparent)]
    Userns(#[from] crate::userns::UsernsError),
    /// Metadata store failure.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Other OS failure, with the path or operation.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The runner could not be started.
    #[error("container {id} failed to start: {message}")]
    StartFailed {
        /// Container ID.
        id: String,
        /// The runner's one-line reason.
        message: String,
    },
    /// An operation failed and so did some of its cleanup steps: the cause and every
    /// cleanup failure are reported, each with its own type (as youki's
    /// `CreateContainerError` does).
    #[error("{error}; cleanup also failed: {}", join(cleanup))]
    CleanupFailed {
        /// The original failure.
        error: Box<RuntimeError>,
        /// The failed cleanup steps, in the order they ran.
        cleanup: Vec<RuntimeError>,
    },
}

/// `e1; e2; ...`
fn join(errors: &[RuntimeError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl RuntimeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Io { what, source }
    }

    /// [`RuntimeError::FailedPrecondition`] of an object.
    pub(crate) fn precondition(
        kind: &'static str,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> RuntimeError {
        RuntimeError::FailedPrecondition {
            kind,
            id: id.into(),
            reason: reason.into(),
        }
    }

    /// A container that is not running.
    pub(crate) fn not_running(id: impl Into<String>) -> RuntimeError {
        RuntimeError::precondition("container", id, "is not running")
    }

    /// [`RuntimeError::DeadlineExceeded`] of an object.
    pub(crate) fn deadline(
        kind: &'static str,
        id: impl Into<String>,
        reason: impl Into<String>,
    ) -> RuntimeError {
        RuntimeError::DeadlineExceeded {
            kind,
            id: id.into(),
            reason: reason.into(),
        }
    }

    /// Maps the join error of a task doing `task` on `object` (`kind ID`).
    pub(crate) fn task(
        task: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(tokio::task::JoinError) -> RuntimeError {
        let object = object.into();
        move |source| RuntimeError::TaskFailed {
            task,
            object,
            source,
        }
    }
}

/// File name of a runner's exit record.
const EXIT_RECORD: &str = "exit.json";

/// Result of runtime operations.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A sandbox in memory: fixed metadata, state behind a short std lock (never held across an
/// `.await`, so listing and status never wait behind a slow CNI plugin), and an async lock
/// that serialises the sandbox's own lifecycle operations (stop, remove), as for
/// [`Container`].
#[derive(Debug)]
pub struct Pod {
    /// Fixed at creation.
    meta: crate::pod::PodMeta,
    state: Mutex<PodState>,
    op: tokio::sync::Mutex<()>,
}

impl Pod {
    fn new(record: PodRecord) -> Arc<Self> {
        Arc::new(Self {
            meta: record.meta,
            state: Mutex::new(record.state),
            op: tokio::sync::Mutex::new(()),
        })
    }

    /// A consistent copy of the state.
    pub fn state(&self) -> PodState {
        self.state.lock().expect("pod state lock").clone()
    }

    /// The record as it should be persisted now.
    pub fn record(&self) -> PodRecord {
        PodRecord {
            meta: self.meta.clone(),
            state: self.state(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut PodState)) {
        f(&mut self.state.lock().expect("pod state lock"));
    }
}

/// A container in memory.
#[derive(Debug)]
pub struct Container {
    /// Immutable after creation (resources aside, which live in `resources`).
    meta: crate::container::ContainerMeta,
    /// Current state; short std lock, never held across an `.await`.
    state: Mutex<ContainerState>,
    /// Resource limits as last applied (changed by UpdateContainerResources).
    resources: Mutex<crate::cgroups::Resources>,
    /// Serialises start/stop/remove of this container.
    op: tokio::sync::Mutex<()>,
    /// Flips to `true` once the container has exited.
    exited: tokio::sync::watch::Sender<bool>,
    /// The guest's preopens, built (file-mount links included) on first start and reused by
    /// every ExecSync — exec probes run every few seconds.
    preopens: std::sync::OnceLock<Vec<crate::runner::Preopen>>,
    /// This container's exec runners (PID → start time): stopping or removing the container
    /// kills them, so nothing the container started outlives it.
    execs: Mutex<HashMap<i32, Option<u64>>>,
}

impl Container {
    fn new(record: ContainerRecord) -> Arc<Self> {
        let exited = record.state.phase() == crate::container::ContainerPhase::Exited;
        Arc::new(Self {
            resources: Mutex::new(record.meta.spec.resources.clone()),
            meta: record.meta,
            state: Mutex::new(record.state),
            op: tokio::sync::Mutex::new(()),
            exited: tokio::sync::watch::channel(exited).0,
            preopens: Default::default(),
            execs: Default::default(),
        })
    }

    /// Where the runner records how the guest ended: alone in a directory of its own, the
    /// only one handed to the container's user (the runner renames the record into place
    /// after dropping privileges). Nothing the daemon trusts lives there.
    pub fn exit_file(&self) -> PathBuf {
        self.meta.dir.join("exit").join(EXIT_RECORD)
    }

    /// The runner's exit record, if it wrote one. Runners started by a daemon before the
    /// record had a directory of its own wrote it next to the container's other files.
    pub fn read_exit(&self) -> Option<crate::runner::ExitRecord> {
        crate::runner::read_exit_record(&self.exit_file())
            .or_else(|| crate::runner::read_exit_record(&self.meta.dir.join(EXIT_RECORD)))
    }

    /// Records a running exec runner of this container until the guard is dropped.
    fn track_exec(&self, pid: i32) -> ExecGuard<'_> {
        let start = process::pid_start_time(pid);
        self.execs.lock().expect("execs lock").insert(pid, start);
        ExecGuard { c: self, pid }
    }

    /// SIGKILLs every exec runner of this container (checking each is still the process
    /// that was started: its owner may have just reaped it).
    fn kill_execs(&self) {
        for (&pid, &start) in self.execs.lock().expect("execs lock").iter() {
            if !process::same_process(pid, start) {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// The runner's debug log (its stderr).
    pub fn runner_log(&self) -> PathBuf {
        self.meta.dir.join("runner.log")
    }

    /// Applies a lifecycle transition under the state lock; a refusal names the container.
    fn transition<T>(
        &self,
        f: impl FnOnce(&mut ContainerState) -> std::result::Result<T, TransitionError>,
    ) -> Result<T> {
        f(&mut self.state.lock().expect("container state lock"))
            .map_err(|e| RuntimeError::precondition("container", &self.meta.id, e.to_string()))
    }

    /// A consistent copy of the state.
    pub fn snapshot(&self) -> ContainerState {
        self.state.lock().expect("container state lock").clone()
    }

    /// The record as it should be persisted now.
    pub fn record(&self) -> ContainerRecord {
        let mut meta = self.meta.clone();
        meta.spec.resources = self.resources.lock().expect("resources lock").clone();
        ContainerRecord {
            meta,
            state: self.snapshot(),
        }
    }
}

/// Keeps an exec runner's PID in [`Container::execs`] while its owner waits for it; dropped
/// before the owner reaps the process.
struct ExecGuard<'a> {
    c: &'a Container,
    pid: i32,
}

impl Drop for ExecGuard<'_> {
    fn drop(&mut self) {
        self.c.execs.lock().expect("execs lock").remove(&self.pid);
    }
}

/// The runtime: all pods, containers and images of this node.
pub struct Runtime {
    /// Configuration in force.
    config: Config,
    pods: RwLock<HashMap<String, Arc<Pod>>>,
    containers: RwLock<HashMap<String, Arc<Container>>>,
    /// Reserved names → holder ID (pods and containers have disjoint key spaces).
    names: Mutex<HashMap<String, String>>,
    /// The image store.
    images: crate::images::ImageStore,
    /// cgroups, when the host has a usable hierarchy.
    cgroups: Option<Arc<crate::cgroups::Cgroups>>,
    /// The CNI client.
    cni: crate::network::cni::Cni,
    /// The engine used to precompile modules (same configuration as the runners').
    engine: wasmtime::Engine,
    /// Precompiled artifact per wasm path, so a start never hashes or compiles twice.
    precompiled: Mutex<HashMap<PathBuf, PathBuf>>,
    /// Binary to exec as the runner (this executable).
    runner_exe: PathBuf,
    /// Runtime-config values the kubelet pushed (pod CIDR).
    pod_cidr: Mutex<String>,
    /// Last CPU sample per container/pod, for usage_nano_cores.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// Idle standby runners (see [`standby`]).
    standby: Mutex<Vec<standby::Standby>>,
    /// A refill task is running.
    standby_refilling: std::sync::atomic::AtomicBool,
    /// [`Runtime::shutdown`] has begun: start no more standby runners.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Lifecycle events for `GetContainerEvents`.
    events: events::Events,
}

impl Runtime {
    /// Opens (or creates) the runtime's directories and rebuilds state from durable
    /// metadata; running containers are re-attached, not restarted.
    pub async fn open(config: Config) -> anyhow::Result<Arc<Self>> {
        for dir in [
            config.meta_dir().join("pods"),
            config.meta_dir().join("containers"),
            config.containers_dir(),
            config.pods_dir(),
            config.cache_dir(),
            config.netns_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
        }
        let engine = crate::wasm::engine()?;
        let hook = crate::wasm::precompile_hook(engine.clone(), config.cache_dir());
        let images = crate::images::ImageStore::open(config.images_dir(), Some(hook))?;
        let cgroups = match crate::cgroups::Cgroups::detect(&config.cgroup_root) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(error = %e, "no usable cgroups; containers run without limits");
                None
            }
        };
        let cni = crate::network::cni::Cni::new(crate::network::cni::CniConfig {
            conf_dir: config.cni.conf_dir.clone(),
            bin_dirs: config.cni.bin_dirs.clone(),
            cache_dir: config.state.join("cni-cache"),
            plugin_timeout: crate::network::cni::DEFAULT_PLUGIN_TIMEOUT,
        });
        let runner_exe = std::env::current_exe()?;
        let rt = Arc::new(Self {
            pods: Default::default(),
            containers: Default::default(),
            names: Default::default(),
            images,
            cgroups,
            cni,
            engine,
            precompiled: Default::default(),
            runner_exe,
            pod_cidr: Default::default(),
            cpu_samples: Default::default(),
            standby: Default::default(),
            standby_refilling: Default::default(),
            shutting_down: Default::default(),
            events: Default::default(),
            config,
        });
        rt.recover().await?;
        rt.refill_standby();
        Ok(rt)
    }

    /// Daemon shutdown: ends the idle standby runners and waits until every record written
    /// so far is on disk. Running containers are left running.
    pub async fn shutdown(&self) {
        self.stop_standby().await;
        let _ = tokio::task::spawn_blocking(crate::store::flush_pending).await;
    }

    /// Lifecycle events from now on (see [`events`]).
    pub fn subscribe_events(&self) -> Subscription {
        self.events.subscribe()
    }

    /// Ends every event subscription: the daemon is going away, and open streams must not
    /// hold its gRPC server's graceful shutdown.
    pub fn close_events(&self) {
        self.events.close();
    }

    /// Emits an event for a container of a pod that still exists (events of containers
    /// whose sandbox is gone would carry no status the kubelet can use).
    fn emit_container_event(&self, c: &Container, kind: ContainerEventKind) {
        if let Ok(pod) = self.pod(&c.meta.spec.pod_id) {
            self.events.emit(&c.meta.id, &pod, kind);
        }
    }

    // ---- lookups ----

    fn find<T: Clone>(
        map: &HashMap<String, T>,
        kind: &'static str,
        id: &str,
    ) -> Result<(String, T)> {
        if let Some(v) = map.get(id) {
            return Ok((id.to_owned(), v.clone()));
        }
        if !crate::ids::is_id_prefix(id) {
            return Err(RuntimeError::NotFound {
                kind,
                id: id.to_owned(),
            });
        }
        let mut hits = map.iter().filter(|(k, _)| k.starts_with(id));
        match (hits.next(), hits.next()) {
            (Some((k, v)), None) => Ok((k.clone(), v.clone())),
            (Some(_), Some(_)) => Err(RuntimeError::Ambiguous {
                kind,
                prefix: id.to_owned(),
            }),
            _ => Err(RuntimeError::NotFound {
                kind,
                id: id.to_owned(),
            }),
        }
    }

    /// The pod with this ID or unique ID prefix.
    pub fn pod(&self, id: &str) -> Result<Arc<Pod>> {
        Self::find(&self.pods.read().expect("pods lock"), "pod sandbox", id).map(|(_, p)| p)
    }

    /// The container with this ID or unique ID prefix.
    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        Self::find(
            &self.containers.read().expect("containers lock"),
            "container",
            id,
        )
        .map(|(_, c)| c)
    }

    /// Checks that a port-forward to `id` can be served (the sandbox is ready); returns its
    /// full ID.
    pub fn check_port_forward(&self, id: &str) -> Result<String> {
        let pod = self.pod(id)?;
        if !pod_ready(&pod.state()) {
            return Err(RuntimeError::precondition(
                "pod sandbox",
                &pod.meta.id,
                "is not ready",
            ));
        }
        Ok(pod.meta.id.clone())
    }

    /// All pods.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods
            .read()
            .expect("pods lock")
            .values()
            .cloned()
            .collect()
    }

    /// All containers.
    pub fn containers(&self) -> Vec<Arc<Container>> {
        self.containers
            .read()
            .expect("containers lock")
            .values()
            .cloned()
            .collect()
    }

    /// Containers of one pod.
    pub fn containers_of(&self, pod_id: &str) -> Vec<Arc<Container>> {
        self.containers
            .read()
            .expect("containers lock")
            .values()
            .filter(|c| c.meta.spec.pod_id == pod_id)
            .cloned()
            .collect()
    }

    // ---- name reservation ----

    fn reserve(&self, kind: &'static str, name: &str, id: &str) -> Result<()> {
        let mut names = self.names.lock().expect("names lock");
        match names.get(name) {
            Some(holder) if holder != id => Err(RuntimeError::NameReserved {
                kind,
                name: name.to_owned(),
                holder: holder.clone(),
            }),
            _ => {
                names.insert(name.to_owned(), id.to_owned());
                Ok(())
            }
        }
    }

    fn release(&self, name: &str, id: &str) {
        let mut names = self.names.lock().expect("names lock");
        if names.get(name).is_some_and(|h| h == id) {
            names.remove(name);
        }
    }

    fn pod_meta_path(&self, id: &str) -> PathBuf {
        self.config
            .meta_dir()
            .join("pods")
            .join(format!("{id}.json"))
    }

    fn container_meta_path(&self, id: &str) -> PathBuf {
        self.config
            .meta_dir()
            .join("containers")
            .join(format!("{id}.json"))
    }

    fn save_container(&self, c: &Container) -> Result<()> {
        crate::store::save(&self.container_meta_path(&c.meta.id), &c.record())?;
        Ok(())
    }

    async fn save_pod(&self, rec: &PodRecord) -> Result<()> {
        crate::store::save(&self.pod_meta_path(&rec.meta.id), rec)?;
        Ok(())
    }
}

/// Kubelet-style reservation key of a sandbox.
fn pod_name_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("pod/{name}_{namespace}_{uid}_{attempt}")
}

/// Reservation key of a container within its sandbox.
fn container_name_key(pod_id: &str, name: &str, attempt: u32) -> String {
    format!("ctr/{pod_id}/{name}_{attempt}")
}

/// Whether a pod state is ready.
pub fn pod_ready(state: &PodState) -> bool {
    state.phase == crate::pod::PodPhase::Ready
}

/// Runs undo steps last-in-first-out, all of them, even if some fail; returns the failures.
pub(crate) async fn run_undo(undo: Vec<Undo>) -> Vec<RuntimeError> {
    let mut failures = Vec::new();
    for step in undo.into_iter().rev() {
        if let Err(e) = step.await {
            failures.push(e);
        }
    }
    failures
}

/// One registered cleanup step; its error names what it could not undo.
pub(crate) type Undo = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// Combines an operation's error with the failures of its cleanup.
pub(crate) fn with_cleanup(err: RuntimeError, failures: Vec<RuntimeError>) -> RuntimeError {
    if failures.is_empty() {
        err
    } else {
        RuntimeError::CleanupFailed {
            error: Box::new(err),
            cleanup: failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lookup() {
        let mut m = HashMap::new();
        m.insert("abc123".to_string(), 1);
        m.insert("abd456".to_string(), 2);
        assert_eq!(Runtime::find(&m, "x", "abc").unwrap().1, 1);
        assert_eq!(Runtime::find(&m, "x", "abd456").unwrap().1, 2);
        assert!(matches!(
            Runtime::find(&m, "x", "ab"),
            Err(RuntimeError::Ambiguous { .. })
        ));
        assert!(matches!(
            Runtime::find(&m, "x", "zz"),
            Err(RuntimeError::NotFound { .. })
        ));
        assert!(matches!(
            Runtime::find(&m, "x", "fff"),
            Err(RuntimeError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn undo_runs_all_in_reverse() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut undo: Vec<Undo> = Vec::new();
        for i in 0..3 {
            let log = log.clone();
            undo.push(Box::pin(async move {
                log.lock().unwrap().push(i);
                if i == 1 {
                    Err(RuntimeError::Unimplemented("one failed".into()))
                } else {
                    Ok(())
                }
            }));
        }
        let failures = run_undo(undo).await;
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let texts: Vec<String> = failures.iter().map(ToString::to_string).collect();
        assert_eq!(texts, vec!["one failed".to_string()]);
        let e = with_cleanup(RuntimeError::InvalidArgument("x".into()), failures);
        assert!(e.to_string().contains("cleanup also failed: one failed"));
        // The cleanup failure keeps its type next to the cause.
        assert!(matches!(
            &e,
            RuntimeError::CleanupFailed { error, cleanup }
                if matches!(**error, RuntimeError::InvalidArgument(_))
                    && matches!(cleanup[..], [RuntimeError::Unimplemented(_)])
        ));
    }
}
