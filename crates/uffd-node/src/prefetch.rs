//! `NativePrefetch`: a prefetch run on a pool thread, cancellable from JavaScript.

use crate::errors::NativeFailure;
use crate::panic::guard;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use uffd_core::prefetch::{Prefetch, PrefetchReport};
use uffd_core::{Region, Userfaultfd};

/// What a prefetch did, or why it failed.
#[napi(object, object_from_js = false)]
pub struct NativePrefetchOutcome {
    pub mapped: f64,
    pub present: f64,
    pub yields: f64,
    pub stopped: bool,
    pub error: Option<NativeFailure>,
}

#[napi]
pub struct NativePrefetch {
    job: Mutex<Option<Run>>,
    cancel: Arc<AtomicBool>,
}

struct Run {
    uffd: Arc<Userfaultfd>,
    region: Arc<Region>,
    prefetch: Prefetch,
}

impl NativePrefetch {
    pub(crate) fn new(uffd: Arc<Userfaultfd>, region: Arc<Region>, prefetch: Prefetch) -> Self {
        let cancel = prefetch.cancel.clone();
        NativePrefetch { job: Mutex::new(Some(Run { uffd, region, prefetch })), cancel }
    }
}

#[napi]
impl NativePrefetch {
    /// Runs the prefetch on a pool thread; resolves with its outcome. Runs once.
    #[napi(ts_return_type = "Promise<NativePrefetchOutcome>")]
    pub fn start(&self) -> AsyncTask<PrefetchTask> {
        AsyncTask::new(PrefetchTask { run: self.job.lock().unwrap_or_else(|p| p.into_inner()).take() })
    }

    /// Stops the prefetch after the chunk it is mapping.
    #[napi]
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }
}

pub struct PrefetchTask {
    run: Option<Run>,
}

/// A flush of the written pages of a userfaultfd's ranges with write-back, on a pool thread.
pub struct FlushTask {
    pub(crate) uffd: Arc<Userfaultfd>,
    pub(crate) sync: bool,
}

impl Task for FlushTask {
    type Output = Option<NativeFailure>;
    type JsValue = Option<NativeFailure>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("flush", || self.uffd.flush(self.sync).err().map(|error| NativeFailure::of(&error)))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output)
    }
}

impl Task for PrefetchTask {
    type Output = uffd_core::Result<PrefetchReport>;
    type JsValue = NativePrefetchOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("prefetch", || match self.run.take() {
            Some(run) => run.uffd.prefetch(&run.region, &run.prefetch),
            None => Err(uffd_core::Error::invalid("prefetch", "this prefetch already ran")),
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let (report, error) = match output {
            Ok(report) => (report, None),
            Err(error) => (PrefetchReport::default(), Some(NativeFailure::of(&error))),
        };
        Ok(NativePrefetchOutcome {
            mapped: report.mapped as f64,
            present: report.present as f64,
            yields: report.yields as f64,
            stopped: report.stopped,
            error,
        })
    }
}
