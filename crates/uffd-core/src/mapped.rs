//! Which pages of a served range this package has mapped (a fault served natively, a store's
//! completion, a prefetch or a replay), a bit a page: what a prefetch skips without reading the
//! source. A hint, never a promise: a page removed or unmapped with an event is cleared; one the
//! memory's process dropped without telling stays marked and is left to its next fault, which is
//! served as any other.

use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) struct Mapped {
    words: Box<[AtomicU64]>,
    page: usize,
}

impl Mapped {
    /// None marked, for `size` bytes in pages of `page` bytes. Zeroed by the allocator, not
    /// written: a large bitmap (a TiB region has 32 MiB of it) takes memory only where pages are
    /// marked (every page copied into a region is, whoever copies it).
    pub(crate) fn new(size: usize, page: usize) -> Mapped {
        let words = size.div_ceil(page).div_ceil(64);
        // `vec![0; n]` of an integer is allocated zeroed (calloc), never written.
        let zeroed = Box::into_raw(vec![0u64; words].into_boxed_slice()) as *mut [AtomicU64];
        // SAFETY: AtomicU64 has the size, alignment and bit validity of u64 (its documentation
        // says so), and the pointer comes from a Box of that many u64: the same allocation layout.
        let words = unsafe { Box::from_raw(zeroed) };
        Mapped { words, page }
    }

    /// Marks the pages of `[offset, offset + len)`.
    pub(crate) fn set(&self, offset: usize, len: usize) {
        self.each_word(offset, len, |word, mask| {
            word.fetch_or(mask, Ordering::Relaxed);
        });
    }

    /// Unmarks the pages of `[offset, offset + len)`.
    pub(crate) fn clear(&self, offset: usize, len: usize) {
        self.each_word(offset, len, |word, mask| {
            word.fetch_and(!mask, Ordering::Relaxed);
        });
    }

    /// From `offset` on, the offset of the first page that is (`marked`) or is not marked, or
    /// `end` if none is before it.
    pub(crate) fn next(&self, offset: usize, end: usize, marked: bool) -> usize {
        let last = end.div_ceil(self.page).min(self.words.len() * 64);
        let mut page = offset / self.page;
        while page < last {
            let bits = self.words[page / 64].load(Ordering::Relaxed);
            let bits = if marked { bits } else { !bits } >> (page % 64);
            if bits != 0 {
                page += bits.trailing_zeros() as usize;
                return (page * self.page).clamp(offset, end);
            }
            page = (page / 64 + 1) * 64;
        }
        // Pages past the size asked for are never marked.
        if !marked && page < end.div_ceil(self.page) {
            return (page * self.page).clamp(offset, end);
        }
        end
    }

    fn each_word(&self, offset: usize, len: usize, mut apply: impl FnMut(&AtomicU64, u64)) {
        let first = offset / self.page;
        let last = (offset + len).div_ceil(self.page).min(self.words.len() * 64);
        let mut page = first;
        while page < last {
            let in_word = (64 - page % 64).min(last - page);
            let mask = if in_word == 64 { u64::MAX } else { ((1u64 << in_word) - 1) << (page % 64) };
            apply(&self.words[page / 64], mask);
            page += in_word;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory, in bytes.
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
    }

    #[test]
    fn a_bitmap_takes_memory_only_where_pages_are_marked() {
        let before = resident();
        // A TiB of 4 KiB pages: 32 MiB of bitmap, were it written.
        let mapped = Mapped::new(1 << 40, 4096);
        mapped.set(1 << 39, 4096);
        assert_eq!(mapped.next((1 << 39) - (1 << 20), 1 << 40, true), 1 << 39);
        // Other tests of this process allocate meanwhile: the bound is well under the 32 MiB.
        let grown = resident().saturating_sub(before);
        assert!(grown < 16 << 20, "{grown} bytes resident for one page marked");
    }

    #[test]
    fn runs_of_marked_pages_are_found_across_words() {
        const PAGE: usize = 4096;
        let mapped = Mapped::new(300 * PAGE + 100, PAGE);
        assert_eq!(mapped.next(0, 301 * PAGE, false), 0);
        assert_eq!(mapped.next(0, 301 * PAGE, true), 301 * PAGE, "none marked");
        mapped.set(60 * PAGE, 10 * PAGE);
        mapped.set(200 * PAGE, 101 * PAGE);
        assert_eq!(mapped.next(0, 301 * PAGE, true), 60 * PAGE);
        assert_eq!(mapped.next(60 * PAGE, 301 * PAGE, false), 70 * PAGE, "across a word's end");
        assert_eq!(mapped.next(70 * PAGE, 301 * PAGE, true), 200 * PAGE);
        assert_eq!(mapped.next(200 * PAGE, 301 * PAGE, false), 301 * PAGE, "marked to the end");
        assert_eq!(mapped.next(65 * PAGE + 7, 301 * PAGE, false), 70 * PAGE, "from within a page");
        assert_eq!(mapped.next(0, 30 * PAGE, true), 30 * PAGE, "none before the end asked");
        mapped.clear(64 * PAGE, 2 * PAGE);
        assert_eq!(mapped.next(60 * PAGE, 301 * PAGE, false), 64 * PAGE);
        assert_eq!(mapped.next(64 * PAGE, 301 * PAGE, true), 66 * PAGE);
        // Past the size: nothing is marked, and nothing panics.
        mapped.set(400 * PAGE, PAGE);
        assert_eq!(mapped.next(350 * PAGE, 500 * PAGE, true), 500 * PAGE);
        assert_eq!(mapped.next(350 * PAGE, 500 * PAGE, false), 350 * PAGE);
    }
}
