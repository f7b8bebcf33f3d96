//! An exec or attach session over SPDY (`channel.k8s.io` v1 to v4): wait for the client's
//! streams (`streamType` `error`, and `stdin`/`stdout`/`stderr` as the request asked), start
//! the command ([`Runtime::exec_stream`]) or attach to the guest ([`Runtime::attach`]), pump
//! its stdio both ways while it runs, then report how it ended on the error stream and close
//! the session (an attach ends with `Success` when the container exits).
//!
//! The error stream carries, in v4, a `metav1.Status` as JSON: `{"metadata":{},"status":
//! "Success"}`, or `Failure` with reason `NonZeroExitCode` and the code as the message of
//! an `ExitCode` cause (what client-go turns into `kubectl exec`'s exit code); earlier
//! versions get a line of text for failures and nothing for success.
//!
//! The command is killed if the client goes away, the container exits, or the daemon shuts
//! down.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::spdy::{Session, Stream, StreamWriter, frame::status};
use super::{ExecRequest, STREAM_CREATION_TIMEOUT};
use crate::runtime::{ExecEnd, Runtime};

/// How long a finished session waits for its client to hang up before closing.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// The streams of one exec, as the client opened them.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    /// Whether every stream the request implies is open: with a terminal, v3 and later
    /// clients add a resize stream (and stderr is merged into stdout).
    fn complete(&self, req: &ExecRequest, protocol: &str) -> bool {
        let wants_resize = req.tty && !matches!(protocol, "v2.channel.k8s.io" | "channel.k8s.io");
        self.error.is_some()
            && (!req.stdin || self.stdin.is_some())
            && (!req.stdout || self.stdout.is_some())
            && (!req.stderr || self.stderr.is_some())
            && (!wants_resize || self.resize.is_some())
    }
}

/// Applies the terminal sizes a client sends: JSON objects `{"Width":..,"Height":..}`, one
/// after another, possibly split across data frames.
pub(super) async fn apply_resizes(
    mut sizes: tokio::sync::mpsc::Receiver<Vec<u8>>,
    resizer: crate::runtime::Resizer,
) {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = sizes.recv().await {
        buf.extend_from_slice(&chunk);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    resizer.resize(size.width, size.height);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    // Not a size: drop what we have and resynchronise on the next message.
                    used = buf.len();
                    break;
                }
                None => break,
            }
        }
        buf.drain(..used);
        // A client that sends an endless object gets nowhere.
        if buf.len() > 4096 {
            buf.clear();
        }
    }
}

/// How the command ended, for the error stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Exit code.
    Exited(i32),
    /// It could not start, or was killed; the message says why.
    Failed(String),
}

/// The bytes written to the error stream for `outcome` under `protocol`.
pub(super) fn status_bytes(protocol: &str, outcome: &Outcome) -> Vec<u8> {
    let v4 = protocol == "v4.channel.k8s.io";
    match outcome {
        Outcome::Exited(0) if v4 => br#"{"metadata":{},"status":"Success"}"#.to_vec(),
        Outcome::Exited(0) => Vec::new(),
        Outcome::Exited(code) if v4 => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string()
        .into_bytes(),
        Outcome::Exited(code) => {
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes()
        }
        Outcome::Failed(message) if v4 => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "details": {"causes": [{"message": message}]},
            "code": 500,
        })
        .to_string()
        .into_bytes(),
        Outcome::Failed(message) => message.clone().into_bytes(),
    }
}

/// Serves one exec session to its end.
pub(super) async fn serve(
    rt: Arc<Runtime>,
    req: ExecRequest,
    protocol: &'static str,
    mut session: Session,
    mut shutdown: watch::Receiver<bool>,
) {
    let handle = session.handle.clone();
    let mut streams = Streams::default();
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while !streams.complete(&req, protocol) {
        let s = tokio::select! {
            s = session.streams.recv() => s,
            () = &mut deadline => {
                tracing::debug!(container = %req.container_id, "exec client did not open its streams in time");
                None
            }
            () = crate::streaming::flipped(&mut shutdown) => None,
        };
        let Some(s) = s else {
            handle.shutdown().await;
            return;
        };
        let kind = s.headers.get("streamtype").unwrap_or("").to_owned();
        let slot = match kind.as_str() {
            "error" => &mut streams.error,
            "stdin" if req.stdin => &mut streams.stdin,
            "stdout" if req.stdout => &mut streams.stdout,
            "stderr" if req.stderr => &mut streams.stderr,
            "resize" if req.tty => &mut streams.resize,
            _ => {
                tracing::debug!(stream_type = %kind, "unexpected exec stream refused");
                s.writer.reset(status::REFUSED_STREAM).await;
                continue;
            }
        };
        if slot.is_some() {
            s.writer.reset(status::PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(s);
    }
    let error = streams.error.take().expect("complete");
    let outcome = run(&rt, &req, &mut streams, &handle, &mut shutdown).await;
    tracing::debug!(container = %req.container_id, ?outcome, "exec finished");
    if let Some(outcome) = outcome {
        let bytes = status_bytes(protocol, &outcome);
        if !bytes.is_empty() {
            let _ = error.writer.write(&bytes).await;
        }
        let _ = error.writer.close().await;
        // client-go hangs up once it has read the status; until then (at most LINGER) the
        // connection stays up, so a peer that delivers frames lazily (node's
        // spdy-transport drops what arrives together with the connection's end) reads it
        // all.
        let _ = tokio::time::timeout(LINGER, handle.closed()).await;
    }
    handle.shutdown().await;
}

/// Runs the command with its stdio pumped; `None` if the client went away (nobody to tell).
async fn run(
    rt: &Arc<Runtime>,
    req: &ExecRequest,
    streams: &mut Streams,
    handle: &super::spdy::SessionHandle,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Outcome> {
    let mut proc = match start(rt, req).await {
        Ok(p) => p,
        Err(e) => return Some(Outcome::Failed(e.to_string())),
    };
    let mut stdin_task = None;
    if let (Some(mut stdin_stream), Some(mut pipe)) = (streams.stdin.take(), proc.stdin.take()) {
        stdin_task = Some(tokio::spawn(async move {
            while let Some(chunk) = stdin_stream.data.recv().await {
                if pipe.write_all(&chunk).await.is_err() || pipe.flush().await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is the guest's end of input.
            drop(pipe);
            drop(stdin_stream);
        }));
    }
    let mut pumps = tokio::task::JoinSet::new();
    let mut resize_task = None;
    if let Some(mut resize) = streams.resize.take() {
        let resizer = proc.resizer();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        resize_task = Some(tokio::spawn(async move {
            let apply = tokio::spawn(apply_resizes(rx, resizer));
            while let Some(b) = resize.data.recv().await {
                if tx.send(b.to_vec()).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let _ = apply.await;
        }));
    }
    let stdout = proc.stdout.take();
    let stderr = proc.stderr.take();
    let outputs = [
        (streams.stdout.take(), stdout),
        (streams.stderr.take(), stderr),
    ];
    for (stream, pipe) in outputs {
        let Some(pipe) = pipe else { continue };
        let writer = stream.as_ref().map(|s| s.writer.clone());
        pumps.spawn(pump_out(pipe, writer, stream));
    }
    let cancel = {
        let handle = handle.clone();
        let mut shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = handle.closed() => {}
                () = crate::streaming::flipped(&mut shutdown) => {}
            }
        }
    };
    let end = proc.wait(cancel).await;
    // The runner is gone, so its pipes reach end of file and the output pumps finish;
    // stdin's pump may still wait on the client, which no longer matters.
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    let outputs_done = async {
        while let Some(r) = pumps.join_next().await {
            if r.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), outputs_done).await;
    pumps.abort_all();
    outcome_of(end, &req.container_id)
}

/// Starts what `req` asks for: the command, or an attach to the running guest.
pub(super) async fn start(
    rt: &Arc<Runtime>,
    req: &ExecRequest,
) -> crate::runtime::Result<crate::runtime::ExecProcess> {
    if req.attach {
        rt.attach(&req.container_id, req.stdin).await
    } else {
        rt.exec_stream(&req.container_id, req.cmd.clone(), req.stdin, req.tty)
            .await
    }
}

/// What the client is told of how an exec ended; `None` when it went away first.
pub(super) fn outcome_of(
    end: crate::runtime::Result<ExecEnd>,
    container_id: &str,
) -> Option<Outcome> {
    match end {
        Ok(ExecEnd::Exited(code)) => Some(Outcome::Exited(code)),
        Ok(ExecEnd::ContainerExited) => Some(Outcome::Failed(format!(
            "container {container_id} exited; the command was killed"
        ))),
        Ok(ExecEnd::Cancelled) => None,
        Err(e) => Some(Outcome::Failed(e.to_string())),
    }
}

/// One of the command's output pipes.
type Pipe = crate::runtime::ExecReader;

/// Copies one output pipe to its stream (or, if the client did not ask for it, discards it
/// so the guest never blocks on a full pipe), then half-closes the stream.
async fn pump_out(mut pipe: Pipe, writer: Option<StreamWriter>, stream: Option<Stream>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut writer = writer;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(w) = &writer
            && w.write(&buf[..n]).await.is_err()
        {
            writer = None;
        }
    }
    if let Some(w) = &writer {
        let _ = w.close().await;
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resize_messages_reach_the_terminal_even_when_split() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(apply_resizes(
            rx,
            // A copy: the terminal must outlive the resizer for the check below.
            crate::runtime::Resizer::for_master(pty.master.try_clone().unwrap()),
        ));
        for chunk in [
            &br#"{"Width":100,"#[..],
            br#""Height":40}{"Width":132,"Height":43}"#,
            b"not json",
            br#"{"Width":90,"Height":30}"#,
        ] {
            tx.send(chunk.to_vec()).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into a valid pointer.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&pty.slave),
                libc::TIOCGWINSZ,
                &mut ws,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (90, 30));
    }

    #[test]
    fn v4_status_is_the_json_client_go_decodes() {
        let ok: serde_json::Value =
            serde_json::from_slice(&status_bytes("v4.channel.k8s.io", &Outcome::Exited(0)))
                .unwrap();
        assert_eq!(ok, serde_json::json!({"metadata": {}, "status": "Success"}));
        let bad: serde_json::Value =
            serde_json::from_slice(&status_bytes("v4.channel.k8s.io", &Outcome::Exited(3)))
                .unwrap();
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(
            bad["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        let failed: serde_json::Value = serde_json::from_slice(&status_bytes(
            "v4.channel.k8s.io",
            &Outcome::Failed("no such module".into()),
        ))
        .unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["message"], "no such module");
        // Before v4: nothing on success, text on failure.
        assert!(status_bytes("v3.channel.k8s.io", &Outcome::Exited(0)).is_empty());
        assert!(
            String::from_utf8(status_bytes("v2.channel.k8s.io", &Outcome::Exited(2)))
                .unwrap()
                .contains("non-zero exit code")
        );
    }
}
