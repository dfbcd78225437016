//! What a fault reads of an object source: the adaptive request size (it doubles while faults
//! follow each other and halves on a jump), the chunks read ahead of a sequential run, and the
//! chunks a prefetch warms in a trace's order.

use super::{ObjectSource, Plan};
use std::sync::Arc;

/// The first `count` distinct chunks (of `chunk` bytes, of an object of `size`) that the byte
/// ranges `ahead` touch, in the order they touch them.
fn next_chunks(ahead: impl Iterator<Item = (u64, u64)>, chunk: u64, size: u64, count: usize) -> Vec<u64> {
    let mut chunks = Vec::with_capacity(count);
    for (offset, len) in ahead {
        let end = (offset + len).min(size);
        for index in offset / chunk..end.div_ceil(chunk) {
            if !chunks.contains(&index) {
                if chunks.len() == count {
                    return chunks;
                }
                chunks.push(index);
            }
        }
    }
    chunks
}

impl ObjectSource {
    /// What a fault at object offset `offset` reads, and moves the adaptive window.
    pub(crate) fn plan(&self, offset: u64, page: u64) -> Plan {
        let chunk = self.chunk_size as u64;
        let most = chunk * (1 + self.readahead_chunks as u64);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match window.next {
            _ if !self.adaptive => most,
            // The first fault reads one chunk: a first byte costs one request.
            None => chunk,
            Some(next) if offset == next => (window.bytes * 2).min(most),
            Some(next) if (window.start..next).contains(&offset) => window.bytes,
            // The page just before the last plan's: a run backwards (a scan from the end). Its
            // whole chunk, once: the faults before it in the chunk find it in memory, not a
            // request each.
            Some(_) if offset + page == window.start => chunk,
            Some(_) => (window.bytes / 2 / page * page).max(page),
        };
        // A pushed snapshot's chunk is read in whole frames (whole, if pushed before frames).
        let unit = match &self.snapshot {
            Some(snapshot) => snapshot.manifest.frame_size.unwrap_or(chunk),
            None => page,
        };
        let bytes = bytes.max(unit);
        window.bytes = bytes;
        let index = offset / chunk;
        let chunk_end = self.chunk_range(index).end.next_multiple_of(page);
        let plan = if bytes >= chunk {
            Plan { index, start: offset, end: chunk_end, whole: true, ahead: bytes / chunk - 1, waits: false }
        } else {
            let base = index * chunk;
            let end = (base + (offset + bytes - base).next_multiple_of(unit)).min(chunk_end);
            Plan { index, start: offset, end, whole: false, ahead: 0, waits: false }
        };
        // A whole chunk fetched for a fault outside a sequential run (the first fault, a random
        // one): its page first. In a run the thread needs the whole chunk next, and a small range
        // is mapped whole: one copy, so the thread's next fault does not race the rest (and, for
        // a range, fetch it again).
        let plan = Plan { waits: plan.whole && plan.ahead == 0 && !self.cache.contains(index), ..plan };
        if !(window.start..window.next.unwrap_or(0)).contains(&offset) {
            window.start = plan.start;
            window.next = Some(plan.end);
        }
        plan
    }

    /// Starts the chunks a plan reads ahead.
    pub(crate) fn read_ahead(self: &Arc<Self>, plan: &Plan) {
        for index in plan.index + 1..=(plan.index + plan.ahead).min(self.chunks().saturating_sub(1)) {
            self.start_loading(index);
        }
    }

    /// Starts fetching the chunks that the byte ranges `ahead` (object offsets and lengths, in the
    /// order they will be read) need next: the one in use and `readahead_chunks` more, those not
    /// in memory or on their way. A replay in a trace's order keeps that many requests in flight, not
    /// one; and never more chunks ahead than that, in memory or not, so that none is pushed out of
    /// the memory cache before its pages are mapped (and fetched again).
    pub fn warm(self: &Arc<Self>, ahead: impl Iterator<Item = (u64, u64)>) {
        // The chunk in use, and those ahead.
        for index in next_chunks(ahead, self.chunk_size as u64, self.size(), self.readahead_chunks + 1) {
            self.start_loading(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_looks_only_as_far_ahead_as_it_may_keep() {
        // Chunks of 10 bytes: ranges in chunks 3, 3, 0, 3 (again), 7-8, 9, 11 (past the end).
        let ahead = [(30, 5), (35, 5), (0, 1), (31, 1), (75, 10), (90, 10), (110, 10)];
        assert_eq!(next_chunks(ahead.into_iter(), 10, 100, 3), vec![3, 0, 7]);
        assert_eq!(next_chunks(ahead.into_iter(), 10, 100, 16), vec![3, 0, 7, 8, 9]);
        assert_eq!(next_chunks(std::iter::empty(), 10, 100, 4), Vec::<u64>::new());
    }
}
