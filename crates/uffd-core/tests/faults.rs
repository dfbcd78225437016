//! Real faults against the real kernel: a thread touches registered memory, a handler thread
//! resolves it through the core, and the bytes the toucher read are checked.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uffd_core::{
    Dispatch, Fault, FaultKind, FaultSink, Finish, Modes, NoticeKind, Options, Protect, Region, Resolution,
    Userfaultfd, Wake,
};

const LIMIT: Duration = Duration::from_secs(10);

struct ChannelSink(Mutex<Sender<Vec<Dispatch>>>);

impl FaultSink for ChannelSink {
    fn deliver(&self, batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>> {
        self.0.lock().unwrap().send(batch).map_err(|e| e.0)
    }
}

fn handler(uffd: &Userfaultfd, thread_id: i32) -> Receiver<Vec<Dispatch>> {
    let (tx, rx) = channel();
    uffd.set_handler(Arc::new(ChannelSink(Mutex::new(tx))), thread_id).unwrap();
    rx
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

/// Reads one byte at `offset` on a new thread; the result arrives on the receiver.
fn touch(region: &Arc<Region>, offset: usize) -> Receiver<u8> {
    let (tx, rx) = channel();
    let region = region.clone();
    std::thread::spawn(move || {
        // SAFETY: offset is inside the live mapping, which the Arc keeps alive.
        let byte = unsafe { region.as_ptr().add(offset).read_volatile() };
        let _ = tx.send(byte);
    });
    rx
}

fn open() -> Arc<Userfaultfd> {
    Userfaultfd::open(Options::default()).expect("open userfaultfd")
}

const MISSING: Modes = Modes { missing: true, minor: false, wp: false };

/// A userfaultfd with an anonymous region of `pages` registered for missing faults, and its handler's batches.
fn served(pages: usize) -> (Arc<Userfaultfd>, Arc<Region>, Receiver<Vec<Dispatch>>) {
    let uffd = open();
    let region = Region::anonymous(pages * 4096).unwrap();
    uffd.register(&region, MISSING, 0, None).unwrap();
    let rx = handler(&uffd, 0);
    (uffd, region, rx)
}

#[test]
fn missing_copy_serves_the_bytes_the_thread_reads() {
    let (uffd, region, rx) = served(16);
    let read = touch(&region, 5 * 4096 + 17);
    let fault = next_fault(&rx);
    assert_eq!(fault.kind, FaultKind::Missing);
    assert_eq!(fault.offset, 5 * 4096);
    assert_eq!(fault.address, region.address() + 5 * 4096 + 17, "EXACT_ADDRESS gives the byte");
    assert!(!fault.write);
    assert_ne!(fault.thread_id, 0);
    let page = vec![0xAB; 4096];
    assert_eq!(uffd.resolve(fault.id, Resolution::Copy { bytes: &page, wake: true, protect: false }).unwrap(), 4096);
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0xAB);
    assert_eq!(uffd.finish(fault.id), Finish::Done);
    let stats = uffd.stats();
    assert_eq!((stats.faults_missing, stats.copies, stats.in_flight), (1, 1, 0));
    uffd.close();
}

#[test]
fn zeropage_maps_zeros_and_a_second_resolve_is_eexist() {
    let (uffd, region, rx) = served(4);
    let read = touch(&region, 4096);
    let fault = next_fault(&rx);
    uffd.resolve(fault.id, Resolution::Zero { len: None, wake: true }).unwrap();
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0);
    let again = uffd.zero(&region, 4096, 4096, Wake(true)).unwrap_err();
    assert_eq!(again.code(), "EEXIST");
    uffd.close();
}

#[test]
fn minor_continue_maps_what_the_alias_wrote() {
    let uffd = open();
    let region = Region::shmem(8 * 4096, "minor").unwrap();
    let alias = region.alias().unwrap();
    // SAFETY: the alias is live and 8 pages long.
    unsafe { alias.as_ptr().add(3 * 4096).write_bytes(0x5C, 4096) };
    uffd.register(&region, Modes { minor: true, ..Modes::default() }, 0, None).unwrap();
    let rx = handler(&uffd, 0);
    let read = touch(&region, 3 * 4096 + 1);
    let fault = next_fault(&rx);
    assert_eq!(fault.kind, FaultKind::Minor);
    uffd.resolve(fault.id, Resolution::Continue { len: None, wake: true, protect: false }).unwrap();
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0x5C);
    uffd.close();
}

#[test]
fn dontwake_leaves_the_thread_asleep_until_wake() {
    let (uffd, region, rx) = served(4);
    let read = touch(&region, 0);
    let fault = next_fault(&rx);
    uffd.resolve(fault.id, Resolution::Copy { bytes: &[7; 4096], wake: false, protect: false }).unwrap();
    assert_eq!(read.recv_timeout(Duration::from_millis(200)), Err(RecvTimeoutError::Timeout));
    uffd.resolve(fault.id, Resolution::Wake).unwrap();
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 7);
    uffd.close();
}

#[test]
fn an_unresolved_fault_gets_the_fallback_when_the_handler_finishes() {
    let (uffd, region, rx) = served(4);
    let read = touch(&region, 2 * 4096);
    let fault = next_fault(&rx);
    assert_eq!(uffd.finish(fault.id), Finish::FellBack);
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0);
    assert_eq!(uffd.stats().fallbacks, 1);
    uffd.close();
}

#[test]
fn a_fault_by_the_handler_thread_is_resolved_by_the_fallback_with_a_notice() {
    let uffd = open();
    let region = Region::anonymous(4 * 4096).unwrap();
    uffd.register(&region, MISSING, 0, None).unwrap();
    let rx = handler(&uffd, uffd_core::current_thread_id());
    // SAFETY: the page is inside the live mapping; the fallback resolves it without a handler.
    let byte = unsafe { region.as_ptr().read_volatile() };
    assert_eq!(byte, 0);
    let batch = rx.recv_timeout(LIMIT).unwrap();
    let Dispatch::Notice(notice) = &batch[0] else { panic!("expected a notice") };
    assert_eq!(notice.kind, NoticeKind::SelfFault);
    assert!(notice.text(&uffd_core::error::Core).contains("from a handler on another thread"), "{}", notice.message);
    assert_eq!(uffd.stats().self_faults, 1);
    uffd.close();
}

#[test]
fn a_fault_past_its_timeout_is_resolved_by_the_fallback() {
    let uffd = Userfaultfd::open(Options { timeout: Some(Duration::from_millis(50)), ..Options::default() }).unwrap();
    let region = Region::anonymous(4 * 4096).unwrap();
    uffd.register(&region, MISSING, 0, None).unwrap();
    let rx = handler(&uffd, 0);
    let read = touch(&region, 4096);
    let fault = next_fault(&rx);
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0);
    let batch = rx.recv_timeout(LIMIT).unwrap();
    assert!(batch.iter().any(|d| matches!(d, Dispatch::Notice(n) if n.kind == NoticeKind::Timeout)));
    // The late answer finds the fault settled and maps nothing.
    assert_eq!(uffd.resolve(fault.id, Resolution::Copy { bytes: &[1; 4096], wake: true, protect: false }).unwrap(), 0);
    uffd.close();
}

#[test]
fn close_wakes_every_waiting_thread() {
    let (uffd, region, rx) = served(8);
    let reads: Vec<_> = (0..8).map(|page| touch(&region, page * 4096)).collect();
    let _ = next_fault(&rx);
    uffd.close();
    for read in reads {
        assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0);
    }
    assert!(uffd.copy(&region, 0, &[0; 4096], Wake(true), Protect(false)).is_err());
}

#[test]
fn closing_a_region_releases_its_waiters() {
    let (uffd, region, rx) = served(4);
    let read = touch(&region, 0);
    let _ = next_fault(&rx);
    region.close();
    assert_eq!(read.recv_timeout(LIMIT).unwrap(), 0);
    assert_eq!(uffd.stats().in_flight, 0);
    uffd.close();
}

#[test]
fn bad_ranges_are_refused_before_any_ioctl() {
    let uffd = open();
    let region = Region::anonymous(4 * 4096).unwrap();
    let shm = Region::shmem(4096, "x").unwrap();
    assert_eq!(uffd.register(&region, Modes::default(), 0, None).unwrap_err().code(), "EINVAL");
    assert_eq!(
        uffd.register(&region, Modes { minor: true, ..Modes::default() }, 0, None).unwrap_err().code(),
        "EINVAL"
    );
    uffd.register(&region, MISSING, 0, None).unwrap();
    assert_eq!(uffd.copy(&region, 1, &[0; 4096], Wake(true), Protect(false)).unwrap_err().code(), "EINVAL");
    assert_eq!(uffd.copy(&region, 0, &[0; 100], Wake(true), Protect(false)).unwrap_err().code(), "EINVAL");
    assert_eq!(
        uffd.copy(&region, 4 * 4096, &[0; 4096], Wake(true), Protect(false)).unwrap_err().code(),
        "ERR_OUT_OF_RANGE",
        "past the end"
    );
    assert_eq!(uffd.copy(&region, 0, &[], Wake(true), Protect(false)).unwrap_err().code(), "ERR_OUT_OF_RANGE");
    assert_eq!(
        uffd.copy(&shm, 0, &[0; 4096], Wake(true), Protect(false)).unwrap_err().code(),
        "EINVAL",
        "not registered"
    );
    assert_eq!(uffd.r#continue(&region, 0, 4096, Wake(true), Protect(false)).unwrap_err().code(), "EINVAL");
    // Still works after all that.
    assert_eq!(uffd.copy(&region, 0, &[3; 4096], Wake(true), Protect(false)).unwrap(), 4096);
    // SAFETY: the page was just mapped.
    assert_eq!(unsafe { region.as_ptr().read() }, 3);
    uffd.close();
}

#[test]
fn open_register_fault_close_cycles_leave_no_fd_behind() {
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    for _ in 0..200 {
        let uffd = open();
        let region = Region::anonymous(4096).unwrap();
        uffd.register(&region, MISSING, 0, None).unwrap();
        let rx = handler(&uffd, 0);
        let read = touch(&region, 0);
        let fault = next_fault(&rx);
        uffd.resolve(fault.id, Resolution::Zero { len: None, wake: true }).unwrap();
        read.recv_timeout(LIMIT).unwrap();
        uffd.close();
        region.close();
    }
    // Other tests run in parallel threads; allow their few fds.
    assert!(fds() <= before + 16, "fds grew from {before} to {}", fds());
}

#[test]
fn close_with_a_thousand_faults_pending_wakes_them_all() {
    const THREADS: usize = 1000;
    let (uffd, region, rx) = served(THREADS);
    let (done_tx, done_rx) = channel();
    for page in 0..THREADS {
        let region = region.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                // SAFETY: the page is inside the live mapping, which the Arc keeps alive.
                let byte = unsafe { region.as_ptr().add(page * 4096).read_volatile() };
                let _ = done.send(byte);
            })
            .unwrap();
    }
    let deadline = std::time::Instant::now() + LIMIT;
    while uffd.stats().in_flight < THREADS as u64 {
        assert!(std::time::Instant::now() < deadline, "only {} faults in flight", uffd.stats().in_flight);
        while rx.try_recv().is_ok() {}
        std::thread::sleep(Duration::from_millis(5));
    }
    uffd.close();
    for _ in 0..THREADS {
        assert_eq!(done_rx.recv_timeout(LIMIT).expect("every thread wakes"), 0);
    }
}

/// Closing an EVENT_FORK userfaultfd while another thread forks: the fork sleeps until its event
/// is read, holding glibc's malloc locks, so the loop must read on until no event is in progress
/// before it stops. (Before that, this hung on its first cycles.) Run in a child process so that a
/// hang fails the test by its time limit instead of stalling the suite.
#[test]
fn close_while_another_thread_forks_does_not_hang() {
    if std::env::var_os("UFFD_FORK_CLOSE_CHILD").is_some() {
        fork_close_cycles();
        // Tells the parent the cycles ran (a child that matched no test would exit 0).
        std::process::exit(CYCLES_RAN);
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "close_while_another_thread_forks_does_not_hang", "--test-threads=1"])
        .env("UFFD_FORK_CLOSE_CHILD", "1")
        // Its own test summary must not reach the output that the test runner counts.
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run the cycles in a child process");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(CYCLES_RAN), "the fork/close cycles did not run to the end: {status}");
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("closing an EVENT_FORK userfaultfd while another thread forks hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CYCLES_RAN: i32 = 42;

fn fork_close_cycles() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let forker = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                // SAFETY: the child calls only _exit, which is async-signal-safe.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    // SAFETY: ends the child at once.
                    unsafe { libc::_exit(0) };
                }
                if pid > 0 {
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                }
            }
        })
    };
    for _ in 0..200 {
        let options = Options { features: vec!["EVENT_FORK".into()], ..Options::default() };
        let uffd = Userfaultfd::open(options).expect("open with EVENT_FORK");
        let region = Region::anonymous(4 * 4096).unwrap();
        uffd.register(&region, MISSING, 0, None).unwrap();
        std::thread::sleep(Duration::from_micros(200));
        uffd.close();
        region.close();
    }
    done.store(true, Ordering::Relaxed);
    forker.join().unwrap();
}
