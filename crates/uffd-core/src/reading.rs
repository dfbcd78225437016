//! Who reads the fd, and what its readers share. The ways of reading are in `readers/`; they
//! differ only in when they take a turn, and end every turn with the same step
//! (`readers::turn::after_turn`).
//!
//! Glossary (one word per role):
//! - **reader**: any thread that reads the fd and takes turns; its own means (poller, feed,
//!   scratch) are its `Reader` (`readers/turn.rs`).
//! - **message**: one `struct uffd_msg`; **unread** ones the kernel holds until a reader reads
//!   them (while an event is unread the kernel refuses resolves with EAGAIN).
//! - **feed**: where a reader takes its messages from: the fd, or the pump's ring.
//! - **turn**: one wait, then what was read taken in (`readers/turn.rs`).
//! - **loop thread**: a reader of the engine's own, turning until the fd closes
//!   (`readers/loop_thread.rs`).
//! - **puller**: a handler's thread that reads the fd itself, in place of the loop threads; it
//!   takes a turn when its handler asks (a *pull*, `readers/puller.rs`).
//! - **parked**: a loop thread that steps aside while a puller reads.
//! - **stuck**: a puller out of its pull for long while messages wait.
//! - **rescue**: the turn a parked loop thread takes for a stuck puller.
//! - **pump**: the thread that copies messages into a ring without allocating, for EVENT_FORK
//!   (`readers/pump.rs`); its loop thread takes its turns from the ring.
//! - **retry**: what the kernel refused for an unread event during a turn (EAGAIN): a reader never
//!   waits for itself, it retries at the end of its turn, once the events are read.
//! - **backlog**: what a puller read but could not take yet: its next pull returns it first.
//! - **stop** and **poke**: the wakers that end every reader, and that tell the loop threads to
//!   look at who reads.
//! - **peer**: the process whose memory is served; its hang-up closes the fd.

use crate::error::Result;
use crate::fault::{Dispatch, Fault, FaultKind};
use crate::sys::poller::Waker;
use crate::thread_set::ThreadSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a fault message says: where, what kind, written or read, by which thread.
#[derive(Clone, Copy)]
pub struct Faulted {
    pub address: usize,
    pub kind: FaultKind,
    pub write: bool,
    pub thread_id: i32,
}

/// What the kernel refused for an unread event during a turn, retried at the end of a turn
/// (whichever reader's: a reader that stops hands its retries on).
pub enum Retry {
    /// A fault message a native source could not resolve yet: taken again from the top.
    Message(Faulted),
    /// A fault whose fallback resolution was refused.
    Fallback(Fault),
}

/// The pullers, and the loop threads parked meanwhile (under one lock).
#[derive(Default)]
pub struct Pullers {
    /// The generations of the handlers that read, and their threads (none: the loop threads read).
    reading: Vec<(u64, i32)>,
    /// Loop threads parked while handlers read.
    parked: usize,
}

impl Pullers {
    pub fn parked(&self) -> usize {
        self.parked
    }

    pub fn reads(&self, generation: u64) -> bool {
        self.reading.iter().any(|(g, _)| *g == generation)
    }

    pub fn is_empty(&self) -> bool {
        self.reading.is_empty()
    }
}

/// How long out of a pull counts as stuck (a handler takes microseconds per fault).
const STUCK_AFTER_MS: u64 = 20;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What the readers of one fd share.
pub struct Reading {
    /// Written by `close()`: every reader stops.
    stop: Waker,
    /// Tells the loop threads to look at who reads the fd.
    poke: Waker,
    /// The socket of the process whose memory this serves, watched for its hang-up.
    peer: Mutex<Option<OwnedFd>>,
    /// Whether a reader has said that the peer hung up (each reader sees the hang-up).
    peer_gone_said: AtomicBool,
    /// The loop threads (and the pump).
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Held while a reader reads and takes messages: events are applied and faults admitted in
    /// the kernel's order, whichever reader read them.
    read: Mutex<()>,
    /// What any reader retries at the end of its next turn, and whether there is any (asked by
    /// every turn without taking the lock).
    retries: Mutex<Vec<Retry>>,
    retries_waiting: AtomicBool,
    pullers: Mutex<Pullers>,
    /// Told when the pullers or the parked loop threads change.
    changed: Condvar,
    /// How many pullers there are, read without the lock.
    puller_count: AtomicUsize,
    /// The pullers' threads, asked by every resolve (one that may have to read unread events itself).
    puller_threads: ThreadSet,
    /// Pullers inside a pull, and when (ms since `ORIGIN`) one last left it: see `stuck`.
    in_pull: AtomicUsize,
    left_pull_ms: AtomicU64,
    backlog: Mutex<Vec<Dispatch>>,
}

impl Reading {
    pub fn new(peer: Option<OwnedFd>) -> Result<Reading> {
        Ok(Reading {
            stop: Waker::new()?,
            poke: Waker::new()?,
            peer: Mutex::new(peer),
            peer_gone_said: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            read: Mutex::new(()),
            retries: Mutex::new(Vec::new()),
            retries_waiting: AtomicBool::new(false),
            pullers: Mutex::new(Pullers::default()),
            changed: Condvar::new(),
            puller_count: AtomicUsize::new(0),
            puller_threads: ThreadSet::default(),
            in_pull: AtomicUsize::new(0),
            left_pull_ms: AtomicU64::new(0),
            backlog: Mutex::new(Vec::new()),
        })
    }

    pub fn stop_waker(&self) -> &Waker {
        &self.stop
    }

    pub fn poke_waker(&self) -> &Waker {
        &self.poke
    }

    pub fn peer(&self) -> MutexGuard<'_, Option<OwnedFd>> {
        self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True for the first reader that saw the peer hang up: it alone says so.
    pub fn first_to_see_hang_up(&self) -> bool {
        !self.peer_gone_said.swap(true, Ordering::AcqRel)
    }

    /// Keeps a reader thread, joined by `stop`.
    pub fn add_thread(&self, thread: JoinHandle<()>) {
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(thread);
    }

    pub fn on_reader_thread(&self) -> bool {
        let current = std::thread::current().id();
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|t| t.thread().id() == current)
    }

    /// Stops every reader and joins the loop threads (but the calling one), then lets the
    /// wakers and the peer go. The fd is marked closed first, by the caller.
    pub fn stop(&self) {
        self.stop.wake();
        self.wake_parked();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let current = std::thread::current().id();
        for thread in threads {
            if thread.thread().id() != current {
                let _ = thread.join();
            }
        }
        self.stop.close();
        self.poke.close();
        drop(self.peer().take());
    }

    pub fn read_lock(&self) -> MutexGuard<'_, ()> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn retries(&self) -> MutexGuard<'_, Vec<Retry>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what waits to be retried.
    pub fn take_retries(&self) -> Vec<Retry> {
        if !self.has_retries() {
            return Vec::new();
        }
        let mut retries = self.retries();
        self.retries_waiting.store(false, Ordering::Release);
        std::mem::take(&mut *retries)
    }

    /// Leaves refused work for the next turn of any reader.
    pub fn defer_retries(&self, retries: &mut Vec<Retry>) {
        if !retries.is_empty() {
            self.retries().append(retries);
            self.retries_waiting.store(true, Ordering::Release);
        }
    }

    pub fn has_retries(&self) -> bool {
        self.retries_waiting.load(Ordering::Acquire)
    }

    pub fn lock_pullers(&self) -> MutexGuard<'_, Pullers> {
        self.pullers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the pullers or the parked loop threads to change, for up to `wait`.
    pub fn wait_pullers<'a>(&self, pullers: MutexGuard<'a, Pullers>, wait: Duration) -> MutexGuard<'a, Pullers> {
        self.changed.wait_timeout(pullers, wait).unwrap_or_else(|p| p.into_inner()).0
    }

    /// A loop thread parks (the caller holds the lock).
    pub fn park(&self, pullers: &mut Pullers) {
        pullers.parked += 1;
        self.changed.notify_all();
    }

    /// A parked loop thread reads again (the caller holds the lock).
    pub fn unpark(&self, pullers: &mut Pullers) {
        pullers.parked -= 1;
    }

    /// Notes the pullers (the caller holds the lock).
    fn noted(&self, pullers: &Pullers) {
        self.puller_count.store(pullers.reading.len(), Ordering::Release);
        self.puller_threads.set(pullers.reading.iter().map(|(_, t)| *t).collect());
    }

    /// Makes `generation`, on thread `thread_id`, a puller (the caller holds the lock).
    pub fn add_puller(&self, pullers: &mut Pullers, generation: u64, thread_id: i32) {
        if !pullers.reads(generation) {
            pullers.reading.push((generation, thread_id));
        }
        self.left_pull_ms.store(now_ms(), Ordering::Release);
        self.noted(pullers);
    }

    /// Ends the reading of `generation` (the caller holds the lock).
    pub fn remove_puller(&self, pullers: &mut Pullers, generation: u64) {
        pullers.reading.retain(|(g, _)| *g != generation);
        self.noted(pullers);
    }

    /// Hands reading back to the loop threads (once no other handler reads) if `generation` reads.
    pub fn stop_pulling(&self, generation: u64) {
        let mut pullers = self.lock_pullers();
        if pullers.reads(generation) {
            self.remove_puller(&mut pullers, generation);
            self.changed.notify_all();
        }
    }

    /// Whether some handler reads the fd instead of the loop threads.
    pub fn pulled(&self) -> bool {
        self.puller_count.load(Ordering::Acquire) != 0
    }

    /// Whether `thread_id` runs a puller.
    pub fn is_puller_thread(&self, thread_id: i32) -> bool {
        self.puller_threads.contains(thread_id)
    }

    pub fn enter_pull(&self) {
        self.in_pull.fetch_add(1, Ordering::AcqRel);
    }

    pub fn leave_pull(&self) {
        self.left_pull_ms.store(now_ms(), Ordering::Release);
        self.in_pull.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every puller has been out of its pull for long: in a fault of its own, or in a
    /// handler that blocks. A parked loop thread then takes a turn for them (a rescue).
    pub fn stuck(&self) -> bool {
        self.in_pull.load(Ordering::Acquire) == 0
            && now_ms().saturating_sub(self.left_pull_ms.load(Ordering::Acquire)) >= STUCK_AFTER_MS
    }

    pub fn backlog(&self) -> MutexGuard<'_, Vec<Dispatch>> {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn take_backlog(&self) -> Vec<Dispatch> {
        std::mem::take(&mut *self.backlog())
    }

    /// Puts items before the backlog: the next pull returns them first.
    pub fn defer(&self, items: Vec<Dispatch>) {
        let mut backlog = self.backlog();
        let later = std::mem::replace(&mut *backlog, items);
        backlog.extend(later);
    }

    /// Wakes parked loop threads (close calls it).
    fn wake_parked(&self) {
        let _pullers = self.lock_pullers();
        self.changed.notify_all();
    }
}
