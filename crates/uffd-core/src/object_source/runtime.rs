//! The small tokio runtime that every object source of the process shares: two worker threads,
//! made on first use and kept for the life of the process (like the binding's thread pool). Range
//! requests, their retries, the disk cache and the completions that map a chunk into a region run
//! on it; no fault loop thread ever waits for the network.

use crate::error::{Error, Result};
use nix::errno::Errno;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Runtime};

/// Worker threads of the runtime: the work is I/O and one UFFDIO_COPY per chunk.
const WORKERS: usize = 2;

pub(crate) fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .thread_name("uffd-object")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::sys("pthread_create", Errno::EAGAIN, format!("starting the object-store runtime: {e}")))
}

/// Runs a future to its end on the runtime, from a thread that is not one of its workers (a
/// JavaScript thread making a source, a prefetch on a pool thread).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::invalid("objectStore", "a blocking read was asked for on the object-store runtime itself"));
    }
    Ok(runtime()?.block_on(future))
}
