//! The kubelet v1.36 CRI surface: users from the image and the security context, the
//! requests v1.36 can send that wasmcri refuses (and that must leave nothing behind), the
//! `Stream*` list RPCs, `UpdatePodSandboxResources`, and the container events the evented
//! PLEG follows.

use std::time::Duration;

use cri::v1 as pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1001:\nextra:x:2000:app\n";

/// Imports the `sleeper` guest as an ordinary OCI image with `/etc/passwd`, `/etc/group`
/// (or symlinks in their place) and the config `User`.
fn import_user_image(d: &Daemon, user: &str, symlinks: &[(&str, &str)], name: &str) {
    let dir = d.dir.path().join(unique("layout"));
    let mut files = vec![("/app.wasm", guest(P1, "sleeper"))];
    if symlinks.is_empty() {
        files.push(("/etc/passwd", PASSWD.as_bytes().to_vec()));
        files.push(("/etc/group", GROUP.as_bytes().to_vec()));
    }
    tar_image_layout_as(&dir, &files, symlinks, &["/app.wasm"], &[], user, name);
    d.import(&dir, name);
}

fn security(sc: pb::LinuxContainerSecurityContext) -> Option<pb::LinuxContainerConfig> {
    Some(pb::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    })
}

fn int64(value: i64) -> Option<pb::Int64Value> {
    Some(pb::Int64Value { value })
}

async fn image_status(d: &Daemon, name: &str) -> pb::Image {
    image_status_of(&mut d.img().await, name).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn users_come_from_the_image_and_the_security_context() {
    let d = Daemon::start().await;
    import_user_image(&d, "app", &[], "localhost/users:named");
    import_user_image(&d, "1000", &[], "localhost/users:numeric");
    // ImageStatus: a number is a uid (runAsNonRoot can check it), a name a username.
    let named = image_status(&d, "localhost/users:named").await;
    assert_eq!((named.uid, named.username.as_str()), (None, "app"));
    let numeric = image_status(&d, "localhost/users:numeric").await;
    assert_eq!(numeric.uid.map(|u| u.value), Some(1000));
    assert_eq!(numeric.username, "");

    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("users"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let cases = [
        // The image's user, its primary group and its groups from /etc/group.
        (
            "named",
            "localhost/users:named",
            None,
            (1000, 1001),
            vec![1001, 2000],
        ),
        (
            "numeric",
            "localhost/users:numeric",
            None,
            (1000, 1001),
            vec![1001, 2000],
        ),
        // The security context wins; Strict leaves out the image's groups.
        (
            "strict",
            "localhost/users:named",
            Some(pb::LinuxContainerSecurityContext {
                run_as_user: int64(4000),
                run_as_group: int64(4001),
                supplemental_groups: vec![3000],
                supplemental_groups_policy: pb::SupplementalGroupsPolicy::Strict as i32,
                ..Default::default()
            }),
            (4000, 4001),
            vec![4001, 3000],
        ),
        (
            "username",
            "localhost/users:numeric",
            Some(pb::LinuxContainerSecurityContext {
                run_as_username: "root".into(),
                supplemental_groups: vec![3000],
                ..Default::default()
            }),
            (0, 0),
            vec![0, 3000],
        ),
    ];
    for (name, image, sc, (uid, gid), groups) in cases {
        let mut c = container_config(name, image);
        c.linux = sc.and_then(security);
        let id = create(&mut rt, &pod, &pod_cfg, c).await;
        start(&mut rt, &id).await;
        wait_log(&logs.join(format!("{name}/0.log")), "started", 30).await;
        let pid = runner_pid(&mut rt, &id).await;
        assert_eq!(
            status_field(pid, "Uid"),
            format!("{uid}\t{uid}\t{uid}\t{uid}"),
            "{name}"
        );
        assert_eq!(
            status_field(pid, "Gid"),
            format!("{gid}\t{gid}\t{gid}\t{gid}"),
            "{name}"
        );
        let mut got: Vec<u32> = status_field(pid, "Groups")
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        got.sort();
        let mut want = groups.clone();
        want.sort();
        assert_eq!(got, want, "{name}");
        let user = status(&mut rt, &id).await.user.unwrap().linux.unwrap();
        assert_eq!((user.uid, user.gid), (uid as i64, gid as i64), "{name}");
        assert_eq!(
            user.supplemental_groups,
            groups.iter().map(|g| *g as i64).collect::<Vec<_>>(),
            "{name}"
        );
    }
    d.shutdown().await;
}

/// Everything v1.36 can ask that wasmcri refuses: each answer has the right code, and after
/// all of them the node holds exactly what it held before (no container, directory, cgroup).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_are_refused_and_leave_nothing() {
    let d = Daemon::start().await;
    import_user_image(&d, "app", &[], "localhost/users:named");
    // An image whose /etc/passwd links to the host's (through /proc): a daemon that
    // followed it would find root there; looked up inside the rootfs, there is none.
    import_user_image(
        &d,
        "",
        &[("/etc/passwd", "/proc/1/root/etc/passwd")],
        "localhost/users:linked",
    );
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("refused"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let base = || container_config("c", "localhost/users:named");
    let sc = |sc: pb::LinuxContainerSecurityContext| {
        let mut c = base();
        c.linux = security(sc);
        c
    };
    let mount = |m: pb::Mount| {
        let mut c = base();
        c.mounts = vec![m];
        c
    };
    let host_dir = d.dir.path().join("vol");
    std::fs::create_dir_all(&host_dir).unwrap();
    let cases: Vec<(&str, pb::ContainerConfig, Code)> = vec![
        (
            "env not UTF-8",
            {
                let mut c = base();
                c.envs = vec![pb::KeyValue {
                    key: "SECRET".into(),
                    value: vec![0xff, 0xfe, 0x00],
                }];
                c
            },
            Code::InvalidArgument,
        ),
        (
            "run_as_group alone",
            sc(pb::LinuxContainerSecurityContext {
                run_as_group: int64(10),
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "uid out of range",
            sc(pb::LinuxContainerSecurityContext {
                run_as_user: int64(-1),
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "uid too large",
            sc(pb::LinuxContainerSecurityContext {
                run_as_user: int64(1 << 40),
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "user and username",
            sc(pb::LinuxContainerSecurityContext {
                run_as_user: int64(1),
                run_as_username: "app".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "unknown username",
            sc(pb::LinuxContainerSecurityContext {
                run_as_username: "ghost".into(),
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "host passwd through a link",
            {
                let mut c = container_config("c", "localhost/users:linked");
                c.linux = security(pb::LinuxContainerSecurityContext {
                    run_as_username: "root".into(),
                    ..Default::default()
                });
                c
            },
            Code::InvalidArgument,
        ),
        (
            "image volume of an image not on the node",
            mount(pb::Mount {
                container_path: "/data".into(),
                image: Some(pb::ImageSpec {
                    image: "localhost/users:absent".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            Code::NotFound,
        ),
        (
            "recursive read-only on a writable mount",
            mount(pb::Mount {
                container_path: "/data".into(),
                host_path: host_dir.display().to_string(),
                readonly: false,
                recursive_read_only: true,
                ..Default::default()
            }),
            Code::InvalidArgument,
        ),
        (
            "stop signal",
            {
                let mut c = base();
                c.stop_signal = pb::Signal::Sigkill as i32;
                c
            },
            Code::Unimplemented,
        ),
    ];
    for (what, cfg, code) in cases {
        let err = rt
            .create_container(pb::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(!err.message().is_empty(), "{what}");
    }
    let listed = rt
        .list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "{listed:?}");
    let dirs: Vec<_> = walk_dirs(d.dir.path(), "containers");
    assert!(dirs.is_empty(), "container directories left: {dirs:?}");
    // The same name is free, and a good request still works; a read-only mount reports
    // itself recursively read-only.
    let mut ok = base();
    ok.mounts = vec![pb::Mount {
        container_path: "/data".into(),
        host_path: host_dir.display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    let id = create(&mut rt, &pod, &pod_cfg, ok).await;
    start(&mut rt, &id).await;
    let st = status(&mut rt, &id).await;
    assert!(st.mounts[0].readonly && st.mounts[0].recursive_read_only);
    assert_eq!(st.stop_signal, pb::Signal::Sigterm as i32);
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// Directories (one level down) of every `name` directory under `root`.
fn walk_dirs(root: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if p.file_name().is_some_and(|n| n == name) {
                    out.extend(
                        std::fs::read_dir(&p)
                            .unwrap()
                            .flatten()
                            .filter(|e| e.path().is_dir())
                            .map(|e| e.path()),
                    );
                } else {
                    stack.push(p);
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn v136_rpcs_stream_lists_and_record_pod_resources() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut pods = Vec::new();
    for i in 0..3 {
        let cfg = pod_config(&unique(&format!("stream{i}")), &logs);
        let pod = run_pod(&mut rt, cfg.clone()).await;
        let id = create(
            &mut rt,
            &pod,
            &cfg,
            container_config("c", "localhost/sleeper:v1"),
        )
        .await;
        start(&mut rt, &id).await;
        pods.push(pod);
    }
    // Each Stream* RPC gives the same items as its List* RPC, each once.
    let mut streamed: Vec<String> = rt
        .stream_pod_sandboxes(pb::StreamPodSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandboxes)
        .collect::<Vec<_>>()
        .await
        .concat()
        .into_iter()
        .map(|p| p.id)
        .collect();
    streamed.sort();
    let mut want = pods.clone();
    want.sort();
    assert_eq!(streamed, want);
    let containers: Vec<pb::Container> = rt
        .stream_containers(pb::StreamContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().containers)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(containers.len(), 3);
    let filtered: Vec<pb::Container> = rt
        .stream_containers(pb::StreamContainersRequest {
            filter: Some(pb::ContainerFilter {
                pod_sandbox_id: pods[1].clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().containers)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0].pod_sandbox_id, pods[1]);
    let stats: usize = rt
        .stream_container_stats(pb::StreamContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().container_stats.len())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(stats, 3);
    let pod_stats: usize = rt
        .stream_pod_sandbox_stats(pb::StreamPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandbox_stats.len())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(pod_stats, 3);
    let images: Vec<pb::Image> = d
        .img()
        .await
        .stream_images(pb::StreamImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().images)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(images.len(), 1);
    // An empty list is a stream that ends without a message.
    let none = rt
        .stream_containers(pb::StreamContainersRequest {
            filter: Some(pb::ContainerFilter {
                id: "ffffffffffff".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert!(none.is_empty(), "{none:?}");
    // Metrics stream like the lists: one entry per ready pod.
    let metrics: usize = rt
        .stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandbox_metrics.len())
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(metrics, 3);

    // UpdatePodSandboxResources: recorded for a ready pod, refused for others.
    let res = pb::LinuxContainerResources {
        cpu_quota: 50_000,
        cpu_period: 100_000,
        memory_limit_in_bytes: 128 << 20,
        ..Default::default()
    };
    rt.update_pod_sandbox_resources(pb::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pods[0].clone(),
        overhead: None,
        resources: Some(res.clone()),
    })
    .await
    .unwrap();
    let info = pod_status(&mut rt, &pods[0], true).await.info;
    let rec: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    assert_eq!(
        rec["state"]["resources"]["resources"]["memory_limit"],
        128 << 20,
        "{rec}"
    );
    let missing = rt
        .update_pod_sandbox_resources(pb::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0123456789abcdef".repeat(4),
            overhead: None,
            resources: Some(res.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    stop_pod(&mut rt, &pods[2]).await;
    let stopped = rt
        .update_pod_sandbox_resources(pb::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pods[2].clone(),
            overhead: None,
            resources: Some(res),
        })
        .await
        .unwrap_err();
    assert_eq!(stopped.code(), Code::FailedPrecondition);

    // Status tells the kubelet what v1.36 features the handlers have.
    let st = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let wasmtime = st
        .runtime_handlers
        .iter()
        .find(|h| h.name == "wasmtime")
        .expect("wasmtime handler");
    let f = wasmtime.features.as_ref().unwrap();
    assert!(f.recursive_read_only_mounts && f.user_namespaces);
    assert!(st.features.unwrap().supplemental_groups_policy);
    d.shutdown().await;
}

/// The evented PLEG's stream: every lifecycle step of a sandbox and its container, in order,
/// each with the pod's status and its containers' statuses.
#[tokio::test(flavor = "multi_thread")]
async fn container_events_follow_the_lifecycle_with_pod_status() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "hello", "localhost/hello:v1");
    let mut events = d
        .rt()
        .await
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("events"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let id = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("c", "localhost/hello:v1"),
    )
    .await;
    start(&mut rt, &id).await;
    wait_exited(&mut rt, &id, 30).await;
    remove_pod(&mut rt, &pod).await;

    use pb::ContainerEventType as T;
    let want = [
        (pod.as_str(), T::ContainerCreatedEvent),
        (pod.as_str(), T::ContainerStartedEvent),
        (id.as_str(), T::ContainerCreatedEvent),
        (id.as_str(), T::ContainerStartedEvent),
        (id.as_str(), T::ContainerStoppedEvent),
        (pod.as_str(), T::ContainerStoppedEvent),
        (id.as_str(), T::ContainerDeletedEvent),
        (pod.as_str(), T::ContainerDeletedEvent),
    ];
    let mut last_at = 0;
    for (i, (who, kind)) in want.iter().enumerate() {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap_or_else(|_| panic!("event {i} ({who} {kind:?}) never came"))
            .expect("stream ended")
            .expect("event");
        assert_eq!(
            (ev.container_id.as_str(), ev.container_event_type),
            (*who, *kind as i32),
            "event {i}"
        );
        assert!(ev.created_at >= last_at);
        last_at = ev.created_at;
        let ps = ev.pod_sandbox_status.as_ref().expect("pod status");
        assert_eq!(ps.id, pod);
        assert_eq!(
            ps.metadata.as_ref().unwrap().uid,
            pod_cfg.metadata.as_ref().unwrap().uid
        );
        if *who == id && *kind != T::ContainerDeletedEvent {
            let cs = ev
                .containers_statuses
                .iter()
                .find(|c| c.id == id)
                .expect("container status in event");
            if *kind == T::ContainerStoppedEvent {
                assert_eq!(cs.state, pb::ContainerState::ContainerExited as i32);
            }
        }
    }
    // PodSandboxStatus carries container statuses and a timestamp too.
    let pod2 = run_pod(&mut rt, pod_config(&unique("events2"), &logs)).await;
    let st = pod_status(&mut rt, &pod2, false).await;
    assert!(st.timestamp > 0 && st.containers_statuses.is_empty());
    // Shutdown ends the stream instead of waiting on it.
    d.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = events.next().await {}
    })
    .await;
    assert!(end.is_ok(), "event stream still open after shutdown");
}

/// With EventedPLEG on, the kubelet takes PodSandboxStatus's container list as it is and looks
/// a container up by name, first match wins: the newest attempt must come first, or an exited
/// attempt hides its running restart and the kubelet restarts it again.
#[tokio::test(flavor = "multi_thread")]
async fn pod_status_lists_the_newest_attempt_first() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "hello", "localhost/hello:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("attempts"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut ids = Vec::new();
    for attempt in 0..3 {
        let mut cfg = container_config("c", "localhost/hello:v1");
        cfg.metadata.as_mut().unwrap().attempt = attempt;
        cfg.log_path = format!("c/{attempt}.log");
        ids.push(create(&mut rt, &pod, &pod_cfg, cfg).await);
    }
    let st = pod_status(&mut rt, &pod, false).await;
    let listed: Vec<_> = st
        .containers_statuses
        .iter()
        .map(|c| c.id.clone())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids, "newest attempt first");
    remove_pod(&mut rt, &pod).await;
}
