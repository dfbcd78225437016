//! Receiving a userfaultfd from another process over a Unix socket, in Firecracker's handshake:
//! on a listening socket (`BindingListener`) or a connected one (`receiveFd`). Accepting and
//! receiving wait for the peer, so they run on libuv's thread pool and resolve a Promise; they
//! wait in poll(2), so that a `BindingCancel` or the listener's `close` stops them (`cancel.rs`).

use crate::cancel::BindingCancel;
use crate::errors::{sys_error, throw, BindingFailure, OrThrow};
use crate::keeper::BindingKeeper;
use crate::options::{core_options, BindingOptions};
use crate::outcome::{outcome_of, BindingOutcome};
use crate::panic::guard;
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use uffd_core::cancel::{Cancel, Group, Stop};
use uffd_core::handshake::{self, Ended, Handshake};
use uffd_core::keeper::Link;
use uffd_core::lobby::{self, Lobby};
use uffd_core::{Error, Options};

pub struct Receive {
    source: Source,
    options: Options,
    cancel: Arc<Cancel>,
    /// The keeper each VM received is handed to, if the server has one.
    keeper: Option<Arc<Link>>,
}

enum Source {
    /// A listener, the connections accepted on it that wait for their handshake, and how long each may.
    Listener(Arc<UnixListener>, Arc<Lobby>, Duration),
    Stream(Option<OwnedFd>),
}

/// A handshake received, and whether its VM could be handed to the keeper.
pub struct Received {
    handshake: Result<Handshake, Ended>,
    keeper_error: Option<Error>,
}

impl Task for Receive {
    type Output = Received;
    type JsValue = BindingOutcome;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guard("handshake", || {
            let handshake = match &mut self.source {
                Source::Listener(listener, lobby, limit) => lobby::accept_within(listener, lobby, *limit, &self.cancel),
                Source::Stream(stream) => match stream.take() {
                    Some(stream) => handshake::receive_until(stream, &self.cancel),
                    None => Err(Error::invalid("handshake", "this handshake was already received").into()),
                },
            };
            // Handed to the keeper before it is served: a server that dies from here on leaves it kept.
            let keeper_error = match (&handshake, &self.keeper) {
                (Ok(shake), Some(link)) => link.keep(shake).err(),
                _ => None,
            };
            Received { handshake, keeper_error }
        })
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        let mut outcome = outcome_of(output.handshake, &self.options);
        outcome.keeper_error = output.keeper_error.as_ref().map(BindingFailure::of);
        Ok(outcome)
    }
}

/// Every handshake under way in the process: the process's exit stops them all, since it waits
/// for the pool threads they wait on (a pending `accept()` would hold up `process.exit()`).
static EVERY_HANDSHAKE: LazyLock<Group> = LazyLock::new(Group::default);

/// Stops every handshake under way, for good (the process is on its way out).
pub(crate) fn stop_every_handshake() {
    EVERY_HANDSHAKE.stop(Stop::Closed);
}

/// A cancel for a handshake about to start, in the groups that may stop it.
fn cancel_in(env: &Env, groups: &[Option<&Group>]) -> napi::Result<Arc<Cancel>> {
    let cancel = Cancel::new().map_err(|error| throw(env, &sys_error("eventfd", error, "a handshake's cancel")))?;
    EVERY_HANDSHAKE.join(&cancel);
    for group in groups.iter().flatten() {
        group.join(&cancel);
    }
    Ok(cancel)
}

/// A listening Unix socket for handshakes.
#[napi]
pub struct BindingListener {
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
    /// The keeper each VM accepted is handed to (`keepWith`).
    keeper: Mutex<Option<Arc<Link>>>,
}

/// The lobby of a new listener.
fn new_lobby(env: &Env) -> napi::Result<Lobby> {
    Lobby::new().map_err(|error| throw(env, &sys_error("eventfd", error, "a listener's lobby")))
}

#[napi]
impl BindingListener {
    #[napi(factory)]
    pub fn listen(env: Env, path: String, options: BindingOptions, handshake_timeout_ms: u32) -> napi::Result<Self> {
        let options = core_options(&env, options)?;
        let listener = handshake::listen(&path).or_throw(&env)?;
        Self::serving(&env, listener, &path, options, handshake_timeout_ms, false)
    }

    /// Listens on a socket this process was given as `fd` (systemd's socket activation); the fd
    /// is duplicated (it stays the caller's).
    #[napi(factory)]
    pub fn from_fd(env: Env, fd: i32, options: BindingOptions, handshake_timeout_ms: u32) -> napi::Result<Self> {
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
        Ok(BindingListener {
            listener: Arc::new(listener),
            options,
            accepts: Group::default(),
            lobby: Arc::new(new_lobby(env)?),
            limit: Duration::from_millis(u64::from(handshake_timeout_ms)),
            shared,
            keeper: Mutex::new(None),
        })
    }

    /// The next complete handshake among the connections accepted, each read as it comes within
    /// the time limit; a connection dropped ends it with its refusal. `cancel` stops it.
    #[napi(ts_return_type = "Promise<BindingOutcome>")]
    pub fn accept(&self, env: Env, cancel: Option<&BindingCancel>) -> napi::Result<AsyncTask<Receive>> {
        let cancel = cancel_in(&env, &[Some(&self.accepts), cancel.map(|c| &c.group)])?;
        let source = Source::Listener(self.listener.clone(), self.lobby.clone(), self.limit);
        let keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(AsyncTask::new(Receive { source, options: self.options.clone(), cancel, keeper }))
    }

    /// Hands every VM accepted from now on to `keeper` before it is served.
    #[napi]
    pub fn keep_with(&self, keeper: &BindingKeeper) {
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(keeper.link());
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
#[napi(ts_return_type = "Promise<BindingOutcome>")]
pub fn receive_fd(
    env: Env,
    fd: i32,
    options: BindingOptions,
    cancel: Option<&BindingCancel>,
) -> napi::Result<AsyncTask<Receive>> {
    let options = core_options(&env, options)?;
    let stream = handshake::duplicate(fd).or_throw(&env)?;
    let cancel = cancel_in(&env, &[cancel.map(|c| &c.group)])?;
    Ok(AsyncTask::new(Receive { source: Source::Stream(Some(stream)), options, cancel, keeper: None }))
}
