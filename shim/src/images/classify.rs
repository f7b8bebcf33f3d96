//! Whether a registry image is Wasm, decided from its manifest without pulling it: what the
//! delegation layer ([`crate::delegate`]) asks before routing a PullImage.
//!
//! Wasm is: the OCI Wasm artifact (config `application/vnd.wasm.config.*` or a wasm layer),
//! an index with an entry for a Wasm platform (`wasi/wasm`, `wasip1`, `wasip2`), or an
//! ordinary image whose config names a Wasm platform. Only the top manifest, at most one
//! platform manifest and one small config blob are read, each bounded in size and time.

use super::ImageStore;
use super::MAX_JSON_BLOB;
use super::error::{ImageError, Result};
use super::manifest::{self, Manifest, PlatformSpec};
use super::reference::ImageRef;
use super::registry::{PullAuth, RegistryConfig};

/// What a registry image holds, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageClass {
    /// A Wasm artifact, a Wasm platform entry in an index, or a Wasm image config.
    Wasm,
    /// Anything else (Linux images, indexes without a Wasm entry).
    Other,
}

/// The class of a single (non-index) manifest from its media types alone, or `None` when its
/// config must be read to know the platform.
pub fn class_of_manifest(m: &Manifest) -> Option<ImageClass> {
    let wasm_config = m.config.as_ref().is_some_and(|c| {
        matches!(
            c.media_type.as_str(),
            manifest::MT_WASM_CONFIG | manifest::MT_WASM_CONFIG_V1
        )
    });
    let wasm_layer = m.layers.iter().any(|l| {
        matches!(
            l.media_type.as_str(),
            manifest::MT_WASM_LAYER | manifest::MT_WASM_LAYER_V1
        )
    });
    if wasm_config || wasm_layer {
        return Some(ImageClass::Wasm);
    }
    match m.config.as_ref().map(|c| c.media_type.as_str()) {
        Some(manifest::MT_OCI_CONFIG | manifest::MT_DOCKER_CONFIG) => None,
        _ => Some(ImageClass::Other),
    }
}

/// The class of an index: Wasm when any entry is for a Wasm platform.
pub fn class_of_index(m: &Manifest) -> ImageClass {
    if m.manifests
        .iter()
        .any(|d| d.platform.as_ref().is_some_and(manifest::is_wasm_platform))
    {
        ImageClass::Wasm
    } else {
        ImageClass::Other
    }
}

/// The class of an image config (`os`/`architecture` at its top level).
pub fn class_of_config(bytes: &[u8]) -> ImageClass {
    match serde_json::from_slice::<PlatformSpec>(bytes) {
        Ok(p) if manifest::is_wasm_platform(&p) => ImageClass::Wasm,
        _ => ImageClass::Other,
    }
}

impl ImageStore {
    /// Classifies `reference` from its registry manifest (see the module docs). Errors are the
    /// pull's own (not found, unauthorized, registry unreachable, malformed manifest).
    pub async fn classify_remote(
        &self,
        reference: &str,
        auth: &PullAuth,
        config: &RegistryConfig,
    ) -> Result<ImageClass> {
        let r = ImageRef::parse(reference)?;
        let fetched = self.fetch_top_manifest(&r, auth, config).await?;
        let what = format!("manifest of {}", r.canonical());
        let m = Manifest::parse(&fetched.bytes, &what)?;
        if m.is_index() {
            return Ok(class_of_index(&m));
        }
        if let Some(class) = class_of_manifest(&m) {
            return Ok(class);
        }
        let desc = m.config(&what)?;
        if desc.size < 0 || desc.size as u64 > MAX_JSON_BLOB {
            return Err(ImageError::TooLarge {
                what: format!("config {} of {}", desc.digest, r.canonical()),
                limit: MAX_JSON_BLOB,
            });
        }
        let mut bytes = Vec::with_capacity(desc.size as usize);
        fetched
            .registry
            .blob(
                &fetched.repository,
                &desc.digest,
                desc.size as u64,
                &mut bytes,
            )
            .await
            .map_err(|e| super::registry::map_pull_err(&r.canonical(), e))?;
        Ok(class_of_config(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config_mt: &str, layer_mts: &[&str]) -> Manifest {
        let json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::MT_OCI_MANIFEST,
            "config": {"mediaType": config_mt, "digest": format!("sha256:{}", "a".repeat(64)), "size": 2},
            "layers": layer_mts.iter().map(|mt| serde_json::json!(
                {"mediaType": mt, "digest": format!("sha256:{}", "b".repeat(64)), "size": 3})).collect::<Vec<_>>(),
        });
        Manifest::parse(json.to_string().as_bytes(), "test").unwrap()
    }

    fn index(platforms: &[(&str, &str)]) -> Manifest {
        let json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::MT_OCI_INDEX,
            "manifests": platforms.iter().enumerate().map(|(i, (os, arch))| serde_json::json!(
                {"mediaType": manifest::MT_OCI_MANIFEST, "digest": format!("sha256:{}", format!("{i:02x}").repeat(32)),
                 "size": 1, "platform": {"os": os, "architecture": arch}})).collect::<Vec<_>>(),
        });
        Manifest::parse(json.to_string().as_bytes(), "test").unwrap()
    }

    #[test]
    fn artifacts_are_wasm_by_media_type() {
        let m = manifest(manifest::MT_WASM_CONFIG, &[manifest::MT_WASM_LAYER]);
        assert_eq!(class_of_manifest(&m), Some(ImageClass::Wasm));
        let m = manifest(manifest::MT_WASM_CONFIG_V1, &[manifest::MT_WASM_LAYER_V1]);
        assert_eq!(class_of_manifest(&m), Some(ImageClass::Wasm));
    }

    #[test]
    fn ordinary_images_need_their_config() {
        let m = manifest(
            manifest::MT_OCI_CONFIG,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        );
        assert_eq!(class_of_manifest(&m), None);
        assert_eq!(
            class_of_config(br#"{"os":"wasi","architecture":"wasm"}"#),
            ImageClass::Wasm
        );
        assert_eq!(
            class_of_config(br#"{"os":"linux","architecture":"amd64"}"#),
            ImageClass::Other
        );
        assert_eq!(class_of_config(b"not json"), ImageClass::Other);
        let m = manifest("application/vnd.example.thing", &[]);
        assert_eq!(class_of_manifest(&m), Some(ImageClass::Other));
    }

    #[test]
    fn index_is_wasm_when_any_entry_is() {
        assert_eq!(
            class_of_index(&index(&[("linux", "amd64"), ("linux", "arm64")])),
            ImageClass::Other
        );
        assert_eq!(
            class_of_index(&index(&[("linux", "amd64"), ("wasi", "wasm")])),
            ImageClass::Wasm
        );
        assert_eq!(
            class_of_index(&index(&[("wasip2", "wasm32")])),
            ImageClass::Wasm
        );
    }
}
