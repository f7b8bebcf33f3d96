//! Pod and container lifecycle through every core RPC.

use std::time::{Duration, Instant};

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";
const P2: &str = "wasm32-wasip2";

fn log_lines(text: &str) -> Vec<(String, String, String, String)> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap().to_string();
            let stream = it.next().unwrap().to_string();
            let tag = it.next().unwrap().to_string();
            (ts, stream, tag, it.next().unwrap_or("").to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn version_status_runtime_config() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let v = rt
        .version(pb::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("wasmcri", "v1")
    );
    let s = rt
        .status(pb::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds = s.status.unwrap().conditions;
    let get = |t: &str| conds.iter().find(|c| c.r#type == t).unwrap().clone();
    assert!(get("RuntimeReady").status);
    // The test's CNI dir is empty: the network is honestly not ready.
    let net = get("NetworkReady");
    assert!(!net.status);
    assert!(!net.message.is_empty());
    assert!(s.info.contains_key("config"));
    let names: Vec<_> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["", "wasmtime"]);
    let rc = rt
        .runtime_config(pb::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        pb::CgroupDriver::Cgroupfs as i32
    );
    // Unsupported RPCs say so.
    let e = rt
        .checkpoint_container(pb::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_runs_logs_and_completes() {
    for target in [P1, P2] {
        let d = Daemon::start().await;
        import_guest(&d, target, "hello", "localhost/hello:v1");
        let mut rt = d.rt().await;
        let logs = d.dir.path().join("logs");
        let pod_cfg = pod_config(&unique("hello"), &logs);
        let pod = run_pod(&mut rt, pod_cfg.clone()).await;
        let id = create(
            &mut rt,
            &pod,
            &pod_cfg,
            container_config("hello", "localhost/hello:v1"),
        )
        .await;
        let st = status(&mut rt, &id).await;
        assert_eq!(st.state, pb::ContainerState::ContainerCreated as i32);
        start(&mut rt, &id).await;
        let st = wait_exited(&mut rt, &id, 30).await;
        assert_eq!(
            (st.exit_code, st.reason.as_str()),
            (0, "Completed"),
            "{target}: {st:?}"
        );
        assert!(
            st.started_at > 0
                && st.finished_at >= st.started_at
                && st.created_at > 1_500_000_000_000_000_000
        );
        assert!(
            st.image_ref.starts_with("sha256:") || st.image_ref.contains("@sha256:"),
            "{}",
            st.image_ref
        );
        assert_eq!(st.image.unwrap().image, "localhost/hello:v1");
        assert_eq!(st.labels.get("ctr").map(String::as_str), Some("hello"));
        let log_path = logs.join("hello/0.log");
        assert_eq!(st.log_path, log_path.display().to_string());
        let text = wait_log(&log_path, "hello from wasm", 5).await;
        let lines = log_lines(&text);
        let out = lines
            .iter()
            .find(|l| l.3 == "hello from wasm")
            .expect("stdout line");
        assert_eq!((out.1.as_str(), out.2.as_str()), ("stdout", "F"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(&out.0).is_ok(),
            "timestamp {}",
            out.0
        );
        assert!(lines.iter().any(|l| l.1 == "stderr"), "{text}");

        // Start again is refused; stop and remove are idempotent.
        let e = rt
            .start_container(pb::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        stop_container(&mut rt, &id, 1).await;
        remove_container(&mut rt, &id).await;
        remove_container(&mut rt, &id).await;
        let e = rt
            .container_status(pb::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        // Stopping what is gone succeeds too (critest's idempotence suite checks it).
        stop_container(&mut rt, &id, 0).await;
        remove_pod(&mut rt, &pod).await;
        remove_stopped_pod(&mut rt, &pod).await;
        d.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_traps_and_broken_modules() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "exit3", "localhost/exit3:v1");
    import_guest(&d, P2, "trap", "localhost/trap:v1");
    let bad = d.dir.path().join("bad-layout");
    wasm_artifact_layout(
        &bad,
        b"\0asm\x01\0\0\0\x01\xff\xff garbage",
        "localhost/bad:v1",
    );
    d.import(&bad, "localhost/bad:v1");
    let mut rt = d.rt().await;
    let pod_cfg = pod_config(&unique("codes"), &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;

    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("exit3", "localhost/exit3:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    let st = wait_exited(&mut rt, &c, 30).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    // The kubelet prefixes `terminated.message` with this: nothing for a plain exit.
    assert_eq!(st.message, "", "{st:?}");

    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("trap", "localhost/trap:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    let st = wait_exited(&mut rt, &c, 30).await;
    assert_ne!(st.exit_code, 0, "{st:?}");
    assert_eq!(st.reason, "Error");
    assert!(
        !st.message.is_empty() && !st.message.contains('\n'),
        "{:?}",
        st.message
    );

    // A corrupt module: start reports the failure or the container exits with a reason.
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("bad", "localhost/bad:v1"),
    )
    .await;
    let _ = rt
        .start_container(pb::StartContainerRequest {
            container_id: c.clone(),
        })
        .await;
    let st = wait_exited(&mut rt, &c, 30).await;
    assert_ne!(st.exit_code, 0);
    assert!(!st.message.is_empty(), "{st:?}");

    // Unknown image: NotFound, and nothing reserved (the same name can be created later).
    let e = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("ghost", "localhost/nope:v1")),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_env_and_args() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "readfile", "localhost/readfile:v1");
    let mut rt = d.rt().await;
    let vol = d.dir.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    std::fs::write(vol.join("msg"), "from a configmap").unwrap();
    let pod_cfg = pod_config(&unique("mounts"), &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut cfg = container_config("reader", "localhost/readfile:v1");
    cfg.args = vec!["/config/msg".into()];
    cfg.envs = vec![pb::KeyValue {
        key: "GREETING".into(),
        value: "hi there".into(),
    }];
    cfg.mounts = vec![pb::Mount {
        container_path: "/config".into(),
        host_path: vol.display().to_string(),
        readonly: true,
        ..Default::default()
    }];
    let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    let st = wait_exited(&mut rt, &c, 30).await;
    let log = std::fs::read_to_string(d.dir.path().join("logs/reader/0.log")).unwrap();
    assert_eq!(st.exit_code, 0, "{st:?} {log}");
    assert!(log.contains("hi there"), "{log}");
    assert!(log.contains("from a configmap"), "{log}");
    assert_eq!(st.mounts.len(), 1);
    assert!(st.mounts[0].readonly);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_honours_timeout_and_filters_work() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("stop"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let a = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("a", "localhost/sleeper:v1"),
    )
    .await;
    let b = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("b", "localhost/sleeper:v1"),
    )
    .await;
    start(&mut rt, &a).await;
    wait_log(&logs.join("a/0.log"), "started", 10).await;

    // Filters: state, pod, labels, id prefix.
    let running = pb::ContainerStateValue {
        state: pb::ContainerState::ContainerRunning as i32,
    };
    let list = |f: pb::ContainerFilter| pb::ListContainersRequest { filter: Some(f) };
    let got = rt
        .list_containers(list(pb::ContainerFilter {
            state: Some(running),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        got.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![a.clone()]
    );
    let got = rt
        .list_containers(list(pb::ContainerFilter {
            label_selector: [("ctr".to_string(), "b".to_string())].into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, b);
    let got = rt
        .list_containers(list(pb::ContainerFilter {
            id: a[..12].to_string(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(got.len(), 1);
    let got = rt
        .list_containers(list(pb::ContainerFilter {
            pod_sandbox_id: pod.clone(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(got.len(), 2);
    // Truncated-ID lookup, as crictl uses it.
    assert_eq!(status(&mut rt, &a[..12]).await.id, a);

    // Wasm cannot catch SIGTERM: the runner interrupts the guest at once and reports 143.
    let t0 = Instant::now();
    stop_container(&mut rt, &a, 10).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t0.elapsed()
    );
    let st = status(&mut rt, &a).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 143, "{st:?}");

    // StopPodSandbox stops the rest.
    start(&mut rt, &b).await;
    stop_pod(&mut rt, &pod).await;
    let st = status(&mut rt, &b).await;
    assert_eq!(st.state, pb::ContainerState::ContainerExited as i32);
    let pods = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest {
            filter: Some(pb::PodSandboxFilter {
                state: Some(pb::PodSandboxStateValue {
                    state: pb::PodSandboxState::SandboxNotready as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].annotations, pod_cfg.annotations);
    // Creating in a stopped sandbox is refused.
    let e = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config("late", "localhost/sleeper:v1")),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // RemovePodSandbox removes its containers.
    remove_stopped_pod(&mut rt, &pod).await;
    let all = rt
        .list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(all.is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_reserved_and_handlers_checked() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let pod_cfg = pod_config(&unique("names"), &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_config("other", d.dir.path())),
            runtime_handler: "runc".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("runc"));
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    remove_pod(&mut rt, &pod).await;
    // Freed by the removal.
    let again = run_pod(&mut rt, pod_cfg.clone()).await;
    assert_ne!(again, pod);
    let st = pod_status(&mut rt, &again[..10], true).await;
    let s = st.status.unwrap();
    assert_eq!(s.id, again);
    assert_eq!(s.labels, pod_cfg.labels);
    assert_eq!(s.annotations, pod_cfg.annotations);
    assert_eq!(s.state, pb::PodSandboxState::SandboxReady as i32);
    assert!(st.info.contains_key("info"));
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_pods_in_parallel() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "hello", "localhost/hello:v1");
    let logs = d.dir.path().join("logs");
    let mut tasks = Vec::new();
    for i in 0..20 {
        let ch = d.rt().await;
        let logs = logs.join(i.to_string());
        tasks.push(tokio::spawn(async move {
            let mut rt = ch;
            let pod_cfg = pod_config(&format!("par-{i}"), &logs);
            let pod = run_pod(&mut rt, pod_cfg.clone()).await;
            let c = create(
                &mut rt,
                &pod,
                &pod_cfg,
                container_config("hello", "localhost/hello:v1"),
            )
            .await;
            start(&mut rt, &c).await;
            let st = wait_exited(&mut rt, &c, 60).await;
            assert_eq!(st.exit_code, 0);
            pod
        }));
    }
    let mut pods = Vec::new();
    for t in tasks {
        pods.push(t.await.unwrap());
    }
    pods.sort();
    pods.dedup();
    assert_eq!(pods.len(), 20);
    let mut rt = d.rt().await;
    let all = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(all.len(), 20);
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dns_hostname_and_hosts_file_mount() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "readfile", "localhost/readfile:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut pod_cfg = pod_config(&unique("dns"), &logs);
    pod_cfg.hostname = "wasm-host".into();
    pod_cfg.dns_config = Some(pb::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    // The kubelet mounts a file at /etc/hosts.
    let hosts = d.dir.path().join("etc-hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.1.2.3 wasm-host\n").unwrap();
    let read = |name: &str, path: &str| {
        let mut c = container_config(name, "localhost/readfile:v1");
        c.args = vec![path.into()];
        c.mounts = vec![pb::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.display().to_string(),
            ..Default::default()
        }];
        c
    };
    for (name, path, want) in [
        ("resolv", "/etc/resolv.conf", "nameserver 10.96.0.10"),
        (
            "search",
            "/etc/resolv.conf",
            "search default.svc.cluster.local",
        ),
        ("hostname", "/etc/hostname", "wasm-host"),
        ("hosts", "/etc/hosts", "10.1.2.3 wasm-host"),
    ] {
        let c = create(&mut rt, &pod, &pod_cfg, read(name, path)).await;
        start(&mut rt, &c).await;
        let st = wait_exited(&mut rt, &c, 30).await;
        let log = std::fs::read_to_string(logs.join(format!("{name}/0.log"))).unwrap_or_default();
        assert_eq!(st.exit_code, 0, "{name}: {st:?} {log}");
        assert!(log.contains(want), "{name}: {log}");
    }
    d.shutdown().await;
}
