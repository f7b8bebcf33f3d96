//! The server side of a SPDY/3.1 session over an upgraded connection: a reader task that
//! accepts the client's streams and routes their data, a writer task that owns the write
//! half and the header compressor, and per-stream handles for the application.
//!
//! # Flow control
//! Go's spdystream (the kubelet, kubectl, client-go) neither sends WINDOW_UPDATE nor honours
//! windows, while other SPDY/3.1 implementations (node's spdy-transport) do and reset a
//! stream that overruns them. So windows are enforced on what we send, and WINDOW_UPDATEs
//! sent for what we receive, only once the peer has shown it does flow control (a
//! WINDOW_UPDATE, or SETTINGS with an initial window size). Such a peer gets session credit
//! back as soon as data arrives and stream credit as the application consumes it, so it
//! never has more than a window outstanding per stream (and a stream that overruns its
//! window is reset). Against a peer that does not, TCP is the back-pressure: a stream holds
//! at most [`MAX_BUFFERED`] unread bytes and the reader waits for room, stalling the
//! connection, as spdystream does.
//!
//! # Sending
//! Bulk data (a port-forward's download) is what this path is tuned for: a writer hands its
//! buffer over as [`Bytes`] ([`StreamWriter::write_bytes`]), it is cut into frames of up to
//! [`MAX_SEND_FRAME`] bytes without copying, and the writer task sends everything queued with
//! one vectored write (frame headers and payloads side by side, never concatenated). Queued
//! data is bounded in bytes per session ([`MAX_QUEUED`]): against a client that reads slowly
//! the writers wait, the daemon does not buffer.
//!
//! # Bounds
//! Frames and header blocks are bounded by [`Limits`]; at most [`SessionLimits::max_streams`]
//! streams are open at once (more are refused with RST_STREAM); a session with no frame from
//! the peer for [`SessionLimits::idle_timeout`] is closed.

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::frame::{
    self, FLAG_FIN, Frame, FrameError, FrameReader, HeaderEncoder, Headers, Limits,
    SETTINGS_INITIAL_WINDOW_SIZE, status,
};

/// The window every stream and the session start with (SPDY/3.1).
const DEFAULT_WINDOW: i64 = 64 * 1024;
/// Largest data frame we send. Go's spdystream (kubectl, the kubelet) reads each frame with
/// a few small reads of its own and hands it to the stream as one buffer, so per-frame costs
/// on both sides are amortised over this much data; the wire allows 16 MiB - 1.
pub const MAX_SEND_FRAME: usize = 256 * 1024;
/// Data bytes queued for the writer task, per session, at most (see "Sending" above).
pub const MAX_QUEUED: usize = 1024 * 1024;
/// Payloads shorter than this are copied next to their frame header rather than given an
/// I/O vector of their own.
const COPY_BELOW: usize = 4 * 1024;
/// Encoded control frames, headers and small payloads gathered into one write, at most
/// (past it the batch is written and the next one started).
const MAX_BATCH_HEAD: usize = 256 * 1024;
/// I/O vectors per vectored write (well under every kernel's `IOV_MAX`).
const MAX_IOVECS: usize = 64;
/// Unread bytes a stream may hold from a peer without flow control before the reader waits.
const MAX_BUFFERED: usize = 256 * 1024;
/// Unread bytes a stream may hold from a flow-controlling peer (twice the window we grant,
/// for slack): more is a flow-control violation.
const MAX_BUFFERED_FLOW_CONTROLLED: usize = 2 * DEFAULT_WINDOW as usize;
/// RST_STREAM status for a stream that overran its window.
const FLOW_CONTROL_ERROR: u32 = 7;
/// How long a closed session waits for the peer to close its side.
const LINGER: Duration = Duration::from_secs(5);
/// How far below the highest stream id a new stream may be (ids of the last this many
/// streams are remembered, so none is accepted twice).
const REORDER_WINDOW: u32 = 1024;

/// Session-wide bounds.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Frame and header-block bounds.
    pub frame: Limits,
    /// Streams open at once.
    pub max_streams: usize,
    /// Close the session after this long without a frame from the peer.
    pub idle_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            frame: Limits::default(),
            max_streams: 256,
            // containerd's default stream_idle_timeout.
            idle_timeout: Duration::from_secs(4 * 3600),
        }
    }
}

/// Why a write to a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The session has ended.
    #[error("SPDY session closed")]
    SessionClosed,
    /// The peer reset the stream.
    #[error("stream {0} was reset by the peer")]
    Reset(u32),
}

enum Out {
    Frame(Frame),
    /// A data frame whose payload is queued without copying, holding its share of
    /// [`MAX_QUEUED`] until written.
    Data {
        stream_id: u32,
        data: Bytes,
        permit: OwnedSemaphorePermit,
    },
    /// GOAWAY, then close the connection.
    Shutdown(u32),
}

#[derive(Default)]
struct Flow {
    /// The peer does flow control (see the module docs).
    enabled: bool,
    initial: i64,
    session: i64,
    windows: HashMap<u32, i64>,
    reset: HashSet<u32>,
    closed: bool,
}

struct Shared {
    out: mpsc::Sender<Out>,
    /// [`MAX_QUEUED`] permits, one per byte of data queued for the writer.
    queued: Arc<Semaphore>,
    /// Highest stream id accepted, for GOAWAY (a peer fails streams above it).
    last_accepted: std::sync::atomic::AtomicU32,
    flow: Mutex<Flow>,
    notify: Notify,
    closed_tx: watch::Sender<bool>,
}

impl Shared {
    /// The GOAWAY that ends the session with `status`, naming the last stream accepted.
    fn go_away(&self, status: u32) -> Frame {
        Frame::GoAway {
            last_good_stream_id: self.last_accepted.load(std::sync::atomic::Ordering::SeqCst),
            status,
        }
    }

    fn close(&self) {
        self.flow.lock().expect("flow lock").closed = true;
        self.notify.notify_waiters();
        self.queued.close();
        self.closed_tx.send_replace(true);
    }
}

/// A handle on the whole session (cheap to clone).
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl SessionHandle {
    /// Resolves once the session has ended (the peer went away, a protocol error, idle
    /// timeout, or [`SessionHandle::shutdown`]).
    pub async fn closed(&self) {
        let mut rx = self.shared.closed_tx.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Sends GOAWAY after everything queued so far and closes the connection.
    pub async fn shutdown(&self) {
        let _ = self.shared.out.send(Out::Shutdown(status::OK)).await;
    }
}

/// One stream the client opened.
pub struct Stream {
    /// Its id.
    pub id: u32,
    /// Its SYN_STREAM headers.
    pub headers: Headers,
    /// Data from the client; ends when the client half-closes or resets the stream, or the
    /// session ends.
    pub data: Inbound,
    /// Our direction of the stream.
    pub writer: StreamWriter,
}

/// How much unread data a stream holds, shared by the reader and the [`Inbound`] end.
#[derive(Default)]
struct Buffered {
    bytes: std::sync::atomic::AtomicUsize,
    space: Notify,
}

/// The client's direction of one stream.
pub struct Inbound {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    buffered: Arc<Buffered>,
    shared: Arc<Shared>,
}

impl Inbound {
    /// The next chunk of data; `None` once the client half-closed or reset the stream, or
    /// the session ended. Consuming it grants the peer stream credit (see the module docs).
    pub async fn recv(&mut self) -> Option<Bytes> {
        let b = self.rx.recv().await?;
        self.buffered
            .bytes
            .fetch_sub(b.len(), std::sync::atomic::Ordering::SeqCst);
        self.buffered.space.notify_waiters();
        if !b.is_empty() && self.shared.flow.lock().expect("flow lock").enabled {
            let _ = self
                .shared
                .out
                .send(Out::Frame(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta: b.len() as u32,
                }))
                .await;
        }
        Some(b)
    }
}

/// The reader's end of one stream's inbound data (`tx` gone once the client half-closed).
struct InboundTx {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    buffered: Arc<Buffered>,
}

/// Our direction of one stream (cheap to clone).
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    shared: Arc<Shared>,
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends a copy of `data` (see [`StreamWriter::write_bytes`]).
    pub async fn write(&self, data: &[u8]) -> Result<(), StreamError> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Sends `data` without copying it, in frames of at most [`MAX_SEND_FRAME`] bytes,
    /// within the peer's windows if it does flow control. Returns once every frame is queued
    /// for the writer task; waits while the session already has [`MAX_QUEUED`] bytes queued.
    pub async fn write_bytes(&self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(MAX_SEND_FRAME)).await?;
            let permit = self
                .shared
                .queued
                .clone()
                .acquire_many_owned(u32::try_from(n).expect("a frame is under 16 MiB"))
                .await
                .map_err(|_| StreamError::SessionClosed)?;
            self.shared
                .out
                .send(Out::Data {
                    stream_id: self.id,
                    data: data.split_to(n),
                    permit,
                })
                .await
                .map_err(|_| StreamError::SessionClosed)?;
        }
        Ok(())
    }

    /// Half-closes our direction (an empty data frame with FIN).
    pub async fn close(&self) -> Result<(), StreamError> {
        let r = self
            .send(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
        self.forget();
        r
    }

    /// Drops this stream's flow-control state: our direction is over, and a long session
    /// (one port-forward, many connections) must not accumulate it.
    fn forget(&self) {
        let mut f = self.shared.flow.lock().expect("flow lock");
        f.windows.remove(&self.id);
        f.reset.remove(&self.id);
    }

    /// Resets the stream.
    pub async fn reset(&self, status: u32) {
        let _ = self
            .send(Frame::RstStream {
                stream_id: self.id,
                status,
            })
            .await;
        self.forget();
    }

    async fn send(&self, f: Frame) -> Result<(), StreamError> {
        self.shared
            .out
            .send(Out::Frame(f))
            .await
            .map_err(|_| StreamError::SessionClosed)
    }

    /// Waits until `want` bytes (or fewer, at least one) may be sent, and takes them from the
    /// windows.
    async fn reserve(&self, want: usize) -> Result<usize, StreamError> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut f = self.shared.flow.lock().expect("flow lock");
                if f.closed {
                    return Err(StreamError::SessionClosed);
                }
                if f.reset.contains(&self.id) {
                    return Err(StreamError::Reset(self.id));
                }
                if !f.enabled {
                    return Ok(want);
                }
                let initial = f.initial;
                let stream = *f.windows.entry(self.id).or_insert(initial);
                let avail = stream.min(f.session);
                if avail > 0 {
                    let n = (avail as usize).min(want);
                    f.session -= n as i64;
                    *f.windows.get_mut(&self.id).expect("inserted above") -= n as i64;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }
}

/// A running session: the streams the client opens, in order.
pub struct Session {
    /// New streams, already answered with SYN_REPLY.
    pub streams: mpsc::Receiver<Stream>,
    /// The session handle.
    pub handle: SessionHandle,
}

impl Session {
    /// Starts serving SPDY on `io` (the connection after the 101 response).
    pub fn start<IO>(io: IO, limits: SessionLimits) -> Session
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let shared = Arc::new(Shared {
            out: out_tx,
            queued: Arc::new(Semaphore::new(MAX_QUEUED)),
            last_accepted: Default::default(),
            flow: Mutex::new(Flow {
                initial: DEFAULT_WINDOW,
                session: DEFAULT_WINDOW,
                ..Default::default()
            }),
            notify: Notify::new(),
            closed_tx: watch::channel(false).0,
        });
        let (streams_tx, streams) = mpsc::channel(limits.max_streams.max(1));
        tokio::spawn(write_loop(w, out_rx, shared.clone()));
        tokio::spawn(read_loop(r, limits, shared.clone(), streams_tx));
        Session {
            streams,
            handle: SessionHandle { shared },
        }
    }
}

/// What the writer task sends with its next write: small frames and frame headers encoded
/// into `head`, large payloads by reference, in order.
#[derive(Default)]
struct Batch {
    head: Vec<u8>,
    parts: Vec<Part>,
    /// Queue permits of the payloads in `parts`, released once they are written.
    permits: Vec<OwnedSemaphorePermit>,
    /// Gathers `parts` for a writer without vectored writes.
    flat: Vec<u8>,
}

enum Part {
    /// `head[start..end]`.
    Head(usize, usize),
    Payload(Bytes),
}

impl Part {
    fn bytes<'a>(&'a self, head: &'a [u8]) -> &'a [u8] {
        match self {
            Part::Head(s, e) => &head[*s..*e],
            Part::Payload(b) => b,
        }
    }
}

impl Batch {
    /// Appends what `encode` writes to `head`, extending the last part if it is a head too.
    fn push_head(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let start = self.head.len();
        encode(&mut self.head);
        let end = self.head.len();
        match self.parts.last_mut() {
            Some(Part::Head(_, e)) if *e == start => *e = end,
            _ => self.parts.push(Part::Head(start, end)),
        }
    }

    fn push_frame(&mut self, f: &Frame, enc: &mut HeaderEncoder) {
        self.push_head(|h| f.encode(enc, h));
    }

    fn push_data(&mut self, stream_id: u32, data: Bytes, permit: OwnedSemaphorePermit) {
        if data.len() < COPY_BELOW {
            self.push_head(|h| {
                frame::encode_data_header(stream_id, 0, data.len(), h);
                h.extend_from_slice(&data);
            });
        } else {
            self.push_head(|h| frame::encode_data_header(stream_id, 0, data.len(), h));
            self.parts.push(Part::Payload(data));
        }
        self.permits.push(permit);
    }

    /// Writes everything, then empties the batch (releasing its queue permits).
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> std::io::Result<()> {
        if w.is_write_vectored() {
            // Index of the first part not fully written, and how much of it was.
            let (mut i, mut off) = (0, 0);
            while i < self.parts.len() {
                let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOVECS);
                slices.push(IoSlice::new(&self.parts[i].bytes(&self.head)[off..]));
                for p in self.parts[i + 1..].iter().take(MAX_IOVECS - 1) {
                    slices.push(IoSlice::new(p.bytes(&self.head)));
                }
                let mut n = w.write_vectored(&slices).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                while n > 0 {
                    let left = self.parts[i].bytes(&self.head).len() - off;
                    if n >= left {
                        n -= left;
                        i += 1;
                        off = 0;
                    } else {
                        off += n;
                        n = 0;
                    }
                }
            }
        } else {
            self.flat.clear();
            for p in &self.parts {
                self.flat.extend_from_slice(p.bytes(&self.head));
            }
            w.write_all(&self.flat).await?;
        }
        w.flush().await?;
        self.head.clear();
        self.parts.clear();
        self.permits.clear();
        Ok(())
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    shared: Arc<Shared>,
) {
    let mut enc = HeaderEncoder::new();
    let mut batch = Batch::default();
    let mut closed = shared.closed_tx.subscribe();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            () = crate::streaming::flipped(&mut closed) => None,
        };
        let Some(mut msg) = msg else { break };
        // Everything already queued goes into one write (data is bounded by the queue
        // permits, the rest here).
        let shutdown = loop {
            match msg {
                Out::Frame(f) => batch.push_frame(&f, &mut enc),
                Out::Data {
                    stream_id,
                    data,
                    permit,
                } => batch.push_data(stream_id, data, permit),
                Out::Shutdown(code) => {
                    batch.push_frame(&shared.go_away(code), &mut enc);
                    break true;
                }
            }
            if batch.head.len() >= MAX_BATCH_HEAD {
                break false;
            }
            match rx.try_recv() {
                Ok(m) => msg = m,
                Err(_) => break false,
            }
        };
        if batch.write_to(&mut w).await.is_err() {
            break;
        }
        if shutdown {
            let _ = w.shutdown().await;
            break;
        }
    }
    shared.close();
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: R,
    limits: SessionLimits,
    shared: Arc<Shared>,
    streams_tx: mpsc::Sender<Stream>,
) {
    let mut reader = FrameReader::new(r, limits.frame);
    let mut inbound: HashMap<u32, InboundTx> = HashMap::new();
    let mut last_id = 0u32;
    let mut recent: HashSet<u32> = HashSet::new();
    let mut recent_order: std::collections::VecDeque<u32> = Default::default();
    let mut closed = shared.closed_tx.subscribe();
    let result: Result<(), FrameError> = loop {
        let next = tokio::select! {
            n = tokio::time::timeout(limits.idle_timeout, reader.next()) => n,
            () = crate::streaming::flipped(&mut closed) => {
                // We sent GOAWAY and closed our side. Read on (discarding) until the peer
                // closes too: closing with its frames unread would make the kernel answer
                // them with a reset, which can destroy what we sent before it is read.
                let mut r = reader.into_inner();
                let mut sink = vec![0u8; 16 * 1024];
                let _ = tokio::time::timeout(LINGER, async {
                    while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                shared.close();
                return;
            }
        };
        let frame = match next {
            Err(_) => {
                tracing::debug!("SPDY session idle; closing");
                break Ok(());
            }
            Ok(Err(e)) => break Err(e),
            Ok(Ok(None)) => break Ok(()),
            Ok(Ok(Some(f))) => f,
        };
        let send = |f: Frame| {
            let out = shared.out.clone();
            async move { out.send(Out::Frame(f)).await.is_ok() }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Client streams are odd and new. SPDY wants them increasing, but node's
                // spdy-transport sends the SYN_STREAMs of streams it opened together out of
                // order, so a recent unused id is accepted; anything else is refused with
                // RST_STREAM, as Go's spdystream does.
                if stream_id % 2 == 0
                    || recent.contains(&stream_id)
                    || stream_id.saturating_add(REORDER_WINDOW) <= last_id
                {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::PROTOCOL_ERROR,
                    })
                    .await;
                    continue;
                }
                last_id = last_id.max(stream_id);
                shared
                    .last_accepted
                    .store(last_id, std::sync::atomic::Ordering::SeqCst);
                recent.insert(stream_id);
                recent_order.push_back(stream_id);
                if recent_order.len() > REORDER_WINDOW as usize
                    && let Some(old) = recent_order.pop_front()
                {
                    recent.remove(&old);
                }
                inbound.retain(|_, i| i.tx.as_ref().is_some_and(|t| !t.is_closed()));
                if inbound.len() >= limits.max_streams {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::REFUSED_STREAM,
                    })
                    .await;
                    continue;
                }
                let (tx, rx) = mpsc::unbounded_channel();
                let buffered = Arc::new(Buffered::default());
                let tx = if flags & FLAG_FIN != 0 {
                    None
                } else {
                    Some(tx)
                };
                inbound.insert(
                    stream_id,
                    InboundTx {
                        tx,
                        buffered: buffered.clone(),
                    },
                );
                let data = Inbound {
                    id: stream_id,
                    rx,
                    buffered,
                    shared: shared.clone(),
                };
                // Go's spdystream replies with no headers and its clients ignore them; peers
                // that map SPDY onto HTTP (node's spdy-transport) reset a reply without the
                // SPDY/3 response pseudo-headers.
                if !send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Headers(vec![
                        (":status".into(), "200".into()),
                        (":version".into(), "HTTP/1.1".into()),
                    ]),
                })
                .await
                {
                    break Ok(());
                }
                let stream = Stream {
                    id: stream_id,
                    headers,
                    data,
                    writer: StreamWriter {
                        id: stream_id,
                        shared: shared.clone(),
                    },
                };
                if streams_tx.send(stream).await.is_err() {
                    // Nobody accepts streams any more.
                    send(Frame::RstStream {
                        stream_id,
                        status: status::REFUSED_STREAM,
                    })
                    .await;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let len = data.len();
                let flow_controlled = shared.flow.lock().expect("flow lock").enabled;
                if flow_controlled && len > 0 {
                    // Session credit at once: one unread stream must not starve the others.
                    send(Frame::WindowUpdate {
                        stream_id: 0,
                        delta: len as u32,
                    })
                    .await;
                }
                let Some(entry) = inbound.get_mut(&stream_id).filter(|e| e.tx.is_some()) else {
                    send(Frame::RstStream {
                        stream_id,
                        status: status::INVALID_STREAM,
                    })
                    .await;
                    continue;
                };
                if len > 0 {
                    let limit = if flow_controlled {
                        MAX_BUFFERED_FLOW_CONTROLLED
                    } else {
                        MAX_BUFFERED
                    };
                    let fits = |e: &InboundTx| {
                        e.buffered.bytes.load(std::sync::atomic::Ordering::SeqCst) + len <= limit
                    };
                    if flow_controlled && !fits(entry) {
                        entry.tx = None;
                        send(Frame::RstStream {
                            stream_id,
                            status: FLOW_CONTROL_ERROR,
                        })
                        .await;
                        continue;
                    }
                    // Without flow control: wait for the application to read (TCP pushes back).
                    while !fits(entry) && entry.tx.as_ref().is_some_and(|t| !t.is_closed()) {
                        let space = entry.buffered.space.notified();
                        tokio::pin!(space);
                        space.as_mut().enable();
                        if fits(entry) {
                            break;
                        }
                        tokio::select! {
                            () = space => {}
                            () = crate::streaming::flipped(&mut closed) => break,
                        }
                    }
                    entry
                        .buffered
                        .bytes
                        .fetch_add(len, std::sync::atomic::Ordering::SeqCst);
                    if entry.tx.as_ref().is_some_and(|t| t.send(data).is_err()) {
                        // The application no longer reads this stream: drop its data.
                        entry.tx = None;
                    }
                }
                if flags & FLAG_FIN != 0 {
                    entry.tx = None;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                inbound.remove(&stream_id);
                shared
                    .flow
                    .lock()
                    .expect("flow lock")
                    .reset
                    .insert(stream_id);
                shared.notify.notify_waiters();
            }
            Frame::Settings { entries } => {
                let mut f = shared.flow.lock().expect("flow lock");
                for (_, id, value) in entries {
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let delta = i64::from(value) - f.initial;
                        f.enabled = true;
                        f.initial = i64::from(value);
                        for w in f.windows.values_mut() {
                            *w += delta;
                        }
                    }
                }
                drop(f);
                shared.notify.notify_waiters();
            }
            Frame::Ping { id } => {
                // Odd ids are the client's; even ones would be answers to ours (we send none).
                if id % 2 == 1 && !send(Frame::Ping { id }).await {
                    break Ok(());
                }
            }
            Frame::GoAway { .. } => break Ok(()),
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0
                    && let Some(entry) = inbound.get_mut(&stream_id)
                {
                    entry.tx = None;
                }
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut f = shared.flow.lock().expect("flow lock");
                f.enabled = true;
                if stream_id == 0 {
                    f.session += i64::from(delta);
                } else if let Some(w) = f.windows.get_mut(&stream_id) {
                    // Only streams we are sending on: credit for others would only pile up.
                    *w += i64::from(delta);
                }
                drop(f);
                shared.notify.notify_waiters();
            }
            Frame::SynReply { .. } | Frame::Unknown { .. } => {}
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "SPDY session ended by a protocol error");
        let code = match e {
            FrameError::Io(_) => None,
            _ => Some(status::PROTOCOL_ERROR),
        };
        if let Some(code) = code {
            let _ = shared.out.send(Out::Shutdown(code)).await;
            // Give the writer a moment to deliver the GOAWAY.
            let mut closed = shared.closed_tx.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(1), closed.wait_for(|c| *c)).await;
        }
    }
    shared.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// The client side of a test session: raw frames over a duplex pipe.
    struct Peer {
        enc: HeaderEncoder,
        reader: FrameReader<tokio::io::ReadHalf<DuplexStream>>,
        w: tokio::io::WriteHalf<DuplexStream>,
    }

    fn pair(limits: SessionLimits) -> (Session, Peer) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(b);
        let session = Session::start(a, limits);
        (
            session,
            Peer {
                enc: HeaderEncoder::new(),
                reader: FrameReader::new(r, Limits::default()),
                w,
            },
        )
    }

    impl Peer {
        async fn send(&mut self, f: Frame) {
            let mut buf = Vec::new();
            f.encode(&mut self.enc, &mut buf);
            self.w.write_all(&buf).await.unwrap();
        }
        async fn recv(&mut self) -> Option<Frame> {
            tokio::time::timeout(Duration::from_secs(5), self.reader.next())
                .await
                .expect("frame in time")
                .unwrap()
        }
        async fn open(&mut self, id: u32, kind: &str, fin: bool) {
            self.send(Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: if fin { FLAG_FIN } else { 0 },
                headers: Headers(vec![("streamType".into(), kind.into())]),
            })
            .await;
        }
    }

    #[tokio::test]
    async fn streams_are_accepted_data_flows_and_ping_is_answered() {
        let (mut s, mut p) = pair(SessionLimits::default());
        p.open(1, "stdin", false).await;
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        let mut st = s.streams.recv().await.unwrap();
        assert_eq!(st.headers.get("streamtype"), Some("stdin"));
        p.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"abc"),
        })
        .await;
        assert_eq!(st.data.recv().await.unwrap(), Bytes::from_static(b"abc"));
        assert!(st.data.recv().await.is_none(), "FIN ends the data");
        p.send(Frame::Ping { id: 5 }).await;
        assert_eq!(p.recv().await, Some(Frame::Ping { id: 5 }));
        st.writer.write(b"out").await.unwrap();
        st.writer.close().await.unwrap();
        assert_eq!(
            p.recv().await,
            Some(Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"out")
            })
        );
        assert!(matches!(
            p.recv().await,
            Some(Frame::Data {
                flags: FLAG_FIN,
                ..
            })
        ));
        s.handle.shutdown().await;
        assert!(matches!(
            p.recv().await,
            Some(Frame::GoAway { status: 0, .. })
        ));
        s.handle.closed().await;
    }

    #[tokio::test]
    async fn windows_are_honoured_once_the_peer_does_flow_control() {
        let (mut s, mut p) = pair(SessionLimits::default());
        p.send(Frame::Settings {
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 10)],
        })
        .await;
        p.open(1, "stdout", true).await;
        p.recv().await;
        let st = s.streams.recv().await.unwrap();
        let w = st.writer.clone();
        let t = tokio::spawn(async move { w.write(&[1u8; 25]).await });
        let mut got = 0;
        let mut sizes = Vec::new();
        while got < 10 {
            if let Some(Frame::Data { data, .. }) = p.recv().await {
                got += data.len();
                sizes.push(data.len());
            }
        }
        assert_eq!(sizes, vec![10]);
        // Nothing more until credit arrives.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), p.reader.next())
                .await
                .is_err()
        );
        p.send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 100,
        })
        .await;
        while got < 25 {
            if let Some(Frame::Data { data, .. }) = p.recv().await {
                got += data.len();
            }
        }
        t.await.unwrap().unwrap();
        // Inbound data is credited back to a flow-controlling peer.
        let (mut s2, mut p2) = pair(SessionLimits::default());
        p2.send(Frame::WindowUpdate {
            stream_id: 0,
            delta: 1,
        })
        .await;
        p2.open(1, "stdin", false).await;
        p2.recv().await;
        let mut st2 = s2.streams.recv().await.unwrap();
        p2.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"12345"),
        })
        .await;
        // Session credit comes at once, stream credit once the data is read.
        assert_eq!(
            p2.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 0,
                delta: 5
            })
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(200), p2.reader.next())
                .await
                .is_err()
        );
        st2.data.recv().await.unwrap();
        assert_eq!(
            p2.recv().await,
            Some(Frame::WindowUpdate {
                stream_id: 1,
                delta: 5
            })
        );
        // A stream that overruns the window it was granted is reset.
        p2.send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from(vec![0u8; MAX_BUFFERED_FLOW_CONTROLLED + 1]),
        })
        .await;
        let mut frames = Vec::new();
        while !frames.iter().any(|f| matches!(f, Frame::RstStream { .. })) {
            frames.push(p2.recv().await.unwrap());
        }
        assert!(
            frames.contains(&Frame::RstStream {
                stream_id: 1,
                status: FLOW_CONTROL_ERROR
            }),
            "{frames:?}"
        );
    }

    #[tokio::test]
    async fn too_many_streams_are_refused_and_protocol_errors_end_the_session() {
        let limits = SessionLimits {
            max_streams: 2,
            ..Default::default()
        };
        let (mut s, mut p) = pair(limits);
        for id in [1, 3, 5] {
            p.open(id, "data", false).await;
        }
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply { stream_id: 1, .. })
        ));
        assert!(matches!(
            p.recv().await,
            Some(Frame::SynReply { stream_id: 3, .. })
        ));
        assert_eq!(
            p.recv().await,
            Some(Frame::RstStream {
                stream_id: 5,
                status: status::REFUSED_STREAM
            })
        );
        let _a = s.streams.recv().await.unwrap();
        // Out of order is fine (node does it); reused or even ids are refused.
        p.open(9, "data", false).await;
        p.open(7, "data", false).await;
        p.open(3, "data", false).await;
        p.open(4, "data", false).await;
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(p.recv().await.unwrap());
        }
        assert!(seen.contains(&Frame::RstStream {
            stream_id: 3,
            status: status::PROTOCOL_ERROR
        }));
        assert!(seen.contains(&Frame::RstStream {
            stream_id: 4,
            status: status::PROTOCOL_ERROR
        }));
        // A malformed frame is a session error: GOAWAY, then the end.
        p.w.write_all(&[0x80, 3, 0, 6, 0, 0, 0, 3, 1, 2, 3])
            .await
            .unwrap();
        assert_eq!(
            p.recv().await,
            Some(Frame::GoAway {
                last_good_stream_id: 9,
                status: status::PROTOCOL_ERROR
            })
        );
        s.handle.closed().await;
    }

    #[tokio::test]
    async fn finished_streams_leave_no_flow_state_behind() {
        let (mut s, mut p) = pair(SessionLimits::default());
        p.send(Frame::Settings {
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
        })
        .await;
        for id in [1, 3, 5] {
            p.open(id, "data", false).await;
            p.recv().await;
            let st = s.streams.recv().await.unwrap();
            st.writer.write(b"x").await.unwrap();
            st.writer.close().await.unwrap();
            // Credit for a stream we finished, or never wrote on, is not kept.
            p.send(Frame::WindowUpdate {
                stream_id: id,
                delta: 1,
            })
            .await;
            p.send(Frame::WindowUpdate {
                stream_id: id + 100,
                delta: 1,
            })
            .await;
        }
        p.send(Frame::Ping { id: 1 }).await;
        while p.recv().await != Some(Frame::Ping { id: 1 }) {}
        let f = s.handle.shared.flow.lock().unwrap();
        assert!(f.windows.is_empty(), "{:?}", f.windows);
        assert!(f.reset.is_empty());
    }

    /// A transport that takes at most `max` bytes per write, vectored or not, as a socket
    /// with a full buffer does.
    struct Trickle {
        got: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl Trickle {
        fn take(&mut self, bufs: &[IoSlice<'_>]) -> usize {
            assert!(bufs.len() <= MAX_IOVECS);
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            n
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(self.take(&[IoSlice::new(buf)])))
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(self.take(bufs)))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_batches_survive_partial_writes_byte_for_byte() {
        const BUDGET: usize = 16 << 20;
        let budget = Arc::new(Semaphore::new(BUDGET));
        let mut enc = HeaderEncoder::new();
        let mut batch = Batch::default();
        let mut expect = Vec::new();
        let mut expect_enc = HeaderEncoder::new();
        // Frames of every kind and payloads on both sides of COPY_BELOW, more parts than
        // one vectored write takes.
        for i in 0..100u32 {
            let len = [0, 1, COPY_BELOW - 1, COPY_BELOW, 70_000][i as usize % 5];
            let data = Bytes::from((0..len).map(|b| (b as u32 + i) as u8).collect::<Vec<_>>());
            if i % 7 == 0 {
                let f = Frame::WindowUpdate {
                    stream_id: i,
                    delta: 9,
                };
                batch.push_frame(&f, &mut enc);
                f.encode(&mut expect_enc, &mut expect);
            }
            let permit = budget.clone().acquire_many_owned(len as u32).await.unwrap();
            batch.push_data(2 * i + 1, data.clone(), permit);
            Frame::Data {
                stream_id: 2 * i + 1,
                flags: 0,
                data,
            }
            .encode(&mut expect_enc, &mut expect);
        }
        let mut t = Trickle {
            got: Vec::new(),
            max: 7_777,
            calls: 0,
        };
        batch.write_to(&mut t).await.unwrap();
        assert_eq!(t.got.len(), expect.len());
        assert!(t.got == expect, "bytes differ");
        assert!(t.calls >= expect.len() / 7_777);
        // Written: the payloads' queue permits are back, the batch is empty.
        assert_eq!(budget.available_permits(), BUDGET);
        assert!(batch.parts.is_empty() && batch.head.is_empty());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_makes_writers_wait_not_the_daemon_buffer() {
        // The transport holds 64 KiB: past that, only the session's queue can hold data.
        const PIPE: usize = 64 * 1024;
        let (a, b) = tokio::io::duplex(PIPE);
        let (r, w) = tokio::io::split(b);
        let mut s = Session::start(a, SessionLimits::default());
        let mut p = Peer {
            enc: HeaderEncoder::new(),
            reader: FrameReader::new(r, Limits::default()),
            w,
        };
        p.open(1, "data", false).await;
        assert!(matches!(p.recv().await, Some(Frame::SynReply { .. })));
        let st = s.streams.recv().await.unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        const TOTAL: usize = 8 << 20;
        const PIECE: usize = 64 * 1024;
        let (w, n) = (st.writer.clone(), accepted.clone());
        let writer = tokio::spawn(async move {
            for i in 0..TOTAL / PIECE {
                w.write_bytes(Bytes::from(vec![i as u8; PIECE])).await?;
                n.fetch_add(PIECE, std::sync::atomic::Ordering::SeqCst);
            }
            Ok::<_, StreamError>(())
        });
        // The client reads nothing: the writer stalls once the pipe and the queue are full.
        let mut last = usize::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = accepted.load(std::sync::atomic::Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        assert!(!writer.is_finished());
        assert!(
            last <= PIPE + MAX_QUEUED,
            "{last} bytes taken from a writer whose client reads nothing"
        );
        // Once the client reads, everything arrives, in order (piece i is bytes i).
        let mut got = 0;
        while got < TOTAL {
            match p.recv().await {
                Some(Frame::Data { data, .. }) => {
                    for b in data.iter() {
                        assert_eq!(*b, (got / PIECE) as u8, "byte {got}");
                        got += 1;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, TOTAL);
        writer.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_are_closed() {
        let limits = SessionLimits {
            idle_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let (s, _p) = pair(limits);
        let t0 = tokio::time::Instant::now();
        s.handle.closed().await;
        assert!(t0.elapsed() >= Duration::from_secs(30));
    }
}
