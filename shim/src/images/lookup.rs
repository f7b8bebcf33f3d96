//! Looking images up: resolving a reference (full ID, tag, repo digest or unique ID prefix)
//! to an image ID, and finding a verified image by repo or manifest digest.

use std::collections::BTreeMap;

use super::error::{ImageError, Result};
use super::{Image, ImageRef, ImageStore};

impl ImageStore {
    /// The verified image whose repo digests include `name@digest`, or whose manifest is
    /// `digest`.
    pub(crate) fn by_repo_digest(&self, name: &str, digest: &str) -> Option<Image> {
        let want = format!("{name}@{digest}");
        let st = self.inner.lock_state();
        st.images
            .values()
            .find(|i| {
                i.verified
                    && (i.repo_digests.contains(&want) || i.manifest_digest == digest)
                    && i.rootfs.is_dir()
            })
            .cloned()
    }
}

fn is_id_like(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How a reference matched an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Match {
    /// Full ID or unique ID prefix: addresses the image itself.
    Id,
    /// A tag or repo digest: one name of the image.
    Name,
}

/// Resolves `reference` to an image ID in `images`.
pub(super) fn find(images: &BTreeMap<String, Image>, reference: &str) -> Result<String> {
    find_match(images, reference).map(|(id, _)| id)
}

pub(super) fn find_match(
    images: &BTreeMap<String, Image>,
    reference: &str,
) -> Result<(String, Match)> {
    let not_found = || ImageError::NotFound(reference.to_string());
    if reference.is_empty() {
        return Err(not_found());
    }
    // Full ID with or without the algorithm.
    let full = if reference.starts_with("sha256:") {
        reference.to_string()
    } else {
        format!("sha256:{reference}")
    };
    if images.contains_key(&full) {
        return Ok((full, Match::Id));
    }
    // Tag or repo digest.
    if let Ok(r) = ImageRef::parse(reference) {
        let found = match (&r.digest, r.tagged()) {
            (Some(d), _) => {
                let rd = r.with_digest(d);
                images.values().find(|i| i.repo_digests.contains(&rd))
            }
            (None, Some(tag)) => images.values().find(|i| i.repo_tags.contains(&tag)),
            (None, None) => None,
        };
        if let Some(i) = found {
            return Ok((i.id.clone(), Match::Name));
        }
    }
    // Unique ID prefix (docker-style short IDs), at least 4 hex digits.
    let hex = reference.trim_start_matches("sha256:");
    if is_id_like(reference) && hex.len() >= 4 {
        let prefix = format!("sha256:{hex}");
        let matches: Vec<&String> = images.keys().filter(|k| k.starts_with(&prefix)).collect();
        return match matches.as_slice() {
            [] => Err(not_found()),
            [one] => Ok(((*one).clone(), Match::Id)),
            many => Err(ImageError::Ambiguous {
                reference: reference.to_string(),
                candidates: many.iter().map(|s| s.to_string()).collect(),
            }),
        };
    }
    Err(not_found())
}
