//! Sandboxes against slow plugins, crashes and reboots: listing never waits behind a slow
//! CNI plugin, and recovery sweeps what an interrupted RunPodSandbox made, marks pods of an
//! earlier boot NotReady and ends runners it never recorded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri::v1 as pb;

use crate::harness::*;

/// A CNI plugin (a shell script, per the CNI spec's exec protocol) that logs every command
/// to `calls`, sleeps `add_secs`/`del_secs` on ADD/DEL (the PID of ADD's `sleep` goes to
/// `add.pid`), and answers ADD with a fixed IP.
struct ScriptCni {
    dir: tempfile::TempDir,
}

impl ScriptCni {
    fn new(add_secs: u32, del_secs: u32) -> ScriptCni {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let conf = dir.path().join("net.d");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        let d = dir.path().display();
        let script = format!(
            r#"#!/bin/sh
cat >/dev/null
echo "$CNI_COMMAND $CNI_CONTAINERID" >> {d}/calls
case "$CNI_COMMAND" in
ADD)
  sleep {add_secs} &
  echo $! > {d}/add.pid
  wait $!
  printf '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"%s"}}],"ips":[{{"address":"10.99.0.5/24","interface":0}}]}}' "$CNI_NETNS"
  ;;
DEL) sleep {del_secs} ;;
VERSION) printf '{{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}}' ;;
esac
"#
        );
        let plugin = bin.join("scriptcni");
        std::fs::write(&plugin, script).unwrap();
        std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            conf.join("10-script.conflist"),
            r#"{"cniVersion":"1.0.0","name":"script","plugins":[{"type":"scriptcni"}]}"#,
        )
        .unwrap();
        ScriptCni { dir }
    }

    fn daemon_config(&self) -> String {
        format!(
            "[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}]\n",
            self.dir.path().join("net.d"),
            self.dir.path().join("bin")
        )
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
    }

    fn add_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("add.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// [`pod_config`] with a network namespace of its own (so CNI runs).
fn netns_pod(name: &str, logs: &Path) -> pb::PodSandboxConfig {
    let mut cfg = pod_config(&unique(name), logs);
    let ns = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .unwrap();
    ns.network = pb::NamespaceMode::Pod as i32;
    cfg
}

async fn pod_state(rt: &mut RuntimeServiceClient, pod: &str) -> i32 {
    pod_status(rt, pod, false).await.status.unwrap().state
}

type RuntimeServiceClient =
    cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// StopPodSandbox spends 4 s in CNI DEL; ListPodSandbox and PodSandboxStatus answer at once
/// meanwhile (before: both waited on the pod's lock until DEL finished) and already say
/// NotReady.
#[tokio::test(flavor = "multi_thread")]
async fn slow_cni_del_does_not_stall_listing_or_status() {
    let cni = ScriptCni::new(0, 4);
    let d = Daemon::start_with(&cni.daemon_config()).await;
    let mut rt = d.rt().await;
    let pod = run_pod(&mut rt, netns_pod("slowdel", &d.dir.path().join("logs"))).await;
    let stopping = {
        let mut rt = d.rt().await;
        let pod = pod.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            stop_pod(&mut rt, &pod).await;
            t.elapsed()
        })
    };
    // Wait until DEL is running.
    for _ in 0..200 {
        if cni.calls().contains("DEL") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cni.calls().contains("DEL"), "{} {}", cni.calls(), d.log());
    let t = Instant::now();
    let listed = tokio::time::timeout(
        Duration::from_secs(2),
        rt.list_pod_sandbox(pb::ListPodSandboxRequest::default()),
    )
    .await
    .expect("ListPodSandbox waited behind CNI DEL")
    .unwrap()
    .into_inner()
    .items;
    let st = tokio::time::timeout(Duration::from_secs(2), pod_state(&mut rt, &pod))
        .await
        .expect("PodSandboxStatus waited behind CNI DEL");
    let answered = t.elapsed();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::PodSandboxState::SandboxNotready as i32);
    assert_eq!(st, pb::PodSandboxState::SandboxNotready as i32);
    let stop_took = stopping.await.unwrap();
    assert!(
        stop_took >= Duration::from_secs(3),
        "DEL did not run: {stop_took:?}"
    );
    assert!(answered < stop_took, "{answered:?} vs {stop_took:?}");
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The daemon is killed while CNI ADD runs: the restarted daemon runs CNI DEL for that
/// sandbox and removes its netns, directory and record (before: the netns mount and the IP
/// leaked, and no record said so).
#[tokio::test(flavor = "multi_thread")]
async fn crash_during_run_pod_sandbox_is_swept_on_restart() {
    let cni = ScriptCni::new(30, 0);
    let mut d = Daemon::start_with(&cni.daemon_config()).await;
    let running = {
        let mut rt = d.rt().await;
        let cfg = netns_pod("crashadd", &d.dir.path().join("logs"));
        tokio::spawn(async move {
            let _ = rt
                .run_pod_sandbox(pb::RunPodSandboxRequest {
                    config: Some(cfg),
                    runtime_handler: "wasmtime".into(),
                })
                .await;
        })
    };
    let mut add_pid = None;
    for _ in 0..500 {
        add_pid = cni.add_pid();
        if add_pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let add_pid = add_pid.expect("CNI ADD never ran");
    let netns_dir = d.dir.path().join("state").join("netns");
    assert_eq!(entries(&netns_dir).len(), 1, "the sandbox's netns exists");
    d.kill9();
    running.abort();
    // The plugin's sleep outlives the daemon that started it; it is ours to end.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(add_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let pod_id = cni
        .calls()
        .lines()
        .find_map(|l| l.strip_prefix("ADD ").map(str::to_owned))
        .unwrap();
    d.spawn().await;
    let mut rt = d.rt().await;
    let swept = async {
        loop {
            let gone = entries(&netns_dir).is_empty()
                && !d.dir.path().join("root/pods").join(&pod_id).exists()
                && !d
                    .dir
                    .path()
                    .join("root/meta/pods")
                    .join(format!("{pod_id}.json"))
                    .exists();
            if gone && cni.calls().contains(&format!("DEL {pod_id}")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), swept)
        .await
        .unwrap_or_else(|_| panic!("not swept: calls {:?}", cni.calls()));
    let listed = rt
        .list_pod_sandbox(pb::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    d.shutdown().await;
}

/// After a reboot (a different boot ID than the one the daemon recorded) a sandbox that was
/// Ready is NotReady: its netns and processes are gone (before: it still said Ready).
#[tokio::test(flavor = "multi_thread")]
async fn pods_of_an_earlier_boot_are_not_ready() {
    let mut d = Daemon::start().await;
    let mut rt = d.rt().await;
    let pod = run_pod(
        &mut rt,
        pod_config(&unique("reboot"), &d.dir.path().join("logs")),
    )
    .await;
    assert_eq!(
        pod_state(&mut rt, &pod).await,
        pb::PodSandboxState::SandboxReady as i32
    );
    d.kill9();
    // A plain restart keeps it Ready.
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(
        pod_state(&mut rt, &pod).await,
        pb::PodSandboxState::SandboxReady as i32
    );
    d.kill9();
    let boot_id = d.dir.path().join("root/meta/boot_id");
    assert!(boot_id.exists());
    std::fs::write(&boot_id, "00000000-0000-0000-0000-000000000000\n").unwrap();
    d.spawn().await;
    let mut rt = d.rt().await;
    assert_eq!(
        pod_state(&mut rt, &pod).await,
        pb::PodSandboxState::SandboxNotready as i32
    );
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// A process in a Created container's cgroup when the daemon starts is a runner it started
/// but never recorded (killed inside StartContainer): recovery ends it.
#[tokio::test(flavor = "multi_thread")]
async fn unrecorded_runner_is_ended_on_restart() {
    let mut d = Daemon::start().await;
    import_guest(&d, "wasm32-wasip1", "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("orphan"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("orphan", "localhost/sleeper:v1"),
    )
    .await;
    let v = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
    let cgroup_path = info["cgroupPath"].as_str().unwrap().to_owned();
    let procs: Vec<PathBuf> = ["pids", "memory", "cpu"]
        .iter()
        .map(|ctl| {
            Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(cgroup_path.trim_start_matches('/'))
                .join("cgroup.procs")
        })
        .filter(|p| p.exists())
        .collect();
    assert!(!procs.is_empty(), "no v1 cgroup for {cgroup_path}");
    d.kill9();
    // Stands in for the runner the crashed daemon had just spawned into the cgroup.
    let mut orphan = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    for p in &procs {
        std::fs::write(p, orphan.id().to_string()).unwrap();
    }
    d.spawn().await;
    let ended = async {
        loop {
            if let Ok(Some(_)) = orphan.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), ended).await;
    if ended.is_err() {
        let _ = orphan.kill();
        let _ = orphan.wait();
        panic!("the unrecorded runner still runs");
    }
    let mut rt = d.rt().await;
    assert_eq!(
        status(&mut rt, &c).await.state,
        pb::ContainerState::ContainerCreated as i32
    );
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
