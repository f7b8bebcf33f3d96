//! Kubernetes CRI `runtime.v1` protobuf messages, tonic server traits and clients,
//! generated at build time from `proto/api.proto`, and wasmcri's own admin API
//! (`proto/admin.proto`).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The `runtime.v1` package.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// The `wasmcri.admin.v1` package: the daemon's image administration service, the
/// `wasmcri image` commands' way in.
pub mod admin {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("wasmcri.admin.v1");
    }
}
