//! `BindingSource`: a native page source; each registration gets its own readahead window over it.

use crate::args::{to_opt_usize, to_usize};
use crate::errors::{invalid, OrThrow};
use crate::object_store::{fallback_pages_of, stats_of, Beside, BindingFallbackPage, BindingObjectStats, ReadRaw};
use napi::bindgen_prelude::{AsyncTask, Uint8Array};
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, OnceLock};
use uffd_core::object_source::ObjectSource;
use uffd_core::source::{Readahead, Recorder, ServeOptions, Served, Source};

/// What `fault.fromSource(source)` maps: the fault's page, never more.
const ONE_PAGE: Readahead = Readahead { pages: 1, adaptive: false, max_pages: 1 };

#[napi]
pub struct BindingSource {
    source: Source,
    /// The source with a one-page window, made on the first `fault.fromSource(source)`.
    for_faults: OnceLock<Arc<Served>>,
}

#[napi]
impl BindingSource {
    #[napi(factory)]
    pub fn zero() -> Self {
        Self::of(Source::Zero)
    }

    /// Copies the bytes once, into memory the loop thread reads.
    #[napi(factory)]
    pub fn bytes(bytes: Uint8Array) -> Self {
        Self::of(Source::Bytes(Arc::from(&bytes[..])))
    }

    #[napi(factory)]
    pub fn file(env: Env, path: String, offset: f64, writable: Option<bool>) -> napi::Result<Self> {
        let offset = to_usize(&env, "offset", offset)? as u64;
        let source =
            if writable == Some(true) { Source::writable_file(&path, offset) } else { Source::file(&path, offset) };
        Ok(Self::of(source.or_throw(&env)?))
    }

    /// Files stacked base first: each page from the topmost file with data there.
    #[napi(factory)]
    pub fn layers(env: Env, paths: Vec<String>, offset: f64, writable: Option<bool>) -> napi::Result<Self> {
        let offset = to_usize(&env, "offset", offset)? as u64;
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        Ok(Self::of(Source::layers(&paths, offset, writable == Some(true)).or_throw(&env)?))
    }

    /// An object source's object with local files above it, base first, all read from `offset`.
    #[napi(factory)]
    pub fn layers_over(env: Env, object: &BindingSource, paths: Vec<String>, offset: f64) -> napi::Result<Self> {
        let offset = to_usize(&env, "offset", offset)? as u64;
        let object = object.object(&env, "layers")?;
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        Ok(Self::of(Source::over_object(object, &paths, offset).or_throw(&env)?))
    }

    #[napi(factory)]
    pub fn page_cache() -> Self {
        Self::of(Source::PageCache)
    }

    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        match self.source {
            Source::Zero => "zero",
            Source::Bytes(_) => "bytes",
            Source::File(_) => "file",
            Source::Layers(_) => "layers",
            Source::PageCache => "pageCache",
            Source::Object(..) => "objectStore",
            Source::Handler => "handler",
        }
    }

    /// How many bytes the source has for a region from its offset 0 on (`undefined`: no end).
    #[napi(getter)]
    pub fn size(&self) -> Option<f64> {
        self.source.size().map(|bytes| bytes as f64)
    }

    /// An object source's counters (`undefined` for other sources).
    #[napi(getter)]
    pub fn object_stats(&self) -> Option<BindingObjectStats> {
        self.source.object().map(|object| stats_of(object))
    }

    /// An object source's pages that got the fallback because the store failed (`undefined` for
    /// other sources).
    #[napi]
    pub fn fallback_pages(&self) -> Option<Vec<BindingFallbackPage>> {
        self.source.object().map(|object| fallback_pages_of(object))
    }

    /// Reads the first `chunks` chunks (all by default) straight from the store, without the
    /// caches (the bench's baseline).
    #[napi(ts_return_type = "Promise<BindingRawRead>")]
    pub fn read_raw(&self, env: Env, chunks: Option<f64>) -> napi::Result<AsyncTask<ReadRaw>> {
        let chunks = to_opt_usize(&env, "chunks", chunks)?.map(|n| n as u64);
        Ok(AsyncTask::new(ReadRaw(self.object(&env, "readRaw")?, chunks)))
    }

    /// The object `KEY{suffix}` beside an object source's, read on a pool thread.
    #[napi(ts_return_type = "Promise<BindingBeside>")]
    pub fn read_beside(&self, env: Env, suffix: String) -> napi::Result<AsyncTask<Beside>> {
        Ok(AsyncTask::new(Beside { object: self.object(&env, "readBeside")?, suffix, write: None }))
    }

    /// Stores `bytes` as the object `KEY{suffix}` beside an object source's, on a pool thread.
    #[napi(ts_return_type = "Promise<BindingBeside>")]
    pub fn write_beside(&self, env: Env, suffix: String, bytes: Uint8Array) -> napi::Result<AsyncTask<Beside>> {
        let object = self.object(&env, "writeBeside")?;
        Ok(AsyncTask::new(Beside { object, suffix, write: Some(bytes.to_vec()) }))
    }

    fn object(&self, env: &Env, op: &'static str) -> napi::Result<Arc<ObjectSource>> {
        match self.source.object() {
            Some(object) => Ok(object.clone()),
            None => Err(invalid(env, op, "this is not an object source".into())),
        }
    }

    pub(crate) fn of(source: Source) -> Self {
        BindingSource { source, for_faults: OnceLock::new() }
    }

    /// The source with its own readahead window, for one registration (or a served range of
    /// another process's memory).
    pub(crate) fn served(&self, options: ServeOptions) -> Arc<Served> {
        Served::with(self.source.clone(), options)
    }

    pub(crate) fn source(&self) -> Source {
        self.source.clone()
    }

    /// The source as a handler's `fault.fromSource(source)` uses it: a page per fault.
    pub(crate) fn for_faults(&self) -> &Served {
        self.for_faults.get_or_init(|| Served::new(self.source.clone(), ONE_PAGE))
    }
}

/// Records the pages faults mapped, in the order they were first touched (a working-set trace).
#[napi]
pub struct BindingRecorder {
    pub(crate) recorder: Arc<Recorder>,
}

#[napi]
impl BindingRecorder {
    #[napi(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        BindingRecorder { recorder: Recorder::new() }
    }

    /// The file offsets of the pages recorded, in order.
    #[napi]
    pub fn pages(&self) -> Vec<f64> {
        self.recorder.pages().into_iter().map(|p| p as f64).collect()
    }
}
