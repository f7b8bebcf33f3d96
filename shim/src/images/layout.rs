//! Import of an OCI image layout (a directory or a tar of one: `oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`), as written by `skopeo copy ... oci:`, `docker save` (25+),
//! `ctr export`, or wasm tooling.
//!
//! Names come from `io.containerd.image.name`, else from `org.opencontainers.image.ref.name`
//! when it is a full reference (a bare tag like `latest` names nothing without a repository),
//! or from the explicit name override, which applies to the one image selected by platform.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{ImageError, IoContext, Result};
use super::manifest::{self, Descriptor, Manifest};
use super::reference::{ImageRef, normalize_tag, validate_digest};
use super::{Image, ImageStore, Incoming, Lease, MAX_JSON_BLOB, Names, blocking};

/// How deep nested indexes are followed.
const MAX_INDEX_DEPTH: usize = 4;

impl ImageStore {
    /// Imports every named image of the layout at `path` (directory or tar, optionally
    /// gzip-compressed). With `name`, only the image selected by platform is imported, under
    /// that name. Returns the imported images.
    pub async fn import_layout(
        &self,
        path: impl Into<PathBuf>,
        name: Option<&str>,
    ) -> Result<Vec<Image>> {
        let this = self.clone();
        let path = path.into();
        let name = name.map(str::to_string);
        blocking(move || this.import_layout_blocking(&path, name.as_deref())).await
    }

    fn import_layout_blocking(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let override_tag = name.map(normalize_tag).transpose()?;
        let meta = fs::metadata(path).at(path)?;
        let _extracted;
        let dir: PathBuf = if meta.is_dir() {
            path.to_path_buf()
        } else {
            let tmp = tempfile::Builder::new()
                .prefix("layout-")
                .tempdir_in(self.tmp_dir())
                .at(self.tmp_dir())?;
            extract_tar(path, tmp.path(), self.limits())?;
            let d = tmp.path().to_path_buf();
            _extracted = tmp;
            d
        };
        let layout_file = dir.join("oci-layout");
        let layout: serde_json::Value =
            serde_json::from_slice(&fs::read(&layout_file).at(&layout_file)?)
                .map_err(|e| ImageError::malformed("oci-layout", e))?;
        if layout.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(ImageError::malformed(
                "oci-layout",
                "imageLayoutVersion is not 1.0.0",
            ));
        }
        let index_file = dir.join("index.json");
        let index = Manifest::parse(&fs::read(&index_file).at(&index_file)?, "index.json")?;
        let source = path.display().to_string();

        let mut selected: Vec<(Descriptor, Vec<String>)> = Vec::new();
        if let Some(tag) = override_tag {
            let d = match index.manifests.as_slice() {
                [one] => one.clone(),
                many => manifest::select_platform(many, &source)?.clone(),
            };
            selected.push((d, vec![tag]));
        } else {
            let named: Vec<(Descriptor, String)> = index
                .manifests
                .iter()
                .filter_map(|d| layout_name(d).map(|n| (d.clone(), n)))
                .collect();
            if named.is_empty() {
                let d = match index.manifests.as_slice() {
                    [one] => one.clone(),
                    many => manifest::select_platform(many, &source)?.clone(),
                };
                selected.push((d, Vec::new()));
            } else {
                for (d, n) in named {
                    let tag = normalize_tag(&n)?;
                    match selected.iter_mut().find(|(s, _)| s.digest == d.digest) {
                        Some((_, tags)) => tags.push(tag),
                        None => selected.push((d, vec![tag])),
                    }
                }
            }
        }

        let mut out = Vec::new();
        for (top, tags) in selected {
            let mut lease = self.lease();
            let inc = self.ingest_from_layout(&dir, &top, &tags, &source, &mut lease)?;
            out.push(self.commit_image(inc)?);
        }
        Ok(out)
    }

    /// Copies (verified) the blobs of `top` from the layout into the store.
    fn ingest_from_layout(
        &self,
        dir: &Path,
        top: &Descriptor,
        tags: &[String],
        source: &str,
        lease: &mut Lease,
    ) -> Result<Incoming> {
        let mut desc = top.clone();
        let mut extra_blobs = Vec::new();
        let mut depth = 0;
        let (manifest_digest, manifest, manifest_size) = loop {
            let bytes = self.copy_json_blob(dir, &desc, lease)?;
            let m = Manifest::parse(&bytes, &format!("manifest {}", desc.digest))?;
            if m.is_index() {
                depth += 1;
                if depth > MAX_INDEX_DEPTH {
                    return Err(ImageError::malformed(
                        format!("layout {source}"),
                        "image indexes nested too deeply",
                    ));
                }
                extra_blobs.push((desc.digest.clone(), bytes.len() as u64));
                desc = manifest::select_platform(&m.manifests, source)?.clone();
                continue;
            }
            break (desc.digest.clone(), m, bytes.len() as u64);
        };
        let what = format!("manifest {manifest_digest}");
        let config = manifest.config(&what)?.clone();
        super::packaging_of(&manifest, &config)?;
        self.copy_json_blob(dir, &config, lease)?;
        for layer in &manifest.layers {
            self.copy_blob(dir, layer, lease)?;
        }
        let repo_digests = tags
            .iter()
            .filter_map(|t| ImageRef::parse(t).ok())
            .map(|r| r.with_digest(&top.digest))
            .collect();
        Ok(Incoming {
            manifest_digest,
            manifest,
            manifest_size,
            extra_blobs,
            names: Names {
                tags: tags.to_vec(),
                repo_digests,
            },
        })
    }

    fn copy_blob(&self, dir: &Path, desc: &Descriptor, lease: &mut Lease) -> Result<PathBuf> {
        let hex = validate_digest(&desc.digest)?;
        lease.add(&desc.digest);
        let store = self.blob_store();
        if store.contains(&desc.digest) {
            return store.path(&desc.digest);
        }
        let src = dir.join("blobs").join("sha256").join(hex);
        let mut f = fs::File::open(&src).at(&src)?;
        let limit = if desc.size > 0 {
            desc.size as u64
        } else {
            self.limits().max_bytes
        };
        store.write_reader(
            &desc.digest,
            &mut f,
            limit,
            &format!("blob {}", desc.digest),
        )
    }

    fn copy_json_blob(&self, dir: &Path, desc: &Descriptor, lease: &mut Lease) -> Result<Vec<u8>> {
        if desc.size as u64 > MAX_JSON_BLOB {
            return Err(ImageError::TooLarge {
                what: format!("{} {}", desc.media_type, desc.digest),
                limit: MAX_JSON_BLOB,
            });
        }
        self.copy_blob(dir, desc, lease)?;
        self.blob_store().read_verified(
            &desc.digest,
            MAX_JSON_BLOB,
            &format!("blob {}", desc.digest),
        )
    }
}

/// The full image name an index.json entry carries, if any.
fn layout_name(d: &Descriptor) -> Option<String> {
    if let Some(n) = d.annotations.get(manifest::ANNOTATION_CONTAINERD_NAME) {
        return Some(n.clone());
    }
    d.annotations
        .get(manifest::ANNOTATION_REF_NAME)
        .filter(|n| n.contains('/') || n.contains(':'))
        .cloned()
}

/// Extracts a (possibly gzip-compressed) layout tar with the safe unpacker.
fn extract_tar(tar: &Path, dest: &Path, limits: super::UnpackLimits) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let f = fs::File::open(tar).at(tar)?;
    let mut r = BufReader::new(f);
    let gz = r.fill_buf().at(tar)?.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else {
        Box::new(r)
    };
    let mut u = super::unpack::Unpacker::new(dest, limits);
    u.apply_tar(&mut reader, &tar.display().to_string())
}
