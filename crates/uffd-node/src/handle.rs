//! What a `BindingUffd` holds: a userfaultfd's handle in one JavaScript thread. The owner opened
//! or adopted it; a handle from `attach` (in a worker) names a live one by id. Its methods are in
//! `uffd.rs`: an adoption hands out handles and sits below the batch (a fork's event carries one),
//! while the methods hand out batches, so the type has to live apart from them.

use crate::sink::SharedMailbox;
use crate::teardown::TeardownHook;
use napi_derive::napi;
use std::sync::{Arc, Mutex, MutexGuard};
use uffd_core::Userfaultfd;

#[napi]
pub struct BindingUffd {
    pub(crate) inner: Arc<Userfaultfd>,
    pub(crate) owner: bool,
    /// What the owner's thread hears when no handler does (`observe`, `takeNotices`).
    pub(crate) notices: Mutex<Option<SharedMailbox>>,
    /// The generation of this thread's handler, and the hook that removes it at thread teardown.
    pub(crate) handler: Mutex<Option<(u64, TeardownHook)>>,
}

impl BindingUffd {
    /// The handle of the userfaultfd's owner, which closes it.
    pub(crate) fn owned(inner: Arc<Userfaultfd>) -> Self {
        BindingUffd { inner, owner: true, notices: Mutex::new(None), handler: Mutex::new(None) }
    }

    /// A handle that serves a userfaultfd another thread owns.
    pub(crate) fn attached(inner: Arc<Userfaultfd>) -> Self {
        BindingUffd { inner, owner: false, notices: Mutex::new(None), handler: Mutex::new(None) }
    }

    pub(crate) fn lock_handler(&self) -> MutexGuard<'_, Option<(u64, TeardownHook)>> {
        self.handler.lock().unwrap_or_else(|p| p.into_inner())
    }
}
