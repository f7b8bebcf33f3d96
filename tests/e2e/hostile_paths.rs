//! A pod's command and an exec's `cmd[0]` name modules inside the image only: `..` stops at
//! the image root and symlinks resolve inside it, so neither can run a file of the host.

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

#[tokio::test(flavor = "multi_thread")]
async fn commands_cannot_name_host_files() {
    let d = Daemon::start().await;
    // The host file a hostile pod spec or image points at: it would exit 3 if it ran.
    let host_dir = d.dir.path().join("host-only");
    std::fs::create_dir_all(&host_dir).unwrap();
    let evil = host_dir.join("evil.wasm");
    std::fs::write(&evil, guest(P1, "exit3")).unwrap();
    let layout = d.dir.path().join(unique("layout"));
    let link_target = format!("/proc/1/root{}", evil.display());
    tar_image_layout_as(
        &layout,
        &[
            ("/app.wasm", guest(P1, "hello")),
            ("/sleeper.wasm", guest(P1, "sleeper")),
        ],
        &[("/link.wasm", link_target.as_str())],
        &["/app.wasm"],
        &[],
        "",
        "localhost/paths:v1",
    );
    d.import(&layout, "localhost/paths:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("paths"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;

    let climb = format!("/../../../../../../..{}", evil.display());
    for (name, argv0) in [("climb", climb.as_str()), ("link", "/link.wasm")] {
        let mut c = container_config(name, "localhost/paths:v1");
        c.command = vec![argv0.into()];
        let id = create(&mut rt, &pod, &pod_cfg, c).await;
        start(&mut rt, &id).await;
        let st = wait_exited(&mut rt, &id, 30).await;
        // Not in the image, so the image's own module ran (with that argv).
        assert_eq!(st.exit_code, 0, "{name}: the host file ran: {st:?}");
        wait_log(&logs.join(format!("{name}/0.log")), "hello from wasm", 10).await;
    }

    let mut c = container_config("main", "localhost/paths:v1");
    c.command = vec!["/sleeper.wasm".into()];
    let id = create(&mut rt, &pod, &pod_cfg, c).await;
    start(&mut rt, &id).await;
    for cmd0 in [climb.as_str(), "/link.wasm", "/missing.wasm"] {
        let e = rt
            .exec_sync(pb::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec![cmd0.into()],
                timeout: 10,
            })
            .await
            .expect_err(cmd0);
        assert_eq!(e.code(), Code::InvalidArgument, "{cmd0}: {}", e.message());
        assert!(e.message().contains("no .wasm file"), "{}", e.message());
    }
    // A module of the image still runs.
    let ok = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/app.wasm".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.exit_code, 0);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("hello from wasm"));
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
