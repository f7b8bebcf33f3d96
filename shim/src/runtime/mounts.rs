//! The guest's filesystem as the runner is told to build it: which host directories and
//! files it preopens, where, and with which permissions.
//!
//! # Image volumes
//! A CRI mount with `image` set (Kubernetes `volumes: [{image: {reference: …}}]`) names an
//! image the kubelet pulled just before (the CRI says it calls PullImage and passes the
//! `image_ref` it got back), so it is looked up in the local store only: an absent image is
//! `NOT_FOUND`, as in containerd, never pulled with credentials the runtime does not have.
//! The mount's source is the image's unpacked rootfs, or the entry `image_sub_path` names in
//! it, resolved at creation like a command's `.wasm` ([`crate::images::resolve_in_root`]:
//! symlinks followed chroot-style, so no link leads out of the image). A sub path that is
//! absolute or has a `..` component is refused outright. The source is then preopened
//! read-only like any read-only mount, which the runner's jail makes read-only all the way
//! down. A Wasm artifact has no Linux rootfs: its volume holds the one file the store unpacks
//! it to, `app.wasm`.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::{Container, Result, Runtime, RuntimeError};
use crate::container::MountSpec;
use crate::runner::{FileBind, Preopen};

/// Why an image volume cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum ImageVolumeError {
    /// The image is not in the local store.
    #[error(
        "image volume at {container_path}: image {reference:?} is not present on the node \
         (the kubelet pulls it with PullImage before CreateContainer)"
    )]
    NotPresent {
        /// Where it was to be mounted.
        container_path: String,
        /// The image as given.
        reference: String,
    },
    /// The mount gives both a host path and an image.
    #[error("mount {container_path}: host_path {host_path:?} and image are mutually exclusive")]
    HostPathAndImage {
        /// Where it was to be mounted.
        container_path: String,
        /// The host path given.
        host_path: String,
    },
    /// `image_sub_path` would lead out of the image.
    #[error(
        "image volume at {container_path}: image_sub_path {sub_path:?} must be a relative path \
         without `..` inside the image"
    )]
    SubPathEscapes {
        /// Where it was to be mounted.
        container_path: String,
        /// The sub path as given.
        sub_path: String,
    },
    /// `image_sub_path` names nothing in the image.
    #[error(
        "image volume at {container_path}: image_sub_path {sub_path:?} does not exist in image \
         {image_id} (or is a link that loops or leads out of the image)"
    )]
    SubPathMissing {
        /// Where it was to be mounted.
        container_path: String,
        /// The sub path as given.
        sub_path: String,
        /// The image.
        image_id: String,
    },
}

/// Refuses a sub path that is absolute or climbs with `..` (also NUL bytes, which no path
/// can hold), before anything is looked up.
fn check_sub_path(container_path: &str, sub_path: &str) -> Result<(), ImageVolumeError> {
    let p = Path::new(sub_path);
    let escapes = sub_path.contains('\0')
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(ImageVolumeError::SubPathEscapes {
            container_path: container_path.to_owned(),
            sub_path: sub_path.to_owned(),
        });
    }
    Ok(())
}

impl Runtime {
    /// Resolves the image volumes among `mounts` in place: each gets its image ID and, as its
    /// host path, the rootfs directory or file it mounts (see the module docs). Touches
    /// nothing on disk, so a refusal leaves nothing behind.
    pub(super) fn resolve_image_volumes(&self, mounts: &mut [MountSpec]) -> Result<()> {
        for m in mounts.iter_mut() {
            let Some(vol) = m.image.as_mut() else {
                continue;
            };
            if !m.host_path.is_empty() {
                return Err(ImageVolumeError::HostPathAndImage {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                }
                .into());
            }
            check_sub_path(&m.container_path, &vol.sub_path)?;
            let img = match self.images.get(&vol.reference) {
                Ok(img) => img,
                Err(crate::images::ImageError::NotFound(_)) => {
                    return Err(ImageVolumeError::NotPresent {
                        container_path: m.container_path.clone(),
                        reference: vol.reference.clone(),
                    }
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            let rel = crate::images::resolve_entry_in_root(&img.rootfs, &vol.sub_path).ok_or_else(
                || ImageVolumeError::SubPathMissing {
                    container_path: m.container_path.clone(),
                    sub_path: vol.sub_path.clone(),
                    image_id: img.id.clone(),
                },
            )?;
            vol.image_id = img.id.clone();
            m.host_path = img.rootfs.join(rel).display().to_string();
            m.read_only = true;
        }
        Ok(())
    }

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
        for mount in &m.spec.mounts {
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
            .spec
            .mounts
            .iter()
            .find(|m| m.container_path == "/etc/hosts")
            .map(|m| PathBuf::from(&m.host_path))
            .or_else(|| existing("/etc/hosts".into()));
        (resolv, hosts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        for ok in ["", "data", "data/x.txt", "./data", "a/./b"] {
            check_sub_path("/v", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["/etc", "..", "../..", "data/../../x", "a/..", "a\0b"] {
            assert!(
                matches!(
                    check_sub_path("/v", bad),
                    Err(ImageVolumeError::SubPathEscapes { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
