//! Faults that wait for the network. A missing fault in a range served by an object source is put
//! in the fault table (so `timeoutMs` bounds it and a second fault of the page joins it), its bytes
//! are read on the object-store runtime, and the runtime's completion maps them (UFFDIO_COPY of the
//! fault's page and the rest of its chunk) and wakes it. A read that fails after its retries
//! resolves the fault by the fallback, with an `ERR_UFFD_SOURCE` notice whose cause carries the
//! HTTP status or errno. The reader only plans and hands over: it never waits for a request.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fallback::{source_failed_notice, Fell};
use crate::fault::{Fault, FaultKind};
use crate::native::map_zeros;
use crate::object_source::runtime::runtime;
use crate::object_source::{ObjectSource, Plan};
use crate::options::Fallback;
use crate::region::{MemoryKind, Region};
use crate::resolve::{Park, Protect, Wake};
use crate::source::{any_data, data_run, overlay_layers, Scratch, Served, Source};
use crate::stats::bump;
use bytes::Bytes;
use nix::errno::Errno;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Takes a missing fault of a range served by an object source, at a page within the object: it
/// waits in the fault table while its bytes come. Returns false for anything else (another source,
/// another kind of fault, a page past the object's end), which the synchronous path serves. `end`
/// is where the registration ends (region offset).
#[allow(clippy::too_many_arguments)]
pub fn serve_later(
    engine: &Engine,
    served: &Arc<Served>,
    region: &Arc<Region>,
    offset: usize,
    end: usize,
    address: usize,
    kind: FaultKind,
    write: bool,
    thread_id: i32,
) -> bool {
    let Source::Object(object, base, above) = served.source() else {
        return false;
    };
    // Where the faulting page is in the object (the region starts at `base` in it).
    let at = base + offset as u64;
    // Chunks that are not whole pages of this region (a 1 MiB chunk under 2 MiB huge pages) take
    // the synchronous path, which reads any range.
    if kind != FaultKind::Missing || at >= object.size() || object.chunk_size() % region.page_size() != 0 {
        return false;
    }
    // A page removed since it was mapped (a balloon) gets zeros, as its owner's kernel would give
    // it: the synchronous path maps them, with no request.
    if served.zero_removed && served.removed_at(offset).is_ok() {
        return false;
    }
    // A page a local file above the object has: the synchronous path reads it from there (and
    // says why if it cannot), with no request.
    if !above.is_empty() && data_run(above, offset, region.page_size()).map_or(true, |run| run > 0) {
        return false;
    }
    // The completion runs on the runtime and needs the engine to outlive this turn. One that is
    // closing wakes every waiter itself: nothing to do (and no request on this thread).
    let Some(engine) = engine.this().filter(|engine| !engine.is_closed()) else {
        return true;
    };
    // No runtime: the synchronous path reads it, and says why if it cannot (nothing is handed
    // over here: the caller holds the read lock).
    let Ok(runtime) = runtime() else {
        return false;
    };
    let Some(fault) = hold(&engine, region, offset, address, kind, write, thread_id) else {
        // Its page is in flight already: this fault is woken with the first one.
        return true;
    };
    object.counters.faults.fetch_add(1, Ordering::Relaxed);
    let plan = object.plan(at, region.page_size() as u64);
    object.read_ahead(&plan);
    let what = served.source().describe();
    let object: Arc<ObjectSource> = object.clone();
    let served = served.clone();
    let started = Instant::now();
    runtime.spawn(async move {
        let read = object.clone().read(plan).await;
        complete(&engine, &object, &served, &fault, (plan, started), end, read, &what);
    });
    true
}

/// Puts a fault that a source answers later in the fault table, with its deadline. `None` if its
/// page is in flight already: the fault joins that one (counted as a duplicate, woken with it).
fn hold(
    engine: &Engine,
    region: &Arc<Region>,
    offset: usize,
    address: usize,
    kind: FaultKind,
    write: bool,
    thread_id: i32,
) -> Option<Fault> {
    let fault = engine.new_fault(region.clone(), offset, address, kind, write, thread_id);
    engine.admit(&fault).then_some(fault)
}

/// A held fault whose source failed: the fallback resolves it and a `SourceFailed` notice says
/// why (`what` names the source), before the fallback wakes its thread. While the store is down
/// one fault says so per outage; the others are counted (`fallback_pages`). Nothing if the fault
/// was settled meanwhile.
fn fail(engine: &Engine, object: &ObjectSource, id: u64, what: &str, err: Error) {
    let Some(entry) = engine.take_fault(id) else {
        return;
    };
    bump(&engine.counters().errors);
    let fault = entry.fault;
    if object.fell_back(&fault.region, fault.offset, fault.region.page_size()) {
        let notice = source_failed_notice(fault.clone(), what, err);
        if engine.fallback_policy() == Fallback::Sigbus && fault.region.kind() != MemoryKind::Remote {
            // A thread of this process gets SIGBUS, which ends the process before any event is
            // read: the reason is written where it is seen first.
            eprintln!(
                "userfaultfd: {} (with fallback 'sigbus': the thread gets SIGBUS)",
                notice.text(&crate::error::Core)
            );
        }
        // Said before the fallback wakes the thread: when it runs again (a SIGBUS, a zero page
        // it acts on), the word is on its way already.
        engine.say(notice);
    }
    if let Fell::Failed(notice) = engine.fall_back(&fault, Park::UntilRead) {
        engine.say(notice);
    }
}

/// Who had to resolve a fault, for a timeout's message: a held fault is its object source's.
pub fn resolver_of(engine: &Engine, fault: &Fault) -> String {
    match engine.registration_at(fault.region.address() + fault.offset).and_then(|reg| reg.served) {
        Some(served) if served.source().object().is_some() => served.source().describe(),
        _ => "the handler".into(),
    }
}

/// Maps what was read for a held fault from its page on (clipped to its registration and region,
/// zeros after the object's end) and wakes it; or, if the read failed, falls back. With a residency
/// limit the pages are mapped write-protected and noted (a write's own page let in at once).
/// `started`: when the fault was held, for its latency.
#[allow(clippy::too_many_arguments)]
fn complete(
    engine: &Engine,
    object: &ObjectSource,
    served: &Served,
    fault: &Fault,
    (plan, started): (Plan, Instant),
    end: usize,
    read: Result<Bytes>,
    what: &str,
) {
    let mut bytes = match read {
        Ok(bytes) => bytes,
        Err(err) => return fail(engine, object, fault.id, what, err),
    };
    if engine.in_flight(fault.id).is_none() {
        // Settled meanwhile (its deadline passed, its region or the fd closed): the bytes stay cached.
        return;
    }
    let resolver = engine.resolver();
    let region = &fault.region;
    let len =
        ((plan.end - plan.start) as usize).min(end.saturating_sub(fault.offset)).min(region.size() - fault.offset);
    let len = len.max(region.page_size());
    let Source::Object(_, base, above) = served.source() else {
        return fail(
            engine,
            object,
            fault.id,
            what,
            Error::invalid("map", "the range is no longer served by an object"),
        );
    };
    let base = *base;
    // The object's last page: zeros after its end.
    if bytes.len() < len {
        let mut padded = vec![0; len];
        padded[..bytes.len()].copy_from_slice(&bytes);
        bytes = Bytes::from(padded);
    }
    bytes.truncate(len);
    // Pages of the window that a local file above the object has come from that file (the
    // chunk is copied only when one has some).
    let overlaid = |bytes: &Bytes| -> Result<Option<Bytes>> {
        if above.is_empty() || !any_data(above, fault.offset, bytes.len())? {
            return Ok(None);
        }
        let mut layered = bytes.to_vec();
        overlay_layers(above, fault.offset, &mut layered)?;
        Ok(Some(Bytes::from(layered)))
    };
    // A hole of a pushed snapshot with nothing above it is mapped with zero pages, as a local
    // file's hole is, and counted as one.
    let mut hole = object.is_hole(plan.index);
    match overlaid(&bytes) {
        Ok(Some(layered)) => (bytes, hole) = (layered, false),
        Ok(None) => {}
        Err(err) => return fail(engine, object, fault.id, what, err),
    }
    let bytes = &bytes[..];
    // Counted before the ioctl wakes the faulting thread, which may read the counters at once.
    bump(&resolver.counters.native);
    // A fault that waited for the network gets its own page first: its thread runs on while the
    // rest of the chunk is mapped (a first byte costs one request, not one request and a 4 MiB copy).
    let page = region.page_size();
    let first = if plan.waits && bytes.len() > page { page } else { bytes.len() };
    let residency = served.residency();
    let protect = Protect(residency.is_some());
    let copy = |at: usize, bytes: &[u8]| {
        let mapped = if hole {
            bump(&resolver.counters.holes);
            map_zeros(resolver, region, at, bytes.len(), protect.0, &mut Scratch::default(), Park::UntilRead)?
        } else {
            resolver.copy(region, at, bytes, Wake(true), protect, Park::UntilRead)?
        };
        if let (Some(residency), true) = (residency, mapped > 0) {
            residency.mapped(at, mapped);
        }
        // A working-set trace records what faults mapped, by its place in the object.
        if let (Some(recorder), true) = (&served.recorder, mapped > 0) {
            recorder.touch(base + at as u64, mapped as u64, page as u64);
        }
        Ok(mapped)
    };
    // A window reaching into memory the peer unmapped since is refused whole: map the page alone.
    let copied = match copy(fault.offset, &bytes[..first]) {
        Err(err) if first > page && crate::native::gone_under(&err) => copy(fault.offset, &bytes[..page]),
        other => other,
    };
    match copied {
        Ok(_) => {
            // Its thread runs again: the fault's latency, as the sources served in the turn count it.
            engine.record_latency(started.elapsed());
            if let (Some(residency), true) = (residency, fault.write) {
                // The write that faulted would fault again at once on the protection: let in now.
                let unprotect = |at: usize, len: usize| resolver.write_protect_at(region.address() + at, len, false);
                let _ = residency.written(fault.offset, page, unprotect);
            }
            engine.settle(fault.id, true);
            if first < bytes.len() {
                // The woken thread is often queued on this CPU: let it run before the long copy.
                std::thread::yield_now();
                // Stops at a page already there (EEXIST): what it did not map faults again.
                let _ = copy(fault.offset + first, &bytes[first..]);
            }
        }
        Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
            bump(&resolver.counters.eexist);
            region.note_mapped(fault.offset, region.page_size());
            let _ = resolver.wake(region, fault.offset, region.page_size());
            engine.forget_faults(|f| f.id == fault.id);
            engine.settle(fault.id, true);
        }
        // The process that owns the memory exited while the bytes came (its hang-up is said on
        // its own), or the fd closed: nobody waits for this fault any more, and nothing failed.
        Err(Error::Sys { errno: Errno::ESRCH, .. } | Error::Closed { .. }) => {
            resolver.counters.native.fetch_sub(1, Ordering::Relaxed);
            drop(engine.take_fault(fault.id));
        }
        Err(err) => {
            resolver.counters.native.fetch_sub(1, Ordering::Relaxed);
            fail(engine, object, fault.id, what, err);
        }
    }
}

impl Source {
    /// The object source, if this is one.
    pub fn object(&self) -> Option<&Arc<ObjectSource>> {
        match self {
            Source::Object(object, ..) => Some(object),
            _ => None,
        }
    }
}
