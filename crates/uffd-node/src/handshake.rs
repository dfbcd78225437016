//! Adopting a userfaultfd from another process: from an fd this process already has, or over a
//! Unix socket in Firecracker's handshake. Accepting and receiving block, so they run on libuv's
//! thread pool and resolve a Promise.

use crate::args::to_usize;
use crate::errors::OrThrow;
use crate::region::NativeRegion;
use crate::uffd::{core_options, NativeOptions, NativeUffd};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use uffd_core::handshake::{self, Handshake};
use uffd_core::{Error, Options, RemoteRange, Userfaultfd};

/// A range of the other process's memory.
#[napi(object)]
pub struct NativeRemoteRange {
    pub address: f64,
    pub length: f64,
    pub page_size: f64,
}

/// An adopted userfaultfd: the handle, a remote region per range, and who sent it. Each part can
/// be taken once.
#[napi]
pub struct NativeAdoption {
    uffd: Mutex<Option<NativeUffd>>,
    regions: Mutex<Vec<NativeRegion>>,
    offsets: Vec<f64>,
    peer: Option<(i32, u32, u32)>,
}

impl NativeAdoption {
    pub(crate) fn new(
        uffd: Arc<Userfaultfd>,
        regions: Vec<Arc<uffd_core::Region>>,
        peer: Option<(i32, u32, u32)>,
    ) -> Self {
        let offsets = vec![0.0; regions.len()];
        NativeAdoption {
            uffd: Mutex::new(Some(NativeUffd::owned(uffd))),
            regions: Mutex::new(regions.into_iter().map(|r| NativeRegion::new(r, true)).collect()),
            offsets,
            peer,
        }
    }
}

#[napi]
impl NativeAdoption {
    #[napi]
    pub fn take_uffd(&self) -> Option<NativeUffd> {
        self.uffd.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    #[napi]
    pub fn take_regions(&self) -> Vec<NativeRegion> {
        std::mem::take(&mut *self.regions.lock().unwrap_or_else(|p| p.into_inner()))
    }
    /// Where each range's bytes start in the peer's snapshot file (0 where it did not say).
    #[napi(getter)]
    pub fn offsets(&self) -> Vec<f64> {
        self.offsets.clone()
    }
    #[napi(getter)]
    pub fn peer_pid(&self) -> Option<i32> {
        self.peer.map(|p| p.0)
    }
    #[napi(getter)]
    pub fn peer_uid(&self) -> Option<u32> {
        self.peer.map(|p| p.1)
    }
    #[napi(getter)]
    pub fn peer_gid(&self) -> Option<u32> {
        self.peer.map(|p| p.2)
    }
}

fn adoption(
    fd: OwnedFd,
    ranges: &[RemoteRange],
    offsets: Vec<f64>,
    options: &Options,
    peer: Option<(OwnedFd, (i32, u32, u32))>,
) -> uffd_core::Result<NativeAdoption> {
    let (stream, who) = peer.map_or((None, None), |(stream, who)| (Some(stream), Some(who)));
    let (uffd, regions) = Userfaultfd::adopt(fd, ranges, options, stream)?;
    Ok(NativeAdoption { offsets, ..NativeAdoption::new(uffd, regions, who) })
}

/// Serves a userfaultfd this process already holds as `fd` (it is duplicated: the caller keeps
/// its own), created and registered by another process over `ranges`.
#[napi]
pub fn adopt_fd(
    env: Env,
    fd: i32,
    ranges: Vec<NativeRemoteRange>,
    options: NativeOptions,
) -> napi::Result<NativeAdoption> {
    let options = core_options(&env, options)?;
    let ranges = ranges
        .iter()
        .map(|r| {
            Ok(RemoteRange {
                address: to_usize(&env, "address", r.address)?,
                length: to_usize(&env, "length", r.length)?,
                page_size: to_usize(&env, "pageSize", r.page_size)?,
            })
        })
        .collect::<napi::Result<Vec<_>>>()?;
    let owned = handshake::duplicate(fd).or_throw(&env)?;
    let offsets = vec![0.0; ranges.len()];
    adoption(owned, &ranges, offsets, &options, None).or_throw(&env)
}

pub struct Receive {
    source: Source,
    options: Options,
}

enum Source {
    Listener(Arc<UnixListener>),
    Stream(Option<OwnedFd>),
}

impl Task for Receive {
    type Output = std::result::Result<Handshake, handshake::Refusal>;
    type JsValue = NativeOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        Ok(match &mut self.source {
            Source::Listener(listener) => handshake::accept(listener),
            Source::Stream(stream) => match stream.take() {
                Some(stream) => handshake::receive(stream),
                None => Err(Error::invalid("handshake", "this handshake was already received").into()),
            },
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let outcome = output.and_then(|shake| {
            let who = shake.peer;
            let ranges: Vec<RemoteRange> = shake.ranges.iter().map(|r| r.range).collect();
            let offsets = shake.ranges.iter().map(|r| r.offset as f64).collect();
            let peer = (shake.stream, (who.pid, who.uid, who.gid));
            adoption(shake.uffd, &ranges, offsets, &self.options, Some(peer))
                .map_err(|error| handshake::Refusal { error, peer: Some(who) })
        });
        Ok(match outcome {
            Ok(adoption) => NativeOutcome { adoption: Some(adoption), error: None },
            Err(refusal) => {
                let mut failure = NativeFailure::of(&refusal.error);
                failure.peer_pid = refusal.peer.map(|p| p.pid);
                NativeOutcome { adoption: None, error: Some(failure) }
            }
        })
    }
}

/// Why a handshake failed: Node's error fields.
#[napi(object, object_from_js = false)]
pub struct NativeFailure {
    pub code: &'static str,
    pub errno: i32,
    pub syscall: &'static str,
    pub message: String,
    /// For a refused handshake: the pid of the process that sent it (SO_PEERCRED).
    pub peer_pid: Option<i32>,
    /// The HTTP status of a remote store's answer, if that is what failed.
    pub status: Option<u32>,
}

impl NativeFailure {
    pub(crate) fn of(error: &Error) -> Self {
        NativeFailure {
            code: error.code(),
            errno: -(error.errno() as i32),
            syscall: error.op(),
            message: error.to_string(),
            peer_pid: None,
            status: error.status().map(u32::from),
        }
    }
}

/// A handshake's outcome: the adoption, or why there is none.
#[napi]
pub struct NativeOutcome {
    adoption: Option<NativeAdoption>,
    error: Option<NativeFailure>,
}

#[napi]
impl NativeOutcome {
    #[napi]
    pub fn take_adoption(&mut self) -> Option<NativeAdoption> {
        self.adoption.take()
    }
    #[napi]
    pub fn take_error(&mut self) -> Option<NativeFailure> {
        self.error.take()
    }
}

/// A listening Unix socket for handshakes.
#[napi]
pub struct NativeListener {
    listener: Arc<UnixListener>,
    options: Options,
}

#[napi]
impl NativeListener {
    #[napi(factory)]
    pub fn listen(env: Env, path: String, options: NativeOptions) -> napi::Result<Self> {
        let options = core_options(&env, options)?;
        let listener = handshake::listen(&path).or_throw(&env)?;
        Ok(NativeListener { listener: Arc::new(listener), options })
    }

    /// Accepts the next connection and receives its handshake.
    #[napi(ts_return_type = "Promise<NativeOutcome>")]
    pub fn accept(&self) -> AsyncTask<Receive> {
        AsyncTask::new(Receive { source: Source::Listener(self.listener.clone()), options: self.options.clone() })
    }

    /// Stops listening; a pending accept fails.
    #[napi]
    pub fn close(&self) {
        handshake::stop_listening(&self.listener);
    }
}

/// Receives a handshake on a connected Unix socket this process holds as `fd` (duplicated).
#[napi(ts_return_type = "Promise<NativeOutcome>")]
pub fn receive_fd(env: Env, fd: i32, options: NativeOptions) -> napi::Result<AsyncTask<Receive>> {
    let options = core_options(&env, options)?;
    let stream = handshake::duplicate(fd).or_throw(&env)?;
    Ok(AsyncTask::new(Receive { source: Source::Stream(Some(stream)), options }))
}
