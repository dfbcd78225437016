//! A panic must never cross into Node.js: unwinding out of a napi callback aborts the process, and
//! JavaScript could not catch it. Work the binding runs on a pool thread (a `Task`'s compute) runs
//! under `guard`, which turns a panic into an error that rejects the call's Promise.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `work`; a panic in it becomes an error naming `op` and what the panic said.
pub fn guard<T>(op: &str, work: impl FnOnce() -> T) -> napi::Result<T> {
    caught(op, work).map_err(napi::Error::from_reason)
}

fn caught<T>(op: &str, work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        format!(
            "{op}: an internal error stopped it ({}); nothing was changed. This is a bug of userfaultfd: please report it",
            said(payload.as_ref())
        )
    })
}

fn said(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::caught;

    #[test]
    fn a_panic_becomes_an_error_that_names_the_call_and_the_cause() {
        let error = caught("objectStore", || -> u32 { panic!("request valid: {}", "InvalidUri") }).unwrap_err();
        assert!(error.starts_with("objectStore: an internal error stopped it (request valid: InvalidUri)"), "{error}");
        assert_eq!(caught("x", || 7), Ok(7));
    }
}
