//! wasi:http components served by the runner: a fresh instance per request, errors and traps
//! answered 500 without killing the server, concurrency, HTTP/1.1 and h2c on one port,
//! graceful stop (in-flight requests drained, new connections refused) and the cut-off at the
//! StopContainer timeout.

use std::time::{Duration, Instant};

use cri::v1 as pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn serves_wasi_http_component() {
    let d = Daemon::start().await;
    import_http_hello(&d);
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
    let (c, addr) = serve_http_hello(&d, &mut rt, "http").await;
    let (code, body) = http_get(&addr, "/hi").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from wasi:http /hi"), "{body}");
    assert_eq!(http_get(&addr, "/fail").await.unwrap().0, 500);
    // A trapping instance is a 500 for that request only.
    assert_eq!(http_get(&addr, "/trap").await.unwrap().0, 500);
    assert_eq!(http_get(&addr, "/after").await.unwrap().0, 200);
    // HTTP/2 with prior knowledge on the same port.
    let (code, body) = http2_get(&addr, "/h2").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("hello from wasi:http /h2"), "{body}");

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
    stop_container(&mut rt, &c, 10).await;
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0, "{st:?}");
    assert!(
        http_get(&addr, "/gone").await.is_err(),
        "still serving after stop"
    );
    d.shutdown().await;
}

/// A daemon serving http-hello: (daemon, client, container id, `127.0.0.1:port`).
async fn serve_hello(
    name: &str,
) -> (
    Daemon,
    cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    String,
    String,
) {
    let d = Daemon::start().await;
    import_http_hello(&d);
    let mut rt = d.rt().await;
    let (c, addr) = serve_http_hello(&d, &mut rt, name).await;
    (d, rt, c, addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_drains_in_flight_requests_and_refuses_new_connections() {
    let (d, mut rt, c, addr) = serve_hello("drain").await;
    // An idle keep-alive connection must not hold the stop up.
    let idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { http_get(&addr, "/sleep?ms=1500").await }
    });
    let log = d.dir.path().join("logs/web/0.log");
    wait_log(&log, "sleep 1500 ms: start", 10).await;

    let t0 = Instant::now();
    let stop = tokio::spawn({
        let mut rt = rt.clone();
        let c = c.clone();
        async move {
            stop_container(&mut rt, &c, 10).await;
            t0.elapsed()
        }
    });
    // The runner sees the signal within its 50 ms poll; from then on nothing listens.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!slow.is_finished() && !stop.is_finished());
    let refused = tokio::net::TcpStream::connect(&addr).await;
    assert!(
        refused.is_err(),
        "new connection accepted while stopping: {refused:?}"
    );

    let (code, body) = slow.await.unwrap().unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("/sleep?ms=1500"), "{body}");
    let took = stop.await.unwrap();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "StopContainer took {took:?}"
    );
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0, "{st:?}");
    assert_eq!(st.reason, "Completed", "{st:?}");
    drop(idle);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_cuts_off_requests_slower_than_the_timeout() {
    let (d, mut rt, c, addr) = serve_hello("cutoff").await;
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { http_get(&addr, "/sleep?ms=30000").await }
    });
    wait_log(
        &d.dir.path().join("logs/web/0.log"),
        "sleep 30000 ms: start",
        10,
    )
    .await;
    let t0 = Instant::now();
    stop_container(&mut rt, &c, 1).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "StopContainer took {took:?}"
    );
    // The client sees the connection end without a response.
    let answer = slow.await.unwrap();
    assert!(
        !matches!(answer, Ok((200, _))),
        "cut-off request answered: {answer:?}"
    );
    let st = status(&mut rt, &c).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "{st:?}");
    assert_eq!(st.reason, "Error", "{st:?}");
    d.shutdown().await;
}
