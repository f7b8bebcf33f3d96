//! The container's attach socket: how `kubectl attach` (through the daemon) reaches a running
//! guest's stdio, the way conmon serves CRI-O.
//!
//! The runner owns it, so a daemon restart does not cut the guest's stdio: the socket lives
//! as long as the runner, and a new daemon simply connects again.
//!
//! - [`bind`] creates a unix socket at [`RunnerSpec::attach_socket`] while the runner is still
//!   root, single-threaded and in the host's view of the filesystem (before the jail): owned
//!   by root, mode 0600, so only root (the daemon) can connect — not the guest's user, and
//!   not the runner itself once it has dropped its privileges. With [`RunnerSpec::stdin`], it
//!   also makes the pipe the guest reads as stdin (fd 0).
//! - [`start`] (after the runner has confined itself, before the guest runs) spawns the
//!   accept thread. Each connection is one attach session: the daemon sends [`HELLO`]; the
//!   runner answers [`ACCEPT`] or [`REFUSED`] (more than [`MAX_ATTACHERS`] sessions, stdin
//!   asked of a container without one), then sends [`STDOUT`]/[`STDERR`] frames of
//!   everything the guest writes from then on, and takes [`STDIN`], [`STDIN_EOF`] and
//!   [`RESIZE`] frames. The runner exiting closes every connection: that is the end of an
//!   attach.
//! - [`broadcast`] is called by the CRI log's one writer (`stdio`) after each write: output
//!   reaches the log and every attacher at once. An attacher's frames wait in a queue of at
//!   most [`MAX_QUEUED`] bytes; one that falls further behind is disconnected, so a stalled
//!   client never slows the guest or the log.
//! - `stdin_once`: the guest's stdin is closed (it reads end of file) when the first attach
//!   session that had stdin sends [`STDIN_EOF`] or goes away; otherwise stdin stays open for
//!   the next attacher.
//!
//! # Frames
//! `kind: u8`, `len: u32` big-endian, then `len` bytes (at most [`MAX_FRAME`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::RunnerSpec;
use crate::logs::{CriLogWriter, Stream};

/// Daemon → runner: the first frame; payload one byte of flags ([`WANT_STDIN`]).
pub const HELLO: u8 = 1;
/// Daemon → runner: bytes for the guest's stdin.
pub const STDIN: u8 = 2;
/// Daemon → runner: the client's stdin ended.
pub const STDIN_EOF: u8 = 3;
/// Daemon → runner: a terminal size, width then height, `u16` big-endian each.
pub const RESIZE: u8 = 4;
/// Runner → daemon: the session is on; payload one byte of flags ([`IS_TTY`]).
pub const ACCEPT: u8 = 0x81;
/// Runner → daemon: the session is refused; payload the reason (UTF-8).
pub const REFUSED: u8 = 0x82;
/// Runner → daemon: guest stdout (with a terminal: everything the guest writes).
pub const STDOUT: u8 = 0x83;
/// Runner → daemon: guest stderr.
pub const STDERR: u8 = 0x84;

/// [`HELLO`] flag: the session sends stdin.
pub const WANT_STDIN: u8 = 1;
/// [`ACCEPT`] flag: the guest's stdio is a terminal.
pub const IS_TTY: u8 = 1;

/// Largest frame payload either side accepts.
pub const MAX_FRAME: usize = 32 * 1024;
/// Attach sessions one container serves at once.
pub const MAX_ATTACHERS: usize = 16;
/// Output bytes queued for one attacher before it is disconnected as stalled. Large enough
/// for a burst of output over a slow link, small enough that sixteen stalled attachers cost
/// the container's cgroup little.
pub const MAX_QUEUED: usize = 1 << 20;
/// How long a new connection has to send its [`HELLO`].
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The terminal's end-of-file character (^D, `VEOF` in the default termios).
const EOT: u8 = 0x04;
/// How long an exiting runner waits for its attachers' queues to drain.
const DRAIN: Duration = Duration::from_secs(1);

/// Appends one frame to `out`.
pub fn encode(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_FRAME);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// One frame as bytes.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    encode(&mut v, kind, payload);
    v
}

/// Parses a frame header: the kind and payload length, or an error for an oversized frame.
pub fn parse_header(h: [u8; 5]) -> io::Result<(u8, usize)> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    Ok((h[0], len))
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 5];
    match r.read_exact(&mut h) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = parse_header(h)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// What [`bind`] prepared, handed to [`start`].
pub(crate) struct Bound {
    listener: UnixListener,
    stdin: Option<File>,
    stdin_once: bool,
    /// The master side of the guest's terminal (`tty` containers).
    tty: Option<OwnedFd>,
}

/// Binds the attach socket of `spec` (if it names one) as root-only. With `spec.stdin`, fd 0
/// becomes the read end of a pipe whose write end the sessions feed. With a terminal
/// (`spec.stdio.tty`): a new pseudo-terminal whose slave side is the guest's stdout and
/// stderr (see `stdio`) and, with `spec.stdin`, fd 0; sessions write to its master side,
/// which [`start`] pumps into the log. Call while still root, single-threaded (the umask is
/// process-wide) and in the host's filesystem view (`/dev/ptmx`).
pub(crate) fn bind(spec: &RunnerSpec) -> Result<Option<Bound>, String> {
    let Some(path) = &spec.stdio.attach_socket else {
        return Ok(None);
    };
    let listener = bind_private(path)?;
    let tty = if spec.stdio.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("open a terminal: {e}"))?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| format!("set up the terminal: {e}"))?;
        }
        if spec.stdin {
            nix::unistd::dup2_stdin(&pty.slave)
                .map_err(|e| format!("make the terminal fd 0: {e}"))?;
        }
        super::stdio::set_terminal(File::from(pty.slave));
        Some(pty.master)
    } else {
        None
    };
    let stdin = match (&tty, spec.stdin) {
        (_, false) => None,
        (Some(master), true) => Some(File::from(
            master
                .try_clone()
                .map_err(|e| format!("open the terminal for input: {e}"))?,
        )),
        (None, true) => {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("make the stdin pipe: {e}"))?;
            nix::unistd::dup2_stdin(&r).map_err(|e| format!("make the stdin pipe fd 0: {e}"))?;
            Some(File::from(w))
        }
    };
    Ok(Some(Bound {
        listener,
        stdin,
        stdin_once: spec.stdio.stdin_once,
        tty,
    }))
}

/// Longest path a unix socket address holds (`sun_path` without its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The address to bind or connect to for the socket at `path`: `path` itself, or, when it
/// is too long for a socket address (a deeply nested state root), the same file reached
/// through `/proc/self/fd/<dir>/<name>` with `dir` an `O_PATH` handle on its directory —
/// keep the returned fd open until the bind or connect is done.
pub fn socket_address(path: &Path) -> io::Result<(Option<OwnedFd>, std::path::PathBuf)> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok((None, path.to_owned()));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a socket path",
        ));
    };
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    let addr = Path::new("/proc/self/fd")
        .join(fd.as_raw_fd().to_string())
        .join(name);
    Ok((Some(fd), addr))
}

/// Binds a unix socket at `path` that only its owner (root) can connect to: created under a
/// umask of 0177 so it is never reachable by anyone else, even for an instant.
fn bind_private(path: &Path) -> Result<UnixListener, String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "remove stale attach socket {}: {e}",
                path.display()
            ));
        }
    }
    let (_dir, addr) =
        socket_address(path).map_err(|e| format!("attach socket {}: {e}", path.display()))?;
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(&addr);
    nix::sys::stat::umask(old);
    bound.map_err(|e| format!("bind attach socket {}: {e}", path.display()))
}

/// One connected attach session, as the output side sees it.
struct Attacher {
    id: u64,
    queue: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    /// A second handle on the socket, to shut it down under a writer blocked on a stalled
    /// peer.
    socket: UnixStream,
}

/// The sessions of this runner.
struct Hub {
    attachers: Mutex<Vec<Attacher>>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stdin: Mutex<Option<File>>,
    stdin_once: bool,
    has_stdin: bool,
    tty: Option<Arc<OwnedFd>>,
    next_id: AtomicUsize,
}

static HUB: OnceLock<Arc<Hub>> = OnceLock::new();

/// The thread copying a terminal's output to the log and the attachers, and whether it
/// should stop once the terminal has nothing more to read.
struct TerminalPump {
    thread: std::thread::JoinHandle<()>,
    finishing: Arc<std::sync::atomic::AtomicBool>,
}

static PUMP: Mutex<Option<TerminalPump>> = Mutex::new(None);

/// How long the terminal pump waits for output before checking whether it should stop.
const PUMP_POLL: Duration = Duration::from_millis(50);

/// Starts serving attach sessions on `bound`, and with a terminal, the thread that copies
/// what the guest writes to it into `log` (as `stdout`) and to the attachers. Threads are
/// fine from here: the runner has joined its namespaces.
pub(crate) fn start(bound: Bound, log: Option<Arc<CriLogWriter>>) -> io::Result<()> {
    let tty = bound.tty.map(Arc::new);
    if let Some(master) = &tty {
        let finishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (master, stop) = (master.clone(), finishing.clone());
        let thread = std::thread::Builder::new()
            .name("terminal".into())
            .stack_size(128 * 1024)
            .spawn(move || pump_terminal(&master, log.as_deref(), &stop))?;
        *PUMP.lock().unwrap_or_else(|e| e.into_inner()) = Some(TerminalPump { thread, finishing });
    }
    let hub = Arc::new(Hub {
        attachers: Mutex::new(Vec::new()),
        writers: Mutex::new(Vec::new()),
        has_stdin: bound.stdin.is_some(),
        stdin: Mutex::new(bound.stdin),
        stdin_once: bound.stdin_once,
        tty,
        next_id: AtomicUsize::new(0),
    });
    let _ = HUB.set(hub.clone());
    let listener = bound.listener;
    std::thread::Builder::new()
        .name("attach".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => hub.clone().serve(s),
                    Err(e) => {
                        eprintln!("runner: attach socket: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}

/// Copies the terminal's output to `log` and the attachers until it hangs up, or until
/// `finishing` is set and nothing has arrived for [`PUMP_POLL`].
fn pump_terminal(master: &OwnedFd, log: Option<&CriLogWriter>, finishing: &AtomicBool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(PUMP_POLL.as_millis() as u16)) {
            Ok(0) => {
                if finishing.load(Ordering::SeqCst) {
                    return;
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        // EIO once every slave handle is closed: the terminal hung up.
        let n = match nix::unistd::read(master, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(log) = log
            && let Err(e) = log.write(Stream::Stdout, &buf[..n])
        {
            eprintln!(
                "runner: writing the terminal to {}: {e}",
                log.path().display()
            );
        }
        broadcast(Stream::Stdout, &buf[..n]);
    }
}

/// With a terminal: waits (at most [`DRAIN`]) until its pump has copied everything the
/// guest wrote. Call before closing the log.
pub(crate) fn drain_terminal() {
    let Some(pump) = PUMP.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    pump.finishing.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && !pump.thread.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends guest output on `stream` to every attacher (called after it went to the log).
pub(crate) fn broadcast(stream: Stream, bytes: &[u8]) {
    if let Some(hub) = HUB.get() {
        hub.broadcast(stream, bytes);
    }
}

/// Lets queued output reach the attachers (for at most a second), then disconnects them.
/// Called once the guest is done and the log is closed, just before the runner exits.
pub(crate) fn finish() {
    let Some(hub) = HUB.get() else { return };
    // Dropping the senders ends each writer once its queue is empty.
    hub.attachers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let writers = std::mem::take(&mut *hub.writers.lock().unwrap_or_else(|e| e.into_inner()));
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline && writers.iter().any(|w| !w.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Hub {
    fn broadcast(&self, stream: Stream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => STDOUT,
            Stream::Stderr => STDERR,
        };
        let mut attachers = self.attachers.lock().unwrap_or_else(|e| e.into_inner());
        if attachers.is_empty() {
            return;
        }
        let mut frames = Vec::with_capacity(bytes.len() + 5 * bytes.len().div_ceil(MAX_FRAME));
        for chunk in bytes.chunks(MAX_FRAME) {
            encode(&mut frames, kind, chunk);
        }
        attachers.retain(|a| {
            let queued = a.queued.fetch_add(frames.len(), Ordering::SeqCst) + frames.len();
            if queued > MAX_QUEUED || a.queue.send(frames.clone()).is_err() {
                eprintln!(
                    "runner: attach session {} is {queued} bytes behind; disconnecting it",
                    a.id
                );
                let _ = a.socket.shutdown(std::net::Shutdown::Both);
                return false;
            }
            true
        });
    }

    /// Serves one connection: the handshake here, then a writer thread for output and a
    /// reader thread for input.
    fn serve(self: Arc<Self>, mut s: UnixStream) {
        let _ = s.set_read_timeout(Some(HELLO_TIMEOUT));
        let flags = match read_frame(&mut s) {
            Ok(Some((HELLO, p))) => p.first().copied().unwrap_or(0),
            _ => return,
        };
        let _ = s.set_read_timeout(None);
        let wants_stdin = flags & WANT_STDIN != 0;
        let refuse = |mut s: UnixStream, why: &str| {
            let _ = s.write_all(&frame(REFUSED, why.as_bytes()));
        };
        if wants_stdin && !self.has_stdin {
            return refuse(s, "the container was not created with stdin");
        }
        let (Ok(reader), Ok(socket)) = (s.try_clone(), s.try_clone()) else {
            return;
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) as u64;
        {
            let mut attachers = self.attachers.lock().unwrap_or_else(|e| e.into_inner());
            if attachers.len() >= MAX_ATTACHERS {
                drop(attachers);
                return refuse(
                    s,
                    &format!("too many attach sessions (at most {MAX_ATTACHERS})"),
                );
            }
            // Accepted before any output is queued, so the ACCEPT frame comes first.
            let accept = frame(ACCEPT, &[if self.tty.is_some() { IS_TTY } else { 0 }]);
            if s.write_all(&accept).is_err() {
                return;
            }
            attachers.push(Attacher {
                id,
                queue: tx,
                queued: queued.clone(),
                socket,
            });
        }
        let writer = std::thread::Builder::new()
            .name("attach-out".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while let Ok(frames) = rx.recv() {
                    let n = frames.len();
                    if s.write_all(&frames).is_err() {
                        break;
                    }
                    queued.fetch_sub(n, Ordering::SeqCst);
                }
                let _ = s.shutdown(std::net::Shutdown::Both);
            });
        match writer {
            Ok(w) => self
                .writers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(w),
            Err(_) => return self.remove(id),
        }
        let hub = self.clone();
        let spawned = std::thread::Builder::new()
            .name("attach-in".into())
            .stack_size(64 * 1024)
            .spawn(move || hub.read_input(id, reader, wants_stdin));
        if spawned.is_err() {
            self.remove(id);
        }
    }

    fn remove(&self, id: u64) {
        let mut attachers = self.attachers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = attachers.iter().position(|a| a.id == id) {
            let a = attachers.remove(i);
            let _ = a.socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Reads a session's input until it goes away.
    fn read_input(&self, id: u64, mut s: UnixStream, wants_stdin: bool) {
        loop {
            match read_frame(&mut s) {
                Ok(Some((STDIN, data))) if wants_stdin => {
                    let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(&data).is_err()
                    {
                        // The guest closed its stdin: nothing more will be read.
                        *stdin = None;
                    }
                }
                Ok(Some((STDIN_EOF, _))) if wants_stdin => {
                    if self.stdin_once {
                        self.close_stdin();
                    }
                }
                Ok(Some((RESIZE, p))) if p.len() == 4 => {
                    if let Some(master) = &self.tty {
                        resize(
                            master,
                            u16::from_be_bytes([p[0], p[1]]),
                            u16::from_be_bytes([p[2], p[3]]),
                        );
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if wants_stdin && self.stdin_once {
            self.close_stdin();
        }
        self.remove(id);
    }

    /// Ends the guest's input: closes the pipe, or on a terminal (which stays the guest's
    /// output) types the end-of-file character, as a user's ^D would.
    fn close_stdin(&self) {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty.is_some()
            && let Some(t) = stdin.as_mut()
        {
            let _ = t.write_all(&[EOT]);
        }
        *stdin = None;
    }
}

/// Sets the size of the terminal whose master side is `master`; the kernel signals the
/// guest's process group (SIGWINCH), and WASI terminal queries see the new size.
pub(crate) fn resize(master: &OwnedFd, width: u16, height: u16) {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is ours.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut v = Vec::new();
        encode(&mut v, STDOUT, b"hello");
        encode(&mut v, STDIN_EOF, b"");
        let mut r = &v[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((STDOUT, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), Some((STDIN_EOF, Vec::new())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut big = vec![STDIN];
        big.extend_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
    }

    #[test]
    fn a_socket_path_too_long_for_an_address_still_binds_and_connects() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("d".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let path = deep.join("attach");
        assert!(
            UnixListener::bind(&path).is_err(),
            "too long for a plain bind"
        );
        let l = bind_private(&path).unwrap();
        let (_fd, addr) = socket_address(&path).unwrap();
        let _c = UnixStream::connect(&addr).unwrap();
        l.accept().unwrap();
        assert!(path.exists());
    }

    #[test]
    fn the_socket_is_private_to_root() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attach");
        std::fs::write(&path, b"stale").unwrap();
        let _l = bind_private(&path).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.uid(), nix::unistd::geteuid().as_raw());
    }

    fn hub(stdin: Option<File>, stdin_once: bool) -> Arc<Hub> {
        Arc::new(Hub {
            attachers: Mutex::new(Vec::new()),
            writers: Mutex::new(Vec::new()),
            has_stdin: stdin.is_some(),
            stdin: Mutex::new(stdin),
            stdin_once,
            tty: None,
            next_id: AtomicUsize::new(0),
        })
    }

    fn connect(h: &Arc<Hub>, flags: u8) -> (UnixStream, u8, Vec<u8>) {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(&frame(HELLO, &[flags])).unwrap();
        h.clone().serve(server);
        let (kind, payload) = read_frame(&mut client).unwrap().unwrap();
        (client, kind, payload)
    }

    #[test]
    fn output_fans_out_and_a_stalled_attacher_is_dropped_without_blocking() {
        let h = hub(None, false);
        let (mut fast, kind, _) = connect(&h, 0);
        assert_eq!(kind, ACCEPT);
        let (stalled, kind, _) = connect(&h, 0);
        assert_eq!(kind, ACCEPT);
        let reader = std::thread::spawn(move || {
            let mut got = 0usize;
            while let Ok(Some((k, p))) = read_frame(&mut fast) {
                assert_eq!(k, STDOUT);
                got += p.len();
            }
            got
        });
        // Far more than the stalled attacher's socket buffer and queue can hold, at a pace
        // a reading attacher keeps up with (16 MB/s); no broadcast may wait on the stalled
        // one.
        let chunk = vec![b'x'; 16 * 1024];
        let total = 4 * MAX_QUEUED;
        for _ in 0..total / chunk.len() {
            let t = Instant::now();
            h.broadcast(Stream::Stdout, &chunk);
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            h.attachers.lock().unwrap().len(),
            1,
            "the stalled one is gone"
        );
        h.attachers.lock().unwrap().clear();
        assert_eq!(reader.join().unwrap(), total);
        drop(stalled);
    }

    #[test]
    fn stdin_once_closes_the_guest_stdin_when_the_first_stdin_session_ends() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let h = hub(Some(File::from(w)), true);
        let (mut c, kind, _) = connect(&h, WANT_STDIN);
        assert_eq!(kind, ACCEPT);
        c.write_all(&frame(STDIN, b"hi\n")).unwrap();
        c.write_all(&frame(STDIN_EOF, b"")).unwrap();
        let mut got = Vec::new();
        File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hi\n");
    }

    #[test]
    fn without_stdin_once_stdin_outlives_a_session() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let h = hub(Some(File::from(w)), false);
        let (mut c, _, _) = connect(&h, WANT_STDIN);
        c.write_all(&frame(STDIN, b"one")).unwrap();
        c.write_all(&frame(STDIN_EOF, b"")).unwrap();
        drop(c);
        // Each session is served by its own thread: read the first one's input before the
        // second session starts, so the order of the two is not a race.
        let mut r = File::from(r);
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"one");
        let (mut c2, kind, _) = connect(&h, WANT_STDIN);
        assert_eq!(kind, ACCEPT);
        c2.write_all(&frame(STDIN, b"two")).unwrap();
        drop(c2);
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"two");
        // Still open: closing the hub's end is what ends it.
        h.stdin.lock().unwrap().take();
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn refusals_say_why() {
        let h = hub(None, false);
        let (_, kind, why) = connect(&h, WANT_STDIN);
        assert_eq!(kind, REFUSED);
        assert!(String::from_utf8(why).unwrap().contains("stdin"));
        let conns: Vec<_> = (0..MAX_ATTACHERS).map(|_| connect(&h, 0)).collect();
        assert!(conns.iter().all(|(_, k, _)| *k == ACCEPT));
        let (_, kind, why) = connect(&h, 0);
        assert_eq!(kind, REFUSED);
        assert!(String::from_utf8(why).unwrap().contains("too many"));
    }
}
