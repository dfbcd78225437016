//! Non-cooperative events (REMOVE, UNMAP, REMAP, FORK): what they do to the registrations, how
//! they reach the handler, and the epoch that parked resolves wait on. While an event is unread
//! the kernel refuses every resolving ioctl with EAGAIN; the loop reads events in the same drain as
//! faults, and handles them before the faults of that batch.

use crate::fault::{Dispatch, Fault};
use crate::region::Region;
use crate::userfaultfd::Userfaultfd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A non-cooperative event, as the handler receives it.
pub enum UffdEvent {
    /// `madvise(MADV_DONTNEED/MADV_REMOVE)`: the pages are gone; later touches are missing faults again.
    Remove { region: Option<Arc<Region>>, start: usize, end: usize },
    /// `munmap` (or a mapping replaced): the range is no longer registered.
    Unmap { region: Option<Arc<Region>>, start: usize, end: usize },
    /// `mremap`: the range moved, and stays registered at its new place: `moved` is a remote
    /// region there whose faults reach the handler (offset 0 is the old range's `from`).
    Remap { region: Option<Arc<Region>>, from: usize, to: usize, len: usize, moved: Option<Arc<Region>> },
    /// `fork`: the child has a userfaultfd of its own over the same ranges (remote regions at the
    /// parent's addresses), or `None` if adopting it failed (its fd is closed: the child's faults
    /// there are then the kernel's own).
    Fork { child: Option<(Arc<Userfaultfd>, Vec<Arc<Region>>)> },
}

/// Counts batches of events read, so that a parked resolve knows when to try again.
#[derive(Default)]
pub struct EventEpoch {
    seen: Mutex<u64>,
    changed: Condvar,
    /// The kernel id of the thread that reads the fd (0: none yet).
    loop_thread: AtomicI32,
}

impl EventEpoch {
    pub fn clear_loop_thread(&self) {
        self.loop_thread.store(0, Ordering::Release);
    }

    pub fn mark_loop_thread(&self) {
        self.loop_thread.store(crate::userfaultfd::current_thread_id(), Ordering::Release);
    }
}

impl Userfaultfd {
    pub(crate) fn events_seen(&self) -> u64 {
        *self.epoch.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the loop has read more events than `seen`, or `slice` has passed.
    pub(crate) fn wait_for_events(&self, seen: u64, slice: Duration) {
        let guard = self.epoch.seen.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self.epoch.changed.wait_timeout_while(guard, slice, |now| *now == seen);
    }

    /// Called by the loop after a drain that read events: parked resolves may go again.
    pub(crate) fn events_read(&self) {
        *self.epoch.seen.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.epoch.changed.notify_all();
    }

    pub(crate) fn on_loop_thread(&self) -> bool {
        self.epoch.loop_thread.load(Ordering::Acquire) == crate::userfaultfd::current_thread_id()
    }

    /// Applies an event to the registrations and queues it for the handler.
    pub(crate) fn take_event(&self, mut event: UffdEvent, batch: &mut Vec<Dispatch>) {
        crate::stats::bump(&self.counters.events);
        match &mut event {
            UffdEvent::Unmap { start, end, .. } => self.forget_range(*start, *end),
            UffdEvent::Remap { region, from, to, len, moved } => {
                self.forget_range(*from, *from + *len);
                *moved = region.as_ref().and_then(|old| self.follow_remap(old, *to, *len));
            }
            UffdEvent::Remove { start, end, .. } => self.note_removed(*start, *end),
            UffdEvent::Fork { .. } => {}
        }
        batch.push(Dispatch::Event(event));
    }

    /// The kernel keeps a moved range registered with this fd: register a remote region there, so
    /// that its faults reach the handler instead of being taken for faults in no region.
    fn follow_remap(&self, old: &Region, to: usize, len: usize) -> Option<Arc<Region>> {
        match Region::remote(to, len, old.page_size()) {
            Ok(moved) => {
                self.track_registration(moved.clone());
                Some(moved)
            }
            Err(err) => {
                eprintln!("userfaultfd: the range moved to {to:#x} cannot be followed: {err}");
                None
            }
        }
    }

    /// Drops registrations and faults in flight in `[start, end)`: the memory is no longer there.
    fn forget_range(&self, start: usize, end: usize) {
        self.carve_registrations(start, end);
        self.forget_faults(|fault: &Fault| {
            let at = fault.region.address() + fault.offset;
            (start..end).contains(&at)
        });
    }
}

impl Userfaultfd {
    /// Adopts the userfaultfd the kernel made for a forked child: same features, fallback and
    /// timeout, and the parent's registered ranges as remote regions (the child's memory has the
    /// parent's addresses).
    pub(crate) fn adopt_child(
        &self,
        fd: std::os::fd::OwnedFd,
    ) -> crate::error::Result<(Arc<Userfaultfd>, Vec<Arc<Region>>)> {
        let ranges = self.registered_ranges();
        let features =
            crate::uapi::names_of(self.features(), crate::uapi::FEATURES).iter().map(|s| s.to_string()).collect();
        let options = self.options_for_child(features);
        Userfaultfd::adopt(fd, &ranges, &options, None)
    }
}

/// What the loop thread could not resolve because an event was unread; it retries after the drain.
pub enum Retry {
    /// A fault handed over whose fallback resolution got EAGAIN.
    Fallback(Fault),
    /// A fault message a native source could not resolve yet: taken again from the top.
    Message { address: usize, kind: crate::fault::FaultKind, write: bool, thread_id: i32 },
}

#[derive(Default)]
pub struct Deferred(pub Mutex<Vec<Retry>>);
