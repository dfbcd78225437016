//! A turn's intake: each message read becomes an applied event, a fault served natively (after the
//! read lock), a fault admitted for the handler, or a notice; and faults past their time get the
//! fallback.

use crate::engine::Engine;
use crate::error::{Advice, Error};
use crate::fallback::{source_failed_notice, Fell};
use crate::fault::{Dispatch, Fault, FaultKind, Notice, NoticeKind, UffdEvent};
use crate::fault_table::Stage;
use crate::native;
use crate::object_faults;
use crate::reading::{Faulted, Retry};
use crate::registrations::Registration;
use crate::resolve::Park;
use crate::source::{Scratch, Served, Source};
use crate::stats::bump;
use crate::sys::msg::Message;
use nix::errno::Errno;
use std::sync::Arc;
use std::time::Instant;

/// What a turn read and does after the read lock: native faults to serve, refused work to retry,
/// self-faults to say and resolve once no lock is held.
#[derive(Default)]
pub struct AfterRead {
    pub natives: Vec<Native>,
    pub retries: Vec<Retry>,
    pub self_faults: Vec<Fault>,
}

/// A fault that a native source serves, read in this turn: its page's offset in the region, and
/// where its registration ends (region offset).
pub struct Native {
    registration: Registration<Served>,
    faulted: Faulted,
    offset: usize,
    end: usize,
}

pub fn take_message(engine: &Engine, message: Message, held: &mut AfterRead, batch: &mut Vec<Dispatch>) {
    let counters = engine.counters();
    bump(&counters.messages);
    let event = match message {
        Message::Fault { address, kind, write, thread_id } => {
            bump(match kind {
                FaultKind::Missing => &counters.faults_missing,
                FaultKind::Minor => &counters.faults_minor,
                FaultKind::WriteProtect => &counters.faults_wp,
            });
            counters.latency.fault_seen();
            return take_fault(engine, Faulted { address, kind, write, thread_id }, held, batch);
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
    engine.apply_event(&mut event);
    batch.push(Dispatch::Event(event));
}

fn region_at(engine: &Engine, address: usize) -> Option<Arc<crate::region::Region>> {
    engine.registration_at(address).map(|reg| reg.region)
}

/// Adopts the userfaultfd of a forked child over this fd's registered ranges, with its options.
fn adopt_child(engine: &Engine, fd: std::os::fd::OwnedFd, batch: &mut Vec<Dispatch>) -> Option<crate::fault::Child> {
    match engine.adopt_child(fd) {
        Ok(child) => Some(child),
        Err(err) => {
            bump(&engine.counters().errors);
            batch
                .push(loop_failed(format!("the userfaultfd of a forked child could not be adopted: {err}"), Some(err)));
            None
        }
    }
}

/// Takes a fault: a range with a native source is served by this reader (after the read), or
/// waits for its object source's request; any other fault is admitted for the handler.
pub fn take_fault(engine: &Engine, faulted: Faulted, held: &mut AfterRead, batch: &mut Vec<Dispatch>) {
    let Faulted { address, kind, write, thread_id } = faulted;
    let registration = engine.registration_at(address);
    if let Some(registration @ Registration { served: Some(served), .. }) = &registration {
        let region = &registration.region;
        let offset = (address - region.address()) & !(region.page_size() - 1);
        let end = registration.end - region.address();
        let source = served.source();
        if matches!(source, Source::Object(..))
            && object_faults::serve_later(engine, served, region, offset, end, address, kind, write, thread_id)
        {
            return;
        }
        // A write to a range with a residency limit pins its page: served natively too.
        let pins = kind == FaultKind::WriteProtect && served.residency().is_some();
        if source.serves(kind) || pins {
            return held.natives.push(Native { registration: registration.clone(), faulted, offset, end });
        }
    }
    admit(engine, registration.map(|reg| reg.region), faulted, held, batch);
}

/// Serves a native fault read in this turn (see `native::serve`); what the source does not serve
/// goes to the handler.
pub fn serve_native(
    engine: &Engine,
    scratch: &mut Scratch,
    held: &mut AfterRead,
    native: &Native,
    batch: &mut Vec<Dispatch>,
) {
    let Native { registration, faulted, offset, end } = native;
    let (offset, end) = (*offset, *end);
    let Faulted { address, kind, write, thread_id } = faulted;
    let (region, served) = (&registration.region, registration.served.as_ref().expect("natives are served"));
    let started = Instant::now();
    let resolver = engine.resolver();
    match native::serve(resolver, served, region, offset, end, *kind, *write, scratch, Park::Never) {
        Some(Ok(_)) => resolver.counters.latency.record(started.elapsed()),
        // An event is unread: this turn reads it; retry after.
        Some(Err(Error::Sys { errno: Errno::EAGAIN, .. })) => held.retries.push(Retry::Message(*faulted)),
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
                    held.retries.push(Retry::Fallback(fault.clone()));
                    source_failed_notice(fault, &served.source().describe(), err)
                }
                Fell::Resolved => source_failed_notice(fault, &served.source().describe(), err),
            };
            batch.push(Dispatch::Notice(notice));
        }
        // Past a fallthrough source's end: the handler's.
        None => admit(engine, Some(region.clone()), *faulted, held, batch),
    }
}

/// Admits a fault for the handler: once per page in flight; a fault of the handler's own thread
/// is resolved by the fallback at once (its handler can never run).
fn admit(
    engine: &Engine,
    region: Option<Arc<crate::region::Region>>,
    faulted: Faulted,
    held: &mut AfterRead,
    batch: &mut Vec<Dispatch>,
) {
    let Faulted { address, kind, write, thread_id } = faulted;
    let counters = engine.counters();
    let Some(region) = region else {
        let page = crate::region::base_page_size();
        let _ = engine.fd().with_fd("UFFDIO_WAKE", |u| crate::sys::ioctl::wake(u, address & !(page - 1), page));
        bump(&counters.errors);
        return batch.push(Dispatch::Notice(Notice {
            kind: NoticeKind::UnknownAddress,
            message: format!(
                "a {} fault at {address:#x} lies in no registered region: the thread was woken",
                kind.name()
            ),
            advice: Vec::new(),
            fault: None,
            cause: None,
        }));
    };
    let offset = (address - region.address()) & !(region.page_size() - 1);
    let page = region.address() + offset;
    let fault = engine.new_fault(region, offset, address, kind, write, thread_id);
    let self_fault = thread_id != 0 && engine.is_handler_thread(thread_id);
    if !self_fault {
        if engine.admit(&fault) {
            batch.push(Dispatch::Fault(fault));
        }
        return;
    }
    engine.note_duplicate(page);
    // The handler's thread is asleep in this fault: its handler can never run. It is said and
    // resolved by the fallback once the reader holds no lock (`settle_self_faults`).
    bump(&counters.self_faults);
    bump(&counters.errors);
    held.self_faults.push(fault);
}

/// Resolves every fault past its deadline by the fallback, with a notice each.
pub fn expire(engine: &Engine, held: &mut AfterRead, batch: &mut Vec<Dispatch>) {
    let expired = engine.take_expired();
    let limit = engine.timeout().unwrap_or_default();
    for entry in expired {
        if matches!(entry.stage, Stage::Waiting) {
            bump(&engine.counters().timeouts);
        }
        // A fault that waited for a handler, or a source, that never came (see `hold_for_handler`).
        let unserved = entry.delivered_to.is_none() && !engine.has_handler();
        let (notice, refused) = engine.abandon(entry, Park::Never, |fault| {
            let none_came = unserved && object_faults::resolver_of(engine, fault) == "the handler";
            Notice {
            kind: NoticeKind::Timeout,
            message: if none_came {
                format!(
                    "no handler was installed and no source served a {} fault at offset {} of region {} within {} ms: \
                     it was resolved by the fallback",
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
            advice: if none_came { vec![Advice::InstallHandlerSooner] } else { Vec::new() },
            fault: Some(fault.clone()),
            cause: None,
        }});
        if let Some(fault) = refused {
            held.retries.push(Retry::Fallback(fault));
        }
        batch.push(Dispatch::Notice(notice));
    }
}

/// The notice that reading stopped on an error.
pub fn loop_failed(message: String, cause: Option<Error>) -> Dispatch {
    Dispatch::Notice(Notice { kind: NoticeKind::LoopFailed, message, advice: Vec::new(), fault: None, cause })
}
