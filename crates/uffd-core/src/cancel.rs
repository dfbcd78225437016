//! Stopping a handshake that waits for its peer (`lobby::accept_within`, `handshake::receive_until`), so
//! that an aborted signal or a closed listener leaves no thread blocked. The thread waits in poll(2) on
//! its socket and on an eventfd that `stop` makes readable; once the peer has sent something, the
//! core reads the handshake (blocking, until the body is complete) and `stop` shuts the socket
//! down instead, which ends a read blocked in recvmsg(2) (a peer that sent part of its body and
//! went quiet).

use std::fs::File;
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Why a handshake stopped before it completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Its caller's signal aborted.
    Aborted,
    /// Its listener was closed.
    Closed,
}

/// One waiting handshake's means to be stopped. It lives as long as the task that waits: the
/// handles JavaScript holds (`NativeCancel`, a listener) only know it weakly.
pub struct Cancel {
    /// An eventfd, readable once stopped: what the waiting thread polls beside its socket.
    wake: File,
    state: Mutex<Stopping>,
}

/// Whether the stop came, and what it shuts down.
#[derive(Default)]
struct Stopping {
    stopped: Option<Stop>,
    /// A duplicate of the socket while the handshake is being read, to shut down.
    reading: Option<UnixStream>,
}

impl Cancel {
    pub fn new() -> io::Result<Arc<Cancel>> {
        // SAFETY: eventfd(2) reads and writes no memory of ours; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let wake = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Arc::new(Cancel { wake, state: Mutex::new(Stopping::default()) }))
    }

    fn lock(&self) -> MutexGuard<'_, Stopping> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the handshake (the first reason given stays): a wait returns, a read is cut short.
    pub fn stop(&self, why: Stop) {
        let mut state = self.lock();
        if state.stopped.is_some() {
            return;
        }
        state.stopped = Some(why);
        if let Some(stream) = &state.reading {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // The counter cannot overflow: it is written once.
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
    }

    /// The eventfd that is readable once this is stopped: what a thread polls beside its sockets.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    pub fn stopped(&self) -> Option<Stop> {
        self.lock().stopped
    }

    /// Waits until `socket` has something to read (a connection, bytes, a hang-up) or this is
    /// stopped.
    pub fn wait_readable(&self, socket: BorrowedFd<'_>) -> Result<(), Waited> {
        loop {
            if let Some(why) = self.stopped() {
                return Err(Waited::Stopped(why));
            }
            if poll_readable(socket, self.wake.as_fd()).map_err(|e| Waited::Failed("poll", e))? {
                return Ok(());
            }
        }
    }

    /// Marks `socket` as being read: until the returned guard drops, `stop` shuts it down, and
    /// the socket blocks (the core reads until the body is complete and takes EAGAIN for a
    /// failure, while a socket from Node is non-blocking); the guard gives its mode back.
    pub fn reading(&self, socket: &OwnedFd) -> Result<Reading<'_>, Waited> {
        let duplicate = UnixStream::from(socket.try_clone().map_err(|e| Waited::Failed("dup", e))?);
        let nonblocking = is_nonblocking(duplicate.as_fd()).map_err(|e| Waited::Failed("fcntl", e))?;
        let mut state = self.lock();
        if let Some(why) = state.stopped {
            return Err(Waited::Stopped(why));
        }
        if nonblocking {
            duplicate.set_nonblocking(false).map_err(|e| Waited::Failed("fcntl", e))?;
        }
        state.reading = Some(duplicate);
        Ok(Reading { cancel: self, nonblocking })
    }
}

/// Why a wait ended without its socket being ready.
#[derive(Debug)]
pub enum Waited {
    Stopped(Stop),
    /// The system call that failed, and how.
    Failed(&'static str, io::Error),
}

/// While it lives, the socket it was made for blocks and is shut down by `Cancel::stop`.
pub struct Reading<'a> {
    cancel: &'a Cancel,
    /// The socket's mode before the read, given back after it.
    nonblocking: bool,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let socket = self.cancel.lock().reading.take();
        if let Some(socket) = socket.filter(|_| self.nonblocking) {
            let _ = socket.set_nonblocking(true);
        }
    }
}

/// poll(2) on `socket` and `wake` for input, with no timeout: true once `socket` is ready (or in
/// error, which its next call reports), false when only `wake` is, or an interrupted call returned.
fn poll_readable(socket: BorrowedFd<'_>, wake: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [socket, wake].map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    // SAFETY: `fds` is an array of two pollfd that lives through the call; poll(2) writes only
    // their `revents`. Both fds are borrowed, so open for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(error) };
    }
    Ok(fds[0].revents != 0)
}

/// Whether the open file behind `fd` is non-blocking (O_NONBLOCK).
fn is_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: fcntl(F_GETFL) reads the flags of a borrowed, open fd and touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & libc::O_NONBLOCK != 0)
}

/// Handshakes stopped together: every accept of a listener, or every call given one
/// `NativeCancel`. A handshake that joins after the group stopped is stopped at once.
#[derive(Default)]
pub struct Group {
    state: Mutex<Members>,
}

/// The group's stop, and the cancels it reaches.
#[derive(Default)]
struct Members {
    stopped: Option<Stop>,
    members: Vec<Weak<Cancel>>,
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, Members> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn join(&self, cancel: &Arc<Cancel>) {
        let mut state = self.lock();
        if let Some(why) = state.stopped {
            drop(state);
            return cancel.stop(why);
        }
        state.members.retain(|member| member.strong_count() > 0);
        state.members.push(Arc::downgrade(cancel));
    }

    pub fn stop(&self, why: Stop) {
        let members = {
            let mut state = self.lock();
            state.stopped.get_or_insert(why);
            std::mem::take(&mut state.members)
        };
        for cancel in members.iter().filter_map(Weak::upgrade) {
            cancel.stop(why);
        }
    }
}

/// What JavaScript holds to stop the handshakes it started with it (`accept(cancel)`,
/// `receiveFd(fd, options, cancel)`) when their signal aborts.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::mpsc;
    use std::time::Duration;

    const LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_stopped_handshake_does_not_wait() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let cancel = Cancel::new().unwrap();
        cancel.stop(Stop::Aborted);
        cancel.stop(Stop::Closed);
        assert!(matches!(cancel.wait_readable(ours.as_fd()), Err(Waited::Stopped(Stop::Aborted))), "the first reason");
    }

    #[test]
    fn a_socket_with_something_to_read_ends_the_wait() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut peer, b"[").unwrap();
        assert!(Cancel::new().unwrap().wait_readable(ours.as_fd()).is_ok());
    }

    #[test]
    fn stopping_wakes_a_thread_waiting_on_a_silent_socket() {
        let (ours, _peer) = UnixStream::pair().unwrap();
        let cancel = Cancel::new().unwrap();
        let (done, ended) = mpsc::channel();
        let waiter = cancel.clone();
        std::thread::spawn(move || done.send(matches!(waiter.wait_readable(ours.as_fd()), Err(Waited::Stopped(_)))));
        std::thread::sleep(Duration::from_millis(50));
        cancel.stop(Stop::Closed);
        assert!(ended.recv_timeout(LIMIT).unwrap());
    }

    #[test]
    fn stopping_a_read_shuts_the_socket_down_and_its_mode_comes_back() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let socket = OwnedFd::from(ours);
        let cancel = Cancel::new().unwrap();
        let reading = cancel.reading(&socket).unwrap();
        assert!(!is_nonblocking(socket.as_fd()).unwrap(), "blocking while read");
        let (done, ended) = mpsc::channel();
        let mut blocked = UnixStream::from(socket.try_clone().unwrap());
        std::thread::spawn(move || done.send(blocked.read(&mut [0; 8]).unwrap()));
        std::thread::sleep(Duration::from_millis(50));
        cancel.stop(Stop::Aborted);
        assert_eq!(ended.recv_timeout(LIMIT).unwrap(), 0, "the blocked read ends");
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "the peer is told");
        drop(reading);
        assert!(is_nonblocking(socket.as_fd()).unwrap(), "the mode it had");
    }

    #[test]
    fn a_group_stops_its_members_and_those_that_join_later() {
        let group = Group::default();
        let (early, late) = (Cancel::new().unwrap(), Cancel::new().unwrap());
        group.join(&early);
        group.stop(Stop::Closed);
        group.join(&late);
        assert_eq!(early.stopped(), Some(Stop::Closed));
        assert_eq!(late.stopped(), Some(Stop::Closed));
    }
}
