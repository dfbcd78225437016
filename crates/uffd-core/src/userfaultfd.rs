//! A userfaultfd: the public face of the engine. Opening or adopting one, registering ranges,
//! installing handlers, resolving faults; each call checks its arguments and delegates to the
//! part that owns the state (`engine.rs` lists them). A fault's path: `readers/turn.rs`.

use crate::dirty::{self, DirtyMethod};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fault::{Child, Dispatch, FaultSink, Notice, NoticeKind};
use crate::fd::{self, Fd, Negotiated};
use crate::prefetch::{self, Prefetch, PrefetchReport};
use crate::readers::{loop_thread, puller};
use crate::region::{Region, RemoteRange};
use crate::registrations::Registrations;
use crate::registry::Registry;
use crate::resolve::{Park, Protect, Resolver, Wake};
use crate::source::Served;
use crate::stats::Snapshot;
use crate::sys::uapi;
use crate::{adopt, answer};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Once};
use std::time::Duration;

pub use crate::answer::{Finish, Resolution};
pub use crate::fd::Probe;
pub use crate::options::{Fallback, Modes, Options};
pub use crate::readers::puller::Puller;

static UFFDS: Registry<Userfaultfd> = Registry::new();

pub struct Userfaultfd {
    engine: Arc<Engine>,
}

/// The current thread's kernel id, as `pagefault.feat.ptid` reports it.
pub fn current_thread_id() -> i32 {
    thread_local! {
        // Asked once per thread: it is on every resolve's path.
        static TID: i32 = nix::unistd::gettid().as_raw();
    }
    TID.with(|tid| *tid)
}

impl Userfaultfd {
    /// What the kernel offers, asked once per process on a throwaway fd.
    pub fn probe() -> Result<Probe> {
        fd::probe()
    }

    /// Opens a non-blocking userfaultfd, negotiates features and starts its readers.
    pub fn open(options: Options) -> Result<Arc<Userfaultfd>> {
        let required = fd::feature_bits("UFFDIO_API", &options.features)?;
        if options.fallback == Fallback::Sigbus && fd::probe()?.features & uapi::FEATURE_POISON == 0 {
            return Err(Error::unsupported("UFFDIO_API", "fallback 'sigbus' needs UFFDIO_POISON (Linux 6.6)"));
        }
        let (fd, negotiated) = fd::open(required, options.user_mode_only)?;
        Self::start(fd, negotiated, options, Vec::new(), None)
    }

    /// Serves a userfaultfd that another process created, negotiated and registered (received over
    /// a socket): `ranges` are the registered ranges of that process's memory, `features` what it
    /// negotiated, as far as it said. `peer`, if given, is watched: when it hangs up, the
    /// userfaultfd is closed. Returns the userfaultfd and a remote region per range.
    pub fn adopt(
        fd: OwnedFd,
        ranges: &[RemoteRange],
        options: &Options,
        peer: Option<OwnedFd>,
    ) -> Result<(Arc<Userfaultfd>, Vec<Arc<Region>>)> {
        let features = fd::feature_bits("adopt", &options.features)?;
        let regions = adopt::prepare(&fd, ranges)?;
        let negotiated = Negotiated { features, ioctls: 0, user_mode_only: false };
        let uffd = Self::start(fd, negotiated, options.clone(), regions.clone(), peer)?;
        Ok((uffd, regions))
    }

    /// The userfaultfd adopted for a forked child, and the child's regions.
    pub fn of_child(child: Child) -> Option<(Arc<Userfaultfd>, Vec<Arc<Region>>)> {
        child.uffd.downcast::<Userfaultfd>().ok().map(|uffd| (uffd, child.regions))
    }

    fn adopt_child(fd: OwnedFd, ranges: &[RemoteRange], options: &Options) -> Result<Child> {
        let (uffd, regions) = Self::adopt(fd, ranges, options, None)?;
        Ok(Child { regions, uffd })
    }

    fn start(
        fd: OwnedFd,
        negotiated: Negotiated,
        options: Options,
        remote: Vec<Arc<Region>>,
        peer: Option<OwnedFd>,
    ) -> Result<Arc<Userfaultfd>> {
        static OBSERVE_REGIONS: Once = Once::new();
        OBSERVE_REGIONS.call_once(|| crate::region::on_close(release_region_everywhere));
        let resolver = Resolver::new(Fd::new(fd, negotiated), Registrations::of_regions(remote));
        let engine = Engine::new(UFFDS.next_id(), resolver, options, peer, Self::adopt_child)?;
        let uffd = Arc::new(Userfaultfd { engine: engine.clone() });
        if let Err(err) = loop_thread::start(&engine) {
            engine.close();
            return Err(err);
        }
        UFFDS.insert(engine.id(), &uffd);
        Ok(uffd)
    }

    /// Closes every userfaultfd of the process (on its way out: no thread stays asleep in a fault).
    pub fn close_all() {
        for uffd in UFFDS.all() {
            uffd.close();
        }
    }

    /// The live userfaultfd with this id (what a worker attaches to by token).
    pub fn lookup(id: u64) -> Option<Arc<Userfaultfd>> {
        UFFDS.get(id).filter(|u| !u.is_closed())
    }

    pub fn id(&self) -> u64 {
        self.engine.id()
    }
    pub fn features(&self) -> u64 {
        self.engine.features()
    }
    pub fn ioctls(&self) -> u64 {
        self.engine.negotiated().ioctls
    }
    pub fn user_mode_only(&self) -> bool {
        self.engine.negotiated().user_mode_only
    }
    pub fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }
    /// Loop threads that read the fd.
    pub fn readers(&self) -> usize {
        if self.features() & uapi::FEATURE_EVENT_FORK != 0 {
            1
        } else {
            self.engine.reader_count()
        }
    }

    /// Registers `[offset, offset + len)` of a region (all of it by default) and returns the mask of
    /// ioctls the kernel allows there.
    pub fn register(&self, region: &Arc<Region>, modes: Modes, offset: usize, len: Option<usize>) -> Result<u64> {
        self.register_served(region, modes, offset, len, None)
    }

    /// Registers a range whose faults `served` resolves on the reader threads, with no handler.
    pub fn register_served(
        &self,
        region: &Arc<Region>,
        modes: Modes,
        offset: usize,
        len: Option<usize>,
        served: Option<Arc<Served>>,
    ) -> Result<u64> {
        let ioctls = self.engine.resolver().register(region, modes, offset, len, served.clone())?;
        if let Some(residency) = served.as_deref().and_then(Served::residency) {
            // A write-back of the evictor's that fails is said as an error event.
            let engine = Arc::downgrade(&self.engine);
            residency.tell(Box::new(move |error| {
                if let Some(engine) = engine.upgrade() {
                    engine.say(write_back_failed_notice(error));
                }
            }));
        }
        Ok(ioctls)
    }

    /// Serves `[offset, offset + len)` of a region that is registered already (another process's
    /// memory, registered by that process) from a native source: no ioctl. Faults that came before
    /// the source and wait for a handler are served now.
    pub fn serve(&self, region: &Arc<Region>, offset: usize, len: Option<usize>, served: Arc<Served>) -> Result<()> {
        answer::serve(&self.engine, region, offset, len, served)
    }

    /// Writes the pages written so far in ranges with write-back (a writable file source) back to
    /// their files, and with `sync` to the disk; waits for the write-backs under way. The first
    /// failure is returned (its pages stay written, and are tried again by the next flush).
    pub fn flush(&self, sync: bool) -> Result<()> {
        let mut failed = None;
        for one in self.engine.resolver().sources() {
            if let Some(Err(error)) = one.residency().map(|residency| residency.flush(sync)) {
                failed.get_or_insert(error);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Whether fault `id` still waits for its resolution.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.engine.is_in_flight(id)
    }

    /// Unregisters `[offset, offset + len)` of a region; the kernel wakes its waiters.
    pub fn unregister(&self, region: &Arc<Region>, offset: usize, len: Option<usize>) -> Result<()> {
        const OP: &str = "UFFDIO_UNREGISTER";
        let resolver = self.engine.resolver();
        resolver.fd.check_open(OP)?;
        let len = len.unwrap_or(region.size().saturating_sub(offset));
        let start = region.check_range(OP, offset, len)?;
        let mut registrations = resolver.registrations_mut();
        resolver.fd.with_fd(OP, |uffd| crate::sys::ioctl::unregister(uffd, start, len))?;
        registrations.carve(start, start + len);
        drop(registrations);
        self.forget_range(region, offset, len);
        Ok(())
    }

    fn forget_range(&self, region: &Region, offset: usize, len: usize) {
        self.engine.forget_faults(|fault| {
            std::ptr::eq(&*fault.region, region) && (offset..offset + len).contains(&fault.offset)
        });
    }

    /// How a resolve on this thread waits for unread events: a thread that reads the fd itself
    /// reads them; any other waits for a reader.
    fn with_park<T>(&self, f: impl FnOnce(Park<'_>) -> T) -> T {
        let read = || puller::read_unread(&self.engine);
        let engine = &self.engine;
        if engine.is_puller_thread(current_thread_id()) {
            f(Park::ReadFirst(&read))
        } else {
            f(Park::UntilRead)
        }
    }

    /// Resolves fault `id` at its page (see `answer::resolve`).
    pub fn resolve(&self, id: u64, resolution: Resolution<'_>) -> Result<usize> {
        self.with_park(|park| answer::resolve(&self.engine, id, resolution, park))
    }

    /// Resolves fault `id` (handed to a handler) from a native source.
    pub fn resolve_from_source(&self, id: u64, served: &Served) -> Result<usize> {
        self.with_park(|park| answer::resolve_from_source(&self.engine, id, served, park))
    }

    /// The handler is done with fault `id`: resolve it by the fallback if it was not.
    pub fn finish(&self, id: u64) -> Finish {
        answer::finish(&self.engine, id)
    }

    /// UFFDIO_COPY of `bytes` (whole pages) to `offset` of a region; returns the bytes mapped.
    pub fn copy(&self, region: &Region, offset: usize, bytes: &[u8], wake: Wake, protect: Protect) -> Result<usize> {
        self.with_park(|park| self.engine.resolver().copy(region, offset, bytes, wake, protect, park))
    }

    /// UFFDIO_ZEROPAGE over a range (not on hugetlbfs, which has no zero page).
    pub fn zero(&self, region: &Region, offset: usize, len: usize, wake: Wake) -> Result<usize> {
        self.with_park(|park| self.engine.resolver().zero(region, offset, len, wake, park))
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
        self.with_park(|park| self.engine.resolver().r#continue(region, offset, len, wake, protect, park))
    }

    /// UFFDIO_POISON over a range: later accesses raise SIGBUS.
    pub fn poison(&self, region: &Region, offset: usize, len: usize, wake: Wake) -> Result<usize> {
        self.with_park(|park| self.engine.resolver().poison(region, offset, len, wake, park))
    }

    /// UFFDIO_WAKE over a range; faults in flight there count as woken.
    pub fn wake(&self, region: &Region, offset: usize, len: usize) -> Result<()> {
        self.engine.resolver().wake(region, offset, len)?;
        self.forget_range(region, offset, len);
        Ok(())
    }

    /// UFFDIO_WRITEPROTECT: protects a range registered for wp faults, or lifts the protection
    /// (waking the writers waiting there unless `wake` is false).
    pub fn write_protect(&self, region: &Region, offset: usize, len: usize, protect: bool, wake: Wake) -> Result<()> {
        self.with_park(|park| self.engine.resolver().write_protect(region, offset, len, protect, wake, park))?;
        if !protect && wake.0 {
            self.forget_range(region, offset, len);
        }
        Ok(())
    }

    /// UFFDIO_MOVE of `len` bytes from `from_offset` of `from` to `offset` of `region` (both
    /// anonymous): the pages move without a copy. With `allow_holes`, unpopulated pages are skipped.
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
        self.with_park(|park| {
            self.engine.resolver().r#move(region, offset, from, from_offset, len, wake, allow_holes, park)
        })
    }

    /// Maps every page of the ranges that is not there yet; see [`Prefetch`].
    pub fn prefetch(&self, region: &Arc<Region>, job: &Prefetch) -> Result<PrefetchReport> {
        prefetch::prefetch(self.engine.resolver(), region, job)
    }

    /// Offsets of the region's pages written since they were last protected; with `clear`, they
    /// are protected again.
    pub fn dirty_pages(&self, region: &Region, clear: bool, method: DirtyMethod) -> Result<Vec<usize>> {
        dirty::dirty_pages(self.engine.resolver(), region, clear, method)
    }

    /// Installs the handler that faults go to, running on thread `thread_id`; faults queued while
    /// there was none are handed to it now. Returns its generation, for `remove_handler`.
    pub fn set_handler(&self, sink: Arc<dyn FaultSink>, thread_id: i32) -> Result<u64> {
        self.install_handler(sink, thread_id, false)
    }

    /// Installs a handler that serves beside the installed ones (a second handler worker, each
    /// reading the fd): nothing is replaced. Returns its generation.
    pub fn join_handler(&self, sink: Arc<dyn FaultSink>, thread_id: i32) -> Result<u64> {
        self.install_handler(sink, thread_id, true)
    }

    fn install_handler(&self, sink: Arc<dyn FaultSink>, thread_id: i32, join: bool) -> Result<u64> {
        self.engine.install_handler(sink, thread_id, join)
    }

    /// Keeps only the handlers of `generations` (a group that joined the old handlers and is ready
    /// now): the others are replaced, as `set_handler` replaces them, their readers stop.
    pub fn keep_handlers(&self, generations: &[u64]) {
        self.engine.keep_handlers(generations)
    }

    /// Stops handing faults to the handlers of `generations` (handler workers being removed): new
    /// faults wait for another handler at once; those already handed stay theirs until they end.
    pub fn retire_handlers(&self, generations: &[u64]) {
        self.engine.retire_handlers(generations)
    }

    /// Removes handler `generation` if it is still the current one. Faults it was handed and did
    /// not finish are resolved by the fallback, with a notice each.
    pub fn remove_handler(&self, generation: u64) {
        self.engine.remove_handler(generation)
    }

    /// Whether a handler is installed (on any thread), or being started (`expect_handler`).
    pub fn has_handler(&self) -> bool {
        self.engine.has_handler()
    }

    /// Makes `sink`, on thread `thread_id`, hear the notices no handler hears, and makes faults
    /// that no handler will serve known at once.
    pub fn set_owner(&self, sink: Arc<dyn FaultSink>, thread_id: i32) {
        self.engine.set_owner(sink, thread_id)
    }

    /// A handler is being started (in a worker): until `unexpect_handler`, faults wait for it
    /// without a notice. Returns the token to end the expectation with.
    pub fn expect_handler(&self) -> u64 {
        self.engine.expect_handler()
    }

    /// The handler of `token` came, or will not.
    pub fn unexpect_handler(&self, token: u64) {
        self.engine.unexpect_handler(token)
    }

    /// Makes the handler of `generation` (installed on this thread) the reader of the fd.
    pub fn start_pulling(&self, generation: u64) -> Result<Puller> {
        puller::start(&self.engine, generation, current_thread_id())
    }

    /// Hands reading back to the loop threads (a no-op unless `generation` reads).
    pub fn stop_pulling(&self, generation: u64) {
        self.engine.stop_pulling(generation)
    }

    /// One turn on the handler's thread: see `puller::pull`.
    pub fn pull(&self, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
        puller::pull(&self.engine, puller, wait)
    }

    /// Items a reading handler took but could not hold this time: the next `pull` returns them.
    pub fn defer_to_next_pull(&self, items: Vec<Dispatch>) {
        self.engine.defer_to_next_pull(items)
    }

    /// When the first fault came, and native sources' fault latency.
    pub fn latency(&self) -> crate::stats::LatencyReport {
        self.engine.latency_report()
    }

    pub fn stats(&self) -> Snapshot {
        self.engine.snapshot()
    }

    /// Stops the readers, closes the fd (the kernel wakes every waiting thread and drops every
    /// registration) and forgets all faults. Idempotent.
    pub fn close(&self) {
        self.engine.close();
        UFFDS.remove(self.engine.id());
    }

    /// Drops this fd's registrations of a closing region; the kernel wakes their waiters.
    fn release_region(&self, region: &Arc<Region>) {
        self.engine.release_region(region)
    }
}

impl Drop for Userfaultfd {
    fn drop(&mut self) {
        self.close();
    }
}

/// Told by `Region::close`: every userfaultfd drops the region's registrations.
fn release_region_everywhere(region: &Arc<Region>) {
    for uffd in UFFDS.all() {
        uffd.release_region(region);
    }
}

/// The notice of a write-back that failed before its page was dropped.
fn write_back_failed_notice(error: Error) -> Notice {
    Notice {
        kind: NoticeKind::WriteBackFailed,
        message: format!(
            "a written page could not be written back before it was dropped ({error}): it stays written and \
             resident, and the next flush tries it again"
        ),
        advice: Vec::new(),
        fault: None,
        cause: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{Readahead, Source};
    use std::time::Instant;

    const PAGE: usize = 4096;
    const LIMIT: Duration = Duration::from_secs(10);

    /// Waits until `done`, at most `LIMIT`.
    fn until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < LIMIT, "{what} within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A reader looks a fault's range up, finds no source, and hands the fault over a moment
    /// later; `serve()` attaches the range's source in that moment. The fault is served (before,
    /// it waited for a handler that never came, and a Firecracker VM of thousands of regions,
    /// served region by region as its vCPUs ran, was killed for it 1 run in 8 to 25).
    #[test]
    fn a_fault_read_before_its_source_came_and_handed_over_after_is_served() {
        let uffd = Userfaultfd::open(Options::default()).unwrap();
        let region = Region::anonymous(4 * PAGE).unwrap();
        let modes = Modes { missing: true, minor: false, wp: false };
        uffd.register(&region, modes, 0, None).unwrap();
        let engine = &uffd.engine;
        let (tx, rx) = std::sync::mpsc::channel();
        let toucher = region.clone();
        std::thread::spawn(move || {
            // SAFETY: the offset is inside the live mapping, which the Arc keeps alive.
            let _ = tx.send(unsafe { toucher.as_ptr().add(2 * PAGE + 5).read_volatile() });
        });
        // The fault is read with no source and no handler: held for a handler.
        until("the fault held", || engine.queued_faults() == 1);
        // As a reader holds it between its look-up and its hand-over.
        let in_the_readers_hands = engine.take_queued(|_| true);
        let bytes: Arc<[u8]> = (0..4 * PAGE).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        uffd.serve(&region, 0, None, Served::new(Source::Bytes(bytes), Readahead::default())).unwrap();
        engine.hand_over(in_the_readers_hands);
        let read = rx.recv_timeout(LIMIT).expect("the thread served, not left waiting for a handler");
        assert_eq!(read, ((2 * PAGE + 5) % 251) as u8);
        assert_eq!(engine.queued_faults(), 0, "nothing held for a handler");
        assert_eq!(uffd.stats().in_flight, 0);
        uffd.close();
    }
}
