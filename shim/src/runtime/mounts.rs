//! The guest's filesystem as the runner is told to build it: which host directories and
//! files it preopens, where, and with which permissions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Container, Result, Runtime, RuntimeError};
use crate::runner::Preopen;

impl Runtime {
    /// The guest's filesystem: the image rootfs at `/`, then the pod's `/etc` files and the
    /// kubelet's mounts. WASI preopens are directories, so file mounts (`/etc/hosts`,
    /// `/dev/termination-log`) are gathered per parent directory into a directory of hard
    /// links (copies across filesystems) that is preopened at that parent.
    pub(super) fn preopens(
        &self,
        c: &Container,
        pod: &crate::pod::PodMeta,
    ) -> Result<Vec<Preopen>> {
        let m = &c.meta;
        let mut out = vec![Preopen {
            host: m.rootfs.clone(),
            guest: "/".into(),
            read_only: true,
        }];
        let mut files: Vec<(String, PathBuf, bool)> = Vec::new();
        for mount in &m.mounts {
            let host = PathBuf::from(&mount.host_path);
            let meta = std::fs::metadata(&host).map_err(RuntimeError::io(format!(
                "mount source {} for {}",
                mount.host_path, mount.container_path
            )))?;
            if meta.is_dir() {
                out.push(Preopen {
                    host,
                    guest: mount.container_path.clone(),
                    read_only: mount.read_only,
                });
            } else {
                files.push((mount.container_path.clone(), host, mount.read_only));
            }
        }
        for name in ["resolv.conf", "hostname"] {
            let guest = format!("/etc/{name}");
            let host = pod.dir.join("etc").join(name);
            if host.exists() && !files.iter().any(|(g, _, _)| *g == guest) {
                files.push((guest, host, true));
            }
        }
        let mut by_dir: HashMap<String, Vec<(String, PathBuf, bool)>> = HashMap::new();
        for (guest, host, ro) in files {
            let p = Path::new(&guest);
            let parent = p
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into());
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            by_dir.entry(parent).or_default().push((name, host, ro));
        }
        let mut dirs: Vec<_> = by_dir.into_iter().collect();
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (guest_dir, entries)) in dirs.into_iter().enumerate() {
            let shim = m.dir.join("files").join(i.to_string());
            std::fs::create_dir_all(&shim)
                .map_err(RuntimeError::io(format!("create {}", shim.display())))?;
            let mut all_ro = true;
            for (name, host, ro) in entries {
                let dst = shim.join(&name);
                let _ = std::fs::remove_file(&dst);
                if std::fs::hard_link(&host, &dst).is_err() {
                    std::fs::copy(&host, &dst).map_err(RuntimeError::io(format!(
                        "copy mount source {} to {}",
                        host.display(),
                        dst.display()
                    )))?;
                }
                all_ro &= ro;
            }
            out.push(Preopen {
                host: shim,
                guest: guest_dir,
                read_only: all_ro,
            });
        }
        Ok(out)
    }
}
