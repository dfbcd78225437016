//! One safe function per userfaultfd ioctl we issue, and the opening of the fd.
//!
//! The `userfaultfd` crate issues REGISTER, UNREGISTER, WAKE, ZEROPAGE and WRITEPROTECT. We issue
//! API, COPY, CONTINUE, POISON and MOVE ourselves: the crate hides what UFFDIO_API returns (the
//! feature set the kernel offers), misreads a negative `copy` field as a huge partial copy, has no
//! CONTINUE_MODE_WP, and has no POISON or MOVE. PAGEMAP_SCAN is a /proc ioctl, not a uffd one.
//! Every function here passes the kernel a pointer to a stack struct of the layout it expects;
//! the kernel checks that the ranges lie in memory registered with this fd.
//! See ioctl_userfaultfd(2) and `Documentation/admin-guide/mm/userfaultfd.rst`.

use crate::error::{Error, Result};
use crate::sys::uapi::{
    self, PmScanArg, UffdioApi, UffdioContinue, UffdioCopy, UffdioMove, UffdioPoison, UffdioRange, UffdioZeropage,
};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use userfaultfd::{RegisterMode, Uffd};

mod raw {
    use crate::sys::uapi::{
        PmScanArg, UffdioApi, UffdioContinue, UffdioCopy, UffdioMove, UffdioPoison, UffdioZeropage,
    };
    nix::ioctl_readwrite!(api, 0xAA, 0x3F, UffdioApi);
    nix::ioctl_readwrite!(copy, 0xAA, 0x03, UffdioCopy);
    nix::ioctl_readwrite!(zeropage, 0xAA, 0x04, UffdioZeropage);
    nix::ioctl_readwrite!(r#move, 0xAA, 0x05, UffdioMove);
    nix::ioctl_readwrite!(r#continue, 0xAA, 0x07, UffdioContinue);
    nix::ioctl_readwrite!(poison, 0xAA, 0x08, UffdioPoison);
    nix::ioctl_readwrite!(pagemap_scan, b'f', 16, PmScanArg);
    nix::ioctl_write_int_bad!(new_uffd, nix::request_code_none!(0xAA, 0x00));
}

/// How the fd was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedVia {
    Device,
    Syscall,
}

/// Opens a userfaultfd: through `/dev/userfaultfd` first (its permissions are the admin's grant),
/// then through the `userfaultfd(2)` syscall when the device is missing or refused.
pub fn open(flags: i32) -> Result<(OwnedFd, OpenedVia)> {
    let device_errno = match open_via_device(flags) {
        Ok(fd) => return Ok((fd, OpenedVia::Device)),
        Err(errno) => errno,
    };
    match open_via_syscall(flags) {
        Ok(fd) => Ok((fd, OpenedVia::Syscall)),
        // The syscall's errno explains more than the device's unless the syscall is missing.
        Err(Errno::ENOSYS) if device_errno != Errno::ENOENT => {
            Err(Error::sys("open", device_errno, "/dev/userfaultfd refused and the userfaultfd syscall is missing"))
        }
        Err(errno) => Err(Error::sys("open", errno, "")),
    }
}

fn open_via_device(flags: i32) -> std::result::Result<OwnedFd, Errno> {
    let device = nix::fcntl::open(
        "/dev/userfaultfd",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `open` returned a fresh fd that nothing else owns.
    let device = unsafe { OwnedFd::from_raw_fd(device) };
    // SAFETY: USERFAULTFD_IOC_NEW takes the syscall's flags as its integer argument and returns
    // a new fd; the device fd is valid for the call.
    let fd = unsafe { raw::new_uffd(device.as_raw_fd(), flags) }?;
    // SAFETY: the ioctl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_via_syscall(flags: i32) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: userfaultfd(2) takes one integer of flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags as libc::c_long) };
    let fd = Errno::result(fd)? as RawFd;
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// UFFDIO_API: enables `features` on a fresh fd and returns what the kernel offers.
/// `features` 0 only asks; a second call on the same fd fails with EINVAL.
pub fn api(fd: &impl AsRawFd, features: u64) -> Result<UffdioApi> {
    let mut api = UffdioApi { api: uapi::UFFD_API, features, ioctls: 0 };
    // SAFETY: `api` is a live uffdio_api the kernel reads and writes back.
    unsafe { raw::api(fd.as_raw_fd(), &mut api) }.map_err(|errno| Error::sys("UFFDIO_API", errno, ""))?;
    Ok(api)
}

/// UFFDIO_REGISTER: returns the mask of ioctls the kernel allows on the range.
pub fn register(uffd: &Uffd, start: usize, len: usize, mode: RegisterMode) -> Result<u64> {
    uffd.register_with_mode(start as *mut libc::c_void, len, mode)
        .map(|ioctls| ioctls.bits())
        .map_err(|e| Error::sys("UFFDIO_REGISTER", crate_errno(&e), ""))
}

/// UFFDIO_UNREGISTER: the kernel wakes every thread waiting in the range.
pub fn unregister(uffd: &Uffd, start: usize, len: usize) -> Result<()> {
    uffd.unregister(start as *mut libc::c_void, len).map_err(|e| Error::sys("UFFDIO_UNREGISTER", crate_errno(&e), ""))
}

/// UFFDIO_WAKE: wakes the threads waiting on faults in the range.
pub fn wake(uffd: &Uffd, start: usize, len: usize) -> Result<()> {
    uffd.wake(start as *mut libc::c_void, len).map_err(|e| Error::sys("UFFDIO_WAKE", crate_errno(&e), ""))
}

/// UFFDIO_COPY of `src` to `dst`; returns the bytes mapped, which are fewer than `src.len()` when
/// the kernel stopped early (EAGAIN with a positive count).
pub fn copy(uffd: &Uffd, dst: usize, src: &[u8], mode: u64) -> Result<usize> {
    let mut copy = UffdioCopy { dst: dst as u64, src: src.as_ptr() as u64, len: src.len() as u64, mode, copy: 0 };
    // SAFETY: `copy` is a live uffdio_copy; its source is `src`, valid for `src.len()` bytes for
    // the whole call.
    let result = unsafe { raw::copy(uffd.as_raw_fd(), &mut copy) };
    counted("UFFDIO_COPY", result.map(drop), copy.copy)
}

/// UFFDIO_ZEROPAGE over the range; returns the bytes mapped.
pub fn zeropage(uffd: &Uffd, start: usize, len: usize, wake: bool) -> Result<usize> {
    // SAFETY: the crate passes a live uffdio_zeropage; the kernel only maps zero pages into a
    // range registered with this fd, which it checks.
    unsafe { uffd.zeropage(start as *mut libc::c_void, len, wake) }
        .map_err(|e| Error::sys("UFFDIO_ZEROPAGE", crate_errno(&e), ""))
}

/// Whether the kernel has a non-cooperative event of this fd in progress (a fork, say, waiting for
/// its event to be read): a UFFDIO_ZEROPAGE of no bytes fails with EAGAIN then, EINVAL otherwise.
pub fn event_in_progress(uffd: &Uffd) -> Result<bool> {
    let mut request = UffdioZeropage { range: UffdioRange { start: 0, len: 0 }, mode: 0, zeropage: 0 };
    // SAFETY: `request` is a live uffdio_zeropage; with no bytes the kernel maps nothing.
    let result = unsafe { raw::zeropage(uffd.as_raw_fd(), &mut request) };
    Ok(matches!(result, Err(Errno::EAGAIN)) || request.zeropage == -(libc::EAGAIN as i64))
}

/// UFFDIO_CONTINUE over the range: maps the pages already in the page cache; returns bytes mapped.
pub fn r#continue(uffd: &Uffd, start: usize, len: usize, mode: u64) -> Result<usize> {
    let mut request = UffdioContinue { range: UffdioRange { start: start as u64, len: len as u64 }, mode, mapped: 0 };
    // SAFETY: `request` is a live uffdio_continue the kernel reads and writes back.
    let result = unsafe { raw::r#continue(uffd.as_raw_fd(), &mut request) };
    counted("UFFDIO_CONTINUE", result.map(drop), request.mapped)
}

/// UFFDIO_WRITEPROTECT: protects the range, or removes the protection (waking waiters unless told not to).
pub fn write_protect(uffd: &Uffd, start: usize, len: usize, protect: bool, wake: bool) -> Result<()> {
    let result = if protect {
        uffd.write_protect(start as *mut libc::c_void, len)
    } else {
        uffd.remove_write_protection(start as *mut libc::c_void, len, wake)
    };
    result.map_err(|e| Error::sys("UFFDIO_WRITEPROTECT", crate_errno(&e), ""))
}

/// UFFDIO_MOVE of `len` bytes from `src` to `dst` (anonymous memory, no copy); returns bytes moved.
pub fn r#move(uffd: &Uffd, dst: usize, src: usize, len: usize, mode: u64) -> Result<usize> {
    let mut request = UffdioMove { dst: dst as u64, src: src as u64, len: len as u64, mode, moved: 0 };
    // SAFETY: `request` is a live uffdio_move the kernel reads and writes back; the kernel checks
    // that both ranges are mapped in the fd's address space.
    let result = unsafe { raw::r#move(uffd.as_raw_fd(), &mut request) };
    counted("UFFDIO_MOVE", result.map(drop), request.moved)
}

/// PAGEMAP_SCAN on an open /proc/PID/pagemap: fills `out` with page regions matching `arg`'s
/// masks and returns how many it filled; `arg.walk_end` says where the walk stopped.
pub fn pagemap_scan(pagemap: &impl AsRawFd, arg: &mut PmScanArg, out: &mut [uapi::PageRegion]) -> Result<usize> {
    arg.size = std::mem::size_of::<PmScanArg>() as u64;
    arg.vec = out.as_mut_ptr() as u64;
    arg.vec_len = out.len() as u64;
    // SAFETY: `arg` is a live pm_scan_arg whose vec points at `out`, valid for `vec_len` records.
    let filled = unsafe { raw::pagemap_scan(pagemap.as_raw_fd(), arg) }
        .map_err(|errno| Error::sys("PAGEMAP_SCAN", errno, ""))?;
    Ok(filled as usize)
}

/// UFFDIO_POISON over the range: a later access raises SIGBUS. Returns the bytes poisoned.
pub fn poison(uffd: &Uffd, start: usize, len: usize, mode: u64) -> Result<usize> {
    let mut poison = UffdioPoison { range: UffdioRange { start: start as u64, len: len as u64 }, mode, updated: 0 };
    // SAFETY: `poison` is a live uffdio_poison the kernel reads and writes back.
    let result = unsafe { raw::poison(uffd.as_raw_fd(), &mut poison) };
    counted("UFFDIO_POISON", result.map(drop), poison.updated)
}

/// Reads the count field of a resolving ioctl: a negative count is -errno, a short positive
/// count with EAGAIN is a partial success.
fn counted(op: &'static str, result: nix::Result<()>, count: i64) -> Result<usize> {
    match result {
        _ if count < 0 => Err(Error::sys(op, Errno::from_raw(-count as i32), "")),
        Ok(()) => Ok(count as usize),
        Err(Errno::EAGAIN) if count > 0 => Ok(count as usize),
        Err(errno) => Err(Error::sys(op, errno, "")),
    }
}

/// Wraps an owned userfaultfd in the crate's type, which closes it on drop.
pub fn adopt(fd: OwnedFd) -> Uffd {
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd is a userfaultfd we own; ownership passes to the Uffd.
    unsafe { Uffd::from_raw_fd(fd.into_raw_fd()) }
}

/// The errno inside an error of the `userfaultfd` crate.
pub fn crate_errno(error: &userfaultfd::Error) -> Errno {
    use userfaultfd::Error as E;
    match error {
        // The crate links an older nix whose Errno is another type with the same numbers.
        E::CopyFailed(errno) | E::ZeropageFailed(errno) | E::SystemError(errno) => Errno::from_raw(*errno as i32),
        E::PartiallyCopied(_) => Errno::EAGAIN,
        E::OpenDevUserfaultfd(io) => Errno::from_raw(io.raw_os_error().unwrap_or(libc::EIO)),
        _ => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_reads_negative_counts_as_errno() {
        let err = counted("UFFDIO_COPY", Err(Errno::EAGAIN), -(libc::EAGAIN as i64)).unwrap_err();
        assert_eq!(err.code(), "EAGAIN");
        let err = counted("UFFDIO_COPY", Err(Errno::EEXIST), -(libc::EEXIST as i64)).unwrap_err();
        assert_eq!(err.code(), "EEXIST");
        assert_eq!(counted("UFFDIO_COPY", Err(Errno::EAGAIN), 8192).unwrap(), 8192);
        assert_eq!(counted("UFFDIO_COPY", Ok(()), 4096).unwrap(), 4096);
    }

    #[test]
    fn api_reports_features_on_a_fresh_fd_and_refuses_a_second_call() {
        let (fd, _) = open(libc::O_CLOEXEC | libc::O_NONBLOCK).expect("open userfaultfd");
        let offered = api(&fd, 0).expect("UFFDIO_API");
        assert_eq!(offered.api, uapi::UFFD_API);
        assert!(offered.features & uapi::FEATURE_THREAD_ID != 0);
        let again = api(&fd, 0).unwrap_err();
        assert_eq!(again.code(), "EINVAL");
    }
}
