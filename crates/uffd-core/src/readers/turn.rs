//! The turn every reader takes, and the step after it: how a message read from the fd becomes a
//! resolved page or a batch item. Who reads, and the words for it: `reading.rs`.
//!
//! - **message**: one `struct uffd_msg` read from the fd (`sys/msg.rs`).
//! - **turn**: wait, drain, parse, admit, serve natively or fall back, events before faults, end of
//!   turn ([`turn`]); then, once no lock is held, [`after_turn`], the same for every reader.
//! - **admit**: a fault enters the fault table once per page; a second message for the page is a
//!   *duplicate*, a fault of the handler's own thread a *self-fault* (`fault_table.rs`).
//! - **batch**: what a turn hands on: faults for the handler, events, notices (`fault.rs`
//!   `Dispatch`); the binding packs its faults into a Float64Array (`batch.rs`).
//! - **sink**: who a batch is handed to: the handler, or the owner for what no handler hears
//!   (`handlers.rs`).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fallback::{self_fault_notice, source_failed_notice, Fell};
use crate::fault::{Dispatch, Fault, FaultKind, Notice, NoticeKind, UffdEvent};
use crate::fault_table::FaultState;
use crate::native;
use crate::object_faults;
use crate::reading::{Faulted, Retry};
use crate::registrations::Registration;
use crate::resolve::Park;
use crate::source::{Scratch, Served};
use crate::stats::bump;
use crate::sys::msg::{Buffer, Message};
use crate::sys::poller::{Poller, Ready, Token, Watch};
use crate::sys::uapi;
use nix::errno::Errno;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a reader takes its messages from: the fd, or the pump's ring (`pump.rs`).
pub enum Messages {
    Fd(Buffer),
    Ring(Arc<crate::readers::pump::Ring>),
}

/// One reader's own means: its poller, its messages, its scratch buffer, what its turn left to do.
pub struct Reader {
    poller: Poller,
    messages: Messages,
    scratch: Scratch,
    pending: Pending,
    /// What the last wait found ready.
    ready: Vec<Ready>,
}

/// What a turn read and does after the read lock: native faults to serve, refused work to retry,
/// self-faults to say and resolve once no lock is held.
#[derive(Default)]
struct Pending {
    natives: Vec<Native>,
    retries: Vec<Retry>,
    self_faults: Vec<Fault>,
}

struct Native {
    registration: Registration<Served>,
    faulted: Faulted,
}

/// What a turn saw besides its batch.
#[derive(Default)]
pub struct Seen {
    /// The loop threads were told to look at who reads.
    pub poked: bool,
    /// The peer hung up.
    pub hung_up: bool,
    /// The fd reported POLLERR.
    pub failed: bool,
}

impl Reader {
    /// A reader of `engine`'s fd (or of `ring`), watching its stop and peer, and, for a loop
    /// thread, its poke. Several loop threads watch the fd exclusively: one is woken per message.
    pub fn new(engine: &Engine, ring: Option<Arc<crate::readers::pump::Ring>>, loop_thread: bool) -> Result<Reader> {
        let poller = Poller::new()?;
        let messages = match ring {
            Some(ring) => {
                ring.ready.watched_by(&poller, Token::Uffd)?;
                Messages::Ring(ring)
            }
            None => {
                // Pullers may be several, as loop threads may: each message wakes one of them.
                let several = !loop_thread || engine.options.readers() > 1;
                let how = if several { Watch::ReadableExclusive } else { Watch::Readable };
                engine.resolver.fd.with_borrowed("epoll_ctl", |fd| poller.watch(fd, Token::Uffd, how))?;
                Messages::Fd(Buffer::default())
            }
        };
        engine.reading().stop_waker().watched_by(&poller, Token::Stop)?;
        if let Some(peer) = engine.reading().peer().as_ref() {
            poller.watch(peer.as_fd(), Token::Peer, Watch::HangUp)?;
        }
        if loop_thread {
            engine.reading().poke_waker().watched_by(&poller, Token::Poke)?;
        }
        Ok(Reader { poller, messages, scratch: Scratch::default(), pending: Pending::default(), ready: Vec::new() })
    }

    /// A reader that only drains (a puller's resolve refused for unread events): it never waits,
    /// so its poller watches nothing.
    pub fn draining() -> Result<Reader> {
        Ok(Reader {
            poller: Poller::new()?,
            messages: Messages::Fd(Buffer::default()),
            scratch: Scratch::default(),
            pending: Pending::default(),
            ready: Vec::new(),
        })
    }

    /// Waits up to `wait` (`None`: no limit), less if a fault's deadline or a retry comes first,
    /// for what `take` then takes.
    pub fn wait(&mut self, engine: &Engine, wait: Option<Duration>) -> Result<()> {
        let deadline = engine.table().next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        let retry = engine.reading().has_retries().then_some(Duration::from_millis(1));
        let wait = [wait, deadline, retry].into_iter().flatten().min();
        self.ready.clear();
        self.ready.extend(self.poller.wait(wait, engine.options.spin)?);
        Ok(())
    }

    /// For a rescue of a stuck puller: what is ready now, without waiting (the peer's hang-up,
    /// POLLERR), and the fd as readable (a puller watching it may have taken its wake-up). Returns
    /// whether anything besides the fd and the poke was ready.
    pub fn look_now(&mut self) -> bool {
        self.ready.clear();
        if let Ok(ready) = self.poller.wait(Some(Duration::ZERO), Duration::ZERO) {
            self.ready.extend(ready.filter(|r| r.token != Token::Uffd || r.failed));
        }
        let news = self.ready.iter().any(|r| r.token != Token::Poke);
        if !self.ready.iter().any(|r| r.token == Token::Uffd) {
            self.ready.push(Ready { token: Token::Uffd, failed: false });
        }
        news
    }
}

/// Why a turn ends its reader's reading.
pub enum Ended {
    /// The fd reported POLLERR.
    Failed,
    /// The peer hung up: the fd is closed.
    HungUp,
}

/// The step after every turn, whoever took it, once it holds no lock: the turn's self-faults are
/// said and resolved, and what it saw is judged alike for every reader. `None`: read on.
pub fn after_turn(engine: &Engine, reader: &mut Reader, seen: &Seen) -> Option<Ended> {
    settle_self_faults(engine, reader);
    if seen.failed {
        Some(Ended::Failed)
    } else if seen.hung_up {
        Some(Ended::HungUp)
    } else {
        None
    }
}

/// The end of a turn whose batch is handed over (a loop thread's, or a rescue's). Returns whether
/// the reader reads on.
pub fn hand_over_turn(engine: &Engine, reader: &mut Reader, seen: &Seen, mut batch: Vec<Dispatch>) -> bool {
    match after_turn(engine, reader, seen) {
        Some(Ended::Failed) => {
            batch.push(loop_failed(
                "the userfaultfd reported POLLERR (is it blocking, or was it released?)".into(),
                None,
            ));
            engine.hand_over(batch);
            false
        }
        Some(Ended::HungUp) => {
            say_hang_up(engine, batch);
            false
        }
        None => {
            if !batch.is_empty() {
                engine.hand_over(batch);
            }
            true
        }
    }
}

/// The peer hung up (it exited, or closed its socket): nothing is left to serve. Hands `said`
/// over with the hang-up after it (said once, by the first reader to see it) through
/// `hand_over`, which tells the owner (a reading worker's owner must close too, or what keeps its
/// process alive for the peer never lets go), and closes the fd.
pub fn say_hang_up(engine: &Engine, mut said: Vec<Dispatch>) {
    if engine.reading().first_to_see_hang_up() {
        said.push(peer_gone());
    }
    if !said.is_empty() {
        engine.hand_over(said);
    }
    engine.close();
}

/// One turn: waits up to `wait`, then takes what is ready into `batch`.
pub fn turn(engine: &Engine, reader: &mut Reader, wait: Option<Duration>, batch: &mut Vec<Dispatch>) -> Result<Seen> {
    reader.wait(engine, wait)?;
    Ok(take(engine, reader, batch))
}

/// The rest of a turn, for what `Reader::wait` found ready.
pub fn take(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) -> Seen {
    let mut seen = Seen::default();
    if engine.is_closed() {
        return seen;
    }
    for index in 0..reader.ready.len() {
        let ready = reader.ready[index];
        match ready.token {
            Token::Poke => {
                // Left readable while a handler reads: every loop thread must see it and park (a
                // cleared eventfd would wake only the first of several). Cleared, then looked at
                // again: a handler that started meanwhile has its poke back.
                let reading = engine.reading();
                if !reading.pulled() {
                    reading.poke_waker().clear();
                    if reading.pulled() {
                        reading.poke_waker().wake();
                    }
                }
                seen.poked = true;
            }
            Token::Uffd if ready.failed => seen.failed = true,
            Token::Uffd => drain(engine, reader, batch),
            Token::Peer => {
                drain(engine, reader, batch);
                seen.hung_up = true;
            }
            // The stop eventfd is written only by close(), which the check above sees.
            Token::Stop | Token::Space => {}
        }
    }
    end_turn(engine, reader, batch);
    seen
}

/// Reads every pending message: under the read lock, events are applied and faults admitted in
/// the kernel's order (so no reader serves a fault read after an event before that event is
/// applied); then the native faults are served, outside the lock, by this reader.
pub fn drain(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    {
        let _read = engine.reading().read_lock();
        match &mut reader.messages {
            Messages::Ring(ring) => {
                for message in ring.take() {
                    take_message(engine, message, &mut reader.pending, batch);
                }
            }
            Messages::Fd(buffer) => loop {
                match engine.resolver.fd.read(buffer) {
                    Ok(count) => {
                        for message in buffer.parse(count) {
                            take_message(engine, message, &mut reader.pending, batch);
                        }
                        if count < crate::sys::msg::MESSAGES_PER_READ {
                            break;
                        }
                    }
                    Err(Error::Closed { .. }) => break,
                    Err(err) => {
                        batch.push(loop_failed(format!("reading the userfaultfd failed: {err}"), Some(err)));
                        break;
                    }
                }
            },
        }
    }
    let mut natives = std::mem::take(&mut reader.pending.natives);
    for native in &natives {
        serve_native(engine, reader, native, batch);
    }
    natives.clear();
    reader.pending.natives = natives;
}

/// Reads what is pending outside a turn (a puller's resolve refused for unread events): events
/// are applied and the epoch moves; what was refused meanwhile is retried once they are read.
pub fn drain_pending(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    drain(engine, reader, batch);
    note_events_read(engine, batch);
    retry(engine, reader, batch);
}

/// Parked resolves learn that events were read (the kernel lets them go once they are).
fn note_events_read(engine: &Engine, batch: &[Dispatch]) {
    if batch.iter().any(|item| matches!(item, Dispatch::Event(_))) {
        engine.resolver.epoch.advance();
    }
}

/// What ends every turn, whoever reads: parked resolves learn that events were read, refused work
/// is retried, and faults past their time get the fallback.
fn end_turn(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    note_events_read(engine, batch);
    retry(engine, reader, batch);
    if engine.options.timeout.is_some() {
        expire(engine, reader, batch);
        engine.reading().defer_retries(&mut reader.pending.retries);
    }
}

/// Retries what the kernel refused for unread events, this reader's and any other's; refused
/// again, it waits for the next turn of any reader.
fn retry(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    let mut retries = engine.reading().take_retries();
    retries.append(&mut reader.pending.retries);
    for retry in retries {
        match retry {
            Retry::Message(faulted) => {
                take_fault(engine, faulted, &mut reader.pending, batch);
                let natives = std::mem::take(&mut reader.pending.natives);
                for native in &natives {
                    serve_native(engine, reader, native, batch);
                }
            }
            Retry::Fallback(fault) => match engine.fall_back(&fault, Park::Never) {
                Fell::Refused => reader.pending.retries.push(Retry::Fallback(fault)),
                Fell::Failed(notice) => batch.push(Dispatch::Notice(notice)),
                Fell::Resolved => {}
            },
        }
    }
    engine.reading().defer_retries(&mut reader.pending.retries);
}

/// Says and resolves the self-faults of the last turn, once the reader holds no lock (saying may
/// remove a handler, which takes the readers' locks).
pub fn settle_self_faults(engine: &Engine, reader: &mut Reader) {
    for fault in std::mem::take(&mut reader.pending.self_faults) {
        // Said first: when the thread runs again (and, say, closes at once), the word is there.
        engine.hand_over(vec![Dispatch::Notice(self_fault_notice(fault.clone()))]);
        match engine.fall_back(&fault, Park::Never) {
            Fell::Failed(notice) => engine.hand_over(vec![Dispatch::Notice(notice)]),
            Fell::Refused => reader.pending.retries.push(Retry::Fallback(fault)),
            Fell::Resolved => {}
        }
    }
    engine.reading().defer_retries(&mut reader.pending.retries);
}

fn take_message(engine: &Engine, message: Message, pending: &mut Pending, batch: &mut Vec<Dispatch>) {
    let counters = &engine.resolver.counters;
    bump(&counters.messages);
    let event = match message {
        Message::Fault { address, kind, write, thread_id } => {
            bump(match kind {
                FaultKind::Missing => &counters.faults_missing,
                FaultKind::Minor => &counters.faults_minor,
                FaultKind::WriteProtect => &counters.faults_wp,
            });
            counters.latency.fault_seen();
            return take_fault(engine, Faulted { address, kind, write, thread_id }, pending, batch);
        }
        Message::Remove { start, end } => UffdEvent::Remove { region: region_at(engine, start), start, end },
        Message::Unmap { start, end } => UffdEvent::Unmap { region: region_at(engine, start), start, end },
        Message::Remap { from, to, len } => {
            UffdEvent::Remap { region: region_at(engine, from), from, to, len, moved: None }
        }
        Message::Fork { fd } => UffdEvent::Fork { child: adopt_child(engine, fd, batch) },
        Message::Unknown(code) => {
            bump(&counters.errors);
            return batch.push(loop_failed(
                format!("a userfaultfd message could not be read: unrecognized event in uffd_msg: {code}"),
                None,
            ));
        }
    };
    let mut event = event;
    crate::events::apply(&engine.resolver, &engine.table, &mut event);
    batch.push(Dispatch::Event(event));
}

fn region_at(engine: &Engine, address: usize) -> Option<Arc<crate::region::Region>> {
    engine.resolver.registration_at(address).map(|reg| reg.region)
}

/// Adopts the userfaultfd of a forked child over this fd's registered ranges, with its options.
fn adopt_child(engine: &Engine, fd: std::os::fd::OwnedFd, batch: &mut Vec<Dispatch>) -> Option<crate::fault::Child> {
    let ranges: Vec<crate::region::RemoteRange> = engine
        .resolver
        .registrations()
        .ranges()
        .into_iter()
        .map(|(start, end, page_size)| crate::region::RemoteRange { address: start, length: end - start, page_size })
        .collect();
    let features =
        uapi::names_of(engine.resolver.fd.features(), uapi::FEATURES).iter().map(|s| s.to_string()).collect();
    let options = crate::options::Options { features, user_mode_only: None, ..engine.options.clone() };
    match (engine.adopt_child)(fd, &ranges, &options) {
        Ok(child) => Some(child),
        Err(err) => {
            bump(&engine.resolver.counters.errors);
            batch
                .push(loop_failed(format!("the userfaultfd of a forked child could not be adopted: {err}"), Some(err)));
            None
        }
    }
}

/// Takes a fault: a range with a native source is served by this reader (after the read), or
/// waits for its object source's request; any other fault is admitted for the handler.
fn take_fault(engine: &Engine, faulted: Faulted, pending: &mut Pending, batch: &mut Vec<Dispatch>) {
    let Faulted { address, kind, write, thread_id } = faulted;
    let registration = engine.resolver.registration_at(address);
    if let Some(registration @ Registration { served: Some(served), .. }) = &registration {
        let region = &registration.region;
        let offset = (address - region.address()) & !(region.page_size() - 1);
        let end = registration.end - region.address();
        if object_faults::serve_later(engine, served, region, offset, end, address, kind, write, thread_id) {
            return;
        }
        // A write to a range with a residency limit pins its page: served natively too.
        let pins = kind == FaultKind::WriteProtect && served.residency().is_some();
        if served.source().serves(kind) || pins {
            return pending.natives.push(Native { registration: registration.clone(), faulted });
        }
    }
    admit(engine, registration.map(|reg| reg.region), faulted, pending, batch);
}

/// Serves a native fault read in this turn (see `native::serve`); what the source does not serve
/// goes to the handler.
fn serve_native(engine: &Engine, reader: &mut Reader, native: &Native, batch: &mut Vec<Dispatch>) {
    let Native { registration, faulted } = native;
    let Faulted { address, kind, write, thread_id } = faulted;
    let (region, served) = (&registration.region, registration.served.as_ref().expect("natives are served"));
    let started = Instant::now();
    let offset = (address - region.address()) & !(region.page_size() - 1);
    let end = registration.end - region.address();
    let resolver = &engine.resolver;
    match native::serve(resolver, served, region, offset, end, *kind, *write, &mut reader.scratch, Park::Never) {
        Some(Ok(_)) => resolver.counters.latency.record(started.elapsed()),
        // An event is unread: this turn reads it; retry after.
        Some(Err(Error::Sys { errno: Errno::EAGAIN, .. })) => reader.pending.retries.push(Retry::Message(*faulted)),
        // The process that owns the memory exited (its hang-up is said on its own), or the fd
        // closed: nobody waits for this fault any more.
        Some(Err(Error::Sys { errno: Errno::ESRCH, .. }) | Err(Error::Closed { .. })) => {}
        // The source could not give its bytes: never a silent zero, never the handler's ordinary
        // fault. The fallback resolves it now and the owner hears why.
        Some(Err(err)) => {
            let fault = engine.new_fault(region.clone(), offset, *address, *kind, *write, *thread_id);
            bump(&resolver.counters.errors);
            let notice = match engine.fall_back(&fault, Park::Never) {
                Fell::Failed(notice) => notice,
                Fell::Refused => {
                    reader.pending.retries.push(Retry::Fallback(fault.clone()));
                    source_failed_notice(fault, &served.source().describe(), err)
                }
                Fell::Resolved => source_failed_notice(fault, &served.source().describe(), err),
            };
            batch.push(Dispatch::Notice(notice));
        }
        // Past a fallthrough source's end: the handler's.
        None => admit(engine, Some(region.clone()), *faulted, &mut reader.pending, batch),
    }
}

/// Admits a fault for the handler: once per page in flight; a fault of the handler's own thread
/// is resolved by the fallback at once (its handler can never run).
fn admit(
    engine: &Engine,
    region: Option<Arc<crate::region::Region>>,
    faulted: Faulted,
    pending: &mut Pending,
    batch: &mut Vec<Dispatch>,
) {
    let Faulted { address, kind, write, thread_id } = faulted;
    let counters = &engine.resolver.counters;
    let Some(region) = region else {
        let page = crate::region::base_page_size();
        let _ = engine.resolver.fd.with_fd("UFFDIO_WAKE", |u| crate::sys::ioctl::wake(u, address & !(page - 1), page));
        bump(&counters.errors);
        return batch.push(Dispatch::Notice(Notice {
            kind: NoticeKind::UnknownAddress,
            message: format!(
                "a {} fault at {address:#x} lies in no registered region: the thread was woken",
                kind.name()
            ),
            fault: None,
            cause: None,
        }));
    };
    let offset = (address - region.address()) & !(region.page_size() - 1);
    let page = region.address() + offset;
    let fault = engine.new_fault(region, offset, address, kind, write, thread_id);
    let self_fault = thread_id != 0 && engine.handlers.is_handler_thread(thread_id);
    {
        let mut table = engine.table();
        if table.mark_duplicate(page) {
            bump(&counters.duplicates);
            if !self_fault {
                return;
            }
        }
        if !self_fault {
            table.insert(fault.clone(), page, engine.deadline());
        }
    }
    if !self_fault {
        return batch.push(Dispatch::Fault(fault));
    }
    // The handler's thread is asleep in this fault: its handler can never run. It is said and
    // resolved by the fallback once the reader holds no lock (`settle_self_faults`).
    bump(&counters.self_faults);
    bump(&counters.errors);
    pending.self_faults.push(fault);
}

/// Resolves every fault past its deadline by the fallback, with a notice each.
fn expire(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    let expired = engine.table().take_expired(Instant::now());
    let limit = engine.options.timeout.unwrap_or_default();
    for entry in expired {
        if matches!(entry.state, FaultState::Waiting) {
            bump(&engine.resolver.counters.timeouts);
        }
        // A fault that waited for a handler, or a source, that never came (see `hold_for_handler`).
        let unserved = entry.delivered_to.is_none() && !engine.handlers.any();
        let (notice, refused) = engine.abandon(entry, Park::Never, |fault| Notice {
            kind: NoticeKind::Timeout,
            message: if unserved && object_faults::resolver_of(engine, fault) == "the handler" {
                format!(
                    "no handler was installed and no source served a {} fault at offset {} of region {} within {} ms: \
                     it was resolved by the fallback. Call uffd.handle(fn) or uffd.serve(region, {{ source }}) sooner",
                    fault.kind.name(),
                    fault.offset,
                    fault.region.id(),
                    limit.as_millis()
                )
            } else {
                format!(
                    "{} did not resolve a {} fault at offset {} of region {} within {} ms: it was resolved by the fallback",
                    object_faults::resolver_of(engine, fault),
                    fault.kind.name(),
                    fault.offset,
                    fault.region.id(),
                    limit.as_millis()
                )
            },
            fault: Some(fault.clone()),
            cause: None,
        });
        if let Some(fault) = refused {
            reader.pending.retries.push(Retry::Fallback(fault));
        }
        batch.push(Dispatch::Notice(notice));
    }
}

/// The notice that reading stopped on an error.
pub fn loop_failed(message: String, cause: Option<Error>) -> Dispatch {
    Dispatch::Notice(Notice { kind: NoticeKind::LoopFailed, message, fault: None, cause })
}

/// The notice that the process whose memory this serves hung up.
fn peer_gone() -> Dispatch {
    Dispatch::Notice(Notice {
        kind: NoticeKind::PeerGone,
        message: "the process whose memory this userfaultfd serves hung up: the userfaultfd was closed".into(),
        fault: None,
        cause: None,
    })
}
