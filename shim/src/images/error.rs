//! [`ImageError`]: every way an image operation can fail, each variant carrying the
//! reference, digest, path or archive entry it concerns so the gRPC edge can pick a code
//! and the operator can act on the message.
//!
//! The enum is `Clone` (sources are behind `Arc`) because one coalesced pull hands the same
//! result to every caller waiting on it.
//!
//! gRPC codes, as `crate::server` maps them (a test there reads this paragraph and checks
//! every variant, bare and nested in a runtime error, against the mapping):
//! `NotFound` → NOT_FOUND; `InvalidReference`, `InvalidDigest`, `Ambiguous`, `Config` →
//! INVALID_ARGUMENT; `Unauthorized` → PERMISSION_DENIED; `DigestMismatch`, `HostileLayer`,
//! `TooLarge` → DATA_LOSS (the content is bad or hostile, a retry will not help);
//! `NoMatchingPlatform`, `UnsupportedMediaType`, `Malformed` → FAILED_PRECONDITION;
//! `Registry`, `Distribution`, `Busy` (another process holds the store) → UNAVAILABLE;
//! `Io`, `Internal` (a blocking task panicked, a coalesced pull vanished) → INTERNAL.

use std::path::PathBuf;
use std::sync::Arc;

/// Result alias for the image store.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// An image store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageError {
    /// No image matches the reference, ID or ID prefix.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// An ID prefix matches more than one image.
    #[error("image reference {reference:?} is ambiguous: matches {candidates:?}")]
    Ambiguous {
        reference: String,
        candidates: Vec<String>,
    },
    /// The reference cannot be parsed as an image name, tag or digest.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// Content did not hash to the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was being verified (blob, manifest, layer diff ID, ...).
        what: String,
        expected: String,
        actual: String,
    },
    /// A digest string is malformed or uses an unsupported algorithm.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    /// A layer archive tried something unsafe (escape, device node, link outside, ...).
    #[error("hostile layer entry {entry:?}: {reason}")]
    HostileLayer { entry: String, reason: String },
    /// A layer, config or manifest media type this runtime does not handle.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType { media_type: String, what: String },
    /// An image index offers no platform this node can run.
    #[error("no matching platform in image index of {reference}: offered {offered:?}")]
    NoMatchingPlatform {
        reference: String,
        offered: Vec<String>,
    },
    /// Manifest, config or layout JSON could not be parsed or is inconsistent.
    #[error("malformed {what}: {reason}")]
    Malformed { what: String, reason: String },
    /// The registry refused the credentials (or none were given and they are required).
    #[error("unauthorized to access {reference}: {reason}")]
    Unauthorized { reference: String, reason: String },
    /// Any other registry or transport failure, after every mirror and the origin were tried.
    #[error("registry error for {reference}: {source}")]
    Registry {
        reference: String,
        #[source]
        source: Arc<oci_client::errors::OciDistributionError>,
    },
    /// A pull failed at the registry (transport, a refused redirect, an unexpected status),
    /// after every mirror and the origin were tried.
    #[error("registry error for {reference}: {source}")]
    Distribution {
        reference: String,
        #[source]
        source: Arc<super::distribution::DistributionError>,
    },
    /// A configured CA bundle or client setting is unusable.
    #[error("registry configuration error: {0}")]
    Config(String),
    /// A limit against decompression bombs or oversized content was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge { what: String, limit: u64 },
    /// A filesystem operation failed.
    #[error("I/O error at {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Another process (or another open store) owns the store root (see [`super::lock`]).
    #[error(transparent)]
    Busy(#[from] super::lock::StoreBusy),
    /// A blocking task panicked or a coalesced pull vanished.
    #[error("internal image store error: {0}")]
    Internal(String),
}

impl ImageError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn hostile(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        ImageError::HostileLayer {
            entry: entry.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ImageError::Malformed {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Extension to attach a path to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| ImageError::io(path, e))
    }
}
