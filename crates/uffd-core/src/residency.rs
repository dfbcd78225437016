//! A residency limit on a range served from a native source: at most so many of its pages mapped
//! at once. Pages are noted as they are mapped (in that order); when more than the high water
//! mark are, an evictor thread of the range's own drops the oldest down to the low water mark,
//! in batches of ranges (`MADV_DONTNEED`), off the fault path. A dropped page faults again on its
//! next touch and is served from the source again, byte for byte.
//!
//! Pages are mapped write-protected: a page the program writes takes a write-protect fault first,
//! which pins it (it stays resident, never dropped: nothing written is lost) and lifts the
//! protection. The fault and the eviction take the same lock, so a page is either dropped before
//! its write (which then faults it in again and writes there) or pinned before it could be.

use crate::error::{Error, Result};
use crate::region::{MemoryKind, Region};
use crate::stats::Counters;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
#[derive(Clone, Copy, PartialEq, Eq)]
enum Page {
    Absent,
    /// Mapped, write-protected, in the eviction order.
    Clean,
    /// Written: mapped for good.
    Pinned,
    /// Dropped by the evictor; its next mapping is a re-fault.
    Evicted,
}

/// What the evictor and the fault path share, under one lock.
struct State {
    pages: Vec<Page>,
    /// Clean pages in the order they were mapped (stale entries are skipped).
    order: VecDeque<usize>,
    clean: usize,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    over: Condvar,
    counters: Arc<Counters>,
    region: Arc<Region>,
    /// Region offset of the range's first page.
    start: usize,
    high: usize,
    low: usize,
}

/// A range's residency limit, with its evictor thread (which ends when this drops).
pub struct Residency {
    shared: Arc<Shared>,
}

impl Residency {
    /// A limit over `[start, start + len)` of `region` (private anonymous memory: dropping its
    /// pages frees them). `counters` are the userfaultfd's, shared by its limits.
    pub fn new(region: &Arc<Region>, start: usize, len: usize, limit: Limit, counters: Arc<Counters>) -> Result<Self> {
        const OP: &str = "maxResident";
        if region.kind() != MemoryKind::Anonymous || !region.is_private() {
            return Err(Error::unsupported(
                OP,
                format!("a residency limit needs private anonymous memory, not {} memory (yet)", region.kind().name()),
            ));
        }
        let page = region.page_size();
        let pages = len / page;
        let high = ((limit.bytes as f64 * limit.high) as usize / page).max(1);
        let low = ((limit.bytes as f64 * limit.low) as usize / page).min(high.saturating_sub(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pages: vec![Page::Absent; pages],
                order: VecDeque::new(),
                clean: 0,
                stopped: false,
            }),
            over: Condvar::new(),
            counters,
            region: region.clone(),
            start,
            high,
            low,
        });
        let evictor = shared.clone();
        std::thread::Builder::new().name("uffd-evictor".into()).spawn(move || evictor.run()).map_err(|e| {
            Error::sys(OP, nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)), "the evictor thread")
        })?;
        Ok(Residency { shared })
    }

    /// `[offset, offset + len)` (region offsets) was just mapped, write-protected.
    pub fn mapped(&self, offset: usize, len: usize) {
        let shared = &self.shared;
        let mut state = shared.lock();
        let (first, last) = shared.pages_of(offset, len);
        for index in first..last {
            match state.pages[index] {
                Page::Clean | Page::Pinned => continue,
                Page::Evicted => bump(&shared.counters.refaults),
                Page::Absent => {}
            }
            state.pages[index] = Page::Clean;
            state.order.push_back(index);
            state.clean += 1;
            bump(&shared.counters.resident_pages);
        }
        if state.clean > shared.high {
            shared.over.notify_one();
        }
    }

    /// A write to the page at `offset` faulted: pinned if it is mapped (the caller then lifts the
    /// protection). False if it is not mapped (dropped meanwhile): the write faults it in again.
    pub fn pin(&self, offset: usize) -> bool {
        let shared = &self.shared;
        let mut state = shared.lock();
        let (index, _) = shared.pages_of(offset, 1);
        match state.pages.get(index) {
            Some(Page::Clean) => {
                state.pages[index] = Page::Pinned;
                state.clean -= 1;
                bump(&shared.counters.pinned_pages);
                true
            }
            Some(Page::Pinned) => true,
            _ => false,
        }
    }
}

impl Drop for Residency {
    fn drop(&mut self) {
        let shared = &self.shared;
        let mut state = shared.lock();
        state.stopped = true;
        let resident = state.pages.iter().filter(|p| matches!(p, Page::Clean | Page::Pinned)).count() as u64;
        let pinned = state.pages.iter().filter(|p| **p == Page::Pinned).count() as u64;
        shared.counters.resident_pages.fetch_sub(resident, Ordering::Relaxed);
        shared.counters.pinned_pages.fetch_sub(pinned, Ordering::Relaxed);
        shared.over.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page indexes `[first, last)` of the range that `[offset, offset + len)` covers.
    fn pages_of(&self, offset: usize, len: usize) -> (usize, usize) {
        let page = self.region.page_size();
        let first = offset.saturating_sub(self.start) / page;
        let last = (offset + len).saturating_sub(self.start).div_ceil(page);
        (first, last)
    }

    /// The evictor: waits until more than `high` clean pages are mapped, then drops the oldest
    /// down to `low`, in one batch of ranges. A page is marked dropped under the lock before it is
    /// dropped outside it: a write to it meanwhile finds it still protected and not to be pinned,
    /// and faults again until it is gone, then faults it in anew.
    fn run(&self) {
        let mut state = self.lock();
        loop {
            while !state.stopped && state.clean <= self.high {
                state = self.over.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            if state.stopped || self.region.is_closed() {
                return;
            }
            let mut victims = Vec::new();
            while state.clean > self.low {
                let Some(index) = state.order.pop_front() else { break };
                if state.pages[index] != Page::Clean {
                    continue; // pinned or dropped since it was listed
                }
                state.pages[index] = Page::Evicted;
                state.clean -= 1;
                victims.push(index);
            }
            drop(state);
            self.drop_pages(&mut victims);
            state = self.lock();
        }
    }

    /// Drops the pages `victims` (indexes), a range of adjacent ones at a time.
    fn drop_pages(&self, victims: &mut [usize]) {
        victims.sort_unstable();
        let page = self.region.page_size();
        let mut at = 0;
        while at < victims.len() {
            let mut end = at + 1;
            while end < victims.len() && victims[end] == victims[end - 1] + 1 {
                end += 1;
            }
            // The region's mapping lives as long as this evictor holds the region, so the range
            // is its own; dropping pages never unmaps them.
            let _ = self.region.discard(self.start + victims[at] * page, (end - at) * page);
            at = end;
        }
        let count = victims.len() as u64;
        self.counters.resident_pages.fetch_sub(count, Ordering::Relaxed);
        self.counters.evictions.fetch_add(count, Ordering::Relaxed);
        bump(&self.counters.eviction_batches);
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
