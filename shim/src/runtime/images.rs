//! Image operations that touch containers: removal refuses an image a container still runs
//! from or mounts as an image volume (both preopen the image's rootfs directly), and drops
//! its precompiled artifact.

use std::sync::Arc;

use super::{Result, Runtime, RuntimeError};

impl Runtime {
    /// RemoveImage by ID, tag or digest.
    pub async fn remove_image(self: &Arc<Self>, reference: &str) -> Result<()> {
        let img = self.images.get(reference)?;
        for c in self.containers() {
            if c.meta.image_id == img.id {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "image {reference} is in use by container {}",
                    c.meta.id
                )));
            }
            if let Some(m) = c
                .meta
                .spec
                .mounts
                .iter()
                .find(|m| m.image.as_ref().is_some_and(|v| v.image_id == img.id))
            {
                return Err(RuntimeError::FailedPrecondition(format!(
                    "image {reference} is mounted as an image volume at {} by container {}",
                    m.container_path, c.meta.id
                )));
            }
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
