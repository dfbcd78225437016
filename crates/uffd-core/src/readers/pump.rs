//! A reader thread that never allocates, for userfaultfds with EVENT_FORK.
//!
//! A process that forks with EVENT_FORK sleeps in fork(2) until the fork event is read, and glibc's
//! fork holds every malloc arena lock meanwhile. A reader allocates as it turns messages into
//! batches, so a fork that starts while the reader is busy would wait for a reader that waits for
//! malloc: a deadlock, seen here under load with repeated child_process.spawnSync. The pump reads
//! raw messages into a preallocated ring and wakes the reader, with no allocation and no lock that
//! fork holds; the reader then parses and handles them at its own pace. The pump has its own fd
//! (a duplicate) and watches the stop waker: it never sees the façade.

use crate::error::{Error, Result};
use crate::sys::msg::{parse, Message, MSG_SIZE};
use crate::sys::poller::{Poller, Token, Waker, Watch};
use nix::errno::Errno;
use std::cell::UnsafeCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

/// Messages the ring holds; the pump stops reading when it is full.
const CAPACITY: usize = 4096;

/// A single-producer, single-consumer ring of raw messages, and the wakers that signal it.
pub struct Ring {
    slots: Box<[UnsafeCell<[u8; MSG_SIZE]>]>,
    /// Messages written so far (the pump's); `head - tail` are waiting.
    head: AtomicUsize,
    /// Messages consumed so far (the reader's).
    tail: AtomicUsize,
    /// The pump wakes it when messages arrive; the reader waits on it.
    pub ready: Waker,
    /// The reader wakes it when it has made room; the pump waits on it when the ring is full.
    space: Waker,
}

// SAFETY: each slot is written only by the pump while it is free (between tail and head + capacity)
// and read only by the reader while it is full (between tail and head); head and tail publish the
// hand-over with release/acquire ordering.
unsafe impl Sync for Ring {}

impl Ring {
    pub fn new() -> Result<Arc<Ring>> {
        let slots = (0..CAPACITY).map(|_| UnsafeCell::new([0u8; MSG_SIZE])).collect();
        Ok(Arc::new(Ring {
            slots,
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            ready: Waker::new()?,
            space: Waker::new()?,
        }))
    }

    /// Starts the pump thread reading `fd` (its own duplicate) into the ring, until `stop` wakes.
    pub fn spawn(self: &Arc<Self>, fd: OwnedFd, stop: &Waker, name: String) -> Result<JoinHandle<()>> {
        let mut poller = Poller::new()?;
        poller.watch(fd.as_fd(), Token::Uffd, Watch::Readable)?;
        stop.watched_by(&poller, Token::Stop)?;
        self.space.watched_by(&poller, Token::Space)?;
        let ring = self.clone();
        // A new thread allocates as it starts (Rust registers its thread-local destructors): wait
        // until it is past that, so that no fork can find it there.
        let started = Arc::new(Barrier::new(2));
        let running = started.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                running.wait();
                ring.run(&fd, &mut poller)
            })
            .map_err(|e| Error::sys("pthread_create", Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)), ""))?;
        started.wait();
        Ok(thread)
    }

    /// The pump thread: nothing here allocates.
    fn run(&self, fd: &OwnedFd, poller: &mut Poller) {
        loop {
            match poller.wait(None, std::time::Duration::ZERO) {
                Ok(mut ready) => {
                    if ready.any(|r| r.token == Token::Stop) {
                        return;
                    }
                }
                Err(_) => return,
            }
            self.space.clear();
            while let Some(read) = self.read_some(fd) {
                if read == 0 {
                    break;
                }
                self.ready.wake();
            }
        }
    }

    /// Reads as many messages as fit in the free contiguous slots; `None` when the fd fails.
    fn read_some(&self, fd: &OwnedFd) -> Option<usize> {
        let head = self.head.load(Ordering::Relaxed);
        let free = CAPACITY - (head - self.tail.load(Ordering::Acquire));
        let start = head % CAPACITY;
        let room = free.min(CAPACITY - start);
        if room == 0 {
            return Some(0);
        }
        // SAFETY: slots start..start + room are free (the reader is not reading them) and
        // contiguous; the kernel writes whole messages into them.
        let bytes = unsafe { std::slice::from_raw_parts_mut(self.slots[start].get().cast::<u8>(), room * MSG_SIZE) };
        let count = match nix::unistd::read(fd.as_raw_fd(), bytes) {
            Ok(read) => read / MSG_SIZE,
            Err(Errno::EAGAIN) => 0,
            Err(_) => return None,
        };
        self.head.store(head + count, Ordering::Release);
        Some(count)
    }

    /// Takes every waiting message (on the reader), parsed, and makes their room free again.
    pub fn take(&self) -> Vec<Message> {
        self.ready.clear();
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let messages = (tail..head)
            .map(|index| {
                // SAFETY: slots between tail and head hold messages the pump finished writing.
                let raw = unsafe { *self.slots[index % CAPACITY].get() };
                parse(&raw)
            })
            .collect();
        self.tail.store(head, Ordering::Release);
        self.space.wake();
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_the_ring_hands_over_are_parsed_in_order_once() {
        let ring = Ring::new().unwrap();
        let codes = [0x12u8, 0x15, 0x00, 0x16, 0xFF];
        for (index, code) in codes.iter().enumerate() {
            let mut raw = [0u8; MSG_SIZE];
            raw[0] = *code;
            raw[16..24].copy_from_slice(&(0x1000 * (index as u64 + 1)).to_ne_bytes());
            // SAFETY: nothing else reads or writes the ring in this test; slot `index` is free.
            unsafe { *ring.slots[index].get() = raw };
        }
        ring.head.store(codes.len(), Ordering::Release);
        let messages = ring.take();
        assert_eq!(messages.len(), codes.len());
        assert!(matches!(messages[0], Message::Fault { address: 0x1000, .. }));
        assert!(matches!(messages[1], Message::Remove { end: 0x2000, .. }));
        assert!(matches!(messages[2], Message::Unknown(0)));
        assert!(matches!(messages[3], Message::Unmap { .. }));
        assert!(matches!(messages[4], Message::Unknown(0xFF)));
        assert!(ring.take().is_empty(), "taken messages are not handed over twice");
    }
}
