//! Streaming (issue 10): the CRI `Exec` and `PortForward` RPCs (`Attach`: attach.rs) return URLs on the daemon's
//! streaming server, driven here the way the kubelet proxies kubectl to them: HTTP/1.1
//! upgrade to SPDY/3.1, then streams typed by `streamType`. The client side is wasmcri's own
//! frame codec for the detailed checks, and node's spdy-transport (tests/peers/spdy-client)
//! as an implementation nobody here wrote.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cri::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use wasmcri::streaming::spdy::frame::{FLAG_FIN, Frame, FrameReader, HeaderEncoder, Headers};

use crate::harness::*;

/// A core module that copies stdin to stdout until end of input, then exits 0.
const CAT_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $l
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 4096))
      (i32.store (i32.const 8) (i32.const 0))
      (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.load (i32.const 8))) (then (return)))
      (i32.store (i32.const 16) (i32.const 64))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
      (br $l))))
"#;

/// The answer to an upgrade request: status, head, and the connection after the head.
pub(crate) struct Upgrade {
    pub(crate) status: u16,
    pub(crate) head: String,
    conn: TcpStream,
    leftover: Vec<u8>,
}

/// Sends the request kubectl (via the kubelet) sends to a streaming URL.
pub(crate) async fn upgrade(url: &str, protocol: Option<&str>, spdy: bool) -> Upgrade {
    let rest = url.strip_prefix("http://").expect("http URL");
    let host = &rest[..rest.find('/').expect("path")];
    upgrade_on(TcpStream::connect(host).await.unwrap(), url, protocol, spdy).await
}

/// [`upgrade`] on a connection the caller made.
pub(crate) async fn upgrade_on(
    mut conn: TcpStream,
    url: &str,
    protocol: Option<&str>,
    spdy: bool,
) -> Upgrade {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n");
    if spdy {
        req.push_str("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    }
    if let Some(p) = protocol {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Upgrade {
        status,
        head,
        conn,
        leftover: buf[end + 4..].to_vec(),
    }
}

/// A SPDY client session on an upgraded connection.
pub(crate) struct Client {
    pub(crate) reader:
        FrameReader<tokio::io::Chain<std::io::Cursor<Vec<u8>>, tokio::net::tcp::OwnedReadHalf>>,
    w: tokio::net::tcp::OwnedWriteHalf,
    enc: HeaderEncoder,
    next_id: u32,
}

impl Client {
    pub(crate) fn new(u: Upgrade) -> Client {
        assert_eq!(u.status, 101, "{}", u.head);
        let (r, w) = u.conn.into_split();
        Client {
            reader: FrameReader::new(
                std::io::Cursor::new(u.leftover).chain(r),
                Default::default(),
            ),
            w,
            enc: HeaderEncoder::new(),
            next_id: 1,
        }
    }

    pub(crate) async fn send(&mut self, f: Frame) {
        let mut buf = Vec::new();
        f.encode(&mut self.enc, &mut buf);
        self.w.write_all(&buf).await.unwrap();
    }

    /// Opens a stream with Go-cased header names, as client-go sends them.
    pub(crate) async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let headers = Headers(
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: if fin { FLAG_FIN } else { 0 },
            headers,
        })
        .await;
        id
    }

    pub(crate) async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id: id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// Reads until the server ends the session: data per stream, and the other frames.
    pub(crate) async fn drain(&mut self, secs: u64) -> (HashMap<u32, Vec<u8>>, Vec<Frame>) {
        let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut other = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let f = tokio::time::timeout_at(deadline, self.reader.next())
                .await
                .expect("session ends in time");
            match f {
                Ok(Some(Frame::Data {
                    stream_id, data: d, ..
                })) => data.entry(stream_id).or_default().extend_from_slice(&d),
                Ok(Some(f @ Frame::GoAway { .. })) => {
                    other.push(f);
                    return (data, other);
                }
                Ok(Some(f)) => other.push(f),
                Ok(None) | Err(_) => return (data, other),
            }
        }
    }
}

/// What an exec printed and its error stream.
pub(crate) struct ExecResult {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) error: String,
}

/// Runs one exec session: error, (stdin), stdout, stderr streams, as client-go opens them.
pub(crate) async fn spdy_exec(url: &str, protocol: &str, stdin: Option<&[u8]>) -> ExecResult {
    let mut c = Client::new(upgrade(url, Some(protocol), true).await);
    let error = c.open(&[("streamType", "error")], false).await;
    let input = match stdin {
        Some(_) => Some(c.open(&[("streamType", "stdin")], false).await),
        None => None,
    };
    let stdout = c.open(&[("streamType", "stdout")], false).await;
    let stderr = c.open(&[("streamType", "stderr")], false).await;
    if let (Some(id), Some(bytes)) = (input, stdin) {
        c.data(id, bytes, true).await;
    }
    let (data, _) = c.drain(30).await;
    let text = |id: u32| String::from_utf8_lossy(data.get(&id).map_or(&[][..], |v| v)).into_owned();
    ExecResult {
        stdout: text(stdout),
        stderr: text(stderr),
        error: text(error),
    }
}

fn exec_req(c: &str, cmd: &[&str], stdin: bool) -> pb::ExecRequest {
    pb::ExecRequest {
        container_id: c.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    }
}

pub(crate) async fn exec_url(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
    cmd: &[&str],
    stdin: bool,
) -> String {
    let url = rt
        .exec(exec_req(c, cmd, stdin))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    url
}

/// A running container of an image holding sleeper (its entrypoint), hello, exit3, cat and
/// spin.
async fn exec_fixture(
    d: &Daemon,
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
) -> String {
    let layout = d.dir.path().join("stream-img");
    let g = |n: &str| guest("wasm32-wasip1", n);
    tar_image_layout(
        &layout,
        &[
            ("/sleeper.wasm", g("sleeper")),
            ("/hello.wasm", g("hello")),
            ("/exit3.wasm", g("exit3")),
            ("/cat.wasm", wat::parse_str(CAT_WAT).unwrap()),
            ("/spin.wasm", g("spin")),
        ],
        &["/sleeper.wasm"],
        &[],
        "localhost/stream:v1",
    );
    d.import(&layout, "localhost/stream:v1");
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("stream"), &logs);
    let pod = run_pod(rt, pod_cfg.clone()).await;
    let c = create(
        rt,
        &pod,
        &pod_cfg,
        container_config("main", "localhost/stream:v1"),
    )
    .await;
    let e = rt
        .exec(exec_req(&c, &["/hello.wasm"], false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "not running yet: {e:?}");
    start(rt, &c).await;
    wait_log(&logs.join("main/0.log"), "started", 10).await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_streams_output_stdin_and_exit_codes() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;

    // Output on stdout and stderr, and the v4 Success status.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("hello from wasm"), "{}", r.stdout);
    assert!(
        r.stderr.contains("hello from wasm on stderr"),
        "{}",
        r.stderr
    );
    let status: serde_json::Value = serde_json::from_str(&r.error).expect(&r.error);
    assert_eq!(
        status,
        serde_json::json!({"metadata": {}, "status": "Success"})
    );

    // A non-zero exit: Failure / NonZeroExitCode with the code as the ExitCode cause.
    let url = exec_url(&mut rt, &c, &["/exit3.wasm"], false).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("exiting with 3"), "{}", r.stdout);
    let status: serde_json::Value = serde_json::from_str(&r.error).expect(&r.error);
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(
        status["details"]["causes"],
        serde_json::json!([{"reason": "ExitCode", "message": "3"}])
    );

    // stdin reaches the guest, and its end is the guest's end of input. 200 KiB: more than
    // any pipe or window holds at once.
    let input: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let url = exec_url(&mut rt, &c, &["/cat.wasm"], true).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", Some(&input)).await;
    assert_eq!(r.stdout.len(), input.len(), "stderr: {}", r.stderr);
    assert_eq!(r.stdout.as_bytes(), &input[..]);
    assert!(r.error.contains("Success"), "{}", r.error);

    // On a terminal: stdout and stderr are one stream, with the terminal's CR LF line ends;
    // resizes are taken.
    let mut req = exec_req(&c, &["/hello.wasm"], false);
    req.tty = true;
    req.stderr = false;
    let url = rt.exec(req).await.unwrap().into_inner().url;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    let error = cl.open(&[("streamType", "error")], false).await;
    let stdout = cl.open(&[("streamType", "stdout")], false).await;
    let resize = cl.open(&[("streamType", "resize")], false).await;
    cl.data(resize, br#"{"Width":120,"Height":40}"#, false)
        .await;
    let (data, _) = cl.drain(30).await;
    let out = String::from_utf8_lossy(&data[&stdout]).into_owned();
    assert!(out.contains("hello from wasm\r\n"), "{out:?}");
    assert!(out.contains("hello from wasm on stderr\r\n"), "{out:?}");
    assert!(String::from_utf8_lossy(&data[&error]).contains("Success"));

    // An older protocol: no status on success, text on failure.
    let url = exec_url(&mut rt, &c, &["/exit3.wasm"], false).await;
    let r = spdy_exec(&url, "v2.channel.k8s.io", None).await;
    assert!(r.error.contains("non-zero exit code"), "{}", r.error);

    // A cmd[0] naming no module in the image: the error stream says why.
    let e = rt.exec(exec_req(&c, &["/nope.wasm"], false)).await;
    let url = e.unwrap().into_inner().url;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.error.contains("names no .wasm file"), "{}", r.error);

    // The container is unaffected by its execs.
    assert_eq!(
        status_of(&mut rt, &c).await,
        pb::ContainerState::ContainerRunning as i32
    );
    d.shutdown().await;
}

async fn status_of(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
) -> i32 {
    status(rt, c).await.state
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_requests_are_validated_and_urls_are_single_use() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;

    // The RPC checks what the kubelet expects it to.
    let mut r = exec_req(&c, &["/hello.wasm"], false);
    r.tty = true;
    let e = rt.exec(r.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "tty with stderr: {e:?}");
    r.stderr = false;
    assert!(rt.exec(r).await.is_ok(), "tty without stderr is fine");
    let mut r = exec_req(&c, &["/hello.wasm"], false);
    r.stdout = false;
    r.stderr = false;
    let e = rt.exec(r).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no streams: {e:?}");
    let e = rt.exec(exec_req(&c, &[], false)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no command: {e:?}");
    let e = rt
        .exec(exec_req(&"f".repeat(64), &["/hello.wasm"], false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = rt
        .attach(pb::AttachRequest {
            container_id: c.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::InvalidArgument,
        "no stdin to attach to: {e:?}"
    );
    let e = rt
        .port_forward(pb::PortForwardRequest {
            pod_sandbox_id: "f".repeat(64),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A URL works once; a made-up one, or one for another kind of session, never.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("hello"), "{}", r.stdout);
    let again = upgrade(&url, Some("v4.channel.k8s.io"), true).await;
    assert_eq!(again.status, 404, "reused token: {}", again.head);
    let base = &url[..url.rfind('/').unwrap()];
    let bogus = upgrade(
        &format!("{base}/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Some("v4.channel.k8s.io"),
        true,
    )
    .await;
    assert_eq!(bogus.status, 404);
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let wrong_kind = url.replace("/exec/", "/portforward/");
    assert_eq!(
        upgrade(&wrong_kind, Some("portforward.k8s.io"), true)
            .await
            .status,
        404
    );
    assert_eq!(
        upgrade(&url, Some("v4.channel.k8s.io"), true).await.status,
        404,
        "a token presented on the wrong path is spent"
    );

    // No protocol in common: 403, listing ours.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let u = upgrade(&url, Some("v99.channel.k8s.io"), true).await;
    assert_eq!(u.status, 403, "{}", u.head);
    let head = u.head.to_ascii_lowercase();
    assert!(
        head.contains("x-accepted-stream-protocol-versions: v4.channel.k8s.io"),
        "{head}"
    );
    // No upgrade headers, or no protocol header: 400.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    assert_eq!(
        upgrade(&url, Some("v4.channel.k8s.io"), false).await.status,
        400
    );
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    assert_eq!(upgrade(&url, None, true).await.status, 400);

    // A client that opens no streams is dropped, and a hostile frame ends the session with
    // GOAWAY; the server goes on serving.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    cl.w.write_all(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0])
        .await
        .unwrap();
    let (_, frames) = cl.drain(10).await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::GoAway { status: 1, .. })),
        "{frames:?}"
    );
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("hello"), "{}", r.stdout);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_commands_die_with_their_client_and_their_container() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;
    // cat blocks on stdin: the exec lives until its client goes away.
    let url = exec_url(&mut rt, &c, &["/cat.wasm"], true).await;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    cl.open(&[("streamType", "error")], false).await;
    let stdin = cl.open(&[("streamType", "stdin")], false).await;
    cl.open(&[("streamType", "stdout")], false).await;
    cl.open(&[("streamType", "stderr")], false).await;
    cl.data(stdin, b"x\n", false).await;
    let pid = wait_exec_runner(&d, &mut rt, &c).await;
    drop(cl);
    wait_gone(pid, 10).await;

    // And until its container stops.
    let url = exec_url(&mut rt, &c, &["/cat.wasm"], true).await;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    let error = cl.open(&[("streamType", "error")], false).await;
    cl.open(&[("streamType", "stdin")], false).await;
    cl.open(&[("streamType", "stdout")], false).await;
    cl.open(&[("streamType", "stderr")], false).await;
    let pid = wait_exec_runner(&d, &mut rt, &c).await;
    stop_container(&mut rt, &c, 0).await;
    wait_gone(pid, 10).await;
    let (data, _) = cl.drain(10).await;
    let err = String::from_utf8_lossy(data.get(&error).map_or(&[][..], |v| v)).into_owned();
    assert!(err.contains("exited"), "{err}");
    remove_container(&mut rt, &c).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_commands_die_with_the_daemon() {
    let mut d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;
    // A command that reads no input and writes nothing after its first line: only a kill
    // ends it.
    let url = exec_url(&mut rt, &c, &["/spin.wasm"], false).await;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    cl.open(&[("streamType", "error")], false).await;
    cl.open(&[("streamType", "stdout")], false).await;
    cl.open(&[("streamType", "stderr")], false).await;
    let exec_pid = wait_exec_runner(&d, &mut rt, &c).await;
    let main_pid = runner_pid(&mut rt, &c).await;
    let st = d.terminate();
    assert!(st.success(), "daemon exit {st}: {}", d.log());
    // The exec is gone with its daemon; the container itself keeps running.
    wait_gone(exec_pid, 10).await;
    assert!(std::path::Path::new(&format!("/proc/{main_pid}")).exists());
    drop(cl);
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(
        status_of(&mut rt, &c).await,
        pb::ContainerState::ContainerRunning as i32
    );
    d.shutdown().await;
}

/// The PID of the (one) exec runner in container `c`: a child of the daemon in the
/// container's cgroup that is not the container's own runner.
async fn wait_exec_runner(
    d: &Daemon,
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
) -> i32 {
    let daemon = d.pid().expect("daemon pid");
    let main = runner_pid(rt, c).await;
    for _ in 0..100 {
        let children: Vec<i32> = std::fs::read_dir(format!("/proc/{daemon}/task"))
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                    .flat_map(|s| {
                        s.split_whitespace()
                            .filter_map(|p| p.parse().ok())
                            .collect::<Vec<i32>>()
                    })
                    .collect()
            })
            .unwrap_or_default();
        for pid in children {
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if pid != main && cgroup.contains(c) {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no exec runner appeared in {c}");
}

async fn wait_gone(pid: i32, secs: u64) {
    for _ in 0..secs * 10 {
        let gone = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("exec runner {pid} still alive after {secs}s");
}

/// One forwarded connection: sends `payload` on the data stream (then half-closes it if
/// `fin`), and returns what came back on the data and error streams.
async fn spdy_forward(url: &str, port: u16, payload: &[u8], fin: bool) -> (Vec<u8>, String) {
    let mut c = Client::new(upgrade(url, Some("portforward.k8s.io"), true).await);
    let port = port.to_string();
    let error = c
        .open(
            &[("streamType", "error"), ("port", &port), ("requestID", "0")],
            false,
        )
        .await;
    let data = c
        .open(
            &[("streamType", "data"), ("port", &port), ("requestID", "0")],
            false,
        )
        .await;
    c.data(data, payload, fin).await;
    // The session stays open for more connections: read until both streams are finished.
    let mut got: HashMap<u32, (Vec<u8>, bool)> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(got.get(&data).is_some_and(|g| g.1) && got.get(&error).is_some_and(|g| g.1)) {
        let f = tokio::time::timeout_at(deadline, c.reader.next())
            .await
            .expect("forward finishes in time")
            .unwrap();
        match f {
            Some(Frame::Data {
                stream_id,
                flags,
                data: d,
            }) => {
                let e = got.entry(stream_id).or_default();
                e.0.extend_from_slice(&d);
                e.1 |= flags & FLAG_FIN != 0;
            }
            Some(_) => {}
            None => break,
        }
    }
    let take =
        |id: u32, got: &mut HashMap<u32, (Vec<u8>, bool)>| got.remove(&id).unwrap_or_default().0;
    let d = take(data, &mut got);
    let e = String::from_utf8_lossy(&take(error, &mut got)).into_owned();
    (d, e)
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_reaches_a_guest_in_the_pod_network_namespace() {
    let Some(net) = CniNet::new() else {
        return;
    };
    let d = Daemon::start_with(&net.daemon_config()).await;
    import_guest(&d, "wasm32-wasip2", "tcpecho", "localhost/tcpecho:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut pod_cfg = pod_config(&unique("pf"), &logs);
    pod_cfg.linux = None; // pod network
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let echo = container_config("echo", "localhost/tcpecho:v1");
    let c = create(&mut rt, &pod, &pod_cfg, echo).await;
    start(&mut rt, &c).await;
    wait_log(&logs.join("echo/0.log"), "listening", 10).await;
    // Nothing listens on the host's 7000 for this: the connection is made in the pod.
    let pf = |rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >| {
        let mut rt = rt.clone();
        let pod = pod.clone();
        async move {
            rt.port_forward(pb::PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![7000],
            })
            .await
            .unwrap()
            .into_inner()
            .url
        }
    };
    let url = pf(&mut rt).await;
    assert!(url.contains("/portforward/"), "{url}");
    let (data, err) = spdy_forward(&url, 7000, b"hello pod\nsecond line\n", true).await;
    assert_eq!(
        String::from_utf8_lossy(&data),
        "echo: hello pod\necho: second line\n",
        "error stream: {err}"
    );
    assert!(err.is_empty(), "{err}");
    // A port nobody listens on: the error stream says so.
    let url = pf(&mut rt).await;
    let (data, err) = spdy_forward(&url, 7001, b"x", true).await;
    assert!(data.is_empty());
    assert!(err.contains("error forwarding port 7001"), "{err}");
    // The same through node's spdy-transport.
    if let Some(peer) = NodePeer::install() {
        let url = pf(&mut rt).await;
        let out = peer.run(&d, &["portforward", &url, "7000", "from node\n"]);
        assert_eq!(out["data"], "echo: from node\n", "{out}");
        assert_eq!(out["error"], "", "{out}");
        assert_eq!(out["pinged"], true, "{out}");
    }
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_to_a_host_network_pod_reaches_its_http_component() {
    let d = Daemon::start().await;
    import_http_hello(&d);
    let mut rt = d.rt().await;
    let (c, addr) = serve_http_hello(&d, &mut rt, "pfhost").await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let pod_id = rt
        .list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .find(|x| x.id == c)
        .unwrap()
        .pod_sandbox_id;
    let url = rt
        .port_forward(pb::PortForwardRequest {
            pod_sandbox_id: pod_id,
            port: vec![i32::from(port)],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let req = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // No half-close: the HTTP server answers, then closes (Connection: close).
    let (data, err) = spdy_forward(&url, port, req, false).await;
    let text = String::from_utf8_lossy(&data);
    assert!(text.starts_with("HTTP/1.1 200"), "{text} / {err}");
    d.shutdown().await;
}

/// The node peer (tests/peers/spdy-client) installed into a temp dir with `npm ci`; `None`
/// (with a message) if node or npm is missing.
pub(crate) struct NodePeer {
    dir: tempfile::TempDir,
}

impl NodePeer {
    pub(crate) fn install() -> Option<NodePeer> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/spdy-client");
        let dir = tempfile::tempdir().unwrap();
        for f in ["package.json", "package-lock.json", "client.js"] {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
        let ok = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
            .current_dir(dir.path())
            .status();
        match ok {
            Ok(s) if s.success() => Some(NodePeer { dir }),
            other => {
                eprintln!("skipping the node SPDY peer: npm ci failed ({other:?})");
                None
            }
        }
    }

    pub(crate) fn run(&self, d: &Daemon, args: &[&str]) -> serde_json::Value {
        let out = std::process::Command::new("node")
            .arg(self.dir.path().join("client.js"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            let log = d.log();
            panic!(
                "node peer ({}): {e}: {stdout} {}\ndaemon log tail:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                &log[log.len().saturating_sub(4000)..]
            )
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_third_party_spdy_client_runs_an_exec() {
    let Some(peer) = NodePeer::install() else {
        return;
    };
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let out = peer.run(&d, &["exec", &url, "v4.channel.k8s.io", "-"]);
    assert!(
        out["stdout"].as_str().unwrap().contains("hello from wasm"),
        "{out}"
    );
    assert!(out["error"].as_str().unwrap().contains("Success"), "{out}");
    assert_eq!(out["pinged"], true, "{out}");
    // stdin through node's flow-controlled streams (100 kB, more than one window).
    let url = exec_url(&mut rt, &c, &["/cat.wasm"], true).await;
    let out = peer.run(&d, &["exec", &url, "v4.channel.k8s.io", "0123456789"]);
    assert_eq!(out["stdout"].as_str().unwrap().len(), 100_000, "{out}");
    assert!(out["error"].as_str().unwrap().contains("Success"), "{out}");
    // A non-zero exit.
    let url = exec_url(&mut rt, &c, &["/exit3.wasm"], false).await;
    let out = peer.run(&d, &["exec", &url, "v4.channel.k8s.io", "-"]);
    let status: serde_json::Value = serde_json::from_str(out["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{out}");
    // A protocol the server does not speak.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    let out = peer.run(&d, &["exec", &url, "v0.bogus", "-"]);
    assert!(out["status"].as_str().unwrap().contains("403"), "{out}");
    d.shutdown().await;
}

/// Opens a WebSocket to a streaming URL with `protocol`; the HTTP status if it is refused.
pub(crate) async fn websocket(
    url: &str,
    protocol: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<TcpStream>,
    tokio_tungstenite::tungstenite::http::StatusCode,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let host = url["http://".len()..].split('/').next().unwrap().to_owned();
    let tcp = TcpStream::connect(host).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            let chosen = resp.headers().get("Sec-WebSocket-Protocol").unwrap();
            assert_eq!(chosen, protocol);
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status()),
        Err(e) => panic!("websocket: {e}"),
    }
}

/// A port-forward URL for the pod, with no ports in the CRI request.
async fn port_forward_url(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod_id: &str,
) -> String {
    rt.port_forward(pb::PortForwardRequest {
        pod_sandbox_id: pod_id.into(),
        port: vec![],
    })
    .await
    .unwrap()
    .into_inner()
    .url
}

/// Reads channel messages until the server closes: bytes per channel.
pub(crate) async fn ws_drain(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    base64: bool,
    until: impl Fn(&HashMap<u8, Vec<u8>>) -> bool,
) -> HashMap<u8, Vec<u8>> {
    use base64::Engine as _;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(&got) {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("websocket session ends in time");
        let (ch, data) = match m {
            Some(Ok(Message::Binary(b))) if !base64 => (b[0], b[1..].to_vec()),
            Some(Ok(Message::Text(t))) if base64 => (
                t.as_bytes()[0] - b'0',
                base64::engine::general_purpose::STANDARD
                    .decode(&t.as_bytes()[1..])
                    .unwrap(),
            ),
            Some(Ok(Message::Close(frame))) => {
                // client-go's WebSocket executors fail a session closed any other way.
                assert_eq!(
                    frame.map(|f| f.code),
                    Some(
                        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal
                    ),
                    "the server ends a session with a normal closure"
                );
                break;
            }
            None | Some(Err(_)) => break,
            Some(Ok(other)) => panic!("unexpected {other:?}"),
        };
        got.entry(ch).or_default().extend_from_slice(&data);
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_and_port_forward_over_websocket() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let c = exec_fixture(&d, &mut rt).await;

    // v5 binary: stdin on channel 0, closed with channel 255; output on 1, status on 3.
    let url = exec_url(&mut rt, &c, &["/cat.wasm"], true).await;
    let mut ws = websocket(&url, "v5.channel.k8s.io").await.unwrap();
    ws.send(Message::binary(b"\x00line one\n".to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let got = ws_drain(&mut ws, false, |_| false).await;
    assert_eq!(got.get(&1).map(|v| &v[..]), Some(&b"line one\n"[..]));
    let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
    assert_eq!(status["status"], "Success");

    // base64 text flavour: output and the NonZeroExitCode status.
    let url = exec_url(&mut rt, &c, &["/exit3.wasm"], false).await;
    let mut ws = websocket(&url, "v4.base64.channel.k8s.io").await.unwrap();
    let got = ws_drain(&mut ws, true, |_| false).await;
    assert!(String::from_utf8_lossy(&got[&1]).contains("exiting with 3"));
    let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    // Nothing in common: 403; the token is spent either way.
    let url = exec_url(&mut rt, &c, &["/hello.wasm"], false).await;
    assert_eq!(websocket(&url, "v9.bogus").await.unwrap_err(), 403);
    assert_eq!(websocket(&url, "v4.channel.k8s.io").await.unwrap_err(), 404);

    // Port-forward: the port first on both channels, then the bytes of the connection.
    import_http_hello(&d);
    let (web, addr) = serve_http_hello(&d, &mut rt, "wspf").await;
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let pod_id = rt
        .list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .find(|x| x.id == web)
        .unwrap()
        .pod_sandbox_id;
    let url = port_forward_url(&mut rt, &pod_id).await;
    let mut ws = websocket(&format!("{url}?port={port}"), "v4.channel.k8s.io")
        .await
        .unwrap();
    let mut req = vec![0u8];
    req.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ws.send(Message::binary(req)).await.unwrap();
    let got = ws_drain(&mut ws, false, |g| {
        g.get(&0)
            .is_some_and(|d| String::from_utf8_lossy(d).contains("hello"))
    })
    .await;
    let data = &got[&0];
    assert_eq!(&data[..2], &port.to_le_bytes(), "port prefix");
    assert!(
        String::from_utf8_lossy(&data[2..]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(
        got[&1],
        port.to_le_bytes().to_vec(),
        "no error, only the port"
    );

    // SPDY tunnelled through the WebSocket, as client-go's WebSocket port-forward dialer
    // speaks it: no port parameter, the streams name the port.
    let url = port_forward_url(&mut rt, &pod_id).await;
    let ws = websocket(&url, "SPDY/3.1+portforward.k8s.io")
        .await
        .unwrap();
    let (r, mut w) = tokio::io::split(wasmcri::streaming::tunnel::WsTunnel::new(ws));
    let mut frames = FrameReader::new(r, Default::default());
    let mut enc = HeaderEncoder::new();
    let port_s = port.to_string();
    let mut out = Vec::new();
    for (id, kind) in [(1, "error"), (3, "data")] {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers(
                [("streamType", kind), ("port", &port_s), ("requestID", "0")]
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            ),
        }
        .encode(&mut enc, &mut out);
    }
    Frame::Data {
        stream_id: 3,
        flags: 0,
        data: Bytes::from_static(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    }
    .encode(&mut enc, &mut out);
    w.write_all(&out).await.unwrap();
    w.flush().await.unwrap();
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&body).contains("hello") {
        match tokio::time::timeout_at(deadline, frames.next())
            .await
            .expect("tunnelled forward answers in time")
            .unwrap()
        {
            Some(Frame::Data {
                stream_id: 3, data, ..
            }) => body.extend_from_slice(&data),
            Some(_) => {}
            None => break,
        }
    }
    assert!(
        String::from_utf8_lossy(&body).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    d.shutdown().await;
}
