//! Serving a fault from a native source, with no handler: the readahead window decides how many
//! pages, the source gives the bytes, the resolver maps them. Runs on the reader that read the
//! fault (with the reader's scratch buffer), or on a handler's thread for `fromSource`.

use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::region::{base_page_size, MemoryKind, Region};
use crate::residency::Written;
use crate::resolve::{Park, Protect, Resolver, Wake};
use crate::source::{data_run, fill_layers, overlay_layers, FileLayer, Scratch, Served, Source};
use crate::stats::bump;
use crate::sys::uapi;
use nix::errno::Errno;
use std::sync::atomic::Ordering;

/// Resolves a fault at `offset` of a region (registered up to region offset `end`) from a source,
/// if the source serves this kind of fault (`write`: the faulting access was a write). Returns the bytes mapped, `Ok(0)` if another resolver
/// won; `None` if the source does not apply (the handler, or the fallback, decides).
#[allow(clippy::too_many_arguments)]
pub fn serve(
    resolver: &Resolver,
    served: &Served,
    region: &Region,
    offset: usize,
    end: usize,
    kind: FaultKind,
    write: bool,
    scratch: &mut Scratch,
    park: Park<'_>,
) -> Option<Result<usize>> {
    let page = region.page_size();
    let residency = served.residency();
    if kind == FaultKind::WriteProtect {
        // A write to a page of a range with a residency limit or write-back: marked written, and
        // let in. One being written back or dropped is not: its writer faults again until that is
        // done (then it is clean, or gone and faulted in anew).
        let unprotect = |at: usize, len: usize| resolver.write_protect_at(region.address() + at, len, false);
        return Some(match residency?.written(offset, page, unprotect) {
            Ok(Written::Unprotect) => Ok(page),
            Ok(Written::Retry) => resolver.wake(region, offset, page).map(|()| 0),
            Err(err) => Err(err),
        });
    }
    if !served.source.serves(kind) {
        return None;
    }
    let protect = residency.is_some();
    let mut end = end;
    if served.fallthrough {
        match served.source.available(offset) {
            Some(0) => return None,
            // A page the source has part of is mapped (zeros after the end); whole pages past the
            // end go to the handler.
            Some(bytes) => end = end.min(offset + bytes.next_multiple_of(page)),
            None => {}
        }
    }
    if served.zero_removed {
        match served.removed_at(offset) {
            Ok(run_end) => {
                // Removed since it was mapped: zeros, as its owner's kernel would give it.
                bump(&resolver.counters.native);
                let len = run_end.min(end).saturating_sub(offset).max(page).min(end - offset);
                return Some(match map_zeros(resolver, region, offset, len, protect, scratch, park) {
                    Err(err) if len > page && gone_under(&err) => {
                        map_zeros(resolver, region, offset, page, protect, scratch, park)
                    }
                    other => other,
                });
            }
            Err(Some(next_removed)) => end = end.min(next_removed),
            Err(None) => {}
        }
    }
    let pages = served.window.pages_for(offset, &served.readahead);
    let len = (pages * page).min(end - offset);
    // Counted before the ioctl wakes the faulting thread, which may read the counters at once.
    bump(&resolver.counters.native);
    let result = match map_from(resolver, &served.source, region, offset, len, protect, scratch, park, true) {
        // The window reaches into a range the peer unmapped (or moved) without an event that told
        // us (Firecracker asks for no EVENT_UNMAP): the kernel refuses the whole copy. The faulting
        // page is still mapped, or it could not have faulted: map it alone.
        Err(err) if len > page && gone_under(&err) => {
            map_from(resolver, &served.source, region, offset, page, protect, scratch, park, true)
        }
        other => other,
    };
    let result = match result {
        Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
            bump(&resolver.counters.eexist);
            region.note_mapped(offset, page);
            resolver.wake(region, offset, page).map(|()| 0)
        }
        other => other,
    };
    match result {
        Ok(mapped) => {
            if let (Some(residency), true) = (residency, mapped > 0) {
                residency.mapped(offset, mapped);
                // A write found the page missing: mapped protected, it would fault again at once
                // on the protection. Let in now, one fault instead of two (a writer quicker than
                // this finds the page written in its write-protect fault). A window that grew is
                // a stream of writes whose next pages would each fault on the protection: all of
                // it is taken as written (a page of it left unwritten is written back as the file
                // has it).
                if write {
                    let stream = served.readahead.adaptive && pages > served.readahead.pages;
                    let len = if stream { mapped } else { page };
                    let unprotect =
                        |at: usize, len: usize| resolver.write_protect_at(region.address() + at, len, false);
                    let _ = residency.written(offset, len, unprotect);
                }
            }
            served.window.advance_to(offset + mapped.max(page));
            if let Some(recorder) = &served.recorder {
                let base = served.source.file_offset() + offset as u64;
                recorder.touch(base, mapped.max(page) as u64, page as u64);
            }
        }
        Err(_) => {
            resolver.counters.native.fetch_sub(1, Ordering::Relaxed);
        }
    }
    Some(result)
}

/// Whether a mapping failed because part of its range is no longer there in the memory's process:
/// unmapped or moved (ENOENT: no registered mapping covers the whole range; EFAULT: an address of
/// it is not mapped). A range of one page that faulted cannot be gone, unless it went since.
pub(crate) fn gone_under(err: &Error) -> bool {
    matches!(err, Error::Sys { errno: Errno::ENOENT | Errno::EFAULT, .. })
}

/// Maps `len` bytes at `offset` of a region from a source, waking any thread waiting there;
/// write-protected if `protect`. Returns the bytes mapped, fewer if a page of the range was
/// already there. A source in a store reads the chunks after the range ahead if `read_ahead` (a
/// prefetch, which knows what it needs next, asks for those itself).
#[allow(clippy::too_many_arguments)]
pub fn map_from(
    resolver: &Resolver,
    source: &Source,
    region: &Region,
    offset: usize,
    len: usize,
    protect: bool,
    scratch: &mut Scratch,
    park: Park<'_>,
    read_ahead: bool,
) -> Result<usize> {
    // The range lies in the registration the caller found: mapped without a second lookup.
    let mode = copy_mode(protect);
    let copy = |bytes: &[u8]| resolver.copy_at(region, offset, bytes, mode, park);
    match source {
        Source::PageCache => resolver.r#continue(region, offset, len, Wake(true), Protect(protect), park),
        Source::Zero => map_zeros(resolver, region, offset, len, protect, scratch, park),
        // Whole pages of the bytes: COPY straight from them.
        Source::Bytes(bytes) if offset + len <= bytes.len() => copy(&bytes[offset..offset + len]),
        Source::File(layer) => {
            map_from_files(resolver, std::slice::from_ref(layer), region, offset, len, protect, scratch, park)
        }
        Source::Layers(layers) => map_from_files(resolver, layers, region, offset, len, protect, scratch, park),
        // Blocks this thread (a prefetch, a handler's fromSource): faults wait in the fault table instead (`object_faults.rs`).
        Source::Object(object, base, above) => {
            // From a local file above the object where one has the first page: its run of data,
            // with no request.
            let page = region.page_size();
            let run = if above.is_empty() { 0 } else { data_run(above, offset, len)? / page * page };
            if run > 0 {
                return map_from_files(resolver, above, region, offset, run, protect, scratch, park);
            }
            let out = scratch.aligned(len);
            object.read_blocking(base + offset as u64, out, read_ahead)?;
            overlay_layers(above, offset, out)?;
            copy(out)
        }
        Source::Handler => Err(Error::invalid("map", "no native source serves this range: its handler maps its pages")),
        Source::Bytes(bytes) => {
            let out = scratch.aligned(len);
            let available = bytes.len().saturating_sub(offset).min(len);
            out[..available].copy_from_slice(&bytes[offset.min(bytes.len())..][..available]);
            out[available..].fill(0);
            copy(out)
        }
    }
}

/// Maps file bytes; a range that is all holes is mapped with zero pages, without a read.
#[allow(clippy::too_many_arguments)]
fn map_from_files(
    resolver: &Resolver,
    layers: &[FileLayer],
    region: &Region,
    offset: usize,
    len: usize,
    protect: bool,
    scratch: &mut Scratch,
    park: Park<'_>,
) -> Result<usize> {
    let out = scratch.aligned(len);
    if fill_layers(layers, offset, out)? {
        return resolver.copy_at(region, offset, out, copy_mode(protect), park);
    }
    bump(&resolver.counters.holes);
    map_zeros(resolver, region, offset, len, protect, scratch, park)
}

/// UFFDIO_COPY's mode: write-protected or not, waking the faulting thread.
fn copy_mode(protect: bool) -> u64 {
    if protect {
        uapi::COPY_MODE_WP
    } else {
        0
    }
}

/// Maps zero pages: ZEROPAGE, or a zeroed COPY where there is no zero page (huge pages) or the
/// pages must come write-protected (ZEROPAGE has no such mode).
pub fn map_zeros(
    resolver: &Resolver,
    region: &Region,
    offset: usize,
    len: usize,
    protect: bool,
    scratch: &mut Scratch,
    park: Park<'_>,
) -> Result<usize> {
    if protect || region.kind() == MemoryKind::Hugetlb || region.page_size() > base_page_size() {
        let zeros = scratch.aligned(len);
        zeros.fill(0);
        return resolver.copy_at(region, offset, zeros, copy_mode(protect), park);
    }
    resolver.zero_at(region, offset, len, Wake(true), park)
}
