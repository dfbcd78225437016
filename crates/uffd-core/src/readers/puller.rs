//! A puller: a handler thread that reads the userfaultfd itself, in place of
//! the loop threads. A fault then costs one thread hand-off (faulting thread -> handler thread)
//! instead of two (-> loop thread -> handler thread), like a C handler's. The loop threads park
//! while a handler reads and take over again when it stops (or its environment ends); a parked
//! loop thread takes a turn for a puller stuck outside `pull` (a *rescue*).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fault::Dispatch;
use crate::readers::turn::{self, Ended, Reader};
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
    if engine.features() & uapi::FEATURE_EVENT_FORK != 0 {
        // Fork events come through the pump thread (pump.rs), which only a loop thread drains.
        return Err(Error::unsupported(OP, "a handler cannot read the fd itself with EVENT_FORK"));
    }
    if !engine.is_current_handler(generation) {
        return Err(Error::invalid(OP, "only the installed handler can read the fd"));
    }
    let reader = Reader::new(engine, None, false)?;
    let reading = engine.reading();
    let mut pullers = reading.lock_pullers();
    reading.add_puller(&mut pullers, generation, thread_id);
    reading.poke_waker().wake();
    let deadline = Instant::now() + HANDOVER_AT_MOST;
    while pullers.parked() < engine.reader_count() && !engine.is_closed() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            reading.remove_puller(&mut pullers, generation);
            return Err(Error::sys(OP, Errno::ETIMEDOUT, "the fault loop did not step aside"));
        }
        pullers = reading.wait_pullers(pullers, left);
    }
    Ok(Puller { generation, reader })
}

/// One turn on the handler's thread: waits up to `wait` for messages and returns the batch (faults
/// are marked as handed to the puller's handler). EBADF once the fd is closed or the puller no
/// longer reads.
pub fn pull(engine: &Engine, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
    engine.reading().enter_pull();
    let result = pull_turn(engine, puller, wait);
    engine.reading().leave_pull();
    result
}

fn pull_turn(engine: &Engine, puller: &mut Puller, wait: Duration) -> Result<Vec<Dispatch>> {
    const OP: &str = "read";
    let reading = engine.reading();
    if engine.is_closed() || !reading.lock_pullers().reads(puller.generation) {
        return Err(Error::Closed { op: OP, what: "userfaultfd" });
    }
    let wait = if reading.backlog().is_empty() { wait } else { Duration::ZERO };
    puller.reader.wait(engine, Some(wait))?;
    // Read only while still the reader: a loop thread takes over (or rescues) only with this lock,
    // so the two never read at once, and no fault is marked for a handler already removed.
    let pullers = reading.lock_pullers();
    if !pullers.reads(puller.generation) || engine.is_closed() {
        return Err(Error::Closed { op: OP, what: "userfaultfd" });
    }
    let mut batch = reading.take_backlog();
    let seen = turn::take(engine, &mut puller.reader, &mut batch);
    if !seen.failed {
        engine.mark_delivered(Some(puller.generation), &batch);
    }
    drop(pullers);
    match turn::after_turn(engine, &mut puller.reader, &seen) {
        Some(Ended::Failed) => {
            reading.defer(batch);
            Err(Error::sys(OP, Errno::EIO, "the userfaultfd reported POLLERR"))
        }
        Some(Ended::HungUp) => {
            turn::say_hang_up(engine, Vec::new());
            Ok(batch)
        }
        None => Ok(batch),
    }
}

/// For a resolve on the puller's thread that the kernel refused for unread events: reads what is
/// unread (the faults among it wait for the next `pull`). Returns whether it read anything.
pub fn read_unread(engine: &Engine) -> bool {
    let Ok(mut reader) = Reader::draining() else {
        return false;
    };
    let mut batch = Vec::new();
    turn::drain_outside_turn(engine, &mut reader, &mut batch);
    turn::settle_self_faults(engine, &mut reader);
    let read = !batch.is_empty();
    engine.reading().backlog().extend(batch);
    read
}

/// On a loop thread: steps aside while a handler reads, until it stops or the fd closes. While
/// parked it takes a turn for a puller that is stuck out of `pull` with messages waiting (its own
/// thread faulted, or its handler blocks), and when the puller stops it hands on what the puller
/// had read but not taken. Returns whether the loop thread reads on (a rescue's turn may end it,
/// as its own would).
pub fn park_while_pulled(engine: &Engine, reader: &mut Reader) -> bool {
    let reading = engine.reading();
    let mut pullers = reading.lock_pullers();
    if pullers.is_empty() {
        return true;
    }
    let mut reads_on = true;
    reading.park(&mut pullers);
    while !pullers.is_empty() && !engine.is_closed() {
        // Wake for the next deadline too: a puller stuck in its handler does not expire the fault
        // it holds, so a loop thread does.
        let wait = match engine.next_deadline() {
            Some(deadline) => {
                deadline.saturating_duration_since(Instant::now()).clamp(Duration::from_millis(1), STUCK_CHECK)
            }
            None => STUCK_CHECK,
        };
        pullers = reading.wait_pullers(pullers, wait);
        if pullers.is_empty() || engine.is_closed() || !reading.stuck() {
            continue;
        }
        let news = reader.look_now();
        let overdue = engine.next_deadline().is_some_and(|deadline| deadline <= Instant::now());
        if !news && !overdue && !reading.has_retries() && !engine.fd().messages_waiting() {
            continue;
        }
        let mut batch = reading.take_backlog();
        let seen = turn::take(engine, reader, &mut batch);
        drop(pullers);
        reads_on = turn::hand_over_turn(engine, reader, &seen, batch);
        pullers = reading.lock_pullers();
        if !reads_on {
            break;
        }
    }
    reading.unpark(&mut pullers);
    drop(pullers);
    let left = reading.take_backlog();
    if !left.is_empty() {
        engine.hand_over(left);
    }
    reads_on
}
