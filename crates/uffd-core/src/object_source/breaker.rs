//! The circuit breaker of an object source. A request that fails for good with a transient failure
//! (the store unreachable, 5xx, a timeout) after its whole retry bound says the store is down: from
//! then on every request, and every retry already under way, fails at once with the outage's cause,
//! until a probe in the background gets an answer. The first fault that fails in an outage says so;
//! the others are counted, not said one by one.

use crate::error::Error;
use std::sync::Mutex;
use std::time::Instant;

pub(crate) struct Breaker {
    down: Mutex<Option<Outage>>,
}

struct Outage {
    since: Instant,
    cause: Error,
    /// A fault has said this outage already.
    said: bool,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Breaker { down: Mutex::new(None) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Outage>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails at once while the store is down, with the outage's cause.
    pub(crate) fn check(&self, url: &str) -> crate::error::Result<()> {
        match &*self.lock() {
            None => Ok(()),
            Some(outage) => Err(Error::Remote {
                op: "GET",
                errno: outage.cause.errno(),
                status: outage.cause.status(),
                detail: format!(
                    "{url}: the store was taken as down {} ms ago, when a request failed past its retries \
                     ({}); faults get the fallback at once until a probe gets an answer",
                    outage.since.elapsed().as_millis(),
                    outage.cause
                ),
            }),
        }
    }

    /// Takes the store as down for `cause`. True if it was up (a new outage: start a probe).
    pub(crate) fn trip(&self, cause: &Error) -> bool {
        let mut down = self.lock();
        if down.is_some() {
            return false;
        }
        *down = Some(Outage { since: Instant::now(), cause: cause.clone(), said: false });
        true
    }

    /// The store answered again. True if it was down.
    pub(crate) fn close(&self) -> bool {
        self.lock().take().is_some()
    }

    pub(crate) fn is_down(&self) -> bool {
        self.lock().is_some()
    }

    /// Whether a fault that failed now should say so: always while the store is up (a failure
    /// that is not an outage), once per outage while it is down.
    pub(crate) fn should_say(&self) -> bool {
        match &mut *self.lock() {
            None => true,
            Some(outage) => !std::mem::replace(&mut outage.said, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn an_outage_fails_requests_at_once_and_is_said_once() {
        let breaker = Breaker::new();
        assert!(breaker.check("u").is_ok() && breaker.should_say() && breaker.should_say());
        let cause = Error::Remote { op: "GET", errno: Errno::EIO, status: Some(503), detail: "x".into() };
        assert!(breaker.trip(&cause));
        assert!(!breaker.trip(&cause), "one outage, however many requests find it");
        let err = breaker.check("u").unwrap_err();
        assert_eq!((err.status(), err.errno()), (Some(503), Errno::EIO));
        assert!(breaker.should_say() && !breaker.should_say());
        assert!(breaker.close() && !breaker.close());
        assert!(breaker.check("u").is_ok() && breaker.should_say());
    }
}
