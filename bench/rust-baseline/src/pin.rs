//! CPU affinity, for `--pin`.

use crate::fail::{Context, Failure};
use nix::sched::{sched_getcpu, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Runs the calling thread on `cpu` only; the threads it creates later inherit that.
pub fn pin_to(cpu: usize) -> Result<(), Failure> {
    let mut set = CpuSet::new();
    set.set(cpu).context("sched_setaffinity")?;
    sched_setaffinity(Pid::from_raw(0), &set).context("sched_setaffinity")
}

/// The CPU the calling thread runs on (`usize::MAX` if the kernel cannot say).
pub fn current_cpu() -> usize {
    sched_getcpu().unwrap_or(usize::MAX)
}
