//! The calls made on every fault, as plain functions keyed by the userfaultfd's id: taking faults,
//! and every way of resolving one (`resolve*`) or leaving it (`finishFault`). This is the one road
//! a fault's call takes. A method call on a napi-rs class costs about 0.8 us here (unwrapping
//! `this`, checking its type tag, tracking the borrow), and a fault made two or three of them.
//! What they need per thread (the direct reader, the handler's mailbox) lives in a thread-local
//! table, filled by `BindingUffd`. A region or a source passed in is still a class handle, checked
//! open as every call that takes one checks it.

use crate::args::{to_id, to_opt_usize, to_usize};
use crate::batch::{js_batch, pack_into, JsDispatch, FAULT_FIELDS};
use crate::errors::{invalid, OrThrow};
use crate::options::BindingFaultMove;
use crate::region::BindingRegion;
use crate::sink::{lock, SharedMailbox};
use crate::source::BindingSource;
use napi::bindgen_prelude::{Float64ArraySlice, Uint8ArraySlice};
use napi::Env;
use napi_derive::napi;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use uffd_core::Puller;
use uffd_core::{Dispatch, Error, Finish, Resolution, Userfaultfd};

/// This thread's part in serving one userfaultfd.
#[derive(Default)]
struct Here {
    uffd: Weak<Userfaultfd>,
    puller: Option<Puller>,
    mailbox: Option<SharedMailbox>,
    /// Events and notices taken with the faults, for `takeOthers`.
    others: Vec<Dispatch>,
}

thread_local! {
    static HERE: RefCell<HashMap<u64, Here>> = RefCell::new(HashMap::new());
}

fn with_here<T>(uffd: &Arc<Userfaultfd>, f: impl FnOnce(&mut Here) -> T) -> Option<T> {
    HERE.try_with(|here| {
        let mut here = here.borrow_mut();
        let entry = here.entry(uffd.id()).or_default();
        entry.uffd = Arc::downgrade(uffd);
        f(entry)
    })
    .ok()
}

/// The handler installed on this thread takes its batches from `mailbox`.
pub(crate) fn set_mailbox(uffd: &Arc<Userfaultfd>, mailbox: SharedMailbox) {
    with_here(uffd, |here| here.mailbox = Some(mailbox));
}

/// This thread reads `uffd` itself from now on.
pub(crate) fn set_puller(uffd: &Arc<Userfaultfd>, puller: Puller) {
    with_here(uffd, |here| here.puller = Some(puller));
}

/// This thread stops reading `uffd` (only the reader of `generation`, if given); returns the
/// reader's generation if one stopped.
pub(crate) fn take_puller(id: u64, generation: Option<u64>) -> Option<u64> {
    HERE.try_with(|here| {
        let mut here = here.borrow_mut();
        let entry = here.get_mut(&id)?;
        if generation.is_some_and(|g| entry.puller.as_ref().is_some_and(|p| p.generation() != g)) {
            return None;
        }
        entry.puller.take().map(|p| p.generation())
    })
    .ok()
    .flatten()
}

/// This thread no longer serves `id`.
pub(crate) fn forget(id: u64) {
    let _ = HERE.try_with(|here| here.borrow_mut().remove(&id));
}

fn uffd_of(id: f64) -> Option<Arc<Userfaultfd>> {
    let id = id as u64;
    let known = HERE.try_with(|here| here.borrow().get(&id).and_then(|h| h.uffd.upgrade())).ok().flatten();
    known.or_else(|| Userfaultfd::lookup(id))
}

/// Writes how many faults and other items wait into `out[0]` and `out[1]`.
fn counts(out: &mut [f64], faults: usize, others: usize) {
    if let [first, second, ..] = out {
        *first = faults as f64;
        *second = others as f64;
    }
}

/// A batch array must hold the two counts and at least one fault: a panic here would abort.
fn check_room(env: &Env, out: &[f64]) -> napi::Result<()> {
    if out.len() < 2 + FAULT_FIELDS as usize {
        return Err(invalid(env, "read", format!("a batch array of {} numbers is too small", out.len())));
    }
    Ok(())
}

/// One turn of the fault loop on this thread for the reader of `generation`, written into `out`:
/// `out[0]` faults follow from `out[2]` on, `FAULT_FIELDS` numbers each; `out[1]` is how many
/// other items (events, notices) `takeOthers` returns. Faults that do not fit come with the next
/// call. False once the fd is closed or this reader no longer reads it.
#[napi]
pub fn pull_faults(
    env: Env,
    uffd_id: f64,
    generation: f64,
    wait_ms: f64,
    mut out: Float64ArraySlice<'_>,
) -> napi::Result<bool> {
    let wait = Duration::from_secs_f64(wait_ms.clamp(0.0, 60_000.0) / 1000.0);
    // SAFETY: the typed array is alive for this call, and JavaScript, which alone could touch it,
    // is stopped in this call.
    let out = unsafe { out.as_mut() };
    check_room(&env, out)?;
    let outcome = HERE.try_with(|here| {
        let mut here = here.borrow_mut();
        let Some(entry) = here.get_mut(&(uffd_id as u64)) else {
            return Ok(false);
        };
        let (Some(uffd), Some(puller)) = (entry.uffd.upgrade(), entry.puller.as_mut()) else {
            return Ok(false);
        };
        if puller.generation() as f64 != generation {
            return Ok(false);
        }
        match uffd.pull(puller, wait) {
            Ok(batch) => {
                let (faults, rest) = pack_into(batch, out, &mut entry.others);
                if !rest.is_empty() {
                    uffd.defer_to_next_pull(rest);
                }
                counts(out, faults, entry.others.len());
                Ok(true)
            }
            Err(Error::Closed { .. }) => {
                entry.puller = None;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    });
    match outcome {
        Ok(result) => result.or_throw(&env),
        Err(_) => Ok(false),
    }
}

/// Takes what the fault loop handed to this thread's handler into `out`, as `pullFaults` writes it.
/// The handler's callback calls it until `out[0]` and `out[1]` are both 0.
#[napi]
pub fn take_faults(env: Env, uffd_id: f64, mut out: Float64ArraySlice<'_>) -> napi::Result<()> {
    // SAFETY: as in `pull_faults`.
    let out = unsafe { out.as_mut() };
    check_room(&env, out)?;
    let _ = HERE.try_with(|here| {
        let mut here = here.borrow_mut();
        let (faults, others) = match here.get_mut(&(uffd_id as u64)) {
            Some(Here { mailbox: Some(mailbox), others, .. }) => {
                let mut mailbox = lock(mailbox);
                // Faults that do not fit stay for the next take.
                let (faults, rest) = pack_into(mailbox.take_all(), out, others);
                mailbox.put_back(rest);
                (faults, others.len())
            }
            Some(Here { others, .. }) => (0, others.len()),
            None => (0, 0),
        };
        counts(out, faults, others);
    });
    Ok(())
}

/// The events and notices taken with the last faults.
#[napi]
pub fn take_others(uffd_id: f64) -> Vec<JsDispatch> {
    let others = HERE
        .try_with(|here| here.borrow_mut().get_mut(&(uffd_id as u64)).map(|h| std::mem::take(&mut h.others)))
        .ok()
        .flatten()
        .unwrap_or_default();
    js_batch(others)
}

/// Resolves fault `fault_id` of userfaultfd `uffd_id` as `resolution` says; returns the bytes mapped.
fn resolve(env: &Env, uffd_id: f64, fault_id: f64, resolution: Resolution<'_>) -> napi::Result<f64> {
    let fault_id = to_id(env, fault_id)?;
    // A closed userfaultfd has no fault in flight: nothing to map, as for a fault resolved already.
    let Some(uffd) = uffd_of(uffd_id) else {
        return Ok(0.0);
    };
    uffd.resolve(fault_id, resolution).map(|n| n as f64).or_throw(env)
}

/// UFFDIO_COPY at a fault's page.
#[napi]
pub fn resolve_copy(
    env: Env,
    uffd_id: f64,
    fault_id: f64,
    bytes: Uint8ArraySlice<'_>,
    wake: bool,
    write_protect: bool,
) -> napi::Result<f64> {
    resolve(&env, uffd_id, fault_id, Resolution::Copy { bytes: &bytes, wake, protect: write_protect })
}

/// UFFDIO_ZEROPAGE at a fault's page.
#[napi]
pub fn resolve_zero(env: Env, uffd_id: f64, fault_id: f64, length: Option<f64>, wake: bool) -> napi::Result<f64> {
    let len = to_opt_usize(&env, "length", length)?;
    resolve(&env, uffd_id, fault_id, Resolution::Zero { len, wake })
}

/// UFFDIO_CONTINUE at a fault's page.
#[napi]
pub fn resolve_continue(
    env: Env,
    uffd_id: f64,
    fault_id: f64,
    length: Option<f64>,
    wake: bool,
    write_protect: bool,
) -> napi::Result<f64> {
    let len = to_opt_usize(&env, "length", length)?;
    resolve(&env, uffd_id, fault_id, Resolution::Continue { len, wake, protect: write_protect })
}

/// Lifts the write-protection of a `'wp'` fault's page.
#[napi]
pub fn resolve_unprotect(env: Env, uffd_id: f64, fault_id: f64, wake: bool) -> napi::Result<()> {
    resolve(&env, uffd_id, fault_id, Resolution::Unprotect { wake }).map(drop)
}

/// UFFDIO_MOVE to a fault's page from `how.fromOffset` of the region `from`.
#[napi]
pub fn resolve_move(
    env: Env,
    uffd_id: f64,
    fault_id: f64,
    from: &BindingRegion,
    how: BindingFaultMove,
) -> napi::Result<f64> {
    let from = from.region(&env, "UFFDIO_MOVE")?;
    let from_offset = to_usize(&env, "fromOffset", how.from_offset)?;
    let len = to_opt_usize(&env, "length", how.length)?;
    let allow_holes = how.allow_source_holes;
    resolve(&env, uffd_id, fault_id, Resolution::Move { from: &from, from_offset, len, wake: how.wake, allow_holes })
}

/// UFFDIO_POISON at a fault's page.
#[napi]
pub fn resolve_poison(env: Env, uffd_id: f64, fault_id: f64) -> napi::Result<f64> {
    resolve(&env, uffd_id, fault_id, Resolution::Poison)
}

/// UFFDIO_WAKE at a fault's page, after a resolution that did not wake.
#[napi]
pub fn resolve_wake(env: Env, uffd_id: f64, fault_id: f64) -> napi::Result<()> {
    resolve(&env, uffd_id, fault_id, Resolution::Wake).map(drop)
}

/// Resolves a fault from a source, in this call: the source's bytes at the fault's offset.
#[napi]
pub fn resolve_from_source(env: Env, uffd_id: f64, fault_id: f64, source: &BindingSource) -> napi::Result<f64> {
    let fault_id = to_id(&env, fault_id)?;
    let Some(uffd) = uffd_of(uffd_id) else {
        return Ok(0.0);
    };
    uffd.resolve_from_source(fault_id, source.for_faults()).map(|n| n as f64).or_throw(&env)
}

/// The handler is done with a fault: returns 'done', 'fell-back' or 'asleep'.
#[napi(ts_return_type = "'done' | 'fell-back' | 'asleep'")]
pub fn finish_fault(env: Env, uffd_id: f64, fault_id: f64) -> napi::Result<&'static str> {
    let fault_id = to_id(&env, fault_id)?;
    // A closed userfaultfd has no fault in flight, as for a fault resolved already.
    let finish = uffd_of(uffd_id).map_or(Finish::Done, |uffd| uffd.finish(fault_id));
    Ok(match finish {
        Finish::Done => "done",
        Finish::FellBack => "fell-back",
        Finish::Asleep => "asleep",
    })
}
