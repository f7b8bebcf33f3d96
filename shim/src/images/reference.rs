//! Image reference parsing and normalisation (`hello` → `docker.io/library/hello:latest`),
//! digest validation, and the loopback test used to default local registries to plain HTTP.
//!
//! Parsing is delegated to the distribution grammar implemented by `oci-client`'s
//! [`Reference`](oci_client::Reference); this module only fixes the canonical string forms
//! the store records and compares.

use super::error::{ImageError, Result};

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with optional port, `docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path, `library/` prefixed for official Docker Hub images.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest were given.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:<hex>`) when the reference pins one.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.trim() != s || s.is_empty() {
            return Err(invalid("empty or surrounded by whitespace".into()));
        }
        let r: oci_client::Reference = s.parse().map_err(|e| invalid(format!("{e}")))?;
        if r.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase".into()));
        }
        if let Some(d) = r.digest() {
            validate_digest(d).map_err(|e| invalid(e.to_string()))?;
        }
        Ok(ImageRef {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The fully normalised string form (`name:tag`, `name@digest` or `name:tag@digest`).
    pub fn canonical(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The `oci-client` reference addressing this image on `host` (origin or a mirror).
    pub(crate) fn to_oci(&self, host: &str) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                host.to_string(),
                self.repository.clone(),
                d.clone(),
            ),
            (Some(t), None) => oci_client::Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                t.clone(),
            ),
            (None, None) => oci_client::Reference::with_tag(
                host.to_string(),
                self.repository.clone(),
                "latest".into(),
            ),
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Normalises `s` to `registry/repository:tag` (tag defaults to `latest`); digests are
/// dropped. Used for repo tags.
pub fn normalize_tag(s: &str) -> Result<String> {
    let r = ImageRef::parse(s)?;
    Ok(format!(
        "{}:{}",
        r.name(),
        r.tag.as_deref().unwrap_or("latest")
    ))
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits (the only algorithm
/// the store addresses content by) and returns the hex part.
pub fn validate_digest(digest: &str) -> Result<&str> {
    let bad = |reason: &str| ImageError::InvalidDigest {
        digest: digest.to_string(),
        reason: reason.to_string(),
    };
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| bad("only sha256 digests are supported"))?;
    if hex.len() != 64 {
        return Err(bad("expected 64 hex digits"));
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("expected lowercase hex digits"));
    }
    Ok(hex)
}

/// True for `localhost`, `127.0.0.0/8` and `[::1]` hosts (with or without port): such
/// registries default to plain HTTP, as containerd and docker do.
pub fn is_loopback_host(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_short_names() {
        assert_eq!(
            normalize_tag("hello").unwrap(),
            "docker.io/library/hello:latest"
        );
        assert_eq!(
            normalize_tag("user/app:v1").unwrap(),
            "docker.io/user/app:v1"
        );
        assert_eq!(
            normalize_tag("localhost:5000/x").unwrap(),
            "localhost:5000/x:latest"
        );
        assert_eq!(
            normalize_tag("index.docker.io/library/busybox:1").unwrap(),
            "docker.io/library/busybox:1"
        );
        assert_eq!(normalize_tag("ghcr.io/a/b/c:t").unwrap(), "ghcr.io/a/b/c:t");
    }

    #[test]
    fn digest_references() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.canonical(), format!("localhost:5000/x@{d}"));
        let r = ImageRef::parse(&format!("x:v2@{d}")).unwrap();
        assert_eq!(r.canonical(), format!("docker.io/library/x:v2@{d}"));
    }

    #[test]
    fn rejects_invalid() {
        for bad in ["", " x", "UPPER/case", "a@sha256:123", "x:", "a//b"] {
            assert!(
                matches!(
                    ImageRef::parse(bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad:?} accepted"
            );
        }
        assert!(validate_digest("sha512:00").is_err());
        assert!(validate_digest(&format!("sha256:{}", "AB".repeat(32))).is_err());
        assert!(validate_digest(&format!("sha256:{}", "ab".repeat(32))).is_ok());
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:80",
            "127.9.9.9",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "registry.local:5000",
            "10.0.0.1:5000",
            "docker.io",
            "localhost.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
