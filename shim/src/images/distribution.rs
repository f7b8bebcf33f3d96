//! A small client for the pull side of the OCI distribution protocol, on `reqwest`, that bounds
//! everything a registry sends and refuses redirects into the node's own networks.
//!
//! # Why not `oci-client` for pulls
//! `oci-client` 0.18 reads manifest, token and error bodies whole before looking at their size,
//! echoes error bodies into its errors (and so into pod events), and follows up to ten
//! redirects to any host and scheme; none of that can be configured. Pulls are driven by
//! whatever image name a pod author writes, so they go through this module instead. Pushes
//! (`wasmcri image push`, an operator's CLI path against a registry the operator chose) still
//! use `oci-client`; see [`super::registry`].
//!
//! # What it speaks
//! `GET /v2/<name>/manifests/<reference>` and `GET /v2/<name>/blobs/<digest>`, with the auth
//! flow registries use: a request is sent anonymously (or with a cached token, or with the
//! static bearer token of [`Credentials::Bearer`]); a `401` carrying
//! `WWW-Authenticate: Bearer realm=..,service=..,scope=..` makes us fetch a token from the
//! realm (with basic credentials if we have them) and retry once; a `Basic` challenge is
//! answered with the basic credentials, if any.
//!
//! # Limits, enforced while reading
//! Every body is read chunk by chunk and the read fails as soon as the running total passes
//! its limit (a `Content-Length` above it fails before the body is read): manifests and
//! indexes at the caller's limit, token responses at [`MAX_TOKEN_BODY`], error responses at
//! [`MAX_ERROR_BODY`] (a larger one is dropped unread). Blobs stream to the caller's writer
//! and must not exceed their descriptor's size; their sha256 is checked at the end. Only an
//! excerpt of the origin's JSON error message ([`MAX_ERROR_EXCERPT`] printable ASCII
//! characters) ever reaches an error's text. Manifest and token requests also have an overall
//! deadline ([`SMALL_BODY_DEADLINE`]), so a registry trickling one byte a minute cannot hold a
//! pull forever.
//!
//! # Redirects
//! [`check_redirect`] is the policy: at most [`MAX_REDIRECTS`] hops, `http`/`https` only, no
//! `https` → `http` downgrade, and no hop to a loopback, link-local, private, unique-local,
//! CGNAT or unspecified address or to `localhost` unless the endpoint we started from is
//! itself such a host (a registry on the node or the LAN). Names are checked too, once
//! resolved: each client's resolver drops local addresses of every name but the endpoint's
//! own when the endpoint is public, so `http://metadata.attacker.example`
//! resolving to `169.254.169.254` is refused like the literal address. A token realm must pass
//! the same checks. `reqwest` drops `Authorization` (and cookies) on every hop that changes
//! host, port or scheme, so credentials never follow a redirect to a CDN. Not covered: with an
//! HTTP(S) proxy configured in the environment the proxy resolves names, so only literal
//! addresses are checked.
//!
//! # Clients and tokens
//! One `reqwest::Client` per endpoint host and CA file, shared by every pull of that host
//! whatever its credentials, which are applied per request. A client is per endpoint (not
//! one for all) because its redirect policy and resolver must know which endpoint the request
//! started from; building one loads the TLS roots (~15 ms), so they are cached, at most
//! [`MAX_CLIENTS`] of them, least recently used evicted (image names, and so hosts, come from
//! pod authors). Bearer tokens are cached per (endpoint, credentials, scope) until shortly
//! before they expire, at most [`MAX_TOKENS`] of them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use sha2::Digest as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Redirect hops followed per request. Registries redirect a blob once (to object storage or
/// a CDN), sometimes twice; five leaves room and stops loops early.
pub const MAX_REDIRECTS: usize = 5;
/// Largest token response read. Real ones are a JWT of a few KiB in a small JSON object.
pub const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Largest error response read for its message. Registry error envelopes are a few hundred
/// bytes; anything larger is dropped unread.
pub const MAX_ERROR_BODY: u64 = 64 << 10;
/// Characters of a registry's error message kept for our error text: enough for "manifest
/// unknown" or "incorrect username or password", too little to carry a page into pod events.
pub const MAX_ERROR_EXCERPT: usize = 200;
/// Cached clients. A node pulls from a handful of registries; the bound only matters when
/// pod authors name many distinct hosts.
pub const MAX_CLIENTS: usize = 64;
/// Cached tokens: a few per (registry, credentials, repository) a node pulls from.
pub const MAX_TOKENS: usize = 256;
/// Overall deadline for a manifest or token request, body included (at most a few MiB).
pub const SMALL_BODY_DEADLINE: Duration = Duration::from_secs(300);
/// Give up on an endpoint that does not accept a connection within this (then try the next).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A registry that sends nothing for this long is treated as gone: a stalled pull must fail
/// (and clean up) rather than hang forever in its detached task.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Token lifetime when the token service does not say (the distribution token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Longest a token is reused, whatever the service says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is dropped this long before it expires, so a request never carries a dying one.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// How long "this endpoint answers Basic challenges" is remembered (saves a round trip per
/// blob).
const BASIC_MEMO_LIFETIME: Duration = Duration::from_secs(300);
/// Characters of a URL kept in error text (paths of redirect targets can be long).
const MAX_URL_IN_ERROR: usize = 200;

/// Credentials for one endpoint.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials: anonymous tokens only.
    Anonymous,
    /// Username and password: sent to the token realm, or answering a `Basic` challenge.
    Basic { username: String, password: String },
    /// A registry or identity token, sent as `Authorization: Bearer` as is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// A hash naming these credentials in cache keys (never the secret itself).
    fn fingerprint(&self) -> String {
        let tagged = match self {
            Credentials::Anonymous => return String::new(),
            Credentials::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credentials::Bearer(t) => format!("bearer\0{t}"),
        };
        hex::encode(sha2::Sha256::digest(tagged.as_bytes()))
    }
}

/// Why a redirect (or a token realm) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`MAX_REDIRECTS`] hops.
    TooManyRedirects,
    /// A scheme other than `http` and `https`.
    Scheme(String),
    /// From `https` to `http`.
    Downgrade,
    /// A loopback, link-local, private, CGNAT or unspecified address (or `localhost`) reached
    /// from an endpoint that is none of these.
    LocalAddress,
    /// A name that resolves only to such addresses.
    ResolvesToLocal(IpAddr),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Refusal::Scheme(s) => write!(f, "scheme {s:?} is not http or https"),
            Refusal::Downgrade => f.write_str("downgrade from https to http"),
            Refusal::LocalAddress => f.write_str(
                "loopback, link-local, private or CGNAT address, and the registry is public",
            ),
            Refusal::ResolvesToLocal(ip) => write!(
                f,
                "name resolves to {ip} (loopback, link-local, private or CGNAT), \
                 and the registry is public"
            ),
        }
    }
}

/// A refused redirect hop or token realm: the target host and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target} refused: {reason}")]
pub struct Refused {
    /// `host[:port]` of the target (never its path or query).
    pub target: String,
    pub reason: Refusal,
}

/// A failure of one request to one endpoint.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// Connecting, TLS, sending, or reading the body failed.
    #[error("{url}: {}", chain(source))]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A redirect or token realm pointed somewhere we do not go.
    #[error("redirect from {from} to {refused}")]
    Redirect {
        /// `host[:port]` of the endpoint the request started from.
        from: String,
        refused: Refused,
    },
    /// An unexpected status.
    #[error("{url}: HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        /// Error codes of the registry's JSON error envelope (`MANIFEST_UNKNOWN`, ...).
        codes: Vec<String>,
        /// Sanitised excerpt of the origin's JSON error message.
        message: Option<String>,
    },
    /// A plain-HTTP request answered by an HTTPS server.
    #[error("{host} answered plain HTTP with 400: it speaks HTTPS")]
    HttpsRequired { host: String },
    /// The token service answered 200 with something that is not a usable token.
    #[error("token service {url}: {reason}")]
    Token { url: String, reason: String },
    /// A body exceeded its limit.
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: u64 },
    /// A blob did not hash to its digest.
    #[error("{what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Writing a blob to the caller's writer failed.
    #[error("writing {what}: {source}")]
    Write {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The configured CA bundle cannot be read.
    #[error("CA bundle {path}: {source}", path = path.display())]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The client cannot be built (a bad CA bundle, an unusable host name).
    #[error("registry client for {host}: {reason}")]
    Config { host: String, reason: String },
}

impl DistributionError {
    /// Whether the endpoint was never really reached (the cue to try the HTTPS twin of a
    /// plain-HTTP loopback endpoint).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            DistributionError::Transport { .. } | DistributionError::HttpsRequired { .. }
        )
    }
}

/// A reqwest error and its sources, `: `-joined: reqwest's own message names only the stage
/// ("error sending request"), the cause is further down.
fn chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.ends_with(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    excerpt(&s, 2 * MAX_ERROR_EXCERPT)
}

/// Printable ASCII only, at most `max` characters.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| (' '..='~').contains(c))
        .take(max + 1)
        .collect();
    if out.len() > max {
        out.truncate(max.saturating_sub(3));
        out.push_str("...");
    }
    out
}

/// `scheme://host[:port]/path`, without user info, query (signed CDN URLs carry secrets
/// there) or fragment, shortened.
fn display_url(u: &Url) -> String {
    let s = format!("{}://{}{}", u.scheme(), host_port(u), u.path());
    excerpt(&s, MAX_URL_IN_ERROR)
}

/// `host[:port]` of `u`.
fn host_port(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Whether `ip` is on the node or its networks: loopback, link-local (`169.254/16`,
/// `fe80::/10`), private (`10/8`, `172.16/12`, `192.168/16`, `fc00::/7`), CGNAT
/// (`100.64/10`), unspecified or "this network" (`0/8`), broadcast, or the IPv4 forms of
/// these inside IPv6 (mapped and compatible).
pub fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local_v4(v4);
            }
            let seg = v6.segments();
            // IPv4-compatible (::a.b.c.d, deprecated but still routed by some stacks).
            if seg[..6].iter().all(|s| *s == 0) && !v6.is_loopback() && !v6.is_unspecified() {
                return is_local_v4(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xffc0) == 0xfe80 // link-local
                || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
        }
    }
}

fn is_local_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

/// Whether `u`'s host is a local address (see [`is_local_ip`]) or `localhost`
/// (`*.localhost` included, RFC 6761).
pub fn is_local_url(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(v4)) => is_local_ip(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => is_local_ip(IpAddr::V6(v6)),
        Some(url::Host::Domain(d)) => is_local_name(d),
        None => false,
    }
}

fn is_local_name(d: &str) -> bool {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost" || d.ends_with(".localhost")
}

/// The redirect policy, as a pure function: may a request that went through `previous`
/// (the first being the URL we asked for) follow a redirect to `next`? `origin_local` says
/// whether the endpoint we started from is itself on the node or its networks.
pub fn check_redirect(next: &Url, previous: &[Url], origin_local: bool) -> Result<(), Refused> {
    let refused = |reason| {
        Err(Refused {
            target: host_port(next),
            reason,
        })
    };
    // `previous` holds the first URL plus one entry per hop already followed.
    if previous.len() > MAX_REDIRECTS {
        return refused(Refusal::TooManyRedirects);
    }
    check_target(next, previous.last(), origin_local)
}

/// The checks shared by redirect hops and token realms: scheme, downgrade from `from`, local
/// targets from a public origin.
fn check_target(next: &Url, from: Option<&Url>, origin_local: bool) -> Result<(), Refused> {
    let refused = |reason| {
        Err(Refused {
            target: host_port(next),
            reason,
        })
    };
    match next.scheme() {
        "http" | "https" => {}
        other => return refused(Refusal::Scheme(excerpt(other, 20))),
    }
    if from.is_some_and(|f| f.scheme() == "https") && next.scheme() == "http" {
        return refused(Refusal::Downgrade);
    }
    if !origin_local && is_local_url(next) {
        return refused(Refusal::LocalAddress);
    }
    Ok(())
}

/// What a client knows of the endpoint it was built for; shared by its redirect policy and
/// its resolver.
#[derive(Debug)]
struct Guard {
    /// The endpoint's host name (or address literal), lowercase, without port.
    endpoint_host: String,
    /// The endpoint's host is a local literal or `localhost`.
    literal_local: bool,
    /// The endpoint's name resolved to local addresses only (set by the resolver).
    resolved_local: AtomicBool,
    /// Tests: treat the endpoint as public whatever its address.
    force_public: bool,
}

impl Guard {
    /// Whether redirects and realms may reach local addresses.
    fn origin_local(&self) -> bool {
        !self.force_public && (self.literal_local || self.resolved_local.load(Ordering::Relaxed))
    }
}

/// Resolves names like the system resolver does, and for a public endpoint drops the local
/// addresses of every other name (redirect targets, token realms).
struct GuardedResolver(Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if host == guard.endpoint_host {
                if !addrs.is_empty() && addrs.iter().all(|a| is_local_ip(a.ip())) {
                    guard.resolved_local.store(true, Ordering::Relaxed);
                }
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            if guard.origin_local() {
                return Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs);
            }
            let public: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !is_local_ip(a.ip()))
                .collect();
            match (public.is_empty(), addrs.first()) {
                (true, Some(first)) => Err(Box::new(Refused {
                    target: host,
                    reason: Refusal::ResolvesToLocal(first.ip()),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

/// Tests: hosts whose endpoint counts as public whatever its address, so a test registry on
/// loopback sees the redirect checks a public one gets.
#[cfg(test)]
static FORCED_PUBLIC: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Tests: make `host` (`addr:port`) count as a public endpoint from now on.
#[cfg(test)]
pub(crate) fn treat_as_public(host: &str) {
    FORCED_PUBLIC
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(host.to_ascii_lowercase());
}

fn forced_public(host: &str) -> bool {
    #[cfg(test)]
    {
        let host = host.to_ascii_lowercase();
        FORCED_PUBLIC
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&host)
    }
    #[cfg(not(test))]
    {
        let _ = host;
        false
    }
}

/// Client cache key: endpoint host, CA bundle, forced-public flag (tests).
type ClientKey = (String, Option<PathBuf>, bool);

/// Clients by key, with a use counter for least-recently-used eviction.
#[derive(Default)]
struct ClientCache {
    tick: u64,
    map: HashMap<ClientKey, (reqwest::Client, Arc<Guard>, u64)>,
}

fn clients() -> &'static Mutex<ClientCache> {
    static CLIENTS: OnceLock<Mutex<ClientCache>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

/// Number of cached clients (tests).
#[cfg(test)]
pub(crate) fn cached_clients() -> usize {
    clients()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .map
        .len()
}

/// Number of cached tokens (tests).
#[cfg(test)]
pub(crate) fn cached_tokens() -> usize {
    tokens().lock().unwrap_or_else(|p| p.into_inner()).len()
}

fn client_for(
    host: &str,
    ca_file: Option<&Path>,
    force_public: bool,
) -> Result<(reqwest::Client, Arc<Guard>), DistributionError> {
    let key = (
        host.to_ascii_lowercase(),
        ca_file.map(Path::to_path_buf),
        force_public,
    );
    {
        let mut cache = clients().lock().unwrap_or_else(|p| p.into_inner());
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((c, g, used)) = cache.map.get_mut(&key) {
            *used = tick;
            return Ok((c.clone(), g.clone()));
        }
    }
    // Built outside the lock: reading the CA bundle and the TLS roots takes milliseconds.
    let (client, guard) = build_client(host, ca_file, force_public)?;
    let mut cache = clients().lock().unwrap_or_else(|p| p.into_inner());
    cache.tick += 1;
    let tick = cache.tick;
    if cache.map.len() >= MAX_CLIENTS && !cache.map.contains_key(&key) {
        let oldest = cache
            .map
            .iter()
            .min_by_key(|(_, (_, _, used))| *used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            cache.map.remove(&k);
        }
    }
    let entry = cache.map.entry(key).or_insert((client, guard, tick));
    entry.2 = tick;
    Ok((entry.0.clone(), entry.1.clone()))
}

fn build_client(
    host: &str,
    ca_file: Option<&Path>,
    force_public: bool,
) -> Result<(reqwest::Client, Arc<Guard>), DistributionError> {
    let config = |reason: String| DistributionError::Config {
        host: host.to_string(),
        reason,
    };
    let probe =
        Url::parse(&format!("http://{host}/")).map_err(|e| config(format!("not a host: {e}")))?;
    let guard = Arc::new(Guard {
        endpoint_host: probe
            .host_str()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
        literal_local: is_local_url(&probe),
        resolved_local: AtomicBool::new(false),
        force_public,
    });
    let policy_guard = guard.clone();
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        match check_redirect(
            attempt.url(),
            attempt.previous(),
            policy_guard.origin_local(),
        ) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    });
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("wasmcri/", env!("CARGO_PKG_VERSION")))
        .referer(false)
        .redirect(policy)
        .dns_resolver(GuardedResolver(guard.clone()));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|source| DistributionError::CaFile {
            path: ca.to_path_buf(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| config(format!("CA bundle {}: {e}", ca.display())))?;
        b = b.tls_certs_merge(certs);
    }
    let client = b.build().map_err(|e| config(chain(&e)))?;
    Ok((client, guard))
}

/// A cached authorization for (endpoint, credentials, scope).
#[derive(Clone)]
enum CachedAuth {
    Bearer(HeaderValue),
    Basic,
}

type TokenKey = (String, String, String);

fn tokens() -> &'static Mutex<HashMap<TokenKey, (CachedAuth, Instant)>> {
    static TOKENS: OnceLock<Mutex<HashMap<TokenKey, (CachedAuth, Instant)>>> = OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

fn token_get(key: &TokenKey) -> Option<CachedAuth> {
    let mut map = tokens().lock().unwrap_or_else(|p| p.into_inner());
    match map.get(key) {
        Some((auth, until)) if *until > Instant::now() => Some(auth.clone()),
        Some(_) => {
            map.remove(key);
            None
        }
        None => None,
    }
}

fn token_put(key: TokenKey, auth: CachedAuth, lifetime: Duration) {
    let now = Instant::now();
    let until = now
        + lifetime
            .min(MAX_TOKEN_LIFETIME)
            .saturating_sub(TOKEN_EXPIRY_MARGIN);
    if until <= now {
        return;
    }
    let mut map = tokens().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= MAX_TOKENS && !map.contains_key(&key) {
        map.retain(|_, (_, u)| *u > now);
        if map.len() >= MAX_TOKENS {
            let soonest = map
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                map.remove(&k);
            }
        }
    }
    map.insert(key, (auth, until));
}

/// An authentication challenge from `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Bearer realm=..,service=..,scope=..`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// `Basic realm=..`.
    Basic,
}

/// The challenges of `WWW-Authenticate` header values we can answer, in order. Schemes are
/// compared case-insensitively, quoted values unescaped; a value that does not parse ends
/// its own list (what was parsed before it is kept).
pub fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        for c in http_auth::parser::ChallengeParser::new(value) {
            let Ok(c) = c else { break };
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if c.scheme.eq_ignore_ascii_case("bearer") {
                if let Some(realm) = param("realm") {
                    out.push(Challenge::Bearer {
                        realm,
                        service: param("service"),
                        scope: param("scope"),
                    });
                }
            } else if c.scheme.eq_ignore_ascii_case("basic") {
                out.push(Challenge::Basic);
            }
        }
    }
    out
}

/// The parts of a token response we use.
#[derive(serde::Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A registry error envelope (`{"errors":[{"code":..,"message":..}]}`), or a token
/// service's `{"details":..}`.
#[derive(serde::Deserialize, Default)]
struct Envelope {
    #[serde(default)]
    errors: Vec<EnvelopeError>,
    #[serde(default)]
    details: Option<String>,
}

#[derive(serde::Deserialize)]
struct EnvelopeError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Codes and a sanitised message from a JSON error body; nothing from anything else.
pub fn error_summary(body: &[u8]) -> (Vec<String>, Option<String>) {
    let Ok(env) = serde_json::from_slice::<Envelope>(body) else {
        return (Vec::new(), None);
    };
    let codes: Vec<String> = env
        .errors
        .iter()
        .take(4)
        .map(|e| excerpt(&e.code, 40))
        .filter(|c| !c.is_empty())
        .collect();
    let message = env
        .errors
        .iter()
        .map(|e| e.message.as_str())
        .find(|m| !m.is_empty())
        .or(env.details.as_deref())
        .map(|m| excerpt(m, MAX_ERROR_EXCERPT))
        .filter(|m| !m.is_empty());
    (codes, message)
}

/// Reads `resp`'s body, failing as soon as it passes `limit` bytes.
async fn read_bounded(
    mut resp: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, DistributionError> {
    let too_large = || DistributionError::TooLarge {
        what: what.to_string(),
        limit,
    };
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let url = display_url(resp.url());
    let mut buf = Vec::with_capacity(resp.content_length().unwrap_or(0).min(64 << 10) as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| DistributionError::Transport {
            url: url.clone(),
            source: e.without_url(),
        })?
    {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// One endpoint (mirror or origin) with the credentials to use there.
#[derive(Debug, Clone)]
pub struct Registry {
    http: reqwest::Client,
    guard: Arc<Guard>,
    base: Url,
    creds: Credentials,
    creds_id: String,
}

impl Registry {
    /// An endpoint at `host` (`name[:port]`), over plain HTTP or HTTPS, trusting the system
    /// roots plus `ca_file`.
    pub fn new(
        host: &str,
        plain_http: bool,
        ca_file: Option<&Path>,
        creds: Credentials,
    ) -> Result<Self, DistributionError> {
        let force_public = forced_public(host);
        let (http, guard) = client_for(host, ca_file, force_public)?;
        let scheme = if plain_http { "http" } else { "https" };
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|e| DistributionError::Config {
                host: host.to_string(),
                reason: format!("not a host: {e}"),
            })?;
        let creds_id = creds.fingerprint();
        Ok(Registry {
            http,
            guard,
            base,
            creds,
            creds_id,
        })
    }

    /// `host[:port]` of this endpoint.
    pub fn host(&self) -> String {
        host_port(&self.base)
    }

    fn url(&self, repository: &str, kind: &str, reference: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("/v2/{repository}/{kind}/{reference}"));
        u
    }

    /// The manifest or index `reference` (tag or digest) of `repository`, at most `limit`
    /// bytes.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        accept: &[&str],
        limit: u64,
    ) -> Result<Vec<u8>, DistributionError> {
        let url = self.url(repository, "manifests", reference);
        let accept = accept.join(", ");
        let resp = self
            .send(&url, repository, Some(&accept), Some(SMALL_BODY_DEADLINE))
            .await?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(resp, &self.base).await);
        }
        read_bounded(resp, limit, &format!("manifest {reference}")).await
    }

    /// Streams blob `digest` of `repository` into `out`: at most `size` bytes, and they must
    /// hash to `digest`.
    pub async fn blob<W: AsyncWrite + Unpin>(
        &self,
        repository: &str,
        digest: &str,
        size: u64,
        out: &mut W,
    ) -> Result<(), DistributionError> {
        let what = format!("blob {digest}");
        let url = self.url(repository, "blobs", digest);
        let mut resp = self.send(&url, repository, None, None).await?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(resp, &self.base).await);
        }
        let too_large = || DistributionError::TooLarge {
            what: what.clone(),
            limit: size,
        };
        if resp.content_length().is_some_and(|n| n > size) {
            return Err(too_large());
        }
        let final_url = display_url(resp.url());
        let mut hasher = sha2::Sha256::new();
        let mut received = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| DistributionError::Transport {
                url: final_url.clone(),
                source: e.without_url(),
            })?
        {
            received += chunk.len() as u64;
            if received > size {
                return Err(too_large());
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|source| DistributionError::Write {
                    what: what.clone(),
                    source,
                })?;
        }
        out.flush()
            .await
            .map_err(|source| DistributionError::Write {
                what: what.clone(),
                source,
            })?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(DistributionError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Sends a GET for `url` with whatever authorization we have for `repository`, answering
    /// one `401` challenge. A second `401` (or one we cannot answer) is returned to the caller.
    async fn send(
        &self,
        url: &Url,
        repository: &str,
        accept: Option<&str>,
        deadline: Option<Duration>,
    ) -> Result<Response, DistributionError> {
        let scope = format!("repository:{repository}:pull");
        let key: TokenKey = (
            self.base.as_str().to_string(),
            self.creds_id.clone(),
            scope.clone(),
        );
        let mut auth = match &self.creds {
            Credentials::Bearer(t) => Some(bearer(t, &self.host())?),
            Credentials::Anonymous | Credentials::Basic { .. } => match token_get(&key) {
                Some(CachedAuth::Bearer(h)) => Some(h),
                Some(CachedAuth::Basic) => self.basic_header(),
                None => None,
            },
        };
        let mut answered = false;
        loop {
            let mut req = self.http.get(url.clone());
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(h) = &auth {
                req = req.header(AUTHORIZATION, h.clone());
            }
            if let Some(d) = deadline {
                req = req.timeout(d);
            }
            let resp = req.send().await.map_err(|e| self.transport(url, e))?;
            if resp.status() != StatusCode::UNAUTHORIZED
                || answered
                || host_port(resp.url()) != host_port(&self.base)
            {
                return Ok(resp);
            }
            let challenges = parse_challenges(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let next = challenges.iter().find_map(|c| match (c, &self.creds) {
                (Challenge::Bearer { .. }, Credentials::Bearer(_)) => None,
                (Challenge::Bearer { .. }, _) => Some(c.clone()),
                (Challenge::Basic, Credentials::Basic { .. }) => Some(c.clone()),
                (Challenge::Basic, _) => None,
            });
            match next {
                Some(Challenge::Bearer {
                    realm,
                    service,
                    scope: asked,
                }) => {
                    let (header, lifetime) = self
                        .fetch_token(
                            &realm,
                            service.as_deref(),
                            asked.as_deref().unwrap_or(&scope),
                        )
                        .await?;
                    token_put(key.clone(), CachedAuth::Bearer(header.clone()), lifetime);
                    auth = Some(header);
                }
                Some(Challenge::Basic) => {
                    token_put(key.clone(), CachedAuth::Basic, BASIC_MEMO_LIFETIME);
                    auth = self.basic_header();
                }
                None => return Ok(resp),
            }
            answered = true;
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        let Credentials::Basic { username, password } = &self.creds else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let mut h = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
        h.set_sensitive(true);
        Some(h)
    }

    /// Fetches a bearer token from `realm` for `scope`; returns the header and its lifetime.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(HeaderValue, Duration), DistributionError> {
        let realm_url = Url::parse(realm).map_err(|_| DistributionError::Token {
            url: excerpt(realm, MAX_URL_IN_ERROR),
            reason: "the challenge's realm is not a URL".into(),
        })?;
        check_target(&realm_url, Some(&self.base), self.guard.origin_local()).map_err(
            |refused| DistributionError::Redirect {
                from: self.host(),
                refused,
            },
        )?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self
            .http
            .get(realm_url.clone())
            .query(&query)
            .timeout(SMALL_BODY_DEADLINE);
        if let Credentials::Basic { username, password } = &self.creds {
            req = req.basic_auth(username, Some(password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport(&realm_url, e))?;
        if resp.status() != StatusCode::OK {
            return Err(self.status_error(resp, &realm_url).await);
        }
        let url = display_url(&realm_url);
        let body =
            read_bounded(resp, MAX_TOKEN_BODY, &format!("token response from {url}")).await?;
        let bad = |reason: &str| DistributionError::Token {
            url: url.clone(),
            reason: reason.to_string(),
        };
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| bad("response is not a token object"))?;
        let token = parsed
            .token
            .filter(|t| !t.is_empty())
            .or(parsed.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| bad("response has no token"))?;
        let header = bearer(&token, &url)?;
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Ok((header, lifetime))
    }

    /// The error for a non-success response: its status, and for a response from `origin`
    /// (this endpoint, or the token realm it named) rather than a redirect target, the codes
    /// and a sanitised excerpt of its JSON error message. The body is read only up to
    /// [`MAX_ERROR_BODY`].
    async fn status_error(&self, resp: Response, origin: &Url) -> DistributionError {
        let status = resp.status().as_u16();
        let from_endpoint = host_port(resp.url()) == host_port(origin);
        let url = display_url(resp.url());
        let plain = resp.url().scheme() == "http";
        let body = read_bounded(resp, MAX_ERROR_BODY, "error response")
            .await
            .unwrap_or_default();
        if status == 400 && plain && from_endpoint && contains(&body, b"HTTPS") {
            // A Go HTTPS server answers plain HTTP with 400 "Client sent an HTTP request to
            // an HTTPS server."
            return DistributionError::HttpsRequired { host: self.host() };
        }
        let (codes, message) = if from_endpoint {
            error_summary(&body)
        } else {
            (Vec::new(), None)
        };
        DistributionError::Status {
            url,
            status,
            codes,
            message,
        }
    }

    /// A transport error, or the refusal the redirect policy or resolver put inside it.
    fn transport(&self, url: &Url, e: reqwest::Error) -> DistributionError {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cur {
            if let Some(refused) = c.downcast_ref::<Refused>() {
                return DistributionError::Redirect {
                    from: self.host(),
                    refused: refused.clone(),
                };
            }
            cur = c.source();
        }
        DistributionError::Transport {
            url: display_url(url),
            source: e.without_url(),
        }
    }
}

fn bearer(token: &str, from: &str) -> Result<HeaderValue, DistributionError> {
    let mut h = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        DistributionError::Token {
            url: from.to_string(),
            reason: "token is not a valid header value".into(),
        }
    })?;
    h.set_sensitive(true);
    Ok(h)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn local_addresses() {
        for s in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fdff::1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
        ] {
            assert!(is_local_ip(s.parse().unwrap()), "{s}");
        }
        for s in [
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "100.63.255.255",
            "192.169.0.1",
            "2001:4860::8888",
            "ff02::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_local_ip(s.parse().unwrap()), "{s}");
        }
        assert!(is_local_url(&u("http://localhost:5000/")));
        assert!(is_local_url(&u("http://LOCALHOST./")));
        assert!(is_local_url(&u("http://api.localhost/")));
        assert!(is_local_url(&u("http://[fe80::1]/")));
        // The URL parser normalises odd IPv4 spellings: they are caught too.
        assert!(is_local_url(&u("http://2130706433/")));
        assert!(is_local_url(&u("http://0x7f.1/")));
        assert!(is_local_url(&u("http://0251.0376.0251.0376/")));
        assert!(!is_local_url(&u("https://registry-1.docker.io/")));
        assert!(!is_local_url(&u("https://localhost.example.com/")));
    }

    #[test]
    fn redirect_policy() {
        let public = [u("https://registry.example.com/v2/a/blobs/sha256:00")];
        let cdn = u("https://cdn.example.net/x?sig=1");
        assert_eq!(check_redirect(&cdn, &public, false), Ok(()));
        let refused = |next: &str, prev: &[Url], local: bool| {
            check_redirect(&u(next), prev, local).unwrap_err()
        };
        // Local targets from a public origin.
        for t in [
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.7:9000/bucket",
            "https://[::1]/",
            "https://[fd00::7]/",
            "https://100.100.100.200/",
            "https://localhost/",
            "https://0.0.0.0/",
        ] {
            let e = refused(t, &public, false);
            assert_eq!(e.reason, Refusal::LocalAddress, "{t}");
        }
        let e = refused("https://192.168.1.10:8443/blob", &public, false);
        assert_eq!(e.target, "192.168.1.10:8443");
        assert!(e.to_string().contains("192.168.1.10:8443"), "{e}");
        // ... allowed from a local origin.
        let lan = [u("http://192.168.1.5:5000/v2/a/blobs/sha256:00")];
        assert_eq!(
            check_redirect(&u("http://10.0.0.7:9000/b"), &lan, true),
            Ok(())
        );
        // Schemes.
        for t in [
            "file:///etc/passwd",
            "ftp://cdn.example.net/x",
            "gopher://x/",
        ] {
            assert!(
                matches!(refused(t, &public, false).reason, Refusal::Scheme(_)),
                "{t}"
            );
        }
        assert!(matches!(
            refused("file:///etc/passwd", &lan, true).reason,
            Refusal::Scheme(_)
        ));
        // Downgrade from the last hop, not only from the first.
        assert_eq!(
            refused("http://cdn.example.net/x", &public, false).reason,
            Refusal::Downgrade
        );
        let via = [u("http://r.example.com/"), u("https://s.example.com/")];
        assert_eq!(
            refused("http://cdn.example.net/", &via, false).reason,
            Refusal::Downgrade
        );
        let plain = [u("http://r.example.com/")];
        assert_eq!(
            check_redirect(&u("https://cdn.example.net/"), &plain, false),
            Ok(())
        );
        assert_eq!(
            check_redirect(&u("http://cdn.example.net/"), &plain, false),
            Ok(())
        );
        // Hops: previous holds the first URL plus the hops followed; five hops pass, a sixth
        // does not.
        let mut chain = vec![u("https://r.example.com/0")];
        for i in 1..=MAX_REDIRECTS {
            assert_eq!(
                check_redirect(&u(&format!("https://r.example.com/{i}")), &chain, false),
                Ok(()),
                "hop {i}"
            );
            chain.push(u(&format!("https://r.example.com/{i}")));
        }
        assert_eq!(
            refused("https://r.example.com/6", &chain, false).reason,
            Refusal::TooManyRedirects
        );
    }

    #[test]
    fn www_authenticate_parser() {
        let c = parse_challenges([
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        ]);
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }]
        );
        // Case-insensitive scheme and parameter names, unquoted token values, escapes in quotes.
        let c =
            parse_challenges([r#"bEaReR REALM="https://a.example/t", Service="s\"q", scope=x"#]);
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://a.example/t".into(),
                service: Some("s\"q".into()),
                scope: Some("x".into()),
            }]
        );
        // Several challenges in one value and across values; unknown schemes skipped.
        let c = parse_challenges([
            r#"Digest realm="x", nonce="y", BASIC realm="r""#,
            r#"Bearer realm="https://t.example/""#,
        ]);
        assert_eq!(
            c,
            vec![
                Challenge::Basic,
                Challenge::Bearer {
                    realm: "https://t.example/".into(),
                    service: None,
                    scope: None
                }
            ]
        );
        // A Bearer challenge without a realm cannot be answered; garbage yields nothing.
        assert!(parse_challenges([r#"Bearer service="s""#]).is_empty());
        assert!(parse_challenges(["\"unterminated"]).is_empty());
        assert!(parse_challenges([""]).is_empty());
    }

    #[test]
    fn error_summaries_are_short_and_printable() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            error_summary(body),
            (
                vec!["MANIFEST_UNKNOWN".to_string()],
                Some("manifest unknown".into())
            )
        );
        let long = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"{}\u001b[31m{}"}}]}}"#,
            "a".repeat(150),
            "b".repeat(500)
        );
        let (_, m) = error_summary(long.as_bytes());
        let m = m.unwrap();
        assert!(m.len() <= MAX_ERROR_EXCERPT, "{}", m.len());
        assert!(m.chars().all(|c| (' '..='~').contains(&c)), "{m}");
        assert!(m.ends_with("..."));
        assert_eq!(
            error_summary(br#"{"details":"incorrect username or password"}"#).1,
            Some("incorrect username or password".into())
        );
        assert_eq!(error_summary(b"<html>oops</html>"), (Vec::new(), None));
    }

    #[test]
    fn token_cache_is_bounded_and_expires() {
        let key = |i: usize| (format!("https://t{i}.example/"), String::new(), "s".into());
        let h = HeaderValue::from_static("Bearer x");
        for i in 0..MAX_TOKENS + 10 {
            token_put(
                key(i),
                CachedAuth::Bearer(h.clone()),
                Duration::from_secs(600),
            );
        }
        assert!(cached_tokens() <= MAX_TOKENS);
        assert!(token_get(&key(MAX_TOKENS + 9)).is_some());
        // A lifetime shorter than the margin is not cached at all.
        token_put(key(100_000), CachedAuth::Basic, Duration::from_secs(5));
        assert!(token_get(&key(100_000)).is_none());
    }

    #[test]
    fn client_cache_is_bounded_and_ignores_credentials() {
        let first = Registry::new(
            "r0.client-cache.example:5000",
            false,
            None,
            Credentials::Anonymous,
        )
        .unwrap();
        let other = Registry::new(
            "r0.client-cache.example:5000",
            true,
            None,
            Credentials::Bearer("t".into()),
        )
        .unwrap();
        assert!(
            Arc::ptr_eq(&first.guard, &other.guard),
            "one client per host"
        );
        for i in 1..MAX_CLIENTS + 5 {
            Registry::new(
                &format!("r{i}.client-cache.example:5000"),
                false,
                None,
                Credentials::Anonymous,
            )
            .unwrap();
        }
        assert!(cached_clients() <= MAX_CLIENTS);
    }
}
