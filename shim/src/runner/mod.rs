//! The runner: one process per container, started by the daemon as `wasmcri runner SPEC`.
//!
//! It joins the container's cgroup and the pod's network namespace, drops privileges, then
//! loads the precompiled module and runs it under WASI, writing stdout/stderr to the CRI log
//! and recording its [`ExitRecord`] durably before it exits.

pub mod spec;

pub use spec::{ExitRecord, Preopen, RunMode, RunnerSpec};
#[allow(missing_docs)]
pub fn run(p: &std::path::Path) -> ! { todo!() }
#[allow(missing_docs)]
pub fn read_exit_record(p: &std::path::Path) -> Option<ExitRecord> { todo!() }
#[allow(missing_docs)]
pub fn write_exit_record(p: &std::path::Path, r: &ExitRecord) -> std::io::Result<()> { todo!() }
