//! The runner: one process per container, started by the daemon as `wasmcri runner SPEC`.
//!
//! It joins the container's cgroup and the pod's network namespace, drops privileges, then
//! loads the precompiled module and runs it under WASI, writing stdout/stderr to the CRI log
//! and recording its [`ExitRecord`] durably before it exits.
//!
//! # Order of [`run`]
//! 1. Get the [`RunnerSpec`]: `wasmcri runner --standby` ([`standby`], how the daemon starts
//!    containers and ExecSync commands) reads one line of JSON from stdin, so a spec never
//!    passes through a file a container's user could replace; `wasmcri runner SPEC` reads
//!    a JSON file (manual runs and tests only).
//!    Before that, in every mode, the runner has already entered a private mount namespace
//!    whose root is the jail's empty tmpfs ([`jail::prepare`]), and goes back to the host's
//!    view once the spec is here.
//! 2. Single-threaded, before any guest code: join the container's cgroup
//!    ([`crate::cgroups::Membership::join_self`]);
//!    `setns` into `netns` (it only moves the calling thread, hence no threads yet); write
//!    `oom_score_adj` (EPERM/EACCES tolerated); complete the jail for the spec, holding only
//!    what this runner needs, and enter it ([`jail`]); open the CRI log (as root:
//!    the kubelet's log directory is root-owned); join the pod's user namespace if it has
//!    one (`setup::enter_userns`; the IDs below are then the namespace's); empty the
//!    capability bounding set;
//!    `setgroups`/`setgid`/`setuid` if asked (the exit file's directory is chowned to the new
//!    user first so the record can still be renamed into it — give each runner a directory
//!    of its own for its exit file); drop the remaining capabilities, set `no_new_privs`,
//!    install the seccomp filter ([`confine`]).
//! 3. Build the engine ([`crate::wasm::engine`], which a standby runner has built already;
//!    [`crate::wasm::serving_engine`], which pools instances, in `Http` mode) and load the
//!    guest: the `precompiled` artifact by mmap, falling back to compiling `wasm` if it is
//!    absent or incompatible.
//! 4. Start the signal thread, report readiness, run the guest on the main thread.
//! 5. Close the log (pending partial lines become `F` records), write the [`ExitRecord`]
//!    atomically (temp file, rename), exit with its code.
//!
//! # Readiness protocol
//! The daemon reads one line from the runner's stdout ([`parse_ready_line`]):
//! - `ok` — the guest is loaded and about to run; in `Command`/`Http` mode the runner then
//!   points its fd 1 at `/dev/null`, so a daemon that has gone away cannot SIGPIPE it;
//! - `error: <one line>` — setup or loading failed; the runner has written an [`ExitRecord`]
//!   (if it got as far as reading the spec) and exits with [`EXIT_FAILURE`].
//!
//! In `Exec` and `ExecStream` mode stdout belongs to the guest, so no readiness line is written: failures are
//! reported as `error: ...` on stderr, exit code [`EXIT_FAILURE`] and the exit record.
//! The runner's own stderr is a debug log the daemon provides (warnings such as an unusable
//! precompiled artifact go there).
//!
//! # Exit codes (process exit status and [`ExitRecord::exit_code`])
//! | how the guest ended | code | reason | message |
//! |---|---|---|---|
//! | returned from `_start` / `wasi:cli/run` ok | 0 | `Completed` | empty |
//! | `exit(n)` (`proc_exit`, `wasi:cli/exit`) | n | `Completed` if 0, else `Error` | empty |
//! | trap (`unreachable`, out-of-bounds, stack overflow, Rust panic = abort) | 1 | `Error` | the trap, e.g. ``wasm trap: wasm `unreachable` instruction executed`` |
//! | `wasi:cli/run` returned `err` | 1 | `Error` | `wasi:cli/run returned an error` |
//! | cannot load: not wasm, corrupt, missing `_start`, missing imports, bad preopen, setup failed | 1 | `Error` | why, one line |
//! | stopped by SIGTERM / SIGINT | 143 / 130 (128+signal) | `Error` | empty |
//! | `Http` mode: stopped by SIGTERM / SIGINT, in-flight requests drained | 0 | `Completed` | empty |
//! | `Http` mode: in-flight requests still running at the StopContainer timeout | — SIGKILL: 137, inferred by the daemon | `Error` | |
//! | exec deadline passed (`Exec { timeout_ms }`) | 124, like `timeout(1)` | `Error` | `timed out after N ms` |
//! | killed (SIGKILL, OOM) | — the runner cannot record it; the daemon infers 137 / `OOMKilled` | | |
//!
//! Components can only report 0 or 1 through `exit`: WASI 0.2's `wasi:cli/exit.exit` carries
//! ok/err, and Rust's std maps `process::exit(n != 0)` to err (the numeric `exit-with-code` is
//! unstable). Core modules report `proc_exit(n)` exactly.
//!
//! A trap is reported as 1 rather than a signal-style 134: a trap is the wasm sandbox
//! refusing an operation, not a host-process crash, and 1 is what `wasmtime run` and runwasi
//! report for it; the message tells it apart from `exit(1)`.
//!
//! # Stopping
//! Wasm has no signal handlers. SIGTERM/SIGINT make the signal thread record the signal and
//! bump the engine epoch; every store is armed to trap at the next epoch change, so compute-bound
//! guests stop within microseconds. A guest blocked inside a host call (a long `sleep`, a read
//! of stdin) only notices when the call returns, so after [`STOP_GRACE`] the signal thread
//! finishes on its own: it writes the record, flushes the log and exits. SIGUSR1 reopens the
//! log file (`ReopenContainerLog`). A wasi:http server (`Http` mode) instead stops accepting
//! and drains its in-flight requests (see `http`), exiting 0 once they are done.
//!
//! # WASI notes
//! argv, env (later duplicates win) and preopens come from the spec; the guest sees the pod
//! network (sockets and name lookup allowed: the runner already lives in the pod netns). The
//! working directory is passed as `wasi:cli/environment.initial-cwd` to components; WASI
//! preview 1 has no notion of a cwd (wasi-libc starts at `/`), so both also get `PWD`.
//!
//! # Known limitation
//! After dropping to a non-root user, `ReopenContainerLog` cannot create the new file in the
//! kubelet's root-owned log directory; the runner keeps writing to the old file and says so
//! on its debug log.

pub mod attach;
mod confine;
mod guest;
mod http;
mod jail;
mod setup;
pub mod spec;
mod stdio;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use spec::{ExitRecord, FileBind, Preopen, RunMode, RunnerSpec, StdioSpec};

use crate::container::ExitReason;
use crate::logs::CriLogWriter;
use guest::{Loaded, Output, StopState};

/// Set in the environment of an interactive exec runner whose stdin is a terminal: its spec
/// then arrives on fd 3 (a pipe), not on stdin.
pub const SPEC_ON_FD3_ENV: &str = "WASMCRI_SPEC_ON_FD3";

/// Exit code for a trap or a guest that cannot be loaded or set up.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code when an exec's deadline passed (as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// How long a stop signal waits for the guest to reach an interruption point before the
/// runner exits without it (the guest is blocked in a host call that cannot be interrupted).
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Reason for a clean exit.
pub const REASON_COMPLETED: ExitReason = ExitReason::Completed;
/// Reason for everything else the runner can record.
pub const REASON_ERROR: ExitReason = ExitReason::Error;

/// Runs the guest described by `spec` in this process and reports how it ended, without the
/// process-level setup of [`run`] (cgroups, netns, credentials, signals, readiness) and
/// without writing the exit file. Guest output goes to `spec.log_path` (closed at the end) or,
/// in `Exec` mode, to this process's stdout/stderr. Used by [`run`] and by tests.
pub fn execute(spec: &RunnerSpec) -> ExitRecord {
    let started_at = crate::ids::now_ns();
    let fail = |message: String| ExitRecord {
        exit_code: EXIT_FAILURE,
        reason: REASON_ERROR,
        message,
        started_at,
        finished_at: crate::ids::now_ns(),
    };
    let output = match open_output(spec) {
        Ok(o) => o,
        Err(m) => return fail(m),
    };
    let engine = match engine_for(&spec.mode) {
        Ok(e) => e,
        Err(e) => return fail(e.to_string()),
    };
    let loaded = match guest::load(&engine, spec) {
        Ok(l) => l,
        Err(m) => {
            close_output(&output);
            return fail(m);
        }
    };
    let stop = Arc::new(StopState::default());
    let _timer = start_exec_timer(spec, &engine, &stop);
    let outcome = run_loaded(&engine, &loaded, spec, &output, &stop);
    close_output(&output);
    record(outcome.exit_code, outcome.message, started_at)
}

fn run_loaded(
    engine: &wasmtime::Engine,
    loaded: &Loaded,
    spec: &RunnerSpec,
    output: &Output,
    stop: &Arc<StopState>,
) -> guest::Outcome {
    match spec.mode {
        RunMode::Http { port } => match loaded {
            Loaded::Component(c) => http::serve(engine, c, spec, port, output, stop),
            Loaded::Module(_) => guest::Outcome {
                exit_code: EXIT_FAILURE,
                message: "HTTP mode needs a component exporting wasi:http/incoming-handler, \
                          got a core module"
                    .into(),
            },
        },
        RunMode::Command | RunMode::Exec { .. } | RunMode::ExecStream => {
            guest::run_command(engine, loaded, spec, output, stop)
        }
    }
}

fn record(exit_code: i32, message: String, started_at: i64) -> ExitRecord {
    ExitRecord {
        exit_code,
        reason: ExitReason::of_exit_code(exit_code),
        message,
        started_at,
        finished_at: crate::ids::now_ns(),
    }
}

fn open_output(spec: &RunnerSpec) -> Result<Output, String> {
    if matches!(spec.mode, RunMode::Exec { .. } | RunMode::ExecStream) {
        return Ok(Output::Inherit);
    }
    match &spec.log_path {
        Some(p) => CriLogWriter::open(p)
            .map(|w| Output::Log(Arc::new(w)))
            .map_err(|e| format!("cannot open log {}: {e}", p.display())),
        None => Ok(Output::Discard),
    }
}

fn close_output(output: &Output) {
    match output {
        Output::Log(w) => {
            if let Err(e) = w.close() {
                eprintln!("runner: closing log {}: {e}", w.path().display());
            }
        }
        Output::Inherit => {
            let _ = io::stdout().flush();
            let _ = io::stderr().flush();
        }
        Output::Discard => {}
    }
}

/// In `Exec` mode with a timeout, a thread that marks the deadline and interrupts the guest.
fn start_exec_timer(
    spec: &RunnerSpec,
    engine: &wasmtime::Engine,
    stop: &Arc<StopState>,
) -> Option<std::thread::JoinHandle<()>> {
    let RunMode::Exec { timeout_ms } = spec.mode else {
        return None;
    };
    if timeout_ms == 0 {
        return None;
    }
    let engine = engine.clone();
    let stop = stop.clone();
    std::thread::Builder::new()
        .name("exec-timer".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            std::thread::sleep(Duration::from_millis(timeout_ms));
            stop.timed_out.store(true, Ordering::SeqCst);
            engine.increment_epoch();
        })
        .ok()
}

/// Writes the exit record exactly once per process, then exits. Shared by the main thread
/// (guest finished) and the signal/timer threads (guest did not reach an interruption point).
struct Finisher {
    exit_file: PathBuf,
    output: Mutex<Option<Output>>,
}

impl Finisher {
    fn finish(&self, rec: ExitRecord) -> ! {
        // Whoever takes the output first finishes; a second caller blocks until the process
        // exits.
        let mut guard = self.output.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(output) = guard.take() {
            attach::drain_terminal();
            close_output(&output);
        }
        attach::finish();
        if !self.exit_file.as_os_str().is_empty()
            && let Err(e) = write_exit_record(&self.exit_file, &rec)
        {
            eprintln!(
                "runner: cannot write exit record {}: {e}",
                self.exit_file.display()
            );
        }
        // Only what the exit code cannot say; in exec mode stderr is the user's.
        if !rec.message.is_empty() {
            eprintln!("runner: exit {}: {}", rec.exit_code, rec.message);
        }
        std::process::exit(rec.exit_code)
    }
}

/// The runner process: see the module docs for the order of steps, the readiness protocol and
/// the exit codes. Never returns.
pub fn run(spec_path: &Path) -> ! {
    // The spec-independent half of the jail, before the spec is read in every mode; an
    // error only matters if the spec asks for a jail.
    let jail = jail::prepare();
    let spec = back_to_host(&jail).and_then(|()| read_spec(spec_path));
    run_spec(spec, None, jail)
}

/// Back to the host's view of the filesystem once the spec is here (see
/// [`jail::Prepared::to_host`]); an error means the process is stuck in the jail's
/// namespace, whatever the spec asks.
fn back_to_host(jail: &Result<jail::Prepared, String>) -> Result<(), String> {
    match jail {
        Ok(p) => p.to_host(),
        Err(_) => Ok(()),
    }
}

/// `wasmcri runner --standby`: a runner the daemon starts before it is needed, so that
/// StartContainer does not wait for fork/exec, the dynamic loader and engine setup (about
/// 4 ms of a 2-core VM's 10 ms start). It builds the engine (no threads, no sockets: the
/// process must still be able to join any netns and go back to the host's mount namespace)
/// and the spec-independent half of its jail ([`jail::prepare`]: its own mount namespace,
/// old root detached), then blocks on one line from stdin: its spec. End of file instead
/// (the daemon exited or shrank its pool) ends it with 0 and nothing written anywhere.
/// After the line: stdin becomes `/dev/null` (except for an interactive exec,
/// [`RunMode::ExecStream`] with `stdin`, whose guest reads on; with a terminal, the spec
/// comes on fd 3 instead, see [`SPEC_ON_FD3_ENV`]), stderr the spec's `debug_log` (if it
/// names one), and it goes on exactly as [`run`].
///
/// Until it has its spec it lives in the daemon's cgroup: the few pages it touched before
/// joining the container's cgroup stay charged to the daemon (cgroup v1 and v2 both charge
/// a page to the cgroup that first touched it).
pub fn standby() -> ! {
    let engine = crate::wasm::engine().map_err(|e| e.to_string());
    // The spec-independent half of the jail, before the spec is read in every mode; an
    // error only matters if the spec asks for a jail.
    let jail = jail::prepare();
    let mut line = String::new();
    let read = if std::env::var_os(SPEC_ON_FD3_ENV).is_some() {
        // SAFETY: the daemon set fd 3 up (dup2 before exec) for this process alone, and
        // nothing else in it takes ownership of fd 3.
        let f = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(3) };
        io::BufReader::new(f).read_line(&mut line)
    } else {
        io::stdin().lock().read_line(&mut line)
    };
    match read {
        Ok(n) if n > 0 && line.ends_with('\n') => {}
        _ => std::process::exit(0),
    }
    let spec: Result<RunnerSpec, String> = back_to_host(&jail).and_then(|()| {
        serde_json::from_str(&line).map_err(|e| format!("invalid spec from the daemon: {e}"))
    });
    // An interactive exec keeps stdin: what follows the spec line is the guest's input. It
    // reads on through the same process-wide buffered stdin, so bytes that arrived with the
    // spec line are not lost.
    let keep_stdin = spec
        .as_ref()
        .is_ok_and(|s| s.mode == RunMode::ExecStream && s.stdin);
    if !keep_stdin && let Err(e) = setup::detach_stdin() {
        eprintln!("runner: cannot detach stdin: {e}");
    }
    run_spec(spec, Some(engine), jail)
}

fn run_spec(
    spec: Result<RunnerSpec, String>,
    standby_engine: Option<Result<wasmtime::Engine, String>>,
    jail: Result<jail::Prepared, String>,
) -> ! {
    let started_at = crate::ids::now_ns();
    let spec = match spec {
        Ok(s) => s,
        Err(m) => {
            ready_line(Err(&m), true);
            std::process::exit(EXIT_FAILURE);
        }
    };
    if standby_engine.is_some()
        && let Some(log) = &spec.debug_log
        && let Err(e) = setup::redirect_stderr(log)
    {
        eprintln!("runner: cannot open {}: {e}", log.display());
    }
    let is_exec = matches!(spec.mode, RunMode::Exec { .. } | RunMode::ExecStream);
    let fail = |m: String| -> ! {
        ready_line(Err(&m), !is_exec);
        let finisher = Finisher {
            exit_file: spec.exit_file.clone(),
            output: Mutex::new(None),
        };
        finisher.finish(record(EXIT_FAILURE, m, started_at))
    };

    // Bound while still root and in the host's view (the jail does not hold it).
    let attach = match attach::bind(&spec) {
        Ok(a) => a,
        Err(m) => fail(m),
    };
    let userns = match setup_process(&spec, jail) {
        Ok(ns) => ns,
        Err(m) => fail(m),
    };
    let output = match open_output(&spec) {
        Ok(o) => o,
        Err(m) => fail(m),
    };
    let filters = match confine::filters() {
        Ok(f) => f,
        Err(m) => fail(m),
    };
    // The user namespace before the bounding set: joining one resets it.
    if let Err(m) = setup::enter_userns(&spec, userns)
        .and_then(|()| confine::limit_bounding_set())
        .and_then(|()| setup::drop_privileges(&spec))
        .and_then(|()| confine::lock_down(&filters[0]))
        .and_then(|()| confine::install_rest(&filters[1..]))
    {
        fail(m);
    }
    let engine = match (&spec.mode, standby_engine) {
        (RunMode::Command | RunMode::Exec { .. } | RunMode::ExecStream, Some(prebuilt)) => prebuilt,
        (mode, _) => engine_for(mode).map_err(|e| e.to_string()),
    };
    let engine = match engine {
        Ok(e) => e,
        Err(m) => fail(m),
    };
    let loaded = match guest::load(&engine, &spec) {
        Ok(l) => l,
        Err(m) => {
            close_output(&output);
            fail(m);
        }
    };

    let log = match &output {
        Output::Log(w) => Some(w.clone()),
        _ => None,
    };
    let terminal_log = log.clone();
    let finisher = Arc::new(Finisher {
        exit_file: spec.exit_file.clone(),
        output: Mutex::new(None),
    });
    let stop = Arc::new(StopState::default());
    // In HTTP mode the accept loop drains in-flight requests itself, for `stop_grace_ms` if
    // given, else until they finish (the StopContainer timeout bounds that); the signal thread
    // only steps in if a given limit does not end the process shortly after.
    let force_after = match spec.mode {
        RunMode::Http { .. } => spec
            .stop_grace_ms
            .map(|ms| Duration::from_millis(ms) + Duration::from_secs(1)),
        _ => Some(stop_grace(&spec)),
    };
    if let Err(e) = start_signal_thread(&engine, &stop, log, &finisher, started_at, force_after) {
        close_output(&output);
        fail(format!("cannot watch signals: {e}"));
    }
    let _timer = start_exec_timer(&spec, &engine, &stop);
    if let Some(bound) = attach
        && let Err(e) = attach::start(bound, terminal_log)
    {
        close_output(&output);
        fail(format!("cannot serve the attach socket: {e}"));
    }
    ready_line(Ok(()), !is_exec);
    if !is_exec && let Err(e) = setup::detach_stdout() {
        eprintln!("runner: cannot detach stdout: {e}");
    }

    let outcome = {
        // The finisher owns the output from here so the signal thread can flush it too.
        let out_ref = output.clone();
        *finisher.output.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
        run_loaded(&engine, &loaded, &spec, &out_ref, &stop)
    };
    finisher.finish(record(outcome.exit_code, outcome.message, started_at))
}

/// The pooling engine for a wasi:http server (an instance per request), the default one for
/// everything else; artifacts load into either.
fn engine_for(mode: &RunMode) -> Result<wasmtime::Engine, crate::wasm::WasmError> {
    match mode {
        RunMode::Http { .. } => crate::wasm::serving_engine(),
        RunMode::Command | RunMode::Exec { .. } | RunMode::ExecStream => crate::wasm::engine(),
    }
}

/// The stop grace period the spec asks for, or [`STOP_GRACE`].
pub(crate) fn stop_grace(spec: &RunnerSpec) -> Duration {
    spec.stop_grace_ms
        .map(Duration::from_millis)
        .unwrap_or(STOP_GRACE)
}

fn read_spec(path: &Path) -> Result<RunnerSpec, String> {
    let text = fs::read(path).map_err(|e| format!("cannot read spec {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("invalid spec {}: {e}", path.display()))
}

/// Host-side setup; returns the pod's user namespace, opened before the jail hides it, for
/// [`setup::enter_userns`].
fn setup_process(
    spec: &RunnerSpec,
    jail: Result<jail::Prepared, String>,
) -> Result<Option<fs::File>, String> {
    if let Some(cgroup) = &spec.cgroup {
        cgroup
            .join_self()
            .map_err(|e| format!("join cgroup: {e}"))?;
    }
    if let Some(netns) = &spec.netns {
        setup::join_netns(netns)?;
    }
    let userns = setup::open_userns(spec)?;
    if let Some(adj) = spec.oom_score_adj {
        setup::set_oom_score_adj(adj)?;
    }
    if spec.jail.is_some() {
        jail?.enter(spec)?;
    }
    // The guest's files get the usual container umask (runc's default), not whatever the
    // daemon was started with or narrowed its own to (0177 while it binds its socket): a
    // file a guest writes into a shared volume must be readable by the pod's other
    // containers.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(GUEST_UMASK));
    Ok(userns)
}

/// The umask guests run with.
const GUEST_UMASK: u32 = 0o022;

/// Writes the readiness line (`ok` / `error: ...`) to stdout, or, when stdout belongs to the
/// guest (`to_stdout == false`), errors to stderr only.
fn ready_line(result: Result<(), &str>, to_stdout: bool) {
    let line = match result {
        Ok(()) => "ok\n".to_string(),
        Err(m) => format!("error: {}\n", m.replace('\n', " ")),
    };
    if to_stdout {
        let mut out = io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    }
    if result.is_err() {
        eprint!("runner: {line}");
    }
}

fn start_signal_thread(
    engine: &wasmtime::Engine,
    stop: &Arc<StopState>,
    log: Option<Arc<CriLogWriter>>,
    finisher: &Arc<Finisher>,
    started_at: i64,
    force_after: Option<Duration>,
) -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1])?;
    let engine = engine.clone();
    let stop = stop.clone();
    let finisher = finisher.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut deadline: Option<std::time::Instant> = None;
            loop {
                for sig in signals.pending() {
                    match sig {
                        SIGUSR1 => {
                            if let Some(w) = &log
                                && let Err(e) = w.reopen()
                            {
                                eprintln!("runner: reopen {}: {e}", w.path().display());
                            }
                        }
                        _ => {
                            // The first stop signal decides the exit code.
                            let _ = stop.signal.compare_exchange(
                                0,
                                sig,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                            engine.increment_epoch();
                            if let Some(after) = force_after {
                                deadline.get_or_insert_with(|| std::time::Instant::now() + after);
                            }
                        }
                    }
                }
                if let Some(d) = deadline
                    && std::time::Instant::now() >= d
                {
                    let sig = stop.signal.load(Ordering::SeqCst);
                    // A stop, like one that reached the guest: no status message.
                    eprintln!(
                        "runner: {}: guest blocked in a host call; exiting without it",
                        guest::signal_name(sig)
                    );
                    finisher.finish(record(128 + sig, String::new(), started_at));
                }
                std::thread::sleep(Duration::from_millis(if deadline.is_some() {
                    20
                } else {
                    100
                }));
            }
        })?;
    Ok(())
}

/// Writes `rec` to `path` atomically (a temp file in the same directory renamed over `path`):
/// a reader sees the old state or the whole record. Not fsynced: the daemon copies the record
/// into the container's metadata, which is ([`crate::store`]), and a power loss ends the
/// runner anyway.
pub fn write_exit_record(path: &Path, rec: &ExitRecord) -> io::Result<()> {
    Ok(crate::store::save_volatile(path, rec)?)
}

/// Largest exit record read. Real ones are a few hundred bytes; the record's directory
/// belongs to the container's user, so whatever is there is read with a bound.
const MAX_EXIT_RECORD: u64 = 64 * 1024;

/// Reads an exit record; `None` if it does not exist (yet) or is not a complete record.
///
/// The record's directory is writable by the container's user, who may have put a symlink
/// (to `/dev/zero`, say), a FIFO or a huge file there: the final component is never
/// followed, opening never blocks, only a regular file is read, and at most
/// [`MAX_EXIT_RECORD`] bytes of it.
pub fn read_exit_record(path: &Path) -> Option<ExitRecord> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_EXIT_RECORD + 1).read_to_end(&mut bytes).ok()?;
    if bytes.len() as u64 > MAX_EXIT_RECORD {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// Interprets the runner's readiness line (`None`: it exited without writing one): `Ok` on
/// `ok`, `Err(reason)` on `error: reason` or anything else.
pub fn parse_ready_line(line: Option<&str>) -> Result<(), String> {
    let Some(line) = line else {
        return Err("runner exited before the guest started".into());
    };
    let line = line.trim_end();
    if line == "ok" {
        Ok(())
    } else if let Some(reason) = line.strip_prefix("error: ") {
        Err(reason.to_string())
    } else {
        Err(format!("unexpected readiness line {line:?}"))
    }
}
