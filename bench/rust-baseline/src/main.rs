//! The Rust baseline of the benchmark: bench/baseline.c's page-fault handler written on the
//! `userfaultfd` crate, with nix for epoll, eventfd, affinity and mmap.
//!
//! Built by bench/run.mjs with `cargo build --release -p uffd-rust-baseline`; takes the arguments of
//! the C baseline and prints the same JSON object on stdout (a message on stderr and exit status 1
//! on failure, 2 for a command line it cannot read):
//!
//!   --mode latency     one thread touches fresh pages one by one, each touch timed (missing fault,
//!                      served by a handler thread: epoll + read of up to 16 messages + COPY/ZEROPAGE)
//!   --mode throughput  --threads N threads touch their own slices; faults per second overall
//!   --mode scan        a file read into a registered region by UFFDIO_COPY of --chunk bytes
//!                      (pread + COPY), then one byte read per page: the reference bandwidth
//!   --mode scan-fault  the same file served on fault by the handler thread: pread + COPY of --ra pages
//!
//! Other arguments: --op copy|zero, --pages N, --warmup N, --threads N, --pin same|cross|none,
//! --spin US, --warm-mib M, --file PATH, --chunk BYTES, --ra PAGES (see bench/baseline.c). The modes
//! floor and scan-mmap measure no handler and are left to the C baseline.
#![deny(unsafe_op_in_unsafe_fn)]

mod args;
mod fail;
mod handler;
mod memory;
mod pin;

use crate::args::{Args, Mode, Op, Pin};
use crate::fail::{Context, Failure};
use crate::handler::{open_uffd, register_minor, register_missing, Handler, Resolver, Source, Stats};
use crate::memory::{page_size, warm_memory, Buffer, Mapping};
use crate::pin::{current_cpu, pin_to};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

/// The byte of every page the handler copies.
const FILL_BYTE: u8 = 0x5A;

/// A measurement done: its JSON line, and whether every byte read was right and every resolve worked.
struct Outcome {
    json: String,
    clean: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(outcome) => {
            println!("{}", outcome.json);
            if outcome.clean {
                ExitCode::SUCCESS
            } else {
                Failure::new(r#"wrong bytes read or resolves that failed (see "bad" and "handler")"#).report();
                ExitCode::FAILURE
            }
        }
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.status)
        }
    }
}

fn run() -> Result<Outcome, Failure> {
    let args = Args::parse(std::env::args().skip(1))?;
    // Every thread on CPU 0 (cross: the handler moves itself to CPU 1).
    if matches!(args.pin, Pin::Same | Pin::Cross) {
        pin_to(0)?;
    }
    warm_memory(args.warm_mib)?;
    match args.mode {
        Mode::Latency => latency(&args),
        Mode::Throughput => throughput(&args),
        Mode::Scan | Mode::ScanFault => scan(&args),
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn json_array(values: &[u64]) -> String {
    let items: Vec<String> = values.iter().map(u64::to_string).collect();
    format!("[{}]", items.join(","))
}

/// The handler's source for `--op`, and the byte the faulting threads then read.
fn page_source(op: Op) -> Result<(Source, u8), Failure> {
    Ok(match op {
        Op::Copy => (Source::Copy(Buffer::filled(page_size(), FILL_BYTE)?), FILL_BYTE),
        Op::Zero => (Source::Zero, 0),
        Op::Continue => (Source::Continue, FILL_BYTE),
    })
}

/// Reads the byte at `offset` of `region`, timed.
#[inline]
fn timed_read(region: &Mapping, offset: usize) -> (u8, u64) {
    let t0 = Instant::now();
    let value = region.read_byte(offset);
    (value, nanos(t0.elapsed()))
}

fn latency(args: &Args) -> Result<Outcome, Failure> {
    let page = page_size();
    let len = (args.warmup + args.pages) * page;
    let minor = args.op == Op::Continue;
    let region = if minor { Mapping::shmem_filled(len, FILL_BYTE)? } else { Mapping::anonymous(len)? };
    let uffd = open_uffd(minor)?;
    if minor {
        register_minor(&uffd, &region)?;
    } else {
        register_missing(&uffd, &region)?;
    }
    let (source, expect) = page_source(args.op)?;
    let handler_cpu = AtomicUsize::new(0);
    let handler = Handler::new(&uffd, &region, source, args.spin, &handler_cpu);
    let timed = |i: usize| (args.warmup + i) * page;

    let (latencies, resident, same_cpu, bad, stats) = thread::scope(|scope| -> Result<_, Failure> {
        let running = handler.spawn(scope, args.pin)?;
        let mut bad = (0..args.warmup).filter(|i| region.read_byte(i * page) != expect).count();
        let mut latencies = Vec::with_capacity(args.pages);
        // Faults after which the faulting thread ran on the CPU that resolved them.
        let mut same_cpu = 0;
        for i in 0..args.pages {
            let (value, ns) = timed_read(&region, timed(i));
            latencies.push(ns);
            bad += usize::from(value != expect);
            same_cpu += usize::from(current_cpu() == handler_cpu.load(Ordering::Relaxed));
        }
        // The cost of the timing itself: the same timed reads of the pages, now mapped (median).
        let mut again: Vec<u64> = (0..args.pages)
            .map(|i| {
                let (value, ns) = timed_read(&region, timed(i));
                bad += usize::from(value != expect);
                ns
            })
            .collect();
        again.sort_unstable();
        Ok((latencies, again[args.pages / 2], same_cpu, bad, running.stop()))
    })?;

    let json = format!(
        r#"{{"ok":true,"mode":"latency","op":"{}","pin":"{}","spinMicros":{},"bad":{bad},"residentReadNs":{resident},"sameCpuShare":{:.3},{stats},"latNs":{}}}"#,
        args.op.name(),
        args.pin.name(),
        args.spin.as_micros(),
        same_cpu as f64 / args.pages as f64,
        json_array(&latencies),
    );
    Ok(Outcome { json, clean: bad == 0 && stats.errors == 0 })
}

/// Reads one byte of each of `count` pages from page `first` on; returns the wrong bytes and when it ended.
fn touch(region: &Mapping, first: usize, count: usize, expect: u8) -> (usize, Instant) {
    let page = page_size();
    let bad = (first..first + count).filter(|i| region.read_byte(i * page) != expect).count();
    (bad, Instant::now())
}

fn throughput(args: &Args) -> Result<Outcome, Failure> {
    let per_thread = args.pages / args.threads;
    let pages = per_thread * args.threads;
    let region = Mapping::anonymous(pages * page_size())?;
    let uffd = open_uffd(false)?;
    register_missing(&uffd, &region)?;
    let (source, expect) = page_source(args.op)?;
    let handler_cpu = AtomicUsize::new(0);
    let handler = Handler::new(&uffd, &region, source, args.spin, &handler_cpu);
    let start = Barrier::new(args.threads + 1);

    let (elapsed, bad, stats) = thread::scope(|scope| -> Result<_, Failure> {
        let running = handler.spawn(scope, args.pin)?;
        let (region, start) = (&region, &start);
        let touchers: Vec<_> = (0..args.threads)
            .map(|i| {
                let spawned = thread::Builder::new().spawn_scoped(scope, move || {
                    start.wait();
                    touch(region, i * per_thread, per_thread, expect)
                });
                // The handler and the threads already started would keep the scope waiting.
                spawned.unwrap_or_else(|error| fail::fatal(Failure::os("pthread_create", error)))
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut end = t0;
        let mut bad = 0;
        for toucher in touchers {
            let (wrong, ended) = toucher.join().expect("a faulting thread does not panic");
            bad += wrong;
            end = end.max(ended);
        }
        Ok((end - t0, bad, running.stop()))
    })?;

    let json = format!(
        r#"{{"ok":true,"mode":"throughput","op":"{}","pin":"{}","threads":{},"faults":{pages},"elapsedNs":{},"bad":{bad},{stats}}}"#,
        args.op.name(),
        args.pin.name(),
        args.threads,
        nanos(elapsed),
    );
    Ok(Outcome { json, clean: bad == 0 && stats.errors == 0 })
}

/// Expected byte of page `i` of the scan file (bench/run.mjs writes it so).
fn scan_byte(i: usize) -> u8 {
    ((i * 7 + 3) & 0xff) as u8
}

/// The scan's reference: pread + COPY of whole chunks into the region, before any read.
fn prefill(uffd: &userfaultfd::Uffd, region: &Mapping, file: &File, chunk: usize) -> Result<Stats, Failure> {
    let mut resolver = Resolver::new(uffd);
    let mut buffer = Buffer::new(chunk)?;
    for offset in (0..region.len()).step_by(chunk) {
        let part = &mut buffer[..chunk.min(region.len() - offset)];
        let mut got = 0;
        while got < part.len() {
            match file.read_at(&mut part[got..], (offset + got) as u64).context("pread")? {
                0 => break,
                read => got += read,
            }
        }
        resolver.copy(region.addr() + offset, part).context("UFFDIO_COPY")?;
    }
    Ok(resolver.stats)
}

/// One byte of each page read in order.
struct Scanned {
    first: Instant,
    end: Instant,
    bad: usize,
    sum: u64,
}

fn read_pages(region: &Mapping, started: Instant) -> Scanned {
    let page = page_size();
    let mut scanned = Scanned { first: started, end: started, bad: 0, sum: 0 };
    for i in 0..region.len() / page {
        let value = region.read_byte(i * page);
        if i == 0 {
            scanned.first = Instant::now();
        }
        scanned.bad += usize::from(value != scan_byte(i));
        scanned.sum += u64::from(value);
    }
    scanned.end = Instant::now();
    scanned
}

fn scan(args: &Args) -> Result<Outcome, Failure> {
    let path = args.file.as_ref().ok_or_else(|| Failure::new("--file is needed"))?;
    let file = File::open(path).context("open(--file)")?;
    let length = file.metadata().context("fstat")?.len();
    let size = usize::try_from(length).map_err(|_| Failure::new("the file is too large"))? & !(page_size() - 1);
    let t0 = Instant::now();
    let region = Mapping::anonymous(size)?;
    let uffd = open_uffd(false)?;
    register_missing(&uffd, &region)?;
    let (scanned, stats) = if args.mode == Mode::Scan {
        let stats = prefill(&uffd, &region, &file, args.chunk)?;
        (read_pages(&region, t0), stats)
    } else {
        let readahead = args.readahead * page_size();
        let source = Source::File { file, readahead, scratch: Buffer::new(readahead)? };
        let handler_cpu = AtomicUsize::new(0);
        let handler = Handler::new(&uffd, &region, source, args.spin, &handler_cpu);
        thread::scope(|scope| -> Result<_, Failure> {
            let running = handler.spawn(scope, args.pin)?;
            let scanned = read_pages(&region, t0);
            Ok((scanned, running.stop()))
        })?
    };

    let Scanned { first, end, bad, sum } = scanned;
    let json = format!(
        r#"{{"ok":true,"mode":"{}","pin":"{}","bytes":{size},"elapsedNs":{},"ttfbNs":{},"bad":{bad},"sum":{sum},{stats}}}"#,
        args.mode.name(),
        args.pin.name(),
        nanos(end - t0),
        nanos(first - t0),
    );
    Ok(Outcome { json, clean: bad == 0 && stats.errors == 0 })
}
