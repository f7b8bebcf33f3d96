//! cgroup limits, OOM kills, CPU throttling, in-place updates, stats and leak-free churn,
//! on the host's real cgroups (v1 here).

use std::time::Duration;

use cri::v1 as pb;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

fn v1_available() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

fn limited(name: &str, image: &str, mem: i64, quota: i64, shares: i64) -> pb::ContainerConfig {
    let mut c = container_config(name, image);
    c.linux = Some(pb::LinuxContainerConfig {
        resources: Some(pb::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: quota,
            cpu_shares: shares,
            memory_limit_in_bytes: mem,
            oom_score_adj: -997,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_oom_throttling_update_and_stats() {
    if !v1_available() {
        eprintln!("skipping: no cgroup v1 memory hierarchy");
        return;
    }
    let d = Daemon::start().await;
    import_guest(&d, P1, "alloc", "localhost/alloc:v1");
    import_guest(&d, P1, "spin", "localhost/spin:v1");
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("res"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;

    // Limits land in the kernel; the kubelet's negative oom_score_adj does not fail the start.
    let spin = create(
        &mut rt,
        &pod,
        &pod_cfg,
        limited("spin", "localhost/spin:v1", 64 << 20, 20_000, 512),
    )
    .await;
    assert_eq!(
        read_trimmed(&cg_file(&d, "memory", &spin, "memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read_trimmed(&cg_file(&d, "cpu", &spin, "cpu.cfs_quota_us")),
        "20000"
    );
    assert_eq!(
        read_trimmed(&cg_file(&d, "cpu", &spin, "cpu.shares")),
        "512"
    );
    start(&mut rt, &spin).await;
    wait_log(&logs.join("spin/0.log"), "spinning", 10).await;
    // The runner is inside its cgroup.
    let procs = read_trimmed(&cg_file(&d, "cpu", &spin, "cgroup.procs"));
    assert!(!procs.is_empty(), "runner not in its cgroup");

    // A 0.2-CPU quota: about 20% of a core, measured from cgroup counters via ContainerStats.
    let stats = |rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<_>, id: String| {
        let mut rt = rt.clone();
        async move {
            rt.container_stats(pb::ContainerStatsRequest { container_id: id })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
        }
    };
    let s0 = stats(&mut rt, spin.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s1 = stats(&mut rt, spin.clone()).await;
    let c0 = s0.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let cpu1 = s1.cpu.unwrap();
    let c1 = cpu1.usage_core_nano_seconds.unwrap().value;
    let cores = (c1 - c0) as f64 / 2e9;
    assert!(
        (0.1..0.35).contains(&cores),
        "spin used {cores:.3} cores under a 0.2 quota"
    );
    let nano = cpu1
        .usage_nano_cores
        .expect("usage_nano_cores from the second sample")
        .value;
    assert!(
        (50_000_000..400_000_000).contains(&nano),
        "usage_nano_cores {nano}"
    );
    let mem = s1.memory.unwrap();
    assert!(mem.working_set_bytes.unwrap().value > 0);
    assert!(mem.usage_bytes.unwrap().value > 0);
    let throttled: u64 = read_trimmed(&cg_file(&d, "cpu", &spin, "cpu.stat"))
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled ").map(|v| v.parse().unwrap()))
        .unwrap();
    assert!(throttled > 0, "no CFS throttling recorded");

    // In-place update.
    rt.update_container_resources(pb::UpdateContainerResourcesRequest {
        container_id: spin.clone(),
        linux: Some(pb::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        read_trimmed(&cg_file(&d, "cpu", &spin, "cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read_trimmed(&cg_file(&d, "memory", &spin, "memory.limit_in_bytes")),
        (128u64 << 20).to_string()
    );
    let st = rt
        .container_status(pb::ContainerStatusRequest {
            container_id: spin.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(st.resources.unwrap().linux.unwrap().cpu_quota, 50_000);

    // Pod and list stats.
    let _ = pod_stats(&mut rt, &pod).await; // the first sample sets the CPU-rate baseline
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let linux = pod_stats(&mut rt, &pod).await;
    // The busy container's CPU rate inside the pod stats is its own, not zero.
    let rate = |c: &pb::ContainerStats| {
        c.cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores.as_ref())
            .map(|v| v.value)
    };
    assert!(
        linux.containers.iter().all(|c| rate(c) > Some(1_000_000)),
        "{:?}",
        linux.containers
    );
    assert_eq!(linux.containers.len(), 1);
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    let all = rt
        .list_container_stats(pb::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);

    // A sibling that exceeds its memory limit is OOM-killed (137, OOMKilled); spin keeps running.
    let mut hog = limited("hog", "localhost/alloc:v1", 32 << 20, 0, 0);
    hog.args = vec!["512".into()];
    let hog = create(&mut rt, &pod, &pod_cfg, hog).await;
    start(&mut rt, &hog).await;
    let st = wait_exited(&mut rt, &hog, 60).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:?}"
    );
    assert_eq!(
        status(&mut rt, &spin).await.state,
        pb::ContainerState::ContainerRunning as i32
    );
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_leaves_no_cgroups() {
    if !v1_available() {
        eprintln!("skipping: no cgroup v1 memory hierarchy");
        return;
    }
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let pod_cfg = pod_config(&unique("churn"), &d.dir.path().join("logs"));
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    for i in 0..500 {
        let mut cfg = limited("c", "localhost/sleeper:v1", 64 << 20, 50_000, 256);
        cfg.metadata.as_mut().unwrap().attempt = i;
        let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
        start(&mut rt, &c).await;
        stop_container(&mut rt, &c, 0).await;
        remove_container(&mut rt, &c).await;
        assert!(
            !cg_file(&d, "memory", &c, "").exists(),
            "cgroup of {c} left behind"
        );
    }
    // shutdown() asserts that nothing is left under the daemon's cgroup parent.
    d.shutdown().await;
}
