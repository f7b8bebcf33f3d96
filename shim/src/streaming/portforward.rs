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

use bytes::BytesMut;
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
/// Room for each read from the pod: a read takes whatever the socket holds, up to this, and
/// it goes out as one or more data frames without being copied.
const READ_CHUNK: usize = 256 * 1024;

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
        // Each read's bytes are handed to the session as they are; the buffer's space is
        // reused once the session has written them (memory is bounded by its queue).
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(READ_CHUNK);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if writer.write_bytes(buf.split().freeze()).await.is_err() {
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

/// Connects to `127.0.0.1:port` in the network namespace `netns` (the host's if `None`),
/// with `TCP_NODELAY` as Go's dialer sets it (containerd's port-forward): what the client
/// sends in small pieces reaches the pod without waiting for the previous piece's ACK.
pub(super) async fn dial(
    netns: Option<PathBuf>,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let s = dial_in(netns, port).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn dial_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::streaming::spdy::frame::{Frame, FrameReader, HeaderEncoder, Headers, Limits};
    use crate::streaming::spdy::session::{MAX_QUEUED, MAX_SEND_FRAME, SessionLimits};

    /// The most the kernel may hold of one loopback connection: the sender's and the
    /// receiver's buffers at their largest.
    fn kernel_buffers() -> usize {
        let max = |f: &str| -> usize {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
                .unwrap_or(64 << 20)
        };
        max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stops_reading_stalls_the_pod_not_the_daemon() {
        // The "pod": a host loopback server that writes as fast as it can, counting.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let written = Arc::new(AtomicUsize::new(0));
        let w = written.clone();
        let total = kernel_buffers() + 64 * MAX_SEND_FRAME + (64 << 20);
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // A stalled write gives up, so the thread ends with the test.
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            let block = vec![7u8; 1 << 20];
            while w.load(Ordering::SeqCst) < total {
                match s.write(&block) {
                    Ok(n) => w.fetch_add(n, Ordering::SeqCst),
                    Err(_) => return,
                };
            }
        });
        // The client: a session over a 64 KiB pipe that opens the two streams, then reads
        // nothing.
        const PIPE: usize = 64 * 1024;
        let (a, b) = tokio::io::duplex(PIPE);
        let (r, mut w) = tokio::io::split(b);
        let mut session = Session::start(a, SessionLimits::default());
        let mut enc = HeaderEncoder::new();
        let mut buf = Vec::new();
        for (id, kind) in [(1u32, "error"), (3, "data")] {
            Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: Headers(vec![
                    ("streamType".into(), kind.into()),
                    ("port".into(), port.to_string()),
                ]),
            }
            .encode(&mut enc, &mut buf);
        }
        w.write_all(&buf).await.unwrap();
        let error = session.streams.recv().await.unwrap();
        let data = session.streams.recv().await.unwrap();
        let fwd = tokio::spawn(forward(None, "pod".into(), error, data));
        // Until the pod's writes stall.
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = written.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        let bound = kernel_buffers() + PIPE + MAX_QUEUED + READ_CHUNK + MAX_SEND_FRAME;
        assert!(
            last <= bound,
            "the pod wrote {last} bytes to a client that reads nothing (bound {bound})"
        );
        // Once the client reads, the data flows again.
        let mut reader = FrameReader::new(r, Limits::default());
        let mut got = 0;
        while got < last + (1 << 20) {
            match reader.next().await.unwrap() {
                Some(Frame::Data {
                    stream_id: 3, data, ..
                }) => got += data.len(),
                Some(Frame::SynReply { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        fwd.abort();
    }
}
