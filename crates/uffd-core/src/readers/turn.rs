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
use crate::fallback::{self_fault_notice, Fell};
use crate::fault::{Dispatch, Notice, NoticeKind};
use crate::readers::intake::{self, loop_failed, AfterRead};
use crate::reading::Retry;
use crate::resolve::Park;
use crate::source::Scratch;
use crate::sys::msg::Buffer;
use crate::sys::poller::{Poller, Ready, Token, Watch};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A reader's feed: where it takes its messages from, the fd or the pump's ring (`pump.rs`).
pub enum Feed {
    Fd(Buffer),
    Ring(Arc<crate::readers::pump::Ring>),
}

/// One reader's own means: its poller, its feed, its scratch buffer, what its turn left to do.
pub struct Reader {
    poller: Poller,
    feed: Feed,
    scratch: Scratch,
    after_read: AfterRead,
    /// What the last wait found ready.
    ready: Vec<Ready>,
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
        let feed = match ring {
            Some(ring) => {
                ring.ready.watched_by(&poller, Token::Uffd)?;
                Feed::Ring(ring)
            }
            None => {
                // Pullers may be several, as loop threads may: each message wakes one of them.
                let several = !loop_thread || engine.reader_count() > 1;
                let how = if several { Watch::ReadableExclusive } else { Watch::Readable };
                engine.fd().with_borrowed("epoll_ctl", |fd| poller.watch(fd, Token::Uffd, how))?;
                Feed::Fd(Buffer::default())
            }
        };
        engine.reading().stop_waker().watched_by(&poller, Token::Stop)?;
        if let Some(peer) = engine.reading().peer().as_ref() {
            poller.watch(peer.as_fd(), Token::Peer, Watch::HangUp)?;
        }
        if loop_thread {
            engine.reading().poke_waker().watched_by(&poller, Token::Poke)?;
        }
        Ok(Reader { poller, feed, scratch: Scratch::default(), after_read: AfterRead::default(), ready: Vec::new() })
    }

    /// A reader that only drains (a puller's resolve refused for unread events): it never waits,
    /// so its poller watches nothing.
    pub fn draining() -> Result<Reader> {
        Ok(Reader {
            poller: Poller::new()?,
            feed: Feed::Fd(Buffer::default()),
            scratch: Scratch::default(),
            after_read: AfterRead::default(),
            ready: Vec::new(),
        })
    }

    /// Waits up to `wait` (`None`: no limit), less if a fault's deadline or a retry comes first,
    /// for what `take` then takes.
    pub fn wait(&mut self, engine: &Engine, wait: Option<Duration>) -> Result<()> {
        let deadline = engine.next_deadline().map(|d| d.saturating_duration_since(Instant::now()));
        let retry = engine.reading().has_retries().then_some(Duration::from_millis(1));
        let wait = [wait, deadline, retry].into_iter().flatten().min();
        self.ready.clear();
        self.ready.extend(self.poller.wait(wait, engine.spin())?);
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

/// Reads every unread message: under the read lock, events are applied and faults admitted in
/// the kernel's order (so no reader serves a fault read after an event before that event is
/// applied); then the native faults are served, outside the lock, by this reader.
pub fn drain(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    {
        let _read = engine.reading().read_lock();
        match &mut reader.feed {
            Feed::Ring(ring) => {
                for message in ring.take() {
                    intake::take_message(engine, message, &mut reader.after_read, batch);
                }
            }
            Feed::Fd(buffer) => loop {
                match engine.fd().read(buffer) {
                    Ok(count) => {
                        for message in buffer.parse(count) {
                            intake::take_message(engine, message, &mut reader.after_read, batch);
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
    let mut natives = std::mem::take(&mut reader.after_read.natives);
    for native in &natives {
        intake::serve_native(engine, &mut reader.scratch, &mut reader.after_read, native, batch);
    }
    natives.clear();
    reader.after_read.natives = natives;
}

/// Reads what is unread outside a turn (a puller's resolve refused for unread events): events
/// are applied and the epoch moves; what was refused meanwhile is retried once they are read.
pub fn drain_outside_turn(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    drain(engine, reader, batch);
    note_events_read(engine, batch);
    retry(engine, reader, batch);
}

/// If the batch holds events, parked resolves learn that they were read.
fn note_events_read(engine: &Engine, batch: &[Dispatch]) {
    if batch.iter().any(|item| matches!(item, Dispatch::Event(_))) {
        engine.note_events_read();
    }
}

/// What ends every turn, whoever reads: parked resolves learn that events were read, refused work
/// is retried, and faults past their time get the fallback.
fn end_turn(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    note_events_read(engine, batch);
    retry(engine, reader, batch);
    if engine.timeout().is_some() {
        intake::expire(engine, &mut reader.after_read, batch);
        engine.reading().defer_retries(&mut reader.after_read.retries);
    }
}

/// Retries what the kernel refused for unread events, this reader's and any other's; refused
/// again, it waits for the next turn of any reader.
fn retry(engine: &Engine, reader: &mut Reader, batch: &mut Vec<Dispatch>) {
    let mut retries = engine.reading().take_retries();
    retries.append(&mut reader.after_read.retries);
    for retry in retries {
        match retry {
            Retry::Message(faulted) => {
                intake::take_fault(engine, faulted, &mut reader.after_read, batch);
                let natives = std::mem::take(&mut reader.after_read.natives);
                for native in &natives {
                    intake::serve_native(engine, &mut reader.scratch, &mut reader.after_read, native, batch);
                }
            }
            Retry::Fallback(fault) => match engine.fall_back(&fault, Park::Never) {
                Fell::Refused => reader.after_read.retries.push(Retry::Fallback(fault)),
                Fell::Failed(notice) => batch.push(Dispatch::Notice(notice)),
                Fell::Resolved => {}
            },
        }
    }
    engine.reading().defer_retries(&mut reader.after_read.retries);
}

/// Says and resolves the self-faults of the last turn, once the reader holds no lock (saying may
/// remove a handler, which takes the readers' locks).
pub fn settle_self_faults(engine: &Engine, reader: &mut Reader) {
    for fault in std::mem::take(&mut reader.after_read.self_faults) {
        // Said first: when the thread runs again (and, say, closes at once), the word is there.
        engine.say(self_fault_notice(fault.clone()));
        match engine.fall_back(&fault, Park::Never) {
            Fell::Failed(notice) => engine.say(notice),
            Fell::Refused => reader.after_read.retries.push(Retry::Fallback(fault)),
            Fell::Resolved => {}
        }
    }
    engine.reading().defer_retries(&mut reader.after_read.retries);
}

/// The notice that the process whose memory this serves hung up.
fn peer_gone() -> Dispatch {
    Dispatch::Notice(Notice {
        kind: NoticeKind::PeerGone,
        message: "the process whose memory this userfaultfd serves hung up: the userfaultfd was closed".into(),
        advice: Vec::new(),
        fault: None,
        cause: None,
    })
}
