//! The metrics RPCs (what the kubelet's `/metrics/cadvisor` serves with its
//! `PodAndContainerStatsFromCRI` gate on), checked against the stats RPCs on a real pod:
//! a pod network from real CNI plugins, a wasi:http server that takes traffic and a guest
//! that burns CPU.

use std::time::{Duration, Instant};

use cri::v1 as pb;
use tokio_stream::StreamExt;

use crate::harness::*;

const BASE: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

async fn list_metrics(
    rt: &mut cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
) -> Vec<pb::PodSandboxMetrics> {
    rt.list_pod_sandbox_metrics(pb::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
}

/// The value of the series `name` whose label values past the base ones are `extra`.
fn value(metrics: &[pb::Metric], name: &str, extra: &[&str]) -> u64 {
    metrics
        .iter()
        .find(|m| m.name == name && m.label_values[BASE.len()..] == *extra)
        .unwrap_or_else(|| panic!("no {name}{extra:?} in {metrics:?}"))
        .value
        .unwrap()
        .value
}

fn eth0(net: &pb::NetworkUsage) -> (u64, u64) {
    let i = net.default_interface.as_ref().unwrap();
    (i.rx_bytes.unwrap().value, i.tx_bytes.unwrap().value)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_stats_and_end_with_the_pod() {
    let Some(net) = CniNet::new() else {
        return;
    };
    let d = Daemon::start_with(&net.daemon_config()).await;
    import_http_hello(&d);
    import_guest(&d, "wasm32-wasip1", "spin", "localhost/spin:v1");
    let mut rt = d.rt().await;

    // Descriptors: the cAdvisor names, every one with the base labels first.
    let descs = rt
        .list_metric_descriptors(pb::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let keys = |name: &str| {
        descs
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no descriptor {name}"))
            .label_keys
            .clone()
    };
    assert_eq!(keys("container_cpu_usage_seconds_total"), BASE);
    assert_eq!(keys("container_memory_working_set_bytes"), BASE);
    let mut net_keys = BASE.to_vec();
    net_keys.push("interface");
    assert_eq!(keys("container_network_receive_bytes_total"), net_keys);
    assert_eq!(keys("container_network_transmit_bytes_total"), net_keys);

    // A pod on the CNI network: a web server and a busy guest.
    let logs = d.dir.path().join("logs");
    let pod_name = unique("metrics");
    let mut pod_cfg = pod_config(&pod_name, &logs);
    pod_cfg.linux = None; // pod network
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let ip = pod_ip(&mut rt, &pod).await;
    let web = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("web", "localhost/http-hello:v1"),
    )
    .await;
    start(&mut rt, &web).await;
    let spin = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("spin", "localhost/spin:v1"),
    )
    .await;
    start(&mut rt, &spin).await;
    for _ in 0..5 {
        let (code, body) = http_get_ready(&format!("{ip}:8080"), "/healthz", 20).await;
        assert_eq!(code, 200, "{body}");
    }
    // Seconds counters are whole seconds: let the busy guest use more than one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while container_stats(&mut rt, &spin)
        .await
        .cpu
        .unwrap()
        .usage_core_nano_seconds
        .unwrap()
        .value
        < 1_500_000_000
    {
        assert!(Instant::now() < deadline, "spin got no CPU");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Metrics read between two stats readings lie between them.
    let cpu_ns = |s: &pb::ContainerStats| s.cpu.unwrap().usage_core_nano_seconds.unwrap().value;
    let ws = |s: &pb::ContainerStats| s.memory.unwrap().working_set_bytes.unwrap().value;
    let spin0 = container_stats(&mut rt, &spin).await;
    let web0 = container_stats(&mut rt, &web).await;
    let net0 = pod_stats(&mut rt, &pod).await.network.unwrap();
    let all = list_metrics(&mut rt).await;
    let spin1 = container_stats(&mut rt, &spin).await;
    let net1 = pod_stats(&mut rt, &pod).await.network.unwrap();

    let pm = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod)
        .unwrap_or_else(|| panic!("pod {pod} not in {all:?}"));
    let of = |id: &str| {
        &pm.container_metrics
            .iter()
            .find(|c| c.container_id == id)
            .unwrap_or_else(|| panic!("container {id} not in {pm:?}"))
            .metrics
    };
    let (spin_m, web_m) = (of(&spin), of(&web));
    for m in spin_m {
        assert_eq!(m.label_values[0], "spin", "{m:?}");
        assert!(m.label_values[1].ends_with(&spin), "cgroup path: {m:?}");
        assert_eq!(m.label_values[2], "localhost/spin:v1");
        assert_eq!(m.label_values[3], spin);
        assert_eq!(m.label_values[4], "default");
        assert_eq!(m.label_values[5], pod_name);
    }
    let cpu = value(spin_m, "container_cpu_usage_seconds_total", &[]);
    assert!(
        cpu >= 1 && cpu >= cpu_ns(&spin0) / 1_000_000_000 && cpu <= cpu_ns(&spin1) / 1_000_000_000,
        "{cpu} s outside [{}, {}] ns",
        cpu_ns(&spin0),
        cpu_ns(&spin1)
    );
    let user = value(spin_m, "container_cpu_user_seconds_total", &[]);
    let system = value(spin_m, "container_cpu_system_seconds_total", &[]);
    assert!(user + system <= cpu + 1, "{user} + {system} vs {cpu}");
    // The web server's memory barely moves while idle.
    let web_ws = value(web_m, "container_memory_working_set_bytes", &[]);
    assert!(web_ws > 0);
    assert!(
        web_ws.abs_diff(ws(&web0)) < 4 << 20,
        "{web_ws} vs ContainerStats {}",
        ws(&web0)
    );
    assert_eq!(value(web_m, "container_processes", &[]), 1);
    // Network series are pod-level and per interface.
    for m in &pm.metrics {
        assert_eq!(m.label_values[0], "", "pod-level: {m:?}");
        assert_eq!(m.label_values[3], pod);
        assert_eq!(m.label_values[5], pod_name);
    }
    let rx = value(
        &pm.metrics,
        "container_network_receive_bytes_total",
        &["eth0"],
    );
    let tx = value(
        &pm.metrics,
        "container_network_transmit_bytes_total",
        &["eth0"],
    );
    let ((rx0, tx0), (rx1, tx1)) = (eth0(&net0), eth0(&net1));
    assert!(rx > 0 && tx > 0, "traffic was served: rx {rx} tx {tx}");
    assert!((rx0..=rx1).contains(&rx), "rx {rx} outside [{rx0}, {rx1}]");
    assert!((tx0..=tx1).contains(&tx), "tx {tx} outside [{tx0}, {tx1}]");
    assert!(
        value(
            &pm.metrics,
            "container_network_receive_packets_total",
            &["eth0"]
        ) > 0
    );

    // io/psi in ContainerStats: where the cgroup has them. cgroup v1 (this host): I/O
    // accounting through blkio, no PSI.
    if std::path::Path::new("/sys/fs/cgroup/blkio/cgroup.procs").exists() {
        assert!(spin0.io.is_some(), "blkio accounting: {spin0:?}");
        assert!(spin0.io.unwrap().psi.is_none());
        assert!(spin0.cpu.unwrap().psi.is_none());
        assert!(!spin_m.iter().any(|m| m.name.contains("pressure")));
    }

    // The streaming form carries the same pods.
    let mut streamed: Vec<String> = rt
        .stream_pod_sandbox_metrics(pb::StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .map(|m| m.unwrap().pod_sandbox_metrics)
        .collect::<Vec<_>>()
        .await
        .concat()
        .into_iter()
        .map(|p| p.pod_sandbox_id)
        .collect();
    streamed.sort();
    let mut listed: Vec<String> = all.iter().map(|p| p.pod_sandbox_id.clone()).collect();
    listed.sort();
    assert_eq!(streamed, listed);

    // A removed pod's series are gone, containers included.
    remove_pod(&mut rt, &pod).await;
    let after = list_metrics(&mut rt).await;
    assert!(
        !after.iter().any(|p| p.pod_sandbox_id == pod
            || p.container_metrics
                .iter()
                .any(|c| c.container_id == web || c.container_id == spin)),
        "{after:?}"
    );
    d.shutdown().await;
}
