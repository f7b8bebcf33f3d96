//! The HTTP/1.1 side of the streaming server: a bounded accept loop, the token lookup, the
//! handshake Kubernetes clients expect (subprotocol negotiation first, then the SPDY
//! upgrade), and the hand-over of the upgraded connection to a session task.
//!
//! A WebSocket upgrade goes to `websocket` instead. SPDY answers, as the Go streaming server
//! gives them: an unknown, used or expired token is 404;
//! a request without `X-Stream-Protocol-Version` is 400; no protocol in common is 403 with
//! `X-Accepted-Stream-Protocol-Versions` listing ours; missing or other upgrade headers are
//! 400; success is `101 Switching Protocols` with `Upgrade: SPDY/3.1` and the chosen
//! `X-Stream-Protocol-Version`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use super::spdy::Session;
use super::{EXEC_PROTOCOLS, PORT_FORWARD_PROTOCOLS, Pending, StreamingServer};

/// Connections served at once; past it the accept loop waits.
const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request head within this long.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";

pub(super) async fn accept_loop(
    srv: Arc<StreamingServer>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(addr = %srv.addr, "streaming server listening");
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            () = crate::streaming::flipped(&mut shutdown) => break,
        };
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "streaming accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::streaming::flipped(&mut shutdown) => break,
        };
        // As Go's listeners do: frames and small interactive writes go out at once.
        let _ = conn.set_nodelay(true);
        let srv = srv.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let (srv, shutdown) = (srv.clone(), shutdown.clone());
                async move { Ok::<_, Infallible>(handle(srv, req, shutdown)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(conn), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "streaming connection ended");
            }
        });
    }
    tracing::info!("streaming server stopped");
}

fn reply(code: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into() + "\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The first protocol the client offers (in its order, over every header line and
/// comma-separated entry) that the server accepts.
pub fn negotiate<'a>(client: &HeaderMap, server: &[&'a str]) -> Option<&'a str> {
    client
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| server.iter().find(|s| **s == p).copied())
}

fn header_has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn handle(
    srv: Arc<StreamingServer>,
    mut req: Request<Incoming>,
    shutdown: watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let mut parts = req.uri().path().trim_start_matches('/').split('/');
    let (Some(kind), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
        return reply(StatusCode::NOT_FOUND, "not found");
    };
    // The token is spent whatever happens next, as in the Go server.
    let pending = match srv.tokens.consume(token) {
        Some(p) if p.path_kind() == kind => p,
        _ => {
            return reply(
                StatusCode::NOT_FOUND,
                "unknown, used or expired streaming URL",
            );
        }
    };
    if super::websocket::is_upgrade(req.headers()) {
        return super::websocket::accept(srv, req, pending, shutdown);
    }
    let server_protocols = match pending {
        Pending::Exec(_) | Pending::Attach(_) => EXEC_PROTOCOLS,
        Pending::PortForward(_) => PORT_FORWARD_PROTOCOLS,
    };
    if req.headers().get(PROTOCOL_HEADER).is_none() {
        return reply(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {PROTOCOL_HEADER} is required"),
        );
    }
    let Some(protocol) = negotiate(req.headers(), server_protocols) else {
        let mut r = reply(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: server accepts {server_protocols:?}"
            ),
        );
        for p in server_protocols {
            r.headers_mut()
                .append(ACCEPTED_HEADER, HeaderValue::from_static(p));
        }
        return r;
    };
    let h = req.headers();
    if !header_has_token(h, header::CONNECTION, "upgrade")
        || !header_has_token(h, header::UPGRADE, "SPDY/3.1")
    {
        return reply(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (want Upgrade: SPDY/3.1)",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = srv.limits;
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let session = Session::start(io, limits);
        match pending {
            Pending::Exec(r) | Pending::Attach(r) => {
                super::exec::serve(srv.rt.clone(), r, protocol, session, shutdown).await
            }
            Pending::PortForward(r) => {
                super::portforward::serve(srv.rt.clone(), r, session, shutdown).await
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(PROTOCOL_HEADER, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn negotiation_takes_the_clients_first_acceptable_protocol() {
        assert_eq!(
            negotiate(
                &headers(&[
                    "v5.channel.k8s.io",
                    "v4.channel.k8s.io",
                    "v3.channel.k8s.io"
                ]),
                EXEC_PROTOCOLS
            ),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(
                &headers(&["channel.k8s.io, v2.channel.k8s.io"]),
                EXEC_PROTOCOLS
            ),
            Some("channel.k8s.io")
        );
        assert_eq!(negotiate(&headers(&["v9.bogus"]), EXEC_PROTOCOLS), None);
        assert_eq!(negotiate(&headers(&[]), EXEC_PROTOCOLS), None);
        assert_eq!(
            negotiate(&headers(&["v4.channel.k8s.io"]), PORT_FORWARD_PROTOCOLS),
            None
        );
        assert_eq!(
            negotiate(&headers(&["portforward.k8s.io"]), PORT_FORWARD_PROTOCOLS),
            Some("portforward.k8s.io")
        );
    }

    #[test]
    fn upgrade_tokens_are_matched_case_insensitively_in_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("spdy/3.1"));
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
        assert!(header_has_token(&h, header::UPGRADE, "SPDY/3.1"));
        assert!(!header_has_token(&h, header::UPGRADE, "websocket"));
    }
}
