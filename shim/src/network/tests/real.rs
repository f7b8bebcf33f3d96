//! Real namespaces and the host's standard CNI plugins (`bridge`, `host-local`, `loopback`):
//! each test makes its own bridge `wcri<hex>` and a 10.250.<n>.0 subnet, and removes them.

use std::collections::HashSet;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::super::*;
use super::attachment;

const PLUGIN_DIR: &str = "/usr/lib/cni";

fn usable() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: not root");
        return false;
    }
    if !Path::new(PLUGIN_DIR).join("bridge").exists() {
        eprintln!("skipping: no CNI plugins in {PLUGIN_DIR}");
        return false;
    }
    true
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A third octet in 10.250.x.0 that no other test of this process uses and the host has no
/// route for.
fn free_octet() -> u8 {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let _ = NEXT.compare_exchange(
        0,
        rand::random::<u8>() | 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let o = NEXT.fetch_add(1, Ordering::SeqCst);
        if ip(&["route", "show", &format!("10.250.{o}.0/24")])
            .trim()
            .is_empty()
            && ip(&["-4", "addr", "show"])
                .find(&format!("10.250.{o}."))
                .is_none()
        {
            return o;
        }
    }
}

/// A private network: temp dirs, a conflist for a bridge of our own, namespaces made here.
/// Dropping it deletes the bridge and any namespace left.
struct Net {
    t: tempfile::TempDir,
    bridge: String,
    octet: u8,
    name: String,
    cni: Cni,
}

impl Net {
    fn new(prefix_len: u8) -> Net {
        let t = tempfile::tempdir().unwrap();
        let bridge = format!("wcri{:04x}", rand::random::<u16>());
        let octet = free_octet();
        let name = format!("wasmcri-test-{bridge}");
        let conf = t.path().join("net.d");
        std::fs::create_dir_all(&conf).unwrap();
        let list = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.250.{octet}.0/{prefix_len}")}]],
                        "dataDir": t.path().join("ipam"),
                    }
                },
                {"type": "loopback"}
            ]
        });
        std::fs::write(conf.join("10-test.conflist"), list.to_string()).unwrap();
        let cni = Cni::new(CniConfig {
            conf_dir: conf,
            bin_dirs: vec![PLUGIN_DIR.into()],
            cache_dir: t.path().join("cache"),
            plugin_timeout: Duration::from_secs(30),
        });
        Net {
            t,
            bridge,
            octet,
            name,
            cni,
        }
    }

    fn nsdir(&self) -> PathBuf {
        self.t.path().join("netns")
    }

    /// IPs host-local still has allocated.
    fn allocations(&self) -> Vec<String> {
        std::fs::read_dir(self.t.path().join("ipam").join(&self.name))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn veths(&self) -> String {
        ip(&["-o", "link", "show", "master", &self.bridge])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(d) = std::fs::read_dir(self.nsdir()) {
            for e in d.flatten() {
                let _ = netns::remove(&e.path());
            }
        }
        if !ip(&["link", "show", &self.bridge]).is_empty() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}

fn in_subnet(ip: &IpAddr, octet: u8) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[..3] == [10, 250, octet])
}

#[test]
fn netns_create_run_in_remove() {
    if !usable() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let p = netns::create(t.path(), "a").unwrap();
    assert!(netns::is_namespace(&p));
    assert!(matches!(
        netns::create(t.path(), "a"),
        Err(NetworkError::Netns { .. })
    ));
    let host_ino = std::fs::metadata("/proc/self/ns/net").unwrap();
    let (inner, lo) = netns::run_in(&p, || {
        let m = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        // lo is up: binding and connecting to 127.0.0.1 works in the new namespace.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ok = TcpStream::connect(l.local_addr().unwrap()).is_ok();
        (m, ok)
    })
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(inner.ino(), host_ino.ino(), "a different namespace");
    assert!(lo, "loopback up");
    netns::remove(&p).unwrap();
    assert!(!p.exists());
    netns::remove(&p).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_get_distinct_ips_and_talk_over_the_bridge() {
    if !usable() {
        return;
    }
    let net = Net::new(24);
    let ns_a = netns::create(&net.nsdir(), "a").unwrap();
    let ns_b = netns::create(&net.nsdir(), "b").unwrap();
    let att_a = attachment("pod-a", &ns_a);
    let att_b = attachment("pod-b", &ns_b);
    let ra = net.cni.add(&att_a).await.unwrap();
    let rb = net.cni.add(&att_b).await.unwrap();
    assert_eq!(ra.ips.len(), 1, "{:?}", ra.raw);
    assert_eq!(rb.ips.len(), 1, "{:?}", rb.raw);
    let (ip_a, ip_b) = (ra.ips[0], rb.ips[0]);
    assert_ne!(ip_a, ip_b);
    assert!(in_subnet(&ip_a, net.octet) && in_subnet(&ip_b, net.octet));
    assert_eq!(
        ra.ip_configs[0].gateway,
        Some(IpAddr::V4(Ipv4Addr::new(10, 250, net.octet, 1)))
    );
    assert!(
        ra.interfaces
            .iter()
            .any(|i| i.name == "eth0" && i.sandbox.is_some())
    );
    assert_eq!(net.allocations().len(), 2);
    assert_eq!(net.veths().lines().count(), 2);

    // A listener in A, a client in B.
    let listener = netns::run_in(&ns_a, || TcpListener::bind("0.0.0.0:0").unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).unwrap();
        s.write_all(b"pong").unwrap();
        (peer.ip(), buf)
    });
    let reply = netns::run_in(&ns_b, || {
        let mut c =
            TcpStream::connect_timeout(&SocketAddr::new(ip_a, port), Duration::from_secs(5))
                .unwrap();
        c.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        buf
    })
    .unwrap();
    let (peer, got) = server.join().unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(&reply, b"pong");
    assert_eq!(peer, ip_b, "traffic came from B's address over the bridge");
    for att in [&att_a, &att_b] {
        net.cni.del(att).await.unwrap();
        net.cni.del(att).await.unwrap();
    }
    assert!(net.allocations().is_empty(), "{:?}", net.allocations());
    assert_eq!(net.veths(), "", "no veth left on the bridge");
    netns::remove(&ns_a).unwrap();
    netns::remove(&ns_b).unwrap();
    // DEL after the namespace is gone is still fine.
    net.cni.del(&att_a).await.unwrap();
    assert_eq!(std::fs::read_dir(net.nsdir()).unwrap().count(), 0);
    let status = Command::new("ip")
        .args(["link", "del", &net.bridge])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(ip(&["link", "show", &net.bridge]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_cycles_do_not_exhaust_a_small_subnet() {
    if !usable() {
        return;
    }
    // A /28 has 13 assignable addresses besides the gateway: leaks would exhaust it.
    let net = Net::new(28);
    let mut create_add = Vec::new();
    let mut del_remove = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..50 {
        let t = Instant::now();
        let ns = netns::create(&net.nsdir(), &format!("c{i}")).unwrap();
        let att = attachment(&format!("cycle-{i}"), &ns);
        let r = net.cni.add(&att).await.unwrap();
        create_add.push(t.elapsed());
        assert!(in_subnet(&r.ips[0], net.octet));
        seen.insert(r.ips[0]);
        let t = Instant::now();
        net.cni.del(&att).await.unwrap();
        netns::remove(&ns).unwrap();
        del_remove.push(t.elapsed());
    }
    assert!(net.allocations().is_empty());
    assert_eq!(net.veths(), "");
    assert!(seen.len() <= 13, "all from the /28: {seen:?}");
    create_add.sort();
    del_remove.sort();
    eprintln!(
        "netns create + CNI ADD (bridge, host-local, loopback): p50 {:?} p90 {:?}; CNI DEL + netns remove: p50 {:?}",
        create_add[25], create_add[45], del_remove[25]
    );
}
