//! Sandbox lifecycle: run (netns + CNI ADD + DNS/hostname files), stop (containers, CNI
//! DEL), remove (containers, netns, files, record).

use std::sync::Arc;

use super::{Pod, Result, Runtime, RuntimeError, Undo, pod_name_key, run_undo, with_cleanup};
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
        let this = self.clone();
        // Run to completion even if the kubelet gives up: the undo list must run.
        tokio::spawn(async move { this.run_pod_inner(req).await })
            .await
            .map_err(|e| RuntimeError::FailedPrecondition(format!("sandbox task: {e}")))?
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
                crate::store::remove(&dir).map_err(|e| e.to_string())
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
            dir,
        };
        let mut state = PodState {
            phase: PodPhase::Ready,
            ips: Vec::new(),
            network_attached: false,
        };

        if !meta.spec.host_network {
            let netns_dir = self.config.netns_dir();
            let name = format!("wasmcri-{}", &id[..16]);
            let path = tokio::task::spawn_blocking(move || {
                crate::network::netns::create(&netns_dir, &name)
            })
            .await
            .map_err(|e| RuntimeError::FailedPrecondition(e.to_string()))??;
            {
                let path = path.clone();
                undo.push(Box::pin(async move {
                    tokio::task::spawn_blocking(move || crate::network::netns::remove(&path))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())
                }));
            }
            meta.netns = Some(path);
            let att = self.attachment(&meta);
            // Registered before ADD: a plugin that fails half-way can leave an IP allocated.
            {
                let this = self.clone();
                let att = att.clone();
                undo.push(Box::pin(async move {
                    this.cni_del(att).await.map_err(|e| e.to_string())
                }));
            }
            let result = self.cni.add(&att).await?;
            state.ips = result.ips.iter().map(|ip| ip.to_string()).collect();
            state.network_attached = true;
        }

        let record = PodRecord {
            meta: meta.clone(),
            state,
        };
        self.save_pod(&record).await?;
        let pod = Arc::new(Pod {
            meta,
            record: tokio::sync::Mutex::new(record),
        });
        self.pods
            .write()
            .expect("pods lock")
            .insert(id.to_owned(), pod);
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
        for c in self.containers_of(&pod.meta.id) {
            self.stop_container(&c.meta.id, 0).await?;
        }
        let mut rec = pod.record.lock().await;
        if rec.state.network_attached {
            self.cni_del(self.attachment(&rec.meta)).await?;
            rec.state.network_attached = false;
            rec.state.ips.clear();
        }
        rec.state.phase = PodPhase::NotReady;
        self.save_pod(&rec).await
    }

    /// RemovePodSandbox: stops it if needed, removes its containers, its network namespace,
    /// its files and its record, and frees its name. Idempotent.
    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let pod = match self.pod(id) {
            Ok(p) => p,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_pod(&pod.meta.id).await?;
        for c in self.containers_of(&pod.meta.id) {
            self.remove_container(&c.meta.id).await?;
        }
        let rec = pod.record.lock().await;
        if let Some(ns) = rec.meta.netns.clone() {
            tokio::task::spawn_blocking(move || crate::network::netns::remove(&ns))
                .await
                .map_err(|e| RuntimeError::FailedPrecondition(e.to_string()))??;
        }
        crate::store::remove(&rec.meta.dir)?;
        crate::store::remove(&self.pod_meta_path(&rec.meta.id))?;
        self.pods.write().expect("pods lock").remove(&rec.meta.id);
        let m = &rec.meta;
        self.release(
            &pod_name_key(&m.spec.name, &m.spec.namespace, &m.spec.uid, m.spec.attempt),
            &m.id,
        );
        Ok(())
    }
}
