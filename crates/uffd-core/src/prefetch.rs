//! Prefetch: filling registered ranges from a source before anyone touches them, in chunks, on
//! the calling thread (a pool thread of the binding), stepping aside whenever faults are waiting to
//! be read so that a real fault is never queued behind a background copy.

use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::native::{gone_under, map_from};
use crate::region::Region;
use crate::resolve::{Park, Resolver};
use crate::source::{Scratch, Served, Source};
use nix::errno::Errno;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a prefetch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefetchReport {
    /// Bytes this prefetch mapped.
    pub mapped: usize,
    /// Bytes that were already there (faulted in, or mapped by someone else).
    pub present: usize,
    /// Times it stepped aside for waiting faults.
    pub yields: u64,
    /// It ended early: cancelled, or the userfaultfd or the region closed.
    pub stopped: bool,
}

/// How a prefetch runs.
#[derive(Clone)]
pub struct Prefetch {
    /// The ranges, as (offset, length) in the region, page-aligned.
    pub ranges: Vec<(usize, usize)>,
    /// Where the bytes come from; `None`: the source of the registration of each chunk.
    pub source: Option<Source>,
    /// Pages per ioctl.
    pub chunk_pages: usize,
    /// Set to stop after the current chunk.
    pub cancel: Arc<AtomicBool>,
}

/// A step aside lasts at most this long before the prefetch goes on anyway.
const YIELD_AT_MOST: Duration = Duration::from_millis(20);

/// Maps every page of the ranges that is not there yet; see [`Prefetch`].
pub fn prefetch(resolver: &Resolver, region: &Arc<Region>, job: &Prefetch) -> Result<PrefetchReport> {
    const OP: &str = "prefetch";
    let page = region.page_size();
    for &(offset, len) in &job.ranges {
        resolver.check_registered(OP, region, offset, len)?;
    }
    let chunk = job.chunk_pages.max(1) * page;
    let (ranges, groups) = by_store_chunk(resolver, region, job);
    let mut warmed = None;
    let mut scratch = Scratch::default();
    let mut report = PrefetchReport::default();
    // What one step asks for: a chunk, a page after a page found there already (a replay or the
    // faults mapped it: asking a whole chunk again a page further on would read it for nothing,
    // page after page), doubling again as pages are mapped.
    let mut want = chunk;
    for (next, &(offset, len)) in ranges.iter().enumerate() {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            if job.cancel.load(Ordering::Acquire) {
                report.stopped = true;
                return Ok(report);
            }
            report.yields += step_aside_for_faults(resolver);
            let (source, source_end) = match &job.source {
                Some(source) => (source.clone(), None),
                None => {
                    let (served, source_end) = match registered_source(resolver, region, at) {
                        Ok(found) => found,
                        // Closed while it ran (the VM exited): its registrations went with it.
                        Err(Error::Closed { .. }) => {
                            report.stopped = true;
                            return Ok(report);
                        }
                        Err(err) => return Err(err),
                    };
                    if served.residency().is_some() {
                        return Err(Error::invalid(
                            OP,
                            "a range with a residency limit is not prefetched: it would map past its limit",
                        ));
                    }
                    // A removed range is left to its next fault, which maps zeros.
                    match served.removed_at(at) {
                        Ok(run_end) => {
                            at = run_end.min(end);
                            continue;
                        }
                        Err(next) => (served.source().clone(), [source_end, next].into_iter().flatten().min()),
                    }
                }
            };
            if !source.serves(FaultKind::Missing) && !source.serves(FaultKind::Minor) {
                return Err(Error::invalid(OP, "this source maps no pages"));
            }
            // Pages past a fallthrough source's end are the handler's: leave them.
            let end = source_end.map_or(end, |limit| end.min(limit));
            if at >= end {
                break;
            }
            // Pages this package mapped already (a replay, faults) are skipped without a read of
            // their bytes; a step stops short of the next of them.
            let unmapped = region.next_mapped(at, end, false);
            if unmapped > at {
                report.present += unmapped - at;
                at = unmapped;
                continue;
            }
            let len = want.min(region.next_mapped(at, end, true) - at);
            warm_ahead(&source, region, at, (&ranges, &groups, next), &mut warmed);
            let mut result = map_from(resolver, &source, region, at, len, false, &mut scratch, Park::UntilRead, false);
            if matches!(&result, Err(err) if len > page && gone_under(err)) {
                // Part of the chunk was unmapped (or moved) by the memory's process, with no event
                // that told us: the kernel refuses the whole chunk. Its pages one by one, leaving
                // those that are gone.
                match page_by_page(resolver, &source, region, at, len, &mut scratch, &mut report) {
                    Ok(()) => {
                        at += len;
                        continue;
                    }
                    Err(err) => result = Err(err),
                }
            }
            match result {
                Ok(0) | Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
                    // The page at `at` is there already: skip it and go on from the next.
                    region.note_mapped(at, page);
                    report.present += page;
                    at += page;
                    want = page;
                }
                Ok(mapped) => {
                    report.mapped += mapped;
                    at += mapped;
                    want = (want * 2).min(chunk);
                }
                // Closed, or the process that owns the memory exited: nothing is left to fill.
                Err(Error::Closed { .. }) | Err(Error::Sys { errno: Errno::ESRCH, .. }) => {
                    report.stopped = true;
                    return Ok(report);
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(report)
}

/// Chunks to look ahead at for those still to fetch (most may be mapped already).
const WARM_CHUNKS: usize = 256;

/// The ranges, with those a store serves regrouped chunk by chunk, the chunks in the order the
/// ranges first need them (a trace's first touches come back to a chunk long after it was read,
/// when later chunks have pushed it out of memory): each chunk is fetched once, and all the
/// pages it serves are mapped while it is there. Other ranges keep their place. Returns the
/// ranges and where each group of them (a chunk's, or a range kept in place) begins.
fn by_store_chunk(resolver: &Resolver, region: &Region, job: &Prefetch) -> (Vec<(usize, usize)>, Vec<usize>) {
    let chunk_of = |offset: usize| -> Option<(u64, u64)> {
        let source = match &job.source {
            Some(source) => source.clone(),
            None => registered_source(resolver, region, offset).ok()?.0.source().clone(),
        };
        let Source::Object(object, base, _) = source else { return None };
        Some((object.chunk_size() as u64, base))
    };
    group_by_chunk(&job.ranges, chunk_of, region.page_size())
}

/// `ranges` regrouped by chunk (see `by_store_chunk`); `chunk_of` gives the chunk size and the
/// object offset of region offset 0 for a range in a store, `None` for a range kept in place.
fn group_by_chunk(
    ranges: &[(usize, usize)],
    chunk_of: impl Fn(usize) -> Option<(u64, u64)>,
    page: usize,
) -> (Vec<(usize, usize)>, Vec<usize>) {
    // Each piece with its chunk (`None`: kept in place).
    let mut pieces: Vec<(Option<u64>, (usize, usize))> = Vec::with_capacity(ranges.len());
    for &(offset, len) in ranges {
        match chunk_of(offset) {
            Some((chunk, base)) => {
                pieces.extend(cut(offset, len, chunk, base, page).map(|(index, piece)| (Some(index), piece)))
            }
            None => pieces.push((None, (offset, len))),
        }
    }
    // Out of order (a trace), each chunk's pieces move up to its first: a stable sort by where
    // each chunk is first needed. Ranges in ascending order (a whole region) need neither the sort
    // nor its table (a 64 GiB region has a million chunks of 64 KiB).
    if !ranges.windows(2).all(|pair| pair[0].0 + pair[0].1 <= pair[1].0) {
        let mut first = std::collections::HashMap::new();
        let mut ranked: Vec<_> = (pieces.into_iter().enumerate())
            .map(|(at, piece)| (piece.0.map_or(at, |index| *first.entry(index).or_insert(at)), piece))
            .collect();
        ranked.sort_by_key(|&(rank, _)| rank);
        pieces = ranked.into_iter().map(|(_, piece)| piece).collect();
    }
    // A group begins at each new chunk, and at each range kept in place.
    let starts =
        (0..pieces.len()).filter(|&at| at == 0 || pieces[at].0.is_none() || pieces[at].0 != pieces[at - 1].0).collect();
    (pieces.into_iter().map(|(_, piece)| piece).collect(), starts)
}

/// The range `[offset, offset + len)` cut where the object's chunks (of `chunk` bytes, region
/// offset 0 at object offset `base`) end, each piece with its chunk's index. A chunk's end is
/// taken to a whole page: an object read from an offset that is not one ends its chunks between
/// pages.
fn cut(offset: usize, len: usize, chunk: u64, base: u64, page: usize) -> impl Iterator<Item = (u64, (usize, usize))> {
    let (mut at, end) = (offset, offset + len);
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let index = (base + at as u64) / chunk;
        let next = (((index + 1) * chunk - base) as usize).next_multiple_of(page).min(end);
        let piece = (at, next - at);
        at = next;
        Some((index, piece))
    })
}

/// For a source in a store, when a step enters a chunk other than the last one warmed: starts
/// fetching the chunks that the pages still to map need, the chunk of `at` first, then those of
/// the groups after range `next` of `ranges` (each group a chunk's ranges, from `groups`), in
/// their order (a trace's), so that many requests are in flight while one step maps; a chunk whose
/// pages are all mapped already is not fetched.
fn warm_ahead(
    source: &Source,
    region: &Region,
    at: usize,
    (ranges, groups, next): (&[(usize, usize)], &[usize], usize),
    warmed: &mut Option<u64>,
) {
    let Source::Object(object, base, _) = source else { return };
    let chunk = (base + at as u64) / object.chunk_size() as u64;
    if *warmed == Some(chunk) {
        return;
    }
    *warmed = Some(chunk);
    let page = region.page_size();
    let after = groups.partition_point(|&start| start <= next);
    // A group's first page still to map, as a run of one page: it names the group's chunk.
    let unmapped = |group: usize| {
        let end = groups.get(group + 1).copied().unwrap_or(ranges.len());
        ranges[groups[group]..end].iter().find_map(|&(offset, len)| {
            let start = region.next_mapped(offset, offset + len, false);
            (start < offset + len).then_some((base + start as u64, page as u64))
        })
    };
    let runs = std::iter::once((base + at as u64, page as u64))
        .chain((after..groups.len()).take(WARM_CHUNKS).filter_map(unmapped));
    object.warm(runs);
}

/// Maps `[at, at + len)` a page at a time, leaving the pages no longer mapped in the memory's
/// process; counts the pages mapped and those already there in `report`.
fn page_by_page(
    resolver: &Resolver,
    source: &Source,
    region: &Region,
    at: usize,
    len: usize,
    scratch: &mut Scratch,
    report: &mut PrefetchReport,
) -> Result<()> {
    let page = region.page_size();
    for offset in (at..at + len).step_by(page) {
        match map_from(resolver, source, region, offset, page, false, scratch, Park::UntilRead, false) {
            Ok(0) | Err(Error::Sys { errno: Errno::EEXIST, .. }) => report.present += page,
            Ok(bytes) => report.mapped += bytes,
            Err(err) if gone_under(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The source of the registration at `offset`, and where its bytes end if it falls through.
fn registered_source(resolver: &Resolver, region: &Region, offset: usize) -> Result<(Arc<Served>, Option<usize>)> {
    let served = resolver.registration_at(region.address() + offset).and_then(|reg| reg.served);
    let Some(served) = served else {
        // Closing the userfaultfd drops its registrations: that is no missing source.
        resolver.fd.check_open("prefetch")?;
        return Err(Error::invalid("prefetch", format!("offset {offset} is registered without a source: pass one")));
    };
    let end = served.end_for(offset, region.page_size());
    Ok((served, end))
}

/// Waits (briefly) while fault messages are waiting to be read; returns 1 if it waited.
fn step_aside_for_faults(resolver: &Resolver) -> u64 {
    let started = Instant::now();
    let mut waited = 0;
    while resolver.fd.messages_waiting() && started.elapsed() < YIELD_AT_MOST {
        waited = 1;
        std::thread::sleep(Duration::from_micros(50));
    }
    waited
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_s_ranges_are_mapped_chunk_by_chunk_in_the_order_each_chunk_is_first_needed() {
        const PAGE: usize = 4096;
        let chunk = 4 * PAGE;
        // Chunks of 4 pages: ranges in chunks 2, 0, 2 again, 1 (crossing into 2), and one kept in place.
        let ranges = [(8 * PAGE, PAGE), (0, PAGE), (9 * PAGE, PAGE), (7 * PAGE, 2 * PAGE), (100 * PAGE, PAGE)];
        let in_store = |offset: usize| (offset < 100 * PAGE).then_some((chunk as u64, 0));
        let (grouped, starts) = group_by_chunk(&ranges, in_store, PAGE);
        assert_eq!(
            grouped,
            vec![(8 * PAGE, PAGE), (9 * PAGE, PAGE), (8 * PAGE, PAGE), (0, PAGE), (7 * PAGE, PAGE), (100 * PAGE, PAGE)]
        );
        assert_eq!(starts, vec![0, 3, 4, 5]);
        // Read from byte 100 of the object: its chunks end between pages, the pieces on whole pages.
        let shifted = |_: usize| Some((chunk as u64, 100));
        let (pieces, starts) = group_by_chunk(&[(0, 8 * PAGE)], shifted, PAGE);
        assert_eq!(pieces, vec![(0, 4 * PAGE), (4 * PAGE, 4 * PAGE)]);
        assert_eq!(starts, vec![0, 1]);
        // In ascending order already: cut at chunk ends, grouped as they come, in place.
        let ascending = [(0, PAGE), (2 * PAGE, 4 * PAGE), (9 * PAGE, PAGE), (100 * PAGE, PAGE)];
        let (pieces, starts) = group_by_chunk(&ascending, in_store, PAGE);
        assert_eq!(
            pieces,
            vec![(0, PAGE), (2 * PAGE, 2 * PAGE), (4 * PAGE, 2 * PAGE), (9 * PAGE, PAGE), (100 * PAGE, PAGE)]
        );
        assert_eq!(starts, vec![0, 2, 3, 4]);
    }
}
