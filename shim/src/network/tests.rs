//! CNI client tests with scripted fake plugins (what was run, with which env and stdin, in
//! which order), namespace tests, and real bridge/host-local tests on the host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;

/// A conf dir, a bin dir with fake plugins that log their calls, a cache dir.
struct Fake {
    _t: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
    log: PathBuf,
    cni: Cni,
}

const RESULT_A: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}]}"#;
const RESULT_B: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1"},{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.6/24","gateway":"10.9.0.1","interface":1}]}"#;

impl Fake {
    fn new() -> Fake {
        let t = tempfile::tempdir().unwrap();
        let conf = t.path().join("net.d");
        let bin = t.path().join("bin");
        let log = t.path().join("log");
        for d in [&conf, &bin, &log] {
            fs::create_dir_all(d).unwrap();
        }
        let cni = Cni::new(CniConfig {
            conf_dir: conf.clone(),
            bin_dirs: vec![t.path().join("nonexistent"), bin.clone()],
            cache_dir: t.path().join("cache"),
            plugin_timeout: Duration::from_secs(10),
        });
        let f = Fake {
            _t: t,
            conf,
            bin,
            log,
            cni,
        };
        f.plugin(
            "oka",
            &format!("if [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' '{RESULT_A}'; fi"),
        );
        f.plugin(
            "okb",
            &format!("if [ \"$CNI_COMMAND\" = ADD ]; then printf '%s' '{RESULT_B}'; fi"),
        );
        f.plugin(
            "fail",
            r#"if [ "$CNI_COMMAND" = ADD ]; then echo '{"cniVersion":"1.0.0","code":7,"msg":"boom","details":"no luck"}'; exit 1; fi"#,
        );
        f.plugin(
            "gone",
            r#"if [ "$CNI_COMMAND" = DEL ]; then echo '{"code":11,"msg":"link wcri0 not found"}'; exit 1; fi; printf '%s' '{"cniVersion":"1.0.0"}'"#,
        );
        f.plugin("slow", "exec sleep 10");
        f
    }

    /// A plugin script that logs `NNN-COMMAND-name.{stdin,env}` then runs `body`.
    fn plugin(&self, name: &str, body: &str) {
        let log = self.log.display();
        let script = format!(
            "#!/bin/sh\nn=$(printf %03d $(ls '{log}' | wc -l))\ncat > '{log}'/$n-$CNI_COMMAND-{name}.stdin\nenv | grep '^CNI_' | sort > '{log}'/$n-$CNI_COMMAND-{name}.env\n{body}\n"
        );
        let p = self.bin.join(name);
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn conflist(&self, file: &str, plugins: Value) {
        let v = json!({"cniVersion": "1.0.0", "name": "fakenet", "plugins": plugins});
        fs::write(self.conf.join(file), v.to_string()).unwrap();
    }

    /// `(command, plugin)` of each call, in order.
    fn calls(&self) -> Vec<(String, String)> {
        let mut names: Vec<String> = fs::read_dir(&self.log)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".stdin"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let parts: Vec<&str> = n.trim_end_matches(".stdin").splitn(3, '-').collect();
                (parts[1].to_string(), parts[2].to_string())
            })
            .collect()
    }

    fn logged(&self, cmd: &str, plugin: &str, ext: &str) -> String {
        let suffix = format!("-{cmd}-{plugin}.{ext}");
        let mut hits: Vec<PathBuf> = fs::read_dir(&self.log)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(&suffix))
            .collect();
        hits.sort();
        fs::read_to_string(hits.last().unwrap_or_else(|| panic!("no {suffix}"))).unwrap()
    }

    fn cache_files(&self) -> usize {
        fs::read_dir(&self.cni.config().cache_dir)
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn attachment(id: &str, netns: &Path) -> Attachment {
    Attachment {
        container_id: id.into(),
        netns: netns.to_path_buf(),
        ifname: "eth0".into(),
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_uid: "uid-1".into(),
        port_mappings: vec![],
    }
}

#[test]
fn load_picks_first_valid_file_by_name() {
    let f = Fake::new();
    assert_eq!(
        f.cni.check_config().unwrap_err(),
        format!("no network config found in {}", f.conf.display())
    );
    fs::write(f.conf.join("00-bad.conflist"), "{not json").unwrap();
    fs::write(
        f.conf.join("05-noplugins.conflist"),
        r#"{"name":"x","plugins":[]}"#,
    )
    .unwrap();
    fs::write(
        f.conf.join("10-single.conf"),
        r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"cni0"}"#,
    )
    .unwrap();
    fs::write(
        f.conf.join("20-list.conflist"),
        r#"{"cniVersion":"1.0.0","name":"two","plugins":[{"type":"a"}]}"#,
    )
    .unwrap();
    fs::write(f.conf.join("01-ignored.txt"), "x").unwrap();
    let net = f.cni.load().unwrap();
    assert_eq!(net.name, "one");
    assert_eq!(net.cni_version, "0.4.0");
    assert_eq!(net.plugins.len(), 1);
    assert_eq!(net.plugins[0]["bridge"], "cni0");
    assert!(f.cni.check_config().is_ok());
    let missing = Cni::new(CniConfig {
        conf_dir: "/nonexistent/wasmcri/net.d".into(),
        ..CniConfig::default()
    });
    assert_eq!(
        missing.check_config().unwrap_err(),
        "no network config found in /nonexistent/wasmcri/net.d"
    );
}

#[test]
fn parses_results_of_each_version() {
    let r = CniResult::parse("p", serde_json::from_str(RESULT_B).unwrap()).unwrap();
    assert_eq!(r.ips, vec!["10.9.0.6".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(r.ip_configs[0].prefix_len, 24);
    assert_eq!(r.ip_configs[0].gateway, Some("10.9.0.1".parse().unwrap()));
    assert_eq!(r.interfaces.len(), 2);
    assert_eq!(r.interfaces[1].sandbox.as_deref(), Some("/x"));
    let old = json!({"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.2/16","gateway":"10.1.0.1"},"ip6":{"ip":"fd00::2/64"}});
    let r = CniResult::parse("p", old).unwrap();
    assert_eq!(
        r.ips,
        vec![
            "10.1.0.2".parse::<std::net::IpAddr>().unwrap(),
            "fd00::2".parse().unwrap()
        ]
    );
    let bad = json!({"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2"}]});
    assert!(matches!(
        CniResult::parse("p", bad),
        Err(NetworkError::BadResult { .. })
    ));
}

#[tokio::test]
async fn add_chains_prev_result_env_capabilities_then_del_reverses() {
    let f = Fake::new();
    f.conflist(
        "10-fake.conflist",
        json!([{"type": "oka", "capabilities": {"portMappings": true}}, {"type": "okb", "x": 1}]),
    );
    let mut att = attachment("c0ffee", Path::new("/run/netns/test"));
    att.port_mappings = vec![PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: String::new(),
    }];
    let r = f.cni.add(&att).await.unwrap();
    assert_eq!(r.ips, vec!["10.9.0.6".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(
        f.calls(),
        vec![("ADD".into(), "oka".into()), ("ADD".into(), "okb".into())]
    );
    let a: Value = serde_json::from_str(&f.logged("ADD", "oka", "stdin")).unwrap();
    assert_eq!(a["name"], "fakenet");
    assert_eq!(a["cniVersion"], "1.0.0");
    assert!(a.get("prevResult").is_none());
    assert_eq!(
        a["runtimeConfig"]["portMappings"],
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    );
    let b: Value = serde_json::from_str(&f.logged("ADD", "okb", "stdin")).unwrap();
    assert_eq!(
        b["prevResult"],
        serde_json::from_str::<Value>(RESULT_A).unwrap()
    );
    assert_eq!(b["x"], 1);
    assert!(b.get("runtimeConfig").is_none(), "no capability declared");
    let env = f.logged("ADD", "oka", "env");
    for line in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c0ffee",
        "CNI_IFNAME=eth0",
        "CNI_NETNS=/run/netns/test",
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-1",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} not in\n{env}");
    }
    assert!(
        env.contains(&f.bin.display().to_string()),
        "CNI_PATH: {env}"
    );
    assert_eq!(f.cache_files(), 1);

    // DEL without the port mappings in the request: they come from the cache.
    att.port_mappings.clear();
    f.cni.del(&att).await.unwrap();
    assert_eq!(
        f.calls()[2..],
        [("DEL".into(), "okb".into()), ("DEL".into(), "oka".into())]
    );
    let d: Value = serde_json::from_str(&f.logged("DEL", "oka", "stdin")).unwrap();
    assert_eq!(
        d["prevResult"],
        serde_json::from_str::<Value>(RESULT_B).unwrap()
    );
    assert_eq!(d["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
    // The namespace path does not exist: DEL passes it empty.
    assert!(
        f.logged("DEL", "oka", "env")
            .lines()
            .any(|l| l == "CNI_NETNS=")
    );
    assert_eq!(f.cache_files(), 0);
    // Idempotent: again, from the current config, without prevResult.
    f.cni.del(&att).await.unwrap();
    assert_eq!(f.calls().len(), 6);
    let d: Value = serde_json::from_str(&f.logged("DEL", "oka", "stdin")).unwrap();
    assert!(d.get("prevResult").is_none());
}

#[tokio::test]
async fn failed_add_rolls_back_every_plugin_run() {
    let f = Fake::new();
    f.conflist(
        "10-fake.conflist",
        json!([{"type": "oka"}, {"type": "fail"}]),
    );
    let err = f
        .cni
        .add(&attachment("abc", Path::new("/x")))
        .await
        .unwrap_err();
    match &err {
        NetworkError::Plugin { plugin, code, msg } => {
            assert_eq!(plugin, "fail");
            assert_eq!(*code, 7);
            assert!(msg.contains("boom") && msg.contains("no luck"), "{msg}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(
        f.calls(),
        vec![
            ("ADD".into(), "oka".into()),
            ("ADD".into(), "fail".into()),
            ("DEL".into(), "fail".into()),
            ("DEL".into(), "oka".into()),
        ]
    );
    assert_eq!(f.cache_files(), 0);
}

#[tokio::test]
async fn plugin_timeout_kills_it() {
    let f = Fake::new();
    f.conflist("10-fake.conflist", json!([{"type": "slow"}]));
    let cni = Cni::new(CniConfig {
        plugin_timeout: Duration::from_millis(300),
        ..f.cni.config().clone()
    });
    let t = Instant::now();
    let err = cni
        .add(&attachment("abc", Path::new("/x")))
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    // The ADD timed out; the rollback DEL of the same plugin timed out too.
    let NetworkError::Rollback { error, .. } = &err else {
        panic!("{err}")
    };
    assert!(matches!(**error, NetworkError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn del_after_restart_uses_cached_config_and_tolerates_not_found() {
    let f = Fake::new();
    f.conflist(
        "10-fake.conflist",
        json!([{"type": "gone"}, {"type": "oka"}]),
    );
    let att = attachment("abc", Path::new("/x"));
    f.cni.add(&att).await.unwrap();
    fs::remove_file(f.conf.join("10-fake.conflist")).unwrap();
    let restarted = Cni::new(f.cni.config().clone());
    restarted.del(&att).await.unwrap();
    let calls = f.calls();
    assert_eq!(
        calls[2..],
        [("DEL".into(), "oka".into()), ("DEL".into(), "gone".into())]
    );
    assert_eq!(f.cache_files(), 0);
    // Nothing cached and no config: nothing to undo.
    restarted.del(&att).await.unwrap();
    assert_eq!(f.calls().len(), 4);
}

#[tokio::test]
async fn missing_plugin_and_bad_attachment() {
    let f = Fake::new();
    f.conflist("10-fake.conflist", json!([{"type": "nope"}]));
    let err = f
        .cni
        .add(&attachment("abc", Path::new("/x")))
        .await
        .unwrap_err();
    assert!(matches!(err, NetworkError::PluginNotFound { .. }), "{err}");
    let err = f
        .cni
        .add(&attachment("a/b", Path::new("/x")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NetworkError::InvalidAttachment { .. }),
        "{err}"
    );
}

mod real;
