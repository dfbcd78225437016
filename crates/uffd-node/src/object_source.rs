//! `openObjectSource`: an object-store source, opened (its HEAD request) on a pool thread. The
//! TypeScript in front applies every default and reads the environment; this gets complete values.

use crate::args::to_usize;
use crate::handshake::NativeFailure;
use crate::source::NativeSource;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::sync::Arc;
use std::time::Duration;
use uffd_core::object_source::{Credentials, ObjectOptions, ObjectSource, RetryPolicy, StoreOptions};
use uffd_core::source::Source;

/// Every option of an object source, defaults applied (lib/source.ts).
#[napi(object)]
pub struct NativeObjectOptions {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub anonymous: bool,
    pub virtual_hosted_style: bool,
    pub chunk_size: f64,
    pub concurrency: f64,
    pub readahead_chunks: f64,
    pub adaptive: bool,
    pub memory_cache: f64,
    pub cache_dir: Option<String>,
    pub retries: f64,
    pub retry_delay_ms: f64,
    pub retry_max_delay_ms: f64,
    pub retry_timeout_ms: f64,
    pub connect_timeout_ms: f64,
    pub request_timeout_ms: f64,
}

/// An object source's counters.
#[napi(object, object_from_js = false)]
pub struct NativeObjectStats {
    pub requests: f64,
    pub bytes_fetched: f64,
    pub retries: f64,
    pub failures: f64,
    pub memory_hits: f64,
    pub disk_hits: f64,
    pub disk_writes: f64,
    pub faults: f64,
    pub cached_bytes: f64,
    pub size: f64,
    pub etag: Option<String>,
}

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
    let ms = |what: &str, value: f64| to_usize(&env, what, value).map(|v| Duration::from_millis(v as u64));
    let credentials = match (options.access_key_id, options.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(Credentials { access_key_id, secret_access_key, session_token: options.session_token })
        }
        _ => None,
    };
    let options = ObjectOptions {
        store: StoreOptions {
            endpoint: options.endpoint,
            region: options.region,
            credentials,
            anonymous: options.anonymous,
            virtual_hosted_style: options.virtual_hosted_style,
            connect_timeout: ms("connectTimeoutMs", options.connect_timeout_ms)?,
            request_timeout: ms("requestTimeoutMs", options.request_timeout_ms)?,
        },
        chunk_size: to_usize(&env, "chunkSize", options.chunk_size)?,
        concurrency: to_usize(&env, "concurrency", options.concurrency)?,
        readahead_chunks: to_usize(&env, "readaheadChunks", options.readahead_chunks)?,
        adaptive: options.adaptive,
        memory_cache: to_usize(&env, "memoryCache", options.memory_cache)?,
        cache_dir: options.cache_dir.map(Into::into),
        retry: RetryPolicy {
            retries: to_usize(&env, "retry.retries", options.retries)? as u32,
            initial_delay: ms("retry.delayMs", options.retry_delay_ms)?,
            max_delay: ms("retry.maxDelayMs", options.retry_max_delay_ms)?,
            timeout: ms("retry.timeoutMs", options.retry_timeout_ms)?,
        },
    };
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
        Ok(ObjectSource::open(&self.url, self.options.take().unwrap_or_default()))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match output {
            Ok(object) => NativeObjectOutcome { source: Some(NativeSource::of(Source::Object(object))), error: None },
            Err(error) => NativeObjectOutcome { source: None, error: Some(NativeFailure::of(&error)) },
        })
    }
}

/// The whole object read straight from the store (the bench's baseline), and how long it took.
#[napi(object, object_from_js = false)]
pub struct NativeRawRead {
    pub bytes: f64,
    pub ms: f64,
    pub error: Option<NativeFailure>,
}

pub struct ReadRaw(pub(crate) Arc<ObjectSource>, pub(crate) Option<u64>);

impl Task for ReadRaw {
    type Output = uffd_core::Result<(u64, Duration)>;
    type JsValue = NativeRawRead;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(self.0.read_raw(self.1))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match output {
            Ok((bytes, took)) => NativeRawRead { bytes: bytes as f64, ms: took.as_secs_f64() * 1e3, error: None },
            Err(error) => NativeRawRead { bytes: 0.0, ms: 0.0, error: Some(NativeFailure::of(&error)) },
        })
    }
}

pub(crate) fn stats_of(object: &ObjectSource) -> NativeObjectStats {
    let s = object.stats();
    NativeObjectStats {
        requests: s.requests as f64,
        bytes_fetched: s.bytes_fetched as f64,
        retries: s.retries as f64,
        failures: s.failures as f64,
        memory_hits: s.memory_hits as f64,
        disk_hits: s.disk_hits as f64,
        disk_writes: s.disk_writes as f64,
        faults: s.faults as f64,
        cached_bytes: s.cached_bytes as f64,
        size: object.size() as f64,
        etag: object.etag().map(Into::into),
    }
}
