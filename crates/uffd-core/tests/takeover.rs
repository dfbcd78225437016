//! What a restore server's restart relies on (the keeper, `src/keeper.rs`): a fault that the dead
//! server read and never served sleeps until it is woken, and no message about it comes again by
//! itself; once the range is woken (`UFFDIO_WAKE`), the thread faults again and the kernel delivers
//! the fault anew, to whoever reads a copy of the fd then.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use userfaultfd::{Event, Uffd, UffdBuilder};

const PAGE: usize = 4096;

/// Whether a message waits on `uffd` within `ms`.
fn message_within(uffd: &Uffd, ms: u16) -> bool {
    // SAFETY: the fd is open for as long as `uffd` lives, which outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(uffd.as_raw_fd()) };
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).unwrap() > 0
}

#[test]
fn a_fault_read_and_never_served_is_delivered_again_once_its_range_is_woken() {
    let dead = UffdBuilder::new().close_on_exec(true).non_blocking(true).user_mode_only(true).create().unwrap();
    // SAFETY: a fresh private anonymous mapping of one page, unmapped at the end of the test.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(memory, libc::MAP_FAILED);
    dead.register(memory, PAGE).unwrap();
    let address = memory as usize;
    // SAFETY: the page is mapped until the thread has read it (it is joined before the unmap).
    let reader = std::thread::spawn(move || unsafe { std::ptr::read_volatile(address as *const u8) });

    // The server that dies: it reads the fault and never serves it.
    assert!(message_within(&dead, 10_000), "the fault was not delivered");
    let Some(Event::Pagefault { addr, .. }) = dead.read_event().unwrap() else { panic!("not a page fault") };
    assert_eq!(addr as usize, address);
    // The new server holds a copy of the fd, as the keeper hands it over; the old one goes.
    // SAFETY: dup(2) of an open fd gives a new fd that nothing else owns.
    let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(dead.as_raw_fd())) };
    drop(dead);
    // SAFETY: `copy` is a userfaultfd, owned from here on by the Uffd.
    let server = unsafe { Uffd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(copy)) };
    std::thread::sleep(Duration::from_millis(100));
    assert!(!message_within(&server, 200), "the fault came again without a wake");
    assert!(!reader.is_finished(), "the thread went on unserved");

    server.wake(memory, PAGE).unwrap();
    assert!(message_within(&server, 10_000), "the woken thread's fault was not delivered again");
    let Some(Event::Pagefault { addr, .. }) = server.read_event().unwrap() else { panic!("not a page fault") };
    assert_eq!(addr as usize, address);
    let page = [42u8; PAGE];
    // SAFETY: `page` is PAGE readable bytes; `memory` is the registered, missing page.
    unsafe { server.copy(page.as_ptr().cast(), memory, PAGE, true) }.unwrap();
    assert_eq!(reader.join().unwrap(), 42);
    // SAFETY: the mapping made above; nothing uses it any more.
    unsafe { libc::munmap(memory, PAGE) };
}
