//! The store lock: at most one process owns an image store root at a time.
//!
//! [`ImageStore::open`](super::ImageStore::open) takes an exclusive `flock(2)` on
//! `<root>/.lock` without waiting and keeps it for the store's lifetime. The daemon holds it
//! while it runs, a `wasmcri image` command run without a daemon holds it while it works, and
//! a second opener (a second daemon on the same root, a command while a daemon runs) is
//! refused with [`StoreBusy`], which names the holder. One owner means the in-memory view and
//! the commit lock of that one process see every change, and crash recovery at open can
//! sweep everything half-done.
//!
//! The lock file also holds a small JSON record of the holder ([`Holder`]): its PID and,
//! for a daemon, the socket it serves, so a refused command can say where the daemon is.
//! The kernel drops the lock when its holder exits, kill -9 included; a stale record left
//! behind is overwritten by the next holder. The descriptor is close-on-exec, so processes
//! the daemon starts (container runners) never inherit the lock.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::error::{ImageError, IoContext, Result};

/// Largest holder record read back (it is a PID and a path).
const MAX_RECORD: u64 = 8 << 10;

/// Who holds a store lock, as recorded in the lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The holder's process ID.
    pub pid: u32,
    /// The socket the holder serves the store on (a daemon), once it said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<PathBuf>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.serving {
            Some(s) => write!(
                f,
                "the wasmcri daemon (pid {}) serving {}",
                self.pid,
                s.display()
            ),
            None => write!(f, "process {}", self.pid),
        }
    }
}

/// The store at `root` is owned by another process (or another open store in this one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "image store {root} is in use by {}",
    holder.as_ref().map_or_else(|| "another process".to_string(), Holder::to_string),
    root = root.display()
)]
pub struct StoreBusy {
    /// The store root.
    pub root: PathBuf,
    /// The holder's record, when it could be read.
    pub holder: Option<Holder>,
}

/// An exclusive lock on a store root, released on drop.
pub struct StoreLock {
    file: Flock<fs::File>,
    path: PathBuf,
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StoreLock {
    /// Takes the lock on `root` (which must exist) without waiting, and records this
    /// process as its holder. Fails with [`ImageError::Busy`] while anyone else holds it.
    pub fn acquire(root: &Path) -> Result<StoreLock> {
        let path = root.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .at(&path)?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(ImageError::Busy(StoreBusy {
                    root: root.to_path_buf(),
                    holder: read_holder(&mut file),
                }));
            }
            Err((_, errno)) => return Err(ImageError::io(&path, errno.into())),
        };
        let mut lock = StoreLock { file, path };
        lock.record(&Holder {
            pid: std::process::id(),
            serving: None,
        })?;
        Ok(lock)
    }

    /// Records that the holder serves the store on `socket`, for the messages of refused
    /// openers.
    pub fn announce(&mut self, socket: &Path) -> Result<()> {
        self.record(&Holder {
            pid: std::process::id(),
            serving: Some(socket.to_path_buf()),
        })
    }

    fn record(&mut self, holder: &Holder) -> Result<()> {
        let data = serde_json::to_vec(holder)
            .map_err(|e| ImageError::Internal(format!("serialising lock holder: {e}")))?;
        let path = &self.path;
        let f: &mut fs::File = &mut self.file;
        f.set_len(0).at(path)?;
        f.rewind().at(path)?;
        f.write_all(&data).at(path)
    }
}

/// The holder record in a lock file someone else holds; `None` when it is missing,
/// half-written, not ours, or left by a holder that is gone (the lock's holder then is
/// something that took it without writing a record).
fn read_holder(file: &mut fs::File) -> Option<Holder> {
    let mut data = Vec::new();
    file.take(MAX_RECORD).read_to_end(&mut data).ok()?;
    let holder: Holder = serde_json::from_slice(&data).ok()?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(holder.pid).ok()?);
    // Signal 0: only whether the process exists.
    match nix::sys::signal::kill(pid, None) {
        Err(Errno::ESRCH) => None,
        _ => Some(holder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(root: &Path) -> StoreBusy {
        match StoreLock::acquire(root) {
            Err(ImageError::Busy(b)) => b,
            other => panic!("expected Busy, got {other:?}"),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let lock = StoreLock::acquire(d.path()).unwrap();
        let b = busy(d.path());
        assert_eq!(b.root, d.path());
        assert_eq!(
            b.holder,
            Some(Holder {
                pid: std::process::id(),
                serving: None
            })
        );
        assert_eq!(
            b.to_string(),
            format!(
                "image store {} is in use by process {}",
                d.path().display(),
                std::process::id()
            )
        );
        drop(lock);
        StoreLock::acquire(d.path()).unwrap();
    }

    #[test]
    fn a_refused_opener_learns_the_daemons_socket() {
        let d = tempfile::tempdir().unwrap();
        let mut lock = StoreLock::acquire(d.path()).unwrap();
        // A longer record first: announcing must not leave its tail behind.
        lock.announce(
            &d.path()
                .join("a-much-longer-socket-name-than-the-next.sock"),
        )
        .unwrap();
        lock.announce(Path::new("/run/w.sock")).unwrap();
        let b = busy(d.path());
        assert_eq!(
            b.holder.as_ref().and_then(|h| h.serving.clone()),
            Some(PathBuf::from("/run/w.sock"))
        );
        assert!(
            b.to_string().ends_with(&format!(
                "the wasmcri daemon (pid {}) serving /run/w.sock",
                std::process::id()
            )),
            "{b}"
        );
    }

    #[test]
    fn an_unreadable_record_still_refuses() {
        let d = tempfile::tempdir().unwrap();
        let _lock = StoreLock::acquire(d.path()).unwrap();
        fs::write(d.path().join(".lock"), vec![b'x'; 2 * MAX_RECORD as usize]).unwrap();
        let b = busy(d.path());
        assert_eq!(b.holder, None);
        assert!(b.to_string().ends_with("in use by another process"), "{b}");
    }

    #[test]
    fn a_stale_record_is_replaced_by_the_next_holder() {
        let d = tempfile::tempdir().unwrap();
        let stale = Holder {
            pid: 1,
            serving: Some(PathBuf::from("/gone.sock")),
        };
        fs::write(d.path().join(".lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
        let _lock = StoreLock::acquire(d.path()).unwrap();
        assert_eq!(busy(d.path()).holder.unwrap().pid, std::process::id());
    }

    #[test]
    fn a_record_of_a_dead_holder_is_not_believed() {
        let d = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = Holder {
            pid: dead,
            serving: Some(PathBuf::from("/gone.sock")),
        };
        fs::write(d.path().join(".lock"), serde_json::to_vec(&stale).unwrap()).unwrap();
        // Held by something that writes no record (flock(1), an operator's script).
        let _held = Flock::lock(
            fs::File::open(d.path().join(".lock")).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .map_err(|(_, e)| e)
        .unwrap();
        assert_eq!(busy(d.path()).holder, None);
    }

    #[test]
    fn another_process_is_refused_too() {
        // flock(1) from util-linux, in a process of its own: the lock holds across processes.
        let d = tempfile::tempdir().unwrap();
        let _lock = StoreLock::acquire(d.path()).unwrap();
        let st = std::process::Command::new("flock")
            .args(["--nonblock", "--exclusive"])
            .arg(d.path().join(".lock"))
            .arg("true")
            .status()
            .expect("flock(1)");
        assert_eq!(st.code(), Some(1), "flock(1) got the lock: {st}");
    }
}
