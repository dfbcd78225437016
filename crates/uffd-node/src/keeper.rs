//! The keeper that holds the VMs a Firecracker server serves across the server's own restart
//! (`uffd_core::keeper`): a server's link to it, the VMs taken back from it, and the keeper's
//! own loop for the process that runs it.

use crate::errors::OrThrow;
use crate::options::{core_options, BindingOptions};
use crate::outcome::{outcome_of, BindingOutcome};
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uffd_core::handshake::Handshake;
use uffd_core::keeper::{self, Link};

/// A server's link to its keeper, and the VMs taken back from it as it linked.
#[napi]
pub struct BindingKeeper {
    link: Arc<Link>,
    held: Mutex<Vec<Handshake>>,
}

impl BindingKeeper {
    pub(crate) fn link(&self) -> Arc<Link> {
        self.link.clone()
    }
}

#[napi]
impl BindingKeeper {
    /// Links to the keeper listening at `path`, taking back every VM it holds.
    #[napi(factory)]
    pub fn connect(env: Env, path: String) -> napi::Result<Self> {
        let (link, held) = Link::connect(&path).or_throw(&env)?;
        Ok(BindingKeeper { link: Arc::new(link), held: Mutex::new(held) })
    }

    /// Unlinks from the keeper (a server that stopped): one with no VM left ends.
    #[napi]
    pub fn close(&self) {
        self.link.close();
    }

    /// The VMs taken back, adopted with `options` (once: later calls give none).
    #[napi]
    pub fn take_held(&self, env: Env, options: BindingOptions) -> napi::Result<Vec<BindingOutcome>> {
        let options = core_options(&env, options)?;
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(held.into_iter().map(|shake| outcome_of(Ok(shake), &options)).collect())
    }
}

/// Runs a keeper at `path` in this thread until it has no VM and no server, or has had no
/// server for `graceMs` (then it kills its VMs). For a process of its own: it blocks.
#[napi]
pub fn run_keeper(env: Env, path: String, grace_ms: u32) -> napi::Result<()> {
    keeper::run(&path, Duration::from_millis(u64::from(grace_ms))).or_throw(&env)
}
