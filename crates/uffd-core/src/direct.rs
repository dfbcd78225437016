//! Direct reading: a handler thread that reads the userfaultfd itself, in place of the fault loop
//! thread. A fault then costs one thread hand-off (faulting thread -> handler thread) instead of
//! two (-> loop thread -> handler thread), like a C handler's. The loop thread steps aside while a
//! handler reads directly and takes over again when it stops (or its environment ends).
//!
//! The handler thread calls `pull` in a loop; each call is one turn of the fault loop (wait, drain,
//! events, retries, timeouts) that returns its batch instead of handing it to a sink.

use crate::error::{Error, Result};
use crate::fault::Dispatch;
use crate::fault_loop::{self, Source, PEER, STOP, UFFD};
use crate::uapi;
use crate::userfaultfd::Userfaultfd;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};
use userfaultfd::EventBuffer;

/// Who reads the fd: the loop thread, or the handler of a generation.
#[derive(Default)]
pub(crate) struct Reader {
    state: Mutex<ReaderState>,
    changed: Condvar,
    /// `state.puller` (0: none), read without the lock by resolves on the reading thread.
    puller: AtomicU64,
    /// Whether the reader is inside `pull`, and when (ms since `ORIGIN`) it last left it: a reader
    /// out of `pull` for long while messages wait is stuck (in a fault of its own, or in a handler
    /// that blocks), and the parked loop thread then takes a turn for it.
    in_pull: AtomicBool,
    left_pull_ms: AtomicU64,
}

/// How often the parked loop thread looks whether the reader is stuck, and how long out of `pull`
/// counts as stuck (a handler takes microseconds per fault).
const STUCK_CHECK: Duration = Duration::from_millis(10);
const STUCK_AFTER_MS: u64 = 20;

static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

thread_local! {
    /// Set while this thread takes a turn of reading (the loop's, a reader's `pull`, a rescue):
    /// a resolve then must not wait for events, which only this turn would read.
    static IN_TURN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as taking a turn until dropped.
pub(crate) struct Turn(bool);

impl Turn {
    pub(crate) fn begin() -> Turn {
        Turn(IN_TURN.with(|t| t.replace(true)))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        IN_TURN.with(|t| t.set(self.0));
    }
}

/// Whether this thread is taking a turn of reading.
pub(crate) fn in_turn() -> bool {
    IN_TURN.with(|t| t.get())
}

#[derive(Default)]
struct ReaderState {
    puller: Option<u64>,
    loop_parked: bool,
}

/// How long `start_pulling` waits for the loop thread to step aside.
const HANDOVER_AT_MOST: Duration = Duration::from_secs(5);

/// A handler thread's means to read the fd: its own epoll and message buffer.
pub struct Puller {
    generation: u64,
    epoll: Epoll,
    buffer: Source<'static>,
    ready: [EpollEvent; 3],
}

impl Puller {
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl Userfaultfd {
    /// Makes the handler of `generation` (installed with `set_handler` on this thread) the reader of
    /// the fd: the loop thread steps aside until `stop_pulling`, or until the handler is removed.
    pub fn start_pulling(&self, generation: u64) -> Result<Puller> {
        const OP: &str = "handle";
        if self.features() & uapi::FEATURE_EVENT_FORK != 0 {
            // Fork events come through the pump thread (pump.rs), which only the loop drains.
            return Err(Error::unsupported(OP, "a handler cannot read the fd itself with EVENT_FORK"));
        }
        if !self.is_current_handler(generation) {
            return Err(Error::invalid(OP, "only the installed handler can read the fd"));
        }
        let epoll = self.puller_epoll()?;
        let mut state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.puller.is_some_and(|g| g != generation) {
            return Err(Error::invalid(OP, "another handler reads this fd"));
        }
        state.puller = Some(generation);
        self.reader.puller.store(generation, Ordering::Release);
        self.reader.left_pull_ms.store(now_ms(), Ordering::Release);
        self.poke_loop();
        let deadline = Instant::now() + HANDOVER_AT_MOST;
        while !state.loop_parked && !self.is_closed() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.puller = None;
                self.reader.puller.store(0, Ordering::Release);
                return Err(Error::sys(OP, Errno::ETIMEDOUT, "the fault loop did not step aside"));
            }
            state = self.reader.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(state);
        self.epoch.mark_loop_thread();
        Ok(Puller {
            generation,
            epoll,
            buffer: Source::Fd(EventBuffer::new(fault_loop::MESSAGES_PER_READ)),
            ready: [EpollEvent::empty(); 3],
        })
    }

    /// Hands reading back to the loop thread (a no-op unless `generation` reads).
    pub fn stop_pulling(&self, generation: u64) {
        let mut state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.puller == Some(generation) {
            state.puller = None;
            self.reader.puller.store(0, Ordering::Release);
            // No thread reads until the loop thread marks itself again on waking.
            self.epoch.clear_loop_thread();
            self.reader.changed.notify_all();
        }
    }

    /// One turn of the fault loop on the handler's thread: waits up to `wait` for messages and
    /// returns the batch (faults are marked as handed to the puller's handler). EBADF once the fd is
    /// closed or the puller no longer reads.
    pub fn pull(&self, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
        self.reader.in_pull.store(true, Ordering::Release);
        let result = self.pull_turn(puller, wait);
        self.reader.left_pull_ms.store(now_ms(), Ordering::Release);
        self.reader.in_pull.store(false, Ordering::Release);
        result
    }

    fn pull_turn(&self, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
        const OP: &str = "read";
        if self.is_closed() || !self.is_puller(puller.generation) {
            return Err(Error::Closed { op: OP, what: "userfaultfd" });
        }
        let wait = if self.reader_backlog().is_empty() { wait } else { Duration::ZERO };
        let wait = match self.next_deadline() {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        };
        let ms = wait.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::ZERO);
        let count = match fault_loop::spin_then_wait(self, &puller.epoll, &mut puller.ready, timeout) {
            Ok(count) => count,
            Err(Errno::EINTR) => 0,
            Err(errno) => return Err(Error::sys("epoll_wait", errno, "")),
        };
        let mut hung_up = false;
        // Read only while still the reader: the loop thread takes over only once this lock is free,
        // so the two never read at once, and no fault is marked for a handler already removed.
        let state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.puller != Some(puller.generation) || self.is_closed() {
            return Err(Error::Closed { op: OP, what: "userfaultfd" });
        }
        let _turn = Turn::begin();
        let mut batch = self.take_backlog();
        for event in &puller.ready[..count] {
            match event.data() {
                UFFD if event.events().intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) => {
                    self.defer_to_next_pull(batch);
                    return Err(Error::sys(OP, Errno::EIO, "the userfaultfd reported POLLERR"));
                }
                UFFD => fault_loop::drain(self, &mut puller.buffer, &mut batch),
                PEER => {
                    fault_loop::drain(self, &mut puller.buffer, &mut batch);
                    hung_up = true;
                }
                _ => {}
            }
        }
        fault_loop::end_turn(self, &mut batch);
        self.mark_delivered(puller.generation, &batch);
        drop(state);
        if hung_up {
            // Said through hand_over, which tells the owner (a reading worker's owner must close
            // too, or what keeps its process alive for the peer never lets go).
            self.hand_over(vec![fault_loop::peer_gone()]);
            self.close();
        }
        Ok(batch)
    }

    /// Called by a resolve on the reading handler's thread that the kernel refused for unread
    /// events: reads what is pending (the faults among it wait for the next `pull`).
    /// Returns whether it read anything.
    pub(crate) fn read_pending_for_puller(&self) -> bool {
        let _turn = Turn::begin();
        let mut batch = Vec::new();
        fault_loop::drain(self, &mut Source::Fd(EventBuffer::new(fault_loop::MESSAGES_PER_READ)), &mut batch);
        if batch.iter().any(|item| matches!(item, Dispatch::Event(_))) {
            self.events_read();
        }
        let read = !batch.is_empty();
        self.reader_backlog().extend(batch);
        read
    }

    /// Items a reading handler took but could not hold this time: the next `pull` returns them.
    pub fn defer_to_next_pull(&self, items: Vec<Dispatch>) {
        let mut backlog = self.reader_backlog();
        let later = std::mem::replace(&mut *backlog, items);
        backlog.extend(later);
    }

    pub(crate) fn is_puller(&self, generation: u64) -> bool {
        self.reader.puller.load(Ordering::Acquire) == generation
    }

    /// Whether some handler reads the fd instead of the loop thread.
    pub(crate) fn pulled(&self) -> bool {
        self.reader.puller.load(Ordering::Acquire) != 0
    }

    /// On the loop thread: steps aside while a handler reads, until it stops or the fd closes.
    /// While parked it takes a turn for a reader that is stuck out of `pull` with messages waiting
    /// (its own thread faulted, or its handler blocks), and when the reader stops it hands on what
    /// the reader had read but not taken.
    pub(crate) fn park_loop_while_pulled(&self) {
        let mut state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.puller.is_none() {
            return;
        }
        state.loop_parked = true;
        self.reader.changed.notify_all();
        let mut rescue = Source::Fd(EventBuffer::new(fault_loop::MESSAGES_PER_READ));
        while state.puller.is_some() && !self.is_closed() {
            // Wake for the next deadline too: a reader stuck in its handler does not expire the
            // fault it holds, so the loop thread does.
            let wait = match self.next_deadline() {
                Some(deadline) => {
                    deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), STUCK_CHECK)
                }
                None => STUCK_CHECK,
            };
            state = self.reader.changed.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0;
            if state.puller.is_none() || self.is_closed() || !self.reader_stuck() {
                continue;
            }
            let overdue = self.next_deadline().is_some_and(|deadline| deadline <= Instant::now());
            if !overdue && !self.messages_waiting() {
                continue;
            }
            let batch = {
                let _turn = Turn::begin();
                let mut batch = self.take_backlog();
                fault_loop::drain(self, &mut rescue, &mut batch);
                fault_loop::end_turn(self, &mut batch);
                batch
            };
            drop(state);
            if !batch.is_empty() {
                self.hand_over(batch);
            }
            state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        }
        state.loop_parked = false;
        drop(state);
        self.epoch.mark_loop_thread();
        let left = self.take_backlog();
        if !left.is_empty() {
            self.hand_over(left);
        }
    }

    fn reader_stuck(&self) -> bool {
        !self.reader.in_pull.load(Ordering::Acquire)
            && now_ms().saturating_sub(self.reader.left_pull_ms.load(Ordering::Acquire)) >= STUCK_AFTER_MS
    }

    /// Wakes a loop thread parked by `park_loop_while_pulled` (close calls it).
    pub(crate) fn wake_parked_loop(&self) {
        let _state = self.reader.state.lock().unwrap_or_else(|p| p.into_inner());
        self.reader.changed.notify_all();
    }

    fn take_backlog(&self) -> Vec<Dispatch> {
        std::mem::take(&mut *self.reader_backlog())
    }

    fn puller_epoll(&self) -> Result<Epoll> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll_create", e, ""))?;
        let add = |fd: std::os::fd::BorrowedFd<'_>, flags, token| {
            epoll.add(fd, EpollEvent::new(flags, token)).map_err(|e| Error::sys("epoll_ctl", e, ""))
        };
        self.with_fd("epoll_ctl", |uffd| {
            use std::os::fd::{AsRawFd, BorrowedFd};
            // SAFETY: the fd stays open while `with_fd` holds its read lock, and epoll keeps its
            // own reference to the file once added.
            add(unsafe { BorrowedFd::borrow_raw(uffd.as_raw_fd()) }, EpollFlags::EPOLLIN, UFFD)
        })?;
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            use std::os::fd::AsFd;
            add(stop.as_fd(), EpollFlags::EPOLLIN, STOP)?;
        }
        if let Some(peer) = self.peer.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            use std::os::fd::AsFd;
            add(peer.as_fd(), EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP, PEER)?;
        }
        Ok(epoll)
    }
}
