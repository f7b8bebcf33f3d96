//! Attach (issue 10): the CRI `Attach` RPC returns a URL on the streaming server, whose
//! session reaches the running guest's stdio through the attach socket its runner owns.
//! Driven over SPDY (wasmcri's own frame codec, and node's spdy-transport) and WebSocket;
//! the guest is `attachee` (echoes stdin lines; `chatter` floods stdout).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri::v1 as pb;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;
use crate::streaming::{Client, NodePeer, upgrade, upgrade_on, websocket, ws_drain};

/// A pod with the attachee image imported; containers are created by [`Fixture::container`].
struct Fixture {
    pod: String,
    pod_cfg: pb::PodSandboxConfig,
    logs: PathBuf,
}

impl Fixture {
    async fn new(d: &Daemon, rt: &mut RuntimeServiceClient<Channel>) -> Fixture {
        import_guest(d, "wasm32-wasip1", "attachee", "localhost/attachee:v1");
        let logs = d.dir.path().join("logs");
        let pod_cfg = pod_config(&unique("attach"), &logs);
        let pod = run_pod(rt, pod_cfg.clone()).await;
        Fixture { pod, pod_cfg, logs }
    }

    /// Creates and starts a container `name` (with `stdin`, `stdin_once`, `tty`, `args`),
    /// waiting for its first line when it has one to print.
    async fn container(
        &self,
        rt: &mut RuntimeServiceClient<Channel>,
        name: &str,
        (stdin, stdin_once, tty): (bool, bool, bool),
        args: &[&str],
    ) -> String {
        let mut cfg = container_config(name, "localhost/attachee:v1");
        cfg.stdin = stdin;
        cfg.stdin_once = stdin_once;
        cfg.tty = tty;
        cfg.args = args.iter().map(|s| s.to_string()).collect();
        let c = create(rt, &self.pod, &self.pod_cfg, cfg).await;
        start(rt, &c).await;
        match args {
            [] => drop(wait_log(&self.log(name), "ready tty=", 10).await),
            ["idle"] => drop(wait_log(&self.log(name), "idle", 10).await),
            _ => {}
        }
        c
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(name).join("0.log")
    }
}

fn attach_req(c: &str, stdin: bool) -> pb::AttachRequest {
    pb::AttachRequest {
        container_id: c.into(),
        stdin,
        tty: false,
        stdout: true,
        stderr: true,
    }
}

async fn attach_url(rt: &mut RuntimeServiceClient<Channel>, c: &str, stdin: bool) -> String {
    let url = rt
        .attach(attach_req(c, stdin))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.contains("/attach/"), "{url}");
    url
}

/// Reads SPDY frames until `stream` has received data containing `needle`.
async fn spdy_wait_for(c: &mut Client, stream: u32, needle: &str) -> String {
    use wasmcri::streaming::spdy::frame::Frame;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&got).contains(needle) {
        let f = tokio::time::timeout_at(deadline, c.reader.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} in time; got {:?}",
                    String::from_utf8_lossy(&got)
                )
            });
        match f {
            Ok(Some(Frame::Data {
                stream_id, data, ..
            })) if stream_id == stream => got.extend_from_slice(&data),
            Ok(Some(_)) => {}
            other => panic!("session ended before {needle:?}: {other:?}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `line` on a WebSocket attach's stdin and waits for `expect` on stdout.
async fn ws_echo(url: &str, line: &str, expect: &str) {
    let mut ws = websocket(url, "v5.channel.k8s.io").await.unwrap();
    let mut msg = vec![0u8];
    msg.extend_from_slice(line.as_bytes());
    ws.send(Message::binary(msg)).await.unwrap();
    let got = ws_drain(&mut ws, false, |g| {
        g.get(&1)
            .is_some_and(|d| String::from_utf8_lossy(d).contains(expect))
    })
    .await;
    assert!(
        String::from_utf8_lossy(&got[&1]).contains(expect),
        "{got:?}"
    );
    let _ = ws.close(None).await;
}

fn attach_socket(d: &Daemon, c: &str) -> PathBuf {
    d.dir.path().join("root/containers").join(c).join("attach")
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_streams_stdin_and_output_over_spdy_and_websocket() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    let c = f
        .container(&mut rt, "echo", (true, false, false), &[])
        .await;

    // SPDY, as the kubelet proxies `kubectl attach -i`: what is typed reaches the guest, its
    // answer reaches both the attacher and the CRI log.
    let url = attach_url(&mut rt, &c, true).await;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    let _error = cl.open(&[("streamType", "error")], false).await;
    let stdin = cl.open(&[("streamType", "stdin")], false).await;
    let stdout = cl.open(&[("streamType", "stdout")], false).await;
    let _stderr = cl.open(&[("streamType", "stderr")], false).await;
    // The session is on once the runner answered; give it a moment, then type.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cl.data(stdin, b"one\n", false).await;
    spdy_wait_for(&mut cl, stdout, "echo: one").await;
    wait_log(&f.log("echo"), "echo: one", 10).await;
    // The client half-closes stdin and leaves: without stdin_once the guest's stdin stays
    // open for the next attacher.
    cl.data(stdin, b"", true).await;
    drop(cl);

    // WebSocket (v5), straight to the streaming server.
    let url = attach_url(&mut rt, &c, true).await;
    ws_echo(&url, "two\n", "echo: two").await;
    wait_log(&f.log("echo"), "echo: two", 10).await;
    assert_eq!(
        status(&mut rt, &c).await.state,
        pb::ContainerState::ContainerRunning as i32
    );

    // An attach session ends, with Success, when the container stops.
    let url = attach_url(&mut rt, &c, false).await;
    let mut ws = websocket(&url, "v4.channel.k8s.io").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.stop_container(pb::StopContainerRequest {
        container_id: c.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let got = ws_drain(&mut ws, false, |_| false).await;
    let status: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    // stdin_once, through node's spdy-transport: the first session's end of input is the
    // guest's; it answers, sees end of file and exits, which ends the attach.
    let once = f.container(&mut rt, "once", (true, true, false), &[]).await;
    if let Some(peer) = NodePeer::install() {
        let url = attach_url(&mut rt, &once, true).await;
        let out = peer.run(&d, &["attach", &url, "v4.channel.k8s.io", "three\n"]);
        let so = out["stdout"].as_str().unwrap();
        assert!(so.contains("echo: three") && so.contains("eof"), "{out}");
        assert!(out["error"].as_str().unwrap().contains("Success"), "{out}");
        assert_eq!(out["pinged"], true, "{out}");
    } else {
        let url = attach_url(&mut rt, &once, true).await;
        let mut ws = websocket(&url, "v5.channel.k8s.io").await.unwrap();
        ws.send(Message::binary(b"\x00three\n".to_vec()))
            .await
            .unwrap();
        ws.send(Message::binary(vec![255, 0])).await.unwrap();
        let got = ws_drain(&mut ws, false, |_| false).await;
        assert!(String::from_utf8_lossy(&got[&1]).contains("eof"));
    }
    let st = wait_exited(&mut rt, &once, 10).await;
    assert_eq!(st.exit_code, 0);
    let log = std::fs::read_to_string(f.log("once")).unwrap();
    assert!(
        log.contains("stdout F echo: three") && log.contains("stdout F eof"),
        "{log}"
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_survives_a_daemon_restart() {
    let mut d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    let c = f
        .container(&mut rt, "keep", (true, false, false), &[])
        .await;
    let pid = runner_pid(&mut rt, &c).await;
    let url = attach_url(&mut rt, &c, true).await;
    ws_echo(&url, "before\n", "echo: before").await;

    // An attach open while the daemon dies just ends; the guest, its stdin and its log do
    // not notice.
    let url = attach_url(&mut rt, &c, true).await;
    let mut open = websocket(&url, "v5.channel.k8s.io").await.unwrap();
    d.kill9();
    let _ = ws_drain(&mut open, false, |_| false).await;
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(runner_pid(&mut rt, &c).await, pid, "same runner");
    let url = attach_url(&mut rt, &c, true).await;
    ws_echo(&url, "after\n", "echo: after").await;
    let log = wait_log(&f.log("keep"), "echo: after", 10).await;
    assert!(log.contains("echo: before"), "{log}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_attach_requests_get_clear_errors() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    let quiet = f
        .container(&mut rt, "quiet", (false, false, false), &["idle"])
        .await;

    let e = rt
        .attach(attach_req(&"f".repeat(64), false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = rt.attach(attach_req(&quiet, true)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("stdin"), "{e:?}");
    let mut r = attach_req(&quiet, false);
    r.tty = true;
    assert_eq!(
        rt.attach(r).await.unwrap_err().code(),
        Code::InvalidArgument,
        "tty with stderr"
    );
    let mut r = attach_req(&quiet, false);
    (r.stdout, r.stderr) = (false, false);
    assert_eq!(
        rt.attach(r).await.unwrap_err().code(),
        Code::InvalidArgument,
        "no streams"
    );

    // The socket is root's alone: mode 0600, and another uid cannot connect.
    let sock = attach_socket(&d, &quiet);
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let md = std::fs::metadata(&sock).unwrap();
        assert_eq!((md.uid(), md.permissions().mode() & 0o777), (0, 0o600));
    }
    assert_eq!(connect_as_nobody(&sock), "EACCES");

    // An attacher flood is bounded by the runner: 16 sessions, then a clear refusal.
    let mut sessions = Vec::new();
    for _ in 0..16 {
        let url = attach_url(&mut rt, &quiet, false).await;
        sessions.push(websocket(&url, "v4.channel.k8s.io").await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = attach_url(&mut rt, &quiet, false).await;
    let mut ws = websocket(&url, "v4.channel.k8s.io").await.unwrap();
    let got = ws_drain(&mut ws, false, |_| false).await;
    let status = String::from_utf8_lossy(&got[&3]).into_owned();
    assert!(status.contains("too many attach sessions"), "{status}");
    drop(sessions);

    // An exited container: the RPC says so.
    rt.stop_container(pb::StopContainerRequest {
        container_id: quiet.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let e = rt.attach(attach_req(&quiet, false)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not running"), "{e:?}");
    d.shutdown().await;
}

/// Tries to connect to `sock` as uid/gid 65534; the errno name (or `connected`).
fn connect_as_nobody(sock: &Path) -> String {
    use std::os::unix::process::CommandExt;
    // A hard link in a directory anyone may enter: the socket's own mode is what is tested
    // (the container directory's path is too long for a socket address anyway).
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let link = dir.path().join("a");
    std::fs::hard_link(sock, &link).unwrap();
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import socket,sys,errno\n\
             s=socket.socket(socket.AF_UNIX)\n\
             try:\n    s.connect(sys.argv[1]); print('connected')\n\
             except OSError as e: print(errno.errorcode[e.errno])",
        ])
        .arg(&link)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_attacher_never_stalls_the_guest_or_its_log() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    let c = f
        .container(&mut rt, "chatter", (false, false, false), &["chatter"])
        .await;
    wait_log(&f.log("chatter"), "chatter 10 ", 10).await;

    // A client that attaches and then never reads: a small receive buffer, no window
    // updates.
    let url = attach_url(&mut rt, &c, false).await;
    let host = url["http://".len()..].split('/').next().unwrap().to_owned();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let conn = sock.connect(host.parse().unwrap()).await.unwrap();
    let mut stalled = Client::new(upgrade_on(conn, &url, Some("v4.channel.k8s.io"), true).await);
    stalled.open(&[("streamType", "error")], false).await;
    stalled.open(&[("streamType", "stdout")], false).await;
    stalled.open(&[("streamType", "stderr")], false).await;

    // The log keeps growing the whole time, and the runner drops the attacher once it is
    // too far behind.
    let runner_log = d
        .dir
        .path()
        .join("root/containers")
        .join(&c)
        .join("runner.log");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut last = size(&f.log("chatter"));
    let mut dropped = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = size(&f.log("chatter"));
        assert!(
            now > last + 100_000,
            "log grew {} bytes in a second",
            now - last
        );
        last = now;
        if std::fs::read_to_string(&runner_log)
            .unwrap_or_default()
            .contains("disconnecting it")
        {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the stalled attacher was never dropped");
    drop(stalled);

    // A fresh attacher still gets the output.
    let url = attach_url(&mut rt, &c, false).await;
    let mut ws = websocket(&url, "v4.channel.k8s.io").await.unwrap();
    let got: HashMap<u8, Vec<u8>> = ws_drain(&mut ws, false, |g| {
        g.get(&1).is_some_and(|d| d.len() > 10_000)
    })
    .await;
    assert!(String::from_utf8_lossy(&got[&1]).contains("chatter "));
    rt.stop_container(pb::StopContainerRequest {
        container_id: c.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    d.shutdown().await;
}

/// The size of the terminal the runner `pid` holds as fd 0.
fn terminal_size(pid: i32) -> (u16, u16) {
    let f = std::fs::File::open(format!("/proc/{pid}/fd/0")).unwrap();
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into a valid pointer.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::TIOCGWINSZ,
            &mut ws,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    (ws.ws_col, ws.ws_row)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tty_container_is_a_terminal_that_attach_types_into_and_resizes() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    // `kubectl run -it --rm`: stdin, stdin_once and a terminal.
    let c = f.container(&mut rt, "term", (true, true, true), &[]).await;
    let log = std::fs::read_to_string(f.log("term")).unwrap();
    assert!(log.contains("stdout F ready tty=yes"), "{log}");
    let pid = runner_pid(&mut rt, &c).await;

    let mut req = attach_req(&c, true);
    (req.tty, req.stderr) = (true, false);
    let url = rt.attach(req).await.unwrap().into_inner().url;
    let mut cl = Client::new(upgrade(&url, Some("v4.channel.k8s.io"), true).await);
    let error = cl.open(&[("streamType", "error")], false).await;
    let stdin = cl.open(&[("streamType", "stdin")], false).await;
    let stdout = cl.open(&[("streamType", "stdout")], false).await;
    let resize = cl.open(&[("streamType", "resize")], false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cl.data(resize, br#"{"Width":123,"Height":45}"#, false)
        .await;
    cl.data(stdin, b"hi\n", false).await;
    // The terminal echoes what is typed, and the guest answers; both with CR LF.
    let out = spdy_wait_for(&mut cl, stdout, "echo: hi\r\n").await;
    assert!(out.contains("hi\r\n"), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while terminal_size(pid) != (123, 45) {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            terminal_size(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first session's end of input is the guest's: ^D on its terminal.
    cl.data(stdin, b"", true).await;
    let (data, _) = cl.drain(20).await;
    assert!(String::from_utf8_lossy(&data[&stdout]).contains("eof"));
    assert!(String::from_utf8_lossy(&data[&error]).contains("Success"));
    assert_eq!(wait_exited(&mut rt, &c, 10).await.exit_code, 0);
    // The log has the terminal's output, as stdout.
    let log = std::fs::read_to_string(f.log("term")).unwrap();
    assert!(log.contains("stdout F echo: hi\r"), "{log}");
    assert!(!log.contains("stderr"), "{log}");
    d.shutdown().await;
}

/// critest and crictl create containers without a CRI log path: their output still reaches
/// attach sessions (it went nowhere before).
#[tokio::test(flavor = "multi_thread")]
async fn a_container_without_a_log_path_still_serves_attach() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let f = Fixture::new(&d, &mut rt).await;
    let mut cfg = container_config("nolog", "localhost/attachee:v1");
    cfg.stdin = true;
    cfg.log_path.clear();
    let c = create(&mut rt, &f.pod, &f.pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    let url = attach_url(&mut rt, &c, true).await;
    ws_echo(&url, "no log\n", "echo: no log").await;
    assert!(!f.log("nolog").exists());
    d.shutdown().await;
}
