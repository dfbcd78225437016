//! The parts of the userfaultfd uABI (`include/uapi/linux/userfaultfd.h`) that this crate needs by
//! name: feature and ioctl bits with the kernel's names, and the structs of the ioctls that
//! `userfaultfd-sys` does not bind (its bindings follow the build machine's headers, which may
//! predate POISON, MOVE and the `*_MODE_WP` flags). The values are kernel ABI and never change.

/// `UFFD_API`, the only API version.
pub const UFFD_API: u64 = 0xAA;
/// `UFFD_USER_MODE_ONLY`, a flag of the `userfaultfd(2)` syscall.
pub const UFFD_USER_MODE_ONLY: i32 = 1;

/// Every `UFFD_FEATURE_*` bit the kernel defines, with its name less the prefix.
pub const FEATURES: &[(&str, u64)] = &[
    ("PAGEFAULT_FLAG_WP", 1 << 0),
    ("EVENT_FORK", 1 << 1),
    ("EVENT_REMAP", 1 << 2),
    ("EVENT_REMOVE", 1 << 3),
    ("MISSING_HUGETLBFS", 1 << 4),
    ("MISSING_SHMEM", 1 << 5),
    ("EVENT_UNMAP", 1 << 6),
    ("SIGBUS", 1 << 7),
    ("THREAD_ID", 1 << 8),
    ("MINOR_HUGETLBFS", 1 << 9),
    ("MINOR_SHMEM", 1 << 10),
    ("EXACT_ADDRESS", 1 << 11),
    ("WP_HUGETLBFS_SHMEM", 1 << 12),
    ("WP_UNPOPULATED", 1 << 13),
    ("POISON", 1 << 14),
    ("WP_ASYNC", 1 << 15),
    ("MOVE", 1 << 16),
];

pub const FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const FEATURE_EVENTS: u64 = (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6);
pub const FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
pub const FEATURE_MISSING_SHMEM: u64 = 1 << 5;
pub const FEATURE_SIGBUS: u64 = 1 << 7;
pub const FEATURE_THREAD_ID: u64 = 1 << 8;
pub const FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
pub const FEATURE_MINOR_SHMEM: u64 = 1 << 10;
pub const FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
pub const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
pub const FEATURE_POISON: u64 = 1 << 14;
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
pub const FEATURE_MOVE: u64 = 1 << 16;

/// Every `_UFFDIO_*` ioctl number, with its name as the `ioctls` masks use it.
pub const IOCTLS: &[(&str, u32)] = &[
    ("REGISTER", 0x00),
    ("UNREGISTER", 0x01),
    ("WAKE", 0x02),
    ("COPY", 0x03),
    ("ZEROPAGE", 0x04),
    ("MOVE", 0x05),
    ("WRITEPROTECT", 0x06),
    ("CONTINUE", 0x07),
    ("POISON", 0x08),
    ("API", 0x3F),
];

pub const IOCTL_COPY: u32 = 0x03;
pub const IOCTL_ZEROPAGE: u32 = 0x04;
pub const IOCTL_CONTINUE: u32 = 0x07;
pub const IOCTL_POISON: u32 = 0x08;

pub const COPY_MODE_DONTWAKE: u64 = 1 << 0;
pub const COPY_MODE_WP: u64 = 1 << 1;
pub const CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
pub const CONTINUE_MODE_WP: u64 = 1 << 1;
pub const POISON_MODE_DONTWAKE: u64 = 1 << 0;
pub const MOVE_MODE_DONTWAKE: u64 = 1 << 0;
pub const MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

/// `PAGE_IS_WRITTEN` of `PAGEMAP_SCAN` (include/uapi/linux/fs.h).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// Bit 57 of a /proc/PID/pagemap entry: the page is userfaultfd write-protected.
pub const PAGEMAP_UFFD_WP: u64 = 1 << 57;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioRange {
    pub start: u64,
    pub len: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioCopy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub copy: i64,
}

/// `struct uffdio_zeropage`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioZeropage {
    pub range: UffdioRange,
    pub mode: u64,
    pub zeropage: i64,
}

/// `struct uffdio_poison`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioPoison {
    pub range: UffdioRange,
    pub mode: u64,
    pub updated: i64,
}

/// `struct uffdio_continue`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioContinue {
    pub range: UffdioRange,
    pub mode: u64,
    pub mapped: i64,
}

/// `struct uffdio_move`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UffdioMove {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub moved: i64,
}

/// `struct page_region`, an output record of PAGEMAP_SCAN.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`, the argument of PAGEMAP_SCAN.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// Names of the bits set in `mask`, from a table of (name, bit).
pub fn names_of(mask: u64, table: &[(&'static str, u64)]) -> Vec<&'static str> {
    table.iter().filter(|(_, bit)| mask & bit != 0).map(|(name, _)| *name).collect()
}

/// The feature bit of a kernel feature name (`"MINOR_SHMEM"`), if the kernel defines it.
pub fn feature_bit(name: &str) -> Option<u64> {
    FEATURES.iter().find(|(n, _)| *n == name).map(|(_, bit)| *bit)
}

/// Names of the ioctls in an `ioctls` mask.
pub fn ioctl_names(mask: u64) -> Vec<&'static str> {
    IOCTLS.iter().filter(|(_, nr)| mask & (1u64 << nr) != 0).map(|(name, _)| *name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioCopy>(), 40);
        assert_eq!(std::mem::size_of::<UffdioPoison>(), 32);
        assert_eq!(std::mem::size_of::<UffdioContinue>(), 32);
        assert_eq!(std::mem::size_of::<UffdioMove>(), 40);
        assert_eq!(std::mem::size_of::<PmScanArg>(), 96);
    }

    #[test]
    fn names_round_trip_through_bits() {
        let mask = feature_bit("THREAD_ID").unwrap() | feature_bit("MOVE").unwrap();
        assert_eq!(names_of(mask, FEATURES), vec!["THREAD_ID", "MOVE"]);
        assert_eq!(ioctl_names((1 << 3) | (1 << 7)), vec!["COPY", "CONTINUE"]);
        assert_eq!(feature_bit("NOPE"), None);
    }
}
