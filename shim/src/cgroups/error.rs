//! The one error type of [`crate::cgroups`]; every variant names the path or knob that failed.

use std::io;
use std::path::PathBuf;

/// What went wrong creating, configuring, reading or removing a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup v1 hierarchy or v2 controllers were found under the root.
    #[error("no usable cgroup hierarchy under {root}")]
    NoHierarchy {
        /// The root that was probed.
        root: PathBuf,
    },
    /// The cgroup path is not a clean relative cgroupfs path.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// The cgroup does not exist (in any hierarchy).
    #[error("cgroup {path} not found")]
    NotFound {
        /// The missing directory.
        path: PathBuf,
    },
    /// Writing a control file failed.
    #[error("write {value:?} to {path}: {source}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was being written.
        value: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Reading a control file failed.
    #[error("read {path}: {source}")]
    Read {
        /// The control file.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A control file is larger than any the kernel writes (1 MiB).
    #[error("read {path}: larger than {limit} bytes")]
    TooLarge {
        /// The control file.
        path: PathBuf,
        /// The most that is read.
        limit: u64,
    },
    /// A control file held something unexpected.
    #[error("parse {path}: {what}")]
    Parse {
        /// The control file.
        path: PathBuf,
        /// What could not be parsed.
        what: String,
    },
    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory failed (after retrying while processes exit).
    #[error("remove cgroup {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The host lacks the controller or file needed for a requested limit.
    #[error("unsupported: {what}")]
    Unsupported {
        /// The limit and what is missing.
        what: String,
    },
    /// The requested values contradict each other (e.g. swap below memory).
    #[error("invalid resources: {what}")]
    Invalid {
        /// What is wrong.
        what: String,
    },
    /// Signalling a process of the cgroup failed.
    #[error("signal {signal} to pid {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// An operation failed and undoing its partial work failed too; both are reported.
    #[error("{error}; cleanup also failed: {cleanup}")]
    Cleanup {
        /// The original failure.
        error: Box<CgroupError>,
        /// The failure of the cleanup that followed.
        cleanup: Box<CgroupError>,
    },
}
