//! Single-use tokens for streaming URLs, as containerd's and CRI-O's streaming servers hand
//! them out: 256 random bits from the operating system's CSPRNG (via `rand`'s thread RNG,
//! seeded and reseeded from it), valid for [`TOKEN_TTL`], consumed by the first request that
//! presents them, and at most [`MAX_TOKENS`] outstanding.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore;

/// How long a URL stays valid (the kubelet uses it at once).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens outstanding at once; a full cache refuses new requests rather than growing.
pub const MAX_TOKENS: usize = 1000;

/// The cache is full of unexpired tokens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many streaming requests outstanding ({MAX_TOKENS} unused URLs); retry later")]
pub struct CacheFull;

/// Pending requests by token.
pub struct TokenCache<T> {
    entries: Mutex<HashMap<String, (Instant, T)>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> TokenCache<T> {
    /// An empty cache with the default TTL and capacity.
    pub fn new() -> Self {
        Self::with_limits(TOKEN_TTL, MAX_TOKENS)
    }

    /// An empty cache with other limits (tests).
    pub fn with_limits(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity,
        }
    }

    /// Stores `value` under a fresh token and returns the token (URL-safe base64).
    pub fn insert(&self, value: T) -> Result<String, CacheFull> {
        let mut entries = self.entries.lock().expect("token cache lock");
        let now = Instant::now();
        if entries.len() >= self.capacity {
            entries.retain(|_, (expires, _)| *expires > now);
        }
        if entries.len() >= self.capacity {
            return Err(CacheFull);
        }
        let mut raw = [0u8; 32];
        loop {
            rand::rng().fill_bytes(&mut raw);
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            if !entries.contains_key(&token) {
                entries.insert(token.clone(), (now + self.ttl, value));
                return Ok(token);
            }
        }
    }

    /// Takes the value of `token` if it exists and has not expired; a token works once.
    pub fn consume(&self, token: &str) -> Option<T> {
        let mut entries = self.entries.lock().expect("token cache lock");
        let (expires, value) = entries.remove(token)?;
        (expires > Instant::now()).then_some(value)
    }

    /// Tokens held (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("token cache lock").len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_random_and_url_safe() {
        let c = TokenCache::new();
        let a = c.insert(1).unwrap();
        let b = c.insert(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == b'-' || ch == b'_')
        );
        assert_eq!(c.consume(&b), Some(2));
        assert_eq!(c.consume(&b), None, "second use");
        assert_eq!(c.consume("nope"), None);
        assert_eq!(c.consume(&a), Some(1));
        assert!(c.is_empty());
    }

    #[test]
    fn tokens_expire() {
        let c = TokenCache::with_limits(Duration::from_millis(20), 10);
        let t = c.insert(()).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.consume(&t), None);
    }

    #[test]
    fn a_full_cache_refuses_until_tokens_expire_or_are_used() {
        let c = TokenCache::with_limits(Duration::from_millis(50), 3);
        let t: Vec<String> = (0..3).map(|i| c.insert(i).unwrap()).collect();
        assert_eq!(c.insert(9), Err(CacheFull));
        assert_eq!(c.consume(&t[0]), Some(0));
        c.insert(3).unwrap();
        assert_eq!(c.insert(9), Err(CacheFull));
        std::thread::sleep(Duration::from_millis(80));
        // Expired entries are swept to make room.
        c.insert(4).unwrap();
        assert_eq!(c.len(), 1);
    }
}
