//! A `portforward.k8s.io` session over SPDY: for every connection the client forwards it
//! opens an `error` and a `data` stream carrying the same `requestID` and `port` headers;
//! once both are there, the server connects to `127.0.0.1:<port>` inside the pod's network
//! namespace and copies bytes both ways. A failure to connect is reported as text on the
//! error stream, as the Go server does.
//!
//! The socket is made in the pod's namespace by a short-lived thread that joins it with
//! `setns` (which moves only the calling thread), connects and exits; the socket stays in
//! the namespace it was made in. No helper binary. A host-network pod is dialed on the host.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::PortForwardRequest;
use super::spdy::{Session, Stream, frame::status};
use crate::runtime::Runtime;

/// How long a connect inside the pod may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams waiting for their partner, at most.
const MAX_UNPAIRED: usize = 128;
/// How long the second direction of a connection may go on after the first ended.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one port-forward session to its end.
pub(super) async fn serve(
    rt: Arc<Runtime>,
    req: PortForwardRequest,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = session.handle.clone();
    let netns = match rt.pod(&req.pod_id) {
        Ok(p) if crate::runtime::pod_ready(&p.state()) => p.meta().netns.clone(),
        _ => {
            tracing::debug!(pod = %req.pod_id, "port-forward to a pod that is gone or not ready");
            handle.shutdown().await;
            return;
        }
    };
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    loop {
        let s = tokio::select! {
            s = session.streams.recv() => s,
            () = crate::streaming::flipped(&mut shutdown) => None,
        };
        let Some(s) = s else { break };
        let kind = s.headers.get("streamtype").unwrap_or("").to_owned();
        // Clients older than requestID pair streams by id: the data stream follows its
        // error stream.
        let request_id = match s.headers.get("requestid") {
            Some(id) => id.to_owned(),
            None if kind == "data" => s.id.saturating_sub(2).to_string(),
            None => s.id.to_string(),
        };
        // Half-closed streams do not count against the session's stream limit: bound the
        // unpaired ones here.
        if !pending.contains_key(&request_id) && pending.len() >= MAX_UNPAIRED {
            s.writer.reset(status::REFUSED_STREAM).await;
            continue;
        }
        let entry = pending.entry(request_id.clone()).or_default();
        let slot = match kind.as_str() {
            "error" => &mut entry.0,
            "data" => &mut entry.1,
            _ => {
                s.writer.reset(status::REFUSED_STREAM).await;
                continue;
            }
        };
        if slot.is_some() {
            s.writer.reset(status::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
        if let (Some(_), Some(_)) = entry {
            let (Some(error), Some(data)) = pending.remove(&request_id).expect("present") else {
                unreachable!("both checked above")
            };
            forwards.spawn(forward(netns.clone(), req.pod_id.clone(), error, data));
        }
        // Reap finished forwards so the set does not grow with the session's age.
        while forwards.try_join_next().is_some() {}
    }
    forwards.abort_all();
    handle.shutdown().await;
}

/// One forwarded connection.
async fn forward(netns: Option<PathBuf>, pod_id: String, error: Stream, mut data: Stream) {
    let port = error
        .headers
        .get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0);
    let Some(port) = port else {
        let _ = error
            .writer
            .write(format!("invalid port {:?}", error.headers.get("port")).as_bytes())
            .await;
        let _ = error.writer.close().await;
        let _ = data.writer.close().await;
        return;
    };
    let tcp = match dial(netns, port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod_id}, uid : {e}");
            tracing::debug!("{msg}");
            let _ = error.writer.write(msg.as_bytes()).await;
            let _ = error.writer.close().await;
            let _ = data.writer.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async {
        while let Some(chunk) = data.data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let writer = data.writer.clone();
    let from_pod = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if writer.write(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // As containerd does: once one direction is done, the other gets a moment to finish
    // (a client that half-closes still gets the answer), then the connection ends.
    tokio::pin!(to_pod, from_pod);
    tokio::select! {
        () = &mut to_pod => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut from_pod).await;
        }
        () = &mut from_pod => {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut to_pod).await;
        }
    }
    let _ = data.writer.close().await;
    let _ = error.writer.close().await;
}

/// Connects to `127.0.0.1:port` in the network namespace `netns` (the host's if `None`).
pub(super) async fn dial(
    netns: Option<PathBuf>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pf-dial".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // This thread alone joins the pod's namespace, and ends right after.
            let res = std::fs::File::open(&netns)
                .and_then(|f| {
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                })
                .and_then(|()| std::net::TcpStream::connect_timeout(&addr, DIAL_TIMEOUT))
                .and_then(|s| s.set_nonblocking(true).map(|()| s));
            let _ = tx.send(res);
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("dial thread ended without an answer"))??;
    tokio::net::TcpStream::from_std(std_stream)
}
