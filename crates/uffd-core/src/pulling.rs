//! Who reads the fd: the loop threads, or handlers that read it themselves (pullers, by their
//! generation), and what a puller read but could not take yet. A handler that reads saves a thread
//! hand-off per fault; the loop threads park meanwhile (see `direct.rs`).

use crate::fault::Dispatch;
use crate::thread_set::ThreadSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct State {
    /// The generations of the handlers that read, and their threads (none: the loop threads read).
    pub pullers: Vec<(u64, i32)>,
    /// Loop threads parked while handlers read.
    pub parked: usize,
}

impl State {
    pub fn reads(&self, generation: u64) -> bool {
        self.pullers.iter().any(|(g, _)| *g == generation)
    }
}

#[derive(Default)]
pub struct Pulling {
    state: Mutex<State>,
    pub changed: Condvar,
    /// How many pullers there are, read without the lock.
    count: AtomicUsize,
    /// The pullers' threads, asked by every resolve (one that may have to read pending events itself).
    threads: ThreadSet,
    /// Pullers inside `pull`, and when (ms since `ORIGIN`) one last left it: pullers out of `pull`
    /// for long while messages wait are stuck (in a fault of their own, or in a handler that
    /// blocks), and a parked loop thread then takes a turn for them.
    in_pull: AtomicUsize,
    left_pull_ms: AtomicU64,
    /// Items a puller read but could not hold: its next `pull` returns them first.
    backlog: Mutex<Vec<Dispatch>>,
}

/// How long out of `pull` counts as stuck (a handler takes microseconds per fault).
const STUCK_AFTER_MS: u64 = 20;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

fn now_ms() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Pulling {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits on `changed` for up to `wait`.
    pub fn wait<'a>(&self, state: MutexGuard<'a, State>, wait: Duration) -> MutexGuard<'a, State> {
        self.changed.wait_timeout(state, wait).unwrap_or_else(|p| p.into_inner()).0
    }

    /// Notes the pullers (the caller holds the lock).
    fn noted(&self, state: &State) {
        self.count.store(state.pullers.len(), Ordering::Release);
        self.threads.set(state.pullers.iter().map(|(_, t)| *t).collect());
    }

    /// Makes `generation`, on thread `thread_id`, a puller (the caller holds the lock).
    pub fn add(&self, state: &mut State, generation: u64, thread_id: i32) {
        if !state.reads(generation) {
            state.pullers.push((generation, thread_id));
        }
        self.left_pull_ms.store(now_ms(), Ordering::Release);
        self.noted(state);
    }

    /// Ends the reading of `generation` (the caller holds the lock).
    pub fn remove(&self, state: &mut State, generation: u64) {
        state.pullers.retain(|(g, _)| *g != generation);
        self.noted(state);
    }

    /// Hands reading back to the loop threads (once no other handler reads) if `generation` reads.
    pub fn stop(&self, generation: u64) {
        let mut state = self.lock();
        if state.reads(generation) {
            self.remove(&mut state, generation);
            self.changed.notify_all();
        }
    }

    /// Whether some handler reads the fd instead of the loop threads.
    pub fn pulled(&self) -> bool {
        self.count.load(Ordering::Acquire) != 0
    }

    /// Whether `thread_id` runs a puller.
    pub fn is_puller_thread(&self, thread_id: i32) -> bool {
        self.threads.contains(thread_id)
    }

    pub fn enter_pull(&self) {
        self.in_pull.fetch_add(1, Ordering::AcqRel);
    }

    pub fn leave_pull(&self) {
        self.left_pull_ms.store(now_ms(), Ordering::Release);
        self.in_pull.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every puller has been out of `pull` for long.
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

    /// Puts items before the backlog: the next `pull` returns them first.
    pub fn defer(&self, items: Vec<Dispatch>) {
        let mut backlog = self.backlog();
        let later = std::mem::replace(&mut *backlog, items);
        backlog.extend(later);
    }

    /// Wakes parked loop threads (close calls it).
    pub fn wake_parked(&self) {
        let _state = self.lock();
        self.changed.notify_all();
    }
}
