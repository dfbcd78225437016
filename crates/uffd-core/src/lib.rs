//! The engine of the `userfaultfd` npm package, usable from plain Rust: opening and negotiating a
//! userfaultfd, memory regions, registration, the fault loop thread, and the resolving ioctls.
//! It knows nothing of JavaScript: a handler is anything that implements [`FaultSink`].
#![deny(unsafe_op_in_unsafe_fn)]

pub mod direct;
pub mod dirty;
pub mod error;
mod events;
pub mod fault;
mod fault_loop;
mod fault_table;
pub mod handshake;
pub mod ioctl;
pub mod object_source;
pub mod prefetch;
mod pump;
pub mod region;
mod registrations;
mod registry;
mod resolve;
pub mod source;
pub mod stats;
pub mod uapi;
pub mod userfaultfd;

pub use error::{Error, Result};
pub use events::UffdEvent;
pub use fault::{Dispatch, Fault, FaultKind, FaultSink, Notice, NoticeKind};
pub use region::{MemoryKind, Region};
pub use resolve::{Protect, Wake};
pub use stats::Snapshot;
pub use userfaultfd::{
    current_thread_id, Fallback, Finish, Modes, Options, Probe, RemoteRange, Resolution, Userfaultfd,
};
