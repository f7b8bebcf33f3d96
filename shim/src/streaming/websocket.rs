//! The WebSocket flavours of the streaming protocols, for clients that come straight to the
//! runtime (the kubelet itself translates WebSocket clients to SPDY).
//!
//! Every message carries one channel: its first byte (binary protocols) or its first
//! character `'0'`..`'9'` followed by base64 (the `base64.` protocols). Exec uses channels
//! 0 stdin, 1 stdout, 2 stderr, 3 error (the same status as over SPDY), 4 resize (a
//! terminal's size, as JSON); `v5.channel.k8s.io` adds channel 255, whose message `[0]` closes stdin.
//! Port-forward uses channels 2i (data) and 2i+1 (error) for the i-th port of the `port`
//! query parameters (else the ports of the CRI request), and the server's first message on
//! each channel is that port, two bytes little-endian. Port-forward also accepts
//! `SPDY/3.1+portforward.k8s.io`, the ordinary SPDY session tunnelled through the socket
//! (`tunnel`), which is what client-go's WebSocket port-forward dialer speaks.
//!
//! Messages are bounded ([`MAX_MESSAGE`]); the session ends when the client closes the
//! socket or stays silent for the session idle timeout, which also kills the exec command.
//!
//! Output (a port-forward's download above all) is read straight into the message's own
//! buffer behind its channel byte, handed to the writer task without copying, and everything
//! queued is flushed at once; the queue holds at most [`OUTBOX`] messages of at most
//! [`READ_CHUNK`] bytes, so a client that reads slowly stalls the readers, not the daemon.

use std::sync::Arc;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::exec::{Outcome, outcome_of, status_bytes};
use super::{ExecRequest, Pending, PortForwardRequest, StreamingServer};
use crate::runtime::Runtime;

/// Largest message or frame accepted from a client.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Largest read from a pipe or a pod connection, hence data per message we send.
pub const READ_CHUNK: usize = 256 * 1024;
/// Messages queued for the writer task, per session.
pub const OUTBOX: usize = 4;

/// Exec subprotocols served over WebSocket, preferred first.
pub const EXEC_WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// Port-forward subprotocols served over WebSocket.
pub const PORT_FORWARD_WS_PROTOCOLS: &[&str] = &[
    super::tunnel::SPDY_PORT_FORWARD_TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
/// What the writer task is fed: a channel message (see [`framed`]), or `None` to close.
type Outbox = mpsc::Sender<Option<Bytes>>;

/// A channel message for the writer task: the channel byte, then the data (the binary
/// protocols' wire form).
fn framed(channel: u8, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + data.len());
    v.push(channel);
    v.extend_from_slice(data);
    v.into()
}

/// The message that carries `framed` (see [`framed`]): itself, or base64 text.
fn to_message(base64: bool, framed: Bytes) -> Message {
    match framed.split_first() {
        Some((channel, data)) if base64 => encode(true, *channel, data),
        _ => Message::Binary(framed),
    }
}

fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a WebSocket.
pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    has_token(h, header::UPGRADE, "websocket") && has_token(h, header::CONNECTION, "upgrade")
}

/// The subprotocol to speak: the client's first that we serve; `Some("")` (plain binary
/// channels, `channel.k8s.io` semantics) when the client names none.
pub fn choose(h: &HeaderMap, server: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<&str> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        return Some("");
    }
    offered
        .iter()
        .find_map(|p| server.iter().find(|s| *s == p).copied())
}

/// Encodes one channel message.
pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0' + channel.min(9)));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// Decodes one channel message; `None` for messages that carry no channel data.
pub fn decode(base64: bool, msg: Message) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !base64 && !b.is_empty() => Some((b[0], b[1..].to_vec())),
        Message::Text(t) if base64 && !t.is_empty() => {
            let s = t.as_str();
            let channel = s.as_bytes()[0].checked_sub(b'0').filter(|c| *c <= 9)?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(&s[1..])
                .ok()?;
            Some((channel, data))
        }
        _ => None,
    }
}

fn reply(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = code;
    r
}

/// Answers a WebSocket upgrade for `pending` and starts its session.
pub(super) fn accept(
    srv: Arc<StreamingServer>,
    mut req: Request<Incoming>,
    pending: Pending,
    shutdown: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    let server_protocols = match pending {
        Pending::Exec(_) | Pending::Attach(_) => EXEC_WS_PROTOCOLS,
        Pending::PortForward(_) => PORT_FORWARD_WS_PROTOCOLS,
    };
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return reply(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let Some(protocol) = choose(req.headers(), server_protocols) else {
        return reply(
            StatusCode::FORBIDDEN,
            &format!(
                "unable to negotiate a WebSocket protocol: server accepts {server_protocols:?}"
            ),
        );
    };
    let tunnel = protocol == super::tunnel::SPDY_PORT_FORWARD_TUNNEL;
    let ports = match &pending {
        // A tunnelled SPDY session names the port of each connection in its streams.
        Pending::PortForward(_) if tunnel => Vec::new(),
        Pending::PortForward(pf) => match ports_of(req.uri().query(), &pf.ports) {
            Ok(p) => p,
            Err(m) => return reply(StatusCode::BAD_REQUEST, &m),
        },
        Pending::Exec(_) | Pending::Attach(_) => Vec::new(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // As for SPDY sessions: a client silent this long is gone.
    let idle = srv.limits.idle_timeout;
    let limits = srv.limits;
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        match pending {
            Pending::Exec(r) | Pending::Attach(r) => {
                exec(srv.rt.clone(), r, protocol, ws, idle, shutdown).await
            }
            Pending::PortForward(r) if tunnel => {
                let session = super::spdy::Session::start(super::tunnel::WsTunnel::new(ws), limits);
                super::portforward::serve(srv.rt.clone(), r, session, shutdown).await
            }
            Pending::PortForward(r) => {
                port_forward(srv.rt.clone(), r, ports, protocol, ws, idle, shutdown).await
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !protocol.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    r
}

/// The ports of a WebSocket port-forward: `port` query parameters (each may list several,
/// comma-separated), else those of the CRI request.
fn ports_of(query: Option<&str>, requested: &[u16]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let Some(v) = pair.strip_prefix("port=") else {
            continue;
        };
        for p in v.split("%2C").flat_map(|p| p.split(',')) {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("invalid port {p:?}"))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        ports = requested.to_vec();
    }
    if ports.is_empty() {
        return Err("at least one port must be specified".into());
    }
    // Channel numbers are one byte: 2 per port.
    if ports.len() > 127 {
        return Err("too many ports".into());
    }
    Ok(ports)
}

/// The writer half: a task that owns the sink, fed channel messages (see [`framed`]); `None`
/// sends a close frame and ends it. Whatever is queued goes out with one flush.
fn spawn_writer(
    mut sink: futures_util::stream::SplitSink<Ws, Message>,
    base64: bool,
) -> (Outbox, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(OUTBOX);
    let task = tokio::spawn(async move {
        'session: while let Some(mut m) = rx.recv().await {
            let last = loop {
                let msg = match m {
                    Some(f) => to_message(base64, f),
                    // client-go's WebSocket executors take anything but a normal closure
                    // as a failed session ("close 1005 (no status)").
                    None => Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })),
                };
                let last = msg.is_close();
                if sink.feed(msg).await.is_err() {
                    break 'session;
                }
                if last {
                    break true;
                }
                match rx.try_recv() {
                    Ok(next) => m = next,
                    Err(_) => break false,
                }
            };
            if sink.flush().await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

/// Copies `pipe` to `channel`, each read going out as one message (see the module docs).
async fn pump(mut pipe: impl tokio::io::AsyncRead + Unpin, channel: u8, tx: Outbox) {
    let mut buf = BytesMut::new();
    loop {
        buf.clear();
        buf.reserve(1 + READ_CHUNK);
        buf.put_u8(channel);
        // At most READ_CHUNK bytes behind the channel byte, whatever the buffer's capacity.
        match (&mut pipe).take(READ_CHUNK as u64).read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if tx.send(Some(buf.split().freeze())).await.is_err() {
                    // Client gone: keep draining so the command never blocks on a full pipe.
                    continue;
                }
            }
        }
    }
}

async fn exec(
    rt: Arc<Runtime>,
    req: ExecRequest,
    protocol: &'static str,
    ws: Ws,
    idle: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let base64 = protocol.contains("base64");
    let status_protocol = if protocol.starts_with("v4.") || protocol.starts_with("v5.") {
        "v4.channel.k8s.io"
    } else {
        protocol
    };
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink, base64);
    let mut proc = match super::exec::start(&rt, &req).await {
        Ok(p) => p,
        Err(e) => {
            let status = status_bytes(status_protocol, &Outcome::Failed(e.to_string()));
            let _ = tx.send(Some(framed(ERROR, &status))).await;
            let _ = tx.send(None).await;
            let _ = writer.await;
            return;
        }
    };
    let mut outputs = tokio::task::JoinSet::new();
    if let Some(p) = proc.stdout.take() {
        outputs.spawn(pump(p, STDOUT, tx.clone()));
    }
    if let Some(p) = proc.stderr.take() {
        outputs.spawn(pump(p, STDERR, tx.clone()));
    }
    let (gone_tx, mut gone) = watch::channel(false);
    let mut stdin = proc.stdin.take().filter(|_| req.stdin);
    let (resize_tx, resize_rx) = mpsc::channel::<Vec<u8>>(4);
    let resizes = tokio::spawn(super::exec::apply_resizes(resize_rx, proc.resizer()));
    let reader = tokio::spawn(async move {
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(idle, source.next()).await {
            if msg.is_close() {
                break;
            }
            match decode(base64, msg) {
                Some((STDIN, data)) => {
                    if let Some(pipe) = stdin.as_mut()
                        && (pipe.write_all(&data).await.is_err() || pipe.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                Some((RESIZE, data)) => {
                    let _ = resize_tx.try_send(data);
                }
                Some((CLOSE, data)) if data.first() == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        gone_tx.send_replace(true);
    });
    let cancel = async move {
        tokio::select! {
            () = crate::streaming::flipped(&mut gone) => {}
            () = crate::streaming::flipped(&mut shutdown) => {}
        }
    };
    let end = proc.wait(cancel).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while outputs.join_next().await.is_some() {}
    })
    .await;
    outputs.abort_all();
    let outcome = outcome_of(end, &req.container_id);
    if let Some(outcome) = outcome {
        let status = status_bytes(status_protocol, &outcome);
        if !status.is_empty() {
            let _ = tx.send(Some(framed(ERROR, &status))).await;
        }
    }
    let _ = tx.send(None).await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
    resizes.abort();
}

async fn port_forward(
    rt: Arc<Runtime>,
    req: PortForwardRequest,
    ports: Vec<u16>,
    protocol: &'static str,
    ws: Ws,
    idle: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let base64 = protocol.contains("base64");
    let (sink, mut source) = ws.split();
    let (tx, writer) = spawn_writer(sink, base64);
    let netns = match rt.pod(&req.pod_id) {
        Ok(p) if crate::runtime::pod_ready(&p.state()) => p.meta().netns.clone(),
        _ => {
            let _ = tx.send(None).await;
            let _ = writer.await;
            return;
        }
    };
    let mut to_pod: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
    let mut pumps = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        let _ = tx.send(Some(framed(data_ch, &port.to_le_bytes()))).await;
        let _ = tx.send(Some(framed(err_ch, &port.to_le_bytes()))).await;
        match super::portforward::dial(netns.clone(), *port).await {
            Ok(conn) => {
                let (rd, wr) = conn.into_split();
                to_pod.push(Some(wr));
                pumps.spawn(pump(rd, data_ch, tx.clone()));
            }
            Err(e) => {
                let msg = format!(
                    "error forwarding port {port} to pod {}, uid : {e}",
                    req.pod_id
                );
                let _ = tx.send(Some(framed(err_ch, msg.as_bytes()))).await;
                to_pod.push(None);
            }
        }
    }
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(idle, source.next()) => m.ok().flatten(),
            () = crate::streaming::flipped(&mut shutdown) => None,
        };
        let Some(Ok(msg)) = msg else { break };
        if msg.is_close() {
            break;
        }
        if let Some((ch, data)) = decode(base64, msg)
            && ch % 2 == 0
            && let Some(slot) = to_pod.get_mut(usize::from(ch / 2))
            && let Some(wr) = slot.as_mut()
            && wr.write_all(&data).await.is_err()
        {
            *slot = None;
        }
    }
    pumps.abort_all();
    let _ = tx.send(None).await;
    drop(tx);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_messages_round_trip_in_both_encodings() {
        for b64 in [false, true] {
            let m = encode(b64, STDERR, b"hi\x00there");
            assert_eq!(m.is_text(), b64);
            assert_eq!(decode(b64, m), Some((STDERR, b"hi\x00there".to_vec())));
        }
        assert_eq!(encode(true, 1, b"ab"), Message::text("1YWI="));
        // Malformed: wrong kind, no channel, bad base64, channel past 9.
        assert_eq!(decode(true, Message::binary(vec![1, 2])), None);
        assert_eq!(decode(false, Message::binary(Vec::<u8>::new())), None);
        assert_eq!(decode(true, Message::text("1***")), None);
        assert_eq!(decode(true, Message::text("xYWI=")), None);
    }

    #[test]
    fn protocols_and_ports_are_negotiated() {
        let mut h = HeaderMap::new();
        assert_eq!(choose(&h, EXEC_WS_PROTOCOLS), Some(""));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bogus, base64.channel.k8s.io, v4.channel.k8s.io"),
        );
        assert_eq!(choose(&h, EXEC_WS_PROTOCOLS), Some("base64.channel.k8s.io"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v9.x"),
        );
        assert_eq!(choose(&h, EXEC_WS_PROTOCOLS), None);
        assert_eq!(ports_of(Some("port=80&port=443"), &[]), Ok(vec![80, 443]));
        assert_eq!(ports_of(Some("port=80,81"), &[]), Ok(vec![80, 81]));
        assert_eq!(ports_of(None, &[8080]), Ok(vec![8080]));
        assert!(ports_of(None, &[]).is_err());
        assert!(ports_of(Some("port=0"), &[]).is_err());
        assert!(ports_of(Some("port=99999"), &[]).is_err());
    }
}
