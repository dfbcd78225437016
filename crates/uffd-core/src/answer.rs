//! A fault's answer, by its id: the handler's resolution, a native source's at the handler's
//! word (`fromSource`), or the fallback when the handler gave none (`finish`); and faults that
//! waited for a handler served by a source attached late (`serve`).

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::fallback::{source_failed_notice, Fell};
use crate::fault::Dispatch;
use crate::fault_table::Stage;
use crate::native;
use crate::region::Region;
use crate::resolve::{Park, Protect, Wake};
use crate::source::{Scratch, Served};
use crate::stats::bump;
use crate::sys::ioctl;
use nix::errno::Errno;
use std::sync::Arc;

/// What `finish` found when the handler was done with a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Resolved and woken already (or settled by a timeout or close).
    Done,
    /// Never resolved: the fallback resolved it.
    FellBack,
    /// Resolved with DONTWAKE: its thread sleeps until a wake, or until its deadline.
    Asleep,
}

/// A resolution a handler asks for at its fault's page.
pub enum Resolution<'a> {
    Copy {
        bytes: &'a [u8],
        wake: bool,
        protect: bool,
    },
    Zero {
        len: Option<usize>,
        wake: bool,
    },
    Continue {
        len: Option<usize>,
        wake: bool,
        protect: bool,
    },
    Poison,
    Wake,
    /// Lift the write-protection of the fault's page (a wp fault).
    Unprotect {
        wake: bool,
    },
    /// Move pages from another anonymous region to the fault's page.
    Move {
        from: &'a Region,
        from_offset: usize,
        len: Option<usize>,
        wake: bool,
        allow_holes: bool,
    },
}

/// Resolves fault `id` at its page. A fault already settled (by a timeout, by close, by its
/// region's close) resolves to 0 bytes without an ioctl. EEXIST means another resolver won:
/// it is counted, the page is woken, and the call succeeds with 0 bytes.
pub fn resolve(engine: &Engine, id: u64, resolution: Resolution<'_>, park: Park<'_>) -> Result<usize> {
    let Some(fault) = engine.in_flight(id) else {
        return Ok(0);
    };
    let resolver = engine.resolver();
    let region = &fault.region;
    let page = region.page_size();
    let room = region.size() - fault.offset;
    let at = fault.offset;
    // A range with a residency limit served by its handler: what the handler maps is mapped
    // write-protected (the limit's own way of seeing writes) and noted, to be dropped in its turn.
    let served = resolver.registration_at(region.address() + at).and_then(|reg| reg.served);
    let residency = served.as_deref().and_then(Served::residency);
    let (result, wake) = match resolution {
        Resolution::Copy { bytes, wake, protect } => {
            let len = bytes.len().min(room);
            let protect = Protect(protect || residency.is_some());
            (resolver.copy(region, at, &bytes[..len], Wake(wake), protect, park), wake)
        }
        Resolution::Zero { len, wake } if residency.is_some() => {
            // ZEROPAGE has no write-protected mode: zeros are copied, protected.
            let len = len.unwrap_or(page).min(room);
            (native::map_zeros(resolver, region, at, len, true, &mut Scratch::default(), park), wake)
        }
        Resolution::Move { .. } if residency.is_some() => {
            let why = "pages moved into a range with a residency limit could not be dropped and served again \
                       (UFFDIO_MOVE has no write-protected mode): copy them (fault.copy) instead";
            return Err(Error::unsupported("UFFDIO_MOVE", why));
        }
        Resolution::Zero { len, wake } => {
            (resolver.zero(region, at, len.unwrap_or(page).min(room), Wake(wake), park), wake)
        }
        Resolution::Continue { len, wake, protect } => {
            (resolver.r#continue(region, at, len.unwrap_or(page).min(room), Wake(wake), Protect(protect), park), wake)
        }
        Resolution::Poison => (resolver.poison(region, at, page, Wake(true), park), true),
        Resolution::Wake => (resolver.wake(region, at, page).map(|()| 0), true),
        Resolution::Unprotect { wake } => {
            (resolver.write_protect(region, at, page, false, Wake(wake), park).map(|()| page), wake)
        }
        Resolution::Move { from, from_offset, len, wake, allow_holes } => {
            let len = len.unwrap_or(page).min(room);
            (resolver.r#move(region, at, from, from_offset, len, Wake(wake), allow_holes, park), wake)
        }
    };
    if let (Some(residency), Ok(mapped @ 1..)) = (residency, &result) {
        residency.mapped(at, *mapped);
        if fault.write && fault.kind == crate::fault::FaultKind::Missing {
            // The write that faulted would fault again at once on the protection: let in now.
            let unprotect = |at: usize, len: usize| resolver.write_protect_at(region.address() + at, len, false);
            let _ = residency.written(at, page, unprotect);
        }
    }
    let mapped = match result {
        Ok(mapped) => mapped,
        Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
            bump(&resolver.counters.eexist);
            if wake {
                resolver.fd.with_fd("UFFDIO_WAKE", |u| ioctl::wake(u, region.address() + at, page))?;
            }
            0
        }
        // The process that owns the memory exited, or the fd closed under the call: nobody waits
        // for this fault any more, as for a fault settled before the call.
        Err(Error::Sys { errno: Errno::ESRCH, .. }) | Err(Error::Closed { .. }) => 0,
        Err(err) => return Err(err),
    };
    engine.settle(id, wake);
    Ok(mapped)
}

/// Resolves fault `id` (handed to a handler) from a native source: the handler decides, the
/// source maps. Returns the bytes mapped (0 if the fault was already settled or another
/// resolver won).
pub fn resolve_from_source(engine: &Engine, id: u64, served: &Served, park: Park<'_>) -> Result<usize> {
    let Some(fault) = engine.in_flight(id) else {
        return Ok(0);
    };
    let region = &fault.region;
    let end = engine.registration_at(region.address() + fault.offset).map_or(region.size(), |reg| reg.end);
    let end = end.saturating_sub(region.address()).max(fault.offset + region.page_size());
    let mut scratch = Scratch::default();
    let served_now = native::serve(
        engine.resolver(),
        served,
        region,
        fault.offset,
        end,
        fault.kind,
        fault.write,
        &mut scratch,
        park,
    );
    match served_now {
        Some(Ok(mapped)) => {
            engine.settle(id, true);
            Ok(mapped)
        }
        Some(Err(err)) => Err(err),
        // `served` here never falls through: only a kind the source does not serve gives None.
        None => Err(Error::invalid("fromSource", format!("this source does not serve {} faults", fault.kind.name()))),
    }
}

/// The handler is done with fault `id`: resolve it by the fallback if it was not. One resolved
/// with DONTWAKE stays asleep, as the kernel's DONTWAKE means, until `wake` or its deadline.
pub fn finish(engine: &Engine, id: u64) -> Finish {
    let entry = match engine.take_unresolved(id) {
        Ok(entry) => entry,
        Err(None) => return Finish::Done,
        Err(Some(_)) => return Finish::Asleep,
    };
    bump(&engine.counters().errors);
    if let Fell::Failed(notice) = engine.fall_back(&entry.fault, Park::UntilRead) {
        engine.say(notice);
    }
    Finish::FellBack
}

/// Serves `[offset, offset + len)` of a region that is registered already (another process's
/// memory, registered by that process) from a native source: no ioctl. Faults that came before
/// the source (the peer runs as soon as it has sent its handshake) and wait for a handler are
/// served now: those held for a handler, and those a reader has read and not handed over yet (it
/// looked the range up before the source came; it drops them when it hands them over, see
/// `Handlers::hold_for_handler`). Faults handed to a handler stay its own.
pub fn serve(
    engine: &Engine,
    region: &Arc<Region>,
    offset: usize,
    len: Option<usize>,
    served: Arc<Served>,
) -> Result<()> {
    const OP: &str = "serve";
    let len = len.unwrap_or(region.size().saturating_sub(offset));
    let start = engine.resolver().attach(OP, region, offset, len, &served)?;
    let covered =
        |f: &crate::fault::Fault| Arc::ptr_eq(&f.region, region) && (offset..offset + len).contains(&f.offset);
    // Taken from the table (what a reader hands over from now on is dropped, no longer in
    // flight), then out of the handlers' queue.
    let held = engine.take_faults_where(|entry| {
        entry.delivered_to.is_none() && entry.stage == Stage::Waiting && covered(&entry.fault)
    });
    drop(engine.take_queued(|item| matches!(item, Dispatch::Fault(f) if covered(f))));
    let mut scratch = Scratch::default();
    let end = start + len - region.address();
    for entry in held {
        let fault = entry.fault;
        match native::serve(
            engine.resolver(),
            &served,
            region,
            fault.offset,
            end,
            fault.kind,
            fault.write,
            &mut scratch,
            Park::UntilRead,
        ) {
            Some(Ok(_)) => {}
            // The memory's owner exited, or the fd closed: nobody waits for this fault any more.
            Some(Err(Error::Sys { errno: Errno::ESRCH, .. }) | Err(Error::Closed { .. })) => {}
            // As for a fault the source takes from a reader: the fallback, and the owner hears why.
            Some(Err(err)) => {
                bump(&engine.counters().errors);
                let what = served.source().describe();
                let notice = engine
                    .fall_back(&fault, Park::UntilRead)
                    .or_say(|| source_failed_notice(fault.clone(), &what, err));
                engine.say(notice);
            }
            // Past a fallthrough source's end: the handler's, as it was before the source came.
            None => {
                engine.readmit(&fault);
                engine.hand_over(vec![Dispatch::Fault(fault)]);
            }
        }
    }
    Ok(())
}
