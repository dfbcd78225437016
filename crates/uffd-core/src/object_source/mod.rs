//! A native source backed by object storage (S3 and S3-compatible stores, plain HTTP Range
//! requests), for memory whose pages live in a bucket: VM snapshots, model files, data sets.
//!
//! The object is read in chunks (4 MiB by default) by range requests on a small runtime of the
//! core's own (`runtime.rs`), many in flight at once (`fetch.rs`); a chunk is requested once
//! however many faults wait on it, kept in a bounded memory cache (`chunks.rs`) and, if asked, in
//! a directory the processes of the machine share (`disk.rs`). A fault never blocks the loop thread:
//! it waits in the fault table, with its deadline, until its chunk arrives, and the runtime maps the
//! chunk's pages and wakes it (`object_faults.rs`). Sequential faults read ahead by whole chunks; random
//! ones shrink the request down to the faulting page, as the file source's adaptive readahead does.
//!
//! An object stored with the manifest's content type (`manifest.rs`, made by `push.rs`) is a pushed
//! snapshot: the source reads the manifest when it is made and serves the memory it describes,
//! each chunk a whole object of its own (compressed, named by its hash, checked against it when
//! read whole), the holes as zeros without a request; the disk cache then keys chunks by content.
//! A random fault reads only the frames of a chunk around its page (`frames.rs`).
//!
//! The source's own work is in four parts, each an `impl ObjectSource` of its own: what a fault
//! reads and what is read ahead (`window.rs`), chunks loaded into memory once (`loading.rs`), a
//! pushed snapshot's chunks and frames (`snapshot.rs`), and the store going down and coming back
//! (`outage.rs`). This file holds the source's state, its opening, and the reads that use them.

mod beside;
mod breaker;
mod chunks;
mod counters;
mod credentials;
mod defaults;
mod disk;
mod fetch;
mod frames;
mod loading;
pub mod manifest;
mod outage;
mod push;

pub(crate) mod runtime;
mod snapshot;
mod store;
mod window;

pub use credentials::{CredentialSource, Pushed};
pub use defaults::{DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY, DEFAULT_FRAME_SIZE};
pub use fetch::RetryPolicy;
pub use push::{push, PushOptions, PushReport};
pub use store::{AzureAccount, Credentials, Location, StoreOptions};

use crate::error::{Error, Result};
use crate::region::Region;
use breaker::Breaker;
use bytes::Bytes;
use chunks::ChunkCache;
use counters::ObjectCounters;
use disk::DiskCache;
use fetch::Fetcher;
use manifest::Manifest;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

const OP: &str = "objectStore";

/// How an object source reads and caches.
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    pub store: StoreOptions,
    /// Bytes per range request of a chunk; a multiple of 4096.
    pub chunk_size: usize,
    /// Range requests in flight at once.
    pub concurrency: usize,
    /// Chunks read ahead of a sequential fault, at most; and, with the one in use, at most what
    /// the memory cache holds.
    pub readahead_chunks: usize,
    /// Random faults shrink the request down to a page; false: always whole chunks.
    pub adaptive: bool,
    /// Bytes of chunks kept in memory.
    pub memory_cache: usize,
    /// A directory shared by the processes of the machine; `None`: no disk cache.
    pub cache_dir: Option<PathBuf>,
    pub retry: RetryPolicy,
    /// Pages that got the fallback while the store was down are discarded when it answers again,
    /// so they fault again and are read from the store (what was written to them since is lost).
    pub refetch_after_outage: bool,
}

impl ObjectOptions {
    /// The defaults, with what follows from a chunk size and a concurrency: as many chunks read
    /// ahead as run at once, twice that kept in memory.
    pub fn sized(chunk_size: usize, concurrency: usize) -> ObjectOptions {
        ObjectOptions {
            store: StoreOptions::default(),
            chunk_size,
            concurrency,
            readahead_chunks: concurrency,
            adaptive: true,
            memory_cache: 2 * concurrency * chunk_size,
            cache_dir: None,
            retry: RetryPolicy::default(),
            refetch_after_outage: false,
        }
    }
}

impl Default for ObjectOptions {
    fn default() -> Self {
        ObjectOptions::sized(DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY)
    }
}

/// What a source has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectStats {
    /// Range requests that succeeded, and the bytes they brought.
    pub requests: u64,
    pub bytes_fetched: u64,
    /// Tries again after a transient failure, and requests that failed for good.
    pub retries: u64,
    pub failures: u64,
    /// Chunks found in memory, and read from the disk cache (fetched by another process).
    pub memory_hits: u64,
    pub disk_hits: u64,
    pub disk_writes: u64,
    /// Faults that waited for the network.
    pub faults: u64,
    /// Bytes of chunks held in memory now.
    pub cached_bytes: u64,
    /// Times the store was found down (a request failed past its retry bound), and times a probe
    /// found it answering again after that.
    pub outages: u64,
    pub recoveries: u64,
    /// Pages whose fault got the fallback because the store failed, and of those, pages discarded
    /// when it answered again (`refetch_after_outage`).
    pub fallback_pages: u64,
    pub refetched_pages: u64,
}

/// An object in a store, read in chunks. Made by [`ObjectSource::open`], which reads its size and
/// ETag; shared by every registration and fault that uses it.
pub struct ObjectSource {
    fetcher: Fetcher,
    /// The memory's size: the object's, or the one its manifest gives.
    size: u64,
    /// What a pushed snapshot's manifest says; `None` for a plain object.
    snapshot: Option<Snapshot>,
    chunk_size: usize,
    readahead_chunks: usize,
    adaptive: bool,
    cache: ChunkCache,
    disk: Option<DiskCache>,
    /// Chunks being read, with whoever waits for them.
    loading: Mutex<HashMap<u64, Vec<oneshot::Sender<Result<Bytes>>>>>,
    window: Mutex<Window>,
    pub(crate) counters: Arc<ObjectCounters>,
    breaker: Breaker,
    refetch_after_outage: bool,
    /// Pages whose fault got the fallback because the store failed (the latest `FELL_BACK_LISTED`),
    /// to list, and to discard when the store answers again (with `refetch_after_outage`).
    fell_back: Mutex<VecDeque<FellBack>>,
    /// A pushed snapshot's chunks found corrupt, with why: a chunk is named by its content, so
    /// fetching it again brings the same bytes; its faults get the error at once.
    corrupt: Mutex<HashMap<u64, Error>>,
}

/// A pushed snapshot being served.
struct Snapshot {
    manifest: Manifest,
    location: Location,
    /// A chunk of zeros, sliced for the holes.
    zeros: Bytes,
}

impl Snapshot {
    /// The name of chunk `index` in errors: its index, the snapshot's URL, the chunk's own URL.
    fn describe(&self, url: &str, index: u64, chunk: &manifest::Chunk) -> String {
        format!("chunk {index} of {url} ({})", self.location.url_of(&self.manifest.object_key(chunk, 0)))
    }
}

/// A page whose fault got the fallback because the store failed.
struct FellBack {
    region: Weak<Region>,
    offset: usize,
    len: usize,
    /// While the store was down (not, say, an object replaced under the source).
    in_outage: bool,
}

/// The adaptive request size: it doubles while faults follow each other and halves on a jump.
struct Window {
    /// The bytes the last plan mapped: a fault inside them (another thread's, or one that came
    /// while they were being mapped) neither grows nor shrinks the window.
    start: u64,
    /// The object offset a sequential fault would come at next.
    next: Option<u64>,
    bytes: u64,
}

/// What one fault asks of the source: the bytes `start..end` of the object, from one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) index: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// Read the whole chunk (through the caches), and this many chunks after it in the background.
    pub(crate) whole: bool,
    pub(crate) ahead: u64,
    /// A whole chunk, not in memory when the fault came, for a fault outside a sequential run:
    /// its page is mapped (and its thread woken) before the rest of the chunk.
    pub(crate) waits: bool,
}

impl ObjectSource {
    /// Opens `url`, reading the object's size and ETag (a HEAD request): a missing object (404),
    /// a refusal (403), or a store that cannot be reached fails here. Blocks the calling thread,
    /// which must not be a thread of the object-store runtime.
    pub fn open(url: &str, options: ObjectOptions) -> Result<Arc<ObjectSource>> {
        defaults::check_chunk_size(OP, options.chunk_size)?;
        if options.concurrency == 0 {
            return Err(Error::invalid(OP, "concurrency must be at least 1"));
        }
        let location = Location::parse(url)?;
        let (store, path) = store::connect(&location, &options.store)?;
        let (meta, content_type) = runtime::block_on(head(store.as_ref(), &path, url, options.retry))??;
        let counters = Arc::new(ObjectCounters::default());
        let fetcher = Fetcher {
            store,
            path,
            url: url.into(),
            size: meta.size,
            etag: meta.e_tag.clone(),
            retry: options.retry,
            permits: Semaphore::new(options.concurrency),
            counters: counters.clone(),
        };
        let breaker = Breaker::new();
        let snapshot = if content_type.as_deref() == Some(manifest::CONTENT_TYPE) {
            if meta.size > manifest::MAX_SIZE {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{url} says it is a snapshot manifest but holds {} bytes (at most {})",
                        meta.size,
                        manifest::MAX_SIZE
                    ),
                ));
            }
            let bytes = runtime::block_on(fetcher.get(0..meta.size, &breaker))??;
            let manifest = Manifest::parse(url, &bytes)?;
            let zeros = Bytes::from(vec![0; manifest.chunk_size as usize]);
            Some(Snapshot { manifest, location, zeros })
        } else {
            None
        };
        let (size, chunk_size) = match &snapshot {
            Some(snapshot) => (snapshot.manifest.size, snapshot.manifest.chunk_size as usize),
            None => (meta.size, options.chunk_size),
        };
        let disk = match (options.cache_dir, &snapshot) {
            (Some(dir), Some(_)) => Some(DiskCache::content(dir)?),
            (Some(dir), None) => Some(DiskCache::open(dir, url, meta.e_tag.as_deref(), meta.size, chunk_size)?),
            (None, _) => None,
        };
        Ok(Arc::new(ObjectSource {
            fetcher,
            size,
            snapshot,
            chunk_size,
            // Chunks read ahead, with the one in use, must fit the memory cache: more would push
            // each other out before their pages are mapped, and be fetched again. A disk cache
            // keeps them: read from it again, not from the store.
            readahead_chunks: match &disk {
                Some(_) => options.readahead_chunks,
                None => options.readahead_chunks.min((options.memory_cache / chunk_size).saturating_sub(1)),
            },
            adaptive: options.adaptive,
            cache: ChunkCache::new(options.memory_cache),
            disk,
            loading: Mutex::new(HashMap::new()),
            window: Mutex::new(Window { start: 0, next: None, bytes: chunk_size as u64 }),
            counters,
            breaker,
            refetch_after_outage: options.refetch_after_outage,
            fell_back: Mutex::new(VecDeque::new()),
            corrupt: Mutex::new(HashMap::new()),
        }))
    }

    pub fn url(&self) -> &str {
        &self.fetcher.url
    }
    /// The object's size in bytes, when the source was made (a pushed snapshot's: the memory's).
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Whether the object is a pushed snapshot's manifest.
    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }
    pub fn etag(&self) -> Option<&str> {
        self.fetcher.etag.as_deref()
    }
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    pub fn stats(&self) -> ObjectStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        ObjectStats {
            requests: get(&c.requests),
            bytes_fetched: get(&c.bytes_fetched),
            retries: get(&c.retries),
            failures: get(&c.failures),
            memory_hits: get(&c.memory_hits),
            disk_hits: get(&c.disk_hits),
            disk_writes: get(&c.disk_writes),
            faults: get(&c.faults),
            cached_bytes: self.cache.bytes() as u64,
            outages: get(&c.outages),
            recoveries: get(&c.recoveries),
            fallback_pages: get(&c.fallback_pages),
            refetched_pages: get(&c.refetched_pages),
        }
    }

    fn chunk_range(&self, index: u64) -> Range<u64> {
        let start = index * self.chunk_size as u64;
        start..(start + self.chunk_size as u64).min(self.size())
    }

    fn chunks(&self) -> u64 {
        self.size().div_ceil(self.chunk_size as u64)
    }

    /// The object's bytes `plan.start..plan.end` (fewer at the object's end): from a chunk when
    /// the plan reads whole chunks or the chunk is cached or on its way, else one small request.
    pub(crate) async fn read(self: Arc<Self>, plan: Plan) -> Result<Bytes> {
        let base = self.chunk_range(plan.index).start;
        let end = plan.end.min(self.size());
        if plan.whole || self.cache.contains(plan.index) || self.is_loading(plan.index) {
            let chunk = self.chunk(plan.index).await?;
            let from = ((plan.start - base) as usize).min(chunk.len());
            return Ok(chunk.slice(from..((end - base) as usize).min(chunk.len())));
        }
        if let Some(zeros) = self.hole(plan.index) {
            return Ok(
                zeros.slice(((plan.start - base) as usize).min(zeros.len())..((end - base) as usize).min(zeros.len()))
            );
        }
        if let Some(disk) = &self.disk {
            let whole = self.chunk_range(plan.index);
            if let Some(bytes) = disk.read_range(
                &self.slot(plan.index),
                (whole.end - whole.start) as usize,
                plan.start - base,
                end - plan.start,
            ) {
                self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(bytes);
            }
        }
        if self.snapshot.is_some() {
            return self.get_frames(plan.index, plan.start - base, end - base).await;
        }
        self.fetch(plan.start..end).await
    }

    /// Fills `out` with the object's bytes at `offset`, zeros past its end, blocking this thread
    /// (a prefetch on a pool thread, a handler's `fromSource`). The chunks after it are read ahead
    /// if `read_ahead`.
    pub fn read_blocking(self: &Arc<Self>, offset: u64, out: &mut [u8], read_ahead: bool) -> Result<()> {
        let end = (offset + out.len() as u64).min(self.size());
        let mut at = offset;
        while at < end {
            let index = at / self.chunk_size as u64;
            let base = self.chunk_range(index).start;
            self.read_ahead(&Plan {
                index,
                start: at,
                end,
                whole: true,
                ahead: if read_ahead { self.readahead_chunks as u64 } else { 0 },
                waits: true,
            });
            let chunk = runtime::block_on(self.clone().chunk(index))??;
            let from = (at - base) as usize;
            let take = ((end - at) as usize).min(chunk.len().saturating_sub(from));
            if take == 0 {
                break;
            }
            let into = (at - offset) as usize;
            out[into..into + take].copy_from_slice(&chunk[from..from + take]);
            at += take as u64;
        }
        let filled = (end.saturating_sub(offset) as usize).min(out.len());
        out[filled..].fill(0);
        Ok(())
    }

    /// Reads the object's first `chunks` chunks (all with `None`) with `concurrency` range
    /// requests of a chunk each, straight from the store and without the caches: the raw bandwidth
    /// (or, with one chunk, the one request) a source is measured against. Returns the bytes read
    /// and how long it took.
    pub fn read_raw(self: &Arc<Self>, chunks: Option<u64>) -> Result<(u64, Duration)> {
        let source = self.clone();
        runtime::block_on(async move {
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for index in 0..chunks.unwrap_or(u64::MAX).min(source.chunks()) {
                let source = source.clone();
                tasks.spawn(async move { source.get_chunk(index).await.map(|b| b.len() as u64) });
            }
            let mut total = 0;
            while let Some(done) = tasks.join_next().await {
                total += done.map_err(|e| Error::invalid(OP, format!("a read task failed: {e}")))??;
            }
            Ok((total, started.elapsed()))
        })?
    }
}

/// The object's size, ETag and content type. A transient answer (5xx) is tried again within the
/// policy; a store that cannot be reached, or says no, fails at once.
async fn head(
    store: &dyn object_store::ObjectStore,
    path: &object_store::path::Path,
    url: &str,
    retry: RetryPolicy,
) -> Result<(object_store::ObjectMeta, Option<String>)> {
    let mut delay = retry.initial_delay;
    let started = Instant::now();
    let mut tries = 0;
    let options = object_store::GetOptions { head: true, ..Default::default() };
    loop {
        match store.get_opts(path, options.clone()).await {
            Ok(result) => {
                let content_type =
                    result.attributes.get(&object_store::Attribute::ContentType).map(|value| value.to_string());
                return Ok((result.meta, content_type));
            }
            Err(err) => {
                let err = store::remote_error("HEAD", url, &err);
                let retry_it = err.status().is_some_and(|s| s >= 500 || s == 429 || s == 408);
                if !retry_it || tries >= retry.retries || started.elapsed() > retry.timeout {
                    return Err(err);
                }
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max_delay);
            }
        }
    }
}
