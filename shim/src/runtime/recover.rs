//! Rebuilding the runtime's view after a (re)start from durable metadata, the runners' exit
//! records and live PIDs. Running containers are re-attached, never restarted.

use std::sync::Arc;

use super::{Container, Pod, Result, Runtime, container_name_key, pod_name_key};
use crate::container::{ContainerPhase, ContainerRecord};
use crate::pod::PodRecord;

impl Runtime {
    pub(super) async fn recover(self: &Arc<Self>) -> Result<()> {
        let pods_dir = self.config.meta_dir().join("pods");
        for path in json_files(&pods_dir) {
            let rec: PodRecord = match crate::store::load(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable pod record");
                    continue;
                }
            };
            let m = &rec.meta;
            let _ = self.reserve(
                "pod sandbox",
                &pod_name_key(&m.spec.name, &m.spec.namespace, &m.spec.uid, m.spec.attempt),
                &m.id,
            );
            let pod = Arc::new(Pod {
                meta: rec.meta.clone(),
                record: tokio::sync::Mutex::new(rec),
            });
            self.pods
                .write()
                .expect("pods lock")
                .insert(pod.meta.id.clone(), pod);
        }
        let ctr_dir = self.config.meta_dir().join("containers");
        let mut recovered = 0usize;
        for path in json_files(&ctr_dir) {
            let rec: ContainerRecord = match crate::store::load(&path) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "skipping unreadable container record");
                    continue;
                }
            };
            let c = Container::new(rec);
            let m = &c.meta;
            if let (Some(cg), Some(h)) = (&self.cgroups, &m.cgroup) {
                cg.adopt(h);
            }
            let _ = self.reserve(
                "container",
                &container_name_key(&m.pod_id, &m.name, m.attempt),
                &m.id,
            );
            self.containers
                .write()
                .expect("containers lock")
                .insert(m.id.clone(), c.clone());
            let st = c.snapshot();
            if st.phase == ContainerPhase::Running {
                match st.pid {
                    Some(pid) if super::process::same_process(pid, st.pid_start) => {
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
        tracing::info!(
            pods = self.pods.read().expect("lock").len(),
            containers = recovered,
            "state recovered"
        );
        Ok(())
    }
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
