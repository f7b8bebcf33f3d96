//! Pulls from hostile registries: a small hand-written HTTP/1.1 server (std threads on
//! `127.0.0.1:0`) whose every answer is scripted by the test, sending endless or oversized
//! bodies, echo-bait error bodies, redirect chains and redirects into private networks; plus
//! a Python TLS server for the https → http downgrade. Each test bounds its pull with
//! [`PULL_DEADLINE`], so a client that reads forever fails instead of hanging the suite.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::blobs::sha256_digest;
use super::detect::tests::CORE_MODULE;
use super::store_tests::{assert_empty, open_store};
use super::*;

/// Longer than any bounded failure here takes, far shorter than reading forever.
const PULL_DEADLINE: Duration = Duration::from_secs(20);
/// An error text longer than this would be echoing a body.
const MAX_ERROR_TEXT: usize = 700;
/// Endless and oversized bodies are sent in pieces of this size.
const PIECE: usize = 64 << 10;

/// One request as the hostile server saw it.
#[derive(Debug, Clone)]
struct Req {
    /// Path and query.
    path: String,
    /// Header names lowercased.
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the hostile server answers.
enum Reply {
    /// A complete response.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A chunked body that never ends (until the client goes away or the test ends).
    Endless {
        status: u16,
        headers: Vec<(&'static str, String)>,
    },
    /// A `content-length` of `length` bytes, then a stall with no body.
    Claim { status: u16, length: u64 },
}

impl Reply {
    fn ok(ctype: &str, body: &[u8]) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("content-type", ctype.to_string())],
            body: body.to_vec(),
        }
    }

    fn redirect(status: u16, location: String) -> Reply {
        Reply::Full {
            status,
            headers: vec![("location", location)],
            body: Vec::new(),
        }
    }

    fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

type Handler = dyn Fn(&Req, &str) -> Reply + Send + Sync;

/// The scripted server; stops (and releases stalled connections) on drop.
struct Hostile {
    host: String,
    stop: Arc<AtomicBool>,
    /// Body bytes written so far, all connections together.
    sent: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<Req>>>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock the accept loop.
        let _ = TcpStream::connect(&self.host);
    }
}

impl Hostile {
    /// Serves `handler(request, own host)` for every request.
    fn start(handler: impl Fn(&Req, &str) -> Reply + Send + Sync + 'static) -> Hostile {
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, sent2, requests2, host2) =
            (stop.clone(), sent.clone(), requests.clone(), host.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { return };
                let (handler, stop, sent, requests, host) = (
                    handler.clone(),
                    stop2.clone(),
                    sent2.clone(),
                    requests2.clone(),
                    host2.clone(),
                );
                std::thread::spawn(move || serve(conn, &*handler, &stop, &sent, &requests, &host));
            }
        });
        Hostile {
            host,
            stop,
            sent,
            requests,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Whatever",
    }
}

fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    stop: &AtomicBool,
    sent: &AtomicU64,
    requests: &Mutex<Vec<Req>>,
    host: &str,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let req = Req { path, headers };
        requests.lock().unwrap().push(req.clone());
        let piece = vec![b'a'; PIECE];
        match handler(&req, host) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                for (k, v) in headers {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&body).is_err() {
                    return;
                }
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            Reply::Endless { status, headers } => {
                let mut head = format!(
                    "HTTP/1.1 {status} {}\r\ntransfer-encoding: chunked\r\n",
                    reason(status)
                );
                for (k, v) in headers {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let frame = [format!("{PIECE:x}\r\n").as_bytes(), &piece, b"\r\n"].concat();
                while !stop.load(Ordering::SeqCst) {
                    if conn.write_all(&frame).is_err() {
                        return;
                    }
                    sent.fetch_add(PIECE as u64, Ordering::SeqCst);
                }
                return;
            }
            Reply::Claim { status, length } => {
                let head = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-length: {length}\r\n\r\n",
                    reason(status)
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}

/// A wasm artifact: manifest bytes, config bytes and digest, layer bytes and digest.
struct Artifact {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
}

fn artifact() -> Artifact {
    let layer = CORE_MODULE.to_vec();
    let (m, config) = super::registry::wasm_artifact(&layer, WasmKind::Module);
    Artifact {
        manifest: serde_json::to_vec(&m).unwrap(),
        config_digest: sha256_digest(&config),
        config,
        layer_digest: sha256_digest(&layer),
        layer,
    }
}

/// Serves `a` like a registry would, or `None` for paths it does not know.
fn serve_artifact(a: &Artifact, path: &str) -> Option<Reply> {
    if path.contains("/manifests/") {
        Some(Reply::ok(manifest::MT_OCI_MANIFEST, &a.manifest))
    } else if path.ends_with(&a.config_digest) {
        Some(Reply::ok("application/octet-stream", &a.config))
    } else if path.ends_with(&a.layer_digest) {
        Some(Reply::ok("application/octet-stream", &a.layer))
    } else {
        None
    }
}

/// Pulls `reference` (anonymously, default config unless given), failing the test if the
/// pull takes longer than [`PULL_DEADLINE`].
async fn pull(
    store: &ImageStore,
    reference: &str,
    auth: &PullAuth,
    cfg: &RegistryConfig,
) -> (Result<Image>, Duration) {
    let t = Instant::now();
    let res = tokio::time::timeout(PULL_DEADLINE, store.pull(reference, auth, cfg))
        .await
        .unwrap_or_else(|_| panic!("pull of {reference} still running after {PULL_DEADLINE:?}"));
    (res, t.elapsed())
}

fn anon() -> PullAuth {
    PullAuth::default()
}

#[tokio::test]
async fn endless_manifest_body_fails_while_reading() {
    let srv = Hostile::start(|req, _| {
        if req.path.contains("/manifests/") {
            Reply::Endless {
                status: 200,
                headers: vec![("content-type", manifest::MT_OCI_MANIFEST.into())],
            }
        } else {
            Reply::status(404)
        }
    });
    let (_d, store) = open_store();
    let (res, took) = pull(
        &store,
        &format!("{}/hostile/endless:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, ImageError::TooLarge { limit, .. } if *limit == MAX_JSON_BLOB),
        "{err}"
    );
    // The reader stopped at the limit: what the server got out is the limit plus what the
    // socket buffers hold, not an ever-growing stream.
    std::thread::sleep(Duration::from_millis(200));
    let sent = srv.sent();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        srv.sent(),
        sent,
        "the server can no longer write: connection closed"
    );
    assert!(sent < 64 << 20, "sent {sent} bytes");
    eprintln!("endless manifest: failed after {took:?}, server wrote {sent} bytes");
    assert_empty(&store);
}

#[tokio::test]
async fn huge_content_length_fails_before_reading() {
    let srv = Hostile::start(|req, _| {
        if req.path.contains("/manifests/") {
            Reply::Claim {
                status: 200,
                length: 1 << 40,
            }
        } else {
            Reply::status(404)
        }
    });
    let (_d, store) = open_store();
    let (res, took) = pull(
        &store,
        &format!("{}/hostile/claim:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let err = res.unwrap_err();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_empty(&store);
}

#[tokio::test]
async fn endless_token_body_fails_while_reading() {
    let srv = Hostile::start(|req, host| {
        if req.path.starts_with("/token") {
            Reply::Endless {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
            }
        } else {
            Reply::Full {
                status: 401,
                headers: vec![(
                    "www-authenticate",
                    format!(r#"Bearer realm="http://{host}/token",service="hostile""#),
                )],
                body: Vec::new(),
            }
        }
    });
    let (_d, store) = open_store();
    let (res, took) = pull(
        &store,
        &format!("{}/hostile/token:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, ImageError::TooLarge { what, limit } if what.contains("token") && *limit == 1 << 20),
        "{err}"
    );
    eprintln!(
        "endless token: failed after {took:?}, server wrote {} bytes",
        srv.sent()
    );
    assert_empty(&store);
}

#[tokio::test]
async fn error_bodies_are_bounded_and_not_echoed() {
    const TEN_MIB: usize = 10 << 20;
    // A 404 whose JSON envelope carries a 10 MiB message; a 500 streaming 10 MiB without a
    // length; a 500 whose short JSON message carries terminal escapes and a long tail.
    let srv = Hostile::start(|req, _| {
        let huge_json = || {
            let mut b = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":""#.to_vec();
            b.extend(std::iter::repeat_n(b'x', TEN_MIB));
            b.extend_from_slice(br#""}]}"#);
            b
        };
        if req.path.contains("/huge404/") {
            Reply::Full {
                status: 404,
                headers: vec![("content-type", "application/json".into())],
                body: huge_json(),
            }
        } else if req.path.contains("/huge500/") {
            Reply::Endless {
                status: 500,
                headers: Vec::new(),
            }
        } else {
            let body = format!(
                r#"{{"errors":[{{"code":"UNKNOWN","message":"disk \u001b[2J{}"}}]}}"#,
                "y".repeat(5000)
            );
            Reply::Full {
                status: 500,
                headers: vec![("content-type", "application/json".into())],
                body: body.into_bytes(),
            }
        }
    });
    let (_d, store) = open_store();
    let cfg = RegistryConfig::default();
    let (res, _) = pull(&store, &format!("{}/x/huge404:1", srv.host), &anon(), &cfg).await;
    let err = res.unwrap_err();
    assert!(
        err.to_string().len() < MAX_ERROR_TEXT,
        "{} bytes of error text",
        err.to_string().len()
    );
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");

    let (res, _) = pull(&store, &format!("{}/x/huge500:1", srv.host), &anon(), &cfg).await;
    let text = res.unwrap_err().to_string();
    assert!(
        text.len() < MAX_ERROR_TEXT,
        "{} bytes of error text",
        text.len()
    );
    assert!(text.contains("500"), "{text}");

    let (res, _) = pull(&store, &format!("{}/x/short:1", srv.host), &anon(), &cfg).await;
    let text = res.unwrap_err().to_string();
    assert!(text.len() < MAX_ERROR_TEXT, "{text}");
    assert!(
        text.contains("disk"),
        "the registry's message is kept: {text}"
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains(&"y".repeat(300)), "{text}");
    assert_empty(&store);
}

#[tokio::test]
async fn blobs_larger_than_their_descriptor_fail() {
    let a = Arc::new(artifact());
    let a2 = a.clone();
    // The layer comes with one byte more than its descriptor says, or without end.
    let srv = Hostile::start(move |req, _| {
        if req.path.ends_with(&a2.layer_digest) {
            if req.path.contains("/longer/") {
                let mut body = a2.layer.clone();
                body.push(0);
                Reply::ok("application/octet-stream", &body)
            } else {
                Reply::Endless {
                    status: 200,
                    headers: Vec::new(),
                }
            }
        } else {
            serve_artifact(&a2, &req.path).unwrap_or(Reply::status(404))
        }
    });
    for repo in ["longer", "endless"] {
        let (_d, store) = open_store();
        let (res, _) = pull(
            &store,
            &format!("{}/{repo}/app:1", srv.host),
            &anon(),
            &RegistryConfig::default(),
        )
        .await;
        let err = res.unwrap_err();
        assert!(
            matches!(&err, ImageError::TooLarge { what, limit }
                if what.contains(&a.layer_digest) && *limit == a.layer.len() as u64),
            "{repo}: {err}"
        );
        assert_empty(&store);
    }
}

#[tokio::test]
async fn blob_redirect_into_private_network_is_refused() {
    let a = Arc::new(artifact());
    let a2 = a.clone();
    let srv = Hostile::start(move |req, _| {
        if req.path.contains("/blobs/") {
            // Object storage on the node's network: the cloud metadata service, a LAN host.
            let target = if req.path.ends_with(&a2.config_digest) {
                "http://10.255.255.1:9/bucket/config"
            } else {
                "http://169.254.169.254/latest/meta-data/"
            };
            Reply::redirect(307, target.to_string())
        } else {
            serve_artifact(&a2, &req.path).unwrap_or(Reply::status(404))
        }
    });
    // The origin listens on loopback; for this test it counts as a public registry.
    super::distribution::treat_as_public(&srv.host);
    let (_d, store) = open_store();
    let (res, took) = pull(
        &store,
        &format!("{}/hostile/redirect:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let text = res.unwrap_err().to_string();
    assert!(text.contains("10.255.255.1:9"), "names the target: {text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        took < Duration::from_secs(5),
        "no connection attempted: {took:?}"
    );
    assert!(text.len() < MAX_ERROR_TEXT, "{text}");
    assert_empty(&store);
}

#[tokio::test]
async fn token_realm_in_private_network_is_refused() {
    let srv = Hostile::start(|_, _| Reply::Full {
        status: 401,
        headers: vec![(
            "www-authenticate",
            r#"Bearer realm="http://169.254.169.254/latest/meta-data/iam",service="x""#.into(),
        )],
        body: Vec::new(),
    });
    super::distribution::treat_as_public(&srv.host);
    let (_d, store) = open_store();
    let (res, took) = pull(
        &store,
        &format!("{}/hostile/realm:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let text = res.unwrap_err().to_string();
    assert!(
        text.contains("169.254.169.254") && text.contains("refused"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "no connection attempted: {took:?}"
    );
    assert_empty(&store);
}

/// The name of this machine, if it resolves to local addresses only.
fn local_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()?
        .trim()
        .to_string();
    let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
        .ok()?
        .collect();
    (!addrs.is_empty()
        && !name.eq_ignore_ascii_case("localhost")
        && addrs
            .iter()
            .all(|a| super::distribution::is_local_ip(a.ip())))
    .then_some(name)
}

#[tokio::test]
async fn blob_redirect_to_a_name_resolving_privately_is_refused() {
    let Some(name) = local_hostname() else {
        eprintln!("skipping: the host name does not resolve to local addresses only");
        return;
    };
    let a = Arc::new(artifact());
    let a2 = a.clone();
    let target = format!("http://{name}:9/bucket");
    let srv = Hostile::start(move |req, _| {
        if req.path.contains("/blobs/") {
            Reply::redirect(302, target.clone())
        } else {
            serve_artifact(&a2, &req.path).unwrap_or(Reply::status(404))
        }
    });
    super::distribution::treat_as_public(&srv.host);
    let (_d, store) = open_store();
    let (res, _) = pull(
        &store,
        &format!("{}/hostile/rebind:1", srv.host),
        &anon(),
        &RegistryConfig::default(),
    )
    .await;
    let text = res.unwrap_err().to_string();
    assert!(
        text.contains(&name.to_ascii_lowercase()) && text.contains("resolves to"),
        "{text}"
    );
    assert_empty(&store);
}

#[tokio::test]
async fn registry_named_on_the_lan_may_redirect_into_the_lan() {
    let Some(name) = local_hostname() else {
        eprintln!("skipping: the host name does not resolve to local addresses only");
        return;
    };
    let a = Arc::new(artifact());
    let cdn_a = a.clone();
    let cdn = Hostile::start(move |req, _| {
        serve_artifact(&cdn_a, &req.path).unwrap_or(Reply::status(404))
    });
    let cdn_host = cdn.host.clone();
    let reg_a = a.clone();
    let reg = Hostile::start(move |req, _| {
        if req.path.contains("/blobs/") {
            Reply::redirect(307, format!("http://{cdn_host}{}", req.path))
        } else {
            serve_artifact(&reg_a, &req.path).unwrap_or(Reply::status(404))
        }
    });
    // The registry is addressed by a name that resolves to a local address: it is on the
    // node's networks, so its redirects to a local address literal are followed.
    let host = format!("{name}:{}", reg.host.rsplit(':').next().unwrap());
    let cfg = RegistryConfig {
        insecure: vec![host.clone()],
        ..Default::default()
    };
    let (_d, store) = open_store();
    let (res, _) = pull(&store, &format!("{host}/lan/app:1"), &anon(), &cfg).await;
    assert_eq!(res.unwrap().id, a.config_digest);
    assert_eq!(cdn.requests().len(), 2);
}

/// A registry whose every answer (manifest and blobs) is redirected `hops` times on itself
/// (`/v2/..` → `/hop/1/v2/..` → ... → `/hop/<hops>/v2/..`) before being served.
fn redirecting(hops: usize) -> Hostile {
    let a = artifact();
    Hostile::start(move |req, host| {
        let Some(rest) = req.path.strip_prefix("/hop/") else {
            return Reply::redirect(302, format!("http://{host}/hop/1{}", req.path));
        };
        let (n, path) = rest.split_once('/').unwrap();
        let n: usize = n.parse().unwrap();
        if n < hops {
            Reply::redirect(302, format!("http://{host}/hop/{}/{path}", n + 1))
        } else {
            serve_artifact(&a, &format!("/{path}")).unwrap_or(Reply::status(404))
        }
    })
}

#[tokio::test]
async fn redirect_chains_are_limited_to_five_hops() {
    let (_d, store) = open_store();
    let cfg = RegistryConfig::default();
    let five = redirecting(5);
    let (res, _) = pull(&store, &format!("{}/loop/app:1", five.host), &anon(), &cfg).await;
    res.unwrap();

    let six = redirecting(6);
    let (_d2, store2) = open_store();
    let (res, _) = pull(&store2, &format!("{}/loop/app:1", six.host), &anon(), &cfg).await;
    let text = res.unwrap_err().to_string();
    assert!(text.contains("more than 5 redirects"), "{text}");
    assert_empty(&store2);
}

#[tokio::test]
async fn blob_redirect_to_cdn_works_and_drops_credentials() {
    let a = Arc::new(artifact());
    let cdn_a = a.clone();
    let cdn = Hostile::start(move |req, _| {
        let blob = req.path.trim_start_matches("/cdn");
        serve_artifact(&cdn_a, blob).unwrap_or(Reply::status(404))
    });
    let cdn_host = cdn.host.clone();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret")
    );
    let reg_a = a.clone();
    let reg = Hostile::start(move |req, host| {
        if req.path.starts_with("/token") {
            if req.header("authorization") != Some(basic.as_str()) {
                return Reply::Full {
                    status: 401,
                    headers: vec![("content-type", "application/json".into())],
                    body: br#"{"details":"incorrect username or password"}"#.to_vec(),
                };
            }
            let token = br#"{"token":"good-token","expires_in":300}"#;
            return Reply::ok("application/json", token);
        }
        if req.header("authorization") != Some("Bearer good-token") {
            return Reply::Full {
                status: 401,
                headers: vec![(
                    "www-authenticate",
                    format!(
                        r#"Bearer realm="http://{host}/token",service="hostile",scope="repository:cdn/app:pull""#
                    ),
                )],
                body: Vec::new(),
            };
        }
        if req.path.contains("/blobs/") {
            let digest = req.path.rsplit('/').next().unwrap();
            return Reply::redirect(307, format!("http://{cdn_host}/cdn/blobs/{digest}"));
        }
        serve_artifact(&reg_a, &req.path).unwrap_or(Reply::status(404))
    });
    let cfg = RegistryConfig::default();
    let reference = format!("{}/cdn/app:1", reg.host);

    let (_d, store) = open_store();
    let (res, _) = pull(&store, &reference, &anon(), &cfg).await;
    let err = res.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let wrong = PullAuth {
        username: "alice".into(),
        password: "nope".into(),
        ..Default::default()
    };
    let (res, _) = pull(&store, &reference, &wrong, &cfg).await;
    let err = res.unwrap_err();
    assert!(
        matches!(&err, ImageError::Unauthorized { reason, .. } if reason.contains("incorrect username or password")),
        "{err}"
    );

    let alice = PullAuth {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let (res, _) = pull(&store, &reference, &alice, &cfg).await;
    let img = res.unwrap();
    assert_eq!(img.id, a.config_digest);
    let cdn_reqs = cdn.requests();
    assert_eq!(cdn_reqs.len(), 2, "config and layer from the CDN");
    for r in &cdn_reqs {
        assert_eq!(
            r.header("authorization"),
            None,
            "credentials followed: {r:?}"
        );
    }
    // One token for the whole pull: manifest, config and layer reuse it.
    let tokens_ok = reg
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token") && r.header("authorization").is_some())
        .count();
    assert_eq!(
        tokens_ok, 2,
        "one token request each for the wrong and right password"
    );
    let scopes: Vec<_> = reg
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        scopes
            .iter()
            .all(|p| p.contains("scope=repository%3Acdn%2Fapp%3Apull")
                && p.contains("service=hostile")),
        "{scopes:?}"
    );
}

/// A Python TLS server on 127.0.0.1 answering every GET with a redirect to `target` + path.
struct TlsRedirector {
    child: Child,
    host: String,
}

impl Drop for TlsRedirector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_REDIRECTOR: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", sys.argv[3] + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl TlsRedirector {
    fn start(cert: &Path, key: &Path, target: &str) -> Option<TlsRedirector> {
        let mut child = Command::new("python3")
            .args(["-c", TLS_REDIRECTOR])
            .arg(cert)
            .arg(key)
            .arg(target)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let port: u16 = line.trim().parse().ok()?;
        Some(TlsRedirector {
            child,
            host: format!("127.0.0.1:{port}"),
        })
    }
}

#[tokio::test]
async fn https_to_http_downgrade_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = super::registry_tests::make_tls(work.path()) else {
        eprintln!("skipping: openssl missing");
        return;
    };
    let a = artifact();
    let plain =
        Hostile::start(move |req, _| serve_artifact(&a, &req.path).unwrap_or(Reply::status(404)));
    let Some(tls) = TlsRedirector::start(&cert, &key, &format!("http://{}", plain.host)) else {
        eprintln!("skipping: python3 with ssl missing");
        return;
    };
    // A loopback registry is tried over plain HTTP first; the TLS server hangs up on that and
    // the pull goes on over HTTPS, where the redirect to plain HTTP comes.
    let cfg = RegistryConfig {
        ca_file: Some(ca),
        ..Default::default()
    };
    let (_d, store) = open_store();
    let (res, _) = pull(&store, &format!("{}/down/app:1", tls.host), &anon(), &cfg).await;
    let text = res.unwrap_err().to_string();
    assert!(text.contains("downgrade from https to http"), "{text}");
    assert!(text.contains(&plain.host), "names the target: {text}");
    assert!(
        plain.requests().is_empty(),
        "nothing was sent over plain HTTP"
    );
    assert_empty(&store);
}
