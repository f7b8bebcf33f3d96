//! ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics: cAdvisor's
//! container series, from the same cgroup and `/proc/<pid>/net/dev` readings as the stats
//! RPCs, for the kubelet's `/metrics/cadvisor` when its `PodAndContainerStatsFromCRI` gate is
//! on (the kubelet then asks the runtime instead of cAdvisor).
//!
//! The kubelet asks for the descriptors once, when it starts, and turns each into a
//! Prometheus family whose label names are the descriptor's `label_keys`; every scrape then
//! asks for the metrics and drops any whose name has no descriptor. So the descriptors are a
//! fixed table ([`FAMILIES`]), and each metric carries exactly its family's label values, in
//! the same order (a mismatch makes the kubelet drop the series).
//!
//! Labels are the ones the kubelet gives cAdvisor's series: `container` (the container's
//! name; empty on pod-level series), `id` (the cgroup path), `image`, `name` (the container
//! ID, or the sandbox ID on pod-level series), `namespace`, `pod`; plus `interface` on
//! network series and `device` on I/O series. Network counters are pod-level (the pod's
//! network namespace is shared by its containers), everything else is per container.
//!
//! A CRI metric value is an unsigned integer, so the `*_seconds_total` counters are whole
//! seconds (containerd and CRI-O report them the same way); the nanoseconds are in
//! ContainerStats. Metrics are gathered live, so their timestamp is 0, as the CRI asks.

use std::sync::Arc;

use cri::v1 as pb;

use super::list_stream::{self, RpcStream};
use crate::cgroups::{Psi, Stats};
use crate::network::stats::InterfaceUsage;
use crate::runtime::{PodSample, Result, Runtime, RuntimeError};

/// Whether a family only goes up or may go down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family served.
#[derive(Debug)]
pub struct Family {
    /// cAdvisor's name for it.
    pub name: &'static str,
    help: &'static str,
    kind: Kind,
    /// Label keys after [`BASE_LABELS`].
    extra: &'static [&'static str],
}

/// The labels of every series, in this order.
pub const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: Kind::Counter,
        extra: &[],
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        help,
        kind: Kind::Gauge,
        extra: &[],
    }
}

const fn with(f: Family, extra: &'static [&'static str]) -> Family {
    Family { extra, ..f }
}

const IF: &[&str] = &["interface"];
const DEV: &[&str] = &["device"];

const CPU_USAGE: Family = counter(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
);
const CPU_USER: Family = counter(
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds.",
);
const CPU_SYSTEM: Family = counter(
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds.",
);
const CFS_PERIODS: Family = counter(
    "container_cpu_cfs_periods_total",
    "Number of elapsed enforcement period intervals.",
);
const CFS_THROTTLED_PERIODS: Family = counter(
    "container_cpu_cfs_throttled_periods_total",
    "Number of throttled period intervals.",
);
const CFS_THROTTLED_SECONDS: Family = counter(
    "container_cpu_cfs_throttled_seconds_total",
    "Total time duration the container has been throttled.",
);
const MEM_USAGE: Family = gauge(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
);
const MEM_WORKING_SET: Family = gauge(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
);
const MEM_RSS: Family = gauge("container_memory_rss", "Size of RSS in bytes.");
const MEM_CACHE: Family = gauge(
    "container_memory_cache",
    "Number of bytes of page cache memory.",
);
const MEM_MAPPED: Family = gauge(
    "container_memory_mapped_file",
    "Size of memory mapped files in bytes.",
);
const MEM_SWAP: Family = gauge("container_memory_swap", "Container swap usage in bytes.");
const MEM_MAX_USAGE: Family = gauge(
    "container_memory_max_usage_bytes",
    "Maximum memory usage recorded in bytes.",
);
const MEM_FAILCNT: Family = counter(
    "container_memory_failcnt",
    "Number of memory usage hits limits (cgroup v1 only).",
);
const MEM_FAILURES: Family = with(
    counter(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
    ),
    &["failure_type", "scope"],
);
const OOM_EVENTS: Family = counter(
    "container_oom_events_total",
    "Count of out of memory events observed for the container.",
);
const SPEC_MEMORY_LIMIT: Family = gauge(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container (0: unlimited).",
);
const PROCESSES: Family = gauge(
    "container_processes",
    "Number of processes running inside the container.",
);
const START_TIME: Family = gauge(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
);
const FS_READ_BYTES: Family = with(
    counter(
        "container_fs_reads_bytes_total",
        "Cumulative count of bytes read.",
    ),
    DEV,
);
const FS_WRITE_BYTES: Family = with(
    counter(
        "container_fs_writes_bytes_total",
        "Cumulative count of bytes written.",
    ),
    DEV,
);
const FS_READS: Family = with(
    counter(
        "container_fs_reads_total",
        "Cumulative count of reads completed.",
    ),
    DEV,
);
const FS_WRITES: Family = with(
    counter(
        "container_fs_writes_total",
        "Cumulative count of writes completed.",
    ),
    DEV,
);
const BLKIO_USAGE: Family = with(
    counter(
        "container_blkio_device_usage_total",
        "Blkio device bytes usage.",
    ),
    &["device", "major", "minor", "operation"],
);
const PSI_CPU_SOME: Family = counter(
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion.",
);
const PSI_CPU_FULL: Family = counter(
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion.",
);
const PSI_MEM_SOME: Family = counter(
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion.",
);
const PSI_MEM_FULL: Family = counter(
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion.",
);
const PSI_IO_SOME: Family = counter(
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion.",
);
const PSI_IO_FULL: Family = counter(
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion.",
);
const NET_RX_BYTES: Family = with(
    counter(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
    ),
    IF,
);
const NET_RX_PACKETS: Family = with(
    counter(
        "container_network_receive_packets_total",
        "Cumulative count of packets received.",
    ),
    IF,
);
const NET_RX_DROPPED: Family = with(
    counter(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
    ),
    IF,
);
const NET_RX_ERRORS: Family = with(
    counter(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving.",
    ),
    IF,
);
const NET_TX_BYTES: Family = with(
    counter(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
    ),
    IF,
);
const NET_TX_PACKETS: Family = with(
    counter(
        "container_network_transmit_packets_total",
        "Cumulative count of packets transmitted.",
    ),
    IF,
);
const NET_TX_DROPPED: Family = with(
    counter(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
    ),
    IF,
);
const NET_TX_ERRORS: Family = with(
    counter(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
    ),
    IF,
);

/// Every family served, in the order ListMetricDescriptors lists them.
pub const FAMILIES: &[&Family] = &[
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &CFS_PERIODS,
    &CFS_THROTTLED_PERIODS,
    &CFS_THROTTLED_SECONDS,
    &MEM_USAGE,
    &MEM_WORKING_SET,
    &MEM_RSS,
    &MEM_CACHE,
    &MEM_MAPPED,
    &MEM_SWAP,
    &MEM_MAX_USAGE,
    &MEM_FAILCNT,
    &MEM_FAILURES,
    &OOM_EVENTS,
    &SPEC_MEMORY_LIMIT,
    &PROCESSES,
    &START_TIME,
    &FS_READ_BYTES,
    &FS_WRITE_BYTES,
    &FS_READS,
    &FS_WRITES,
    &BLKIO_USAGE,
    &PSI_CPU_SOME,
    &PSI_CPU_FULL,
    &PSI_MEM_SOME,
    &PSI_MEM_FULL,
    &PSI_IO_SOME,
    &PSI_IO_FULL,
    &NET_RX_BYTES,
    &NET_RX_PACKETS,
    &NET_RX_DROPPED,
    &NET_RX_ERRORS,
    &NET_TX_BYTES,
    &NET_TX_PACKETS,
    &NET_TX_DROPPED,
    &NET_TX_ERRORS,
];

/// Pods per StreamPodSandboxMetrics message. A pod's metrics take a few KiB per container
/// (about 40 series of 6–10 labels), so 16 pods stay far below gRPC's 4 MiB message limit
/// even with many containers each.
const PODS_PER_MESSAGE: usize = 16;

/// Whole seconds of a nanosecond count.
fn secs(ns: u64) -> u64 {
    ns / 1_000_000_000
}

/// The metrics of one object (a container, or a pod's own series), each carrying the same
/// base label values.
struct Series {
    base: [String; 6],
    out: Vec<pb::Metric>,
}

impl Series {
    fn new(base: [String; 6]) -> Self {
        Self {
            base,
            out: Vec::new(),
        }
    }

    fn push(&mut self, f: &Family, value: u64, extra: &[&str]) {
        debug_assert_eq!(extra.len(), f.extra.len(), "{}", f.name);
        let mut label_values = Vec::with_capacity(BASE_LABELS.len() + extra.len());
        label_values.extend(self.base.iter().cloned());
        label_values.extend(extra.iter().map(|v| v.to_string()));
        self.out.push(pb::Metric {
            name: f.name.to_owned(),
            timestamp: 0,
            metric_type: match f.kind {
                Kind::Counter => pb::MetricType::Counter,
                Kind::Gauge => pb::MetricType::Gauge,
            } as i32,
            label_values,
            value: Some(pb::UInt64Value { value }),
        });
    }

    fn pressure(&mut self, p: Option<Psi>, some: &Family, full: &Family) {
        if let Some(p) = p {
            self.push(some, p.some.total_us / 1_000_000, &[]);
            if let Some(f) = p.full {
                self.push(full, f.total_us / 1_000_000, &[]);
            }
        }
    }

    /// The container series of one cgroup sample.
    fn container(&mut self, s: &Stats, started_at_ns: i64) {
        self.push(&CPU_USAGE, secs(s.cpu_usage_ns), &[]);
        self.push(&CPU_USER, secs(s.cpu_user_ns), &[]);
        self.push(&CPU_SYSTEM, secs(s.cpu_system_ns), &[]);
        let t = &s.cpu_throttling;
        self.push(&CFS_PERIODS, t.nr_periods, &[]);
        self.push(&CFS_THROTTLED_PERIODS, t.nr_throttled, &[]);
        self.push(&CFS_THROTTLED_SECONDS, secs(t.throttled_time_ns), &[]);
        self.push(&MEM_USAGE, s.memory_usage, &[]);
        self.push(&MEM_WORKING_SET, s.working_set, &[]);
        self.push(&MEM_RSS, s.rss, &[]);
        self.push(&MEM_CACHE, s.cache, &[]);
        self.push(&MEM_MAPPED, s.mapped_file, &[]);
        self.push(&MEM_SWAP, s.swap, &[]);
        if let Some(v) = s.max_usage {
            self.push(&MEM_MAX_USAGE, v, &[]);
        }
        if let Some(v) = s.failcnt {
            self.push(&MEM_FAILCNT, v, &[]);
        }
        // A container's cgroup has no children, so its own and its hierarchy's faults are
        // the same counters; cAdvisor reports both scopes.
        for scope in ["container", "hierarchy"] {
            self.push(&MEM_FAILURES, s.page_faults, &["pgfault", scope]);
            self.push(&MEM_FAILURES, s.major_page_faults, &["pgmajfault", scope]);
        }
        self.push(&OOM_EVENTS, s.oom_kills, &[]);
        self.push(&SPEC_MEMORY_LIMIT, s.memory_limit.unwrap_or(0), &[]);
        self.push(&PROCESSES, s.processes, &[]);
        self.push(&START_TIME, secs(started_at_ns.max(0) as u64), &[]);
        for d in s.io.iter().flatten() {
            let dev = d.device_name();
            self.push(&FS_READ_BYTES, d.read_bytes, &[&dev]);
            self.push(&FS_WRITE_BYTES, d.write_bytes, &[&dev]);
            self.push(&FS_READS, d.reads, &[&dev]);
            self.push(&FS_WRITES, d.writes, &[&dev]);
            let (major, minor) = (d.major.to_string(), d.minor.to_string());
            self.push(&BLKIO_USAGE, d.read_bytes, &[&dev, &major, &minor, "Read"]);
            self.push(
                &BLKIO_USAGE,
                d.write_bytes,
                &[&dev, &major, &minor, "Write"],
            );
        }
        let p = s.pressure;
        self.pressure(p.cpu, &PSI_CPU_SOME, &PSI_CPU_FULL);
        self.pressure(p.memory, &PSI_MEM_SOME, &PSI_MEM_FULL);
        self.pressure(p.io, &PSI_IO_SOME, &PSI_IO_FULL);
    }

    /// The network series of a pod's interfaces.
    fn network(&mut self, ifaces: &[InterfaceUsage]) {
        for i in ifaces {
            let n: &[&str] = &[&i.name];
            self.push(&NET_RX_BYTES, i.rx_bytes, n);
            self.push(&NET_RX_PACKETS, i.rx_packets, n);
            self.push(&NET_RX_DROPPED, i.rx_dropped, n);
            self.push(&NET_RX_ERRORS, i.rx_errors, n);
            self.push(&NET_TX_BYTES, i.tx_bytes, n);
            self.push(&NET_TX_PACKETS, i.tx_packets, n);
            self.push(&NET_TX_DROPPED, i.tx_dropped, n);
            self.push(&NET_TX_ERRORS, i.tx_errors, n);
        }
    }
}

/// The CRI metrics of one pod sample. Blocking (device names are read from sysfs).
fn pod_metrics(s: PodSample) -> pb::PodSandboxMetrics {
    let spec = &s.pod.meta().spec;
    let mut own = Series::new([
        String::new(),
        spec.cgroup_parent.clone(),
        String::new(),
        s.pod.meta().id.clone(),
        spec.namespace.clone(),
        spec.name.clone(),
    ]);
    own.network(s.network.as_deref().unwrap_or_default());
    let container_metrics = s
        .containers
        .iter()
        .map(|(c, stats)| {
            let mut series = Series::new([
                c.meta().spec.name.clone(),
                c.meta().cgroup_path.clone(),
                c.meta().spec.image.clone(),
                c.meta().id.clone(),
                spec.namespace.clone(),
                spec.name.clone(),
            ]);
            series.container(stats, c.snapshot().started_at());
            pb::ContainerMetrics {
                container_id: c.meta().id.clone(),
                metrics: series.out,
            }
        })
        .collect();
    pb::PodSandboxMetrics {
        pod_sandbox_id: s.pod.meta().id.clone(),
        metrics: own.out,
        container_metrics,
    }
}

/// ListMetricDescriptors: the fixed table.
pub async fn descriptors(
    _r: pb::ListMetricDescriptorsRequest,
) -> Result<pb::ListMetricDescriptorsResponse> {
    Ok(pb::ListMetricDescriptorsResponse {
        descriptors: FAMILIES
            .iter()
            .map(|f| pb::MetricDescriptor {
                name: f.name.to_owned(),
                help: f.help.to_owned(),
                label_keys: BASE_LABELS
                    .iter()
                    .chain(f.extra)
                    .map(|k| k.to_string())
                    .collect(),
            })
            .collect(),
    })
}

/// Every ready pod's metrics, read on the blocking pool (cgroup and proc files).
async fn collect(rt: &Arc<Runtime>) -> Result<Vec<pb::PodSandboxMetrics>> {
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || rt.pod_samples().into_iter().map(pod_metrics).collect())
        .await
        .map_err(RuntimeError::task(
            "read metrics",
            "the ready pod sandboxes",
        ))
}

/// ListPodSandboxMetrics.
pub async fn list(
    rt: &Arc<Runtime>,
    _r: pb::ListPodSandboxMetricsRequest,
) -> Result<pb::ListPodSandboxMetricsResponse> {
    Ok(pb::ListPodSandboxMetricsResponse {
        pod_metrics: collect(rt).await?,
    })
}

/// StreamPodSandboxMetrics: the same list, [`PODS_PER_MESSAGE`] pods a message.
pub async fn stream(
    rt: &Arc<Runtime>,
    _r: pb::StreamPodSandboxMetricsRequest,
) -> Result<RpcStream<pb::StreamPodSandboxMetricsResponse>> {
    Ok(list_stream::chunked_by(
        collect(rt).await?,
        PODS_PER_MESSAGE,
        |pod_sandbox_metrics| pb::StreamPodSandboxMetricsResponse {
            pod_sandbox_metrics,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{CpuThrottling, DeviceIo, Pressure, PsiData};

    fn base() -> [String; 6] {
        ["c", "/kubepods/p/x", "img", "x", "ns", "p"].map(String::from)
    }

    #[tokio::test]
    async fn descriptors_are_unique_and_carry_the_base_labels() {
        let d = descriptors(Default::default()).await.unwrap().descriptors;
        assert_eq!(d.len(), FAMILIES.len());
        let mut names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), d.len(), "duplicate names");
        for d in &d {
            assert_eq!(
                d.label_keys[..6],
                BASE_LABELS.map(String::from),
                "{}",
                d.name
            );
            assert!(d.name.starts_with("container_") && !d.help.is_empty());
        }
        for want in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_network_receive_bytes_total",
            "container_network_transmit_bytes_total",
        ] {
            assert!(names.contains(&want), "{want}");
        }
    }

    /// Every metric names a family and has as many label values as it has keys, or the
    /// kubelet drops it.
    fn check_against_descriptors(out: &[pb::Metric]) {
        for m in out {
            let f = FAMILIES
                .iter()
                .find(|f| f.name == m.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
            assert_eq!(
                m.label_values.len(),
                BASE_LABELS.len() + f.extra.len(),
                "{}",
                m.name
            );
            assert_eq!(m.timestamp, 0);
            let want = match f.kind {
                Kind::Counter => pb::MetricType::Counter,
                Kind::Gauge => pb::MetricType::Gauge,
            };
            assert_eq!(m.metric_type, want as i32, "{}", m.name);
        }
    }

    fn value(out: &[pb::Metric], name: &str, extra: &[&str]) -> Option<u64> {
        out.iter()
            .find(|m| m.name == name && m.label_values[6..] == *extra)
            .map(|m| m.value.unwrap().value)
    }

    #[test]
    fn container_series_from_a_v2_sample() {
        let psi = |us| Psi {
            some: PsiData {
                total_us: us,
                ..Default::default()
            },
            full: None,
        };
        let s = Stats {
            cpu_usage_ns: 2_999_999_999,
            cpu_user_ns: 2_000_000_000,
            cpu_system_ns: 999_999_999,
            cpu_throttling: CpuThrottling {
                nr_periods: 10,
                nr_throttled: 3,
                throttled_time_ns: 5_000_000_000,
            },
            memory_usage: 100,
            working_set: 80,
            memory_limit: Some(1 << 20),
            pids_current: 1,
            io: Some(vec![DeviceIo {
                major: 4095,
                minor: 7,
                read_bytes: 11,
                write_bytes: 22,
                reads: 1,
                writes: 2,
            }]),
            pressure: Pressure {
                cpu: Some(psi(3_500_000)),
                memory: None,
                io: Some(psi(1_000_000)),
            },
            ..Default::default()
        };
        let mut series = Series::new(base());
        series.container(&s, 1_700_000_000_123_456_789);
        let out = series.out;
        check_against_descriptors(&out);
        assert!(out.iter().all(|m| m.label_values[..6] == base()));
        let v = |name, extra: &[&str]| value(&out, name, extra);
        assert_eq!(v("container_cpu_usage_seconds_total", &[]), Some(2));
        assert_eq!(v("container_cpu_user_seconds_total", &[]), Some(2));
        assert_eq!(v("container_cpu_system_seconds_total", &[]), Some(0));
        assert_eq!(v("container_cpu_cfs_throttled_seconds_total", &[]), Some(5));
        assert_eq!(v("container_memory_working_set_bytes", &[]), Some(80));
        assert_eq!(v("container_spec_memory_limit_bytes", &[]), Some(1 << 20));
        assert_eq!(v("container_start_time_seconds", &[]), Some(1_700_000_000));
        assert_eq!(v("container_memory_failcnt", &[]), None, "v2: no failcnt");
        assert_eq!(v("container_fs_reads_bytes_total", &["4095:7"]), Some(11));
        assert_eq!(
            v(
                "container_blkio_device_usage_total",
                &["4095:7", "4095", "7", "Write"]
            ),
            Some(22)
        );
        assert_eq!(
            v("container_pressure_cpu_waiting_seconds_total", &[]),
            Some(3)
        );
        assert_eq!(
            v("container_pressure_cpu_stalled_seconds_total", &[]),
            None,
            "no full line"
        );
        assert_eq!(
            v("container_pressure_memory_waiting_seconds_total", &[]),
            None
        );
        assert_eq!(
            v("container_pressure_io_waiting_seconds_total", &[]),
            Some(1)
        );
    }

    #[test]
    fn v1_sample_has_no_psi_series_and_network_is_per_interface() {
        let s = Stats {
            failcnt: Some(4),
            ..Default::default()
        };
        let mut series = Series::new(base());
        series.container(&s, 0);
        series.network(&[
            InterfaceUsage {
                name: "eth0".into(),
                rx_bytes: 5,
                tx_bytes: 6,
                ..Default::default()
            },
            InterfaceUsage {
                name: "net1".into(),
                rx_bytes: 7,
                ..Default::default()
            },
        ]);
        let out = series.out;
        check_against_descriptors(&out);
        assert!(!out.iter().any(|m| m.name.contains("pressure")));
        assert!(!out.iter().any(|m| m.name.starts_with("container_fs_")));
        assert_eq!(value(&out, "container_memory_failcnt", &[]), Some(4));
        assert_eq!(
            value(&out, "container_network_receive_bytes_total", &["eth0"]),
            Some(5)
        );
        assert_eq!(
            value(&out, "container_network_transmit_bytes_total", &["eth0"]),
            Some(6)
        );
        assert_eq!(
            value(&out, "container_network_receive_bytes_total", &["net1"]),
            Some(7)
        );
    }
}
