//! Pinned images: the references a node operator lists (`[images] pinned` in the config)
//! and which stored images they name. Matching follows the store's own lookup rules: a full
//! image ID, a normalised tag (`pause:3.10` → `docker.io/library/pause:3.10`) or a repo digest.

use super::{Image, ImageError, ImageRef, Result};

/// One parsed `pinned` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedRef {
    /// A full image ID, `sha256:<64 hex>`.
    Id(String),
    /// A normalised `registry/repository:tag`.
    Tag(String),
    /// A normalised `registry/repository@sha256:<hex>`.
    Digest(String),
}

impl PinnedRef {
    /// Parses an entry: a full image ID, or a reference with a tag (default `latest`) or a
    /// digest (the digest wins when both are given, as for pulls).
    pub fn parse(s: &str) -> Result<PinnedRef> {
        if let Some(hex) = s.strip_prefix("sha256:")
            && hex.len() == 64
        {
            super::reference::validate_digest(s)?;
            return Ok(PinnedRef::Id(s.to_string()));
        }
        let r = ImageRef::parse(s)?;
        match (&r.digest, r.tagged()) {
            (Some(d), _) => Ok(PinnedRef::Digest(r.with_digest(d))),
            (None, Some(tag)) => Ok(PinnedRef::Tag(tag)),
            (None, None) => Err(ImageError::InvalidReference {
                reference: s.to_string(),
                reason: "names no tag or digest".into(),
            }),
        }
    }

    /// Whether this entry names `image`.
    pub fn names(&self, image: &Image) -> bool {
        match self {
            PinnedRef::Id(id) => image.id == *id,
            PinnedRef::Tag(t) => image.repo_tags.contains(t),
            PinnedRef::Digest(d) => image.repo_digests.contains(d),
        }
    }
}

/// The parsed `pinned` list; entries that do not parse were refused when the configuration
/// was loaded and are skipped here.
#[derive(Debug, Clone, Default)]
pub struct Pinned(Vec<PinnedRef>);

impl Pinned {
    /// Parses the configured entries.
    pub fn new(entries: &[String]) -> Pinned {
        Pinned(
            entries
                .iter()
                .filter_map(|e| PinnedRef::parse(e).ok())
                .collect(),
        )
    }

    /// Whether any entry names `image`.
    pub fn contains(&self, image: &Image) -> bool {
        self.0.iter().any(|p| p.names(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str]) -> Image {
        let mut img: Image = serde_json::from_value(serde_json::json!({
            "id": id, "repo_tags": tags, "repo_digests": digests, "size": 0,
            "packaging": "wasm_artifact", "manifest_digest": "", "manifest_media_type": "",
            "config_media_type": "", "layers": [], "blobs": [],
            "platform": {"os": "wasip1", "architecture": "wasm"},
            "config": {}, "rootfs": "/nonexistent", "wasm": null, "created_at": 0
        }))
        .unwrap();
        img.verified = true;
        img
    }

    #[test]
    fn entries_name_images_by_tag_digest_or_id() {
        let d = format!("sha256:{}", "b".repeat(64));
        let id = format!("sha256:{}", "a".repeat(64));
        let pause = image(
            &id,
            &["registry.k8s.io/pause:3.10"],
            &[&format!("registry.k8s.io/pause@{d}")],
        );
        let other = image(
            &format!("sha256:{}", "c".repeat(64)),
            &["docker.io/library/pause:latest"],
            &[],
        );
        for entry in [
            "registry.k8s.io/pause:3.10",
            &format!("registry.k8s.io/pause@{d}"),
            &id,
        ] {
            let p = Pinned::new(&[entry.to_string()]);
            assert!(p.contains(&pause), "{entry}");
            assert!(!p.contains(&other), "{entry}");
        }
        // A bare name means `latest`, normalised as the store names tags.
        let p = Pinned::new(&["pause".to_string()]);
        assert!(p.contains(&other) && !p.contains(&pause));
        assert!(!Pinned::new(&[]).contains(&pause));
        assert!(PinnedRef::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(PinnedRef::parse("Bad/Name").is_err());
    }
}
