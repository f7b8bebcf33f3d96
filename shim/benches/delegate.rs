//! `cargo bench --bench delegate`: what delegation costs. The same CRI calls about a Linux
//! pod, sent to a private containerd directly and through wasmcri delegating to it, over
//! unix sockets, one call at a time. Prints a table (p50/p99 in ms and the p50 difference);
//! asserts nothing. Skipped with a message when containerd, runc, busybox-static,
//! docker-registry or skopeo are missing.
//!
//! - ContainerStatus: forwarded by the ID's owner
//! - PodSandboxStatus: forwarded by the ID's owner
//! - ListContainers: both runtimes asked, the answers merged
//!
//! Env: `WASMCRI_BENCH_ITERS` (default 2000).

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::future::Future;
use std::time::{Duration, Instant};

use cri::v1 as pb;
use cri::v1::runtime_service_client::RuntimeServiceClient;
use harness::*;
use tonic::transport::Channel;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure<F, Fut>(iters: usize, mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..iters / 10 {
        f().await;
    }
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    v
}

async fn rows(
    name: &str,
    iters: usize,
    direct: &mut RuntimeServiceClient<Channel>,
    via: &mut RuntimeServiceClient<Channel>,
    call: impl Fn(RuntimeServiceClient<Channel>) -> std::pin::Pin<Box<dyn Future<Output = ()>>>,
) {
    let mut d = measure(iters, || call(direct.clone())).await;
    let mut w = measure(iters, || call(via.clone())).await;
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    let (d50, d99, w50, w99) = (
        pct(&mut d, 0.5),
        pct(&mut d, 0.99),
        pct(&mut w, 0.5),
        pct(&mut w, 0.99),
    );
    println!(
        "| {name:<18} | {:>8.3} | {:>8.3} | {:>8.3} | {:>8.3} | {:>+9.3} |",
        ms(d50),
        ms(d99),
        ms(w50),
        ms(w99),
        ms(w50) - ms(d50)
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let iters: usize = std::env::var("WASMCRI_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let Some(reg) = registry() else { return };
    let layouts = tempfile::tempdir().unwrap();
    let (busybox, pause) = (
        format!("{}/busybox:v1", reg.host),
        format!("{}/pause:v1", reg.host),
    );
    let bb = layouts.path().join("busybox");
    if busybox_layout(&bb, &["sh"], "busybox:v1").is_none() {
        eprintln!("skipping: /bin/busybox missing (busybox-static)");
        return;
    }
    skopeo_push(&bb, &busybox);
    let pl = layouts.path().join("pause");
    busybox_layout(
        &pl,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done",
        ],
        "pause:v1",
    )
    .unwrap();
    skopeo_push(&pl, &pause);
    // Host-network pods: no CNI needed, the CNI directory stays empty.
    let cni = tempfile::tempdir().unwrap();
    let Some(ctrd) = Containerd::start(&reg.host, cni.path(), &pause).await else {
        return;
    };
    let d = Daemon::start_with(&ctrd.daemon_config()).await;
    pull_image(&d, &busybox).await.unwrap();
    let mut via = d.rt().await;
    let mut direct = ctrd.rt().await;

    let mut cfg = pod_config(&unique("bench"), &d.dir.path().join("logs"));
    cfg.linux.get_or_insert_with(Default::default).cgroup_parent = ctrd.cgroup_parent.clone();
    // A host-network pod shares the node's UTS namespace: runc refuses a hostname there.
    cfg.hostname.clear();
    let pod = via
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut c = container_config("linux", &busybox);
    c.command = vec![
        "sh".into(),
        "-c".into(),
        "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done".into(),
    ];
    let ctr = create(&mut via, &pod, &cfg, c).await;
    start(&mut via, &ctr).await;

    let (load1, _) = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_once(' ')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap_or_default();
    println!(
        "\ndelegation overhead, {iters} calls each, load average {load1} on {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| RPC (ms)           | direct p50 |  p99 | wasmcri p50 |  p99 | extra p50 |");
    println!("|--------------------|----------:|---------:|---------:|---------:|----------:|");
    {
        let id = ctr.clone();
        rows(
            "ContainerStatus",
            iters,
            &mut direct,
            &mut via,
            move |mut c| {
                let id = id.clone();
                Box::pin(async move {
                    c.container_status(pb::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .unwrap();
                })
            },
        )
        .await;
    }
    {
        let id = pod.clone();
        rows(
            "PodSandboxStatus",
            iters,
            &mut direct,
            &mut via,
            move |mut c| {
                let id = id.clone();
                Box::pin(async move {
                    c.pod_sandbox_status(pb::PodSandboxStatusRequest {
                        pod_sandbox_id: id,
                        verbose: false,
                    })
                    .await
                    .unwrap();
                })
            },
        )
        .await;
    }
    rows("ListContainers", iters, &mut direct, &mut via, |mut c| {
        Box::pin(async move {
            c.list_containers(pb::ListContainersRequest::default())
                .await
                .unwrap();
        })
    })
    .await;
    remove_pod(&mut via, &pod).await;
    d.shutdown().await;
    drop(ctrd);
}
