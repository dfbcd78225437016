//! A residency limit on a served range, against the real kernel: at most about the limit stays
//! mapped while a thread reads far more than it; every byte read is the source's, also after an
//! eviction; a page the program wrote is never dropped, even with writers and the evictor at work.

#[path = "../src/test_dir.rs"]
mod test_dir;

use std::sync::Arc;
use std::time::{Duration, Instant};
use uffd_core::residency::Limit;
use uffd_core::source::{Readahead, ServeOptions, Served, Source};
use uffd_core::{Modes, Options, Region, Userfaultfd};

const PAGE: usize = 4096;

/// The byte at `offset` of the source.
fn expected(offset: usize) -> u8 {
    ((offset / PAGE) * 31 + offset % 251) as u8
}

fn limited(pages: usize, limit_pages: usize) -> (Arc<Userfaultfd>, Arc<Region>) {
    limited_with(pages, limit_pages, 4)
}

/// As `limited`, with `window` pages mapped per fault.
fn limited_with(pages: usize, limit_pages: usize, window: usize) -> (Arc<Userfaultfd>, Arc<Region>) {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let region = Region::anonymous(pages * PAGE).unwrap();
    let bytes: Vec<u8> = (0..pages * PAGE).map(expected).collect();
    let served = Served::with(Source::Bytes(bytes.into()), serve_options(window, Some(limit_pages)));
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    (uffd, region)
}

/// How a test's range is served: `window` pages a fault (fixed), and a limit of `limit_pages`.
fn serve_options(window: usize, limit_pages: Option<usize>) -> ServeOptions {
    ServeOptions {
        readahead: Readahead { pages: window, adaptive: false, max_pages: window },
        fallthrough: false,
        zero_removed: false,
        recorder: None,
        residency: limit_pages.map(|pages| Limit { bytes: pages * PAGE, high: Limit::HIGH, low: Limit::LOW }),
    }
}

/// Reads every page of the region (the first, the middle and the last byte), checking them.
fn read_all(region: &Region, pages: usize) {
    let base = region.as_ptr();
    for page in 0..pages {
        for at in [page * PAGE, page * PAGE + PAGE / 2, page * PAGE + PAGE - 1] {
            // SAFETY: `at` lies inside the region's live mapping.
            let byte = unsafe { base.add(at).read_volatile() };
            assert_eq!(byte, expected(at), "byte {at}");
        }
    }
}

/// Waits until the evictor has brought the resident pages to at most `pages`.
fn settles_at_most(uffd: &Userfaultfd, pages: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resident = uffd.stats().resident_pages;
        if resident <= pages || Instant::now() > deadline {
            return resident;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn reading_ten_times_the_limit_keeps_about_the_limit_resident_and_every_byte_right() {
    let (pages, limit) = (1024, 100);
    let (uffd, region) = limited(pages, limit);
    // Whatever the evictor thread gets of the CPU, no more than the limit and one readahead
    // window (4 pages) is ever mapped: past the limit the fault path evicts first.
    let mut most = 0;
    for page in 0..pages {
        // SAFETY: inside the region's live mapping.
        let byte = unsafe { region.as_ptr().add(page * PAGE).read_volatile() };
        assert_eq!(byte, expected(page * PAGE));
        most = most.max(uffd.stats().resident_pages);
    }
    assert!(most <= (limit + 4) as u64, "{most} pages resident at most, the limit is {limit}");
    read_all(&region, pages);
    let resident = settles_at_most(&uffd, limit as u64);
    assert!(resident <= limit as u64, "{resident} pages resident, the limit is {limit}");
    let stats = uffd.stats();
    assert!(stats.evictions >= (pages - limit) as u64, "{} evictions", stats.evictions);
    assert!(
        stats.eviction_batches < stats.evictions / 8,
        "{} batches for {} pages",
        stats.eviction_batches,
        stats.evictions
    );
    // Again: the pages dropped fault again and are served anew, byte for byte.
    read_all(&region, pages);
    assert!(uffd.stats().refaults >= (pages - 2 * limit) as u64, "{} refaults", uffd.stats().refaults);
    uffd.close();
    region.close();
}

#[test]
fn a_hot_set_that_fits_stays_resident_while_cold_pages_pass_through() {
    let (pages, limit) = (4096, 128);
    let (uffd, region) = limited_with(pages, limit, 1);
    let hot: Vec<usize> = (0..40).map(|i| i * 97).collect();
    let mut cold = (0..pages).filter(|p| p % 97 != 0);
    let read = |page: usize| {
        // SAFETY: inside the region's live mapping.
        let byte = unsafe { region.as_ptr().add(page * PAGE + 3).read_volatile() };
        assert_eq!(byte, expected(page * PAGE + 3), "page {page}");
    };
    // Each round: 600 cold pages read once each (almost five times the limit), the hot set read
    // after every 20 of them.
    let mut round = || {
        for (n, page) in cold.by_ref().take(600).enumerate() {
            read(page);
            if n % 20 == 0 {
                hot.iter().for_each(|&page| read(page));
            }
        }
    };
    // Two rounds to learn: a hot page dropped once while still on probation faults again, which
    // shows it is used.
    round();
    round();
    let before = uffd.stats().refaults;
    round();
    let stats = uffd.stats();
    assert!(stats.evictions > 1000, "{stats:?}");
    assert_eq!(stats.refaults - before, 0, "hot pages faulted again in the third round: {stats:?}");
    uffd.close();
    region.close();
}

#[test]
fn pages_written_are_pinned_while_writers_and_the_evictor_run_and_no_write_is_lost() {
    let (pages, limit) = (512, 64);
    let (uffd, region) = limited(pages, limit);
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let region = region.clone();
            std::thread::spawn(move || {
                // Each writer writes its counter into its own pages (one in 16, shifted by w), many times.
                for round in 1..=20u8 {
                    for page in (w * 4..pages).step_by(16) {
                        // SAFETY: inside the region's live mapping; each writer has its own pages.
                        unsafe { region.as_ptr().add(page * PAGE + 7).write_volatile(round) };
                    }
                }
            })
        })
        .collect();
    // Meanwhile the rest is read over and over, which keeps the evictor at work.
    for _ in 0..3 {
        let base = region.as_ptr();
        for page in (0..pages).filter(|p| p % 4 != 0) {
            // SAFETY: inside the region's live mapping.
            let byte = unsafe { base.add(page * PAGE + 1).read_volatile() };
            assert_eq!(byte, expected(page * PAGE + 1));
        }
    }
    for writer in writers {
        writer.join().unwrap();
    }
    read_all_but_written(&region, pages);
    for page in (0..pages).filter(|p| p % 16 < 16 && p % 4 == 0 && (p % 16) / 4 < 4) {
        // SAFETY: inside the region's live mapping.
        let byte = unsafe { region.as_ptr().add(page * PAGE + 7).read_volatile() };
        assert_eq!(byte, 20, "the last write to page {page}");
    }
    let stats = uffd.stats();
    assert_eq!(stats.dirty_pages, (pages / 4) as u64, "every written page pinned");
    assert!(stats.evictions > 0);
    uffd.close();
    region.close();
}

/// Reads every page no writer wrote, checking them.
fn read_all_but_written(region: &Region, pages: usize) {
    for page in (0..pages).filter(|p| p % 4 != 0) {
        // SAFETY: inside the region's live mapping.
        let byte = unsafe { region.as_ptr().add(page * PAGE + PAGE - 1).read_volatile() };
        assert_eq!(byte, expected(page * PAGE + PAGE - 1));
    }
}

#[test]
fn a_limit_is_refused_on_a_private_file_mapping_and_with_its_own_write_protection() {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let shared = Region::shmem_private(16 * PAGE, "residency").unwrap();
    let limit = Limit { bytes: 8 * PAGE, high: Limit::HIGH, low: Limit::LOW };
    let options = || ServeOptions {
        readahead: Readahead::default(),
        fallthrough: false,
        zero_removed: false,
        recorder: None,
        residency: Some(limit),
    };
    let served = Served::with(Source::Zero, options());
    let error = uffd.register_served(&shared, Modes { missing: true, ..Modes::default() }, 0, None, Some(served));
    assert!(error.unwrap_err().to_string().contains("not private shmem memory"));
    let private = Region::anonymous(16 * PAGE).unwrap();
    let served = Served::with(Source::Zero, options());
    let error =
        uffd.register_served(&private, Modes { missing: true, wp: true, ..Modes::default() }, 0, None, Some(served));
    assert!(error.unwrap_err().to_string().contains("missing faults only"));
    uffd.close();
}

/// Reads `region` (of `pages` pages of `page` bytes, served from bytes made by `expected`) twice
/// through a limit of `limit` pages: every byte checked, the limit held, dropped pages faulted again.
fn read_twice_through(uffd: &Userfaultfd, region: &Region, pages: usize, page: usize, limit: usize) {
    let mut most = 0;
    for _ in 0..2 {
        for index in 0..pages {
            for at in [index * page, index * page + page / 2, index * page + page - 1] {
                // SAFETY: inside the region's live mapping.
                let byte = unsafe { region.as_ptr().add(at).read_volatile() };
                assert_eq!(byte, expected(at), "byte {at}");
            }
            most = most.max(uffd.stats().resident_pages);
        }
    }
    let stats = uffd.stats();
    assert!(most <= (limit + 1) as u64, "{most} pages resident at most, the limit is {limit}");
    // A dropped page that was not freed would still be there: no fault, no re-fault.
    assert!(stats.refaults >= (pages - limit) as u64, "{stats:?}");
}

fn limited_on(region: &Arc<Region>, limit_pages: usize) -> Arc<Userfaultfd> {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let page = region.page_size();
    let bytes: Vec<u8> = (0..region.size()).map(expected).collect();
    let mut options = serve_options(1, None);
    options.residency = Some(Limit { bytes: limit_pages * page, high: Limit::HIGH, low: Limit::LOW });
    let served = Served::with(Source::Bytes(bytes.into()), options);
    uffd.register_served(region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    uffd
}

#[test]
fn shared_shmem_through_a_limit_has_holes_punched_and_reads_right() {
    let (pages, limit) = (1024, 100);
    let region = Region::shmem(pages * PAGE, "residency-shmem").unwrap();
    let uffd = limited_on(&region, limit);
    read_twice_through(&uffd, &region, pages, PAGE, limit);
    uffd.close();
    region.close();
}

#[test]
fn hugetlb_memory_through_a_limit_of_huge_pages_reads_right() {
    const HUGE: usize = 2 << 20;
    let (pages, limit) = (24, 8);
    let region = match Region::hugetlb(pages * HUGE, HUGE, "residency-hugetlb") {
        Ok(region) => region,
        // .ci/run reserves huge pages: there, none to be had is a failure.
        Err(err) if std::env::var_os("CI").is_none() => return eprintln!("skipped, no huge pages to be had: {err}"),
        Err(err) => panic!("no huge pages to be had (CI reserves them): {err}"),
    };
    let uffd = limited_on(&region, limit);
    read_twice_through(&uffd, &region, pages, HUGE, limit);
    uffd.close();
    region.close();
}

/// A file of `pages` pages of the source's bytes, in a folder of its own (removed with it).
fn data_file(pages: usize) -> (test_dir::Dir, String) {
    let dir = test_dir::Dir::new("uffd-residency");
    let path = dir.0.join("data.bin");
    let bytes: Vec<u8> = (0..pages * PAGE).map(expected).collect();
    std::fs::write(&path, bytes).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn writable(path: &str, pages: usize, limit_pages: Option<usize>) -> (Arc<Userfaultfd>, Arc<Region>) {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let region = Region::anonymous(pages * PAGE).unwrap();
    let served = Served::with(Source::writable_file(path, 0).unwrap(), serve_options(4, limit_pages));
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    (uffd, region)
}

#[test]
fn written_pages_reach_the_file_on_flush_and_the_rest_is_left_as_it_was() {
    let pages = 64;
    let (_dir, path) = data_file(pages);
    let (uffd, region) = writable(&path, pages, None);
    for page in [0, 9, 63] {
        // SAFETY: inside the region's live mapping.
        unsafe { region.as_ptr().add(page * PAGE + 100).write_volatile(0xee) };
    }
    assert_eq!(uffd.stats().dirty_pages, 3);
    uffd.flush(true).unwrap();
    let file = std::fs::read(&path).unwrap();
    for (at, byte) in file.iter().enumerate() {
        let want = if [0, 9, 63].map(|p| p * PAGE + 100).contains(&at) { 0xee } else { expected(at) };
        assert_eq!(*byte, want, "byte {at} of the file");
    }
    let stats = uffd.stats();
    assert_eq!((stats.dirty_pages, stats.write_backs), (0, 3));
    // Written again after the flush: the page is protected again, the write is seen and goes back.
    // SAFETY: inside the region's live mapping.
    unsafe { region.as_ptr().add(9 * PAGE + 101).write_volatile(0xdd) };
    uffd.flush(false).unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[9 * PAGE + 101], 0xdd);
    uffd.close();
    region.close();
}

#[test]
fn a_write_to_a_missing_page_takes_one_fault_and_a_stream_of_writes_one_per_window() {
    let pages = 256;
    let (_dir, path) = data_file(pages);
    // A fixed window: the written page alone is let in, the rest of its window stays clean.
    let (uffd, region) = writable(&path, pages, None);
    for page in (0..pages).step_by(8) {
        // SAFETY: inside the region's live mapping.
        unsafe { region.as_ptr().add(page * PAGE + 5).write_volatile(0xab) };
    }
    let stats = uffd.stats();
    assert_eq!((stats.faults_missing, stats.faults_wp), ((pages / 8) as u64, 0), "{stats:?}");
    assert_eq!(stats.dirty_pages, (pages / 8) as u64);
    uffd.flush(false).unwrap();
    assert_eq!(uffd.stats().write_backs, (pages / 8) as u64);
    uffd.close();
    region.close();
    // A window grown by sequential faults: a stream of writes faults once per window, and all of
    // it goes back to the file (the pages the stream did not write, as the file has them).
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let region = Region::anonymous(pages * PAGE).unwrap();
    let options = ServeOptions {
        readahead: Readahead { pages: 1, adaptive: true, max_pages: 32 },
        fallthrough: false,
        zero_removed: false,
        recorder: None,
        residency: Some(Limit { bytes: 64 * PAGE, high: Limit::HIGH, low: Limit::LOW }),
    };
    let served = Served::with(Source::writable_file(&path, 0).unwrap(), options);
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    for page in 0..pages {
        // SAFETY: inside the region's live mapping.
        unsafe { region.as_ptr().add(page * PAGE + 9).write_volatile(0xcd) };
    }
    uffd.flush(false).unwrap();
    let stats = uffd.stats();
    assert!(stats.faults_missing + stats.faults_wp < (pages / 4) as u64, "{stats:?}");
    let file = std::fs::read(&path).unwrap();
    for (at, byte) in file.iter().enumerate() {
        let want = if at % PAGE == 9 {
            0xcd
        } else if at % PAGE == 5 && (at / PAGE) % 8 == 0 {
            0xab
        } else {
            expected(at)
        };
        assert_eq!(*byte, want, "byte {at} of the file");
    }
    uffd.close();
    region.close();
}

#[test]
fn with_a_limit_written_pages_go_back_before_they_are_dropped_and_no_write_is_lost_under_writers() {
    let (pages, limit) = (512, 64);
    let (_dir, path) = data_file(pages);
    let (uffd, region) = writable(&path, pages, Some(limit));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let region = region.clone();
            std::thread::spawn(move || {
                for round in 1..=10u8 {
                    for page in (w..pages).step_by(4) {
                        // SAFETY: inside the region's live mapping; each writer has its own pages.
                        unsafe { region.as_ptr().add(page * PAGE + 7 + w).write_volatile(round) };
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let stats = uffd.stats();
    assert!(stats.evictions > 0 && stats.write_backs > 0, "{stats:?}");
    assert!(settles_at_most(&uffd, limit as u64) <= limit as u64);
    uffd.flush(false).unwrap();
    let file = std::fs::read(&path).unwrap();
    for page in 0..pages {
        let w = page % 4;
        assert_eq!(file[page * PAGE + 7 + w], 10, "the last write to page {page}, in the file");
        // SAFETY: inside the region's live mapping.
        let byte = unsafe { region.as_ptr().add(page * PAGE + 7 + w).read_volatile() };
        assert_eq!(byte, 10, "the last write to page {page}, in memory");
        assert_eq!(file[page * PAGE + 3000], expected(page * PAGE + 3000));
    }
    uffd.close();
    region.close();
}

#[test]
fn a_write_back_that_fails_is_said_by_flush_and_the_page_stays_written() {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let region = Region::anonymous(16 * PAGE).unwrap();
    let options = ServeOptions {
        readahead: Readahead::default(),
        fallthrough: false,
        zero_removed: false,
        recorder: None,
        residency: None,
    };
    // /dev/full reads as zeros and refuses every write with ENOSPC.
    let served = Served::with(Source::writable_file("/dev/full", 0).unwrap(), options);
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    // SAFETY: inside the region's live mapping.
    unsafe { region.as_ptr().add(3 * PAGE).write_volatile(0x42) };
    let error = uffd.flush(false).unwrap_err().to_string();
    assert!(error.contains("ENOSPC") && error.contains("/dev/full") && error.contains("offset 12288"), "{error}");
    assert_eq!(uffd.stats().dirty_pages, 1);
    assert_eq!(uffd.stats().write_back_errors, 1);
    // SAFETY: inside the region's live mapping.
    assert_eq!(unsafe { region.as_ptr().add(3 * PAGE).read_volatile() }, 0x42);
    assert!(uffd.flush(false).is_err(), "tried again, and said again");
    uffd.close();
    region.close();
}

#[test]
fn two_thousand_registrations_with_limits_work_on_one_evictor_thread() {
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let (count, pages, limit) = (2000, 32, 16);
    let bytes: Arc<[u8]> = (0..pages * PAGE).map(expected).collect::<Vec<u8>>().into();
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let before = threads();
    let regions: Vec<Arc<Region>> = (0..count)
        .map(|_| {
            let region = Region::anonymous(pages * PAGE).unwrap();
            let served = Served::with(Source::Bytes(bytes.clone()), serve_options(1, Some(limit)));
            uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
            region
        })
        .collect();
    for region in &regions {
        read_all(region, pages);
    }
    assert!(threads() <= before + 2, "{} threads, {before} before", threads());
    assert!(settles_at_most(&uffd, (count * limit) as u64) <= (count * limit) as u64);
    assert!(uffd.stats().evictions >= (count * (pages - limit)) as u64);
    uffd.close();
    for region in regions {
        region.close();
    }
}

#[test]
fn with_writable_layers_writes_go_to_the_topmost_file_and_are_read_from_it_after_evictions() {
    let pages = 64;
    let (dir, base) = data_file(pages);
    let diff = dir.0.join("diff.bin");
    std::fs::File::create(&diff).unwrap().set_len((pages * PAGE) as u64).unwrap(); // a diff of holes only
    let diff = diff.to_string_lossy().into_owned();
    let uffd = Userfaultfd::open(Options::default()).unwrap();
    let region = Region::anonymous(pages * PAGE).unwrap();
    let served = Served::with(Source::layers(&[&base, &diff], 0, true).unwrap(), serve_options(1, Some(24)));
    uffd.register_served(&region, Modes { missing: true, ..Modes::default() }, 0, None, Some(served)).unwrap();
    for page in (0..pages).step_by(3) {
        // SAFETY: inside the region's live mapping.
        unsafe { region.as_ptr().add(page * PAGE + 11).write_volatile(0x5a) };
    }
    uffd.flush(false).unwrap();
    // Read all twice: the pages dropped come back from the diff where it has them, else the base.
    for _ in 0..2 {
        for at in (0..pages * PAGE).step_by(PAGE / 2).chain((0..pages).map(|p| p * PAGE + 11)) {
            // SAFETY: inside the region's live mapping.
            let byte = unsafe { region.as_ptr().add(at).read_volatile() };
            let want = if at % PAGE == 11 && (at / PAGE) % 3 == 0 { 0x5a } else { expected(at) };
            assert_eq!(byte, want, "byte {at}");
        }
    }
    assert!(uffd.stats().refaults > 0);
    assert_eq!(
        std::fs::read(&base).unwrap(),
        (0..pages * PAGE).map(expected).collect::<Vec<u8>>(),
        "the base is never written"
    );
    let written = std::fs::read(&diff).unwrap();
    for page in (0..pages).step_by(3) {
        assert_eq!(written[page * PAGE + 11], 0x5a, "page {page} in the diff");
    }
    uffd.close();
    region.close();
}

#[test]
fn a_write_back_to_a_file_removed_or_cut_shorter_since_it_was_opened_is_an_error() {
    let pages = 16;
    for cut in [false, true] {
        let (_dir, path) = data_file(pages);
        let (uffd, region) = writable(&path, pages, None);
        // SAFETY: inside the region's live mapping.
        unsafe { region.as_ptr().add(2 * PAGE).write_volatile(1) };
        if cut {
            std::fs::File::options().write(true).open(&path).unwrap().set_len(PAGE as u64).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let error = uffd.flush(false).unwrap_err();
        let (code, words) = if cut { ("ESTALE", "cut to 4096 bytes") } else { ("ENOENT", "removed") };
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(words) && error.to_string().contains(&path), "{error}");
        assert_eq!(uffd.stats().dirty_pages, 1, "the page stays written");
        uffd.close();
        region.close();
    }
}
