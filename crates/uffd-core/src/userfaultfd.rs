//! A userfaultfd: the negotiated fd, its registrations, the faults in flight, and the thread that
//! reads it. Every resolving call checks its region, bounds and page alignment before the ioctl.

use crate::error::{Error, Result};
use crate::events::{Deferred, EventEpoch, Retry, UffdEvent};
use crate::fault::{Dispatch, Fault, FaultKind, FaultSink, Notice, NoticeKind};
use crate::fault_loop;
use crate::fault_table::{FaultState, FaultTable, InFlight};
use crate::ioctl;
use crate::region::{MemoryKind, Region};
use crate::registrations::Registrations;
use crate::registry::Registry;
use crate::resolve::{Protect, Wake};
use crate::source::Served;
use crate::stats::{bump, Counters, Snapshot};
use crate::uapi;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use userfaultfd::{Event, RegisterMode, Uffd};

static UFFDS: Registry<Userfaultfd> = Registry::new();

/// Features requested whenever the kernel offers them: they add information or abilities and
/// change nothing for a program that does not use them. Events, SIGBUS and WP_ASYNC change
/// behaviour, so they are requested only when asked for.
const WANTED_BY_DEFAULT: u64 = uapi::FEATURE_PAGEFAULT_FLAG_WP
    | uapi::FEATURE_MISSING_HUGETLBFS
    | uapi::FEATURE_MISSING_SHMEM
    | uapi::FEATURE_THREAD_ID
    | uapi::FEATURE_MINOR_HUGETLBFS
    | uapi::FEATURE_MINOR_SHMEM
    | uapi::FEATURE_EXACT_ADDRESS
    | uapi::FEATURE_WP_HUGETLBFS_SHMEM
    | uapi::FEATURE_WP_UNPOPULATED
    | uapi::FEATURE_POISON
    | uapi::FEATURE_MOVE;

/// A registered range of another process's memory, as that process describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRange {
    pub address: usize,
    pub length: usize,
    pub page_size: usize,
}

struct Negotiated {
    features: u64,
    ioctls: u64,
    user_mode_only: bool,
}

/// Refuses ranges that overlap each other.
fn check_disjoint(ranges: &[RemoteRange]) -> Result<()> {
    let mut sorted: Vec<&RemoteRange> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.address);
    for pair in sorted.windows(2) {
        if pair[0].address.saturating_add(pair[0].length) > pair[1].address {
            return Err(Error::invalid(
                "adopt",
                format!("ranges at {:#x} and {:#x} overlap", pair[0].address, pair[1].address),
            ));
        }
    }
    Ok(())
}

/// What the kernel offers, from UFFDIO_API on a throwaway fd.
#[derive(Debug, Clone)]
pub struct Probe {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// How a fault is resolved when its handler cannot: throws, never answers, or is the faulting thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// ZEROPAGE (a zeroed COPY on hugetlbfs) for missing faults, CONTINUE for minor ones.
    #[default]
    Zero,
    /// UFFDIO_POISON: the faulting thread gets SIGBUS.
    Sigbus,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Feature names (`MINOR_SHMEM`) that must be enabled, besides the defaults the kernel offers.
    pub features: Vec<String>,
    /// `Some(true)`: user-mode faults only; `Some(false)`: kernel faults too, or fail;
    /// `None`: kernel faults too where permitted, else user-mode only.
    pub user_mode_only: Option<bool>,
    pub fallback: Fallback,
    /// How long a fault may wait for its handler before the fallback resolves it.
    pub timeout: Option<Duration>,
    /// How long the loop polls for messages before it sleeps in epoll: a sleeping thread can take
    /// tens of microseconds to wake on a virtual CPU. Zero (the default) never spins.
    pub spin: Duration,
}

/// Which faults a registration reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    pub missing: bool,
    pub minor: bool,
    pub wp: bool,
}

#[derive(Default)]
struct Dispatcher {
    sink: Option<(u64, Arc<dyn FaultSink>)>,
    generation: u64,
    /// Who hears notices that no handler would (the owner's JavaScript thread), and its thread id.
    owner: Option<(Arc<dyn FaultSink>, i32)>,
    /// Handlers being started (`expect_handler`): faults wait for them without a notice.
    expected: std::collections::BTreeSet<u64>,
    next_expectation: u64,
    queued: Vec<Dispatch>,
    faults: FaultTable,
}

/// What `finish` found when the handler was done with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Resolved and woken already (or settled by a timeout or close).
    Done,
    /// Never resolved: the fallback resolved it.
    FellBack,
    /// Resolved with DONTWAKE: its thread sleeps until a wake, or until its deadline.
    Asleep,
}

/// A resolution a handler asks for at its fault's page.
pub enum Resolution<'a> {
    Copy {
        bytes: &'a [u8],
        wake: bool,
        protect: bool,
    },
    Zero {
        len: Option<usize>,
        wake: bool,
    },
    Continue {
        len: Option<usize>,
        wake: bool,
        protect: bool,
    },
    Poison,
    Wake,
    /// Lift the write-protection of the fault's page (a wp fault).
    Unprotect {
        wake: bool,
    },
    /// Move pages from another anonymous region to the fault's page.
    Move {
        from: &'a Region,
        from_offset: usize,
        len: Option<usize>,
        wake: bool,
        allow_holes: bool,
    },
}

pub struct Userfaultfd {
    id: u64,
    fd: RwLock<Option<Uffd>>,
    features: u64,
    ioctls: u64,
    user_mode_only: bool,
    fallback: Fallback,
    timeout: Option<Duration>,
    pub(crate) spin: Duration,
    registrations: RwLock<Registrations>,
    dispatcher: Mutex<Dispatcher>,
    handler_thread: AtomicI32,
    next_fault_id: AtomicU64,
    pub(crate) counters: Counters,
    /// Written once by `close` to wake the loop; dropped once the loop has stopped.
    pub(crate) stop: Mutex<Option<EventFd>>,
    stopping: AtomicBool,
    /// Set first by close(), which may let the loop read on for a moment before `stopping`.
    closing: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub(crate) epoch: EventEpoch,
    deferred: Deferred,
    /// The socket of the process whose memory this serves, watched for its hang-up.
    pub(crate) peer: Mutex<Option<OwnedFd>>,
    /// Who reads the fd (direct.rs), the eventfd that tells the loop thread to look, and what a
    /// reading handler's resolves read while the kernel refused them for unread events.
    pub(crate) reader: crate::direct::Reader,
    pub(crate) poke: Mutex<Option<EventFd>>,
    backlog: Mutex<Vec<Dispatch>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
        static PROBE: OnceLock<std::result::Result<Probe, (Errno, &'static str)>> = OnceLock::new();
        PROBE
            .get_or_init(|| {
                let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
                let (fd, _) = ioctl::open(base)
                    .or_else(|_| ioctl::open(base | uapi::UFFD_USER_MODE_ONLY))
                    .map_err(|e| (e.errno(), e.op()))?;
                let api = ioctl::api(&fd, 0).map_err(|e| (e.errno(), e.op()))?;
                Ok(Probe { api: api.api, features: api.features, ioctls: api.ioctls })
            })
            .clone()
            .map_err(|(errno, op)| Error::sys(op, errno, "probing userfaultfd"))
    }

    /// Opens a non-blocking userfaultfd, negotiates features and starts its fault loop.
    pub fn open(options: Options) -> Result<Arc<Userfaultfd>> {
        let offered = Self::probe()?.features;
        let mut required = 0;
        for name in &options.features {
            required |= uapi::feature_bit(name)
                .ok_or_else(|| Error::invalid("UFFDIO_API", format!("unknown feature {name:?}")))?;
        }
        let missing = required & !offered;
        if missing != 0 {
            return Err(Error::unsupported(
                "UFFDIO_API",
                format!("this kernel does not offer {}", uapi::names_of(missing, uapi::FEATURES).join(", ")),
            ));
        }
        if options.fallback == Fallback::Sigbus && offered & uapi::FEATURE_POISON == 0 {
            return Err(Error::unsupported("UFFDIO_API", "fallback 'sigbus' needs UFFDIO_POISON (Linux 6.6)"));
        }
        let requested = (offered & WANTED_BY_DEFAULT) | required;
        let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let (fd, user_mode_only) = match options.user_mode_only {
            Some(true) => (ioctl::open(base | uapi::UFFD_USER_MODE_ONLY)?.0, true),
            Some(false) => (ioctl::open(base)?.0, false),
            None => match ioctl::open(base) {
                Ok((fd, _)) => (fd, false),
                Err(err) if matches!(err.errno(), Errno::EPERM | Errno::EACCES) => {
                    (ioctl::open(base | uapi::UFFD_USER_MODE_ONLY).map_err(|_| err)?.0, true)
                }
                Err(err) => return Err(err),
            },
        };
        let api = ioctl::api(&fd, requested)?;
        let negotiated = Negotiated { features: api.features & requested, ioctls: api.ioctls, user_mode_only };
        Self::start(fd, negotiated, &options, Vec::new(), None)
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
        let mut features = 0;
        for name in &options.features {
            features |=
                uapi::feature_bit(name).ok_or_else(|| Error::invalid("adopt", format!("unknown feature {name:?}")))?;
        }
        check_disjoint(ranges)?;
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|errno| Error::sys("fcntl", errno, "reading the flags of the adopted fd"))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|errno| Error::sys("fcntl", errno, "making the adopted fd non-blocking"))?;
        let regions = ranges
            .iter()
            .map(|range| Region::remote(range.address, range.length, range.page_size))
            .collect::<Result<Vec<_>>>()?;
        let negotiated = Negotiated { features, ioctls: 0, user_mode_only: false };
        let uffd = Self::start(fd, negotiated, options, regions.clone(), peer)?;
        Ok((uffd, regions))
    }

    fn start(
        fd: OwnedFd,
        negotiated: Negotiated,
        options: &Options,
        remote: Vec<Arc<Region>>,
        peer: Option<OwnedFd>,
    ) -> Result<Arc<Userfaultfd>> {
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| Error::sys("eventfd", errno, ""))?;
        let registrations = Registrations::of_regions(remote);
        let uffd = Arc::new(Userfaultfd {
            id: UFFDS.next_id(),
            fd: RwLock::new(Some(ioctl::adopt(fd))),
            features: negotiated.features,
            ioctls: negotiated.ioctls,
            user_mode_only: negotiated.user_mode_only,
            fallback: options.fallback,
            timeout: options.timeout,
            spin: options.spin,
            registrations: RwLock::new(registrations),
            dispatcher: Mutex::new(Dispatcher::default()),
            handler_thread: AtomicI32::new(0),
            next_fault_id: AtomicU64::new(1),
            counters: Counters::default(),
            stop: Mutex::new(Some(stop)),
            stopping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            thread: Mutex::new(None),
            epoch: EventEpoch::default(),
            deferred: Deferred::default(),
            peer: Mutex::new(peer),
            reader: Default::default(),
            poke: Mutex::new(Some(
                EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                    .map_err(|errno| Error::sys("eventfd", errno, ""))?,
            )),
            backlog: Mutex::new(Vec::new()),
        });
        let thread = fault_loop::spawn(uffd.clone())?;
        *lock(&uffd.thread) = Some(thread);
        UFFDS.insert(uffd.id, &uffd);
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
        self.id
    }
    pub fn features(&self) -> u64 {
        self.features
    }
    pub fn ioctls(&self) -> u64 {
        self.ioctls
    }
    pub fn user_mode_only(&self) -> bool {
        self.user_mode_only
    }
    pub fn is_closed(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
    pub(crate) fn has_timeout(&self) -> bool {
        self.timeout.is_some()
    }

    pub(crate) fn with_fd<T>(&self, op: &'static str, f: impl FnOnce(&Uffd) -> Result<T>) -> Result<T> {
        let guard = self.fd.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(uffd) => f(uffd),
            None => Err(Error::Closed { op, what: "userfaultfd" }),
        }
    }

    fn check_open(&self, op: &'static str) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed { op, what: "userfaultfd" })
        } else {
            Ok(())
        }
    }

    pub(crate) fn require_feature(&self, op: &'static str, bit: u64, why: &str) -> Result<()> {
        if self.features & bit != 0 {
            Ok(())
        } else {
            let name = uapi::names_of(bit, uapi::FEATURES).join(", ");
            Err(Error::unsupported(op, format!("{why} needs the {name} feature, which was not negotiated")))
        }
    }

    /// Registers `[offset, offset + len)` of a region (all of it by default) and returns the mask of
    /// ioctls the kernel allows there.
    pub fn register(&self, region: &Arc<Region>, modes: Modes, offset: usize, len: Option<usize>) -> Result<u64> {
        self.register_served(region, modes, offset, len, None)
    }

    /// Registers a range whose faults `served` resolves on the loop thread, with no handler.
    pub fn register_served(
        &self,
        region: &Arc<Region>,
        modes: Modes,
        offset: usize,
        len: Option<usize>,
        served: Option<Arc<Served>>,
    ) -> Result<u64> {
        const OP: &str = "UFFDIO_REGISTER";
        self.check_open(OP)?;
        let len = len.unwrap_or(region.size().saturating_sub(offset));
        let start = region.check_range(OP, offset, len)?;
        if !(modes.missing || modes.minor || modes.wp) {
            return Err(Error::invalid(OP, "no mode: ask for missing, minor or wp faults"));
        }
        let kind = region.kind();
        if modes.minor && kind == MemoryKind::Anonymous {
            return Err(Error::invalid(OP, "minor faults need shmem or hugetlbfs memory, not anonymous memory"));
        }
        match kind {
            MemoryKind::Shmem if modes.missing => {
                self.require_feature(OP, uapi::FEATURE_MISSING_SHMEM, "missing faults on shmem")?
            }
            MemoryKind::Hugetlb if modes.missing => {
                self.require_feature(OP, uapi::FEATURE_MISSING_HUGETLBFS, "missing faults on hugetlbfs")?
            }
            _ => {}
        }
        match kind {
            MemoryKind::Shmem if modes.minor => {
                self.require_feature(OP, uapi::FEATURE_MINOR_SHMEM, "minor faults on shmem")?
            }
            MemoryKind::Hugetlb if modes.minor => {
                self.require_feature(OP, uapi::FEATURE_MINOR_HUGETLBFS, "minor faults on hugetlbfs")?
            }
            _ => {}
        }
        if modes.wp {
            match kind {
                MemoryKind::Anonymous => {
                    self.require_feature(OP, uapi::FEATURE_PAGEFAULT_FLAG_WP, "write-protection")?
                }
                _ => self.require_feature(
                    OP,
                    uapi::FEATURE_WP_HUGETLBFS_SHMEM,
                    "write-protection of shmem or hugetlbfs",
                )?,
            }
        }
        let mut mode = RegisterMode::empty();
        mode.set(RegisterMode::MISSING, modes.missing);
        mode.set(RegisterMode::MINOR, modes.minor);
        mode.set(RegisterMode::WRITE_PROTECT, modes.wp);
        let mut registrations = self.registrations.write().unwrap_or_else(|p| p.into_inner());
        let ioctls = self.with_fd(OP, |uffd| ioctl::register(uffd, start, len, mode))?;
        registrations.insert_range(region, start, start + len, served);
        Ok(ioctls)
    }

    /// Serves `[offset, offset + len)` of a region that is registered already (another process's
    /// memory, registered by that process) from a native source, on the loop thread: no ioctl.
    pub fn serve(&self, region: &Arc<Region>, offset: usize, len: Option<usize>, served: Arc<Served>) -> Result<()> {
        const OP: &str = "serve";
        let len = len.unwrap_or(region.size().saturating_sub(offset));
        let start = self.check_registered(OP, region, offset, len)?;
        let mut registrations = self.registrations.write().unwrap_or_else(|p| p.into_inner());
        registrations.insert_range(region, start, start + len, Some(served));
        drop(registrations);
        // Faults that came before the source (the peer runs as soon as it has sent its handshake)
        // wait for a handler: the source serves them now.
        let held: Vec<Fault> = {
            let mut dispatcher = lock(&self.dispatcher);
            let (mine, rest): (Vec<Dispatch>, Vec<Dispatch>) = std::mem::take(&mut dispatcher.queued)
                .into_iter()
                .partition(|item| matches!(item, Dispatch::Fault(f) if Arc::ptr_eq(&f.region, region) && (offset..offset + len).contains(&f.offset)));
            dispatcher.queued = rest;
            mine.into_iter()
                .filter_map(|item| match item {
                    Dispatch::Fault(fault) => dispatcher.faults.take(fault.id).map(|entry| entry.fault),
                    _ => None,
                })
                .collect()
        };
        let mut batch = Vec::new();
        for fault in held {
            self.take_fault(fault.address, fault.kind, fault.write, fault.thread_id as i32, &mut batch);
        }
        if !batch.is_empty() {
            self.hand_over(batch);
        }
        Ok(())
    }

    /// Whether fault `id` still waits for its resolution.
    pub fn is_waiting(&self, id: u64) -> bool {
        lock(&self.dispatcher).faults.contains(id)
    }

    /// A range was removed (EVENT_REMOVE): the sources serving it learn of it.
    pub(crate) fn note_removed(&self, start: usize, end: usize) {
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        for (reg_start, reg) in registrations.overlapping(start, end) {
            if let Some(served) = &reg.served {
                let base = reg.region.address();
                served.note_removed(start.max(reg_start) - base, end.min(reg.end) - base);
            }
        }
    }

    /// Unregisters `[offset, offset + len)` of a region; the kernel wakes its waiters.
    pub fn unregister(&self, region: &Arc<Region>, offset: usize, len: Option<usize>) -> Result<()> {
        const OP: &str = "UFFDIO_UNREGISTER";
        self.check_open(OP)?;
        let len = len.unwrap_or(region.size().saturating_sub(offset));
        let start = region.check_range(OP, offset, len)?;
        let mut registrations = self.registrations.write().unwrap_or_else(|p| p.into_inner());
        self.with_fd(OP, |uffd| ioctl::unregister(uffd, start, len))?;
        registrations.carve(start, start + len);
        drop(registrations);
        self.forget_faults(|fault| {
            Arc::ptr_eq(&fault.region, region) && (offset..offset + len).contains(&fault.offset)
        });
        Ok(())
    }

    /// Checks that a range lies in registered memory of this fd and returns its address.
    pub(crate) fn check_registered(
        &self,
        op: &'static str,
        region: &Region,
        offset: usize,
        len: usize,
    ) -> Result<usize> {
        self.check_open(op)?;
        let start = region.check_range(op, offset, len)?;
        let end = start + len;
        if self.registrations.read().unwrap_or_else(|p| p.into_inner()).covers(start, end) {
            return Ok(start);
        }
        Err(Error::invalid(
            op,
            format!("range {offset}+{len} of region {} is not registered with this userfaultfd", region.id()),
        ))
    }

    /// Resolves fault `id` at its page. A fault already settled (by a timeout, by close, by its
    /// region's close) resolves to 0 bytes without an ioctl. EEXIST means another resolver won:
    /// it is counted, the page is woken, and the call succeeds with 0 bytes.
    pub fn resolve(&self, id: u64, resolution: Resolution<'_>) -> Result<usize> {
        let Some(fault) = self.fault_in_flight(id) else {
            return Ok(0);
        };
        let region = &fault.region;
        let page = region.page_size();
        let room = region.size() - fault.offset;
        let at = fault.offset;
        let (result, wake) = match resolution {
            Resolution::Copy { bytes, wake, protect } => {
                let len = bytes.len().min(room);
                (self.copy(region, at, &bytes[..len], Wake(wake), Protect(protect)), wake)
            }
            Resolution::Zero { len, wake } => (self.zero(region, at, len.unwrap_or(page).min(room), Wake(wake)), wake),
            Resolution::Continue { len, wake, protect } => {
                (self.r#continue(region, at, len.unwrap_or(page).min(room), Wake(wake), Protect(protect)), wake)
            }
            Resolution::Poison => (self.poison(region, at, page, Wake(true)), true),
            Resolution::Wake => (self.wake(region, at, page).map(|()| 0), true),
            Resolution::Unprotect { wake } => {
                (self.write_protect(region, at, page, false, Wake(wake)).map(|()| page), wake)
            }
            Resolution::Move { from, from_offset, len, wake, allow_holes } => {
                let len = len.unwrap_or(page).min(room);
                (self.r#move(region, at, from, from_offset, len, Wake(wake), allow_holes), wake)
            }
        };
        let mapped = match result {
            Ok(mapped) => mapped,
            Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
                bump(&self.counters.eexist);
                if wake {
                    self.with_fd("UFFDIO_WAKE", |uffd| ioctl::wake(uffd, region.address() + fault.offset, page))?;
                }
                0
            }
            // The process that owns the memory exited, or the fd closed under the call: nobody waits
            // for this fault any more, as for a fault settled before the call.
            Err(Error::Sys { errno: Errno::ESRCH, .. }) | Err(Error::Closed { .. }) => 0,
            Err(err) => return Err(err),
        };
        self.settle(id, wake);
        Ok(mapped)
    }

    pub(crate) fn fault_in_flight(&self, id: u64) -> Option<Fault> {
        lock(&self.dispatcher).faults.get(id).map(|entry| entry.fault.clone())
    }

    /// Marks a resolved fault: woken ones leave the table; DONTWAKE ones wait for their wake.
    pub(crate) fn settle(&self, id: u64, woken: bool) {
        let mut dispatcher = lock(&self.dispatcher);
        if woken {
            let entry = dispatcher.faults.take(id);
            drop(dispatcher);
            if let Some(entry) = entry.filter(|e| e.duplicate) {
                // A second thread may have queued behind the first one's message: wake it too.
                self.wake_fault_page(&entry.fault);
            }
        } else {
            dispatcher.faults.set_asleep(id);
        }
    }

    /// The handler is done with fault `id`: resolve it by the fallback if it was not. One resolved
    /// with DONTWAKE stays asleep, as the kernel's DONTWAKE means, until `wake` or its deadline.
    pub fn finish(&self, id: u64) -> Finish {
        let mut dispatcher = lock(&self.dispatcher);
        match dispatcher.faults.get(id).map(|entry| entry.state) {
            None => return Finish::Done,
            Some(FaultState::Asleep) => return Finish::Asleep,
            Some(FaultState::Waiting) => {}
        }
        let entry = dispatcher.faults.take(id).expect("looked up above");
        drop(dispatcher);
        bump(&self.counters.errors);
        if let Some(notice) = self.fall_back(&entry.fault) {
            self.hand_over(vec![Dispatch::Notice(notice)]);
        }
        Finish::FellBack
    }

    /// Settles a fault its handler can no longer answer: one asleep after DONTWAKE is woken (its
    /// page is there), any other gets the fallback. Returns the notice that says so; `say` words it
    /// for a fault the fallback resolved.
    fn abandon(&self, entry: InFlight, say: impl FnOnce(&Fault) -> Notice) -> Dispatch {
        bump(&self.counters.errors);
        let notice = match entry.state {
            FaultState::Asleep => {
                self.wake_fault_page(&entry.fault);
                bump(&self.counters.wakes);
                let fault = &entry.fault;
                Notice {
                    kind: NoticeKind::NotWoken,
                    message: format!(
                        "a {} fault at offset {} of region {} was resolved with {{ wake: false }} and never woken: it was woken",
                        fault.kind.name(),
                        fault.offset,
                        fault.region.id()
                    ),
                    fault: Some(entry.fault),
                    cause: None,
                }
            }
            FaultState::Waiting => self.fall_back(&entry.fault).unwrap_or_else(|| say(&entry.fault)),
        };
        Dispatch::Notice(notice)
    }

    /// Resolves a fault by the fallback policy; returns a notice if even that failed.
    fn fall_back(&self, fault: &Fault) -> Option<Notice> {
        bump(&self.counters.fallbacks);
        let region = &fault.region;
        let page = region.page_size();
        let address = region.address() + fault.offset;
        let result = match (self.fallback, fault.kind, region.kind()) {
            (Fallback::Sigbus, _, _) => self.with_fd("UFFDIO_POISON", |u| ioctl::poison(u, address, page, 0)),
            (_, FaultKind::Minor, _) => self.with_fd("UFFDIO_CONTINUE", |u| ioctl::r#continue(u, address, page, 0)),
            (_, FaultKind::WriteProtect, _) => self
                .with_fd("UFFDIO_WRITEPROTECT", |u| ioctl::write_protect(u, address, page, false, true).map(|()| page)),
            (_, FaultKind::Missing, MemoryKind::Hugetlb) | (_, FaultKind::Missing, MemoryKind::Remote)
                if page > crate::region::base_page_size() =>
            {
                let zeros = vec![0u8; page];
                self.with_fd("UFFDIO_COPY", |u| ioctl::copy(u, address, &zeros, 0))
            }
            (_, FaultKind::Missing, _) => self.with_fd("UFFDIO_ZEROPAGE", |u| ioctl::zeropage(u, address, page, true)),
        };
        match result {
            Ok(mapped) => {
                self.counters.bytes_mapped.fetch_add(mapped as u64, Ordering::Relaxed);
                None
            }
            Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
                let _ = self.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, address, page));
                None
            }
            // Closed, or the memory's owner exited: nobody waits for this fault any more.
            Err(Error::Closed { .. }) | Err(Error::Sys { errno: Errno::ESRCH, .. }) => None,
            Err(Error::Sys { errno: Errno::EAGAIN, .. }) if crate::direct::in_turn() => {
                // An event is unread and only this thread's turn reads events: retry after it.
                lock(&self.deferred.0).push(Retry::Fallback(fault.clone()));
                None
            }
            Err(err) => {
                // Never leave the thread asleep: wake it; it faults again if the page is still absent.
                let _ = self.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, address, page));
                bump(&self.counters.errors);
                Some(Notice {
                    kind: NoticeKind::FallbackFailed,
                    message: format!(
                        "the fallback resolution of a {} fault at offset {} failed: {err}",
                        fault.kind.name(),
                        fault.offset
                    ),
                    fault: Some(fault.clone()),
                    cause: Some(err),
                })
            }
        }
    }

    /// Drops faults in flight that no longer need an answer (their range was woken or released).
    /// A thread whose fault was taken for a duplicate of a forgotten one is woken: nothing else
    /// would (it faults again if its page is still absent).
    pub(crate) fn forget_faults(&self, matches: impl Fn(&Fault) -> bool) {
        let mut dispatcher = lock(&self.dispatcher);
        let duplicated: Vec<InFlight> =
            dispatcher.faults.take_where(|e| matches(&e.fault)).into_iter().filter(|e| e.duplicate).collect();
        drop(dispatcher);
        for entry in duplicated {
            self.wake_fault_page(&entry.fault);
        }
    }

    /// Wakes whatever waits on a fault's page (errors ignored: the fd may be closing, which wakes
    /// every waiter anyway).
    fn wake_fault_page(&self, fault: &Fault) {
        let (region, offset) = (&fault.region, fault.offset);
        let _ = self.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, region.address() + offset, region.page_size()));
    }

    /// Installs the handler that faults go to, running on thread `thread_id`; faults queued while
    /// there was none are handed to it now. Returns its generation, for `remove_handler`.
    pub fn set_handler(&self, sink: Arc<dyn FaultSink>, thread_id: i32) -> Result<u64> {
        let mut dispatcher = lock(&self.dispatcher);
        if self.is_closed() {
            // Closed before any handler came (its peer hung up, say): what it had to say is still
            // handed over, once; no fault can follow.
            let said = std::mem::take(&mut dispatcher.queued);
            drop(dispatcher);
            if said.is_empty() {
                return Err(Error::Closed { op: "handle", what: "userfaultfd" });
            }
            let _ = sink.deliver(said);
            return Ok(0);
        }
        dispatcher.generation += 1;
        let generation = dispatcher.generation;
        let previous = dispatcher.sink.replace((generation, sink)).map(|(g, _)| g);
        self.handler_thread.store(thread_id, Ordering::Release);
        let queued = std::mem::take(&mut dispatcher.queued);
        drop(dispatcher);
        if let Some(previous) = previous {
            // A handler that read the fd itself is replaced: the loop thread reads again.
            self.stop_pulling(previous);
        }
        if !queued.is_empty() {
            self.hand_over(queued);
        }
        Ok(generation)
    }

    /// Removes handler `generation` if it is still the current one. Faults it was handed and did
    /// not finish are resolved by the fallback, with a notice each.
    pub fn remove_handler(&self, generation: u64) {
        self.stop_pulling(generation);
        let mut dispatcher = lock(&self.dispatcher);
        if dispatcher.sink.as_ref().is_some_and(|(g, _)| *g == generation) {
            dispatcher.sink = None;
            self.handler_thread.store(0, Ordering::Release);
        }
        let orphans = dispatcher.faults.take_where(|e| e.delivered_to == Some(generation));
        drop(dispatcher);
        let notices = orphans
            .into_iter()
            .map(|entry| {
                self.abandon(entry, |fault| Notice {
                    kind: NoticeKind::HandlerGone,
                    message: format!(
                        "the handler went away with a {} fault at offset {} unresolved: it was resolved by the fallback",
                        fault.kind.name(),
                        fault.offset
                    ),
                    fault: Some(fault.clone()),
                    cause: None,
                })
            })
            .collect::<Vec<_>>();
        if !notices.is_empty() {
            self.hand_over(notices);
        }
    }

    /// Records the faults of a batch as handed to handler `generation`.
    pub(crate) fn mark_delivered(&self, generation: u64, batch: &[Dispatch]) {
        let mut dispatcher = lock(&self.dispatcher);
        for item in batch {
            if let Dispatch::Fault(fault) = item {
                dispatcher.faults.set_delivered(fault.id, Some(generation));
            }
        }
    }

    /// Whether a handler is installed (on any thread), or being started (`expect_handler`).
    pub fn has_handler(&self) -> bool {
        let dispatcher = lock(&self.dispatcher);
        dispatcher.sink.is_some() || !dispatcher.expected.is_empty()
    }

    pub(crate) fn is_current_handler(&self, generation: u64) -> bool {
        lock(&self.dispatcher).sink.as_ref().is_some_and(|(g, _)| *g == generation)
    }

    pub(crate) fn reader_backlog(&self) -> MutexGuard<'_, Vec<Dispatch>> {
        lock(&self.backlog)
    }

    /// Tells the loop thread to look at who reads the fd.
    pub(crate) fn poke_loop(&self) {
        if let Some(poke) = lock(&self.poke).as_ref() {
            let _ = poke.write(1);
        }
    }

    /// Hands a batch to the current handler, or holds it for the next one. Timeouts and a peer's
    /// hang-up of a handler on another thread go to the owner: the owner set the limit, and the
    /// handler may be the one stuck; the owner is who closes (a handler in a worker cannot, and
    /// the owner keeps its process up). A handler on the owner's thread hears the hang-up in its
    /// batch, after the events before it.
    pub(crate) fn hand_over(&self, mut batch: Vec<Dispatch>) {
        let dispatcher = lock(&self.dispatcher);
        let Some((generation, sink)) = dispatcher.sink.clone() else {
            return self.hold_for_handler(dispatcher, batch);
        };
        let owner = dispatcher.owner.clone();
        drop(dispatcher);
        if let Some((owner, owner_thread)) = owner {
            let elsewhere = owner_thread != self.handler_thread.load(Ordering::Acquire);
            let theirs = take_notices(&mut batch, |kind| {
                kind == NoticeKind::Timeout || (elsewhere && kind == NoticeKind::PeerGone)
            });
            if !theirs.is_empty() {
                if let Err(returned) = owner.deliver(theirs) {
                    batch.extend(returned);
                }
            }
            if batch.is_empty() {
                return;
            }
        }
        self.mark_delivered(generation, &batch);
        bump(&self.counters.batches);
        if let Err(returned) = sink.deliver(batch) {
            let mut dispatcher = lock(&self.dispatcher);
            for item in &returned {
                if let Dispatch::Fault(fault) = item {
                    dispatcher.faults.set_delivered(fault.id, None);
                }
            }
            dispatcher.queued.extend(returned);
            drop(dispatcher);
            self.remove_handler(generation);
        }
    }

    /// With no handler, faults and events wait for one; notices go to the owner at once. A fault
    /// for which no handler is being started is said at once (`NoHandler`), and if its thread is
    /// the owner's, which alone could install one and sleeps in this fault, it gets the fallback now.
    fn hold_for_handler(&self, mut dispatcher: MutexGuard<'_, Dispatcher>, batch: Vec<Dispatch>) {
        let Some((owner, owner_thread)) = dispatcher.owner.clone() else {
            dispatcher.queued.extend(batch);
            return;
        };
        let waiting_for_none = dispatcher.expected.is_empty();
        let mut said = Vec::new();
        let mut stranded = Vec::new();
        for item in batch {
            match item {
                Dispatch::Notice(_) => said.push(item),
                Dispatch::Fault(fault) if waiting_for_none && fault.thread_id as i32 == owner_thread => {
                    if let Some(entry) = dispatcher.faults.take(fault.id) {
                        stranded.push(entry);
                    }
                }
                Dispatch::Fault(ref fault) if waiting_for_none => {
                    said.push(Dispatch::Notice(no_handler_notice(fault, false)));
                    dispatcher.queued.push(item);
                }
                other => dispatcher.queued.push(other),
            }
        }
        drop(dispatcher);
        for entry in stranded {
            // Said before the fallback wakes the thread: when it runs again, the word is there
            // already (a script that reads, then closes and ends, still hears it).
            let notice = Dispatch::Notice(no_handler_notice(&entry.fault, true));
            if let Err(returned) = owner.deliver(vec![notice]) {
                said.extend(returned);
            }
            bump(&self.counters.errors);
            if let Some(failed) = self.fall_back(&entry.fault) {
                said.push(Dispatch::Notice(failed));
            }
        }
        if said.is_empty() {
            return;
        }
        if let Err(returned) = owner.deliver(said) {
            lock(&self.dispatcher).queued.extend(returned);
        }
    }

    /// Makes `sink`, on thread `thread_id`, hear the notices no handler hears, and makes faults
    /// that no handler will serve known at once (see `hold_for_handler`).
    pub fn set_owner(&self, sink: Arc<dyn FaultSink>, thread_id: i32) {
        let mut dispatcher = lock(&self.dispatcher);
        dispatcher.owner = Some((sink, thread_id));
        let held: Vec<Dispatch> = std::mem::take(&mut dispatcher.queued);
        if dispatcher.sink.is_none() {
            self.hold_for_handler(dispatcher, held);
        } else {
            dispatcher.queued = held;
        }
    }

    /// A handler is being started (in a worker): until `unexpect_handler`, faults wait for it
    /// without a notice. Returns the token to end the expectation with.
    pub fn expect_handler(&self) -> u64 {
        let mut dispatcher = lock(&self.dispatcher);
        dispatcher.next_expectation += 1;
        let token = dispatcher.next_expectation;
        dispatcher.expected.insert(token);
        token
    }

    /// The handler of `token` came, or will not: faults still without a handler are dealt with
    /// as `hold_for_handler` says.
    pub fn unexpect_handler(&self, token: u64) {
        let mut dispatcher = lock(&self.dispatcher);
        if !dispatcher.expected.remove(&token) || dispatcher.sink.is_some() || !dispatcher.expected.is_empty() {
            return;
        }
        let held = std::mem::take(&mut dispatcher.queued);
        self.hold_for_handler(dispatcher, held);
    }

    /// Turns messages read by the loop into a batch for the handler. Runs on the loop thread.
    pub(crate) fn take_messages(
        &self,
        events: impl Iterator<Item = userfaultfd::Result<Event>>,
        batch: &mut Vec<Dispatch>,
    ) {
        for event in events {
            bump(&self.counters.messages);
            match event {
                Ok(Event::Pagefault { kind, rw, addr, thread_id }) => {
                    let kind = match kind {
                        userfaultfd::FaultKind::Missing => FaultKind::Missing,
                        userfaultfd::FaultKind::Minor => FaultKind::Minor,
                        userfaultfd::FaultKind::WriteProtected => FaultKind::WriteProtect,
                    };
                    let write = rw == userfaultfd::ReadWrite::Write;
                    self.take_fault_message(addr as usize, kind, write, thread_id.as_raw(), batch);
                }
                Ok(Event::Remove { start, end }) => {
                    let region = self.region_at(start as usize);
                    self.take_event(UffdEvent::Remove { region, start: start as usize, end: end as usize }, batch);
                }
                Ok(Event::Unmap { start, end }) => {
                    let region = self.region_at(start as usize);
                    self.take_event(UffdEvent::Unmap { region, start: start as usize, end: end as usize }, batch);
                }
                Ok(Event::Remap { from, to, len }) => {
                    let region = self.region_at(from as usize);
                    let (from, to) = (from as usize, to as usize);
                    self.take_event(UffdEvent::Remap { region, from, to, len, moved: None }, batch);
                }
                Ok(Event::Fork { uffd }) => {
                    use std::os::fd::FromRawFd;
                    // The crate's into_raw_fd() closes the fd as it drops the Uffd (its issue
                    // #88): take the number without running that Drop.
                    let uffd = std::mem::ManuallyDrop::new(uffd);
                    // SAFETY: the event's fd is a fresh userfaultfd that only `uffd` owned, and
                    // `uffd` will never close it.
                    let fd = unsafe { OwnedFd::from_raw_fd(uffd.as_raw_fd()) };
                    let child = match self.adopt_child(fd) {
                        Ok(child) => Some(child),
                        Err(err) => {
                            bump(&self.counters.errors);
                            batch.push(Dispatch::Notice(Notice {
                                kind: NoticeKind::LoopFailed,
                                message: format!("the userfaultfd of a forked child could not be adopted: {err}"),
                                fault: None,
                                cause: Some(err),
                            }));
                            None
                        }
                    };
                    self.take_event(UffdEvent::Fork { child }, batch);
                }
                Err(err) => {
                    bump(&self.counters.errors);
                    batch.push(Dispatch::Notice(Notice {
                        kind: NoticeKind::LoopFailed,
                        message: format!("a userfaultfd message could not be read: {err}"),
                        fault: None,
                        cause: None,
                    }));
                }
            }
        }
    }

    /// Every registered range, as a forked child sees it.
    pub(crate) fn registered_ranges(&self) -> Vec<RemoteRange> {
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        registrations
            .ranges()
            .into_iter()
            .map(|(start, end, page_size)| RemoteRange { address: start, length: end - start, page_size })
            .collect()
    }

    pub(crate) fn options_for_child(&self, features: Vec<String>) -> Options {
        Options { features, user_mode_only: None, fallback: self.fallback, timeout: self.timeout, spin: self.spin }
    }

    /// The registration covering `address`: its region, end address and native source.
    pub(crate) fn registration_at(&self, address: usize) -> Option<(Arc<Region>, usize, Option<Arc<Served>>)> {
        let registrations = self.registrations.read().unwrap_or_else(|p| p.into_inner());
        registrations.at(address).map(|(_, reg)| (reg.region.clone(), reg.end, reg.served.clone()))
    }

    /// The region a registration covering `address` belongs to.
    pub(crate) fn region_at(&self, address: usize) -> Option<Arc<Region>> {
        self.registration_at(address).map(|(region, _, _)| region)
    }

    /// Records a whole region as registered, without an ioctl: the kernel registered it already
    /// (a range that moved with mremap).
    pub(crate) fn track_registration(&self, region: Arc<Region>) {
        self.registrations.write().unwrap_or_else(|p| p.into_inner()).insert(region, None);
    }

    /// Removes `[start, end)` from the registration map (the kernel already did).
    pub(crate) fn carve_registrations(&self, start: usize, end: usize) {
        self.registrations.write().unwrap_or_else(|p| p.into_inner()).carve(start, end);
    }

    /// Retries the fallbacks the loop thread deferred because an event was unread.
    pub(crate) fn retry_deferred(&self, batch: &mut Vec<Dispatch>) {
        let deferred = std::mem::take(&mut *lock(&self.deferred.0));
        for retry in deferred {
            match retry {
                Retry::Message { address, kind, write, thread_id } => {
                    self.take_fault(address, kind, write, thread_id, batch)
                }
                Retry::Fallback(fault) => {
                    if let Some(notice) = self.fall_back(&fault) {
                        batch.push(Dispatch::Notice(notice));
                    }
                }
            }
        }
    }

    /// Counts a fault message and takes it (a retried message is counted once, here).
    fn take_fault_message(
        &self,
        address: usize,
        kind: FaultKind,
        write: bool,
        thread_id: i32,
        batch: &mut Vec<Dispatch>,
    ) {
        let counter = match kind {
            FaultKind::Missing => &self.counters.faults_missing,
            FaultKind::Minor => &self.counters.faults_minor,
            FaultKind::WriteProtect => &self.counters.faults_wp,
        };
        bump(counter);
        self.counters.latency.fault_seen();
        self.take_fault(address, kind, write, thread_id, batch);
    }

    fn take_fault(&self, address: usize, kind: FaultKind, write: bool, thread_id: i32, batch: &mut Vec<Dispatch>) {
        let registration = self.registration_at(address);
        if let Some((region, end, Some(served))) = &registration {
            let started = Instant::now();
            let offset = (address - region.address()) & !(region.page_size() - 1);
            // Issue 13: a source that answers later (object store) holds the fault in the table.
            if self.serve_later(served, region, offset, end - region.address(), address, kind, write, thread_id) {
                return;
            }
            match self.serve_natively(served, region, offset, end - region.address(), kind) {
                Some(Ok(_)) => return self.counters.latency.record(started.elapsed()),
                Some(Err(Error::Sys { errno: Errno::EAGAIN, .. })) => {
                    // An event is unread: the loop reads it in this drain; retry after.
                    lock(&self.deferred.0).push(Retry::Message { address, kind, write, thread_id });
                    return;
                }
                // The process that owns the memory exited (its hang-up is said on its own), or the
                // fd closed: nobody waits for this fault any more.
                Some(Err(Error::Sys { errno: Errno::ESRCH, .. }) | Err(Error::Closed { .. })) => return,
                // The source could not give its bytes: never a silent zero, never the handler's
                // ordinary fault. The fallback resolves it now and the owner hears why.
                Some(Err(err)) => {
                    return batch.push(self.source_failed(served, region, offset, address, kind, write, thread_id, err))
                }
                // Not served (another kind of fault): the handler, or the fallback, decides.
                None => {}
            }
        }
        let region = registration.map(|(region, _, _)| region);
        let Some(region) = region else {
            let page = crate::region::base_page_size();
            let _ = self.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, address & !(page - 1), page));
            bump(&self.counters.errors);
            batch.push(Dispatch::Notice(Notice {
                kind: NoticeKind::UnknownAddress,
                message: format!(
                    "a {} fault at {address:#x} lies in no registered region: the thread was woken",
                    kind.name()
                ),
                fault: None,
                cause: None,
            }));
            return;
        };
        let offset = (address - region.address()) & !(region.page_size() - 1);
        let page = region.address() + offset;
        let fault = Fault {
            id: self.next_fault_id.fetch_add(1, Ordering::Relaxed),
            region,
            offset,
            address,
            kind,
            write,
            thread_id: thread_id as u32,
        };
        let self_fault = thread_id != 0 && thread_id == self.handler_thread.load(Ordering::Acquire);
        {
            let mut dispatcher = lock(&self.dispatcher);
            if dispatcher.faults.mark_duplicate(page) {
                bump(&self.counters.duplicates);
                if !self_fault {
                    return;
                }
            }
            if !self_fault {
                dispatcher.faults.insert(fault.clone(), page, self.timeout.map(|t| Instant::now() + t));
            }
        }
        if self_fault {
            // The handler's thread is asleep in this fault: its handler can never run. Resolve it here.
            bump(&self.counters.self_faults);
            bump(&self.counters.errors);
            let failed = self.fall_back(&fault);
            batch.push(Dispatch::Notice(failed.unwrap_or_else(|| Notice {
                kind: NoticeKind::SelfFault,
                message: format!(
                    "the handler's own thread (tid {thread_id}) touched registered memory at offset {} of region {}: \
                     a handler cannot serve its own thread, so the fault was resolved by the fallback. \
                     Serve this thread's faults with handleInWorker(), or touch the memory from another thread",
                    fault.offset,
                    fault.region.id()
                ),
                fault: Some(fault),
                cause: None,
            })));
            return;
        }
        batch.push(Dispatch::Fault(fault));
    }

    /// Resolves by the fallback a fault whose native source failed, and says so.
    #[allow(clippy::too_many_arguments)]
    fn source_failed(
        &self,
        served: &Served,
        region: &Arc<Region>,
        offset: usize,
        address: usize,
        kind: FaultKind,
        write: bool,
        thread_id: i32,
        err: Error,
    ) -> Dispatch {
        let fault = Fault {
            id: self.next_fault_id.fetch_add(1, Ordering::Relaxed),
            region: region.clone(),
            offset,
            address,
            kind,
            write,
            thread_id: thread_id as u32,
        };
        bump(&self.counters.errors);
        let failed = self.fall_back(&fault);
        Dispatch::Notice(failed.unwrap_or_else(|| source_failed_notice(fault, &served.source().describe(), err)))
    }

    /// The earliest deadline of a fault in flight.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        lock(&self.dispatcher).faults.next_deadline()
    }

    /// Resolves every fault past its deadline by the fallback; returns their notices.
    pub(crate) fn expire(&self, now: Instant, batch: &mut Vec<Dispatch>) {
        let expired = lock(&self.dispatcher).faults.take_expired(now);
        let limit = self.timeout.unwrap_or_default();
        for entry in expired {
            if matches!(entry.state, FaultState::Waiting) {
                bump(&self.counters.timeouts);
            }
            batch.push(self.abandon(entry, |fault| Notice {
                kind: NoticeKind::Timeout,
                message: format!(
                    "{} did not resolve a {} fault at offset {} of region {} within {} ms: it was resolved by the fallback",
                    self.resolver_of(fault),
                    fault.kind.name(),
                    fault.offset,
                    fault.region.id(),
                    limit.as_millis()
                ),
                fault: Some(fault.clone()),
                cause: None,
            }));
        }
    }

    /// When the first fault came, and native sources' fault latency.
    pub fn latency(&self) -> crate::stats::LatencyReport {
        self.counters.latency.report()
    }

    pub fn stats(&self) -> Snapshot {
        let dispatcher = lock(&self.dispatcher);
        let queued = dispatcher.queued.iter().filter(|d| matches!(d, Dispatch::Fault(_))).count();
        self.counters.snapshot(dispatcher.faults.len() as u64, queued as u64)
    }

    /// Drops this fd's registrations of a closing region; the kernel wakes their waiters.
    fn release_region(&self, region: &Arc<Region>) {
        let mut registrations = self.registrations.write().unwrap_or_else(|p| p.into_inner());
        for (start, end) in registrations.remove_region(region) {
            let _ = self.with_fd("UFFDIO_UNREGISTER", |uffd| ioctl::unregister(uffd, start, end - start));
        }
        drop(registrations);
        self.forget_faults(|fault| Arc::ptr_eq(&fault.region, region));
    }

    /// With EVENT_FORK, a fork of this process sleeps until its event is read, holding glibc's
    /// malloc locks: if the loop stopped reading then, both would wait forever. So before the loop
    /// stops, every range is unregistered (no fork can start an event for this fd after that) and
    /// the loop reads on until the kernel has no event in progress (`mmap_changing`), or 2 s pass.
    fn settle_pending_forks(&self) {
        if self.features & uapi::FEATURE_EVENT_FORK == 0 || self.on_loop_thread() || lock(&self.thread).is_none() {
            return;
        }
        let ranges = self.registrations.read().unwrap_or_else(|p| p.into_inner()).ranges();
        for (start, end, _) in ranges {
            let _ = self.with_fd("UFFDIO_UNREGISTER", |uffd| ioctl::unregister(uffd, start, end - start));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.with_fd("UFFDIO_ZEROPAGE", ioctl::event_in_progress).unwrap_or(false) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Stops the loop, closes the fd (the kernel wakes every waiting thread and drops every
    /// registration) and forgets all faults. Idempotent.
    pub fn close(&self) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.settle_pending_forks();
        self.stopping.store(true, Ordering::Release);
        if let Some(stop) = lock(&self.stop).as_ref() {
            let _ = stop.write(1);
        }
        self.wake_parked_loop();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
        drop(lock(&self.stop).take());
        drop(lock(&self.poke).take());
        drop(lock(&self.peer).take());
        drop(self.fd.write().unwrap_or_else(|p| p.into_inner()).take());
        self.registrations.write().unwrap_or_else(|p| p.into_inner()).clear();
        let sink = {
            let mut dispatcher = lock(&self.dispatcher);
            dispatcher.faults.clear();
            // Faults are gone with the fd; events and notices wait for a handler to hear them.
            dispatcher.queued.retain(|item| !matches!(item, Dispatch::Fault(_)));
            (dispatcher.sink.take(), dispatcher.owner.take())
        };
        drop(sink);
        UFFDS.remove(self.id);
    }
}

// ---- Faults a source answers later (object_source/pending.rs, issue 13) ----
impl Userfaultfd {
    /// Puts a fault that a source answers later in the fault table, with its deadline, so that
    /// `timeoutMs` bounds it as it bounds a handler. `None` if its page is in flight already: the
    /// fault joins that one (counted as a duplicate, woken with it).
    pub(crate) fn hold_fault(
        &self,
        region: &Arc<Region>,
        offset: usize,
        address: usize,
        kind: FaultKind,
        write: bool,
        thread_id: i32,
    ) -> Option<Fault> {
        let page = region.address() + offset;
        let mut dispatcher = lock(&self.dispatcher);
        if dispatcher.faults.mark_duplicate(page) {
            bump(&self.counters.duplicates);
            return None;
        }
        let id = self.next_fault_id.fetch_add(1, Ordering::Relaxed);
        let fault = Fault { id, region: region.clone(), offset, address, kind, write, thread_id: thread_id as u32 };
        dispatcher.faults.insert(fault.clone(), page, self.timeout.map(|t| Instant::now() + t));
        Some(fault)
    }

    /// A held fault whose source failed: the fallback resolves it and a `SourceFailed` notice says
    /// why (`what` names the source). Nothing if the fault was settled meanwhile.
    pub(crate) fn fail_held(&self, id: u64, what: &str, err: Error) {
        let Some(entry) = lock(&self.dispatcher).faults.take(id) else {
            return;
        };
        bump(&self.counters.errors);
        let fault = entry.fault;
        let notice = self.fall_back(&fault).unwrap_or_else(|| source_failed_notice(fault, what, err));
        self.hand_over(vec![Dispatch::Notice(notice)]);
    }

    /// Who had to resolve a fault, for a timeout's message: a held fault is its object source's.
    fn resolver_of(&self, fault: &Fault) -> String {
        match self.registration_at(fault.region.address() + fault.offset) {
            Some((_, _, Some(served))) if served.source().object().is_some() => served.source().describe(),
            _ => "the handler".into(),
        }
    }
}
// ---- end of faults a source answers later ----

impl Drop for Userfaultfd {
    fn drop(&mut self) {
        self.close();
    }
}

/// Called by `Region::close`: every userfaultfd drops the region's registrations.
pub(crate) fn release_region_everywhere(region: &Arc<Region>) {
    for uffd in UFFDS.all() {
        uffd.release_region(region);
    }
}

/// The notice of a fault whose source (`what`) failed with `err`, resolved by the fallback.
fn source_failed_notice(fault: Fault, what: &str, err: Error) -> Notice {
    Notice {
        kind: NoticeKind::SourceFailed,
        message: format!(
            "{what} could not serve a {} fault at offset {} of region {} ({err}): it was resolved by the fallback",
            fault.kind.name(),
            fault.offset,
            fault.region.id()
        ),
        fault: Some(fault),
        cause: Some(err),
    }
}

/// Moves the notices whose kind `which` picks out of a batch.
fn take_notices(batch: &mut Vec<Dispatch>, which: impl Fn(NoticeKind) -> bool) -> Vec<Dispatch> {
    let (taken, kept): (Vec<Dispatch>, Vec<Dispatch>) =
        std::mem::take(batch).into_iter().partition(|item| matches!(item, Dispatch::Notice(n) if which(n.kind)));
    *batch = kept;
    taken
}

/// The notice of a fault that no handler will serve: `now` if it was resolved by the fallback at once.
fn no_handler_notice(fault: &Fault, now: bool) -> Notice {
    let what = if now {
        "it was taken by the thread that would have to install the handler, so it was resolved by the fallback at once"
    } else {
        "it waits for a handler until timeoutMs, then gets the fallback"
    };
    Notice {
        kind: if now { NoticeKind::NoHandlerFellBack } else { NoticeKind::NoHandler },
        message: format!(
            "a {} fault at offset {} of region {} arrived with no handler installed and no native source: {what}. \
             Call uffd.handle(fn) (serves other threads) or await uffd.handleInWorker(module) (serves this thread too) \
             before touching registered memory, or register the range with a source",
            fault.kind.name(),
            fault.offset,
            fault.region.id()
        ),
        fault: Some(fault.clone()),
        cause: None,
    }
}
