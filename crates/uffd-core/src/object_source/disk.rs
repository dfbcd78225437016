//! The disk cache: a directory that the processes of a machine share, one file per chunk. A chunk
//! is written to a temporary file and renamed into place, so a reader sees the whole chunk or no
//! file, never a torn one (and a file of the wrong length is ignored). Who fetches a chunk is
//! decided by an open-file-description lock on one byte of the object's lock file (byte = chunk
//! index): the holder fetches and writes; the others wait for the file to appear, so a fleet of
//! processes restoring the same snapshot fetches each chunk once per machine.
//!
//! A plain object's files are named by a hash of the URL, the ETag, the size and the chunk size: a
//! replaced object never reads the old one's chunks. A pushed snapshot's chunks are named by their
//! content (`blake3-` and the chunk's hash; the lock byte from the hash), so snapshots that share
//! chunks share their files. Nothing is evicted: the directory is the user's to clean.

use crate::error::{Error, Result};
use bytes::Bytes;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub(crate) struct DiskCache {
    dir: PathBuf,
    prefix: String,
    locks: File,
}

/// Where one chunk lives in the cache: its file's name and its byte of the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) byte: u64,
}

impl Slot {
    /// Chunk `index` of a plain object.
    pub(crate) fn index(index: u64) -> Slot {
        Slot { name: index.to_string(), byte: index }
    }
    /// The chunk whose content hashes to `hash` (hex): its lock byte from the hash's first 48 bits.
    pub(crate) fn content(hash: &str) -> Slot {
        Slot { name: hash.into(), byte: u64::from_str_radix(hash.get(..12).unwrap_or("0"), 16).unwrap_or(0) }
    }
}

/// A claim on fetching one chunk: released when dropped (or when the process dies).
pub(crate) struct Claim<'a> {
    cache: &'a DiskCache,
    byte: u64,
}

impl DiskCache {
    /// The cache of a plain object's chunks.
    pub(crate) fn open(dir: PathBuf, url: &str, etag: Option<&str>, size: u64, chunk: usize) -> Result<Self> {
        // SipHash with fixed keys: the same name in every process of the same build.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        (url, etag, size, chunk).hash(&mut hasher);
        Self::with_prefix(dir, format!("{:016x}-{chunk}", hasher.finish()))
    }

    /// The cache of chunks named by content, which every pushed snapshot shares.
    pub(crate) fn content(dir: PathBuf) -> Result<Self> {
        Self::with_prefix(dir, "blake3".into())
    }

    fn with_prefix(dir: PathBuf, prefix: String) -> Result<Self> {
        let what = |e: std::io::Error, op: &'static str| {
            Error::sys(op, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)), format!("cache directory {dir:?}"))
        };
        std::fs::create_dir_all(&dir).map_err(|e| what(e, "mkdir"))?;
        let locks = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(format!("{prefix}.lock")))
            .map_err(|e| what(e, "open"))?;
        Ok(DiskCache { dir, prefix, locks })
    }

    fn path(&self, slot: &Slot) -> PathBuf {
        self.dir.join(format!("{}-{}", self.prefix, slot.name))
    }

    /// The chunk, if a whole one of `len` bytes is there.
    pub(crate) fn read(&self, slot: &Slot, len: usize) -> Option<Bytes> {
        let bytes = std::fs::read(self.path(slot)).ok()?;
        (bytes.len() == len).then(|| Bytes::from(bytes))
    }

    /// `len` bytes at `offset` of chunk `index`, if a whole chunk of `chunk_len` bytes is there.
    pub(crate) fn read_range(&self, slot: &Slot, chunk_len: usize, offset: u64, len: u64) -> Option<Bytes> {
        let file = File::open(self.path(slot)).ok()?;
        if file.metadata().ok()?.len() != chunk_len as u64 {
            return None;
        }
        let mut bytes = vec![0; len as usize];
        file.read_exact_at(&mut bytes, offset).ok()?;
        Some(Bytes::from(bytes))
    }

    /// Writes a chunk whole: a temporary file, renamed into place.
    pub(crate) fn write(&self, slot: &Slot, bytes: &[u8]) -> Result<()> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let temporary = self.dir.join(format!(".{}-{}.{}.{nanos}", self.prefix, slot.name, std::process::id()));
        let fail = |e: std::io::Error, op: &'static str| {
            let _ = std::fs::remove_file(&temporary);
            Error::sys(
                op,
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                format!("writing cache file {temporary:?}"),
            )
        };
        let mut file = File::create(&temporary).map_err(|e| fail(e, "open"))?;
        file.write_all(bytes).map_err(|e| fail(e, "write"))?;
        drop(file);
        std::fs::rename(&temporary, self.path(slot)).map_err(|e| fail(e, "rename"))
    }

    /// Claims the fetch of a chunk for this process, unless another holds it.
    pub(crate) fn claim(&self, slot: &Slot) -> Option<Claim<'_>> {
        self.lock(slot.byte, libc::F_WRLCK as libc::c_short).then_some(Claim { cache: self, byte: slot.byte })
    }

    fn lock(&self, index: u64, kind: libc::c_short) -> bool {
        // SAFETY: an all-zero flock is a valid value; the fields that matter are set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = (index & (i64::MAX as u64)) as libc::off_t;
        lock.l_len = 1;
        // SAFETY: F_OFD_SETLK reads the flock we pass and nothing else; the fd is open.
        unsafe { libc::fcntl(self.locks.as_raw_fd(), libc::F_OFD_SETLK, &lock) == 0 }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.cache.lock(self.byte, libc::F_UNLCK as libc::c_short);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_claimed_by_one_reader_and_read_whole() {
        let dir = std::env::temp_dir().join(format!("uffd-disk-cache-{}", std::process::id()));
        let a = DiskCache::open(dir.clone(), "s3://b/k", Some("\"e\""), 100, 10).unwrap();
        let b = DiskCache::open(dir.clone(), "s3://b/k", Some("\"e\""), 100, 10).unwrap();
        let (three, four) = (Slot::index(3), Slot::index(4));
        let claim = a.claim(&three).expect("free");
        assert!(b.claim(&three).is_none(), "another open file description sees the claim");
        assert!(b.claim(&four).is_some());
        assert!(b.read(&three, 10).is_none());
        a.write(&three, &[7; 10]).unwrap();
        drop(claim);
        assert_eq!(&b.read(&three, 10).unwrap()[..], &[7; 10]);
        assert!(b.read(&three, 11).is_none(), "a file of the wrong length is no chunk");
        assert!(b.claim(&three).is_some());
        let other = DiskCache::open(dir.clone(), "s3://b/k", Some("\"f\""), 100, 10).unwrap();
        assert!(other.read(&three, 10).is_none(), "another ETag, other files");
        let hash = "ffffffffffff".repeat(5) + "abcd";
        let content = DiskCache::content(dir.clone()).unwrap();
        let slot = Slot::content(&hash);
        assert_eq!(slot.byte, 0xffff_ffff_ffff);
        let claim = content.claim(&slot).expect("free");
        assert!(DiskCache::content(dir.clone()).unwrap().claim(&slot).is_none());
        content.write(&slot, &[1; 4]).unwrap();
        drop(claim);
        assert_eq!(&DiskCache::content(dir.clone()).unwrap().read(&slot, 4).unwrap()[..], &[1; 4]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
