//! The command line: the arguments of bench/baseline.c, each `--name value`.

use crate::fail::Failure;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One thread touches fresh pages one by one, each touch timed.
    Latency,
    /// `--threads` threads touch their own slices; faults per second overall.
    Throughput,
    /// A file read into a registered region by COPY of `--chunk` bytes, then one byte read per page.
    Scan,
    /// The same file served on fault by the handler: pread + COPY of `--ra` pages.
    ScanFault,
}

impl Mode {
    fn parse(text: &str) -> Result<Self, Failure> {
        match text {
            "latency" => Ok(Self::Latency),
            "throughput" => Ok(Self::Throughput),
            "scan" => Ok(Self::Scan),
            "scan-fault" => Ok(Self::ScanFault),
            "floor" | "scan-mmap" => {
                Err(Failure::new(format!("--mode {text} measures no handler: the C baseline has it")))
            }
            _ => Err(Failure::new("unknown --mode")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Throughput => "throughput",
            Self::Scan => "scan",
            Self::ScanFault => "scan-fault",
        }
    }
}

/// How the handler fills a missing page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// UFFDIO_COPY of a page of `FILL_BYTE`.
    Copy,
    /// UFFDIO_ZEROPAGE.
    Zero,
    /// MINOR faults of a memfd whose page cache is full, UFFDIO_CONTINUE.
    Continue,
}

impl Op {
    fn parse(text: &str) -> Result<Self, Failure> {
        match text {
            "copy" => Ok(Self::Copy),
            "zero" => Ok(Self::Zero),
            "continue" => Ok(Self::Continue),
            _ => Err(Failure::new("--op must be copy, zero or continue")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Zero => "zero",
            Self::Continue => "continue",
        }
    }
}

/// Where the threads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Every thread on CPU 0.
    Same,
    /// The faulting thread(s) on CPU 0, the handler on CPU 1.
    Cross,
    /// Left to the scheduler.
    None,
}

impl Pin {
    fn parse(text: &str) -> Result<Self, Failure> {
        match text {
            "same" => Ok(Self::Same),
            "cross" => Ok(Self::Cross),
            "none" => Ok(Self::None),
            _ => Err(Failure::new("--pin must be same, cross or none")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Same => "same",
            Self::Cross => "cross",
            Self::None => "none",
        }
    }
}

#[derive(Debug)]
pub struct Args {
    pub mode: Mode,
    pub op: Op,
    pub pin: Pin,
    pub file: Option<PathBuf>,
    /// Timed pages (latency), or pages in all (throughput).
    pub pages: usize,
    /// Untimed faults before the timed ones (latency).
    pub warmup: usize,
    pub threads: usize,
    /// How long the handler polls epoll before it sleeps.
    pub spin: Duration,
    /// MiB to touch and free before the measurement.
    pub warm_mib: usize,
    /// Bytes per COPY of the scan's reference.
    pub chunk: usize,
    /// Pages per fault of the scan's handler.
    pub readahead: usize,
}

impl Args {
    /// Reads the arguments (without the program name), in the order of the C baseline's checks.
    pub fn parse(mut argv: impl Iterator<Item = String>) -> Result<Self, Failure> {
        let (mut mode, mut op, mut pin) = ("latency".to_owned(), "copy".to_owned(), "none".to_owned());
        let mut file = None;
        let (mut pages, mut warmup, mut threads, mut spin_us) = (2000, 200, 1, 0);
        let (mut warm_mib, mut chunk, mut readahead) = (64, 2 << 20, 16);
        while let Some(name) = argv.next() {
            let Some(value) = argv.next() else {
                return Err(Failure::usage(format!("{name} needs a value")));
            };
            match name.as_str() {
                "--mode" => mode = value,
                "--op" => op = value,
                "--pin" => pin = value,
                "--file" => file = Some(PathBuf::from(value)),
                "--pages" => pages = number(&value)?,
                "--warmup" => warmup = number(&value)?,
                "--threads" => threads = number(&value)?,
                "--spin" => spin_us = number(&value)?,
                "--warm-mib" => warm_mib = number(&value)?,
                "--chunk" => chunk = number(&value)?,
                "--ra" => readahead = number(&value)?,
                _ => return Err(Failure::usage(format!("unknown argument {name}"))),
            }
        }
        if pages == 0 || threads == 0 || readahead == 0 || chunk == 0 {
            return Err(bad_number());
        }
        Ok(Self {
            pin: Pin::parse(&pin)?,
            mode: Mode::parse(&mode)?,
            op: Op::parse(&op)?,
            file,
            pages,
            warmup,
            threads,
            spin: Duration::from_micros(spin_us as u64),
            warm_mib,
            chunk,
            readahead,
        })
    }
}

fn number(text: &str) -> Result<usize, Failure> {
    text.parse().map_err(|_| bad_number())
}

fn bad_number() -> Failure {
    Failure::new("bad numeric argument")
}
