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

mod beside;
mod breaker;
mod chunks;
mod counters;
mod credentials;
mod defaults;
mod disk;
mod fetch;
mod frames;
pub mod manifest;
mod push;

pub(crate) mod runtime;
mod store;

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
use disk::{DiskCache, Slot};
use fetch::Fetcher;
use manifest::Manifest;
use nix::errno::Errno;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Semaphore};

const OP: &str = "objectStore";

/// Pages listed as having got the fallback, at most: the oldest go first.
const FELL_BACK_LISTED: usize = 65536;

/// How an object source reads and caches.
#[derive(Debug, Clone)]
pub struct ObjectOptions {
    pub store: StoreOptions,
    /// Bytes per range request of a chunk; a multiple of 4096.
    pub chunk_size: usize,
    /// Range requests in flight at once.
    pub concurrency: usize,
    /// Chunks read ahead of a sequential fault, at most.
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
            readahead_chunks: options.readahead_chunks,
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

    /// What a fault at object offset `offset` reads, and moves the adaptive window.
    pub(crate) fn plan(&self, offset: u64, page: u64) -> Plan {
        let chunk = self.chunk_size as u64;
        let most = chunk * (1 + self.readahead_chunks as u64);
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = match window.next {
            _ if !self.adaptive => most,
            // The first fault reads one chunk: a first byte costs one request.
            None => chunk,
            Some(next) if offset == next => (window.bytes * 2).min(most),
            Some(next) if (window.start..next).contains(&offset) => window.bytes,
            Some(_) => (window.bytes / 2 / page * page).max(page),
        };
        // A pushed snapshot's chunk is read in whole frames (whole, if pushed before frames).
        let unit = match &self.snapshot {
            Some(snapshot) => snapshot.manifest.frame_size.unwrap_or(chunk),
            None => page,
        };
        let bytes = bytes.max(unit);
        window.bytes = bytes;
        let index = offset / chunk;
        let chunk_end = self.chunk_range(index).end.next_multiple_of(page);
        let plan = if bytes >= chunk {
            Plan { index, start: offset, end: chunk_end, whole: true, ahead: bytes / chunk - 1, waits: false }
        } else {
            let base = index * chunk;
            let end = (base + (offset + bytes - base).next_multiple_of(unit)).min(chunk_end);
            Plan { index, start: offset, end, whole: false, ahead: 0, waits: false }
        };
        // A whole chunk fetched for a fault outside a sequential run (the first fault, a random
        // one): its page first. In a run the thread needs the whole chunk next, and a small range
        // is mapped whole: one copy, so the thread's next fault does not race the rest (and, for
        // a range, fetch it again).
        let plan = Plan { waits: plan.whole && plan.ahead == 0 && !self.cache.contains(index), ..plan };
        if !(window.start..window.next.unwrap_or(0)).contains(&offset) {
            window.start = plan.start;
            window.next = Some(plan.end);
        }
        plan
    }

    /// Starts the chunks a plan reads ahead.
    pub(crate) fn read_ahead(self: &Arc<Self>, plan: &Plan) {
        for index in plan.index + 1..=(plan.index + plan.ahead).min(self.chunks().saturating_sub(1)) {
            self.start_loading(index);
        }
    }

    /// Starts fetching the chunks that the byte ranges `ahead` (object offsets and lengths, in the
    /// order they will be read) need next: the first `readahead_chunks` of them, those not in
    /// memory or on their way. A replay in a trace's order keeps that many requests in flight, not
    /// one; and never more chunks ahead than that, in memory or not, so that none is pushed out of
    /// the memory cache before its pages are mapped (and fetched again).
    pub fn warm(self: &Arc<Self>, ahead: impl Iterator<Item = (u64, u64)>) {
        for index in next_chunks(ahead, self.chunk_size as u64, self.size(), self.readahead_chunks.max(1)) {
            self.start_loading(index);
        }
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

    /// The bytes `from..to` of a pushed snapshot's chunk `index` (framed, with data): the frames
    /// that hold them, one range request per run of them in one object (all at once), each frame
    /// decompressed and checked against its sum.
    async fn get_frames(self: &Arc<Self>, index: u64, from: u64, to: u64) -> Result<Bytes> {
        let snapshot = self.snapshot.as_ref().ok_or_else(|| Error::invalid(OP, "frames of a plain object"))?;
        let (Some(frame_size), Some(chunk)) = (snapshot.manifest.frame_size, &snapshot.manifest.list[index as usize])
        else {
            return Err(Error::invalid(OP, format!("chunk {index} of {} has no frames to read", self.url())));
        };
        self.known_corrupt(index)?;
        let listed = Arc::new(chunk.frames().unwrap_or_default());
        let chunk_len = snapshot.manifest.chunk_len(index) as usize;
        let which = frames::covering(frame_size, listed.len(), from, to);
        let first = which.start as u64 * frame_size;
        // Each run of frames, and of the plain frames patches among them were made against: all
        // requested at once.
        let fetch = |run: frames::Run, kind: &'static str| {
            let key = snapshot.manifest.object_key(chunk, run.object);
            let what = format!(
                "{kind} {}-{} of chunk {index} of {} ({})",
                run.frames.start,
                run.frames.end - 1,
                self.url(),
                snapshot.location.url_of(&key)
            );
            async move {
                let path = snapshot.location.path_of(&key)?;
                let len = run.stored.end - run.stored.start;
                let stored = self.fetcher.get_object(&path, Some(run.stored.clone()), len, &what, &self.breaker).await;
                Ok::<_, Error>((run, self.found_corrupt(index, self.watch(stored))?, what))
            }
        };
        let runs = frames::runs(&listed, which.clone()).into_iter().map(|run| fetch(run, "frames"));
        let references =
            frames::reference_runs(&listed, which).into_iter().map(|run| fetch(run, "references of frames"));
        let (runs, references) =
            futures::future::try_join(futures::future::try_join_all(runs), futures::future::try_join_all(references))
                .await?;
        let frame = frame_size as usize;
        let decoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
            let mut plain = Vec::new();
            for (run, stored, what) in &references {
                plain.extend(frames::decode_plain(stored, run, |i| listed[i].patch_of, frame, what)?);
            }
            let mut bytes = Vec::new();
            for (run, stored, what) in &runs {
                bytes.extend(frames::decode_run(stored, run, &listed, frame, chunk_len, &plain, what)?);
            }
            Ok(bytes)
        })
        .await
        .map_err(|e| Error::invalid(OP, format!("a decompression task failed: {e}")))?;
        if decoded.is_err() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = Bytes::from(self.found_corrupt(index, decoded)?);
        let len = bytes.len();
        Ok(bytes.slice(((from - first) as usize).min(len)..((to - first) as usize).min(len)))
    }

    /// A range request through the breaker: fails at once while the store is down; a transient
    /// failure past the retry bound takes it as down, and a probe then looks for it to answer.
    async fn fetch(self: &Arc<Self>, range: Range<u64>) -> Result<Bytes> {
        let result = self.fetcher.get(range, &self.breaker).await;
        self.watch(result)
    }

    /// Takes the store as down after a transient failure past the retry bound.
    fn watch(self: &Arc<Self>, result: Result<Bytes>) -> Result<Bytes> {
        if let Err(err) = &result {
            if store::transient(err) && self.breaker.trip(err) {
                self.counters.outages.fetch_add(1, Ordering::Relaxed);
                self.spawn_probe();
            }
        }
        result
    }

    /// Chunk `index` from the store: a range of the object, or a pushed snapshot's chunk (a hole
    /// without a request), decompressed and checked against its hash.
    async fn get_chunk(self: &Arc<Self>, index: u64) -> Result<Bytes> {
        let Some(snapshot) = &self.snapshot else {
            return self.fetch(self.chunk_range(index)).await;
        };
        let len = snapshot.manifest.chunk_len(index) as usize;
        let Some(chunk) = &snapshot.manifest.list[index as usize] else {
            return Ok(snapshot.zeros.slice(..len));
        };
        self.known_corrupt(index)?;
        if chunk.objects.is_some() {
            // A delta: its frames from its objects, and the whole checked against its hash.
            let bytes = self.get_frames(index, 0, len as u64).await?;
            let got = manifest::hash_of(&bytes);
            let what = snapshot.describe(self.url(), index, chunk);
            let checked = if got == chunk.hash {
                Ok(bytes)
            } else {
                Err(frames::corrupt(&what, format!("its bytes hash to {got}, not {}", chunk.hash)))
            };
            return self.found_corrupt(index, checked);
        }
        let what = snapshot.describe(self.url(), index, chunk);
        let path = snapshot.location.path_of(&snapshot.manifest.chunk_key(&chunk.hash))?;
        let stored = self.fetcher.get_object(&path, None, chunk.stored, &what, &self.breaker).await;
        let decoded = match self.watch(stored) {
            Ok(stored) => {
                let hash = chunk.hash.clone();
                let decoded = tokio::task::spawn_blocking(move || decode(&stored, len, &hash, &what))
                    .await
                    .map_err(|e| Error::invalid(OP, format!("a decompression task failed: {e}")))?;
                if decoded.is_err() {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                }
                self.found_corrupt(index, decoded)
            }
            Err(err) => self.found_corrupt(index, Err(err)),
        };
        decoded
    }

    /// The error chunk `index` was found corrupt with, if it was: a chunk is named by its content,
    /// so fetching it again brings the same bytes.
    fn known_corrupt(&self, index: u64) -> Result<()> {
        match self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).get(&index) {
            Some(err) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(err.clone())
            }
            None => Ok(()),
        }
    }

    /// Remembers chunk `index` as corrupt if what was read of it (whole or frames) was: stored bytes
    /// of the wrong length, or that do not decompress to it. A missing chunk is not remembered: a
    /// push may store it meanwhile.
    fn found_corrupt<T>(&self, index: u64, read: Result<T>) -> Result<T> {
        if let Err(err) = &read {
            if matches!(err, Error::Remote { errno: Errno::EPROTO, .. }) {
                self.corrupt.lock().unwrap_or_else(|p| p.into_inner()).insert(index, err.clone());
            }
        }
        read
    }

    /// Whether chunk `index` is a pushed snapshot's hole (zeros, stored nowhere).
    pub(crate) fn is_hole(&self, index: u64) -> bool {
        self.hole(index).is_some()
    }

    /// A pushed snapshot's hole: zeros, with no request.
    fn hole(&self, index: u64) -> Option<Bytes> {
        let snapshot = self.snapshot.as_ref()?;
        match snapshot.manifest.list.get(index as usize)? {
            None => Some(snapshot.zeros.slice(..snapshot.manifest.chunk_len(index) as usize)),
            Some(_) => None,
        }
    }

    /// Where chunk `index` lives in the disk cache, and whether `bytes` read there are it.
    fn slot(&self, index: u64) -> Slot {
        match self.snapshot.as_ref().and_then(|s| s.manifest.list[index as usize].as_ref()) {
            Some(chunk) => Slot::content(&chunk.hash),
            None => Slot::index(index),
        }
    }

    fn intact(&self, index: u64, bytes: &Bytes) -> bool {
        match self.snapshot.as_ref().and_then(|s| s.manifest.list[index as usize].as_ref()) {
            Some(chunk) => manifest::hash_of(bytes) == chunk.hash,
            None => true,
        }
    }

    /// Tries the store in the background, with the retry policy's backoff, until it answers;
    /// then service resumes (and, if asked, the pages that got the fallback are discarded).
    fn spawn_probe(self: &Arc<Self>) {
        let source = Arc::downgrade(self);
        let retry = self.fetcher.retry;
        let Ok(runtime) = runtime::runtime() else {
            // No runtime, no requests either: nothing would ever trip the breaker. Never stuck down.
            self.breaker.close();
            return;
        };
        runtime.spawn(async move {
            let mut delay = retry.initial_delay.max(Duration::from_millis(1));
            loop {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry.max_delay.max(Duration::from_millis(1)));
                // A source dropped meanwhile: nobody to serve.
                let Some(source) = source.upgrade() else { return };
                match source.fetcher.probe().await {
                    Err(err) if store::transient(&err) => continue,
                    // An answer, even a refusal: the store is up; its faults say the rest.
                    _ => return source.recover(),
                }
            }
        });
    }

    /// The store answered again: requests go to it, and the pages that got the fallback in the
    /// outage are discarded (with `refetch_after_outage`) so that they fault and are read again.
    fn recover(&self) {
        let mut pages = Vec::new();
        if self.refetch_after_outage {
            let mut listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
            let (outage, other): (VecDeque<_>, VecDeque<_>) = listed.drain(..).partition(|page| page.in_outage);
            *listed = other;
            pages.extend(outage);
        }
        let closed = self.breaker.close();
        for page in pages {
            if let Some(region) = page.region.upgrade().filter(|r| !r.is_closed()) {
                if region.discard(page.offset, page.len).is_ok() {
                    self.counters.refetched_pages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // Counted once the pages that got the fallback are gone: whoever sees the recovery finds
        // none of them still holding the fallback's zeros.
        if closed {
            self.counters.recoveries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fault at `offset` of `region` got the fallback because the source failed: counted and
    /// listed (and discarded when the store answers again, with `refetch_after_outage`). Returns
    /// whether to say so: always for a failure that is not an outage, once per outage.
    pub(crate) fn fell_back(&self, region: &Arc<Region>, offset: usize, len: usize) -> bool {
        self.counters.fallback_pages.fetch_add(1, Ordering::Relaxed);
        let page = FellBack { region: Arc::downgrade(region), offset, len, in_outage: self.breaker.is_down() };
        let mut listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
        if listed.len() >= FELL_BACK_LISTED {
            listed.pop_front();
        }
        listed.push_back(page);
        drop(listed);
        self.breaker.should_say()
    }

    /// The pages (region id, offset) of regions still open whose fault got the fallback because
    /// the store failed, oldest first (the latest 65536), less those discarded to be read again.
    pub fn fallback_pages(&self) -> Vec<(u64, usize)> {
        let listed = self.fell_back.lock().unwrap_or_else(|p| p.into_inner());
        listed
            .iter()
            .filter_map(|page| page.region.upgrade().filter(|r| !r.is_closed()).map(|r| (r.id(), page.offset)))
            .collect()
    }

    fn is_loading(&self, index: u64) -> bool {
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&index)
    }

    /// Chunk `index`: from memory, or joining the request already under way, or a new one.
    pub(crate) async fn chunk(self: Arc<Self>, index: u64) -> Result<Bytes> {
        if let Some(zeros) = self.hole(index) {
            return Ok(zeros);
        }
        if let Some(bytes) = self.cache.get(index) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(bytes);
        }
        let receiver = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            // Checked again under the lock: a load puts its chunk in the cache before it leaves.
            if let Some(bytes) = self.cache.get(index) {
                return Ok(bytes);
            }
            let (sender, receiver) = oneshot::channel();
            match loading.get_mut(&index) {
                Some(waiters) => waiters.push(sender),
                None => {
                    loading.insert(index, vec![sender]);
                    self.spawn_load(index)?;
                }
            }
            receiver
        };
        receiver.await.unwrap_or_else(|_| Err(Error::Closed { op: OP, what: "object source" }))
    }

    /// Starts reading chunk `index` into the cache unless it is there or on its way.
    fn start_loading(self: &Arc<Self>, index: u64) {
        if self.hole(index).is_some() {
            return;
        }
        // The cache is looked at under the lock: a load puts its chunk there before it leaves
        // `loading`, so a chunk is never found in neither while it arrives.
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if loading.contains_key(&index) || self.cache.contains(index) {
            return;
        }
        loading.insert(index, Vec::new());
        if self.spawn_load(index).is_err() {
            loading.remove(&index);
        }
    }

    fn spawn_load(self: &Arc<Self>, index: u64) -> Result<()> {
        let source = self.clone();
        runtime::runtime()?.spawn(async move {
            let result = source.load(index).await;
            if let Ok(bytes) = &result {
                source.cache.insert(index, bytes.clone());
            }
            let waiters = source.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&index).unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        });
        Ok(())
    }

    /// Reads a chunk from the disk cache, or fetches it (once per machine when the cache is shared).
    async fn load(self: &Arc<Self>, index: u64) -> Result<Bytes> {
        let range = self.chunk_range(index);
        let len = (range.end - range.start) as usize;
        let Some(disk) = &self.disk else {
            return self.get_chunk(index).await;
        };
        let hit = || {
            self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
        };
        let slot = self.slot(index);
        // A pushed snapshot's chunk read from the disk is checked against its hash as one from
        // the store is: a damaged file is fetched again and replaced, never served.
        let read = || disk.read(&slot, len).filter(|bytes| self.intact(index, bytes));
        if let Some(bytes) = read() {
            hit();
            return Ok(bytes);
        }
        // Another process holding the claim longer than a request's whole retry budget is stuck:
        // then this one fetches too.
        let give_up = Instant::now() + self.fetcher.retry.timeout + Duration::from_secs(30);
        loop {
            if let Some(claim) = disk.claim(&slot) {
                if let Some(bytes) = read() {
                    hit();
                    return Ok(bytes);
                }
                let bytes = self.get_chunk(index).await?;
                if disk.write(&slot, &bytes).is_ok() {
                    self.counters.disk_writes.fetch_add(1, Ordering::Relaxed);
                }
                drop(claim);
                return Ok(bytes);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Some(bytes) = read() {
                hit();
                return Ok(bytes);
            }
            if Instant::now() > give_up {
                return self.get_chunk(index).await;
            }
        }
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

/// The first `count` distinct chunks (of `chunk` bytes, of an object of `size`) that the byte
/// ranges `ahead` touch, in the order they touch them.
fn next_chunks(ahead: impl Iterator<Item = (u64, u64)>, chunk: u64, size: u64, count: usize) -> Vec<u64> {
    let mut chunks = Vec::with_capacity(count);
    for (offset, len) in ahead {
        let end = (offset + len).min(size);
        for index in offset / chunk..end.div_ceil(chunk) {
            if !chunks.contains(&index) {
                if chunks.len() == count {
                    return chunks;
                }
                chunks.push(index);
            }
        }
    }
    chunks
}

/// A pushed snapshot's chunk as stored: decompressed to `len` bytes whose hash is `hash`, or an
/// error (EPROTO) that names it: a damaged chunk is never served.
fn decode(stored: &[u8], len: usize, hash: &str, what: &str) -> Result<Bytes> {
    let bytes = frames::decompress(stored, len, what)?;
    let got = manifest::hash_of(&bytes);
    if got != hash {
        return Err(frames::corrupt(what, format!("its bytes hash to {got}, not {hash}")));
    }
    Ok(Bytes::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_looks_only_as_far_ahead_as_it_may_keep() {
        // Chunks of 10 bytes: ranges in chunks 3, 3, 0, 3 (again), 7-8, 9, 11 (past the end).
        let ahead = [(30, 5), (35, 5), (0, 1), (31, 1), (75, 10), (90, 10), (110, 10)];
        assert_eq!(next_chunks(ahead.into_iter(), 10, 100, 3), vec![3, 0, 7]);
        assert_eq!(next_chunks(ahead.into_iter(), 10, 100, 16), vec![3, 0, 7, 8, 9]);
        assert_eq!(next_chunks(std::iter::empty(), 10, 100, 4), Vec::<u64>::new());
    }

    #[test]
    fn a_chunk_is_served_only_if_it_decompresses_to_its_hash() {
        let bytes = vec![7u8; 8192];
        let hash = manifest::hash_of(&bytes);
        let stored = zstd::bulk::compress(&bytes, 3).unwrap();
        assert_eq!(&decode(&stored, 8192, &hash, "chunk 0 of u").unwrap()[..], &bytes[..]);
        let other = manifest::hash_of(b"other");
        let err = decode(&stored, 8192, &other, "chunk 0 of u").unwrap_err();
        assert_eq!(err.code(), "EPROTO");
        assert!(
            err.to_string().contains(&format!("chunk 0 of u is corrupt (its bytes hash to {hash}, not {other})")),
            "{err}"
        );
        assert!(decode(&stored, 4096, &hash, "c").unwrap_err().to_string().contains("does not decompress"));
        assert!(decode(&stored, 16384, &hash, "c").unwrap_err().to_string().contains("holds 8192 bytes, not 16384"));
        assert!(decode(&[1, 2, 3], 8192, &hash, "c").unwrap_err().to_string().contains("does not decompress"));
        assert!(!store::transient(&err), "a corrupt chunk is not tried again");
    }
}
