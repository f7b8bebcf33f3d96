//! Kubernetes CRI `runtime.v1` protobuf messages, tonic server traits and clients,
//! generated at build time from `proto/api.proto`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The `runtime.v1` package.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
