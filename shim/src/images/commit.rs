//! The commit step: turning stored, verified blobs into an image. Decides the packaging,
//! parses the config, checks that it pins the layers (the image ID, see the
//! [`images`](super) module docs), unpacks or copies the layers into a temp rootfs, finds the
//! wasm, runs the precompile hook and makes the image visible, or reuses a record already
//! holding the same content.

use std::fs;
use std::io;
use std::path::Path;

use super::error::{ImageError, IoContext, Result};
use super::manifest::{self, Descriptor, Manifest};
use super::rootfs::find_wasm;
use super::{
    Image, ImageConfig, ImageStore, Incoming, LayerInfo, MAX_JSON_BLOB, Names, Packaging, Platform,
    WasmEntry, blobs, detect, reference, remove_path, unpack,
};

impl ImageStore {
    /// How the record already stored under `id`, if any, relates to an image with
    /// `packaging` and `layers` being committed. Errors when the record cannot be trusted to
    /// hold the same content and cannot be replaced either.
    fn classify(&self, id: &str, packaging: Packaging, layers: &[Descriptor]) -> Result<Existing> {
        let st = self.inner.lock_state();
        let Some(img) = st.images.get(id) else {
            return Ok(Existing::Absent);
        };
        let conflict = |reason: String| {
            Err(ImageError::malformed(
                format!("image {id}"),
                format!(
                    "the ID is already held by the image of manifest {} {reason}; remove that \
                     image and retry",
                    img.manifest_digest
                ),
            ))
        };
        if img.packaging != packaging {
            return conflict(format!("packaged as {:?}", img.packaging));
        }
        let same_layers = img.layers.len() == layers.len()
            && img
                .layers
                .iter()
                .zip(layers)
                .all(|(a, b)| a.digest == b.digest);
        if !same_layers && !img.verified {
            return conflict(
                "with other layers, stored before layers were verified against the config"
                    .to_string(),
            );
        }
        Ok(if !img.rootfs.is_dir() {
            Existing::Stale
        } else if same_layers {
            Existing::SameLayers
        } else {
            Existing::SameContent
        })
    }

    /// Points `names` at the existing image `id` (commit lock held), marking it verified: the
    /// caller checked its config against the incoming manifest's layers.
    fn adopt_locked(&self, id: &str, names: &Names) -> Result<Image> {
        let unverified = self
            .inner
            .lock_state()
            .images
            .get(id)
            .filter(|i| !i.verified)
            .cloned();
        if let Some(mut img) = unverified {
            img.verified = true;
            self.write_record(&img)?;
            self.inner.lock_state().images.insert(id.to_string(), img);
        }
        self.add_names_locked(id, names)
    }

    /// Reuses the record under `id` if [`Self::classify`] allows it without (further)
    /// unpacking: `SameLayers` always, `SameContent` once the incoming layers are verified.
    fn try_adopt(
        &self,
        id: &str,
        packaging: Packaging,
        layers: &[Descriptor],
        names: &Names,
        verified_incoming: bool,
    ) -> Result<Option<Image>> {
        let reusable = |e: Existing| {
            e == Existing::SameLayers || (verified_incoming && e == Existing::SameContent)
        };
        if !reusable(self.classify(id, packaging, layers)?) {
            return Ok(None);
        }
        let _commit = self.inner.lock_commit();
        // Re-checked under the lock: a removal may have won the race.
        if reusable(self.classify(id, packaging, layers)?) {
            return self.adopt_locked(id, names).map(Some);
        }
        Ok(None)
    }

    /// Turns stored, verified blobs into an image: checks that the config pins the layers
    /// (see [Image IDs](super#image-ids)), unpacks the rootfs in `tmp/` verifying every
    /// layer, finds the wasm, runs the precompile hook, renames the rootfs into place and
    /// writes the record. Blocking. The caller holds leases on the blobs.
    pub(crate) fn commit_image(&self, inc: Incoming) -> Result<Image> {
        let inner = &self.inner;
        let what = format!("manifest {}", inc.manifest_digest);
        let config_desc = inc.manifest.config(&what)?.clone();
        let config_digest = config_desc.digest.clone();
        // Our own leases: the caller's may be released (cancelled pull) while this runs.
        let mut lease = self.lease();
        for d in std::iter::once(&inc.manifest_digest)
            .chain(std::iter::once(&config_digest))
            .chain(inc.manifest.layers.iter().map(|l| &l.digest))
            .chain(inc.extra_blobs.iter().map(|(d, _)| d))
        {
            lease.add(d);
        }
        let config_bytes = inner.blobs.read_verified(
            &config_digest,
            MAX_JSON_BLOB,
            &format!("config {config_digest}"),
        )?;
        let packaging = packaging_of(&inc.manifest, &config_desc)?;
        let parsed = parse_config(&config_bytes, &config_digest)?;
        let (id, diff_ids) = identity(&inc, &config_digest, packaging, &parsed)?;
        let id_hex = reference::validate_digest(&id)?.to_string();
        let layers = &inc.manifest.layers;
        if let Some(img) = self.try_adopt(&id, packaging, layers, &inc.names, false)? {
            return Ok(img);
        }

        let work = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(&inner.tmp)
            .at(&inner.tmp)?;
        let guest_wasm = match packaging {
            Packaging::WasmArtifact => {
                let layer = &layers[0];
                let src = inner.blobs.path(&layer.digest)?;
                let dest = work.path().join("app.wasm");
                copy_verified(&src, &dest, &layer.digest)?;
                Some("/app.wasm".to_string())
            }
            Packaging::OciImage => {
                let mut unpacker = unpack::Unpacker::new(work.path(), inner.limits);
                for (layer, diff_id) in layers.iter().zip(&diff_ids) {
                    let compression = unpack::tar_layer_compression(&layer.media_type)
                        .ok_or_else(|| unsupported_layer(layer))?;
                    let blob = inner.blobs.path(&layer.digest)?;
                    unpacker.apply_blob(&blob, &layer.digest, compression, diff_id)?;
                }
                None
            }
        };
        // Verified: the same content may already be stored under this ID from other layer
        // blobs; then this unpack is redundant and dropped with `work`.
        if let Some(img) = self.try_adopt(&id, packaging, layers, &inc.names, true)? {
            return Ok(img);
        }
        let ParsedConfig {
            mut config,
            platform,
            ..
        } = parsed;
        let final_rootfs = inner.rootfs.join(&id_hex);
        let wasm_rel = match guest_wasm {
            Some(g) => Some(g),
            None => find_wasm(work.path(), &config),
        };
        let wasm = match &wasm_rel {
            Some(g) => {
                let rel = g.trim_start_matches('/');
                let bytes = fs::read(work.path().join(rel)).at(work.path().join(rel))?;
                let kind = detect::wasm_kind(&bytes).ok_or_else(|| {
                    ImageError::malformed(format!("wasm {g} in image {id}"), "not a wasm binary")
                })?;
                Some(WasmEntry {
                    path: final_rootfs.join(rel),
                    guest_path: g.clone(),
                    kind,
                    world: detect::world_of(kind, &bytes),
                })
            }
            None => {
                tracing::warn!(%id, "image holds no wasm binary; it cannot be run");
                None
            }
        };
        if packaging == Packaging::WasmArtifact && config.entrypoint.is_empty() {
            config.entrypoint = vec!["/app.wasm".to_string()];
        }

        let mut blobs_held = vec![inc.manifest_digest.clone(), config_digest.clone()];
        // Saturating: a local layout may declare sizes near i64::MAX (pulls bound them first).
        let mut size = inc
            .manifest_size
            .saturating_add(config_desc.size.max(0) as u64);
        for l in layers {
            blobs_held.push(l.digest.clone());
            size = size.saturating_add(l.size.max(0) as u64);
        }
        for (d, s) in &inc.extra_blobs {
            blobs_held.push(d.clone());
            size = size.saturating_add(*s);
        }
        blobs_held.sort();
        blobs_held.dedup();

        let img = Image {
            id: id.clone(),
            repo_tags: Vec::new(),
            repo_digests: Vec::new(),
            size,
            packaging,
            manifest_digest: inc.manifest_digest.clone(),
            manifest_media_type: inc
                .manifest
                .media_type
                .clone()
                .unwrap_or_else(|| manifest::MT_OCI_MANIFEST.to_string()),
            config_media_type: config_desc.media_type.clone(),
            layers: layers
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size.max(0) as u64,
                })
                .collect(),
            blobs: blobs_held,
            platform,
            config,
            rootfs: final_rootfs.clone(),
            wasm,
            created_at: chrono::Utc::now().timestamp(),
            verified: true,
        };

        // The unpacked files must be on disk before the record says the image exists (power
        // loss, not just kill -9): one syncfs flushes them all, far cheaper than an fsync per
        // file.
        sync_filesystem(work.path())?;
        let _commit = inner.lock_commit();
        match self.classify(&id, packaging, layers)? {
            // A concurrent commit of the same image won; ours is dropped with `work`.
            Existing::SameLayers | Existing::SameContent => {
                return self.adopt_locked(&id, &inc.names);
            }
            Existing::Absent | Existing::Stale => {}
        }
        if final_rootfs.exists() {
            remove_path(&final_rootfs)?;
        }
        let work_path = work.keep();
        if let Err(e) = fs::rename(&work_path, &final_rootfs) {
            let _ = remove_path(&work_path);
            return Err(ImageError::io(&final_rootfs, e));
        }
        blobs::sync_dir(&inner.rootfs)?;
        let undo = |e: ImageError| {
            let _ = remove_path(&final_rootfs);
            e
        };
        if let (Some(hook), Some(w)) = (&inner.precompile, &img.wasm) {
            hook(&w.path).map_err(|reason| {
                undo(ImageError::malformed(
                    format!("wasm {} of image {id}", w.guest_path),
                    format!("precompilation failed: {reason}"),
                ))
            })?;
        }
        let mut img = img;
        if let Some(stale) = inner.lock_state().images.get(&id) {
            // Re-unpacked because its rootfs vanished: keep the names it had.
            img.repo_tags = stale.repo_tags.clone();
            img.repo_digests = stale.repo_digests.clone();
        }
        self.write_record(&img).map_err(undo)?;
        inner.lock_state().images.insert(id.clone(), img);
        self.add_names_locked(&id, &inc.names)
    }
}

fn unsupported_layer(layer: &Descriptor) -> ImageError {
    ImageError::UnsupportedMediaType {
        media_type: layer.media_type.clone(),
        what: format!("layer {}", layer.digest),
    }
}

/// Decides the packaging from the config media type and checks every layer media type.
pub(crate) fn packaging_of(m: &Manifest, config: &Descriptor) -> Result<Packaging> {
    let wasm_config = matches!(
        config.media_type.as_str(),
        manifest::MT_WASM_CONFIG | manifest::MT_WASM_CONFIG_V1
    );
    if wasm_config {
        match m.layers.as_slice() {
            [l] if matches!(
                l.media_type.as_str(),
                manifest::MT_WASM_LAYER | manifest::MT_WASM_LAYER_V1
            ) =>
            {
                Ok(Packaging::WasmArtifact)
            }
            [l] => Err(unsupported_layer(l)),
            _ => Err(ImageError::malformed(
                format!("wasm artifact config {}", config.digest),
                format!("expected exactly one wasm layer, found {}", m.layers.len()),
            )),
        }
    } else {
        if !matches!(
            config.media_type.as_str(),
            manifest::MT_OCI_CONFIG | manifest::MT_DOCKER_CONFIG
        ) {
            return Err(ImageError::UnsupportedMediaType {
                media_type: config.media_type.clone(),
                what: format!("config {}", config.digest),
            });
        }
        if let Some(l) = m
            .layers
            .iter()
            .find(|l| unpack::tar_layer_compression(&l.media_type).is_none())
        {
            return Err(unsupported_layer(l));
        }
        Ok(Packaging::OciImage)
    }
}

/// An image config as [`ImageStore::commit_image`] uses it.
struct ParsedConfig {
    config: ImageConfig,
    platform: Platform,
    /// `rootfs.diff_ids`, if the config has a `rootfs`.
    diff_ids: Option<Vec<String>>,
    /// The Wasm artifact's `layerDigests`, if present.
    layer_digests: Option<Vec<String>>,
}

fn parse_config(bytes: &[u8], digest: &str) -> Result<ParsedConfig> {
    let file: manifest::ConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::malformed(format!("config {digest}"), e))?;
    let platform = Platform {
        os: file.os.clone(),
        architecture: file.architecture.clone(),
        variant: file.variant.clone(),
    };
    let c = file.config.unwrap_or_default();
    let mut exposed_ports: Vec<String> = c.exposed_ports.unwrap_or_default().into_keys().collect();
    exposed_ports.sort();
    let config = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.unwrap_or_default(),
        user: c.user.unwrap_or_default(),
        labels: c.labels.unwrap_or_default(),
        exposed_ports,
        stop_signal: c.stop_signal.unwrap_or_default(),
    };
    Ok(ParsedConfig {
        config,
        platform,
        diff_ids: file.rootfs.map(|r| r.diff_ids),
        layer_digests: file.layer_digests,
    })
}

/// How the record already stored under an image ID relates to the image being committed
/// (see [`ImageStore::classify`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// No record has this ID.
    Absent,
    /// Unpacked from exactly the incoming layers, same packaging: reuse it as is.
    SameLayers,
    /// Verified, same packaging, other layer blobs: reuse it once the incoming layers are
    /// verified against the same diff IDs.
    SameContent,
    /// Its rootfs is gone: unpack and replace it, keeping its names.
    Stale,
}

/// Checks that the config pins the manifest's layers and returns the image ID and, for an
/// OCI image, the diff ID of each layer (see [Image IDs](super#image-ids)).
fn identity(
    inc: &Incoming,
    config_digest: &str,
    packaging: Packaging,
    parsed: &ParsedConfig,
) -> Result<(String, Vec<String>)> {
    let what = || format!("config {config_digest} of manifest {}", inc.manifest_digest);
    let layers: Vec<&str> = inc
        .manifest
        .layers
        .iter()
        .map(|l| l.digest.as_str())
        .collect();
    match packaging {
        Packaging::OciImage => {
            let Some(diff_ids) = &parsed.diff_ids else {
                return Err(ImageError::malformed(
                    what(),
                    "no rootfs.diff_ids: the layers cannot be verified",
                ));
            };
            if diff_ids.len() != layers.len() {
                return Err(ImageError::malformed(
                    what(),
                    format!(
                        "rootfs.diff_ids lists {} layers but the manifest has {}",
                        diff_ids.len(),
                        layers.len()
                    ),
                ));
            }
            Ok((config_digest.to_string(), diff_ids.clone()))
        }
        Packaging::WasmArtifact => match &parsed.layer_digests {
            Some(listed) if *listed != layers => Err(ImageError::malformed(
                what(),
                format!("layerDigests {listed:?} differ from the manifest's layers {layers:?}"),
            )),
            Some(_) => Ok((config_digest.to_string(), Vec::new())),
            None => Ok((inc.manifest_digest.clone(), Vec::new())),
        },
    }
}

/// Copies a blob into the rootfs, verifying its digest on the way.
fn copy_verified(src: &Path, dest: &Path, digest: &str) -> Result<()> {
    let f = fs::File::open(src).at(src)?;
    let mut r = blobs::HashingReader::new(io::BufReader::new(f));
    let mut out = fs::File::create(dest).at(dest)?;
    io::copy(&mut r, &mut out).at(dest)?;
    let actual = r.digest();
    if actual != digest {
        return Err(ImageError::DigestMismatch {
            what: format!("wasm layer {}", src.display()),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

/// `syncfs(2)` on the filesystem holding `path`.
fn sync_filesystem(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path).at(path)?;
    // SAFETY: `dir` is an open file descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(ImageError::io(path, io::Error::last_os_error()));
    }
    Ok(())
}
