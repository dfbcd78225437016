//! What a userfaultfd counted and measured, as JavaScript receives it.

use napi_derive::napi;
use uffd_core::Userfaultfd;

#[napi(object, object_from_js = false)]
pub struct BindingStats {
    pub faults_missing: f64,
    pub faults_minor: f64,
    pub faults_wp: f64,
    pub duplicates: f64,
    pub copies: f64,
    pub zeropages: f64,
    pub continues: f64,
    pub poisons: f64,
    pub wakes: f64,
    pub native: f64,
    pub write_protects: f64,
    pub moves: f64,
    pub parked: f64,
    pub events: f64,
    pub bytes_mapped: f64,
    pub eexist: f64,
    pub batches: f64,
    pub messages: f64,
    pub fallbacks: f64,
    pub self_faults: f64,
    pub timeouts: f64,
    pub errors: f64,
    pub in_flight: f64,
    pub queued: f64,
    pub holes: f64,
    /// Residency limits and write-back: pages resident now, of them written and not written back,
    /// dropped, mapped again, written back, and write-backs that failed.
    pub resident_pages: f64,
    pub dirty_pages: f64,
    pub write_backs: f64,
    pub write_back_errors: f64,
    pub evictions: f64,
    pub eviction_batches: f64,
    pub refaults: f64,
    pub eviction_stalls: f64,
    /// Threads that read the fd.
    pub readers: f64,
}

pub(crate) fn stats_of(uffd: &Userfaultfd) -> BindingStats {
    let s = uffd.stats();
    BindingStats {
        readers: uffd.readers() as f64,
        faults_missing: s.faults_missing as f64,
        faults_minor: s.faults_minor as f64,
        faults_wp: s.faults_wp as f64,
        duplicates: s.duplicates as f64,
        copies: s.copies as f64,
        zeropages: s.zeropages as f64,
        continues: s.continues as f64,
        poisons: s.poisons as f64,
        wakes: s.wakes as f64,
        native: s.native as f64,
        holes: s.holes as f64,
        write_protects: s.write_protects as f64,
        moves: s.moves as f64,
        parked: s.parked as f64,
        events: s.events as f64,
        bytes_mapped: s.bytes_mapped as f64,
        eexist: s.eexist as f64,
        batches: s.batches as f64,
        messages: s.messages as f64,
        fallbacks: s.fallbacks as f64,
        self_faults: s.self_faults as f64,
        timeouts: s.timeouts as f64,
        errors: s.errors as f64,
        in_flight: s.in_flight as f64,
        queued: s.queued as f64,
        resident_pages: s.resident_pages as f64,
        dirty_pages: s.dirty_pages as f64,
        write_backs: s.write_backs as f64,
        write_back_errors: s.write_back_errors as f64,
        evictions: s.evictions as f64,
        eviction_batches: s.eviction_batches as f64,
        refaults: s.refaults as f64,
        eviction_stalls: s.eviction_stalls as f64,
    }
}

/// Native faults' latency and when the first fault came.
#[napi(object, object_from_js = false)]
pub struct BindingLatency {
    pub count: f64,
    pub p50_micros: f64,
    pub p99_micros: f64,
    pub first_fault_ms: Option<f64>,
}

pub(crate) fn latency_of(uffd: &Userfaultfd) -> BindingLatency {
    let report = uffd.latency();
    BindingLatency {
        count: report.count as f64,
        p50_micros: report.p50.as_secs_f64() * 1e6,
        p99_micros: report.p99.as_secs_f64() * 1e6,
        first_fault_ms: report.first_fault_after.map(|d| d.as_secs_f64() * 1e3),
    }
}
