//! The resolver: COPY, ZEROPAGE, CONTINUE, POISON, WAKE, WRITEPROTECT and MOVE on a region's
//! pages, over the fd, its registrations and its counters. Each checks the region, bounds,
//! alignment and registration before its ioctl. A resolve that gets EAGAIN because a
//! non-cooperative event is unread (the kernel's `mmap_changing`) parks as its caller says.

use crate::error::{Error, Result};
use crate::fd::Fd;
use crate::options::Modes;
use crate::region::{MemoryKind, Region};
use crate::registrations::{Registration, Registrations};
use crate::residency::{Residency, WriteTarget};
use crate::source::Served;
use crate::stats::{bump, Counters};
use crate::sys::{ioctl, uapi};
use nix::errno::Errno;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};
use userfaultfd::RegisterMode;

/// Whether a resolve wakes the threads waiting on its range (false is `*_MODE_DONTWAKE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake(pub bool);

/// Whether the pages a resolve maps arrive write-protected (`*_MODE_WP`), so their first write faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protect(pub bool);

/// What a resolve does when the kernel refuses it (EAGAIN) because an event is unread.
#[derive(Clone, Copy)]
pub enum Park<'a> {
    /// Return the EAGAIN: the caller is a reader in its turn, which reads the events the kernel
    /// waits for, and retries after (it must not wait for itself).
    Never,
    /// Wait until a reader has read events (the epoch moves), then try again, for up to 5 s.
    UntilRead,
    /// The caller reads the fd itself between its turns (a reading handler): `read` reads what is
    /// unread (returns whether it read anything), then the resolve tries again.
    ReadFirst(&'a dyn Fn() -> bool),
}

/// How long a resolve may stay parked behind unread events before it gives up with EAGAIN.
const PARKED_AT_MOST: Duration = Duration::from_secs(5);
/// How long one wait for the loop to read events lasts before the resolve is tried again anyway.
const PARK_SLICE: Duration = Duration::from_millis(50);
/// The same for a reader that reads the fd itself and found nothing more to read.
const READ_FIRST_SLICE: Duration = Duration::from_micros(100);

/// Counts batches of events read, so that a parked resolve knows when to try again.
#[derive(Default)]
pub struct EventEpoch {
    seen: Mutex<u64>,
    changed: Condvar,
}

impl EventEpoch {
    pub fn seen(&self) -> u64 {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until readers have read more events than `seen`, or `slice` has passed.
    pub fn wait(&self, seen: u64, slice: Duration) {
        let guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.changed.wait_timeout_while(guard, slice, |now| *now == seen);
    }

    /// Called after a turn that read events: parked resolves may go again.
    pub fn advance(&self) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }
}

pub struct Resolver {
    pub fd: Fd,
    pub registrations: RwLock<Registrations<Served>>,
    pub counters: Arc<Counters>,
    pub epoch: EventEpoch,
}

impl Resolver {
    pub fn new(fd: Fd, registrations: Registrations<Served>) -> Resolver {
        Resolver {
            fd,
            registrations: RwLock::new(registrations),
            counters: Arc::new(Counters::default()),
            epoch: EventEpoch::default(),
        }
    }

    pub fn registrations(&self) -> RwLockReadGuard<'_, Registrations<Served>> {
        self.registrations.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn registrations_mut(&self) -> RwLockWriteGuard<'_, Registrations<Served>> {
        self.registrations.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The registration covering `address`.
    pub fn registration_at(&self, address: usize) -> Option<Registration<Served>> {
        self.registrations().at(address).map(|(_, reg)| reg.clone())
    }

    /// Checks that a range lies in registered memory of this fd and returns its address.
    pub fn check_registered(&self, op: &'static str, region: &Region, offset: usize, len: usize) -> Result<usize> {
        self.fd.check_open(op)?;
        let start = region.check_range(op, offset, len)?;
        if self.registrations().covers(start, start + len) {
            return Ok(start);
        }
        Err(Error::invalid(
            op,
            format!("range {offset}+{len} of region {} is not registered with this userfaultfd", region.id()),
        ))
    }

    /// Makes `served` serve `[offset, offset + len)` of a region registered already (no ioctl);
    /// returns the range's address.
    pub fn attach(
        &self,
        op: &'static str,
        region: &Arc<Region>,
        offset: usize,
        len: usize,
        served: &Arc<Served>,
    ) -> Result<usize> {
        let start = self.check_registered(op, region, offset, len)?;
        self.registrations_mut().insert_range(region, start, start + len, Some(served.clone()));
        Ok(start)
    }

    /// The sources that serve registered ranges, each once.
    pub fn sources(&self) -> Vec<Arc<Served>> {
        let mut served: Vec<Arc<Served>> = Vec::new();
        for (_, registration) in self.registrations().overlapping(0, usize::MAX) {
            if let Some(one) = &registration.served {
                if !served.iter().any(|seen| Arc::ptr_eq(seen, one)) {
                    served.push(one.clone());
                }
            }
        }
        served
    }

    /// Registers `[offset, offset + len)` of a region (all of it by default), its faults served by
    /// `served` if given; returns the mask of ioctls the kernel allows there.
    pub fn register(
        &self,
        region: &Arc<Region>,
        modes: Modes,
        offset: usize,
        len: Option<usize>,
        served: Option<Arc<Served>>,
    ) -> Result<u64> {
        const OP: &str = "UFFDIO_REGISTER";
        self.fd.check_open(OP)?;
        let len = len.unwrap_or(region.size().saturating_sub(offset));
        let start = region.check_range(OP, offset, len)?;
        if !(modes.missing || modes.minor || modes.wp) {
            return Err(Error::invalid(OP, "no mode: ask for missing, minor or wp faults"));
        }
        let fd = &self.fd;
        let kind = region.kind();
        if modes.minor && kind == MemoryKind::Anonymous {
            return Err(Error::invalid(OP, "minor faults need shmem or hugetlbfs memory, not anonymous memory"));
        }
        match kind {
            MemoryKind::Shmem if modes.missing => {
                fd.require_feature(OP, uapi::FEATURE_MISSING_SHMEM, "missing faults on shmem")?
            }
            MemoryKind::Hugetlb if modes.missing => {
                fd.require_feature(OP, uapi::FEATURE_MISSING_HUGETLBFS, "missing faults on hugetlbfs")?
            }
            _ => {}
        }
        match kind {
            MemoryKind::Shmem if modes.minor => {
                fd.require_feature(OP, uapi::FEATURE_MINOR_SHMEM, "minor faults on shmem")?
            }
            MemoryKind::Hugetlb if modes.minor => {
                fd.require_feature(OP, uapi::FEATURE_MINOR_HUGETLBFS, "minor faults on hugetlbfs")?
            }
            _ => {}
        }
        if modes.wp {
            match kind {
                MemoryKind::Anonymous => fd.require_feature(OP, uapi::FEATURE_PAGEFAULT_FLAG_WP, "write-protection")?,
                _ => {
                    fd.require_feature(OP, uapi::FEATURE_WP_HUGETLBFS_SHMEM, "write-protection of shmem or hugetlbfs")?
                }
            }
        }
        // A residency limit, or write-back to a writable file, maps its pages write-protected, to
        // see the ones the program writes.
        let residency = match served.as_deref() {
            Some(served) => residency_of(fd, region, modes, offset, len, served, &self.counters)?,
            None => None,
        };
        let mut mode = RegisterMode::empty();
        mode.set(RegisterMode::MISSING, modes.missing);
        mode.set(RegisterMode::MINOR, modes.minor);
        mode.set(RegisterMode::WRITE_PROTECT, modes.wp || residency.is_some());
        let mut registrations = self.registrations_mut();
        check_served_again(&registrations, region, start, len, modes, served.as_deref())?;
        let ioctls = fd.with_fd(OP, |uffd| ioctl::register(uffd, start, len, mode))?;
        if let (Some(served), Some(residency)) = (&served, residency) {
            served.limit_residency(residency);
        }
        match served {
            Some(served) => registrations.insert_range(region, start, start + len, Some(served)),
            None => registrations.insert_keeping_served(region, start, start + len),
        }
        Ok(ioctls)
    }

    /// Wakes whatever waits on a page (errors ignored: the fd may be closing, which wakes every
    /// waiter anyway).
    pub fn wake_page(&self, region: &Region, offset: usize) {
        let _ = self.fd.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, region.address() + offset, region.page_size()));
    }

    /// Runs a resolving ioctl, parking it as `park` says while the kernel refuses it for unread events.
    pub(crate) fn parked<T>(&self, park: Park<'_>, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        if let Park::Never = park {
            return attempt();
        }
        let deadline = Instant::now() + PARKED_AT_MOST;
        loop {
            let seen = self.epoch.seen();
            match attempt() {
                Err(Error::Sys { errno: Errno::EAGAIN, .. }) if Instant::now() < deadline => {
                    bump(&self.counters.parked);
                    match park {
                        // The event was read but the kernel has not let go yet: a moment, not a slice.
                        Park::ReadFirst(read) if !read() => self.epoch.wait(seen, READ_FIRST_SLICE),
                        Park::ReadFirst(_) | Park::Never => {}
                        Park::UntilRead => self.epoch.wait(seen, PARK_SLICE),
                    }
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
    pub fn copy(
        &self,
        region: &Region,
        offset: usize,
        bytes: &[u8],
        wake: Wake,
        protect: Protect,
        park: Park<'_>,
    ) -> Result<usize> {
        const OP: &str = "UFFDIO_COPY";
        let page = region.page_size();
        if bytes.is_empty() {
            return Err(Error::out_of_range(
                OP,
                format!("bytes is empty: a copy maps at least one page ({page} bytes)"),
            ));
        }
        if bytes.len() % page != 0 {
            return Err(Error::invalid(
                OP,
                format!("bytes ({} bytes) is not a multiple of the page size {page}", bytes.len()),
            ));
        }
        if protect.0 {
            self.require_wp(OP, region)?;
        }
        self.check_registered(OP, region, offset, bytes.len())?;
        let mode = if wake.0 { 0 } else { uapi::COPY_MODE_DONTWAKE } | if protect.0 { uapi::COPY_MODE_WP } else { 0 };
        self.copy_at(region, offset, bytes, mode, park)
    }

    /// UFFDIO_COPY to `offset` of a region in a registration the caller found (a native source's
    /// fault): no second lookup; the kernel checks the range again. The pages mapped are noted in
    /// the region, here for every path that maps (a prefetch skips them).
    pub fn copy_at(&self, region: &Region, offset: usize, bytes: &[u8], mode: u64, park: Park<'_>) -> Result<usize> {
        let dst = region.address() + offset;
        let mapped = self.counted(&self.counters.copies, bytes.len(), || {
            self.parked(park, || self.fd.with_fd("UFFDIO_COPY", |uffd| ioctl::copy(uffd, dst, bytes, mode)))
        })?;
        region.note_mapped(offset, mapped);
        Ok(mapped)
    }

    /// UFFDIO_ZEROPAGE over a range (not on hugetlbfs, which has no zero page).
    pub fn zero(&self, region: &Region, offset: usize, len: usize, wake: Wake, park: Park<'_>) -> Result<usize> {
        const OP: &str = "UFFDIO_ZEROPAGE";
        if region.kind() == MemoryKind::Hugetlb {
            return Err(Error::unsupported(OP, "hugetlbfs has no zero page: resolve with copy() of zeroed bytes"));
        }
        self.check_registered(OP, region, offset, len)?;
        self.zero_at(region, offset, len, wake, park)
    }

    /// UFFDIO_ZEROPAGE at `offset` of a region in a registration the caller found (see `copy_at`).
    pub fn zero_at(&self, region: &Region, offset: usize, len: usize, wake: Wake, park: Park<'_>) -> Result<usize> {
        let start = region.address() + offset;
        let mapped = self.counted(&self.counters.zeropages, len, || {
            self.parked(park, || self.fd.with_fd("UFFDIO_ZEROPAGE", |uffd| ioctl::zeropage(uffd, start, len, wake.0)))
        })?;
        region.note_mapped(offset, mapped);
        Ok(mapped)
    }

    /// UFFDIO_CONTINUE over a range: maps what is in the page cache (shmem and hugetlbfs).
    pub fn r#continue(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
        wake: Wake,
        protect: Protect,
        park: Park<'_>,
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
        let mapped = self.counted(&self.counters.continues, len, || {
            self.parked(park, || self.fd.with_fd(OP, |uffd| ioctl::r#continue(uffd, start, len, mode)))
        })?;
        region.note_mapped(offset, mapped);
        Ok(mapped)
    }

    /// UFFDIO_POISON over a range: later accesses raise SIGBUS.
    pub fn poison(&self, region: &Region, offset: usize, len: usize, wake: Wake, park: Park<'_>) -> Result<usize> {
        const OP: &str = "UFFDIO_POISON";
        self.fd.require_feature(OP, uapi::FEATURE_POISON, "poisoning")?;
        let start = self.check_registered(OP, region, offset, len)?;
        let mode = if wake.0 { 0 } else { uapi::POISON_MODE_DONTWAKE };
        let poisoned = self.parked(park, || self.fd.with_fd(OP, |uffd| ioctl::poison(uffd, start, len, mode)))?;
        bump(&self.counters.poisons);
        Ok(poisoned)
    }

    /// UFFDIO_WAKE over a range.
    pub fn wake(&self, region: &Region, offset: usize, len: usize) -> Result<()> {
        const OP: &str = "UFFDIO_WAKE";
        let start = self.check_registered(OP, region, offset, len)?;
        self.fd.with_fd(OP, |uffd| ioctl::wake(uffd, start, len))?;
        bump(&self.counters.wakes);
        Ok(())
    }

    /// UFFDIO_WRITEPROTECT: protects a range registered for wp faults, or lifts the protection
    /// (waking the writers waiting there unless `wake` is false).
    pub fn write_protect(
        &self,
        region: &Region,
        offset: usize,
        len: usize,
        protect: bool,
        wake: Wake,
        park: Park<'_>,
    ) -> Result<()> {
        const OP: &str = "UFFDIO_WRITEPROTECT";
        self.require_wp(OP, region)?;
        let start = self.check_registered(OP, region, offset, len)?;
        self.parked(park, || self.fd.with_fd(OP, |uffd| ioctl::write_protect(uffd, start, len, protect, wake.0)))?;
        bump(&self.counters.write_protects);
        Ok(())
    }

    /// UFFDIO_WRITEPROTECT at `start`, which the caller took from the registrations: lifts (or
    /// sets) the protection of a range, waking its writers.
    pub fn write_protect_at(&self, start: usize, len: usize, protect: bool) -> Result<()> {
        self.fd.with_fd("UFFDIO_WRITEPROTECT", |uffd| ioctl::write_protect(uffd, start, len, protect, true))?;
        bump(&self.counters.write_protects);
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
        park: Park<'_>,
    ) -> Result<usize> {
        const OP: &str = "UFFDIO_MOVE";
        self.fd.require_feature(OP, uapi::FEATURE_MOVE, "moving pages")?;
        if region.kind() != MemoryKind::Anonymous || from.kind() != MemoryKind::Anonymous {
            return Err(Error::invalid(OP, "pages move only between anonymous regions"));
        }
        let dst = self.check_registered(OP, region, offset, len)?;
        let src = from.check_range(OP, from_offset, len)?;
        let mode = if wake.0 { 0 } else { uapi::MOVE_MODE_DONTWAKE }
            | if allow_holes { uapi::MOVE_MODE_ALLOW_SRC_HOLES } else { 0 };
        self.counted(&self.counters.moves, len, || {
            self.parked(park, || self.fd.with_fd(OP, |uffd| ioctl::r#move(uffd, dst, src, len, mode)))
        })
    }

    /// Write-protection needs a wp registration, which needs the feature for this memory.
    fn require_wp(&self, op: &'static str, region: &Region) -> Result<()> {
        match region.kind() {
            // Another process's memory may be of any kind: the kernel checks what the VMA needs.
            MemoryKind::Anonymous | MemoryKind::Remote => {
                self.fd.require_feature(op, uapi::FEATURE_PAGEFAULT_FLAG_WP, "write-protection")
            }
            _ => {
                self.fd.require_feature(op, uapi::FEATURE_WP_HUGETLBFS_SHMEM, "write-protection of shmem or hugetlbfs")
            }
        }
    }
}
/// A range registered again keeps what serves it: a registration without a source keeps the
/// source of each part that had one, so its modes must still let that source get its faults; one
/// with a source may name the source the range has already (new readahead), never another one.
fn check_served_again(
    registrations: &Registrations<Served>,
    region: &Arc<Region>,
    start: usize,
    len: usize,
    modes: Modes,
    served: Option<&Served>,
) -> Result<()> {
    const OP: &str = "UFFDIO_REGISTER";
    let base = region.address();
    for (s, e, old) in registrations.served_in(region, start, start + len) {
        let (at, part) = (s - base, e - s);
        match served {
            Some(new) if !new.source().same_as(old.source()) => {
                return Err(Error::sys(
                    OP,
                    Errno::EEXIST,
                    format!(
                        "range {at}+{part} of region {} is served by {} already",
                        region.id(),
                        old.source().describe()
                    ),
                )
                .with_advice(
                    "register it again with the same Source object, or with none to keep it; \
                     to serve it from another source, unregister the range first",
                ));
            }
            Some(_) => {}
            None => {
                let mode = old.source().mode();
                let kept = match mode {
                    "minor" => modes.minor,
                    _ => modes.missing,
                };
                if !kept {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "range {at}+{part} of region {} is served by {}, which serves {mode} faults: a registration \
                             without {mode}: true would leave it none; register with {{ {mode}: true, ... }} to keep \
                             the source (a registration sets the range's modes, as UFFDIO_REGISTER does), or \
                             unregister the range first",
                            region.id(),
                            old.source().describe()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The residency a registration served by `served` keeps: a limit, write-back to a writable file
/// source, both, or none. Refused where it cannot keep its promise.
fn residency_of(
    fd: &Fd,
    region: &Arc<Region>,
    modes: Modes,
    offset: usize,
    len: usize,
    served: &Served,
    counters: &Arc<Counters>,
) -> Result<Option<Residency>> {
    const OP: &str = "maxResident";
    let (limit, file) = (served.limit(), served.source().write_back());
    if limit.is_none() && file.is_none() {
        return Ok(None);
    }
    if modes.wp || modes.minor {
        return Err(Error::unsupported(OP, "a residency limit or write-back takes missing faults only: its own write-protection finds the pages written"));
    }
    if fd.features() & (uapi::FEATURE_EVENT_REMOVE | uapi::FEATURE_WP_ASYNC) != 0 {
        return Err(Error::unsupported(
            OP,
            "a residency limit or write-back on a userfaultfd with EVENT_REMOVE (its evictions would be remove events) \
             or WP_ASYNC (writes would not be seen, and could be lost): open one without them",
        ));
    }
    fd.require_feature("UFFDIO_REGISTER", uapi::FEATURE_PAGEFAULT_FLAG_WP, "a residency limit or write-back")?;
    if region.kind() != crate::region::MemoryKind::Anonymous {
        let what = "a residency limit or write-back on shmem or hugetlb memory";
        fd.require_feature("UFFDIO_REGISTER", uapi::FEATURE_WP_HUGETLBFS_SHMEM, what)?;
    }
    let write_back = match file {
        Some(file) => Some((Box::new(file.clone()) as Box<dyn WriteTarget>, fd.duplicate()?)),
        None => None,
    };
    let mut window = served.readahead.max_pages.max(served.readahead.pages);
    if let (Some(object), Some(limit)) = (served.source().object(), limit) {
        // A fault on an object maps its whole chunk: what is left after an eviction holds one.
        let chunk = object.chunk_size();
        window = window.max(chunk.div_ceil(region.page_size()));
        let least = ((chunk as f64 / limit.low).ceil() as usize).next_multiple_of(region.page_size());
        if limit.bytes < least {
            return Err(Error::out_of_range(
                OP,
                format!(
                    "{} bytes is below {least}: a fault on this object maps a chunk of {chunk} bytes, which must fit \
                     below the low water mark ({}); give a larger limit or a smaller chunkSize",
                    limit.bytes, limit.low
                ),
            ));
        }
    }
    Residency::new(region, offset, len, limit, window, write_back, counters.clone()).map(Some)
}
