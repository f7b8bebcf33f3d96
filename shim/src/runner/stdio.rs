//! The guest's stdout/stderr as wasmtime-wasi output streams writing into a [`CriLogWriter`]
//! (the log's one writer), and from there to the container's attach sessions.
//!
//! WASI p1 is implemented over p2 streams in wasmtime-wasi, so [`StdoutStream::p2_stream`]
//! serves both; `async_stream` exists for the trait (p3).

use std::fs::File;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::logs::{CriLogWriter, Stream};

/// Largest write the guest is invited to make at once.
const WRITE_BUDGET: usize = 64 * 1024;

/// The slave side of a `tty` container's terminal, once `runner::attach` made one.
static TERMINAL: OnceLock<Arc<File>> = OnceLock::new();

/// Makes `slave` the guest's stdout and stderr: every [`LogOutput`] made from now on
/// writes there (the terminal's pump is then the log's writer) and reports a terminal.
pub(crate) fn set_terminal(slave: File) {
    let _ = TERMINAL.set(Arc::new(slave));
}

/// One stream of a container's output: its CRI log (when the container has a log path) and
/// its attach sessions.
#[derive(Clone)]
pub(crate) struct LogOutput {
    writer: Option<Arc<CriLogWriter>>,
    stream: Stream,
    warned: Arc<AtomicBool>,
    terminal: Option<Arc<File>>,
}

impl LogOutput {
    pub(crate) fn new(writer: Option<Arc<CriLogWriter>>, stream: Stream) -> Self {
        Self {
            writer,
            stream,
            warned: Arc::new(AtomicBool::new(false)),
            terminal: TERMINAL.get().cloned(),
        }
    }

    /// Log write failures (disk full, ...) must not turn into guest failures — Rust's
    /// `println!` panics on a write error — so they are reported once on the runner's
    /// debug log and the output is dropped, as a full pipe to a dead collector would.
    ///
    /// The same bytes then go to every attach session (see `runner::attach`).
    ///
    /// On a terminal the bytes go to it instead (stdout and stderr alike, through its line
    /// discipline); its pump writes them to the log.
    fn write_bytes(&self, bytes: &[u8]) {
        if let Some(t) = &self.terminal {
            // Only fails once the runner is tearing the terminal down.
            let _ = (&**t).write_all(bytes);
            return;
        }
        let logged = self
            .writer
            .as_ref()
            .map(|w| (w, w.write(self.stream, bytes)));
        super::attach::broadcast(self.stream, bytes);
        if let Some((w, Err(e))) = logged
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            eprintln!(
                "runner: writing {} to {}: {e}; dropping output",
                self.stream.as_str(),
                w.path().display()
            );
        }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for LogOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Complete lines are written as they arrive; a partial line waits for its end (or
        // the guest's exit), exactly as containerd's line reader does.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogOutput {
    async fn ready(&mut self) {}
}

impl AsyncWrite for LogOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
