//! SPDY/3.1, the server side, as much of it as Kubernetes streaming uses.
//!
//! No maintained Rust crate speaks SPDY/3.1 as a server (the one that exists, `spdy-mux`,
//! is a young client-side multiplexer over WebSocket transports), so this is a small module
//! of its own: [`frame`] is the codec (frames, header blocks compressed with zlib and the
//! [`dictionary`]), [`session`] runs one connection (stream acceptance, PING answers,
//! flow control, bounds, idle timeout).

pub mod dictionary;
pub mod frame;
pub mod session;

pub use frame::{Frame, FrameError, Headers, Limits};
pub use session::{Session, SessionHandle, SessionLimits, Stream, StreamError, StreamWriter};
