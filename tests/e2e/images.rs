//! Images through the CRI: publish with `wasmcri image push`, pull with PullImage (by tag and
//! by digest), run, inspect, remove — against Debian's docker-registry on 127.0.0.1.

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn push_pull_run_remove() {
    let Some(reg) = registry() else { return };
    let d = Daemon::start().await;
    let wasm = guests_dir().join("wasm32-wasip2/release/hello.wasm");
    let reference = format!("{}/e2e/hello:v1", reg.host);
    d.push(&wasm, &reference);

    let mut img = d.img().await;
    let spec = |s: &str| {
        Some(pb::ImageSpec {
            image: s.into(),
            ..Default::default()
        })
    };
    // Absent: ImageStatus answers empty (the kubelet then pulls).
    let st = img
        .image_status(pb::ImageStatusRequest {
            image: spec(&reference),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_none());
    let pulled = img
        .pull_image(pb::PullImageRequest {
            image: spec(&reference),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:"),
        "{}",
        pulled.image_ref
    );
    let st = img
        .image_status(pb::ImageStatusRequest {
            image: spec(&reference),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let image = st.image.unwrap();
    assert_eq!(image.id, pulled.image_ref);
    assert!(
        image.repo_tags.contains(&reference),
        "{:?}",
        image.repo_tags
    );
    assert!(image.size > 0);
    let digest_ref = image.repo_digests.first().cloned().expect("repo digest");
    assert!(st.info["info"].contains("component"), "{}", st.info["info"]);
    // Pull by digest: a metadata check only, same image.
    let again = img
        .pull_image(pb::PullImageRequest {
            image: spec(&digest_ref),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.image_ref, pulled.image_ref);
    let fs = img
        .image_fs_info(pb::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(fs.image_filesystems[0].used_bytes.unwrap().value > 0);
    assert!(fs.image_filesystems[0].inodes_used.unwrap().value > 0);

    // Run it.
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("pulled"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("hello", &reference),
    )
    .await;
    start(&mut rt, &c).await;
    assert_eq!(wait_exited(&mut rt, &c, 30).await.exit_code, 0);
    wait_log(&logs.join("hello/0.log"), "hello from wasm", 5).await;

    // In use: removal refused; after the container is gone it succeeds and frees it.
    let e = img
        .remove_image(pb::RemoveImageRequest {
            image: spec(&pulled.image_ref),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    remove_container(&mut rt, &c).await;
    img.remove_image(pb::RemoveImageRequest {
        image: spec(&pulled.image_ref),
    })
    .await
    .unwrap();
    img.remove_image(pb::RemoveImageRequest {
        image: spec(&pulled.image_ref),
    })
    .await
    .unwrap();
    let list = img
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.is_empty(), "{list:?}");

    // Unknown image and unknown registry: clear errors.
    let e = img
        .pull_image(pb::PullImageRequest {
            image: spec(&format!("{}/e2e/missing:v1", reg.host)),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_ne!(e.code(), Code::Ok);
    assert!(e.message().contains("missing"), "{e:?}");
    d.shutdown().await;
}
