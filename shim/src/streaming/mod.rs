//! The streaming server: where `kubectl exec`, `kubectl port-forward` (and `crictl`) end up.
//!
//! The CRI `Exec` and `PortForward` RPCs only validate the request and return a single-use
//! URL on this server (`http://<addr>/exec/<token>`, `/portforward/<token>`); the kubelet
//! then proxies the client's upgraded connection to it, as with containerd and CRI-O.
//!
//! - [`tokens`]: the single-use, expiring tokens behind those URLs.
//! - `server`: the HTTP/1.1 listener, the protocol handshake (`X-Stream-Protocol-Version`
//!   negotiation, `Upgrade: SPDY/3.1`), then one task per session.
//! - [`spdy`]: the SPDY/3.1 codec and session.
//! - `exec`: an exec or attach session (streams typed by `streamType`, the v4 status on the
//!   error stream), over [`crate::runtime::ExecProcess`]. An attach connects to the running
//!   guest's stdio through its runner's attach socket ([`Runtime::attach`]) and ends with
//!   `Success` when the container exits, as `cri-streaming`'s attach does.
//! - `portforward`: a `portforward.k8s.io` session, dialing inside the pod's network
//!   namespace.
//! - `websocket`: the same sessions over WebSocket (`v5`/`v4`/`v3`/`v2.channel.k8s.io`,
//!   `channel.k8s.io`, the `base64.` flavours), for clients that come straight here.
//! - [`tunnel`]: port-forward's SPDY session tunnelled through a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, client-go's WebSocket port-forward).

mod exec;
mod portforward;
mod server;
pub mod spdy;
pub mod tokens;
pub mod tunnel;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use server::negotiate;
pub use tokens::CacheFull;

use crate::runtime::Runtime;
use spdy::SessionLimits;

/// How long the client has, after the upgrade, to open every stream the request needs.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Exec subprotocols served over SPDY, preferred first.
pub const EXEC_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port-forward subprotocol served over SPDY.
pub const PORT_FORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// Resolves once `rx` holds `true` (or its sender is gone), holding no borrow of the
/// channel across an await (so the futures that `select!` on it stay `Send`).
pub(crate) async fn flipped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// An exec (or an attach) the kubelet asked for, waiting for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// Full container ID.
    pub container_id: String,
    /// argv (empty for an attach).
    pub cmd: Vec<String>,
    /// Attach to the running guest instead of starting `cmd`.
    pub attach: bool,
    /// Stream stdin.
    pub stdin: bool,
    /// Stream stdout.
    pub stdout: bool,
    /// Stream stderr.
    pub stderr: bool,
    /// Run on a pseudo-terminal (stdout and stderr are then one stream).
    pub tty: bool,
}

/// A port-forward the kubelet asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    /// Full pod sandbox ID.
    pub pod_id: String,
    /// The ports the CRI request named (WebSocket clients that give none in the URL get
    /// these).
    pub ports: Vec<u16>,
}

/// What a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// `/exec/<token>`.
    Exec(ExecRequest),
    /// `/attach/<token>` (an [`ExecRequest`] with `attach` set).
    Attach(ExecRequest),
    /// `/portforward/<token>`.
    PortForward(PortForwardRequest),
}

impl Pending {
    fn path_kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The configured address does not parse.
    #[error("invalid streaming address {addr:?}: {reason}")]
    Address {
        /// What was configured.
        addr: String,
        /// Why it is not an address.
        reason: String,
    },
    /// Binding the listener failed.
    #[error("bind streaming server on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The streaming server (one per daemon).
pub struct StreamingServer {
    addr: SocketAddr,
    tokens: tokens::TokenCache<Pending>,
    rt: Arc<Runtime>,
    limits: SessionLimits,
    listener: std::sync::Mutex<Option<tokio::net::TcpListener>>,
}

impl StreamingServer {
    /// Binds `address:port` (port 0: a random one). Serving starts with
    /// [`StreamingServer::serve`].
    pub async fn bind(
        address: &str,
        port: u16,
        rt: Arc<Runtime>,
    ) -> Result<Arc<Self>, StreamingError> {
        let ip: std::net::IpAddr = address.parse().map_err(|e| StreamingError::Address {
            addr: address.to_owned(),
            reason: format!("{e}"),
        })?;
        let want = SocketAddr::new(ip, port);
        let listener = tokio::net::TcpListener::bind(want)
            .await
            .map_err(|source| StreamingError::Bind { addr: want, source })?;
        let mut addr = listener
            .local_addr()
            .map_err(|source| StreamingError::Bind { addr: want, source })?;
        // A wildcard address is not something the kubelet can dial: name loopback instead.
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Ok(Arc::new(Self {
            addr,
            tokens: tokens::TokenCache::new(),
            rt,
            limits: SessionLimits::default(),
            listener: std::sync::Mutex::new(Some(listener)),
        }))
    }

    /// The address URLs name.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A single-use URL for `req`.
    pub fn url_for(&self, req: Pending) -> Result<String, CacheFull> {
        let kind = req.path_kind();
        let token = self.tokens.insert(req)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// Serves until `shutdown` flips to `true`; open sessions are ended then too (their exec
    /// commands killed).
    pub async fn serve(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let listener = self
            .listener
            .lock()
            .expect("listener lock")
            .take()
            .expect("serve is called once");
        server::accept_loop(self, listener, shutdown).await;
    }
}
