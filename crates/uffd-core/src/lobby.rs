//! Handshakes read side by side: every connection accepted on a listener waits in a lobby until
//! its handshake is complete, each within a time limit, so that a silent, slow or half-sent
//! connection holds up no other VM. One thread polls the listener and every waiting connection at
//! once (`accept_within`); a connection is read as its bytes come, without blocking.

use crate::cancel::Cancel;
use crate::error::Error;
use crate::handshake::{
    complete, ensure_userfaultfd, parse_ranges, Ended, Handshake, HandshakeRange, Peer, PeerProcess, Refusal,
    LISTENER_CLOSED, MAX_BODY,
};
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};
use std::fs::File;
use std::io::{ErrorKind, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

const OP: &str = "handshake";

/// The connections of a listener whose handshakes are not complete yet. Accepts take them, wait
/// on them beside the listener, and give back those still incomplete.
pub struct Lobby {
    state: Mutex<LobbyState>,
    /// An eventfd, readable once `stop_accepting` was called: what accepts poll beside the
    /// listener (a socket that systemd holds too cannot be shut down to wake them).
    draining: File,
}

#[derive(Default)]
struct LobbyState {
    waiting: Vec<Waiting>,
    /// Once closed, what is given back is dropped (its connections closed).
    closed: bool,
    /// An accept has taken what the listener had queued after `stop_accepting`: later accepts
    /// take no more connections (a shared listener, systemd's, is never shut down).
    drained: bool,
}

impl Lobby {
    pub fn new() -> std::io::Result<Lobby> {
        // SAFETY: eventfd(2) reads and writes no memory of ours; it returns a new fd or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let draining = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Lobby { state: Mutex::default(), draining })
    }

    /// Takes no more connections: accepts read those taken (each within its limit), then end
    /// with `LISTENER_CLOSED`.
    pub fn stop_accepting(&self) {
        let _ = (&self.draining).write(&1u64.to_ne_bytes());
    }

    fn lock(&self) -> MutexGuard<'_, LobbyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes every waiting connection, now and as accepts give theirs back.
    pub fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        drop(dropped);
    }

    /// How many connections wait for their handshake outside a running accept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection whose handshake is being read.
struct Waiting {
    stream: UnixStream,
    peer: Option<Peer>,
    process: Option<PeerProcess>,
    body: Vec<u8>,
    uffd: Option<OwnedFd>,
    deadline: Instant,
    /// The read is over: the body is complete, the peer hung up, or reading failed.
    done: bool,
    failed: Option<Error>,
}

impl Waiting {
    fn new(stream: UnixStream, deadline: Instant) -> Self {
        let peer = socket::getsockopt(&stream, sockopt::PeerCredentials).ok().map(|c| Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        });
        let process = peer.and_then(|p| PeerProcess::of(&stream, p.pid));
        Waiting { stream, peer, process, body: Vec::new(), uffd: None, deadline, done: false, failed: None }
    }

    /// Who is at the other end, for a message.
    fn who(&self) -> String {
        self.peer
            .map_or_else(|| "a connection (pid unknown)".to_string(), |p| format!("the connection of pid {}", p.pid))
    }

    /// Reads what has come, without blocking; `done` once there is nothing more to wait for.
    fn read(&mut self) {
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.done {
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut chunk)];
            let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
            let message = match socket::recvmsg::<()>(self.stream.as_raw_fd(), &mut iov, Some(&mut space), flags) {
                Ok(message) => message,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    self.failed =
                        Some(Error::sys("recvmsg", errno, format!("reading the handshake of {}", self.who())));
                    self.done = true;
                    return;
                }
            };
            let read = message.bytes;
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(fds) = cmsg {
                        for fd in fds {
                            // SAFETY: SCM_RIGHTS gave this process a fresh fd that nothing else owns.
                            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                            // Keep the first; any extra fd is closed as it drops.
                            if self.uffd.is_none() {
                                self.uffd = Some(fd);
                            }
                        }
                    }
                }
            }
            self.body.extend_from_slice(&chunk[..read]);
            if self.body.len() > MAX_BODY {
                self.failed = Some(Error::invalid(OP, format!("the handshake body exceeds {MAX_BODY} bytes")));
            }
            self.done = read == 0 || complete(&self.body) || self.failed.is_some();
        }
    }

    /// The handshake, or why there is none. A peer that sent nothing is not named for a kill: a
    /// liveness probe, or anything else that connects and says nothing, is only dropped.
    fn finish(mut self) -> std::result::Result<Handshake, Refusal> {
        let sent = !self.body.is_empty();
        let (peer, process) = if sent { (self.peer, self.process.take()) } else { (None, None) };
        let checked = match self.failed.take() {
            Some(error) => Err(error),
            None if !sent => {
                Err(Error::invalid(OP, format!("{} closed before sending a handshake: dropped", self.who())))
            }
            None => self.checked(),
        };
        let (ranges, uffd) = match checked {
            Ok(parts) => parts,
            Err(error) => return Err(Refusal { error, peer, process }),
        };
        // The connection is kept to learn of the peer's hang-up; it blocks, as an accepted one does.
        let _ = self.stream.set_nonblocking(false);
        let peer = self.peer.unwrap_or(Peer { pid: 0, uid: u32::MAX, gid: u32::MAX });
        Ok(Handshake { uffd, ranges, peer, process, stream: self.stream.into() })
    }

    /// The ranges of a complete body, and its fd if that is a userfaultfd.
    fn checked(&mut self) -> Result<(Vec<HandshakeRange>, OwnedFd), Error> {
        let ranges = parse_ranges(&self.body)?;
        let uffd = self
            .uffd
            .take()
            .ok_or_else(|| Error::invalid(OP, "the handshake carried no file descriptor (SCM_RIGHTS)"))?;
        ensure_userfaultfd(&uffd)?;
        Ok((ranges, uffd))
    }

    /// Why a connection whose time ran out is dropped.
    fn late(mut self, limit: Duration) -> Refusal {
        let ms = limit.as_millis();
        let who = self.who();
        let (detail, peer, process) = if self.body.is_empty() {
            (format!("{who} sent no handshake within {ms} ms: dropped"), None, None)
        } else {
            let bytes = self.body.len();
            let detail = format!("{who} sent {bytes} bytes of a handshake but not the rest within {ms} ms");
            (detail, self.peer, self.process.take())
        };
        let advice = "a VM sends its handshake as it connects; raise the handshake time limit if its host is that slow";
        Refusal { error: Error::sys(OP, Errno::ETIMEDOUT, detail).with_advice(advice), peer, process }
    }
}

/// What an accept holds of the lobby while it runs, given back whatever way it ends.
struct Held<'a> {
    lobby: &'a Lobby,
    waiting: Vec<Waiting>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        let mut state = self.lobby.lock();
        if !state.closed {
            state.waiting.extend(waiting);
        }
    }
}

fn pollfd(fd: Option<BorrowedFd<'_>>) -> libc::pollfd {
    // poll(2) skips a negative fd.
    libc::pollfd { fd: fd.map_or(-1, |fd| fd.as_raw_fd()), events: libc::POLLIN, revents: 0 }
}

/// The next complete handshake among the connections of `listener` (non-blocking) and those
/// waiting in `lobby`, each connection given `limit` from its accept. A connection dropped (its
/// time ran out, it hung up, its handshake is malformed) ends the call with its refusal; the
/// others wait on in the lobby. Once the lobby stops accepting (`Lobby::stop_accepting`) or the
/// listener is shut down (`stop_listening`), the connections already accepted are still read;
/// then it ends with `LISTENER_CLOSED`.
pub fn accept_within(
    listener: &UnixListener,
    lobby: &Lobby,
    limit: Duration,
    cancel: &Cancel,
) -> std::result::Result<Handshake, Ended> {
    let (taken, drained) = {
        let mut state = lobby.lock();
        (std::mem::take(&mut state.waiting), state.drained)
    };
    let mut held = Held { lobby, waiting: taken };
    let mut accepting = !drained;
    loop {
        if let Some(why) = cancel.stopped() {
            return Err(Ended::Stopped(why));
        }
        let now = Instant::now();
        if let Some(i) = held.waiting.iter().position(|w| w.deadline <= now) {
            return Err(Ended::Refused(held.waiting.swap_remove(i).late(limit)));
        }
        if !accepting && held.waiting.is_empty() {
            return Err(LISTENER_CLOSED.into());
        }
        let timeout = held.waiting.iter().map(|w| w.deadline - now).min();
        // Round up: a poll that wakes just before a deadline would only poll again.
        let timeout_ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis() + 1).unwrap_or(i32::MAX));
        // [the cancel, the lobby's draining (while accepting), the listener (while accepting), connections...]
        let mut fds: Vec<libc::pollfd> =
            [Some(cancel.wake_fd()), accepting.then(|| lobby.draining.as_fd()), accepting.then(|| listener.as_fd())]
                .into_iter()
                .chain(held.waiting.iter().map(|w| Some(w.stream.as_fd())))
                .map(pollfd)
                .collect();
        // SAFETY: `fds` is a vector of pollfd that lives through the call; poll(2) writes only
        // their `revents`. Every fd in it is borrowed from something that outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(io_error("poll", error).into());
        }
        // Connections first: a VM that has sent its handshake goes before new connections.
        for i in (0..held.waiting.len()).rev() {
            if fds[i + 3].revents == 0 {
                continue;
            }
            held.waiting[i].read();
            if held.waiting[i].done {
                return held.waiting.swap_remove(i).finish().map_err(Ended::Refused);
            }
        }
        if accepting && fds[1].revents != 0 {
            // Stopped accepting: what the listener has queued is still taken, once.
            accepting = false;
            lobby.lock().drained = true;
            fds[2].revents = libc::POLLIN;
        }
        if fds[2].revents != 0 {
            // A listener shut down (`stop_listening`) polls as hung up, and its accept(2) says
            // EAGAIN (non-blocking) or EINVAL: what it had queued is taken, then no more.
            if fds[2].revents & libc::POLLHUP != 0 {
                accepting = false;
            }
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(true).map_err(|e| Ended::from(io_error("fcntl", e)))?;
                        held.waiting.push(Waiting::new(stream, Instant::now() + limit));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        accepting = false;
                        break;
                    }
                    Err(e) => return Err(io_error("accept", e).into()),
                }
            }
        }
    }
}

fn io_error(op: &'static str, error: std::io::Error) -> Error {
    Error::sys(op, Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)), "the handshake socket")
}

/// Reads `lobby`'s next handshake, with a cancel of its own.
#[cfg(test)]
fn accept_next(listener: &UnixListener, lobby: &Lobby, limit: Duration) -> std::result::Result<Handshake, Ended> {
    let cancel = Cancel::new().map_err(|e| Ended::from(io_error("eventfd", e)))?;
    accept_within(listener, lobby, limit, &cancel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn listener() -> (UnixListener, std::path::PathBuf, crate::test_dir::Dir) {
        let dir = crate::test_dir::Dir::new("uffd-lobby");
        let path = dir.0.join("lobby.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        (listener, path, dir)
    }

    #[test]
    fn a_silent_connection_is_dropped_after_its_limit_and_names_no_peer_to_kill() {
        let (listener, path, _dir) = listener();
        let lobby = Lobby::new().unwrap();
        let _silent = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        let Err(Ended::Refused(refusal)) = accept_next(&listener, &lobby, Duration::from_millis(200)) else {
            panic!("a refusal")
        };
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(refusal.peer.is_none());
        assert!(refusal.error.to_string().contains("sent no handshake within 200 ms"), "{}", refusal.error);
        assert_eq!(refusal.error.errno(), Errno::ETIMEDOUT);
    }

    #[test]
    fn a_listener_shut_down_ends_the_accept_once_the_connections_taken_are_done() {
        let (listener, path, _dir) = listener();
        let lobby = Lobby::new().unwrap();
        let probe = UnixStream::connect(&path).unwrap();
        let (done, ended) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| done.send(accept_next(&listener, &lobby, Duration::from_secs(10))).unwrap());
            std::thread::sleep(Duration::from_millis(100));
            crate::handshake::stop_listening(&listener);
            std::thread::sleep(Duration::from_millis(100));
            assert!(ended.try_recv().is_err(), "the connection taken is still read");
            drop(probe);
            let Ok(Err(Ended::Refused(refusal))) = ended.recv_timeout(Duration::from_secs(10)) else {
                panic!("the probe's refusal")
            };
            assert!(refusal.error.to_string().contains("closed before sending"));
        });
        let Err(Ended::Refused(refusal)) = accept_next(&listener, &lobby, Duration::from_secs(10)) else {
            panic!("closed")
        };
        assert!(matches!(refusal.error, Error::Closed { .. }), "{}", refusal.error);
    }

    #[test]
    fn once_stopped_a_lobby_takes_no_connection_that_comes_later() {
        // A shared listener (systemd's) is never shut down: the stop must outlive the first accept.
        let (listener, path, _dir) = listener();
        let lobby = Lobby::new().unwrap();
        lobby.stop_accepting();
        let closed = |ended| matches!(ended, Err(Ended::Refused(r)) if matches!(r.error, Error::Closed { .. }));
        assert!(closed(accept_next(&listener, &lobby, Duration::from_secs(10))));
        let _late = UnixStream::connect(&path).unwrap();
        let started = Instant::now();
        assert!(closed(accept_next(&listener, &lobby, Duration::from_secs(10))), "the late connection was not taken");
        assert!(started.elapsed() < Duration::from_secs(5), "and the accept did not wait for it");
    }

    #[test]
    fn a_half_sent_handshake_names_its_peer() {
        let (listener, path, _dir) = listener();
        let lobby = Lobby::new().unwrap();
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(b"[{\"base_host_virt_addr\":").unwrap();
        let Err(Ended::Refused(refusal)) = accept_next(&listener, &lobby, Duration::from_millis(100)) else {
            panic!("a refusal")
        };
        assert_eq!(refusal.peer.map(|p| p.pid), Some(std::process::id() as i32));
        assert!(refusal.error.to_string().contains("bytes of a handshake"), "{}", refusal.error);
    }

    #[test]
    fn a_connection_that_closes_unsent_is_dropped_and_the_others_wait_on() {
        let (listener, path, _dir) = listener();
        let lobby = Lobby::new().unwrap();
        let silent = UnixStream::connect(&path).unwrap();
        drop(UnixStream::connect(&path).unwrap());
        let Err(Ended::Refused(refusal)) = accept_next(&listener, &lobby, Duration::from_secs(10)) else {
            panic!("a refusal")
        };
        assert!(refusal.peer.is_none());
        assert!(refusal.error.to_string().contains("closed before sending"), "{}", refusal.error);
        assert_eq!(lobby.len(), 1, "the silent one waits on");
        drop(silent);
        lobby.close();
        assert!(lobby.is_empty());
    }
}
