//! Who reads the fd: the loop threads, or a handler that reads it itself (its generation), and
//! what that handler read but could not take yet. A handler that reads saves a thread hand-off per
//! fault; the loop threads park meanwhile (see `direct.rs`).

use crate::fault::Dispatch;
use crate::resolve::EventEpoch;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct State {
    /// The generation of the handler that reads (None: the loop threads read).
    pub puller: Option<u64>,
    /// Loop threads parked while a handler reads.
    pub parked: usize,
}

#[derive(Default)]
pub struct Pulling {
    state: Mutex<State>,
    pub changed: Condvar,
    /// `state.puller` (0: none), read without the lock.
    puller: AtomicU64,
    /// Whether the puller is inside `pull`, and when (ms since `ORIGIN`) it last left it: a puller
    /// out of `pull` for long while messages wait is stuck (in a fault of its own, or in a handler
    /// that blocks), and a parked loop thread then takes a turn for it.
    in_pull: AtomicBool,
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

    /// Makes `generation` the puller (the caller holds the lock).
    pub fn set(&self, state: &mut State, generation: Option<u64>) {
        state.puller = generation;
        self.puller.store(generation.unwrap_or(0), Ordering::Release);
        if generation.is_some() {
            self.left_pull_ms.store(now_ms(), Ordering::Release);
        }
    }

    /// Hands reading back to the loop threads if `generation` reads.
    pub fn stop(&self, generation: u64, epoch: &EventEpoch) {
        let mut state = self.lock();
        if state.puller == Some(generation) {
            self.set(&mut state, None);
            // No thread reads alone any more.
            epoch.set_reader_thread(0);
            self.changed.notify_all();
        }
    }

    pub fn is_puller(&self, generation: u64) -> bool {
        self.puller.load(Ordering::Acquire) == generation
    }

    /// Whether some handler reads the fd instead of the loop threads.
    pub fn pulled(&self) -> bool {
        self.puller.load(Ordering::Acquire) != 0
    }

    pub fn enter_pull(&self) {
        self.in_pull.store(true, Ordering::Release);
    }

    pub fn leave_pull(&self) {
        self.left_pull_ms.store(now_ms(), Ordering::Release);
        self.in_pull.store(false, Ordering::Release);
    }

    /// Whether the puller has been out of `pull` for long.
    pub fn stuck(&self) -> bool {
        !self.in_pull.load(Ordering::Acquire)
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
