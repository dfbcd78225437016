//! `openObjectSource`: an object-store source, opened (its HEAD request) on a pool thread; and
//! `pushSnapshot`, which puts a memory file into a store as a snapshot that such a source reads.
//! The TypeScript in front applies every default and reads the environment; this gets complete values.

use crate::errors::BindingFailure;
use crate::options::{object_options, BindingObjectOptions};
use crate::panic::guard;
use crate::source::BindingSource;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::path::Path;
use std::sync::Arc;
use uffd_core::object_source::{push, ObjectOptions, ObjectSource, PushOptions, PushReport, Pushed};
use uffd_core::source::Source;

/// What opening gave: the source, or why there is none.
#[napi]
pub struct BindingObjectOutcome {
    source: Option<BindingSource>,
    error: Option<BindingFailure>,
}

#[napi]
impl BindingObjectOutcome {
    #[napi]
    pub fn take_source(&mut self) -> Option<BindingSource> {
        self.source.take()
    }
    #[napi]
    pub fn take_error(&mut self) -> Option<BindingFailure> {
        self.error.take()
    }
}

/// Credentials a provider function gives, set again before they expire.
#[napi]
#[derive(Default)]
pub struct BindingCredentials {
    pushed: Arc<Pushed>,
}

#[napi]
impl BindingCredentials {
    #[napi(constructor)]
    pub fn new() -> Self {
        Self::default()
    }

    #[napi]
    pub fn set(&self, access_key_id: String, secret_access_key: String, session_token: Option<String>) {
        self.pushed.set(access_key_id, secret_access_key, session_token);
    }
}

#[napi(ts_return_type = "Promise<BindingObjectOutcome>")]
pub fn open_object_source(
    env: Env,
    url: String,
    options: BindingObjectOptions,
    credentials: Option<&BindingCredentials>,
) -> napi::Result<AsyncTask<Open>> {
    let options = object_options(&env, options, credentials.map(|c| c.pushed.clone()))?;
    Ok(AsyncTask::new(Open { url, options: Some(options) }))
}

pub struct Open {
    url: String,
    options: Option<ObjectOptions>,
}

impl Task for Open {
    type Output = uffd_core::Result<Arc<ObjectSource>>;
    type JsValue = BindingObjectOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("objectStore", || match self.options.take() {
            Some(options) => ObjectSource::open(&self.url, options),
            None => Err(uffd_core::Error::invalid("objectStore", "this object source was already opened")),
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match output {
            Ok(object) => BindingObjectOutcome {
                source: Some(BindingSource::of(Source::Object(object, 0, Arc::from([])))),
                error: None,
            },
            Err(error) => BindingObjectOutcome { source: None, error: Some(BindingFailure::of(&error)) },
        })
    }
}

/// What `pushSnapshot` did (lib/snapshot.ts), or why it failed.
#[napi(object, object_from_js = false)]
pub struct BindingPushReport {
    pub url: String,
    pub chunk_prefix: String,
    pub chunks: f64,
    pub uploaded: f64,
    pub deduped: f64,
    pub from_base: f64,
    pub holes: f64,
    pub deltas: f64,
    pub bytes_in: f64,
    pub bytes_data: f64,
    pub bytes_out: f64,
    pub bytes_stored: f64,
    pub requests: f64,
    pub ms: f64,
    pub error: Option<BindingFailure>,
}

/// Pushes a memory file as a snapshot on a pool thread. The store, chunk size, concurrency and
/// retries come from the object-source options (lib/source.ts applies their defaults); the level,
/// frame size, base and chunk prefix are the push's own.
#[napi(ts_return_type = "Promise<BindingPushReport>")]
#[allow(clippy::too_many_arguments)] // the JavaScript call's arguments, as lib/snapshot.ts passes them
pub fn push_snapshot(
    env: Env,
    file: String,
    url: String,
    options: BindingObjectOptions,
    level: Option<i32>,
    frame_size: Option<u32>,
    base: Option<String>,
    chunk_prefix: Option<String>,
    credentials: Option<&BindingCredentials>,
) -> napi::Result<AsyncTask<Push>> {
    // Left out, the chunk and frame sizes are the base's (else the defaults): the core decides.
    let chunk_size = options.chunk_size.map(|size| size as usize);
    let options = object_options(&env, options, credentials.map(|c| c.pushed.clone()))?;
    Ok(AsyncTask::new(Push {
        file,
        url,
        options: PushOptions {
            store: options.store,
            chunk_size,
            level: level.unwrap_or(PushOptions::default().level),
            frame_size: frame_size.map(|size| size as usize),
            concurrency: options.concurrency,
            base,
            chunk_prefix,
            retry: options.retry,
        },
    }))
}

pub struct Push {
    file: String,
    url: String,
    options: PushOptions,
}

impl Task for Push {
    type Output = uffd_core::Result<PushReport>;
    type JsValue = BindingPushReport;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("push", || push(Path::new(&self.file), &self.url, self.options.clone()))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let (report, error) = match output {
            Ok(report) => (report, None),
            Err(error) => (PushReport::default(), Some(BindingFailure::of(&error))),
        };
        Ok(BindingPushReport {
            url: report.url,
            chunk_prefix: report.chunk_prefix,
            chunks: report.chunks as f64,
            uploaded: report.uploaded as f64,
            deduped: report.deduped as f64,
            from_base: report.from_base as f64,
            holes: report.holes as f64,
            deltas: report.deltas as f64,
            bytes_in: report.bytes_in as f64,
            bytes_data: report.bytes_data as f64,
            bytes_out: report.bytes_out as f64,
            bytes_stored: report.bytes_stored as f64,
            requests: report.requests as f64,
            ms: report.elapsed.as_secs_f64() * 1e3,
            error,
        })
    }
}
