//! When a JavaScript thread's environment ends (a worker exits or is terminated), the faults it
//! was handed and did not finish must not wait forever: an env cleanup hook removes its handler,
//! and the core resolves those faults by the fallback. napi-rs's own hook API leaks its data when
//! a hook is removed, so the hook is registered here directly.

use napi::sys;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use uffd_core::Userfaultfd;

struct HookState {
    uffd: Weak<Userfaultfd>,
    generation: u64,
    fired: AtomicBool,
}

/// A registered hook; `remove` (on the same JavaScript thread) unregisters it if it has not run.
pub struct TeardownHook {
    env: sys::napi_env,
    state: Arc<HookState>,
    arg: *const HookState,
}

// SAFETY: the hook is only registered and removed on its environment's JavaScript thread (the
// thread that owns the BindingUffd holding it); the raw pointers are never dereferenced elsewhere.
unsafe impl Send for TeardownHook {}

unsafe extern "C" fn on_teardown(arg: *mut c_void) {
    // SAFETY: `arg` came from Arc::into_raw in `install`, and napi runs a hook at most once and
    // never after it was removed, so this reference is reclaimed exactly once.
    let state = unsafe { Arc::from_raw(arg.cast_const().cast::<HookState>()) };
    state.fired.store(true, Ordering::Release);
    if let Some(uffd) = state.uffd.upgrade() {
        uffd.remove_handler(state.generation);
    }
}

impl TeardownHook {
    pub fn install(env: &napi::Env, uffd: &Arc<Userfaultfd>, generation: u64) -> napi::Result<Self> {
        let state = Arc::new(HookState { uffd: Arc::downgrade(uffd), generation, fired: AtomicBool::new(false) });
        let arg = Arc::into_raw(state.clone());
        // SAFETY: `env` is the live environment of this call; `arg` stays valid until the hook
        // runs or is removed, whichever comes first.
        let status = unsafe { sys::napi_add_env_cleanup_hook(env.raw(), Some(on_teardown), arg.cast_mut().cast()) };
        if status != sys::Status::napi_ok {
            // SAFETY: the hook was not registered, so this reference is ours to reclaim.
            drop(unsafe { Arc::from_raw(arg) });
            return Err(napi::Error::from_reason("napi_add_env_cleanup_hook failed"));
        }
        Ok(TeardownHook { env: env.raw(), state, arg })
    }

    /// Unregisters the hook if it has not run. Must be called on the environment's thread.
    pub fn remove(self) {
        if self.state.fired.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: same environment and thread as `install`; the hook has not run, so it is still
        // registered with this exact callback and argument.
        let status =
            unsafe { sys::napi_remove_env_cleanup_hook(self.env, Some(on_teardown), self.arg.cast_mut().cast()) };
        if status == sys::Status::napi_ok {
            // SAFETY: the hook was removed and will never run: reclaim its reference.
            drop(unsafe { Arc::from_raw(self.arg) });
        }
    }
}
