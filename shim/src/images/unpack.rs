//! Safe layer unpacking: applies tar layers (plain, gzip, zstd) onto a rootfs directory so
//! that no entry can reach outside it.
//!
//! The rootfs being built is private to this process (a fresh temp dir), so the only writer
//! is the archive itself, applied sequentially; `lstat` checks therefore cannot race. The rules:
//! - paths are made relative (leading `/` stripped); any `..` component is rejected;
//! - no path component of an entry may be a symlink: symlinks are never followed while
//!   creating files (a later layer writing through `lib -> /usr/lib` is rejected rather than
//!   resolved — simpler and safe, at the cost of rare usrmerge-style layers);
//! - symlinks whose relative target climbs above the rootfs are rejected; absolute targets are
//!   kept (they are interpreted inside the rootfs, chroot-style, by every consumer);
//! - hard links must name an existing regular file inside the rootfs, reached without symlinks;
//! - device nodes and FIFOs are rejected; setuid/setgid/sticky bits are dropped;
//! - OCI whiteouts: `.wh.<name>` deletes `<name>` from lower layers, `.wh..wh..opq` empties its
//!   directory of lower-layer content; whiteout files themselves are never materialised;
//! - [`UnpackLimits`] caps total bytes and entries across all layers of an image
//!   (decompression bombs): every entry's declared data size is charged before its data is
//!   read or skipped, so what the decompressor produces stays within `max_bytes` plus under
//!   1 KiB per entry; each compressed blob is re-hashed while it is read, so a blob corrupted
//!   at rest is caught before the image is committed;
//! - metadata is parsed here, not by the `tar` crate (which reads it whole first): PAX `x`
//!   and GNU `L`/`K` entries are read capped at [`MAX_METADATA_ENTRY`] and their `path`,
//!   `linkpath` and long names apply to the next member; anything two parsers could read
//!   differently is rejected: a PAX `size` other than the header's, two metadata entries of
//!   one kind (or a GNU long name and a PAX path) for one member, NUL inside a name, metadata
//!   with no member after it, a PAX global header setting paths or sizes (global headers are
//!   otherwise not applied, as in containerd), and GNU sparse files.
//!
//! Errors name the offending entry. Cleanup is the caller's: it unpacks into a temp dir and
//! drops it on failure.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::blobs::HashingReader;
use super::error::{ImageError, IoContext, Result};

/// Whiteout prefix marking deletion of a lower-layer entry (OCI image spec, layer.md).
const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque whiteout: hide all lower-layer content of the directory containing it.
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";

/// Limits against decompression bombs, applied to the sum over all layers of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnpackLimits {
    /// Maximum total declared data size of all entries: file content, and the data of
    /// metadata and of entries whose data is skipped (directories, links, whiteouts).
    pub max_bytes: u64,
    /// Maximum number of archive entries processed.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 1 GiB and 100k entries: far above any wasm image, far below what fills a node's disk.
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 1 << 30,
            max_entries: 100_000,
        }
    }
}

/// How a tar layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Compression of a tar layer media type; `None` for media types that are not tar layers.
pub(crate) fn tar_layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// Running totals across the layers of one image.
#[derive(Debug)]
pub(crate) struct Unpacker {
    root: PathBuf,
    limits: UnpackLimits,
    bytes: u64,
    entries: u64,
}

impl Unpacker {
    pub(crate) fn new(root: &Path, limits: UnpackLimits) -> Self {
        Unpacker {
            root: root.to_path_buf(),
            limits,
            bytes: 0,
            entries: 0,
        }
    }

    /// Applies the layer blob at `blob` (compressed per `compression`), verifying that the blob
    /// hashes to `digest` and that the uncompressed tar hashes to `diff_id`.
    pub(crate) fn apply_blob(
        &mut self,
        blob: &Path,
        digest: &str,
        compression: Compression,
        diff_id: &str,
    ) -> Result<()> {
        let f = File::open(blob).at(blob)?;
        let mut raw = HashingReader::new(BufReader::new(f));
        {
            let decoded: Box<dyn Read + '_> = match compression {
                Compression::None => Box::new(&mut raw),
                Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut raw)),
                Compression::Zstd => Box::new(zstd::Decoder::new(&mut raw).at(blob)?),
            };
            let mut diff = HashingReader::new(decoded);
            self.apply_tar(&mut diff, digest)?;
            // The tar end marker need not be the end of the stream; hash the rest for the
            // diff ID, but bounded so trailing garbage cannot be a bomb of its own.
            let budget = self.limits.max_bytes.saturating_sub(self.bytes);
            let drained = io::copy(&mut (&mut diff).take(budget + 1), &mut io::sink())
                .map_err(|e| ImageError::malformed(format!("layer {digest}"), e))?;
            if drained > budget {
                return Err(ImageError::TooLarge {
                    what: format!("layer {digest}: trailing data"),
                    limit: self.limits.max_bytes,
                });
            }
            let actual = diff.digest();
            if actual != diff_id {
                return Err(ImageError::DigestMismatch {
                    what: format!("uncompressed layer (diff ID) of {digest}"),
                    expected: diff_id.to_string(),
                    actual,
                });
            }
        }
        io::copy(&mut raw, &mut io::sink()).at(blob)?;
        let actual = raw.digest();
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: format!("layer blob {}", blob.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(())
    }

    /// Applies one uncompressed tar stream onto the rootfs.
    ///
    /// Entries are iterated raw: the `tar` crate would read PAX and GNU long name/link
    /// entries whole into memory, and skip by a PAX size, before any limit applies. Here every
    /// entry's declared size is charged to [`UnpackLimits::max_bytes`] before its data is read
    /// or skipped, so the decompressed stream is bounded by `max_bytes` plus one header and
    /// padding (under 1 KiB) per entry; metadata is read capped at [`MAX_METADATA_ENTRY`].
    pub(crate) fn apply_tar(&mut self, reader: &mut dyn Read, layer: &str) -> Result<()> {
        use tar::EntryType as T;
        let mut archive = tar::Archive::new(reader);
        let mut created: HashSet<PathBuf> = HashSet::new();
        let mut pending = Pending::default();
        let entries = archive
            .entries()
            .map_err(|e| ImageError::malformed(format!("layer {layer}"), e))?
            .raw(true);
        for entry in entries {
            let mut entry =
                entry.map_err(|e| ImageError::malformed(format!("layer {layer} tar entry"), e))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(ImageError::TooLarge {
                    what: format!("number of layer entries (at layer {layer})"),
                    limit: self.limits.max_entries,
                });
            }
            let header_name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            let size = entry
                .header()
                .entry_size()
                .map_err(|e| ImageError::malformed(format!("layer entry {header_name:?}"), e))?;
            // Charged before the data is read or skipped, whatever the entry is.
            if self.bytes.saturating_add(size) > self.limits.max_bytes {
                return Err(ImageError::TooLarge {
                    what: format!(
                        "unpacked layer content (entry {header_name:?} of layer {layer} \
                         declares {size} bytes)"
                    ),
                    limit: self.limits.max_bytes,
                });
            }
            self.bytes += size;
            let kind = entry.header().entry_type();
            match kind {
                T::XHeader => {
                    let data = read_metadata(&mut entry, size, &header_name)?;
                    pending.set(Meta::Pax, data, &header_name)?;
                }
                T::GNULongName => {
                    let data = read_metadata(&mut entry, size, &header_name)?;
                    pending.set(Meta::LongName, data, &header_name)?;
                }
                T::GNULongLink => {
                    let data = read_metadata(&mut entry, size, &header_name)?;
                    pending.set(Meta::LongLink, data, &header_name)?;
                }
                T::XGlobalHeader => {
                    let data = read_metadata(&mut entry, size, &header_name)?;
                    check_global_pax(&data, &header_name)?;
                }
                T::GNUSparse => {
                    return Err(ImageError::hostile(
                        header_name,
                        "GNU sparse files are not supported in a wasm rootfs",
                    ));
                }
                _ => {
                    let member = std::mem::take(&mut pending).resolve(entry.header(), size)?;
                    self.apply_entry(&mut entry, &member, &mut created)?;
                }
            }
        }
        if let Some(kind) = pending.any() {
            return Err(ImageError::hostile(
                format!("<end of layer {layer}>"),
                format!("{kind} metadata entry describes no member"),
            ));
        }
        Ok(())
    }

    fn apply_entry(
        &mut self,
        entry: &mut tar::Entry<'_, &mut dyn Read>,
        member: &Member,
        created: &mut HashSet<PathBuf>,
    ) -> Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        let name = member.name.as_str();
        let rel = clean_path(Path::new(name), name)?;
        let Some(file_name) = rel.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            // The rootfs itself ("/" or "./"): nothing to create.
            return if kind == T::Directory {
                Ok(())
            } else {
                Err(ImageError::hostile(
                    name,
                    "non-directory entry for the rootfs itself",
                ))
            };
        };

        if let Some(target) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            let full = self.prepare_parent(&rel, name)?;
            let parent = full.parent().unwrap_or(&self.root).to_path_buf();
            let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if file_name == WHITEOUT_OPAQUE {
                return clear_lower(&parent, &parent_rel, created, name);
            }
            if target.is_empty() || target == "." || target == ".." {
                return Err(ImageError::hostile(name, "invalid whiteout target"));
            }
            if !created.contains(&parent_rel.join(target)) {
                remove_any(&parent.join(target), name)?;
            }
            return Ok(());
        }

        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let full = self.prepare_parent(&rel, name)?;
        match kind {
            T::Directory => {
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&full, name)?;
                        fs::create_dir(&full).at(&full)?;
                    }
                    Err(_) => fs::create_dir(&full).at(&full)?,
                }
                // Owner rwx kept so later layers (and cleanup) can modify the tree.
                fs::set_permissions(&full, fs::Permissions::from_mode(mode | 0o700)).at(&full)?;
            }
            T::Regular | T::Continuous => {
                remove_any(&full, name)?;
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&full)
                    .at(&full)?;
                // The entry reads at most its declared size, already charged.
                io::copy(entry, &mut out)
                    .map_err(|e| ImageError::malformed(format!("layer entry {name:?}"), e))?;
                out.set_permissions(fs::Permissions::from_mode(mode))
                    .at(&full)?;
            }
            T::Symlink => {
                let target = member
                    .link
                    .clone()
                    .ok_or_else(|| ImageError::hostile(name, "symlink without target"))?;
                if symlink_escapes(&rel, &target) {
                    return Err(ImageError::hostile(
                        name,
                        format!("symlink target {} escapes the rootfs", target.display()),
                    ));
                }
                remove_any(&full, name)?;
                std::os::unix::fs::symlink(&target, &full).at(&full)?;
            }
            T::Link => {
                let target = member
                    .link
                    .clone()
                    .ok_or_else(|| ImageError::hostile(name, "hard link without target"))?;
                let target_name = target.display().to_string();
                let target_rel = clean_path(&target, name)?;
                let source = self.existing_regular_file(&target_rel).ok_or_else(|| {
                    ImageError::hostile(
                        name,
                        format!(
                            "hard link target {target_name:?} is not an existing regular file \
                             inside the rootfs"
                        ),
                    )
                })?;
                if source == full {
                    return Ok(());
                }
                remove_any(&full, name)?;
                fs::hard_link(&source, &full).at(&full)?;
            }
            T::Char | T::Block | T::Fifo => {
                return Err(ImageError::hostile(
                    name,
                    "device nodes and FIFOs are not allowed in a wasm rootfs",
                ));
            }
            other => {
                return Err(ImageError::hostile(
                    name,
                    format!("unsupported tar entry type {other:?}"),
                ));
            }
        }
        created.insert(rel);
        Ok(())
    }

    /// Creates (as real directories) every missing parent of `rel`, rejecting any parent that
    /// is a symlink; replaces non-directory parents. Returns the full path of `rel`.
    ///
    /// Every directory made here counts as an entry against [`UnpackLimits::max_entries`]:
    /// a layer of a few entries with deep paths must not make millions of directories.
    fn prepare_parent(&mut self, rel: &Path, name: &str) -> Result<PathBuf> {
        let mut cur = self.root.clone();
        if let Some(parent) = rel.parent() {
            for comp in parent.components() {
                cur.push(comp);
                match fs::symlink_metadata(&cur) {
                    Ok(m) if m.is_dir() => {}
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(ImageError::hostile(
                            name,
                            format!(
                                "path component {} is a symlink; writing through symlinks is \
                                 not allowed",
                                cur.strip_prefix(&self.root).unwrap_or(&cur).display()
                            ),
                        ));
                    }
                    Ok(_) => {
                        fs::remove_file(&cur).at(&cur)?;
                        self.count_created_dir(name)?;
                        fs::create_dir(&cur).at(&cur)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.count_created_dir(name)?;
                        fs::create_dir(&cur).at(&cur)?;
                    }
                    Err(e) => return Err(ImageError::io(&cur, e)),
                }
            }
        }
        Ok(self.root.join(rel))
    }

    /// Counts a directory made implicitly for an entry's parents as an entry.
    fn count_created_dir(&mut self, name: &str) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ImageError::TooLarge {
                what: format!("number of layer entries and directories (at entry {name:?})"),
                limit: self.limits.max_entries,
            });
        }
        Ok(())
    }

    /// The full path of `rel` if every component is a real directory and it is a regular file.
    fn existing_regular_file(&self, rel: &Path) -> Option<PathBuf> {
        let mut cur = self.root.clone();
        let n = rel.components().count();
        for (i, comp) in rel.components().enumerate() {
            cur.push(comp);
            let m = fs::symlink_metadata(&cur).ok()?;
            let ok = if i + 1 == n { m.is_file() } else { m.is_dir() };
            if !ok {
                return None;
            }
        }
        (n > 0).then_some(cur)
    }
}

/// Largest PAX (`x`/`g`) or GNU long name/link (`L`/`K`) metadata entry read. Real ones hold a
/// path or a few attributes (PATH_MAX is 4 KiB); a layer declaring more is a memory bomb, and
/// the limit stops it before anything is read.
pub(crate) const MAX_METADATA_ENTRY: u64 = 64 << 10;

/// A metadata entry kind describing the next member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Pax,
    LongName,
    LongLink,
}

impl std::fmt::Display for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Meta::Pax => "PAX extended header",
            Meta::LongName => "GNU long name",
            Meta::LongLink => "GNU long link",
        })
    }
}

/// Metadata read so far for the next member.
#[derive(Debug, Default)]
struct Pending {
    pax: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// A member with its metadata applied.
#[derive(Debug)]
struct Member {
    /// The path as archived (before [`clean_path`]).
    name: String,
    /// Symlink or hard link target.
    link: Option<PathBuf>,
}

impl Pending {
    /// Records metadata of `kind`; a second one of the same kind for one member is hostile
    /// (parsers disagree on which wins).
    fn set(&mut self, kind: Meta, data: Vec<u8>, entry: &str) -> Result<()> {
        let slot = match kind {
            Meta::Pax => &mut self.pax,
            Meta::LongName => &mut self.long_name,
            Meta::LongLink => &mut self.long_link,
        };
        if slot.is_some() {
            return Err(ImageError::hostile(
                entry,
                format!("two {kind} entries for one member"),
            ));
        }
        *slot = Some(data);
        Ok(())
    }

    /// The kind of some metadata still waiting for a member.
    fn any(&self) -> Option<Meta> {
        if self.pax.is_some() {
            Some(Meta::Pax)
        } else if self.long_name.is_some() {
            Some(Meta::LongName)
        } else if self.long_link.is_some() {
            Some(Meta::LongLink)
        } else {
            None
        }
    }

    /// Applies the metadata to the member with `header` and declared `size`.
    fn resolve(self, header: &tar::Header, size: u64) -> Result<Member> {
        let header_name = String::from_utf8_lossy(&header.path_bytes()).into_owned();
        let mut pax_path = None;
        let mut pax_link = None;
        if let Some(pax) = &self.pax {
            for field in tar::PaxExtensions::new(pax) {
                let field = field.map_err(|e| {
                    ImageError::hostile(&header_name, format!("malformed PAX header: {e}"))
                })?;
                let key = field.key_bytes();
                let value = field.value_bytes();
                match key {
                    b"path" => pax_path = Some(meta_string(value, "PAX path", &header_name)?),
                    b"linkpath" => {
                        pax_link = Some(meta_string(value, "PAX linkpath", &header_name)?)
                    }
                    b"size" => {
                        let declared = std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok());
                        // Skipping is by the header size; a reader trusting the PAX size would
                        // see other entries (how smuggled entries are built).
                        if declared != Some(size) {
                            return Err(ImageError::hostile(
                                &header_name,
                                format!(
                                    "PAX size {:?} differs from the header size {size}",
                                    String::from_utf8_lossy(value)
                                ),
                            ));
                        }
                    }
                    k if k.starts_with(b"GNU.sparse.") => {
                        return Err(ImageError::hostile(
                            &header_name,
                            "GNU sparse files are not supported in a wasm rootfs",
                        ));
                    }
                    _ => {}
                }
            }
        }
        let long_name = self
            .long_name
            .map(|v| meta_string(&v, "GNU long name", &header_name))
            .transpose()?;
        let long_link = self
            .long_link
            .map(|v| meta_string(&v, "GNU long link", &header_name))
            .transpose()?;
        let name = match (long_name, pax_path) {
            (Some(_), Some(_)) => {
                return Err(ImageError::hostile(
                    header_name,
                    "both a GNU long name and a PAX path",
                ));
            }
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => header_name.clone(),
        };
        let link = match (long_link, pax_link) {
            (Some(_), Some(_)) => {
                return Err(ImageError::hostile(
                    name,
                    "both a GNU long link and a PAX linkpath",
                ));
            }
            (Some(l), None) | (None, Some(l)) => Some(l),
            (None, None) => header
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
        };
        Ok(Member {
            name,
            link: link.map(PathBuf::from),
        })
    }
}

/// A path from metadata: GNU long names end in NUL; any other NUL, or an empty path, would be
/// read differently by other parsers.
fn meta_string(value: &[u8], what: &str, entry: &str) -> Result<String> {
    let trimmed = value.strip_suffix(b"\0").unwrap_or(value);
    if trimmed.is_empty() || trimmed.contains(&0) {
        return Err(ImageError::hostile(
            entry,
            format!("{what} is empty or contains NUL"),
        ));
    }
    std::str::from_utf8(trimmed)
        .map(str::to_string)
        .map_err(|_| ImageError::hostile(entry, format!("{what} is not UTF-8")))
}

/// Reads a metadata entry's data, refusing more than [`MAX_METADATA_ENTRY`] before reading.
fn read_metadata(entry: &mut impl Read, size: u64, name: &str) -> Result<Vec<u8>> {
    if size > MAX_METADATA_ENTRY {
        return Err(ImageError::TooLarge {
            what: format!("tar metadata entry {name:?} ({size} bytes)"),
            limit: MAX_METADATA_ENTRY,
        });
    }
    let mut data = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| ImageError::malformed(format!("tar metadata entry {name:?}"), e))?;
    Ok(data)
}

/// A PAX global header is not applied (as in containerd); one that would change paths, sizes
/// or sparseness for a reader that does apply it is hostile.
fn check_global_pax(data: &[u8], name: &str) -> Result<()> {
    for field in tar::PaxExtensions::new(data) {
        let field =
            field.map_err(|e| ImageError::hostile(name, format!("malformed PAX header: {e}")))?;
        let key = field.key_bytes();
        if matches!(key, b"path" | b"linkpath" | b"size") || key.starts_with(b"GNU.sparse.") {
            return Err(ImageError::hostile(
                name,
                format!("PAX global header sets {:?}", String::from_utf8_lossy(key)),
            ));
        }
    }
    Ok(())
}

/// Makes an archive path relative: strips leading `/` and `.`; rejects `..`.
pub(crate) fn clean_path(p: &Path, entry: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut depth = 0;
    for comp in p.components() {
        match comp {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(ImageError::hostile(entry, "path contains a '..' component"));
            }
            Component::Normal(c) => {
                depth += 1;
                if depth > MAX_PATH_DEPTH {
                    return Err(ImageError::hostile(
                        entry,
                        format!("path is deeper than {MAX_PATH_DEPTH} components"),
                    ));
                }
                out.push(c)
            }
        }
    }
    Ok(out)
}

/// Deepest entry path accepted. Real images stay far below it; without a bound, one entry
/// of a few KiB of long name makes thousands of directories, and checking each entry's
/// parents costs the square of its depth (found by the `unpack_layer` fuzz target).
const MAX_PATH_DEPTH: usize = 128;

/// Whether a symlink at `link_rel` pointing to `target` resolves (lexically) outside the root.
fn symlink_escapes(link_rel: &Path, target: &Path) -> bool {
    let mut depth: usize = if target.is_absolute() {
        0
    } else {
        link_rel.components().count().saturating_sub(1)
    };
    for comp in target.components() {
        match comp {
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::Normal(_) => depth += 1,
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
        }
    }
    false
}

/// Removes whatever is at `path` without following symlinks; absent is fine.
fn remove_any(path: &Path, entry: &str) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).at(path),
        Ok(_) => fs::remove_file(path).at(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::hostile(
            entry,
            format!("cannot inspect target: {e}"),
        )),
    }
}

/// Opaque whiteout: removes everything under `dir` not created by the current layer.
fn clear_lower(dir: &Path, dir_rel: &Path, created: &HashSet<PathBuf>, entry: &str) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(dir, e)),
    };
    for child in rd {
        let child = child.at(dir)?;
        let rel = dir_rel.join(child.file_name());
        let path = child.path();
        if !created.contains(&rel) {
            remove_any(&path, entry)?;
        } else if child.file_type().at(&path)?.is_dir() {
            clear_lower(&path, &rel, created, entry)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds tar archives with raw headers (the `tar` builder refuses hostile paths).
    pub(crate) struct TarBuilder {
        b: tar::Builder<Vec<u8>>,
    }

    impl TarBuilder {
        pub(crate) fn new() -> Self {
            TarBuilder {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_entry_type(kind);
            h.set_size(size);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_cksum();
            h
        }

        pub(crate) fn file(mut self, name: &str, data: &[u8]) -> Self {
            let h = Self::header(name, tar::EntryType::Regular, data.len() as u64);
            self.b.append(&h, data).unwrap();
            self
        }

        pub(crate) fn dir(mut self, name: &str) -> Self {
            let h = Self::header(name, tar::EntryType::Directory, 0);
            self.b.append(&h, io::empty()).unwrap();
            self
        }

        pub(crate) fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(name, kind, 0);
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
            h.set_cksum();
            self.b.append(&h, io::empty()).unwrap();
            self
        }

        pub(crate) fn special(mut self, kind: tar::EntryType, name: &str) -> Self {
            let h = Self::header(name, kind, 0);
            self.b.append(&h, io::empty()).unwrap();
            self
        }

        /// An entry of any type with `data`, e.g. a metadata entry.
        pub(crate) fn raw(mut self, kind: tar::EntryType, name: &str, data: &[u8]) -> Self {
            let h = Self::header(name, kind, data.len() as u64);
            self.b.append(&h, data).unwrap();
            self
        }

        /// A PAX extended header (`x`) for the next entry.
        pub(crate) fn pax(self, fields: &[(&str, &str)]) -> Self {
            self.raw(
                tar::EntryType::XHeader,
                "PaxHeaders/next",
                &pax_records(fields),
            )
        }

        pub(crate) fn build(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    /// PAX records: `<length> <key>=<value>\n`, the length counting itself.
    pub(crate) fn pax_records(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in fields {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            out.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        out
    }

    /// One raw 512-byte header block.
    pub(crate) fn header_block(name: &str, kind: tar::EntryType, size: u64) -> Vec<u8> {
        TarBuilder::header(name, kind, size).as_bytes().to_vec()
    }

    /// A tar stream: `head`, then `size` zero bytes of data, then `tail` (whole entries and the
    /// end marker), produced lazily so bombs need no memory.
    pub(crate) fn lazy_tar(head: Vec<u8>, size: u64, tail: Vec<u8>) -> impl Read {
        let pad = (512 - size % 512) % 512;
        io::Cursor::new(head)
            .chain(io::repeat(0).take(size + pad))
            .chain(io::Cursor::new(tail))
    }

    /// Counts the bytes read through it.
    pub(crate) struct Counting<R> {
        pub(crate) inner: R,
        pub(crate) read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    fn apply(root: &Path, tars: &[Vec<u8>], limits: UnpackLimits) -> Result<()> {
        let mut u = Unpacker::new(root, limits);
        for t in tars {
            u.apply_tar(&mut t.as_slice(), "test")?;
        }
        Ok(())
    }

    /// Runs a hostile archive the way the store does (into a temp dir dropped on failure) and
    /// returns the error; asserts nothing was left behind and nothing was written outside.
    fn hostile(tars: &[Vec<u8>]) -> ImageError {
        let outer = tempfile::tempdir().unwrap();
        let tmp = outer.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let err = {
            let work = tempfile::tempdir_in(&tmp).unwrap();
            apply(work.path(), tars, UnpackLimits::default()).unwrap_err()
        };
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "temp dir not empty");
        let outside: Vec<_> = fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec!["tmp"], "something escaped: {outside:?}");
        err
    }

    fn assert_hostile(err: ImageError, entry: &str) {
        match &err {
            ImageError::HostileLayer { entry: e, .. } => assert_eq!(e, entry, "{err}"),
            other => panic!("expected HostileLayer for {entry}, got {other}"),
        }
    }

    #[test]
    fn rejects_dotdot() {
        let t = TarBuilder::new().file("a/../../escape", b"x").build();
        assert_hostile(hostile(&[t]), "a/../../escape");
    }

    #[test]
    fn absolute_paths_are_made_relative() {
        let root = tempfile::tempdir().unwrap();
        let t = TarBuilder::new().file("/abs/file.wasm", b"x").build();
        apply(root.path(), &[t], UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(root.path().join("abs/file.wasm")).unwrap(), b"x");
    }

    #[test]
    fn rejects_write_through_symlink() {
        // An absolute target is fine on its own (chroot semantics) ...
        let t = TarBuilder::new()
            .link(tar::EntryType::Symlink, "etc", "/etc")
            .file("etc/passwd", b"pwned")
            .build();
        // ... but writing through it is not.
        assert_hostile(hostile(&[t]), "etc/passwd");
        // Same across layers.
        let l1 = TarBuilder::new()
            .link(tar::EntryType::Symlink, "d", "sub")
            .build();
        let l2 = TarBuilder::new().file("d/x", b"x").build();
        assert_hostile(hostile(&[l1, l2]), "d/x");
    }

    #[test]
    fn rejects_escaping_relative_symlink() {
        let t = TarBuilder::new()
            .dir("a")
            .link(tar::EntryType::Symlink, "a/up", "../../../etc")
            .build();
        assert_hostile(hostile(&[t]), "a/up");
    }

    #[test]
    fn keeps_contained_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let t = TarBuilder::new()
            .file("bin/app.wasm", b"w")
            .link(tar::EntryType::Symlink, "bin/alias.wasm", "app.wasm")
            .link(tar::EntryType::Symlink, "lib/x", "../bin/app.wasm")
            .build();
        apply(root.path(), &[t], UnpackLimits::default()).unwrap();
        assert_eq!(
            fs::read_link(root.path().join("lib/x")).unwrap(),
            Path::new("../bin/app.wasm")
        );
    }

    #[test]
    fn rejects_hardlink_outside_or_missing() {
        let t = TarBuilder::new()
            .link(tar::EntryType::Link, "passwd", "../../etc/passwd")
            .build();
        assert_hostile(hostile(&[t]), "passwd");
        let t = TarBuilder::new()
            .link(tar::EntryType::Link, "ghost", "does/not/exist")
            .build();
        assert_hostile(hostile(&[t]), "ghost");
        // A hard link to a symlink that points outside is refused too.
        let t = TarBuilder::new()
            .link(tar::EntryType::Symlink, "s", "/etc/shadow")
            .link(tar::EntryType::Link, "h", "s")
            .build();
        assert_hostile(hostile(&[t]), "h");
    }

    #[test]
    fn hardlink_inside_works() {
        let root = tempfile::tempdir().unwrap();
        let t = TarBuilder::new()
            .file("a.wasm", b"data")
            .link(tar::EntryType::Link, "b.wasm", "/a.wasm")
            .build();
        apply(root.path(), &[t], UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(root.path().join("b.wasm")).unwrap(), b"data");
    }

    #[test]
    fn rejects_devices_and_fifos() {
        let t = TarBuilder::new()
            .special(tar::EntryType::Char, "dev/null")
            .build();
        assert_hostile(hostile(&[t]), "dev/null");
        let t = TarBuilder::new()
            .special(tar::EntryType::Block, "dev/sda")
            .build();
        assert_hostile(hostile(&[t]), "dev/sda");
        let t = TarBuilder::new().special(tar::EntryType::Fifo, "p").build();
        assert_hostile(hostile(&[t]), "p");
    }

    /// Found by the `unpack_layer` fuzz target: directories made for an entry's parents were
    /// counted nowhere, so a few entries with deep (long-name) paths made tens of thousands
    /// of directories, at a cost quadratic in the depth.
    #[test]
    fn deep_paths_are_bounded_and_implicit_directories_count() {
        let root = tempfile::tempdir().unwrap();
        let deep = format!("{}f", "a/".repeat(MAX_PATH_DEPTH));
        let t = TarBuilder::new()
            .pax(&[("path", &deep)])
            .file("x", b"")
            .build();
        let err = apply(root.path(), &[t], UnpackLimits::default()).unwrap_err();
        assert!(
            matches!(&err, ImageError::HostileLayer { reason, .. } if reason.contains("deeper")),
            "{err}"
        );
        let ok = format!("{}f", "a/".repeat(MAX_PATH_DEPTH - 1));
        let t = TarBuilder::new()
            .pax(&[("path", &ok)])
            .file("x", b"")
            .build();
        let root = tempfile::tempdir().unwrap();
        apply(root.path(), &[t], UnpackLimits::default()).unwrap();
        assert!(root.path().join(&ok).is_file());

        // Three file entries, but 3 x 20 directories made for them: over a limit of 50.
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 50,
        };
        let mut b = TarBuilder::new();
        for i in 0..3 {
            b = b.file(&format!("d{i}/{}f", "a/".repeat(19)), b"");
        }
        let root = tempfile::tempdir().unwrap();
        let err = apply(root.path(), &[b.build()], limits).unwrap_err();
        assert!(
            matches!(err, ImageError::TooLarge { limit: 50, .. }),
            "{err}"
        );
    }

    #[test]
    fn whiteouts() {
        let root = tempfile::tempdir().unwrap();
        let lower = TarBuilder::new()
            .file("keep.txt", b"k")
            .file("gone.txt", b"g")
            .file("dir/old1", b"1")
            .file("dir/sub/old2", b"2")
            .file("gonedir/x", b"x")
            .build();
        let upper = TarBuilder::new()
            .dir("dir")
            .file("dir/new", b"n")
            .file("dir/.wh..wh..opq", b"")
            .file(".wh.gone.txt", b"")
            .file(".wh.gonedir", b"")
            .file(".wh.never-existed", b"")
            .build();
        apply(root.path(), &[lower, upper], UnpackLimits::default()).unwrap();
        let r = root.path();
        assert!(r.join("keep.txt").exists());
        assert!(!r.join("gone.txt").exists());
        assert!(!r.join("gonedir").exists());
        assert!(
            r.join("dir/new").exists(),
            "same-layer entry survives opaque"
        );
        assert!(!r.join("dir/old1").exists());
        assert!(!r.join("dir/sub").exists());
        assert!(!r.join(".wh.gone.txt").exists());
        assert!(!r.join("dir/.wh..wh..opq").exists());
    }

    #[test]
    fn bomb_limits() {
        let t = TarBuilder::new()
            .file("a", &[0u8; 4096])
            .file("big", &vec![0u8; 64 * 1024])
            .build();
        let outer = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir_in(outer.path()).unwrap();
        let limits = UnpackLimits {
            max_bytes: 32 * 1024,
            max_entries: 100,
        };
        let err = apply(work.path(), &[t], limits).unwrap_err();
        assert!(
            matches!(&err, ImageError::TooLarge { what, .. } if what.contains("big")),
            "{err}"
        );
        drop(work);
        assert_eq!(fs::read_dir(outer.path()).unwrap().count(), 0);

        let mut b = TarBuilder::new();
        for i in 0..20 {
            b = b.file(&format!("f{i}"), b"");
        }
        let work = tempfile::tempdir().unwrap();
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 10,
        };
        let err = apply(work.path(), &[b.build()], limits).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn gzip_bomb_via_blob() {
        use std::io::Write;
        // 8 MiB of zeros compresses to a few KiB.
        let t = TarBuilder::new().file("zeros", &vec![0u8; 8 << 20]).build();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&t).unwrap();
        let blob = gz.finish().unwrap();
        assert!(blob.len() < 64 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, &blob).unwrap();
        let digest = super::super::blobs::sha256_digest(&blob);
        let diff_id = super::super::blobs::sha256_digest(&t);
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut u = Unpacker::new(
            &root,
            UnpackLimits {
                max_bytes: 1 << 20,
                max_entries: 10,
            },
        );
        let err = u
            .apply_blob(&path, &digest, Compression::Gzip, &diff_id)
            .unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn blob_digest_and_diff_id_verified() {
        let t = TarBuilder::new().file("x.wasm", b"abc").build();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, &t).unwrap();
        let digest = super::super::blobs::sha256_digest(&t);
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut u = Unpacker::new(&root, UnpackLimits::default());
        u.apply_blob(&path, &digest, Compression::None, &digest)
            .unwrap();
        let wrong = super::super::blobs::sha256_digest(b"nope");
        let err = u
            .apply_blob(&path, &wrong, Compression::None, &digest)
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        let err = u
            .apply_blob(&path, &digest, Compression::None, &wrong)
            .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    }

    // ---- Bounded parsing: metadata entries and skipped data ----

    /// A file entry and the end marker, to follow a bomb.
    fn tail() -> Vec<u8> {
        TarBuilder::new().file("after.wasm", b"x").build()
    }

    /// Applies a lazily generated stream, returning the result and how much was read.
    fn apply_counted(stream: impl Read, limits: UnpackLimits) -> (Result<()>, u64) {
        let root = tempfile::tempdir().unwrap();
        let mut r = Counting {
            inner: stream,
            read: 0,
        };
        let mut u = Unpacker::new(root.path(), limits);
        let res = u.apply_tar(&mut r, "test");
        (res, r.read)
    }

    #[test]
    fn pax_header_bomb_is_refused_before_reading() {
        // 256 MiB of PAX header compressed by zstd to a few KiB: the tar crate read it whole.
        let size: u64 = 256 << 20;
        let mut enc = zstd::Encoder::new(Vec::new(), 1).unwrap();
        let mut diff = super::super::blobs::HashingReader::new(lazy_tar(
            header_block("PaxHeaders/bomb", tar::EntryType::XHeader, size),
            size,
            tail(),
        ));
        io::copy(&mut diff, &mut enc).unwrap();
        let blob = enc.finish().unwrap();
        assert!(blob.len() < 64 * 1024, "{}", blob.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        fs::write(&path, &blob).unwrap();
        let digest = super::super::blobs::sha256_digest(&blob);
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        let mut u = Unpacker::new(&root, UnpackLimits::default());
        let err = u
            .apply_blob(&path, &digest, Compression::Zstd, &diff.digest())
            .unwrap_err();
        assert!(
            matches!(&err, ImageError::TooLarge { what, limit }
                if *limit == MAX_METADATA_ENTRY && what.contains("PaxHeaders/bomb")),
            "{err}"
        );
    }

    #[test]
    fn gnu_long_name_and_link_bombs_are_refused_before_reading() {
        for kind in [tar::EntryType::GNULongName, tar::EntryType::GNULongLink] {
            let size: u64 = 256 << 20;
            let (res, read) = apply_counted(
                lazy_tar(header_block("././@LongLink", kind, size), size, tail()),
                UnpackLimits::default(),
            );
            let err = res.unwrap_err();
            assert!(
                matches!(&err, ImageError::TooLarge { limit, .. } if *limit == MAX_METADATA_ENTRY),
                "{err}"
            );
            assert!(read < 64 * 1024, "read {read} bytes");
        }
    }

    #[test]
    fn skipped_entry_data_counts_against_the_limit() {
        // A directory declaring 100 GiB of data: refused at its header, nothing decompressed.
        let size: u64 = 100 << 30;
        let (res, read) = apply_counted(
            lazy_tar(
                header_block("d", tar::EntryType::Directory, size),
                size,
                tail(),
            ),
            UnpackLimits::default(),
        );
        let err = res.unwrap_err();
        assert!(
            matches!(&err, ImageError::TooLarge { what, .. } if what.contains("\"d\"")),
            "{err}"
        );
        assert!(read <= 64 * 1024, "read {read} bytes");
        // Data on symlinks, hard links and whiteouts counts too.
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 100,
        };
        let blob = vec![0u8; 2 << 20];
        for t in [
            TarBuilder::new().raw(tar::EntryType::Symlink, "s", &blob),
            TarBuilder::new()
                .file("a", b"")
                .raw(tar::EntryType::Link, "h", &blob),
            TarBuilder::new().raw(tar::EntryType::Regular, ".wh.x", &blob),
        ] {
            let root = tempfile::tempdir().unwrap();
            let err = apply(root.path(), &[t.build()], limits).unwrap_err();
            assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        }
    }

    #[test]
    fn pax_size_disagreeing_with_header_is_hostile() {
        // The header says 512 bytes of data, which hold a whole smuggled entry; the PAX size
        // says 0, so a reader trusting it unpacks the smuggled file.
        let smuggled = TarBuilder::new().file("smuggled.wasm", b"").build();
        let t = TarBuilder::new()
            .pax(&[("size", "0")])
            .raw(tar::EntryType::Regular, "innocent", &smuggled[..512])
            .build();
        assert_hostile(hostile(&[t]), "innocent");
        // A PAX size that agrees is fine.
        let root = tempfile::tempdir().unwrap();
        let t = TarBuilder::new()
            .pax(&[("size", "3")])
            .file("ok", b"abc")
            .build();
        apply(root.path(), &[t], UnpackLimits::default()).unwrap();
        assert_eq!(fs::read(root.path().join("ok")).unwrap(), b"abc");
    }

    #[test]
    fn ambiguous_metadata_is_hostile() {
        use tar::EntryType as T;
        let long = |n: &str| format!("{n}\0").into_bytes();
        let cases = [
            (
                TarBuilder::new()
                    .pax(&[("path", "a")])
                    .pax(&[("path", "b")])
                    .file("f", b""),
                "PaxHeaders/next",
            ),
            (
                TarBuilder::new()
                    .raw(T::GNULongName, "././@LongLink", &long("a"))
                    .raw(T::GNULongName, "././@LongLink", &long("b"))
                    .file("f", b""),
                "././@LongLink",
            ),
            (
                TarBuilder::new()
                    .raw(T::GNULongName, "././@LongLink", &long("a"))
                    .pax(&[("path", "b")])
                    .file("f", b""),
                "f",
            ),
            (
                TarBuilder::new()
                    .raw(T::GNULongLink, "././@LongLink", &long("a"))
                    .pax(&[("linkpath", "b")])
                    .link(T::Symlink, "s", "c"),
                "s",
            ),
            (
                TarBuilder::new()
                    .raw(T::GNULongName, "././@LongLink", b"a\0b\0")
                    .file("f", b""),
                "f",
            ),
            (
                TarBuilder::new()
                    .pax(&[("GNU.sparse.major", "1")])
                    .file("f", b""),
                "f",
            ),
            (TarBuilder::new().raw(T::GNUSparse, "sparse", b""), "sparse"),
            (
                TarBuilder::new()
                    .raw(T::XGlobalHeader, "global", &pax_records(&[("path", "x")]))
                    .file("f", b""),
                "global",
            ),
        ];
        for (t, entry) in cases {
            assert_hostile(hostile(&[t.build()]), entry);
        }
        // Metadata with no member after it.
        let t = TarBuilder::new()
            .file("f", b"")
            .pax(&[("path", "x")])
            .build();
        assert_hostile(hostile(&[t]), "<end of layer test>");
    }

    #[test]
    fn long_names_via_pax_and_gnu() {
        let root = tempfile::tempdir().unwrap();
        let deep = format!("{}/app.wasm", "d".repeat(150));
        let target = format!("/{}/target.wasm", "t".repeat(150));
        // GNU: the tar builder emits `L`/`K` entries for names over 100 bytes.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("gnu/{deep}"), &b"g"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "gnu/link", &target).unwrap();
        let gnu = b.into_inner().unwrap();
        // PAX: path and linkpath records.
        let pax = TarBuilder::new()
            .pax(&[("path", &format!("pax/{deep}")), ("mtime", "1.5")])
            .file("pax/short", b"p")
            .pax(&[("linkpath", &target)])
            .link(tar::EntryType::Symlink, "pax/link", "short")
            .build();
        apply(root.path(), &[gnu, pax], UnpackLimits::default()).unwrap();
        let r = root.path();
        assert_eq!(fs::read(r.join("gnu").join(&deep)).unwrap(), b"g");
        assert_eq!(fs::read(r.join("pax").join(&deep)).unwrap(), b"p");
        assert!(
            !r.join("pax/short").exists(),
            "PAX path replaces the header name"
        );
        for l in ["gnu/link", "pax/link"] {
            assert_eq!(fs::read_link(r.join(l)).unwrap(), Path::new(&target));
        }
    }
}
