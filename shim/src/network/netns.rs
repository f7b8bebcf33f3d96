//! Persistent network namespaces, made the way `ip netns add` makes them: a new namespace is
//! created by a short-lived thread and kept alive by bind-mounting its nsfs file onto an empty
//! file, so it outlives every process and can be joined by path (`setns`).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::{NetworkError, Result};

/// The conventional directory (`ip netns` uses it too); wasmcri may use `<state>/netns`.
pub const DEFAULT_DIR: &str = "/var/run/netns";

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> NetworkError + 'a {
    move |source| NetworkError::Netns {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn nix_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(nix::Error) -> NetworkError + 'a {
    move |e| NetworkError::Netns {
        path: path.to_path_buf(),
        op,
        source: io::Error::from(e),
    }
}

/// Create a network namespace bound at `dir/name` (with `lo` up) and return its path.
/// Fails if `dir/name` exists.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(NetworkError::Netns {
            path,
            op: "validate name",
            source: io::Error::new(io::ErrorKind::InvalidInput, "bad namespace name"),
        });
    }
    fs::create_dir_all(dir).map_err(err(dir, "create dir"))?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(err(&path, "create mount point"))?;
    // unshare(CLONE_NEWNET) moves only the calling thread, so do it in a thread of its own
    // that ends right after the bind mount has pinned the namespace.
    let result = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(nix_err(&path, "unshare"))?;
            let tid = nix::unistd::gettid();
            let src = format!("/proc/self/task/{tid}/ns/net");
            mount(
                Some(src.as_str()),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(nix_err(&path, "bind mount"))?;
            loopback_up().map_err(err(&path, "bring up lo"))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetworkError::Netns {
                path: path.clone(),
                op: "namespace thread",
                source: io::Error::other("panicked"),
            })
        })
    });
    if let Err(e) = result {
        return Err(match remove(&path) {
            Ok(()) => e,
            Err(c) => NetworkError::Rollback {
                error: Box::new(e),
                cleanup: Box::new(c),
            },
        });
    }
    Ok(path)
}

/// Set `IFF_UP` on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq whose name we fill in; the fd is
    // closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = io::Error::last_os_error();
        libc::close(fd);
        if r == 0 { Ok(()) } else { Err(e) }
    }
}

/// Unmount and unlink a namespace file. Missing or already unmounted is success.
pub fn remove(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(nix_err(path, "unmount")(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(path, "unlink")(e)),
    }
}

/// Whether `path` is a live namespace (an nsfs file, i.e. still bind-mounted).
pub fn is_namespace(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    statfs(path)
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Run `f` on a fresh thread that has joined the namespace at `path`; the thread ends with
/// `f`, so no thread of the caller ever changes namespace.
pub fn run_in<T: Send, F: FnOnce() -> T + Send>(path: &Path, f: F) -> Result<T> {
    let file = fs::File::open(path).map_err(err(path, "open"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(nix_err(path, "setns"))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}
