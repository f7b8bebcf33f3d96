//! In-process tests of the guest-running part of the runner ([`execute`]) against the real
//! guests of `examples/guests` (built for `wasm32-wasip1` and `wasm32-wasip2`). They skip with a
//! message when the guests are not built; `$WASMCRI_GUESTS` overrides where to look.

use std::path::{Path, PathBuf};

use super::*;
use crate::logs::{LogLine, Stream, messages, read_log};

/// `examples/guests/target` (or `$WASMCRI_GUESTS`).
fn guests_dir() -> PathBuf {
    std::env::var_os("WASMCRI_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/guests/target"))
}

/// The guest `name` for `target` (`wasm32-wasip1` / `wasm32-wasip2`), or `None` (and a note on
/// stderr) if it is not built.
fn guest(target: &str, name: &str) -> Option<PathBuf> {
    let p = guests_dir()
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not built; run `cargo build --release --manifest-path \
             examples/guests/Cargo.toml --target {target}`",
            p.display()
        );
        None
    }
}

const TARGETS: [&str; 2] = ["wasm32-wasip1", "wasm32-wasip2"];

/// The exit code the runner sees for a guest's `std::process::exit(code)`: WASI 0.2's
/// `wasi:cli/exit.exit` carries only ok/err (the numeric `exit-with-code` is unstable and
/// Rust's std does not call it), so a component's nonzero code arrives as 1.
fn expected_exit(target: &str, code: i32) -> i32 {
    if target == "wasm32-wasip2" && code != 0 {
        1
    } else {
        code
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    spec: RunnerSpec,
}

impl Fixture {
    fn new(wasm: PathBuf, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let spec = RunnerSpec {
            container_id: "c".repeat(64),
            mode: RunMode::Command,
            wasm,
            precompiled: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            preopens: vec![Preopen {
                host: rootfs,
                guest: "/".into(),
                read_only: false,
                files: vec![],
            }],
            log_path: Some(dir.path().join("0.log")),
            exit_file: dir.path().join("exit.json"),
            cgroup: None,
            netns: None,
            uid: None,
            gid: None,
            additional_gids: vec![],
            stdin: false,
            stdio: Default::default(),
            oom_score_adj: None,
            stop_grace_ms: None,
            debug_log: None,
            jail: None,
            resolv_conf: None,
            hosts: None,
            userns: None,
        };
        Self { dir, spec }
    }

    fn log(&self) -> Vec<LogLine> {
        read_log(self.spec.log_path.as_ref().unwrap()).unwrap()
    }

    fn stdout(&self) -> Vec<String> {
        messages(&self.log(), Stream::Stdout)
    }

    fn stderr(&self) -> Vec<String> {
        messages(&self.log(), Stream::Stderr)
    }
}

#[test]
fn hello_writes_cri_log_and_completes() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "hello") else {
            continue;
        };
        let f = Fixture::new(wasm, &["hello"]);
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?}");
        assert_eq!(rec.reason, REASON_COMPLETED);
        assert_eq!(rec.message, "");
        assert!(rec.started_at > 0 && rec.finished_at >= rec.started_at);
        assert_eq!(f.stdout(), vec!["hello from wasm"], "{target}");
        assert_eq!(f.stderr(), vec!["hello from wasm on stderr"], "{target}");
        // Raw format: `<RFC3339Nano> stdout F hello from wasm`.
        let raw = std::fs::read_to_string(f.spec.log_path.as_ref().unwrap()).unwrap();
        let first = raw.lines().find(|l| l.contains(" stdout ")).unwrap();
        let (ts, rest) = first.split_once(' ').unwrap();
        assert_eq!(rest, "stdout F hello from wasm");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
}

#[test]
fn exit_code_is_the_guests() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "exit3") else {
            continue;
        };
        let f = Fixture::new(wasm, &["exit3"]);
        let rec = execute(&f.spec);
        let want = expected_exit(target, 3);
        assert_eq!(rec.exit_code, want, "{target}: {rec:?}");
        assert_eq!(rec.reason, REASON_ERROR);
        // The exit code says it all; a message would end up in `terminated.message`.
        assert_eq!(rec.message, "");
        assert_eq!(f.stdout(), vec!["exiting with 3"]);
    }
}

#[test]
fn trap_is_exit_1_with_the_trap_message() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "trap") else {
            continue;
        };
        let f = Fixture::new(wasm, &["trap"]);
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, EXIT_FAILURE, "{target}: {rec:?}");
        assert_eq!(rec.reason, REASON_ERROR);
        assert!(
            rec.message.contains("wasm trap") && rec.message.contains("unreachable"),
            "{target}: {}",
            rec.message
        );
        assert!(!rec.message.contains('\n'));
        assert_eq!(f.stdout(), vec!["about to trap"], "{target}");
    }
}

#[test]
fn corrupt_or_foreign_files_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "text.wasm",
            b"#!/bin/sh\necho hi\n",
            "not a WebAssembly module",
        ),
        // Valid header, truncated body.
        ("trunc.wasm", b"\0asm\x01\0\0\0\x01\x05", "cannot compile"),
        ("empty.wasm", b"", "not a WebAssembly module"),
    ];
    for (name, bytes, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let f = Fixture::new(path, &[name]);
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, EXIT_FAILURE, "{name}: {rec:?}");
        assert_eq!(rec.reason, REASON_ERROR);
        assert!(rec.message.contains(want), "{name}: {}", rec.message);
        assert!(!rec.message.contains('\n'), "{name}: {}", rec.message);
    }
    let f = Fixture::new(dir.path().join("missing.wasm"), &["x"]);
    let rec = execute(&f.spec);
    assert_eq!(rec.exit_code, EXIT_FAILURE);
    assert!(rec.message.contains("cannot read"), "{}", rec.message);
}

#[test]
fn module_without_start_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lib.wasm");
    std::fs::write(
        &path,
        wat::parse_str(r#"(module (func (export "f")))"#).unwrap(),
    )
    .unwrap();
    let f = Fixture::new(path, &["lib"]);
    let rec = execute(&f.spec);
    assert_eq!(rec.exit_code, EXIT_FAILURE);
    assert!(rec.message.contains("_start"), "{}", rec.message);
}

#[test]
fn readfile_sees_env_and_read_only_mount() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "readfile") else {
            continue;
        };
        let mut f = Fixture::new(wasm, &["readfile", "/config/msg"]);
        let config = f.dir.path().join("config");
        std::fs::create_dir(&config).unwrap();
        std::fs::write(config.join("msg"), "from a configmap\n").unwrap();
        f.spec.preopens.push(Preopen {
            host: config,
            guest: "/config".into(),
            read_only: true,
            files: vec![],
        });
        f.spec.env = vec![
            ("GREETING".into(), "first".into()),
            ("GREETING".into(), "hi there".into()),
        ];
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?} {:?}", f.log());
        assert_eq!(
            f.stdout(),
            vec!["GREETING=hi there", "from a configmap"],
            "{target}"
        );

        // A missing file is the guest's own exit 2.
        let mut g = Fixture::new(f.spec.wasm.clone(), &["readfile", "/nope"]);
        g.spec.env = f.spec.env.clone();
        let rec = execute(&g.spec);
        assert_eq!(rec.exit_code, expected_exit(target, 2), "{target}: {rec:?}");
    }
}

#[test]
fn writefile_respects_read_only_mounts() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "writefile") else {
            continue;
        };
        let mut f = Fixture::new(wasm.clone(), &["writefile", "/data/out.txt", "payload"]);
        let data = f.dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        f.spec.preopens.push(Preopen {
            host: data.clone(),
            guest: "/data".into(),
            read_only: false,
            files: vec![],
        });
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?} {:?}", f.log());
        assert_eq!(
            std::fs::read_to_string(data.join("out.txt")).unwrap(),
            "payload"
        );

        let mut ro = Fixture::new(wasm, &["writefile", "/ro/out.txt"]);
        let rodir = ro.dir.path().join("ro");
        std::fs::create_dir(&rodir).unwrap();
        ro.spec.preopens.push(Preopen {
            host: rodir.clone(),
            guest: "/ro".into(),
            read_only: true,
            files: vec![],
        });
        let rec = execute(&ro.spec);
        assert_eq!(rec.exit_code, 1, "{target}: {rec:?} {:?}", ro.log());
        assert!(!rodir.join("out.txt").exists(), "{target}");
        assert!(
            ro.stdout()[0].starts_with("write /ro/out.txt failed"),
            "{target}"
        );
    }
}

#[test]
fn bigline_is_split_into_partial_records() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "bigline") else {
            continue;
        };
        let f = Fixture::new(wasm, &["bigline"]);
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?}");
        let log = f.log();
        let out: Vec<&LogLine> = log.iter().filter(|l| l.stream == Stream::Stdout).collect();
        let tags: Vec<bool> = out.iter().map(|l| l.partial).collect();
        assert_eq!(tags, vec![true, true, false, false], "{target}");
        assert_eq!(out[0].content.len(), crate::logs::MAX_LINE);
        assert_eq!(
            f.stdout(),
            vec!["x".repeat(40 * 1024), "after".to_string()],
            "{target}"
        );
    }
}

#[test]
fn precompiled_artifact_is_used_and_bad_one_falls_back() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "hello") else {
            continue;
        };
        let mut f = Fixture::new(wasm.clone(), &["hello"]);
        let engine = crate::wasm::engine().unwrap();
        let cache = f.dir.path().join("cache");
        let artifact = crate::wasm::precompile_cached(&engine, &cache, &wasm).unwrap();
        // Point `wasm` somewhere unreadable: success proves the artifact was loaded.
        f.spec.wasm = f.dir.path().join("absent.wasm");
        f.spec.precompiled = Some(artifact.clone());
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?}");
        assert_eq!(f.stdout(), vec!["hello from wasm"]);

        // A garbage artifact falls back to compiling the wasm.
        let mut g = Fixture::new(wasm, &["hello"]);
        let junk = g.dir.path().join("junk.cwasm");
        std::fs::write(&junk, b"garbage").unwrap();
        g.spec.precompiled = Some(junk);
        let rec = execute(&g.spec);
        assert_eq!(rec.exit_code, 0, "{target}: {rec:?}");
        assert_eq!(g.stdout(), vec!["hello from wasm"]);
    }
}

#[test]
fn exec_timeout_interrupts_a_busy_guest() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "spin") else {
            continue;
        };
        let mut f = Fixture::new(wasm, &["spin"]);
        f.spec.mode = RunMode::Exec { timeout_ms: 200 };
        let t = std::time::Instant::now();
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, EXIT_TIMEOUT, "{target}: {rec:?}");
        assert_eq!(rec.message, "timed out after 200 ms");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[test]
fn no_log_path_discards_output() {
    let Some(wasm) = guest("wasm32-wasip1", "hello") else {
        return;
    };
    let mut f = Fixture::new(wasm, &["hello"]);
    f.spec.log_path = None;
    let rec = execute(&f.spec);
    assert_eq!(rec.exit_code, 0, "{rec:?}");
    assert!(!f.dir.path().join("0.log").exists());
}

#[test]
fn http_mode_rejects_non_http_guests_before_serving() {
    for target in TARGETS {
        let Some(wasm) = guest(target, "hello") else {
            continue;
        };
        let mut f = Fixture::new(wasm, &["hello"]);
        f.spec.mode = RunMode::Http { port: 0 };
        let rec = execute(&f.spec);
        assert_eq!(rec.exit_code, EXIT_FAILURE, "{target}: {rec:?}");
        let want = if target == "wasm32-wasip1" {
            "core module"
        } else {
            "not servable over HTTP"
        };
        assert!(rec.message.contains(want), "{target}: {}", rec.message);
    }
}

#[test]
fn exit_record_round_trip_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exit.json");
    assert_eq!(read_exit_record(&path), None);
    let rec = ExitRecord {
        exit_code: 143,
        reason: REASON_ERROR,
        message: "stopped by SIGTERM".into(),
        started_at: 1,
        finished_at: 2,
    };
    write_exit_record(&path, &rec).unwrap();
    assert_eq!(read_exit_record(&path), Some(rec.clone()));
    let newer = ExitRecord {
        exit_code: 0,
        ..rec
    };
    write_exit_record(&path, &newer).unwrap();
    assert_eq!(read_exit_record(&path), Some(newer));
    // Only the record itself is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A torn record reads as absent.
    std::fs::write(&path, b"{\"exit_code\": 1").unwrap();
    assert_eq!(read_exit_record(&path), None);
}

#[test]
fn readiness_lines() {
    assert_eq!(parse_ready_line(Some("ok\n")), Ok(()));
    assert_eq!(
        parse_ready_line(Some("error: cannot read spec x: gone")),
        Err("cannot read spec x: gone".into())
    );
    assert!(parse_ready_line(None).unwrap_err().contains("exited"));
    assert!(parse_ready_line(Some("hello")).is_err());
}

#[test]
fn spec_without_new_fields_still_parses() {
    let json = r#"{"container_id":"c","mode":{"exec":{"timeout_ms":5}},"wasm":"/w.wasm",
        "precompiled":null,"args":["w"],"env":[["A","1"]],"cwd":"/","preopens":[],
        "log_path":null,"exit_file":"/e","cgroup_procs":[],"netns":null,"uid":null,
        "gid":null,"additional_gids":[],"stdin":false,"oom_score_adj":null}"#;
    let spec: RunnerSpec = serde_json::from_str(json).unwrap();
    assert_eq!(spec.mode, RunMode::Exec { timeout_ms: 5 });
    assert_eq!(spec.stop_grace_ms, None);
}

/// The exit record's directory belongs to the container's user, who may plant anything
/// there: the daemon must not follow a link to `/dev/zero`, block on a FIFO, or read a huge
/// file whole.
#[test]
fn exit_record_reader_resists_what_the_container_user_plants() {
    let dir = tempfile::tempdir().unwrap();
    let rec = ExitRecord {
        exit_code: 3,
        reason: REASON_ERROR,
        message: String::new(),
        started_at: 1,
        finished_at: 2,
    };
    let good = dir.path().join("good.json");
    write_exit_record(&good, &rec).unwrap();
    assert_eq!(read_exit_record(&good).map(|r| r.exit_code), Some(3));

    let link = dir.path().join("zero.json");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    assert!(read_exit_record(&link).is_none());
    let to_good = dir.path().join("link.json");
    std::os::unix::fs::symlink(&good, &to_good).unwrap();
    assert!(
        read_exit_record(&to_good).is_none(),
        "links are not followed"
    );

    let fifo = dir.path().join("fifo.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert!(read_exit_record(&fifo).is_none());

    let big = dir.path().join("big.json");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 40).unwrap();
    assert!(read_exit_record(&big).is_none());
}
