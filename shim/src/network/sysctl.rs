//! Pod sysctls (`securityContext.sysctls`, RunPodSandbox's `linux.sysctls`).
//!
//! Only namespaced sysctls a Wasm pod owns are accepted ([`classify`]):
//! - `net.*`: written inside the pod's network namespace ([`apply`]), never for a pod on the
//!   node's network (that would change the node's; runc refuses it too);
//! - the IPC namespace's (`kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`; the
//!   kubelet's default safe set has `kernel.shm_rmid_forced`): accepted with a well-formed
//!   value and not written. A Wasm pod has no IPC namespace of its own — its runners share
//!   the node's, so writing them would change the node — and no guest can create a System V
//!   IPC object or a POSIX message queue (WASI has neither), so the setting has nothing to
//!   act on;
//! - anything else (`kernel.core_pattern`, `vm.*`, `kernel.hostname`, ...) is refused, naming it.
//!
//! Names are checked strictly before anything is written: components of `[A-Za-z0-9_-]`
//! joined by `.` (no `/`, so no `..` or slash-separated form can reach another directory),
//! and the file is opened with `openat2` beneath a `/proc/sys` directory descriptor opened
//! by a thread that has joined the pod's network namespace, following no link and crossing
//! no mount. The daemon's own threads never change namespace.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// Most sysctls one pod may set (a pod spec lists a handful).
pub const MAX_SYSCTLS: usize = 256;
/// Longest sysctl name accepted.
pub const MAX_NAME: usize = 256;
/// Longest value accepted (the kernel reads at most a page per write).
pub const MAX_VALUE: usize = 4095;

/// The IPC namespace's sysctls (the kernel's `ipc_sysctls` table), besides `fs.mqueue.*`.
const IPC: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shm_rmid_forced",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
];

/// What a pod sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The network namespace: written there.
    Net,
    /// The IPC namespace, which a Wasm pod does not have: accepted, not written.
    Ipc,
}

/// Why a pod's sysctls were refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The name or value is refused before anything is written.
    #[error("sysctl {name:?}: {reason}")]
    Invalid {
        /// The sysctl as the kubelet named it.
        name: String,
        /// Why.
        reason: String,
    },
    /// Writing the value in the pod's network namespace failed.
    #[error("sysctl {name} = {value:?} in network namespace {}: {source}", netns.display())]
    Write {
        /// The sysctl.
        name: String,
        /// The value.
        value: String,
        /// The pod's network namespace.
        netns: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl SysctlError {
    /// Whether the request is at fault (a refused name or value, or one the kernel rejects
    /// or does not have in a pod's namespace) rather than the node.
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            SysctlError::Invalid { .. } => true,
            SysctlError::Write { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EINVAL | libc::ERANGE | libc::ENOENT | libc::EISDIR | libc::ENOTDIR)
            ),
        }
    }
}

fn invalid(name: &str, reason: impl Into<String>) -> SysctlError {
    SysctlError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Checks `name` and says where it belongs, or why it is refused.
pub fn classify(name: &str) -> Result<Class, SysctlError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(invalid(name, format!("names are 1 to {MAX_NAME} bytes")));
    }
    let plain = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !name.split('.').all(plain) {
        return Err(invalid(
            name,
            "a name is dot-separated components of letters, digits, '_' and '-' \
             (no '/', no empty component)",
        ));
    }
    if name.starts_with("net.") {
        Ok(Class::Net)
    } else if IPC.contains(&name) || name.starts_with("fs.mqueue.") {
        Ok(Class::Ipc)
    } else {
        Err(invalid(
            name,
            "not a namespaced sysctl a Wasm pod can set (only net.* and the IPC \
             namespace's kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)",
        ))
    }
}

/// Checks every sysctl of a pod before anything is made: at most [`MAX_SYSCTLS`], names
/// ([`classify`]), values (one line, at most [`MAX_VALUE`] bytes; the IPC ones integers),
/// and no `net.*` for a pod on the node's network.
pub fn validate(sysctls: &BTreeMap<String, String>, host_network: bool) -> Result<(), SysctlError> {
    if sysctls.len() > MAX_SYSCTLS {
        return Err(invalid(
            sysctls.keys().next().map_or("", String::as_str),
            format!("{} sysctls, at most {MAX_SYSCTLS} allowed", sysctls.len()),
        ));
    }
    for (name, value) in sysctls {
        let class = classify(name)?;
        if value.is_empty()
            || value.len() > MAX_VALUE
            || value
                .bytes()
                .any(|b| b.is_ascii_control() && b != b' ' && b != b'\t')
        {
            return Err(invalid(
                name,
                format!("the value must be 1 to {MAX_VALUE} bytes on one line"),
            ));
        }
        match class {
            Class::Net if host_network => {
                return Err(invalid(
                    name,
                    "not allowed for a pod in the node's network namespace \
                     (it would change the node's setting)",
                ));
            }
            Class::Ipc
                if !value
                    .split_ascii_whitespace()
                    .all(|w| w.parse::<i64>().is_ok()) =>
            {
                return Err(invalid(name, "the value must be integers"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes the `net.*` sysctls of `sysctls` inside the network namespace at `netns`, from a
/// thread of its own (the calling thread never changes namespace). Stops at the first
/// failure; the caller removes the namespace, which takes every value with it.
pub fn apply(netns: &Path, sysctls: &BTreeMap<String, String>) -> Result<(), SysctlError> {
    let net: Vec<(&String, &String)> = sysctls
        .iter()
        .filter(|(n, _)| matches!(classify(n), Ok(Class::Net)))
        .collect();
    if net.is_empty() {
        return Ok(());
    }
    let write_err = |name: &str, value: &str, source: io::Error| SysctlError::Write {
        name: name.to_owned(),
        value: value.to_owned(),
        netns: netns.to_owned(),
        source,
    };
    crate::network::netns::run_in(netns, || -> Result<(), SysctlError> {
        let root = open_proc_sys().map_err(|e| write_err(net[0].0, net[0].1, e))?;
        for (name, value) in &net {
            write_one(&root, name, value).map_err(|e| write_err(name, value, e))?;
        }
        Ok(())
    })
    .map_err(|e| {
        write_err(
            net[0].0,
            net[0].1,
            io::Error::other(format!("enter the namespace: {e}")),
        )
    })?
}

/// `/proc/sys`, checked to be procfs.
fn open_proc_sys() -> io::Result<std::os::fd::OwnedFd> {
    let fd = nix::fcntl::open(
        "/proc/sys",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let fs = nix::sys::statfs::fstatfs(&fd)?;
    if fs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(io::Error::other("/proc/sys is not procfs"));
    }
    Ok(fd)
}

/// Writes `value` to the sysctl `name` (already [`classify`]-checked) below `root`.
fn write_one(root: &impl AsFd, name: &str, value: &str) -> io::Result<()> {
    let rel = name.replace('.', "/");
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd = openat2(root, rel.as_str(), how)?;
    let mut f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::other(format!(
            "short write ({n} of {} bytes)",
            value.len()
        )));
    }
    Ok(())
}

/// Reads the sysctl `name` inside the network namespace at `netns` (tests and diagnostics).
pub fn read(netns: &Path, name: &str) -> Result<String, SysctlError> {
    classify(name)?;
    let rel = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
    crate::network::netns::run_in(netns, || std::fs::read_to_string(&rel))
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| SysctlError::Write {
            name: name.to_owned(),
            value: String::new(),
            netns: netns.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_kubelets_safe_set_is_accepted() {
        let safe = map(&[
            ("kernel.shm_rmid_forced", "1"),
            ("net.ipv4.ip_local_port_range", "32768 60999"),
            ("net.ipv4.tcp_syncookies", "1"),
            ("net.ipv4.ping_group_range", "0 2147483647"),
            ("net.ipv4.ip_unprivileged_port_start", "80"),
            ("net.ipv4.ip_local_reserved_ports", "30000-30100"),
            ("net.ipv4.tcp_keepalive_time", "600"),
            ("net.ipv4.tcp_fin_timeout", "30"),
            ("net.ipv4.tcp_keepalive_intvl", "60"),
            ("net.ipv4.tcp_keepalive_probes", "5"),
            ("net.ipv4.tcp_rmem", "4096 87380 6291456"),
            ("net.ipv4.tcp_wmem", "4096\t16384 4194304"),
            ("kernel.sem", "250 32000 32 128"),
            ("fs.mqueue.msg_max", "10"),
        ]);
        validate(&safe, false).unwrap();
        assert_eq!(classify("kernel.shmmax").unwrap(), Class::Ipc);
        assert_eq!(classify("net.core.somaxconn").unwrap(), Class::Net);
    }

    #[test]
    fn hostile_and_foreign_names_are_refused() {
        for name in [
            "net/../../kernel/core_pattern",
            "net.ipv4/../../../kernel.core_pattern",
            "kernel.core_pattern",
            "kernel.hostname",
            "vm.overcommit_memory",
            "fs.file-max",
            "net..ipv4",
            "net.",
            ".net.ipv4",
            "net.ipv4.ip_forward\n",
            "net.ipv4.*",
            "net.ipv4.ip forward",
            "",
            "kernel.shm_rmid_forced.x",
        ] {
            let e = validate(&map(&[(name, "1")]), false).unwrap_err();
            assert!(e.is_invalid_argument(), "{name:?}");
            assert!(e.to_string().contains(&format!("{name:?}")), "{e}");
        }
        assert!(classify(&"n".repeat(300)).is_err());
    }

    #[test]
    fn values_and_host_network_are_checked() {
        for v in ["", "1\n0", "1\0", &"9".repeat(5000)] {
            assert!(validate(&map(&[("net.ipv4.tcp_syncookies", v)]), false).is_err());
        }
        assert!(validate(&map(&[("kernel.shmmax", "lots")]), false).is_err());
        let many: BTreeMap<String, String> = (0..300)
            .map(|i| (format!("net.ipv4.conf.eth{i}.rp_filter"), "1".to_string()))
            .collect();
        assert!(
            validate(&many, false)
                .unwrap_err()
                .to_string()
                .contains("300 sysctls")
        );
        let e = validate(&map(&[("net.ipv4.tcp_syncookies", "1")]), true).unwrap_err();
        assert!(e.to_string().contains("node's network namespace"), "{e}");
        // IPC sysctls are not the network's: fine on the node's network too.
        validate(&map(&[("kernel.shm_rmid_forced", "1")]), true).unwrap();
    }

    #[test]
    fn applied_inside_the_namespace_only() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIP: needs root (network namespaces)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let ns = crate::network::netns::create(d.path(), "sysctl-test").unwrap();
        let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let want = if host.split_whitespace().next() == Some("20000") {
            "20001 40001"
        } else {
            "20000 40000"
        };
        let s = map(&[
            ("net.ipv4.ip_local_port_range", want),
            ("kernel.shm_rmid_forced", "1"),
        ]);
        apply(&ns, &s).unwrap();
        let got = read(&ns, "net.ipv4.ip_local_port_range").unwrap();
        assert_eq!(got.split_whitespace().collect::<Vec<_>>().join(" "), want);
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap(),
            host
        );
        // Unknown in a pod's namespace, or a value the kernel refuses: argument errors.
        for (name, value) in [
            ("net.ipv4.no_such_thing", "1"),
            ("net.ipv4.ip_local_port_range", "banana"),
        ] {
            let e = apply(&ns, &map(&[(name, value)])).unwrap_err();
            assert!(e.is_invalid_argument(), "{e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        crate::network::netns::remove(&ns).unwrap();
    }
}
