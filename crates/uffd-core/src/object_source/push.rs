//! Pushes a memory file into a store as a snapshot: the file cut into chunks, each chunk that holds
//! data hashed (BLAKE3 of its bytes), compressed (zstd, frame by frame: `frames.rs`) and uploaded under its hash unless the
//! store has it already (a HEAD; or listed in the `base` snapshot's manifest, which costs no
//! request), the chunks that are holes or all zeros recorded as holes and stored nowhere, then the
//! manifest (`manifest.rs`) written last, so that a reader never finds a manifest whose chunks are
//! not all there. Chunks go up `concurrency` at a time; each is read, hashed and compressed on the
//! runtime's blocking threads.

use super::defaults::{check_chunk_size, DEFAULT_CHUNK_SIZE, DEFAULT_CONCURRENCY, DEFAULT_FRAME_SIZE};
use super::fetch::{retried, RetryPolicy};
use super::frames::{self, Frame};
use super::manifest::{self, Chunk, Manifest};
use super::runtime;
use super::store::{self, remote_error, Location, StoreOptions};
use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const OP: &str = "push";

/// How a snapshot is pushed.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub store: StoreOptions,
    /// Bytes per chunk; a multiple of the page size. `None`: the base's, else the default.
    pub chunk_size: Option<usize>,
    /// Bytes per frame, compressed on its own: the least a reader fetches of a chunk. A multiple of
    /// the page size that divides the chunk size. `None`: the base's, else the default.
    pub frame_size: Option<usize>,
    /// The zstd level (1 to 22; negative levels are faster still).
    pub level: i32,
    /// Chunks read, compressed or uploaded at once.
    pub concurrency: usize,
    /// The manifest of a snapshot pushed before to the same bucket: its chunks are known to be
    /// there (no HEAD for them), and its chunk prefix is used.
    pub base: Option<String>,
    /// Where the chunks go, a key prefix in the bucket; default: the base's, else `chunks/` beside
    /// the manifest.
    pub chunk_prefix: Option<String>,
    pub retry: RetryPolicy,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            store: StoreOptions::default(),
            chunk_size: None,
            frame_size: None,
            level: 3,
            concurrency: DEFAULT_CONCURRENCY,
            base: None,
            chunk_prefix: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest's URL, and the prefix its chunks are under.
    pub url: String,
    pub chunk_prefix: String,
    /// Chunks in the file; of them, uploaded, found in the store already, and holes (zeros).
    pub chunks: u64,
    pub uploaded: u64,
    pub deduped: u64,
    pub holes: u64,
    /// Of the uploaded, chunks stored as a delta against the base's chunk at their place (only
    /// the frames that differ).
    pub deltas: u64,
    /// Of the deduplicated, those the base's manifest listed (no request).
    pub from_base: u64,
    /// The file's length; the bytes of chunks that hold data; the compressed bytes uploaded; the
    /// compressed bytes of every chunk the manifest lists (uploaded or not; a delta's frames
    /// wherever they are).
    pub bytes_in: u64,
    pub bytes_data: u64,
    pub bytes_out: u64,
    pub bytes_stored: u64,
    /// Requests made (HEAD, PUT, the base's GET), and how long the push took.
    pub requests: u64,
    pub elapsed: Duration,
}

/// What became of one chunk.
enum Outcome {
    Hole,
    /// Its hash, how it is stored (`None` for a twin: as its first), and how it got there.
    Data {
        hash: String,
        stored: Option<Stored>,
        how: How,
        len: u64,
    },
}

/// The base's chunks by place, with their hashes.
type Beneath = Vec<Option<(String, Stored)>>;

/// How a chunk is stored: its own object's length, its frames, and for a delta the names of its
/// objects (its own first).
#[derive(Clone)]
struct Stored {
    len: u64,
    frames: Vec<Frame>,
    objects: Option<Vec<String>>,
}

impl Stored {
    /// The names of its objects: its own (stored whole, named `whole`), or those it lists.
    fn names(&self, whole: impl FnOnce() -> String) -> Vec<String> {
        self.objects.clone().unwrap_or_else(|| vec![whole()])
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Uploaded,
    /// Uploaded as a delta against the base's chunk at its place.
    Delta,
    Found,
    FromBase,
    /// Another chunk of this push has the same content.
    Twin,
}

struct Push {
    file: File,
    path: PathBuf,
    url: String,
    location: Location,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    chunk_size: u64,
    frame_size: u64,
    size: u64,
    level: i32,
    retry: RetryPolicy,
    /// Hashes the base lists (framed as this push frames), with how they are stored.
    known: HashMap<String, Stored>,
    /// The base's chunks by place (with their hashes), when its chunks are under this push's
    /// prefix and framed alike: a chunk that differs from the one at its place in a few frames is
    /// stored as a delta.
    beneath: Beneath,
    /// Hashes a chunk of this push has taken on.
    claimed: Mutex<HashSet<String>>,
    requests: std::sync::atomic::AtomicU64,
}

/// Pushes `file` as a snapshot whose manifest is at `url`. Blocks the calling thread, which must
/// not be a thread of the object-store runtime.
pub fn push(file: &Path, url: &str, options: PushOptions) -> Result<PushReport> {
    let started = Instant::now();
    // Sizes given are checked before any request; with a base, those left out are its own (read
    // below, and the pair checked then).
    match (options.chunk_size, options.frame_size, &options.base) {
        (chunk, frame, None) => check_sizes(chunk.unwrap_or(DEFAULT_CHUNK_SIZE), frame.unwrap_or(DEFAULT_FRAME_SIZE))?,
        (Some(chunk), Some(frame), Some(_)) => check_sizes(chunk, frame)?,
        (Some(chunk), None, Some(_)) => check_chunk_size(OP, chunk)?,
        (None, Some(frame), Some(_)) if frame == 0 || frame % crate::region::base_page_size() != 0 => {
            return Err(Error::invalid(
                OP,
                format!("the frame size {frame} is not whole pages ({} bytes)", crate::region::base_page_size()),
            ))
        }
        (None, Some(_), Some(_)) => {}
        (None, None, Some(_)) => {}
    }
    if !(-7..=22).contains(&options.level) {
        return Err(Error::invalid(OP, format!("level {} is not a zstd level (-7 to 22)", options.level)));
    }
    if options.concurrency == 0 {
        return Err(Error::invalid(OP, "concurrency must be at least 1"));
    }
    let location = Location::parse(url)?;
    let opened = File::open(file).map_err(|e| io_error("open", file, &e))?;
    let meta = opened.metadata().map_err(|e| io_error("fstat", file, &e))?;
    if !meta.is_file() {
        return Err(Error::invalid(OP, format!("{} is not a regular file", file.display())));
    }
    let (store, _) = store::connect(&location, &options.store)?;
    runtime::block_on(async move {
        let mut requests = 0;
        let base = match &options.base {
            Some(base) => {
                requests += 1;
                Some(read_base(base, &location, store.as_ref()).await?)
            }
            None => None,
        };
        let (chunk_size, frame_size) = sizes(&options, base.as_ref())?;
        let prefix = match (options.chunk_prefix, &base) {
            (Some(prefix), _) => checked_prefix(prefix)?,
            (None, Some(base)) => base.chunks.clone(),
            (None, None) => {
                let key = location.key();
                format!("{}chunks/", &key[..key.rfind('/').map_or(0, |at| at + 1)])
            }
        };
        let (known, beneath) = match &base {
            Some(base) => base_chunks(base, frame_size as u64, &prefix),
            None => (HashMap::new(), Vec::new()),
        };
        let push = Arc::new(Push {
            file: opened,
            path: file.to_path_buf(),
            url: url.into(),
            location,
            store,
            prefix,
            chunk_size: chunk_size as u64,
            frame_size: frame_size as u64,
            size: meta.len(),
            level: options.level,
            retry: options.retry,
            known,
            beneath,
            claimed: Mutex::new(HashSet::new()),
            requests: requests.into(),
        });
        push.run(options.concurrency, started).await
    })?
}

impl Push {
    async fn run(self: Arc<Self>, concurrency: usize, started: Instant) -> Result<PushReport> {
        let chunks = self.size.div_ceil(self.chunk_size);
        let permits = Arc::new(Semaphore::new(concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        let mut outcomes: Vec<Option<Outcome>> = (0..chunks).map(|_| None).collect();
        let joined = |done: std::result::Result<(u64, Result<Outcome>), tokio::task::JoinError>| {
            done.map_err(|e| Error::invalid(OP, format!("a push task failed: {e}")))
        };
        for index in 0..chunks {
            let permit = permits.clone().acquire_owned().await.map_err(|_| Error::Closed { op: OP, what: "push" })?;
            let push = self.clone();
            tasks.spawn(async move {
                let outcome = push.chunk(index).await;
                drop(permit);
                (index, outcome)
            });
            // The first failure ends the push (dropping the set aborts the rest).
            while let Some(done) = tasks.try_join_next() {
                let (index, outcome) = joined(done)?;
                outcomes[index as usize] = Some(outcome?);
            }
        }
        while let Some(done) = tasks.join_next().await {
            let (index, outcome) = joined(done)?;
            outcomes[index as usize] = Some(outcome?);
        }
        let mut report = PushReport {
            url: self.url.clone(),
            chunk_prefix: self.prefix.clone(),
            chunks,
            bytes_in: self.size,
            ..Default::default()
        };
        // A twin is stored as its first.
        let mut stored_of: HashMap<String, Stored> = HashMap::new();
        for outcome in outcomes.iter().flatten() {
            if let Outcome::Data { hash, stored: Some(stored), .. } = outcome {
                stored_of.insert(hash.clone(), stored.clone());
            }
        }
        let mut list = Vec::with_capacity(chunks as usize);
        for outcome in outcomes.into_iter() {
            match outcome {
                None | Some(Outcome::Hole) => {
                    report.holes += 1;
                    list.push(None);
                }
                Some(Outcome::Data { hash, how, len, .. }) => {
                    let Stored { len: stored, frames, objects } = stored_of.get(&hash).cloned().ok_or_else(|| {
                        Error::invalid(OP, format!("chunk {hash} was neither uploaded nor found (a bug)"))
                    })?;
                    report.bytes_data += len;
                    // A delta's frames, wherever they are stored.
                    report.bytes_stored += match objects {
                        Some(_) => frames.iter().map(|f| f.len as u64).sum(),
                        None => stored,
                    };
                    match how {
                        How::Uploaded | How::Delta => {
                            report.uploaded += 1;
                            report.deltas += u64::from(how == How::Delta);
                            report.bytes_out += stored;
                        }
                        How::FromBase => {
                            report.deduped += 1;
                            report.from_base += 1;
                        }
                        How::Found | How::Twin => report.deduped += 1,
                    }
                    list.push(Some(Chunk { hash, stored, frames: Some(frames::to_text(&frames)), objects }));
                }
            }
        }
        let manifest = Manifest::new(self.size, self.chunk_size, self.frame_size, self.prefix.clone(), list);
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, manifest::CONTENT_TYPE.into());
        let body = manifest.to_bytes();
        let path = self.location.path_of(self.location.key())?;
        self.put(&path, &self.url, body, attributes).await?;
        report.requests = self.requests.load(std::sync::atomic::Ordering::Relaxed);
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Reads, hashes and (if the store lacks it) compresses and uploads chunk `index`.
    async fn chunk(self: &Arc<Self>, index: u64) -> Result<Outcome> {
        let push = self.clone();
        let read = tokio::task::spawn_blocking(move || push.read(index)).await.map_err(|e| self.task_failed(e))??;
        let Some((bytes, hash)) = read else { return Ok(Outcome::Hole) };
        let len = bytes.len() as u64;
        if let Some(stored) = self.known.get(&hash) {
            return Ok(Outcome::Data { hash, stored: Some(stored.clone()), how: How::FromBase, len });
        }
        if !self.claimed.lock().unwrap_or_else(|p| p.into_inner()).insert(hash.clone()) {
            return Ok(Outcome::Data { hash, stored: None, how: How::Twin, len });
        }
        if let Some((base_hash, base)) = self.beneath.get(index as usize).and_then(Option::as_ref) {
            let (bytes, base) = (Arc::new(bytes), base.clone());
            if let Some(stored) = self.delta(index, bytes.clone(), &hash, base_hash, base).await? {
                return Ok(Outcome::Data { hash, stored: Some(stored), how: How::Delta, len });
            }
            let bytes = Arc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
            return self.whole(index, bytes, hash).await;
        }
        self.whole(index, bytes, hash).await
    }

    /// Stores chunk `index` as an object of its own, unless the store has it.
    async fn whole(self: &Arc<Self>, index: u64, bytes: Vec<u8>, hash: String) -> Result<Outcome> {
        let len = bytes.len() as u64;
        let key = manifest::chunk_key(&self.prefix, &hash, Some(self.frame_size));
        let path = self.location.path_of(&key)?;
        let what = format!("chunk {index} of {} ({})", self.path.display(), self.location.url_of(&key));
        // One stored already whose frame table does not read is stored again.
        if let Some(stored) = self.found(&path, &what, len).await? {
            return Ok(Outcome::Data { hash, stored: Some(stored), how: How::Found, len });
        }
        let (level, frame_size) = (self.level, self.frame_size as usize);
        let (compressed, listed) = tokio::task::spawn_blocking(move || frames::encode(&bytes, frame_size, level, None))
            .await
            .map_err(|e| self.task_failed(e))?
            .map_err(|e| Error::invalid(OP, format!("compressing {what}: {e}")))?;
        let frames = listed.into_iter().map(|(_, frame)| frame).collect();
        let stored = Stored { len: compressed.len() as u64, frames, objects: None };
        self.put(&path, &what, compressed, Attributes::new()).await?;
        Ok(Outcome::Data { hash, stored: Some(stored), how: How::Uploaded, len })
    }

    /// Stores chunk `index` as a delta against `base`, the base's chunk at its place, if at most
    /// half of its frames differ from the base's: an object of those frames, each a patch made
    /// against the base's plain frame at its index (fetched), and the base's objects for the
    /// others. `None`: it differs too much (stored whole instead).
    async fn delta(
        self: &Arc<Self>,
        index: u64,
        bytes: Arc<Vec<u8>>,
        hash: &str,
        base_hash: &str,
        base: Stored,
    ) -> Result<Option<Stored>> {
        let (level, frame_size) = (self.level, self.frame_size as usize);
        let summed = bytes.clone();
        let sums = tokio::task::spawn_blocking(move || frames::sums(&summed, frame_size))
            .await
            .map_err(|e| self.task_failed(e))?;
        let changed: Vec<usize> =
            (0..sums.len()).filter(|&at| base.frames.get(at).is_none_or(|f| f.sum != sums[at])).collect();
        if sums.len() != base.frames.len() || changed.is_empty() || 2 * changed.len() > sums.len() {
            return Ok(None);
        }
        let name = manifest::delta_name(hash, self.frame_size, base_hash);
        // Its objects: its own, then the base's it takes frames (or references) from, each named once.
        let base_names = base.names(|| whole_name(base_hash, self.frame_size));
        let mut names = vec![name.clone()];
        let mut renamed = |object: &mut u8| -> Result<()> {
            let from = &base_names[*object as usize];
            let at = names.iter().position(|n| n == from).unwrap_or_else(|| {
                names.push(from.clone());
                names.len() - 1
            });
            *object = u8::try_from(at)
                .ok()
                .filter(|at| at & 0x80 == 0)
                .ok_or_else(|| Error::invalid(OP, "a delta of more than 127 objects"))?;
            Ok(())
        };
        let mut frames = base.frames.clone();
        for frame in &mut frames {
            renamed(&mut frame.object)?;
            if let Some(reference) = &mut frame.patch_of {
                renamed(&mut reference.object)?;
            }
        }
        let references = self.plain_frames(index, &names, &frames, &changed).await?;
        let patches: Vec<_> = references.into_iter().map(|(at, plain)| (at, frames[at].plain(), plain)).collect();
        let (object, own) =
            tokio::task::spawn_blocking(move || frames::encode_patches(&bytes, frame_size, level, &patches))
                .await
                .map_err(|e| self.task_failed(e))?
                .map_err(|e| {
                    Error::invalid(OP, format!("compressing chunk {index} of {}: {e}", self.path.display()))
                })?;
        for (at, frame) in own {
            frames[at] = frame;
        }
        let key = format!("{}{name}", self.prefix);
        let path = self.location.path_of(&key)?;
        let what = format!("chunk {index} of {} ({})", self.path.display(), self.location.url_of(&key));
        let len = object.len() as u64;
        self.put(&path, &what, object, Attributes::new()).await?;
        Ok(Some(Stored { len, frames, objects: Some(names) }))
    }

    /// The base's plain frames at `which` (of `frames`, whose objects `names` names), fetched with
    /// one range request per run and decompressed: what the changed frames are patched against.
    async fn plain_frames(
        &self,
        index: u64,
        names: &[String],
        frames: &[Frame],
        which: &[usize],
    ) -> Result<Vec<(usize, Vec<u8>)>> {
        let runs = frames::gather(which.iter().map(|&at| (at, frames[at].plain(), false)));
        let fetches = runs.into_iter().map(|run| async move {
            let key = format!("{}{}", self.prefix, names[run.object as usize]);
            let path = self.location.path_of(&key)?;
            let what = format!("frames of the base's chunk {index} ({})", self.location.url_of(&key));
            let stored = self
                .retrying(|| async {
                    self.store.get_range(&path, run.stored.clone()).await.map_err(|e| remote_error("GET", &what, &e))
                })
                .await?;
            frames::decode_plain(&stored, &run, |at| Some(frames[at].plain()), self.frame_size as usize, &what)
        });
        Ok(futures::future::try_join_all(fetches).await?.into_iter().flatten().collect())
    }

    /// Chunk `index`'s bytes and hash, or `None` for a hole (no data in the file there, found with
    /// SEEK_DATA without a read, or all zeros).
    fn read(&self, index: u64) -> Result<Option<(Vec<u8>, String)>> {
        let start = index * self.chunk_size;
        let len = (self.size - start).min(self.chunk_size);
        match lseek(self.file.as_raw_fd(), start as i64, Whence::SeekData) {
            Ok(data) if data as u64 >= start + len => return Ok(None),
            // No data from here to the end of the file.
            Err(Errno::ENXIO) => return Ok(None),
            _ => {}
        }
        let mut bytes = vec![0; len as usize];
        self.file.read_exact_at(&mut bytes, start).map_err(|e| io_error("pread", &self.path, &e))?;
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let hash = manifest::hash_of(&bytes);
        Ok(Some((bytes, hash)))
    }

    /// How the chunk of `len` bytes at `path` is stored, if it is: its length (a HEAD) and its
    /// frames (its table, a range request).
    async fn found(&self, path: &object_store::path::Path, what: &str, len: u64) -> Result<Option<Stored>> {
        let head = self
            .retrying(|| async {
                match self.store.head(path).await {
                    Ok(meta) => Ok(Some(meta.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(remote_error("HEAD", what, &e)),
                }
            })
            .await?;
        let count = frames::count(len, self.frame_size);
        let table_len = frames::table_len(count);
        let Some(stored) = head.filter(|&stored| stored > table_len) else { return Ok(None) };
        let table = self
            .retrying(|| async {
                let range = stored - table_len..stored;
                self.store.get_range(path, range).await.map_err(|e| remote_error("GET", what, &e))
            })
            .await?;
        Ok(frames::parse_table(&table, count, stored).map(|frames| Stored { len: stored, frames, objects: None }))
    }

    async fn put(
        &self,
        path: &object_store::path::Path,
        what: &str,
        body: Vec<u8>,
        attributes: Attributes,
    ) -> Result<()> {
        let payload = PutPayload::from(bytes::Bytes::from(body));
        self.retrying(|| async {
            let options = PutOptions { attributes: attributes.clone(), ..Default::default() };
            self.store
                .put_opts(path, payload.clone(), options)
                .await
                .map(|_| ())
                .map_err(|e| remote_error("PUT", what, &e))
        })
        .await
    }

    /// Runs `once` within the retry bound, counting each try as a request.
    async fn retrying<T, F, Fut>(&self, once: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let count = || {
            self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        retried(self.retry, count, once).await
    }

    fn task_failed(&self, e: tokio::task::JoinError) -> Error {
        Error::invalid(OP, format!("a push task for {} failed: {e}", self.path.display()))
    }
}

/// A base snapshot's manifest, read and checked.
async fn read_base(base: &str, location: &Location, store: &dyn ObjectStore) -> Result<Manifest> {
    let base_location = Location::parse(base)?;
    if !base_location.same_store(location) {
        return Err(Error::invalid(
            OP,
            format!(
                "the base {base} is not in the bucket (or on the host) of {}: chunks are shared only within \
                 one; push to the base's bucket, or without a base",
                location.url_of(location.key())
            ),
        ));
    }
    let path = base_location.path_of(base_location.key())?;
    let got = store.get(&path).await.map_err(|e| remote_error("GET", &format!("the base {base}"), &e))?;
    if got.meta.size > manifest::MAX_SIZE {
        return Err(Error::invalid(
            OP,
            format!("the base {base} is not a snapshot manifest ({} bytes)", got.meta.size),
        ));
    }
    let content_type = got.attributes.get(&object_store::Attribute::ContentType).map(|value| value.to_string());
    if content_type.as_deref() != Some(manifest::CONTENT_TYPE) {
        return Err(Error::invalid(
            OP,
            format!(
                "the base {base} is not a pushed snapshot (its content type is {}, not {}): give the URL of \
                 a snapshot pushed before",
                content_type.as_deref().unwrap_or("unset"),
                manifest::CONTENT_TYPE
            ),
        ));
    }
    let bytes = got.bytes().await.map_err(|e| remote_error("GET", &format!("the base {base}"), &e))?;
    Manifest::parse(base, &bytes)
}

/// The chunk and frame sizes of a push: those given, else the base's, else the defaults. A size
/// given that differs from the base's is refused: no chunk of the base could be shared.
fn sizes(options: &PushOptions, base: Option<&Manifest>) -> Result<(usize, usize)> {
    let base_chunk = base.map(|base| base.chunk_size as usize);
    let base_frame = base.and_then(|base| base.frame_size).map(|size| size as usize);
    let differs = |name: &str, given: Option<usize>, of_base: Option<usize>| match (given, of_base) {
        (Some(given), Some(of_base)) if given != of_base => Err(Error::invalid(
            OP,
            format!(
                "the base {} has {name}s of {of_base} bytes, this push {given}: no chunk could be shared \
                 (pass --{name}-size {of_base}, or leave it out to take the base's)",
                options.base.as_deref().unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    };
    differs("chunk", options.chunk_size, base_chunk)?;
    differs("frame", options.frame_size, base_frame)?;
    let chunk_size = options.chunk_size.or(base_chunk).unwrap_or(DEFAULT_CHUNK_SIZE);
    let frame_size = options.frame_size.or(base_frame).unwrap_or(DEFAULT_FRAME_SIZE);
    check_sizes(chunk_size, frame_size)?;
    Ok((chunk_size, frame_size))
}

/// A chunk size of whole pages, cut into frames of whole pages.
fn check_sizes(chunk_size: usize, frame_size: usize) -> Result<()> {
    let page = crate::region::base_page_size();
    check_chunk_size(OP, chunk_size)?;
    if frame_size == 0 || frame_size % page != 0 || chunk_size % frame_size != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "the frame size {frame_size} does not cut the chunk size {chunk_size} into frames of whole pages \
                 ({page} bytes): give one that divides it, such as 16384"
            ),
        ));
    }
    Ok(())
}

/// What a base's chunks give a push under `prefix`: how each hash is stored, and the chunk at
/// each place. Nothing when its chunks are framed otherwise (or pushed before frames): they are
/// other objects; nor when they are under another prefix, which this push's manifest cannot name.
fn base_chunks(base: &Manifest, frame_size: u64, prefix: &str) -> (HashMap<String, Stored>, Beneath) {
    if base.frame_size != Some(frame_size) || base.chunks != prefix {
        return (HashMap::new(), Vec::new());
    }
    let stored = |chunk: &Chunk| {
        Some((
            chunk.hash.clone(),
            Stored { len: chunk.stored, frames: chunk.frames()?, objects: chunk.objects.clone() },
        ))
    };
    let beneath: Vec<_> = base.list.iter().map(|chunk| chunk.as_ref().and_then(stored)).collect();
    let known = beneath.iter().flatten().cloned().collect();
    (known, beneath)
}

/// The name of a chunk's own object, stored whole, under the chunk prefix.
fn whole_name(hash: &str, frame_size: u64) -> String {
    manifest::chunk_key("", hash, Some(frame_size))
}

/// A chunk prefix given by the caller: a plain key prefix, ending in `/` (added if missing).
fn checked_prefix(prefix: String) -> Result<String> {
    if prefix.is_empty() || prefix.starts_with('/') || prefix.split('/').any(|part| part == ".." || part == ".") {
        return Err(Error::invalid(
            OP,
            format!("chunk prefix {prefix:?} is not a plain key prefix such as snapshots/chunks/"),
        ));
    }
    Ok(if prefix.ends_with('/') { prefix } else { format!("{prefix}/") })
}

fn io_error(op: &'static str, path: &Path, e: &std::io::Error) -> Error {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let error = Error::sys(op, errno, format!("memory file {:?}", path.display().to_string()));
    // Not the userfaultfd permission advice that "open" would otherwise get.
    match errno {
        Errno::EACCES | Errno::EPERM => error.with_advice("the file cannot be read: check its permissions"),
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused_before_any_request() {
        let refused = |options: PushOptions| push(Path::new("/dev/null"), "s3://b/k", options).unwrap_err().to_string();
        assert!(refused(PushOptions { chunk_size: Some(1000), ..Default::default() }).contains("chunk size 1000"));
        assert!(refused(PushOptions { level: 30, ..Default::default() }).contains("level 30"));
        assert!(refused(PushOptions { frame_size: Some(12288), ..Default::default() }).contains("frame size 12288"));
        assert!(refused(PushOptions { concurrency: 0, ..Default::default() }).contains("concurrency"));
        let err = push(Path::new("/no/such/file"), "s3://b/k", PushOptions::default()).unwrap_err();
        assert_eq!(err.code(), "ENOENT");
        assert!(err.to_string().contains("/no/such/file"), "{err}");
        assert_eq!(push(Path::new("/tmp"), "s3://b/k", PushOptions::default()).unwrap_err().code(), "EINVAL");
        assert_eq!(push(Path::new("/dev/null"), "gs://b/k", PushOptions::default()).unwrap_err().code(), "EOPNOTSUPP");
        assert!(checked_prefix("../x".into()).is_err());
        assert_eq!(checked_prefix("a/b".into()).unwrap(), "a/b/");
    }
}
