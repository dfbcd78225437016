//! Who hears a batch: the handler (the sink, its generation, the faults delivered to it), the
//! owner (who hears what no handler would), handlers being started, and what waits for a handler.

use crate::fallback::{fall_back, no_handler_notice, Fell};
use crate::fault::{Dispatch, FaultSink, Notice, NoticeKind};
use crate::fault_table::FaultTable;
use crate::options::Fallback;
use crate::region::MemoryKind;
use crate::resolve::{Park, Resolver};
use crate::stats::bump;
use crate::thread_set::ThreadSet;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// What hand-overs need besides the handlers: the faults in flight and how to fall back.
pub struct Faults<'a> {
    pub table: &'a Mutex<FaultTable>,
    pub resolver: &'a Resolver,
    pub fallback: Fallback,
}

impl Faults<'_> {
    pub fn lock(&self) -> MutexGuard<'_, FaultTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the faults of a batch as handed to handler `generation` (`None`: handed back).
    pub fn mark_delivered(&self, generation: Option<u64>, batch: &[Dispatch]) {
        let mut table = self.lock();
        for item in batch {
            if let Dispatch::Fault(fault) = item {
                table.set_delivered(fault.id, generation);
            }
        }
    }
}

/// An installed handler: its generation, its sink, and the thread it runs on.
struct Member {
    generation: u64,
    sink: Arc<dyn FaultSink>,
    thread: i32,
}

/// Who hears batches and who is awaited, and what waits for a handler, under one lock.
#[derive(Default)]
struct Roster {
    /// The installed handlers: one, or several that joined it (handler workers that each read the
    /// fd); batches read by the loop threads go to the latest.
    members: Vec<Member>,
    generation: u64,
    /// Who hears notices that no handler would (the owner's JavaScript thread), and its thread id.
    owner: Option<(Arc<dyn FaultSink>, i32)>,
    /// Handlers being started (`expect`): faults wait for them without a notice.
    expected: BTreeSet<u64>,
    next_expectation: u64,
    /// Faults, events and notices waiting for a handler.
    queued: Vec<Dispatch>,
}

#[derive(Default)]
pub struct Handlers {
    state: Mutex<Roster>,
    /// The threads the handlers run on: a fault of one of them is a self-fault.
    threads: ThreadSet,
}

/// What installing a handler found.
pub enum Installed {
    /// Installed as `generation`, replacing the handlers of `replaced`; `queued` waited for it.
    Current { generation: u64, replaced: Vec<u64>, queued: Vec<Dispatch> },
    /// The fd is closed: what waited was delivered to the sink, once (true if there was any).
    Closed(bool),
}

impl Handlers {
    fn lock(&self) -> MutexGuard<'_, Roster> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `thread_id` runs a handler (its fault is a self-fault).
    pub fn is_handler_thread(&self, thread_id: i32) -> bool {
        self.threads.contains(thread_id)
    }

    /// Notes the members' threads for `is_handler_thread` (the caller holds the state lock).
    fn note_threads(&self, state: &Roster) {
        self.threads.set(state.members.iter().map(|m| m.thread).collect());
    }

    /// Installs a handler on thread `thread_id`: it replaces the installed ones, or, with `join`,
    /// serves beside them.
    pub fn install(&self, sink: Arc<dyn FaultSink>, thread_id: i32, closed: bool, join: bool) -> Installed {
        let mut state = self.lock();
        if closed {
            // Closed before any handler came (its peer hung up, say): what it had to say is still
            // handed over, once; no fault can follow.
            let said = std::mem::take(&mut state.queued);
            drop(state);
            let any = !said.is_empty();
            if any {
                let _ = sink.deliver(said);
            }
            return Installed::Closed(any);
        }
        state.generation += 1;
        let generation = state.generation;
        let replaced = if join { Vec::new() } else { state.members.drain(..).map(|m| m.generation).collect() };
        state.members.push(Member { generation, sink, thread: thread_id });
        self.note_threads(&state);
        Installed::Current { generation, replaced, queued: std::mem::take(&mut state.queued) }
    }

    /// Removes every installed handler but those of `generations` (a group of handler workers
    /// that joined while the old ones served on); returns the generations removed.
    pub fn keep_only(&self, generations: &[u64]) -> Vec<u64> {
        let mut state = self.lock();
        let (kept, removed): (Vec<Member>, Vec<Member>) =
            std::mem::take(&mut state.members).into_iter().partition(|m| generations.contains(&m.generation));
        state.members = kept;
        self.note_threads(&state);
        removed.into_iter().map(|m| m.generation).collect()
    }

    /// Removes handler `generation` if it is still installed.
    pub fn remove(&self, generation: u64) {
        let mut state = self.lock();
        state.members.retain(|m| m.generation != generation);
        self.note_threads(&state);
    }

    pub fn is_current(&self, generation: u64) -> bool {
        self.lock().members.iter().any(|m| m.generation == generation)
    }

    /// Whether a handler is installed (on any thread), or being started.
    pub fn any(&self) -> bool {
        let state = self.lock();
        !state.members.is_empty() || !state.expected.is_empty()
    }

    /// The latest handler, which hears what loop threads read.
    fn latest(state: &Roster) -> Option<(u64, Arc<dyn FaultSink>, i32)> {
        state.members.last().map(|m| (m.generation, m.sink.clone(), m.thread))
    }

    /// Faults waiting for a handler.
    pub fn queued_faults(&self) -> usize {
        self.lock().queued.iter().filter(|d| matches!(d, Dispatch::Fault(_))).count()
    }

    /// Takes the waiting items `which` picks.
    pub fn take_queued(&self, which: impl Fn(&Dispatch) -> bool) -> Vec<Dispatch> {
        let mut state = self.lock();
        let (taken, kept) = std::mem::take(&mut state.queued).into_iter().partition(|item| which(item));
        state.queued = kept;
        taken
    }

    /// On close: faults are gone with the fd; events and notices wait for a handler to hear them.
    /// The sinks are dropped outside the lock.
    pub fn close(&self) {
        let mut state = self.lock();
        state.queued.retain(|item| !matches!(item, Dispatch::Fault(_)));
        let sinks = (std::mem::take(&mut state.members), state.owner.take());
        self.note_threads(&state);
        drop(state);
        drop(sinks);
    }

    /// Hands a batch to the current handler, or holds it for the next one; the notices that are
    /// the owner's (`is_owners`) go to the owner. Returns the generation of a handler found gone:
    /// the caller removes it.
    #[must_use]
    pub fn hand_over(&self, faults: &Faults<'_>, mut batch: Vec<Dispatch>) -> Option<u64> {
        let state = self.lock();
        let Some((generation, sink, thread)) = Self::latest(&state) else {
            self.hold_for_handler(state, faults, batch);
            return None;
        };
        let owner = state.owner.clone();
        drop(state);
        if let Some((owner, owner_thread)) = owner {
            let theirs = take_notices(&mut batch, |notice| is_owners(notice, owner_thread, thread));
            if !theirs.is_empty() {
                if let Err(returned) = owner.deliver(theirs) {
                    batch.extend(returned);
                }
            }
            if batch.is_empty() {
                return None;
            }
        }
        faults.mark_delivered(Some(generation), &batch);
        bump(&faults.resolver.counters.batches);
        let Err(returned) = sink.deliver(batch) else {
            return None;
        };
        faults.mark_delivered(None, &returned);
        self.lock().queued.extend(returned);
        Some(generation)
    }

    /// With no handler, faults and events wait for one; notices go to the owner at once. A fault
    /// for which no handler is being started is said at once (`NoHandler`), and if its thread is
    /// the owner's, which alone could install one and sleeps in this fault, it gets the fallback now.
    /// A fault in another process's memory (an adopted userfaultfd) waits unsaid until its
    /// deadline: that process runs as soon as it has sent its handshake, and its first faults may
    /// come before `handle()` or `serve()`. A fault no longer in flight (a source attached since
    /// took it from the reader's hands, see `answer::serve`) is not held.
    ///
    /// Held under the state lock, so that `serve()`, which records its source before it takes
    /// what is held here, either finds a fault held here or is seen by the reader that read it.
    fn hold_for_handler(&self, mut state: MutexGuard<'_, Roster>, faults: &Faults<'_>, batch: Vec<Dispatch>) {
        let batch = without_settled(faults, batch);
        let Some((owner, owner_thread)) = state.owner.clone() else {
            state.queued.extend(batch);
            return;
        };
        let waiting_for_none = state.expected.is_empty();
        let mut said = Vec::new();
        let mut stranded = Vec::new();
        for item in batch {
            match item {
                Dispatch::Notice(_) => said.push(item),
                Dispatch::Fault(ref fault) if waits_unsaid(faults, fault) => state.queued.push(item),
                Dispatch::Fault(fault) if waiting_for_none && fault.thread_id as i32 == owner_thread => {
                    if let Some(entry) = faults.lock().take(fault.id) {
                        stranded.push(entry);
                    }
                }
                Dispatch::Fault(ref fault) if waiting_for_none => {
                    said.push(Dispatch::Notice(no_handler_notice(fault, false)));
                    state.queued.push(item);
                }
                other => state.queued.push(other),
            }
        }
        drop(state);
        for entry in stranded {
            // Said before the fallback wakes the thread: when it runs again, the word is there
            // already (a script that reads, then closes and ends, still hears it).
            let notice = Dispatch::Notice(no_handler_notice(&entry.fault, true));
            if let Err(returned) = owner.deliver(vec![notice]) {
                said.extend(returned);
            }
            bump(&faults.resolver.counters.errors);
            if let Fell::Failed(failed) = fall_back(faults.resolver, faults.fallback, &entry.fault, Park::UntilRead) {
                said.push(Dispatch::Notice(failed));
            }
        }
        if said.is_empty() {
            return;
        }
        if let Err(returned) = owner.deliver(said) {
            self.lock().queued.extend(returned);
        }
    }

    /// Makes `sink`, on thread `thread_id`, hear the notices no handler hears, and makes faults
    /// that no handler will serve known at once (see `hold_for_handler`).
    pub fn set_owner(&self, sink: Arc<dyn FaultSink>, thread_id: i32, faults: &Faults<'_>) {
        let mut state = self.lock();
        state.owner = Some((sink, thread_id));
        if state.members.is_empty() {
            let held = std::mem::take(&mut state.queued);
            self.hold_for_handler(state, faults, held);
        }
    }

    /// A handler is being started: until `unexpect`, faults wait for it without a notice.
    /// Returns the token to end the expectation with.
    pub fn expect(&self) -> u64 {
        let mut state = self.lock();
        state.next_expectation += 1;
        let token = state.next_expectation;
        state.expected.insert(token);
        token
    }

    /// The handler of `token` came, or will not: faults still without a handler are dealt with
    /// as `hold_for_handler` says.
    pub fn unexpect(&self, token: u64, faults: &Faults<'_>) {
        let mut state = self.lock();
        if !state.expected.remove(&token) || !state.members.is_empty() || !state.expected.is_empty() {
            return;
        }
        let held = std::mem::take(&mut state.queued);
        self.hold_for_handler(state, faults, held);
    }
}

/// The batch without the faults that are no longer in flight (settled, or taken by a source).
fn without_settled(faults: &Faults<'_>, mut batch: Vec<Dispatch>) -> Vec<Dispatch> {
    let table = faults.lock();
    batch.retain(|item| !matches!(item, Dispatch::Fault(fault) if !table.contains(fault.id)));
    batch
}

/// Whether a fault with no handler waits unsaid for one (or for a source) until its deadline: a
/// fault in another process's memory, which has a deadline (nothing waits unsaid for good).
fn waits_unsaid(faults: &Faults<'_>, fault: &crate::fault::Fault) -> bool {
    fault.region.kind() == MemoryKind::Remote
        && faults.lock().get(fault.id).is_some_and(|entry| entry.deadline.is_some())
}

/// The routing rule of notices while a handler is installed (with none, every notice is the
/// owner's, see `hold_for_handler`): which notices the owner hears instead of the handler on
/// thread `handler_thread`. Timeouts, as the owner set the limit and the handler may be the one
/// stuck; a removed handler's, which cannot hear them; the peer's hang-up when the handler is on
/// another thread, as the owner is who closes (a handler in a worker cannot, and the owner keeps
/// its process up), while a handler on the owner's thread hears it in its batch, after the events
/// before it; a self-fault of the owner's own thread (where `close()` hears what is left).
fn is_owners(notice: &Notice, owner_thread: i32, handler_thread: i32) -> bool {
    match notice.kind {
        NoticeKind::Timeout | NoticeKind::HandlerGone => true,
        NoticeKind::PeerGone => owner_thread != handler_thread,
        NoticeKind::SelfFault => notice.fault.as_ref().is_some_and(|f| f.thread_id as i32 == owner_thread),
        _ => false,
    }
}

/// Moves the notices that `which` picks out of a batch.
fn take_notices(batch: &mut Vec<Dispatch>, which: impl Fn(&Notice) -> bool) -> Vec<Dispatch> {
    let (taken, kept): (Vec<Dispatch>, Vec<Dispatch>) =
        std::mem::take(batch).into_iter().partition(|item| matches!(item, Dispatch::Notice(n) if which(n)));
    *batch = kept;
    taken
}
