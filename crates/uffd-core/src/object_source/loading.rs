//! Chunks in memory: from the memory cache, or joining the request already under way, or a new
//! one (from the disk cache a machine's processes share, else the store); each chunk is read once
//! however many faults wait on it.

use super::{runtime, ObjectSource, OP};
use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

impl ObjectSource {
    pub(super) fn is_loading(&self, index: u64) -> bool {
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&index)
    }

    /// Chunk `index`: from memory, or joining the request already under way, or a new one.
    pub(crate) async fn chunk(self: Arc<Self>, index: u64) -> Result<Bytes> {
        if let Some(zeros) = self.hole(index) {
            return Ok(zeros);
        }
        if let Some(bytes) = self.cache.get(index) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(bytes);
        }
        let receiver = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock: a load puts its chunk in the cache before it leaves.
            if let Some(bytes) = self.cache.get(index) {
                return Ok(bytes);
            }
            let (sender, receiver) = oneshot::channel();
            match loading.get_mut(&index) {
                Some(waiters) => waiters.push(sender),
                None => {
                    loading.insert(index, vec![sender]);
                    self.spawn_load(index)?;
                }
            }
            receiver
        };
        receiver.await.unwrap_or_else(|_| Err(Error::Closed { op: OP, what: "object source" }))
    }

    /// Starts reading chunk `index` into the cache unless it is there or on its way.
    pub(super) fn start_loading(self: &Arc<Self>, index: u64) {
        if self.hole(index).is_some() {
            return;
        }
        // The cache is looked at under the lock: a load puts its chunk there before it leaves
        // `loading`, so a chunk is never found in neither while it arrives.
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loading.contains_key(&index) || self.cache.contains(index) {
            return;
        }
        loading.insert(index, Vec::new());
        if self.spawn_load(index).is_err() {
            loading.remove(&index);
        }
    }

    pub(super) fn spawn_load(self: &Arc<Self>, index: u64) -> Result<()> {
        let source = self.clone();
        runtime::runtime()?.spawn(async move {
            let result = source.load(index).await;
            if let Ok(bytes) = &result {
                source.cache.insert(index, bytes.clone());
            }
            let waiters = source.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&index).unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        });
        Ok(())
    }

    /// Reads a chunk from the disk cache, or fetches it (once per machine when the cache is shared).
    pub(super) async fn load(self: &Arc<Self>, index: u64) -> Result<Bytes> {
        let range = self.chunk_range(index);
        let len = (range.end - range.start) as usize;
        let Some(disk) = &self.disk else {
            return self.get_chunk(index).await;
        };
        let hit = || {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
        };
        let slot = self.slot(index);
        // A pushed snapshot's chunk read from the disk is checked against its hash as one from
        // the store is: a damaged file is fetched again and replaced, never served.
        let read = || disk.read(&slot, len).filter(|bytes| self.intact(index, bytes));
        if let Some(bytes) = read() {
            hit();
            return Ok(bytes);
        }
        // Another process holding the claim longer than a request's whole retry budget is stuck:
        // then this one fetches too.
        let give_up = Instant::now() + self.fetcher.retry.timeout + Duration::from_secs(30);
        loop {
            if let Some(claim) = disk.claim(&slot) {
                if let Some(bytes) = read() {
                    hit();
                    return Ok(bytes);
                }
                let bytes = self.get_chunk(index).await?;
                if disk.write(&slot, &bytes).is_ok() {
                    self.counters.disk_writes.fetch_add(1, Ordering::Relaxed);
                }
                drop(claim);
                return Ok(bytes);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Some(bytes) = read() {
                hit();
                return Ok(bytes);
            }
            if Instant::now() > give_up {
                return self.get_chunk(index).await;
            }
        }
    }
}
