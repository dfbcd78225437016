//! The native fault path with no JavaScript: one thread touches fresh pages of a region served by
//! a bytes source, each touch timed; prints the median in ns. Run pinned to compare with the
//! baselines: `taskset -c 0 cargo run --release -p uffd-core --example native_latency`.

use std::time::Instant;
use uffd_core::source::{Readahead, Served, Source};
use uffd_core::{Modes, Options, Region, Userfaultfd};

fn main() {
    let pages: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let page = uffd_core::region::base_page_size();
    // With a fault timeout, as the TypeScript default has (30 s): every turn then expires.
    let timeout = std::env::args().nth(2).and_then(|a| a.parse().ok()).map(std::time::Duration::from_millis);
    let uffd = Userfaultfd::open(Options { timeout, ..Options::default() }).expect("open");
    let region = Region::anonymous(pages * page).expect("region");
    // `zero`: ZEROPAGE, as the C baseline's latency-zero; else a bytes source of the region's size
    // (each fault copies a page of its own, where the C baseline copies one page again and again).
    let zero = std::env::args().nth(3).is_some_and(|a| a == "zero");
    let expected = if zero { 0 } else { 7 };
    let source = if zero { Source::Zero } else { Source::Bytes(vec![7u8; pages * page].into()) };
    let served = Served::new(source, Readahead::default());
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served))
        .expect("register");
    let base = region.address() as *const u8;
    let mut latencies = Vec::with_capacity(pages);
    for i in 0..pages {
        let started = Instant::now();
        // SAFETY: the address lies in the region's live mapping.
        let value = unsafe { std::ptr::read_volatile(base.add(i * page)) };
        latencies.push(started.elapsed().as_nanos() as u64);
        assert_eq!(value, expected);
    }
    latencies.sort_unstable();
    println!("{{\"pages\":{pages},\"p50Ns\":{},\"p99Ns\":{}}}", latencies[pages / 2], latencies[pages * 99 / 100]);
    uffd.close();
    region.close();
}
