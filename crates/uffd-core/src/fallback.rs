//! What resolves a fault its handler or source cannot: the fallback policy, and the notices that
//! say why a fault got it.

use crate::error::{Advice, Error};
use crate::fault::{Fault, FaultKind, Notice, NoticeKind};
use crate::fault_table::{InFlight, Stage};
use crate::options::Fallback;
use crate::region::{base_page_size, MemoryKind};
use crate::resolve::{Park, Resolver};
use crate::stats::bump;
use crate::sys::ioctl;
use nix::errno::Errno;
use std::sync::atomic::Ordering;

/// What the fallback did.
pub enum Fell {
    /// The fault is resolved (or nobody waits for it any more).
    Resolved,
    /// Refused for an unread event, with `Park::Never`: the reader retries after its turn.
    Refused,
    /// It failed: the thread was woken (it faults again if its page is still absent).
    Failed(Notice),
}

impl Fell {
    /// The notice of a failed fallback, else `say`'s.
    pub fn or_say(self, say: impl FnOnce() -> Notice) -> Notice {
        match self {
            Fell::Failed(notice) => notice,
            _ => say(),
        }
    }
}

/// Resolves a fault by the fallback policy. With `Park::Never` an EAGAIN is `Refused` (retried
/// after the turn); otherwise it is a failure like any other.
pub fn fall_back(resolver: &Resolver, policy: Fallback, fault: &Fault, park: Park<'_>) -> Fell {
    bump(&resolver.counters.fallbacks);
    let fd = &resolver.fd;
    let region = &fault.region;
    let page = region.page_size();
    let address = region.address() + fault.offset;
    let attempt = || match (policy, fault.kind, region.kind()) {
        (Fallback::Sigbus, _, _) => fd.with_fd("UFFDIO_POISON", |u| ioctl::poison(u, address, page, 0)),
        (_, FaultKind::Minor, _) => fd.with_fd("UFFDIO_CONTINUE", |u| ioctl::r#continue(u, address, page, 0)),
        (_, FaultKind::WriteProtect, _) => {
            fd.with_fd("UFFDIO_WRITEPROTECT", |u| ioctl::write_protect(u, address, page, false, true).map(|()| page))
        }
        (_, FaultKind::Missing, MemoryKind::Hugetlb) | (_, FaultKind::Missing, MemoryKind::Remote)
            if page > base_page_size() =>
        {
            let zeros = vec![0u8; page];
            fd.with_fd("UFFDIO_COPY", |u| ioctl::copy(u, address, &zeros, 0))
        }
        (_, FaultKind::Missing, _) => fd.with_fd("UFFDIO_ZEROPAGE", |u| ioctl::zeropage(u, address, page, true)),
    };
    // Never parked: the caller may be the only reader of the events the kernel waits for.
    match attempt() {
        Ok(mapped) => {
            resolver.counters.bytes_mapped.fetch_add(mapped as u64, Ordering::Relaxed);
            Fell::Resolved
        }
        Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
            resolver.wake_page(region, fault.offset);
            Fell::Resolved
        }
        // Closed, or the memory's owner exited: nobody waits for this fault any more.
        Err(Error::Closed { .. }) | Err(Error::Sys { errno: Errno::ESRCH, .. }) => Fell::Resolved,
        // An event is unread and only the caller's turn reads events: it retries after it.
        Err(Error::Sys { errno: Errno::EAGAIN, .. }) if matches!(park, Park::Never) => Fell::Refused,
        Err(err) => {
            // Never leave the thread asleep: wake it; it faults again if the page is still absent.
            resolver.wake_page(region, fault.offset);
            bump(&resolver.counters.errors);
            Fell::Failed(Notice {
                kind: NoticeKind::FallbackFailed,
                message: format!(
                    "the fallback resolution of a {} fault at offset {} failed: {err}",
                    fault.kind.name(),
                    fault.offset
                ),
                advice: Vec::new(),
                fault: Some(fault.clone()),
                cause: Some(err),
            })
        }
    }
}

/// Settles a fault its handler can no longer answer: one asleep after DONTWAKE is woken (its page
/// is there), any other gets the fallback. Returns the notice that says so (`say` words it for a
/// fault the fallback resolved), and the fault if the fallback was refused (`Park::Never`) and must
/// be retried after the turn.
pub fn abandon(
    resolver: &Resolver,
    policy: Fallback,
    entry: InFlight,
    park: Park<'_>,
    say: impl FnOnce(&Fault) -> Notice,
) -> (Notice, Option<Fault>) {
    bump(&resolver.counters.errors);
    let fault = &entry.fault;
    match entry.stage {
        Stage::Asleep => {
            resolver.wake_page(&fault.region, fault.offset);
            bump(&resolver.counters.wakes);
            (not_woken_notice(fault), None)
        }
        Stage::Waiting => match fall_back(resolver, policy, fault, park) {
            Fell::Refused => (say(fault), Some(entry.fault)),
            fell => (fell.or_say(|| say(fault)), None),
        },
    }
}

/// The notice of a fault resolved with DONTWAKE and never woken, which was woken.
fn not_woken_notice(fault: &Fault) -> Notice {
    Notice {
        kind: NoticeKind::NotWoken,
        message: format!(
            "a {} fault at offset {} of region {} was resolved with {{ wake: false }} and never woken: it was woken",
            fault.kind.name(),
            fault.offset,
            fault.region.id()
        ),
        advice: Vec::new(),
        fault: Some(fault.clone()),
        cause: None,
    }
}

/// What `abandon` will say of a fault its handler left when it went away (said before it acts).
pub fn abandoned_notice(entry: &InFlight) -> Notice {
    match entry.stage {
        Stage::Asleep => not_woken_notice(&entry.fault),
        Stage::Waiting => handler_gone_notice(&entry.fault),
    }
}

/// The notice of a fault whose source (`what`) failed with `err`, resolved by the fallback.
pub fn source_failed_notice(fault: Fault, what: &str, err: Error) -> Notice {
    Notice {
        kind: NoticeKind::SourceFailed,
        message: format!(
            "{what} could not serve a {} fault at offset {} of region {} ({err}): it was resolved by the fallback",
            fault.kind.name(),
            fault.offset,
            fault.region.id()
        ),
        advice: Vec::new(),
        fault: Some(fault),
        cause: Some(err),
    }
}

/// The notice of a fault that no handler will serve: `now` if it was resolved by the fallback at once.
pub fn no_handler_notice(fault: &Fault, now: bool) -> Notice {
    let (what, advice) = if now {
        (
            ": it was taken by the thread that would have to install the handler, so it was resolved by the fallback at once",
            vec![Advice::InstallHandler],
        )
    } else {
        ("", vec![Advice::WaitForHandler, Advice::InstallHandler])
    };
    Notice {
        kind: if now { NoticeKind::NoHandlerFellBack } else { NoticeKind::NoHandler },
        message: format!(
            "a {} fault at offset {} of region {} arrived with no handler installed and no native source{what}",
            fault.kind.name(),
            fault.offset,
            fault.region.id()
        ),
        advice,
        fault: Some(fault.clone()),
        cause: None,
    }
}

/// The notice of a fault taken by the handler's own thread, which the fallback resolved.
pub fn self_fault_notice(fault: Fault) -> Notice {
    Notice {
        kind: NoticeKind::SelfFault,
        message: format!(
            "the handler's own thread (tid {}) touched registered memory at offset {} of region {}: \
             a handler cannot serve its own thread, so the fault was resolved by the fallback",
            fault.thread_id,
            fault.offset,
            fault.region.id()
        ),
        advice: vec![Advice::HandleOnAnotherThread],
        fault: Some(fault),
        cause: None,
    }
}

/// The notice of a fault the handler left unresolved when it went away.
pub fn handler_gone_notice(fault: &Fault) -> Notice {
    Notice {
        kind: NoticeKind::HandlerGone,
        message: format!(
            "the handler went away with a {} fault at offset {} unresolved: it was resolved by the fallback",
            fault.kind.name(),
            fault.offset
        ),
        advice: Vec::new(),
        fault: Some(fault.clone()),
        cause: None,
    }
}
