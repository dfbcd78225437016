//! Receiving a userfaultfd from another process over a Unix socket, in the shape Firecracker's
//! snapshot restore sends it: one message whose body is a JSON array of the guest memory ranges
//! (`base_host_virt_addr`, `size`, `offset`, `page_size` or the older `page_size_kib`) and whose
//! SCM_RIGHTS control data carries the uffd. The peer's credentials come from SO_PEERCRED.

use crate::error::{Error, Result};
use crate::userfaultfd::RemoteRange;
use nix::errno::Errno;
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use serde::Deserialize;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

const OP: &str = "handshake";
/// The most JSON a handshake may carry: a VM with thousands of memory slots stays far below it.
const MAX_BODY: usize = 1 << 20;

/// A guest memory range as Firecracker describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// What a handshake delivers.
pub struct Handshake {
    pub uffd: OwnedFd,
    pub ranges: Vec<HandshakeRange>,
    pub peer: Peer,
    /// The connection, kept open: its hang-up says the peer is gone.
    pub stream: OwnedFd,
}

/// Binds a listening Unix socket at `path` (replacing a stale socket file).
pub fn listen(path: &str) -> Result<UnixListener> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    }) {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| io_error("bind", e, path))
}

/// Accepts one connection and receives its handshake.
pub fn accept(listener: &UnixListener) -> Result<Handshake> {
    let (stream, _) = listener.accept().map_err(|e| match e.raw_os_error() {
        // What accept(2) says once stop_listening() has shut the socket down.
        Some(libc::EINVAL) => Error::Closed { op: "accept", what: "listener" },
        _ => io_error("accept", e, "the handshake socket"),
    })?;
    receive(stream.into())
}

/// Receives a handshake on a connected Unix stream socket (blocking until it is complete).
pub fn receive(stream: OwnedFd) -> Result<Handshake> {
    let stream = UnixStream::from(stream);
    let creds: UnixCredentials = socket::getsockopt(&stream, sockopt::PeerCredentials)
        .map_err(|errno| Error::sys("getsockopt", errno, "SO_PEERCRED"))?;
    let peer = Peer { pid: creds.pid(), uid: creds.uid(), gid: creds.gid() };
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
        let incomplete = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err_and(|e| e.is_eof());
        if read == 0 || !incomplete {
            break;
        }
        if body.len() > MAX_BODY {
            return Err(Error::invalid(OP, format!("the handshake body exceeds {MAX_BODY} bytes")));
        }
    }
    let ranges = parse_ranges(&body)?;
    let uffd = uffd.ok_or_else(|| Error::invalid(OP, "the handshake carried no file descriptor (SCM_RIGHTS)"))?;
    Ok(Handshake { uffd, ranges, peer, stream: stream.into() })
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
            let kib = m
                .page_size_kib
                .map(|kib| kib.checked_mul(1024).ok_or_else(|| Error::invalid(OP, "page_size_kib overflows")))
                .transpose()?;
            let page_size = match (m.page_size, kib) {
                (Some(bytes), Some(from_kib)) if bytes != from_kib => {
                    return Err(Error::invalid(
                        OP,
                        format!("page_size {bytes} and page_size_kib {} disagree", from_kib / 1024),
                    ))
                }
                (Some(bytes), _) => bytes,
                (None, Some(from_kib)) => from_kib,
                (None, None) => return Err(Error::invalid(OP, "a range has neither page_size nor page_size_kib")),
            };
            let address = to_usize(m.base_host_virt_addr, "base_host_virt_addr")?;
            let length = to_usize(m.size, "size")?;
            let page_size = to_usize(page_size, "page_size")?;
            if !page_size.is_power_of_two() || page_size < 4096 {
                return Err(Error::invalid(
                    OP,
                    format!("page size {page_size} is not a power of two of at least 4096"),
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

    #[test]
    fn firecracker_ranges_parse_in_both_page_size_forms() {
        let body = br#"[{"base_host_virt_addr":1048576,"size":8192,"offset":0,"page_size":4096},
                        {"base_host_virt_addr":2097152,"size":4096,"offset":8192,"page_size_kib":4}]"#;
        let ranges = parse_ranges(body).unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].range, RemoteRange { address: 2097152, length: 4096, page_size: 4096 });
        assert_eq!(ranges[1].offset, 8192);
    }

    #[test]
    fn malformed_handshakes_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "closed the connection"),
            (b"{not json", "not a JSON array"),
            (b"[]", "no memory range"),
            (br#"[{"base_host_virt_addr":0,"size":4096,"offset":0,"page_size":4096}]"#, "address 0"),
            (
                br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0,"page_size":4096,"page_size_kib":8}]"#,
                "disagree",
            ),
            (br#"[{"base_host_virt_addr":4096,"size":4096,"offset":0}]"#, "neither page_size"),
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
