//! The userfaultfd and its handler thread: epoll, a read of up to 16 messages, then COPY or
//! ZEROPAGE of the faulting page (or pread + COPY of the next pages of a file).

use crate::args::Pin;
use crate::fail::{errno_of, fatal, io_errno, Context, Failure};
use crate::memory::{page_size, Buffer, Mapping};
use crate::pin::{current_cpu, pin_to};
use libc::c_void;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::fmt;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};
use userfaultfd::{Event, EventBuffer, FeatureFlags, RegisterMode, Uffd, UffdBuilder};

const MSGS_PER_READ: usize = 16;
const UFFD_TOKEN: u64 = 0;
const STOP_TOKEN: u64 = 1;

/// Opens a non-blocking userfaultfd (a blocking one reports POLLERR under epoll forever), user
/// faults only when the kernel wants that of an unprivileged process.
pub fn open_uffd(minor: bool) -> Result<Uffd, Failure> {
    let mut builder = UffdBuilder::new();
    builder.close_on_exec(true).non_blocking(true);
    if minor {
        // The crate names no MINOR_SHMEM flag: UFFD_FEATURE_MINOR_SHMEM is bit 10 of the uapi.
        builder.require_features(FeatureFlags::from_bits_retain(1 << 10));
    }
    match builder.create() {
        Err(error) if matches!(errno_of(&error), Errno::EPERM | Errno::EACCES) => builder.user_mode_only(true).create(),
        result => result,
    }
    .context("userfaultfd")
}

pub fn register_missing(uffd: &Uffd, region: &Mapping) -> Result<(), Failure> {
    uffd.register(region.as_ptr(), region.len()).map(drop).context("UFFDIO_REGISTER")
}

pub fn register_minor(uffd: &Uffd, region: &Mapping) -> Result<(), Failure> {
    uffd.register_with_mode(region.as_ptr(), region.len(), RegisterMode::MINOR).map(drop).context("UFFDIO_REGISTER")
}

/// What the handler counted; `last_errno` is that of the last resolve that failed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub faults: u64,
    pub resolved: u64,
    pub eexist: u64,
    pub reads: u64,
    pub errors: u64,
    pub last_errno: i32,
}

impl fmt::Display for Stats {
    /// The `"handler"` member of the JSON output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            r#""handler":{{"faults":{},"resolved":{},"eexist":{},"reads":{},"errors":{},"lastErrno":{}}}"#,
            self.faults, self.resolved, self.eexist, self.reads, self.errors, self.last_errno
        )
    }
}

/// The resolving ioctls, with the retries and the EEXIST rule of the C baseline.
pub struct Resolver<'a> {
    uffd: &'a Uffd,
    pub stats: Stats,
}

impl<'a> Resolver<'a> {
    pub fn new(uffd: &'a Uffd) -> Self {
        Self { uffd, stats: Stats::default() }
    }

    fn wake(&self, page: usize) {
        // Nothing to do about a failure: the thread would fault again and wait.
        let _ = self.uffd.wake(page as *mut c_void, page_size());
    }

    /// COPY of `src` to the registered address `dst`, retrying a partial copy; EEXIST counts as done.
    pub fn copy(&mut self, dst: usize, src: &[u8]) -> Result<(), Errno> {
        let mut done = 0;
        while done < src.len() {
            let rest = &src[done..];
            // SAFETY: `rest` is readable for its length. `dst + done` is in a region registered for
            // missing faults, where COPY only maps pages that are not there (EEXIST otherwise): no
            // memory that a Rust reference points to changes.
            let result = unsafe { self.uffd.copy(rest.as_ptr().cast(), (dst + done) as *mut c_void, rest.len(), true) };
            match result {
                Ok(_) => return Ok(()),
                Err(userfaultfd::Error::PartiallyCopied(copied)) if copied <= rest.len() => done += copied,
                // The kernel wrote -EAGAIN into the result field, which the crate reads as a huge
                // count: nothing was copied, try again.
                Err(userfaultfd::Error::PartiallyCopied(_)) => {}
                Err(error) => match errno_of(&error) {
                    Errno::EEXIST => {
                        self.stats.eexist += 1;
                        self.wake(dst);
                        return Ok(());
                    }
                    errno => return Err(errno),
                },
            }
        }
        Ok(())
    }

    /// CONTINUE of the registered `page`: maps what the page cache holds; EEXIST counts as done.
    fn r#continue(&mut self, page: usize) -> Result<(), Errno> {
        let result = self.uffd.r#continue(page as *mut c_void, page_size(), true);
        self.done_or_existing(page, result.map(drop))
    }

    /// ZEROPAGE of the registered `page`; EEXIST counts as done.
    fn zero(&mut self, page: usize) -> Result<(), Errno> {
        // SAFETY: as for `copy`: ZEROPAGE only maps a page that is missing.
        let result = unsafe { self.uffd.zeropage(page as *mut c_void, page_size(), true) };
        self.done_or_existing(page, result.map(drop))
    }

    /// A one-page resolve's outcome: EEXIST (another resolver won) counts as done, and wakes.
    fn done_or_existing(&mut self, page: usize, result: userfaultfd::Result<()>) -> Result<(), Errno> {
        match result {
            Ok(()) => Ok(()),
            Err(error) => match errno_of(&error) {
                Errno::EEXIST => {
                    self.stats.eexist += 1;
                    self.wake(page);
                    Ok(())
                }
                errno => Err(errno),
            },
        }
    }
}

/// Where the pages come from.
pub enum Source {
    /// COPY of this page.
    Copy(Buffer),
    Zero,
    /// CONTINUE: the page cache has the bytes.
    Continue,
    /// pread of `readahead` bytes at the page's offset in `file`, then COPY of them.
    File {
        file: File,
        readahead: usize,
        scratch: Buffer,
    },
}

pub struct Handler<'a> {
    resolver: Resolver<'a>,
    region: &'a Mapping,
    source: Source,
    spin: Duration,
    /// The CPU the handler last resolved a fault on.
    cpu: &'a AtomicUsize,
}

impl<'a> Handler<'a> {
    pub fn new(uffd: &'a Uffd, region: &'a Mapping, source: Source, spin: Duration, cpu: &'a AtomicUsize) -> Self {
        Self { resolver: Resolver::new(uffd), region, source, spin, cpu }
    }

    /// Starts the handler on a thread of `scope` (on CPU 1 with `Pin::Cross`).
    pub fn spawn<'scope>(self, scope: &'scope Scope<'scope, '_>, pin: Pin) -> Result<Running<'scope>, Failure>
    where
        'a: 'scope,
    {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("epoll_create1")?;
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).context("eventfd")?;
        epoll.add(self.resolver.uffd, EpollEvent::new(EpollFlags::EPOLLIN, UFFD_TOKEN)).context("epoll_ctl")?;
        epoll.add(&stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP_TOKEN)).context("epoll_ctl")?;
        let thread = thread::Builder::new()
            .name("uffd-handler".into())
            .spawn_scoped(scope, move || {
                if pin == Pin::Cross {
                    if let Err(failure) = pin_to(1) {
                        fatal(failure);
                    }
                }
                self.run(&epoll)
            })
            .context("pthread_create")?;
        Ok(Running { stop, thread })
    }

    fn run(mut self, epoll: &Epoll) -> Stats {
        let mut ready = [EpollEvent::empty(); 2];
        let mut messages = EventBuffer::new(MSGS_PER_READ);
        loop {
            let count = self.wait(epoll, &mut ready);
            for event in &ready[..count] {
                if event.data() == STOP_TOKEN {
                    return self.resolver.stats;
                }
                if event.events().intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) {
                    fatal(Failure::new("the userfaultfd reported POLLERR"));
                }
            }
            self.drain(&mut messages);
        }
    }

    /// Waits for the userfaultfd or the stop signal, polling first for `spin`.
    fn wait(&self, epoll: &Epoll, ready: &mut [EpollEvent]) -> usize {
        loop {
            match self.poll(epoll, ready) {
                Ok(count) => return count,
                Err(Errno::EINTR) => {}
                Err(errno) => fatal(Failure::os("epoll_wait", errno)),
            }
        }
    }

    fn poll(&self, epoll: &Epoll, ready: &mut [EpollEvent]) -> nix::Result<usize> {
        if !self.spin.is_zero() {
            let until = Instant::now() + self.spin;
            loop {
                let count = epoll.wait(ready, EpollTimeout::ZERO)?;
                if count > 0 {
                    return Ok(count);
                }
                if Instant::now() >= until {
                    break;
                }
            }
        }
        epoll.wait(ready, EpollTimeout::NONE)
    }

    /// Reads messages until the userfaultfd has none left, resolving each page fault.
    fn drain(&mut self, messages: &mut EventBuffer) {
        loop {
            let events = match self.resolver.uffd.read_events(messages) {
                Ok(events) => events,
                Err(error) if errno_of(&error) == Errno::EINTR => break,
                Err(error) => fatal(Failure::os("read(userfaultfd)", error)),
            };
            let mut count = 0;
            for event in events {
                count += 1;
                match event {
                    Ok(Event::Pagefault { addr, .. }) => {
                        self.resolver.stats.faults += 1;
                        self.resolve(addr as usize);
                    }
                    // No other event was asked for (a Fork event's Uffd would close its fd on drop).
                    Ok(_) | Err(userfaultfd::Error::UnrecognizedEvent(_)) => {}
                    Err(error) => fatal(Failure::os("read(userfaultfd)", error)),
                }
            }
            // The crate answers EAGAIN (nothing left to read) with no event at all.
            if count == 0 {
                break;
            }
            self.resolver.stats.reads += 1;
            if count < MSGS_PER_READ {
                break;
            }
        }
    }

    fn resolve(&mut self, address: usize) {
        let page = address & !(page_size() - 1);
        self.cpu.store(current_cpu(), Ordering::Relaxed);
        match self.fill(page) {
            Ok(()) => self.resolver.stats.resolved += 1,
            Err(errno) => {
                // Never leave the thread asleep: count the failure and wake it (it will fault again).
                self.resolver.stats.errors += 1;
                self.resolver.stats.last_errno = errno as i32;
                self.resolver.wake(page);
            }
        }
    }

    fn fill(&mut self, page: usize) -> Result<(), Errno> {
        match &mut self.source {
            Source::Copy(bytes) => self.resolver.copy(page, bytes),
            Source::Zero => self.resolver.zero(page),
            Source::Continue => self.resolver.r#continue(page),
            Source::File { file, readahead, scratch } => {
                let offset = page - self.region.addr();
                let chunk = &mut scratch[..(*readahead).min(self.region.len() - offset)];
                let got = file.read_at(chunk, offset as u64).map_err(|error| io_errno(&error))?;
                chunk[got..].fill(0);
                self.resolver.copy(page, chunk)
            }
        }
    }
}

/// A handler thread at work.
pub struct Running<'scope> {
    stop: EventFd,
    thread: ScopedJoinHandle<'scope, Stats>,
}

impl Running<'_> {
    /// Stops the handler and returns what it counted.
    pub fn stop(self) -> Stats {
        if let Err(errno) = self.stop.write(1) {
            // The handler would never end, and the scope would wait for it.
            fatal(Failure::os("write(eventfd)", errno));
        }
        self.thread.join().expect("the handler thread does not panic")
    }
}
