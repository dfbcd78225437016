//! A store going down and coming back: a request failed past its retry bound takes the store as
//! down (the breaker), a probe in the background looks for it to answer again, and the pages that
//! got the fallback meanwhile are counted, listed and, if asked, discarded to be read again.

use super::{runtime, store, FellBack, ObjectSource};
use crate::error::Result;
use crate::region::Region;
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Pages listed as having got the fallback, at most: the oldest go first.
const FELL_BACK_LISTED: usize = 65536;

impl ObjectSource {
    /// A range request through the breaker: fails at once while the store is down; a transient
    /// failure past the retry bound takes it as down, and a probe then looks for it to answer.
    pub(super) async fn fetch(self: &Arc<Self>, range: Range<u64>) -> Result<Bytes> {
        let result = self.fetcher.get(range, &self.breaker).await;
        self.watch(result)
    }

    /// Takes the store as down after a transient failure past the retry bound.
    pub(super) fn watch(self: &Arc<Self>, result: Result<Bytes>) -> Result<Bytes> {
        if let Err(err) = &result {
            if store::transient(err) && self.breaker.trip(err) {
                self.counters.outages.fetch_add(1, Ordering::Relaxed);
                self.spawn_probe();
            }
        }
        result
    }

    /// Tries the store in the background, with the retry policy's backoff, until it answers;
    /// then service resumes (and, if asked, the pages that got the fallback are discarded).
    pub(super) fn spawn_probe(self: &Arc<Self>) {
        let source = Arc::downgrade(self);
        let retry = self.fetcher.retry;
        let Ok(runtime) = runtime::runtime() else {
            // No runtime, no requests either: nothing would ever trip the breaker. Never stuck down.
            self.breaker.close();
            return;
        };
        runtime.spawn(async move {
            let mut delay = retry.initial_delay.max(Duration::from_millis(1));
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max_delay.max(Duration::from_millis(1)));
                // A source dropped meanwhile: nobody to serve.
                let Some(source) = source.upgrade() else { return };
                match source.fetcher.probe().await {
                    Err(err) if store::transient(&err) => continue,
                    // An answer, even a refusal: the store is up; its faults say the rest.
                    _ => return source.recover(),
                }
            }
        });
    }

    /// The store answered again: requests go to it, and the pages that got the fallback in the
    /// outage are discarded (with `refetch_after_outage`) so that they fault and are read again.
    pub(super) fn recover(&self) {
        let mut pages = Vec::new();
        if self.refetch_after_outage {
            let mut listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
            let (outage, other): (VecDeque<_>, VecDeque<_>) = listed.drain(..).partition(|page| page.in_outage);
            *listed = other;
            pages.extend(outage);
        }
        let closed = self.breaker.close();
        for page in pages {
            if let Some(region) = page.region.upgrade().filter(|r| !r.is_closed()) {
                if region.discard(page.offset, page.len).is_ok() {
                    self.counters.refetched_pages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Counted once the pages that got the fallback are gone: whoever sees the recovery finds
        // none of them still holding the fallback's zeros.
        if closed {
            self.counters.recoveries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fault at `offset` of `region` got the fallback because the source failed: counted and
    /// listed (and discarded when the store answers again, with `refetch_after_outage`). Returns
    /// whether to say so: always for a failure that is not an outage, once per outage.
    pub(crate) fn fell_back(&self, region: &Arc<Region>, offset: usize, len: usize) -> bool {
        self.counters.fallback_pages.fetch_add(1, Ordering::Relaxed);
        let page = FellBack { region: Arc::downgrade(region), offset, len, in_outage: self.breaker.is_down() };
        let mut listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
        if listed.len() >= FELL_BACK_LISTED {
            listed.pop_front();
        }
        listed.push_back(page);
        drop(listed);
        self.breaker.should_say()
    }

    /// The pages (region id, offset) of regions still open whose fault got the fallback because
    /// the store failed, oldest first (the latest 65536), less those discarded to be read again.
    pub fn fallback_pages(&self) -> Vec<(u64, usize)> {
        let listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
        listed
            .iter()
            .filter_map(|page| page.region.upgrade().filter(|r| !r.is_closed()).map(|r| (r.id(), page.offset)))
            .collect()
    }
}
