//! Kubernetes v1.36 volume and resource surface: image volumes (pulled from a real registry,
//! mounted read-only, `image_sub_path`, hostile sub paths and links, RemoveImage while in
//! use), pinned images, and a cpuset-only UpdateContainerResources on real cgroup v1 files.

use std::path::PathBuf;

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

/// A CRI image volume mount, as the kubelet sends it.
fn image_mount(container_path: &str, image: &str, sub_path: &str) -> pb::Mount {
    pb::Mount {
        container_path: container_path.into(),
        image: Some(pb::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        readonly: true,
        ..Default::default()
    }
}

/// A container of `image` with `args` and `mounts`.
fn with_mounts(
    name: &str,
    image: &str,
    args: &[&str],
    mounts: Vec<pb::Mount>,
) -> pb::ContainerConfig {
    let mut c = container_config(name, image);
    c.args = args.iter().map(|a| a.to_string()).collect();
    c.mounts = mounts;
    c
}

/// Runs a container to its end; returns (exit code, log).
async fn run_to_end(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod: &str,
    pod_cfg: &pb::PodSandboxConfig,
    logs: &std::path::Path,
    cfg: pb::ContainerConfig,
) -> (i32, String, String) {
    let name = cfg.metadata.as_ref().unwrap().name.clone();
    let id = create(rt, pod, pod_cfg, cfg).await;
    start(rt, &id).await;
    let st = wait_exited(rt, &id, 20).await;
    let log = std::fs::read_to_string(logs.join(format!("{name}/0.log"))).unwrap_or_default();
    (st.exit_code, log, id)
}

async fn create_err(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod: &str,
    pod_cfg: &pb::PodSandboxConfig,
    cfg: pb::ContainerConfig,
) -> tonic::Status {
    rt.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(cfg),
        sandbox_config: Some(pod_cfg.clone()),
    })
    .await
    .expect_err("CreateContainer should fail")
}

async fn remove_image(d: &Daemon, image: &str) -> Result<(), tonic::Status> {
    d.img()
        .await
        .remove_image(pb::RemoveImageRequest {
            image: Some(pb::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_mount_read_only_and_hold_their_image() {
    let Some(reg) = registry() else { return };
    let mut d = Daemon::start().await;
    import_guest(&d, P1, "readfile", "localhost/readfile:v1");
    import_guest(&d, P1, "writefile", "localhost/writefile:v1");
    import_guest(&d, P1, "lsdir", "localhost/lsdir:v1");

    // A data image (no wasm at all), as `volumes: [{image: …}]` mounts, with links that try
    // to lead out of it.
    let layout = d.dir.path().join(unique("layout"));
    tar_image_layout_as(
        &layout,
        &[
            ("/data/hello.txt", b"hello from the image volume\n".to_vec()),
            ("/data/sub/deep.txt", b"deep file\n".to_vec()),
        ],
        &[
            // Absolute: the host's /etc if followed naively (the store refuses relative
            // links that climb out of the rootfs at pull time already).
            ("/out", "/etc"),
            ("/abs", "/data"),
            ("/data/escape", "/etc/hostname"),
        ],
        &[],
        &[],
        "",
        "localhost/data:v1",
    );
    let data_ref = format!("{}/e2e/data:v1", reg.host);
    skopeo_push(&layout, &data_ref);
    // What the kubelet does first, then passes the image_ref it got back.
    let data = pull_image(&d, &data_ref).await.unwrap();

    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("vol"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;

    // The whole image at /vol; a sub path at /sub; a sub path through an in-image absolute
    // link (resolved inside the image) at /abs.
    let (code, log, reader) = run_to_end(
        &mut rt,
        &pod,
        &pod_cfg,
        &logs,
        with_mounts(
            "reader",
            "localhost/readfile:v1",
            &["/vol/data/hello.txt"],
            vec![
                image_mount("/vol", &data, ""),
                image_mount("/sub", &data, "data/sub"),
                image_mount("/abs", &data, "abs"),
            ],
        ),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("hello from the image volume"), "{log}");
    for (name, path, want) in [
        ("sub", "/sub/deep.txt", "deep file"),
        ("viaabs", "/abs/hello.txt", "hello from the image volume"),
    ] {
        let (code, log, _) = run_to_end(
            &mut rt,
            &pod,
            &pod_cfg,
            &logs,
            with_mounts(
                name,
                "localhost/readfile:v1",
                &[path],
                vec![
                    image_mount("/sub", &data, "data/sub"),
                    image_mount("/abs", &data, "abs"),
                ],
            ),
        )
        .await;
        assert_eq!(code, 0, "{name}: {log}");
        assert!(log.contains(want), "{name}: {log}");
    }
    // A sub path naming a file mounts that file.
    let (code, log, _) = run_to_end(
        &mut rt,
        &pod,
        &pod_cfg,
        &logs,
        with_mounts(
            "file",
            "localhost/readfile:v1",
            &["/etc/greeting.txt"],
            vec![image_mount("/etc/greeting.txt", &data, "data/hello.txt")],
        ),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("hello from the image volume"), "{log}");
    // A link inside the volume that points out of it is not followed out.
    let (code, log, _) = run_to_end(
        &mut rt,
        &pod,
        &pod_cfg,
        &logs,
        with_mounts(
            "escape",
            "localhost/readfile:v1",
            &["/vol/data/escape"],
            vec![image_mount("/vol", &data, "")],
        ),
    )
    .await;
    assert_ne!(code, 0, "read through a link out of the volume: {log}");

    // ContainerStatus reports the mount by image, read-only all the way down.
    let st = status(&mut rt, &reader).await;
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/sub")
        .expect("the /sub mount in the status");
    assert_eq!(
        m.image.as_ref().map(|i| i.image.as_str()),
        Some(data.as_str())
    );
    assert_eq!(m.image_sub_path, "data/sub");
    assert!(
        m.host_path.is_empty() && m.readonly && m.recursive_read_only,
        "{m:?}"
    );

    // Writes fail: a new file in the volume, and over a file of a sub-path volume.
    for (name, path, mounts) in [
        (
            "write-new",
            "/vol/data/new.txt",
            vec![image_mount("/vol", &data, "")],
        ),
        (
            "write-over",
            "/sub/deep.txt",
            vec![image_mount("/sub", &data, "data/sub")],
        ),
    ] {
        let (code, log, _) = run_to_end(
            &mut rt,
            &pod,
            &pod_cfg,
            &logs,
            with_mounts(name, "localhost/writefile:v1", &[path, "x"], mounts),
        )
        .await;
        assert_eq!(code, 1, "{name}: {log}");
        assert!(log.contains("failed"), "{name}: {log}");
    }
    let rootfs_files: Vec<PathBuf> = std::fs::read_dir(images_dir(&d).join("rootfs"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("data/new.txt"))
        .collect();
    assert!(
        rootfs_files.iter().all(|p| !p.exists()),
        "a write reached the image"
    );

    // Hostile and missing sub paths, and an image that is not there: refused by name, and
    // nothing is left (the container name stays free).
    let containers_before = rt
        .list_containers(pb::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    let absent = format!("sha256:{}", "0".repeat(64));
    for (sub, image, want) in [
        ("../..", data.as_str(), Code::InvalidArgument),
        ("/data", data.as_str(), Code::InvalidArgument),
        ("data/../../..", data.as_str(), Code::InvalidArgument),
        ("out", data.as_str(), Code::NotFound),
        ("data/missing", data.as_str(), Code::NotFound),
        ("", absent.as_str(), Code::NotFound),
    ] {
        let e = create_err(
            &mut rt,
            &pod,
            &pod_cfg,
            with_mounts(
                "hostile",
                "localhost/readfile:v1",
                &["/vol/x"],
                vec![image_mount("/vol", image, sub)],
            ),
        )
        .await;
        assert_eq!(e.code(), want, "{sub:?} {image}: {}", e.message());
        assert!(e.message().contains("/vol"), "{sub:?}: {}", e.message());
    }
    let mut both = image_mount("/vol", &data, "");
    both.host_path = d.dir.path().display().to_string();
    let e = create_err(
        &mut rt,
        &pod,
        &pod_cfg,
        with_mounts("hostile", "localhost/readfile:v1", &["/vol/x"], vec![both]),
    )
    .await;
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    let listed = rt
        .list_containers(pb::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .len();
    assert_eq!(listed, containers_before);
    let (code, _, _) = run_to_end(
        &mut rt,
        &pod,
        &pod_cfg,
        &logs,
        with_mounts(
            "hostile",
            "localhost/readfile:v1",
            &["/vol/data/hello.txt"],
            vec![image_mount("/vol", &data, "")],
        ),
    )
    .await;
    assert_eq!(code, 0, "the name was left reserved");

    // A Wasm artifact as an image volume: the one file the store unpacks it to, app.wasm.
    let (code, log, _) = run_to_end(
        &mut rt,
        &pod,
        &pod_cfg,
        &logs,
        with_mounts(
            "artifact",
            "localhost/lsdir:v1",
            &["/modules"],
            vec![image_mount("/modules", "localhost/writefile:v1", "")],
        ),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    let size = guest(P1, "writefile").len();
    assert!(log.contains(&format!("app.wasm {size}")), "{log}");

    // RemoveImage refuses while a container mounts the image, naming it — also after a
    // daemon crash (the volume is part of the container's durable record); after the pod's
    // containers are gone it succeeds.
    d.kill9();
    d.spawn().await;
    let mut rt = d.rt().await;
    let e = remove_image(&d, &data).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("image volume"), "{}", e.message());
    let users: Vec<String> = rt
        .list_containers(pb::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        users.iter().any(|id| e.message().contains(id.as_str())),
        "{}",
        e.message()
    );
    assert!(image_status_of(&mut d.img().await, &data).await.is_some());
    remove_pod(&mut rt, &pod).await;
    remove_image(&d, &data).await.unwrap();
    assert!(image_status_of(&mut d.img().await, &data).await.is_none());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_images_are_pinned() {
    let Some(reg) = registry() else { return };
    let pause = format!("{}/e2e/pause:3.10", reg.host);
    let d = Daemon::start_with(&format!("[images]\npinned = [{pause:?}]\n")).await;
    for (name, reference) in [
        ("hello", pause.clone()),
        ("exit3", format!("{}/e2e/other:v1", reg.host)),
    ] {
        let layout = d.dir.path().join(unique("layout"));
        wasm_artifact_layout(&layout, &guest(P1, name), name);
        skopeo_push(&layout, &reference);
        pull_image(&d, &reference).await.unwrap();
    }
    let images = d
        .img()
        .await
        .list_images(pb::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    let pinned: Vec<(bool, Vec<String>)> = images
        .iter()
        .map(|i| (i.pinned, i.repo_tags.clone()))
        .collect();
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    for (p, tags) in &pinned {
        assert_eq!(*p, tags.contains(&pause), "{pinned:?}");
    }
    let st = image_status_of(&mut d.img().await, &pause).await.unwrap();
    assert!(st.pinned);
    // Pinned is a recommendation to the kubelet's garbage collector: a removal is obeyed.
    remove_image(&d, &pause).await.unwrap();
    assert!(image_status_of(&mut d.img().await, &pause).await.is_none());
    d.shutdown().await;

    // An entry that is not a reference stops the daemon at start-up, not at first use.
    let out = std::process::Command::new(Daemon::bin())
        .arg("--config")
        .arg({
            let p = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(p.path(), "[images]\npinned = [\"Not A Reference\"]\n").unwrap();
            p.into_temp_path().keep().unwrap()
        })
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pinned") && err.contains("Not A Reference"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpuset_only_update_keeps_the_other_limits() {
    if !std::path::Path::new("/sys/fs/cgroup/cpuset/cpuset.cpus").exists()
        || !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
    {
        eprintln!("skipping: no cgroup v1 cpuset and memory hierarchies");
        return;
    }
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("cpuset"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut cfg = container_config("pinned", "localhost/sleeper:v1");
    cfg.linux = Some(pb::LinuxContainerConfig {
        resources: Some(pb::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &id).await;
    assert_eq!(
        read_trimmed(&cg_file(&d, "cpuset", &id, "cpuset.cpus")),
        "0"
    );
    let mems = read_trimmed(&cg_file(&d, "cpuset", &id, "cpuset.mems"));

    // What the static CPU manager sends: the cpuset alone.
    let update = |cpus: &str| pb::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(pb::LinuxContainerResources {
            cpuset_cpus: cpus.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let all_cpus = read_trimmed(&PathBuf::from("/sys/fs/cgroup/cpuset/cpuset.cpus"));
    let target = if all_cpus == "0" { "0" } else { "0-1" };
    rt.update_container_resources(update(target)).await.unwrap();
    let check = |cpus: &str| {
        assert_eq!(
            read_trimmed(&cg_file(&d, "cpuset", &id, "cpuset.cpus")),
            cpus
        );
        assert_eq!(
            read_trimmed(&cg_file(&d, "cpuset", &id, "cpuset.mems")),
            mems
        );
        assert_eq!(
            read_trimmed(&cg_file(&d, "memory", &id, "memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        assert_eq!(read_trimmed(&cg_file(&d, "cpu", &id, "cpu.shares")), "512");
        assert_eq!(
            read_trimmed(&cg_file(&d, "cpu", &id, "cpu.cfs_quota_us")),
            "50000"
        );
    };
    check(target);
    let res = |st: pb::ContainerStatus| st.resources.unwrap().linux.unwrap();
    let r = res(status(&mut rt, &id).await);
    assert_eq!(r.cpuset_cpus, target);
    assert_eq!(r.memory_limit_in_bytes, 64 << 20, "{r:?}");
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (512, 50_000, 100_000)
    );

    // Malformed lists and CPUs the node does not have: INVALID_ARGUMENT, nothing changes.
    for bad in ["1-0", "0-", "a", "-1", "4000"] {
        let e = rt
            .update_container_resources(update(bad))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {}", e.message());
        assert!(e.message().contains("cpuset"), "{bad}: {}", e.message());
        check(target);
        assert_eq!(res(status(&mut rt, &id).await), r, "{bad}");
    }
    assert_eq!(
        status(&mut rt, &id).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
