//! Registry pull and push over the OCI distribution protocol.
//!
//! Pulls go through our own [`distribution`](super::distribution) client, which bounds every
//! body while reading it and refuses redirects into the node's networks; pushes (the
//! `wasmcri image push` CLI, against a registry the operator picked) still use `oci-client`,
//! whose unbounded reads and permissive redirects matter less there, with a client built per
//! push (rewriting push did not fit this change).
//!
//! - Endpoints: configured mirrors of the registry, in order, then the origin. Loopback hosts
//!   (`localhost`, `127.0.0.0/8`, `[::1]`) default to plain HTTP, falling back to HTTPS when
//!   the plain attempt fails at the transport level (docker and containerd 2 do the same);
//!   hosts listed in [`RegistryConfig::insecure`] use plain HTTP only; everything else HTTPS,
//!   trusting the system roots plus [`RegistryConfig::ca_file`].
//! - Auth: the request's [`PullAuth`] applies to the origin only (a mirror never sees the
//!   kubelet's credentials); [`RegistryConfig::credentials`] per host otherwise.
//! - Every manifest and blob is verified against its digest (the client does it while
//!   streaming, the store again when committing); manifests are read to at most
//!   `MAX_JSON_BLOB` and blobs to their descriptor's size, each failing as soon as the
//!   registry sends more; blobs land in `tmp/` first and are removed on failure or
//!   cancellation, and an image already present by digest costs no network.
//! - Concurrent pulls of the same reference share one download: the first caller spawns the
//!   pull as a task (so one caller going away does not cancel it for the others) and everybody
//!   waits on its result. Callers are not told apart by credentials: like containerd, a node
//!   shares what any pod on it pulled.
//! - Not supported: OAuth2 refresh-token exchange for `identity_token` (sent as a bearer
//!   token as is), bracketed IPv6 registry hosts in references, TLS client certificates.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use oci_client::Client;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::blobs::sha256_digest;
use super::detect::{self, WasmKind};
use super::distribution::{self, Credentials, DistributionError};
use super::error::{ImageError, IoContext, Result};
use super::manifest::{self, Descriptor, Manifest};
use super::reference::{ImageRef, is_loopback_host};
use super::{Image, ImageStore, Incoming, Lease, MAX_JSON_BLOB, Names, blocking};

/// Push: give up on an endpoint that does not accept a connection within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Push: a registry that sends nothing for this long is treated as gone.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// In-flight pulls by canonical reference.
pub(crate) type Inflight = Mutex<HashMap<String, watch::Receiver<Option<Result<Image>>>>>;

/// Registry settings from the daemon's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Registry host (e.g. `docker.io`, `*` for all) → mirror hosts tried in order before it.
    /// A mirror may carry a scheme (`http://mirror:5000`) to force one.
    pub mirrors: HashMap<String, Vec<String>>,
    /// Hosts (`host[:port]`) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// A PEM bundle of extra CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Host → (username, password).
    pub credentials: HashMap<String, (String, String)>,
}

/// Credentials for one pull or push (the CRI `AuthConfig` fields). Empty strings are unset.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullAuth {
    pub username: String,
    pub password: String,
    /// Base64 of `username:password`.
    pub auth: String,
    /// An identity token; sent as a bearer token (no OAuth2 refresh-token exchange).
    pub identity_token: String,
    /// A registry bearer token.
    pub registry_token: String,
}

impl std::fmt::Debug for PullAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("PullAuth")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("auth", &set(&self.auth))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

impl PullAuth {
    fn credentials(&self, reference: &str) -> Result<Option<Credentials>> {
        if !self.registry_token.is_empty() {
            return Ok(Some(Credentials::Bearer(self.registry_token.clone())));
        }
        if !self.identity_token.is_empty() {
            return Ok(Some(Credentials::Bearer(self.identity_token.clone())));
        }
        if !self.username.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: self.username.clone(),
                password: self.password.clone(),
            }));
        }
        if !self.auth.is_empty() {
            let bad = |reason: &str| ImageError::Unauthorized {
                reference: reference.to_string(),
                reason: format!("malformed auth field: {reason}"),
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|_| bad("not base64"))?;
            let s = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| bad("expected user:password"))?;
            return Ok(Some(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        Ok(None)
    }
}

/// The `oci-client` form of `creds` (pushes).
fn registry_auth(creds: Credentials) -> RegistryAuth {
    match creds {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => RegistryAuth::Basic(username, password),
        Credentials::Bearer(t) => RegistryAuth::Bearer(t),
    }
}

/// The outcome of [`ImageStore::push_wasm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// The normalised reference pushed to.
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub kind: WasmKind,
}

/// One place to try.
#[derive(Debug, Clone)]
struct Endpoint {
    host: String,
    plain_http: bool,
    mirror: bool,
    /// Try the next endpoint only on a transport-level failure (the HTTPS fallback of a
    /// loopback host).
    fallback_on_transport_only: bool,
}

fn endpoints(registry: &str, config: &RegistryConfig, with_mirrors: bool) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let mut push_host = |raw: &str, mirror: bool| {
        let (host, forced) = if let Some(h) = raw.strip_prefix("http://") {
            (h, Some(true))
        } else if let Some(h) = raw.strip_prefix("https://") {
            (h, Some(false))
        } else {
            (raw, None)
        };
        let host = host.trim_end_matches('/').to_string();
        let insecure = config.insecure.contains(&host);
        match forced {
            Some(plain_http) => out.push(Endpoint {
                host,
                plain_http,
                mirror,
                fallback_on_transport_only: false,
            }),
            None if insecure => out.push(Endpoint {
                host,
                plain_http: true,
                mirror,
                fallback_on_transport_only: false,
            }),
            None if is_loopback_host(&host) => {
                out.push(Endpoint {
                    host: host.clone(),
                    plain_http: true,
                    mirror,
                    fallback_on_transport_only: true,
                });
                out.push(Endpoint {
                    host,
                    plain_http: false,
                    mirror,
                    fallback_on_transport_only: false,
                });
            }
            None => out.push(Endpoint {
                host,
                plain_http: false,
                mirror,
                fallback_on_transport_only: false,
            }),
        }
    };
    if with_mirrors {
        let mirrors = config
            .mirrors
            .get(registry)
            .or_else(|| config.mirrors.get("*"));
        for m in mirrors.into_iter().flatten() {
            push_host(m, true);
        }
    }
    push_host(registry, false);
    out
}

/// An `oci-client` client for one push to `ep`. Not cached: a push is one CLI invocation, and
/// an `oci-client` client keeps the tokens of the credentials it saw.
fn push_client(ep: &Endpoint, config: &RegistryConfig) -> Result<Client> {
    let mut cc = ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Platform selection is ours (wasi/wasm first); the client must not resolve indexes.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        ..Default::default()
    };
    if let Some(ca) = &config.ca_file {
        let data = std::fs::read(ca).at(ca)?;
        cc.extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Client::try_from(cc).map_err(|e| ImageError::Config(format!("registry client: {e}")))
}

/// The host requests for `host` go to: Docker Hub's registry API is served at
/// `index.docker.io`, not at `docker.io` (the name references and credentials use).
fn wire_host(host: &str) -> &str {
    if host == "docker.io" {
        "index.docker.io"
    } else {
        host
    }
}

fn auth_for(
    ep: &Endpoint,
    registry: &str,
    explicit: &PullAuth,
    config: &RegistryConfig,
    reference: &str,
) -> Result<Credentials> {
    if !ep.mirror
        && ep.host == registry
        && let Some(a) = explicit.credentials(reference)?
    {
        return Ok(a);
    }
    Ok(config
        .credentials
        .get(&ep.host)
        .map(|(u, p)| Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        })
        .unwrap_or(Credentials::Anonymous))
}

/// Maps a pull failure to the store's taxonomy.
pub(super) fn map_pull_err(reference: &str, e: DistributionError) -> ImageError {
    use DistributionError as E;
    let has_code = |codes: &[String], want: &[&str]| codes.iter().any(|c| want.contains(&&**c));
    match e {
        E::TooLarge { what, limit } => ImageError::TooLarge {
            what: format!("{what} of {reference}"),
            limit,
        },
        E::DigestMismatch {
            what,
            expected,
            actual,
        } => ImageError::DigestMismatch {
            what: format!("{what} of {reference}"),
            expected,
            actual,
        },
        E::CaFile { path, source } => ImageError::io(path, source),
        E::Status {
            status, ref codes, ..
        } if status == 401 || status == 403 || has_code(codes, &["UNAUTHORIZED", "DENIED"]) => {
            ImageError::Unauthorized {
                reference: reference.to_string(),
                reason: e.to_string(),
            }
        }
        E::Status {
            status, ref codes, ..
        } if (status == 404 && !has_code(codes, &["BLOB_UNKNOWN"]))
            || has_code(codes, &["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND"]) =>
        {
            ImageError::NotFound(reference.to_string())
        }
        e => ImageError::Distribution {
            reference: reference.to_string(),
            source: Arc::new(e),
        },
    }
}

/// Maps a push (`oci-client`) error to the store's taxonomy.
fn map_err(reference: &str, e: OciDistributionError) -> ImageError {
    use OciDistributionError as E;
    let unauthorized = |reason: String| ImageError::Unauthorized {
        reference: reference.to_string(),
        reason,
    };
    match &e {
        E::AuthenticationFailure(m) => return unauthorized(m.clone()),
        E::UnauthorizedError { url } => return unauthorized(format!("401 from {url}")),
        E::ImageManifestNotFoundError(_) => return ImageError::NotFound(reference.to_string()),
        E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            return ImageError::DigestMismatch {
                what: format!("content of {reference}"),
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        E::RegistryError { envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|c| matches!(c.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                return unauthorized(envelope.to_string());
            }
            if envelope.errors.iter().any(|c| {
                matches!(
                    c.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                return ImageError::NotFound(reference.to_string());
            }
        }
        E::ServerError { code: 404, .. } => return ImageError::NotFound(reference.to_string()),
        E::ServerError {
            code: 401 | 403, ..
        } => return unauthorized(e.to_string()),
        _ => {}
    }
    ImageError::Registry {
        reference: reference.to_string(),
        source: Arc::new(e),
    }
}

fn is_transport_error(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_) => true,
        // A Go HTTPS server answers plain HTTP with 400 "Client sent an HTTP request to an
        // HTTPS server."
        OciDistributionError::ServerError {
            code: 400, message, ..
        } => message.contains("HTTPS"),
        _ => false,
    }
}

/// Removes the in-flight entry when the pull task ends, however it ends.
struct InflightGuard {
    store: ImageStore,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self
            .store
            .inner()
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

/// Bounds what a registry may send for one blob to its descriptor's size.
struct LimitedFile {
    file: tokio::fs::File,
    remaining: u64,
}

impl tokio::io::AsyncWrite for LimitedFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.len() as u64 > self.remaining {
            return Poll::Ready(Err(io::Error::other(
                "registry sent more bytes than the descriptor's size",
            )));
        }
        let this = &mut *self;
        let res = Pin::new(&mut this.file).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            this.remaining -= *n as u64;
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

/// A manifest fetched from a chosen endpoint.
pub(super) struct Fetched {
    pub(super) registry: distribution::Registry,
    pub(super) repository: String,
    pub(super) bytes: Vec<u8>,
    pub(super) digest: String,
}

impl ImageStore {
    /// Pulls `reference` (tag or digest) and returns the stored image. Concurrent pulls of the
    /// same reference are coalesced; an image already present by digest is only re-tagged.
    pub async fn pull(
        &self,
        reference: &str,
        auth: &PullAuth,
        config: &RegistryConfig,
    ) -> Result<Image> {
        let r = ImageRef::parse(reference)?;
        let key = r.canonical();
        let mut rx = {
            let mut map = self
                .inner()
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx.clone());
                    let guard = InflightGuard {
                        store: self.clone(),
                        key,
                    };
                    let (this, auth, config) = (self.clone(), auth.clone(), config.clone());
                    tokio::spawn(async move {
                        let res = this.pull_once(&r, &auth, &config).await;
                        let _ = tx.send(Some(res));
                        drop(guard);
                    });
                    rx
                }
            }
        };
        let res = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ImageError::Internal(format!("pull of {reference} was aborted")))?;
        res.clone()
            .unwrap_or_else(|| Err(ImageError::Internal("empty pull result".into())))
    }

    async fn pull_once(
        &self,
        r: &ImageRef,
        auth: &PullAuth,
        config: &RegistryConfig,
    ) -> Result<Image> {
        let reference = r.canonical();
        let names = |top_digest: &str| Names {
            tags: r.tagged().into_iter().collect(),
            repo_digests: vec![r.with_digest(top_digest)],
        };
        if let Some(d) = &r.digest
            && let Some(img) = self.by_repo_digest(&r.name(), d)
        {
            let this = self.clone();
            let n = names(d);
            return blocking(move || this.add_names(&img.id, &n)).await;
        }

        let fetched = self.fetch_top_manifest(r, auth, config).await?;
        let mut lease = self.lease();
        let top_digest = fetched.digest.clone();
        let mut m = Manifest::parse(&fetched.bytes, &format!("manifest of {reference}"))?;
        let mut manifest_bytes = fetched.bytes.clone();
        let mut manifest_digest = top_digest.clone();
        let mut extra_blobs = Vec::new();
        if m.is_index() {
            self.store_json(&top_digest, &fetched.bytes, &mut lease)
                .await?;
            extra_blobs.push((top_digest.clone(), fetched.bytes.len() as u64));
            let chosen = manifest::select_platform(&m.manifests, &reference)?.clone();
            let bytes = fetched
                .registry
                .manifest(
                    &fetched.repository,
                    &chosen.digest,
                    manifest::ACCEPTED_MANIFESTS,
                    MAX_JSON_BLOB,
                )
                .await
                .map_err(|e| map_pull_err(&reference, e))?;
            let actual = sha256_digest(&bytes);
            if actual != chosen.digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("platform manifest of {reference}"),
                    expected: chosen.digest,
                    actual,
                });
            }
            m = Manifest::parse(&bytes, &format!("platform manifest of {reference}"))?;
            if m.is_index() {
                return Err(ImageError::malformed(
                    format!("index of {reference}"),
                    "nested image indexes are not supported in pulls",
                ));
            }
            manifest_bytes = bytes;
            manifest_digest = actual;
        }
        let config_desc = m.config(&format!("manifest of {reference}"))?.clone();
        super::packaging_of(&m, &config_desc)?;
        // No shortcut on the config digest: commit_image decides whether an image already
        // stored may take this name (same layers, or verified same content), and blobs that
        // are present are not downloaded again, so reuse costs no network.
        self.store_json(&manifest_digest, &manifest_bytes, &mut lease)
            .await?;
        let max = self.limits().max_bytes;
        for desc in std::iter::once(&config_desc).chain(m.layers.iter()) {
            if desc.size < 0 || desc.size as u64 > max {
                return Err(ImageError::TooLarge {
                    what: format!("blob {} of {reference}", desc.digest),
                    limit: max,
                });
            }
            self.download_blob(&fetched, desc, &reference, &mut lease)
                .await?;
        }
        let inc = Incoming {
            manifest_digest,
            manifest: m,
            manifest_size: manifest_bytes.len() as u64,
            extra_blobs,
            names: names(&top_digest),
        };
        let this = self.clone();
        let img = blocking(move || this.commit_image(inc)).await;
        drop(lease);
        img
    }

    /// Fetches the manifest (or index) `r` names from the first endpoint that has it.
    pub(super) async fn fetch_top_manifest(
        &self,
        r: &ImageRef,
        auth: &PullAuth,
        config: &RegistryConfig,
    ) -> Result<Fetched> {
        let reference = r.canonical();
        let mut errors: Vec<ImageError> = Vec::new();
        let eps = endpoints(&r.registry, config, true);
        let mut i = 0;
        while i < eps.len() {
            let ep = &eps[i];
            i += 1;
            let creds = auth_for(ep, &r.registry, auth, config, &reference)?;
            let registry = distribution::Registry::new(
                wire_host(&ep.host),
                ep.plain_http,
                config.ca_file.as_deref(),
                creds,
            )
            .map_err(|e| map_pull_err(&reference, e))?;
            let tag_or_digest = match (&r.digest, &r.tag) {
                (Some(d), _) => d.as_str(),
                (None, Some(t)) => t.as_str(),
                (None, None) => "latest",
            };
            match registry
                .manifest(
                    &r.repository,
                    tag_or_digest,
                    manifest::ACCEPTED_MANIFESTS,
                    MAX_JSON_BLOB,
                )
                .await
            {
                Ok(bytes) => {
                    let digest = sha256_digest(&bytes);
                    if let Some(want) = &r.digest
                        && *want != digest
                    {
                        return Err(ImageError::DigestMismatch {
                            what: format!("manifest of {reference} from {}", ep.host),
                            expected: want.clone(),
                            actual: digest,
                        });
                    }
                    tracing::debug!(%reference, host = %ep.host, plain_http = ep.plain_http, "manifest fetched");
                    return Ok(Fetched {
                        registry,
                        repository: r.repository.clone(),
                        bytes,
                        digest,
                    });
                }
                Err(e) => {
                    let transport = e.is_transport();
                    tracing::debug!(%reference, host = %ep.host, error = %e, "manifest fetch failed");
                    errors.push(map_pull_err(&reference, e));
                    if ep.fallback_on_transport_only && !transport {
                        // The plain-HTTP attempt reached a registry: skip its HTTPS twin.
                        i += 1;
                    }
                }
            }
        }
        // Prefer a meaningful answer (auth, not found) over transport noise.
        let best = errors
            .iter()
            .rposition(|e| {
                !matches!(
                    e,
                    ImageError::Registry { .. } | ImageError::Distribution { .. }
                )
            })
            .unwrap_or(errors.len().saturating_sub(1));
        Err(errors
            .into_iter()
            .nth(best)
            .unwrap_or_else(|| ImageError::Internal("no registry endpoint".into())))
    }

    async fn store_json(&self, digest: &str, bytes: &[u8], lease: &mut Lease) -> Result<()> {
        if bytes.len() as u64 > MAX_JSON_BLOB {
            return Err(ImageError::TooLarge {
                what: format!("manifest {digest}"),
                limit: MAX_JSON_BLOB,
            });
        }
        lease.add(digest);
        let (this, digest, bytes) = (self.clone(), digest.to_string(), bytes.to_vec());
        blocking(move || {
            // Leased inside the blocking task as well: if the pull is cancelled meanwhile, the
            // write still completes here, and this lease's release then deletes the blob.
            let mut lease = this.lease();
            lease.add(&digest);
            this.blob_store()
                .write_bytes(&digest, &bytes, &format!("manifest {digest}"))
                .map(drop)
        })
        .await
    }

    async fn download_blob(
        &self,
        fetched: &Fetched,
        desc: &Descriptor,
        reference: &str,
        lease: &mut Lease,
    ) -> Result<()> {
        lease.add(&desc.digest);
        if self.blob_store().contains(&desc.digest) {
            return Ok(());
        }
        let tmp = self.blob_store().temp_file()?;
        let std_file = tmp.as_file().try_clone().at(tmp.path())?;
        let mut out = LimitedFile {
            file: tokio::fs::File::from_std(std_file),
            remaining: desc.size as u64,
        };
        fetched
            .registry
            .blob(
                &fetched.repository,
                &desc.digest,
                desc.size as u64,
                &mut out,
            )
            .await
            .map_err(|e| map_pull_err(reference, e))?;
        drop(out);
        let (this, digest, what) = (
            self.clone(),
            desc.digest.clone(),
            format!("blob {} of {reference}", desc.digest),
        );
        blocking(move || {
            // See `store_json`: covers a cancellation while the commit runs.
            let mut lease = this.lease();
            lease.add(&digest);
            this.blob_store().commit(tmp, &digest, &what).map(drop)
        })
        .await
    }

    /// Publishes the `.wasm` at `file` as an OCI Wasm artifact at `reference` (see the free
    /// [`push_wasm`]; nothing of the store is used).
    pub async fn push_wasm(
        &self,
        file: &Path,
        reference: &str,
        auth: &PullAuth,
        config: &RegistryConfig,
    ) -> Result<PushResult> {
        push_wasm(file, reference, auth, config).await
    }
}

/// Publishes the `.wasm` at `file` as an OCI Wasm artifact at `reference`. Needs no image
/// store: `wasmcri image push` runs it without opening one.
pub async fn push_wasm(
    file: &Path,
    reference: &str,
    auth: &PullAuth,
    config: &RegistryConfig,
) -> Result<PushResult> {
    let r = ImageRef::parse(reference)?;
    if r.digest.is_some() {
        return Err(ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: "cannot push to a digest reference".into(),
        });
    }
    let data = tokio::fs::read(file).await.at(file)?;
    let kind = detect::wasm_kind(&data).ok_or_else(|| {
        ImageError::malformed(file.display().to_string(), "not a wasm module or component")
    })?;
    let (built, config_bytes) = wasm_artifact(&data, kind);
    let manifest_bytes = serde_json::to_vec(&built)
        .map_err(|e| ImageError::Internal(format!("serialising manifest: {e}")))?;
    let manifest_digest = sha256_digest(&manifest_bytes);
    let layer_digest = built.layers[0].digest.clone();
    let config_digest = built
        .config
        .as_ref()
        .map(|c| c.digest.clone())
        .unwrap_or_default();
    let canonical = r.canonical();

    let mut errors = Vec::new();
    let eps = endpoints(&r.registry, config, false);
    let mut i = 0;
    while i < eps.len() {
        let ep = &eps[i];
        i += 1;
        let registry_auth = registry_auth(auth_for(ep, &r.registry, auth, config, &canonical)?);
        let client = push_client(ep, config)?;
        let oci_ref = r.to_oci(&ep.host);
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &registry_auth)
            .await;
        let attempt = async {
            client
                .push_blob(&oci_ref, data.clone(), &layer_digest)
                .await?;
            client
                .push_blob(&oci_ref, config_bytes.clone(), &config_digest)
                .await?;
            client
                .push_manifest_raw(
                    &oci_ref,
                    manifest_bytes.clone(),
                    http::HeaderValue::from_static(manifest::MT_OCI_MANIFEST),
                )
                .await
        };
        match attempt.await {
            Ok(_) => {
                return Ok(PushResult {
                    reference: canonical,
                    manifest_digest,
                    config_digest,
                    layer_digest,
                    kind,
                });
            }
            Err(e) => {
                let transport = is_transport_error(&e);
                errors.push(map_err(&canonical, e));
                if ep.fallback_on_transport_only && !transport {
                    i += 1;
                }
            }
        }
    }
    Err(errors
        .pop()
        .unwrap_or_else(|| ImageError::Internal("no registry endpoint".into())))
}

/// Builds the OCI Wasm artifact manifest and config for `data`.
pub(crate) fn wasm_artifact(data: &[u8], kind: WasmKind) -> (Manifest, Vec<u8>) {
    let layer_digest = sha256_digest(data);
    let os = match kind {
        WasmKind::Module => "wasip1",
        WasmKind::Component => "wasip2",
    };
    let mut config = serde_json::json!({
        "created": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "architecture": "wasm",
        "os": os,
        "layerDigests": [layer_digest],
    });
    if kind == WasmKind::Component {
        let (imports, exports) = detect::component_interfaces(data);
        config["component"] = serde_json::json!({ "imports": imports, "exports": exports });
    }
    let config_bytes = serde_json::to_vec(&config).expect("JSON value serialises");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest::MT_OCI_MANIFEST.to_string()),
        artifact_type: Some(manifest::MT_WASM_CONFIG.to_string()),
        config: Some(Descriptor {
            media_type: manifest::MT_WASM_CONFIG.to_string(),
            digest: sha256_digest(&config_bytes),
            size: config_bytes.len() as i64,
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }),
        layers: vec![Descriptor {
            media_type: manifest::MT_WASM_LAYER.to_string(),
            digest: layer_digest,
            size: data.len() as i64,
            annotations: Default::default(),
            platform: None,
            artifact_type: None,
        }],
        manifests: Vec::new(),
        annotations: Default::default(),
    };
    (manifest, config_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_order_and_schemes() {
        let mut cfg = RegistryConfig::default();
        cfg.mirrors.insert(
            "docker.io".into(),
            vec!["mirror.example:5000".into(), "http://10.0.0.5:5000".into()],
        );
        cfg.insecure.push("registry.lan:5000".into());
        let eps = endpoints("docker.io", &cfg, true);
        let v: Vec<_> = eps
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http, e.mirror))
            .collect();
        assert_eq!(
            v,
            vec![
                ("mirror.example:5000", false, true),
                ("10.0.0.5:5000", true, true),
                ("docker.io", false, false)
            ]
        );
        let eps = endpoints("127.0.0.1:5000", &cfg, true);
        let v: Vec<_> = eps
            .iter()
            .map(|e| (e.host.as_str(), e.plain_http))
            .collect();
        assert_eq!(v, vec![("127.0.0.1:5000", true), ("127.0.0.1:5000", false)]);
        let eps = endpoints("registry.lan:5000", &cfg, false);
        assert!(eps.len() == 1 && eps[0].plain_http);
    }

    #[test]
    fn docker_hub_is_spoken_to_at_index_docker_io() {
        assert_eq!(wire_host("docker.io"), "index.docker.io");
        assert_eq!(wire_host("ghcr.io"), "ghcr.io");
        assert_eq!(wire_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn auth_conversion() {
        let a = PullAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:w"),
            ..Default::default()
        };
        assert_eq!(
            a.credentials("x").unwrap(),
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p:w".into()
            })
        );
        let a = PullAuth {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(matches!(
            a.credentials("x"),
            Err(ImageError::Unauthorized { .. })
        ));
        assert_eq!(PullAuth::default().credentials("x").unwrap(), None);
        let a = PullAuth {
            registry_token: "t".into(),
            username: "u".into(),
            ..Default::default()
        };
        assert_eq!(
            a.credentials("x").unwrap(),
            Some(Credentials::Bearer("t".into()))
        );
        assert!(!format!("{a:?}").contains("\"t\""));
    }

    #[test]
    fn registry_config_from_toml() {
        let cfg: RegistryConfig = toml::from_str(
            r#"
            insecure = ["registry.lan:5000"]
            ca_file = "/etc/wasmcri/ca.pem"
            [mirrors]
            "docker.io" = ["mirror.gcr.io"]
            [credentials]
            "ghcr.io" = ["user", "token"]
            "#,
        )
        .unwrap();
        assert_eq!(cfg.mirrors["docker.io"], vec!["mirror.gcr.io"]);
        assert_eq!(cfg.credentials["ghcr.io"], ("user".into(), "token".into()));
    }
}
