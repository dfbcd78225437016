//! Native page sources: faults that need no JavaScript, resolved on the fault loop's thread.
//! A registration may carry a source (zeros, bytes in memory, a file, or the page cache for minor
//! faults) and a readahead window: one COPY answers a fault with several pages, growing while the
//! faults are sequential (like the kernel's own readahead) and falling back on random access.

use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::region::{MemoryKind, Region};
use crate::resolve::{Protect, Wake};
use crate::userfaultfd::Userfaultfd;
use nix::errno::Errno;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// Where the bytes of a registered range come from. Cloning shares the bytes or the open file.
#[derive(Clone)]
pub enum Source {
    /// Zero pages.
    Zero,
    /// Bytes in memory; offset 0 of the region is byte 0. Past their end: zeros.
    Bytes(Arc<[u8]>),
    /// A file read with pread from `offset` on. Past its end: zeros. `path` names it in errors.
    File { file: Arc<File>, offset: u64, path: Arc<str> },
    /// For minor faults: what the page cache holds (CONTINUE).
    PageCache,
    /// An object in a store (S3, HTTP), read in chunks on the object-store runtime: its faults
    /// wait in the fault table instead of blocking the loop (object_source/pending.rs). Past its
    /// end: zeros.
    Object(Arc<crate::object_source::ObjectSource>),
}

impl Source {
    /// Opens a file source, refusing now what could only fail at fault time: a directory, or a
    /// file that cannot be read at `offset` (a read of one byte there is tried).
    pub fn file(path: &str, offset: u64) -> Result<Source> {
        let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let file = File::open(path).map_err(|e| Error::sys("open", errno(e), format!("source file {path:?}")))?;
        let what = format!("source file {path:?} cannot be read");
        if file.metadata().map_err(|e| Error::sys("fstat", errno(e), what.clone()))?.is_dir() {
            return Err(Error::sys("open", Errno::EISDIR, format!("source file {path:?} is a directory")));
        }
        let mut probe = [0u8; 1];
        loop {
            match file.read_at(&mut probe, offset) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::sys("pread", errno(e), format!("{what} at offset {offset}"))),
            }
        }
        Ok(Source::File { file: Arc::new(file), offset, path: path.into() })
    }

    /// What the source is, for messages: `the source file "/data/x"`.
    pub fn describe(&self) -> String {
        match self {
            Source::Zero => "the zero source".into(),
            Source::Bytes(bytes) => format!("the bytes source ({} bytes)", bytes.len()),
            Source::File { path, .. } => format!("the source file {path:?}"),
            Source::PageCache => "the page-cache source".into(),
            Source::Object(object) => format!("the object {}", object.url()),
        }
    }

    /// How many bytes the source has from `offset` (of the region) on; `None`: no end.
    fn available(&self, offset: usize) -> Option<usize> {
        match self {
            Source::Zero | Source::PageCache => None,
            Source::Bytes(bytes) => Some(bytes.len().saturating_sub(offset)),
            // A file can grow: it is asked each time (fstat is far cheaper than the COPY).
            Source::File { file, offset: base, .. } => {
                let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
                Some(len.saturating_sub(base + offset as u64).try_into().unwrap_or(usize::MAX))
            }
            Source::Object(object) => {
                Some(object.size().saturating_sub(offset as u64).try_into().unwrap_or(usize::MAX))
            }
        }
    }

    pub(crate) fn serves(&self, kind: FaultKind) -> bool {
        match self {
            Source::PageCache => kind == FaultKind::Minor,
            _ => kind == FaultKind::Missing,
        }
    }
}

/// How many pages one fault maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readahead {
    /// Pages per fault to start with (at least 1).
    pub pages: usize,
    /// Double the window on sequential faults, up to `max_pages`; halve it on a jump, down to 1.
    pub adaptive: bool,
    pub max_pages: usize,
}

impl Default for Readahead {
    fn default() -> Self {
        Readahead { pages: 1, adaptive: false, max_pages: 1 }
    }
}

/// A source with its readahead state, shared by the parts of a registration.
pub struct Served {
    source: Source,
    readahead: Readahead,
    /// Pages past the source's end go to the handler instead of being mapped as zeros.
    fallthrough: bool,
    state: Mutex<Window>,
}

struct Window {
    /// Where the next sequential fault would be (region offset).
    next: usize,
    pages: usize,
    /// Reused for file reads and zeroed copies: the loop thread allocates it once.
    scratch: Scratch,
}

/// A reusable page-aligned buffer: pread into a buffer 16 bytes past a page boundary (where a large
/// Vec lands) is about 3x slower here (bench/RESULTS.md).
#[derive(Default)]
pub(crate) struct Scratch(Vec<u8>);

impl Scratch {
    pub(crate) fn aligned(&mut self, len: usize) -> &mut [u8] {
        const ALIGN: usize = 4096;
        if self.0.len() < len + ALIGN {
            self.0 = vec![0; len + ALIGN];
        }
        let skip = self.0.as_ptr().align_offset(ALIGN);
        &mut self.0[skip..skip + len]
    }
}

impl Served {
    pub fn new(source: Source, readahead: Readahead) -> Arc<Served> {
        Self::with_fallthrough(source, readahead, false)
    }

    /// A source whose missing pages (past the end of its bytes or file) go to the handler.
    pub fn with_fallthrough(source: Source, readahead: Readahead, fallthrough: bool) -> Arc<Served> {
        let pages = readahead.pages.max(1);
        let readahead = Readahead { pages, max_pages: readahead.max_pages.max(pages), ..readahead };
        Arc::new(Served {
            source,
            readahead,
            fallthrough,
            state: Mutex::new(Window { next: usize::MAX, pages, scratch: Scratch::default() }),
        })
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// With `fallthrough`, where (region offset, page-rounded) the source's bytes end: the pages
    /// after that are the handler's. `None`: the source maps every page.
    pub(crate) fn end_for(&self, offset: usize, page: usize) -> Option<usize> {
        if !self.fallthrough {
            return None;
        }
        self.source.available(offset).map(|bytes| offset.saturating_add(bytes.next_multiple_of(page)))
    }
}

impl Userfaultfd {
    /// Resolves fault `id` (handed to a handler) from a native source: the handler decides, the
    /// source maps. Returns the bytes mapped (0 if the fault was already settled or another
    /// resolver won).
    pub fn resolve_from_source(&self, id: u64, served: &Served) -> Result<usize> {
        const OP: &str = "fromSource";
        let Some(fault) = self.fault_in_flight(id) else {
            return Ok(0);
        };
        let region = &fault.region;
        let end = self.registration_at(region.address() + fault.offset).map_or(region.size(), |(_, end, _)| end);
        let end = end.saturating_sub(region.address()).max(fault.offset + region.page_size());
        match self.serve_natively(served, region, fault.offset, end, fault.kind) {
            Some(Ok(mapped)) => {
                self.settle(id, true);
                Ok(mapped)
            }
            Some(Err(err)) => Err(err),
            // `served` here never falls through: only a kind the source does not serve gives None.
            None => Err(Error::invalid(OP, format!("this source does not serve {} faults", fault.kind.name()))),
        }
    }

    /// Resolves a fault from a native source, if the source serves this kind of fault. Returns the
    /// bytes mapped, `Ok(0)` if another resolver won; `None` if the source does not apply.
    pub(crate) fn serve_natively(
        &self,
        served: &Served,
        region: &Region,
        offset: usize,
        end: usize,
        kind: FaultKind,
    ) -> Option<Result<usize>> {
        if !served.source.serves(kind) {
            return None;
        }
        let page = region.page_size();
        let mut end = end;
        if served.fallthrough {
            match served.source.available(offset) {
                Some(0) => return None,
                // A page the source has part of is mapped (zeros after the end); whole pages past
                // the end go to the handler.
                Some(bytes) => end = end.min(offset + bytes.next_multiple_of(page)),
                None => {}
            }
        }
        let mut window = served.state.lock().unwrap_or_else(|p| p.into_inner());
        let pages = if !served.readahead.adaptive || window.next == usize::MAX {
            served.readahead.pages
        } else if offset == window.next {
            (window.pages * 2).min(served.readahead.max_pages)
        } else {
            // A jump: random access maps fewer pages each time, down to the faulting page alone.
            (window.pages / 2).max(1)
        };
        window.pages = pages;
        let len = (pages * page).min(end - offset);
        // Counted before the ioctl wakes the faulting thread, which may read the counters at once.
        crate::stats::bump(&self.counters.native);
        let result = self.map_from(&served.source, region, offset, len, &mut window.scratch);
        let result = match result {
            Err(Error::Sys { errno: Errno::EEXIST, .. }) => {
                crate::stats::bump(&self.counters.eexist);
                self.wake(region, offset, page).map(|()| 0)
            }
            other => other,
        };
        match result {
            Ok(mapped) => window.next = offset + mapped.max(page),
            Err(_) => {
                self.counters.native.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Some(result)
    }
}

impl Userfaultfd {
    /// Maps `len` bytes at `offset` of a region from a source, waking any thread waiting there.
    /// Returns the bytes mapped, fewer if a page of the range was already there.
    pub(crate) fn map_from(
        &self,
        source: &Source,
        region: &Region,
        offset: usize,
        len: usize,
        scratch: &mut Scratch,
    ) -> Result<usize> {
        match source {
            Source::PageCache => self.r#continue(region, offset, len, Wake(true), Protect(false)),
            Source::Zero if region.kind() != MemoryKind::Hugetlb => self.zero(region, offset, len, Wake(true)),
            // Whole pages of the bytes: COPY straight from them.
            Source::Bytes(bytes) if offset + len <= bytes.len() => {
                self.copy(region, offset, &bytes[offset..offset + len], Wake(true), Protect(false))
            }
            _ => {
                let scratch = scratch.aligned(len);
                fill(source, offset, scratch)?;
                self.copy(region, offset, scratch, Wake(true), Protect(false))
            }
        }
    }
}

/// Fills `out` with the source's bytes at `offset`; zeros past the source's end.
fn fill(source: &Source, offset: usize, out: &mut [u8]) -> Result<()> {
    match source {
        Source::Zero | Source::PageCache => out.fill(0),
        Source::Bytes(bytes) => {
            let available = bytes.len().saturating_sub(offset).min(out.len());
            out[..available].copy_from_slice(&bytes[offset.min(bytes.len())..][..available]);
            out[available..].fill(0);
        }
        Source::File { file, offset: base, path } => {
            let mut done = 0;
            while done < out.len() {
                match file.read_at(&mut out[done..], base + (offset + done) as u64) {
                    Ok(0) => break,
                    Ok(read) => done += read,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(Error::sys(
                            "pread",
                            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                            format!("reading source file {path:?} at offset {}", base + (offset + done) as u64),
                        ))
                    }
                }
            }
            out[done..].fill(0);
        }
        // Blocks this thread (a prefetch, a handler's fromSource): faults take the pending path.
        Source::Object(object) => object.read_blocking(offset as u64, out)?,
    }
    Ok(())
}
