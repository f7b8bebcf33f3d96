//! Fixture-tree tests for both backends, and real cgroup v1/v2 tests on the host.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::*;

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

fn read(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn v2_fixture(controllers: &str) -> (tempfile::TempDir, Cgroups) {
    let t = tempfile::tempdir().unwrap();
    write(&t.path().join("cgroup.controllers"), controllers);
    write(&t.path().join("cgroup.subtree_control"), "");
    write(&t.path().join("cgroup.procs"), "1\n");
    let cg = Cgroups::detect(t.path()).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V2);
    (t, cg)
}

fn full_resources() -> Resources {
    Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 1024,
        memory_limit: 64 << 20,
        memory_swap_limit: 96 << 20,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        pids_limit: Some(10),
        unified: HashMap::from([("memory.high".to_string(), "50331648".to_string())]),
        hugepage_limits: vec![("2MB".into(), 4 << 20)],
    }
}

#[test]
fn shares_to_weight_matches_kubelet() {
    assert_eq!(shares_to_weight(0), 0);
    assert_eq!(shares_to_weight(2), 1);
    assert_eq!(shares_to_weight(1), 1);
    assert_eq!(shares_to_weight(1024), 39);
    assert_eq!(shares_to_weight(102), 4);
    assert_eq!(shares_to_weight(262_144), 10_000);
    assert_eq!(shares_to_weight(1_000_000), 10_000);
}

#[test]
fn swap_mapping_matches_runc() {
    assert_eq!(swap_max(0, 0).unwrap(), None);
    assert_eq!(swap_max(100, 0).unwrap(), None);
    assert_eq!(swap_max(100, -1).unwrap().as_deref(), Some("max"));
    assert_eq!(swap_max(100, 300).unwrap().as_deref(), Some("200"));
    assert_eq!(swap_max(100, 100).unwrap().as_deref(), Some("0"));
    assert!(matches!(
        swap_max(100, 50),
        Err(CgroupError::Invalid { .. })
    ));
    assert!(matches!(swap_max(0, 50), Err(CgroupError::Invalid { .. })));
    assert!(matches!(swap_max(-1, 50), Err(CgroupError::Invalid { .. })));
}

#[test]
fn rejects_bad_paths() {
    for p in ["", "/", "/a/../b", "../x", "a\0b"] {
        assert!(
            matches!(rel_path(p), Err(CgroupError::InvalidPath { .. })),
            "{p:?}"
        );
    }
    assert_eq!(
        rel_path("/kubepods/pod1/c/").unwrap(),
        PathBuf::from("kubepods/pod1/c")
    );
}

#[test]
fn v2_create_writes_limits_and_enables_controllers() {
    let (t, cg) = v2_fixture("cpuset cpu io memory hugetlb pids");
    let r = t.path();
    let h = cg.create("/kubepods/pod1/ctr", &full_resources()).unwrap();
    assert_eq!(
        h.procs_files,
        vec![r.join("kubepods/pod1/ctr/cgroup.procs")]
    );
    assert_eq!(
        h.created,
        vec![
            r.join("kubepods"),
            r.join("kubepods/pod1"),
            r.join("kubepods/pod1/ctr")
        ]
    );
    for d in ["", "kubepods", "kubepods/pod1"] {
        let sc = read(&r.join(d).join("cgroup.subtree_control"));
        for c in ["+cpu", "+cpuset", "+memory", "+pids", "+hugetlb", "+io"] {
            assert!(sc.split(' ').any(|x| x == c), "{d}: {sc}");
        }
    }
    // The leaf holds processes: no controllers enabled below it.
    assert!(!r.join("kubepods/pod1/ctr/cgroup.subtree_control").exists());
    let leaf = r.join("kubepods/pod1/ctr");
    assert_eq!(read(&leaf.join("cpu.weight")), "39");
    assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
    assert_eq!(read(&leaf.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(
        read(&leaf.join("memory.swap.max")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&leaf.join("pids.max")), "10");
    assert_eq!(read(&leaf.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&leaf.join("cpuset.mems")), "0");
    assert_eq!(read(&leaf.join("memory.high")), "50331648");
    assert_eq!(
        read(&leaf.join("hugetlb.2MB.max")),
        (4u64 << 20).to_string()
    );
}

#[test]
fn v2_update_cpu_max_and_unlimited() {
    let (t, cg) = v2_fixture("cpu memory pids");
    let leaf = t.path().join("p/c");
    cg.create("/p/c", &Resources::default()).unwrap();
    // Nothing requested: nothing written.
    assert!(!leaf.join("cpu.max").exists());
    assert!(!leaf.join("memory.max").exists());
    cg.update(
        "/p/c",
        &Resources {
            cpu_quota: 20_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&leaf.join("cpu.max")), "20000 100000");
    // Period alone keeps the quota.
    cg.update(
        "/p/c",
        &Resources {
            cpu_period: 50_000,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&leaf.join("cpu.max")), "20000 50000");
    cg.update(
        "/p/c",
        &Resources {
            cpu_quota: -1,
            memory_limit: -1,
            pids_limit: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&leaf.join("cpu.max")), "max 100000");
    assert_eq!(read(&leaf.join("memory.max")), "max");
    assert_eq!(read(&leaf.join("pids.max")), "max");
    assert!(matches!(
        cg.update("/p/missing", &Resources::default()),
        Err(CgroupError::NotFound { .. })
    ));
}

/// What the kubelet sends for a container that asks for no hugepages: a zero limit for
/// every size in `/sys/kernel/mm/hugepages`, whether or not a hugetlb controller exists.
fn kubelet_default_hugepages() -> Resources {
    Resources {
        hugepage_limits: vec![("2MB".into(), 0), ("1GB".into(), 0)],
        ..Default::default()
    }
}

#[test]
fn v2_missing_controller_is_unsupported_and_rolls_back() {
    let (t, cg) = v2_fixture("memory pids");
    let err = cg
        .create(
            "/p/c",
            &Resources {
                cpu_shares: 512,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("\"cpu\""), "{err}");
    assert!(!t.path().join("p").exists(), "rolled back");
    let err = cg
        .create(
            "/p/c",
            &Resources {
                hugepage_limits: vec![("2MB".into(), 1)],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    // The kubelet's default for every container: zero for each size the kernel knows.
    cg.create("/p/c", &kubelet_default_hugepages()).unwrap();
    cg.remove("/p/c").unwrap();
    let err = cg
        .create(
            "/p/c",
            &Resources {
                unified: HashMap::from([("../x".to_string(), "1".to_string())]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CgroupError::Invalid { .. }), "{err}");
    assert!(!t.path().join("p").exists(), "rolled back");
}

#[test]
fn v2_stats_and_oom_from_fixture_files() {
    let (t, cg) = v2_fixture("cpu memory pids");
    cg.create("/p/c", &Resources::default()).unwrap();
    let d = t.path().join("p/c");
    write(
        &d.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 3\nthrottled_usec 42\n",
    );
    write(&d.join("memory.current"), "10000\n");
    write(
        &d.join("memory.stat"),
        "anon 4096\nfile 5000\ninactive_file 3000\nactive_file 2000\npgfault 77\npgmajfault 5\n",
    );
    write(&d.join("memory.max"), "max\n");
    write(
        &d.join("memory.events"),
        "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n",
    );
    write(&d.join("pids.current"), "3\n");
    let s = cg.stats("/p/c").unwrap();
    assert_eq!(s.cpu_usage_ns, 1_500_000);
    assert_eq!(
        s.cpu_throttling,
        CpuThrottling {
            nr_periods: 10,
            nr_throttled: 3,
            throttled_time_ns: 42_000
        }
    );
    assert_eq!(s.memory_usage, 10_000);
    assert_eq!(s.working_set, 7_000);
    assert_eq!(s.rss, 4096);
    assert_eq!(s.page_faults, 77);
    assert_eq!(s.major_page_faults, 5);
    assert_eq!(s.memory_limit, None);
    assert_eq!(s.pids_current, 3);
    assert!(s.timestamp_ns > 0);
    assert!(!cg.oom_killed("/p/c").unwrap());
    write(&d.join("memory.events"), "oom 2\noom_kill 1\n");
    write(&d.join("memory.max"), "1048576\n");
    assert!(cg.oom_killed("/p/c").unwrap());
    assert_eq!(cg.stats("/p/c").unwrap().memory_limit, Some(1 << 20));
    write(&d.join("cgroup.procs"), "12\n7\n");
    assert_eq!(cg.pids("/p/c").unwrap(), vec![7, 12]);
    assert_eq!(cg.stats("/p/c").unwrap().processes, 2);
    // Without io.stat and pressure files: no I/O accounting, no PSI.
    let s = cg.stats("/p/c").unwrap();
    assert_eq!(s.io, None);
    assert_eq!(s.pressure, Pressure::default());
}

#[test]
fn v2_io_pressure_and_memory_details_from_fixture_files() {
    let (t, cg) = v2_fixture("cpu io memory pids");
    cg.create("/p/c", &Resources::default()).unwrap();
    let d = t.path().join("p/c");
    write(
        &d.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    write(
        &d.join("memory.stat"),
        "anon 4096\nfile 5000\nfile_mapped 1200\ninactive_file 3000\n",
    );
    write(&d.join("memory.swap.current"), "64\n");
    write(&d.join("memory.peak"), "20000\n");
    write(
        &d.join("io.stat"),
        "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
    );
    write(
        &d.join("cpu.pressure"),
        "some avg10=0.50 avg60=0.10 avg300=0.00 total=2500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=100\n",
    );
    write(
        &d.join("memory.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n",
    );
    let s = cg.stats("/p/c").unwrap();
    assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (1_000_000, 500_000));
    assert_eq!((s.cache, s.mapped_file, s.swap), (5000, 1200, 64));
    assert_eq!(s.max_usage, Some(20_000));
    assert_eq!(s.failcnt, None, "v2 has no failcnt");
    assert_eq!(
        s.io,
        Some(vec![DeviceIo {
            major: 8,
            minor: 0,
            read_bytes: 4096,
            write_bytes: 8192,
            reads: 1,
            writes: 2,
        }])
    );
    let cpu = s.pressure.cpu.unwrap();
    assert_eq!(cpu.some.total_us, 2500);
    assert_eq!(cpu.some.avg10, 0.5);
    assert_eq!(cpu.full.unwrap().total_us, 100);
    assert_eq!(s.pressure.memory.unwrap().full.unwrap().total_us, 3);
    assert_eq!(s.pressure.io, None, "no io.pressure file");
    assert_eq!(cg.pressure("/p/c").unwrap(), s.pressure);
    // Pressure of a cgroup we did not create (the kubelet's pod cgroup) is readable too.
    write(
        &t.path().join("p/io.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n",
    );
    assert_eq!(cg.pressure("/p").unwrap().io.unwrap().some.total_us, 9);
    assert!(matches!(
        cg.pressure("/nope"),
        Err(CgroupError::NotFound { .. })
    ));
}

#[test]
fn hostile_stats_files_are_bounded_errors() {
    let (t, cg) = v2_fixture("cpu io memory pids");
    cg.create("/p/c", &Resources::default()).unwrap();
    let d = t.path().join("p/c");
    // A control file far larger than any the kernel writes: an error naming it, read no
    // further than the bound.
    let big = d.join("io.stat");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 30).unwrap(); // sparse: 64 GiB that are never read
    let err = cg.stats("/p/c").unwrap_err();
    assert!(
        matches!(&err, CgroupError::TooLarge { path, limit } if path == &big && *limit == 1 << 20),
        "{err}"
    );
    std::fs::remove_file(&big).unwrap();
    // A pressure file with a bogus average: an error naming the file, not a made-up figure.
    let bad = d.join("memory.pressure");
    write(&bad, "some avg10=NaN avg60=0 avg300=0 total=1\n");
    let err = cg.stats("/p/c").unwrap_err();
    assert!(
        matches!(&err, CgroupError::Parse { path, .. } if path == &bad),
        "{err}"
    );
    write(&bad, "some avg10=0 avg60=0 avg300=0 total=1\n");
    // Not UTF-8: a read error, not a panic.
    write(&d.join("memory.stat"), "");
    std::fs::write(d.join("memory.stat"), [0xff, 0xfe, b'\n']).unwrap();
    assert!(matches!(cg.stats("/p/c"), Err(CgroupError::Read { .. })));
}

#[test]
fn remove_only_removes_what_we_created() {
    let (t, cg) = v2_fixture("cpu memory pids");
    let r = t.path();
    fs::create_dir(r.join("kubepods")).unwrap();
    let h1 = cg
        .create("/kubepods/pod1/c1", &Resources::default())
        .unwrap();
    assert_eq!(
        h1.created,
        vec![r.join("kubepods/pod1"), r.join("kubepods/pod1/c1")]
    );
    let h2 = cg
        .create("/kubepods/pod1/c2", &Resources::default())
        .unwrap();
    assert_eq!(h2.created, vec![r.join("kubepods/pod1/c2")]);
    cg.remove("/kubepods/pod1/c1").unwrap();
    assert!(!r.join("kubepods/pod1/c1").exists());
    assert!(r.join("kubepods/pod1").exists(), "c2 still there");
    cg.remove("/kubepods/pod1/c2").unwrap();
    assert!(
        !r.join("kubepods/pod1").exists(),
        "pod1 was ours and is empty"
    );
    assert!(r.join("kubepods").exists(), "kubepods was not ours");
    // Idempotent.
    cg.remove("/kubepods/pod1/c2").unwrap();

    // A restarted daemon (fresh registry) removes nothing until it adopts the handle.
    let h3 = cg
        .create("/kubepods/pod2/c", &Resources::default())
        .unwrap();
    let restarted = Cgroups::detect(r).unwrap();
    restarted.remove("/kubepods/pod2/c").unwrap();
    assert!(r.join("kubepods/pod2/c").exists());
    let json = serde_json::to_string(&h3).unwrap();
    let back: CgroupHandle = serde_json::from_str(&json).unwrap();
    restarted.remove_handle(&back).unwrap();
    assert!(!r.join("kubepods/pod2").exists());
    assert!(r.join("kubepods").exists());
}

fn v1_fixture() -> (tempfile::TempDir, Cgroups) {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    // cpu and cpuacct co-mounted, reached through symlinks as on most distributions.
    for d in ["cpu,cpuacct", "cpuset", "memory", "pids"] {
        write(&r.join(d).join("cgroup.procs"), "");
    }
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpuacct")).unwrap();
    write(&r.join("cpuset/cpuset.cpus"), "0-3\n");
    write(&r.join("cpuset/cpuset.mems"), "0\n");
    let cg = Cgroups::detect(r).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V1);
    (t, cg)
}

#[test]
fn v1_create_writes_limits_and_inherits_cpuset() {
    let (t, cg) = v1_fixture();
    let r = t.path().canonicalize().unwrap();
    let res = Resources {
        unified: HashMap::new(),
        hugepage_limits: vec![],
        cpuset_cpus: String::new(),
        ..full_resources()
    };
    let h = cg.create("/kubepods/pod1/ctr", &res).unwrap();
    assert_eq!(h.procs_files.len(), 4, "{:?}", h.procs_files);
    assert!(
        h.procs_files
            .contains(&r.join("cpu,cpuacct/kubepods/pod1/ctr/cgroup.procs"))
    );
    let cpu = r.join("cpu,cpuacct/kubepods/pod1/ctr");
    assert_eq!(read(&cpu.join("cpu.shares")), "1024");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    let mem = r.join("memory/kubepods/pod1/ctr");
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (96u64 << 20).to_string()
    );
    assert_eq!(read(&r.join("pids/kubepods/pod1/ctr/pids.max")), "10");
    for d in ["kubepods", "kubepods/pod1", "kubepods/pod1/ctr"] {
        assert_eq!(read(&r.join("cpuset").join(d).join("cpuset.cpus")), "0-3");
        assert_eq!(read(&r.join("cpuset").join(d).join("cpuset.mems")), "0");
    }
    cg.update(
        "/kubepods/pod1/ctr",
        &Resources {
            cpuset_cpus: "1".into(),
            cpu_quota: -1,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read(&r.join("cpuset/kubepods/pod1/ctr/cpuset.cpus")), "1");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");
    cg.remove("/kubepods/pod1/ctr").unwrap();
    for d in ["cpu,cpuacct", "cpuset", "memory", "pids"] {
        assert!(!r.join(d).join("kubepods").exists(), "{d}");
    }
}

#[test]
fn v1_rejects_unified_hugetlb_and_bad_swap() {
    let (t, cg) = v1_fixture();
    let r = t.path();
    let err = cg
        .create(
            "/a/b",
            &Resources {
                unified: HashMap::from([("memory.high".into(), "1".into())]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("cgroup v2"), "{err}");
    let err = cg
        .create(
            "/a/b",
            &Resources {
                hugepage_limits: vec![("2MB".into(), 1)],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::Unsupported { what } if what.contains("hugetlb")),
        "{err}"
    );
    cg.create("/a/b", &kubelet_default_hugepages()).unwrap();
    cg.remove("/a/b").unwrap();
    let err = cg
        .create(
            "/a/b",
            &Resources {
                memory_limit: 100,
                memory_swap_limit: 50,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CgroupError::Invalid { .. }), "{err}");
    for d in ["cpu", "cpuset", "memory", "pids"] {
        assert!(!r.join(d).join("a").exists(), "{d} rolled back");
    }
}

#[test]
fn v1_stats_from_fixture_files() {
    let (t, cg) = v1_fixture();
    cg.create("/p", &Resources::default()).unwrap();
    let r = t.path();
    write(&r.join("cpuacct/p/cpuacct.usage"), "123456789\n");
    write(
        &r.join("cpu/p/cpu.stat"),
        "nr_periods 20\nnr_throttled 2\nthrottled_time 999\n",
    );
    write(&r.join("memory/p/memory.usage_in_bytes"), "50000\n");
    write(
        &r.join("memory/p/memory.stat"),
        "cache 100\nrss 1\ninactive_file 9\ntotal_cache 100\ntotal_rss 8192\ntotal_inactive_file 20000\ntotal_pgfault 11\ntotal_pgmajfault 2\n",
    );
    write(
        &r.join("memory/p/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(
        &r.join("memory/p/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    write(&r.join("pids/p/pids.current"), "4\n");
    write(&r.join("cpuacct/p/cpuacct.usage_user"), "100000000\n");
    write(&r.join("cpuacct/p/cpuacct.usage_sys"), "23456789\n");
    write(&r.join("memory/p/memory.max_usage_in_bytes"), "60000\n");
    write(&r.join("memory/p/memory.failcnt"), "3\n");
    let s = cg.stats("/p").unwrap();
    assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (100_000_000, 23_456_789));
    assert_eq!(
        (s.cache, s.max_usage, s.failcnt),
        (100, Some(60_000), Some(3))
    );
    assert_eq!(s.io, None, "no blkio hierarchy in this fixture");
    assert_eq!(s.pressure, Pressure::default(), "v1 has no PSI");
    assert_eq!(s.cpu_usage_ns, 123_456_789);
    assert_eq!(s.cpu_throttling.nr_throttled, 2);
    assert_eq!(s.cpu_throttling.throttled_time_ns, 999);
    assert_eq!(s.memory_usage, 50_000);
    assert_eq!(s.working_set, 30_000);
    assert_eq!(s.rss, 8192);
    assert_eq!(s.page_faults, 11);
    assert_eq!(s.major_page_faults, 2);
    assert_eq!(s.memory_limit, None, "the v1 'unlimited' value");
    assert_eq!(s.oom_kills, 2);
    assert_eq!(s.pids_current, 4);
    assert!(cg.oom_killed("/p").unwrap());
}

#[test]
fn v1_blkio_is_joined_and_counted_per_device() {
    let (t, _) = v1_fixture();
    let r = t.path();
    write(&r.join("blkio/cgroup.procs"), "");
    let cg = Cgroups::detect(r).unwrap();
    let h = cg.create("/p/c", &Resources::default()).unwrap();
    let blkio = r.canonicalize().unwrap().join("blkio/p/c");
    assert!(h.procs_files.contains(&blkio.join("cgroup.procs")));
    write(
        &blkio.join("blkio.throttle.io_service_bytes_recursive"),
        "8:0 Read 100\n8:0 Write 200\n8:0 Total 300\nTotal 300\n",
    );
    write(
        &blkio.join("blkio.throttle.io_serviced_recursive"),
        "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
    );
    let io = cg.stats("/p/c").unwrap().io.unwrap();
    assert_eq!(
        io,
        vec![DeviceIo {
            major: 8,
            minor: 0,
            read_bytes: 100,
            write_bytes: 200,
            reads: 1,
            writes: 2,
        }]
    );
    cg.remove("/p/c").unwrap();
    assert!(!r.join("blkio/p").exists());
}

#[test]
fn v1_joins_through_tasks_v2_through_cgroup_procs() {
    let (t1, v1) = v1_fixture();
    v1.create("/p/c", &Resources::default()).unwrap();
    let m = v1.membership("/p/c").unwrap();
    let dirs = v1.dirs("/p/c").unwrap();
    assert_eq!(dirs.len(), 4);
    for d in &dirs {
        write(&d.join("tasks"), "");
    }
    m.join_self().unwrap();
    for d in &dirs {
        assert_eq!(read(&d.join("tasks")), "0", "{}", d.display());
    }
    drop(t1);
    let (t2, v2) = v2_fixture("cpu memory pids");
    v2.create("/p/c", &Resources::default()).unwrap();
    let procs = t2.path().join("p/c/cgroup.procs");
    write(&procs, "");
    v2.membership("/p/c").unwrap().join_self().unwrap();
    assert_eq!(read(&procs), std::process::id().to_string());
    assert!(!t2.path().join("p/c/tasks").exists());
    // A cgroup that is gone: an error naming the file.
    fs::remove_file(&procs).unwrap();
    let err = v2.membership("/p/c").unwrap().join_self().unwrap_err();
    assert!(
        matches!(&err, CgroupError::Write { path, .. } if path == &procs),
        "{err}"
    );
}

#[test]
fn detect_without_hierarchies_fails() {
    let t = tempfile::tempdir().unwrap();
    assert!(matches!(
        Cgroups::detect(t.path()),
        Err(CgroupError::NoHierarchy { .. })
    ));
    // An empty cgroup.controllers (v2 mounted without controllers) is not v2.
    write(&t.path().join("cgroup.controllers"), "\n");
    assert!(matches!(
        Cgroups::detect(t.path()),
        Err(CgroupError::NoHierarchy { .. })
    ));
}

mod real;

/// A container created before wasmcri joined `blkio` (an upgrade) has no directory there:
/// execs still join it, without blkio. A missing limit hierarchy still fails the join.
#[test]
fn v1_membership_skips_a_missing_accounting_only_hierarchy() {
    let (t, cg) = v1_fixture();
    let r = t.path();
    write(&r.join("blkio/cgroup.procs"), "");
    let cg = {
        drop(cg);
        Cgroups::detect(r).unwrap()
    };
    cg.create("/p/c", &Resources::default()).unwrap();
    assert_eq!(cg.membership("/p/c").unwrap().dirs.len(), 5);
    fs::remove_dir_all(r.join("blkio/p")).unwrap();
    let m = cg.membership("/p/c").unwrap();
    assert_eq!(m.dirs.len(), 4);
    assert!(m.dirs.iter().all(|d| !d.starts_with(r.join("blkio"))));
    fs::remove_dir_all(r.join("memory/p/c")).unwrap();
    assert_eq!(cg.membership("/p/c").unwrap().dirs.len(), 4);
}
