//! Containers: fixed metadata ([`ContainerMeta`]) and changing state ([`ContainerState`]),
//! persisted together as a [`ContainerRecord`].
//!
//! State machine (the CRI's): `Created` → `Running` → `Exited`; `Created` → `Exited` when a
//! start fails (with exit code and reason recorded). `Unknown` only when the record says
//! running but the process can be neither found nor explained.

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

/// What the kubelet fixed when it created the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerMeta {
    /// 64-hex ID.
    pub id: String,
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
    /// The image as the kubelet named it.
    pub image: String,
    /// The image ID (see [`crate::images`]: the config digest when the config pins the layers).
    pub image_id: String,
    /// A repo digest of the image if known, else the image ID.
    pub image_ref: String,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// The CRI `log_path`, relative to the sandbox log directory (as given).
    pub log_path: String,
    /// The resolved log file, if any.
    pub log_file: Option<PathBuf>,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
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
    /// Resource limits as last applied.
    pub resources: crate::cgroups::Resources,
}

/// Container state as the CRI defines it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerPhase {
    /// Created, never started.
    Created,
    /// Its runner process is alive.
    Running,
    /// Finished; exit code and reason are known.
    Exited,
    /// Cannot be determined.
    Unknown,
}

/// What changes over a container's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    /// Phase.
    pub phase: ContainerPhase,
    /// Runner PID while running.
    pub pid: Option<i32>,
    /// The runner's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), so a
    /// reused PID is never mistaken for our runner after a daemon restart.
    pub pid_start: Option<u64>,
    /// Unix nanoseconds; 0 if never started.
    pub started_at: i64,
    /// Unix nanoseconds; 0 if not finished.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, or empty.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
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
            reason: String::new(),
            message: String::new(),
        }
    }

    /// Moves to `Exited` with what the runner (or the daemon on its behalf) recorded.
    pub fn exit_with(&mut self, rec: &ExitRecord) {
        self.phase = ContainerPhase::Exited;
        self.pid = None;
        // The runner's own clock says when the guest really started; the daemon's value
        // (taken after the readiness line) can be later than a fast guest's finish.
        if rec.started_at > 0 {
            self.started_at = rec.started_at;
        }
        self.finished_at = rec.finished_at.max(self.started_at);
        self.exit_code = rec.exit_code;
        self.reason = rec.reason.clone();
        self.message = rec.message.clone();
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
            reason: "Error".into(),
            message: "m".into(),
            started_at: 11,
            finished_at: 20,
        });
        assert_eq!(s.phase, ContainerPhase::Exited);
        assert_eq!(
            (s.pid, s.started_at, s.finished_at, s.exit_code),
            (None, 11, 20, 3)
        );
        // A record without a start time keeps the daemon's, and never finishes before it.
        let mut s = ContainerState::created();
        s.started_at = 30;
        s.exit_with(&ExitRecord {
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: String::new(),
            started_at: 0,
            finished_at: 25,
        });
        assert_eq!((s.started_at, s.finished_at), (30, 30));
    }
}
