//! The one error type of the core: what was asked (`op`), the errno where the kernel gave one, and
//! what to do about it (`Advice`). The binding turns it into a JavaScript `UffdError` once, at the
//! boundary, and says the advice in JavaScript's terms there (`Error::message` with its `Dialect`).

use nix::errno::Errno;
use std::borrow::Cow;
use std::fmt;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone)]
pub enum Error {
    /// A system call or ioctl failed. `advice`, when the caller knows better than the table of
    /// hints what to do about this errno here, replaces the hint.
    Sys { op: &'static str, errno: Errno, detail: String, advice: Option<Advice> },
    /// An argument is misaligned or inconsistent, or something needed was not given; nothing was
    /// done.
    Invalid { op: &'static str, detail: String, advice: Option<Advice> },
    /// A number is outside the bounds it must lie in (a size of 0, an offset past the end of a
    /// region): Node's `ERR_OUT_OF_RANGE`, which the binding throws as a `RangeError`.
    OutOfRange { op: &'static str, detail: String },
    /// The userfaultfd or the region was closed before the call.
    Closed { op: &'static str, what: &'static str },
    /// The kernel (or the negotiated feature set) does not offer what was asked.
    Unsupported { op: &'static str, detail: String },
    /// More bytes than one buffer of the caller holds were asked for at once: read in parts
    /// (`Advice::ReadInParts`).
    TooLarge { op: &'static str, len: usize, limit: usize },
    /// A remote store (object_source/) refused or failed a request: its HTTP status where it
    /// answered, and the errno that stands for the failure.
    Remote { op: &'static str, errno: Errno, status: Option<u16>, detail: String },
}

/// What a user can do about an error, named by what it is about. The core says it in its own
/// terms (`Core`, which `Display` uses); a binding says the named ones in its language's terms
/// (its `Dialect`), so no core message names the API of a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advice {
    /// Advice that names nothing a binding calls otherwise (a path, a sysctl, a pid), said alike
    /// in every dialect.
    Text(Cow<'static, str>),
    /// userfaultfd is not permitted to this process (`open` refused with EPERM or EACCES).
    Permission,
    /// The kernel refused the feature set asked for (`UFFDIO_API` with EINVAL).
    ProbeFeatures,
    /// More bytes than one buffer of the caller holds were asked for at once (`TooLarge`).
    ReadInParts,
    /// An `s3://` object with no credentials, no source of them, and not anonymous.
    S3Credentials,
    /// An `az://` object with no storage account.
    AzureAccount,
    /// An `az://` object whose account has no shared key, no SAS token, and is not anonymous.
    AzureCredentials,
    /// A store endpoint that is not an `http://` or `https://` URL with a host.
    Endpoint,
    // Said after a notice's message, each with its own punctuation (`Notice::text`):
    /// A fault waits for a handler until its timeout.
    WaitForHandler,
    /// A fault came before any handler or source: install one before touching the memory.
    InstallHandler,
    /// A handler's own thread faulted: serve it from another thread.
    HandleOnAnotherThread,
    /// A fault waited for a handler or a source until its timeout, and none came.
    InstallHandlerSooner,
}

impl From<&'static str> for Advice {
    fn from(text: &'static str) -> Self {
        Advice::Text(Cow::Borrowed(text))
    }
}

impl From<String> for Advice {
    fn from(text: String) -> Self {
        Advice::Text(Cow::Owned(text))
    }
}

/// The words of a message for what lies outside the core: how each named `Advice` is said, and
/// what one buffer of the caller is called.
pub trait Dialect {
    /// The advice in this dialect's terms (an `Advice::Text` as it is).
    fn advice<'a>(&self, advice: &'a Advice) -> &'a str;
    /// The name of the caller's buffer, whose size bounds one read of a region (`TooLarge`).
    fn buffer(&self) -> &'static str;
}

/// The core's own terms: its options and functions by their Rust names.
pub struct Core;

impl Dialect for Core {
    fn advice<'a>(&self, advice: &'a Advice) -> &'a str {
        match advice {
            Advice::Text(text) => text,
            Advice::Permission => {
                "userfaultfd is not permitted: run as root, give this user read-write access to \
                 /dev/userfaultfd, set sysctl vm.unprivileged_userfaultfd=1, grant CAP_SYS_PTRACE, or \
                 open it for faults in user mode only (Options::user_mode_only; a container's seccomp \
                 profile may also block the syscall)"
            }
            Advice::ProbeFeatures => "the kernel refused the feature set: probe it for the features it offers",
            Advice::ReadInParts => "read the region in parts, a range at a time",
            Advice::S3Credentials => {
                "give StoreOptions::credentials or a credential_source, or set anonymous for a public \
                 bucket (instance metadata is asked only when the credential source says so)"
            }
            Advice::AzureAccount => "give StoreOptions::azure, the storage account",
            Advice::AzureCredentials => {
                "give the account a shared key or a SAS token, or set anonymous for a public container \
                 (no managed identity is ever asked)"
            }
            Advice::Endpoint => "give a URL such as http://127.0.0.1:8333",
            Advice::WaitForHandler => {
                ": it waits for a handler until the fault timeout (Options::timeout), then gets the fallback"
            }
            Advice::InstallHandler => {
                ". Install a handler (Userfaultfd::handle, on a thread that does not touch the memory) before \
                 touching registered memory, or register the range with a source"
            }
            Advice::HandleOnAnotherThread => {
                ". Serve this thread's faults from a handler on another thread, or touch the memory from another thread"
            }
            Advice::InstallHandlerSooner => ". Install a handler, or serve the range with a source, sooner",
        }
    }

    fn buffer(&self) -> &'static str {
        "buffer"
    }
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(op: &'static str, errno: Errno, detail: impl Into<String>) -> Self {
        Error::Sys { op, errno, detail: detail.into(), advice: None }
    }

    /// The same error with `advice` (a named one, or text) in place of the general hint for its
    /// errno; for a system error or an invalid argument (any other error is returned as it is).
    pub fn with_advice(self, advice: impl Into<Advice>) -> Self {
        match self {
            Error::Sys { op, errno, detail, .. } => Error::Sys { op, errno, detail, advice: Some(advice.into()) },
            Error::Invalid { op, detail, .. } => Error::Invalid { op, detail, advice: Some(advice.into()) },
            other => other,
        }
    }

    pub fn invalid(op: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid { op, detail: detail.into(), advice: None }
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

    /// The message in `dialect`'s terms: what failed, and what to do about it. `Display` is the
    /// message in the core's own terms (`Core`).
    pub fn message(&self, dialect: &dyn Dialect) -> String {
        match self {
            Error::Sys { op, errno, detail, advice } => {
                let hinted = if advice.is_none() { hint(op, *errno) } else { None };
                let advice = advice.as_ref().or(hinted.as_ref());
                format!("{op} failed with {errno}{}", explain(detail, advice.map_or("", |a| dialect.advice(a))))
            }
            Error::Invalid { op, detail, advice: None }
            | Error::OutOfRange { op, detail }
            | Error::Unsupported { op, detail } => format!("{op}: {detail}"),
            Error::Invalid { op, detail, advice: Some(advice) } => {
                format!("{op}: {detail}: {}", dialect.advice(advice))
            }
            Error::Closed { op, what } => format!("{op}: the {what} is closed"),
            Error::TooLarge { op, len, limit } => format!(
                "{op}: {len} bytes are more than one {} holds ({limit} bytes): {}",
                dialect.buffer(),
                dialect.advice(&Advice::ReadInParts)
            ),
            Error::Remote { op, errno, detail, .. } => format!("{op} failed with {errno}: {detail}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message(&Core))
    }
}

impl std::error::Error for Error {}

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
        Errno::ENETUNREACH => return "ENETUNREACH",
        // An https:// endpoint that does not answer in TLS.
        Errno::EPROTONOSUPPORT => return "EPROTONOSUPPORT",
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

/// The tail of a system error's message: what was asked, then what to do; nothing when there is
/// neither.
fn explain(detail: &str, advice: &str) -> String {
    match (detail.is_empty(), advice.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!(": {advice}"),
        (false, true) => format!(": {detail}"),
        (false, false) => format!(": {detail}; {advice}"),
    }
}

/// What to do about an errno from an operation: the part of the message a user acts on.
fn hint(op: &str, errno: Errno) -> Option<Advice> {
    let text = match (op, errno) {
        ("open", Errno::EPERM | Errno::EACCES) => return Some(Advice::Permission),
        ("UFFDIO_API", Errno::EINVAL) => return Some(Advice::ProbeFeatures),
        ("open", Errno::ENOSYS) => "this kernel was built without CONFIG_USERFAULTFD",
        ("open", Errno::ENOENT) => "the file does not exist: check the path",
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
        _ => return None,
    };
    Some(Advice::from(text))
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
    fn named_advice_is_said_in_the_dialect_asked_for() {
        struct Shout;
        impl Dialect for Shout {
            fn advice<'a>(&self, advice: &'a Advice) -> &'a str {
                match advice {
                    Advice::Text(text) => text,
                    _ => "SAY IT LOUDER",
                }
            }
            fn buffer(&self) -> &'static str {
                "BUFFER"
            }
        }
        let error = Error::invalid("objectStore", "no storage account for az://c/b").with_advice(Advice::AzureAccount);
        assert_eq!(
            error.to_string(),
            "objectStore: no storage account for az://c/b: give StoreOptions::azure, the storage account"
        );
        assert_eq!(error.message(&Shout), "objectStore: no storage account for az://c/b: SAY IT LOUDER");
        let permission = Error::sys("open", Errno::EPERM, "");
        assert!(permission.to_string().contains("Options::user_mode_only"), "{permission}");
        assert_eq!(permission.message(&Shout), "open failed with EPERM: Operation not permitted: SAY IT LOUDER");
        let too_large = Error::TooLarge { op: "bytes", len: 8, limit: 4 };
        assert_eq!(too_large.message(&Shout), "bytes: 8 bytes are more than one BUFFER holds (4 bytes): SAY IT LOUDER");
        // Text is the caller's own, said alike in every dialect.
        let text = Error::sys("mmap", Errno::ENOMEM, "x").with_advice("reserve huge pages");
        assert_eq!(text.message(&Shout), text.to_string());
    }

    #[test]
    fn invalid_input_reads_as_einval() {
        let err = Error::invalid("UFFDIO_ZEROPAGE", "offset 3 is not page-aligned");
        assert_eq!(err.code(), "EINVAL");
        assert_eq!(err.to_string(), "UFFDIO_ZEROPAGE: offset 3 is not page-aligned");
    }
}
