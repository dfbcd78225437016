//! Non-cooperative events (REMOVE, UNMAP, REMAP, FORK): what they do to the registrations and the
//! faults in flight before any fault read after them is served. While an event is unread the
//! kernel refuses every resolving ioctl with EAGAIN (see `resolve::Park`).

use crate::fault::UffdEvent;
use crate::fault_table::FaultTable;
use crate::region::Region;
use crate::resolve::Resolver;
use crate::stats::bump;
use std::sync::{Arc, Mutex};

/// Applies an event to the registrations and the faults in flight.
pub fn apply(resolver: &Resolver, table: &Mutex<FaultTable>, event: &mut UffdEvent) {
    bump(&resolver.counters.events);
    match event {
        UffdEvent::Unmap { start, end, .. } => forget_range(resolver, table, *start, *end),
        UffdEvent::Remap { region, from, to, len, moved } => {
            forget_range(resolver, table, *from, *from + *len);
            *moved = region.as_ref().and_then(|old| follow_remap(resolver, old, *to, *len));
        }
        UffdEvent::Remove { start, end, .. } => note_removed(resolver, *start, *end),
        UffdEvent::Fork { .. } => {}
    }
}

/// A range was removed: the sources serving it learn of it.
fn note_removed(resolver: &Resolver, start: usize, end: usize) {
    let registrations = resolver.registrations();
    for (reg_start, reg) in registrations.overlapping(start, end) {
        let base = reg.region.address();
        let (from, to) = (start.max(reg_start) - base, end.min(reg.end) - base);
        reg.region.note_gone(from, to - from);
        if let Some(served) = &reg.served {
            served.note_removed(from, to);
        }
    }
}

/// The kernel keeps a moved range registered with this fd: register a remote region there, so
/// that its faults reach the handler instead of being taken for faults in no region.
fn follow_remap(resolver: &Resolver, old: &Region, to: usize, len: usize) -> Option<Arc<Region>> {
    match Region::remote(to, len, old.page_size()) {
        Ok(moved) => {
            resolver.registrations_mut().insert(moved.clone(), None);
            Some(moved)
        }
        Err(err) => {
            eprintln!("userfaultfd: the range moved to {to:#x} cannot be followed: {err}");
            None
        }
    }
}

/// Drops registrations and faults in flight in `[start, end)`: the memory is no longer there.
fn forget_range(resolver: &Resolver, table: &Mutex<FaultTable>, start: usize, end: usize) {
    let mut registrations = resolver.registrations_mut();
    for (reg_start, reg) in registrations.overlapping(start, end) {
        let (from, to) = (start.max(reg_start), end.min(reg.end));
        reg.region.note_gone(from - reg.region.address(), to - from);
    }
    registrations.carve(start, end);
    drop(registrations);
    let duplicated = table.lock().unwrap_or_else(|p| p.into_inner()).forget(|fault| {
        let at = fault.region.address() + fault.offset;
        (start..end).contains(&at)
    });
    for entry in duplicated {
        resolver.wake_page(&entry.fault.region, entry.fault.offset);
    }
}
