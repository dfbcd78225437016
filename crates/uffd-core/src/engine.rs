//! The parts of one userfaultfd, each owning its state: the resolver (fd, registrations,
//! counters, event epoch), the faults in flight, the handlers, and what its readers share
//! (`reading.rs`). What crosses parts (settling a fault, handing a batch over, removing a handler)
//! is here; reading is `readers/`'s; the public API is the façade's (`userfaultfd.rs`).

use crate::error::Result;
use crate::fallback::{abandon, abandoned_notice, fall_back, handler_gone_notice, Fell};
use crate::fault::{Child, Dispatch, Fault, FaultKind, Notice, NoticeKind, UffdEvent};
use crate::fault_table::{FaultTable, InFlight};
use crate::fd::{Fd, Negotiated};
use crate::handlers::{Faults, Handlers};
use crate::options::Options;
use crate::reading::Reading;
use crate::region::{Region, RemoteRange};
use crate::registrations::Registration;
use crate::resolve::{Park, Resolver};
use crate::source::Served;
use crate::stats::Counters;
use crate::sys::{ioctl, uapi};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use std::time::Instant;

/// Adopts the userfaultfd of a forked child (the façade's `adopt`, given to the engine so that
/// readers need not know the façade).
pub type AdoptChild = fn(OwnedFd, &[RemoteRange], &Options) -> Result<Child>;

pub struct Engine {
    id: u64,
    resolver: Resolver,
    table: Mutex<FaultTable>,
    next_fault_id: AtomicU64,
    handlers: Handlers,
    reading: Reading,
    options: Options,
    /// Set first by `close()`, which may let the readers read on for a moment (see
    /// `settle_pending_forks`) before the fd counts as closed.
    closing: AtomicBool,
    adopt_child: AdoptChild,
    /// Itself, for work that outlives a call (an object source's request).
    this: Weak<Engine>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        resolver: Resolver,
        options: Options,
        peer: Option<OwnedFd>,
        adopt_child: AdoptChild,
    ) -> Result<Arc<Engine>> {
        let reading = Reading::new(peer)?;
        Ok(Arc::new_cyclic(|this| Engine {
            id,
            resolver,
            table: Mutex::new(FaultTable::default()),
            next_fault_id: AtomicU64::new(1),
            handlers: Handlers::default(),
            reading,
            options,
            closing: AtomicBool::new(false),
            adopt_child,
            this: this.clone(),
        }))
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The resolver, for the parts that resolve pages (`native`, `prefetch`, `dirty`).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub fn fd(&self) -> &Fd {
        &self.resolver.fd
    }

    pub fn features(&self) -> u64 {
        self.resolver.fd.features()
    }

    pub fn negotiated(&self) -> &Negotiated {
        &self.resolver.fd.negotiated
    }

    pub fn counters(&self) -> &Counters {
        &self.resolver.counters
    }

    /// The registration covering `address`.
    pub fn registration_at(&self, address: usize) -> Option<Registration<Served>> {
        self.resolver.registration_at(address)
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// Itself, for work that outlives a call (an object source's request); `None` once dropped.
    pub fn this(&self) -> Option<Arc<Engine>> {
        self.this.upgrade()
    }

    /// Adopts the userfaultfd of a forked child (see `AdoptChild`).
    pub fn adopt_child(&self, fd: OwnedFd, ranges: &[RemoteRange], options: &Options) -> Result<Child> {
        (self.adopt_child)(fd, ranges, options)
    }

    /// Applies an event read from the fd to the registrations and the faults in flight.
    pub fn apply_event(&self, event: &mut UffdEvent) {
        crate::events::apply(&self.resolver, &self.table, event);
    }

    pub fn is_closed(&self) -> bool {
        self.resolver.fd.is_closed()
    }

    /// What the readers share (`reading.rs`).
    pub fn reading(&self) -> &Reading {
        &self.reading
    }

    /// Hands reading back to the loop threads (a no-op unless `generation` reads).
    pub fn stop_pulling(&self, generation: u64) {
        self.reading.stop_pulling(generation)
    }

    /// Whether `thread_id` runs a handler that reads the fd itself.
    pub fn is_puller_thread(&self, thread_id: i32) -> bool {
        self.reading.is_puller_thread(thread_id)
    }

    /// Items a puller took but could not hold this time: its next pull returns them first.
    pub fn defer_to_next_pull(&self, items: Vec<Dispatch>) {
        self.reading.defer(items)
    }

    /// Stops every reader, closes the fd (the kernel wakes every waiting thread and drops every
    /// registration) and forgets all faults. Idempotent; callable from a reader thread.
    pub fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.settle_pending_forks();
        self.resolver.fd.mark_closed();
        self.reading.stop();
        self.resolver.fd.release();
        self.resolver.registrations_mut().clear();
        self.table().clear();
        self.handlers.close();
    }

    /// With EVENT_FORK, a fork of this process sleeps until its event is read, holding glibc's
    /// malloc locks: if the readers stopped reading then, both would wait forever. So before they
    /// stop, every range is unregistered (no fork can start an event for this fd after that) and
    /// they read on until the kernel has no event in progress (`mmap_changing`), or 2 s pass.
    fn settle_pending_forks(&self) {
        if self.resolver.fd.features() & uapi::FEATURE_EVENT_FORK == 0 || self.reading.on_reader_thread() {
            return;
        }
        let fd = &self.resolver.fd;
        let ranges = self.resolver.registrations().ranges();
        for (start, end, _) in ranges {
            let _ = fd.with_fd("UFFDIO_UNREGISTER", |uffd| ioctl::unregister(uffd, start, end - start));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && fd.with_fd("UFFDIO_ZEROPAGE", ioctl::event_in_progress).unwrap_or(false) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn table(&self) -> MutexGuard<'_, FaultTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn faults(&self) -> Faults<'_> {
        Faults { table: &self.table, resolver: &self.resolver, fallback: self.options.fallback }
    }

    /// A fault at `offset` of a region, with a fresh id.
    pub fn new_fault(
        &self,
        region: Arc<Region>,
        offset: usize,
        address: usize,
        kind: FaultKind,
        write: bool,
        thread_id: i32,
    ) -> Fault {
        let id = self.next_fault_id.fetch_add(1, Ordering::Relaxed);
        Fault { id, region, offset, address, kind, write, thread_id: thread_id as u32 }
    }

    /// When a fault admitted now must be resolved by.
    pub fn deadline(&self) -> Option<Instant> {
        self.options.timeout.map(|t| Instant::now() + t)
    }

    /// The fault `id`, while it waits for its resolution.
    pub fn in_flight(&self, id: u64) -> Option<Fault> {
        self.table().get(id).map(|entry| entry.fault.clone())
    }

    /// Marks a resolved fault: woken ones leave the table; DONTWAKE ones wait for their wake.
    pub fn settle(&self, id: u64, woken: bool) {
        let duplicated = self.table().settle(id, woken);
        if let Some(entry) = duplicated {
            // A second thread may have queued behind the first one's message: wake it too.
            self.resolver.wake_page(&entry.fault.region, entry.fault.offset);
        }
    }

    /// Drops faults in flight that no longer need an answer (their range was woken or released).
    pub fn forget_faults(&self, which: impl Fn(&Fault) -> bool) {
        let duplicated = self.table().forget(which);
        for entry in duplicated {
            self.resolver.wake_page(&entry.fault.region, entry.fault.offset);
        }
    }

    /// Hands a batch to the handler (see `Handlers::hand_over`); a handler found gone is removed.
    pub fn hand_over(&self, batch: Vec<Dispatch>) {
        if let Some(gone) = self.handlers.hand_over(&self.faults(), batch) {
            self.remove_handler(gone);
        }
    }

    /// Hands one notice over, as any batch (it may go to the owner, see `handlers::is_owners`).
    pub fn say(&self, notice: Notice) {
        self.hand_over(vec![Dispatch::Notice(notice)]);
    }

    /// Removes handler `generation` if it is still the current one. Faults it was handed and did
    /// not finish are resolved by the fallback, with a notice each.
    pub fn remove_handler(&self, generation: u64) {
        self.reading.stop_pulling(generation);
        self.handlers.remove(generation);
        let orphans = self.table().take_where(|e| e.delivered_to == Some(generation));
        if orphans.is_empty() {
            return;
        }
        // Said before the fallback wakes their threads: when one runs again (and, say, closes at
        // once), the word is there already.
        self.hand_over(orphans.iter().map(|entry| Dispatch::Notice(abandoned_notice(entry))).collect());
        let failed: Vec<Dispatch> = orphans
            .into_iter()
            .map(|entry| self.abandon(entry, Park::UntilRead, handler_gone_notice).0)
            .filter(|notice| notice.kind == NoticeKind::FallbackFailed)
            .map(Dispatch::Notice)
            .collect();
        if !failed.is_empty() {
            self.hand_over(failed);
        }
    }

    /// Drops the registrations of a closing region; the kernel wakes their waiters.
    pub fn release_region(&self, region: &Arc<Region>) {
        let resolver = &self.resolver;
        let mut registrations = resolver.registrations_mut();
        for (start, end) in registrations.remove_region(region) {
            let _ = resolver.fd.with_fd("UFFDIO_UNREGISTER", |uffd| ioctl::unregister(uffd, start, end - start));
        }
        drop(registrations);
        self.forget_faults(|fault| Arc::ptr_eq(&fault.region, region));
    }

    /// Settles a fault its handler can no longer answer, by this fd's fallback policy: woken if it
    /// sleeps after DONTWAKE, else the fallback (see `fallback::abandon` for the notice and the
    /// fault returned when the kernel refused).
    pub fn abandon(
        &self,
        entry: InFlight,
        park: Park<'_>,
        say: impl FnOnce(&Fault) -> Notice,
    ) -> (Notice, Option<Fault>) {
        abandon(&self.resolver, self.options.fallback, entry, park, say)
    }

    /// Resolves a fault by this fd's fallback policy (see `fallback::fall_back` for `park`).
    pub fn fall_back(&self, fault: &Fault, park: Park<'_>) -> Fell {
        fall_back(&self.resolver, self.options.fallback, fault, park)
    }
}
