//! The napi-rs binding of uffd-core: it converts values across the boundary, checks their types
//! and forwards. Policy lives in uffd-core; the API's shape lives in the TypeScript in front.
#![deny(unsafe_op_in_unsafe_fn)]

mod args;
mod errors;
mod handshake;
// Public so that its napi functions count as used (they are reached only through the napi registry).
pub mod object_source;
// Public so that its napi functions count as used (they are reached only through the napi registry).
pub mod hot;
mod prefetch;
mod region;
mod sink;
mod source;
mod teardown;
mod uffd;

pub use handshake::{adopt_fd, receive_fd, NativeAdoption, NativeListener, NativeOutcome, NativeRemoteRange};
pub use region::{detach_buffer, NativeRegion};
pub use source::{NativeRecorder, NativeSource};
pub use uffd::{close_all_userfaultfds, NativeUffd};
