//! The napi-rs binding of uffd-core: it converts values across the boundary, checks their types
//! and forwards. Policy lives in uffd-core; the API's shape and every default live in the
//! TypeScript in front.
//!
//! The modules, from the bottom up (each uses only some of those named before it; `npm run lint`
//! checks that no two import each other in a circle):
//! `errors`, `args` (errors and numbers across the boundary), `panic` (no panic crosses into Node), `options` (the core's options from
//! complete JavaScript values), `teardown`, `region`, `object_store`, `source`, `sink` (a
//! handler's thread hears of batches), `handle` (what a `BindingUffd` holds), `adoption`, `batch`
//! (the packed batch and the objects of events and notices), `fault` (every per-fault call),
//! `stats`, `prefetch`, `cancel` (stopping a handshake that waits), then the classes and calls:
//! `uffd`, `handshake`, `object_source`.
#![deny(unsafe_op_in_unsafe_fn)]

mod adoption;
mod args;
mod batch;
mod cancel;
mod errors;
// Public so that its napi functions count as used (they are reached only through the napi registry).
pub mod fault;
mod handle;
mod handshake;
mod keeper;
// Public so that its napi functions count as used (they are reached only through the napi registry).
pub mod object_source;
mod object_store;
mod options;
mod outcome;
mod panic;
mod prefetch;
mod region;
mod sink;
mod source;
mod stats;
mod teardown;
mod uffd;

pub use adoption::{adopt_fd, BindingAdoption, BindingRemoteRange};
pub use cancel::BindingCancel;
pub use handle::BindingUffd;
pub use handshake::{receive_fd, BindingListener};
pub use keeper::{run_keeper, BindingKeeper};
pub use outcome::BindingOutcome;
pub use region::{detach_buffer, BindingRegion};
pub use source::{BindingRecorder, BindingSource};
pub use uffd::close_all_userfaultfds;
