//! Memory that userfaultfd can serve: private anonymous mappings, memfd shmem, and memfd hugetlbfs.
//! A `Region` owns its mapping and unmaps it when the last `Arc` goes (a JavaScript ArrayBuffer over
//! it holds one); `close()` ends its use: it leaves the registry, every userfaultfd drops its
//! registration (waking any waiter), and every further operation on it fails. Views that users
//! opened with `attach` (in other threads) keep it in use: the owner's `close()` then takes effect
//! when the last of them closes, so that no view reads zeros because its owner closed first.

use crate::error::{Error, Result};
use crate::mapped::Mapped;
use crate::registry::Registry;
use nix::errno::Errno;
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What hears that a region closes (every userfaultfd then drops its registrations there).
type CloseObserver = fn(&Arc<Region>);
static CLOSE_OBSERVERS: Mutex<Vec<CloseObserver>> = Mutex::new(Vec::new());

/// Makes `observer` hear of every region's close, from now on. Call it once per observer.
pub fn on_close(observer: CloseObserver) {
    CLOSE_OBSERVERS.lock().unwrap_or_else(|p| p.into_inner()).push(observer);
}

/// A registered range of another process's memory, as that process describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteRange {
    pub address: usize,
    pub length: usize,
    pub page_size: usize,
}

/// The kind of memory behind a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    Anonymous,
    Shmem,
    Hugetlb,
    /// Memory of another process, served through a userfaultfd it handed over: no mapping here.
    Remote,
}

impl MemoryKind {
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Anonymous => "anonymous",
            MemoryKind::Shmem => "shmem",
            MemoryKind::Hugetlb => "hugetlb",
            MemoryKind::Remote => "remote",
        }
    }
}

pub struct Region {
    id: u64,
    kind: MemoryKind,
    base: NonNull<u8>,
    size: usize,
    page_size: usize,
    /// The memfd, until the region is closed (the mapping does not need it).
    file: Mutex<Option<Arc<OwnedFd>>>,
    alias_of: Option<u64>,
    /// A MAP_PRIVATE mapping of the file: writes and COPYs make private pages, the file is untouched.
    private: bool,
    closed: AtomicBool,
    views: Mutex<Views>,
    /// The pages this package mapped here (faults served natively, prefetches): what a prefetch
    /// skips. Made at the first page noted.
    mapped: OnceLock<Mapped>,
}

/// The views users opened on a region, and whether its owner has closed it meanwhile.
#[derive(Default)]
struct Views {
    open: usize,
    owner_closed: bool,
}

// SAFETY: the mapping is process-wide memory; the struct only hands out its address, and its
// mutable state is atomic.
unsafe impl Send for Region {}
// SAFETY: as above; nothing is borrowed through `&Region` but the address.
unsafe impl Sync for Region {}

static REGIONS: Registry<Region> = Registry::new();

/// The system's base page size.
pub fn base_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// The most bytes one mapping can span: a process's address space (47 bits on x86-64, 48 on
/// arm64, with the kernel's default address space). A size past it is out of range, not a
/// machine short of memory.
pub const MAX_MAPPING_BYTES: usize = if cfg!(target_arch = "x86_64") {
    1 << 47
} else if cfg!(target_arch = "aarch64") {
    1 << 48
} else {
    isize::MAX as usize
};

fn round_up(size: usize, page: usize, op: &'static str) -> Result<NonZeroUsize> {
    if size == 0 {
        return Err(Error::out_of_range(
            op,
            format!("size 0 is not positive: a region is at least one page ({page} bytes)"),
        ));
    }
    size.checked_next_multiple_of(page)
        .and_then(NonZeroUsize::new)
        .filter(|s| s.get() <= MAX_MAPPING_BYTES)
        .ok_or_else(|| {
            Error::out_of_range(
                op,
                format!(
                    "size {size} is more than a process's address space holds: it must be at most {MAX_MAPPING_BYTES} bytes"
                ),
            )
        })
}

impl Region {
    /// A private anonymous mapping of `size` bytes (rounded up to pages); nothing is resident.
    pub fn anonymous(size: usize) -> Result<Arc<Region>> {
        let page = base_page_size();
        let len = round_up(size, page, "mmap")?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .map_err(|errno| Error::sys("mmap", errno, format!("anonymous region of {len} bytes")))?;
        Ok(Self::publish(MemoryKind::Anonymous, base.cast(), len.get(), page, None, None, true))
    }

    /// A memfd of `size` bytes mapped shared; `alias()` maps the same file again.
    pub fn shmem(size: usize, name: &str) -> Result<Arc<Region>> {
        Self::shmem_mapped(size, name, false)
    }

    /// A memfd of `size` bytes mapped private (the kernel's "shmem private" memory type): pages
    /// written or COPYed here are this mapping's own; `alias()` maps the file itself, shared.
    pub fn shmem_private(size: usize, name: &str) -> Result<Arc<Region>> {
        Self::shmem_mapped(size, name, true)
    }

    fn shmem_mapped(size: usize, name: &str, private: bool) -> Result<Arc<Region>> {
        let page = base_page_size();
        let len = round_up(size, page, "memfd_create")?;
        let file = memfd(name, nix::sys::memfd::MemFdCreateFlag::empty(), len.get())?;
        let base = map_file(&file, len, MemoryKind::Shmem, private)?;
        Ok(Self::publish(MemoryKind::Shmem, base, len.get(), page, Some(Arc::new(file)), None, private))
    }

    /// A hugetlbfs memfd of `size` bytes (rounded up to `page_size`, 2 MiB or 1 GiB), mapped shared.
    pub fn hugetlb(size: usize, page_size: usize, name: &str) -> Result<Arc<Region>> {
        Self::hugetlb_mapped(size, page_size, name, false)
    }

    /// The same, mapped private (the kernel's "hugetlb private" memory type).
    pub fn hugetlb_private(size: usize, page_size: usize, name: &str) -> Result<Arc<Region>> {
        Self::hugetlb_mapped(size, page_size, name, true)
    }

    fn hugetlb_mapped(size: usize, page_size: usize, name: &str, private: bool) -> Result<Arc<Region>> {
        let size_flag = match page_size {
            0x20_0000 => libc::MFD_HUGE_2MB,
            0x4000_0000 => libc::MFD_HUGE_1GB,
            _ => {
                return Err(Error::invalid("memfd_create", format!("huge page size {page_size} is not 2 MiB or 1 GiB")))
            }
        };
        let len = round_up(size, page_size, "memfd_create")?;
        let flags = nix::sys::memfd::MemFdCreateFlag::from_bits_retain(libc::MFD_HUGETLB | size_flag);
        let file = memfd(name, flags, len.get())?;
        let base = map_file(&file, len, MemoryKind::Hugetlb, private).map_err(|err| match err {
            Error::Sys { errno: Errno::ENOMEM, .. } => err.with_advice(format!(
                "{} huge pages of {} KiB are needed and {} are free: reserve them as root with \
                 `sysctl -w vm.nr_hugepages=N`",
                len.get() / page_size,
                page_size / 1024,
                free_huge_pages(page_size).map_or("an unknown number".into(), |n| n.to_string())
            )),
            other => other,
        })?;
        Ok(Self::publish(MemoryKind::Hugetlb, base, len.get(), page_size, Some(Arc::new(file)), None, private))
    }

    /// A second mapping of the same file (shmem or hugetlb), not registered with anything: writes
    /// through it fill the page cache that minor faults of this region then map.
    pub fn alias(&self) -> Result<Arc<Region>> {
        self.check_open("mmap")?;
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let file = file.ok_or_else(|| {
            Error::invalid("mmap", "an anonymous region has no file to alias; use Region.shmem or Region.hugetlb")
        })?;
        let len = NonZeroUsize::new(self.size).expect("regions are never empty");
        let base = map_file(&*file, len, self.kind, false)?;
        Ok(Self::publish(self.kind, base, self.size, self.page_size, Some(file), Some(self.id), false))
    }

    fn publish(
        kind: MemoryKind,
        base: NonNull<u8>,
        size: usize,
        page_size: usize,
        file: Option<Arc<OwnedFd>>,
        alias_of: Option<u64>,
        private: bool,
    ) -> Arc<Region> {
        let id = REGIONS.next_id();
        let region = Arc::new(Region {
            id,
            kind,
            base,
            size,
            page_size,
            file: Mutex::new(file),
            alias_of,
            private,
            closed: AtomicBool::new(false),
            views: Mutex::new(Views::default()),
            mapped: OnceLock::new(),
        });
        REGIONS.insert(id, &region);
        region
    }

    /// A range of another process's memory, described by that process: `address` is in its
    /// address space, so nothing here maps or reads it; only resolving ioctls reach it.
    pub fn remote(address: usize, size: usize, page_size: usize) -> Result<Arc<Region>> {
        const OP: &str = "adopt";
        if !page_size.is_power_of_two() || page_size < base_page_size() {
            return Err(Error::invalid(
                OP,
                format!("page size {page_size} is not a power of two of at least {}", base_page_size()),
            ));
        }
        if size == 0 || size % page_size != 0 || address % page_size != 0 {
            return Err(Error::invalid(
                OP,
                format!("range {address:#x}+{size} is empty or not aligned to its page size {page_size}"),
            ));
        }
        if address.checked_add(size).is_none_or(|end| end > isize::MAX as usize) {
            return Err(Error::invalid(OP, format!("range {address:#x}+{size} overflows the address space")));
        }
        let base =
            NonNull::new(address as *mut u8).ok_or_else(|| Error::invalid(OP, "a range cannot start at address 0"))?;
        Ok(Self::publish(MemoryKind::Remote, base, size, page_size, None, None, false))
    }

    /// The live, open region with this id (what a fault's handler names it by).
    pub fn lookup(id: u64) -> Option<Arc<Region>> {
        REGIONS.get(id).filter(|r| !r.is_closed())
    }

    /// Opens a user's view of the live region with this id (what a worker attaches to by token):
    /// the region stays in use until the view is let go with [`Region::close_view`], even if its
    /// owner closes it first. Refused once the owner has closed it.
    pub fn attach(id: u64) -> Result<Arc<Region>> {
        let refused = |why: &str| Error::invalid("attach", format!("no open region has id {id}: {why}"));
        let region = Self::lookup(id).ok_or_else(|| refused("it was closed, or the token is not a region's"))?;
        let mut views = region.views();
        if views.owner_closed {
            return Err(refused("its owner closed it"));
        }
        views.open += 1;
        drop(views);
        Ok(region)
    }

    /// Lets go of a view opened by [`Region::attach`]; the last one to go ends a region whose
    /// owner has closed it.
    pub fn close_view(self: &Arc<Self>) {
        let mut views = self.views();
        views.open = views.open.saturating_sub(1);
        let last = views.open == 0 && views.owner_closed;
        drop(views);
        if last {
            self.end();
        }
    }

    /// How many views users have open on the region.
    pub fn open_views(&self) -> usize {
        self.views().open
    }

    fn views(&self) -> std::sync::MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn page_size(&self) -> usize {
        self.page_size
    }
    pub fn address(&self) -> usize {
        self.base.as_ptr() as usize
    }
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
    pub fn alias_of(&self) -> Option<u64> {
        self.alias_of
    }
    /// Whether the mapping is MAP_PRIVATE (anonymous memory always is).
    pub fn is_private(&self) -> bool {
        self.private
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses memory of another process, which this process cannot touch.
    pub fn check_local(&self, op: &'static str) -> Result<()> {
        if self.kind == MemoryKind::Remote {
            Err(Error::invalid(op, "this region is another process's memory: it has no mapping here"))
        } else {
            Ok(())
        }
    }

    pub fn check_open(&self, op: &'static str) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed { op, what: "region" })
        } else {
            Ok(())
        }
    }

    /// Checks that `[offset, offset + len)` is a non-empty, page-aligned range inside the open
    /// region and returns its start address.
    pub fn check_range(&self, op: &'static str, offset: usize, len: usize) -> Result<usize> {
        self.check_open(op)?;
        let page = self.page_size;
        let size = self.size;
        if offset % page != 0 {
            return Err(Error::invalid(op, format!("offset {offset} is not a multiple of the page size {page}")));
        }
        if offset >= size {
            return Err(Error::out_of_range(op, past_the_end(offset, size)));
        }
        if len == 0 {
            return Err(Error::out_of_range(
                op,
                format!("length 0 is not positive: a range is at least one page ({page} bytes)"),
            ));
        }
        if len % page != 0 {
            return Err(Error::invalid(op, format!("length {len} is not a multiple of the page size {page}")));
        }
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(self.address() + offset),
            _ => Err(Error::out_of_range(op, runs_past(offset, len, size))),
        }
    }

    /// Checks that `[offset, offset + len)`, at any alignment, lies inside the open region's own
    /// mapping and is at most `limit` bytes (the most one buffer of the caller holds); returns the
    /// address of its first byte.
    pub fn check_view(&self, op: &'static str, offset: usize, len: usize, limit: usize) -> Result<NonNull<u8>> {
        self.check_open(op)?;
        self.check_local(op)?;
        if offset > self.size {
            return Err(Error::out_of_range(op, past_the_end(offset, self.size)));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => {}
            _ => return Err(Error::out_of_range(op, runs_past(offset, len, self.size))),
        }
        if len > limit {
            return Err(Error::TooLarge { op, len, limit });
        }
        // SAFETY: `offset <= size`, so the pointer stays inside the mapping or one past its end.
        Ok(unsafe { self.base.add(offset) })
    }

    /// The offset in this region of an address, if the address lies in it.
    pub fn offset_of(&self, address: usize) -> Option<usize> {
        address.checked_sub(self.address()).filter(|off| *off < self.size)
    }

    /// The owner ends the region's use: it leaves the registry and every userfaultfd releases its
    /// range, now or, while users have views open, when the last of them closes. The mapping
    /// itself goes when the last holder (an ArrayBuffer, a view) lets go.
    pub fn close(self: &Arc<Self>) {
        let mut views = self.views();
        views.owner_closed = true;
        let open = views.open;
        drop(views);
        if open == 0 {
            self.end();
        }
    }

    fn end(self: &Arc<Self>) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        REGIONS.remove(self.id);
        let observers = CLOSE_OBSERVERS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for observer in observers {
            observer(self);
        }
        self.release_memory();
    }

    /// Drops the pages of a range (MADV_DONTNEED; MADV_REMOVE for shmem and hugetlbfs, which also
    /// frees the file's pages): touching them again faults, a missing fault where registered. With
    /// EVENT_REMOVE the caller waits until the fault loop has read the REMOVE event.
    pub fn discard(&self, offset: usize, len: usize) -> Result<()> {
        let start = self.check_range("madvise", offset, len)?;
        self.check_local("madvise")?;
        // MADV_REMOVE needs a shared mapping; a private one drops its own pages.
        let advice = if self.private { libc::MADV_DONTNEED } else { libc::MADV_REMOVE };
        // SAFETY: the range was checked to lie inside this region's live mapping; dropping pages
        // never invalidates the mapping.
        let result = unsafe { libc::madvise(start as *mut libc::c_void, len, advice) };
        if result == 0 {
            self.note_gone(offset, len);
            Ok(())
        } else {
            Err(Error::sys("madvise", Errno::last(), format!("discarding {len} bytes at offset {offset}")))
        }
    }

    /// Notes pages `[offset, offset + len)` as mapped by this package.
    pub(crate) fn note_mapped(&self, offset: usize, len: usize) {
        if len > 0 {
            self.mapped.get_or_init(|| Mapped::new(self.size, self.page_size)).set(offset, len);
        }
    }

    /// Notes pages `[offset, offset + len)` as gone: discarded, removed or unmapped.
    pub(crate) fn note_gone(&self, offset: usize, len: usize) {
        if let Some(mapped) = self.mapped.get() {
            mapped.clear(offset, len);
        }
    }

    /// From `offset` on (up to `end`), where the first page noted as mapped (`mapped`), or not
    /// noted, is; `end` if none is. A hint: a page the memory's process dropped without an event
    /// stays noted.
    pub(crate) fn next_mapped(&self, offset: usize, end: usize, mapped: bool) -> usize {
        match self.mapped.get() {
            Some(pages) => pages.next(offset, end, mapped),
            None if mapped => end,
            None => offset,
        }
    }

    /// Gives the region's memory back now; the address range stays reserved (and reads as zeros)
    /// until the last view of it lets go, so a stale view can never reach another mapping.
    fn release_memory(&self) {
        if self.kind == MemoryKind::Remote {
            return;
        }
        let file = self.file.lock().unwrap_or_else(|p| p.into_inner()).take();
        let advice = match file {
            _ if self.private => libc::MADV_DONTNEED,
            None => libc::MADV_DONTNEED,
            // Punch the file's pages out only if no open alias still maps them.
            Some(file) if Arc::strong_count(&file) == 1 => libc::MADV_REMOVE,
            Some(_) => libc::MADV_DONTNEED,
        };
        // SAFETY: the range is this region's own live mapping; after close no one may rely on its
        // contents, and dropping pages never invalidates the mapping itself.
        let result = unsafe { libc::madvise(self.base.as_ptr().cast(), self.size, advice) };
        if result != 0 {
            eprintln!("userfaultfd: releasing the memory of region {} failed: {}", self.id, Errno::last());
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // A region dropped without close() leaves the registry here (its entry only names it).
        REGIONS.remove(self.id);
        if self.kind == MemoryKind::Remote {
            return;
        }
        // SAFETY: the mapping was made by this region, and the last Arc is gone, so nothing in
        // Rust points into it; JavaScript views over it hold an Arc and are gone too.
        if let Err(errno) = unsafe { munmap(self.base.cast(), self.size) } {
            // Nothing useful can be done with a failed munmap in a destructor but to say so.
            eprintln!("userfaultfd: munmap of region {} failed: {errno}", self.id);
        }
    }
}

fn memfd(name: &str, flags: nix::sys::memfd::MemFdCreateFlag, len: usize) -> Result<OwnedFd> {
    let name = CString::new(name.replace('\0', "")).expect("NULs were removed");
    let flags = flags | nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC;
    let file = nix::sys::memfd::memfd_create(&name, flags)
        .map_err(|errno| Error::sys("memfd_create", errno, format!("memfd {name:?}")))?;
    nix::unistd::ftruncate(&file, len as libc::off_t)
        .map_err(|errno| Error::sys("ftruncate", errno, format!("memfd of {len} bytes")))?;
    Ok(file)
}

fn map_file(file: &impl AsFd, len: NonZeroUsize, kind: MemoryKind, private: bool) -> Result<NonNull<u8>> {
    let sharing = if private { MapFlags::MAP_PRIVATE } else { MapFlags::MAP_SHARED };
    // SAFETY: a fresh mapping of our own memfd at an address the kernel picks aliases no Rust object.
    let base = unsafe { mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, sharing, file, 0) }
        .map_err(|errno| Error::sys("mmap", errno, format!("{} region of {len} bytes", kind.name())))?;
    Ok(base.cast())
}

/// Free huge pages of a size, from sysfs.
pub fn free_huge_pages(page_size: usize) -> Option<u64> {
    let path = format!("/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages", page_size / 1024);
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What an offset at or past a region's end is told: the argument and the bound.
fn past_the_end(offset: usize, size: usize) -> String {
    format!("offset {offset} is past the end of the region ({size} bytes)")
}

/// What a length that runs past a region's end is told: how much is left from its offset.
fn runs_past(offset: usize, len: usize, size: usize) -> String {
    format!(
        "length {len} from offset {offset} runs past the end of the region ({size} bytes): at most {} bytes are left there",
        size - offset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_regions_round_up_and_check_ranges() {
        let region = Region::anonymous(10_000).unwrap();
        let page = base_page_size();
        assert_eq!(region.size(), 10_000usize.next_multiple_of(page));
        assert!(region.check_range("t", 0, page).is_ok());
        assert_eq!(region.check_range("t", 1, page).unwrap_err().code(), "EINVAL");
        assert_eq!(region.check_range("t", 0, 0).unwrap_err().code(), "ERR_OUT_OF_RANGE");
        assert_eq!(
            region.check_range("t", 0, 100).unwrap_err().code(),
            "EINVAL",
            "a length not a multiple of the page"
        );
        assert!(region.check_range("t", page, usize::MAX - 10).is_err());
        assert!(region.check_range("t", region.size(), page).is_err());
        assert_eq!(Region::anonymous(0).err().map(|e| e.code()), Some("ERR_OUT_OF_RANGE"));
        let huge = Region::anonymous(MAX_MAPPING_BYTES + 1).err().expect("past the address space");
        assert_eq!(huge.code(), "ERR_OUT_OF_RANGE");
        assert!(huge.to_string().contains(&format!("at most {MAX_MAPPING_BYTES} bytes")), "{huge}");
    }

    #[test]
    fn a_region_dropped_without_close_leaves_the_registry() {
        let region = Region::anonymous(4096).unwrap();
        let id = region.id();
        drop(region);
        assert!(REGIONS.get(id).is_none());
        assert!(!REGIONS.contains(id));
    }

    #[test]
    fn closing_leaves_the_registry_and_refuses_further_use() {
        let region = Region::anonymous(4096).unwrap();
        assert!(Region::lookup(region.id()).is_some());
        region.close();
        assert!(Region::lookup(region.id()).is_none());
        assert_eq!(region.check_range("t", 0, 4096).unwrap_err().code(), "EBADF");
    }

    #[test]
    fn the_owners_close_waits_for_the_views_users_opened() {
        let region = Region::anonymous(4096).unwrap();
        let first = Region::attach(region.id()).unwrap();
        let second = Region::attach(region.id()).unwrap();
        assert_eq!(region.open_views(), 2);
        region.close();
        assert!(!region.is_closed(), "two views are open");
        assert_eq!(
            Region::attach(region.id()).err().map(|e| e.code()),
            Some("EINVAL"),
            "no new view once the owner closed"
        );
        assert!(Region::lookup(region.id()).is_some(), "a fault can still name it");
        first.close_view();
        assert!(!region.is_closed(), "one view is open");
        second.close_view();
        assert!(region.is_closed());
        assert!(Region::lookup(region.id()).is_none());
    }

    #[test]
    fn views_lie_inside_the_region_at_any_alignment_and_within_the_limit() {
        let region = Region::anonymous(3 * 4096).unwrap();
        let size = region.size();
        assert_eq!(region.check_view("t", 5, 100, size).unwrap().as_ptr() as usize, region.address() + 5);
        assert!(region.check_view("t", size, 0, size).is_ok(), "an empty view at the end");
        assert_eq!(region.check_view("t", size, 1, size).unwrap_err().code(), "ERR_OUT_OF_RANGE");
        assert_eq!(region.check_view("t", 1, size, size).unwrap_err().code(), "ERR_OUT_OF_RANGE");
        assert_eq!(region.check_view("t", usize::MAX, 2, size).unwrap_err().code(), "ERR_OUT_OF_RANGE");
        let too_large = region.check_view("t", 0, size, 4096).unwrap_err();
        assert_eq!(too_large.code(), "ERANGE");
        assert!(too_large.to_string().ends_with("read the region in parts, a range at a time"), "{too_large}");
        region.close();
        assert_eq!(region.check_view("t", 0, 1, size).unwrap_err().code(), "EBADF");
    }

    #[test]
    fn a_hugetlb_region_without_huge_pages_says_how_many_it_needs_once() {
        let free = free_huge_pages(0x20_0000).unwrap_or(0) as usize;
        // With surplus huge pages the mapping may fit; without hugetlbfs the error is another.
        let Err(err) = Region::hugetlb((free + 1) * 0x20_0000, 0x20_0000, "test") else { return };
        if err.code() != "ENOMEM" {
            return;
        }
        let message = err.to_string();
        assert!(message.contains(&format!("{} huge pages of 2048 KiB are needed", free + 1)), "{message}");
        assert_eq!(message.matches("vm.nr_hugepages").count(), 1, "{message}");
    }

    #[test]
    fn a_shmem_alias_sees_the_same_bytes() {
        let region = Region::shmem(8192, "test").unwrap();
        let alias = region.alias().unwrap();
        // SAFETY: both mappings are live and 8192 bytes long.
        unsafe {
            alias.as_ptr().add(4096).write(42);
            assert_eq!(region.as_ptr().add(4096).read(), 42);
        }
        assert_eq!(alias.alias_of(), Some(region.id()));
        assert!(Region::anonymous(4096).unwrap().alias().is_err());
    }
}
