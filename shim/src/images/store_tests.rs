//! Store tests against OCI layouts built by hand: both packagings, gzip/zstd/plain layers,
//! whiteouts across layers, hostile layers, removal and blob sharing, crash recovery.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::blobs::sha256_digest;
use super::detect::tests::{COMPONENT, CORE_MODULE};
use super::unpack::tests::TarBuilder;
use super::*;

pub(crate) const MT_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MT_TAR_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const MT_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub(crate) const MT_DOCKER_GZ: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// Writes an OCI image layout by hand.
pub(crate) struct Layout {
    pub dir: tempfile::TempDir,
    entries: Vec<serde_json::Value>,
}

impl Layout {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        fs::write(
            dir.path().join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            entries: Vec::new(),
        }
    }

    pub(crate) fn blob(&self, data: &[u8]) -> (String, usize) {
        let d = sha256_digest(data);
        fs::write(
            self.dir
                .path()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        (d, data.len())
    }

    fn desc(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        let (digest, size) = self.blob(data);
        json!({"mediaType": media_type, "digest": digest, "size": size})
    }

    /// An OCI image from `(media_type, uncompressed tar)` layers; returns the manifest descriptor.
    pub(crate) fn image(
        &self,
        layers: &[(&str, Vec<u8>)],
        container_config: serde_json::Value,
    ) -> serde_json::Value {
        let mut diff_ids = Vec::new();
        let mut layer_descs = Vec::new();
        for (mt, tar) in layers {
            diff_ids.push(sha256_digest(tar));
            let blob = match *mt {
                MT_TAR => tar.clone(),
                MT_TAR_GZ | MT_DOCKER_GZ => gzip(tar),
                MT_TAR_ZSTD => zstd(tar),
                _ => tar.clone(),
            };
            layer_descs.push(self.desc(mt, &blob));
        }
        let config = json!({
            "architecture": "wasm", "os": "wasip1",
            "config": container_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_desc = self.desc(
            manifest::MT_OCI_CONFIG,
            &serde_json::to_vec(&config).unwrap(),
        );
        let m = json!({
            "schemaVersion": 2, "mediaType": manifest::MT_OCI_MANIFEST,
            "config": config_desc, "layers": layer_descs,
        });
        self.desc(manifest::MT_OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
    }

    /// An OCI Wasm artifact holding `wasm`; returns the manifest descriptor.
    pub(crate) fn artifact(&self, wasm: &[u8]) -> serde_json::Value {
        let kind = detect::wasm_kind(wasm).unwrap();
        let (m, config) = registry::wasm_artifact(wasm, kind);
        self.blob(&config);
        self.blob(wasm);
        self.desc(manifest::MT_OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
    }

    pub(crate) fn add(&mut self, mut desc: serde_json::Value, name: Option<&str>) {
        if let Some(n) = name {
            desc["annotations"] = json!({ manifest::ANNOTATION_REF_NAME: n });
        }
        self.entries.push(desc);
    }

    pub(crate) fn finish(&self) -> PathBuf {
        let index = json!({
            "schemaVersion": 2, "mediaType": manifest::MT_OCI_INDEX,
            "manifests": self.entries,
        });
        fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
        self.dir.path().to_path_buf()
    }
}

pub(crate) fn open_store() -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(d.path().join("images"), None).unwrap();
    (d, s)
}

pub(crate) fn count(dir: &Path) -> usize {
    fs::read_dir(dir).map(|r| r.count()).unwrap_or(0)
}

/// The store holds nothing at all: no records, rootfs, blobs or temp files.
pub(crate) fn assert_empty(store: &ImageStore) {
    let r = store.root();
    for sub in ["records", "rootfs", "blobs/sha256", "tmp"] {
        assert_eq!(count(&r.join(sub)), 0, "{sub} not empty");
    }
    assert!(store.list(&ImageFilter::default()).unwrap().is_empty());
}

pub(crate) fn wasm_app_layers() -> Vec<(&'static str, Vec<u8>)> {
    let l1 = TarBuilder::new()
        .dir("app")
        .file("app/hello.wasm", CORE_MODULE)
        .file("etc/gone", b"x")
        .file("etc/kept", b"y")
        .build();
    let l2 = TarBuilder::new()
        .file("etc/.wh.gone", b"")
        .file("app/readme.txt", b"hi")
        .build();
    vec![(MT_TAR_GZ, l1), (MT_TAR_ZSTD, l2)]
}

#[tokio::test]
async fn import_oci_image_gzip_zstd() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let m = layout.image(
        &wasm_app_layers(),
        json!({
            "Entrypoint": ["/app/hello.wasm"], "Cmd": ["--flag"], "Env": ["A=1"],
            "WorkingDir": "/app", "User": "1000", "Labels": {"l": "v"},
            "ExposedPorts": {"8080/tcp": {}},
        }),
    );
    let manifest_digest = m["digest"].as_str().unwrap().to_string();
    layout.add(m, Some("localhost:5000/hello:v1"));
    let imgs = store.import_layout(layout.finish(), None).await.unwrap();
    assert_eq!(imgs.len(), 1);
    let img = &imgs[0];
    assert_eq!(img.repo_tags, vec!["localhost:5000/hello:v1"]);
    assert_eq!(
        img.repo_digests,
        vec![format!("localhost:5000/hello@{manifest_digest}")]
    );
    assert_eq!(img.packaging, Packaging::OciImage);
    assert_eq!(img.config.entrypoint, vec!["/app/hello.wasm"]);
    assert_eq!(img.config.cmd, vec!["--flag"]);
    assert_eq!(img.config.env, vec!["A=1"]);
    assert_eq!(img.config.working_dir, "/app");
    assert_eq!(img.config.user, "1000");
    assert_eq!(img.config.exposed_ports, vec!["8080/tcp"]);
    assert_eq!(img.platform.os, "wasip1");
    let wasm = img.wasm.as_ref().unwrap();
    assert_eq!(wasm.guest_path, "/app/hello.wasm");
    assert_eq!(wasm.kind, WasmKind::Module);
    assert_eq!(wasm.world, detect::World::Wasip1);
    assert_eq!(fs::read(&wasm.path).unwrap(), CORE_MODULE);
    assert!(img.rootfs.join("etc/kept").exists());
    assert!(!img.rootfs.join("etc/gone").exists(), "whiteout applied");
    assert!(!img.rootfs.join("etc/.wh.gone").exists());
    assert_eq!(img.blobs.len(), 4);
    let blob_total: u64 = img
        .blobs
        .iter()
        .map(|d| {
            fs::metadata(store.blob_store().path(d).unwrap())
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(img.size, blob_total);

    // Lookups.
    assert_eq!(store.get("localhost:5000/hello:v1").unwrap().id, img.id);
    assert_eq!(store.get(&img.id).unwrap().id, img.id);
    assert_eq!(store.get(&img.id[7..19]).unwrap().id, img.id);
    assert_eq!(
        store
            .get(&format!("localhost:5000/hello@{manifest_digest}"))
            .unwrap()
            .id,
        img.id
    );
    assert!(matches!(
        store.get("localhost:5000/hello:v2"),
        Err(ImageError::NotFound(_))
    ));
    assert_eq!(count(&store.root().join("tmp")), 0);

    // Persisted: a reopened store sees the same image (once the first one is closed: one
    // owner at a time).
    let root = store.root().to_path_buf();
    drop(store);
    let again = ImageStore::open(&root, None).unwrap();
    assert_eq!(again.get(&img.id).unwrap(), *img);
    drop(again);
    // A moved store re-derives its paths.
    let moved = root.with_file_name("moved");
    fs::rename(&root, &moved).unwrap();
    let m = ImageStore::open(&moved, None)
        .unwrap()
        .get(&img.id)
        .unwrap();
    assert_eq!(m.rootfs, moved.join("rootfs").join(&img.id[7..]));
    assert_eq!(fs::read(&m.wasm.unwrap().path).unwrap(), CORE_MODULE);
    fs::rename(&moved, &root).unwrap();
    let again = ImageStore::open(&root, None).unwrap();
    let (bytes, inodes) = again.fs_usage().await.unwrap();
    assert!(bytes > 0 && inodes >= 10, "{bytes} {inodes}");
}

#[tokio::test]
async fn import_wasm_artifact_with_name_override_from_tar() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let http = super::detect::tests::component_exporting("wasi:http/incoming-handler@0.2.0");
    let m = layout.artifact(&http);
    layout.add(m, None);
    let dir = layout.finish();
    // Tar the layout up and import the tar.
    let tar_path = store.root().parent().unwrap().join("layout.tar");
    let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
    b.append_dir_all(".", &dir).unwrap();
    b.finish().unwrap();
    drop(b);
    let imgs = store.import_layout(&tar_path, Some("demo")).await.unwrap();
    let img = &imgs[0];
    assert_eq!(img.repo_tags, vec!["docker.io/library/demo:latest"]);
    assert_eq!(img.packaging, Packaging::WasmArtifact);
    assert_eq!(img.config_media_type, manifest::MT_WASM_CONFIG);
    assert_eq!(img.config.entrypoint, vec!["/app.wasm"]);
    assert_eq!(img.platform.os, "wasip2");
    assert_eq!(img.platform.architecture, "wasm");
    let wasm = img.wasm.as_ref().unwrap();
    assert_eq!(wasm.path, img.rootfs.join("app.wasm"));
    assert_eq!(wasm.kind, WasmKind::Component);
    assert_eq!(wasm.world, detect::World::HttpProxy);
    assert_eq!(fs::read(&wasm.path).unwrap(), http);
    assert_eq!(store.get("demo").unwrap().id, img.id);
    assert_eq!(count(&store.root().join("tmp")), 0);
}

#[tokio::test]
async fn wasm_found_without_wasm_entrypoint_and_docker_media_type() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let layer = TarBuilder::new()
        .file("bin/sh", b"#!/bin/sh")
        .file("z/last.wasm", CORE_MODULE)
        .file("srv/app.wasm", COMPONENT)
        .file("fake.wasm", b"not wasm")
        .build();
    let m = layout.image(&[(MT_DOCKER_GZ, layer)], json!({"Entrypoint": ["/bin/sh"]}));
    layout.add(m, Some("example.com/x:1"));
    let img = store
        .import_layout(layout.finish(), None)
        .await
        .unwrap()
        .remove(0);
    let wasm = img.wasm.unwrap();
    assert_eq!(wasm.guest_path, "/srv/app.wasm");
    assert_eq!(wasm.kind, WasmKind::Component);
}

#[tokio::test]
async fn unknown_layer_media_type_is_rejected() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let layer = TarBuilder::new().file("a.wasm", CORE_MODULE).build();
    let m = layout.image(&[("application/vnd.example.squashfs", layer)], json!({}));
    layout.add(m, Some("example.com/x:1"));
    let err = store
        .import_layout(layout.finish(), None)
        .await
        .unwrap_err();
    match &err {
        ImageError::UnsupportedMediaType { media_type, what } => {
            assert_eq!(media_type, "application/vnd.example.squashfs");
            assert!(what.starts_with("layer sha256:"), "{what}");
        }
        other => panic!("{other}"),
    }
    assert_empty(&store);
}

#[tokio::test]
async fn hostile_layer_leaves_nothing() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let good = TarBuilder::new().file("a.wasm", CORE_MODULE).build();
    let evil = TarBuilder::new()
        .link(tar::EntryType::Symlink, "x", "/")
        .file("x/etc/cron.d/evil", b"* * * * * root sh")
        .build();
    let m = layout.image(&[(MT_TAR, good), (MT_TAR_GZ, evil)], json!({}));
    layout.add(m, Some("example.com/evil:1"));
    let err = store
        .import_layout(layout.finish(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::HostileLayer { entry, .. } if entry == "x/etc/cron.d/evil"),
        "{err}"
    );
    assert_empty(&store);
}

#[tokio::test]
async fn corrupted_layout_blob_is_rejected() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let layer = TarBuilder::new().file("a.wasm", CORE_MODULE).build();
    let m = layout.image(&[(MT_TAR, layer.clone())], json!({}));
    layout.add(m, Some("example.com/x:1"));
    let dir = layout.finish();
    // Flip a byte of the layer blob.
    let p = dir.join("blobs/sha256").join(&sha256_digest(&layer)[7..]);
    let mut bytes = fs::read(&p).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&p, bytes).unwrap();
    let err = store.import_layout(&dir, None).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_empty(&store);
}

#[tokio::test]
async fn remove_frees_shared_blobs_only_when_unreferenced() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let shared = TarBuilder::new().file("app.wasm", CORE_MODULE).build();
    let only_a = TarBuilder::new().file("a.txt", b"a").build();
    let only_b = TarBuilder::new().file("b.txt", b"b").build();
    let shared_digest = sha256_digest(&shared);
    let ma = layout.image(
        &[(MT_TAR, shared.clone()), (MT_TAR, only_a.clone())],
        json!({"Env": ["A=1"]}),
    );
    let mb = layout.image(
        &[(MT_TAR, shared.clone()), (MT_TAR, only_b.clone())],
        json!({"Env": ["B=1"]}),
    );
    layout.add(ma.clone(), Some("example.com/a:1"));
    layout.add(ma, Some("example.com/a:2"));
    layout.add(mb, Some("example.com/b:1"));
    let imgs = store.import_layout(layout.finish(), None).await.unwrap();
    assert_eq!(imgs.len(), 2);
    let a = store.get("example.com/a:1").unwrap();
    let b = store.get("example.com/b:1").unwrap();
    assert_eq!(a.repo_tags, vec!["example.com/a:1", "example.com/a:2"]);
    // 2 manifests + 2 configs + 3 distinct layers.
    assert_eq!(count(&store.root().join("blobs/sha256")), 7);

    // Untagging one of two tags keeps the image.
    let r = store.remove("example.com/a:1").await.unwrap();
    assert!(!r.deleted);
    assert_eq!(store.get(&a.id).unwrap().repo_tags, vec!["example.com/a:2"]);

    // Removing the last tag deletes it; the shared layer stays for b.
    let r = store.remove("example.com/a:2").await.unwrap();
    assert!(r.deleted);
    assert_eq!(r.wasm_path, a.wasm.as_ref().map(|w| w.path.clone()));
    assert_eq!(r.freed_blobs.len(), 3, "{:?}", r.freed_blobs);
    assert!(!r.freed_blobs.contains(&shared_digest));
    assert!(store.blob_store().contains(&shared_digest));
    assert!(!a.rootfs.exists());
    assert!(b.rootfs.exists());
    assert!(matches!(store.get(&a.id), Err(ImageError::NotFound(_))));
    assert_eq!(count(&store.root().join("blobs/sha256")), 4);

    // Removing by ID deletes regardless of tags; everything is gone afterwards.
    let r = store.remove(&b.id).await.unwrap();
    assert!(r.deleted);
    assert!(r.freed_blobs.contains(&shared_digest));
    assert_empty(&store);
    assert!(matches!(
        store.remove(&b.id).await,
        Err(ImageError::NotFound(_))
    ));
}

#[tokio::test]
async fn tag_moves_to_newer_image() {
    let (_d, store) = open_store();
    let mut l1 = Layout::new();
    let m = l1.image(
        &[(
            MT_TAR,
            TarBuilder::new().file("a.wasm", CORE_MODULE).build(),
        )],
        json!({"Env": ["V=1"]}),
    );
    l1.add(m, Some("example.com/app:latest"));
    let old = store
        .import_layout(l1.finish(), None)
        .await
        .unwrap()
        .remove(0);
    let mut l2 = Layout::new();
    let m = l2.image(
        &[(
            MT_TAR,
            TarBuilder::new().file("a.wasm", CORE_MODULE).build(),
        )],
        json!({"Env": ["V=2"]}),
    );
    l2.add(m, Some("example.com/app:latest"));
    let new = store
        .import_layout(l2.finish(), None)
        .await
        .unwrap()
        .remove(0);
    assert_ne!(old.id, new.id);
    assert_eq!(store.get("example.com/app").unwrap().id, new.id);
    assert!(store.get(&old.id).unwrap().repo_tags.is_empty());
    assert_eq!(store.list(&ImageFilter::default()).unwrap().len(), 2);
    let filtered = store
        .list(&ImageFilter {
            reference: Some("example.com/app:latest".into()),
        })
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].id, new.id);
}

#[tokio::test]
async fn precompile_hook_called_and_failure_rolls_back() {
    let seen: Arc<Mutex<Vec<PathBuf>>> = Arc::default();
    let seen2 = seen.clone();
    let hook: PrecompileHook = Arc::new(move |p: &Path| {
        assert!(p.is_file(), "hook sees the final wasm path");
        seen2.lock().unwrap().push(p.to_path_buf());
        Ok(())
    });
    let d = tempfile::tempdir().unwrap();
    let store = ImageStore::open(d.path().join("images"), Some(hook)).unwrap();
    let mut layout = Layout::new();
    let m = layout.artifact(CORE_MODULE);
    layout.add(m, None);
    let img = store
        .import_layout(layout.finish(), Some("x"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(*seen.lock().unwrap(), vec![img.wasm.unwrap().path]);

    let failing: PrecompileHook = Arc::new(|_| Err("cranelift said no".to_string()));
    let d = tempfile::tempdir().unwrap();
    let store = ImageStore::open(d.path().join("images"), Some(failing)).unwrap();
    let mut layout = Layout::new();
    let m = layout.artifact(CORE_MODULE);
    layout.add(m, None);
    let err = store
        .import_layout(layout.finish(), Some("x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cranelift said no"), "{err}");
    assert_empty(&store);
}

/// A store holding one Wasm artifact, tagged `x`.
async fn store_with_artifact_x() -> (tempfile::TempDir, ImageStore, Image) {
    let (d, store) = open_store();
    let mut layout = Layout::new();
    let m = layout.artifact(CORE_MODULE);
    layout.add(m, None);
    let img = store
        .import_layout(layout.finish(), Some("x"))
        .await
        .unwrap()
        .remove(0);
    (d, store, img)
}

#[tokio::test]
async fn open_sweeps_crash_leftovers() {
    let (_d, store, img) = store_with_artifact_x().await;
    let root = store.root().to_path_buf();
    drop(store);
    // What a kill -9 can leave: a temp blob, a half-unpacked dir, an orphaned rootfs, a blob
    // whose image record was never written.
    fs::write(root.join("tmp/blob-123"), b"partial").unwrap();
    fs::create_dir_all(root.join("tmp/unpack-1/usr")).unwrap();
    let orphan = root.join("rootfs").join("ab".repeat(32));
    fs::create_dir_all(&orphan).unwrap();
    let stray = sha256_digest(b"stray");
    fs::write(root.join("blobs/sha256").join(&stray[7..]), b"stray").unwrap();

    let store = ImageStore::open(&root, None).unwrap();
    assert_eq!(count(&root.join("tmp")), 0);
    assert!(!orphan.exists());
    assert!(!store.blob_store().contains(&stray));
    let kept = store.get(&img.id).unwrap();
    assert!(kept.wasm.unwrap().path.is_file());
    assert_eq!(count(&root.join("blobs/sha256")), img.blobs.len());
}

/// A second opener of a root in use is refused before it touches anything: the owner's
/// in-flight temp files and images stay, and the owner's view is the whole truth.
#[tokio::test]
async fn second_opener_is_refused_and_sweeps_nothing() {
    let (_d, store, img) = store_with_artifact_x().await;
    let root = store.root().to_path_buf();
    let in_flight = root.join("tmp/blob-in-flight");
    fs::write(&in_flight, b"partial").unwrap();
    let err = ImageStore::open(&root, None).unwrap_err();
    match &err {
        ImageError::Busy(b) => {
            assert_eq!(b.root, root);
            assert_eq!(b.holder.as_ref().unwrap().pid, std::process::id());
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(
        in_flight.exists(),
        "the refused opener swept the owner's temp file"
    );
    store.announce(Path::new("/run/x.sock")).unwrap();
    let err = ImageStore::open(&root, None).unwrap_err().to_string();
    assert!(err.contains("serving /run/x.sock"), "{err}");
    assert_eq!(store.get("x").unwrap().id, img.id);
    drop(store);
    ImageStore::open(&root, None).unwrap();
    assert!(!in_flight.exists());
}

#[tokio::test]
async fn platform_selection_in_layout_index() {
    let (_d, store) = open_store();
    let mut layout = Layout::new();
    let linux = layout.image(
        &[(MT_TAR, TarBuilder::new().file("linux.txt", b"l").build())],
        json!({"Env": ["P=linux"]}),
    );
    let wasi = layout.image(
        &[(
            MT_TAR,
            TarBuilder::new().file("app.wasm", CORE_MODULE).build(),
        )],
        json!({"Env": ["P=wasi"]}),
    );
    // A nested index with both platforms, named in index.json.
    let mut l = linux.clone();
    l["platform"] = json!({"os": "linux", "architecture": manifest::node_arch()});
    let mut w = wasi.clone();
    w["platform"] = json!({"os": "wasip1", "architecture": "wasm"});
    let nested =
        json!({"schemaVersion": 2, "mediaType": manifest::MT_OCI_INDEX, "manifests": [l, w]});
    let (digest, size) = layout.blob(&serde_json::to_vec(&nested).unwrap());
    layout.add(
        json!({"mediaType": manifest::MT_OCI_INDEX, "digest": digest, "size": size}),
        Some("example.com/multi:1"),
    );
    let img = store
        .import_layout(layout.finish(), None)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(img.config.env, vec!["P=wasi"]);
    assert_eq!(
        img.repo_digests,
        vec![format!("example.com/multi@{digest}")]
    );
    assert!(img.blobs.contains(&digest), "index blob held");

    // An index offering nothing runnable names what it offers.
    let (_d2, store2) = open_store();
    let mut layout = Layout::new();
    let mut l = linux;
    l["platform"] = json!({"os": "linux", "architecture": "s390x"});
    let mut w = wasi;
    w["platform"] = json!({"os": "windows", "architecture": "amd64"});
    layout.add(l, None);
    layout.add(w, None);
    let err = store2
        .import_layout(layout.finish(), None)
        .await
        .unwrap_err();
    match err {
        ImageError::NoMatchingPlatform { offered, .. } => {
            assert_eq!(offered, vec!["linux/s390x", "windows/amd64"])
        }
        other => panic!("{other}"),
    }
    assert_empty(&store2);
}

#[test]
fn store_is_send_sync_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync + 'static>() {}
    fn send<T: Send>(_: T) {}
    send_sync::<ImageStore>();
    send_sync::<ImageError>();
    let (_d, s) = open_store();
    let (cfg, auth) = (RegistryConfig::default(), PullAuth::default());
    send(s.pull("x", &auth, &cfg));
    send(s.push_wasm(Path::new("x.wasm"), "x", &auth, &cfg));
    send(s.import_layout("/nonexistent", None));
    send(s.remove("x"));
    send(s.fs_usage());
}

// ---- Image identity: a name points only at the content its manifest names ----

/// A core module other than [`CORE_MODULE`] (a custom section appended): the attacker's wasm.
const EVIL_MODULE: &[u8] = b"\0asm\x01\0\0\0\0\x04\x03evl";

impl Layout {
    /// A manifest with the given config (media type and JSON) and `(media type, blob)` layers,
    /// stored as is: nothing is derived, so configs and layers can disagree.
    pub(crate) fn raw_manifest(
        &self,
        config_mt: &str,
        config: &serde_json::Value,
        layers: &[(&str, Vec<u8>)],
    ) -> serde_json::Value {
        let config_desc = self.desc(config_mt, &serde_json::to_vec(config).unwrap());
        let layer_descs: Vec<_> = layers.iter().map(|(mt, b)| self.desc(mt, b)).collect();
        let m = json!({
            "schemaVersion": 2, "mediaType": manifest::MT_OCI_MANIFEST,
            "config": config_desc, "layers": layer_descs,
        });
        self.desc(manifest::MT_OCI_MANIFEST, &serde_json::to_vec(&m).unwrap())
    }
}

/// Imports the one manifest `m` under `name` from a fresh layout.
async fn import_one(
    store: &ImageStore,
    build: impl FnOnce(&Layout) -> serde_json::Value,
    name: &str,
) -> Result<Image> {
    let mut layout = Layout::new();
    let m = build(&layout);
    layout.add(m, Some(name));
    store
        .import_layout(layout.finish(), None)
        .await
        .map(|mut v| v.remove(0))
}

/// Imports, under `name`, a manifest of `config` and `layers` as given (see
/// [`Layout::raw_manifest`]).
async fn import_raw(
    store: &ImageStore,
    config_mt: &str,
    config: &serde_json::Value,
    layers: &[(&str, Vec<u8>)],
    name: &str,
) -> Result<Image> {
    import_one(store, |l| l.raw_manifest(config_mt, config, layers), name).await
}

fn oci_config(diff_ids: &[String]) -> serde_json::Value {
    json!({
        "architecture": "wasm", "os": "wasip1",
        "config": {"Entrypoint": ["/app.wasm"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
}

fn app_layer(wasm: &[u8]) -> Vec<u8> {
    TarBuilder::new().file("app.wasm", wasm).build()
}

#[tokio::test]
async fn oci_config_collision_never_aliases() {
    // The victim's config C names its one layer's diff ID. The attacker publishes C with two
    // layers of their own: the diff ID count differs, which used to skip verification and
    // store the attacker's wasm under ID C, where the victim's later import then landed.
    let (_d, store) = open_store();
    let good = app_layer(CORE_MODULE);
    let config = oci_config(&[sha256_digest(&good)]);
    let evil = app_layer(EVIL_MODULE);
    let err = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, evil.clone()), (MT_TAR, evil.clone())],
        "example.com/attacker:1",
    )
    .await
    .unwrap_err();
    match &err {
        ImageError::Malformed { what, reason } => {
            assert!(what.starts_with("config sha256:") && what.contains("of manifest sha256:"));
            assert!(
                reason.contains("lists 1 layers but the manifest has 2"),
                "{reason}"
            );
        }
        other => panic!("{other}"),
    }
    assert_empty(&store);
    // Same count, wrong content: the diff ID check rejects it.
    let err = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, evil.clone())],
        "example.com/attacker:2",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_empty(&store);

    let victim = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, good.clone())],
        "example.com/victim:1",
    )
    .await
    .unwrap();
    assert_eq!(fs::read(victim.wasm.unwrap().path).unwrap(), CORE_MODULE);
    assert_eq!(count(&store.root().join("tmp")), 0);
}

#[tokio::test]
async fn artifact_config_collision_gets_distinct_ids() {
    // An artifact config without layerDigests does not pin its layer: two artifacts sharing it
    // are different images, each ID'd by its manifest digest.
    let (_d, store) = open_store();
    let config = json!({"architecture": "wasm", "os": "wasip1"});
    let artifact = |wasm: &'static [u8]| {
        let config = config.clone();
        move |l: &Layout| {
            l.raw_manifest(
                manifest::MT_WASM_CONFIG,
                &config,
                &[(manifest::MT_WASM_LAYER, wasm.to_vec())],
            )
        }
    };
    let attacker = import_one(&store, artifact(EVIL_MODULE), "example.com/attacker:1")
        .await
        .unwrap();
    let victim = import_one(&store, artifact(CORE_MODULE), "example.com/victim:1")
        .await
        .unwrap();
    assert_ne!(attacker.id, victim.id);
    assert_eq!(
        victim.id, victim.manifest_digest,
        "ID is the manifest digest"
    );
    assert_eq!(fs::read(victim.wasm.unwrap().path).unwrap(), CORE_MODULE);
    let by_name = store.get("example.com/victim:1").unwrap();
    assert_eq!(fs::read(by_name.wasm.unwrap().path).unwrap(), CORE_MODULE);
    let by_digest = store
        .get(&format!("example.com/victim@{}", victim.manifest_digest))
        .unwrap();
    assert_eq!(by_digest.id, victim.id);
    assert_eq!(
        fs::read(
            store
                .get("example.com/attacker:1")
                .unwrap()
                .wasm
                .unwrap()
                .path
        )
        .unwrap(),
        EVIL_MODULE
    );
    // An artifact whose config lists its layer keeps the config digest as its ID.
    let listed = import_one(&store, |l| l.artifact(COMPONENT), "example.com/listed:1")
        .await
        .unwrap();
    assert_ne!(listed.id, listed.manifest_digest);
    assert!(listed.blobs.contains(&listed.id));
}

#[tokio::test]
async fn artifact_layer_digests_mismatch_is_rejected() {
    let (_d, store) = open_store();
    let config = json!({
        "architecture": "wasm", "os": "wasip1",
        "layerDigests": [sha256_digest(CORE_MODULE)],
    });
    let err = import_raw(
        &store,
        manifest::MT_WASM_CONFIG,
        &config,
        &[(manifest::MT_WASM_LAYER, EVIL_MODULE.to_vec())],
        "example.com/attacker:1",
    )
    .await
    .unwrap_err();
    match &err {
        ImageError::Malformed { what, reason } => {
            assert!(what.contains("of manifest sha256:"), "{what}");
            assert!(reason.contains("layerDigests"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_empty(&store);
}

#[tokio::test]
async fn oci_config_without_diff_ids_is_rejected() {
    let (_d, store) = open_store();
    let config = json!({"architecture": "wasm", "os": "wasip1"});
    let err = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, app_layer(CORE_MODULE))],
        "example.com/x:1",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no rootfs.diff_ids"), "{err}");
    assert_empty(&store);
}

#[tokio::test]
async fn same_config_other_blobs_verified_then_shared() {
    // The same content compressed differently: one image ID, the second manifest's layers
    // verified (unpacked to tmp and dropped) before its name points there.
    let (_d, store) = open_store();
    let good = app_layer(CORE_MODULE);
    let config = oci_config(&[sha256_digest(&good)]);
    let first = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, good.clone())],
        "example.com/a:1",
    )
    .await
    .unwrap();
    let second = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR_ZSTD, zstd(&good))],
        "example.com/b:1",
    )
    .await
    .unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(second.manifest_digest, first.manifest_digest, "record kept");
    assert_eq!(second.repo_tags, vec!["example.com/a:1", "example.com/b:1"]);
    assert_eq!(count(&store.root().join("rootfs")), 1);
    assert_eq!(count(&store.root().join("tmp")), 0);
    // The same config with a zstd layer that is not the diff ID is rejected, names unchanged,
    // and its blobs do not stay.
    let blobs_before = count(&store.root().join("blobs/sha256"));
    let err = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR_ZSTD, zstd(&app_layer(EVIL_MODULE)))],
        "example.com/b:1",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert_eq!(store.get("example.com/b:1").unwrap().id, first.id);
    assert_eq!(count(&store.root().join("blobs/sha256")), blobs_before);
    assert_eq!(count(&store.root().join("tmp")), 0);
    let img = store.get(&first.id).unwrap();
    assert_eq!(fs::read(img.wasm.unwrap().path).unwrap(), CORE_MODULE);
}

#[tokio::test]
async fn unverified_record_is_never_trusted_by_id() {
    // A record from before layers were verified (as an aliasing attack could have left it):
    // never returned by ID or digest alone, reused only for its own layers, and another
    // manifest naming its ID gets a clear error instead of the name.
    let (_d, store) = open_store();
    let good = app_layer(CORE_MODULE);
    let config = oci_config(&[sha256_digest(&good)]);
    let img = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, good.clone())],
        "example.com/a:1",
    )
    .await
    .unwrap();
    assert!(img.verified);
    assert!(store.get(&img.id).unwrap().verified);
    let record = store
        .root()
        .join("records")
        .join(format!("{}.json", &img.id[7..]));
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("verified");
    fs::write(&record, serde_json::to_vec(&v).unwrap()).unwrap();
    let root = store.root().to_path_buf();
    drop(store);
    let store = ImageStore::open(&root, None).unwrap();
    assert!(!store.get(&img.id).unwrap().verified);
    assert!(
        store
            .by_repo_digest("example.com/a", &img.manifest_digest)
            .is_none()
    );
    let err = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR_GZ, gzip(&good))],
        "example.com/b:1",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("stored before layers were verified"),
        "{err}"
    );
    assert!(store.get("example.com/b:1").is_err());
    // Its own layers again: reused and now verified.
    let again = import_raw(
        &store,
        manifest::MT_OCI_CONFIG,
        &config,
        &[(MT_TAR, good.clone())],
        "example.com/c:1",
    )
    .await
    .unwrap();
    assert_eq!(again.id, img.id);
    assert!(again.verified);
    assert!(store.get(&img.id).unwrap().verified);
    assert_eq!(count(&store.root().join("tmp")), 0);
}
