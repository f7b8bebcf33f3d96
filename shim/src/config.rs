//! Daemon configuration: defaults that need no file, a TOML file for everything else, and
//! command-line flags that override both.
//!
//! ```toml
//! socket = "/run/wasmcri/wasmcri.sock"
//! root = "/var/lib/wasmcri"        # images, precompiled artifacts (persistent)
//! state = "/run/wasmcri"           # netns, CNI cache (survive daemon restarts, not reboots)
//! cgroup_root = "/sys/fs/cgroup"
//! default_cgroup_parent = "/wasmcri"
//! runtime_handlers = ["wasmtime"]
//!
//! [cni]
//! conf_dir = "/etc/cni/net.d"
//! bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
//!
//! [registry]                       # see images::RegistryConfig
//! insecure = ["registry.local:5000"]
//!
//! [images]                         # see ImagesConfig
//! pinned = ["registry.k8s.io/pause:3.10"]
//! max_import_bytes = 1140850688    # largest `wasmcri image import` stream the daemon takes
//!
//! [streaming]                      # exec / port-forward URLs the kubelet proxies to
//! address = "127.0.0.1"
//! port = 0                         # 0: a random free port
//!
//! [delegate]                       # a CRI runtime for everything that is not Wasm
//! endpoint = "unix:///run/containerd/containerd.sock"
//! connect_timeout_ms = 1000
//! timeout_ms = 10000               # deadline of delegated queries (lists, status, stats)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the daemon listens when nothing else is said.
pub const DEFAULT_SOCKET: &str = "/run/wasmcri/wasmcri.sock";
/// Persistent data: images, content, precompiled modules, pod and container metadata.
pub const DEFAULT_ROOT: &str = "/var/lib/wasmcri";
/// Runtime data that must survive a daemon restart but not a reboot: network namespaces.
pub const DEFAULT_STATE: &str = "/run/wasmcri";

/// The whole daemon configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Unix socket the CRI server listens on.
    pub socket: PathBuf,
    /// Persistent root: images, metadata.
    pub root: PathBuf,
    /// Runtime state that survives a daemon restart but not a reboot: network namespaces and
    /// the CNI result cache.
    pub state: PathBuf,
    /// `tracing` filter, e.g. `info` or `wasmcri=debug`.
    pub log_level: String,
    /// Where cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// Parent cgroup for containers whose pod gives no `cgroup_parent`.
    pub default_cgroup_parent: String,
    /// Runtime handlers accepted besides the default `""` handler.
    pub runtime_handlers: Vec<String>,
    /// Runner processes kept started ahead of need, so StartContainer does not wait for
    /// fork/exec and engine setup (0 disables; about 1.5 MiB each).
    pub standby_runners: usize,
    /// CNI settings.
    pub cni: CniConfig,
    /// Registry settings (mirrors, credentials, insecure registries, CA bundle).
    pub registry: crate::images::RegistryConfig,
    /// The streaming server (exec, port-forward).
    pub streaming: StreamingConfig,
    /// Image handling (pinned images).
    pub images: ImagesConfig,
    /// The CRI runtime Linux pods are delegated to (none by default).
    pub delegate: DelegateConfig,
}

/// Image settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Images the node must keep (the pause/sandbox image, typically): tags
    /// (`registry.k8s.io/pause:3.10`), repo digests (`name@sha256:…`) or full image IDs
    /// (`sha256:<64 hex>`). ImageStatus and ListImages report the images they name, while
    /// present, as `pinned`, which the kubelet's image garbage collector skips. RemoveImage
    /// still removes them when asked, as the CRI requires.
    pub pinned: Vec<String>,
    /// Largest archive `wasmcri image import` may stream to the daemon, in bytes; a longer
    /// stream is refused while it arrives. Default: 1 GiB (the unpack limit on a layout's
    /// data) plus 64 MiB for tar headers.
    pub max_import_bytes: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            pinned: Vec::new(),
            max_import_bytes: (1 << 30) + (64 << 20),
        }
    }
}

/// The delegate CRI runtime (containerd) that runs every pod whose runtime handler is not one
/// of [`Config::runtime_handlers`]. An empty endpoint means no delegate: wasmcri alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DelegateConfig {
    /// `unix:///path/to/containerd.sock` (or a plain absolute path); empty: no delegate.
    pub endpoint: String,
    /// How long connecting to the delegate's socket may take.
    pub connect_timeout_ms: u64,
    /// Deadline of delegated queries (lists, status, stats, image status); lifecycle calls
    /// and pulls keep the caller's own deadline.
    pub timeout_ms: u64,
}

impl Default for DelegateConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            connect_timeout_ms: 1000,
            timeout_ms: 10_000,
        }
    }
}

/// Where the streaming server listens. The defaults are containerd's: loopback (the kubelet
/// on the same node proxies to it) and a random port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// IP address to bind (a wildcard address is advertised as loopback).
    pub address: String,
    /// TCP port; 0 picks a free one.
    pub port: u16,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 0,
        }
    }
}

/// CNI plugin and configuration locations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CniConfig {
    /// Directory holding `*.conflist` / `*.conf`.
    pub conf_dir: PathBuf,
    /// Directories searched for plugin binaries, in order.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            conf_dir: "/etc/cni/net.d".into(),
            bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            log_level: "info".into(),
            cgroup_root: "/sys/fs/cgroup".into(),
            default_cgroup_parent: "/wasmcri".into(),
            runtime_handlers: vec!["wasmtime".into()],
            standby_runners: 2,
            cni: CniConfig::default(),
            registry: Default::default(),
            streaming: StreamingConfig::default(),
            images: ImagesConfig::default(),
            delegate: DelegateConfig::default(),
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// An `[images] pinned` entry is neither an image reference nor a full image ID.
    #[error("invalid config {path}: [images] pinned {reference:?}: {reason}")]
    Pinned {
        /// The file.
        path: PathBuf,
        /// The entry.
        reference: String,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file; missing keys take their defaults, unknown keys are an error.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        for reference in &config.images.pinned {
            if let Err(e) = crate::images::PinnedRef::parse(reference) {
                return Err(ConfigError::Pinned {
                    path: path.to_owned(),
                    reference: reference.clone(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(config)
    }

    /// Whether `handler` names a runtime handler this daemon serves.
    pub fn accepts_handler(&self, handler: &str) -> bool {
        handler.is_empty() || self.runtime_handlers.iter().any(|h| h == handler)
    }

    /// Directory of image content and precompiled artifacts.
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Directory of precompiled wasm artifacts.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Directory of durable pod and container metadata.
    pub fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }

    /// Directory of per-pod network namespaces.
    pub fn netns_dir(&self) -> PathBuf {
        self.state.join("netns")
    }

    /// Directory of per-container runtime files (runner spec, exit record, file mounts).
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Directory of per-pod runtime files (resolv.conf, hostname).
    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn overrides_and_unknown_keys() {
        let c: Config = toml::from_str("root = \"/x\"\n[cni]\nconf_dir = \"/c\"\n").unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert_eq!(c.cni.conf_dir, PathBuf::from("/c"));
        assert_eq!(c.cni.bin_dirs, CniConfig::default().bin_dirs);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let c: Config = toml::from_str("[streaming]\nport = 10010\n").unwrap();
        assert_eq!(c.streaming.port, 10010);
        assert_eq!(c.streaming.address, "127.0.0.1");
        assert!(toml::from_str::<Config>("[streaming]\nport = 70000\n").is_err());
        assert!(toml::from_str::<Config>("[streaming]\nbogus = 1\n").is_err());
    }

    #[test]
    fn delegate_section() {
        assert_eq!(Config::default().delegate.endpoint, "");
        let c: Config =
            toml::from_str("[delegate]\nendpoint = \"unix:///run/containerd/containerd.sock\"\n")
                .unwrap();
        assert_eq!(
            c.delegate.endpoint,
            "unix:///run/containerd/containerd.sock"
        );
        assert_eq!(c.delegate.timeout_ms, 10_000);
        assert!(toml::from_str::<Config>("[delegate]\nbogus = 1\n").is_err());
    }

    #[test]
    fn handlers() {
        let c = Config::default();
        assert!(c.accepts_handler(""));
        assert!(c.accepts_handler("wasmtime"));
        assert!(!c.accepts_handler("runc"));
    }

    #[test]
    fn pinned_images_are_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let id = format!("sha256:{}", "a".repeat(64));
        std::fs::write(
            &p,
            format!("[images]\npinned = [\"registry.k8s.io/pause:3.10\", {id:?}]\n"),
        )
        .unwrap();
        assert_eq!(Config::load(&p).unwrap().images.pinned.len(), 2);
        for bad in ["UPPER/case:x", "", "a b"] {
            std::fs::write(&p, format!("[images]\npinned = [{bad:?}]\n")).unwrap();
            let e = Config::load(&p).unwrap_err();
            assert!(matches!(&e, ConfigError::Pinned { .. }), "{bad:?}: {e}");
        }
        std::fs::write(&p, "[images]\nbogus = 1\n").unwrap();
        assert!(Config::load(&p).is_err());
    }

    #[test]
    fn load_reports_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "socket = 3").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml"), "{e}");
        assert!(Config::load(&dir.path().join("missing")).is_err());
    }
}
