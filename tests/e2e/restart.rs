//! Daemon restarts: kill -9 at any point keeps state; running containers keep running.

use cri::v1 as pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn containers_survive_daemon_restart() {
    let mut d = Daemon::start().await;
    import_guest(&d, "wasm32-wasip1", "sleeper", "localhost/sleeper:v1");
    import_guest(&d, "wasm32-wasip1", "exit3", "localhost/exit3:v1");
    let logs = d.dir.path().join("logs");
    let mut rt = d.rt().await;
    let pod_cfg = pod_config(&unique("restart"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let keep = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("keep", "localhost/sleeper:v1"),
    )
    .await;
    let die = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("die", "localhost/sleeper:v1"),
    )
    .await;
    let done = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("done", "localhost/exit3:v1"),
    )
    .await;
    let fresh = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("fresh", "localhost/exit3:v1"),
    )
    .await;
    start(&mut rt, &keep).await;
    start(&mut rt, &die).await;
    start(&mut rt, &done).await;
    wait_exited(&mut rt, &done, 30).await;
    wait_log(&logs.join("keep/0.log"), "started", 10).await;
    let die_pid = runner_pid(&mut rt, &die).await;

    d.kill9();
    // While the daemon is down, one container is stopped by someone else.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(die_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{die_pid}")).exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    d.spawn().await;
    let mut rt = d.rt().await;

    let st = status(&mut rt, &keep).await;
    assert_eq!(
        st.state,
        pb::ContainerState::ContainerRunning as i32,
        "{st:?}\n{}",
        d.log()
    );
    let st = wait_exited(&mut rt, &die, 10).await;
    assert_eq!(st.exit_code, 143, "{st:?}");
    let st = status(&mut rt, &done).await;
    assert_eq!(st.exit_code, 3);
    assert_eq!(
        status(&mut rt, &fresh).await.state,
        pb::ContainerState::ContainerCreated as i32
    );
    // Names stay reserved across the restart.
    let e = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("keep", "localhost/sleeper:v1")),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    // Logs keep flowing and the re-attached container can be stopped.
    rt.reopen_container_log(pb::ReopenContainerLogRequest {
        container_id: keep.clone(),
    })
    .await
    .unwrap();
    rt.stop_container(pb::StopContainerRequest {
        container_id: keep.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let st = status(&mut rt, &keep).await;
    assert_eq!(
        (st.state, st.exit_code),
        (pb::ContainerState::ContainerExited as i32, 143)
    );
    start(&mut rt, &fresh).await;
    assert_eq!(wait_exited(&mut rt, &fresh, 30).await.exit_code, 3);

    // SIGTERM to the daemon leaves a running container running.
    let again = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("again", "localhost/sleeper:v1"),
    )
    .await;
    start(&mut rt, &again).await;
    assert!(d.terminate().success());
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(
        status(&mut rt, &again).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    d.shutdown().await;
}
