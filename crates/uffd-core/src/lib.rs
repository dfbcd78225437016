//! The engine of the `userfaultfd` npm package, usable from plain Rust: opening and negotiating a
//! userfaultfd, memory regions, registration, the reader threads, and the resolving ioctls.
//! It knows nothing of JavaScript: a handler is anything that implements [`FaultSink`].
//!
//! Layers, each using only its own and those below it (`scripts/check-cycles.mjs` checks that, and
//! that there is no circle):
//! 1. the kernel: `sys` (uapi, ioctl, msg, poller); `error`, `stats`, `registry`, `thread_set`,
//!    `cancel`, `mapped`;
//! 2. `region`, `fault`;
//! 3. plain data: `fd`, `registrations`, `fault_table`, `residency` (with its evictor thread),
//!    `object_source` (on its own runtime), `source`, `adopt`;
//! 4. `resolve`, `native`, `fallback`, `options`, `reading` (who reads, and what readers share);
//! 5. `events`, `handlers`, `engine`, `object_faults`;
//! 6. `readers` (the turn and its intake, the loop threads, the pullers, the pump), `answer` (a fault's answer by
//!    its id), `prefetch`, `dirty`, `handshake`, `lobby`, `keeper`;
//! 7. `userfaultfd`: the façade.
#![deny(unsafe_op_in_unsafe_fn)]

mod adopt;
mod answer;
pub mod cancel;
pub mod dirty;
mod engine;
pub mod error;
mod events;
mod fallback;
pub mod fault;
mod fault_table;
mod fd;
mod handlers;
pub mod handshake;
pub mod keeper;
pub mod lobby;
mod mapped;
mod native;
mod object_faults;
pub mod object_source;
mod options;
pub mod prefetch;
mod readers;
mod reading;
pub mod region;
mod registrations;
mod registry;
pub mod residency;
mod resolve;
pub mod source;
pub mod stats;
pub mod sys;
#[cfg(test)]
mod test_dir;
mod thread_set;
pub mod userfaultfd;

pub use error::{Error, Result};
pub use fault::{Child, Dispatch, Fault, FaultKind, FaultSink, Notice, NoticeKind, UffdEvent};
pub use region::{MemoryKind, Region, RemoteRange};
pub use resolve::{Protect, Wake};
pub use stats::Snapshot;
pub use sys::uapi;
pub use userfaultfd::{current_thread_id, Fallback, Finish, Modes, Options, Probe, Puller, Resolution, Userfaultfd};
