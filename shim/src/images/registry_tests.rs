//! Pull/push tests against a real registry: Debian's `docker-registry` (Distribution 2.8)
//! started per test on `127.0.0.1:<random port>` with a temp storage dir, killed on drop.
//! Tests print a message and pass vacuously when the binary (or, for TLS/auth, `openssl` and
//! a bcrypt-capable `python3`) is missing.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;
use serde_json::json;

use super::blobs::sha256_digest;
use super::detect::tests::{COMPONENT, CORE_MODULE};
use super::store_tests::{assert_empty, open_store};
use super::*;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Default)]
struct Options {
    /// (certificate, key) PEM paths.
    tls: Option<(PathBuf, PathBuf)>,
    htpasswd: Option<PathBuf>,
}

struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    host: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start(opts: Options) -> Option<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            eprintln!("skipping: {REGISTRY_BIN} not installed");
            return None;
        }
        for _ in 0..5 {
            let port = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            };
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: wasmcri-test\n",
                dir.path().join("data").display()
            );
            if let Some((cert, key)) = &opts.tls {
                cfg += &format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    cert.display(),
                    key.display()
                );
            }
            if let Some(h) = &opts.htpasswd {
                cfg += &format!(
                    "auth:\n  htpasswd:\n    realm: wasmcri-test\n    path: {}\n",
                    h.display()
                );
            }
            let cfg_path = dir.path().join("config.yml");
            fs::write(&cfg_path, cfg).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&cfg_path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            let mut reg = Registry {
                child,
                dir,
                host: format!("127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = reg.child.try_wait() {
                    break; // exited (port taken?): retry with another port
                }
                if TcpStream::connect(&reg.host).is_ok() {
                    return Some(reg);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = reg.child.kill();
        }
        panic!("docker-registry did not start");
    }

    /// Requests for manifests of `repo` seen in the access log.
    fn manifest_gets(&self, repo: &str) -> usize {
        let log = fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        let needle = format!("\"GET /v2/{repo}/manifests/");
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    /// The on-disk data file of a blob in the registry's storage.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn write_wasm(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// A core module with a custom section, so different tests push different content.
fn module_with(tag: &str) -> Vec<u8> {
    let mut m = CORE_MODULE.to_vec();
    let name = b"tag";
    let payload_len = 1 + name.len() + tag.len();
    m.push(0); // custom section
    m.push(payload_len as u8);
    m.push(name.len() as u8);
    m.extend_from_slice(name);
    m.extend_from_slice(tag.as_bytes());
    m
}

fn no_auth() -> PullAuth {
    PullAuth::default()
}

#[tokio::test]
async fn push_then_pull_by_tag_and_digest_coalesced() {
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let cfg = RegistryConfig::default();
    let (d, store) = open_store();
    let wasm = module_with("push-pull");
    let file = write_wasm(d.path(), "hello.wasm", &wasm);
    let reference = format!("{}/demo/hello:v1", reg.host);
    let pushed = store
        .push_wasm(&file, &reference, &no_auth(), &cfg)
        .await
        .unwrap();
    assert_eq!(pushed.reference, reference);
    assert_eq!(pushed.kind, WasmKind::Module);
    assert_eq!(pushed.layer_digest, sha256_digest(&wasm));

    // Four concurrent pulls of one reference: one download.
    let before = reg.manifest_gets("demo/hello");
    let pulls: Vec<_> = (0..4)
        .map(|_| {
            let (s, r, c) = (store.clone(), reference.clone(), cfg.clone());
            tokio::spawn(async move { s.pull(&r, &no_auth(), &c).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(p.await.unwrap().unwrap().id);
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        reg.manifest_gets("demo/hello") - before,
        1,
        "pulls coalesced"
    );

    let img = store.get(&reference).unwrap();
    assert_eq!(img.id, pushed.config_digest);
    assert_eq!(img.manifest_digest, pushed.manifest_digest);
    assert_eq!(img.packaging, Packaging::WasmArtifact);
    assert_eq!(
        img.repo_digests,
        vec![format!(
            "{}/demo/hello@{}",
            reg.host, pushed.manifest_digest
        )]
    );
    assert_eq!(img.platform.os, "wasip1");
    let w = img.wasm.as_ref().unwrap();
    assert_eq!(fs::read(&w.path).unwrap(), wasm);
    assert_eq!(w.kind, WasmKind::Module);

    // By digest into a fresh store.
    let (_d2, store2) = open_store();
    let by_digest = format!("{}/demo/hello@{}", reg.host, pushed.manifest_digest);
    let img2 = store2.pull(&by_digest, &no_auth(), &cfg).await.unwrap();
    assert_eq!(img2.id, img.id);
    assert!(img2.repo_tags.is_empty());
    assert_eq!(store2.get(&by_digest).unwrap().id, img.id);

    // Present by digest: a metadata check only, works with the registry gone.
    drop(reg);
    let again = store.pull(&by_digest, &no_auth(), &cfg).await.unwrap();
    assert_eq!(again.id, img.id);
    assert_eq!(count_tmp(&store), 0);
}

fn count_tmp(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("tmp")).unwrap().count()
}

#[tokio::test]
async fn pull_through_mirror_and_not_found() {
    let Some(mirror) = Registry::start(Options::default()) else {
        return;
    };
    let (d, store) = open_store();
    let file = write_wasm(d.path(), "c.wasm", COMPONENT);
    store
        .push_wasm(
            &file,
            &format!("{}/team/app:1.0", mirror.host),
            &no_auth(),
            &RegistryConfig::default(),
        )
        .await
        .unwrap();

    // The origin does not resolve; a dead mirror comes first, the live one second.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cfg = RegistryConfig::default();
    cfg.mirrors
        .insert("registry.invalid".into(), vec![dead, mirror.host.clone()]);
    let img = store
        .pull("registry.invalid/team/app:1.0", &no_auth(), &cfg)
        .await
        .unwrap();
    assert_eq!(img.repo_tags, vec!["registry.invalid/team/app:1.0"]);
    assert_eq!(img.wasm.as_ref().unwrap().kind, WasmKind::Component);

    let err = store
        .pull(&format!("{}/team/app:nope", mirror.host), &no_auth(), &cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn tampered_blob_is_digest_mismatch_and_leaves_nothing() {
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let cfg = RegistryConfig::default();
    let (d, pusher) = open_store();
    let wasm = module_with("tamper");
    let file = write_wasm(d.path(), "t.wasm", &wasm);
    let reference = format!("{}/demo/tamper:v1", reg.host);
    let pushed = pusher
        .push_wasm(&file, &reference, &no_auth(), &cfg)
        .await
        .unwrap();
    let data = reg.blob_data(&pushed.layer_digest);
    let mut bytes = fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    fs::write(&data, bytes).unwrap();

    let (_d2, store) = open_store();
    let err = store.pull(&reference, &no_auth(), &cfg).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_empty(&store);
}

/// Pushes a hand-written manifest (and its blobs) with `oci-client` directly.
async fn push_raw(
    host: &str,
    repo_tag: &str,
    blobs: &[&[u8]],
    manifest: &serde_json::Value,
) -> String {
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let (repo, tag) = repo_tag.split_once(':').unwrap();
    let r = oci_client::Reference::with_tag(host.into(), repo.into(), tag.into());
    client
        .store_auth_if_needed(host, &RegistryAuth::Anonymous)
        .await;
    for b in blobs {
        client
            .push_blob(&r, b.to_vec(), &sha256_digest(b))
            .await
            .unwrap();
    }
    let body = serde_json::to_vec(manifest).unwrap();
    let mt = manifest["mediaType"].as_str().unwrap().to_string();
    client
        .push_manifest_raw(&r, body.clone(), mt.parse().unwrap())
        .await
        .unwrap();
    sha256_digest(&body)
}

#[tokio::test]
async fn unknown_media_type_and_index_platform_selection() {
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let cfg = RegistryConfig::default();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"not a tar";
    let m = json!({
        "schemaVersion": 2, "mediaType": manifest::MT_OCI_MANIFEST,
        "config": {"mediaType": manifest::MT_OCI_CONFIG, "digest": sha256_digest(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.example.unknown", "digest": sha256_digest(layer), "size": layer.len()}],
    });
    push_raw(&reg.host, "odd/layer:1", &[config, layer], &m).await;
    let (_d, store) = open_store();
    let err = store
        .pull(&format!("{}/odd/layer:1", reg.host), &no_auth(), &cfg)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::UnsupportedMediaType { media_type, .. } if media_type == "application/vnd.example.unknown"),
        "{err}"
    );
    assert_empty(&store);

    // An index offering linux/s390x and wasip1/wasm: the wasm one is chosen.
    let (d, pusher) = open_store();
    let other = pusher
        .push_wasm(
            &write_wasm(d.path(), "o.wasm", &module_with("other")),
            &format!("{}/multi/app:s390x", reg.host),
            &no_auth(),
            &cfg,
        )
        .await
        .unwrap();
    let wasm = pusher
        .push_wasm(
            &write_wasm(d.path(), "w.wasm", &module_with("wasm")),
            &format!("{}/multi/app:wasm", reg.host),
            &no_auth(),
            &cfg,
        )
        .await
        .unwrap();
    let size = |digest: &str| fs::metadata(reg.blob_data(digest)).unwrap().len();
    let index = json!({
        "schemaVersion": 2, "mediaType": manifest::MT_OCI_INDEX,
        "manifests": [
            {"mediaType": manifest::MT_OCI_MANIFEST, "digest": other.manifest_digest, "size": size(&other.manifest_digest),
             "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": manifest::MT_OCI_MANIFEST, "digest": wasm.manifest_digest, "size": size(&wasm.manifest_digest),
             "platform": {"os": "wasip1", "architecture": "wasm"}},
        ],
    });
    let index_digest = push_raw(&reg.host, "multi/app:all", &[], &index).await;
    let img = store
        .pull(&format!("{}/multi/app:all", reg.host), &no_auth(), &cfg)
        .await
        .unwrap();
    assert_eq!(img.id, wasm.config_digest);
    assert_eq!(img.manifest_digest, wasm.manifest_digest);
    assert_eq!(
        img.repo_digests,
        vec![format!("{}/multi/app@{index_digest}", reg.host)]
    );
    assert!(img.blobs.contains(&index_digest));
}

/// Generates a CA and a server certificate for 127.0.0.1 with `openssl`.
pub(super) fn make_tls(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wasmcri test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ]);
    ok.then(|| {
        (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server.key"),
        )
    })
}

/// A bcrypt htpasswd line, via the system crypt(3) (libxcrypt) through python3.
fn bcrypt_line(user: &str, password: &str) -> Option<String> {
    let out = Command::new("python3")
        .args([
            "-W",
            "ignore",
            "-c",
            "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
            password,
        ])
        .output()
        .ok()?;
    let hash = String::from_utf8(out.stdout).ok()?.trim().to_string();
    hash.starts_with("$2").then(|| format!("{user}:{hash}\n"))
}

#[tokio::test]
async fn tls_with_custom_ca_and_htpasswd_auth() {
    let work = tempfile::tempdir().unwrap();
    let (Some((ca, cert, key)), Some(line)) =
        (make_tls(work.path()), bcrypt_line("alice", "s3cret"))
    else {
        eprintln!("skipping: openssl or bcrypt-capable python3 missing");
        return;
    };
    let htpasswd = work.path().join("htpasswd");
    fs::write(&htpasswd, line).unwrap();
    let Some(reg) = Registry::start(Options {
        tls: Some((cert, key)),
        htpasswd: Some(htpasswd),
    }) else {
        return;
    };
    let cfg = RegistryConfig {
        ca_file: Some(ca),
        ..Default::default()
    };
    let alice = PullAuth {
        username: "alice".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let (d, store) = open_store();
    let file = write_wasm(d.path(), "s.wasm", &module_with("secure"));
    let reference = format!("{}/private/app:1", reg.host);

    let err = store
        .push_wasm(&file, &reference, &no_auth(), &cfg)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    store
        .push_wasm(&file, &reference, &alice, &cfg)
        .await
        .unwrap();

    let err = store.pull(&reference, &no_auth(), &cfg).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let wrong = PullAuth {
        password: "nope".into(),
        ..alice.clone()
    };
    let err = store.pull(&reference, &wrong, &cfg).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    // Without the CA the certificate is not trusted.
    let err = store
        .pull(&reference, &alice, &RegistryConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Distribution { .. }), "{err}");
    // Credentials from the config (base64 `auth` form from the request works too).
    let img = store.pull(&reference, &alice, &cfg).await.unwrap();
    assert_eq!(img.repo_tags, vec![reference.clone()]);
    let (_d2, store2) = open_store();
    let mut by_config = cfg.clone();
    by_config
        .credentials
        .insert(reg.host.clone(), ("alice".into(), "s3cret".into()));
    let img2 = store2
        .pull(&reference, &no_auth(), &by_config)
        .await
        .unwrap();
    assert_eq!(img2.id, img.id);
}

/// How the fake registry serves the layer blob.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlobMode {
    /// Send half of it, then close the connection.
    Truncate,
    /// Send half of it, then stall until the test ends.
    Stall,
}

/// A minimal hand-written registry (std threads, HTTP/1.1) serving one wasm artifact at
/// `fake/app:1`, whose layer blob is cut short as `mode` says.
struct FakeRegistry {
    host: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl FakeRegistry {
    fn start(mode: BlobMode) -> FakeRegistry {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        let mut wasm = CORE_MODULE.to_vec();
        wasm.extend(std::iter::repeat_n(0u8, 4 << 20)); // payload; never committed
        let (m, config) = super::registry::wasm_artifact(&wasm, WasmKind::Module);
        let manifest = serde_json::to_vec(&m).unwrap();
        let config_digest = sha256_digest(&config);
        let layer_digest = sha256_digest(&wasm);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (manifest, config, wasm) = (manifest.clone(), config.clone(), wasm.clone());
                let (config_digest, layer_digest) = (config_digest.clone(), layer_digest.clone());
                let stop = stop2.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut request = String::new();
                        if reader.read_line(&mut request).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                        let (body, ctype, partial): (&[u8], &str, bool) = if path == "/v2/" {
                            (b"{}", "application/json", false)
                        } else if path.ends_with("/manifests/1") {
                            (&manifest, manifest::MT_OCI_MANIFEST, false)
                        } else if path.ends_with(&config_digest) {
                            (&config, "application/octet-stream", false)
                        } else if path.ends_with(&layer_digest) {
                            (&wasm, "application/octet-stream", true)
                        } else {
                            let _ = conn
                                .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                            continue;
                        };
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(head.as_bytes());
                        if !partial {
                            let _ = conn.write_all(body);
                            continue;
                        }
                        let _ = conn.write_all(&body[..body.len() / 2]);
                        let _ = conn.flush();
                        if mode == BlobMode::Stall {
                            while !stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        return; // closes the connection mid-body
                    }
                });
            }
        });
        FakeRegistry { host, stop }
    }
}

#[tokio::test]
async fn truncated_blob_fails_and_leaves_nothing() {
    let reg = FakeRegistry::start(BlobMode::Truncate);
    let (_d, store) = open_store();
    let err = store
        .pull(
            &format!("{}/fake/app:1", reg.host),
            &no_auth(),
            &RegistryConfig::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Distribution { .. }), "{err}");
    assert_empty(&store);
}

#[test]
fn pull_interrupted_by_runtime_shutdown_leaves_nothing() {
    let reg = FakeRegistry::start(BlobMode::Stall);
    let (_d, store) = open_store();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (s, reference) = (store.clone(), format!("{}/fake/app:1", reg.host));
    rt.spawn(async move {
        s.pull(&reference, &no_auth(), &RegistryConfig::default())
            .await
    });
    // Wait until the layer download is under way (its temp file has data in it).
    let tmp = store.root().join("tmp");
    let deadline = Instant::now() + Duration::from_secs(20);
    let downloading = || {
        fs::read_dir(&tmp).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("blob-")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    };
    while !downloading() {
        assert!(Instant::now() < deadline, "download never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    assert_empty(&store);
}

/// Rough timings, printed; run with `cargo test -p wasmcri --lib images::registry_tests::measure
/// -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure() {
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let cfg = RegistryConfig::default();
    let (d, store) = open_store();
    let mut wasm = module_with("measure");
    // 16 MiB payload in a custom section-like tail (content is opaque to the store).
    wasm.extend((0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let file = write_wasm(d.path(), "big.wasm", &wasm);
    let reference = format!("{}/bench/big:1", reg.host);
    let t = Instant::now();
    let pushed = store
        .push_wasm(&file, &reference, &no_auth(), &cfg)
        .await
        .unwrap();
    eprintln!("push 16 MiB artifact: {:?}", t.elapsed());
    let (_d2, fresh) = open_store();
    let t = Instant::now();
    fresh.pull(&reference, &no_auth(), &cfg).await.unwrap();
    eprintln!("pull 16 MiB artifact (cold): {:?}", t.elapsed());
    let t = Instant::now();
    fresh.pull(&reference, &no_auth(), &cfg).await.unwrap();
    eprintln!(
        "pull by tag (present; manifest round trip only): {:?}",
        t.elapsed()
    );
    let by_digest = format!("{}/bench/big@{}", reg.host, pushed.manifest_digest);
    let t = Instant::now();
    fresh.pull(&by_digest, &no_auth(), &cfg).await.unwrap();
    eprintln!("pull by digest (present; metadata only): {:?}", t.elapsed());

    // Layout import: one 64 MiB gzip layer of 2048 files plus the wasm.
    let mut b = super::unpack::tests::TarBuilder::new().file("app.wasm", CORE_MODULE);
    let chunk: Vec<u8> = (0..32u32 << 10)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    for i in 0..2048 {
        b = b.file(&format!("data/{i}"), &chunk);
    }
    let mut layout = super::store_tests::Layout::new();
    let m = layout.image(&[(super::store_tests::MT_TAR_GZ, b.build())], json!({}));
    layout.add(m, Some("bench/layout:1"));
    let dir = layout.finish();
    let t = Instant::now();
    let img = store.import_layout(&dir, None).await.unwrap().remove(0);
    eprintln!(
        "import layout, 64 MiB / 2049 files gzip layer: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (bytes, inodes) = store.fs_usage().await.unwrap();
    eprintln!(
        "fs_usage walk ({bytes} bytes, {inodes} inodes): {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    store.remove(&img.id).await.unwrap();
    eprintln!("remove it: {:?}", t.elapsed());
}

/// Interop: an artifact pushed by us, copied by `skopeo` into an OCI layout and an
/// oci-archive tar, imports back to the same image.
#[tokio::test]
async fn skopeo_layout_roundtrip() {
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let cfg = RegistryConfig::default();
    let (d, store) = open_store();
    let wasm = module_with("skopeo");
    let file = write_wasm(d.path(), "s.wasm", &wasm);
    let pushed = store
        .push_wasm(
            &file,
            &format!("{}/interop/app:v1", reg.host),
            &no_auth(),
            &cfg,
        )
        .await
        .unwrap();
    let layout = d.path().join("layout");
    let archive = d.path().join("layout.tar");
    for dest in [
        format!("oci:{}:v1", layout.display()),
        format!("oci-archive:{}:v1", archive.display()),
    ] {
        let out = Command::new("/usr/bin/skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{}/interop/app:v1", reg.host))
            .arg(&dest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy to {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // skopeo names entries by tag only ("v1"), which names no repository: untagged.
    let img = store.import_layout(&layout, None).await.unwrap().remove(0);
    assert_eq!(img.id, pushed.config_digest);
    assert!(img.repo_tags.is_empty());
    assert_eq!(fs::read(&img.wasm.as_ref().unwrap().path).unwrap(), wasm);
    let (_d2, store2) = open_store();
    let img2 = store2
        .import_layout(&archive, Some("example.com/interop/app:v1"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(img2.id, pushed.config_digest);
    assert_eq!(img2.repo_tags, vec!["example.com/interop/app:v1"]);
    assert_eq!(img2.packaging, Packaging::WasmArtifact);
}

/// An ordinary OCI image (gzip + zstd tar layers, whiteout) published with `skopeo` from a
/// hand-built layout, then pulled: the layered packaging over a real registry.
#[tokio::test]
async fn pull_layered_oci_image_published_by_skopeo() {
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skipping: skopeo not installed");
        return;
    }
    let Some(reg) = Registry::start(Options::default()) else {
        return;
    };
    let mut layout = super::store_tests::Layout::new();
    let m = layout.image(
        &super::store_tests::wasm_app_layers(),
        json!({"Entrypoint": ["/app/hello.wasm"], "ExposedPorts": {"80/tcp": {}}}),
    );
    layout.add(m, Some("v1"));
    let dir = layout.finish();
    let out = Command::new("/usr/bin/skopeo")
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:v1", dir.display()))
        .arg(format!("docker://{}/layered/app:v1", reg.host))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_d, store) = open_store();
    let img = store
        .pull(
            &format!("{}/layered/app:v1", reg.host),
            &no_auth(),
            &RegistryConfig::default(),
        )
        .await
        .unwrap();
    assert_eq!(img.packaging, Packaging::OciImage);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.config.exposed_ports, vec!["80/tcp"]);
    let w = img.wasm.as_ref().unwrap();
    assert_eq!(w.guest_path, "/app/hello.wasm");
    assert_eq!(fs::read(&w.path).unwrap(), CORE_MODULE);
    assert!(img.rootfs.join("etc/kept").exists());
    assert!(!img.rootfs.join("etc/gone").exists());
}
