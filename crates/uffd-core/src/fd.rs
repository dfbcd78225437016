//! The userfaultfd itself and what was negotiated on it: opening, UFFDIO_API, the features a call
//! needs, reading raw messages, and closing. Every other part reaches the fd through `with_fd`,
//! which fails with EBADF once it is closed.

use crate::error::{Error, Result};
use crate::sys::msg::{Buffer, MSG_SIZE};
use crate::sys::{ioctl, uapi};
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use userfaultfd::Uffd;

/// Features requested whenever the kernel offers them: they add information or abilities and
/// change nothing for a program that does not use them. Events, SIGBUS and WP_ASYNC change
/// behaviour, so they are requested only when asked for.
const WANTED_BY_DEFAULT: u64 = uapi::FEATURE_PAGEFAULT_FLAG_WP
    | uapi::FEATURE_MISSING_HUGETLBFS
    | uapi::FEATURE_MISSING_SHMEM
    | uapi::FEATURE_THREAD_ID
    | uapi::FEATURE_MINOR_HUGETLBFS
    | uapi::FEATURE_MINOR_SHMEM
    | uapi::FEATURE_EXACT_ADDRESS
    | uapi::FEATURE_WP_HUGETLBFS_SHMEM
    | uapi::FEATURE_WP_UNPOPULATED
    | uapi::FEATURE_POISON
    | uapi::FEATURE_MOVE;

/// What the kernel offers, from UFFDIO_API on a throwaway fd.
#[derive(Debug, Clone)]
pub struct Probe {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// What was negotiated on an fd.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub features: u64,
    pub ioctls: u64,
    pub user_mode_only: bool,
}

/// The bits of feature names, or EINVAL naming the unknown one.
pub fn feature_bits(op: &'static str, names: &[String]) -> Result<u64> {
    names.iter().try_fold(0, |bits, name| {
        uapi::feature_bit(name)
            .map(|bit| bits | bit)
            .ok_or_else(|| Error::invalid(op, format!("unknown feature {name:?}")))
    })
}

/// What the kernel offers, asked once per process on a throwaway fd.
pub fn probe() -> Result<Probe> {
    static PROBE: OnceLock<std::result::Result<Probe, (Errno, &'static str)>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
            let (fd, _) = ioctl::open(base)
                .or_else(|_| ioctl::open(base | uapi::UFFD_USER_MODE_ONLY))
                .map_err(|e| (e.errno(), e.op()))?;
            let api = ioctl::api(&fd, 0).map_err(|e| (e.errno(), e.op()))?;
            Ok(Probe { api: api.api, features: api.features, ioctls: api.ioctls })
        })
        .clone()
        .map_err(|(errno, op)| Error::sys(op, errno, "probing userfaultfd"))
}

/// Opens a non-blocking userfaultfd and negotiates the default features and `required` ones.
/// `user_mode_only`: `Some(true)` user-mode faults only; `Some(false)` kernel faults too, or
/// fail; `None` kernel faults too where permitted, else user-mode only.
pub fn open(required: u64, user_mode_only: Option<bool>) -> Result<(OwnedFd, Negotiated)> {
    let offered = probe()?.features;
    let missing = required & !offered;
    if missing != 0 {
        return Err(Error::unsupported(
            "UFFDIO_API",
            format!("this kernel does not offer {}", uapi::names_of(missing, uapi::FEATURES).join(", ")),
        ));
    }
    let requested = (offered & WANTED_BY_DEFAULT) | required;
    let base = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let (fd, user_mode_only) = match user_mode_only {
        Some(true) => (ioctl::open(base | uapi::UFFD_USER_MODE_ONLY)?.0, true),
        Some(false) => (ioctl::open(base)?.0, false),
        None => match ioctl::open(base) {
            Ok((fd, _)) => (fd, false),
            Err(err) if matches!(err.errno(), Errno::EPERM | Errno::EACCES) => {
                (ioctl::open(base | uapi::UFFD_USER_MODE_ONLY).map_err(|_| err)?.0, true)
            }
            Err(err) => return Err(err),
        },
    };
    let api = ioctl::api(&fd, requested)?;
    Ok((fd, Negotiated { features: api.features & requested, ioctls: api.ioctls, user_mode_only }))
}

/// Makes an fd received from elsewhere non-blocking, as every reader here expects.
pub fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map_err(|errno| Error::sys("fcntl", errno, "reading the flags of the adopted fd"))?;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK))
        .map_err(|errno| Error::sys("fcntl", errno, "making the adopted fd non-blocking"))?;
    Ok(())
}

pub struct Fd {
    uffd: RwLock<Option<Uffd>>,
    pub negotiated: Negotiated,
    /// Set by `close()` once it stops every reader.
    closed: AtomicBool,
}

impl Fd {
    pub fn new(fd: OwnedFd, negotiated: Negotiated) -> Fd {
        Fd { uffd: RwLock::new(Some(ioctl::adopt(fd))), negotiated, closed: AtomicBool::new(false) }
    }

    pub fn features(&self) -> u64 {
        self.negotiated.features
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// From now on the fd counts as closed (its readers stop); `release` closes it.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Closes the fd: the kernel wakes every waiting thread and drops every registration.
    pub fn release(&self) {
        drop(self.uffd.write().unwrap_or_else(|p| p.into_inner()).take());
    }

    pub fn with_fd<T>(&self, op: &'static str, f: impl FnOnce(&Uffd) -> Result<T>) -> Result<T> {
        let guard = self.uffd.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(uffd) => f(uffd),
            None => Err(Error::Closed { op, what: "userfaultfd" }),
        }
    }

    /// The fd, borrowed, for as long as `f` runs.
    pub fn with_borrowed<T>(&self, op: &'static str, f: impl FnOnce(BorrowedFd<'_>) -> Result<T>) -> Result<T> {
        self.with_fd(op, |uffd| {
            // SAFETY: the fd stays open while `with_fd` holds its read lock, which outlives `f`.
            f(unsafe { BorrowedFd::borrow_raw(uffd.as_raw_fd()) })
        })
    }

    pub fn check_open(&self, op: &'static str) -> Result<()> {
        if self.is_closed() {
            Err(Error::Closed { op, what: "userfaultfd" })
        } else {
            Ok(())
        }
    }

    pub fn require_feature(&self, op: &'static str, bit: u64, why: &str) -> Result<()> {
        if self.features() & bit != 0 {
            Ok(())
        } else {
            let name = uapi::names_of(bit, uapi::FEATURES).join(", ");
            Err(Error::unsupported(op, format!("{why} needs the {name} feature, which was not negotiated")))
        }
    }

    /// Reads raw messages into `buffer`; returns how many (0 on EAGAIN).
    pub fn read(&self, buffer: &mut Buffer) -> Result<usize> {
        self.with_borrowed("read", |fd| match nix::unistd::read(fd.as_raw_fd(), buffer.bytes_mut()) {
            Ok(read) => Ok(read / MSG_SIZE),
            Err(Errno::EAGAIN) => Ok(0),
            Err(errno) => Err(Error::sys("read", errno, "")),
        })
    }

    /// Whether messages wait to be read (a poll that does not sleep).
    pub fn messages_waiting(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        self.with_borrowed("poll", |fd| {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            Ok(poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
                && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
        })
        .unwrap_or(false)
    }

    /// A second fd of the same userfaultfd, for a thread that reads on its own (the pump).
    pub fn duplicate(&self) -> Result<OwnedFd> {
        self.with_borrowed("dup", |fd| fd.try_clone_to_owned().map_err(|e| Error::sys("dup", errno_of(&e), "")))
    }
}

fn errno_of(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}
