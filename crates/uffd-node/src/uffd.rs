//! `BindingUffd`'s methods (the type is in `handle.rs`): opening, registering and serving ranges,
//! the resolving ioctls over ranges, installing this thread's handler, and closing.

use crate::args::{to_id, to_opt_usize, to_usize};
use crate::batch::{js_batch, JsDispatch};
use crate::errors::{invalid, throw, OrThrow};
use crate::fault;
use crate::handle::BindingUffd;
use crate::options::{
    self, core_options, BindingMove, BindingOptions, BindingRange, BindingRegistration, BindingServe,
};
use crate::prefetch::{BindingPrefetch, FlushTask};
use crate::region::BindingRegion;
use crate::sink::{lock, JsSink};
use crate::source::{BindingRecorder, BindingSource};
use crate::stats::{latency_of, stats_of, BindingLatency, BindingStats};
use crate::teardown::TeardownHook;
use napi::bindgen_prelude::{AsyncTask, Function, Uint8ArraySlice};
use napi::Env;
use napi_derive::napi;
use std::sync::Arc;
use uffd_core::prefetch::Prefetch;
use uffd_core::source::{Served, Source};
use uffd_core::{uapi, Error, Protect, Region, Userfaultfd, Wake};

#[napi(object, object_from_js = false)]
pub struct BindingProbe {
    pub api: u32,
    pub features: Vec<&'static str>,
    pub ioctls: Vec<&'static str>,
}

#[napi]
impl BindingUffd {
    #[napi(constructor)]
    pub fn new(env: Env, options: BindingOptions) -> napi::Result<Self> {
        let inner = Userfaultfd::open(core_options(&env, options)?).or_throw(&env)?;
        Ok(Self::owned(inner))
    }

    /// A handle on the live userfaultfd with this id, for a worker thread.
    #[napi(factory)]
    pub fn attach(env: Env, id: f64) -> napi::Result<Self> {
        let id = to_id(&env, id)?;
        let inner = Userfaultfd::lookup(id).ok_or_else(|| {
            throw(
                &env,
                &Error::invalid(
                    "attach",
                    format!("no open userfaultfd has id {id}: it was closed, or the token is not a userfaultfd's"),
                ),
            )
        })?;
        Ok(Self::attached(inner))
    }

    #[napi]
    pub fn probe(env: Env) -> napi::Result<BindingProbe> {
        let probe = Userfaultfd::probe().or_throw(&env)?;
        Ok(BindingProbe {
            api: probe.api as u32,
            features: uapi::names_of(probe.features, uapi::FEATURES),
            ioctls: uapi::ioctl_names(probe.ioctls),
        })
    }

    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.inner.id() as f64
    }
    #[napi(getter)]
    pub fn features(&self) -> Vec<&'static str> {
        uapi::names_of(self.inner.features(), uapi::FEATURES)
    }
    #[napi(getter)]
    pub fn user_mode_only(&self) -> bool {
        self.inner.user_mode_only()
    }
    #[napi(getter)]
    pub fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    #[napi]
    pub fn register(
        &self,
        env: Env,
        region: &BindingRegion,
        range: BindingRegistration,
        source: Option<&BindingSource>,
    ) -> napi::Result<Vec<&'static str>> {
        let range = options::registration(&env, range, source.is_some())?;
        let served = match (source, range.serve) {
            (Some(source), Some(how)) => Some(source.served(how)),
            // A residency limit with no source: the handler serves the range, and its pages again.
            (None, Some(how)) => Some(Served::with(Source::Handler, how)),
            _ => None,
        };
        let region = region.region(&env, "UFFDIO_REGISTER")?;
        let ioctls =
            self.inner.register_served(&region, range.modes, range.offset, range.length, served).or_throw(&env)?;
        Ok(uapi::ioctl_names(ioctls))
    }

    /// Serves an already-registered range (another process's memory) from a source, natively.
    #[napi]
    pub fn serve(
        &self,
        env: Env,
        region: &BindingRegion,
        how: BindingServe,
        source: &BindingSource,
        recorder: Option<&BindingRecorder>,
    ) -> napi::Result<()> {
        let how = options::serving(&env, how, recorder.map(|r| r.recorder.clone()))?;
        let served = match how.source_offset {
            0 => source.served(how.serve),
            delta => Served::with(source.source().shifted(delta).or_throw(&env)?, how.serve),
        };
        let region = region.region(&env, "serve")?;
        self.inner.serve(&region, how.offset, how.length, served).or_throw(&env)
    }

    #[napi]
    pub fn latency(&self) -> BindingLatency {
        latency_of(&self.inner)
    }

    /// A prefetch of `ranges` (offset, length pairs) of a region, ready to start.
    #[napi]
    pub fn prefetch(
        &self,
        env: Env,
        region: &BindingRegion,
        ranges: Vec<BindingRange>,
        source: Option<&BindingSource>,
        chunk_pages: Option<f64>,
    ) -> napi::Result<BindingPrefetch> {
        let region = region.region(&env, "prefetch")?;
        let (ranges, chunk_pages) = options::prefetch(&env, &ranges, chunk_pages)?;
        let prefetch =
            Prefetch { ranges, source: source.map(BindingSource::source), chunk_pages, cancel: Default::default() };
        Ok(BindingPrefetch::new(self.inner.clone(), vec![region], prefetch))
    }

    /// A prefetch of the whole of each region (by id), one after the other, from its
    /// registration's source: one task for the thousands of regions of a VM.
    #[napi]
    pub fn prefetch_regions(&self, env: Env, ids: Vec<f64>, chunk_pages: Option<f64>) -> napi::Result<BindingPrefetch> {
        let (_, chunk_pages) = options::prefetch(&env, &[], chunk_pages)?;
        let regions = ids
            .into_iter()
            .map(|id| {
                let id = to_id(&env, id)?;
                Region::lookup(id)
                    .filter(|region| !region.is_closed())
                    .ok_or(Error::Closed { op: "prefetch", what: "region" })
                    .or_throw(&env)
            })
            .collect::<napi::Result<Vec<_>>>()?;
        let prefetch = Prefetch { ranges: Vec::new(), source: None, chunk_pages, cancel: Default::default() };
        Ok(BindingPrefetch::new(self.inner.clone(), regions, prefetch))
    }

    #[napi]
    pub fn unregister(&self, env: Env, region: &BindingRegion, offset: f64, length: Option<f64>) -> napi::Result<()> {
        let offset = to_usize(&env, "offset", offset)?;
        let length = to_opt_usize(&env, "length", length)?;
        self.inner.unregister(&region.region(&env, "UFFDIO_UNREGISTER")?, offset, length).or_throw(&env)
    }

    #[napi]
    pub fn copy(
        &self,
        env: Env,
        region: &BindingRegion,
        offset: f64,
        bytes: Uint8ArraySlice<'_>,
        wake: bool,
        write_protect: bool,
    ) -> napi::Result<f64> {
        let offset = to_usize(&env, "offset", offset)?;
        self.inner
            .copy(&*region.region(&env, "UFFDIO_COPY")?, offset, &bytes, Wake(wake), Protect(write_protect))
            .map(|n| n as f64)
            .or_throw(&env)
    }

    #[napi]
    pub fn zero(&self, env: Env, region: &BindingRegion, offset: f64, length: f64, wake: bool) -> napi::Result<f64> {
        self.over_range(&env, region, "UFFDIO_ZEROPAGE", offset, length, |uffd, r, at, len| {
            uffd.zero(r, at, len, Wake(wake))
        })
    }

    #[napi(js_name = "continue")]
    pub fn continue_range(
        &self,
        env: Env,
        region: &BindingRegion,
        offset: f64,
        length: f64,
        wake: bool,
        write_protect: bool,
    ) -> napi::Result<f64> {
        self.over_range(&env, region, "UFFDIO_CONTINUE", offset, length, |uffd, r, at, len| {
            uffd.r#continue(r, at, len, Wake(wake), Protect(write_protect))
        })
    }

    /// Protects a range (registered for wp faults) or lifts its protection.
    #[napi]
    pub fn write_protect(
        &self,
        env: Env,
        region: &BindingRegion,
        offset: f64,
        length: f64,
        protect: bool,
        wake: bool,
    ) -> napi::Result<()> {
        self.over_range(&env, region, "UFFDIO_WRITEPROTECT", offset, length, |uffd, r, at, len| {
            uffd.write_protect(r, at, len, protect, Wake(wake)).map(|()| 0)
        })
        .map(drop)
    }

    /// Moves pages from another anonymous region into this one's registered range.
    #[napi(js_name = "move")]
    pub fn move_pages(
        &self,
        env: Env,
        region: &BindingRegion,
        offset: f64,
        from: &BindingRegion,
        how: BindingMove,
    ) -> napi::Result<f64> {
        let from = from.region(&env, "UFFDIO_MOVE")?;
        let from_offset = to_usize(&env, "fromOffset", how.from_offset)?;
        self.over_range(&env, region, "UFFDIO_MOVE", offset, how.length, |uffd, r, at, len| {
            uffd.r#move(r, at, &from, from_offset, len, Wake(how.wake), how.allow_source_holes)
        })
    }

    /// Offsets of the pages written since they were last protected (WP_ASYNC).
    #[napi]
    pub fn dirty_pages(&self, env: Env, region: &BindingRegion, clear: bool, method: String) -> napi::Result<Vec<f64>> {
        let method = options::dirty_method(&env, &method)?;
        let region = region.region(&env, method.op())?;
        let dirty = self.inner.dirty_pages(&region, clear, method).or_throw(&env)?;
        Ok(dirty.into_iter().map(|offset| offset as f64).collect())
    }

    #[napi]
    pub fn poison(&self, env: Env, region: &BindingRegion, offset: f64, length: f64, wake: bool) -> napi::Result<f64> {
        self.over_range(&env, region, "UFFDIO_POISON", offset, length, |uffd, r, at, len| {
            uffd.poison(r, at, len, Wake(wake))
        })
    }

    #[napi]
    pub fn wake(&self, env: Env, region: &BindingRegion, offset: f64, length: f64) -> napi::Result<()> {
        self.over_range(&env, region, "UFFDIO_WAKE", offset, length, |uffd, r, at, len| {
            uffd.wake(r, at, len).map(|()| 0)
        })
        .map(drop)
    }

    /// Converts a region, offset and length from JavaScript and runs a range operation on them.
    fn over_range(
        &self,
        env: &Env,
        region: &BindingRegion,
        op: &'static str,
        offset: f64,
        length: f64,
        run: impl FnOnce(&Userfaultfd, &Region, usize, usize) -> uffd_core::Result<usize>,
    ) -> napi::Result<f64> {
        let offset = to_usize(env, "offset", offset)?;
        let length = to_usize(env, "length", length)?;
        let region = region.region(env, op)?;
        run(&self.inner, &region, offset, length).map(|n| n as f64).or_throw(env)
    }

    /// Sends this userfaultfd's faults to `callback` on this thread, one call per batch. With `join`, it
    /// serves beside the installed handlers (another handler worker) instead of replacing them.
    #[napi]
    pub fn handle(
        &self,
        env: Env,
        callback: Function<(), ()>,
        keep_alive: bool,
        join: Option<bool>,
    ) -> napi::Result<()> {
        // A reader of the handler being replaced stops: its loop in JavaScript ends at its next pull.
        self.stop_direct(None);
        let sink = Arc::new(JsSink::new(callback, keep_alive)?);
        fault::set_mailbox(&self.inner, sink.mailbox());
        let thread = uffd_core::current_thread_id();
        let installed = if join == Some(true) {
            self.inner.join_handler(sink, thread)
        } else {
            self.inner.set_handler(sink, thread)
        };
        let generation = installed.or_throw(&env)?;
        let hook = TeardownHook::install(&env, &self.inner, generation)?;
        let previous = self.lock_handler().replace((generation, hook));
        if let Some((previous, hook)) = previous {
            hook.remove();
            self.inner.remove_handler(previous);
        }
        Ok(())
    }

    /// Makes this thread's handler read the fd itself (then call `pullFaults` in a loop with the
    /// returned generation). 0 where it cannot (with EVENT_FORK): faults keep coming through the
    /// handler's callback.
    #[napi]
    pub fn start_direct(&self, env: Env) -> napi::Result<f64> {
        let Some(generation) = self.lock_handler().as_ref().map(|(g, _)| *g) else {
            return Err(invalid(&env, "handle", "install a handler before reading directly".into()));
        };
        match self.inner.start_pulling(generation) {
            Ok(puller) => {
                fault::set_puller(&self.inner, puller);
                Ok(generation as f64)
            }
            Err(Error::Unsupported { .. }) => Ok(0.0),
            Err(err) => Err(throw(&env, &err)),
        }
    }

    /// Hands reading back to the fault loop thread: this thread's reader, or only the reader of
    /// `generation` if given (a reader's loop that ended must not stop its successor).
    #[napi]
    pub fn stop_direct(&self, generation: Option<f64>) {
        if let Some(generation) = fault::take_puller(self.inner.id(), generation.map(|g| g as u64)) {
            self.inner.stop_pulling(generation);
        }
    }

    /// The generation of this thread's handler (0: none).
    #[napi(getter)]
    pub fn handler_generation(&self) -> f64 {
        self.lock_handler().as_ref().map_or(0.0, |(generation, _)| *generation as f64)
    }

    /// Keeps only the handlers of `generations` (a group of handler workers now ready).
    #[napi]
    pub fn keep_handlers(&self, generations: Vec<f64>) {
        let generations: Vec<u64> = generations.into_iter().map(|g| g as u64).collect();
        self.inner.keep_handlers(&generations);
    }

    /// Stops handing faults to the handlers of `generations` (a group of handler workers going).
    #[napi]
    pub fn retire_handlers(&self, generations: Vec<f64>) {
        let generations: Vec<u64> = generations.into_iter().map(|g| g as u64).collect();
        self.inner.retire_handlers(&generations);
    }

    /// Stops sending faults to this thread's handler.
    #[napi]
    pub fn unhandle(&self) {
        self.stop_direct(None);
        let installed = self.lock_handler().take();
        if let Some((generation, hook)) = installed {
            hook.remove();
            self.inner.remove_handler(generation);
            fault::forget(self.inner.id());
        }
    }

    /// Makes this thread (the owner's) hear, through `callback`, the notices no handler hears:
    /// the callback then calls `takeNotices`. It never keeps the thread's event loop alive.
    #[napi]
    pub fn observe(&self, callback: Function<(), ()>) -> napi::Result<()> {
        let sink = Arc::new(JsSink::new(callback, false)?);
        *self.notices.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.mailbox());
        self.inner.set_owner(sink, uffd_core::current_thread_id());
        Ok(())
    }

    /// The notices (and a closing peer's word) waiting for the owner's thread.
    #[napi]
    pub fn take_notices(&self) -> Vec<JsDispatch> {
        let mailbox = self.notices.lock().unwrap_or_else(|p| p.into_inner()).clone();
        mailbox.map(|m| js_batch(lock(&m).take_all())).unwrap_or_default()
    }

    /// Whether fault `id` still waits for its resolution.
    #[napi]
    pub fn fault_waiting(&self, id: f64) -> bool {
        self.inner.is_waiting(id as u64)
    }

    /// Whether a handler is installed, on any thread, or being started.
    #[napi(getter)]
    pub fn has_handler(&self) -> bool {
        self.inner.has_handler()
    }

    /// A handler is being started elsewhere (a worker): faults wait for it without a notice until
    /// `unexpectHandler(token)`.
    #[napi]
    pub fn expect_handler(&self) -> f64 {
        self.inner.expect_handler() as f64
    }

    #[napi]
    pub fn unexpect_handler(&self, token: f64) {
        self.inner.unexpect_handler(token as u64);
    }

    #[napi]
    pub fn stats(&self) -> BindingStats {
        stats_of(&self.inner)
    }

    /// Writes the pages written in ranges with write-back back to their files (`sync`: and to the
    /// disk), on a pool thread: resolves with the first failure, or nothing.
    #[napi(ts_return_type = "Promise<BindingFailure | null>")]
    pub fn flush(&self, sync: bool) -> AsyncTask<FlushTask> {
        AsyncTask::new(FlushTask { uffd: self.inner.clone(), sync })
    }

    /// Closes the userfaultfd if this handle owns it; an attached handle only stops its handler.
    #[napi]
    pub fn close(&self) {
        self.unhandle();
        if self.owner {
            self.inner.close();
        }
    }
}

impl Drop for BindingUffd {
    fn drop(&mut self) {
        // An owner collected without close(): the loop thread holds the core alive, so close it.
        self.unhandle();
        if self.owner {
            self.inner.close();
        }
    }
}

/// Closes every userfaultfd of the process, waking every thread asleep in a fault: what the
/// process does on its way out, so that no thread (a worker being stopped) waits for a handler.
#[napi]
pub fn close_all_userfaultfds() {
    crate::handshake::stop_every_handshake();
    Userfaultfd::close_all();
}
