//! The thread that reads a userfaultfd: epoll on the uffd and on a stop eventfd, drain every
//! message until EAGAIN, turn them into one batch, hand the batch over, and resolve faults whose
//! handler ran out of time. It sleeps only in epoll_wait.

use crate::error::{Error, Result};
use crate::fault::{Dispatch, Notice, NoticeKind};
use crate::pump::Pump;
use crate::uapi;
use crate::userfaultfd::Userfaultfd;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use userfaultfd::EventBuffer;

pub(crate) const UFFD: u64 = 1;
pub(crate) const STOP: u64 = 2;
pub(crate) const PEER: u64 = 3;
/// The loop thread is told to look at who reads the fd (direct.rs).
const POKE: u64 = 4;
/// Messages read per read(2); more are read until EAGAIN.
pub(crate) const MESSAGES_PER_READ: usize = 64;

pub fn spawn(uffd: Arc<Userfaultfd>) -> Result<JoinHandle<()>> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| Error::sys("epoll_create", e, ""))?;
    // With EVENT_FORK the messages come through a pump thread that never allocates (pump.rs).
    let pump = if uffd.features() & uapi::FEATURE_EVENT_FORK != 0 {
        let pump = Pump::new()?;
        epoll
            .add(&pump.ready, EpollEvent::new(EpollFlags::EPOLLIN, UFFD))
            .map_err(|e| Error::sys("epoll_ctl", e, ""))?;
        let thread = pump.spawn(uffd.clone())?;
        Some((pump, thread))
    } else {
        uffd.with_fd("epoll_ctl", |fd| {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, UFFD)).map_err(|e| Error::sys("epoll_ctl", e, ""))
        })?;
        None
    };
    if let Some(stop) = uffd.stop.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        epoll.add(stop, EpollEvent::new(EpollFlags::EPOLLIN, STOP)).map_err(|e| Error::sys("epoll_ctl", e, ""))?;
    }
    if let Some(peer) = uffd.peer.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        epoll
            .add(peer, EpollEvent::new(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP, PEER))
            .map_err(|e| Error::sys("epoll_ctl", e, ""))?;
    }
    if let Some(poke) = uffd.poke.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        epoll.add(poke, EpollEvent::new(EpollFlags::EPOLLIN, POKE)).map_err(|e| Error::sys("epoll_ctl", e, ""))?;
    }
    std::thread::Builder::new()
        .name(format!("uffd-loop-{}", uffd.id()))
        .spawn(move || {
            let source = match &pump {
                Some((pump, _)) => Source::Pump(pump),
                None => Source::Fd(EventBuffer::new(MESSAGES_PER_READ)),
            };
            run(&uffd, &epoll, source);
            if let Some((_, thread)) = pump {
                let _ = thread.join();
            }
        })
        .map_err(|e| Error::sys("pthread_create", Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)), ""))
}

/// Where the loop takes messages from: the fd itself, or a pump's ring.
pub(crate) enum Source<'a> {
    Fd(EventBuffer),
    Pump(&'a Pump),
}

fn run(uffd: &Userfaultfd, epoll: &Epoll, mut source: Source<'_>) {
    uffd.epoch.mark_loop_thread();
    let mut ready = [EpollEvent::empty(); 4];
    while !uffd.is_closed() {
        let timeout = match uffd.next_deadline() {
            None => EpollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so that a wake-up never comes before the deadline.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::NONE)
            }
        };
        let count = match spin_then_wait(uffd, epoll, &mut ready, timeout) {
            Ok(count) => count,
            Err(Errno::EINTR) => continue,
            Err(errno) => return fail(uffd, format!("epoll_wait failed: {errno}")),
        };
        if uffd.is_closed() {
            return;
        }
        let turn = crate::direct::Turn::begin();
        let mut batch = Vec::new();
        let mut poked = false;
        for event in &ready[..count] {
            match event.data() {
                POKE => {
                    if let Some(poke) = uffd.poke.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                        let _ = poke.read();
                    }
                    poked = true;
                }
                UFFD if event.events().intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP) => {
                    return fail(uffd, "the userfaultfd reported POLLERR (is it blocking, or was it released?)".into());
                }
                UFFD => drain(uffd, &mut source, &mut batch),
                PEER => {
                    // The peer hung up (it exited, or closed its socket): nothing is left to serve.
                    drain(uffd, &mut source, &mut batch);
                    batch.push(peer_gone());
                    uffd.hand_over(batch);
                    uffd.close();
                    return;
                }
                // The stop eventfd is written only by close(), which the loop sees above.
                _ => {}
            }
        }
        end_turn(uffd, &mut batch);
        drop(turn);
        if !batch.is_empty() {
            uffd.hand_over(batch);
        }
        if poked {
            uffd.park_loop_while_pulled();
        }
    }
}

/// What ends every turn of reading, whoever reads: parked resolves learn that events were read,
/// deferred work is retried, and faults past their time get the fallback.
pub(crate) fn end_turn(uffd: &Userfaultfd, batch: &mut Vec<Dispatch>) {
    if batch.iter().any(|item| matches!(item, Dispatch::Event(_))) {
        uffd.events_read();
    }
    uffd.retry_deferred(batch);
    if uffd.has_timeout() {
        uffd.expire(Instant::now(), batch);
    }
}

/// The notice that the process whose memory this serves hung up.
pub(crate) fn peer_gone() -> Dispatch {
    Dispatch::Notice(Notice {
        kind: NoticeKind::PeerGone,
        message: "the process whose memory this userfaultfd serves hung up: the userfaultfd was closed".into(),
        fault: None,
        cause: None,
    })
}

/// Polls without sleeping for up to `uffd.spin`, then sleeps in epoll_wait.
pub(crate) fn spin_then_wait(
    uffd: &Userfaultfd,
    epoll: &Epoll,
    ready: &mut [EpollEvent],
    timeout: EpollTimeout,
) -> nix::Result<usize> {
    if !uffd.spin.is_zero() {
        let until = Instant::now() + uffd.spin;
        while Instant::now() < until {
            let count = epoll.wait(ready, EpollTimeout::ZERO)?;
            if count > 0 {
                return Ok(count);
            }
            std::hint::spin_loop();
        }
    }
    epoll.wait(ready, timeout)
}

/// Reads every pending message into the batch.
pub(crate) fn drain(uffd: &Userfaultfd, source: &mut Source<'_>, batch: &mut Vec<Dispatch>) {
    let buffer = match source {
        Source::Pump(pump) => return uffd.take_messages(pump.take().into_iter(), batch),
        Source::Fd(buffer) => buffer,
    };
    loop {
        let read = uffd.with_fd("read", |fd| {
            let events = fd.read_events(buffer).map_err(|e| Error::sys("read", crate::ioctl::crate_errno(&e), ""))?;
            let mut count = 0;
            uffd.take_messages(events.inspect(|_| count += 1), batch);
            Ok(count)
        });
        match read {
            Ok(count) if count == MESSAGES_PER_READ => continue,
            Ok(_) => return,
            Err(Error::Closed { .. }) => return,
            Err(err) => {
                batch.push(Dispatch::Notice(Notice {
                    kind: NoticeKind::LoopFailed,
                    message: format!("reading the userfaultfd failed: {err}"),
                    fault: None,
                    cause: Some(err),
                }));
                return;
            }
        }
    }
}

fn fail(uffd: &Userfaultfd, message: String) {
    uffd.hand_over(vec![Dispatch::Notice(Notice { kind: NoticeKind::LoopFailed, message, fault: None, cause: None })]);
}
