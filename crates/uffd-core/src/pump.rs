//! A reader thread that never allocates, for userfaultfds with EVENT_FORK.
//!
//! A process that forks with EVENT_FORK sleeps in fork(2) until the fork event is read, and glibc's
//! fork holds every malloc arena lock meanwhile. The fault loop allocates as it turns messages into
//! batches, so a fork that starts while the loop is busy would wait for a loop that waits for
//! malloc: a deadlock, seen here under load with repeated child_process.spawnSync. The pump reads
//! raw messages into a preallocated ring and signals an eventfd, with no allocation and no lock
//! that fork holds; the loop then parses and handles them at its own pace.

use crate::error::{Error, Result};
use crate::userfaultfd::Userfaultfd;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix_for_userfaultfd::unistd::Pid;
use std::cell::UnsafeCell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use userfaultfd::{Event, FaultKind, ReadWrite, Uffd};

/// Size of a `struct uffd_msg`.
pub const MSG_SIZE: usize = 32;
/// Messages the ring holds; the pump stops reading when it is full.
const CAPACITY: usize = 4096;

const UFFD: u64 = 1;
const STOP: u64 = 2;
const SPACE: u64 = 3;

/// A single-producer, single-consumer ring of raw messages, and the eventfds that signal it.
pub struct Pump {
    slots: Box<[UnsafeCell<[u8; MSG_SIZE]>]>,
    /// Messages written so far (the pump's); `head - tail` are waiting.
    head: AtomicUsize,
    /// Messages consumed so far (the loop's).
    tail: AtomicUsize,
    /// The pump writes it when messages arrive; the loop waits on it.
    pub ready: EventFd,
    /// The loop writes it when it has made room; the pump waits on it when the ring is full.
    space: EventFd,
}

// SAFETY: each slot is written only by the pump while it is free (between tail and head + capacity)
// and read only by the loop while it is full (between tail and head); head and tail publish the
// hand-over with release/acquire ordering.
unsafe impl Sync for Pump {}

impl Pump {
    pub fn new() -> Result<Arc<Pump>> {
        let eventfd = || {
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|errno| Error::sys("eventfd", errno, ""))
        };
        let slots = (0..CAPACITY).map(|_| UnsafeCell::new([0u8; MSG_SIZE])).collect();
        Ok(Arc::new(Pump {
            slots,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            ready: eventfd()?,
            space: eventfd()?,
        }))
    }

    /// Starts the pump thread on `uffd`; it stops when `uffd` is closed.
    pub fn spawn(self: &Arc<Self>, uffd: Arc<Userfaultfd>) -> Result<JoinHandle<()>> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll_create", e, ""))?;
        let add = |fd: std::os::fd::BorrowedFd<'_>, token| {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token)).map_err(|e| Error::sys("epoll_ctl", e, ""))
        };
        uffd.with_fd("epoll_ctl", |fd| add(fd.as_fd(), UFFD))?;
        if let Some(stop) = uffd.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            add(stop.as_fd(), STOP)?;
        }
        add(self.space.as_fd(), SPACE)?;
        let pump = self.clone();
        // A new thread allocates as it starts (Rust registers its thread-local destructors): wait
        // until it is past that, so that no fork can find it there.
        let started = Arc::new(Barrier::new(2));
        let running = started.clone();
        let thread = std::thread::Builder::new()
            .name(format!("uffd-pump-{}", uffd.id()))
            .spawn(move || {
                running.wait();
                pump.run(&uffd, &epoll)
            })
            .map_err(|e| Error::sys("pthread_create", Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)), ""))?;
        started.wait();
        Ok(thread)
    }

    /// The pump thread: nothing here allocates.
    fn run(&self, uffd: &Userfaultfd, epoll: &Epoll) {
        let mut ready = [EpollEvent::empty(); 3];
        while !uffd.is_closed() {
            match epoll.wait(&mut ready, EpollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
            let _ = self.space.read();
            while let Some(read) = self.read_some(uffd) {
                if read == 0 {
                    break;
                }
                let _ = self.ready.write(1);
            }
        }
    }

    /// Reads as many messages as fit in the free contiguous slots; `None` when the fd is closed.
    fn read_some(&self, uffd: &Userfaultfd) -> Option<usize> {
        let head = self.head.load(Ordering::Relaxed);
        let free = CAPACITY - (head - self.tail.load(Ordering::Acquire));
        let start = head % CAPACITY;
        let room = free.min(CAPACITY - start);
        if room == 0 {
            return Some(0);
        }
        let result = uffd.with_fd("read", |fd| {
            // SAFETY: slots start..start + room are free (the loop is not reading them) and
            // contiguous; the kernel writes whole messages into them.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(self.slots[start].get().cast::<u8>(), room * MSG_SIZE) };
            match nix::unistd::read(fd.as_raw_fd(), bytes) {
                Ok(read) => Ok(read / MSG_SIZE),
                Err(Errno::EAGAIN) => Ok(0),
                Err(errno) => Err(Error::sys("read", errno, "")),
            }
        });
        match result {
            Ok(count) => {
                self.head.store(head + count, Ordering::Release);
                Some(count)
            }
            Err(_) => None,
        }
    }

    /// Takes every waiting message (on the loop thread), parsed, and makes their room free again.
    pub fn take(&self) -> Vec<userfaultfd::Result<Event>> {
        let _ = self.ready.read();
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let events = (tail..head)
            .map(|index| {
                // SAFETY: slots between tail and head hold messages the pump finished writing.
                let message = unsafe { *self.slots[index % CAPACITY].get() };
                parse(&message)
            })
            .collect();
        self.tail.store(head, Ordering::Release);
        let _ = self.space.write(1);
        events
    }
}

fn u64_at(message: &[u8; MSG_SIZE], at: usize) -> u64 {
    u64::from_ne_bytes(message[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses a raw `struct uffd_msg` the way the `userfaultfd` crate does (it does not expose that).
fn parse(message: &[u8; MSG_SIZE]) -> userfaultfd::Result<Event> {
    const PAGEFAULT: u8 = 0x12;
    const FORK: u8 = 0x13;
    const REMAP: u8 = 0x14;
    const REMOVE: u8 = 0x15;
    const UNMAP: u8 = 0x16;
    let address = |at| u64_at(message, at) as *mut libc::c_void;
    Ok(match message[0] {
        PAGEFAULT => {
            let flags = u64_at(message, 8);
            let kind = if flags & 4 != 0 {
                FaultKind::Minor
            } else if flags & 2 != 0 {
                FaultKind::WriteProtected
            } else {
                FaultKind::Missing
            };
            let rw = if flags & 1 != 0 { ReadWrite::Write } else { ReadWrite::Read };
            let ptid = u32::from_ne_bytes(message[24..28].try_into().expect("4 bytes"));
            Event::Pagefault { kind, rw, addr: address(16), thread_id: Pid::from_raw(ptid as i32) }
        }
        FORK => {
            let fd = u32::from_ne_bytes(message[8..12].try_into().expect("4 bytes"));
            // SAFETY: the kernel installed this fd for the reader when the fork event was read.
            Event::Fork { uffd: unsafe { Uffd::from_raw_fd(fd as i32) } }
        }
        REMAP => Event::Remap { from: address(8), to: address(16), len: u64_at(message, 24) as usize },
        REMOVE => Event::Remove { start: address(8), end: address(16) },
        UNMAP => Event::Unmap { start: address(8), end: address(16) },
        other => return Err(userfaultfd::Error::UnrecognizedEvent(other)),
    })
}

#[cfg(test)]
mod tests {
    //! Properties of the raw message parser: every 32-byte message parses or is refused with an
    //! error, never a panic; what the kernel writes comes back field for field.

    use super::*;
    use proptest::prelude::*;
    use std::os::fd::{IntoRawFd, OwnedFd};

    const PAGEFAULT: u8 = 0x12;
    const FORK: u8 = 0x13;
    const REMAP: u8 = 0x14;
    const REMOVE: u8 = 0x15;
    const UNMAP: u8 = 0x16;
    const CASES: u32 = 4096;

    /// A fresh fd this test owns, to stand in for the one a fork event would carry: parsing a fork
    /// message takes ownership of its fd, so a random number there could close an fd of the harness.
    fn owned_fd() -> OwnedFd {
        let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).expect("eventfd");
        OwnedFd::from(fd)
    }

    fn put_u64(message: &mut [u8; MSG_SIZE], at: usize, value: u64) {
        message[at..at + 8].copy_from_slice(&value.to_ne_bytes());
    }

    /// Takes the fd out of a parsed fork event without letting the crate's `Uffd` close it.
    fn fork_fd(event: Event) -> i32 {
        match event {
            Event::Fork { uffd } => {
                let uffd = std::mem::ManuallyDrop::new(uffd);
                uffd.as_raw_fd()
            }
            _ => panic!("not a fork event"),
        }
    }

    /// Parses `message` and drops the event; a fork message first gets an fd of our own, which is
    /// closed afterwards.
    fn parse_safely(mut message: [u8; MSG_SIZE]) -> userfaultfd::Result<()> {
        if message[0] != FORK {
            return parse(&message).map(drop);
        }
        let fd = owned_fd().into_raw_fd();
        message[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        let event = parse(&message).expect("a fork message always parses");
        assert_eq!(fork_fd(event), fd, "the fork event carries the message's fd");
        // SAFETY: `fd` came from into_raw_fd above and the parsed Uffd was never dropped.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    fn known(code: u8) -> bool {
        (PAGEFAULT..=UNMAP).contains(&code)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        #[test]
        fn random_bytes_parse_or_are_refused(bytes in any::<[u8; MSG_SIZE]>()) {
            let result = parse_safely(bytes);
            if known(bytes[0]) {
                prop_assert!(result.is_ok(), "event {:#x} refused", bytes[0]);
            } else {
                prop_assert!(
                    matches!(result, Err(userfaultfd::Error::UnrecognizedEvent(code)) if code == bytes[0]),
                    "event {:#x} not refused as unrecognized",
                    bytes[0]
                );
            }
        }

        #[test]
        fn every_event_code_parses_or_is_refused(code in any::<u8>(), rest in any::<[u8; MSG_SIZE]>()) {
            let mut message = rest;
            message[0] = code;
            prop_assert_eq!(parse_safely(message).is_ok(), known(code));
        }

        #[test]
        fn a_pagefault_round_trips_address_flags_and_thread(
            flags in any::<u64>(),
            address in any::<u64>(),
            ptid in any::<u32>(),
            noise in any::<[u8; MSG_SIZE]>(),
        ) {
            // Reserved bytes and the tail of the union carry noise: the parser must ignore them.
            let mut message = noise;
            message[0] = PAGEFAULT;
            put_u64(&mut message, 8, flags);
            put_u64(&mut message, 16, address);
            message[24..28].copy_from_slice(&ptid.to_ne_bytes());
            let Ok(Event::Pagefault { kind, rw, addr, thread_id }) = parse(&message) else {
                return Err(TestCaseError::fail("not parsed as a page fault"));
            };
            prop_assert_eq!(addr as u64, address);
            prop_assert_eq!(thread_id.as_raw() as u32, ptid);
            prop_assert_eq!(rw == ReadWrite::Write, flags & 1 != 0);
            let expected = if flags & 4 != 0 {
                FaultKind::Minor
            } else if flags & 2 != 0 {
                FaultKind::WriteProtected
            } else {
                FaultKind::Missing
            };
            prop_assert_eq!(kind, expected);
        }

        #[test]
        fn range_events_round_trip(
            code in prop::sample::select(vec![REMAP, REMOVE, UNMAP]),
            a in any::<u64>(),
            b in any::<u64>(),
            c in any::<u64>(),
            noise in any::<[u8; MSG_SIZE]>(),
        ) {
            let mut message = noise;
            message[0] = code;
            put_u64(&mut message, 8, a);
            put_u64(&mut message, 16, b);
            put_u64(&mut message, 24, c);
            match parse(&message) {
                Ok(Event::Remap { from, to, len }) => {
                    prop_assert_eq!(code, REMAP);
                    prop_assert_eq!((from as u64, to as u64, len as u64), (a, b, c));
                }
                Ok(Event::Remove { start, end }) => {
                    prop_assert_eq!(code, REMOVE);
                    prop_assert_eq!((start as u64, end as u64), (a, b));
                }
                Ok(Event::Unmap { start, end }) => {
                    prop_assert_eq!(code, UNMAP);
                    prop_assert_eq!((start as u64, end as u64), (a, b));
                }
                _ => return Err(TestCaseError::fail(format!("event {code:#x} parsed as something else"))),
            }
        }
    }

    #[test]
    fn a_fork_event_hands_over_the_fd_it_carries() {
        let fd = owned_fd().into_raw_fd();
        let mut message = [0xA5u8; MSG_SIZE];
        message[0] = FORK;
        message[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
        let event = parse(&message).unwrap();
        assert_eq!(fork_fd(event), fd);
        // SAFETY: `fd` came from into_raw_fd above and the parsed Uffd was never dropped.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }

    #[test]
    fn messages_the_ring_hands_over_are_parsed_in_order() {
        let pump = Pump::new().unwrap();
        let codes = [PAGEFAULT, REMOVE, 0x00, UNMAP, 0xFF];
        for (index, code) in codes.iter().enumerate() {
            let mut message = [0u8; MSG_SIZE];
            message[0] = *code;
            put_u64(&mut message, 16, 0x1000 * (index as u64 + 1));
            // SAFETY: nothing else reads or writes the ring in this test; slot `index` is free.
            unsafe { *pump.slots[index].get() = message };
        }
        pump.head.store(codes.len(), Ordering::Release);
        let events = pump.take();
        assert_eq!(events.len(), codes.len());
        assert!(matches!(events[0], Ok(Event::Pagefault { addr, .. }) if addr as u64 == 0x1000));
        assert!(matches!(events[1], Ok(Event::Remove { end, .. }) if end as u64 == 0x2000));
        assert!(matches!(events[2], Err(userfaultfd::Error::UnrecognizedEvent(0))));
        assert!(matches!(events[3], Ok(Event::Unmap { .. })));
        assert!(matches!(events[4], Err(userfaultfd::Error::UnrecognizedEvent(0xFF))));
        assert!(pump.take().is_empty(), "taken messages are not handed over twice");
    }
}
