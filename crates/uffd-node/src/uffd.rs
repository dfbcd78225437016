//! `NativeUffd`: a userfaultfd's handle in one JavaScript thread. The owner opened it; a handle
//! from `attach` (in a worker) names a live one by id.

use crate::args::{to_id, to_opt_usize, to_usize};
use crate::errors::{throw, OrThrow};
use crate::hot;
use crate::prefetch::NativePrefetch;
use crate::region::NativeRegion;
use crate::sink::{js_batch, JsDispatch, JsSink};
use crate::source::NativeSource;
use crate::teardown::TeardownHook;
use napi::bindgen_prelude::{Function, Uint8ArraySlice};
use napi::Env;
use napi_derive::napi;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uffd_core::dirty::DirtyMethod;
use uffd_core::prefetch::Prefetch;
use uffd_core::{uapi, Error, Fallback, Finish, Modes, Options, Protect, Region, Resolution, Userfaultfd, Wake};

#[napi(object)]
pub struct NativeOptions {
    pub features: Option<Vec<String>>,
    pub user_mode_only: Option<bool>,
    pub fallback: Option<String>,
    pub timeout_ms: Option<f64>,
    pub spin_micros: Option<f64>,
    pub readers: Option<f64>,
}

/// Where pages move from, for `move`.
#[napi(object, object_to_js = false)]
pub struct NativeMove {
    pub from_offset: f64,
    pub length: f64,
    pub wake: bool,
    pub allow_source_holes: bool,
}

/// Where pages move from, for a fault's `move`.
#[napi(object, object_to_js = false)]
pub struct NativeFaultMove {
    pub from_offset: f64,
    pub length: Option<f64>,
    pub wake: bool,
    pub allow_source_holes: bool,
}

/// What to register: the fault modes and the range in the region.
#[napi(object, object_to_js = false)]
pub struct NativeRegistration {
    pub missing: bool,
    pub minor: bool,
    pub wp: bool,
    pub offset: f64,
    pub length: Option<f64>,
    pub readahead_pages: Option<f64>,
    pub readahead_max_pages: Option<f64>,
    pub adaptive: Option<bool>,
    pub fallthrough: bool,
}

/// How an already-registered range is served from a source (`serve`).
#[napi(object, object_to_js = false)]
pub struct NativeServe {
    pub offset: f64,
    pub length: Option<f64>,
    pub readahead_pages: Option<f64>,
    pub readahead_max_pages: Option<f64>,
    pub adaptive: Option<bool>,
    pub fallthrough: bool,
    pub zero_removed: bool,
}

/// Native faults' latency and when the first fault came.
#[napi(object, object_from_js = false)]
pub struct NativeLatency {
    pub count: f64,
    pub p50_micros: f64,
    pub p99_micros: f64,
    pub first_fault_ms: Option<f64>,
}

/// A range of a region: offset and length in bytes.
#[napi(object)]
pub struct NativeRange {
    pub offset: f64,
    pub length: f64,
}

#[napi(object, object_from_js = false)]
pub struct NativeProbe {
    pub api: u32,
    pub features: Vec<&'static str>,
    pub ioctls: Vec<&'static str>,
}

#[napi(object, object_from_js = false)]
pub struct NativeStats {
    pub faults_missing: f64,
    pub faults_minor: f64,
    pub faults_wp: f64,
    pub duplicates: f64,
    pub copies: f64,
    pub zeropages: f64,
    pub continues: f64,
    pub poisons: f64,
    pub wakes: f64,
    pub native: f64,
    pub write_protects: f64,
    pub moves: f64,
    pub parked: f64,
    pub events: f64,
    pub bytes_mapped: f64,
    pub eexist: f64,
    pub batches: f64,
    pub messages: f64,
    pub fallbacks: f64,
    pub self_faults: f64,
    pub timeouts: f64,
    pub errors: f64,
    pub in_flight: f64,
    pub queued: f64,
    pub holes: f64,
    /// Threads that read the fd.
    pub readers: f64,
}

/// The core's options from JavaScript's.
pub(crate) fn core_options(env: &Env, options: NativeOptions) -> napi::Result<Options> {
    let fallback = match options.fallback.as_deref() {
        None | Some("zero") => Fallback::Zero,
        Some("sigbus") => Fallback::Sigbus,
        Some(other) => {
            return Err(crate::errors::invalid(
                env,
                "Userfaultfd",
                format!("fallback must be 'zero' or 'sigbus', got {other:?}"),
            ))
        }
    };
    let timeout = to_opt_usize(env, "timeoutMs", options.timeout_ms)?.map(|ms| Duration::from_millis(ms as u64));
    let spin = to_opt_usize(env, "spinMicros", options.spin_micros)?.unwrap_or(0);
    Ok(Options {
        features: options.features.unwrap_or_default(),
        user_mode_only: options.user_mode_only,
        fallback,
        timeout,
        spin: Duration::from_micros(spin as u64),
        readers: to_opt_usize(env, "readers", options.readers)?.unwrap_or(0),
    })
}

#[napi]
pub struct NativeUffd {
    inner: Arc<Userfaultfd>,
    owner: bool,
    /// What the owner's thread hears when no handler does (`observe`, `takeNotices`).
    notices: Mutex<Option<crate::sink::SharedMailbox>>,
    /// The generation of this thread's handler, and the hook that removes it at thread teardown.
    handler: Mutex<Option<(u64, TeardownHook)>>,
}

#[napi]
impl NativeUffd {
    #[napi(constructor)]
    pub fn new(env: Env, options: NativeOptions) -> napi::Result<Self> {
        let inner = Userfaultfd::open(core_options(&env, options)?).or_throw(&env)?;
        Ok(Self::owned(inner))
    }

    pub(crate) fn owned(inner: Arc<Userfaultfd>) -> Self {
        NativeUffd { inner, owner: true, notices: Mutex::new(None), handler: Mutex::new(None) }
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
        Ok(NativeUffd { inner, owner: false, notices: Mutex::new(None), handler: Mutex::new(None) })
    }

    #[napi]
    pub fn probe(env: Env) -> napi::Result<NativeProbe> {
        let probe = Userfaultfd::probe().or_throw(&env)?;
        Ok(NativeProbe {
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
        region: &NativeRegion,
        range: NativeRegistration,
        source: Option<&NativeSource>,
    ) -> napi::Result<Vec<&'static str>> {
        let offset = to_usize(&env, "offset", range.offset)?;
        let length = to_opt_usize(&env, "length", range.length)?;
        let modes = Modes { missing: range.missing, minor: range.minor, wp: range.wp };
        let served = source
            .map(|s| {
                s.served(
                    &env,
                    range.readahead_pages,
                    range.readahead_max_pages,
                    range.adaptive,
                    range.fallthrough,
                    false,
                    None,
                )
            })
            .transpose()?;
        let region = region.region(&env, "UFFDIO_REGISTER")?;
        let ioctls = self.inner.register_served(&region, modes, offset, length, served).or_throw(&env)?;
        Ok(uapi::ioctl_names(ioctls))
    }

    /// Serves an already-registered range (another process's memory) from a source, natively.
    #[napi]
    pub fn serve(
        &self,
        env: Env,
        region: &NativeRegion,
        how: NativeServe,
        source: &NativeSource,
        recorder: Option<&crate::source::NativeRecorder>,
    ) -> napi::Result<()> {
        let offset = to_usize(&env, "offset", how.offset)?;
        let length = to_opt_usize(&env, "length", how.length)?;
        let served = source.served(
            &env,
            how.readahead_pages,
            how.readahead_max_pages,
            how.adaptive,
            how.fallthrough,
            how.zero_removed,
            recorder.map(|r| r.recorder.clone()),
        )?;
        let region = region.region(&env, "serve")?;
        self.inner.serve(&region, offset, length, served).or_throw(&env)
    }

    #[napi]
    pub fn latency(&self) -> NativeLatency {
        let report = self.inner.latency();
        NativeLatency {
            count: report.count as f64,
            p50_micros: report.p50.as_secs_f64() * 1e6,
            p99_micros: report.p99.as_secs_f64() * 1e6,
            first_fault_ms: report.first_fault_after.map(|d| d.as_secs_f64() * 1e3),
        }
    }

    /// A prefetch of `ranges` (offset, length pairs) of a region, ready to start.
    #[napi]
    pub fn prefetch(
        &self,
        env: Env,
        region: &NativeRegion,
        ranges: Vec<NativeRange>,
        source: Option<&NativeSource>,
        chunk_pages: Option<f64>,
    ) -> napi::Result<NativePrefetch> {
        let region = region.region(&env, "prefetch")?;
        let ranges = ranges
            .iter()
            .map(|r| Ok((to_usize(&env, "offset", r.offset)?, to_usize(&env, "length", r.length)?)))
            .collect::<napi::Result<Vec<_>>>()?;
        let default_chunk = if region.page_size() > 4096 { 1 } else { 64 };
        let chunk_pages = to_opt_usize(&env, "chunkPages", chunk_pages)?.unwrap_or(default_chunk);
        let prefetch =
            Prefetch { ranges, source: source.map(NativeSource::source), chunk_pages, cancel: Default::default() };
        Ok(NativePrefetch::new(self.inner.clone(), region, prefetch))
    }

    #[napi]
    pub fn unregister(&self, env: Env, region: &NativeRegion, offset: f64, length: Option<f64>) -> napi::Result<()> {
        let offset = to_usize(&env, "offset", offset)?;
        let length = to_opt_usize(&env, "length", length)?;
        self.inner.unregister(&region.region(&env, "UFFDIO_UNREGISTER")?, offset, length).or_throw(&env)
    }

    #[napi]
    pub fn copy(
        &self,
        env: Env,
        region: &NativeRegion,
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
    pub fn zero(&self, env: Env, region: &NativeRegion, offset: f64, length: f64, wake: bool) -> napi::Result<f64> {
        self.over_range(&env, region, "UFFDIO_ZEROPAGE", offset, length, |uffd, r, at, len| {
            uffd.zero(r, at, len, Wake(wake))
        })
    }

    #[napi(js_name = "continue")]
    pub fn continue_range(
        &self,
        env: Env,
        region: &NativeRegion,
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
        region: &NativeRegion,
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
        region: &NativeRegion,
        offset: f64,
        from: &NativeRegion,
        how: NativeMove,
    ) -> napi::Result<f64> {
        let from = from.region(&env, "UFFDIO_MOVE")?;
        let from_offset = to_usize(&env, "fromOffset", how.from_offset)?;
        self.over_range(&env, region, "UFFDIO_MOVE", offset, how.length, |uffd, r, at, len| {
            uffd.r#move(r, at, &from, from_offset, len, Wake(how.wake), how.allow_source_holes)
        })
    }

    /// Offsets of the pages written since they were last protected (WP_ASYNC).
    #[napi]
    pub fn dirty_pages(&self, env: Env, region: &NativeRegion, clear: bool, method: String) -> napi::Result<Vec<f64>> {
        let method = match method.as_str() {
            "scan" => DirtyMethod::Scan,
            "pagemap" => DirtyMethod::Pagemap,
            _ => DirtyMethod::Auto,
        };
        let region = region.region(&env, method.op())?;
        let dirty = self.inner.dirty_pages(&region, clear, method).or_throw(&env)?;
        Ok(dirty.into_iter().map(|offset| offset as f64).collect())
    }

    #[napi]
    pub fn poison(&self, env: Env, region: &NativeRegion, offset: f64, length: f64, wake: bool) -> napi::Result<f64> {
        self.over_range(&env, region, "UFFDIO_POISON", offset, length, |uffd, r, at, len| {
            uffd.poison(r, at, len, Wake(wake))
        })
    }

    #[napi]
    pub fn wake(&self, env: Env, region: &NativeRegion, offset: f64, length: f64) -> napi::Result<()> {
        self.over_range(&env, region, "UFFDIO_WAKE", offset, length, |uffd, r, at, len| {
            uffd.wake(r, at, len).map(|()| 0)
        })
        .map(drop)
    }

    /// Converts a region, offset and length from JavaScript and runs a range operation on them.
    fn over_range(
        &self,
        env: &Env,
        region: &NativeRegion,
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

    /// Sends this userfaultfd's faults to `callback` on this thread, one call per batch.
    #[napi]
    pub fn handle(&self, env: Env, callback: Function<(), ()>, keep_alive: bool) -> napi::Result<()> {
        // A reader of the handler being replaced stops: its loop in JavaScript ends at its next pull.
        self.stop_direct(None);
        let sink = Arc::new(JsSink::new(callback, keep_alive)?);
        hot::set_mailbox(&self.inner, sink.mailbox());
        let generation = self.inner.set_handler(sink, uffd_core::current_thread_id()).or_throw(&env)?;
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
            return Err(crate::errors::invalid(&env, "handle", "install a handler before reading directly".into()));
        };
        match self.inner.start_pulling(generation) {
            Ok(puller) => {
                hot::set_puller(&self.inner, puller);
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
        if let Some(generation) = hot::take_puller(self.inner.id(), generation.map(|g| g as u64)) {
            self.inner.stop_pulling(generation);
        }
    }

    /// Stops sending faults to this thread's handler.
    #[napi]
    pub fn unhandle(&self) {
        self.stop_direct(None);
        let installed = self.lock_handler().take();
        if let Some((generation, hook)) = installed {
            hook.remove();
            self.inner.remove_handler(generation);
            hot::forget(self.inner.id());
        }
    }

    fn lock_handler(&self) -> std::sync::MutexGuard<'_, Option<(u64, TeardownHook)>> {
        self.handler.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves a fault from a native source.
    #[napi]
    pub fn fault_from_source(&self, env: Env, id: f64, source: &NativeSource) -> napi::Result<f64> {
        let id = to_id(&env, id)?;
        self.inner.resolve_from_source(id, source.for_faults()).map(|n| n as f64).or_throw(&env)
    }

    #[napi]
    pub fn fault_unprotect(&self, env: Env, id: f64, wake: bool) -> napi::Result<()> {
        self.resolve(&env, id, Resolution::Unprotect { wake }).map(drop)
    }

    #[napi]
    pub fn fault_move(&self, env: Env, id: f64, from: &NativeRegion, how: NativeFaultMove) -> napi::Result<f64> {
        let from = from.region(&env, "UFFDIO_MOVE")?;
        let from_offset = to_usize(&env, "fromOffset", how.from_offset)?;
        let len = to_opt_usize(&env, "length", how.length)?;
        self.resolve(
            &env,
            id,
            Resolution::Move { from: &from, from_offset, len, wake: how.wake, allow_holes: how.allow_source_holes },
        )
    }

    #[napi]
    pub fn fault_poison(&self, env: Env, id: f64) -> napi::Result<f64> {
        self.resolve(&env, id, Resolution::Poison)
    }

    #[napi]
    pub fn fault_wake(&self, env: Env, id: f64) -> napi::Result<()> {
        self.resolve(&env, id, Resolution::Wake).map(drop)
    }

    /// The handler is done with a fault: returns 'done', 'fell-back' or 'asleep'.
    #[napi]
    pub fn fault_finish(&self, env: Env, id: f64) -> napi::Result<&'static str> {
        let id = to_id(&env, id)?;
        Ok(match self.inner.finish(id) {
            Finish::Done => "done",
            Finish::FellBack => "fell-back",
            Finish::Asleep => "asleep",
        })
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
        mailbox.map(|m| js_batch(crate::sink::lock(&m).take_all())).unwrap_or_default()
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

    fn resolve(&self, env: &Env, id: f64, resolution: Resolution<'_>) -> napi::Result<f64> {
        let id = to_id(env, id)?;
        self.inner.resolve(id, resolution).map(|n| n as f64).or_throw(env)
    }

    #[napi]
    pub fn stats(&self) -> NativeStats {
        let s = self.inner.stats();
        NativeStats {
            readers: self.inner.readers() as f64,
            faults_missing: s.faults_missing as f64,
            faults_minor: s.faults_minor as f64,
            faults_wp: s.faults_wp as f64,
            duplicates: s.duplicates as f64,
            copies: s.copies as f64,
            zeropages: s.zeropages as f64,
            continues: s.continues as f64,
            poisons: s.poisons as f64,
            wakes: s.wakes as f64,
            native: s.native as f64,
            holes: s.holes as f64,
            write_protects: s.write_protects as f64,
            moves: s.moves as f64,
            parked: s.parked as f64,
            events: s.events as f64,
            bytes_mapped: s.bytes_mapped as f64,
            eexist: s.eexist as f64,
            batches: s.batches as f64,
            messages: s.messages as f64,
            fallbacks: s.fallbacks as f64,
            self_faults: s.self_faults as f64,
            timeouts: s.timeouts as f64,
            errors: s.errors as f64,
            in_flight: s.in_flight as f64,
            queued: s.queued as f64,
        }
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

impl Drop for NativeUffd {
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
    Userfaultfd::close_all();
}
