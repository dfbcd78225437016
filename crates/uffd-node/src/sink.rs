//! The fault loop's batches reach a JavaScript thread through one threadsafe function call each.

use napi::bindgen_prelude::Function;
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use std::sync::{Arc, Mutex};
use uffd_core::{Dispatch, FaultSink};

/// The call only says "take what is in the mailbox": the handler's thread then takes the batch
/// into a typed array it reuses (`takeFaults`), which costs far less than napi objects.
type BatchFunction<const WEAK: bool> = ThreadsafeFunction<(), (), (), Status, false, WEAK>;

/// Items waiting for the JavaScript thread, and whether a call to take them is already queued.
/// While one is queued, later batches join it: a busy handler thread gets everything that arrived
/// meanwhile in one call, instead of one call per read of the fd.
#[derive(Default)]
pub(crate) struct Mailbox {
    items: Vec<Dispatch>,
    call_queued: bool,
}

impl Mailbox {
    /// Everything that waits, unpacked.
    pub(crate) fn take_all(&mut self) -> Vec<Dispatch> {
        std::mem::take(&mut self.items)
    }

    /// Puts back what was taken and not used (faults that did not fit a batch), ahead of what
    /// came since, for the next take.
    pub(crate) fn put_back(&mut self, mut rest: Vec<Dispatch>) {
        rest.append(&mut self.items);
        self.items = rest;
    }
}

/// A handler on a JavaScript thread; a weak one does not keep the thread's event loop alive.
pub struct JsSink {
    function: Caller,
    mailbox: Arc<Mutex<Mailbox>>,
}

pub(crate) type SharedMailbox = Arc<Mutex<Mailbox>>;

enum Caller {
    Weak(BatchFunction<true>),
    Strong(BatchFunction<false>),
}

pub(crate) fn lock(mailbox: &Mutex<Mailbox>) -> std::sync::MutexGuard<'_, Mailbox> {
    mailbox.lock().unwrap_or_else(|p| p.into_inner())
}

impl JsSink {
    /// Wraps `callback`; unless `keep_alive`, the pending calls do not keep the thread's event
    /// loop alive (a worker that serves faults must stay alive; a main thread need not).
    pub fn new(callback: Function<(), ()>, keep_alive: bool) -> napi::Result<Self> {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let inbox = mailbox.clone();
        let to_js = move |_: ThreadsafeCallContext<()>| {
            lock(&inbox).call_queued = false;
            Ok(())
        };
        let builder = callback.build_threadsafe_function::<()>();
        let function = if keep_alive {
            Caller::Strong(builder.weak::<false>().build_callback(to_js)?)
        } else {
            Caller::Weak(builder.weak::<true>().build_callback(to_js)?)
        };
        Ok(JsSink { function, mailbox })
    }

    pub(crate) fn mailbox(&self) -> SharedMailbox {
        self.mailbox.clone()
    }
}

impl FaultSink for JsSink {
    fn deliver(&self, mut batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>> {
        let mut mailbox = lock(&self.mailbox);
        mailbox.items.append(&mut batch);
        if mailbox.call_queued {
            return Ok(());
        }
        mailbox.call_queued = true;
        drop(mailbox);
        let status = match &self.function {
            Caller::Weak(function) => function.call((), ThreadsafeFunctionCallMode::NonBlocking),
            Caller::Strong(function) => function.call((), ThreadsafeFunctionCallMode::NonBlocking),
        };
        match status {
            Status::Ok => Ok(()),
            // The handler's thread is going away: give back what it will never take; the core
            // resolves the faults it had handed to this handler by the fallback.
            _ => {
                let mut mailbox = lock(&self.mailbox);
                mailbox.call_queued = false;
                Err(std::mem::take(&mut mailbox.items))
            }
        }
    }
}
