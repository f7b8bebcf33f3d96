//! wasmcri: a Kubernetes CRI (`runtime.v1`) runtime that runs WebAssembly under wasmtime.
//!
//! The crate is both the daemon (`wasmcri serve`) and the per-container runner process
//! (`wasmcri runner`, hidden), plus the image CLI.
//!
//! - [`server`]: the gRPC edge, one module per CRI RPC; the only place protobuf types live.
//! - [`pod`], [`container`]: domain state and lifecycle of sandboxes and containers.
//! - [`store`]: durable, crash-safe metadata records.
//! - [`images`]: content store, OCI layout import, registry pull/push, safe layer unpacking.
//! - [`wasm`]: the wasmtime engine configuration and the precompiled-artifact cache.
//! - [`runner`]: the process that runs one container's wasm, and its spec/exit contract.
//! - [`logs`]: the kubelet's CRI log format writer.
//! - [`cgroups`]: cgroup v1/v2 limits and stats.
//! - [`network`]: network namespaces, CNI and pod sysctls.
//! - [`userns`]: pod user namespaces (`hostUsers: false`).
//! - [`streaming`]: the exec / port-forward streaming server (SPDY/3.1).
//! - [`delegate`]: routing of non-Wasm pods and images to a delegate CRI runtime (containerd).

pub mod cgroups;
pub mod config;
#[cfg(feature = "runtime")]
pub mod container;
#[cfg(feature = "runtime")]
pub mod daemon;
#[cfg(feature = "runtime")]
pub mod delegate;
pub mod fuzzing;
pub mod ids;
pub mod images;
pub mod logs;
pub mod network;
pub mod pod;
#[cfg(feature = "runtime")]
pub mod runner;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "runtime")]
pub mod server;
pub mod store;
#[cfg(feature = "runtime")]
pub mod streaming;
pub mod userns;
#[cfg(feature = "runtime")]
pub mod wasm;
