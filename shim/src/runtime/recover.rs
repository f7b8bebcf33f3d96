//! Rebuilding the runtime's view after a (re)start from durable metadata, the runners' exit
//! records and live PIDs. Running containers are re-attached, never restarted.

use std::sync::Arc;

use super::{Container, Pod, Result, Runtime, container_name_key, pod_name_key};
use crate::container::{ContainerPhase, ContainerRecord};
use crate::pod::{PodMeta, PodPhase, PodRecord};

impl Runtime {
    pub(super) async fn recover(self: &Arc<Self>) -> Result<()> {
        let rebooted = self.check_boot_id()?;
        let pods_dir = self.config.meta_dir().join("pods");
        let mut half_made = Vec::new();
        for mut rec in records::<PodRecord>(&pods_dir, "pod") {
            if rec.state.phase == PodPhase::Creating {
                half_made.push(rec.meta);
                continue;
            }
            if rebooted && rec.state.phase == PodPhase::Ready {
                // Its netns and processes did not survive the reboot. The network stays
                // "attached" so the kubelet's StopPodSandbox still runs CNI DEL, which frees
                // the IP the plugin's IPAM kept on disk.
                rec.state.phase = PodPhase::NotReady;
                self.save_pod(&rec).await?;
            }
            let m = &rec.meta;
            let _ = self.reserve(
                "pod sandbox",
                &pod_name_key(&m.spec.name, &m.spec.namespace, &m.spec.uid, m.spec.attempt),
                &m.id,
            );
            let pod = Pod::new(rec);
            self.pods
                .write()
                .expect("pods lock")
                .insert(pod.meta.id.clone(), pod);
        }
        let ctr_dir = self.config.meta_dir().join("containers");
        let mut recovered = 0usize;
        for rec in records::<ContainerRecord>(&ctr_dir, "container") {
            let c = Container::new(rec);
            let m = &c.meta;
            if let (Some(cg), Some(h)) = (&self.cgroups, &m.cgroup) {
                cg.adopt(h);
            }
            let _ = self.reserve(
                "container",
                &container_name_key(&m.spec.pod_id, &m.spec.name, m.spec.attempt),
                &m.id,
            );
            self.containers
                .write()
                .expect("containers lock")
                .insert(m.id.clone(), c.clone());
            let st = c.snapshot();
            if st.phase() == ContainerPhase::Created {
                // A runner started but not yet recorded (the daemon died inside
                // StartContainer) is in the container's cgroup: end it, so the kubelet's
                // retry starts the only one.
                self.kill_unrecorded_runners(&c);
            }
            if st.phase() == ContainerPhase::Running {
                match st.pid() {
                    Some(pid) if super::process::same_process(pid, st.pid_start()) => {
                        self.watch_pid(c.clone(), pid);
                    }
                    _ => {
                        // Gone while we were down: its exit record (or our inference) says how.
                        let rec = self.infer_exit(&c, None);
                        self.record_exit(&c, &rec);
                    }
                }
            }
            recovered += 1;
        }
        // Runtime directories without a record are leftovers of a create that crashed
        // half-way: remove them.
        for dir in [self.config.containers_dir(), self.config.pods_dir()] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let known = self.containers.read().expect("lock").contains_key(&id)
                        || self.pods.read().expect("lock").contains_key(&id);
                    if !known {
                        tracing::info!(path = %e.path().display(), "removing orphaned runtime dir");
                        let _ = crate::store::remove(&e.path());
                    }
                }
            }
        }
        if !half_made.is_empty() {
            // CNI DEL can take a while per plugin: the daemon serves meanwhile; these pods
            // were never listed.
            let this = self.clone();
            tokio::spawn(async move {
                for m in half_made {
                    this.sweep_half_made_pod(&m).await;
                }
            });
        }
        tracing::info!(
            rebooted,
            pods = self.pods.read().expect("lock").len(),
            containers = recovered,
            "state recovered"
        );
        Ok(())
    }
}

impl Runtime {
    /// Compares the kernel's boot ID with the one recorded by the last daemon run and records
    /// the current one: `true` if the node rebooted since (every runner and netns is gone).
    fn check_boot_id(&self) -> Result<bool> {
        let now = std::fs::read_to_string(BOOT_ID)
            .map_err(super::RuntimeError::io(format!("read {BOOT_ID}")))?;
        let path = self.config.meta_dir().join("boot_id");
        let before = std::fs::read_to_string(&path).ok();
        if before.as_deref() != Some(now.as_str()) {
            crate::store::write_atomic(&path, now.as_bytes())?;
        }
        Ok(before.is_some_and(|b| b != now))
    }

    /// Tears down a sandbox whose RunPodSandbox never finished: CNI DEL (harmless if ADD never
    /// ran, as the CNI spec requires of plugins), then the netns, files and record.
    async fn sweep_half_made_pod(self: &Arc<Self>, m: &PodMeta) {
        tracing::info!(pod = %m.id, "removing a sandbox whose creation was interrupted");
        if m.netns.is_some()
            && let Err(e) = self.cni.del(&self.attachment(m)).await
        {
            tracing::warn!(pod = %m.id, error = %e, "CNI DEL of an interrupted sandbox failed");
        }
        if let Err(e) = self.remove_pod_files(m).await {
            tracing::warn!(pod = %m.id, error = %e, "removing an interrupted sandbox failed");
        }
    }

    /// Kills (SIGKILL, by PID) every process in `c`'s cgroup: only runners this daemon
    /// started are ever placed there.
    fn kill_unrecorded_runners(&self, c: &Container) {
        let (Some(cg), Some(h)) = (&self.cgroups, &c.meta.cgroup) else {
            return;
        };
        for pid in cg.pids(&h.path).unwrap_or_default() {
            tracing::warn!(container = %c.meta.id, pid, "killing a runner started before a crash");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The kernel's ID of the current boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The records in `dir`'s JSON files, in file name order. An unreadable record is logged
/// (naming `kind`) and skipped: one corrupt file must not keep the daemon from serving the
/// rest.
fn records<T: serde::de::DeserializeOwned>(dir: &std::path::Path, kind: &str) -> Vec<T> {
    json_files(dir)
        .into_iter()
        .filter_map(|path| match crate::store::load(&path) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "skipping unreadable {kind} record");
                None
            }
        })
        .collect()
}

fn json_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
