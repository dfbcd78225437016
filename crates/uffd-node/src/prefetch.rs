//! `BindingPrefetch`: a prefetch run on a pool thread, cancellable from JavaScript.

use crate::errors::BindingFailure;
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
pub struct BindingPrefetchOutcome {
    pub mapped: f64,
    pub present: f64,
    pub yields: f64,
    pub stopped: bool,
    pub error: Option<BindingFailure>,
}

#[napi]
pub struct BindingPrefetch {
    job: Mutex<Option<Run>>,
    cancel: Arc<AtomicBool>,
}

struct Run {
    uffd: Arc<Userfaultfd>,
    /// One region, or many one after the other (each whole, or the same ranges of each).
    regions: Vec<Arc<Region>>,
    prefetch: Prefetch,
}

impl BindingPrefetch {
    pub(crate) fn new(uffd: Arc<Userfaultfd>, regions: Vec<Arc<Region>>, prefetch: Prefetch) -> Self {
        let cancel = prefetch.cancel.clone();
        BindingPrefetch { job: Mutex::new(Some(Run { uffd, regions, prefetch })), cancel }
    }
}

#[napi]
impl BindingPrefetch {
    /// Runs the prefetch on a pool thread; resolves with its outcome. Runs once.
    #[napi(ts_return_type = "Promise<BindingPrefetchOutcome>")]
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
    type Output = Option<BindingFailure>;
    type JsValue = Option<BindingFailure>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("flush", || self.uffd.flush(self.sync).err().map(|error| BindingFailure::of(&error)))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output)
    }
}

impl Task for PrefetchTask {
    /// What was mapped, and the error that ended it early (what the regions before it mapped counts).
    type Output = (PrefetchReport, Option<uffd_core::Error>);
    type JsValue = BindingPrefetchOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let Some(run) = self.run.take() else {
            let error = uffd_core::Error::invalid("prefetch", "this prefetch already ran");
            return Ok((PrefetchReport::default(), Some(error)));
        };
        let mut total = PrefetchReport::default();
        for region in &run.regions {
            // A region whose ranges were not given is prefetched whole.
            let whole;
            let prefetch = if run.prefetch.ranges.is_empty() {
                whole = Prefetch { ranges: vec![(0, region.size())], ..run.prefetch.clone() };
                &whole
            } else {
                &run.prefetch
            };
            match guard("prefetch", || run.uffd.prefetch(region, prefetch))? {
                Ok(report) => {
                    total.mapped += report.mapped;
                    total.present += report.present;
                    total.yields += report.yields;
                    if report.stopped {
                        total.stopped = true;
                        break;
                    }
                }
                Err(error) => return Ok((total, Some(error))),
            }
        }
        Ok((total, None))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let (report, error) = output;
        let error = error.map(|error| BindingFailure::of(&error));
        Ok(BindingPrefetchOutcome {
            mapped: report.mapped as f64,
            present: report.present as f64,
            yields: report.yields as f64,
            stopped: report.stopped,
            error,
        })
    }
}
