//! What the runner keeps of root once setup is done: nothing a WASI guest cannot use.
//!
//! A guest only reaches the host through wasmtime's WASI implementation, which needs no
//! privilege beyond binding a low port. So after the cgroups, namespaces, jail and log are
//! set up, and the credentials switched ([`super::setup::drop_privileges`]):
//! - the capability bounding set is emptied except for [`KEPT`] (no later `execve` can gain a
//!   capability back), the ambient and inheritable sets cleared;
//! - a runner still running as uid 0 keeps only [`KEPT`] in its permitted and effective
//!   sets (one that switched to another uid lost every capability in `setuid` already);
//! - `no_new_privs` is set;
//! - a seccomp filter refuses the system calls a WASI runtime never makes but an escaped
//!   guest would reach for: mounts and namespaces (`mount`, `unshare`, `setns`, `clone` with
//!   namespace flags, the new mount API), other processes' memory (`ptrace`,
//!   `process_vm_*`), kernel modules, `kexec`, BPF, perf events, keyrings, `userfaultfd`,
//!   `io_uring`, handle-based opens (`open_by_handle_at`), clocks, swap, reboot. `clone3` gets
//!   `ENOSYS` (its flags sit in memory a filter cannot read), so glibc falls back to `clone`,
//!   whose flags it can. Everything else is allowed: wasmtime and tokio need a broad,
//!   version-dependent set (mmap/mprotect, futex, epoll, sockets, signals, threads), and an
//!   allow-list that missed one would kill guests in production.
//!
//! In a pod's user namespace (`hostUsers: false`, see [`super::setup::enter_userns`]) the
//! bounding set is emptied after joining it (joining resets it), and whatever is kept is
//! the namespace's, over nothing the node owns: the pod's network namespace belongs to the
//! node's user namespace, so [`KEPT`] does not let such a guest bind ports below 1024 (the
//! pod can lower `net.ipv4.ip_unprivileged_port_start`).
//!
//! Unlike a Linux container's default set, root guests do not keep `CAP_DAC_OVERRIDE`,
//! `CAP_FOWNER` and friends: WASI offers no chown, mknod or raw sockets, and with them an
//! escaped runner could write any file its jail shows regardless of mode.

use std::collections::BTreeMap;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The capabilities a root guest keeps: binding ports below 1024, as a `wasi:http` server on
/// port 80 does (Linux containers keep it by default too).
pub(crate) const KEPT: [Capability; 1] = [Capability::CAP_NET_BIND_SERVICE];

/// Before the credentials change: empties the bounding set but for [`KEPT`] and clears the
/// ambient and inheritable sets. The permitted and effective sets are untouched, so the
/// `setgroups`/`setuid` that follow still work.
pub(crate) fn limit_bounding_set() -> Result<(), String> {
    // Every capability the kernel knows, including any newer than this crate's list.
    for cap in 0..64 {
        if KEPT.iter().any(|k| k.index() == cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(format!(
                "drop capability {cap} from the bounding set: {err}"
            ));
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("clear inheritable capabilities: {e}"))
}

/// After the credentials changed: keeps only [`KEPT`] (of what is still permitted), sets
/// `no_new_privs` and installs the seccomp filter on every thread.
pub(crate) fn lock_down(filter: &BpfProgram) -> Result<(), String> {
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(|e| format!("read capabilities: {e}"))?;
    let keep: CapsHashSet = KEPT
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &keep)
        .and_then(|()| caps::set(None, CapSet::Permitted, &keep))
        .map_err(|e| format!("drop capabilities: {e}"))?;
    // `apply_filter_all_threads` sets no_new_privs first (the kernel requires it, or
    // CAP_SYS_ADMIN, for a filter).
    seccompiler::apply_filter_all_threads(filter).map_err(|e| format!("install seccomp: {e}"))
}

/// System calls refused with `EPERM`.
fn refused() -> Vec<i64> {
    vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        super::jail::SYS_OPEN_TREE_ATTR,
        libc::SYS_mount_setattr,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kcmp,
        libc::SYS_pidfd_getfd,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ioperm,
    ]
}

/// `clone` flags that make a namespace.
const NAMESPACE_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// The runner's seccomp program: see the module docs. Two filters, because one filter has a
/// single action on match: [`refused`] and namespace-making `clone` get `EPERM`, `clone3`
/// `ENOSYS`. Built once per runner, before any guest code.
pub(crate) fn filters() -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("seccomp: unsupported architecture: {e}"))?;
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> =
        refused().into_iter().map(|n| (n, vec![])).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&f| {
            let f = f as u64;
            SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f)
                .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("seccomp rule: {e}"))?;
    eperm.insert(libc::SYS_clone, clone_rules);
    let enosys: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, vec![])].into();
    [(eperm, libc::EPERM as u32), (enosys, libc::ENOSYS as u32)]
        .into_iter()
        .map(|(rules, errno)| {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno),
                arch,
            )
            .and_then(BpfProgram::try_from)
            .map_err(|e| format!("seccomp filter: {e}"))
        })
        .collect()
}

/// Installs every filter from [`filters`] after [`lock_down`]'s first one.
pub(crate) fn install_rest(rest: &[BpfProgram]) -> Result<(), String> {
    for f in rest {
        seccompiler::apply_filter_all_threads(f).map_err(|e| format!("install seccomp: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_architecture() {
        let f = filters().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f.iter().all(|p| !p.is_empty()));
    }

    /// In a child process (the filter cannot be removed): after the lock-down, what an
    /// escaped guest would try fails, and what wasmtime needs (threads) still works.
    #[test]
    fn locked_down_process_cannot_mount_unshare_or_ptrace_but_makes_threads() {
        let filters = filters().unwrap();
        // SAFETY: the child only makes system calls, allocates (glibc's malloc is made
        // fork-safe by its atfork handlers) and leaves with `_exit`.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    lock_down(&filters[0]).ok()?;
                    install_rest(&filters[1..]).ok()?;
                    // SAFETY: plain system calls with constant arguments.
                    let unshare = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    if unshare == 0 || errno != Some(libc::EPERM) {
                        return Some(2);
                    }
                    // SAFETY: as above.
                    if unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0 {
                        return Some(3);
                    }
                    if std::thread::spawn(|| 7).join().ok()? != 7 {
                        return Some(4);
                    }
                    let eff = caps::read(None, CapSet::Effective).ok()?;
                    if eff.iter().any(|c| !KEPT.contains(c)) {
                        return Some(5);
                    }
                    Some(0)
                })()
                .unwrap_or(1);
                // SAFETY: ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
