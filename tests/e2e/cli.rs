//! `wasmcri image` against a real daemon and without one: while a daemon listens on the
//! socket the commands go through its admin service (its root, its in-use checks); without
//! one they open the store under the store lock, which a daemon on the root holds; and the
//! admin service's import stream is bounded and leaves nothing behind when refused.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cri::admin::v1 as admin;
use cri::admin::v1::import_image_request::Part;
use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

/// Runs the built `wasmcri` with `args`, failing the test if it does not end within a minute
/// (a command blocked on a lock, say).
async fn wasmcri<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = tokio::process::Command::new(Daemon::bin());
    cmd.args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("wasmcri image did not finish within 60 s")
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `wasmcri --config <the daemon's> image <args>`.
async fn image_cmd(d: &Daemon, args: &[&OsStr]) -> Output {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("--config"),
        d.config_path.as_os_str(),
        OsStr::new("image"),
    ];
    all.extend_from_slice(args);
    wasmcri(all).await
}

/// The tags of every image the daemon lists over the CRI.
async fn cri_tags(d: &Daemon) -> Vec<String> {
    d.img()
        .await
        .list_images(pb::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect()
}

/// A hello-world artifact layout named `name`, in a new directory under `under`.
fn hello_layout(under: &Path, name: &str) -> PathBuf {
    let dir = under.join(unique("layout"));
    wasm_artifact_layout(&dir, &guest("wasm32-wasip1", "hello"), name);
    dir
}

/// The layout directory `dir` as a tar file next to it.
fn tar_of(dir: &Path) -> PathBuf {
    let file = dir.with_extension("tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&file).unwrap());
    tar.append_dir_all(".", dir).unwrap();
    tar.into_inner().unwrap();
    file
}

/// Files in the store's `records/` and `tmp/`.
fn store_files(images: &Path) -> (usize, usize) {
    let n = |sub| {
        std::fs::read_dir(images.join(sub))
            .map(|rd| rd.count())
            .unwrap_or(0)
    };
    (n("records"), n("tmp"))
}

#[tokio::test(flavor = "multi_thread")]
async fn import_through_the_daemon_lands_in_its_root() {
    let d = Daemon::start().await;
    // Another root on the command line: with a daemon on the socket it is not used.
    let elsewhere = tempfile::tempdir().unwrap();
    let other_root = elsewhere.path().join("root");
    let dir = hello_layout(d.dir.path(), "localhost/cli/dir:v1");
    // Another module, so another image.
    let tar_dir = d.dir.path().join("tar-layout");
    wasm_artifact_layout(
        &tar_dir,
        &guest("wasm32-wasip1", "exit3"),
        "localhost/cli/tar:v1",
    );
    let tar = tar_of(&tar_dir);
    for (layout, name) in [
        (&dir, "localhost/cli/dir:v1"),
        (&tar, "localhost/cli/tar:v1"),
    ] {
        let out = wasmcri([
            OsStr::new("--socket"),
            d.socket.as_os_str(),
            OsStr::new("--root"),
            other_root.as_os_str(),
            OsStr::new("image"),
            OsStr::new("import"),
            OsStr::new("--name"),
            OsStr::new(name),
            layout.as_os_str(),
        ])
        .await;
        assert!(out.status.success(), "import {name}: {}", stderr(&out));
        assert!(stdout(&out).starts_with("sha256:"), "{}", stdout(&out));
        assert!(stdout(&out).contains(name), "{}", stdout(&out));
    }
    let tags = cri_tags(&d).await;
    for name in ["localhost/cli/dir:v1", "localhost/cli/tar:v1"] {
        assert!(tags.iter().any(|t| t == name), "{name} not in {tags:?}");
    }
    assert!(!other_root.exists(), "the command wrote its own --root");
    // The daemon's store holds both, and the spooled archives are gone.
    assert_eq!(store_files(&images_dir(&d)), (2, 0));
    // ls through the daemon too (the store is the daemon's: it could not be opened here).
    let out = image_cmd(&d, &[OsStr::new("ls")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("localhost/cli/dir:v1")
            && stdout(&out).contains("localhost/cli/tar:v1"),
        "{}",
        stdout(&out)
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_of_an_image_a_container_uses_is_refused() {
    let mut d = Daemon::start().await;
    let name = "localhost/cli/inuse:v1";
    import_guest(&d, "wasm32-wasip1", "sleeper", name);
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config("cli-rm", &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let ctr = create(&mut rt, &pod, &pod_cfg, container_config("c", name)).await;

    let rm = [OsStr::new("rm"), OsStr::new(name)];
    let out = image_cmd(&d, &rm).await;
    assert!(!out.status.success(), "rm of an image in use succeeded");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("in use by container {ctr}")) && err.contains("FailedPrecondition"),
        "{err}"
    );
    assert!(cri_tags(&d).await.iter().any(|t| t == name));

    // Without the daemon the command reads the container records itself: still refused.
    assert!(d.terminate().success());
    let out = image_cmd(&d, &rm).await;
    assert!(
        !out.status.success(),
        "rm of an image in use succeeded without a daemon"
    );
    assert!(
        stderr(&out).contains(&format!("image {name} is in use by container {ctr}")),
        "{}",
        stderr(&out)
    );
    d.spawn().await;
    let mut rt = d.rt().await;
    assert!(cri_tags(&d).await.iter().any(|t| t == name));

    remove_container(&mut rt, &ctr).await;
    let out = image_cmd(&d, &rm).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("removed {name}"));
    assert!(!cri_tags(&d).await.iter().any(|t| t == name));
    // Absent now: the command says so instead of pretending to remove it.
    let out = image_cmd(&d, &rm).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_daemon_the_command_imports_under_the_store_lock() {
    let mut d = Daemon::start().await;
    assert!(d.terminate().success());
    let images = images_dir(&d);
    let name = "localhost/cli/offline:v1";
    let layout = hello_layout(d.dir.path(), name);
    let import = [
        OsStr::new("import"),
        OsStr::new("--name"),
        OsStr::new(name),
        layout.as_os_str(),
    ];

    // Someone else holds the store lock: refused at once, naming the holder, nothing written.
    let held = nix::fcntl::Flock::lock(
        std::fs::File::open(images.join(".lock")).unwrap(),
        nix::fcntl::FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    let out = image_cmd(&d, &import).await;
    assert!(!out.status.success(), "imported beside the lock holder");
    assert!(
        stderr(&out).contains(&format!("image store {} is in use by", images.display())),
        "{}",
        stderr(&out)
    );
    assert_eq!(store_files(&images), (0, 0));
    drop(held);

    // Nobody holds it: the command imports into the configured root.
    let out = image_cmd(&d, &import).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(store_files(&images), (1, 0));
    let out = image_cmd(&d, &[OsStr::new("ls")]).await;
    assert!(stdout(&out).contains(name), "{}", stdout(&out));

    // The daemon finds it when it starts.
    d.spawn().await;
    assert!(cri_tags(&d).await.iter().any(|t| t == name));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_socket_to_a_root_a_daemon_owns_fails_clearly() {
    let d = Daemon::start().await;
    let images = images_dir(&d);
    let wrong = d.dir.path().join("not-the-daemon.sock");
    let layout = hello_layout(d.dir.path(), "localhost/cli/wrong:v1");
    for args in [
        vec![
            OsStr::new("import"),
            OsStr::new("--name"),
            OsStr::new("localhost/cli/wrong:v1"),
            layout.as_os_str(),
        ],
        vec![OsStr::new("ls")],
        vec![OsStr::new("rm"), OsStr::new("localhost/cli/wrong:v1")],
    ] {
        let mut all = vec![
            OsStr::new("--config"),
            d.config_path.as_os_str(),
            OsStr::new("--socket"),
            wrong.as_os_str(),
            OsStr::new("image"),
        ];
        all.extend(args);
        let out = wasmcri(all).await;
        assert!(!out.status.success(), "succeeded beside the daemon");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("serving {}", d.socket.display()))
                && err.contains(&format!("nothing listens on {}", wrong.display()))
                && err.contains(&format!("pid {}", d.pid().unwrap())),
            "{err}"
        );
    }
    assert_eq!(store_files(&images), (0, 0));
    assert!(cri_tags(&d).await.is_empty());
    d.shutdown().await;
}

/// An import stream built by hand, as a hostile or broken client would send it.
fn stream(parts: Vec<Part>) -> impl tokio_stream::Stream<Item = admin::ImportImageRequest> {
    tokio_stream::iter(
        parts
            .into_iter()
            .map(|p| admin::ImportImageRequest { part: Some(p) }),
    )
}

fn header(name: &str) -> Part {
    Part::Header(admin::ImportHeader { name: name.into() })
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_import_streams_are_refused_and_leave_nothing() {
    const LIMIT: u64 = 1 << 20;
    let d = Daemon::start_with(&format!("[images]\nmax_import_bytes = {LIMIT}\n")).await;
    let images = images_dir(&d);
    let mut client = admin::admin_client::AdminClient::new(d.channel().await);

    // Past the bound: refused while it arrives, the spool file removed.
    let chunk = vec![0u8; 512 << 10];
    let err = client
        .import_image(stream(
            std::iter::once(header("localhost/cli/big:v1"))
                .chain(std::iter::repeat_n(Part::Chunk(chunk.clone()), 3))
                .collect(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("exceeds the limit of {LIMIT} bytes")),
        "{err:?}"
    );
    assert_eq!(store_files(&images), (0, 0));

    // The same through the command: a 2 MiB archive file.
    let big = d.dir.path().join("big.tar");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    let out = image_cmd(&d, &[OsStr::new("import"), big.as_os_str()]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("exceeds the limit of {LIMIT} bytes"))
            && stderr(&out).contains("ResourceExhausted"),
        "{}",
        stderr(&out)
    );
    assert_eq!(store_files(&images), (0, 0));

    // Malformed streams: no header, two headers, no archive.
    for (parts, want) in [
        (vec![Part::Chunk(b"x".to_vec())], "must start with a header"),
        (
            vec![header(""), Part::Chunk(b"x".to_vec()), header("")],
            "second header after 1 bytes",
        ),
        (vec![header("")], "holds no archive"),
    ] {
        let err = client.import_image(stream(parts)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(want), "{err:?}");
    }
    // Within the bound but not an archive: the import fails and its spool goes too.
    let err = client
        .import_image(stream(vec![header(""), Part::Chunk(vec![7u8; 4096])]))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_eq!(store_files(&images), (0, 0));

    // The daemon is unharmed: a real import still works.
    let layout = hello_layout(d.dir.path(), "localhost/cli/ok:v1");
    d.import(&layout, "localhost/cli/ok:v1");
    assert!(
        cri_tags(&d)
            .await
            .iter()
            .any(|t| t == "localhost/cli/ok:v1")
    );
    assert_eq!(store_files(&images), (1, 0));
    d.shutdown().await;
}
