//! Hostile requests and node users: cancelled lifecycle calls, execs that would outlive
//! their container, and a container user on the host reaching for the daemon's files.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use cri::v1 as pb;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

/// The PIDs in a container's cgroup v1 `pids` hierarchy (empty if there is no such cgroup).
fn cgroup_pids(d: &Daemon, container_id: &str) -> Vec<i32> {
    let p = Path::new("/sys/fs/cgroup/pids")
        .join(d.cgroup_parent.trim_start_matches('/'))
        .join(container_id)
        .join("cgroup.procs");
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID: it is ended, just not reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            !matches!(state, Some("Z") | Some("X"))
        })
        .unwrap_or(false)
}

/// StartContainer calls the client gives up on at every point of the start (before the
/// runner is spawned, while it loads, after it is ready): each container still reaches a
/// state from which StopContainer and RemoveContainer work, and no runner is left behind.
/// Without standby runners a start takes long enough for the cancellations to land inside it.
#[tokio::test(flavor = "multi_thread")]
async fn cancelled_start_container_leaves_a_container_that_can_be_stopped_and_removed() {
    let d = Daemon::start_with("standby_runners = 0").await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("cancel"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut cancelled = 0;
    for i in 0..12u64 {
        let name = format!("c{i}");
        let id = create(
            &mut rt,
            &pod,
            &pod_cfg,
            container_config(&name, "localhost/sleeper:v1"),
        )
        .await;
        let mut client = d.rt().await;
        let call = client.start_container(pb::StartContainerRequest {
            container_id: id.clone(),
        });
        // Dropping the call resets the HTTP/2 stream: tonic drops the handler's future.
        if tokio::time::timeout(Duration::from_micros(500 + i * 700), call)
            .await
            .is_err()
        {
            cancelled += 1;
        }
        // Whatever the start got to, the container settles and can be stopped and removed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let st = status(&mut rt, &id).await;
            if st.state != pb::ContainerState::ContainerCreated as i32 || Instant::now() > deadline
            {
                break cgroup_pids(&d, &id).first().copied();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let t0 = Instant::now();
        rt.stop_container(pb::StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap_or_else(|e| panic!("stop {name} after a cancelled start: {e:?}"));
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "stop {name} took {:?}",
            t0.elapsed()
        );
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("remove {name} after a cancelled start: {e:?}"));
        if let Some(pid) = pid {
            assert!(!alive(pid), "runner {pid} of {name} outlived its removal");
        }
        assert!(cgroup_pids(&d, &id).is_empty());
    }
    assert!(cancelled > 0, "no StartContainer call was cut off");
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// An exec runner whose command never ends (an exec probe, `crictl exec`) dies with its
/// container: StopContainer ends every process the container started, and the pending
/// ExecSync returns.
#[tokio::test(flavor = "multi_thread")]
async fn exec_runners_die_with_their_container() {
    let d = Daemon::start().await;
    let layout = d.dir.path().join("multi");
    tar_image_layout(
        &layout,
        &[("/sleeper.wasm", guest(P1, "sleeper"))],
        &["/sleeper.wasm"],
        &[],
        "localhost/multi:v1",
    );
    d.import(&layout, "localhost/multi:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("execs"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let id = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", "localhost/multi:v1"),
    )
    .await;
    start(&mut rt, &id).await;
    wait_log(&logs.join("main/0.log"), "started", 10).await;
    let main_pid = runner_pid(&mut rt, &id).await;

    let mut execs = Vec::new();
    for _ in 0..2 {
        let mut client = d.rt().await;
        let id = id.clone();
        execs.push(tokio::spawn(async move {
            client
                .exec_sync(pb::ExecSyncRequest {
                    container_id: id,
                    cmd: vec!["/sleeper.wasm".into()],
                    timeout: 0,
                })
                .await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let exec_pids = loop {
        let pids: Vec<i32> = cgroup_pids(&d, &id)
            .into_iter()
            .filter(|p| *p != main_pid)
            .collect();
        if pids.len() == 2 {
            break pids;
        }
        assert!(Instant::now() < deadline, "exec runners not seen: {pids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    stop_container(&mut rt, &id, 2).await;
    for e in execs {
        let r = tokio::time::timeout(Duration::from_secs(10), e)
            .await
            .expect("ExecSync returns once its container stopped")
            .unwrap();
        if let Ok(out) = r {
            assert_ne!(out.into_inner().exit_code, 0);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while exec_pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "exec runners {exec_pids:?} outlived StopContainer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No new exec in a stopped container.
    let e = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/sleeper.wasm".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// A container running as a non-root user: the only daemon-side path handed to that user is
/// the directory its runner records the exit status in. Exec specs never touch the disk, so
/// a process of that UID on the host has nothing to swap.
#[tokio::test(flavor = "multi_thread")]
async fn container_user_owns_only_its_exit_directory() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("owner"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut cfg = container_config("user", "localhost/sleeper:v1");
    cfg.linux = Some(pb::LinuxContainerConfig {
        security_context: Some(pb::LinuxContainerSecurityContext {
            run_as_user: Some(pb::Int64Value { value: 4321 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &id).await;
    wait_log(&logs.join("user/0.log"), "started", 10).await;
    let out = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["/sleeper.wasm".into()],
            timeout: 1,
        })
        .await;
    assert!(out.is_err(), "the sleeper runs past its 1 s deadline");

    let dir = d.dir.path().join("root/containers").join(&id);
    let mut owned_by_user = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.uid() == 4321 {
            owned_by_user.push(p.strip_prefix(&dir).unwrap().to_owned());
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !(name.starts_with("exec-") && name.ends_with(".json")),
            "exec spec written to disk: {}",
            p.display()
        );
        if m.is_dir() && p.file_name() != Some("jail".as_ref()) {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert_eq!(
        owned_by_user,
        vec![std::path::PathBuf::from("exit")],
        "paths under {} owned by the container user",
        dir.display()
    );
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// A log path that climbs out of the pod's log directory (the runner opens it as root) is
/// refused, and the refused CreateContainer leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn log_path_cannot_leave_the_log_directory() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "hello", "localhost/hello:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("logpath"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let escape = d.dir.path().join("escaped.log");
    for bad in ["../escaped.log", "/tmp/abs.log", "main/../../escaped.log"] {
        let mut cfg = container_config("main", "localhost/hello:v1");
        cfg.log_path = bad.into();
        let e = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .expect_err(bad);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("log_path"), "{}", e.message());
    }
    assert!(!escape.exists());
    let ctrs = d.dir.path().join("root/containers");
    let left: Vec<_> = std::fs::read_dir(&ctrs)
        .map(|rd| rd.filter_map(|e| e.ok()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    // The name is free again: a good request with it works.
    let id = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", "localhost/hello:v1"),
    )
    .await;
    start(&mut rt, &id).await;
    assert_eq!(wait_exited(&mut rt, &id, 30).await.exit_code, 0);
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// A request over the daemon's 16 MiB message limit is refused while it is decoded (the
/// daemon never holds more than the limit), creates nothing, and the daemon keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_and_leave_nothing() {
    let d = Daemon::start().await;
    let mut rt = d
        .rt()
        .await
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let logs = d.dir.path().join("logs");
    let mut cfg = pod_config(&unique("huge"), &logs);
    cfg.annotations.insert("huge".into(), "x".repeat(17 << 20));
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    let pods = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    rt.version(pb::VersionRequest::default()).await.unwrap();
    d.shutdown().await;
}
