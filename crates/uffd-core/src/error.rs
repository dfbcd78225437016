//! The one error type of the core: what was asked (`op`), the errno where the kernel gave one, and
//! what to do about it. The binding turns it into a JavaScript `UffdError` once, at the boundary.

use nix::errno::Errno;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A system call or ioctl failed. `advice`, when the caller knows better than the table of
    /// hints what to do about this errno here, replaces the hint.
    #[error("{op} failed with {errno}{}", explain(op, *errno, detail, advice.as_deref()))]
    Sys { op: &'static str, errno: Errno, detail: String, advice: Option<String> },
    /// An argument is misaligned or inconsistent; nothing was done.
    #[error("{op}: {detail}")]
    Invalid { op: &'static str, detail: String },
    /// A number is outside the bounds it must lie in (a size of 0, an offset past the end of a
    /// region): Node's `ERR_OUT_OF_RANGE`, which the binding throws as a `RangeError`.
    #[error("{op}: {detail}")]
    OutOfRange { op: &'static str, detail: String },
    /// The userfaultfd or the region was closed before the call.
    #[error("{op}: the {what} is closed")]
    Closed { op: &'static str, what: &'static str },
    /// The kernel (or the negotiated feature set) does not offer what was asked.
    #[error("{op}: {detail}")]
    Unsupported { op: &'static str, detail: String },
    /// More bytes than one buffer of the caller's runtime holds were asked for at once.
    #[error(
        "{op}: {len} bytes are more than one ArrayBuffer holds ({limit} bytes): \
         read the region in parts with region.bytes(offset, length)"
    )]
    TooLarge { op: &'static str, len: usize, limit: usize },
    /// A remote store (object_source/) refused or failed a request: its HTTP status where it
    /// answered, and the errno that stands for the failure.
    #[error("{op} failed with {errno}: {detail}")]
    Remote { op: &'static str, errno: Errno, status: Option<u16>, detail: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(op: &'static str, errno: Errno, detail: impl Into<String>) -> Self {
        Error::Sys { op, errno, detail: detail.into(), advice: None }
    }

    /// The same error with `advice` in place of the general hint for its errno (a system error;
    /// any other error is returned as it is).
    pub fn with_advice(self, text: impl Into<String>) -> Self {
        match self {
            Error::Sys { op, errno, detail, .. } => Error::Sys { op, errno, detail, advice: Some(text.into()) },
            other => other,
        }
    }

    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into() }
    }

    pub fn out_of_range(op: &'static str, detail: impl Into<String>) -> Self {
        Error::OutOfRange { op, detail: detail.into() }
    }

    pub fn unsupported(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Unsupported { op, detail: detail.into() }
    }

    /// The operation that failed: an ioctl (`UFFDIO_COPY`) or a syscall (`mmap`).
    pub fn op(&self) -> &'static str {
        match self {
            Error::Sys { op, .. }
            | Error::Invalid { op, .. }
            | Error::OutOfRange { op, .. }
            | Error::Closed { op, .. }
            | Error::Unsupported { op, .. }
            | Error::TooLarge { op, .. } => op,
            Error::Remote { op, .. } => op,
        }
    }

    /// The errno the error stands for: the kernel's, or the one the kernel would have given.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Sys { errno, .. } | Error::Remote { errno, .. } => *errno,
            Error::Invalid { .. } | Error::OutOfRange { .. } => Errno::EINVAL,
            Error::Closed { .. } => Errno::EBADF,
            Error::Unsupported { .. } => Errno::EOPNOTSUPP,
            Error::TooLarge { .. } => Errno::ERANGE,
        }
    }

    /// The HTTP status of a remote store's answer, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Remote { status, .. } => *status,
            _ => None,
        }
    }

    /// The errno's name (`"EEXIST"`), as Node's `err.code`; `ERR_OUT_OF_RANGE` for a number out of
    /// its bounds, as Node says it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::OutOfRange { .. } => "ERR_OUT_OF_RANGE",
            _ => errno_name(self.errno()),
        }
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
        // A socket path in use, or under something that is not a folder (handshake::listen).
        Errno::EADDRINUSE => return "EADDRINUSE",
        Errno::ENOTDIR => return "ENOTDIR",
        Errno::ENOTSOCK => return "ENOTSOCK",
        _ => {}
    }
    names!(
        EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG, EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST, ENODEV,
        EINVAL, ENFILE, EMFILE, ENOSPC, ESPIPE, ERANGE, ENOSYS, EOPNOTSUPP, ENOTTY, EHWPOISON, EFBIG, EOVERFLOW,
        ETIMEDOUT, EPROTO, EISDIR
    )
}

/// The tail of a system error's message: what was asked, then what to do (`advice` if the caller
/// gave one, else the hint for the errno); nothing when there is neither.
fn explain(op: &str, errno: Errno, detail: &str, advice: Option<&str>) -> String {
    let advice = advice.unwrap_or_else(|| hint(op, errno));
    match (detail.is_empty(), advice.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!(": {advice}"),
        (false, true) => format!(": {detail}"),
        (false, false) => format!(": {detail}; {advice}"),
    }
}

/// What to do about an errno from an operation: the part of the message a user acts on.
fn hint(op: &str, errno: Errno) -> &'static str {
    match (op, errno) {
        ("open", Errno::EPERM | Errno::EACCES) => {
            "userfaultfd is not permitted: run as root, give this user read-write access to \
             /dev/userfaultfd, set sysctl vm.unprivileged_userfaultfd=1, grant CAP_SYS_PTRACE, or \
             pass userModeOnly: true (a container's seccomp profile may also block the syscall)"
        }
        ("open", Errno::ENOSYS) => "this kernel was built without CONFIG_USERFAULTFD",
        ("open", Errno::ENOENT) => "the file does not exist: check the path",
        ("UFFDIO_API", Errno::EINVAL) => {
            "the kernel refused the feature set: ask Userfaultfd.probe() which features it offers"
        }
        ("UFFDIO_API", Errno::EPERM) => "a requested feature needs a privilege (EVENT_FORK needs CAP_SYS_PTRACE)",
        // epoll refuses only files it cannot poll: a regular file, a directory, a terminal's fd 0...
        ("epoll_ctl", Errno::EPERM) => "the file descriptor is not a userfaultfd (epoll cannot watch it)",
        (_, Errno::EEXIST) => "the page is already mapped (another resolver won)",
        (_, Errno::EAGAIN) => "the address space changed under the call (an event is unread): read events, then retry",
        (_, Errno::ENOENT) => "the range is not registered with this userfaultfd, or the page is not in the page cache",
        (_, Errno::ESRCH) => "the process that owns the memory has exited",
        (_, Errno::EBUSY) => "the range is registered with another userfaultfd",
        // Huge pages are hugetlb's own trouble: its region says how many it needs (advice).
        ("mmap", Errno::ENOMEM) | ("memfd_create", Errno::ENOMEM) => {
            "the kernel could not find the memory or the address space for the mapping: a smaller \
             size, or a limit raised (ulimit -v, vm.max_map_count, vm.overcommit_memory), may help"
        }
        (_, Errno::EINVAL) => "the range or mode is not valid for this memory",
        (_, Errno::EFAULT) => "the source or destination address is not mapped",
        (_, Errno::ENOMEM) => "the kernel is out of memory",
        _ => "",
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
    fn a_missing_file_is_named_as_such_not_as_an_unregistered_range() {
        let message = Error::sys("open", Errno::ENOENT, "source file \"/nonexistent\"").to_string();
        assert!(message.contains("does not exist"), "{message}");
        assert!(!message.contains("registered"), "{message}");
    }

    #[test]
    fn an_anonymous_mapping_out_of_memory_does_not_speak_of_huge_pages() {
        let message = Error::sys("mmap", Errno::ENOMEM, "anonymous region of 4096 bytes").to_string();
        assert!(!message.contains("huge"), "{message}");
        assert!(message.contains("address space"), "{message}");
    }

    #[test]
    fn advice_replaces_the_hint_so_it_is_said_once() {
        let message = Error::sys("mmap", Errno::ENOMEM, "hugetlb region").with_advice("reserve huge pages").to_string();
        assert!(message.ends_with(": hugetlb region; reserve huge pages"), "{message}");
        assert_eq!(message.matches("huge pages").count(), 1, "{message}");
    }

    #[test]
    fn an_error_with_nothing_to_add_ends_at_the_errno() {
        let message = Error::sys("close", Errno::EIO, "").to_string();
        assert!(message.ends_with(Errno::EIO.desc()), "{message}");
    }

    #[test]
    fn epoll_refusing_an_fd_says_it_is_not_a_userfaultfd() {
        let message = Error::sys("epoll_ctl", Errno::EPERM, "").to_string();
        assert!(message.ends_with("the file descriptor is not a userfaultfd (epoll cannot watch it)"), "{message}");
    }

    #[test]
    fn invalid_input_reads_as_einval() {
        let err = Error::invalid("UFFDIO_ZEROPAGE", "offset 3 is not page-aligned");
        assert_eq!(err.code(), "EINVAL");
        assert_eq!(err.to_string(), "UFFDIO_ZEROPAGE: offset 3 is not page-aligned");
    }
}
