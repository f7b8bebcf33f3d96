//! Loading a guest (precompiled artifact by mmap, else compile) and running it once as a
//! command: WASI preview 1 `_start` for core modules, `wasi:cli/run` for components.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Linker, Module, Precompiled, Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::stdio::LogOutput;
use super::{EXIT_FAILURE, EXIT_TIMEOUT, RunMode, RunnerSpec};
use crate::logs::{CriLogWriter, Stream};
use crate::wasm::{Binary, WasmKind, detect, one_line};

/// A guest ready to instantiate.
pub(crate) enum Loaded {
    /// A core module (WASI preview 1).
    Module(Module),
    /// A component (WASI 0.2).
    Component(Component),
}

/// Loads the guest: the precompiled artifact if it is present and loads into `engine`,
/// otherwise compiles `spec.wasm` (a warning on stderr says why).
pub(crate) fn load(engine: &Engine, spec: &RunnerSpec) -> Result<Loaded, String> {
    if let Some(artifact) = &spec.precompiled {
        match load_precompiled(engine, artifact) {
            Ok(loaded) => return Ok(loaded),
            Err(why) => eprintln!("runner: {why}; compiling {}", spec.wasm.display()),
        }
    }
    let bytes = std::fs::read(&spec.wasm)
        .map_err(|e| format!("cannot read {}: {e}", spec.wasm.display()))?;
    let compile_err =
        |e: wasmtime::Error| format!("cannot compile {}: {}", spec.wasm.display(), one_line(&e));
    match detect(&bytes) {
        Binary::Wasm(WasmKind::Module) => Module::from_binary(engine, &bytes)
            .map(Loaded::Module)
            .map_err(compile_err),
        Binary::Wasm(WasmKind::Component) => Component::from_binary(engine, &bytes)
            .map(Loaded::Component)
            .map_err(compile_err),
        Binary::Precompiled(_) => Err(format!(
            "{} is a precompiled wasmtime artifact, not portable WebAssembly",
            spec.wasm.display()
        )),
        Binary::NotWasm => Err(format!(
            "{} is not a WebAssembly module or component",
            spec.wasm.display()
        )),
    }
}

fn load_precompiled(engine: &Engine, artifact: &Path) -> Result<Loaded, String> {
    let what = Engine::detect_precompiled_file(artifact)
        .map_err(|e| format!("precompiled {}: {}", artifact.display(), one_line(&e)))?;
    // SAFETY: artifacts come from the daemon's own cache (`crate::wasm::precompile_cached`),
    // in a directory only the daemon writes; wasmtime checks the engine compatibility header.
    let loaded = match what {
        Some(Precompiled::Module) => {
            unsafe { Module::deserialize_file(engine, artifact) }.map(Loaded::Module)
        }
        Some(Precompiled::Component) => {
            unsafe { Component::deserialize_file(engine, artifact) }.map(Loaded::Component)
        }
        None => {
            return Err(format!(
                "{} is not a precompiled artifact",
                artifact.display()
            ));
        }
    };
    loaded.map_err(|e| format!("precompiled {}: {}", artifact.display(), one_line(&e)))
}

/// Shared between the guest thread and whoever stops it (signal thread, exec timer).
#[derive(Default)]
pub(crate) struct StopState {
    /// The signal that asked us to stop (0 = none).
    pub(crate) signal: AtomicI32,
    /// The exec deadline passed.
    pub(crate) timed_out: AtomicBool,
}

/// How the guest run ended, before timestamps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    pub(crate) exit_code: i32,
    pub(crate) message: String,
}

/// Where guest output goes. Clones share the log writer.
#[derive(Clone)]
pub(crate) enum Output {
    /// The CRI log file.
    Log(Arc<CriLogWriter>),
    /// No log path: the output reaches only attach sessions.
    Discard,
    /// The runner's own stdout/stderr (exec).
    Inherit,
}

/// The environment the guest sees: spec order, later duplicates replacing earlier ones (WASI
/// would pass both), plus `PWD` = the working directory if the spec does not set it.
pub(crate) fn guest_env(spec: &RunnerSpec) -> Vec<(String, String)> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, (k, _)) in spec.env.iter().enumerate() {
        last.insert(k, i);
    }
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .enumerate()
        .filter(|(i, (k, _))| last[k.as_str()] == *i)
        .map(|(_, kv)| kv.clone())
        .collect();
    if !spec.cwd.is_empty() && !last.contains_key("PWD") {
        env.push(("PWD".into(), spec.cwd.clone()));
    }
    env
}

/// Builds the WASI context from the spec and its [`guest_env`] (computed once by callers
/// that build a context per request). Preopens are opened here, i.e. with the runner's
/// (already dropped) credentials.
pub(crate) fn wasi_builder(
    spec: &RunnerSpec,
    env: &[(String, String)],
    output: &Output,
) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.args)
        .envs(env)
        // Blocking file operations run on the guest's thread instead of a tokio blocking pool.
        .allow_blocking_current_thread(true)
        // Already inside the pod's network namespace: the pod network is the guest's.
        // wasmtime-wasi allows no TCP/UDP by default; `inherit_network` only sets the
        // address check, so the protocols are enabled explicitly.
        .inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true);
    if !spec.cwd.is_empty() {
        b.initial_cwd(&spec.cwd);
    }
    if spec.stdin {
        b.inherit_stdin();
    }
    match output {
        // Without a log path the output still reaches attach sessions (critest and crictl
        // create containers without one).
        Output::Log(_) | Output::Discard => {
            let w = match output {
                Output::Log(w) => Some(w.clone()),
                _ => None,
            };
            b.stdout(LogOutput::new(w.clone(), Stream::Stdout));
            b.stderr(LogOutput::new(w, Stream::Stderr));
        }
        Output::Inherit => {
            b.inherit_stdout().inherit_stderr();
        }
    }
    for p in &spec.preopens {
        let perms = if p.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        b.preopened_dir(&p.host, &p.guest, perms).map_err(|e| {
            format!(
                "cannot open {} for the guest's {}: {}",
                p.host.display(),
                p.guest,
                one_line(&e)
            )
        })?;
    }
    Ok(b)
}

/// Store state for components.
pub(crate) struct ComponentState {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Runs the guest once to completion, interruption or trap.
pub(crate) fn run_command(
    engine: &Engine,
    loaded: &Loaded,
    spec: &RunnerSpec,
    output: &Output,
    stop: &StopState,
) -> Outcome {
    let mut builder = match wasi_builder(spec, &guest_env(spec), output) {
        Ok(b) => b,
        Err(message) => {
            return Outcome {
                exit_code: EXIT_FAILURE,
                message,
            };
        }
    };
    // wasmtime-wasi's synchronous bindings run their async implementation on the current
    // tokio runtime, or else on a global one with a worker per CPU (found by reading the
    // cgroup files) — on a big node, dozens of threads per container. One worker is plenty
    // for one guest thread; created here, after setns, so its threads are in the pod netns.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(16)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Outcome {
                exit_code: EXIT_FAILURE,
                message: format!("cannot start the WASI runtime: {e}"),
            };
        }
    };
    let enter = rt.enter();
    let result = match loaded {
        Loaded::Module(module) => run_module(engine, module, builder.build_p1()),
        Loaded::Component(component) => run_component(
            engine,
            component,
            ComponentState {
                ctx: builder.build(),
                table: ResourceTable::new(),
            },
        ),
    };
    drop(enter);
    // Do not wait for blocking tasks (a read of stdin, say) that the guest left behind.
    rt.shutdown_background();
    classify(result, spec, stop)
}

/// Arms the store so that one `Engine::increment_epoch` (a stop signal or the exec timer)
/// interrupts the guest at its next function entry or loop back-edge.
fn arm_interrupt<T>(store: &mut Store<T>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
}

fn run_module(engine: &Engine, module: &Module, ctx: WasiP1Ctx) -> Result<(), RunError> {
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).map_err(RunError::Setup)?;
    let mut store = Store::new(engine, ctx);
    arm_interrupt(&mut store);
    let instance = linker
        .instantiate(&mut store, module)
        .map_err(RunError::Instantiate)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| RunError::Setup(e.context("the module has no `_start` command export")))?;
    start.call(&mut store, ()).map_err(RunError::Guest)
}

fn run_component(
    engine: &Engine,
    component: &Component,
    state: ComponentState,
) -> Result<(), RunError> {
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(RunError::Setup)?;
    let mut store = Store::new(engine, state);
    arm_interrupt(&mut store);
    let command =
        Command::instantiate(&mut store, component, &linker).map_err(RunError::Instantiate)?;
    match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => Err(RunError::RunFailed),
        Err(e) => Err(RunError::Guest(e)),
    }
}

/// Why a guest did not return normally.
pub(crate) enum RunError {
    /// Host-side setup failed (linker, missing export).
    Setup(wasmtime::Error),
    /// Instantiation failed: missing imports, start function trap.
    Instantiate(wasmtime::Error),
    /// The guest trapped, exited or was interrupted.
    Guest(wasmtime::Error),
    /// `wasi:cli/run` returned `err`.
    RunFailed,
}

/// Maps a run result to an exit code and a one-line message (conventions in [`super`]).
pub(crate) fn classify(
    result: Result<(), RunError>,
    spec: &RunnerSpec,
    stop: &StopState,
) -> Outcome {
    let err = match result {
        Ok(()) => {
            return Outcome {
                exit_code: 0,
                message: String::new(),
            };
        }
        Err(RunError::RunFailed) => {
            return Outcome {
                exit_code: EXIT_FAILURE,
                message: "wasi:cli/run returned an error".into(),
            };
        }
        Err(RunError::Setup(e)) => {
            return Outcome {
                exit_code: EXIT_FAILURE,
                message: one_line(&e),
            };
        }
        Err(RunError::Instantiate(e) | RunError::Guest(e)) => e,
    };
    // A guest's own exit and a stop are not news: the kubelet puts a non-empty message in
    // front of the container's termination message (`terminated.message`), which tools
    // parse. Only what the exit code cannot say (traps, load errors, timeouts) gets one.
    if let Some(I32Exit(code)) = err.downcast_ref::<I32Exit>() {
        return Outcome {
            exit_code: *code,
            message: String::new(),
        };
    }
    let signal = stop.signal.load(Ordering::SeqCst);
    if signal != 0 {
        return Outcome {
            exit_code: 128 + signal,
            message: String::new(),
        };
    }
    if stop.timed_out.load(Ordering::SeqCst) {
        let ms = match spec.mode {
            RunMode::Exec { timeout_ms } => timeout_ms,
            _ => 0,
        };
        return Outcome {
            exit_code: EXIT_TIMEOUT,
            message: format!("timed out after {ms} ms"),
        };
    }
    let message = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => one_line(&err),
    };
    Outcome {
        exit_code: EXIT_FAILURE,
        message,
    }
}

/// `SIGTERM` for 15, etc.
pub(crate) fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}
