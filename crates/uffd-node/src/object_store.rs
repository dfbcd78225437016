//! What the object store behind an object source tells JavaScript, apart from serving faults: its
//! counters (`objectStats`), the whole object read straight from the store (`readRaw`, the
//! bench's baseline), and the small objects beside it (`readBeside`, `writeBeside`).

use crate::errors::BindingFailure;
use crate::panic::guard;
use napi::bindgen_prelude::Buffer;
use napi::{Env, Task};
use napi_derive::napi;
use std::sync::Arc;
use std::time::Duration;
use uffd_core::object_source::ObjectSource;

/// An object source's counters.
#[napi(object, object_from_js = false)]
pub struct BindingObjectStats {
    pub requests: f64,
    pub bytes_fetched: f64,
    pub retries: f64,
    pub failures: f64,
    pub memory_hits: f64,
    pub disk_hits: f64,
    pub disk_writes: f64,
    pub faults: f64,
    pub cached_bytes: f64,
    pub outages: f64,
    pub recoveries: f64,
    pub fallback_pages: f64,
    pub refetched_pages: f64,
    pub size: f64,
    pub etag: Option<String>,
    pub snapshot: bool,
}

pub(crate) fn stats_of(object: &ObjectSource) -> BindingObjectStats {
    let s = object.stats();
    BindingObjectStats {
        requests: s.requests as f64,
        bytes_fetched: s.bytes_fetched as f64,
        retries: s.retries as f64,
        failures: s.failures as f64,
        memory_hits: s.memory_hits as f64,
        disk_hits: s.disk_hits as f64,
        disk_writes: s.disk_writes as f64,
        faults: s.faults as f64,
        cached_bytes: s.cached_bytes as f64,
        outages: s.outages as f64,
        recoveries: s.recoveries as f64,
        fallback_pages: s.fallback_pages as f64,
        refetched_pages: s.refetched_pages as f64,
        size: object.size() as f64,
        etag: object.etag().map(Into::into),
        snapshot: object.is_snapshot(),
    }
}

/// A page whose fault got the fallback because the store failed.
#[napi(object, object_from_js = false)]
pub struct BindingFallbackPage {
    pub region: f64,
    pub offset: f64,
}

pub(crate) fn fallback_pages_of(object: &ObjectSource) -> Vec<BindingFallbackPage> {
    object
        .fallback_pages()
        .into_iter()
        .map(|(region, offset)| BindingFallbackPage { region: region as f64, offset: offset as f64 })
        .collect()
}

/// The whole object read straight from the store (the bench's baseline), and how long it took.
#[napi(object, object_from_js = false)]
pub struct BindingRawRead {
    pub bytes: f64,
    pub ms: f64,
    pub error: Option<BindingFailure>,
}

/// Reads the first `chunks` chunks (all if none) of the object on a pool thread, without caches.
pub struct ReadRaw(pub(crate) Arc<ObjectSource>, pub(crate) Option<u64>);

impl Task for ReadRaw {
    type Output = uffd_core::Result<(u64, Duration)>;
    type JsValue = BindingRawRead;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("readRaw", || self.0.read_raw(self.1))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(match output {
            Ok((bytes, took)) => BindingRawRead { bytes: bytes as f64, ms: took.as_secs_f64() * 1e3, error: None },
            Err(error) => BindingRawRead { bytes: 0.0, ms: 0.0, error: Some(BindingFailure::of(&error)) },
        })
    }
}

/// The object beside an object source's: its URL, its bytes (`undefined` when there is none or
/// it was written), or why it could not be read or written.
#[napi(object, object_from_js = false)]
pub struct BindingBeside {
    pub url: String,
    pub bytes: Option<Buffer>,
    pub error: Option<BindingFailure>,
}

/// Reads (with no bytes to write) or writes the object beside an object source's (`KEY` +
/// suffix), on a pool thread.
pub struct Beside {
    pub(crate) object: Arc<ObjectSource>,
    pub(crate) suffix: String,
    pub(crate) write: Option<Vec<u8>>,
}

impl Task for Beside {
    type Output = uffd_core::Result<Option<Vec<u8>>>;
    type JsValue = BindingBeside;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        match self.write.take() {
            Some(bytes) => guard("writeBeside", || self.object.write_beside(&self.suffix, bytes).map(|()| None)),
            None => guard("readBeside", || self.object.read_beside(&self.suffix)),
        }
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let url = self.object.url_beside(&self.suffix);
        Ok(match output {
            Ok(bytes) => BindingBeside { url, bytes: bytes.map(Buffer::from), error: None },
            Err(error) => BindingBeside { url, bytes: None, error: Some(BindingFailure::of(&error)) },
        })
    }
}
