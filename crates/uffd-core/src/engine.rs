//! The parts of one userfaultfd, each owning its state: the resolver (fd, registrations,
//! counters, event epoch), the faults in flight, the handlers, and what its readers share
//! (`reading.rs`). What crosses parts (settling a fault, handing a batch over, removing a handler)
//! is here; reading is `readers/`'s; the public API is the façade's (`userfaultfd.rs`).

use crate::error::{Error, Result};
use crate::fallback::{abandon, abandoned_notice, fall_back, handler_gone_notice, Fell};
use crate::fault::{Child, Dispatch, Fault, FaultKind, FaultSink, Notice, NoticeKind, UffdEvent};
use crate::fault_table::{FaultTable, InFlight, Stage};
use crate::fd::{Fd, Negotiated};
use crate::handlers::{Faults, Handlers, Installed};
use crate::options::{Fallback, Options};
use crate::reading::Reading;
use crate::region::{Region, RemoteRange};
use crate::registrations::Registration;
use crate::resolve::{Park, Resolver};
use crate::source::Served;
use crate::stats::{bump, Counters, LatencyReport, Snapshot};
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
    /// `settle_forks_in_progress`) before the fd counts as closed.
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

    /// Counts the time a fault waited, from its message to its thread running again.
    pub fn record_latency(&self, waited: Duration) {
        self.resolver.counters.latency.record(waited)
    }

    /// When the first fault came, and native sources' fault latency.
    pub fn latency_report(&self) -> LatencyReport {
        self.resolver.counters.latency.report()
    }

    /// The counters now, with the faults in flight and those waiting for a handler.
    pub fn snapshot(&self) -> Snapshot {
        let queued = self.handlers.queued_faults() as u64;
        let in_flight = self.table().len() as u64;
        self.resolver.counters.snapshot(in_flight, queued)
    }

    /// Parked resolves learn that events were read (the kernel lets them go once they are).
    pub fn note_events_read(&self) {
        self.resolver.epoch.advance();
    }

    /// The registration covering `address`.
    pub fn registration_at(&self, address: usize) -> Option<Registration<Served>> {
        self.resolver.registration_at(address)
    }

    /// How many loop threads read the fd (without EVENT_FORK, which has one).
    pub fn reader_count(&self) -> usize {
        self.options.readers()
    }

    /// How long a fault may wait for its resolution before the fallback resolves it.
    pub fn timeout(&self) -> Option<Duration> {
        self.options.timeout
    }

    /// How long a reader spins before it sleeps in epoll.
    pub fn spin(&self) -> Duration {
        self.options.spin
    }

    pub fn fallback_policy(&self) -> Fallback {
        self.options.fallback
    }

    /// Itself, for work that outlives a call (an object source's request); `None` once dropped.
    pub fn this(&self) -> Option<Arc<Engine>> {
        self.this.upgrade()
    }

    /// Adopts the userfaultfd of a forked child (see `AdoptChild`): its ranges are this one's, its
    /// options this one's with the features as negotiated here.
    pub fn adopt_child(&self, fd: OwnedFd) -> Result<Child> {
        let ranges: Vec<RemoteRange> = (self.resolver.registrations().ranges().into_iter())
            .map(|(start, end, page_size)| RemoteRange { address: start, length: end - start, page_size })
            .collect();
        let features = uapi::names_of(self.features(), uapi::FEATURES).iter().map(|s| s.to_string()).collect();
        let options = Options { features, user_mode_only: None, ..self.options.clone() };
        (self.adopt_child)(fd, &ranges, &options)
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
        self.settle_forks_in_progress();
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
    fn settle_forks_in_progress(&self) {
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

    fn table(&self) -> MutexGuard<'_, FaultTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self) -> Faults<'_> {
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
    fn deadline(&self) -> Option<Instant> {
        self.options.timeout.map(|t| Instant::now() + t)
    }

    /// Admits `fault` to the faults in flight, until its deadline, unless one is in flight at its
    /// page already: this message is then a duplicate (counted, woken with the first), and false.
    pub fn admit(&self, fault: &Fault) -> bool {
        let page = fault.region.address() + fault.offset;
        let mut table = self.table();
        if table.mark_duplicate(page) {
            bump(&self.resolver.counters.duplicates);
            return false;
        }
        table.insert(fault.clone(), page, self.deadline());
        true
    }

    /// Notes a message for `page` that is not admitted (a self-fault) as a duplicate of the fault
    /// in flight there, if there is one.
    pub fn note_duplicate(&self, page: usize) {
        if self.table().mark_duplicate(page) {
            bump(&self.resolver.counters.duplicates);
        }
    }

    /// Puts back a fault taken out of the faults in flight, with a new deadline.
    pub fn readmit(&self, fault: &Fault) {
        self.table().insert(fault.clone(), fault.region.address() + fault.offset, self.deadline());
    }

    /// The fault `id`, while it waits for its resolution.
    pub fn in_flight(&self, id: u64) -> Option<Fault> {
        self.table().get(id).map(|entry| entry.fault.clone())
    }

    /// Whether fault `id` still waits for its resolution (or, after DONTWAKE, for its wake).
    pub fn is_in_flight(&self, id: u64) -> bool {
        self.table().contains(id)
    }

    /// Takes fault `id` out of the faults in flight.
    pub fn take_fault(&self, id: u64) -> Option<InFlight> {
        self.table().take(id)
    }

    /// Takes fault `id` out if nobody has resolved it yet; else says where it stands: asleep after
    /// DONTWAKE (left in flight), or gone (`None`).
    pub fn take_unresolved(&self, id: u64) -> std::result::Result<InFlight, Option<Stage>> {
        let mut table = self.table();
        match table.get(id).map(|entry| entry.stage) {
            Some(Stage::Waiting) => Ok(table.take(id).expect("looked up above")),
            state => Err(state),
        }
    }

    /// Takes out every fault in flight that `which` picks.
    pub fn take_faults_where(&self, which: impl Fn(&InFlight) -> bool) -> Vec<InFlight> {
        self.table().take_where(which)
    }

    /// Takes out every fault past its deadline.
    pub fn take_expired(&self) -> Vec<InFlight> {
        self.table().take_expired(Instant::now())
    }

    /// The earliest deadline of a fault in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.table().next_deadline()
    }

    /// Records the faults of a batch as handed to handler `generation` (`None`: handed back).
    pub fn mark_delivered(&self, generation: Option<u64>, batch: &[Dispatch]) {
        self.faults().mark_delivered(generation, batch)
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

    /// Installs a handler on thread `thread_id`: it replaces the installed ones (their pullers stop),
    /// or, with `join`, serves beside them. What waited for a handler is handed to it now.
    /// Returns its generation (0: the fd is closed, and what waited was said to it).
    pub fn install_handler(&self, sink: Arc<dyn FaultSink>, thread_id: i32, join: bool) -> Result<u64> {
        match self.handlers.install(sink, thread_id, self.is_closed(), join) {
            Installed::Closed(true) => Ok(0),
            Installed::Closed(false) => Err(Error::Closed { op: "handle", what: "userfaultfd" }),
            Installed::Current { generation, replaced, queued } => {
                for previous in replaced {
                    // A handler that read the fd itself is replaced: the loop threads read again.
                    self.reading.stop_pulling(previous);
                }
                if !queued.is_empty() {
                    self.hand_over(queued);
                }
                Ok(generation)
            }
        }
    }

    /// Keeps only the handlers of `generations`: the others are replaced, their pullers stop.
    pub fn keep_handlers(&self, generations: &[u64]) {
        for replaced in self.handlers.keep_only(generations) {
            self.reading.stop_pulling(replaced);
        }
    }

    /// Stops handing faults to the handlers of `generations`, and their pullers; faults already
    /// handed stay theirs.
    pub fn retire_handlers(&self, generations: &[u64]) {
        for &generation in generations {
            self.handlers.remove(generation);
            self.reading.stop_pulling(generation);
        }
    }

    /// Whether a handler is installed (on any thread), or being started.
    pub fn has_handler(&self) -> bool {
        self.handlers.any()
    }

    /// Whether handler `generation` is installed.
    pub fn is_current_handler(&self, generation: u64) -> bool {
        self.handlers.is_current(generation)
    }

    /// Whether `thread_id` runs a handler (its fault is a self-fault).
    pub fn is_handler_thread(&self, thread_id: i32) -> bool {
        self.handlers.is_handler_thread(thread_id)
    }

    /// Makes `sink`, on thread `thread_id`, hear the notices no handler hears (see
    /// `Handlers::set_owner`).
    pub fn set_owner(&self, sink: Arc<dyn FaultSink>, thread_id: i32) {
        self.handlers.set_owner(sink, thread_id, &self.faults())
    }

    /// A handler is being started: until `unexpect_handler`, faults wait for it without a notice.
    pub fn expect_handler(&self) -> u64 {
        self.handlers.expect()
    }

    /// The handler of `token` came, or will not.
    pub fn unexpect_handler(&self, token: u64) {
        self.handlers.unexpect(token, &self.faults())
    }

    /// Faults waiting for a handler.
    #[cfg(test)]
    pub fn queued_faults(&self) -> usize {
        self.handlers.queued_faults()
    }

    /// Takes the items waiting for a handler that `which` picks.
    pub fn take_queued(&self, which: impl Fn(&Dispatch) -> bool) -> Vec<Dispatch> {
        self.handlers.take_queued(which)
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
