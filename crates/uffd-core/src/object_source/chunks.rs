//! The in-memory chunk cache: chunks by index, bounded in bytes, the least recently used evicted
//! first. `Bytes` share their buffer, so a hit is a reference count, not a copy.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) struct ChunkCache {
    capacity: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    chunks: HashMap<u64, (Bytes, u64)>,
    bytes: usize,
    clock: u64,
}

impl ChunkCache {
    pub(crate) fn new(capacity: usize) -> Self {
        ChunkCache { capacity, inner: Mutex::new(Lru::default()) }
    }

    pub(crate) fn get(&self, index: u64) -> Option<Bytes> {
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.clock += 1;
        let now = lru.clock;
        lru.chunks.get_mut(&index).map(|(bytes, used)| {
            *used = now;
            bytes.clone()
        })
    }

    pub(crate) fn contains(&self, index: u64) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).chunks.contains_key(&index)
    }

    pub(crate) fn insert(&self, index: u64, bytes: Bytes) {
        if self.capacity == 0 {
            return;
        }
        let mut lru = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        lru.clock += 1;
        let now = lru.clock;
        let len = bytes.len();
        if let Some((old, _)) = lru.chunks.insert(index, (bytes, now)) {
            lru.bytes -= old.len();
        }
        lru.bytes += len;
        // A handful of chunks at most: a scan for the oldest is cheaper than keeping an order.
        while lru.bytes > self.capacity && lru.chunks.len() > 1 {
            let oldest =
                lru.chunks.iter().filter(|(i, _)| **i != index).min_by_key(|(_, (_, used))| *used).map(|(i, _)| *i);
            let Some(oldest) = oldest else { break };
            if let Some((gone, _)) = lru.chunks.remove(&oldest) {
                lru.bytes -= gone.len();
            }
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_chunk_goes_first() {
        let cache = ChunkCache::new(30);
        cache.insert(0, Bytes::from(vec![0; 10]));
        cache.insert(1, Bytes::from(vec![1; 10]));
        cache.insert(2, Bytes::from(vec![2; 10]));
        assert!(cache.get(0).is_some());
        cache.insert(3, Bytes::from(vec![3; 10]));
        assert!(cache.contains(0) && !cache.contains(1) && cache.contains(2) && cache.contains(3));
        assert_eq!(cache.bytes(), 30);
    }
}
