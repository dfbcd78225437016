//! A batch as JavaScript receives it. Faults come packed into a Float64Array the handler's thread
//! reuses (`pack_into`, `FAULT_FIELDS` numbers each): no object per fault. Events and notices,
//! rare, come as objects (`js_batch`); a fork's event carries the child's adoption.

use crate::adoption::BindingAdoption;
use napi::bindgen_prelude::BigInt;
use napi_derive::napi;
use std::sync::Arc;
use uffd_core::{Dispatch, Fault, FaultKind, Notice, Region, UffdEvent};

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
    /// The cause's errno, negative as in Node.
    pub cause_errno: Option<i32>,
    /// The cause's HTTP status, when a remote store answered with one.
    pub cause_status: Option<u32>,
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
    pub child: Option<BindingAdoption>,
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
        message: notice.text(&crate::errors::JavaScript),
        fault: notice.fault.map(js_fault),
        cause_code: notice.cause.as_ref().map(|e| e.code()),
        cause_syscall: notice.cause.as_ref().map(|e| e.op()),
        cause_errno: notice.cause.as_ref().map(|e| -(e.errno() as i32)),
        cause_status: notice.cause.as_ref().and_then(|e| e.status()).map(u32::from),
        cause_message: notice.cause.as_ref().map(crate::errors::message),
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
            child: child
                .and_then(uffd_core::Userfaultfd::of_child)
                .map(|(uffd, regions)| BindingAdoption::new(uffd, regions, None)),
        },
    }
}

pub(crate) fn js_batch(batch: Vec<Dispatch>) -> Vec<JsDispatch> {
    batch
        .into_iter()
        .map(|item| match item {
            Dispatch::Fault(fault) => JsDispatch { fault: Some(js_fault(fault)), notice: None, event: None },
            Dispatch::Notice(notice) => JsDispatch { fault: None, notice: Some(js_notice(notice)), event: None },
            Dispatch::Event(event) => JsDispatch { fault: None, notice: None, event: Some(js_event(event)) },
        })
        .collect()
}

/// Numbers per fault in a packed batch: id, region id, offset, the faulting address less the
/// region's start, kind (0 missing, 1 minor, 2 wp), write (0 or 1), thread id. Every value fits a
/// double exactly.
/// (Exported: the TypeScript side unpacks the batches with it.)
#[napi]
pub const FAULT_FIELDS: u32 = 7;
const FIELDS: usize = FAULT_FIELDS as usize;

fn fault_fields(fault: &Fault) -> [f64; FIELDS] {
    [
        fault.id as f64,
        fault.region.id() as f64,
        fault.offset as f64,
        // Relative to the region, so that it stays exact in a double whatever the address space.
        (fault.address - fault.region.address()) as f64,
        match fault.kind {
            FaultKind::Missing => 0.0,
            FaultKind::Minor => 1.0,
            FaultKind::WriteProtect => 2.0,
        },
        if fault.write { 1.0 } else { 0.0 },
        f64::from(fault.thread_id),
    ]
}

/// Packs the faults of a batch into `out` from `out[2]` on, and moves events and notices to
/// `others`. Returns how many faults were written, and the faults that did not fit.
pub(crate) fn pack_into(batch: Vec<Dispatch>, out: &mut [f64], others: &mut Vec<Dispatch>) -> (usize, Vec<Dispatch>) {
    let room = out.len().saturating_sub(2) / FIELDS;
    let mut written = 0;
    let mut rest = Vec::new();
    for item in batch {
        match item {
            Dispatch::Fault(fault) if written < room => {
                let at = 2 + written * FIELDS;
                out[at..at + FIELDS].copy_from_slice(&fault_fields(&fault));
                written += 1;
            }
            fault @ Dispatch::Fault(_) => rest.push(fault),
            other => others.push(other),
        }
    }
    (written, rest)
}
