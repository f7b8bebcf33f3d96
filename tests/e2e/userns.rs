//! User namespaces (`hostUsers: false`) and pod sysctls through the CRI: the mapping the
//! kubelet sends is what the node sees on every runner of the pod, a guest's root is not the
//! node's root, hostile mappings and sysctl names are refused with nothing left behind, and
//! `net.*` sysctls land in the pod's network namespace only.

use std::collections::HashMap;
use std::path::Path;

use cri::v1 as pb;
use tonic::Code;

use crate::harness::*;
use crate::streaming::{exec_url, spdy_exec};

const P1: &str = "wasm32-wasip1";

/// A range of 65536 IDs at a random multiple of 65536 well above the node's own, as the
/// kubelet allocates them (random so that parallel tests never share one).
fn kubelet_range() -> u32 {
    let k = 100 + u32::from_str_radix(&wasmcri::ids::new_id()[..4], 16).unwrap() % 20_000;
    k * 65536
}

fn userns(
    mode: pb::NamespaceMode,
    uids: Vec<pb::IdMapping>,
    gids: Vec<pb::IdMapping>,
) -> pb::UserNamespace {
    pb::UserNamespace {
        mode: mode as i32,
        uids,
        gids,
    }
}

fn range(container_id: u32, host_id: u32, length: u32) -> pb::IdMapping {
    pb::IdMapping {
        host_id,
        container_id,
        length,
    }
}

fn with_userns(cfg: &mut pb::PodSandboxConfig, u: pb::UserNamespace) {
    let ns = cfg
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    ns.userns_options = Some(u);
}

fn with_pod_network(cfg: &mut pb::PodSandboxConfig) {
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = pb::NamespaceMode::Pod as i32;
}

fn import_tools(d: &Daemon) {
    let layout = d.dir.path().join("tools");
    let g = |n: &str| guest(P1, n);
    tar_image_layout(
        &layout,
        &[
            ("/sleeper.wasm", g("sleeper")),
            ("/writefile.wasm", g("writefile")),
            ("/hello.wasm", g("hello")),
        ],
        &["/sleeper.wasm"],
        &[],
        "localhost/tools:v1",
    );
    d.import(&layout, "localhost/tools:v1");
}

/// A sleeper with a writable mount of `owned` at `/owned`, as `uid` if given.
fn sleeper(name: &str, owned: &Path, uid: Option<i64>) -> pb::ContainerConfig {
    let mut c = container_config(name, "localhost/tools:v1");
    c.mounts = vec![pb::Mount {
        container_path: "/owned".into(),
        host_path: owned.display().to_string(),
        ..Default::default()
    }];
    c.linux = Some(pb::LinuxContainerConfig {
        security_context: Some(pb::LinuxContainerSecurityContext {
            run_as_user: uid.map(|value| pb::Int64Value { value }),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

async fn exec(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    c: &str,
    cmd: &[&str],
) -> pb::ExecSyncResponse {
    rt.exec_sync(pb::ExecSyncRequest {
        container_id: c.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 20,
    })
    .await
    .unwrap()
    .into_inner()
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The uid and gid maps of a process, as whitespace-separated words.
fn id_maps(pid: i32) -> (String, String) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (read("uid_map"), read("gid_map"))
}

#[tokio::test(flavor = "multi_thread")]
async fn userns_pod_runs_every_runner_with_the_kubelets_mapping() {
    let d = Daemon::start().await;
    import_tools(&d);
    let mut rt = d.rt().await;
    let st = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        st.runtime_handlers
            .iter()
            .all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces))
    );
    assert!(st.features.unwrap().user_namespaces_host_network);

    // A directory of the node's root, writable by its owner only, mounted read-write.
    let owned = d.dir.path().join("owned");
    std::fs::create_dir(&owned).unwrap();
    std::fs::set_permissions(&owned, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let logs = d.dir.path().join("logs");
    let (hu, hg) = (kubelet_range(), kubelet_range());

    // The same guest without a user namespace is the node's root: it can write there.
    let plain_cfg = pod_config(&unique("plain"), &logs);
    let plain = run_pod(&mut rt, plain_cfg.clone()).await;
    let pc = create(&mut rt, &plain, &plain_cfg, sleeper("plain", &owned, None)).await;
    start(&mut rt, &pc).await;
    wait_log(&logs.join("plain/0.log"), "started", 20).await;
    let out = exec(&mut rt, &pc, &["/writefile.wasm", "/owned/by-plain"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(owned.join("by-plain").exists());

    // hostUsers: false (on the node's network: user_namespaces_host_network).
    let mut cfg = pod_config(&unique("userns"), &logs);
    with_userns(
        &mut cfg,
        userns(
            pb::NamespaceMode::Pod,
            vec![range(0, hu, 65536)],
            vec![range(0, hg, 65536)],
        ),
    );
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let reported = pod_status(&mut rt, &pod, false)
        .await
        .status
        .and_then(|s| s.linux)
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .and_then(|o| o.userns_options)
        .unwrap();
    assert_eq!(reported.mode, pb::NamespaceMode::Pod as i32);
    assert_eq!(reported.uids, vec![range(0, hu, 65536)]);
    assert_eq!(reported.gids, vec![range(0, hg, 65536)]);
    let root = create(&mut rt, &pod, &cfg, sleeper("root", &owned, None)).await;
    let user = create(&mut rt, &pod, &cfg, sleeper("user", &owned, Some(1000))).await;
    for c in [&root, &user] {
        start(&mut rt, c).await;
    }
    wait_log(&logs.join("root/0.log"), "started", 20).await;
    wait_log(&logs.join("user/0.log"), "started", 20).await;

    // What the node sees of the runners: the kubelet's mapping, and the guest's IDs shifted
    // into its range.
    let pid = runner_pid(&mut rt, &root).await;
    assert_eq!(
        id_maps(pid),
        (format!("0 {hu} 65536"), format!("0 {hg} 65536"))
    );
    assert_eq!(status_field(pid, "Uid"), format!("{hu}\t{hu}\t{hu}\t{hu}"));
    assert_eq!(status_field(pid, "Gid"), format!("{hg}\t{hg}\t{hg}\t{hg}"));
    // Not a single capability over the node.
    assert_eq!(status_field(pid, "CapEff"), "0000000000000400");
    // The runners loaded the precompiled artifact after switching IDs, not compiled anew.
    for c in [&root, &user] {
        let log = d
            .dir
            .path()
            .join("root/containers")
            .join(c)
            .join("runner.log");
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!log.contains("compiling"), "{log}");
    }
    let upid = runner_pid(&mut rt, &user).await;
    let u = hu + 1000;
    assert_eq!(status_field(upid, "Uid"), format!("{u}\t{u}\t{u}\t{u}"));
    assert_eq!(status_field(upid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(upid, "CapPrm"), "0000000000000000");
    assert_eq!(id_maps(upid).0, format!("0 {hu} 65536"));
    // Both runners are in one user namespace, the pod's.
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    assert_eq!(ns(pid), ns(upid));
    assert_ne!(ns(pid), std::fs::read_link("/proc/self/ns/user").unwrap());

    // The guest's root cannot write where the node's root could.
    let out = exec(&mut rt, &root, &["/writefile.wasm", "/owned/by-userns"]).await;
    assert_eq!(out.exit_code, 1, "{out:?}");
    assert!(!owned.join("by-userns").exists());
    // ExecSync otherwise works as usual in the pod.
    let out = exec(&mut rt, &user, &["/hello.wasm"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello from wasm"));

    // So does an interactive exec (the streaming server's), in the same namespace.
    let url = exec_url(
        &mut rt,
        &root,
        &["/writefile.wasm", "/owned/by-exec"],
        false,
    )
    .await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("failed"), "{}", r.stdout);
    assert!(r.error.contains("NonZeroExitCode"), "{}", r.error);
    assert!(!owned.join("by-exec").exists());
    let url = exec_url(&mut rt, &user, &["/hello.wasm"], false).await;
    let r = spdy_exec(&url, "v4.channel.k8s.io", None).await;
    assert!(r.stdout.contains("hello from wasm"), "{}", r.stdout);

    // Stop and exit status still work; removal takes the namespace with it.
    rt.stop_container(pb::StopContainerRequest {
        container_id: root.clone(),
        timeout: 5,
    })
    .await
    .unwrap();
    let st = wait_exited(&mut rt, &root, 20).await;
    assert_eq!(st.exit_code, 143, "{st:?}");
    let userns_dir = d.dir.path().join("state/userns");
    assert_eq!(entries(&userns_dir).len(), 1);
    remove_pod(&mut rt, &pod).await;
    remove_pod(&mut rt, &plain).await;
    assert!(entries(&userns_dir).is_empty());
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_mappings_and_sysctls_are_refused_and_leave_nothing() {
    let d = Daemon::start().await;
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let h = kubelet_range();
    let ok = || vec![range(0, h, 65536)];
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let mut bad: Vec<(&str, pb::PodSandboxConfig)> = Vec::new();
    let mut add_userns = |what: &'static str, u: pb::UserNamespace| {
        let mut cfg = pod_config(&unique("hostile"), &logs);
        with_userns(&mut cfg, u);
        bad.push((what, cfg));
    };
    add_userns(
        "no uid ranges",
        userns(pb::NamespaceMode::Pod, vec![], ok()),
    );
    add_userns(
        "no gid ranges",
        userns(pb::NamespaceMode::Pod, ok(), vec![]),
    );
    add_userns(
        "node root",
        userns(pb::NamespaceMode::Pod, vec![range(0, 0, 65536)], ok()),
    );
    add_userns(
        "node system users",
        userns(pb::NamespaceMode::Pod, ok(), vec![range(0, 1000, 10)]),
    );
    add_userns(
        "empty range",
        userns(pb::NamespaceMode::Pod, vec![range(0, h, 0)], ok()),
    );
    add_userns(
        "huge length",
        userns(pb::NamespaceMode::Pod, vec![range(0, h, u32::MAX)], ok()),
    );
    add_userns(
        "overlap",
        userns(
            pb::NamespaceMode::Pod,
            vec![range(0, h, 65536), range(100, h + 65536, 10)],
            ok(),
        ),
    );
    add_userns(
        "mode CONTAINER",
        userns(pb::NamespaceMode::Container, ok(), ok()),
    );
    add_userns("mode TARGET", userns(pb::NamespaceMode::Target, ok(), ok()));
    let mut add_sysctl = |what: &'static str, name: &str, host_network: bool| {
        let mut cfg = pod_config(&unique("hostile"), &logs);
        if !host_network {
            with_pod_network(&mut cfg);
        }
        cfg.linux.as_mut().unwrap().sysctls =
            HashMap::from([(name.to_string(), "|/tmp/pwned %p".to_string())]);
        bad.push((what, cfg));
    };
    add_sysctl("traversal", "net/../../kernel/core_pattern", false);
    add_sysctl(
        "dotted traversal",
        "net.ipv4/../../../kernel.core_pattern",
        false,
    );
    add_sysctl("a node sysctl", "kernel.core_pattern", false);
    add_sysctl("host network", "net.ipv4.ip_local_port_range", true);
    for (what, cfg) in bad {
        let e = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(cfg),
                runtime_handler: "wasmtime".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(!e.message().is_empty(), "{what}");
    }
    let e = {
        let mut cfg = pod_config(&unique("hostile"), &logs);
        cfg.linux.as_mut().unwrap().sysctls =
            HashMap::from([("kernel.core_pattern".to_string(), "x".to_string())]);
        rt.run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: "wasmtime".into(),
        })
        .await
        .unwrap_err()
    };
    assert!(e.message().contains("kernel.core_pattern"), "{e:?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        core_pattern
    );
    let pods = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    for sub in ["state/userns", "state/netns", "root/pods"] {
        assert!(entries(&d.dir.path().join(sub)).is_empty(), "{sub}");
    }
    // Two pods never share node IDs; a recreated sandbox of the same pod keeps its range.
    let pod_ns = || userns(pb::NamespaceMode::Pod, ok(), ok());
    let mut first = pod_config(&unique("first"), &logs);
    with_userns(&mut first, pod_ns());
    let a = run_pod(&mut rt, first.clone()).await;
    let mut again = first.clone();
    again.metadata.as_mut().unwrap().attempt = 1;
    let a1 = run_pod(&mut rt, again).await;
    let mut other = pod_config(&unique("other"), &logs);
    with_userns(&mut other, pod_ns());
    let e = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(other),
            runtime_handler: "wasmtime".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("already used by pod"), "{e:?}");
    assert_eq!(entries(&d.dir.path().join("state/userns")).len(), 2);
    remove_pod(&mut rt, &a).await;
    remove_pod(&mut rt, &a1).await;
    // Mode NODE is today's behaviour.
    let mut cfg = pod_config(&unique("node"), &logs);
    with_userns(&mut cfg, userns(pb::NamespaceMode::Node, vec![], vec![]));
    let pod = run_pod(&mut rt, cfg).await;
    assert!(entries(&d.dir.path().join("state/userns")).is_empty());
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// The pod's netns file, as the daemon names it.
fn netns_of(d: &Daemon, pod: &str) -> std::path::PathBuf {
    d.dir
        .path()
        .join("state/netns")
        .join(format!("wasmcri-{}", &pod[..16]))
}

fn sysctl_in(netns: &Path, name: &str) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["cat", &format!("/proc/sys/{}", name.replace('.', "/"))])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn sysctls_are_set_in_the_pods_netns_and_failures_roll_back() {
    let Some(net) = CniNet::new() else { return };
    let d = Daemon::start_with(&net.daemon_config()).await;
    import_tools(&d);
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let want = if host_range.split_whitespace().next() == Some("20000") {
        "20001 40001"
    } else {
        "20000 40000"
    };
    let mut cfg = pod_config(&unique("sysctl"), &logs);
    with_pod_network(&mut cfg);
    // With a user namespace too: a runner joins the netns before the userns.
    let h = kubelet_range();
    with_userns(
        &mut cfg,
        userns(
            pb::NamespaceMode::Pod,
            vec![range(0, h, 65536)],
            vec![range(0, h, 65536)],
        ),
    );
    cfg.linux.as_mut().unwrap().sysctls = HashMap::from([
        ("net.ipv4.ip_local_port_range".to_string(), want.to_string()),
        (
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "80".to_string(),
        ),
        ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
    ]);
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let ns = netns_of(&d, &pod);
    assert_eq!(sysctl_in(&ns, "net.ipv4.ip_local_port_range"), want);
    assert_eq!(sysctl_in(&ns, "net.ipv4.ip_unprivileged_port_start"), "80");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
        host_range
    );
    let data = d.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let c = create(&mut rt, &pod, &cfg, sleeper("main", &data, None)).await;
    start(&mut rt, &c).await;
    wait_log(&logs.join("main/0.log"), "started", 20).await;
    let pid = runner_pid(&mut rt, &c).await;
    let stat = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (
            std::os::unix::fs::MetadataExt::dev(&m),
            std::os::unix::fs::MetadataExt::ino(&m),
        )
    };
    assert_eq!(stat(Path::new(&format!("/proc/{pid}/ns/net"))), stat(&ns));
    assert_eq!(id_maps(pid).0, format!("0 {h} 65536"));
    remove_pod(&mut rt, &pod).await;

    // A sysctl the pod's namespace lacks, or a value the kernel refuses: INVALID_ARGUMENT
    // after the netns, IP and user namespace were made — all rolled back.
    for (name, value) in [
        ("net.ipv4.no_such_sysctl", "1"),
        ("net.ipv4.ip_local_port_range", "banana"),
    ] {
        let mut bad = cfg.clone();
        bad.metadata.as_mut().unwrap().name = unique("rollback");
        bad.linux.as_mut().unwrap().sysctls =
            HashMap::from([(name.to_string(), value.to_string())]);
        let e = rt
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(bad),
                runtime_handler: "wasmtime".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(name), "{e:?}");
    }
    for sub in ["state/userns", "state/netns", "root/pods"] {
        assert!(entries(&d.dir.path().join(sub)).is_empty(), "{sub}");
    }
    let ips: Vec<String> = entries(&net.ipam_dir.join(CniNet::NAME))
        .into_iter()
        .filter(|n| n.starts_with(&net.prefix))
        .collect();
    assert!(ips.is_empty(), "IPs still allocated: {ips:?}");
    d.shutdown().await;
}

/// The pod's user namespace outlives the daemon: after `kill -9` and a restart the running
/// guest keeps its mapping, and ExecSync and a new container still join the same namespace.
/// A user the mapping does not hold is refused at CreateContainer.
#[tokio::test(flavor = "multi_thread")]
async fn userns_survives_a_daemon_restart_and_unmapped_users_are_refused() {
    let mut d = Daemon::start().await;
    import_tools(&d);
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let data = d.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let h = kubelet_range();
    let mut cfg = pod_config(&unique("restart"), &logs);
    with_userns(
        &mut cfg,
        userns(
            pb::NamespaceMode::Pod,
            vec![range(0, h, 65536)],
            vec![range(0, h, 65536)],
        ),
    );
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let e = rt
        .create_container(pb::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(sleeper("unmapped", &data, Some(70000))),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("uid 70000 is not mapped"), "{e:?}");

    let first = create(&mut rt, &pod, &cfg, sleeper("first", &data, None)).await;
    start(&mut rt, &first).await;
    wait_log(&logs.join("first/0.log"), "started", 20).await;
    let pid = runner_pid(&mut rt, &first).await;
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
    let before = ns(pid);

    d.kill9();
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(
        status(&mut rt, &first).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    assert_eq!(id_maps(pid).0, format!("0 {h} 65536"));
    let out = exec(&mut rt, &first, &["/hello.wasm"]).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let second = create(&mut rt, &pod, &cfg, sleeper("second", &data, Some(7))).await;
    start(&mut rt, &second).await;
    wait_log(&logs.join("second/0.log"), "started", 20).await;
    let pid2 = runner_pid(&mut rt, &second).await;
    assert_eq!(ns(pid2), before);
    let u = h + 7;
    assert_eq!(status_field(pid2, "Uid"), format!("{u}\t{u}\t{u}\t{u}"));
    remove_pod(&mut rt, &pod).await;
    assert!(entries(&d.dir.path().join("state/userns")).is_empty());
    d.shutdown().await;
}
