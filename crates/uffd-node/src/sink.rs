//! The fault loop's batches reach a JavaScript thread through one threadsafe function call each.

use crate::handshake::NativeAdoption;
use napi::bindgen_prelude::{BigInt, Function};
use napi::threadsafe_function::{ThreadsafeCallContext, ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use std::sync::{Arc, Mutex};
use uffd_core::{Dispatch, Fault, FaultSink, Notice, Region, UffdEvent};

/// A fault as JavaScript receives it.
#[napi(object, object_from_js = false)]
pub struct JsFault {
    pub id: f64,
    pub region_id: f64,
    pub offset: f64,
    pub address: BigInt,
    pub kind: &'static str,
    pub write: bool,
    pub thread_id: u32,
}

/// A notice as JavaScript receives it: turned into an 'error' event.
#[napi(object, object_from_js = false)]
pub struct JsNotice {
    pub kind: &'static str,
    pub message: String,
    pub fault: Option<JsFault>,
    pub cause_code: Option<&'static str>,
    pub cause_syscall: Option<&'static str>,
    pub cause_message: Option<String>,
}

/// A non-cooperative event as JavaScript receives it.
#[napi(object, object_from_js = false)]
pub struct JsEvent {
    /// 'remove', 'unmap', 'remap' or 'fork'.
    pub kind: &'static str,
    pub region_id: Option<f64>,
    /// Offset in the region of the range's start, where the region is known.
    pub offset: Option<f64>,
    pub length: Option<f64>,
    pub start: Option<BigInt>,
    pub end: Option<BigInt>,
    /// For 'remap': the new start address, and the remote region registered there.
    pub to: Option<BigInt>,
    pub moved_id: Option<f64>,
    /// For 'fork': the child's userfaultfd and its regions.
    pub child: Option<NativeAdoption>,
}

/// One item of a batch: a fault, a notice or an event.
#[napi(object, object_from_js = false)]
pub struct JsDispatch {
    pub fault: Option<JsFault>,
    pub notice: Option<JsNotice>,
    pub event: Option<JsEvent>,
}

fn js_fault(fault: Fault) -> JsFault {
    JsFault {
        id: fault.id as f64,
        region_id: fault.region.id() as f64,
        offset: fault.offset as f64,
        address: BigInt::from(fault.address as u64),
        kind: fault.kind.name(),
        write: fault.write,
        thread_id: fault.thread_id,
    }
}

fn js_notice(notice: Notice) -> JsNotice {
    JsNotice {
        kind: notice.kind.name(),
        message: notice.message,
        fault: notice.fault.map(js_fault),
        cause_code: notice.cause.as_ref().map(|e| e.code()),
        cause_syscall: notice.cause.as_ref().map(|e| e.op()),
        cause_message: notice.cause.map(|e| e.to_string()),
    }
}

fn js_range(kind: &'static str, region: Option<Arc<Region>>, start: usize, end: usize, to: Option<usize>) -> JsEvent {
    let offset = region.as_ref().and_then(|r| r.offset_of(start));
    JsEvent {
        kind,
        region_id: region.as_ref().map(|r| r.id() as f64),
        offset: offset.map(|o| o as f64),
        length: Some((end - start) as f64),
        start: Some(BigInt::from(start as u64)),
        end: Some(BigInt::from(end as u64)),
        to: to.map(|to| BigInt::from(to as u64)),
        moved_id: None,
        child: None,
    }
}

fn js_event(event: UffdEvent) -> JsEvent {
    match event {
        UffdEvent::Remove { region, start, end } => js_range("remove", region, start, end, None),
        UffdEvent::Unmap { region, start, end } => js_range("unmap", region, start, end, None),
        UffdEvent::Remap { region, from, to, len, moved } => {
            JsEvent { moved_id: moved.map(|r| r.id() as f64), ..js_range("remap", region, from, from + len, Some(to)) }
        }
        UffdEvent::Fork { child } => JsEvent {
            kind: "fork",
            region_id: None,
            offset: None,
            length: None,
            start: None,
            end: None,
            to: None,
            moved_id: None,
            child: child.map(|(uffd, regions)| NativeAdoption::new(uffd, regions, None)),
        },
    }
}

fn js_batch(batch: Vec<Dispatch>) -> Vec<JsDispatch> {
    batch
        .into_iter()
        .map(|item| match item {
            Dispatch::Fault(fault) => JsDispatch { fault: Some(js_fault(fault)), notice: None, event: None },
            Dispatch::Notice(notice) => JsDispatch { fault: None, notice: Some(js_notice(notice)), event: None },
            Dispatch::Event(event) => JsDispatch { fault: None, notice: None, event: Some(js_event(event)) },
        })
        .collect()
}

type BatchFunction<const WEAK: bool> = ThreadsafeFunction<(), (), Vec<JsDispatch>, Status, false, WEAK>;

/// Items waiting for the JavaScript thread, and whether a call to take them is already queued.
/// While one is queued, later batches join it: a busy handler thread gets everything that arrived
/// meanwhile in one call, instead of one call per read of the fd.
#[derive(Default)]
struct Mailbox {
    items: Vec<Dispatch>,
    call_queued: bool,
}

/// A handler on a JavaScript thread; a weak one does not keep the thread's event loop alive.
pub struct JsSink {
    function: Caller,
    mailbox: Arc<Mutex<Mailbox>>,
}

enum Caller {
    Weak(BatchFunction<true>),
    Strong(BatchFunction<false>),
}

fn lock(mailbox: &Mutex<Mailbox>) -> std::sync::MutexGuard<'_, Mailbox> {
    mailbox.lock().unwrap_or_else(|p| p.into_inner())
}

impl JsSink {
    /// Wraps `callback`; unless `keep_alive`, the pending calls do not keep the thread's event
    /// loop alive (a worker that serves faults must stay alive; a main thread need not).
    pub fn new(callback: Function<Vec<JsDispatch>, ()>, keep_alive: bool) -> napi::Result<Self> {
        let mailbox = Arc::new(Mutex::new(Mailbox::default()));
        let inbox = mailbox.clone();
        let to_js = move |_: ThreadsafeCallContext<()>| {
            let mut mailbox = lock(&inbox);
            mailbox.call_queued = false;
            Ok(js_batch(std::mem::take(&mut mailbox.items)))
        };
        let builder = callback.build_threadsafe_function::<()>();
        let function = if keep_alive {
            Caller::Strong(builder.weak::<false>().build_callback(to_js)?)
        } else {
            Caller::Weak(builder.weak::<true>().build_callback(to_js)?)
        };
        Ok(JsSink { function, mailbox })
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
