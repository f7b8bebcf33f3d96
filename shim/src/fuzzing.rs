//! Entry points for the libFuzzer targets in `fuzz/` (see the README, "Fuzzing").
//!
//! Each function drives one parser through the entry points the daemon itself uses, then
//! checks what that parser's module promises. A broken promise panics with a message naming
//! it, which libFuzzer reports as a crash together with the input; an `Err` is the expected
//! answer to hostile input and not a finding.
//!
//! | function | drives | checks |
//! |---|---|---|
//! | [`unpack_layers`] | the layer unpacker, one blob file per layer | see [`check_rootfs`]; nothing written beside the rootfs; the tree can be removed |
//! | [`parse_manifest`] | manifest/index parsing, platform selection, packaging, the image config | a parsed manifest serialises and parses back to the same JSON; the chosen entry is one of the index's |
//! | [`parse_reference`] | image reference parsing and normalisation | the canonical form (and the normalised tag) parse back to the same reference |
//! | [`write_log`] | [`CriLogWriter`] writes, rotations (`reopen`) and `close` | see [`check_log`] |
//!
//! The module is hidden and not part of the crate's API: it exists so the fuzz crate reaches
//! crate-private parsers (the unpacker) without the `runtime` feature, and so a change to
//! their internals only has to be followed here.
#![doc(hidden)]

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::images::error::IoContext;
use crate::images::manifest::{self, Manifest};
use crate::images::unpack::{Compression, Unpacker};
use crate::images::{ImageError, ImageRef, Result, UnpackLimits, blobs, normalize_tag, reference};
use crate::logs::{CriLogWriter, MAX_LINE, Stream, parse_line};

/// Unpack limits while fuzzing: small, so a decompression bomb the fuzzer builds costs a
/// megabyte of tmpfs, not the machine's disk; large enough for every seed.
pub const FUZZ_UNPACK_LIMITS: UnpackLimits = UnpackLimits {
    max_bytes: 1 << 20,
    max_entries: 512,
};

/// Name of the rootfs directory inside an unpack scratch directory.
const ROOTFS: &str = "rootfs";

/// Most bytes [`log_ops`] expands one input into (repeats make long lines from short inputs).
const MAX_LOG_BYTES: usize = 64 << 10;

/// How a fuzzed layer is compressed (the store's three tar layer media types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// `application/vnd.oci.image.layer.v1.tar`.
    None,
    /// `...tar+gzip`.
    Gzip,
    /// `...tar+zstd`.
    Zstd,
}

impl From<LayerCompression> for Compression {
    fn from(c: LayerCompression) -> Self {
        match c {
            LayerCompression::None => Compression::None,
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        }
    }
}

/// Where the per-input scratch trees go: `/dev/shm` when there is one (a tmpfs: thousands of
/// trees a second, no disk writes, and the log's fsync costs nothing), else the temp dir.
fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn scratch_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_parent())
}

/// Unpacks `layers` in order onto one fresh rootfs the way the store does (each layer a blob
/// file, digest-verified, decompressed per `compression`), with [`FUZZ_UNPACK_LIMITS`], then
/// checks that the scratch directory holds nothing but the blobs and the rootfs and checks the
/// tree ([`check_rootfs`]; the byte limit only on success: a layer that hits it has written
/// one byte past it before failing). The scratch directory is removed before a broken
/// promise panics, so a finding leaves nothing behind either.
pub fn unpack_layers(layers: &[&[u8]], compression: LayerCompression) -> Result<()> {
    let scratch = scratch_dir("wasmcri-fuzz-unpack-").at(scratch_parent())?;
    let root = scratch.path().join(ROOTFS);
    fs::create_dir(&root).at(&root)?;
    let mut expected = vec![ROOTFS.to_string()];
    let mut unpacker = Unpacker::new(&root, FUZZ_UNPACK_LIMITS);
    let mut result = Ok(());
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("blob{i}");
        let blob = scratch.path().join(&name);
        expected.push(name);
        result = fs::write(&blob, layer).at(&blob).and_then(|()| {
            unpacker.apply_blob(
                &blob,
                &blobs::sha256_digest(layer),
                compression.into(),
                &diff_id_of(layer, compression),
            )
        });
        if result.is_err() {
            break;
        }
    }
    let verdict = check_scratch(scratch.path(), &expected)
        .and_then(|()| check_rootfs(&root, result.is_ok().then_some(FUZZ_UNPACK_LIMITS)));
    let path = scratch.path().to_path_buf();
    let removed = scratch.close();
    if let Err(broken) = verdict {
        panic!("{broken}");
    }
    if let Err(e) = removed {
        panic!("unpacked tree {} cannot be removed: {e}", path.display());
    }
    result
}

/// The diff ID a config would list for `layer` (the digest of its uncompressed tar), so the
/// unpacker's diff ID check passes for well-formed input and the whole tree gets checked. A
/// layer that does not decompress, or decompresses past a bound, gets an all-zero digest:
/// the unpacker then fails it anyway (on the data, on a limit, or on the digest).
fn diff_id_of(layer: &[u8], compression: LayerCompression) -> String {
    use io::Read;
    /// Decompressed bytes hashed at most: past the fuzz limits, so the unpacker decides.
    const MAX_DECODED: u64 = 4 << 20;
    let decoded: Box<dyn Read + '_> = match compression {
        LayerCompression::None => Box::new(layer),
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(layer)),
        LayerCompression::Zstd => match zstd::Decoder::new(layer) {
            Ok(d) => Box::new(d),
            Err(_) => return format!("sha256:{}", "0".repeat(64)),
        },
    };
    let mut tar = Vec::new();
    match decoded.take(MAX_DECODED + 1).read_to_end(&mut tar) {
        Ok(n) if (n as u64) <= MAX_DECODED => blobs::sha256_digest(&tar),
        _ => format!("sha256:{}", "0".repeat(64)),
    }
}

/// `Err(why())` unless `ok`: a broken promise, reported once the scratch files are gone.
fn ensure(ok: bool, why: impl FnOnce() -> String) -> std::result::Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// Whether `dir` holds exactly the entries named in `expected`.
fn check_scratch(dir: &Path, expected: &[String]) -> std::result::Result<(), String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        found.push(entry.file_name().to_string_lossy().into_owned());
    }
    found.sort();
    let mut expected = expected.to_vec();
    expected.sort();
    ensure(found == expected, || {
        format!("a layer wrote beside the rootfs: {found:?}")
    })
}

/// Checks the unpacker's promises on a rootfs it built; `Err` names the first broken one:
/// - only directories, regular files and symlinks (no devices, FIFOs, sockets);
/// - no setuid, setgid or sticky bit;
/// - no whiteout (`.wh.*`) materialised as a file or symlink;
/// - no relative symlink target that climbs above the rootfs (absolute ones are read
///   chroot-style by every consumer);
/// - every name of every regular file is inside the rootfs (no hard link to a file outside);
/// - with `limits`, the distinct regular files hold at most `limits.max_bytes` bytes.
pub fn check_rootfs(root: &Path, limits: Option<UnpackLimits>) -> std::result::Result<(), String> {
    // inode -> (link count, names seen in the tree, size, one path)
    let mut files: HashMap<u64, (u64, u64, u64, PathBuf)> = HashMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let listing =
            fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in listing {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let path = entry.path();
            // Relative to the directory (fstatat), not by path: a layer's tree may be
            // thousands of directories deep. Does not follow symlinks.
            let m = entry
                .metadata()
                .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let whiteout = path
                .file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b".wh."));
            let ft = m.file_type();
            ensure(ft.is_symlink() || m.mode() & 0o7000 == 0, || {
                format!("{} has a setuid/setgid/sticky bit", rel.display())
            })?;
            if ft.is_dir() {
                dirs.push(path);
            } else if ft.is_file() {
                ensure(!whiteout, || {
                    format!("whiteout {} materialised", rel.display())
                })?;
                let e = files
                    .entry(m.ino())
                    .or_insert_with(|| (m.nlink(), 0, m.len(), rel.clone()));
                e.1 += 1;
            } else if ft.is_symlink() {
                ensure(!whiteout, || {
                    format!("whiteout {} materialised", rel.display())
                })?;
                let target = fs::read_link(&path)
                    .map_err(|e| format!("cannot read link {}: {e}", path.display()))?;
                ensure(!climbs_out(&rel, &target), || {
                    format!(
                        "symlink {} -> {} leaves the rootfs",
                        rel.display(),
                        target.display()
                    )
                })?;
            } else {
                return Err(format!("{} is a device, FIFO or socket", rel.display()));
            }
        }
    }
    let mut bytes = 0;
    for (nlink, seen, size, rel) in files.values() {
        ensure(nlink == seen, || {
            format!(
                "{} has {nlink} names but only {seen} inside the rootfs",
                rel.display()
            )
        })?;
        bytes += size;
    }
    match limits {
        Some(l) => ensure(bytes <= l.max_bytes, || {
            format!("{bytes} bytes unpacked, limit {}", l.max_bytes)
        }),
        None => Ok(()),
    }
}

/// Whether the relative symlink at `link` (relative to the root) pointing at `target` climbs
/// above the root when resolved lexically.
fn climbs_out(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

/// Parses `bytes` the ways the store reads JSON it fetched: as a manifest or index (then picks
/// a platform from an index, or decides the packaging of a manifest) and as an image config.
/// Returns the first error; the config is parsed whatever the manifest did.
pub fn parse_manifest(bytes: &[u8]) -> Result<()> {
    let config = serde_json::from_slice::<manifest::ConfigFile>(bytes)
        .map(drop)
        .map_err(|e| ImageError::malformed("fuzzed config", e));
    let m = Manifest::parse(bytes, "fuzzed manifest")?;
    let text = serde_json::to_vec(&m).expect("a parsed manifest serialises");
    let again = Manifest::parse(&text, "re-serialised manifest").unwrap_or_else(|e| {
        panic!(
            "re-serialised manifest does not parse: {e}\n{}",
            String::from_utf8_lossy(&text)
        )
    });
    assert_eq!(
        serde_json::to_vec(&again).expect("a parsed manifest serialises"),
        text,
        "serialise, parse, serialise changed the manifest"
    );
    if m.is_index() {
        let chosen = manifest::select_platform(&m.manifests, "fuzzed index")?;
        assert!(
            m.manifests.iter().any(|d| std::ptr::eq(d, chosen)),
            "select_platform returned a descriptor that is not in the index"
        );
    } else {
        let desc = m.config("fuzzed manifest")?;
        crate::images::packaging_of(&m, desc)?;
    }
    config
}

/// Parses `s` as an image reference and checks that normalisation is stable: the canonical
/// form parses to the same reference, and the normalised tag normalises to itself. Also runs
/// the digest and loopback-host checks on `s`.
pub fn parse_reference(s: &str) -> Result<ImageRef> {
    let _ = reference::validate_digest(s);
    let _ = reference::is_loopback_host(s);
    let r = ImageRef::parse(s)?;
    let canonical = r.canonical();
    let again = ImageRef::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical form {canonical:?} of {s:?} does not parse: {e}"));
    assert_eq!(again, r, "{s:?} and its canonical form parse differently");
    let tag = normalize_tag(s)
        .unwrap_or_else(|e| panic!("{s:?} parses but its tag does not normalise: {e}"));
    let tag_again = normalize_tag(&tag)
        .unwrap_or_else(|e| panic!("normalised tag {tag:?} of {s:?} does not parse: {e}"));
    assert_eq!(tag_again, tag, "normalising {s:?} twice differs");
    Ok(r)
}

/// One step of [`write_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogOp {
    /// The guest writes these bytes on this stream.
    Write(Stream, Vec<u8>),
    /// The kubelet rotates the log: renames the file, then `ReopenContainerLog`.
    Rotate,
}

/// Decodes fuzz input into [`LogOp`]s: repeated `[control][length][length bytes]`, where bit 0
/// of `control` picks stderr, bit 1 rotates the log before the write, and bits 2..8 (`k`)
/// repeat the bytes `1 + k * k` times (so short inputs reach [`MAX_LINE`]). Expansion stops at
/// 64 KiB in all (four [`MAX_LINE`]s: enough for several `P` records per line, small enough
/// to keep thousands of runs a second); a truncated last chunk is used as it is.
pub fn log_ops(mut data: &[u8]) -> Vec<LogOp> {
    let mut ops = Vec::new();
    let mut total = 0;
    while let [control, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        data = tail;
        if control & 2 != 0 {
            ops.push(LogOp::Rotate);
        }
        let k = usize::from(control >> 2);
        let bytes = chunk.repeat(1 + k * k);
        total += bytes.len();
        if total > MAX_LOG_BYTES {
            break;
        }
        let stream = if control & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        ops.push(LogOp::Write(stream, bytes));
    }
    ops
}

/// Runs `ops` against a fresh [`CriLogWriter`], closes it, reads the log files (rotated ones
/// and the last, in order), removes them and checks what they held with [`check_log`].
pub fn write_log(ops: &[LogOp]) -> io::Result<()> {
    let dir = scratch_dir("wasmcri-fuzz-log-")?;
    let path = dir.path().join("0.log");
    let w = CriLogWriter::open(&path)?;
    let mut files = Vec::new();
    let mut written = [Vec::new(), Vec::new()];
    for op in ops {
        match op {
            LogOp::Write(stream, bytes) => {
                w.write(*stream, bytes)?;
                written[stream_index(*stream)].extend_from_slice(bytes);
            }
            LogOp::Rotate => {
                let rotated = dir.path().join(format!("0.log.{}", files.len()));
                fs::rename(&path, &rotated)?;
                files.push(rotated);
                w.reopen()?;
            }
        }
    }
    w.close()?;
    files.push(path);
    let mut log = Vec::new();
    for f in &files {
        log.extend(fs::read(f)?);
    }
    drop(w);
    // Removed first, so a broken promise leaves nothing behind.
    dir.close()?;
    check_log(&log, &written);
    Ok(())
}

fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// Checks a closed CRI log (`log`, all files in order) against what each stream wrote
/// (`written[0]` stdout, `written[1]` stderr), panicking on the first broken promise:
/// - every record is `<RFC 3339 timestamp with 9 fractional digits> <stream> <F|P> <content>`
///   and ends with a newline, and [`parse_line`] reads the same fields from it;
/// - no content is longer than [`MAX_LINE`];
/// - per stream, the contents joined (a newline after each `F`) are exactly what the stream
///   wrote, plus the newline `close` adds to an unfinished last line;
/// - a stream that wrote valid UTF-8 gets only valid UTF-8 records (no character split).
pub fn check_log(log: &[u8], written: &[Vec<u8>; 2]) {
    assert!(
        log.is_empty() || log.ends_with(b"\n"),
        "log does not end with a newline"
    );
    let mut joined = [Vec::new(), Vec::new()];
    let utf8 = written.each_ref().map(|w| std::str::from_utf8(w).is_ok());
    for record in log.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
        let show = String::from_utf8_lossy(record);
        let mut parts = record.splitn(4, |&b| b == b' ');
        let (Some(ts), Some(stream), Some(tag), Some(content)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            panic!("record {show:?} has fewer than four fields");
        };
        let ts = std::str::from_utf8(ts).unwrap_or_else(|_| panic!("timestamp of {show:?}"));
        assert!(
            ts.len() == "2026-01-02T15:04:05.123456789Z".len()
                && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "bad timestamp in {show:?}"
        );
        let stream = match stream {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => panic!("bad stream in {show:?}"),
        };
        let partial = match tag {
            b"F" => false,
            b"P" => true,
            _ => panic!("bad tag in {show:?}"),
        };
        assert!(
            content.len() <= MAX_LINE,
            "record of {} bytes",
            content.len()
        );
        let i = stream_index(stream);
        if let Ok(text) = std::str::from_utf8(record) {
            let parsed = parse_line(text).unwrap_or_else(|| panic!("parse_line rejects {show:?}"));
            assert_eq!(
                (parsed.stream, parsed.partial, parsed.content.as_bytes()),
                (stream, partial, content),
                "parse_line reads {show:?} differently"
            );
        } else {
            assert!(!utf8[i], "UTF-8 output split inside a character: {show:?}");
        }
        joined[i].extend_from_slice(content);
        if !partial {
            joined[i].push(b'\n');
        }
    }
    for (i, w) in written.iter().enumerate() {
        let mut expected = w.clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.push(b'\n');
        }
        assert!(
            joined[i] == expected,
            "stream {i}: the log holds {:?}, the guest wrote {:?}",
            String::from_utf8_lossy(&joined[i]),
            String::from_utf8_lossy(w)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::unpack::tests::TarBuilder;
    use std::io::Write;

    fn benign_layer() -> Vec<u8> {
        TarBuilder::new()
            .dir("app")
            .file("app/main.wasm", b"\0asm\x01\0\0\0")
            .link(tar::EntryType::Symlink, "app/alias.wasm", "main.wasm")
            .link(tar::EntryType::Link, "app/hard.wasm", "app/main.wasm")
            .file("app/.wh.gone", b"")
            .file(".wh..wh..opq", b"")
            .build()
    }

    #[test]
    fn benign_layers_unpack_in_every_compression() {
        let tar = benign_layer();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
        unpack_layers(&[&tar, &tar], LayerCompression::None).unwrap();
        unpack_layers(&[&gz], LayerCompression::Gzip).unwrap();
        unpack_layers(&[&zst], LayerCompression::Zstd).unwrap();
        // The wrong decompressor is an error, not a crash.
        assert!(unpack_layers(&[&tar], LayerCompression::Zstd).is_err());
    }

    #[test]
    fn hostile_layer_is_an_error() {
        // unpack_layers itself panics if the scratch tree cannot be removed.
        let t = TarBuilder::new().file("a/../../escape", b"x").build();
        let err = unpack_layers(&[&t], LayerCompression::None).unwrap_err();
        assert!(matches!(err, ImageError::HostileLayer { .. }), "{err}");
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("dir")).unwrap();
        fs::write(d.path().join("dir/f"), b"12345").unwrap();
        std::os::unix::fs::symlink("../dir/f", d.path().join("dir/ok")).unwrap();
        d
    }

    #[test]
    fn check_rootfs_accepts_a_clean_tree() {
        let d = tree();
        check_rootfs(d.path(), Some(FUZZ_UNPACK_LIMITS)).unwrap();
    }

    fn broken(root: &Path, limits: Option<UnpackLimits>, why: &str) {
        let err = check_rootfs(root, limits).unwrap_err();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn check_rootfs_catches_escaping_symlink() {
        let d = tree();
        std::os::unix::fs::symlink("../../x", d.path().join("dir/up")).unwrap();
        broken(d.path(), None, "dir/up -> ../../x leaves the rootfs");
    }

    #[test]
    fn check_rootfs_catches_hard_link_outside() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(outer.path().join("secret"), b"s").unwrap();
        fs::hard_link(outer.path().join("secret"), root.join("s")).unwrap();
        broken(&root, None, "s has 2 names but only 1 inside the rootfs");
    }

    #[test]
    fn check_rootfs_catches_fifo() {
        let d = tree();
        nix::unistd::mkfifo(&d.path().join("p"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        broken(d.path(), None, "p is a device, FIFO or socket");
    }

    #[test]
    fn check_rootfs_catches_setuid() {
        use std::os::unix::fs::PermissionsExt;
        let d = tree();
        fs::set_permissions(d.path().join("dir/f"), fs::Permissions::from_mode(0o4755)).unwrap();
        broken(d.path(), None, "dir/f has a setuid/setgid/sticky bit");
    }

    #[test]
    fn check_rootfs_enforces_the_byte_limit() {
        let d = tree();
        let limits = UnpackLimits {
            max_bytes: 4,
            max_entries: 10,
        };
        broken(d.path(), Some(limits), "5 bytes unpacked, limit 4");
    }

    #[test]
    fn manifests_and_indexes_from_the_spec_parse() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[
              {{"mediaType":"{m}","digest":"sha256:{}","size":7143,
                "platform":{{"architecture":"ppc64le","os":"linux"}}}},
              {{"mediaType":"{m}","digest":"sha256:{}","size":7682,
                "platform":{{"architecture":"wasm","os":"wasip1"}}}}]}}"#,
            manifest::MT_OCI_INDEX,
            "e6".repeat(32),
            "5b".repeat(32),
            m = manifest::MT_OCI_MANIFEST,
        );
        parse_manifest(index.as_bytes()).unwrap();
        let image = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"sha256:{}","size":7023}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest":"sha256:{}","size":32654}}],
               "annotations":{{"com.example.key1":"value1"}}}}"#,
            manifest::MT_OCI_CONFIG,
            "b5".repeat(32),
            "9d".repeat(32),
        );
        parse_manifest(image.as_bytes()).unwrap();
        assert!(parse_manifest(br#"{"schemaVersion":1}"#).is_err());
    }

    #[test]
    fn references_normalise_stably() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = parse_reference(&format!("x:tag@{d}")).unwrap();
        assert_eq!(r.canonical(), format!("docker.io/library/x:tag@{d}"));
        parse_reference("localhost:5000/a/b").unwrap();
        assert!(parse_reference("UPPER").is_err());
    }

    #[test]
    fn log_ops_decode_streams_rotation_and_repeats() {
        let ops = log_ops(&[0, 2, b'a', b'\n', 3, 1, b'e', 8, 1, b'x', 1, 9, b'y']);
        assert_eq!(
            ops,
            vec![
                LogOp::Write(Stream::Stdout, b"a\n".to_vec()),
                LogOp::Rotate,
                LogOp::Write(Stream::Stderr, b"e".to_vec()),
                LogOp::Write(Stream::Stdout, b"xxxxx".to_vec()),
                LogOp::Write(Stream::Stderr, b"y".to_vec()),
            ]
        );
    }

    #[test]
    fn log_round_trips_long_lines_rotation_and_utf8() {
        let mut data = vec![0u8, 3];
        data.extend_from_slice("é\n".as_bytes());
        // 1 + 47 * 47 repeats of six three-byte characters: past twice MAX_LINE, which is not
        // a multiple of three, so the cuts fall inside characters.
        data.extend_from_slice(&[47 << 2, 18]);
        data.extend_from_slice("€€€€€€".as_bytes());
        // Rotate, then stderr; then end the long stdout line.
        data.extend_from_slice(&[3, 4, b'e', b'r', b'r', b'\n']);
        data.extend_from_slice(&[0, 1, b'\n']);
        let ops = log_ops(&data);
        assert_eq!(ops.len(), 5);
        assert!(matches!(&ops[1], LogOp::Write(_, b) if b.len() > 2 * MAX_LINE));
        write_log(&ops).unwrap();
    }

    #[test]
    #[should_panic(expected = "the guest wrote")]
    fn check_log_catches_lost_output() {
        let log = b"2026-01-02T15:04:05.123456789Z stdout F hello\n";
        check_log(log, &[b"hello\nworld\n".to_vec(), Vec::new()]);
    }

    #[test]
    #[should_panic(expected = "split inside a character")]
    fn check_log_catches_split_characters() {
        let log = b"2026-01-02T15:04:05.123456789Z stdout P \xe2\x82\n\
                    2026-01-02T15:04:05.123456789Z stdout F \xac\n";
        check_log(log, &["€".as_bytes().to_vec(), Vec::new()]);
    }
}
