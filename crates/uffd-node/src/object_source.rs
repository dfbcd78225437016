//! `openObjectSource`: an object-store source, opened (its HEAD request) on a pool thread. The
//! TypeScript in front applies every default and reads the environment; this gets complete values.

use crate::errors::NativeFailure;
use crate::options::{object_options, NativeObjectOptions};
use crate::panic::guard;
use crate::source::NativeSource;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::sync::Arc;
use uffd_core::object_source::{ObjectOptions, ObjectSource};
use uffd_core::source::Source;

/// What opening gave: the source, or why there is none.
#[napi]
pub struct NativeObjectOutcome {
    source: Option<NativeSource>,
    error: Option<NativeFailure>,
}

#[napi]
impl NativeObjectOutcome {
    #[napi]
    pub fn take_source(&mut self) -> Option<NativeSource> {
        self.source.take()
    }
    #[napi]
    pub fn take_error(&mut self) -> Option<NativeFailure> {
        self.error.take()
    }
}

#[napi(ts_return_type = "Promise<NativeObjectOutcome>")]
pub fn open_object_source(env: Env, url: String, options: NativeObjectOptions) -> napi::Result<AsyncTask<Open>> {
    let options = object_options(&env, options)?;
    Ok(AsyncTask::new(Open { url, options: Some(options) }))
}

pub struct Open {
    url: String,
    options: Option<ObjectOptions>,
}

impl Task for Open {
    type Output = uffd_core::Result<Arc<ObjectSource>>;
    type JsValue = NativeObjectOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("objectStore", || match self.options.take() {
            Some(options) => ObjectSource::open(&self.url, options),
            None => Err(uffd_core::Error::invalid("objectStore", "this object source was already opened")),
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match output {
            Ok(object) => NativeObjectOutcome { source: Some(NativeSource::of(Source::Object(object))), error: None },
            Err(error) => NativeObjectOutcome { source: None, error: Some(NativeFailure::of(&error)) },
        })
    }
}
