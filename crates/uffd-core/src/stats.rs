//! Counters of a userfaultfd, updated lock-free by the loop thread and the resolving threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
    /// Ranges of a file source that were holes, mapped as zeros without a read.
    pub holes: AtomicU64,
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
    pub latency: Latency,
}

/// When the first fault came, and how long native sources took per fault (from the message read to
/// its resolve), in buckets of a quarter octave: cheap enough for every fault.
pub struct Latency {
    opened: Instant,
    first_fault: OnceLock<Instant>,
    buckets: Box<[AtomicU64]>,
}

const BUCKETS: usize = 4 * 40;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            opened: Instant::now(),
            first_fault: OnceLock::new(),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Native fault latencies at a moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LatencyReport {
    /// Faults a native source resolved and timed.
    pub count: u64,
    pub p50: Duration,
    pub p99: Duration,
    /// From opening (or adopting) the userfaultfd to its first fault message.
    pub first_fault_after: Option<Duration>,
}

impl Latency {
    pub fn fault_seen(&self) {
        self.first_fault.get_or_init(Instant::now);
    }

    pub fn record(&self, took: Duration) {
        let ns = took.as_nanos().max(1) as u64;
        let octave = 63 - ns.leading_zeros() as usize;
        let quarter = if octave >= 2 { ((ns >> (octave - 2)) & 3) as usize } else { 0 };
        bump(&self.buckets[(4 * octave + quarter).min(BUCKETS - 1)]);
    }

    pub fn report(&self) -> LatencyReport {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let count = counts.iter().sum();
        // The lower edge of the bucket where the quantile falls.
        let at = |q: f64| {
            let rank = ((count as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    let (octave, quarter) = (i / 4, (i % 4) as u64);
                    let ns = if octave >= 2 { (4 + quarter) << (octave - 2) } else { 1 << octave };
                    return Duration::from_nanos(ns);
                }
            }
            Duration::ZERO
        };
        LatencyReport {
            count,
            p50: if count > 0 { at(0.5) } else { Duration::ZERO },
            p99: if count > 0 { at(0.99) } else { Duration::ZERO },
            first_fault_after: self.first_fault.get().map(|t| t.duration_since(self.opened)),
        }
    }
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
    pub holes: u64,
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
            holes: get(&self.holes),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_fall_in_the_right_quarter_octave() {
        let latency = Latency::default();
        assert_eq!(latency.report().count, 0);
        for _ in 0..98 {
            latency.record(Duration::from_micros(20));
        }
        latency.record(Duration::from_micros(900));
        latency.record(Duration::from_micros(900));
        latency.fault_seen();
        let report = latency.report();
        assert_eq!(report.count, 100);
        // A bucket's lower edge is within a quarter octave (19%) below the value.
        assert!(report.p50 <= Duration::from_micros(20) && report.p50 >= Duration::from_micros(16), "{:?}", report.p50);
        assert!(
            report.p99 <= Duration::from_micros(900) && report.p99 >= Duration::from_micros(740),
            "{:?}",
            report.p99
        );
        assert!(report.first_fault_after.is_some());
    }
}
