//! Sandbox lifecycle: run (user namespace + netns + CNI ADD + sysctls + DNS/hostname
//! files), stop (containers, CNI DEL), remove (containers, namespaces, files, record).

use std::collections::HashMap;
use std::sync::Arc;

use super::{
    ContainerEventKind, Pod, Result, Runtime, RuntimeError, Undo, pod_name_key, run_undo,
    with_cleanup,
};
use crate::network::cni::Attachment;
use crate::pod::{PodMeta, PodPhase, PodRecord, PodState};

/// What RunPodSandbox asks for.
pub type NewPod = crate::pod::PodSpec;

/// The pod's interface inside its network namespace (`CNI_IFNAME`).
pub const POD_IFNAME: &str = "eth0";

impl Runtime {
    /// RunPodSandbox. Every step registers its undo; on failure all undos run (even if one
    /// of them fails) on a task of their own, so a cancelled request still cleans up.
    pub async fn run_pod(self: &Arc<Self>, req: NewPod) -> Result<String> {
        if req.name.is_empty() {
            return Err(RuntimeError::InvalidArgument(
                "sandbox metadata.name is empty".into(),
            ));
        }
        if !self.config.accepts_handler(&req.runtime_handler) {
            return Err(RuntimeError::InvalidArgument(format!(
                "unknown runtime handler {:?}; this runtime serves {:?}",
                req.runtime_handler, self.config.runtime_handlers
            )));
        }
        // Refused before anything exists, so a hostile request leaves nothing behind.
        if let Some(m) = &req.id_mappings {
            m.validate()
                .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
            self.check_ids_free(&req, &self.pods.read().expect("pods lock"))?;
        }
        crate::network::sysctl::validate(&req.sysctls, req.host_network)
            .map_err(|e| RuntimeError::InvalidArgument(e.to_string()))?;
        let this = self.clone();
        let object = format!("pod {}/{}", req.namespace, req.name);
        // Run to completion even if the kubelet gives up: the undo list must run.
        tokio::spawn(async move { this.run_pod_inner(req).await })
            .await
            .map_err(RuntimeError::task("run pod sandbox", object))?
    }

    async fn run_pod_inner(self: Arc<Self>, req: NewPod) -> Result<String> {
        let id = crate::ids::new_id();
        let key = pod_name_key(&req.name, &req.namespace, &req.uid, req.attempt);
        self.reserve("pod sandbox", &key, &id)?;
        let mut undo: Vec<Undo> = Vec::new();
        {
            let this = self.clone();
            let (key, id) = (key.clone(), id.clone());
            undo.push(Box::pin(async move {
                this.release(&key, &id);
                Ok(())
            }));
        }
        match self.run_pod_steps(&id, req, &mut undo).await {
            Ok(()) => Ok(id),
            Err(e) => {
                let failures = run_undo(undo).await;
                Err(with_cleanup(e, failures))
            }
        }
    }

    async fn run_pod_steps(
        self: &Arc<Self>,
        id: &str,
        mut req: NewPod,
        undo: &mut Vec<Undo>,
    ) -> Result<()> {
        let dir = self.config.pods_dir().join(id);
        std::fs::create_dir_all(&dir)
            .map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        {
            let dir = dir.clone();
            undo.push(Box::pin(async move {
                crate::store::remove(&dir).map_err(RuntimeError::from)
            }));
        }
        if req.hostname.is_empty() {
            req.hostname = req.name.clone();
        }
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(RuntimeError::io("create pod etc dir"))?;
        std::fs::write(etc.join("hostname"), format!("{}\n", req.hostname))
            .map_err(RuntimeError::io("write hostname"))?;
        if let Some(dns) = &req.dns {
            std::fs::write(etc.join("resolv.conf"), dns.resolv_conf())
                .map_err(RuntimeError::io("write resolv.conf"))?;
        }

        if req.cgroup_parent.is_empty() {
            req.cgroup_parent = self.config.default_cgroup_parent.clone();
        }
        let mut meta = PodMeta {
            id: id.to_owned(),
            spec: req,
            created_at: crate::ids::now_ns(),
            netns: None,
            userns: None,
            dir,
        };
        let mut state = PodState {
            phase: PodPhase::Creating,
            ips: Vec::new(),
            network_attached: false,
            resources: None,
        };
        let netns_name = format!("wasmcri-{}", &id[..16]);
        if !meta.spec.host_network {
            // Known before it exists, so the record below names it.
            meta.netns = Some(self.config.netns_dir().join(&netns_name));
        }
        if meta.spec.id_mappings.is_some() {
            meta.userns = Some(self.userns_dir().join(&netns_name));
        }
        // Saved before the namespaces and CNI ADD: a daemon killed during any of them leaves
        // a `Creating` record, from which recovery tears them down (see `recover`).
        self.save_pod(&PodRecord {
            meta: meta.clone(),
            state: state.clone(),
        })
        .await?;
        {
            let (this, id) = (self.clone(), id.to_owned());
            undo.push(Box::pin(async move {
                crate::store::remove(&this.pod_meta_path(&id)).map_err(RuntimeError::from)
            }));
        }

        if let Some(mappings) = meta.spec.id_mappings.clone() {
            let (dir, name) = (self.userns_dir(), netns_name.clone());
            let path =
                tokio::task::spawn_blocking(move || crate::userns::create(&dir, &name, &mappings))
                    .await
                    .map_err(RuntimeError::task(
                        "create user namespace",
                        format!("pod sandbox {id}"),
                    ))?
                    .map_err(RuntimeError::from)?;
            {
                let (path, object) = (path.clone(), format!("pod sandbox {id}"));
                undo.push(Box::pin(async move {
                    tokio::task::spawn_blocking(move || crate::userns::remove(&path))
                        .await
                        .map_err(RuntimeError::task("remove user namespace", object))?
                        .map_err(RuntimeError::from)
                }));
            }
            debug_assert_eq!(meta.userns.as_ref(), Some(&path));
        }

        if !meta.spec.host_network {
            let netns_dir = self.config.netns_dir();
            let path = tokio::task::spawn_blocking(move || {
                crate::network::netns::create(&netns_dir, &netns_name)
            })
            .await
            .map_err(RuntimeError::task(
                "create network namespace",
                format!("pod sandbox {id}"),
            ))??;
            {
                let (path, object) = (path.clone(), format!("pod sandbox {id}"));
                undo.push(Box::pin(async move {
                    tokio::task::spawn_blocking(move || crate::network::netns::remove(&path))
                        .await
                        .map_err(RuntimeError::task("remove network namespace", object))?
                        .map_err(RuntimeError::from)
                }));
            }
            debug_assert_eq!(meta.netns.as_ref(), Some(&path));
            meta.netns = Some(path.clone());
            let att = self.attachment(&meta);
            // Registered before ADD: a plugin that fails half-way can leave an IP allocated.
            {
                let this = self.clone();
                let att = att.clone();
                undo.push(Box::pin(async move { this.cni_del(att).await }));
            }
            let result = self.cni.add(&att).await?;
            state.ips = result.ips.iter().map(|ip| ip.to_string()).collect();
            state.network_attached = true;
            // After CNI ADD, so per-interface sysctls (`net.ipv4.conf.eth0.*`) find eth0; a
            // failure rolls back the namespace (and every value written in it) with the rest.
            if !meta.spec.sysctls.is_empty() {
                let (path, sysctls) = (path.clone(), meta.spec.sysctls.clone());
                tokio::task::spawn_blocking(move || crate::network::sysctl::apply(&path, &sysctls))
                    .await
                    .map_err(RuntimeError::task(
                        "write sysctls",
                        format!("pod sandbox {id}"),
                    ))??;
            }
        }

        state.phase = PodPhase::Ready;
        let record = PodRecord { meta, state };
        self.save_pod(&record).await?;
        let pod = Pod::new(record);
        {
            let mut pods = self.pods.write().expect("pods lock");
            // Again under the lock that publishes the pod: two RunPodSandbox calls racing
            // with one range cannot both pass.
            self.check_ids_free(&pod.meta.spec, &pods)?;
            pods.insert(id.to_owned(), pod.clone());
        }
        // A sandbox is created and started in one step, as containerd reports it.
        self.events.emit(id, &pod, ContainerEventKind::Created);
        self.events.emit(id, &pod, ContainerEventKind::Started);
        Ok(())
    }

    pub(super) fn attachment(&self, meta: &PodMeta) -> Attachment {
        Attachment {
            container_id: meta.id.clone(),
            netns: meta.netns.clone().unwrap_or_default(),
            ifname: POD_IFNAME.into(),
            pod_name: meta.spec.name.clone(),
            pod_namespace: meta.spec.namespace.clone(),
            pod_uid: meta.spec.uid.clone(),
            port_mappings: meta
                .spec
                .port_mappings
                .iter()
                .filter_map(|p| {
                    Some(crate::network::cni::PortMapping {
                        host_port: p.published_host_port()?,
                        container_port: p.container_port as u16,
                        protocol: match p.protocol.as_str() {
                            "udp" => crate::network::cni::Protocol::Udp,
                            "sctp" => crate::network::cni::Protocol::Sctp,
                            _ => crate::network::cni::Protocol::Tcp,
                        },
                        host_ip: p.host_ip.clone(),
                    })
                })
                .collect(),
        }
    }

    /// Refuses a user namespace whose node IDs overlap those of a sandbox of another pod
    /// (another Kubernetes pod UID: the kubelet gives a recreated sandbox of the same pod the
    /// same range, while the old one may still exist).
    fn check_ids_free(
        &self,
        spec: &crate::pod::PodSpec,
        pods: &HashMap<String, Arc<Pod>>,
    ) -> Result<()> {
        let Some(m) = &spec.id_mappings else {
            return Ok(());
        };
        for p in pods.values().filter(|p| p.meta.spec.uid != spec.uid) {
            if let Some(clash) = p
                .meta
                .spec
                .id_mappings
                .as_ref()
                .and_then(|o| m.host_overlap(o))
            {
                return Err(RuntimeError::InvalidArgument(format!(
                    "user namespace {clash} is already used by pod {}/{} (sandbox {})",
                    p.meta.spec.namespace, p.meta.spec.name, p.meta.id
                )));
            }
        }
        Ok(())
    }

    /// Where pods' user namespaces are bound (state: gone after a reboot, like the netns).
    fn userns_dir(&self) -> std::path::PathBuf {
        self.config.state.join("userns")
    }

    async fn cni_del(self: &Arc<Self>, att: Attachment) -> Result<()> {
        self.cni.del(&att).await?;
        Ok(())
    }

    /// StopPodSandbox: stops every container (killing them: the kubelet has already given
    /// them their grace period), tears the network down, marks the sandbox NotReady.
    /// Idempotent; a sandbox that is already gone is not an error.
    pub async fn stop_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let pod = match self.pod(id) {
            Ok(p) => p,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        self.stop_pod_locked(&pod).await
    }

    /// StopPodSandbox under the pod's operation lock. The state lock is only taken to read
    /// and to write: CNI DEL (up to a minute per plugin) runs without it, so listing and
    /// status answer meanwhile, and already say NotReady.
    async fn stop_pod_locked(self: &Arc<Self>, pod: &Arc<Pod>) -> Result<()> {
        for c in self.containers_of(&pod.meta.id) {
            self.stop_container(&c.meta.id, 0).await?;
        }
        if pod.state().phase == PodPhase::Ready {
            pod.update(|s| s.phase = PodPhase::NotReady);
            self.events
                .emit(&pod.meta.id, pod, ContainerEventKind::Stopped);
        }
        if pod.state().network_attached {
            if let Err(e) = self.cni_del(self.attachment(&pod.meta)).await {
                // NotReady either way; the kubelet retries StopPodSandbox for the network.
                self.save_pod(&pod.record()).await?;
                return Err(e);
            }
            pod.update(|s| {
                s.network_attached = false;
                s.ips.clear();
            });
        }
        self.save_pod(&pod.record()).await
    }

    /// UpdatePodSandboxResources: records the pod-level resources of an in-place resize (the
    /// kubelet applies them to the pod cgroup it owns). Only a Ready sandbox can be resized.
    pub async fn update_pod_resources(
        self: &Arc<Self>,
        id: &str,
        resources: crate::pod::PodResources,
    ) -> Result<()> {
        let pod = self.pod(id)?;
        let _op = pod.op.lock().await;
        // RemovePodSandbox may have finished while this call waited for the lock.
        self.pod(&pod.meta.id)?;
        if pod.state().phase != PodPhase::Ready {
            return Err(RuntimeError::precondition(
                "pod sandbox",
                &pod.meta.id,
                "is not ready",
            ));
        }
        let before = pod.state().resources;
        pod.update(|s| s.resources = Some(resources));
        if let Err(e) = self.save_pod(&pod.record()).await {
            pod.update(|s| s.resources = before);
            return Err(e);
        }
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, removes its containers, its network namespace,
    /// its files and its record, and frees its name. Idempotent.
    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let pod = match self.pod(id) {
            Ok(p) => p,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _op = pod.op.lock().await;
        self.stop_pod_locked(&pod).await?;
        for c in self.containers_of(&pod.meta.id) {
            self.remove_container(&c.meta.id).await?;
        }
        self.remove_pod_files(&pod.meta).await?;
        self.pods.write().expect("pods lock").remove(&pod.meta.id);
        let m = &pod.meta;
        self.release(
            &pod_name_key(&m.spec.name, &m.spec.namespace, &m.spec.uid, m.spec.attempt),
            &m.id,
        );
        self.events.emit(&m.id, &pod, ContainerEventKind::Deleted);
        Ok(())
    }

    /// Removes what a sandbox left on the node once its network is down: the netns and
    /// userns mounts, the pod directory, the record.
    pub(super) async fn remove_pod_files(&self, m: &PodMeta) -> Result<()> {
        if let Some(ns) = m.netns.clone() {
            tokio::task::spawn_blocking(move || crate::network::netns::remove(&ns))
                .await
                .map_err(RuntimeError::task(
                    "remove network namespace",
                    format!("pod sandbox {}", m.id),
                ))??;
        }
        if let Some(ns) = m.userns.clone() {
            tokio::task::spawn_blocking(move || crate::userns::remove(&ns))
                .await
                .map_err(RuntimeError::task(
                    "remove user namespace",
                    format!("pod sandbox {}", m.id),
                ))?
                .map_err(RuntimeError::from)?;
        }
        crate::store::remove(&m.dir)?;
        crate::store::remove(&self.pod_meta_path(&m.id))?;
        Ok(())
    }
}
