//! `RunMode::Http`: serve a component exporting `wasi:http/incoming-handler` on
//! `0.0.0.0:port`, the way `wasmtime serve` does: link and pre-instantiate once, fail before
//! listening if that fails, then a fresh `Store` (and WASI context) per request.
//!
//! The tokio runtime is a current-thread one created here, i.e. after the runner joined the
//! pod's network namespace, so the listener lives in the pod network. A stop signal (seen
//! through [`StopState`]) closes the listener and lets in-flight requests finish for the
//! grace period; connections are told to close after their current request.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
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
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the HTTP runtime: {e}")),
    };
    let output = match output {
        Output::Log(w) => Output::Log(w.clone()),
        Output::Discard => Output::Discard,
        Output::Inherit => Output::Inherit,
    };
    let server = Arc::new(Server {
        pre,
        spec: spec.clone(),
        env: guest_env(spec),
        output,
    });
    let grace = super::stop_grace(spec);
    runtime.block_on(accept_loop(server, port, stop.clone(), grace))
}

async fn accept_loop(
    server: Arc<Server>,
    port: u16,
    stop: Arc<StopState>,
    grace: Duration,
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
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        server.log_error(&format!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let mut shutdown = shutdown_rx.clone();
                connections.spawn(async move {
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
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = &mut conn => {}
                        _ = shutdown.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = tokio::time::sleep(STOP_POLL) => {}
        }
    };
    drop(listener);
    let _ = shutdown_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if drained {
        Outcome {
            exit_code: 0,
            message: format!(
                "stopped by {}; in-flight requests drained",
                signal_name(signal)
            ),
        }
    } else {
        connections.abort_all();
        Outcome {
            exit_code: 128 + signal,
            message: format!(
                "stopped by {}; in-flight requests cut off after {} ms",
                signal_name(signal),
                grace.as_millis()
            ),
        }
    }
}
