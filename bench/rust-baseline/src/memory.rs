//! Memory: anonymous mappings for the registered regions and the page-aligned buffers the handler
//! copies from, the page size, and the warm-up that backs the guest's memory again.

use crate::fail::{Context, Failure};
use libc::c_void;
use nix::errno::Errno;
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::unistd::ftruncate;
use nix::unistd::{sysconf, SysconfVar};
use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::OnceLock;

pub fn page_size() -> usize {
    static PAGE_SIZE: OnceLock<usize> = OnceLock::new();
    *PAGE_SIZE.get_or_init(|| {
        let size = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().expect("sysconf(_SC_PAGESIZE) has an answer");
        usize::try_from(size).expect("the page size is positive")
    })
}

/// A private anonymous mapping, unmapped on drop. Its bytes are only read one at a time
/// ([`Mapping::read_byte`]): the region registered with the userfaultfd is one, and the kernel fills
/// its pages while other threads read it.
pub struct Mapping {
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to the process, not to a thread, and the only access it offers through
// `&self` is a volatile read of one byte (pages appear under it by the kernel's hand, never by ours).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn anonymous(len: usize) -> Result<Self, Failure> {
        let length = NonZeroUsize::new(len).ok_or(Errno::EINVAL).context("mmap")?;
        // SAFETY: a new mapping where the kernel chooses: it overlaps nothing that exists.
        let start = unsafe {
            mmap_anonymous(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE)
        }
        .context("mmap")?;
        Ok(Self { start: start.cast(), len })
    }

    /// A memfd mapped shared, its page cache filled with `byte` through a second mapping first: the
    /// pages are there, but not mapped here, so each first touch is a minor fault.
    pub fn shmem_filled(len: usize, byte: u8) -> Result<Self, Failure> {
        let length = NonZeroUsize::new(len).ok_or(Errno::EINVAL).context("mmap")?;
        let file = memfd_create(c"rust-baseline", MemFdCreateFlag::MFD_CLOEXEC).context("memfd_create")?;
        ftruncate(&file, len as libc::off_t).context("ftruncate")?;
        let map = || {
            // SAFETY: a new shared mapping of our own memfd where the kernel chooses: it overlaps
            // nothing that exists.
            unsafe { mmap(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, &file, 0) }
                .context("mmap(memfd)")
        };
        let alias = Self { start: map()?.cast(), len };
        // SAFETY: the alias is ours, `len` bytes long, and nothing else refers to it yet.
        unsafe { std::ptr::write_bytes(alias.start.as_ptr(), byte, len) };
        drop(alias);
        Ok(Self { start: map()?.cast(), len })
    }

    pub fn addr(&self) -> usize {
        self.start.as_ptr() as usize
    }

    pub fn as_ptr(&self) -> *mut c_void {
        self.start.as_ptr().cast()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads the byte at `offset`: the access that takes the page fault when the page is missing.
    #[inline]
    pub fn read_byte(&self, offset: usize) -> u8 {
        assert!(offset < self.len, "offset {offset} is past the mapping's {} bytes", self.len);
        // SAFETY: `offset` is inside the mapping, which is readable and lives as long as `self`. A
        // missing page makes the read wait until the handler (or the kernel) maps it; it never sees
        // memory that is being written through a Rust reference.
        unsafe { self.start.as_ptr().add(offset).read_volatile() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing borrows it any more. A failure would leave it
        // mapped, which harms nothing here.
        let _ = unsafe { munmap(self.start.cast(), self.len) };
    }
}

/// A page-aligned buffer of our own (never registered): the page COPY maps, the scan's chunks.
pub struct Buffer(Mapping);

impl Buffer {
    pub fn new(len: usize) -> Result<Self, Failure> {
        Mapping::anonymous(len).map(Self)
    }

    pub fn filled(len: usize, byte: u8) -> Result<Self, Failure> {
        let mut buffer = Self::new(len)?;
        buffer.fill(byte);
        Ok(buffer)
    }
}

impl Deref for Buffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the mapping is readable for `len` bytes while `self` lives, is not registered with
        // a userfaultfd, and is written only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.0.start.as_ptr(), self.0.len) }
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.0.start.as_ptr(), self.0.len) }
    }
}

/// Touches and frees `mib` MiB, so that the pages the guest handed back to the host are backed again.
pub fn warm_memory(mib: usize) -> Result<(), Failure> {
    if mib > 0 {
        Buffer::filled(mib << 20, 1)?;
    }
    Ok(())
}
