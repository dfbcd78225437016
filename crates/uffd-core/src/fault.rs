//! What a reader hands to a handler, the batch: faults to resolve, non-cooperative events, and
//! notices of what went wrong.

use crate::error::{Advice, Dialect, Error};
use crate::region::Region;
use std::any::Any;
use std::sync::Arc;

pub use crate::sys::msg::FaultKind;

/// A page fault waiting for its resolution.
#[derive(Clone)]
pub struct Fault {
    pub id: u64,
    pub region: Arc<Region>,
    /// Offset in the region of the faulting page (page-aligned).
    pub offset: usize,
    /// The faulting address itself (exact where EXACT_ADDRESS was negotiated).
    pub address: usize,
    pub kind: FaultKind,
    pub write: bool,
    /// The faulting thread's id (0 without THREAD_ID).
    pub thread_id: u32,
}

/// What kind of trouble a notice reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The handler's own thread faulted: it was resolved by the fallback.
    SelfFault,
    /// The handler did not resolve the fault in time: it was resolved by the fallback.
    Timeout,
    /// The handler went away with the fault unresolved: it was resolved by the fallback.
    HandlerGone,
    /// A fault at an address no registration covers: the thread was woken.
    UnknownAddress,
    /// The fallback resolution itself failed: the thread was woken.
    FallbackFailed,
    /// The fault loop stopped on an error.
    LoopFailed,
    /// The process whose memory was served hung up; the userfaultfd was closed.
    PeerGone,
    /// A fault arrived with no handler installed or being started, and no native source: it
    /// waits for one.
    NoHandler,
    /// The same, taken by the thread that alone could install the handler: the fallback resolved it.
    NoHandlerFellBack,
    /// A native source could not read its bytes: the fault was resolved by the fallback.
    SourceFailed,
    /// A fault resolved with DONTWAKE was still asleep at its deadline: it was woken.
    NotWoken,
    /// A written page could not be written back before it was dropped: it stays written and
    /// resident, and the next flush tries it again.
    WriteBackFailed,
}

impl NoticeKind {
    pub fn name(self) -> &'static str {
        match self {
            NoticeKind::SelfFault => "self-fault",
            NoticeKind::Timeout => "timeout",
            NoticeKind::HandlerGone => "handler-gone",
            NoticeKind::UnknownAddress => "unknown-address",
            NoticeKind::FallbackFailed => "fallback-failed",
            NoticeKind::LoopFailed => "loop-failed",
            NoticeKind::PeerGone => "peer-gone",
            NoticeKind::NoHandler => "no-handler",
            NoticeKind::NoHandlerFellBack => "no-handler-fell-back",
            NoticeKind::SourceFailed => "source-failed",
            NoticeKind::NotWoken => "not-woken",
            NoticeKind::WriteBackFailed => "write-back-failed",
        }
    }
}

/// Something the handler's side should hear about (an 'error' event in JavaScript).
pub struct Notice {
    pub kind: NoticeKind,
    /// What happened, in the core's terms; `advice` goes after it.
    pub message: String,
    pub advice: Vec<Advice>,
    pub fault: Option<Fault>,
    pub cause: Option<Error>,
}

impl Notice {
    /// The message and its advice in `dialect`'s terms.
    pub fn text(&self, dialect: &dyn Dialect) -> String {
        self.advice.iter().fold(self.message.clone(), |text, advice| text + dialect.advice(advice))
    }
}

/// One item of a batch handed to a handler.
pub enum Dispatch {
    Fault(Fault),
    Notice(Notice),
    Event(UffdEvent),
}

/// A non-cooperative event, as the handler receives it.
pub enum UffdEvent {
    /// `madvise(MADV_DONTNEED/MADV_REMOVE)`: the pages are gone; later touches are missing faults again.
    Remove { region: Option<Arc<Region>>, start: usize, end: usize },
    /// `munmap` (or a mapping replaced): the range is no longer registered.
    Unmap { region: Option<Arc<Region>>, start: usize, end: usize },
    /// `mremap`: the range moved, and stays registered at its new place: `moved` is a remote
    /// region there whose faults reach the handler (offset 0 is the old range's `from`).
    Remap { region: Option<Arc<Region>>, from: usize, to: usize, len: usize, moved: Option<Arc<Region>> },
    /// `fork`: the child has a userfaultfd of its own over the same ranges (remote regions at the
    /// parent's addresses), or `None` if adopting it failed (its fd is closed: the child's faults
    /// there are then the kernel's own).
    Fork { child: Option<Child> },
}

/// The userfaultfd adopted for a forked child, and the child's regions. What serves it is opaque
/// here: `Userfaultfd::of_child` gives it back.
pub struct Child {
    pub regions: Vec<Arc<Region>>,
    pub uffd: Arc<dyn Any + Send + Sync>,
}

/// The receiving end of the fault loop: a JavaScript thread in the binding, a test's channel here.
pub trait FaultSink: Send + Sync {
    /// Hands over a batch; gives it back when the receiver is gone.
    fn deliver(&self, batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>>;
}
