//! Core errors become JavaScript errors with Node's fields (`code`, `errno`, `syscall`) once, here:
//! thrown, or as a `NativeFailure` value where a Promise resolves with the outcome. The TypeScript
//! layer turns them into `UffdError` instances.

use napi::{Env, Status};
use napi_derive::napi;
use uffd_core::Error;

/// Throws `error` as a JavaScript Error carrying code, errno and syscall, and returns the marker
/// that tells napi-rs the exception is already pending.
pub fn throw(env: &Env, error: &Error) -> napi::Error {
    // A number out of its bounds is Node's RangeError ERR_OUT_OF_RANGE, as the TypeScript in
    // front throws it for the bounds it checks itself.
    if let Error::OutOfRange { .. } = error {
        return match env.throw_range_error(&error.to_string(), Some(error.code())) {
            Ok(()) => napi::Error::new(Status::PendingException, String::new()),
            Err(fallback) => fallback,
        };
    }
    let thrown = (|| -> napi::Result<()> {
        let mut object = env.create_error(napi::Error::new(Status::GenericFailure, error.to_string()))?;
        object.set("code", error.code())?;
        object.set("errno", -(error.errno() as i32))?;
        object.set("syscall", error.op())?;
        object.set("uffd", true)?;
        if let Some(status) = error.status() {
            object.set("status", status as u32)?;
        }
        env.throw(object)
    })();
    match thrown {
        Ok(()) => napi::Error::new(Status::PendingException, String::new()),
        Err(fallback) => fallback,
    }
}

/// A core error from an I/O error of a system call the binding makes itself.
pub fn sys_error(op: &'static str, error: std::io::Error, what: &str) -> Error {
    match error.try_into() {
        Ok(errno) => Error::sys(op, errno, what.to_string()),
        Err(error) => Error::invalid(op, format!("{what}: {error}")),
    }
}

pub fn invalid(env: &Env, op: &'static str, detail: String) -> napi::Error {
    throw(env, &Error::invalid(op, detail))
}

/// Maps a core result, throwing its error the Node way.
pub trait OrThrow<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T>;
}

impl<T> OrThrow<T> for uffd_core::Result<T> {
    fn or_throw(self, env: &Env) -> napi::Result<T> {
        self.map_err(|error| throw(env, &error))
    }
}

/// Why an operation that resolves a Promise failed (a handshake, a prefetch, opening an object
/// source): Node's error fields, for the TypeScript to make its error from.
#[napi(object, object_from_js = false)]
pub struct NativeFailure {
    pub code: &'static str,
    pub errno: i32,
    pub syscall: &'static str,
    pub message: String,
    /// For a refused handshake: the pid of the process that sent it (SO_PEERCRED).
    pub peer_pid: Option<i32>,
    /// The HTTP status of a remote store's answer, if that is what failed.
    pub status: Option<u32>,
}

impl NativeFailure {
    /// What an operation stopped by its caller's signal resolves with (the caller has rejected
    /// with its own AbortError already, which carries the signal's reason).
    pub(crate) fn aborted(op: &'static str) -> Self {
        NativeFailure {
            code: "ABORT_ERR",
            errno: -libc::ECANCELED,
            syscall: op,
            message: "The operation was aborted".into(),
            peer_pid: None,
            status: None,
        }
    }

    pub(crate) fn of(error: &Error) -> Self {
        NativeFailure {
            code: error.code(),
            errno: -(error.errno() as i32),
            syscall: error.op(),
            message: error.to_string(),
            peer_pid: None,
            status: error.status().map(u32::from),
        }
    }
}
