//! The faults in flight: each admitted once per page, found by id, settled, expired at its
//! deadline. Plain data: resolving, waking and falling back are the caller's.

use crate::fault::Fault;
use std::collections::HashMap;
use std::time::Instant;

/// Where a fault in flight stands: waiting for its resolution, or asleep until its wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nobody has resolved it yet.
    Waiting,
    /// Resolved with DONTWAKE: the page is there, the thread still sleeps until a wake.
    Asleep,
}

/// A fault in flight.
pub struct InFlight {
    pub fault: Fault,
    pub stage: Stage,
    pub deadline: Option<Instant>,
    /// Another message for the same page arrived while this one was in flight.
    pub duplicate: bool,
    /// The handler generation the fault was handed to.
    pub delivered_to: Option<u64>,
}

/// Faults in flight by id, and the one in flight for each page.
#[derive(Default)]
pub struct FaultTable {
    by_id: HashMap<u64, InFlight>,
    by_page: HashMap<usize, u64>,
}

impl FaultTable {
    /// Notes a second message for `page` on the fault in flight there; false if there is none.
    pub fn mark_duplicate(&mut self, page: usize) -> bool {
        let Some(first) = self.by_page.get(&page) else {
            return false;
        };
        match self.by_id.get_mut(first) {
            Some(entry) => {
                entry.duplicate = true;
                true
            }
            None => false,
        }
    }

    /// Admits a new fault at `page` (its region's address plus offset), waiting, until `deadline`.
    pub fn insert(&mut self, fault: Fault, page: usize, deadline: Option<Instant>) {
        self.by_page.insert(page, fault.id);
        self.by_id.insert(
            fault.id,
            InFlight { fault, stage: Stage::Waiting, deadline, duplicate: false, delivered_to: None },
        );
    }

    pub fn get(&self, id: u64) -> Option<&InFlight> {
        self.by_id.get(&id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// Marks fault `id` resolved without a wake.
    pub fn set_asleep(&mut self, id: u64) {
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.stage = Stage::Asleep;
        }
    }

    /// Records which handler generation fault `id` was handed to (`None`: handed back).
    pub fn set_delivered(&mut self, id: u64, generation: Option<u64>) {
        if let Some(entry) = self.by_id.get_mut(&id) {
            entry.delivered_to = generation;
        }
    }

    /// Takes fault `id` out of the table.
    pub fn take(&mut self, id: u64) -> Option<InFlight> {
        let entry = self.by_id.remove(&id)?;
        let page = entry.fault.region.address() + entry.fault.offset;
        if self.by_page.get(&page) == Some(&id) {
            self.by_page.remove(&page);
        }
        Some(entry)
    }

    /// Takes out every fault that `which` picks.
    pub fn take_where(&mut self, which: impl Fn(&InFlight) -> bool) -> Vec<InFlight> {
        let ids: Vec<u64> = self.by_id.iter().filter(|(_, entry)| which(entry)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Settles fault `id` resolved: woken, it leaves the table (returned if a second thread queued
    /// behind its message, which the caller must wake too); not woken (DONTWAKE), it stays asleep.
    pub fn settle(&mut self, id: u64, woken: bool) -> Option<InFlight> {
        if !woken {
            self.set_asleep(id);
            return None;
        }
        self.take(id).filter(|entry| entry.duplicate)
    }

    /// Forgets the faults `which` picks (their range was woken or released); returns those a second
    /// thread queued behind, which the caller must wake (nothing else would).
    pub fn forget(&mut self, which: impl Fn(&Fault) -> bool) -> Vec<InFlight> {
        self.take_where(|entry| which(&entry.fault)).into_iter().filter(|entry| entry.duplicate).collect()
    }

    /// Takes out every fault whose deadline is `now` or earlier.
    pub fn take_expired(&mut self, now: Instant) -> Vec<InFlight> {
        self.take_where(|entry| entry.deadline.is_some_and(|deadline| deadline <= now))
    }

    /// The earliest deadline of a fault in flight.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_id.values().filter_map(|entry| entry.deadline).min()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn clear(&mut self) {
        self.by_id.clear();
        self.by_page.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultKind;
    use crate::region::Region;
    use std::time::Duration;

    const PAGE: usize = 4096;

    fn fault(id: u64, region: &std::sync::Arc<Region>, offset: usize) -> Fault {
        Fault {
            id,
            region: region.clone(),
            offset,
            address: region.address() + offset,
            kind: FaultKind::Missing,
            write: false,
            thread_id: 7,
        }
    }

    #[test]
    fn one_fault_per_page_in_flight_and_later_messages_mark_it_duplicate() {
        let region = Region::remote(0x40_0000, 4 * PAGE, PAGE).unwrap();
        let mut table = FaultTable::default();
        let page = region.address() + PAGE;
        assert!(!table.mark_duplicate(page), "nothing in flight there yet");
        table.insert(fault(1, &region, PAGE), page, None);
        assert!(table.mark_duplicate(page));
        assert!(table.get(1).unwrap().duplicate);
        let taken = table.take(1).unwrap();
        assert_eq!(taken.fault.id, 1);
        assert!(!table.mark_duplicate(page), "the page is free again once the fault is taken");
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn deadlines_expire_in_order_and_dontwake_faults_stay_until_taken() {
        let region = Region::remote(0x50_0000, 4 * PAGE, PAGE).unwrap();
        let mut table = FaultTable::default();
        let now = Instant::now();
        table.insert(fault(1, &region, 0), region.address(), Some(now + Duration::from_millis(10)));
        table.insert(fault(2, &region, PAGE), region.address() + PAGE, Some(now + Duration::from_secs(60)));
        table.insert(fault(3, &region, 2 * PAGE), region.address() + 2 * PAGE, None);
        table.set_asleep(3);
        assert_eq!(table.next_deadline(), Some(now + Duration::from_millis(10)));
        let expired = table.take_expired(now + Duration::from_millis(20));
        assert_eq!(expired.iter().map(|e| e.fault.id).collect::<Vec<_>>(), [1]);
        assert_eq!(table.get(3).unwrap().stage, Stage::Asleep);
        table.set_delivered(2, Some(5));
        let orphans = table.take_where(|e| e.delivered_to == Some(5));
        assert_eq!(orphans.len(), 1);
        assert!(table.contains(3) && !table.contains(2));
    }
}
