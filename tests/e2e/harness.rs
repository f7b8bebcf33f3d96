//! Test harness: a real `wasmcri serve` on a temp socket/root, a generated CRI client over
//! the unix socket, OCI layouts built from the real guests in `examples/guests`, and cleanup
//! of everything the daemon made (pods, runners, cgroups) even when a test fails.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cri::v1 as pb;
use cri::v1::image_service_client::ImageServiceClient;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use sha2::Digest;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where the guests were built (`tests/run.sh` builds them).
pub fn guests_dir() -> PathBuf {
    std::env::var_os("WASMCRI_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guests/target"))
}

/// A guest's bytes for `target` (`wasm32-wasip1` or `wasm32-wasip2`).
pub fn guest(target: &str, name: &str) -> Vec<u8> {
    let p = guests_dir()
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "guest {} missing ({e}); run tests/run.sh or build examples/guests",
            p.display()
        )
    })
}

/// A running daemon with its own root, state, socket and cgroup parent.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub cgroup_parent: String,
    pub config_path: PathBuf,
    /// Network namespace the daemon runs in (its CNI plugins, bridge and iptables rules
    /// too); `None` = the test's own.
    pub netns: Option<PathBuf>,
    /// The umask the daemon process starts with; `None` = the test's own.
    pub umask: Option<u32>,
    child: Option<Child>,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &wasmcri::ids::new_id()[..10])
}

impl Daemon {
    /// Starts a daemon; `extra_config` is appended to its TOML config.
    pub async fn start_with(extra_config: &str) -> Daemon {
        let mut d = Self::configure(extra_config);
        d.spawn().await;
        d
    }

    /// [`Daemon::start_with`], with the daemon in the network namespace `netns`.
    pub async fn start_in_netns(extra_config: &str, netns: &Path) -> Daemon {
        let mut d = Self::configure(extra_config);
        d.netns = Some(netns.to_owned());
        d.spawn().await;
        d
    }

    /// [`Daemon::start_with`], with the daemon process started under `umask`.
    pub async fn start_with_umask(extra_config: &str, umask: u32) -> Daemon {
        let mut d = Self::configure(extra_config);
        d.umask = Some(umask);
        d.spawn().await;
        d
    }

    /// A temp dir and config for a daemon that is not started yet.
    fn configure(extra_config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("wasmcri-e2e")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("wasmcri.sock");
        let cgroup_parent = format!("/{}", unique("wasmcri-e2e"));
        let config_path = dir.path().join("config.toml");
        let cni_dir = dir.path().join("cni");
        std::fs::create_dir_all(&cni_dir).unwrap();
        // `extra_config` comes before our `[cni]` table so its top-level keys stay top-level.
        let cfg = format!(
            "socket = {:?}\nroot = {:?}\nstate = {:?}\nlog_level = \"wasmcri=debug,info\"\ndefault_cgroup_parent = {:?}\n{extra_config}\n{}\n",
            socket,
            dir.path().join("root"),
            dir.path().join("state"),
            cgroup_parent,
            if extra_config.contains("[cni]") {
                String::new()
            } else {
                format!("[cni]\nconf_dir = {:?}\n", cni_dir)
            },
        );
        std::fs::write(&config_path, cfg).unwrap();
        Daemon {
            dir,
            socket,
            cgroup_parent,
            config_path,
            netns: None,
            umask: None,
            child: None,
        }
    }

    pub async fn start() -> Daemon {
        Self::start_with("").await
    }

    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_wasmcri")
    }

    /// (Re)starts the daemon process on the same root.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut cmd = Command::new(Self::bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(ns) = &self.netns {
            use std::os::unix::process::CommandExt;
            let ns = std::fs::File::open(ns).unwrap();
            // SAFETY: setns is async-signal-safe; it only changes the child's network
            // namespace between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask is async-signal-safe and only changes the child.
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        self.child = Some(child);
        // Ready once a Version call is answered: a socket that accepts may still be the one
        // a killed predecessor left (held open by a child it was forking when it died).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers().await {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited {st}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not listen: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's PID, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// kill -9 of the daemon (runners survive).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Whether the daemon answers a Version call on its socket.
    async fn answers(&self) -> bool {
        if !self.socket.exists() {
            return false;
        }
        match self.try_channel().await {
            Ok(ch) => RuntimeServiceClient::new(ch)
                .version(pb::VersionRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    pub async fn channel(&self) -> Channel {
        self.try_channel()
            .await
            .unwrap_or_else(|e| panic!("connect to the daemon: {e:?}; its log:\n{}", self.log()))
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    }

    pub async fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn img(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// `wasmcri image import` on this daemon's root.
    pub fn import(&self, layout: &Path, name: &str) {
        let out = Command::new(Self::bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(["image", "import", "--name", name])
            .arg(layout)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `wasmcri image push FILE REF` with this daemon's configuration.
    pub fn push(&self, file: &Path, reference: &str) {
        let out = Command::new(Self::bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(["image", "push"])
            .arg(file)
            .arg(reference)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Removes every pod through the CRI, then stops the daemon.
    pub async fn shutdown(mut self) {
        if self.child.is_some() {
            let mut rt = self.rt().await;
            let pods = rt
                .list_pod_sandbox(pb::ListPodSandboxRequest::default())
                .await
                .unwrap()
                .into_inner()
                .items;
            for p in pods {
                remove_pod(&mut rt, &p.id).await;
            }
            let st = self.terminate();
            assert!(st.success(), "daemon exit {st}: {}", self.log());
        }
        // Everything the daemon made under our cgroup parent must be gone; the parent itself
        // is the daemon's to create and ours to remove.
        for h in ["cpu", "memory", "pids", "cpuacct", "cpuset"] {
            let dir = Path::new("/sys/fs/cgroup")
                .join(h)
                .join(self.cgroup_parent.trim_start_matches('/'));
            if dir.exists() {
                let leftovers: Vec<_> = std::fs::read_dir(&dir)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect();
                assert!(leftovers.is_empty(), "leaked cgroups: {leftovers:?}");
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        // Fallback cleanup after a failed test: end the runners we started (found in our own
        // cgroups) and remove our cgroups, deepest first.
        for h in ["cpu", "memory", "pids", "cpuacct", "cpuset"] {
            let root = Path::new("/sys/fs/cgroup")
                .join(h)
                .join(self.cgroup_parent.trim_start_matches('/'));
            if !root.exists() {
                continue;
            }
            kill_and_remove_cgroups(&root);
        }
        // Network namespaces the daemon mounted under our state dir.
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("state/netns")) {
            for e in rd.flatten() {
                let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

/// After a failed test: SIGKILLs the processes left in the cgroup tree at `root` (our own
/// runners: the tree is this test's) and removes its cgroups, deepest first.
fn kill_and_remove_cgroups(root: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(root, &mut dirs);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &dirs {
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_owned());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

// ---- OCI layouts ----

fn put_blob(dir: &Path, bytes: &[u8]) -> (String, u64) {
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    let p = dir.join("blobs/sha256").join(&hex);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    (format!("sha256:{hex}"), bytes.len() as u64)
}

fn finish_layout(
    dir: &Path,
    config: serde_json::Value,
    config_mt: &str,
    layers: Vec<(String, u64, String)>,
    name: &str,
) {
    let cfg = serde_json::to_vec(&config).unwrap();
    let (cd, cs) = put_blob(dir, &cfg);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_mt, "digest": cd, "size": cs},
        "layers": layers.iter().map(|(d, s, mt)| serde_json::json!({"mediaType": mt, "digest": d, "size": s})).collect::<Vec<_>>(),
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let (md, ms) = put_blob(dir, &mb);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// An OCI Wasm artifact layout (config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer).
pub fn wasm_artifact_layout(dir: &Path, wasm: &[u8], name: &str) {
    let (ld, ls) = put_blob(dir, wasm);
    let config = serde_json::json!({"architecture": "wasm", "os": "wasip1", "layerDigests": [ld]});
    finish_layout(
        dir,
        config,
        "application/vnd.wasm.config.v0+json",
        vec![(ld, ls, "application/wasm".into())],
        name,
    );
}

/// An ordinary OCI image (`wasi/wasm`) with one gzip tar layer holding `files`, and the
/// given entrypoint/env.
pub fn tar_image_layout(
    dir: &Path,
    files: &[(&str, Vec<u8>)],
    entrypoint: &[&str],
    env: &[&str],
    name: &str,
) {
    tar_image_layout_as(dir, files, &[], entrypoint, env, "", name);
}

/// [`tar_image_layout`] with symlinks (`path -> target`) in the layer and a config `User`.
pub fn tar_image_layout_as(
    dir: &Path,
    files: &[(&str, Vec<u8>)],
    symlinks: &[(&str, &str)],
    entrypoint: &[&str],
    env: &[&str],
    user: &str,
    name: &str,
) {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        tar.append_data(&mut h, path.trim_start_matches('/'), bytes.as_slice())
            .unwrap();
    }
    for (path, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, path.trim_start_matches('/'), target)
            .unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let (ld, ls) = put_blob(dir, &gz.finish().unwrap());
    let config = serde_json::json!({
        "architecture": "wasm", "os": "wasi",
        "config": {"Entrypoint": entrypoint, "Env": env, "WorkingDir": "/", "User": user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    finish_layout(
        dir,
        config,
        "application/vnd.oci.image.config.v1+json",
        vec![(ld, ls, "application/vnd.oci.image.layer.v1.tar+gzip".into())],
        name,
    );
}

/// Imports a guest as a wasm artifact image named `name`.
/// ImageStatus of `image` on any CRI image service: the image, or `None` when it is absent.
pub async fn image_status_of(
    img: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Option<pb::Image> {
    img.image_status(pb::ImageStatusRequest {
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .image
}

/// A file of a container's cgroup in the v1 layout:
/// `/sys/fs/cgroup/<controller>/<parent>/<container-id>/<file>`.
pub fn cg_file(d: &Daemon, controller: &str, id: &str, file: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(d.cgroup_parent.trim_start_matches('/'))
        .join(id)
        .join(file)
}

/// A file's contents, trimmed; panics naming the file.
pub fn read_trimmed(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

pub fn import_guest(d: &Daemon, target: &str, guest_name: &str, name: &str) {
    let dir = d.dir.path().join(format!("layout-{}", unique("l")));
    wasm_artifact_layout(&dir, &guest(target, guest_name), name);
    d.import(&dir, name);
}

// ---- CRI helpers ----

pub fn pod_config(name: &str, log_dir: &Path) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: unique("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        annotations: HashMap::from([("note".to_string(), "x=y, \"quoted\"".to_string())]),
        linux: Some(pb::LinuxPodSandboxConfig {
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    network: pb::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("ctr".to_string(), name.to_string())]),
        annotations: HashMap::from([("a".to_string(), "b".to_string())]),
        ..Default::default()
    }
}

pub async fn run_pod(rt: &mut RuntimeServiceClient<Channel>, cfg: pb::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(cfg),
        runtime_handler: "wasmtime".into(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

pub async fn create(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_cfg: &pb::PodSandboxConfig,
    cfg: pb::ContainerConfig,
) -> String {
    rt.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(cfg),
        sandbox_config: Some(pod_cfg.clone()),
    })
    .await
    .unwrap()
    .into_inner()
    .container_id
}

pub async fn start(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.start_container(pb::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

pub async fn status(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> pb::ContainerStatus {
    rt.container_status(pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// PodSandboxStatus of `pod` (an ID or a unique prefix of one), with `info` if `verbose`.
pub async fn pod_status(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    verbose: bool,
) -> pb::PodSandboxStatusResponse {
    rt.pod_sandbox_status(pb::PodSandboxStatusRequest {
        pod_sandbox_id: pod.into(),
        verbose,
    })
    .await
    .unwrap_or_else(|e| panic!("PodSandboxStatus {pod}: {e:?}"))
    .into_inner()
}

/// The pod's IP as PodSandboxStatus reports it (empty without one).
pub async fn pod_ip(rt: &mut RuntimeServiceClient<Channel>, pod: &str) -> String {
    pod_status(rt, pod, false)
        .await
        .status
        .unwrap()
        .network
        .map(|n| n.ip)
        .unwrap_or_default()
}

/// A TCP port mapping as the kubelet sends it (`host_port` 0: a `containerPort` only).
pub fn tcp_mapping(container_port: i32, host_port: i32) -> pb::PortMapping {
    pb::PortMapping {
        protocol: pb::Protocol::Tcp as i32,
        container_port,
        host_port,
        host_ip: String::new(),
    }
}

/// ContainerStats of one container.
pub async fn container_stats(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
) -> pb::ContainerStats {
    rt.container_stats(pb::ContainerStatsRequest {
        container_id: id.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
}

/// PodSandboxStats' Linux part.
pub async fn pod_stats(
    rt: &mut RuntimeServiceClient<Channel>,
    pod: &str,
) -> pb::LinuxPodSandboxStats {
    rt.pod_sandbox_stats(pb::PodSandboxStatsRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .stats
    .unwrap()
    .linux
    .unwrap()
}

/// The PID of a running container's runner (from verbose ContainerStatus).
pub async fn runner_pid(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
    let v = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    info["pid"].as_i64().unwrap() as i32
}

/// Private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) in KiB.
pub fn private_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(field("Private_Clean:") + field("Private_Dirty:"))
}

/// Polls until the container has exited (or panics after `secs`).
pub async fn wait_exited(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    secs: u64,
) -> pb::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(rt, id).await;
        if st.state == pb::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} still {:?} after {secs}s",
            st.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `path` holds a line containing `needle`.
pub async fn wait_log(path: &Path, needle: &str, secs: u64) -> String {
    wait_log_every(path, needle, secs, Duration::from_millis(20)).await
}

/// [`wait_log`] polling every `poll` (the bench polls finely so it measures the runtime, not
/// the poll interval).
pub async fn wait_log_every(path: &Path, needle: &str, secs: u64, poll: Duration) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {}: {text:?}",
            path.display()
        );
        tokio::time::sleep(poll).await;
    }
}

/// StopPodSandbox, which must succeed.
pub async fn stop_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e:?}"));
}

/// RemovePodSandbox alone (of a stopped pod, or again), which must succeed.
pub async fn remove_stopped_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e:?}"));
}

/// StopPodSandbox then RemovePodSandbox.
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    stop_pod(rt, id).await;
    remove_stopped_pod(rt, id).await;
}

/// StopContainer with `timeout` seconds of grace, which must succeed.
pub async fn stop_container(rt: &mut RuntimeServiceClient<Channel>, id: &str, timeout: i64) {
    rt.stop_container(pb::StopContainerRequest {
        container_id: id.into(),
        timeout,
    })
    .await
    .unwrap_or_else(|e| panic!("StopContainer {id}: {e:?}"));
}

/// RemoveContainer, which must succeed.
pub async fn remove_container(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.remove_container(pb::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e:?}"));
}

/// The wasi:http/proxy component from `examples/http-hello` (built by tests/run.sh).
pub fn http_guest() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/http-hello/target/wasm32-wasip2/release/http_hello.wasm");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{} missing ({e}); run tests/run.sh", p.display()))
}

/// Imports [`http_guest`] as the image `localhost/http-hello:v1`.
pub fn import_http_hello(d: &Daemon) {
    let layout = d.dir.path().join(format!("layout-{}", unique("http")));
    wasm_artifact_layout(&layout, &http_guest(), "localhost/http-hello:v1");
    d.import(&layout, "localhost/http-hello:v1");
}

/// Runs `localhost/http-hello:v1` (see [`import_http_hello`]) in a new host-network pod named
/// after `name`, on a free loopback port; returns (container id, `127.0.0.1:port`) once it
/// answers.
pub async fn serve_http_hello(
    d: &Daemon,
    rt: &mut RuntimeServiceClient<Channel>,
    name: &str,
) -> (String, String) {
    let pod_cfg = pod_config(&unique(name), &d.dir.path().join("logs"));
    let pod = run_pod(rt, pod_cfg.clone()).await;
    let port = free_port();
    let mut cfg = container_config("web", "localhost/http-hello:v1");
    cfg.annotations
        .insert("wasmcri.io/http-port".into(), port.to_string());
    let c = create(rt, &pod, &pod_cfg, cfg).await;
    start(rt, &c).await;
    let addr = format!("127.0.0.1:{port}");
    let (code, body) = http_get_ready(&addr, "/ready", 20).await;
    assert_eq!(code, 200, "{body}");
    (c, addr)
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET over a plain TCP connection: (status, body).
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, raw) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = raw;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            out.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        raw.to_string()
    };
    Ok((status, body))
}

/// Retries a GET until the server answers (or panics after `secs`).
pub async fn http_get_ready(addr: &str, path: &str, secs: u64) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match http_get(addr, path).await {
            Ok(r) if r.0 != 0 => return r,
            other => assert!(
                Instant::now() < deadline,
                "{addr}{path} not answering: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/2 GET with prior knowledge (h2c, no upgrade): (status, body).
pub async fn http2_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// A CNI network of real plugins (bridge + host-local) on a bridge and a 10.251.x.0/24 subnet
/// made for one test, with no route or NAT to anything outside the machine. The bridge is
/// deleted on drop.
pub struct CniNet {
    /// The bridge device, `wc<hex>`.
    pub bridge: String,
    /// The subnet's first three octets with a trailing dot, e.g. `10.251.123.`.
    pub prefix: String,
    /// host-local's data directory (allocated IPs are files under `<ipam_dir>/<net name>`).
    pub ipam_dir: PathBuf,
    /// The conflist directory, to hand to the daemon.
    pub conf_dir: PathBuf,
    /// The directory holding the plugin binaries.
    pub bin_dir: &'static str,
    _dir: tempfile::TempDir,
}

impl CniNet {
    /// Network name in the conflist.
    pub const NAME: &'static str = "wasmcri-e2e";

    /// Writes the conflist, or `None` (with a message) if the CNI plugins are not installed.
    pub fn new() -> Option<CniNet> {
        Self::build(false)
    }

    /// [`CniNet::new`] with the `portmap` plugin chained after the bridge.
    pub fn with_portmap() -> Option<CniNet> {
        Self::build(true)
    }

    fn build(portmap: bool) -> Option<CniNet> {
        let Some(bin_dir) = ["/usr/lib/cni", "/opt/cni/bin"]
            .into_iter()
            .find(|d| Path::new(d).join("bridge").exists())
        else {
            eprintln!("skipping: CNI plugins not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let id = wasmcri::ids::new_id();
        let bridge = format!("wc{}", &id[..8]);
        let octet = 100 + u32::from_str_radix(&id[8..12], 16).unwrap() % 100;
        let prefix = format!("10.251.{octet}.");
        let ipam_dir = dir.path().join("ipam");
        let mut plugins = vec![serde_json::json!(
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": ipam_dir,
                      "ranges": [[{"subnet": format!("{prefix}0/24")}]]}}
        )];
        if portmap {
            plugins.push(serde_json::json!(
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ));
        }
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": Self::NAME,
            "plugins": plugins,
        });
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-e2e.conflist"), conf.to_string()).unwrap();
        Some(CniNet {
            bridge,
            prefix,
            ipam_dir,
            conf_dir,
            bin_dir,
            _dir: dir,
        })
    }

    /// The `[cni]` section for [`Daemon::start_with`].
    pub fn daemon_config(&self) -> String {
        format!(
            "[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}]\n",
            self.conf_dir, self.bin_dir
        )
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Debian's docker-registry on 127.0.0.1 and a random port, killed on drop.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:<port>`.
    pub host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a registry, or `None` (with a message) if docker-registry is not installed.
pub fn registry() -> Option<Registry> {
    let bin = "/usr/bin/docker-registry";
    if !std::path::Path::new(bin).exists() {
        eprintln!("skipping: {bin} not installed");
        return None;
    }
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: e2e\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut reg = Registry {
            child,
            _dir: dir,
            host: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = reg.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(&reg.host).is_ok() {
                return Some(reg);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("docker-registry did not start");
}

/// One field of `/proc/PID/status`.
pub fn status_field(pid: i32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

// ---- Crafted images in a registry ----

/// Writes an OCI layout at `dir` with one manifest made of the given config (media type and
/// bytes) and `(media type, blob)` layers, exactly as given (nothing derived, so config and
/// layers may disagree). Returns the manifest digest.
pub fn raw_oci_layout(
    dir: &Path,
    config_mt: &str,
    config: &[u8],
    layers: &[(&str, &[u8])],
) -> String {
    let (cd, cs) = put_blob(dir, config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(mt, blob)| {
            let (d, s) = put_blob(dir, blob);
            serde_json::json!({"mediaType": mt, "digest": d, "size": s})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": config_mt, "digest": cd, "size": cs},
        "layers": layer_descs,
    });
    let mb = serde_json::to_vec(&manifest).unwrap();
    let (md, ms) = put_blob(dir, &mb);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": md, "size": ms}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    md
}

/// Copies the one image of the OCI layout at `dir` to `reference` (`host:port/repo:tag` on a
/// plain-HTTP registry) with skopeo, byte for byte (digests preserved).
pub fn skopeo_push(dir: &Path, reference: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}", dir.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is installed (tests/run.sh)");
    assert!(
        out.status.success(),
        "skopeo copy to {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// PullImage of `reference`: the image ref, or the gRPC status.
pub async fn pull_image(d: &Daemon, reference: &str) -> Result<String, tonic::Status> {
    d.img()
        .await
        .pull_image(pb::PullImageRequest {
            image: Some(pb::ImageSpec {
                image: reference.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

/// The daemon's image store directory.
pub fn images_dir(d: &Daemon) -> PathBuf {
    d.dir.path().join("root/images")
}

/// Entries in a directory of the daemon's image store (`tmp`, `records`, `rootfs`, ...).
pub fn image_store_entries(d: &Daemon, sub: &str) -> Vec<String> {
    std::fs::read_dir(images_dir(d).join(sub))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---- A delegate runtime: containerd with runc ----

/// The busybox applets the Linux test images link to `/bin/busybox`.
const BUSYBOX_APPLETS: &[&str] = &["sh", "sleep", "echo", "cat", "ls", "hostname", "true", "id"];

/// An OCI layout of a Linux (`linux/<node arch>`) image made of Debian's static busybox
/// (`/bin/busybox` from busybox-static) and its applets as symlinks, with `cmd` as its
/// command. Returns (manifest digest, manifest size), or `None` without busybox-static.
pub fn busybox_layout(dir: &Path, cmd: &[&str], name: &str) -> Option<(String, u64)> {
    let busybox = std::fs::read("/bin/busybox").ok()?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "bin/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(busybox.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for applet in BUSYBOX_APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let raw = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&raw)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    let (ld, ls) = put_blob(dir, &gz.finish().unwrap());
    let config = serde_json::json!({
        "architecture": wasmcri::images::manifest::node_arch(), "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    finish_layout(
        dir,
        config,
        "application/vnd.oci.image.config.v1+json",
        vec![(ld, ls, "application/vnd.oci.image.layer.v1.tar+gzip".into())],
        name,
    );
    Some(top_manifest(dir))
}

/// (digest, size) of the one manifest an OCI layout's `index.json` lists.
pub fn top_manifest(dir: &Path) -> (String, u64) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    (
        m["digest"].as_str().unwrap().to_owned(),
        m["size"].as_u64().unwrap(),
    )
}

/// Makes the OCI layout at `dir` hold one image index (named `name`) of the given
/// `(manifest digest, size, os, architecture)` entries, whose blobs must be in `dir`.
pub fn index_layout(dir: &Path, entries: &[(String, u64, &str, &str)], name: &str) {
    let idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries.iter().map(|(d, s, os, arch)| serde_json::json!(
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": s,
             "platform": {"os": os, "architecture": arch}})).collect::<Vec<_>>(),
    });
    let (d, s) = put_blob(dir, &serde_json::to_vec(&idx).unwrap());
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s,
                       "annotations": {"org.opencontainers.image.ref.name": name}}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

/// [`skopeo_push`] of every platform of an image index (`skopeo copy --all`).
pub fn skopeo_push_all(dir: &Path, reference: &str) {
    let out = Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}", dir.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo is installed (tests/run.sh)");
    assert!(
        out.status.success(),
        "skopeo copy --all to {reference} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private containerd (Debian's 1.6, runc v2 shim, cgroupfs) on its own config, root,
/// state and sockets under a temp dir: never the system service. Its CRI plugin uses the
/// CNI configuration in `cni_conf_dir`, `sandbox_image` as its pause image and reaches the
/// plain-HTTP registry `registry` through a mirror entry. Killed (with the shims, mounts and
/// cgroups it left) on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    /// Its CRI socket.
    pub socket: PathBuf,
    /// `unix://` + [`Containerd::socket`].
    pub endpoint: String,
    /// The cgroup parent its test pods use (`LinuxPodSandboxConfig.cgroup_parent`).
    pub cgroup_parent: String,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd, or `None` (with a message) if containerd or runc is not installed.
    pub async fn start(registry: &str, cni_conf_dir: &Path, sandbox_image: &str) -> Option<Self> {
        for bin in [
            "/usr/bin/containerd",
            "/usr/sbin/runc",
            "/usr/bin/containerd-shim-runc-v2",
        ] {
            if !Path::new(bin).exists() {
                eprintln!("skipping: {bin} not installed (tests/run.sh installs containerd runc)");
                return None;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("wasmcri-ctrd")
            .tempdir()
            .unwrap();
        let p = |s: &str| dir.path().join(s).display().to_string();
        let socket = dir.path().join("containerd.sock");
        let cfg = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{ttrpc}"
[debug]
  address = "{debug}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (as in many CI sandboxes) an oom_score_adj below containerd's
  # own cannot be set.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
            root = p("root"),
            state = p("state"),
            sock = socket.display(),
            ttrpc = p("ttrpc.sock"),
            debug = p("debug.sock"),
            opt = p("opt"),
            runc = p("runc"),
            cni = cni_conf_dir.display(),
        );
        std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
        let mut c = Containerd {
            endpoint: format!("unix://{}", socket.display()),
            socket,
            cgroup_parent: format!("/{}", unique("wasmcri-e2e-ctrd")),
            dir,
            child: None,
        };
        c.spawn().await;
        Some(c)
    }

    /// (Re)starts the containerd process on the same root and state.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .unwrap();
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited {st}: {}", self.log());
            }
            if let Ok(ch) = self.try_channel().await
                && RuntimeServiceClient::new(ch)
                    .version(pb::VersionRequest::default())
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not serve CRI: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// containerd's PID, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Stops containerd (SIGSTOP) and returns once every one of its threads has stopped.
    /// `kill` returns before that: the kernel wakes one thread to begin the group stop, and
    /// until it runs another thread may still answer. The parent's `waitpid(WUNTRACED)`
    /// reports the stop only when the group stop is complete.
    pub fn pause(&self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let pid = nix::unistd::Pid::from_raw(self.pid().expect("containerd runs"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        loop {
            match waitpid(pid, Some(WaitPidFlag::WUNTRACED)) {
                Ok(WaitStatus::Stopped(..)) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                other => panic!("containerd did not stop: {other:?}"),
            }
        }
    }

    /// Resumes containerd after [`Containerd::pause`].
    pub fn resume(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid().expect("containerd runs"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    }

    /// kill -9 of containerd (its shims and containers keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// containerd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// A channel to containerd's CRI socket (to compare with what wasmcri answers).
    pub async fn channel(&self) -> Channel {
        self.try_channel().await.unwrap()
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        let path = self.socket.clone();
        Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
    }

    /// containerd's RuntimeService, directly.
    pub async fn rt(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// containerd's ImageService, directly.
    pub async fn img(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// The `[delegate]` section for [`Daemon::start_with`] (queries time out after 2 s).
    pub fn daemon_config(&self) -> String {
        format!(
            "[delegate]\nendpoint = {:?}\nconnect_timeout_ms = 500\ntimeout_ms = 2000\n",
            self.endpoint
        )
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // After a failed test: remove its pods through containerd's CRI while it runs, so
        // their network namespaces (under /var/run/netns) and shim sockets go too. Drop may
        // run inside the test's runtime, hence a thread of its own.
        if let Some(pid) = self.pid() {
            // A test may have stopped it (SIGSTOP) to make it slow.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGCONT,
            );
            let socket = self.socket.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let endpoint = Endpoint::try_from("http://[::]:50051").unwrap();
                    let connect =
                        endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                            let path = socket.clone();
                            async move {
                                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                    tokio::net::UnixStream::connect(path).await?,
                                ))
                            }
                        }));
                    let Ok(Ok(ch)) = tokio::time::timeout(Duration::from_secs(2), connect).await
                    else {
                        return;
                    };
                    let mut rt = RuntimeServiceClient::new(ch);
                    let pods = tokio::time::timeout(
                        Duration::from_secs(5),
                        rt.list_pod_sandbox(pb::ListPodSandboxRequest::default()),
                    )
                    .await;
                    let Ok(Ok(pods)) = pods else { return };
                    for p in pods.into_inner().items {
                        let id = p.id;
                        let _ = tokio::time::timeout(Duration::from_secs(10), async {
                            let _ = rt
                                .stop_pod_sandbox(pb::StopPodSandboxRequest {
                                    pod_sandbox_id: id.clone(),
                                })
                                .await;
                            let _ = rt
                                .remove_pod_sandbox(pb::RemovePodSandboxRequest {
                                    pod_sandbox_id: id.clone(),
                                })
                                .await;
                        })
                        .await;
                    }
                });
            })
            .join();
        }
        self.kill9();
        // The runc shims it started name its socket on their command line.
        let sock = self.socket.display().to_string();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&sock) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // Containers in our pods' cgroups, then the cgroups, deepest first.
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                let root = h.path().join(self.cgroup_parent.trim_start_matches('/'));
                if !root.exists() {
                    continue;
                }
                kill_and_remove_cgroups(&root);
            }
        }
        // Mounts under its root and state (rootfs overlays, shm), deepest first.
        let base = self.dir.path().display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&base))
            .map(str::to_owned)
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
