//! Image operations as the image RPCs ask for them, one call each: status and listing with
//! the configuration's pins applied, pulls with the configured registries, usage of the
//! store's filesystem. Removal refuses an image a container still runs from or mounts as an
//! image volume (both preopen the image's rootfs directly), and drops its precompiled
//! artifact.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::views::{FsUsage, ImageView};
use super::{Result, Runtime, RuntimeError};
use crate::container::ImageUse;
use crate::images::classify::ImageClass;
use crate::images::{Image, ImageError, ImageFilter, Pinned, PullAuth};

impl Runtime {
    /// ImageStatus by ID, tag or digest; `None` when no image matches (the kubelet pulls on
    /// an empty answer).
    pub fn image_status(&self, reference: &str) -> Result<Option<ImageView>> {
        match self.images.get(reference) {
            Ok(image) => Ok(Some(ImageView {
                pinned: self.pinned().contains(&image),
                image,
            })),
            Err(ImageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// ListImages, all of them or those matching `reference`.
    pub fn list_images(&self, reference: Option<String>) -> Result<Vec<ImageView>> {
        let images = self.images.list(&ImageFilter { reference })?;
        let pinned = self.pinned();
        Ok(images
            .into_iter()
            .map(|image| ImageView {
                pinned: pinned.contains(&image),
                image,
            })
            .collect())
    }

    /// PullImage with the configured registries (mirrors, credentials, CAs); returns the
    /// image ID.
    pub async fn pull_image(&self, reference: &str, auth: &PullAuth) -> Result<String> {
        Ok(self.pull_image_record(reference, auth).await?.id)
    }

    /// A pull with the configured registries, answering with the whole stored image (the
    /// admin service's `wasmcri image pull`).
    pub async fn pull_image_record(&self, reference: &str, auth: &PullAuth) -> Result<Image> {
        Ok(self
            .images
            .pull(reference, auth, &self.config.registry)
            .await?)
    }

    /// Where an admin import may spool its archive (the store's temp directory, swept at
    /// start-up) and how many bytes it may take (`[images] max_import_bytes`).
    pub fn import_spool(&self) -> (PathBuf, u64) {
        (
            self.images.tmp_dir().to_path_buf(),
            self.config.images.max_import_bytes,
        )
    }

    /// Imports an OCI layout (directory or tar archive) at `path` into the store, tagged
    /// `name` if given.
    pub async fn import_image(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        Ok(self.images.import_layout(path, name).await?)
    }

    /// Records in the image store's lock file the socket this daemon serves, so a
    /// `wasmcri image` command pointed elsewhere is told where to go.
    pub fn announce_socket(&self, socket: &Path) -> Result<()> {
        Ok(self.images.announce(socket)?)
    }

    /// Every image of wasmcri's own store, as stored (no pins, no delegate).
    pub fn stored_images(&self) -> Result<Vec<Image>> {
        Ok(self.images.list(&ImageFilter::default())?)
    }

    /// ImageFsInfo: bytes and inodes the image store uses.
    pub async fn image_fs_usage(&self) -> Result<FsUsage> {
        let (used_bytes, inodes_used) = self.images.fs_usage().await?;
        Ok(FsUsage {
            mountpoint: self.filesystem(),
            used_bytes,
            inodes_used,
        })
    }

    /// Whether an image matching `reference` is stored here.
    pub fn has_image(&self, reference: &str) -> bool {
        self.images.get(reference).is_ok()
    }

    /// Classifies a remote image by its manifest (Wasm or not) with the configured
    /// registries, without pulling it.
    pub async fn classify_image(
        &self,
        reference: &str,
        auth: &PullAuth,
    ) -> crate::images::Result<ImageClass> {
        self.images
            .classify_remote(reference, auth, &self.config.registry)
            .await
    }

    fn pinned(&self) -> Pinned {
        Pinned::new(&self.config.images.pinned)
    }

    /// RemoveImage by ID, tag or digest.
    pub async fn remove_image(self: &Arc<Self>, reference: &str) -> Result<()> {
        let img = self.images.get(reference)?;
        for c in self.containers() {
            let what = match c.meta.image_use(&img.id) {
                None => continue,
                Some(ImageUse::Runs) => format!("is in use by container {}", c.meta.id),
                Some(ImageUse::Mounts(path)) => format!(
                    "is mounted as an image volume at {path} by container {}",
                    c.meta.id
                ),
            };
            return Err(RuntimeError::precondition("image", reference, what));
        }
        // The artifact is keyed by the wasm's bytes: find it before the bytes are gone.
        let artifact = img.wasm.as_ref().and_then(|w| {
            std::fs::read(&w.path).ok().map(|bytes| {
                crate::wasm::artifact_path(&self.engine, &self.config.cache_dir(), &bytes)
            })
        });
        let removed = self.images.remove(reference).await?;
        if removed.deleted {
            if let Some(p) = removed.wasm_path {
                self.precompiled
                    .lock()
                    .expect("precompiled lock")
                    .remove(&p);
            }
            if let Some(a) = artifact {
                let _ = std::fs::remove_file(a);
            }
        }
        Ok(())
    }
}
