//! Native page sources, what they are and how they read: zeros, bytes in memory, a file, layered
//! files, the page cache for minor faults, an object in a store. A registration carries a source
//! and a readahead window: one COPY answers a fault with several pages, growing while the faults
//! are sequential (like the kernel's own readahead) and falling back on random access. Mapping
//! their bytes is `native.rs`'s.

use crate::error::{Error, Result};
use crate::fault::FaultKind;
use crate::residency::{Limit, Residency, WriteTarget};
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Where the bytes of a registered range come from. Cloning shares the bytes or the open file.
#[derive(Clone)]
pub enum Source {
    /// Zero pages.
    Zero,
    /// Bytes in memory; offset 0 of the region is byte 0. Past their end: zeros.
    Bytes(Arc<[u8]>),
    /// A file read with pread from its offset on. Past its end, and in its holes: zeros (a hole,
    /// found with SEEK_DATA, is mapped without a read). Cut shorter while served, what it no
    /// longer has is an error, not zeros.
    File(FileLayer),
    /// Files stacked base first (a full snapshot, then diffs that hold only the pages that changed
    /// and are sparse elsewhere): each byte comes from the topmost layer with data there; what no
    /// layer has is zeros.
    Layers(Arc<[FileLayer]>),
    /// For minor faults: what the page cache holds (CONTINUE).
    PageCache,
    /// An object in a store (S3, HTTP), read in chunks on the object-store runtime: its faults
    /// wait in the fault table instead of blocking the loop (object_faults.rs); region
    /// offset 0 is the object's byte at the offset given (one region of a VM's memory). Past its
    /// end: zeros. Local files may lie above it (diff snapshots taken after the one the object
    /// holds, sparse where nothing changed), read from the same offset: a page one of them has
    /// comes from the topmost that has it, with no request; the others from the object.
    Object(Arc<crate::object_source::ObjectSource>, u64, Arc<[FileLayer]>),
    /// No native source: the handler maps every page. What a range with a residency limit and
    /// a handler is served by (the handler is asked again for a page dropped).
    Handler,
}

impl Source {
    /// Opens a file source, refusing now what could only fail at fault time: a directory, or a
    /// file that cannot be read at `offset` (a read of one byte there is tried).
    pub fn file(path: &str, offset: u64) -> Result<Source> {
        Ok(Source::File(FileLayer::open(path, offset, false)?))
    }

    /// A file source that what the program writes is written back to (opened for writing too):
    /// with a residency limit, or write-back alone (`residency.rs`).
    pub fn writable_file(path: &str, offset: u64) -> Result<Source> {
        Ok(Source::File(FileLayer::open(path, offset, true)?))
    }

    /// The file what the program writes goes back to, if the source is a writable file.
    pub(crate) fn write_back(&self) -> Option<&FileLayer> {
        match self {
            Source::File(layer) if layer.writable() => Some(layer),
            // The topmost layer: what is written back there is what the next read finds first.
            Source::Layers(layers) => layers.last().filter(|layer| layer.writable()),
            _ => None,
        }
    }

    /// Files stacked base first, each read from `offset` on (see [`Source::Layers`]); with
    /// `writable`, the topmost is opened for writing too and what the program writes goes there.
    pub fn layers(paths: &[&str], offset: u64, writable: bool) -> Result<Source> {
        if paths.is_empty() {
            return Err(Error::invalid("open", "a layered source needs at least one file"));
        }
        let top = paths.len() - 1;
        let layers = paths
            .iter()
            .enumerate()
            .map(|(i, path)| FileLayer::open(path, offset, writable && i == top))
            .collect::<Result<Vec<_>>>()?;
        Ok(Source::Layers(layers.into()))
    }

    /// An object (from byte `offset`) with local files above it, base first, each read from
    /// `offset` too (see [`Source::Object`]). Read only: nothing is written back to them.
    pub fn over_object(object: Arc<crate::object_source::ObjectSource>, paths: &[&str], offset: u64) -> Result<Source> {
        let above = paths.iter().map(|path| FileLayer::open(path, offset, false)).collect::<Result<Vec<_>>>()?;
        Ok(Source::Object(object, offset, above.into()))
    }

    /// The same files (the same open descriptors), read `delta` bytes further on: what another
    /// region of the same memory file is served from. File, layered and object sources have offsets.
    pub fn shifted(&self, delta: u64) -> Result<Source> {
        let shift = |layer: &FileLayer| FileLayer { offset: layer.offset + delta, ..layer.clone() };
        match self {
            Source::File(layer) => Ok(Source::File(shift(layer))),
            Source::Layers(layers) => Ok(Source::Layers(layers.iter().map(shift).collect())),
            Source::Object(object, base, above) => {
                Ok(Source::Object(object.clone(), base + delta, above.iter().map(shift).collect()))
            }
            _ if delta == 0 => Ok(self.clone()),
            other => Err(Error::invalid(
                "serve",
                format!("sourceOffset: {} has no offsets (a file or layered source has)", other.describe()),
            )),
        }
    }

    /// What the source is, for messages: `the source file "/data/x"`.
    pub fn describe(&self) -> String {
        match self {
            Source::Zero => "the zero source".into(),
            Source::Bytes(bytes) => format!("the bytes source ({} bytes)", bytes.len()),
            Source::File(layer) => format!("the source file {:?}", layer.path),
            Source::Layers(layers) => {
                let paths: Vec<&str> = layers.iter().map(|layer| &*layer.path).collect();
                format!("the layered source {paths:?}")
            }
            Source::PageCache => "the page-cache source".into(),
            Source::Object(object, base, above) => {
                let from = if *base == 0 { String::new() } else { format!(" (from byte {base})") };
                let paths: Vec<&str> = above.iter().map(|layer| &*layer.path).collect();
                let files = if paths.is_empty() { String::new() } else { format!(" with the files {paths:?} above") };
                format!("the object {}{from}{files}", object.url())
            }
            Source::Handler => "the handler".into(),
        }
    }

    /// Where in its file(s) offset 0 of the region is read from; 0 for sources without a file.
    pub fn file_offset(&self) -> u64 {
        match self {
            Source::File(layer) => layer.offset,
            Source::Layers(layers) => layers.first().map_or(0, |layer| layer.offset),
            Source::Object(_, base, _) => *base,
            _ => 0,
        }
    }

    /// How many bytes the source has for a region, from its offset 0 on: the bytes' length, a
    /// file's bytes past its offset (asked now: a file can grow), the largest layer's, the
    /// object's size; `None` for zeros and the page cache, which have no end.
    pub fn size(&self) -> Option<u64> {
        self.available(0).map(|bytes| bytes as u64)
    }

    /// How many bytes the source has from `offset` (of the region) on; `None`: no end.
    pub(crate) fn available(&self, offset: usize) -> Option<usize> {
        match self {
            Source::Zero | Source::PageCache | Source::Handler => None,
            Source::Bytes(bytes) => Some(bytes.len().saturating_sub(offset)),
            // A file can grow: it is asked each time (fstat is far cheaper than the COPY).
            Source::File(layer) => Some(layer.available(offset)),
            Source::Layers(layers) => layers.iter().map(|layer| layer.available(offset)).max(),
            Source::Object(object, base, above) => {
                let own = object.size().saturating_sub(base + offset as u64).try_into().unwrap_or(usize::MAX);
                Some(above.iter().map(|layer| layer.available(offset)).fold(own, usize::max))
            }
        }
    }

    /// Whether `other` is this very source (the same bytes, open file(s) or object), not only one
    /// of the same kind.
    pub fn same_as(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::Zero, Source::Zero) | (Source::PageCache, Source::PageCache) => true,
            (Source::Bytes(a), Source::Bytes(b)) => Arc::ptr_eq(a, b),
            (Source::File(a), Source::File(b)) => Arc::ptr_eq(&a.file, &b.file) && a.offset == b.offset,
            (Source::Layers(a), Source::Layers(b)) => Arc::ptr_eq(a, b),
            (Source::Object(a, at, above_a), Source::Object(b, bt, above_b)) => {
                let same_files = (above_a.is_empty() && above_b.is_empty()) || Arc::ptr_eq(above_a, above_b);
                Arc::ptr_eq(a, b) && at == bt && same_files
            }
            _ => false,
        }
    }

    /// The mode a range needs for this source to get its faults: `"minor"` for the page cache,
    /// else `"missing"`.
    pub fn mode(&self) -> &'static str {
        match self {
            Source::PageCache => "minor",
            _ => "missing",
        }
    }

    pub(crate) fn serves(&self, kind: FaultKind) -> bool {
        match self {
            Source::PageCache => kind == FaultKind::Minor,
            Source::Handler => false,
            _ => kind == FaultKind::Missing,
        }
    }
}

/// One file of a file source: read with pread from `offset` on; `path` names it in errors.
#[derive(Clone)]
pub struct FileLayer {
    file: Arc<File>,
    /// Opened for writing too: what the program writes is written back (`residency.rs`).
    writable: bool,
    offset: u64,
    path: Arc<str>,
    /// Its size when opened: a read before it that finds the end of the file (or no data) means
    /// the file was cut while served, an error, never zeros it did not have.
    size: u64,
}

/// The open files of live sources, by device and inode: a file opened again while a source holds
/// it shares that source's descriptor. A VM restored from one memory file opens it once a region
/// (thousands of regions), each JavaScript source freed only when collected: one descriptor each
/// would stay open long after the VM ended (8,000 for an 8,000-region VM) and exhaust the limit.
/// Reads are positionless (pread, and lseek that returns what it finds), so sharing is safe.
fn shared(file: File, metadata: &std::fs::Metadata, writable: bool) -> Arc<File> {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    use std::sync::{OnceLock, Weak};
    /// Device and inode, and whether it is open for writing.
    type Key = (u64, u64, bool);
    static OPEN: OnceLock<Mutex<HashMap<Key, Weak<File>>>> = OnceLock::new();
    if !metadata.is_file() {
        return Arc::new(file);
    }
    let key = (metadata.dev(), metadata.ino(), writable);
    let mut open = OPEN.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(held) = open.get(&key).and_then(Weak::upgrade) {
        return held; // `file` is closed here: the held descriptor serves
    }
    open.retain(|_, held| held.strong_count() > 0);
    let file = Arc::new(file);
    open.insert(key, Arc::downgrade(&file));
    file
}

/// What a file has at a region offset.
enum Extent {
    /// Data, up to this region offset (where its next hole, or its end, begins).
    Data { until: usize },
    /// A hole; data begins again at this region offset, if anywhere.
    Hole { next_data: Option<usize> },
}

impl FileLayer {
    fn open(path: &str, offset: u64, writable: bool) -> Result<FileLayer> {
        let errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        let file = std::fs::OpenOptions::new().read(true).write(writable).open(path).map_err(|e| {
            let errno = errno(e);
            let error = Error::sys("open", errno, format!("source file {path:?}"));
            // Not the userfaultfd permission advice that "open" would otherwise get.
            match errno {
                Errno::EACCES | Errno::EPERM => error.with_advice("the file cannot be opened: check its permissions"),
                _ => error,
            }
        })?;
        let what = format!("source file {path:?} cannot be read");
        let metadata = file.metadata().map_err(|e| Error::sys("fstat", errno(e), what.clone()))?;
        if metadata.is_dir() {
            return Err(Error::sys("open", Errno::EISDIR, format!("source file {path:?} is a directory")));
        }
        // Only a regular file's size says where its bytes end (procfs and devices say 0).
        let size = if metadata.is_file() { metadata.len() } else { 0 };
        let mut probe = [0u8; 1];
        loop {
            match file.read_at(&mut probe, offset) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::sys("pread", errno(e), format!("{what} at offset {offset}"))),
            }
        }
        Ok(FileLayer { file: shared(file, &metadata, writable), writable, offset, path: path.into(), size })
    }

    /// Whether what the program writes is written back here.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    fn writing_at(&self, at: u64) -> String {
        format!("writing back to source file {:?} at offset {at}", self.path)
    }
}

impl WriteTarget for FileLayer {
    /// Writes `bytes` at region offset `at` (a page written back). A file removed, or cut shorter
    /// than it was when opened, is an error: the write would land in a file no one reads, or
    /// leave zeros where the cut took the bytes.
    fn write(&self, at: usize, bytes: &[u8]) -> Result<()> {
        let base = self.offset + at as u64;
        let metadata = self.file.metadata().map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            Error::sys("fstat", errno, self.writing_at(base))
        })?;
        if metadata.is_file() {
            use std::os::unix::fs::MetadataExt;
            if metadata.nlink() == 0 {
                let why = format!("{}: the file was removed since it was opened", self.writing_at(base));
                return Err(Error::sys("pwrite", Errno::ENOENT, why));
            }
            if metadata.len() < self.size {
                let why = format!(
                    "{}: the file was cut to {} bytes since it was opened (it had {})",
                    self.writing_at(base),
                    metadata.len(),
                    self.size
                );
                return Err(Error::sys("pwrite", Errno::ESTALE, why));
            }
        }
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write_at(&bytes[done..], base + done as u64) {
                Ok(0) => return Err(Error::sys("pwrite", Errno::EIO, self.writing_at(base + done as u64))),
                Ok(written) => done += written,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                    return Err(Error::sys("pwrite", errno, self.writing_at(base + done as u64)));
                }
            }
        }
        Ok(())
    }

    /// Flushes what was written back to the disk (fsync).
    fn sync(&self) -> Result<()> {
        self.file.sync_all().map_err(|e| {
            let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            Error::sys("fsync", errno, format!("source file {:?}", self.path))
        })
    }
}

impl FileLayer {
    fn available(&self, offset: usize) -> usize {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        len.saturating_sub(self.offset + offset as u64).try_into().unwrap_or(usize::MAX)
    }

    /// An error if the file ends at or before `at` (a file offset) although it was longer when
    /// opened: it was cut (truncated) while served, and what it had there is gone.
    fn check_not_cut(&self, at: u64) -> Result<()> {
        if at >= self.size {
            return Ok(());
        }
        let now = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if now > at {
            return Ok(());
        }
        Err(Error::sys(
            "pread",
            Errno::EIO,
            format!(
                "source file {:?} was cut while served: it had {} bytes when opened and has {now}, so offset {at} is gone",
                self.path, self.size
            ),
        )
        .with_advice("the file changed under the memory it serves: that memory cannot be served right any longer"))
    }

    /// What the file holds at region offset `at` (SEEK_DATA, then SEEK_HOLE).
    fn extent(&self, at: usize) -> Result<Extent> {
        use nix::unistd::{lseek, Whence};
        let fd = self.file.as_raw_fd();
        let here = (self.offset + at as u64) as i64;
        let region_offset = |file_offset: i64| (file_offset as u64).saturating_sub(self.offset) as usize;
        match lseek(fd, here, Whence::SeekData) {
            // No data at or after `here`: a hole to the end, past the end of the file, or the
            // file was cut since it was opened.
            Err(Errno::ENXIO) => {
                self.check_not_cut(here as u64)?;
                Ok(Extent::Hole { next_data: None })
            }
            // A file that cannot tell its holes (procfs, some network file systems): all data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ESPIPE) => Ok(Extent::Data { until: usize::MAX }),
            Err(errno) => Err(Error::sys("lseek", errno, format!("SEEK_DATA in source file {:?}", self.path))),
            Ok(data) if data > here => Ok(Extent::Hole { next_data: Some(region_offset(data)) }),
            Ok(_) => {
                let hole = lseek(fd, here, Whence::SeekHole)
                    .map_err(|errno| Error::sys("lseek", errno, format!("SEEK_HOLE in source file {:?}", self.path)))?;
                Ok(Extent::Data { until: region_offset(hole) })
            }
        }
    }

    /// Reads `out.len()` bytes at region offset `at`; zeros past the end the file had when opened
    /// (an error before it: the file was cut).
    fn read(&self, at: usize, out: &mut [u8]) -> Result<()> {
        let base = self.offset + at as u64;
        let mut done = 0;
        while done < out.len() {
            match self.file.read_at(&mut out[done..], base + done as u64) {
                Ok(0) => {
                    self.check_not_cut(base + done as u64)?;
                    break;
                }
                Ok(read) => done += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::sys(
                        "pread",
                        Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                        format!("reading source file {:?} at offset {}", self.path, base + done as u64),
                    ))
                }
            }
        }
        out[done..].fill(0);
        Ok(())
    }
}

/// Fills `out` with what the layers (base first) hold at region offset `at`: each byte from the
/// topmost layer with data there, zeros where none has. Returns false when nothing was read (all
/// holes): the range can be mapped with zero pages instead.
pub(crate) fn fill_layers(layers: &[FileLayer], at: usize, out: &mut [u8]) -> Result<bool> {
    read_layers(layers, at, out, true)
}

/// Writes over `out` (what a layer below them holds at region offset `at`) the bytes the layers
/// have data for, each from the topmost with data there; leaves the rest. Returns whether any was.
pub(crate) fn overlay_layers(layers: &[FileLayer], at: usize, out: &mut [u8]) -> Result<bool> {
    read_layers(layers, at, out, false)
}

/// Whether any layer has data somewhere in the `len` bytes from region offset `at`.
pub(crate) fn any_data(layers: &[FileLayer], at: usize, len: usize) -> Result<bool> {
    for layer in layers {
        match layer.extent(at)? {
            Extent::Data { .. } => return Ok(true),
            Extent::Hole { next_data: Some(next) } if next < at + len => return Ok(true),
            Extent::Hole { .. } => {}
        }
    }
    Ok(false)
}

/// How many of the `len` bytes from region offset `at` one layer or another has data for, in a
/// row from `at` (0: none has data at `at`).
pub(crate) fn data_run(layers: &[FileLayer], at: usize, len: usize) -> Result<usize> {
    let end = at + len;
    let mut pos = at;
    while pos < end {
        let mut until = None;
        for layer in layers {
            if let Extent::Data { until: data_end } = layer.extent(pos)? {
                until = Some(until.unwrap_or(0).max(data_end.max(pos + 1)));
            }
        }
        match until {
            Some(until) => pos = until.min(end),
            None => break,
        }
    }
    Ok(pos - at)
}

fn read_layers(layers: &[FileLayer], at: usize, out: &mut [u8], zero_holes: bool) -> Result<bool> {
    let end = at + out.len();
    let mut pos = at;
    let mut read_any = false;
    while pos < end {
        let mut until = end;
        let mut from = None;
        for layer in layers.iter().rev() {
            match layer.extent(pos)? {
                Extent::Data { until: data_end } => {
                    from = Some(layer);
                    until = until.min(data_end.max(pos + 1));
                    break;
                }
                // A layer above the one that has data here takes over where its own data begins.
                Extent::Hole { next_data: Some(next) } => until = until.min(next.max(pos + 1)),
                Extent::Hole { next_data: None } => {}
            }
        }
        let part = &mut out[pos - at..until - at];
        match from {
            Some(layer) => {
                layer.read(pos, part)?;
                read_any = true;
            }
            None if zero_holes => part.fill(0),
            None => {}
        }
        pos = until;
    }
    Ok(read_any)
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

/// How a registration's source serves it, besides its readahead.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub readahead: Readahead,
    /// Pages past the source's end go to the handler instead of being mapped as zeros.
    pub fallthrough: bool,
    /// A range the kernel reported removed (EVENT_REMOVE: a VM's balloon, `madvise(MADV_DONTNEED)`)
    /// is served zeros on its next fault, as the memory's own owner would see it, instead of the
    /// source's bytes again.
    pub zero_removed: bool,
    /// Records the pages faults mapped, in the order they were first touched.
    pub recorder: Option<Arc<Recorder>>,
    /// At most this much of the registration resident (`residency.rs`).
    pub residency: Option<Limit>,
}

/// A source with its readahead state, shared by the parts of a registration.
pub struct Served {
    pub(crate) source: Source,
    pub(crate) readahead: Readahead,
    pub(crate) fallthrough: bool,
    pub(crate) zero_removed: bool,
    pub(crate) recorder: Option<Arc<Recorder>>,
    limit: Option<Limit>,
    /// The residency limit, once the range is registered.
    residency: OnceLock<Residency>,
    /// Removed ranges (region offsets, sorted, disjoint) while `zero_removed`.
    removed: Mutex<Vec<(usize, usize)>>,
    pub(crate) window: Window,
}

/// The order in which pages were first touched, by their offset in the source's file: what a
/// working-set trace replays first on the next restore.
#[derive(Default)]
pub struct Recorder {
    state: Mutex<Recorded>,
}

#[derive(Default)]
struct Recorded {
    seen: std::collections::HashSet<u64>,
    order: Vec<u64>,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::default()
    }

    /// Notes the pages of `[at, at + len)` (file offsets) not seen before, in order.
    pub(crate) fn touch(&self, at: u64, len: u64, page: u64) {
        let mut recorded = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut page_at = at;
        while page_at < at + len {
            if recorded.seen.insert(page_at) {
                recorded.order.push(page_at);
            }
            page_at += page;
        }
    }

    /// The file offsets of the pages recorded, in the order they were first touched.
    pub fn pages(&self) -> Vec<u64> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).order.clone()
    }
}

/// The readahead window. Several readers may serve one registration at once: each reads and
/// updates it without a lock (a race only makes one fault's window less exact).
pub(crate) struct Window {
    /// Where the next sequential fault would be (region offset; `usize::MAX`: none yet).
    next: AtomicUsize,
    pages: AtomicUsize,
}

impl Window {
    /// The pages to map for a fault at `offset`, by `readahead`, noted as the window's size.
    pub(crate) fn pages_for(&self, offset: usize, readahead: &Readahead) -> usize {
        let next = self.next.load(Ordering::Relaxed);
        let pages = if !readahead.adaptive || next == usize::MAX {
            readahead.pages
        } else if offset == next {
            (self.pages.load(Ordering::Relaxed) * 2).min(readahead.max_pages)
        } else {
            // A jump: random access maps fewer pages each time, down to the faulting page alone.
            (self.pages.load(Ordering::Relaxed) / 2).max(1)
        };
        self.pages.store(pages, Ordering::Relaxed);
        pages
    }

    /// Where the next sequential fault would be.
    pub(crate) fn advance_to(&self, next: usize) {
        self.next.store(next, Ordering::Relaxed);
    }
}

/// A reusable page-aligned buffer, one per reader: pread into a buffer 16 bytes past a page
/// boundary (where a large Vec lands) is about 3x slower here (bench/RESULTS.md).
#[derive(Default)]
pub struct Scratch(Vec<u8>);

impl Scratch {
    pub fn aligned(&mut self, len: usize) -> &mut [u8] {
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
        Self::with(source, ServeOptions { readahead, fallthrough, ..ServeOptions::default() })
    }

    pub fn with(source: Source, options: ServeOptions) -> Arc<Served> {
        let ServeOptions { readahead, fallthrough, zero_removed, recorder, residency } = options;
        let pages = readahead.pages.max(1);
        let readahead = Readahead { pages, max_pages: readahead.max_pages.max(pages), ..readahead };
        Arc::new(Served {
            source,
            readahead,
            fallthrough,
            zero_removed,
            recorder,
            limit: residency,
            residency: OnceLock::new(),
            removed: Mutex::new(Vec::new()),
            window: Window { next: AtomicUsize::new(usize::MAX), pages: AtomicUsize::new(pages) },
        })
    }

    /// The residency limit asked for, if any.
    pub fn limit(&self) -> Option<Limit> {
        self.limit
    }

    /// The residency limit of the registered range (the first registration's, if there were more).
    pub(crate) fn limit_residency(&self, residency: Residency) {
        let _ = self.residency.set(residency);
    }

    pub(crate) fn residency(&self) -> Option<&Residency> {
        self.residency.get()
    }

    /// Notes that `[start, end)` (region offsets) was removed: with `zero_removed`, its next
    /// faults get zeros.
    pub(crate) fn note_removed(&self, start: usize, end: usize) {
        if !self.zero_removed || start >= end {
            return;
        }
        let mut removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        removed.push((start, end));
        removed.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(removed.len());
        for &(s, e) in removed.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *removed = merged;
    }

    /// Where the removed range holding `offset` ends, if `offset` was removed; else where the next
    /// removed range begins (`Err`), if any.
    pub(crate) fn removed_at(&self, offset: usize) -> std::result::Result<usize, Option<usize>> {
        let removed = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        match removed.iter().find(|&&(_, end)| end > offset) {
            Some(&(start, end)) if start <= offset => Ok(end),
            Some(&(start, _)) => Err(Some(start)),
            None => Err(None),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const PAGE: usize = 4096;

    /// A file of `pages` pages where page p, if written, is filled with `fill(p)`; the others are holes.
    fn sparse(dir: &std::path::Path, name: &str, pages: usize, fill: impl Fn(usize) -> Option<u8>) -> String {
        let path = dir.join(name);
        let file = File::create(&path).unwrap();
        file.set_len((pages * PAGE) as u64).unwrap();
        for p in 0..pages {
            if let Some(byte) = fill(p) {
                file.write_at(&vec![byte; PAGE], (p * PAGE) as u64).unwrap();
            }
        }
        (&file).flush().unwrap();
        path.to_str().unwrap().to_string()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("uffd-core-source-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn layers_give_each_page_from_the_topmost_file_with_data_and_zeros_where_none_has() {
        let dir = temp_dir("layers");
        let base = sparse(&dir, "base", 8, |p| (p < 6).then_some(1));
        let diff = sparse(&dir, "diff", 8, |p| [2, 3, 7].contains(&p).then_some(2));
        let Source::Layers(layers) = Source::layers(&[&base, &diff], 0, false).unwrap() else { panic!("layers") };
        let mut out = vec![0xffu8; 8 * PAGE];
        assert!(fill_layers(&layers, 0, &mut out).unwrap());
        let first: Vec<u8> = (0..8).map(|p| out[p * PAGE]).collect();
        assert_eq!(first, [1, 1, 2, 2, 1, 1, 0, 2]);
        assert!(out.chunks(PAGE).all(|page| page.iter().all(|&b| b == page[0])));
        // A range that is a hole in every layer reads nothing.
        let mut hole = vec![0xffu8; PAGE];
        assert!(!fill_layers(&layers, 6 * PAGE, &mut hole).unwrap());
        assert!(hole.iter().all(|&b| b == 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_above_an_object_overlay_only_their_data_and_say_how_far_it_runs() {
        let dir = temp_dir("overlay");
        let lower = sparse(&dir, "lower", 8, |p| [1, 2].contains(&p).then_some(3));
        let upper = sparse(&dir, "upper", 8, |p| [2, 3, 6].contains(&p).then_some(4));
        let Source::Layers(layers) = Source::layers(&[&lower, &upper], 0, false).unwrap() else { panic!("layers") };
        // What the object below holds (9s): kept where no file has data.
        let mut out = vec![9u8; 8 * PAGE];
        assert!(overlay_layers(&layers, 0, &mut out).unwrap());
        let first: Vec<u8> = (0..8).map(|p| out[p * PAGE]).collect();
        assert_eq!(first, [9, 3, 4, 4, 9, 9, 4, 9]);
        // Pages 1-3 have data in one file or the other, in a row; page 0 in none.
        assert_eq!(data_run(&layers, 0, 8 * PAGE).unwrap(), 0);
        assert_eq!(data_run(&layers, PAGE, 7 * PAGE).unwrap(), 3 * PAGE);
        assert_eq!(data_run(&layers, 2 * PAGE, PAGE).unwrap(), PAGE);
        assert_eq!(data_run(&layers, 6 * PAGE, 2 * PAGE).unwrap(), PAGE);
        assert!(any_data(&layers, 4 * PAGE, 3 * PAGE).unwrap());
        assert!(!any_data(&layers, 4 * PAGE, 2 * PAGE).unwrap());
        assert!(!any_data(&layers, 7 * PAGE, PAGE).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_source_refuses_a_directory_and_names_its_file_in_messages() {
        let dir = temp_dir("refuse");
        let err = Source::file(dir.to_str().unwrap(), 0).err().expect("a directory is refused");
        assert_eq!(err.errno(), Errno::EISDIR);
        let path = sparse(&dir, "named", 1, |_| Some(3));
        assert!(Source::file(&path, 0).unwrap().describe().contains("named"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_cut_while_served_is_an_error_where_it_had_bytes_never_zeros() {
        let dir = temp_dir("cut");
        let path = sparse(&dir, "cut", 8, |p| (p != 5).then_some(7));
        let Source::File(layer) = Source::file(&path, 0).unwrap() else { panic!("a file") };
        let mut out = vec![0u8; 2 * PAGE];
        File::options().write(true).open(&path).unwrap().set_len(4 * PAGE as u64).unwrap();
        // Read past the new end (the page cache path) and found a hole past it (the SEEK_DATA path).
        let read = fill_layers(std::slice::from_ref(&layer), 3 * PAGE, &mut out).unwrap_err();
        assert!(read.to_string().contains("was cut while served"), "{read}");
        let hole = fill_layers(std::slice::from_ref(&layer), 6 * PAGE, &mut out[..PAGE]).unwrap_err();
        assert!(hole.to_string().contains("had 32768 bytes when opened and has 16384"), "{hole}");
        // What it still has reads right.
        assert!(fill_layers(std::slice::from_ref(&layer), 0, &mut out).unwrap());
        assert!(out.iter().all(|&b| b == 7));
        // A file that grows back is served again (and past the size it had, zeros as before).
        File::options().write(true).open(&path).unwrap().set_len(8 * PAGE as u64).unwrap();
        assert!(!fill_layers(std::slice::from_ref(&layer), 6 * PAGE, &mut out[..PAGE]).unwrap());
        let mut past = vec![1u8; PAGE];
        layer.read(9 * PAGE, &mut past).unwrap();
        assert!(past.iter().all(|&b| b == 0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_opened_again_while_a_source_holds_it_shares_its_descriptor() {
        let dir = temp_dir("shared");
        let path = sparse(&dir, "shared", 2, |_| Some(5));
        let (Source::File(a), Source::File(b)) = (Source::file(&path, 0).unwrap(), Source::file(&path, 4096).unwrap())
        else {
            panic!("files")
        };
        assert!(Arc::ptr_eq(&a.file, &b.file));
        let mut out = vec![0u8; PAGE];
        b.read(0, &mut out).unwrap();
        assert!(out.iter().all(|&byte| byte == 5));
        let other = sparse(&dir, "other", 1, |_| Some(6));
        let Source::File(c) = Source::file(&other, 0).unwrap() else { panic!("a file") };
        assert!(!Arc::ptr_eq(&a.file, &c.file), "another file has its own");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn removed_ranges_merge_and_say_where_the_next_one_begins() {
        let served = Served::with(Source::Zero, ServeOptions { zero_removed: true, ..ServeOptions::default() });
        served.note_removed(8 * PAGE, 12 * PAGE);
        served.note_removed(10 * PAGE, 16 * PAGE);
        served.note_removed(32 * PAGE, 33 * PAGE);
        assert_eq!(served.removed_at(0), Err(Some(8 * PAGE)));
        assert_eq!(served.removed_at(9 * PAGE), Ok(16 * PAGE));
        assert_eq!(served.removed_at(16 * PAGE), Err(Some(32 * PAGE)));
        assert_eq!(served.removed_at(40 * PAGE), Err(None));
        let plain = Served::new(Source::Zero, Readahead::default());
        plain.note_removed(0, PAGE);
        assert_eq!(plain.removed_at(0), Err(None), "without zero_removed nothing is kept");
    }

    #[test]
    fn the_recorder_keeps_first_touches_in_order_once_each() {
        let recorder = Recorder::new();
        recorder.touch(8192, 8192, 4096);
        recorder.touch(0, 4096, 4096);
        recorder.touch(8192, 4096, 4096);
        assert_eq!(recorder.pages(), [8192, 12288, 0]);
    }
}
