//! Numbers from JavaScript are doubles: these turn them into sizes and ids or refuse them.

use crate::errors::{invalid, throw};
use napi::Result;
use uffd_core::Error;

/// A non-negative integer that a double holds exactly.
pub fn to_usize(env: &napi::Env, what: &str, value: f64) -> Result<usize> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_991.0 {
        Ok(value as usize)
    } else {
        Err(throw(
            env,
            &Error::out_of_range("argument", format!("{what} must be an integer >= 0 && <= 2^53 - 1, got {value}")),
        ))
    }
}

pub fn to_opt_usize(env: &napi::Env, what: &str, value: Option<f64>) -> Result<Option<usize>> {
    value.map(|v| to_usize(env, what, v)).transpose()
}

pub fn to_id(env: &napi::Env, value: f64) -> Result<u64> {
    to_usize(env, "id", value).map(|v| v as u64)
}

/// A value the TypeScript in front always sends (it applies the defaults): the binding decides
/// none, so a missing one is a bug there, said as such.
pub fn given<T>(env: &napi::Env, what: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| invalid(env, "argument", format!("{what} must be given: the binding takes complete options")))
}
