//! `BindingCancel`: what JavaScript stops handshakes with (an aborted signal). The stopping itself is
//! the core's (`uffd_core::cancel`).

use napi_derive::napi;
use uffd_core::cancel::{Group, Stop};

#[napi]
#[derive(Default)]
pub struct BindingCancel {
    pub(crate) group: Group,
}

#[napi]
impl BindingCancel {
    #[napi(constructor)]
    pub fn new() -> Self {
        BindingCancel::default()
    }

    /// Stops the handshakes started with this: their promises resolve with an ABORT_ERR failure
    /// and whatever they had (a socket, a connection) is closed.
    #[napi]
    pub fn cancel(&self) {
        self.group.stop(Stop::Aborted);
    }
}
