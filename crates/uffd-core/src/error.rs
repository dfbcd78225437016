//! The one error type of the core: what was asked (`op`), the errno where the kernel gave one, and
//! what to do about it. The binding turns it into a JavaScript `UffdError` once, at the boundary.

use nix::errno::Errno;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A system call or ioctl failed.
    #[error("{op} failed with {errno}: {}", hint(op, *errno, detail))]
    Sys { op: &'static str, errno: Errno, detail: String },
    /// An argument is out of range, misaligned or inconsistent; nothing was done.
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// The userfaultfd or the region was closed before the call.
    #[error("{op}: the {what} is closed")]
    Closed { op: &'static str, what: &'static str },
    /// The kernel (or the negotiated feature set) does not offer what was asked.
    #[error("{op}: {detail}")]
    Unsupported { op: &'static str, detail: String },
    /// A remote store (object_source/) refused or failed a request: its HTTP status where it
    /// answered, and the errno that stands for the failure.
    #[error("{op} failed with {errno}: {detail}")]
    Remote { op: &'static str, errno: Errno, status: Option<u16>, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(op: &'static str, errno: Errno, detail: impl Into<String>) -> Self {
        Error::Sys { op, errno, detail: detail.into() }
    }

    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into() }
    }

    pub fn unsupported(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Unsupported { op, detail: detail.into() }
    }

    /// The operation that failed: an ioctl (`UFFDIO_COPY`) or a syscall (`mmap`).
    pub fn op(&self) -> &'static str {
        match self {
            Error::Sys { op, .. }
            | Error::Invalid { op, .. }
            | Error::Closed { op, .. }
            | Error::Unsupported { op, .. }
            | Error::Remote { op, .. } => op,
        }
    }

    /// The errno the error stands for: the kernel's, or the one the kernel would have given.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Sys { errno, .. } | Error::Remote { errno, .. } => *errno,
            Error::Invalid { .. } => Errno::EINVAL,
            Error::Closed { .. } => Errno::EBADF,
            Error::Unsupported { .. } => Errno::EOPNOTSUPP,
        }
    }

    /// The HTTP status of a remote store's answer, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Remote { status, .. } => *status,
            _ => None,
        }
    }

    /// The errno's name (`"EEXIST"`), as Node's `err.code`.
    pub fn code(&self) -> &'static str {
        errno_name(self.errno())
    }
}

/// The symbolic name of an errno (`EEXIST`).
pub fn errno_name(errno: Errno) -> &'static str {
    // nix's Debug output of an Errno is its symbolic name; keep a static copy per value.
    macro_rules! names {
        ($($e:ident),*) => {
            match errno { $(Errno::$e => stringify!($e),)* _ => "EUNKNOWN" }
        };
    }
    // The network's errnos (object_source/): one line each keeps the list below compact.
    match errno {
        Errno::ECONNREFUSED => return "ECONNREFUSED",
        Errno::ECONNRESET => return "ECONNRESET",
        Errno::ESTALE => return "ESTALE",
        Errno::EHOSTUNREACH => return "EHOSTUNREACH",
        _ => {}
    }
    names!(
        EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG, EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, ENODEV,
        EINVAL, ENFILE, EMFILE, ENOSPC, ESPIPE, ERANGE, ENOSYS, EOPNOTSUPP, ENOTTY, EHWPOISON, EFBIG, EOVERFLOW,
        ETIMEDOUT, EPROTO, EISDIR
    )
}

/// What to do about an errno from an operation: the part of the message a user acts on.
fn hint(op: &str, errno: Errno, detail: &str) -> String {
    let advice = match (op, errno) {
        ("open", Errno::EPERM | Errno::EACCES) => {
            "userfaultfd is not permitted: run as root, give this user read-write access to \
             /dev/userfaultfd, set sysctl vm.unprivileged_userfaultfd=1, grant CAP_SYS_PTRACE, or \
             pass userModeOnly: true (a container's seccomp profile may also block the syscall)"
        }
        ("open", Errno::ENOSYS) => "this kernel was built without CONFIG_USERFAULTFD",
        ("UFFDIO_API", Errno::EINVAL) => {
            "the kernel refused the feature set: ask Userfaultfd.probe() which features it offers"
        }
        ("UFFDIO_API", Errno::EPERM) => "a requested feature needs a privilege (EVENT_FORK needs CAP_SYS_PTRACE)",
        (_, Errno::EEXIST) => "the page is already mapped (another resolver won)",
        (_, Errno::EAGAIN) => "the address space changed under the call (an event is unread): read events, then retry",
        (_, Errno::ENOENT) => "the range is not registered with this userfaultfd, or the page is not in the page cache",
        (_, Errno::ESRCH) => "the process that owns the memory has exited",
        (_, Errno::EBUSY) => "the range is registered with another userfaultfd",
        ("mmap", Errno::ENOMEM) | ("memfd_create", Errno::ENOMEM) => {
            "not enough memory, or, for hugetlbfs, not enough huge pages reserved: \
             run sysctl -w vm.nr_hugepages=N as root"
        }
        (_, Errno::EINVAL) => "the range or mode is not valid for this memory",
        (_, Errno::EFAULT) => "the source or destination address is not mapped",
        (_, Errno::ENOMEM) => "the kernel is out of memory",
        _ => "",
    };
    match (detail.is_empty(), advice.is_empty()) {
        (true, true) => String::new(),
        (true, false) => advice.to_string(),
        (false, true) => detail.to_string(),
        (false, false) => format!("{detail}; {advice}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_errors_carry_the_op_the_code_and_advice() {
        let err = Error::sys("UFFDIO_COPY", Errno::EEXIST, "at offset 4096");
        assert_eq!(err.code(), "EEXIST");
        assert_eq!(err.op(), "UFFDIO_COPY");
        let message = err.to_string();
        assert!(message.contains("at offset 4096"), "{message}");
        assert!(message.contains("already mapped"), "{message}");
    }

    #[test]
    fn invalid_input_reads_as_einval() {
        let err = Error::invalid("UFFDIO_ZEROPAGE", "offset 3 is not page-aligned");
        assert_eq!(err.code(), "EINVAL");
        assert_eq!(err.to_string(), "UFFDIO_ZEROPAGE: offset 3 is not page-aligned");
    }
}
