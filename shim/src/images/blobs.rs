//! The content-addressed blob store: `blobs/sha256/<hex>`, each blob written to a temp file
//! under the store's `tmp/`, fsynced, verified against its digest and only then renamed into
//! place, so a blob path that exists always holds exactly the bytes its name promises.
//!
//! Blobs are shared: a layer used by two images is stored once. Garbage collection is the
//! caller's job ([`super::ImageStore`] knows which images reference which digests).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use super::error::{ImageError, IoContext, Result};
use super::reference::validate_digest;

/// The on-disk blob directory.
#[derive(Debug, Clone)]
pub(crate) struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> Self {
        BlobStore { dir, tmp }
    }

    /// The path a blob with `digest` lives at (whether or not it exists).
    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(validate_digest(digest)?))
    }

    pub(crate) fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// A fresh temp file in the store's temp dir; deleted on drop unless committed.
    pub(crate) fn temp_file(&self) -> Result<NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .at(&self.tmp)
    }

    /// Fsyncs `tmp`, verifies its content hashes to `digest` and renames it into place.
    /// On mismatch the temp file is deleted and [`ImageError::DigestMismatch`] returned.
    pub(crate) fn commit(&self, tmp: NamedTempFile, digest: &str, what: &str) -> Result<PathBuf> {
        let dest = self.path(digest)?;
        tmp.as_file().sync_all().at(tmp.path())?;
        let actual = sha256_file(tmp.path())?;
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        if dest.is_file() {
            // Another task stored the same content meanwhile; ours is dropped.
            return Ok(dest);
        }
        tmp.persist(&dest)
            .map_err(|e| ImageError::io(&dest, e.error))?;
        sync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Stores `data` under `digest` (verified).
    pub(crate) fn write_bytes(&self, digest: &str, data: &[u8], what: &str) -> Result<PathBuf> {
        if self.contains(digest) {
            return self.path(digest);
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(data).at(tmp.path())?;
        self.commit(tmp, digest, what)
    }

    /// Copies at most `limit` bytes from `reader` into the store under `digest` (verified).
    pub(crate) fn write_reader(
        &self,
        digest: &str,
        reader: &mut dyn Read,
        limit: u64,
        what: &str,
    ) -> Result<PathBuf> {
        if self.contains(digest) {
            return self.path(digest);
        }
        let mut tmp = self.temp_file()?;
        let copied = io::copy(&mut reader.take(limit + 1), &mut tmp).at(tmp.path())?;
        if copied > limit {
            return Err(ImageError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        self.commit(tmp, digest, what)
    }

    /// Reads a small blob (manifest, config) into memory, re-verifying its digest.
    pub(crate) fn read_verified(&self, digest: &str, limit: u64, what: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        let f = File::open(&path).at(&path)?;
        let mut data = Vec::new();
        f.take(limit + 1).read_to_end(&mut data).at(&path)?;
        if data.len() as u64 > limit {
            return Err(ImageError::TooLarge {
                what: what.to_string(),
                limit,
            });
        }
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                what: what.to_string(),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    /// Deletes a blob; missing blobs are not an error.
    pub(crate) fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io(path, e)),
        }
    }

    /// Digests of every stored blob.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).at(&self.dir)? {
            let entry = entry.at(&self.dir)?;
            if let Some(name) = entry.file_name().to_str() {
                let d = format!("sha256:{name}");
                if validate_digest(&d).is_ok() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// `sha256:<hex>` of a file's content.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).at(path)?;
    let mut h = HashingReader::new(&mut f);
    io::copy(&mut h, &mut io::sink()).at(path)?;
    Ok(h.digest())
}

/// Fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    crate::store::fsync_dir(dir).at(dir)
}

/// A reader that hashes (sha256) everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of the bytes read so far.
    pub(crate) fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("blobs")).unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        let s = BlobStore::new(d.path().join("blobs"), d.path().join("tmp"));
        (d, s)
    }

    #[test]
    fn write_verify_and_reject_mismatch() {
        let (d, s) = store();
        let digest = sha256_digest(b"hello");
        let p = s.write_bytes(&digest, b"hello", "blob").unwrap();
        assert_eq!(fs::read(p).unwrap(), b"hello");
        assert_eq!(s.read_verified(&digest, 100, "blob").unwrap(), b"hello");
        let wrong = sha256_digest(b"other");
        let err = s.write_bytes(&wrong, b"hello", "blob").unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!s.contains(&wrong));
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(s.list().unwrap(), vec![digest]);
    }

    #[test]
    fn reader_limit() {
        let (_d, s) = store();
        let data = vec![7u8; 1000];
        let digest = sha256_digest(&data);
        let err = s
            .write_reader(&digest, &mut data.as_slice(), 999, "blob")
            .unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }));
        s.write_reader(&digest, &mut data.as_slice(), 1000, "blob")
            .unwrap();
        assert!(s.contains(&digest));
    }
}
