//! SPDY/3.1 framing: the eight-byte frame header, the control frames a Kubernetes peer
//! sends, data frames, and name/value header blocks compressed with zlib primed with the
//! SPDY dictionary (one compressor per direction, for the whole session).
//!
//! Every length is bounded before anything is allocated for it: a frame whose declared
//! length passes [`Limits::max_frame`] is rejected, a header block is inflated in small
//! steps and rejected as soon as its decompressed size passes [`Limits::max_header_block`]
//! (a zlib bomb costs at most that much), and data frames are handed out in chunks of at
//! most [`DATA_CHUNK`] bytes so a large data frame never sits in memory whole.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::dictionary::DICTIONARY;

/// The SPDY version this codec speaks.
pub const VERSION: u16 = 3;
/// Frame flag: last frame of this direction of the stream.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM flag: the sender will not receive on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS id of the initial per-stream window size.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// The most a data frame payload is handed out at once (see the module docs).
pub const DATA_CHUNK: usize = 64 * 1024;
/// Read buffer of a [`FrameReader`].
const READ_BUFFER: usize = 64 * 1024;

/// RST_STREAM / GOAWAY status codes used here.
pub mod status {
    /// GOAWAY: normal end of session.
    pub const OK: u32 = 0;
    /// RST_STREAM and GOAWAY: the peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// RST_STREAM: data for a stream that is not open.
    pub const INVALID_STREAM: u32 = 2;
    /// RST_STREAM: the stream was refused (too many, or not wanted).
    pub const REFUSED_STREAM: u32 = 3;
    /// RST_STREAM: the stream is cancelled.
    pub const CANCEL: u32 = 5;
    /// GOAWAY: internal error.
    pub const INTERNAL_ERROR: u32 = 2;
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Bounds applied while reading.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame payload accepted, in bytes. The wire format allows 16 MiB - 1.
    pub max_frame: usize,
    /// Largest header block accepted, decompressed.
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 16 << 20,
            max_header_block: 256 << 10,
        }
    }
}

/// What a peer can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame declared a length past [`Limits::max_frame`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A header block inflated past [`Limits::max_header_block`].
    #[error("header block exceeds {max} bytes decompressed")]
    HeadersTooLarge {
        /// The limit.
        max: usize,
    },
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A malformed frame or header block.
    #[error("malformed {what}")]
    Malformed {
        /// Which frame or field.
        what: &'static str,
    },
    /// The header block did not inflate.
    #[error("header block does not decompress: {0}")]
    Compression(String),
}

/// A stream's or frame's name/value headers, names lower-case as SPDY/3 requires. A value
/// holding several values separates them with NUL bytes, as on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }
}

/// One frame. Unknown control frames are reported as [`Frame::Unknown`] and ignored by the
/// session, as SPDY/3 requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream.
    SynStream {
        /// Odd for client-initiated streams.
        stream_id: u32,
        /// The stream this one is associated with (0: none).
        associated_to: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// [`FLAG_FIN`] / [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Acceptance of a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Abnormal end of a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// See [`status`].
        status: u32,
    },
    /// Session settings: (flags, id, value).
    Settings {
        /// The entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// Liveness check; answered with the same id.
    Ping {
        /// Odd when the client sent it.
        id: u32,
    },
    /// The sender ends the session.
    GoAway {
        /// Last stream the sender processed.
        last_good_stream_id: u32,
        /// See [`status`].
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control credit; stream 0 is the whole session (SPDY/3.1).
    WindowUpdate {
        /// The stream, or 0.
        stream_id: u32,
        /// Bytes of credit.
        delta: u32,
    },
    /// Stream data (when read: at most [`DATA_CHUNK`] bytes of one frame, `FLAG_FIN` only on
    /// its last chunk).
    Data {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// A control frame type this codec does not know (skipped).
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

/// Compresses outgoing header blocks (one per session direction).
pub struct HeaderEncoder(Compress);

impl HeaderEncoder {
    /// A compressor primed with the SPDY dictionary.
    pub fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(DICTIONARY)
            .expect("a fresh zlib stream accepts a dictionary");
        Self(c)
    }

    fn encode(&mut self, headers: &Headers, out: &mut Vec<u8>) {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.0.len() as u32).to_be_bytes());
        for (n, v) in &headers.0 {
            let n = n.to_ascii_lowercase();
            raw.extend_from_slice(&(n.len() as u32).to_be_bytes());
            raw.extend_from_slice(n.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut input = raw.as_slice();
        loop {
            out.reserve(input.len() + 64);
            let (in0, out0) = (self.0.total_in(), out.len());
            let spare = out.capacity() - out.len();
            self.0
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer cannot fail");
            input = &input[(self.0.total_in() - in0) as usize..];
            // Done once all input is in and the flush did not fill the space offered.
            if input.is_empty() && out.len() - out0 < spare {
                break;
            }
        }
    }
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Inflates incoming header blocks (one per session direction), bounded by
/// [`Limits::max_header_block`].
pub struct HeaderDecoder(Decompress);

impl HeaderDecoder {
    /// A fresh decompressor; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        Self(Decompress::new(true))
    }

    fn decode(&mut self, mut input: &[u8], max: usize) -> Result<Headers, FrameError> {
        let mut scratch = [0u8; 4096];
        let mut raw: Vec<u8> = Vec::new();
        loop {
            let (in0, out0) = (self.0.total_in(), self.0.total_out());
            let res = self
                .0
                .decompress(input, &mut scratch, FlushDecompress::Sync);
            let consumed = (self.0.total_in() - in0) as usize;
            let produced = (self.0.total_out() - out0) as usize;
            input = &input[consumed..];
            match res {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            // Counted while inflating: a bomb costs at most `max` plus one step.
            if raw.len() + produced > max {
                return Err(FrameError::HeadersTooLarge { max });
            }
            raw.extend_from_slice(&scratch[..produced]);
            if input.is_empty() && produced < scratch.len() {
                break;
            }
            if consumed == 0 && produced == 0 {
                return Err(FrameError::Compression("inflate made no progress".into()));
            }
        }
        parse_nv(&raw)
    }
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_nv(raw: &[u8]) -> Result<Headers, FrameError> {
    let bad = || FrameError::Malformed {
        what: "header block",
    };
    let mut p = raw;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        if p.len() < n {
            return Err(bad());
        }
        let (a, b) = p.split_at(n);
        p = b;
        Ok(a)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
    // Each pair takes at least 8 bytes: a count past that is a lie, not an allocation hint.
    if count > raw.len() / 8 {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let nlen = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let name = std::str::from_utf8(take(nlen)?).map_err(|_| bad())?;
        let vlen = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
        let value = std::str::from_utf8(take(vlen)?).map_err(|_| bad())?;
        if name.is_empty() {
            return Err(bad());
        }
        out.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    Ok(Headers(out))
}

/// Appends the eight-byte header of a data frame carrying `len` bytes (its payload follows
/// it on the wire; a sender may write the two separately).
///
/// # Panics
/// If `len` does not fit the 24-bit length field.
pub fn encode_data_header(stream_id: u32, flags: u8, len: usize, out: &mut Vec<u8>) {
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l < 1 << 24)
        .expect("a data frame carries less than 16 MiB");
    put_u31(out, stream_id);
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
}

/// Appends a 31-bit field (stream IDs, window deltas): the top bit is reserved and sent as 0.
fn put_u31(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&(v & 0x7fff_ffff).to_be_bytes());
}

impl Frame {
    /// Appends the wire form of this frame to `out`, compressing headers with `enc`.
    pub fn encode(&self, enc: &mut HeaderEncoder, out: &mut Vec<u8>) {
        let control = |out: &mut Vec<u8>, ty: u16, flags: u8, body: &[u8]| {
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&ty.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(body);
        };
        let mut body = Vec::new();
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                put_u31(&mut body, *stream_id);
                put_u31(&mut body, *associated_to);
                body.push((priority & 0x7) << 5);
                body.push(0);
                enc.encode(headers, &mut body);
                control(out, TYPE_SYN_STREAM, *flags, &body);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                put_u31(&mut body, *stream_id);
                enc.encode(headers, &mut body);
                control(out, TYPE_SYN_REPLY, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                put_u31(&mut body, *stream_id);
                body.extend_from_slice(&status.to_be_bytes());
                control(out, TYPE_RST_STREAM, 0, &body);
            }
            Frame::Settings { entries } => {
                body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (flags, id, value) in entries {
                    body.push(*flags);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(out, TYPE_SETTINGS, 0, &body);
            }
            Frame::Ping { id } => control(out, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_u31(&mut body, *last_good_stream_id);
                body.extend_from_slice(&status.to_be_bytes());
                control(out, TYPE_GOAWAY, 0, &body);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                put_u31(&mut body, *stream_id);
                enc.encode(headers, &mut body);
                control(out, TYPE_HEADERS, *flags, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_u31(&mut body, *stream_id);
                put_u31(&mut body, *delta);
                control(out, TYPE_WINDOW_UPDATE, 0, &body);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                encode_data_header(*stream_id, *flags, data.len(), out);
                out.extend_from_slice(data);
            }
            Frame::Unknown { frame_type } => control(out, *frame_type, 0, &[]),
        }
    }
}

/// Reads frames from one direction of a session (buffered: a frame header is eight bytes,
/// and reading it straight from a socket would cost a system call or two per frame).
pub struct FrameReader<R> {
    r: tokio::io::BufReader<R>,
    dec: HeaderDecoder,
    limits: Limits,
    /// The data frame being handed out in chunks: (stream, flags, bytes left).
    pending: Option<(u32, u8, usize)>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from `r` within `limits`.
    pub fn new(r: R, limits: Limits) -> Self {
        Self {
            r: tokio::io::BufReader::with_capacity(READ_BUFFER, r),
            dec: HeaderDecoder::new(),
            limits,
            pending: None,
        }
    }

    /// The underlying reader (a partly read frame and buffered bytes are abandoned).
    pub fn into_inner(self) -> R {
        self.r.into_inner()
    }

    /// The next frame; `None` at a clean end of the connection (between frames).
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some((stream_id, flags, left)) = self.pending.take() {
            return self.data_chunk(stream_id, flags, left).await.map(Some);
        }
        let mut head = [0u8; 8];
        let n = self.r.read(&mut head[..1]).await?;
        if n == 0 {
            return Ok(None);
        }
        self.r.read_exact(&mut head[1..]).await?;
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > self.limits.max_frame {
            return Err(FrameError::FrameTooLarge {
                len,
                max: self.limits.max_frame,
            });
        }
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
            return self.data_chunk(stream_id, flags, len).await.map(Some);
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        let ty = u16::from_be_bytes([head[2], head[3]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await?;
        self.control(ty, flags, &body).map(Some)
    }

    async fn data_chunk(
        &mut self,
        stream_id: u32,
        flags: u8,
        left: usize,
    ) -> Result<Frame, FrameError> {
        let n = left.min(DATA_CHUNK);
        // Read into spare capacity: nothing is zeroed only to be overwritten.
        let mut data = bytes::BytesMut::with_capacity(n);
        while data.len() < n {
            let want = (n - data.len()) as u64;
            if (&mut self.r).take(want).read_buf(&mut data).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        let rest = left - n;
        let chunk_flags = if rest == 0 {
            flags
        } else {
            self.pending = Some((stream_id, flags, rest));
            flags & !FLAG_FIN
        };
        Ok(Frame::Data {
            stream_id,
            flags: chunk_flags,
            data: data.freeze(),
        })
    }

    fn control(&mut self, ty: u16, flags: u8, b: &[u8]) -> Result<Frame, FrameError> {
        let word = |i: usize, what: &'static str| -> Result<u32, FrameError> {
            b.get(i..i + 4)
                .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
                .ok_or(FrameError::Malformed { what })
        };
        let exact = |n: usize, what: &'static str| -> Result<(), FrameError> {
            if b.len() == n {
                Ok(())
            } else {
                Err(FrameError::Malformed { what })
            }
        };
        let max = self.limits.max_header_block;
        Ok(match ty {
            TYPE_SYN_STREAM => {
                if b.len() < 10 {
                    return Err(FrameError::Malformed { what: "SYN_STREAM" });
                }
                Frame::SynStream {
                    stream_id: word(0, "SYN_STREAM")? & 0x7fff_ffff,
                    associated_to: word(4, "SYN_STREAM")? & 0x7fff_ffff,
                    priority: b[8] >> 5,
                    flags,
                    headers: self.dec.decode(&b[10..], max)?,
                }
            }
            TYPE_SYN_REPLY => Frame::SynReply {
                stream_id: word(0, "SYN_REPLY")? & 0x7fff_ffff,
                flags,
                headers: self.dec.decode(&b[4..], max)?,
            },
            TYPE_RST_STREAM => {
                exact(8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: word(0, "RST_STREAM")? & 0x7fff_ffff,
                    status: word(4, "RST_STREAM")?,
                }
            }
            TYPE_SETTINGS => {
                let n = word(0, "SETTINGS")? as usize;
                if b.len() != 4 + n.saturating_mul(8) {
                    return Err(FrameError::Malformed { what: "SETTINGS" });
                }
                let entries = (0..n)
                    .map(|i| {
                        let at = 4 + i * 8;
                        (
                            b[at],
                            u32::from_be_bytes([0, b[at + 1], b[at + 2], b[at + 3]]),
                            u32::from_be_bytes(b[at + 4..at + 8].try_into().expect("4 bytes")),
                        )
                    })
                    .collect();
                Frame::Settings { entries }
            }
            TYPE_PING => {
                exact(4, "PING")?;
                Frame::Ping {
                    id: word(0, "PING")?,
                }
            }
            TYPE_GOAWAY => {
                // SPDY/3 adds the status; tolerate the 4-byte SPDY/2 form.
                if b.len() != 8 && b.len() != 4 {
                    return Err(FrameError::Malformed { what: "GOAWAY" });
                }
                Frame::GoAway {
                    last_good_stream_id: word(0, "GOAWAY")? & 0x7fff_ffff,
                    status: word(4, "GOAWAY").unwrap_or(0),
                }
            }
            TYPE_HEADERS => Frame::Headers {
                stream_id: word(0, "HEADERS")? & 0x7fff_ffff,
                flags,
                headers: self.dec.decode(&b[4..], max)?,
            },
            TYPE_WINDOW_UPDATE => {
                exact(8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: word(0, "WINDOW_UPDATE")? & 0x7fff_ffff,
                    delta: word(4, "WINDOW_UPDATE")? & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    async fn read_all(bytes: &[u8], limits: Limits) -> Result<Vec<Frame>, FrameError> {
        let mut r = FrameReader::new(bytes, limits);
        let mut v = Vec::new();
        while let Some(f) = r.next().await? {
            v.push(f);
        }
        Ok(v)
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        use sha2::Digest;
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(DICTIONARY)),
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    #[tokio::test]
    async fn every_frame_round_trips_through_one_session() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: hdrs(&[("streamtype", "error"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: hdrs(&[]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: hdrs(&[("streamtype", "stdout"), ("multi", "a\0b")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: status::CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: status::OK,
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: hdrs(&[("x", "y")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1 << 20,
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::new(),
            },
        ];
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut enc, &mut wire);
        }
        assert_eq!(read_all(&wire, Limits::default()).await.unwrap(), frames);
    }

    #[test]
    fn header_blocks_use_the_dictionary() {
        // Primed with the dictionary, common names compress to a few bytes; a decoder that
        // is not given the dictionary cannot read them.
        let mut enc = HeaderEncoder::new();
        let mut block = Vec::new();
        enc.encode(&hdrs(&[("content-type", "text/plain")]), &mut block);
        let mut plain = Compress::new(Compression::default(), true);
        let mut undict = Vec::with_capacity(256);
        plain
            .compress_vec(b"content-type", &mut undict, FlushCompress::Sync)
            .unwrap();
        let mut raw = Decompress::new(true);
        let err = raw
            .decompress_vec(&block, &mut Vec::with_capacity(256), FlushDecompress::Sync)
            .unwrap_err();
        assert!(err.needs_dictionary().is_some(), "{err}");
        let got = HeaderDecoder::new().decode(&block, 1 << 10).unwrap();
        assert_eq!(got.get("Content-Type"), Some("text/plain"));
    }

    #[tokio::test]
    async fn oversized_frames_are_rejected_before_their_payload() {
        let limits = Limits {
            max_frame: 1024,
            max_header_block: 1024,
        };
        // A data frame header claiming 1 MiB, with no payload behind it.
        let wire = [0, 0, 0, 1, 0, 0x10, 0, 0];
        match read_all(&wire, limits).await {
            Err(FrameError::FrameTooLarge { len, max: 1024 }) => assert_eq!(len, 1 << 20),
            other => panic!("{other:?}"),
        }
        // The wire maximum passes the default limit (its payload is then simply missing).
        let wire = [0x80, 3, 0, 6, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_all(&wire, Limits::default()).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn header_bombs_are_cut_off_while_inflating() {
        // One header whose value is 1 MiB of zeros: a few KiB compressed.
        let big = "\0".repeat(1 << 20);
        let frame = Frame::Headers {
            stream_id: 1,
            flags: 0,
            headers: hdrs(&[("x", &big)]),
        };
        let mut wire = Vec::new();
        frame.encode(&mut HeaderEncoder::new(), &mut wire);
        assert!(wire.len() < 16 << 10, "{}", wire.len());
        let limits = Limits {
            max_frame: 1 << 20,
            max_header_block: 256 << 10,
        };
        assert!(matches!(
            read_all(&wire, limits).await,
            Err(FrameError::HeadersTooLarge { max }) if max == 256 << 10
        ));
    }

    #[tokio::test]
    async fn malformed_frames_are_errors() {
        // PING with a 3-byte body.
        let wire = [0x80, 3, 0, 6, 0, 0, 0, 3, 1, 2, 3];
        assert!(matches!(
            read_all(&wire, Limits::default()).await,
            Err(FrameError::Malformed { what: "PING" })
        ));
        // SPDY/2 control frame.
        let wire = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            read_all(&wire, Limits::default()).await,
            Err(FrameError::Version(2))
        ));
        // A header block that is not zlib.
        let wire = [
            0x80, 3, 0, 8, 0, 0, 0, 8, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef,
        ];
        assert!(matches!(
            read_all(&wire, Limits::default()).await,
            Err(FrameError::Compression(_))
        ));
        // A header block claiming more pairs than it could hold.
        assert!(parse_nv(&[0xff, 0xff, 0xff, 0xff]).is_err());
        // A truncated frame.
        assert!(matches!(
            read_all(&[0x80, 3, 0], Limits::default()).await,
            Err(FrameError::Io(_))
        ));
    }

    #[tokio::test]
    async fn large_data_frames_are_handed_out_in_chunks() {
        let data = Bytes::from(vec![7u8; DATA_CHUNK * 2 + 10]);
        let mut wire = Vec::new();
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: data.clone(),
        }
        .encode(&mut HeaderEncoder::new(), &mut wire);
        let frames = read_all(&wire, Limits::default()).await.unwrap();
        let sizes: Vec<(usize, u8)> = frames
            .iter()
            .map(|f| match f {
                Frame::Data { data, flags, .. } => (data.len(), *flags),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sizes,
            vec![(DATA_CHUNK, 0), (DATA_CHUNK, 0), (10, FLAG_FIN)]
        );
    }
}
