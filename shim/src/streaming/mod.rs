//! The streaming server's building blocks (the server itself follows):
//!
//! - [`tokens`]: the single-use, expiring tokens behind streaming URLs.
//! - [`spdy`]: the SPDY/3.1 codec and session.

pub mod spdy;
pub mod tokens;

/// Resolves once `rx` holds `true` (or its sender is gone), holding no borrow of the
/// channel across an await (so the futures that `select!` on it stay `Send`).
pub(crate) async fn flipped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
