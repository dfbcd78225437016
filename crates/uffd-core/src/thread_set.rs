//! A set of kernel thread ids asked about on every fault or resolve (which threads run handlers,
//! which read the fd): one thread, the common case, is answered by an atomic, without a lock.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::RwLock;

/// `single` is the one thread (0: none; -1: several, then `all` holds them).
#[derive(Default)]
pub struct ThreadSet {
    single: AtomicI32,
    all: RwLock<Vec<i32>>,
}

impl ThreadSet {
    pub fn contains(&self, thread_id: i32) -> bool {
        match self.single.load(Ordering::Acquire) {
            0 => false,
            -1 => self.all.read().unwrap_or_else(|p| p.into_inner()).contains(&thread_id),
            one => one == thread_id,
        }
    }

    /// Replaces the set (its owner serialises the calls).
    pub fn set(&self, threads: Vec<i32>) {
        let single = match threads.as_slice() {
            [] => 0,
            [one] => *one,
            _ => -1,
        };
        // The list first: a reader that sees -1 must find every thread in it.
        *self.all.write().unwrap_or_else(|p| p.into_inner()) = threads;
        self.single.store(single, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_several_and_none() {
        let set = ThreadSet::default();
        assert!(!set.contains(7));
        set.set(vec![7]);
        assert!(set.contains(7) && !set.contains(8));
        set.set(vec![7, 8]);
        assert!(set.contains(7) && set.contains(8) && !set.contains(9));
        set.set(Vec::new());
        assert!(!set.contains(7));
    }
}
