//! `cargo bench --bench portforward`: bulk throughput of `kubectl port-forward`'s path — the
//! CRI `PortForward` URL on the real daemon's streaming server, over SPDY/3.1 and over
//! WebSocket — against a direct TCP connection to the pod's IP. Prints a table (MB/s, best of
//! the runs, the ratio to direct, and the daemon's CPU time per GiB moved); asserts nothing.
//!
//! The pod is on a CNI bridge network of the bench's own (real plugins), so port-forward
//! dials `127.0.0.1:<port>` inside the pod's network namespace, as it does for a guest. The
//! target is native, not a guest, so the guest's own speed is not what is measured: threads
//! of this process that joined the pod's namespace serve a source (each connection gets `MB`
//! MiB of zeros, then end of file) and a sink (reads to end of file and reports when). The
//! direct rows connect to the pod's IP from the host, over the bridge.
//!
//! The SPDY client behaves like client-go's spdystream (no SETTINGS, no WINDOW_UPDATE: TCP
//! is the back-pressure); the WebSocket client speaks `v4.channel.k8s.io` (channel 0 data).
//! Times include the upgrade and the dial inside the pod (a millisecond or so).
//!
//! Without the CNI plugins the pod is a host-network pod and the target listens on the
//! host's loopback (the direct rows are then loopback too).
//!
//! On a machine whose cores are busy with other work every path is CPU-bound and the ratios
//! mostly measure how many copies and hops each path costs (port-forward's two TCP hops
//! against direct's one); the daemon's CPU time per GiB is the steadier figure.
//!
//! Env: `WASMCRI_BENCH_MB` (default 256), `WASMCRI_BENCH_RUNS` (default 5).

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cri::v1 as pb;
use futures_util::{SinkExt, StreamExt};
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use wasmcri::streaming::spdy::frame::{FLAG_FIN, Frame, FrameReader, HeaderEncoder, Headers};

/// What the native source writes at once, and what every client here reads or writes at once.
const CHUNK: usize = 1 << 20;

/// The source and sink, listening inside the pod's network namespace.
struct Target {
    source: u16,
    sink: u16,
    /// (bytes read, when the sink saw end of file) per upload.
    sunk: mpsc::Receiver<(usize, Instant)>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Target {
    /// Starts the source and the sink in `netns` (the host's if `None`).
    fn start(netns: Option<&Path>, bytes: usize) -> Target {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, sunk) = mpsc::channel(4);
        let (source, t1) = serve(netns, stop.clone(), move |mut s| {
            let zeros = vec![0u8; CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK);
                if s.write_all(&zeros[..n]).is_err() {
                    return;
                }
                left -= n;
            }
            let _ = s.shutdown(std::net::Shutdown::Write);
            // Wait for the reader to close, so nothing unread makes the kernel reset.
            let _ = s.read(&mut [0u8; 64]);
        });
        let (sink, t2) = serve(netns, stop.clone(), move |mut s| {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0;
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            let _ = tx.blocking_send((total, Instant::now()));
        });
        Target {
            source,
            sink,
            sunk,
            stop,
            threads: vec![t1, t2],
        }
    }

    /// Stops the accept loops and waits for them (their threads leave the namespace).
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A listener on `0.0.0.0:<random>` in `netns`, serving each connection with `conn` on a
/// thread of its own; the accept loop polls `stop`.
fn serve(
    netns: Option<&Path>,
    stop: Arc<AtomicBool>,
    conn: impl Fn(std::net::TcpStream) + Send + Clone + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let netns: Option<PathBuf> = netns.map(Path::to_owned);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        if let Some(ns) = netns {
            // This thread alone joins the pod's namespace; the ones it spawns inherit it.
            let f = std::fs::File::open(&ns).expect("open the pod's netns");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        }
        let l = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let conn = conn.clone();
                    std::thread::spawn(move || conn(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (rx.recv().unwrap(), t)
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

async fn direct_download(addr: SocketAddr, bytes: usize) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    while got < bytes {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "short download: {got} bytes");
        got += n;
    }
    t.elapsed()
}

async fn direct_upload(addr: SocketAddr, t: &mut Target, bytes: usize) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![b'y'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK);
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    let (n, at) = t.sunk.recv().await.unwrap();
    assert_eq!(n, bytes);
    at - start
}

/// A port-forward session over SPDY/3.1 with one connection to `port` open: the frame
/// reader, the write half, and the data stream's id.
struct Spdy {
    reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    enc: HeaderEncoder,
}

const DATA_STREAM: u32 = 3;

/// Upgrades to SPDY/3.1 for `portforward.k8s.io` and opens the error and data streams of one
/// connection to `port`, as client-go does.
async fn spdy_open(url: &str, port: u16) -> Spdy {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut conn = TcpStream::connect(host).await.unwrap();
    conn.set_nodelay(true).unwrap();
    conn.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Byte by byte up to the blank line: nothing after the head is consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (r, mut w) = conn.into_split();
    let reader = FrameReader::new(r, Default::default());
    let mut enc = HeaderEncoder::new();
    let mut buf = Vec::new();
    for (id, kind) in [(1u32, "error"), (DATA_STREAM, "data")] {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers(vec![
                ("streamType".into(), kind.into()),
                ("port".into(), port.to_string()),
                ("requestID".into(), "0".into()),
            ]),
        }
        .encode(&mut enc, &mut buf);
    }
    w.write_all(&buf).await.unwrap();
    Spdy { reader, w, enc }
}

async fn spdy_download(url: &str, port: u16, bytes: usize) -> Duration {
    let t = Instant::now();
    let mut s = spdy_open(url, port).await;
    let mut got = 0;
    while got < bytes {
        match s.reader.next().await.unwrap() {
            Some(Frame::Data {
                stream_id: DATA_STREAM,
                data,
                ..
            }) => got += data.len(),
            Some(Frame::Data {
                stream_id: 1, data, ..
            }) if !data.is_empty() => {
                panic!("error stream: {}", String::from_utf8_lossy(&data))
            }
            Some(_) => {}
            None => panic!("session ended after {got} bytes"),
        }
    }
    t.elapsed()
}

async fn spdy_upload(url: &str, t: &mut Target, bytes: usize) -> Duration {
    let start = Instant::now();
    let mut s = spdy_open(url, t.sink).await;
    let chunk = Bytes::from(vec![b'y'; CHUNK]);
    let mut left = bytes;
    let mut buf = Vec::with_capacity(CHUNK + 16);
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        buf.clear();
        Frame::Data {
            stream_id: DATA_STREAM,
            flags: if left == 0 { FLAG_FIN } else { 0 },
            data: chunk.slice(..n),
        }
        .encode(&mut s.enc, &mut buf);
        s.w.write_all(&buf).await.unwrap();
    }
    let (n, at) = t.sunk.recv().await.unwrap();
    assert_eq!(n, bytes);
    at - start
}

async fn ws_open(url: &str, port: u16) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{}?port={port}", url.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let host = url["http://".len()..].split('/').next().unwrap().to_owned();
    let tcp = TcpStream::connect(host).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws
}

async fn ws_download(url: &str, port: u16, bytes: usize) -> Duration {
    let t = Instant::now();
    let mut ws = ws_open(url, port).await;
    let mut got = 0;
    // Each channel's first message is its port (two bytes), not data.
    let mut port_seen = false;
    while got < bytes {
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) if b.first() == Some(&0) => {
                if port_seen {
                    got += b.len() - 1;
                } else {
                    port_seen = true;
                }
            }
            Message::Binary(b) if b.first() == Some(&1) && b.len() > 3 => {
                panic!("error channel: {}", String::from_utf8_lossy(&b[3..]))
            }
            Message::Close(_) => panic!("closed after {got} bytes"),
            _ => {}
        }
    }
    t.elapsed()
}

async fn ws_upload(url: &str, t: &mut Target, bytes: usize) -> Duration {
    let start = Instant::now();
    let mut ws = ws_open(url, t.sink).await;
    // Messages the server accepts are at most 1 MiB, the channel byte included.
    const MSG: usize = 512 * 1024;
    let mut msg = vec![b'y'; MSG + 1];
    msg[0] = 0;
    let msg = Bytes::from(msg);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MSG);
        ws.feed(Message::Binary(msg.slice(..n + 1))).await.unwrap();
        left -= n;
    }
    ws.flush().await.unwrap();
    // The server half-closes towards the pod when the session ends.
    ws.close(None).await.unwrap();
    let (n, at) = t.sunk.recv().await.unwrap();
    assert_eq!(n, bytes);
    at - start
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf only reads a constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|h| *h > 0)
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

/// One row: the times of each direction, and the daemon's CPU time over all the runs of
/// each (the figure that load from elsewhere on the machine disturbs least).
#[derive(Default)]
struct Row {
    down: Vec<Duration>,
    up: Vec<Duration>,
    cpu_down: Duration,
    cpu_up: Duration,
}

impl Row {
    fn best(v: &[Duration]) -> Duration {
        v.iter().copied().min().unwrap_or_default()
    }
}

/// Runs `f` and adds the daemon's CPU time it took to `cpu`.
async fn timed<F: std::future::Future<Output = Duration>>(
    pid: i32,
    cpu: &mut Duration,
    f: F,
) -> Duration {
    let c0 = cpu_time(pid);
    let d = f.await;
    // The daemon may still be finishing the last frames: give it a moment before reading.
    tokio::time::sleep(Duration::from_millis(20)).await;
    *cpu += cpu_time(pid).saturating_sub(c0);
    d
}

#[tokio::main]
async fn main() {
    let mb = env_usize("WASMCRI_BENCH_MB", 256);
    let runs = env_usize("WASMCRI_BENCH_RUNS", 5).max(1);
    let bytes = mb << 20;
    let net = CniNet::new();
    let d = match &net {
        Some(n) => Daemon::start_with(&n.daemon_config()).await,
        None => Daemon::start().await,
    };
    let pid = d.pid().expect("daemon runs");
    let mut rt = d.rt().await;
    let mut cfg = pod_config(&unique("pfbench"), &d.dir.path().join("logs"));
    if net.is_some() {
        cfg.linux = None; // pod network
    }
    let pod = run_pod(&mut rt, cfg).await;
    let (netns, ip) = if net.is_some() {
        let ns = d
            .dir
            .path()
            .join("state/netns")
            .join(format!("wasmcri-{}", &pod[..16]));
        let ip: Ipv4Addr = pod_ip(&mut rt, &pod).await.parse().expect("pod IP");
        (Some(ns), ip)
    } else {
        (None, Ipv4Addr::LOCALHOST)
    };
    let mut t = Target::start(netns.as_deref(), bytes);
    let url = || {
        let mut rt = rt.clone();
        let pod = pod.clone();
        async move {
            rt.port_forward(pb::PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![],
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };
    let load_before = load();
    let (src, snk) = (
        SocketAddr::from((ip, t.source)),
        SocketAddr::from((ip, t.sink)),
    );
    let (mut direct, mut spdy, mut ws) = (Row::default(), Row::default(), Row::default());
    // Interleaved, so a burst of load from elsewhere hits every path alike.
    for _ in 0..runs {
        direct.down.push(direct_download(src, bytes).await);
        direct.up.push(direct_upload(snk, &mut t, bytes).await);
        let u = url().await;
        let r = timed(pid, &mut spdy.cpu_down, spdy_download(&u, t.source, bytes)).await;
        spdy.down.push(r);
        let u = url().await;
        let r = timed(pid, &mut spdy.cpu_up, spdy_upload(&u, &mut t, bytes)).await;
        spdy.up.push(r);
        let u = url().await;
        let r = timed(pid, &mut ws.cpu_down, ws_download(&u, t.source, bytes)).await;
        ws.down.push(r);
        let u = url().await;
        let r = timed(pid, &mut ws.cpu_up, ws_upload(&u, &mut t, bytes)).await;
        ws.up.push(r);
    }
    let profile = if cfg!(debug_assertions) {
        "debug (dev profile)"
    } else {
        "release (bench profile)"
    };
    let target = if net.is_some() {
        "pod on a CNI bridge; direct = host to pod IP"
    } else {
        "host-network pod; direct = loopback"
    };
    println!(
        "\n{mb} MiB per transfer, best of {runs}, {profile}, {target}\nload average before: {load_before}, after: {}\n",
        load()
    );
    println!(
        "| path                    | pod→client MB/s | ×direct | daemon CPU ms/GiB | client→pod MB/s | ×direct | daemon CPU ms/GiB |"
    );
    println!(
        "|-------------------------|----------------:|--------:|------------------:|----------------:|--------:|------------------:|"
    );
    let (dd, du) = (
        mbps(bytes, Row::best(&direct.down)),
        mbps(bytes, Row::best(&direct.up)),
    );
    let gib = (runs * bytes) as f64 / f64::from(1u32 << 30);
    for (name, row, daemon) in [
        ("direct TCP", &direct, false),
        ("port-forward, SPDY/3.1", &spdy, true),
        ("port-forward, WebSocket", &ws, true),
    ] {
        let (down, up) = (
            mbps(bytes, Row::best(&row.down)),
            mbps(bytes, Row::best(&row.up)),
        );
        let cpu = |d: Duration| {
            if daemon {
                format!("{:.0}", d.as_secs_f64() * 1e3 / gib)
            } else {
                "-".to_owned()
            }
        };
        println!(
            "| {name:<23} | {down:>15.0} | {:>7.2} | {:>17} | {up:>15.0} | {:>7.2} | {:>17} |",
            down / dd,
            cpu(row.cpu_down),
            up / du,
            cpu(row.cpu_up),
        );
    }
    t.stop();
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
    drop(net);
}
