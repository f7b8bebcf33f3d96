//! `RunMode::Http`: serve a component exporting `wasi:http/incoming-handler` on
//! `0.0.0.0:port`, the way `wasmtime serve` does: link and pre-instantiate once, fail before
//! listening if that fails, then a fresh `Store` (and WASI context) per request.
//!
//! # Protocols
//! HTTP/1.1 (keep-alive) and HTTP/2 over cleartext with prior knowledge (h2c) on the same
//! port: hyper-util's `auto` builder reads the first bytes of a connection and picks by the
//! HTTP/2 preface. There is no `Upgrade: h2c` dance and no TLS (a Service or mesh in front
//! terminates it).
//!
//! # Threads
//! The tokio runtime is a multi-threaded one created here, i.e. after the runner joined the
//! pod's network namespace (threads inherit it) and its container cgroup, with one worker per
//! CPU the container may use ([`worker_threads`]). Each request's guest runs on a fiber of its
//! own, so requests proceed in parallel on all workers.
//!
//! # Stopping
//! A stop signal (seen through [`StopState`]) closes the listener — new connections are
//! refused from then on — and asks every connection to shut down gracefully: idle keep-alive
//! connections close at once, HTTP/1.1 connections close after their current response, HTTP/2
//! ones get a GOAWAY. In-flight requests are then left to finish with no limit of the runner's
//! own: the StopContainer timeout bounds them (the daemon's SIGKILL, reported as 137), as it
//! bounds any container's shutdown. When they are done the runner exits 0. (A spec that sets
//! `stop_grace_ms` gets that limit instead: requests still running then are cut off and the
//! runner exits 128 + the signal.)

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::guest::{Outcome, Output, StopState, guest_env, signal_name, wasi_builder};
use super::{EXIT_FAILURE, RunnerSpec};
use crate::logs::Stream;
use crate::wasm::one_line;

/// How often the accept loop looks at the stop flag set by the signal thread.
const STOP_POLL: Duration = Duration::from_millis(50);

struct RequestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for RequestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RequestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: wasmtime_wasi_http::default_hooks(),
        }
    }
}

struct Server {
    pre: ProxyPre<RequestState>,
    /// One permit per instance slot of the engine's pool ([`crate::wasm::SERVING_INSTANCES`]),
    /// held until the request's instance is dropped: a request beyond that waits for a slot
    /// instead of failing to instantiate.
    slots: Arc<tokio::sync::Semaphore>,
    spec: RunnerSpec,
    /// The guest environment, computed once rather than per request.
    env: Vec<(String, String)>,
    output: Output,
}

impl Server {
    fn log_error(&self, message: &str) {
        match &self.output {
            Output::Log(w) => {
                let _ = w.write(Stream::Stderr, format!("wasmcri: {message}\n").as_bytes());
            }
            Output::Discard | Output::Inherit => eprintln!("runner: {message}"),
        }
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let slot = self.slots.clone().acquire_owned().await?;
        let wasi = wasi_builder(&self.spec, &self.env, &self.output)
            .map_err(wasmtime::Error::msg)?
            .build();
        let mut store = Store::new(
            self.pre.engine(),
            RequestState {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        // Stop signals bump the epoch; a request in flight is allowed to finish (the signal
        // thread's grace period bounds it), so the deadline is effectively never.
        store.set_epoch_deadline(u64::MAX / 2);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            let handled = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            drop(store);
            drop(slot);
            handled
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => Err(wasmtime::format_err!("guest returned error {code:?}")),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(wasmtime::format_err!(
                    "guest never invoked `response-outparam::set`"
                )),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(wasmtime::format_err!("request task failed: {e}")),
            },
        }
    }
}

fn internal_error() -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"internal server error\n"))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

/// One tokio worker per CPU this container may use. `std::thread::available_parallelism`
/// reads the affinity mask and the cgroup CPU quota (v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`
/// and v2 `cpu.max`, rounded down, at least 1) of the cgroup the runner has joined by now; more
/// workers than the quota allows would only be throttled.
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Serves until a stop signal; returns the outcome to record.
pub(crate) fn serve(
    engine: &Engine,
    component: &Component,
    spec: &RunnerSpec,
    port: u16,
    output: &Output,
    stop: &Arc<StopState>,
) -> Outcome {
    let fail = |message: String| Outcome {
        exit_code: EXIT_FAILURE,
        message,
    };
    let mut linker = Linker::new(engine);
    let linked = wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .and_then(|()| linker.instantiate_pre(component))
        .and_then(ProxyPre::new);
    let pre = match linked {
        Ok(p) => p,
        Err(e) => return fail(format!("not servable over HTTP: {}", one_line(&e))),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("http")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the HTTP runtime: {e}")),
    };
    let output = output.clone();
    let server = Arc::new(Server {
        pre,
        slots: Arc::new(tokio::sync::Semaphore::new(
            crate::wasm::SERVING_INSTANCES as usize,
        )),
        spec: spec.clone(),
        env: guest_env(spec),
        output,
    });
    let drain_limit = spec.stop_grace_ms.map(Duration::from_millis);
    let outcome = runtime.block_on(accept_loop(server, port, stop.clone(), drain_limit));
    // Tasks still running (requests cut off at the drain limit) are dropped here, not waited
    // for.
    runtime.shutdown_background();
    outcome
}

/// Serves one connection (HTTP/1.1 or h2c) until it ends or, once `shutdown` fires, until it
/// has shut down gracefully.
async fn serve_connection(
    server: Arc<Server>,
    stream: tokio::net::TcpStream,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // Responses are written in a few pieces (head, body chunks); without this the last piece
    // can wait for the client's delayed ACK (40 ms on Linux).
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move {
            Ok::<_, Infallible>(match server.handle(req).await {
                Ok(resp) => resp,
                Err(e) => {
                    server.log_error(&format!("request failed: {}", one_line(&e)));
                    internal_error()
                }
            })
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = &mut conn => {}
        // The flag only ever goes from false to true, after this receiver was cloned.
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn accept_loop(
    server: Arc<Server>,
    port: u16,
    stop: Arc<StopState>,
    drain_limit: Option<Duration>,
) -> Outcome {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            return Outcome {
                exit_code: EXIT_FAILURE,
                message: format!("cannot listen on {addr}: {e}"),
            };
        }
    };
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let signal = loop {
        let sig = stop.signal.load(Ordering::SeqCst);
        if sig != 0 {
            break sig;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(server.clone(), stream, shutdown_rx.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    server.log_error(&format!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = tokio::time::sleep(STOP_POLL) => {}
        }
    };
    // Refuse new connections first, then ask the open ones to wind down.
    drop(listener);
    let _ = shutdown_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    let drained = match drain_limit {
        Some(limit) => tokio::time::timeout(limit, drain).await.is_ok(),
        None => {
            drain.await;
            true
        }
    };
    if drained {
        // A clean stop: no status message (see `guest::classify`).
        Outcome {
            exit_code: 0,
            message: String::new(),
        }
    } else {
        connections.abort_all();
        Outcome {
            exit_code: 128 + signal,
            message: format!(
                "stopped by {}; in-flight requests cut off after {} ms",
                signal_name(signal),
                drain_limit.unwrap_or_default().as_millis()
            ),
        }
    }
}
