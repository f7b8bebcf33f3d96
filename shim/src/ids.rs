//! Identifiers: 64-hex random IDs, as containerd and CRI-O make them, and Unix-nanosecond
//! timestamps, the unit every CRI timestamp uses.

use rand::RngCore;

/// A new random 64-hex-digit ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Whether `s` looks like an ID or an ID prefix we could have made (hex only), so that a
/// lookup by prefix never matches a name.
pub fn is_id_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_64_hex_and_unique() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 64);
        assert!(is_id_prefix(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn prefix_rules() {
        assert!(is_id_prefix("abc1"));
        assert!(!is_id_prefix(""));
        assert!(!is_id_prefix("xyz"));
        assert!(!is_id_prefix(&"a".repeat(65)));
    }

    #[test]
    fn now_is_nanoseconds() {
        // 2020-01-01 in ns; guards against returning seconds or millis.
        assert!(now_ns() > 1_577_836_800_000_000_000);
    }
}
