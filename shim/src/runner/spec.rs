//! The contract between the daemon and a runner process: what to run ([`RunnerSpec`], written
//! by the daemon as JSON) and how it ended ([`ExitRecord`], written by the runner, atomically).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a runner needs to run one container (or one ExecSync command). Paths are host
/// paths. The daemon sends it as one line of JSON on a container runner's (and an interactive
/// exec runner's) stdin, and writes it to a file for an ExecSync runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunnerSpec {
    /// The container ID (64 hex), for logging.
    pub container_id: String,
    /// How to run the guest.
    pub mode: RunMode,
    /// The `.wasm` module or component on the host.
    pub wasm: PathBuf,
    /// The precompiled artifact for `wasm` (from [`crate::wasm`]'s cache), if there is one.
    /// A runner falls back to compiling `wasm` when it is absent or incompatible.
    pub precompiled: Option<PathBuf>,
    /// argv, including argv\[0\].
    pub args: Vec<String>,
    /// Environment, in order; later entries win.
    pub env: Vec<(String, String)>,
    /// Guest working directory (a guest path).
    pub cwd: String,
    /// Host directories the guest sees, `/` (the container rootfs) first.
    pub preopens: Vec<Preopen>,
    /// The CRI log file (`<log_directory>/<log_path>`); `None` discards output. Ignored in
    /// [`RunMode::Exec`], where stdout/stderr are the runner's own.
    pub log_path: Option<PathBuf>,
    /// Where the runner writes its [`ExitRecord`] (write to a temp file, rename).
    pub exit_file: PathBuf,
    /// The container's cgroup, joined before any guest code runs; `None` on hosts without
    /// cgroups.
    #[serde(default)]
    pub cgroup: Option<crate::cgroups::Membership>,
    /// The pod's network namespace (a bind-mounted nsfs file); `None` = the host network.
    pub netns: Option<PathBuf>,
    /// Credentials to switch to after joining cgroup and netns.
    pub uid: Option<u32>,
    /// Primary group.
    pub gid: Option<u32>,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Keep stdin open for the guest (CRI `stdin`); otherwise the guest's stdin is empty. A
    /// container's guest then reads what attach sessions send (see [`Self::attach_socket`]).
    pub stdin: bool,
    /// Attach and terminal settings of a container's stdio.
    #[serde(default)]
    pub stdio: StdioSpec,
    /// Value to write to `/proc/self/oom_score_adj` (EPERM is tolerated).
    pub oom_score_adj: Option<i64>,
    /// How long a stop signal lets the guest wind down: in `Http` mode, how long in-flight
    /// requests may drain (`None`: until they finish — the StopContainer timeout bounds it);
    /// otherwise how long to wait for a guest blocked in a host call to reach an interruption
    /// point (`None`: [`crate::runner::STOP_GRACE`]).
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
    /// The runner's own debug log (warnings, load errors). A runner spawned for this spec has
    /// its stderr pointed there by the daemon; a standby runner opens it once it receives
    /// the spec.
    #[serde(default)]
    pub debug_log: Option<PathBuf>,
    /// An empty host directory the runner mounts its filesystem jail on (see `runner::jail`);
    /// `None` runs without a jail (tests and manual runs only: the daemon always sets it).
    #[serde(default)]
    pub jail: Option<PathBuf>,
    /// The pod's `resolv.conf`, seen by the runner (and so by the guest's name lookups) as
    /// `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// The pod's hosts file (the kubelet's `/etc/hosts` mount), seen as `/etc/hosts`.
    #[serde(default)]
    pub hosts: Option<PathBuf>,
    /// The pod's user namespace (`hostUsers: false`): the runner joins it once its host-side
    /// setup is done, and `uid`, `gid` and `additional_gids` are IDs inside it. `None`: the
    /// node's users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNamespace>,
}

/// A pod's user namespace as a runner joins it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserNamespace {
    /// The bind-mounted nsfs file the daemon made (see [`crate::userns`]).
    pub path: PathBuf,
    /// Its mappings, which the runner uses to hand its exit record's directory to the guest's
    /// user on the node before it joins.
    pub mappings: crate::userns::IdMappings,
}

/// How a container's stdio is served beyond the CRI log (see `runner::attach`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StdioSpec {
    /// Where the runner binds the container's attach socket (root-only); `None`: no attach.
    #[serde(default)]
    pub attach_socket: Option<PathBuf>,
    /// CRI `stdin_once`: the guest's stdin ends with the first attach session that sent it.
    #[serde(default)]
    pub stdin_once: bool,
    /// CRI `tty`: the guest's stdio is a pseudo-terminal whose master side the runner holds;
    /// its output goes to the log as `stdout`.
    #[serde(default)]
    pub tty: bool,
}

/// How the guest is driven.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Run `_start` (core module, WASI preview 1) or `wasi:cli/run` (component) once.
    Command,
    /// Serve a `wasi:http/incoming-handler` component on `0.0.0.0:port`.
    Http {
        /// TCP port to listen on inside the pod's network namespace.
        port: u16,
    },
    /// ExecSync: run once with stdout/stderr going to the runner's own stdout/stderr and
    /// the guest interrupted after `timeout_ms` (0 = no timeout).
    Exec {
        /// Deadline in milliseconds.
        timeout_ms: u64,
    },
    /// Interactive exec (CRI `Exec` over the streaming server): run once, the guest's stdin,
    /// stdout and stderr being the runner's own pipes, streamed live by the daemon. Started as
    /// `wasmcri runner --standby`: the spec is the first line on stdin, and whatever follows
    /// it on stdin is the guest's (when [`RunnerSpec::stdin`] is set). No deadline.
    ExecStream,
}

/// A directory preopened for the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preopen {
    /// Host directory.
    pub host: PathBuf,
    /// Path the guest sees.
    pub guest: String,
    /// Deny writes.
    pub read_only: bool,
    /// File mounts gathered under this guest directory (WASI preopens only directories):
    /// `host` is then only a mount point, which the runner covers with a tmpfs of its own
    /// holding each file bind-mounted under its name (see `runner::jail`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileBind>,
}

/// One file mount inside a [`Preopen`]'s directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileBind {
    /// File name in the guest directory (one plain component).
    pub name: String,
    /// The host file.
    pub source: PathBuf,
    /// Bind it read-only.
    pub read_only: bool,
}

/// How a container ended, as the kubelet needs to see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    /// Process-style exit code: the guest's `exit(n)`, 0 on return, 1 for a trap or a module
    /// that cannot run, 128+signal when the runner was signalled (137 = killed / OOM).
    pub exit_code: i32,
    /// Why it ended (written as the CRI string: `Completed`, `Error`, `OOMKilled`, ...). A
    /// record with a reason this daemon does not know reads as no record.
    pub reason: crate::container::ExitReason,
    /// One line saying what happened (trap message, load error), or empty.
    pub message: String,
    /// When the guest started, Unix nanoseconds.
    pub started_at: i64,
    /// When it finished, Unix nanoseconds.
    pub finished_at: i64,
}
