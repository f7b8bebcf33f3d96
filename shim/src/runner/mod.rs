//! The runner: one process per container, started by the daemon as `wasmcri runner SPEC`.
//!
//! It joins the container's cgroup and the pod's network namespace, drops privileges, then
//! loads the precompiled module and runs it under WASI, writing stdout/stderr to the CRI log
//! and recording its [`ExitRecord`] durably before it exits.

pub mod spec;

pub use spec::{ExitRecord, Preopen, RunMode, RunnerSpec};
