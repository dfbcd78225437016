//! One range request, done right: at most `concurrency` in flight per source, pinned to the ETag
//! read when the source was made (`If-Match`, and the answer's ETag and size checked), retried with
//! exponential backoff while the failure is transient and the bound allows, and counted.

use super::breaker::Breaker;
use super::counters::ObjectCounters;
use super::store::{remote_error, transient};
use crate::error::{Error, Result};
use bytes::Bytes;
use nix::errno::Errno;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

const OP: &str = "GET";

/// How transient failures are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub retries: u32,
    /// The first pause; each next one doubles, up to `max_delay`.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// No retry starts once this long has passed since the first try.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 8,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Runs `once` until it succeeds, fails for good (not [`transient`]), or `policy`'s bound is
/// reached; `on_try` is called before each try. A failure after retries says how many there were.
pub(crate) async fn retried<T, F, Fut>(policy: RetryPolicy, on_try: impl Fn(), mut once: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut delay = policy.initial_delay;
    let mut tries = 0;
    loop {
        on_try();
        match once().await {
            Err(err) if transient(&err) && tries < policy.retries && started.elapsed() < policy.timeout => {
                tries += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(policy.max_delay);
            }
            Err(Error::Remote { op, errno, status, detail }) if tries > 0 => {
                return Err(Error::Remote {
                    op,
                    errno,
                    status,
                    detail: format!("{detail} (after {tries} retries in {} ms)", started.elapsed().as_millis()),
                })
            }
            result => return result,
        }
    }
}

pub(crate) struct Fetcher {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) path: Path,
    /// What the object is: its URL (for messages), size and ETag when the source was made.
    pub(crate) url: String,
    pub(crate) size: u64,
    pub(crate) etag: Option<String>,
    pub(crate) retry: RetryPolicy,
    pub(crate) permits: Semaphore,
    pub(crate) counters: Arc<ObjectCounters>,
}

impl Fetcher {
    /// The bytes of `range` (within the object), fetched once however many times it is retried.
    /// While `breaker` says the store is down, no try starts: the outage's cause is the answer.
    pub(crate) async fn get(&self, range: Range<u64>, breaker: &Breaker) -> Result<Bytes> {
        self.retrying(breaker, || self.get_once(range.clone())).await
    }

    /// Another object of the same store (a chunk of a pushed snapshot, at `path`): the bytes of
    /// `range`, which must be `len` bytes long, or all of it; retried and counted as a range
    /// request is. `what` names it in errors.
    pub(crate) async fn get_object(
        &self,
        path: &Path,
        range: Option<Range<u64>>,
        len: u64,
        what: &str,
        breaker: &Breaker,
    ) -> Result<Bytes> {
        self.retrying(breaker, || async {
            let options = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
            let result = self.store.get_opts(path, options).await.map_err(|e| remote_error(OP, what, &e))?;
            let bytes = result.bytes().await.map_err(|e| remote_error(OP, what, &e))?;
            if bytes.len() as u64 != len {
                return Err(Error::Remote {
                    op: OP,
                    errno: Errno::EPROTO,
                    status: None,
                    detail: format!(
                        "{what}: {} bytes stored where the manifest says {len}: corrupt, not served",
                        bytes.len()
                    ),
                });
            }
            Ok(bytes)
        })
        .await
    }

    /// Runs `once` until it succeeds, fails for good, or the retry bound is reached.
    async fn retrying<F, Fut>(&self, breaker: &Breaker, mut once: F) -> Result<Bytes>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let started = Instant::now();
        let mut delay = self.retry.initial_delay;
        let mut tries = 0;
        loop {
            breaker.check(&self.url)?;
            let result = {
                let _permit = self.permits.acquire().await.map_err(|_| self.closed())?;
                breaker.check(&self.url)?;
                once().await
            };
            match result {
                Ok(bytes) => {
                    self.counters.requests.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Err(err) if transient(&err) && tries < self.retry.retries && started.elapsed() < self.retry.timeout => {
                    tries += 1;
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                }
                Err(err) => {
                    self.counters.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(match err {
                        Error::Remote { op, errno, status, detail } if tries > 0 => Error::Remote {
                            op,
                            errno,
                            status,
                            detail: format!("{detail} (after {tries} retries in {} ms)", started.elapsed().as_millis()),
                        },
                        other => other,
                    });
                }
            }
        }
    }

    /// One try at the object's first byte, uncounted and without a permit: whether the store
    /// answers again after an outage.
    pub(crate) async fn probe(&self) -> Result<()> {
        if self.size == 0 {
            return Ok(());
        }
        self.get_once(0..1).await.map(|_| ())
    }

    pub(crate) async fn get_once(&self, range: Range<u64>) -> Result<Bytes> {
        let what = format!("{} bytes {}-{}", self.url, range.start, range.end - 1);
        let options = GetOptions {
            if_match: self.etag.clone(),
            range: Some(GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let result = self.store.get_opts(&self.path, options).await.map_err(|e| self.failed(&what, &e))?;
        // A store that ignores If-Match still says what it sent.
        let changed = match (&self.etag, &result.meta.e_tag) {
            (Some(expected), Some(got)) if expected != got => Some(format!("its ETag was {expected}, now {got}")),
            _ if result.meta.size != self.size => {
                Some(format!("its size was {} bytes, now {}", self.size, result.meta.size))
            }
            _ => None,
        };
        if let Some(how) = changed {
            return Err(self.changed(&how));
        }
        let bytes = result.bytes().await.map_err(|e| remote_error(OP, &what, &e))?;
        if bytes.len() as u64 != range.end - range.start {
            // A body cut short: the connection dropped. Transient.
            return Err(Error::Remote {
                op: OP,
                errno: Errno::ECONNRESET,
                status: None,
                detail: format!("{what}: the answer ended after {} bytes", bytes.len()),
            });
        }
        Ok(bytes)
    }

    fn failed(&self, what: &str, err: &object_store::Error) -> Error {
        match remote_error(OP, what, err) {
            Error::Remote { status: Some(412), .. } => self.changed("its ETag no longer matches (HTTP 412)"),
            other => other,
        }
    }

    /// The object was replaced under the source: never mixed contents.
    fn changed(&self, how: &str) -> Error {
        Error::Remote {
            op: OP,
            errno: Errno::ESTALE,
            status: Some(412),
            detail: format!(
                "{} changed after the source was made ({how}): its pages are not mixed with the new contents",
                self.url
            ),
        }
    }

    fn closed(&self) -> Error {
        Error::Closed { op: OP, what: "object source" }
    }
}
