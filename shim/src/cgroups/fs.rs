//! Low-level control-file access shared by both backends.
//!
//! A backend is either on a real cgroupfs (files appear when the kernel creates a directory and
//! may not be created by us) or on a plain directory tree used as a test fixture ("plain" mode),
//! where writes create files and removal has to delete them first.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{CgroupError, Result};

/// Whether `path` lives on a cgroup (v1 or v2) filesystem.
pub(super) fn is_cgroupfs(path: &Path) -> bool {
    use nix::sys::statfs::{CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, statfs};
    match statfs(path) {
        Ok(s) => {
            let t = s.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        }
        Err(_) => false,
    }
}

/// Control-file I/O for one backend.
#[derive(Debug, Clone, Copy)]
pub(super) struct Files {
    /// Plain directory tree (test fixture) rather than a kernel cgroupfs.
    pub plain: bool,
}

impl Files {
    /// Write `value` to a control file. On cgroupfs the file must exist (the kernel made it).
    pub fn write(&self, path: &Path, value: &str) -> Result<()> {
        let mut opts = OpenOptions::new();
        opts.write(true);
        if self.plain {
            opts.create(true).truncate(true);
        }
        opts.open(path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| CgroupError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            })
    }

    /// Whether an optional control file is there. In a fixture every file is "there": the
    /// fixture stands for a kernel with every feature.
    pub fn has(&self, path: &Path) -> bool {
        self.plain || path.exists()
    }

    /// Create one cgroup directory.
    pub fn mkdir(&self, path: &Path) -> Result<()> {
        fs::create_dir(path).map_err(|source| CgroupError::Create {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Remove one cgroup directory, retrying on `EBUSY` until `deadline` while its
    /// processes finish exiting. A directory that is already gone is success.
    pub fn rmdir(&self, path: &Path, deadline: Instant) -> Result<()> {
        let mut pause = Duration::from_millis(2);
        loop {
            if self.plain {
                remove_plain_files(path);
            }
            match fs::remove_dir(path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(CgroupError::Remove {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }
}

/// In a fixture tree, delete the regular files of a directory so it can be removed.
fn remove_plain_files(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The most a control file may hold. The kernel's files are a few KiB at most (`memory.stat`
/// about 1.5 KiB, `io.stat` a line per device, `cgroup.procs` a line per process); a tree
/// that is not a cgroupfs (a test fixture, a root pointed at the wrong place) may hold
/// anything, and reading it whole must not exhaust the daemon's memory.
pub const MAX_FILE: u64 = 1 << 20;

/// Reads at most [`MAX_FILE`] bytes of `path`; a longer file is an error, not a prefix.
fn read_bounded(path: &Path) -> io::Result<std::result::Result<String, u64>> {
    use std::io::Read as _;
    let mut s = String::new();
    fs::File::open(path)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut s)?;
    Ok(if s.len() as u64 > MAX_FILE {
        Err(MAX_FILE)
    } else {
        Ok(s)
    })
}

/// Read a control file to a string.
pub(super) fn read(path: &Path) -> Result<String> {
    read_opt(path)?.ok_or_else(|| CgroupError::Read {
        path: path.to_path_buf(),
        source: io::ErrorKind::NotFound.into(),
    })
}

/// Read a control file if it exists.
pub(super) fn read_opt(path: &Path) -> Result<Option<String>> {
    match read_bounded(path) {
        Ok(Ok(s)) => Ok(Some(s)),
        Ok(Err(limit)) => Err(CgroupError::TooLarge {
            path: path.to_path_buf(),
            limit,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Parse a single-number file; `max` (v2) reads as `None`.
pub(super) fn parse_u64(path: &Path, s: &str) -> Result<Option<u64>> {
    let t = s.trim();
    if t == "max" {
        return Ok(None);
    }
    t.parse::<u64>().map(Some).map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        what: format!("expected a number, found {t:?}"),
    })
}

/// Read a single-number file if present; missing file or `max` → `None`.
pub(super) fn read_u64(path: &Path) -> Result<Option<u64>> {
    match read_opt(path)? {
        Some(s) => parse_u64(path, &s),
        None => Ok(None),
    }
}

/// Parse a flat keyed file (`key value` per line: `memory.stat`, `cpu.stat`, `memory.events`,
/// `memory.oom_control`). Lines that do not parse are skipped.
pub(super) fn parse_keyed(s: &str) -> HashMap<String, u64> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// Read a flat keyed file; a missing file is an empty map.
pub(super) fn read_keyed(path: &Path) -> Result<HashMap<String, u64>> {
    Ok(read_opt(path)?.map(|s| parse_keyed(&s)).unwrap_or_default())
}

/// The PIDs listed in a `cgroup.procs` file; a missing file is no PIDs.
pub(super) fn read_pids(path: &Path) -> Result<Vec<i32>> {
    let Some(s) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse().map_err(|_| CgroupError::Parse {
                path: path.to_path_buf(),
                what: format!("bad pid {l:?}"),
            })
        })
        .collect()
}
