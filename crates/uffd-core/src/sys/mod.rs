//! The kernel's side: constants, one safe function per ioctl, the one `uffd_msg` parser, and the
//! epoll a reader waits in. Nothing here knows of regions, faults in flight or handlers.

pub mod ioctl;
pub mod msg;
pub mod poller;
pub mod uapi;
