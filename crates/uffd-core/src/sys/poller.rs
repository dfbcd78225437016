//! What a reader waits in: an epoll over named fds, and the eventfd wakers that interrupt it.
//! A reader sleeps only here (after an optional spin), never in a timed sleep.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// What an fd in a poller stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The userfaultfd (or the pump's ring that reads it): messages wait.
    Uffd,
    /// `close()` was called.
    Stop,
    /// The process whose memory is served hung up.
    Peer,
    /// The loop thread is told to look at who reads the fd.
    Poke,
    /// The pump's ring has room again.
    Space,
}

const TOKENS: [Token; 5] = [Token::Uffd, Token::Stop, Token::Peer, Token::Poke, Token::Space];

/// How an fd is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Readable.
    Readable,
    /// Readable, waking one of the pollers that watch it, not all (several readers of one fd).
    ReadableExclusive,
    /// Hung up (a socket's peer).
    HangUp,
}

/// One fd that is ready.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: Token,
    /// POLLERR or POLLHUP.
    pub failed: bool,
}

pub struct Poller {
    epoll: Epoll,
    ready: [EpollEvent; 8],
}

impl Poller {
    pub fn new() -> Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll_create", e, ""))?;
        Ok(Poller { epoll, ready: [EpollEvent::empty(); 8] })
    }

    pub fn watch(&self, fd: BorrowedFd<'_>, token: Token, how: Watch) -> Result<()> {
        let flags = match how {
            Watch::Readable => EpollFlags::EPOLLIN,
            Watch::ReadableExclusive => EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE,
            Watch::HangUp => EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP,
        };
        let data = TOKENS.iter().position(|t| *t == token).expect("every token is listed") as u64;
        self.epoll.add(fd, EpollEvent::new(flags, data)).map_err(|e| Error::sys("epoll_ctl", e, ""))
    }

    /// Polls without sleeping for up to `spin`, then sleeps until something is ready or `timeout`
    /// (`None`: no limit) has passed. EINTR reads as nothing ready.
    pub fn wait(&mut self, timeout: Option<Duration>, spin: Duration) -> Result<impl Iterator<Item = Ready> + '_> {
        let count = match self.wait_count(timeout, spin) {
            Ok(count) => count,
            Err(Errno::EINTR) => 0,
            Err(errno) => return Err(Error::sys("epoll_wait", errno, "")),
        };
        Ok(self.ready[..count].iter().map(|event| Ready {
            token: TOKENS[event.data() as usize],
            failed: event.events().intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP),
        }))
    }

    fn wait_count(&mut self, timeout: Option<Duration>, spin: Duration) -> nix::Result<usize> {
        if !spin.is_zero() {
            let until = Instant::now() + spin;
            while Instant::now() < until {
                let count = self.epoll.wait(&mut self.ready, EpollTimeout::ZERO)?;
                if count > 0 {
                    return Ok(count);
                }
                std::hint::spin_loop();
            }
        }
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            // Rounded up, so that a wake-up never comes before the time asked for.
            Some(left) => EpollTimeout::try_from(left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32)
                .unwrap_or(EpollTimeout::NONE),
        };
        self.epoll.wait(&mut self.ready, timeout)
    }
}

/// An eventfd that makes a poller watching it return. `close` releases it early (a closed
/// userfaultfd leaves no fd behind, whoever still holds its parts).
pub struct Waker(RwLock<Option<EventFd>>);

impl Waker {
    pub fn new() -> Result<Waker> {
        EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map(|fd| Waker(RwLock::new(Some(fd))))
            .map_err(|errno| Error::sys("eventfd", errno, ""))
    }

    fn with<T>(&self, f: impl FnOnce(&EventFd) -> T) -> Option<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).as_ref().map(f)
    }

    pub fn wake(&self) {
        self.with(|fd| fd.write(1));
    }

    /// Takes the wake-ups so far (the poller stops seeing it ready).
    pub fn clear(&self) {
        self.with(|fd| fd.read());
    }

    /// Makes `poller` watch it (nothing once closed).
    pub fn watched_by(&self, poller: &Poller, token: Token) -> Result<()> {
        self.with(|fd| poller.watch(fd.as_fd(), token, Watch::Readable)).unwrap_or(Ok(()))
    }

    pub fn close(&self) {
        drop(self.0.write().unwrap_or_else(|p| p.into_inner()).take());
    }
}
