//! Keeping the VMs a server serves across the server's own restart. A keeper is a small process
//! of its own that holds, for each VM, a copy of its userfaultfd, its connection and its pidfd,
//! with the ranges of its handshake; it never reads the userfaultfd. A server links to the keeper
//! and hands it each VM as it is adopted ([`Link::keep`]); a server that starts again links to
//! the same keeper and takes back every VM it holds ([`Link::connect`]), then wakes their ranges
//! so that faults the dead server had read but not served are delivered again.
//!
//! A VM whose connection hangs up (it exited, or was killed) is let go. A keeper left with no
//! server for its grace time kills the VMs it holds (by their pidfds) and ends: a frozen VM is
//! worse than a dead one, which its owner sees and restarts. With no VM and no server it ends at
//! once; a server that comes later starts another.
//!
//! The link is a Unix stream socket carrying frames: a 4-byte little-endian length, that many
//! bytes of JSON, and the frame's fds as SCM_RIGHTS on its first byte.

use crate::error::{Error, Result};
use crate::handshake::{self, Handshake, HandshakeRange, Peer, PeerProcess};
use crate::region::RemoteRange;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const OP: &str = "keeper";
/// The most JSON one frame may carry (a VM with thousands of ranges stays far below it).
const MAX_FRAME: usize = 16 << 20;

/// What goes over the link.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Frame {
    /// A VM, either way: who it is and its ranges. Its fds: the userfaultfd, the connection, and
    /// its pidfd when `process` says there is one.
    Vm { pid: i32, uid: u32, gid: u32, ranges: Vec<KeptRange>, process: bool },
    /// From the keeper, after the VMs it holds: all were sent.
    Ready { vms: usize },
    /// From the keeper: another server is linked to it; this one is not.
    Busy { pid: i32 },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct KeptRange {
    address: usize,
    length: usize,
    page_size: usize,
    offset: u64,
}

/// A VM as the keeper holds it.
struct KeptVm {
    peer: Peer,
    ranges: Vec<KeptRange>,
    uffd: OwnedFd,
    stream: OwnedFd,
    process: Option<PeerProcess>,
}

impl KeptVm {
    fn frame(&self) -> Frame {
        let Peer { pid, uid, gid } = self.peer;
        Frame::Vm { pid, uid, gid, ranges: self.ranges.clone(), process: self.process.is_some() }
    }

    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.uffd.as_raw_fd(), self.stream.as_raw_fd()];
        fds.extend(self.process.as_ref().map(|p| p.as_fd().as_raw_fd()));
        fds
    }
}

/// A server's link to its keeper.
#[derive(Debug)]
pub struct Link {
    stream: Mutex<UnixStream>,
    path: String,
}

impl Link {
    /// Links to the keeper listening at `path` and takes back every VM it holds, as handshakes
    /// (their pidfds and connections included). Fails with the connect's errno where no keeper
    /// listens (ENOENT, ECONNREFUSED: start one), EBUSY where another server is linked to it.
    pub fn connect(path: &str) -> Result<(Link, Vec<Handshake>)> {
        let stream = UnixStream::connect(path).map_err(|e| io_error("connect", e, &format!("the keeper {path}")))?;
        let mut held = Vec::new();
        loop {
            let Some((frame, fds)) = receive(&stream).map_err(|e| e.with_what(path))? else {
                return Err(Error::sys("recvmsg", Errno::ECONNRESET, format!("the keeper {path}"))
                    .with_advice("the keeper closed the link before it was ready"));
            };
            match frame {
                Frame::Vm { pid, uid, gid, ranges, process } => {
                    held.push(handshake_of(Peer { pid, uid, gid }, &ranges, process, fds)?);
                }
                Frame::Ready { .. } => break,
                Frame::Busy { pid } => {
                    return Err(Error::sys("connect", Errno::EBUSY, format!("the keeper {path}")).with_advice(format!(
                        "another server (pid {pid}) is linked to this keeper: stop it first, or give this server its own keeper"
                    )))
                }
            }
        }
        Ok((Link { stream: Mutex::new(stream), path: path.to_string() }, held))
    }

    /// Unlinks from the keeper: with no VM left it ends; with VMs, it waits its grace for a server.
    pub fn close(&self) {
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        let _ = socket::shutdown(stream.as_raw_fd(), socket::Shutdown::Both);
    }

    /// Hands the keeper a VM just adopted: copies of its userfaultfd, connection and pidfd.
    pub fn keep(&self, shake: &Handshake) -> Result<()> {
        let vm = Frame::Vm {
            pid: shake.peer.pid,
            uid: shake.peer.uid,
            gid: shake.peer.gid,
            ranges: shake
                .ranges
                .iter()
                .map(|r| KeptRange {
                    address: r.range.address,
                    length: r.range.length,
                    page_size: r.range.page_size,
                    offset: r.offset,
                })
                .collect(),
            process: shake.process.is_some(),
        };
        let mut fds = vec![shake.uffd.as_raw_fd(), shake.stream.as_raw_fd()];
        fds.extend(shake.process.as_ref().map(|p| p.as_fd().as_raw_fd()));
        let stream = self.stream.lock().unwrap_or_else(|p| p.into_inner());
        send(&stream, &vm, &fds).map_err(|e| e.with_what(&self.path))
    }
}

/// Turns a kept VM's frame and fds back into the handshake it came in.
fn handshake_of(peer: Peer, ranges: &[KeptRange], process: bool, fds: Vec<OwnedFd>) -> Result<Handshake> {
    let mut fds = fds.into_iter();
    let (Some(uffd), Some(stream)) = (fds.next(), fds.next()) else {
        return Err(Error::invalid(OP, format!("the keeper sent the VM (pid {}) without its fds", peer.pid)));
    };
    let process = if process { fds.next().map(PeerProcess::from_pidfd) } else { None };
    let ranges = ranges
        .iter()
        .map(|r| HandshakeRange {
            range: RemoteRange { address: r.address, length: r.length, page_size: r.page_size },
            offset: r.offset,
        })
        .collect();
    Ok(Handshake { uffd, ranges, peer, process, stream })
}

/// Runs a keeper on a Unix socket at `path` until it has no VM and no server, or has been
/// without a server for `grace` (then it kills the VMs it holds). The socket file it made is
/// removed as it ends. A live keeper already at `path` is refused (EADDRINUSE), a stale socket
/// file replaced.
pub fn run(path: &str, grace: Duration) -> Result<()> {
    let listener = handshake::listen(path)?;
    let made = inode(path);
    let result = Keeper {
        listener: &listener,
        vms: Vec::new(),
        server: None,
        alone_since: Instant::now(),
        linked: false,
        grace,
    }
    .run();
    if made.is_some() && inode(path) == made {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}

struct Keeper<'a> {
    listener: &'a UnixListener,
    vms: Vec<KeptVm>,
    server: Option<UnixStream>,
    /// Since when no server has been linked (while `server` is None).
    alone_since: Instant,
    /// Whether a server was ever linked: a keeper just started waits its grace for the first.
    linked: bool,
    grace: Duration,
}

impl Keeper<'_> {
    fn run(mut self) -> Result<()> {
        loop {
            if self.server.is_none() {
                let left = self.grace.saturating_sub(self.alone_since.elapsed());
                if left.is_zero() {
                    self.kill_all();
                    return Ok(());
                }
            }
            let ready = self.wait()?;
            // Hang-ups first: a server that died is gone before the one that replaces it links.
            self.let_go(&ready.vm_hangups);
            if ready.server {
                self.serve_frame();
            }
            if self.server.is_none() && self.vms.is_empty() && self.linked {
                return Ok(());
            }
            if ready.listener {
                self.accept();
            }
        }
    }

    fn wait(&self) -> Result<Ready> {
        // Only a kept connection's hang-up is watched (POLLHUP, always reported): its peer may
        // send, and nothing here reads it.
        let hangup = PollFlags::empty();
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        if let Some(server) = &self.server {
            fds.push(PollFd::new(server.as_fd(), PollFlags::POLLIN));
        }
        let first_vm = fds.len();
        fds.extend(self.vms.iter().map(|vm| PollFd::new(vm.stream.as_fd(), hangup)));
        let timeout = match self.server {
            Some(_) => PollTimeout::NONE,
            None => {
                let left = self.grace.saturating_sub(self.alone_since.elapsed());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1).unwrap_or(PollTimeout::MAX)
            }
        };
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(errno) => return Err(Error::sys("poll", errno, "the keeper's sockets")),
        }
        let any = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok(Ready {
            listener: any(&fds[0]),
            server: self.server.is_some() && any(&fds[1]),
            vm_hangups: (0..self.vms.len()).filter(|&i| any(&fds[first_vm + i])).collect(),
        })
    }

    fn let_go(&mut self, hangups: &[usize]) {
        for &i in hangups.iter().rev() {
            self.vms.swap_remove(i);
        }
    }

    /// A frame from the server, or its hang-up.
    fn serve_frame(&mut self) {
        let Some(server) = &self.server else { return };
        match receive(server) {
            Ok(Some((Frame::Vm { pid, uid, gid, ranges, process }, fds))) => {
                let mut fds = fds.into_iter();
                if let (Some(uffd), Some(stream)) = (fds.next(), fds.next()) {
                    let process = if process { fds.next().map(PeerProcess::from_pidfd) } else { None };
                    self.vms.push(KeptVm { peer: Peer { pid, uid, gid }, ranges, uffd, stream, process });
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => self.unlink(),
        }
    }

    fn unlink(&mut self) {
        self.server = None;
        self.alone_since = Instant::now();
    }

    /// A server linking: it is given every VM held, unless another server is linked.
    fn accept(&mut self) {
        let Ok((stream, _)) = self.listener.accept() else { return };
        let _ = stream.set_nonblocking(false);
        // Only this user (or root) may take the VMs.
        // SAFETY: geteuid(2) reads no memory of ours and cannot fail.
        let me = unsafe { libc::geteuid() };
        let allowed =
            socket::getsockopt(&stream, sockopt::PeerCredentials).is_ok_and(|c| c.uid() == 0 || c.uid() == me);
        if !allowed {
            return;
        }
        // A server that died may have frames and its hang-up still unread: read them first.
        while self.server.as_ref().is_some_and(readable) {
            self.serve_frame();
        }
        if let Some(server) = &self.server {
            let pid = socket::getsockopt(server, sockopt::PeerCredentials).map_or(0, |c| c.pid());
            let _ = send(&stream, &Frame::Busy { pid }, &[]);
            return;
        }
        let sent = self.vms.iter().try_for_each(|vm| send(&stream, &vm.frame(), &vm.fds()));
        if sent.and_then(|()| send(&stream, &Frame::Ready { vms: self.vms.len() }, &[])).is_ok() {
            self.server = Some(stream);
            self.linked = true;
        }
    }

    /// The grace ran out with no server: every VM held is killed, none left frozen.
    fn kill_all(&mut self) {
        for vm in self.vms.drain(..) {
            if let Some(process) = &vm.process {
                let _ = process.signal(libc::SIGKILL);
            }
        }
    }
}

/// Whether a frame or the end of the stream waits to be read on `stream`.
fn readable(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
}

/// What a wait found.
struct Ready {
    listener: bool,
    server: bool,
    vm_hangups: Vec<usize>,
}

/// Sends one frame with `fds`.
fn send(stream: &UnixStream, frame: &Frame, fds: &[RawFd]) -> std::result::Result<(), LinkError> {
    let body = serde_json::to_vec(frame).map_err(|e| LinkError(Error::invalid(OP, e.to_string())))?;
    let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let mut sent = loop {
        match socket::sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(&bytes)], cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(|errno| LinkError(Error::sys("sendmsg", errno, String::new())))?,
        }
    };
    while sent < bytes.len() {
        match socket::send(stream.as_raw_fd(), &bytes[sent..], MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(LinkError(Error::sys("send", errno, String::new()))),
        }
    }
    Ok(())
}

/// Receives one frame and its fds; None at the end of the stream.
fn receive(stream: &UnixStream) -> std::result::Result<Option<(Frame, Vec<OwnedFd>)>, LinkError> {
    let mut fds = Vec::new();
    let mut length = [0u8; 4];
    if !read_exact(stream, &mut length, &mut fds)? {
        return Ok(None);
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(LinkError(Error::invalid(OP, format!("a frame of {length} bytes is more than {MAX_FRAME}"))));
    }
    let mut body = vec![0u8; length];
    if !read_exact(stream, &mut body, &mut fds)? {
        return Err(LinkError(Error::invalid(OP, "the link ended inside a frame")));
    }
    let frame = serde_json::from_slice(&body).map_err(|e| LinkError(Error::invalid(OP, format!("a frame: {e}"))))?;
    Ok(Some((frame, fds)))
}

/// Fills `buffer`, gathering the fds that come with it; false at the end of the stream before
/// any byte of it.
fn read_exact(stream: &UnixStream, buffer: &mut [u8], fds: &mut Vec<OwnedFd>) -> std::result::Result<bool, LinkError> {
    let mut filled = 0;
    while filled < buffer.len() {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut buffer[filled..])];
        let message =
            match socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
                Ok(message) => message,
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(LinkError(Error::sys("recvmsg", errno, String::new()))),
            };
        let read = message.bytes;
        for cmsg in message.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: SCM_RIGHTS gave this process fresh fds that nothing else owns.
                fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(LinkError(Error::invalid(OP, "the link ended inside a frame")));
        }
        filled += read;
    }
    Ok(true)
}

/// A failure on the link, to be named by the keeper's path.
#[derive(Debug)]
struct LinkError(Error);

impl LinkError {
    fn with_what(self, path: &str) -> Error {
        match self.0 {
            Error::Sys { op, errno, detail, advice } if detail.is_empty() => {
                Error::Sys { op, errno, detail: format!("the keeper {path}"), advice }
            }
            other => other,
        }
    }
}

impl From<LinkError> for Error {
    fn from(error: LinkError) -> Self {
        error.0
    }
}

fn io_error(op: &'static str, error: std::io::Error, what: &str) -> Error {
    Error::sys(op, Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)), what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::Dir;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command};
    use std::thread::JoinHandle;

    fn keeper(dir: &Dir, grace: Duration) -> (String, JoinHandle<Result<()>>) {
        let path = dir.0.join("keeper.sock").to_string_lossy().into_owned();
        let at = path.clone();
        let thread = std::thread::spawn(move || run(&at, grace));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).is_err() {
            assert!(Instant::now() < deadline, "the keeper did not listen");
            std::thread::sleep(Duration::from_millis(5));
        }
        (path, thread)
    }

    /// A stand-in VM: a process to kill, a connection whose other end `peer` is, and a pipe in
    /// place of its userfaultfd (the keeper only holds it).
    fn vm() -> (Handshake, Child, UnixStream) {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        // SAFETY: pidfd_open(2) reads no memory of ours; it returns a new fd or -1.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as i32, 0) };
        assert!(pidfd >= 0);
        // SAFETY: a new pidfd that nothing else owns.
        let process = PeerProcess::from_pidfd(unsafe { OwnedFd::from_raw_fd(pidfd as i32) });
        let (stream, peer) = UnixStream::pair().unwrap();
        let (pipe, _) = nix::unistd::pipe().unwrap();
        let range =
            HandshakeRange { range: RemoteRange { address: 0x10000, length: 8192, page_size: 4096 }, offset: 4096 };
        let shake = Handshake {
            uffd: pipe,
            ranges: vec![range],
            peer: Peer { pid: child.id() as i32, uid: 0, gid: 0 },
            process: Some(process),
            stream: stream.into(),
        };
        (shake, child, peer)
    }

    fn linked_again(path: &str) -> (Link, Vec<Handshake>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Link::connect(path) {
                Err(Error::Sys { errno: Errno::EBUSY, .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => return other.unwrap(),
            }
        }
    }

    fn ended(thread: JoinHandle<Result<()>>) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the keeper did not end");
            std::thread::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap()
    }

    #[test]
    fn a_vm_kept_is_taken_back_by_the_next_server_and_let_go_when_it_hangs_up() {
        let dir = Dir::new("uffd-keeper");
        let (path, thread) = keeper(&dir, Duration::from_secs(30));
        let (link, held) = Link::connect(&path).unwrap();
        assert!(held.is_empty());
        let (shake, mut child, peer) = vm();
        link.keep(&shake).unwrap();
        drop(link); // the server dies

        // The dead server's end may close a moment late (a fork elsewhere in this process holds
        // a copy until it execs): the next server tries again while the keeper says it is busy.
        let (link, held) = linked_again(&path);
        assert_eq!(held.len(), 1);
        let back = &held[0];
        assert_eq!(back.peer, shake.peer);
        assert_eq!(back.ranges, shake.ranges);
        assert!(back.process.as_ref().is_some_and(|p| !p.exited()));
        // The same pipe and the same connection, as copies.
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_ino;
        assert_eq!(ino(&back.uffd), ino(&shake.uffd));
        assert_eq!(ino(&back.stream), ino(&shake.stream));
        let Err(second) = Link::connect(&path) else { panic!("a second server linked") };
        assert!(matches!(second, Error::Sys { errno: Errno::EBUSY, .. }), "{second}");

        drop(peer); // the VM exits: the keeper lets it go
        drop((shake, held));
        link.close(); // and the server stops: nothing is left to keep
        ended(thread).unwrap();
        assert!(std::fs::metadata(&path).is_err(), "the socket file is removed");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_keeper_with_no_server_for_its_grace_kills_its_vms() {
        let dir = Dir::new("uffd-keeper");
        let (path, thread) = keeper(&dir, Duration::from_millis(300));
        let (link, _) = Link::connect(&path).unwrap();
        let (shake, mut child, _peer) = vm();
        link.keep(&shake).unwrap();
        drop((link, shake));
        ended(thread).unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_live_keeper_is_not_replaced() {
        let dir = Dir::new("uffd-keeper");
        let (path, thread) = keeper(&dir, Duration::from_millis(300));
        let second = run(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(second, Error::Sys { errno: Errno::EADDRINUSE, .. }), "{second}");
        ended(thread).unwrap(); // no server came within its grace
    }
}
