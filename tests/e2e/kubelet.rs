//! Requests shaped the way a stock kubelet sends them, where they differ from hand-written
//! ones: found by running kubelet v1.36 against wasmcri.

use cri::v1 as pb;

use crate::harness::*;

/// The page sizes the kernel offers (`/sys/kernel/mm/hugepages/hugepages-2048kB` → `2MB`),
/// named the way the kubelet names them in `HugepageLimit.page_size`.
fn kernel_hugepage_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let kb: u64 = e
                        .file_name()
                        .to_str()?
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some(if kb >= 1 << 20 {
                        format!("{}GB", kb >> 20)
                    } else {
                        format!("{}MB", kb >> 10)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if sizes.is_empty() {
        sizes.push("2MB".into());
    }
    sizes
}

/// A pod without a RuntimeClass (handler `""`), whose spec lists a `containerPort` but no
/// `hostPort` — the kubelet forwards it as a port mapping with host port 0 — on a network
/// whose conflist chains `portmap`; and a container with the zero hugepage limit the kubelet
/// sets for every page size the kernel knows, hugetlb controller mounted or not.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_defaults_port_list_and_zero_hugepage_limits() {
    let Some(net) = CniNet::with_portmap() else {
        return;
    };
    let d = Daemon::start_with(&net.daemon_config()).await;
    import_guest(&d, "wasm32-wasip1", "hello", "localhost/hello:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");

    let mut pod_cfg = pod_config(&unique("kubelet"), &logs);
    pod_cfg.linux = None; // pod network
    pod_cfg.port_mappings = vec![tcp_mapping(8080, 0)];
    let pod = rt
        .run_pod_sandbox(pb::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox with a containerPort and no hostPort")
        .into_inner()
        .pod_sandbox_id;

    let mut cfg = container_config("hello", "localhost/hello:v1");
    cfg.linux = Some(pb::LinuxContainerConfig {
        resources: Some(pb::LinuxContainerResources {
            hugepage_limits: kernel_hugepage_sizes()
                .into_iter()
                .map(|page_size| pb::HugepageLimit {
                    page_size,
                    limit: 0,
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    let st = wait_exited(&mut rt, &c, 20).await;
    assert_eq!(st.exit_code, 0, "{st:?}");

    // CNI DEL goes through the same portmap configuration.
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
