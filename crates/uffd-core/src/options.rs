//! How a userfaultfd is opened and serves: what the caller asks for. Every value is the caller's
//! (the TypeScript front holds the defaults); `Default` here is for Rust callers and tests.

use std::time::Duration;

/// How a fault is resolved when its handler cannot: throws, never answers, or is the faulting thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// ZEROPAGE (a zeroed COPY on hugetlbfs) for missing faults, CONTINUE for minor ones.
    #[default]
    Zero,
    /// UFFDIO_POISON: the faulting thread gets SIGBUS.
    Sigbus,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Feature names (`MINOR_SHMEM`) that must be enabled, besides the defaults the kernel offers.
    pub features: Vec<String>,
    /// `Some(true)`: user-mode faults only; `Some(false)`: kernel faults too, or fail;
    /// `None`: kernel faults too where permitted, else user-mode only.
    pub user_mode_only: Option<bool>,
    pub fallback: Fallback,
    /// How long a fault may wait for its handler before the fallback resolves it.
    pub timeout: Option<Duration>,
    /// How long a reader polls for messages before it sleeps in epoll: a sleeping thread can take
    /// tens of microseconds to wake on a virtual CPU. Zero (the default) never spins.
    pub spin: Duration,
    /// Loop threads that read the fd and serve native sources (0 counts as 1).
    pub readers: usize,
}

impl Options {
    pub fn readers(&self) -> usize {
        self.readers.max(1)
    }
}

/// Which faults a registration reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    pub missing: bool,
    pub minor: bool,
    pub wp: bool,
}
