//! Snapshot views: what the gRPC edge reads of pods, containers, images and the runtime
//! itself, as plain copies taken under the objects' short locks (containerd's
//! `status.Get()` returns a copy the same way). The edge translates a view into protobuf; it
//! never locks, holds or changes a domain object, and each status RPC is one call here.

use std::path::PathBuf;

use super::{Container, Pod, Result, Runtime};
use crate::container::{ContainerMeta, ContainerState};
use crate::pod::PodRecord;

/// One container as ContainerStatus reports it: its metadata, with the resource limits in
/// force (UpdateContainerResources changes them after creation), and its state.
#[derive(Debug, Clone)]
pub struct ContainerView {
    /// Metadata; `spec.resources` are the limits in force when the view was taken.
    pub meta: ContainerMeta,
    /// The state when the view was taken.
    pub state: ContainerState,
}

/// One sandbox as PodSandboxStatus reports it: its record and its containers' views,
/// newest container first.
#[derive(Debug, Clone)]
pub struct PodView {
    /// Unix nanoseconds just before the view was taken: everything in it is at least this
    /// recent, which is what the kubelet's evented PLEG compares against its cache.
    pub taken_at: i64,
    /// Metadata and state.
    pub record: PodRecord,
    /// The pod's containers, newest first (the order the kubelet's relist uses).
    pub containers: Vec<ContainerView>,
}

/// An image with what the runtime knows about it beyond the store.
#[derive(Debug, Clone)]
pub struct ImageView {
    /// The stored image.
    pub image: crate::images::Image,
    /// The configuration pins it (see [`crate::config::ImagesConfig::pinned`]): the kubelet's
    /// image garbage collection leaves it alone.
    pub pinned: bool,
}

/// Usage of the filesystem holding images and containers' writable data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Where that filesystem is identified (the runtime's root directory).
    pub mountpoint: PathBuf,
    /// Bytes used by the image store.
    pub used_bytes: u64,
    /// Inodes used by the image store.
    pub inodes_used: u64,
}

/// The runtime's own condition, for the Status RPC.
#[derive(Debug, Clone)]
pub struct RuntimeStatus {
    /// `Err` with the CNI's reason while no usable network configuration is present (pods
    /// with node networking work either way).
    pub network: std::result::Result<(), String>,
    /// The runtime handlers served besides the default one.
    pub runtime_handlers: Vec<String>,
    /// Persistent root directory.
    pub root: PathBuf,
    /// Runtime state directory.
    pub state: PathBuf,
    /// The cgroup driver in use, `None` when the host has no usable hierarchy.
    pub cgroups: Option<&'static str>,
    /// CNI directories.
    pub cni: crate::config::CniConfig,
    /// The pod CIDR the kubelet last pushed (empty until it does).
    pub pod_cidr: String,
}

impl Container {
    /// Metadata fixed at creation. Its `spec.resources` are the limits the container was
    /// created with; [`Container::view`] and [`Container::record`] carry those in force.
    pub fn meta(&self) -> &ContainerMeta {
        &self.meta
    }

    /// A consistent copy of everything ContainerStatus reports.
    pub fn view(&self) -> ContainerView {
        let record = self.record();
        ContainerView {
            meta: record.meta,
            state: record.state,
        }
    }
}

impl Pod {
    /// Fixed metadata.
    pub fn meta(&self) -> &crate::pod::PodMeta {
        &self.meta
    }
}

impl Runtime {
    /// Configuration in force, for wiring the daemon's other servers and the delegate.
    pub fn config(&self) -> &crate::config::Config {
        &self.config
    }

    /// ContainerStatus: the container with this ID or unique ID prefix, as a view.
    pub fn container_status(&self, id: &str) -> Result<ContainerView> {
        Ok(self.container(id)?.view())
    }

    /// PodSandboxStatus: the sandbox with this ID or unique ID prefix and its containers.
    pub fn pod_status(&self, id: &str) -> Result<PodView> {
        let pod = self.pod(id)?;
        Ok(self.pod_view(&pod))
    }

    /// A view of `pod` and its containers, taken now (container events carry one).
    pub fn pod_view(&self, pod: &Pod) -> PodView {
        let taken_at = crate::ids::now_ns();
        let record = pod.record();
        let mut containers: Vec<ContainerView> = self
            .containers_of(&pod.meta.id)
            .iter()
            .map(|c| c.view())
            .collect();
        // Newest first, as the kubelet's own relist sorts them: with EventedPLEG on it takes
        // this list as it is and looks containers up by name, first match wins, so an exited
        // attempt listed before its restart made it restart the running one ("name ... is
        // reserved").
        containers
            .sort_by(|a, b| (b.meta.created_at, &b.meta.id).cmp(&(a.meta.created_at, &a.meta.id)));
        PodView {
            taken_at,
            record,
            containers,
        }
    }

    /// Status: whether networking is configured, the handlers served, and the settings
    /// shown with `verbose`.
    pub fn runtime_status(&self) -> RuntimeStatus {
        RuntimeStatus {
            network: self.cni.check_config(),
            runtime_handlers: self.config.runtime_handlers.clone(),
            root: self.config.root.clone(),
            state: self.config.state.clone(),
            cgroups: self.cgroups.as_ref().map(|c| c.driver_name()),
            cni: self.config.cni.clone(),
            pod_cidr: self.pod_cidr.lock().expect("pod CIDR lock").clone(),
        }
    }

    /// UpdateRuntimeConfig: records the pod CIDR the kubelet pushes.
    pub fn set_pod_cidr(&self, cidr: String) {
        *self.pod_cidr.lock().expect("pod CIDR lock") = cidr;
    }

    /// The filesystem holding images and containers' writable data, as the stats RPCs
    /// identify it.
    pub fn filesystem(&self) -> PathBuf {
        self.config.root.clone()
    }
}
