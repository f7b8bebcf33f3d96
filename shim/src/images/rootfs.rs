//! Finding the wasm in an unpacked rootfs, and resolving guest paths inside a rootfs
//! chroot-style (symlinks followed, never leaving it).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{ImageConfig, detect};

/// Maximum symlink hops when resolving the entrypoint inside the rootfs.
const MAX_SYMLINK_HOPS: usize = 16;

/// The guest path of the wasm to run: `Entrypoint[0]` if it resolves (inside the rootfs) to a
/// wasm binary, else the shallowest, then alphabetically first, `*.wasm` wasm binary.
pub(super) fn find_wasm(root: &Path, config: &ImageConfig) -> Option<String> {
    if let Some(ep) = config.entrypoint.first() {
        let candidate = if ep.starts_with('/') || config.working_dir.is_empty() {
            ep.clone()
        } else {
            format!("{}/{ep}", config.working_dir.trim_end_matches('/'))
        };
        if let Some(rel) = resolve_in_root(root, &candidate)
            && is_wasm_file(&root.join(&rel))
        {
            return Some(format!("/{}", rel.display()));
        }
    }
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel_dir)) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let rel = rel_dir.join(entry.file_name());
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_file()
                && rel.extension().and_then(|e| e.to_str()) == Some("wasm")
                && is_wasm_file(&entry.path())
            {
                found.push((rel.components().count(), rel));
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .next()
        .map(|(_, rel)| format!("/{}", rel.display()))
}

/// Resolves a guest path to a regular file inside `root`, following symlinks chroot-style
/// (never leaving `root`). Returns the resolved relative path.
pub(crate) fn resolve_in_root(root: &Path, guest: &str) -> Option<PathBuf> {
    resolve_entry_in_root(root, guest).filter(|rel| {
        fs::symlink_metadata(root.join(rel))
            .map(|m| m.is_file())
            .unwrap_or(false)
    })
}

/// Resolves a guest path to whatever entry (file or directory, never a symlink) it names
/// inside `root`, with [`resolve_in_root`]'s rules. Returns the resolved relative path
/// (empty for `root` itself), or `None` if a component is missing or links loop.
pub(crate) fn resolve_entry_in_root(root: &Path, guest: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = guest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .rev()
        .collect();
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&comp);
        let meta = fs::symlink_metadata(root.join(&next)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return None;
            }
            let target = fs::read_link(root.join(&next)).ok()?;
            let target = target.to_str()?;
            if target.starts_with('/') {
                cur = PathBuf::new();
            }
            pending.extend(
                target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .rev(),
            );
        } else {
            cur = next;
        }
    }
    fs::symlink_metadata(root.join(&cur))
        .ok()
        .filter(|m| m.is_file() || m.is_dir())
        .map(|_| cur)
}

fn is_wasm_file(path: &Path) -> bool {
    let mut head = [0u8; 8];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && detect::wasm_kind(&head).is_some()
}
