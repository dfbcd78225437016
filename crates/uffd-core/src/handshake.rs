//! Receiving a userfaultfd from another process over a Unix socket, in the shape Firecracker's
//! snapshot restore sends it: one message whose body is a JSON array of the guest memory ranges
//! (`base_host_virt_addr`, `size`, `offset`, and the page size in bytes as `page_size`, the older
//! `page_size_kib`, both or neither) and whose SCM_RIGHTS control data carries the uffd. The
//! peer's credentials come from SO_PEERCRED.

use crate::cancel::{Cancel, Stop, Waited};
use crate::error::{Error, Result};
use crate::region::base_page_size;
use crate::region::RemoteRange;
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use serde::Deserialize;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

const OP: &str = "handshake";
/// The most JSON a handshake may carry: a VM with thousands of memory slots stays far below it.
pub(crate) const MAX_BODY: usize = 1 << 20;

/// A guest memory range as Firecracker describes it. Its releases give the page size in three
/// ways, always in bytes: 1.12 and later send `page_size` and the deprecated `page_size_kib`
/// (which has always held bytes despite its name: Firecracker's CHANGELOG, #4948); 1.7 to 1.11
/// send only `page_size_kib`; 1.0 to 1.6 send neither, and their pages are the base page size.
/// Fields a later release adds are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct GuestRegionUffdMapping {
    base_host_virt_addr: u64,
    size: u64,
    offset: u64,
    #[serde(default)]
    page_size: Option<u64>,
    #[serde(default)]
    page_size_kib: Option<u64>,
}

/// A range of the peer's memory, and where its bytes start in the peer's snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRange {
    pub range: RemoteRange,
    pub offset: u64,
}

/// The process at the other end of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// The process at the other end of a connection, held by a pidfd taken as it connected: a signal
/// sent through it reaches that process or none, never another that was given its pid since.
#[derive(Debug)]
pub struct PeerProcess {
    pidfd: OwnedFd,
}

/// SO_PEERPIDFD (Linux 6.5): a pidfd of the process that connected, taken at its connect(2).
const SO_PEERPIDFD: libc::c_int = 77;

impl PeerProcess {
    /// The pidfd of the peer of `stream`: SO_PEERPIDFD where the kernel has it, else
    /// pidfd_open(2) of the pid SO_PEERCRED gave (`pid`), which is that process unless it exited
    /// in between. None if it has exited already (or pidfds are not there).
    pub fn of(stream: &UnixStream, pid: i32) -> Option<PeerProcess> {
        let mut fd: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `fd`, an int that lives through the
        // call; the socket is borrowed and open.
        let got = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERPIDFD,
                (&mut fd as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if got == 0 && fd >= 0 {
            // SAFETY: SO_PEERPIDFD gave this process a new pidfd that nothing else owns.
            return Some(PeerProcess { pidfd: unsafe { OwnedFd::from_raw_fd(fd) } });
        }
        if got == 0 || Errno::last() == Errno::ESRCH || pid <= 0 {
            return None;
        }
        // SAFETY: pidfd_open(2) reads no memory of ours; it returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        // SAFETY: a non-negative result is a new pidfd that nothing else owns.
        (fd >= 0).then(|| PeerProcess { pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) } })
    }

    /// The process a pidfd this process was given refers to (a keeper hands them back).
    pub fn from_pidfd(pidfd: OwnedFd) -> PeerProcess {
        PeerProcess { pidfd }
    }

    /// The pidfd, to hand to a keeper.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Whether the process has exited (its pidfd polls readable then).
    pub fn exited(&self) -> bool {
        let mut fds = [libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        // SAFETY: one pollfd that lives through the call; poll(2) writes only its `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        ready > 0 && fds[0].revents != 0
    }

    /// Sends `signal` to the process: true if it was sent, false if the process had exited.
    pub fn signal(&self, signal: i32) -> Result<bool> {
        if self.exited() {
            return Ok(false);
        }
        // SAFETY: pidfd_send_signal(2) with no siginfo reads no memory of ours; the pidfd is open.
        let sent = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, self.pidfd.as_raw_fd(), signal, std::ptr::null::<u8>(), 0)
        };
        if sent == 0 {
            return Ok(true);
        }
        match Errno::last() {
            Errno::ESRCH => Ok(false),
            errno => Err(Error::sys("pidfd_send_signal", errno, format!("signal {signal} to the peer"))),
        }
    }
}

/// What a handshake delivers.
pub struct Handshake {
    pub uffd: OwnedFd,
    pub ranges: Vec<HandshakeRange>,
    pub peer: Peer,
    /// The peer's process, to stop it by (None if it had exited when it was accepted).
    pub process: Option<PeerProcess>,
    /// The connection, kept open: its hang-up says the peer is gone.
    pub stream: OwnedFd,
}

/// Binds a listening Unix socket at `path`. A socket file there that nobody listens on (a server
/// that died left it) is replaced; one a live server listens on, or anything that is not a
/// socket, is refused and left as it is.
pub fn listen(path: &str) -> Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    let folder = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = folder {
        match std::fs::metadata(folder) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::sys("bind", Errno::ENOTDIR, path.to_string())
                    .with_advice(format!("{} is not a folder", folder.display())))
            }
            Err(_) => {
                return Err(Error::sys("bind", Errno::ENOENT, path.to_string())
                    .with_advice(format!("the folder {} does not exist: make it first", folder.display())))
            }
        }
    }
    if let Ok(existing) = std::fs::symlink_metadata(path) {
        if !existing.file_type().is_socket() {
            let kind = if existing.is_dir() { "a folder" } else { "a file that is not a socket" };
            return Err(Error::sys("bind", Errno::EEXIST, path.to_string())
                .with_advice(format!("{path} is {kind}: it was left as it is; remove it or choose another path")));
        }
        match probe_listener(path) {
            // Someone listens (EAGAIN: its backlog is full, it is there all the same).
            Ok(()) | Err(Errno::EAGAIN) => {
                return Err(Error::sys("bind", Errno::EADDRINUSE, path.to_string()).with_advice(
                    "another server is listening on this socket: it was left as it is; stop it first or choose another path",
                ))
            }
            // Nobody listens: a stale socket file, replaced.
            Err(Errno::ECONNREFUSED) => {
                let _ = std::fs::remove_file(path);
            }
            Err(errno) => return Err(Error::sys("connect", errno, format!("the socket {path} found there"))),
        }
    }
    UnixListener::bind(path).map_err(|e| io_error("bind", e, path))
}

/// Connects to the socket at `path` without waiting: a Unix socket's connect(2) blocks while the
/// listener's backlog is full, and a hung server's may be.
fn probe_listener(path: &str) -> std::result::Result<(), Errno> {
    let probe = socket::socket(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        socket::SockFlag::SOCK_NONBLOCK | socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let address = socket::UnixAddr::new(path)?;
    socket::connect(probe.as_raw_fd(), &address)
}

/// A listening socket this process was given as `fd` (systemd's socket activation, `LISTEN_FDS`):
/// refused unless it is a Unix stream socket that listens.
pub fn listener_of(fd: OwnedFd) -> Result<UnixListener> {
    let what = format!("fd {}", fd.as_raw_fd());
    let domain =
        socket::getsockopt(&fd, sockopt::SockType).map_err(|errno| Error::sys("getsockopt", errno, what.clone()))?;
    let listening =
        socket::getsockopt(&fd, sockopt::AcceptConn).map_err(|errno| Error::sys("getsockopt", errno, what.clone()))?;
    let local = socket::getsockname::<socket::UnixAddr>(fd.as_raw_fd()).ok();
    if domain != socket::SockType::Stream || local.is_none() || !listening {
        return Err(Error::invalid(
            "listen",
            format!("{what} is not a listening Unix stream socket (give systemd a ListenStream= of a path)"),
        ));
    }
    Ok(UnixListener::from(fd))
}

/// A handshake that failed, and who sent it where that is known: a handler that cannot serve a
/// peer stops it (a VM monitor waits for its handler otherwise).
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub peer: Option<Peer>,
    /// The peer's process where `peer` is named, to stop it by.
    pub process: Option<PeerProcess>,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Self {
        Refusal { error, peer: None, process: None }
    }
}

/// Receives a handshake on a connected Unix stream socket (blocking until it is complete).
pub fn receive(stream: OwnedFd) -> std::result::Result<Handshake, Refusal> {
    let stream = UnixStream::from(stream);
    let creds: UnixCredentials = socket::getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|errno| Error::sys("getsockopt", errno, "SO_PEERCRED"))?;
    let peer = Peer { pid: creds.pid(), uid: creds.uid(), gid: creds.gid() };
    let process = PeerProcess::of(&stream, peer.pid);
    match read_handshake(stream, peer) {
        Ok(shake) => Ok(Handshake { process, ..shake }),
        Err(error) => Err(Refusal { error, peer: Some(peer), process }),
    }
}

fn read_handshake(stream: UnixStream, peer: Peer) -> Result<Handshake> {
    let mut body = Vec::new();
    let mut uffd: Option<OwnedFd> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let message = socket::recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
            .map_err(|errno| Error::sys("recvmsg", errno, "reading the handshake"))?;
        let read = message.bytes;
        for cmsg in message.cmsgs().map_err(|errno| Error::sys("recvmsg", errno, "reading control data"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: SCM_RIGHTS gave this process a fresh fd that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    // Keep the first; any extra fd is closed as it drops.
                    if uffd.is_none() {
                        uffd = Some(fd);
                    }
                }
            }
        }
        body.extend_from_slice(&chunk[..read]);
        // Read on only while the JSON is incomplete: a complete or broken body is all there is.
        if read == 0 || complete(&body) {
            break;
        }
        if body.len() > MAX_BODY {
            return Err(Error::invalid(OP, format!("the handshake body exceeds {MAX_BODY} bytes")));
        }
    }
    let ranges = parse_ranges(&body)?;
    let uffd = uffd.ok_or_else(|| Error::invalid(OP, "the handshake carried no file descriptor (SCM_RIGHTS)"))?;
    ensure_userfaultfd(&uffd)?;
    Ok(Handshake { uffd, ranges, peer, process: None, stream: stream.into() })
}

/// Refuses an fd that is not a userfaultfd (a pipe, a file, a socket sent by mistake or by a
/// confused peer): serving it would leave the peer's faults waiting for good. Its kind comes from
/// /proc/self/fd (`anon_inode:[userfaultfd]`); without /proc it is not checked.
pub fn ensure_userfaultfd(fd: &OwnedFd) -> Result<()> {
    let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else {
        return Ok(());
    };
    let kind = link.to_string_lossy();
    if kind == "anon_inode:[userfaultfd]" {
        return Ok(());
    }
    Err(Error::invalid(OP, format!("the file descriptor sent is not a userfaultfd: it is {kind}")))
}

/// Whether `body` is all of a handshake: the JSON is complete, or broken (all there is to read).
pub(crate) fn complete(body: &[u8]) -> bool {
    !serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err_and(|e| e.is_eof())
}

/// The error of an accept on a closed listener, as accept(2) gives it once shut down.
pub const LISTENER_CLOSED: Error = Error::Closed { op: "accept", what: "listener" };

/// How a handshake that could be stopped ended without a userfaultfd.
pub enum Ended {
    Refused(Refusal),
    Stopped(Stop),
}

impl From<Error> for Ended {
    fn from(error: Error) -> Self {
        Ended::Refused(error.into())
    }
}

impl From<Waited> for Ended {
    fn from(waited: Waited) -> Self {
        match waited {
            Waited::Stopped(why) => Ended::Stopped(why),
            Waited::Failed(op, error) => Ended::Refused(io_error(op, error, "the handshake socket").into()),
        }
    }
}

/// Receives the handshake on a connected socket once the peer has sent something, or ends when
/// `cancel` stops it (shutting the socket down if the handshake is being read: its peer is told).
pub fn receive_until(stream: OwnedFd, cancel: &Cancel) -> std::result::Result<Handshake, Ended> {
    let reading = match cancel.wait_readable(stream.as_fd()).and_then(|()| cancel.reading(&stream)) {
        Ok(reading) => reading,
        Err(Waited::Stopped(why)) => {
            // Stopped before the read began (the pool thread came late): a peer that had started
            // to send is told, as one whose read is cut short is; a silent one is left as it was.
            if has_bytes(&stream) {
                let _ = socket::shutdown(stream.as_raw_fd(), socket::Shutdown::Both);
            }
            return Err(Ended::Stopped(why));
        }
        Err(failed) => return Err(failed.into()),
    };
    let received = receive(stream);
    drop(reading);
    // Stopped while reading: what came is dropped (its fds closed); nobody waits for it.
    if let Some(why) = cancel.stopped() {
        return Err(Ended::Stopped(why));
    }
    received.map_err(Ended::Refused)
}

/// Whether the peer has sent bytes not read yet (peeked, not taken).
fn has_bytes(stream: &OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(socket::recv(stream.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Ok(n) if n > 0)
}

/// Parses and checks the JSON body of a handshake.
pub fn parse_ranges(body: &[u8]) -> Result<Vec<HandshakeRange>> {
    if body.is_empty() {
        return Err(Error::invalid(OP, "the peer closed the connection before sending the handshake"));
    }
    let mappings: Vec<GuestRegionUffdMapping> = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(OP, format!("the handshake is not a JSON array of memory ranges: {e}")))?;
    if mappings.is_empty() {
        return Err(Error::invalid(OP, "the handshake lists no memory range"));
    }
    let to_usize = |value: u64, what: &str| {
        usize::try_from(value).map_err(|_| Error::invalid(OP, format!("{what} {value} does not fit in an address")))
    };
    let ranges = mappings
        .iter()
        .map(|m| {
            // `page_size` wins over `page_size_kib` when both are there; both are bytes.
            let (page_size, field) = match (m.page_size, m.page_size_kib) {
                (Some(bytes), _) => (bytes, "page_size"),
                (None, Some(bytes)) => (bytes, "page_size_kib"),
                (None, None) => (base_page_size() as u64, "the base page size"),
            };
            let address = to_usize(m.base_host_virt_addr, "base_host_virt_addr")?;
            let length = to_usize(m.size, "size")?;
            let page_size = to_usize(page_size, field)?;
            if !page_size.is_power_of_two() || page_size < 4096 {
                // A sender that meant KiB in page_size_kib (4 for 4 KiB) learns how it is read.
                let bytes =
                    if field == "page_size_kib" { " (page_size_kib is bytes, as Firecracker sends it)" } else { "" };
                return Err(Error::invalid(
                    OP,
                    format!("page size {page_size} is not a power of two of at least 4096{bytes}"),
                ));
            }
            if length == 0 || length % page_size != 0 || address % page_size != 0 {
                return Err(Error::invalid(
                    OP,
                    format!("range {address:#x}+{length} is empty or not aligned to {page_size}"),
                ));
            }
            if address == 0 {
                return Err(Error::invalid(OP, "a range cannot start at address 0"));
            }
            if address.checked_add(length).is_none_or(|end| end > isize::MAX as usize)
                || m.offset.checked_add(m.size).is_none()
            {
                return Err(Error::invalid(OP, format!("range {address:#x}+{length} overflows")));
            }
            Ok(HandshakeRange { range: RemoteRange { address, length, page_size }, offset: m.offset })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut sorted: Vec<&HandshakeRange> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.range.address);
    for pair in sorted.windows(2) {
        if pair[0].range.address + pair[0].range.length > pair[1].range.address {
            return Err(Error::invalid(
                OP,
                format!("ranges at {:#x} and {:#x} overlap", pair[0].range.address, pair[1].range.address),
            ));
        }
    }
    Ok(ranges)
}

/// Stops a listener: a thread blocked in `accept` on it returns with an error.
pub fn stop_listening(listener: &UnixListener) {
    // Closing would not wake a blocked accept(2); shutting the socket down does.
    let _ = socket::shutdown(listener.as_raw_fd(), socket::Shutdown::Both);
}

/// A duplicate of an fd the caller holds (from JavaScript), which stays the caller's.
pub fn duplicate(fd: i32) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(Error::invalid("dup", format!("{fd} is not a file descriptor")));
    }
    // SAFETY: the fd is only borrowed for the duration of the dup; an fd that is not open makes
    // the dup fail with EBADF rather than touch anything.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    borrowed.try_clone_to_owned().map_err(|e| io_error("dup", e, &format!("fd {fd}")))
}

fn io_error(op: &'static str, error: std::io::Error, what: &str) -> Error {
    Error::sys(op, Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)), what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bodies Firecracker sends, by release (see `__test__/fixtures/README.md`).
    const FIRECRACKER_BODIES: &str = include_str!("../../../__test__/fixtures/firecracker-handshakes.json");

    /// The body of `release` in the fixture, as Firecracker sends it.
    fn firecracker_body(release: &str) -> Vec<u8> {
        let bodies: serde_json::Value = serde_json::from_str(FIRECRACKER_BODIES).unwrap();
        serde_json::to_vec(&bodies[release]).unwrap()
    }

    fn range(address: usize, length: usize, page_size: usize, offset: u64) -> HandshakeRange {
        HandshakeRange { range: RemoteRange { address, length, page_size }, offset }
    }

    #[test]
    fn every_firecracker_release_body_is_accepted_with_its_page_size_in_bytes() {
        const GIB: usize = 1 << 30;
        let base = base_page_size();
        let expected: &[(&str, Vec<HandshakeRange>)] = &[
            // page_size and page_size_kib, both 4096 bytes.
            ("1.12+", vec![range(0x7f67_7800_0000, GIB, 4096, 0)]),
            // page_size_kib alone: 4096 is bytes, not 4 MiB.
            ("1.7-1.11", vec![range(0x7f67_7800_0000, GIB, 4096, 0)]),
            // No page size at all: the base page size.
            ("1.0-1.6", vec![range(0x7f67_7800_0000, GIB, base, 0)]),
            ("1.12+ with 2 MiB huge pages", vec![range(0x7f67_77e0_0000, GIB, 2 << 20, 0)]),
            (
                "two regions (a guest over the 32-bit gap)",
                vec![range(0x7f25_b956_f000, 3 * GIB, 4096, 0), range(0x7f28_0d62_d000, GIB, 4096, 3 << 30)],
            ),
        ];
        let bodies: serde_json::Value = serde_json::from_str(FIRECRACKER_BODIES).unwrap();
        let releases: Vec<&String> = bodies.as_object().unwrap().keys().filter(|k| *k != "about").collect();
        assert_eq!(releases.len(), expected.len(), "a body of the fixture has no expectation here: {releases:?}");
        for (release, ranges) in expected {
            let parsed = parse_ranges(&firecracker_body(release));
            assert_eq!(parsed.as_ref().ok(), Some(ranges), "{release}: {parsed:?}");
        }
    }

    #[test]
    fn a_peer_process_is_signalled_through_its_pidfd_until_it_has_exited() {
        let path = std::env::temp_dir().join(format!("uffd-peer-process-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        // A child connects and lives until told: its pidfd comes with the connection.
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); sys.stdin.read()",
            ])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        let creds = socket::getsockopt(&stream, sockopt::PeerCredentials).unwrap();
        assert_eq!(creds.pid() as u32, child.id());
        let process = PeerProcess::of(&stream, creds.pid()).expect("a pidfd of a live peer");
        assert!(!process.exited());
        assert!(process.signal(0).unwrap(), "a signal reaches it while it lives");
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(process.exited());
        assert!(!process.signal(libc::SIGKILL).unwrap(), "once it has exited (and been reaped), nothing is sent");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn page_size_wins_when_the_two_fields_differ() {
        let body =
            br#"[{"base_host_virt_addr":2097152,"size":2097152,"offset":0,"page_size":2097152,"page_size_kib":2048}]"#;
        assert_eq!(parse_ranges(body).unwrap(), vec![range(2 << 20, 2 << 20, 2 << 20, 0)]);
        let body = br#"[{"base_host_virt_addr":8192,"size":8192,"offset":4096,"page_size":4096,"page_size_kib":4}]"#;
        assert_eq!(parse_ranges(body).unwrap(), vec![range(8192, 8192, 4096, 4096)]);
    }

    #[test]
    fn fields_a_later_firecracker_adds_are_ignored() {
        let mut bodies: serde_json::Value = serde_json::from_str(FIRECRACKER_BODIES).unwrap();
        let region = &mut bodies["1.12+"][0];
        region["backing"] = serde_json::json!({ "kind": "memfd", "slots": [1, 2, { "deep": null }] });
        region["hotpluggable"] = serde_json::json!(true);
        let ranges = parse_ranges(&serde_json::to_vec(&bodies["1.12+"]).unwrap()).unwrap();
        assert_eq!(ranges, vec![range(0x7f67_7800_0000, 1 << 30, 4096, 0)]);
    }

    #[test]
    fn malformed_handshakes_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "closed the connection"),
            (b"{not json", "not a JSON array"),
            (b"[]", "no memory range"),
            (br#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096}]"#, "address 0"),
            // page_size_kib is bytes: 4 is not a page size (and the message says how it was read).
            (br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size_kib":4}]"#, "page_size_kib is bytes"),
            (br#"[{"base_host_virt_addr":2097152,"size":4096,"offset":0,"page_size_kib":2097152}]"#, "not aligned"),
            (br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":"4096"}]"#, "not a JSON array"),
            (br#"[{"base_host_virt_addr":4096,"base_host_virt_addr":8192,"size":4096,"offset":0}]"#, "duplicate field"),
            (br#"[{"size":4096,"offset":0,"page_size":4096}]"#, "missing field"),
            (br#"[{"base_host_virt_addr":4096,"size":100,"offset":0,"page_size":4096}]"#, "not aligned"),
            (br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":3000}]"#, "power of two"),
            (br#"[{"base_host_virt_addr":18446744073709547520,"size":8192,"offset":0,"page_size":4096}]"#, "overflows"),
            (
                br#"[{"base_host_virt_addr":4096,"size":8192,"offset":0,"page_size":4096},
                     {"base_host_virt_addr":8192,"size":4096,"offset":0,"page_size":4096}]"#,
                "overlap",
            ),
        ];
        for (body, reason) in cases {
            let message = parse_ranges(body).unwrap_err().to_string();
            assert!(message.contains(reason), "{:?}: {message}", String::from_utf8_lossy(body));
        }
    }
}
