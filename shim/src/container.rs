//! Containers: what the kubelet asked for ([`ContainerSpec`]), the fixed metadata creation
//! resolved from it ([`ContainerMeta`]) and the state that changes over the container's life
//! ([`ContainerState`]), persisted together as a [`ContainerRecord`].
//!
//! # Lifecycle
//!
//! One state machine, [`ContainerState`], whose transition methods refuse what the lifecycle
//! does not allow with a [`TransitionError`]:
//!
//! ```text
//! Created ──begin_start──▶ Starting ──started──▶ Running ──exit_with──▶ Exited
//!    ▲                        │  │                                        ▲
//!    └──────cancel_start──────┘  └────────exit_with (failed start)────────┘
//! ```
//!
//! `Starting` is StartContainer under way; the CRI and the record see it as `Created` (a
//! daemon that dies then finds the runner unrecorded and kills it). `Unknown` only when the
//! record says running but the process can be neither found nor explained. Removal is not a
//! phase: RemoveContainer first marks the state ([`ContainerState::begin_remove`]) — a
//! running container is then still stopped — and no start is accepted after that.
//!
//! Why a container exited is an [`ExitReason`], written as the CRI's string (`Completed`,
//! `OOMKilled`, ...) only by its `Display` and serde form.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runner::ExitRecord;

/// A bind mount the kubelet asked for, as the guest will see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountSpec {
    /// Path in the container.
    pub container_path: String,
    /// Path on the host; for an image volume, the directory or file of the image's rootfs
    /// it resolved to at creation.
    pub host_path: String,
    /// Read-only.
    pub read_only: bool,
    /// Set for an image volume (CRI `Mount.image`): always read-only.
    #[serde(default)]
    pub image: Option<ImageVolume>,
}

/// An image volume: a stored image's rootfs (or a path inside it) mounted read-only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageVolume {
    /// The image as the kubelet named it (the `image_ref` PullImage returned).
    pub reference: String,
    /// Its image ID, filled in when the container is created (RemoveImage refuses it while
    /// the container exists).
    pub image_id: String,
    /// Path inside the image's rootfs (CRI `image_sub_path`; empty = the whole rootfs).
    pub sub_path: String,
}

/// What the kubelet asked for in CreateContainer and the record keeps as asked; the runtime
/// resolves the image volumes among `mounts` in place, and UpdateContainerResources changes
/// `resources`. The process part of the request (command, args, working directory, env,
/// user) is resolved against the image into [`ContainerMeta`] instead.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// The sandbox it belongs to.
    pub pod_id: String,
    /// Container name from the pod spec.
    pub name: String,
    /// Restart count, as the kubelet numbers attempts.
    pub attempt: u32,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
    /// The image as the kubelet named it (reference or ID).
    pub image: String,
    /// The CRI `log_path`, relative to the sandbox log directory (as given).
    pub log_path: String,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin when the first attach session that sent it ends (CRI `stdin_once`).
    #[serde(default)]
    pub stdin_once: bool,
    /// The guest's stdio is a pseudo-terminal (CRI `tty`).
    #[serde(default)]
    pub tty: bool,
    /// oom_score_adj the kubelet asked for.
    pub oom_score_adj: Option<i64>,
    /// Resource limits: as asked at creation; in a record, as last applied.
    pub resources: crate::cgroups::Resources,
}

/// A container's fixed metadata: the request plus what creation resolved and made for it.
/// Persisted with the spec's fields inline (`flatten`), so the record's JSON keys are the
/// same as before the spec was its own type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerMeta {
    /// 64-hex ID.
    pub id: String,
    /// What the kubelet asked for.
    #[serde(flatten)]
    pub spec: ContainerSpec,
    /// The image ID (see [`crate::images`]: the config digest when the config pins the layers).
    pub image_id: String,
    /// A repo digest of the image if known, else the image ID.
    pub image_ref: String,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// The resolved log file, if any.
    pub log_file: Option<PathBuf>,
    /// argv (after Kubernetes' command/args vs entrypoint/cmd rules).
    pub args: Vec<String>,
    /// Environment (image env overridden by CRI env).
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    pub cwd: String,
    /// The image's unpacked rootfs, preopened as `/`.
    pub rootfs: PathBuf,
    /// The `.wasm` to run.
    pub wasm: PathBuf,
    /// Its precompiled artifact, if one was made.
    pub precompiled: Option<PathBuf>,
    /// Serve over HTTP on this port (wasi:http components).
    pub http_port: Option<u16>,
    /// cgroupfs-style path of the container's cgroup.
    pub cgroup_path: String,
    /// What creating the cgroup made (so removal removes exactly that, even after a restart).
    pub cgroup: Option<crate::cgroups::CgroupHandle>,
    /// The container's runtime directory (runner spec, exit record, file-mount shims).
    pub dir: PathBuf,
    /// User to run as.
    pub uid: Option<u32>,
    /// Group to run as.
    pub gid: Option<u32>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

/// How a container uses an image, which keeps the image from being removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUse<'a> {
    /// The container runs from it (its rootfs is preopened).
    Runs,
    /// It is mounted as an image volume at this container path.
    Mounts(&'a str),
}

impl ContainerMeta {
    /// Whether, and how, this container uses the image `image_id`: the one check the daemon's
    /// RemoveImage and the CLI's daemon-less `image rm` both make.
    pub fn image_use(&self, image_id: &str) -> Option<ImageUse<'_>> {
        if self.image_id == image_id {
            return Some(ImageUse::Runs);
        }
        self.spec
            .mounts
            .iter()
            .find(|m| m.image.as_ref().is_some_and(|v| v.image_id == image_id))
            .map(|m| ImageUse::Mounts(&m.container_path))
    }
}

/// Container phase: the CRI's states plus `Starting`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerPhase {
    /// Created, never started.
    Created,
    /// StartContainer is under way: the runner is being spawned. Reported and persisted as
    /// `Created`, which is what a restarted daemon must assume (the runner is unrecorded).
    #[serde(rename(serialize = "Created"), skip_deserializing)]
    Starting,
    /// Its runner process is alive.
    Running,
    /// Finished; exit code and reason are known.
    Exited,
    /// Cannot be determined.
    Unknown,
}

/// Why a container exited, as the CRI names it (containerd's reasons).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum ExitReason {
    /// The guest finished with exit code 0.
    Completed,
    /// The guest failed (trap, non-zero exit, signal).
    Error,
    /// The kernel's OOM killer ended it (exit code 137).
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// The runner could not be started or never became ready.
    StartError,
    /// It ended while the daemon was not running and left no record.
    Unknown,
}

impl ExitReason {
    /// The reason of a process that exited with `exit_code` (and no more is known).
    pub fn of_exit_code(exit_code: i32) -> Self {
        if exit_code == 0 {
            Self::Completed
        } else {
            Self::Error
        }
    }

    /// The CRI string (the same as the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "Completed",
            Self::Error => "Error",
            Self::OomKilled => "OOMKilled",
            Self::StartError => "StartError",
            Self::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition [`ContainerState`] refuses. Its text completes "container <ID> ...".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// RemoveContainer has begun: nothing starts any more.
    #[error("is being removed")]
    Removing,
    /// The container is not in a phase the transition leaves from.
    #[error("is {from:?}, not {expected}")]
    Phase {
        /// Where it is.
        from: ContainerPhase,
        /// Where the transition leaves from.
        expected: &'static str,
    },
}

/// What changes over a container's life: read through its accessors, changed only through
/// its transition methods.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    /// Phase.
    phase: ContainerPhase,
    /// Runner PID while running.
    pid: Option<i32>,
    /// The runner's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// reused PID is never mistaken for our runner after a daemon restart.
    pid_start: Option<u64>,
    /// Unix nanoseconds; 0 if never started.
    started_at: i64,
    /// Unix nanoseconds; 0 if not finished.
    finished_at: i64,
    /// Exit code once exited.
    exit_code: i32,
    /// Why it exited; `None` before. Persisted as the CRI string, empty for `None`.
    #[serde(with = "reason_text")]
    reason: Option<ExitReason>,
    /// Human-readable detail.
    message: String,
    /// RemoveContainer has begun. In memory only: a restarted daemon serves the kubelet's
    /// retry of the removal from the start.
    #[serde(skip)]
    removing: bool,
}

impl ContainerState {
    /// The state of a freshly created container.
    pub fn created() -> Self {
        Self {
            phase: ContainerPhase::Created,
            pid: None,
            pid_start: None,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: None,
            message: String::new(),
            removing: false,
        }
    }

    /// Phase.
    pub fn phase(&self) -> ContainerPhase {
        self.phase
    }

    /// The runner's PID while running.
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// The runner's start time in clock ticks since boot, while known.
    pub fn pid_start(&self) -> Option<u64> {
        self.pid_start
    }

    /// When it started (Unix nanoseconds); 0 if never.
    pub fn started_at(&self) -> i64 {
        self.started_at
    }

    /// When it finished (Unix nanoseconds); 0 if not.
    pub fn finished_at(&self) -> i64 {
        self.finished_at
    }

    /// Its exit code once exited.
    pub fn exit_code(&self) -> i32 {
        self.exit_code
    }

    /// Why it exited; `None` before.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
    }

    /// Human-readable detail of the exit.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn expect(&self, phase: ContainerPhase, expected: &'static str) -> Result<(), TransitionError> {
        if self.phase == phase {
            Ok(())
        } else {
            Err(TransitionError::Phase {
                from: self.phase,
                expected,
            })
        }
    }

    /// `Created` → `Starting`: StartContainer begins. Refused once removal has begun.
    pub fn begin_start(&mut self) -> Result<(), TransitionError> {
        if self.removing {
            return Err(TransitionError::Removing);
        }
        self.expect(ContainerPhase::Created, "Created")?;
        self.phase = ContainerPhase::Starting;
        Ok(())
    }

    /// `Starting` → `Created`: the start failed before any runner existed.
    pub fn cancel_start(&mut self) -> Result<(), TransitionError> {
        self.expect(ContainerPhase::Starting, "Starting")?;
        self.phase = ContainerPhase::Created;
        Ok(())
    }

    /// `Starting` → `Running`: the runner `pid` (started at `pid_start`, in clock ticks) was
    /// spawned at `at` (Unix nanoseconds).
    pub fn started(
        &mut self,
        pid: i32,
        pid_start: Option<u64>,
        at: i64,
    ) -> Result<(), TransitionError> {
        self.expect(ContainerPhase::Starting, "Starting")?;
        self.phase = ContainerPhase::Running;
        self.pid = Some(pid);
        self.pid_start = pid_start;
        self.started_at = at;
        Ok(())
    }

    /// `Running` (or `Starting`: a failed start, or `Unknown`) → `Exited`, with what the
    /// runner (or the daemon on its behalf) recorded. An exit is recorded once.
    pub fn exit_with(&mut self, rec: &ExitRecord) -> Result<(), TransitionError> {
        if !matches!(
            self.phase,
            ContainerPhase::Starting | ContainerPhase::Running | ContainerPhase::Unknown
        ) {
            return Err(TransitionError::Phase {
                from: self.phase,
                expected: "Starting, Running or Unknown",
            });
        }
        self.phase = ContainerPhase::Exited;
        self.pid = None;
        // The runner's own clock says when the guest really started; the daemon's value
        // (taken after the readiness line) can be later than a fast guest's finish.
        if rec.started_at > 0 {
            self.started_at = rec.started_at;
        }
        self.finished_at = rec.finished_at.max(self.started_at);
        self.exit_code = rec.exit_code;
        self.reason = Some(rec.reason);
        self.message = rec.message.clone();
        Ok(())
    }

    /// Marks that RemoveContainer has begun (in any phase; again is harmless): no start is
    /// accepted after it, and no new exec or attach session.
    pub fn begin_remove(&mut self) {
        self.removing = true;
    }

    /// Whether new exec and attach sessions may start: running, and not being removed.
    pub fn is_serving(&self) -> bool {
        self.phase == ContainerPhase::Running && !self.removing
    }
}

/// `Option<ExitReason>` as the record has always written it: the CRI string, empty for none.
mod reason_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ExitReason;

    pub fn serialize<S: Serializer>(r: &Option<ExitReason>, s: S) -> Result<S::Ok, S::Error> {
        match r {
            Some(r) => r.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ExitReason>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        ExitReason::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&text)).map(Some)
    }
}

/// The durable record of a container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    /// Fixed metadata.
    pub meta: ContainerMeta,
    /// Current state.
    pub state: ContainerState,
}

/// Kubernetes' rules for the process argv: `command` replaces the image Entrypoint (and then
/// the image Cmd is ignored), `args` replaces the image Cmd.
pub fn resolve_argv(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    let mut argv: Vec<String> = if command.is_empty() {
        entrypoint.to_vec()
    } else {
        command.to_vec()
    };
    if !args.is_empty() {
        argv.extend_from_slice(args);
    } else if command.is_empty() {
        argv.extend_from_slice(cmd);
    }
    argv
}

/// Image env overridden by CRI env (same key: CRI wins, position of the first occurrence).
/// Linear: an index from key to position replaces a search per variable, so an image config
/// with a huge `Env` cannot make container creation quadratic.
pub fn merge_env(image_env: &[String], cri_env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(image_env.len() + cri_env.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(out.capacity());
    let mut set = |k: &str, v: &str| match index.get(k) {
        Some(&i) => out[i].1 = v.to_owned(),
        None => {
            index.insert(k.to_owned(), out.len());
            out.push((k.to_owned(), v.to_owned()));
        }
    };
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in cri_env {
        set(k, v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// A record as the code before [`ContainerSpec`] wrote it (every field at the top level
    /// of `meta`), produced by serialising a fully populated record with that code.
    const RECORD_BEFORE_SPEC: &str = r#"{"meta":{"id":"c0ffee","pod_id":"p0d","name":"app","attempt":2,"labels":{"io.kubernetes.container.name":"app"},"annotations":{"a":"b"},"image":"docker.io/library/hello:1","image_id":"sha256:aaaa","image_ref":"docker.io/library/hello@sha256:bbbb","created_at":1700000000000000001,"log_path":"app/2.log","log_file":"/var/log/pods/ns_p_u/app/2.log","mounts":[{"container_path":"/data","host_path":"/h/data","read_only":false,"image":null},{"container_path":"/img","host_path":"/var/lib/wasmcri/images/x/rootfs/dir","read_only":true,"image":{"reference":"vol:1","image_id":"sha256:cccc","sub_path":"dir"}}],"args":["/app.wasm","--flag"],"env":[["PATH","/bin"],["A","1"]],"cwd":"/work","rootfs":"/var/lib/wasmcri/images/x/rootfs","wasm":"/var/lib/wasmcri/images/x/rootfs/app.wasm","precompiled":"/var/lib/wasmcri/cache/y.cwasm","http_port":8080,"cgroup_path":"/kubepods/p0d/c0ffee","cgroup":{"path":"/kubepods/p0d/c0ffee","procs_files":["/sys/fs/cgroup/kubepods/p0d/c0ffee/cgroup.procs"],"created":["/sys/fs/cgroup/kubepods/p0d/c0ffee"]},"dir":"/run/wasmcri/containers/c0ffee","uid":1000,"gid":2000,"additional_gids":[3000],"stdin":true,"stdin_once":true,"tty":false,"oom_score_adj":-997,"resources":{"cpu_period":100000,"cpu_quota":50000,"cpu_shares":512,"memory_limit":67108864,"memory_swap_limit":0,"cpuset_cpus":"0-1","cpuset_mems":"","pids_limit":null,"unified":{},"hugepage_limits":[]}},"state":{"phase":"Exited","pid":null,"pid_start":12345,"started_at":1700000000100000000,"finished_at":1700000000200000000,"exit_code":137,"reason":"OOMKilled","message":"memory limit exceeded; killed by the kernel OOM killer"}}"#;

    #[test]
    fn record_written_before_the_spec_loads_and_writes_the_same_keys() {
        let rec: ContainerRecord = serde_json::from_str(RECORD_BEFORE_SPEC).unwrap();
        let (m, sp) = (&rec.meta, &rec.meta.spec);
        assert_eq!((m.id.as_str(), sp.pod_id.as_str()), ("c0ffee", "p0d"));
        assert_eq!((sp.name.as_str(), sp.attempt), ("app", 2));
        assert_eq!(sp.labels["io.kubernetes.container.name"], "app");
        assert_eq!(sp.annotations["a"], "b");
        assert_eq!(sp.image, "docker.io/library/hello:1");
        assert_eq!(
            (m.image_id.as_str(), m.created_at),
            ("sha256:aaaa", 1700000000000000001)
        );
        assert_eq!(m.image_ref, "docker.io/library/hello@sha256:bbbb");
        assert_eq!(sp.log_path, "app/2.log");
        assert_eq!(
            m.log_file.as_deref(),
            Some(std::path::Path::new("/var/log/pods/ns_p_u/app/2.log"))
        );
        assert_eq!(sp.mounts.len(), 2);
        assert_eq!(sp.mounts[0].host_path, "/h/data");
        assert_eq!(
            sp.mounts[1].image.as_ref().map(|v| v.image_id.as_str()),
            Some("sha256:cccc")
        );
        assert_eq!(m.args, ["/app.wasm", "--flag"]);
        assert_eq!(m.env[1], ("A".to_string(), "1".to_string()));
        assert_eq!((m.cwd.as_str(), m.http_port), ("/work", Some(8080)));
        assert_eq!(
            m.wasm,
            PathBuf::from("/var/lib/wasmcri/images/x/rootfs/app.wasm")
        );
        assert_eq!(m.precompiled, Some("/var/lib/wasmcri/cache/y.cwasm".into()));
        assert_eq!(m.cgroup_path, "/kubepods/p0d/c0ffee");
        assert_eq!(m.cgroup.as_ref().map(|h| h.created.len()), Some(1));
        assert_eq!(m.dir, PathBuf::from("/run/wasmcri/containers/c0ffee"));
        assert_eq!(
            (m.uid, m.gid, m.additional_gids.as_slice()),
            (Some(1000), Some(2000), &[3000][..])
        );
        assert_eq!((sp.stdin, sp.stdin_once, sp.tty), (true, true, false));
        assert_eq!(sp.oom_score_adj, Some(-997));
        assert_eq!(
            (sp.resources.cpu_quota, sp.resources.memory_limit),
            (50000, 64 << 20)
        );
        assert_eq!(sp.resources.cpuset_cpus, "0-1");
        assert_eq!(
            (rec.state.exit_code, rec.state.pid_start),
            (137, Some(12345))
        );
        // Written back, it has exactly the keys and values it was read from.
        assert_eq!(
            serde_json::to_value(&rec).unwrap(),
            serde_json::from_str::<serde_json::Value>(RECORD_BEFORE_SPEC).unwrap()
        );
    }

    #[test]
    fn image_use_names_how_a_container_holds_an_image() {
        let rec: ContainerRecord = serde_json::from_str(RECORD_BEFORE_SPEC).unwrap();
        let m = &rec.meta;
        assert_eq!(m.image_use("sha256:aaaa"), Some(ImageUse::Runs));
        let at = m.spec.mounts[1].container_path.as_str();
        assert_eq!(m.image_use("sha256:cccc"), Some(ImageUse::Mounts(at)));
        assert_eq!(m.image_use("sha256:dddd"), None);
        assert_eq!(m.image_use(""), None);
    }

    #[test]
    fn record_without_later_fields_loads() {
        // Records from before stdin_once and tty existed.
        let mut v: serde_json::Value = serde_json::from_str(RECORD_BEFORE_SPEC).unwrap();
        let meta = v["meta"].as_object_mut().unwrap();
        meta.remove("stdin_once");
        meta.remove("tty");
        let rec: ContainerRecord = serde_json::from_value(v).unwrap();
        assert_eq!(
            (rec.meta.spec.stdin_once, rec.meta.spec.tty),
            (false, false)
        );
        assert!(rec.meta.spec.stdin);
    }

    #[test]
    fn argv_rules() {
        let ep = v(&["/app.wasm"]);
        let cmd = v(&["--default"]);
        assert_eq!(
            resolve_argv(&[], &[], &ep, &cmd),
            v(&["/app.wasm", "--default"])
        );
        assert_eq!(
            resolve_argv(&[], &v(&["x"]), &ep, &cmd),
            v(&["/app.wasm", "x"])
        );
        assert_eq!(
            resolve_argv(&v(&["/o.wasm"]), &[], &ep, &cmd),
            v(&["/o.wasm"])
        );
        assert_eq!(
            resolve_argv(&v(&["/o.wasm"]), &v(&["a"]), &ep, &cmd),
            v(&["/o.wasm", "a"])
        );
    }

    #[test]
    fn env_override_keeps_order() {
        let merged = merge_env(
            &v(&["PATH=/bin", "A=1", "EMPTY"]),
            &[("A".into(), "2".into()), ("B".into(), "3".into())],
        );
        let want: Vec<(String, String)> = [("PATH", "/bin"), ("A", "2"), ("EMPTY", ""), ("B", "3")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(merged, want);
    }

    #[test]
    fn merge_env_handles_a_huge_image_env() {
        // 100k distinct image variables (quadratic search: ~5e9 comparisons), every other one
        // overridden by the CRI env, plus duplicates within the image env.
        let n = 100_000;
        let mut image: Vec<String> = (0..n).map(|i| format!("V{i}=image")).collect();
        image.push("V0=again".into());
        let cri: Vec<(String, String)> = (0..n)
            .step_by(2)
            .map(|i| (format!("V{i}"), "cri".into()))
            .chain(std::iter::once(("NEW".into(), "x".into())))
            .collect();
        let merged = merge_env(&image, &cri);
        assert_eq!(merged.len(), n + 1);
        assert_eq!(merged[0], ("V0".into(), "cri".into()));
        assert_eq!(merged[1], ("V1".into(), "image".into()));
        assert_eq!(merged[n - 1], (format!("V{}", n - 1), "image".into()));
        assert_eq!(merged[n], ("NEW".into(), "x".into()));
    }

    #[test]
    fn exit_with_sets_everything() {
        let mut s = ContainerState::created();
        s.phase = ContainerPhase::Running;
        s.pid = Some(5);
        s.started_at = 10;
        s.exit_with(&ExitRecord {
            exit_code: 3,
            reason: ExitReason::Error,
            message: "m".into(),
            started_at: 11,
            finished_at: 20,
        })
        .unwrap();
        assert_eq!(s.phase, ContainerPhase::Exited);
        assert_eq!(
            (s.pid, s.started_at, s.finished_at, s.exit_code),
            (None, 11, 20, 3)
        );
        // A record without a start time keeps the daemon's, and never finishes before it.
        let mut s = ContainerState::created();
        s.begin_start().unwrap();
        s.started_at = 30;
        s.exit_with(&ExitRecord {
            exit_code: 137,
            reason: ExitReason::OomKilled,
            message: String::new(),
            started_at: 0,
            finished_at: 25,
        })
        .unwrap();
        assert_eq!((s.started_at, s.finished_at), (30, 30));
    }

    fn exit(code: i32) -> ExitRecord {
        ExitRecord {
            exit_code: code,
            reason: ExitReason::of_exit_code(code),
            message: String::new(),
            started_at: 0,
            finished_at: 9,
        }
    }

    #[test]
    fn lifecycle_transitions_and_refusals() {
        let phase = |from, expected| TransitionError::Phase { from, expected };
        let mut s = ContainerState::created();
        assert_eq!(
            s.started(1, None, 2),
            Err(phase(ContainerPhase::Created, "Starting"))
        );
        assert_eq!(
            s.exit_with(&exit(0)),
            Err(phase(
                ContainerPhase::Created,
                "Starting, Running or Unknown"
            ))
        );
        assert_eq!(s, ContainerState::created(), "a refusal changes nothing");
        // A start that fails before a runner exists can be retried.
        s.begin_start().unwrap();
        assert_eq!(
            s.begin_start(),
            Err(phase(ContainerPhase::Starting, "Created"))
        );
        s.cancel_start().unwrap();
        s.begin_start().unwrap();
        assert!(!s.is_serving());
        s.started(42, Some(7), 5).unwrap();
        assert_eq!(
            (s.phase, s.pid, s.pid_start, s.started_at),
            (ContainerPhase::Running, Some(42), Some(7), 5)
        );
        assert!(s.is_serving());
        assert_eq!(
            s.cancel_start(),
            Err(phase(ContainerPhase::Running, "Starting"))
        );
        assert_eq!(
            s.begin_start(),
            Err(phase(ContainerPhase::Running, "Created"))
        );
        s.exit_with(&exit(0)).unwrap();
        assert_eq!(s.reason, Some(ExitReason::Completed));
        // An exit is recorded once.
        let first = s.clone();
        assert_eq!(
            s.exit_with(&exit(3)),
            Err(phase(
                ContainerPhase::Exited,
                "Starting, Running or Unknown"
            ))
        );
        assert_eq!(s, first);
        // A failed start exits from Starting.
        let mut s = ContainerState::created();
        s.begin_start().unwrap();
        s.exit_with(&exit(1)).unwrap();
        assert_eq!(
            (s.phase, s.reason),
            (ContainerPhase::Exited, Some(ExitReason::Error))
        );
    }

    #[test]
    fn removal_refuses_a_start_and_new_sessions() {
        let mut s = ContainerState::created();
        s.begin_remove();
        assert_eq!(s.begin_start(), Err(TransitionError::Removing));
        assert_eq!(s.phase, ContainerPhase::Created);
        // A running container being removed is still stopped (its exit recorded), but takes
        // no new exec or attach session.
        let mut s = ContainerState::created();
        s.begin_start().unwrap();
        s.started(1, None, 1).unwrap();
        s.begin_remove();
        assert!(!s.is_serving());
        s.exit_with(&exit(137)).unwrap();
        assert_eq!(s.phase, ContainerPhase::Exited);
        // Not persisted: a restarted daemon has no removal under way.
        let back: ContainerState =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert!(!back.removing);
    }

    /// States as the code before the state machine wrote them (serialised with that code).
    const CREATED_BEFORE: &str = r#"{"phase":"Created","pid":null,"pid_start":null,"started_at":0,"finished_at":0,"exit_code":0,"reason":"","message":""}"#;
    const RUNNING_BEFORE: &str = r#"{"phase":"Running","pid":42,"pid_start":7,"started_at":5,"finished_at":0,"exit_code":0,"reason":"","message":""}"#;

    #[test]
    fn states_written_before_the_state_machine_load_and_write_the_same() {
        for text in [CREATED_BEFORE, RUNNING_BEFORE] {
            let st: ContainerState = serde_json::from_str(text).unwrap();
            assert_eq!((st.reason, st.removing), (None, false));
            assert_eq!(
                serde_json::to_value(&st).unwrap(),
                serde_json::from_str::<serde_json::Value>(text).unwrap()
            );
        }
        let st: ContainerState = serde_json::from_str(RUNNING_BEFORE).unwrap();
        assert_eq!(
            (st.phase, st.pid, st.pid_start, st.started_at),
            (ContainerPhase::Running, Some(42), Some(7), 5)
        );
        assert_eq!(
            ContainerState::created(),
            serde_json::from_str(CREATED_BEFORE).unwrap()
        );
        let rec: ContainerRecord = serde_json::from_str(RECORD_BEFORE_SPEC).unwrap();
        assert_eq!(rec.state.phase, ContainerPhase::Exited);
        assert_eq!(rec.state.reason, Some(ExitReason::OomKilled));
        assert_eq!(
            rec.state.message,
            "memory limit exceeded; killed by the kernel OOM killer"
        );
        // Every reason the daemon or a runner has written reads back as itself, and its CRI
        // string is the persisted one.
        for (text, reason) in [
            ("Completed", ExitReason::Completed),
            ("Error", ExitReason::Error),
            ("OOMKilled", ExitReason::OomKilled),
            ("StartError", ExitReason::StartError),
            ("Unknown", ExitReason::Unknown),
        ] {
            let json = CREATED_BEFORE.replace(r#""reason":"""#, &format!(r#""reason":"{text}""#));
            let st: ContainerState = serde_json::from_str(&json).unwrap();
            assert_eq!(st.reason, Some(reason));
            assert_eq!(reason.to_string(), text);
            assert_eq!(serde_json::to_value(reason).unwrap(), text);
            assert_eq!(serde_json::to_string(&st).unwrap(), json);
        }
    }

    #[test]
    fn starting_is_persisted_as_created() {
        let mut s = ContainerState::created();
        s.begin_start().unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Created");
        assert_eq!(
            serde_json::from_value::<ContainerState>(v).unwrap().phase,
            ContainerPhase::Created
        );
        let starting = CREATED_BEFORE.replace("Created", "Starting");
        assert!(serde_json::from_str::<ContainerState>(&starting).is_err());
    }

    #[test]
    fn unknown_reasons_are_refused() {
        // The exit record's directory belongs to the container's user: a reason the daemon
        // does not know makes the record unreadable (the daemon then works out the exit
        // itself) instead of reaching the kubelet.
        let planted = r#"{"exit_code":0,"reason":"Pwned\nInjected","message":"","started_at":1,"finished_at":2}"#;
        assert!(serde_json::from_str::<ExitRecord>(planted).is_err());
        let ok = planted.replace(r#"Pwned\nInjected"#, "Completed");
        assert_eq!(
            serde_json::from_str::<ExitRecord>(&ok).unwrap().reason,
            ExitReason::Completed
        );
        let st = CREATED_BEFORE.replace(r#""reason":"""#, r#""reason":"Killed""#);
        assert!(serde_json::from_str::<ContainerState>(&st).is_err());
    }
}
