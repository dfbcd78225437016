//! `NativeSource`: a native page source, kept until a registration takes it.

use crate::args::to_opt_usize;
use crate::errors::OrThrow;
use napi::bindgen_prelude::Uint8Array;
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, Mutex};
use uffd_core::source::{Readahead, Served, Source};

#[napi]
pub struct NativeSource {
    /// Taken by the first registration; later ones get a fresh copy where one can be made.
    source: Mutex<Option<Source>>,
    bytes: Option<Arc<[u8]>>,
    file: Option<(String, u64)>,
    kind: &'static str,
}

#[napi]
impl NativeSource {
    #[napi(factory)]
    pub fn zero() -> Self {
        Self::of(Source::Zero, "zero", None, None)
    }

    /// Copies the bytes once, into memory the loop thread reads.
    #[napi(factory)]
    pub fn bytes(bytes: Uint8Array) -> Self {
        let bytes: Arc<[u8]> = Arc::from(&bytes[..]);
        Self::of(Source::Bytes(bytes.clone()), "bytes", Some(bytes), None)
    }

    #[napi(factory)]
    pub fn file(env: Env, path: String, offset: f64) -> napi::Result<Self> {
        let offset = crate::args::to_usize(&env, "offset", offset)? as u64;
        let source = Source::file(&path, offset).or_throw(&env)?;
        Ok(Self::of(source, "file", None, Some((path, offset))))
    }

    #[napi(factory)]
    pub fn page_cache() -> Self {
        Self::of(Source::PageCache, "pageCache", None, None)
    }

    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn of(source: Source, kind: &'static str, bytes: Option<Arc<[u8]>>, file: Option<(String, u64)>) -> Self {
        NativeSource { source: Mutex::new(Some(source)), bytes, file, kind }
    }

    /// The source with its readahead, for one registration.
    pub(crate) fn served(
        &self,
        env: &Env,
        pages: Option<f64>,
        max_pages: Option<f64>,
        adaptive: Option<bool>,
    ) -> napi::Result<Arc<Served>> {
        let pages = to_opt_usize(env, "readahead.pages", pages)?.unwrap_or(1);
        let max_pages = to_opt_usize(env, "readahead.maxPages", max_pages)?.unwrap_or(pages.max(1) * 64);
        let adaptive = adaptive.unwrap_or(false);
        let taken = self.source.lock().unwrap_or_else(|p| p.into_inner()).take();
        let source = match taken {
            Some(source) => source,
            None => match (self.kind, &self.bytes, &self.file) {
                ("bytes", Some(bytes), _) => Source::Bytes(bytes.clone()),
                ("file", _, Some((path, offset))) => Source::file(path, *offset).or_throw(env)?,
                ("pageCache", _, _) => Source::PageCache,
                _ => Source::Zero,
            },
        };
        Ok(Served::new(source, Readahead { pages, adaptive, max_pages }))
    }
}
