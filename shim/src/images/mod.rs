//! The image store: content-addressed blobs, durable image records, unpacked root
//! filesystems, OCI layout import and registry pull/push. Knows nothing of CRI.
//!
//! This file holds the image types; the store's state, records, leases and locks live in
//! `store`, the commit step (blobs to image, image IDs) in `commit`, reference lookups in
//! `lookup`, and finding the wasm in an unpacked rootfs in `rootfs`.
//!
//! # On disk (`root`, e.g. `/var/lib/wasmcri/images`)
//! ```text
//! blobs/sha256/<hex>     manifests, configs and layers, verified, stored once per digest
//! records/<id-hex>.json  one image record per image ID (see below), atomic writes
//! rootfs/<id-hex>/       the unpacked root filesystem holding the .wasm
//! tmp/                   temp files and unpack dirs; emptied on open
//! .lock                  the store lock and its holder (see [`lock`])
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
//! One process at a time owns a store root: opening it takes an exclusive lock on the root
//! (see [`lock`]), so the daemon and a `wasmcri image` command never write one store at the
//! same time, and the in-memory map of the owning process is the whole truth (no rescans).
//! [`ImageStore`] is a cheap `Clone` over an `Arc`. Lookups read that map under a short std
//! lock (never held across `.await`); filesystem work runs in `spawn_blocking`. Commits and
//! removals are serialised by a second lock so a removal cannot delete a rootfs being
//! committed; blobs of in-flight pulls are leased so removal's garbage collection skips
//! them. Concurrent pulls of one reference are coalesced (see [`registry`]).

pub mod blobs;
pub mod classify;
pub mod detect;
pub mod distribution;
pub mod error;
pub mod layout;
pub mod lock;
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

mod commit;
mod lookup;
mod rootfs;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub(crate) use commit::packaging_of;
pub use detect::WasmKind;
use error::IoContext;
pub use error::{ImageError, Result};
use manifest::Manifest;
pub use pinned::{Pinned, PinnedRef};
pub use reference::{ImageRef, normalize_tag};
pub use registry::{PullAuth, PushResult, RegistryConfig};
#[cfg(feature = "runtime")]
pub(crate) use rootfs::{resolve_entry_in_root, resolve_in_root};
pub use store::ImageStore;
pub(crate) use store::Lease;
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
