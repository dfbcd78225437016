//! Serving another process's userfaultfd (received over a socket, or a forked child's): its fd
//! made non-blocking, its ranges checked and turned into remote regions.

use crate::error::{Error, Result};
use crate::fd;
use crate::region::{Region, RemoteRange};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Refuses ranges that overlap each other.
pub fn check_disjoint(ranges: &[RemoteRange]) -> Result<()> {
    let mut sorted: Vec<&RemoteRange> = ranges.iter().collect();
    sorted.sort_by_key(|r| r.address);
    for pair in sorted.windows(2) {
        if pair[0].address.saturating_add(pair[0].length) > pair[1].address {
            return Err(Error::invalid(
                "adopt",
                format!("ranges at {:#x} and {:#x} overlap", pair[0].address, pair[1].address),
            ));
        }
    }
    Ok(())
}

/// Readies an adopted fd and its ranges: the fd non-blocking, the ranges disjoint, a remote region
/// for each.
pub fn prepare(fd: &OwnedFd, ranges: &[RemoteRange]) -> Result<Vec<Arc<Region>>> {
    check_disjoint(ranges)?;
    fd::set_nonblocking(fd)?;
    ranges.iter().map(|range| Region::remote(range.address, range.length, range.page_size)).collect()
}
