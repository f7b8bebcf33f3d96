//! The kubelet's CRI container log format.
//!
//! Every record is one line `<timestamp> <stream> <tag> <content>\n`:
//! - `timestamp`: RFC 3339 in UTC with nanoseconds (`2026-01-02T15:04:05.000000001Z`; always 9
//!   fractional digits, which the kubelet's RFC3339Nano parser accepts),
//! - `stream`: `stdout` or `stderr`,
//! - `tag`: `F` for a full line (the content ended with a newline, which is not repeated) or `P`
//!   for a partial chunk of a longer line that continues in the next record of the same stream,
//! - `content`: the guest's bytes, unchanged.
//!
//! [`CriLogWriter`] is shared by a container's stdout and stderr (one file, one mutex). Each
//! stream is line-buffered on its own, so interleaved writes never mix two streams in a record.
//! A pending line longer than [`MAX_LINE`] is cut into `P` records (as containerd does at
//! 16 KiB); whatever partial line remains at [`CriLogWriter::close`] becomes an `F` record.
//! [`CriLogWriter::reopen`] serves `ReopenContainerLog`: the kubelet renames the file while
//! rotating and asks the runtime to continue in a fresh file at the same path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Longest content of one record; longer lines are split into `P` records. containerd's
/// default `max_container_log_line_size` is the same 16 KiB.
pub const MAX_LINE: usize = 16 * 1024;

/// Permission bits of a new log file: the kubelet (root) reads it; log collectors running as a
/// group member may too; nobody else.
pub const LOG_FILE_MODE: u32 = 0o640;

/// Which output stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

impl Stream {
    /// The name in the log format.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// A CRI log file written by both output streams of one container.
#[derive(Debug)]
pub struct CriLogWriter {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    /// Bytes of an unfinished line, per stream.
    pending: [Vec<u8>; 2],
}

fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_FILE_MODE)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl CriLogWriter {
    /// Opens (creating with mode 0640, appending) the log file at `path`.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let file = open_log(&path)?;
        Ok(Self {
            path,
            inner: Mutex::new(Inner {
                file,
                pending: [Vec::new(), Vec::new()],
            }),
        })
    }

    /// The path the writer (re)opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a partially formatted buffer that was
        // never written; the file itself is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends guest output of `stream`: every completed line becomes an `F` record, a pending
    /// line that grows beyond [`MAX_LINE`] is emitted in `P` chunks, the rest waits for more.
    pub fn write(&self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        self.write_at(stream, bytes, &timestamp())
    }

    fn write_at(&self, stream: Stream, bytes: &[u8], ts: &str) -> io::Result<()> {
        let mut inner = self.lock();
        let Inner { file, pending } = &mut *inner;
        let pending = &mut pending[stream.index()];
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            pending.extend_from_slice(&rest[..nl]);
            emit_line(&mut out, ts, stream, pending);
            pending.clear();
            rest = &rest[nl + 1..];
        }
        pending.extend_from_slice(rest);
        while pending.len() > MAX_LINE {
            let cut = utf8_cut(pending, MAX_LINE);
            emit_record(&mut out, ts, stream, 'P', &pending[..cut]);
            pending.drain(..cut);
        }
        if out.is_empty() {
            Ok(())
        } else {
            file.write_all(&out)
        }
    }

    /// Writes out any pending partial lines as `F` records (the stream ended without a final
    /// newline). Call when the guest has exited.
    pub fn close(&self) -> io::Result<()> {
        let ts = timestamp();
        let mut inner = self.lock();
        let Inner { file, pending } = &mut *inner;
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let p = &mut pending[stream.index()];
            if !p.is_empty() {
                emit_line(&mut out, &ts, stream, p);
                p.clear();
            }
        }
        if !out.is_empty() {
            file.write_all(&out)?;
        }
        file.sync_data()
    }

    /// Reopens the file at the same path (after the kubelet renamed it for rotation). Pending
    /// partial lines are kept and continue in the new file. On failure the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_log(&self.path)?;
        self.lock().file = file;
        Ok(())
    }
}

/// Appends the complete `line` as an `F` record, preceded by `P` records if it exceeds
/// [`MAX_LINE`].
fn emit_line(out: &mut Vec<u8>, ts: &str, stream: Stream, line: &[u8]) {
    let mut rest = line;
    while rest.len() > MAX_LINE {
        let cut = utf8_cut(rest, MAX_LINE);
        emit_record(out, ts, stream, 'P', &rest[..cut]);
        rest = &rest[cut..];
    }
    emit_record(out, ts, stream, 'F', rest);
}

fn emit_record(out: &mut Vec<u8>, ts: &str, stream: Stream, tag: char, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Where to cut `bytes` at most `max` bytes in so a UTF-8 character is not split: back off over
/// up to three continuation bytes. Non-UTF-8 output is cut at `max`.
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut cut = max;
    while cut > max - 3 && (bytes[cut] & 0xC0) == 0x80 {
        cut -= 1;
    }
    if (bytes[cut] & 0xC0) == 0x80 {
        max
    } else {
        cut
    }
}

/// Now as RFC 3339 UTC with nanoseconds.
pub fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// One parsed record of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp as written.
    pub timestamp: String,
    /// Which stream.
    pub stream: Stream,
    /// `true` for `P` (the line continues in the next record of this stream).
    pub partial: bool,
    /// The content, without the record's newline.
    pub content: String,
}

/// Parses one record (with or without its trailing newline); `None` if malformed.
pub fn parse_line(line: &str) -> Option<LogLine> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    let stream = match parts.next()? {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        "F" => false,
        "P" => true,
        _ => return None,
    };
    Some(LogLine {
        timestamp: timestamp.to_string(),
        stream,
        partial,
        content: parts.next().unwrap_or("").to_string(),
    })
}

/// Reads a whole CRI log file; malformed lines are an `InvalidData` error.
pub fn read_log(path: &Path) -> io::Result<Vec<LogLine>> {
    let text = std::fs::read(path)?;
    String::from_utf8_lossy(&text)
        .lines()
        .map(|l| {
            parse_line(l).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: malformed CRI log line {l:?}", path.display()),
                )
            })
        })
        .collect()
}

/// Joins `P` records with the following records of the same stream: the lines the guest wrote
/// on `stream`, in order.
pub fn messages(lines: &[LogLine], stream: Stream) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for l in lines.iter().filter(|l| l.stream == stream) {
        current.push_str(&l.content);
        if !l.partial {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, PathBuf, CriLogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let w = CriLogWriter::open(&path).unwrap();
        (dir, path, w)
    }

    #[test]
    fn full_lines_in_cri_format() {
        let (_d, path, w) = setup();
        w.write(Stream::Stdout, b"hello\nworld\n").unwrap();
        w.write(Stream::Stderr, b"oops\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Vec<&str> = text.lines().collect();
        assert_eq!(raw.len(), 3);
        // 2026-01-02T15:04:05.123456789Z stdout F hello
        let (ts, rest) = raw[0].split_once(' ').unwrap();
        assert_eq!(rest, "stdout F hello");
        assert_eq!(ts.len(), "2026-01-02T15:04:05.123456789Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok());
        assert!(raw[1].ends_with(" stdout F world"));
        assert!(raw[2].ends_with(" stderr F oops"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            LOG_FILE_MODE
        );
    }

    #[test]
    fn streams_buffer_independently() {
        let (_d, path, w) = setup();
        w.write(Stream::Stdout, b"abc").unwrap();
        w.write(Stream::Stderr, b"err").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        w.write(Stream::Stderr, b"or\n").unwrap();
        w.write(Stream::Stdout, b"def\n").unwrap();
        let lines = read_log(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].stream, lines[0].content.as_str()),
            (Stream::Stderr, "error")
        );
        assert_eq!(
            (lines[1].stream, lines[1].content.as_str()),
            (Stream::Stdout, "abcdef")
        );
        assert!(lines.iter().all(|l| !l.partial));
    }

    #[test]
    fn empty_line_and_close_flushes_partial_as_full() {
        let (_d, path, w) = setup();
        w.write(Stream::Stdout, b"\nno newline").unwrap();
        w.close().unwrap();
        let lines = read_log(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].content, "");
        assert_eq!(lines[1].content, "no newline");
        assert!(!lines[1].partial);
        // Closing again writes nothing more.
        w.close().unwrap();
        assert_eq!(read_log(&path).unwrap().len(), 2);
    }

    #[test]
    fn long_lines_are_split_into_partials() {
        let (_d, path, w) = setup();
        let long = "x".repeat(40 * 1024);
        // Written in 1 KiB pieces like a guest flushing often.
        for chunk in long.as_bytes().chunks(1024) {
            w.write(Stream::Stdout, chunk).unwrap();
        }
        w.write(Stream::Stdout, b"\nafter\n").unwrap();
        let lines = read_log(&path).unwrap();
        let tags: Vec<bool> = lines.iter().map(|l| l.partial).collect();
        assert_eq!(tags, vec![true, true, false, false]);
        assert_eq!(lines[0].content.len(), MAX_LINE);
        assert_eq!(lines[1].content.len(), MAX_LINE);
        assert_eq!(lines[2].content.len(), 40 * 1024 - 2 * MAX_LINE);
        assert_eq!(
            messages(&lines, Stream::Stdout),
            vec![long, "after".to_string()]
        );
        // One write of a long complete line splits the same way.
        let (_d2, path2, w2) = setup();
        w2.write(
            Stream::Stderr,
            format!("{}\n", "y".repeat(MAX_LINE + 1)).as_bytes(),
        )
        .unwrap();
        let lines = read_log(&path2).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].partial && !lines[1].partial);
        assert_eq!(lines[1].content, "y");
    }

    #[test]
    fn multibyte_content_is_not_split_inside_a_character() {
        let (_d, path, w) = setup();
        // 'é' is two bytes and 'ü€' mixes two and three; make the cut fall inside a character.
        let mut line = "a".repeat(MAX_LINE - 1);
        line.push_str(&"€".repeat(10));
        w.write(Stream::Stdout, line.as_bytes()).unwrap();
        w.write(Stream::Stdout, "\nhéllo wörld ü€\n".as_bytes())
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8(bytes).expect("every record is valid UTF-8");
        let lines: Vec<LogLine> = text.lines().map(|l| parse_line(l).unwrap()).collect();
        assert!(lines[0].partial);
        assert_eq!(lines[0].content.len(), MAX_LINE - 1);
        assert_eq!(
            messages(&lines, Stream::Stdout),
            vec![line, "héllo wörld ü€".to_string()]
        );
    }

    #[test]
    fn reopen_continues_in_a_new_file_at_the_same_path() {
        let (dir, path, w) = setup();
        w.write(Stream::Stdout, b"before\npart").unwrap();
        let rotated = dir.path().join("0.log.20260102-150405");
        std::fs::rename(&path, &rotated).unwrap();
        w.write(Stream::Stdout, b"ial\n").unwrap(); // still goes to the renamed file
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"after\n").unwrap();
        let old = read_log(&rotated).unwrap();
        let new = read_log(&path).unwrap();
        assert_eq!(
            old.iter().map(|l| l.content.as_str()).collect::<Vec<_>>(),
            vec!["before", "partial"]
        );
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].content, "after");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            LOG_FILE_MODE
        );
    }

    #[test]
    fn parse_line_accepts_cri_records_and_rejects_garbage() {
        let l = parse_line("2026-01-02T15:04:05.999999999Z stdout F hello world\n").unwrap();
        assert_eq!(l.stream, Stream::Stdout);
        assert!(!l.partial);
        assert_eq!(l.content, "hello world");
        // containerd's RFC3339Nano trims zeros; that must parse too.
        let l = parse_line("2026-01-02T15:04:05.5Z stderr P ").unwrap();
        assert!(l.partial);
        assert_eq!(l.content, "");
        assert!(parse_line("2026-01-02T15:04:05Z stdin F x").is_none());
        assert!(parse_line("yesterday stdout F x").is_none());
        assert!(parse_line("2026-01-02T15:04:05Z stdout X x").is_none());
        assert!(parse_line("").is_none());
    }
}
