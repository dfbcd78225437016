//! Failures: a message on stderr and an exit status, as the C baseline reports them.

use nix::errno::Errno;
use std::fmt::Display;
use std::io;
use std::process;

/// Why the program stops: printed as `rust-baseline: <message>`, then the process exits with `status`.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub status: u8,
}

impl Failure {
    /// A failure of the run (exit status 1).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: 1 }
    }

    /// A command line that cannot be read (exit status 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: 2 }
    }

    /// `what` failed because of `error`.
    pub fn os(what: impl Display, error: impl Reason) -> Self {
        Self::new(format!("{what}: {}", error.reason()))
    }

    pub fn report(&self) {
        eprintln!("rust-baseline: {}", self.message);
    }
}

/// Ends the process at once. For failures on the handler's side, or while a thread may be waiting
/// on a fault that nobody would resolve any more: unwinding would only wait for it forever.
pub fn fatal(failure: Failure) -> ! {
    failure.report();
    process::exit(failure.status.into())
}

/// The errno behind an error of the `userfaultfd` crate (which links its own nix, hence the raw
/// value), EIO when it has none.
pub fn errno_of(error: &userfaultfd::Error) -> Errno {
    use userfaultfd::Error as E;
    match error {
        E::SystemError(errno) | E::CopyFailed(errno) | E::ZeropageFailed(errno) => Errno::from_raw(*errno as i32),
        E::OpenDevUserfaultfd(io) => io_errno(io),
        _ => Errno::EIO,
    }
}

/// The errno behind an I/O error, EIO when it has none.
pub fn io_errno(error: &io::Error) -> Errno {
    error.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// What went wrong, in the words of strerror(3) when there is an errno.
pub trait Reason {
    fn reason(&self) -> String;
}

impl Reason for Errno {
    fn reason(&self) -> String {
        self.desc().to_owned()
    }
}

impl Reason for io::Error {
    fn reason(&self) -> String {
        self.raw_os_error().map_or_else(|| self.to_string(), |code| Errno::from_raw(code).reason())
    }
}

impl Reason for userfaultfd::Error {
    fn reason(&self) -> String {
        match self {
            userfaultfd::Error::OpenDevUserfaultfd(io) => format!("/dev/userfaultfd: {}", io.reason()),
            userfaultfd::Error::SystemError(_)
            | userfaultfd::Error::CopyFailed(_)
            | userfaultfd::Error::ZeropageFailed(_) => errno_of(self).reason(),
            other => other.to_string(),
        }
    }
}

/// `result.context("what")?`: a failure that says which call failed and why.
pub trait Context<T> {
    fn context(self, what: impl Display) -> Result<T, Failure>;
}

impl<T, E: Reason> Context<T> for Result<T, E> {
    fn context(self, what: impl Display) -> Result<T, Failure> {
        self.map_err(|error| Failure::os(what, error))
    }
}
