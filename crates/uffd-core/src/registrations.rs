//! The registered ranges of a userfaultfd, by start address: which region, and which native source
//! (`S`), cover an address. Plain data: the UFFDIO_(UN)REGISTER calls are the caller's.

use crate::region::Region;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A registered range `[start, end)` of a region, and the source that serves its faults, if any.
pub struct Registration<S> {
    pub region: Arc<Region>,
    pub end: usize,
    pub served: Option<Arc<S>>,
}

impl<S> Clone for Registration<S> {
    fn clone(&self) -> Self {
        Registration { region: self.region.clone(), end: self.end, served: self.served.clone() }
    }
}

/// Disjoint registered ranges, keyed by their start address.
pub struct Registrations<S>(BTreeMap<usize, Registration<S>>);

impl<S> Default for Registrations<S> {
    fn default() -> Self {
        Registrations(BTreeMap::new())
    }
}

impl<S> Registrations<S> {
    /// Whole regions, registered already (another process's, as it describes them).
    pub fn of_regions(regions: Vec<Arc<Region>>) -> Self {
        let mut map = Registrations::default();
        for region in regions {
            map.insert(region, None);
        }
        map
    }

    /// Records `[start, end)` of `region`, replacing whatever covered any of it.
    pub fn insert_range(&mut self, region: &Arc<Region>, start: usize, end: usize, served: Option<Arc<S>>) {
        self.carve(start, end);
        self.0.insert(start, Registration { region: region.clone(), end, served });
    }

    /// Records `[start, end)` of `region` with no source of its own, keeping the sources of the
    /// parts of it that `region` had registered with one: a registration that names no source
    /// (one that adds write-protection, say) never drops the source that serves the range.
    pub fn insert_keeping_served(&mut self, region: &Arc<Region>, start: usize, end: usize) {
        let kept: Vec<(usize, usize, Arc<S>)> = self
            .overlapping(start, end)
            .filter(|(_, reg)| Arc::ptr_eq(&reg.region, region))
            .filter_map(|(s, reg)| reg.served.clone().map(|served| (s.max(start), reg.end.min(end), served)))
            .collect();
        self.insert_range(region, start, end, None);
        for (s, e, served) in kept {
            self.insert_range(region, s, e, Some(served));
        }
    }

    /// The sources that serve parts of `[start, end)` of `region`: each part's start and end, and its source.
    pub fn served_in<'a>(
        &'a self,
        region: &'a Arc<Region>,
        start: usize,
        end: usize,
    ) -> impl Iterator<Item = (usize, usize, &'a Arc<S>)> + 'a {
        self.overlapping(start, end)
            .filter(move |(_, reg)| Arc::ptr_eq(&reg.region, region))
            .filter_map(move |(s, reg)| reg.served.as_ref().map(|served| (s.max(start), reg.end.min(end), served)))
    }

    /// Records a whole region.
    pub fn insert(&mut self, region: Arc<Region>, served: Option<Arc<S>>) {
        let (start, end) = (region.address(), region.address() + region.size());
        self.insert_range(&region, start, end, served);
    }

    /// Removes `[start, end)`, keeping the parts of registrations outside it.
    pub fn carve(&mut self, start: usize, end: usize) {
        let overlapping: Vec<usize> = self.0.range(..end).filter(|(_, reg)| reg.end > start).map(|(s, _)| *s).collect();
        for reg_start in overlapping {
            let reg = self.0.remove(&reg_start).expect("listed above");
            if reg_start < start {
                self.0.insert(reg_start, Registration { end: start, ..reg.clone() });
            }
            if reg.end > end {
                self.0.insert(end, reg);
            }
        }
    }

    /// The registration covering `address`, and where it starts.
    pub fn at(&self, address: usize) -> Option<(usize, &Registration<S>)> {
        self.0.range(..=address).next_back().filter(|(_, reg)| address < reg.end).map(|(start, reg)| (*start, reg))
    }

    /// Whether every byte of `[start, end)` is registered.
    pub fn covers(&self, start: usize, end: usize) -> bool {
        let mut covered = start;
        for (&reg_start, reg) in self.0.range(..end) {
            if reg.end <= covered {
                continue;
            }
            if reg_start > covered {
                return false;
            }
            covered = reg.end;
            if covered >= end {
                return true;
            }
        }
        false
    }

    /// The registrations that overlap `[start, end)`, with their starts.
    pub fn overlapping(&self, start: usize, end: usize) -> impl Iterator<Item = (usize, &Registration<S>)> {
        self.0.range(..end).filter(move |(_, reg)| reg.end > start).map(|(s, reg)| (*s, reg))
    }

    /// Every range: its start, end and page size.
    pub fn ranges(&self) -> Vec<(usize, usize, usize)> {
        self.0.iter().map(|(start, reg)| (*start, reg.end, reg.region.page_size())).collect()
    }

    /// Removes every range of `region`; returns them (start, end), for the kernel to unregister.
    pub fn remove_region(&mut self, region: &Arc<Region>) -> Vec<(usize, usize)> {
        let starts: Vec<usize> =
            self.0.iter().filter(|(_, reg)| Arc::ptr_eq(&reg.region, region)).map(|(start, _)| *start).collect();
        starts.into_iter().filter_map(|start| self.0.remove(&start).map(|reg| (start, reg.end))).collect()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn region(at: usize, pages: usize) -> Arc<Region> {
        Region::remote(at, pages * PAGE, PAGE).unwrap()
    }

    #[test]
    fn a_range_carved_out_of_the_middle_leaves_both_sides_registered() {
        let whole = region(0x10_0000, 16);
        let mut map = Registrations::<()>::default();
        map.insert(whole.clone(), None);
        map.carve(0x10_0000 + 4 * PAGE, 0x10_0000 + 8 * PAGE);
        assert_eq!(
            map.ranges(),
            [(0x10_0000, 0x10_0000 + 4 * PAGE, PAGE), (0x10_0000 + 8 * PAGE, 0x10_0000 + 16 * PAGE, PAGE)]
        );
        assert!(map.at(0x10_0000 + 5 * PAGE).is_none());
        let (start, reg) = map.at(0x10_0000 + 9 * PAGE + 7).unwrap();
        assert_eq!((start, reg.end), (0x10_0000 + 8 * PAGE, 0x10_0000 + 16 * PAGE));
        assert!(Arc::ptr_eq(&reg.region, &whole));
    }

    #[test]
    fn coverage_needs_every_byte_and_adjacent_ranges_join() {
        let a = region(0x20_0000, 4);
        let b = region(0x20_0000 + 4 * PAGE, 4);
        let mut map = Registrations::<()>::of_regions(vec![a.clone(), b]);
        assert!(map.covers(0x20_0000 + PAGE, 0x20_0000 + 7 * PAGE), "across the seam of two regions");
        assert!(!map.covers(0x20_0000, 0x20_0000 + 9 * PAGE), "past the end");
        map.carve(0x20_0000 + 2 * PAGE, 0x20_0000 + 3 * PAGE);
        assert!(!map.covers(0x20_0000, 0x20_0000 + 4 * PAGE), "a hole in the middle");
        assert_eq!(map.overlapping(0x20_0000, 0x20_0000 + 5 * PAGE).count(), 3);
        assert_eq!(
            map.remove_region(&a),
            [(0x20_0000, 0x20_0000 + 2 * PAGE), (0x20_0000 + 3 * PAGE, 0x20_0000 + 4 * PAGE)]
        );
        assert_eq!(map.ranges().len(), 1);
    }

    #[test]
    fn a_range_registered_again_without_a_source_keeps_the_sources_of_its_parts() {
        let whole = region(0x40_0000, 8);
        let mut map = Registrations::<u8>::default();
        map.insert_range(&whole, 0x40_0000 + 2 * PAGE, 0x40_0000 + 4 * PAGE, Some(Arc::new(7)));
        map.insert_keeping_served(&whole, 0x40_0000, 0x40_0000 + 8 * PAGE);
        assert!(map.covers(0x40_0000, 0x40_0000 + 8 * PAGE));
        let served: Vec<_> =
            map.served_in(&whole, 0x40_0000, 0x40_0000 + 8 * PAGE).map(|(s, e, v)| (s, e, **v)).collect();
        assert_eq!(served, [(0x40_0000 + 2 * PAGE, 0x40_0000 + 4 * PAGE, 7)]);
        assert!(map.at(0x40_0000 + PAGE).unwrap().1.served.is_none());
    }

    #[test]
    fn a_new_range_replaces_what_it_overlaps() {
        let old = region(0x30_0000, 8);
        let new = region(0x30_0000, 8);
        let mut map = Registrations::<()>::of_regions(vec![old]);
        map.insert_range(&new, 0x30_0000 + 2 * PAGE, 0x30_0000 + 4 * PAGE, None);
        assert_eq!(map.ranges().len(), 3);
        assert!(Arc::ptr_eq(&map.at(0x30_0000 + 3 * PAGE).unwrap().1.region, &new));
    }
}
