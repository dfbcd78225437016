//! Dirty tracking without a fault per write: with WP_ASYNC the kernel lifts a page's
//! write-protection itself on the first write, and the pages written since the last clear are the
//! ones no longer protected. PAGEMAP_SCAN (Linux 6.7) reports them and re-protects them in one
//! call; where it is missing, /proc/self/pagemap's uffd-wp bit says the same page by page.

use crate::error::{Error, Result};
use crate::region::Region;
use crate::resolve::{Park, Resolver, Wake};
use crate::sys::ioctl;
use crate::sys::uapi::{self, PageRegion, PmScanArg};
use nix::errno::Errno;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// How dirty pages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtyMethod {
    /// PAGEMAP_SCAN where the kernel has it, else the pagemap bits.
    Auto,
    Scan,
    Pagemap,
}

const PAGEMAP: &str = "/proc/self/pagemap";

impl DirtyMethod {
    /// What the errors of a call name: the ioctl, or the pagemap file read without it.
    pub fn op(self) -> &'static str {
        match self {
            DirtyMethod::Auto | DirtyMethod::Scan => "PAGEMAP_SCAN",
            DirtyMethod::Pagemap => PAGEMAP,
        }
    }
}

/// Offsets of the region's pages written since they were last protected; with `clear`, they are
/// protected again, so the next call reports only later writes.
pub fn dirty_pages(resolver: &Resolver, region: &Region, clear: bool, method: DirtyMethod) -> Result<Vec<usize>> {
    let op = method.op();
    // A closed userfaultfd is EBADF whatever it negotiated, as for every other call.
    if resolver.fd.is_closed() {
        return Err(Error::Closed { op, what: "userfaultfd" });
    }
    resolver.fd.require_feature(op, uapi::FEATURE_WP_ASYNC, "dirty tracking")?;
    let start = resolver.check_registered(op, region, 0, region.size())?;
    let pagemap = File::open(PAGEMAP).map_err(|e| Error::sys("open", errno_of(&e), PAGEMAP))?;
    match method {
        DirtyMethod::Pagemap => dirty_by_pagemap(resolver, region, &pagemap, clear),
        DirtyMethod::Scan => scan(&pagemap, region, start, clear),
        DirtyMethod::Auto => match scan(&pagemap, region, start, clear) {
            Err(Error::Sys { errno: Errno::ENOTTY | Errno::EINVAL, .. }) => {
                dirty_by_pagemap(resolver, region, &pagemap, clear)
            }
            other => other,
        },
    }
}

fn dirty_by_pagemap(resolver: &Resolver, region: &Region, pagemap: &File, clear: bool) -> Result<Vec<usize>> {
    let page = region.page_size();
    let base_page = crate::region::base_page_size();
    let pages = region.size() / base_page;
    let mut entries = vec![0u8; pages * 8];
    pagemap
        .read_exact_at(&mut entries, (region.address() / base_page * 8) as u64)
        .map_err(|e| Error::sys("pread", errno_of(&e), PAGEMAP))?;
    let mut dirty = Vec::new();
    for (index, entry) in entries.chunks_exact(8).enumerate() {
        let entry = u64::from_ne_bytes(entry.try_into().expect("chunks of 8"));
        let offset = index * base_page;
        // A page no longer write-protected was written since it was protected.
        if entry & uapi::PAGEMAP_UFFD_WP == 0 && offset % page == 0 {
            dirty.push(offset);
        }
    }
    if clear {
        for &offset in &dirty {
            resolver.write_protect(region, offset, page, true, Wake(true), Park::UntilRead)?;
        }
    }
    Ok(dirty)
}

fn scan(pagemap: &File, region: &Region, start: usize, clear: bool) -> Result<Vec<usize>> {
    let end = start + region.size();
    let mut dirty = Vec::new();
    let mut out = vec![PageRegion::default(); 256];
    let mut from = start;
    while from < end {
        let mut arg = PmScanArg {
            flags: if clear { uapi::PM_SCAN_WP_MATCHING | uapi::PM_SCAN_CHECK_WPASYNC } else { 0 },
            start: from as u64,
            end: end as u64,
            category_mask: uapi::PAGE_IS_WRITTEN,
            return_mask: uapi::PAGE_IS_WRITTEN,
            ..PmScanArg::default()
        };
        let filled = ioctl::pagemap_scan(pagemap, &mut arg, &mut out)?;
        for found in &out[..filled] {
            let page = region.page_size() as u64;
            dirty.extend((found.start..found.end).step_by(page as usize).map(|at| (at - start as u64) as usize));
        }
        let walked = arg.walk_end as usize;
        if walked <= from {
            break;
        }
        from = walked;
    }
    Ok(dirty)
}

fn errno_of(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO))
}
