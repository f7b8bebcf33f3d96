//! The image store: content-addressed blobs, durable image records, unpacked root
//! filesystems, OCI layout import and registry pull/push. Knows nothing of CRI.
//!
//! # On disk (`root`, e.g. `/var/lib/wasmcri/images`)
//! ```text
//! blobs/sha256/<hex>     manifests, configs and layers, verified, stored once per digest
//! records/<id-hex>.json  one image record per image ID (see below), atomic writes
//! rootfs/<id-hex>/       the unpacked root filesystem holding the .wasm
//! tmp/                   temp files and unpack dirs; emptied on open
//! ```
//! # Image IDs
//! An image ID must name one content, or a name could be made to point at someone else's
//! layers. The ID is the config digest only when the config pins the layers: for an OCI image
//! the config's `rootfs.diff_ids` must count exactly the manifest's layers and every layer is
//! verified against its diff ID while it is unpacked; for a Wasm artifact the config's
//! `layerDigests` must equal the manifest's layer digests. A Wasm artifact whose config does
//! not list its layers (the CNCF spec added `layerDigests` for exactly this reason; older
//! tools omit it) gets the manifest digest as its ID instead, so two artifacts sharing a
//! config never alias. An existing record is reused without unpacking only when it was
//! unpacked from exactly the incoming manifest's layers with the same packaging; an OCI image
//! whose layer blobs differ (e.g. recompressed) is unpacked and verified first and only then
//! named onto the existing ID (same config, verified diff IDs: same content). Records written
//! before these checks carry `verified: false` and are never trusted by ID or digest alone.
//!
//! # Crash safety
//! Every file is written to `tmp/`, fsynced and renamed into place. An image becomes visible
//! only when its record is renamed into `records/`, after its blobs and rootfs are in place;
//! removal deletes the record first. [`ImageStore::open`] then sweeps what a crash can leave:
//! temp files, rootfs dirs without a record, and blobs no record references.
//!
//! # Packagings
//! (a) an ordinary OCI/Docker image whose tar layers unpack to a rootfs holding the `.wasm`
//! (see [`unpack`] for the safety rules), and (b) the OCI Wasm artifact (config
//! [`manifest::MT_WASM_CONFIG`], one [`manifest::MT_WASM_LAYER`] layer), placed in the rootfs
//! as `/app.wasm`.
//!
//! # Concurrency
//! [`ImageStore`] is a cheap `Clone` over an `Arc`. Lookups read an in-memory map under a
//! short std lock (never held across `.await`); filesystem work runs in `spawn_blocking`.
//! Commits and removals are serialised by a second lock so a removal cannot delete a rootfs
//! being committed; blobs of in-flight pulls are leased so removal's garbage collection skips
//! them. Concurrent pulls of one reference are coalesced (see [`registry`]).

pub mod blobs;
pub mod classify;
pub mod detect;
pub mod distribution;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod pinned;
pub mod reference;
pub mod registry;
pub mod unpack;

#[cfg(test)]
mod registry_hostile_tests;
#[cfg(test)]
mod registry_tests;
#[cfg(test)]
mod store_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use blobs::BlobStore;
pub use detect::WasmKind;
use error::IoContext;
pub use error::{ImageError, Result};
use manifest::{Descriptor, Manifest};
pub use pinned::{Pinned, PinnedRef};
pub use reference::{ImageRef, normalize_tag};
pub use registry::{PullAuth, PushResult, RegistryConfig};
pub use unpack::UnpackLimits;

/// Called with the host path of an image's `.wasm` once its rootfs is in place, before the
/// image becomes visible (e.g. to precompile it). An error fails the import/pull.
pub type PrecompileHook = Arc<dyn Fn(&Path) -> Result<(), String> + Send + Sync>;

/// Largest manifest, index or config accepted (they are JSON; real ones are a few KiB).
const MAX_JSON_BLOB: u64 = 4 << 20;

/// How an image was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Packaging {
    /// An OCI/Docker image with tar layers.
    OciImage,
    /// The OCI Wasm artifact: one `application/wasm` layer.
    WasmArtifact,
}

/// The image config fields a container uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    /// `"8080/tcp"` style, sorted.
    pub exposed_ports: Vec<String>,
    pub stop_signal: String,
}

/// The platform an image was built for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// The wasm binary an image runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmEntry {
    /// Host path of the `.wasm` file inside the image's rootfs.
    pub path: PathBuf,
    /// The same file as the guest sees it (`/app.wasm`).
    pub guest_path: String,
    pub kind: WasmKind,
    /// The world it targets (see [`detect::world_of`]).
    pub world: detect::World,
}

/// A layer as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// A stored image (the durable record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Image ID, `sha256:<hex>`: the config digest, or the manifest digest of a Wasm artifact
    /// whose config does not list its layers (see the module docs).
    pub id: String,
    /// Normalised `registry/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:<manifest or index digest>`.
    pub repo_digests: Vec<String>,
    /// Sum of the sizes of the blobs the image references.
    pub size: u64,
    pub packaging: Packaging,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub config_media_type: String,
    pub layers: Vec<LayerInfo>,
    /// Every blob digest the image holds (index, manifest, config, layers).
    pub blobs: Vec<String>,
    pub platform: Platform,
    pub config: ImageConfig,
    /// The unpacked rootfs directory.
    pub rootfs: PathBuf,
    /// The wasm to run; `None` if the image holds none (it can be stored but not run).
    pub wasm: Option<WasmEntry>,
    /// Seconds since the Unix epoch when first stored.
    pub created_at: i64,
    /// The layers were checked against the config when this record was written (see the
    /// module docs), so the ID alone names this content. Records from before that check read
    /// as `false`: they are reused only for exactly their own layers.
    #[serde(default)]
    pub verified: bool,
}

/// What [`ImageStore::remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: String,
    /// True if the image itself was deleted (not just untagged).
    pub deleted: bool,
    /// The wasm path that no longer exists, so a precompiled artifact can be dropped.
    pub wasm_path: Option<PathBuf>,
    /// Blobs deleted because no other image references them.
    pub freed_blobs: Vec<String>,
}

/// A filter for [`ImageStore::list`].
#[derive(Debug, Clone, Default)]
pub struct ImageFilter {
    /// Only images matching this reference, ID or ID prefix.
    pub reference: Option<String>,
}

/// The image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    root: PathBuf,
    blobs: BlobStore,
    records: PathBuf,
    rootfs: PathBuf,
    tmp: PathBuf,
    limits: UnpackLimits,
    precompile: Option<PrecompileHook>,
    state: Mutex<State>,
    /// Serialises commits and removals (never taken while `state` is held).
    commit: Mutex<()>,
    pub(crate) inflight: registry::Inflight,
    /// The shared flock held for the store's lifetime (see [`ImageStore::open`]).
    _lock: fs::File,
}

fn flock(f: &fs::File, op: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[derive(Default)]
struct State {
    images: BTreeMap<String, Image>,
    /// Blob digests in use by in-flight imports/pulls: GC must not delete them.
    leases: HashMap<String, usize>,
}

/// Names to attach to an image being committed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    /// Normalised tags.
    pub tags: Vec<String>,
    /// Full repo digests (`name@sha256:...`).
    pub repo_digests: Vec<String>,
}

/// Everything needed to turn stored blobs into an image.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub manifest_digest: String,
    pub manifest: Manifest,
    pub manifest_size: u64,
    /// Blobs held besides manifest/config/layers (the index), with sizes.
    pub extra_blobs: Vec<(String, u64)>,
    pub names: Names,
}

/// Releases blob leases on drop.
pub(crate) struct Lease {
    inner: Arc<Inner>,
    digests: Vec<String>,
}

impl Lease {
    pub(crate) fn add(&mut self, digest: &str) {
        let mut st = self.inner.lock_state();
        *st.leases.entry(digest.to_string()).or_default() += 1;
        self.digests.push(digest.to_string());
    }
}

impl Drop for Lease {
    /// Releases the leases and deletes blobs that ended up referenced by nothing: what a
    /// failed or cancelled import/pull stored is not left behind.
    fn drop(&mut self) {
        let mut st = self.inner.lock_state();
        let mut released = Vec::new();
        for d in self.digests.drain(..) {
            if let Some(n) = st.leases.get_mut(&d) {
                *n -= 1;
                if *n == 0 {
                    st.leases.remove(&d);
                    released.push(d);
                }
            }
        }
        released.retain(|d| !st.images.values().any(|i| i.blobs.contains(d)));
        for d in released {
            if let Err(e) = self.inner.blobs.remove(&d) {
                tracing::warn!(digest = %d, error = %e, "cannot remove unreferenced blob");
            }
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts
        // and removes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` with default [`UnpackLimits`].
    /// Blocking: call at startup or from `spawn_blocking`.
    pub fn open(root: impl Into<PathBuf>, precompile: Option<PrecompileHook>) -> Result<Self> {
        Self::open_with_limits(root, precompile, UnpackLimits::default())
    }

    /// Opens the store with explicit unpack limits.
    pub fn open_with_limits(
        root: impl Into<PathBuf>,
        precompile: Option<PrecompileHook>,
        limits: UnpackLimits,
    ) -> Result<Self> {
        let root = root.into();
        let blob_dir = root.join("blobs").join("sha256");
        let records = root.join("records");
        let rootfs = root.join("rootfs");
        let tmp = root.join("tmp");
        for d in [&blob_dir, &records, &rootfs, &tmp] {
            fs::create_dir_all(d).at(d)?;
        }
        // The daemon and `wasmcri image` commands may open the store at the same time. Every
        // opener holds a shared flock for its lifetime; the crash-recovery sweeps below run
        // only when this opener could take it exclusively first, i.e. nobody else is using
        // the store and anything half-done really belongs to a crashed operation.
        let lock_path = root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        let exclusive = flock(&lock, libc::LOCK_EX | libc::LOCK_NB).is_ok();
        if exclusive {
            // Anything in tmp/ belongs to an operation a crash interrupted.
            for entry in fs::read_dir(&tmp).at(&tmp)? {
                let p = entry.at(&tmp)?.path();
                remove_path(&p)?;
            }
        }
        let mut images = BTreeMap::new();
        let mut unreadable = false;
        for entry in fs::read_dir(&records).at(&records)? {
            let p = entry.at(&records)?.path();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Image>(&b).map_err(|e| e.to_string()))
            {
                Ok(mut img) => {
                    // Paths are re-derived from the root, so a moved store still works.
                    let Ok(hex) = reference::validate_digest(&img.id) else {
                        unreadable = true;
                        tracing::warn!(path = %p.display(), "ignoring image record with a bad ID");
                        continue;
                    };
                    img.rootfs = rootfs.join(hex);
                    if let Some(w) = &mut img.wasm {
                        w.path = img.rootfs.join(w.guest_path.trim_start_matches('/'));
                    }
                    images.insert(img.id.clone(), img);
                }
                Err(e) => {
                    unreadable = true;
                    tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable image record");
                }
            }
        }
        // Rootfs dirs without a record: a crash between unpack and record write, or during
        // removal.
        let sweep_rootfs = if exclusive {
            fs::read_dir(&rootfs).at(&rootfs)?.collect()
        } else {
            Vec::new()
        };
        for entry in sweep_rootfs {
            let entry = entry.at(&rootfs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !records.join(format!("{name}.json")).exists() {
                tracing::info!(rootfs = %entry.path().display(), "removing orphaned rootfs");
                remove_path(&entry.path())?;
            }
        }
        let blobs = BlobStore::new(blob_dir, tmp.clone());
        if !unreadable && exclusive {
            let referenced: BTreeSet<&String> = images
                .values()
                .flat_map(|i: &Image| i.blobs.iter())
                .collect();
            for d in blobs.list()? {
                if !referenced.contains(&d) {
                    tracing::info!(digest = %d, "removing unreferenced blob");
                    blobs.remove(&d)?;
                }
            }
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root,
                blobs,
                records,
                rootfs,
                tmp,
                limits,
                precompile,
                state: Mutex::new(State {
                    images,
                    leases: HashMap::new(),
                }),
                commit: Mutex::new(()),
                inflight: Default::default(),
                _lock: {
                    flock(&lock, libc::LOCK_SH).at(&lock_path)?;
                    lock
                },
            }),
        })
    }

    /// Picks up records another process (`wasmcri image import/pull/rm`) wrote or removed
    /// since this store was opened.
    fn refresh(&self) {
        let inner = &self.inner;
        let Ok(rd) = fs::read_dir(&inner.records) else {
            return;
        };
        let on_disk: BTreeMap<String, PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
            .filter_map(|p| {
                let stem = p.file_stem()?.to_string_lossy().into_owned();
                Some((format!("sha256:{stem}"), p))
            })
            .collect();
        let mut st = inner.lock_state();
        st.images.retain(|id, _| on_disk.contains_key(id));
        for (id, p) in on_disk {
            if st.images.contains_key(&id) {
                continue;
            }
            let Some(mut img) = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Image>(&b).ok())
            else {
                continue;
            };
            let Ok(hex) = reference::validate_digest(&img.id) else {
                continue;
            };
            // As in `open`: paths are re-derived from this store's root.
            img.rootfs = inner.rootfs.join(hex);
            if let Some(w) = &mut img.wasm {
                w.path = img.rootfs.join(w.guest_path.trim_start_matches('/'));
            }
            st.images.insert(img.id.clone(), img);
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// All images matching `filter`, ordered by ID.
    pub fn list(&self, filter: &ImageFilter) -> Result<Vec<Image>> {
        self.refresh();
        match &filter.reference {
            None => Ok(self.inner.lock_state().images.values().cloned().collect()),
            Some(r) => match self.get(r) {
                Ok(img) => Ok(vec![img]),
                Err(ImageError::NotFound(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// Looks an image up by full ID (`sha256:<hex>` or `<hex>`), tag (`hello` matches
    /// `docker.io/library/hello:latest`), repo digest (`name@sha256:...`) or unique ID prefix.
    pub fn get(&self, reference: &str) -> Result<Image> {
        {
            let st = self.inner.lock_state();
            if let Ok(id) = find(&st.images, reference) {
                return Ok(st.images[&id].clone());
            }
        }
        self.refresh();
        let st = self.inner.lock_state();
        find(&st.images, reference).map(|id| st.images[&id].clone())
    }

    /// Removes `reference`. A tag or repo digest is untagged; the image itself is deleted when
    /// it is addressed by ID or its last tag goes. Deleting frees its rootfs, its record and
    /// every blob no other image (or in-flight pull) references.
    pub async fn remove(&self, reference: &str) -> Result<Removed> {
        let this = self.clone();
        let reference = reference.to_string();
        blocking(move || this.remove_blocking(&reference)).await
    }

    fn remove_blocking(&self, reference: &str) -> Result<Removed> {
        let inner = &self.inner;
        let _commit = inner.lock_commit();
        let (img, by_id) = {
            let st = inner.lock_state();
            let (id, how) = find_match(&st.images, reference)?;
            (st.images[&id].clone(), how == Match::Id)
        };
        let mut updated = img.clone();
        if !by_id {
            if let Ok(tag) = normalize_tag(reference)
                && !reference.contains('@')
            {
                updated.repo_tags.retain(|t| *t != tag);
            }
            if let Ok(r) = ImageRef::parse(reference)
                && let Some(d) = &r.digest
            {
                let rd = r.with_digest(d);
                updated.repo_digests.retain(|t| *t != rd);
            }
        }
        if !by_id && !updated.repo_tags.is_empty() {
            self.write_record(&updated)?;
            inner
                .lock_state()
                .images
                .insert(updated.id.clone(), updated);
            return Ok(Removed {
                id: img.id,
                deleted: false,
                wasm_path: None,
                freed_blobs: Vec::new(),
            });
        }
        // Delete: record first (the image is gone once it is), then rootfs and blobs.
        let record = self.record_path(&img.id)?;
        match fs::remove_file(&record) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(&record, e)),
        }
        blobs::sync_dir(&inner.records)?;
        let mut errors = Vec::new();
        let freed: Vec<String> = {
            // Blobs are deleted under the state lock: a pull leases a blob under the same lock
            // before checking it is present, so it cannot see a blob that is about to vanish.
            let mut st = inner.lock_state();
            st.images.remove(&img.id);
            let referenced: BTreeSet<&String> = st
                .images
                .values()
                .flat_map(|i| i.blobs.iter())
                .chain(st.leases.keys())
                .collect();
            let freed: Vec<String> = img
                .blobs
                .iter()
                .filter(|d| !referenced.contains(d))
                .cloned()
                .collect();
            for d in &freed {
                if let Err(e) = inner.blobs.remove(d) {
                    errors.push(e);
                }
            }
            freed
        };
        if let Err(e) = remove_path(&img.rootfs) {
            errors.push(e);
        }
        for e in errors {
            // The image is gone; leftovers are swept at the next open.
            tracing::warn!(error = %e, id = %img.id, "incomplete cleanup of removed image");
        }
        Ok(Removed {
            id: img.id,
            deleted: true,
            wasm_path: img.wasm.map(|w| w.path),
            freed_blobs: freed,
        })
    }

    /// Disk usage of the store: (bytes in allocated blocks, inodes), by walking it.
    pub async fn fs_usage(&self) -> Result<(u64, u64)> {
        let root = self.inner.root.clone();
        blocking(move || {
            let mut bytes = 0u64;
            let mut inodes = 0u64;
            let mut seen = std::collections::HashSet::new();
            let mut stack = vec![root];
            while let Some(dir) = stack.pop() {
                let rd = match fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ImageError::io(&dir, e)),
                };
                for entry in rd {
                    let Ok(entry) = entry else { continue };
                    let Ok(m) = entry.metadata() else { continue };
                    use std::os::unix::fs::MetadataExt;
                    // Hard links share an inode: count it once.
                    if m.nlink() > 1 && !seen.insert((m.dev(), m.ino())) {
                        continue;
                    }
                    inodes += 1;
                    bytes += m.blocks() * 512;
                    if m.is_dir() {
                        stack.push(entry.path());
                    }
                }
            }
            Ok((bytes, inodes))
        })
        .await
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub(crate) fn blob_store(&self) -> &BlobStore {
        &self.inner.blobs
    }

    pub(crate) fn lease(&self) -> Lease {
        Lease {
            inner: self.inner.clone(),
            digests: Vec::new(),
        }
    }

    fn record_path(&self, id: &str) -> Result<PathBuf> {
        let hex = reference::validate_digest(id)?;
        Ok(self.inner.records.join(format!("{hex}.json")))
    }

    fn write_record(&self, img: &Image) -> Result<()> {
        let path = self.record_path(&img.id)?;
        let data = serde_json::to_vec_pretty(img)
            .map_err(|e| ImageError::Internal(format!("serialising record: {e}")))?;
        crate::store::write_atomic_via(&self.inner.tmp, &path, &data)
            .map_err(|e| ImageError::io(&path, e.into()))
    }

    /// Adds names to an existing image, moving tags and repo digests away from any other
    /// image (a name points at one content only).
    pub(crate) fn add_names(&self, id: &str, names: &Names) -> Result<Image> {
        let _commit = self.inner.lock_commit();
        self.add_names_locked(id, names)
    }

    /// [`Self::add_names`] with the commit lock already held.
    fn add_names_locked(&self, id: &str, names: &Names) -> Result<Image> {
        let (mut img, others) = {
            let st = self.inner.lock_state();
            let img = st
                .images
                .get(id)
                .cloned()
                .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
            let others: Vec<Image> = st
                .images
                .values()
                .filter(|o| {
                    o.id != id
                        && (o.repo_tags.iter().any(|t| names.tags.contains(t))
                            || o.repo_digests
                                .iter()
                                .any(|d| names.repo_digests.contains(d)))
                })
                .cloned()
                .collect();
            (img, others)
        };
        for mut other in others {
            other.repo_tags.retain(|t| !names.tags.contains(t));
            other
                .repo_digests
                .retain(|d| !names.repo_digests.contains(d));
            self.write_record(&other)?;
            self.inner
                .lock_state()
                .images
                .insert(other.id.clone(), other);
        }
        let before = img.clone();
        for t in &names.tags {
            if !img.repo_tags.contains(t) {
                img.repo_tags.push(t.clone());
            }
        }
        for d in &names.repo_digests {
            if !img.repo_digests.contains(d) {
                img.repo_digests.push(d.clone());
            }
        }
        if img != before {
            self.write_record(&img)?;
            self.inner
                .lock_state()
                .images
                .insert(img.id.clone(), img.clone());
        }
        Ok(img)
    }

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
    /// (see the module docs), unpacks the rootfs in `tmp/` verifying every layer, finds the
    /// wasm, runs the precompile hook, renames the rootfs into place and writes the record.
    /// Blocking. The caller holds leases on the blobs.
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

    /// The store's unpack limits.
    pub fn limits(&self) -> UnpackLimits {
        self.inner.limits
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
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
/// OCI image, the diff ID of each layer (see the module docs).
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

/// Maximum symlink hops when resolving the entrypoint inside the rootfs.
const MAX_SYMLINK_HOPS: usize = 16;

/// The guest path of the wasm to run: `Entrypoint[0]` if it resolves (inside the rootfs) to a
/// wasm binary, else the shallowest, then alphabetically first, `*.wasm` wasm binary.
fn find_wasm(root: &Path, config: &ImageConfig) -> Option<String> {
    if let Some(ep) = config.entrypoint.first() {
        let candidate = if ep.starts_with('/') || config.working_dir.is_empty() {
            ep.clone()
        } else {
            format!("{}/{ep}", config.working_dir.trim_end_matches('/'))
        };
        if let Some(rel) = resolve_in_root(root, &candidate)
            && is_wasm_file(&root.join(&rel))
        {
            return Some(format!("/{}", rel.display()));
        }
    }
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel_dir)) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let rel = rel_dir.join(entry.file_name());
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_file()
                && rel.extension().and_then(|e| e.to_str()) == Some("wasm")
                && is_wasm_file(&entry.path())
            {
                found.push((rel.components().count(), rel));
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .next()
        .map(|(_, rel)| format!("/{}", rel.display()))
}

/// Resolves a guest path to a regular file inside `root`, following symlinks chroot-style
/// (never leaving `root`). Returns the resolved relative path.
pub(crate) fn resolve_in_root(root: &Path, guest: &str) -> Option<PathBuf> {
    resolve_entry_in_root(root, guest).filter(|rel| {
        fs::symlink_metadata(root.join(rel))
            .map(|m| m.is_file())
            .unwrap_or(false)
    })
}

/// Resolves a guest path to whatever entry (file or directory, never a symlink) it names
/// inside `root`, with [`resolve_in_root`]'s rules. Returns the resolved relative path
/// (empty for `root` itself), or `None` if a component is missing or links loop.
pub(crate) fn resolve_entry_in_root(root: &Path, guest: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = guest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&comp);
        let meta = fs::symlink_metadata(root.join(&next)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return None;
            }
            let target = fs::read_link(root.join(&next)).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                cur = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .rev(),
            );
        } else {
            cur = next;
        }
    }
    fs::symlink_metadata(root.join(&cur))
        .ok()
        .filter(|m| m.is_file() || m.is_dir())
        .map(|_| cur)
}

fn is_wasm_file(path: &Path) -> bool {
    let mut head = [0u8; 8];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && detect::wasm_kind(&head).is_some()
}

fn is_id_like(s: &str) -> bool {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// How a reference matched an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Full ID or unique ID prefix: addresses the image itself.
    Id,
    /// A tag or repo digest: one name of the image.
    Name,
}

/// Resolves `reference` to an image ID in `images`.
fn find(images: &BTreeMap<String, Image>, reference: &str) -> Result<String> {
    find_match(images, reference).map(|(id, _)| id)
}

fn find_match(images: &BTreeMap<String, Image>, reference: &str) -> Result<(String, Match)> {
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

/// Removes a file or directory tree (never following symlinks); absent is fine.
fn remove_path(p: &Path) -> Result<()> {
    crate::store::remove_tree(p).map(drop).at(p)
}

/// Runs blocking filesystem work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Internal(format!("blocking task failed: {e}")))?
}
