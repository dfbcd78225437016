//! A residency limit, and write-back, on a range served from a native source. Pages are noted as
//! they are mapped, write-protected: the first write to a page marks it written and lifts the
//! protection, in the fault that mapped it if that was the write's, else in a write-protect fault.
//!
//! With a limit, when more than its high water mark are mapped the process's evictor thread
//! drops pages down to the low water mark, in batches of ranges (`MADV_DONTNEED`), off the fault
//! path; a dropped page faults again on its next touch and is served from the source again. Which
//! go (2Q, on the one hint the engine sees cheaply, the re-fault): pages mapped for the first time
//! wait in a probation queue and go first, oldest first; a page that faults again after it was
//! dropped has shown it is used, and joins the hot queue, which gives pages up, oldest first, only
//! when probation has none left. So a hot set that fits stays while cold pages pass through. A written page is never dropped as it is: with write-back it is written to the file
//! first, else it stays (pinned).
//!
//! With write-back (a writable file source), written pages go back to the file before they are
//! dropped, on `flush`, and as the range goes. A page is protected again before its bytes are
//! written back: a write meanwhile faults, finds it being written back, and faults again until it
//! is done (then the page is clean and protected, or dropped), so no write lands in a page whose
//! bytes were already taken, and none is lost.

use crate::error::{Error, Result};
use crate::region::{MemoryKind, Region};
use crate::stats::Counters;
use crate::sys::ioctl;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use userfaultfd::Uffd;

/// A residency limit as asked: bytes, and the water marks as fractions of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub bytes: usize,
    /// Eviction starts above this fraction of `bytes` (umap's 90 %).
    pub high: f64,
    /// ... and drops pages down to this fraction (umap's 70 %).
    pub low: f64,
}

impl Limit {
    pub const HIGH: f64 = 0.9;
    pub const LOW: f64 = 0.7;
}

/// What a page of the range is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Page {
    Absent,
    /// Mapped, write-protected, not written since it was mapped or written back.
    Clean,
    /// Written (not protected): written back before it is dropped, or kept if nothing writes it back.
    Written,
    /// Protected again, its bytes being written back: writes to it wait.
    WritingBack,
    /// Dropped: its next mapping is a re-fault.
    Evicted,
}

/// What the evictor, `flush` and the fault path share, under one lock.
struct Ledger {
    pages: Vec<Page>,
    /// Pages mapped for the first time, in the order they were mapped (stale entries are skipped).
    probation: VecDeque<usize>,
    /// Pages mapped again after they were dropped, in that order (stale entries are skipped).
    hot: VecDeque<usize>,
    /// Pages mapped now (clean, written, or being written back).
    resident: usize,
    /// Of those, pages an eviction pass has taken and not yet dropped: the next pass (the evictor's,
    /// or a fault's past the cap, at the same time) counts them gone, or it would drop as many again.
    leaving: usize,
    /// Pages being written back now (`flush` waits for them).
    writing_back: usize,
    /// In the evictor's queue.
    queued: bool,
    stopped: bool,
    /// The first write-back that failed since the last `flush` (that `flush` reports it).
    failed: Option<Error>,
    /// A failure of the evictor's was said, and no write-back has succeeded since: said once.
    failure_said: bool,
}

/// Where written pages go back to: a writable file source.
pub trait WriteTarget: Send + Sync {
    /// Writes `bytes` at region offset `at`; the error names the file and the offset.
    fn write(&self, at: usize, bytes: &[u8]) -> Result<()>;
    /// Flushes what was written to the disk.
    fn sync(&self) -> Result<()>;
}

/// Where written pages go back to, and the userfaultfd that protects them again first.
struct WriteBack {
    file: Box<dyn WriteTarget>,
    /// A copy of the userfaultfd's fd, for UFFDIO_WRITEPROTECT from the evictor and `flush`.
    uffd: OwnedFd,
}

struct Shared {
    state: Mutex<Ledger>,
    /// `flush` waits here for write-backs in progress.
    changed: Condvar,
    counters: Arc<Counters>,
    region: Arc<Region>,
    /// Region offset of the range's first page.
    start: usize,
    /// Clean and written pages kept at most: above `high` the evictor drops them down to `low`
    /// (usize::MAX: no limit, write-back only).
    high: usize,
    low: usize,
    /// The limit itself, in pages: past it the fault path evicts before it maps more.
    cap: usize,
    /// The most pages one fault maps (the readahead window): the newest this many are never evicted.
    window: usize,
    write_back: Option<WriteBack>,
    /// Told of a write-back of the evictor's that failed (no caller waits for it to say so).
    speaker: OnceLock<Box<dyn Fn(Error) + Send + Sync>>,
}

/// A range's residency limit and write-back (the process's evictor thread serves every limit).
pub struct Residency {
    shared: Arc<Shared>,
}

/// What a write fault on a page of the range does.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Lift the protection: the write goes in (the page is marked written).
    Unprotect,
    /// Wake the writer only: the page is being written back or dropped; it faults again.
    Retry,
}

impl Residency {
    /// A limit (or none: write-back alone) over `[start, start + len)` of `region` (private
    /// anonymous memory: dropping its pages frees them), whose faults map at most `window` pages
    /// each; `write_back`: the file written pages go
    /// back to, with a copy of the userfaultfd's fd. `counters` are the userfaultfd's.
    pub fn new(
        region: &Arc<Region>,
        start: usize,
        len: usize,
        limit: Option<Limit>,
        window: usize,
        write_back: Option<(Box<dyn WriteTarget>, OwnedFd)>,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        const OP: &str = "maxResident";
        // Dropped pages: MADV_DONTNEED of private anonymous memory; a hole punched (MADV_REMOVE)
        // in the file of shared shmem or hugetlbfs memory. A private mapping of a file would drop
        // only its own copies and read the file's pages again, not the source's.
        let droppable = match region.kind() {
            MemoryKind::Anonymous => region.is_private(),
            MemoryKind::Shmem | MemoryKind::Hugetlb => !region.is_private(),
            MemoryKind::Remote => false,
        };
        if !droppable {
            let private = if region.is_private() { "private " } else { "" };
            return Err(Error::unsupported(
                OP,
                format!(
                    "a residency limit or write-back needs private anonymous memory, or shared shmem or hugetlb \
                     memory, not {private}{} memory: register a region made by Region.anonymous, or by \
                     Region.shmem or Region.hugetlb without private",
                    region.kind().name()
                ),
            ));
        }
        let page = region.page_size();
        let (high, low, cap) = match limit {
            Some(limit) => {
                let high = ((limit.bytes as f64 * limit.high) as usize / page).max(1);
                let low = ((limit.bytes as f64 * limit.low) as usize / page).min(high.saturating_sub(1));
                (high, low, (limit.bytes / page).max(high))
            }
            None => (usize::MAX, usize::MAX, usize::MAX),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(Ledger {
                pages: vec![Page::Absent; len / page],
                probation: VecDeque::new(),
                hot: VecDeque::new(),
                resident: 0,
                leaving: 0,
                writing_back: 0,
                queued: false,
                stopped: false,
                failed: None,
                failure_said: false,
            }),
            changed: Condvar::new(),
            counters,
            region: region.clone(),
            start,
            high,
            low,
            cap,
            window: window.max(1),
            write_back: write_back.map(|(file, uffd)| WriteBack { file, uffd }),
            speaker: OnceLock::new(),
        });
        if limit.is_some() {
            evictor().map_err(|e| {
                let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
                Error::sys(OP, errno, "the evictor thread")
            })?;
        }
        Ok(Residency { shared })
    }

    /// Who is told when a write-back of the evictor's fails (`flush` returns its own failures).
    pub fn tell(&self, speaker: Box<dyn Fn(Error) + Send + Sync>) {
        let _ = self.shared.speaker.set(speaker);
    }

    /// `[offset, offset + len)` (region offsets) was just mapped, write-protected.
    pub fn mapped(&self, offset: usize, len: usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let (first, last) = shared.pages_of(offset, len);
        for index in first..last.min(state.pages.len()) {
            match state.pages[index] {
                Page::Absent => state.probation.push_back(index),
                Page::Evicted => {
                    bump(&shared.counters.refaults);
                    state.hot.push_back(index);
                }
                _ => continue,
            }
            state.pages[index] = Page::Clean;
            state.resident += 1;
            bump(&shared.counters.resident_pages);
        }
        let (resident, staying) = (state.resident, state.resident - state.leaving);
        drop(state);
        if resident > shared.cap {
            // Past the limit itself (the evictor did not get a CPU in time): the fault path drops
            // pages before it maps more, and waits for those another pass is dropping, so the
            // limit holds under any load.
            bump(&shared.counters.eviction_stalls);
            shared.evict();
            let mut state = shared.lock();
            while state.resident > shared.cap && state.leaving > 0 && !state.stopped {
                state = shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        } else if staying > shared.high {
            shared.ask_eviction();
        }
    }

    /// A write faulted on the page at `offset`, mapped protected (and `len` bytes from it were
    /// mapped with it by the same fault): the pages from the first on that are mapped, and not
    /// being written back or dropped, are marked written and `unprotect`ed (region offset, bytes).
    /// Both under the lock, so that no write-back takes a page between its mark and its
    /// protection lifted (its bytes taken, then a write let in, then the page dropped).
    pub fn written(
        &self,
        offset: usize,
        len: usize,
        unprotect: impl FnOnce(usize, usize) -> Result<()>,
    ) -> Result<Written> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let (first, last) = shared.pages_of(offset, len);
        let last = last.min(state.pages.len());
        let mut end = first;
        while end < last && matches!(state.pages[end], Page::Clean | Page::Written) {
            end += 1;
        }
        if end == first {
            return Ok(Written::Retry);
        }
        // Counted before the protection is lifted: the writer, let in, may read the counters at once.
        let marked: Vec<usize> = (first..end).filter(|&index| state.pages[index] == Page::Clean).collect();
        for &index in &marked {
            state.pages[index] = Page::Written;
        }
        shared.counters.dirty_pages.fetch_add(marked.len() as u64, Ordering::Relaxed);
        let page = shared.region.page_size();
        if let Err(error) = unprotect(shared.start + first * page, (end - first) * page) {
            for &index in &marked {
                state.pages[index] = Page::Clean;
            }
            shared.counters.dirty_pages.fetch_sub(marked.len() as u64, Ordering::Relaxed);
            return Err(error);
        }
        Ok(Written::Unprotect)
    }

    /// Writes every page written so far back to the file (and, with `sync`, to the disk), and
    /// waits for the write-backs the evictor has under way. The first failure since the last
    /// flush is returned (its pages stay written, and are tried again by the next flush).
    pub fn flush(&self, sync: bool) -> Result<()> {
        let shared = &self.shared;
        let Some(write_back) = &shared.write_back else { return Ok(()) };
        let mut state = shared.lock();
        let written: Vec<usize> = (0..state.pages.len()).filter(|&i| state.pages[i] == Page::Written).collect();
        for &index in &written {
            state.pages[index] = Page::WritingBack;
        }
        state.writing_back += written.len();
        drop(state);
        let failed = shared.write_back(&written, false);
        let mut state = shared.lock();
        while state.writing_back > 0 {
            state = shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        let first = state.failed.take();
        drop(state);
        if let Some(error) = failed.or(first) {
            return Err(error);
        }
        if sync {
            write_back.file.sync()?;
        }
        Ok(())
    }
}

impl Drop for Residency {
    fn drop(&mut self) {
        let shared = &self.shared;
        // The range goes (unregistered, or its userfaultfd closed): what was written goes back.
        if let Err(error) = self.flush(false) {
            eprintln!("userfaultfd: written pages could not be written back as their range went: {error}");
        }
        let mut state = shared.lock();
        state.stopped = true;
        let resident = state.resident as u64;
        let written = state.pages.iter().filter(|p| **p == Page::Written).count() as u64;
        state.resident = 0;
        shared.counters.resident_pages.fetch_sub(resident, Ordering::Relaxed);
        shared.counters.dirty_pages.fetch_sub(written, Ordering::Relaxed);
        shared.changed.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page indexes `[first, last)` of the range that `[offset, offset + len)` covers.
    fn pages_of(&self, offset: usize, len: usize) -> (usize, usize) {
        let page = self.region.page_size();
        let first = offset.saturating_sub(self.start) / page;
        let last = (offset + len).saturating_sub(self.start).div_ceil(page);
        (first, last)
    }

    /// Puts this range in the evictor's queue, unless it is there.
    fn ask_eviction(self: &Arc<Self>) {
        let mut state = self.lock();
        if state.queued || state.stopped {
            return;
        }
        state.queued = true;
        drop(state);
        if let Ok(evictor) = evictor() {
            evictor.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(Arc::downgrade(self));
            evictor.ready.notify_one();
        }
    }

    /// One pass of the evictor over this range: if more than `high` pages are mapped, drops the
    /// oldest down to `low`, in one batch of ranges; written ones are written back first, or, with
    /// nowhere to write them, kept. A page is marked under the lock before it is written back or
    /// dropped outside it: a write to it meanwhile finds it protected and faults again until it is
    /// done.
    fn evict(self: &Arc<Self>) {
        let mut state = self.lock();
        state.queued = false;
        if state.stopped || state.resident - state.leaving <= self.high || self.region.is_closed() {
            return;
        }
        let (mut clean, mut written) = (Vec::new(), Vec::new());
        let (mut kept_probation, mut kept_hot) = (Vec::new(), Vec::new());
        // The newest window of each queue is never taken: a page just mapped for a thread that has
        // not touched it yet, dropped at once, would fault again for good while written pages
        // fill the limit.
        let mut eligible_probation = state.probation.len().saturating_sub(self.window);
        let mut eligible_hot = state.hot.len().saturating_sub(self.window);
        while state.resident - state.leaving - clean.len() - written.len() > self.low
            && eligible_probation + eligible_hot > 0
        {
            let from_probation = eligible_probation > 0;
            let next = if from_probation {
                eligible_probation -= 1;
                state.probation.pop_front()
            } else {
                eligible_hot -= 1;
                state.hot.pop_front()
            };
            let Some(index) = next else { continue };
            match state.pages[index] {
                Page::Clean => {
                    state.pages[index] = Page::Evicted;
                    clean.push(index);
                }
                Page::Written if self.write_back.is_some() => {
                    state.pages[index] = Page::WritingBack;
                    written.push(index);
                }
                // Written with nowhere to go: kept, and listed again for a later pass.
                Page::Written if from_probation => kept_probation.push(index),
                Page::Written => kept_hot.push(index),
                _ => {} // dropped or being written back since it was listed
            }
        }
        state.probation.extend(kept_probation);
        state.hot.extend(kept_hot);
        state.leaving += clean.len() + written.len();
        state.writing_back += written.len();
        drop(state);
        if let Some(error) = self.write_back(&written, true) {
            let mut state = self.lock();
            state.failed.get_or_insert(error.clone());
            // Said once until a write-back succeeds again: every pass retries the pages that failed.
            let first = !std::mem::replace(&mut state.failure_said, true);
            drop(state);
            if let (true, Some(speaker)) = (first, self.speaker.get()) {
                speaker(error);
            }
        }
        self.drop_pages(&mut clean);
        // Every page left may be written and kept: then the next mapping asks again.
    }

    /// Writes the pages `indexes` (marked being written back) back to the file: each is protected
    /// again first, then its bytes written; then it is clean (still protected), or, if `evict`,
    /// dropped. A page whose write-back fails is written again (its protection lifted) and kept.
    /// Returns the first failure.
    fn write_back(&self, indexes: &[usize], evict: bool) -> Option<Error> {
        let write_back = self.write_back.as_ref()?;
        if indexes.is_empty() {
            return None;
        }
        let page = self.region.page_size();
        let uffd = write_back.uffd.as_raw_fd();
        // SAFETY: a userfaultfd this residency holds a copy of; the Uffd only borrows it here and
        // is forgotten below, never closing it.
        let borrowed = std::mem::ManuallyDrop::new(unsafe { <Uffd as std::os::fd::FromRawFd>::from_raw_fd(uffd) });
        let mut failed = None;
        let (mut done, mut back) = (Vec::new(), Vec::new());
        let mut sorted = indexes.to_vec();
        sorted.sort_unstable();
        // A run of adjacent pages is protected in one ioctl and written in one pwrite.
        for run in runs(&sorted) {
            let offset = self.start + run[0] * page;
            let (at, len) = (self.region.address() + offset, run.len() * page);
            let protected = ioctl::write_protect(&borrowed, at, len, true, false);
            // SAFETY: the pages lie in the region's live mapping (the region is held), and are
            // present and protected: nothing writes them while their bytes are read.
            let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, len) };
            match protected.and_then(|()| write_back.file.write(offset, bytes)) {
                Ok(()) => done.extend_from_slice(run),
                Err(error) => {
                    failed.get_or_insert(error);
                    let _ = ioctl::write_protect(&borrowed, at, len, false, true);
                    back.extend_from_slice(run);
                }
            }
        }
        let mut state = self.lock();
        if !done.is_empty() {
            state.failure_said = false;
        }
        for &index in &done {
            // A page flushed keeps its place in its queue; one evicted left it.
            state.pages[index] = if evict { Page::Evicted } else { Page::Clean };
        }
        for &index in &back {
            state.pages[index] = Page::Written;
            // Taken off its queue to be evicted: listed again, and staying (one flushed never left).
            if evict {
                state.probation.push_back(index);
                state.leaving -= 1;
            }
        }
        let (written_back, pages) = (done.len() as u64, indexes.len() as u64);
        self.counters.dirty_pages.fetch_sub(written_back, Ordering::Relaxed);
        self.counters.write_backs.fetch_add(written_back, Ordering::Relaxed);
        self.counters.write_back_errors.fetch_add(back.len() as u64, Ordering::Relaxed);
        state.writing_back -= pages as usize;
        drop(state);
        if evict {
            let mut dropped = done;
            self.drop_pages(&mut dropped);
        }
        // Writers of these pages wait in a fault that retries: wake them to find the page done.
        for run in runs(&sorted) {
            let _ = ioctl::wake(&borrowed, self.region.address() + self.start + run[0] * page, run.len() * page);
        }
        self.changed.notify_all();
        failed
    }

    /// Drops the pages `victims` (indexes), a range of adjacent ones at a time.
    fn drop_pages(&self, victims: &mut [usize]) {
        if victims.is_empty() {
            return;
        }
        victims.sort_unstable();
        let page = self.region.page_size();
        for run in runs(victims) {
            // The region's mapping lives as long as this residency holds the region, so the range
            // is its own; dropping pages never unmaps them.
            let _ = self.region.discard(self.start + run[0] * page, run.len() * page);
        }
        let count = victims.len() as u64;
        let mut state = self.lock();
        state.resident -= victims.len();
        state.leaving -= victims.len();
        drop(state);
        // A fault past the cap may wait for these pages to go.
        self.changed.notify_all();
        self.counters.resident_pages.fetch_sub(count, Ordering::Relaxed);
        self.counters.evictions.fetch_add(count, Ordering::Relaxed);
        bump(&self.counters.eviction_batches);
    }
}

/// The evictor thread of the process, which every range with a limit asks for a pass.
struct Evictor {
    queue: Mutex<VecDeque<Weak<Shared>>>,
    ready: Condvar,
}

/// The evictor, started on first use: one thread for any number of ranges (thousands of
/// registrations with limits are thousands of ranges, not of threads).
fn evictor() -> std::io::Result<&'static Evictor> {
    static EVICTOR: OnceLock<Evictor> = OnceLock::new();
    static STARTED: Mutex<bool> = Mutex::new(false);
    let evictor = EVICTOR.get_or_init(|| Evictor { queue: Mutex::new(VecDeque::new()), ready: Condvar::new() });
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if !*started {
        std::thread::Builder::new().name("uffd-evictor".into()).spawn(move || loop {
            let next = {
                let mut queue = evictor.queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    match queue.pop_front() {
                        Some(next) => break next,
                        None => queue = evictor.ready.wait(queue).unwrap_or_else(|p| p.into_inner()),
                    }
                }
            };
            if let Some(range) = next.upgrade() {
                range.evict();
            }
        })?;
        *started = true;
    }
    Ok(evictor)
}

/// The runs of adjacent indexes in `sorted` (ascending).
fn runs(sorted: &[usize]) -> impl Iterator<Item = &[usize]> {
    sorted.chunk_by(|a, b| b == &(a + 1))
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
