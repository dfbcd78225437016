//! A process-wide table of live objects by id. A worker thread names a region or a userfaultfd by
//! its id (a token), never by address: an id that is not in the table, or whose object is gone,
//! attaches to nothing. Ids are never reused.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub struct Registry<T> {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Weak<T>>>,
}

impl<T> Registry<T> {
    pub const fn new() -> Self {
        Registry { next_id: AtomicU64::new(1), live: Mutex::new(BTreeMap::new()) }
    }

    /// A fresh id, to be given to an object before it is inserted.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn insert(&self, id: u64, object: &Arc<T>) {
        self.lock().insert(id, Arc::downgrade(object));
    }

    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        self.lock().get(&id).and_then(Weak::upgrade)
    }

    /// Whether the table has an entry for `id`, live or not.
    #[cfg(test)]
    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every live object, for a notice that concerns them all.
    pub fn all(&self) -> Vec<Arc<T>> {
        let mut live = self.lock();
        live.retain(|_, weak| weak.strong_count() > 0);
        live.values().filter_map(Weak::upgrade).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Weak<T>>> {
        // A panic while holding this lock cannot leave the map inconsistent: take it anyway.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_live_objects_only() {
        let registry = Registry::<u32>::new();
        let id = registry.next_id();
        let object = Arc::new(7);
        registry.insert(id, &object);
        assert_eq!(registry.get(id).as_deref(), Some(&7));
        assert!(registry.get(id + 1).is_none());
        drop(object);
        assert!(registry.get(id).is_none());
        assert!(registry.all().is_empty());
        assert_ne!(registry.next_id(), id);
    }
}
