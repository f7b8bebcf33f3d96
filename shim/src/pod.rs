//! Pod sandboxes: the fixed metadata the kubelet gave us ([`PodMeta`]) and the status that
//! changes over the sandbox's life ([`PodState`]). Both are persisted as one record.
//!
//! A Wasm pod has no pause process: the sandbox is its network namespace, its cgroup parent,
//! its DNS/hostname files and the metadata here.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the kubelet asked for when it ran the sandbox (RunPodSandbox), in domain terms; the
/// runtime fills in `hostname` and `cgroup_parent` when the kubelet leaves them empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PodSpec {
    /// Kubernetes pod name.
    pub name: String,
    /// Kubernetes pod UID.
    pub uid: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Attempt number, incremented by the kubelet when it recreates the sandbox.
    pub attempt: u32,
    /// Labels, verbatim.
    pub labels: HashMap<String, String>,
    /// Annotations, verbatim.
    pub annotations: HashMap<String, String>,
    /// Runtime handler (`""` or `wasmtime`).
    pub runtime_handler: String,
    /// Directory where the kubelet wants container logs (may be empty).
    pub log_directory: String,
    /// Pod hostname.
    pub hostname: String,
    /// cgroupfs-style parent for the pod's containers.
    pub cgroup_parent: String,
    /// DNS servers, search domains and options for `/etc/resolv.conf`.
    pub dns: Option<DnsConfig>,
    /// Whether the pod uses the node's network namespace.
    pub host_network: bool,
    /// Port mappings for the CNI portmap plugin.
    pub port_mappings: Vec<PortMapping>,
    /// The user namespace mapping (`hostUsers: false`, CRI `userns_options` in mode `POD`):
    /// every runner of the pod runs in a user namespace with exactly these ranges. `None`:
    /// the node's users (mode `NODE`). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_mappings: Option<crate::userns::IdMappings>,
    /// Namespaced sysctls (see [`crate::network::sysctl`]), applied at RunPodSandbox.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
}

/// A sandbox's fixed metadata: the request plus what the runtime made for it. Persisted with
/// the spec's fields inline (`flatten`), so the record's JSON keys are the same as before the
/// spec was its own type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodMeta {
    /// 64-hex ID.
    pub id: String,
    /// What the kubelet asked for.
    #[serde(flatten)]
    pub spec: PodSpec,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// The pod's network namespace file, when it has its own.
    pub netns: Option<PathBuf>,
    /// The pod's user namespace file (see [`crate::userns`]), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<PathBuf>,
    /// The runtime-side pod directory (resolv.conf, hostname, hosts).
    pub dir: PathBuf,
}

/// Pod DNS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DnsConfig {
    /// Nameserver addresses.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The `/etc/resolv.conf` text.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A port to publish on the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Port inside the pod.
    pub container_port: i32,
    /// Port on the host.
    pub host_port: i32,
    /// Host IP to bind, empty for all.
    pub host_ip: String,
}

impl PortMapping {
    /// The host port to publish, if any. The kubelet lists every `containerPort` of the pod,
    /// with host port 0 when the spec asks for none; only a real port goes to CNI (the
    /// `portmap` plugin rejects 0), as containerd filters them.
    pub fn published_host_port(&self) -> Option<u16> {
        u16::try_from(self.host_port).ok().filter(|p| *p != 0)
    }
}

/// Sandbox state as the CRI defines it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum PodPhase {
    /// Running and usable.
    Ready,
    /// Stopped (or failed).
    NotReady,
    /// RunPodSandbox has not finished: the record exists so that recovery after a crash
    /// half-way can tear down what was made (netns, CNI attachment, files). Never listed.
    Creating,
}

/// What changes over a sandbox's life.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodState {
    /// Ready or not.
    pub phase: PodPhase,
    /// Pod IPs from CNI, primary first.
    pub ips: Vec<String>,
    /// Whether the network (CNI DEL + netns removal) still needs tearing down.
    pub network_attached: bool,
    /// Pod-level resources from the last `UpdatePodSandboxResources` (in-place resize), if
    /// any. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<PodResources>,
}

/// What the kubelet says a pod may use as a whole (`UpdatePodSandboxResources`).
///
/// The pod's cgroup under `cgroup_parent` belongs to the kubelet (cgroupfs driver), which
/// sets these limits on it itself; the runtime records them, as containerd does for NRI, so
/// status and a restarted daemon know the pod's size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PodResources {
    /// The sandbox's overhead (RuntimeClass `overhead`).
    pub overhead: crate::cgroups::Resources,
    /// The sum of its containers' resources.
    pub resources: crate::cgroups::Resources,
}

/// The durable record of a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodRecord {
    /// Fixed metadata.
    pub meta: PodMeta,
    /// Current state.
    pub state: PodState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_record_keeps_flat_keys() {
        // Records written before PodSpec existed had every field at the top level.
        let old = r#"{"id":"ab","name":"web","uid":"u1","namespace":"ns","attempt":2,
            "labels":{"a":"b"},"annotations":{},"runtime_handler":"wasmtime","created_at":7,
            "log_directory":"/l","hostname":"web","cgroup_parent":"/kubepods/p","dns":null,
            "host_network":false,"port_mappings":[],"netns":null,"dir":"/d"}"#;
        let m: PodMeta = serde_json::from_str(old).unwrap();
        assert_eq!((m.spec.name.as_str(), m.spec.attempt), ("web", 2));
        assert_eq!(m.spec.cgroup_parent, "/kubepods/p");
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["namespace"], "ns");
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(old).unwrap());
        assert_eq!((m.spec.id_mappings, m.userns), (None, None));
        assert!(m.spec.sysctls.is_empty());
    }

    #[test]
    fn user_namespace_and_sysctls_round_trip() {
        let mut m: PodMeta = serde_json::from_str(
            r#"{"id":"ab","name":"web","uid":"u1","namespace":"ns","attempt":0,"labels":{},
            "annotations":{},"runtime_handler":"","created_at":7,"log_directory":"",
            "hostname":"web","cgroup_parent":"","dns":null,"host_network":false,
            "port_mappings":[],"netns":null,"dir":"/d"}"#,
        )
        .unwrap();
        let range = crate::userns::IdMapping {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        m.spec.id_mappings = Some(crate::userns::IdMappings {
            uids: vec![range],
            gids: vec![range],
        });
        m.spec.sysctls = BTreeMap::from([("net.ipv4.tcp_syncookies".into(), "1".into())]);
        m.userns = Some("/run/wasmcri/userns/p".into());
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["id_mappings"]["uids"][0]["host_id"], 65536);
        assert_eq!(v["userns"], "/run/wasmcri/userns/p");
        let back: PodMeta = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn state_without_resources_reads_and_writes_as_before() {
        let old = r#"{"phase":"Ready","ips":["10.0.0.2"],"network_attached":true}"#;
        let st: PodState = serde_json::from_str(old).unwrap();
        assert_eq!(st.resources, None);
        assert_eq!(
            serde_json::to_value(&st).unwrap(),
            serde_json::from_str::<serde_json::Value>(old).unwrap()
        );
        let mut st = st;
        st.resources = Some(PodResources {
            overhead: Default::default(),
            resources: crate::cgroups::Resources {
                memory_limit: 64 << 20,
                ..Default::default()
            },
        });
        let back: PodState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn resolv_conf_text() {
        let d = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            d.resolv_conf(),
            "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        assert_eq!(DnsConfig::default().resolv_conf(), "");
    }

    #[test]
    fn only_real_host_ports_are_published() {
        let m = |host_port| PortMapping {
            protocol: "tcp".into(),
            container_port: 8080,
            host_port,
            host_ip: String::new(),
        };
        assert_eq!(m(0).published_host_port(), None);
        assert_eq!(m(-1).published_host_port(), None);
        assert_eq!(m(70_000).published_host_port(), None);
        assert_eq!(m(30080).published_host_port(), Some(30080));
    }
}
