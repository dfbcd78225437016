//! What a handshake gives JavaScript: the peer adopted, or why not (a handshake received, or a
//! VM taken back from a keeper).

use crate::adoption::{adopt, BindingAdoption, BindingPeerProcess};
use crate::errors::BindingFailure;
use napi_derive::napi;
use uffd_core::cancel::Stop;
use uffd_core::handshake::{Ended, Handshake, Refusal, LISTENER_CLOSED};
use uffd_core::{Options, RemoteRange};

/// The outcome of a handshake received (or taken back from a keeper): the peer adopted, or why not.
pub(crate) fn outcome_of(handshake: Result<Handshake, Ended>, options: &Options) -> BindingOutcome {
    let outcome = handshake.and_then(|mut shake| {
        let who = shake.peer;
        let process = shake.process.take();
        let ranges: Vec<RemoteRange> = shake.ranges.iter().map(|r| r.range).collect();
        let offsets = shake.ranges.iter().map(|r| r.offset as f64).collect();
        let peer = (shake.stream, (who.pid, who.uid, who.gid));
        match adopt(shake.uffd, &ranges, offsets, options, Some(peer)) {
            Ok(adoption) => Ok((adoption, process.map(|p| BindingPeerProcess::new(p, who.pid)))),
            Err(error) => Err(Ended::Refused(Refusal { error, peer: Some(who), process })),
        }
    });
    let (failure, process) = match outcome {
        Ok((adoption, process)) => {
            return BindingOutcome { adoption: Some(adoption), error: None, process, keeper_error: None };
        }
        Err(Ended::Refused(refusal)) => {
            let pid = refusal.peer.map(|p| p.pid);
            let process = refusal.process.zip(pid).map(|(process, pid)| BindingPeerProcess::new(process, pid));
            (BindingFailure { peer_pid: pid, ..BindingFailure::of(&refusal.error) }, process)
        }
        Err(Ended::Stopped(Stop::Aborted)) => (BindingFailure::aborted("handshake"), None),
        Err(Ended::Stopped(Stop::Closed)) => (BindingFailure::of(&LISTENER_CLOSED), None),
    };
    BindingOutcome { adoption: None, error: Some(failure), process, keeper_error: None }
}

/// A handshake's outcome: the adoption, or why there is none.
#[napi]
pub struct BindingOutcome {
    pub(crate) adoption: Option<BindingAdoption>,
    error: Option<BindingFailure>,
    /// The peer's process, held by a pidfd (an adoption's peer, or a refused one's).
    process: Option<BindingPeerProcess>,
    /// Why the VM adopted could not be handed to the keeper (it is served, but would not
    /// survive a restart of this server).
    pub(crate) keeper_error: Option<BindingFailure>,
}

#[napi]
impl BindingOutcome {
    #[napi]
    pub fn take_adoption(&mut self) -> Option<BindingAdoption> {
        self.adoption.take()
    }
    #[napi]
    pub fn take_error(&mut self) -> Option<BindingFailure> {
        self.error.take()
    }
    #[napi]
    pub fn take_peer_process(&mut self) -> Option<BindingPeerProcess> {
        self.process.take()
    }
    #[napi]
    pub fn take_keeper_error(&mut self) -> Option<BindingFailure> {
        self.keeper_error.take()
    }
}
