//! Counters of a userfaultfd, updated lock-free by the loop thread and the resolving threads.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    pub faults_missing: AtomicU64,
    pub faults_minor: AtomicU64,
    pub faults_wp: AtomicU64,
    pub duplicates: AtomicU64,
    pub copies: AtomicU64,
    pub zeropages: AtomicU64,
    pub continues: AtomicU64,
    pub poisons: AtomicU64,
    pub wakes: AtomicU64,
    pub native: AtomicU64,
    pub events: AtomicU64,
    pub parked: AtomicU64,
    pub moves: AtomicU64,
    pub write_protects: AtomicU64,
    pub bytes_mapped: AtomicU64,
    pub eexist: AtomicU64,
    pub batches: AtomicU64,
    pub messages: AtomicU64,
    pub fallbacks: AtomicU64,
    pub self_faults: AtomicU64,
    pub timeouts: AtomicU64,
    pub errors: AtomicU64,
}

/// A copy of the counters at one moment, plus the gauges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub faults_missing: u64,
    pub faults_minor: u64,
    pub faults_wp: u64,
    pub duplicates: u64,
    pub copies: u64,
    pub zeropages: u64,
    pub continues: u64,
    pub poisons: u64,
    pub wakes: u64,
    pub native: u64,
    pub events: u64,
    pub parked: u64,
    pub moves: u64,
    pub write_protects: u64,
    pub bytes_mapped: u64,
    pub eexist: u64,
    pub batches: u64,
    pub messages: u64,
    pub fallbacks: u64,
    pub self_faults: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub in_flight: u64,
    pub queued: u64,
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self, in_flight: u64, queued: u64) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            faults_missing: get(&self.faults_missing),
            faults_minor: get(&self.faults_minor),
            faults_wp: get(&self.faults_wp),
            duplicates: get(&self.duplicates),
            copies: get(&self.copies),
            zeropages: get(&self.zeropages),
            continues: get(&self.continues),
            poisons: get(&self.poisons),
            wakes: get(&self.wakes),
            native: get(&self.native),
            events: get(&self.events),
            parked: get(&self.parked),
            moves: get(&self.moves),
            write_protects: get(&self.write_protects),
            bytes_mapped: get(&self.bytes_mapped),
            eexist: get(&self.eexist),
            batches: get(&self.batches),
            messages: get(&self.messages),
            fallbacks: get(&self.fallbacks),
            self_faults: get(&self.self_faults),
            timeouts: get(&self.timeouts),
            errors: get(&self.errors),
            in_flight,
            queued,
        }
    }
}
