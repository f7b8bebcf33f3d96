//! Attach (CRI `Attach`, served by [`crate::streaming`]): a session on a running container's
//! stdio, through the attach socket its runner owns (`runner::attach` describes the socket
//! and its frames).
//!
//! The daemon holds no part of a container's stdio: it connects to the runner's socket for
//! each session, so a daemon restart leaves the guest, its stdin and its log untouched, and
//! the next attach simply connects again. A session is presented as an [`ExecProcess`]
//! (stdin writer, stdout/stderr readers, resizer), so the SPDY and WebSocket sessions serve
//! exec and attach alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::exec_stream::{ExecProcess, ExecReader, ExecWriter, Resizer};
use super::{Container, Result, Runtime, RuntimeError};
use crate::runner::attach::{
    ACCEPT, HELLO, IS_TTY, MAX_FRAME, REFUSED, STDERR, STDIN, STDIN_EOF, STDOUT, WANT_STDIN, frame,
    parse_header,
};

/// How long the runner has to answer a new session.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes buffered between the runner's frames and the session's streams, each way.
const PIPE_BUFFER: usize = 64 * 1024;

impl Container {
    /// Where the container's runner binds its attach socket.
    pub fn attach_socket(&self) -> PathBuf {
        self.meta.dir.join("attach")
    }
}

/// A live attach connection; dropping it disconnects.
pub(super) struct Connection {
    demux: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Connection {
    /// Resolves when the runner closed the connection (the container exited, or the runner
    /// dropped this session as stalled).
    pub(super) async fn closed(&mut self) {
        let _ = (&mut self.demux).await;
    }

    /// Ends the session from this side.
    pub(super) fn disconnect(&mut self) {
        self.demux.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.disconnect();
    }
}

impl Runtime {
    /// Checks that an attach to `id` can be served (`stdin`: the session sends input);
    /// returns the full ID and whether the container has a terminal.
    pub fn check_attach(&self, id: &str, stdin: bool) -> Result<(String, bool)> {
        let c = self.container(id)?;
        if !c.snapshot().is_serving() {
            return Err(RuntimeError::not_running(&c.meta.id));
        }
        if stdin && !c.meta.spec.stdin {
            return Err(RuntimeError::InvalidArgument(format!(
                "container {} was not created with stdin; attach without it",
                c.meta.id
            )));
        }
        Ok((c.meta.id.clone(), c.meta.spec.tty))
    }

    /// Attaches to the running container `id`: its output from now on, and (with `stdin`)
    /// its input.
    pub async fn attach(self: &Arc<Self>, id: &str, stdin: bool) -> Result<ExecProcess> {
        let (id, _) = self.check_attach(id, stdin)?;
        let c = self.container(&id)?;
        let path = c.attach_socket();
        let unavailable = |source: std::io::Error| RuntimeError::AttachUnavailable {
            id: id.clone(),
            path: path.clone(),
            source,
        };
        let (_dir, addr) = crate::runner::attach::socket_address(&path).map_err(unavailable)?;
        let mut sock = UnixStream::connect(&addr).await.map_err(unavailable)?;
        let hello = frame(HELLO, &[if stdin { WANT_STDIN } else { 0 }]);
        let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            sock.write_all(&hello).await?;
            read_frame(&mut sock).await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
        .and_then(|r| r)
        .map_err(unavailable)?;
        let tty = match answer {
            Some((ACCEPT, flags)) => flags.first().is_some_and(|f| f & IS_TTY != 0),
            Some((REFUSED, why)) => {
                return Err(RuntimeError::precondition(
                    "container",
                    id,
                    format!("refused the attach: {}", String::from_utf8_lossy(&why)),
                ));
            }
            _ => {
                return Err(unavailable(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "unexpected answer",
                )));
            }
        };
        let (rd, mut wr) = sock.into_split();
        let (out_w, out_r) = tokio::io::duplex(PIPE_BUFFER);
        let (err_w, err_r) = tokio::io::duplex(PIPE_BUFFER);
        let demux = tokio::spawn(demux(rd, out_w, (!tty).then_some(err_w)));
        let (frames_tx, mut frames_rx) = mpsc::channel::<Vec<u8>>(16);
        let mut tasks = vec![tokio::spawn(async move {
            while let Some(f) = frames_rx.recv().await {
                if wr.write_all(&f).await.is_err() {
                    break;
                }
            }
        })];
        let stdin_writer = if stdin {
            let (in_w, in_r) = tokio::io::duplex(PIPE_BUFFER);
            tasks.push(tokio::spawn(forward_stdin(in_r, frames_tx.clone())));
            Some(Box::new(in_w) as ExecWriter)
        } else {
            None
        };
        tracing::debug!(container = %id, stdin, tty, "attached");
        Ok(ExecProcess::attached(
            Connection { demux, tasks },
            stdin_writer,
            Box::new(out_r) as ExecReader,
            (!tty).then(|| Box::new(err_r) as ExecReader),
            Resizer::for_attach(frames_tx),
            &id,
        ))
    }
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 5];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// Copies the runner's output frames to the session's stdout/stderr until the runner closes
/// the connection. A stream whose reader is gone is skipped, never waited on.
async fn demux(
    mut rd: OwnedReadHalf,
    stdout: tokio::io::DuplexStream,
    stderr: Option<tokio::io::DuplexStream>,
) {
    let mut stdout = Some(stdout);
    let mut stderr = stderr;
    while let Ok(Some((kind, data))) = read_frame(&mut rd).await {
        let target = match kind {
            STDOUT => &mut stdout,
            STDERR => &mut stderr,
            _ => continue,
        };
        if let Some(w) = target
            && w.write_all(&data).await.is_err()
        {
            *target = None;
        }
    }
}

/// Frames what the client types as `STDIN`, then `STDIN_EOF` when its input ends.
async fn forward_stdin(mut input: tokio::io::DuplexStream, frames: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        match input.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if frames.send(frame(STDIN, &buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = frames.send(frame(STDIN_EOF, &[])).await;
}
