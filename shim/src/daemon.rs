//! `wasmcri serve`: opens the runtime (recovering state), binds the CRI socket and serves
//! the CRI, and wasmcri's admin service for `wasmcri image` ([`crate::server::admin`]), on it
//! until SIGTERM/SIGINT. Stopping the daemon never stops containers: runners are separate
//! processes in their own cgroups and process groups.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, bail};
use tokio::net::UnixListener;

use crate::config::Config;
use crate::server::Cri;

/// Binds the socket: parent directories created (0700), a stale socket replaced, a live one
/// refused, the socket made 0600 (root only: the CRI can run anything as root).
pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "another process is serving on {}; stop it first",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("remove stale socket {}", socket.display()))?;
    }
    // Bind under a umask that never lets the socket be group/world accessible, even briefly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    let listener = listener.with_context(|| format!("bind {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// How long in-flight RPCs may run on after a shutdown signal.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGTERM and SIGINT, caught from the moment they are installed: before the socket exists,
/// so a stop that comes as soon as the socket appears is a graceful one, not the signal's
/// default action.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn shutdown_signal(ShutdownSignals { mut term, mut int }: ShutdownSignals) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down, containers keep running"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down, containers keep running"),
    }
}

/// Runs the daemon until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let socket = config.socket.clone();
    let signals = ShutdownSignals::install().context("install signal handlers")?;
    // Fail on a bad delegate endpoint before touching any state.
    if !config.delegate.endpoint.is_empty() {
        crate::delegate::remote::socket_path(&config.delegate.endpoint)?;
    }
    let rt = crate::runtime::Runtime::open(config)
        .await
        .context("open runtime")?;
    // The runtime holds the image store's lock now; say where it is served, so that a
    // `wasmcri image` command pointed at another socket is told which one to use. Only a
    // hint: without it such a command is still refused, naming the daemon's PID.
    if let Err(e) =
        rt.announce_socket(&std::path::absolute(&socket).unwrap_or_else(|_| socket.clone()))
    {
        tracing::warn!(error = %e, "cannot record the socket in the image store lock");
    }
    let listener = bind(&socket)?;
    // Fail on a bad streaming address before serving anything.
    let streaming = crate::streaming::StreamingServer::bind(
        &rt.config().streaming.address,
        rt.config().streaming.port,
        rt.clone(),
    )
    .await?;
    let (streaming_stop, streaming_stopped) = tokio::sync::watch::channel(false);
    let streaming_stop = std::sync::Arc::new(streaming_stop);
    let streaming_task = tokio::spawn(streaming.clone().serve(streaming_stopped));
    tracing::info!(socket = %socket.display(), streaming = %streaming.addr(), "wasmcri serving CRI runtime.v1");
    let cri = Cri::new(rt.clone()).with_streaming(streaming);
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let (signalled_tx, signalled) = tokio::sync::oneshot::channel();
    let shutdown = {
        let rt = rt.clone();
        let streaming_stop = streaming_stop.clone();
        async move {
            shutdown_signal(signals).await;
            // Open event streams would otherwise hold the graceful shutdown forever.
            rt.close_events();
            // Streaming sessions end too; their exec commands are killed.
            streaming_stop.send_replace(true);
            let _ = signalled_tx.send(());
        }
    };
    let mut builder = tonic::transport::Server::builder();
    let admin = crate::server::admin::AdminService::new(rt.clone()).into_server();
    // With a delegate, the routing layer serves both CRI services; without one, the local
    // service alone, as if delegation did not exist. The admin service is wasmcri's own.
    let router = if rt.config().delegate.endpoint.is_empty() {
        builder
            .add_service(admin)
            .add_service(
                cri::v1::runtime_service_server::RuntimeServiceServer::new(cri.clone())
                    .max_decoding_message_size(16 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .add_service(
                cri::v1::image_service_server::ImageServiceServer::new(cri)
                    .max_decoding_message_size(16 << 20),
            )
    } else {
        let routing = crate::delegate::Delegating::new(cri, rt.clone())?;
        tracing::info!(delegate = %routing.endpoint(), "non-Wasm pods and images go to the delegate");
        builder
            .add_service(admin)
            .add_service(
                cri::v1::runtime_service_server::RuntimeServiceServer::new(routing.clone())
                    .max_decoding_message_size(16 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .add_service(
                cri::v1::image_service_server::ImageServiceServer::new(routing)
                    .max_decoding_message_size(16 << 20),
            )
    };
    let server = router.serve_with_incoming_shutdown(incoming, shutdown);
    // In-flight RPCs get DRAIN_TIMEOUT to finish once the signal came; a client that keeps a
    // call open longer does not keep the daemon from exiting.
    let drain_deadline = async {
        if signalled.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let res = tokio::select! {
        res = server => res,
        () = drain_deadline => {
            tracing::warn!(timeout_s = DRAIN_TIMEOUT.as_secs(), "RPCs still in flight at shutdown; exiting anyway");
            Ok(())
        }
    };
    let _ = std::fs::remove_file(&socket);
    streaming_stop.send_replace(true);
    let _ = streaming_task.await;
    rt.shutdown().await;
    res.context("gRPC server")?;
    Ok(())
}
