//! Receiving a userfaultfd from another process over a Unix socket, in Firecracker's handshake:
//! on a listening socket (`NativeListener`) or a connected one (`receiveFd`). Accepting and
//! receiving block, so they run on libuv's thread pool and resolve a Promise.

use crate::adoption::{adopt, NativeAdoption};
use crate::errors::{NativeFailure, OrThrow};
use crate::options::{core_options, NativeOptions};
use napi::bindgen_prelude::AsyncTask;
use napi::{Env, Task};
use napi_derive::napi;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use uffd_core::handshake::{self, Handshake};
use uffd_core::{Error, Options, RemoteRange};

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
            adopt(shake.uffd, &ranges, offsets, &self.options, Some(peer))
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
