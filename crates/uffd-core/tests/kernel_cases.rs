//! Cases of the kernel's own userfaultfd selftests (tools/testing/selftests/mm/uffd-unit-tests.c)
//! that need what a Node.js process cannot do: fork without exec, then look at the child's page
//! tables. Each test is named after its kernel case and memory type.
//!
//! A forked child of this multi-threaded test process runs only async-signal-safe code (raw
//! syscalls, no allocation, no panic) and leaves with `_exit`; its exit status is its verdict.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uffd_core::{
    Dispatch, Fault, FaultSink, Modes, Options, Protect, Region, Resolution, UffdEvent, Userfaultfd, Wake,
};

const PAGE: usize = 4096;
const LIMIT: Duration = Duration::from_secs(10);
/// Bit 57 of a /proc/PID/pagemap entry: the page (or its pte marker) is uffd-wp protected.
const PM_UFFD_WP: u64 = 1 << 57;

// ---------------------------------------------------------------------------------------------
// Forking

/// How a forked child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Code(i32),
    Signal(i32),
}

/// A child's exit code when it could not even read what it was to check.
const CHILD_FAILED: i32 = 99;

/// Forks; the child runs `child` and `_exit`s with what it returns; the parent waits for it.
/// `child` must be async-signal-safe: this process has other threads, whose locks the child
/// inherits held.
fn in_child(child: impl FnOnce() -> i32) -> Exit {
    // SAFETY: the child runs only `child`, which callers keep to raw, async-signal-safe syscalls,
    // then `_exit`s without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = child();
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int for waitpid to write.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(error.raw_os_error(), Some(libc::EINTR), "waitpid failed: {error}");
    }
    if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}

/// In a child: restores the default action of SIGBUS (the test harness handles it) and turns
/// off core dumps, so that a SIGBUS kills the child quietly.
fn die_quietly_on_sigbus() {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: signal and setrlimit are async-signal-safe; `no_core` is a live rlimit.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
    }
}

/// In a child: whether the page at `address` is uffd-wp protected in the child's own page
/// tables (1) or not (0), read from /proc/self/pagemap with raw syscalls.
fn child_wp_bit(address: usize) -> i32 {
    let path = b"/proc/self/pagemap\0";
    // SAFETY: `path` is NUL-terminated; open is async-signal-safe.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return CHILD_FAILED;
    }
    let mut entry = 0u64;
    let at = (address / PAGE * 8) as libc::off_t;
    // SAFETY: `entry` is 8 writable bytes; pread and close are async-signal-safe.
    let read = unsafe { libc::pread(fd, (&raw mut entry).cast(), 8, at) };
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    match read {
        8 => i32::from(entry & PM_UFFD_WP != 0),
        _ => CHILD_FAILED,
    }
}

/// The pagemap entry of `address` in this process.
fn pagemap_entry(address: usize) -> u64 {
    let pagemap = std::fs::File::open("/proc/self/pagemap").expect("open /proc/self/pagemap");
    let mut entry = [0u8; 8];
    pagemap.read_exact_at(&mut entry, (address / PAGE * 8) as u64).expect("read /proc/self/pagemap");
    u64::from_ne_bytes(entry)
}

fn wp_bit(address: usize) -> bool {
    pagemap_entry(address) & PM_UFFD_WP != 0
}

/// Held by every test that forks or opens an EVENT_FORK userfaultfd, so that each test's fork
/// events are its own. (Closing an EVENT_FORK userfaultfd while another thread forks once
/// deadlocked the process; close() now reads on until no fork is in progress: see
/// `faults::close_while_another_thread_forks_does_not_hang`.)
static FORKING: Mutex<()> = Mutex::new(());

fn forking() -> std::sync::MutexGuard<'static, ()> {
    FORKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// The userfaultfd the kernel made for a forked child, and the child's copies of the regions.
type Child = (Arc<Userfaultfd>, Vec<Arc<Region>>);

/// Records what the fault loop hands over; keeps the userfaultfds of forked children to close.
#[derive(Default)]
struct Recorder {
    forks: AtomicUsize,
    faults: AtomicUsize,
    children: Mutex<Vec<Child>>,
}

impl FaultSink for Recorder {
    fn deliver(&self, batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>> {
        for item in batch {
            match item {
                Dispatch::Event(UffdEvent::Fork { child }) => {
                    if let Some(child) = child {
                        self.children.lock().unwrap().push(Userfaultfd::of_child(child).expect("a child userfaultfd"));
                    }
                    self.forks.fetch_add(1, Ordering::SeqCst);
                }
                Dispatch::Fault(_) => {
                    self.faults.fetch_add(1, Ordering::SeqCst);
                }
                Dispatch::Event(_) | Dispatch::Notice(_) => {}
            }
        }
        Ok(())
    }
}

impl Recorder {
    fn install(uffd: &Userfaultfd) -> Arc<Recorder> {
        let recorder = Arc::new(Recorder::default());
        uffd.set_handler(recorder.clone(), 0).expect("install the handler");
        recorder
    }

    /// Waits until at least `count` fork events arrived (other tests of this binary fork too).
    fn wait_for_forks(&self, count: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.forks.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "only {} fork events", self.forks.load(Ordering::SeqCst));
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes the userfaultfds the kernel made for forked children, and their regions.
    fn close_children(&self) {
        for (child, regions) in self.children.lock().unwrap().drain(..) {
            child.close();
            for region in regions {
                region.close();
            }
        }
    }
}

struct ChannelSink(Mutex<Sender<Vec<Dispatch>>>);

impl FaultSink for ChannelSink {
    fn deliver(&self, batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>> {
        self.0.lock().unwrap().send(batch).map_err(|e| e.0)
    }
}

fn next_fault(rx: &Receiver<Vec<Dispatch>>) -> Fault {
    loop {
        for item in rx.recv_timeout(LIMIT).expect("a fault within the time limit") {
            if let Dispatch::Fault(fault) = item {
                return fault;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wp-fork, wp-fork-with-event

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    Anon,
    Shmem,
    Hugetlb,
}

/// A region of the kind, or `None` (and a note) when hugetlb pages are not there to be had.
fn region_of(memory: Memory, name: &str) -> Option<Arc<Region>> {
    match memory {
        Memory::Anon => Some(Region::anonymous(8 * PAGE).unwrap()),
        Memory::Shmem => Some(Region::shmem(8 * PAGE, name).unwrap()),
        Memory::Hugetlb => match Region::hugetlb(2 << 20, 2 << 20, name) {
            Ok(region) => Some(region),
            Err(err) => {
                eprintln!("{name}: skipped, no huge page to be had: {err}");
                None
            }
        },
    }
}

/// The kernel's `uffd_wp_fork_test_common`: a populated, write-protected page keeps its uffd-wp
/// bit in a forked child exactly when EVENT_FORK gives the child a userfaultfd of its own; the
/// same for the pte marker left when the page is zapped; unprotecting clears the bit.
fn wp_fork(memory: Memory, with_event: bool) {
    let _turn = forking();
    let name = format!("wp-fork-{memory:?}-{with_event}");
    let Some(region) = region_of(memory, &name) else { return };
    let features = if with_event { vec!["EVENT_FORK".to_string()] } else { Vec::new() };
    let uffd = Userfaultfd::open(Options { features, ..Options::default() }).expect("open the userfaultfd");
    let recorder = Recorder::install(&uffd);
    uffd.register(&region, Modes { wp: true, ..Modes::default() }, 0, None).unwrap();
    let page = region.page_size();
    let address = region.address();

    // Touch the page (a wp-only registration reports no missing fault), then protect it.
    // SAFETY: the first byte of the live mapping.
    unsafe { region.as_ptr().write_volatile(1) };
    uffd.write_protect(&region, 0, page, true, Wake(true)).unwrap();
    assert!(wp_bit(address), "the parent's present page is protected");
    let expected = i32::from(with_event);
    assert_eq!(in_child(|| child_wp_bit(address)), Exit::Code(expected), "the child's present pte");

    // Zap the page table entry so that only a pte marker says the page is protected: shared
    // memory keeps its page in the page cache; private memory is paged out if it can be.
    let advice = if memory == Memory::Anon { libc::MADV_PAGEOUT } else { libc::MADV_DONTNEED };
    // SAFETY: the first page of the live mapping; dropping or paging out a page keeps the mapping.
    let zapped = unsafe { libc::madvise(region.as_ptr().cast(), page, advice) };
    // Paging out may fail (no swap); the kernel's test ignores that too.
    assert!(zapped == 0 || advice == libc::MADV_PAGEOUT, "madvise: {}", std::io::Error::last_os_error());
    assert!(wp_bit(address), "the parent's protection outlives the zap");
    assert_eq!(in_child(|| child_wp_bit(address)), Exit::Code(expected), "the child's zapped pte");

    uffd.write_protect(&region, 0, page, false, Wake(true)).unwrap();
    assert!(!wp_bit(address), "unprotected");
    // SAFETY: as above; the page is no longer protected, so the write does not fault to us.
    unsafe { region.as_ptr().write_volatile(2) };
    assert!(!wp_bit(address), "still unprotected after a write");
    // SAFETY: as above.
    assert_eq!(unsafe { region.as_ptr().read_volatile() }, 2);

    if with_event {
        recorder.wait_for_forks(2);
        assert!(!recorder.children.lock().unwrap().is_empty(), "the children's userfaultfds were adopted");
    }
    assert_eq!(recorder.faults.load(Ordering::SeqCst), 0, "no fault reached the handler");
    uffd.unregister(&region, 0, None).unwrap();
    uffd.close();
    recorder.close_children();
    region.close();
}

#[test]
fn wp_fork_anon() {
    wp_fork(Memory::Anon, false);
}

#[test]
fn wp_fork_shmem() {
    wp_fork(Memory::Shmem, false);
}

#[test]
fn wp_fork_hugetlb() {
    wp_fork(Memory::Hugetlb, false);
}

#[test]
fn wp_fork_with_event_anon() {
    wp_fork(Memory::Anon, true);
}

#[test]
fn wp_fork_with_event_shmem() {
    wp_fork(Memory::Shmem, true);
}

#[test]
fn wp_fork_with_event_hugetlb() {
    wp_fork(Memory::Hugetlb, true);
}

// ---------------------------------------------------------------------------------------------
// sigbus-wp

/// The kernel's `sigbus-wp`: with the SIGBUS feature, a fault in a range registered for missing
/// and wp faults raises SIGBUS instead of reaching the handler, for a missing page and for a write
/// to a protected page alike (handle_userfault returns VM_FAULT_SIGBUS before it queues any
/// message). EVENT_FORK carries the registration, the feature and the protection into the child
/// that takes the faults. Reads of a protected page and writes once it is unprotected go through.
fn sigbus_wp(memory: Memory) {
    let _turn = forking();
    let name = format!("sigbus-wp-{memory:?}");
    let Some(region) = region_of(memory, &name) else { return };
    let page = region.page_size();
    let features = vec!["SIGBUS".to_string(), "EVENT_FORK".to_string()];
    let uffd = Userfaultfd::open(Options { features, ..Options::default() }).expect("open the userfaultfd");
    let recorder = Recorder::install(&uffd);
    uffd.register(&region, Modes { missing: true, wp: true, ..Modes::default() }, 0, None).unwrap();
    // Page 0 stays missing; page 1 arrives protected (COPY_MODE_WP); page 2 unprotected.
    uffd.copy(&region, page, &vec![7; page], Wake(true), Protect(true)).unwrap();
    uffd.copy(&region, 2 * page, &vec![9; page], Wake(true), Protect(false)).unwrap();
    let at = |index: usize| region.address() + index * page;
    let (missing, protected, open) = (at(0), at(1), at(2));

    let read = |address: usize, expected: u8| {
        move || {
            die_quietly_on_sigbus();
            // SAFETY: a page of the mapping the child inherited; a fault there raises SIGBUS.
            let byte = unsafe { (address as *const u8).read_volatile() };
            i32::from(byte != expected)
        }
    };
    let write = |address: usize| {
        move || {
            die_quietly_on_sigbus();
            // SAFETY: as above.
            unsafe { (address as *mut u8).write_volatile(0x55) };
            0
        }
    };
    assert_eq!(in_child(read(missing, 0)), Exit::Signal(libc::SIGBUS), "a missing page");
    assert_eq!(in_child(write(missing)), Exit::Signal(libc::SIGBUS), "a write to a missing page");
    assert_eq!(in_child(read(protected, 7)), Exit::Code(0), "a read of a protected page");
    assert_eq!(in_child(write(protected)), Exit::Signal(libc::SIGBUS), "a write to a protected page");
    assert_eq!(in_child(write(open)), Exit::Code(0), "a write to an unprotected page");
    uffd.write_protect(&region, page, page, false, Wake(true)).unwrap();
    assert_eq!(in_child(write(protected)), Exit::Code(0), "a write once unprotected");

    recorder.wait_for_forks(6);
    let child_faults: u64 = recorder
        .children
        .lock()
        .unwrap()
        .iter()
        .map(|(child, _)| {
            let stats = child.stats();
            stats.faults_missing + stats.faults_wp + stats.faults_minor
        })
        .sum();
    let stats = uffd.stats();
    assert_eq!(stats.faults_missing + stats.faults_wp + stats.faults_minor, 0, "no fault message in the parent");
    assert_eq!(child_faults, 0, "no fault message from a child");
    assert_eq!(recorder.faults.load(Ordering::SeqCst), 0);
    uffd.close();
    recorder.close_children();
    region.close();
}

#[test]
fn sigbus_wp_anon() {
    sigbus_wp(Memory::Anon);
}

#[test]
fn sigbus_wp_shmem() {
    sigbus_wp(Memory::Shmem);
}

// ---------------------------------------------------------------------------------------------
// move-pmd, move-pmd-split

const PMD: usize = 2 << 20;

/// A 2 MiB-aligned offset of an anonymous region big enough to hold one 2 MiB-aligned chunk.
fn aligned_chunk(region: &Region) -> usize {
    region.address().next_multiple_of(PMD) - region.address()
}

/// Whether the 2 MiB at `address` are one transparent huge page, from /proc/self/smaps.
fn is_thp(address: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
                    inside = (start..end).contains(&address);
                    continue;
                }
            }
        }
        if inside {
            if let Some(kib) = line.strip_prefix("AnonHugePages:") {
                return kib.trim().trim_end_matches("kB").trim().parse::<usize>().is_ok_and(|kib| kib >= PMD / 1024);
            }
        }
    }
    false
}

/// The kernel's `move-pmd` (`split`: `move-pmd-split`): a missing fault at the start of a
/// 2 MiB-aligned chunk is resolved by UFFDIO_MOVE of a whole 2 MiB-aligned chunk of a populated
/// anonymous region (a THP where the kernel could make one); the destination reads the source's
/// bytes and the source is left empty. With `split`, the destination refuses huge pages
/// (MADV_NOHUGEPAGE), so the kernel splits the source's huge page as it moves it.
fn move_pmd(split: bool) {
    let uffd = Userfaultfd::open(Options::default()).expect("open the userfaultfd");
    let from = Region::anonymous(2 * PMD).unwrap();
    let to = Region::anonymous(2 * PMD).unwrap();
    let (from_offset, to_offset) = (aligned_chunk(&from), aligned_chunk(&to));
    let (src, dst) = (from.address() + from_offset, to.address() + to_offset);
    let to_advice = if split { libc::MADV_NOHUGEPAGE } else { libc::MADV_HUGEPAGE };
    for (address, advice) in
        [(src, libc::MADV_HUGEPAGE), (dst, to_advice), (src, libc::MADV_DONTFORK), (dst, libc::MADV_DONTFORK)]
    {
        // SAFETY: a 2 MiB chunk inside a live mapping; these advices change no contents. Without
        // DONTFORK, a fork by another test would share the source's pages and make MOVE fail (EBUSY).
        let result = unsafe { libc::madvise(address as *mut libc::c_void, PMD, advice) };
        assert_eq!(result, 0, "madvise: {}", std::io::Error::last_os_error());
    }
    let pattern = |page: usize| (page as u8) ^ 0x5A;
    for page in 0..PMD / PAGE {
        // SAFETY: inside the source chunk, which is inside the live mapping.
        unsafe { ((src + page * PAGE) as *mut u8).write_volatile(pattern(page)) };
    }
    let was_thp = is_thp(src);
    uffd.register(&to, Modes { missing: true, ..Modes::default() }, to_offset, Some(PMD)).unwrap();
    let (tx, rx) = channel();
    uffd.set_handler(Arc::new(ChannelSink(Mutex::new(tx))), 0).unwrap();

    let (done_tx, done_rx) = channel();
    let reader = std::thread::spawn(move || {
        // SAFETY: every page of the destination chunk is inside the live mapping, which the
        // test keeps open until this thread is joined.
        let bytes: Vec<u8> =
            (0..PMD / PAGE).map(|page| unsafe { ((dst + page * PAGE) as *const u8).read_volatile() }).collect();
        let _ = done_tx.send(bytes);
    });
    let fault = next_fault(&rx);
    assert_eq!(fault.offset, to_offset, "the first fault is at the start of the chunk");
    let moved = uffd
        .resolve(
            fault.id,
            Resolution::Move { from: &from, from_offset, len: Some(PMD), wake: true, allow_holes: false },
        )
        .unwrap();
    assert_eq!(moved, PMD, "the whole chunk moved at once");
    let bytes = done_rx.recv_timeout(LIMIT).expect("the reader finishes with no further fault");
    reader.join().unwrap();
    assert!(
        bytes.iter().enumerate().all(|(page, byte)| *byte == pattern(page)),
        "the destination has the source's bytes"
    );
    for page in 0..PMD / PAGE {
        // SAFETY: inside the source chunk; it is not registered, so an empty page reads zero.
        assert_eq!(unsafe { ((src + page * PAGE) as *const u8).read_volatile() }, 0, "source page {page} is empty");
    }
    let stats = uffd.stats();
    assert_eq!((stats.faults_missing, stats.moves), (1, 1), "one fault, one move");
    eprintln!("move-pmd (split: {split}): the source was {}a THP", if was_thp { "" } else { "not " });
    uffd.close();
    from.close();
    to.close();
}

#[test]
fn move_pmd_anon() {
    move_pmd(false);
}

#[test]
fn move_pmd_split_anon() {
    move_pmd(true);
}
