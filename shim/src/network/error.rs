//! The error type of [`crate::network`]; variants name the plugin, file or namespace.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong setting up or tearing down pod networking.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No usable network configuration in the conf dir.
    #[error("no network config found in {}", dir.display())]
    NoConfig {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A network configuration file is unusable.
    #[error("network config {}: {msg}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// No executable for a plugin type in any bin dir.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin `type`.
        plugin: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// A plugin could not be started or talked to.
    #[error("run CNI plugin {plugin:?}: {source}")]
    Exec {
        /// The plugin `type`.
        plugin: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A plugin reported an error (the CNI error object, or its stderr when it gave none).
    #[error("CNI plugin {plugin:?} failed (code {code}): {msg}")]
    Plugin {
        /// The plugin `type`.
        plugin: String,
        /// CNI error code (exit status when the plugin printed no error object).
        code: i64,
        /// `msg` and `details` from the plugin.
        msg: String,
    },
    /// A plugin ran longer than the configured timeout and was killed.
    #[error("CNI plugin {plugin:?} timed out after {after:?}")]
    Timeout {
        /// The plugin `type`.
        plugin: String,
        /// The timeout.
        after: Duration,
    },
    /// A plugin succeeded but its result is not a CNI result.
    #[error("CNI plugin {plugin:?} returned an unusable result: {msg}")]
    BadResult {
        /// The plugin `type`.
        plugin: String,
        /// What is wrong.
        msg: String,
    },
    /// Reading or writing the result cache failed.
    #[error("CNI result cache {}: {source}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating, entering or removing a network namespace failed.
    #[error("network namespace {}: {op}: {source}", path.display())]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The step that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The attachment request is malformed.
    #[error("invalid network attachment: {what}")]
    InvalidAttachment {
        /// What is wrong.
        what: String,
    },
    /// An operation failed and undoing it failed too; both are reported.
    #[error("{error}; cleanup also failed: {cleanup}")]
    Rollback {
        /// The original failure.
        error: Box<NetworkError>,
        /// The failure of the undo.
        cleanup: Box<NetworkError>,
    },
}
