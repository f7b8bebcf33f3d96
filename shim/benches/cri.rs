//! `cargo bench --bench cri`: pod and container latency and per-container memory, measured
//! through the real daemon over its socket. Prints a table; asserts nothing.
//!
//! - RunPodSandbox (host network)
//! - CreateContainer + StartContainer of `hello` until its log line is written
//! - StopPodSandbox + RemovePodSandbox
//! - ListContainerStats over the idle containers
//! - private memory (Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) of idle
//!   `sleeper` runners
//!
//! Env: `WASMCRI_BENCH_ITERS` (default 200), `WASMCRI_BENCH_IDLE` (default 100).

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

fn private_kib(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some(field("Private_Clean:") + field("Private_Dirty:"))
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
    let d = Daemon::start().await;
    import_guest(&d, "wasm32-wasip1", "hello", "localhost/hello:v1");
    import_guest(&d, "wasm32-wasip1", "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let (mut run, mut first_log, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iters {
        let cfg = pod_config(&format!("bench-{i}"), &logs.join(i.to_string()));
        let t = Instant::now();
        let pod = run_pod(&mut rt, cfg.clone()).await;
        run.push(t.elapsed());
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
        loop {
            if std::fs::read_to_string(&log)
                .map(|s| s.contains("hello from wasm"))
                .unwrap_or(false)
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        first_log.push(t.elapsed());
        let t = Instant::now();
        rt.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
        teardown.push(t.elapsed());
    }
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
    row("RunPodSandbox (host network)", &mut run);
    row("CreateContainer+StartContainer → first log", &mut first_log);
    row("StopPodSandbox+RemovePodSandbox", &mut teardown);

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
        let v = rt
            .container_status(pb::ContainerStatusRequest {
                container_id: c,
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&v.info["info"]).unwrap();
        pids.push(info["pid"].as_i64().unwrap() as i32);
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
    d.shutdown().await;
}
