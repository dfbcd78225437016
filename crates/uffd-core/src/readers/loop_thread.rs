//! The loop threads: each takes turns (`turn::turn`) and hands each turn's batch over, until the
//! fd closes. They sleep only in epoll. While a handler reads the fd itself they park
//! (`puller::park_while_pulled`). With EVENT_FORK one loop thread reads through a pump.

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::readers::intake::loop_failed;
use crate::readers::puller;
use crate::readers::pump::Ring;
use crate::readers::turn::{self, Reader};
use crate::sys::uapi;
use nix::errno::Errno;
use std::sync::Arc;

/// Starts the engine's loop threads (`options.readers` of them; one, behind a pump, with EVENT_FORK).
pub fn start(engine: &Arc<Engine>) -> Result<()> {
    if engine.features() & uapi::FEATURE_EVENT_FORK != 0 {
        // Fork events come through a pump thread that never allocates (`pump.rs`).
        let ring = Ring::new()?;
        let reader = Reader::new(engine, Some(ring.clone()), true)?;
        let fd = engine.fd().duplicate()?;
        engine.reading().add_thread(ring.spawn(
            fd,
            engine.reading().stop_waker(),
            format!("uffd-pump-{}", engine.id()),
        )?);
        return spawn(engine, reader, 0);
    }
    for index in 0..engine.reader_count() {
        spawn(engine, Reader::new(engine, None, true)?, index)?;
    }
    Ok(())
}

fn spawn(engine: &Arc<Engine>, mut reader: Reader, index: usize) -> Result<()> {
    let name =
        if index == 0 { format!("uffd-loop-{}", engine.id()) } else { format!("uffd-loop-{}.{index}", engine.id()) };
    let looping = engine.clone();
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || run(&looping, &mut reader))
        .map_err(|e| Error::sys("pthread_create", Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)), ""))?;
    engine.reading().add_thread(thread);
    Ok(())
}

fn run(engine: &Engine, reader: &mut Reader) {
    while !engine.is_closed() {
        let mut batch = Vec::new();
        let seen = match turn::turn(engine, reader, None, &mut batch) {
            Ok(seen) => seen,
            Err(err) => return engine.hand_over(vec![loop_failed(format!("epoll_wait failed: {err}"), None)]),
        };
        if engine.is_closed() {
            return;
        }
        if !turn::hand_over_turn(engine, reader, &seen, batch) {
            return;
        }
        if (seen.poked || engine.reading().pulled()) && !puller::park_while_pulled(engine, reader) {
            return;
        }
    }
}
