//! Receiving a userfaultfd from another process over a Unix socket, in Firecracker's handshake:
//! on a listening socket (`NativeListener`) or a connected one (`receiveFd`). Accepting and
//! receiving wait for the peer, so they run on libuv's thread pool and resolve a Promise; they
//! wait in poll(2), so that a `NativeCancel` or the listener's `close` stops them (`cancel.rs`).

use crate::adoption::{adopt, NativeAdoption, NativePeerProcess};
use crate::cancel::NativeCancel;
use crate::errors::{sys_error, throw, NativeFailure, OrThrow};
use crate::options::{core_options, NativeOptions};
use crate::panic::guard;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;
use uffd_core::cancel::{Cancel, Group, Stop};
use uffd_core::handshake::{self, Ended, Handshake, Refusal, LISTENER_CLOSED};
use uffd_core::lobby::{self, Lobby};
use uffd_core::{Error, Options, RemoteRange};

pub struct Receive {
    source: Source,
    options: Options,
    cancel: Arc<Cancel>,
}

enum Source {
    /// A listener, the connections accepted on it that wait for their handshake, and how long each may.
    Listener(Arc<UnixListener>, Arc<Lobby>, Duration),
    Stream(Option<OwnedFd>),
}

impl Task for Receive {
    type Output = Result<Handshake, Ended>;
    type JsValue = NativeOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("handshake", || match &mut self.source {
            Source::Listener(listener, lobby, limit) => lobby::accept_within(listener, lobby, *limit, &self.cancel),
            Source::Stream(stream) => match stream.take() {
                Some(stream) => handshake::receive_until(stream, &self.cancel),
                None => Err(Error::invalid("handshake", "this handshake was already received").into()),
            },
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let outcome = output.and_then(|mut shake| {
            let who = shake.peer;
            let process = shake.process.take();
            let ranges: Vec<RemoteRange> = shake.ranges.iter().map(|r| r.range).collect();
            let offsets = shake.ranges.iter().map(|r| r.offset as f64).collect();
            let peer = (shake.stream, (who.pid, who.uid, who.gid));
            match adopt(shake.uffd, &ranges, offsets, &self.options, Some(peer)) {
                Ok(adoption) => Ok((adoption, process.map(|p| NativePeerProcess::new(p, who.pid)))),
                Err(error) => Err(Ended::Refused(Refusal { error, peer: Some(who), process })),
            }
        });
        let (failure, process) = match outcome {
            Ok((adoption, process)) => {
                return Ok(NativeOutcome { adoption: Some(adoption), error: None, process });
            }
            Err(Ended::Refused(refusal)) => {
                let pid = refusal.peer.map(|p| p.pid);
                let process = refusal.process.zip(pid).map(|(process, pid)| NativePeerProcess::new(process, pid));
                (NativeFailure { peer_pid: pid, ..NativeFailure::of(&refusal.error) }, process)
            }
            Err(Ended::Stopped(Stop::Aborted)) => (NativeFailure::aborted("handshake"), None),
            Err(Ended::Stopped(Stop::Closed)) => (NativeFailure::of(&LISTENER_CLOSED), None),
        };
        Ok(NativeOutcome { adoption: None, error: Some(failure), process })
    }
}

/// A cancel for a handshake about to start, in the groups that may stop it.
fn cancel_in(env: &Env, groups: &[Option<&Group>]) -> napi::Result<Arc<Cancel>> {
    let cancel = Cancel::new().map_err(|error| throw(env, &sys_error("eventfd", error, "a handshake's cancel")))?;
    for group in groups.iter().flatten() {
        group.join(&cancel);
    }
    Ok(cancel)
}

/// A handshake's outcome: the adoption, or why there is none.
#[napi]
pub struct NativeOutcome {
    adoption: Option<NativeAdoption>,
    error: Option<NativeFailure>,
    /// The peer's process, held by a pidfd (an adoption's peer, or a refused one's).
    process: Option<NativePeerProcess>,
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
    #[napi]
    pub fn take_peer_process(&mut self) -> Option<NativePeerProcess> {
        self.process.take()
    }
}

/// A listening Unix socket for handshakes.
#[napi]
pub struct NativeListener {
    listener: Arc<UnixListener>,
    options: Options,
    /// The accepts under way, which `close` stops.
    accepts: Group,
    /// Connections accepted whose handshakes are not complete yet.
    lobby: Arc<Lobby>,
    /// How long each connection may take to send its handshake.
    limit: Duration,
    /// Given by another process that keeps it (systemd's socket activation): never shut down.
    shared: bool,
}

/// The lobby of a new listener.
fn new_lobby(env: &Env) -> napi::Result<Lobby> {
    Lobby::new().map_err(|error| throw(env, &sys_error("eventfd", error, "a listener's lobby")))
}

#[napi]
impl NativeListener {
    #[napi(factory)]
    pub fn listen(env: Env, path: String, options: NativeOptions, handshake_timeout_ms: u32) -> napi::Result<Self> {
        let options = core_options(&env, options)?;
        let listener = handshake::listen(&path).or_throw(&env)?;
        Self::serving(&env, listener, &path, options, handshake_timeout_ms, false)
    }

    /// Listens on a socket this process was given as `fd` (systemd's socket activation); the fd
    /// is duplicated (it stays the caller's).
    #[napi(factory)]
    pub fn from_fd(env: Env, fd: i32, options: NativeOptions, handshake_timeout_ms: u32) -> napi::Result<Self> {
        let options = core_options(&env, options)?;
        let listener = handshake::listener_of(handshake::duplicate(fd).or_throw(&env)?).or_throw(&env)?;
        Self::serving(&env, listener, &format!("fd {fd}"), options, handshake_timeout_ms, true)
    }

    /// A listener over `listener` (`what` names it in errors); `shared`: another process made the
    /// socket and keeps it (systemd), so it is never shut down or removed here.
    fn serving(
        env: &Env,
        listener: UnixListener,
        what: &str,
        options: Options,
        handshake_timeout_ms: u32,
        shared: bool,
    ) -> napi::Result<Self> {
        // Accepts wait in poll(2); one that finds the connection taken by another waits again.
        listener.set_nonblocking(true).map_err(|error| throw(env, &sys_error("fcntl", error, what)))?;
        Ok(NativeListener {
            listener: Arc::new(listener),
            options,
            accepts: Group::default(),
            lobby: Arc::new(new_lobby(env)?),
            limit: Duration::from_millis(u64::from(handshake_timeout_ms)),
            shared,
        })
    }

    /// The next complete handshake among the connections accepted, each read as it comes within
    /// the time limit; a connection dropped ends it with its refusal. `cancel` stops it.
    #[napi(ts_return_type = "Promise<NativeOutcome>")]
    pub fn accept(&self, env: Env, cancel: Option<&NativeCancel>) -> napi::Result<AsyncTask<Receive>> {
        let cancel = cancel_in(&env, &[Some(&self.accepts), cancel.map(|c| &c.group)])?;
        let source = Source::Listener(self.listener.clone(), self.lobby.clone(), self.limit);
        Ok(AsyncTask::new(Receive { source, options: self.options.clone(), cancel }))
    }

    /// Stops listening; a pending accept fails, even one whose peer connected and says nothing.
    #[napi]
    pub fn close(&self) {
        if !self.shared {
            handshake::stop_listening(&self.listener);
        }
        self.accepts.stop(Stop::Closed);
        self.lobby.close();
    }

    /// Stops taking connections; those already taken are still read (each within its time
    /// limit), then accepts fail as after `close`.
    #[napi]
    pub fn stop_accepting(&self) {
        self.lobby.stop_accepting();
    }
}

/// Receives a handshake on a connected Unix socket this process holds as `fd` (duplicated);
/// `cancel` stops it. Nothing is read from the socket before the peer has sent something.
#[napi(ts_return_type = "Promise<NativeOutcome>")]
pub fn receive_fd(
    env: Env,
    fd: i32,
    options: NativeOptions,
    cancel: Option<&NativeCancel>,
) -> napi::Result<AsyncTask<Receive>> {
    let options = core_options(&env, options)?;
    let stream = handshake::duplicate(fd).or_throw(&env)?;
    let cancel = cancel_in(&env, &[cancel.map(|c| &c.group)])?;
    Ok(AsyncTask::new(Receive { source: Source::Stream(Some(stream)), options, cancel }))
}
