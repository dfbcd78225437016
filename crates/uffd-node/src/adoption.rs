//! Adopting a userfaultfd from another process, as an fd this process already holds (`adoptFd`)
//! or from a handshake (`handshake.rs`), and a fork's child: the handle, a remote region per
//! range, and who sent it.

use crate::args::to_usize;
use crate::errors::OrThrow;
use crate::handle::BindingUffd;
use crate::options::{core_options, BindingOptions};
use crate::region::BindingRegion;
use napi::Env;
use napi_derive::napi;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use uffd_core::handshake::{self, PeerProcess};
use uffd_core::{Options, Region, RemoteRange, Userfaultfd};

/// A range of the other process's memory.
#[napi(object)]
pub struct BindingRemoteRange {
    pub address: f64,
    pub length: f64,
    pub page_size: f64,
}

/// The process that sent a userfaultfd: pid, uid, gid.
pub(crate) type Sender = (i32, u32, u32);

/// An adopted userfaultfd: the handle, a remote region per range, and who sent it. Each part can
/// be taken once.
#[napi]
pub struct BindingAdoption {
    uffd: Mutex<Option<BindingUffd>>,
    regions: Mutex<Vec<BindingRegion>>,
    offsets: Vec<f64>,
    peer: Option<Sender>,
}

impl BindingAdoption {
    pub(crate) fn new(uffd: Arc<Userfaultfd>, regions: Vec<Arc<Region>>, peer: Option<Sender>) -> Self {
        let offsets = vec![0.0; regions.len()];
        BindingAdoption {
            uffd: Mutex::new(Some(BindingUffd::owned(uffd))),
            regions: Mutex::new(regions.into_iter().map(|r| BindingRegion::new(r, true)).collect()),
            offsets,
            peer,
        }
    }
}

#[napi]
impl BindingAdoption {
    #[napi]
    pub fn take_uffd(&self) -> Option<BindingUffd> {
        self.uffd.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    #[napi]
    pub fn take_regions(&self) -> Vec<BindingRegion> {
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

/// The process at the other end of a handshake, held by a pidfd taken as it connected: a signal
/// reaches it or nothing, never a process that was given its pid since.
#[napi]
pub struct BindingPeerProcess {
    process: Option<PeerProcess>,
    pid: i32,
}

impl BindingPeerProcess {
    pub(crate) fn new(process: PeerProcess, pid: i32) -> Self {
        BindingPeerProcess { process: Some(process), pid }
    }
}

#[napi]
impl BindingPeerProcess {
    #[napi(getter)]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` (a number): true if it was sent, false if the process had exited (or this
    /// was closed).
    #[napi]
    pub fn signal(&self, env: Env, signal: i32) -> napi::Result<bool> {
        match &self.process {
            Some(process) => process.signal(signal).or_throw(&env),
            None => Ok(false),
        }
    }

    /// Whether the process has exited.
    #[napi]
    pub fn exited(&self) -> bool {
        self.process.as_ref().is_none_or(PeerProcess::exited)
    }

    /// Lets go of the pidfd.
    #[napi]
    pub fn close(&mut self) {
        self.process = None;
    }
}

/// Adopts `fd`, registered by another process over `ranges`; `peer` is the connection it came
/// over (kept open: its hang-up says the peer is gone) and who is at its other end.
pub(crate) fn adopt(
    fd: OwnedFd,
    ranges: &[RemoteRange],
    offsets: Vec<f64>,
    options: &Options,
    peer: Option<(OwnedFd, Sender)>,
) -> uffd_core::Result<BindingAdoption> {
    let (stream, who) = peer.map_or((None, None), |(stream, who)| (Some(stream), Some(who)));
    let (uffd, regions) = Userfaultfd::adopt(fd, ranges, options, stream)?;
    Ok(BindingAdoption { offsets, ..BindingAdoption::new(uffd, regions, who) })
}

/// Serves a userfaultfd this process already holds as `fd` (it is duplicated: the caller keeps
/// its own), created and registered by another process over `ranges`.
#[napi]
pub fn adopt_fd(
    env: Env,
    fd: i32,
    ranges: Vec<BindingRemoteRange>,
    options: BindingOptions,
) -> napi::Result<BindingAdoption> {
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
    handshake::ensure_userfaultfd(&owned).or_throw(&env)?;
    let offsets = vec![0.0; ranges.len()];
    adopt(owned, &ranges, offsets, &options, None).or_throw(&env)
}
