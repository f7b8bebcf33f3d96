//! A small client for the pull side of the OCI distribution protocol, on `reqwest`, that bounds
//! everything a registry sends.
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
//! # Clients and tokens
//! One `reqwest::Client` per endpoint host and CA file, shared by every pull of that host
//! whatever its credentials, which are applied per request; building one loads the TLS roots
//! (~15 ms), so they are cached. Redirects follow `reqwest`'s default policy. Bearer tokens
//! are cached per (endpoint, credentials, scope) until shortly before they expire.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use sha2::Digest as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Largest token response read. Real ones are a JWT of a few KiB in a small JSON object.
pub const MAX_TOKEN_BODY: u64 = 1 << 20;
/// Largest error response read for its message. Registry error envelopes are a few hundred
/// bytes; anything larger is dropped unread.
pub const MAX_ERROR_BODY: u64 = 64 << 10;
/// Characters of a registry's error message kept for our error text: enough for "manifest
/// unknown" or "incorrect username or password", too little to carry a page into pod events.
pub const MAX_ERROR_EXCERPT: usize = 200;
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

/// Client cache key: endpoint host, CA bundle.
type ClientKey = (String, Option<PathBuf>);

/// Clients by key.
fn clients() -> &'static Mutex<HashMap<ClientKey, reqwest::Client>> {
    static CLIENTS: OnceLock<Mutex<HashMap<ClientKey, reqwest::Client>>> = OnceLock::new();
    CLIENTS.get_or_init(Default::default)
}

fn client_for(host: &str, ca_file: Option<&Path>) -> Result<reqwest::Client, DistributionError> {
    let key = (host.to_ascii_lowercase(), ca_file.map(Path::to_path_buf));
    if let Some(c) = clients()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        return Ok(c.clone());
    }
    // Built outside the lock: reading the CA bundle and the TLS roots takes milliseconds.
    let client = build_client(host, ca_file)?;
    let mut map = clients().lock().unwrap_or_else(|p| p.into_inner());
    Ok(map.entry(key).or_insert(client).clone())
}

fn build_client(host: &str, ca_file: Option<&Path>) -> Result<reqwest::Client, DistributionError> {
    let config = |reason: String| DistributionError::Config {
        host: host.to_string(),
        reason,
    };
    let mut b = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("wasmcri/", env!("CARGO_PKG_VERSION")))
        .referer(false);
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|source| DistributionError::CaFile {
            path: ca.to_path_buf(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| config(format!("CA bundle {}: {e}", ca.display())))?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| config(chain(&e)))
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
        let http = client_for(host, ca_file)?;
        let scheme = if plain_http { "http" } else { "https" };
        let base =
            Url::parse(&format!("{scheme}://{host}/")).map_err(|e| DistributionError::Config {
                host: host.to_string(),
                reason: format!("not a host: {e}"),
            })?;
        let creds_id = creds.fingerprint();
        Ok(Registry {
            http,
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

    /// A transport error.
    fn transport(&self, url: &Url, e: reqwest::Error) -> DistributionError {
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
}
