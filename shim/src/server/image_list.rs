//! ListImages.

use std::sync::Arc;

use cri::v1 as pb;

use crate::runtime::{ImageView, Result, Runtime};

/// The CRI view of an image; `pinned` when the configuration lists it (see
/// [`crate::config::ImagesConfig::pinned`]).
pub fn to_pb(view: &ImageView) -> pb::Image {
    let img = &view.image;
    pb::Image {
        id: img.id.clone(),
        repo_tags: img.repo_tags.clone(),
        repo_digests: img.repo_digests.clone(),
        size: img.size,
        uid: image_uid(&img.config.user).map(|value| pb::Int64Value { value }),
        username: match image_uid(&img.config.user) {
            Some(_) => String::new(),
            None => image_user_name(&img.config.user).to_owned(),
        },
        spec: Some(pb::ImageSpec {
            image: img.id.clone(),
            ..Default::default()
        }),
        pinned: view.pinned,
    }
}

/// The user part of an image's `User` (`user[:group]`).
fn image_user_name(user: &str) -> &str {
    user.split_once(':').map_or(user, |(u, _)| u)
}

/// The image's user as a number when it is one: the kubelet checks `runAsNonRoot` against
/// `uid`, and refuses a `username` it cannot verify.
fn image_uid(user: &str) -> Option<i64> {
    image_user_name(user).parse::<u32>().ok().map(i64::from)
}

/// ListImages, optionally filtered by a reference.
pub async fn list(rt: &Arc<Runtime>, r: pb::ListImagesRequest) -> Result<pb::ListImagesResponse> {
    let filter = r
        .filter
        .and_then(|f| f.image)
        .map(|i| i.image)
        .unwrap_or_default();
    let images = rt.list_images((!filter.is_empty()).then_some(filter))?;
    Ok(pb::ListImagesResponse {
        images: images.iter().map(to_pb).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_users_are_uids() {
        assert_eq!(image_uid("1000"), Some(1000));
        assert_eq!(image_uid("1000:1000"), Some(1000));
        assert_eq!(image_uid("0"), Some(0));
        assert_eq!(image_uid("app"), None);
        assert_eq!(image_uid("app:1000"), None);
        assert_eq!(image_uid(""), None);
        assert_eq!(image_uid("-1"), None);
        assert_eq!(image_user_name("app:staff"), "app");
    }
}
