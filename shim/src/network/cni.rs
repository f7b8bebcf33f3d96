//! A CNI client (spec 0.4.0 / 1.0.0, older results understood): loads the network
//! configuration list, runs its plugins with the CNI environment and stdin, chains
//! `prevResult`, rolls back a partial ADD, and caches config + result for DEL.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::{NetworkError, Result, netns};

/// Where Kubernetes installs network configuration.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Upstream's plugin dir, then Debian's.
pub const DEFAULT_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];
/// Our result cache (kept apart from libcni's `/var/lib/cni/results`, whose format differs).
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmcri/cni/results";
/// Plugins normally finish in tens of milliseconds; a stuck one (e.g. an IPAM daemon that
/// never answers) must not hold a pod's creation forever.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the client looks for configuration and plugins, and where it keeps state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniConfig {
    /// Directory with `*.conflist` / `*.conf` / `*.json`; the first by name is used.
    pub conf_dir: PathBuf,
    /// Plugin binary directories, searched in order (also passed as `CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Result cache directory.
    pub cache_dir: PathBuf,
    /// Per-plugin-invocation timeout.
    pub plugin_timeout: Duration,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: DEFAULT_CONF_DIR.into(),
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            cache_dir: DEFAULT_CACHE_DIR.into(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }
}

/// Transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host port forwarded into the pod (`runtimeConfig.portMappings` for plugins that declare
/// the `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host.
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    /// Port in the pod.
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// Protocol.
    pub protocol: Protocol,
    /// Host address to bind (empty = all).
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One pod's attachment to the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The sandbox ID (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The network namespace file (`CNI_NETNS`).
    pub netns: PathBuf,
    /// Interface name inside the namespace (`CNI_IFNAME`, normally `eth0`).
    pub ifname: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_UID`.
    pub pod_uid: String,
    /// Host port mappings.
    pub port_mappings: Vec<PortMapping>,
}

impl Attachment {
    fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(NetworkError::InvalidAttachment {
                what: what.to_string(),
            })
        };
        if self.container_id.is_empty() || self.container_id.contains(['/', '\0']) {
            return bad("container id must be non-empty without '/'");
        }
        if self.ifname.is_empty() || self.ifname.len() > 15 || self.ifname.contains('/') {
            return bad("interface name must be 1-15 characters without '/'");
        }
        Ok(())
    }

    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.pod_namespace, self.pod_name, self.container_id, self.pod_uid
        )
    }
}

/// A loaded network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// Network name.
    pub name: String,
    /// The list's `cniVersion`, passed to every plugin.
    pub cni_version: String,
    /// Plugin configurations, in ADD order.
    pub plugins: Vec<Value>,
    /// The file it came from.
    pub source: PathBuf,
}

impl NetworkList {
    /// Parse a `.conflist`, or a single-plugin `.conf`/`.json` wrapped into a list.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<NetworkList> {
        let bad = |msg: String| NetworkError::Config {
            path: path.to_path_buf(),
            msg,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let is_list =
            path.extension().is_some_and(|e| e == "conflist") || v.get("plugins").is_some();
        let plugins = if is_list {
            v.get("plugins")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| bad("no \"plugins\" array".into()))?
        } else {
            vec![v.clone()]
        };
        if plugins.is_empty() {
            return Err(bad("\"plugins\" is empty".into()));
        }
        for p in &plugins {
            if p.get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(bad("a plugin has no \"type\"".into()));
            }
        }
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| bad("missing or invalid \"name\"".into()))?
            .to_string();
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.2.0")
            .to_string();
        Ok(NetworkList {
            name,
            cni_version,
            plugins,
            source: path.to_path_buf(),
        })
    }

    fn to_value(&self) -> Value {
        json!({"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins})
    }
}

/// An interface from a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address.
    pub mac: Option<String>,
    /// The namespace path for interfaces inside the pod; `None` on the host.
    pub sandbox: Option<String>,
}

/// An address from a CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// The outcome of ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    /// Version of the result format.
    pub cni_version: String,
    /// The pod's IPs: addresses on interfaces inside the sandbox (all addresses when the result
    /// does not say which interface they are on).
    pub ips: Vec<IpAddr>,
    /// Every address with prefix, gateway and interface.
    pub ip_configs: Vec<IpConfig>,
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// The result as the last plugin printed it.
    pub raw: Value,
}

impl CniResult {
    /// Parse a plugin result (0.1.0 – 1.0.0).
    pub fn parse(plugin: &str, v: Value) -> Result<CniResult> {
        let bad = |msg: String| NetworkError::BadResult {
            plugin: plugin.to_string(),
            msg,
        };
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.2.0")
            .to_string();
        let cidr = |s: &str| -> Result<(IpAddr, u8)> {
            let (a, p) = s
                .split_once('/')
                .ok_or_else(|| bad(format!("address {s:?} has no prefix")))?;
            Ok((
                a.parse().map_err(|_| bad(format!("bad address {s:?}")))?,
                p.parse().map_err(|_| bad(format!("bad prefix {s:?}")))?,
            ))
        };
        let gw = |g: Option<&Value>| -> Result<Option<IpAddr>> {
            match g.and_then(Value::as_str) {
                None | Some("") => Ok(None),
                Some(s) => s
                    .parse()
                    .map(Some)
                    .map_err(|_| bad(format!("bad gateway {s:?}"))),
            }
        };
        let mut interfaces = Vec::new();
        for i in v
            .get("interfaces")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = |k: &str| {
                i.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            };
            interfaces.push(Interface {
                name: s("name").unwrap_or_default(),
                mac: s("mac"),
                sandbox: s("sandbox"),
            });
        }
        let mut ip_configs = Vec::new();
        if let Some(ips) = v.get("ips").and_then(Value::as_array) {
            for ip in ips {
                let addr = ip
                    .get("address")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("an ip has no address".into()))?;
                let (address, prefix_len) = cidr(addr)?;
                ip_configs.push(IpConfig {
                    address,
                    prefix_len,
                    gateway: gw(ip.get("gateway"))?,
                    interface: ip
                        .get("interface")
                        .and_then(Value::as_u64)
                        .map(|i| i as usize),
                });
            }
        } else {
            // 0.1.0 / 0.2.0: {"ip4": {"ip": "10.0.0.2/24", "gateway": ...}, "ip6": ...}
            for k in ["ip4", "ip6"] {
                if let Some(o) = v.get(k) {
                    let addr = o
                        .get("ip")
                        .and_then(Value::as_str)
                        .ok_or_else(|| bad(format!("{k} has no ip")))?;
                    let (address, prefix_len) = cidr(addr)?;
                    ip_configs.push(IpConfig {
                        address,
                        prefix_len,
                        gateway: gw(o.get("gateway"))?,
                        interface: None,
                    });
                }
            }
        }
        let in_sandbox = |c: &IpConfig| {
            c.interface
                .and_then(|i| interfaces.get(i))
                .is_some_and(|i: &Interface| i.sandbox.is_some())
        };
        let ips = if ip_configs.iter().any(in_sandbox) {
            ip_configs
                .iter()
                .filter(|c| in_sandbox(c))
                .map(|c| c.address)
                .collect()
        } else {
            ip_configs.iter().map(|c| c.address).collect()
        };
        Ok(CniResult {
            cni_version,
            ips,
            ip_configs,
            interfaces,
            raw: v,
        })
    }
}

/// What is cached per attachment so DEL runs the same plugins with the same `prevResult`,
/// even after a restart or a config change.
#[derive(Debug, Serialize, Deserialize)]
struct CacheEntry {
    container_id: String,
    ifname: String,
    config: Value,
    config_source: PathBuf,
    /// `None` while ADD is in progress (written before the first plugin runs).
    result: Option<Value>,
    port_mappings: Vec<PortMapping>,
}

/// The CNI client.
#[derive(Debug, Clone)]
pub struct Cni {
    config: CniConfig,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

impl Cni {
    /// A client for the given directories.
    pub fn new(config: CniConfig) -> Cni {
        Cni { config }
    }

    /// The directories in use.
    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// The network configuration: the first valid file by name in the conf dir. Invalid
    /// files are skipped (with a warning), as libcni does.
    pub fn load(&self) -> Result<NetworkList> {
        let dir = &self.config.conf_dir;
        let no_config = || NetworkError::NoConfig { dir: dir.clone() };
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_config()),
            Err(e) => {
                return Err(NetworkError::Config {
                    path: dir.clone(),
                    msg: e.to_string(),
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        files.sort();
        for f in files {
            match fs::read(&f)
                .map_err(|e| NetworkError::Config {
                    path: f.clone(),
                    msg: e.to_string(),
                })
                .and_then(|b| NetworkList::parse(&f, &b))
            {
                Ok(n) => return Ok(n),
                Err(e) => tracing::warn!(error = %e, "skipping CNI config"),
            }
        }
        Err(no_config())
    }

    /// For the `NetworkReady` condition: `Err` with the reason when no config is usable.
    pub fn check_config(&self) -> std::result::Result<(), String> {
        self.load().map(|_| ()).map_err(|e| e.to_string())
    }

    fn cache_path(&self, net: &str, att: &Attachment) -> PathBuf {
        self.config
            .cache_dir
            .join(format!("{net}-{}-{}.json", att.container_id, att.ifname))
    }

    fn write_cache(&self, path: &Path, entry: &CacheEntry) -> Result<()> {
        let cache_err = |source| NetworkError::Cache {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&self.config.cache_dir).map_err(cache_err)?;
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(entry).map_err(|e| cache_err(io::Error::other(e)))?;
        fs::write(&tmp, bytes).map_err(cache_err)?;
        fs::rename(&tmp, path).map_err(cache_err)
    }

    /// The cache entry for this attachment, under any network name.
    fn find_cache(&self, att: &Attachment) -> Result<Option<(PathBuf, CacheEntry)>> {
        let suffix = format!("-{}-{}.json", att.container_id, att.ifname);
        let entries = match fs::read_dir(&self.config.cache_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(NetworkError::Cache {
                    path: self.config.cache_dir.clone(),
                    source,
                });
            }
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
            {
                continue;
            }
            let bytes = fs::read(&p).map_err(|source| NetworkError::Cache {
                path: p.clone(),
                source,
            })?;
            match serde_json::from_slice::<CacheEntry>(&bytes) {
                Ok(c) if c.container_id == att.container_id && c.ifname == att.ifname => {
                    return Ok(Some((p, c)));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "unreadable CNI cache entry")
                }
            }
        }
        Ok(None)
    }

    /// Attach: run every plugin's ADD in order and return the final result. On failure the
    /// plugins already run (including the failing one, which may have left residue) get DEL
    /// in reverse order. Cancelling the future kills the running plugin without undo; run it
    /// in a spawned task when the caller may be cancelled.
    pub async fn add(&self, att: &Attachment) -> Result<CniResult> {
        att.validate()?;
        let net = self.load()?;
        let cache_path = self.cache_path(&net.name, att);
        let mut entry = CacheEntry {
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
            config: net.to_value(),
            config_source: net.source.clone(),
            result: None,
            port_mappings: att.port_mappings.clone(),
        };
        // Registered before the first ADD so a crash mid-ADD still leaves what DEL needs.
        self.write_cache(&cache_path, &entry)?;
        let netns = att.netns.to_string_lossy().into_owned();
        let mut prev: Option<Value> = None;
        let mut failure = None;
        for (i, plugin) in net.plugins.iter().enumerate() {
            match self
                .exec(Command::Add, plugin, &net, att, prev.as_ref(), &netns)
                .await
            {
                Ok(out) => prev = out,
                Err(e) => {
                    failure = Some((i, e));
                    break;
                }
            }
        }
        let parsed = match (&failure, &prev) {
            (None, Some(v)) => {
                let last = plugin_type(net.plugins.last().unwrap_or(&Value::Null));
                match CniResult::parse(&last, v.clone()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        failure = Some((net.plugins.len() - 1, e));
                        None
                    }
                }
            }
            (None, None) => {
                failure = Some((
                    net.plugins.len() - 1,
                    NetworkError::BadResult {
                        plugin: plugin_type(net.plugins.last().unwrap_or(&Value::Null)),
                        msg: "ADD printed no result".into(),
                    },
                ));
                None
            }
            _ => None,
        };
        if let Some((i, error)) = failure {
            // A plugin that never started left nothing to undo; one that ran may have.
            let ran = match error {
                NetworkError::PluginNotFound { .. } | NetworkError::Exec { .. } => i,
                _ => i + 1,
            };
            let undo = self
                .run_del(&net, att, &net.plugins[..ran], prev.as_ref())
                .await
                .and_then(|()| remove_file(&cache_path));
            return Err(match undo {
                Ok(()) => error,
                Err(cleanup) => NetworkError::Rollback {
                    error: Box::new(error),
                    cleanup: Box::new(cleanup),
                },
            });
        }
        let result = parsed.unwrap_or_else(|| unreachable!("no failure means a parsed result"));
        entry.result = Some(result.raw.clone());
        self.write_cache(&cache_path, &entry)?;
        Ok(result)
    }

    /// Detach: run every plugin's DEL in reverse order with the cached config and
    /// `prevResult` (falling back to the current config). Idempotent: "not found" answers and
    /// a namespace that is already gone count as success; with neither a cache entry nor a
    /// config there is nothing to undo.
    pub async fn del(&self, att: &Attachment) -> Result<()> {
        att.validate()?;
        let mut att = att.clone();
        let (net, prev, cache_path) = match self.find_cache(&att)? {
            Some((path, c)) => {
                let bytes = serde_json::to_vec(&c.config).unwrap_or_default();
                let net = NetworkList::parse(&c.config_source, &bytes)?;
                // The host ports to unmap are the ones mapped at ADD.
                if att.port_mappings.is_empty() {
                    att.port_mappings = c.port_mappings;
                }
                (net, c.result, Some(path))
            }
            None => match self.load() {
                Ok(net) => (net, None, None),
                Err(NetworkError::NoConfig { .. }) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        self.run_del(&net, &att, &net.plugins, prev.as_ref())
            .await?;
        if let Some(p) = cache_path {
            remove_file(&p)?;
        }
        Ok(())
    }

    /// DEL for `plugins` in reverse; every plugin is tried, the first error is returned.
    async fn run_del(
        &self,
        net: &NetworkList,
        att: &Attachment,
        plugins: &[Value],
        prev: Option<&Value>,
    ) -> Result<()> {
        // A namespace that is gone (or never became one) is passed as empty, which plugins
        // read as "only release host-side state".
        let netns = if netns::is_namespace(&att.netns) {
            att.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        let mut first = None;
        for plugin in plugins.iter().rev() {
            match self
                .exec(Command::Del, plugin, net, att, prev, &netns)
                .await
            {
                Ok(_) => {}
                Err(NetworkError::Plugin { msg, .. }) if is_not_found(&msg) => {}
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn find_plugin(&self, ty: &str) -> Result<PathBuf> {
        if !ty.contains('/') {
            for d in &self.config.bin_dirs {
                let p = d.join(ty);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(NetworkError::PluginNotFound {
            plugin: ty.to_string(),
            dirs: self.config.bin_dirs.clone(),
        })
    }

    /// Run one plugin; returns its parsed stdout for ADD.
    async fn exec(
        &self,
        cmd: Command,
        plugin: &Value,
        net: &NetworkList,
        att: &Attachment,
        prev: Option<&Value>,
        netns: &str,
    ) -> Result<Option<Value>> {
        let ty = plugin_type(plugin);
        let bin = self.find_plugin(&ty)?;
        let stdin = plugin_stdin(plugin, net, att, prev);
        let cni_path = std::env::join_paths(&self.config.bin_dirs)
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let exec_err = |source| NetworkError::Exec {
            plugin: ty.clone(),
            source,
        };
        let mut command = tokio::process::Command::new(&bin);
        command
            .env("CNI_COMMAND", cmd.as_str())
            .env("CNI_CONTAINERID", &att.container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", att.cni_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // ETXTBSY: a plugin binary just written (installed) may still be open for writing in a
        // process forked meanwhile; that passes within milliseconds.
        let mut tries = 0;
        let mut child = loop {
            match command.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(exec_err(e)),
            }
        };
        let mut pipe = child.stdin.take();
        let write = async move {
            if let Some(p) = &mut pipe {
                // A plugin that exits without reading its stdin is judged by its exit status.
                let _ = p.write_all(&stdin).await;
            }
            drop(pipe);
        };
        let run = async { tokio::join!(write, child.wait_with_output()).1 };
        let out = tokio::time::timeout(self.config.plugin_timeout, run)
            .await
            .map_err(|_| NetworkError::Timeout {
                plugin: ty.clone(),
                after: self.config.plugin_timeout,
            })?
            .map_err(exec_err)?;
        if !out.status.success() {
            return Err(plugin_error(&ty, &out));
        }
        if cmd == Command::Del {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| NetworkError::BadResult {
                plugin: ty,
                msg: format!("{e}: {}", String::from_utf8_lossy(&out.stdout).trim()),
            })
    }
}

fn plugin_type(plugin: &Value) -> String {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The plugin's stdin: its config with the list's `name`/`cniVersion`, `prevResult`, and
/// `runtimeConfig` for the capabilities it declares.
fn plugin_stdin(
    plugin: &Value,
    net: &NetworkList,
    att: &Attachment,
    prev: Option<&Value>,
) -> Vec<u8> {
    let mut conf = plugin.clone();
    if let Some(o) = conf.as_object_mut() {
        o.insert("name".into(), json!(net.name));
        o.insert("cniVersion".into(), json!(net.cni_version));
        if let Some(p) = prev {
            o.insert("prevResult".into(), p.clone());
        }
        let wants_ports = plugin
            .pointer("/capabilities/portMappings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if wants_ports && !att.port_mappings.is_empty() {
            let rc = o.entry("runtimeConfig").or_insert_with(|| json!({}));
            if let Some(rc) = rc.as_object_mut() {
                rc.insert("portMappings".into(), json!(att.port_mappings));
            }
        }
    }
    serde_json::to_vec(&conf).unwrap_or_default()
}

fn plugin_error(ty: &str, out: &std::process::Output) -> NetworkError {
    #[derive(Deserialize)]
    struct ErrObj {
        code: Option<i64>,
        msg: Option<String>,
        details: Option<String>,
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let exit = out.status.code().map(i64::from).unwrap_or(-1);
    match serde_json::from_slice::<ErrObj>(&out.stdout) {
        Ok(e) if e.msg.is_some() || e.code.is_some() => {
            let mut msg = e.msg.unwrap_or_default();
            for extra in [e.details.unwrap_or_default(), stderr] {
                if !extra.is_empty() {
                    msg = format!("{msg}; {extra}");
                }
            }
            NetworkError::Plugin {
                plugin: ty.to_string(),
                code: e.code.unwrap_or(exit),
                msg,
            }
        }
        _ => {
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let msg = [stdout, stderr]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            NetworkError::Plugin {
                plugin: ty.to_string(),
                code: exit,
                msg: if msg.is_empty() {
                    format!("exited with {}", out.status)
                } else {
                    msg
                },
            }
        }
    }
}

/// DEL must succeed for things already gone; plugins say so in various words.
fn is_not_found(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    ["not found", "no such", "does not exist", "not exist"]
        .iter()
        .any(|s| m.contains(s))
}

fn remove_file(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::Cache {
            path: p.to_path_buf(),
            source,
        }),
    }
}
