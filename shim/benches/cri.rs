//! `cargo bench --bench cri`: pod and container latency and per-container memory, measured
//! through the real daemon over its socket. Prints a table; asserts nothing.
//!
//! - RunPodSandbox (host network)
//! - the same with a user namespace (`hostUsers: false`): RunPodSandbox, Run → first log
//! - CreateContainer + StartContainer of `hello` until its log line is written
//! - StopPodSandbox + RemovePodSandbox
//! - the same with the pod on a CNI bridge network of the bench's own (skipped without the CNI
//!   plugins): RunPodSandbox, RunPodSandbox → first log line, teardown (at least 100 cycles)
//! - ListContainerStats over the idle containers
//! - PullImage from a local docker-registry of a 2 MB and a 20 MB module, cold and already
//!   present (by tag: one manifest request; by digest: no network), and pull → first output
//! - private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) of idle
//!   `sleeper` runners
//!
//! Env: `WASMCRI_BENCH_ITERS` (default 200), `WASMCRI_BENCH_IDLE` (default 100),
//! `WASMCRI_BENCH_CONFIG` (TOML appended to the daemon's config, e.g. `standby_runners = 0`),
//! `WASMCRI_BENCH_LOG` (copy the daemon's debug log there at the end: per-RPC durations).

#[path = "../../tests/e2e/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use cri::v1 as pb;
use harness::*;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn row(name: &str, v: &mut [Duration]) {
    println!(
        "| {name:<44} | {:>9.2} | {:>9.2} | {:>5} |",
        pct(v, 0.5).as_secs_f64() * 1e3,
        pct(v, 0.99).as_secs_f64() * 1e3,
        v.len()
    );
}

/// A valid core module of about `bytes` bytes: one memory and one data segment (what makes a
/// real module big is mostly data and code; data keeps compilation out of the pull figure).
fn module_with_data(bytes: usize) -> Vec<u8> {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let pages = bytes.div_ceil(65536) + 1;
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    let mut mem = vec![1u8, 0];
    leb(pages, &mut mem);
    m.push(5);
    leb(mem.len(), &mut m);
    m.extend(mem);
    let mut data = vec![1u8, 0, 0x41, 0, 0x0b];
    leb(bytes, &mut data);
    data.extend((0..bytes).map(|i| (i * 7 % 251) as u8));
    m.push(11);
    leb(data.len(), &mut m);
    m.extend(data);
    m
}

/// Latencies of `n` pod cycles.
struct Cycles {
    /// RunPodSandbox.
    run: Vec<Duration>,
    /// CreateContainer + StartContainer of `hello` → its log line.
    first_log: Vec<Duration>,
    /// RunPodSandbox → the log line.
    pod_start: Vec<Duration>,
    /// StopPodSandbox + RemovePodSandbox.
    teardown: Vec<Duration>,
}

/// `n` times: a pod (host network, or the daemon's CNI network; in a user namespace with
/// the kubelet's kind of mapping if `userns`), `hello` in it until its log line, teardown.
async fn pod_cycles(d: &Daemon, n: usize, host_network: bool, userns: bool) -> Cycles {
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut out = Cycles {
        run: Vec::new(),
        first_log: Vec::new(),
        pod_start: Vec::new(),
        teardown: Vec::new(),
    };
    for i in 0..n {
        let mut cfg = pod_config(&format!("bench-{i}"), &logs.join(i.to_string()));
        if !host_network {
            cfg.linux = None;
        }
        if userns {
            let range = pb::IdMapping {
                host_id: 65536 * 7,
                container_id: 0,
                length: 65536,
            };
            let ns = cfg.linux.get_or_insert_with(Default::default);
            let sc = ns.security_context.get_or_insert_with(Default::default);
            sc.namespace_options
                .get_or_insert_with(Default::default)
                .userns_options = Some(pb::UserNamespace {
                mode: pb::NamespaceMode::Pod as i32,
                uids: vec![range],
                gids: vec![range],
            });
        }
        let t0 = Instant::now();
        let pod = run_pod(&mut rt, cfg.clone()).await;
        out.run.push(t0.elapsed());
        let t = Instant::now();
        let c = create(
            &mut rt,
            &pod,
            &cfg,
            container_config("hello", "localhost/hello:v1"),
        )
        .await;
        start(&mut rt, &c).await;
        let log = logs.join(i.to_string()).join("hello/0.log");
        wait_log_every(&log, "hello from wasm", 30, Duration::from_micros(200)).await;
        out.first_log.push(t.elapsed());
        out.pod_start.push(t0.elapsed());
        let t = Instant::now();
        remove_pod(&mut rt, &pod).await;
        out.teardown.push(t.elapsed());
    }
    out
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let iters: usize = std::env::var("WASMCRI_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let idle: usize = std::env::var("WASMCRI_BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let d = Daemon::start_with(&std::env::var("WASMCRI_BENCH_CONFIG").unwrap_or_default()).await;
    import_guest(&d, "wasm32-wasip1", "hello", "localhost/hello:v1");
    import_guest(&d, "wasm32-wasip1", "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut host = pod_cycles(&d, iters, true, false).await;
    let mut userns = pod_cycles(&d, iters, true, true).await;
    println!(
        "| {:<44} | {:>9} | {:>9} | {:>5} |",
        "operation", "p50 ms", "p99 ms", "n"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(46),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(7)
    );
    row("RunPodSandbox (host network)", &mut host.run);
    row(
        "CreateContainer+StartContainer → first log",
        &mut host.first_log,
    );
    row("StopPodSandbox+RemovePodSandbox", &mut host.teardown);
    row(
        "pod start (host network): Run → first log",
        &mut host.pod_start,
    );
    row("RunPodSandbox (host network, userns)", &mut userns.run);
    row(
        "pod start (host network, userns): Run → log",
        &mut userns.pod_start,
    );
    row(
        "StopPodSandbox+RemovePodSandbox (userns)",
        &mut userns.teardown,
    );

    // The same on a CNI bridge network (netns, veth, host-local IPAM) of the bench's own.
    if let Some(net) = CniNet::new() {
        let cd = Daemon::start_with(&net.daemon_config()).await;
        import_guest(&cd, "wasm32-wasip1", "hello", "localhost/hello:v1");
        let mut cni = pod_cycles(&cd, iters.max(100), false, false).await;
        row("RunPodSandbox (CNI bridge)", &mut cni.run);
        row(
            "pod start (CNI bridge): Run → first log",
            &mut cni.pod_start,
        );
        row("StopPodSandbox+RemovePodSandbox (CNI)", &mut cni.teardown);
        cd.shutdown().await;
    }

    // PullImage of an image already present, by digest: a metadata check, no registry.
    let mut img = d.img().await;
    let spec = |s: &str| {
        Some(pb::ImageSpec {
            image: s.into(),
            ..Default::default()
        })
    };
    let digest_ref = img
        .image_status(pb::ImageStatusRequest {
            image: spec("localhost/hello:v1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap()
        .repo_digests[0]
        .clone();
    let mut pulls = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        img.pull_image(pb::PullImageRequest {
            image: spec(&digest_ref),
            auth: None,
            sandbox_config: None,
        })
        .await
        .unwrap();
        pulls.push(t.elapsed());
    }
    row("PullImage, already present (by digest)", &mut pulls);

    // Registry pulls (skipped when docker-registry is not installed).
    if let Some(reg) = registry() {
        let pull = |img: &mut cri::v1::image_service_client::ImageServiceClient<_>, r: String| {
            let mut img = img.clone();
            async move {
                let t = Instant::now();
                let id = img
                    .pull_image(pb::PullImageRequest {
                        image: spec(&r),
                        auth: None,
                        sandbox_config: None,
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .image_ref;
                (t.elapsed(), id)
            }
        };
        for mb in [2usize, 20] {
            let file = d.dir.path().join(format!("data-{mb}mb.wasm"));
            std::fs::write(&file, module_with_data(mb << 20)).unwrap();
            let reference = format!("{}/bench/data{mb}:v1", reg.host);
            d.push(&file, &reference);
            let (mut cold, mut tag, mut digest) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..10 {
                let (t, id) = pull(&mut img, reference.clone()).await;
                cold.push(t);
                img.remove_image(pb::RemoveImageRequest { image: spec(&id) })
                    .await
                    .unwrap();
            }
            let (_, id) = pull(&mut img, reference.clone()).await;
            let by_digest = img
                .image_status(pb::ImageStatusRequest {
                    image: spec(&id),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner()
                .image
                .unwrap()
                .repo_digests[0]
                .clone();
            for _ in 0..50 {
                tag.push(pull(&mut img, reference.clone()).await.0);
                digest.push(pull(&mut img, by_digest.clone()).await.0);
            }
            row(&format!("PullImage {mb} MB, cold"), &mut cold);
            row(&format!("PullImage {mb} MB, present, by tag"), &mut tag);
            row(
                &format!("PullImage {mb} MB, present, by digest"),
                &mut digest,
            );
        }
        // Pull → first output of a freshly published hello.
        let hello = guests_dir().join("wasm32-wasip1/release/hello.wasm");
        let mut first = Vec::new();
        for i in 0..20 {
            let reference = format!("{}/bench/hello{i}:v1", reg.host);
            d.push(&hello, &reference);
            let cfg = pod_config(&format!("bench-pull-{i}"), &logs.join(format!("pull{i}")));
            let t = Instant::now();
            pull(&mut img, reference.clone()).await;
            let pod = run_pod(&mut rt, cfg.clone()).await;
            let c = create(&mut rt, &pod, &cfg, container_config("hello", &reference)).await;
            start(&mut rt, &c).await;
            let log = logs.join(format!("pull{i}")).join("hello/0.log");
            wait_log_every(&log, "hello from wasm", 30, Duration::from_micros(200)).await;
            first.push(t.elapsed());
            remove_pod(&mut rt, &pod).await;
        }
        row("PullImage (cold) → first log line, hello", &mut first);
    }

    // Idle memory.
    let cfg = pod_config("bench-idle", &logs.join("idle"));
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let mut pids = Vec::new();
    for i in 0..idle {
        let c = create(
            &mut rt,
            &pod,
            &cfg,
            container_config(&format!("s{i}"), "localhost/sleeper:v1"),
        )
        .await;
        start(&mut rt, &c).await;
        pids.push(runner_pid(&mut rt, &c).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut list_stats = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let n = rt
            .list_container_stats(pb::ListContainerStatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .stats
            .len();
        list_stats.push(t.elapsed());
        assert_eq!(n, pids.len());
    }
    row(
        &format!("ListContainerStats ({} containers)", pids.len()),
        &mut list_stats,
    );
    let mut kib: Vec<u64> = pids.iter().filter_map(|p| private_kib(*p)).collect();
    kib.sort();
    let avg = kib.iter().sum::<u64>() as f64 / kib.len().max(1) as f64;
    println!(
        "\nidle containers: {} | private memory per runner: mean {:.2} MiB, p50 {:.2} MiB, max {:.2} MiB",
        kib.len(),
        avg / 1024.0,
        kib[kib.len() / 2] as f64 / 1024.0,
        *kib.last().unwrap_or(&0) as f64 / 1024.0
    );
    if let Ok(to) = std::env::var("WASMCRI_BENCH_LOG") {
        std::fs::copy(d.dir.path().join("daemon.log"), to).unwrap();
    }
    d.shutdown().await;
}
