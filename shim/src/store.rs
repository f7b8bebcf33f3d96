//! Metadata: one JSON file per record, written to a temporary file and renamed over the old
//! one, so a `kill -9` at any point leaves either the old record or the new one, never half
//! of one.
//!
//! Two durability levels:
//! - [`write_atomic`]/[`write_atomic_via`] fsync the file and its directory before returning:
//!   image records, blobs and precompiled artifacts, which are expensive to get again.
//! - [`save`]/[`remove`] (pod and container records) return once the rename is done and queue
//!   the file and its directory for a background fsync ([`flush_pending`] waits for it). The
//!   rename alone is atomic for other processes and survives a daemon crash, which is what the
//!   lifecycle RPCs need; an fsync (8 ms p50 on this VM's disk) on every CreateContainer and
//!   StartContainer would cost more than starting the guest. The window is power loss in the
//!   milliseconds after an RPC returned, and then every runner is gone anyway: the kubelet
//!   re-creates pods after a node reboot, and [`load`] reports a record torn by a power cut as
//!   [`StoreError::Corrupt`], which recovery skips. containerd makes the same split (task
//!   state lives on tmpfs).
//!
//! Why files and not an embedded database: records are small, few (hundreds), written rarely
//! (a handful per container lifetime) and read once at startup; a rename is the simplest
//! transaction that has these properties, and an operator can read the state with `cat`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A store failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("metadata {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but does not hold a valid record.
    #[error("corrupt metadata {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename,
/// fsync of the directory). Creates the directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    write_atomic_via(dir, path, bytes)
}

/// [`write_atomic`] with the temporary file in `tmp_dir` (same filesystem as `path`), for
/// stores that sweep their own temp directory after a crash. Every durable file wasmcri
/// writes (metadata, exit records, image records, precompiled artifacts) goes through here.
pub fn write_atomic_via(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(tmp_dir, path, bytes, true)?;
    // The rename is only durable once the directory entry is.
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to a temporary file in `tmp_dir` (through the descriptor it was created
/// with), fsyncs it if `fsync`, and renames it over `path`.
fn replace(tmp_dir: &Path, path: &Path, bytes: &[u8], fsync: bool) -> Result<(), StoreError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(io_err(tmp_dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    if fsync {
        tmp.as_file().sync_all().map_err(io_err(path))?;
    }
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io { source, .. } => source,
            StoreError::Corrupt { source, .. } => std::io::Error::other(source),
        }
    }
}

/// fsyncs a directory so a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fsync_dir(dir).map_err(io_err(dir))
}

/// [`sync_dir`] with the bare OS error, for callers with error types of their own (the
/// image store).
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir).and_then(|f| f.sync_all())
}

/// Removes a file or a directory tree, never following a symlink (a link is removed, not
/// its target); an absent path is success. Returns whether something was removed. The bare
/// OS error, for callers with error types of their own; [`remove`] also queues the parent's
/// fsync.
pub fn remove_tree(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map(|()| true),
        Ok(_) => std::fs::remove_file(path).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `value` as JSON via a temporary file and a rename — atomic for readers, but not
/// fsynced: for files that need not survive a crash (a runner spec is read once, right
/// after it is written; a crash before that fails the start anyway).
pub fn save_volatile<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    replace(path.parent().unwrap_or(Path::new(".")), path, &bytes, false)
}

/// Serialises `value` as JSON and writes it atomically (temp file and rename, directory
/// created if needed); the fsync happens in the background (see the module docs).
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_volatile(path, value)?;
    flusher::queue(path.to_owned());
    Ok(())
}

/// Blocks until every record saved or removed before this call has been fsynced (with its
/// directory). Called at daemon shutdown and by tests.
pub fn flush_pending() {
    flusher::barrier();
}

/// Background fsync of saved records: one thread, fed by a channel; each wake-up takes
/// everything queued so far, so a burst of saves costs one fsync per file and one per
/// directory.
mod flusher {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;
    use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

    enum Msg {
        File(PathBuf),
        Barrier(SyncSender<()>),
    }

    fn sender() -> Option<&'static Sender<Msg>> {
        static TX: OnceLock<Option<Sender<Msg>>> = OnceLock::new();
        TX.get_or_init(|| {
            let (tx, rx) = channel();
            std::thread::Builder::new()
                .name("store-flush".into())
                .spawn(move || run(rx))
                .map_err(|e| tracing::warn!(error = %e, "no background flusher; records are not fsynced"))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
    }

    pub(super) fn queue(path: PathBuf) {
        if let Some(tx) = sender() {
            let _ = tx.send(Msg::File(path));
        }
    }

    pub(super) fn barrier() {
        let (done_tx, done_rx) = sync_channel(1);
        if let Some(tx) = sender()
            && tx.send(Msg::Barrier(done_tx)).is_ok()
        {
            let _ = done_rx.recv();
        }
    }

    fn run(rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut files = BTreeSet::new();
            let mut waiters = Vec::new();
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    Msg::File(p) => {
                        files.insert(p);
                    }
                    Msg::Barrier(w) => waiters.push(w),
                }
            }
            let mut dirs = BTreeSet::new();
            for f in &files {
                // Gone (removed since) or a directory: only the parent entry matters then.
                if let Ok(file) = std::fs::File::open(f)
                    && file.metadata().is_ok_and(|m| m.is_file())
                    && let Err(e) = file.sync_all()
                {
                    tracing::warn!(path = %f.display(), error = %e, "fsync failed");
                }
                dirs.insert(f.parent().unwrap_or(Path::new(".")).to_owned());
            }
            for d in dirs {
                if let Err(e) = super::sync_dir(&d)
                    && d.exists()
                {
                    tracing::warn!(error = %e, "fsync failed");
                }
            }
            for w in waiters {
                let _ = w.send(());
            }
        }
    }
}

/// Reads a JSON record; `Ok(None)` if the file does not exist.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes a file or directory tree if it exists; the parent directory is fsynced in the
/// background.
pub fn remove(path: &Path) -> Result<(), StoreError> {
    if remove_tree(path).map_err(io_err(path))? {
        flusher::queue(path.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct Rec {
        a: u32,
        b: String,
    }

    #[test]
    fn roundtrip_and_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/rec.json");
        assert_eq!(load::<Rec>(&p).unwrap(), None);
        save(
            &p,
            &Rec {
                a: 1,
                b: "x".into(),
            },
        )
        .unwrap();
        save(
            &p,
            &Rec {
                a: 2,
                b: "y".into(),
            },
        )
        .unwrap();
        assert_eq!(
            load::<Rec>(&p).unwrap(),
            Some(Rec {
                a: 2,
                b: "y".into()
            })
        );
        // No temporary files left next to the record.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rec.json")]);
        save_volatile(
            &p,
            &Rec {
                a: 3,
                b: "z".into(),
            },
        )
        .unwrap();
        assert_eq!(
            load::<Rec>(&p).unwrap(),
            Some(Rec {
                a: 3,
                b: "z".into()
            })
        );
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(load::<Rec>(&p).unwrap(), None);
    }

    #[test]
    fn flush_pending_waits_for_queued_records() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            save(
                &dir.path().join(format!("r{i}.json")),
                &Rec {
                    a: i,
                    b: "x".into(),
                },
            )
            .unwrap();
        }
        remove(&dir.path().join("r0.json")).unwrap();
        // A removed file and a removed directory are not errors for the flusher.
        remove(dir.path()).unwrap();
        flush_pending();
        flush_pending();
    }

    #[test]
    fn corrupt_record_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, b"{\"a\": 1").unwrap();
        let e = load::<Rec>(&p).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(e.to_string().contains("bad.json"));
    }
}
