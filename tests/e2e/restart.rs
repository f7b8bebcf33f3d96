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
    stop_container(&mut rt, &keep, 5).await;
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

/// PID and start time of the daemon's idle standby runners (`runner --standby`), waiting up
/// to 10 s for `want` of them.
async fn standby_runners(daemon_pid: i32, want: usize) -> Vec<(i32, Option<u64>)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let found: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse::<i32>().ok());
                ppid == Some(daemon_pid) && cmdline.split(|b| *b == 0).any(|a| a == b"--standby")
            })
            .map(|pid| (pid, wasmcri::runtime::pid_start_time(pid)))
            .collect();
        if found.len() >= want || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Gone, or a zombie nobody has reaped yet: either way no longer running.
fn ended(pid: i32, start: Option<u64>) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().next());
    !wasmcri::runtime::same_process(pid, start) || state == Some("Z")
}

async fn wait_ended(runners: &[(i32, Option<u64>)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !runners.iter().all(|(p, s)| ended(*p, *s)) {
        assert!(
            std::time::Instant::now() < deadline,
            "standby runners still running: {runners:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Standby runners are replaced as they are used, start containers like spawned ones, and
/// end with the daemon however it ends (SIGTERM or kill -9): nothing is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn standby_runners_end_with_the_daemon() {
    let mut d = Daemon::start().await;
    import_guest(&d, "wasm32-wasip1", "sleeper", "localhost/sleeper:v1");
    let before = standby_runners(d.pid().unwrap(), 2).await;
    assert_eq!(before.len(), 2, "standby runners after startup: {before:?}");

    // A container takes one of them: it is the container's runner, and a new one replaces it.
    let logs = d.dir.path().join("logs");
    let mut rt = d.rt().await;
    let cfg = pod_config(&unique("standby"), &logs);
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &cfg,
        container_config("s", "localhost/sleeper:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    wait_log(&logs.join("s/0.log"), "started", 10).await;
    let pid = runner_pid(&mut rt, &c).await;
    assert!(
        before.iter().any(|(p, _)| *p == pid),
        "container runner {pid} was not a standby one: {before:?}"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.contains(&c), "runner not in its cgroup: {cgroup}");
    // The guest thread, the signal thread, the attach socket's accept thread and one WASI
    // runtime worker: not a worker per CPU.
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count();
    assert!(threads <= 4, "{threads} threads in an idle command runner");
    // The container's runner still says `--standby` on its command line.
    let after: Vec<_> = standby_runners(d.pid().unwrap(), 3)
        .await
        .into_iter()
        .filter(|(p, _)| *p != pid)
        .collect();
    assert_eq!(after.len(), 2, "pool not refilled: {after:?}");

    // kill -9: the standbys see their pipe close and exit; the container keeps running.
    d.kill9();
    wait_ended(&after).await;
    assert!(!ended(pid, wasmcri::runtime::pid_start_time(pid)));

    // A graceful stop ends them too.
    d.spawn().await;
    let again = standby_runners(d.pid().unwrap(), 2).await;
    assert_eq!(again.len(), 2);
    assert!(d.terminate().success());
    wait_ended(&again).await;
    d.spawn().await;
    d.shutdown().await;
}

/// A stop that comes as soon as the socket appears (a service manager's stop right after its
/// start) is graceful: the signal handlers are in place before the socket exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_stopped_as_soon_as_it_serves_exits_cleanly() {
    for _ in 0..5 {
        let mut d = Daemon::start().await;
        let st = d.terminate();
        assert!(st.success(), "{st:?}\n{}", d.log());
    }
}
