//! Who reads the fd, against the real kernel: a handler that reads it itself (a puller) and the
//! loop threads that take a turn for it when it is stuck.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uffd_core::{current_thread_id, Dispatch, FaultSink, NoticeKind, Options, Region, RemoteRange, Userfaultfd};

const PAGE: usize = 4096;
const LIMIT: Duration = Duration::from_secs(10);

struct ChannelSink(Mutex<Sender<Vec<Dispatch>>>);

impl FaultSink for ChannelSink {
    fn deliver(&self, batch: Vec<Dispatch>) -> Result<(), Vec<Dispatch>> {
        self.0.lock().unwrap().send(batch).map_err(|e| e.0)
    }
}

/// A puller stuck outside its `pull` (its handler blocks) when the peer hangs up: the loop
/// thread that takes a turn for it sees the hang-up, says it and closes the fd, as the puller
/// itself or a loop thread would have. (The rescue used to drop what its turn saw, so the fd
/// stayed open and the peer's hang-up went unsaid.)
#[test]
fn a_peer_that_hangs_up_while_the_pulling_handler_is_stuck_closes_the_fd() {
    let region = Region::anonymous(4 * PAGE).unwrap();
    let raw = userfaultfd::UffdBuilder::new().non_blocking(true).user_mode_only(true).create().unwrap();
    raw.register(region.as_ptr().cast(), region.size()).unwrap();
    // SAFETY: the fd was just taken out of the Uffd, which no longer owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw.into_raw_fd()) };
    let (peer, peer_end) = UnixStream::pair().unwrap();
    let range = RemoteRange { address: region.as_ptr() as usize, length: region.size(), page_size: PAGE };
    let (uffd, _) = Userfaultfd::adopt(fd, &[range], &Options::default(), Some(OwnedFd::from(peer))).unwrap();

    let (tx, rx) = channel();
    let generation = uffd.set_handler(Arc::new(ChannelSink(Mutex::new(tx))), current_thread_id()).unwrap();
    // This thread now reads the fd, and never pulls: its handler is stuck.
    let _puller = uffd.start_pulling(generation).unwrap();
    drop(peer_end);
    let toucher = region.clone();
    std::thread::spawn(move || {
        // SAFETY: the offset is inside the live mapping, which the Arc keeps alive.
        unsafe { toucher.as_ptr().add(PAGE).read_volatile() }
    });

    let start = Instant::now();
    let mut heard = false;
    while !(heard && uffd.is_closed()) {
        assert!(start.elapsed() < LIMIT, "the hang-up said ({heard}) and the fd closed within {LIMIT:?}");
        if let Ok(batch) = rx.recv_timeout(Duration::from_millis(10)) {
            heard |= batch.iter().any(|item| matches!(item, Dispatch::Notice(n) if n.kind == NoticeKind::PeerGone));
        }
    }
}
