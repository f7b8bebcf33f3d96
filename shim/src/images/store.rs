//! The store's state and bookkeeping: [`ImageStore`] itself, opening it (and sweeping what a
//! crash left), listing, getting and removing images, image records on disk, blob leases,
//! names, and the locks (see the [`images`](super) module docs and [`super::lock`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::blobs::{self, BlobStore};
use super::error::{ImageError, IoContext, Result};
use super::lock::StoreLock;
use super::lookup::{Match, find, find_match};
use super::reference::{self, ImageRef, normalize_tag};
use super::{
    Image, ImageFilter, Names, PrecompileHook, Removed, UnpackLimits, blocking, registry,
    remove_path,
};

/// The image store. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct ImageStore {
    pub(super) inner: Arc<Inner>,
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
    pub(super) blobs: BlobStore,
    records: PathBuf,
    pub(super) rootfs: PathBuf,
    pub(super) tmp: PathBuf,
    pub(super) limits: UnpackLimits,
    pub(super) precompile: Option<PrecompileHook>,
    state: Mutex<State>,
    /// Serialises commits and removals (never taken while `state` is held).
    commit: Mutex<()>,
    pub(crate) inflight: registry::Inflight,
    /// The exclusive lock on the root, held for the store's lifetime (see [`super::lock`]).
    lock: Mutex<StoreLock>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) images: BTreeMap<String, Image>,
    /// Blob digests in use by in-flight imports/pulls: GC must not delete them.
    leases: HashMap<String, usize>,
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
    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts
        // and removes), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock_commit(&self) -> MutexGuard<'_, ()> {
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` with default [`UnpackLimits`], taking
    /// the store lock: fails with [`ImageError::Busy`] while another process (or another open
    /// store in this one) has the root. Blocking: call at startup or from `spawn_blocking`.
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
        // Nobody else uses the store while this lock is held, so anything half-done below
        // belongs to an operation a crash interrupted and can be swept.
        let lock = StoreLock::acquire(&root)?;
        for entry in fs::read_dir(&tmp).at(&tmp)? {
            let p = entry.at(&tmp)?.path();
            remove_path(&p)?;
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
        for entry in fs::read_dir(&rootfs).at(&rootfs)? {
            let entry = entry.at(&rootfs)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !records.join(format!("{name}.json")).exists() {
                tracing::info!(rootfs = %entry.path().display(), "removing orphaned rootfs");
                remove_path(&entry.path())?;
            }
        }
        let blobs = BlobStore::new(blob_dir, tmp.clone());
        if !unreadable {
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
                lock: Mutex::new(lock),
            }),
        })
    }

    /// Records in the store lock that its holder serves the store on `socket`, so that a
    /// command refused the lock can name the daemon's socket.
    pub fn announce(&self, socket: &Path) -> Result<()> {
        self.inner
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .announce(socket)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// All images matching `filter`, ordered by ID.
    pub fn list(&self, filter: &ImageFilter) -> Result<Vec<Image>> {
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

    pub(super) fn write_record(&self, img: &Image) -> Result<()> {
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
    pub(super) fn add_names_locked(&self, id: &str, names: &Names) -> Result<Image> {
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

    /// The store's unpack limits.
    pub fn limits(&self) -> UnpackLimits {
        self.inner.limits
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.inner.tmp
    }
}
