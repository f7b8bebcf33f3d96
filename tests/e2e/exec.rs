//! ExecSync, what the kubelet's exec probes call.

use std::time::{Duration, Instant};

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_exit_codes_and_timeout() {
    let d = Daemon::start().await;
    let layout = d.dir.path().join("multi");
    let g = |n: &str| guest("wasm32-wasip1", n);
    tar_image_layout(
        &layout,
        &[
            ("/sleeper.wasm", g("sleeper")),
            ("/hello.wasm", g("hello")),
            ("/exit3.wasm", g("exit3")),
        ],
        &["/sleeper.wasm"],
        &["FROM_IMAGE=yes"],
        "localhost/multi:v1",
    );
    d.import(&layout, "localhost/multi:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("exec"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", "localhost/multi:v1"),
    )
    .await;

    let exec = |cmd: &[&str], timeout: i64| pb::ExecSyncRequest {
        container_id: c.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    // Not running yet.
    let e = rt.exec_sync(exec(&["/hello.wasm"], 5)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    start(&mut rt, &c).await;
    wait_log(&logs.join("main/0.log"), "started", 10).await;

    let out = rt
        .exec_sync(exec(&["/hello.wasm"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from wasm"),
        "{out:?}"
    );
    assert!(!out.stderr.is_empty());
    let out = rt
        .exec_sync(exec(&["/exit3.wasm"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 3);

    // The container's own module, interrupted at the deadline.
    let t0 = Instant::now();
    let e = rt.exec_sync(exec(&["/sleeper.wasm"], 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let e = rt.exec_sync(exec(&[], 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // The container is unaffected by its execs.
    assert_eq!(
        status(&mut rt, &c).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    d.shutdown().await;
}

/// An exec (an exec probe, `crictl exec -s`) whose command writes without end: the daemon
/// keeps 8 MiB of each stream (so the reply fits the kubelet's 16 MiB message limit), kills
/// the command and says so, instead of growing without bound.
#[tokio::test(flavor = "multi_thread")]
async fn exec_output_flood_is_capped_and_killed() {
    let d = Daemon::start().await;
    let layout = d.dir.path().join("flood");
    let g = |n: &str| guest("wasm32-wasip1", n);
    tar_image_layout(
        &layout,
        &[("/sleeper.wasm", g("sleeper")), ("/flood.wasm", g("flood"))],
        &["/sleeper.wasm"],
        &[],
        "localhost/flood:v1",
    );
    d.import(&layout, "localhost/flood:v1");
    // The kubelet's CRI client accepts messages up to 16 MiB.
    let mut rt = d.rt().await.max_decoding_message_size(16 << 20);
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("flood"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("main", "localhost/flood:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    let daemon = d.pid().unwrap();
    let rss_kib = |pid: i32| -> u64 {
        status_field(pid, "VmRSS")
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    let before = rss_kib(daemon);
    let t = Instant::now();
    let out = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["/flood.wasm".into()],
            timeout: 60,
        })
        .await
        .unwrap()
        .into_inner();
    // Killed at the cap, long before the timeout.
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(out.stdout.len(), (8 << 20) - 4096);
    assert_ne!(out.exit_code, 0);
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("exceeded 8384512 bytes"), "{note}");
    let grown = rss_kib(daemon).saturating_sub(before);
    // The figure for the record (`--nocapture`): the daemon's peak RSS over its whole life.
    eprintln!(
        "exec flood: daemon RSS {before} KiB before, grew {grown} KiB, peak {}",
        status_field(daemon, "VmHWM").trim()
    );
    assert!(grown < 200 << 10, "daemon grew {grown} KiB");
    // No exec runner is left, and the container still answers.
    let ok = rt
        .exec_sync(pb::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["/sleeper.wasm".into()],
            timeout: 1,
        })
        .await;
    assert_eq!(ok.unwrap_err().code(), Code::DeadlineExceeded);
    assert_eq!(
        status(&mut rt, &c).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// `examples/guests` `wbox`, the multi-call userland: commands such as `echo -n hello` or
/// `sh -c "…"` (what critest and operators type) run as the image's module with that argv.
#[tokio::test(flavor = "multi_thread")]
async fn wbox_commands_run_as_the_images_module() {
    let d = Daemon::start().await;
    import_guest(&d, "wasm32-wasip1", "wbox", "localhost/wbox:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("wbox"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut cfg = container_config("loop", "localhost/wbox:v1");
    cfg.command = vec!["sh".into(), "-c".into()];
    cfg.args = vec!["while true; do echo tick; sleep 0.2; done".into()];
    let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    wait_log(&logs.join("loop/0.log"), "tick", 10).await;

    let exec = |cmd: &[&str]| pb::ExecSyncRequest {
        container_id: c.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    };
    let out = rt
        .exec_sync(exec(&["echo", "-n", "hello"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.exit_code, out.stdout.as_slice()), (0, &b"hello"[..]));
    let script = "echo one two | wc -w; false || echo fallback; nosuch; exit 7";
    let out = rt
        .exec_sync(exec(&["sh", "-c", script]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 7, "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\nfallback\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "nosuch: command not found\n"
    );
    // A syntax error is the shell's usage code, not a crash.
    let out = rt
        .exec_sync(exec(&["sh", "-c", "echo \"unterminated"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 2, "{out:?}");
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
