//! A hostile guest against the runner's confinement: read-only mounts stay read-only in the
//! kernel, and the runner process keeps no privilege, sees no host filesystem and resolves
//! names with the pod's DNS.

use cri::v1 as pb;

use crate::harness::*;

const P1: &str = "wasm32-wasip1";

fn file_mount(container_path: &str, host: &std::path::Path, readonly: bool) -> pb::Mount {
    pb::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// The kubelet's `/etc/hosts` (writable) next to a read-only subPath file under `/etc`, and
/// the pod's own `resolv.conf`: before the jail, all three were one writable preopen of hard
/// links, and writes to the read-only ones reached the host files.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_file_mount_next_to_writable_one_stays_read_only() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "writefile", "localhost/writefile:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut pod_cfg = pod_config(&unique("romount"), &logs);
    pod_cfg.dns_config = Some(pb::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        ..Default::default()
    });
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let hosts = d.dir.path().join("etc-hosts");
    let config = d.dir.path().join("config");
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    std::fs::write(&config, "original\n").unwrap();
    let write = |name: &str, path: &str| {
        let mut c = container_config(name, "localhost/writefile:v1");
        c.args = vec![path.into(), "hostile".into()];
        c.mounts = vec![
            file_mount("/etc/hosts", &hosts, false),
            file_mount("/etc/config", &config, true),
        ];
        c
    };
    for (name, path, want_exit) in [
        ("ro", "/etc/config", 1),
        ("resolv", "/etc/resolv.conf", 1),
        ("rw", "/etc/hosts", 0),
        // A new file next to them: the directory is the runner's read-only tmpfs.
        ("new", "/etc/new-file", 1),
    ] {
        let c = create(&mut rt, &pod, &pod_cfg, write(name, path)).await;
        start(&mut rt, &c).await;
        let st = wait_exited(&mut rt, &c, 30).await;
        let log = std::fs::read_to_string(logs.join(format!("{name}/0.log"))).unwrap_or_default();
        assert_eq!(st.exit_code, want_exit, "{name}: {st:?} {log}");
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "original\n");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), "hostile");
    let resolv = find_file(d.dir.path(), &pod, "resolv.conf").unwrap();
    assert!(resolv.contains("10.96.0.10"), "{resolv}");
    d.shutdown().await;
}

fn find_file(root: &std::path::Path, under: &str, name: &str) -> std::io::Result<String> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file()
                && p.file_name().is_some_and(|n| n == name)
                && p.to_string_lossy().contains(under)
            {
                return std::fs::read_to_string(p);
            }
        }
    }
    Err(std::io::Error::other(format!("no {name} under {under}")))
}

/// What the runner of a root guest keeps once the guest runs: only CAP_NET_BIND_SERVICE,
/// no_new_privs, a seccomp filter, and a root that holds nothing but its jail.
#[tokio::test(flavor = "multi_thread")]
async fn runner_keeps_no_privilege_and_sees_only_its_jail() {
    let d = Daemon::start().await;
    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let mut pod_cfg = pod_config(&unique("confined"), &logs);
    pod_cfg.dns_config = Some(pb::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        ..Default::default()
    });
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let mut ids = Vec::new();
    for (name, uid) in [("root", None), ("user", Some(1000))] {
        let mut c = container_config(name, "localhost/sleeper:v1");
        if let Some(uid) = uid {
            c.linux = Some(pb::LinuxContainerConfig {
                security_context: Some(pb::LinuxContainerSecurityContext {
                    run_as_user: Some(pb::Int64Value { value: uid }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let id = create(&mut rt, &pod, &pod_cfg, c).await;
        start(&mut rt, &id).await;
        wait_log(&logs.join(format!("{name}/0.log")), "started", 30).await;
        ids.push((name, id));
    }
    for (name, id) in &ids {
        let pid = runner_pid(&mut rt, id).await;
        let want_eff = if *name == "root" {
            "0000000000000400"
        } else {
            "0000000000000000"
        };
        assert_eq!(status_field(pid, "CapEff"), want_eff, "{name}");
        assert_eq!(status_field(pid, "CapPrm"), want_eff, "{name}");
        assert_eq!(status_field(pid, "CapBnd"), "0000000000000400", "{name}");
        assert_eq!(status_field(pid, "CapAmb"), "0000000000000000", "{name}");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "{name}");
        assert_eq!(status_field(pid, "Seccomp"), "2", "{name}");
        // The runner's root: no host files, the pod's DNS at /etc.
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        let mut etc: Vec<String> = std::fs::read_dir(root.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        etc.sort();
        assert_eq!(etc, ["hosts", "nsswitch.conf", "resolv.conf"], "{name}");
        let resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap();
        assert!(resolv.contains("nameserver 10.96.0.10"), "{name}: {resolv}");
        assert!(!root.join("etc/shadow").exists());
        assert!(!root.join("usr").exists() && !root.join("root").exists());
        // Read-only, even for the runner itself.
        let probe = root.join("etc/probe");
        assert!(std::fs::write(&probe, "x").is_err(), "{name}");
        // Its mounts stay in its own namespace.
        let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!host_mounts.contains(&format!("{id}/jail")), "{name}");
    }
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// The daemon's idle standby runners (`wasmcri runner --standby` children).
fn standby_children(daemon: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(daemon) && cmdline.split(|&b| b == 0).any(|a| a == b"--standby") {
            out.push(pid);
        }
    }
    out
}

/// Descriptors of `pid` that reach outside its jail: namespace descriptors, and directories
/// whose path, looked up in the process's own root, is not the same directory (the host's
/// root kept open, say).
fn fds_outside_jail(pid: i32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
    let mut bad = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let Ok(link) = std::fs::read_link(e.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        let fd = e.file_name().to_string_lossy().into_owned();
        if ["mnt:", "net:", "pid:", "user:", "cgroup:", "uts:", "ipc:"]
            .iter()
            .any(|ns| link.starts_with(ns))
        {
            bad.push(format!("fd {fd}: {link}"));
            continue;
        }
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let inside = std::fs::metadata(root.join(link.trim_start_matches('/')));
        if !matches!(&inside, Ok(m) if m.dev() == meta.dev() && m.ino() == meta.ino()) {
            bad.push(format!("fd {fd}: directory {link} outside the jail"));
        }
    }
    bad
}

/// A standby runner builds its jail while it idles: its own mount namespace whose root holds
/// only the devices and `/etc` (the old root's detach, which waits for an RCU grace period,
/// is off the start path). Once started, the runner keeps no descriptor reaching outside its
/// jail: not the host's root it resolved the spec's paths in, not the host's namespace.
#[tokio::test(flavor = "multi_thread")]
async fn standby_runner_idles_jailed_and_started_runner_keeps_no_host_fd() {
    let d = Daemon::start().await;
    let daemon = d.pid().unwrap();
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let host_ns = ns(daemon).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let idle = loop {
        let all = standby_children(daemon);
        let jailed: Vec<i32> = all
            .iter()
            .copied()
            .filter(|&p| ns(p).is_some_and(|n| n != host_ns))
            .collect();
        if !jailed.is_empty() {
            break jailed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no idle standby runner in a mount namespace of its own: {all:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    // Its own namespace comes first, the jail's root a moment later (nothing tells the
    // daemon when): wait for the idle state, then require exactly the jail.
    for pid in idle {
        let top = || {
            let mut top: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            top.sort();
            top
        };
        while top() != ["dev", "etc"] && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(top(), ["dev", "etc"], "standby {pid}");
    }

    import_guest(&d, P1, "sleeper", "localhost/sleeper:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("fds"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let c = create(
        &mut rt,
        &pod,
        &pod_cfg,
        container_config("fds", "localhost/sleeper:v1"),
    )
    .await;
    start(&mut rt, &c).await;
    wait_log(&logs.join("fds/0.log"), "started", 30).await;
    let pid = runner_pid(&mut rt, &c).await;
    assert_ne!(ns(pid).unwrap(), host_ns);
    assert_eq!(fds_outside_jail(pid), Vec::<String>::new());
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}

/// A guest's files get the container umask 0022 whatever the daemon runs under: with the
/// daemon's restrictive umask inherited, a file written into a shared volume was 0600 and
/// unreadable to the pod's other containers (users).
#[tokio::test(flavor = "multi_thread")]
async fn guest_files_get_the_container_umask_not_the_daemons() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start_with_umask("", 0o077).await;
    import_guest(&d, P1, "writefile", "localhost/writefile:v1");
    let mut rt = d.rt().await;
    let logs = d.dir.path().join("logs");
    let pod_cfg = pod_config(&unique("umask"), &logs);
    let pod = run_pod(&mut rt, pod_cfg.clone()).await;
    let vol = d.dir.path().join("shared");
    std::fs::create_dir(&vol).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cfg = container_config("writer", "localhost/writefile:v1");
    cfg.args = vec!["/shared/out.txt".into()];
    cfg.mounts = vec![pb::Mount {
        container_path: "/shared".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    }];
    let c = create(&mut rt, &pod, &pod_cfg, cfg).await;
    start(&mut rt, &c).await;
    let st = wait_exited(&mut rt, &c, 30).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let mode = std::fs::metadata(vol.join("out.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "guest file mode {mode:o}");
    remove_pod(&mut rt, &pod).await;
    d.shutdown().await;
}
