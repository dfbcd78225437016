// The kernel's feature and ioctl names, as UFFDIO_API and UFFDIO_REGISTER report them.

/** A userfaultfd feature: the kernel's `UFFD_FEATURE_*` name without the prefix. */
export type FeatureName =
  | 'PAGEFAULT_FLAG_WP'
  | 'EVENT_FORK'
  | 'EVENT_REMAP'
  | 'EVENT_REMOVE'
  | 'MISSING_HUGETLBFS'
  | 'MISSING_SHMEM'
  | 'EVENT_UNMAP'
  | 'SIGBUS'
  | 'THREAD_ID'
  | 'MINOR_HUGETLBFS'
  | 'MINOR_SHMEM'
  | 'EXACT_ADDRESS'
  | 'WP_HUGETLBFS_SHMEM'
  | 'WP_UNPOPULATED'
  | 'POISON'
  | 'WP_ASYNC'
  | 'MOVE'

/** A userfaultfd ioctl: the kernel's `_UFFDIO_*` name without the prefix. */
export type IoctlName = 'REGISTER' | 'UNREGISTER' | 'WAKE' | 'COPY' | 'ZEROPAGE' | 'MOVE' | 'WRITEPROTECT' | 'CONTINUE' | 'POISON' | 'API'

/** What the kernel offers, from `Userfaultfd.probe()`. */
export interface ProbeResult {
  /** The API version, 0xAA. */
  readonly api: number
  /** The features the kernel supports (UFFDIO_API). */
  readonly features: readonly FeatureName[]
  /** The ioctls the kernel supports on a userfaultfd (UFFDIO_API). */
  readonly ioctls: readonly IoctlName[]
}
