//! The parts of a usage sample beyond the CPU and memory counters: block I/O per device and
//! pressure stall information (PSI), with parsers for the kernel files they come from.
//!
//! - cgroup v1 counts I/O in `blkio.throttle.io_service_bytes_recursive` and
//!   `blkio.throttle.io_serviced_recursive` (`MAJ:MIN Read|Write|Sync|Async|Discard|Total N`,
//!   then a `Total N` line). The throttle files count every request at the generic block
//!   layer, whatever I/O scheduler a device uses (runc and cAdvisor fall back to them too).
//! - cgroup v2 counts it in `io.stat` (`MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N
//!   dios=N`, keys in any order, more keys on newer kernels).
//! - PSI is a v2 feature: `cpu.pressure`, `memory.pressure`, `io.pressure` hold
//!   `some avg10=0.00 avg60=0.00 avg300=0.00 total=N` and (except `cpu.pressure` before
//!   Linux 5.13) a `full` line; `total` is in microseconds.
//!
//! The files are read bounded (1 MiB each); the parsers skip lines they do not understand
//! and keep at most [`MAX_DEVICES`] devices, so a hostile tree yields a bounded sample or a
//! clear error, never unbounded memory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CgroupError, Result};

/// Devices kept per cgroup. A node has a handful of block devices; the cap bounds what a
/// hostile `io.stat` can make the daemon hold and send.
pub const MAX_DEVICES: usize = 256;

/// Block I/O of one cgroup on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIo {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read requests completed.
    pub reads: u64,
    /// Write requests completed.
    pub writes: u64,
}

impl DeviceIo {
    /// The device's node name as the kernel names it (`/dev/sda`, from the
    /// `/sys/dev/block/MAJ:MIN` link, as cAdvisor labels devices), or `MAJ:MIN` when the
    /// kernel has no such block device.
    pub fn device_name(&self) -> String {
        let link = format!("/sys/dev/block/{}:{}", self.major, self.minor);
        std::fs::read_link(link)
            .ok()
            .and_then(|t| Some(format!("/dev/{}", t.file_name()?.to_str()?)))
            .unwrap_or_else(|| format!("{}:{}", self.major, self.minor))
    }
}

/// One line of a pressure file: how long some (or all) tasks waited for a resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiData {
    /// Total stall time, microseconds.
    pub total_us: u64,
    /// Share of wall time stalled over the last 10 s, percent.
    pub avg10: f64,
    /// The same over 60 s.
    pub avg60: f64,
    /// The same over 300 s.
    pub avg300: f64,
}

/// A pressure file: `some` tasks stalled, and (where the kernel reports it) `full`: all
/// non-idle tasks stalled at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    /// At least one task stalled.
    pub some: PsiData,
    /// All non-idle tasks stalled; `None` where the file has no `full` line.
    pub full: Option<PsiData>,
}

/// Pressure stall information of a cgroup, per resource; `None` where the kernel has none
/// (cgroup v1, or a v2 kernel booted without PSI).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// `cpu.pressure`.
    pub cpu: Option<Psi>,
    /// `memory.pressure`.
    pub memory: Option<Psi>,
    /// `io.pressure`.
    pub io: Option<Psi>,
}

/// `MAJ:MIN` → the two numbers.
fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parses v2 `io.stat`. Lines that do not start with `MAJ:MIN` are skipped, as are values
/// that are not numbers; devices past [`MAX_DEVICES`] are dropped.
pub(super) fn parse_io_stat(s: &str) -> Vec<DeviceIo> {
    let mut out = Vec::new();
    for line in s.lines() {
        if out.len() == MAX_DEVICES {
            break;
        }
        let mut it = line.split_whitespace();
        let Some((major, minor)) = it.next().and_then(parse_dev) else {
            continue;
        };
        let mut d = DeviceIo {
            major,
            minor,
            ..Default::default()
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => d.read_bytes = v,
                "wbytes" => d.write_bytes = v,
                "rios" => d.reads = v,
                "wios" => d.writes = v,
                _ => {}
            }
        }
        out.push(d);
    }
    out
}

/// Parses v1 `blkio.throttle.io_service_bytes_recursive` (`bytes`) and
/// `blkio.throttle.io_serviced_recursive` (`ops`) into one entry per device, ordered by
/// device number. Only the `Read` and `Write` rows count (`Sync`/`Async` split the same
/// requests again, `Total` adds them up).
pub(super) fn parse_blkio(bytes: &str, ops: &str) -> Vec<DeviceIo> {
    let mut devs: BTreeMap<(u32, u32), DeviceIo> = BTreeMap::new();
    for (text, is_bytes) in [(bytes, true), (ops, false)] {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(dev), Some(op), Some(v), None) = (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            let (Some((major, minor)), Ok(v)) = (parse_dev(dev), v.parse::<u64>()) else {
                continue;
            };
            if !devs.contains_key(&(major, minor)) && devs.len() == MAX_DEVICES {
                continue;
            }
            let d = devs.entry((major, minor)).or_insert(DeviceIo {
                major,
                minor,
                ..Default::default()
            });
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes = v,
                ("Write", true) => d.write_bytes = v,
                ("Read", false) => d.reads = v,
                ("Write", false) => d.writes = v,
                _ => {}
            }
        }
    }
    devs.into_values().collect()
}

/// Parses a pressure file (`cpu.pressure`, `memory.pressure`, `io.pressure`). A `some` line
/// is required; unknown keys are ignored (newer kernels may add some); averages must be
/// finite percentages and `total` a number, else the file is rejected naming `path`.
pub(super) fn parse_pressure(path: &Path, s: &str) -> Result<Psi> {
    let bad = |what: String| CgroupError::Parse {
        path: path.to_path_buf(),
        what,
    };
    let mut some = None;
    let mut full = None;
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let slot = match it.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut d = PsiData::default();
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(bad(format!("{kv:?} is not key=value")));
            };
            let avg = || -> Result<f64> {
                match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && (0.0..=100.0).contains(&x) => Ok(x),
                    _ => Err(bad(format!("{k}={v:?} is not a percentage"))),
                }
            };
            match k {
                "avg10" => d.avg10 = avg()?,
                "avg60" => d.avg60 = avg()?,
                "avg300" => d.avg300 = avg()?,
                "total" => {
                    d.total_us = v
                        .parse()
                        .map_err(|_| bad(format!("total={v:?} is not a number")))?
                }
                _ => {}
            }
        }
        *slot = Some(d);
    }
    Ok(Psi {
        some: some.ok_or_else(|| bad("no \"some\" line".into()))?,
        full,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_devices_and_unknown_keys() {
        let s = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                 253:1 wios=7 rbytes=10 newkey=3 wbytes=x\n\
                 garbage line\n\n";
        assert_eq!(
            parse_io_stat(s),
            vec![
                DeviceIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    reads: 1,
                    writes: 2,
                },
                DeviceIo {
                    major: 253,
                    minor: 1,
                    read_bytes: 10,
                    writes: 7,
                    ..Default::default()
                },
            ]
        );
        assert!(parse_io_stat("").is_empty());
        assert!(parse_io_stat("8: rbytes=1\nx:1 rbytes=1\n").is_empty());
    }

    #[test]
    fn io_stat_keeps_at_most_max_devices() {
        let s: String = (0..MAX_DEVICES + 50)
            .map(|i| format!("8:{i} rbytes=1\n"))
            .collect();
        assert_eq!(parse_io_stat(&s).len(), MAX_DEVICES);
        let bytes: String = (0..MAX_DEVICES + 50)
            .map(|i| format!("8:{i} Read 1\n"))
            .collect();
        assert_eq!(parse_blkio(&bytes, "").len(), MAX_DEVICES);
    }

    #[test]
    fn blkio_merges_bytes_and_ops_per_device() {
        let bytes = "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n8:0 Discard 0\n\
                     8:0 Total 300\n7:3 Read 5\nTotal 305\n";
        let ops = "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\n7:3 Read 1\n7:3 Write x\nTotal 4\n";
        assert_eq!(
            parse_blkio(bytes, ops),
            vec![
                DeviceIo {
                    major: 7,
                    minor: 3,
                    read_bytes: 5,
                    reads: 1,
                    ..Default::default()
                },
                DeviceIo {
                    major: 8,
                    minor: 0,
                    read_bytes: 100,
                    write_bytes: 200,
                    reads: 1,
                    writes: 2,
                },
            ]
        );
        assert!(parse_blkio("Total 0\n", "Total 0\n").is_empty());
    }

    #[test]
    fn device_names_from_sysfs_or_numbers() {
        let nowhere = DeviceIo {
            major: 4095,
            minor: 1048575,
            ..Default::default()
        };
        assert_eq!(nowhere.device_name(), "4095:1048575");
        // Every block device the kernel lists resolves to its /dev name.
        for e in std::fs::read_dir("/sys/dev/block")
            .into_iter()
            .flatten()
            .flatten()
        {
            let num = e.file_name().into_string().unwrap();
            let (major, minor) = parse_dev(&num).unwrap();
            let name = DeviceIo {
                major,
                minor,
                ..Default::default()
            }
            .device_name();
            let want = std::fs::read_link(e.path()).unwrap();
            assert_eq!(
                name,
                format!("/dev/{}", want.file_name().unwrap().to_str().unwrap())
            );
        }
    }

    #[test]
    fn pressure_some_and_full() {
        let p = Path::new("/x/memory.pressure");
        let psi = parse_pressure(
            p,
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
             full avg10=0.00 avg60=0.10 avg300=0.00 total=789\n",
        )
        .unwrap();
        assert_eq!(
            psi.some,
            PsiData {
                total_us: 123_456,
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0
            }
        );
        assert_eq!(psi.full.unwrap().total_us, 789);
        // cpu.pressure before Linux 5.13: no full line. Unknown keys are ignored.
        let psi = parse_pressure(
            p,
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=5 extra=1\n",
        )
        .unwrap();
        assert_eq!(psi.some.total_us, 5);
        assert_eq!(psi.full, None);
    }

    #[test]
    fn hostile_pressure_is_rejected_with_the_path() {
        let p = Path::new("/x/io.pressure");
        for text in [
            "",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
            "some avg10=NaN avg60=0 avg300=0 total=1\n",
            "some avg10=inf avg60=0 avg300=0 total=1\n",
            "some avg10=-1 avg60=0 avg300=0 total=1\n",
            "some avg10=101 avg60=0 avg300=0 total=1\n",
            "some avg10=0 avg60=0 avg300=0 total=-1\n",
            "some avg10=0 avg60=0 avg300=0 total=99999999999999999999999\n",
            "some avg10 avg60=0\n",
        ] {
            let err = parse_pressure(p, text).unwrap_err();
            assert!(
                matches!(&err, CgroupError::Parse { path, .. } if path == p),
                "{text:?}: {err}"
            );
        }
    }
}
