//! SPDY tunnelled through a WebSocket: the `SPDY/3.1+portforward.k8s.io` subprotocol that
//! client-go's WebSocket port-forward dialer (kubectl ≥ 1.30, `critest -websocket-portforward`)
//! asks for. The WebSocket's binary messages carry the SPDY session's bytes, split wherever
//! the sender wrote; [`WsTunnel`] turns the socket back into a byte stream so the ordinary
//! SPDY session ([`super::spdy::Session`]) runs over it unchanged.
//!
//! Message size stays bounded by the socket's [`WebSocketConfig`]; a text message is a
//! protocol error; a close (or the socket ending) is the end of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

/// The tunnelled port-forward subprotocol.
pub const SPDY_PORT_FORWARD_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// Most bytes one vectored write sends as a single message.
const MAX_BATCH: usize = 1 << 20;

/// A WebSocket read and written as the byte stream its binary messages carry.
pub struct WsTunnel<S> {
    ws: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// The peer closed (or the socket ended): reads return end of stream.
    eof: bool,
}

impl<S> WsTunnel<S> {
    /// Wraps an established WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsTunnel<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => self.pending = b,
                // Control frames: tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message in a SPDY tunnel",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => self.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsTunnel<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::binary(Bytes::copy_from_slice(data)))
            .map_err(io_error)?;
        Poll::Ready(Ok(data.len()))
    }

    /// The SPDY writer hands over frame headers and payloads as one vectored batch: they go
    /// out as one message (up to [`MAX_BATCH`]), not a message each.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        let mut batch = BytesMut::new();
        for b in bufs {
            let room = MAX_BATCH - batch.len();
            if room == 0 {
                break;
            }
            batch.extend_from_slice(&b[..b.len().min(room)]);
        }
        let n = batch.len();
        Pin::new(&mut self.ws)
            .start_send(Message::binary(batch.freeze()))
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    async fn pair(
        max: usize,
    ) -> (
        WebSocketStream<tokio::io::DuplexStream>,
        WsTunnel<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(b, Role::Server, Some(config)).await;
        (client, WsTunnel::new(server))
    }

    #[tokio::test]
    async fn messages_become_one_byte_stream_both_ways() {
        let (mut client, mut tunnel) = pair(1 << 20).await;
        client.send(Message::binary(&b"hel"[..])).await.unwrap();
        client.send(Message::Ping(Bytes::new())).await.unwrap();
        client.send(Message::binary(&b"lo"[..])).await.unwrap();
        client.close(None).await.unwrap();
        let mut got = Vec::new();
        // Read in small pieces: a message may span reads.
        let mut buf = [0u8; 2];
        loop {
            let n = tunnel.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello");

        let (mut client, mut tunnel) = pair(1 << 20).await;
        tunnel.write_all(b"back").await.unwrap();
        tunnel.flush().await.unwrap();
        match client.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"back"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_vectored_write_is_one_message() {
        let (mut client, mut tunnel) = pair(1 << 20).await;
        let bufs = [io::IoSlice::new(b"head"), io::IoSlice::new(b"er+payload")];
        let n = tunnel.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 14);
        tunnel.flush().await.unwrap();
        match client.next().await {
            Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], b"header+payload"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn text_and_oversized_messages_are_errors() {
        let (mut client, mut tunnel) = pair(1 << 20).await;
        client.send(Message::text("nope")).await.unwrap();
        let e = tunnel.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let (mut client, mut tunnel) = pair(1024).await;
        let _ = client.send(Message::binary(vec![0u8; 4096])).await;
        assert!(tunnel.read(&mut [0u8; 8]).await.is_err());
    }
}
