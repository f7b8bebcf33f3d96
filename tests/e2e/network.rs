//! Pod networking through real CNI plugins (bridge + host-local + loopback + portmap) on a
//! bridge and subnet made for this test, with no route or NAT to anything outside the
//! machine. The portmap test runs the daemon in a network namespace of its own, so the
//! plugin's iptables rules land in that namespace's tables, not the host's.

use std::path::{Path, PathBuf};
use std::process::Command;

use cri::v1 as pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_distinct_ips_and_release_them() {
    let Some(net) = CniNet::new() else {
        return;
    };
    let d = Daemon::start_with(&net.daemon_config()).await;
    let layout = d.dir.path().join("http-layout");
    wasm_artifact_layout(&layout, &http_guest(), "localhost/http-hello:v1");
    d.import(&layout, "localhost/http-hello:v1");
    import_guest(&d, "wasm32-wasip2", "tcpecho", "localhost/tcpecho:v1");
    import_guest(&d, "wasm32-wasip2", "tcpclient", "localhost/tcpclient:v1");
    let mut rt = d.rt().await;
    let s = rt
        .status(pb::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        s.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status)
    );

    let netns_dir = d.dir.path().join("state/netns");
    let mut ips: Vec<String> = Vec::new();
    for round in 0..50 {
        let mut pods = Vec::new();
        for i in 0..2 {
            let mut cfg = pod_config(&format!("net-{round}-{i}"), &d.dir.path().join("logs"));
            cfg.linux = None; // pod network
            let pod = run_pod(&mut rt, cfg).await;
            let ip = pod_ip(&mut rt, &pod).await;
            assert!(ip.starts_with(&net.prefix), "ip {ip:?}");
            if round == 0 {
                // The pod is reachable from the host over the bridge.
                let ok = Command::new("ping")
                    .args(["-c", "1", "-W", "2", &ip])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(true);
                assert!(ok, "ping {ip}");
            }
            if round == 0 && i == 0 {
                // A wasi:http component in the pod, on the pod IP and the default port, probed
                // from the host the way the kubelet's httpGet and tcpSocket probes are.
                let pod_cfg = pod_config(&format!("net-{round}-{i}"), &d.dir.path().join("logs"));
                let c = create(
                    &mut rt,
                    &pod,
                    &pod_cfg,
                    container_config("web", "localhost/http-hello:v1"),
                )
                .await;
                start(&mut rt, &c).await;
                let (code, body) = http_get_ready(&format!("{ip}:8080"), "/healthz", 20).await;
                assert_eq!(code, 200, "{body}");
                assert!(body.contains("/healthz"));
                assert_eq!(
                    http_get(&format!("{ip}:8080"), "/fail").await.unwrap().0,
                    500,
                    "unhealthy answer"
                );
                assert!(
                    tokio::net::TcpStream::connect(format!("{ip}:8080"))
                        .await
                        .is_ok()
                );
                assert!(
                    tokio::net::TcpStream::connect(format!("{ip}:8081"))
                        .await
                        .is_err(),
                    "nothing listens on 8081"
                );
                // The pod's traffic shows in PodSandboxStats (the kubelet's pods[].network).
                let net_stats = pod_stats(&mut rt, &pod)
                    .await
                    .network
                    .expect("pod network stats");
                let eth0 = net_stats.default_interface.unwrap();
                assert_eq!(eth0.name, "eth0");
                assert!(eth0.rx_bytes.unwrap().value > 0 && eth0.tx_bytes.unwrap().value > 0);
                // A TCP echo component in the same pod (WASI 0.2 sockets).
                let mut echo = container_config("echo", "localhost/tcpecho:v1");
                echo.args = vec!["7000".into()];
                let c = create(&mut rt, &pod, &pod_cfg, echo).await;
                start(&mut rt, &c).await;
                wait_log(&d.dir.path().join("logs/echo/0.log"), "listening", 10).await;
            }
            if round == 0 && i == 1 {
                // Pod B's guest reaches pod A's echo server at A's IP over the bridge.
                let a_ip = ips[0].clone();
                let logs = d.dir.path().join("logs");
                let pod_cfg = pod_config(&format!("net-{round}-{i}"), &logs);
                let mut client = container_config("client", "localhost/tcpclient:v1");
                client.args = vec![format!("{a_ip}:7000")];
                let c = create(&mut rt, &pod, &pod_cfg, client).await;
                start(&mut rt, &c).await;
                let st = wait_exited(&mut rt, &c, 20).await;
                let log = std::fs::read_to_string(logs.join("client/0.log")).unwrap_or_default();
                assert_eq!(st.exit_code, 0, "{st:?} {log}");
                assert!(log.contains("echo: ping from wasm"), "{log}");
            }
            ips.push(ip);
            pods.push(pod);
        }
        assert_ne!(
            ips[ips.len() - 1],
            ips[ips.len() - 2],
            "two pods share an IP"
        );
        for pod in pods {
            stop_pod(&mut rt, &pod).await;
            stop_pod(&mut rt, &pod).await;
            assert_eq!(pod_ip(&mut rt, &pod).await, "");
            remove_stopped_pod(&mut rt, &pod).await;
        }
    }
    // 100 pods later: every IP released, every namespace gone, no veth left on the bridge.
    let ports = Command::new("ip")
        .args(["-o", "link", "show", "master", &net.bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ports.stdout).trim().is_empty(),
        "veths left: {}",
        String::from_utf8_lossy(&ports.stdout)
    );
    let allocated: Vec<_> = std::fs::read_dir(net.ipam_dir.join(CniNet::NAME))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(allocated.is_empty(), "IPs still allocated: {allocated:?}");
    let left: Vec<_> = std::fs::read_dir(&netns_dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "netns left: {left:?}");
    d.shutdown().await;
}

/// A network namespace made for one test (`ip netns add`), deleted with everything in it
/// (bridge, veths, iptables rules) on drop.
struct TestNetns(String);

impl TestNetns {
    fn new() -> TestNetns {
        let name = format!("wcpm{}", &wasmcri::ids::new_id()[..8]);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = TestNetns(name);
        run_ok(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }

    /// `iptables -t nat -S` inside the namespace.
    fn nat_rules(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "iptables", "-t", "nat", "-S"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An HTTP GET made from inside the namespace (from a thread that joined it).
    fn http_get(&self, addr: String, path: &'static str) -> std::io::Result<(u16, String)> {
        let ns = std::fs::File::open(self.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(http_get(&addr, path))
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod's `port_mappings` reach its wasi:http component through the portmap plugin's DNAT
/// rules, and StopPodSandbox (CNI DEL) takes those rules away again.
#[tokio::test(flavor = "multi_thread")]
async fn host_port_reaches_the_pod_through_portmap() {
    if Command::new("iptables").arg("--version").output().is_err() {
        eprintln!("skipping: iptables not installed");
        return;
    }
    let Some(net) = CniNet::with_portmap() else {
        return;
    };
    // The bridge is made inside `ns` by the daemon's plugins and goes away with it.
    let ns = TestNetns::new();
    let d = Daemon::start_in_netns(&net.daemon_config(), &ns.path()).await;
    let layout = d.dir.path().join("http-layout");
    wasm_artifact_layout(&layout, &http_guest(), "localhost/http-hello:v1");
    d.import(&layout, "localhost/http-hello:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut cfg = pod_config(&unique("portmap"), &logs);
    cfg.linux = None; // pod network
    cfg.port_mappings = vec![tcp_mapping(8080, 18080)];
    let pod = run_pod(&mut rt, cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &cfg,
        container_config("web", "localhost/http-hello:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    let ip = pod_ip(&mut rt, &pod).await;
    let rules = ns.nat_rules();
    assert!(
        rules.contains("18080") && rules.contains(&ip),
        "no DNAT rule for the pod: {rules}"
    );
    // The node's address on the bridge, port 18080 → the pod's 8080.
    let gateway = format!("{}1:18080", net.prefix);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (code, body) = loop {
        match ns.http_get(gateway.clone(), "/healthz") {
            Ok(r) => break r,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{gateway}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(code, 200, "{body}");

    stop_pod(&mut rt, &pod).await;
    let rules = ns.nat_rules();
    assert!(
        !rules.contains("18080") && !rules.contains(&ip),
        "portmap rules left after StopPodSandbox: {rules}"
    );
    assert!(ns.http_get(gateway, "/healthz").is_err());
    d.shutdown().await;
}
