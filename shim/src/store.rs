//! Durable metadata: one JSON file per record, written to a temporary file, fsynced, renamed
//! over the old one and the directory fsynced — so a `kill -9` or power loss at any point
//! leaves either the old record or the new one, never half of one.
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
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(io_err(tmp_dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    // The rename is only durable once the directory entry is.
    sync_dir(path.parent().unwrap_or(Path::new(".")))
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
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// Writes `value` as JSON via a temporary file and a rename — atomic for readers, but not
/// fsynced: for files that need not survive a crash (a runner spec is read once, right
/// after it is written; a crash before that fails the start anyway).
pub fn save_volatile<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    std::fs::write(tmp.path(), &bytes).map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| StoreError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

/// Serialises `value` as JSON and writes it atomically.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, &bytes)
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

/// Removes a file or directory tree if it exists, then fsyncs its parent.
pub fn remove(path: &Path) -> Result<(), StoreError> {
    let res = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(io_err(path))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
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
    fn corrupt_record_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.json");
        std::fs::write(&p, b"{\"a\": 1").unwrap();
        let e = load::<Rec>(&p).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(e.to_string().contains("bad.json"));
    }
}
