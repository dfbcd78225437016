//! The range operations of a userfaultfd: COPY, ZEROPAGE, CONTINUE, POISON, WAKE, WRITEPROTECT and
//! MOVE on a region's pages. Each checks the region, bounds, alignment and registration before its
//! ioctl. A resolve that gets EAGAIN because a non-cooperative event is unread (the kernel's
//! `mmap_changing`) is parked until the fault loop has read the events, then retried.

use crate::error::{Error, Result};
use crate::ioctl;
use crate::region::{MemoryKind, Region};
use crate::stats::bump;
use crate::uapi;
use crate::userfaultfd::Userfaultfd;
use nix::errno::Errno;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether a resolve wakes the threads waiting on its range (false is `*_MODE_DONTWAKE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake(pub bool);

/// Whether the pages a resolve maps arrive write-protected (`*_MODE_WP`), so their first write faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protect(pub bool);

/// How long a resolve may stay parked behind unread events before it gives up with EAGAIN.
const PARKED_AT_MOST: Duration = Duration::from_secs(5);
/// How long one wait for the loop to read events lasts before the resolve is tried again anyway.
const PARK_SLICE: Duration = Duration::from_millis(50);

impl Userfaultfd {
    /// Runs a resolving ioctl, parking it while the kernel refuses it for unread events.
    fn parked<T>(&self, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        if crate::direct::in_turn() {
            // This thread is reading the events the kernel waits for: it must not wait for itself.
            // The caller defers what EAGAIN refused until the turn has read them.
            return attempt();
        }
        let deadline = Instant::now() + PARKED_AT_MOST;
        if self.on_loop_thread() && self.pulled() {
            // A handler that reads the fd itself, between its turns: it reads the events the kernel
            // waits for (the faults among them wait for its next turn), and tries again.
            loop {
                match attempt() {
                    Err(Error::Sys { errno: Errno::EAGAIN, .. }) if Instant::now() < deadline => {
                        bump(&self.counters.parked);
                        if !self.read_pending_for_puller() {
                            std::thread::sleep(Duration::from_micros(100));
                        }
                    }
                    other => return other,
                }
            }
        }
        loop {
            let seen = self.events_seen();
            match attempt() {
                Err(Error::Sys { errno: Errno::EAGAIN, .. }) if Instant::now() < deadline => {
                    bump(&self.counters.parked);
                    self.wait_for_events(seen, PARK_SLICE);
                }
                other => return other,
            }
        }
    }

    /// Runs a resolving ioctl of `len` bytes, counted before it runs: the ioctl wakes the faulting
    /// thread, which may read the counters at once. What the ioctl did not map is taken back after.
    fn counted(&self, counter: &AtomicU64, len: usize, ioctl: impl FnOnce() -> Result<usize>) -> Result<usize> {
        let bytes = &self.counters.bytes_mapped;
        counter.fetch_add(1, Ordering::SeqCst);
        bytes.fetch_add(len as u64, Ordering::SeqCst);
        let result = ioctl();
        let unmapped = len.saturating_sub(*result.as_ref().unwrap_or(&0));
        if unmapped > 0 {
            bytes.fetch_sub(unmapped as u64, Ordering::SeqCst);
        }
        if result.is_err() {
            counter.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    /// UFFDIO_COPY of `bytes` (whole pages) to `offset` of a region; returns the bytes mapped.
    pub fn copy(&self, region: &Region, offset: usize, bytes: &[u8], wake: Wake, protect: Protect) -> Result<usize> {
        const OP: &str = "UFFDIO_COPY";
        if bytes.is_empty() || bytes.len() % region.page_size() != 0 {
            return Err(Error::invalid(
                OP,
                format!("{} bytes is not a positive multiple of the page size {}", bytes.len(), region.page_size()),
            ));
        }
        if protect.0 {
            self.require_wp(OP, region)?;
        }
        let dst = self.check_registered(OP, region, offset, bytes.len())?;
        let mode = if wake.0 { 0 } else { uapi::COPY_MODE_DONTWAKE } | if protect.0 { uapi::COPY_MODE_WP } else { 0 };
        self.counted(&self.counters.copies, bytes.len(), || {
            self.parked(|| self.with_fd(OP, |uffd| ioctl::copy(uffd, dst, bytes, mode)))
        })
    }

    /// UFFDIO_ZEROPAGE over a range (not on hugetlbfs, which has no zero page).
    pub fn zero(&self, region: &Region, offset: usize, len: usize, wake: Wake) -> Result<usize> {
        const OP: &str = "UFFDIO_ZEROPAGE";
        if region.kind() == MemoryKind::Hugetlb {
            return Err(Error::unsupported(OP, "hugetlbfs has no zero page: resolve with copy() of zeroed bytes"));
        }
        let start = self.check_registered(OP, region, offset, len)?;
        self.counted(&self.counters.zeropages, len, || {
            self.parked(|| self.with_fd(OP, |uffd| ioctl::zeropage(uffd, start, len, wake.0)))
        })
    }

    /// UFFDIO_CONTINUE over a range: maps what is in the page cache (shmem and hugetlbfs).
    pub fn r#continue(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
        wake: Wake,
        protect: Protect,
    ) -> Result<usize> {
        const OP: &str = "UFFDIO_CONTINUE";
        if region.kind() == MemoryKind::Anonymous {
            return Err(Error::invalid(OP, "anonymous memory has no page cache to continue from"));
        }
        if protect.0 {
            self.require_wp(OP, region)?;
        }
        let start = self.check_registered(OP, region, offset, len)?;
        let mode =
            if wake.0 { 0 } else { uapi::CONTINUE_MODE_DONTWAKE } | if protect.0 { uapi::CONTINUE_MODE_WP } else { 0 };
        self.counted(&self.counters.continues, len, || {
            self.parked(|| self.with_fd(OP, |uffd| ioctl::r#continue(uffd, start, len, mode)))
        })
    }

    /// UFFDIO_POISON over a range: later accesses raise SIGBUS.
    pub fn poison(&self, region: &Region, offset: usize, len: usize, wake: Wake) -> Result<usize> {
        const OP: &str = "UFFDIO_POISON";
        self.require_feature(OP, uapi::FEATURE_POISON, "poisoning")?;
        let start = self.check_registered(OP, region, offset, len)?;
        let mode = if wake.0 { 0 } else { uapi::POISON_MODE_DONTWAKE };
        let poisoned = self.parked(|| self.with_fd(OP, |uffd| ioctl::poison(uffd, start, len, mode)))?;
        bump(&self.counters.poisons);
        Ok(poisoned)
    }

    /// UFFDIO_WAKE over a range; faults in flight there count as woken.
    pub fn wake(&self, region: &Region, offset: usize, len: usize) -> Result<()> {
        const OP: &str = "UFFDIO_WAKE";
        let start = self.check_registered(OP, region, offset, len)?;
        self.with_fd(OP, |uffd| ioctl::wake(uffd, start, len))?;
        bump(&self.counters.wakes);
        self.forget_faults(|fault| {
            std::ptr::eq(&*fault.region, region) && (offset..offset + len).contains(&fault.offset)
        });
        Ok(())
    }

    /// UFFDIO_WRITEPROTECT: protects a range registered for wp faults, or lifts the protection
    /// (waking the writers waiting there unless `wake` is false).
    pub fn write_protect(&self, region: &Region, offset: usize, len: usize, protect: bool, wake: Wake) -> Result<()> {
        const OP: &str = "UFFDIO_WRITEPROTECT";
        self.require_wp(OP, region)?;
        let start = self.check_registered(OP, region, offset, len)?;
        self.parked(|| self.with_fd(OP, |uffd| ioctl::write_protect(uffd, start, len, protect, wake.0)))?;
        bump(&self.counters.write_protects);
        if !protect && wake.0 {
            self.forget_faults(|fault| {
                std::ptr::eq(&*fault.region, region) && (offset..offset + len).contains(&fault.offset)
            });
        }
        Ok(())
    }

    /// UFFDIO_MOVE of `len` bytes from `from_offset` of `from` to `offset` of `region`: the pages
    /// move without a copy and the source becomes empty. Both regions are anonymous; `region` is
    /// registered with this fd. With `allow_holes`, unpopulated source pages are skipped.
    #[allow(clippy::too_many_arguments)]
    pub fn r#move(
        &self,
        region: &Region,
        offset: usize,
        from: &Region,
        from_offset: usize,
        len: usize,
        wake: Wake,
        allow_holes: bool,
    ) -> Result<usize> {
        const OP: &str = "UFFDIO_MOVE";
        self.require_feature(OP, uapi::FEATURE_MOVE, "moving pages")?;
        if region.kind() != MemoryKind::Anonymous || from.kind() != MemoryKind::Anonymous {
            return Err(Error::invalid(OP, "pages move only between anonymous regions"));
        }
        let dst = self.check_registered(OP, region, offset, len)?;
        let src = from.check_range(OP, from_offset, len)?;
        let mode = if wake.0 { 0 } else { uapi::MOVE_MODE_DONTWAKE }
            | if allow_holes { uapi::MOVE_MODE_ALLOW_SRC_HOLES } else { 0 };
        self.counted(&self.counters.moves, len, || {
            self.parked(|| self.with_fd(OP, |uffd| ioctl::r#move(uffd, dst, src, len, mode)))
        })
    }

    /// Write-protection needs a wp registration, which needs the feature for this memory.
    fn require_wp(&self, op: &'static str, region: &Region) -> Result<()> {
        match region.kind() {
            // Another process's memory may be of any kind: the kernel checks what the VMA needs.
            MemoryKind::Anonymous | MemoryKind::Remote => {
                self.require_feature(op, uapi::FEATURE_PAGEFAULT_FLAG_WP, "write-protection")
            }
            _ => self.require_feature(op, uapi::FEATURE_WP_HUGETLBFS_SHMEM, "write-protection of shmem or hugetlbfs"),
        }
    }
}
