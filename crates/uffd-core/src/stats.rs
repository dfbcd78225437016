//! Counters of a userfaultfd, updated lock-free by the loop thread and the resolving threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Declares the counters once: the live atomics (`Counters`) and their copy (`Snapshot`).
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
            pub latency: Latency,
        }

        /// A copy of the counters at one moment, plus the gauges.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
            /// Faults waiting for their resolution.
            pub in_flight: u64,
            /// Faults waiting for a handler.
            pub queued: u64,
        }

        impl Counters {
            pub fn snapshot(&self, in_flight: u64, queued: u64) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* in_flight, queued }
            }
        }
    };
}

counters! {
    faults_missing,
    faults_minor,
    faults_wp,
    duplicates,
    copies,
    zeropages,
    continues,
    poisons,
    wakes,
    native,
    /// Ranges of a file source that were holes, mapped as zeros without a read.
    holes,
    events,
    parked,
    moves,
    write_protects,
    bytes_mapped,
    eexist,
    batches,
    messages,
    fallbacks,
    self_faults,
    timeouts,
    errors,
    /// Pages mapped now in ranges with a residency limit (a gauge).
    resident_pages,
    /// Of those, pages the program wrote and that were not written back (a gauge).
    dirty_pages,
    /// Written pages written back to their file, and write-backs that failed.
    write_backs,
    write_back_errors,
    /// Pages a residency limit dropped, and the batches it dropped them in.
    evictions,
    eviction_batches,
    /// Pages mapped again after an eviction.
    refaults,
    /// Faults that found a range past its limit and evicted before mapping (the evictor was late).
    eviction_stalls,
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

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
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
