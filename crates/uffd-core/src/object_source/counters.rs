//! Counters of an object source, shared by its requests.

use std::sync::atomic::AtomicU64;

#[derive(Default)]
pub(crate) struct ObjectCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) bytes_fetched: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) memory_hits: AtomicU64,
    pub(crate) disk_hits: AtomicU64,
    pub(crate) disk_writes: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) outages: AtomicU64,
    pub(crate) recoveries: AtomicU64,
    pub(crate) fallback_pages: AtomicU64,
    pub(crate) refetched_pages: AtomicU64,
}
