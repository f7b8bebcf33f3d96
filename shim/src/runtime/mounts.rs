//! The guest's filesystem as the runner is told to build it: which host directories and
//! files it preopens, where, and with which permissions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Container, Result, Runtime, RuntimeError};
use crate::runner::{FileBind, Preopen};

impl Runtime {
    /// The guest's filesystem: the image rootfs at `/`, then the pod's `/etc` files and the
    /// kubelet's mounts. WASI preopens are directories, so file mounts (`/etc/hosts`,
    /// `/dev/termination-log`) are gathered per parent directory into a [`Preopen`] with
    /// [`Preopen::files`], which the runner's jail builds.
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
            files: vec![],
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
                    files: vec![],
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
            // Only a mount point: the runner covers it with a tmpfs of its own and binds each
            // file onto a placeholder there, so nothing is linked, copied or created on the
            // host, and a read-only file stays read-only next to a writable one.
            let shim = m.dir.join("files").join(i.to_string());
            std::fs::create_dir_all(&shim)
                .map_err(RuntimeError::io(format!("create {}", shim.display())))?;
            let all_ro = entries.iter().all(|(_, _, ro)| *ro);
            out.push(Preopen {
                host: shim,
                guest: guest_dir,
                read_only: all_ro,
                files: entries
                    .into_iter()
                    .map(|(name, source, read_only)| FileBind {
                        name,
                        source,
                        read_only,
                    })
                    .collect(),
            });
        }
        let jail = Self::jail_dir(c);
        std::fs::create_dir_all(&jail)
            .map_err(RuntimeError::io(format!("create {}", jail.display())))?;
        Ok(out)
    }

    /// The empty directory a runner of `c` mounts its filesystem jail on.
    pub(super) fn jail_dir(c: &Container) -> PathBuf {
        c.meta.dir.join("jail")
    }

    /// The pod's `resolv.conf` and the kubelet's hosts file for `c`, which its runners see at
    /// `/etc/resolv.conf` and `/etc/hosts` for their own name lookups (the guest's). A pod
    /// without DNS config resolves as the node does (the kubelet's `Default` DNS policy).
    pub(super) fn name_files(
        c: &Container,
        pod: &crate::pod::PodMeta,
    ) -> (Option<PathBuf>, Option<PathBuf>) {
        let existing = |p: PathBuf| p.exists().then_some(p);
        let resolv = existing(pod.dir.join("etc").join("resolv.conf"))
            .or_else(|| existing("/etc/resolv.conf".into()));
        let hosts = c
            .meta
            .mounts
            .iter()
            .find(|m| m.container_path == "/etc/hosts")
            .map(|m| PathBuf::from(&m.host_path))
            .or_else(|| existing("/etc/hosts".into()));
        (resolv, hosts)
    }
}
