//! Direct reading: a handler thread that reads the userfaultfd itself (a *puller*), in place of
//! the loop threads. A fault then costs one thread hand-off (faulting thread -> handler thread)
//! instead of two (-> loop thread -> handler thread), like a C handler's. The loop threads park
//! while a handler reads and take over again when it stops (or its environment ends); a parked
//! loop thread takes a turn for a puller stuck outside `pull` (a *rescue*).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fault::Dispatch;
use crate::reader::{self, Ended, Reader};
use crate::sys::uapi;
use nix::errno::Errno;
use std::time::{Duration, Instant};

/// How often a parked loop thread looks whether the puller is stuck.
const STUCK_CHECK: Duration = Duration::from_millis(10);
/// How long `start` waits for the loop threads to step aside.
const HANDOVER_AT_MOST: Duration = Duration::from_secs(5);

/// A handler thread's means to read the fd: its own reader.
pub struct Puller {
    generation: u64,
    reader: Reader,
}

impl Puller {
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Makes the handler of `generation` (installed on this thread) a reader of the fd, beside the
/// other handlers that read: the loop threads step aside until the last stops, or is removed.
pub fn start(engine: &Engine, generation: u64, thread_id: i32) -> Result<Puller> {
    const OP: &str = "handle";
    if engine.resolver.fd.features() & uapi::FEATURE_EVENT_FORK != 0 {
        // Fork events come through the pump thread (pump.rs), which only a loop thread drains.
        return Err(Error::unsupported(OP, "a handler cannot read the fd itself with EVENT_FORK"));
    }
    if !engine.handlers.is_current(generation) {
        return Err(Error::invalid(OP, "only the installed handler can read the fd"));
    }
    let reader = Reader::new(engine, None, false)?;
    let pulling = &engine.pulling;
    let mut state = pulling.lock();
    pulling.add(&mut state, generation, thread_id);
    engine.poke.wake();
    let deadline = Instant::now() + HANDOVER_AT_MOST;
    while state.parked < engine.options.readers() && !engine.is_closed() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            pulling.remove(&mut state, generation);
            return Err(Error::sys(OP, Errno::ETIMEDOUT, "the fault loop did not step aside"));
        }
        state = pulling.wait(state, left);
    }
    Ok(Puller { generation, reader })
}

/// One turn on the handler's thread: waits up to `wait` for messages and returns the batch (faults
/// are marked as handed to the puller's handler). EBADF once the fd is closed or the puller no
/// longer reads.
pub fn pull(engine: &Engine, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
    engine.pulling.enter_pull();
    let result = pull_turn(engine, puller, wait);
    engine.pulling.leave_pull();
    result
}

fn pull_turn(engine: &Engine, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
    const OP: &str = "read";
    let pulling = &engine.pulling;
    if engine.is_closed() || !pulling.lock().reads(puller.generation) {
        return Err(Error::Closed { op: OP, what: "userfaultfd" });
    }
    let wait = if pulling.backlog().is_empty() { wait } else { Duration::ZERO };
    puller.reader.wait(engine, Some(wait))?;
    // Read only while still the reader: a loop thread takes over (or rescues) only with this lock,
    // so the two never read at once, and no fault is marked for a handler already removed.
    let state = pulling.lock();
    if !state.reads(puller.generation) || engine.is_closed() {
        return Err(Error::Closed { op: OP, what: "userfaultfd" });
    }
    let mut batch = pulling.take_backlog();
    let seen = reader::take(engine, &mut puller.reader, &mut batch);
    if !seen.failed {
        engine.faults().mark_delivered(Some(puller.generation), &batch);
    }
    drop(state);
    match reader::after_turn(engine, &mut puller.reader, &seen) {
        Some(Ended::Failed) => {
            pulling.defer(batch);
            Err(Error::sys(OP, Errno::EIO, "the userfaultfd reported POLLERR"))
        }
        Some(Ended::HungUp) => {
            reader::say_hang_up(engine, Vec::new());
            Ok(batch)
        }
        None => Ok(batch),
    }
}

/// For a resolve on the puller's thread that the kernel refused for unread events: reads what is
/// pending (the faults among it wait for the next `pull`). Returns whether it read anything.
pub fn read_pending(engine: &Engine) -> bool {
    let Ok(mut reader) = Reader::draining() else {
        return false;
    };
    let mut batch = Vec::new();
    reader::drain_pending(engine, &mut reader, &mut batch);
    reader::settle_self_faults(engine, &mut reader);
    let read = !batch.is_empty();
    engine.pulling.backlog().extend(batch);
    read
}

/// On a loop thread: steps aside while a handler reads, until it stops or the fd closes. While
/// parked it takes a turn for a puller that is stuck out of `pull` with messages waiting (its own
/// thread faulted, or its handler blocks), and when the puller stops it hands on what the puller
/// had read but not taken. Returns whether the loop thread reads on (a rescue's turn may end it,
/// as its own would).
pub fn park_while_pulled(engine: &Engine, reader: &mut Reader) -> bool {
    let pulling = &engine.pulling;
    let mut state = pulling.lock();
    if state.pullers.is_empty() {
        return true;
    }
    let mut reads_on = true;
    state.parked += 1;
    pulling.changed.notify_all();
    while !state.pullers.is_empty() && !engine.is_closed() {
        // Wake for the next deadline too: a puller stuck in its handler does not expire the fault
        // it holds, so a loop thread does.
        let wait = match engine.table().next_deadline() {
            Some(deadline) => {
                deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), STUCK_CHECK)
            }
            None => STUCK_CHECK,
        };
        state = pulling.wait(state, wait);
        if state.pullers.is_empty() || engine.is_closed() || !pulling.stuck() {
            continue;
        }
        let news = reader.look_now();
        let overdue = engine.table().next_deadline().is_some_and(|deadline| deadline <= Instant::now());
        if !news && !overdue && !engine.has_retries() && !engine.resolver.fd.messages_waiting() {
            continue;
        }
        let mut batch = pulling.take_backlog();
        let seen = reader::take(engine, reader, &mut batch);
        drop(state);
        reads_on = reader::hand_over_turn(engine, reader, &seen, batch);
        state = pulling.lock();
        if !reads_on {
            break;
        }
    }
    state.parked -= 1;
    drop(state);
    let left = pulling.take_backlog();
    if !left.is_empty() {
        engine.hand_over(left);
    }
    reads_on
}
