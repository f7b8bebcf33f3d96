//! wasi:http components served by the runner: a fresh instance per request, errors and traps
//! answered 500 without killing the server, concurrency, graceful stop.

use std::time::{Duration, Instant};

use cri::v1 as pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn serves_wasi_http_component() {
    let d = Daemon::start().await;
    let layout = d.dir.path().join("http-layout");
    wasm_artifact_layout(&layout, &http_guest(), "localhost/http-hello:v1");
    d.import(&layout, "localhost/http-hello:v1");
    let mut img = d.img().await;
    let st = img
        .image_status(pb::ImageStatusRequest {
            image: Some(pb::ImageSpec {
                image: "localhost/http-hello:v1".into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.info["info"].contains("wasi:http/proxy"),
        "{}",
        st.info["info"]
    );

    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("http"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let port = free_port();
    let mut cfg = container_config("web", "localhost/http-hello:v1");
    cfg.annotations
        .insert("wasmcri.io/http-port".into(), port.to_string());
    let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    let addr = format!("127.0.0.1:{port}");

    let (code, body) = http_get_ready(&addr, "/hi", 20).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from wasi:http /hi"), "{body}");
    assert_eq!(http_get(&addr, "/fail").await.unwrap().0, 500);
    // A trapping instance is a 500 for that request only.
    assert_eq!(http_get(&addr, "/trap").await.unwrap().0, 500);
    assert_eq!(http_get(&addr, "/after").await.unwrap().0, 200);

    // Concurrent requests, each its own instance.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            http_get(&addr, &format!("/c{i}")).await.unwrap()
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (code, body) = t.await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains(&format!("/c{i}")), "{body}");
    }
    assert_eq!(
        status(&mut rt, &c).await.state,
        pb::ContainerState::ContainerRunning as i32
    );

    // Graceful stop: stops accepting, exits well within the timeout.
    let t0 = Instant::now();
    rt.stop_container(pb::StopContainerRequest {
        container_id: c.clone(),
        timeout: 10,
    })
    .await
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert!(st.exit_code == 0 || st.exit_code == 143, "{st:?}");
    assert!(
        http_get(&addr, "/gone").await.is_err(),
        "still serving after stop"
    );
    d.shutdown().await;
}
