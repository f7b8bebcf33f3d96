//! The wasmtime engine configuration and the precompiled-artifact cache.
//!
//! # One engine configuration
//! The daemon compiles (at pull or first use) and every runner loads, so both must build their
//! [`Engine`] from the same [`engine`] function: a precompiled artifact only deserializes into an
//! engine whose configuration hashes the same ([`compatibility_key`]). The key is part of the
//! artifact's file name, so upgrading wasmtime or changing the configuration simply misses the
//! cache instead of loading an incompatible artifact. [`serving_engine`] is the same
//! configuration with a pooling instance allocator, which the hash does not cover.
//!
//! # Detection
//! [`detect`] tells core modules, components and wasmtime precompiled artifacts apart by their
//! header (the runwasi order: magic bytes first, through the one detector in
//! [`crate::images::detect`], then the precompiled-ELF check). Which world a component
//! targets, and so whether it is served over HTTP, is [`crate::images::detect::world_of`].
//!
//! # Cache
//! [`precompile_cached`] writes `<cache_dir>/<sha256 of the wasm>-<compatibility key>.cwasm`,
//! compiling only when absent, through a temp file that is fsynced and renamed into place, so a
//! reader never sees a half-written artifact and concurrent callers at worst compile twice.

use std::fs;
use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, OptLevel, Precompiled};

pub use crate::images::detect::WasmKind;

/// Extension of precompiled artifacts in the cache.
pub const ARTIFACT_EXTENSION: &str = "cwasm";

/// Errors of this module; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// Building the engine from its configuration failed (unsupported host CPU, ...).
    #[error("cannot configure the wasmtime engine: {message}")]
    Engine {
        /// wasmtime's description.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `write`, `create`, `rename`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is neither a core module nor a component.
    #[error("{path} is not a WebAssembly module or component")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// The file is already a wasmtime precompiled artifact; those are only trusted when this
    /// runtime produced them, never when they arrive in an image.
    #[error("{path} is a precompiled wasmtime artifact, not portable WebAssembly")]
    Precompiled {
        /// The file.
        path: PathBuf,
    },
    /// Cranelift rejected the module (invalid wasm, unsupported proposal, ...).
    #[error("cannot compile {path}: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// wasmtime's description, one line.
        message: String,
    },
}

/// What a byte string holds, as the runner and the precompile cache see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// Portable WebAssembly: a core module or a component.
    Wasm(WasmKind),
    /// A wasmtime precompiled artifact (`.cwasm`), module or component.
    Precompiled(PrecompiledKind),
    /// Anything else.
    NotWasm,
}

/// Which kind of artifact a precompiled file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecompiledKind {
    /// From [`Engine::precompile_module`].
    Module,
    /// From [`Engine::precompile_component`].
    Component,
}

/// Builds the engine used both to precompile (daemon) and to load (runner).
///
/// Cranelift at `Speed`; epoch interruption on, because that is how a runner stops a guest
/// (SIGTERM, exec timeout) — it has to be compiled in, so it is on even where unused; the
/// component model on for WASI 0.2 components. Everything else stays at wasmtime's defaults,
/// which are the well-trodden path (on-demand allocation; guard pages; signals-based traps).
pub fn engine() -> Result<Engine, WasmError> {
    build(&config())
}

/// Instances a [`serving_engine`] has room for at once — the most requests a wasi:http server
/// runs concurrently (`wasmtime serve` allows 1000 by default too).
pub const SERVING_INSTANCES: u32 = 1000;

/// [`engine`]'s configuration with wasmtime's pooling instance allocator, for a wasi:http
/// server that instantiates per request (as `wasmtime serve` does by default).
///
/// On-demand allocation maps and unmaps a linear memory, a fiber stack and tables for every
/// request; under load those `mmap`/`munmap` calls and their TLB shootdowns serialize the
/// workers on the process's address-space lock. The pool reserves address space for
/// [`SERVING_INSTANCES`] of each once (about 4 TiB of it, none of it resident: an idle server
/// costs no more memory) and reuses the slots. The allocator is not part of the compatibility
/// hash, so the daemon's artifacts from [`engine`] load into this engine unchanged.
pub fn serving_engine() -> Result<Engine, WasmError> {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(SERVING_INSTANCES)
        .total_core_instances(SERVING_INSTANCES)
        .total_memories(SERVING_INSTANCES)
        .total_tables(SERVING_INSTANCES)
        .total_stacks(SERVING_INSTANCES);
    let mut config = config();
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    build(&config)
}

fn config() -> Config {
    let mut config = Config::new();
    config
        .strategy(wasmtime::Strategy::Cranelift)
        .cranelift_opt_level(OptLevel::Speed)
        .epoch_interruption(true)
        .wasm_component_model(true);
    config
}

fn build(config: &Config) -> Result<Engine, WasmError> {
    Engine::new(config).map_err(|e| WasmError::Engine {
        message: one_line(&e),
    })
}

/// A short hex fingerprint of everything that decides whether an artifact compiled by one
/// engine loads into another (wasmtime version, target, configuration).
pub fn compatibility_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// A [`Hasher`] that feeds SHA-256, so the fingerprint is stable across processes (std's
/// `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
    }
}

/// Classifies `bytes` by header: wasm magic with the component or core layer
/// ([`crate::images::detect::wasm_kind`]), else a wasmtime precompiled artifact, else
/// [`Binary::NotWasm`].
pub fn detect(bytes: &[u8]) -> Binary {
    if let Some(kind) = crate::images::detect::wasm_kind(bytes) {
        return Binary::Wasm(kind);
    }
    match Engine::detect_precompiled(bytes) {
        Some(Precompiled::Module) => Binary::Precompiled(PrecompiledKind::Module),
        Some(Precompiled::Component) => Binary::Precompiled(PrecompiledKind::Component),
        None => Binary::NotWasm,
    }
}

/// The image store's precompile step, for the daemon and the `wasmcri image` CLI alike:
/// compiles each imported or pulled module into `cache_dir`, so the first start costs no
/// compilation. A module that does not compile is still stored (the container reports why
/// it cannot run), so a failure is logged, not returned.
pub fn precompile_hook(engine: Engine, cache_dir: PathBuf) -> crate::images::PrecompileHook {
    std::sync::Arc::new(move |wasm: &Path| {
        if let Err(e) = precompile_cached(&engine, &cache_dir, wasm) {
            tracing::warn!(wasm = %wasm.display(), error = %e, "precompile failed");
        }
        Ok(())
    })
}

/// The cache path the artifact of `wasm_bytes` has for `engine` (whether or not it exists).
pub fn artifact_path(engine: &Engine, cache_dir: &Path, wasm_bytes: &[u8]) -> PathBuf {
    let sha = hex::encode(Sha256::digest(wasm_bytes));
    cache_dir.join(format!(
        "{sha}-{}.{ARTIFACT_EXTENSION}",
        compatibility_key(engine)
    ))
}

/// Returns the precompiled artifact for `wasm` in `cache_dir`, compiling it first if it is not
/// there yet. The directory is created if needed.
///
/// Concurrent callers are safe: each compiles into its own temp file and renames it over the
/// final name (same bytes either way), and readers only ever see complete, fsynced files.
///
/// # Trust
/// Loading an artifact (`Module::deserialize_file`) trusts its bytes completely; the cache
/// directory must be writable only by the daemon (it lives in the root-owned state dir).
pub fn precompile_cached(
    engine: &Engine,
    cache_dir: &Path,
    wasm: &Path,
) -> Result<PathBuf, WasmError> {
    let bytes = fs::read(wasm).map_err(|source| WasmError::Io {
        op: "read",
        path: wasm.to_path_buf(),
        source,
    })?;
    let artifact = artifact_path(engine, cache_dir, &bytes);
    if artifact.is_file() {
        readable_by_guests(&artifact)?;
        return Ok(artifact);
    }
    let compiled = match detect(&bytes) {
        Binary::Wasm(WasmKind::Module) => engine.precompile_module(&bytes),
        Binary::Wasm(WasmKind::Component) => engine.precompile_component(&bytes),
        Binary::Precompiled(_) => {
            return Err(WasmError::Precompiled {
                path: wasm.to_path_buf(),
            });
        }
        Binary::NotWasm => {
            return Err(WasmError::NotWasm {
                path: wasm.to_path_buf(),
            });
        }
    }
    .map_err(|e| WasmError::Compile {
        path: wasm.to_path_buf(),
        message: one_line(&e),
    })?;
    fs::create_dir_all(cache_dir).map_err(|source| WasmError::Io {
        op: "create",
        path: cache_dir.to_path_buf(),
        source,
    })?;
    write_atomic(&artifact, &compiled)?;
    readable_by_guests(&artifact)?;
    Ok(artifact)
}

/// Makes an artifact readable by every runner: one that switched to a non-root user (or
/// joined a user namespace) loads it after the switch, and would otherwise compile the
/// module itself on every start (about 100 ms). It holds nothing secret: it is compiled
/// from a module every container of the image can read.
fn readable_by_guests(artifact: &Path) -> Result<(), WasmError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| WasmError::Io {
        op: "chmod",
        path: artifact.to_path_buf(),
        source,
    };
    let mode = fs::metadata(artifact).map_err(io)?.permissions().mode() & 0o777;
    if mode != 0o644 {
        fs::set_permissions(artifact, fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    Ok(())
}

/// Writes `contents` to `path` via a uniquely named temp file in the same directory, fsync,
/// rename, fsync of the directory.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), WasmError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io_err = |op, p: &Path| {
        let p = p.to_path_buf();
        move |source| WasmError::Io {
            op,
            path: p,
            source,
        }
    };
    crate::store::write_atomic_via(dir, path, contents).map_err(|e| io_err("write", path)(e.into()))
}

/// wasmtime's error with its causes on one line (for exit messages and `WasmError`s).
pub fn one_line(err: &wasmtime::Error) -> String {
    let text = format!("{err:#}");
    let mut out = String::with_capacity(text.len());
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT_MODULE: &str = r#"(module (func (export "_start")))"#;
    const WAT_COMPONENT: &str = r#"(component
        (core module $m (func (export "f")))
        (core instance $i (instantiate $m))
        (func $f (canon lift (core func $i "f")))
        (instance $run (export "run" (func $f)))
        (export "wasi:http/incoming-handler@0.2.0" (instance $run))
    )"#;

    fn wasm(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).expect("valid wat")
    }

    #[test]
    fn detect_kinds() {
        let engine = engine().unwrap();
        let module = wasm(WAT_MODULE);
        let component = wasm(WAT_COMPONENT);
        assert_eq!(detect(&module), Binary::Wasm(WasmKind::Module));
        assert_eq!(detect(&component), Binary::Wasm(WasmKind::Component));
        assert_eq!(detect(b"#!/bin/sh\necho hi\n"), Binary::NotWasm);
        assert_eq!(detect(b""), Binary::NotWasm);
        let cm = engine.precompile_module(&module).unwrap();
        assert_eq!(detect(&cm), Binary::Precompiled(PrecompiledKind::Module));
        let cc = engine.precompile_component(&component).unwrap();
        assert_eq!(detect(&cc), Binary::Precompiled(PrecompiledKind::Component));
    }

    /// The one detector on real (WAT-built) components.
    #[test]
    fn worlds_and_exports() {
        use crate::images::detect::{World, component_interfaces, world_of};
        let component = wasm(WAT_COMPONENT);
        assert_eq!(
            component_interfaces(&component).1,
            vec!["wasi:http/incoming-handler@0.2.0".to_string()]
        );
        assert_eq!(world_of(WasmKind::Component, &component), World::HttpProxy);
        let cli = WAT_COMPONENT.replace("wasi:http/incoming-handler@0.2.0", "wasi:cli/run@0.2.6");
        assert_eq!(
            world_of(WasmKind::Component, &wasm(&cli)),
            World::CliCommand
        );
        // Exporting neither: run as a command (where the missing export is reported).
        let neither = WAT_COMPONENT.replace("wasi:http/incoming-handler@0.2.0", "my:pkg/api");
        assert_eq!(
            world_of(WasmKind::Component, &wasm(&neither)),
            World::CliCommand
        );
        assert_eq!(world_of(WasmKind::Module, &wasm(WAT_MODULE)), World::Wasip1);
        assert!(component_interfaces(&wasm(WAT_MODULE)).1.is_empty());
        assert_eq!(crate::images::detect::wasm_kind(b"nope"), None);
    }

    #[test]
    fn compatibility_key_is_stable_and_short() {
        let a = compatibility_key(&engine().unwrap());
        let b = compatibility_key(&engine().unwrap());
        assert_eq!(a, b);
        assert_eq!(a.len(), 16);
        // A different configuration must not share artifacts.
        let mut config = Config::new();
        config.epoch_interruption(false);
        let other = Engine::new(&config).unwrap();
        assert_ne!(a, compatibility_key(&other));
    }

    #[test]
    fn artifacts_load_into_the_serving_engine() {
        let serving = serving_engine().unwrap();
        assert_eq!(
            compatibility_key(&engine().unwrap()),
            compatibility_key(&serving)
        );
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.wasm");
        fs::write(
            &src,
            wasm(r#"(module (memory 1) (func (export "_start")))"#),
        )
        .unwrap();
        let artifact =
            precompile_cached(&engine().unwrap(), &dir.path().join("cache"), &src).unwrap();
        // SAFETY: an artifact this test just compiled.
        let module = unsafe { wasmtime::Module::deserialize_file(&serving, &artifact) }.unwrap();
        let mut store = wasmtime::Store::new(&serving, ());
        wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    }

    #[test]
    fn precompile_cache_miss_then_hit() {
        let engine = engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.wasm");
        fs::write(&src, wasm(WAT_MODULE)).unwrap();
        let cache = dir.path().join("cache");
        let first = precompile_cached(&engine, &cache, &src).unwrap();
        assert!(first.starts_with(&cache));
        assert!(first.to_string_lossy().ends_with(".cwasm"));
        let modified = fs::metadata(&first).unwrap().modified().unwrap();
        let second = precompile_cached(&engine, &cache, &src).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::metadata(&second).unwrap().modified().unwrap(), modified);
        // Readable by runners that switched users; an older private artifact is fixed on a hit.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&first), 0o644);
        fs::set_permissions(&first, fs::Permissions::from_mode(0o600)).unwrap();
        precompile_cached(&engine, &cache, &src).unwrap();
        assert_eq!(mode(&first), 0o644);
        // The artifact loads into a fresh engine built by the same function.
        let loader = super::engine().unwrap();
        unsafe { wasmtime::Module::deserialize_file(&loader, &first) }.unwrap();
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(&cache).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn precompile_cache_component_and_errors() {
        let engine = engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let src = dir.path().join("c.wasm");
        fs::write(&src, wasm(WAT_COMPONENT)).unwrap();
        let art = precompile_cached(&engine, &cache, &src).unwrap();
        unsafe { wasmtime::component::Component::deserialize_file(&engine, &art) }.unwrap();

        let bad = dir.path().join("bad.wasm");
        fs::write(&bad, b"not wasm at all").unwrap();
        let err = precompile_cached(&engine, &cache, &bad).unwrap_err();
        assert!(
            matches!(err, WasmError::NotWasm { ref path } if path == &bad),
            "{err}"
        );

        let corrupt = dir.path().join("corrupt.wasm");
        let mut bytes = wasm(WAT_MODULE);
        bytes.truncate(bytes.len() - 3);
        fs::write(&corrupt, &bytes).unwrap();
        let err = precompile_cached(&engine, &cache, &corrupt).unwrap_err();
        assert!(matches!(err, WasmError::Compile { .. }), "{err}");
        assert!(!err.to_string().contains('\n'));

        let pre = dir.path().join("pre.cwasm");
        fs::write(&pre, fs::read(&art).unwrap()).unwrap();
        let err = precompile_cached(&engine, &cache, &pre).unwrap_err();
        assert!(matches!(err, WasmError::Precompiled { .. }), "{err}");

        let err = precompile_cached(&engine, &cache, &dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, WasmError::Io { op: "read", .. }), "{err}");
    }

    #[test]
    fn precompile_cache_concurrent_callers() {
        let engine = engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("m.wasm");
        fs::write(&src, wasm(WAT_MODULE)).unwrap();
        let cache = dir.path().join("cache");
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| precompile_cached(&engine, &cache, &src).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        let entries: Vec<_> = fs::read_dir(&cache).unwrap().collect();
        assert_eq!(entries.len(), 1, "temp files must not be left behind");
        unsafe { wasmtime::Module::deserialize_file(&engine, &paths[0]) }.unwrap();
    }
}
