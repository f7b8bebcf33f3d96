//! `cargo bench --bench http`: throughput and latency of the `examples/http-hello` wasi:http
//! component served by a wasmcri pod, against `wasmtime serve` on the same `.wasm` in the same
//! run. Prints a table; asserts nothing.
//!
//! The load generator is built in: [`CONNECTIONS`] concurrent keep-alive HTTP/1.1 connections
//! (hyper's client on tokio), each sending `GET /` back to back; a warmup, then a measured
//! window. The targets are measured alternately, [`ROUNDS`] times each, so that a change in the
//! machine's load (it is shared) hits both; the figures are over all rounds.
//!
//! - wasmcri: the daemon, a pod with node networking, the component on a free loopback port.
//! - `wasmtime serve -S cli --addr 127.0.0.1:PORT FILE`: wasmtime-cli 48.0.8's defaults
//!   (pooling allocator, a fresh instance per request, multi-threaded tokio); `-S cli` because
//!   the component (Rust std) imports `wasi:cli/environment`, which wasmcri links for every
//!   component and `serve` only on request. Taken from `WASMTIME_CLI`, else `wasmtime` on
//!   `PATH`; skipped (said so) if none runs.
//!
//! Also prints each server's private memory (Private_Clean + Private_Dirty) idle and after the
//! load.
//!
//! Env: `WASMCRI_BENCH_SECS` (measured seconds per round, default 8),
//! `WASMCRI_BENCH_WARMUP_SECS` (default 2).

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Concurrent connections of the load generator.
const CONNECTIONS: usize = 64;
/// Measured rounds per target.
const ROUNDS: usize = 2;

/// What one target did under load.
#[derive(Default)]
struct Load {
    /// Latency of every request completed in the measured window.
    latencies: Vec<Duration>,
    /// Length of the measured windows.
    window: Duration,
    /// Requests that failed or were answered other than 200.
    errors: usize,
}

impl Load {
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    fn row(&mut self, name: &str) {
        println!(
            "| {name:<28} | {:>10.0} | {:>8.2} | {:>8.2} | {:>7} |",
            self.rps(),
            self.pct(0.5).as_secs_f64() * 1e3,
            self.pct(0.99).as_secs_f64() * 1e3,
            self.errors
        );
    }
}

/// One keep-alive connection sending `GET /` until `end`; records latencies after `measure_from`.
async fn connection(addr: String, measure_from: Instant, end: Instant) -> Load {
    let mut out = Load::default();
    let stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(_) => {
            out.errors += 1;
            return out;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    loop {
        let t = Instant::now();
        if t >= end {
            return out;
        }
        let req = hyper::Request::get("/")
            .header(hyper::header::HOST, addr.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let ok = match sender.send_request(req).await {
            Ok(resp) => {
                let code = resp.status();
                resp.into_body().collect().await.is_ok() && code == hyper::StatusCode::OK
            }
            Err(_) => false,
        };
        let done = Instant::now();
        if !ok {
            out.errors += 1;
            // A broken connection cannot be reused.
            if sender.ready().await.is_err() {
                return out;
            }
        } else if t >= measure_from && done <= end {
            out.latencies.push(done - t);
        }
    }
}

/// Drives `addr` with [`CONNECTIONS`] connections: `warmup`, then `window` measured.
async fn load(addr: &str, warmup: Duration, window: Duration, into: &mut Load) {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(connection(addr.to_string(), measure_from, end)))
        .collect();
    for t in tasks {
        let l = t.await.unwrap();
        into.latencies.extend(l.latencies);
        into.errors += l.errors;
    }
    into.window += window;
}

/// `wasmtime serve`, killed on drop.
struct WasmtimeServe(Child);

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The wasmtime CLI to compare against, if one runs.
fn wasmtime_cli() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("WASMTIME_CLI").map(PathBuf::from),
        Some(PathBuf::from("wasmtime")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

async fn start_wasmtime_serve(cli: &Path, wasm: &Path, addr: &str, log: &Path) -> WasmtimeServe {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(cli)
        .args(["serve", "-S", "cli", "--addr", addr])
        .arg(wasm)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = WasmtimeServe(child);
    http_get_ready(addr, "/ready", 60).await;
    server
}

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let window = env_secs("WASMCRI_BENCH_SECS", 8);
    let warmup = env_secs("WASMCRI_BENCH_WARMUP_SECS", 2);

    let d = Daemon::start().await;
    let wasm = d.dir.path().join("http_hello.wasm");
    std::fs::write(&wasm, http_guest()).unwrap();
    import_http_hello(&d);
    let mut rt = d.rt().await;
    let (c, wasmcri_addr) = serve_http_hello(&d, &mut rt, "bench-http").await;
    let runner = runner_pid(&mut rt, &c).await;

    let cli = wasmtime_cli();
    let wasmtime_addr = format!("127.0.0.1:{}", free_port());
    let serve = match &cli {
        Some(cli) => Some(
            start_wasmtime_serve(
                cli,
                &wasm,
                &wasmtime_addr,
                &d.dir.path().join("wasmtime-serve.log"),
            )
            .await,
        ),
        None => None,
    };

    // Memory of the servers idle (after one request each) and after the load.
    let mib = |pid: i32| private_kib(pid).map_or(f64::NAN, |k| k as f64 / 1024.0);
    let serve_pid = serve.as_ref().map(|s| s.0.id() as i32);
    let idle = (mib(runner), serve_pid.map(mib));

    let (mut ours, mut theirs) = (Load::default(), Load::default());
    for _ in 0..ROUNDS {
        load(&wasmcri_addr, warmup, window, &mut ours).await;
        if serve.is_some() {
            load(&wasmtime_addr, warmup, window, &mut theirs).await;
        }
    }
    let loaded = (mib(runner), serve_pid.map(mib));
    drop(serve);

    println!(
        "\nGET / of http-hello, {CONNECTIONS} keep-alive HTTP/1.1 connections, {ROUNDS} × {} s each",
        window.as_secs()
    );
    println!(
        "| {:<28} | {:>10} | {:>8} | {:>8} | {:>7} |",
        "server", "req/s", "p50 ms", "p99 ms", "errors"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(30),
        "-".repeat(12),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(9)
    );
    ours.row("wasmcri (pod, node network)");
    let memory = |idle: f64, loaded: f64| {
        format!("private memory {idle:.1} MiB idle, {loaded:.1} MiB after the load")
    };
    match &cli {
        Some(cli) => {
            theirs.row("wasmtime serve");
            println!("\nwasmcri runner: {}", memory(idle.0, loaded.0));
            println!(
                "wasmtime serve: {}",
                memory(idle.1.unwrap_or(f64::NAN), loaded.1.unwrap_or(f64::NAN))
            );
            println!(
                "\nwasmcri / wasmtime serve: throughput {:.2}, p50 {:.2}, p99 {:.2} ({})",
                ours.rps() / theirs.rps(),
                ours.pct(0.5).as_secs_f64() / theirs.pct(0.5).as_secs_f64(),
                ours.pct(0.99).as_secs_f64() / theirs.pct(0.99).as_secs_f64(),
                cli.display()
            );
        }
        None => println!(
            "\nwasmcri runner: {}\nwasmtime serve comparison skipped: no wasmtime CLI (set WASMTIME_CLI, or put \
             wasmtime-cli 48.0.8 on PATH)",
            memory(idle.0, loaded.0)
        ),
    }
    d.shutdown().await;
}
