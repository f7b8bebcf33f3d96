//! Mixed nodes: wasmcri with a real containerd (Debian's 1.6, runc) as its delegate. Linux
//! pods built from Debian's busybox-static and Wasm pods side by side on one CRI socket and
//! one CNI bridge; image routing; the delegate and wasmcri each killed and restarted.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cri::v1 as pb;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

/// A registry with the busybox and pause images, the CNI network, containerd and a wasmcri
/// delegating to it (with the `sleeper` guest imported).
struct Mixed {
    d: Daemon,
    ctrd: Containerd,
    reg: Registry,
    net: CniNet,
    /// The Linux image `<registry>/busybox:v1`.
    busybox: String,
}

impl Mixed {
    async fn start() -> Option<Mixed> {
        let reg = registry()?;
        let net = CniNet::new()?;
        let layouts = tempfile::tempdir().unwrap();
        let busybox = format!("{}/busybox:v1", reg.host);
        let pause = format!("{}/pause:v1", reg.host);
        let bb = layouts.path().join("busybox");
        if busybox_layout(&bb, &["sh"], "busybox:v1").is_none() {
            eprintln!("skipping: /bin/busybox missing (tests/run.sh installs busybox-static)");
            return None;
        }
        skopeo_push(&bb, &busybox);
        // The sandbox holds the pod's namespaces; it ends at once on TERM.
        let pl = layouts.path().join("pause");
        busybox_layout(
            &pl,
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $!; done",
            ],
            "pause:v1",
        )
        .unwrap();
        skopeo_push(&pl, &pause);
        let ctrd = Containerd::start(&reg.host, &net.conf_dir, &pause).await?;
        let d = Daemon::start_with(&format!(
            "{}\n{}",
            ctrd.daemon_config(),
            net.daemon_config()
        ))
        .await;
        import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
        // A Linux image is pulled through wasmcri into containerd, as the kubelet would.
        pull_image(&d, &busybox)
            .await
            .unwrap_or_else(|e| panic!("pull {busybox}: {e}\n{}", d.log()));
        Some(Mixed {
            d,
            ctrd,
            reg,
            net,
            busybox,
        })
    }

    /// A Linux pod (default handler, pod network on the CNI bridge) with one busybox
    /// container running `script`; returns (pod, config, container).
    async fn linux_pod(
        &self,
        rt: &mut RuntimeServiceClient<Channel>,
        name: &str,
        script: &str,
    ) -> (String, pb::PodSandboxConfig, String) {
        let mut cfg = pod_config(&unique(name), &self.d.dir.path().join("logs"));
        let linux = cfg.linux.get_or_insert_with(Default::default);
        linux.cgroup_parent = self.ctrd.cgroup_parent.clone();
        linux.security_context = None;
        let pod = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.ctrd.log()))
            .into_inner()
            .pod_sandbox_id;
        let mut c = container_config("linux", &self.busybox);
        c.command = vec!["sh".into(), "-c".into(), script.into()];
        let ctr = create(rt, &pod, &cfg, c).await;
        start(rt, &ctr).await;
        (pod, cfg, ctr)
    }

    /// A Wasm pod running the `sleeper` guest; returns (pod, config, container).
    async fn wasm_pod(
        &self,
        rt: &mut RuntimeServiceClient<Channel>,
        name: &str,
    ) -> (String, pb::PodSandboxConfig, String) {
        let cfg = pod_config(&unique(name), &self.d.dir.path().join("logs"));
        let pod = run_pod(rt, cfg.clone()).await;
        let ctr = create(
            rt,
            &pod,
            &cfg,
            container_config("wasm", "localhost/sleeper:v1"),
        )
        .await;
        start(rt, &ctr).await;
        (pod, cfg, ctr)
    }

    async fn shutdown(self) {
        self.d.shutdown().await;
        drop(self.ctrd);
        drop(self.net);
        drop(self.reg);
    }
}

/// The container's log file under the pod's log directory.
fn log_of(cfg: &pb::PodSandboxConfig, name: &str) -> std::path::PathBuf {
    Path::new(&cfg.log_directory).join(format!("{name}/0.log"))
}

async fn pod_ids(
    rt: &mut RuntimeServiceClient<Channel>,
    f: Option<pb::PodSandboxFilter>,
) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest { filter: f })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    ids
}

async fn container_ids(
    rt: &mut RuntimeServiceClient<Channel>,
    f: Option<pb::ContainerFilter>,
) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list_containers(pb::ListContainersRequest { filter: f })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn exec(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> pb::ExecSyncResponse {
    rt.exec_sync(pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    })
    .await
    .unwrap()
    .into_inner()
}

fn condition(s: &pb::StatusResponse, t: &str) -> pb::RuntimeCondition {
    s.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == t)
        .unwrap_or_else(|| panic!("no {t} in {s:?}"))
        .clone()
}

#[tokio::test]
async fn linux_and_wasm_pods_side_by_side() {
    let Some(m) = Mixed::start().await else {
        return;
    };
    let mut rt = m.d.rt().await;
    let (lpod, lcfg, lctr) = m
        .linux_pod(
            &mut rt,
            "linux",
            "echo hello-linux; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        )
        .await;
    let (wpod, wcfg, wctr) = m.wasm_pod(&mut rt, "wasm").await;

    // Logs: each runtime writes the kubelet's format to the path asked for.
    wait_log(&log_of(&lcfg, "linux"), "hello-linux", 20).await;
    wait_log(&log_of(&wcfg, "wasm"), "started", 20).await;

    // Status and routing by ID.
    let ls = status(&mut rt, &lctr).await;
    assert_eq!(ls.state, pb::ContainerState::ContainerRunning as i32);
    assert_eq!(ls.image.unwrap().image, m.busybox);
    let ws = status(&mut rt, &wctr).await;
    assert_eq!(ws.state, pb::ContainerState::ContainerRunning as i32);
    let ip = pod_ip(&mut rt, &lpod).await;
    assert!(
        ip.starts_with(&m.net.prefix),
        "Linux pod IP {ip} not on {}",
        m.net.prefix
    );
    // containerd knows the Linux pod and nothing of the Wasm one.
    let mut direct = m.ctrd.rt().await;
    assert_eq!(pod_ids(&mut direct, None).await, vec![lpod.clone()]);

    // Exec in each.
    let out = exec(&mut rt, &lctr, &["echo", "exec-linux"]).await;
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-linux\n");
    let out = exec(&mut rt, &lctr, &["sh", "-c", "exit 7"]).await;
    assert_eq!(out.exit_code, 7);
    // Exec URLs come from each owner's streaming server.
    let url = |r: pb::ExecResponse| r.url;
    let exec_req = |id: &str| pb::ExecRequest {
        container_id: id.into(),
        cmd: vec!["sh".into()],
        stdout: true,
        ..Default::default()
    };
    let lurl = url(rt.exec(exec_req(&lctr)).await.unwrap().into_inner());
    let durl = url(direct.exec(exec_req(&lctr)).await.unwrap().into_inner());
    let host = |u: &str| u.split('/').take(3).collect::<Vec<_>>().join("/");
    assert_eq!(
        host(&lurl),
        host(&durl),
        "the Linux exec URL is containerd's"
    );

    // Stats of each, and the merged list.
    let st = rt
        .container_stats(pb::ContainerStatsRequest {
            container_id: lctr.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(st.attributes.unwrap().id, lctr);
    let all_stats: Vec<String> = rt
        .list_container_stats(pb::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    assert_eq!(sorted(all_stats), sorted(vec![lctr.clone(), wctr.clone()]));
    let pod_stats: Vec<String> = rt
        .list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.unwrap().id)
        .collect();
    assert_eq!(sorted(pod_stats), sorted(vec![lpod.clone(), wpod.clone()]));

    // Merged listings, filters applied on both sides.
    assert_eq!(
        pod_ids(&mut rt, None).await,
        sorted(vec![lpod.clone(), wpod.clone()])
    );
    let by_label = |name: &str| pb::PodSandboxFilter {
        label_selector: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    };
    let lname = lcfg.metadata.as_ref().unwrap().name.clone();
    assert_eq!(
        pod_ids(&mut rt, Some(by_label(&lname))).await,
        vec![lpod.clone()]
    );
    let by_id = pb::PodSandboxFilter {
        id: wpod.clone(),
        ..Default::default()
    };
    assert_eq!(pod_ids(&mut rt, Some(by_id)).await, vec![wpod.clone()]);
    assert_eq!(
        container_ids(&mut rt, None).await,
        sorted(vec![lctr.clone(), wctr.clone()])
    );
    let of_pod = pb::ContainerFilter {
        pod_sandbox_id: lpod.clone(),
        ..Default::default()
    };
    assert_eq!(
        container_ids(&mut rt, Some(of_pod)).await,
        vec![lctr.clone()]
    );
    let streamed: usize = {
        let mut s = rt
            .stream_containers(pb::StreamContainersRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = s.message().await.unwrap() {
            n += m.containers.len();
        }
        n
    };
    assert_eq!(streamed, 2);

    // Status: both runtimes, both kinds of handler.
    let s = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "RuntimeReady").status);
    assert!(condition(&s, "DelegateReady").status, "{s:?}");
    let handlers: Vec<&str> = s.runtime_handlers.iter().map(|h| h.name.as_str()).collect();
    assert!(
        handlers.contains(&"") && handlers.contains(&"wasmtime"),
        "{handlers:?}"
    );

    // A Linux container in the Wasm pod is refused by name.
    let e = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: wpod.clone(),
            config: Some(container_config("sidecar", &m.busybox)),
            sandbox_config: Some(wcfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains(&m.busybox), "{}", e.message());
    assert_eq!(container_ids(&mut rt, None).await.len(), 2);

    // Stop and remove each; both lists end empty.
    for c in [&lctr, &wctr] {
        rt.stop_container(pb::StopContainerRequest {
            container_id: c.to_string(),
            timeout: 10,
        })
        .await
        .unwrap();
        assert_eq!(
            status(&mut rt, c).await.state,
            pb::ContainerState::ContainerExited as i32
        );
        rt.remove_container(pb::RemoveContainerRequest {
            container_id: c.to_string(),
        })
        .await
        .unwrap();
    }
    remove_pod(&mut rt, &lpod).await;
    remove_pod(&mut rt, &wpod).await;
    assert!(pod_ids(&mut rt, None).await.is_empty());
    assert!(container_ids(&mut rt, None).await.is_empty());
    assert!(pod_ids(&mut direct, None).await.is_empty());
    m.shutdown().await;
}

/// Tags in wasmcri's own image store (`wasmcri image ls`).
fn local_tags(d: &Daemon) -> String {
    let out = std::process::Command::new(Daemon::bin())
        .arg("--config")
        .arg(&d.config_path)
        .args(["image", "ls"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether containerd itself holds `image`.
async fn in_containerd(m: &Mixed, image: &str) -> bool {
    image_status_of(&mut m.ctrd.img().await, image)
        .await
        .is_some()
}

#[tokio::test]
async fn images_are_routed_by_content() {
    let Some(m) = Mixed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let host = m.reg.host.clone();
    let hello = guest(P1, "hello");
    let arch = wasmcri::images::manifest::node_arch();

    // A Wasm artifact, a wasi/wasm image, a Linux index, an index with Linux and wasi/wasm.
    let artifact = format!("{host}/art:v1");
    wasm_artifact_layout(&dir.path().join("art"), &hello, "art:v1");
    skopeo_push(&dir.path().join("art"), &artifact);
    let wasi = format!("{host}/wasi:v1");
    tar_image_layout(
        &dir.path().join("wasi"),
        &[("/hello.wasm", hello.clone())],
        &["/hello.wasm"],
        &[],
        "wasi:v1",
    );
    skopeo_push(&dir.path().join("wasi"), &wasi);
    let linux_index = format!("{host}/linux-index:v1");
    let li = dir.path().join("li");
    let (ld, ls) = busybox_layout(&li, &["sh"], "x").unwrap();
    index_layout(
        &li,
        &[
            (ld.clone(), ls, "linux", arch),
            (ld.clone(), ls, "linux", "s390x"),
        ],
        "linux-index:v1",
    );
    skopeo_push_all(&li, &linux_index);
    let mixed = format!("{host}/mixed:v1");
    let mi = dir.path().join("mi");
    let (ld, ls) = busybox_layout(&mi, &["sh"], "x").unwrap();
    tar_image_layout(
        &mi,
        &[("/hello.wasm", hello.clone())],
        &["/hello.wasm"],
        &[],
        "y",
    );
    let (wd, ws) = top_manifest(&mi);
    index_layout(
        &mi,
        &[(ld, ls, "linux", arch), (wd, ws, "wasi", "wasm")],
        "mixed:v1",
    );
    skopeo_push_all(&mi, &mixed);

    for image in [&artifact, &wasi, &linux_index, &mixed] {
        pull_image(&m.d, image)
            .await
            .unwrap_or_else(|e| panic!("pull {image}: {e}\n{}", m.d.log()));
    }
    let local = local_tags(&m.d);
    for (image, wasm) in [
        (&artifact, true),
        (&wasi, true),
        (&mixed, true),
        (&linux_index, false),
        (&m.busybox, false),
    ] {
        assert_eq!(
            local.contains(image.as_str()),
            wasm,
            "{image} in wasmcri: {local}"
        );
        assert_eq!(
            in_containerd(&m, image).await,
            !wasm,
            "{image} in containerd"
        );
    }

    // The kubelet's runtime handler decides before the image's content does.
    let handled = pb::PullImageRequest {
        image: Some(pb::ImageSpec {
            image: wasi.clone(),
            runtime_handler: "runc".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    m.d.img().await.pull_image(handled).await.unwrap();
    assert!(
        in_containerd(&m, &wasi).await,
        "runtime_handler runc sends the pull to containerd"
    );

    // One view of both stores.
    let mut img = m.d.img().await;
    let listed: Vec<String> = img
        .list_images(pb::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    for image in [&artifact, &wasi, &mixed, &linux_index, &m.busybox] {
        assert!(listed.contains(image), "{image} not in {listed:?}");
    }
    assert_eq!(
        listed.iter().filter(|t| **t == wasi).count(),
        1,
        "an image both hold is listed once: {listed:?}"
    );
    for image in [&artifact, &linux_index] {
        assert!(
            image_status_of(&mut img, image).await.is_some(),
            "ImageStatus {image}"
        );
    }
    let fs = img
        .image_fs_info(pb::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 2, "{fs:?}");

    // Removal reaches whichever side holds the image.
    for image in [&artifact, &linux_index, &wasi] {
        img.remove_image(pb::RemoveImageRequest {
            image: Some(pb::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
        assert!(
            !local_tags(&m.d).contains(image.as_str()),
            "{image} still in wasmcri"
        );
        assert!(
            !in_containerd(&m, image).await,
            "{image} still in containerd"
        );
    }
    m.shutdown().await;
}

/// Retries ContainerStatus until it answers (the delegate coming back), or panics.
async fn status_when_back(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    secs: u64,
) -> pb::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match rt
            .container_status(pb::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
        {
            Ok(r) => return r.into_inner().status.unwrap(),
            Err(e) => assert!(Instant::now() < deadline, "{id} still failing: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn delegate_slow_killed_and_restarted() {
    let Some(mut m) = Mixed::start().await else {
        return;
    };
    let mut rt = m.d.rt().await;
    let script = "echo up; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";
    let (lpod, _, lctr) = m.linux_pod(&mut rt, "linux", script).await;
    let (wpod, _, wctr) = m.wasm_pod(&mut rt, "wasm").await;
    let pods = sorted(vec![lpod.clone(), wpod.clone()]);
    let ctrs = sorted(vec![lctr.clone(), wctr.clone()]);
    assert_eq!(pod_ids(&mut rt, None).await, pods);
    assert_eq!(container_ids(&mut rt, None).await, ctrs);

    let unavailable = |e: tonic::Status, endpoint: &str| {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        assert!(e.message().contains(endpoint), "{}", e.message());
    };

    // Slow: a stopped containerd accepts connections and never answers.
    m.ctrd.pause();
    let t = Instant::now();
    let e = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: lctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    unavailable(e, &m.ctrd.endpoint);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        status(&mut rt, &wctr).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    assert_eq!(
        pod_ids(&mut rt, None).await,
        pods,
        "a slow delegate's pods stay listed"
    );
    m.ctrd.resume();
    assert_eq!(
        status_when_back(&mut rt, &lctr, 10).await.state,
        pb::ContainerState::ContainerRunning as i32
    );

    // Down.
    m.ctrd.kill9();
    let e = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: lctr.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    unavailable(e, &m.ctrd.endpoint);
    let mut cfg = pod_config(&unique("linux2"), &m.d.dir.path().join("logs"));
    cfg.linux = None;
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    unavailable(e, &m.ctrd.endpoint);
    let s = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "RuntimeReady").status);
    let dr = condition(&s, "DelegateReady");
    assert!(!dr.status);
    assert!(dr.message.contains(&m.ctrd.endpoint), "{dr:?}");
    // Nothing listed disappears; Wasm pods keep working, new ones start, their events flow.
    assert_eq!(pod_ids(&mut rt, None).await, pods);
    assert_eq!(container_ids(&mut rt, None).await, ctrs);
    let mut events = rt
        .get_container_events(pb::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let (w2pod, _, w2ctr) = m.wasm_pod(&mut rt, "wasm2").await;
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = events.message().await.unwrap() {
            if ev.container_id == w2ctr {
                return;
            }
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "no event for {w2ctr} while the delegate is down"
    );
    let pods = sorted(vec![lpod.clone(), wpod.clone(), w2pod.clone()]);
    assert_eq!(pod_ids(&mut rt, None).await, pods);

    // Back: the same objects, once each; the Linux container ran on without containerd.
    m.ctrd.spawn().await;
    let st = status_when_back(&mut rt, &lctr, 20).await;
    assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32);
    assert_eq!(pod_ids(&mut rt, None).await, pods);
    assert_eq!(
        container_ids(&mut rt, None).await,
        sorted(vec![lctr.clone(), wctr.clone(), w2ctr.clone()])
    );
    let out = exec(&mut rt, &lctr, &["echo", "back"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");
    let s = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(condition(&s, "DelegateReady").status, "{s:?}");
    drop(events);
    m.shutdown().await;
}

#[tokio::test]
async fn wasmcri_killed_and_restarted() {
    let Some(mut m) = Mixed::start().await else {
        return;
    };
    let mut rt = m.d.rt().await;
    let script = "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";
    let (lpod, _, lctr) = m.linux_pod(&mut rt, "linux", script).await;
    let (wpod, _, wctr) = m.wasm_pod(&mut rt, "wasm").await;
    m.d.kill9();
    m.d.spawn().await;
    let mut rt = m.d.rt().await;
    // Every ID still reaches its owner.
    for c in [&lctr, &wctr] {
        assert_eq!(
            status(&mut rt, c).await.state,
            pb::ContainerState::ContainerRunning as i32
        );
    }
    assert_eq!(
        pod_ids(&mut rt, None).await,
        sorted(vec![lpod.clone(), wpod.clone()])
    );
    assert_eq!(
        container_ids(&mut rt, None).await,
        sorted(vec![lctr.clone(), wctr.clone()])
    );
    let out = exec(&mut rt, &lctr, &["echo", "still"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still\n");
    remove_pod(&mut rt, &lpod).await;
    assert!(pod_ids(&mut m.ctrd.rt().await, None).await.is_empty());
    m.shutdown().await;
}

#[tokio::test]
async fn a_bad_delegate_endpoint_stops_the_daemon_before_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("wasmcri.sock");
    let out = std::process::Command::new(Daemon::bin())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(&socket)
        .args(["--delegate-endpoint", "tcp://10.0.0.1:1234", "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tcp://10.0.0.1:1234"), "{err}");
    assert!(!socket.exists(), "nothing served");
    assert!(!dir.path().join("root").exists(), "no state made");
}
